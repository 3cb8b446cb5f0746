/* SPDX-License-Identifier: MIT */
/*
 * identify_fuzz.c - libFuzzer harness for the identify message decoder (dc_identify_parse),
 * what every peer sends us on /ipfs/id/1.0.0. The first byte picks whether the harness adds
 * the varint length prefix itself (so most inputs reach the protobuf decoder) or the input
 * carries its own. Checks: the result respects the peerstore limits, every address is a
 * valid multiaddr, and a failure leaves nothing owned (ASan catches leaks).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/varint.h"
#include "crypto/crypto.h"
#include "p2p/host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dc_identity *id;
    struct dc_peer_info info;
    uint8_t *buf;
    size_t len;
    int rc;

    if (size < 1)
        return 0;
    if (id == NULL && dc_identity_generate(&id) < 0)
        abort();
    buf = malloc(size + DC_VARINT_MAX_LEN);
    if (buf == NULL)
        return 0;
    if (data[0] & 1) {
        len = dc_varint_encode(size - 1, buf);
        memcpy(buf + len, data + 1, size - 1);
        len += size - 1;
    } else {
        memcpy(buf, data + 1, size - 1);
        len = size - 1;
    }
    rc = dc_identify_parse(buf, len, dc_identity_peer_id(id), &info);
    if (rc == 0) {
        char text[DC_MULTIADDR_TEXT_MAX];
        if (info.n_protocols > DC_PEER_MAX_PROTOCOLS || info.n_addrs > DC_PEER_MAX_ADDRS)
            abort();
        for (size_t i = 0; i < info.n_protocols; i++)
            if (strlen(info.protocols[i]) > DC_PROTOCOL_ID_MAX)
                abort();
        for (size_t i = 0; i < info.n_addrs; i++)
            if (dc_multiaddr_format(&info.addrs[i], text, sizeof(text)) < 0)
                abort();
        if (memchr(info.agent, '\0', sizeof(info.agent)) == NULL)
            abort();
        dc_peer_info_cleanup(&info);
    } else if (rc != DC_ECORRUPT && rc != DC_ELIMIT && rc != DC_EPEER && rc != DC_ENOMEM) {
        abort();
    }
    free(buf);
    return 0;
}

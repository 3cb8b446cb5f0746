/* SPDX-License-Identifier: MIT */
/*
 * multistream_fuzz.c - libFuzzer harness for multistream-select. The first byte picks the
 * role (initiator or responder, lazy or not) and the chunk size; the rest is what the peer
 * sends. Checks: the machine never consumes more than it is given, leftover bytes start
 * exactly where the negotiation ended, errors are final, and output stays bounded.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p2p/p2p.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const many[] = {"/noise", "/tls/1.0.0", "/yamux/1.0.0", "/mplex/6.7.0"};
    struct dc_mss_config cfg;
    struct dc_mss *m;
    size_t pos = 1, chunk, used, out_len;
    int rc = 0;

    if (size < 1)
        return 0;
    memset(&cfg, 0, sizeof(cfg));
    cfg.initiator = (data[0] & 1) != 0;
    cfg.lazy = cfg.initiator && (data[0] & 2) != 0;
    cfg.protocols = many;
    cfg.n_protocols = cfg.lazy ? 1 : 1 + (size_t)((data[0] >> 2) & 3);
    chunk = 1 + (size_t)(data[0] >> 4) * 7;
    if (dc_mss_new(&cfg, &m) != 0)
        abort();
    while (pos < size) {
        size_t n = size - pos < chunk ? size - pos : chunk;

        rc = dc_mss_feed(m, data + pos, n, &used);
        if (used > n)
            abort();
        if (rc == 0 && used != n)
            abort();
        pos += used;
        (void)dc_mss_output(m, &out_len);
        if (out_len > 64 * 1024)
            abort();
        dc_mss_output_consume(m, out_len / 2);
        if (rc != 0)
            break;
    }
    if (rc == 1 && dc_mss_protocol(m) == NULL)
        abort();
    if (rc != 0 && dc_mss_feed(m, data, size, &used) != DC_ESTATE)
        abort();
    dc_mss_free(m);
    return 0;
}

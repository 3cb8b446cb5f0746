/* SPDX-License-Identifier: MIT */
/*
 * peerid_fuzz.c - libFuzzer harness for PeerId input paths: dc_peer_id_parse() on the input as
 * text, dc_peer_id_from_bytes() and dc_peer_id_from_public_key_proto() on it as bytes. Nothing
 * may crash, and whatever is accepted must print and parse back to the same PeerId in both
 * text forms.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"

#define MAX_INPUT 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An accepted PeerId must survive both text forms unchanged. */
static void check_roundtrip(const struct dc_peer_id *id)
{
    char s[DC_PEER_ID_STR_MAX];
    struct dc_peer_id back;
    uint8_t pk[32];
    int rc;

    if (dc_peer_id_to_string(id, s, sizeof(s)) <= 0)
        abort();
    if (dc_peer_id_parse(s, &back) != 0 || !dc_peer_id_equal(id, &back))
        abort();
    if (dc_peer_id_to_cid_string(id, s, sizeof(s)) <= 0)
        abort();
    if (dc_peer_id_parse(s, &back) != 0 || !dc_peer_id_equal(id, &back))
        abort();
    rc = dc_peer_id_ed25519_public_key(id, pk);
    if (rc == 0) {
        /* An extracted key must give back the same PeerId. */
        if (dc_peer_id_from_ed25519(pk, &back) != 0 || !dc_peer_id_equal(id, &back))
            abort();
    } else if (rc != DC_EUNSUPPORTED && rc != DC_ECORRUPT) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char str[MAX_INPUT + 1];
    struct dc_peer_id id;
    int rc;

    if (size > MAX_INPUT)
        return 0;
    memcpy(str, data, size);
    str[size] = '\0';
    rc = dc_peer_id_parse(str, &id);
    if (rc == 0)
        check_roundtrip(&id);
    else if (rc != DC_ECORRUPT)
        abort();

    rc = dc_peer_id_from_bytes(data, size, &id);
    if (rc == 0) {
        if (id.len != size || memcmp(id.bytes, data, size) != 0)
            abort();
        check_roundtrip(&id);
    } else if (rc != DC_ECORRUPT) {
        abort();
    }

    rc = dc_peer_id_from_public_key_proto(data, size, &id);
    if (rc == 0)
        check_roundtrip(&id);
    else if (rc != DC_ECORRUPT && rc != DC_EUNSUPPORTED)
        abort();
    return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * multiaddr_fuzz.c - libFuzzer harness for the multiaddr codec. The input is tried as binary
 * (dc_multiaddr_from_bytes) and as text (dc_multiaddr_parse). Whatever is accepted must
 * survive print -> parse unchanged, byte for byte, and the accessors must not misbehave on it:
 * a binary address that prints to text which parses to other bytes would let two peers
 * disagree about an address.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p2p/p2p.h"

#define MAX_INPUT 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char text[MAX_INPUT + 1];
static char out[DC_MULTIADDR_TEXT_MAX];

/* 'ma' is valid: it must print, parse back to the same bytes, and answer the accessors. */
static void check(const struct dc_multiaddr *ma)
{
    struct dc_multiaddr again, copy;
    struct dc_multiaddr_target t;
    struct dc_multiaddr_component c;
    struct dc_multiaddr_error err;
    const uint8_t *mh;
    size_t mh_len, pos = 0, total = 0;
    int n = dc_multiaddr_format(ma, out, sizeof(out));

    if (n < 0 || (size_t)n != strlen(out))
        abort();
    if (ma->len == 0)
        return;
    if (dc_multiaddr_parse(out, &again, &err) != 0 || !dc_multiaddr_equal(ma, &again))
        abort();
    while (dc_multiaddr_next(ma, &pos, &c))
        total++;
    if (pos != ma->len || total == 0)
        abort();
    if (dc_multiaddr_target(ma, &t) == 0 && strlen(t.host) == 0)
        abort();
    copy = *ma;
    if (dc_multiaddr_peer_id(ma, &mh, &mh_len) == 0) {
        if (dc_multiaddr_strip_p2p(&copy)) {
            if (dc_multiaddr_append_p2p(&copy, mh, mh_len) != 0 || !dc_multiaddr_equal(&copy, ma))
                abort();
        }
    } else if (dc_multiaddr_strip_p2p(&copy)) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dc_multiaddr ma;
    struct dc_multiaddr_error err;

    if (size > MAX_INPUT)
        return 0;
    if (dc_multiaddr_from_bytes(data, size, &ma, &err) == 0)
        check(&ma);
    else if (err.reason == NULL || err.offset > size)
        abort();

    memcpy(text, data, size);
    text[size] = '\0';
    if (dc_multiaddr_parse(text, &ma, &err) == 0)
        check(&ma);
    else if (err.reason == NULL || err.offset > size)
        abort();
    return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * pnet_fuzz.c - libFuzzer harness for the pnet PSK file parser and the stream cipher. The
 * input is parsed as a PSK file (never crashes; a key it accepts must re-parse from its own
 * canonical file), then used as traffic: encrypted in chunks whose sizes come from the input
 * and decrypted in other chunks, which must give the input back.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p2p/p2p.h"

#define MAX_INPUT 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t wire[DC_PNET_NONCE_LEN + MAX_INPUT];
    uint8_t key[DC_PNET_KEY_LEN], again[DC_PNET_KEY_LEN], nonce[DC_PNET_NONCE_LEN] = {7};
    char canon[128];
    struct dc_pnet a, b;
    size_t off, i = 0;

    if (size > MAX_INPUT)
        return 0;
    if (dc_pnet_psk_parse((const char *)data, size, key) == 0) {
        int n = snprintf(canon, sizeof(canon), "/key/swarm/psk/1.0.0/\n/base16/\n");

        for (size_t k = 0; k < DC_PNET_KEY_LEN; k++)
            n += snprintf(canon + n, sizeof(canon) - (size_t)n, "%02x", key[k]);
        if (dc_pnet_psk_parse(canon, (size_t)n, again) != 0 || memcmp(key, again, sizeof(key)))
            abort();
    } else {
        memset(key, 0x5a, sizeof(key));
    }

    dc_pnet_init(&a, key, nonce);
    dc_pnet_init(&b, key, nonce);
    memcpy(wire, a.local_nonce, DC_PNET_NONCE_LEN);
    memcpy(wire + DC_PNET_NONCE_LEN, data, size);
    for (off = 0; off < size;) {
        size_t n = 1 + (size_t)data[i++ % size] % 97;

        if (n > size - off)
            n = size - off;
        dc_pnet_encrypt(&a, wire + DC_PNET_NONCE_LEN + off, n);
        off += n;
    }
    for (off = 0; off < DC_PNET_NONCE_LEN + size;) {
        size_t n = 1 + (size > 0 ? (size_t)data[i++ % size] % 131 : 0), skip;

        if (n > DC_PNET_NONCE_LEN + size - off)
            n = DC_PNET_NONCE_LEN + size - off;
        dc_pnet_decrypt(&b, wire + off, n, &skip);
        if (skip > n)
            abort();
        off += n;
    }
    if (size > 0 && memcmp(wire + DC_PNET_NONCE_LEN, data, size) != 0)
        abort();
    dc_pnet_cleanup(&a);
    dc_pnet_cleanup(&b);
    return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * multibase_fuzz.c - libFuzzer harness for the base58/base32/base16 codecs. The input is used
 * three ways: as multibase text (decode must never crash; what decodes must re-encode and
 * decode to the same bytes), as text for each raw decoder with a capacity picked from the
 * first byte (so the DC_ELIMIT paths are explored), and as bytes to encode and decode back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/multibase.h"

/* base58 is quadratic; longer inputs only slow the fuzzer without new paths. */
#define MAX_INPUT 1024
#define TEXT_CAP  (2 * MAX_INPUT + 8)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef int (*decode_fn)(const char *, size_t, uint8_t *, size_t);
typedef int (*encode_fn)(const uint8_t *, size_t, char *, size_t);

static uint8_t bytes[MAX_INPUT + 1], again[MAX_INPUT + 1];
static char text[TEXT_CAP], str[MAX_INPUT + 1];

/* Bytes that decoded once must survive encode -> decode unchanged. */
static void check_roundtrip(encode_fn enc, decode_fn dec, const uint8_t *in, size_t n)
{
    int tlen = enc(in, n, text, sizeof(text));
    int m;

    if (tlen < 0)
        abort();
    if ((size_t)tlen != strlen(text))
        abort();
    m = dec(text, (size_t)tlen, again, sizeof(again));
    if (m != (int)n || memcmp(again, in, n) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const encode_fn encs[] = {dc_base58_encode, dc_base32_encode, dc_base16_encode};
    static const decode_fn decs[] = {dc_base58_decode, dc_base32_decode, dc_base16_decode};
    static const char prefixes[] = {DC_MULTIBASE_BASE58BTC, DC_MULTIBASE_BASE32,
                                    DC_MULTIBASE_BASE16};
    int n;

    if (size > MAX_INPUT)
        return 0;
    memcpy(str, data, size);
    str[size] = '\0';

    /* 1. Multibase text (up to the first NUL). */
    n = dc_multibase_decode(str, bytes, sizeof(bytes));
    if (n >= 0) {
        int k;

        for (k = 0; k < 3; k++) {
            if (prefixes[k] == str[0] || prefixes[k] == (str[0] | 0x20))
                break;
        }
        if (k == 3)
            abort();
        check_roundtrip(encs[k], decs[k], bytes, (size_t)n);
    }

    /* 2. Each raw decoder on the whole input, with a capacity from the first byte. */
    for (size_t k = 0; k < 3; k++) {
        size_t cap = size > 0 ? data[0] % 64 : 0;

        n = decs[k]((const char *)data, size, bytes, sizeof(bytes));
        if (n >= 0)
            check_roundtrip(encs[k], decs[k], bytes, (size_t)n);
        n = decs[k]((const char *)data, size, bytes, cap);
        if (n > (int)cap)
            abort();
        n = encs[k](data, size, text, cap);
        if (n >= (int)cap && cap > 0)
            abort();
    }

    /* 3. The input as bytes, through each encoding and back. */
    for (size_t k = 0; k < 3; k++)
        check_roundtrip(encs[k], decs[k], data, size);
    return 0;
}

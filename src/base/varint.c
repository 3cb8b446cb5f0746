/* SPDX-License-Identifier: MIT */
/*
 * varint.c - multiformats unsigned varints. Decoding rejects non-minimal encodings (a trailing
 * zero byte after a continuation) because the spec requires one encoding per value; accepting
 * more would let two peers disagree about byte-identical messages.
 */
#include "base/varint.h"

size_t dc_varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t dc_varint_encode(uint64_t v, uint8_t *out)
{
    size_t n = 0;

    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int dc_varint_decode(const uint8_t *p, size_t len, uint64_t *value, size_t *used)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        if (i >= DC_VARINT_MAX_LEN)
            return DC_ECORRUPT;
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if ((p[i] & 0x80) == 0) {
            if (p[i] == 0 && i > 0)
                return DC_ECORRUPT; /* not minimal */
            *value = v;
            *used = i + 1;
            return 0;
        }
    }
    return len >= DC_VARINT_MAX_LEN ? DC_ECORRUPT : DC_ETRUNCATED;
}

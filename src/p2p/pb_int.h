/* SPDX-License-Identifier: MIT */
/*
 * pb_int.h - a minimal protobuf wire-format reader and writer for the signed DHT records
 * (ipns.c, record.c), private to the P2P module. Protobuf varints are not the multiformats
 * kind of base/varint.h: they run to 10 bytes (full uint64) and need not be minimal, so a
 * record written by another implementation is read as that implementation meant it.
 *
 * Reading: pb_next() walks a message one field at a time; every length is checked against
 * the bytes that remain, so hostile input can only make it fail, never read out of bounds.
 * Only wire types 0 (varint), 1 (64-bit), 2 (length-delimited) and 5 (32-bit) exist in
 * proto3; groups (3, 4) are refused.
 */
#ifndef DC_P2P_PB_INT_H
#define DC_P2P_PB_INT_H

#include "base/base.h"

enum pb_wire { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

/* One field of a message: its number, wire type, and value (varint/fixed in 'u', bytes in
 * 'p'/'len' borrowed from the message). */
struct pb_field {
    uint32_t num;
    enum pb_wire wire;
    uint64_t u;
    const uint8_t *p;
    size_t len;
};

/* Reads a protobuf varint (up to 10 bytes, the 10th carrying one bit) at p[*pos..len). */
static inline int pb_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < 10; i++) {
        uint8_t b;

        if (*pos >= len)
            return DC_ECORRUPT;
        b = p[(*pos)++];
        if (i == 9 && b > 1)
            return DC_ECORRUPT; /* would overflow 64 bits */
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return DC_ECORRUPT;
}

/* Reads the field at p[*pos..len) into '*f' and advances *pos. Returns 1 when a field was
 * read, 0 at the end of the message, DC_ECORRUPT for a malformed field. */
static inline int pb_next(const uint8_t *p, size_t len, size_t *pos, struct pb_field *f)
{
    uint64_t tag, n;

    if (*pos >= len)
        return 0;
    if (pb_varint(p, len, pos, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX)
        return DC_ECORRUPT;
    f->num = (uint32_t)(tag >> 3);
    f->wire = (enum pb_wire)(tag & 7);
    f->p = NULL;
    f->len = 0;
    f->u = 0;
    switch (tag & 7) {
    case PB_VARINT:
        return pb_varint(p, len, pos, &f->u) < 0 ? DC_ECORRUPT : 1;
    case PB_I64:
    case PB_I32:
        n = (tag & 7) == PB_I64 ? 8 : 4;
        if (len - *pos < n)
            return DC_ECORRUPT;
        for (uint64_t i = 0; i < n; i++)
            f->u |= (uint64_t)p[*pos + i] << (8 * i);
        *pos += n;
        return 1;
    case PB_LEN:
        if (pb_varint(p, len, pos, &n) < 0 || n > len - *pos)
            return DC_ECORRUPT;
        f->p = p + *pos;
        f->len = (size_t)n;
        *pos += (size_t)n;
        return 1;
    default:
        return DC_ECORRUPT;
    }
}

/* Writes a protobuf varint to out (room for 10 bytes); returns the byte count. */
static inline size_t pb_put_varint(uint64_t v, uint8_t *out)
{
    size_t n = 0;

    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Appends a length-delimited field. */
static inline int pb_append_bytes(struct dc_buf *b, uint32_t num, const void *p, size_t len)
{
    uint8_t hdr[20];
    size_t n = pb_put_varint(((uint64_t)num << 3) | PB_LEN, hdr);
    int rc;

    n += pb_put_varint(len, hdr + n);
    rc = dc_buf_append(b, hdr, n);
    return rc < 0 || len == 0 ? rc : dc_buf_append(b, p, len);
}

/* Appends a varint field. */
static inline int pb_append_varint(struct dc_buf *b, uint32_t num, uint64_t v)
{
    uint8_t hdr[20];
    size_t n = pb_put_varint(((uint64_t)num << 3) | PB_VARINT, hdr);

    n += pb_put_varint(v, hdr + n);
    return dc_buf_append(b, hdr, n);
}

#endif

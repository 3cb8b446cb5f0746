/* SPDX-License-Identifier: MIT */
/*
 * varint.h - unsigned LEB128 varints as multiformats (unsigned-varint) defines them: at most 9
 * bytes (63 bits) and minimally encoded, so every value has exactly one encoding. libp2p uses
 * them for length prefixes, multicodecs and multiaddr protocol codes.
 */
#ifndef DC_VARINT_H
#define DC_VARINT_H

#include "base/base.h"

#define DC_VARINT_MAX_LEN 9

/* Writes 'v' (< 2^63) to 'out' (room for DC_VARINT_MAX_LEN bytes); returns the byte count. */
size_t dc_varint_encode(uint64_t v, uint8_t *out);

/* Bytes dc_varint_encode() would write for 'v'. */
size_t dc_varint_len(uint64_t v);

/*
 * Reads a varint from p[0..len). On success stores the value and the bytes used and returns 0.
 * Returns DC_ETRUNCATED when the input ends inside the varint (read more and retry), or
 * DC_ECORRUPT when it is longer than 9 bytes or not minimally encoded.
 */
DC_MUST_CHECK int dc_varint_decode(const uint8_t *p, size_t len, uint64_t *value, size_t *used);

#endif

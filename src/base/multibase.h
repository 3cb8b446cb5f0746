/* SPDX-License-Identifier: MIT */
/*
 * multibase.h - the text encodings libp2p uses: base58btc (Bitcoin alphabet, PeerIds and
 * multihashes), RFC 4648 base32 lower case without padding (multibase 'b', CIDs), base16
 * (hex), and the multibase prefix dispatch. Pure functions; no allocation unless named _dup.
 */
#ifndef DC_MULTIBASE_H
#define DC_MULTIBASE_H

#include "base/base.h"

/*
 * Encodes in[0..len) as base58btc into out (capacity 'cap', NUL-terminated).
 * Returns the string length, or DC_ELIMIT when 'cap' is too small.
 */
DC_MUST_CHECK int dc_base58_encode(const uint8_t *in, size_t len, char *out, size_t cap);

/*
 * Decodes the base58btc text s[0..slen) into out (capacity 'cap').
 * Returns the byte count, DC_ECORRUPT on a character outside the alphabet, or DC_ELIMIT when
 * the result does not fit.
 */
DC_MUST_CHECK int dc_base58_decode(const char *s, size_t slen, uint8_t *out, size_t cap);

/* RFC 4648 base32, lower-case alphabet, no padding. Same return conventions as base58. */
DC_MUST_CHECK int dc_base32_encode(const uint8_t *in, size_t len, char *out, size_t cap);
/* Accepts upper or lower case, no padding; rejects non-zero trailing bits (DC_ECORRUPT). */
DC_MUST_CHECK int dc_base32_decode(const char *s, size_t slen, uint8_t *out, size_t cap);

/* Lower-case hex. Decoding accepts either case and needs an even length. */
DC_MUST_CHECK int dc_base16_encode(const uint8_t *in, size_t len, char *out, size_t cap);
DC_MUST_CHECK int dc_base16_decode(const char *s, size_t slen, uint8_t *out, size_t cap);

/* Multibase prefixes of the bases above (the lower-case alphabets, which we emit). */
#define DC_MULTIBASE_BASE58BTC 'z'
#define DC_MULTIBASE_BASE32    'b'
#define DC_MULTIBASE_BASE16    'f'

/*
 * Encodes in[0..len) as a multibase string: the prefix 'base' (one of DC_MULTIBASE_*) followed
 * by the encoding, NUL-terminated in out (capacity 'cap'). Returns the string length including
 * the prefix, DC_EUNSUPPORTED for another base, or DC_ELIMIT when 'cap' is too small.
 */
DC_MUST_CHECK int dc_multibase_encode(char base, const uint8_t *in, size_t len, char *out,
                                      size_t cap);

/*
 * Decodes a multibase string: the first character picks the base ('z' base58btc, 'b'/'B'
 * base32, 'f'/'F' base16). Returns the byte count, DC_EUNSUPPORTED for another prefix, or as
 * the decoders above.
 */
DC_MUST_CHECK int dc_multibase_decode(const char *s, uint8_t *out, size_t cap);

#endif

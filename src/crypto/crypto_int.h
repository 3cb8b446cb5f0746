/* SPDX-License-Identifier: MIT */
/*
 * crypto_int.h - helpers shared by the crypto module's own files (not for other modules): the
 * reader and writer of the two-field libp2p key protobuf that PublicKey and PrivateKey share.
 */
#ifndef DC_CRYPTO_INT_H
#define DC_CRYPTO_INT_H

#include "crypto/crypto.h"

/* Bytes of a canonical key protobuf header: tag, type varint, tag, length varint. */
#define DC_KEY_PROTO_HEADER_MAX (1 + 10 + 1 + 10)

/*
 * Reads a key protobuf { 1: KeyType Type (varint); 2: bytes Data }. Fields may come in any
 * order (a repeated field: the last one wins, as protobuf says); unknown fields of the
 * varint, 64-bit, length-delimited and 32-bit wire types are skipped. Both fields are
 * required. '*data' borrows from 'p'. Returns 0 or DC_ECORRUPT.
 */
DC_MUST_CHECK int dc_key_proto_parse(const uint8_t *p, size_t len, uint64_t *type,
                                     const uint8_t **data, size_t *data_len);

/*
 * Writes the canonical header (Type, then the tag and length of Data) of a key protobuf
 * whose Data is 'data_len' bytes into 'hdr' (DC_KEY_PROTO_HEADER_MAX bytes); the encoding is
 * that header followed by the data. Returns the header length.
 */
size_t dc_key_proto_header(uint64_t type, size_t data_len, uint8_t hdr[DC_KEY_PROTO_HEADER_MAX]);

#endif

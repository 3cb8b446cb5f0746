/* SPDX-License-Identifier: MIT */
/*
 * record.h - signed DHT records: the validators and selectors of the /ipns/ and /democritus/
 * key namespaces (kad.h, struct dc_kad_validator), and the code that builds and opens our own
 * signed records. Pure functions: no I/O, no clock (time comes in as now_ms, Unix epoch
 * milliseconds). The protobufs (proto/libp2p/ipns.proto, proto/libp2p/envelope.proto,
 * proto/record.proto) are unpacked by protoc-c code into temporary heap memory (dc_malloc, so
 * a parse can fail with DC_ENOMEM), freed before the call returns.
 *
 *   1. IPNS        - /ipns/<binary PeerId> -> IpnsEntry protobuf, as the IPNS record spec
 *                    (specs.ipfs.tech/ipns/ipns-record) defines it: the signed fields live in
 *                    a DAG-CBOR map in 'data', signed with signatureV2 over
 *                    "ipns-signature:" || data. Ed25519 keys only. ipns.c.
 *   2. Democritus  - /democritus/<kind>/<base58 PeerId> -> a libp2p signed envelope (RFC 0002)
 *                    in the domain "democritus-record" whose payload names the key, a
 *                    sequence number, an expiry and an opaque body. record.c; the format is
 *                    documented in docs/protocols.md.
 *
 * Both validators treat the value as hostile: every length is bounded by the input and the
 * caps below, and nothing is trusted before its signature is checked.
 */
#ifndef DC_P2P_RECORD_H
#define DC_P2P_RECORD_H

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/kad.h"

/* ============================================================================================
 * 1. IPNS
 * ========================================================================================== */

/* The spec's size cap on a whole IpnsEntry. */
#define DC_IPNS_MAX_RECORD (10u * 1024u)
/* The V2 signature's prefix. */
#define DC_IPNS_SIG_PREFIX "ipns-signature:"
/* ValidityType EOL: 'validity' is an RFC 3339 end-of-life timestamp. The only type defined. */
#define DC_IPNS_VALIDITY_EOL 0u

/* A validated record's fields (from the signed DAG-CBOR data). Pointers borrow from the
 * record that was validated. */
struct dc_ipns_entry {
    const uint8_t *value; /* a content path such as "/ipfs/bafy..." (not NUL-terminated) */
    size_t value_len;
    const uint8_t *validity; /* RFC 3339 text */
    size_t validity_len;
    uint64_t validity_type; /* DC_IPNS_VALIDITY_EOL */
    uint64_t eol_ms;        /* 'validity' as Unix epoch milliseconds (truncated) */
    uint64_t sequence;
    uint64_t ttl_ns; /* caching hint, nanoseconds */
};

/*
 * Validates rec[0..len) as the IPNS record for key[0..key_len) ("/ipns/" + binary PeerId
 * multihash) at 'now_ms', and fills '*out' (may be NULL) with its fields. The checks, in
 * order: size (<= DC_IPNS_MAX_RECORD); the IpnsEntry protobuf and its DAG-CBOR 'data' map
 * parse (Value, Validity, ValidityType, Sequence, TTL, each present once with its type;
 * other keys skipped); the public key comes from the PeerId (identity multihash) or from
 * 'pubKey', which must then hash to the PeerId in the key; signatureV2 verifies over
 * "ipns-signature:" || data; the legacy V1 fields that are present equal the CBOR ones; an
 * EOL validity is a valid RFC 3339 time not before now_ms.
 * Returns 0; DC_ELIMIT over the size cap; DC_ECORRUPT for a malformed key, protobuf, CBOR or
 * timestamp, or a missing field; DC_ENOMEM; DC_ECRYPTO for a bad signature, a pubKey that is not
 * the key's, or V1 fields that contradict the signed data; DC_ETIMEDOUT when expired;
 * DC_EUNSUPPORTED for a key type other than Ed25519 (or a PeerId that is a hash without a
 * pubKey field), or a ValidityType other than EOL.
 */
DC_MUST_CHECK int dc_ipns_validate(const uint8_t *key, size_t key_len, const uint8_t *rec,
                                   size_t len, uint64_t now_ms, struct dc_ipns_entry *out);

/*
 * Parses the record's signed data without checking the signature or the time (for selecting
 * among records that were validated already, and for printing). Returns 0, DC_ELIMIT,
 * DC_ECORRUPT or DC_ENOMEM as dc_ipns_validate().
 */
DC_MUST_CHECK int dc_ipns_parse(const uint8_t *rec, size_t len, struct dc_ipns_entry *out);

/*
 * Parses an RFC 3339 date-time ("2006-01-02T15:04:05.999999999Z" or with a "+hh:mm" /
 * "-hh:mm" offset; 't' and 'z' accepted lower-case) into Unix epoch milliseconds, the
 * fraction truncated. Years 1970..9999. Returns 0 or DC_ECORRUPT.
 */
DC_MUST_CHECK int dc_ipns_parse_time(const uint8_t *s, size_t len, uint64_t *ms);

/* The kad validator for the "ipns" namespace (dc_kad_new installs it): validate =
 * dc_ipns_validate; select = the highest Sequence, then the latest Validity, then the
 * first. */
void dc_ipns_validator(struct dc_kad_validator *out);

/* ============================================================================================
 * 2. Democritus signed records
 * ========================================================================================== */

/* The envelope's signing domain and payload type (RFC 0002). */
#define DC_DHT_RECORD_DOMAIN       "democritus-record"
#define DC_DHT_RECORD_PAYLOAD_TYPE "/democritus/record/1"
/* The namespace prefix of the keys these records live under. */
#define DC_DHT_RECORD_PREFIX "/democritus/"
/* Largest body carried; the whole envelope must also fit DC_KAD_MAX_VALUE. */
#define DC_DHT_RECORD_MAX_BODY (8u * 1024u)

/* An opened record. Pointers borrow from the envelope that was opened. */
struct dc_dht_record {
    const uint8_t *key; /* the DHT key the record was signed for */
    size_t key_len;
    uint64_t seq;
    uint64_t expires_ms; /* Unix epoch milliseconds */
    const uint8_t *body;
    size_t body_len;
    struct dc_peer_id signer;
};

/*
 * Checks that key[0..key_len) has the shape /democritus/<kind>/<PeerId> (at least one
 * non-empty component between the namespace and the last one) and that its last component
 * is the canonical base58 text of 'peer'. Returns 0, DC_ECORRUPT for a malformed key, or
 * DC_EPERM when the last component names another peer.
 */
DC_MUST_CHECK int dc_dht_record_key_check(const uint8_t *key, size_t key_len,
                                          const struct dc_peer_id *peer);

/*
 * Builds the signed envelope for key[0..key_len) with 'id' and appends it to 'out' (whose
 * cap applies). The key must end with id's PeerId (dc_dht_record_key_check). 'seq' orders
 * versions (a higher one replaces a lower one everywhere; the wall clock in milliseconds is
 * a good choice), 'expires_ms' is when peers drop the record. All arguments are borrowed.
 * Returns 0; DC_EINVAL for an empty key or expires_ms == 0; DC_EPERM / DC_ECORRUPT from the
 * key check; DC_ELIMIT when the body exceeds DC_DHT_RECORD_MAX_BODY or the envelope
 * DC_KAD_MAX_VALUE (or 'out' its cap); DC_ECRYPTO; DC_ENOMEM. 'out' is unchanged on
 * failure.
 */
DC_MUST_CHECK int dc_dht_record_sign(const struct dc_identity *id, const uint8_t *key,
                                     size_t key_len, uint64_t seq, uint64_t expires_ms,
                                     const uint8_t *body, size_t body_len, struct dc_buf *out);

/*
 * Validates value[0..value_len) as the record stored under key[0..key_len) at 'now_ms' and
 * fills '*out' (may be NULL): the envelope parses, its public key is Ed25519, its payload
 * type is DC_DHT_RECORD_PAYLOAD_TYPE, the signature verifies, the key's last component is
 * the signer's PeerId, the payload's key equals the DHT key, and the record has not
 * expired. Returns 0; DC_ELIMIT over the size caps; DC_ECORRUPT for a malformed key,
 * envelope or payload, or another payload type; DC_ENOMEM; DC_EUNSUPPORTED for a non-Ed25519 key;
 * DC_ECRYPTO for a bad signature; DC_EPERM when the key names another peer or the payload
 * another key; DC_ETIMEDOUT when expired.
 */
DC_MUST_CHECK int dc_dht_record_open(const uint8_t *key, size_t key_len, const uint8_t *value,
                                     size_t value_len, uint64_t now_ms, struct dc_dht_record *out);

/*
 * The record key a user means by 'text': "/ipns/<PeerId>" and "/pk/<PeerId>" (PeerId in any
 * text form dc_peer_id_parse() reads) become the namespace followed by the binary PeerId, as
 * the DHT stores them; any other text is taken as bytes. Fills out[0..DC_KAD_MAX_KEY) and
 * '*len'. Returns 0, or DC_EINVAL for an empty or too long key or an unparsable PeerId after
 * /ipns/ or /pk/.
 */
DC_MUST_CHECK int dc_dht_record_key_from_text(const char *text, uint8_t out[DC_KAD_MAX_KEY],
                                              size_t *len);

/* The kad validator for the "democritus" namespace: validate = dc_dht_record_open; select =
 * the highest seq (ties: the first). dc_dht_new() installs it. */
void dc_dht_record_validator(struct dc_kad_validator *out);

#endif

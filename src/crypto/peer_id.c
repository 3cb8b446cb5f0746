/* SPDX-License-Identifier: MIT */
/*
 * peer_id.c - PeerIds and public keys: the key protobuf codec, PeerId derivation (identity or
 * sha2-256 multihash), validation of binary multihashes, the base58btc and CIDv1 text forms,
 * and Ed25519 verification. Everything here works on public data, takes no locks and does
 * not allocate.
 *
 * A PeerId read from a peer or a user is validated once, on entry (dc_peer_id_from_bytes or
 * dc_peer_id_parse); code holding a struct dc_peer_id may then trust its shape.
 */
#include "crypto/crypto_int.h"

#include <string.h>

#include <sodium.h>

#include "base/multibase.h"
#include "base/varint.h"

/* CIDv1 prefix: version 1, then the libp2p-key multicodec (both one-byte varints). */
#define CID_VERSION_1 0x01

int dc_key_proto_parse(const uint8_t *p, size_t len, uint64_t *type, const uint8_t **data,
                       size_t *data_len)
{
    bool have_type = false, have_data = false;
    size_t off = 0;

    while (off < len) {
        uint64_t tag, v;
        size_t used;
        unsigned field, wire;

        if (dc_varint_decode(p + off, len - off, &tag, &used) < 0)
            return DC_ECORRUPT;
        off += used;
        /* Field numbers run from 1 to 2^29 - 1. */
        if (tag >> 3 == 0 || tag >> 3 > 0x1fffffff)
            return DC_ECORRUPT;
        field = (unsigned)(tag >> 3);
        wire = (unsigned)(tag & 7);
        /* Known fields must carry their declared wire type. */
        if ((field == 1 && wire != 0) || (field == 2 && wire != 2))
            return DC_ECORRUPT;
        switch (wire) {
        case 0:
            if (dc_varint_decode(p + off, len - off, &v, &used) < 0)
                return DC_ECORRUPT;
            off += used;
            if (field == 1) {
                *type = v;
                have_type = true;
            }
            break;
        case 2:
            if (dc_varint_decode(p + off, len - off, &v, &used) < 0)
                return DC_ECORRUPT;
            off += used;
            if (v > len - off)
                return DC_ECORRUPT;
            if (field == 2) {
                *data = p + off;
                *data_len = (size_t)v;
                have_data = true;
            }
            off += (size_t)v;
            break;
        case 1:
            if (len - off < 8)
                return DC_ECORRUPT;
            off += 8;
            break;
        case 5:
            if (len - off < 4)
                return DC_ECORRUPT;
            off += 4;
            break;
        default:
            /* Groups (3, 4) are deprecated and never appear in key messages. */
            return DC_ECORRUPT;
        }
    }
    return have_type && have_data ? 0 : DC_ECORRUPT;
}

size_t dc_key_proto_header(uint64_t type, size_t data_len, uint8_t hdr[DC_KEY_PROTO_HEADER_MAX])
{
    size_t n = 0;

    hdr[n++] = 0x08; /* field 1, varint */
    n += dc_varint_encode(type, hdr + n);
    hdr[n++] = 0x12; /* field 2, length-delimited */
    n += dc_varint_encode((uint64_t)data_len, hdr + n);
    return n;
}

int dc_public_key_proto_decode(const uint8_t *p, size_t len, struct dc_public_key *out)
{
    uint64_t type;
    const uint8_t *data;
    size_t data_len;

    if (dc_key_proto_parse(p, len, &type, &data, &data_len) < 0)
        return DC_ECORRUPT;
    if (type > DC_KEY_ECDSA)
        return DC_EUNSUPPORTED;
    if (data_len == 0)
        return DC_ECORRUPT;
    if (type == DC_KEY_ED25519 && data_len != DC_ED25519_PUBLIC_KEY_LEN)
        return DC_ECORRUPT;
    out->type = (enum dc_key_type)type;
    out->data = data;
    out->len = data_len;
    return 0;
}

int dc_ed25519_public_key_proto(const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN], uint8_t *out,
                                size_t cap, size_t *len)
{
    uint8_t hdr[DC_KEY_PROTO_HEADER_MAX];
    size_t hlen = dc_key_proto_header(DC_KEY_ED25519, DC_ED25519_PUBLIC_KEY_LEN, hdr);

    if (cap < hlen + DC_ED25519_PUBLIC_KEY_LEN)
        return DC_ELIMIT;
    memcpy(out, hdr, hlen);
    memcpy(out + hlen, pk, DC_ED25519_PUBLIC_KEY_LEN);
    *len = hlen + DC_ED25519_PUBLIC_KEY_LEN;
    return 0;
}

/*
 * PeerId of the canonical encoding hdr || data. Taking the two parts separately lets a large
 * RSA key be hashed without copying it.
 */
static void peer_id_from_encoding(const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t dlen,
                                  struct dc_peer_id *out)
{
    crypto_hash_sha256_state st;

    if (dlen <= DC_PEER_ID_INLINE_KEY_MAX && hlen + dlen <= DC_PEER_ID_INLINE_KEY_MAX) {
        out->bytes[0] = DC_MULTIHASH_IDENTITY;
        out->bytes[1] = (uint8_t)(hlen + dlen); /* <= 42: a one-byte varint */
        memcpy(out->bytes + 2, hdr, hlen);
        memcpy(out->bytes + 2 + hlen, data, dlen);
        out->len = 2 + hlen + dlen;
        return;
    }
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, hdr, hlen);
    crypto_hash_sha256_update(&st, data, dlen);
    out->bytes[0] = DC_MULTIHASH_SHA2_256;
    out->bytes[1] = crypto_hash_sha256_BYTES;
    crypto_hash_sha256_final(&st, out->bytes + 2);
    out->len = 2 + crypto_hash_sha256_BYTES;
}

int dc_peer_id_from_public_key_proto(const uint8_t *pk_proto, size_t len, struct dc_peer_id *out)
{
    struct dc_public_key key;
    uint8_t hdr[DC_KEY_PROTO_HEADER_MAX];
    size_t hlen;
    int rc;

    rc = dc_public_key_proto_decode(pk_proto, len, &key);
    if (rc < 0)
        return rc;
    /*
     * Hash what other implementations hash: they decode the key and marshal it again, so a
     * peer that sent fields out of order or with extras still gets its canonical PeerId.
     */
    hlen = dc_key_proto_header(key.type, key.len, hdr);
    peer_id_from_encoding(hdr, hlen, key.data, key.len, out);
    return 0;
}

int dc_peer_id_from_ed25519(const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN], struct dc_peer_id *out)
{
    uint8_t hdr[DC_KEY_PROTO_HEADER_MAX];
    size_t hlen = dc_key_proto_header(DC_KEY_ED25519, DC_ED25519_PUBLIC_KEY_LEN, hdr);

    peer_id_from_encoding(hdr, hlen, pk, DC_ED25519_PUBLIC_KEY_LEN, out);
    return 0;
}

/*
 * Splits a multihash into code and digest, checking the shapes a PeerId may have.
 * Returns 0 or DC_ECORRUPT.
 */
static int multihash_split(const uint8_t *mh, size_t len, uint64_t *code, const uint8_t **digest,
                           size_t *digest_len)
{
    uint64_t c, dlen;
    size_t used, off = 0;

    if (len > DC_PEER_ID_MAX)
        return DC_ECORRUPT;
    if (dc_varint_decode(mh, len, &c, &used) < 0)
        return DC_ECORRUPT;
    off += used;
    if (dc_varint_decode(mh + off, len - off, &dlen, &used) < 0)
        return DC_ECORRUPT;
    off += used;
    if (dlen != len - off)
        return DC_ECORRUPT;
    if (c == DC_MULTIHASH_IDENTITY) {
        /* Longer keys must be hashed, so a longer identity digest is no PeerId. */
        if (dlen == 0 || dlen > DC_PEER_ID_INLINE_KEY_MAX)
            return DC_ECORRUPT;
    } else if (c == DC_MULTIHASH_SHA2_256) {
        if (dlen != crypto_hash_sha256_BYTES)
            return DC_ECORRUPT;
    } else {
        return DC_ECORRUPT;
    }
    *code = c;
    *digest = mh + off;
    *digest_len = (size_t)dlen;
    return 0;
}

int dc_peer_id_from_bytes(const uint8_t *mh, size_t len, struct dc_peer_id *out)
{
    uint64_t code;
    const uint8_t *digest;
    size_t dlen;

    if (multihash_split(mh, len, &code, &digest, &dlen) < 0)
        return DC_ECORRUPT;
    memcpy(out->bytes, mh, len);
    out->len = len;
    return 0;
}

int dc_peer_id_to_string(const struct dc_peer_id *id, char *out, size_t cap)
{
    if (id->len > DC_PEER_ID_MAX)
        return DC_EINVAL;
    return dc_base58_encode(id->bytes, id->len, out, cap);
}

int dc_peer_id_to_cid_string(const struct dc_peer_id *id, char *out, size_t cap)
{
    uint8_t cid[2 + DC_PEER_ID_MAX];

    if (id->len > DC_PEER_ID_MAX)
        return DC_EINVAL;
    cid[0] = CID_VERSION_1;
    cid[1] = DC_MULTICODEC_LIBP2P_KEY;
    memcpy(cid + 2, id->bytes, id->len);
    return dc_multibase_encode(DC_MULTIBASE_BASE32, cid, 2 + id->len, out, cap);
}

int dc_peer_id_parse(const char *s, struct dc_peer_id *out)
{
    uint8_t buf[DC_PEER_ID_STR_MAX];
    size_t slen = strnlen(s, DC_PEER_ID_STR_MAX);
    uint64_t version, codec;
    size_t off = 0, used;
    int n;

    /* The bound also keeps base58's quadratic decoding cheap on hostile input. */
    if (slen == 0 || slen >= DC_PEER_ID_STR_MAX)
        return DC_ECORRUPT;
    /* The spec's rule: "1..." and "Qm..." are bare base58btc multihashes. */
    if (s[0] == '1' || (s[0] == 'Q' && s[1] == 'm')) {
        n = dc_base58_decode(s, slen, buf, sizeof(buf));
        if (n < 0)
            return DC_ECORRUPT;
        return dc_peer_id_from_bytes(buf, (size_t)n, out);
    }
    /* Anything else must be a multibase CIDv1 with the libp2p-key codec. */
    n = dc_multibase_decode(s, buf, sizeof(buf));
    if (n < 0)
        return DC_ECORRUPT;
    if (dc_varint_decode(buf, (size_t)n, &version, &used) < 0 || version != CID_VERSION_1)
        return DC_ECORRUPT;
    off += used;
    if (dc_varint_decode(buf + off, (size_t)n - off, &codec, &used) < 0 ||
        codec != DC_MULTICODEC_LIBP2P_KEY)
        return DC_ECORRUPT;
    off += used;
    return dc_peer_id_from_bytes(buf + off, (size_t)n - off, out);
}

bool dc_peer_id_equal(const struct dc_peer_id *a, const struct dc_peer_id *b)
{
    return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

int dc_peer_id_ed25519_public_key(const struct dc_peer_id *id,
                                  uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN])
{
    struct dc_public_key key;
    uint64_t code;
    const uint8_t *digest;
    size_t dlen;
    int rc;

    if (multihash_split(id->bytes, id->len, &code, &digest, &dlen) < 0)
        return DC_ECORRUPT;
    if (code != DC_MULTIHASH_IDENTITY)
        return DC_EUNSUPPORTED;
    rc = dc_public_key_proto_decode(digest, dlen, &key);
    if (rc < 0)
        return rc;
    if (key.type != DC_KEY_ED25519)
        return DC_EUNSUPPORTED;
    memcpy(pk, key.data, DC_ED25519_PUBLIC_KEY_LEN);
    return 0;
}

int dc_ed25519_verify(const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN], const uint8_t *msg, size_t len,
                      const uint8_t sig[DC_ED25519_SIGNATURE_LEN])
{
    return crypto_sign_verify_detached(sig, msg, len, pk) == 0 ? 0 : DC_ECRYPTO;
}

void dc_sha256(const void *p, size_t len, uint8_t digest[32])
{
    crypto_hash_sha256(digest, p, len);
}

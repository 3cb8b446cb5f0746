/* SPDX-License-Identifier: MIT */
/*
 * record.c - Democritus signed DHT records (record.h part 2): the /democritus/ namespace's
 * validator and selector, and the builder our nodes sign their own records with.
 *
 * A record is a libp2p signed envelope (RFC 0002, proto/libp2p/envelope.proto) with payload
 * type "/democritus/record/1", signed over varint(len) || "democritus-record" || varint(len) ||
 * payload_type || varint(len) || payload, where the payload is a Record
 * (proto/record.proto: key, seq, expires_unix_ms, body). Both messages go through the protoc-c
 * code, with an allocator over dc_malloc so that allocation-failure tests and the fuzzer see
 * every allocation; a value is capped at DC_KAD_MAX_VALUE before it is unpacked.
 *
 * The signature is checked over the payload bytes exactly as received (protobuf-c hands them
 * over as a copy of the received field), never over a re-encoding.
 *
 * Why these rules: the key's last component is the signer's PeerId, so only that peer can
 * write under it, and the payload repeats the key, so a signed record cannot be replayed
 * under another key of the same peer. seq orders versions without trusting anyone's clock.
 */
#include "p2p/record.h"

#include <string.h>

#include "base/varint.h"
#include "libp2p/envelope.pb-c.h"
#include "record.pb-c.h"
#include "p2p/pb.h"

#define PREFIX_LEN (sizeof(DC_DHT_RECORD_PREFIX) - 1)
#define DOMAIN_LEN (sizeof(DC_DHT_RECORD_DOMAIN) - 1)
#define TYPE_LEN   (sizeof(DC_DHT_RECORD_PAYLOAD_TYPE) - 1)
/* The bytes covered by the signature: three varint lengths, the domain, the type, a payload
 * no longer than a whole value. */
#define UNSIGNED_MAX (3 * DC_VARINT_MAX_LEN + DOMAIN_LEN + TYPE_LEN + DC_KAD_MAX_VALUE)

typedef Dc__Envelope__Envelope envelope_pb;
typedef Democritus__P2p__Record record_pb;

/* ---- protobuf-c glue -------------------------------------------------------------------- */

/*
 * protobuf-c copies every bytes field out of the input, but record.h promises pointers that
 * borrow from the caller's value: this finds the copy's bytes in in[0..in_len) (they are there,
 * since they were copied from it; any occurrence holds the same bytes). An empty field is a
 * valid zero-length pointer at the end of the input.
 */
static const uint8_t *borrow(const uint8_t *in, size_t in_len, const ProtobufCBinaryData *copy)
{
    if (copy->len == 0)
        return in + in_len;
    return memmem(in, in_len, copy->data, copy->len);
}

/* ---- keys ------------------------------------------------------------------------------- */

int dc_dht_record_key_check(const uint8_t *key, size_t key_len, const struct dc_peer_id *peer)
{
    char want[DC_PEER_ID_STR_MAX], got[DC_PEER_ID_STR_MAX];
    struct dc_peer_id other;
    size_t last = key_len, comp_len;
    int n;

    if (key_len <= PREFIX_LEN || memcmp(key, DC_DHT_RECORD_PREFIX, PREFIX_LEN) != 0)
        return DC_ECORRUPT;
    while (last > PREFIX_LEN && key[last - 1] != '/')
        last--;
    /* 'last' indexes the last component; a non-empty <kind> must come before it. */
    if (last <= PREFIX_LEN + 1 || key[PREFIX_LEN] == '/' || key[last - 2] == '/')
        return DC_ECORRUPT;
    comp_len = key_len - last;
    if (comp_len == 0 || comp_len >= sizeof(got))
        return DC_ECORRUPT;
    n = dc_peer_id_to_string(peer, want, sizeof(want));
    if (n < 0)
        return DC_EINVAL;
    if ((size_t)n == comp_len && memcmp(want, key + last, comp_len) == 0)
        return 0;
    memcpy(got, key + last, comp_len);
    got[comp_len] = '\0';
    return dc_peer_id_parse(got, &other) == 0 ? DC_EPERM : DC_ECORRUPT;
}

/* Unpacks an envelope (into '*out', for the caller to free) and checks that every field is
 * present and the payload type is ours. */
static int parse_envelope(const uint8_t *p, size_t len, envelope_pb **out)
{
    envelope_pb *e;

    *out = NULL;
    e = dc__envelope__envelope__unpack(&dc_pb_allocator, len, p);
    if (e == NULL)
        return dc_pb_unpack_error(len);
    /* An absent field is malformed; an empty one goes on to fail a later check. */
    if (!e->has_public_key || !e->has_payload_type || !e->has_payload || !e->has_signature ||
        e->payload_type.len != TYPE_LEN ||
        memcmp(e->payload_type.data, DC_DHT_RECORD_PAYLOAD_TYPE, TYPE_LEN) != 0) {
        dc__envelope__envelope__free_unpacked(e, &dc_pb_allocator);
        return DC_ECORRUPT;
    }
    *out = e;
    return 0;
}

/* Reads the Record in the envelope's payload, which lies in value[0..value_len); the key and
 * body in '*r' borrow from value. */
static int parse_payload(const uint8_t *value, size_t value_len, const envelope_pb *e,
                         struct dc_dht_record *r)
{
    const uint8_t *p = borrow(value, value_len, &e->payload);
    size_t len = e->payload.len;
    record_pb *pb;
    int rc = DC_ECORRUPT;

    if (p == NULL)
        return DC_ECORRUPT; /* cannot happen: the payload was copied from value */
    pb = democritus__p2p__record__unpack(&dc_pb_allocator, len, p);
    if (pb == NULL)
        return dc_pb_unpack_error(len);
    if (pb->key.len == 0 || pb->expires_unix_ms == 0)
        goto out_pb;
    r->key = borrow(p, len, &pb->key);
    r->key_len = pb->key.len;
    r->seq = pb->seq;
    r->expires_ms = pb->expires_unix_ms;
    r->body = borrow(p, len, &pb->body); /* empty: a valid, zero-length pointer */
    r->body_len = pb->body.len;
    if (r->key == NULL || r->body == NULL)
        goto out_pb;
    rc = r->body_len <= DC_DHT_RECORD_MAX_BODY ? 0 : DC_ELIMIT;
out_pb:
    democritus__p2p__record__free_unpacked(pb, &dc_pb_allocator);
    return rc;
}

/* Writes the bytes the signature covers into buf (UNSIGNED_MAX bytes); returns the length. */
static size_t unsigned_bytes(const uint8_t *payload, size_t payload_len, uint8_t *buf)
{
    size_t n = 0;

    n += dc_varint_encode(DOMAIN_LEN, buf + n);
    memcpy(buf + n, DC_DHT_RECORD_DOMAIN, DOMAIN_LEN);
    n += DOMAIN_LEN;
    n += dc_varint_encode(TYPE_LEN, buf + n);
    memcpy(buf + n, DC_DHT_RECORD_PAYLOAD_TYPE, TYPE_LEN);
    n += TYPE_LEN;
    n += dc_varint_encode(payload_len, buf + n);
    if (payload_len > 0)
        memcpy(buf + n, payload, payload_len);
    return n + payload_len;
}

/* ---- opening and signing ---------------------------------------------------------------- */

int dc_dht_record_open(const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
                       uint64_t now_ms, struct dc_dht_record *out)
{
    uint8_t buf[UNSIGNED_MAX];
    struct dc_dht_record d, *r = out != NULL ? out : &d;
    struct dc_public_key pk;
    envelope_pb *e;
    int rc;

    memset(r, 0, sizeof(*r));
    if (value_len > DC_KAD_MAX_VALUE || key_len > DC_KAD_MAX_KEY)
        return DC_ELIMIT;
    rc = parse_envelope(value, value_len, &e);
    if (rc < 0)
        return rc;
    rc = dc_public_key_proto_decode(e->public_key.data, e->public_key.len, &pk);
    if (rc < 0) {
        rc = rc == DC_EUNSUPPORTED ? rc : DC_ECORRUPT;
        goto out_env;
    }
    rc = DC_EUNSUPPORTED;
    if (pk.type != DC_KEY_ED25519)
        goto out_env;
    /* payload.len < value_len <= DC_KAD_MAX_VALUE: the signed bytes fit buf. */
    rc = DC_ECRYPTO;
    if (e->signature.len != DC_ED25519_SIGNATURE_LEN ||
        dc_ed25519_verify(pk.data, buf, unsigned_bytes(e->payload.data, e->payload.len, buf),
                          e->signature.data) < 0)
        goto out_env;
    rc = DC_ECORRUPT;
    if (dc_peer_id_from_public_key_proto(e->public_key.data, e->public_key.len, &r->signer) < 0)
        goto out_env;
    rc = dc_dht_record_key_check(key, key_len, &r->signer);
    if (rc < 0)
        goto out_env;
    rc = parse_payload(value, value_len, e, r);
    if (rc < 0)
        goto out_env;
    if (r->key_len != key_len || memcmp(r->key, key, key_len) != 0)
        rc = DC_EPERM;
    else
        rc = r->expires_ms <= now_ms ? DC_ETIMEDOUT : 0;
out_env:
    dc__envelope__envelope__free_unpacked(e, &dc_pb_allocator);
    return rc;
}

int dc_dht_record_sign(const struct dc_identity *id, const uint8_t *key, size_t key_len,
                       uint64_t seq, uint64_t expires_ms, const uint8_t *body, size_t body_len,
                       struct dc_buf *out)
{
    uint8_t pk[DC_ED25519_PUBLIC_KEY_PROTO_LEN], sig[DC_ED25519_SIGNATURE_LEN];
    record_pb rec = DEMOCRITUS__P2P__RECORD__INIT;
    envelope_pb env = DC__ENVELOPE__ENVELOPE__INIT;
    uint8_t *payload = NULL, *buf = NULL, *packed = NULL;
    size_t pk_len, payload_len, packed_len;
    int rc;

    if (key_len == 0 || expires_ms == 0)
        return DC_EINVAL;
    if (key_len > DC_KAD_MAX_KEY || body_len > DC_DHT_RECORD_MAX_BODY)
        return DC_ELIMIT;
    rc = dc_dht_record_key_check(key, key_len, dc_identity_peer_id(id));
    if (rc < 0)
        return rc;
    rc = dc_identity_public_key_proto(id, pk, sizeof(pk), &pk_len);
    if (rc < 0)
        return rc;
    /* proto3: seq 0 and an empty body are left out of the payload, as the spec'd encoding. */
    rec.key.data = (uint8_t *)key;
    rec.key.len = key_len;
    rec.seq = seq;
    rec.expires_unix_ms = expires_ms;
    rec.body.data = (uint8_t *)body;
    rec.body.len = body_len;
    payload_len = democritus__p2p__record__get_packed_size(&rec);
    if (payload_len > DC_KAD_MAX_VALUE)
        return DC_ELIMIT;
    rc = DC_ENOMEM;
    payload = dc_malloc(payload_len);
    if (payload == NULL)
        goto out_free;
    buf = dc_malloc(UNSIGNED_MAX);
    if (buf == NULL)
        goto out_free;
    democritus__p2p__record__pack(&rec, payload);
    rc = dc_identity_sign(id, buf, unsigned_bytes(payload, payload_len, buf), sig);
    if (rc < 0)
        goto out_free;
    env.has_public_key = env.has_payload_type = env.has_payload = env.has_signature = 1;
    env.public_key.data = pk;
    env.public_key.len = pk_len;
    env.payload_type.data = (uint8_t *)DC_DHT_RECORD_PAYLOAD_TYPE;
    env.payload_type.len = TYPE_LEN;
    env.payload.data = payload;
    env.payload.len = payload_len;
    env.signature.data = sig;
    env.signature.len = sizeof(sig);
    packed_len = dc__envelope__envelope__get_packed_size(&env);
    rc = DC_ELIMIT;
    if (packed_len > DC_KAD_MAX_VALUE)
        goto out_free;
    rc = DC_ENOMEM;
    packed = dc_malloc(packed_len);
    if (packed == NULL)
        goto out_free;
    dc__envelope__envelope__pack(&env, packed);
    rc = dc_buf_append(out, packed, packed_len);

out_free:
    dc_free(packed);
    dc_free(buf);
    dc_free(payload);
    return rc;
}

int dc_dht_record_key_from_text(const char *text, uint8_t out[DC_KAD_MAX_KEY], size_t *len)
{
    static const char *const ns[] = {"/ipns/", "/pk/"};
    size_t tlen = strlen(text);

    *len = 0;
    for (size_t i = 0; i < DC_ARRAY_LEN(ns); i++) {
        size_t nlen = strlen(ns[i]);
        struct dc_peer_id id;

        if (strncmp(text, ns[i], nlen) != 0)
            continue;
        if (dc_peer_id_parse(text + nlen, &id) < 0)
            return DC_EINVAL;
        memcpy(out, ns[i], nlen);
        memcpy(out + nlen, id.bytes, id.len); /* nlen + DC_PEER_ID_MAX < DC_KAD_MAX_KEY */
        *len = nlen + id.len;
        return 0;
    }
    if (tlen == 0 || tlen > DC_KAD_MAX_KEY)
        return DC_EINVAL;
    memcpy(out, text, tlen);
    *len = tlen;
    return 0;
}

static int record_validate_cb(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                              size_t value_len, uint64_t now_ms)
{
    DC_UNUSED(ud);
    return dc_dht_record_open(key, key_len, value, value_len, now_ms, NULL);
}

/* The values were validated already: only their payloads' seq is read. A value that cannot
 * be read (or not for want of memory) never wins. */
static size_t record_select_cb(void *ud, const uint8_t *key, size_t key_len,
                               const uint8_t *const *values, const size_t *value_lens, size_t n)
{
    uint64_t best_seq = 0;
    size_t best = 0;
    bool have = false;

    DC_UNUSED(ud);
    DC_UNUSED(key);
    DC_UNUSED(key_len);
    for (size_t i = 0; i < n; i++) {
        struct dc_dht_record r = {0};
        envelope_pb *e;
        int rc;

        if (parse_envelope(values[i], value_lens[i], &e) < 0)
            continue;
        rc = parse_payload(values[i], value_lens[i], e, &r);
        dc__envelope__envelope__free_unpacked(e, &dc_pb_allocator);
        if (rc < 0)
            continue;
        if (!have || r.seq > best_seq) {
            best_seq = r.seq;
            best = i;
            have = true;
        }
    }
    return best;
}

void dc_dht_record_validator(struct dc_kad_validator *out)
{
    memset(out, 0, sizeof(*out));
    out->validate = record_validate_cb;
    out->select = record_select_cb;
}

/* SPDX-License-Identifier: MIT */
/*
 * record.c - Democritus signed DHT records (record.h part 2): the /democritus/ namespace's
 * validator and selector, and the builder our nodes sign their own records with.
 *
 * A record is a libp2p signed envelope (RFC 0002):
 *
 *   Envelope { bytes public_key = 1;  (a libp2p PublicKey protobuf, Ed25519)
 *              bytes payload_type = 2; ("/democritus/record/1")
 *              bytes payload = 3;
 *              bytes signature = 5; }
 *
 * signed over varint(len) || "democritus-record" || varint(len) || payload_type ||
 * varint(len) || payload, where the payload is
 *
 *   Record { bytes key = 1; uint64 seq = 2; uint64 expires_unix_ms = 3; bytes body = 4; }.
 *
 * Why these rules: the key's last component is the signer's PeerId, so only that peer can
 * write under it, and the payload repeats the key, so a signed record cannot be replayed
 * under another key of the same peer. seq orders versions without trusting anyone's clock.
 */
#include "p2p/record.h"

#include <string.h>

#include "p2p/pb_int.h"

#define PREFIX_LEN (sizeof(DC_DHT_RECORD_PREFIX) - 1)
#define DOMAIN_LEN (sizeof(DC_DHT_RECORD_DOMAIN) - 1)
#define TYPE_LEN   (sizeof(DC_DHT_RECORD_PAYLOAD_TYPE) - 1)
/* The bytes covered by the signature: three varint lengths, the domain, the type, a payload
 * no longer than a whole value. */
#define UNSIGNED_MAX (3 * 10 + DOMAIN_LEN + TYPE_LEN + DC_KAD_MAX_VALUE)

struct envelope {
    const uint8_t *pub_key, *type, *payload, *sig;
    size_t pub_key_len, type_len, payload_len, sig_len;
};

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

static int parse_envelope(const uint8_t *p, size_t len, struct envelope *e)
{
    struct pb_field f;
    size_t pos = 0;
    int rc;

    memset(e, 0, sizeof(*e));
    while ((rc = pb_next(p, len, &pos, &f)) == 1) {
        if (f.num != 1 && f.num != 2 && f.num != 3 && f.num != 5)
            continue; /* unknown fields are not signed, and not used */
        if (f.wire != PB_LEN)
            return DC_ECORRUPT;
        if (f.num == 1)
            e->pub_key = f.p, e->pub_key_len = f.len;
        else if (f.num == 2)
            e->type = f.p, e->type_len = f.len;
        else if (f.num == 3)
            e->payload = f.p, e->payload_len = f.len;
        else
            e->sig = f.p, e->sig_len = f.len;
    }
    if (rc < 0 || e->pub_key == NULL || e->type == NULL || e->payload == NULL || e->sig == NULL)
        return DC_ECORRUPT;
    if (e->type_len != TYPE_LEN || memcmp(e->type, DC_DHT_RECORD_PAYLOAD_TYPE, TYPE_LEN) != 0)
        return DC_ECORRUPT;
    return 0;
}

static int parse_payload(const uint8_t *p, size_t len, struct dc_dht_record *r)
{
    struct pb_field f;
    size_t pos = 0;
    int rc;

    while ((rc = pb_next(p, len, &pos, &f)) == 1) {
        bool bytes = f.wire == PB_LEN, varint = f.wire == PB_VARINT;

        if ((f.num == 1 || f.num == 4) && !bytes)
            return DC_ECORRUPT;
        if ((f.num == 2 || f.num == 3) && !varint)
            return DC_ECORRUPT;
        if (f.num == 1)
            r->key = f.p, r->key_len = f.len;
        else if (f.num == 2)
            r->seq = f.u;
        else if (f.num == 3)
            r->expires_ms = f.u;
        else if (f.num == 4)
            r->body = f.p, r->body_len = f.len;
    }
    if (rc < 0 || r->key_len == 0 || r->expires_ms == 0)
        return DC_ECORRUPT;
    if (r->body == NULL)
        r->body = p + len; /* empty body: a valid, zero-length pointer */
    return r->body_len <= DC_DHT_RECORD_MAX_BODY ? 0 : DC_ELIMIT;
}

/* Writes the bytes the signature covers into buf (UNSIGNED_MAX bytes); returns the length. */
static size_t unsigned_bytes(const uint8_t *payload, size_t payload_len, uint8_t *buf)
{
    size_t n = 0;

    n += pb_put_varint(DOMAIN_LEN, buf + n);
    memcpy(buf + n, DC_DHT_RECORD_DOMAIN, DOMAIN_LEN);
    n += DOMAIN_LEN;
    n += pb_put_varint(TYPE_LEN, buf + n);
    memcpy(buf + n, DC_DHT_RECORD_PAYLOAD_TYPE, TYPE_LEN);
    n += TYPE_LEN;
    n += pb_put_varint(payload_len, buf + n);
    memcpy(buf + n, payload, payload_len);
    return n + payload_len;
}

int dc_dht_record_open(const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
                       uint64_t now_ms, struct dc_dht_record *out)
{
    uint8_t buf[UNSIGNED_MAX];
    struct dc_dht_record d, *r = out != NULL ? out : &d;
    struct dc_public_key pk;
    struct envelope e;
    int rc;

    memset(r, 0, sizeof(*r));
    if (value_len > DC_KAD_MAX_VALUE || key_len > DC_KAD_MAX_KEY)
        return DC_ELIMIT;
    rc = parse_envelope(value, value_len, &e);
    if (rc < 0)
        return rc;
    rc = dc_public_key_proto_decode(e.pub_key, e.pub_key_len, &pk);
    if (rc < 0)
        return rc == DC_EUNSUPPORTED ? rc : DC_ECORRUPT;
    if (pk.type != DC_KEY_ED25519)
        return DC_EUNSUPPORTED;
    if (e.sig_len != DC_ED25519_SIGNATURE_LEN)
        return DC_ECRYPTO;
    if (dc_ed25519_verify(pk.data, buf, unsigned_bytes(e.payload, e.payload_len, buf), e.sig) < 0)
        return DC_ECRYPTO;
    if (dc_peer_id_from_public_key_proto(e.pub_key, e.pub_key_len, &r->signer) < 0)
        return DC_ECORRUPT;
    rc = dc_dht_record_key_check(key, key_len, &r->signer);
    if (rc < 0)
        return rc;
    rc = parse_payload(e.payload, e.payload_len, r);
    if (rc < 0)
        return rc;
    if (r->key_len != key_len || memcmp(r->key, key, key_len) != 0)
        return DC_EPERM;
    return r->expires_ms <= now_ms ? DC_ETIMEDOUT : 0;
}

int dc_dht_record_sign(const struct dc_identity *id, const uint8_t *key, size_t key_len,
                       uint64_t seq, uint64_t expires_ms, const uint8_t *body, size_t body_len,
                       struct dc_buf *out)
{
    uint8_t pk[DC_ED25519_PUBLIC_KEY_PROTO_LEN], sig[DC_ED25519_SIGNATURE_LEN];
    struct dc_buf payload, env;
    uint8_t *buf;
    size_t pk_len;
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
    dc_buf_init(&payload, DC_KAD_MAX_VALUE);
    dc_buf_init(&env, DC_KAD_MAX_VALUE);
    buf = dc_malloc(UNSIGNED_MAX);
    if (buf == NULL) {
        rc = DC_ENOMEM;
        goto out_bufs;
    }
    rc = pb_append_bytes(&payload, 1, key, key_len);
    if (rc == 0 && seq != 0)
        rc = pb_append_varint(&payload, 2, seq);
    if (rc == 0)
        rc = pb_append_varint(&payload, 3, expires_ms);
    if (rc == 0 && body_len > 0)
        rc = pb_append_bytes(&payload, 4, body, body_len);
    if (rc < 0)
        goto out_bufs;
    rc = dc_identity_sign(id, buf, unsigned_bytes(payload.data, payload.len, buf), sig);
    if (rc < 0)
        goto out_bufs;
    rc = pb_append_bytes(&env, 1, pk, pk_len);
    if (rc == 0)
        rc = pb_append_bytes(&env, 2, DC_DHT_RECORD_PAYLOAD_TYPE, TYPE_LEN);
    if (rc == 0)
        rc = pb_append_bytes(&env, 3, payload.data, payload.len);
    if (rc == 0)
        rc = pb_append_bytes(&env, 5, sig, sizeof(sig));
    if (rc == 0)
        rc = dc_buf_append(out, env.data, env.len);

out_bufs:
    dc_free(buf);
    dc_buf_cleanup(&env);
    dc_buf_cleanup(&payload);
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

/* The values were validated already: only their payloads' seq is read. */
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
        struct envelope e;

        if (parse_envelope(values[i], value_lens[i], &e) < 0 ||
            parse_payload(e.payload, e.payload_len, &r) < 0)
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

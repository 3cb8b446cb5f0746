/* SPDX-License-Identifier: MIT */
/*
 * ipns_test.c - the /ipns/ record validator and selector (p2p/record.h part 1). The test
 * builds its own records: a DAG-CBOR data map and an IpnsEntry protobuf written by small
 * encoders here (independent of the parser's code), signed with libsodium. Covers a valid
 * record (V1+V2, V2 only, embedded pubKey), bad signatures, expiry, key mismatch, V1/V2
 * mismatch, CBOR shape errors, unsupported key and validity types, every truncation and
 * random garbage, the size cap, allocation failures, RFC 3339 parsing, and selection (directly
 * and through a dc_kad store).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/kad.h"
#include "p2p/record.h"

/* 2030-01-01T00:00:00Z and a "now" before it. */
#define EOL_2030 1893456000000ull
#define NOW_MS   1800000000000ull

struct key {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    struct dc_peer_id id;
    uint8_t dht_key[6 + DC_PEER_ID_MAX]; /* "/ipns/" + binary PeerId */
    size_t dht_key_len;
};

static void key_make(uint8_t seed_byte, struct key *k)
{
    uint8_t seed[crypto_sign_SEEDBYTES];

    memset(seed, seed_byte, sizeof(seed));
    crypto_sign_seed_keypair(k->pk, k->sk, seed);
    assert_int_equal(dc_peer_id_from_ed25519(k->pk, &k->id), 0);
    memcpy(k->dht_key, "/ipns/", 6);
    memcpy(k->dht_key + 6, k->id.bytes, k->id.len);
    k->dht_key_len = 6 + k->id.len;
}

/* ---- encoders (the test's own) ------------------------------------------------------------ */

struct out {
    uint8_t b[16384];
    size_t n;
};

static void put(struct out *o, const void *p, size_t n)
{
    assert_true(o->n + n <= sizeof(o->b));
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put_byte(struct out *o, uint8_t b)
{
    put(o, &b, 1);
}

static void cbor_head(struct out *o, unsigned major, uint64_t arg)
{
    uint8_t m = (uint8_t)(major << 5);

    if (arg < 24) {
        put_byte(o, (uint8_t)(m | arg));
    } else if (arg <= 0xff) {
        put_byte(o, m | 24);
        put_byte(o, (uint8_t)arg);
    } else if (arg <= 0xffff) {
        put_byte(o, m | 25);
        put_byte(o, (uint8_t)(arg >> 8));
        put_byte(o, (uint8_t)arg);
    } else if (arg <= 0xffffffffu) {
        put_byte(o, m | 26);
        for (int i = 3; i >= 0; i--)
            put_byte(o, (uint8_t)(arg >> (8 * i)));
    } else {
        put_byte(o, m | 27);
        for (int i = 7; i >= 0; i--)
            put_byte(o, (uint8_t)(arg >> (8 * i)));
    }
}

static void cbor_text(struct out *o, const char *s)
{
    cbor_head(o, 3, strlen(s));
    put(o, s, strlen(s));
}

static void cbor_bytes(struct out *o, const char *s)
{
    cbor_head(o, 2, strlen(s));
    put(o, s, strlen(s));
}

static void pb_varint(struct out *o, uint64_t v)
{
    while (v >= 0x80) {
        put_byte(o, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_byte(o, (uint8_t)v);
}

static void pb_bytes(struct out *o, unsigned field, const void *p, size_t n)
{
    pb_varint(o, field << 3 | 2);
    pb_varint(o, n);
    put(o, p, n);
}

static void pb_uint(struct out *o, unsigned field, uint64_t v)
{
    pb_varint(o, field << 3);
    pb_varint(o, v);
}

/* What to put in a record; zero values mean the normal choice. */
struct spec {
    const char *value;    /* default "/ipfs/bafkqaaa" */
    const char *validity; /* default 2030-01-01 */
    uint64_t validity_type, seq, ttl;
    bool no_v1;                /* V2 only */
    const char *v1_value;      /* a V1 value other than the CBOR one */
    bool v1_seq_off;           /* V1 sequence = CBOR sequence + 1 */
    const struct key *signer;  /* default: the key itself */
    const struct key *pub_key; /* embed this key's PublicKey protobuf */
    bool extra_entry;          /* an unknown CBOR entry (allowed) */
    bool dup_entry;            /* "TTL" twice */
    bool drop_ttl;             /* no TTL entry */
    bool flip_sig;
};

static void build(const struct key *k, const struct spec *s, struct out *rec)
{
    const char *value = s->value != NULL ? s->value : "/ipfs/bafkqaaa";
    const char *validity = s->validity != NULL ? s->validity : "2030-01-01T00:00:00.000000000Z";
    const struct key *signer = s->signer != NULL ? s->signer : k;
    struct out data = {0}, msg = {0};
    uint8_t sig[crypto_sign_BYTES];
    unsigned n = 5 + (s->extra_entry ? 1u : 0u) + (s->dup_entry ? 1u : 0u) - (s->drop_ttl ? 1 : 0);

    /* DAG-CBOR map, keys in canonical order (length first, then bytes). */
    cbor_head(&data, 5, n);
    if (!s->drop_ttl) {
        cbor_text(&data, "TTL");
        cbor_head(&data, 0, s->ttl);
    }
    if (s->dup_entry) {
        cbor_text(&data, "TTL");
        cbor_head(&data, 0, s->ttl);
    }
    cbor_text(&data, "Value");
    cbor_bytes(&data, value);
    if (s->extra_entry) {
        cbor_text(&data, "Extra");
        cbor_head(&data, 4, 2); /* [ {1: -1}, 1(h'00') ] */
        cbor_head(&data, 5, 1);
        cbor_head(&data, 0, 1);
        cbor_head(&data, 1, 0);
        cbor_head(&data, 6, 1);
        cbor_head(&data, 2, 1);
        put_byte(&data, 0);
    }
    cbor_text(&data, "Sequence");
    cbor_head(&data, 0, s->seq);
    cbor_text(&data, "Validity");
    cbor_bytes(&data, validity);
    cbor_text(&data, "ValidityType");
    cbor_head(&data, 0, s->validity_type);

    put(&msg, "ipns-signature:", 15);
    put(&msg, data.b, data.n);
    crypto_sign_detached(sig, NULL, msg.b, msg.n, signer->sk);
    if (s->flip_sig)
        sig[10] ^= 1;

    rec->n = 0;
    if (!s->no_v1) {
        const char *v1v = s->v1_value != NULL ? s->v1_value : value;

        pb_bytes(rec, 1, v1v, strlen(v1v));
        pb_bytes(rec, 2, sig, sizeof(sig)); /* stands in for a V1 signature: not checked */
        pb_uint(rec, 3, s->validity_type);
        pb_bytes(rec, 4, validity, strlen(validity));
        pb_uint(rec, 5, s->seq + (s->v1_seq_off ? 1 : 0));
        pb_uint(rec, 6, s->ttl);
    }
    if (s->pub_key != NULL) {
        uint8_t pkp[DC_ED25519_PUBLIC_KEY_PROTO_LEN];
        size_t pkl;

        assert_int_equal(dc_ed25519_public_key_proto(s->pub_key->pk, pkp, sizeof(pkp), &pkl), 0);
        pb_bytes(rec, 7, pkp, pkl);
    }
    pb_bytes(rec, 8, sig, sizeof(sig));
    pb_bytes(rec, 9, data.b, data.n);
}

static int check(const struct key *k, const struct out *rec, uint64_t now_ms)
{
    return dc_ipns_validate(k->dht_key, k->dht_key_len, rec->b, rec->n, now_ms, NULL);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_valid(void **state)
{
    struct key k, other;
    struct out rec;
    struct dc_ipns_entry e;

    (void)state;
    key_make(1, &k);
    key_make(2, &other);
    build(&k, &(struct spec){.seq = 7, .ttl = 300000000000ull}, &rec);
    assert_int_equal(dc_ipns_validate(k.dht_key, k.dht_key_len, rec.b, rec.n, NOW_MS, &e), 0);
    assert_int_equal(e.value_len, strlen("/ipfs/bafkqaaa"));
    assert_memory_equal(e.value, "/ipfs/bafkqaaa", e.value_len);
    assert_int_equal(e.sequence, 7);
    assert_int_equal(e.ttl_ns, 300000000000ull);
    assert_int_equal(e.validity_type, DC_IPNS_VALIDITY_EOL);
    assert_int_equal(e.eol_ms, EOL_2030);
    /* The entry borrows from the record. */
    assert_true(e.value >= rec.b && e.value + e.value_len <= rec.b + rec.n);
    assert_true(e.validity >= rec.b && e.validity + e.validity_len <= rec.b + rec.n);
    /* V2 only; an unknown CBOR entry; an embedded pubKey that is the key's own. */
    build(&k, &(struct spec){.no_v1 = true, .seq = 1}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), 0);
    build(&k, &(struct spec){.extra_entry = true}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), 0);
    build(&k, &(struct spec){.pub_key = &k}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), 0);
    /* The kad node validates /ipns/ with it. */
    {
        struct dc_kad_config cfg;
        struct dc_kad *kad;
        const uint8_t *v;
        size_t vl;

        dc_kad_config_default(&cfg, &other.id);
        assert_int_equal(dc_kad_new(&cfg, &kad), 0);
        assert_int_equal(dc_kad_put_local(kad, k.dht_key, k.dht_key_len, rec.b, rec.n, NOW_MS), 0);
        assert_int_equal(dc_kad_get_local(kad, k.dht_key, k.dht_key_len, NOW_MS, &v, &vl), 0);
        assert_int_equal(vl, rec.n);
        /* ...under another key it is someone else's name. */
        assert_int_equal(
            dc_kad_put_local(kad, other.dht_key, other.dht_key_len, rec.b, rec.n, NOW_MS),
            DC_ECRYPTO);
        dc_kad_free(kad);
    }
}

static void test_bad_signature(void **state)
{
    struct key k, other;
    struct out rec;

    (void)state;
    key_make(1, &k);
    key_make(2, &other);
    build(&k, &(struct spec){.flip_sig = true}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECRYPTO);
    /* Signed by another key, no pubKey: the key's own (inlined) key does not verify. */
    build(&k, &(struct spec){.signer = &other}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECRYPTO);
    /* The signed data changed after signing (last byte of data: ValidityType 0 -> 1 keeps
     * the CBOR well-formed). */
    build(&k, &(struct spec){.no_v1 = true}, &rec);
    rec.b[rec.n - 1] ^= 1;
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECRYPTO);
}

static void test_key_mismatch(void **state)
{
    struct key k, other;
    struct out rec;

    (void)state;
    key_make(1, &k);
    key_make(2, &other);
    /* The embedded key is another peer's (and signed it): not this name's key. */
    build(&k, &(struct spec){.signer = &other, .pub_key = &other}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECRYPTO);
    /* A key that is no /ipns/<PeerId>. */
    build(&k, &(struct spec){0}, &rec);
    assert_int_equal(dc_ipns_validate((const uint8_t *)"/ipns/", 6, rec.b, rec.n, NOW_MS, NULL),
                     DC_ECORRUPT);
    assert_int_equal(dc_ipns_validate(k.dht_key, k.dht_key_len - 1, rec.b, rec.n, NOW_MS, NULL),
                     DC_ECORRUPT);
    assert_int_equal(dc_ipns_validate((const uint8_t *)"/pk/abc", 7, rec.b, rec.n, NOW_MS, NULL),
                     DC_ECORRUPT);
}

static void test_expired(void **state)
{
    struct key k;
    struct out rec;

    (void)state;
    key_make(1, &k);
    build(&k, &(struct spec){0}, &rec);
    assert_int_equal(check(&k, &rec, EOL_2030), 0);
    assert_int_equal(check(&k, &rec, EOL_2030 + 1), DC_ETIMEDOUT);
    /* 2030-01-01T01:00:00+01:00 is the same instant. */
    build(&k, &(struct spec){.validity = "2030-01-01T01:00:00+01:00"}, &rec);
    assert_int_equal(check(&k, &rec, EOL_2030), 0);
    assert_int_equal(check(&k, &rec, EOL_2030 + 1), DC_ETIMEDOUT);
    build(&k, &(struct spec){.validity = "2030-13-01T00:00:00Z"}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECORRUPT);
    build(&k, &(struct spec){.validity = "soon"}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECORRUPT);
    /* Another validity type is not one we know how to check. */
    build(&k, &(struct spec){.validity_type = 1}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_EUNSUPPORTED);
}

static void test_v1_v2_mismatch(void **state)
{
    struct key k;
    struct out rec;

    (void)state;
    key_make(1, &k);
    build(&k, &(struct spec){.v1_value = "/ipfs/other"}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECRYPTO);
    build(&k, &(struct spec){.seq = 4, .v1_seq_off = true}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECRYPTO);
    /* A V1 validityType (the spec's enum) other than the signed one. */
    build(&k, &(struct spec){.no_v1 = true}, &rec);
    pb_uint(&rec, 3, 1);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECRYPTO);
}

static void test_unsupported_keys(void **state)
{
    uint8_t rsa[300], pkp[320];
    struct dc_peer_id id;
    uint8_t dht_key[6 + DC_PEER_ID_MAX];
    struct key k;
    struct out rec = {0};
    size_t n = 0;

    (void)state;
    key_make(1, &k);
    /* An RSA-typed PublicKey is too long to inline: its PeerId is a sha2-256 hash. */
    memset(rsa, 0x5a, sizeof(rsa));
    pkp[n++] = 0x08, pkp[n++] = 0x00;                  /* Type RSA */
    pkp[n++] = 0x12, pkp[n++] = 0xac, pkp[n++] = 0x02; /* Data, 300 bytes */
    memcpy(pkp + n, rsa, sizeof(rsa));
    n += sizeof(rsa);
    assert_int_equal(dc_peer_id_from_public_key_proto(pkp, n, &id), 0);
    memcpy(dht_key, "/ipns/", 6);
    memcpy(dht_key + 6, id.bytes, id.len);
    build(&k, &(struct spec){.no_v1 = true}, &rec);
    /* Without pubKey a hashed PeerId gives no key; with it, the key is RSA. */
    assert_int_equal(dc_ipns_validate(dht_key, 6 + id.len, rec.b, rec.n, NOW_MS, NULL),
                     DC_EUNSUPPORTED);
    pb_bytes(&rec, 7, pkp, n);
    assert_int_equal(dc_ipns_validate(dht_key, 6 + id.len, rec.b, rec.n, NOW_MS, NULL),
                     DC_EUNSUPPORTED);
}

static void test_cbor_shape(void **state)
{
    struct key k;
    struct out rec;

    (void)state;
    key_make(1, &k);
    build(&k, &(struct spec){.dup_entry = true}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECORRUPT);
    build(&k, &(struct spec){.drop_ttl = true, .no_v1 = true}, &rec);
    assert_int_equal(check(&k, &rec, NOW_MS), DC_ECORRUPT);
    /* No data, no signatureV2: a V1-only record is not accepted. */
    {
        struct out v1 = {0};

        pb_bytes(&v1, 1, "/ipfs/x", 7);
        pb_uint(&v1, 5, 1);
        assert_int_equal(check(&k, &v1, NOW_MS), DC_ECORRUPT);
    }
}

static void test_truncated_garbage(void **state)
{
    struct key k;
    struct out rec, big = {0};
    uint8_t junk[512];

    (void)state;
    key_make(1, &k);
    build(&k, &(struct spec){.extra_entry = true, .pub_key = &k}, &rec);
    for (size_t n = 0; n < rec.n; n++) {
        int rc = dc_ipns_validate(k.dht_key, k.dht_key_len, rec.b, n, NOW_MS, NULL);
        struct dc_ipns_entry e;

        assert_true(rc == DC_ECORRUPT || rc == DC_ECRYPTO);
        (void)!dc_ipns_parse(rec.b, n, &e);
    }
    /* In a V2-only record every byte is signed or structural: any change is refused. */
    build(&k, &(struct spec){.no_v1 = true}, &rec);
    for (size_t i = 0; i < rec.n; i++) {
        rec.b[i] ^= 0x41;
        assert_true(check(&k, &rec, NOW_MS) < 0);
        rec.b[i] ^= 0x41;
    }
    assert_int_equal(check(&k, &rec, NOW_MS), 0);
    randombytes_buf_deterministic(junk, sizeof(junk), (const uint8_t[32]){7});
    for (size_t n = 0; n <= sizeof(junk); n += 17)
        assert_true(dc_ipns_validate(k.dht_key, k.dht_key_len, junk, n, NOW_MS, NULL) < 0);
    /* The size cap. */
    build(&k, &(struct spec){0}, &big);
    pb_bytes(&big, 15, junk, sizeof(junk)); /* unknown field: skipped, but counted */
    while (big.n <= DC_IPNS_MAX_RECORD)
        pb_bytes(&big, 15, junk, sizeof(junk));
    assert_int_equal(check(&k, &big, NOW_MS), DC_ELIMIT);
    /* Deep CBOR nesting in an unknown entry stops at the depth limit. */
    {
        struct out data = {0}, r = {0};

        cbor_head(&data, 5, 1);
        cbor_text(&data, "X");
        for (int i = 0; i < 40; i++)
            cbor_head(&data, 4, 1);
        cbor_head(&data, 0, 0);
        pb_bytes(&r, 8, junk, 64);
        pb_bytes(&r, 9, data.b, data.n);
        assert_int_equal(check(&k, &r, NOW_MS), DC_ECORRUPT);
    }
}

/* Validation and parsing unwind with DC_ENOMEM at every allocation and leak nothing. */
static void test_alloc_failures(void **state)
{
    struct dc_ipns_entry e;
    struct key k;
    struct out rec;
    int rc = DC_ENOMEM;

    (void)state;
    key_make(1, &k);
    build(&k, &(struct spec){.seq = 3, .pub_key = &k, .extra_entry = true}, &rec);
    for (long n = 0; rc == DC_ENOMEM; n++) {
        assert_true(n < 64);
        dc_alloc_fail_after(n);
        rc = dc_ipns_validate(k.dht_key, k.dht_key_len, rec.b, rec.n, NOW_MS, &e);
        dc_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == DC_ENOMEM);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(e.sequence, 3);
    rc = DC_ENOMEM;
    for (long n = 0; rc == DC_ENOMEM; n++) {
        assert_true(n < 64);
        dc_alloc_fail_after(n);
        rc = dc_ipns_parse(rec.b, rec.n, &e);
        dc_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == DC_ENOMEM);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(e.eol_ms, EOL_2030);
}

static void test_time(void **state)
{
    uint64_t ms;

#define T(s) dc_ipns_parse_time((const uint8_t *)(s), strlen(s), &ms)
    (void)state;
    assert_int_equal(T("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(T("2030-01-01T00:00:00.000000000Z"), 0);
    assert_int_equal(ms, EOL_2030);
    assert_int_equal(T("2000-02-29T12:34:56.789999999z"), 0);
    assert_int_equal(ms, 951827696789ull);
    assert_int_equal(T("2000-02-29t12:34:56.7-02:30"), 0);
    assert_int_equal(ms, 951827696700ull + 9000000ull);
    assert_int_equal(T("1999-02-29T00:00:00Z"), DC_ECORRUPT);
    assert_int_equal(T("1969-12-31T23:59:59Z"), DC_ECORRUPT);
    assert_int_equal(T("1970-01-01T00:00:00+01:00"), DC_ECORRUPT); /* before the epoch */
    assert_int_equal(T("2030-01-01T00:00:00"), DC_ECORRUPT);
    assert_int_equal(T("2030-01-01T00:00:00.Z"), DC_ECORRUPT);
    assert_int_equal(T("2030-01-01T24:00:00Z"), DC_ECORRUPT);
    assert_int_equal(T("2030-01-01T00:00:00Zjunk"), DC_ECORRUPT);
    assert_int_equal(T("2030-01-01 00:00:00Z"), DC_ECORRUPT);
    assert_int_equal(T(""), DC_ECORRUPT);
#undef T
}

static void test_selection(void **state)
{
    struct key k, other;
    struct out a, b, c;
    struct dc_kad_validator v;
    struct dc_kad_config cfg;
    struct dc_kad *kad;
    const uint8_t *got;
    size_t got_len;

    (void)state;
    key_make(1, &k);
    key_make(2, &other);
    dc_ipns_validator(&v);
    build(&k, &(struct spec){.seq = 5}, &a);
    build(&k, &(struct spec){.seq = 6}, &b);
    build(&k, &(struct spec){.seq = 6, .validity = "2031-01-01T00:00:00Z"}, &c);
    {
        const uint8_t *vals[3] = {a.b, b.b, c.b};
        size_t lens[3] = {a.n, b.n, c.n};

        assert_int_equal(v.select(NULL, k.dht_key, k.dht_key_len, vals, lens, 3), 2);
        assert_int_equal(v.select(NULL, k.dht_key, k.dht_key_len, vals, lens, 2), 1);
        vals[1] = c.b, lens[1] = c.n;
        vals[2] = b.b, lens[2] = b.n;
        assert_int_equal(v.select(NULL, k.dht_key, k.dht_key_len, vals, lens, 3), 1);
        /* Equal records: the first. */
        vals[0] = a.b, lens[0] = a.n;
        vals[1] = a.b, lens[1] = a.n;
        assert_int_equal(v.select(NULL, k.dht_key, k.dht_key_len, vals, lens, 2), 0);
    }
    /* Through a store: a lower sequence does not replace a higher one. */
    dc_kad_config_default(&cfg, &other.id);
    assert_int_equal(dc_kad_new(&cfg, &kad), 0);
    assert_int_equal(dc_kad_put_local(kad, k.dht_key, k.dht_key_len, b.b, b.n, NOW_MS), 0);
    assert_int_equal(dc_kad_put_local(kad, k.dht_key, k.dht_key_len, a.b, a.n, NOW_MS), DC_EEXIST);
    assert_int_equal(dc_kad_put_local(kad, k.dht_key, k.dht_key_len, c.b, c.n, NOW_MS), 0);
    assert_int_equal(dc_kad_get_local(kad, k.dht_key, k.dht_key_len, NOW_MS, &got, &got_len), 0);
    assert_int_equal(got_len, c.n);
    assert_memory_equal(got, c.b, c.n);
    dc_kad_free(kad);
}

/* The text names the CLI takes become the binary keys the DHT stores. */
static void test_key_from_text(void **state)
{
    uint8_t out[DC_KAD_MAX_KEY];
    char text[256], peer[DC_PEER_ID_STR_MAX];
    struct key k;
    size_t len;

    (void)state;
    key_make(3, &k);
    assert_true(dc_peer_id_to_string(&k.id, peer, sizeof(peer)) > 0);
    snprintf(text, sizeof(text), "/ipns/%s", peer);
    assert_int_equal(dc_dht_record_key_from_text(text, out, &len), 0);
    assert_int_equal(len, k.dht_key_len);
    assert_memory_equal(out, k.dht_key, len);
    snprintf(text, sizeof(text), "/pk/%s", peer);
    assert_int_equal(dc_dht_record_key_from_text(text, out, &len), 0);
    assert_int_equal(len, 4 + k.id.len);
    assert_memory_equal(out + 4, k.id.bytes, k.id.len);
    assert_int_equal(dc_dht_record_key_from_text("/ipns/nope", out, &len), DC_EINVAL);
    assert_int_equal(dc_dht_record_key_from_text("/democritus/a/b", out, &len), 0);
    assert_int_equal(len, 15);
    assert_memory_equal(out, "/democritus/a/b", 15);
    assert_int_equal(dc_dht_record_key_from_text("", out, &len), DC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),          cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_key_mismatch),   cmocka_unit_test(test_expired),
        cmocka_unit_test(test_v1_v2_mismatch), cmocka_unit_test(test_unsupported_keys),
        cmocka_unit_test(test_cbor_shape),     cmocka_unit_test(test_truncated_garbage),
        cmocka_unit_test(test_alloc_failures), cmocka_unit_test(test_time),
        cmocka_unit_test(test_selection),      cmocka_unit_test(test_key_from_text),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}

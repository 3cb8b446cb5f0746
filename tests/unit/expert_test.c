/* SPDX-License-Identifier: MIT */
/*
 * expert_test.c - capability records (swarm/route.h part 3): dc_expert_embed, dc_expert_key,
 * dc_expert_sign and dc_expert_open. Covers the round trip of every field, keys of another
 * peer or outside the expert prefix, expiry, each field rule on the signing side, hostile
 * bodies on the opening side (built with protobuf-c directly and signed with a real identity,
 * so only the body rule can fail), every truncation and every single-byte flip of a valid
 * value, records of another embedder, allocation failures, and the DHT's /democritus/
 * validator accepting the value end to end.
 *
 * With DC_EXPERT_SEED_DIR set, the test also writes seed inputs for tests/fuzz/expert_fuzz.c
 * there (the harness's input format is described in that file).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "capability.pb-c.h"
#include "crypto/crypto.h"
#include "p2p/kad.h"
#include "p2p/record.h"
#include "swarm/route.h"

#define NOW    1700000000000ull
#define EXPIRY (NOW + 3600000ull)

typedef Democritus__Swarm__Capability capability_pb;

static struct dc_identity *alice, *bob;

static int setup(void **state)
{
    (void)state;
    if (dc_crypto_init() < 0 || dc_identity_generate(&alice) < 0 || dc_identity_generate(&bob) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dc_identity_free(alice);
    dc_identity_free(bob);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static void expert_key(const struct dc_identity *id, uint8_t key[DC_KAD_MAX_KEY], size_t *len)
{
    assert_int_equal(dc_expert_key(dc_identity_peer_id(id), key, len), 0);
}

/* A valid expert of our embedder with every field set. */
static void sample(struct dc_expert *x)
{
    memset(x, 0, sizeof(*x));
    strcpy(x->description, "Writes and reviews C code: memory safety, protocol parsers and "
                           "fuzzing. Répond aussi en français, 日本語も.");
    assert_int_equal(dc_expert_embed(x), 0);
    strcpy(x->model, "qwen2.5-coder-7b-instruct-q4_k_m \xf0\x9f\xa6\x99"); /* U+1F999 */
    for (size_t i = 0; i < sizeof(x->model_sha256); i++)
        x->model_sha256[i] = (uint8_t)(0xa0u + i);
    x->has_model_sha256 = true;
    x->n_ctx = 8192;
    x->slots = 4;
    x->active = 1;
    x->queued = 2;
    x->price = 0.25;
    strcpy(x->tags[0], "code");
    strcpy(x->tags[1], "review");
    x->n_tags = 2;
}

static void assert_same_fields(const struct dc_expert *a, const struct dc_expert *b)
{
    assert_string_equal(a->description, b->description);
    assert_string_equal(a->embedder, b->embedder);
    assert_memory_equal(a->embedding, b->embedding, DC_EMBED_DIM);
    assert_true(a->lsh == b->lsh);
    assert_string_equal(a->model, b->model);
    assert_int_equal(a->has_model_sha256, b->has_model_sha256);
    assert_memory_equal(a->model_sha256, b->model_sha256, sizeof(a->model_sha256));
    assert_int_equal(a->n_ctx, b->n_ctx);
    assert_int_equal(a->slots, b->slots);
    assert_int_equal(a->active, b->active);
    assert_int_equal(a->queued, b->queued);
    assert_true(a->price == b->price);
    assert_int_equal(a->n_tags, b->n_tags);
    for (size_t i = 0; i < a->n_tags; i++)
        assert_string_equal(a->tags[i], b->tags[i]);
}

/* Signs body[0..len) as alice's expert record (bypassing dc_expert_sign's rules) and opens
 * it with dc_expert_open. */
static int open_raw_body(const uint8_t *body, size_t len, struct dc_expert *out)
{
    uint8_t key[DC_KAD_MAX_KEY];
    size_t key_len;
    struct dc_buf v;
    int rc;

    expert_key(alice, key, &key_len);
    dc_buf_init(&v, 0);
    assert_int_equal(dc_dht_record_sign(alice, key, key_len, 1, EXPIRY, body, len, &v), 0);
    rc = dc_expert_open(key, key_len, v.data, v.len, NOW, out);
    dc_buf_cleanup(&v);
    return rc;
}

/* Packs 'pb', optionally followed by extra[0..extra_len) (raw fields), and opens it as alice's
 * record. */
static int open_pb(const capability_pb *pb, const uint8_t *extra, size_t extra_len,
                   struct dc_expert *out)
{
    size_t len = democritus__swarm__capability__get_packed_size(pb);
    uint8_t *body = malloc(len + extra_len + 1);
    int rc;

    assert_non_null(body);
    democritus__swarm__capability__pack(pb, body);
    if (extra_len > 0)
        memcpy(body + len, extra, extra_len);
    rc = open_raw_body(body, len + extra_len, out);
    free(body);
    return rc;
}

/* Storage a hostile body's fields point into. */
struct body {
    capability_pb pb;
    struct dc_expert x;
    char *tags[DC_EXPERT_MAX_TAGS + 4];
    uint8_t embedding[4100];
    uint8_t sha[40];
    char text[2048];
};

/* A valid Capability equal to sample()'s, in b->pb. */
static void valid_body(struct body *b)
{
    static char extra_tag[] = "extra";

    memset(b, 0, sizeof(*b));
    sample(&b->x);
    democritus__swarm__capability__init(&b->pb);
    b->pb.description = b->x.description;
    b->pb.embedder = b->x.embedder;
    memcpy(b->embedding, b->x.embedding, DC_EMBED_DIM);
    b->pb.embedding.data = b->embedding;
    b->pb.embedding.len = DC_EMBED_DIM;
    b->pb.lsh = b->x.lsh;
    b->pb.model = b->x.model;
    memcpy(b->sha, b->x.model_sha256, 32);
    b->pb.model_sha256.data = b->sha;
    b->pb.model_sha256.len = 32;
    b->pb.n_ctx = b->x.n_ctx;
    b->pb.slots = b->x.slots;
    b->pb.active = b->x.active;
    b->pb.queued = b->x.queued;
    b->pb.price = b->x.price;
    for (size_t i = 0; i < DC_ARRAY_LEN(b->tags); i++)
        b->tags[i] = i < b->x.n_tags ? b->x.tags[i] : extra_tag;
    b->pb.tags = b->tags;
    b->pb.n_tags = b->x.n_tags;
}

/* b->text filled with n copies of c. */
static char *repeat(struct body *b, char c, size_t n)
{
    assert_true(n < sizeof(b->text));
    memset(b->text, c, n);
    b->text[n] = '\0';
    return b->text;
}

static void write_seed(const char *dir, const char *name, uint8_t first, const uint8_t *a,
                       size_t a_len, const uint8_t *c, size_t c_len)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(&first, 1, 1, f), 1);
    assert_int_equal(fwrite(a, 1, a_len, f), a_len);
    if (c_len > 0)
        assert_int_equal(fwrite(c, 1, c_len, f), c_len);
    assert_int_equal(fclose(f), 0);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_embed_and_key(void **state)
{
    uint8_t key[DC_KAD_MAX_KEY];
    char text[DC_PEER_ID_STR_MAX];
    struct dc_expert x;
    size_t len;

    (void)state;
    memset(&x, 0, sizeof(x));
    assert_int_equal(dc_expert_embed(&x), DC_EINVAL);
    strcpy(x.description, "...");
    assert_int_equal(dc_expert_embed(&x), DC_EINVAL);
    strcpy(x.description, "Translates legal contracts between German and English");
    assert_int_equal(dc_expert_embed(&x), 0);
    assert_string_equal(x.embedder, DC_EMBEDDER_ID);
    assert_true(x.lsh == dc_lsh_key_q(x.embedding));

    expert_key(alice, key, &len);
    assert_int_equal(dc_peer_id_to_string(dc_identity_peer_id(alice), text, sizeof(text)),
                     (int)strlen(text));
    assert_int_equal(len, strlen(DC_EXPERT_KEY_PREFIX) + strlen(text));
    assert_memory_equal(key, DC_EXPERT_KEY_PREFIX, strlen(DC_EXPERT_KEY_PREFIX));
    assert_memory_equal(key + strlen(DC_EXPERT_KEY_PREFIX), text, strlen(text));
    assert_int_equal(dc_dht_record_key_check(key, len, dc_identity_peer_id(alice)), 0);
}

static void test_roundtrip(void **state)
{
    uint8_t key[DC_KAD_MAX_KEY];
    struct dc_expert x, got;
    struct dc_buf v;
    size_t key_len;
    const char *seeds = getenv("DC_EXPERT_SEED_DIR");

    (void)state;
    sample(&x);
    expert_key(alice, key, &key_len);
    dc_buf_init(&v, 0);
    assert_int_equal(dc_expert_sign(alice, &x, 7, EXPIRY, &v), 0);
    assert_int_equal(dc_expert_open(key, key_len, v.data, v.len, NOW, &got), 0);
    assert_same_fields(&x, &got);
    assert_true(dc_peer_id_equal(&got.peer, dc_identity_peer_id(alice)));
    assert_true(got.seq == 7);
    assert_true(got.expires_ms == EXPIRY);

    /* Optional fields at their defaults: no model, no hash, no tags, free, n_ctx 0. */
    x.model[0] = '\0';
    x.has_model_sha256 = false;
    memset(x.model_sha256, 0, sizeof(x.model_sha256));
    x.n_tags = 0;
    x.price = 0.0;
    x.n_ctx = x.active = x.queued = 0;
    x.slots = 1;
    dc_buf_reset(&v);
    assert_int_equal(dc_expert_sign(alice, &x, 0, EXPIRY, &v), 0);
    assert_int_equal(dc_expert_open(key, key_len, v.data, v.len, NOW, &got), 0);
    assert_same_fields(&x, &got);
    assert_true(got.seq == 0);

    /* The limits themselves are accepted. */
    sample(&x);
    memset(x.description, 'a', DC_EXPERT_MAX_DESC);
    x.description[DC_EXPERT_MAX_DESC] = '\0';
    assert_int_equal(dc_expert_embed(&x), 0);
    memset(x.model, 'm', DC_EXPERT_MAX_MODEL);
    x.model[DC_EXPERT_MAX_MODEL] = '\0';
    for (size_t i = 0; i < DC_EXPERT_MAX_TAGS; i++) {
        memset(x.tags[i], (char)('a' + i), DC_EXPERT_MAX_TAG);
        x.tags[i][DC_EXPERT_MAX_TAG] = '\0';
    }
    x.n_tags = DC_EXPERT_MAX_TAGS;
    x.price = 1e300;
    x.n_ctx = x.slots = x.active = x.queued = UINT32_MAX;
    dc_buf_reset(&v);
    assert_int_equal(dc_expert_sign(alice, &x, UINT64_MAX, EXPIRY, &v), 0);
    assert_int_equal(dc_expert_open(key, key_len, v.data, v.len, NOW, &got), 0);
    assert_same_fields(&x, &got);
    assert_true(got.seq == UINT64_MAX);

    if (seeds != NULL) {
        sample(&x);
        dc_buf_reset(&v);
        assert_int_equal(dc_expert_sign(alice, &x, 7, EXPIRY, &v), 0);
        write_seed(seeds, "record", (uint8_t)key_len, key, key_len, v.data, v.len);
    }
    dc_buf_cleanup(&v);
}

static void test_key_of_another_peer(void **state)
{
    uint8_t key[DC_KAD_MAX_KEY];
    struct dc_expert x, got;
    struct dc_buf v;
    size_t key_len;

    (void)state;
    sample(&x);
    dc_buf_init(&v, 0);
    assert_int_equal(dc_expert_sign(alice, &x, 1, EXPIRY, &v), 0);
    /* Alice's envelope stored under Bob's expert key. */
    expert_key(bob, key, &key_len);
    assert_int_equal(dc_expert_open(key, key_len, v.data, v.len, NOW, &got), DC_EPERM);
    assert_int_equal(got.description[0], '\0');
    dc_buf_cleanup(&v);
}

static void test_key_outside_prefix(void **state)
{
    char text[DC_PEER_ID_STR_MAX], key[DC_KAD_MAX_KEY];
    uint8_t body[4];
    struct dc_expert x, got;
    struct dc_buf v;
    int n;

    (void)state;
    sample(&x);
    assert_true(dc_peer_id_to_string(dc_identity_peer_id(alice), text, sizeof(text)) > 0);
    dc_buf_init(&v, 0);
    /* A valid signed record of another kind, with a valid Capability body. */
    n = snprintf(key, sizeof(key), "/democritus/profile/%s", text);
    assert_int_equal(dc_expert_sign(alice, &x, 1, EXPIRY, &v), 0);
    {
        struct dc_dht_record r;
        uint8_t ek[DC_KAD_MAX_KEY];
        size_t ek_len;
        struct dc_buf w;

        expert_key(alice, ek, &ek_len);
        assert_int_equal(dc_dht_record_open(ek, ek_len, v.data, v.len, NOW, &r), 0);
        dc_buf_init(&w, 0);
        assert_int_equal(dc_dht_record_sign(alice, (const uint8_t *)key, (size_t)n, 1, EXPIRY,
                                            r.body, r.body_len, &w),
                         0);
        assert_int_equal(dc_expert_open((const uint8_t *)key, (size_t)n, w.data, w.len, NOW, &got),
                         DC_EPERM);
        /* Under the prefix but with an extra component: not an expert key either. */
        n = snprintf(key, sizeof(key), "%sextra/%s", DC_EXPERT_KEY_PREFIX, text);
        dc_buf_reset(&w);
        assert_int_equal(dc_dht_record_sign(alice, (const uint8_t *)key, (size_t)n, 1, EXPIRY,
                                            r.body, r.body_len, &w),
                         0);
        assert_int_equal(dc_expert_open((const uint8_t *)key, (size_t)n, w.data, w.len, NOW, &got),
                         DC_EPERM);
        dc_buf_cleanup(&w);
    }
    /* Keys that are not even records. */
    assert_int_equal(dc_expert_open((const uint8_t *)"", 0, v.data, v.len, NOW, &got), DC_EPERM);
    assert_int_equal(
        dc_expert_open((const uint8_t *)"/democritus/expert", 18, v.data, v.len, NOW, &got),
        DC_EPERM);
    memset(body, 0, sizeof(body));
    assert_int_equal(dc_expert_open((const uint8_t *)"/ipns/x", 7, body, 0, NOW, &got), DC_EPERM);
    /* The bare prefix: under it, but no PeerId. */
    assert_true(dc_expert_open((const uint8_t *)DC_EXPERT_KEY_PREFIX, strlen(DC_EXPERT_KEY_PREFIX),
                               v.data, v.len, NOW, &got) < 0);
    dc_buf_cleanup(&v);
}

static void test_expired(void **state)
{
    uint8_t key[DC_KAD_MAX_KEY];
    struct dc_expert x, got;
    struct dc_buf v;
    size_t key_len;

    (void)state;
    sample(&x);
    expert_key(alice, key, &key_len);
    dc_buf_init(&v, 0);
    assert_int_equal(dc_expert_sign(alice, &x, 1, EXPIRY, &v), 0);
    assert_int_equal(dc_expert_open(key, key_len, v.data, v.len, EXPIRY - 1, &got), 0);
    assert_int_equal(dc_expert_open(key, key_len, v.data, v.len, EXPIRY, &got), DC_ETIMEDOUT);
    assert_int_equal(dc_expert_open(key, key_len, v.data, v.len, UINT64_MAX, &got), DC_ETIMEDOUT);
    /* The envelope's own rule: expires_ms 0 is refused when signing. */
    assert_int_equal(dc_expert_sign(alice, &x, 1, 0, &v), DC_EINVAL);
    dc_buf_cleanup(&v);
}

/* dc_expert_sign refuses sample() changed by the statements with DC_EINVAL, leaving 'v'
 * empty. */
#define SIGN_REFUSES(...)                                                                          \
    do {                                                                                           \
        struct dc_expert x;                                                                        \
        sample(&x);                                                                                \
        __VA_ARGS__;                                                                               \
        assert_int_equal(dc_expert_sign(alice, &x, 1, EXPIRY, &v), DC_EINVAL);                     \
        assert_int_equal(v.len, 0);                                                                \
    } while (0)

static void test_sign_rules(void **state)
{
    struct dc_buf v;

    (void)state;
    dc_buf_init(&v, 0);
    /* description: non-empty, <= 1024 bytes (an unterminated array is over), UTF-8 */
    SIGN_REFUSES(x.description[0] = '\0');
    SIGN_REFUSES(memset(x.description, 'a', sizeof(x.description)));
    SIGN_REFUSES(strcpy(x.description, "bad \xc3\x28 byte"));
    SIGN_REFUSES(strcpy(x.description, "overlong \xc0\xaf"));
    SIGN_REFUSES(strcpy(x.description, "surrogate \xed\xa0\x80"));
    SIGN_REFUSES(strcpy(x.description, "past U+10FFFF \xf4\x90\x80\x80"));
    SIGN_REFUSES(strcpy(x.description, "cut \xe2\x82"));
    SIGN_REFUSES(strcpy(x.description, "stray \x80"));
    /* model: <= 128 bytes, UTF-8 */
    SIGN_REFUSES(memset(x.model, 'm', sizeof(x.model)));
    SIGN_REFUSES(strcpy(x.model, "m\xff"));
    /* embedder: 1..31 bytes of printable ASCII */
    SIGN_REFUSES(x.embedder[0] = '\0');
    SIGN_REFUSES(memset(x.embedder, 'e', sizeof(x.embedder)));
    SIGN_REFUSES(strcpy(x.embedder, "tab\tbed"));
    SIGN_REFUSES(strcpy(x.embedder, "caf\xc3\xa9"));
    /* our embedder: lsh must match the embedding */
    SIGN_REFUSES(x.lsh ^= 1);
    SIGN_REFUSES(x.embedding[5] = (int8_t)(x.embedding[5] == 127 ? -127 : 127),
                 x.embedding[6] = (int8_t)-x.embedding[6], x.embedding[7] = 100,
                 x.embedding[100] = -100, x.embedding[200] = 90, x.embedding[300] = -90,
                 memset(x.embedding + 10, 127, 40));
    /* tags: at most 16, each 1..32 bytes of printable ASCII */
    SIGN_REFUSES(x.n_tags = DC_EXPERT_MAX_TAGS + 1);
    SIGN_REFUSES(x.n_tags = SIZE_MAX);
    SIGN_REFUSES(x.tags[1][0] = '\0');
    SIGN_REFUSES(memset(x.tags[0], 't', sizeof(x.tags[0])));
    SIGN_REFUSES(strcpy(x.tags[1], "new\nline"));
    SIGN_REFUSES(strcpy(x.tags[1], "\xe6\x97\xa5"));
    /* price: finite, >= 0 */
    SIGN_REFUSES(x.price = -0.01);
    SIGN_REFUSES(x.price = NAN);
    SIGN_REFUSES(x.price = INFINITY);
    SIGN_REFUSES(x.price = -INFINITY);
    /* slots >= 1 */
    SIGN_REFUSES(x.slots = 0);
    dc_buf_cleanup(&v);
}

/* A hostile body: valid_body() changed by the statements, then opened: DC_ECORRUPT. */
#define BODY_REFUSED(...)                                                                          \
    do {                                                                                           \
        valid_body(&b);                                                                            \
        __VA_ARGS__;                                                                               \
        assert_int_equal(open_pb(&b.pb, NULL, 0, &got), DC_ECORRUPT);                              \
        assert_int_equal(got.description[0], '\0');                                                \
    } while (0)

static void test_hostile_bodies(void **state)
{
    static const uint8_t desc_nul[] = {0x0a, 3, 'a', 0, 'b'}; /* description = "a\0b" */
    static const uint8_t tag_nul[] = {0x62, 3, 'a', 0, 'b'};  /* tags += "a\0b" */
    static const uint8_t junk[] = {0xff, 0xff, 0xff};
    const char *seeds = getenv("DC_EXPERT_SEED_DIR");
    static struct body b;
    struct dc_expert got;

    (void)state;
    /* The control: the unchanged body opens and equals sample(). */
    valid_body(&b);
    assert_int_equal(open_pb(&b.pb, NULL, 0, &got), 0);
    assert_same_fields(&b.x, &got);
    if (seeds != NULL) {
        /* The fuzzer's body-mode seed: this valid Capability. */
        uint8_t buf[4096];
        size_t len = democritus__swarm__capability__get_packed_size(&b.pb);

        assert_true(len <= sizeof(buf));
        democritus__swarm__capability__pack(&b.pb, buf);
        write_seed(seeds, "body", 0xff, buf, len, NULL, 0);
    }

    BODY_REFUSED(b.pb.embedding.len = DC_EMBED_DIM - 1);
    BODY_REFUSED(b.pb.embedding.len = DC_EMBED_DIM + 1);
    BODY_REFUSED(b.pb.embedding.len = 0);
    BODY_REFUSED(b.pb.lsh ^= 1u << 20);
    BODY_REFUSED(b.pb.lsh = 0);
    BODY_REFUSED(b.pb.description = "invalid \xc3\x28 UTF-8");
    BODY_REFUSED(b.pb.description = "surrogate \xed\xbf\xbf");
    BODY_REFUSED(b.pb.description = "");
    BODY_REFUSED(b.pb.description = repeat(&b, 'd', DC_EXPERT_MAX_DESC + 1));
    BODY_REFUSED(b.pb.model = "model \xfe");
    BODY_REFUSED(b.pb.model = repeat(&b, 'm', DC_EXPERT_MAX_MODEL + 1));
    BODY_REFUSED(b.pb.embedder = "");
    BODY_REFUSED(b.pb.embedder = repeat(&b, 'e', 32));
    BODY_REFUSED(b.pb.embedder = "dc-hash-384/1\x7f");
    BODY_REFUSED(b.pb.n_tags = DC_EXPERT_MAX_TAGS + 1);
    BODY_REFUSED(b.tags[0] = "");
    BODY_REFUSED(b.tags[1] = repeat(&b, 't', DC_EXPERT_MAX_TAG + 1));
    BODY_REFUSED(b.tags[1] = "t\x01");
    BODY_REFUSED(b.pb.price = -1.0);
    BODY_REFUSED(b.pb.price = NAN);
    BODY_REFUSED(b.pb.price = -NAN);
    BODY_REFUSED(b.pb.price = INFINITY);
    BODY_REFUSED(b.pb.model_sha256.len = 31);
    BODY_REFUSED(b.pb.model_sha256.len = 33);
    BODY_REFUSED(b.pb.model_sha256.len = 1);
    /* Another embedder may send up to 4096 bytes of vector, no more. */
    BODY_REFUSED(b.pb.embedder = "bert-768/1", b.pb.embedding.len = 4097);

    /* A NUL inside a string (protobuf-c would cut "a\0b" to "a"); the later field wins. */
    valid_body(&b);
    assert_int_equal(open_pb(&b.pb, desc_nul, sizeof(desc_nul), &got), DC_ECORRUPT);
    assert_int_equal(open_pb(&b.pb, tag_nul, sizeof(tag_nul), &got), DC_ECORRUPT);
    assert_int_equal(open_pb(&b.pb, desc_nul, 2, &got), DC_ECORRUPT); /* cut short */
    /* Not a protobuf at all, and an empty body (no description). */
    assert_int_equal(open_raw_body(junk, sizeof(junk), &got), DC_ECORRUPT);
    assert_int_equal(open_raw_body(junk, 0, &got), DC_ECORRUPT);

    /* Accepted oddities: slots 0 is read as 1; unknown fields are skipped. */
    valid_body(&b);
    b.pb.slots = 0;
    assert_int_equal(open_pb(&b.pb, NULL, 0, &got), 0);
    assert_int_equal(got.slots, 1);
    {
        static const uint8_t unknown[] = {0xa0, 0x06, 0x05, 0xaa, 0x06, 0x02, 'h', 'i'};

        valid_body(&b);
        assert_int_equal(open_pb(&b.pb, unknown, sizeof(unknown), &got), 0);
        assert_same_fields(&b.x, &got);
    }
}

/* A record of an embedder we do not know opens, with its embedding zeroed. */
static void test_other_embedder(void **state)
{
    static const int8_t zero[DC_EMBED_DIM];
    static struct body b;
    uint8_t key[DC_KAD_MAX_KEY];
    struct dc_expert x, got;
    struct dc_buf v;
    size_t key_len;

    (void)state;
    sample(&x);
    strcpy(x.embedder, "bert-768/1");
    x.lsh = 0x0123456789abcdefull; /* not ours to check */
    expert_key(alice, key, &key_len);
    dc_buf_init(&v, 0);
    assert_int_equal(dc_expert_sign(alice, &x, 3, EXPIRY, &v), 0);
    assert_int_equal(dc_expert_open(key, key_len, v.data, v.len, NOW, &got), 0);
    assert_string_equal(got.embedder, "bert-768/1");
    assert_memory_equal(got.embedding, zero, DC_EMBED_DIM);
    assert_true(got.lsh == x.lsh);
    memset(x.embedding, 0, sizeof(x.embedding));
    assert_same_fields(&x, &got);
    dc_buf_cleanup(&v);

    /* On the wire with its own 768-byte and 4096-byte vectors, and with none. */
    for (size_t len = 0; len <= 4096; len += len == 0 ? 768 : 4096 - 768) {
        valid_body(&b);
        b.pb.embedder = "bert-768/1";
        memset(b.embedding, 0x55, sizeof(b.embedding));
        b.pb.embedding.len = len;
        assert_int_equal(open_pb(&b.pb, NULL, 0, &got), 0);
        assert_string_equal(got.embedder, "bert-768/1");
        assert_memory_equal(got.embedding, zero, DC_EMBED_DIM);
        assert_string_equal(got.description, b.x.description);
    }
}

/* Every prefix of a valid value is refused, cleanly. */
static void test_truncations(void **state)
{
    uint8_t key[DC_KAD_MAX_KEY];
    struct dc_expert x, got;
    struct dc_buf v;
    size_t key_len;

    (void)state;
    sample(&x);
    expert_key(alice, key, &key_len);
    dc_buf_init(&v, 0);
    assert_int_equal(dc_expert_sign(alice, &x, 1, EXPIRY, &v), 0);
    for (size_t n = 0; n < v.len; n++) {
        /* A copy of exactly n bytes, so ASan sees any read past the end. */
        uint8_t *p = malloc(n + 1);

        assert_non_null(p);
        memcpy(p, v.data, n);
        assert_true(dc_expert_open(key, key_len, n > 0 ? p : NULL, n, NOW, &got) < 0);
        free(p);
    }
    /* The key cut short, too. */
    for (size_t n = 0; n < key_len; n++)
        assert_true(dc_expert_open(key, n, v.data, v.len, NOW, &got) < 0);
    dc_buf_cleanup(&v);
}

/* Every single-byte change of a valid value is refused; any that is accepted (a byte the
 * signature does not cover) is reported and fails the test. */
static void test_byte_flips(void **state)
{
    static const uint8_t masks[] = {0x01, 0x80, 0xff, 0x20};
    uint8_t key[DC_KAD_MAX_KEY];
    struct dc_expert x, got;
    struct dc_buf v;
    size_t key_len, accepted = 0;

    (void)state;
    sample(&x);
    expert_key(alice, key, &key_len);
    dc_buf_init(&v, 0);
    assert_int_equal(dc_expert_sign(alice, &x, 1, EXPIRY, &v), 0);
    for (size_t i = 0; i < v.len; i++) {
        for (size_t m = 0; m < DC_ARRAY_LEN(masks); m++) {
            int rc;

            v.data[i] ^= masks[m];
            rc = dc_expert_open(key, key_len, v.data, v.len, NOW, &got);
            v.data[i] ^= masks[m];
            assert_true(rc <= 0);
            if (rc == 0) {
                print_message("accepted: byte %zu of %zu ^ 0x%02x\n", i, v.len, masks[m]);
                accepted++;
            }
        }
    }
    assert_int_equal(accepted, 0);
    dc_buf_cleanup(&v);
}

/* The DHT's /democritus/ validator accepts the value, through the kad core. */
static void test_dht_accepts(void **state)
{
    struct dc_kad_validator validator;
    uint8_t key[DC_KAD_MAX_KEY];
    struct dc_kad_config cfg;
    struct dc_expert x;
    struct dc_kad *kad;
    struct dc_buf v;
    size_t key_len;

    (void)state;
    sample(&x);
    expert_key(alice, key, &key_len);
    dc_buf_init(&v, 0);
    assert_int_equal(dc_expert_sign(alice, &x, 1, EXPIRY, &v), 0);
    assert_true(v.len <= DC_KAD_MAX_VALUE);
    dc_dht_record_validator(&validator);
    assert_int_equal(validator.validate(NULL, key, key_len, v.data, v.len, NOW), 0);
    dc_kad_config_default(&cfg, dc_identity_peer_id(bob));
    assert_int_equal(dc_kad_new(&cfg, &kad), 0);
    assert_int_equal(dc_kad_set_validator(kad, "democritus", &validator), 0);
    assert_int_equal(dc_kad_validate(kad, key, key_len, v.data, v.len, NOW), 0);
    assert_int_equal(dc_kad_put_local(kad, key, key_len, v.data, v.len, NOW), 0);
    /* ...and refuses it past its expiry. */
    assert_int_equal(dc_kad_validate(kad, key, key_len, v.data, v.len, EXPIRY), DC_ETIMEDOUT);
    dc_kad_free(kad);
    dc_buf_cleanup(&v);
}

/* dc_expert_sign and dc_expert_open unwind with DC_ENOMEM at every allocation and leak
 * nothing. */
static void test_alloc_failures(void **state)
{
    uint8_t key[DC_KAD_MAX_KEY];
    struct dc_expert x, got;
    struct dc_buf v;
    size_t key_len;
    int rc = DC_ENOMEM;
    long n;

    (void)state;
    sample(&x);
    expert_key(alice, key, &key_len);
    dc_buf_init(&v, 0);
    for (n = 0; rc == DC_ENOMEM; n++) {
        assert_true(n < 64);
        dc_alloc_fail_after(n);
        rc = dc_expert_sign(alice, &x, 1, EXPIRY, &v);
        dc_alloc_fail_after(-1);
        if (rc == DC_ENOMEM)
            assert_int_equal(v.len, 0);
    }
    assert_int_equal(rc, 0);
    assert_true(n > 1);
    rc = DC_ENOMEM;
    for (n = 0; rc == DC_ENOMEM; n++) {
        assert_true(n < 256);
        dc_alloc_fail_after(n);
        rc = dc_expert_open(key, key_len, v.data, v.len, NOW, &got);
        dc_alloc_fail_after(-1);
    }
    assert_int_equal(rc, 0);
    assert_true(n > 1);
    assert_same_fields(&x, &got);
    dc_buf_cleanup(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_and_key),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_key_of_another_peer),
        cmocka_unit_test(test_key_outside_prefix),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_sign_rules),
        cmocka_unit_test(test_hostile_bodies),
        cmocka_unit_test(test_other_embedder),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_byte_flips),
        cmocka_unit_test(test_dht_accepts),
        cmocka_unit_test(test_alloc_failures),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

/* SPDX-License-Identifier: MIT */
/*
 * route_test.c - the pure parts of route.h: the hashed text embedding (golden values, unit
 * length, tokenization rules, UTF-8 handling, hostile input), its quantization and cosine, the
 * LSH key and its bands, and dc_expert_rank (ordering, ties, load and reputation, skipped
 * candidates, top-k selection against a brute-force sort). Capability records (expert.c) have
 * their own test.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "swarm/route.h"

/* Deterministic test randomness (splitmix64). */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t embed(const char *s, float v[DC_EMBED_DIM])
{
    return dc_embed_text(s, strlen(s), v);
}

static double norm2(const float v[DC_EMBED_DIM])
{
    double n = 0;

    for (size_t i = 0; i < DC_EMBED_DIM; i++)
        n += (double)v[i] * v[i];
    return n;
}

static bool is_zero(const float v[DC_EMBED_DIM])
{
    for (size_t i = 0; i < DC_EMBED_DIM; i++)
        if (v[i] != 0.0f)
            return false;
    return true;
}

static void assert_same_embedding(const char *a, const char *b)
{
    float va[DC_EMBED_DIM], vb[DC_EMBED_DIM];

    assert_int_equal(embed(a, va), embed(b, vb));
    assert_memory_equal(va, vb, sizeof(va));
}

static int agree_bits(uint64_t a, uint64_t b)
{
    return 64 - __builtin_popcountll(a ^ b);
}

/* ---- Embedding ---- */

/*
 * Golden values: computed once by this implementation (SipHash key, feature prefixes, stop
 * words, weights as of DC_EMBEDDER_ID "dc-hash-384/1") and frozen here. If this test fails,
 * the embedder's output changed: every node would then disagree with older ones, so the
 * change needs a new DC_EMBEDDER_ID and new golden values, not just new numbers here.
 */
static void test_embed_golden(void **state)
{
    static const char s[] = "The quick brown fox jumps over the lazy dog";
    static const struct {
        size_t bucket;
        float value;
    } golden[] = {
        {0, 0.238066882f},   {22, 0.139260203f},   {95, -0.314707279f}, {146, -0.238066882f},
        {257, 0.238066882f}, {305, -0.238066882f}, {374, 0.139260203f},
    };
    float v[DC_EMBED_DIM];
    int8_t q[DC_EMBED_DIM];
    size_t nonzero = 0;

    (void)state;
    /* 7 words (both "the" dropped), each 1 word feature + one trigram per character. */
    assert_int_equal(embed(s, v), 36);
    for (size_t i = 0; i < DC_ARRAY_LEN(golden); i++)
        assert_float_equal(v[golden[i].bucket], golden[i].value, 1e-6);
    assert_true(v[1] == 0.0f);
    for (size_t i = 0; i < DC_EMBED_DIM; i++)
        nonzero += v[i] != 0.0f;
    assert_int_equal(nonzero, 34);
    assert_true(dc_lsh_key(v) == 0x8bc7d4ef88addc19ull);
    dc_embed_quantize(v, q);
    assert_true(dc_lsh_key_q(q) == 0x8bc7d4ef88addc19ull);
    assert_int_equal(q[95], -127);
}

static void test_embed_unit_length(void **state)
{
    static const char *const texts[] = {
        "x",
        "hello world",
        "Write a Python function that parses JSON and returns a dict",
        "naïve café crème brûlée — 東京 の 天気",
        "1 2 3 4 5 6 7 8 9 10 11 12",
    };
    float v[DC_EMBED_DIM];

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(texts); i++) {
        assert_true(embed(texts[i], v) > 0);
        assert_float_equal(norm2(v), 1.0, 1e-5);
    }
}

static void test_embed_empty_and_stop_words(void **state)
{
    /* The whole stop list: also fails if the list in embed.c is not sorted (bsearch). */
    static const char all_stop[] =
        "a about after all also am an and any are as at be been being but by can could did do "
        "does for from had has have he her him his how i if in into is it its me my of on or "
        "our she should so some than that the their them then there these they this those to "
        "us was we were what when where which who whom why will with would you your";
    static const char *const texts[] = {
        "", " ", ",,, !!! ... ---", "the", "The OF and, TO.", all_stop, "\xff\xfe\xc0\xaf",
    };
    float v[DC_EMBED_DIM];

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(texts); i++) {
        memset(v, 0x7f, sizeof(v)); /* the output must be overwritten */
        assert_int_equal(embed(texts[i], v), 0);
        assert_true(is_zero(v));
    }
    memset(v, 0x7f, sizeof(v));
    assert_int_equal(dc_embed_text(NULL, 0, v), 0);
    assert_true(is_zero(v));
    /* Near misses of stop words are words. */
    assert_int_equal(embed("th", v), 1);
    assert_int_equal(embed("thee", v), 5);
    assert_int_equal(embed("shoulder", v), 9);
}

static void test_embed_case_folding(void **state)
{
    float a[DC_EMBED_DIM], b[DC_EMBED_DIM];

    (void)state;
    assert_same_embedding("Python", "python");
    assert_same_embedding("PYTHON JSON Parser", "python json parser");
    assert_same_embedding("THE Python", "python");
    /* Only ASCII is folded: other code points are kept as they are. */
    assert_int_equal(embed("\xc3\x89"
                           "clair",
                           a),
                     embed("\xc3\xa9"
                           "clair",
                           b));
    assert_memory_not_equal(a, b, sizeof(a));
}

static void test_embed_tokens(void **state)
{
    float v[DC_EMBED_DIM];

    (void)state;
    /* 1-2 characters: the word only; n >= 3 characters: the word and n trigrams. */
    assert_int_equal(embed("x", v), 1);
    assert_int_equal(embed("ab", v), 1);
    assert_int_equal(embed("abc", v), 4);
    assert_int_equal(embed("abcd", v), 5);
    assert_int_equal(embed("x y z", v), 3);
    /* Characters, not bytes: "héllo" is 5 characters in 6 bytes. */
    assert_int_equal(embed("h\xc3\xa9llo", v), 6);
    assert_int_equal(embed("\xe6\x9d\xb1\xe4\xba\xac", v), 1); /* 東京: 2 characters */
    /* Letters and digits make words; everything else ASCII separates. */
    assert_int_equal(embed("abc123", v), 7);
    assert_same_embedding("parse_json", "parse json");
    assert_same_embedding("parse-json!", "  parse\tjson\n");
    assert_same_embedding("a\xe2\x82\xac"
                          "b",
                          "a\xe2\x82\xac"
                          "b"); /* € is part of a word */
    assert_int_equal(embed("a\xe2\x82\xac"
                           "b",
                           v),
                     4);
    /* Word order does not matter (a bag of features); repetition does. */
    assert_same_embedding("json python", "python json");
    {
        float a[DC_EMBED_DIM], b[DC_EMBED_DIM];

        embed("python json", a);
        embed("python python json", b);
        assert_memory_not_equal(a, b, sizeof(a));
    }
}

static void test_embed_long_word_cut(void **state)
{
    char a100[101], a64[65], a63e[66], a63[64], e40[81], e32[65];

    (void)state;
    memset(a100, 'a', 100);
    a100[100] = '\0';
    memset(a64, 'a', 64);
    a64[64] = '\0';
    memset(a63, 'a', 63);
    a63[63] = '\0';
    /* 63 bytes + a 2-byte code point: the code point does not fit in 64 bytes. */
    memcpy(a63e, a63, 63);
    memcpy(a63e + 63, "\xc3\xa9", 3);
    for (size_t i = 0; i < 40; i++)
        memcpy(e40 + 2 * i, "\xc3\xa9", 2);
    e40[80] = '\0';
    memcpy(e32, e40, 64);
    e32[64] = '\0';

    assert_same_embedding(a100, a64);
    assert_same_embedding(a63e, a63);
    assert_same_embedding(e40, e32);
    {
        float v[DC_EMBED_DIM];

        assert_int_equal(embed(a100, v), 1 + 64);
        assert_int_equal(embed(e40, v), 1 + 32);
    }
}

static void test_embed_invalid_utf8(void **state)
{
    float v[DC_EMBED_DIM];

    (void)state;
    /* Each invalid byte is a separator, and only that byte is skipped. */
    assert_same_embedding("abc\xff"
                          "def",
                          "abc def");
    assert_same_embedding("abc\xc0\xaf"
                          "def",
                          "abc def"); /* overlong '/' */
    assert_same_embedding("abc\xed\xa0\x80"
                          "def",
                          "abc def"); /* surrogate U+D800 */
    assert_same_embedding("abc\xf4\x90\x80\x80"
                          "def",
                          "abc def"); /* past U+10FFFF */
    assert_same_embedding("abc\x80\x80"
                          "def",
                          "abc def"); /* stray continuations */
    assert_same_embedding("abc\xe2\x82"
                          "def",
                          "abc def"); /* truncated € */
    /* A truncated sequence at the very end: the decoder must stop at 'len'. */
    assert_same_embedding("abc\xe2\x82", "abc");
    assert_same_embedding("abc\xf0", "abc");
    /* Length is honoured: bytes after 'len' are not read as part of the text. */
    assert_int_equal(dc_embed_text("abcdef", 3, v), 4);
    assert_int_equal(dc_embed_text("\xe2\x82\xac", 2, v), 0);
}

static void test_embed_hostile_input(void **state)
{
    const size_t len = 1u << 20;
    char *buf = malloc(len);
    uint64_t seed = 42;
    float v[DC_EMBED_DIM];
    size_t n;

    (void)state;
    assert_non_null(buf);
    /* 1 MiB of random bytes, in an exactly sized heap block so ASan sees any overread. */
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = rng_next(&seed);

        memcpy(buf + i, &r, 8);
    }
    n = dc_embed_text(buf, len, v);
    assert_true(n > 0);
    assert_float_equal(norm2(v), 1.0, 1e-5);
    /* Ending in a truncated multi-byte sequence. */
    buf[len - 1] = (char)0xf0;
    (void)dc_embed_text(buf, len, v);
    /* One 1 MiB word: cut to its first 64 bytes. */
    memset(buf, 'a', len);
    assert_int_equal(dc_embed_text(buf, len, v), 1 + 64);
    /* 2^18 four-letter words: 5 features each, and the sums stay exact. */
    for (size_t i = 0; i < len; i += 4)
        memcpy(buf + i, i % 8 == 0 ? "abc " : "xyz ", 4);
    assert_int_equal(dc_embed_text(buf, len, v), (len / 4) * 4);
    assert_float_equal(norm2(v), 1.0, 1e-5);
    /* Only multi-byte characters (U+00E9), one 1 MiB word. */
    for (size_t i = 0; i < len; i += 2)
        memcpy(buf + i, "\xc3\xa9", 2);
    assert_int_equal(dc_embed_text(buf, len, v), 1 + 32);
    free(buf);
}

/* Four realistic expert descriptions and prompts that each belong to one of them. */
static const char *const descriptions[] = {
    "Python programming, code generation and debugging",
    "Poetry and creative writing: poems, sonnets, haiku, short stories and song lyrics",
    ("Mathematics: algebra, calculus, geometry and probability; solving an equation step by step, "
     "proofs of theorems"),
    "Medicine and health: symptoms, diseases, diagnosis, treatment and drug dosage",
};

static const struct {
    const char *prompt;
    size_t expected;
} routed[] = {
    {"write a python function to parse json", 0},
    {"fix the bug in my javascript code, it throws an exception", 0},
    {"a poem about the sea in the style of a sonnet", 1},
    {"write a short story about a dragon", 1},
    {"solve the quadratic equation x^2 - 5x + 6 = 0", 2},
    {"prove that the square root of two is irrational, a theorem proof", 2},
    {"what are the symptoms of diabetes and how is it treated", 3},
    {"what is the recommended dosage of ibuprofen for a headache", 3},
};

static void make_expert(struct dc_expert *x, const char *desc)
{
    float v[DC_EMBED_DIM];

    memset(x, 0, sizeof(*x));
    strcpy(x->description, desc);
    strcpy(x->embedder, DC_EMBEDDER_ID);
    assert_true(embed(desc, v) > 0);
    dc_embed_quantize(v, x->embedding);
    x->lsh = dc_lsh_key_q(x->embedding);
    x->slots = 4;
}

static void test_embed_similarity(void **state)
{
    int8_t d[DC_ARRAY_LEN(descriptions)][DC_EMBED_DIM];
    float v[DC_EMBED_DIM], related, unrelated;

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(descriptions); i++) {
        embed(descriptions[i], v);
        dc_embed_quantize(v, d[i]);
    }
    embed("write a python function to parse json", v);
    related = dc_embed_cosine(v, d[0]);
    embed("a poem about the sea in the style of a sonnet", v);
    unrelated = dc_embed_cosine(v, d[0]);
    assert_true(related > unrelated + 0.1f);

    for (size_t p = 0; p < DC_ARRAY_LEN(routed); p++) {
        size_t best = 0;
        float best_sim = -2;

        embed(routed[p].prompt, v);
        for (size_t i = 0; i < DC_ARRAY_LEN(descriptions); i++) {
            float c = dc_embed_cosine(v, d[i]);

            if (c > best_sim) {
                best_sim = c;
                best = i;
            }
        }
        if (best != routed[p].expected)
            fail_msg("\"%s\" went to description %zu, expected %zu", routed[p].prompt, best,
                     routed[p].expected);
    }
}

/* ---- Quantization and cosine ---- */

static void test_quantize(void **state)
{
    float in[DC_EMBED_DIM] = {0.5f, -1.0f, 0.25f, -0.25f, 0.001f};
    float v[DC_EMBED_DIM];
    int8_t q[DC_EMBED_DIM];

    (void)state;
    dc_embed_quantize(in, q);
    /* round(x * 127 / max|x|), halves away from zero: 63.5 -> 64, 31.75 -> 32. */
    assert_int_equal(q[0], 64);
    assert_int_equal(q[1], -127);
    assert_int_equal(q[2], 32);
    assert_int_equal(q[3], -32);
    assert_int_equal(q[4], 0);
    assert_int_equal(q[5], 0);

    memset(in, 0, sizeof(in));
    memset(q, 0x55, sizeof(q));
    dc_embed_quantize(in, q);
    for (size_t i = 0; i < DC_EMBED_DIM; i++)
        assert_int_equal(q[i], 0);

    for (size_t i = 0; i < DC_ARRAY_LEN(descriptions); i++) {
        int max = 0;

        embed(descriptions[i], v);
        dc_embed_quantize(v, q);
        assert_true(dc_embed_cosine(v, q) > 0.99f);
        for (size_t k = 0; k < DC_EMBED_DIM; k++) {
            max = abs(q[k]) > max ? abs(q[k]) : max;
            assert_true((v[k] > 0) == (q[k] > 0) || q[k] == 0);
        }
        assert_int_equal(max, 127);
    }
}

static void test_cosine(void **state)
{
    float v[DC_EMBED_DIM], neg[DC_EMBED_DIM], zero[DC_EMBED_DIM] = {0};
    int8_t q[DC_EMBED_DIM], qzero[DC_EMBED_DIM] = {0};

    (void)state;
    embed("cosine similarity of two vectors", v);
    dc_embed_quantize(v, q);
    for (size_t i = 0; i < DC_EMBED_DIM; i++)
        neg[i] = -v[i];
    assert_float_equal(dc_embed_cosine(v, q), 1.0, 0.01);
    assert_float_equal(dc_embed_cosine(neg, q), -1.0, 0.01);
    assert_true(dc_embed_cosine(v, q) <= 1.0f);
    assert_true(dc_embed_cosine(neg, q) >= -1.0f);
    assert_true(dc_embed_cosine(zero, q) == 0.0f);
    assert_true(dc_embed_cosine(v, qzero) == 0.0f);
    /* Scale-free: cosine of an exact integer vector with itself is 1. */
    for (size_t i = 0; i < DC_EMBED_DIM; i++)
        v[i] = (float)q[i] * 3.0f;
    assert_float_equal(dc_embed_cosine(v, q), 1.0, 1e-6);
}

/* ---- LSH ---- */

static const char *const vocabulary[] = {
    "model",  "network", "river",   "garden", "engine",  "silver", "winter", "market",
    "signal", "forest",  "python",  "kernel", "music",   "bridge", "doctor", "planet",
    "window", "harbor",  "letter",  "camera", "theory",  "butter", "castle", "rocket",
    "island", "pencil",  "library", "velvet", "thunder", "orange",
};

static void random_sentence(uint64_t *seed, char *out, size_t cap)
{
    size_t n = 8 + rng_next(seed) % 5;

    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strncat(out, vocabulary[rng_next(seed) % DC_ARRAY_LEN(vocabulary)], cap - strlen(out) - 1);
        strncat(out, " ", cap - strlen(out) - 1);
    }
}

static void test_lsh_identical_and_quantized(void **state)
{
    uint64_t seed = 7;
    char s[512];
    float v[DC_EMBED_DIM], w[DC_EMBED_DIM];
    int8_t q[DC_EMBED_DIM], zq[DC_EMBED_DIM] = {0};
    float zero[DC_EMBED_DIM] = {0};

    (void)state;
    for (int t = 0; t < 200; t++) {
        random_sentence(&seed, s, sizeof(s));
        embed(s, v);
        embed(s, w);
        assert_true(dc_lsh_key(v) == dc_lsh_key(w));
        /* The int8 key equals the float key of the dequantized vector (any power-of-two
         * scale keeps the double sums exact). */
        dc_embed_quantize(v, q);
        for (size_t i = 0; i < DC_EMBED_DIM; i++)
            w[i] = (float)q[i];
        assert_true(dc_lsh_key_q(q) == dc_lsh_key(w));
        for (size_t i = 0; i < DC_EMBED_DIM; i++)
            w[i] = (float)q[i] / 128.0f;
        assert_true(dc_lsh_key_q(q) == dc_lsh_key(w));
        /* ...and agrees with the unquantized key on nearly every bit. */
        assert_true(agree_bits(dc_lsh_key_q(q), dc_lsh_key(v)) >= 58);
    }
    /* A dot product of exactly 0 gives bit 1. */
    assert_true(dc_lsh_key(zero) == UINT64_MAX);
    assert_true(dc_lsh_key_q(zq) == UINT64_MAX);
}

static void test_lsh_locality(void **state)
{
    uint64_t seed = 1234;
    char s[512];
    float v[DC_EMBED_DIM];
    uint64_t prev = 0;
    double near = 0, far = 0;
    const int n = 300;

    (void)state;
    for (int t = 0; t < n; t++) {
        uint64_t k, k_near;

        random_sentence(&seed, s, sizeof(s));
        embed(s, v);
        k = dc_lsh_key(v);
        strcat(s, vocabulary[rng_next(&seed) % DC_ARRAY_LEN(vocabulary)]);
        embed(s, v);
        k_near = dc_lsh_key(v);
        near += agree_bits(k, k_near);
        if (t > 0)
            far += agree_bits(k, prev);
        prev = k;
    }
    near /= n;
    far /= n - 1;
    /* Measured: near ~58.5 of 64, unrelated ~36.5 (sentences share one small vocabulary). */
    assert_true(near >= 52.0);
    assert_true(far <= 42.0);
    assert_true(near - far >= 12.0);
}

static void test_lsh_bands(void **state)
{
    const uint64_t key = 0x8bc7d4ef88addc19ull;
    uint8_t out[64];
    size_t n;

    (void)state;
    assert_int_equal(dc_lsh_band(key, 0), 0x9);
    assert_int_equal(dc_lsh_band(key, 1), 0x1);
    assert_int_equal(dc_lsh_band(key, 15), 0x8);
    assert_int_equal(dc_lsh_band(key, 14), 0xb);

    n = dc_lsh_band_key(key, 0, out, sizeof(out));
    assert_int_equal(n, strlen("/democritus/lsh/1/0/9"));
    assert_memory_equal(out, "/democritus/lsh/1/0/9", n);
    n = dc_lsh_band_key(key, 14, out, sizeof(out));
    assert_int_equal(n, strlen("/democritus/lsh/1/14/b"));
    assert_memory_equal(out, "/democritus/lsh/1/14/b", n); /* lowercase hex */
    n = dc_lsh_band_key(UINT64_MAX, 15, out, sizeof(out));
    assert_memory_equal(out, "/democritus/lsh/1/15/f", n);
    n = dc_lsh_band_key(0, 10, out, sizeof(out));
    assert_memory_equal(out, "/democritus/lsh/1/10/0", n);

    /* Capacity: exactly the length fits (no NUL is written); one less writes nothing. */
    memset(out, 0xee, sizeof(out));
    assert_int_equal(dc_lsh_band_key(key, 14, out, 22), 22);
    assert_int_equal(out[22], 0xee);
    memset(out, 0xee, sizeof(out));
    assert_int_equal(dc_lsh_band_key(key, 14, out, 21), 0);
    assert_int_equal(out[0], 0xee);
    assert_int_equal(dc_lsh_band_key(key, 0, out, 0), 0);
    assert_int_equal(dc_lsh_band_key(key, DC_LSH_BANDS, out, sizeof(out)), 0);
    assert_int_equal(dc_lsh_band_key(key, UINT32_MAX, out, sizeof(out)), 0);
    /* Within the DHT's key limit. */
    assert_true(strlen("/democritus/lsh/1/15/f") <= DC_KAD_MAX_KEY);
}

/* ---- Ranking ---- */

static struct dc_expert *experts_new(size_t n)
{
    struct dc_expert *x = calloc(n, sizeof(*x));

    assert_non_null(x);
    return x;
}

static void test_rank_order(void **state)
{
    const size_t nd = DC_ARRAY_LEN(descriptions);
    struct dc_expert *x = experts_new(nd);
    const struct dc_expert *c[DC_ARRAY_LEN(descriptions)];
    struct dc_expert_rank r[DC_ARRAY_LEN(descriptions)];
    float q[DC_EMBED_DIM];
    size_t n;

    (void)state;
    for (size_t i = 0; i < nd; i++) {
        make_expert(&x[i], descriptions[i]);
        c[i] = &x[i];
    }
    for (size_t p = 0; p < DC_ARRAY_LEN(routed); p++) {
        embed(routed[p].prompt, q);
        n = dc_expert_rank(q, c, nd, NULL, r, nd);
        assert_true(n >= 1 && n <= nd);
        assert_int_equal(r[0].index, routed[p].expected);
        for (size_t i = 0; i < n; i++) {
            /* Idle experts with no reputation given: score == similarity. */
            assert_float_equal(r[i].similarity, dc_embed_cosine(q, x[r[i].index].embedding), 1e-7);
            assert_float_equal(r[i].score, r[i].similarity, 1e-7);
            assert_true(r[i].similarity > 0);
            if (i > 0)
                assert_true(r[i - 1].score >= r[i].score);
        }
    }
    free(x);
}

static void test_rank_ties(void **state)
{
    struct dc_expert *x = experts_new(4);
    const struct dc_expert *c[4];
    struct dc_expert_rank r[4];
    float q[DC_EMBED_DIM];
    const float zero_rep[4] = {0, 0, 0, 0};

    (void)state;
    /* Identical records: the lower index first, whatever the input order. */
    for (size_t i = 0; i < 4; i++) {
        make_expert(&x[i], descriptions[0]);
        c[i] = &x[i];
    }
    embed("write a python function", q);
    assert_int_equal(dc_expert_rank(q, c, 4, NULL, r, 4), 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(r[i].index, i);

    /* Equal scores (all 0: zero reputation keeps them) with different similarity: the higher
     * similarity first. */
    make_expert(&x[0], "python");
    make_expert(&x[1], "python programming code");
    make_expert(&x[2], "python programming");
    make_expert(&x[3], "python code generation debugging");
    embed("python programming code", q);
    assert_int_equal(dc_expert_rank(q, c, 4, zero_rep, r, 4), 4);
    assert_int_equal(r[0].index, 1);
    for (size_t i = 0; i < 4; i++)
        assert_true(r[i].score == 0.0f);
    for (size_t i = 1; i < 4; i++)
        assert_true(r[i - 1].similarity > r[i].similarity);
    free(x);
}

static void test_rank_load_and_reputation(void **state)
{
    struct dc_expert *x = experts_new(3);
    const struct dc_expert *c[3];
    struct dc_expert_rank r[3];
    float q[DC_EMBED_DIM], sim, rep[3];

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        make_expert(&x[i], descriptions[2]);
        c[i] = &x[i];
    }
    embed("solve an equation", q);
    sim = dc_embed_cosine(q, x[0].embedding);
    assert_true(sim > 0);

    /* (active + queued) / slots = 1: factor 1 / 2 / 2 + 0.5 = 0.75. */
    x[0].active = 2;
    x[0].queued = 2;
    x[0].slots = 4;
    /* slots 0 counts as 1: 1 busy gives 0.75 too; index 2 stays idle. */
    x[1].active = 1;
    x[1].slots = 0;
    assert_int_equal(dc_expert_rank(q, c, 3, NULL, r, 3), 3);
    assert_int_equal(r[0].index, 2);
    assert_float_equal(r[0].score, sim, 1e-6);
    assert_int_equal(r[1].index, 0);
    assert_float_equal(r[1].score, sim * 0.75f, 1e-6);
    assert_int_equal(r[2].index, 1);
    assert_float_equal(r[2].score, sim * 0.75f, 1e-6);

    /* Saturated beyond any count (no wrap-around of active + queued): still at least half. */
    x[0].active = UINT32_MAX;
    x[0].queued = UINT32_MAX;
    x[0].slots = 1;
    x[1].active = 0;
    x[1].slots = 1;
    assert_int_equal(dc_expert_rank(q, c, 3, NULL, r, 3), 3);
    assert_int_equal(r[2].index, 0);
    assert_true(r[2].score >= sim * 0.5f - 1e-6f);
    assert_true(r[2].score < sim * 0.51f);

    /* Reputation: clamped to [0, 1]; NaN counts as 0. */
    x[0].active = x[0].queued = 0;
    rep[0] = 2.0f;
    rep[1] = 0.5f;
    rep[2] = -1.0f;
    assert_int_equal(dc_expert_rank(q, c, 3, rep, r, 3), 3);
    assert_int_equal(r[0].index, 0);
    assert_float_equal(r[0].score, sim, 1e-6);
    assert_int_equal(r[1].index, 1);
    assert_float_equal(r[1].score, sim * 0.5f, 1e-6);
    assert_int_equal(r[2].index, 2);
    assert_true(r[2].score == 0.0f);
    rep[0] = NAN;
    assert_int_equal(dc_expert_rank(q, c, 3, rep, r, 3), 3);
    assert_int_equal(r[0].index, 1);
    assert_true(r[1].score == 0.0f && r[2].score == 0.0f);
    free(x);
}

static void test_rank_skipped(void **state)
{
    struct dc_expert *x = experts_new(6);
    const struct dc_expert *c[7];
    struct dc_expert_rank r[7];
    float q[DC_EMBED_DIM];

    (void)state;
    for (size_t i = 0; i < 6; i++) {
        make_expert(&x[i], descriptions[0]);
        c[i] = &x[i];
    }
    c[6] = NULL;
    strcpy(x[0].embedder, "bert-gguf/1");              /* another embedder */
    memset(x[1].embedder, 'x', sizeof(x[1].embedder)); /* not NUL-terminated */
    memset(x[2].embedding, 0, sizeof(x[2].embedding)); /* zero similarity */
    for (size_t k = 0; k < DC_EMBED_DIM; k++)          /* negative similarity */
        x[3].embedding[k] = (int8_t)-x[3].embedding[k];
    x[4].embedder[0] = '\0'; /* empty embedder */
    embed("python code generation", q);
    assert_int_equal(dc_expert_rank(q, c, 7, NULL, r, 7), 1);
    assert_int_equal(r[0].index, 5);
    /* Nothing left: 0. */
    c[5] = NULL;
    assert_int_equal(dc_expert_rank(q, c, 7, NULL, r, 7), 0);
    assert_int_equal(dc_expert_rank(q, c, 0, NULL, r, 7), 0);
    /* A zero query matches nothing. */
    c[5] = &x[5];
    memset(q, 0, sizeof(q));
    assert_int_equal(dc_expert_rank(q, c, 7, NULL, r, 7), 0);
    free(x);
}

/* The reference order: a full sort by the documented comparison. */
static int ref_cmp(const void *pa, const void *pb)
{
    const struct dc_expert_rank *a = pa, *b = pb;

    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->similarity != b->similarity)
        return a->similarity > b->similarity ? -1 : 1;
    return a->index < b->index ? -1 : (a->index > b->index);
}

static void test_rank_top_k(void **state)
{
    enum { N = 300 };
    struct dc_expert *x = experts_new(N);
    const struct dc_expert **c = calloc(N, sizeof(*c));
    struct dc_expert_rank *r = calloc(N + 1, sizeof(*r));
    struct dc_expert_rank *ref = calloc(N, sizeof(*ref));
    float *rep = calloc(N, sizeof(*rep));
    uint64_t seed = 99;
    char s[512];
    float q[DC_EMBED_DIM];
    size_t n_ref = 0;
    static const size_t maxes[] = {1, 2, 3, 10, 57, N - 1, N, N + 1};

    (void)state;
    assert_true(c != NULL && r != NULL && ref != NULL && rep != NULL);
    /* Many duplicates (same sentence, same load), so ties are exercised too. */
    for (size_t i = 0; i < N; i++) {
        if (i % 5 != 4)
            random_sentence(&seed, s, sizeof(s));
        make_expert(&x[i], s);
        x[i].active = (uint32_t)(rng_next(&seed) % 3);
        x[i].queued = (uint32_t)(rng_next(&seed) % 2);
        x[i].slots = (uint32_t)(rng_next(&seed) % 3);
        rep[i] = (i % 7 == 0) ? 1.0f : (float)(rng_next(&seed) % 5) / 4.0f;
        c[i] = (i % 11 == 3) ? NULL : &x[i];
    }
    random_sentence(&seed, s, sizeof(s));
    embed(s, q);
    n_ref = dc_expert_rank(q, c, N, rep, ref, N);
    assert_true(n_ref > 10);
    qsort(ref, n_ref, sizeof(*ref), ref_cmp); /* must already be in this order */
    {
        struct dc_expert_rank *again = calloc(N, sizeof(*again));

        assert_non_null(again);
        assert_int_equal(dc_expert_rank(q, c, N, rep, again, N), n_ref);
        assert_memory_equal(again, ref, n_ref * sizeof(*ref));
        free(again);
    }
    for (size_t m = 0; m < DC_ARRAY_LEN(maxes); m++) {
        size_t want = maxes[m] < n_ref ? maxes[m] : n_ref;

        memset(r, 0xee, (N + 1) * sizeof(*r));
        assert_int_equal(dc_expert_rank(q, c, N, rep, r, maxes[m]), want);
        assert_memory_equal(r, ref, want * sizeof(*r));
    }
    assert_int_equal(dc_expert_rank(q, c, N, rep, r, 0), 0);
    free(rep);
    free(ref);
    free(r);
    free(c);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_golden),
        cmocka_unit_test(test_embed_unit_length),
        cmocka_unit_test(test_embed_empty_and_stop_words),
        cmocka_unit_test(test_embed_case_folding),
        cmocka_unit_test(test_embed_tokens),
        cmocka_unit_test(test_embed_long_word_cut),
        cmocka_unit_test(test_embed_invalid_utf8),
        cmocka_unit_test(test_embed_hostile_input),
        cmocka_unit_test(test_embed_similarity),
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_lsh_identical_and_quantized),
        cmocka_unit_test(test_lsh_locality),
        cmocka_unit_test(test_lsh_bands),
        cmocka_unit_test(test_rank_order),
        cmocka_unit_test(test_rank_ties),
        cmocka_unit_test(test_rank_load_and_reputation),
        cmocka_unit_test(test_rank_skipped),
        cmocka_unit_test(test_rank_top_k),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

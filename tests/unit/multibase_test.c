/* SPDX-License-Identifier: MIT */
/*
 * multibase_test.c - base58btc, base32 and base16 against published vectors (RFC 4648 section
 * 10 and the multiformats/multibase test CSVs), round trips over many lengths and leading-zero
 * patterns, capacity limits at the exact boundary, and malformed text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "base/multibase.h"

struct vector {
    const char *raw;
    size_t raw_len;
    const char *text;
};

#define V(raw, text)                                                                               \
    {                                                                                              \
        raw, sizeof(raw) - 1, text                                                                 \
    }

/* RFC 4648 section 10, lower-cased and without padding. */
static const struct vector rfc4648_base32[] = {
    V("", ""),
    V("f", "my"),
    V("fo", "mzxq"),
    V("foo", "mzxw6"),
    V("foob", "mzxw6yq"),
    V("fooba", "mzxw6ytb"),
    V("foobar", "mzxw6ytboi"),
};

static const struct vector rfc4648_base16[] = {
    V("", ""),
    V("f", "66"),
    V("fo", "666f"),
    V("foo", "666f6f"),
    V("foob", "666f6f62"),
    V("fooba", "666f6f6261"),
    V("foobar", "666f6f626172"),
};

/* multiformats/multibase tests/{basic,leading_zero,two_leading_zeros,test1}.csv */
static const struct vector multibase_vectors[] = {
    V("yes mani !", "z7paNL19xttacUY"),
    V("yes mani !", "bpfsxgidnmfxgsibb"),
    V("yes mani !", "f796573206d616e692021"),
    V("\0yes mani !", "z17paNL19xttacUY"),
    V("\0yes mani !", "bab4wk4zanvqw42jaee"),
    V("\0yes mani !", "f00796573206d616e692021"),
    V("\0\0yes mani !", "z117paNL19xttacUY"),
    V("\0\0yes mani !", "baaahszltebwwc3tjeaqq"),
    V("\0\0yes mani !", "f0000796573206d616e692021"),
    V("Decentralize everything!!", "zUXE7GvtEk8XTXs1GF8HSGbVA9FCX9SEBPe"),
    V("Decentralize everything!!", "birswgzloorzgc3djpjssazlwmvzhs5dinfxgoijb"),
    V("Decentralize everything!!", "f446563656e7472616c697a652065766572797468696e672121"),
};

/* Well-known base58btc values: empty, zero runs, and a 4-byte value behind three zeros. */
static const struct vector base58_vectors[] = {
    V("", ""),
    V("\0", "1"),
    V("\0\0\0", "111"),
    V("\0\0\0\xff", "1115Q"),
    V("Hello World!", "2NEpo7TZRRrLZSi2U"),
    V("\x61", "2g"),
};

static void check_encode(int (*enc)(const uint8_t *, size_t, char *, size_t),
                         const struct vector *v)
{
    char out[128];
    size_t tlen = strlen(v->text);

    assert_int_equal(enc((const uint8_t *)v->raw, v->raw_len, out, sizeof(out)), (int)tlen);
    assert_string_equal(out, v->text);
    /* Exactly enough room (text + NUL) works; one byte less is DC_ELIMIT. */
    assert_int_equal(enc((const uint8_t *)v->raw, v->raw_len, out, tlen + 1), (int)tlen);
    assert_string_equal(out, v->text);
    assert_int_equal(enc((const uint8_t *)v->raw, v->raw_len, out, tlen), DC_ELIMIT);
}

static void check_decode(int (*dec)(const char *, size_t, uint8_t *, size_t),
                         const struct vector *v)
{
    uint8_t out[128];
    size_t tlen = strlen(v->text);

    assert_int_equal(dec(v->text, tlen, out, sizeof(out)), (int)v->raw_len);
    assert_memory_equal(out, v->raw, v->raw_len);
    assert_int_equal(dec(v->text, tlen, out, v->raw_len), (int)v->raw_len);
    assert_memory_equal(out, v->raw, v->raw_len);
    if (v->raw_len > 0)
        assert_int_equal(dec(v->text, tlen, out, v->raw_len - 1), DC_ELIMIT);
}

static void test_base32_rfc4648(void **state)
{
    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(rfc4648_base32); i++) {
        check_encode(dc_base32_encode, &rfc4648_base32[i]);
        check_decode(dc_base32_decode, &rfc4648_base32[i]);
    }
}

static void test_base16_rfc4648(void **state)
{
    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(rfc4648_base16); i++) {
        check_encode(dc_base16_encode, &rfc4648_base16[i]);
        check_decode(dc_base16_decode, &rfc4648_base16[i]);
    }
}

static void test_base58_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(base58_vectors); i++) {
        check_encode(dc_base58_encode, &base58_vectors[i]);
        check_decode(dc_base58_decode, &base58_vectors[i]);
    }
}

static void test_multibase_vectors(void **state)
{
    uint8_t raw[128];
    char text[128];

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(multibase_vectors); i++) {
        const struct vector *v = &multibase_vectors[i];
        size_t tlen = strlen(v->text);

        assert_int_equal(dc_multibase_decode(v->text, raw, sizeof(raw)), (int)v->raw_len);
        assert_memory_equal(raw, v->raw, v->raw_len);
        assert_int_equal(dc_multibase_encode(v->text[0], (const uint8_t *)v->raw, v->raw_len, text,
                                             sizeof(text)),
                         (int)tlen);
        assert_string_equal(text, v->text);
        assert_int_equal(
            dc_multibase_encode(v->text[0], (const uint8_t *)v->raw, v->raw_len, text, tlen),
            DC_ELIMIT);
        assert_string_equal(text, "");
    }
}

/* multiformats/multibase tests/case_insensitivity.csv: "hello world" in mixed case. */
static void test_multibase_case_insensitive(void **state)
{
    static const char *const texts[] = {"bnbswy3dpeB3W64TMMQ", "Bnbswy3dpeB3W64TMMQ",
                                        "BNBSWY3DPEB3W64TMMQ", "f68656c6c6f20776F726C64",
                                        "F68656c6c6f20776F726C64"};
    uint8_t raw[32];

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(texts); i++) {
        assert_int_equal(dc_multibase_decode(texts[i], raw, sizeof(raw)), 11);
        assert_memory_equal(raw, "hello world", 11);
    }
}

static void test_multibase_bad(void **state)
{
    uint8_t raw[32];
    char text[32];

    (void)state;
    assert_int_equal(dc_multibase_decode("", raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_multibase_decode("mAAB5", raw, sizeof(raw)), DC_EUNSUPPORTED);
    assert_int_equal(dc_multibase_decode("Qm", raw, sizeof(raw)), DC_EUNSUPPORTED);
    assert_int_equal(dc_multibase_decode("z0", raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_multibase_decode("b1", raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_multibase_decode("fabc", raw, sizeof(raw)), DC_ECORRUPT);
    /* Prefix alone is the empty value. */
    assert_int_equal(dc_multibase_decode("z", raw, sizeof(raw)), 0);
    assert_int_equal(dc_multibase_decode("b", raw, sizeof(raw)), 0);
    assert_int_equal(dc_multibase_encode('m', (const uint8_t *)"x", 1, text, sizeof(text)),
                     DC_EUNSUPPORTED);
    assert_int_equal(dc_multibase_encode('z', (const uint8_t *)"x", 1, text, 1), DC_ELIMIT);
    assert_int_equal(dc_multibase_encode('z', (const uint8_t *)"", 0, text, 2), 1);
    assert_string_equal(text, "z");
}

static void test_base58_bad(void **state)
{
    static const char *const bad[] = {"0", "O", "I", "l", "+", " 2g", "2g ", "2g\n", "1110"};
    uint8_t raw[32];
    char text[8];

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(bad); i++)
        assert_int_equal(dc_base58_decode(bad[i], strlen(bad[i]), raw, sizeof(raw)), DC_ECORRUPT);
    /* An embedded NUL is not part of the alphabet. */
    assert_int_equal(dc_base58_decode("2\0g", 3, raw, sizeof(raw)), DC_ECORRUPT);
    /* Leading '1's alone can overflow the output. */
    assert_int_equal(dc_base58_decode("111", 3, raw, 2), DC_ELIMIT);
    assert_int_equal(dc_base58_encode((const uint8_t *)"\0\0\0", 3, text, 3), DC_ELIMIT);
    assert_int_equal(dc_base58_encode((const uint8_t *)"", 0, text, 0), DC_ELIMIT);
    assert_int_equal(dc_base58_encode((const uint8_t *)"", 0, text, 1), 0);
    assert_string_equal(text, "");
}

static void test_base32_bad(void **state)
{
    uint8_t raw[32];

    (void)state;
    /* Lengths 1, 3 and 6 (mod 8) cannot come from whole bytes. */
    assert_int_equal(dc_base32_decode("m", 1, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base32_decode("mzx", 3, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base32_decode("mzxw6y", 6, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base32_decode("mzxw6ytbm", 9, raw, sizeof(raw)), DC_ECORRUPT);
    /* Outside the alphabet: digits 0, 1, 8, 9 and padding. */
    assert_int_equal(dc_base32_decode("m0", 2, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base32_decode("m1", 2, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base32_decode("m8", 2, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base32_decode("my======", 8, raw, sizeof(raw)), DC_ECORRUPT);
    /* Non-zero trailing bits: "mz" carries 2 spare bits = 01. */
    assert_int_equal(dc_base32_decode("mz", 2, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base32_decode("mzxr", 4, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base32_decode("MY", 2, raw, sizeof(raw)), 1);
    assert_int_equal(raw[0], 'f');
}

static void test_base16_bad(void **state)
{
    uint8_t raw[32];
    char text[8];

    (void)state;
    assert_int_equal(dc_base16_decode("6", 1, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base16_decode("6g", 2, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base16_decode("0x", 2, raw, sizeof(raw)), DC_ECORRUPT);
    assert_int_equal(dc_base16_decode("AbCd", 4, raw, sizeof(raw)), 2);
    assert_int_equal(raw[0], 0xab);
    assert_int_equal(raw[1], 0xcd);
    assert_int_equal(dc_base16_encode(raw, 2, text, 0), DC_ELIMIT);
    assert_int_equal(dc_base16_encode(raw, 2, text, 4), DC_ELIMIT);
    assert_int_equal(dc_base16_encode(raw, 2, text, 5), 4);
    assert_string_equal(text, "abcd");
}

/* A small deterministic generator so failures reproduce. */
static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void test_roundtrip(void **state)
{
    static const char bases[] = {DC_MULTIBASE_BASE58BTC, DC_MULTIBASE_BASE32, DC_MULTIBASE_BASE16};
    uint32_t seed = 0x2545f491u;
    uint8_t in[96], back[96];
    char text[256];

    (void)state;
    for (size_t len = 0; len <= sizeof(in); len++) {
        for (int pattern = 0; pattern < 4; pattern++) {
            for (size_t i = 0; i < len; i++)
                in[i] = (uint8_t)rng_next(&seed);
            /* Patterns: random, leading zeros, all zeros, all 0xff. */
            if (pattern == 1)
                memset(in, 0, len / 3);
            else if (pattern == 2)
                memset(in, 0, len);
            else if (pattern == 3)
                memset(in, 0xff, len);
            for (size_t b = 0; b < sizeof(bases); b++) {
                int n = dc_multibase_encode(bases[b], in, len, text, sizeof(text));

                assert_true(n >= 1);
                assert_int_equal((size_t)n, strlen(text));
                assert_int_equal(dc_multibase_decode(text, back, sizeof(back)), (int)len);
                assert_memory_equal(back, in, len);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base32_rfc4648),
        cmocka_unit_test(test_base16_rfc4648),
        cmocka_unit_test(test_base58_vectors),
        cmocka_unit_test(test_multibase_vectors),
        cmocka_unit_test(test_multibase_case_insensitive),
        cmocka_unit_test(test_multibase_bad),
        cmocka_unit_test(test_base58_bad),
        cmocka_unit_test(test_base32_bad),
        cmocka_unit_test(test_base16_bad),
        cmocka_unit_test(test_roundtrip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

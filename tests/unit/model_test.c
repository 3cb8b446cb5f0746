/* SPDX-License-Identifier: MIT */
/*
 * model_test.c - the model module: the GGUF validator on files built byte by byte here (valid
 * ones, one targeted corruption per rule, every truncation, bit flips, random bytes, failed
 * allocations), on models written by gguf-gen at test time (which must validate, be
 * deterministic, and load and generate in llama.cpp), and on the real files in ../shared when
 * that folder exists (skipped otherwise: the project passes its tests without it).
 */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <ggml.h>
#include <llama.h>

#include "base/base.h"
#include "model/model.h"
#include "gen_util.h"

static char tmpdir[64];

/* ---- a byte-by-byte GGUF builder ---- */

struct builder {
    struct dc_buf b;
};

static void put(struct builder *w, const void *p, size_t n)
{
    assert_int_equal(dc_buf_append(&w->b, p, n), 0);
}

static void put_u8(struct builder *w, uint8_t v)
{
    put(w, &v, 1);
}

static void put_u32(struct builder *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(w, b, 4);
}

static void put_u64(struct builder *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

static void put_str(struct builder *w, const char *s)
{
    put_u64(w, strlen(s));
    put(w, s, strlen(s));
}

static void put_f32(struct builder *w, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(w, u);
}

static void pad_to(struct builder *w, size_t align)
{
    while (w->b.len % align != 0)
        put_u8(w, 0);
}

/* Offsets of the fields the corruption tests poke at. */
struct layout {
    size_t version, n_tensors, n_kv;
    size_t name_len;   /* general.name's string length */
    size_t align_type; /* general.alignment's type field */
    size_t align_val;
    size_t arch_val; /* first byte of general.architecture's text */
    size_t tokens_n; /* tokenizer.ggml.tokens element count */
    size_t nested_elem_type;
    size_t bool_val;
    size_t key2; /* general.name's key text */
    size_t t0_name, t0_ndims, t0_ne0, t0_ne1, t0_type, t0_off;
    size_t t1_name, t1_off;
    size_t data; /* start of the data section */
    size_t size;
};

/*
 * A valid GGUF v3 file: 11 metadata entries of most types (incl. an array of arrays), two
 * tensors (a 32x2 Q8_0 matrix and a 4-element F32 vector) with the data ending the file.
 */
static void build_small(struct builder *w, struct layout *L)
{
    dc_buf_init(&w->b, 0);
    put(w, "GGUF", 4);
    L->version = w->b.len;
    put_u32(w, 3);
    L->n_tensors = w->b.len;
    put_u64(w, 2);
    L->n_kv = w->b.len;
    put_u64(w, 11);

    put_str(w, "general.architecture");
    put_u32(w, DC_GGUF_STRING);
    L->arch_val = w->b.len + 8;
    put_str(w, "llama");

    L->key2 = w->b.len + 8;
    put_str(w, "general.name");
    put_u32(w, DC_GGUF_STRING);
    L->name_len = w->b.len;
    put_str(w, "tiny test");

    put_str(w, "general.alignment");
    L->align_type = w->b.len;
    put_u32(w, DC_GGUF_UINT32);
    L->align_val = w->b.len;
    put_u32(w, 32);

    put_str(w, "llama.context_length");
    put_u32(w, DC_GGUF_UINT32);
    put_u32(w, 128);

    put_str(w, "general.file_type");
    put_u32(w, DC_GGUF_UINT32);
    put_u32(w, 7); /* Q8_0 */

    put_str(w, "tokenizer.ggml.tokens");
    put_u32(w, DC_GGUF_ARRAY);
    put_u32(w, DC_GGUF_STRING);
    L->tokens_n = w->b.len;
    put_u64(w, 3);
    put_str(w, "a");
    put_str(w, "bc");
    put_str(w, "<s>");

    put_str(w, "tokenizer.ggml.scores");
    put_u32(w, DC_GGUF_ARRAY);
    put_u32(w, DC_GGUF_FLOAT32);
    put_u64(w, 3);
    put_f32(w, 0.0f);
    put_f32(w, -1.0f);
    put_f32(w, -2.5f);

    put_str(w, "test.nested");
    put_u32(w, DC_GGUF_ARRAY);
    L->nested_elem_type = w->b.len;
    put_u32(w, DC_GGUF_ARRAY);
    put_u64(w, 2);
    put_u32(w, DC_GGUF_UINT8);
    put_u64(w, 2);
    put_u8(w, 1);
    put_u8(w, 2);
    put_u32(w, DC_GGUF_STRING);
    put_u64(w, 1);
    put_str(w, "x");

    put_str(w, "test.flag");
    put_u32(w, DC_GGUF_BOOL);
    L->bool_val = w->b.len;
    put_u8(w, 1);

    put_str(w, "test.i8");
    put_u32(w, DC_GGUF_INT8);
    put_u8(w, (uint8_t)-5);

    put_str(w, "test.f64");
    put_u32(w, DC_GGUF_FLOAT64);
    {
        double d = 2.5;
        uint64_t u;
        memcpy(&u, &d, 8);
        put_u64(w, u);
    }

    L->t0_name = w->b.len;
    put_str(w, "a.weight");
    L->t0_ndims = w->b.len;
    put_u32(w, 2);
    L->t0_ne0 = w->b.len;
    put_u64(w, 32);
    L->t0_ne1 = w->b.len;
    put_u64(w, 2);
    L->t0_type = w->b.len;
    put_u32(w, 8); /* q8_0: 34 bytes per 32 elements -> 68 bytes */
    L->t0_off = w->b.len;
    put_u64(w, 0);

    L->t1_name = w->b.len;
    put_str(w, "b.weight");
    put_u32(w, 1);
    put_u64(w, 4);
    put_u32(w, 0); /* f32: 16 bytes */
    L->t1_off = w->b.len;
    put_u64(w, 96); /* 68 rounded up to 32 */

    pad_to(w, 32);
    L->data = w->b.len;
    for (int i = 0; i < 68; i++)
        put_u8(w, (uint8_t)i);
    pad_to(w, 32);
    for (int i = 0; i < 4; i++)
        put_f32(w, (float)i);
    L->size = w->b.len;
}

static void poke_u32(struct builder *w, size_t off, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        w->b.data[off + i] = (uint8_t)(v >> (8 * i));
}

static void poke_u64(struct builder *w, size_t off, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        w->b.data[off + i] = (uint8_t)(v >> (8 * i));
}

/* ---- the validator on built files ---- */

static void test_small_valid(void **state)
{
    struct builder w;
    struct layout L;
    struct dc_gguf *g;
    const struct dc_gguf_kv *kv;
    const struct dc_gguf_tensor *t;
    struct dc_gguf_str s;
    uint64_t u, cur = 0;
    int64_t i64;
    double f;
    bool b;
    uint32_t ft;

    (void)state;
    build_small(&w, &L);
    assert_int_equal(dc_gguf_open_mem(w.b.data, w.b.len, &g), 0);
    assert_string_equal(dc_gguf_error(), "");
    assert_int_equal(dc_gguf_version(g), 3);
    assert_int_equal(dc_gguf_alignment(g), 32);
    assert_int_equal(dc_gguf_data_offset(g), L.data);
    assert_int_equal(dc_gguf_file_size(g), L.size);
    assert_string_equal(dc_gguf_architecture(g), "llama");
    assert_string_equal(dc_gguf_name(g), "tiny test");
    assert_int_equal(dc_gguf_param_count(g), 64 + 4);
    assert_int_equal(dc_gguf_context_length(g, &u), 0);
    assert_int_equal(u, 128);
    assert_int_equal(dc_gguf_file_type(g, &ft), 0);
    assert_int_equal(ft, 7);
    assert_string_equal(dc_gguf_quantization(g), "Q8_0");

    assert_int_equal(dc_gguf_kv_count(g), 11);
    assert_string_equal(dc_gguf_kv_at(g, 0)->key, "general.architecture");
    assert_null(dc_gguf_kv_at(g, 11));
    assert_null(dc_gguf_find(g, "nope"));
    assert_int_equal(dc_gguf_get_str(g, "general.name", &s), 0);
    assert_int_equal(s.len, 9);
    assert_memory_equal(s.ptr, "tiny test", 9);
    assert_int_equal(dc_gguf_get_str(g, "general.alignment", &s), DC_EINVAL);
    assert_int_equal(dc_gguf_get_str(g, "missing", &s), DC_ENOENT);
    assert_int_equal(dc_gguf_get_uint(g, "general.alignment", &u), 0);
    assert_int_equal(u, 32);
    assert_int_equal(dc_gguf_get_int(g, "test.i8", &i64), 0);
    assert_int_equal(i64, -5);
    assert_int_equal(dc_gguf_get_uint(g, "test.i8", &u), DC_EINVAL);
    assert_int_equal(dc_gguf_get_float(g, "test.f64", &f), 0);
    assert_true(f == 2.5);
    assert_int_equal(dc_gguf_get_bool(g, "test.flag", &b), 0);
    assert_true(b);
    assert_int_equal(dc_gguf_get_bool(g, "test.i8", &b), DC_EINVAL);

    kv = dc_gguf_find(g, "tokenizer.ggml.tokens");
    assert_non_null(kv);
    assert_int_equal(kv->type, DC_GGUF_ARRAY);
    assert_int_equal(kv->elem_type, DC_GGUF_STRING);
    assert_int_equal(kv->n_elems, 3);
    assert_int_equal(dc_gguf_arr_next_str(kv, &cur, &s), 0);
    assert_memory_equal(s.ptr, "a", 1);
    assert_int_equal(dc_gguf_arr_next_str(kv, &cur, &s), 0);
    assert_memory_equal(s.ptr, "bc", 2);
    assert_int_equal(dc_gguf_arr_next_str(kv, &cur, &s), 0);
    assert_memory_equal(s.ptr, "<s>", 3);
    assert_int_equal(dc_gguf_arr_next_str(kv, &cur, &s), DC_ENOENT);
    assert_int_equal(dc_gguf_arr_int(kv, 0, &i64), DC_EINVAL);

    kv = dc_gguf_find(g, "tokenizer.ggml.scores");
    assert_int_equal(dc_gguf_arr_float(kv, 2, &f), 0);
    assert_true(f == -2.5);
    assert_int_equal(dc_gguf_arr_float(kv, 3, &f), DC_ENOENT);
    kv = dc_gguf_find(g, "test.nested");
    assert_int_equal(kv->elem_type, DC_GGUF_ARRAY);
    assert_int_equal(kv->n_elems, 2);

    assert_int_equal(dc_gguf_tensor_count(g), 2);
    t = dc_gguf_find_tensor(g, "a.weight");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 32);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->type, 8);
    assert_int_equal(t->n_bytes, 68);
    assert_int_equal(t->offset, L.data);
    assert_int_equal(((const uint8_t *)dc_gguf_tensor_data(g, t))[67], 67);
    t = dc_gguf_find_tensor(g, "b.weight");
    assert_int_equal(t->offset, L.data + 96);
    assert_null(dc_gguf_find_tensor(g, "c.weight"));
    assert_null(dc_gguf_tensor_at(g, 2));
    dc_gguf_close(g);
    dc_gguf_close(NULL);
    dc_buf_cleanup(&w.b);
}

/* One corruption per rule; each must be DC_ECORRUPT with a message naming the field. */
static void test_small_corruptions(void **state)
{
    struct layout L;
    struct builder w;
    struct dc_gguf *g;
    const struct {
        const char *what;
        const char *expect; /* substring of dc_gguf_error() */
    } cases[] = {
        {"magic", "magic"},
        {"version 1", "version: 1 is not supported"},
        {"big-endian", "big-endian"},
        {"tensor count", "tensor count"},
        {"kv count", "cannot fit"},
        {"string length", "metadata 'general.name'"},
        {"alignment type", "general.alignment': type int32"},
        {"alignment value", "not a power of two"},
        {"arch text", "general.architecture"},
        {"array count", "tokenizer.ggml.tokens"},
        {"nested type", "unknown element type"},
        {"bool", "neither 0 nor 1"},
        {"duplicate key", "duplicate key"},
        {"n_dims", "5 dimensions"},
        {"dim zero", "dimension 0 is 0"},
        {"dim overflow", "overflows"},
        {"type", "unknown ggml type 4"},
        {"block rows", "whole number"},
        {"unaligned", "not a multiple of the alignment"},
        {"past end", "runs past the end"},
        {"overlap", "overlaps"},
        {"duplicate name", "duplicate name"},
        {"key control byte", "control byte"},
    };

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(cases); i++) {
        build_small(&w, &L);
        switch (i) {
        case 0:
            w.b.data[0] = 'g';
            break;
        case 1:
            poke_u32(&w, L.version, 1);
            break;
        case 2:
            poke_u32(&w, L.version, 0x03000000);
            break;
        case 3:
            poke_u64(&w, L.n_tensors, UINT64_MAX);
            break;
        case 4:
            poke_u64(&w, L.n_kv, 60000);
            break;
        case 5:
            poke_u64(&w, L.name_len, 1u << 30);
            break;
        case 6:
            poke_u32(&w, L.align_type, DC_GGUF_INT32);
            break;
        case 7:
            poke_u32(&w, L.align_val, 48);
            break;
        case 8:
            w.b.data[L.arch_val] = '/';
            break;
        case 9:
            poke_u64(&w, L.tokens_n, 1000);
            break;
        case 10:
            poke_u32(&w, L.nested_elem_type, 13);
            break;
        case 11:
            w.b.data[L.bool_val] = 2;
            break;
        case 12: /* a separate file, below */
            break;
        case 13:
            poke_u32(&w, L.t0_ndims, 5);
            break;
        case 14:
            poke_u64(&w, L.t0_ne0, 0);
            break;
        case 15:
            poke_u64(&w, L.t0_ne1, UINT64_C(1) << 62);
            break;
        case 16:
            poke_u32(&w, L.t0_type, 4);
            break;
        case 17:
            poke_u64(&w, L.t0_ne0, 48);
            break;
        case 18:
            poke_u64(&w, L.t1_off, 100);
            break;
        case 19:
            poke_u64(&w, L.t1_off, 128);
            break;
        case 20:
            poke_u64(&w, L.t1_off, 64);
            break;
        case 21:
            w.b.data[L.t1_name + 8] = 'a';
            break;
        case 22:
            w.b.data[L.key2 + 2] = '\n';
            break;
        }
        if (i == 12) {
            /* Two entries with the same key. */
            dc_buf_cleanup(&w.b);
            dc_buf_init(&w.b, 0);
            put(&w, "GGUF", 4);
            put_u32(&w, 3);
            put_u64(&w, 0);
            put_u64(&w, 2);
            put_str(&w, "k");
            put_u32(&w, DC_GGUF_UINT8);
            put_u8(&w, 1);
            put_str(&w, "k");
            put_u32(&w, DC_GGUF_UINT8);
            put_u8(&w, 2);
        }
        g = (struct dc_gguf *)&w; /* must be reset to NULL on failure */
        int rc = dc_gguf_open_mem(w.b.data, w.b.len, &g);
        dc_buf_cleanup(&w.b);
        if (rc != DC_ECORRUPT || strstr(dc_gguf_error(), cases[i].expect) == NULL)
            fail_msg("case '%s': rc %d, error '%s', expected '%s'", cases[i].what, rc,
                     dc_gguf_error(), cases[i].expect);
        assert_null(g);
        assert_non_null(strstr(dc_gguf_error(), " at offset "));
    }
}

/* Every proper prefix of the small file is corrupt (its last tensor ends the file). */
static void test_small_truncations(void **state)
{
    struct builder w;
    struct layout L;
    struct dc_gguf *g;

    (void)state;
    build_small(&w, &L);
    for (size_t n = 0; n < w.b.len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size, so ASan sees any overread */
        assert_non_null(copy);
        memcpy(copy, w.b.data, n);
        assert_int_equal(dc_gguf_open_mem(copy, n, &g), DC_ECORRUPT);
        assert_null(g);
        assert_true(dc_gguf_error()[0] != '\0');
        free(copy);
    }
    assert_int_equal(dc_gguf_open_mem(NULL, 0, &g), DC_ECORRUPT);
    dc_buf_cleanup(&w.b);
}

/* Every single-bit flip of the small file either validates or is a clean DC_ECORRUPT. */
static void test_small_bitflips(void **state)
{
    struct builder w;
    struct layout L;
    struct dc_gguf *g;
    size_t accepted = 0, rejected = 0;

    (void)state;
    build_small(&w, &L);
    uint8_t *copy = malloc(w.b.len);
    assert_non_null(copy);
    for (size_t i = 0; i < L.data; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, w.b.data, w.b.len);
            copy[i] ^= (uint8_t)(1u << bit);
            int rc = dc_gguf_open_mem(copy, w.b.len, &g);
            if (rc == 0) {
                accepted++;
                dc_gguf_close(g);
            } else {
                assert_int_equal(rc, DC_ECORRUPT);
                rejected++;
            }
        }
    }
    assert_true(rejected > 0 && accepted > 0);
    free(copy);
    dc_buf_cleanup(&w.b);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Random bytes, with and without a plausible header, and random multi-byte corruptions. */
static void test_random_bytes(void **state)
{
    struct builder w;
    struct layout L;
    struct dc_gguf *g;
    uint64_t s = 42;

    (void)state;
    build_small(&w, &L);
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(rng_next(&s) % 600);
        uint8_t *buf;

        if (iter % 3 != 0) /* a mutated copy of the valid file, maybe cut */
            n = w.b.len - (iter % 5 == 0 ? rng_next(&s) % w.b.len : 0);
        buf = malloc(n ? n : 1);
        assert_non_null(buf);
        if (iter % 3 == 0) {
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)rng_next(&s);
            if (n >= 24 && iter % 2 == 0) {
                memcpy(buf, "GGUF\3\0\0\0", 8);
                buf[8] = (uint8_t)(rng_next(&s) % 4);
                memset(buf + 9, 0, 7);
                buf[16] = (uint8_t)(rng_next(&s) % 8);
                memset(buf + 17, 0, 7);
            }
        } else {
            memcpy(buf, w.b.data, n);
            for (int k = 0; k < 1 + iter % 4 && n > 0; k++)
                buf[rng_next(&s) % n] = (uint8_t)rng_next(&s);
        }
        int rc = dc_gguf_open_mem(buf, n, &g);
        if (rc == 0)
            dc_gguf_close(g);
        else
            assert_int_equal(rc, DC_ECORRUPT);
        free(buf);
    }
    dc_buf_cleanup(&w.b);
}

/* Fail the 1st, 2nd, 3rd... allocation: DC_ENOMEM each time, no leak (ASan), then success. */
static void test_alloc_failures(void **state)
{
    struct builder w;
    struct layout L;
    struct dc_gguf *g;
    int rc;
    long n;

    (void)state;
    build_small(&w, &L);
    for (n = 0; n < 100; n++) {
        dc_alloc_fail_after(n);
        rc = dc_gguf_open_mem(w.b.data, w.b.len, &g);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(g);
    }
    assert_int_equal(rc, 0);
    assert_true(n > 3);
    dc_gguf_close(g);
    dc_buf_cleanup(&w.b);
}

/* Our type table must match ggml's. */
static void test_type_table(void **state)
{
    (void)state;
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        uint32_t blck = 0, size = 0;
        bool known = dc_gguf_ggml_type_size((uint32_t)t, &blck, &size);
        if (ggml_blck_size((enum ggml_type)t) == 0) {
            assert_false(known);
            continue;
        }
        assert_true(known);
        assert_int_equal(blck, ggml_blck_size((enum ggml_type)t));
        assert_int_equal(size, ggml_type_size((enum ggml_type)t));
        assert_string_equal(dc_gguf_ggml_type_name((uint32_t)t), ggml_type_name((enum ggml_type)t));
    }
    assert_null(dc_gguf_ggml_type_name(GGML_TYPE_COUNT));
    assert_string_equal(dc_gguf_ftype_name(LLAMA_FTYPE_MOSTLY_Q4_K_M), "Q4_K_M");
    assert_null(dc_gguf_ftype_name(4));
    assert_string_equal(dc_gguf_type_name(DC_GGUF_STRING), "string");
}

/* ---- files on disk ---- */

static char *path_in_tmp(const char *name)
{
    char *p = dc_asprintf("%s/%s", tmpdir, name);
    assert_non_null(p);
    return p;
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_open_files(void **state)
{
    struct builder w;
    struct layout L;
    struct dc_gguf *g;
    char *p = path_in_tmp("small.gguf"), *e = path_in_tmp("empty.gguf");

    (void)state;
    build_small(&w, &L);
    write_file(p, w.b.data, w.b.len);
    assert_int_equal(dc_gguf_open(p, &g), 0);
    assert_string_equal(dc_gguf_architecture(g), "llama");
    assert_int_equal(dc_gguf_tensor_count(g), 2);
    dc_gguf_close(g);
    write_file(p, w.b.data, w.b.len - 1);
    assert_int_equal(dc_gguf_open(p, &g), DC_ECORRUPT);
    assert_non_null(strstr(dc_gguf_error(), "b.weight"));
    write_file(e, "", 0);
    assert_int_equal(dc_gguf_open(e, &g), DC_ECORRUPT);
    assert_int_equal(dc_gguf_open("/nonexistent/x.gguf", &g), DC_ENOENT);
    assert_null(g);
    assert_int_equal(dc_gguf_open(tmpdir, &g), DC_EINVAL);
    unlink(p);
    unlink(e);
    dc_free(p);
    dc_free(e);
    dc_buf_cleanup(&w.b);
}

/* ---- gguf-gen ---- */

static void quiet_log(enum ggml_log_level level, const char *text, void *user)
{
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

/*
 * Loads a decoder model in llama.cpp, checks its shape, and greedily generates a few tokens
 * from a short prompt: every id in range, every logit finite.
 */
static void load_and_generate(const char *path, int n_vocab, int n_embd)
{
    struct llama_model_params mp = llama_model_default_params();
    struct llama_context_params cp = llama_context_default_params();
    struct llama_model *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    llama_token toks[64];
    int n;

    model = llama_model_load_from_file(path, mp);
    assert_non_null(model);
    vocab = llama_model_get_vocab(model);
    assert_int_equal(llama_vocab_n_tokens(vocab), n_vocab);
    assert_int_equal(llama_model_n_embd(model), n_embd);

    cp.n_ctx = 128;
    cp.n_batch = 64;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    ctx = llama_init_from_model(model, cp);
    assert_non_null(ctx);

    n = llama_tokenize(vocab, "hello world, the tiny model", 27, toks, 64, true, false);
    assert_true(n > 0 && n < 32);
    assert_int_equal(llama_decode(ctx, llama_batch_get_one(toks, n)), 0);
    for (int step = 0; step < 8; step++) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        llama_token best = 0;
        assert_non_null(logits);
        for (int i = 0; i < n_vocab; i++) {
            assert_true(isfinite(logits[i]));
            if (logits[i] > logits[best])
                best = i;
        }
        toks[n] = best;
        assert_int_equal(llama_decode(ctx, llama_batch_get_one(&toks[n], 1)), 0);
        n++;
    }
    llama_free(ctx);
    llama_model_free(model);
}

/* A BERT model: encode a sentence and check the pooled embedding. */
static void load_and_embed(const char *path, int n_embd)
{
    struct llama_model_params mp = llama_model_default_params();
    struct llama_context_params cp = llama_context_default_params();
    struct llama_model *model;
    struct llama_context *ctx;
    llama_token toks[64];
    const float *emb;
    int n;

    model = llama_model_load_from_file(path, mp);
    assert_non_null(model);
    cp.n_ctx = 64;
    cp.n_batch = 64;
    cp.n_ubatch = 64;
    cp.embeddings = true;
    cp.pooling_type = LLAMA_POOLING_TYPE_MEAN;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    ctx = llama_init_from_model(model, cp);
    assert_non_null(ctx);
    n = llama_tokenize(llama_model_get_vocab(model), "hello world", 11, toks, 64, true, false);
    assert_true(n >= 3);
    assert_int_equal(llama_encode(ctx, llama_batch_get_one(toks, n)), 0);
    emb = llama_get_embeddings_seq(ctx, 0);
    assert_non_null(emb);
    for (int i = 0; i < n_embd; i++)
        assert_true(isfinite(emb[i]));
    llama_free(ctx);
    llama_model_free(model);
}

static void check_generated(const char *path, const char *arch, const char *quant,
                            uint64_t n_params, uint64_t n_ctx)
{
    struct dc_gguf *g;
    uint64_t u;

    if (dc_gguf_open(path, &g) != 0)
        fail_msg("%s does not validate: %s", path, dc_gguf_error());
    assert_string_equal(dc_gguf_architecture(g), arch);
    assert_string_equal(dc_gguf_quantization(g), quant);
    assert_int_equal(dc_gguf_param_count(g), n_params);
    assert_int_equal(dc_gguf_context_length(g, &u), 0);
    assert_int_equal(u, n_ctx);
    dc_gguf_close(g);
}

/* Parameters of a llama model (untied output); qwen2 adds q/k/v biases. */
static uint64_t llama_params(uint64_t d, uint64_t l, uint64_t h, uint64_t k, uint64_t ff,
                             uint64_t v, bool bias)
{
    uint64_t dkv = d / h * k;
    uint64_t per = d + d * d + 2 * d * dkv + d * d + d + 3 * d * ff + (bias ? d + 2 * dkv : 0);
    return 2 * d * v + d + l * per;
}

static void test_gen_llama(void **state)
{
    char *f32 = path_in_tmp("llama-f32.gguf"), *again = path_in_tmp("llama-f32-again.gguf");
    char *other = path_in_tmp("llama-f32-seed2.gguf"), *q8 = path_in_tmp("llama-q8_0.gguf");
    char *q4k = path_in_tmp("llama-q4_k_m.gguf");
    uint8_t *a, *b, *c;
    size_t na, nb, nc;
    uint64_t n_params = llama_params(64, 2, 4, 2, 256, 320, false);

    (void)state;
    assert_int_equal(run_gen("--arch", "llama", "--dim", "64", "--layers", "2", "--heads", "4",
                             "--kv-heads", "2", "--vocab", "320", "--ctx", "256", "--type", "F32",
                             "--seed", "1", "-o", f32, NULL),
                     0);
    check_generated(f32, "llama", "F32", n_params, 256);
    load_and_generate(f32, 320, 64);

    /* Deterministic: the same arguments give the same bytes; another seed does not. */
    assert_int_equal(run_gen("--arch", "llama", "--dim", "64", "--layers", "2", "--heads", "4",
                             "--kv-heads", "2", "--vocab", "320", "--ctx", "256", "--type", "f32",
                             "--seed", "1", "-o", again, NULL),
                     0);
    assert_int_equal(run_gen("--arch", "llama", "--dim", "64", "--layers", "2", "--heads", "4",
                             "--kv-heads", "2", "--vocab", "320", "--ctx", "256", "--type", "f32",
                             "--seed", "2", "-o", other, NULL),
                     0);
    a = read_all(f32, &na);
    b = read_all(again, &nb);
    c = read_all(other, &nc);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    assert_int_equal(na, nc);
    assert_memory_not_equal(a, c, na);
    free(a);
    free(b);
    free(c);

    assert_int_equal(run_gen("--arch", "llama", "--dim", "64", "--layers", "2", "--heads", "4",
                             "--kv-heads", "2", "--vocab", "320", "--ctx", "256", "--type", "q8_0",
                             "--seed", "1", "--threads", "2", "-o", q8, NULL),
                     0);
    check_generated(q8, "llama", "Q8_0", n_params, 256);
    load_and_generate(q8, 320, 64);

    /* K-quants need rows of 256: D = 256 here. */
    assert_int_equal(run_gen("--arch", "llama", "--dim", "256", "--layers", "1", "--heads", "4",
                             "--kv-heads", "1", "--type", "Q4_K_M", "--seed", "3", "--threads", "2",
                             "-o", q4k, NULL),
                     0);
    check_generated(q4k, "llama", "Q4_K_M", llama_params(256, 1, 4, 1, 1024, 512, false), 512);
    load_and_generate(q4k, 512, 256);

    unlink(f32);
    unlink(again);
    unlink(other);
    unlink(q8);
    unlink(q4k);
    dc_free(f32);
    dc_free(again);
    dc_free(other);
    dc_free(q8);
    dc_free(q4k);
}

static void test_gen_qwen2(void **state)
{
    char *p = path_in_tmp("qwen2-q4_0.gguf");
    struct dc_gguf *g;
    struct dc_gguf_str s;
    struct llama_model *model;
    char buf[512];

    (void)state;
    assert_int_equal(run_gen("--arch", "qwen2", "--dim", "64", "--layers", "2", "--heads", "4",
                             "--kv-heads", "1", "--ff", "128", "--vocab", "400", "--type", "q4_0",
                             "--seed", "7", "--threads", "2", "-o", p, NULL),
                     0);
    check_generated(p, "qwen2", "Q4_0", llama_params(64, 2, 4, 1, 128, 400, true), 512);
    assert_int_equal(dc_gguf_open(p, &g), 0);
    assert_int_equal(dc_gguf_get_str(g, "tokenizer.ggml.pre", &s), 0);
    assert_memory_equal(s.ptr, "qwen2", 5);
    dc_gguf_close(g);
    load_and_generate(p, 400, 64);

    /* The ChatML template is recognised by llama.cpp. */
    model = llama_model_load_from_file(p, llama_model_default_params());
    assert_non_null(model);
    struct llama_chat_message msg = {"user", "hi"};
    int n = llama_chat_apply_template(llama_model_chat_template(model, NULL), &msg, 1, true, buf,
                                      sizeof(buf));
    assert_true(n > 0 && n < (int)sizeof(buf));
    buf[n] = '\0';
    assert_string_equal(buf, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    llama_model_free(model);
    unlink(p);
    dc_free(p);
}

static void test_gen_bert(void **state)
{
    char *p = path_in_tmp("bert-f16.gguf");

    (void)state;
    assert_int_equal(run_gen("--arch", "bert", "--dim", "64", "--layers", "2", "--heads", "4",
                             "--kv-heads", "4", "--vocab", "200", "--ctx", "128", "--type", "f16",
                             "--seed", "5", "--threads", "2", "-o", p, NULL),
                     0);
    {
        struct dc_gguf *g;
        assert_int_equal(dc_gguf_open(p, &g), 0);
        assert_string_equal(dc_gguf_architecture(g), "bert");
        assert_string_equal(dc_gguf_quantization(g), "F16");
        dc_gguf_close(g);
    }
    load_and_embed(p, 64);
    unlink(p);
    dc_free(p);
}

static void test_gen_errors(void **state)
{
    char *p = path_in_tmp("bad.gguf");

    (void)state;
    assert_int_equal(run_gen("--help", NULL), 0);
    /* dim not a multiple of heads; unknown type; vocab too small; missing option; bad number */
    assert_int_not_equal(run_gen("--arch", "llama", "--dim", "65", "--layers", "1", "--heads", "4",
                                 "--kv-heads", "1", "--type", "f32", "--seed", "1", "-o", p, NULL),
                         0);
    assert_int_not_equal(run_gen("--arch", "llama", "--dim", "64", "--layers", "1", "--heads", "4",
                                 "--kv-heads", "1", "--type", "q9_9", "--seed", "1", "-o", p, NULL),
                         0);
    assert_int_not_equal(run_gen("--arch", "llama", "--dim", "64", "--layers", "1", "--heads", "4",
                                 "--kv-heads", "1", "--vocab", "100", "--type", "f32", "--seed",
                                 "1", "-o", p, NULL),
                         0);
    assert_int_not_equal(run_gen("--arch", "llama", "--dim", "64", "--type", "f32", NULL), 0);
    assert_int_not_equal(run_gen("--arch", "gpt9", "--dim", "64x", NULL), 0);
    assert_int_not_equal(access(p, F_OK), 0);
    dc_free(p);
}

/* ---- real files from ../shared (skipped when absent) ---- */

static void test_shared_stories(void **state)
{
    const char *path = DC_SHARED_DIR "/models/stories260K-f32.gguf";
    struct dc_gguf *g;
    const struct dc_gguf_kv *kv;
    uint8_t *data, *copy;
    size_t len, meta_end;
    uint64_t u;

    (void)state;
    if (access(path, R_OK) != 0)
        skip();
    assert_int_equal(dc_gguf_open(path, &g), 0);
    assert_string_equal(dc_gguf_architecture(g), "llama");
    assert_int_equal(dc_gguf_context_length(g, &u), 0);
    assert_int_equal(u, 512);
    assert_string_equal(dc_gguf_quantization(g), "F32");
    kv = dc_gguf_find(g, "tokenizer.ggml.tokens");
    assert_non_null(kv);
    assert_int_equal(kv->n_elems, 512);
    assert_int_equal(dc_gguf_get_uint(g, "llama.embedding_length", &u), 0);
    assert_int_equal(u, 64);
    assert_non_null(dc_gguf_find_tensor(g, "blk.4.ffn_down.weight"));
    /* ~260K parameters: 512x64 embeddings + output, 5 layers of attention and a 172-wide FFN */
    assert_true(dc_gguf_param_count(g) > 200000 && dc_gguf_param_count(g) < 300000);
    meta_end = (size_t)dc_gguf_data_offset(g);
    dc_gguf_close(g);

    /* Truncations: every length through the metadata, then a stride through the data. */
    data = read_all(path, &len);
    for (size_t n = 0; n < len; n += n < meta_end ? 1 : 4093) {
        copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, data, n);
        assert_int_equal(dc_gguf_open_mem(copy, n, &g), DC_ECORRUPT);
        free(copy);
    }
    /* Bit flips through the first 4 KiB of metadata. */
    copy = malloc(len);
    assert_non_null(copy);
    for (size_t i = 0; i < 4096 && i < meta_end; i += 3) {
        memcpy(copy, data, len);
        copy[i] ^= (uint8_t)(1u << (i % 8));
        int rc = dc_gguf_open_mem(copy, len, &g);
        if (rc == 0)
            dc_gguf_close(g);
        else
            assert_int_equal(rc, DC_ECORRUPT);
    }
    free(copy);
    free(data);
}

static void test_shared_vocabs(void **state)
{
    const char *dir = DC_SHARED_DIR "/tokenizers";
    DIR *d = opendir(dir);
    struct dirent *e;
    int n_files = 0;

    (void)state;
    if (d == NULL)
        skip();
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        struct dc_gguf *g;
        if (l < 5 || strcmp(e->d_name + l - 5, ".gguf") != 0)
            continue;
        char *p = dc_asprintf("%s/%s", dir, e->d_name);
        assert_non_null(p);
        if (dc_gguf_open(p, &g) != 0)
            fail_msg("%s: %s", p, dc_gguf_error());
        assert_non_null(dc_gguf_architecture(g));
        assert_non_null(dc_gguf_find(g, "tokenizer.ggml.tokens"));
        dc_gguf_close(g);
        dc_free(p);
        n_files++;
    }
    closedir(d);
    assert_true(n_files > 0);
}

/* gguf-gen --vocab-from a real tokenizer: V follows the file, and the model loads. */
static void test_gen_vocab_from(void **state)
{
    const char *vocab = DC_SHARED_DIR "/tokenizers/ggml-vocab-llama-spm.gguf";
    char *p = path_in_tmp("llama-spm.gguf");
    struct dc_gguf *g;
    const struct dc_gguf_kv *kv;

    (void)state;
    if (access(vocab, R_OK) != 0) {
        dc_free(p);
        skip();
    }
    assert_int_equal(run_gen("--arch", "llama", "--dim", "32", "--layers", "1", "--heads", "2",
                             "--kv-heads", "2", "--type", "f16", "--seed", "9", "--threads", "2",
                             "--vocab-from", vocab, "-o", p, NULL),
                     0);
    assert_int_equal(dc_gguf_open(p, &g), 0);
    kv = dc_gguf_find(g, "tokenizer.ggml.tokens");
    assert_int_equal(kv->n_elems, 32000);
    dc_gguf_close(g);
    load_and_generate(p, 32000, 32);
    unlink(p);
    dc_free(p);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/dc-model-test-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    llama_backend_free();
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_valid),       cmocka_unit_test(test_small_corruptions),
        cmocka_unit_test(test_small_truncations), cmocka_unit_test(test_small_bitflips),
        cmocka_unit_test(test_random_bytes),      cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_type_table),        cmocka_unit_test(test_open_files),
        cmocka_unit_test(test_gen_errors),        cmocka_unit_test(test_gen_llama),
        cmocka_unit_test(test_gen_qwen2),         cmocka_unit_test(test_gen_bert),
        cmocka_unit_test(test_shared_stories),    cmocka_unit_test(test_shared_vocabs),
        cmocka_unit_test(test_gen_vocab_from),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

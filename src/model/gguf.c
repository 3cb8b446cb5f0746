/* SPDX-License-Identifier: MIT */
/*
 * gguf.c - the GGUF validator (model.h). A single forward pass over the file with a cursor that
 * never reads past the end: every length and count is checked against the bytes that remain
 * before it is used, every size is computed with overflow checks, and the first problem stops
 * the pass with DC_ECORRUPT and a message naming the field and its offset. Afterwards the keys
 * and tensor names are sorted (duplicates and lookups) and the tensors sorted by offset
 * (overlaps). Nothing here uses gguf.h: llama.cpp's reader is what we are protecting.
 *
 * The work is linear in the file size (each element of every array costs at least one byte of
 * input, except fixed-size arrays which are checked in one multiplication), plus n log n for
 * the sorts, so a hostile file cannot make validation slow.
 *
 * Layout of the struct: the mapping (or borrowed buffer), the entries in file order, index
 * arrays sorted by key/name, and one arena holding the NUL-terminated keys.
 */
#include "model/model.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_SIZE     24u
#define KV_MIN_SIZE     14u /* u64 key length, 1 key byte, u32 type, 1 value byte */
#define TENSOR_MIN_SIZE 25u /* u64 name length, 1 name byte, u32 n_dims, u32 type, u64 offset */
#define ARCH_MAX_LEN    64u

struct dc_gguf {
    const uint8_t *base;
    uint64_t size;
    bool mapped;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    uint64_t n_params;

    size_t n_kv;
    struct dc_gguf_kv *kv;
    size_t *kv_by_key; /* indices into kv, sorted by key */
    char *key_arena;

    size_t n_tensors;
    struct dc_gguf_tensor *tensors;
    size_t *tensor_by_name; /* indices into tensors, sorted by name */

    char *architecture;
    char *name;
};

/* ggml's type traits for the types a file may hold (ggml.c type_traits): name, block elements,
 * block bytes. Removed ids have block 0. model_test checks this table against ggml itself. */
static const struct {
    const char *name;
    const char *upper;
    uint32_t blck;
    uint32_t size;
} ggml_types[] = {
    [0] = {"f32", "F32", 1, 4},
    [1] = {"f16", "F16", 1, 2},
    [2] = {"q4_0", "Q4_0", 32, 18},
    [3] = {"q4_1", "Q4_1", 32, 20},
    [6] = {"q5_0", "Q5_0", 32, 22},
    [7] = {"q5_1", "Q5_1", 32, 24},
    [8] = {"q8_0", "Q8_0", 32, 34},
    [9] = {"q8_1", "Q8_1", 32, 36},
    [10] = {"q2_K", "Q2_K", 256, 84},
    [11] = {"q3_K", "Q3_K", 256, 110},
    [12] = {"q4_K", "Q4_K", 256, 144},
    [13] = {"q5_K", "Q5_K", 256, 176},
    [14] = {"q6_K", "Q6_K", 256, 210},
    [15] = {"q8_K", "Q8_K", 256, 292},
    [16] = {"iq2_xxs", "IQ2_XXS", 256, 66},
    [17] = {"iq2_xs", "IQ2_XS", 256, 74},
    [18] = {"iq3_xxs", "IQ3_XXS", 256, 98},
    [19] = {"iq1_s", "IQ1_S", 256, 50},
    [20] = {"iq4_nl", "IQ4_NL", 32, 18},
    [21] = {"iq3_s", "IQ3_S", 256, 110},
    [22] = {"iq2_s", "IQ2_S", 256, 82},
    [23] = {"iq4_xs", "IQ4_XS", 256, 136},
    [24] = {"i8", "I8", 1, 1},
    [25] = {"i16", "I16", 1, 2},
    [26] = {"i32", "I32", 1, 4},
    [27] = {"i64", "I64", 1, 8},
    [28] = {"f64", "F64", 1, 8},
    [29] = {"iq1_m", "IQ1_M", 256, 56},
    [30] = {"bf16", "BF16", 1, 2},
    [34] = {"tq1_0", "TQ1_0", 256, 54},
    [35] = {"tq2_0", "TQ2_0", 256, 66},
    [39] = {"mxfp4", "MXFP4", 32, 17},
    [40] = {"nvfp4", "NVFP4", 64, 36},
    [41] = {"q1_0", "Q1_0", 128, 18},
    [42] = {"q2_0", "Q2_0", 64, 18},
};

/* llama_ftype names (llama.h), as llama-quantize spells them. */
static const char *const ftype_names[] = {
    [0] = "F32",      [1] = "F16",      [2] = "Q4_0",       [3] = "Q4_1",    [7] = "Q8_0",
    [8] = "Q5_0",     [9] = "Q5_1",     [10] = "Q2_K",      [11] = "Q3_K_S", [12] = "Q3_K_M",
    [13] = "Q3_K_L",  [14] = "Q4_K_S",  [15] = "Q4_K_M",    [16] = "Q5_K_S", [17] = "Q5_K_M",
    [18] = "Q6_K",    [19] = "IQ2_XXS", [20] = "IQ2_XS",    [21] = "Q2_K_S", [22] = "IQ3_XS",
    [23] = "IQ3_XXS", [24] = "IQ1_S",   [25] = "IQ4_NL",    [26] = "IQ3_S",  [27] = "IQ3_M",
    [28] = "IQ2_S",   [29] = "IQ2_M",   [30] = "IQ4_XS",    [31] = "IQ1_M",  [32] = "BF16",
    [36] = "TQ1_0",   [37] = "TQ2_0",   [38] = "MXFP4_MOE", [39] = "NVFP4",  [40] = "Q1_0",
    [41] = "Q2_0",
};

static const char *const type_names[] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

/* Byte size of a fixed-size metadata type; 0 for string, array and unknown types. */
static uint32_t scalar_size(uint32_t t)
{
    switch (t) {
    case DC_GGUF_UINT8:
    case DC_GGUF_INT8:
    case DC_GGUF_BOOL:
        return 1;
    case DC_GGUF_UINT16:
    case DC_GGUF_INT16:
        return 2;
    case DC_GGUF_UINT32:
    case DC_GGUF_INT32:
    case DC_GGUF_FLOAT32:
        return 4;
    case DC_GGUF_UINT64:
    case DC_GGUF_INT64:
    case DC_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* ---- errors: one thread-local message per thread, set by the first failure ---- */

static _Thread_local char err_msg[320];
static _Thread_local uint64_t err_offset;

const char *dc_gguf_error(void)
{
    return err_msg;
}

uint64_t dc_gguf_error_offset(void)
{
    return err_offset;
}

DC_PRINTF(2, 3) static int fail(uint64_t offset, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
    va_end(ap);
    n = strlen(err_msg);
    snprintf(err_msg + n, sizeof(err_msg) - n, " at offset %llu", (unsigned long long)offset);
    err_offset = offset;
    return DC_ECORRUPT;
}

/* Copies up to 'max'-1 bytes of file text into 'dst' for messages, masking what isn't
 * printable ASCII so a hostile name cannot inject control characters into logs. */
static const char *printable(char *dst, size_t max, const uint8_t *src, uint64_t len)
{
    size_t i, n = len < max - 4 ? (size_t)len : max - 4;

    for (i = 0; i < n; i++)
        dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
    if (n < len) {
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
    return dst;
}

/* ---- the cursor ---- */

struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
};

static uint64_t remaining(const struct cursor *c)
{
    return c->size - c->pos;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Reads a u32/u64 named 'what' for the error message. */
static int read_u32(struct cursor *c, const char *what, uint32_t *v)
{
    if (remaining(c) < 4)
        return fail(c->pos, "%s: file ends inside the 4-byte field", what);
    *v = le32(c->base + c->pos);
    c->pos += 4;
    return 0;
}

static int read_u64(struct cursor *c, const char *what, uint64_t *v)
{
    if (remaining(c) < 8)
        return fail(c->pos, "%s: file ends inside the 8-byte field", what);
    *v = le64(c->base + c->pos);
    c->pos += 8;
    return 0;
}

/* Reads a string header and checks its bytes are present; '*s' points at them. */
static int read_str(struct cursor *c, const char *what, uint64_t max, const uint8_t **s,
                    uint64_t *len)
{
    uint64_t at = c->pos;
    int rc = read_u64(c, what, len);

    if (rc < 0)
        return rc;
    if (*len > max)
        return fail(at, "%s: string length %llu exceeds the limit %llu", what,
                    (unsigned long long)*len, (unsigned long long)max);
    if (*len > remaining(c))
        return fail(at, "%s: string length %llu runs past the end of the file (%llu bytes left)",
                    what, (unsigned long long)*len, (unsigned long long)remaining(c));
    *s = c->base + c->pos;
    c->pos += *len;
    return 0;
}

/*
 * Validates one value of type 'type' at the cursor and advances past it. 'depth' counts array
 * nesting. 'what' names the entry for messages.
 */
static int skip_value(struct cursor *c, const char *what, uint32_t type, int depth)
{
    uint64_t at = c->pos, len = 0, n = 0;
    uint32_t elem = 0, sz;
    const uint8_t *s;
    int rc;

    sz = scalar_size(type);
    if (sz != 0) {
        if (remaining(c) < sz)
            return fail(at, "%s: file ends inside the %s value", what, type_names[type]);
        if (type == DC_GGUF_BOOL && c->base[c->pos] > 1)
            return fail(at, "%s: bool value %u is neither 0 nor 1", what, c->base[c->pos]);
        c->pos += sz;
        return 0;
    }
    if (type == DC_GGUF_STRING)
        return read_str(c, what, DC_GGUF_MAX_STRING_LEN, &s, &len);
    if (type != DC_GGUF_ARRAY)
        return fail(at, "%s: unknown value type %u", what, type);

    if (depth >= DC_GGUF_MAX_ARRAY_DEPTH)
        return fail(at, "%s: arrays nested deeper than %d", what, DC_GGUF_MAX_ARRAY_DEPTH);
    rc = read_u32(c, what, &elem);
    if (rc < 0)
        return rc;
    rc = read_u64(c, what, &n);
    if (rc < 0)
        return rc;
    if (n > DC_GGUF_MAX_ARRAY_LEN)
        return fail(at, "%s: array of %llu elements exceeds the limit %llu", what,
                    (unsigned long long)n, (unsigned long long)DC_GGUF_MAX_ARRAY_LEN);
    sz = scalar_size(elem);
    if (sz != 0) {
        /* n <= 2^26 and sz <= 8: no overflow. */
        if (n * sz > remaining(c))
            return fail(at, "%s: array of %llu %s runs past the end of the file", what,
                        (unsigned long long)n, type_names[elem]);
        if (elem == DC_GGUF_BOOL) {
            for (uint64_t i = 0; i < n; i++)
                if (c->base[c->pos + i] > 1)
                    return fail(c->pos + i, "%s: bool element %llu is neither 0 nor 1", what,
                                (unsigned long long)i);
        }
        c->pos += n * sz;
        return 0;
    }
    if (elem != DC_GGUF_STRING && elem != DC_GGUF_ARRAY)
        return fail(at, "%s: array of unknown element type %u", what, elem);
    /* Variable-size elements: each takes at least 8 bytes, so a count that cannot fit fails
     * here instead of after a long walk. */
    if (n > remaining(c) / (elem == DC_GGUF_STRING ? 8 : 12))
        return fail(at, "%s: array of %llu %s runs past the end of the file", what,
                    (unsigned long long)n, type_names[elem]);
    for (uint64_t i = 0; i < n; i++) {
        rc = skip_value(c, what, elem, depth + 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- sorting helpers (qsort has no context argument, so sort pointers to the strings) ---- */

struct sort_item {
    const char *str;
    size_t len;
    uint64_t off;
    size_t idx;
};

static int cmp_item_str(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->str, y->str, n);

    if (r != 0)
        return r;
    return (x->len > y->len) - (x->len < y->len);
}

static int cmp_item_off(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;

    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* ---- the pass ---- */

static int parse_header(struct dc_gguf *g, struct cursor *c, uint64_t *n_tensors, uint64_t *n_kv)
{
    int rc;

    if (c->size < HEADER_SIZE)
        return fail(0, "header: file is %llu bytes, shorter than the %u-byte GGUF header",
                    (unsigned long long)c->size, HEADER_SIZE);
    if (memcmp(c->base, "GGUF", 4) != 0) {
        char m[8];
        return fail(0, "magic: '%s' is not 'GGUF'", printable(m, sizeof(m), c->base, 4));
    }
    c->pos = 4;
    rc = read_u32(c, "version", &g->version);
    if (rc < 0)
        return rc;
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffffu) == 0)
            return fail(4, "version: %#x looks big-endian, which is not supported", g->version);
        return fail(4, "version: %u is not supported (2 or 3)", g->version);
    }
    rc = read_u64(c, "tensor count", n_tensors);
    if (rc < 0)
        return rc;
    rc = read_u64(c, "metadata count", n_kv);
    if (rc < 0)
        return rc;
    if (*n_tensors > DC_GGUF_MAX_TENSORS)
        return fail(8, "tensor count: %llu exceeds the limit %u", (unsigned long long)*n_tensors,
                    DC_GGUF_MAX_TENSORS);
    if (*n_kv > DC_GGUF_MAX_KV)
        return fail(16, "metadata count: %llu exceeds the limit %u", (unsigned long long)*n_kv,
                    DC_GGUF_MAX_KV);
    /* Both counts are bounded above, so these products cannot overflow. */
    if (*n_kv * KV_MIN_SIZE + *n_tensors * TENSOR_MIN_SIZE > remaining(c))
        return fail(8, "header: %llu tensors and %llu metadata entries cannot fit in %llu bytes",
                    (unsigned long long)*n_tensors, (unsigned long long)*n_kv,
                    (unsigned long long)c->size);
    return 0;
}

static int parse_kv(struct dc_gguf *g, struct cursor *c)
{
    size_t key_bytes = 0;
    char what[96], kbuf[64];
    int rc;

    for (size_t i = 0; i < g->n_kv; i++) {
        struct dc_gguf_kv *kv = &g->kv[i];
        const uint8_t *key;
        uint64_t key_len = 0, start;
        uint32_t type = 0;

        kv->offset = c->pos;
        snprintf(what, sizeof(what), "metadata %zu key", i);
        rc = read_str(c, what, DC_GGUF_MAX_KEY_LEN, &key, &key_len);
        if (rc < 0)
            return rc;
        if (key_len == 0)
            return fail(kv->offset, "metadata %zu: empty key", i);
        for (uint64_t j = 0; j < key_len; j++)
            if (key[j] < 0x20 || key[j] == 0x7f)
                return fail(kv->offset + 8 + j, "metadata %zu key: control byte %#x", i, key[j]);
        /* The key's bytes lie at kv->offset + 8; the arena below copies them. */
        kv->key_len = (size_t)key_len;
        key_bytes += (size_t)key_len + 1;

        snprintf(what, sizeof(what), "metadata '%s'", printable(kbuf, sizeof(kbuf), key, key_len));
        rc = read_u32(c, what, &type);
        if (rc < 0)
            return rc;
        if (type > DC_GGUF_FLOAT64)
            return fail(c->pos - 4, "%s: unknown value type %u", what, type);
        kv->type = (enum dc_gguf_type)type;
        kv->elem_type = kv->type;
        kv->n_elems = 1;
        start = c->pos;
        rc = skip_value(c, what, type, 0);
        if (rc < 0)
            return rc;
        if (type == DC_GGUF_ARRAY) {
            kv->elem_type = (enum dc_gguf_type)le32(c->base + start);
            kv->n_elems = le64(c->base + start + 4);
            start += 12;
        }
        kv->value = c->base + start;
        kv->value_len = c->pos - start;
    }

    g->key_arena = dc_malloc(key_bytes ? key_bytes : 1);
    if (g->key_arena == NULL)
        return DC_ENOMEM;
    char *p = g->key_arena;
    for (size_t i = 0; i < g->n_kv; i++) {
        struct dc_gguf_kv *kv = &g->kv[i];
        memcpy(p, c->base + kv->offset + 8, kv->key_len);
        p[kv->key_len] = '\0';
        kv->key = p;
        p += kv->key_len + 1;
    }
    return 0;
}

/* Sorts the keys, rejects duplicates, and checks general.alignment / general.architecture. */
static int check_kv(struct dc_gguf *g)
{
    struct sort_item *items;
    const struct dc_gguf_kv *kv;
    char kbuf[64];
    int rc = 0;

    if (g->n_kv > 0) {
        items = dc_calloc(g->n_kv, sizeof(*items));
        if (items == NULL)
            return DC_ENOMEM;
        for (size_t i = 0; i < g->n_kv; i++)
            items[i] = (struct sort_item){g->kv[i].key, g->kv[i].key_len, g->kv[i].offset, i};
        qsort(items, g->n_kv, sizeof(*items), cmp_item_str);
        for (size_t i = 0; i < g->n_kv; i++)
            g->kv_by_key[i] = items[i].idx;
        for (size_t i = 1; i < g->n_kv && rc == 0; i++) {
            if (cmp_item_str(&items[i - 1], &items[i]) == 0) {
                size_t later = items[i].idx > items[i - 1].idx ? i : i - 1;
                rc = fail(
                    items[later].off, "metadata '%s': duplicate key",
                    printable(kbuf, sizeof(kbuf), (const uint8_t *)items[i].str, items[i].len));
            }
        }
        dc_free(items);
        if (rc < 0)
            return rc;
    }

    g->alignment = DC_GGUF_DEFAULT_ALIGNMENT;
    kv = dc_gguf_find(g, "general.alignment");
    if (kv != NULL) {
        if (kv->type != DC_GGUF_UINT32)
            return fail(kv->offset, "metadata 'general.alignment': type %s, expected uint32",
                        dc_gguf_type_name(kv->type));
        g->alignment = le32(kv->value);
        if (g->alignment == 0 || (g->alignment & (g->alignment - 1)) != 0)
            return fail(kv->offset, "metadata 'general.alignment': %u is not a power of two",
                        g->alignment);
    }

    kv = dc_gguf_find(g, "general.architecture");
    if (kv != NULL) {
        if (kv->type != DC_GGUF_STRING)
            return fail(kv->offset, "metadata 'general.architecture': type %s, expected string",
                        dc_gguf_type_name(kv->type));
        uint64_t len = le64(kv->value);
        const uint8_t *s = kv->value + 8;
        if (len == 0 || len > ARCH_MAX_LEN)
            return fail(kv->offset, "metadata 'general.architecture': length %llu not in 1..%u",
                        (unsigned long long)len, ARCH_MAX_LEN);
        for (uint64_t i = 0; i < len; i++) {
            uint8_t ch = s[i];
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.';
            if (!ok)
                return fail(kv->offset, "metadata 'general.architecture': byte %#x not allowed",
                            ch);
        }
        g->architecture = dc_strndup((const char *)s, (size_t)len);
        if (g->architecture == NULL)
            return DC_ENOMEM;
    }

    kv = dc_gguf_find(g, "general.name");
    if (kv != NULL && kv->type == DC_GGUF_STRING) {
        g->name = dc_strndup((const char *)kv->value + 8, (size_t)le64(kv->value));
        if (g->name == NULL)
            return DC_ENOMEM;
    }
    return 0;
}

static int parse_tensor(struct dc_gguf *g, struct cursor *c, size_t i)
{
    struct dc_gguf_tensor *t = &g->tensors[i];
    char what[128];
    const uint8_t *name;
    uint64_t name_len = 0, prod, rows, row_bytes, at;
    uint32_t blck = 0, bsize = 0;
    int rc;

    t->info_offset = c->pos;
    snprintf(what, sizeof(what), "tensor %zu name", i);
    rc = read_str(c, what, DC_GGUF_MAX_NAME - 1, &name, &name_len);
    if (rc < 0)
        return rc;
    if (name_len == 0)
        return fail(t->info_offset, "tensor %zu: empty name", i);
    if (memchr(name, 0, (size_t)name_len) != NULL)
        return fail(t->info_offset, "tensor %zu: NUL byte inside the name", i);
    memcpy(t->name, name, (size_t)name_len);
    t->name[name_len] = '\0';
    /* From here on messages name the tensor; mask unprintable bytes. */
    char nbuf[DC_GGUF_MAX_NAME + 4];
    printable(nbuf, sizeof(nbuf), name, name_len);
    snprintf(what, sizeof(what), "tensor %zu '%s'", i, nbuf);

    at = c->pos;
    rc = read_u32(c, what, &t->n_dims);
    if (rc < 0)
        return rc;
    if (t->n_dims > DC_GGUF_MAX_DIMS)
        return fail(at, "%s: %u dimensions, at most %d allowed", what, t->n_dims, DC_GGUF_MAX_DIMS);
    prod = 1;
    for (uint32_t d = 0; d < DC_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        at = c->pos;
        rc = read_u64(c, what, &t->ne[d]);
        if (rc < 0)
            return rc;
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX)
            return fail(at, "%s: dimension %u is %llu, must be in 1..2^63-1", what, d,
                        (unsigned long long)t->ne[d]);
        if (prod > (uint64_t)INT64_MAX / t->ne[d])
            return fail(at, "%s: element count overflows at dimension %u", what, d);
        prod *= t->ne[d];
    }
    t->n_elems = prod;

    at = c->pos;
    rc = read_u32(c, what, &t->type);
    if (rc < 0)
        return rc;
    if (!dc_gguf_ggml_type_size(t->type, &blck, &bsize))
        return fail(at, "%s: unknown ggml type %u", what, t->type);
    if (t->ne[0] % blck != 0)
        return fail(at, "%s: row of %llu elements is not a whole number of %s blocks (%u)", what,
                    (unsigned long long)t->ne[0], ggml_types[t->type].name, blck);
    row_bytes = t->ne[0] / blck * bsize; /* ne[0] < 2^63, bsize < 2^9: no overflow in uint64 */
    rows = prod / t->ne[0];
    if (row_bytes != 0 && rows > (uint64_t)INT64_MAX / row_bytes)
        return fail(at, "%s: byte size overflows", what);
    t->n_bytes = rows * row_bytes;
    if (g->n_params > UINT64_MAX - prod)
        g->n_params = UINT64_MAX;
    else
        g->n_params += prod;

    at = c->pos;
    rc = read_u64(c, what, &t->offset);
    if (rc < 0)
        return rc;
    if (t->offset % g->alignment != 0)
        return fail(at, "%s: data offset %llu is not a multiple of the alignment %u", what,
                    (unsigned long long)t->offset, g->alignment);
    return 0;
}

/* Data section start, every tensor's range inside the file, no overlaps, no duplicate names. */
static int check_tensors(struct dc_gguf *g, struct cursor *c)
{
    struct sort_item *items;
    uint64_t pad, avail;
    int rc = 0;

    if (g->n_tensors == 0) {
        g->data_offset = 0;
        return 0;
    }
    pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    if (pad > remaining(c))
        return fail(c->pos, "data section: padding to alignment %u runs past the end of the file",
                    g->alignment);
    g->data_offset = c->pos + pad;
    avail = c->size - g->data_offset;

    for (size_t i = 0; i < g->n_tensors; i++) {
        struct dc_gguf_tensor *t = &g->tensors[i];
        if (t->offset > avail || t->n_bytes > avail - t->offset)
            return fail(t->info_offset,
                        "tensor %zu '%s': data [%llu, +%llu) runs past the end of the file "
                        "(data section of %llu bytes)",
                        i, t->name, (unsigned long long)t->offset, (unsigned long long)t->n_bytes,
                        (unsigned long long)avail);
        t->offset += g->data_offset; /* absolute from here on */
    }

    items = dc_calloc(g->n_tensors, sizeof(*items));
    if (items == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < g->n_tensors; i++)
        items[i] = (struct sort_item){g->tensors[i].name, strlen(g->tensors[i].name),
                                      g->tensors[i].offset, i};

    qsort(items, g->n_tensors, sizeof(*items), cmp_item_off);
    for (size_t i = 1; i < g->n_tensors && rc == 0; i++) {
        const struct dc_gguf_tensor *a = &g->tensors[items[i - 1].idx];
        const struct dc_gguf_tensor *b = &g->tensors[items[i].idx];
        if (a->offset + a->n_bytes > b->offset)
            rc = fail(b->info_offset, "tensor %zu '%s': data overlaps tensor %zu '%s'",
                      items[i].idx, b->name, items[i - 1].idx, a->name);
    }

    if (rc == 0) {
        qsort(items, g->n_tensors, sizeof(*items), cmp_item_str);
        for (size_t i = 0; i < g->n_tensors; i++)
            g->tensor_by_name[i] = items[i].idx;
        for (size_t i = 1; i < g->n_tensors && rc == 0; i++) {
            if (cmp_item_str(&items[i - 1], &items[i]) == 0) {
                size_t later = items[i].idx > items[i - 1].idx ? items[i].idx : items[i - 1].idx;
                rc = fail(g->tensors[later].info_offset, "tensor %zu '%s': duplicate name", later,
                          g->tensors[later].name);
            }
        }
    }
    dc_free(items);
    return rc;
}

static int validate(struct dc_gguf *g)
{
    struct cursor c = {g->base, g->size, 0};
    uint64_t n_tensors = 0, n_kv = 0;
    int rc;

    rc = parse_header(g, &c, &n_tensors, &n_kv);
    if (rc < 0)
        return rc;
    g->n_kv = (size_t)n_kv;
    g->n_tensors = (size_t)n_tensors;
    if (n_kv > 0) {
        g->kv = dc_calloc(g->n_kv, sizeof(*g->kv));
        g->kv_by_key = dc_calloc(g->n_kv, sizeof(*g->kv_by_key));
        if (g->kv == NULL || g->kv_by_key == NULL)
            return DC_ENOMEM;
    }
    if (n_tensors > 0) {
        g->tensors = dc_calloc(g->n_tensors, sizeof(*g->tensors));
        g->tensor_by_name = dc_calloc(g->n_tensors, sizeof(*g->tensor_by_name));
        if (g->tensors == NULL || g->tensor_by_name == NULL)
            return DC_ENOMEM;
    }
    rc = parse_kv(g, &c);
    if (rc < 0)
        return rc;
    rc = check_kv(g);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < g->n_tensors; i++) {
        rc = parse_tensor(g, &c, i);
        if (rc < 0)
            return rc;
    }
    return check_tensors(g, &c);
}

/* Frees everything but the mapping. */
static void release(struct dc_gguf *g)
{
    dc_free(g->kv);
    dc_free(g->kv_by_key);
    dc_free(g->key_arena);
    dc_free(g->tensors);
    dc_free(g->tensor_by_name);
    dc_free(g->architecture);
    dc_free(g->name);
    dc_free(g);
}

static int open_common(const uint8_t *base, uint64_t size, bool mapped, struct dc_gguf **out)
{
    struct dc_gguf *g;
    int rc;

    g = dc_calloc(1, sizeof(*g));
    if (g == NULL)
        return DC_ENOMEM;
    g->base = base;
    g->size = size;
    g->mapped = mapped;
    rc = validate(g);
    if (rc < 0) {
        if (rc == DC_ENOMEM)
            snprintf(err_msg, sizeof(err_msg), "out of memory");
        release(g);
        return rc;
    }
    *out = g;
    return 0;
}

int dc_gguf_open_mem(const void *buf, size_t len, struct dc_gguf **out)
{
    static const uint8_t empty[1];

    *out = NULL;
    err_msg[0] = '\0';
    err_offset = 0;
    return open_common(buf != NULL ? buf : empty, buf != NULL ? len : 0, false, out);
}

int dc_gguf_open(const char *path, struct dc_gguf **out)
{
    struct stat st;
    void *map = NULL;
    int fd, rc;

    *out = NULL;
    err_msg[0] = '\0';
    err_offset = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(err_msg, sizeof(err_msg), "cannot open: %s", dc_strerror(rc));
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err_msg, sizeof(err_msg), "cannot stat: %s", dc_strerror(rc));
        goto err_close_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = DC_EINVAL;
        snprintf(err_msg, sizeof(err_msg), "not a regular file");
        goto err_close_fd;
    }
    if (st.st_size > 0) {
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = -errno;
            snprintf(err_msg, sizeof(err_msg), "cannot map: %s", dc_strerror(rc));
            goto err_close_fd;
        }
    }
    /* The mapping stays valid after the descriptor is closed. */
    close(fd);
    if (map == NULL)
        return open_common((const uint8_t *)"", 0, false, out);
    rc = open_common(map, (uint64_t)st.st_size, true, out);
    if (rc < 0)
        munmap(map, (size_t)st.st_size);
    return rc;

err_close_fd:
    close(fd);
    return rc;
}

void dc_gguf_close(struct dc_gguf *g)
{
    if (g == NULL)
        return;
    if (g->mapped)
        munmap((void *)(uintptr_t)g->base, (size_t)g->size);
    release(g);
}

/* ---- accessors ---- */

uint32_t dc_gguf_version(const struct dc_gguf *g)
{
    return g->version;
}

uint64_t dc_gguf_file_size(const struct dc_gguf *g)
{
    return g->size;
}

uint32_t dc_gguf_alignment(const struct dc_gguf *g)
{
    return g->alignment;
}

uint64_t dc_gguf_data_offset(const struct dc_gguf *g)
{
    return g->data_offset;
}

const char *dc_gguf_architecture(const struct dc_gguf *g)
{
    return g->architecture;
}

const char *dc_gguf_name(const struct dc_gguf *g)
{
    return g->name;
}

uint64_t dc_gguf_param_count(const struct dc_gguf *g)
{
    return g->n_params;
}

size_t dc_gguf_kv_count(const struct dc_gguf *g)
{
    return g->n_kv;
}

const struct dc_gguf_kv *dc_gguf_kv_at(const struct dc_gguf *g, size_t i)
{
    return i < g->n_kv ? &g->kv[i] : NULL;
}

const struct dc_gguf_kv *dc_gguf_find(const struct dc_gguf *g, const char *key)
{
    size_t lo = 0, hi = g->n_kv, klen = strlen(key);
    struct sort_item want = {key, klen, 0, 0};

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct dc_gguf_kv *kv = &g->kv[g->kv_by_key[mid]];
        struct sort_item have = {kv->key, kv->key_len, 0, 0};
        int r = cmp_item_str(&want, &have);
        if (r == 0)
            return kv;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Reads a scalar integer of any integer type at 'p'; false for non-integer types. Bools are
 * not integers here. */
static bool int_at(enum dc_gguf_type t, const uint8_t *p, int64_t *sv, uint64_t *uv, bool *neg)
{
    *neg = false;
    switch (t) {
    case DC_GGUF_UINT8:
        *uv = p[0];
        break;
    case DC_GGUF_UINT16:
        *uv = (uint64_t)p[0] | (uint64_t)p[1] << 8;
        break;
    case DC_GGUF_UINT32:
        *uv = le32(p);
        break;
    case DC_GGUF_UINT64:
        *uv = le64(p);
        break;
    case DC_GGUF_INT8:
        *sv = (int8_t)p[0];
        goto signed_value;
    case DC_GGUF_INT16:
        *sv = (int16_t)(uint16_t)((uint16_t)p[0] | (uint16_t)(p[1] << 8));
        goto signed_value;
    case DC_GGUF_INT32:
        *sv = (int32_t)le32(p);
        goto signed_value;
    case DC_GGUF_INT64:
        *sv = (int64_t)le64(p);
        goto signed_value;
    default:
        return false;
    }
    *sv = *uv > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)*uv;
    return true;
signed_value:
    *neg = *sv < 0;
    *uv = *neg ? 0 : (uint64_t)*sv;
    return true;
}

static bool float_at(enum dc_gguf_type t, const uint8_t *p, double *v)
{
    if (t == DC_GGUF_FLOAT32) {
        uint32_t u = le32(p);
        float f;
        memcpy(&f, &u, sizeof(f));
        *v = f;
        return true;
    }
    if (t == DC_GGUF_FLOAT64) {
        uint64_t u = le64(p);
        memcpy(v, &u, sizeof(*v));
        return true;
    }
    return false;
}

int dc_gguf_get_str(const struct dc_gguf *g, const char *key, struct dc_gguf_str *out)
{
    const struct dc_gguf_kv *kv = dc_gguf_find(g, key);

    if (kv == NULL)
        return DC_ENOENT;
    if (kv->type != DC_GGUF_STRING)
        return DC_EINVAL;
    out->len = (size_t)le64(kv->value);
    out->ptr = (const char *)kv->value + 8;
    return 0;
}

int dc_gguf_get_uint(const struct dc_gguf *g, const char *key, uint64_t *out)
{
    const struct dc_gguf_kv *kv = dc_gguf_find(g, key);
    int64_t sv;
    uint64_t uv;
    bool neg;

    if (kv == NULL)
        return DC_ENOENT;
    if (!int_at(kv->type, kv->value, &sv, &uv, &neg) || neg)
        return DC_EINVAL;
    *out = uv;
    return 0;
}

int dc_gguf_get_int(const struct dc_gguf *g, const char *key, int64_t *out)
{
    const struct dc_gguf_kv *kv = dc_gguf_find(g, key);
    int64_t sv;
    uint64_t uv;
    bool neg;

    if (kv == NULL)
        return DC_ENOENT;
    if (!int_at(kv->type, kv->value, &sv, &uv, &neg) || (!neg && uv > (uint64_t)INT64_MAX))
        return DC_EINVAL;
    *out = sv;
    return 0;
}

int dc_gguf_get_float(const struct dc_gguf *g, const char *key, double *out)
{
    const struct dc_gguf_kv *kv = dc_gguf_find(g, key);

    if (kv == NULL)
        return DC_ENOENT;
    return float_at(kv->type, kv->value, out) ? 0 : DC_EINVAL;
}

int dc_gguf_get_bool(const struct dc_gguf *g, const char *key, bool *out)
{
    const struct dc_gguf_kv *kv = dc_gguf_find(g, key);

    if (kv == NULL)
        return DC_ENOENT;
    if (kv->type != DC_GGUF_BOOL)
        return DC_EINVAL;
    *out = kv->value[0] != 0;
    return 0;
}

int dc_gguf_arr_int(const struct dc_gguf_kv *kv, uint64_t i, int64_t *out)
{
    uint32_t sz;
    int64_t sv;
    uint64_t uv;
    bool neg;

    if (kv->type != DC_GGUF_ARRAY)
        return DC_EINVAL;
    sz = scalar_size(kv->elem_type);
    if (sz == 0 || kv->elem_type == DC_GGUF_BOOL)
        return DC_EINVAL;
    if (i >= kv->n_elems)
        return DC_ENOENT;
    if (!int_at(kv->elem_type, kv->value + i * sz, &sv, &uv, &neg) ||
        (!neg && uv > (uint64_t)INT64_MAX))
        return DC_EINVAL;
    *out = sv;
    return 0;
}

int dc_gguf_arr_float(const struct dc_gguf_kv *kv, uint64_t i, double *out)
{
    uint32_t sz;

    if (kv->type != DC_GGUF_ARRAY)
        return DC_EINVAL;
    sz = scalar_size(kv->elem_type);
    if (kv->elem_type != DC_GGUF_FLOAT32 && kv->elem_type != DC_GGUF_FLOAT64)
        return DC_EINVAL;
    if (i >= kv->n_elems)
        return DC_ENOENT;
    return float_at(kv->elem_type, kv->value + i * sz, out) ? 0 : DC_EINVAL;
}

int dc_gguf_arr_next_str(const struct dc_gguf_kv *kv, uint64_t *cursor, struct dc_gguf_str *out)
{
    uint64_t len;

    if (kv->type != DC_GGUF_ARRAY || kv->elem_type != DC_GGUF_STRING)
        return DC_EINVAL;
    /* Validation guaranteed the layout; still refuse a cursor that isn't ours. */
    if (*cursor >= kv->value_len || kv->value_len - *cursor < 8)
        return DC_ENOENT;
    len = le64(kv->value + *cursor);
    if (len > kv->value_len - *cursor - 8)
        return DC_EINVAL;
    out->ptr = (const char *)kv->value + *cursor + 8;
    out->len = (size_t)len;
    *cursor += 8 + len;
    return 0;
}

int dc_gguf_file_type(const struct dc_gguf *g, uint32_t *ftype)
{
    uint64_t v;
    int rc = dc_gguf_get_uint(g, "general.file_type", &v);

    if (rc < 0)
        return rc;
    if (v > UINT32_MAX)
        return DC_EINVAL;
    *ftype = (uint32_t)v;
    return 0;
}

const char *dc_gguf_ftype_name(uint32_t ftype)
{
    if (ftype >= DC_ARRAY_LEN(ftype_names))
        return NULL;
    return ftype_names[ftype];
}

const char *dc_gguf_quantization(const struct dc_gguf *g)
{
    uint64_t bytes[DC_ARRAY_LEN(ggml_types)] = {0};
    uint32_t ftype;
    size_t best = 0;
    bool any = false;

    if (dc_gguf_file_type(g, &ftype) == 0 && dc_gguf_ftype_name(ftype) != NULL)
        return dc_gguf_ftype_name(ftype);
    /* No (known) file type: the type holding most bytes among matrices, as llama.cpp guesses. */
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct dc_gguf_tensor *t = &g->tensors[i];
        if (t->n_dims < 2)
            continue;
        bytes[t->type] += t->n_bytes;
        any = true;
    }
    if (!any)
        return "unknown";
    for (size_t i = 1; i < DC_ARRAY_LEN(ggml_types); i++)
        if (bytes[i] > bytes[best])
            best = i;
    return ggml_types[best].upper;
}

int dc_gguf_context_length(const struct dc_gguf *g, uint64_t *n_ctx)
{
    char key[ARCH_MAX_LEN + 32];
    uint64_t v;
    int rc;

    if (g->architecture == NULL)
        return DC_ENOENT;
    snprintf(key, sizeof(key), "%s.context_length", g->architecture);
    rc = dc_gguf_get_uint(g, key, &v);
    if (rc < 0)
        return rc;
    if (v == 0)
        return DC_EINVAL;
    *n_ctx = v;
    return 0;
}

size_t dc_gguf_tensor_count(const struct dc_gguf *g)
{
    return g->n_tensors;
}

const struct dc_gguf_tensor *dc_gguf_tensor_at(const struct dc_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct dc_gguf_tensor *dc_gguf_find_tensor(const struct dc_gguf *g, const char *name)
{
    size_t lo = 0, hi = g->n_tensors;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct dc_gguf_tensor *t = &g->tensors[g->tensor_by_name[mid]];
        int r = strcmp(name, t->name);
        if (r == 0)
            return t;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const void *dc_gguf_tensor_data(const struct dc_gguf *g, const struct dc_gguf_tensor *t)
{
    return g->base + t->offset;
}

const char *dc_gguf_ggml_type_name(uint32_t type)
{
    if (type >= DC_ARRAY_LEN(ggml_types) || ggml_types[type].blck == 0)
        return NULL;
    return ggml_types[type].name;
}

bool dc_gguf_ggml_type_size(uint32_t type, uint32_t *block_elems, uint32_t *block_bytes)
{
    if (type >= DC_ARRAY_LEN(ggml_types) || ggml_types[type].blck == 0)
        return false;
    *block_elems = ggml_types[type].blck;
    *block_bytes = ggml_types[type].size;
    return true;
}

const char *dc_gguf_type_name(enum dc_gguf_type t)
{
    if ((unsigned)t >= DC_ARRAY_LEN(type_names))
        return "?";
    return type_names[t];
}

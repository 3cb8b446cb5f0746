/* SPDX-License-Identifier: MIT */
/*
 * gguf_fuzz.c - libFuzzer harness for the GGUF validator (src/model/gguf.c). Any input must be
 * either rejected with a clean error code and message or accepted; an accepted file is then
 * walked through every accessor (metadata, arrays, strings, tensors and their data), which must
 * stay inside the buffer. ASan and UBSan turn any slip into a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void walk(const struct dc_gguf *g)
{
    struct dc_gguf_str s;
    uint64_t u, cur;
    int64_t i64;
    double f;
    bool b;
    uint32_t ft;

    sink += dc_gguf_version(g) + dc_gguf_alignment(g) + dc_gguf_data_offset(g);
    sink += dc_gguf_param_count(g) + strlen(dc_gguf_quantization(g));
    if (dc_gguf_architecture(g) != NULL)
        sink += strlen(dc_gguf_architecture(g));
    if (dc_gguf_name(g) != NULL)
        sink += strlen(dc_gguf_name(g));
    if (dc_gguf_context_length(g, &u) == 0)
        sink += u;
    if (dc_gguf_file_type(g, &ft) == 0)
        sink += ft;

    for (size_t i = 0; i < dc_gguf_kv_count(g); i++) {
        const struct dc_gguf_kv *kv = dc_gguf_kv_at(g, i);
        /* Lookups by key must find the entry itself (keys are unique). */
        if (dc_gguf_find(g, kv->key) != kv)
            __builtin_trap();
        if (dc_gguf_get_str(g, kv->key, &s) == 0 && s.len > 0)
            sink += (uint8_t)s.ptr[s.len - 1];
        if (dc_gguf_get_uint(g, kv->key, &u) == 0)
            sink += u;
        if (dc_gguf_get_int(g, kv->key, &i64) == 0)
            sink += (uint64_t)i64;
        if (dc_gguf_get_float(g, kv->key, &f) == 0)
            sink += (uint64_t)(f == f);
        if (dc_gguf_get_bool(g, kv->key, &b) == 0)
            sink += b;
        if (kv->type != DC_GGUF_ARRAY)
            continue;
        cur = 0;
        for (uint64_t j = 0; dc_gguf_arr_next_str(kv, &cur, &s) == 0; j++)
            if (s.len > 0)
                sink += (uint8_t)s.ptr[0];
        for (uint64_t j = 0; j < kv->n_elems && j < 64; j++) {
            if (dc_gguf_arr_int(kv, j, &i64) == 0)
                sink += (uint64_t)i64;
            if (dc_gguf_arr_float(kv, j, &f) == 0)
                sink += (uint64_t)(f == f);
        }
        if (kv->n_elems > 0 && dc_gguf_arr_int(kv, kv->n_elems - 1, &i64) == 0)
            sink += (uint64_t)i64;
    }
    for (size_t i = 0; i < dc_gguf_tensor_count(g); i++) {
        const struct dc_gguf_tensor *t = dc_gguf_tensor_at(g, i);
        const uint8_t *p = dc_gguf_tensor_data(g, t);
        if (dc_gguf_find_tensor(g, t->name) != t)
            __builtin_trap();
        /* First and last byte of the data must be readable. */
        sink += p[0] + p[t->n_bytes - 1];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dc_gguf *g = NULL;
    int rc = dc_gguf_open_mem(data, size, &g);

    if (rc == 0) {
        walk(g);
        dc_gguf_close(g);
    } else if (g != NULL || dc_gguf_error()[0] == '\0') {
        __builtin_trap(); /* a failure always leaves *out NULL and says why */
    }
    return 0;
}

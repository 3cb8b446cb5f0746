/* SPDX-License-Identifier: MIT */
/*
 * model.h - the model module's public interface: everything Democritus knows about local GGUF
 * models, in C11 terms (llama.h stays inside src/model/). This first part is the GGUF validator:
 * our own bounds-checked reader that checks a file's header, metadata, tensor table and data
 * ranges against the file size before llama.cpp ever sees it, so a truncated, corrupt or
 * hostile file is a clean DC_ECORRUPT naming the field and offset, never a crash. It also
 * answers the registry's questions (architecture, name, parameter count, quantization, context
 * length) and typed metadata lookups without loading the model.
 *
 * Format (GGUF v2/v3, little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv, n_kv
 * metadata entries (string key, u32 type, value), n_tensors tensor infos (string name, u32
 * n_dims, n_dims x u64 ne, u32 ggml type, u64 offset), padding to general.alignment (default
 * 32), tensor data. Strings are u64 length + bytes, not NUL-terminated.
 */
#ifndef DC_MODEL_H
#define DC_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* Hard limits of the validator; a file beyond them is DC_ECORRUPT (real models are far below). */
#define DC_GGUF_MAX_KV            (1u << 16)   /* metadata entries */
#define DC_GGUF_MAX_TENSORS       (1u << 20)   /* tensor infos */
#define DC_GGUF_MAX_KEY_LEN       65535u       /* bytes in a metadata key (GGUF spec) */
#define DC_GGUF_MAX_STRING_LEN    (64u << 20)  /* bytes in one string value */
#define DC_GGUF_MAX_ARRAY_LEN     (1ull << 26) /* elements in one array */
#define DC_GGUF_MAX_ARRAY_DEPTH   4            /* arrays of arrays, nested at most this deep */
#define DC_GGUF_MAX_NAME          64           /* tensor name incl. NUL (ggml's GGML_MAX_NAME) */
#define DC_GGUF_MAX_DIMS          4            /* ggml's GGML_MAX_DIMS */
#define DC_GGUF_DEFAULT_ALIGNMENT 32u          /* when general.alignment is absent */

/* Metadata value types, numbered as in the file. */
enum dc_gguf_type {
    DC_GGUF_UINT8 = 0,
    DC_GGUF_INT8 = 1,
    DC_GGUF_UINT16 = 2,
    DC_GGUF_INT16 = 3,
    DC_GGUF_UINT32 = 4,
    DC_GGUF_INT32 = 5,
    DC_GGUF_FLOAT32 = 6,
    DC_GGUF_BOOL = 7,
    DC_GGUF_STRING = 8,
    DC_GGUF_ARRAY = 9,
    DC_GGUF_UINT64 = 10,
    DC_GGUF_INT64 = 11,
    DC_GGUF_FLOAT64 = 12,
};

/* A validated GGUF file (opaque). It owns its mapping, or borrows the caller's buffer. */
struct dc_gguf;

/*
 * One metadata entry. 'key' is NUL-terminated (a copy; keys never contain NUL). 'value' points
 * into the mapping at the raw little-endian bytes: for arrays, at the first element, after the
 * element type and count. Everything is valid until dc_gguf_close().
 */
struct dc_gguf_kv {
    const char *key;
    size_t key_len;
    enum dc_gguf_type type;      /* DC_GGUF_ARRAY for arrays */
    enum dc_gguf_type elem_type; /* arrays only: the elements' type */
    uint64_t n_elems;            /* arrays: element count; 1 otherwise */
    const uint8_t *value;
    uint64_t value_len; /* bytes of the value (all elements for arrays) */
    uint64_t offset;    /* file offset where the entry (its key) starts */
};

/* One tensor. Unused dimensions of 'ne' are 1. */
struct dc_gguf_tensor {
    char name[DC_GGUF_MAX_NAME]; /* NUL-terminated */
    uint32_t n_dims;
    uint64_t ne[DC_GGUF_MAX_DIMS]; /* elements per dimension, innermost first */
    uint32_t type;                 /* ggml type id (GGML_TYPE_*) */
    uint64_t n_elems;
    uint64_t n_bytes;
    uint64_t offset;      /* absolute file offset of the data (aligned, inside the file) */
    uint64_t info_offset; /* file offset of the tensor's entry in the tensor table */
};

/* A string inside the mapping: 'len' bytes at 'ptr', not NUL-terminated. */
struct dc_gguf_str {
    const char *ptr;
    size_t len;
};

/*
 * Opens a GGUF file read-only (mmap) and validates all of it: magic, version (2 or 3), counts
 * against the file size, every metadata entry (types incl. nested arrays, string lengths,
 * limits above, no duplicate keys, general.alignment a u32 power of two), the tensor table
 * (name length, n_dims <= 4, dims > 0 with an overflow-free product, known ggml type with rows
 * a whole number of blocks, offsets aligned, data inside the file, no two tensors overlapping,
 * no duplicate names) and general.architecture (a short [A-Za-z0-9_.-] string, if present).
 * 'path' is borrowed. On success '*out' owns the mapping; release it with dc_gguf_close().
 * Returns 0; -errno when the file can't be opened, read or mapped; DC_EINVAL when it is not a
 * regular file; DC_ENOMEM; or DC_ECORRUPT with dc_gguf_error() naming the first offending field
 * and its offset. '*out' is NULL on failure.
 */
DC_MUST_CHECK int dc_gguf_open(const char *path, struct dc_gguf **out);

/*
 * Same validation on a buffer in memory (tests, fuzzing). 'buf' is borrowed and must outlive
 * the returned object, which points into it.
 */
DC_MUST_CHECK int dc_gguf_open_mem(const void *buf, size_t len, struct dc_gguf **out);

/* Unmaps and frees. NULL is a no-op. */
void dc_gguf_close(struct dc_gguf *g);

/*
 * Describes the last failure of dc_gguf_open*() on the calling thread, e.g. "tensor 3
 * 'blk.0.attn_q.weight': data [4096, 8192) runs past the end of the file (6000 bytes) at offset
 * 1234"; "" when the last open succeeded. dc_gguf_error_offset() is that file offset. The string
 * is thread-local and valid until the thread's next open.
 */
const char *dc_gguf_error(void);
uint64_t dc_gguf_error_offset(void);

/* File facts. */
uint32_t dc_gguf_version(const struct dc_gguf *g);
uint64_t dc_gguf_file_size(const struct dc_gguf *g);
uint32_t dc_gguf_alignment(const struct dc_gguf *g);
/* Offset of the tensor data section (0 when the file has no tensors). */
uint64_t dc_gguf_data_offset(const struct dc_gguf *g);

/* general.architecture ("llama", "qwen2", "bert", ...), or NULL when absent. Borrowed. */
const char *dc_gguf_architecture(const struct dc_gguf *g);
/* general.name (cut at an embedded NUL), or NULL when absent. Borrowed. */
const char *dc_gguf_name(const struct dc_gguf *g);
/* Sum of all tensors' element counts (0 for a vocabulary-only file). */
uint64_t dc_gguf_param_count(const struct dc_gguf *g);

/*
 * general.file_type (a llama_ftype value) in '*ftype'. Returns 0, DC_ENOENT when absent, or
 * DC_EINVAL when it is not a non-negative integer.
 */
DC_MUST_CHECK int dc_gguf_file_type(const struct dc_gguf *g, uint32_t *ftype);
/* "Q4_K_M", "F16", ... for a llama_ftype value; NULL when unknown. Static. */
const char *dc_gguf_ftype_name(uint32_t ftype);
/*
 * The file's quantization as people name it: the name of general.file_type when known,
 * otherwise the type holding most bytes among matrices ("Q8_0", "F32"), otherwise "unknown".
 * Static string.
 */
const char *dc_gguf_quantization(const struct dc_gguf *g);
/*
 * <architecture>.context_length, the training context, in '*n_ctx'. Returns 0, DC_ENOENT when
 * there is no architecture or no such key, or DC_EINVAL when it is not a positive integer.
 */
DC_MUST_CHECK int dc_gguf_context_length(const struct dc_gguf *g, uint64_t *n_ctx);

/* Metadata entries in file order; dc_gguf_kv_at() returns NULL past the end. */
size_t dc_gguf_kv_count(const struct dc_gguf *g);
const struct dc_gguf_kv *dc_gguf_kv_at(const struct dc_gguf *g, size_t i);
/* Looks a key up (binary search). NULL when absent. */
const struct dc_gguf_kv *dc_gguf_find(const struct dc_gguf *g, const char *key);

/*
 * Typed lookups. Each returns 0, DC_ENOENT when the key is absent, or DC_EINVAL when the value
 * has another type (or, for _get_uint/_get_int, does not fit). _get_uint and _get_int accept
 * any integer type; _get_float accepts FLOAT32 and FLOAT64; strings point into the mapping.
 */
DC_MUST_CHECK int dc_gguf_get_str(const struct dc_gguf *g, const char *key,
                                  struct dc_gguf_str *out);
DC_MUST_CHECK int dc_gguf_get_uint(const struct dc_gguf *g, const char *key, uint64_t *out);
DC_MUST_CHECK int dc_gguf_get_int(const struct dc_gguf *g, const char *key, int64_t *out);
DC_MUST_CHECK int dc_gguf_get_float(const struct dc_gguf *g, const char *key, double *out);
DC_MUST_CHECK int dc_gguf_get_bool(const struct dc_gguf *g, const char *key, bool *out);

/*
 * Array access on an entry. dc_gguf_arr_int/_float read element 'i' of an integer or float
 * array (DC_EINVAL for another type or a value that does not fit, DC_ENOENT past the end).
 * dc_gguf_arr_next_str walks a string array: start '*cursor' at 0; each call stores the next
 * element and returns 0, then DC_ENOENT at the end (DC_EINVAL when not a string array).
 */
DC_MUST_CHECK int dc_gguf_arr_int(const struct dc_gguf_kv *kv, uint64_t i, int64_t *out);
DC_MUST_CHECK int dc_gguf_arr_float(const struct dc_gguf_kv *kv, uint64_t i, double *out);
DC_MUST_CHECK int dc_gguf_arr_next_str(const struct dc_gguf_kv *kv, uint64_t *cursor,
                                       struct dc_gguf_str *out);

/* Tensors in file order; NULL past the end. dc_gguf_find_tensor: NULL when absent. */
size_t dc_gguf_tensor_count(const struct dc_gguf *g);
const struct dc_gguf_tensor *dc_gguf_tensor_at(const struct dc_gguf *g, size_t i);
const struct dc_gguf_tensor *dc_gguf_find_tensor(const struct dc_gguf *g, const char *name);
/* The tensor's data inside the mapping (n_bytes long). */
const void *dc_gguf_tensor_data(const struct dc_gguf *g, const struct dc_gguf_tensor *t);

/* ggml tensor types: lower-case name ("q4_K") or NULL for an unknown/removed id. */
const char *dc_gguf_ggml_type_name(uint32_t type);
/* Elements per block and bytes per block; false for an unknown/removed id. */
bool dc_gguf_ggml_type_size(uint32_t type, uint32_t *block_elems, uint32_t *block_bytes);
/* "uint32", "string", ... for a metadata type; "?" when unknown. */
const char *dc_gguf_type_name(enum dc_gguf_type t);

#endif

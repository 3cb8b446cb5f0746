/* SPDX-License-Identifier: MIT */
/*
 * registry_test.c - the model registry (src/model/registry.c, probe.c): listing a models
 * folder of gguf-gen models, a corrupt file and a non-GGUF name; sha256 against an independent
 * computation; the sha256 cache (a second open hashes nothing, an edit that keeps size and mtime
 * is trusted, a new mtime rehashes); load isolation (GGUF files our validator accepts but
 * llama.cpp aborts or fails on are refused through the probe child while this process lives
 * on, and the refusal is remembered); and, through the engine, acquire/release with LRU
 * unloading under a small memory budget that never unloads a model in use.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "base/base.h"
#include "model/engine.h"
#include "model/model.h"
#include "model/registry_int.h"
#include "gen_util.h"

static char tmpdir[64];

static char *tmp_path(const char *name)
{
    char *p = dc_asprintf("%s/%s", tmpdir, name);
    assert_non_null(p);
    return p;
}

/* A tiny llama model (64 wide, 2 layers): ~100 KB, loads in milliseconds. */
static void gen_tiny(const char *path, const char *type, const char *seed)
{
    assert_int_equal(run_gen("--arch", "llama", "--dim", "64", "--layers", "2", "--heads", "4",
                             "--kv-heads", "2", "--vocab", "320", "--ctx", "256", "--type", type,
                             "--seed", seed, "--threads", "1", "-o", path, NULL),
                     0);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* sha256 of a file computed here in one shot, independently of dc_sha256_file's streaming. */
static void sha256_oneshot(const char *path, char hex[65])
{
    unsigned char d[crypto_hash_sha256_BYTES];
    size_t n;
    uint8_t *p = read_all(path, &n);

    crypto_hash_sha256(d, p, n);
    sodium_bin2hex(hex, 65, d, sizeof(d));
    free(p);
}

static const struct dc_model_entry *find_entry(const struct dc_model_entry *v, size_t n,
                                               const char *id)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].id, id) == 0)
            return &v[i];
    }
    return NULL;
}

/* Makes a models folder 'sub' with the given tiny models (copied from the shared ones). */
static char *models_dir(const char *sub)
{
    char *d = tmp_path(sub);
    assert_int_equal(mkdir(d, 0755), 0);
    return d;
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    uint8_t *p = read_all(from, &n);
    write_file(to, p, n);
    free(p);
}

static char *in_dir(const char *dir, const char *name)
{
    char *p = dc_asprintf("%s/%s", dir, name);
    assert_non_null(p);
    return p;
}

/*
 * Writes a copy of GGUF 'from' to 'to' with one uint32 metadata value replaced: a file that
 * stays structurally valid (same size, same layout) but says something else to llama.cpp.
 */
static void patch_u32(const char *from, const char *to, const char *key, uint32_t v)
{
    size_t n;
    uint8_t *p = read_all(from, &n);
    struct dc_gguf *g;
    const struct dc_gguf_kv *kv;
    size_t off;

    assert_int_equal(dc_gguf_open_mem(p, n, &g), 0);
    kv = dc_gguf_find(g, key);
    assert_non_null(kv);
    assert_int_equal(kv->type, DC_GGUF_UINT32);
    off = (size_t)(kv->value - p);
    dc_gguf_close(g);
    memcpy(p + off, &v, 4); /* little-endian host (x86-64, arm64) */
    write_file(to, p, n);
    assert_int_equal(dc_gguf_open(to, &g), 0); /* our validator still accepts it */
    dc_gguf_close(g);
    free(p);
}

/* Renames tensor 'name' by changing its last character: llama.cpp then misses a tensor. */
static void patch_tensor_name(const char *from, const char *to, const char *name)
{
    size_t n;
    uint8_t *p = read_all(from, &n);
    struct dc_gguf *g;
    const struct dc_gguf_tensor *t;
    size_t off;

    assert_int_equal(dc_gguf_open_mem(p, n, &g), 0);
    t = dc_gguf_find_tensor(g, name);
    assert_non_null(t);
    off = (size_t)t->info_offset + 8 + strlen(name) - 1; /* u64 length, then the name */
    dc_gguf_close(g);
    assert_int_equal(p[off], (uint8_t)name[strlen(name) - 1]);
    p[off] = 'X';
    write_file(to, p, n);
    assert_int_equal(dc_gguf_open(to, &g), 0);
    dc_gguf_close(g);
    free(p);
}

static char *tiny_a, *tiny_b, *tiny_q8;

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/dc-registry-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    if (sodium_init() < 0)
        return -1;
    tiny_a = dc_asprintf("%s/tiny-a.gguf", tmpdir);
    tiny_b = dc_asprintf("%s/tiny-b.gguf", tmpdir);
    tiny_q8 = dc_asprintf("%s/tiny-q8.gguf", tmpdir);
    gen_tiny(tiny_a, "f32", "1");
    gen_tiny(tiny_b, "f32", "2");
    gen_tiny(tiny_q8, "q8_0", "3");
    return 0;
}

static int teardown(void **state)
{
    char *cmd = dc_asprintf("rm -rf '%s'", tmpdir);
    (void)state;
    if (cmd != NULL && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    dc_free(cmd);
    dc_free(tiny_a);
    dc_free(tiny_b);
    dc_free(tiny_q8);
    return 0;
}

static const struct dc_registry_config base_cfg = {
    .engine = {.n_ctx_per_slot = 128, .n_parallel = 2, .n_batch = 64, .n_threads = 1},
};

/* ---- listing ---- */

static void test_list(void **state)
{
    char *dir = models_dir("list"), *a = in_dir(dir, "alpha.gguf"), *q = in_dir(dir, "beta.gguf");
    char *bad = in_dir(dir, "broken.gguf"), *txt = in_dir(dir, "notes.txt");
    struct dc_registry_config cfg = base_cfg;
    struct dc_registry *r;
    struct dc_model_entry *v;
    const struct dc_model_entry *e;
    char hex[65];
    size_t n;
    struct stat st;
    /* d + 3dd... as model_test's formula: untied output, vocab 320, ff 4*64 */
    const uint64_t d = 64, l = 2, dkv = 32, ff = 256, voc = 320;
    const uint64_t n_params =
        2 * d * voc + d + l * (d + d * d + 2 * d * dkv + d * d + d + 3 * d * ff);

    (void)state;
    copy_file(tiny_a, a);
    copy_file(tiny_q8, q);
    write_file(bad, "GGUF\x03\0\0\0garbage", 15);
    write_file(txt, "not a model", 11);

    cfg.models_dir = dir;
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_int_equal(n, 3);
    /* The first usable file by name is the default, listed first. */
    assert_string_equal(v[0].id, "alpha");
    assert_true(v[0].is_default);
    e = find_entry(v, n, "alpha");
    assert_non_null(e);
    assert_string_equal(e->arch, "llama");
    assert_string_equal(e->quantization, "F32");
    assert_int_equal(e->n_params, n_params);
    assert_int_equal(e->n_ctx_train, 256);
    assert_int_equal(stat(a, &st), 0);
    assert_int_equal(e->size_bytes, (uint64_t)st.st_size);
    assert_int_equal(e->mtime, (int64_t)st.st_mtim.tv_sec);
    assert_null(e->error);
    assert_false(e->loaded);
    sha256_oneshot(a, hex);
    assert_string_equal(e->sha256, hex);

    e = find_entry(v, n, "beta");
    assert_non_null(e);
    assert_string_equal(e->quantization, "Q8_0");
    assert_false(e->is_default);
    sha256_oneshot(q, hex);
    assert_string_equal(e->sha256, hex);

    /* The corrupt file is listed with the validator's reason, never hashed or default. */
    e = find_entry(v, n, "broken");
    assert_non_null(e);
    assert_non_null(e->error);
    assert_non_null(strstr(e->error, "corrupt"));
    assert_null(e->arch);
    assert_string_equal(e->sha256, "");
    assert_false(e->is_default);
    dc_model_entries_free(v, n);

    /* Acquiring it (or an unknown id) fails cleanly without loading anything. */
    {
        struct dc_engine *eng = (struct dc_engine *)1;
        char *err = NULL;
        assert_int_equal(dc_registry_acquire(r, "broken", &eng, &err), DC_ECORRUPT);
        assert_null(eng);
        assert_non_null(err);
        assert_non_null(strstr(err, "broken.gguf"));
        dc_free(err);
        assert_int_equal(dc_registry_acquire(r, "nope", &eng, &err), DC_ENOENT);
        assert_non_null(strstr(err, "nope"));
        dc_free(err);
        assert_int_equal(dc_registry_probe_count(r), 0);
    }
    dc_registry_close(r);

    /* A configured default outside the folder comes first; one with a folder file's id
     * shadows it. */
    cfg.default_model = tiny_b;
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].id, "tiny-b");
    assert_string_equal(v[0].path, tiny_b);
    assert_true(v[0].is_default);
    for (size_t i = 1; i < n; i++)
        assert_false(v[i].is_default);
    dc_model_entries_free(v, n);
    dc_registry_close(r);

    /* A missing folder is an empty registry; a missing default is listed with its error. */
    cfg.models_dir = "/nonexistent/models";
    cfg.default_model = "/nonexistent/m.gguf";
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_true(v[0].is_default);
    assert_non_null(strstr(v[0].error, "No such file"));
    dc_model_entries_free(v, n);
    dc_registry_close(r);

    dc_free(dir);
    dc_free(a);
    dc_free(q);
    dc_free(bad);
    dc_free(txt);
}

/* dc_sha256_file against a one-shot hash, also for an empty file and a missing one. */
static void test_sha256(void **state)
{
    char *empty = tmp_path("empty.bin"), hex[65], ref[65];

    (void)state;
    assert_int_equal(dc_sha256_file(tiny_q8, hex), 0);
    sha256_oneshot(tiny_q8, ref);
    assert_string_equal(hex, ref);
    write_file(empty, "", 0);
    assert_int_equal(dc_sha256_file(empty, hex), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(dc_sha256_file("/nonexistent/x", hex), DC_ENOENT);
    dc_free(empty);
}

/* no_hash + dc_registry_hash_missing: the daemon's way (hashes off the start-up path), cached
 * like a scan's, and cancellable. */
static void test_hash_missing(void **state)
{
    char *dir = models_dir("hashlater"), *a = in_dir(dir, "a.gguf"), *b = in_dir(dir, "b.gguf");
    char *cache = tmp_path("hashlater.json"), ref[65];
    struct dc_registry_config cfg = base_cfg;
    struct dc_registry *r;
    struct dc_model_entry *v;
    atomic_bool stop;
    size_t n;

    (void)state;
    copy_file(tiny_a, a);
    copy_file(tiny_b, b);
    cfg.models_dir = dir;
    cfg.cache_path = cache;
    cfg.no_hash = true;
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_hash_count(r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_string_equal(find_entry(v, n, "b")->sha256, "");
    dc_model_entries_free(v, n);

    /* Already told to stop: gives up before hashing anything. */
    atomic_init(&stop, true);
    assert_int_equal(dc_registry_hash_missing(r, &stop), DC_ECANCELED);
    assert_int_equal(dc_registry_hash_count(r), 0);

    atomic_store(&stop, false);
    assert_int_equal(dc_registry_hash_missing(r, &stop), 0);
    assert_int_equal(dc_registry_hash_count(r), 2);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    sha256_oneshot(b, ref);
    assert_string_equal(find_entry(v, n, "b")->sha256, ref);
    dc_model_entries_free(v, n);
    /* Nothing left: a second call hashes nothing. */
    assert_int_equal(dc_registry_hash_missing(r, NULL), 0);
    assert_int_equal(dc_registry_hash_count(r), 2);
    dc_registry_close(r);

    /* The hashes reached the cache file. */
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_string_equal(find_entry(v, n, "b")->sha256, ref);
    dc_model_entries_free(v, n);
    dc_registry_close(r);
    dc_free(dir);
    dc_free(a);
    dc_free(b);
    dc_free(cache);
}

/*
 * The constructor and the listing under failed allocations: fail the 1st, 2nd, ... allocation;
 * each attempt fails cleanly with DC_ENOMEM (ASan reports any leak) until one succeeds.
 */
static void test_alloc_failures(void **state)
{
    char *dir = models_dir("alloc"), *a = in_dir(dir, "a.gguf"), *bad = in_dir(dir, "bad.gguf");
    struct dc_registry_config cfg = base_cfg;
    struct dc_registry *r;
    struct dc_model_entry *v;
    size_t n;
    bool opened = false;
    int rc;

    (void)state;
    copy_file(tiny_q8, a);
    write_file(bad, "GGUF\x03\0\0\0junk", 12);
    cfg.models_dir = dir;
    cfg.default_model = tiny_b;
    cfg.no_probe = true; /* no prober process: every allocation is on this thread */
    for (long i = 0; i < 10000 && !opened; i++) {
        dc_alloc_fail_after(i);
        rc = dc_registry_open(&cfg, &r);
        dc_alloc_fail_after(-1);
        if (rc == 0) {
            opened = true;
            break;
        }
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(r);
    }
    assert_true(opened);
    for (long i = 0; i < 10000; i++) {
        dc_alloc_fail_after(i);
        rc = dc_registry_list(r, &v, &n);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(v);
    }
    assert_int_equal(n, 3);
    dc_model_entries_free(v, n);
    dc_registry_close(r);
    dc_free(dir);
    dc_free(a);
    dc_free(bad);
}

/* ---- the sha256 cache ---- */

static void test_cache(void **state)
{
    char *dir = models_dir("cache"), *a = in_dir(dir, "a.gguf"), *b = in_dir(dir, "b.gguf");
    char *cache = tmp_path("cache.json"), hex_b[65], ref[65];
    struct dc_registry_config cfg = base_cfg;
    struct dc_registry *r;
    struct dc_model_entry *v;
    struct timespec times[2];
    struct stat st;
    size_t n;
    uint8_t *p;
    size_t len;

    (void)state;
    copy_file(tiny_a, a);
    copy_file(tiny_b, b);
    cfg.models_dir = dir;
    cfg.cache_path = cache;

    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_hash_count(r), 2);
    /* A rescan in the same registry hashes nothing either. */
    assert_int_equal(dc_registry_scan(r), 0);
    assert_int_equal(dc_registry_hash_count(r), 2);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    memcpy(hex_b, find_entry(v, n, "b")->sha256, 65);
    dc_model_entries_free(v, n);
    dc_registry_close(r);
    sha256_oneshot(b, ref);
    assert_string_equal(hex_b, ref);

    /* A second registry reads the hashes from the cache file. */
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_hash_count(r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_string_equal(find_entry(v, n, "b")->sha256, ref);
    dc_model_entries_free(v, n);
    dc_registry_close(r);

    /* The mtime trick: change content but keep size and mtime. The cache is trusted, so the
     * old hash is reported: proof that nothing was rehashed. */
    assert_int_equal(stat(b, &st), 0);
    p = read_all(b, &len);
    p[len - 1] ^= 0x55;
    write_file(b, p, len);
    free(p);
    times[0] = st.st_atim;
    times[1] = st.st_mtim;
    assert_int_equal(utimensat(AT_FDCWD, b, times, 0), 0);
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_hash_count(r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_string_equal(find_entry(v, n, "b")->sha256, ref);
    dc_model_entries_free(v, n);
    dc_registry_close(r);

    /* A new mtime invalidates the record: one file rehashed, now with the new content's hash. */
    times[1].tv_sec += 10;
    assert_int_equal(utimensat(AT_FDCWD, b, times, 0), 0);
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_hash_count(r), 1);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    sha256_oneshot(b, ref);
    assert_string_equal(find_entry(v, n, "b")->sha256, ref);
    assert_string_not_equal(find_entry(v, n, "b")->sha256, hex_b);
    dc_model_entries_free(v, n);
    dc_registry_close(r);

    /* A corrupt cache file is ignored (everything is rehashed), then rewritten. */
    write_file(cache, "{not json", 9);
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_hash_count(r), 2);
    dc_registry_close(r);
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_hash_count(r), 0);
    dc_registry_close(r);

    dc_free(dir);
    dc_free(a);
    dc_free(b);
    dc_free(cache);
}

/* ---- load isolation ---- */

/*
 * Files our validator accepts but llama.cpp does not: llama.block_count = 0 trips
 * GGML_ASSERT(hparams.n_layer_all > 0 ...) in llama_model::load_hparams, which abort()s; a
 * renamed tensor makes llama.cpp's loader throw "missing tensor" and return NULL. The probe
 * child takes both; this process must live on and refuse the files.
 */
static void test_probe(void **state)
{
    char *abort_file = tmp_path("zero-layers.gguf"), *missing = tmp_path("missing-tensor.gguf");
    char *err = NULL;

    (void)state;
    patch_u32(tiny_a, abort_file, "llama.block_count", 0);
    patch_tensor_name(tiny_a, missing, "output_norm.weight");

    assert_int_equal(dc_model_probe(tiny_a, 1, 60000, &err), 0);
    assert_null(err);

    assert_int_equal(dc_model_probe(abort_file, 1, 60000, &err), DC_EUNSUPPORTED);
    assert_non_null(err);
    assert_non_null(strstr(err, "llama.cpp rejected"));
    assert_non_null(strstr(err, "zero-layers.gguf"));
    assert_non_null(strstr(err, "signal 6"));
    assert_non_null(strstr(err, "n_layer"));
    dc_free(err);

    assert_int_equal(dc_model_probe(missing, 1, 60000, &err), DC_EUNSUPPORTED);
    assert_non_null(err);
    assert_non_null(strstr(err, "failed to load"));
    assert_non_null(strstr(err, "output_norm"));
    dc_free(err);

    /* A probe that cannot finish in time is killed and reported. */
    assert_int_equal(dc_model_probe(tiny_a, 1, 1, &err), DC_EUNSUPPORTED);
    assert_non_null(strstr(err, "did not finish"));
    dc_free(err);

    dc_free(abort_file);
    dc_free(missing);
}

/* Through the registry: refused, remembered in memory and in the cache, never retried. */
static void test_probe_registry(void **state)
{
    char *dir = models_dir("hostile"), *h = in_dir(dir, "hostile.gguf");
    char *cache = tmp_path("hostile.json"), *err = NULL;
    struct dc_registry_config cfg = base_cfg;
    struct dc_registry *r;
    struct dc_engine *eng;
    struct dc_model_entry *v;
    size_t n;

    (void)state;
    patch_u32(tiny_a, h, "llama.block_count", 0);
    cfg.models_dir = dir;
    cfg.cache_path = cache;
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_null(v[0].error); /* structurally valid: only llama.cpp can tell */
    dc_model_entries_free(v, n);

    assert_int_equal(dc_registry_acquire(r, "local", &eng, &err), DC_EUNSUPPORTED);
    assert_null(eng);
    assert_non_null(strstr(err, "signal 6"));
    dc_free(err);
    assert_int_equal(dc_registry_probe_count(r), 1);
    assert_int_equal(dc_registry_acquire(r, "hostile", &eng, &err), DC_EUNSUPPORTED);
    dc_free(err);
    assert_int_equal(dc_registry_probe_count(r), 1);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_non_null(strstr(v[0].error, "llama.cpp rejected"));
    dc_model_entries_free(v, n);
    dc_registry_close(r);

    /* A new registry knows the verdict from the cache: no child at all. */
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_non_null(v[0].error);
    assert_non_null(strstr(v[0].error, "signal 6"));
    dc_model_entries_free(v, n);
    assert_int_equal(dc_registry_acquire(r, "hostile", &eng, &err), DC_EUNSUPPORTED);
    dc_free(err);
    assert_int_equal(dc_registry_probe_count(r), 0);
    /* Refused files never serve "local": with no other file there is no default. */
    assert_int_equal(dc_registry_acquire(r, NULL, &eng, &err), DC_ENOENT);
    assert_non_null(strstr(err, "no default model"));
    dc_free(err);
    dc_registry_close(r);

    dc_free(dir);
    dc_free(h);
    dc_free(cache);
}

/* ---- acquire, release, LRU (needs the engine) ---- */

static bool is_loaded(struct dc_registry *r, const char *id)
{
    struct dc_model_entry *v;
    size_t n;
    bool loaded;

    assert_int_equal(dc_registry_list(r, &v, &n), 0);
    assert_non_null(find_entry(v, n, id));
    loaded = find_entry(v, n, id)->loaded;
    dc_model_entries_free(v, n);
    return loaded;
}

static void test_acquire(void **state)
{
    char *dir = models_dir("acquire"), *a = in_dir(dir, "a.gguf"), *b = in_dir(dir, "b.gguf");
    char *c = in_dir(dir, "c.gguf"), *cache = tmp_path("acquire.json"), *err = NULL;
    struct dc_registry_config cfg = base_cfg;
    struct dc_registry *r;
    struct dc_engine *ea, *ea2, *eb, *ec;
    const struct dc_engine_info *info;
    uint64_t cost;

    (void)state;
    copy_file(tiny_a, a);
    copy_file(tiny_b, b);
    copy_file(tiny_a, c);
    cfg.models_dir = dir;
    cfg.cache_path = cache;

    /* Unlimited: load on demand, once; the first load goes through the probe child. */
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_acquire(r, "local", &ea, &err), 0);
    assert_null(err);
    assert_non_null(ea);
    assert_int_equal(dc_registry_probe_count(r), 1);
    info = dc_engine_info(ea);
    assert_string_equal(info->path, a);
    cost = info->size_bytes + info->state_bytes;
    assert_int_equal(dc_registry_acquire(r, "a", &ea2, &err), 0);
    assert_ptr_equal(ea, ea2);
    assert_true(is_loaded(r, "a"));
    dc_registry_release(r, ea);
    dc_registry_release(r, ea2);
    assert_true(is_loaded(r, "a")); /* idle models stay loaded */
    dc_registry_close(r);

    /* Budget for one model (all three are the same shape): with 'a' in use, 'b' cannot load
     * and 'a' is not unloaded; once 'a' is idle, 'b' replaces it. The cache remembers the
     * probes, so no child runs again for 'a'. */
    cfg.memory_budget_bytes = cost + cost / 2;
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_acquire(r, "a", &ea, &err), 0);
    assert_int_equal(dc_registry_probe_count(r), 0);
    assert_int_equal(dc_registry_acquire(r, "b", &eb, &err), DC_ELIMIT);
    assert_null(eb);
    assert_non_null(err);
    assert_non_null(strstr(err, "budget"));
    dc_free(err);
    err = NULL;
    assert_true(is_loaded(r, "a"));
    assert_false(is_loaded(r, "b"));
    dc_registry_release(r, ea);
    assert_int_equal(dc_registry_acquire(r, "b", &eb, &err), 0);
    assert_false(is_loaded(r, "a"));
    assert_true(is_loaded(r, "b"));
    dc_registry_release(r, eb);
    /* LRU: b idle (most recent) ... c needs room, b goes; then a needs room, c goes. */
    assert_int_equal(dc_registry_acquire(r, "c", &ec, &err), 0);
    assert_false(is_loaded(r, "b"));
    dc_registry_release(r, ec);
    assert_int_equal(dc_registry_acquire(r, "a", &ea, &err), 0);
    assert_false(is_loaded(r, "c"));
    assert_true(is_loaded(r, "a"));
    dc_registry_release(r, ea);
    dc_registry_close(r);

    /* Budget for two: the least recently used idle one goes first. */
    cfg.memory_budget_bytes = 2 * cost + cost / 2;
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_acquire(r, "a", &ea, &err), 0);
    assert_int_equal(dc_registry_acquire(r, "b", &eb, &err), 0);
    dc_registry_release(r, eb); /* b idle first ... */
    dc_registry_release(r, ea); /* ... then a: b is the least recently used */
    assert_int_equal(dc_registry_acquire(r, "c", &ec, &err), 0);
    assert_true(is_loaded(r, "a"));
    assert_false(is_loaded(r, "b"));
    assert_true(is_loaded(r, "c"));
    dc_registry_release(r, ec);
    /* A model larger than the whole budget is refused up front. */
    dc_registry_close(r);
    cfg.memory_budget_bytes = 1024;
    assert_int_equal(dc_registry_open(&cfg, &r), 0);
    assert_int_equal(dc_registry_acquire(r, "a", &ea, &err), DC_ELIMIT);
    assert_non_null(strstr(err, "budget"));
    dc_free(err);
    dc_registry_close(r);

    dc_free(dir);
    dc_free(a);
    dc_free(b);
    dc_free(c);
    dc_free(cache);
}

/* Concurrent acquires of one unloaded model: one probe, one load, every caller the same engine;
 * a scan meanwhile keeps the loading entry. */
struct racer {
    struct dc_registry *r;
    struct dc_engine *e;
    int rc;
};

static void *race_acquire(void *arg)
{
    struct racer *x = arg;
    char *err = NULL;

    x->rc = dc_registry_acquire(x->r, "local", &x->e, &err);
    if (x->rc != 0)
        fprintf(stderr, "acquire: %s\n", err ? err : dc_strerror(x->rc));
    dc_free(err);
    return NULL;
}

static void test_concurrent(void **state)
{
    char *dir = models_dir("race"), *a = in_dir(dir, "a.gguf");
    struct dc_registry_config cfg = base_cfg;
    struct racer x[4];
    pthread_t t[4];
    struct dc_model_entry *v;
    size_t n;

    (void)state;
    copy_file(tiny_a, a);
    cfg.models_dir = dir;
    assert_int_equal(dc_registry_open(&cfg, &x[0].r), 0);
    for (int i = 0; i < 4; i++) {
        x[i].r = x[0].r;
        assert_int_equal(pthread_create(&t[i], NULL, race_acquire, &x[i]), 0);
    }
    assert_int_equal(dc_registry_scan(x[0].r), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(x[i].rc, 0);
        assert_ptr_equal(x[i].e, x[0].e);
    }
    assert_int_equal(dc_registry_probe_count(x[0].r), 1);
    assert_int_equal(dc_registry_list(x[0].r, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_true(v[0].loaded);
    assert_int_equal(v[0].refs, 4);
    assert_true(v[0].state_bytes > 0);
    dc_model_entries_free(v, n);
    for (int i = 0; i < 4; i++)
        dc_registry_release(x[0].r, x[i].e);
    assert_int_equal(dc_registry_list(x[0].r, &v, &n), 0);
    assert_int_equal(v[0].refs, 0);
    dc_model_entries_free(v, n);
    dc_registry_close(x[0].r);
    dc_free(dir);
    dc_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256),         cmocka_unit_test(test_list),
        cmocka_unit_test(test_cache),          cmocka_unit_test(test_probe),
        cmocka_unit_test(test_probe_registry), cmocka_unit_test(test_acquire),
        cmocka_unit_test(test_concurrent),     cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_hash_missing),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

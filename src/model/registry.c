/* SPDX-License-Identifier: MIT */
/*
 * registry.c - the models folder as the daemon sees it: which GGUF files there are, what each
 * is (from our validator, never from llama.cpp), its sha256, and which are loaded. Loads happen
 * on demand in dc_registry_acquire under a memory budget, unloading the least recently used
 * idle model first; a model in use is never unloaded.
 *
 * Locking. One mutex guards the entry list, the counters and the cache document. Slow work
 * happens without it: hashing files during a scan, and the probe child + dc_engine_open during
 * an acquire (the entry is marked 'loading' meanwhile, counted against the budget, and other
 * acquirers of it wait on the condition variable). Closing an idle engine to make room happens
 * under the mutex: an idle engine has no requests, so its close is quick. Scans are serialized
 * by a second mutex so two never merge at once.
 *
 * Cache file (cache_path, JSON, written atomically):
 *   {"version": 1, "files": {"<path>": {"size": N, "mtime_ns": N, "sha256": "hex",
 *                                      "probe": "ok" | "rejected", "probe_error": "..."}}}
 * An entry counts only while the file's size and mtime match, so an edited file is rehashed
 * and probed again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "model/engine.h"
#include "model/model.h"
#include "model/registry_int.h"

#define REG_PROBE_TIMEOUT_MS 300000u

struct reg_model {
    struct dc_model_entry e; /* owned strings; e.loaded and e.refs are filled in by list */
    uint64_t mtime_ns;
    uint64_t cost;   /* bytes it takes loaded: file size until a load tells better */
    bool corrupt;    /* e.error is the validator's */
    bool rejected;   /* e.error is llama.cpp's (probe) */
    bool probed;     /* llama.cpp loaded it once (probe child or in-process) */
    bool loading;    /* an acquire is loading it without the lock */
    bool unhashable; /* dc_registry_hash_missing could not read it: don't retry */
    struct dc_engine *engine;
    uint64_t last_used; /* registry tick of the last acquire or release */
};

struct dc_registry {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* an entry's 'loading' went false */
    pthread_mutex_t scan_mu;
    char *models_dir, *default_model, *cache_path;
    uint64_t budget;
    uint32_t probe_timeout_ms;
    bool no_probe, no_hash;
    struct dc_engine_config engine;
    struct dc_prober *prober; /* forks the probe children; NULL with no_probe */
    struct reg_model **models;
    size_t n_models;
    json_t *cache; /* the "files" object */
    uint64_t tick;
    uint64_t hash_count, probe_count;
};

/* ---- helpers ---- */

int dc_sha256_file(const char *path, char hex[65])
{
    return dc_sha256_file_until(path, hex, NULL);
}

int dc_sha256_file_until(const char *path, char hex[65], const atomic_bool *stop)
{
    crypto_hash_sha256_state st;
    unsigned char digest[crypto_hash_sha256_BYTES];
    unsigned char *buf;
    int fd, rc = 0;

    if (sodium_init() < 0)
        return DC_ECRYPTO;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    buf = dc_malloc(1 << 20);
    if (buf == NULL) {
        close(fd);
        return DC_ENOMEM;
    }
    crypto_hash_sha256_init(&st);
    for (;;) {
        ssize_t got = read(fd, buf, 1 << 20);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -errno;
            break;
        }
        if (got == 0)
            break;
        if (stop != NULL && atomic_load(stop)) {
            rc = DC_ECANCELED;
            break;
        }
        crypto_hash_sha256_update(&st, buf, (unsigned long long)got);
    }
    dc_free(buf);
    close(fd);
    if (rc < 0)
        return rc;
    crypto_hash_sha256_final(&st, digest);
    sodium_bin2hex(hex, 65, digest, sizeof(digest));
    return 0;
}

static void entry_cleanup(struct dc_model_entry *e)
{
    dc_free(e->id);
    dc_free(e->path);
    dc_free(e->arch);
    dc_free(e->name);
    dc_free(e->quantization);
    dc_free(e->error);
    memset(e, 0, sizeof(*e));
}

static void model_free(struct reg_model *m)
{
    if (m == NULL)
        return;
    entry_cleanup(&m->e);
    dc_free(m);
}

void dc_model_entries_free(struct dc_model_entry *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        entry_cleanup(&v[i]);
    dc_free(v);
}

static int entry_copy(struct dc_model_entry *dst, const struct dc_model_entry *src)
{
    *dst = *src;
    dst->id = dst->path = dst->arch = dst->name = dst->quantization = dst->error = NULL;
#define DUP(f)                                                                                     \
    do {                                                                                           \
        if (src->f != NULL && (dst->f = dc_strdup(src->f)) == NULL)                                \
            goto err_nomem;                                                                        \
    } while (0)
    DUP(id);
    DUP(path);
    DUP(arch);
    DUP(name);
    DUP(quantization);
    DUP(error);
#undef DUP
    return 0;

err_nomem:
    entry_cleanup(dst);
    return DC_ENOMEM;
}

static bool has_gguf_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".gguf") == 0;
}

/* "dir/foo.gguf" -> "foo"; a name without .gguf stays whole. */
static char *id_from_path(const char *path)
{
    const char *base = strrchr(path, '/');
    size_t n;

    base = base ? base + 1 : path;
    n = strlen(base);
    if (has_gguf_suffix(base))
        n -= 5;
    return dc_strndup(base, n);
}

/* ---- the cache document ---- */

static void cache_load(struct dc_registry *r)
{
    json_t *doc, *files;

    r->cache = NULL;
    if (r->cache_path != NULL) {
        doc = json_load_file(r->cache_path, 0, NULL);
        files = json_is_object(doc) ? json_object_get(doc, "files") : NULL;
        if (json_is_object(files) && json_integer_value(json_object_get(doc, "version")) == 1)
            r->cache = json_incref(files);
        json_decref(doc);
    }
    if (r->cache == NULL)
        r->cache = json_object();
}

/* Writes the cache atomically (tmp + rename); failures only cost a rehash later. */
static void cache_save(struct dc_registry *r)
{
    json_t *doc;
    char *tmp;

    if (r->cache_path == NULL || r->cache == NULL)
        return;
    tmp = dc_asprintf("%s.tmp.%ld", r->cache_path, (long)getpid());
    doc = json_pack("{s:i, s:O}", "version", 1, "files", r->cache);
    if (tmp != NULL && doc != NULL) {
        /* Mode 0600 whatever the umask: the cache lives in state_dir with the node's key. */
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        bool ok = fd >= 0 && json_dumpfd(doc, fd, JSON_INDENT(1) | JSON_SORT_KEYS) == 0;

        if (fd >= 0)
            ok = close(fd) == 0 && ok;
        if (!ok || rename(tmp, r->cache_path) != 0)
            unlink(tmp);
    }
    json_decref(doc);
    dc_free(tmp);
}

/* The cache record of 'm' if it still describes the file (size + mtime), else NULL. */
static json_t *cache_lookup(struct dc_registry *r, const struct reg_model *m)
{
    json_t *rec = json_object_get(r->cache, m->e.path);

    if (!json_is_object(rec))
        return NULL;
    if ((uint64_t)json_integer_value(json_object_get(rec, "size")) != m->e.size_bytes ||
        (uint64_t)json_integer_value(json_object_get(rec, "mtime_ns")) != m->mtime_ns)
        return NULL;
    return rec;
}

/* Records what we know of 'm' (sha256, probe outcome). Called with the lock held. */
static void cache_store(struct dc_registry *r, const struct reg_model *m)
{
    json_t *rec;

    if (m->corrupt || (m->e.sha256[0] == '\0' && !m->probed && !m->rejected))
        return;
    rec = json_pack("{s:I, s:I, s:s}", "size", (json_int_t)m->e.size_bytes, "mtime_ns",
                    (json_int_t)m->mtime_ns, "sha256", m->e.sha256);
    if (rec == NULL)
        return;
    if (m->rejected) {
        json_object_set_new(rec, "probe", json_string("rejected"));
        json_object_set_new(rec, "probe_error", json_string(m->e.error ? m->e.error : ""));
    } else if (m->probed) {
        json_object_set_new(rec, "probe", json_string("ok"));
    }
    json_object_set_new(r->cache, m->e.path, rec);
}

/* ---- scanning ---- */

/* Reads one candidate file into a new entry: stat + validation, no hashing. */
static int model_read(const char *path, struct reg_model **out)
{
    struct reg_model *m = dc_calloc(1, sizeof(*m));
    struct dc_gguf *g = NULL;
    struct stat st;
    int rc;

    *out = NULL;
    if (m == NULL)
        return DC_ENOMEM;
    m->e.path = dc_strdup(path);
    m->e.id = id_from_path(path);
    if (m->e.path == NULL || m->e.id == NULL)
        goto err_nomem;
    if (stat(path, &st) != 0) {
        m->corrupt = true;
        m->e.error = dc_asprintf("%s: %s", path, strerror(errno));
        if (m->e.error == NULL)
            goto err_nomem;
        *out = m;
        return 0;
    }
    m->e.size_bytes = (uint64_t)st.st_size;
    m->e.mtime = (int64_t)st.st_mtim.tv_sec;
    m->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    m->cost = m->e.size_bytes;
    rc = dc_gguf_open(path, &g);
    if (rc == DC_ENOMEM)
        goto err_nomem;
    if (rc < 0) {
        m->corrupt = true;
        if (rc == DC_ECORRUPT)
            m->e.error = dc_asprintf("%s: corrupt GGUF: %s", path, dc_gguf_error());
        else
            m->e.error = dc_asprintf("%s: %s", path, dc_strerror(rc));
        if (m->e.error == NULL)
            goto err_nomem;
        *out = m;
        return 0;
    }
    {
        const char *arch = dc_gguf_architecture(g), *name = dc_gguf_name(g);
        uint64_t n_ctx = 0;
        m->e.arch = dc_strdup(arch ? arch : "unknown");
        m->e.name = dc_strdup(name && name[0] ? name : m->e.id);
        m->e.quantization = dc_strdup(dc_gguf_quantization(g));
        m->e.n_params = dc_gguf_param_count(g);
        if (dc_gguf_context_length(g, &n_ctx) == 0)
            m->e.n_ctx_train = n_ctx;
    }
    dc_gguf_close(g);
    if (m->e.arch == NULL || m->e.name == NULL || m->e.quantization == NULL)
        goto err_nomem;
    *out = m;
    return 0;

err_nomem:
    model_free(m);
    return DC_ENOMEM;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.gguf names of models_dir, sorted; a missing directory is an empty list. */
static int list_dir(const char *dir, char ***names_out, size_t *n_out)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *d;
    DIR *dp;
    int rc = 0;

    *names_out = NULL;
    *n_out = 0;
    if (dir == NULL)
        return 0;
    dp = opendir(dir);
    if (dp == NULL)
        return errno == ENOENT ? 0 : -errno;
    while ((d = readdir(dp)) != NULL) {
        if (d->d_name[0] == '.' || !has_gguf_suffix(d->d_name))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nn = dc_realloc(names, ncap * sizeof(*nn));
            if (nn == NULL) {
                rc = DC_ENOMEM;
                break;
            }
            names = nn;
            cap = ncap;
        }
        if ((names[n] = dc_strdup(d->d_name)) == NULL) {
            rc = DC_ENOMEM;
            break;
        }
        n++;
    }
    closedir(dp);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            dc_free(names[i]);
        dc_free(names);
        return rc;
    }
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_str);
    *names_out = names;
    *n_out = n;
    return 0;
}

/* Default first, then by id. */
static int cmp_model(const void *a, const void *b)
{
    const struct reg_model *x = *(struct reg_model *const *)a, *y = *(struct reg_model *const *)b;

    if (x->e.is_default != y->e.is_default)
        return x->e.is_default ? -1 : 1;
    return strcmp(x->e.id, y->e.id);
}

static struct reg_model *find_path(struct reg_model **v, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i] != NULL && strcmp(v[i]->e.path, path) == 0)
            return v[i];
    }
    return NULL;
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int dc_registry_scan(struct dc_registry *r)
{
    struct reg_model **fresh = NULL, **merged = NULL;
    size_t n_fresh = 0, n_merged = 0;
    char **names = NULL;
    size_t n_names = 0;
    int rc;

    pthread_mutex_lock(&r->scan_mu);
    rc = list_dir(r->models_dir, &names, &n_names);
    if (rc < 0)
        goto out_unlock_scan;
    fresh = dc_calloc(n_names + 1, sizeof(*fresh));
    if (fresh == NULL) {
        rc = DC_ENOMEM;
        goto out_names;
    }

    /* 1. Read every candidate (no lock: validation reads the whole tensor table). */
    if (r->default_model != NULL) {
        rc = model_read(r->default_model, &fresh[n_fresh]);
        if (rc < 0)
            goto out_fresh;
        fresh[n_fresh++]->e.is_default = true;
    }
    for (size_t i = 0; i < n_names; i++) {
        char *path = dc_asprintf("%s/%s", r->models_dir, names[i]);
        struct reg_model *m;
        bool dup = false;

        if (path == NULL) {
            rc = DC_ENOMEM;
            goto out_fresh;
        }
        /* The default model may live in models_dir too: list it once. A different file
         * with the default's id is shadowed by it. */
        if (r->default_model != NULL) {
            char *id = id_from_path(path);
            dup =
                id == NULL || strcmp(id, fresh[0]->e.id) == 0 || same_file(path, r->default_model);
            dc_free(id);
        }
        if (dup) {
            dc_free(path);
            continue;
        }
        rc = model_read(path, &m);
        dc_free(path);
        if (rc < 0)
            goto out_fresh;
        fresh[n_fresh++] = m;
    }

    /* 2. Known facts from the cache and from the current entries; hash the rest unlocked. */
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n_fresh; i++) {
        struct reg_model *m = fresh[i], *old = find_path(r->models, r->n_models, m->e.path);
        json_t *rec;

        if (m->corrupt)
            continue;
        if (old != NULL && !old->corrupt && old->e.size_bytes == m->e.size_bytes &&
            old->mtime_ns == m->mtime_ns) {
            memcpy(m->e.sha256, old->e.sha256, sizeof(m->e.sha256));
            m->probed = old->probed;
            m->rejected = old->rejected;
            m->cost = old->cost;
            m->e.state_bytes = old->e.state_bytes;
            m->last_used = old->last_used;
            if (old->rejected && old->e.error != NULL)
                m->e.error = dc_strdup(old->e.error);
        } else if ((rec = cache_lookup(r, m)) != NULL) {
            const char *sha = json_string_value(json_object_get(rec, "sha256"));
            const char *probe = json_string_value(json_object_get(rec, "probe"));
            if (sha != NULL && strlen(sha) == 64)
                memcpy(m->e.sha256, sha, 65);
            if (probe != NULL && strcmp(probe, "ok") == 0)
                m->probed = true;
            if (probe != NULL && strcmp(probe, "rejected") == 0) {
                const char *why = json_string_value(json_object_get(rec, "probe_error"));
                m->rejected = true;
                m->e.error = dc_asprintf("%s", why && why[0] ? why : "rejected by llama.cpp");
            }
        }
        if (m->rejected && m->e.error == NULL) {
            pthread_mutex_unlock(&r->mu);
            rc = DC_ENOMEM;
            goto out_fresh;
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < n_fresh; i++) {
        struct reg_model *m = fresh[i];
        if (m->corrupt || m->e.sha256[0] != '\0' || r->no_hash)
            continue;
        rc = dc_sha256_file(m->e.path, m->e.sha256);
        if (rc == DC_ENOMEM)
            goto out_fresh;
        if (rc < 0)
            m->e.sha256[0] = '\0'; /* unreadable now: listed without a hash */
        pthread_mutex_lock(&r->mu);
        r->hash_count++;
        pthread_mutex_unlock(&r->mu);
    }

    /* 3. Merge: entries in use (loaded, loading) stay as they are. */
    pthread_mutex_lock(&r->mu);
    merged = dc_calloc(n_fresh + r->n_models + 1, sizeof(*merged));
    if (merged == NULL) {
        pthread_mutex_unlock(&r->mu);
        rc = DC_ENOMEM;
        goto out_fresh;
    }
    for (size_t i = 0; i < r->n_models; i++) {
        struct reg_model *old = r->models[i];
        if (old->engine != NULL || old->loading) {
            struct reg_model *m = find_path(fresh, n_fresh, old->e.path);
            if (m != NULL) {
                old->e.is_default = m->e.is_default;
                for (size_t j = 0; j < n_fresh; j++) {
                    if (fresh[j] == m)
                        fresh[j] = NULL;
                }
                model_free(m);
            } else {
                old->e.is_default = false;
            }
            merged[n_merged++] = old;
        } else {
            model_free(old);
        }
        r->models[i] = NULL;
    }
    for (size_t i = 0; i < n_fresh; i++) {
        if (fresh[i] != NULL)
            merged[n_merged++] = fresh[i];
        fresh[i] = NULL;
    }
    /* Without a configured default, the first usable file by name serves "local". */
    if (r->default_model == NULL) {
        struct reg_model *first = NULL;
        for (size_t i = 0; i < n_merged; i++) {
            merged[i]->e.is_default = false;
            if (merged[i]->e.error == NULL &&
                (first == NULL || strcmp(merged[i]->e.id, first->e.id) < 0))
                first = merged[i];
        }
        if (first != NULL)
            first->e.is_default = true;
    }
    if (n_merged > 1)
        qsort(merged, n_merged, sizeof(*merged), cmp_model);
    dc_free(r->models);
    r->models = merged;
    r->n_models = n_merged;
    /* The cache keeps only what is listed now. */
    json_object_clear(r->cache);
    for (size_t i = 0; i < n_merged; i++)
        cache_store(r, merged[i]);
    cache_save(r);
    pthread_mutex_unlock(&r->mu);
    rc = 0;

out_fresh:
    for (size_t i = 0; i < n_fresh; i++)
        model_free(fresh[i]);
    dc_free(fresh);
out_names:
    for (size_t i = 0; i < n_names; i++)
        dc_free(names[i]);
    dc_free(names);
out_unlock_scan:
    pthread_mutex_unlock(&r->scan_mu);
    return rc;
}

/* ---- open / close / list ---- */

int dc_registry_hash_missing(struct dc_registry *r, const atomic_bool *stop)
{
    for (;;) {
        char *path = NULL, hex[65];
        uint64_t size = 0, mtime_ns = 0;
        struct reg_model *m;
        int rc;

        /* One file at a time, unlocked while hashing: a scan may replace the entries meanwhile,
         * so the result is only kept for an entry that still describes the same file. */
        pthread_mutex_lock(&r->mu);
        for (size_t i = 0; i < r->n_models && path == NULL; i++) {
            m = r->models[i];
            if (m->corrupt || m->unhashable || m->e.sha256[0] != '\0')
                continue;
            path = dc_strdup(m->e.path);
            size = m->e.size_bytes;
            mtime_ns = m->mtime_ns;
            if (path == NULL) {
                pthread_mutex_unlock(&r->mu);
                return DC_ENOMEM;
            }
        }
        pthread_mutex_unlock(&r->mu);
        if (path == NULL)
            return 0;
        rc = dc_sha256_file_until(path, hex, stop);
        pthread_mutex_lock(&r->mu);
        m = find_path(r->models, r->n_models, path);
        if (m != NULL && m->e.size_bytes == size && m->mtime_ns == mtime_ns) {
            if (rc == 0) {
                memcpy(m->e.sha256, hex, sizeof(m->e.sha256));
                cache_store(r, m);
                cache_save(r);
            } else if (rc != DC_ECANCELED) {
                m->unhashable = true;
            }
        }
        r->hash_count += rc == 0;
        pthread_mutex_unlock(&r->mu);
        dc_free(path);
        if (rc == DC_ENOMEM || rc == DC_ECANCELED)
            return rc;
    }
}

int dc_registry_open(const struct dc_registry_config *cfg, struct dc_registry **out)
{
    struct dc_registry *r;
    int rc;

    *out = NULL;
    r = dc_calloc(1, sizeof(*r));
    if (r == NULL)
        return DC_ENOMEM;
    if ((cfg->models_dir && (r->models_dir = dc_strdup(cfg->models_dir)) == NULL) ||
        (cfg->default_model && (r->default_model = dc_strdup(cfg->default_model)) == NULL) ||
        (cfg->cache_path && (r->cache_path = dc_strdup(cfg->cache_path)) == NULL)) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    /* A trailing slash would double in every path. */
    if (r->models_dir != NULL) {
        size_t n = strlen(r->models_dir);
        while (n > 1 && r->models_dir[n - 1] == '/')
            r->models_dir[--n] = '\0';
    }
    r->budget = cfg->memory_budget_bytes;
    r->probe_timeout_ms = cfg->probe_timeout_ms ? cfg->probe_timeout_ms : REG_PROBE_TIMEOUT_MS;
    r->no_probe = cfg->no_probe;
    r->no_hash = cfg->no_hash;
    r->engine = cfg->engine;
    r->engine.model_path = NULL;
    cache_load(r);
    if (r->cache == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->scan_mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    /* Forked now, while the caller is most likely still single-threaded (probe.c says why). */
    if (!r->no_probe) {
        rc = dc_prober_start(&r->prober);
        if (rc < 0) {
            dc_registry_close(r);
            return rc;
        }
    }
    rc = dc_registry_scan(r);
    if (rc < 0) {
        dc_registry_close(r);
        return rc;
    }
    *out = r;
    return 0;

err_free:
    json_decref(r->cache);
    dc_free(r->models_dir);
    dc_free(r->default_model);
    dc_free(r->cache_path);
    dc_free(r);
    return rc;
}

void dc_registry_close(struct dc_registry *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n_models; i++) {
        dc_engine_close(r->models[i]->engine);
        model_free(r->models[i]);
    }
    dc_free(r->models);
    dc_prober_stop(r->prober);
    json_decref(r->cache);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->scan_mu);
    pthread_mutex_destroy(&r->mu);
    dc_free(r->models_dir);
    dc_free(r->default_model);
    dc_free(r->cache_path);
    dc_free(r);
}

int dc_registry_list(struct dc_registry *r, struct dc_model_entry **out, size_t *n)
{
    struct dc_model_entry *v;
    int rc = 0;

    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&r->mu);
    v = dc_calloc(r->n_models + 1, sizeof(*v));
    if (v == NULL) {
        rc = DC_ENOMEM;
        goto out_unlock;
    }
    for (size_t i = 0; i < r->n_models; i++) {
        rc = entry_copy(&v[i], &r->models[i]->e);
        if (rc < 0) {
            dc_model_entries_free(v, i);
            goto out_unlock;
        }
        v[i].loaded = r->models[i]->engine != NULL;
    }
    *out = v;
    *n = r->n_models;
out_unlock:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

uint64_t dc_registry_hash_count(struct dc_registry *r)
{
    uint64_t v;
    pthread_mutex_lock(&r->mu);
    v = r->hash_count;
    pthread_mutex_unlock(&r->mu);
    return v;
}

uint64_t dc_registry_probe_count(struct dc_registry *r)
{
    uint64_t v;
    pthread_mutex_lock(&r->mu);
    v = r->probe_count;
    pthread_mutex_unlock(&r->mu);
    return v;
}

/* ---- acquire / release ---- */

static struct reg_model *find_id(struct dc_registry *r, const char *id)
{
    bool local = id == NULL || strcmp(id, "local") == 0;

    for (size_t i = 0; i < r->n_models; i++) {
        struct reg_model *m = r->models[i];
        if (local ? m->e.is_default : strcmp(m->e.id, id) == 0)
            return m;
    }
    return NULL;
}

/*
 * Unloads idle models, least recently used first, until 'need' more bytes fit the budget
 * beside what is loaded or loading ('self' not counted). Lock held. DC_ELIMIT when every
 * remaining model is in use.
 */
static int make_room(struct dc_registry *r, const struct reg_model *self, uint64_t need)
{
    for (;;) {
        struct reg_model *victim = NULL;
        uint64_t total = 0;

        if (r->budget == 0)
            return 0;
        for (size_t i = 0; i < r->n_models; i++) {
            struct reg_model *m = r->models[i];
            if (m == self || (m->engine == NULL && !m->loading))
                continue;
            total += m->cost;
            if (m->engine != NULL && m->e.refs == 0 && !m->loading &&
                (victim == NULL || m->last_used < victim->last_used))
                victim = m;
        }
        if (total + need <= r->budget)
            return 0;
        if (victim == NULL)
            return DC_ELIMIT;
        dc_engine_close(victim->engine);
        victim->engine = NULL;
    }
}

static int set_err(char **err, int rc, const char *fmt, const char *a, const char *b)
{
    if (err != NULL)
        *err = dc_asprintf(fmt, a, b);
    return rc;
}

int dc_registry_acquire(struct dc_registry *r, const char *id, struct dc_engine **out, char **err)
{
    struct dc_engine_config cfg = r->engine;
    struct dc_engine *eng = NULL;
    struct reg_model *m;
    bool probe;
    char *path = NULL, *msg = NULL;
    uint64_t need;
    int rc;

    *out = NULL;
    if (err != NULL)
        *err = NULL;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        m = find_id(r, id);
        if (m == NULL || !m->loading)
            break;
        pthread_cond_wait(&r->cv, &r->mu);
    }
    if (m == NULL) {
        rc = id == NULL || strcmp(id, "local") == 0
                 ? set_err(err, DC_ENOENT, "no default model: %s%s has no usable GGUF file",
                           r->models_dir ? r->models_dir : "models_dir", "")
                 : set_err(err, DC_ENOENT, "no model '%s' in %s", id,
                           r->models_dir ? r->models_dir : "the registry");
        goto out_unlock;
    }
    if (m->e.error != NULL) {
        rc = set_err(err, m->rejected ? DC_EUNSUPPORTED : DC_ECORRUPT, "%s%s", m->e.error, "");
        goto out_unlock;
    }
    if (m->engine != NULL) {
        m->e.refs++;
        m->last_used = ++r->tick;
        *out = m->engine;
        rc = 0;
        goto out_unlock;
    }
    need = m->cost;
    if (r->budget != 0 && need > r->budget) {
        rc = DC_ELIMIT;
        if (err != NULL)
            *err = dc_asprintf("model '%s' needs %llu MiB, more than the memory budget of %llu "
                               "MiB",
                               m->e.id, (unsigned long long)(need >> 20),
                               (unsigned long long)(r->budget >> 20));
        goto out_unlock;
    }
    rc = make_room(r, m, need);
    if (rc < 0) {
        if (err != NULL)
            *err = dc_asprintf("model '%s' (%llu MiB) does not fit the memory budget of %llu MiB "
                               "beside the models in use",
                               m->e.id, (unsigned long long)(need >> 20),
                               (unsigned long long)(r->budget >> 20));
        goto out_unlock;
    }
    path = dc_strdup(m->e.path);
    if (path == NULL) {
        rc = DC_ENOMEM;
        goto out_unlock;
    }
    m->loading = true;
    probe = !r->no_probe && !m->probed;
    if (probe)
        r->probe_count++;
    pthread_mutex_unlock(&r->mu);

    /* Slow part, unlocked: 'm' stays listed while loading (scans keep loading entries). */
    rc = 0;
    if (probe)
        rc = dc_prober_probe(r->prober, path, r->engine.n_threads, r->probe_timeout_ms, &msg);
    if (rc == 0) {
        cfg.model_path = path;
        rc = dc_engine_open(&cfg, &eng, &msg);
    }

    pthread_mutex_lock(&r->mu);
    m->loading = false;
    pthread_cond_broadcast(&r->cv);
    if (rc == DC_EUNSUPPORTED && probe && eng == NULL && msg != NULL &&
        strncmp(msg, "llama.cpp rejected", 18) == 0) {
        /* The child's verdict: remember it so the file is never loaded in-process. */
        m->rejected = true;
        m->e.error = dc_strdup(msg);
        cache_store(r, m);
        cache_save(r);
    }
    if (rc < 0) {
        if (err != NULL) {
            *err = msg != NULL ? msg : dc_asprintf("loading %s: %s", m->e.path, dc_strerror(rc));
            msg = NULL;
        }
        goto out_unlock;
    }
    {
        const struct dc_engine_info *info = dc_engine_info(eng);
        m->engine = eng;
        m->e.refs = 1;
        m->last_used = ++r->tick;
        m->e.state_bytes = info->state_bytes;
        m->cost = info->size_bytes + info->state_bytes;
        if (!m->probed) {
            m->probed = true;
            cache_store(r, m);
            cache_save(r);
        }
    }
    /* The load may have cost more than estimated: unload idle models still over budget. */
    (void)make_room(r, m, m->cost);
    *out = eng;
    rc = 0;

out_unlock:
    pthread_mutex_unlock(&r->mu);
    dc_free(path);
    dc_free(msg);
    return rc;
}

void dc_registry_release(struct dc_registry *r, struct dc_engine *e)
{
    if (r == NULL || e == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_models; i++) {
        struct reg_model *m = r->models[i];
        if (m->engine == e && m->e.refs > 0) {
            m->e.refs--;
            m->last_used = ++r->tick;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

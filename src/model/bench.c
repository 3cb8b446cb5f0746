/* SPDX-License-Identifier: MIT */
/*
 * bench.c - the measurements behind bench.h. The llama.cpp half mirrors llama-bench
 * (tools/llama-bench): a context just big enough, random token ids, memory cleared before
 * each test, llama_synchronize before the clock stops, one warm-up run first; the result is
 * the median of the repetitions (the machines we share are noisy). The engine half
 * drives the public engine API the way a REST handler does and times it by the wall clock as a
 * client sees it: pp = submit to first token (the prompt's decode plus one sampling), tg =
 * submit to DONE of a one-token prompt generating n_tg tokens (n_tg decodes, as llama-bench's
 * tg decodes n_tg single tokens into an empty context). Everything the engine adds (queue,
 * scheduler hand-off, sampling, detokenization, callbacks) is inside these times.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llama.h>

#include "model/bench.h"
#include "model/engine.h"
#include "model/registry_int.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: random token ids, reproducible across runs. */
static uint32_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)((*s * 2685821657736338717ull) >> 32);
}

/* Median of 'n' rates (sorted in place): robust to a repetition that another process slowed. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, uint32_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)level;
    (void)text;
    (void)ud;
}

/* ---- llama.cpp alone ---- */

/* Decodes 'n' tokens from position 0 in batches of at most 'n_batch'. */
static int decode_prompt(struct llama_context *ctx, struct llama_batch *b, const llama_token *t,
                         uint32_t n, uint32_t n_batch)
{
    for (uint32_t i = 0; i < n; i += n_batch) {
        uint32_t k = n - i < n_batch ? n - i : n_batch;
        b->n_tokens = (int32_t)k;
        for (uint32_t j = 0; j < k; j++) {
            b->token[j] = t[i + j];
            b->pos[j] = (llama_pos)(i + j);
            b->n_seq_id[j] = 1;
            b->seq_id[j][0] = 0;
            b->logits[j] = i + j == n - 1;
        }
        if (llama_decode(ctx, *b) != 0)
            return -1;
    }
    llama_synchronize(ctx);
    return 0;
}

static int decode_gen(struct llama_context *ctx, struct llama_batch *b, const llama_token *t,
                      uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        b->n_tokens = 1;
        b->token[0] = t[i];
        b->pos[0] = (llama_pos)i;
        b->n_seq_id[0] = 1;
        b->seq_id[0][0] = 0;
        b->logits[0] = 1;
        if (llama_decode(ctx, *b) != 0)
            return -1;
        llama_synchronize(ctx);
    }
    return 0;
}

/* The bare loop's arguments and results: it runs on a thread of its own (see below). */
struct llama_run {
    const struct dc_bench_config *cfg;
    struct dc_bench_result *out;
    char *err;
    int rc;
};

static void *llama_run_main(void *arg)
{
    struct llama_run *lr = arg;
    const struct dc_bench_config *cfg = lr->cfg;
    struct dc_bench_result *out = lr->out;
    struct llama_model_params mp = llama_model_default_params();
    struct llama_context_params cp = llama_context_default_params();
    struct llama_model *model;
    struct llama_context *ctx = NULL;
    struct llama_batch batch;
    uint32_t reps = cfg->reps ? cfg->reps : 3, n_batch, n_tok, n_vocab;
    llama_token *toks = NULL;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    double *pp_rate = NULL, *tg_rate = NULL;
    char **err = &lr->err;
    int rc = 0;

    mp.n_gpu_layers = cfg->n_gpu_layers < 0 ? 999 : cfg->n_gpu_layers;
    model = llama_model_load_from_file(cfg->model_path, mp);
    if (model == NULL) {
        *err = dc_asprintf("llama.cpp cannot load %s", cfg->model_path);
        lr->rc = DC_EUNSUPPORTED;
        return NULL;
    }
    out->n_params = llama_model_n_params(model);
    out->size_bytes = llama_model_size(model);
    n_vocab = (uint32_t)llama_vocab_n_tokens(llama_model_get_vocab(model));
    n_batch = cfg->n_pp > 0 && cfg->n_pp < 512 ? cfg->n_pp : 512;
    n_tok = (cfg->n_pp > cfg->n_tg ? cfg->n_pp : cfg->n_tg) + 1;
    cp.n_ctx = n_tok + 16;
    cp.n_batch = n_batch;
    cp.n_ubatch = n_batch;
    cp.n_seq_max = 1;
    if (cfg->n_threads > 0) {
        cp.n_threads = cfg->n_threads;
        cp.n_threads_batch = cfg->n_threads;
    }
    ctx = llama_init_from_model(model, cp);
    toks = dc_malloc(n_tok * sizeof(*toks));
    pp_rate = dc_calloc(reps, sizeof(*pp_rate));
    tg_rate = dc_calloc(reps, sizeof(*tg_rate));
    batch = llama_batch_init((int32_t)n_batch, 0, 1);
    if (ctx == NULL || toks == NULL || pp_rate == NULL || tg_rate == NULL) {
        *err = dc_asprintf("cannot create a llama.cpp context for %s", cfg->model_path);
        rc = ctx == NULL ? DC_EUNSUPPORTED : DC_ENOMEM;
        goto out;
    }
    /* Repetition -1 is the warm-up (first touch of the weights, thread start, CPU clocks):
     * a whole pp + tg run, not recorded. */
    for (int r = -1; r < (int)reps; r++) {
        double t0;
        for (uint32_t i = 0; i < n_tok; i++)
            toks[i] = (llama_token)(rnd(&seed) % n_vocab);
        if (cfg->n_pp > 0) {
            llama_memory_clear(llama_get_memory(ctx), true);
            t0 = now_s();
            if (decode_prompt(ctx, &batch, toks, cfg->n_pp, n_batch) != 0)
                goto err_decode;
            if (r >= 0)
                pp_rate[r] = cfg->n_pp / (now_s() - t0);
        }
        if (cfg->n_tg > 0) {
            llama_memory_clear(llama_get_memory(ctx), true);
            t0 = now_s();
            if (decode_gen(ctx, &batch, toks, cfg->n_tg) != 0)
                goto err_decode;
            if (r >= 0)
                tg_rate[r] = cfg->n_tg / (now_s() - t0);
        }
    }
    out->pp_llama = cfg->n_pp > 0 ? median(pp_rate, reps) : 0;
    out->tg_llama = cfg->n_tg > 0 ? median(tg_rate, reps) : 0;
    goto out;

err_decode:
    *err = dc_asprintf("llama_decode failed on %s", cfg->model_path);
    rc = DC_EUNSUPPORTED;
out:
    llama_batch_free(batch);
    dc_free(toks);
    dc_free(pp_rate);
    dc_free(tg_rate);
    llama_free(ctx);
    llama_model_free(model);
    lr->rc = rc;
    return NULL;
}

/*
 * The bare loop runs on a thread that exits before the engine starts. ggml computes on an
 * OpenMP team owned by the thread that calls llama_decode, and libgomp keeps a finished team's
 * workers alive for the life of that thread. With this loop on the caller's thread, its idle
 * team (n_threads - 1 workers) stayed while the engine's scheduler thread brought a second
 * one; once the process manages more OpenMP threads than there are CPUs, libgomp cuts its
 * spin-wait from 300000 to 100 iterations (GOMP_SPINCOUNT's "throttled" count), so each of
 * the hundreds of barriers in one decode sleeps in futex() and is woken by a syscall: the
 * engine then looked several times slower than this loop whenever 2 x n_threads - 1 exceeded
 * the CPU count (16 threads on 16 cores: 0.18x). A joined thread takes its team with it.
 */
int dc_bench_llama(const struct dc_bench_config *cfg, struct dc_bench_result *out, char **err)
{
    struct llama_run lr = {.cfg = cfg, .out = out};
    pthread_t th;
    int rc;

    *err = NULL;
    /* A file llama.cpp would abort on is an error here, not a crash (probe.c). Benchmarks run
     * single-threaded at this point, so the direct fork is safe. */
    rc = dc_model_probe(cfg->model_path, 1, 0, err);
    if (rc < 0)
        return rc;
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    if (pthread_create(&th, NULL, llama_run_main, &lr) != 0)
        return DC_ENOMEM;
    pthread_join(th, NULL);
    *err = lr.err;
    return lr.rc;
}

/* ---- through the engine ---- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t pending;
    uint64_t generated;
    double prompt_ms, gen_ms;
    uint32_t n_prompt, n_cached, n_gen;
    double t_submit, t_first, t_done; /* wall clock: submit, first token, last DONE */
    int error;
};

/* Scheduler thread: count, never block. */
static void on_event(void *ud, const struct dc_gen_event *ev)
{
    struct waiter *w = ud;

    if (ev->type != DC_GEN_EV_DONE) {
        pthread_mutex_lock(&w->mu);
        if (w->t_first == 0)
            w->t_first = now_s();
        pthread_mutex_unlock(&w->mu);
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->t_done = now_s();
    w->generated += ev->n_generated;
    w->prompt_ms = ev->prompt_ms;
    w->gen_ms = ev->gen_ms;
    w->n_prompt = ev->n_prompt;
    w->n_cached = ev->n_cached;
    w->n_gen = ev->n_generated;
    if (ev->finish == DC_GEN_FINISH_ERROR && w->error == 0)
        w->error = ev->error ? ev->error : DC_EINVAL;
    w->pending--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Submits 'n' requests of 'n_prompt' random tokens and 'n_gen' tokens each; waits for all. */
static int run_requests(struct dc_engine *e, struct waiter *w, uint32_t n, uint32_t n_prompt,
                        uint32_t n_gen, uint32_t n_vocab, uint64_t *seed, char **err)
{
    struct dc_gen *g[256];
    int32_t *ids = dc_malloc((n_prompt ? n_prompt : 1) * sizeof(*ids));
    uint32_t started = 0;
    int rc = 0;

    if (ids == NULL)
        return DC_ENOMEM;
    if (n > DC_ARRAY_LEN(g))
        n = DC_ARRAY_LEN(g);
    pthread_mutex_lock(&w->mu);
    w->pending = n;
    w->generated = 0;
    w->error = 0;
    w->t_first = w->t_done = 0;
    w->t_submit = now_s();
    pthread_mutex_unlock(&w->mu);
    for (uint32_t i = 0; i < n; i++) {
        struct dc_gen_request req = {0};
        for (uint32_t j = 0; j < n_prompt; j++)
            ids[j] = (int32_t)(rnd(seed) % n_vocab);
        req.prompt_ids = ids;
        req.n_prompt_ids = n_prompt;
        dc_sampling_defaults(&req.sampling);
        req.sampling.temperature = 0; /* greedy: sampling cost is the argmax only */
        req.max_tokens = (int32_t)n_gen;
        req.ignore_eos = true;
        rc = dc_engine_submit(e, &req, on_event, w, &g[i]);
        if (rc < 0) {
            *err = dc_asprintf("dc_engine_submit: %s", dc_strerror(rc));
            pthread_mutex_lock(&w->mu);
            w->pending -= n - i; /* these never start: no callback fires */
            pthread_mutex_unlock(&w->mu);
            break;
        }
        started++;
    }
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    if (rc == 0 && w->error != 0) {
        rc = w->error;
        *err = dc_asprintf("generation failed: %s", dc_strerror(rc));
    }
    pthread_mutex_unlock(&w->mu);
    for (uint32_t i = 0; i < started; i++)
        dc_gen_release(g[i]);
    dc_free(ids);
    return rc;
}

int dc_bench_engine(const struct dc_bench_config *cfg, struct dc_bench_result *out, char **err)
{
    struct dc_engine_config ec = {0};
    struct dc_engine *e;
    struct waiter w;
    uint32_t reps = cfg->reps ? cfg->reps : 3, max_par = 1, n_vocab;
    uint64_t seed = 0x2545f4914f6cdd1dull;
    double *pp_rate, *tg_rate;
    int rc;

    *err = NULL;
    for (size_t i = 0; i < cfg->n_parallel; i++)
        max_par = cfg->parallel[i] > max_par ? cfg->parallel[i] : max_par;
    ec.model_path = cfg->model_path;
    ec.n_ctx_per_slot = (cfg->n_pp > 8 ? cfg->n_pp : 8) + cfg->n_tg + 16;
    ec.n_parallel = cfg->n_slots != 0 ? cfg->n_slots : max_par;
    ec.n_batch = 512;
    ec.n_threads = cfg->n_threads;
    ec.n_gpu_layers = cfg->n_gpu_layers;
    pp_rate = dc_calloc(reps, sizeof(*pp_rate));
    tg_rate = dc_calloc(reps, sizeof(*tg_rate));
    if (pp_rate == NULL || tg_rate == NULL) {
        rc = DC_ENOMEM;
        goto out_free;
    }
    rc = dc_engine_open(&ec, &e, err);
    if (rc < 0)
        goto out_free;
    n_vocab = dc_engine_info(e)->n_vocab;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);

    /* Repetition -1 is the warm-up, not recorded. */
    for (int r = -1; rc == 0 && r < (int)reps; r++) {
        if (cfg->n_pp > 0) {
            /* pp: the prompt's decode; one token generated so the request completes. */
            rc = run_requests(e, &w, 1, cfg->n_pp, 1, n_vocab, &seed, err);
            if (rc < 0)
                break;
            if (r >= 0)
                pp_rate[r] = cfg->n_pp / (w.t_first - w.t_submit);
        }
        if (cfg->n_tg > 1) {
            /* tg from a one-token prompt, like llama-bench's tg from an empty context. */
            rc = run_requests(e, &w, 1, 1, cfg->n_tg, n_vocab, &seed, err);
            if (rc < 0)
                break;
            if (r >= 0)
                tg_rate[r] = w.n_gen / (w.t_done - w.t_submit);
        }
    }
    if (rc == 0) {
        out->pp_ours = cfg->n_pp > 0 ? median(pp_rate, reps) : 0;
        out->tg_ours = median(tg_rate, reps);
    }
    for (size_t i = 0; rc == 0 && i < cfg->n_parallel; i++) {
        double t0 = now_s(), dt;
        rc = run_requests(e, &w, cfg->parallel[i], 8, cfg->n_tg, n_vocab, &seed, err);
        dt = now_s() - t0;
        out->parallel_tok_s[i] = rc == 0 && dt > 0 ? (double)w.generated / dt : 0;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    dc_engine_close(e);
out_free:
    dc_free(pp_rate);
    dc_free(tg_rate);
    return rc;
}

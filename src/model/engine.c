/* SPDX-License-Identifier: MIT */
/*
 * engine.c - one loaded model served by one scheduler thread: llama.cpp's load -> tokenize ->
 * batch -> decode -> sample loop made concurrent, cancellable and observable.
 *
 * Map of the file: process-wide llama.cpp setup (backend init once, log capture, a count of
 * the OpenMP threads that open engines hold); the engine and request structures; open/close;
 * tokenizer and chat helpers (thread-safe, run on the caller's thread); submit/cancel/release;
 * the scheduler (admission with prefix reuse, one llama_batch per step with every generating
 * slot's next token and bounded prompt chunks of the prefilling ones, sampling, text release,
 * DONE); and the blocking jobs (scoring and embeddings) that the scheduler runs between steps
 * so they never race a decode.
 *
 * Ownership. The engine owns the model, the context, the batch and the slots. A request
 * (struct dc_gen) is shared by the caller and the engine through a reference count; its
 * sampler chain and copied prompt belong to the engine until DONE. Only the scheduler thread
 * touches the llama_context after open.
 */
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "model/engine_int.h"
#include "model/model.h"

/* Prompt tokens one step may carry while other slots are generating: bounds the latency a
 * long prompt adds to everyone else's next token (a fraction of n_batch, at least this). Also
 * the least a step's time budget leaves to prompts, so prefill always progresses. */
#define PREFILL_CHUNK_MIN 32

/* Default of dc_engine_config.step_budget_ms: where a decode cannot be stopped, a cancel waits
 * for about one step, and the interfaces promise a freed slot within 100 ms. */
#define STEP_BUDGET_MS_DEFAULT 50

/* Prompt tokens of a budgeted step before any step has been timed (a fresh engine). */
#define STEP_FIRST_CAP 64

/* Weight kept by the cost estimate per timed step: it follows a change of load (longer
 * contexts cost more per token) within a few steps. */
#define COST_DECAY 0.7

/* How often, at most, a running decode looks for cancelled queued requests (abort_cb). */
#define QUEUE_POLL_MS 2.0

/* ---- process-wide llama.cpp setup ---- */

static pthread_once_t backend_once = PTHREAD_ONCE_INIT;

/* Worker threads of the open engines (n_threads - 1 each: the scheduler thread computes too).
 * ggml runs every decode on an OpenMP team owned by the decoding thread, and libgomp keeps an
 * idle team alive for the life of its thread; once the process holds more OpenMP threads than
 * there are CPUs (the first thread plus every team's workers), libgomp cuts its spin-wait to
 * a few iterations for every team, so each of the hundreds of barriers in a decode sleeps in
 * futex() and waits for a wake-up syscall (measured: a decode 2 to 5 times slower;
 * docs/engine.md, "Engine overhead"). An idle scheduler hands its team back
 * (release_compute_team), so this only bites models that decode at the same time; still,
 * models loaded together should share the cores, and we warn once when they do not. */
static atomic_int workers_open;
static atomic_bool threads_warned;

/* libgomp's OpenMP 5.0 omp_pause_resource_all(omp_pause_soft), which ends the calling thread's
 * idle team (its workers exit and stop counting). Declared here because this module is not
 * compiled with -fopenmp; a weak reference, so it is NULL in a process without an OpenMP
 * runtime (llama.cpp built with GGML_OPENMP=OFF). ELF only: elsewhere teams stay. */
#if defined(__ELF__)
extern int omp_pause_resource_all(int kind) __attribute__((weak));
#define OMP_PAUSE_SOFT 1
#endif

/* Called by the scheduler before it sleeps: an idle engine holds no OpenMP workers, so only
 * the models decoding right now count against the CPUs (the next decode starts a new team,
 * n_threads - 1 thread creations, tens of microseconds). */
static void release_compute_team(void)
{
#if defined(__ELF__)
    if (omp_pause_resource_all != NULL)
        (void)omp_pause_resource_all(OMP_PAUSE_SOFT);
#endif
}

/* The last error line llama.cpp logged on this thread: load failures are only explained in
 * its log, and we return it in 'err' instead of letting the library print. */
static _Thread_local char last_llama_error[256];

static void llama_log_cb(enum ggml_log_level level, const char *text, void *ud)
{
    DC_UNUSED(ud);
    if (level == GGML_LOG_LEVEL_ERROR) {
        size_t n = strlen(text);
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
            n--;
        if (n >= sizeof(last_llama_error))
            n = sizeof(last_llama_error) - 1;
        memcpy(last_llama_error, text, n);
        last_llama_error[n] = '\0';
    }
    if (level != GGML_LOG_LEVEL_CONT && dc_log_enabled(DC_LOG_TRACE))
        dc_log(DC_LOG_TRACE, "llama", "%.*s", (int)strcspn(text, "\n"), text);
}

static void backend_init_once(void)
{
    llama_log_set(llama_log_cb, NULL);
    llama_backend_init();
}

/* ---- structures ---- */

enum job_kind {
    JOB_SCORE,
    JOB_EMBED,
};

/* A blocking request (score or embed): lives on the caller's stack until 'done'. */
struct job {
    enum job_kind kind;
    struct job *next;
    /* score */
    const int32_t *tokens; /* prompt followed by completion */
    size_t n_prompt, n_total;
    uint32_t n_top;
    struct dc_token_score *scores;
    /* embed */
    int32_t *const *text_ids;
    const size_t *text_n;
    size_t n_texts;
    float *embd; /* n_texts x n_embd */
    int rc;
    bool done;
};

struct dc_gen {
    atomic_int refs;
    atomic_bool cancel;
    struct dc_gen *next; /* queue link, engine lock */
    dc_gen_cb cb;
    void *ud;
    int32_t *prompt;
    size_t n_prompt;
    struct llama_sampler *chain; /* built at submit so bad grammars fail there */
    bool argmax_only;            /* the chain is the greedy sampler alone: see slot_on_output */
    int32_t max_tokens;
    char *stop[DC_ENGINE_MAX_STOP];
    size_t stop_len[DC_ENGINE_MAX_STOP];
    size_t n_stop;
    uint32_t n_logprobs;
    bool logprobs;
    bool ignore_eos;
    int32_t priority;
    double t_submit;
};

enum slot_state {
    SLOT_IDLE,
    SLOT_PREFILL,
    SLOT_GEN,
};

struct slot {
    llama_seq_id seq;
    enum slot_state state;
    struct dc_gen *g;
    int32_t *cache; /* the tokens whose KV sits in 'seq', positions 0..n_cache-1 */
    size_t n_cache;
    llama_token next;   /* sampled, to be fed in the next step */
    int32_t out_idx;    /* this step's output row, or -1 */
    uint64_t last_use;  /* admission counter, for least-recently-used choice */
    bool in_batch;      /* has tokens in the decode in flight (abort_cb reads it) */
    size_t n_before;    /* n_cache before this step: where an aborted decode rolls back to */
    struct dc_buf raw;  /* detokenized bytes of an unfinished UTF-8 character */
    struct dc_buf text; /* released-as-UTF-8 text not yet delivered (stop hold-back) */
    uint32_t n_gen, n_cached;
    double t_admit, t_first;
    struct dc_top_logprob top[DC_ENGINE_MAX_TOP_LOGPROBS];
};

struct dc_engine {
    struct dc_engine_info info;
    char *path, *arch, *name, *tmpl;
    struct llama_model *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    llama_memory_t mem; /* NULL for encoder-only (BERT-like) models */
    int32_t n_vocab;
    uint32_t n_batch;
    uint32_t per_slot;
    int n_workers; /* n_threads - 1, counted in workers_open while the context exists */
    bool embed_only;
    bool vocab_only; /* no context, no scheduler */
    enum llama_pooling_type pooling;

    struct llama_batch batch;
    struct slot *slots;
    uint32_t n_slots;
    uint64_t use_counter;
    uint32_t rr; /* round-robin start among prefilling slots */

    /* Step time control and cancellation (scheduler thread, and abort_cb on it). The cost of a
     * step is estimated from the decodes that carried prompt tokens: decay-weighted sums of
     * their milliseconds and tokens, whose ratio is the cost per token (fixed per-step overhead
     * included, so it over-estimates bigger steps: safe). */
    double budget_ms;
    double cost_ms, cost_tokens;
    uint32_t n_in_batch; /* slots with in_batch set; 0 outside step() */
    bool can_rollback;   /* positions can be removed from the memory (not recurrent) */
    bool step_aborted;   /* abort_cb stopped the decode for a cancelled sequence in it */
    bool no_abort;       /* test hook: behave as a backend that never calls abort_cb */
    uint32_t n_polls;    /* abort_cb calls during the decode in flight */
    bool stoppable;      /* the last step's decode polled abort_cb and can be rolled back */
    double next_poll_ms; /* abort_cb: next look at the queue */
    struct dc_engine_step_stats sstats; /* guarded by mu */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;     /* wakes the scheduler */
    pthread_cond_t job_cond; /* wakes blocked score/embed callers */
    struct dc_gen *queue;    /* priority, then FIFO */
    struct job *jobs;        /* FIFO */
    uint32_t n_queued;       /* guarded by mu */
    atomic_uint n_active;    /* slots holding a request */
    atomic_bool stopping;

    atomic_uint_fast64_t tokens_prompt;
    atomic_uint_fast64_t tokens_generated;
    atomic_uint_fast64_t requests_done;
};

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- small public helpers ---- */

void dc_sampling_defaults(struct dc_sampling *s)
{
    memset(s, 0, sizeof(*s));
    s->temperature = 0.8f;
    s->top_p = 0.95f;
    s->min_p = 0.05f;
    s->top_k = 40;
    s->repeat_penalty = 1.0f;
}

const char *dc_gen_finish_name(enum dc_gen_finish f)
{
    switch (f) {
    case DC_GEN_FINISH_STOP:
        return "stop";
    case DC_GEN_FINISH_LENGTH:
        return "length";
    case DC_GEN_FINISH_CANCELLED:
        return "cancelled";
    case DC_GEN_FINISH_ERROR:
        return "error";
    case DC_GEN_FINISH_NONE:
        break;
    }
    return "none";
}

const struct dc_engine_info *dc_engine_info(const struct dc_engine *e)
{
    return &e->info;
}

void dc_engine_stats(struct dc_engine *e, struct dc_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    out->queued = e->n_queued;
    pthread_mutex_unlock(&e->mu);
    out->active = atomic_load(&e->n_active);
    out->tokens_prompt = atomic_load(&e->tokens_prompt);
    out->tokens_generated = atomic_load(&e->tokens_generated);
    out->requests_done = atomic_load(&e->requests_done);
}

/* ---- open / close ---- */

static void *scheduler_main(void *arg);

struct progress_ctx {
    const struct dc_engine_config *cfg;
    bool aborted;
};

static bool progress_cb(float p, void *ud)
{
    struct progress_ctx *pc = ud;

    if (!pc->cfg->progress_cb(p, pc->cfg->progress_ud)) {
        pc->aborted = true;
        return false;
    }
    return true;
}

/* The engine whose scheduler is inside llama_decode on this thread, or NULL. abort_cb looks
 * at the slots and the queue only when it runs on that thread: the CPU backend calls it from
 * thread 0 of its compute team, which is the thread that called llama_decode, but nothing
 * promises that of every backend. */
static _Thread_local struct dc_engine *tl_decoding;

static void queue_reap(struct dc_engine *e, struct dc_gen **dead);
static void gen_finish_unadmitted(struct dc_engine *e, struct dc_gen *g, enum dc_gen_finish f);

static double coarse_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/*
 * llama.cpp asks this between the nodes of a decode's graph (CPU backend; GPU backends never
 * ask, and their steps are short). It stops the decode when the engine closes, and when a
 * sequence in the batch has been cancelled. llama_decode then returns 2, having removed the
 * positions of its unfinished micro-batch from the memory; those of the micro-batches it had
 * finished stay (llama.h). step() clears the cancelled sequences' KV anyway, and rolls every
 * other sequence of the batch back to where it was before the step (llama_memory_seq_rm of
 * the positions the step added) to decode them again next step: the work lost is part of one
 * step, paid only when a cancel arrives. A recurrent model's state cannot be rolled back
 * (partial seq_rm is refused), so there the decode stops only when every sequence in it is
 * cancelled, and a mixed batch relies on the step budget.
 *
 * Every QUEUE_POLL_MS it also ends cancelled requests that are still queued, so that their
 * DONE does not wait for the step (they hold no KV; DONE runs on the scheduler thread as
 * always). The queue lock is only tried: a submit holding it is never waited for here.
 */
static bool abort_cb(void *ud)
{
    struct dc_engine *e = ud;
    struct dc_gen *dead = NULL;
    bool all = true, any = false;
    double t;

    if (atomic_load_explicit(&e->stopping, memory_order_relaxed))
        return true;
    if (tl_decoding != e || e->no_abort)
        return false;
    e->n_polls++;
    for (uint32_t i = 0; i < e->n_slots && e->n_in_batch > 0; i++) {
        const struct slot *s = &e->slots[i];
        bool c;

        if (!s->in_batch)
            continue;
        c = atomic_load_explicit(&s->g->cancel, memory_order_relaxed);
        any |= c;
        all &= c;
    }
    if (any && (all || e->can_rollback)) {
        e->step_aborted = true;
        return true;
    }
    t = coarse_ms();
    if (t < e->next_poll_ms)
        return false;
    e->next_poll_ms = t + QUEUE_POLL_MS;
    if (pthread_mutex_trylock(&e->mu) != 0)
        return false;
    if (e->queue != NULL)
        queue_reap(e, &dead);
    for (const struct dc_gen *g = dead; g != NULL; g = g->next)
        e->sstats.queue_reaped++;
    pthread_mutex_unlock(&e->mu);
    while (dead != NULL) {
        struct dc_gen *next = dead->next;
        gen_finish_unadmitted(e, dead, DC_GEN_FINISH_CANCELLED);
        dead = next;
    }
    return false;
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n <= 0)
        return 4;
    /* Above 8 logical CPUs assume SMT pairs: llama.cpp gains nothing from siblings. */
    return (int)(n > 8 ? n / 2 : n);
}

/* 'total': the first thread plus the workers of every open engine, as libgomp counts them. */
static void warn_oversubscribed(int total)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    if (cpus <= 0 || total <= cpus || atomic_exchange(&threads_warned, true))
        return;
    dc_log_warn("engine",
                "open models need %d compute threads on %ld CPUs: every decode slows down "
                "(OpenMP barriers stop spinning); give each model fewer threads",
                total, cpus);
}

/* Architectures that llama.cpp runs as encoders: embeddings only, no generation. */
static bool arch_is_encoder(const char *arch)
{
    static const char *const enc[] = {"bert",     "nomic-bert",  "nomic-bert-moe", "jina-bert-v2",
                                      "neo-bert", "modern-bert", "t5encoder"};

    for (size_t i = 0; i < DC_ARRAY_LEN(enc); i++) {
        if (strcmp(arch, enc[i]) == 0)
            return true;
    }
    return false;
}

static char *gguf_str_dup(const struct dc_gguf *g, const char *key)
{
    struct dc_gguf_str s;

    if (dc_gguf_get_str(g, key, &s) < 0)
        return NULL;
    return dc_strndup(s.ptr, s.len);
}

static void set_err(char **err, const char *fmt, ...) DC_PRINTF(2, 3);
static void set_err(char **err, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    dc_free(*err);
    *err = dc_strdup(line);
}

static void engine_free(struct dc_engine *e)
{
    if (e->slots != NULL) {
        for (uint32_t i = 0; i < e->n_slots; i++) {
            dc_free(e->slots[i].cache);
            dc_buf_cleanup(&e->slots[i].text);
            dc_buf_cleanup(&e->slots[i].raw);
        }
    }
    dc_free(e->slots);
    if (e->batch.token != NULL)
        llama_batch_free(e->batch);
    if (e->ctx != NULL)
        llama_free(e->ctx);
    if (e->n_workers > 0)
        atomic_fetch_sub(&workers_open, e->n_workers);
    if (e->model != NULL)
        llama_model_free(e->model);
    pthread_cond_destroy(&e->job_cond);
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->mu);
    dc_free(e->path);
    dc_free(e->arch);
    dc_free(e->name);
    dc_free(e->tmpl);
    dc_free(e);
}

/* Reads what the engine reports about the file from our own validator. */
static int read_metadata(struct dc_engine *e, const char *path, char **err)
{
    struct dc_gguf *g;
    const char *slash;
    int rc;

    rc = dc_gguf_open(path, &g);
    if (rc == DC_ECORRUPT) {
        set_err(err, "%s: not a valid GGUF file: %s", path, dc_gguf_error());
        return rc;
    }
    if (rc < 0) {
        set_err(err, "%s: %s", path, dc_strerror(rc));
        return rc;
    }
    e->arch = dc_strdup(dc_gguf_architecture(g) != NULL ? dc_gguf_architecture(g) : "unknown");
    e->name = gguf_str_dup(g, "general.name");
    if (e->name == NULL) {
        slash = strrchr(path, '/');
        e->name = dc_strdup(slash != NULL ? slash + 1 : path);
    }
    dc_gguf_close(g);
    if (e->arch == NULL || e->name == NULL)
        return DC_ENOMEM;
    return 0;
}

static enum llama_pooling_type pooling_to_llama(enum dc_pooling p, bool encoder)
{
    switch (p) {
    case DC_POOLING_MEAN:
        return LLAMA_POOLING_TYPE_MEAN;
    case DC_POOLING_CLS:
        return LLAMA_POOLING_TYPE_CLS;
    case DC_POOLING_LAST:
        return LLAMA_POOLING_TYPE_LAST;
    case DC_POOLING_DEFAULT:
        break;
    }
    return encoder ? LLAMA_POOLING_TYPE_UNSPECIFIED : LLAMA_POOLING_TYPE_MEAN;
}

/* Bytes the C heap holds now, mmap'd chunks included (large buffers are mmap'd). */
static uint64_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();

    return (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
}

int dc_engine_open(const struct dc_engine_config *cfg, struct dc_engine **out, char **err)
{
    struct llama_model_params mp = llama_model_default_params();
    struct llama_context_params cp = llama_context_default_params();
    struct progress_ctx pc = {.cfg = cfg};
    struct dc_engine *e;
    uint64_t heap_before, heap_after;
    uint32_t n_parallel;
    int rc, n_threads;

    *out = NULL;
    if (err != NULL)
        *err = NULL;
    if (cfg == NULL || cfg->model_path == NULL)
        return DC_EINVAL;
    n_parallel = cfg->n_parallel != 0 ? cfg->n_parallel : 4;
    if (n_parallel > llama_max_parallel_sequences())
        n_parallel = (uint32_t)llama_max_parallel_sequences();
    pthread_once(&backend_once, backend_init_once);

    e = dc_calloc(1, sizeof(*e));
    if (e == NULL)
        return DC_ENOMEM;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cond, NULL);
    pthread_cond_init(&e->job_cond, NULL);
    e->path = dc_strdup(cfg->model_path);
    if (e->path == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    rc = read_metadata(e, cfg->model_path, err);
    if (rc < 0)
        goto err_free;
    e->embed_only = arch_is_encoder(e->arch);

    mp.n_gpu_layers = cfg->n_gpu_layers < 0 ? 999 : cfg->n_gpu_layers;
    mp.vocab_only = cfg->vocab_only;
    if (cfg->progress_cb != NULL) {
        mp.progress_callback = progress_cb;
        mp.progress_callback_user_data = &pc;
    }
    last_llama_error[0] = '\0';
    e->model = llama_model_load_from_file(cfg->model_path, mp);
    if (e->model == NULL) {
        if (pc.aborted) {
            rc = DC_ECANCELED;
            set_err(err, "%s: loading cancelled", cfg->model_path);
        } else {
            rc = DC_EUNSUPPORTED;
            set_err(err, "%s: llama.cpp cannot load it: %s", cfg->model_path,
                    last_llama_error[0] != '\0' ? last_llama_error : "unknown error");
        }
        goto err_free;
    }
    e->vocab = llama_model_get_vocab(e->model);
    e->n_vocab = llama_vocab_n_tokens(e->vocab);
    e->info.path = e->path;
    e->info.arch = e->arch;
    e->info.name = e->name;
    e->info.n_vocab = (uint32_t)e->n_vocab;
    {
        const char *t = llama_model_chat_template(e->model, NULL);
        if (t != NULL && (e->tmpl = dc_strdup(t)) == NULL) {
            rc = DC_ENOMEM;
            goto err_free;
        }
        e->info.chat_template = e->tmpl;
    }
    if (cfg->vocab_only) {
        e->vocab_only = true;
        *out = e;
        return 0;
    }

    e->info.n_ctx_train = (uint32_t)llama_model_n_ctx_train(e->model);
    e->per_slot = cfg->n_ctx_per_slot;
    if (e->per_slot == 0)
        e->per_slot =
            e->info.n_ctx_train > 0 && e->info.n_ctx_train < 4096 ? e->info.n_ctx_train : 4096;
    e->n_batch = cfg->n_batch != 0 ? cfg->n_batch : 512;
    e->budget_ms = cfg->step_budget_ms != 0 ? cfg->step_budget_ms : STEP_BUDGET_MS_DEFAULT;
    e->sstats.budget_ms = (uint32_t)e->budget_ms;
    if (e->n_batch < n_parallel)
        e->n_batch = n_parallel; /* every generating slot's token fits one step */
    if (e->embed_only || cfg->embeddings) {
        /* Pooled embeddings need a whole text in one micro-batch. */
        if (e->n_batch < e->per_slot)
            e->n_batch = e->per_slot;
    }
    n_threads = cfg->n_threads > 0 ? cfg->n_threads : default_threads();

    cp.n_ctx = e->per_slot * n_parallel;
    cp.n_seq_max = n_parallel;
    cp.n_batch = e->n_batch;
    cp.n_ubatch = e->n_batch;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    /* One KV stream per sequence: slots do not share prefixes with each other (prefix reuse is
     * within a slot), and separate streams keep attention cost per sequence. */
    cp.kv_unified = false;
    cp.embeddings = e->embed_only;
    cp.pooling_type = pooling_to_llama(cfg->pooling, e->embed_only);
    cp.abort_callback = abort_cb;
    cp.abort_callback_data = e;
    cp.no_perf = true;
    heap_before = heap_bytes();
    e->ctx = llama_init_from_model(e->model, cp);
    heap_after = heap_bytes();
    if (e->ctx == NULL) {
        rc = DC_ENOMEM;
        set_err(err, "%s: cannot create a context of %u tokens: %s", cfg->model_path, cp.n_ctx,
                last_llama_error[0] != '\0' ? last_llama_error : "unknown error");
        goto err_free;
    }
    e->n_workers = n_threads - 1;
    warn_oversubscribed(1 + atomic_fetch_add(&workers_open, e->n_workers) + e->n_workers);
    e->mem = llama_get_memory(e->ctx);
    e->can_rollback = !llama_model_is_recurrent(e->model) && !llama_model_is_hybrid(e->model);
    e->pooling = llama_pooling_type(e->ctx);
    if (e->per_slot > llama_n_ctx_seq(e->ctx))
        e->per_slot = llama_n_ctx_seq(e->ctx);

    e->batch = llama_batch_init((int32_t)e->n_batch, 0, 1);
    e->n_slots = n_parallel;
    e->slots = dc_calloc(n_parallel, sizeof(*e->slots));
    if (e->batch.token == NULL || e->slots == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    for (uint32_t i = 0; i < n_parallel; i++) {
        struct slot *s = &e->slots[i];
        s->seq = (llama_seq_id)i;
        s->out_idx = -1;
        dc_buf_init(&s->text, 0);
        dc_buf_init(&s->raw, 0);
        s->cache = dc_malloc(sizeof(int32_t) * e->per_slot);
        if (s->cache == NULL) {
            rc = DC_ENOMEM;
            goto err_free;
        }
    }

    e->info.n_ctx = llama_n_ctx(e->ctx);
    e->info.n_ctx_per_slot = e->per_slot;
    e->info.n_parallel = n_parallel;
    e->info.n_embd = (uint32_t)llama_model_n_embd(e->model);
    e->info.n_params = llama_model_n_params(e->model);
    e->info.size_bytes = llama_model_size(e->model);
    /* What the context holds in host memory: the KV cache, but also the compute buffers that
     * llama.cpp sizes at creation by reserving the worst-case graph, and the output buffer,
     * which llama_state_get_size leaves out. The heap grew by all of them while the context was
     * made (other threads' allocations meanwhile are noise next to megabytes); a sanitizer's
     * allocator reports nothing, so the state size stays the floor. */
    e->info.state_bytes = llama_state_get_size(e->ctx);
    if (heap_after > heap_before && heap_after - heap_before > e->info.state_bytes)
        e->info.state_bytes = heap_after - heap_before;
    e->info.has_encoder = e->embed_only;

    if (pthread_create(&e->thread, NULL, scheduler_main, e) != 0) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    e->thread_started = true;
    *out = e;
    return 0;

err_free:
    if (rc == DC_ENOMEM && err != NULL && *err == NULL)
        set_err(err, "%s: out of memory", cfg->model_path);
    engine_free(e);
    return rc;
}

void dc_engine_close(struct dc_engine *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->mu);
    atomic_store(&e->stopping, true);
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started)
        pthread_join(e->thread, NULL);
    engine_free(e);
}

/* ---- tokenizer and chat (caller's thread; the vocabulary is read-only) ---- */

int dc_engine_tokenize(struct dc_engine *e, const char *text, size_t len, bool add_special,
                       bool parse_special, int32_t **ids, size_t *n)
{
    int32_t cap, got;
    int32_t *v;

    *ids = NULL;
    *n = 0;
    if (len > INT32_MAX / 2)
        return DC_ELIMIT;
    cap = (int32_t)len + 8;
    v = dc_malloc(sizeof(*v) * (size_t)cap);
    if (v == NULL)
        return DC_ENOMEM;
    got = llama_tokenize(e->vocab, text, (int32_t)len, v, cap, add_special, parse_special);
    if (got < 0 && got != INT32_MIN) {
        int32_t *nv = dc_realloc(v, sizeof(*v) * (size_t)-got);
        if (nv == NULL) {
            dc_free(v);
            return DC_ENOMEM;
        }
        v = nv;
        got = llama_tokenize(e->vocab, text, (int32_t)len, v, -got, add_special, parse_special);
    }
    if (got < 0) {
        dc_free(v);
        return DC_ELIMIT;
    }
    *ids = v;
    *n = (size_t)got;
    return 0;
}

/* A token's text into 'buf' ('cap' bytes, not NUL-ended); returns its length or, when it does
 * not fit, minus the length it needs. */
static int32_t piece(const struct dc_engine *e, int32_t id, char *buf, int32_t cap, bool special)
{
    return llama_token_to_piece(e->vocab, id, buf, cap, 0, special);
}

int dc_engine_token_piece(struct dc_engine *e, int32_t id, char **out)
{
    char small[64];
    int32_t n;

    *out = NULL;
    if (id < 0 || id >= e->n_vocab)
        return DC_EINVAL;
    n = piece(e, id, small, sizeof(small), true);
    if (n >= 0) {
        *out = dc_strndup(small, (size_t)n);
    } else {
        char *big = dc_malloc((size_t)-n + 1);
        if (big == NULL)
            return DC_ENOMEM;
        n = piece(e, id, big, -n, true);
        big[n < 0 ? 0 : n] = '\0';
        *out = big;
    }
    return *out != NULL ? 0 : DC_ENOMEM;
}

bool dc_engine_token_is_eog(struct dc_engine *e, int32_t id)
{
    return id >= 0 && id < e->n_vocab && llama_vocab_is_eog(e->vocab, id);
}

/* Applies 'tmpl' to the messages into a heap string; returns its length or a negative code
 * (-1 from llama.cpp: template not recognised). */
static int32_t apply_template(const char *tmpl, const struct llama_chat_message *m, size_t n,
                              bool add_ass, size_t hint, char **out)
{
    int32_t cap = hint > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)hint, got;
    char *buf = dc_malloc((size_t)cap + 1);

    if (buf == NULL)
        return DC_ENOMEM;
    got = llama_chat_apply_template(tmpl, m, n, add_ass, buf, cap);
    if (got > cap) {
        char *nb = dc_realloc(buf, (size_t)got + 1);
        if (nb == NULL) {
            dc_free(buf);
            return DC_ENOMEM;
        }
        buf = nb;
        cap = got;
        got = llama_chat_apply_template(tmpl, m, n, add_ass, buf, cap);
    }
    if (got < 0 || got > cap) {
        dc_free(buf);
        return got < 0 ? got : DC_ELIMIT;
    }
    buf[got] = '\0';
    *out = buf;
    return got;
}

int dc_engine_chat_render(struct dc_engine *e, const struct dc_chat_msg *msgs, size_t n_msgs,
                          bool add_assistant, char **out, bool *fallback)
{
    struct llama_chat_message *m;
    size_t hint = 256;
    int32_t got = -1;

    *out = NULL;
    if (fallback != NULL)
        *fallback = false;
    m = dc_calloc(n_msgs, sizeof(*m));
    if (m == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < n_msgs; i++) {
        m[i].role = msgs[i].role != NULL ? msgs[i].role : "user";
        m[i].content = msgs[i].content != NULL ? msgs[i].content : "";
        hint += 2 * (strlen(m[i].role) + strlen(m[i].content)) + 64;
    }
    if (e->tmpl != NULL)
        got = apply_template(e->tmpl, m, n_msgs, add_assistant, hint, out);
    if (got == DC_ENOMEM) {
        dc_free(m);
        return DC_ENOMEM;
    }
    if (got < 0) {
        /* Missing or not one of llama.cpp's families: ChatML, and tell the caller. */
        if (fallback != NULL)
            *fallback = true;
        got = apply_template("chatml", m, n_msgs, add_assistant, hint, out);
    }
    dc_free(m);
    return got < 0 ? (got == DC_ENOMEM ? DC_ENOMEM : DC_EUNSUPPORTED) : 0;
}

/* ---- requests ---- */

static void gen_free(struct dc_gen *g)
{
    if (g->chain != NULL)
        llama_sampler_free(g->chain);
    for (size_t i = 0; i < g->n_stop; i++)
        dc_free(g->stop[i]);
    dc_free(g->prompt);
    dc_free(g);
}

void dc_gen_release(struct dc_gen *g)
{
    if (g != NULL && atomic_fetch_sub(&g->refs, 1) == 1)
        gen_free(g);
}

void dc_gen_cancel(struct dc_gen *g)
{
    /* Only a flag: the scheduler polls it every step (and for queued requests), so this never
     * touches the engine, which may already be gone once DONE has been delivered. */
    if (g != NULL)
        atomic_store(&g->cancel, true);
}

static uint32_t random_seed(void)
{
    uint32_t s;

    if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
        s = (uint32_t)now_ms() ^ (uint32_t)getpid();
    return s;
}

/* The sampler chain for one request: grammar first (a mask over the full vocabulary), then
 * penalties, then the truncations, then temperature and the draw (or argmax). */
static int build_chain(struct dc_engine *e, const struct dc_gen_request *req,
                       struct llama_sampler **out, bool *argmax_only)
{
    const struct dc_sampling *s = &req->sampling;
    struct llama_sampler_chain_params scp = llama_sampler_chain_default_params();
    struct llama_sampler *chain, *smp;
    const char *gbnf =
        req->grammar != NULL ? req->grammar : (req->json_object ? dc_engine_json_gbnf : NULL);

    scp.no_perf = true;
    chain = llama_sampler_chain_init(scp);
    if (chain == NULL)
        return DC_ENOMEM;
    if (gbnf != NULL) {
        smp = llama_sampler_init_grammar(e->vocab, gbnf, "root");
        if (smp == NULL) {
            llama_sampler_free(chain);
            return DC_EINVAL;
        }
        llama_sampler_chain_add(chain, smp);
    }
    if (s->repeat_last_n != 0 && (s->repeat_penalty != 1.0f || s->frequency_penalty != 0.0f ||
                                  s->presence_penalty != 0.0f)) {
        int32_t last_n = s->repeat_last_n < 0 ? (int32_t)e->per_slot : s->repeat_last_n;
        llama_sampler_chain_add(
            chain, llama_sampler_init_penalties(e->n_vocab, last_n, s->repeat_penalty,
                                                s->frequency_penalty, s->presence_penalty));
    }
    *argmax_only = s->temperature <= 0.0f && llama_sampler_chain_n(chain) == 0;
    if (s->temperature <= 0.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
    } else {
        uint32_t seed = s->has_seed ? (uint32_t)(s->seed ^ (s->seed >> 32)) : random_seed();
        if (s->top_k > 0)
            llama_sampler_chain_add(chain, llama_sampler_init_top_k(s->top_k));
        if (s->top_p > 0.0f && s->top_p < 1.0f)
            llama_sampler_chain_add(chain, llama_sampler_init_top_p(s->top_p, 1));
        if (s->min_p > 0.0f)
            llama_sampler_chain_add(chain, llama_sampler_init_min_p(s->min_p, 1));
        llama_sampler_chain_add(chain, llama_sampler_init_temp(s->temperature));
        llama_sampler_chain_add(chain, llama_sampler_init_dist(seed));
    }
    *out = chain;
    return 0;
}

static void queue_insert(struct dc_engine *e, struct dc_gen *g)
{
    struct dc_gen **pp = &e->queue;

    while (*pp != NULL && (*pp)->priority >= g->priority)
        pp = &(*pp)->next;
    g->next = *pp;
    *pp = g;
    e->n_queued++;
}

int dc_engine_submit(struct dc_engine *e, const struct dc_gen_request *req, dc_gen_cb cb, void *ud,
                     struct dc_gen **out)
{
    struct dc_gen *g;
    size_t need;
    int rc;

    *out = NULL;
    if (req == NULL || cb == NULL || (req->prompt == NULL) == (req->prompt_ids == NULL) ||
        req->n_stop > DC_ENGINE_MAX_STOP || req->n_logprobs > DC_ENGINE_MAX_TOP_LOGPROBS)
        return DC_EINVAL;
    if (e->embed_only || e->vocab_only)
        return DC_EUNSUPPORTED;
    if (atomic_load(&e->stopping))
        return DC_ESTATE;
    g = dc_calloc(1, sizeof(*g));
    if (g == NULL)
        return DC_ENOMEM;
    atomic_init(&g->refs, 2);
    atomic_init(&g->cancel, false);
    g->cb = cb;
    g->ud = ud;
    if (req->prompt != NULL) {
        rc = dc_engine_tokenize(e, req->prompt, req->prompt_len, true, req->prompt_parse_special,
                                &g->prompt, &g->n_prompt);
        if (rc < 0)
            goto err_free;
    } else {
        g->prompt = dc_malloc(sizeof(int32_t) * (req->n_prompt_ids + 1));
        if (g->prompt == NULL) {
            rc = DC_ENOMEM;
            goto err_free;
        }
        for (size_t i = 0; i < req->n_prompt_ids; i++) {
            if (req->prompt_ids[i] < 0 || req->prompt_ids[i] >= e->n_vocab) {
                rc = DC_EINVAL;
                goto err_free;
            }
        }
        memcpy(g->prompt, req->prompt_ids, sizeof(int32_t) * req->n_prompt_ids);
        g->n_prompt = req->n_prompt_ids;
    }
    if (g->n_prompt == 0) {
        rc = DC_EINVAL;
        goto err_free;
    }
    /* The prompt needs its cells; one more is the least any generation needs (the last
     * sampled token is never fed back, so max_tokens needs max_tokens - 1 more). */
    need = g->n_prompt + (req->max_tokens > 1 ? (size_t)req->max_tokens - 1 : 0);
    if (g->n_prompt >= e->per_slot || need > e->per_slot) {
        rc = DC_ELIMIT;
        goto err_free;
    }
    for (size_t i = 0; i < req->n_stop; i++) {
        if (req->stop[i] == NULL || req->stop[i][0] == '\0') {
            rc = DC_EINVAL;
            goto err_free;
        }
        g->stop[i] = dc_strdup(req->stop[i]);
        if (g->stop[i] == NULL) {
            rc = DC_ENOMEM;
            goto err_free;
        }
        g->stop_len[i] = strlen(g->stop[i]);
        g->n_stop = i + 1;
    }
    rc = build_chain(e, req, &g->chain, &g->argmax_only);
    if (rc < 0)
        goto err_free;
    g->max_tokens = req->max_tokens;
    g->n_logprobs = req->n_logprobs;
    g->logprobs = req->logprobs || req->n_logprobs > 0;
    g->ignore_eos = req->ignore_eos;
    g->priority = req->priority;
    g->t_submit = now_ms();

    pthread_mutex_lock(&e->mu);
    if (atomic_load(&e->stopping)) {
        pthread_mutex_unlock(&e->mu);
        rc = DC_ESTATE;
        goto err_free;
    }
    queue_insert(e, g);
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
    *out = g;
    return 0;

err_free:
    gen_free(g);
    return rc;
}

/* ---- scheduler: per-token work ---- */

/*
 * exp(x) for x <= 0 (log-sum-exp's arguments once the max is subtracted): 2^(x log2 e) split
 * into an integer power, set in the exponent bits, and a degree-6 polynomial for 2^f on [0, 1)
 * (relative error about 2e-7; 1e-5 near the clamp at 2^-126, where terms no longer matter).
 * Branch-free float code without library calls, so the map loop below vectorizes.
 */
static inline float exp_nonpos(float x)
{
    float t = fmaxf(x * 1.44269504f, -126.0f), f, p;
    /* floor(t) by truncation and a fix-up: floorf is a library call on baseline x86-64, and
     * a call in the loop would stop it vectorizing. */
    int32_t i = (int32_t)t, bits;

    i -= (float)i > t;
    f = t - (float)i;

    p = 1.54035304e-4f;
    p = p * f + 1.33335581e-3f;
    p = p * f + 9.61812911e-3f;
    p = p * f + 5.55041087e-2f;
    p = p * f + 2.40226507e-1f;
    p = p * f + 6.93147181e-1f;
    p = p * f + 1.0f;
    memcpy(&bits, &p, sizeof(bits));
    bits += i * (1 << 23);
    memcpy(&p, &bits, sizeof(p));
    return p;
}

#define LSE_LANES 16
#define LSE_BLOCK 256

/* The raw distribution's log-normaliser (log-sum-exp of the logits). The exponentials go
 * through a block buffer (a plain map loop, which compilers vectorize without fast-math) and
 * are summed in 16 independent lanes. */
static float logsumexp(const float *logits, int32_t n)
{
    float mx[LSE_LANES], acc[LSE_LANES] = {0}, tmp[LSE_BLOCK], max, sum = 0.0f;
    int32_t i = 0;

    max = logits[0];
    for (int k = 0; k < LSE_LANES; k++)
        mx[k] = logits[0];
    for (; i + LSE_LANES <= n; i += LSE_LANES) {
        for (int k = 0; k < LSE_LANES; k++)
            mx[k] = logits[i + k] > mx[k] ? logits[i + k] : mx[k];
    }
    for (int32_t j = i; j < n; j++)
        max = logits[j] > max ? logits[j] : max;
    for (int k = 0; k < LSE_LANES; k++)
        max = mx[k] > max ? mx[k] : max;
    for (i = 0; i < n; i += LSE_BLOCK) {
        int32_t m = n - i < LSE_BLOCK ? n - i : LSE_BLOCK;
        for (int32_t j = 0; j < m; j++)
            tmp[j] = exp_nonpos(logits[i + j] - max);
        for (int32_t j = m; j < LSE_BLOCK; j++)
            tmp[j] = 0.0f;
        for (int32_t j = 0; j < LSE_BLOCK; j += LSE_LANES) {
            for (int k = 0; k < LSE_LANES; k++)
                acc[k] += tmp[j + k];
        }
    }
    for (int k = 0; k < LSE_LANES; k++)
        sum += acc[k];
    return max + logf(sum);
}

/* The 'k' largest logits, best first, as logprobs with their pieces. */
static void top_logprobs(const struct dc_engine *e, const float *logits, float lse, uint32_t k,
                         struct dc_top_logprob *top)
{
    uint32_t n = 0;

    for (int32_t i = 0; i < e->n_vocab; i++) {
        float v = logits[i];
        uint32_t j;

        if (n == k && v <= top[k - 1].logprob)
            continue;
        j = n < k ? n++ : k - 1;
        while (j > 0 && top[j - 1].logprob < v) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].id = i;
        top[j].logprob = v;
    }
    for (uint32_t i = 0; i < n; i++) {
        char buf[64];
        int32_t len = piece(e, top[i].id, buf, sizeof(buf), true);

        top[i].logprob -= lse;
        dc_engine_utf8_clean(buf, len > 0 ? (size_t)len : 0, top[i].text, sizeof(top[i].text));
    }
}

/* Clears a slot's sequence from the KV cache (and its token history). */
static void slot_clear_kv(struct dc_engine *e, struct slot *s)
{
    if (e->mem != NULL)
        llama_memory_seq_rm(e->mem, s->seq, -1, -1);
    s->n_cache = 0;
}

/* Delivers DONE, frees the slot for the next request and drops the engine's reference. */
static void slot_finish(struct dc_engine *e, struct slot *s, enum dc_gen_finish finish, int error,
                        const char *msg)
{
    struct dc_gen *g = s->g;
    struct dc_gen_event ev = {.type = DC_GEN_EV_DONE};
    double t = now_ms();

    if (finish == DC_GEN_FINISH_CANCELLED || finish == DC_GEN_FINISH_ERROR)
        slot_clear_kv(e, s);
    ev.finish = finish;
    ev.error = error;
    ev.error_msg = msg;
    ev.n_prompt = (uint32_t)g->n_prompt;
    ev.n_cached = s->n_cached;
    ev.n_generated = s->n_gen;
    ev.queue_ms = s->t_admit - g->t_submit;
    ev.prompt_ms = (s->t_first > 0 ? s->t_first : t) - s->t_admit;
    ev.gen_ms = s->t_first > 0 ? t - s->t_first : 0;
    llama_sampler_free(g->chain);
    g->chain = NULL;
    s->g = NULL;
    s->state = SLOT_IDLE;
    s->out_idx = -1;
    /* Counters first, so whoever DONE wakes sees them settled. */
    atomic_fetch_add(&e->requests_done, 1);
    atomic_fetch_sub(&e->n_active, 1);
    g->cb(g->ud, &ev);
    dc_gen_release(g);
}

/* DONE for a request that never got a slot. */
static void gen_finish_unadmitted(struct dc_engine *e, struct dc_gen *g, enum dc_gen_finish f)
{
    struct dc_gen_event ev = {.type = DC_GEN_EV_DONE, .finish = f};

    ev.n_prompt = (uint32_t)g->n_prompt;
    ev.queue_ms = now_ms() - g->t_submit;
    atomic_fetch_add(&e->requests_done, 1);
    g->cb(g->ud, &ev);
    dc_gen_release(g);
}

/* Moves the whole characters of the slot's raw bytes into its text. */
static int raw_take(struct slot *s, bool final)
{
    int rc = dc_engine_utf8_take(s->raw.data, &s->raw.len, final, &s->text);

    if (s->raw.data != NULL)
        s->raw.data[s->raw.len] = '\0';
    return rc;
}

/* Detokenizes a generated token (special tokens render as nothing) into the slot's text. The
 * stack buffer covers every ordinary piece; only a huge one costs an allocation. */
static int append_piece(struct dc_engine *e, struct slot *s, llama_token tok)
{
    char buf[256];
    int32_t n = piece(e, tok, buf, sizeof(buf), false);
    int rc;

    if (n < 0) {
        char *big = dc_malloc((size_t)-n);
        if (big == NULL)
            return DC_ENOMEM;
        n = piece(e, tok, big, -n, false);
        rc = n > 0 ? dc_buf_append(&s->raw, big, (size_t)n) : 0;
        dc_free(big);
    } else {
        rc = dc_buf_append(&s->raw, buf, (size_t)n);
    }
    if (rc < 0)
        return rc;
    return raw_take(s, false);
}

/* Index of the largest of n >= 1 logits (the first one on ties). */
static llama_token argmax(const float *logits, uint32_t n)
{
    uint32_t best = 0;
    float max = logits[0];

    for (uint32_t i = 1; i < n; i++) {
        if (logits[i] > max) {
            max = logits[i];
            best = i;
        }
    }
    return (llama_token)best;
}

/* Handles the output row of a slot: logprobs from the raw logits, sample, detokenize, release
 * text, decide whether the request ends. */
static void slot_on_output(struct dc_engine *e, struct slot *s)
{
    struct dc_gen *g = s->g;
    struct dc_gen_event ev = {.type = DC_GEN_EV_TOKEN};
    enum dc_gen_finish finish = DC_GEN_FINISH_NONE;
    const float *logits = llama_get_logits_ith(e->ctx, s->out_idx);
    float lse = 0.0f;
    llama_token tok;
    size_t release;
    bool eog, matched = false;
    int rc = 0;

    if (logits == NULL) {
        slot_finish(e, s, DC_GEN_FINISH_ERROR, DC_ESTATE, "no logits for the sequence");
        return;
    }
    if (g->logprobs)
        lse = logsumexp(logits, e->n_vocab);
    if (g->n_logprobs > 0)
        top_logprobs(e, logits, lse, g->n_logprobs, s->top);
    /* Plain greedy decoding skips the sampler chain: llama_sampler_sample copies the whole
     * vocabulary into a candidate array per token (tens of microseconds at 32k tokens, which
     * showed as most of the engine's per-token overhead on a GPU), while the argmax of the
     * logits is the same token (ties: the lowest id, as the greedy sampler picks). */
    tok = g->argmax_only ? argmax(logits, e->n_vocab)
                         : llama_sampler_sample(g->chain, e->ctx, s->out_idx);
    if (s->n_gen == 0)
        s->t_first = now_ms();
    s->n_gen++;
    atomic_fetch_add_explicit(&e->tokens_generated, 1, memory_order_relaxed);

    eog = !g->ignore_eos && llama_vocab_is_eog(e->vocab, tok);
    if (eog) {
        finish = DC_GEN_FINISH_STOP;
    } else {
        rc = append_piece(e, s, tok);
        if (g->max_tokens > 0 && s->n_gen >= (uint32_t)g->max_tokens)
            finish = DC_GEN_FINISH_LENGTH;
        else if (s->n_cache >= e->per_slot)
            finish = DC_GEN_FINISH_LENGTH; /* no cell left to feed it back */
    }
    if (finish != DC_GEN_FINISH_NONE && rc == 0 && s->raw.len > 0)
        rc = raw_take(s, true);
    if (rc < 0) {
        slot_finish(e, s, DC_GEN_FINISH_ERROR, rc, "out of memory for the output text");
        return;
    }
    release = s->text.len;
    if (g->n_stop > 0 && s->text.len > 0) {
        release = dc_engine_stop_scan((const char *)s->text.data, s->text.len, g->stop, g->stop_len,
                                      g->n_stop, &matched);
        if (matched)
            finish = DC_GEN_FINISH_STOP;
        else if (finish != DC_GEN_FINISH_NONE)
            release = s->text.len; /* the end: a partial match is just text */
    }

    ev.id = tok;
    ev.logprob = g->logprobs ? logits[tok] - lse : 0.0f;
    ev.n_top = g->n_logprobs;
    ev.top = s->top;
    ev.text_len = release;
    if (release > 0) {
        uint8_t saved = s->text.data[release];
        s->text.data[release] = '\0';
        ev.text = (const char *)s->text.data;
        g->cb(g->ud, &ev);
        s->text.data[release] = saved;
        dc_buf_consume(&s->text, release);
    } else {
        ev.text = "";
        g->cb(g->ud, &ev);
    }
    if (finish != DC_GEN_FINISH_NONE) {
        dc_buf_reset(&s->text);
        dc_buf_reset(&s->raw);
        slot_finish(e, s, finish, 0, NULL);
        return;
    }
    s->next = tok;
    s->state = SLOT_GEN;
}

/* ---- scheduler: admission ---- */

/* Picks the idle slot whose cached tokens share the longest prefix with 'tok' (ties: least
 * recently used); NULL when none is idle. '*common' receives that prefix length. */
static struct slot *pick_slot(struct dc_engine *e, const int32_t *tok, size_t n, size_t *common)
{
    struct slot *best = NULL;
    size_t best_lcp = 0;

    for (uint32_t i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        size_t l;

        if (s->state != SLOT_IDLE)
            continue;
        l = dc_engine_lcp(s->cache, s->n_cache, tok, n);
        if (best == NULL || l > best_lcp || (l == best_lcp && s->last_use < best->last_use)) {
            best = s;
            best_lcp = l;
        }
    }
    *common = best_lcp;
    return best;
}

/* Keeps the first 'keep' cached tokens of a slot and drops the rest of its KV. */
static void slot_truncate(struct dc_engine *e, struct slot *s, size_t keep)
{
    if (keep < s->n_cache && e->mem != NULL &&
        !llama_memory_seq_rm(e->mem, s->seq, (llama_pos)keep, -1)) {
        /* Partial removal unsupported (recurrent state): start over. */
        llama_memory_seq_rm(e->mem, s->seq, -1, -1);
        keep = 0;
    }
    if (keep < s->n_cache)
        s->n_cache = keep;
}

static void slot_admit(struct dc_engine *e, struct slot *s, struct dc_gen *g, size_t common)
{
    /* At least the last prompt token is decoded again: its logits give the first sample. */
    if (common >= g->n_prompt)
        common = g->n_prompt - 1;
    slot_truncate(e, s, common);
    s->g = g;
    s->state = SLOT_PREFILL;
    s->n_gen = 0;
    s->n_cached = (uint32_t)s->n_cache;
    dc_buf_reset(&s->raw);
    dc_buf_reset(&s->text);
    s->t_admit = now_ms();
    s->t_first = 0;
    s->out_idx = -1;
    s->last_use = ++e->use_counter;
    atomic_fetch_add(&e->n_active, 1);
    atomic_fetch_add_explicit(&e->tokens_prompt, g->n_prompt - s->n_cache, memory_order_relaxed);
}

/* ---- scheduler: blocking jobs ---- */

/* Decodes tokens[from..n) into slot 's' in n_batch chunks; rows at positions >= first_out get
 * logits and are handed to 'on_row' (position, batch row). */
static int decode_range(struct dc_engine *e, struct slot *s, const int32_t *tokens, size_t from,
                        size_t n, size_t first_out,
                        void (*on_row)(struct dc_engine *, void *, size_t, int32_t), void *ud)
{
    size_t pos = from;

    while (pos < n) {
        size_t chunk = n - pos < e->n_batch ? n - pos : e->n_batch;
        int32_t rc;

        e->batch.n_tokens = 0;
        for (size_t i = 0; i < chunk; i++) {
            int32_t b = e->batch.n_tokens++;
            e->batch.token[b] = tokens[pos + i];
            e->batch.pos[b] = (llama_pos)(pos + i);
            e->batch.n_seq_id[b] = 1;
            e->batch.seq_id[b][0] = s->seq;
            e->batch.logits[b] = pos + i >= first_out;
        }
        tl_decoding = e; /* abort_cb may end cancelled queued requests meanwhile */
        rc = e->mem != NULL ? llama_decode(e->ctx, e->batch) : llama_encode(e->ctx, e->batch);
        tl_decoding = NULL;
        if (rc != 0)
            return rc == 1 ? DC_ELIMIT : (rc == 2 ? DC_ECANCELED : DC_EINVAL);
        for (size_t i = 0; i < chunk; i++) {
            if (pos + i >= first_out && on_row != NULL)
                on_row(e, ud, pos + i, (int32_t)i);
        }
        pos += chunk;
    }
    return 0;
}

static void score_row(struct dc_engine *e, void *ud, size_t pos, int32_t row)
{
    struct job *j = ud;
    const float *logits;
    struct dc_token_score *sc;
    float lse;

    if (pos + 1 >= j->n_total || pos + 1 < j->n_prompt)
        return;
    sc = &j->scores[pos + 1 - j->n_prompt];
    logits = llama_get_logits_ith(e->ctx, row);
    if (logits == NULL) {
        j->rc = DC_ESTATE;
        return;
    }
    lse = logsumexp(logits, e->n_vocab);
    sc->id = j->tokens[pos + 1];
    sc->logprob = logits[sc->id] - lse;
    sc->n_top = j->n_top;
    if (j->n_top > 0)
        top_logprobs(e, logits, lse, j->n_top, sc->top);
}

static void run_score(struct dc_engine *e, struct job *j)
{
    size_t common;
    struct slot *s = pick_slot(e, j->tokens, j->n_total, &common);
    int rc;

    if (common > j->n_prompt - 1)
        common = j->n_prompt - 1;
    slot_truncate(e, s, common);
    s->last_use = ++e->use_counter;
    rc = decode_range(e, s, j->tokens, s->n_cache, j->n_total - 1, j->n_prompt - 1, score_row, j);
    if (rc < 0) {
        slot_clear_kv(e, s);
        j->rc = rc;
        return;
    }
    /* The KV now holds every token but the last: keep it as this slot's history. */
    memcpy(s->cache + s->n_cache, j->tokens + s->n_cache,
           sizeof(int32_t) * (j->n_total - 1 - s->n_cache));
    s->n_cache = j->n_total - 1;
}

/* Pools one text's rows ourselves when the context does not (pooling NONE). */
static void mean_rows(struct dc_engine *e, size_t n_rows, float *dst)
{
    uint32_t d = e->info.n_embd;

    memset(dst, 0, sizeof(float) * d);
    for (size_t r = 0; r < n_rows; r++) {
        const float *v = llama_get_embeddings_ith(e->ctx, (int32_t)r);
        if (v == NULL)
            continue;
        for (uint32_t k = 0; k < d; k++)
            dst[k] += v[k] / (float)n_rows;
    }
}

static void run_embed(struct dc_engine *e, struct job *j)
{
    uint32_t d = e->info.n_embd;
    struct slot *s = NULL;
    size_t unused;

    if (!e->embed_only)
        llama_set_embeddings(e->ctx, true);
    s = pick_slot(e, NULL, 0, &unused);
    for (size_t t = 0; t < j->n_texts && j->rc == 0; t++) {
        float *dst = j->embd + t * d;
        const float *v;
        double norm = 0.0;
        int rc;

        slot_clear_kv(e, s);
        rc = decode_range(e, s, j->text_ids[t], 0, j->text_n[t], 0, NULL, NULL);
        if (rc < 0) {
            j->rc = rc;
            break;
        }
        v = e->pooling == LLAMA_POOLING_TYPE_NONE ? NULL : llama_get_embeddings_seq(e->ctx, s->seq);
        if (v != NULL)
            memcpy(dst, v, sizeof(float) * d);
        else
            mean_rows(e, j->text_n[t], dst);
        for (uint32_t k = 0; k < d; k++)
            norm += (double)dst[k] * dst[k];
        norm = sqrt(norm);
        for (uint32_t k = 0; k < d && norm > 0.0; k++)
            dst[k] = (float)(dst[k] / norm);
    }
    slot_clear_kv(e, s);
    if (!e->embed_only)
        llama_set_embeddings(e->ctx, false);
}

/* ---- scheduler: the loop ---- */

/* Under the lock: removes cancelled queued requests into '*dead'. */
static void queue_reap(struct dc_engine *e, struct dc_gen **dead)
{
    struct dc_gen **pp = &e->queue;

    while (*pp != NULL) {
        struct dc_gen *g = *pp;
        if (atomic_load_explicit(&g->cancel, memory_order_relaxed)) {
            *pp = g->next;
            g->next = *dead;
            *dead = g;
            e->n_queued--;
        } else {
            pp = &g->next;
        }
    }
}

static uint32_t count_idle(const struct dc_engine *e)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < e->n_slots; i++)
        n += e->slots[i].state == SLOT_IDLE;
    return n;
}

/*
 * The most prompt tokens this step may add to 'n_gen' generating tokens so that its predicted
 * time stays within the step budget. Where a cancel cannot stop the decode in flight (a
 * backend that never calls abort_cb, a recurrent model), it takes effect after the step, so
 * the step's length is what a cancelled request waits for. Where it can (the last decode
 * polled abort_cb and the model rolls back), steps are not cut: smaller steps would cost
 * throughput for nothing, as a cancel stops the step within one graph node. Nor is a step that
 * carries one sequence only (a prompt prefilled alone): nobody else waits on it. At least
 * PREFILL_CHUNK_MIN, so prefill always progresses.
 */
static uint32_t step_prompt_cap(const struct dc_engine *e, uint32_t n_gen, uint32_t n_prefill)
{
    double cap;

    if (n_gen + n_prefill < 2 || e->stoppable)
        return e->n_batch;
    if (e->cost_tokens <= 0.0)
        return STEP_FIRST_CAP;
    cap = e->budget_ms * e->cost_tokens / e->cost_ms - (double)n_gen;
    if (cap < PREFILL_CHUNK_MIN)
        return PREFILL_CHUNK_MIN;
    return cap > (double)e->n_batch ? e->n_batch : (uint32_t)cap;
}

/* Feeds one timed step into the cost estimate and the statistics. */
static void step_account(struct dc_engine *e, uint32_t n_gen, uint32_t n_prompt, bool budgeted,
                         double decode_ms, double step_ms)
{
    /* What the estimate in force when the step was built predicted for it (the cap keeps it
     * within the budget unless the floor of PREFILL_CHUNK_MIN tokens applies). */
    bool pred_over =
        budgeted && e->cost_tokens > 0.0 && n_prompt > PREFILL_CHUNK_MIN &&
        (double)(n_gen + n_prompt) * e->cost_ms / e->cost_tokens > e->budget_ms * 1.001;

    if (n_prompt > 0) {
        e->cost_ms = e->cost_ms * COST_DECAY + decode_ms;
        e->cost_tokens = e->cost_tokens * COST_DECAY + (double)(n_gen + n_prompt);
    }
    pthread_mutex_lock(&e->mu);
    e->sstats.steps++;
    if (n_prompt > 0 && budgeted) {
        e->sstats.budgeted++;
        e->sstats.budgeted_over += step_ms > 2.0 * e->budget_ms;
        e->sstats.budgeted_pred_over += pred_over;
        if (step_ms > e->sstats.budgeted_ms_max)
            e->sstats.budgeted_ms_max = step_ms;
    }
    e->sstats.ms_per_token = e->cost_tokens > 0.0 ? e->cost_ms / e->cost_tokens : 0.0;
    pthread_mutex_unlock(&e->mu);
}

void dc_engine_step_stats(struct dc_engine *e, struct dc_engine_step_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->sstats;
    pthread_mutex_unlock(&e->mu);
}

void dc_engine_test_no_abort(struct dc_engine *e)
{
    /* The scheduler reads it after taking the lock that the next submit signals under. */
    pthread_mutex_lock(&e->mu);
    e->no_abort = true;
    pthread_mutex_unlock(&e->mu);
}

/* Builds and decodes one batch; returns false when there was nothing to decode. */
static bool step(struct dc_engine *e)
{
    uint32_t n_gen = 0, n_prefill = 0, n_prompt = 0, n_seqs, budget, cap;
    double t0 = now_ms(), t_dec;
    bool budgeted;
    int32_t rc;

    e->batch.n_tokens = 0;
    for (uint32_t i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        int32_t b;

        s->out_idx = -1;
        s->in_batch = s->state == SLOT_GEN;
        s->n_before = s->n_cache;
        if (s->state == SLOT_PREFILL)
            n_prefill++;
        if (s->state != SLOT_GEN)
            continue;
        b = e->batch.n_tokens++;
        e->batch.token[b] = s->next;
        e->batch.pos[b] = (llama_pos)s->n_cache;
        e->batch.n_seq_id[b] = 1;
        e->batch.seq_id[b][0] = s->seq;
        e->batch.logits[b] = 1;
        s->out_idx = b;
        n_gen++;
    }
    budget = e->n_batch - n_gen;
    if (n_gen > 0 && budget > e->n_batch / 4)
        budget = e->n_batch / 4 > PREFILL_CHUNK_MIN ? e->n_batch / 4 : PREFILL_CHUNK_MIN;
    if (budget > e->n_batch - n_gen)
        budget = e->n_batch - n_gen;
    cap = step_prompt_cap(e, n_gen, n_prefill);
    budgeted = n_gen + n_prefill >= 2 && !e->stoppable;
    if (budget > cap)
        budget = cap;
    /* Prefilling slots share the budget round-robin, each at least a fair share. */
    for (uint32_t k = 0; k < e->n_slots && n_prefill > 0 && budget > 0; k++) {
        struct slot *s = &e->slots[(e->rr + k) % e->n_slots];
        size_t left, chunk, share;

        if (s->state != SLOT_PREFILL)
            continue;
        left = s->g->n_prompt - s->n_cache;
        share = budget / n_prefill > 0 ? budget / n_prefill : budget;
        chunk = left < share ? left : share;
        n_prefill--;
        s->in_batch = chunk > 0;
        n_prompt += (uint32_t)chunk;
        for (size_t i = 0; i < chunk; i++) {
            int32_t b = e->batch.n_tokens++;
            e->batch.token[b] = s->g->prompt[s->n_cache + i];
            e->batch.pos[b] = (llama_pos)(s->n_cache + i);
            e->batch.n_seq_id[b] = 1;
            e->batch.seq_id[b][0] = s->seq;
            e->batch.logits[b] = 0;
        }
        /* The slot's tokens are in the batch: count them now, undo on failure. */
        memcpy(s->cache + s->n_cache, s->g->prompt + s->n_cache, sizeof(int32_t) * chunk);
        s->n_cache += chunk;
        budget -= (uint32_t)chunk;
        if (s->n_cache == s->g->n_prompt) {
            e->batch.logits[e->batch.n_tokens - 1] = 1;
            s->out_idx = e->batch.n_tokens - 1;
        }
    }
    e->rr = (e->rr + 1) % e->n_slots;
    if (e->batch.n_tokens == 0)
        return false;
    n_seqs = 0;
    for (uint32_t i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        if (s->state == SLOT_GEN)
            s->cache[s->n_cache++] = s->next;
        n_seqs += s->in_batch;
    }

    e->n_in_batch = n_seqs;
    e->step_aborted = false;
    e->n_polls = 0;
    tl_decoding = e;
    t_dec = now_ms();
    rc = llama_decode(e->ctx, e->batch);
    t_dec = now_ms() - t_dec;
    tl_decoding = NULL;
    e->n_in_batch = 0;
    e->stoppable = e->n_polls > 0 && e->can_rollback;
    if (rc == 2 && e->step_aborted && !atomic_load(&e->stopping)) {
        /* A sequence in the batch was cancelled (abort_cb): end the cancelled ones (their KV
         * goes), and undo the step for the others, which keep their state (a generating slot
         * its pending token, a prefilling one its place in the prompt). Slots that had no
         * tokens in the batch are untouched. */
        for (uint32_t i = 0; i < e->n_slots; i++) {
            struct slot *s = &e->slots[i];
            bool in = s->in_batch;

            s->in_batch = false;
            s->out_idx = -1;
            if (s->state == SLOT_IDLE || !in)
                continue;
            if (atomic_load(&s->g->cancel))
                slot_finish(e, s, DC_GEN_FINISH_CANCELLED, 0, NULL);
            else if (llama_memory_seq_rm(e->mem, s->seq, (llama_pos)s->n_before, -1))
                s->n_cache = s->n_before;
            else
                slot_finish(e, s, DC_GEN_FINISH_ERROR, DC_ESTATE,
                            "cannot roll back an aborted decode");
        }
        pthread_mutex_lock(&e->mu);
        e->sstats.aborted++;
        pthread_mutex_unlock(&e->mu);
        return true;
    }
    if (rc != 0) {
        int err = rc == 2 ? DC_ECANCELED : (rc == 1 ? DC_ELIMIT : DC_EINVAL);
        for (uint32_t i = 0; i < e->n_slots; i++) {
            struct slot *s = &e->slots[i];
            s->in_batch = false;
            if (s->state == SLOT_IDLE)
                continue;
            if (atomic_load(&e->stopping))
                slot_finish(e, s, DC_GEN_FINISH_CANCELLED, 0, NULL);
            else
                slot_finish(e, s, DC_GEN_FINISH_ERROR, err, "llama_decode failed");
        }
        return true;
    }
    for (uint32_t i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        s->in_batch = false;
        if (s->state != SLOT_IDLE && s->out_idx >= 0)
            slot_on_output(e, s);
    }
    step_account(e, n_gen, n_prompt, budgeted, t_dec, now_ms() - t0);
    return true;
}

static void finish_all(struct dc_engine *e)
{
    struct dc_gen *q;
    struct job *j;

    for (uint32_t i = 0; i < e->n_slots; i++) {
        if (e->slots[i].state != SLOT_IDLE)
            slot_finish(e, &e->slots[i], DC_GEN_FINISH_CANCELLED, 0, NULL);
    }
    pthread_mutex_lock(&e->mu);
    q = e->queue;
    e->queue = NULL;
    e->n_queued = 0;
    for (j = e->jobs; j != NULL; j = j->next) {
        j->rc = DC_ECANCELED;
        j->done = true;
    }
    e->jobs = NULL;
    pthread_cond_broadcast(&e->job_cond);
    pthread_mutex_unlock(&e->mu);
    while (q != NULL) {
        struct dc_gen *next = q->next;
        gen_finish_unadmitted(e, q, DC_GEN_FINISH_CANCELLED);
        q = next;
    }
}

static void *scheduler_main(void *arg)
{
    struct dc_engine *e = arg;

    /* Named for top -H and /proc; the OpenMP workers it starts inherit the name, so an
     * engine's compute shows as "dc-engine" (bench/api tells serving from compute by it). */
    (void)prctl(PR_SET_NAME, "dc-engine", 0, 0, 0);

    for (;;) {
        struct dc_gen *dead = NULL, *admit[64];
        struct job *job = NULL;
        uint32_t n_admit = 0, idle;

        /* Cancellations of running requests: free their slots (and KV) before the batch. */
        for (uint32_t i = 0; i < e->n_slots; i++) {
            struct slot *s = &e->slots[i];
            if (s->state != SLOT_IDLE && atomic_load_explicit(&s->g->cancel, memory_order_relaxed))
                slot_finish(e, s, DC_GEN_FINISH_CANCELLED, 0, NULL);
        }

        pthread_mutex_lock(&e->mu);
        if (!atomic_load(&e->stopping) && e->queue == NULL && e->jobs == NULL &&
            atomic_load(&e->n_active) == 0) {
            /* Going to sleep: hand back the OpenMP workers first (not under the lock: it
             * joins them). */
            pthread_mutex_unlock(&e->mu);
            release_compute_team();
            pthread_mutex_lock(&e->mu);
        }
        while (!atomic_load(&e->stopping) && e->queue == NULL && e->jobs == NULL &&
               atomic_load(&e->n_active) == 0)
            pthread_cond_wait(&e->cond, &e->mu);
        if (atomic_load(&e->stopping)) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        if (e->queue != NULL)
            queue_reap(e, &dead);
        idle = count_idle(e);
        if (e->jobs != NULL && idle > 0) {
            job = e->jobs;
            e->jobs = job->next;
            idle--;
        }
        while (e->queue != NULL && idle > n_admit && n_admit < DC_ARRAY_LEN(admit)) {
            admit[n_admit++] = e->queue;
            e->queue = e->queue->next;
            e->n_queued--;
        }
        pthread_mutex_unlock(&e->mu);

        while (dead != NULL) {
            struct dc_gen *next = dead->next;
            gen_finish_unadmitted(e, dead, DC_GEN_FINISH_CANCELLED);
            dead = next;
        }
        if (job != NULL) {
            if (job->kind == JOB_SCORE)
                run_score(e, job);
            else
                run_embed(e, job);
            pthread_mutex_lock(&e->mu);
            job->done = true;
            pthread_cond_broadcast(&e->job_cond);
            pthread_mutex_unlock(&e->mu);
        }
        for (uint32_t i = 0; i < n_admit; i++) {
            size_t common;
            struct slot *s = pick_slot(e, admit[i]->prompt, admit[i]->n_prompt, &common);
            slot_admit(e, s, admit[i], common);
        }
        step(e);
    }
    finish_all(e);
    return NULL;
}

/* Queues a job and waits for the scheduler to run it. */
static int run_job(struct dc_engine *e, struct job *j)
{
    struct job **pp;

    pthread_mutex_lock(&e->mu);
    if (atomic_load(&e->stopping)) {
        pthread_mutex_unlock(&e->mu);
        return DC_ESTATE;
    }
    for (pp = &e->jobs; *pp != NULL; pp = &(*pp)->next)
        ;
    *pp = j;
    pthread_cond_signal(&e->cond);
    while (!j->done)
        pthread_cond_wait(&e->job_cond, &e->mu);
    pthread_mutex_unlock(&e->mu);
    return j->rc;
}

int dc_engine_score(struct dc_engine *e, const int32_t *prompt, size_t n_prompt,
                    const int32_t *completion, size_t n_completion, uint32_t n_top,
                    struct dc_token_score **scores)
{
    struct job j = {.kind = JOB_SCORE};
    int32_t *tokens;
    int rc;

    *scores = NULL;
    if (n_prompt == 0 || n_completion == 0 || n_top > DC_ENGINE_MAX_TOP_LOGPROBS)
        return DC_EINVAL;
    if (e->embed_only || e->vocab_only)
        return DC_EUNSUPPORTED;
    if (n_prompt + n_completion > e->per_slot)
        return DC_ELIMIT;
    tokens = dc_malloc(sizeof(int32_t) * (n_prompt + n_completion));
    j.scores = dc_calloc(n_completion, sizeof(*j.scores));
    if (tokens == NULL || j.scores == NULL) {
        dc_free(tokens);
        dc_free(j.scores);
        return DC_ENOMEM;
    }
    memcpy(tokens, prompt, sizeof(int32_t) * n_prompt);
    memcpy(tokens + n_prompt, completion, sizeof(int32_t) * n_completion);
    for (size_t i = 0; i < n_prompt + n_completion; i++) {
        if (tokens[i] < 0 || tokens[i] >= e->n_vocab) {
            dc_free(tokens);
            dc_free(j.scores);
            return DC_EINVAL;
        }
    }
    j.tokens = tokens;
    j.n_prompt = n_prompt;
    j.n_total = n_prompt + n_completion;
    j.n_top = n_top;
    rc = run_job(e, &j);
    dc_free(tokens);
    if (rc < 0) {
        dc_free(j.scores);
        return rc;
    }
    *scores = j.scores;
    return 0;
}

int dc_engine_embed(struct dc_engine *e, const char *const *texts, size_t n, float **out,
                    uint32_t *n_embd, uint64_t *n_tokens)
{
    struct job j = {.kind = JOB_EMBED};
    int32_t **ids;
    size_t *lens;
    uint64_t total = 0;
    int rc = 0;

    *out = NULL;
    if (n_embd != NULL)
        *n_embd = e->info.n_embd;
    if (n_tokens != NULL)
        *n_tokens = 0;
    if (n == 0)
        return DC_EINVAL;
    if (e->vocab_only)
        return DC_EUNSUPPORTED;
    ids = dc_calloc(n, sizeof(*ids));
    lens = dc_calloc(n, sizeof(*lens));
    j.embd = dc_malloc(sizeof(float) * n * e->info.n_embd);
    if (ids == NULL || lens == NULL || j.embd == NULL) {
        rc = DC_ENOMEM;
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        const char *t = texts[i] != NULL ? texts[i] : "";
        rc = dc_engine_tokenize(e, t, strlen(t), true, false, &ids[i], &lens[i]);
        if (rc < 0)
            goto out_free;
        if (lens[i] == 0) {
            rc = DC_EINVAL;
            goto out_free;
        }
        if (lens[i] > e->per_slot || lens[i] > e->n_batch) {
            rc = DC_ELIMIT;
            goto out_free;
        }
        total += lens[i];
    }
    j.text_ids = ids;
    j.text_n = lens;
    j.n_texts = n;
    rc = run_job(e, &j);
    if (rc == 0) {
        *out = j.embd;
        j.embd = NULL;
        if (n_tokens != NULL)
            *n_tokens = total;
    }

out_free:
    for (size_t i = 0; ids != NULL && i < n; i++)
        dc_free(ids[i]);
    dc_free(ids);
    dc_free(lens);
    dc_free(j.embd);
    return rc;
}

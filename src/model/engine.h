/* SPDX-License-Identifier: MIT */
/*
 * engine.h - the serving engine and model registry over llama.cpp, in C11 terms. Nothing here
 * exposes llama.h: the rest of Democritus (api, swarm, daemon, cli) sees only these types.
 *
 * Threads. A dc_engine owns one loaded model and one scheduler thread. Requests enter the
 * engine's queue from any thread (dc_engine_submit); the scheduler decodes every active
 * sequence together in one llama_batch per step (continuous batching over separate seq ids),
 * samples each, and reports tokens through the request's callback ON THE SCHEDULER THREAD. A
 * callback must be short and must not block or call back into the engine except
 * dc_gen_cancel(): copy what it needs and hand it to its own thread (uv_async_send, a
 * condition variable, MHD_resume_connection).
 *
 * Lifetime of a request. dc_engine_submit() returns a handle holding one reference for the
 * caller; the engine holds another until it has delivered DC_GEN_EV_DONE (always exactly one,
 * always last, also after a cancel or an error). The caller drops its reference with
 * dc_gen_release() once it will no longer cancel; either side may go first.
 */
#ifndef DC_ENGINE_H
#define DC_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define DC_ENGINE_MAX_TOP_LOGPROBS 20 /* OpenAI's top_logprobs maximum */
#define DC_ENGINE_MAX_STOP         8  /* stop strings per request */

/* ---- engine ---- */

struct dc_engine;
struct dc_gen;

enum dc_pooling {
    DC_POOLING_DEFAULT = 0, /* the model's own (BERT: its metadata; decoders: mean) */
    DC_POOLING_MEAN,
    DC_POOLING_CLS,
    DC_POOLING_LAST,
};

struct dc_engine_config {
    const char *model_path;  /* borrowed; a GGUF already validated by dc_gguf_open */
    uint32_t n_ctx_per_slot; /* context one request may use; 0 = min(train ctx, 4096). The KV
                                cache holds n_ctx_per_slot x n_parallel cells. */
    uint32_t n_parallel;     /* concurrent sequences (slots); 0 = 4 */
    uint32_t n_batch;        /* max tokens per decode; 0 = 512 */
    /* Time one scheduler step should take at most, in ms, where a cancel cannot stop the decode
     * in flight (GPU backends; recurrent models): the prompt chunks of a step that carries more
     * than one sequence are cut so that its predicted time stays under it, which bounds how
     * long a cancel waits (docs/engine.md, "Scheduling"). 0 = 50. */
    uint32_t step_budget_ms;
    int n_threads;    /* llama.cpp compute threads; 0 = physical cores */
    int n_gpu_layers; /* -1 = all that fit (GPU builds), 0 = CPU */
    bool embeddings;  /* load for embeddings (BERT-family models need this) */
    enum dc_pooling pooling;
    /* Load progress in [0, 1] from the loading thread; return false to abort the load, which
     * then fails with DC_ECANCELED. Optional. */
    bool (*progress_cb)(float progress, void *ud);
    void *progress_ud;
    /* Load only the vocabulary (any GGUF with tokenizer metadata, also a vocab-only file):
     * tokenize, token_piece, token_is_eog and chat_render work; there is no context and no
     * scheduler, and submit/score/embed return DC_EUNSUPPORTED. */
    bool vocab_only;
};

#define DC_ECANCELED (-ECANCELED)

/* What a loaded model is. Strings are owned by the engine and live as long as it does. */
struct dc_engine_info {
    const char *path;
    const char *arch;          /* general.architecture */
    const char *name;          /* general.name, or the file name */
    const char *chat_template; /* tokenizer.chat_template, or NULL */
    uint32_t n_ctx_train;
    uint32_t n_ctx;          /* KV cells in total */
    uint32_t n_ctx_per_slot; /* the context one request may use (prompt + generated) */
    uint32_t n_parallel;
    uint32_t n_vocab;
    uint32_t n_embd;
    uint64_t n_params;
    uint64_t size_bytes;  /* model weights */
    uint64_t state_bytes; /* KV cache and compute buffers: what loading cost beyond weights */
    bool has_encoder;     /* BERT-like: embeddings only, no generation */
};

/*
 * Loads a model and starts its scheduler thread. Blocks for the load (seconds for big models;
 * cfg->progress_cb may abort it). Returns 0; DC_ENOENT / -errno for an unreadable file;
 * DC_ECORRUPT when dc_gguf_open rejects it (dc_gguf_error() says why); DC_EUNSUPPORTED when
 * llama.cpp cannot load it (unknown architecture, ...); DC_ECANCELED; DC_ENOMEM. On failure
 * 'err' (may be NULL) receives one line describing it (heap, dc_free()).
 */
DC_MUST_CHECK int dc_engine_open(const struct dc_engine_config *cfg, struct dc_engine **out,
                                 char **err);

/*
 * Stops the scheduler (every pending and active request ends with DC_GEN_FINISH_CANCELLED
 * before this returns), frees the model. No other call on 'e' (submit, score, embed, ...) may
 * run concurrently with it or start after it; dc_gen_cancel/release on its requests remain
 * safe. NULL is a no-op.
 */
void dc_engine_close(struct dc_engine *e);

const struct dc_engine_info *dc_engine_info(const struct dc_engine *e);

struct dc_engine_stats {
    uint32_t active;        /* requests holding a slot (generating or prefilling) */
    uint32_t queued;        /* waiting for a slot */
    uint64_t tokens_prompt; /* totals since open */
    uint64_t tokens_generated;
    uint64_t requests_done;
};
/* Thread-safe snapshot. */
void dc_engine_stats(struct dc_engine *e, struct dc_engine_stats *out);

/*
 * Tokenizes 'len' bytes of 'text' into a heap array '*ids' (dc_free) of '*n' tokens.
 * add_special: BOS/EOS as the model's metadata says; parse_special: special-token text such
 * as "<|im_start|>" becomes its token (chat prompts), else it is literal text. Thread-safe.
 */
DC_MUST_CHECK int dc_engine_tokenize(struct dc_engine *e, const char *text, size_t len,
                                     bool add_special, bool parse_special, int32_t **ids,
                                     size_t *n);
/* The text of one token (special tokens rendered) into a heap string '*out'. Thread-safe. */
DC_MUST_CHECK int dc_engine_token_piece(struct dc_engine *e, int32_t id, char **out);
/* True for end-of-generation tokens (EOS, EOT, <|im_end|>, ...). */
bool dc_engine_token_is_eog(struct dc_engine *e, int32_t id);

/* ---- chat ---- */

struct dc_chat_msg {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
};

/*
 * Renders messages with the model's chat template (llama_chat_apply_template's families,
 * recognised from tokenizer.chat_template); add_assistant appends the assistant prefix. An
 * unrecognised or missing template falls back to chatml and sets '*fallback' (may be NULL) so
 * the caller can warn once naming the model. '*out' is a heap string (dc_free).
 */
DC_MUST_CHECK int dc_engine_chat_render(struct dc_engine *e, const struct dc_chat_msg *msgs,
                                        size_t n_msgs, bool add_assistant, char **out,
                                        bool *fallback);

/* ---- generation ---- */

struct dc_sampling {
    float temperature;       /* <= 0: greedy (argmax) */
    float top_p;             /* 1 = off */
    float min_p;             /* 0 = off */
    int32_t top_k;           /* 0 = off */
    float repeat_penalty;    /* 1 = off */
    int32_t repeat_last_n;   /* 0 = off; -1 = whole context */
    float presence_penalty;  /* 0 = off (OpenAI semantics) */
    float frequency_penalty; /* 0 = off */
    uint64_t seed;           /* used when has_seed; otherwise random */
    bool has_seed;
};

/* Defaults: temperature 0.8, top_p 0.95, min_p 0.05, top_k 40, penalties off, random seed. */
void dc_sampling_defaults(struct dc_sampling *s);

struct dc_gen_request {
    /* The prompt: either text (tokenized with add_special = true and parse_special =
     * prompt_parse_special) or tokens (borrowed; copied by submit). Exactly one of them. */
    const char *prompt;
    size_t prompt_len;
    bool prompt_parse_special; /* true for rendered chat prompts */
    const int32_t *prompt_ids;
    size_t n_prompt_ids;

    struct dc_sampling sampling;
    int32_t max_tokens; /* <= 0: until the slot's context is full */
    const char *stop[DC_ENGINE_MAX_STOP];
    size_t n_stop;
    uint32_t n_logprobs; /* 0..20: top alternatives per token (raw distribution) */
    bool logprobs;       /* report each chosen token's logprob */
    const char *grammar; /* GBNF, or NULL */
    bool json_object;    /* constrain to a JSON object (built-in grammar) */
    bool ignore_eos;     /* benchmarks: never stop at end-of-generation */
    int32_t priority;    /* higher first among queued requests; FIFO within a priority */
};

struct dc_top_logprob {
    int32_t id;
    float logprob;
    char text[32]; /* the token's piece, cut (at a UTF-8 boundary) to fit; bytes that are not
                      UTF-8 on their own (byte tokens) as U+FFFD */
};

enum dc_gen_finish {
    DC_GEN_FINISH_NONE = 0,
    DC_GEN_FINISH_STOP,      /* end-of-generation token or a stop string */
    DC_GEN_FINISH_LENGTH,    /* max_tokens or the slot's context */
    DC_GEN_FINISH_CANCELLED, /* dc_gen_cancel or engine close */
    DC_GEN_FINISH_ERROR,     /* see 'error' and 'error_msg' */
};

/* "stop", "length", "cancelled", "error". */
const char *dc_gen_finish_name(enum dc_gen_finish f);

enum dc_gen_event_type {
    DC_GEN_EV_TOKEN, /* one sampled token */
    DC_GEN_EV_DONE,  /* the request ended; always the last event */
};

struct dc_gen_event {
    enum dc_gen_event_type type;
    /* DC_GEN_EV_TOKEN: the token and the text it releases. 'text' is the next piece of output,
     * always whole UTF-8 characters, with stop-string matches held back until they are known
     * not to match (so text may be empty for a token and longer for a later one). Never
     * includes the end-of-generation token's text nor a matched stop string. An
     * end-of-generation token is reported too (it has a logprob like any other): its text is
     * empty, or the held-back tail released at the end. A byte sequence that is not UTF-8
     * comes out as U+FFFD. */
    int32_t id;
    const char *text; /* borrowed for the callback's duration; 'text_len' bytes, NUL-ended */
    size_t text_len;
    float logprob; /* of the chosen token in the raw distribution (log-softmax of logits) */
    uint32_t n_top;
    const struct dc_top_logprob *top; /* n_top entries, best first */
    /* DC_GEN_EV_DONE */
    enum dc_gen_finish finish;
    int error;             /* DC_E* when finish == DC_GEN_FINISH_ERROR */
    const char *error_msg; /* one line, or NULL */
    uint32_t n_prompt;     /* prompt tokens */
    uint32_t n_cached;     /* of which reused from a cached prefix */
    uint32_t n_generated;
    double queue_ms, prompt_ms, gen_ms;
};

typedef void (*dc_gen_cb)(void *ud, const struct dc_gen_event *ev);

/*
 * Queues a request. 'req' and its strings are copied. Returns 0 with '*out' the caller's
 * reference; DC_EINVAL for bad parameters; DC_ELIMIT when prompt + max_tokens cannot fit the
 * slot's context (the API's context_length_exceeded; nothing is queued and no callback fires);
 * DC_ESTATE when the engine is closing; DC_EUNSUPPORTED for generation on an embedding-only
 * model. On failure no callback ever fires.
 */
DC_MUST_CHECK int dc_engine_submit(struct dc_engine *e, const struct dc_gen_request *req,
                                   dc_gen_cb cb, void *ud, struct dc_gen **out);

/* Asks the request to stop; thread-safe, idempotent, safe after DONE. Its slot (and KV) is freed
 * and DONE follows with DC_GEN_FINISH_CANCELLED (unless it had already finished): at once for a
 * queued request or when the decode in flight can be stopped (CPU backend), otherwise after
 * that step, which step_budget_ms bounds. */
void dc_gen_cancel(struct dc_gen *g);

/* Drops the caller's reference. NULL is a no-op. */
void dc_gen_release(struct dc_gen *g);

/* ---- scoring (teacher forcing) and embeddings: blocking, run by the scheduler ---- */

/* Both run on the scheduler thread between decode steps, in an idle slot: they wait while every
 * slot is busy, and take the next free one before queued generation requests do. */

struct dc_token_score {
    int32_t id;
    float logprob;
    uint32_t n_top;
    struct dc_top_logprob top[DC_ENGINE_MAX_TOP_LOGPROBS];
};

/*
 * Scores 'completion' after 'prompt' in one batched decode: for every completion position i,
 * scores[i] = logprob of completion[i] given everything before it, plus the top 'n_top'
 * alternatives of that raw distribution. '*scores' is a heap array of n_completion entries
 * (dc_free). Blocks until done. DC_ELIMIT when it does not fit a slot's context.
 */
DC_MUST_CHECK int dc_engine_score(struct dc_engine *e, const int32_t *prompt, size_t n_prompt,
                                  const int32_t *completion, size_t n_completion, uint32_t n_top,
                                  struct dc_token_score **scores);

/*
 * Embeds 'n' texts: '*out' is a heap array of n x n_embd floats (dc_free), each row pooled as
 * the engine was configured and L2-normalised; '*n_tokens' (may be NULL) the total tokens.
 * Blocks. DC_EINVAL for n == 0 or a text with no tokens; DC_ELIMIT for a text longer than a
 * slot's context (or than n_batch on an engine opened without 'embeddings'); DC_EUNSUPPORTED
 * on a vocab_only engine.
 */
DC_MUST_CHECK int dc_engine_embed(struct dc_engine *e, const char *const *texts, size_t n,
                                  float **out, uint32_t *n_embd, uint64_t *n_tokens);

/* ---- registry: the models folder, sha256 cache, load on demand, LRU under a budget ---- */

/*
 * The registry is thread-safe: every function below may be called from any thread (REST
 * handlers, the daemon, the CLI). It lists the *.gguf files of models_dir (plus default_model),
 * validates each with dc_gguf_open, hashes each once (sha256, cached by size + mtime in
 * cache_path), and loads models on demand under a memory budget.
 *
 * Load isolation. llama.cpp aborts the whole process on some hyperparameters our validator
 * cannot judge (GGML_ASSERT on a zero layer count, ...). So a file the registry has not loaded
 * before (no "probe ok" for its path + size + mtime in memory or in cache_path) is first loaded
 * in a child process that loads it, decodes one token and exits. A child that crashes, aborts,
 * fails or runs past probe_timeout_ms makes the registry refuse the file for good (the refusal
 * is cached too); the model is then never loaded in-process. The children are forked by a
 * single-threaded helper process that dc_registry_open forks (so no child inherits a lock held
 * by another thread): open the registry before starting other threads when you can.
 */

struct dc_registry;

struct dc_registry_config {
    const char *models_dir;         /* borrowed; may be missing (then only default_model) */
    const char *default_model;      /* [expert].model_path, or NULL: then the first in models_dir */
    const char *cache_path;         /* sha256 cache file (state_dir/models.json), or NULL */
    uint64_t memory_budget_bytes;   /* 0 = unlimited */
    uint32_t probe_timeout_ms;      /* child probe load limit; 0 = 300000 (5 minutes) */
    bool no_probe;                  /* trust every file: load in-process without a child probe */
    bool no_hash;                   /* skip sha256 (fast listing); entries keep sha256 "" unless
                                       cached */
    struct dc_engine_config engine; /* template for every load (model_path ignored) */
};

struct dc_model_entry {
    char *id; /* file name without .gguf */
    char *path;
    char *arch;         /* NULL when the file did not validate */
    char *name;         /* general.name, or the id */
    char *quantization; /* "Q4_K_M", ... */
    uint64_t n_params;
    uint64_t size_bytes; /* file size */
    uint64_t n_ctx_train;
    char sha256[65]; /* hex, "" until computed */
    bool loaded;
    bool is_default;
    int64_t mtime; /* seconds since the epoch */
    /* Why the file cannot be served: dc_gguf_open's error ("corrupt: ...") or llama.cpp's
     * refusal from the probe; NULL for a usable file. Acquiring such an entry fails. */
    char *error;
    uint32_t refs;        /* current users (acquired, not yet released) */
    uint64_t state_bytes; /* KV cache + buffers of its last load; 0 if never loaded */
};

/*
 * Opens the registry and scans models_dir (dc_registry_scan). 'cfg' and its strings are copied.
 * Unless cfg->no_probe, forks the prober process (see "Load isolation"). Returns 0; DC_ENOMEM;
 * -errno when models_dir exists but cannot be read or the prober cannot be forked. A missing
 * models_dir is no error. Files that do not validate are listed with 'error' set, not refused.
 */
DC_MUST_CHECK int dc_registry_open(const struct dc_registry_config *cfg, struct dc_registry **out);
/* Unloads every model: requests still running on them end cancelled (dc_engine_close). The
 * caller must have stopped using the engines it acquired. NULL is a no-op. */
void dc_registry_close(struct dc_registry *r);

/* Rescans models_dir; computes missing sha256 (cached by size + mtime), then saves the cache.
 * Loaded models stay loaded (a loaded file that vanished stays listed until unloaded). Returns
 * 0, DC_ENOMEM, or -errno when models_dir cannot be read. A cache that cannot be written is
 * not an error (it only costs a rehash next time). */
DC_MUST_CHECK int dc_registry_scan(struct dc_registry *r);

/*
 * Computes the sha256 of every listed model that has none yet (a registry opened with no_hash,
 * so that start-up never waits on hashing gigabytes), one file at a time without holding the
 * registry's lock, and records each in the cache file. Meant for a thread of its own; checks
 * '*stop' (may be NULL) between 1 MiB reads. Returns 0 when nothing is left to hash,
 * DC_ECANCELED once '*stop' is set, or DC_ENOMEM. An unreadable file is skipped for good.
 */
DC_MUST_CHECK int dc_registry_hash_missing(struct dc_registry *r, const atomic_bool *stop);

/* A snapshot of the entries, default first, then by id: heap array '*out' of '*n' (free with
 * dc_model_entries_free). */
DC_MUST_CHECK int dc_registry_list(struct dc_registry *r, struct dc_model_entry **out, size_t *n);
void dc_model_entries_free(struct dc_model_entry *v, size_t n);

/*
 * Returns the loaded engine for 'id' ("local" or NULL = the default), loading it on demand
 * (unloading least-recently-used idle models to fit the budget). The engine stays loaded until
 * the matching dc_registry_release(). DC_ENOENT for an unknown id; DC_ECORRUPT for a file that
 * did not validate; DC_EUNSUPPORTED when llama.cpp rejected it (in the probe child or in
 * dc_engine_open); DC_ELIMIT when it cannot fit the budget even after unloading every idle
 * model; other load errors as dc_engine_open. On failure 'err' (may be NULL) receives one line
 * (heap, dc_free()). Size before the first load is estimated from the file size; after a load
 * it is the engine's size_bytes + state_bytes.
 */
DC_MUST_CHECK int dc_registry_acquire(struct dc_registry *r, const char *id, struct dc_engine **out,
                                      char **err);
/* Drops one use of an engine from dc_registry_acquire. It stays loaded (idle) until the budget
 * needs its memory or the registry closes. NULL is a no-op. */
void dc_registry_release(struct dc_registry *r, struct dc_engine *e);

/* ---- models pull: download a GGUF into models_dir ---- */

struct dc_pull_progress {
    uint64_t received; /* bytes in NAME.part so far (including a resumed prefix) */
    uint64_t total;    /* expected final size, 0 when unknown */
};

/*
 * Downloads 'url' into 'dir'/'name' (name NULL: the URL path's last segment, which must end in
 * .gguf; a name without .gguf gets it appended). Writes into NAME.part and resumes an existing
 * one with an HTTP Range request (a server that ignores Range restarts from zero). The first
 * four bytes must be "GGUF": otherwise the transfer stops and the partial file is deleted
 * (DC_ECORRUPT). After the transfer the file is validated with dc_gguf_open (DC_ECORRUPT and
 * deleted when it fails), then renamed to NAME. 'progress' (may be NULL) is called from this
 * thread now and then. On success '*path_out' (heap) is the final path and 'sha256_hex' (65
 * bytes) its hash. Returns 0; DC_EINVAL for a bad URL or name; DC_EEXIST when NAME exists;
 * DC_EPEER for an HTTP error status or transfer failure; DC_ECORRUPT; -errno for files.
 * 'err' (may be NULL) receives one line on failure (heap, dc_free()).
 */
DC_MUST_CHECK int dc_model_pull(const char *url, const char *dir, const char *name,
                                void (*progress)(const struct dc_pull_progress *p, void *ud),
                                void *ud, char **path_out, char sha256_hex[65], char **err);

#endif

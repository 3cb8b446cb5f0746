/* SPDX-License-Identifier: MIT */
/*
 * infer_server.c - the serving side of /democritus/infer/1.0.0.
 *
 * A request lives in three places in turn. The loop thread reads its frame from the stream and
 * checks the operator's bounds (serve_remote, deny/allow lists, per-peer quotas, caps); a
 * refusal is answered with a signed InferDone at once. The libuv threadpool then acquires the
 * model (which may load it: seconds), renders the chat and tokenizes it, so the loop never
 * blocks. Back on the loop the prompt is checked against the context cap and submitted; the
 * engine's scheduler thread reports tokens, which are copied into events and queued for the
 * loop (mutex + uv_async_t): only the loop touches the host, the stream and the signing.
 *
 * Ownership: the loop owns every 'struct req'. A request is freed when nothing refers to it any
 * more: its stream is gone (closed, reset or detached after InferDone), no threadpool work is
 * running for it, and the engine has delivered DONE (the engine holds its callback pointer
 * until then). The engine's DONE event is allocated at submit time, so it cannot be lost to an
 * allocation failure on the scheduler thread.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "base/log.h"
#include "swarm/swarm.h"

#define LOG "infer"

#define DEFAULT_MAX_STREAMS          64
#define DEFAULT_MAX_STREAMS_PER_PEER 4
#define DEFAULT_MAX_TOKENS           1024
#define QUOTA_WINDOW_MS              60000
#define DEFAULT_READ_TIMEOUT_MS      10000
#define SWEEP_INTERVAL_MS            1000

/* Per-peer accounting: requests and tokens in the current one-minute window, streams open. */
struct quota {
    struct dc_peer_id peer;
    uint32_t active;
    uint64_t window_start_ms;
    uint32_t requests;
    uint64_t tokens;
    struct quota *next;
};

struct ev {
    struct ev *next;
    struct req *req;
    enum dc_gen_event_type type;
    int32_t id;
    float logprob;
    uint32_t n_top;
    struct dc_top_logprob top[DC_INFER_MAX_TOP];
    enum dc_gen_finish finish;
    int error;
    uint32_t n_prompt, n_generated;
    size_t text_len;
    char text[]; /* text_len bytes + NUL */
};

struct work;

enum req_state {
    REQ_READING,  /* waiting for the InferRequest frame */
    REQ_LOADING,  /* threadpool: acquire, render, tokenize */
    REQ_RUNNING,  /* submitted to the engine */
    REQ_FINISHED, /* InferDone sent (or the stream went away) */
};

struct req {
    struct dc_infer_server *srv;
    struct req *prev, *next;
    struct dc_host_stream *stream; /* NULL once closed, reset or detached */
    struct dc_peer_id peer;
    struct quota *quota; /* counts this request in 'active' while set */
    enum req_state state;
    uint64_t opened_ms; /* uv_now at on_open: the request must arrive within read_timeout_ms */
    struct dc_infer_reader reader;
    uint8_t rid[DC_INFER_REQUEST_ID_LEN];
    struct dc_infer_transcript tr;
    bool have_request;
    /* The request, copied out of its frame. */
    struct dc_chat_msg *msgs;
    size_t n_msgs;
    char *model;
    char *cont; /* NULL, or the answer's start to continue */
    char *stop[DC_INFER_MAX_STOP];
    size_t n_stop;
    struct dc_sampling sampling;
    int32_t max_tokens;
    bool max_tokens_given; /* false: the cap, shortened to what the context leaves */
    uint32_t n_logprobs;
    bool want_logprobs;
    /* Running. */
    struct work *work; /* threadpool work in flight */
    struct dc_engine *engine;
    struct dc_gen *gen; /* NULL before submit and after DONE */
    struct ev *done_ev; /* preallocated DONE event, handed to the engine thread */
    bool gen_live;      /* submitted and DONE not yet processed on the loop */
    atomic_bool lost;   /* the engine thread could not queue a token */
    uint64_t seq;
    uint32_t n_prompt;
};

struct work {
    uv_work_t w;
    struct dc_infer_server *srv;
    struct req *req; /* NULL once orphaned by dc_infer_server_free */
    struct dc_registry *reg;
    /* in */
    const char *model;
    const struct dc_chat_msg *msgs;
    size_t n_msgs;
    const char *cont;
    /* out */
    int rc;
    char *err;
    struct dc_engine *engine;
    int32_t *ids;
    size_t n_ids;
};

struct dc_infer_server {
    uv_loop_t *loop;
    struct dc_host *host;
    const struct dc_identity *id;
    struct dc_registry *reg;
    bool serve_remote;
    uint32_t max_streams, max_per_peer, rpm, tpm, max_tokens, max_context;
    float default_temperature;
    uint32_t read_timeout_ms;
    struct dc_peer_id *allow, *deny;
    size_t n_allow, n_deny;

    struct req *reqs;
    uint32_t n_reqs;
    struct quota *quotas;
    struct dc_infer_server_stats stats;
    bool closing;

    uv_timer_t sweep; /* resets streams whose request does not arrive in time */
    int handles;      /* open handles (async, sweep); the memory goes with the last */

    /* Shared with the engine and threadpool threads. */
    uv_async_t async;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct ev *q_head, *q_tail;
    uint32_t n_gens;    /* submitted, DONE not yet queued */
    uint32_t n_working; /* threadpool work queued or running */
};

/* ---- quotas ------------------------------------------------------------------------------ */

static struct quota *quota_get(struct dc_infer_server *s, const struct dc_peer_id *peer)
{
    uint64_t now = uv_now(s->loop);
    struct quota **pp = &s->quotas, *q;

    /* Sweep entries of peers with nothing open whose window ran out, so the list stays as long
     * as the set of recently active peers. */
    while ((q = *pp) != NULL) {
        if (dc_peer_id_equal(&q->peer, peer))
            break;
        if (q->active == 0 && now - q->window_start_ms >= QUOTA_WINDOW_MS) {
            *pp = q->next;
            dc_free(q);
            continue;
        }
        pp = &q->next;
    }
    if (q == NULL) {
        q = dc_calloc(1, sizeof(*q));
        if (q == NULL)
            return NULL;
        q->peer = *peer;
        q->window_start_ms = now;
        q->next = s->quotas;
        s->quotas = q;
    }
    if (now - q->window_start_ms >= QUOTA_WINDOW_MS) {
        q->window_start_ms = now;
        q->requests = 0;
        q->tokens = 0;
    }
    return q;
}

static bool peer_listed(const struct dc_peer_id *list, size_t n, const struct dc_peer_id *p)
{
    for (size_t i = 0; i < n; i++)
        if (dc_peer_id_equal(&list[i], p))
            return true;
    return false;
}

/* ---- requests ---------------------------------------------------------------------------- */

static void req_release_engine(struct req *r)
{
    if (r->gen != NULL) {
        dc_gen_release(r->gen);
        r->gen = NULL;
    }
    if (r->engine != NULL) {
        dc_registry_release(r->srv->reg, r->engine);
        r->engine = NULL;
    }
}

static void req_unquota(struct req *r)
{
    if (r->quota != NULL) {
        r->quota->active--;
        r->quota = NULL;
    }
}

static void req_free(struct req *r)
{
    struct dc_infer_server *s = r->srv;

    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        s->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    s->n_reqs--;
    req_unquota(r);
    req_release_engine(r);
    dc_free(r->done_ev);
    dc_infer_reader_cleanup(&r->reader);
    for (size_t i = 0; i < r->n_msgs; i++) {
        dc_free((char *)r->msgs[i].role);
        dc_free((char *)r->msgs[i].content);
    }
    dc_free(r->msgs);
    dc_free(r->model);
    dc_free(r->cont);
    for (size_t i = 0; i < r->n_stop; i++)
        dc_free(r->stop[i]);
    dc_free(r);
}

/* Frees 'r' when nothing refers to it any more (see the file comment). */
static void req_maybe_free(struct req *r)
{
    if (r->stream == NULL && r->work == NULL && !r->gen_live)
        req_free(r);
}

/* Ends our use of the stream after a final frame: FIN after the queued bytes; the host frees
 * the stream once the client closes too (its callbacks then see a NULL user pointer). */
static void req_detach(struct req *r)
{
    if (r->stream == NULL)
        return;
    dc_host_stream_set_user(r->stream, NULL);
    (void)!dc_host_stream_close(r->stream);
    r->stream = NULL;
}

/* Drops the stream at once (protocol violation, write failure). */
static void req_reset(struct req *r)
{
    if (r->stream == NULL)
        return;
    dc_host_stream_reset(r->stream);
    r->stream = NULL;
    if (r->gen != NULL)
        dc_gen_cancel(r->gen);
}

/* Writes an encoded frame; on failure the stream is reset. */
static int req_write(struct req *r, struct dc_buf *b)
{
    int rc;

    if (r->stream == NULL)
        return DC_ECLOSED;
    rc = dc_host_stream_write(r->stream, b->data, b->len);
    if (rc < 0) {
        char p[DC_PEER_ID_STR_MAX];
        if (dc_peer_id_to_string(&r->peer, p, sizeof(p)) < 0)
            snprintf(p, sizeof(p), "?");
        dc_log_warn(LOG, "dropping the stream of %s: %s", p, dc_strerror(rc));
        req_reset(r);
    }
    return rc;
}

/* Sends InferDone and detaches. 'code' NULL for a normal end. */
static void req_finish(struct req *r, const char *finish, const char *code, const char *error,
                       uint32_t n_prompt, uint32_t n_generated)
{
    struct dc_infer_done d = {
        .prompt_tokens = n_prompt,
        .completion_tokens = n_generated,
        .finish_reason = finish,
        .error = error,
        .error_code = code,
    };
    struct dc_buf b;
    int rc;

    r->state = REQ_FINISHED;
    req_unquota(r);
    if (r->stream == NULL)
        return;
    dc_buf_init(&b, 0);
    rc = dc_infer_done_encode(r->srv->id, r->rid, &d, r->have_request ? &r->tr : NULL, &b);
    if (rc == 0)
        rc = req_write(r, &b);
    else
        req_reset(r);
    dc_buf_cleanup(&b);
    if (rc == 0)
        req_detach(r);
}

static void req_refuse(struct req *r, const char *code, const char *error)
{
    char p[DC_PEER_ID_STR_MAX];

    r->srv->stats.refused++;
    if (dc_peer_id_to_string(&r->peer, p, sizeof(p)) < 0)
        snprintf(p, sizeof(p), "?");
    dc_log_info(LOG, "refused a request from %s: %s", p, error);
    req_finish(r, "refused", code, error, 0, 0);
}

/* ---- engine thread ------------------------------------------------------------------------- */

/* Runs on the engine's scheduler thread: copy and queue, nothing else. */
static void on_gen_event(void *ud, const struct dc_gen_event *gev)
{
    struct req *r = ud;
    struct dc_infer_server *s = r->srv;
    struct ev *e;

    if (gev->type == DC_GEN_EV_DONE) {
        e = r->done_ev; /* preallocated: DONE is never lost */
        e->finish = gev->finish;
        e->error = gev->error;
        e->n_prompt = gev->n_prompt;
        e->n_generated = gev->n_generated;
    } else {
        e = dc_malloc(sizeof(*e) + gev->text_len + 1);
        if (e == NULL) {
            /* The client would miss a token: the loop stops the request at its next event. */
            atomic_store(&r->lost, true);
            return;
        }
        memset(e, 0, sizeof(*e));
        e->id = gev->id;
        e->logprob = gev->logprob;
        e->n_top = gev->n_top < DC_INFER_MAX_TOP ? gev->n_top : DC_INFER_MAX_TOP;
        memcpy(e->top, gev->top, e->n_top * sizeof(e->top[0]));
        e->text_len = gev->text_len;
        memcpy(e->text, gev->text, gev->text_len);
        e->text[gev->text_len] = '\0';
    }
    e->type = gev->type;
    e->req = r;
    e->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->q_tail != NULL)
        s->q_tail->next = e;
    else
        s->q_head = e;
    s->q_tail = e;
    if (gev->type == DC_GEN_EV_DONE) {
        s->n_gens--;
        pthread_cond_broadcast(&s->cond);
    }
    /* Inside the lock, so dc_infer_server_free cannot close the handle in between. */
    uv_async_send(&s->async);
    pthread_mutex_unlock(&s->mu);
}

/* ---- loop: engine events ------------------------------------------------------------------- */

static void handle_token(struct req *r, struct ev *e)
{
    struct dc_infer_token t = {0};
    struct dc_buf b;
    int rc;

    if (r->stream == NULL || r->state != REQ_RUNNING)
        return;
    if (atomic_load(&r->lost)) {
        req_reset(r);
        return;
    }
    t.seq = r->seq;
    t.text = e->text;
    t.text_len = e->text_len;
    t.token_id = e->id;
    t.has_logprob = r->want_logprobs;
    t.logprob = e->logprob;
    t.n_top = r->n_logprobs < e->n_top ? r->n_logprobs : e->n_top;
    for (size_t i = 0; i < t.n_top; i++) {
        t.top[i].id = e->top[i].id;
        t.top[i].logprob = e->top[i].logprob;
        t.top[i].text = e->top[i].text;
    }
    dc_buf_init(&b, 0);
    rc = dc_infer_token_encode(r->srv->id, r->rid, &t, &r->tr, &b);
    if (rc == 0 && req_write(r, &b) == 0) {
        r->seq++;
        r->srv->stats.tokens++;
        if (r->quota != NULL)
            r->quota->tokens++;
    } else if (rc < 0) {
        req_reset(r);
    }
    dc_buf_cleanup(&b);
}

static void handle_done(struct req *r, struct ev *e)
{
    char msg[160];

    r->done_ev = NULL; /* 'e' is it; freed by the caller */
    r->gen_live = false;
    if (r->state == REQ_RUNNING && r->stream != NULL) {
        if (e->finish == DC_GEN_FINISH_ERROR) {
            snprintf(msg, sizeof(msg), "the engine failed: %s", dc_strerror(e->error));
            req_finish(r, "error", DC_INFER_ERR_INTERNAL, msg, e->n_prompt, e->n_generated);
        } else {
            req_finish(r, dc_gen_finish_name(e->finish), NULL, NULL, e->n_prompt, e->n_generated);
        }
    }
    r->state = REQ_FINISHED;
    req_release_engine(r);
    req_maybe_free(r);
}

static void on_async(uv_async_t *a)
{
    struct dc_infer_server *s = a->data;
    struct ev *e, *next;

    pthread_mutex_lock(&s->mu);
    e = s->q_head;
    s->q_head = s->q_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    for (; e != NULL; e = next) {
        next = e->next;
        if (e->type == DC_GEN_EV_DONE)
            handle_done(e->req, e);
        else
            handle_token(e->req, e);
        dc_free(e);
    }
}

/* ---- threadpool: load, render, tokenize ----------------------------------------------------- */

int dc_infer_prompt(struct dc_engine *e, const struct dc_chat_msg *msgs, size_t n,
                    const char *continue_text, char **out, bool *fallback)
{
    char *full;
    int rc = dc_engine_chat_render(e, msgs, n, true, out, fallback);

    if (rc < 0 || continue_text == NULL || continue_text[0] == '\0')
        return rc;
    /* A continuation: the answer so far follows the generation prompt. */
    full = dc_asprintf("%s%s", *out, continue_text);
    dc_free(*out);
    *out = full;
    return full != NULL ? 0 : DC_ENOMEM;
}

static void work_run(uv_work_t *w)
{
    struct work *wk = w->data;
    struct dc_infer_server *s = wk->srv;
    char *prompt = NULL;
    bool fallback = false;

    wk->rc = dc_registry_acquire(wk->reg, wk->model, &wk->engine, &wk->err);
    if (wk->rc == 0)
        wk->rc = dc_infer_prompt(wk->engine, wk->msgs, wk->n_msgs, wk->cont, &prompt, &fallback);
    if (wk->rc == 0)
        wk->rc = dc_engine_tokenize(wk->engine, prompt, strlen(prompt), true, true, &wk->ids,
                                    &wk->n_ids);
    dc_free(prompt);
    pthread_mutex_lock(&s->mu);
    s->n_working--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static void work_free(struct work *wk)
{
    dc_free(wk->ids);
    dc_free(wk->err);
    dc_free(wk);
}

static void submit(struct req *r, struct work *wk)
{
    struct dc_infer_server *s = r->srv;
    const struct dc_engine_info *info = dc_engine_info(wk->engine);
    struct dc_gen_request g = {0};
    uint32_t cap = s->max_context;
    char msg[200];
    int rc;

    r->engine = wk->engine;
    wk->engine = NULL;
    r->n_prompt = (uint32_t)wk->n_ids;
    if (cap == 0 || cap > info->n_ctx_per_slot)
        cap = info->n_ctx_per_slot;
    if (!r->max_tokens_given && wk->n_ids < cap && wk->n_ids + (size_t)r->max_tokens > cap)
        r->max_tokens = (int32_t)(cap - wk->n_ids);
    if (wk->n_ids + (size_t)r->max_tokens > cap) {
        snprintf(msg, sizeof(msg),
                 "the prompt (%zu tokens) plus max_tokens (%d) exceeds the context this node "
                 "allows remote requests (%u tokens)",
                 wk->n_ids, r->max_tokens, cap);
        req_release_engine(r);
        req_refuse(r, DC_INFER_ERR_TOO_LARGE, msg);
        return;
    }
    r->done_ev = dc_calloc(1, sizeof(*r->done_ev) + 1);
    if (r->done_ev == NULL) {
        req_release_engine(r);
        req_finish(r, "error", DC_INFER_ERR_INTERNAL, "out of memory", 0, 0);
        return;
    }
    g.prompt_ids = wk->ids;
    g.n_prompt_ids = wk->n_ids;
    g.sampling = r->sampling;
    g.max_tokens = r->max_tokens;
    for (size_t i = 0; i < r->n_stop && i < DC_ENGINE_MAX_STOP; i++)
        g.stop[g.n_stop++] = r->stop[i];
    g.n_logprobs = r->n_logprobs;
    g.logprobs = r->want_logprobs;
    r->gen_live = true;
    pthread_mutex_lock(&s->mu);
    s->n_gens++;
    pthread_mutex_unlock(&s->mu);
    rc = dc_engine_submit(r->engine, &g, on_gen_event, r, &r->gen);
    if (rc < 0) {
        pthread_mutex_lock(&s->mu);
        s->n_gens--;
        pthread_mutex_unlock(&s->mu);
        r->gen_live = false;
        r->gen = NULL;
        dc_free(r->done_ev);
        r->done_ev = NULL;
        req_release_engine(r);
        if (rc == DC_ELIMIT) {
            req_refuse(r, DC_INFER_ERR_TOO_LARGE,
                       "the prompt plus max_tokens does not fit the model's context");
        } else {
            snprintf(msg, sizeof(msg), "the engine refused the request: %s", dc_strerror(rc));
            req_finish(r, "error", rc == DC_EINVAL ? DC_INFER_ERR_INVALID : DC_INFER_ERR_INTERNAL,
                       msg, 0, 0);
        }
        return;
    }
    r->state = REQ_RUNNING;
    s->stats.served++;
}

static void work_done(uv_work_t *w, int status)
{
    struct work *wk = w->data;
    struct req *r = wk->req;
    char msg[300];

    if (r == NULL) { /* orphaned by dc_infer_server_free, which released the engine */
        work_free(wk);
        return;
    }
    r->work = NULL;
    if (status < 0 || r->stream == NULL || r->srv->closing) {
        if (wk->engine != NULL)
            dc_registry_release(wk->reg, wk->engine);
    } else if (wk->rc < 0) {
        if (wk->engine != NULL)
            dc_registry_release(wk->reg, wk->engine);
        snprintf(msg, sizeof(msg), "model %s is not available: %s",
                 wk->model != NULL ? wk->model : "(default)",
                 wk->err != NULL ? wk->err : dc_strerror(wk->rc));
        req_finish(r, "error", DC_INFER_ERR_UNAVAILABLE, msg, 0, 0);
    } else {
        submit(r, wk);
    }
    work_free(wk);
    req_maybe_free(r);
}

/* ---- loop: the request frame ------------------------------------------------------------------
 */

static char *dup_or_null(const char *s)
{
    return s != NULL ? dc_strdup(s) : NULL;
}

/* Copies what the request needs out of its frame. */
static int req_take(struct req *r, const struct dc_infer_request *q)
{
    struct dc_infer_server *s = r->srv;

    r->msgs = dc_calloc(q->n_messages, sizeof(*r->msgs));
    if (r->msgs == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < q->n_messages; i++, r->n_msgs++) {
        r->msgs[i].role = dc_strdup(q->messages[i].role);
        r->msgs[i].content = dc_strdup(q->messages[i].content);
        if (r->msgs[i].role == NULL || r->msgs[i].content == NULL) {
            r->n_msgs++;
            return DC_ENOMEM;
        }
    }
    if (q->model != NULL && q->model[0] != '\0' && strcmp(q->model, "local") != 0) {
        r->model = dup_or_null(q->model);
        if (r->model == NULL)
            return DC_ENOMEM;
    }
    if (q->continue_text != NULL && q->continue_text[0] != '\0') {
        r->cont = dc_strdup(q->continue_text);
        if (r->cont == NULL)
            return DC_ENOMEM;
    }
    for (size_t i = 0; i < q->n_stop; i++, r->n_stop++) {
        r->stop[i] = dc_strdup(q->stop[i]);
        if (r->stop[i] == NULL)
            return DC_ENOMEM;
    }
    dc_sampling_defaults(&r->sampling);
    r->sampling.temperature = q->has_temperature ? q->temperature : s->default_temperature;
    if (q->has_top_p)
        r->sampling.top_p = q->top_p;
    if (q->has_top_k)
        r->sampling.top_k = q->top_k;
    if (q->has_min_p)
        r->sampling.min_p = q->min_p;
    r->sampling.has_seed = q->has_seed;
    r->sampling.seed = q->seed;
    r->max_tokens = q->max_tokens > 0 ? q->max_tokens : (int32_t)s->max_tokens;
    r->max_tokens_given = q->max_tokens > 0;
    r->n_logprobs = q->n_logprobs;
    r->want_logprobs = q->want_logprobs;
    return 0;
}

/* Checks the bounds in the order an operator would expect to read them in a refusal. */
static void req_start(struct req *r, const struct dc_infer_frame *f,
                      const struct dc_infer_request *q)
{
    struct dc_infer_server *s = r->srv;
    char msg[200];
    struct quota *qt;
    struct work *wk;
    int rc;

    memcpy(r->rid, q->request_id, sizeof(r->rid));
    dc_infer_transcript_init(&r->tr, f->raw, f->raw_len);
    r->have_request = true;
    if (!s->serve_remote) {
        req_refuse(r, DC_INFER_ERR_REFUSED, "this node does not serve remote requests");
        return;
    }
    if (peer_listed(s->deny, s->n_deny, &r->peer) ||
        (s->n_allow > 0 && !peer_listed(s->allow, s->n_allow, &r->peer))) {
        req_refuse(r, DC_INFER_ERR_REFUSED, "this node does not serve your PeerId");
        return;
    }
    qt = quota_get(s, &r->peer);
    if (qt == NULL) {
        req_finish(r, "error", DC_INFER_ERR_INTERNAL, "out of memory", 0, 0);
        return;
    }
    if (qt->active >= s->max_per_peer) {
        snprintf(msg, sizeof(msg), "too many concurrent requests (at most %u per peer)",
                 s->max_per_peer);
        req_refuse(r, DC_INFER_ERR_RATE, msg);
        return;
    }
    if (s->rpm > 0 && qt->requests >= s->rpm) {
        snprintf(msg, sizeof(msg), "request quota exhausted (%u per minute)", s->rpm);
        req_refuse(r, DC_INFER_ERR_RATE, msg);
        return;
    }
    if (s->tpm > 0 && qt->tokens >= s->tpm) {
        snprintf(msg, sizeof(msg), "token quota exhausted (%u per minute)", s->tpm);
        req_refuse(r, DC_INFER_ERR_RATE, msg);
        return;
    }
    qt->requests++;
    if (q->n_messages == 0) {
        req_refuse(r, DC_INFER_ERR_INVALID, "the request has no messages");
        return;
    }
    if (q->max_tokens > 0 && (uint32_t)q->max_tokens > s->max_tokens) {
        snprintf(msg, sizeof(msg),
                 "max_tokens %d exceeds this node's cap of %u for remote requests", q->max_tokens,
                 s->max_tokens);
        req_refuse(r, DC_INFER_ERR_TOO_LARGE, msg);
        return;
    }
    rc = req_take(r, q);
    wk = rc == 0 ? dc_calloc(1, sizeof(*wk)) : NULL;
    if (wk == NULL) {
        req_finish(r, "error", DC_INFER_ERR_INTERNAL, "out of memory", 0, 0);
        return;
    }
    r->quota = qt;
    qt->active++;
    wk->req = r;
    wk->srv = s;
    wk->reg = s->reg;
    wk->model = r->model;
    wk->msgs = r->msgs;
    wk->n_msgs = r->n_msgs;
    wk->cont = r->cont;
    wk->w.data = wk;
    pthread_mutex_lock(&s->mu);
    s->n_working++;
    pthread_mutex_unlock(&s->mu);
    rc = uv_queue_work(s->loop, &wk->w, work_run, work_done);
    if (rc < 0) {
        pthread_mutex_lock(&s->mu);
        s->n_working--;
        pthread_mutex_unlock(&s->mu);
        dc_free(wk);
        req_finish(r, "error", DC_INFER_ERR_INTERNAL, "cannot queue the request", 0, 0);
        return;
    }
    r->work = wk;
    r->state = REQ_LOADING;
}

static int on_frame(void *ud, const struct dc_infer_frame *f)
{
    struct req *r = ud;

    if (r->state != REQ_READING || f->type != DC_INFER_FRAME_REQUEST)
        return DC_EPROTO; /* one request per stream, and nothing else from the client */
    req_start(r, f, &f->request);
    return 0;
}

/* A client that opens a stream and never completes its request would hold one of the
 * max_streams places for ever. */
static void on_sweep(uv_timer_t *t)
{
    struct dc_infer_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    struct req *r = s->reqs, *next;

    for (; r != NULL; r = next) {
        next = r->next;
        if (r->state == REQ_READING && now - r->opened_ms >= s->read_timeout_ms) {
            req_reset(r);
            req_maybe_free(r);
        }
    }
}

/* Streams of 'peer' still waiting for their request. */
static uint32_t reading_count(const struct dc_infer_server *s, const struct dc_peer_id *peer)
{
    uint32_t n = 0;

    for (const struct req *r = s->reqs; r != NULL; r = r->next)
        n += r->state == REQ_READING && dc_peer_id_equal(&r->peer, peer);
    return n;
}

/* ---- host callbacks ---------------------------------------------------------------------------
 */

static void on_open(void *ud, struct dc_host_stream *st)
{
    struct dc_infer_server *s = ud;
    struct req *r;

    if (s == NULL || s->closing || s->n_reqs >= s->max_streams ||
        reading_count(s, dc_host_stream_peer(st)) >= s->max_per_peer) {
        /* No request to answer yet: a reset is the only refusal possible. The per-peer bound
         * keeps one peer from holding every place with streams that never send a request. */
        dc_host_stream_reset(st);
        return;
    }
    r = dc_calloc(1, sizeof(*r));
    if (r == NULL) {
        dc_host_stream_reset(st);
        return;
    }
    r->srv = s;
    r->stream = st;
    r->peer = *dc_host_stream_peer(st);
    r->opened_ms = uv_now(s->loop);
    dc_infer_reader_init(&r->reader);
    r->next = s->reqs;
    if (s->reqs != NULL)
        s->reqs->prev = r;
    s->reqs = r;
    s->n_reqs++;
    dc_host_stream_set_user(st, r);
}

static void on_data(void *ud, struct dc_host_stream *st, const uint8_t *p, size_t n)
{
    struct req *r = ud;
    int rc;

    DC_UNUSED(st);
    if (r == NULL || r->srv == NULL)
        return;
    if (r->state != REQ_READING)
        return; /* anything after the request is ignored; a reset ends the request */
    rc = dc_infer_reader_push(&r->reader, p, n, on_frame, r);
    if (rc < 0)
        req_reset(r);
    req_maybe_free(r); /* a refusal detached the stream */
}

static void on_fin(void *ud, struct dc_host_stream *st)
{
    struct req *r = ud;

    DC_UNUSED(st);
    if (r != NULL && r->state == REQ_READING) {
        /* The client closed without a whole request. */
        req_reset(r);
        req_maybe_free(r);
    }
}

static void on_close(void *ud, struct dc_host_stream *st, int err)
{
    struct req *r = ud;

    DC_UNUSED(st);
    if (r == NULL)
        return;
    r->stream = NULL;
    if (r->gen != NULL && r->gen_live) {
        /* The client reset the stream (or the connection died): free the slot. */
        dc_gen_cancel(r->gen);
        r->srv->stats.canceled++;
    }
    DC_UNUSED(err);
    req_maybe_free(r);
}

static const struct dc_host_stream_cb stream_cb = {
    .on_open = on_open,
    .on_data = on_data,
    .on_fin = on_fin,
    .on_close = on_close,
};

/* ---- the server ---------------------------------------------------------------------------- */

static struct dc_peer_id *copy_ids(const struct dc_peer_id *v, size_t n)
{
    struct dc_peer_id *c;

    if (n == 0)
        return NULL;
    c = dc_calloc(n, sizeof(*c));
    if (c != NULL)
        memcpy(c, v, n * sizeof(*c));
    return c;
}

int dc_infer_server_new(const struct dc_infer_server_config *cfg, struct dc_infer_server **out)
{
    struct dc_infer_server *s;
    int rc;

    *out = NULL;
    if (cfg->loop == NULL || cfg->host == NULL || cfg->identity == NULL || cfg->registry == NULL)
        return DC_EINVAL;
    s = dc_calloc(1, sizeof(*s));
    if (s == NULL)
        return DC_ENOMEM;
    s->loop = cfg->loop;
    s->host = cfg->host;
    s->id = cfg->identity;
    s->reg = cfg->registry;
    s->serve_remote = cfg->serve_remote;
    s->max_streams = cfg->max_streams ? cfg->max_streams : DEFAULT_MAX_STREAMS;
    s->max_per_peer =
        cfg->max_streams_per_peer ? cfg->max_streams_per_peer : DEFAULT_MAX_STREAMS_PER_PEER;
    s->rpm = cfg->requests_per_minute;
    s->tpm = cfg->tokens_per_minute;
    s->max_tokens = cfg->max_tokens ? cfg->max_tokens : DEFAULT_MAX_TOKENS;
    s->max_context = cfg->max_context;
    s->default_temperature = cfg->default_temperature;
    s->read_timeout_ms = cfg->read_timeout_ms ? cfg->read_timeout_ms : DEFAULT_READ_TIMEOUT_MS;
    s->allow = copy_ids(cfg->allow, cfg->n_allow);
    s->deny = copy_ids(cfg->deny, cfg->n_deny);
    if ((cfg->n_allow > 0 && s->allow == NULL) || (cfg->n_deny > 0 && s->deny == NULL)) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    s->n_allow = cfg->n_allow;
    s->n_deny = cfg->n_deny;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    if (pthread_cond_init(&s->cond, NULL) != 0) {
        rc = DC_ENOMEM;
        goto err_mutex;
    }
    rc = dc_host_set_handler(s->host, DC_INFER_PROTOCOL_ID, &stream_cb, s);
    if (rc < 0)
        goto err_cond;
    rc = uv_async_init(s->loop, &s->async, on_async);
    if (rc < 0) {
        (void)!dc_host_set_handler(s->host, DC_INFER_PROTOCOL_ID, NULL, NULL);
        goto err_cond;
    }
    s->async.data = s;
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, on_sweep, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
    s->handles = 2;
    *out = s;
    return 0;

err_cond:
    pthread_cond_destroy(&s->cond);
err_mutex:
    pthread_mutex_destroy(&s->mu);
err_free:
    dc_free(s->allow);
    dc_free(s->deny);
    dc_free(s);
    return rc;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct dc_infer_server *s = h->data;

    if (--s->handles > 0)
        return;
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    dc_free(s);
}

void dc_infer_server_free(struct dc_infer_server *s)
{
    if (s == NULL)
        return;
    s->closing = true;
    (void)!dc_host_set_handler(s->host, DC_INFER_PROTOCOL_ID, NULL, NULL);
    /* Streams first (no callbacks after a reset), then the work the threads still hold. */
    for (struct req *r = s->reqs; r != NULL; r = r->next) {
        if (r->stream != NULL) {
            dc_host_stream_reset(r->stream);
            r->stream = NULL;
        }
        if (r->gen != NULL)
            dc_gen_cancel(r->gen);
        if (r->work != NULL && uv_cancel((uv_req_t *)&r->work->w) == 0) {
            pthread_mutex_lock(&s->mu);
            s->n_working--;
            pthread_mutex_unlock(&s->mu);
        }
    }
    pthread_mutex_lock(&s->mu);
    while (s->n_gens > 0 || s->n_working > 0)
        pthread_cond_wait(&s->cond, &s->mu);
    pthread_mutex_unlock(&s->mu);
    /* Every DONE is queued now and no thread will touch the queue again. */
    on_async(&s->async);
    while (s->reqs != NULL) {
        struct req *r = s->reqs;
        if (r->work != NULL) {
            /* Its after-work callback still runs on the loop: it frees only the work. */
            if (r->work->engine != NULL)
                dc_registry_release(s->reg, r->work->engine);
            r->work->engine = NULL;
            r->work->req = NULL;
            r->work = NULL;
        }
        r->gen_live = false;
        req_free(r);
    }
    while (s->quotas != NULL) {
        struct quota *q = s->quotas;
        s->quotas = q->next;
        dc_free(q);
    }
    dc_free(s->allow);
    dc_free(s->deny);
    s->allow = s->deny = NULL;
    uv_close((uv_handle_t *)&s->async, on_handle_closed);
    uv_close((uv_handle_t *)&s->sweep, on_handle_closed);
}

void dc_infer_server_stats(const struct dc_infer_server *s, struct dc_infer_server_stats *out)
{
    *out = s->stats;
    out->active = s->n_reqs;
}

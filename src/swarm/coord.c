/* SPDX-License-Identifier: MIT */
/*
 * coord.c - the swarm coordinator (see coord.h for what it does and in which order).
 *
 * Lifetimes. Everything is on the loop thread except the local engine's callbacks. A chat is
 * reference counted: the API's start holds one until the end is delivered (or the cancel), and
 * every operation that will call back later (a DHT lookup, a record fetch, a local
 * generation) holds one more, so a late callback always finds its chat. Infer calls need no
 * reference: dc_infer_call_cancel() withdraws their callbacks. Local generations report on the
 * engine's thread; their events are copied into co->evq and handled on the loop (on_async).
 */
#include "swarm/coord.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "swarm/swarm.h"

#define LOG            "swarm"
#define MAX_CACHE      1024u /* expert records kept */
#define MAX_FETCH      64u   /* record fetches one chat starts */
#define MAX_CANDS      64u   /* ranked candidates kept per chat */
#define MAX_RUNS       (DC_COORD_MAX_EXPERTS + 8u)
#define TICK_MS        100u
#define BENCH_MS       60000u /* how long an expert that failed is ranked last */
#define PROVIDERS_BAND 20u
#define PROVIDERS_ALL  64u

/* ---- types ---- */

struct centry {
    struct dc_expert x;
    bool self;
    uint64_t fetched_ms; /* monotonic */
    uint64_t benched_ms; /* monotonic: failed a chat; ranked last until then */
    struct centry *next;
};

struct cchat;

enum run_state { RUN_RUNNING = 1, RUN_OK, RUN_FAILED };

struct run {
    struct cchat *ch;
    struct dc_peer_id peer;
    char peer_text[DC_PEER_ID_STR_MAX];
    bool local;
    float similarity;
    enum run_state state;
    struct dc_infer_call *ic; /* remote, while running */
    struct dc_gen *gen;       /* local, until its DONE was handled */
    struct dc_buf text;       /* the answer (not in direct mode) */
    uint32_t n_tokens, n_prompt;
    enum dc_gen_finish finish;
    char err[200];
};

enum phase { PH_ROUTING, PH_RUNNING, PH_SYNTH, PH_ENDED };

struct cand {
    struct dc_peer_id peer;
    bool local;
    float similarity;
};

struct cchat {
    struct dc_coord *co;
    const struct dc_coord_cb *cb;
    void *ud;
    int refs;
    bool ended;     /* on_done delivered or canceled: no more callbacks */
    bool discovery; /* no caller: a background refresh of the routing cache */
    struct cchat *prev, *next;
    enum phase phase;
    uint64_t t0_ms;

    /* the request, copied */
    struct dc_infer_message *msgs;
    size_t n_msgs;
    char *stop[DC_INFER_MAX_STOP];
    size_t n_stop;
    struct dc_infer_request req; /* points into the copies above */
    uint32_t want;

    /* routing */
    float q[DC_EMBED_DIM];
    uint64_t lsh;
    int pending; /* lookups and fetches in flight */
    uint64_t route_deadline_ms;
    bool route_done;
    struct dc_peer_id fetching[MAX_FETCH];
    size_t n_fetching;
    struct cand cands[MAX_CANDS];
    size_t n_cands, next_cand;

    /* dispatch */
    struct run runs[MAX_RUNS];
    size_t n_runs;
    uint32_t failovers;
    bool direct;   /* one expert: its tokens are the answer, streamed through */
    bool starting; /* route_finish is starting the runs: do not conclude yet */
    bool emitted;  /* a token reached the caller */
    struct dc_gen *synth;
    /* direct mode: the answer's text that reached the caller, and the tokens of it that runs
     * which failed afterwards wrote; a backup expert continues from there */
    struct dc_buf sent;
    uint32_t carried_tokens;
    bool sent_lost; /* 'sent' could not hold it all (memory): no continuation */
};

/* A local engine event, copied for the loop. */
struct lev {
    struct run *run; /* or NULL for the synthesis */
    struct cchat *ch;
    struct dc_gen_event ev;
    char *text;
    char *error_msg;
    struct dc_top_logprob *top; /* the token's alternatives, ev.n_top of them */
    struct lev *next;
};

struct dc_coord {
    uv_loop_t *loop;
    struct dc_host *host;
    struct dc_dht *dht;
    const struct dc_identity *identity;
    struct dc_engine *engine;
    char *model_id;
    uint8_t model_sha[32];
    bool has_sha;
    char *description;
    char **tags;
    size_t n_tags;
    double price;
    uint32_t default_experts, expert_timeout_ms, lookup_timeout_ms, republish_ms, refresh_ms,
        max_failovers, synth_max_tokens;

    bool publish;
    bool provided;
    size_t last_stored; /* peers that took the last record */
    bool put_running;
    uint64_t last_refresh_ms; /* monotonic; 0: never */
    bool peers_changed;
    /* The last DC_EXPERTS_KEY lookup returned fewer providers than it asked for: the cache
     * holds every expert of the swarm, so a chat can rank it without band lookups. */
    bool all_known;

    struct centry *cache;
    size_t n_cache;
    bool snap_dirty; /* the cache changed since the last snap_update */
    struct centry self;
    bool has_self;

    struct cchat *chats;
    size_t n_chats;
    bool closed;
    bool tick_on;

    uv_timer_t republish_timer;
    uv_timer_t tick;
    uv_timer_t discover_timer;
    bool discovering; /* a background refresh is running */

    pthread_mutex_t snap_mu; /* snap: the routing cache as JSON, for other threads */
    char *snap;
    uv_async_t async;
    int handles_open;

    pthread_mutex_t mu; /* evq, n_gens */
    pthread_cond_t cv;
    struct lev *evq, *evq_tail;
    uint32_t n_gens; /* local generations whose DONE has not been queued yet */

    /* Counters other threads read (dc_coord_stats); n_known under snap_mu. */
    atomic_uint_least64_t n_chats_total, n_routed, n_failovers, n_syntheses, n_published;
    uint32_t n_known;
};

/* ---- chats: references and the end ---- */

static void chat_free(struct cchat *ch)
{
    for (size_t i = 0; i < ch->n_msgs; i++) {
        dc_free((char *)ch->msgs[i].role);
        dc_free((char *)ch->msgs[i].content);
    }
    dc_free(ch->msgs);
    for (size_t i = 0; i < ch->n_stop; i++)
        dc_free(ch->stop[i]);
    for (size_t i = 0; i < ch->n_runs; i++)
        dc_buf_cleanup(&ch->runs[i].text);
    dc_buf_cleanup(&ch->sent);
    dc_free(ch);
}

static void chat_unref(struct cchat *ch)
{
    if (--ch->refs == 0)
        chat_free(ch);
}

static void chat_unlink(struct cchat *ch)
{
    struct dc_coord *co = ch->co;

    if (ch->prev != NULL)
        ch->prev->next = ch->next;
    else if (co->chats == ch)
        co->chats = ch->next;
    else
        return;
    if (ch->next != NULL)
        ch->next->prev = ch->prev;
    ch->prev = ch->next = NULL;
    co->n_chats--;
    if (co->n_chats == 0 && co->tick_on) {
        uv_timer_stop(&co->tick);
        co->tick_on = false;
    }
}

/* Stops everything the chat still runs (no callback of theirs reaches it afterwards except
 * local DONE events, which only drop references). */
static void chat_stop_work(struct cchat *ch)
{
    for (size_t i = 0; i < ch->n_runs; i++) {
        struct run *r = &ch->runs[i];
        if (r->ic != NULL) {
            dc_infer_call_cancel(r->ic);
            r->ic = NULL;
        }
        if (r->gen != NULL)
            dc_gen_cancel(r->gen);
    }
    if (ch->synth != NULL)
        dc_gen_cancel(ch->synth);
}

/* Delivers the end once and drops the caller's reference. */
static void chat_end(struct cchat *ch, enum dc_gen_finish finish, int error, const char *msg,
                     uint32_t n_prompt, uint32_t n_generated)
{
    struct dc_gen_event ev = {0};

    if (ch->ended)
        return;
    ch->ended = true;
    ch->phase = PH_ENDED;
    chat_stop_work(ch);
    chat_unlink(ch);
    ev.type = DC_GEN_EV_DONE;
    ev.finish = finish;
    ev.error = error;
    ev.error_msg = msg;
    ev.n_prompt = n_prompt;
    ev.n_generated = n_generated;
    if (finish == DC_GEN_FINISH_ERROR)
        dc_log_info(LOG, "swarm chat failed after %llu ms: %s",
                    (unsigned long long)(dc_mono_ms() - ch->t0_ms), msg != NULL ? msg : "");
    else
        dc_log_info(LOG, "swarm chat ended (%s) after %llu ms, %u token(s)",
                    dc_gen_finish_name(finish), (unsigned long long)(dc_mono_ms() - ch->t0_ms),
                    n_generated);
    ch->cb->on_done(ch->ud, &ev);
    chat_unref(ch);
}

static void chat_fail(struct cchat *ch, int error, const char *fmt, ...) DC_PRINTF(3, 4);
static void chat_fail(struct cchat *ch, int error, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    chat_end(ch, DC_GEN_FINISH_ERROR, error, msg, 0, 0);
}

/* ---- the routing cache ---- */

static struct centry *cache_find(struct dc_coord *co, const struct dc_peer_id *p)
{
    for (struct centry *e = co->cache; e != NULL; e = e->next)
        if (dc_peer_id_equal(&e->x.peer, p))
            return e;
    return NULL;
}

/* Drops expired records (and, past MAX_CACHE, the oldest fetched). */
static void cache_expire(struct dc_coord *co)
{
    uint64_t now = dc_wall_ms();
    struct centry **pp = &co->cache;

    while (*pp != NULL) {
        struct centry *e = *pp;
        if (e->x.expires_ms <= now) {
            *pp = e->next;
            dc_free(e);
            co->n_cache--;
            co->snap_dirty = true;
        } else {
            pp = &e->next;
        }
    }
}

static void cache_put(struct dc_coord *co, const struct dc_expert *x)
{
    struct centry *e = cache_find(co, &x->peer);

    co->snap_dirty = true;
    if (e != NULL) {
        if (x->seq >= e->x.seq)
            e->x = *x;
        e->fetched_ms = dc_mono_ms();
        return;
    }
    if (co->n_cache >= MAX_CACHE) {
        /* Evict the least recently fetched. */
        struct centry **pp = &co->cache, **oldest = &co->cache;
        for (; *pp != NULL; pp = &(*pp)->next)
            if ((*pp)->fetched_ms < (*oldest)->fetched_ms)
                oldest = pp;
        e = *oldest;
        *oldest = e->next;
        dc_free(e);
        co->n_cache--;
    }
    e = dc_calloc(1, sizeof(*e));
    if (e == NULL)
        return;
    e->x = *x;
    e->fetched_ms = dc_mono_ms();
    e->next = co->cache;
    co->cache = e;
    co->n_cache++;
}

/* ---- dispatch ---- */

static void chat_maybe_finish(struct cchat *ch);
static void run_start(struct cchat *ch, const struct cand *c);

static void lev_free(struct lev *l)
{
    dc_free(l->text);
    dc_free(l->error_msg);
    dc_free(l->top);
    dc_free(l);
}

/* Engine thread: copies the event for the loop. */
static void local_cb(void *ud, const struct dc_gen_event *ev, bool synth)
{
    struct cchat *ch = synth ? ud : ((struct run *)ud)->ch;
    struct dc_coord *co = ch->co;
    struct lev *l = dc_calloc(1, sizeof(*l));

    /* Out of memory: a token is dropped, but a DONE must arrive (it carries a reference and
     * the shutdown waits for it), so its allocation is retried for up to a second. */
    for (int i = 0; l == NULL && ev->type == DC_GEN_EV_DONE && i < 1000; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        l = dc_calloc(1, sizeof(*l));
    }
    if (l == NULL)
        return;
    l->run = synth ? NULL : ud;
    l->ch = ch;
    l->ev = *ev;
    l->ev.top = NULL;
    l->ev.n_top = 0;
    if (ev->type == DC_GEN_EV_TOKEN && ev->n_top > 0) {
        l->top = dc_malloc(ev->n_top * sizeof(*l->top));
        if (l->top != NULL) {
            memcpy(l->top, ev->top, ev->n_top * sizeof(*l->top));
            l->ev.n_top = ev->n_top;
        }
    }
    if (ev->type == DC_GEN_EV_TOKEN && ev->text_len > 0) {
        l->text = dc_malloc(ev->text_len + 1);
        if (l->text != NULL) {
            memcpy(l->text, ev->text, ev->text_len);
            l->text[ev->text_len] = '\0';
        }
        l->ev.text_len = l->text != NULL ? ev->text_len : 0;
    } else {
        l->ev.text_len = 0;
    }
    l->ev.text = NULL;
    if (ev->error_msg != NULL)
        l->error_msg = dc_strdup(ev->error_msg);
    l->ev.error_msg = NULL;
    pthread_mutex_lock(&co->mu);
    if (co->evq_tail != NULL)
        co->evq_tail->next = l;
    else
        co->evq = l;
    co->evq_tail = l;
    if (ev->type == DC_GEN_EV_DONE) {
        co->n_gens--;
        pthread_cond_broadcast(&co->cv);
    }
    uv_async_send(&co->async);
    pthread_mutex_unlock(&co->mu);
}

static void local_run_cb(void *ud, const struct dc_gen_event *ev)
{
    local_cb(ud, ev, false);
}

static void local_synth_cb(void *ud, const struct dc_gen_event *ev)
{
    local_cb(ud, ev, true);
}

/* Loop thread: a run produced a token. */
static void run_token(struct run *r, const struct dc_gen_event *ev)
{
    struct cchat *ch = r->ch;

    r->n_tokens++;
    if (ch->ended)
        return;
    if (ch->direct) {
        ch->emitted = true;
        if (ev->text_len > 0 && dc_buf_append(&ch->sent, ev->text, ev->text_len) < 0)
            ch->sent_lost = true;
        ch->cb->on_token(ch->ud, ev);
        return;
    }
    if (ev->text_len > 0 && dc_buf_append(&r->text, ev->text, ev->text_len) < 0)
        snprintf(r->err, sizeof(r->err), "out of memory");
}

/* Loop thread: a run ended. 'ok' with its finish, or an error line. */
static void run_end(struct run *r, bool ok, enum dc_gen_finish finish, uint32_t n_prompt,
                    uint32_t n_generated, const char *why)
{
    struct cchat *ch = r->ch;

    r->ic = NULL;
    r->state = ok ? RUN_OK : RUN_FAILED;
    r->finish = finish;
    r->n_prompt = n_prompt;
    if (n_generated > r->n_tokens)
        r->n_tokens = n_generated;
    if (!ok)
        snprintf(r->err, sizeof(r->err), "%s", why != NULL ? why : "failed");
    if (ch->ended)
        return;
    if (!ok && !r->local) {
        /* Ranked last for a while, so the next chats do not wait on it again. */
        struct centry *e = cache_find(ch->co, &r->peer);
        if (e != NULL)
            e->benched_ms = dc_mono_ms() + BENCH_MS;
    }
    if (!ok) {
        dc_log_info(LOG, "expert %s%s failed: %s", r->peer_text, r->local ? " (local)" : "",
                    r->err);
        /* Failover: the next candidate. Where part of this answer already reached the caller
         * (one expert, streamed through), the backup continues it from there. */
        if (ch->next_cand < ch->n_cands && ch->failovers < ch->co->max_failovers &&
            ch->n_runs < MAX_RUNS && !(ch->direct && ch->sent_lost)) {
            char next[DC_PEER_ID_STR_MAX];

            ch->failovers++;
            atomic_fetch_add(&ch->co->n_failovers, 1);
            if (dc_peer_id_to_string(&ch->cands[ch->next_cand].peer, next, sizeof(next)) < 0)
                snprintf(next, sizeof(next), "?");
            if (ch->direct && ch->emitted) {
                ch->carried_tokens += r->n_tokens;
                dc_log_info(LOG,
                            "failing over to expert %zu of %zu (%s), which continues the answer "
                            "after %zu bytes (%u tokens)",
                            ch->next_cand + 1, ch->n_cands, next, ch->sent.len, ch->carried_tokens);
            } else {
                dc_log_info(LOG, "failing over to expert %zu of %zu (%s)", ch->next_cand + 1,
                            ch->n_cands, next);
            }
            run_start(ch, &ch->cands[ch->next_cand++]);
            return;
        }
    }
    chat_maybe_finish(ch);
}

static void on_remote_token(void *ud, const struct dc_infer_token *tok)
{
    struct dc_top_logprob top[DC_INFER_MAX_TOP];
    struct dc_gen_event ev;

    dc_infer_token_event(tok, top, &ev);
    run_token(ud, &ev);
}

static void on_remote_done(void *ud, int status, const struct dc_infer_done *done)
{
    struct run *r = ud;
    char why[200];
    const char *fr;

    r->ic = NULL;
    if (status < 0 || done == NULL) {
        snprintf(why, sizeof(why), "%s", dc_strerror(status < 0 ? status : DC_ECLOSED));
        run_end(r, false, DC_GEN_FINISH_ERROR, 0, 0, why);
        return;
    }
    fr = done->finish_reason != NULL ? done->finish_reason : "";
    if (strcmp(fr, "stop") == 0 || strcmp(fr, "length") == 0) {
        run_end(r, true, strcmp(fr, "stop") == 0 ? DC_GEN_FINISH_STOP : DC_GEN_FINISH_LENGTH,
                done->prompt_tokens, done->completion_tokens, NULL);
        return;
    }
    snprintf(why, sizeof(why), "%s%s%s", fr[0] != '\0' ? fr : "error",
             done->error != NULL ? ": " : "", done->error != NULL ? done->error : "");
    run_end(r, false, DC_GEN_FINISH_ERROR, done->prompt_tokens, done->completion_tokens, why);
}

static const struct dc_infer_call_cb remote_cb = {
    .on_token = on_remote_token,
    .on_done = on_remote_done,
};

/* The chat's messages as the engine's prompt (dc_infer_prompt: its template, then 'cont'). */
static int render(struct dc_engine *e, const struct dc_infer_message *m, size_t n, const char *cont,
                  char **out)
{
    struct dc_chat_msg *cm = dc_calloc(n > 0 ? n : 1, sizeof(*cm));
    int rc;

    if (cm == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        cm[i].role = m[i].role;
        cm[i].content = m[i].content;
    }
    rc = dc_infer_prompt(e, cm, n, cont, out, NULL);
    dc_free(cm);
    return rc;
}

/* The engine request for 'prompt' (a rendered chat) with the chat's sampling, stops and
 * logprob options. */
static void gen_request_from(const struct cchat *ch, const char *prompt, struct dc_gen_request *g)
{
    memset(g, 0, sizeof(*g));
    g->prompt = prompt;
    g->prompt_len = strlen(prompt);
    g->prompt_parse_special = true;
    g->logprobs = ch->req.want_logprobs;
    g->n_logprobs = ch->req.n_logprobs;
    dc_sampling_defaults(&g->sampling);
    if (ch->req.has_temperature)
        g->sampling.temperature = ch->req.temperature;
    if (ch->req.has_top_p)
        g->sampling.top_p = ch->req.top_p;
    if (ch->req.has_top_k)
        g->sampling.top_k = ch->req.top_k;
    if (ch->req.has_min_p)
        g->sampling.min_p = ch->req.min_p;
    if (ch->req.has_seed) {
        g->sampling.has_seed = true;
        g->sampling.seed = ch->req.seed;
    }
    g->max_tokens = ch->req.max_tokens;
    for (size_t i = 0; i < ch->n_stop && i < DC_ENGINE_MAX_STOP; i++)
        g->stop[g->n_stop++] = ch->stop[i];
}

/* Loop thread: submits a generation to the local engine; 'ud' is the run (or the chat for the
 * synthesis). Takes a chat reference that the DONE event drops. */
static int local_submit(struct cchat *ch, const struct dc_gen_request *g, bool synth, void *ud,
                        struct dc_gen **out)
{
    struct dc_coord *co = ch->co;
    int rc;

    pthread_mutex_lock(&co->mu);
    co->n_gens++;
    pthread_mutex_unlock(&co->mu);
    ch->refs++;
    rc = dc_engine_submit(co->engine, g, synth ? local_synth_cb : local_run_cb, ud, out);
    if (rc < 0) {
        pthread_mutex_lock(&co->mu);
        co->n_gens--;
        pthread_cond_broadcast(&co->cv);
        pthread_mutex_unlock(&co->mu);
        ch->refs--;
    }
    return rc;
}

/* Starts run 'r' on candidate 'c' with request 'q': this node's engine or the peer. */
static void run_dispatch(struct cchat *ch, struct run *r, const struct cand *c,
                         const struct dc_infer_request *q)
{
    struct dc_coord *co = ch->co;
    int rc;

    if (c->local) {
        struct dc_gen_request g;
        char *prompt = NULL;

        if (co->engine == NULL) {
            run_end(r, false, DC_GEN_FINISH_ERROR, 0, 0, "no local model");
            return;
        }
        rc = render(co->engine, ch->msgs, ch->n_msgs, q->continue_text, &prompt);
        if (rc < 0) {
            run_end(r, false, DC_GEN_FINISH_ERROR, 0, 0, dc_strerror(rc));
            return;
        }
        gen_request_from(ch, prompt, &g);
        g.max_tokens = q->max_tokens;
        rc = local_submit(ch, &g, false, r, &r->gen);
        dc_free(prompt);
        if (rc < 0) {
            r->gen = NULL;
            run_end(r, false, DC_GEN_FINISH_ERROR, 0, 0,
                    rc == DC_ELIMIT ? "the prompt does not fit the local model's context"
                                    : dc_strerror(rc));
        }
        return;
    }
    {
        const struct dc_multiaddr *addr = NULL;
        struct dc_multiaddr a;
        if (!dc_host_is_connected(co->host, &c->peer)) {
            /* The address heard of or used last: after a restart on a new port, the one the
             * peer reported since, not the old one. */
            const struct dc_peer_info *info = dc_host_peer_info(co->host, &c->peer);
            if (info != NULL && info->n_addrs > 0) {
                size_t k = 0;
                for (size_t i = 1; i < info->n_addrs; i++)
                    if (info->addr_seen_ms[i] > info->addr_seen_ms[k])
                        k = i;
                a = info->addrs[k];
                addr = &a;
            }
        }
        rc = dc_infer_call_start(co->loop, co->host, &c->peer, addr, q, co->expert_timeout_ms,
                                 &remote_cb, r, &r->ic);
        if (rc < 0) {
            char why[160];
            r->ic = NULL;
            snprintf(why, sizeof(why), "cannot reach: %s",
                     rc == DC_ENOENT ? "no address known" : dc_strerror(rc));
            run_end(r, false, DC_GEN_FINISH_ERROR, 0, 0, why);
        }
    }
}

static void run_start(struct cchat *ch, const struct cand *c)
{
    struct run *r = &ch->runs[ch->n_runs++];
    struct dc_infer_request q = ch->req;
    char *cont = NULL; /* both the engine and the infer call copy it */

    r->ch = ch;
    r->peer = c->peer;
    r->local = c->local;
    r->similarity = c->similarity;
    r->state = RUN_RUNNING;
    dc_buf_init(&r->text, 1u << 20);
    if (dc_peer_id_to_string(&c->peer, r->peer_text, sizeof(r->peer_text)) < 0)
        snprintf(r->peer_text, sizeof(r->peer_text), "?");
    atomic_fetch_add(&ch->co->n_routed, 1);
    if (ch->direct && ch->sent.len > 0) {
        /* A continuation: the answer so far, and what is left of max_tokens. */
        if (q.max_tokens > 0 && (uint32_t)q.max_tokens <= ch->carried_tokens) {
            run_end(r, true, DC_GEN_FINISH_LENGTH, 0, 0, NULL);
            return;
        }
        if (q.max_tokens > 0)
            q.max_tokens -= (int32_t)ch->carried_tokens;
        cont = dc_strndup((const char *)ch->sent.data, ch->sent.len);
        if (cont == NULL) {
            run_end(r, false, DC_GEN_FINISH_ERROR, 0, 0, "out of memory");
            return;
        }
        q.continue_text = cont;
    }
    run_dispatch(ch, r, c, &q);
    dc_free(cont);
}

/* ---- aggregation ---- */

/* The answer closest to all the others (the first on ties). */
static size_t medoid(struct run *const *ok, size_t n)
{
    float(*v)[DC_EMBED_DIM] = dc_calloc(n, sizeof(*v));
    int8_t(*qv)[DC_EMBED_DIM] = dc_calloc(n, sizeof(*qv));
    size_t best = 0;
    float best_sum = -1e30f;

    if (v == NULL || qv == NULL) {
        dc_free(v);
        dc_free(qv);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        (void)dc_embed_text((const char *)ok[i]->text.data, ok[i]->text.len, v[i]);
        dc_embed_quantize(v[i], qv[i]);
    }
    for (size_t i = 0; i < n; i++) {
        float s = 0;
        for (size_t j = 0; j < n; j++)
            if (j != i)
                s += dc_embed_cosine(v[i], qv[j]);
        if (s > best_sum) {
            best_sum = s;
            best = i;
        }
    }
    dc_free(v);
    dc_free(qv);
    return best;
}

/* Ends the chat with one collected answer, sent as a single piece. */
static void emit_answer(struct cchat *ch, struct run *r)
{
    struct dc_gen_event ev = {0};

    ev.type = DC_GEN_EV_TOKEN;
    ev.id = -1;
    ev.text = r->text.len > 0 ? (const char *)r->text.data : "";
    ev.text_len = r->text.len;
    if (ev.text_len > 0) {
        ch->emitted = true;
        ch->cb->on_token(ch->ud, &ev);
    }
    chat_end(ch, r->finish, 0, NULL, r->n_prompt, r->n_tokens);
}

/* Cuts 'n' bytes at a UTF-8 boundary of s[0..len). */
static size_t utf8_cut(const char *s, size_t len, size_t n)
{
    if (n >= len)
        return len;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

#define SYNTH_SYSTEM                                                                               \
    "Several expert models have answered the user's latest request. Write the one best answer "    \
    "from them: keep what is correct, settle disagreements in favour of what is best "             \
    "supported, leave out repetition and mistakes, and answer the user directly, without "         \
    "mentioning the experts."

/* Starts the Mixture-of-Agents synthesis on the local engine. Returns 0, or an error (then the
 * caller falls back to the medoid). */
static int synth_start(struct cchat *ch, struct run *const *ok, size_t n)
{
    struct dc_coord *co = ch->co;
    const struct dc_engine_info *info = dc_engine_info(co->engine);
    struct dc_infer_message *m;
    struct dc_buf user;
    struct dc_gen_request g;
    char *prompt = NULL;
    size_t last_user = SIZE_MAX, n_m = 0, budget;
    int32_t max_tokens =
        ch->req.max_tokens > 0 ? ch->req.max_tokens : (int32_t)co->synth_max_tokens;
    long ctx_left;
    int rc;

    for (size_t i = 0; i < ch->n_msgs; i++)
        if (strcmp(ch->msgs[i].role, "user") == 0)
            last_user = i;
    if (last_user == SIZE_MAX)
        return DC_EINVAL;
    /* Room for the answers: the slot's context less the answer, the conversation and some
     * slack for the template, at ~3 bytes a token. */
    ctx_left = (long)info->n_ctx_per_slot - (long)max_tokens - 96;
    for (size_t i = 0; i < ch->n_msgs; i++)
        ctx_left -= (long)(strlen(ch->msgs[i].content) / 3) + 8;
    if (ctx_left < 64 * (long)n)
        return DC_ELIMIT;
    budget = (size_t)ctx_left * 3 / n;

    dc_buf_init(&user, 0);
    rc = dc_buf_append_str(&user, ch->msgs[last_user].content);
    if (rc == 0)
        rc = dc_buf_printf(&user, "\n\n---\nAnswers of %zu experts to this request:\n", n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        size_t len = utf8_cut((const char *)ok[i]->text.data, ok[i]->text.len, budget);
        rc = dc_buf_printf(&user, "\n[Expert %zu]\n", i + 1);
        if (rc == 0)
            rc = dc_buf_append(&user, ok[i]->text.data, len);
        if (rc == 0)
            rc = dc_buf_append_str(&user, "\n");
    }
    if (rc == 0)
        rc = dc_buf_append_str(&user, "---\nWrite the single best answer to the request.");
    if (rc == 0)
        rc = dc_buf_append(&user, "", 1);
    m = rc == 0 ? dc_calloc(ch->n_msgs + 1, sizeof(*m)) : NULL;
    if (m == NULL) {
        dc_buf_cleanup(&user);
        return DC_ENOMEM;
    }
    m[n_m].role = "system";
    m[n_m++].content = SYNTH_SYSTEM;
    for (size_t i = 0; i < ch->n_msgs; i++) {
        if (strcmp(ch->msgs[i].role, "system") == 0)
            continue; /* the synthesis has its own instructions */
        m[n_m].role = ch->msgs[i].role;
        m[n_m++].content = i == last_user ? (const char *)user.data : ch->msgs[i].content;
        if (i == last_user)
            break; /* what follows the request is not part of it */
    }
    rc = render(co->engine, m, n_m, NULL, &prompt);
    dc_free(m);
    dc_buf_cleanup(&user);
    if (rc < 0)
        return rc;
    gen_request_from(ch, prompt, &g);
    g.max_tokens = max_tokens;
    rc = local_submit(ch, &g, true, ch, &ch->synth);
    dc_free(prompt);
    if (rc < 0) {
        ch->synth = NULL;
        return rc;
    }
    ch->phase = PH_SYNTH;
    atomic_fetch_add(&co->n_syntheses, 1);
    dc_log_info(LOG, "writing one answer from %zu expert answers with the local model", n);
    return 0;
}

/* Loop thread: when every run has ended, the answer. */
static void chat_maybe_finish(struct cchat *ch)
{
    struct run *ok[MAX_RUNS];
    size_t n_ok = 0;
    const char *first_err = NULL;
    int rc;

    if (ch->ended || ch->phase != PH_RUNNING || ch->starting)
        return;
    for (size_t i = 0; i < ch->n_runs; i++) {
        struct run *r = &ch->runs[i];
        if (r->state == RUN_RUNNING)
            return;
        if (r->state == RUN_OK && (ch->direct || r->text.len > 0))
            ok[n_ok++] = r;
        else if (r->state == RUN_FAILED && first_err == NULL)
            first_err = r->err;
    }
    if (ch->direct) {
        struct run *last = &ch->runs[ch->n_runs - 1];
        if (last->state == RUN_OK)
            chat_end(ch, last->finish, 0, NULL, last->n_prompt,
                     ch->carried_tokens + last->n_tokens);
        else
            chat_fail(ch, DC_EPEER, "The chosen expert %s failed: %s%s", last->peer_text, last->err,
                      ch->emitted ? " (after part of its answer was sent)" : "");
        return;
    }
    if (n_ok == 0) {
        chat_fail(ch, DC_EPEER, "Every expert asked (%zu) failed; the first: %s", ch->n_runs,
                  first_err != NULL ? first_err : "empty answer");
        return;
    }
    if (n_ok == 1) {
        emit_answer(ch, ok[0]);
        return;
    }
    if (ch->co->engine != NULL) {
        rc = synth_start(ch, ok, n_ok);
        if (rc == 0)
            return;
        dc_log_info(LOG, "cannot write a synthesis (%s); answering with the medoid",
                    dc_strerror(rc));
    }
    emit_answer(ch, ok[medoid(ok, n_ok)]);
}

/* ---- routing ---- */

static void route_finish(struct cchat *ch)
{
    struct dc_coord *co = ch->co;
    const struct dc_expert *cands[MAX_CACHE + 1];
    bool local[MAX_CACHE + 1], ranked[MAX_CACHE + 1] = {false};
    struct dc_expert_rank rk[MAX_CANDS];
    size_t n = 0, k, n_pick;
    char line[512];
    size_t off = 0;

    if (ch->route_done || ch->ended)
        return;
    ch->route_done = true;
    cache_expire(co);
    if (co->has_self) {
        local[n] = true;
        cands[n++] = &co->self.x;
    }
    for (struct centry *e = co->cache; e != NULL && n < MAX_CACHE + 1; e = e->next) {
        local[n] = false;
        cands[n++] = &e->x;
    }
    k = dc_expert_rank(ch->q, cands, n, NULL, rk, MAX_CANDS);
    for (size_t i = 0; i < k; i++) {
        ch->cands[i].peer = cands[rk[i].index]->peer;
        ch->cands[i].local = local[rk[i].index];
        ch->cands[i].similarity = rk[i].similarity;
        ranked[rk[i].index] = true;
    }
    ch->n_cands = k;
    /* Experts the ranking left out (nothing in common with the prompt) still serve, in cache
     * order: they only fill places the ranking could not. */
    for (size_t i = 0; i < n && ch->n_cands < MAX_CANDS; i++) {
        if (ranked[i] || strcmp(cands[i]->embedder, DC_EMBEDDER_ID) != 0)
            continue;
        ch->cands[ch->n_cands].peer = cands[i]->peer;
        ch->cands[ch->n_cands].local = local[i];
        ch->cands[ch->n_cands].similarity = 0;
        ch->n_cands++;
    }
    /* Experts that failed a chat lately go last (kept: they may be all there is). */
    {
        struct cand tmp[MAX_CANDS];
        size_t n_t = 0, n_b = 0;
        uint64_t now = dc_mono_ms();
        bool benched[MAX_CANDS];
        for (size_t i = 0; i < ch->n_cands; i++) {
            struct centry *e = ch->cands[i].local ? NULL : cache_find(co, &ch->cands[i].peer);
            benched[i] = e != NULL && e->benched_ms > now;
        }
        for (size_t i = 0; i < ch->n_cands; i++)
            if (!benched[i])
                tmp[n_t++] = ch->cands[i];
        for (size_t i = 0; i < ch->n_cands; i++)
            if (benched[i]) {
                tmp[n_t++] = ch->cands[i];
                n_b++;
            }
        memcpy(ch->cands, tmp, n_t * sizeof(tmp[0]));
        if (n_b > 0)
            dc_log_debug(LOG, "%zu expert(s) that failed lately ranked last", n_b);
    }
    /* A node that knows no expert still answers with its own model (a swarm of one). */
    if (ch->n_cands == 0 && co->engine != NULL) {
        ch->cands[0].peer = *dc_identity_peer_id(co->identity);
        ch->cands[0].local = true;
        ch->cands[0].similarity = 0;
        ch->n_cands = 1;
    }
    if (ch->n_cands == 0) {
        chat_fail(ch, DC_ENOENT,
                  "No expert is known in the swarm and this node serves no model (%zu record(s) "
                  "cached)",
                  co->n_cache);
        return;
    }
    n_pick = ch->want < ch->n_cands ? ch->want : ch->n_cands;
    ch->direct = n_pick == 1;
    ch->phase = PH_RUNNING;
    for (size_t i = 0; i < n_pick; i++) {
        char p[DC_PEER_ID_STR_MAX];
        if (dc_peer_id_to_string(&ch->cands[i].peer, p, sizeof(p)) < 0)
            snprintf(p, sizeof(p), "?");
        if (off < sizeof(line))
            off += (size_t)snprintf(line + off, sizeof(line) - off, "%s%s (%.2f%s)",
                                    i > 0 ? ", " : "", p, (double)ch->cands[i].similarity,
                                    ch->cands[i].local ? ", local" : "");
    }
    dc_log_info(LOG, "swarm chat routed in %llu ms to %zu of %zu candidate(s): %s",
                (unsigned long long)(dc_mono_ms() - ch->t0_ms), n_pick, ch->n_cands,
                off > 0 ? line : "");
    ch->next_cand = n_pick;
    /* Start them all before concluding anything: a run that fails at once fails over into
     * next_cand, and the end is decided once every run has been started. */
    ch->starting = true;
    for (size_t i = 0; i < n_pick && !ch->ended; i++)
        run_start(ch, &ch->cands[i]);
    ch->starting = false;
    chat_maybe_finish(ch);
}

static void snap_update(struct dc_coord *co);

static void route_step_done(struct cchat *ch)
{
    if (--ch->pending > 0)
        return;
    /* One snapshot per round of lookups, not one per record fetched. */
    if (ch->co->snap_dirty)
        snap_update(ch->co);
    if (ch->discovery) {
        ch->co->discovering = false;
    } else if (!ch->ended) {
        route_finish(ch);
    }
}

struct fetch {
    struct cchat *ch;
    uint8_t key[DC_KAD_MAX_KEY];
    size_t key_len;
};

static void on_record(void *ud, int status, const struct dc_dht_result *res)
{
    struct fetch *f = ud;
    struct cchat *ch = f->ch;
    struct dc_expert x;

    if (status == 0 && res != NULL && res->value != NULL) {
        int rc = dc_expert_open(f->key, f->key_len, res->value, res->value_len, dc_wall_ms(), &x);
        if (rc == 0 && !ch->co->closed &&
            !dc_peer_id_equal(&x.peer, dc_identity_peer_id(ch->co->identity))) {
            cache_put(ch->co, &x);
        } else if (rc < 0)
            dc_log_debug(LOG, "capability record refused: %s", dc_strerror(rc));
    }
    dc_free(f);
    route_step_done(ch);
    chat_unref(ch);
}

static void fetch_record(struct cchat *ch, const struct dc_peer_id *p)
{
    struct dc_coord *co = ch->co;
    struct centry *e;
    struct fetch *f;

    if (dc_peer_id_equal(p, dc_identity_peer_id(co->identity)))
        return;
    e = cache_find(co, p);
    if (e != NULL && dc_mono_ms() - e->fetched_ms < co->refresh_ms &&
        e->x.expires_ms > dc_wall_ms())
        return;
    for (size_t i = 0; i < ch->n_fetching; i++)
        if (dc_peer_id_equal(&ch->fetching[i], p))
            return;
    if (ch->n_fetching >= MAX_FETCH)
        return;
    f = dc_calloc(1, sizeof(*f));
    if (f == NULL)
        return;
    f->ch = ch;
    if (dc_expert_key(p, f->key, &f->key_len) < 0 ||
        dc_dht_get(co->dht, f->key, f->key_len, on_record, f) < 0) {
        dc_free(f);
        return;
    }
    ch->fetching[ch->n_fetching++] = *p;
    ch->pending++;
    ch->refs++;
}

static void on_providers(void *ud, int status, const struct dc_dht_result *res)
{
    struct cchat *ch = ud;
    struct dc_coord *co = ch->co;

    if (status == 0 && res != NULL && !ch->ended && !co->closed) {
        for (size_t i = 0; i < res->n_providers; i++) {
            const struct dc_kad_peer_info *p = &res->providers[i];
            if (dc_peer_id_equal(&p->id, dc_identity_peer_id(co->identity)))
                continue;
            if (p->n_addrs > 0)
                (void)!dc_host_add_peer_addrs(co->host, &p->id, p->addrs, p->n_addrs);
            fetch_record(ch, &p->id);
        }
    }
    route_step_done(ch);
    chat_unref(ch);
}

static void on_all_providers(void *ud, int status, const struct dc_dht_result *res)
{
    struct cchat *ch = ud;

    ch->co->all_known = status == 0 && res != NULL && res->n_providers < PROVIDERS_ALL;
    on_providers(ud, status, res);
}

static void lookup(struct cchat *ch, const uint8_t *key, size_t len, uint32_t max)
{
    dc_dht_done_cb cb = max == PROVIDERS_ALL ? on_all_providers : on_providers;

    if (dc_dht_find_providers(ch->co->dht, key, len, max, cb, ch) == 0) {
        ch->pending++;
        ch->refs++;
    }
}

static void route_start(struct cchat *ch)
{
    struct dc_coord *co = ch->co;
    uint64_t now = dc_mono_ms();

    ch->pending = 1; /* this function's, dropped at the end */
    /* A small swarm whose every expert the background refresh has just seen: rank the cache
     * now. Otherwise look for experts near this prompt first. */
    if (co->dht != NULL && dc_dht_table_size(co->dht) > 0 &&
        !(co->all_known && !co->peers_changed && co->last_refresh_ms != 0 &&
          now - co->last_refresh_ms < co->refresh_ms)) {
        uint8_t key[64];
        if (co->last_refresh_ms == 0 || now - co->last_refresh_ms >= co->refresh_ms ||
            co->peers_changed) {
            co->last_refresh_ms = now;
            co->peers_changed = false;
            lookup(ch, (const uint8_t *)DC_EXPERTS_KEY, strlen(DC_EXPERTS_KEY), PROVIDERS_ALL);
        }
        for (unsigned b = 0; b < DC_LSH_BANDS; b++) {
            size_t n = dc_lsh_band_key(ch->lsh, b, key, sizeof(key));
            if (n > 0)
                lookup(ch, key, n, PROVIDERS_BAND);
        }
        /* Records of cached experts that are due for a refresh. */
        for (struct centry *e = co->cache; e != NULL; e = e->next)
            fetch_record(ch, &e->x.peer);
    }
    ch->route_deadline_ms = now + co->lookup_timeout_ms;
    /* Finishing here would call back inside dc_coord_chat: the loop's next turn does it. */
    ch->pending--;
    if (ch->pending == 0) {
        ch->route_deadline_ms = now;
        uv_async_send(&co->async);
    }
}

/* A background refresh of the routing cache: the providers of DC_EXPERTS_KEY and the records
 * of cached experts that are due, with no chat waiting. */
static void discover(struct dc_coord *co)
{
    struct cchat *ch;

    if (co->closed || co->discovering || co->dht == NULL || dc_dht_table_size(co->dht) == 0)
        return;
    ch = dc_calloc(1, sizeof(*ch));
    if (ch == NULL)
        return;
    ch->co = co;
    ch->refs = 1;
    ch->discovery = true;
    ch->pending = 1;
    co->discovering = true;
    co->last_refresh_ms = dc_mono_ms();
    co->peers_changed = false;
    lookup(ch, (const uint8_t *)DC_EXPERTS_KEY, strlen(DC_EXPERTS_KEY), PROVIDERS_ALL);
    for (struct centry *e = co->cache; e != NULL; e = e->next)
        fetch_record(ch, &e->x.peer);
    route_step_done(ch);
    chat_unref(ch);
}

static void on_discover(uv_timer_t *t)
{
    struct dc_coord *co = t->data;

    cache_expire(co);
    discover(co);
    if (co->snap_dirty)
        snap_update(co);
}

/* ---- the loop's wake-ups ---- */

/* Routes the chats whose lookups have ended or run out of time. */
static void route_ready(struct dc_coord *co)
{
    uint64_t now = dc_mono_ms();
    struct cchat *ch = co->chats;

    while (ch != NULL) {
        struct cchat *next = ch->next; /* route_finish may unlink ch, never another chat */
        if (ch->phase == PH_ROUTING && !ch->route_done &&
            (ch->pending == 0 || now >= ch->route_deadline_ms)) {
            ch->refs++;
            route_finish(ch);
            chat_unref(ch);
        }
        ch = next;
    }
}

static void on_tick(uv_timer_t *t)
{
    route_ready(t->data);
}

static void on_async(uv_async_t *a)
{
    struct dc_coord *co = a->data;
    struct lev *list;

    route_ready(co);
    pthread_mutex_lock(&co->mu);
    list = co->evq;
    co->evq = co->evq_tail = NULL;
    pthread_mutex_unlock(&co->mu);
    while (list != NULL) {
        struct lev *l = list;
        struct cchat *ch = l->ch;
        list = l->next;
        l->ev.text = l->text != NULL ? l->text : "";
        l->ev.top = l->top;
        l->ev.error_msg = l->error_msg;
        if (l->run != NULL) {
            struct run *r = l->run;
            if (l->ev.type == DC_GEN_EV_TOKEN) {
                run_token(r, &l->ev);
            } else {
                dc_gen_release(r->gen);
                r->gen = NULL;
                if (l->ev.finish == DC_GEN_FINISH_STOP || l->ev.finish == DC_GEN_FINISH_LENGTH)
                    run_end(r, true, l->ev.finish, l->ev.n_prompt, l->ev.n_generated, NULL);
                else
                    run_end(r, false, l->ev.finish, l->ev.n_prompt, l->ev.n_generated,
                            l->ev.finish == DC_GEN_FINISH_CANCELLED
                                ? "cancelled"
                                : (l->error_msg != NULL ? l->error_msg : "error"));
                chat_unref(ch);
            }
        } else {
            if (l->ev.type == DC_GEN_EV_TOKEN) {
                if (!ch->ended) {
                    ch->emitted = true;
                    ch->cb->on_token(ch->ud, &l->ev);
                }
            } else {
                dc_gen_release(ch->synth);
                ch->synth = NULL;
                if (l->ev.finish == DC_GEN_FINISH_ERROR)
                    chat_fail(ch, DC_EPEER, "The synthesis failed: %s",
                              l->error_msg != NULL ? l->error_msg : "error");
                else
                    chat_end(ch, l->ev.finish, 0, NULL, l->ev.n_prompt, l->ev.n_generated);
                chat_unref(ch);
            }
        }
        lev_free(l);
    }
}

/* ---- publishing ---- */

static void on_put(void *ud, int status, const struct dc_dht_result *res)
{
    struct dc_coord *co = ud;

    co->put_running = false;
    if (status == 0 && res != NULL) {
        co->last_stored = res->n_stored;
        atomic_fetch_add(&co->n_published, 1);
        dc_log_debug(LOG, "capability record stored on %zu peer(s)", res->n_stored);
    } else if (status == DC_EAGAIN) {
        co->last_stored = 0;
        dc_log_debug(LOG, "capability record kept locally (no DHT peer yet)");
    } else if (status != DC_ECLOSED) {
        co->last_stored = 0;
        dc_log_warn(LOG, "cannot publish the capability record: %s", dc_strerror(status));
    }
}

static int build_self(struct dc_coord *co, struct dc_expert *x)
{
    struct dc_engine_stats st = {0};
    const struct dc_engine_info *info = dc_engine_info(co->engine);
    int rc;

    memset(x, 0, sizeof(*x));
    snprintf(x->description, sizeof(x->description), "%s", co->description);
    rc = dc_expert_embed(x);
    if (rc < 0)
        return rc;
    snprintf(x->model, sizeof(x->model), "%s", co->model_id != NULL ? co->model_id : "");
    if (co->has_sha) {
        memcpy(x->model_sha256, co->model_sha, 32);
        x->has_model_sha256 = true;
    }
    dc_engine_stats(co->engine, &st);
    x->n_ctx = info->n_ctx_per_slot;
    x->slots = info->n_parallel > 0 ? info->n_parallel : 1;
    x->active = st.active;
    x->queued = st.queued;
    x->price = co->price;
    for (size_t i = 0; i < co->n_tags && i < DC_EXPERT_MAX_TAGS; i++)
        snprintf(x->tags[x->n_tags++], sizeof(x->tags[0]), "%s", co->tags[i]);
    x->peer = *dc_identity_peer_id(co->identity);
    return 0;
}

static void publish(struct dc_coord *co)
{
    struct dc_buf val;
    uint8_t key[DC_KAD_MAX_KEY];
    size_t key_len;
    uint64_t now = dc_wall_ms();
    uint64_t ttl = 3ull * co->republish_ms;
    int rc;

    if (!co->publish || co->closed)
        return;
    rc = build_self(co, &co->self.x);
    if (rc < 0) {
        dc_log_warn(LOG, "cannot describe this node as an expert: %s", dc_strerror(rc));
        return;
    }
    co->self.x.seq = now;
    co->self.x.expires_ms = now + ttl;
    co->self.self = true;
    co->has_self = true;
    snap_update(co);
    if (co->dht == NULL || co->put_running)
        return;
    dc_buf_init(&val, 0);
    rc = dc_expert_key(dc_identity_peer_id(co->identity), key, &key_len);
    if (rc == 0)
        rc = dc_expert_sign(co->identity, &co->self.x, now, now + ttl, &val);
    if (rc == 0)
        rc = dc_dht_put(co->dht, key, key_len, val.data, val.len, on_put, co);
    dc_buf_cleanup(&val);
    if (rc < 0) {
        dc_log_warn(LOG, "cannot publish the capability record: %s", dc_strerror(rc));
        return;
    }
    co->put_running = true;
    if (!co->provided) {
        uint8_t bk[64];
        co->provided = true;
        rc = dc_dht_provide(co->dht, (const uint8_t *)DC_EXPERTS_KEY, strlen(DC_EXPERTS_KEY), true,
                            NULL, NULL);
        for (unsigned b = 0; rc == 0 && b < DC_LSH_BANDS; b++) {
            size_t n = dc_lsh_band_key(co->self.x.lsh, b, bk, sizeof(bk));
            if (n > 0)
                rc = dc_dht_provide(co->dht, bk, n, true, NULL, NULL);
        }
        if (rc < 0)
            dc_log_warn(LOG, "cannot announce this node as an expert: %s", dc_strerror(rc));
    }
}

static void on_republish(uv_timer_t *t)
{
    publish(t->data);
}

void dc_coord_peer_changed(struct dc_coord *co, const struct dc_peer_id *peer)
{
    struct centry *e;

    if (co == NULL || co->closed)
        return;
    co->peers_changed = true;
    e = peer != NULL ? cache_find(co, peer) : NULL;
    if (e != NULL && e->benched_ms != 0) {
        char text[DC_PEER_ID_STR_MAX];

        e->benched_ms = 0;
        if (dc_peer_id_to_string(peer, text, sizeof(text)) >= 0)
            dc_log_info(LOG, "expert %s is connected again: ranked normally", text);
    }
    /* Learn the swarm's experts soon (once the new peer is in the DHT's table), then every
     * refresh interval. */
    uv_timer_start(&co->discover_timer, on_discover, 1000, co->refresh_ms);
    /* The first record went nowhere (no peer then): send it again soon. */
    if (co->publish && co->dht != NULL && co->last_stored == 0 && !co->put_running)
        uv_timer_start(&co->republish_timer, on_republish, 500, co->republish_ms);
}

/* ---- lifecycle ---- */

int dc_coord_new(const struct dc_coord_config *cfg, struct dc_coord **out)
{
    struct dc_coord *co;
    int rc;

    *out = NULL;
    if (cfg == NULL || cfg->loop == NULL || cfg->host == NULL || cfg->identity == NULL)
        return DC_EINVAL;
    co = dc_calloc(1, sizeof(*co));
    if (co == NULL)
        return DC_ENOMEM;
    co->loop = cfg->loop;
    co->host = cfg->host;
    co->dht = cfg->dht;
    co->identity = cfg->identity;
    co->engine = cfg->engine;
    co->price = cfg->price >= 0 && isfinite(cfg->price) ? cfg->price : 0;
    co->default_experts = cfg->default_experts > 0 ? cfg->default_experts : 3;
    if (co->default_experts > DC_COORD_MAX_EXPERTS)
        co->default_experts = DC_COORD_MAX_EXPERTS;
    co->expert_timeout_ms = cfg->expert_timeout_ms > 0 ? cfg->expert_timeout_ms : 120000;
    co->lookup_timeout_ms = cfg->lookup_timeout_ms > 0 ? cfg->lookup_timeout_ms : 3000;
    co->republish_ms = cfg->republish_ms > 0 ? cfg->republish_ms : 600000;
    co->refresh_ms = cfg->refresh_ms > 0 ? cfg->refresh_ms : 30000;
    co->max_failovers = cfg->max_failovers > 0 ? cfg->max_failovers : 2;
    co->synth_max_tokens = cfg->synthesis_max_tokens > 0 ? cfg->synthesis_max_tokens : 512;
    co->model_id = dc_strdup(cfg->model_id != NULL ? cfg->model_id : "");
    co->description = dc_strdup(cfg->description != NULL ? cfg->description : "");
    co->tags = dc_calloc(cfg->n_tags > 0 ? cfg->n_tags : 1, sizeof(*co->tags));
    if (co->model_id == NULL || co->description == NULL || co->tags == NULL)
        goto nomem;
    for (; co->n_tags < cfg->n_tags && co->n_tags < DC_EXPERT_MAX_TAGS; co->n_tags++) {
        co->tags[co->n_tags] = dc_strdup(cfg->tags[co->n_tags]);
        if (co->tags[co->n_tags] == NULL)
            goto nomem;
    }
    if (cfg->model_sha256 != NULL && strlen(cfg->model_sha256) == 64) {
        co->has_sha = true;
        for (size_t i = 0; i < 32; i++) {
            unsigned v;
            if (sscanf(cfg->model_sha256 + 2 * i, "%2x", &v) != 1) {
                co->has_sha = false;
                break;
            }
            co->model_sha[i] = (uint8_t)v;
        }
    }
    co->publish = co->engine != NULL && co->description[0] != '\0';
    pthread_mutex_init(&co->mu, NULL);
    pthread_cond_init(&co->cv, NULL);
    rc = uv_async_init(co->loop, &co->async, on_async);
    if (rc < 0)
        goto err_sync;
    co->async.data = co;
    co->handles_open++;
    uv_timer_init(co->loop, &co->tick);
    co->tick.data = co;
    co->handles_open++;
    uv_timer_init(co->loop, &co->republish_timer);
    co->republish_timer.data = co;
    co->handles_open++;
    uv_timer_init(co->loop, &co->discover_timer);
    co->discover_timer.data = co;
    co->handles_open++;
    pthread_mutex_init(&co->snap_mu, NULL);
    if (co->publish) {
        struct dc_expert probe;
        rc = build_self(co, &probe);
        if (rc < 0) {
            dc_log_error(LOG, "[swarm] description gives no words to route by: '%s'",
                         co->description);
            co->publish = false;
            *out = co;
            dc_coord_free(co);
            return DC_EINVAL;
        }
        publish(co);
        uv_timer_start(&co->republish_timer, on_republish, co->republish_ms, co->republish_ms);
        dc_log_info(LOG, "publishing this node as an expert: \"%.80s%s\"", co->description,
                    strlen(co->description) > 80 ? "..." : "");
    } else if (co->engine != NULL) {
        dc_log_info(LOG, "not published as an expert: set [swarm] description to say what this "
                         "node's model is good at");
    }
    *out = co;
    return 0;

err_sync:
    pthread_cond_destroy(&co->cv);
    pthread_mutex_destroy(&co->mu);
nomem:
    for (size_t i = 0; i < co->n_tags; i++)
        dc_free(co->tags[i]);
    dc_free(co->tags);
    dc_free(co->model_id);
    dc_free(co->description);
    dc_free(co);
    return DC_ENOMEM;
}

int dc_coord_chat(struct dc_coord *co, const struct dc_infer_request *req, uint32_t experts,
                  const struct dc_coord_cb *cb, void *ud, struct dc_coord_call **out)
{
    struct cchat *ch;
    const char *query = NULL;

    *out = NULL;
    if (co->closed)
        return DC_ECLOSED;
    for (size_t i = 0; i < req->n_messages; i++)
        if (req->messages[i].role != NULL && strcmp(req->messages[i].role, "user") == 0)
            query = req->messages[i].content;
    if (query == NULL || req->n_stop > DC_INFER_MAX_STOP)
        return DC_EINVAL;
    ch = dc_calloc(1, sizeof(*ch));
    if (ch == NULL)
        return DC_ENOMEM;
    ch->co = co;
    ch->cb = cb;
    ch->ud = ud;
    dc_buf_init(&ch->sent, 1u << 20);
    ch->refs = 1;
    ch->t0_ms = dc_mono_ms();
    ch->msgs = dc_calloc(req->n_messages, sizeof(*ch->msgs));
    if (ch->msgs == NULL)
        goto nomem;
    for (; ch->n_msgs < req->n_messages; ch->n_msgs++) {
        struct dc_infer_message *m = &ch->msgs[ch->n_msgs];
        m->role = dc_strdup(req->messages[ch->n_msgs].role);
        m->content = dc_strdup(req->messages[ch->n_msgs].content);
        if (m->role == NULL || m->content == NULL) {
            ch->n_msgs++;
            goto nomem;
        }
    }
    for (; ch->n_stop < req->n_stop; ch->n_stop++) {
        ch->stop[ch->n_stop] = dc_strdup(req->stop[ch->n_stop]);
        if (ch->stop[ch->n_stop] == NULL)
            goto nomem;
    }
    ch->req = *req;
    ch->req.model = NULL;
    ch->req.continue_text = NULL;
    ch->req.messages = ch->msgs;
    for (size_t i = 0; i < ch->n_stop; i++)
        ch->req.stop[i] = ch->stop[i];
    ch->want = experts > 0 ? experts : co->default_experts;
    if (ch->want > DC_COORD_MAX_EXPERTS)
        ch->want = DC_COORD_MAX_EXPERTS;
    (void)dc_embed_text(query, strlen(query), ch->q);
    ch->lsh = dc_lsh_key(ch->q);
    ch->phase = PH_ROUTING;
    ch->next = co->chats;
    if (co->chats != NULL)
        co->chats->prev = ch;
    co->chats = ch;
    co->n_chats++;
    atomic_fetch_add(&co->n_chats_total, 1);
    if (!co->tick_on) {
        uv_timer_start(&co->tick, on_tick, TICK_MS / 4, TICK_MS);
        co->tick_on = true;
    }
    route_start(ch);
    *out = (struct dc_coord_call *)ch;
    return 0;

nomem:
    chat_free(ch);
    return DC_ENOMEM;
}

void dc_coord_cancel(struct dc_coord_call *call)
{
    struct cchat *ch = (struct cchat *)call;

    if (ch == NULL || ch->ended)
        return;
    ch->ended = true; /* no callback from now on */
    ch->phase = PH_ENDED;
    chat_stop_work(ch);
    chat_unlink(ch);
    chat_unref(ch);
}

void dc_coord_shutdown(struct dc_coord *co)
{
    if (co == NULL || co->closed)
        return;
    co->closed = true;
    uv_timer_stop(&co->republish_timer);
    uv_timer_stop(&co->discover_timer);
    while (co->chats != NULL)
        chat_end(co->chats, DC_GEN_FINISH_CANCELLED, 0, NULL, 0, 0);
    /* Local generations were canceled: wait for their DONE (engine thread), then let the
     * queue drop their references. */
    pthread_mutex_lock(&co->mu);
    while (co->n_gens > 0)
        pthread_cond_wait(&co->cv, &co->mu);
    pthread_mutex_unlock(&co->mu);
    on_async(&co->async);
}

static void on_closed(uv_handle_t *h)
{
    struct dc_coord *co = h->data;

    if (--co->handles_open > 0)
        return;
    on_async(&co->async); /* events queued after the shutdown's drain */
    while (co->cache != NULL) {
        struct centry *e = co->cache;
        co->cache = e->next;
        dc_free(e);
    }
    for (size_t i = 0; i < co->n_tags; i++)
        dc_free(co->tags[i]);
    dc_free(co->tags);
    dc_free(co->model_id);
    dc_free(co->description);
    pthread_cond_destroy(&co->cv);
    pthread_mutex_destroy(&co->mu);
    pthread_mutex_destroy(&co->snap_mu);
    dc_free(co->snap);
    dc_free(co);
}

void dc_coord_free(struct dc_coord *co)
{
    if (co == NULL)
        return;
    dc_coord_shutdown(co);
    uv_close((uv_handle_t *)&co->async, on_closed);
    uv_close((uv_handle_t *)&co->tick, on_closed);
    uv_close((uv_handle_t *)&co->republish_timer, on_closed);
    uv_close((uv_handle_t *)&co->discover_timer, on_closed);
}

/* ---- introspection ---- */

static json_t *expert_json(const struct dc_expert *x, bool self)
{
    char p[DC_PEER_ID_STR_MAX];
    json_t *tags = json_array();

    if (tags == NULL)
        return NULL;
    for (size_t i = 0; i < x->n_tags; i++)
        json_array_append_new(tags, json_string(x->tags[i]));
    if (dc_peer_id_to_string(&x->peer, p, sizeof(p)) < 0)
        snprintf(p, sizeof(p), "?");
    return json_pack("{s:s, s:b, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:f, s:I}", "peer_id", p,
                     "self", self, "description", x->description, "model", x->model, "tags", tags,
                     "n_ctx", (json_int_t)x->n_ctx, "slots", (json_int_t)x->slots, "active",
                     (json_int_t)x->active, "queued", (json_int_t)x->queued, "price", x->price,
                     "expires_unix_ms", (json_int_t)x->expires_ms);
}

/* Loop thread: rebuilds the JSON snapshot other threads read. */
static void snap_update(struct dc_coord *co)
{
    json_t *a = json_array();
    char *s, *copy;

    if (a == NULL)
        return;
    co->snap_dirty = false;
    if (co->has_self)
        json_array_append_new(a, expert_json(&co->self.x, true));
    for (struct centry *e = co->cache; e != NULL; e = e->next)
        json_array_append_new(a, expert_json(&e->x, false));
    s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    copy = s != NULL ? dc_strdup(s) : NULL;
    free(s);
    if (copy == NULL)
        return;
    pthread_mutex_lock(&co->snap_mu);
    dc_free(co->snap);
    co->snap = copy;
    co->n_known = (uint32_t)co->n_cache + (co->has_self ? 1u : 0u);
    pthread_mutex_unlock(&co->snap_mu);
}

int dc_coord_experts_json(struct dc_coord *co, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    pthread_mutex_lock(&co->snap_mu);
    *out = dc_strdup(co->snap != NULL ? co->snap : "[]");
    if (*out != NULL)
        *len = strlen(*out);
    pthread_mutex_unlock(&co->snap_mu);
    return *out != NULL ? 0 : DC_ENOMEM;
}

void dc_coord_stats(struct dc_coord *co, struct dc_coord_stats *out)
{
    out->chats = atomic_load(&co->n_chats_total);
    out->routed = atomic_load(&co->n_routed);
    out->failovers = atomic_load(&co->n_failovers);
    out->syntheses = atomic_load(&co->n_syntheses);
    out->published = atomic_load(&co->n_published);
    pthread_mutex_lock(&co->snap_mu);
    out->known = co->n_known;
    pthread_mutex_unlock(&co->snap_mu);
}

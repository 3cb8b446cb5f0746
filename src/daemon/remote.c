/* SPDX-License-Identifier: MIT */
/*
 * remote.c - chat completions forwarded to a peer over /democritus/infer/1.0.0 (see remote.h
 * for the contract).
 *
 * Why a queue: the REST server's threads may not touch the host, and the host may not wait
 * for them. A call is shared by the API (from start until release) and the loop (from start
 * until its DONE has been delivered); every trip through the queue holds one more reference,
 * so a cancel that races the end finds the call still allocated. Reference counts, the queue
 * and the cancel flag are under rm->mu; everything else of a call belongs to the loop thread
 * once queued. The API callback is never called with rm->mu held, and the hooks never call the
 * API callback from inside themselves: cancel only queues, so the API may call it under its own
 * locks.
 */
#include "daemon/remote.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "crypto/crypto.h"
#include "model/engine.h"
#include "swarm/coord.h"
#include "swarm/swarm.h"

#define LOG             "daemon"
#define MAX_CALLS       64     /* forwarded chats alive at once; beyond, 429 */
#define CALL_TIMEOUT_MS 120000 /* the whole call, dial included */

struct rcall {
    struct dc_remote *rm;
    dc_api_remote_cb cb;
    void *cb_ud;

    /* the request, copied (loop thread once queued) */
    struct dc_peer_id peer;
    char peer_text[DC_PEER_ID_STR_MAX];
    bool swarm;       /* the model "swarm": the coordinator answers */
    uint32_t experts; /* its experts; 0: the default */
    struct dc_infer_message *msgs;
    size_t n_msgs;
    char *stop[DC_INFER_MAX_STOP];
    size_t n_stop;
    struct dc_sampling sampling;
    int32_t max_tokens;
    bool logprobs;
    uint32_t n_logprobs;

    /* under rm->mu */
    int refs;
    bool queued;
    bool want_cancel;
    struct rcall *next; /* in rm->queue */

    /* loop thread only */
    bool started, ended;
    bool dialing; /* a dial of ours is pending (it holds a reference) */
    struct dc_infer_call *ic;
    struct dc_coord_call *cc; /* swarm: the coordinator's chat, while it runs */
    uint32_t n_tokens;
    struct rcall *act_prev, *act_next; /* in rm->active while ic is live */
};

struct dc_remote {
    uv_loop_t *loop;
    struct dc_host *host;
    struct dc_peer_id self;
    struct dc_coord *coord; /* the model "swarm"; NULL: refused */
    uv_async_t async;

    pthread_mutex_t mu;
    struct rcall *queue; /* under mu */
    uint32_t n_calls;    /* under mu: calls allocated */
    bool closed;         /* under mu (written by the loop thread only) */

    struct rcall *active; /* loop thread only */
};

/* ---- the end of a call, as the REST client sees it ---- */

static void set_err(struct dc_api_remote_error *e, int status, const char *type, const char *code,
                    const char *fmt, const char *peer, const char *detail)
{
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->message, sizeof(e->message), fmt, peer, detail);
}

enum dc_gen_finish dc_remote_map_end(const char *peer, int status, const struct dc_infer_done *done,
                                     struct dc_api_remote_error *e)
{
    const char *code, *why;

    if (status < 0 || done == NULL) {
        if (status == DC_ETIMEDOUT)
            set_err(e, 504, "server_error", "peer_timeout", "Peer %s did not answer in time%s",
                    peer, "");
        else if (status == DC_ECRYPTO)
            set_err(e, 502, "server_error", "peer_bad_signature",
                    "Peer %s sent a token or an end whose signature or transcript does not "
                    "verify%s",
                    peer, "");
        else if (status == DC_EPROTO)
            set_err(e, 502, "server_error", "peer_protocol_error",
                    "Peer %s broke /democritus/infer/1.0.0%s", peer, "");
        else
            set_err(e, 502, "server_error", "peer_stream_broken",
                    "The stream from peer %s ended before its answer did: %s", peer,
                    dc_strerror(status < 0 ? status : DC_ECLOSED));
        return DC_GEN_FINISH_ERROR;
    }
    if (done->finish_reason != NULL && strcmp(done->finish_reason, "stop") == 0)
        return DC_GEN_FINISH_STOP;
    if (done->finish_reason != NULL && strcmp(done->finish_reason, "length") == 0)
        return DC_GEN_FINISH_LENGTH;
    if (done->finish_reason != NULL && strcmp(done->finish_reason, "cancelled") == 0)
        return DC_GEN_FINISH_CANCELLED;
    code = done->error_code != NULL ? done->error_code : "";
    why = done->error != NULL ? done->error : "no reason given";
    if (strcmp(code, DC_INFER_ERR_RATE) == 0)
        set_err(e, 429, "rate_limit_error", "peer_rate_limited",
                "Peer %s is rate limiting this node: %s", peer, why);
    else if (strcmp(code, DC_INFER_ERR_REFUSED) == 0)
        set_err(e, 403, "permission_error", "peer_refused", "Peer %s refused the request: %s", peer,
                why);
    else if (strcmp(code, DC_INFER_ERR_TOO_LARGE) == 0)
        set_err(e, 400, "invalid_request_error", "context_length_exceeded",
                "Peer %s refused the request as too large: %s", peer, why);
    else if (strcmp(code, DC_INFER_ERR_INVALID) == 0)
        set_err(e, 400, "invalid_request_error", "peer_invalid_request",
                "Peer %s refused the request as invalid: %s", peer, why);
    else if (strcmp(code, DC_INFER_ERR_UNAVAILABLE) == 0)
        set_err(e, 502, "server_error", "peer_unavailable", "Peer %s has no model to serve: %s",
                peer, why);
    else
        set_err(e, 502, "server_error", "peer_error", "Peer %s failed to answer: %s", peer, why);
    return DC_GEN_FINISH_ERROR;
}

/* ---- calls ---- */

static void call_free(struct rcall *c)
{
    for (size_t i = 0; i < c->n_msgs; i++) {
        dc_free((char *)c->msgs[i].role);
        dc_free((char *)c->msgs[i].content);
    }
    dc_free(c->msgs);
    for (size_t i = 0; i < c->n_stop; i++)
        dc_free(c->stop[i]);
    dc_free(c);
}

/* Drops a reference; the last frees the call. */
static void call_unref(struct rcall *c)
{
    struct dc_remote *rm = c->rm;
    bool last;

    pthread_mutex_lock(&rm->mu);
    last = --c->refs == 0;
    if (last)
        rm->n_calls--;
    pthread_mutex_unlock(&rm->mu);
    if (last)
        call_free(c);
}

/* Under rm->mu: queues the call for the loop (one reference per trip). */
static void enqueue_locked(struct rcall *c)
{
    if (c->queued)
        return;
    c->queued = true;
    c->refs++;
    c->next = c->rm->queue;
    c->rm->queue = c;
    uv_async_send(&c->rm->async);
}

/* Loop thread: delivers the end once and drops the loop's reference. */
static void call_end(struct rcall *c, enum dc_gen_finish finish, uint32_t n_prompt,
                     uint32_t n_generated, const struct dc_api_remote_error *err)
{
    struct dc_remote *rm = c->rm;
    struct dc_gen_event ev = {0};

    if (c->ended)
        return;
    c->ended = true;
    if (c->act_prev != NULL || rm->active == c) {
        if (c->act_prev != NULL)
            c->act_prev->act_next = c->act_next;
        else
            rm->active = c->act_next;
        if (c->act_next != NULL)
            c->act_next->act_prev = c->act_prev;
        c->act_prev = c->act_next = NULL;
    }
    ev.type = DC_GEN_EV_DONE;
    ev.finish = finish;
    ev.n_prompt = n_prompt;
    ev.n_generated = n_generated;
    if (err != NULL) {
        ev.error = DC_EPEER;
        ev.error_msg = err->message;
    }
    c->cb(c->cb_ud, &ev, finish == DC_GEN_FINISH_ERROR ? err : NULL);
    call_unref(c);
}

static void end_error(struct rcall *c, int status, const char *type, const char *code,
                      const char *fmt, const char *detail)
{
    struct dc_api_remote_error e;

    set_err(&e, status, type, code, fmt, c->peer_text, detail);
    call_end(c, DC_GEN_FINISH_ERROR, 0, c->n_tokens, &e);
}

static void on_token(void *ud, const struct dc_infer_token *tok)
{
    struct rcall *c = ud;
    struct dc_top_logprob top[DC_INFER_MAX_TOP];
    struct dc_gen_event ev;

    dc_infer_token_event(tok, top, &ev);
    c->n_tokens++;
    c->cb(c->cb_ud, &ev, NULL);
}

static void on_done(void *ud, int status, const struct dc_infer_done *done)
{
    struct rcall *c = ud;
    struct dc_api_remote_error e;
    enum dc_gen_finish f;

    c->ic = NULL; /* freed after we return */
    f = dc_remote_map_end(c->peer_text, status, done, &e);
    if (f == DC_GEN_FINISH_ERROR)
        dc_log_info(LOG, "forwarded chat: %s", e.message);
    else
        dc_log_debug(LOG, "forwarded chat to %s ended: %s", c->peer_text, dc_gen_finish_name(f));
    call_end(c, f, done != NULL ? done->prompt_tokens : 0,
             done != NULL ? done->completion_tokens : c->n_tokens, &e);
}

static const struct dc_infer_call_cb infer_cb = {
    .on_token = on_token,
    .on_done = on_done,
};

/* ---- the model "swarm" ---- */

static void on_swarm_token(void *ud, const struct dc_gen_event *ev)
{
    struct rcall *c = ud;

    c->n_tokens++;
    c->cb(c->cb_ud, ev, NULL);
}

static void on_swarm_done(void *ud, const struct dc_gen_event *ev)
{
    struct rcall *c = ud;
    struct dc_api_remote_error e;

    c->cc = NULL;
    if (ev->finish != DC_GEN_FINISH_ERROR) {
        call_end(c, ev->finish, ev->n_prompt, ev->n_generated, NULL);
        return;
    }
    if (ev->error == DC_ENOENT)
        set_err(&e, 503, "server_error", "no_expert", "%s%s", "",
                ev->error_msg != NULL ? ev->error_msg : "no expert found");
    else
        set_err(&e, 502, "server_error", "swarm_failed", "%s%s", "",
                ev->error_msg != NULL ? ev->error_msg : "the experts failed");
    call_end(c, DC_GEN_FINISH_ERROR, ev->n_prompt, ev->n_generated, &e);
}

static const struct dc_coord_cb swarm_cb = {
    .on_token = on_swarm_token,
    .on_done = on_swarm_done,
};

static struct dc_infer_request request_of(const struct rcall *c)
{
    struct dc_infer_request q = {0};

    q.n_messages = c->n_msgs;
    q.messages = c->msgs;
    q.has_temperature = q.has_top_p = q.has_top_k = q.has_min_p = true;
    q.temperature = c->sampling.temperature;
    q.top_p = c->sampling.top_p;
    q.top_k = c->sampling.top_k;
    q.min_p = c->sampling.min_p;
    q.has_seed = c->sampling.has_seed;
    q.seed = c->sampling.seed;
    q.max_tokens = c->max_tokens;
    q.n_stop = c->n_stop;
    for (size_t i = 0; i < c->n_stop; i++)
        q.stop[i] = c->stop[i];
    q.want_logprobs = c->logprobs;
    q.n_logprobs = c->n_logprobs;
    return q;
}

static void active_add(struct dc_remote *rm, struct rcall *c)
{
    if (c->act_prev != NULL || rm->active == c)
        return;
    c->act_next = rm->active;
    if (rm->active != NULL)
        rm->active->act_prev = c;
    rm->active = c;
}

/* Loop thread: sends the request on a connection that is up. */
static void call_send(struct dc_remote *rm, struct rcall *c)
{
    struct dc_infer_request q = request_of(c);
    int rc;

    rc = dc_infer_call_start(rm->loop, rm->host, &c->peer, NULL, &q, CALL_TIMEOUT_MS, &infer_cb, c,
                             &c->ic);
    if (rc == DC_ENOENT)
        end_error(c, 502, "server_error", "peer_unreachable",
                  "Not connected to peer %s%s; connect first (POST /api/peers/connect)", "");
    else if (rc == DC_EUNSUPPORTED)
        end_error(c, 400, "invalid_request_error", "model_not_supported",
                  "PeerId %s does not inline an Ed25519 key, so its answers could not be "
                  "verified%s",
                  "");
    else if (rc < 0)
        end_error(c, 502, "server_error", "peer_unreachable", "Cannot send to peer %s: %s",
                  dc_strerror(rc));
    else
        active_add(rm, c);
}

static void on_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    struct rcall *c = ud;

    c->dialing = false;
    if (!c->ended) {
        if (status < 0)
            end_error(c, 502, "server_error", "peer_unreachable", "Cannot reach peer %s: %s",
                      dc_strerror(status));
        else if (peer == NULL || !dc_peer_id_equal(peer, &c->peer))
            end_error(c, 502, "server_error", "peer_unreachable",
                      "Cannot reach peer %s: another PeerId answered at its address%s", "");
        else
            call_send(c->rm, c);
    }
    call_unref(c); /* the dial's reference */
}

/* Loop thread: dials the peer first when it is not connected and the host knows an address of
 * it (a peer we were connected to before). */
static void call_begin(struct dc_remote *rm, struct rcall *c)
{
    const struct dc_peer_info *info;
    struct dc_multiaddr addr;
    int rc;

    if (c->swarm) {
        struct dc_infer_request q = request_of(c);
        if (rm->coord == NULL) {
            end_error(c, 503, "server_error", "p2p_unavailable",
                      "The model \"%s\" is not available on this node%s", "");
            return;
        }
        rc = dc_coord_chat(rm->coord, &q, c->experts, &swarm_cb, c, &c->cc);
        if (rc < 0) {
            c->cc = NULL;
            end_error(c, rc == DC_EINVAL ? 400 : 503,
                      rc == DC_EINVAL ? "invalid_request_error" : "server_error", NULL,
                      "The model \"%s\" cannot take this chat: %s", dc_strerror(rc));
            return;
        }
        active_add(rm, c);
        return;
    }
    if (dc_peer_id_equal(&c->peer, &rm->self)) {
        end_error(c, 400, "invalid_request_error", "model_not_found",
                  "%s is this node's own PeerId; use the model \"local\"%s", "");
        return;
    }
    if (dc_host_is_connected(rm->host, &c->peer)) {
        call_send(rm, c);
        return;
    }
    info = dc_host_peer_info(rm->host, &c->peer);
    if (info == NULL || info->n_addrs == 0) {
        end_error(c, 502, "server_error", "peer_unreachable",
                  "Not connected to peer %s and no address of it is known%s; connect first "
                  "(POST /api/peers/connect)",
                  "");
        return;
    }
    addr = info->addrs[0];
    pthread_mutex_lock(&rm->mu);
    c->refs++; /* the dial's: its callback cannot be withdrawn */
    pthread_mutex_unlock(&rm->mu);
    rc = dc_host_dial(rm->host, &addr, 0, on_dialed, c);
    if (rc < 0) {
        call_unref(c);
        end_error(c, 502, "server_error", "peer_unreachable", "Cannot reach peer %s: %s",
                  dc_strerror(rc));
        return;
    }
    c->dialing = true;
    active_add(rm, c);
}

/* Loop thread: one trip through the queue. */
static void call_run(struct dc_remote *rm, struct rcall *c, bool closed)
{
    bool cancel;

    pthread_mutex_lock(&rm->mu);
    cancel = c->want_cancel;
    pthread_mutex_unlock(&rm->mu);
    if (c->ended)
        return;
    if (!c->started) {
        c->started = true;
        if (closed)
            end_error(c, 503, "server_error", NULL,
                      "Not forwarded to %s: the server is shutting down%s", "");
        else if (cancel)
            call_end(c, DC_GEN_FINISH_CANCELLED, 0, 0, NULL);
        else
            call_begin(rm, c);
    } else if (cancel) {
        /* Sending, or still dialing (the dial's callback will find the call ended). */
        if (c->ic != NULL)
            dc_infer_call_cancel(c->ic);
        c->ic = NULL;
        if (c->cc != NULL)
            dc_coord_cancel(c->cc);
        c->cc = NULL;
        call_end(c, DC_GEN_FINISH_CANCELLED, 0, c->n_tokens, NULL);
    }
}

static void drain(struct dc_remote *rm)
{
    struct rcall *list, *c;
    bool closed;

    pthread_mutex_lock(&rm->mu);
    list = rm->queue;
    rm->queue = NULL;
    for (c = list; c != NULL; c = c->next)
        c->queued = false;
    closed = rm->closed;
    pthread_mutex_unlock(&rm->mu);
    /* The list was pushed at its head: run it in arrival order. */
    {
        struct rcall *rev = NULL;
        while (list != NULL) {
            c = list;
            list = c->next;
            c->next = rev;
            rev = c;
        }
        list = rev;
    }
    while (list != NULL) {
        c = list;
        list = c->next;
        call_run(rm, c, closed);
        call_unref(c); /* the trip's reference */
    }
}

static void on_async(uv_async_t *a)
{
    drain(a->data);
}

/* ---- the hooks (API threads) ---- */

static int hook_start(void *ud, const struct dc_api_remote_req *req, dc_api_remote_cb cb,
                      void *cb_ud, struct dc_api_remote_call **out)
{
    struct dc_remote *rm = ud;
    const struct dc_gen_request *g = req->gen;
    struct rcall *c;
    int rc = DC_ENOMEM;

    *out = NULL;
    if (req->n_msgs > DC_INFER_MAX_MESSAGES || g->n_stop > DC_INFER_MAX_STOP)
        return DC_EINVAL;
    c = dc_calloc(1, sizeof(*c));
    if (c == NULL)
        return DC_ENOMEM;
    c->rm = rm;
    c->cb = cb;
    c->cb_ud = cb_ud;
    if (strcmp(req->peer_id, "swarm") == 0) {
        c->swarm = true;
        c->experts = req->experts;
    } else if (dc_peer_id_parse(req->peer_id, &c->peer) < 0) {
        rc = DC_EINVAL;
        goto err_free;
    }
    snprintf(c->peer_text, sizeof(c->peer_text), "%s", req->peer_id);
    c->msgs = dc_calloc(req->n_msgs > 0 ? req->n_msgs : 1, sizeof(*c->msgs));
    if (c->msgs == NULL)
        goto err_free;
    for (; c->n_msgs < req->n_msgs; c->n_msgs++) {
        struct dc_infer_message *m = &c->msgs[c->n_msgs];
        m->role = dc_strdup(req->msgs[c->n_msgs].role);
        m->content = dc_strdup(req->msgs[c->n_msgs].content);
        if (m->role == NULL || m->content == NULL) {
            c->n_msgs++;
            goto err_free;
        }
    }
    for (; c->n_stop < g->n_stop; c->n_stop++) {
        c->stop[c->n_stop] = dc_strdup(g->stop[c->n_stop]);
        if (c->stop[c->n_stop] == NULL)
            goto err_free;
    }
    c->sampling = g->sampling;
    c->max_tokens = g->max_tokens;
    c->logprobs = g->logprobs;
    c->n_logprobs = g->n_logprobs < DC_INFER_MAX_TOP ? g->n_logprobs : DC_INFER_MAX_TOP;

    pthread_mutex_lock(&rm->mu);
    if (rm->closed || rm->n_calls >= MAX_CALLS) {
        rc = rm->closed ? DC_ECLOSED : DC_ELIMIT;
        pthread_mutex_unlock(&rm->mu);
        goto err_free;
    }
    rm->n_calls++;
    c->refs = 2; /* the API's and the loop's (until DONE); the trip adds its own */
    enqueue_locked(c);
    pthread_mutex_unlock(&rm->mu);
    *out = (struct dc_api_remote_call *)c;
    return 0;

err_free:
    call_free(c);
    return rc;
}

static void hook_cancel(void *ud, struct dc_api_remote_call *call)
{
    struct dc_remote *rm = ud;
    struct rcall *c = (struct rcall *)call;

    pthread_mutex_lock(&rm->mu);
    if (!c->want_cancel) {
        c->want_cancel = true;
        enqueue_locked(c);
    }
    pthread_mutex_unlock(&rm->mu);
}

static void hook_release(void *ud, struct dc_api_remote_call *call)
{
    DC_UNUSED(ud);
    if (call != NULL)
        call_unref((struct rcall *)call);
}

const struct dc_api_remote_hooks dc_remote_hooks = {
    .start = hook_start,
    .cancel = hook_cancel,
    .release = hook_release,
};

/* ---- lifecycle ---- */

int dc_remote_new(uv_loop_t *loop, struct dc_host *host, const struct dc_peer_id *self,
                  struct dc_remote **out)
{
    struct dc_remote *rm = dc_calloc(1, sizeof(*rm));
    int rc;

    *out = NULL;
    if (rm == NULL)
        return DC_ENOMEM;
    rm->loop = loop;
    rm->host = host;
    rm->self = *self;
    pthread_mutex_init(&rm->mu, NULL);
    rc = uv_async_init(loop, &rm->async, on_async);
    if (rc < 0) {
        pthread_mutex_destroy(&rm->mu);
        dc_free(rm);
        return rc;
    }
    rm->async.data = rm;
    *out = rm;
    return 0;
}

void dc_remote_set_coord(struct dc_remote *rm, struct dc_coord *coord)
{
    rm->coord = coord;
}

void dc_remote_shutdown(struct dc_remote *rm)
{
    if (rm == NULL)
        return;
    pthread_mutex_lock(&rm->mu);
    rm->closed = true;
    pthread_mutex_unlock(&rm->mu);
    /* Queued calls end here (never started: 503; cancels: CANCELLED); calls in flight stop
     * and end with what they produced. */
    drain(rm);
    while (rm->active != NULL) {
        struct rcall *c = rm->active;
        if (c->ic != NULL)
            dc_infer_call_cancel(c->ic);
        c->ic = NULL;
        if (c->cc != NULL)
            dc_coord_cancel(c->cc);
        c->cc = NULL;
        call_end(c, DC_GEN_FINISH_CANCELLED, 0, c->n_tokens, NULL);
    }
}

static void on_closed(uv_handle_t *h)
{
    struct dc_remote *rm = h->data;

    /* Trips queued after the shutdown (cancels of calls already ended) hold references. */
    pthread_mutex_lock(&rm->mu);
    while (rm->queue != NULL) {
        struct rcall *c = rm->queue;
        rm->queue = c->next;
        pthread_mutex_unlock(&rm->mu);
        call_unref(c);
        pthread_mutex_lock(&rm->mu);
    }
    if (rm->n_calls > 0)
        dc_log_warn(LOG, "%u forwarded call(s) still referenced at exit", rm->n_calls);
    pthread_mutex_unlock(&rm->mu);
    pthread_mutex_destroy(&rm->mu);
    dc_free(rm);
}

void dc_remote_free(struct dc_remote *rm)
{
    if (rm == NULL)
        return;
    dc_remote_shutdown(rm);
    uv_close((uv_handle_t *)&rm->async, on_closed);
}

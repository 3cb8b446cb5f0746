/* SPDX-License-Identifier: MIT */
/*
 * rpc.c - the parts the WebSocket and gRPC servers share: the backend (models, keys, rate
 * limit, admission), chat requests parsed by REST's own parser, calls (the model resolved by
 * REST's own dc_api_model_resolve, the prompt rendered with that model's chat template, the
 * generation submitted to its engine or forwarded to a peer), and the mailbox that moves
 * engine (and peer) events to a server's loop thread.
 *
 * Why calls resolve off the loop: a registry model that is not loaded takes seconds to load.
 * Its call waits in the backend's queue and is resolved on libuv's thread pool, one at a time
 * per server (the pool is the process's); every outcome, a failure included, then arrives as
 * the call's events, so the WebSocket and gRPC cores handle a late error exactly like an engine
 * error. "local" and PeerIds resolve at once, inline.
 *
 * Why a mailbox: the engine reports tokens on its scheduler thread and must never wait for a
 * socket. The callback copies the event into one heap block, appends it under a mutex held for
 * a few pointer writes, and wakes the loop with uv_async_send (which coalesces wakeups). The
 * DONE event is allocated at submit time, so the one event a call cannot do without is never
 * lost to an allocation failure on the scheduler thread; a token that cannot be allocated is
 * dropped (the client sees a gap, never a hang).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/rpc_int.h"

/* ---- backend ---- */

/* The model id REST uses: the file name without its directory and .gguf. */
static char *model_id_of(const char *path)
{
    const char *base = strrchr(path, '/');
    size_t n;

    base = base != NULL ? base + 1 : path;
    n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
        n -= 5;
    return dc_strndup(base, n);
}

int dc_rpc_backend_init(struct dc_rpc_backend *b, const struct dc_rpc_config *cfg, char *err,
                        size_t errlen)
{
    char *why = NULL;
    int rc;

    memset(b, 0, sizeof(*b));
    if (errlen > 0)
        err[0] = '\0';
    b->registry = cfg->registry;
    b->max_queue = cfg->max_queue != 0 ? cfg->max_queue : 64;
    b->default_temperature = cfg->default_temperature;
    b->version = cfg->version != NULL ? cfg->version : "";
    b->started_ms = dc_mono_ms();
    b->ratelimit = cfg->ratelimit;
    b->remote_ud = cfg->remote_ud;
    b->models.remote = cfg->remote;
    rc = dc_auth_new(cfg->keys, cfg->n_keys, cfg->priority_keys, cfg->n_priority_keys, &b->auth);
    if (rc < 0)
        return rc;
    if (b->registry != NULL) {
        rc = dc_registry_acquire(b->registry, NULL, &b->engine, &why);
        if (rc == 0) {
            b->model_id = model_id_of(dc_engine_info(b->engine)->path);
            if (b->model_id == NULL) {
                dc_rpc_backend_cleanup(b);
                return DC_ENOMEM;
            }
            b->models.reg = b->registry;
            b->models.def_engine = b->engine;
            b->models.def_id = b->model_id;
        } else {
            snprintf(err, errlen, "no model: %s", why != NULL ? why : dc_strerror(rc));
            b->engine = NULL;
        }
        dc_free(why);
    }
    return 0;
}

void dc_rpc_backend_cleanup(struct dc_rpc_backend *b)
{
    if (b->engine != NULL)
        dc_registry_release(b->registry, b->engine);
    dc_auth_free(b->auth);
    dc_free(b->model_id);
    memset(b, 0, sizeof(*b));
}

/* ---- chat requests ---- */

int dc_rpc_chat_parse(const struct dc_rpc_backend *b, const char *json, size_t len,
                      struct dc_rpc_chat *chat, struct dc_api_error *err)
{
    struct dc_api_parse_opts opts = {.default_temperature = b->default_temperature};

    memset(chat, 0, sizeof(*chat));
    return dc_api_parse_request(DC_API_CHAT, json, len, &opts, &chat->req, err);
}

void dc_rpc_chat_cleanup(struct dc_rpc_chat *chat)
{
    dc_api_request_cleanup(&chat->req);
    dc_free(chat->prompt);
    chat->prompt = NULL;
}

/* ---- mailbox ---- */

int dc_rpc_mailbox_init(struct dc_rpc_mailbox *mb, uv_async_t *async)
{
    int rc = pthread_mutex_init(&mb->mu, NULL);

    if (rc != 0)
        return -rc;
    mb->head = NULL;
    mb->tail = &mb->head;
    mb->async = async;
    return 0;
}

void dc_rpc_mailbox_cleanup(struct dc_rpc_mailbox *mb)
{
    struct dc_rpc_event *ev = dc_rpc_mailbox_take(mb), *next;

    for (; ev != NULL; ev = next) {
        next = ev->next;
        dc_free(ev);
    }
    pthread_mutex_destroy(&mb->mu);
}

struct dc_rpc_event *dc_rpc_mailbox_take(struct dc_rpc_mailbox *mb)
{
    struct dc_rpc_event *ev;

    pthread_mutex_lock(&mb->mu);
    ev = mb->head;
    mb->head = NULL;
    mb->tail = &mb->head;
    pthread_mutex_unlock(&mb->mu);
    return ev;
}

static void mailbox_push(struct dc_rpc_mailbox *mb, struct dc_rpc_event *ev)
{
    ev->next = NULL;
    pthread_mutex_lock(&mb->mu);
    *mb->tail = ev;
    mb->tail = &ev->next;
    pthread_mutex_unlock(&mb->mu);
    if (mb->async != NULL)
        uv_async_send(mb->async);
}

/* On the engine's scheduler thread (or the daemon's loop thread for a peer's tokens): copy,
 * queue, wake. Reads only call->mb and call->done, which the loop thread never changes while
 * the call is live. */
static void call_cb(void *ud, const struct dc_gen_event *e)
{
    struct dc_rpc_call *call = ud;
    struct dc_rpc_event *ev;

    if (e->type == DC_GEN_EV_DONE) {
        ev = call->done;
        ev->finish = e->finish;
        ev->error = e->error;
        ev->n_prompt = e->n_prompt;
        ev->n_generated = e->n_generated;
        if (e->error_msg != NULL && ev->text_len == 0) {
            ev->text_len = strnlen(e->error_msg, DC_RPC_DONE_TEXT - 1);
            memcpy(ev->text, e->error_msg, ev->text_len);
            ev->text[ev->text_len] = '\0';
        }
    } else {
        ev = dc_malloc(sizeof(*ev) + e->text_len + 1);
        if (ev == NULL)
            return;
        memset(ev, 0, sizeof(*ev));
        ev->call = call;
        ev->id = e->id;
        ev->logprob = e->logprob;
        ev->text_len = e->text_len;
        if (e->text_len > 0)
            memcpy(ev->text, e->text, e->text_len);
        ev->text[e->text_len] = '\0';
    }
    ev->type = e->type;
    mailbox_push(call->mb, ev);
}

/* Writes the OpenAI error 'e' into the call's DONE event (before it is pushed). */
static void done_error(struct dc_rpc_call *c, const struct dc_api_error *e)
{
    struct dc_rpc_event *ev = c->done;

    ev->status = e->status;
    ev->code = e->code;
    ev->retry_after_ms = e->retry_after_ms;
    ev->text_len = strnlen(e->message, DC_RPC_DONE_TEXT - 1);
    memcpy(ev->text, e->message, ev->text_len);
    ev->text[ev->text_len] = '\0';
}

/* A forwarded chat's events (dc_api_remote_cb, on the daemon's loop thread): as the engine's,
 * with a failure's status, code and message carried by the DONE event. */
static void remote_cb(void *ud, const struct dc_gen_event *e, const struct dc_api_remote_error *err)
{
    struct dc_rpc_call *call = ud;

    if (e->type == DC_GEN_EV_DONE && err != NULL) {
        struct dc_api_error ae;

        dc_api_error_set(&ae, err->status, err->type, err->code, NULL, "%s", err->message);
        if (err->status == 429)
            ae.retry_after_ms = 1000;
        done_error(call, &ae);
    }
    call_cb(ud, e);
}

/* Ends a call that has not started generating: its DONE, with 'e' (NULL: cancelled). */
static void post_done(struct dc_rpc_call *c, const struct dc_api_error *e)
{
    c->done->finish = e != NULL ? DC_GEN_FINISH_ERROR : DC_GEN_FINISH_CANCELLED;
    if (e != NULL)
        done_error(c, e);
    c->done->type = DC_GEN_EV_DONE;
    mailbox_push(c->mb, c->done);
}

static bool overloaded(const struct dc_rpc_backend *b, struct dc_engine *e)
{
    struct dc_engine_stats st;

    dc_engine_stats(e, &st);
    return st.queued >= b->max_queue;
}

/* The model is resolved: forward to the peer, or check the queue bound, render the prompt and
 * submit. Loop thread. Returns 0 (events follow) or a negative code with 'err'. */
static int call_begin(struct dc_rpc_call *c, struct dc_api_error *err)
{
    struct dc_rpc_backend *b = c->b;
    struct dc_api_request *q = &c->chat.req;
    int rc;

    if (c->target == DC_API_TARGET_PEER) {
        struct dc_api_remote_req rq = {.peer_id = q->model,
                                       .experts = q->experts,
                                       .msgs = q->msgs,
                                       .n_msgs = q->n_msgs,
                                       .gen = &q->gen};

        rc = b->models.remote->start(b->remote_ud, &rq, remote_cb, c, &c->rcall);
        if (rc == DC_ELIMIT)
            dc_api_error_set(err, 429, "rate_limit_error", "queue_full", NULL, "%s",
                             "Too many requests forwarded to peers; retry after 1000 ms");
        else if (rc < 0)
            dc_api_error_set(err, 503, "server_error", NULL, NULL, "Cannot forward the request: %s",
                             dc_strerror(rc));
        if (rc < 0 && err->status == 429)
            err->retry_after_ms = 1000;
        return rc;
    }
    if (overloaded(b, c->engine)) {
        dc_api_queue_full(err, q->model);
        return DC_ELIMIT;
    }
    rc = dc_engine_chat_render(c->engine, q->msgs, q->n_msgs, true, &c->chat.prompt, NULL);
    if (rc < 0) {
        dc_api_error_set(err, rc == DC_ENOMEM ? 500 : 400, "invalid_request_error", NULL,
                         "messages", "The messages could not be rendered: %s", dc_strerror(rc));
        return rc;
    }
    q->gen.prompt = c->chat.prompt;
    q->gen.prompt_len = strlen(c->chat.prompt);
    q->gen.prompt_parse_special = true;
    rc = dc_engine_submit(c->engine, &q->gen, call_cb, c, &c->gen);
    if (rc == DC_ELIMIT)
        dc_api_error_set(err, 400, "invalid_request_error", "context_length_exceeded", NULL, "%s",
                         "context_length_exceeded: the prompt and max_tokens do not fit the "
                         "model's context");
    else if (rc == DC_EUNSUPPORTED)
        dc_api_error_set(err, 400, "invalid_request_error", "model_not_supported", NULL, "%s",
                         "This model only computes embeddings");
    else if (rc == DC_EINVAL)
        dc_api_error_set(err, 400, "invalid_request_error", NULL, NULL, "%s",
                         "The engine refused the request parameters");
    else if (rc < 0)
        dc_api_error_set(err, 503, "server_error", NULL, NULL,
                         "The engine cannot take requests: %s", dc_strerror(rc));
    return rc;
}

/* The thread pool: acquire (maybe load) the registry model. */
static void resolve_work(uv_work_t *w)
{
    struct dc_rpc_call *c = w->data;

    c->work_rc =
        dc_api_model_resolve(&c->b->models, &c->chat.req, &c->target, &c->engine, &c->work_err);
    c->acquired = c->work_rc == 0 && c->target == DC_API_TARGET_REGISTRY;
}

static void resolve_after(uv_work_t *w, int status);

/* Hands the next waiting call to the thread pool (one resolves at a time per backend). A call
 * whose client left while it waited ends at once, cancelled. */
static void resolve_next(struct dc_rpc_backend *b)
{
    while (!b->resolving && b->pending_head != NULL) {
        struct dc_rpc_call *c = b->pending_head;
        struct dc_api_error err;
        int rc;

        b->pending_head = c->pending_next;
        if (b->pending_head == NULL)
            b->pending_tail = NULL;
        if (c->cancelled || c->owner == NULL) {
            post_done(c, NULL);
            continue;
        }
        c->work.data = c;
        rc = uv_queue_work(b->loop, &c->work, resolve_work, resolve_after);
        if (rc == 0) {
            b->resolving = true;
            return;
        }
        dc_api_error_set(&err, 503, "server_error", NULL, NULL, "Cannot resolve the model: %s",
                         uv_strerror(rc));
        post_done(c, &err);
    }
}

/* Back on the loop thread: start the generation, or end the call with its DONE. */
static void resolve_after(uv_work_t *w, int status)
{
    struct dc_rpc_call *c = w->data;
    struct dc_api_error err;

    c->b->resolving = false;
    resolve_next(c->b);

    if (status < 0 && c->work_rc == 0) {
        c->work_rc = status;
        dc_api_error_set(&c->work_err, 503, "server_error", NULL, NULL, "%s",
                         "The server is shutting down");
    }
    if (c->work_rc < 0) {
        post_done(c, &c->work_err);
        return;
    }
    if (c->cancelled || c->owner == NULL) {
        post_done(c, NULL);
        return;
    }
    if (call_begin(c, &err) < 0)
        post_done(c, &err);
}

static void call_destroy(struct dc_rpc_call *c)
{
    if (c->rcall != NULL)
        c->b->models.remote->release(c->b->remote_ud, c->rcall);
    dc_gen_release(c->gen);
    if (c->acquired)
        dc_registry_release(c->b->registry, c->engine);
    dc_rpc_chat_cleanup(&c->chat);
    if (!c->finished)
        dc_free(c->done);
    dc_free(c);
}

int dc_rpc_call_start(struct dc_rpc_backend *b, struct dc_rpc_mailbox *mb, struct dc_rpc_chat *chat,
                      void *owner, struct dc_rpc_call **out, struct dc_api_error *err)
{
    struct dc_rpc_call *c;
    int rc;

    *out = NULL;
    c = dc_calloc(1, sizeof(*c));
    if (c == NULL || (c->done = dc_calloc(1, sizeof(*c->done) + DC_RPC_DONE_TEXT)) == NULL) {
        dc_free(c);
        dc_rpc_chat_cleanup(chat);
        dc_api_error_set(err, 500, "server_error", NULL, NULL, "%s", "out of memory");
        return DC_ENOMEM;
    }
    c->chat = *chat; /* taken */
    memset(chat, 0, sizeof(*chat));
    c->done->call = c;
    c->mb = mb;
    c->b = b;
    c->owner = owner;
    c->target = dc_api_model_target(&b->models, c->chat.req.model);
    if (c->target == DC_API_TARGET_REGISTRY && b->loop != NULL && b->engine != NULL) {
        /* A load may take seconds: resolve on the thread pool, in turn; events (the DONE of a
         * failure included) follow, never before this returns. */
        if (b->pending_tail != NULL)
            b->pending_tail->pending_next = c;
        else
            b->pending_head = c;
        b->pending_tail = c;
        *out = c;
        resolve_next(b);
        return 0;
    }
    rc = dc_api_model_resolve(&b->models, &c->chat.req, &c->target, &c->engine, err);
    if (rc < 0)
        goto err_free;
    c->acquired = c->target == DC_API_TARGET_REGISTRY;
    rc = call_begin(c, err);
    if (rc < 0)
        goto err_free;
    *out = c;
    return 0;

err_free:
    call_destroy(c);
    return rc < 0 ? rc : DC_ESTATE;
}

void dc_rpc_call_cancel(struct dc_rpc_call *c)
{
    c->cancelled = true;
    if (c->gen != NULL)
        dc_gen_cancel(c->gen);
    if (c->rcall != NULL)
        c->b->models.remote->cancel(c->b->remote_ud, c->rcall);
}

void dc_rpc_call_free(struct dc_rpc_call *c)
{
    if (c == NULL)
        return;
    /* The DONE event, once delivered, is freed by whoever took it from the mailbox. */
    call_destroy(c);
}

/* ---- UTF-8 ---- */

bool dc_rpc_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += len;
    }
    return true;
}

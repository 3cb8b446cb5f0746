/* SPDX-License-Identifier: MIT */
/*
 * rpc.c - the parts the WebSocket and gRPC servers share: the backend (model, keys,
 * admission), chat requests parsed by REST's own parser and rendered with the model's chat
 * template, and the mailbox that moves engine events from the scheduler thread to a server's
 * loop thread.
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

uint64_t dc_rpc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

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
    b->started_ms = dc_rpc_now_ms();
    rc = dc_auth_new(cfg->keys, cfg->n_keys, &b->auth);
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

bool dc_rpc_backend_model_ok(const struct dc_rpc_backend *b, const char *model)
{
    return model == NULL || model[0] == '\0' || strcmp(model, "local") == 0 ||
           (b->model_id != NULL && strcmp(model, b->model_id) == 0);
}

bool dc_rpc_backend_overloaded(const struct dc_rpc_backend *b)
{
    struct dc_engine_stats st;

    if (b->engine == NULL)
        return false;
    dc_engine_stats(b->engine, &st);
    return st.queued >= b->max_queue;
}

/* ---- chat requests ---- */

int dc_rpc_chat_parse(const struct dc_rpc_backend *b, const char *json, size_t len,
                      struct dc_rpc_chat *chat, struct dc_api_error *err)
{
    struct dc_api_parse_opts opts = {.default_temperature = b->default_temperature};
    int rc;

    memset(chat, 0, sizeof(*chat));
    rc = dc_api_parse_request(DC_API_CHAT, json, len, &opts, &chat->req, err);
    if (rc < 0)
        return rc;
    if (!dc_rpc_backend_model_ok(b, chat->req.model)) {
        dc_api_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                         "The model '%s' is not served on this interface (use \"local\")",
                         chat->req.model);
        rc = DC_ENOENT;
        goto fail;
    }
    if (b->engine == NULL)
        return 0;
    rc = dc_engine_chat_render(b->engine, chat->req.msgs, chat->req.n_msgs, true, &chat->prompt,
                               NULL);
    if (rc < 0) {
        dc_api_error_set(err, rc == DC_ENOMEM ? 500 : 400, "invalid_request_error", NULL,
                         "messages", "The messages could not be rendered: %s", dc_strerror(rc));
        goto fail;
    }
    chat->req.gen.prompt = chat->prompt;
    chat->req.gen.prompt_len = strlen(chat->prompt);
    chat->req.gen.prompt_parse_special = true;
    return 0;
fail:
    dc_rpc_chat_cleanup(chat);
    return rc;
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

/* On the engine's scheduler thread: copy, queue, wake. Reads only call->mb and call->done,
 * which the loop thread never changes while the call is live. */
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
        if (e->error_msg != NULL) {
            ev->text_len = strnlen(e->error_msg, 255);
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

int dc_rpc_call_submit(struct dc_rpc_backend *b, struct dc_rpc_mailbox *mb,
                       struct dc_rpc_chat *chat, void *owner, struct dc_rpc_call **out)
{
    struct dc_rpc_call *c;
    int rc;

    *out = NULL;
    if (b->engine == NULL)
        return DC_ENOENT;
    c = dc_calloc(1, sizeof(*c));
    if (c == NULL)
        return DC_ENOMEM;
    c->done = dc_calloc(1, sizeof(*c->done) + 256);
    if (c->done == NULL) {
        dc_free(c);
        return DC_ENOMEM;
    }
    c->done->call = c;
    c->mb = mb;
    c->owner = owner;
    rc = dc_engine_submit(b->engine, &chat->req.gen, call_cb, c, &c->gen);
    if (rc < 0) {
        dc_free(c->done);
        dc_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void dc_rpc_call_free(struct dc_rpc_call *c)
{
    if (c == NULL)
        return;
    dc_gen_release(c->gen);
    /* The DONE event, once delivered, is freed by whoever took it from the mailbox. */
    if (!c->finished)
        dc_free(c->done);
    dc_free(c);
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

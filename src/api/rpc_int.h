/* SPDX-License-Identifier: MIT */
/*
 * rpc_int.h - what the WebSocket (ws.c) and gRPC (grpc.c) servers share: the backend (the
 * model they serve, the API keys, admission), chat requests turned into engine requests by the
 * very parser REST uses (dc_api_parse_request, so the three interfaces accept and refuse the
 * same parameters), and the mailbox that carries engine events from the engine's scheduler
 * thread to a server's own loop thread.
 *
 * Threads. A backend is created and freed by the daemon and read (never written) by the
 * servers' loop threads; the engine it holds is thread-safe. A mailbox is written by engine
 * scheduler threads (dc_rpc_call_cb) and drained by the one loop thread that owns it; a call
 * belongs to that loop thread except for the fields the callback reads, which never change
 * after submit.
 */
#ifndef DC_RPC_INT_H
#define DC_RPC_INT_H

#include <pthread.h>
#include <uv.h>

#include "api/api.h"
#include "api/api_int.h"
#include "model/engine.h"

/* ---- backend ---- */

struct dc_rpc_backend {
    struct dc_registry *registry; /* borrowed, may be NULL */
    struct dc_engine *engine;     /* acquired from the registry; NULL: no model */
    char *model_id;               /* the engine's file name without .gguf, or NULL */
    struct dc_auth *auth;
    uint32_t max_queue;
    double default_temperature;
    const char *version; /* borrowed */
    uint64_t started_ms;
};

/*
 * Builds a backend: the key set from cfg's keys, and the registry's default model, loaded now
 * if needed (blocking). No registry or no default model is not an error: chats then fail with
 * "no model". Returns 0, DC_ENOMEM, DC_EINVAL (an empty key). 'err' receives a line about a
 * model that failed to load (the backend is still made, without a model).
 */
DC_MUST_CHECK int dc_rpc_backend_init(struct dc_rpc_backend *b, const struct dc_rpc_config *cfg,
                                      char *err, size_t errlen);
void dc_rpc_backend_cleanup(struct dc_rpc_backend *b);

/* True when 'model' ("local", "" or the default model's id) names the model this node serves
 * on the WebSocket and gRPC interfaces. */
bool dc_rpc_backend_model_ok(const struct dc_rpc_backend *b, const char *model);

/* True when the engine's queue is full (admission: refuse rather than pile up). */
bool dc_rpc_backend_overloaded(const struct dc_rpc_backend *b);

uint64_t dc_rpc_now_ms(void);

/* ---- chat requests ---- */

struct dc_rpc_chat {
    struct dc_api_request req; /* parsed and validated as REST does */
    char *prompt;              /* the rendered chat prompt (req.gen.prompt points here) */
};

/*
 * Parses a chat request (JSON, the REST body's fields; unknown fields such as "type" and "id"
 * are ignored) and, when 'engine' is not NULL, renders its messages into the prompt. Returns 0;
 * DC_EINVAL with 'err' filled (the message tells the client what is wrong); DC_ENOMEM.
 */
DC_MUST_CHECK int dc_rpc_chat_parse(const struct dc_rpc_backend *b, const char *json, size_t len,
                                    struct dc_rpc_chat *chat, struct dc_api_error *err);
void dc_rpc_chat_cleanup(struct dc_rpc_chat *chat);

/* ---- engine events to a loop thread ---- */

struct dc_rpc_event {
    struct dc_rpc_event *next;
    struct dc_rpc_call *call;
    enum dc_gen_event_type type;
    int32_t id;
    float logprob;
    enum dc_gen_finish finish;
    int error;
    uint32_t n_prompt, n_generated;
    size_t text_len;
    char text[]; /* text_len bytes + NUL (DONE: the error message, if any) */
};

struct dc_rpc_mailbox {
    pthread_mutex_t mu;
    struct dc_rpc_event *head, **tail;
    uv_async_t *async; /* woken after each push; NULL: no wakeup (tests, fuzzing) */
};

/* One generation in flight. 'owner' is the WS socket or gRPC stream it streams to; set to NULL
 * by the loop thread when that goes away (the call then only waits for its DONE event). */
struct dc_rpc_call {
    struct dc_rpc_mailbox *mb; /* fixed at submit: the callback reads it */
    struct dc_gen *gen;
    void *owner;
    struct dc_rpc_event *done; /* preallocated, so DONE is never lost to a failed malloc */
    bool finished;             /* DONE seen by the loop thread */
};

int dc_rpc_mailbox_init(struct dc_rpc_mailbox *mb, uv_async_t *async);
void dc_rpc_mailbox_cleanup(struct dc_rpc_mailbox *mb);
/* Takes every queued event (oldest first); the caller frees each with dc_free. */
struct dc_rpc_event *dc_rpc_mailbox_take(struct dc_rpc_mailbox *mb);

/*
 * Submits 'chat' to the backend's engine as a new call owned by 'owner'. Returns 0 with
 * '*out' (heap; freed by dc_rpc_call_free once its DONE has been handled); DC_ENOMEM; the
 * engine's errors (DC_ELIMIT: prompt too long, DC_ESTATE, DC_EINVAL); DC_ENOENT without model.
 */
DC_MUST_CHECK int dc_rpc_call_submit(struct dc_rpc_backend *b, struct dc_rpc_mailbox *mb,
                                     struct dc_rpc_chat *chat, void *owner,
                                     struct dc_rpc_call **out);
/* Releases the engine reference and frees the call. NULL is a no-op. */
void dc_rpc_call_free(struct dc_rpc_call *c);

/* Valid UTF-8 (no overlongs, no surrogates, at most U+10FFFF)? */
bool dc_rpc_utf8_valid(const uint8_t *s, size_t n);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * rpc_int.h - what the WebSocket (ws.c) and gRPC (grpc.c) servers share: the backend (the
 * models they serve, resolved as REST resolves them, the API keys, the rate limit, admission), chat
 * requests turned into engine requests by the very parser REST uses (dc_api_parse_request, so the
 * three interfaces accept and refuse the same parameters), and the mailbox that carries engine
 * events from the engine's scheduler thread to a server's own loop thread.
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
    struct dc_engine *engine;     /* the default model, acquired from the registry; NULL: none */
    char *model_id;               /* the engine's file name without .gguf, or NULL */
    struct dc_api_models models;  /* what dc_api_model_resolve needs (points into this) */
    void *remote_ud;              /* for models.remote */
    struct dc_auth *auth;
    struct dc_api_ratelimit *ratelimit; /* borrowed, or NULL */
    /* The server's loop: a registry model is acquired (maybe loaded) on its thread pool
     * (uv_queue_work) so the loop never waits for a load. NULL (tests, fuzzing): inline. One
     * at a time per server, the others wait in 'pending' (loop thread only): a load holds a
     * pool thread for seconds, and the pool (4 threads) is the whole process's. */
    uv_loop_t *loop;
    struct dc_rpc_call *pending_head, *pending_tail;
    bool resolving;
    uint32_t max_queue;
    double default_temperature;
    const char *version; /* borrowed */
    uint64_t started_ms;
};

/*
 * Builds a backend: the key set from cfg's keys, and the registry's default model, loaded now
 * if needed (blocking). No registry or no default model is not an error: chats then fail with
 * "no model". Returns 0, DC_ENOMEM, DC_EINVAL (an empty key). 'err' receives a line about a
 * model that failed to load (the backend is still made, without a model). The backend must
 * not move after this (models.def_id points into it).
 */
DC_MUST_CHECK int dc_rpc_backend_init(struct dc_rpc_backend *b, const struct dc_rpc_config *cfg,
                                      char *err, size_t errlen);
void dc_rpc_backend_cleanup(struct dc_rpc_backend *b);

/* ---- chat requests ---- */

struct dc_rpc_chat {
    struct dc_api_request req; /* parsed and validated as REST does */
    char *prompt;              /* the rendered chat prompt (req.gen.prompt points here) */
};

/*
 * Parses a chat request (JSON, the REST body's fields; unknown fields such as "type" and "id"
 * are ignored). The prompt is rendered later, with the model the request resolves to. Returns
 * 0; DC_EINVAL with 'err' filled (the message tells the client what is wrong); DC_ENOMEM.
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
    /* DONE with finish ERROR before or instead of a generation: the OpenAI error's HTTP status
     * (404 unknown model, 429 queue full, ...; 0 for an engine failure), its static code (or
     * NULL) and, for 429, when to retry. */
    int status;
    const char *code;
    uint32_t retry_after_ms;
    uint32_t n_prompt, n_generated;
    size_t text_len;
    char text[]; /* text_len bytes + NUL (DONE: the error message, if any) */
};

struct dc_rpc_mailbox {
    pthread_mutex_t mu;
    struct dc_rpc_event *head, **tail;
    uv_async_t *async; /* woken after each push; NULL: no wakeup (tests, fuzzing) */
};

#define DC_RPC_DONE_TEXT 384 /* bytes of a DONE event's message */

/* One chat in flight: resolving its model, generating (locally or on a peer), or waiting for
 * its DONE. 'owner' is the WS socket or gRPC stream it streams to; set to NULL by the loop
 * thread when that goes away (the call then only waits for its DONE event). */
struct dc_rpc_call {
    struct dc_rpc_mailbox *mb; /* fixed at start: the callbacks read it */
    struct dc_rpc_backend *b;
    struct dc_gen *gen;               /* local generation, or NULL */
    struct dc_api_remote_call *rcall; /* forwarded to a peer, or NULL */
    struct dc_engine *engine;         /* the model answering (NULL: a peer) */
    bool acquired;                    /* 'engine' is the call's to release */
    void *owner;
    struct dc_rpc_event *done; /* preallocated, so DONE is never lost to a failed malloc */
    bool finished;             /* DONE seen by the loop thread */
    bool cancelled;            /* cancel asked, maybe before the generation started */
    struct dc_rpc_chat chat;   /* owned until the generation starts */
    uv_work_t work;            /* resolving a registry model off the loop */
    struct dc_rpc_call *pending_next;
    enum dc_api_target target;
    int work_rc;
    struct dc_api_error work_err;
};

int dc_rpc_mailbox_init(struct dc_rpc_mailbox *mb, uv_async_t *async);
void dc_rpc_mailbox_cleanup(struct dc_rpc_mailbox *mb);
/* Takes every queued event (oldest first); the caller frees each with dc_free. */
struct dc_rpc_event *dc_rpc_mailbox_take(struct dc_rpc_mailbox *mb);

/*
 * Starts 'chat' (taken: cleaned up here whatever the outcome) as a call owned by 'owner': its
 * model resolved as REST resolves it (dc_api_model_resolve), the per-model queue bound
 * checked, the prompt rendered, and the generation submitted to the engine or forwarded to a
 * peer. Returns 0 with '*out' (heap; freed by dc_rpc_call_free once its DONE has been
 * handled): tokens and exactly one DONE follow in the mailbox; a failure found later (a
 * registry model resolved off the loop) is that DONE, with finish ERROR and the error's
 * status, code and message. Returns a negative code with 'err' the OpenAI error (404 unknown
 * model, 429 queue_full, 503 no model, 400 ...) when the call failed at once; no event follows.
 */
DC_MUST_CHECK int dc_rpc_call_start(struct dc_rpc_backend *b, struct dc_rpc_mailbox *mb,
                                    struct dc_rpc_chat *chat, void *owner, struct dc_rpc_call **out,
                                    struct dc_api_error *err);
/* Asks the call to stop: its DONE follows (finish CANCELLED unless it had ended). Loop thread;
 * idempotent; safe while its model is still being resolved. */
void dc_rpc_call_cancel(struct dc_rpc_call *c);
/* Releases the generation, the peer call and the model, and frees the call. NULL: no-op. */
void dc_rpc_call_free(struct dc_rpc_call *c);

/* Valid UTF-8 (no overlongs, no surrogates, at most U+10FFFF)? */
bool dc_rpc_utf8_valid(const uint8_t *s, size_t n);

#endif

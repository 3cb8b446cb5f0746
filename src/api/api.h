/* SPDX-License-Identifier: MIT */
/*
 * api.h - the node's client-facing interfaces: the OpenAI-compatible REST server
 * (libmicrohttpd, its own polling threads; see DESIGN.md section 7), the WebSocket and gRPC
 * servers, and what the three share: the API-key check and the rate limiter.
 *
 * Threads. dc_api_new() starts libmicrohttpd's polling threads and a small worker pool (model
 * acquisition, embeddings: anything that may block); handlers parse and validate on the polling
 * threads and hand generation to the engine, whose scheduler thread streams tokens back through
 * per-request queues and MHD_resume_connection(). Nothing here touches the libuv loop: a chat
 * forwarded to a peer goes through hooks the daemon implements (dc_api_remote_hooks), whose
 * tokens arrive on the daemon's loop thread the same way the engine's do.
 */
#ifndef DC_API_H
#define DC_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

struct dc_registry;
struct dc_api_remote_hooks;
struct dc_chat_msg;    /* model/engine.h */
struct dc_gen_request; /* model/engine.h */
struct dc_gen_event;   /* model/engine.h */

/* ---- API keys (shared by REST, WebSocket and gRPC) ---- */

struct dc_auth;

#define DC_AUTH_KEY_ID_LEN 13 /* "key-" + 8 hex digits + NUL */

/* The engine queue priority of a priority key's requests (others: 0). */
#define DC_AUTH_PRIORITY_HIGH 10

/*
 * Builds the key set from 'n' keys (borrowed; only their SHA-256 hashes are kept, so the keys
 * themselves never stay in this object). No keys means every request passes. The
 * 'n_priority' priority keys (borrowed; each must also be one of 'keys') get
 * DC_AUTH_PRIORITY_HIGH from dc_auth_priority. Returns 0 or DC_ENOMEM; DC_EINVAL for an empty
 * key or a priority key that is not among 'keys'.
 */
DC_MUST_CHECK int dc_auth_new(const char *const *keys, size_t n, const char *const *priority_keys,
                              size_t n_priority, struct dc_auth **out);
/* The queue priority of requests made with the key whose id dc_auth_check gave:
 * DC_AUTH_PRIORITY_HIGH for a priority key, else 0 (also for NULL, "-" or an unknown id). The
 * engine serves higher priorities first among queued requests (FIFO within one). */
int32_t dc_auth_priority(const struct dc_auth *a, const char *key_id);
/* Frees the set (hashes wiped). NULL is a no-op. */
void dc_auth_free(struct dc_auth *a);
/* True when keys are configured (requests must present one). NULL: false. */
bool dc_auth_enabled(const struct dc_auth *a);

/*
 * Checks an Authorization header value ("Bearer <key>"; NULL when the header is absent) in
 * constant time with respect to the keys: every configured hash is compared with
 * sodium_memcmp, none is skipped. On success 'key_id' (DC_AUTH_KEY_ID_LEN bytes, may be NULL)
 * receives a printable id of the key ("key-" + the first 8 hex digits of its SHA-256), safe to
 * log, or "-" when auth is off. Returns 0; DC_EPERM for a missing, malformed or unknown key.
 */
DC_MUST_CHECK int dc_auth_check(const struct dc_auth *a, const char *authorization,
                                char key_id[DC_AUTH_KEY_ID_LEN]);

/* ---- the rate limit (shared by REST, WebSocket and gRPC) ---- */

struct dc_api_ratelimit;

/*
 * Builds a rate limiter of 'rpm' requests per minute per API key id (per client address when
 * auth is off): one token bucket of 'rpm' tokens per key, refilled continuously. One limiter
 * given to the REST, WebSocket and gRPC servers (their configs' 'ratelimit') makes one budget
 * per key across the three. Thread-safe. Returns 0, DC_EINVAL for rpm 0, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_api_ratelimit_new(uint32_t rpm, struct dc_api_ratelimit **out);
/* Frees the limiter; the servers that borrow it must be freed first. NULL is a no-op. */
void dc_api_ratelimit_free(struct dc_api_ratelimit *rl);

/* ---- REST server ---- */

struct dc_api;

struct dc_api_config {
    const char *bind;        /* address to bind ("127.0.0.1", "::", "0.0.0.0") */
    uint16_t port;           /* 0 picks a free one (dc_api_port tells which) */
    const char *const *keys; /* API keys (borrowed), n_keys of them; none = no auth */
    size_t n_keys;
    const char *const *priority_keys; /* those of 'keys' queued first (borrowed) */
    size_t n_priority_keys;
    struct dc_registry *registry; /* borrowed, may be NULL: inference routes answer 503 */
    uint32_t max_queue;           /* requests waiting per model beyond its slots; 0 = 64 */
    uint32_t max_connections;     /* 0 = 1024 */
    uint32_t timeout_s;           /* idle/header timeout per connection; 0 = 15 */
    uint32_t threads;             /* polling threads; 0 = online CPUs (at most 8) */
    double default_temperature;   /* when a request gives none */
    const char *version;          /* reported by /api/health */
    /* Optional: the number of connected peers, called from the polling threads (so it must be
     * thread-safe), for /api/health and /metrics. */
    uint32_t (*peers_count)(void *ud);
    void *peers_ud;
    /* Optional P2P admin hooks for GET /api/peers and POST /api/peers/connect (NULL: those
     * routes answer 503), called with peers_ud from the polling threads (peers_json, which must
     * not block) and the worker threads (peers_connect, which blocks up to timeout_ms), so both
     * must be thread-safe; the daemon answers from a snapshot its loop thread keeps and sends
     * dials through the loop (src/daemon/peerview.h).
     * peers_json: '*out' receives a heap JSON array of the connected peers (dc_free).
     * peers_connect: dials 'multiaddr'; 0 with the PeerId text in 'peer_id', or a negative code
     * with one line in 'err' (DC_EINVAL: a bad address; DC_ETIMEDOUT; the dial's error). */
    int (*peers_json)(void *ud, char **out, size_t *len);
    /* Optional: GET /api/experts, the experts this node knows (a JSON array, heap, dc_free),
     * called with peers_ud from the polling threads; must not block. NULL: 503. */
    int (*experts_json)(void *ud, char **out, size_t *len);
    /* Optional: appends more Prometheus text to GET /metrics (the swarm's counters), called
     * with peers_ud from the polling threads; must not block. Returns 0 or DC_ENOMEM. */
    int (*metrics_extra)(void *ud, struct dc_buf *b);
    int (*peers_connect)(void *ud, const char *multiaddr, uint32_t timeout_ms, char *peer_id,
                         size_t cap, char *err, size_t errlen);
    /* CORS: browser origins ("https://app.example", or "*") allowed to call the API; none by
     * default. Borrowed for dc_api_new (copied). */
    const char *const *cors_origins;
    size_t n_cors_origins;
    /* Requests per minute per API key (per client address when auth is off), as a token
     * bucket of that size refilled continuously; beyond it 429 with Retry-After. 0: off.
     * Ignored when 'ratelimit' is set: that limiter (borrowed, shared with the WebSocket and
     * gRPC servers; it must outlive the server) is used instead. */
    uint32_t rate_limit_rpm;
    struct dc_api_ratelimit *ratelimit;
    /* Optional: forwards chat completions whose model is a PeerId to that peer (see
     * dc_api_remote_hooks below); NULL: such a model answers 503 p2p_unavailable. Borrowed; it
     * and remote_ud must outlive the server. */
    const struct dc_api_remote_hooks *remote;
    void *remote_ud;
};

/* ---- forwarding a chat to a peer ----
 *
 * A chat completion whose "model" parses as a PeerId (dc_peer_id_parse) is not looked up in the
 * registry: the server hands it to these hooks, which the daemon implements over
 * /democritus/infer/1.0.0 on its loop thread (src/daemon/remote.h). The peer's verified tokens
 * come back as engine events, so they are streamed and collected exactly like local ones. */

struct dc_api_remote_call;

struct dc_api_remote_req {
    const char *peer_id;            /* the model field: a PeerId's text form, or "swarm" */
    uint32_t experts;               /* "swarm": experts to ask; 0: the node's default */
    const struct dc_chat_msg *msgs; /* n_msgs, in order */
    size_t n_msgs;
    const struct dc_gen_request *gen; /* sampling, max_tokens, stop, logprobs (prompt unused) */
};

/* Why a forwarded chat failed, as the OpenAI error the client gets. */
struct dc_api_remote_error {
    int status;       /* HTTP status: 400, 403, 429, 502, 503, 504 */
    const char *type; /* static: "invalid_request_error", "permission_error", ... */
    const char *code; /* static: "peer_refused", "peer_unreachable", ... */
    char message[256];
};

/* Events of one forwarded chat: DC_GEN_EV_TOKEN per verified token, then DC_GEN_EV_DONE
 * exactly once (finish STOP, LENGTH or CANCELLED with 'err' NULL; finish ERROR with 'err'
 * saying why). May run on any thread (the daemon's loop); must not block. */
typedef void (*dc_api_remote_cb)(void *ud, const struct dc_gen_event *ev,
                                 const struct dc_api_remote_error *err);

struct dc_api_remote_hooks {
    /* Starts forwarding 'req' (copied). Called from a worker thread, never blocks for the
     * network. Returns 0 with '*out' the caller's reference (DONE follows, maybe before this
     * returns); DC_ECLOSED while shutting down; DC_ELIMIT when too many are in flight;
     * DC_ENOMEM. On failure no callback fires. */
    int (*start)(void *ud, const struct dc_api_remote_req *req, dc_api_remote_cb cb, void *cb_ud,
                 struct dc_api_remote_call **out);
    /* Asks the call to stop (DONE follows with CANCELLED unless it had ended). Any thread,
     * idempotent, safe after DONE while the reference is held. */
    void (*cancel)(void *ud, struct dc_api_remote_call *c);
    /* Drops the caller's reference. Any thread. NULL is a no-op. */
    void (*release)(void *ud, struct dc_api_remote_call *c);
};

/*
 * Binds and starts the REST server. When the registry has a default model it is loaded first
 * (blocking) and kept loaded; when there is none the server still runs and inference routes
 * answer 503. Returns 0; -errno / DC_EINVAL when the address cannot be parsed or bound (the
 * message in 'err' names the address); DC_ENOMEM.
 */
DC_MUST_CHECK int dc_api_new(const struct dc_api_config *cfg, struct dc_api **out, char *err,
                             size_t errlen);

/* The TCP port the server listens on. */
uint16_t dc_api_port(const struct dc_api *api);

/* True when a model is loaded and inference routes work. */
bool dc_api_has_model(const struct dc_api *api);

/*
 * Stops accepting, cancels every generation in flight (their clients get what was produced so
 * far), waits for them, stops the server and frees it. NULL is a no-op.
 */
void dc_api_free(struct dc_api *api);

/* ---- WebSocket and gRPC servers (ws.c, grpc.c; shared parts in rpc.c) ----
 *
 * Both resolve a chat's "model" exactly as REST does (dc_api_model_resolve: "local" or the
 * default model's id, any registry id, loaded on demand off the loop thread, or a PeerId
 * forwarded through the remote hooks), with the same request rules, API keys, rate limit and
 * per-model queue bound as REST. Each runs its own libuv loop on its own thread: the WebSocket
 * server takes sockets that libmicrohttpd upgraded on /ws/chat; the gRPC server (h2c, nghttp2) owns
 * its listening socket. Engine tokens reach those threads through a mailbox (a mutex-guarded list
 * and uv_async_send), so the engine never waits for a client. */

struct dc_rpc_config {
    const char *bind;        /* address to bind ("127.0.0.1", "::", "0.0.0.0") */
    uint16_t port;           /* 0 picks a free one */
    const char *const *keys; /* API keys (borrowed); none = no auth */
    size_t n_keys;
    const char *const *priority_keys; /* those of 'keys' queued first (borrowed) */
    size_t n_priority_keys;
    struct dc_registry *registry; /* borrowed, may be NULL: chats fail with "no model" */
    uint32_t max_queue;           /* queued requests beyond which new ones are refused; 0 = 64 */
    uint32_t max_connections;     /* 0 = 1024 */
    size_t max_message_bytes;     /* 0: 1 MiB (WebSocket), 4 MiB (gRPC) */
    double default_temperature;   /* when a request gives none */
    const char *version;          /* reported by Health */
    /* Borrowed, may be NULL (no limit): the limiter REST uses too, so a key has one budget. */
    struct dc_api_ratelimit *ratelimit;
    /* Optional, as in dc_api_config: chats whose model is a PeerId are forwarded through these
     * hooks (NULL: such a model fails with p2p_unavailable). Borrowed; must outlive the server. */
    const struct dc_api_remote_hooks *remote;
    void *remote_ud;
};

struct dc_ws;
struct dc_grpc;

/*
 * Starts the WebSocket server (ws://bind:port/ws/chat). Loads the default model if the
 * registry has not yet (blocking). Returns 0; -errno / DC_EINVAL when the address cannot be
 * parsed or bound (message in 'err'); DC_ENOMEM.
 */
DC_MUST_CHECK int dc_ws_new(const struct dc_rpc_config *cfg, struct dc_ws **out, char *err,
                            size_t errlen);
uint16_t dc_ws_port(const struct dc_ws *ws);
/* Closes every socket (1001 going away), cancels their generations, waits for the engine to
 * confirm, stops the thread and frees. NULL is a no-op. */
void dc_ws_free(struct dc_ws *ws);

/* Starts the gRPC server (h2c) on bind:port. Same contract as dc_ws_new. */
DC_MUST_CHECK int dc_grpc_new(const struct dc_rpc_config *cfg, struct dc_grpc **out, char *err,
                              size_t errlen);
uint16_t dc_grpc_port(const struct dc_grpc *g);
/* Cancels every stream (RST_STREAM), waits for their generations to end, frees. NULL: no-op. */
void dc_grpc_free(struct dc_grpc *g);

#endif

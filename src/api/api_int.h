/* SPDX-License-Identifier: MIT */
/*
 * api_int.h - the api module's own interfaces: request parsing and validation (parse.c, pure:
 * JSON bytes in, engine parameters or an OpenAI error out, no I/O, so unit tests and the
 * libFuzzer harness drive it directly), JSON output helpers, and the pieces http.c, rest.c and
 * sse.c share.
 */
#ifndef DC_API_INT_H
#define DC_API_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "api/api.h"
#include "base/base.h"
#include "model/engine.h"

#define DC_API_BODY_MAX    (1u << 20)  /* request body limit: beyond it, 413 */
#define DC_API_HEADERS_MAX (16u << 10) /* request line + headers: beyond it, our own 431 */
/* MHD's pool per connection: beyond it, MHD's 431. It holds DC_API_HEADERS_MAX of headers with
 * room to spare so that our own 431 answers them; MHD zeroes the whole pool between requests,
 * so this is also what an idle keep-alive connection costs (64 KiB measured 64 KiB each). */
#define DC_API_CONN_MEMORY  (40u << 10)
#define DC_API_MAX_MESSAGES 1024 /* chat messages per request */
#define DC_API_MAX_INPUTS   2048 /* embedding inputs per request (OpenAI's limit) */
#define DC_API_MODEL_ID_MAX 256
#define DC_API_MAX_EXPERTS  8 /* "experts" of a chat with the model "swarm" */
#define DC_API_SWARM_MODEL  "swarm"

#define DC_API_REQUEST_ID_SZ 24 /* "req-" + 16 hex + NUL, rounded up */

/* An OpenAI error object, before it is written as JSON. */
struct dc_api_error {
    int status;       /* HTTP status */
    const char *type; /* "invalid_request_error", "authentication_error", ... (static) */
    const char *code; /* "context_length_exceeded", ... or NULL (static) */
    char param[64];   /* the offending field, "" when none */
    char message[320];
    uint32_t retry_after_ms; /* 429: when to retry (REST: Retry-After, rounded up to s; 0: 1 s) */
};

/* Fills 'e' (status, static type and code, param may be NULL, printf message). */
void dc_api_error_set(struct dc_api_error *e, int status, const char *type, const char *code,
                      const char *param, const char *fmt, ...) DC_PRINTF(6, 7);

/*
 * Appends {"error":{"message":...,"type":...,"param":...,"code":...}} to 'b'. Returns 0,
 * DC_ENOMEM or DC_ELIMIT (buffer cap).
 */
DC_MUST_CHECK int dc_api_error_json(const struct dc_api_error *e, struct dc_buf *b);

/*
 * Appends 'len' bytes of 's' to 'b' as a JSON string with its quotes. Control characters are
 * escaped and bytes that are not valid UTF-8 become U+FFFD, so the output is always valid JSON
 * whatever the input. Returns 0, DC_ENOMEM or DC_ELIMIT.
 */
DC_MUST_CHECK int dc_api_json_str(struct dc_buf *b, const char *s, size_t len);

enum dc_api_kind {
    DC_API_CHAT = 0,
    DC_API_COMPLETION,
    DC_API_EMBEDDING,
};

/*
 * A validated inference request. Strings point into 'root' (the parsed body), which this
 * struct owns along with 'msgs' and 'inputs'; release with dc_api_request_cleanup().
 */
struct dc_api_request {
    enum dc_api_kind kind;
    json_t *root;
    const char *model; /* "local" when absent */
    const char *user;  /* or NULL */
    bool stream;
    bool include_usage; /* stream_options.include_usage */
    /* chat */
    struct dc_chat_msg *msgs;
    size_t n_msgs;
    /* completion: the prompt text (prompt_ids NULL) or tokens (prompt_ids set) */
    const char *prompt;
    size_t prompt_len;
    int32_t *prompt_ids; /* owned */
    size_t n_prompt_ids;
    /* chat and completion: everything the engine needs; gen.prompt is left for the caller */
    struct dc_gen_request gen;
    uint32_t experts;      /* "experts" (model "swarm" only); 0: the node's default */
    bool logprobs;         /* report logprobs in the response */
    uint32_t top_logprobs; /* alternatives per token */
    /* embeddings */
    const char **inputs; /* owned array of borrowed strings */
    size_t n_inputs;
    bool base64; /* encoding_format "base64" */
};

/* Parsing options: what the server's configuration decides. */
struct dc_api_parse_opts {
    double default_temperature;
};

/*
 * Parses and validates a request body for 'kind'. On success '*req' owns the parsed JSON.
 * Returns 0; on bad input DC_EINVAL with 'err' filled as the OpenAI error the client gets
 * (400 naming the line and column of malformed JSON, or the offending field; 400 "not
 * supported" for n > 1, tools, ...); DC_ENOMEM (err: 500). '*req' is clean on failure.
 */
DC_MUST_CHECK int dc_api_parse_request(enum dc_api_kind kind, const char *body, size_t len,
                                       const struct dc_api_parse_opts *opts,
                                       struct dc_api_request *req, struct dc_api_error *err);

void dc_api_request_cleanup(struct dc_api_request *req);

/* Routes, for dispatch, metrics and the access log. */
/* GET routes come first (up to DC_ROUTE_MODELS), then the POST ones. */
enum dc_api_route {
    DC_ROUTE_HEALTH = 0,
    DC_ROUTE_API_HEALTH,
    DC_ROUTE_API_MODELS,
    DC_ROUTE_METRICS,
    DC_ROUTE_API_PEERS,
    DC_ROUTE_API_EXPERTS,
    DC_ROUTE_MODELS,
    DC_ROUTE_CHAT,
    DC_ROUTE_COMPLETIONS,
    DC_ROUTE_EMBEDDINGS,
    DC_ROUTE_API_PEERS_CONNECT,
    DC_ROUTE_NOT_FOUND,
    DC_ROUTE_COUNT,
};

/*
 * Maps a path (no query string) to its route and the one method it takes ("GET"/"POST").
 * Unknown paths give DC_ROUTE_NOT_FOUND and NULL.
 */
enum dc_api_route dc_api_route_lookup(const char *path, const char **method);
/* The route's path for metrics labels ("/v1/chat/completions", "other"). */
const char *dc_api_route_name(enum dc_api_route r);

/* Base64 (standard alphabet, padded) of 'n' bytes appended to 'b'. Returns 0 or an error. */
DC_MUST_CHECK int dc_api_base64(struct dc_buf *b, const void *data, size_t n);

/* ---- which model answers a request (resolve.c): REST, WebSocket and gRPC share it ---- */

enum dc_api_target {
    DC_API_TARGET_DEFAULT = 0, /* "local", "" or the default model's id: the pinned engine */
    DC_API_TARGET_REGISTRY,    /* any other id: a registry model, acquired (maybe loaded) */
    DC_API_TARGET_PEER,        /* a PeerId, or "swarm" (the experts of the swarm): forwarded
                                  through the remote hooks */
};

/* What an interface serves. Everything is borrowed from the server that holds it. */
struct dc_api_models {
    struct dc_registry *reg;                  /* may be NULL */
    struct dc_engine *def_engine;             /* the pinned default model, or NULL */
    const char *def_id;                       /* its registry id, or NULL */
    const struct dc_api_remote_hooks *remote; /* forwarding to peers, or NULL */
};

/* What 'model' names (NULL or "" is "local"). Never blocks. */
enum dc_api_target dc_api_model_target(const struct dc_api_models *m, const char *model);

/*
 * Resolves the model of the validated request 'q' the one way every interface does. DEFAULT:
 * '*engine' is the pinned default (not acquired). PEER: '*engine' is NULL, once the request is
 * known to be one a peer can take (a chat, no response_format). REGISTRY: '*engine' is acquired
 * with dc_registry_acquire (release it with dc_registry_release), which blocks while the model
 * loads: call it off any event loop. DEFAULT and PEER never block. Returns 0 with '*target';
 * DC_ENOENT (404 model_not_found), DC_ELIMIT (503: it does not fit the memory budget now),
 * DC_ESTATE (503 model_not_loaded: no model on this node; 503 p2p_unavailable: no remote hooks),
 * DC_EINVAL (400: what a peer cannot take), or the load's error (500 model_load_failed), with
 * 'e' the OpenAI error the client gets.
 */
DC_MUST_CHECK int dc_api_model_resolve(const struct dc_api_models *m,
                                       const struct dc_api_request *q, enum dc_api_target *target,
                                       struct dc_engine **engine, struct dc_api_error *e);

/* The 429 of a model whose queue is full (retry after 1 s). */
void dc_api_queue_full(struct dc_api_error *e, const char *model);

/* ---- the rate limit (admin.c), for all three interfaces ---- */

#define DC_API_ADDR_LEN 64

/* The client's IP address (no port) as text, the rate limit's key when auth is off; "?" when
 * 'sa' is NULL or not IP. */
void dc_api_client_addr(const struct sockaddr *sa, char out[DC_API_ADDR_LEN]);

/*
 * Takes one token from the bucket of 'key_id' (dc_auth_check's id), or of 'client' (an address
 * from dc_api_client_addr) when key_id is NULL or "-" (auth off). False when allowed (or 'rl'
 * is NULL); true with 'e' the 429 rate_limit_exceeded whose message says "retry after N ms"
 * (and e->retry_after_ms = N).
 */
bool dc_api_rate_limited(struct dc_api_ratelimit *rl, const char *key_id, const char *client,
                         struct dc_api_error *e);

/* ---- server internals (http.c, rest.c, sse.c) ---- */

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#define DC_API_STREAM_MAX  (8u << 20) /* pending SSE bytes before a slow reader is cut off */
#define DC_API_N_STATUS    11
#define DC_API_N_BUCKETS   12
#define DC_API_MAX_ENGINES 16

enum dc_api_job {
    DC_JOB_NONE = 0,
    DC_JOB_START, /* acquire the model, admit, render, submit (or embed) */
    DC_JOB_FREE,  /* release the model and free the request (off the scheduler thread) */
};

/* Per-engine admission: requests of ours submitted or waiting, against slots + max_queue. */
struct dc_api_admit {
    struct dc_engine *engine;
    uint32_t inflight;
};

/*
 * One HTTP request. Owned by references: the connection's (dropped at NOTIFY_COMPLETED), a
 * queued or running worker job's, and the engine's (from submit until DONE). Fields below 'mu'
 * are shared between those threads and read or written under it.
 */
struct dc_api_conn;

struct dc_api_req {
    struct dc_api *api;
    struct MHD_Connection *conn;
    enum dc_api_route route;
    const char *method; /* static */
    char path[160];     /* for the access log, sanitised */
    char id[72];        /* X-Request-Id */
    char key_id[DC_AUTH_KEY_ID_LEN];
    uint64_t t0_ns;
    int status;
    bool responded; /* a response is queued */
    bool too_large;
    bool async;  /* a START job was queued: the request is in 'api->live' until it settles */
    bool is_def; /* engine is the pinned default (not acquired per request) */
    struct dc_api_error early; /* refused at the headers (status 0: not refused) */
    uint64_t drained;          /* body bytes dropped after a refusal */
    bool http11;
    struct dc_buf body;
    struct dc_api_request preq;
    time_t created;

    pthread_mutex_t mu;
    int refs;
    bool suspended; /* the connection is suspended waiting for us */
    bool closed;    /* NOTIFY_COMPLETED ran */
    bool submitted;
    bool done; /* DONE arrived (or the async part failed / embeddings finished) */
    bool settled;
    bool admitted;
    bool has_err;
    bool sent_role; /* stream: the first chunk went out */
    bool stream_end;
    struct dc_api_error err;
    struct dc_engine *engine;
    struct dc_gen *gen;
    bool remote;                      /* model is a PeerId: forwarded through api->remote */
    struct dc_api_remote_call *rcall; /* the forwarded call (our reference), or NULL */
    struct dc_buf out; /* non-stream: generated text; stream: SSE bytes not yet sent */
    struct dc_buf lp;  /* logprobs fragments (non-stream) */
    struct dc_buf lp2, lp3, lp4;
    size_t text_offset;
    enum dc_gen_finish finish;
    uint32_t n_prompt, n_generated;
    double queue_ms, prompt_ms, gen_ms; /* the engine's, from its DONE (0 when forwarded) */
    uint64_t n_events;
    float *emb;
    uint32_t n_embd;
    uint64_t emb_tokens;

    int watch_fd; /* registered with the hang-up watcher, or -1 */
    uint32_t watch_gen;
    bool gone; /* the watcher saw the client hang up */

    enum dc_api_job job;
    struct dc_api_req *job_next;
    struct dc_api_req *live_prev, *live_next;
};

struct dc_api {
    struct MHD_Daemon *mhd;
    uint16_t port;
    struct dc_auth *auth;
    struct dc_registry *reg;
    struct dc_engine *def_engine; /* pinned default model, or NULL */
    char def_id[DC_API_MODEL_ID_MAX];
    struct dc_api_models models; /* reg, def_engine, def_id, remote: for dc_api_model_resolve */
    uint32_t n_parallel;
    uint32_t max_queue;
    struct dc_api_parse_opts popts;
    char *version;
    uint64_t started_ns;
    time_t started_at;
    uint32_t (*peers_count)(void *ud);
    void *peers_ud;
    int (*peers_json)(void *ud, char **out, size_t *len);
    int (*peers_connect)(void *ud, const char *multiaddr, uint32_t timeout_ms, char *peer_id,
                         size_t cap, char *err, size_t errlen);
    int (*experts_json)(void *ud, char **out, size_t *len);
    int (*metrics_extra)(void *ud, struct dc_buf *b);
    const struct dc_api_remote_hooks *remote; /* forwarding to peers, or NULL */
    void *remote_ud;
    struct dc_api_limits *limits; /* CORS origins and the rate limiter (admin.c) */
    atomic_bool stopping;
    atomic_bool warned_template;
    uint64_t id_prefix;
    atomic_uint_fast64_t id_counter;

    /* worker pool */
    pthread_t workers[4];
    size_t n_workers;
    pthread_mutex_t wq_mu;
    pthread_cond_t wq_cv;
    struct dc_api_req *wq_head, *wq_tail;
    bool wq_stop;

    /* requests with an async part in flight; admission table */
    pthread_mutex_t live_mu;
    pthread_cond_t live_cv;
    struct dc_api_req *live;
    uint32_t n_live;
    uint32_t n_engine_refs; /* generations whose engine callback has not returned from DONE */
    struct dc_api_admit admit[DC_API_MAX_ENGINES];

    /* hang-up watcher: an epoll set of the sockets of requests waiting on the engine, which
     * MHD does not watch while they are suspended */
    int watch_ep, watch_efd;
    pthread_t watch_thread;
    bool watch_started;
    pthread_mutex_t watch_mu;
    struct dc_api_req **watch_tab; /* by fd */
    size_t watch_cap;
    uint32_t watch_gen;
    /* header deadline: the same thread sweeps the open connections (http.c's struct
     * dc_api_conn) and shuts down those whose request headers take longer than timeout_s */
    pthread_mutex_t conns_mu;
    struct dc_api_conn *conns;
    uint64_t header_timeout_ns;

    /* /v1/models cache */
    pthread_mutex_t models_mu;
    char *models_json;
    size_t models_len;
    uint64_t models_at_ns;

    /* metrics */
    atomic_uint_fast64_t m_requests[DC_ROUTE_COUNT][DC_API_N_STATUS];
    atomic_uint_fast64_t m_latency[DC_ROUTE_COUNT][DC_API_N_BUCKETS];
    atomic_uint_fast64_t m_latency_sum_us[DC_ROUTE_COUNT];
    atomic_uint_fast64_t m_tokens_prompt, m_tokens_completion;
    atomic_uint_fast64_t m_rejected; /* 429s */
};

/* http.c */
uint64_t dc_api_now_ns(void);
/* Queues a response with our common headers (X-Request-Id, Content-Type); frees nothing. */
enum MHD_Result dc_api_send(struct dc_api_req *r, int status, struct MHD_Response *resp,
                            const char *content_type);
/* Queues a body (copied) with status and content type. */
enum MHD_Result dc_api_send_buf(struct dc_api_req *r, int status, const char *body, size_t len,
                                const char *content_type);
/* Queues an OpenAI error object. */
enum MHD_Result dc_api_send_error(struct dc_api_req *r, const struct dc_api_error *e);
/* Queues a job for the worker pool. START takes a reference; FREE hands over a request whose
 * references are all gone. */
void dc_api_job_push(struct dc_api_req *r, enum dc_api_job job);
/* Starts 'r' (dc_rest_start) on the calling polling thread, as a worker would: for requests
 * whose start cannot block (the default model, a small body, no embeddings), saving a thread
 * hand-off on the way to the first token. 'r' must be suspended already. */
void dc_api_start_inline(struct dc_api_req *r);
/* Drops a reference; the last one frees the request (through a worker when it holds a model). */
void dc_api_req_unref(struct dc_api_req *r);
/* Marks the request's async part settled: leaves the live list, wakes a waiting shutdown. */
void dc_api_settle(struct dc_api_req *r);
/* Counts a generation submitted (+1) or its DONE callback finished (-1): the server is not freed
 * while an engine callback may still touch it. */
void dc_api_engine_ref(struct dc_api *api, int delta);
/* Watches the request's socket for a hang-up until the request completes; a hang-up cancels
 * its generation at once (polling thread, before suspending). Best effort: no error. */
void dc_api_watch_add(struct dc_api_req *r);
/* Stops what generates for a request: its engine generation 'g' and/or its forwarded call 'rc'
 * (either may be NULL). Call outside r->mu with pointers read under it; safe after DONE. */
void dc_api_cancel(struct dc_api *api, struct dc_gen *g, struct dc_api_remote_call *rc);
/* Under r->mu: true when the connection was suspended and must now be resumed (by the caller,
 * after unlocking, with MHD_resume_connection). */
bool dc_api_wake_locked(struct dc_api_req *r);

/* rest.c */
enum MHD_Result dc_rest_get(struct dc_api_req *r);
/* A POST body is complete: parse, validate, and start it (or answer an error). */
enum MHD_Result dc_rest_post(struct dc_api_req *r);
/* The connection was resumed: answer from the request's state (or suspend again). */
enum MHD_Result dc_rest_resumed(struct dc_api_req *r);
/* Worker: the START job. */
void dc_rest_start(struct dc_api_req *r);
/* Worker/MHD thread: takes the request's admission slot back. */
void dc_rest_unadmit(struct dc_api_req *r);

/* admin.c: P2P admin routes, CORS and the per-key rate limit */
struct dc_api_limits;
/* Builds the CORS origin list and the rate limiter from 'cfg'. Returns 0 or DC_ENOMEM. */
DC_MUST_CHECK int dc_api_limits_new(const struct dc_api_config *cfg, struct dc_api_limits **out);
void dc_api_limits_free(struct dc_api_limits *l);
/* The rate limiter's core (no I/O, so the unit test drives its clock): takes one token from the
 * bucket of 'key' (truncated to 63 bytes) at monotonic time 'now_ns'. True when allowed; false
 * with '*retry_ms' (>= 1) the milliseconds until the next token. */
bool dc_api_ratelimit_take(struct dc_api_ratelimit *rl, const char *key, uint64_t now_ns,
                           uint32_t *retry_ms);
/* The same on the REST server's limiter, with '*retry_s' (>= 1) in whole seconds. Needs a
 * limiter (rate_limit_rpm > 0, or a shared one). */
bool dc_api_rate_take(struct dc_api_limits *l, const char *key, uint64_t now_ns, uint32_t *retry_s);
/* Headers in, before auth: answers a CORS preflight (OPTIONS from an allowed origin) with 204
 * and returns true ('*ret' is the result for MHD); false for any other request. */
bool dc_admin_preflight(struct dc_api_req *r, enum MHD_Result *ret);
/* Headers in, after auth: takes a token from the caller's bucket (dc_api_rate_limited); true
 * with 'e' set to the 429 (e->retry_after_ms) when it is empty. /health is never limited. */
bool dc_admin_rate_limited(struct dc_api_req *r, struct dc_api_error *e);
/* Adds Access-Control-Allow-Origin (and Vary) to a response when the request's Origin is
 * allowed. */
void dc_admin_cors_headers(struct dc_api_req *r, struct MHD_Response *resp);
/* GET /api/peers. */
enum MHD_Result dc_admin_get_peers(struct dc_api_req *r);
/* GET /api/experts: {"experts": [...]} from the experts_json hook (503 without it). */
enum MHD_Result dc_admin_get_experts(struct dc_api_req *r);
/* POST /api/peers/connect: validates the body, then suspends and queues the dial. */
enum MHD_Result dc_admin_connect_post(struct dc_api_req *r);
/* Worker: runs the dial (blocking, bounded) and wakes the connection. */
void dc_admin_connect_run(struct dc_api_req *r);

/* sse.c */
/* The engine's callback for every generation (stream or not). */
void dc_sse_on_event(void *ud, const struct dc_gen_event *ev);
/* The callback of a chat forwarded to a peer (dc_api_remote_cb): tokens and normal ends as
 * dc_sse_on_event; a failure becomes the OpenAI error of 'err' (an error event when the stream
 * has already started). */
void dc_sse_on_remote(void *ud, const struct dc_gen_event *ev,
                      const struct dc_api_remote_error *err);
/* Creates the 200 text/event-stream response for a started streaming request. */
struct MHD_Response *dc_sse_response(struct dc_api_req *r);
/* Appends the chat.completion / text_completion JSON of a finished request to 'b'. */
DC_MUST_CHECK int dc_sse_final_json(struct dc_api_req *r, struct dc_buf *b);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * grpc.c - the gRPC interface over h2c: democritus.v1.Democritus (Chat, Health, ListPeers,
 * GetReputation) and grpc.health.v1.Health/Check.
 *
 * Map of the file:
 *   1. the protocol core (struct dc_grpc_conn, grpc_int.h): an nghttp2 server session driven
 *      with mem_recv/mem_send, so it does no I/O and the fuzz harness feeds it raw frames.
 *      Each stream collects its headers and its one request message (5-byte length prefix,
 *      capped), is checked (method, content-type, authorization, path) as soon as its headers
 *      end, and is dispatched when the client half-closes. Replies are a HEADERS frame, DATA
 *      from a deferred data provider (so streamed tokens are sent as they come and HTTP/2 flow
 *      control applies), then trailers (grpc-status, percent-encoded grpc-message). Errors
 *      found before any reply use the "Trailers-Only" form: one HEADERS frame with END_STREAM.
 *   2. the server: TCP on its own libuv loop and thread (its own, not the P2P loop, so a busy
 *      swarm never delays tokens and the gRPC server can start and stop alone); a uv_async
 *      wakes it for engine events, one timer per connection enforces grpc-timeout.
 *
 * Chat resolves its "model" as REST does (rpc.c, dc_api_model_resolve): an unknown model is
 * NOT_FOUND; a registry model that must be loaded is acquired on the loop's thread pool. Every
 * authenticated call takes a token from the rate limit REST and WebSocket share; an empty
 * bucket, like a full model queue, is RESOURCE_EXHAUSTED with a grpc-message that says
 * "retry after N ms".
 *
 * Cancellation. RST_STREAM from the client (grpc-js sends CANCEL on call.cancel() and at its
 * own deadline) closes the stream in nghttp2; on_stream_close then cancels the generation, whose
 * slot the engine frees at its next step. A deadline we enforce ends the stream with
 * DEADLINE_EXCEEDED the same way.
 */
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "api/grpc_int.h"
#include "base/log.h"
#include "democritus.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#define LOG "grpc"

/* ---- helpers --------------------------------------------------------------------------- */

int dc_grpc_timeout_parse(const char *v, uint64_t *ms)
{
    uint64_t n = 0;
    size_t i;

    for (i = 0; v[i] >= '0' && v[i] <= '9'; i++) {
        if (i == 8)
            return DC_EINVAL;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    if (i == 0 || v[i] == '\0' || v[i + 1] != '\0')
        return DC_EINVAL;
    switch (v[i]) {
    case 'H':
        *ms = n * 3600000u;
        break;
    case 'M':
        *ms = n * 60000u;
        break;
    case 'S':
        *ms = n * 1000u;
        break;
    case 'm':
        *ms = n;
        break;
    case 'u':
        *ms = (n + 999u) / 1000u;
        break;
    case 'n':
        *ms = (n + 999999u) / 1000000u;
        break;
    default:
        return DC_EINVAL;
    }
    return 0;
}

void dc_grpc_percent_encode(const char *msg, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    if (cap == 0)
        return;
    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0'; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            if (o + 1 >= cap)
                break;
            out[o++] = (char)*p;
        } else {
            if (o + 3 >= cap)
                break;
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
}

/* ---- 1. protocol core ------------------------------------------------------------------ */

enum method {
    M_UNKNOWN = 0,
    M_CHAT,
    M_HEALTH,
    M_LIST_PEERS,
    M_GET_REPUTATION,
    M_HEALTH_CHECK,
    M_HEALTH_WATCH,
};

static const struct {
    const char *path;
    enum method m;
} methods[] = {
    {"/democritus.v1.Democritus/Chat", M_CHAT},
    {"/democritus.v1.Democritus/Health", M_HEALTH},
    {"/democritus.v1.Democritus/ListPeers", M_LIST_PEERS},
    {"/democritus.v1.Democritus/GetReputation", M_GET_REPUTATION},
    {"/grpc.health.v1.Health/Check", M_HEALTH_CHECK},
    {"/grpc.health.v1.Health/Watch", M_HEALTH_WATCH},
};

struct gstream {
    struct gstream *prev, *next;
    struct dc_grpc_conn *c;
    int32_t id;
    enum method m;
    bool is_post;
    bool grpc_ct; /* content-type application/grpc[+proto|;...] */
    bool has_path;
    char *auth;                      /* authorization value, or NULL */
    char key_id[DC_AUTH_KEY_ID_LEN]; /* the checked key's id, the rate limit's key */
    uint64_t deadline_ms;
    struct dc_buf body; /* the request message, length prefix included */
    bool checked;       /* headers checked; dispatched once the client half-closes */
    bool dispatched;
    bool headers_sent; /* response HEADERS submitted */
    bool done;         /* status decided: no more replies */
    bool eof;          /* all of 'out' then trailers */
    int status;
    char message[256];
    struct dc_buf out; /* DATA bytes not yet taken by nghttp2 */
    struct dc_rpc_call *call;
};

struct dc_grpc_conn {
    struct dc_grpc_shared *sh;
    nghttp2_session *session;
    struct dc_buf out;
    struct gstream *streams;
    char client[DC_API_ADDR_LEN]; /* the client's address: the rate limit's key without auth */
    bool fatal;
    bool freeing;
};

static void stream_unlink_free(struct gstream *s)
{
    struct dc_grpc_conn *c = s->c;

    if (s->call != NULL) {
        s->call->owner = NULL;
        dc_rpc_call_cancel(s->call);
        s->call = NULL;
    }
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    dc_buf_cleanup(&s->body);
    dc_buf_cleanup(&s->out);
    dc_free(s->auth);
    dc_free(s);
}

/* Moves nghttp2's pending frames into the output buffer (up to a chunk). */
static void pump(struct dc_grpc_conn *c)
{
    while (!c->fatal && c->out.len < DC_GRPC_OUT_CHUNK) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            c->fatal = true;
            break;
        }
        if (n == 0)
            break;
        if (dc_buf_append(&c->out, data, (size_t)n) < 0) {
            c->fatal = true;
            break;
        }
    }
}

static nghttp2_nv nv(const char *name, const char *value)
{
    nghttp2_nv h = {(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                    NGHTTP2_NV_FLAG_NO_COPY_NAME};
    return h;
}

static ssize_t data_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    struct gstream *s = source->ptr;
    size_t n = s->out.len < length ? s->out.len : length;
    char status[12], msg[768];

    DC_UNUSED(ud);
    if (n > 0) {
        memcpy(buf, s->out.data, n);
        dc_buf_consume(&s->out, n);
    }
    if (s->out.len == 0 && s->eof) {
        nghttp2_nv trailers[2];
        size_t nt = 0;

        snprintf(status, sizeof(status), "%d", s->status);
        trailers[nt++] = nv("grpc-status", status);
        if (s->message[0] != '\0') {
            dc_grpc_percent_encode(s->message, msg, sizeof(msg));
            trailers[nt++] = nv("grpc-message", msg);
        }
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(session, stream_id, trailers, nt) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return (ssize_t)n;
    }
    if (n == 0)
        return NGHTTP2_ERR_DEFERRED;
    return (ssize_t)n;
}

/* Sends the response HEADERS with a data provider (tokens and unary replies follow). */
static int start_reply(struct gstream *s)
{
    nghttp2_nv h[2] = {nv(":status", "200"), nv("content-type", "application/grpc")};
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};

    if (s->headers_sent)
        return 0;
    if (nghttp2_submit_response(s->c->session, s->id, h, 2, &prd) != 0)
        return DC_ENOMEM;
    s->headers_sent = true;
    return 0;
}

/* Ends the stream with 'status'. Before any reply: Trailers-Only; after: trailers follow the
 * pending DATA. */
static void finish(struct gstream *s, int status, const char *message)
{
    char st[12], msg[768];

    if (s->done)
        return;
    s->done = true;
    s->status = status;
    snprintf(s->message, sizeof(s->message), "%s", message != NULL ? message : "");
    if (s->call != NULL) {
        /* The generation is no longer wanted (or already over): let it end unattended. */
        s->call->owner = NULL;
        dc_rpc_call_cancel(s->call);
        s->call = NULL;
    }
    if (!s->headers_sent) {
        nghttp2_nv h[4] = {nv(":status", "200"), nv("content-type", "application/grpc")};
        size_t n = 2;

        snprintf(st, sizeof(st), "%d", status);
        h[n++] = nv("grpc-status", st);
        if (s->message[0] != '\0') {
            dc_grpc_percent_encode(s->message, msg, sizeof(msg));
            h[n++] = nv("grpc-message", msg);
        }
        s->headers_sent = true;
        if (nghttp2_submit_response(s->c->session, s->id, h, n, NULL) != 0)
            (void)nghttp2_submit_rst_stream(s->c->session, NGHTTP2_FLAG_NONE, s->id,
                                            NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s->eof = true;
    (void)nghttp2_session_resume_data(s->c->session, s->id);
}

/* The gRPC status of an OpenAI error's HTTP status (the mapping grpc-gateway uses). */
static int status_of_http(int http)
{
    switch (http) {
    case 400:
        return DC_GRPC_INVALID_ARGUMENT;
    case 401:
        return DC_GRPC_UNAUTHENTICATED;
    case 403:
        return DC_GRPC_PERMISSION_DENIED;
    case 404:
        return DC_GRPC_NOT_FOUND;
    case 413:
    case 429:
        return DC_GRPC_RESOURCE_EXHAUSTED;
    case 502:
    case 503:
        return DC_GRPC_UNAVAILABLE;
    case 504:
        return DC_GRPC_DEADLINE_EXCEEDED;
    default:
        return DC_GRPC_INTERNAL;
    }
}

/* Appends one length-prefixed message to the stream's DATA. */
static int send_msg(struct gstream *s, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t hdr[5] = {0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    size_t old = s->out.len;
    int rc;

    if (s->done)
        return DC_ESTATE;
    if (s->out.len + n + 5 > DC_GRPC_MAX_PENDING) {
        finish(s, DC_GRPC_RESOURCE_EXHAUSTED, "the client does not read its replies");
        return DC_ELIMIT;
    }
    rc = start_reply(s);
    if (rc == 0)
        rc = dc_buf_append(&s->out, hdr, 5);
    if (rc == 0 && n > 0) {
        uint8_t *tmp = dc_malloc(n);
        if (tmp == NULL) {
            rc = DC_ENOMEM;
        } else {
            protobuf_c_message_pack(m, tmp);
            rc = dc_buf_append(&s->out, tmp, n);
            dc_free(tmp);
        }
    }
    if (rc < 0) {
        s->out.len = old;
        return rc;
    }
    (void)nghttp2_session_resume_data(s->c->session, s->id);
    return 0;
}

/* The request message: exactly one, uncompressed. Returns its bytes or NULL after finishing
 * the stream with the right status. */
static const uint8_t *request_msg(struct gstream *s, size_t *len)
{
    const uint8_t *b = s->body.data;
    size_t n;

    if (s->body.len < 5) {
        finish(s, DC_GRPC_INVALID_ARGUMENT, "the call carries no request message");
        return NULL;
    }
    if (b[0] != 0) {
        finish(s, DC_GRPC_UNIMPLEMENTED, "compressed messages are not supported");
        return NULL;
    }
    n = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
    if (n != s->body.len - 5) {
        finish(s, DC_GRPC_INVALID_ARGUMENT,
               n < s->body.len - 5 ? "a unary call takes exactly one request message"
                                   : "the request message is truncated");
        return NULL;
    }
    *len = n;
    return b + 5;
}

static json_t *chat_json(const Democritus__V1__ChatRequest *r)
{
    json_t *j = json_object(), *msgs = json_array(), *stop = json_array();
    bool ok = j != NULL && msgs != NULL && stop != NULL;

    for (size_t i = 0; ok && i < r->n_messages; i++) {
        const Democritus__V1__ChatMessage *m = r->messages[i];
        json_t *o = json_object();
        ok = o != NULL && json_array_append_new(msgs, o) == 0 &&
             json_object_set_new(o, "role", json_string(m->role)) == 0 &&
             json_object_set_new(o, "content", json_string(m->content)) == 0;
    }
    for (size_t i = 0; ok && i < r->n_stop; i++)
        ok = json_array_append_new(stop, json_string(r->stop[i])) == 0;
    ok = ok && json_object_set(j, "messages", msgs) == 0;
    if (ok && r->model[0] != '\0')
        ok = json_object_set_new(j, "model", json_string(r->model)) == 0;
    if (ok && r->user[0] != '\0')
        ok = json_object_set_new(j, "user", json_string(r->user)) == 0;
    if (ok && r->n_stop > 0)
        ok = json_object_set(j, "stop", stop) == 0;
#define OPT(field, CASE, make)                                                                     \
    if (ok && r->field##_opt_case == DEMOCRITUS__V1__CHAT_REQUEST__##CASE)                         \
        ok = json_object_set_new(j, #field, make(r->field)) == 0;
    OPT(temperature, TEMPERATURE_OPT_TEMPERATURE, json_real)
    OPT(top_p, TOP_P_OPT_TOP_P, json_real)
    OPT(max_tokens, MAX_TOKENS_OPT_MAX_TOKENS, json_integer)
    OPT(seed, SEED_OPT_SEED, json_integer)
    OPT(presence_penalty, PRESENCE_PENALTY_OPT_PRESENCE_PENALTY, json_real)
    OPT(frequency_penalty, FREQUENCY_PENALTY_OPT_FREQUENCY_PENALTY, json_real)
    OPT(experts, EXPERTS_OPT_EXPERTS, json_integer)
#undef OPT
    json_decref(msgs);
    json_decref(stop);
    if (!ok) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static void do_chat(struct gstream *s, const uint8_t *msg, size_t len)
{
    struct dc_grpc_shared *sh = s->c->sh;
    Democritus__V1__ChatRequest *r;
    struct dc_api_error err;
    struct dc_rpc_chat chat;
    json_t *j;
    char *text;
    int rc;

    r = democritus__v1__chat_request__unpack(NULL, len, msg);
    if (r == NULL) {
        finish(s, DC_GRPC_INVALID_ARGUMENT, "the request is not a valid ChatRequest");
        return;
    }
    /* Through JSON, so REST's parser judges every parameter the same way on all interfaces.
     * json_string() refuses invalid UTF-8, which proto3 strings must not hold anyway. */
    j = chat_json(r);
    democritus__v1__chat_request__free_unpacked(r, NULL);
    text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        finish(s, DC_GRPC_INVALID_ARGUMENT, "the request holds invalid UTF-8 or is too large");
        return;
    }
    rc = dc_rpc_chat_parse(sh->backend, text, strlen(text), &chat, &err);
    free(text);
    if (rc < 0) {
        finish(s, rc == DC_ENOMEM ? DC_GRPC_RESOURCE_EXHAUSTED : DC_GRPC_INVALID_ARGUMENT,
               err.message);
        return;
    }
    /* The model resolves as on REST: unknown NOT_FOUND, a full queue RESOURCE_EXHAUSTED (its
     * message says when to retry), no model UNAVAILABLE. */
    chat.req.gen.priority = dc_auth_priority(sh->backend->auth, s->key_id);
    rc = dc_rpc_call_start(sh->backend, sh->mb, &chat, s, &s->call, &err);
    if (rc < 0) {
        finish(s, status_of_http(err.status), err.message);
        return;
    }
    sh->n_calls++;
    /* Headers now: the client sees the call accepted before the first token. */
    if (start_reply(s) < 0)
        finish(s, DC_GRPC_INTERNAL, "out of memory");
}

static void do_health(struct gstream *s)
{
    struct dc_rpc_backend *b = s->c->sh->backend;
    Democritus__V1__HealthResponse r = DEMOCRITUS__V1__HEALTH_RESPONSE__INIT;
    struct dc_engine_stats st = {0};

    if (b->engine != NULL)
        dc_engine_stats(b->engine, &st);
    r.status = b->engine != NULL ? "ok" : "no_model";
    r.version = (char *)b->version;
    r.model_loaded = b->engine != NULL;
    r.model = b->model_id != NULL ? b->model_id : "";
    r.active_requests = st.active;
    r.queued_requests = st.queued;
    r.uptime_s = (double)(dc_mono_ms() - b->started_ms) / 1000.0;
    if (send_msg(s, &r.base) == 0)
        finish(s, DC_GRPC_OK, NULL);
}

static void do_health_check(struct gstream *s, const uint8_t *msg, size_t len)
{
    Grpc__Health__V1__HealthCheckRequest *q;
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    bool known;

    q = grpc__health__v1__health_check_request__unpack(NULL, len, msg);
    if (q == NULL) {
        finish(s, DC_GRPC_INVALID_ARGUMENT, "the request is not a valid HealthCheckRequest");
        return;
    }
    known = q->service[0] == '\0' || strcmp(q->service, "democritus.v1.Democritus") == 0;
    grpc__health__v1__health_check_request__free_unpacked(q, NULL);
    if (!known) {
        finish(s, DC_GRPC_NOT_FOUND, "unknown service");
        return;
    }
    r.status = s->c->sh->backend->engine != NULL
                   ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                   : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    if (send_msg(s, &r.base) == 0)
        finish(s, DC_GRPC_OK, NULL);
}

static void dispatch(struct gstream *s)
{
    const uint8_t *msg;
    size_t len = 0;

    s->dispatched = true;
    if (s->done)
        return;
    msg = request_msg(s, &len);
    if (msg == NULL)
        return;
    switch (s->m) {
    case M_CHAT:
        do_chat(s, msg, len);
        break;
    case M_HEALTH: {
        Democritus__V1__HealthRequest *q = democritus__v1__health_request__unpack(NULL, len, msg);
        if (q == NULL) {
            finish(s, DC_GRPC_INVALID_ARGUMENT, "the request is not a valid HealthRequest");
            break;
        }
        democritus__v1__health_request__free_unpacked(q, NULL);
        do_health(s);
        break;
    }
    case M_LIST_PEERS: {
        Democritus__V1__ListPeersRequest *q =
            democritus__v1__list_peers_request__unpack(NULL, len, msg);
        Democritus__V1__ListPeersResponse r = DEMOCRITUS__V1__LIST_PEERS_RESPONSE__INIT;
        if (q == NULL) {
            finish(s, DC_GRPC_INVALID_ARGUMENT, "the request is not a valid ListPeersRequest");
            break;
        }
        democritus__v1__list_peers_request__free_unpacked(q, NULL);
        /* The P2P host lives on another thread and offers no snapshot yet: no peers known. */
        if (send_msg(s, &r.base) == 0)
            finish(s, DC_GRPC_OK, NULL);
        break;
    }
    case M_GET_REPUTATION: {
        Democritus__V1__GetReputationRequest *q =
            democritus__v1__get_reputation_request__unpack(NULL, len, msg);
        Democritus__V1__GetReputationResponse r = DEMOCRITUS__V1__GET_REPUTATION_RESPONSE__INIT;
        if (q == NULL) {
            finish(s, DC_GRPC_INVALID_ARGUMENT, "the request is not a valid GetReputationRequest");
            break;
        }
        democritus__v1__get_reputation_request__free_unpacked(q, NULL);
        /* No reputation is kept yet (the trust module fills it): an empty list. */
        if (send_msg(s, &r.base) == 0)
            finish(s, DC_GRPC_OK, NULL);
        break;
    }
    case M_HEALTH_CHECK:
        do_health_check(s, msg, len);
        break;
    default:
        finish(s, DC_GRPC_UNIMPLEMENTED, "unknown method");
        break;
    }
}

/* Headers complete: decide now what can be decided without the message. */
static void check_headers(struct gstream *s)
{
    s->checked = true;
    if (!s->is_post || !s->has_path) {
        finish(s, DC_GRPC_UNIMPLEMENTED, "gRPC calls are POST requests with a path");
        return;
    }
    if (!s->grpc_ct) {
        nghttp2_nv h[2] = {nv(":status", "415"), nv("content-type", "text/plain")};
        s->done = s->headers_sent = true;
        (void)nghttp2_submit_response(s->c->session, s->id, h, 2, NULL);
        return;
    }
    if (s->m == M_UNKNOWN || s->m == M_HEALTH_WATCH) {
        finish(s, DC_GRPC_UNIMPLEMENTED,
               s->m == M_UNKNOWN ? "unknown method" : "Watch is not implemented: poll Check");
        return;
    }
    if (s->m == M_HEALTH_CHECK)
        return; /* like REST's /health: no key, no rate limit */
    if (dc_auth_check(s->c->sh->backend->auth, s->auth, s->key_id) < 0) {
        finish(s, DC_GRPC_UNAUTHENTICATED, "missing or invalid API key");
        return;
    }
    /* Every authenticated call is a request for the rate limit REST and WebSocket share. */
    {
        struct dc_api_error e;
        if (dc_api_rate_limited(s->c->sh->backend->ratelimit, s->key_id, s->c->client, &e))
            finish(s, DC_GRPC_RESOURCE_EXHAUSTED, e.message);
    }
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct dc_grpc_conn *c = ud;
    struct gstream *s;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    s = dc_calloc(1, sizeof(*s));
    if (s == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->c = c;
    s->id = frame->hd.stream_id;
    dc_buf_init(&s->body, c->sh->max_message + 5);
    dc_buf_init(&s->out, 0);
    s->next = c->streams;
    if (c->streams != NULL)
        c->streams->prev = s;
    c->streams = s;
    if (nghttp2_session_set_stream_user_data(session, s->id, s) != 0) {
        stream_unlink_free(s);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static bool name_is(const uint8_t *name, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(name, want, len) == 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct gstream *s;

    DC_UNUSED(flags);
    DC_UNUSED(ud);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    if (name_is(name, namelen, ":method")) {
        s->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    } else if (name_is(name, namelen, ":path")) {
        s->has_path = true;
        for (size_t i = 0; i < DC_ARRAY_LEN(methods); i++) {
            if (name_is(value, valuelen, methods[i].path))
                s->m = methods[i].m;
        }
    } else if (name_is(name, namelen, "content-type")) {
        s->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                     (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (name_is(name, namelen, "authorization")) {
        dc_free(s->auth);
        s->auth = dc_strndup((const char *)value, valuelen);
        if (s->auth == NULL)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    } else if (name_is(name, namelen, "grpc-timeout")) {
        char v[16];
        uint64_t ms;
        if (valuelen < sizeof(v)) {
            memcpy(v, value, valuelen);
            v[valuelen] = '\0';
            if (dc_grpc_timeout_parse(v, &ms) == 0)
                s->deadline_ms = dc_mono_ms() + (ms > 0 ? ms : 1);
        }
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud)
{
    struct gstream *s = nghttp2_session_get_stream_user_data(session, stream_id);

    DC_UNUSED(flags);
    DC_UNUSED(ud);
    if (s == NULL || s->done || s->dispatched)
        return 0;
    if (dc_buf_append(&s->body, data, len) < 0) {
        finish(s, DC_GRPC_RESOURCE_EXHAUSTED, "the request message is larger than the limit");
        return 0;
    }
    if (s->body.len >= 5) {
        const uint8_t *b = s->body.data;
        size_t n = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
        if (n > s->c->sh->max_message)
            finish(s, DC_GRPC_RESOURCE_EXHAUSTED, "the request message is larger than the limit");
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct gstream *s;

    DC_UNUSED(ud);
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && !s->checked)
        check_headers(s);
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !s->dispatched)
        dispatch(s);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *ud)
{
    struct dc_grpc_conn *c = ud;
    struct gstream *s = nghttp2_session_get_stream_user_data(session, stream_id);

    DC_UNUSED(error_code);
    if (s == NULL || c->freeing)
        return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    stream_unlink_free(s); /* cancels its generation: RST_STREAM from the client lands here */
    return 0;
}

int dc_grpc_conn_new(struct dc_grpc_shared *sh, struct dc_grpc_conn **out)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    struct dc_grpc_conn *c;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, DC_GRPC_MAX_STREAMS},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384},
    };
    int rc = DC_ENOMEM;

    *out = NULL;
    c = dc_calloc(1, sizeof(*c));
    if (c == NULL)
        return DC_ENOMEM;
    c->sh = sh;
    snprintf(c->client, sizeof(c->client), "?");
    dc_buf_init(&c->out, 0);
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        goto err_free;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        goto err_free;
    }
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    rc = nghttp2_session_server_new2(&c->session, cbs, c, opt) == 0 ? 0 : DC_ENOMEM;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc < 0)
        goto err_free;
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, DC_ARRAY_LEN(iv)) != 0) {
        rc = DC_ENOMEM;
        goto err_session;
    }
    pump(c);
    *out = c;
    return 0;

err_session:
    nghttp2_session_del(c->session);
err_free:
    dc_buf_cleanup(&c->out);
    dc_free(c);
    return rc;
}

void dc_grpc_conn_set_client(struct dc_grpc_conn *c, const char *client)
{
    snprintf(c->client, sizeof(c->client), "%s", client);
}

void dc_grpc_conn_free(struct dc_grpc_conn *c)
{
    if (c == NULL)
        return;
    c->freeing = true;
    while (c->streams != NULL)
        stream_unlink_free(c->streams);
    nghttp2_session_del(c->session);
    dc_buf_cleanup(&c->out);
    dc_free(c);
}

int dc_grpc_conn_feed(struct dc_grpc_conn *c, const uint8_t *data, size_t len)
{
    ssize_t n;

    if (c->fatal)
        return DC_ECLOSED;
    n = nghttp2_session_mem_recv(c->session, data, len);
    if (n < 0) {
        /* nghttp2 has queued a GOAWAY for protocol errors; send it, then drop. */
        if (n != NGHTTP2_ERR_NOMEM && n != NGHTTP2_ERR_CALLBACK_FAILURE)
            (void)nghttp2_session_terminate_session(c->session, NGHTTP2_PROTOCOL_ERROR);
        pump(c);
        c->fatal = true;
        return DC_EPROTO;
    }
    pump(c);
    return 0;
}

void dc_grpc_conn_output(struct dc_grpc_conn *c, const uint8_t **data, size_t *len)
{
    *data = c->out.data;
    *len = c->out.len;
}

void dc_grpc_conn_consume(struct dc_grpc_conn *c, size_t n)
{
    dc_buf_consume(&c->out, n);
    pump(c);
}

bool dc_grpc_conn_finished(const struct dc_grpc_conn *c)
{
    if (c->out.len > 0)
        return false;
    return c->fatal ||
           (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session));
}

uint64_t dc_grpc_conn_next_deadline(const struct dc_grpc_conn *c)
{
    uint64_t best = 0;

    for (const struct gstream *s = c->streams; s != NULL; s = s->next) {
        if (s->deadline_ms != 0 && !s->done && (best == 0 || s->deadline_ms < best))
            best = s->deadline_ms;
    }
    return best;
}

void dc_grpc_conn_expire(struct dc_grpc_conn *c, uint64_t now_ms)
{
    for (struct gstream *s = c->streams; s != NULL; s = s->next) {
        if (s->deadline_ms != 0 && !s->done && s->deadline_ms <= now_ms)
            finish(s, DC_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    }
    pump(c);
}

void dc_grpc_conn_shutdown(struct dc_grpc_conn *c)
{
    for (struct gstream *s = c->streams; s != NULL; s = s->next)
        finish(s, DC_GRPC_UNAVAILABLE, "the server is shutting down");
    /* The trailers first: nghttp2 sends control frames before DATA (and trailers go with the
     * DATA), and nothing at all once the terminating GOAWAY is out. */
    pump(c);
    (void)nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
    pump(c);
}

static void on_stream_event(struct gstream *s, struct dc_rpc_event *ev)
{
    Democritus__V1__ChatChunk ck = DEMOCRITUS__V1__CHAT_CHUNK__INIT;
    Democritus__V1__Usage usage = DEMOCRITUS__V1__USAGE__INIT;

    if (ev->type == DC_GEN_EV_TOKEN) {
        if (ev->text_len == 0)
            return;
        ck.text = ev->text;
        ck.token_id = ev->id;
        ck.logprob = ev->logprob;
        (void)send_msg(s, &ck.base);
        pump(s->c);
        return;
    }
    s->call = NULL; /* the call is over; its owner link is cut by the caller */
    if (ev->finish == DC_GEN_FINISH_ERROR) {
        finish(s, ev->status != 0 ? status_of_http(ev->status) : DC_GRPC_INTERNAL,
               ev->text_len > 0 ? ev->text : dc_strerror(ev->error));
    } else if (ev->finish == DC_GEN_FINISH_CANCELLED) {
        finish(s, DC_GRPC_UNAVAILABLE, "the generation was cancelled by the server");
    } else {
        usage.prompt_tokens = ev->n_prompt;
        usage.completion_tokens = ev->n_generated;
        usage.total_tokens = ev->n_prompt + ev->n_generated;
        ck.finish_reason = (char *)dc_gen_finish_name(ev->finish);
        ck.usage = &usage;
        if (send_msg(s, &ck.base) == 0)
            finish(s, DC_GRPC_OK, NULL);
    }
    pump(s->c);
}

void dc_grpc_shared_event(struct dc_grpc_shared *sh, struct dc_rpc_event *ev)
{
    struct dc_rpc_call *call = ev->call;

    if (call->owner != NULL)
        on_stream_event(call->owner, ev);
    if (ev->type == DC_GEN_EV_DONE) {
        call->owner = NULL;
        call->finished = true;
        dc_rpc_call_free(call);
        sh->n_calls--;
    }
    dc_free(ev);
}

/* ---- 2. server ------------------------------------------------------------------------- */

struct gsock {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct dc_grpc *srv;
    struct gsock *prev, *next;
    struct dc_grpc_conn *conn;
    uv_write_t wr;
    uint8_t *wbuf; /* the write in flight, or NULL */
    int closing;   /* handles still to close */
};

struct dc_grpc {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t async;
    uv_thread_t thread;
    uint16_t port;
    uint32_t max_connections;
    struct dc_rpc_backend backend;
    struct dc_rpc_mailbox mb;
    struct dc_grpc_shared sh;
    struct gsock *socks;
    size_t n_socks;
    atomic_bool stopping;
    bool shut; /* the loop thread has acted on 'stopping' */
    bool loop_done;
};

static void gsock_flush(struct gsock *g);

static void maybe_finish(struct dc_grpc *srv)
{
    if (srv->shut && srv->n_socks == 0 && srv->sh.n_calls == 0 && !srv->loop_done) {
        srv->loop_done = true;
        uv_close((uv_handle_t *)&srv->async, NULL);
    }
}

static void gsock_closed(uv_handle_t *h)
{
    struct gsock *g = h->data;
    struct dc_grpc *srv = g->srv;

    if (--g->closing > 0)
        return;
    dc_grpc_conn_free(g->conn);
    dc_free(g->wbuf);
    if (g->prev != NULL)
        g->prev->next = g->next;
    else
        srv->socks = g->next;
    if (g->next != NULL)
        g->next->prev = g->prev;
    srv->n_socks--;
    dc_free(g);
    maybe_finish(srv);
}

static void gsock_close(struct gsock *g)
{
    if (g->closing > 0)
        return;
    g->closing = 2;
    uv_close((uv_handle_t *)&g->tcp, gsock_closed);
    uv_close((uv_handle_t *)&g->timer, gsock_closed);
}

static void on_deadline(uv_timer_t *t)
{
    struct gsock *g = t->data;

    dc_grpc_conn_expire(g->conn, dc_mono_ms());
    gsock_flush(g);
}

static void on_written(uv_write_t *w, int status)
{
    struct gsock *g = w->data;

    dc_free(g->wbuf);
    g->wbuf = NULL;
    if (status < 0) {
        gsock_close(g);
        return;
    }
    gsock_flush(g);
}

/* Writes pending output (one write in flight at a time), re-arms the deadline timer, closes a
 * finished connection. */
static void gsock_flush(struct gsock *g)
{
    const uint8_t *data;
    size_t len;
    uint64_t dl;

    if (g->closing > 0)
        return;
    if (g->wbuf == NULL) {
        dc_grpc_conn_output(g->conn, &data, &len);
        if (len > 0) {
            uv_buf_t b;
            g->wbuf = dc_malloc(len);
            if (g->wbuf == NULL) {
                gsock_close(g);
                return;
            }
            memcpy(g->wbuf, data, len);
            dc_grpc_conn_consume(g->conn, len);
            b = uv_buf_init((char *)g->wbuf, (unsigned)len);
            g->wr.data = g;
            if (uv_write(&g->wr, (uv_stream_t *)&g->tcp, &b, 1, on_written) < 0) {
                dc_free(g->wbuf);
                g->wbuf = NULL;
                gsock_close(g);
                return;
            }
        } else if (dc_grpc_conn_finished(g->conn)) {
            gsock_close(g);
            return;
        }
    }
    dl = dc_grpc_conn_next_deadline(g->conn);
    if (dl != 0) {
        uint64_t now = dc_mono_ms();
        uv_timer_start(&g->timer, on_deadline, dl > now ? dl - now : 0, 0);
    } else {
        uv_timer_stop(&g->timer);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static _Thread_local char rbuf[65536];

    DC_UNUSED(h);
    DC_UNUSED(hint);
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct gsock *g = st->data;

    if (n < 0) {
        gsock_close(g);
        return;
    }
    if (n > 0 && dc_grpc_conn_feed(g->conn, (const uint8_t *)buf->base, (size_t)n) < 0) {
        /* Let the GOAWAY go out, then close: flush sees the conn finished. */
        uv_read_stop(st);
    }
    gsock_flush(g);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct dc_grpc *srv = server->data;
    struct gsock *g;

    if (status < 0)
        return;
    g = dc_calloc(1, sizeof(*g));
    if (g == NULL || uv_tcp_init(&srv->loop, &g->tcp) < 0) {
        dc_free(g);
        return;
    }
    g->srv = srv;
    g->tcp.data = g;
    uv_timer_init(&srv->loop, &g->timer);
    g->timer.data = g;
    g->next = srv->socks;
    if (srv->socks != NULL)
        srv->socks->prev = g;
    srv->socks = g;
    srv->n_socks++;
    if (uv_accept(server, (uv_stream_t *)&g->tcp) < 0 || srv->n_socks > srv->max_connections ||
        dc_grpc_conn_new(&srv->sh, &g->conn) < 0) {
        gsock_close(g);
        return;
    }
    {
        struct sockaddr_storage peer;
        char client[DC_API_ADDR_LEN];
        int len = sizeof(peer);

        dc_api_client_addr(uv_tcp_getpeername(&g->tcp, (struct sockaddr *)&peer, &len) == 0
                               ? (struct sockaddr *)&peer
                               : NULL,
                           client);
        dc_grpc_conn_set_client(g->conn, client);
    }
    uv_tcp_nodelay(&g->tcp, 1);
    uv_read_start((uv_stream_t *)&g->tcp, on_alloc, on_read);
    gsock_flush(g);
}

static void on_async(uv_async_t *h)
{
    struct dc_grpc *srv = h->data;
    struct dc_rpc_event *ev, *next;

    for (ev = dc_rpc_mailbox_take(&srv->mb); ev != NULL; ev = next) {
        next = ev->next;
        dc_grpc_shared_event(&srv->sh, ev);
    }
    if (atomic_load(&srv->stopping) && !srv->shut) {
        srv->shut = true;
        uv_close((uv_handle_t *)&srv->listener, NULL);
        for (struct gsock *g = srv->socks; g != NULL; g = g->next) {
            if (g->conn != NULL)
                dc_grpc_conn_shutdown(g->conn);
        }
    }
    for (struct gsock *g = srv->socks, *gn; g != NULL; g = gn) {
        gn = g->next;
        gsock_flush(g);
        if (srv->shut && g->closing == 0)
            gsock_close(g); /* the GOAWAY was handed to the kernel by the flush above */
    }
    maybe_finish(srv);
}

static void loop_thread(void *arg)
{
    struct dc_grpc *srv = arg;

    uv_run(&srv->loop, UV_RUN_DEFAULT);
}

int dc_grpc_new(const struct dc_rpc_config *cfg, struct dc_grpc **out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    struct dc_grpc *srv;
    char why[256];
    int rc, len;

    *out = NULL;
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(cfg->bind, cfg->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(cfg->bind, cfg->port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, errlen, "gRPC: cannot parse bind address '%s'", cfg->bind);
        return DC_EINVAL;
    }
    srv = dc_calloc(1, sizeof(*srv));
    if (srv == NULL)
        return DC_ENOMEM;
    rc = dc_rpc_backend_init(&srv->backend, cfg, why, sizeof(why));
    if (rc < 0)
        goto err_free;
    if (why[0] != '\0')
        dc_log_warn(LOG, "%s", why);
    srv->max_connections = cfg->max_connections != 0 ? cfg->max_connections : 1024;
    srv->sh.backend = &srv->backend;
    srv->sh.mb = &srv->mb;
    srv->sh.max_message =
        cfg->max_message_bytes != 0 ? cfg->max_message_bytes : DC_GRPC_MAX_MESSAGE;
    rc = uv_loop_init(&srv->loop);
    if (rc < 0)
        goto err_backend;
    srv->backend.loop = &srv->loop;
    uv_async_init(&srv->loop, &srv->async, on_async);
    srv->async.data = srv;
    uv_tcp_init(&srv->loop, &srv->listener);
    srv->listener.data = srv;
    rc = dc_rpc_mailbox_init(&srv->mb, &srv->async);
    if (rc < 0)
        goto err_loop;
    rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "gRPC: cannot listen on %s port %u: %s", cfg->bind,
                 (unsigned)cfg->port, uv_strerror(rc));
        goto err_mailbox;
    }
    len = sizeof(ss);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    rc = uv_thread_create(&srv->thread, loop_thread, srv);
    if (rc < 0)
        goto err_mailbox;
    *out = srv;
    return 0;

err_mailbox:
    dc_rpc_mailbox_cleanup(&srv->mb);
err_loop:
    uv_close((uv_handle_t *)&srv->async, NULL);
    uv_close((uv_handle_t *)&srv->listener, NULL);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv->loop);
err_backend:
    dc_rpc_backend_cleanup(&srv->backend);
err_free:
    dc_free(srv);
    return rc;
}

uint16_t dc_grpc_port(const struct dc_grpc *g)
{
    return g->port;
}

void dc_grpc_free(struct dc_grpc *srv)
{
    if (srv == NULL)
        return;
    atomic_store(&srv->stopping, true);
    uv_async_send(&srv->async);
    uv_thread_join(&srv->thread);
    uv_loop_close(&srv->loop);
    dc_rpc_mailbox_cleanup(&srv->mb);
    dc_rpc_backend_cleanup(&srv->backend);
    dc_free(srv);
}

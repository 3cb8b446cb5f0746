/* SPDX-License-Identifier: MIT */
/*
 * ws.c - the WebSocket chat interface: ws://bind:port/ws/chat.
 *
 * Map of the file:
 *   1. the protocol core (struct dc_ws_conn, ws_int.h): wslay's event API over in-memory
 *      buffers, so it does no I/O and the fuzz harness drives it directly; chat, cancel and
 *      auth messages; engine events turned into token/done/error messages;
 *   2. the handshake: libmicrohttpd answers the HTTP request (404/405/400/426/401, or 101 with
 *      Sec-WebSocket-Accept) and hands the upgraded socket over;
 *   3. the server: one libuv loop on its own thread watches the upgraded sockets (uv_poll: MHD
 *      keeps ownership of the descriptor, which it closes on MHD_upgrade_action CLOSE), drains
 *      the mailbox the engine posts to, pings every 30 s and closes sockets that never
 *      authenticate.
 *
 * Messages in:  {"type":"chat","id":S,"messages":[...], REST's parameters...}
 *               {"type":"cancel","id":S}   {"type":"auth","key":S}
 * Messages out: {"type":"token","id":S,"text":S}
 *               {"type":"done","id":S,"finish_reason":S,"usage":{...}}
 *               {"type":"error","id":S|null,"message":S}   {"type":"auth_ok"}
 *               (an error may add "code":S, e.g. "model_not_found", and a 429 of the rate
 *               limit or a full queue "retry_after_ms":N; the socket stays open)
 * A chat's "model" resolves as on REST (dc_api_model_resolve): a registry model that must be
 * loaded first is acquired on the loop's thread pool, so other sockets never wait for it. Each
 * chat takes a token from the rate limit REST and gRPC share (the key's id, or the client's
 * address without auth).
 * Every chat ends with exactly one done (also after a cancel: finish_reason "cancelled") or
 * one error carrying its id. Close codes: 1000 normal, 1001 server going away, 1002 protocol
 * error (wslay), 1003 binary message, 1007 invalid UTF-8, 1008 auth failure or a client that
 * does not read its output, 1009 message over the limit (wslay).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "api/ws_int.h"
#include "base/log.h"

#define LOG "ws"

/* ---- 1. protocol core ------------------------------------------------------------------ */

struct ws_req {
    struct ws_req *next;
    struct dc_rpc_call *call;
    char *id;      /* JSON-encoded, with its quotes: written as is into every message */
    bool logprobs; /* the client asked for each token's logprob */
};

struct dc_ws_conn {
    struct dc_ws_shared *sh;
    wslay_event_context_ptr ctx;
    bool authed;
    char key_id[DC_AUTH_KEY_ID_LEN]; /* the rate limit's key ("-": auth off or not yet) */
    char client[DC_API_ADDR_LEN];    /* the client's address, the key when auth is off */
    bool broken;                     /* a fatal error: no more frames either way */
    bool in_recv;                    /* inside wslay_event_recv: frames are sent after it returns */
    uint16_t close_code;             /* a close decided inside wslay_event_recv, sent after it */
    const char *close_reason;        /* static */
    uint64_t created_ms;
    const uint8_t *in; /* the bytes being fed, read by recv_cb */
    size_t in_len;
    struct dc_buf out; /* bytes for the peer */
    struct ws_req *reqs;
    size_t n_reqs;
};

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct dc_ws_conn *c = ud;
    size_t n = c->in_len < len ? c->in_len : len;

    DC_UNUSED(flags);
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(buf, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    struct dc_ws_conn *c = ud;
    size_t room = c->out.len < DC_WS_OUT_CHUNK ? DC_WS_OUT_CHUNK - c->out.len : 0;
    size_t n = len < room ? len : room;

    DC_UNUSED(flags);
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (dc_buf_append(&c->out, data, n) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)n;
}

/* Moves queued frames into the output buffer. */
static void pump(struct dc_ws_conn *c)
{
    if (c->broken || c->in_recv)
        return;
    if (wslay_event_send(c->ctx) != 0)
        c->broken = true;
}

static void cancel_all(struct dc_ws_conn *c)
{
    for (struct ws_req *r = c->reqs; r != NULL; r = r->next)
        dc_rpc_call_cancel(r->call);
}

void dc_ws_conn_close(struct dc_ws_conn *c, uint16_t code, const char *reason)
{
    cancel_all(c);
    if (c->broken)
        return;
    if (c->in_recv) {
        /* wslay sends control frames before queued messages: a close queued now would overtake
         * the error message that explains it. Queue it once the messages are out. */
        if (c->close_code == 0) {
            c->close_code = code;
            c->close_reason = reason;
        }
        return;
    }
    /* Fails harmlessly when a close was already queued or sent. */
    (void)wslay_event_queue_close(c->ctx, code, (const uint8_t *)reason,
                                  reason != NULL ? strlen(reason) : 0);
    pump(c);
}

static void send_text(struct dc_ws_conn *c, const struct dc_buf *b)
{
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, b->data, b->len};

    if (c->broken || b->data == NULL)
        return;
    if (wslay_event_get_queued_msg_length(c->ctx) > DC_WS_MAX_QUEUED) {
        /* The client does not read what it asked for: stop generating for it. */
        dc_ws_conn_close(c, WSLAY_CODE_POLICY_VIOLATION, "output not read");
        return;
    }
    if (wslay_event_queue_msg(c->ctx, &m) != 0)
        return; /* closing, or out of memory: the message is dropped */
    pump(c);
}

/* {"type":"error","id":ID,"message":MSG}; 'id_json' is JSON text or NULL (null). */
static void send_error(struct dc_ws_conn *c, const char *id_json, const char *msg)
{
    struct dc_buf b;

    dc_buf_init(&b, 0);
    if (dc_buf_printf(&b, "{\"type\":\"error\",\"id\":%s,\"message\":",
                      id_json != NULL ? id_json : "null") == 0 &&
        dc_api_json_str(&b, msg, strlen(msg)) == 0 && dc_buf_append_str(&b, "}") == 0)
        send_text(c, &b);
    dc_buf_cleanup(&b);
}

/* The error message of an OpenAI error: its message, plus its code and, for a 429, when to
 * retry ({"type":"error","id":ID,"message":S,"code":S,"retry_after_ms":N}). */
static void send_api_error(struct dc_ws_conn *c, const char *id_json, int status, const char *code,
                           uint32_t retry_after_ms, const char *msg)
{
    struct dc_buf b;
    int rc;

    dc_buf_init(&b, 0);
    rc = dc_buf_printf(
        &b, "{\"type\":\"error\",\"id\":%s,\"message\":", id_json != NULL ? id_json : "null");
    if (rc == 0)
        rc = dc_api_json_str(&b, msg, strlen(msg));
    if (rc == 0 && code != NULL)
        rc = dc_buf_printf(&b, ",\"code\":\"%s\"", code);
    if (rc == 0 && status == 429)
        rc = dc_buf_printf(&b, ",\"retry_after_ms\":%u",
                           retry_after_ms > 0 ? (unsigned)retry_after_ms : 1000u);
    if (rc == 0)
        rc = dc_buf_append_str(&b, "}");
    if (rc == 0)
        send_text(c, &b);
    dc_buf_cleanup(&b);
}

static struct ws_req *find_req(struct dc_ws_conn *c, const char *id_json)
{
    for (struct ws_req *r = c->reqs; r != NULL; r = r->next) {
        if (strcmp(r->id, id_json) == 0)
            return r;
    }
    return NULL;
}

static void on_auth(struct dc_ws_conn *c, json_t *msg)
{
    const char *key = json_string_value(json_object_get(msg, "key"));
    char *header;
    int rc = DC_EPERM;

    if (key != NULL && (header = dc_asprintf("Bearer %s", key)) != NULL) {
        rc = dc_auth_check(c->sh->backend->auth, header, c->key_id);
        explicit_bzero(header, strlen(header));
        dc_free(header);
    }
    if (rc < 0) {
        send_error(c, NULL, "invalid API key");
        dc_ws_conn_close(c, WSLAY_CODE_POLICY_VIOLATION, "invalid API key");
        return;
    }
    c->authed = true;
    struct dc_buf b = {.data = (uint8_t *)"{\"type\":\"auth_ok\"}", .len = 18};
    send_text(c, &b);
}

static void on_chat(struct dc_ws_conn *c, const char *id_json, const uint8_t *text, size_t len)
{
    struct dc_api_error err;
    struct dc_rpc_chat chat;
    struct ws_req *r;
    int rc;

    if (find_req(c, id_json) != NULL) {
        send_error(c, id_json, "a request with this id is already in flight on this socket");
        return;
    }
    if (c->n_reqs >= DC_WS_MAX_INFLIGHT) {
        send_error(c, id_json, "too many requests in flight on this socket");
        return;
    }
    /* The one rate limit REST and gRPC count against too: a chat is a request. */
    if (dc_api_rate_limited(c->sh->backend->ratelimit, c->key_id, c->client, &err)) {
        send_api_error(c, id_json, err.status, err.code, err.retry_after_ms, err.message);
        return;
    }
    rc = dc_rpc_chat_parse(c->sh->backend, (const char *)text, len, &chat, &err);
    if (rc < 0) {
        send_error(c, id_json, err.message);
        return;
    }
    r = dc_calloc(1, sizeof(*r));
    if (r == NULL || (r->id = dc_strdup(id_json)) == NULL) {
        dc_free(r);
        dc_rpc_chat_cleanup(&chat);
        send_error(c, id_json, "out of memory");
        return;
    }
    r->logprobs = chat.req.logprobs;
    chat.req.gen.priority = dc_auth_priority(c->sh->backend->auth, c->key_id);
    rc = dc_rpc_call_start(c->sh->backend, c->sh->mb, &chat, c, &r->call, &err);
    if (rc < 0) {
        send_api_error(c, id_json, err.status, err.code, err.retry_after_ms, err.message);
        dc_free(r->id);
        dc_free(r);
        return;
    }
    r->next = c->reqs;
    c->reqs = r;
    c->n_reqs++;
    c->sh->n_calls++;
}

/* One complete text message. */
static void on_message(struct dc_ws_conn *c, const uint8_t *text, size_t len)
{
    json_error_t je;
    json_t *msg, *idv;
    const char *type;
    char *id_json = NULL;
    char buf[256];

    msg = json_loadb((const char *)text, len, 0, &je);
    if (msg == NULL || !json_is_object(msg)) {
        if (msg == NULL)
            snprintf(buf, sizeof(buf), "invalid JSON: %s at line %d, column %d", je.text, je.line,
                     je.column);
        else
            snprintf(buf, sizeof(buf), "a message must be a JSON object");
        send_error(c, NULL, buf);
        json_decref(msg);
        return;
    }
    idv = json_object_get(msg, "id");
    if (json_is_string(idv) && json_string_length(idv) > 0 &&
        json_string_length(idv) <= DC_WS_MAX_ID)
        id_json = json_dumps(idv, JSON_ENCODE_ANY);
    type = json_string_value(json_object_get(msg, "type"));
    if (type == NULL) {
        send_error(c, id_json, "'type' must be a string: chat, cancel or auth");
    } else if (strcmp(type, "auth") == 0) {
        on_auth(c, msg);
    } else if (!c->authed) {
        send_error(c, id_json, "authentication required: send {\"type\":\"auth\",\"key\":...}");
        dc_ws_conn_close(c, WSLAY_CODE_POLICY_VIOLATION, "authentication required");
    } else if (strcmp(type, "chat") != 0 && strcmp(type, "cancel") != 0) {
        send_error(c, id_json, "unknown 'type': expected chat, cancel or auth");
    } else if (id_json == NULL) {
        send_error(c, NULL, "'id' must be a non-empty string of at most 256 bytes");
    } else if (strcmp(type, "chat") == 0) {
        on_chat(c, id_json, text, len);
    } else {
        struct ws_req *r = find_req(c, id_json);
        if (r == NULL)
            send_error(c, id_json, "no request with this id is in flight");
        else
            dc_rpc_call_cancel(r->call);
    }
    free(id_json);
    json_decref(msg);
}

static void on_msg_recv(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                        void *ud)
{
    struct dc_ws_conn *c = ud;

    DC_UNUSED(ctx);
    if (a->opcode == WSLAY_CONNECTION_CLOSE) {
        cancel_all(c);
        return;
    }
    if (wslay_is_ctrl_frame(a->opcode))
        return; /* pings are answered by wslay, pongs need nothing */
    if (a->opcode == WSLAY_BINARY_FRAME) {
        dc_ws_conn_close(c, WSLAY_CODE_UNSUPPORTED_DATA, "binary messages are not supported");
        return;
    }
    if (!dc_rpc_utf8_valid(a->msg, a->msg_length)) {
        dc_ws_conn_close(c, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8");
        return;
    }
    if (wslay_event_get_close_sent(c->ctx))
        return;
    on_message(c, a->msg, a->msg_length);
}

int dc_ws_conn_new(struct dc_ws_shared *sh, bool authed, struct dc_ws_conn **out)
{
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_msg_recv_callback = on_msg_recv,
    };
    struct dc_ws_conn *c = dc_calloc(1, sizeof(*c));

    *out = NULL;
    if (c == NULL)
        return DC_ENOMEM;
    if (wslay_event_context_server_init(&c->ctx, &cbs, c) != 0) {
        dc_free(c);
        return DC_ENOMEM;
    }
    wslay_event_config_set_max_recv_msg_length(c->ctx, sh->max_message);
    c->sh = sh;
    c->authed = authed;
    c->created_ms = dc_mono_ms();
    snprintf(c->key_id, sizeof(c->key_id), "-");
    snprintf(c->client, sizeof(c->client), "?");
    dc_buf_init(&c->out, 0);
    *out = c;
    return 0;
}

void dc_ws_conn_free(struct dc_ws_conn *c)
{
    struct ws_req *r, *next;

    if (c == NULL)
        return;
    for (r = c->reqs; r != NULL; r = next) {
        next = r->next;
        /* The call lives on until its DONE arrives; it no longer has anyone to stream to. */
        r->call->owner = NULL;
        dc_rpc_call_cancel(r->call);
        dc_free(r->id);
        dc_free(r);
    }
    wslay_event_context_free(c->ctx);
    dc_buf_cleanup(&c->out);
    dc_free(c);
}

int dc_ws_conn_feed(struct dc_ws_conn *c, const uint8_t *data, size_t len)
{
    int rc;

    if (c->broken)
        return DC_ECLOSED;
    c->in = data;
    c->in_len = len;
    c->in_recv = true;
    rc = wslay_event_recv(c->ctx);
    c->in_recv = false;
    if (rc != 0) {
        /* wslay fails the receive after queuing its own close (1002 protocol error, 1009 too
         * big): send that close, then nothing more. */
        pump(c);
        c->broken = true;
    }
    c->in = NULL;
    c->in_len = 0;
    pump(c);
    if (c->close_code != 0) {
        dc_ws_conn_close(c, c->close_code, c->close_reason);
        c->close_code = 0;
    }
    if (c->broken) {
        cancel_all(c);
        return DC_EPROTO;
    }
    return 0;
}

void dc_ws_conn_output(struct dc_ws_conn *c, const uint8_t **data, size_t *len)
{
    *data = c->out.data;
    *len = c->out.len;
}

void dc_ws_conn_consume(struct dc_ws_conn *c, size_t n)
{
    dc_buf_consume(&c->out, n);
    pump(c);
}

bool dc_ws_conn_want_read(const struct dc_ws_conn *c)
{
    return !c->broken && wslay_event_want_read(c->ctx);
}

bool dc_ws_conn_finished(const struct dc_ws_conn *c)
{
    if (c->out.len > 0)
        return false;
    return c->broken || (!wslay_event_want_read(c->ctx) && !wslay_event_want_write(c->ctx));
}

void dc_ws_conn_ping(struct dc_ws_conn *c)
{
    struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"", 0};

    if (!c->broken && wslay_event_queue_msg(c->ctx, &m) == 0)
        pump(c);
}

bool dc_ws_conn_close_sent(const struct dc_ws_conn *c)
{
    return c->broken || wslay_event_get_close_sent(c->ctx);
}

void dc_ws_conn_set_identity(struct dc_ws_conn *c, const char *key_id, const char *client)
{
    if (key_id != NULL)
        snprintf(c->key_id, sizeof(c->key_id), "%s", key_id);
    if (client != NULL)
        snprintf(c->client, sizeof(c->client), "%s", client);
}

bool dc_ws_conn_authed(const struct dc_ws_conn *c)
{
    return c->authed;
}

uint64_t dc_ws_conn_created_ms(const struct dc_ws_conn *c)
{
    return c->created_ms;
}

static void on_call_event(struct dc_ws_conn *c, struct dc_rpc_event *ev)
{
    struct ws_req **pp, *r;
    struct dc_buf b;
    int rc = 0;

    for (pp = &c->reqs; *pp != NULL && (*pp)->call != ev->call; pp = &(*pp)->next)
        ;
    r = *pp;
    if (r == NULL)
        return;
    dc_buf_init(&b, 0);
    if (ev->type == DC_GEN_EV_TOKEN) {
        if (ev->text_len > 0) {
            rc = dc_buf_printf(&b, "{\"type\":\"token\",\"id\":%s,\"text\":", r->id);
            if (rc == 0)
                rc = dc_api_json_str(&b, ev->text, ev->text_len);
            if (rc == 0 && r->logprobs)
                rc = isfinite(ev->logprob)
                         ? dc_buf_printf(&b, ",\"logprob\":%.6g", (double)ev->logprob)
                         : dc_buf_append_str(&b, ",\"logprob\":null");
            if (rc == 0)
                rc = dc_buf_append_str(&b, "}");
            if (rc == 0)
                send_text(c, &b);
        }
    } else if (ev->finish == DC_GEN_FINISH_ERROR) {
        send_api_error(c, r->id, ev->status, ev->code, ev->retry_after_ms,
                       ev->text_len > 0 ? ev->text : dc_strerror(ev->error));
    } else {
        rc = dc_buf_printf(&b,
                           "{\"type\":\"done\",\"id\":%s,\"finish_reason\":\"%s\",\"usage\":{"
                           "\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%u}}",
                           r->id, dc_gen_finish_name(ev->finish), ev->n_prompt, ev->n_generated,
                           ev->n_prompt + ev->n_generated);
        if (rc == 0)
            send_text(c, &b);
    }
    dc_buf_cleanup(&b);
    if (ev->type == DC_GEN_EV_DONE) {
        *pp = r->next;
        c->n_reqs--;
        dc_free(r->id);
        dc_free(r);
    }
}

void dc_ws_shared_event(struct dc_ws_shared *sh, struct dc_rpc_event *ev)
{
    struct dc_rpc_call *call = ev->call;

    if (call->owner != NULL)
        on_call_event(call->owner, ev);
    if (ev->type == DC_GEN_EV_DONE) {
        call->finished = true;
        dc_rpc_call_free(call);
        sh->n_calls--;
    }
    dc_free(ev);
}

/* ---- 2. handshake ---------------------------------------------------------------------- */

/* SHA-1 (FIPS 180-4), only for Sec-WebSocket-Accept, which RFC 6455 defines with it. */
static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    uint8_t block[64];
    size_t total = ((len + 8) / 64 + 1) * 64;

    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80], a, b, c, d, e;

        for (size_t i = 0; i < 64; i++) {
            size_t p = off + i;
            block[i] = p < len ? msg[p] : p == len ? 0x80 : 0;
        }
        if (off + 64 == total) {
            uint64_t bits = (uint64_t)len * 8;
            for (int i = 0; i < 8; i++)
                block[63 - i] = (uint8_t)(bits >> (8 * i));
        }
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
                   (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
        for (int i = 16; i < 80; i++)
            w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k, t;
            if (i < 20)
                f = (b & c) | (~b & d), k = 0x5a827999;
            else if (i < 40)
                f = b ^ c ^ d, k = 0x6ed9eba1;
            else if (i < 60)
                f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
            else
                f = b ^ c ^ d, k = 0xca62c1d6;
            t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

void dc_ws_accept_key(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t in[128], d[21] = {0};
    size_t klen = strnlen(key, sizeof(in) - sizeof(guid));
    char *o = out;

    memcpy(in, key, klen);
    memcpy(in + klen, guid, sizeof(guid) - 1);
    sha1(in, klen + sizeof(guid) - 1, d);
    for (int i = 0; i < 21; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)(i + 1 < 21 ? d[i + 1] : 0) << 8 |
                     (uint32_t)(i + 2 < 21 ? d[i + 2] : 0);
        *o++ = b64[(v >> 18) & 63];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < 20 ? b64[(v >> 6) & 63] : '=';
        *o++ = i + 2 < 20 ? b64[v & 63] : '=';
    }
    out[28] = '\0';
}

/* ---- 3. server ------------------------------------------------------------------------- */

struct ws_handoff {
    struct ws_handoff *next;
    MHD_socket fd;
    struct MHD_UpgradeResponseHandle *urh;
    bool authed;
    char key_id[DC_AUTH_KEY_ID_LEN];
    char client[DC_API_ADDR_LEN];
    size_t n_extra;
    uint8_t extra[];
};

struct ws_sock {
    uv_poll_t poll;
    struct dc_ws *srv;
    struct ws_sock *prev, *next;
    MHD_socket fd;
    struct MHD_UpgradeResponseHandle *urh;
    struct dc_ws_conn *conn;
    uint64_t last_ping_ms;
    uint64_t linger_until_ms; /* lingering close: discard input until EOF or this time */
    uint64_t close_seen_ms;   /* when the timer first saw our close frame sent */
    bool lingering;
    bool closing;
};

struct dc_ws {
    struct MHD_Daemon *mhd;
    uint16_t port;
    struct dc_rpc_backend backend;
    struct dc_ws_shared sh;
    struct dc_rpc_mailbox mb;
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t timer;
    uv_thread_t thread;
    pthread_mutex_t mu; /* guards handoffs and 'closed' (MHD thread <-> loop thread) */
    struct ws_handoff *handoffs;
    bool closed;          /* under mu: no more handoffs accepted */
    atomic_bool stopping; /* set by dc_ws_free, read by the loop thread */
    bool loop_done;       /* loop thread: everything closed, loop may end */
    struct ws_sock *socks;
    size_t n_socks;
};

static void sock_update(struct ws_sock *s);
static void on_poll(uv_poll_t *h, int status, int events);
static void sock_linger(struct ws_sock *s);
static void maybe_finish(struct dc_ws *srv);

static void sock_closed(uv_handle_t *h)
{
    struct ws_sock *s = h->data;
    struct dc_ws *srv = s->srv;

    dc_ws_conn_free(s->conn);
    MHD_upgrade_action(s->urh, MHD_UPGRADE_ACTION_CLOSE);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        srv->socks = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    srv->n_socks--;
    dc_free(s);
    maybe_finish(srv);
}

static void sock_close(struct ws_sock *s)
{
    if (s->closing)
        return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->poll, sock_closed);
}

/*
 * Lingering close: our last bytes (a close frame) are out; half-close, then read and discard
 * until the client closes or 2 s pass. Closing at once with unread input (the rest of an
 * oversized message) would send a TCP reset that can destroy the close frame in flight.
 */
static void sock_linger(struct ws_sock *s)
{
    if (s->lingering || s->closing)
        return;
    s->lingering = true;
    s->linger_until_ms = dc_mono_ms() + 2000;
    (void)shutdown(s->fd, SHUT_WR);
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
}

/* Writes what the conn has for the peer; returns false when the socket failed. */
static bool sock_write(struct ws_sock *s)
{
    const uint8_t *data;
    size_t len;

    for (;;) {
        dc_ws_conn_output(s->conn, &data, &len);
        if (len == 0)
            return true;
        ssize_t n = send(s->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0)
            return false;
        dc_ws_conn_consume(s->conn, (size_t)n);
    }
}

static void sock_update(struct ws_sock *s)
{
    const uint8_t *data;
    size_t len;
    int events = 0;

    if (s->closing || s->lingering)
        return;
    if (!sock_write(s)) {
        sock_close(s);
        return;
    }
    if (dc_ws_conn_finished(s->conn)) {
        sock_linger(s);
        return;
    }
    dc_ws_conn_output(s->conn, &data, &len);
    if (len > 0)
        events |= UV_WRITABLE;
    if (dc_ws_conn_want_read(s->conn))
        events |= UV_READABLE;
    if (events == 0) {
        sock_close(s);
        return;
    }
    uv_poll_start(&s->poll, events, on_poll);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct ws_sock *s = h->data;
    uint8_t buf[16384];

    if (status < 0) {
        sock_close(s);
        return;
    }
    if (s->lingering) {
        for (;;) {
            ssize_t n = recv(s->fd, buf, sizeof(buf), 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n <= 0) {
                sock_close(s);
                return;
            }
        }
    }
    if (events & UV_READABLE) {
        for (;;) {
            ssize_t n = recv(s->fd, buf, sizeof(buf), 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            if (n <= 0) {
                sock_close(s); /* the peer is gone */
                return;
            }
            if (dc_ws_conn_feed(s->conn, buf, (size_t)n) < 0) {
                /* Protocol broken: send what we have (a close frame), then linger. */
                if (sock_write(s))
                    sock_linger(s);
                else
                    sock_close(s);
                return;
            }
            if ((size_t)n < sizeof(buf))
                break;
        }
    }
    sock_update(s);
}

static void maybe_finish(struct dc_ws *srv)
{
    if (srv->stopping && srv->n_socks == 0 && srv->sh.n_calls == 0 && !srv->loop_done) {
        srv->loop_done = true;
        uv_close((uv_handle_t *)&srv->async, NULL);
        uv_close((uv_handle_t *)&srv->timer, NULL);
    }
}

static void adopt(struct dc_ws *srv, struct ws_handoff *ho)
{
    struct ws_sock *s = dc_calloc(1, sizeof(*s));
    int fl;

    if (s == NULL || dc_ws_conn_new(&srv->sh, ho->authed, &s->conn) < 0 ||
        uv_poll_init_socket(&srv->loop, &s->poll, ho->fd) < 0) {
        if (s != NULL)
            dc_ws_conn_free(s->conn);
        dc_free(s);
        MHD_upgrade_action(ho->urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    dc_ws_conn_set_identity(s->conn, ho->key_id, ho->client);
    fl = fcntl(ho->fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(ho->fd, F_SETFL, fl | O_NONBLOCK);
    s->poll.data = s;
    s->srv = srv;
    s->fd = ho->fd;
    s->urh = ho->urh;
    s->last_ping_ms = dc_mono_ms();
    s->next = srv->socks;
    if (srv->socks != NULL)
        srv->socks->prev = s;
    srv->socks = s;
    srv->n_socks++;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
    if (ho->n_extra > 0 && dc_ws_conn_feed(s->conn, ho->extra, ho->n_extra) < 0) {
        (void)sock_write(s);
        sock_close(s);
        return;
    }
    sock_update(s);
}

static void on_async(uv_async_t *h)
{
    struct dc_ws *srv = h->data;
    struct ws_handoff *ho, *next;
    struct dc_rpc_event *ev, *evn;
    struct ws_sock *s, *sn;

    pthread_mutex_lock(&srv->mu);
    ho = srv->handoffs;
    srv->handoffs = NULL;
    pthread_mutex_unlock(&srv->mu);
    for (; ho != NULL; ho = next) {
        next = ho->next;
        if (srv->stopping)
            MHD_upgrade_action(ho->urh, MHD_UPGRADE_ACTION_CLOSE);
        else
            adopt(srv, ho);
        dc_free(ho);
    }
    for (ev = dc_rpc_mailbox_take(&srv->mb); ev != NULL; ev = evn) {
        evn = ev->next;
        dc_ws_shared_event(&srv->sh, ev);
    }
    /* Output may have grown on any socket: flush them all (cheap: a few sockets at most have
     * pending output, the rest return at once). */
    for (s = srv->socks; s != NULL; s = sn) {
        sn = s->next;
        if (srv->stopping && !s->closing)
            dc_ws_conn_close(s->conn, WSLAY_CODE_GOING_AWAY, "server shutting down");
        sock_update(s);
        if (srv->stopping && !s->closing)
            sock_close(s); /* no waiting for the peer's close frame on shutdown */
    }
    maybe_finish(srv);
}

static void on_timer(uv_timer_t *h)
{
    struct dc_ws *srv = h->data;
    uint64_t now = dc_mono_ms();

    for (struct ws_sock *s = srv->socks, *sn; s != NULL; s = sn) {
        sn = s->next;
        if (s->closing)
            continue;
        if (s->lingering) {
            if (now >= s->linger_until_ms)
                sock_close(s);
            continue;
        }
        if (dc_ws_conn_close_sent(s->conn)) {
            /* The client has 5 s to answer our close frame. */
            if (s->close_seen_ms == 0)
                s->close_seen_ms = now;
            else if (now - s->close_seen_ms >= 5000)
                sock_close(s);
            continue;
        }
        if (!dc_ws_conn_authed(s->conn) &&
            now - dc_ws_conn_created_ms(s->conn) > DC_WS_AUTH_TIMEOUT_MS) {
            dc_ws_conn_close(s->conn, WSLAY_CODE_POLICY_VIOLATION, "authentication timeout");
        } else if (now - s->last_ping_ms >= 30000) {
            s->last_ping_ms = now;
            dc_ws_conn_ping(s->conn);
        }
        sock_update(s);
    }
    maybe_finish(srv);
}

static void loop_thread(void *arg)
{
    struct dc_ws *srv = arg;

    uv_run(&srv->loop, UV_RUN_DEFAULT);
}

/* MHD's thread: queue the socket for the loop thread. */
static void on_upgrade(void *cls, struct MHD_Connection *conn, void *req_cls, const char *extra,
                       size_t n_extra, MHD_socket fd, struct MHD_UpgradeResponseHandle *urh)
{
    struct dc_ws *srv = cls;
    struct ws_handoff *ho = dc_malloc(sizeof(*ho) + n_extra);
    const union MHD_ConnectionInfo *ci;
    const char *auth;

    if (ho == NULL) {
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    ho->fd = fd;
    ho->urh = urh;
    ho->authed = req_cls == NULL; /* the access handler leaves a mark when auth is pending */
    /* The rate limit's key: the id of the key the upgrade carried (checked by the access
     * handler), else the client's address. */
    auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!ho->authed || dc_auth_check(srv->backend.auth, auth, ho->key_id) < 0)
        snprintf(ho->key_id, sizeof(ho->key_id), "-");
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    dc_api_client_addr(ci != NULL ? ci->client_addr : NULL, ho->client);
    ho->n_extra = n_extra;
    if (n_extra > 0)
        memcpy(ho->extra, extra, n_extra);
    pthread_mutex_lock(&srv->mu);
    if (srv->closed) {
        pthread_mutex_unlock(&srv->mu);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        dc_free(ho);
        return;
    }
    ho->next = srv->handoffs;
    srv->handoffs = ho;
    pthread_mutex_unlock(&srv->mu);
    uv_async_send(&srv->async);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *msg,
                             const char *hname, const char *hval)
{
    char body[384];
    struct MHD_Response *r;
    enum MHD_Result ret;
    int n;

    n = snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\",\"type\":\"%s\"}}\n", msg,
                 status == 401 ? "authentication_error" : "invalid_request_error");
    r = MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (hname != NULL)
        MHD_add_response_header(r, hname, hval);
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* True when the comma-separated header value holds 'token' (case-insensitive). */
static bool has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);

    if (value == NULL)
        return false;
    for (const char *p = value; *p != '\0';) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e != '\0' && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = e;
    }
    return false;
}

static char auth_pending_mark;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    struct dc_ws *srv = cls;
    const char *key, *auth, *v;
    struct MHD_Response *r;
    enum MHD_Result ret;
    char accept[29];

    DC_UNUSED(version);
    DC_UNUSED(upload_data);
    if (*upload_size != 0) {
        *upload_size = 0; /* a body on a GET upgrade: ignored */
        return MHD_YES;
    }
    if (strcmp(url, "/ws/chat") != 0)
        return reply(conn, MHD_HTTP_NOT_FOUND, "not found: the WebSocket endpoint is /ws/chat",
                     NULL, NULL);
    if (strcmp(method, "GET") != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", "Allow", "GET");
    if (!has_token(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade"), "websocket") ||
        !has_token(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Connection"), "upgrade"))
        return reply(conn, MHD_HTTP_UPGRADE_REQUIRED, "a WebSocket upgrade is required", "Upgrade",
                     "websocket");
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    if (v == NULL || strcmp(v, "13") != 0)
        return reply(conn, MHD_HTTP_UPGRADE_REQUIRED, "unsupported WebSocket version",
                     "Sec-WebSocket-Version", "13");
    key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    if (key == NULL || strlen(key) != 24)
        return reply(conn, MHD_HTTP_BAD_REQUEST, "missing or malformed Sec-WebSocket-Key", NULL,
                     NULL);
    auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (auth != NULL && dc_auth_check(srv->backend.auth, auth, NULL) < 0)
        return reply(conn, MHD_HTTP_UNAUTHORIZED, "invalid API key", "WWW-Authenticate", "Bearer");
    if (auth == NULL && dc_auth_enabled(srv->backend.auth))
        *req_cls = &auth_pending_mark;
    dc_ws_accept_key(key, accept);
    r = MHD_create_response_for_upgrade(on_upgrade, srv);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    ret = MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
    MHD_destroy_response(r);
    return ret;
}

static int parse_bind(const char *bind, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(bind, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(bind, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return DC_EINVAL;
}

int dc_ws_new(const struct dc_rpc_config *cfg, struct dc_ws **out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    const union MHD_DaemonInfo *info;
    struct dc_ws *srv;
    char why[256];
    int rc;

    *out = NULL;
    if (parse_bind(cfg->bind, cfg->port, &ss) < 0) {
        snprintf(err, errlen, "WebSocket: cannot parse bind address '%s'", cfg->bind);
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
    srv->sh.backend = &srv->backend;
    srv->sh.mb = &srv->mb;
    srv->sh.max_message = cfg->max_message_bytes != 0 ? cfg->max_message_bytes : DC_WS_MAX_MESSAGE;
    rc = uv_loop_init(&srv->loop);
    if (rc < 0)
        goto err_backend;
    srv->backend.loop = &srv->loop;
    if ((rc = uv_async_init(&srv->loop, &srv->async, on_async)) < 0 ||
        (rc = uv_timer_init(&srv->loop, &srv->timer)) < 0)
        goto err_loop;
    srv->async.data = srv->timer.data = srv;
    rc = dc_rpc_mailbox_init(&srv->mb, &srv->async);
    if (rc < 0)
        goto err_loop;
    rc = -pthread_mutex_init(&srv->mu, NULL);
    if (rc < 0)
        goto err_mailbox;
    uv_timer_start(&srv->timer, on_timer, 1000, 1000);
    srv->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_UPGRADE | MHD_USE_ITC |
                                    (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                                cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR,
                                (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                                (unsigned)(cfg->max_connections != 0 ? cfg->max_connections : 1024),
                                MHD_OPTION_CONNECTION_TIMEOUT, 15u,
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_END);
    if (srv->mhd == NULL) {
        rc = errno != 0 ? -errno : DC_EINVAL;
        snprintf(err, errlen, "WebSocket: cannot listen on %s port %u: %s", cfg->bind,
                 (unsigned)cfg->port, dc_strerror(rc));
        goto err_mutex;
    }
    info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info != NULL ? info->port : cfg->port;
    rc = uv_thread_create(&srv->thread, loop_thread, srv);
    if (rc < 0) {
        MHD_stop_daemon(srv->mhd);
        goto err_mutex;
    }
    *out = srv;
    return 0;

err_mutex:
    pthread_mutex_destroy(&srv->mu);
err_mailbox:
    dc_rpc_mailbox_cleanup(&srv->mb);
err_loop:
    uv_close((uv_handle_t *)&srv->async, NULL);
    uv_close((uv_handle_t *)&srv->timer, NULL);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv->loop);
err_backend:
    dc_rpc_backend_cleanup(&srv->backend);
err_free:
    dc_free(srv);
    return rc;
}

uint16_t dc_ws_port(const struct dc_ws *ws)
{
    return ws->port;
}

void dc_ws_free(struct dc_ws *srv)
{
    struct ws_handoff *ho, *next;
    MHD_socket lfd;

    if (srv == NULL)
        return;
    /* No new upgrades reach the loop; then the loop closes every socket, waits for the engine
     * to confirm each cancelled call, and ends. */
    lfd = MHD_quiesce_daemon(srv->mhd);
    pthread_mutex_lock(&srv->mu);
    srv->closed = true;
    ho = srv->handoffs;
    srv->handoffs = NULL;
    pthread_mutex_unlock(&srv->mu);
    for (; ho != NULL; ho = next) {
        next = ho->next;
        MHD_upgrade_action(ho->urh, MHD_UPGRADE_ACTION_CLOSE);
        dc_free(ho);
    }
    atomic_store(&srv->stopping, true);
    uv_async_send(&srv->async);
    uv_thread_join(&srv->thread);
    MHD_stop_daemon(srv->mhd);
    /* A quiesced listening socket is ours to close, after MHD's threads are gone. */
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    uv_loop_close(&srv->loop);
    pthread_mutex_destroy(&srv->mu);
    dc_rpc_mailbox_cleanup(&srv->mb);
    dc_rpc_backend_cleanup(&srv->backend);
    dc_free(srv);
}

/* SPDX-License-Identifier: MIT */
/*
 * rpc_test.c - the WebSocket and gRPC protocol cores without sockets or an engine: the
 * Sec-WebSocket-Accept vector of RFC 6455, UTF-8 validation, grpc-timeout parsing and
 * grpc-message encoding; WebSocket frames through dc_ws_conn (auth by message, errors that keep
 * the socket open, close codes 1003/1007/1008/1009); gRPC calls from a real nghttp2 client
 * session through dc_grpc_conn (status codes, Trailers-Only errors, unary replies, deadlines);
 * the rate limit both share with REST (one budget per key, RESOURCE_EXHAUSTED and the WebSocket
 * error with retry_after_ms); and allocation-failure loops over both constructors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "api/grpc_int.h"
#include "api/ws_int.h"
#include "democritus.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

static const char *const keys[] = {"unit-key"};

struct fixture {
    struct dc_rpc_backend backend;
    struct dc_rpc_mailbox mb;
};

static void fixture_init(struct fixture *f)
{
    struct dc_rpc_config cfg = {.keys = keys, .n_keys = 1, .default_temperature = 0.7};
    char err[128];

    assert_int_equal(dc_rpc_backend_init(&f->backend, &cfg, err, sizeof(err)), 0);
    assert_int_equal(dc_rpc_mailbox_init(&f->mb, NULL), 0);
}

static void fixture_cleanup(struct fixture *f)
{
    dc_rpc_mailbox_cleanup(&f->mb);
    dc_rpc_backend_cleanup(&f->backend);
}

/* ---- pure helpers ---- */

static void test_accept_key(void **state)
{
    char out[29];

    (void)state;
    dc_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out); /* RFC 6455 section 1.3 */
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_utf8(void **state)
{
    static const struct {
        const char *s;
        bool ok;
    } v[] = {
        {"", true},
        {"plain", true},
        {"\xc3\xa9t\xc3\xa9", true},
        {"\xe2\x82\xac", true},
        {"\xf0\x9f\x98\x80", true},
        {"\xff", false},
        {"\xc3", false},
        {"\xc0\xaf", false},         /* overlong */
        {"\xed\xa0\x80", false},     /* surrogate */
        {"\xf4\x90\x80\x80", false}, /* > U+10FFFF */
        {"\xe0\x80\xaf", false},     /* overlong */
    };
    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(v); i++)
        assert_int_equal(dc_rpc_utf8_valid((const uint8_t *)v[i].s, strlen(v[i].s)), v[i].ok);
}

static void test_timeout_and_message(void **state)
{
    uint64_t ms;
    char out[64];

    (void)state;
    assert_int_equal(dc_grpc_timeout_parse("100m", &ms), 0);
    assert_int_equal(ms, 100);
    assert_int_equal(dc_grpc_timeout_parse("5S", &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(dc_grpc_timeout_parse("2H", &ms), 0);
    assert_int_equal(ms, 7200000);
    assert_int_equal(dc_grpc_timeout_parse("1500u", &ms), 0);
    assert_int_equal(ms, 2);
    assert_int_equal(dc_grpc_timeout_parse("1n", &ms), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(dc_grpc_timeout_parse("123456789S", &ms), DC_EINVAL); /* 9 digits */
    assert_int_equal(dc_grpc_timeout_parse("S", &ms), DC_EINVAL);
    assert_int_equal(dc_grpc_timeout_parse("10", &ms), DC_EINVAL);
    assert_int_equal(dc_grpc_timeout_parse("10x", &ms), DC_EINVAL);
    assert_int_equal(dc_grpc_timeout_parse("10mm", &ms), DC_EINVAL);
    dc_grpc_percent_encode("a 100% \xc3\xa9\n", out, sizeof(out));
    assert_string_equal(out, "a 100%25 %C3%A9%0A");
    dc_grpc_percent_encode("%%%%", out, 7);
    assert_string_equal(out, "%25%25");
}

/* ---- WebSocket core ---- */

static size_t frame(uint8_t *out, uint8_t opcode, const void *payload, size_t n)
{
    static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    size_t o = 0;

    out[o++] = 0x80 | opcode;
    if (n < 126) {
        out[o++] = 0x80 | (uint8_t)n;
    } else if (n < 65536) {
        out[o++] = 0x80 | 126;
        out[o++] = (uint8_t)(n >> 8);
        out[o++] = (uint8_t)n;
    } else {
        out[o++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[o++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(out + o, mask, 4);
    o += 4;
    for (size_t i = 0; i < n; i++)
        out[o + i] = ((const uint8_t *)payload)[i] ^ mask[i % 4];
    return o + n;
}

/* Parses the server's unmasked frames in 'out' into text (messages joined by '\n') and the
 * close code (0 when none). Consumes the output. */
static void server_frames(struct dc_ws_conn *c, char *text, size_t cap, unsigned *close_code)
{
    const uint8_t *d;
    size_t len, o = 0, t = 0;

    dc_ws_conn_output(c, &d, &len);
    *close_code = 0;
    text[0] = '\0';
    while (o + 2 <= len) {
        uint8_t op = d[o] & 0x0f;
        size_t n = d[o + 1] & 0x7f, h = 2;
        if (n == 126) {
            n = (size_t)d[o + 2] << 8 | d[o + 3];
            h = 4;
        }
        assert_true(n != 127);
        assert_true(o + h + n <= len);
        if (op == 1 && t + n + 2 < cap) {
            memcpy(text + t, d + o + h, n);
            t += n;
            text[t++] = '\n';
            text[t] = '\0';
        } else if (op == 8 && n >= 2) {
            *close_code = (unsigned)d[o + h] << 8 | d[o + h + 1];
        }
        o += h + n;
    }
    dc_ws_conn_consume(c, len);
}

static void ws_send(struct dc_ws_conn *c, uint8_t opcode, const char *msg, size_t n)
{
    static uint8_t buf[(64u << 10) + 16];

    assert_true(n <= 64u << 10);
    assert_int_equal(dc_ws_conn_feed(c, buf, frame(buf, opcode, msg, n)), 0);
}

#define WS_TEXT(c, s) ws_send(c, 1, s, strlen(s))

static void test_ws_messages(void **state)
{
    struct fixture f;
    struct dc_ws_shared sh = {0};
    struct dc_ws_conn *c;
    char text[4096];
    unsigned code;

    (void)state;
    fixture_init(&f);
    sh.backend = &f.backend;
    sh.mb = &f.mb;
    sh.max_message = 1000;

    /* Auth by first message, then errors that leave the socket open. */
    assert_int_equal(dc_ws_conn_new(&sh, false, &c), 0);
    WS_TEXT(c, "{\"type\":\"auth\",\"key\":\"unit-key\"}");
    server_frames(c, text, sizeof(text), &code);
    assert_string_equal(text, "{\"type\":\"auth_ok\"}\n");
    WS_TEXT(c, "{\"type\":");
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "\"type\":\"error\",\"id\":null,\"message\":\"invalid JSON"));
    assert_int_equal(code, 0);
    WS_TEXT(c, "{\"type\":\"chat\",\"id\":\"q1\",\"messages\":[{\"role\":\"user\",\"content\":"
               "\"hi\"}],\"temperature\":9}");
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "\"id\":\"q1\""));
    assert_non_null(strstr(text, "temperature"));
    WS_TEXT(c, "{\"type\":\"chat\",\"id\":\"q2\",\"messages\":[{\"role\":\"user\",\"content\":"
               "\"hi\"}]}");
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "No model is loaded"));
    assert_non_null(strstr(text, "\"code\":\"model_not_loaded\""));
    /* A PeerId as the model, without remote hooks: refused as REST refuses it. */
    WS_TEXT(c, "{\"type\":\"chat\",\"id\":\"q3\",\"model\":"
               "\"12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA\",\"messages\":[{\"role\":"
               "\"user\",\"content\":\"hi\"}]}");
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "\"id\":\"q3\""));
    assert_non_null(strstr(text, "p2p_unavailable"));
    WS_TEXT(c, "{\"type\":\"cancel\",\"id\":\"nope\"}");
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "\"id\":\"nope\""));
    WS_TEXT(c, "{\"type\":\"chat\",\"id\":7}");
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "'id' must be"));
    assert_int_equal(code, 0);
    assert_true(dc_ws_conn_want_read(c));
    /* The client closes: the server answers with the same code and the conn is finished. */
    {
        uint8_t cl[2] = {0x03, 0xe8};
        ws_send(c, 8, (const char *)cl, 2);
    }
    server_frames(c, text, sizeof(text), &code);
    assert_int_equal(code, 1000);
    assert_true(dc_ws_conn_finished(c));
    dc_ws_conn_free(c);

    /* Without auth, anything but auth is refused with 1008. */
    assert_int_equal(dc_ws_conn_new(&sh, false, &c), 0);
    WS_TEXT(c, "{\"type\":\"chat\",\"id\":\"x\",\"messages\":[]}");
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "authentication required"));
    assert_int_equal(code, 1008);
    dc_ws_conn_free(c);

    /* A wrong key: 1008. */
    assert_int_equal(dc_ws_conn_new(&sh, false, &c), 0);
    WS_TEXT(c, "{\"type\":\"auth\",\"key\":\"nope\"}");
    server_frames(c, text, sizeof(text), &code);
    assert_int_equal(code, 1008);
    dc_ws_conn_free(c);

    /* Invalid UTF-8: 1007; binary: 1003; too big: 1009. */
    assert_int_equal(dc_ws_conn_new(&sh, true, &c), 0);
    ws_send(c, 1, "{\xff}", 3);
    server_frames(c, text, sizeof(text), &code);
    assert_int_equal(code, 1007);
    dc_ws_conn_free(c);
    assert_int_equal(dc_ws_conn_new(&sh, true, &c), 0);
    ws_send(c, 2, "ab", 2);
    server_frames(c, text, sizeof(text), &code);
    assert_int_equal(code, 1003);
    dc_ws_conn_free(c);
    assert_int_equal(dc_ws_conn_new(&sh, true, &c), 0);
    {
        static char big[2000];
        memset(big, 'a', sizeof(big));
        uint8_t *buf = dc_malloc(sizeof(big) + 16);
        assert_non_null(buf);
        (void)!dc_ws_conn_feed(c, buf, frame(buf, 1, big, sizeof(big)));
        dc_free(buf);
    }
    server_frames(c, text, sizeof(text), &code);
    assert_int_equal(code, 1009);
    dc_ws_conn_free(c);

    /* An unmasked client frame is a protocol error (1002). */
    assert_int_equal(dc_ws_conn_new(&sh, true, &c), 0);
    {
        const uint8_t raw[] = {0x81, 0x02, '{', '}'};
        (void)!dc_ws_conn_feed(c, raw, sizeof(raw));
    }
    server_frames(c, text, sizeof(text), &code);
    assert_int_equal(code, 1002);
    dc_ws_conn_free(c);

    assert_int_equal(sh.n_calls, 0);
    fixture_cleanup(&f);
}

/* ---- gRPC core, driven by an nghttp2 client session ---- */

struct gclient {
    nghttp2_session *s;
    struct dc_grpc_conn *c;
    int http_status;
    int grpc_status; /* -1 until seen */
    char grpc_message[256];
    uint8_t body[4096];
    size_t body_len;
    bool closed;
    const uint8_t *req;
    size_t req_len;
};

static ssize_t gc_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct gclient *g = ud;

    (void)s;
    (void)flags;
    assert_int_equal(dc_grpc_conn_feed(g->c, data, len), 0);
    return (ssize_t)len;
}

static int gc_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    struct gclient *g = ud;
    char v[256];

    (void)s;
    (void)fr;
    (void)flags;
    snprintf(v, sizeof(v), "%.*s", (int)vl, (const char *)value);
    if (nl == 7 && memcmp(name, ":status", 7) == 0)
        g->http_status = atoi(v);
    else if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
        g->grpc_status = atoi(v);
    else if (nl == 12 && memcmp(name, "grpc-message", 12) == 0)
        snprintf(g->grpc_message, sizeof(g->grpc_message), "%s", v);
    return 0;
}

static int gc_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t n,
                   void *ud)
{
    struct gclient *g = ud;

    (void)s;
    (void)flags;
    (void)id;
    assert_true(g->body_len + n <= sizeof(g->body));
    memcpy(g->body + g->body_len, d, n);
    g->body_len += n;
    return 0;
}

static int gc_close(nghttp2_session *s, int32_t id, uint32_t err, void *ud)
{
    struct gclient *g = ud;

    (void)s;
    (void)id;
    (void)err;
    g->closed = true;
    return 0;
}

static ssize_t gc_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    struct gclient *g = ud;
    size_t n = g->req_len < len ? g->req_len : len;

    (void)s;
    (void)id;
    (void)src;
    memcpy(buf, g->req, n);
    g->req += n;
    g->req_len -= n;
    if (g->req_len == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Moves bytes both ways until neither side has anything to say. */
static void gc_pump(struct gclient *g)
{
    for (int i = 0; i < 100; i++) {
        const uint8_t *d;
        size_t len;

        assert_int_equal(nghttp2_session_send(g->s), 0);
        dc_grpc_conn_output(g->c, &d, &len);
        if (len == 0 && !nghttp2_session_want_write(g->s))
            return;
        if (len > 0) {
            assert_true(nghttp2_session_mem_recv(g->s, d, len) == (ssize_t)len);
            dc_grpc_conn_consume(g->c, len);
        }
    }
    fail_msg("gRPC exchange did not settle");
}

/* One call: 'path', optional 'auth' and 'timeout', request body 'body' (raw: length prefix
 * included). */
static void gc_call_raw(struct gclient *g, const char *path, const char *auth, const char *timeout,
                        const uint8_t *body, size_t len)
{
    nghttp2_nv h[8];
    size_t n = 0;
    nghttp2_data_provider prd = {.read_callback = gc_read};

#define NV(a, b)                                                                                   \
    (nghttp2_nv){(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), NGHTTP2_NV_FLAG_NONE}
    h[n++] = NV(":method", "POST");
    h[n++] = NV(":scheme", "http");
    h[n++] = NV(":path", path);
    h[n++] = NV(":authority", "localhost");
    h[n++] = NV("content-type", "application/grpc");
    h[n++] = NV("te", "trailers");
    if (auth != NULL)
        h[n++] = NV("authorization", auth);
    if (timeout != NULL)
        h[n++] = NV("grpc-timeout", timeout);
#undef NV
    g->req = body;
    g->req_len = len;
    g->http_status = 0;
    g->grpc_status = -1;
    g->grpc_message[0] = '\0';
    g->body_len = 0;
    g->closed = false;
    assert_true(nghttp2_submit_request(g->s, NULL, h, n, &prd, NULL) > 0);
    gc_pump(g);
}

/* A call with one protobuf message. */
static void gc_call(struct gclient *g, const char *path, const char *auth, const char *timeout,
                    const ProtobufCMessage *msg)
{
    static uint8_t req[1024];
    size_t len = protobuf_c_message_get_packed_size(msg);

    assert_true(len + 5 <= sizeof(req));
    req[0] = 0;
    req[1] = (uint8_t)(len >> 24);
    req[2] = (uint8_t)(len >> 16);
    req[3] = (uint8_t)(len >> 8);
    req[4] = (uint8_t)len;
    protobuf_c_message_pack(msg, req + 5);
    gc_call_raw(g, path, auth, timeout, req, len + 5);
}

static void test_grpc_calls(void **state)
{
    struct fixture f;
    struct dc_grpc_shared sh = {0};
    struct gclient g = {0};
    nghttp2_session_callbacks *cbs;
    Democritus__V1__HealthRequest hq = DEMOCRITUS__V1__HEALTH_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckRequest cq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Democritus__V1__ChatRequest chat = DEMOCRITUS__V1__CHAT_REQUEST__INIT;
    Democritus__V1__ChatMessage m = DEMOCRITUS__V1__CHAT_MESSAGE__INIT;
    Democritus__V1__ChatMessage *mp = &m;

    (void)state;
    fixture_init(&f);
    sh.backend = &f.backend;
    sh.mb = &f.mb;
    sh.max_message = 64;
    assert_int_equal(dc_grpc_conn_new(&sh, &g.c), 0);
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, gc_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, gc_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, gc_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, gc_close);
    assert_int_equal(nghttp2_session_client_new(&g.s, cbs, &g), 0);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(g.s, NGHTTP2_FLAG_NONE, NULL, 0), 0);

    /* Health with the key: 200, one message, grpc-status 0. */
    gc_call(&g, "/democritus.v1.Democritus/Health", "Bearer unit-key", NULL, &hq.base);
    assert_true(g.closed);
    assert_int_equal(g.http_status, 200);
    assert_int_equal(g.grpc_status, 0);
    assert_true(g.body_len > 5);
    {
        Democritus__V1__HealthResponse *r =
            democritus__v1__health_response__unpack(NULL, g.body_len - 5, g.body + 5);
        assert_non_null(r);
        assert_string_equal(r->status, "no_model");
        assert_false(r->model_loaded);
        democritus__v1__health_response__free_unpacked(r, NULL);
    }
    /* Without or with a wrong key: UNAUTHENTICATED, Trailers-Only (no body). */
    gc_call(&g, "/democritus.v1.Democritus/ListPeers", NULL, NULL, &hq.base);
    assert_int_equal(g.grpc_status, DC_GRPC_UNAUTHENTICATED);
    assert_int_equal(g.body_len, 0);
    gc_call(&g, "/democritus.v1.Democritus/GetReputation", "Bearer nope", NULL, &hq.base);
    assert_int_equal(g.grpc_status, DC_GRPC_UNAUTHENTICATED);
    /* The standard health check needs no key; without a model it is NOT_SERVING. */
    gc_call(&g, "/grpc.health.v1.Health/Check", NULL, NULL, &cq.base);
    assert_int_equal(g.grpc_status, 0);
    {
        Grpc__Health__V1__HealthCheckResponse *r =
            grpc__health__v1__health_check_response__unpack(NULL, g.body_len - 5, g.body + 5);
        assert_non_null(r);
        assert_int_equal(r->status,
                         GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
        grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    }
    cq.service = "other";
    gc_call(&g, "/grpc.health.v1.Health/Check", NULL, NULL, &cq.base);
    assert_int_equal(g.grpc_status, DC_GRPC_NOT_FOUND);
    /* Unknown method; Watch. */
    gc_call(&g, "/democritus.v1.Democritus/Nope", "Bearer unit-key", NULL, &hq.base);
    assert_int_equal(g.grpc_status, DC_GRPC_UNIMPLEMENTED);
    gc_call(&g, "/grpc.health.v1.Health/Watch", NULL, NULL, &cq.base);
    assert_int_equal(g.grpc_status, DC_GRPC_UNIMPLEMENTED);
    /* Chat: invalid parameters, then a valid one (no model: UNAVAILABLE). */
    chat.n_messages = 1;
    chat.messages = &mp;
    m.role = "robot";
    m.content = "hi";
    gc_call(&g, "/democritus.v1.Democritus/Chat", "Bearer unit-key", "1S", &chat.base);
    assert_int_equal(g.grpc_status, DC_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(g.grpc_message, "role"));
    m.role = "user";
    chat.temperature_opt_case = DEMOCRITUS__V1__CHAT_REQUEST__TEMPERATURE_OPT_TEMPERATURE;
    chat.temperature = 3;
    gc_call(&g, "/democritus.v1.Democritus/Chat", "Bearer unit-key", NULL, &chat.base);
    assert_int_equal(g.grpc_status, DC_GRPC_INVALID_ARGUMENT);
    chat.temperature = 0;
    gc_call(&g, "/democritus.v1.Democritus/Chat", "Bearer unit-key", NULL, &chat.base);
    assert_int_equal(g.grpc_status, DC_GRPC_UNAVAILABLE);
    /* Over the message limit (64 bytes here): RESOURCE_EXHAUSTED. */
    {
        static char big[200];
        memset(big, 'a', sizeof(big) - 1);
        m.content = big;
        gc_call(&g, "/democritus.v1.Democritus/Chat", "Bearer unit-key", NULL, &chat.base);
        assert_int_equal(g.grpc_status, DC_GRPC_RESOURCE_EXHAUSTED);
    }
    /* Garbage protobuf (an unterminated varint): INVALID_ARGUMENT. */
    gc_call_raw(&g, "/democritus.v1.Democritus/Health", "Bearer unit-key", NULL,
                (const uint8_t *)"\xff\xff\xff", 3);
    assert_int_equal(g.grpc_status, DC_GRPC_INVALID_ARGUMENT);
    /* Two messages on a unary call: INVALID_ARGUMENT. */
    gc_call_raw(&g, "/democritus.v1.Democritus/Health", "Bearer unit-key", NULL,
                (const uint8_t *)"\0\0\0\0\0\0\0\0\0", 10);
    assert_int_equal(g.grpc_status, DC_GRPC_INVALID_ARGUMENT);
    /* A deadline that passes before the reply: DEADLINE_EXCEEDED after expire(). Health
     * answers at once, so hold the request open (headers only) and expire it. */
    {
        nghttp2_nv h[] = {
            {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
            {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
            {(uint8_t *)":path", (uint8_t *)"/democritus.v1.Democritus/Health", 5, 32, 0},
            {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
            {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
            {(uint8_t *)"authorization", (uint8_t *)"Bearer unit-key", 13, 15, 0},
            {(uint8_t *)"grpc-timeout", (uint8_t *)"1m", 12, 2, 0},
        };
        g.grpc_status = -1;
        g.closed = false;
        assert_true(
            nghttp2_submit_headers(g.s, NGHTTP2_FLAG_NONE, -1, NULL, h, DC_ARRAY_LEN(h), NULL) > 0);
        gc_pump(&g);
        assert_int_equal(g.grpc_status, -1);
        assert_true(dc_grpc_conn_next_deadline(g.c) != 0);
        dc_grpc_conn_expire(g.c, UINT64_MAX);
        gc_pump(&g);
        assert_int_equal(g.grpc_status, DC_GRPC_DEADLINE_EXCEEDED);
        assert_int_equal(dc_grpc_conn_next_deadline(g.c), 0);
    }
    assert_int_equal(sh.n_calls, 0);
    nghttp2_session_del(g.s);
    dc_grpc_conn_free(g.c);
    fixture_cleanup(&f);
}

/* ---- malformed HTTP/2: each case gets a GOAWAY or RST_STREAM, never a crash ---- */

#define H2_PREFACE                                                                                 \
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"                                                             \
    "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
#define FRAME(len, type, flags, sid) "\x00\x00" len type flags "\x00\x00\x00" sid

struct h2case {
    const char *name;
    const char *bytes;
    size_t len;
    uint8_t want; /* 7 GOAWAY or 3 RST_STREAM */
};

#define CASE(name, bytes, want)                                                                    \
    {                                                                                              \
        name, bytes, sizeof(bytes) - 1, want                                                       \
    }

/* A HEADERS block (no Huffman, literal without indexing) for POST /democritus.v1.Democritus/Health
 * minus whatever a case leaves out. */
#define LIT(n, v) "\x00" n v
static const struct h2case h2cases[] = {
    CASE("bad preface", "GET / HTTP/1.1\r\n\r\n", 7),
    CASE("DATA on stream 0", H2_PREFACE FRAME("\x00", "\x00", "\x00", "\x00") "", 7),
    CASE("HEADERS on an even stream", H2_PREFACE FRAME("\x01", "\x01", "\x05", "\x02") "\x82", 7),
    CASE("frame over SETTINGS_MAX_FRAME_SIZE", H2_PREFACE "\x00\x40\x01\x00\x00\x00\x00\x00\x01",
         7),
    CASE("WINDOW_UPDATE of 0", H2_PREFACE FRAME("\x04", "\x08", "\x00", "\x00") "\0\0\0\0", 7),
    CASE("SETTINGS of 5 bytes", H2_PREFACE FRAME("\x05", "\x04", "\x00", "\x00") "\0\0\0\0\0", 7),
    CASE("PING of 7 bytes", H2_PREFACE FRAME("\x07", "\x06", "\x00", "\x00") "\0\0\0\0\0\0\0", 7),
    CASE("HEADERS with a broken HPACK block",
         H2_PREFACE FRAME("\x02", "\x01", "\x05", "\x01") "\xff\xff", 7),
    CASE("RST_STREAM on an idle stream",
         H2_PREFACE FRAME("\x04", "\x03", "\x00", "\x05") "\0\0\0\x08", 7),
    CASE("CONTINUATION without HEADERS", H2_PREFACE FRAME("\x01", "\x09", "\x04", "\x01") "\x82",
         7),
    CASE("SETTINGS ACK with a payload",
         H2_PREFACE FRAME("\x06", "\x04", "\x01", "\x00") "\0\x01\0\0\0\0", 7),
    CASE("HEADERS without :path",
         H2_PREFACE FRAME("\x49", "\x01", "\x05", "\x01")
             LIT("\x07", ":method") "\x04POST" LIT("\x07", ":scheme") "\x04http" LIT(
                 "\x0a", ":authority") "\x01x" LIT("\x0c", "content-type") "\x10"
                                                                           "application/grpc"
                                                                           "",
         3),
    CASE("upper-case header name",
         H2_PREFACE FRAME("\x20", "\x01", "\x05", "\x01") LIT("\x07", ":method") "\x04POST" LIT(
             "\x05", "X-Bad") "\x01y" LIT("\x05", ":path") "\x01/",
         3),
    CASE("PRIORITY on itself", H2_PREFACE FRAME("\x05", "\x02", "\x00", "\x03") "\0\0\0\x03\x10",
         7),
    CASE("unknown SETTINGS value out of range (ENABLE_PUSH=2)",
         H2_PREFACE FRAME("\x06", "\x04", "\x00", "\x00") "\0\x02\0\0\0\x02", 7),
    CASE("window overflow", H2_PREFACE FRAME("\x04", "\x08", "\x00", "\x00") "\x7f\xff\xff\xff", 7),
};

static void test_grpc_bad_http2(void **state)
{
    struct fixture f;
    struct dc_grpc_shared sh = {0};

    (void)state;
    fixture_init(&f);
    sh.backend = &f.backend;
    sh.mb = &f.mb;
    sh.max_message = 1024;
    for (size_t i = 0; i < DC_ARRAY_LEN(h2cases); i++) {
        const struct h2case *k = &h2cases[i];
        struct dc_grpc_conn *c;
        const uint8_t *d;
        size_t len, o = 0;
        bool seen = false;

        assert_int_equal(dc_grpc_conn_new(&sh, &c), 0);
        (void)!dc_grpc_conn_feed(c, (const uint8_t *)k->bytes, k->len);
        dc_grpc_conn_output(c, &d, &len);
        while (o + 9 <= len) {
            size_t n = (size_t)d[o] << 16 | (size_t)d[o + 1] << 8 | d[o + 2];
            if (d[o + 3] == k->want)
                seen = true;
            o += 9 + n;
        }
        if (!seen)
            fail_msg("case '%s': no frame of type %u in the reply", k->name, k->want);
        dc_grpc_conn_free(c);
    }
    assert_int_equal(sh.n_calls, 0);
    fixture_cleanup(&f);
}

/* ---- the rate limit REST shares: one budget per key across WebSocket and gRPC ---- */

static void test_rate_limit(void **state)
{
    struct fixture f;
    struct dc_ws_shared wsh = {0};
    struct dc_grpc_shared gsh = {0};
    struct dc_api_ratelimit *rl;
    struct dc_ws_conn *c;
    struct gclient g = {0};
    nghttp2_session_callbacks *cbs;
    Democritus__V1__HealthRequest hq = DEMOCRITUS__V1__HEALTH_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckRequest cq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    char text[4096];
    unsigned code;
    const char *chat = "{\"type\":\"chat\",\"id\":\"r\",\"messages\":[{\"role\":\"user\","
                       "\"content\":\"hi\"}]}";

    (void)state;
    assert_int_equal(dc_api_ratelimit_new(0, &rl), DC_EINVAL);
    assert_int_equal(dc_api_ratelimit_new(2, &rl), 0); /* 2 a minute: one per 30 s */
    fixture_init(&f);
    f.backend.ratelimit = rl;
    wsh.backend = gsh.backend = &f.backend;
    wsh.mb = gsh.mb = &f.mb;
    wsh.max_message = gsh.max_message = 1024;

    /* WebSocket: the key's first chat passes the limit (and fails for want of a model). */
    assert_int_equal(dc_ws_conn_new(&wsh, false, &c), 0);
    dc_ws_conn_set_identity(c, NULL, "192.0.2.7");
    WS_TEXT(c, "{\"type\":\"auth\",\"key\":\"unit-key\"}");
    server_frames(c, text, sizeof(text), &code);
    WS_TEXT(c, chat);
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "No model"));

    /* gRPC: the same key's Health passes and spends the bucket's last token. */
    assert_int_equal(dc_grpc_conn_new(&gsh, &g.c), 0);
    dc_grpc_conn_set_client(g.c, "192.0.2.8");
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, gc_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, gc_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, gc_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, gc_close);
    assert_int_equal(nghttp2_session_client_new(&g.s, cbs, &g), 0);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(g.s, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    gc_call(&g, "/democritus.v1.Democritus/Health", "Bearer unit-key", NULL, &hq.base);
    assert_int_equal(g.grpc_status, 0);
    /* Now the bucket is empty for both interfaces: RESOURCE_EXHAUSTED saying when to retry. */
    gc_call(&g, "/democritus.v1.Democritus/Health", "Bearer unit-key", NULL, &hq.base);
    assert_int_equal(g.grpc_status, DC_GRPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(g.grpc_message, "retry after "));
    assert_non_null(strstr(g.grpc_message, " ms"));
    assert_int_equal(g.body_len, 0);
    /* The standard health check is never limited (like REST's /health). */
    gc_call(&g, "/grpc.health.v1.Health/Check", NULL, NULL, &cq.base);
    assert_int_equal(g.grpc_status, 0);
    /* A WebSocket chat: an error naming the limit, with retry_after_ms; the socket stays open. */
    WS_TEXT(c, chat);
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "\"type\":\"error\",\"id\":\"r\""));
    assert_non_null(strstr(text, "Rate limit of 2 requests per minute"));
    assert_non_null(strstr(text, "\"code\":\"rate_limit_exceeded\""));
    assert_non_null(strstr(text, "\"retry_after_ms\":"));
    assert_int_equal(code, 0);
    assert_true(dc_ws_conn_want_read(c));
    dc_ws_conn_free(c);

    /* Without a key (auth passed by the upgrade of a keyless server would give "-"), the
     * client's address is the key: a fresh address has a full bucket. */
    assert_int_equal(dc_ws_conn_new(&wsh, true, &c), 0);
    dc_ws_conn_set_identity(c, "-", "192.0.2.9");
    WS_TEXT(c, chat);
    server_frames(c, text, sizeof(text), &code);
    assert_null(strstr(text, "Rate limit"));
    WS_TEXT(c, chat);
    WS_TEXT(c, chat);
    server_frames(c, text, sizeof(text), &code);
    assert_non_null(strstr(text, "for this address"));
    dc_ws_conn_free(c);

    assert_int_equal(wsh.n_calls + gsh.n_calls, 0);
    nghttp2_session_del(g.s);
    dc_grpc_conn_free(g.c);
    fixture_cleanup(&f);
    dc_api_ratelimit_free(rl);
}

/* ---- allocation failures ---- */

static void test_alloc_failures(void **state)
{
    struct fixture f;
    struct dc_ws_shared wsh = {0};
    struct dc_grpc_shared gsh = {0};
    int rc;

    (void)state;
    fixture_init(&f);
    wsh.backend = gsh.backend = &f.backend;
    wsh.mb = gsh.mb = &f.mb;
    wsh.max_message = gsh.max_message = 1024;
    for (long i = 0;; i++) {
        struct dc_ws_conn *c = NULL;
        dc_alloc_fail_after(i);
        rc = dc_ws_conn_new(&wsh, true, &c);
        dc_alloc_fail_after(-1);
        if (rc == 0) {
            dc_ws_conn_free(c);
            break;
        }
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(c);
        assert_true(i < 100);
    }
    for (long i = 0;; i++) {
        struct dc_grpc_conn *c = NULL;
        dc_alloc_fail_after(i);
        rc = dc_grpc_conn_new(&gsh, &c);
        dc_alloc_fail_after(-1);
        if (rc == 0) {
            dc_grpc_conn_free(c);
            break;
        }
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(c);
        assert_true(i < 100);
    }
    fixture_cleanup(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key),          cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_timeout_and_message), cmocka_unit_test(test_ws_messages),
        cmocka_unit_test(test_grpc_calls),          cmocka_unit_test(test_grpc_bad_http2),
        cmocka_unit_test(test_rate_limit),          cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

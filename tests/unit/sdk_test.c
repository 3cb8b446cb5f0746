/* SPDX-License-Identifier: MIT */
/*
 * sdk_test.c - libdemocritus (include/democritus/client.h) against a scripted HTTP server on
 * loopback: a thread that accepts one connection, records the request, writes a canned answer
 * and closes. Covers a refused connection, OpenAI error objects (message, code, status), a
 * plain answer with usage, SSE streaming (pieces, usage, a stop from the callback, a stream cut
 * before [DONE], an error event), the admin GET/POST, and bad arguments. The e2e test
 * tests/e2e/ask.test.mjs drives the same library against a real daemon.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "democritus/client.h"

struct server {
    int fd;
    uint16_t port;
    pthread_t thread;
    const char *answer; /* the whole HTTP response */
    bool drip;          /* write it one byte at a time */
    char request[8192]; /* what the client sent */
    char url[64];
};

static void *serve_one(void *arg)
{
    struct server *s = arg;
    size_t n = 0;
    int c = accept(s->fd, NULL, NULL);

    if (c < 0)
        return NULL;
    /* Read headers, then Content-Length bytes of body. */
    for (;;) {
        ssize_t k = read(c, s->request + n, sizeof(s->request) - 1 - n);
        char *end;
        if (k <= 0)
            break;
        n += (size_t)k;
        s->request[n] = '\0';
        end = strstr(s->request, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(s->request, "Content-Length:");
            size_t want = cl != NULL ? strtoul(cl + 15, NULL, 10) : 0;
            if (n >= (size_t)(end + 4 - s->request) + want)
                break;
        }
    }
    if (s->drip) {
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        for (const char *p = s->answer; *p != '\0'; p++) {
            if (write(c, p, 1) != 1)
                break;
        }
    } else if (write(c, s->answer, strlen(s->answer)) < 0) {
        perror("write");
    }
    shutdown(c, SHUT_WR);
    close(c);
    return NULL;
}

static void server_start_ex(struct server *s, const char *answer, bool drip)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);

    memset(s, 0, sizeof(*s));
    s->answer = answer;
    s->drip = drip;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->fd, 4), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &len), 0);
    s->port = ntohs(a.sin_port);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%u/", (unsigned)s->port);
    assert_int_equal(pthread_create(&s->thread, NULL, serve_one, s), 0);
}

static void server_start(struct server *s, const char *answer)
{
    server_start_ex(s, answer, false);
}

static void server_stop(struct server *s)
{
    pthread_join(s->thread, NULL);
    close(s->fd);
}

static const struct dc_client_message hello = {"user", "Say \"hi\"\n"};

static struct dc_client_chat chat(void)
{
    struct dc_client_chat req = DC_CLIENT_CHAT_INIT;

    req.messages = &hello;
    req.n_messages = 1;
    req.max_tokens = 7;
    return req;
}

static void test_refused(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    struct dc_client_chat req = chat();
    struct dc_client_reply r;
    struct dc_client *c;
    char url[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    (void)state;
    /* A port that was just free and has nobody listening. */
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    assert_int_equal(dc_client_new(url, NULL, &c), 0);
    assert_int_equal(dc_client_ask(c, &req, &r), DC_CLIENT_ECONNECT);
    assert_non_null(strstr(dc_client_error(c), "cannot connect to"));
    assert_non_null(strstr(dc_client_error(c), url));
    assert_non_null(strstr(dc_client_error(c), "Connection refused"));
    assert_int_equal(dc_client_http_status(c), 0);
    assert_null(r.text);
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
}

static void test_http_error(void **state)
{
    static const char body[] = "{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":"
                               "\"invalid_request_error\",\"param\":null,\"code\":"
                               "\"invalid_api_key\"}}";
    char answer[512];
    struct server s;
    struct dc_client_chat req = chat();
    struct dc_client_reply r;
    struct dc_client *c;

    (void)state;
    snprintf(answer, sizeof(answer),
             "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: "
             "%zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), body);
    server_start(&s, answer);
    assert_int_equal(dc_client_new(s.url, "sekrit", &c), 0);
    assert_int_equal(dc_client_ask(c, &req, &r), DC_CLIENT_EHTTP);
    server_stop(&s);
    assert_string_equal(dc_client_error(c), "HTTP 401: Incorrect API key provided");
    assert_string_equal(dc_client_error_code(c), "invalid_api_key");
    assert_int_equal(dc_client_http_status(c), 401);
    assert_non_null(strstr(s.request, "POST /v1/chat/completions HTTP/1.1\r\n"));
    assert_non_null(strstr(s.request, "Authorization: Bearer sekrit\r\n"));
    assert_non_null(strstr(s.request, "\"content\":\"Say \\\"hi\\\"\\n\""));
    assert_non_null(strstr(s.request, "\"max_tokens\":7"));
    assert_null(strstr(s.request, "\"stream\""));
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
}

static void test_ask(void **state)
{
    static const char body[] =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"tiny\",\"choices\":[{"
        "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"h\\u00e9llo\"},"
        "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
        "\"total_tokens\":12}}";
    char answer[1024];
    struct server s;
    struct dc_client_chat req = chat();
    struct dc_client_reply r;
    struct dc_client *c;

    (void)state;
    snprintf(answer, sizeof(answer),
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
             "%zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), body);
    server_start(&s, answer);
    assert_int_equal(dc_client_new(s.url, NULL, &c), 0);
    assert_int_equal(dc_client_ask(c, &req, &r), 0);
    server_stop(&s);
    assert_null(strstr(s.request, "Authorization"));
    assert_string_equal(r.text, "h\xc3\xa9llo");
    assert_int_equal(r.text_len, 6);
    assert_string_equal(r.finish_reason, "length");
    assert_string_equal(r.model, "tiny");
    assert_string_equal(r.id, "chatcmpl-1");
    assert_true(r.has_usage);
    assert_int_equal(r.usage.prompt_tokens, 5);
    assert_int_equal(r.usage.completion_tokens, 7);
    assert_int_equal(r.usage.total_tokens, 12);
    assert_string_equal(dc_client_error(c), "");
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
}

#define SSE_HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
#define CHUNK(piece)                                                                               \
    "data: {\"id\":\"c1\",\"model\":\"tiny\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"    \
    "\"" piece "\"},\"finish_reason\":null}]}\n\n"
#define SSE_END                                                                                    \
    "data: {\"id\":\"c1\",\"model\":\"tiny\",\"choices\":[{\"index\":0,\"delta\":{},"              \
    "\"finish_reason\":\"stop\"}]}\n\n: a comment\n\n"                                             \
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":3,"  \
    "\"total_tokens\":6}}\r\n\r\ndata: [DONE]\n\n"

struct pieces {
    char text[256];
    int n;
    int stop_after; /* 0: never */
};

static int on_piece(void *ud, const char *text, size_t len)
{
    struct pieces *p = ud;

    assert_int_equal(strlen(text), len);
    strncat(p->text, text, sizeof(p->text) - strlen(p->text) - 1);
    strncat(p->text, "|", sizeof(p->text) - strlen(p->text) - 1);
    p->n++;
    return p->stop_after != 0 && p->n >= p->stop_after;
}

static void test_stream(void **state)
{
    struct server s;
    struct dc_client_chat req = chat();
    struct dc_client_reply r;
    struct pieces p = {0};
    struct dc_client *c;

    (void)state;
    server_start(&s, SSE_HEAD CHUNK("Hel") CHUNK("lo") CHUNK(" you") SSE_END);
    assert_int_equal(dc_client_new(s.url, NULL, &c), 0);
    assert_int_equal(dc_client_chat_stream(c, &req, on_piece, &p, &r), 0);
    server_stop(&s);
    assert_non_null(strstr(s.request, "\"stream\":true"));
    assert_non_null(strstr(s.request, "\"include_usage\":true"));
    assert_string_equal(p.text, "Hel|lo| you|");
    assert_string_equal(r.text, "Hello you");
    assert_string_equal(r.finish_reason, "stop");
    assert_string_equal(r.model, "tiny");
    assert_true(r.has_usage);
    assert_int_equal(r.usage.total_tokens, 6);
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
}

/* Lines and events split across any number of reads are put back together. */
static void test_stream_drip(void **state)
{
    struct server s;
    struct dc_client_chat req = chat();
    struct dc_client_reply r;
    struct pieces p = {0};
    struct dc_client *c;

    (void)state;
    server_start_ex(&s, SSE_HEAD CHUNK("x\\n\\u00e9") CHUNK("y") SSE_END, true);
    assert_int_equal(dc_client_new(s.url, NULL, &c), 0);
    assert_int_equal(dc_client_chat_stream(c, &req, on_piece, &p, &r), 0);
    server_stop(&s);
    assert_string_equal(p.text, "x\n\xc3\xa9|y|");
    assert_string_equal(r.finish_reason, "stop");
    assert_int_equal(r.usage.total_tokens, 6);
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
}

static void test_stream_stop(void **state)
{
    struct server s;
    struct dc_client_chat req = chat();
    struct dc_client_reply r;
    struct pieces p = {.stop_after = 2};
    struct dc_client *c;

    (void)state;
    server_start(&s, SSE_HEAD CHUNK("a") CHUNK("b") CHUNK("c") SSE_END);
    assert_int_equal(dc_client_new(s.url, NULL, &c), 0);
    assert_int_equal(dc_client_chat_stream(c, &req, on_piece, &p, &r), 0);
    server_stop(&s);
    assert_string_equal(p.text, "a|b|");
    assert_string_equal(r.text, "ab");
    assert_string_equal(r.finish_reason, "stopped");
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
}

static void test_stream_cut(void **state)
{
    struct server s;
    struct dc_client_chat req = chat();
    struct dc_client_reply r;
    struct pieces p = {0};
    struct dc_client *c;

    (void)state;
    server_start(&s, SSE_HEAD CHUNK("a") CHUNK("b"));
    assert_int_equal(dc_client_new(s.url, NULL, &c), 0);
    assert_int_equal(dc_client_chat_stream(c, &req, on_piece, &p, &r), DC_CLIENT_EIO);
    server_stop(&s);
    assert_non_null(strstr(dc_client_error(c), "ended before [DONE]"));
    assert_string_equal(r.text, "ab"); /* what arrived is kept */
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
}

static void test_stream_error_event(void **state)
{
    struct server s;
    struct dc_client_chat req = chat();
    struct dc_client_reply r;
    struct dc_client *c;

    (void)state;
    server_start(&s, SSE_HEAD CHUNK("a") "data: {\"error\":{\"message\":\"engine failed\","
                                         "\"code\":\"x\"}}\n\n");
    assert_int_equal(dc_client_new(s.url, NULL, &c), 0);
    assert_int_equal(dc_client_chat_stream(c, &req, NULL, NULL, &r), DC_CLIENT_EHTTP);
    server_stop(&s);
    assert_string_equal(dc_client_error(c), "engine failed");
    assert_null(r.text);
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
}

static void test_admin(void **state)
{
    struct server s;
    struct dc_client *c;
    char *body;
    size_t len;

    (void)state;
    server_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
                     "{\"peers\":[]}");
    assert_int_equal(dc_client_new(s.url, NULL, &c), 0);
    assert_int_equal(dc_client_get(c, "/api/peers", &body, &len), 0);
    server_stop(&s);
    assert_non_null(strstr(s.request, "GET /api/peers HTTP/1.1\r\n"));
    assert_string_equal(body, "{\"peers\":[]}");
    assert_int_equal(len, 12);
    free(body);

    server_start(&s, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"
                     "nothing");
    dc_client_free(c);
    assert_int_equal(dc_client_new(s.url, NULL, &c), 0);
    assert_int_equal(dc_client_post(c, "api/peers/connect", "{\"multiaddr\":\"/x\"}", &body, NULL),
                     DC_CLIENT_EHTTP);
    server_stop(&s);
    assert_non_null(strstr(s.request, "POST /api/peers/connect HTTP/1.1\r\n"));
    assert_non_null(strstr(s.request, "\r\n\r\n{\"multiaddr\":\"/x\"}"));
    assert_null(body);
    assert_non_null(strstr(dc_client_error(c), "HTTP 502"));
    dc_client_free(c);
}

static void test_bad_args(void **state)
{
    struct dc_client *c = (struct dc_client *)1;
    struct dc_client_chat req = DC_CLIENT_CHAT_INIT;
    struct dc_client_reply r;

    (void)state;
    assert_int_equal(dc_client_new(NULL, NULL, &c), DC_CLIENT_EINVAL);
    assert_null(c);
    assert_int_equal(dc_client_new("ftp://x", NULL, &c), DC_CLIENT_EINVAL);
    assert_int_equal(dc_client_new("http://", NULL, &c), DC_CLIENT_EINVAL);
    assert_int_equal(dc_client_new("http://127.0.0.1:1///", "", &c), 0);
    assert_int_equal(dc_client_ask(c, &req, &r), DC_CLIENT_EINVAL);
    assert_non_null(strstr(dc_client_error(c), "at least one message"));
    dc_client_reply_cleanup(&r);
    dc_client_free(c);
    dc_client_free(NULL);
    assert_string_equal(dc_client_strerror(DC_CLIENT_ECONNECT), "cannot connect to the server");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),     cmocka_unit_test(test_http_error),
        cmocka_unit_test(test_ask),         cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_drip), cmocka_unit_test(test_stream_stop),
        cmocka_unit_test(test_stream_cut),  cmocka_unit_test(test_stream_error_event),
        cmocka_unit_test(test_admin),       cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

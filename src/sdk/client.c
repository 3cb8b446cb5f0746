/* SPDX-License-Identifier: MIT */
/*
 * client.c - libdemocritus: the REST client of include/democritus/client.h.
 *
 * One curl easy handle per client, reused so calls share a keep-alive connection. Every call
 * goes through perform(): it sets the URL, headers and body, runs the transfer into a capped
 * buffer (or, streaming, through the SSE splitter), and turns what happened into one return code
 * and one line in c->err. Requests are built with jansson so every string is escaped right;
 * answers are parsed with it too. The library does no I/O of its own beyond libcurl and never
 * prints.
 */
#include "democritus/client.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX     ((size_t)64 << 20) /* largest answer we keep */
#define SSE_LINE_MAX ((size_t)1 << 20)  /* longest SSE line */

struct buf {
    char *data;
    size_t len, cap, max;
};

struct dc_client {
    CURL *curl;
    char *url; /* without a trailing slash */
    char *auth_header;
    uint32_t timeout_ms;
    int status;
    char err[512];
    char code[64];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

const char *dc_client_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case DC_CLIENT_EINVAL:
        return "invalid argument";
    case DC_CLIENT_ENOMEM:
        return "out of memory";
    case DC_CLIENT_ECONNECT:
        return "cannot connect to the server";
    case DC_CLIENT_EHTTP:
        return "the server answered an error";
    case DC_CLIENT_EPROTO:
        return "unexpected answer from the server";
    case DC_CLIENT_ETIMEDOUT:
        return "timed out";
    case DC_CLIENT_EIO:
        return "transfer failed";
    default:
        return "unknown error";
    }
}

static void set_err(struct dc_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_err(struct dc_client *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
}

/* ---- buffers ---- */

static int buf_append(struct buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->max)
        return DC_CLIENT_EPROTO;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *d;
        while (cap < b->len + n + 1)
            cap *= 2;
        d = realloc(b->data, cap);
        if (d == NULL)
            return DC_CLIENT_ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* ---- lifecycle ---- */

int dc_client_new(const char *url, const char *api_key, struct dc_client **out)
{
    struct dc_client *c;
    size_t n;

    *out = NULL;
    if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return DC_CLIENT_EINVAL;
    n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    if (n <= 8)
        return DC_CLIENT_EINVAL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return DC_CLIENT_ENOMEM;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return DC_CLIENT_ENOMEM;
    c->url = strndup(url, n);
    if (c->url == NULL)
        goto err_free;
    if (api_key != NULL && api_key[0] != '\0') {
        size_t len = strlen("Authorization: Bearer ") + strlen(api_key) + 1;
        c->auth_header = malloc(len);
        if (c->auth_header == NULL)
            goto err_url;
        snprintf(c->auth_header, len, "Authorization: Bearer %s", api_key);
    }
    c->curl = curl_easy_init();
    if (c->curl == NULL)
        goto err_auth;
    *out = c;
    return 0;

err_auth:
    free(c->auth_header);
err_url:
    free(c->url);
err_free:
    free(c);
    return DC_CLIENT_ENOMEM;
}

void dc_client_free(struct dc_client *c)
{
    if (c == NULL)
        return;
    curl_easy_cleanup(c->curl);
    if (c->auth_header != NULL) {
        /* volatile stores, so the wipe is not optimised away */
        for (volatile char *p = c->auth_header; *p != '\0'; p++)
            *p = '\0';
        free(c->auth_header);
    }
    free(c->url);
    free(c);
}

void dc_client_set_timeout_ms(struct dc_client *c, uint32_t ms)
{
    c->timeout_ms = ms;
}

const char *dc_client_error(const struct dc_client *c)
{
    return c->err;
}

int dc_client_http_status(const struct dc_client *c)
{
    return c->status;
}

const char *dc_client_error_code(const struct dc_client *c)
{
    return c->code;
}

void dc_client_reply_cleanup(struct dc_client_reply *r)
{
    if (r == NULL)
        return;
    free(r->text);
    free(r->finish_reason);
    free(r->model);
    free(r->id);
    memset(r, 0, sizeof(*r));
}

/* ---- the transfer ---- */

/* SSE state of a streaming call. */
struct stream {
    struct dc_client *c;
    dc_client_token_cb cb;
    void *ud;
    struct buf line;  /* the current line, without its newline */
    struct buf data;  /* the current event's data lines, joined by '\n' */
    struct buf text;  /* everything generated so far */
    json_t *last;     /* finish_reason, model, id and usage as they arrive */
    bool done;        /* "data: [DONE]" arrived */
    bool stopped;     /* the callback asked to stop */
    int err;          /* a protocol or error event, already in c->err */
    bool http_error;  /* status >= 300: collect the body instead */
    struct buf *body; /* where an error body goes */
};

struct xfer {
    struct dc_client *c;
    struct buf body;
    struct stream *st;
};

/* Reads an OpenAI error object from 'text' into c->err/c->code; false when it is not one. */
static bool take_error_object(struct dc_client *c, const char *text, size_t len)
{
    json_t *root = json_loadb(text, len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *code = json_string_value(json_object_get(e, "code"));
    bool ok = false;

    if (msg == NULL && json_is_string(e))
        msg = json_string_value(e);
    if (msg != NULL) {
        if (c->status >= 300)
            set_err(c, "HTTP %d: %s", c->status, msg);
        else
            set_err(c, "%s", msg);
        snprintf(c->code, sizeof(c->code), "%s", code != NULL ? code : "");
        ok = true;
    }
    json_decref(root);
    return ok;
}

/* One complete SSE event's data. */
static void stream_event(struct stream *st)
{
    struct dc_client *c = st->c;
    json_t *root, *choice, *v;
    const char *piece;

    if (strcmp(st->data.data, "[DONE]") == 0) {
        st->done = true;
        return;
    }
    root = json_loadb(st->data.data, st->data.len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        set_err(c, "malformed event in the stream from %s", c->url);
        st->err = DC_CLIENT_EPROTO;
        return;
    }
    if (json_object_get(root, "error") != NULL) {
        if (!take_error_object(c, st->data.data, st->data.len))
            set_err(c, "error event in the stream");
        st->err = DC_CLIENT_EHTTP;
        json_decref(root);
        return;
    }
    if (st->last == NULL)
        st->last = json_object();
    if (st->last != NULL) {
        /* Keep what the reply needs; later chunks overwrite earlier ones. */
        if ((v = json_object_get(root, "model")) != NULL && json_is_string(v))
            json_object_set(st->last, "model", v);
        if ((v = json_object_get(root, "id")) != NULL && json_is_string(v))
            json_object_set(st->last, "id", v);
        if ((v = json_object_get(root, "usage")) != NULL && json_is_object(v))
            json_object_set(st->last, "usage", v);
    }
    choice = json_array_get(json_object_get(root, "choices"), 0);
    v = json_object_get(choice, "finish_reason");
    if (json_is_string(v) && st->last != NULL)
        json_object_set(st->last, "finish_reason", v);
    piece = json_string_value(json_object_get(json_object_get(choice, "delta"), "content"));
    if (piece != NULL && piece[0] != '\0') {
        size_t n = json_string_length(json_object_get(json_object_get(choice, "delta"), "content"));
        int rc = buf_append(&st->text, piece, n);
        if (rc < 0) {
            set_err(c, "the answer is over %zu bytes", BODY_MAX);
            st->err = rc;
        } else if (st->cb != NULL && st->cb(st->ud, piece, n) != 0) {
            st->stopped = true;
        }
    }
    json_decref(root);
}

/* Splits bytes into lines and lines into events (blank line ends an event). */
static int stream_feed(struct stream *st, const char *p, size_t n)
{
    for (size_t i = 0; i < n && st->err == 0 && !st->stopped && !st->done; i++) {
        char ch = p[i];
        if (ch != '\n') {
            if (ch != '\r' && buf_append(&st->line, &ch, 1) < 0) {
                set_err(st->c, "an SSE line over %zu bytes", SSE_LINE_MAX);
                st->err = DC_CLIENT_EPROTO;
            }
            continue;
        }
        if (st->line.len == 0) {
            if (st->data.len > 0)
                stream_event(st);
            st->data.len = 0;
            if (st->data.data != NULL)
                st->data.data[0] = '\0';
            continue;
        }
        if (strncmp(st->line.data, "data:", 5) == 0) {
            const char *d = st->line.data + 5;
            int rc = 0;
            if (*d == ' ')
                d++;
            if (st->data.len > 0)
                rc = buf_append(&st->data, "\n", 1);
            if (rc == 0)
                rc = buf_append(&st->data, d, strlen(d));
            if (rc < 0) {
                set_err(st->c, "an SSE event over %zu bytes", SSE_LINE_MAX);
                st->err = DC_CLIENT_EPROTO;
            }
        } /* comments (":") and other fields are ignored */
        st->line.len = 0;
        st->line.data[0] = '\0';
    }
    return st->err;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;

    if (x->st != NULL) {
        long status = 0;
        curl_easy_getinfo(x->c->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 300) {
            x->st->http_error = true;
        } else {
            if (stream_feed(x->st, p, n) != 0 || x->st->stopped)
                return 0; /* aborts the transfer: the server sees the hang-up */
            return n;
        }
    }
    if (buf_append(&x->body, p, n) < 0)
        return 0;
    return n;
}

/*
 * Runs one request: 'method' "GET" or "POST" (then 'json' is the body). Non-streaming calls
 * leave the body in x->body. Returns 0 for a 2xx answer.
 */
static int perform(struct dc_client *c, const char *method, const char *path, const char *json,
                   struct xfer *x)
{
    struct curl_slist *hdr = NULL, *h;
    char errbuf[CURL_ERROR_SIZE] = "";
    char *url;
    CURLcode cc;
    long status = 0;
    int rc = 0;

    c->status = 0;
    c->err[0] = '\0';
    c->code[0] = '\0';
    url = malloc(strlen(c->url) + strlen(path) + 2);
    if (url == NULL)
        return DC_CLIENT_ENOMEM;
    sprintf(url, "%s%s%s", c->url, path[0] == '/' ? "" : "/", path);
    h = curl_slist_append(hdr, "Accept: application/json, text/event-stream");
    if (h != NULL)
        hdr = h;
    if (json != NULL && (h = curl_slist_append(hdr, "Content-Type: application/json")) != NULL)
        hdr = h;
    /* No "Expect: 100-continue" round trip for large bodies. */
    if ((h = curl_slist_append(hdr, "Expect:")) != NULL)
        hdr = h;
    if (c->auth_header != NULL && (h = curl_slist_append(hdr, c->auth_header)) != NULL)
        hdr = h;
    if (hdr == NULL || (c->auth_header != NULL && h == NULL)) {
        curl_slist_free_all(hdr);
        free(url);
        return DC_CLIENT_ENOMEM;
    }

    curl_easy_reset(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT,
                     "libdemocritus/"
                     "0.1");
    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, json != NULL ? json : "");
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)(json != NULL ? strlen(json) : 0));
    }
    cc = curl_easy_perform(c->curl);
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    c->status = (int)status;

    if (x->st != NULL && x->st->stopped) {
        rc = 0; /* the caller stopped it: not an error */
    } else if (x->st != NULL && x->st->err != 0) {
        rc = x->st->err;
    } else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
               cc == CURLE_COULDNT_RESOLVE_PROXY) {
        long os_err = 0;
        /* The system's reason ("Connection refused") says more than curl's sentence. */
        curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &os_err);
        if (os_err != 0)
            set_err(c, "cannot connect to %s: %s", c->url, strerror((int)os_err));
        else
            set_err(c, "cannot connect to %s: %s", c->url,
                    errbuf[0] ? errbuf : curl_easy_strerror(cc));
        rc = DC_CLIENT_ECONNECT;
    } else if (cc == CURLE_OPERATION_TIMEDOUT) {
        set_err(c, "%s %s timed out: %s", method, url, errbuf[0] ? errbuf : "deadline passed");
        rc = DC_CLIENT_ETIMEDOUT;
    } else if (cc == CURLE_WRITE_ERROR) {
        set_err(c, "the answer from %s is over %zu bytes", url, BODY_MAX);
        rc = DC_CLIENT_EPROTO;
    } else if (cc == CURLE_OUT_OF_MEMORY) {
        rc = DC_CLIENT_ENOMEM;
    } else if (cc != CURLE_OK) {
        set_err(c, "%s %s: %s", method, url, errbuf[0] ? errbuf : curl_easy_strerror(cc));
        rc = DC_CLIENT_EIO;
    } else if (status < 200 || status >= 300) {
        if (x->body.data == NULL || !take_error_object(c, x->body.data, x->body.len))
            set_err(c, "HTTP %ld from %s %s", status, method, url);
        rc = DC_CLIENT_EHTTP;
    }
    curl_slist_free_all(hdr);
    free(url);
    return rc;
}

/* ---- chat ---- */

static char *chat_body(const struct dc_client_chat *req, bool stream)
{
    json_t *root = json_object(), *msgs = json_array();
    char *text = NULL;
    int bad = root == NULL || msgs == NULL;

    for (size_t i = 0; !bad && i < req->n_messages; i++) {
        const struct dc_client_message *m = &req->messages[i];
        bad |= json_array_append_new(msgs, json_pack("{s:s, s:s}", "role",
                                                     m->role != NULL ? m->role : "user", "content",
                                                     m->content != NULL ? m->content : "")) != 0;
    }
    if (!bad) {
        bad |= json_object_set_new(root, "model",
                                   json_string(req->model != NULL ? req->model : "local")) != 0;
        bad |= json_object_set(root, "messages", msgs) != 0;
        if (req->max_tokens > 0)
            bad |= json_object_set_new(root, "max_tokens", json_integer(req->max_tokens)) != 0;
        if (req->experts > 0)
            bad |= json_object_set_new(root, "experts", json_integer(req->experts)) != 0;
        if (req->temperature >= 0)
            bad |= json_object_set_new(root, "temperature", json_real(req->temperature)) != 0;
        if (req->seed >= 0)
            bad |= json_object_set_new(root, "seed", json_integer(req->seed)) != 0;
        if (stream) {
            bad |= json_object_set_new(root, "stream", json_true()) != 0;
            bad |= json_object_set_new(root, "stream_options",
                                       json_pack("{s:b}", "include_usage", 1)) != 0;
        }
    }
    if (!bad)
        text = json_dumps(root, JSON_COMPACT);
    json_decref(msgs);
    json_decref(root);
    return text;
}

static char *dup_str(json_t *v)
{
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static void take_usage(json_t *u, struct dc_client_reply *out)
{
    if (!json_is_object(u))
        return;
    out->usage.prompt_tokens = (uint32_t)json_integer_value(json_object_get(u, "prompt_tokens"));
    out->usage.completion_tokens =
        (uint32_t)json_integer_value(json_object_get(u, "completion_tokens"));
    out->usage.total_tokens = (uint32_t)json_integer_value(json_object_get(u, "total_tokens"));
    out->has_usage = true;
}

static int check_chat(struct dc_client *c, const struct dc_client_chat *req)
{
    if (c == NULL)
        return DC_CLIENT_EINVAL;
    c->err[0] = '\0';
    c->code[0] = '\0';
    c->status = 0;
    if (req == NULL || req->messages == NULL || req->n_messages == 0) {
        set_err(c, "a chat needs at least one message");
        return DC_CLIENT_EINVAL;
    }
    return 0;
}

int dc_client_ask(struct dc_client *c, const struct dc_client_chat *req,
                  struct dc_client_reply *out)
{
    struct xfer x = {.c = c, .body = {.max = BODY_MAX}};
    json_t *root = NULL, *choice, *content;
    char *body;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = check_chat(c, req);
    if (rc < 0)
        return rc;
    body = chat_body(req, false);
    if (body == NULL)
        return DC_CLIENT_ENOMEM;
    rc = perform(c, "POST", "/v1/chat/completions", body, &x);
    free(body);
    if (rc < 0)
        goto out;
    root = json_loadb(x.body.data != NULL ? x.body.data : "", x.body.len, 0, NULL);
    choice = json_array_get(json_object_get(root, "choices"), 0);
    content = json_object_get(json_object_get(choice, "message"), "content");
    if (!json_is_string(content)) {
        set_err(c, "the answer from %s has no choices[0].message.content", c->url);
        rc = DC_CLIENT_EPROTO;
        goto out;
    }
    out->text_len = json_string_length(content);
    out->text = malloc(out->text_len + 1);
    if (out->text == NULL) {
        rc = DC_CLIENT_ENOMEM;
        goto out;
    }
    memcpy(out->text, json_string_value(content), out->text_len);
    out->text[out->text_len] = '\0';
    out->finish_reason = dup_str(json_object_get(choice, "finish_reason"));
    out->model = dup_str(json_object_get(root, "model"));
    out->id = dup_str(json_object_get(root, "id"));
    take_usage(json_object_get(root, "usage"), out);
out:
    json_decref(root);
    free(x.body.data);
    if (rc < 0)
        dc_client_reply_cleanup(out);
    return rc;
}

int dc_client_chat_stream(struct dc_client *c, const struct dc_client_chat *req,
                          dc_client_token_cb cb, void *ud, struct dc_client_reply *out)
{
    struct stream st = {.c = c,
                        .cb = cb,
                        .ud = ud,
                        .line = {.max = SSE_LINE_MAX},
                        .data = {.max = SSE_LINE_MAX},
                        .text = {.max = BODY_MAX}};
    struct xfer x = {.c = c, .body = {.max = BODY_MAX}, .st = &st};
    char *body;
    int rc;

    if (out != NULL)
        memset(out, 0, sizeof(*out));
    rc = check_chat(c, req);
    if (rc < 0)
        return rc;
    body = chat_body(req, true);
    if (body == NULL)
        return DC_CLIENT_ENOMEM;
    rc = perform(c, "POST", "/v1/chat/completions", body, &x);
    free(body);
    if (rc == 0 && !st.done && !st.stopped) {
        set_err(c, "the stream from %s ended before [DONE]", c->url);
        rc = DC_CLIENT_EIO;
    }
    if (out != NULL && (rc == 0 || rc == DC_CLIENT_EIO)) {
        out->text_len = st.text.len;
        out->text = st.text.data != NULL ? st.text.data : strdup("");
        st.text.data = NULL;
        out->finish_reason =
            st.stopped ? strdup("stopped") : dup_str(json_object_get(st.last, "finish_reason"));
        out->model = dup_str(json_object_get(st.last, "model"));
        out->id = dup_str(json_object_get(st.last, "id"));
        take_usage(json_object_get(st.last, "usage"), out);
        if (out->text == NULL) {
            dc_client_reply_cleanup(out);
            rc = DC_CLIENT_ENOMEM;
        }
    }
    json_decref(st.last);
    free(st.line.data);
    free(st.data.data);
    free(st.text.data);
    free(x.body.data);
    return rc;
}

/* ---- admin routes ---- */

static int simple(struct dc_client *c, const char *method, const char *path, const char *json,
                  char **body, size_t *len)
{
    struct xfer x = {.c = c, .body = {.max = BODY_MAX}};
    int rc;

    *body = NULL;
    if (len != NULL)
        *len = 0;
    if (c == NULL || path == NULL)
        return DC_CLIENT_EINVAL;
    rc = perform(c, method, path, json, &x);
    if (rc < 0) {
        free(x.body.data);
        return rc;
    }
    if (x.body.data == NULL && (x.body.data = strdup("")) == NULL)
        return DC_CLIENT_ENOMEM;
    *body = x.body.data;
    if (len != NULL)
        *len = x.body.len;
    return 0;
}

int dc_client_get(struct dc_client *c, const char *path, char **body, size_t *len)
{
    return simple(c, "GET", path, NULL, body, len);
}

int dc_client_post(struct dc_client *c, const char *path, const char *json, char **body,
                   size_t *len)
{
    if (json == NULL)
        return DC_CLIENT_EINVAL;
    return simple(c, "POST", path, json, body, len);
}

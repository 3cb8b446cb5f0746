/* SPDX-License-Identifier: MIT */
/*
 * http.c - libmicrohttpd glue: the server's lifecycle, the access handler that every request
 * enters, the common response path (X-Request-Id on everything), the access log and metrics at
 * completion, the worker pool, and request reference counting.
 *
 * MHD runs a pool of polling threads, each with its own epoll set (MHD_USE_EPOLL with
 * MHD_OPTION_THREAD_POOL_SIZE), so keep-alive requests on a trivial route never cross threads
 * and never sleep. A request that waits (for a model, for tokens) suspends its connection;
 * whoever produces what it waits for resumes it. MHD does not watch a suspended socket, so a
 * small watcher thread (epoll, EPOLLRDHUP) notices a client that hangs up while its request
 * waits on the engine and cancels the generation at once. Slow clients are bounded by MHD's
 * limits (the per-connection memory pool, DC_API_CONN_MEMORY; the connection limit; the
 * inactivity timeout), by our header limit (DC_API_HEADERS_MAX, a 431 of ours: MHD 0.9.75
 * answers what overflows its pool itself, with no hook to add our headers, so our limit sits
 * well inside the pool) and by our header deadline, which the same thread
 * sweeps: a request's headers must be complete within timeout_s, however slowly they drip, so
 * a slow-loris client is cut off without touching others. Bodies stop at DC_API_BODY_MAX (413).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"
#include "base/log.h"

#define LOG "api"

static const int status_codes[DC_API_N_STATUS - 1] = {200, 400, 401, 404, 405,
                                                      413, 429, 500, 503, 504};
static const double buckets_s[DC_API_N_BUCKETS - 1] = {0.0005, 0.001, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,    0.25,  0.5,   1,    5};

uint64_t dc_api_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- responses ---- */

enum MHD_Result dc_api_send(struct dc_api_req *r, int status, struct MHD_Response *resp,
                            const char *content_type)
{
    enum MHD_Result ret;

    if (resp == NULL)
        return MHD_NO;
    dc_admin_cors_headers(r, resp);
    if (MHD_add_response_header(resp, "X-Request-Id", r->id) != MHD_YES ||
        (content_type != NULL &&
         MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES)) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->responded = true;
    return ret;
}

enum MHD_Result dc_api_send_buf(struct dc_api_req *r, int status, const char *body, size_t len,
                                const char *content_type)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);

    return dc_api_send(r, status, resp, content_type);
}

enum MHD_Result dc_api_send_error(struct dc_api_req *r, const struct dc_api_error *e)
{
    struct MHD_Response *resp;
    struct dc_buf b;
    char retry[16];

    dc_buf_init(&b, 0);
    if (dc_api_error_json(e, &b) < 0) {
        dc_buf_cleanup(&b);
        return MHD_NO;
    }
    resp = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    dc_buf_cleanup(&b);
    if (resp == NULL)
        return MHD_NO;
    if (e->status == 429) {
        /* Whole seconds, rounded up: a client that waits that long finds a token. */
        snprintf(retry, sizeof(retry), "%u",
                 e->retry_after_ms > 0 ? (unsigned)((e->retry_after_ms + 999u) / 1000u) : 1u);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry);
    }
    if (e->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (e->status == 405) {
        const char *m = NULL;
        dc_api_route_lookup(r->path, &m);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, m != NULL ? m : "GET, POST");
    }
    return dc_api_send(r, e->status, resp, "application/json");
}

/* ---- requests ---- */

static void req_free(struct dc_api_req *r)
{
    dc_gen_release(r->gen);
    if (r->rcall != NULL)
        r->api->remote->release(r->api->remote_ud, r->rcall);
    if (r->engine != NULL) {
        dc_rest_unadmit(r);
        if (!r->is_def && r->api->reg != NULL)
            dc_registry_release(r->api->reg, r->engine);
    }
    dc_api_request_cleanup(&r->preq);
    dc_buf_cleanup(&r->body);
    dc_buf_cleanup(&r->out);
    dc_buf_cleanup(&r->lp);
    dc_buf_cleanup(&r->lp2);
    dc_buf_cleanup(&r->lp3);
    dc_buf_cleanup(&r->lp4);
    dc_free(r->emb);
    pthread_mutex_destroy(&r->mu);
    dc_free(r);
}

void dc_api_req_unref(struct dc_api_req *r)
{
    int left;

    pthread_mutex_lock(&r->mu);
    left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left > 0)
        return;
    /* The last reference may be the engine's (its scheduler thread), which must not release a
     * model: a worker does it. */
    if (r->engine != NULL) {
        dc_api_job_push(r, DC_JOB_FREE);
        return;
    }
    req_free(r);
}

void dc_api_cancel(struct dc_api *api, struct dc_gen *g, struct dc_api_remote_call *rc)
{
    if (g != NULL)
        dc_gen_cancel(g);
    if (rc != NULL)
        api->remote->cancel(api->remote_ud, rc);
}

bool dc_api_wake_locked(struct dc_api_req *r)
{
    if (!r->suspended)
        return false;
    r->suspended = false;
    return true;
}

void dc_api_settle(struct dc_api_req *r)
{
    struct dc_api *api = r->api;

    pthread_mutex_lock(&api->live_mu);
    if (r->async && !r->settled) {
        r->settled = true;
        if (r->live_prev != NULL)
            r->live_prev->live_next = r->live_next;
        else
            api->live = r->live_next;
        if (r->live_next != NULL)
            r->live_next->live_prev = r->live_prev;
        api->n_live--;
        pthread_cond_broadcast(&api->live_cv);
    }
    pthread_mutex_unlock(&api->live_mu);
}

void dc_api_engine_ref(struct dc_api *api, int delta)
{
    pthread_mutex_lock(&api->live_mu);
    api->n_engine_refs = (uint32_t)((int)api->n_engine_refs + delta);
    if (api->n_engine_refs == 0)
        pthread_cond_broadcast(&api->live_cv);
    pthread_mutex_unlock(&api->live_mu);
}

/* A request being started: one more reference (dropped when the start returns) and a place
 * in the live list that the shutdown waits on. */
static void live_add(struct dc_api_req *r)
{
    struct dc_api *api = r->api;

    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&api->live_mu);
    r->async = true;
    r->live_prev = NULL;
    r->live_next = api->live;
    if (api->live != NULL)
        api->live->live_prev = r;
    api->live = r;
    api->n_live++;
    pthread_mutex_unlock(&api->live_mu);
}

void dc_api_start_inline(struct dc_api_req *r)
{
    live_add(r);
    dc_rest_start(r);
    dc_api_req_unref(r);
}

void dc_api_job_push(struct dc_api_req *r, enum dc_api_job job)
{
    struct dc_api *api = r->api;

    if (job == DC_JOB_START)
        live_add(r);
    pthread_mutex_lock(&api->wq_mu);
    r->job = job;
    r->job_next = NULL;
    if (api->wq_tail != NULL)
        api->wq_tail->job_next = r;
    else
        api->wq_head = r;
    api->wq_tail = r;
    pthread_cond_signal(&api->wq_cv);
    pthread_mutex_unlock(&api->wq_mu);
}

static void *worker_main(void *arg)
{
    struct dc_api *api = arg;

    (void)prctl(PR_SET_NAME, "dc-http-work", 0, 0, 0);

    for (;;) {
        struct dc_api_req *r;

        pthread_mutex_lock(&api->wq_mu);
        while (api->wq_head == NULL && !api->wq_stop)
            pthread_cond_wait(&api->wq_cv, &api->wq_mu);
        r = api->wq_head;
        if (r == NULL) {
            pthread_mutex_unlock(&api->wq_mu);
            break;
        }
        api->wq_head = r->job_next;
        if (api->wq_head == NULL)
            api->wq_tail = NULL;
        pthread_mutex_unlock(&api->wq_mu);

        if (r->job == DC_JOB_FREE) {
            req_free(r);
            continue;
        }
        r->job = DC_JOB_NONE;
        dc_rest_start(r);
        dc_api_req_unref(r);
    }
    return NULL;
}

/* ---- hang-up watcher ---- */

void dc_api_watch_add(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct epoll_event ev = {0};
    int fd;

    if (ci == NULL || !api->watch_started || ci->connect_fd < 0)
        return;
    fd = ci->connect_fd;
    pthread_mutex_lock(&api->watch_mu);
    if ((size_t)fd >= api->watch_cap) {
        size_t cap = api->watch_cap ? api->watch_cap : 256;
        struct dc_api_req **t;
        while (cap <= (size_t)fd)
            cap *= 2;
        t = dc_realloc(api->watch_tab, cap * sizeof(*t));
        if (t == NULL)
            goto out;
        memset(t + api->watch_cap, 0, (cap - api->watch_cap) * sizeof(*t));
        api->watch_tab = t;
        api->watch_cap = cap;
    }
    r->watch_gen = ++api->watch_gen;
    ev.events = EPOLLRDHUP | EPOLLONESHOT;
    ev.data.u64 = (uint64_t)r->watch_gen << 32 | (uint32_t)fd;
    if (epoll_ctl(api->watch_ep, EPOLL_CTL_ADD, fd, &ev) != 0 &&
        (errno != EEXIST || epoll_ctl(api->watch_ep, EPOLL_CTL_MOD, fd, &ev) != 0))
        goto out;
    api->watch_tab[fd] = r;
    r->watch_fd = fd;
out:
    pthread_mutex_unlock(&api->watch_mu);
}

static void watch_del(struct dc_api_req *r)
{
    struct dc_api *api = r->api;

    if (r->watch_fd < 0)
        return;
    pthread_mutex_lock(&api->watch_mu);
    if (api->watch_tab[r->watch_fd] == r) {
        api->watch_tab[r->watch_fd] = NULL;
        epoll_ctl(api->watch_ep, EPOLL_CTL_DEL, r->watch_fd, NULL);
    }
    pthread_mutex_unlock(&api->watch_mu);
    r->watch_fd = -1;
}

/*
 * One TCP connection, for the header deadline. MHD's timeout counts inactivity, so a client
 * that sends a header byte now and then (slow-loris) would hold its connection for ever; this
 * bounds the time from a request's first byte (or the previous response) to its complete
 * headers instead. The polling thread flips 'in_headers'; the sweeper only reads it.
 */
struct dc_api_conn {
    int fd;
    atomic_bool in_headers;
    atomic_uint_fast64_t since_ns;
    bool killed;
    struct dc_api_conn *prev, *next;
};

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct dc_api *api = cls;
    struct dc_api_conn *c = *socket_context;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c = dc_calloc(1, sizeof(*c));
        if (c == NULL || ci == NULL) {
            dc_free(c);
            return; /* no deadline for this one; MHD's idle timeout still applies */
        }
        c->fd = ci->connect_fd;
        atomic_init(&c->in_headers, true);
        atomic_init(&c->since_ns, dc_api_now_ns());
        pthread_mutex_lock(&api->conns_mu);
        c->next = api->conns;
        if (api->conns != NULL)
            api->conns->prev = c;
        api->conns = c;
        pthread_mutex_unlock(&api->conns_mu);
        *socket_context = c;
        return;
    }
    if (c == NULL)
        return;
    /* CLOSED comes before MHD closes the socket, so the sweeper never sees a reused fd. */
    pthread_mutex_lock(&api->conns_mu);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        api->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&api->conns_mu);
    *socket_context = NULL;
    dc_free(c);
}

/* Marks the connection of 'conn' as reading headers (true) or past them (false). */
static void conn_phase(struct MHD_Connection *conn, bool in_headers)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct dc_api_conn *c = ci != NULL ? ci->socket_context : NULL;

    if (c == NULL)
        return;
    if (in_headers)
        atomic_store_explicit(&c->since_ns, dc_api_now_ns(), memory_order_relaxed);
    atomic_store_explicit(&c->in_headers, in_headers, memory_order_release);
}

static void sweep_headers(struct dc_api *api)
{
    uint64_t now = dc_api_now_ns();
    unsigned n = 0;

    pthread_mutex_lock(&api->conns_mu);
    for (struct dc_api_conn *c = api->conns; c != NULL; c = c->next) {
        uint64_t since;

        if (c->killed || !atomic_load_explicit(&c->in_headers, memory_order_acquire))
            continue;
        /* A polling thread may have finished a request (and restarted the clock) after 'now'
         * was read: then 'since' is later than 'now', and the unsigned difference must not
         * wrap into "expired" and cut a healthy keep-alive connection. */
        since = atomic_load_explicit(&c->since_ns, memory_order_relaxed);
        if (since >= now || now - since <= api->header_timeout_ns)
            continue;
        /* MHD sees the socket end and closes the connection on its own thread. */
        shutdown(c->fd, SHUT_RDWR);
        c->killed = true;
        n++;
    }
    pthread_mutex_unlock(&api->conns_mu);
    if (n > 0)
        dc_log_debug(LOG, "closed %u connection(s) past the header deadline", n);
}

/* Cancels the generation of a request whose client hung up (the table lookup under watch_mu,
 * with the registration's generation, keeps a late event from reaching a finished request),
 * and sweeps the header deadline twice a second. */
static void *watch_main(void *arg)
{
    struct dc_api *api = arg;
    struct epoll_event evs[32];
    uint64_t last_sweep = dc_api_now_ns();

    (void)prctl(PR_SET_NAME, "dc-http-watch", 0, 0, 0);
    for (;;) {
        int n = epoll_wait(api->watch_ep, evs, (int)DC_ARRAY_LEN(evs), 500);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        if (dc_api_now_ns() - last_sweep >= 500000000u) {
            last_sweep = dc_api_now_ns();
            sweep_headers(api);
        }
        for (int i = 0; i < n; i++) {
            uint32_t fd = (uint32_t)evs[i].data.u64, gen = (uint32_t)(evs[i].data.u64 >> 32);
            struct dc_api_req *r;
            struct dc_gen *g = NULL;
            struct dc_api_remote_call *rc = NULL;

            if (gen == 0)
                return NULL; /* the eventfd: shutting down */
            pthread_mutex_lock(&api->watch_mu);
            r = fd < api->watch_cap ? api->watch_tab[fd] : NULL;
            if (r != NULL && r->watch_gen == gen) {
                pthread_mutex_lock(&r->mu);
                r->gone = true;
                if (!r->done) {
                    g = r->gen;
                    rc = r->rcall;
                }
                pthread_mutex_unlock(&r->mu);
                dc_api_cancel(api, g, rc);
            }
            pthread_mutex_unlock(&api->watch_mu);
        }
    }
    return NULL;
}

static int watch_start(struct dc_api *api)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};

    api->watch_ep = epoll_create1(EPOLL_CLOEXEC);
    api->watch_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (api->watch_ep < 0 || api->watch_efd < 0 ||
        epoll_ctl(api->watch_ep, EPOLL_CTL_ADD, api->watch_efd, &ev) != 0 ||
        pthread_create(&api->watch_thread, NULL, watch_main, api) != 0)
        return -errno;
    api->watch_started = true;
    return 0;
}

static void watch_stop(struct dc_api *api)
{
    if (api->watch_started) {
        uint64_t one = 1;
        if (write(api->watch_efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
            dc_log_warn(LOG, "cannot stop the hang-up watcher: %s", dc_strerror(-errno));
        pthread_join(api->watch_thread, NULL);
        api->watch_started = false;
    }
    if (api->watch_ep >= 0)
        close(api->watch_ep);
    if (api->watch_efd >= 0)
        close(api->watch_efd);
    api->watch_ep = api->watch_efd = -1;
    dc_free(api->watch_tab);
    api->watch_tab = NULL;
}

/* Copies the path for the log, replacing anything unprintable so a URL cannot forge lines. */
static void copy_path(char *dst, size_t cap, const char *src)
{
    size_t i = 0;

    for (; src[i] != '\0' && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x21 || c > 0x7e) ? '?' : (char)c;
    }
    dst[i] = '\0';
}

/* A client's X-Request-Id is kept when it is short and plain; otherwise we make one. */
static bool id_ok(const char *s)
{
    size_t n = 0;

    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (n >= 64 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return n > 0;
}

static struct dc_api_req *req_new(struct dc_api *api, struct MHD_Connection *conn, const char *url,
                                  const char *method)
{
    struct dc_api_req *r = dc_calloc(1, sizeof(*r));
    const char *given, *m = NULL;

    if (r == NULL)
        return NULL;
    r->api = api;
    r->conn = conn;
    r->refs = 1;
    r->watch_fd = -1;
    r->t0_ns = dc_api_now_ns();
    r->created = time(NULL);
    pthread_mutex_init(&r->mu, NULL);
    dc_buf_init(&r->body, DC_API_BODY_MAX);
    dc_buf_init(&r->out, DC_API_STREAM_MAX);
    dc_buf_init(&r->lp, 0);
    dc_buf_init(&r->lp2, 0);
    dc_buf_init(&r->lp3, 0);
    dc_buf_init(&r->lp4, 0);
    copy_path(r->path, sizeof(r->path), url);
    r->route = dc_api_route_lookup(url, &m);
    r->method = strcmp(method, "GET") == 0       ? "GET"
                : strcmp(method, "POST") == 0    ? "POST"
                : strcmp(method, "HEAD") == 0    ? "HEAD"
                : strcmp(method, "OPTIONS") == 0 ? "OPTIONS"
                                                 : "OTHER";
    snprintf(r->key_id, sizeof(r->key_id), "-");
    given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (id_ok(given)) {
        snprintf(r->id, sizeof(r->id), "%s", given);
    } else {
        uint64_t n = atomic_fetch_add_explicit(&api->id_counter, 1, memory_order_relaxed);
        snprintf(r->id, sizeof(r->id), "req-%08x%08llx", (unsigned)api->id_prefix,
                 (unsigned long long)n);
    }
    return r;
}

/* Adds the size of one header as sent ("Name: value\r\n"). */
static enum MHD_Result add_header_bytes(void *cls, enum MHD_ValueKind kind, const char *key,
                                        size_t key_size, const char *value, size_t value_size)
{
    size_t *n = cls;

    DC_UNUSED(kind);
    DC_UNUSED(key);
    DC_UNUSED(value);
    *n += key_size + value_size + 4;
    return MHD_YES;
}

/* The request line's path and query and the headers, in bytes as sent (near enough). */
static size_t header_bytes(struct dc_api_req *r, const char *url)
{
    size_t n = strlen(url) + strlen(r->method) + 12;

    (void)MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND,
                                      add_header_bytes, &n);
    return n;
}

/*
 * The first call for a request: headers are in. Route, authenticate and check the method now,
 * but answer only at the final call (after the body): a response queued before MHD has read
 * the request makes it close the connection, and these errors should not cost a keep-alive
 * connection. A refused request's body is dropped unread into nowhere. A body announced over
 * the limit is the exception: it is answered (and the connection closed) at once.
 */
static enum MHD_Result on_headers(struct dc_api *api, struct dc_api_req *r, const char *url)
{
    const char *want = NULL, *len;
    struct dc_api_error *e = &r->early;

    /* Our own header limit, well inside MHD's memory pool, so an oversized request gets our
     * 431 (X-Request-Id, JSON) rather than MHD's bare one. Only what does not fit the pool at
     * all is still answered by MHD itself (docs/api.md, "Errors"). */
    if (header_bytes(r, url) > DC_API_HEADERS_MAX) {
        dc_api_error_set(e, 431, "invalid_request_error", "request_header_fields_too_large", NULL,
                         "The request line and headers are over the limit of %u bytes",
                         DC_API_HEADERS_MAX);
        return MHD_YES;
    }
    dc_api_route_lookup(r->path, &want);
    if (r->http11 &&
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST) == NULL) {
        dc_api_error_set(e, 400, "invalid_request_error", NULL, NULL, "%s",
                         "HTTP/1.1 requests need a Host header");
        return MHD_YES;
    }
    if (r->route == DC_ROUTE_NOT_FOUND) {
        dc_api_error_set(e, 404, "invalid_request_error", "not_found", NULL, "%s",
                         "Unknown path; see /v1/models, /v1/chat/completions, /v1/completions, "
                         "/v1/embeddings, /health");
        return MHD_YES;
    }
    {
        enum MHD_Result ret;
        if (dc_admin_preflight(r, &ret))
            return ret;
    }
    if (r->route != DC_ROUTE_HEALTH) {
        const char *auth =
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (dc_auth_check(api->auth, auth, r->key_id) < 0) {
            dc_api_error_set(e, 401, "invalid_request_error", "invalid_api_key", NULL, "%s",
                             auth == NULL ? "Missing API key: send 'Authorization: Bearer <key>'"
                                          : "Incorrect API key provided");
            return MHD_YES;
        }
    }
    if (!(strcmp(r->method, want) == 0 ||
          (strcmp(want, "GET") == 0 && strcmp(r->method, "HEAD") == 0))) {
        dc_api_error_set(e, 405, "invalid_request_error", "method_not_allowed", NULL,
                         "Method not allowed on %s; use %s", dc_api_route_name(r->route), want);
        return MHD_YES;
    }
    if (dc_admin_rate_limited(r, e))
        return MHD_YES;
    len = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (strcmp(want, "POST") == 0 && len != NULL && strtoull(len, NULL, 10) > DC_API_BODY_MAX) {
        dc_api_error_set(e, 413, "invalid_request_error", "request_too_large", NULL,
                         "Request body over the limit of %u bytes", DC_API_BODY_MAX);
        return dc_api_send_error(r, e);
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct dc_api *api = cls;
    struct dc_api_req *r = *con_cls;

    if (r == NULL) {
        r = req_new(api, conn, url, method);
        if (r == NULL)
            return MHD_NO;
        r->http11 = strcmp(version, MHD_HTTP_VERSION_1_1) == 0;
        conn_phase(conn, false);
        *con_cls = r;
        return on_headers(api, r, url);
    }
    if (*upload_size > 0) {
        /* A refused request's body is dropped. MHD (0.9.75) cannot answer in the middle of an
         * upload, so a body that outgrows the limit (chunked: no Content-Length to refuse it
         * by) is drained and answered 413 at its end, unless it goes on far beyond the limit:
         * then the connection is closed. */
        if (r->responded || r->early.status != 0) {
            r->drained += *upload_size;
        } else if (dc_buf_append(&r->body, upload, *upload_size) < 0) {
            dc_api_error_set(&r->early, 413, "invalid_request_error", "request_too_large", NULL,
                             "Request body over the limit of %u bytes", DC_API_BODY_MAX);
            dc_buf_cleanup(&r->body);
            r->drained += *upload_size;
        }
        *upload_size = 0;
        return r->drained > (uint64_t)4 * DC_API_BODY_MAX ? MHD_NO : MHD_YES;
    }
    if (r->responded)
        return MHD_YES;
    if (r->early.status != 0)
        return dc_api_send_error(r, &r->early);
    if (r->async)
        return dc_rest_resumed(r);
    if (r->route <= DC_ROUTE_MODELS)
        return dc_rest_get(r);
    return dc_rest_post(r);
}

static size_t status_index(int status)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(status_codes); i++) {
        if (status_codes[i] == status)
            return i;
    }
    return DC_API_N_STATUS - 1;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct dc_api *api = cls;
    struct dc_api_req *r = *con_cls;
    uint64_t us;
    struct dc_gen *cancel = NULL;
    struct dc_api_remote_call *rcancel = NULL;
    uint32_t np, ng;
    bool gone;

    conn_phase(conn, true); /* a keep-alive connection waits for its next request's headers */
    if (r == NULL)
        return;
    *con_cls = NULL;
    watch_del(r);
    pthread_mutex_lock(&r->mu);
    r->closed = true;
    if (r->gen != NULL && !r->done)
        cancel = r->gen;
    if (r->rcall != NULL && !r->done)
        rcancel = r->rcall;
    gone = r->gone;
    np = r->n_prompt;
    ng = r->n_generated;
    pthread_mutex_unlock(&r->mu);
    /* A client gone mid-generation: stop it, so its slot frees at the scheduler's next step. */
    dc_api_cancel(api, cancel, rcancel);

    us = (dc_api_now_ns() - r->t0_ns) / 1000;
    if (r->route < DC_ROUTE_COUNT) {
        size_t b = 0;
        atomic_fetch_add_explicit(&api->m_requests[r->route][status_index(r->status)], 1,
                                  memory_order_relaxed);
        while (b < DC_ARRAY_LEN(buckets_s) && (double)us / 1e6 > buckets_s[b])
            b++;
        atomic_fetch_add_explicit(&api->m_latency[r->route][b], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&api->m_latency_sum_us[r->route], us, memory_order_relaxed);
    }
    if (dc_log_enabled(DC_LOG_INFO))
        dc_log_info(LOG, "%s %s %d %.3fms tokens=%u+%u key=%s id=%s%s", r->method, r->path,
                    r->status, (double)us / 1000.0, np, ng, r->key_id, r->id,
                    toe == MHD_REQUEST_TERMINATED_COMPLETED_OK  ? ""
                    : cancel != NULL || rcancel != NULL || gone ? " (client gone, cancelled)"
                                                                : " (connection closed early)");
    dc_api_req_unref(r);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char line[512];

    DC_UNUSED(cls);
    if (!dc_log_enabled(DC_LOG_DEBUG))
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    dc_log_debug(LOG, "libmicrohttpd: %s", line);
}

/* ---- lifecycle ---- */

static int parse_bind(const char *bind, uint16_t port, struct sockaddr_storage *ss, bool *v6)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (strcmp(bind, "localhost") == 0)
        bind = "127.0.0.1";
    if (inet_pton(AF_INET, bind, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *v6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, bind, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *v6 = true;
        return 0;
    }
    return DC_EINVAL;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* Pins the default model so it is loaded before the ready line and stays loaded. */
static void load_default(struct dc_api *api)
{
    struct dc_model_entry *v = NULL;
    char *err = NULL;
    size_t n = 0;
    int rc;

    if (api->reg == NULL) {
        dc_log_warn(LOG, "no model: inference routes answer 503");
        return;
    }
    rc = dc_registry_acquire(api->reg, NULL, &api->def_engine, &err);
    if (rc < 0) {
        api->def_engine = NULL;
        if (rc == DC_ENOENT)
            dc_log_warn(LOG, "no model: inference routes answer 503 (no [expert].model_path and "
                             "no GGUF in models_dir)");
        else
            dc_log_error(LOG, "cannot load the default model: %s; inference routes answer 503",
                         err != NULL ? err : dc_strerror(rc));
        dc_free(err);
        return;
    }
    api->n_parallel = dc_engine_info(api->def_engine)->n_parallel;
    if (dc_registry_list(api->reg, &v, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (v[i].is_default)
                snprintf(api->def_id, sizeof(api->def_id), "%s", v[i].id);
        }
        dc_model_entries_free(v, n);
    }
    dc_log_info(LOG, "serving model %s (%s, %u slots of %u tokens)",
                api->def_id[0] ? api->def_id : dc_engine_info(api->def_engine)->name,
                dc_engine_info(api->def_engine)->arch, api->n_parallel,
                dc_engine_info(api->def_engine)->n_ctx_per_slot);
}

/* Stops the hang-up watcher and the worker threads and releases the default model: what
 * dc_api_new's failure path and dc_api_free share once those have started. */
static void stop_threads(struct dc_api *api)
{
    watch_stop(api);
    pthread_mutex_lock(&api->wq_mu);
    api->wq_stop = true;
    pthread_cond_broadcast(&api->wq_cv);
    pthread_mutex_unlock(&api->wq_mu);
    for (size_t i = 0; i < api->n_workers; i++)
        pthread_join(api->workers[i], NULL);
    if (api->def_engine != NULL)
        dc_registry_release(api->reg, api->def_engine);
}

/* Frees what the server owns; no thread of its own may still run. */
static void free_server(struct dc_api *api)
{
    dc_api_limits_free(api->limits);
    dc_auth_free(api->auth);
    dc_free(api->models_json);
    dc_free(api->version);
    pthread_mutex_destroy(&api->watch_mu);
    pthread_mutex_destroy(&api->conns_mu);
    pthread_mutex_destroy(&api->models_mu);
    pthread_mutex_destroy(&api->live_mu);
    pthread_cond_destroy(&api->live_cv);
    pthread_mutex_destroy(&api->wq_mu);
    pthread_cond_destroy(&api->wq_cv);
    dc_free(api);
}

int dc_api_new(const struct dc_api_config *cfg, struct dc_api **out, char *err, size_t errlen)
{
    struct dc_api *api;
    struct sockaddr_storage ss;
    unsigned flags;
    bool v6 = false;
    long ncpu;
    unsigned threads;
    const union MHD_DaemonInfo *info;
    int rc;

    *out = NULL;
    if (parse_bind(cfg->bind != NULL ? cfg->bind : "127.0.0.1", cfg->port, &ss, &v6) < 0) {
        snprintf(err, errlen, "[api] bind: '%s' is not an IP address", cfg->bind);
        return DC_EINVAL;
    }
    api = dc_calloc(1, sizeof(*api));
    if (api == NULL)
        return DC_ENOMEM;
    pthread_mutex_init(&api->wq_mu, NULL);
    pthread_cond_init(&api->wq_cv, NULL);
    pthread_mutex_init(&api->live_mu, NULL);
    pthread_cond_init(&api->live_cv, NULL);
    pthread_mutex_init(&api->models_mu, NULL);
    pthread_mutex_init(&api->watch_mu, NULL);
    pthread_mutex_init(&api->conns_mu, NULL);
    api->watch_ep = api->watch_efd = -1;
    api->header_timeout_ns = (uint64_t)(cfg->timeout_s != 0 ? cfg->timeout_s : 15) * 1000000000u;
    api->reg = cfg->registry;
    api->max_queue = cfg->max_queue != 0 ? cfg->max_queue : 64;
    api->n_parallel = 1;
    api->popts.default_temperature = cfg->default_temperature;
    api->peers_count = cfg->peers_count;
    api->peers_ud = cfg->peers_ud;
    api->peers_json = cfg->peers_json;
    api->experts_json = cfg->experts_json;
    api->metrics_extra = cfg->metrics_extra;
    api->peers_connect = cfg->peers_connect;
    api->remote = cfg->remote;
    api->remote_ud = cfg->remote_ud;
    api->started_ns = dc_api_now_ns();
    api->started_at = time(NULL);
    api->id_prefix = randombytes_random();
    api->version = dc_strdup(cfg->version != NULL ? cfg->version : "unknown");
    if (api->version == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    rc = dc_auth_new((const char *const *)cfg->keys, cfg->n_keys, cfg->priority_keys,
                     cfg->n_priority_keys, &api->auth);
    if (rc < 0) {
        snprintf(err, errlen, "[api] api_keys: %s",
                 rc == DC_EINVAL ? "an empty key, or a priority key that is not a key"
                                 : dc_strerror(rc));
        goto err_free;
    }
    rc = dc_api_limits_new(cfg, &api->limits);
    if (rc < 0)
        goto err_free;
    if (!is_loopback(&ss) && !dc_auth_enabled(api->auth))
        dc_log_warn(LOG,
                    "!!! the API binds %s beyond loopback WITHOUT API keys: anyone who can reach "
                    "port %u can use this node. Set [api].api_keys or --api-key. !!!",
                    cfg->bind, (unsigned)cfg->port);

    load_default(api);
    api->models.reg = api->reg;
    api->models.def_engine = api->def_engine;
    api->models.def_id = api->def_id;
    api->models.remote = api->remote;

    if (watch_start(api) < 0)
        dc_log_warn(LOG,
                    "no hang-up watcher (%s): a client that leaves is noticed at its next "
                    "token",
                    dc_strerror(-errno));
    for (; api->n_workers < DC_ARRAY_LEN(api->workers); api->n_workers++) {
        if (pthread_create(&api->workers[api->n_workers], NULL, worker_main, api) != 0) {
            rc = DC_ENOMEM;
            snprintf(err, errlen, "cannot start the API worker threads");
            goto err_workers;
        }
    }

    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    threads = cfg->threads != 0 ? cfg->threads : (unsigned)(ncpu > 0 ? (ncpu > 8 ? 8 : ncpu) : 1);
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
            MHD_USE_TURBO | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    api->mhd = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, on_request, api, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, api,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(cfg->max_connections != 0 ? cfg->max_connections : 1024),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)DC_API_CONN_MEMORY,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(cfg->timeout_s != 0 ? cfg->timeout_s : 15),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        api, MHD_OPTION_NOTIFY_CONNECTION, on_connection, api, MHD_OPTION_END);
    if (api->mhd == NULL) {
        rc = -EADDRINUSE;
        snprintf(err, errlen, "cannot listen on %s:%u for the REST API (in use or not permitted)",
                 cfg->bind, (unsigned)cfg->port);
        goto err_workers;
    }
    info = MHD_get_daemon_info(api->mhd, MHD_DAEMON_INFO_BIND_PORT);
    api->port = info != NULL ? info->port : cfg->port;
    *out = api;
    return 0;

err_workers:
    stop_threads(api);
err_free:
    free_server(api);
    return rc;
}

uint16_t dc_api_port(const struct dc_api *api)
{
    return api->port;
}

bool dc_api_has_model(const struct dc_api *api)
{
    return api->def_engine != NULL;
}

void dc_api_free(struct dc_api *api)
{
    struct timespec until;

    if (api == NULL)
        return;
    atomic_store(&api->stopping, true);
    /* Cancel every generation in flight and wait (bounded) until each has settled, so no
     * connection is left suspended when MHD stops (an API violation). */
    pthread_mutex_lock(&api->live_mu);
    for (struct dc_api_req *r = api->live; r != NULL; r = r->live_next) {
        pthread_mutex_lock(&r->mu);
        if (!r->done)
            dc_api_cancel(api, r->gen, r->rcall);
        pthread_mutex_unlock(&r->mu);
    }
    /* Cancelled requests end at the scheduler's next step. Engine callbacks point at this
     * server, so it cannot go before the last one returns: wait as long as it takes. */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    while (api->n_live > 0 || api->n_engine_refs > 0) {
        if (pthread_cond_timedwait(&api->live_cv, &api->live_mu, &until) != 0) {
            dc_log_warn(LOG, "shutdown: still waiting for %u request(s) in flight",
                        api->n_live + api->n_engine_refs);
            until.tv_sec += 5;
        }
    }
    pthread_mutex_unlock(&api->live_mu);

    MHD_stop_daemon(api->mhd);
    stop_threads(api);
    free_server(api);
}

/* Metrics text, used by rest.c's /metrics. */
int dc_api_metrics_text(struct dc_api *api, struct dc_buf *b);
int dc_api_metrics_text(struct dc_api *api, struct dc_buf *b)
{
    int rc = 0;

    rc |= dc_buf_append_str(b, "# HELP democritus_http_requests_total HTTP requests by route and "
                               "status.\n# TYPE democritus_http_requests_total counter\n");
    for (int r = 0; r < DC_ROUTE_COUNT; r++) {
        for (int s = 0; s < DC_API_N_STATUS; s++) {
            uint64_t v = atomic_load_explicit(&api->m_requests[r][s], memory_order_relaxed);
            char st[8];
            if (v == 0)
                continue;
            if (s < DC_API_N_STATUS - 1)
                snprintf(st, sizeof(st), "%d", status_codes[s]);
            else
                snprintf(st, sizeof(st), "other");
            rc |= dc_buf_printf(b,
                                "democritus_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                                dc_api_route_name((enum dc_api_route)r), st, (unsigned long long)v);
        }
    }
    rc |= dc_buf_append_str(b, "# HELP democritus_http_request_duration_seconds Time from headers "
                               "to completion.\n# TYPE democritus_http_request_duration_seconds "
                               "histogram\n");
    for (int r = 0; r < DC_ROUTE_COUNT; r++) {
        uint64_t cum = 0;
        const char *name = dc_api_route_name((enum dc_api_route)r);
        for (int k = 0; k < DC_API_N_BUCKETS; k++) {
            cum += atomic_load_explicit(&api->m_latency[r][k], memory_order_relaxed);
            if (k < DC_API_N_BUCKETS - 1)
                rc |= dc_buf_printf(b,
                                    "democritus_http_request_duration_seconds_bucket{route=\"%s\","
                                    "le=\"%g\"} %llu\n",
                                    name, buckets_s[k], (unsigned long long)cum);
            else
                rc |= dc_buf_printf(b,
                                    "democritus_http_request_duration_seconds_bucket{route=\"%s\","
                                    "le=\"+Inf\"} %llu\n",
                                    name, (unsigned long long)cum);
        }
        rc |= dc_buf_printf(
            b, "democritus_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", name,
            (double)atomic_load_explicit(&api->m_latency_sum_us[r], memory_order_relaxed) / 1e6);
        rc |=
            dc_buf_printf(b, "democritus_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                          name, (unsigned long long)cum);
    }
    rc |= dc_buf_printf(b,
                        "# HELP democritus_tokens_total Tokens processed.\n# TYPE "
                        "democritus_tokens_total counter\n"
                        "democritus_tokens_total{kind=\"prompt\"} %llu\n"
                        "democritus_tokens_total{kind=\"completion\"} %llu\n"
                        "# HELP democritus_rejected_total Requests refused with 429.\n# TYPE "
                        "democritus_rejected_total counter\ndemocritus_rejected_total %llu\n",
                        (unsigned long long)atomic_load(&api->m_tokens_prompt),
                        (unsigned long long)atomic_load(&api->m_tokens_completion),
                        (unsigned long long)atomic_load(&api->m_rejected));
    return rc < 0 ? DC_ENOMEM : 0;
}

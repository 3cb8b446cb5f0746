/* SPDX-License-Identifier: MIT */
/*
 * admin.c - the P2P admin routes (GET /api/peers, POST /api/peers/connect), CORS, and the
 * per-key rate limit.
 *
 * The host lives on the daemon's loop thread, so these routes never touch it: GET /api/peers
 * copies a snapshot the daemon keeps (peers_json must not block a polling thread), and a connect
 * runs as a worker job like an inference request (suspend, job, resume), because the daemon's
 * peers_connect blocks until the dial ends or times out.
 *
 * CORS: a request whose Origin is in [api].cors_origins (or the list holds "*") gets
 * Access-Control-Allow-Origin on every response; a preflight (OPTIONS with
 * Access-Control-Request-Method) from such an origin is answered 204 before authentication,
 * as browsers send it without credentials. Other origins get no CORS headers, so the browser
 * blocks them; non-browser clients are unaffected.
 *
 * Rate limit: one token bucket per API key id (per client IP address when auth is off) of
 * rate_limit_rpm tokens, refilled continuously at rpm/60 per second. The limiter is its own
 * object (struct dc_api_ratelimit) so that the daemon can hand one to REST, WebSocket and gRPC
 * alike: a key has one budget whichever interface it calls (dc_api_rate_limited). The table is
 * bounded (DC_API_RL_SLOTS, open addressing); when a probe finds no free slot, the bucket idle the
 * longest is reused, which can only forgive a client, never refuse one unfairly.
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "base/log.h"

#define LOG "api"

#define DC_API_RL_SLOTS    4096
#define DC_API_RL_PROBE    16
#define DC_API_RL_KEY      64
#define CONNECT_TIMEOUT_MS 10000

struct rl_bucket {
    char key[DC_API_RL_KEY]; /* "" = free */
    double tokens;
    uint64_t last_ns;
};

/* The limiter REST, WebSocket and gRPC share (api.h). */
struct dc_api_ratelimit {
    uint32_t rpm;
    pthread_mutex_t mu;
    struct rl_bucket *buckets; /* DC_API_RL_SLOTS */
};

struct dc_api_limits {
    char **origins;
    size_t n_origins;
    bool any_origin;
    struct dc_api_ratelimit *rl; /* NULL: no rate limit */
    bool own_rl;                 /* made from rate_limit_rpm (else borrowed) */
};

int dc_api_ratelimit_new(uint32_t rpm, struct dc_api_ratelimit **out)
{
    struct dc_api_ratelimit *rl;

    *out = NULL;
    if (rpm == 0)
        return DC_EINVAL;
    rl = dc_calloc(1, sizeof(*rl));
    if (rl == NULL)
        return DC_ENOMEM;
    rl->buckets = dc_calloc(DC_API_RL_SLOTS, sizeof(*rl->buckets));
    if (rl->buckets == NULL) {
        dc_free(rl);
        return DC_ENOMEM;
    }
    rl->rpm = rpm;
    pthread_mutex_init(&rl->mu, NULL);
    *out = rl;
    return 0;
}

void dc_api_ratelimit_free(struct dc_api_ratelimit *rl)
{
    if (rl == NULL)
        return;
    pthread_mutex_destroy(&rl->mu);
    dc_free(rl->buckets);
    dc_free(rl);
}

int dc_api_limits_new(const struct dc_api_config *cfg, struct dc_api_limits **out)
{
    struct dc_api_limits *l = dc_calloc(1, sizeof(*l));

    *out = NULL;
    if (l == NULL)
        return DC_ENOMEM;
    if (cfg->n_cors_origins > 0) {
        l->origins = dc_calloc(cfg->n_cors_origins, sizeof(*l->origins));
        if (l->origins == NULL)
            goto err_free;
        for (size_t i = 0; i < cfg->n_cors_origins; i++) {
            if (strcmp(cfg->cors_origins[i], "*") == 0)
                l->any_origin = true;
            l->origins[i] = dc_strdup(cfg->cors_origins[i]);
            if (l->origins[i] == NULL)
                goto err_free;
            l->n_origins = i + 1;
        }
    }
    if (cfg->ratelimit != NULL) {
        l->rl = cfg->ratelimit;
    } else if (cfg->rate_limit_rpm > 0) {
        if (dc_api_ratelimit_new(cfg->rate_limit_rpm, &l->rl) < 0)
            goto err_free;
        l->own_rl = true;
    }
    *out = l;
    return 0;

err_free:
    dc_api_limits_free(l);
    return DC_ENOMEM;
}

void dc_api_limits_free(struct dc_api_limits *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n_origins; i++)
        dc_free(l->origins[i]);
    dc_free(l->origins);
    if (l->own_rl)
        dc_api_ratelimit_free(l->rl);
    dc_free(l);
}

/* ---- CORS ---- */

/* The request's Origin when it is allowed, else NULL. */
static const char *allowed_origin(struct dc_api_req *r)
{
    struct dc_api_limits *l = r->api->limits;
    const char *origin;

    if (l == NULL || l->n_origins == 0)
        return NULL;
    origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (origin == NULL)
        return NULL;
    if (l->any_origin)
        return origin;
    for (size_t i = 0; i < l->n_origins; i++) {
        if (strcmp(l->origins[i], origin) == 0)
            return origin;
    }
    return NULL;
}

void dc_admin_cors_headers(struct dc_api_req *r, struct MHD_Response *resp)
{
    const char *origin = allowed_origin(r);

    if (origin == NULL)
        return;
    /* The exact origin, not "*": responses may carry credentials-bearing answers. */
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
    MHD_add_response_header(resp, "Vary", "Origin");
}

static enum MHD_Result preflight(struct dc_api_req *r, const char *allow)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            "Authorization, Content-Type, X-Request-Id");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    return dc_api_send(r, 204, resp, NULL);
}

/* ---- rate limit ---- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void dc_api_client_addr(const struct sockaddr *sa, char out[DC_API_ADDR_LEN])
{
    snprintf(out, DC_API_ADDR_LEN, "?");
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, DC_API_ADDR_LEN);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, DC_API_ADDR_LEN);
}

bool dc_api_ratelimit_take(struct dc_api_ratelimit *l, const char *key_in, uint64_t now,
                           uint32_t *retry_ms)
{
    char key[DC_API_RL_KEY];
    uint64_t h;
    double cap = (double)l->rpm, per_ns = (double)l->rpm / 60e9;
    struct rl_bucket *b = NULL, *victim = NULL;
    bool ok;

    snprintf(key, sizeof(key), "%s", key_in); /* as stored, so long keys still match */
    h = fnv1a(key);
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < DC_API_RL_PROBE && b == NULL; i++) {
        struct rl_bucket *s = &l->buckets[(h + i) % DC_API_RL_SLOTS];
        if (strcmp(s->key, key) == 0)
            b = s;
        else if (s->key[0] == '\0' && victim == NULL)
            victim = s;
    }
    if (b == NULL) {
        if (victim == NULL) {
            /* No free slot in the probe: reuse the one idle the longest. */
            for (size_t i = 0; i < DC_API_RL_PROBE; i++) {
                struct rl_bucket *s = &l->buckets[(h + i) % DC_API_RL_SLOTS];
                if (victim == NULL || s->last_ns < victim->last_ns)
                    victim = s;
            }
        }
        b = victim;
        snprintf(b->key, sizeof(b->key), "%s", key);
        b->tokens = cap;
        b->last_ns = now;
    }
    if (now > b->last_ns)
        b->tokens = fmin(cap, b->tokens + (double)(now - b->last_ns) * per_ns);
    b->last_ns = now;
    ok = b->tokens >= 1.0;
    if (ok) {
        b->tokens -= 1.0;
    } else {
        /* Rounded up, less a hair of floating-point noise: 20000.000000001 ms is 20 s. */
        double ms = ceil((1.0 - b->tokens) * 60000.0 / cap - 1e-6);
        *retry_ms = ms < 1.0 ? 1u : ms > 4e9 ? 4000000000u : (uint32_t)ms;
    }
    pthread_mutex_unlock(&l->mu);
    return ok;
}

bool dc_api_rate_take(struct dc_api_limits *l, const char *key, uint64_t now, uint32_t *retry_s)
{
    uint32_t ms = 0;

    if (dc_api_ratelimit_take(l->rl, key, now, &ms))
        return true;
    *retry_s = (ms + 999u) / 1000u;
    return false;
}

bool dc_api_rate_limited(struct dc_api_ratelimit *rl, const char *key_id, const char *client,
                         struct dc_api_error *e)
{
    bool by_key = key_id != NULL && strcmp(key_id, "-") != 0;
    uint32_t retry = 1000;

    if (rl == NULL || dc_api_ratelimit_take(rl,
                                            by_key           ? key_id
                                            : client != NULL ? client
                                                             : "?",
                                            dc_api_now_ns(), &retry))
        return false;
    dc_api_error_set(e, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                     "Rate limit of %u requests per minute reached for %s; retry after %u ms",
                     (unsigned)rl->rpm, by_key ? "this key" : "this address", (unsigned)retry);
    e->retry_after_ms = retry;
    return true;
}

bool dc_admin_preflight(struct dc_api_req *r, enum MHD_Result *ret)
{
    const char *want = NULL;

    if (r->api->limits == NULL || strcmp(r->method, "OPTIONS") != 0)
        return false;
    dc_api_route_lookup(r->path, &want);
    if (want == NULL || allowed_origin(r) == NULL ||
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Access-Control-Request-Method") ==
            NULL)
        return false; /* not a preflight we serve: 401/405 as for any other method */
    *ret = preflight(r, strcmp(want, "GET") == 0 ? "GET, HEAD, OPTIONS" : "POST, OPTIONS");
    return true;
}

bool dc_admin_rate_limited(struct dc_api_req *r, struct dc_api_error *e)
{
    struct dc_api_limits *l = r->api->limits;
    const union MHD_ConnectionInfo *ci;
    char client[DC_API_ADDR_LEN];

    if (l == NULL || l->rl == NULL || r->route == DC_ROUTE_HEALTH)
        return false;
    ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    dc_api_client_addr(ci != NULL ? ci->client_addr : NULL, client);
    if (!dc_api_rate_limited(l->rl, r->key_id, client, e))
        return false;
    atomic_fetch_add(&r->api->m_rejected, 1);
    return true;
}

/* ---- /api/peers ---- */

static enum MHD_Result unavailable(struct dc_api_req *r)
{
    struct dc_api_error e;

    dc_api_error_set(&e, 503, "server_error", "p2p_unavailable", NULL, "%s",
                     "This server has no P2P host (peers are not available)");
    return dc_api_send_error(r, &e);
}

/* {"<member>": <the array a daemon hook returns>}, or 503 without the hook. */
static enum MHD_Result send_hook_array(struct dc_api_req *r, const char *member,
                                       int (*hook)(void *ud, char **out, size_t *len))
{
    struct dc_api *api = r->api;
    char *arr = NULL;
    size_t n = 0;
    struct dc_buf b;
    enum MHD_Result ret;
    int rc;

    if (hook == NULL)
        return unavailable(r);
    rc = hook(api->peers_ud, &arr, &n);
    if (rc < 0)
        return MHD_NO;
    dc_buf_init(&b, 0);
    rc = dc_buf_printf(&b, "{\"%s\":", member);
    if (rc == 0)
        rc = dc_buf_append(&b, arr, n);
    if (rc == 0)
        rc = dc_buf_append_str(&b, "}");
    dc_free(arr);
    ret =
        rc == 0 ? dc_api_send_buf(r, 200, (const char *)b.data, b.len, "application/json") : MHD_NO;
    dc_buf_cleanup(&b);
    return ret;
}

enum MHD_Result dc_admin_get_peers(struct dc_api_req *r)
{
    return send_hook_array(r, "peers", r->api->peers_json);
}

enum MHD_Result dc_admin_get_experts(struct dc_api_req *r)
{
    return send_hook_array(r, "experts", r->api->experts_json);
}

/* ---- /api/peers/connect ---- */

enum MHD_Result dc_admin_connect_post(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    struct dc_api_error e;
    json_error_t je;
    json_t *root, *ma;
    int rc;

    if (api->peers_connect == NULL)
        return unavailable(r);
    root = json_loadb((const char *)r->body.data, r->body.len, 0, &je);
    if (root == NULL) {
        dc_api_error_set(&e, 400, "invalid_request_error", "invalid_json", NULL,
                         "Malformed JSON at line %d, column %d: %s", je.line, je.column, je.text);
        return dc_api_send_error(r, &e);
    }
    ma = json_object_get(root, "multiaddr");
    if (!json_is_string(ma) || json_string_length(ma) == 0 || json_string_length(ma) > 1024) {
        json_decref(root);
        dc_api_error_set(&e, 400, "invalid_request_error", "invalid_type", "multiaddr", "%s",
                         "'multiaddr' must be a string such as /ip4/1.2.3.4/tcp/4001/p2p/12D3...");
        return dc_api_send_error(r, &e);
    }
    /* The worker reads the address from r->out, where the answer then goes. */
    rc = dc_buf_append(&r->out, json_string_value(ma), json_string_length(ma) + 1);
    json_decref(root);
    if (rc < 0)
        return MHD_NO;
    dc_api_watch_add(r);
    pthread_mutex_lock(&r->mu);
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&r->mu);
    dc_api_job_push(r, DC_JOB_START);
    return MHD_YES;
}

void dc_admin_connect_run(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    char peer[128] = "", err[512] = "", *addr;
    struct dc_buf body;
    bool wake;
    int rc;

    addr = dc_strdup((const char *)r->out.data);
    if (addr == NULL) {
        rc = DC_ENOMEM;
        snprintf(err, sizeof(err), "%s", dc_strerror(rc));
    } else {
        rc = api->peers_connect(api->peers_ud, addr, CONNECT_TIMEOUT_MS, peer, sizeof(peer), err,
                                sizeof(err));
    }
    dc_buf_init(&body, 0);
    if (rc == 0) {
        int brc = dc_buf_append_str(&body, "{\"peer_id\":");
        if (brc == 0)
            brc = dc_api_json_str(&body, peer, strlen(peer));
        if (brc == 0)
            brc = dc_buf_append_str(&body, ",\"multiaddr\":");
        if (brc == 0)
            brc = dc_api_json_str(&body, addr, strlen(addr));
        if (brc == 0)
            brc = dc_buf_append_str(&body, ",\"connected\":true}");
        if (brc < 0)
            rc = brc;
    }
    dc_log_info(LOG, "peers/connect %s: %s", addr != NULL ? addr : "?", rc == 0 ? peer : err);
    pthread_mutex_lock(&r->mu);
    r->out.len = 0;
    if (rc == 0 && dc_buf_append(&r->out, body.data, body.len) == 0) {
        r->done = true;
    } else {
        r->has_err = true;
        if (rc == DC_EINVAL)
            dc_api_error_set(&r->err, 400, "invalid_request_error", "invalid_multiaddr",
                             "multiaddr", "%s", err);
        else if (rc == DC_ETIMEDOUT)
            dc_api_error_set(&r->err, 504, "server_error", "peer_timeout", NULL, "%s",
                             err[0] ? err : "the dial timed out");
        else if (rc == DC_ECLOSED)
            dc_api_error_set(&r->err, 503, "server_error", NULL, NULL, "%s",
                             "The server is shutting down");
        else
            dc_api_error_set(&r->err, 502, "server_error", "peer_unreachable", NULL, "%s",
                             err[0] ? err : dc_strerror(rc));
    }
    wake = dc_api_wake_locked(r);
    pthread_mutex_unlock(&r->mu);
    dc_buf_cleanup(&body);
    dc_free(addr);
    dc_api_settle(r);
    if (wake)
        MHD_resume_connection(r->conn);
}

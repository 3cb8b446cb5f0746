/* SPDX-License-Identifier: MIT */
/*
 * rest.c - the routes: OpenAI's /v1/chat/completions, /v1/completions, /v1/embeddings and
 * /v1/models, and the admin routes /health, /api/health, /api/models and /metrics (the P2P
 * admin routes /api/peers and /api/peers/connect, CORS and the rate limit are in admin.c).
 *
 * An inference request goes through three hands. The polling thread parses and validates it
 * (parse.c) and answers any problem at once; otherwise it suspends the connection and queues a
 * START job. A worker acquires the model (resolve.c, as the WebSocket and gRPC servers do; it
 * may load it), applies admission (a bounded
 * queue per model, else 429), renders the chat prompt and submits to the engine, or runs the
 * blocking embedding. The engine's callback (sse.c) collects the output and resumes the
 * connection, and the polling thread answers from what was collected (dc_rest_resumed).
 * A chat whose model is a PeerId skips the registry: the worker hands it to the remote hooks
 * (start_remote), whose events take the same path from the daemon's loop thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "api/api_int.h"
#include "base/log.h"

#define LOG             "api"
#define INLINE_MAX_BODY (16u * 1024u) /* requests started on the polling thread at most */

int dc_api_metrics_text(struct dc_api *api, struct dc_buf *b);

static const char health_body[] = "{\"status\":\"ok\"}";

/* ---- admission ---- */

/* Takes an admission slot on 'e'. False when the model's queue is full. */
static bool admit(struct dc_api_req *r, struct dc_engine *e)
{
    struct dc_api *api = r->api;
    struct dc_api_admit *slot = NULL, *free_slot = NULL;
    uint32_t slots = dc_engine_info(e)->n_parallel;
    bool ok = false;

    pthread_mutex_lock(&api->live_mu);
    for (size_t i = 0; i < DC_API_MAX_ENGINES; i++) {
        if (api->admit[i].engine == e)
            slot = &api->admit[i];
        else if (api->admit[i].inflight == 0 && free_slot == NULL)
            free_slot = &api->admit[i];
    }
    if (slot == NULL && free_slot != NULL) {
        slot = free_slot;
        slot->engine = e;
        slot->inflight = 0;
    }
    if (slot != NULL && slot->inflight < slots + api->max_queue) {
        slot->inflight++;
        ok = true;
    }
    pthread_mutex_unlock(&api->live_mu);
    return ok;
}

void dc_rest_unadmit(struct dc_api_req *r)
{
    struct dc_api *api = r->api;

    if (!r->admitted)
        return;
    r->admitted = false;
    pthread_mutex_lock(&api->live_mu);
    for (size_t i = 0; i < DC_API_MAX_ENGINES; i++) {
        if (api->admit[i].engine == r->engine && api->admit[i].inflight > 0) {
            api->admit[i].inflight--;
            break;
        }
    }
    pthread_mutex_unlock(&api->live_mu);
}

/* ---- GET routes ---- */

/* /v1/models: rebuilt at most once a second, so the hot path is one copy. */
static enum MHD_Result get_models(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    uint64_t now = dc_api_now_ns();
    enum MHD_Result ret;

    pthread_mutex_lock(&api->models_mu);
    if (api->models_json == NULL || now - api->models_at_ns > 1000000000u) {
        struct dc_model_entry *v = NULL;
        size_t n = 0;
        struct dc_buf b;
        long long created = (long long)api->started_at;
        int rc = 0;

        dc_buf_init(&b, 0);
        rc = dc_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
        if (rc == 0 && api->def_engine != NULL)
            rc = dc_buf_printf(&b,
                               "{\"id\":\"local\",\"object\":\"model\",\"created\":%lld,"
                               "\"owned_by\":\"democritus\"}",
                               created);
        if (rc == 0 && api->remote != NULL)
            rc = dc_buf_printf(&b,
                               "%s{\"id\":\"swarm\",\"object\":\"model\",\"created\":%lld,"
                               "\"owned_by\":\"democritus\"}",
                               b.data[b.len - 1] == '}' ? "," : "", created);
        if (rc == 0 && api->reg != NULL && dc_registry_list(api->reg, &v, &n) == 0) {
            for (size_t i = 0; i < n && rc == 0; i++) {
                if (v[i].error != NULL)
                    continue; /* a file the registry refuses to load is not a model */
                if (b.len > 0 && b.data[b.len - 1] == '}')
                    rc = dc_buf_append_str(&b, ",");
                if (rc == 0)
                    rc = dc_buf_append_str(&b, "{\"id\":");
                if (rc == 0)
                    rc = dc_api_json_str(&b, v[i].id, strlen(v[i].id));
                if (rc == 0)
                    rc = dc_buf_printf(&b,
                                       ",\"object\":\"model\",\"created\":%lld,\"owned_by\":"
                                       "\"democritus\"}",
                                       v[i].mtime > 0 ? (long long)v[i].mtime : created);
            }
            dc_model_entries_free(v, n);
        }
        if (rc == 0)
            rc = dc_buf_append_str(&b, "]}");
        if (rc == 0) {
            dc_free(api->models_json);
            api->models_json = (char *)dc_buf_steal(&b, &api->models_len);
            api->models_at_ns = now;
        }
        dc_buf_cleanup(&b);
    }
    if (api->models_json == NULL) {
        pthread_mutex_unlock(&api->models_mu);
        return MHD_NO;
    }
    ret = dc_api_send_buf(r, 200, api->models_json, api->models_len, "application/json");
    pthread_mutex_unlock(&api->models_mu);
    return ret;
}

static int entry_json(struct dc_buf *b, const struct dc_model_entry *m)
{
    int rc = 0;

    rc |= dc_buf_append_str(b, "{\"id\":");
    rc |= dc_api_json_str(b, m->id, strlen(m->id));
    rc |= dc_buf_append_str(b, ",\"path\":");
    rc |= dc_api_json_str(b, m->path ? m->path : "", m->path ? strlen(m->path) : 0);
    rc |= dc_buf_append_str(b, ",\"arch\":");
    rc |= dc_api_json_str(b, m->arch ? m->arch : "", m->arch ? strlen(m->arch) : 0);
    rc |= dc_buf_append_str(b, ",\"name\":");
    rc |= dc_api_json_str(b, m->name ? m->name : "", m->name ? strlen(m->name) : 0);
    rc |= dc_buf_append_str(b, ",\"quantization\":");
    rc |= dc_api_json_str(b, m->quantization ? m->quantization : "",
                          m->quantization ? strlen(m->quantization) : 0);
    rc |= dc_buf_append_str(b, ",\"error\":");
    if (m->error != NULL)
        rc |= dc_api_json_str(b, m->error, strlen(m->error));
    else
        rc |= dc_buf_append_str(b, "null");
    rc |= dc_buf_printf(b,
                        ",\"n_params\":%" PRIu64 ",\"size_bytes\":%" PRIu64
                        ",\"n_ctx_train\":%" PRIu64 ",\"sha256\":\"%s\",\"loaded\":%s,"
                        "\"default\":%s}",
                        m->n_params, m->size_bytes, m->n_ctx_train, m->sha256,
                        m->loaded ? "true" : "false", m->is_default ? "true" : "false");
    return rc < 0 ? DC_ENOMEM : 0;
}

static enum MHD_Result get_api_models(struct dc_api_req *r)
{
    struct dc_model_entry *v = NULL;
    size_t n = 0;
    struct dc_buf b;
    enum MHD_Result ret;
    int rc;

    dc_buf_init(&b, 0);
    rc = dc_buf_append_str(&b, "{\"models\":[");
    if (rc == 0 && r->api->reg != NULL && dc_registry_list(r->api->reg, &v, &n) == 0) {
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (i > 0)
                rc = dc_buf_append_str(&b, ",");
            if (rc == 0)
                rc = entry_json(&b, &v[i]);
        }
        dc_model_entries_free(v, n);
    }
    if (rc == 0)
        rc = dc_buf_append_str(&b, "]}");
    ret =
        rc == 0 ? dc_api_send_buf(r, 200, (const char *)b.data, b.len, "application/json") : MHD_NO;
    dc_buf_cleanup(&b);
    return ret;
}

static uint64_t rss_bytes(void)
{
    unsigned long long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static enum MHD_Result get_api_health(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    struct dc_engine_stats st = {0};
    uint32_t other = 0;
    struct dc_buf b;
    enum MHD_Result ret;
    int rc = 0;

    if (api->def_engine != NULL)
        dc_engine_stats(api->def_engine, &st);
    pthread_mutex_lock(&api->live_mu);
    for (size_t i = 0; i < DC_API_MAX_ENGINES; i++) {
        if (api->admit[i].engine != NULL && api->admit[i].engine != api->def_engine)
            other += api->admit[i].inflight;
    }
    pthread_mutex_unlock(&api->live_mu);

    dc_buf_init(&b, 0);
    rc |= dc_buf_printf(&b, "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_s\":%.3f,",
                        api->version, (double)(dc_api_now_ns() - api->started_ns) / 1e9);
    if (api->def_engine != NULL) {
        const struct dc_engine_info *info = dc_engine_info(api->def_engine);
        struct dc_model_entry *v = NULL;
        size_t n = 0;
        const char *sha = "";

        if (api->reg != NULL && dc_registry_list(api->reg, &v, &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                if (v[i].is_default)
                    sha = v[i].sha256;
            }
        }
        rc |= dc_buf_append_str(&b, "\"model\":{\"id\":");
        rc |= dc_api_json_str(&b, api->def_id, strlen(api->def_id));
        rc |= dc_buf_append_str(&b, ",\"name\":");
        rc |=
            dc_api_json_str(&b, info->name ? info->name : "", info->name ? strlen(info->name) : 0);
        rc |= dc_buf_printf(&b,
                            ",\"loaded\":true,\"arch\":\"%s\",\"sha256\":\"%s\",\"n_ctx_per_slot\":"
                            "%u,\"n_parallel\":%u,\"size_bytes\":%" PRIu64 "},",
                            info->arch ? info->arch : "", sha, info->n_ctx_per_slot,
                            info->n_parallel, info->size_bytes);
        dc_model_entries_free(v, n);
    } else {
        rc |= dc_buf_append_str(&b, "\"model\":null,");
    }
    rc |= dc_buf_printf(&b,
                        "\"active_requests\":%u,\"queued_requests\":%u,\"requests_done\":%" PRIu64
                        ",\"memory\":{\"rss_bytes\":%" PRIu64 "},",
                        st.active + other, st.queued, st.requests_done, rss_bytes());
    if (api->peers_count != NULL)
        rc |= dc_buf_printf(&b, "\"peers\":%u}", api->peers_count(api->peers_ud));
    else
        rc |= dc_buf_append_str(&b, "\"peers\":null}");
    ret =
        rc == 0 ? dc_api_send_buf(r, 200, (const char *)b.data, b.len, "application/json") : MHD_NO;
    dc_buf_cleanup(&b);
    return ret;
}

static enum MHD_Result get_metrics(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    struct dc_engine_stats st = {0};
    struct dc_buf b;
    enum MHD_Result ret;
    int rc;

    if (api->def_engine != NULL)
        dc_engine_stats(api->def_engine, &st);
    dc_buf_init(&b, 0);
    rc = dc_api_metrics_text(api, &b);
    if (rc == 0)
        rc = dc_buf_printf(&b,
                           "# HELP democritus_active_requests Requests holding an engine slot.\n"
                           "# TYPE democritus_active_requests gauge\n"
                           "democritus_active_requests %u\n"
                           "# HELP democritus_queue_depth Requests waiting for an engine slot.\n"
                           "# TYPE democritus_queue_depth gauge\n"
                           "democritus_queue_depth %u\n"
                           "# HELP democritus_uptime_seconds Seconds since start.\n"
                           "# TYPE democritus_uptime_seconds gauge\n"
                           "democritus_uptime_seconds %.3f\n",
                           st.active, st.queued, (double)(dc_api_now_ns() - api->started_ns) / 1e9);
    if (rc == 0 && api->peers_count != NULL)
        rc = dc_buf_printf(&b,
                           "# HELP democritus_peers Connected peers.\n# TYPE democritus_peers "
                           "gauge\ndemocritus_peers %u\n",
                           api->peers_count(api->peers_ud));
    if (rc == 0 && api->metrics_extra != NULL)
        rc = api->metrics_extra(api->peers_ud, &b);
    ret = rc == 0 ? dc_api_send_buf(r, 200, (const char *)b.data, b.len,
                                    "text/plain; version=0.0.4; charset=utf-8")
                  : MHD_NO;
    dc_buf_cleanup(&b);
    return ret;
}

enum MHD_Result dc_rest_get(struct dc_api_req *r)
{
    switch (r->route) {
    case DC_ROUTE_HEALTH: {
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            sizeof(health_body) - 1, (void *)health_body, MHD_RESPMEM_PERSISTENT);
        return dc_api_send(r, 200, resp, "application/json");
    }
    case DC_ROUTE_API_HEALTH:
        return get_api_health(r);
    case DC_ROUTE_API_MODELS:
        return get_api_models(r);
    case DC_ROUTE_METRICS:
        return get_metrics(r);
    case DC_ROUTE_MODELS:
        return get_models(r);
    case DC_ROUTE_API_PEERS:
        return dc_admin_get_peers(r);
    case DC_ROUTE_API_EXPERTS:
        return dc_admin_get_experts(r);
    default:
        return MHD_NO;
    }
}

/* ---- POST routes ---- */

static enum dc_api_kind route_kind(enum dc_api_route route)
{
    return route == DC_ROUTE_CHAT          ? DC_API_CHAT
           : route == DC_ROUTE_COMPLETIONS ? DC_API_COMPLETION
                                           : DC_API_EMBEDDING;
}

enum MHD_Result dc_rest_post(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    struct dc_api_error e;
    enum dc_api_target target;
    int rc;

    if (r->route == DC_ROUTE_API_PEERS_CONNECT)
        return dc_admin_connect_post(r);
    rc = dc_api_parse_request(route_kind(r->route), (const char *)r->body.data, r->body.len,
                              &api->popts, &r->preq, &e);
    if (rc < 0)
        return dc_api_send_error(r, &e);
    target = dc_api_model_target(&api->models, r->preq.model);
    r->remote = target == DC_API_TARGET_PEER;
    if (r->remote) {
        struct dc_engine *none;

        /* For a PeerId this never blocks: it checks what a peer can take, at once. */
        if (dc_api_model_resolve(&api->models, &r->preq, &target, &none, &e) < 0)
            return dc_api_send_error(r, &e);
    }
    if ((!r->remote && (api->reg == NULL || api->def_engine == NULL)) ||
        atomic_load(&api->stopping)) {
        dc_api_error_set(&e, 503, "server_error", "model_not_loaded", NULL, "%s",
                         atomic_load(&api->stopping)
                             ? "The server is shutting down"
                             : "No model is loaded on this node (started without a model)");
        return dc_api_send_error(r, &e);
    }
    /* Suspend first, then hand over: whoever finishes resumes, and cannot miss us. */
    dc_api_watch_add(r);
    pthread_mutex_lock(&r->mu);
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&r->mu);
    /* A chat or completion on the loaded default model only renders, tokenizes and queues:
     * start it here, without waking a worker (one thread hand-off less before the first
     * token). A large body (a long prompt to tokenize), a registry model (maybe a load) and
     * embeddings (which wait for the engine) go to the workers. */
    if (target == DC_API_TARGET_DEFAULT && r->preq.kind != DC_API_EMBEDDING &&
        r->body.len <= INLINE_MAX_BODY)
        dc_api_start_inline(r);
    else
        dc_api_job_push(r, DC_JOB_START);
    return MHD_YES;
}

/* The non-streaming answer of a finished request. */
static enum MHD_Result answer_final(struct dc_api_req *r)
{
    struct dc_buf b;
    enum MHD_Result ret;

    dc_buf_init(&b, 0);
    if (dc_sse_final_json(r, &b) < 0) {
        dc_buf_cleanup(&b);
        return MHD_NO;
    }
    ret = dc_api_send_buf(r, 200, (const char *)b.data, b.len, "application/json");
    dc_buf_cleanup(&b);
    return ret;
}

enum MHD_Result dc_rest_resumed(struct dc_api_req *r)
{
    bool has_err, done, started;
    struct dc_api_error e;

    pthread_mutex_lock(&r->mu);
    has_err = r->has_err;
    e = r->err;
    done = r->done;
    started = r->submitted || r->n_events > 0;
    if (!has_err && !done && !(r->preq.stream && started)) {
        /* Woken early: nothing to answer yet. */
        r->suspended = true;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&r->mu);
    if (has_err)
        return dc_api_send_error(r, &e);
    if (r->route == DC_ROUTE_API_PEERS_CONNECT)
        return dc_api_send_buf(r, 200, (const char *)r->out.data, r->out.len, "application/json");
    if (r->preq.stream)
        return dc_api_send(r, 200, dc_sse_response(r), NULL);
    return answer_final(r);
}

/* Records an error for the polling thread and wakes it. */
static void fail(struct dc_api_req *r, int status, const char *type, const char *code,
                 const char *fmt, const char *detail)
{
    bool wake;

    pthread_mutex_lock(&r->mu);
    r->has_err = true;
    dc_api_error_set(&r->err, status, type, code, NULL, fmt, detail);
    wake = dc_api_wake_locked(r);
    pthread_mutex_unlock(&r->mu);
    dc_api_settle(r);
    if (wake)
        MHD_resume_connection(r->conn);
}

/* Records the error 'e' for the polling thread and wakes it. */
static void fail_with(struct dc_api_req *r, const struct dc_api_error *e)
{
    bool wake;

    pthread_mutex_lock(&r->mu);
    r->has_err = true;
    r->err = *e;
    wake = dc_api_wake_locked(r);
    pthread_mutex_unlock(&r->mu);
    dc_api_settle(r);
    if (wake)
        MHD_resume_connection(r->conn);
}

/* Worker: the model, as every interface resolves it (resolve.c); may load it. */
static bool acquire(struct dc_api_req *r)
{
    enum dc_api_target target;
    struct dc_api_error e;

    if (dc_api_model_resolve(&r->api->models, &r->preq, &target, &r->engine, &e) == 0 &&
        r->engine != NULL) {
        r->is_def = target == DC_API_TARGET_DEFAULT;
        return true;
    }
    r->engine = NULL;
    fail_with(r, &e);
    return false;
}

static void run_embeddings(struct dc_api_req *r)
{
    float *v = NULL;
    uint32_t n_embd = 0;
    uint64_t n_tok = 0;
    bool wake;
    int rc;

    rc = dc_engine_embed(r->engine, r->preq.inputs, r->preq.n_inputs, &v, &n_embd, &n_tok);
    if (rc == DC_ELIMIT) {
        fail(r, 400, "invalid_request_error", "context_length_exceeded",
             "%s exceeds the model's context length", "An input");
        return;
    }
    if (rc < 0) {
        fail(r, 500, "server_error", NULL, "Embedding failed: %s", dc_strerror(rc));
        return;
    }
    atomic_fetch_add(&r->api->m_tokens_prompt, n_tok);
    pthread_mutex_lock(&r->mu);
    r->emb = v;
    r->n_embd = n_embd;
    r->emb_tokens = n_tok;
    r->n_prompt = (uint32_t)n_tok;
    r->done = true;
    wake = dc_api_wake_locked(r);
    pthread_mutex_unlock(&r->mu);
    dc_api_settle(r);
    if (wake)
        MHD_resume_connection(r->conn);
}

/* Worker: hands a chat whose model is a PeerId to the remote hooks. Like an engine submit, the
 * call holds a reference on the request until its DONE; the headers of a stream wait for the
 * first token, so a refusal still gets its own HTTP status. */
static void start_remote(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    struct dc_api_remote_req q = {
        .peer_id = r->preq.model,
        .experts = r->preq.experts,
        .msgs = r->preq.msgs,
        .n_msgs = r->preq.n_msgs,
        .gen = &r->preq.gen,
    };
    struct dc_api_remote_call *call = NULL;
    bool cancel;
    int rc;

    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
    dc_api_engine_ref(api, 1);
    rc = api->remote->start(api->remote_ud, &q, dc_sse_on_remote, r, &call);
    if (rc < 0) {
        pthread_mutex_lock(&r->mu);
        r->refs--;
        pthread_mutex_unlock(&r->mu);
        dc_api_engine_ref(api, -1);
        if (rc == DC_ECLOSED)
            fail(r, 503, "server_error", NULL, "%s", "The server is shutting down");
        else if (rc == DC_ELIMIT)
            fail(r, 429, "rate_limit_error", "queue_full", "%s",
                 "Too many requests forwarded to peers; retry later");
        else
            fail(r, 500, "server_error", NULL, "Cannot forward the request: %s", dc_strerror(rc));
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->rcall = call;
    cancel = (r->closed || r->gone) && !r->done;
    pthread_mutex_unlock(&r->mu);
    if (cancel || atomic_load(&api->stopping))
        api->remote->cancel(api->remote_ud, call);
}

void dc_rest_start(struct dc_api_req *r)
{
    struct dc_api *api = r->api;
    struct dc_gen_request g;
    char *prompt = NULL;
    struct dc_gen *gen = NULL;
    bool wake, fallback = false;
    int rc;

    if (atomic_load(&api->stopping)) {
        fail(r, 503, "server_error", NULL, "%s", "The server is shutting down");
        return;
    }
    if (r->route == DC_ROUTE_API_PEERS_CONNECT) {
        dc_admin_connect_run(r);
        return;
    }
    if (r->remote) {
        start_remote(r);
        return;
    }
    if (!acquire(r))
        return;
    if (!admit(r, r->engine)) {
        struct dc_api_error e;

        atomic_fetch_add(&api->m_rejected, 1);
        dc_api_queue_full(&e, r->preq.model);
        fail_with(r, &e);
        return;
    }
    r->admitted = true;
    if (r->preq.kind == DC_API_EMBEDDING) {
        run_embeddings(r);
        return;
    }
    g = r->preq.gen;
    if (r->preq.kind == DC_API_CHAT) {
        rc = dc_engine_chat_render(r->engine, r->preq.msgs, r->preq.n_msgs, true, &prompt,
                                   &fallback);
        if (rc < 0) {
            fail(r, 500, "server_error", NULL, "Cannot render the chat prompt: %s",
                 dc_strerror(rc));
            return;
        }
        if (fallback && !atomic_exchange(&api->warned_template, true))
            dc_log_warn(LOG, "model '%s' has no chat template we recognise; using chatml",
                        r->preq.model);
        g.prompt = prompt;
        g.prompt_len = strlen(prompt);
        g.prompt_parse_special = true;
    } else if (r->preq.prompt_ids != NULL) {
        g.prompt_ids = r->preq.prompt_ids;
        g.n_prompt_ids = r->preq.n_prompt_ids;
    } else {
        g.prompt = r->preq.prompt;
        g.prompt_len = r->preq.prompt_len;
    }
    /* The engine's reference: its callback may run before submit returns. */
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
    dc_api_engine_ref(api, 1);
    g.priority = dc_auth_priority(api->auth, r->key_id);
    rc = dc_engine_submit(r->engine, &g, dc_sse_on_event, r, &gen);
    dc_free(prompt);
    if (rc < 0) {
        pthread_mutex_lock(&r->mu);
        r->refs--;
        pthread_mutex_unlock(&r->mu);
        dc_api_engine_ref(api, -1);
        if (rc == DC_ELIMIT)
            fail(r, 400, "invalid_request_error", "context_length_exceeded",
                 "%s exceeds the model's context length; shorten the messages or lower "
                 "max_tokens",
                 "The prompt plus max_tokens");
        else if (rc == DC_EUNSUPPORTED)
            fail(r, 400, "invalid_request_error", "model_not_supported", "%s",
                 "This model only computes embeddings");
        else if (rc == DC_EINVAL)
            fail(r, 400, "invalid_request_error", NULL, "%s",
                 "The engine refused the request parameters");
        else
            fail(r, 503, "server_error", NULL, "The engine cannot take requests: %s",
                 dc_strerror(rc));
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->gen = gen;
    r->submitted = true;
    /* A streaming client gets its headers now; a plain one waits for DONE. */
    wake = r->preq.stream && !r->done ? dc_api_wake_locked(r) : false;
    if ((r->closed || r->gone) && !r->done)
        dc_gen_cancel(gen);
    pthread_mutex_unlock(&r->mu);
    if (atomic_load(&api->stopping))
        dc_gen_cancel(gen);
    if (wake)
        MHD_resume_connection(r->conn);
}

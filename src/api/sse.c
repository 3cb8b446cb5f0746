/* SPDX-License-Identifier: MIT */
/*
 * sse.c - from engine events to bytes: the engine callback every generation uses, the
 * server-sent-events response of a streaming request, and the JSON of a finished one.
 *
 * The callback runs on the engine's scheduler thread. It only formats what it was given into
 * the request's own buffers under the request's mutex and, when the connection is suspended
 * waiting for exactly that, resumes it; it never blocks and never calls the engine. On the
 * polling thread the content reader drains the buffer and, when it is empty, suspends the
 * connection again (returning 0 without a suspend would make MHD spin).
 */
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "base/log.h"

static const char *finish_name(enum dc_gen_finish f)
{
    switch (f) {
    case DC_GEN_FINISH_LENGTH:
        return "length";
    case DC_GEN_FINISH_CANCELLED:
        return "cancelled";
    default:
        return "stop";
    }
}

/* The text of the chosen token for logprobs: its piece from the alternatives when listed. */
static void token_text(const struct dc_gen_event *ev, const char **s, size_t *len)
{
    for (uint32_t i = 0; i < ev->n_top; i++) {
        if (ev->top[i].id == ev->id) {
            *s = ev->top[i].text;
            *len = strlen(ev->top[i].text);
            return;
        }
    }
    *s = ev->text;
    *len = ev->text_len;
}

static int bytes_json(struct dc_buf *b, const char *s, size_t len)
{
    int rc = dc_buf_append_str(b, "[");

    for (size_t i = 0; i < len && rc == 0; i++)
        rc = dc_buf_printf(b, "%s%u", i ? "," : "", (unsigned)(unsigned char)s[i]);
    return rc < 0 ? rc : dc_buf_append_str(b, "]");
}

/* One chat logprobs entry: {"token","logprob","bytes","top_logprobs":[...]}. */
static int chat_lp_entry(struct dc_buf *b, const struct dc_gen_event *ev)
{
    const char *s;
    size_t len;
    int rc = 0;

    token_text(ev, &s, &len);
    rc |= dc_buf_append_str(b, "{\"token\":");
    rc |= dc_api_json_str(b, s, len);
    rc |= dc_buf_printf(b, ",\"logprob\":%.6g,\"bytes\":", (double)ev->logprob);
    rc |= bytes_json(b, s, len);
    rc |= dc_buf_append_str(b, ",\"top_logprobs\":[");
    for (uint32_t i = 0; i < ev->n_top; i++) {
        const char *t = ev->top[i].text;
        rc |= dc_buf_append_str(b, i ? ",{\"token\":" : "{\"token\":");
        rc |= dc_api_json_str(b, t, strlen(t));
        rc |= dc_buf_printf(b, ",\"logprob\":%.6g,\"bytes\":", (double)ev->top[i].logprob);
        rc |= bytes_json(b, t, strlen(t));
        rc |= dc_buf_append_str(b, "}");
    }
    rc |= dc_buf_append_str(b, "]}");
    return rc < 0 ? DC_ENOMEM : 0;
}

/* Legacy completions logprobs: four parallel arrays, appended one token at a time. */
static int legacy_lp_add(struct dc_api_req *r, const struct dc_gen_event *ev)
{
    const char *s;
    size_t len;
    int rc = 0;
    bool first = r->lp.len == 0;

    token_text(ev, &s, &len);
    if (!first)
        rc |= dc_buf_append_str(&r->lp, ",");
    rc |= dc_api_json_str(&r->lp, s, len);
    rc |= dc_buf_printf(&r->lp2, "%s%.6g", first ? "" : ",", (double)ev->logprob);
    rc |= dc_buf_append_str(&r->lp3, first ? "{" : ",{");
    for (uint32_t i = 0; i < ev->n_top; i++) {
        if (i > 0)
            rc |= dc_buf_append_str(&r->lp3, ",");
        rc |= dc_api_json_str(&r->lp3, ev->top[i].text, strlen(ev->top[i].text));
        rc |= dc_buf_printf(&r->lp3, ":%.6g", (double)ev->top[i].logprob);
    }
    rc |= dc_buf_append_str(&r->lp3, "}");
    rc |= dc_buf_printf(&r->lp4, "%s%zu", first ? "" : ",", r->text_offset);
    return rc < 0 ? DC_ENOMEM : 0;
}

static int legacy_lp_json(struct dc_api_req *r, struct dc_buf *b)
{
    int rc = 0;

    rc |= dc_buf_append_str(b, "{\"tokens\":[");
    rc |= dc_buf_append(b, r->lp.data, r->lp.len);
    rc |= dc_buf_append_str(b, "],\"token_logprobs\":[");
    rc |= dc_buf_append(b, r->lp2.data, r->lp2.len);
    rc |= dc_buf_append_str(b, "],\"top_logprobs\":[");
    rc |= dc_buf_append(b, r->lp3.data, r->lp3.len);
    rc |= dc_buf_append_str(b, "],\"text_offset\":[");
    rc |= dc_buf_append(b, r->lp4.data, r->lp4.len);
    rc |= dc_buf_append_str(b, "]}");
    return rc < 0 ? DC_ENOMEM : 0;
}

/* "data: {...chunk head...}" up to the choice's contents. */
static int chunk_head(struct dc_api_req *r, struct dc_buf *b)
{
    int rc;

    if (r->preq.kind == DC_API_CHAT)
        rc = dc_buf_printf(b,
                           "data: {\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion.chunk\","
                           "\"created\":%lld,\"model\":",
                           r->id, (long long)r->created);
    else
        rc = dc_buf_printf(b,
                           "data: {\"id\":\"cmpl-%s\",\"object\":\"text_completion\","
                           "\"created\":%lld,\"model\":",
                           r->id, (long long)r->created);
    if (rc == 0)
        rc = dc_api_json_str(b, r->preq.model, strlen(r->preq.model));
    if (rc == 0)
        rc = dc_buf_append_str(b, ",\"system_fingerprint\":\"democritus\",\"choices\":[");
    return rc;
}

static int chunk_tail(struct dc_api_req *r, struct dc_buf *b)
{
    return dc_buf_append_str(b, r->preq.include_usage ? "],\"usage\":null}\n\n" : "]}\n\n");
}

/* A streaming chunk for one token (text and/or logprobs), or the final one ('finish'). */
static int stream_chunk(struct dc_api_req *r, const struct dc_gen_event *ev, const char *finish)
{
    struct dc_buf *b = &r->out;
    int rc = 0;

    if (r->preq.kind == DC_API_CHAT && !r->sent_role) {
        r->sent_role = true;
        rc |= chunk_head(r, b);
        rc |= dc_buf_append_str(b, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                                   "\"\"},\"logprobs\":null,\"finish_reason\":null}");
        rc |= chunk_tail(r, b);
    }
    rc |= chunk_head(r, b);
    if (r->preq.kind == DC_API_CHAT) {
        if (finish != NULL) {
            rc |= dc_buf_append_str(b, "{\"index\":0,\"delta\":{},\"logprobs\":null");
        } else {
            rc |= dc_buf_append_str(b, "{\"index\":0,\"delta\":{\"content\":");
            rc |= dc_api_json_str(b, ev->text, ev->text_len);
            rc |= dc_buf_append_str(b, "},\"logprobs\":");
            if (r->preq.logprobs) {
                rc |= dc_buf_append_str(b, "{\"content\":[");
                rc |= chat_lp_entry(b, ev);
                rc |= dc_buf_append_str(b, "]}");
            } else {
                rc |= dc_buf_append_str(b, "null");
            }
        }
    } else {
        rc |= dc_buf_append_str(b, "{\"index\":0,\"text\":");
        if (finish != NULL)
            rc |= dc_buf_append_str(b, "\"\"");
        else
            rc |= dc_api_json_str(b, ev->text, ev->text_len);
        rc |= dc_buf_append_str(b, ",\"logprobs\":null");
    }
    if (finish != NULL)
        rc |= dc_buf_printf(b, ",\"finish_reason\":\"%s\"}", finish);
    else
        rc |= dc_buf_append_str(b, ",\"finish_reason\":null}");
    rc |= chunk_tail(r, b);
    return rc < 0 ? DC_ELIMIT : 0;
}

/* ,"timings":{...}: the engine's own times for this request (queue: waiting for a slot;
 * prompt: admitted to first token; generation: first token to the end), so a client can tell
 * serving time from inference time. Nothing when they are unknown (a forwarded chat). */
static int timings_json(struct dc_buf *b, double queue_ms, double prompt_ms, double gen_ms)
{
    if (prompt_ms <= 0 && gen_ms <= 0)
        return 0;
    return dc_buf_printf(
        b, ",\"timings\":{\"queue_ms\":%.3f,\"prompt_ms\":%.3f,\"generation_ms\":%.3f}", queue_ms,
        prompt_ms, gen_ms);
}

static int stream_end(struct dc_api_req *r, const struct dc_gen_event *ev)
{
    struct dc_buf *b = &r->out;
    int rc = 0;

    /* The end of the stream must go out even when a slow reader filled the buffer. */
    b->max = SIZE_MAX;
    if (ev->finish == DC_GEN_FINISH_ERROR) {
        struct dc_api_error e;
        dc_api_error_set(&e, 500, "server_error", NULL, NULL, "Generation failed: %s",
                         ev->error_msg != NULL ? ev->error_msg : dc_strerror(ev->error));
        rc |= dc_buf_append_str(b, "data: ");
        rc |= dc_api_error_json(&e, b);
        rc |= dc_buf_append_str(b, "\n\n");
    } else {
        rc |= stream_chunk(r, ev, finish_name(ev->finish));
        if (r->preq.include_usage) {
            rc |= chunk_head(r, b);
            rc |= dc_buf_printf(b,
                                "],\"usage\":{\"prompt_tokens\":%u,\"completion_tokens\":%u,"
                                "\"total_tokens\":%u}",
                                ev->n_prompt, ev->n_generated, ev->n_prompt + ev->n_generated);
            rc |= timings_json(b, ev->queue_ms, ev->prompt_ms, ev->gen_ms);
            rc |= dc_buf_append_str(b, "}\n\n");
        }
    }
    rc |= dc_buf_append_str(b, "data: [DONE]\n\n");
    return rc < 0 ? DC_ENOMEM : 0;
}

void dc_sse_on_event(void *ud, const struct dc_gen_event *ev)
{
    struct dc_api_req *r = ud;
    struct dc_api *api = r->api;
    struct dc_gen *cancel = NULL;
    struct dc_api_remote_call *rcancel = NULL;
    bool wake = false, done = ev->type == DC_GEN_EV_DONE;
    int rc = 0;

    pthread_mutex_lock(&r->mu);
    r->n_events++;
    if (!done) {
        r->n_generated++;
        if (r->preq.stream) {
            if (ev->text_len > 0 || r->preq.logprobs)
                rc = stream_chunk(r, ev, NULL);
            wake = true;
        } else {
            rc = dc_buf_append(&r->out, ev->text, ev->text_len);
            if (rc == 0 && r->preq.logprobs) {
                if (r->preq.kind == DC_API_CHAT) {
                    if (r->lp.len > 0)
                        rc = dc_buf_append_str(&r->lp, ",");
                    if (rc == 0)
                        rc = chat_lp_entry(&r->lp, ev);
                } else {
                    rc = legacy_lp_add(r, ev);
                }
            }
        }
        r->text_offset += ev->text_len;
        /* Output we cannot hold (a client reading slower than we generate): stop. */
        if (rc < 0) {
            cancel = r->gen;
            rcancel = r->rcall;
        }
    } else {
        r->finish = ev->finish;
        r->n_prompt = ev->n_prompt;
        r->n_generated = ev->n_generated;
        r->queue_ms = ev->queue_ms;
        r->prompt_ms = ev->prompt_ms;
        r->gen_ms = ev->gen_ms;
        r->done = true;
        atomic_fetch_add(&api->m_tokens_prompt, ev->n_prompt);
        atomic_fetch_add(&api->m_tokens_completion, ev->n_generated);
        if (r->preq.stream) {
            (void)stream_end(r, ev);
            r->stream_end = true;
        } else if (ev->finish == DC_GEN_FINISH_ERROR) {
            r->has_err = true;
            dc_api_error_set(&r->err, 500, "server_error", NULL, NULL, "Generation failed: %s",
                             ev->error_msg != NULL ? ev->error_msg : dc_strerror(ev->error));
        }
        wake = true;
    }
    if (wake)
        wake = dc_api_wake_locked(r);
    pthread_mutex_unlock(&r->mu);
    dc_api_cancel(api, cancel, rcancel);
    if (wake)
        MHD_resume_connection(r->conn);
    if (done) {
        dc_api_settle(r);
        dc_api_req_unref(r);        /* the engine's reference: 'r' may be gone now */
        dc_api_engine_ref(api, -1); /* last: after it the server may be freed */
    }
}

void dc_sse_on_remote(void *ud, const struct dc_gen_event *ev,
                      const struct dc_api_remote_error *err)
{
    struct dc_api_req *r = ud;
    struct dc_api *api = r->api;
    struct dc_buf *b = &r->out;
    struct dc_api_error e;
    bool wake;
    int rc = 0;

    if (ev->type != DC_GEN_EV_DONE || err == NULL) {
        dc_sse_on_event(ud, ev);
        return;
    }
    dc_api_error_set(&e, err->status, err->type, err->code, NULL, "%s", err->message);
    pthread_mutex_lock(&r->mu);
    r->finish = DC_GEN_FINISH_ERROR;
    r->n_prompt = ev->n_prompt;
    r->n_generated = ev->n_generated;
    r->done = true;
    if (r->preq.stream && r->n_events > 0) {
        /* Tokens went (or are about to go) out under a 200: the error ends the stream. */
        b->max = SIZE_MAX;
        rc |= dc_buf_append_str(b, "data: ");
        rc |= dc_api_error_json(&e, b);
        rc |= dc_buf_append_str(b, "\n\ndata: [DONE]\n\n");
        if (rc < 0)
            dc_log_warn("api", "cannot end the stream of %s: %s", r->id, dc_strerror(rc));
        r->stream_end = true;
    } else {
        r->has_err = true;
        r->err = e;
    }
    r->n_events++;
    wake = dc_api_wake_locked(r);
    pthread_mutex_unlock(&r->mu);
    if (wake)
        MHD_resume_connection(r->conn);
    dc_api_settle(r);
    dc_api_req_unref(r);        /* the call's reference: 'r' may be gone now */
    dc_api_engine_ref(api, -1); /* last: after it the server may be freed */
}

static bool client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p;

    if (ci == NULL)
        return false;
    p.fd = ci->connect_fd;
    p.events = POLLRDHUP;
    p.revents = 0;
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct dc_api_req *r = cls;
    size_t n;

    DC_UNUSED(pos);
    pthread_mutex_lock(&r->mu);
    if (r->out.len > 0) {
        n = r->out.len < max ? r->out.len : max;
        memcpy(buf, r->out.data, n);
        dc_buf_consume(&r->out, n);
        pthread_mutex_unlock(&r->mu);
        return (ssize_t)n;
    }
    if (r->stream_end) {
        pthread_mutex_unlock(&r->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* A suspended connection is not watched by MHD, so a client that went away would only be
     * noticed by a failing write a token or two later: look for its hang-up now, and end the
     * response (NOTIFY_COMPLETED then cancels the generation). */
    if (client_gone(r->conn)) {
        pthread_mutex_unlock(&r->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    /* Nothing yet: sleep until the engine callback resumes us. */
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void sse_free(void *cls)
{
    dc_api_req_unref(cls);
}

struct MHD_Response *dc_sse_response(struct dc_api_req *r)
{
    struct MHD_Response *resp;

    pthread_mutex_lock(&r->mu);
    r->refs++; /* the response's */
    pthread_mutex_unlock(&r->mu);
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, r, sse_free);
    if (resp == NULL) {
        dc_api_req_unref(r);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return resp;
}

static int final_embeddings(struct dc_api_req *r, struct dc_buf *b)
{
    int rc = dc_buf_append_str(b, "{\"object\":\"list\",\"data\":[");

    for (size_t i = 0; i < r->preq.n_inputs && rc == 0; i++) {
        const float *row = r->emb + i * r->n_embd;
        rc = dc_buf_printf(
            b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", i ? "," : "", i);
        if (rc == 0 && r->preq.base64) {
            rc = dc_buf_append_str(b, "\"");
            if (rc == 0)
                rc = dc_api_base64(b, row, r->n_embd * sizeof(float));
            if (rc == 0)
                rc = dc_buf_append_str(b, "\"}");
        } else if (rc == 0) {
            rc = dc_buf_append_str(b, "[");
            for (uint32_t k = 0; k < r->n_embd && rc == 0; k++)
                rc = dc_buf_printf(b, "%s%.7g", k ? "," : "", (double)row[k]);
            if (rc == 0)
                rc = dc_buf_append_str(b, "]}");
        }
    }
    if (rc == 0)
        rc = dc_buf_append_str(b, "],\"model\":");
    if (rc == 0)
        rc = dc_api_json_str(b, r->preq.model, strlen(r->preq.model));
    if (rc == 0)
        rc = dc_buf_printf(
            b, ",\"usage\":{\"prompt_tokens\":%" PRIu64 ",\"total_tokens\":%" PRIu64 "}}",
            r->emb_tokens, r->emb_tokens);
    return rc;
}

int dc_sse_final_json(struct dc_api_req *r, struct dc_buf *b)
{
    bool chat = r->preq.kind == DC_API_CHAT;
    int rc = 0;

    if (r->preq.kind == DC_API_EMBEDDING)
        return final_embeddings(r, b);
    rc |= dc_buf_printf(b, "{\"id\":\"%s%s\",\"object\":\"%s\",\"created\":%lld,\"model\":",
                        chat ? "chatcmpl-" : "cmpl-", r->id,
                        chat ? "chat.completion" : "text_completion", (long long)r->created);
    rc |= dc_api_json_str(b, r->preq.model, strlen(r->preq.model));
    rc |= dc_buf_append_str(b, ",\"system_fingerprint\":\"democritus\",\"choices\":[{\"index\":0,");
    if (chat) {
        rc |= dc_buf_append_str(b, "\"message\":{\"role\":\"assistant\",\"content\":");
        rc |= dc_api_json_str(b, (const char *)r->out.data, r->out.len);
        rc |= dc_buf_append_str(b, "},\"logprobs\":");
        if (r->preq.logprobs) {
            rc |= dc_buf_append_str(b, "{\"content\":[");
            rc |= dc_buf_append(b, r->lp.data, r->lp.len);
            rc |= dc_buf_append_str(b, "]}");
        } else {
            rc |= dc_buf_append_str(b, "null");
        }
    } else {
        rc |= dc_buf_append_str(b, "\"text\":");
        rc |= dc_api_json_str(b, (const char *)r->out.data, r->out.len);
        rc |= dc_buf_append_str(b, ",\"logprobs\":");
        if (r->preq.logprobs)
            rc |= legacy_lp_json(r, b);
        else
            rc |= dc_buf_append_str(b, "null");
    }
    rc |= dc_buf_printf(b,
                        ",\"finish_reason\":\"%s\"}],\"usage\":{\"prompt_tokens\":%u,"
                        "\"completion_tokens\":%u,\"total_tokens\":%u}",
                        finish_name(r->finish), r->n_prompt, r->n_generated,
                        r->n_prompt + r->n_generated);
    rc |= timings_json(b, r->queue_ms, r->prompt_ms, r->gen_ms);
    rc |= dc_buf_append_str(b, "}");
    return rc < 0 ? DC_ENOMEM : 0;
}

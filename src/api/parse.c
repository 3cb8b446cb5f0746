/* SPDX-License-Identifier: MIT */
/*
 * parse.c - OpenAI request bodies to engine parameters, and the JSON bits every response
 * needs (error objects, string escaping, base64).
 *
 * Pure code: bytes in, a struct dc_api_request or a struct dc_api_error out. jansson parses
 * (it rejects invalid UTF-8 and reports line and column); each field is then checked for its
 * type and range, and the first problem becomes a 400 that names the field, the way OpenAI's
 * own server answers. Fields we cannot honour (n > 1, tools, echo, ...) are refused rather than
 * ignored; fields we do not know are ignored, as clients send extras.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"

#define T_INVALID "invalid_request_error"

void dc_api_error_set(struct dc_api_error *e, int status, const char *type, const char *code,
                      const char *param, const char *fmt, ...)
{
    va_list ap;

    e->status = status;
    e->type = type;
    e->code = code;
    e->retry_after_ms = 0;
    snprintf(e->param, sizeof(e->param), "%s", param != NULL ? param : "");
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are invalid. */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

int dc_api_json_str(struct dc_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of the pending run of bytes copied as they are */
    int rc;

    if (len == 0)
        return dc_buf_append(b, "\"\"", 2);
    if ((rc = dc_buf_append(b, "\"", 1)) < 0)
        return rc;
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        char esc[8];
        size_t esc_len = 0, seq = 1;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            esc_len = 2;
        } else if (c < 0x20) {
            esc[0] = '\\';
            switch (c) {
            case '\n':
                esc[1] = 'n';
                esc_len = 2;
                break;
            case '\r':
                esc[1] = 'r';
                esc_len = 2;
                break;
            case '\t':
                esc[1] = 't';
                esc_len = 2;
                break;
            default:
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                esc_len = 6;
            }
        } else if (c >= 0x80) {
            seq = utf8_seq(p + i, len - i);
            if (seq == 0) {
                memcpy(esc, "\xef\xbf\xbd", 3); /* U+FFFD */
                esc_len = 3;
                seq = 1;
            }
        }
        if (esc_len > 0) {
            if ((rc = dc_buf_append(b, p + run, i - run)) < 0 ||
                (rc = dc_buf_append(b, esc, esc_len)) < 0)
                return rc;
            i += seq;
            run = i;
        } else {
            i += seq;
        }
    }
    if ((rc = dc_buf_append(b, p + run, len - run)) < 0)
        return rc;
    return dc_buf_append(b, "\"", 1);
}

int dc_api_error_json(const struct dc_api_error *e, struct dc_buf *b)
{
    int rc;

    if ((rc = dc_buf_append_str(b, "{\"error\":{\"message\":")) < 0 ||
        (rc = dc_api_json_str(b, e->message, strlen(e->message))) < 0 ||
        (rc = dc_buf_append_str(b, ",\"type\":")) < 0 ||
        (rc = dc_api_json_str(b, e->type, strlen(e->type))) < 0 ||
        (rc = dc_buf_append_str(b, ",\"param\":")) < 0)
        return rc;
    if (e->param[0] != '\0')
        rc = dc_api_json_str(b, e->param, strlen(e->param));
    else
        rc = dc_buf_append_str(b, "null");
    if (rc < 0 || (rc = dc_buf_append_str(b, ",\"code\":")) < 0)
        return rc;
    if (e->code != NULL)
        rc = dc_api_json_str(b, e->code, strlen(e->code));
    else
        rc = dc_buf_append_str(b, "null");
    if (rc < 0)
        return rc;
    return dc_buf_append_str(b, "}}");
}

int dc_api_base64(struct dc_buf *b, const void *data, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *p = data;
    char out[4];
    int rc;

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        size_t left = n - i;
        if (left > 1)
            v |= (uint32_t)p[i + 1] << 8;
        if (left > 2)
            v |= p[i + 2];
        out[0] = tab[(v >> 18) & 63];
        out[1] = tab[(v >> 12) & 63];
        out[2] = left > 1 ? tab[(v >> 6) & 63] : '=';
        out[3] = left > 2 ? tab[v & 63] : '=';
        if ((rc = dc_buf_append(b, out, 4)) < 0)
            return rc;
    }
    return 0;
}

/* ---- field checks ---- */

static int bad(struct dc_api_error *err, const char *param, const char *fmt, const char *detail)
{
    dc_api_error_set(err, 400, T_INVALID, NULL, param, fmt, detail);
    return DC_EINVAL;
}

static int unsupported(struct dc_api_error *err, const char *param, const char *what)
{
    dc_api_error_set(err, 400, T_INVALID, "unsupported_parameter", param,
                     "%s is not supported by this server", what);
    return DC_EINVAL;
}

/* A present, non-null member; NULL otherwise (null counts as absent, as in OpenAI). */
static json_t *member(json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);

    return json_is_null(v) ? NULL : v;
}

/* Reads an optional number in [lo, hi]. */
static int opt_number(json_t *root, const char *key, double lo, double hi, double *out,
                      bool *present, struct dc_api_error *err)
{
    json_t *v = member(root, key);
    double d;

    if (present != NULL)
        *present = v != NULL;
    if (v == NULL)
        return 0;
    if (!json_is_number(v))
        return bad(err, key, "'%s' must be a number", key);
    d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) {
        dc_api_error_set(err, 400, T_INVALID, NULL, key, "'%s' must be between %g and %g", key, lo,
                         hi);
        return DC_EINVAL;
    }
    *out = d;
    return 0;
}

/* Reads an optional integer in [lo, hi]. */
static int opt_int(json_t *root, const char *key, json_int_t lo, json_int_t hi, json_int_t *out,
                   bool *present, struct dc_api_error *err)
{
    json_t *v = member(root, key);
    json_int_t i;

    if (present != NULL)
        *present = v != NULL;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return bad(err, key, "'%s' must be an integer", key);
    i = json_integer_value(v);
    if (i < lo || i > hi) {
        dc_api_error_set(err, 400, T_INVALID, NULL, key, "'%s' must be between %lld and %lld", key,
                         (long long)lo, (long long)hi);
        return DC_EINVAL;
    }
    *out = i;
    return 0;
}

static int opt_bool(json_t *root, const char *key, bool *out, struct dc_api_error *err)
{
    json_t *v = member(root, key);

    if (v == NULL)
        return 0;
    if (!json_is_boolean(v))
        return bad(err, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static int opt_string(json_t *root, const char *key, const char **out, struct dc_api_error *err)
{
    json_t *v = member(root, key);

    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return bad(err, key, "'%s' must be a string", key);
    /* jansson allows \u0000 inside strings; C strings cannot carry it. */
    if (strlen(json_string_value(v)) != json_string_length(v))
        return bad(err, key, "'%s' must not contain NUL characters", key);
    *out = json_string_value(v);
    return 0;
}

/* Refuses a field we cannot honour when it is present (and, for arrays, not empty). */
static int refuse(json_t *root, const char *key, const char *what, struct dc_api_error *err)
{
    json_t *v = member(root, key);

    if (v == NULL || (json_is_array(v) && json_array_size(v) == 0))
        return 0;
    return unsupported(err, key, what);
}

/* stop: a string or a list of up to DC_ENGINE_MAX_STOP non-empty strings. */
static int parse_stop(json_t *root, struct dc_gen_request *g, struct dc_api_error *err)
{
    json_t *v = member(root, "stop"), *item;
    size_t i;

    if (v == NULL)
        return 0;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0 || strlen(json_string_value(v)) != json_string_length(v))
            return bad(err, "stop", "'%s' must be a non-empty string without NUL", "stop");
        g->stop[g->n_stop++] = json_string_value(v);
        return 0;
    }
    if (!json_is_array(v))
        return bad(err, "stop", "'%s' must be a string or an array of strings", "stop");
    if (json_array_size(v) > DC_ENGINE_MAX_STOP) {
        dc_api_error_set(err, 400, T_INVALID, NULL, "stop", "'stop' takes at most %d strings",
                         DC_ENGINE_MAX_STOP);
        return DC_EINVAL;
    }
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item) || json_string_length(item) == 0 ||
            strlen(json_string_value(item)) != json_string_length(item))
            return bad(err, "stop", "'%s' must hold non-empty strings", "stop");
        g->stop[g->n_stop++] = json_string_value(item);
    }
    return 0;
}

/* The sampling and stopping fields chat and completions share. */
static int parse_common(json_t *root, struct dc_api_request *req,
                        const struct dc_api_parse_opts *opts, struct dc_api_error *err)
{
    struct dc_gen_request *g = &req->gen;
    json_int_t i = 0, n = 1, max_tokens = 0;
    double d;
    bool present;
    int rc;
    json_t *v;

    /* Our own defaults (the engine's, with the configured temperature) so this file stays pure. */
    g->sampling.temperature = (float)opts->default_temperature;
    g->sampling.top_p = 0.95f;
    g->sampling.min_p = 0.05f;
    g->sampling.top_k = 40;
    g->sampling.repeat_penalty = 1.0f;
    g->sampling.repeat_last_n = 64;

    if ((rc = opt_string(root, "model", &req->model, err)) < 0)
        return rc;
    if (req->model == NULL)
        req->model = "local";
    if (strlen(req->model) == 0 || strlen(req->model) >= DC_API_MODEL_ID_MAX)
        return bad(err, "model", "'%s' must be a model id", "model");
    if ((rc = opt_string(root, "user", &req->user, err)) < 0)
        return rc;
    if ((rc = opt_bool(root, "stream", &req->stream, err)) < 0)
        return rc;
    if ((v = member(root, "stream_options")) != NULL) {
        if (!json_is_object(v))
            return bad(err, "stream_options", "'%s' must be an object", "stream_options");
        if ((rc = opt_bool(v, "include_usage", &req->include_usage, err)) < 0) {
            snprintf(err->param, sizeof(err->param), "stream_options.include_usage");
            return rc;
        }
    }
    if ((rc = opt_int(root, "n", INT32_MIN, INT32_MAX, &n, NULL, err)) < 0)
        return rc;
    if (n != 1)
        return unsupported(err, "n", "n other than 1");
    if ((rc = opt_number(root, "temperature", 0, 2, &d, &present, err)) < 0)
        return rc;
    if (present)
        g->sampling.temperature = (float)d;
    if ((rc = opt_number(root, "top_p", 0, 1, &d, &present, err)) < 0)
        return rc;
    if (present)
        g->sampling.top_p = d <= 0 ? 1e-6f : (float)d;
    if ((rc = opt_number(root, "presence_penalty", -2, 2, &d, &present, err)) < 0)
        return rc;
    if (present)
        g->sampling.presence_penalty = (float)d;
    if ((rc = opt_number(root, "frequency_penalty", -2, 2, &d, &present, err)) < 0)
        return rc;
    if (present)
        g->sampling.frequency_penalty = (float)d;
    if ((rc = opt_int(root, "seed", INT64_MIN, INT64_MAX, &i, &present, err)) < 0)
        return rc;
    if (present) {
        g->sampling.seed = (uint64_t)i;
        g->sampling.has_seed = true;
    }
    if ((rc = opt_int(root, "experts", 1, DC_API_MAX_EXPERTS, &i, &present, err)) < 0)
        return rc;
    if (present) {
        if (strcmp(req->model, DC_API_SWARM_MODEL) != 0)
            return bad(err, "experts", "'%s' applies to the model \"swarm\" only", "experts");
        req->experts = (uint32_t)i;
    }
    if ((rc = opt_int(root, "max_tokens", 1, INT32_MAX, &max_tokens, NULL, err)) < 0)
        return rc;
    if ((rc = opt_int(root, "max_completion_tokens", 1, INT32_MAX, &max_tokens, NULL, err)) < 0)
        return rc;
    g->max_tokens = (int32_t)max_tokens;
    if ((rc = parse_stop(root, g, err)) < 0)
        return rc;
    if ((rc = refuse(root, "logit_bias", "logit_bias", err)) < 0)
        return rc;
    if ((rc = opt_int(root, "best_of", 1, 1, &i, NULL, err)) < 0) {
        err->code = "unsupported_parameter";
        return rc;
    }
    return 0;
}

/* content: a string, or an array of {"type":"text","text":...} parts (joined). */
static int message_content(json_t *v, size_t idx, json_t *holder, const char **out,
                           struct dc_api_error *err)
{
    char param[64];
    json_t *part, *joined;
    size_t i;

    snprintf(param, sizeof(param), "messages[%zu].content", idx);
    if (json_is_string(v)) {
        if (strlen(json_string_value(v)) != json_string_length(v))
            return bad(err, param, "'%s' must not contain NUL characters", param);
        *out = json_string_value(v);
        return 0;
    }
    if (!json_is_array(v))
        return bad(err, param, "'%s' must be a string or an array of text parts", param);
    joined = json_string("");
    if (joined == NULL)
        goto nomem;
    json_array_foreach(v, i, part)
    {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        char *cat;

        if (!json_is_object(part) || !json_is_string(type)) {
            json_decref(joined);
            return bad(err, param, "'%s' parts must be objects with a 'type'", param);
        }
        if (strcmp(json_string_value(type), "text") != 0) {
            json_decref(joined);
            return unsupported(err, param, "content parts other than text");
        }
        if (!json_is_string(text) || strlen(json_string_value(text)) != json_string_length(text)) {
            json_decref(joined);
            return bad(err, param, "'%s' text parts need a string 'text'", param);
        }
        cat = dc_asprintf("%s%s", json_string_value(joined), json_string_value(text));
        if (cat == NULL || json_string_set(joined, cat) < 0) {
            dc_free(cat);
            json_decref(joined);
            goto nomem;
        }
        dc_free(cat);
    }
    /* The holder (the message object) keeps the joined string alive with the request. */
    if (json_object_set_new(holder, "\x01joined", joined) < 0)
        goto nomem;
    *out = json_string_value(joined);
    return 0;
nomem:
    dc_api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    return DC_ENOMEM;
}

static int parse_messages(json_t *root, struct dc_api_request *req, struct dc_api_error *err)
{
    json_t *msgs = json_object_get(root, "messages"), *m;
    size_t i;
    int rc;

    if (msgs == NULL || json_is_null(msgs))
        return bad(err, "messages", "'%s' is required", "messages");
    if (!json_is_array(msgs))
        return bad(err, "messages", "'%s' must be an array", "messages");
    if (json_array_size(msgs) == 0)
        return bad(err, "messages", "'%s' must not be empty", "messages");
    if (json_array_size(msgs) > DC_API_MAX_MESSAGES) {
        dc_api_error_set(err, 400, T_INVALID, NULL, "messages", "'messages' holds at most %d",
                         DC_API_MAX_MESSAGES);
        return DC_EINVAL;
    }
    req->msgs = dc_calloc(json_array_size(msgs), sizeof(*req->msgs));
    if (req->msgs == NULL) {
        dc_api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return DC_ENOMEM;
    }
    json_array_foreach(msgs, i, m)
    {
        char param[64];
        json_t *role, *content;
        const char *r;

        snprintf(param, sizeof(param), "messages[%zu]", i);
        if (!json_is_object(m))
            return bad(err, param, "'%s' must be an object", param);
        role = json_object_get(m, "role");
        snprintf(param, sizeof(param), "messages[%zu].role", i);
        if (!json_is_string(role))
            return bad(err, param, "'%s' must be a string", param);
        r = json_string_value(role);
        if (strcmp(r, "developer") == 0)
            r = "system";
        if (strcmp(r, "tool") == 0 || strcmp(r, "function") == 0)
            return unsupported(err, param, "tool messages");
        if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0)
            return bad(err, param, "'%s' must be system, user or assistant", param);
        if (member(m, "tool_calls") != NULL) {
            snprintf(param, sizeof(param), "messages[%zu].tool_calls", i);
            return unsupported(err, param, "tool_calls");
        }
        content = member(m, "content");
        req->msgs[i].role = r;
        if (content == NULL) {
            if (strcmp(r, "assistant") != 0) {
                snprintf(param, sizeof(param), "messages[%zu].content", i);
                return bad(err, param, "'%s' is required", param);
            }
            req->msgs[i].content = "";
        } else if ((rc = message_content(content, i, m, &req->msgs[i].content, err)) < 0) {
            return rc;
        }
        req->n_msgs++;
    }
    return 0;
}

static int parse_chat(json_t *root, struct dc_api_request *req, struct dc_api_error *err)
{
    json_int_t top = 0;
    bool has_top;
    json_t *rf;
    int rc;

    if ((rc = parse_messages(root, req, err)) < 0)
        return rc;
    if ((rc = refuse(root, "tools", "tools", err)) < 0 ||
        (rc = refuse(root, "functions", "functions", err)) < 0 ||
        (rc = refuse(root, "tool_choice", "tool_choice", err)) < 0 ||
        (rc = refuse(root, "function_call", "function_call", err)) < 0 ||
        (rc = refuse(root, "audio", "audio output", err)) < 0)
        return rc;
    if ((rc = opt_bool(root, "logprobs", &req->logprobs, err)) < 0)
        return rc;
    if ((rc = opt_int(root, "top_logprobs", 0, DC_ENGINE_MAX_TOP_LOGPROBS, &top, &has_top, err)) <
        0)
        return rc;
    if (has_top && top > 0 && !req->logprobs)
        return bad(err, "top_logprobs", "'%s' needs 'logprobs' set to true", "top_logprobs");
    req->top_logprobs = (uint32_t)top;
    if ((rf = member(root, "response_format")) != NULL) {
        json_t *type = json_object_get(rf, "type");
        if (!json_is_object(rf) || !json_is_string(type))
            return bad(err, "response_format", "'%s' must be an object with a 'type'",
                       "response_format");
        if (strcmp(json_string_value(type), "json_object") == 0)
            req->gen.json_object = true;
        else if (strcmp(json_string_value(type), "json_schema") == 0)
            return unsupported(err, "response_format", "response_format json_schema");
        else if (strcmp(json_string_value(type), "text") != 0)
            return bad(err, "response_format.type", "'%s' must be text or json_object",
                       "response_format.type");
    }
    return 0;
}

static int parse_completion(json_t *root, struct dc_api_request *req, struct dc_api_error *err)
{
    json_t *p = json_object_get(root, "prompt"), *item;
    json_int_t lp = 0;
    bool has_lp, echo = false;
    size_t i;
    int rc;

    if (p == NULL || json_is_null(p))
        return bad(err, "prompt", "'%s' is required", "prompt");
    /* A string; a list of one string; or a list of token ids. */
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        if (strlen(json_string_value(p)) != json_string_length(p))
            return bad(err, "prompt", "'%s' must not contain NUL characters", "prompt");
        req->prompt = json_string_value(p);
        req->prompt_len = json_string_length(p);
    } else if (json_is_array(p) && json_array_size(p) > 0 &&
               json_is_integer(json_array_get(p, 0))) {
        req->prompt_ids = dc_calloc(json_array_size(p), sizeof(*req->prompt_ids));
        if (req->prompt_ids == NULL) {
            dc_api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
            return DC_ENOMEM;
        }
        json_array_foreach(p, i, item)
        {
            if (!json_is_integer(item) || json_integer_value(item) < 0 ||
                json_integer_value(item) > INT32_MAX)
                return bad(err, "prompt", "'%s' token lists must hold token ids", "prompt");
            req->prompt_ids[i] = (int32_t)json_integer_value(item);
        }
        req->n_prompt_ids = json_array_size(p);
    } else if (json_is_array(p) && json_array_size(p) > 1) {
        return unsupported(err, "prompt", "more than one prompt per request");
    } else {
        return bad(err, "prompt", "'%s' must be a string or an array of token ids", "prompt");
    }
    if (member(root, "max_tokens") == NULL && member(root, "max_completion_tokens") == NULL)
        req->gen.max_tokens = 16; /* the legacy endpoint's documented default */
    if ((rc = opt_int(root, "logprobs", 0, 5, &lp, &has_lp, err)) < 0)
        return rc;
    req->logprobs = has_lp;
    req->top_logprobs = (uint32_t)lp;
    if ((rc = opt_bool(root, "echo", &echo, err)) < 0)
        return rc;
    if (echo)
        return unsupported(err, "echo", "echo");
    if ((rc = refuse(root, "suffix", "suffix", err)) < 0)
        return rc;
    return 0;
}

static int parse_embedding(json_t *root, struct dc_api_request *req, struct dc_api_error *err)
{
    json_t *in = json_object_get(root, "input"), *item;
    const char *fmt = NULL;
    size_t i, n;
    int rc;

    if ((rc = opt_string(root, "model", &req->model, err)) < 0)
        return rc;
    if (req->model == NULL)
        req->model = "local";
    if (strlen(req->model) == 0 || strlen(req->model) >= DC_API_MODEL_ID_MAX)
        return bad(err, "model", "'%s' must be a model id", "model");
    if ((rc = opt_string(root, "user", &req->user, err)) < 0)
        return rc;
    if ((rc = opt_string(root, "encoding_format", &fmt, err)) < 0)
        return rc;
    if (fmt != NULL && strcmp(fmt, "base64") == 0)
        req->base64 = true;
    else if (fmt != NULL && strcmp(fmt, "float") != 0)
        return bad(err, "encoding_format", "'%s' must be float or base64", "encoding_format");
    if ((rc = refuse(root, "dimensions", "dimensions", err)) < 0)
        return rc;
    if (in == NULL || json_is_null(in))
        return bad(err, "input", "'%s' is required", "input");
    n = json_is_string(in) ? 1 : json_is_array(in) ? json_array_size(in) : 0;
    if (!json_is_string(in) && !json_is_array(in))
        return bad(err, "input", "'%s' must be a string or an array of strings", "input");
    if (n == 0)
        return bad(err, "input", "'%s' must not be empty", "input");
    if (n > DC_API_MAX_INPUTS) {
        dc_api_error_set(err, 400, T_INVALID, NULL, "input", "'input' holds at most %d items",
                         DC_API_MAX_INPUTS);
        return DC_EINVAL;
    }
    req->inputs = dc_calloc(n, sizeof(*req->inputs));
    if (req->inputs == NULL) {
        dc_api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return DC_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        item = json_is_string(in) ? in : json_array_get(in, i);
        if (json_is_array(item) || json_is_integer(item))
            return unsupported(err, "input", "token-id input");
        if (!json_is_string(item))
            return bad(err, "input", "'%s' must be a string or an array of strings", "input");
        if (json_string_length(item) == 0)
            return bad(err, "input", "'%s' must not hold empty strings", "input");
        if (strlen(json_string_value(item)) != json_string_length(item))
            return bad(err, "input", "'%s' must not contain NUL characters", "input");
        req->inputs[i] = json_string_value(item);
    }
    req->n_inputs = n;
    return 0;
}

int dc_api_parse_request(enum dc_api_kind kind, const char *body, size_t len,
                         const struct dc_api_parse_opts *opts, struct dc_api_request *req,
                         struct dc_api_error *err)
{
    json_error_t je;
    int rc;

    memset(req, 0, sizeof(*req));
    req->kind = kind;
    if (len == 0) {
        dc_api_error_set(err, 400, T_INVALID, NULL, NULL,
                         "We could not parse the JSON body of your request: the body is empty "
                         "(expected a JSON object)");
        return DC_EINVAL;
    }
    req->root = json_loadb(body, len, 0, &je);
    if (req->root == NULL) {
        if (json_error_code(&je) == json_error_out_of_memory) {
            dc_api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
            return DC_ENOMEM;
        }
        dc_api_error_set(err, 400, T_INVALID, NULL, NULL,
                         "We could not parse the JSON body of your request: %s at line %d, "
                         "column %d",
                         je.text, je.line, je.column);
        return DC_EINVAL;
    }
    if (!json_is_object(req->root)) {
        dc_api_error_set(err, 400, T_INVALID, NULL, NULL, "The request body must be a JSON object");
        rc = DC_EINVAL;
        goto fail;
    }
    if (kind == DC_API_EMBEDDING) {
        rc = parse_embedding(req->root, req, err);
    } else {
        rc = parse_common(req->root, req, opts, err);
        if (rc == 0)
            rc = kind == DC_API_CHAT ? parse_chat(req->root, req, err)
                                     : parse_completion(req->root, req, err);
        if (rc == 0 && req->logprobs) {
            req->gen.logprobs = true;
            req->gen.n_logprobs = req->top_logprobs;
        }
    }
    if (rc < 0)
        goto fail;
    return 0;
fail:
    dc_api_request_cleanup(req);
    return rc;
}

void dc_api_request_cleanup(struct dc_api_request *req)
{
    json_decref(req->root);
    dc_free(req->msgs);
    dc_free(req->prompt_ids);
    dc_free((void *)req->inputs);
    memset(req, 0, sizeof(*req));
}

/* ---- routes ---- */

static const struct {
    const char *path;
    const char *method;
} routes[DC_ROUTE_COUNT] = {
    [DC_ROUTE_HEALTH] = {"/health", "GET"},
    [DC_ROUTE_API_HEALTH] = {"/api/health", "GET"},
    [DC_ROUTE_API_MODELS] = {"/api/models", "GET"},
    [DC_ROUTE_METRICS] = {"/metrics", "GET"},
    [DC_ROUTE_API_PEERS] = {"/api/peers", "GET"},
    [DC_ROUTE_API_EXPERTS] = {"/api/experts", "GET"},
    [DC_ROUTE_MODELS] = {"/v1/models", "GET"},
    [DC_ROUTE_CHAT] = {"/v1/chat/completions", "POST"},
    [DC_ROUTE_COMPLETIONS] = {"/v1/completions", "POST"},
    [DC_ROUTE_EMBEDDINGS] = {"/v1/embeddings", "POST"},
    [DC_ROUTE_API_PEERS_CONNECT] = {"/api/peers/connect", "POST"},
    [DC_ROUTE_NOT_FOUND] = {"other", NULL},
};

enum dc_api_route dc_api_route_lookup(const char *path, const char **method)
{
    size_t len = strlen(path);

    /* A trailing slash names the same resource ("/v1/models/"). */
    if (len > 1 && path[len - 1] == '/')
        len--;
    for (int r = 0; r < DC_ROUTE_NOT_FOUND; r++) {
        if (strlen(routes[r].path) == len && memcmp(routes[r].path, path, len) == 0) {
            *method = routes[r].method;
            return (enum dc_api_route)r;
        }
    }
    *method = NULL;
    return DC_ROUTE_NOT_FOUND;
}

const char *dc_api_route_name(enum dc_api_route r)
{
    return r < DC_ROUTE_COUNT ? routes[r].path : "other";
}

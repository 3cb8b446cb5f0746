/* SPDX-License-Identifier: MIT */
/*
 * http_fuzz.c - libFuzzer harness for the REST request path that sees untrusted bytes: route
 * lookup and the JSON body -> engine parameters validation (src/api/parse.c). The first input
 * byte picks the endpoint (chat, completions, embeddings) and the rest is the body. Every
 * outcome is checked: a success must carry consistent parameters; a failure must be a 4xx/5xx
 * OpenAI error whose JSON rendering parses back. Strings are also run through the JSON
 * escaper, whose output must always be valid JSON (invalid UTF-8 becomes U+FFFD). Seed corpus:
 * tests/fuzz/corpus/http/.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The escaper's output must parse back as one JSON string. */
static void check_escape(const char *s, size_t len)
{
    struct dc_buf b;
    json_t *j;

    dc_buf_init(&b, 0);
    if (dc_api_json_str(&b, s, len) != 0)
        abort();
    j = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!json_is_string(j))
        abort();
    json_decref(j);
    dc_buf_cleanup(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const paths[] = {"/v1/chat/completions", "/v1/completions",
                                        "/v1/embeddings"};
    struct dc_api_parse_opts opts = {.default_temperature = 0.7};
    struct dc_api_request req;
    struct dc_api_error err;
    enum dc_api_kind kind;
    const char *method = NULL;
    int rc;

    if (size < 1)
        return 0;
    kind = (enum dc_api_kind)(data[0] % 3);
    if (dc_api_route_lookup(paths[kind], &method) == DC_ROUTE_NOT_FOUND || method == NULL)
        abort();
    check_escape((const char *)data + 1, size - 1);

    rc = dc_api_parse_request(kind, (const char *)data + 1, size - 1, &opts, &req, &err);
    if (rc == 0) {
        if (req.model == NULL || req.gen.n_stop > DC_ENGINE_MAX_STOP ||
            req.gen.n_logprobs > DC_ENGINE_MAX_TOP_LOGPROBS)
            abort();
        if (kind == DC_API_CHAT) {
            if (req.n_msgs == 0 || req.msgs == NULL)
                abort();
            for (size_t i = 0; i < req.n_msgs; i++) {
                if (req.msgs[i].role == NULL || req.msgs[i].content == NULL)
                    abort();
                check_escape(req.msgs[i].content, strlen(req.msgs[i].content));
            }
        } else if (kind == DC_API_COMPLETION) {
            if (req.prompt == NULL && req.prompt_ids == NULL)
                abort();
        } else if (req.n_inputs == 0 || req.inputs == NULL) {
            abort();
        }
        for (size_t i = 0; i < req.gen.n_stop; i++) {
            if (req.gen.stop[i] == NULL || req.gen.stop[i][0] == '\0')
                abort();
        }
        dc_api_request_cleanup(&req);
    } else {
        struct dc_buf b;
        json_t *j;

        if ((rc != DC_EINVAL && rc != DC_ENOMEM) || err.status < 400 || err.status > 599 ||
            err.type == NULL || err.message[0] == '\0' || req.root != NULL)
            abort();
        dc_buf_init(&b, 0);
        if (dc_api_error_json(&err, &b) != 0)
            abort();
        j = json_loadb((const char *)b.data, b.len, 0, NULL);
        if (!json_is_object(json_object_get(j, "error")))
            abort();
        json_decref(j);
        dc_buf_cleanup(&b);
    }
    return 0;
}

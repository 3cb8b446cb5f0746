/* SPDX-License-Identifier: MIT */
/*
 * api_test.c - the pure parts of the REST API: request bodies to engine parameters (every
 * field, its type and range errors naming the field, malformed JSON naming line and column,
 * refusals of what we do not support), OpenAI error objects, the JSON string escaper (control
 * characters, invalid UTF-8), base64, route lookup, API-key checks, the model resolution REST,
 * WebSocket and gRPC share, and an allocation-failure loop over the parser. The server itself is
 * driven end to end by tests/e2e/rest.test.mjs.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_int.h"

static const struct dc_api_parse_opts opts = {.default_temperature = 0.7};

static int parse(enum dc_api_kind kind, const char *body, struct dc_api_request *req,
                 struct dc_api_error *err)
{
    memset(err, 0, sizeof(*err));
    return dc_api_parse_request(kind, body, strlen(body), &opts, req, err);
}

/* Parses 'body' expecting a 400 that names 'param' and whose message contains 'needle'. */
static void expect_400(enum dc_api_kind kind, const char *body, const char *param,
                       const char *needle)
{
    struct dc_api_request req;
    struct dc_api_error err;

    assert_int_equal(parse(kind, body, &req, &err), DC_EINVAL);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.type, "invalid_request_error");
    if (param != NULL)
        assert_string_equal(err.param, param);
    if (needle != NULL && strstr(err.message, needle) == NULL)
        fail_msg("message '%s' lacks '%s'", err.message, needle);
    assert_null(req.root);
}

static void test_chat_full(void **state)
{
    struct dc_api_request req;
    struct dc_api_error err;

    (void)state;
    assert_int_equal(
        parse(DC_API_CHAT,
              "{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"he\"},{\"type\":"
              "\"text\",\"text\":\"llo\"}]},{\"role\":\"assistant\",\"content\":null},"
              "{\"role\":\"developer\",\"content\":\"d\"}],"
              "\"temperature\":0.25,\"top_p\":0.5,\"max_completion_tokens\":12,\"stop\":[\"x\","
              "\"yy\"],\"seed\":42,\"logprobs\":true,\"top_logprobs\":3,\"presence_penalty\":1,"
              "\"frequency_penalty\":-0.5,\"user\":\"u1\",\"stream\":true,\"stream_options\":{"
              "\"include_usage\":true},\"response_format\":{\"type\":\"json_object\"},\"n\":1,"
              "\"unknown_field\":[1,2]}",
              &req, &err),
        0);
    assert_string_equal(req.model, "tiny");
    assert_int_equal(req.n_msgs, 4);
    assert_string_equal(req.msgs[0].role, "system");
    assert_string_equal(req.msgs[1].content, "hello");
    assert_string_equal(req.msgs[2].content, "");
    assert_string_equal(req.msgs[3].role, "system");
    assert_true(req.gen.sampling.temperature == 0.25f);
    assert_true(req.gen.sampling.top_p == 0.5f);
    assert_int_equal(req.gen.max_tokens, 12);
    assert_int_equal(req.gen.n_stop, 2);
    assert_string_equal(req.gen.stop[1], "yy");
    assert_true(req.gen.sampling.has_seed);
    assert_int_equal(req.gen.sampling.seed, 42);
    assert_true(req.gen.logprobs);
    assert_int_equal(req.gen.n_logprobs, 3);
    assert_true(req.gen.sampling.presence_penalty == 1.0f);
    assert_true(req.gen.sampling.frequency_penalty == -0.5f);
    assert_string_equal(req.user, "u1");
    assert_true(req.stream);
    assert_true(req.include_usage);
    assert_true(req.gen.json_object);
    dc_api_request_cleanup(&req);
}

static void test_chat_defaults(void **state)
{
    struct dc_api_request req;
    struct dc_api_error err;

    (void)state;
    assert_int_equal(parse(DC_API_CHAT,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":\"!\"}",
                           &req, &err),
                     0);
    assert_string_equal(req.model, "local");
    assert_true(req.gen.sampling.temperature == 0.7f);
    assert_int_equal(req.gen.max_tokens, 0);
    assert_int_equal(req.gen.n_stop, 1);
    assert_false(req.stream);
    assert_false(req.gen.logprobs);
    dc_api_request_cleanup(&req);
}

static void test_malformed_json(void **state)
{
    (void)state;
    expect_400(DC_API_CHAT, "{\"messages\": [\n  {\"role\": \"user\",, }\n]}", NULL, "line 2");
    expect_400(DC_API_CHAT, "{\"messages\": [\n  {\"role\": \"user\",, }\n]}", NULL, "column");
    expect_400(DC_API_CHAT, "", NULL, "empty");
    expect_400(DC_API_CHAT, "[1,2]", NULL, "JSON object");
    expect_400(DC_API_CHAT, "{\"messages\":\"\xff\"}", NULL, "line 1");
    expect_400(DC_API_CHAT, "{\"a\":1} trailing", NULL, "line 1");
}

static void test_wrong_types(void **state)
{
    const char *u = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char body[512];

    (void)state;
    expect_400(DC_API_CHAT, "{}", "messages", "required");
    expect_400(DC_API_CHAT, "{\"messages\":{}}", "messages", "array");
    expect_400(DC_API_CHAT, "{\"messages\":[]}", "messages", "empty");
    expect_400(DC_API_CHAT, "{\"messages\":[1]}", "messages[0]", "object");
    expect_400(DC_API_CHAT, "{\"messages\":[{\"role\":\"pirate\",\"content\":\"x\"}]}",
               "messages[0].role", "system, user or assistant");
    expect_400(DC_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}",
               "messages[0].content", NULL);
    expect_400(DC_API_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content",
               "required");
#define WITH(extra) (snprintf(body, sizeof(body), "{%s,%s}", u, extra), body)
    expect_400(DC_API_CHAT, WITH("\"temperature\":\"hot\""), "temperature", "number");
    expect_400(DC_API_CHAT, WITH("\"temperature\":3"), "temperature", "between");
    expect_400(DC_API_CHAT, WITH("\"top_p\":-1"), "top_p", NULL);
    expect_400(DC_API_CHAT, WITH("\"max_tokens\":1.5"), "max_tokens", "integer");
    expect_400(DC_API_CHAT, WITH("\"max_tokens\":0"), "max_tokens", NULL);
    expect_400(DC_API_CHAT, WITH("\"stop\":5"), "stop", NULL);
    expect_400(DC_API_CHAT, WITH("\"stop\":[\"\"]"), "stop", NULL);
    expect_400(DC_API_CHAT,
               WITH("\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]"), "stop",
               "at most");
    expect_400(DC_API_CHAT, WITH("\"seed\":\"1\""), "seed", NULL);
    expect_400(DC_API_CHAT, WITH("\"stream\":1"), "stream", "boolean");
    expect_400(DC_API_CHAT, WITH("\"model\":7"), "model", "string");
    expect_400(DC_API_CHAT, WITH("\"top_logprobs\":2"), "top_logprobs", "logprobs");
    expect_400(DC_API_CHAT, WITH("\"logprobs\":true,\"top_logprobs\":21"), "top_logprobs", NULL);
    expect_400(DC_API_CHAT, WITH("\"presence_penalty\":9"), "presence_penalty", NULL);
    expect_400(DC_API_CHAT, WITH("\"stream_options\":{\"include_usage\":\"yes\"}"),
               "stream_options.include_usage", NULL);
    expect_400(DC_API_CHAT, WITH("\"response_format\":{\"type\":\"yaml\"}"), "response_format.type",
               NULL);
    expect_400(DC_API_CHAT, WITH("\"user\":false"), "user", NULL);
#undef WITH
}

static void test_not_supported(void **state)
{
    const char *u = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char body[512];

    (void)state;
#define WITH(extra) (snprintf(body, sizeof(body), "{%s,%s}", u, extra), body)
    expect_400(DC_API_CHAT, WITH("\"n\":2"), "n", "not supported");
    expect_400(DC_API_CHAT, WITH("\"tools\":[{\"type\":\"function\"}]"), "tools", "not supported");
    expect_400(DC_API_CHAT, WITH("\"tool_choice\":\"auto\""), "tool_choice", "not supported");
    expect_400(DC_API_CHAT, WITH("\"response_format\":{\"type\":\"json_schema\"}"),
               "response_format", "not supported");
    expect_400(DC_API_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
               "messages[0].role", "not supported");
    expect_400(DC_API_COMPLETION, "{\"prompt\":\"a\",\"echo\":true}", "echo", "not supported");
    expect_400(DC_API_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt", "not supported");
    expect_400(DC_API_COMPLETION, "{\"prompt\":\"a\",\"best_of\":3}", "best_of", NULL);
#undef WITH
    /* Empty tools and null tool_choice are what some clients send by default: accepted. */
    {
        struct dc_api_request req;
        struct dc_api_error err;
        assert_int_equal(parse(DC_API_CHAT,
                               "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                               "\"tools\":[],\"tool_choice\":null}",
                               &req, &err),
                         0);
        dc_api_request_cleanup(&req);
    }
}

static void test_completion(void **state)
{
    struct dc_api_request req;
    struct dc_api_error err;

    (void)state;
    assert_int_equal(parse(DC_API_COMPLETION, "{\"prompt\":\"Once\",\"logprobs\":2}", &req, &err),
                     0);
    assert_string_equal(req.prompt, "Once");
    assert_int_equal(req.prompt_len, 4);
    assert_int_equal(req.gen.max_tokens, 16);
    assert_true(req.gen.logprobs);
    assert_int_equal(req.gen.n_logprobs, 2);
    dc_api_request_cleanup(&req);

    assert_int_equal(parse(DC_API_COMPLETION, "{\"prompt\":[[\"x\"]]}", &req, &err), DC_EINVAL);
    assert_int_equal(parse(DC_API_COMPLETION, "{\"prompt\":[5,6,7],\"max_tokens\":3}", &req, &err),
                     0);
    assert_int_equal(req.n_prompt_ids, 3);
    assert_int_equal(req.prompt_ids[2], 7);
    assert_int_equal(req.gen.max_tokens, 3);
    dc_api_request_cleanup(&req);
    assert_int_equal(parse(DC_API_COMPLETION, "{\"prompt\":[\"only\"]}", &req, &err), 0);
    assert_string_equal(req.prompt, "only");
    dc_api_request_cleanup(&req);
    expect_400(DC_API_COMPLETION, "{}", "prompt", "required");
    expect_400(DC_API_COMPLETION, "{\"prompt\":[1,-2]}", "prompt", NULL);
    expect_400(DC_API_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":9}", "logprobs", NULL);
}

static void test_embeddings(void **state)
{
    struct dc_api_request req;
    struct dc_api_error err;

    (void)state;
    assert_int_equal(parse(DC_API_EMBEDDING,
                           "{\"input\":[\"a\",\"bc\"],\"encoding_format\":\"base64\"}", &req, &err),
                     0);
    assert_int_equal(req.n_inputs, 2);
    assert_string_equal(req.inputs[1], "bc");
    assert_true(req.base64);
    dc_api_request_cleanup(&req);
    assert_int_equal(parse(DC_API_EMBEDDING, "{\"input\":\"one\",\"model\":\"m\"}", &req, &err), 0);
    assert_int_equal(req.n_inputs, 1);
    assert_false(req.base64);
    dc_api_request_cleanup(&req);
    expect_400(DC_API_EMBEDDING, "{}", "input", "required");
    expect_400(DC_API_EMBEDDING, "{\"input\":[]}", "input", "empty");
    expect_400(DC_API_EMBEDDING, "{\"input\":[\"\"]}", "input", NULL);
    expect_400(DC_API_EMBEDDING, "{\"input\":[[1,2]]}", "input", "not supported");
    expect_400(DC_API_EMBEDDING, "{\"input\":\"a\",\"encoding_format\":\"hex\"}", "encoding_format",
               NULL);
}

static void test_error_json(void **state)
{
    struct dc_api_error e;
    struct dc_buf b;
    json_t *j, *o;

    (void)state;
    dc_api_error_set(&e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                     "too \"long\" %d", 5);
    dc_buf_init(&b, 0);
    assert_int_equal(dc_api_error_json(&e, &b), 0);
    j = json_loadb((const char *)b.data, b.len, 0, NULL);
    assert_non_null(j);
    o = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(o, "message")), "too \"long\" 5");
    assert_string_equal(json_string_value(json_object_get(o, "type")), "invalid_request_error");
    assert_string_equal(json_string_value(json_object_get(o, "param")), "messages");
    assert_string_equal(json_string_value(json_object_get(o, "code")), "context_length_exceeded");
    json_decref(j);
    dc_buf_reset(&b);
    dc_api_error_set(&e, 404, "invalid_request_error", NULL, NULL, "x");
    assert_int_equal(dc_api_error_json(&e, &b), 0);
    assert_string_equal((const char *)b.data, "{\"error\":{\"message\":\"x\",\"type\":\"invalid_"
                                              "request_error\",\"param\":null,\"code\":null}}");
    dc_buf_cleanup(&b);
}

static void test_json_str(void **state)
{
    struct dc_buf b;

    (void)state;
    dc_buf_init(&b, 0);
    assert_int_equal(dc_api_json_str(&b, "a\"b\\c\n\x01\xc3\xa9", 9), 0);
    assert_string_equal((const char *)b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
    dc_buf_reset(&b);
    /* Invalid UTF-8: a lone continuation byte, a truncated sequence, an overlong form, a
     * surrogate. Each bad byte becomes U+FFFD. */
    assert_int_equal(dc_api_json_str(&b,
                                     "\x80x\xe2\x82"
                                     "y\xc0\xaf\xed\xa0\x80",
                                     10),
                     0);
    json_t *j = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    assert_true(strncmp(json_string_value(j), "\xef\xbf\xbdx", 4) == 0);
    json_decref(j);
    dc_buf_reset(&b);
    assert_int_equal(dc_api_json_str(&b, "", 0), 0);
    assert_string_equal((const char *)b.data, "\"\"");
    dc_buf_reset(&b);
    assert_int_equal(dc_api_base64(&b, "foob", 4), 0);
    assert_string_equal((const char *)b.data, "Zm9vYg==");
    dc_buf_cleanup(&b);
}

static void test_routes(void **state)
{
    const char *m;

    (void)state;
    assert_int_equal(dc_api_route_lookup("/v1/chat/completions", &m), DC_ROUTE_CHAT);
    assert_string_equal(m, "POST");
    assert_int_equal(dc_api_route_lookup("/v1/models/", &m), DC_ROUTE_MODELS);
    assert_string_equal(m, "GET");
    assert_int_equal(dc_api_route_lookup("/health", &m), DC_ROUTE_HEALTH);
    assert_int_equal(dc_api_route_lookup("/v1/chat", &m), DC_ROUTE_NOT_FOUND);
    assert_null(m);
    assert_int_equal(dc_api_route_lookup("/", &m), DC_ROUTE_NOT_FOUND);
    assert_string_equal(dc_api_route_name(DC_ROUTE_EMBEDDINGS), "/v1/embeddings");
}

static void test_auth(void **state)
{
    const char *keys[] = {"sk-one", "sk-two"};
    char id[DC_AUTH_KEY_ID_LEN], id2[DC_AUTH_KEY_ID_LEN];
    struct dc_auth *a;

    (void)state;
    assert_int_equal(dc_auth_new(NULL, 0, NULL, 0, &a), 0);
    assert_false(dc_auth_enabled(a));
    assert_int_equal(dc_auth_check(a, NULL, id), 0);
    assert_string_equal(id, "-");
    dc_auth_free(a);

    assert_int_equal(dc_auth_new(keys, 2, NULL, 0, &a), 0);
    assert_true(dc_auth_enabled(a));
    assert_int_equal(dc_auth_check(a, "Bearer sk-one", id), 0);
    assert_int_equal(strncmp(id, "key-", 4), 0);
    assert_int_equal(strlen(id), 12);
    assert_int_equal(dc_auth_check(a, "bearer  sk-two", id2), 0);
    assert_string_not_equal(id, id2);
    assert_int_equal(dc_auth_check(a, "Bearer sk-three", id), DC_EPERM);
    assert_int_equal(dc_auth_check(a, "Bearer sk-on", id), DC_EPERM);
    assert_int_equal(dc_auth_check(a, "Bearer ", id), DC_EPERM);
    assert_int_equal(dc_auth_check(a, "Basic c2stb25lOg==", id), DC_EPERM);
    assert_int_equal(dc_auth_check(a, "sk-one", id), DC_EPERM);
    assert_int_equal(dc_auth_check(a, NULL, id), DC_EPERM);
    dc_auth_free(a);
    dc_auth_free(NULL);

    const char *empty[] = {""};
    assert_int_equal(dc_auth_new(empty, 1, NULL, 0, &a), DC_EINVAL);
    assert_null(a);

    /* Priority keys: their requests queue first; each must be a key. */
    const char *prio[] = {"sk-two"}, *stranger[] = {"sk-three"};
    assert_int_equal(dc_auth_new(keys, 2, stranger, 1, &a), DC_EINVAL);
    assert_null(a);
    assert_int_equal(dc_auth_new(keys, 2, prio, 1, &a), 0);
    assert_int_equal(dc_auth_check(a, "Bearer sk-one", id), 0);
    assert_int_equal(dc_auth_check(a, "Bearer sk-two", id2), 0);
    assert_int_equal(dc_auth_priority(a, id), 0);
    assert_int_equal(dc_auth_priority(a, id2), DC_AUTH_PRIORITY_HIGH);
    assert_int_equal(dc_auth_priority(a, "-"), 0);
    assert_int_equal(dc_auth_priority(a, NULL), 0);
    assert_int_equal(dc_auth_priority(NULL, id2), 0);
    dc_auth_free(a);
}

/* Every dc_* allocation the parser makes fails in turn: DC_ENOMEM (a 500), nothing leaks. */
static void test_alloc_failures(void **state)
{
    const char *bodies[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]}]}",
        "{\"prompt\":[1,2]}",
        "{\"input\":[\"a\",\"b\"]}",
    };
    const enum dc_api_kind kinds[] = {DC_API_CHAT, DC_API_COMPLETION, DC_API_EMBEDDING};

    (void)state;
    for (size_t k = 0; k < 3; k++) {
        for (long n = 0;; n++) {
            struct dc_api_request req;
            struct dc_api_error err;
            int rc;

            dc_alloc_fail_after(n);
            rc = parse(kinds[k], bodies[k], &req, &err);
            dc_alloc_fail_after(-1);
            if (rc == 0) {
                dc_api_request_cleanup(&req);
                break;
            }
            assert_int_equal(rc, DC_ENOMEM);
            assert_int_equal(err.status, 500);
            assert_true(n < 100);
        }
    }
}

/* The model resolution every interface shares (resolve.c), on what needs no registry. */
static void test_model_resolve(void **state)
{
    static const char peer[] = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    static const struct dc_api_remote_hooks hooks = {0};
    struct dc_api_models m = {.def_id = "tiny"};
    struct dc_api_request req;
    struct dc_api_error err;
    struct dc_engine *e = (struct dc_engine *)&m; /* must be overwritten */
    enum dc_api_target t;
    char body[256];

    (void)state;
    assert_int_equal(dc_api_model_target(&m, NULL), DC_API_TARGET_DEFAULT);
    assert_int_equal(dc_api_model_target(&m, ""), DC_API_TARGET_DEFAULT);
    assert_int_equal(dc_api_model_target(&m, "local"), DC_API_TARGET_DEFAULT);
    assert_int_equal(dc_api_model_target(&m, "tiny"), DC_API_TARGET_DEFAULT);
    assert_int_equal(dc_api_model_target(&m, "other"), DC_API_TARGET_REGISTRY);
    assert_int_equal(dc_api_model_target(&m, peer), DC_API_TARGET_PEER);

    /* No model on this node: 503 model_not_loaded, for the default and registry ids alike. */
    assert_int_equal(
        parse(DC_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &req, &err),
        0);
    assert_int_equal(dc_api_model_resolve(&m, &req, &t, &e, &err), DC_ESTATE);
    assert_null(e);
    assert_int_equal(err.status, 503);
    assert_string_equal(err.code, "model_not_loaded");
    dc_api_request_cleanup(&req);

    /* A PeerId without remote hooks: 503 p2p_unavailable; with them, a chat resolves to the
     * peer and anything else a peer cannot take is a 400. */
    snprintf(body, sizeof(body),
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", peer);
    assert_int_equal(parse(DC_API_CHAT, body, &req, &err), 0);
    assert_int_equal(dc_api_model_resolve(&m, &req, &t, &e, &err), DC_ESTATE);
    assert_int_equal(t, DC_API_TARGET_PEER);
    assert_string_equal(err.code, "p2p_unavailable");
    m.remote = &hooks;
    assert_int_equal(dc_api_model_resolve(&m, &req, &t, &e, &err), 0);
    assert_int_equal(t, DC_API_TARGET_PEER);
    assert_null(e);
    dc_api_request_cleanup(&req);
    snprintf(body, sizeof(body), "{\"model\":\"%s\",\"prompt\":\"x\"}", peer);
    assert_int_equal(parse(DC_API_COMPLETION, body, &req, &err), 0);
    assert_int_equal(dc_api_model_resolve(&m, &req, &t, &e, &err), DC_EINVAL);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.code, "model_not_supported");
    dc_api_request_cleanup(&req);

    /* The queue-full 429 says when to retry. */
    dc_api_queue_full(&err, "tiny");
    assert_int_equal(err.status, 429);
    assert_int_equal(err.retry_after_ms, 1000);
    assert_non_null(strstr(err.message, "retry after 1000 ms"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_full),      cmocka_unit_test(test_chat_defaults),
        cmocka_unit_test(test_malformed_json), cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_not_supported),  cmocka_unit_test(test_completion),
        cmocka_unit_test(test_embeddings),     cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_json_str),       cmocka_unit_test(test_routes),
        cmocka_unit_test(test_auth),           cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_model_resolve),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * remote_test.c - the daemon's chat forwarding (src/daemon/remote.c) without a network: how
 * every end of an infer call maps to the REST client's OpenAI error (dc_remote_map_end), and the
 * hooks' life cycle on a real libuv loop where no call reaches the host: a cancel before the
 * loop runs, the shutdown of queued calls, refusals after it, the cap on calls in flight, bad
 * input, and the allocation-failure loop over the start hook. The network path runs between
 * real daemons in tests/e2e/remote.test.mjs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "daemon/remote.h"

static void test_map_end(void **state)
{
    static const struct {
        const char *finish, *code;
        enum dc_gen_finish want;
        int status;
        const char *err_code;
    } cases[] = {
        {"stop", NULL, DC_GEN_FINISH_STOP, 0, NULL},
        {"length", NULL, DC_GEN_FINISH_LENGTH, 0, NULL},
        {"cancelled", NULL, DC_GEN_FINISH_CANCELLED, 0, NULL},
        {"refused", DC_INFER_ERR_RATE, DC_GEN_FINISH_ERROR, 429, "peer_rate_limited"},
        {"refused", DC_INFER_ERR_REFUSED, DC_GEN_FINISH_ERROR, 403, "peer_refused"},
        {"refused", DC_INFER_ERR_TOO_LARGE, DC_GEN_FINISH_ERROR, 400, "context_length_exceeded"},
        {"refused", DC_INFER_ERR_INVALID, DC_GEN_FINISH_ERROR, 400, "peer_invalid_request"},
        {"error", DC_INFER_ERR_UNAVAILABLE, DC_GEN_FINISH_ERROR, 502, "peer_unavailable"},
        {"error", DC_INFER_ERR_INTERNAL, DC_GEN_FINISH_ERROR, 502, "peer_error"},
        {"error", NULL, DC_GEN_FINISH_ERROR, 502, "peer_error"},
        {NULL, NULL, DC_GEN_FINISH_ERROR, 502, "peer_error"},
    };
    static const struct {
        int status;
        int http;
        const char *code;
    } fails[] = {
        {DC_ETIMEDOUT, 504, "peer_timeout"},      {DC_ECRYPTO, 502, "peer_bad_signature"},
        {DC_EPROTO, 502, "peer_protocol_error"},  {DC_ECLOSED, 502, "peer_stream_broken"},
        {-ECONNRESET, 502, "peer_stream_broken"},
    };

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(cases); i++) {
        struct dc_infer_done d = {.finish_reason = cases[i].finish,
                                  .error_code = cases[i].code,
                                  .error = cases[i].code != NULL ? "why" : NULL};
        struct dc_api_remote_error e = {0};

        assert_int_equal(dc_remote_map_end("12D3KooWpeer", 0, &d, &e), cases[i].want);
        assert_int_equal(e.status, cases[i].status);
        if (cases[i].err_code != NULL) {
            assert_string_equal(e.code, cases[i].err_code);
            assert_non_null(strstr(e.message, "12D3KooWpeer"));
            assert_non_null(e.type);
        }
    }
    for (size_t i = 0; i < DC_ARRAY_LEN(fails); i++) {
        struct dc_api_remote_error e = {0};

        assert_int_equal(dc_remote_map_end("P", fails[i].status, NULL, &e), DC_GEN_FINISH_ERROR);
        assert_int_equal(e.status, fails[i].http);
        assert_string_equal(e.code, fails[i].code);
    }
}

/* What the API side sees. */
struct sink {
    int tokens, dones;
    enum dc_gen_finish finish;
    int status;
};

static void on_event(void *ud, const struct dc_gen_event *ev, const struct dc_api_remote_error *err)
{
    struct sink *s = ud;

    if (ev->type == DC_GEN_EV_TOKEN) {
        s->tokens++;
        return;
    }
    s->dones++;
    s->finish = ev->finish;
    s->status = err != NULL ? err->status : 0;
    assert_true((ev->finish == DC_GEN_FINISH_ERROR) == (err != NULL));
}

static const struct dc_chat_msg msgs[] = {{"user", "Hello"}};

static struct dc_identity *peer_identity(char text[DC_PEER_ID_STR_MAX])
{
    struct dc_identity *id;

    assert_int_equal(dc_identity_generate(&id), 0);
    assert_true(dc_peer_id_to_string(dc_identity_peer_id(id), text, DC_PEER_ID_STR_MAX) > 0);
    return id;
}

static void test_lifecycle(void **state)
{
    struct dc_identity *self, *other;
    char peer[DC_PEER_ID_STR_MAX], me[DC_PEER_ID_STR_MAX];
    struct dc_gen_request g = {0};
    struct dc_api_remote_req req = {.msgs = msgs, .n_msgs = 1, .gen = &g};
    struct dc_api_remote_call *calls[70] = {0};
    struct sink s1 = {0}, s2 = {0}, many = {0};
    struct dc_remote *rm;
    uv_loop_t loop;
    size_t n = 0;
    int rc;

    (void)state;
    self = peer_identity(me);
    other = peer_identity(peer);
    assert_int_equal(uv_loop_init(&loop), 0);
    /* No host: nothing below may reach it. */
    assert_int_equal(dc_remote_new(&loop, NULL, dc_identity_peer_id(self), &rm), 0);

    /* Not a PeerId. */
    req.peer_id = "local";
    assert_int_equal(dc_remote_hooks.start(rm, &req, on_event, &s1, &calls[0]), DC_EINVAL);
    assert_null(calls[0]);

    /* Canceled before the loop ran: DONE is CANCELLED, the host untouched. */
    req.peer_id = peer;
    assert_int_equal(dc_remote_hooks.start(rm, &req, on_event, &s1, &calls[0]), 0);
    dc_remote_hooks.cancel(rm, calls[0]);
    dc_remote_hooks.cancel(rm, calls[0]); /* idempotent */
    assert_int_equal(s1.dones, 0);        /* never from inside the hooks */
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(s1.dones, 1);
    assert_int_equal(s1.finish, DC_GEN_FINISH_CANCELLED);
    dc_remote_hooks.cancel(rm, calls[0]); /* after DONE, reference held: harmless */
    dc_remote_hooks.release(rm, calls[0]);
    dc_remote_hooks.release(rm, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);

    /* The cap on calls alive at once, then the shutdown ends every queued call with 503. */
    for (n = 0; n < DC_ARRAY_LEN(calls); n++) {
        rc = dc_remote_hooks.start(rm, &req, on_event, &many, &calls[n]);
        if (rc < 0)
            break;
    }
    assert_int_equal(rc, DC_ELIMIT);
    assert_int_equal(n, 64);
    dc_remote_shutdown(rm);
    assert_int_equal(many.dones, 64);
    assert_int_equal(many.finish, DC_GEN_FINISH_ERROR);
    assert_int_equal(many.status, 503);
    for (size_t i = 0; i < n; i++)
        dc_remote_hooks.cancel(rm, calls[i]); /* queued after the shutdown: freed at close */
    for (size_t i = 0; i < n; i++)
        dc_remote_hooks.release(rm, calls[i]);

    /* After the shutdown: refused at once, no callback. */
    assert_int_equal(dc_remote_hooks.start(rm, &req, on_event, &s2, &calls[0]), DC_ECLOSED);
    assert_int_equal(s2.dones, 0);

    dc_remote_free(rm);
    dc_remote_free(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    dc_identity_free(self);
    dc_identity_free(other);
}

static void test_alloc_failures(void **state)
{
    struct dc_identity *self;
    char peer[DC_PEER_ID_STR_MAX];
    struct dc_gen_request g = {.stop = {"a", "b"}, .n_stop = 2};
    struct dc_chat_msg two[] = {{"system", "Be brief"}, {"user", "Hi"}};
    struct dc_api_remote_req req = {.peer_id = peer, .msgs = two, .n_msgs = 2, .gen = &g};
    struct dc_api_remote_call *c = NULL;
    struct sink s = {0};
    struct dc_remote *rm;
    uv_loop_t loop;
    int rc;

    (void)state;
    self = peer_identity(peer);
    assert_int_equal(uv_loop_init(&loop), 0);
    for (long n = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_remote_new(&loop, NULL, dc_identity_peer_id(self), &rm);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_true(n < 10);
    }
    for (long n = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_remote_hooks.start(rm, &req, on_event, &s, &c);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(c);
        assert_true(n < 20);
    }
    assert_int_equal(s.dones, 0);
    dc_remote_shutdown(rm);
    assert_int_equal(s.dones, 1);
    dc_remote_hooks.release(rm, c);
    dc_remote_free(rm);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    dc_identity_free(self);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_end),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

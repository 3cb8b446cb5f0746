/* SPDX-License-Identifier: MIT */
/*
 * admin_test.c - the api module's admin.c without sockets: the rate limiter's token buckets
 * driven by a fake clock (capacity, continuous refill, Retry-After, one bucket per key, a
 * bounded table that stays correct when far more clients than slots come and go, long keys),
 * and the allocation-failure loop over dc_api_limits_new. CORS, /api/peers and
 * /api/peers/connect go through real daemons in tests/e2e/ask.test.mjs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_int.h"

#define S 1000000000ull /* one second in ns */

static struct dc_api_limits *limits(uint32_t rpm)
{
    struct dc_api_config cfg = {.rate_limit_rpm = rpm};
    struct dc_api_limits *l;

    assert_int_equal(dc_api_limits_new(&cfg, &l), 0);
    return l;
}

static void test_bucket(void **state)
{
    struct dc_api_limits *l = limits(3);
    uint64_t t = 1000 * S;
    uint32_t retry = 0;

    (void)state;
    /* A full bucket: three at once, then refused for 20 s (3 per minute). */
    for (int i = 0; i < 3; i++)
        assert_true(dc_api_rate_take(l, "key-a", t, &retry));
    assert_false(dc_api_rate_take(l, "key-a", t, &retry));
    assert_int_equal(retry, 20);
    /* Another key has its own bucket. */
    assert_true(dc_api_rate_take(l, "key-b", t, &retry));
    /* 15 s later a quarter token is missing: 5 s to wait. */
    assert_false(dc_api_rate_take(l, "key-a", t + 15 * S, &retry));
    assert_int_equal(retry, 5);
    /* At 20 s one token is back, and only one. */
    assert_true(dc_api_rate_take(l, "key-a", t + 20 * S, &retry));
    assert_false(dc_api_rate_take(l, "key-a", t + 20 * S, &retry));
    /* Refill stops at the capacity: an hour idle still allows only three in a row. */
    for (int i = 0; i < 3; i++)
        assert_true(dc_api_rate_take(l, "key-a", t + 3600 * S, &retry));
    assert_false(dc_api_rate_take(l, "key-a", t + 3600 * S, &retry));
    /* A clock that goes backwards refills nothing and breaks nothing. */
    assert_false(dc_api_rate_take(l, "key-a", t, &retry));
    assert_true(retry >= 1);
    dc_api_limits_free(l);
}

static void test_many_clients(void **state)
{
    struct dc_api_limits *l = limits(1);
    uint64_t t = 5 * S;
    uint32_t retry;
    char key[64];

    (void)state;
    /* Far more clients than the table has slots: each first request passes (a reused slot
     * starts full), and the table never grows. */
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "10.0.%d.%d", i / 256, i % 256);
        assert_true(dc_api_rate_take(l, key, t + (uint64_t)i, &retry));
    }
    /* The latest client is still remembered and limited. */
    assert_false(dc_api_rate_take(l, key, t + 20000, &retry));
    assert_int_equal(retry, 60);
    dc_api_limits_free(l);
}

static void test_long_key(void **state)
{
    struct dc_api_limits *l = limits(1);
    char key[200];
    uint32_t retry;

    (void)state;
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    assert_true(dc_api_rate_take(l, key, S, &retry));
    assert_false(dc_api_rate_take(l, key, S, &retry));
    dc_api_limits_free(l);
}

static void test_alloc_failures(void **state)
{
    static const char *const origins[] = {"https://a.example", "*", "http://localhost:3000"};
    struct dc_api_config cfg = {.cors_origins = origins, .n_cors_origins = 3, .rate_limit_rpm = 10};
    struct dc_api_limits *l;
    int rc;

    (void)state;
    for (long n = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_api_limits_new(&cfg, &l);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_true(n < 100);
    }
    dc_api_limits_free(l);
    dc_api_limits_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket),
        cmocka_unit_test(test_many_clients),
        cmocka_unit_test(test_long_key),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

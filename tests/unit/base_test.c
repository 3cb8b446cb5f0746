/* SPDX-License-Identifier: MIT */
/* base_test.c - error strings, allocation fault injection, bounded buffers, varints. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "base/base.h"
#include "base/log.h"
#include "base/varint.h"

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(dc_strerror(DC_ECORRUPT), "malformed input");
    assert_string_equal(dc_strerror(DC_ENOMEM), "Cannot allocate memory");
    assert_string_equal(dc_strerror(-99999), "unknown error");
}

static void test_alloc_fail_after(void **state)
{
    void *a, *b;

    (void)state;
    dc_alloc_fail_after(1);
    a = dc_malloc(8);
    b = dc_malloc(8);
    assert_non_null(a);
    assert_null(b);
    assert_int_equal(dc_alloc_count(), 1);
    dc_alloc_fail_after(-1);
    b = dc_malloc(8);
    assert_non_null(b);
    dc_free(a);
    dc_free(b);
}

static void test_buf_limit(void **state)
{
    struct dc_buf b;

    (void)state;
    dc_buf_init(&b, 8);
    assert_int_equal(dc_buf_append(&b, "hello", 5), 0);
    assert_int_equal(dc_buf_append(&b, "world", 5), DC_ELIMIT);
    assert_int_equal(b.len, 5);
    assert_string_equal((char *)b.data, "hello");
    assert_int_equal(dc_buf_printf(&b, "%d", 123), 0);
    assert_string_equal((char *)b.data, "hello123");
    dc_buf_consume(&b, 5);
    assert_string_equal((char *)b.data, "123");
    dc_buf_cleanup(&b);
}

static void test_buf_enomem(void **state)
{
    struct dc_buf b;

    (void)state;
    dc_buf_init(&b, 0);
    dc_alloc_fail_after(0);
    assert_int_equal(dc_buf_append(&b, "x", 1), DC_ENOMEM);
    dc_alloc_fail_after(-1);
    assert_int_equal(b.len, 0);
    dc_buf_cleanup(&b);
}

static void test_varint_roundtrip(void **state)
{
    static const uint64_t values[] = {
        0, 1, 127, 128, 255, 300, 16384, 0xffffffffull, (1ull << 63) - 1};
    uint8_t buf[DC_VARINT_MAX_LEN];
    uint64_t v;
    size_t n, used;

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(values); i++) {
        n = dc_varint_encode(values[i], buf);
        assert_int_equal(n, dc_varint_len(values[i]));
        assert_int_equal(dc_varint_decode(buf, n, &v, &used), 0);
        assert_int_equal(used, n);
        assert_true(v == values[i]);
        if (n > 1)
            assert_int_equal(dc_varint_decode(buf, n - 1, &v, &used), DC_ETRUNCATED);
    }
}

static void test_varint_spec_vectors(void **state)
{
    /* From the multiformats unsigned-varint README. */
    static const uint8_t v300[] = {0xac, 0x02};
    static const uint8_t v16384[] = {0x80, 0x80, 0x01};
    static const uint8_t nonminimal[] = {0x81, 0x00};
    static const uint8_t toolong[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    uint64_t v;
    size_t used;

    (void)state;
    assert_int_equal(dc_varint_decode(v300, 2, &v, &used), 0);
    assert_int_equal(v, 300);
    assert_int_equal(dc_varint_decode(v16384, 3, &v, &used), 0);
    assert_int_equal(v, 16384);
    assert_int_equal(dc_varint_decode(nonminimal, 2, &v, &used), DC_ECORRUPT);
    assert_int_equal(dc_varint_decode(toolong, sizeof(toolong), &v, &used), DC_ECORRUPT);
}

static void test_log_levels(void **state)
{
    enum dc_log_level l;
    enum dc_log_format f;

    (void)state;
    assert_int_equal(dc_log_level_parse("debug", &l), 0);
    assert_int_equal(l, DC_LOG_DEBUG);
    assert_int_equal(dc_log_level_parse("loud", &l), DC_EINVAL);
    assert_int_equal(dc_log_format_parse("json", &f), 0);
    assert_int_equal(f, DC_LOG_FORMAT_JSON);
    dc_log_setup(DC_LOG_WARN, DC_LOG_FORMAT_TEXT, 2);
    assert_false(dc_log_enabled(DC_LOG_INFO));
    assert_true(dc_log_enabled(DC_LOG_ERROR));
}

/* Whole writes and reads through a pipe; a short read at end of file is DC_ECLOSED. */
static void test_fd_io(void **state)
{
    char big[100000], back[100000];
    int fds[2], status;
    pid_t pid;

    (void)state;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    assert_int_equal(pipe(fds), 0);
    /* Larger than a pipe's buffer, so the write is split: the reader takes it meanwhile. */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        _exit(dc_write_all(fds[1], big, sizeof(big)) == 0 ? 0 : 1);
    }
    close(fds[1]);
    assert_int_equal(dc_read_full(fds[0], back, sizeof(back)), 0);
    assert_memory_equal(big, back, sizeof(big));
    assert_int_equal(dc_read_full(fds[0], back, 1), DC_ECLOSED);
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(dc_write_all(-1, big, 1), -EBADF);
    assert_int_equal(dc_read_full(-1, back, 1), -EBADF);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),         cmocka_unit_test(test_alloc_fail_after),
        cmocka_unit_test(test_buf_limit),        cmocka_unit_test(test_buf_enomem),
        cmocka_unit_test(test_varint_roundtrip), cmocka_unit_test(test_varint_spec_vectors),
        cmocka_unit_test(test_log_levels),       cmocka_unit_test(test_fd_io),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * base.c - error strings, allocation wrappers with per-thread fault injection, and the bounded
 * byte buffer. The allocation counter is thread-local so a test that fails allocations in one
 * thread does not disturb helper threads.
 */
#include "base/base.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *dc_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case DC_ECORRUPT:
        return "malformed input";
    case DC_ELIMIT:
        return "limit exceeded";
    case DC_EPEER:
        return "peer error";
    case DC_EPROTO:
        return "protocol error";
    case DC_ECONFIG:
        return "invalid configuration";
    case DC_ESTATE:
        return "invalid state";
    case DC_ECRYPTO:
        return "cryptographic check failed";
    case DC_ECLOSED:
        return "closed by peer";
    case DC_EUNSUPPORTED:
        return "not supported";
    case DC_ETRUNCATED:
        return "input truncated";
    case DC_ERESOLVE:
        return "name resolution failed";
    default:
        break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

static _Thread_local long fail_after = -1;
static _Thread_local long alloc_count;

void dc_alloc_fail_after(long n)
{
    fail_after = n;
    alloc_count = 0;
}

long dc_alloc_count(void)
{
    return alloc_count;
}

/* True when the injected fault says this allocation must fail. */
static bool alloc_should_fail(void)
{
    if (fail_after < 0)
        return false;
    if (alloc_count >= fail_after)
        return true;
    alloc_count++;
    return false;
}

void *dc_malloc(size_t n)
{
    if (alloc_should_fail())
        return NULL;
    return malloc(n == 0 ? 1 : n);
}

void *dc_calloc(size_t count, size_t size)
{
    if (alloc_should_fail())
        return NULL;
    return calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
}

void *dc_realloc(void *p, size_t n)
{
    if (alloc_should_fail())
        return NULL;
    return realloc(p, n == 0 ? 1 : n);
}

void dc_free(void *p)
{
    free(p);
}

char *dc_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = dc_malloc(len + 1);

    if (d == NULL)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *dc_strdup(const char *s)
{
    return dc_strndup(s, SIZE_MAX);
}

char *dc_asprintf(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *s;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    s = dc_malloc((size_t)n + 1);
    if (s == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

void dc_buf_init(struct dc_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max == 0 ? SIZE_MAX : max;
}

void dc_buf_cleanup(struct dc_buf *b)
{
    dc_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* Makes room for 'extra' more bytes plus the terminating NUL. */
static int buf_reserve(struct dc_buf *b, size_t extra)
{
    size_t need, cap;
    uint8_t *p;

    if (extra > b->max - b->len)
        return DC_ELIMIT;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = dc_realloc(b->data, cap);
    if (p == NULL)
        return DC_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int dc_buf_append(struct dc_buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);

    if (rc < 0)
        return rc;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int dc_buf_append_str(struct dc_buf *b, const char *s)
{
    return dc_buf_append(b, s, strlen(s));
}

int dc_buf_printf(struct dc_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n, rc;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return DC_EINVAL;
    rc = buf_reserve(b, (size_t)n);
    if (rc < 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void dc_buf_consume(struct dc_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data != NULL)
        b->data[b->len] = '\0';
}

void dc_buf_reset(struct dc_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

uint8_t *dc_buf_steal(struct dc_buf *b, size_t *len)
{
    uint8_t *p = b->data;

    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

int dc_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int dc_read_full(int fd, void *p, size_t n)
{
    char *c = p;

    while (n > 0) {
        ssize_t got = read(fd, c, n);

        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -errno;
        if (got == 0)
            return DC_ECLOSED;
        c += got;
        n -= (size_t)got;
    }
    return 0;
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t dc_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

uint64_t dc_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

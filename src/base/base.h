/* SPDX-License-Identifier: MIT */
/*
 * base.h - what every Democritus module shares: error codes, the allocator wrappers (with the
 * fault injection that allocation-failure tests use), the bounded byte buffer, and small
 * helpers. Error convention (STYLE.md rule 3): functions return 0 on success or a negative
 * code: -errno passes through unchanged, project codes sit below -1000. dc_strerror() names
 * both.
 */
#ifndef DC_BASE_H
#define DC_BASE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DC_MUST_CHECK        __attribute__((warn_unused_result))
#define DC_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define DC_ARRAY_LEN(a)      (sizeof(a) / sizeof((a)[0]))
#define DC_UNUSED(x)         ((void)(x))

/* Error codes. The errno ones are spelled out so callers need not mix conventions. */
#define DC_ENOMEM       (-ENOMEM)
#define DC_EINVAL       (-EINVAL)
#define DC_ENOENT       (-ENOENT)
#define DC_EAGAIN       (-EAGAIN)
#define DC_ETIMEDOUT    (-ETIMEDOUT)
#define DC_EPERM        (-EPERM)
#define DC_EEXIST       (-EEXIST)
#define DC_EBUSY        (-EBUSY)
#define DC_ECORRUPT     (-1001) /* malformed input: file, message or frame */
#define DC_ELIMIT       (-1002) /* a configured or hard size/count limit was hit */
#define DC_EPEER        (-1003) /* the remote peer misbehaved or failed */
#define DC_EPROTO       (-1004) /* protocol violation or negotiation failure */
#define DC_ECONFIG      (-1005) /* invalid configuration */
#define DC_ESTATE       (-1006) /* call not valid in the object's current state */
#define DC_ECRYPTO      (-1007) /* bad signature, failed decryption, weak key */
#define DC_ECLOSED      (-1008) /* the other side closed */
#define DC_EUNSUPPORTED (-1009) /* recognised but not supported */
#define DC_ETRUNCATED   (-1010) /* input ended early; more bytes may complete it */
#define DC_ERESOLVE     (-1011) /* a host name (DNS) did not resolve */

/* Returns a static, human-readable description of 'err' (a DC_E* or -errno code). */
const char *dc_strerror(int err);

/*
 * Allocation wrappers. All Democritus code allocates through these so that tests can make the
 * n-th allocation fail (dc_alloc_fail_after) and check that every constructor and parser
 * unwinds with DC_ENOMEM and leaks nothing. Same contracts as the libc functions.
 */
void *dc_malloc(size_t n);
void *dc_calloc(size_t count, size_t size);
void *dc_realloc(void *p, size_t n);
void dc_free(void *p);
char *dc_strdup(const char *s);
char *dc_strndup(const char *s, size_t n);
/* printf into a new heap string; NULL on allocation failure. */
char *dc_asprintf(const char *fmt, ...) DC_PRINTF(1, 2);

/*
 * Fault injection for tests (per thread): after 'n' more successful allocations, every
 * allocation fails until dc_alloc_fail_after(-1) turns it off. dc_alloc_count() tells how many
 * allocations succeeded since the last call to dc_alloc_fail_after().
 */
void dc_alloc_fail_after(long n);
long dc_alloc_count(void);

/*
 * A growable byte buffer with a hard cap ('max', 0 = SIZE_MAX), for every buffer a peer can
 * grow. 'data' is always NUL-terminated past 'len' once allocated, so text can be read as a C
 * string. Embedded: dc_buf_init()/dc_buf_cleanup().
 */
struct dc_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max;
};

void dc_buf_init(struct dc_buf *b, size_t max);
void dc_buf_cleanup(struct dc_buf *b);
/* Appends n bytes. Returns 0, DC_ELIMIT past the cap (buffer unchanged), or DC_ENOMEM. */
DC_MUST_CHECK int dc_buf_append(struct dc_buf *b, const void *p, size_t n);
DC_MUST_CHECK int dc_buf_append_str(struct dc_buf *b, const char *s);
DC_MUST_CHECK int dc_buf_printf(struct dc_buf *b, const char *fmt, ...) DC_PRINTF(2, 3);
/* Drops the first n bytes (n <= len). */
void dc_buf_consume(struct dc_buf *b, size_t n);
void dc_buf_reset(struct dc_buf *b);
/* Hands the data to the caller (who frees it with dc_free) and resets the buffer. */
uint8_t *dc_buf_steal(struct dc_buf *b, size_t *len);

/* ---- blocking file-descriptor I/O ---- */

/* Writes all of p[0..n) to 'fd', retrying on EINTR and short writes. Returns 0 or -errno
 * (-EIO for a write that wrote nothing). */
DC_MUST_CHECK int dc_write_all(int fd, const void *p, size_t n);
/* Reads exactly n bytes into p, retrying on EINTR and short reads. Returns 0, DC_ECLOSED at
 * end of file before n bytes, or -errno. */
DC_MUST_CHECK int dc_read_full(int fd, void *p, size_t n);

/* ---- clocks ---- */

/* Unix epoch milliseconds (CLOCK_REALTIME): for times that leave the process (record expiry,
 * peerstore timestamps). */
uint64_t dc_wall_ms(void);
/* Milliseconds of CLOCK_MONOTONIC: for durations and deadlines inside the process. */
uint64_t dc_mono_ms(void);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * grpc_int.h - the gRPC protocol core: one HTTP/2 connection (an nghttp2 server session) and
 * its gRPC calls, with no I/O. Bytes from the client go in with dc_grpc_conn_feed(); bytes for
 * the client come out of dc_grpc_conn_output(); engine events come in through
 * dc_grpc_shared_event(); deadlines are checked by dc_grpc_conn_expire() when the caller's
 * timer says dc_grpc_conn_next_deadline() has come. grpc.c's server wraps it around libuv TCP
 * sockets; the libFuzzer harness feeds it raw HTTP/2 (with a backend without a model).
 *
 * Threads: a conn and everything it touches belongs to one thread (the server's loop).
 */
#ifndef DC_GRPC_INT_H
#define DC_GRPC_INT_H

#include "api/rpc_int.h"

#define DC_GRPC_MAX_MESSAGE (4u << 20)   /* default request message limit (gRPC's own default) */
#define DC_GRPC_MAX_STREAMS 100          /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define DC_GRPC_OUT_CHUNK   (256u << 10) /* output bytes produced before the caller writes */
#define DC_GRPC_MAX_PENDING (8u << 20)   /* unsent reply bytes per stream before giving up */

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum dc_grpc_status {
    DC_GRPC_OK = 0,
    DC_GRPC_CANCELLED = 1,
    DC_GRPC_UNKNOWN = 2,
    DC_GRPC_INVALID_ARGUMENT = 3,
    DC_GRPC_DEADLINE_EXCEEDED = 4,
    DC_GRPC_NOT_FOUND = 5,
    DC_GRPC_PERMISSION_DENIED = 7,
    DC_GRPC_RESOURCE_EXHAUSTED = 8,
    DC_GRPC_FAILED_PRECONDITION = 9,
    DC_GRPC_OUT_OF_RANGE = 11,
    DC_GRPC_UNIMPLEMENTED = 12,
    DC_GRPC_INTERNAL = 13,
    DC_GRPC_UNAVAILABLE = 14,
    DC_GRPC_UNAUTHENTICATED = 16,
};

struct dc_grpc_shared {
    struct dc_rpc_backend *backend;
    struct dc_rpc_mailbox *mb;
    size_t max_message;
    size_t n_calls; /* calls whose DONE has not been handled yet */
};

struct dc_grpc_conn;

/* Makes a conn and queues the server's SETTINGS. Returns 0 or DC_ENOMEM. */
DC_MUST_CHECK int dc_grpc_conn_new(struct dc_grpc_shared *sh, struct dc_grpc_conn **out);
/* The client's address (dc_api_client_addr), the rate limit's key when auth is off. */
void dc_grpc_conn_set_client(struct dc_grpc_conn *c, const char *client);
/* Cancels the conn's generations (they finish alone; dc_grpc_shared_event frees them) and
 * frees the conn. NULL is a no-op. */
void dc_grpc_conn_free(struct dc_grpc_conn *c);

/* Consumes client bytes. Returns 0, or a negative code when the connection must be dropped
 * (after writing what dc_grpc_conn_output holds: usually a GOAWAY). */
DC_MUST_CHECK int dc_grpc_conn_feed(struct dc_grpc_conn *c, const uint8_t *data, size_t len);
void dc_grpc_conn_output(struct dc_grpc_conn *c, const uint8_t **data, size_t *len);
void dc_grpc_conn_consume(struct dc_grpc_conn *c, size_t n);
/* True when nghttp2 wants neither to read nor to write and the output is drained. */
bool dc_grpc_conn_finished(const struct dc_grpc_conn *c);
/* The earliest stream deadline (monotonic ms), or 0 when none. */
uint64_t dc_grpc_conn_next_deadline(const struct dc_grpc_conn *c);
/* Ends every stream whose deadline is <= now_ms with DEADLINE_EXCEEDED (cancelling its
 * generation). */
void dc_grpc_conn_expire(struct dc_grpc_conn *c, uint64_t now_ms);
/* Server shutdown: GOAWAY, every open call ends with UNAVAILABLE. */
void dc_grpc_conn_shutdown(struct dc_grpc_conn *c);

/* Routes one mailbox event to its stream (or frees an orphaned call on DONE). Frees 'ev'. */
void dc_grpc_shared_event(struct dc_grpc_shared *sh, struct dc_rpc_event *ev);

/* Parses a grpc-timeout value ("100m", "5S": 1-8 digits and a unit H M S m u n) into
 * milliseconds (rounded up). Returns 0 or DC_EINVAL. */
DC_MUST_CHECK int dc_grpc_timeout_parse(const char *v, uint64_t *ms);
/* Percent-encodes a grpc-message value into 'out' (NUL-terminated, truncated to fit). */
void dc_grpc_percent_encode(const char *msg, char *out, size_t cap);

#endif

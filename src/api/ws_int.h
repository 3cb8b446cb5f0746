/* SPDX-License-Identifier: MIT */
/*
 * ws_int.h - the WebSocket protocol core: one socket's frames (wslay's event API) and chat
 * messages, with no I/O. Bytes from the peer go in with dc_ws_conn_feed(); bytes for the peer
 * come out of dc_ws_conn_output(); engine events for the socket's calls go in with
 * dc_ws_conn_event(). ws.c's server wraps it around an upgraded socket; the unit test and the
 * libFuzzer harness drive it directly (with a backend without model, no engine is needed).
 *
 * Threads: a conn and everything it touches belongs to one thread (the server's loop).
 */
#ifndef DC_WS_INT_H
#define DC_WS_INT_H

#include "api/rpc_int.h"

#define DC_WS_MAX_MESSAGE     (1u << 20)   /* default frame/message limit: beyond it, close 1009 */
#define DC_WS_MAX_INFLIGHT    16           /* chat requests in flight per socket */
#define DC_WS_MAX_ID          256          /* bytes of a request id */
#define DC_WS_OUT_CHUNK       (256u << 10) /* output bytes handed out before wslay holds back */
#define DC_WS_MAX_QUEUED      (8u << 20)   /* unsent output beyond which the socket is closed */
#define DC_WS_AUTH_TIMEOUT_MS 10000

/* What the socket's conns share: the backend, the mailbox their calls post to, and the count
 * of calls not yet finished (the server waits for zero before it stops). */
struct dc_ws_shared {
    struct dc_rpc_backend *backend;
    struct dc_rpc_mailbox *mb;
    size_t max_message;
    size_t n_calls;
};

struct dc_ws_conn;

/*
 * Makes a conn. 'authed': the upgrade request carried a valid key (or auth is off); otherwise
 * the first message must be {"type":"auth","key":...}. Returns 0 or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_ws_conn_new(struct dc_ws_shared *sh, bool authed, struct dc_ws_conn **out);
/* Cancels the conn's calls (they finish on their own and are freed by dc_ws_shared_event) and
 * frees it. NULL is a no-op. */
void dc_ws_conn_free(struct dc_ws_conn *c);

/* Consumes bytes from the peer: frames, replies (into the output), calls. Returns 0, or a
 * negative code when the connection is broken beyond a close handshake (drop it now). */
DC_MUST_CHECK int dc_ws_conn_feed(struct dc_ws_conn *c, const uint8_t *data, size_t len);
/* The bytes waiting for the peer; after writing some, dc_ws_conn_consume(c, n). */
void dc_ws_conn_output(struct dc_ws_conn *c, const uint8_t **data, size_t *len);
void dc_ws_conn_consume(struct dc_ws_conn *c, size_t n);
/* True when the conn still wants bytes from the peer. */
bool dc_ws_conn_want_read(const struct dc_ws_conn *c);
/* True when both sides are done (close handshake over or a fatal error) and the output is
 * drained: the socket can be closed. */
bool dc_ws_conn_finished(const struct dc_ws_conn *c);
/* Starts a close handshake with 'code' (1000, 1001, 1008, ...), cancelling every call. */
void dc_ws_conn_close(struct dc_ws_conn *c, uint16_t code, const char *reason);
/* Queues a ping. */
void dc_ws_conn_ping(struct dc_ws_conn *c);
/* Who the socket's chats count against in the rate limit: 'key_id' (dc_auth_check's id of the
 * key the upgrade request carried; "-" when none) and the client's address (dc_api_client_addr).
 * Either may be NULL (kept). An auth message later sets the key id. */
void dc_ws_conn_set_identity(struct dc_ws_conn *c, const char *key_id, const char *client);
bool dc_ws_conn_authed(const struct dc_ws_conn *c);
/* True once our close frame is sent (or the conn broke): only the peer's close is awaited. */
bool dc_ws_conn_close_sent(const struct dc_ws_conn *c);
uint64_t dc_ws_conn_created_ms(const struct dc_ws_conn *c);

/* Routes one event taken from the mailbox to its conn (or frees an orphaned call on DONE).
 * Frees 'ev'. */
void dc_ws_shared_event(struct dc_ws_shared *sh, struct dc_rpc_event *ev);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)), 28 chars + NUL. */
void dc_ws_accept_key(const char *key, char out[29]);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * peerview.h - the daemon's view of its P2P peers for the API threads (daemon-internal).
 *
 * The host belongs to the loop thread; the REST server's threads must never touch it. A peer
 * view bridges the two: the loop thread keeps a JSON snapshot of the connected peers (refreshed
 * on every connect, disconnect, identify and ping, and every few seconds) under a mutex, which
 * API threads copy (dc_peerview_json); and a dial requested by an API thread goes to the loop
 * through a queue and a uv_async_t, the caller waiting on a condition variable with a deadline
 * (dc_peerview_connect). Connected peers are pinged (/ipfs/ping/1.0.0) once identified and
 * every 30 s so the snapshot carries a round-trip time.
 */
#ifndef DC_DAEMON_PEERVIEW_H
#define DC_DAEMON_PEERVIEW_H

#include <uv.h>

#include "base/base.h"
#include "p2p/host.h"

struct dc_peerview;

/* Creates the view on 'loop' for 'host' (both borrowed; call on the loop thread). Returns 0,
 * DC_ENOMEM, or a libuv error. */
DC_MUST_CHECK int dc_peerview_new(uv_loop_t *loop, struct dc_host *host, struct dc_peerview **out);

/* Host events, forwarded by the daemon (loop thread). */
void dc_peerview_connected(struct dc_peerview *pv, const struct dc_peer_id *peer, bool outbound,
                           const struct dc_multiaddr *remote);
void dc_peerview_disconnected(struct dc_peerview *pv, const struct dc_peer_id *peer);
void dc_peerview_identified(struct dc_peerview *pv, const struct dc_peer_id *peer);

/*
 * Any thread: '*out' receives a heap copy (dc_free) of the snapshot, a JSON array of objects
 * {"peer_id", "direction", "remote_address", "addresses": [...], "rtt_ms" (null when never
 * pinged), "agent", "protocol_version", "protocols": [...], "identified", "last_seen_ms"}.
 * Returns 0 or DC_ENOMEM. Signature fits dc_api_config.peers_json (ud is the view).
 */
int dc_peerview_json(void *pv, char **out, size_t *len);

/*
 * Any thread but the loop's: dials 'multiaddr' on the loop and waits up to 'timeout_ms' (0:
 * 10 s) for the result. Fills 'peer_id' with the peer's PeerId text. Returns 0; DC_EINVAL with
 * 'err' naming the problem for an address that does not parse or names this node;
 * DC_ETIMEDOUT; DC_ECLOSED while the daemon shuts down; or the dial's error (-ECONNREFUSED,
 * DC_EPEER, ...) with 'err' saying it in one line. Fits dc_api_config.peers_connect.
 */
int dc_peerview_connect(void *pv, const char *multiaddr, uint32_t timeout_ms, char *peer_id,
                        size_t cap, char *err, size_t errlen);

/* Loop thread: refuses new dials and wakes every waiting caller with DC_ECLOSED. Call before
 * the API server is freed. */
void dc_peerview_shutdown(struct dc_peerview *pv);

/* Loop thread, after dc_host_free(): closes the view's handles; the memory goes when libuv
 * closes them (run the loop once more). NULL is a no-op. */
void dc_peerview_free(struct dc_peerview *pv);

#endif

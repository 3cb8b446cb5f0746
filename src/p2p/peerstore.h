/* SPDX-License-Identifier: MIT */
/*
 * peerstore.h - the host's peerstore on disk: one SQLite database (WAL, mode 0600) holding per
 * peer its PeerId, agent and protocol version, protocols, last-seen time and last ping RTT,
 * and its addresses with where each came from and when it was last seen. The host keeps the
 * live copy in memory (host.c) and hands changed entries here in batches; this file does no
 * I/O besides SQLite and never runs on its own: every call is the caller's, on its thread.
 *
 * Bounds are the caller's, applied on each save and load: at most 'max_peers' peers (the
 * least recently seen go first), at most DC_PEER_MAX_ADDRS addresses per peer, and addresses
 * not seen for 'addr_ttl_ms' are dropped.
 */
#ifndef DC_P2P_PEERSTORE_H
#define DC_P2P_PEERSTORE_H

#include "p2p/host.h"

struct dc_peerstore;

/*
 * Opens the database at 'path' (borrowed), creating it with mode 0600 and the schema when
 * absent, in WAL mode. Returns 0 with '*out' owning it (dc_peerstore_close), -errno when the
 * file cannot be created, DC_ECORRUPT when SQLite cannot open or use it (not a database, read
 * only, ...), or DC_ENOMEM; on failure err[0..errlen) holds one sentence naming the file.
 */
DC_MUST_CHECK int dc_peerstore_open(const char *path, struct dc_peerstore **out, char *err,
                                    size_t errlen);

/* Closes the database. NULL is a no-op. */
void dc_peerstore_close(struct dc_peerstore *ps);

/* Receives one loaded peer. 'info' is the callee's: it owns the protocol strings (keep them
 * or release them with dc_peer_info_cleanup()). Return 0 to go on, negative to stop the load
 * with that code. */
typedef int (*dc_peerstore_load_cb)(void *ud, struct dc_peer_info *info);

/*
 * Loads up to 'max_peers' peers, most recently seen first, each with its addresses seen
 * within 'addr_ttl_ms' of 'now_ms' (most recent first, at most DC_PEER_MAX_ADDRS). Rows that
 * do not decode (a bad PeerId or multiaddr) are skipped. Returns 0, the callback's code,
 * DC_ECORRUPT (err says why), or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_peerstore_load(struct dc_peerstore *ps, uint64_t now_ms, uint64_t addr_ttl_ms,
                                    size_t max_peers, dc_peerstore_load_cb cb, void *ud, char *err,
                                    size_t errlen);

/*
 * Writes peers[0..n) (borrowed) in one transaction, replacing what was stored for them, then
 * drops addresses older than 'addr_ttl_ms' and all but the 'max_peers' most recently seen
 * peers. Returns 0, or DC_ECORRUPT (nothing written; err says why).
 */
DC_MUST_CHECK int dc_peerstore_save(struct dc_peerstore *ps,
                                    const struct dc_peer_info *const *peers, size_t n,
                                    uint64_t now_ms, uint64_t addr_ttl_ms, size_t max_peers,
                                    char *err, size_t errlen);

/* Peers stored (for tests and statistics), or a negative code. */
DC_MUST_CHECK long dc_peerstore_count(struct dc_peerstore *ps);

#endif

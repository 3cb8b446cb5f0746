/* SPDX-License-Identifier: MIT */
/*
 * host.h - the libp2p host: TCP connections on the caller's libuv loop, upgraded through
 * the protocol cores (optional pnet -> multistream-select "/noise" -> Noise XX ->
 * multistream-select "/yamux/1.0.0" -> yamux), streams negotiated per protocol id, the
 * built-in /ipfs/ping/1.0.0, /ipfs/id/1.0.0 and /ipfs/id/push/1.0.0 protocols, and a bounded
 * peerstore kept in memory and, with a state directory, in state_dir/peers.sqlite
 * (peerstore.h).
 *
 * Threading and lifetime: a host and everything it hands out belong to the loop's thread.
 * Callbacks run on that thread from inside the loop, never from inside the call that
 * registered them. dc_host_free() closes every handle; callbacks still pending fire during it
 * (dials and pings with DC_ECLOSED, streams' on_close with DC_ECLOSED) and never afterwards;
 * the caller must run the loop once more so libuv can finish closing the handles (the host's
 * memory is released by the last close callback). No dc_host_* call may be made from inside a
 * callback for dc_host_free().
 *
 * Connections are deduplicated per peer: when two end up connecting the same pair (both sides
 * dialed at once), both hosts keep the one dialed by the smaller PeerId and close the other.
 */
#ifndef DC_P2P_HOST_H
#define DC_P2P_HOST_H

#include <uv.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/p2p.h"

#define DC_PING_PROTOCOL_ID          "/ipfs/ping/1.0.0"
#define DC_IDENTIFY_PROTOCOL_ID      "/ipfs/id/1.0.0"
#define DC_IDENTIFY_PUSH_PROTOCOL_ID "/ipfs/id/push/1.0.0"
#define DC_IDENTIFY_PROTOCOL_VERSION "ipfs/0.1.0"
#define DC_PING_LEN                  32
/* Peerstore limits per peer: what a peer says about itself beyond these is dropped (an
 * address beyond DC_PEER_MAX_ADDRS replaces the one seen least recently). */
#define DC_PEER_MAX_ADDRS     16
#define DC_PEER_MAX_PROTOCOLS 64
#define DC_PEER_AGENT_MAX     128
/* Longest protocol id we register or store. */
#define DC_PROTOCOL_ID_MAX 256
/* Peerstore bounds: peers kept (the least recently seen one not connected goes first), and
 * how long an address nobody mentioned is kept. Each peer costs up to ~9 KiB of memory. */
#define DC_HOST_DEFAULT_MAX_PEERS 4096
#define DC_HOST_ADDR_TTL_MS       (7ull * 24u * 3600u * 1000u)

/* Where the peerstore learned an address (dc_peer_info.addr_source). */
enum dc_addr_source {
    DC_ADDR_SOURCE_UNKNOWN = 0,
    DC_ADDR_SOURCE_DIALED = 1,   /* we dialed it and the connection came up */
    DC_ADDR_SOURCE_IDENTIFY = 2, /* the peer listed it in identify (or a push) */
    DC_ADDR_SOURCE_DHT = 3,      /* a DHT answer, or dc_host_add_peer_addrs() */
};

struct dc_host;
struct dc_host_stream;

/* What the host knows about a peer (peerstore entry). Borrowed from the host: valid until the
 * next callback or dc_host_* call. */
struct dc_peer_info {
    struct dc_peer_id id;
    bool connected;
    bool identified; /* an identify message from it was stored */
    char agent[DC_PEER_AGENT_MAX];
    char protocol_version[DC_PEER_AGENT_MAX];
    size_t n_addrs;
    struct dc_multiaddr addrs[DC_PEER_MAX_ADDRS]; /* listen addresses it reported, plus the one
                                                     we dialed */
    uint8_t addr_source[DC_PEER_MAX_ADDRS];       /* enum dc_addr_source, per address */
    uint64_t addr_seen_ms[DC_PEER_MAX_ADDRS];     /* wall clock when last learned or used */
    size_t n_protocols;
    char *protocols[DC_PEER_MAX_PROTOCOLS];
    struct dc_multiaddr observed; /* our address as it saw us (len 0 when unknown) */
    uint64_t last_seen_ms;        /* wall clock, ms since the epoch */
    uint64_t rtt_us;              /* last ping round trip, 0 when never pinged */
};

/* Host-wide events; any may be NULL. 'ud' is dc_host_config.ud. */
struct dc_host_events {
    /* A connection to 'peer' finished its upgrade (outbound: we dialed it). 'remote' is the
     * peer's address as seen on the socket. */
    void (*on_connected)(void *ud, const struct dc_peer_id *peer, bool outbound,
                         const struct dc_multiaddr *remote);
    /* The last connection to 'peer' closed; 'err' is 0 for an orderly close. */
    void (*on_disconnected)(void *ud, const struct dc_peer_id *peer, int err);
    /* The peer's identify message arrived and is in the peerstore. */
    void (*on_identified)(void *ud, const struct dc_peer_info *info);
    /* A connection failed before its upgrade finished (inbound or outbound). 'remote' is the
     * socket address in text form, 'stage' a static phrase naming what failed (e.g.
     * "security negotiation"), 'hint' NULL or a static sentence with the likely cause
     * ("different private swarm key"). For outbound connections the dial callback also
     * fires. */
    void (*on_conn_error)(void *ud, const char *remote, bool outbound, int err, const char *stage,
                          const char *hint);
};

struct dc_host_config {
    uv_loop_t *loop;                    /* borrowed; runs every handle of the host */
    const struct dc_identity *identity; /* borrowed: must outlive the host */
    const char *agent_version;          /* copied; NULL: "democritus" */
    /* Private network: every connection is wrapped in the pnet cipher with this key. */
    bool use_psk;
    uint8_t psk[DC_PNET_KEY_LEN];
    uint32_t max_connections;        /* 0: 256; further inbound connections are closed */
    uint32_t max_inbound_handshakes; /* 0: 64; upgrades in flight at once */
    uint32_t handshake_timeout_ms;   /* 0: 10 s from accept/connect to the yamux session */
    uint32_t idle_timeout_ms;        /* 0: never; close connections without streams this long */
    uint32_t max_streams;            /* 0: 256 per connection */
    /* Peerstore. With 'state_dir' (borrowed for the call) peers are loaded from and saved to
     * state_dir/peers.sqlite; NULL keeps them in memory only. */
    const char *state_dir;
    uint32_t max_peers;    /* 0: DC_HOST_DEFAULT_MAX_PEERS */
    uint64_t addr_ttl_ms;  /* 0: DC_HOST_ADDR_TTL_MS */
    uint32_t peer_save_ms; /* 0: 30 s between batched saves and expiry passes */
    struct dc_host_events ev;
    void *ud;
};

/*
 * Creates a host. Registers the ping, identify and identify-push handlers and, with a state
 * directory, loads the peerstore. A peerstore database that cannot be opened, created or read
 * does not fail the host: it keeps peers in memory only and dc_host_peerstore_error() says
 * why. Returns 0 with '*out' owning it (release with dc_host_free), DC_EINVAL when loop or
 * identity is missing, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_host_new(const struct dc_host_config *cfg, struct dc_host **out);

/* Closes everything (see the lifetime note above). NULL is a no-op. */
void dc_host_free(struct dc_host *h);

/*
 * Listens on 'ma' (/ip4/<a>/tcp/<port> or /ip6/<a>/tcp/<port>; port 0 picks a free port).
 * Returns 0, DC_EUNSUPPORTED for other multiaddrs, or -errno from bind/listen (e.g.
 * -EADDRINUSE).
 */
DC_MUST_CHECK int dc_host_listen(struct dc_host *h, const struct dc_multiaddr *ma);

/*
 * The addresses the host is reachable at, without /p2p/: each listener's bound address, with
 * an unspecified address (0.0.0.0, ::) expanded to the machine's interface addresses of that
 * family (loopback included). Fills out[0..cap) and returns how many there are in total.
 */
size_t dc_host_listen_addrs(const struct dc_host *h, struct dc_multiaddr *out, size_t cap);

/* Our PeerId (borrowed from the identity). */
const struct dc_peer_id *dc_host_peer_id(const struct dc_host *h);

/* Result of a dial: 0 with the peer's id, or a negative code (peer NULL). */
typedef void (*dc_host_dial_cb)(void *ud, int status, const struct dc_peer_id *peer);

/*
 * Dials 'ma' (/ip4|/ip6|/dns|/dns4|/dns6/<host>/tcp/<port>, optionally ending in /p2p/<id>,
 * which the Noise handshake then checks). A DNS name is resolved on libuv's thread pool (dns4:
 * IPv4 only, dns6: IPv6 only, dns: both, in the resolver's order) and its addresses are
 * dialed one after another within the one timeout, until one answers as the expected peer.
 * 'timeout_ms' 0 means the handshake timeout. 'cb' fires once: with 0
 * when a connection to the peer is up (at once, from the loop, if one already was), else with
 * DC_ETIMEDOUT, DC_EPEER (another PeerId answered), -ECONNREFUSED and other -errno,
 * DC_EPROTO/DC_ECORRUPT/DC_ECRYPTO when the upgrade failed, DC_ERESOLVE when the name did not
 * resolve to any address (on_conn_error also fires, with the resolver's reason as the hint),
 * DC_ECLOSED when the host was freed. Returns 0 (cb will fire), DC_EUNSUPPORTED for an
 * address we cannot dial (udp, dnsaddr, ...),
 * DC_EINVAL when it names our own PeerId, DC_EAGAIN while that PeerId is in dial backoff
 * (after n consecutive failed dials to it, none for 2^(n-1) s, at most 5 min; reset by any
 * connection with it), DC_ESTATE while shutting down, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_host_dial(struct dc_host *h, const struct dc_multiaddr *ma,
                               uint32_t timeout_ms, dc_host_dial_cb cb, void *ud);

/* Stream callbacks; any may be NULL. 's' is valid until on_close returns. */
struct dc_host_stream_cb {
    /* The protocol is agreed (dc_host_stream_protocol). Inbound streams start here. */
    void (*on_open)(void *ud, struct dc_host_stream *s);
    /* n > 0 bytes of data, borrowed for the call (the window is reopened after it returns). */
    void (*on_data)(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n);
    /* The peer half-closed its side. */
    void (*on_fin)(void *ud, struct dc_host_stream *s);
    /* The stream is gone: 0 after both sides closed, -ECONNRESET when the peer reset it,
     * DC_EPROTO when negotiation failed (no common protocol), DC_ECLOSED when the connection
     * or host went away. Not called after dc_host_stream_reset(). */
    void (*on_close)(void *ud, struct dc_host_stream *s, int err);
};

/*
 * Registers the handler for inbound streams that negotiate 'protocol' (copied; at most
 * DC_PROTOCOL_ID_MAX bytes). 'cb' is borrowed (keep it static); each new stream gets 'ud' as
 * its user pointer. Registering a protocol again replaces its handler. Identify advertises
 * every registered protocol. Returns 0, DC_EINVAL, DC_ELIMIT (too many), or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_host_set_handler(struct dc_host *h, const char *protocol,
                                      const struct dc_host_stream_cb *cb, void *ud);

/*
 * Opens a stream to a connected 'peer', proposing protocols[0..n) in order. The stream is
 * returned at once ('*out', borrowed until on_close); data written before on_open is sent
 * after the negotiation. Returns 0; DC_ENOENT when no connection to 'peer' is up; DC_EINVAL;
 * DC_ELIMIT at the stream limit; DC_ECLOSED while the connection closes; DC_ENOMEM.
 */
DC_MUST_CHECK int dc_host_new_stream(struct dc_host *h, const struct dc_peer_id *peer,
                                     const char *const *protocols, size_t n,
                                     const struct dc_host_stream_cb *cb, void *ud,
                                     struct dc_host_stream **out);

/*
 * Queues p[0..len) (copied) on the stream; it is sent as the peer's window allows. Returns 0,
 * DC_ESTATE after dc_host_stream_close(), DC_ELIMIT when more than 16 MiB would be queued
 * unsent (nothing queued), or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_host_stream_write(struct dc_host_stream *s, const void *p, size_t len);

/* Bytes queued on the stream and not yet handed to the connection. */
size_t dc_host_stream_queued(const struct dc_host_stream *s);

/* Half-closes: FIN goes out after the queued data. Returns 0 or DC_ESTATE when already done. */
DC_MUST_CHECK int dc_host_stream_close(struct dc_host_stream *s);

/* Resets the stream at once; 's' is invalid afterwards and on_close does not fire. */
void dc_host_stream_reset(struct dc_host_stream *s);

/* The agreed protocol (NULL before on_open), the remote PeerId, and the user pointer. */
const char *dc_host_stream_protocol(const struct dc_host_stream *s);
const struct dc_peer_id *dc_host_stream_peer(const struct dc_host_stream *s);
void dc_host_stream_set_user(struct dc_host_stream *s, void *ud);

/* Result of a ping: 0 and the round trip in microseconds, or a negative code. */
typedef void (*dc_host_ping_cb)(void *ud, int status, uint64_t rtt_us);

/*
 * Sends one /ipfs/ping/1.0.0 probe (32 random bytes) to a connected 'peer'; the RTT is also
 * stored in the peerstore. 'cb' fires once: 0 with the RTT, DC_EPROTO when the echo differs,
 * or the stream's error. Returns 0 or as dc_host_new_stream().
 */
DC_MUST_CHECK int dc_host_ping(struct dc_host *h, const struct dc_peer_id *peer, dc_host_ping_cb cb,
                               void *ud);

/* The peerstore entry for 'peer', or NULL (borrowed, see struct dc_peer_info). */
const struct dc_peer_info *dc_host_peer_info(const struct dc_host *h,
                                             const struct dc_peer_id *peer);

/*
 * Adds addresses[0..n) to the peerstore entry of 'peer' (created when absent; source
 * DC_ADDR_SOURCE_DHT), e.g. addresses a DHT lookup learned, so that a later dial by PeerId can
 * use them. A known address has its last-seen time refreshed; beyond DC_PEER_MAX_ADDRS the
 * least recently seen one is replaced; a trailing /p2p/ is stripped. A new peer beyond the
 * max_peers bound evicts the least recently seen peer that is not connected. Returns 0,
 * DC_EINVAL for our own id, DC_ELIMIT when every stored peer is connected, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_host_add_peer_addrs(struct dc_host *h, const struct dc_peer_id *peer,
                                         const struct dc_multiaddr *addrs, size_t n);

/* Whether a connection to 'peer' is up now. */
bool dc_host_is_connected(const struct dc_host *h, const struct dc_peer_id *peer);

/*
 * Decodes an identify message as read from an /ipfs/id/1.0.0 stream (p[0..len): the varint
 * length prefix and exactly that many bytes of Identify protobuf) from 'peer' into '*out'
 * (id, agent, protocol version, protocols, listen addresses, observed address; identified
 * set). Oversized fields are cut to the peerstore limits; invalid multiaddrs are dropped.
 * '*out' owns its protocol strings: release with dc_peer_info_cleanup(). Returns 0;
 * DC_ELIMIT above 64 KiB; DC_ECORRUPT for a bad prefix or protobuf; DC_EPEER when the message
 * carries a public key that is not 'peer''s; DC_ENOMEM. On failure '*out' owns nothing.
 */
DC_MUST_CHECK int dc_identify_parse(const uint8_t *p, size_t len, const struct dc_peer_id *peer,
                                    struct dc_peer_info *out);

/* Frees the protocol strings of a dc_peer_info filled by dc_identify_parse(). */
void dc_peer_info_cleanup(struct dc_peer_info *info);

/*
 * Every peerstore entry, most recently seen first: fills out[0..cap) with borrowed pointers
 * (valid until the next dc_host_* call or callback) and returns how many there are. After a
 * restart these include the peers loaded from the database (connected false, identified
 * false, protocols and agent as last stored), e.g. to seed a DHT routing table.
 */
size_t dc_host_peers(const struct dc_host *h, const struct dc_peer_info **out, size_t cap);

/* Peers in the peerstore. */
size_t dc_host_peer_count(const struct dc_host *h);

/* Asked, while the peerstore looks for a peer to evict, whether 'peer' must be kept (e.g. it
 * is in the DHT routing table, which takes its addresses from here). Must not call into the
 * host. */
typedef bool (*dc_host_keep_peer_cb)(void *ud, const struct dc_peer_id *peer);

/* Installs the eviction hook ('cb' NULL removes it); 'ud' is passed to it. The DHT installs
 * one for its routing table (see peer_evict in host.c for why peers are kept rather than
 * dropped from the table). */
void dc_host_set_keep_peer(struct dc_host *h, dc_host_keep_peer_cb cb, void *ud);

/* Why the peerstore database is not in use (empty when it is, or when none was asked for),
 * or the last error saving to it. */
const char *dc_host_peerstore_error(const struct dc_host *h);

/* Writes the changed peerstore entries to the database now (the host also does so every
 * peer_save_ms and when freed). Returns 0 (also without a database), DC_ECORRUPT with
 * dc_host_peerstore_error() saying why, or DC_ENOMEM; unsaved entries are retried later. */
DC_MUST_CHECK int dc_host_peerstore_save(struct dc_host *h);

/* Peers with a connection up now. */
size_t dc_host_connected_count(const struct dc_host *h);

/* Connections of any state (handshaking included). */
size_t dc_host_connection_count(const struct dc_host *h);

#endif

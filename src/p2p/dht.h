/* SPDX-License-Identifier: MIT */
/*
 * dht.h - the Kademlia DHT service on a libp2p host: it puts the pure core of kad.h on the
 * wire. It serves /democritus/kad/1.0.0 (or /ipfs/kad/1.0.0) streams, drives iterative lookups
 * over real streams (dialing peers by the addresses the peerstore and the lookups learned),
 * and offers the four user operations: GET, PUT, PROVIDE and FIND_PROVIDERS. It also keeps
 * the table fresh (a self lookup when the first DHT peer appears and on every refresh
 * interval), republishes the keys this node provides, expires old entries, and persists the
 * record and provider stores in SQLite (WAL) when given a database path.
 *
 * Requests follow the libp2p kad-dht spec as go-libp2p and js-libp2p speak it: one stream per
 * request, a varint-length-prefixed protobuf Message each way (ADD_PROVIDER has no answer),
 * closerPeers with addresses so the requester can dial them.
 *
 * The host's events are the application's: it must forward identify results with
 * dc_dht_peer_identified() (that is how DHT servers enter the routing table).
 *
 * Threading and lifetime: a dht belongs to the host's loop thread. Free it with dc_dht_free()
 * before the host; operations still running complete with DC_ECLOSED during the free.
 */
#ifndef DC_P2P_DHT_H
#define DC_P2P_DHT_H

#include "p2p/host.h"
#include "p2p/kad.h"

struct dc_dht;

struct dc_dht_config {
    struct dc_host *host; /* borrowed; must outlive the dht */
    uv_loop_t *loop;      /* the host's loop */
    /* Protocol id spoken and served: DC_KAD_PROTOCOL_ID (NULL means it) or
     * DC_KAD_IPFS_PROTOCOL_ID. Copied. */
    const char *protocol;
    /* Client mode: lookups only; the protocol is neither served nor advertised. */
    bool client_mode;
    /* SQLite database for the record and provider stores (created, WAL); NULL: memory only.
     * Copied. */
    const char *db_path;
    uint32_t request_timeout_ms;  /* 0: 10 s per request */
    uint32_t refresh_interval_ms; /* 0: 10 min between table refreshes (self lookups) */
    uint32_t save_interval_ms;    /* 0: 5 min between store saves (also saved at free) */
};

/* What an operation found. Pointers are borrowed for the callback. */
struct dc_dht_result {
    const uint8_t *value; /* GET: the best value found */
    size_t value_len;
    size_t n_providers; /* FIND_PROVIDERS */
    const struct dc_kad_peer_info *providers;
    size_t n_stored; /* PUT: peers that stored the record; PROVIDE: peers told */
    size_t n_peers;  /* peers queried by the lookup */
};

/*
 * An operation finished: 0 and the result, or DC_ENOENT (GET: no value; FIND_PROVIDERS: no
 * provider), DC_EAGAIN (PUT/PROVIDE: no DHT peer could be reached; the local store has it),
 * DC_ECLOSED (the dht was freed), DC_ENOMEM.
 */
typedef void (*dc_dht_done_cb)(void *ud, int status, const struct dc_dht_result *r);

/*
 * Creates the service: registers the stream handler (server mode), opens and loads the
 * database. Returns 0 with '*out' owning it, DC_EINVAL, DC_ECORRUPT when the database cannot
 * be opened or read (the message is logged by the caller from dc_dht_error()), or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_dht_new(const struct dc_dht_config *cfg, struct dc_dht **out);

/* Saves the stores, fails every operation with DC_ECLOSED, resets the DHT's streams and frees
 * everything. The host must still be alive. NULL is a no-op. */
void dc_dht_free(struct dc_dht *dht);

/* Text of the last database error (empty when none). */
const char *dc_dht_error(const struct dc_dht *dht);

/* The core, for validators and statistics (borrowed). */
struct dc_kad *dc_dht_kad(struct dc_dht *dht);

/* Forward every identify result here: a peer that advertises our protocol is a DHT server
 * and joins the routing table (which may start the first self lookup). */
void dc_dht_peer_identified(struct dc_dht *dht, const struct dc_peer_info *info);

/* Adds a peer known to be a DHT server (e.g. a bootstrap node just dialed), as if identified. */
void dc_dht_add_server(struct dc_dht *dht, const struct dc_peer_id *peer);

/* Starts a self lookup now (fills the table near our own key). Returns 0 or DC_ENOMEM. */
DC_MUST_CHECK int dc_dht_bootstrap(struct dc_dht *dht);

/*
 * The operations. Keys are 1..DC_KAD_MAX_KEY bytes, copied. 'cb' fires once, from the loop,
 * never inside the call. Each returns 0 (cb will fire), DC_EINVAL, DC_ESTATE while freeing,
 * or DC_ENOMEM.
 *
 * GET:   best valid value among the local store and the lookup's answers.
 * PUT:   validates and stores locally, then sends PUT_VALUE to the k closest peers. Values
 *        under /democritus/ must be signed records (p2p/record.h: dc_dht_record_sign), under
 *        /ipns/ IPNS records; a value the namespace's validator refuses fails the call with
 *        its error (DC_ECORRUPT, DC_ECRYPTO, ...), an unknown namespace with DC_EUNSUPPORTED.
 * PROVIDE: records us as a provider locally and sends ADD_PROVIDER to the k closest peers;
 *        with 'keep' the key is re-announced after each table refresh and every
 *        DC_KAD_PROVIDER_REPUBLISH_MS (cb fires for the first announcement only).
 * FIND_PROVIDERS: providers from the local store and the lookup, up to 'max' (0: 20).
 */
DC_MUST_CHECK int dc_dht_get(struct dc_dht *dht, const uint8_t *key, size_t key_len,
                             dc_dht_done_cb cb, void *ud);
DC_MUST_CHECK int dc_dht_put(struct dc_dht *dht, const uint8_t *key, size_t key_len,
                             const uint8_t *value, size_t value_len, dc_dht_done_cb cb, void *ud);
DC_MUST_CHECK int dc_dht_provide(struct dc_dht *dht, const uint8_t *key, size_t key_len, bool keep,
                                 dc_dht_done_cb cb, void *ud);
DC_MUST_CHECK int dc_dht_find_providers(struct dc_dht *dht, const uint8_t *key, size_t key_len,
                                        uint32_t max, dc_dht_done_cb cb, void *ud);

/*
 * The DHT key a user means by 'text': for a CID (CIDv0 "Qm..." base58, or CIDv1 in multibase
 * such as "bafy...") its multihash, as IPFS providers use; anything else is taken as bytes.
 * Fills out[0..DC_KAD_MAX_KEY) and '*len'. Returns 0, or DC_EINVAL for an empty or too long
 * key.
 */
DC_MUST_CHECK int dc_dht_key_parse(const char *text, uint8_t out[DC_KAD_MAX_KEY], size_t *len);

/* Peers in the routing table, and operations plus requests still running. */
size_t dc_dht_table_size(const struct dc_dht *dht);
size_t dc_dht_busy(const struct dc_dht *dht);

#endif

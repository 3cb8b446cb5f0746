/* SPDX-License-Identifier: MIT */
/*
 * kad.h - the Kademlia DHT core of the P2P module (libp2p/specs kad-dht), spoken on
 * /democritus/kad/1.0.0 and, byte for byte the same, on /ipfs/kad/1.0.0. Like the other
 * protocol cores it does no I/O and reads no clock: the host hands it decoded messages (or
 * bytes) and the current time in milliseconds, and gets back messages to send and actions to
 * carry out. The same code therefore runs in the libuv host, in unit tests, in the fuzzer and
 * in bench/dht, which simulates 10,000 nodes in one process.
 *
 * The parts:
 *
 *   1. Messages   - dc_kad_msg, the decoded RPC message, and its varint-length-prefixed
 *                   protobuf codec (proto/libp2p/kad.proto) with a hard size cap.
 *   2. The node   - struct dc_kad: the routing table (256 k-buckets over the XOR distance of
 *                   SHA-256 of PeerIds, least-recently-seen order, a replacement cache per
 *                   bucket, ping-before-evict surfaced as an action), the record store with
 *                   per-namespace validators (/pk, /ipns, /democritus) and the provider store,
 *                   both bounded and serialisable.
 *   3. Lookups    - dc_kad_lookup, the iterative FIND_NODE / GET_VALUE / GET_PROVIDERS state
 *                   machine: alpha requests in flight, a timeout per request, termination
 *                   when the k closest peers seen have all answered.
 *   4. Serving    - dc_kad_handle_request(): one request message in, one response out.
 *
 * Driving it from a host (summary; each function says more):
 *
 *   - Create one dc_kad per protocol id with dc_kad_new(). When identify shows that a peer
 *     speaks the kad protocol (it is a DHT server), call dc_kad_add_peer(). When a request to
 *     a peer fails, the lookup reports it itself; for failures outside lookups call
 *     dc_kad_peer_failed().
 *   - Every time something happens (a message, a timer), call dc_kad_poll() until it returns 0
 *     and carry out each action: DC_KAD_ACTION_PING asks whether a long-quiet peer still
 *     lives (answer with dc_kad_ping_result()).
 *   - A lookup: dc_kad_lookup_new(), then dc_kad_lookup_poll() until it returns 0. For each
 *     DC_KAD_ACTION_SEND open a stream to the peer, write the request (dc_kad_msg_encode) and
 *     read one response; give it to dc_kad_lookup_on_response(), or call
 *     dc_kad_lookup_on_failure() when the dial, the stream or the decoding failed. For
 *     DC_KAD_ACTION_CANCEL (the request timed out) reset the stream and ignore its reply.
 *     Poll again after every event and no later than dc_kad_lookup_next_deadline().
 *     DC_KAD_ACTION_DONE comes once at the end; read the results, then dc_kad_lookup_free().
 *   - Serving: for each request read on an inbound stream call dc_kad_handle_request() (or
 *     the _bytes variant) and write the response it builds, unless it returns
 *     DC_KAD_NO_RESPONSE (ADD_PROVIDER is not answered, as in go-libp2p and js-libp2p).
 *     A node in client mode does not register the protocol with multistream and does not
 *     advertise it in identify; dc_kad_handle_request() refuses with DC_ESTATE there.
 *   - Periodically: dc_kad_expire() (e.g. hourly), bucket refreshes with
 *     dc_kad_refresh_key(), republishing own provider records every
 *     DC_KAD_PROVIDER_REPUBLISH_MS, and dc_kad_store_save() into the state database.
 *
 * Time: every now_ms is the same clock, Unix epoch milliseconds (record and provider expiry
 * need wall time, and persisted times are absolute); request deadlines use it too, so a
 * wall-clock jump only makes in-flight requests time out early or late.
 *
 * A dc_kad and its lookups belong to one thread. Lookups point at their dc_kad: free every
 * lookup before the node.
 */
#ifndef DC_KAD_H
#define DC_KAD_H

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/p2p.h"

#define DC_KAD_PROTOCOL_ID      "/democritus/kad/1.0.0"
#define DC_KAD_IPFS_PROTOCOL_ID "/ipfs/kad/1.0.0"

/* Replication parameter k and lookup concurrency alpha (spec defaults). */
#define DC_KAD_K     20
#define DC_KAD_ALPHA 3
/* Bits of the key space: keys are SHA-256 digests. */
#define DC_KAD_KEY_BITS 256
#define DC_KAD_KEY_LEN  32

/*
 * Largest message body accepted or sent (the varint length prefix not counted). Go uses 4 MiB,
 * rust-libp2p 16 KiB; 64 KiB holds the largest record we accept (DC_KAD_MAX_VALUE) plus k
 * closer peers with their addresses, while keeping what one hostile stream can make us
 * buffer small.
 */
#define DC_KAD_MAX_MESSAGE (64u * 1024u)
/* Largest key (record key, provider key, FIND_NODE target) and record value accepted. The
 * IPNS spec caps a record at 10 KiB; our capability records are far smaller. */
#define DC_KAD_MAX_KEY   512u
#define DC_KAD_MAX_VALUE (16u * 1024u)
/* Peers kept from one message (closerPeers and providerPeers each; extra ones are dropped)
 * and addresses kept per peer (invalid or unsupported multiaddrs are dropped too). */
#define DC_KAD_MAX_MSG_PEERS  64u
#define DC_KAD_MAX_PEER_ADDRS 16u
/* Most candidate peers one lookup tracks. */
#define DC_KAD_LOOKUP_MAX_PEERS 256u
/* Most providers one GET_PROVIDERS lookup collects. */
#define DC_KAD_LOOKUP_MAX_PROVIDERS 256u

/* Provider records live 48 h and are republished every 22 h (go-libp2p and js-libp2p use the
 * same figures); stored records are dropped 36 h after they were received. */
#define DC_KAD_PROVIDER_TTL_MS       (48ull * 3600ull * 1000ull)
#define DC_KAD_PROVIDER_REPUBLISH_MS (22ull * 3600ull * 1000ull)
#define DC_KAD_RECORD_TTL_MS         (36ull * 3600ull * 1000ull)

/* ============================================================================================
 * 1. Messages
 * ========================================================================================== */

/* MessageType of the spec (the values are the wire values). */
enum dc_kad_msg_type {
    DC_KAD_PUT_VALUE = 0,
    DC_KAD_GET_VALUE = 1,
    DC_KAD_ADD_PROVIDER = 2,
    DC_KAD_GET_PROVIDERS = 3,
    DC_KAD_FIND_NODE = 4,
    DC_KAD_PING = 5,
};

/* ConnectionType of the spec: what the sender knows of its connectivity to a peer. */
enum dc_kad_conn {
    DC_KAD_NOT_CONNECTED = 0,
    DC_KAD_CONNECTED = 1,
    DC_KAD_CAN_CONNECT = 2,
    DC_KAD_CANNOT_CONNECT = 3,
};

/* A Peer entry of a message. 'addrs' is owned by the message that holds the entry. */
struct dc_kad_peer_info {
    struct dc_peer_id id;
    enum dc_kad_conn connection;
    size_t n_addrs;             /* <= DC_KAD_MAX_PEER_ADDRS */
    struct dc_multiaddr *addrs; /* n_addrs entries, NULL when 0 */
};

/*
 * A decoded (or to-be-encoded) RPC message. Every pointer is owned by the message and
 * released by dc_kad_msg_cleanup(); build messages with the dc_kad_msg_set_* and
 * dc_kad_msg_add_* helpers so that this holds. A zeroed struct (or dc_kad_msg_init()) is an
 * empty PUT_VALUE message.
 */
struct dc_kad_msg {
    enum dc_kad_msg_type type;
    uint8_t *key; /* key_len bytes, <= DC_KAD_MAX_KEY; NULL when empty */
    size_t key_len;
    bool has_record;
    struct {
        uint8_t *key; /* the record's own key */
        size_t key_len;
        uint8_t *value;
        size_t value_len;
        char *time_received; /* RFC 3339 text or NULL; informative only, never trusted */
    } record;
    size_t n_closer; /* closerPeers, <= DC_KAD_MAX_MSG_PEERS */
    struct dc_kad_peer_info *closer;
    size_t n_providers; /* providerPeers, <= DC_KAD_MAX_MSG_PEERS */
    struct dc_kad_peer_info *providers;
};

/* Sets 'm' to an empty PUT_VALUE message that owns nothing. */
void dc_kad_msg_init(struct dc_kad_msg *m);

/* Releases everything 'm' owns and re-initialises it. NULL is a no-op. */
void dc_kad_msg_cleanup(struct dc_kad_msg *m);

/* Copies key[0..len) into m->key (replacing any). Returns 0, DC_ELIMIT above DC_KAD_MAX_KEY,
 * or DC_ENOMEM ('m' unchanged on failure). */
DC_MUST_CHECK int dc_kad_msg_set_key(struct dc_kad_msg *m, const uint8_t *key, size_t len);

/* Copies a record (key, value; time_received may be NULL) into 'm' and sets has_record.
 * Returns 0, DC_ELIMIT when the key or value is over its cap, or DC_ENOMEM ('m' unchanged). */
DC_MUST_CHECK int dc_kad_msg_set_record(struct dc_kad_msg *m, const uint8_t *key, size_t key_len,
                                        const uint8_t *value, size_t value_len,
                                        const char *time_received);

/* Appends a copy of 'p' (id and up to DC_KAD_MAX_PEER_ADDRS addresses) to closerPeers
 * (providers false) or providerPeers (providers true). Returns 0, DC_ELIMIT when the list
 * holds DC_KAD_MAX_MSG_PEERS entries or p has too many addresses, or DC_ENOMEM. */
DC_MUST_CHECK int dc_kad_msg_add_peer(struct dc_kad_msg *m, bool providers,
                                      const struct dc_kad_peer_info *p);

/*
 * Encodes 'm' as <uvarint length><protobuf> and appends it to 'out'. Returns 0; DC_ELIMIT
 * when the body would exceed DC_KAD_MAX_MESSAGE or 'out' its cap ('out' unchanged);
 * DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_msg_encode(const struct dc_kad_msg *m, struct dc_buf *out);

/*
 * Finds the first length-prefixed frame in p[0..len). On success '*body' points into 'p' at
 * the message body, '*body_len' is its length and '*used' the bytes the whole frame takes.
 * Returns 0; DC_ETRUNCATED when more bytes are needed (read more and call again with all of
 * them); DC_ECORRUPT for a malformed varint; DC_ELIMIT when the announced length exceeds
 * DC_KAD_MAX_MESSAGE (the stream should be reset: nothing more of it can be trusted).
 */
DC_MUST_CHECK int dc_kad_frame_split(const uint8_t *p, size_t len, const uint8_t **body,
                                     size_t *body_len, size_t *used);

/*
 * Decodes one message body (no length prefix) into '*out', which the caller then owns
 * (release with dc_kad_msg_cleanup; on failure '*out' is left initialised and empty).
 * Unknown fields are skipped; peers with an invalid PeerId and multiaddrs that do not parse
 * are dropped, as are peers and addresses beyond the caps, so one bad entry does not void a
 * response. Returns 0; DC_ELIMIT when len > DC_KAD_MAX_MESSAGE or the key or record is over
 * its cap; DC_ECORRUPT for anything that is not a well-formed Message; DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_msg_decode(const uint8_t *p, size_t len, struct dc_kad_msg *out);

/* ============================================================================================
 * 2. The node: routing table, record and provider stores
 * ========================================================================================== */

struct dc_kad;

/*
 * A record validator for one key namespace (the text between the first two '/' of a key:
 * "pk" for "/pk/...", "democritus" for "/democritus/expert/..."). Both callbacks get the
 * full key and are pure functions.
 */
struct dc_kad_validator {
    /* Returns 0 when 'value' is a valid record for 'key' at time 'now_ms' (Unix epoch ms),
     * or a negative DC_E* code that says why not (DC_ECRYPTO for a bad signature,
     * DC_ECORRUPT for a malformed value, DC_ETIMEDOUT for an expired one...). */
    int (*validate)(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                    size_t value_len, uint64_t now_ms);
    /* Returns the index in [0, n) of the best of n >= 1 valid values (ties: the lowest
     * index, so the choice is stable). NULL means "the first one". */
    size_t (*select)(void *ud, const uint8_t *key, size_t key_len, const uint8_t *const *values,
                     const size_t *value_lens, size_t n);
    void *ud;
};

struct dc_kad_config {
    /* This node's PeerId (copied). Required. */
    struct dc_peer_id self;
    /* Client mode: do not serve requests (dc_kad_handle_request answers DC_ESTATE); the host
     * must then neither register nor advertise the protocol. Lookups work the same. */
    bool client_mode;
    /* Bucket size and lookup concurrency: 0 means DC_KAD_K / DC_KAD_ALPHA. k <= 64,
     * alpha <= 16. */
    uint32_t k;
    uint32_t alpha;
    /* Deadline of one lookup request (default 10,000 ms). */
    uint64_t request_timeout_ms;
    /* Consecutive failures after which a peer leaves the routing table (default 2: one lost
     * request does not evict a long-lived peer, two do). */
    uint32_t max_failures;
    /* Peers kept per bucket in the replacement cache (default k; at most 64). */
    uint32_t replacements;
    /* A full bucket asks to ping its least-recently-seen peer before a newcomer can take its
     * place only when that peer was last seen this long ago (default 60,000 ms); otherwise
     * the newcomer just waits in the replacement cache. */
    uint64_t ping_after_ms;
    /* Record and provider stores (0 = the default in brackets). */
    uint64_t record_ttl_ms;       /* [DC_KAD_RECORD_TTL_MS] */
    uint64_t provider_ttl_ms;     /* [DC_KAD_PROVIDER_TTL_MS] */
    size_t max_records;           /* [4096] records stored */
    size_t max_record_bytes;      /* [16 MiB] keys + values of all records */
    size_t max_provider_keys;     /* [16384] distinct provider keys */
    size_t max_providers_per_key; /* [64] */
    size_t max_providers;         /* [65536] provider entries in all */
    /*
     * Optional: fills out[0..max) with what the host knows of peer 'id''s addresses (its own
     * when 'id' is self) and returns how many, for the closerPeers and providerPeers of
     * responses. NULL: peers are sent without addresses.
     */
    size_t (*peer_addrs)(void *ud, const struct dc_peer_id *id, struct dc_multiaddr *out,
                         size_t max);
    /* Optional: a lookup learned peer 'p' (with p->n_addrs addresses) from a response: the
     * host should remember the addresses in its peerstore so that it can dial the peer. */
    void (*on_peer_learned)(void *ud, const struct dc_kad_peer_info *p);
    void *ud;
};

/* Fills 'cfg' with the defaults (zeroes mean defaults anyway) and 'self'. */
void dc_kad_config_default(struct dc_kad_config *cfg, const struct dc_peer_id *self);

/*
 * Creates a node. 'cfg' is copied. The /pk and /ipns validators are installed (/ipns: the
 * IPNS record spec's checks and selector, Ed25519 keys only; see p2p/record.h); other
 * namespaces, /democritus among them, need dc_kad_set_validator().
 * Returns 0 with '*out' owning the node (dc_kad_free), DC_EINVAL for a bad config (empty
 * self id, k or alpha or replacements out of range), DC_ECRYPTO when libsodium cannot
 * initialise (the stores' hash key is random), or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_new(const struct dc_kad_config *cfg, struct dc_kad **out);

/* Frees the node and its stores. Every lookup on it must be freed first. NULL is a no-op. */
void dc_kad_free(struct dc_kad *kad);

/*
 * Registers (or replaces) the validator of namespace 'ns' (e.g. "democritus", no slashes,
 * at most 63 bytes; copied). A key whose namespace has no validator is refused by PUT_VALUE
 * and never accepted from GET_VALUE responses. Returns 0, DC_EINVAL for a bad name or a
 * NULL validate callback, DC_ELIMIT past 16 namespaces, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_set_validator(struct dc_kad *kad, const char *ns,
                                       const struct dc_kad_validator *v);

/*
 * Validates 'value' for 'key' with the validator of its namespace. Returns 0, DC_EUNSUPPORTED
 * when no validator handles the namespace, DC_ELIMIT for an oversized key or value, or the
 * validator's error.
 */
DC_MUST_CHECK int dc_kad_validate(struct dc_kad *kad, const uint8_t *key, size_t key_len,
                                  const uint8_t *value, size_t value_len, uint64_t now_ms);

/* The SHA-256 of key[0..len): a point in the key space. */
void dc_kad_hash(const uint8_t *key, size_t len, uint8_t out[DC_KAD_KEY_LEN]);

/* Number of leading bits a and b share (256 when equal): the common prefix length of two
 * key-space points, i.e. 255 minus the index of the highest bit of their XOR distance. */
unsigned dc_kad_common_prefix(const uint8_t a[DC_KAD_KEY_LEN], const uint8_t b[DC_KAD_KEY_LEN]);

/* Compares the XOR distances of a and b to 'target': <0 when a is closer, 0 equal, >0. */
int dc_kad_distance_cmp(const uint8_t target[DC_KAD_KEY_LEN], const uint8_t a[DC_KAD_KEY_LEN],
                        const uint8_t b[DC_KAD_KEY_LEN]);

/* Result codes of dc_kad_add_peer() besides errors. */
#define DC_KAD_ADDED   0 /* the peer is in the table (new, or already there: now fresh) */
#define DC_KAD_PENDING 1 /* its bucket is full: it waits in the replacement cache */

/*
 * Tells the table that 'id' is a live DHT server (it answered a kad request, or identify
 * showed it speaks the protocol) at 'now_ms'. A known peer becomes the most recently seen of
 * its bucket and its failure count resets. A new peer joins its bucket when there is room;
 * otherwise it enters the bucket's replacement cache (evicting the oldest replacement), and
 * when the bucket's least-recently-seen peer has been quiet for ping_after_ms a
 * DC_KAD_ACTION_PING for it is queued (one per bucket at a time) - the long-lived peer is
 * kept unless it fails to answer. Returns DC_KAD_ADDED, DC_KAD_PENDING, or DC_EINVAL for our
 * own id or an empty id. Never allocates beyond the fixed bucket capacity (may return
 * DC_ENOMEM when a bucket's storage is first allocated).
 */
DC_MUST_CHECK int dc_kad_add_peer(struct dc_kad *kad, const struct dc_peer_id *id, uint64_t now_ms);

/*
 * Records a failed exchange with 'id' (dial, stream or request failure). After max_failures
 * consecutive failures the peer is removed and the most recently seen replacement takes its
 * place. Returns 1 when the peer was removed, 0 when it stays, DC_ENOENT when it is not in
 * the table (its replacement-cache entry, if any, is dropped).
 */
int dc_kad_peer_failed(struct dc_kad *kad, const struct dc_peer_id *id);

/* Removes 'id' from the table at once (e.g. it stopped speaking the protocol), promoting a
 * replacement. Returns 0 or DC_ENOENT. */
int dc_kad_remove_peer(struct dc_kad *kad, const struct dc_peer_id *id);

/*
 * Answers a DC_KAD_ACTION_PING: 'alive' true marks the peer seen now (it stays, the
 * newcomers keep waiting); false removes it and promotes the most recently seen replacement.
 * Returns 0 or DC_ENOENT when the peer has left the table meanwhile.
 */
int dc_kad_ping_result(struct dc_kad *kad, const struct dc_peer_id *id, bool alive,
                       uint64_t now_ms);

/* Whether 'id' is in the routing table (not counting replacement caches). */
bool dc_kad_has_peer(const struct dc_kad *kad, const struct dc_peer_id *id);

/* Peers in the routing table, and in bucket 'cpl' (peers sharing exactly 'cpl' leading bits
 * with our key; 0 for cpl >= 256). */
size_t dc_kad_table_size(const struct dc_kad *kad);
size_t dc_kad_bucket_size(const struct dc_kad *kad, unsigned cpl);

/*
 * Writes the (up to) 'max' table peers closest to the key-space point 'target' to out[],
 * closest first, and returns how many.
 */
size_t dc_kad_closest(const struct dc_kad *kad, const uint8_t target[DC_KAD_KEY_LEN],
                      struct dc_peer_id *out, size_t max);

/*
 * Bucket refresh: writes to '*out' a PeerId-shaped key (a sha2-256 multihash that belongs to
 * no one) whose key-space point shares exactly 'cpl' leading bits with ours, so a FIND_NODE
 * lookup for it explores bucket 'cpl'. 'rnd' makes the choice random (pass random bits).
 * SHA-256 cannot be inverted, so this searches: about 2^(cpl+1) hashes, with a budget of
 * 2^22 tries. Pass a dc_kad_refresh_table (below) to make cpl < 16 a table look-up.
 * Returns 0, DC_EINVAL for cpl > 255, or DC_EAGAIN when the budget ran out (cpl too large
 * to be worth refreshing: such buckets fill from the self-lookup).
 */
struct dc_kad_refresh_table;
DC_MUST_CHECK int dc_kad_refresh_key(const struct dc_kad *kad,
                                     const struct dc_kad_refresh_table *table, unsigned cpl,
                                     uint64_t rnd, struct dc_peer_id *out);

/*
 * A table of one refresh key per 16-bit key-space prefix (256 KiB), built once in about a
 * million SHA-256 operations (~0.2 s) and then shared read-only by any number of nodes.
 * Returns 0 with '*out' owned by the caller, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_refresh_table_new(struct dc_kad_refresh_table **out);
void dc_kad_refresh_table_free(struct dc_kad_refresh_table *t);

/* ============================================================================================
 * Actions: what the core asks the host to do.
 * ========================================================================================== */

enum dc_kad_action_type {
    DC_KAD_ACTION_NONE = 0,
    /* Lookup: send 'msg' to 'peer' as request 'req_id' and report the outcome with
     * dc_kad_lookup_on_response() or dc_kad_lookup_on_failure(). */
    DC_KAD_ACTION_SEND,
    /* Lookup: request 'req_id' to 'peer' timed out and counts as failed; reset its stream. */
    DC_KAD_ACTION_CANCEL,
    /* Lookup: finished; read the results. Emitted once. */
    DC_KAD_ACTION_DONE,
    /* Node: check that 'peer' is alive (a kad PING, or an existing connection's ping) and
     * answer with dc_kad_ping_result(). */
    DC_KAD_ACTION_PING,
};

struct dc_kad_action {
    enum dc_kad_action_type type;
    uint64_t req_id;              /* SEND, CANCEL */
    struct dc_peer_id peer;       /* SEND, CANCEL, PING */
    const struct dc_kad_msg *msg; /* SEND: the request, borrowed until the lookup is freed */
};

/*
 * Takes the next routing-table action (DC_KAD_ACTION_PING) into '*a'. Returns 1 when one
 * was taken, 0 when there is none.
 */
int dc_kad_poll(struct dc_kad *kad, struct dc_kad_action *a);

/* ============================================================================================
 * 3. Lookups
 * ========================================================================================== */

struct dc_kad_lookup;

struct dc_kad_lookup_config {
    /* DC_KAD_FIND_NODE, DC_KAD_GET_VALUE or DC_KAD_GET_PROVIDERS. */
    enum dc_kad_msg_type type;
    /* The key (FIND_NODE: a binary PeerId), copied; 1..DC_KAD_MAX_KEY bytes. */
    const uint8_t *key;
    size_t key_len;
    /* GET_VALUE: finish once this many peers returned a valid value (0: run to the end).
     * The local store's value counts as one when present. */
    uint32_t quorum;
    /* GET_PROVIDERS: finish once this many distinct providers are known (0: run to the
     * end; at most DC_KAD_LOOKUP_MAX_PROVIDERS are kept). */
    uint32_t max_providers;
};

/*
 * Starts a lookup on 'kad', seeded with the k peers of the routing table closest to the
 * key. Nothing is sent until dc_kad_lookup_poll(). Returns 0 with '*out' owned by the caller
 * (dc_kad_lookup_free, before dc_kad_free), DC_EINVAL for a bad type or key, or DC_ENOMEM.
 * A lookup on an empty table finishes at once (DONE on the first poll).
 */
DC_MUST_CHECK int dc_kad_lookup_new(struct dc_kad *kad, const struct dc_kad_lookup_config *cfg,
                                    uint64_t now_ms, struct dc_kad_lookup **out);

/* Frees the lookup; requests still in flight are forgotten (ignore their replies). */
void dc_kad_lookup_free(struct dc_kad_lookup *l);

/*
 * Takes the lookup's next action into '*a' at time 'now_ms': first the CANCELs of requests
 * whose deadline passed, then SENDs while fewer than alpha requests are in flight and an
 * unqueried peer is among the k closest known, then DONE once. Returns 1 when an action was
 * taken, 0 when there is nothing to do until a response, a failure or the next deadline.
 */
int dc_kad_lookup_poll(struct dc_kad_lookup *l, uint64_t now_ms, struct dc_kad_action *a);

/*
 * Delivers the response to request 'req_id'. The responder is marked as queried and added to
 * the routing table (it answered, so it is a server); closer peers become candidates; a
 * GET_VALUE record is validated and competes for best; providers are collected. 'resp' is
 * borrowed. Returns 0; DC_ENOENT for an unknown or no longer awaited req_id (a late reply
 * after CANCEL: ignore it); DC_EPROTO when the response's type does not match the request
 * (the request counts as failed); DC_ENOMEM (the lookup stays consistent).
 */
DC_MUST_CHECK int dc_kad_lookup_on_response(struct dc_kad_lookup *l, uint64_t req_id,
                                            const struct dc_kad_msg *resp, uint64_t now_ms);

/* Like dc_kad_lookup_on_response() for a response still in wire form (the body, without the
 * length prefix). A body that does not decode counts as a failure and returns DC_ECORRUPT. */
DC_MUST_CHECK int dc_kad_lookup_on_response_bytes(struct dc_kad_lookup *l, uint64_t req_id,
                                                  const uint8_t *body, size_t len, uint64_t now_ms);

/* Reports that request 'req_id' failed (dial, stream reset, bad reply). Counts against the
 * peer in the routing table. Returns 0 or DC_ENOENT. */
int dc_kad_lookup_on_failure(struct dc_kad_lookup *l, uint64_t req_id, uint64_t now_ms);

/* When the earliest in-flight request times out (UINT64_MAX when none is in flight). */
uint64_t dc_kad_lookup_next_deadline(const struct dc_kad_lookup *l);

/* Whether the lookup has finished. */
bool dc_kad_lookup_done(const struct dc_kad_lookup *l);

/* The (up to) 'max' closest peers that answered, closest first; returns how many. After DONE
 * these are the k closest peers to the key that the lookup could reach. */
size_t dc_kad_lookup_closest(const struct dc_kad_lookup *l, struct dc_peer_id *out, size_t max);

/* Statistics: rounds that learned a peer closer than any known before ("hops": the depth of
 * the chain of responses that made progress), requests sent, answered, failed (timeouts
 * included). */
struct dc_kad_lookup_stats {
    uint32_t hops;
    uint32_t sent;
    uint32_t answered;
    uint32_t failed;
};
void dc_kad_lookup_stats(const struct dc_kad_lookup *l, struct dc_kad_lookup_stats *out);

/*
 * GET_VALUE result: the best valid value found (borrowed, valid until the lookup is freed)
 * and how many peers returned a valid value. Returns 0 or DC_ENOENT when none was found.
 * 'outdated' (may be NULL) receives up to 'max_outdated' peers that returned a worse value
 * and should be corrected with PUT_VALUE; '*n_outdated' how many were written.
 */
DC_MUST_CHECK int dc_kad_lookup_value(const struct dc_kad_lookup *l, const uint8_t **value,
                                      size_t *value_len, uint32_t *n_found,
                                      struct dc_peer_id *outdated, size_t max_outdated,
                                      size_t *n_outdated);

/* GET_PROVIDERS result: the distinct providers found (borrowed array, valid until the next
 * call on the lookup); '*n' gets the count. */
const struct dc_kad_peer_info *dc_kad_lookup_providers(const struct dc_kad_lookup *l, size_t *n);

/* ============================================================================================
 * 4. Serving requests, and the local stores
 * ========================================================================================== */

/* dc_kad_handle_request() result: valid request, but the spec sends no response. */
#define DC_KAD_NO_RESPONSE 1

/*
 * Handles request 'req' from peer 'from' at 'now_ms' (Unix epoch milliseconds: record
 * expiry uses it) and fills '*resp' (initialised here; the caller cleans it up, also on
 * failure). Per type:
 *   FIND_NODE      closerPeers = the k closest table peers to SHA-256(key), the requester
 *                  left out (only ourselves when the key is our own PeerId).
 *   GET_VALUE      record = the stored record for key, if any; closerPeers as above.
 *   PUT_VALUE      the record is validated (its key must equal the message key) and stored
 *                  unless the stored one is better; the response echoes the request.
 *   GET_PROVIDERS  providerPeers = unexpired providers of key; closerPeers as above.
 *   ADD_PROVIDER   each providerPeers entry whose id is the sender's is stored (addresses
 *                  included), others are ignored; returns DC_KAD_NO_RESPONSE. Any key of
 *                  1..DC_KAD_MAX_KEY bytes is accepted (no CID check: our LSH band keys
 *                  are not CIDs).
 *   PING           answered with PING.
 * Returns 0 (send '*resp'), DC_KAD_NO_RESPONSE, or an error after which the host resets the
 * stream: DC_ESTATE in client mode; DC_EPROTO for an unknown type or a request missing its
 * key or record; DC_ELIMIT when a store is full; the validator's error (DC_ECRYPTO,
 * DC_ECORRUPT, DC_ETIMEDOUT, DC_EUNSUPPORTED for unknown namespaces...); DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_handle_request(struct dc_kad *kad, const struct dc_peer_id *from,
                                        const struct dc_kad_msg *req, uint64_t now_ms,
                                        struct dc_kad_msg *resp);

/*
 * The same for a request body in wire form (no length prefix): decodes, handles and
 * appends the length-prefixed response to 'out' (nothing for DC_KAD_NO_RESPONSE). Returns
 * as dc_kad_handle_request(), plus DC_ECORRUPT/DC_ELIMIT from decoding.
 */
DC_MUST_CHECK int dc_kad_handle_request_bytes(struct dc_kad *kad, const struct dc_peer_id *from,
                                              const uint8_t *body, size_t len, uint64_t now_ms,
                                              struct dc_buf *out);

/*
 * Stores a record locally after validating it (what a PUT_VALUE from a peer does), e.g. our
 * own before publishing it. Returns 0 when stored; DC_EEXIST when the stored record is
 * better (by the namespace's selector) and was kept; the validator's error; DC_ELIMIT when
 * the store is full; DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_put_local(struct dc_kad *kad, const uint8_t *key, size_t key_len,
                                   const uint8_t *value, size_t value_len, uint64_t now_ms);

/* Finds the stored, unexpired record for 'key'. '*value' is borrowed until the next mutating
 * call on 'kad'. Returns 0 or DC_ENOENT. */
DC_MUST_CHECK int dc_kad_get_local(const struct dc_kad *kad, const uint8_t *key, size_t key_len,
                                   uint64_t now_ms, const uint8_t **value, size_t *value_len);

/*
 * Records 'p' (id and addresses, copied) as a provider of 'key' until now_ms +
 * provider_ttl_ms, as an ADD_PROVIDER does. A known provider is refreshed. Returns 0,
 * DC_EINVAL for an empty key, DC_ELIMIT when a cap is hit, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_add_provider_local(struct dc_kad *kad, const uint8_t *key, size_t key_len,
                                            const struct dc_kad_peer_info *p, uint64_t now_ms);

/* Counts the unexpired providers of 'key'. */
size_t dc_kad_provider_count(const struct dc_kad *kad, const uint8_t *key, size_t key_len,
                             uint64_t now_ms);

/* Drops expired records and providers. Returns how many entries were dropped. */
size_t dc_kad_expire(struct dc_kad *kad, uint64_t now_ms);

/* Counts of what the stores hold. */
struct dc_kad_store_stats {
    size_t records;
    size_t record_bytes;
    size_t provider_keys;
    size_t providers;
};
void dc_kad_store_stats(const struct dc_kad *kad, struct dc_kad_store_stats *out);

/*
 * Serialises the record and provider stores (not the routing table) into 'out' (appended).
 * Format version 1: "DCKAD" magic, a version varint, then varint-length-prefixed entries with
 * times as absolute Unix milliseconds; see kad.c for the layout. Returns 0, DC_ELIMIT when
 * 'out' hits its cap, DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_store_save(const struct dc_kad *kad, struct dc_buf *out);

/*
 * Loads a blob written by dc_kad_store_save() into the stores (merging with what they hold).
 * Entries that have expired by 'now_ms' or no longer validate are skipped; the caps apply.
 * The blob is checked in full first, so a corrupt blob changes nothing. Returns 0;
 * DC_ECORRUPT for a malformed blob; DC_EUNSUPPORTED for an unknown format version;
 * DC_ENOMEM.
 */
DC_MUST_CHECK int dc_kad_store_load(struct dc_kad *kad, const uint8_t *p, size_t len,
                                    uint64_t now_ms);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * host.c - the libp2p host on libuv: listeners, dials, the connection upgrade, streams, ping,
 * identify (and identify push) and the in-memory peerstore.
 *
 * A connection moves through states: CONNECTING (outbound TCP connect) -> MSS_SEC
 * (multistream-select for "/noise", in clear or under pnet) -> NOISE (the handshake) ->
 * MSS_MUX (multistream-select for "/yamux/1.0.0", encrypted) -> MUX (yamux session up; the
 * connection is "established"). Received bytes flow socket -> pnet -> mss|noise -> plaintext
 * -> mss|yamux -> streams; sent bytes flow streams -> yamux output -> noise frames -> pnet ->
 * uv_write. Every layer is one of the pure cores; this file only moves bytes and owns handles.
 *
 * The bulk data path is kept to one pass per byte on each side besides the kernel's copy.
 * Sending: a stream's bytes wait in its 'pending' queue (or, when nothing is queued, in the
 * caller's buffer for the duration of dc_host_stream_write); conn_seal() fills a pooled
 * 256 KiB write request with yamux's own output and then data frames (dc_yamux_stream_frame
 * gives the header, the payload stays where it is) and the Noise sealer encrypts every piece
 * from where it lies into full-size Noise messages in that request. Receiving: one shared
 * 64 KiB read buffer, Noise decrypts each message straight into its plaintext buffer (from
 * the read buffer when whole, else from its reassembly buffer), and yamux hands payloads to
 * the streams in place.
 *
 * Re-entrancy: application callbacks run inside yamux callbacks, which run inside
 * dc_yamux_feed(), and may call back into the host (write, reset, open streams). Nothing is
 * freed underneath them: a failed connection or a finished stream is only marked, and the
 * marking is acted on when the outermost entry point leaves the connection (conn_leave), at
 * which point no frame of ours refers to it any more.
 *
 * Peerstore: a list of peers bounded by max_peers (a new peer evicts the least recently seen
 * one not connected and not held by the keep_peer hook), indexed by PeerId in a SipHash-keyed
 * hash table, DC_PEER_MAX_ADDRS addresses each (a new one replaces the least recently
 * seen) and an address TTL applied on the save timer. Changes only mark a peer dirty; the
 * save timer (every peer_save_ms) and dc_host_free() write the dirty ones to peerstore.c's
 * database in one transaction, so no packet ever waits on SQLite.
 *
 * Dialing a /dns, /dns4 or /dns6 name resolves it first (uv_getaddrinfo) and then dials the
 * answers in turn through the same path as an /ip4 or /ip6 address (see struct resolve).
 *
 * Memory: a connection's handles (TCP and timer) are closed with uv_close and the struct is
 * freed by the last close callback; the host itself is freed when its last handle closed
 * after dc_host_free().
 */
#include "p2p/host.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sodium.h>
#include <string.h>

#include "base/varint.h"
#include "libp2p/identify.pb-c.h"
#include "p2p/noise.h"
#include "p2p/peerstore.h"
#include "p2p/pb.h"

#define DEFAULT_MAX_CONNS         256
#define DEFAULT_MAX_INBOUND_HS    64
#define DEFAULT_HANDSHAKE_TIMEOUT 10000
#define DEFAULT_MAX_STREAMS       256
#define MAX_HANDLERS              64
#define MAX_LISTENERS             16
/* Raw bytes handed to uv_write and not yet written: above this, stop encrypting more. */
#define WRITE_HIGH (8u * 1024u * 1024u)
/* Unsent bytes an application may queue on one stream. */
#define STREAM_MAX_QUEUED (16u * 1024u * 1024u)
#define IDENTIFY_MAX      (64u * 1024u)
/* Dial backoff per PeerId: 1 s after the first failure, doubling, at most 5 min. */
#define BACKOFF_BASE_MS 1000u
#define BACKOFF_MAX_MS  (5u * 60u * 1000u)
/* One read buffer per host (reads never nest: libuv calls on_alloc, reads, then on_read
 * before the next on_alloc of any handle). 64 KiB measured better than 128 or 256 KiB on
 * loopback although full-size Noise messages (65537 bytes) then always span two reads: the
 * kernel's copy into a buffer that stays in the L2 cache costs less than the reassembly. */
#define READ_CHUNK (64u * 1024u)
/* Most plaintext sealed into one socket write: four full-size Noise messages. */
#define WRITE_CHUNK (4u * DC_NOISE_MAX_PLAINTEXT)
/* Write requests of the sealed size kept by the host for reuse: a fresh 256 KiB buffer per
 * write costs page faults on the first touch of each write and a trim of the heap at each
 * completion, which on loopback cost more than the copies. At most 4 MiB stay with a host. */
#define WREQ_POOL_MAX        16
#define DEFAULT_PEER_SAVE_MS 30000u
/* Delay that coalesces the changes (handlers, listeners) an identify push announces. */
#define PUSH_DELAY_MS 50u

enum conn_state { ST_CONNECTING, ST_MSS_SEC, ST_NOISE, ST_MSS_MUX, ST_MUX };

struct handler {
    char *protocol;
    const struct dc_host_stream_cb *cb;
    void *ud;
};

struct peer {
    struct dc_peer_info info; /* first: dc_host_peers() hands out &info and maps it back */
    uint64_t heard_ms;        /* newest addr_seen_ms: when we last heard of the peer at all */
    /* Dial backoff: consecutive failed dials to this PeerId, and when the next may start. */
    uint32_t dial_failures;
    uint64_t backoff_until_ms;
    bool dirty; /* changed since the last save */
    struct peer *next;
    struct peer *hnext; /* chain in the host's PeerId index */
};

struct listener {
    uv_tcp_t tcp;
    struct dc_host *h;
    struct dc_multiaddr addr; /* bound address */
    bool unspecified;         /* 0.0.0.0 or :: */
    int family;
};

struct dial {
    struct dc_host *h;
    dc_host_dial_cb cb;
    void *ud;
    int status;
    struct dc_peer_id peer;
    struct dial *next; /* in h->completed until the tick delivers it */
};

struct conn;
struct resolve;

struct dc_host_stream {
    struct conn *c;
    uint32_t id;
    bool outbound;
    bool open; /* protocol agreed */
    bool dead; /* on_close fired or reset: no more callbacks; freed by the sweep */
    bool close_requested, fin_sent;
    struct dc_mss *mss;
    char *protocol;
    const struct dc_host_stream_cb *cb;
    void *ud;
    /* App bytes not yet sent, from pending_off. They leave in yamux data frames that
     * conn_seal() lays out straight into the socket write request. */
    struct dc_buf pending;
    size_t pending_off;
    /* During dc_host_stream_write() with nothing queued: the caller's bytes, sent from there
     * (one copy fewer); what is left is moved to 'pending' before the call returns. */
    const uint8_t *direct;
    size_t direct_len;
    int send_err; /* a data frame could not be taken: reset after the write goes out */
    struct dc_host_stream *next;
};

struct conn {
    struct dc_host *h;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int handles; /* open libuv handles; the struct goes when it reaches 0 */
    uv_connect_t connect_req;
    enum conn_state state;
    bool outbound, established, closing, failed, inbound_counted, use_psk;
    int err;
    int busy;
    struct dc_pnet pnet;
    struct dc_mss *mss;
    struct dc_noise *noise;
    struct dc_yamux *yamux;
    bool has_expected;
    bool no_backoff; /* one address of a DNS dial: the resolve records the backoff */
    struct dc_peer_id expected, peer;
    struct dc_multiaddr remote; /* the socket peer's address */
    char remote_text[96];
    struct dial *dial;
    size_t write_queued;
    struct dc_host_stream *streams;
    struct conn *next;
};

struct dc_host {
    uv_loop_t *loop;
    const struct dc_identity *id;
    char *agent;
    bool use_psk;
    uint8_t psk[DC_PNET_KEY_LEN];
    uint32_t max_conns, max_inbound_hs, hs_timeout_ms, idle_timeout_ms, max_streams;
    struct dc_host_events ev;
    void *ud;
    struct handler handlers[MAX_HANDLERS];
    size_t n_handlers;
    struct listener *listeners[MAX_LISTENERS];
    size_t n_listeners;
    struct conn *conns;
    size_t n_conns; /* in the list (not yet closing) */
    uint32_t inbound_hs;
    struct peer *peers;      /* new peers at the head; loaded ones appended in load order */
    struct peer **load_tail; /* while loading: the list's last link (appends in O(1)) */
    size_t n_peers;
    /* PeerId -> peer index over 'peers': chained buckets (a power of two, grown to keep one
     * peer per bucket on average), keyed SipHash so a peer cannot choose ids that collide. */
    struct peer **peer_buckets;
    size_t peer_mask;
    uint8_t peer_hash_key[crypto_shorthash_KEYBYTES];
    dc_host_keep_peer_cb keep_peer;
    void *keep_peer_ud;
    struct resolve *resolves; /* DNS dials resolving or trying their addresses */
    uint32_t max_peers, save_ms;
    uint64_t addr_ttl_ms;
    struct dc_peerstore *ps; /* NULL: memory only */
    char ps_err[512];
    struct dial *completed;
    uv_timer_t tick;       /* delivers completed dials from the loop */
    uv_timer_t save_timer; /* peerstore expiry and batched saves */
    uv_timer_t push_timer; /* identify push after our protocols or addresses changed */
    struct wreq *wpool;    /* spare sealed-size write requests (WREQ_POOL_MAX at most) */
    size_t n_wpool;
    uint8_t *rbuf; /* READ_CHUNK bytes shared by every connection's reads */
    bool timers_ready;
    int handles;
    bool closing;
};

static const struct dc_host_stream_cb ping_server_cb, identify_server_cb, push_server_cb;

/* A socket write: the uv request and the bytes it sends. 'pooled' ones have room for
 * dc_noise_sealed_len(WRITE_CHUNK) bytes and go back to the host's pool when done. */
struct wreq {
    uv_write_t req;
    struct conn *c;
    size_t len;
    bool pooled;
    struct wreq *next_free;
    uint8_t data[];
};

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t yamux_now_us(void *ud)
{
    DC_UNUSED(ud);
    return uv_hrtime() / 1000u;
}

static void peer_free(struct peer *p)
{
    dc_peer_info_cleanup(&p->info);
    dc_free(p);
}

static void peers_free_all(struct dc_host *h)
{
    struct peer *p, *next;

    for (p = h->peers; p != NULL; p = next) {
        next = p->next;
        peer_free(p);
    }
    h->peers = NULL;
    h->n_peers = 0;
    if (h->peer_buckets != NULL)
        memset(h->peer_buckets, 0, (h->peer_mask + 1) * sizeof(*h->peer_buckets));
}

static void host_maybe_free(struct dc_host *h)
{
    if (!h->closing || h->handles > 0)
        return;
    peers_free_all(h);
    dc_free(h->peer_buckets);
    for (size_t i = 0; i < h->n_handlers; i++)
        dc_free(h->handlers[i].protocol);
    while (h->wpool != NULL) {
        struct wreq *w = h->wpool;
        h->wpool = w->next_free;
        dc_free(w);
    }
    dc_free(h->rbuf);
    sodium_memzero(h->psk, sizeof(h->psk));
    dc_free(h->agent);
    dc_free(h);
}

/* Converts a socket address to /ip4|/ip6/<a>/tcp/<port>. */
static int sockaddr_to_multiaddr(const struct sockaddr *sa, struct dc_multiaddr *out, char *text,
                                 size_t text_cap)
{
    char ip[INET6_ADDRSTRLEN], buf[128];
    int port;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(buf, sizeof(buf), "/ip4/%s/tcp/%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(buf, sizeof(buf), "/ip6/%s/tcp/%d", ip, port);
    } else {
        return DC_EUNSUPPORTED;
    }
    if (text != NULL && (size_t)snprintf(text, text_cap, "%s", buf) >= text_cap)
        return DC_ELIMIT;
    return dc_multiaddr_parse(buf, out, NULL);
}

static int target_to_sockaddr(const struct dc_multiaddr_target *t, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (t->transport != DC_MA_TCP)
        return DC_EUNSUPPORTED;
    if (t->host_proto == DC_MA_IP4) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(t->port);
        memcpy(&a->sin_addr, t->ip, 4);
        return 0;
    }
    if (t->host_proto == DC_MA_IP6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(t->port);
        memcpy(&a->sin6_addr, t->ip, 16);
        return 0;
    }
    return DC_EUNSUPPORTED;
}

/* ---- peerstore -------------------------------------------------------------------------- */

/* The index: every peer in 'peers' is also in exactly one bucket chain. Lookups are what
 * every packet path does (connection up or down, identify, ping, dial backoff), so they must
 * not scan a list of up to max_peers entries; eviction still scans, but only runs when a new
 * peer arrives at a full peerstore. */
#define PEER_BUCKETS_MIN 64u

static size_t peer_bucket(const struct dc_host *h, const struct dc_peer_id *id)
{
    uint8_t out[crypto_shorthash_BYTES];
    uint64_t v = 0;

    crypto_shorthash(out, id->bytes, id->len, h->peer_hash_key);
    for (size_t i = 0; i < sizeof(out); i++)
        v = v << 8 | out[i];
    return (size_t)v & h->peer_mask;
}

/* Doubles the bucket array and rehashes. On allocation failure the old array stays: chains
 * only get longer, lookups stay correct. */
static void peer_index_grow(struct dc_host *h)
{
    size_t n = (h->peer_mask + 1) * 2;
    struct peer **nb = dc_calloc(n, sizeof(*nb));

    if (nb == NULL)
        return;
    dc_free(h->peer_buckets);
    h->peer_buckets = nb;
    h->peer_mask = n - 1;
    for (struct peer *p = h->peers; p != NULL; p = p->next) {
        size_t b = peer_bucket(h, &p->info.id);
        p->hnext = nb[b];
        nb[b] = p;
    }
}

/* Links a new peer at the head of 'peers' (tail: the end) and into the index. */
static void peer_link(struct dc_host *h, struct peer *p, bool tail)
{
    size_t b;

    if (tail) {
        struct peer **pp = h->load_tail;
        if (pp == NULL)
            for (pp = &h->peers; *pp != NULL;)
                pp = &(*pp)->next;
        *pp = p;
        p->next = NULL;
        if (h->load_tail != NULL)
            h->load_tail = &p->next;
    } else {
        p->next = h->peers;
        h->peers = p;
    }
    h->n_peers++;
    if (h->n_peers > h->peer_mask + 1) {
        peer_index_grow(h); /* rehashes 'p' too */
        return;
    }
    b = peer_bucket(h, &p->info.id);
    p->hnext = h->peer_buckets[b];
    h->peer_buckets[b] = p;
}

/* Unlinks '*pp' (a link in 'peers') from the list and the index and frees it. */
static void peer_unlink_free(struct dc_host *h, struct peer **pp)
{
    struct peer *p = *pp;
    struct peer **hp = &h->peer_buckets[peer_bucket(h, &p->info.id)];

    *pp = p->next;
    while (*hp != p)
        hp = &(*hp)->hnext;
    *hp = p->hnext;
    h->n_peers--;
    peer_free(p);
}

static struct peer *peer_find(const struct dc_host *h, const struct dc_peer_id *id)
{
    for (struct peer *p = h->peer_buckets[peer_bucket(h, id)]; p != NULL; p = p->hnext)
        if (dc_peer_id_equal(&p->info.id, id))
            return p;
    return NULL;
}

/* When we last heard of the peer: seen ourselves, or one of its addresses learned. */
static uint64_t peer_recency(const struct dc_peer_info *info)
{
    const struct peer *p = (const struct peer *)info;

    return info->last_seen_ms > p->heard_ms ? info->last_seen_ms : p->heard_ms;
}

/* Drops the least recently heard-of peer that is not connected and that the keep_peer hook
 * does not hold on to (ties: the oldest entry, which is the last in the list). Returns false
 * when there is none.
 *
 * Why the hook protects peers instead of the peerstore telling the DHT what it dropped: the
 * routing table takes its peers' addresses from here, and Kademlia deliberately prefers
 * long-lived peers, replacing one only after it failed a liveness ping. If a flood of new
 * peers (a DHT answer naming many, identify from many inbound connections) could push
 * routing-table peers out of the peerstore, whoever sends us peer ids could empty the table
 * (an eclipse); removing them from the table in step would be the same attack by another
 * path. The table is small (k per bucket, a few hundred peers in practice) next to max_peers,
 * so keeping its entries costs little; peers that the table itself evicts lose the protection
 * and age out here as usual. */
static bool peer_evict(struct dc_host *h)
{
    struct peer **victim = NULL;

    for (struct peer **pp = &h->peers; *pp != NULL; pp = &(*pp)->next)
        if (!(*pp)->info.connected &&
            (victim == NULL || peer_recency(&(*pp)->info) <= peer_recency(&(*victim)->info)) &&
            (h->keep_peer == NULL || !h->keep_peer(h->keep_peer_ud, &(*pp)->info.id)))
            victim = pp;
    if (victim == NULL)
        return false;
    peer_unlink_free(h, victim);
    return true;
}

static struct peer *peer_get(struct dc_host *h, const struct dc_peer_id *id)
{
    struct peer *p = peer_find(h, id);

    if (p != NULL)
        return p;
    if (h->n_peers >= h->max_peers && !peer_evict(h))
        return NULL;
    p = dc_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->info.id = *id;
    p->dirty = true;
    peer_link(h, p, false);
    return p;
}

/* Adds or refreshes an address; when the peer has DC_PEER_MAX_ADDRS already, the one seen
 * least recently gives way. */
static void peer_add_addr(struct peer *p, const struct dc_multiaddr *ma, enum dc_addr_source src)
{
    struct dc_peer_info *in = &p->info;
    uint64_t now = dc_wall_ms();
    size_t k;

    p->dirty = true;
    p->heard_ms = now;
    for (k = 0; k < in->n_addrs; k++) {
        if (dc_multiaddr_equal(&in->addrs[k], ma)) {
            in->addr_seen_ms[k] = now;
            /* What the peer says or a working dial outranks hearsay. */
            if (in->addr_source[k] == DC_ADDR_SOURCE_DHT || src != DC_ADDR_SOURCE_DHT)
                in->addr_source[k] = (uint8_t)src;
            return;
        }
    }
    if (in->n_addrs < DC_PEER_MAX_ADDRS) {
        k = in->n_addrs++;
    } else {
        k = 0;
        for (size_t i = 1; i < in->n_addrs; i++)
            if (in->addr_seen_ms[i] < in->addr_seen_ms[k])
                k = i;
    }
    in->addrs[k] = *ma;
    in->addr_source[k] = (uint8_t)src;
    in->addr_seen_ms[k] = now;
}

/* Drops addresses not seen within the TTL (a connected peer keeps its own), and peers left
 * with nothing worth keeping. */
static void peers_expire(struct dc_host *h, uint64_t now)
{
    uint64_t min = now > h->addr_ttl_ms ? now - h->addr_ttl_ms : 0;
    struct peer **pp = &h->peers;

    while (*pp != NULL) {
        struct peer *p = *pp;
        struct dc_peer_info *in = &p->info;

        if (in->connected) {
            in->last_seen_ms = now;
            p->dirty = true; /* once per save interval, so the stored last-seen stays true */
            pp = &p->next;
            continue;
        }
        for (size_t k = 0; k < in->n_addrs;) {
            if (in->addr_seen_ms[k] >= min) {
                k++;
                continue;
            }
            in->n_addrs--;
            in->addrs[k] = in->addrs[in->n_addrs];
            in->addr_source[k] = in->addr_source[in->n_addrs];
            in->addr_seen_ms[k] = in->addr_seen_ms[in->n_addrs];
            p->dirty = true;
        }
        if (in->n_addrs == 0 && in->last_seen_ms < min && p->backoff_until_ms < now) {
            peer_unlink_free(h, pp);
            continue;
        }
        pp = &p->next;
    }
}

/* Writes the dirty peers in one transaction. */
static int peers_save(struct dc_host *h)
{
    const struct dc_peer_info **batch;
    size_t n = 0;
    int rc;

    if (h->ps == NULL) {
        for (struct peer *p = h->peers; p != NULL; p = p->next)
            p->dirty = false;
        return 0;
    }
    batch = dc_malloc((h->n_peers + 1) * sizeof(*batch));
    if (batch == NULL)
        return DC_ENOMEM; /* stays dirty: the next save tries again */
    for (struct peer *p = h->peers; p != NULL; p = p->next)
        if (p->dirty)
            batch[n++] = &p->info;
    rc = dc_peerstore_save(h->ps, batch, n, dc_wall_ms(), h->addr_ttl_ms, h->max_peers, h->ps_err,
                           sizeof(h->ps_err));
    dc_free(batch);
    if (rc < 0)
        return rc;
    for (struct peer *p = h->peers; p != NULL; p = p->next)
        p->dirty = false;
    return 0;
}

static void on_save_timer(uv_timer_t *t)
{
    struct dc_host *h = t->data;

    if (h->closing)
        return;
    peers_expire(h, dc_wall_ms());
    (void)peers_save(h);
}

/* A peer from the database joins the list (it takes the protocol strings). */
static int peer_load_cb(void *ud, struct dc_peer_info *info)
{
    struct dc_host *h = ud;
    struct peer *p;

    if (dc_peer_id_equal(&info->id, dc_identity_peer_id(h->id)) || peer_find(h, &info->id) ||
        h->n_peers >= h->max_peers) {
        dc_peer_info_cleanup(info);
        return 0;
    }
    p = dc_calloc(1, sizeof(*p));
    if (p == NULL) {
        dc_peer_info_cleanup(info);
        return DC_ENOMEM;
    }
    p->info = *info;
    for (size_t i = 0; i < info->n_addrs; i++)
        if (info->addr_seen_ms[i] > p->heard_ms)
            p->heard_ms = info->addr_seen_ms[i];
    p->info.connected = false;
    p->info.identified = false;
    /* Appended: the list stays most recent first, as loaded. */
    peer_link(h, p, true);
    return 0;
}

/* Opens state_dir/peers.sqlite and loads it. Only DC_ENOMEM fails the host; any other
 * problem leaves the host in memory-only mode with ps_err saying why. */
static int peers_open(struct dc_host *h, const char *state_dir)
{
    char *path = dc_asprintf("%s/peers.sqlite", state_dir);
    int rc;

    if (path == NULL)
        return DC_ENOMEM;
    rc = dc_peerstore_open(path, &h->ps, h->ps_err, sizeof(h->ps_err));
    dc_free(path);
    if (rc == 0) {
        /* Loaded peers go to the end, in load order: keep the end at hand, or every append
         * walks the list (quadratic in the peers stored). */
        for (h->load_tail = &h->peers; *h->load_tail != NULL;)
            h->load_tail = &(*h->load_tail)->next;
        rc = dc_peerstore_load(h->ps, dc_wall_ms(), h->addr_ttl_ms, h->max_peers, peer_load_cb, h,
                               h->ps_err, sizeof(h->ps_err));
        h->load_tail = NULL;
    }
    if (rc == 0)
        return 0;
    dc_peerstore_close(h->ps);
    h->ps = NULL;
    if (rc == DC_ENOMEM) {
        peers_free_all(h);
        return rc;
    }
    /* Keep what loaded before the error; run from memory. */
    return 0;
}

/* A dial to 'id' failed: back off from it (a dead peer is not dialed again at once by every
 * lookup that still lists it). */
static void peer_dial_failed(struct dc_host *h, const struct dc_peer_id *id)
{
    struct peer *p = peer_get(h, id);
    uint64_t delay = BACKOFF_BASE_MS;

    if (p == NULL)
        return;
    if (p->dial_failures < 32)
        p->dial_failures++;
    for (uint32_t i = 1; i < p->dial_failures && delay < BACKOFF_MAX_MS; i++)
        delay *= 2;
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    p->backoff_until_ms = dc_wall_ms() + delay;
}

/* ---- connection plumbing ---------------------------------------------------------------- */

static void conn_close(struct conn *c, int err);
static void conn_flush(struct conn *c);
static void stream_flush(struct dc_host_stream *s);
static void on_established(struct conn *c);
static void on_tick(uv_timer_t *t);

static void conn_enter(struct conn *c)
{
    c->busy++;
}

static void stream_free(struct dc_host_stream *s)
{
    dc_mss_free(s->mss);
    dc_free(s->protocol);
    dc_buf_cleanup(&s->pending);
    dc_free(s);
}

/* Frees streams marked dead; only when no frame of ours may hold one. */
static void conn_sweep(struct conn *c)
{
    struct dc_host_stream **pp = &c->streams;

    while (*pp != NULL) {
        struct dc_host_stream *s = *pp;
        if (s->dead) {
            *pp = s->next;
            stream_free(s);
        } else {
            pp = &s->next;
        }
    }
}

static void conn_leave(struct conn *c)
{
    if (--c->busy > 0)
        return;
    if (c->failed && !c->closing)
        conn_close(c, c->err);
    else if (!c->closing)
        conn_sweep(c);
}

/* Marks the connection failed; it is closed when the outermost entry point leaves it. */
static void conn_fail(struct conn *c, int err)
{
    if (!c->failed) {
        c->failed = true;
        c->err = err;
    }
    if (c->busy == 0 && !c->closing)
        conn_close(c, err);
}

/* A write request with room for a sealed WRITE_CHUNK: from the pool, else fresh. */
static struct wreq *wreq_take(struct dc_host *h)
{
    struct wreq *w = h->wpool;

    if (w != NULL) {
        h->wpool = w->next_free;
        h->n_wpool--;
        return w;
    }
    w = dc_malloc(sizeof(*w) + dc_noise_sealed_len(WRITE_CHUNK));
    if (w != NULL)
        w->pooled = true;
    return w;
}

/* Frees 'w' or keeps it for the next wreq_take(). The bytes it carried were ciphertext (or
 * handshake messages), so nothing needs wiping. */
static void wreq_release(struct dc_host *h, struct wreq *w)
{
    if (w->pooled && h->n_wpool < WREQ_POOL_MAX && !h->closing) {
        w->next_free = h->wpool;
        h->wpool = w;
        h->n_wpool++;
        return;
    }
    dc_free(w);
}

static void conn_pump(struct conn *c);
static void streams_finish(struct conn *c);
static void stream_fire_close(struct dc_host_stream *s, int err);

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;

    c->write_queued -= w->len;
    wreq_release(c->h, w);
    if (c->closing)
        return;
    conn_enter(c);
    if (status < 0)
        conn_fail(c, status);
    else if (c->write_queued < WRITE_HIGH / 2)
        conn_pump(c);
    conn_leave(c);
}

/* Sends the 'n' bytes filled in at w->data (w taken); pnet-encrypts them unless 'clear'. */
static void conn_write_req(struct conn *c, struct wreq *w, size_t n, bool clear)
{
    uv_buf_t b;
    int rc;

    w->c = c;
    w->len = n;
    if (c->use_psk && !clear)
        dc_pnet_encrypt(&c->pnet, w->data, n);
    b = uv_buf_init((char *)w->data, (unsigned)n);
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        wreq_release(c->h, w);
        conn_fail(c, rc);
        return;
    }
    c->write_queued += n;
}

/* Sends bytes on the socket (copied; encrypted with pnet when enabled). */
static void conn_write_raw(struct conn *c, const uint8_t *p, size_t n, bool clear)
{
    struct wreq *w;

    if (n == 0 || c->closing || c->failed)
        return;
    w = dc_malloc(sizeof(*w) + n);
    if (w == NULL) {
        conn_fail(c, DC_ENOMEM);
        return;
    }
    w->pooled = false;
    memcpy(w->data, p, n);
    conn_write_req(c, w, n, clear);
}

/* Writes out whatever the handshake-phase cores queued (they go on the raw socket). */
static void flush_mss_raw(struct conn *c)
{
    size_t len;
    const uint8_t *p = dc_mss_output(c->mss, &len);

    conn_write_raw(c, p, len, false);
    dc_mss_output_consume(c->mss, len);
}

static void flush_noise_raw(struct conn *c)
{
    size_t len;
    const uint8_t *p = dc_noise_output(c->noise, &len);

    conn_write_raw(c, p, len, false);
    dc_noise_output_consume(c->noise, len);
}

/* The bytes a stream has to send next: the caller's during a direct write, else pending. */
static const uint8_t *stream_unsent(const struct dc_host_stream *s, size_t *len)
{
    if (s->direct_len > 0) {
        *len = s->direct_len;
        return s->direct;
    }
    *len = s->pending.len - s->pending_off;
    return *len > 0 ? s->pending.data + s->pending_off : NULL;
}

static void stream_sent(struct dc_host_stream *s, size_t n)
{
    if (s->direct_len > 0) {
        s->direct += n;
        s->direct_len -= n;
        return;
    }
    s->pending_off += n;
    if (s->pending_off == s->pending.len) {
        dc_buf_reset(&s->pending);
        s->pending_off = 0;
    }
}

/* True when 's' may put data frames on the wire now. A stream whose window is closed is not,
 * and dc_yamux_stream_frame() is asked anyway so that yamux reports on_writable later. */
static bool stream_sendable(struct conn *c, struct dc_host_stream *s)
{
    uint8_t hdr[DC_YAMUX_HEADER_LEN];
    size_t len, n;

    if (s->dead || !s->open || s->fin_sent || s->send_err < 0)
        return false;
    (void)stream_unsent(s, &len);
    if (len == 0)
        return false;
    if (dc_yamux_stream_send_window(c->yamux, s->id) > 0)
        return true;
    (void)!dc_yamux_stream_frame(c->yamux, s->id, len, hdr, &n); /* n is 0: marks it blocked */
    return false;
}

/* Fills one write request: first everything yamux queued (control frames, negotiation
 * bytes), then data frames from the streams in turns of at most one frame each, copied
 * straight into the Noise messages and sealed in place. Returns false when there was nothing
 * to send (or on failure, which marks the connection). */
static bool conn_seal(struct conn *c)
{
    struct dc_noise_sealer sl;
    struct wreq *w;
    const uint8_t *p;
    size_t len, taken, sealed = 0;
    bool any = false, progress = true;
    int rc;

    p = dc_yamux_output(c->yamux, &len);
    if (len == 0) {
        for (struct dc_host_stream *s = c->streams; s != NULL && !any; s = s->next)
            any = stream_sendable(c, s);
        if (!any)
            return false;
    }
    w = wreq_take(c->h);
    if (w == NULL) {
        conn_fail(c, DC_ENOMEM);
        return false;
    }
    dc_noise_sealer_init(&sl, w->data, dc_noise_sealed_len(WRITE_CHUNK));
    rc = dc_noise_sealer_put(c->noise, &sl, p, len, &taken);
    dc_yamux_output_consume(c->yamux, taken);
    (void)dc_yamux_output(c->yamux, &len);
    while (rc == 0 && len == 0 && progress) {
        progress = false;
        for (struct dc_host_stream *s = c->streams; s != NULL && rc == 0; s = s->next) {
            uint8_t hdr[DC_YAMUX_HEADER_LEN];
            size_t space = dc_noise_sealer_space(&sl), want, n;
            const uint8_t *src;

            if (!stream_sendable(c, s))
                continue;
            src = stream_unsent(s, &want);
            /* A frame needs its header, and should not be cut to a sliver by the end of the
             * buffer. */
            if (space < DC_YAMUX_HEADER_LEN + (want < 1024 ? want : 1024))
                break;
            if (want > space - DC_YAMUX_HEADER_LEN)
                want = space - DC_YAMUX_HEADER_LEN;
            rc = dc_yamux_stream_frame(c->yamux, s->id, want, hdr, &n);
            if (rc < 0) {
                s->send_err = rc; /* acted on once this request is out */
                rc = 0;
                continue;
            }
            if (n == 0)
                continue;
            rc = dc_noise_sealer_put(c->noise, &sl, hdr, sizeof(hdr), &taken);
            if (rc == 0)
                rc = dc_noise_sealer_put(c->noise, &sl, src, n, &taken);
            if (rc == 0)
                stream_sent(s, n);
            progress = true;
        }
    }
    if (rc == 0)
        rc = dc_noise_sealer_finish(c->noise, &sl, &sealed);
    if (rc < 0 || sealed == 0) {
        wreq_release(c->h, w);
        if (rc < 0)
            conn_fail(c, rc);
        return false;
    }
    conn_write_req(c, w, sealed, false);
    return !c->failed;
}

/* Half-closes the streams whose close was requested once all their data is out, and resets
 * the ones whose data could not be framed. May run application callbacks (on_close). */
static void streams_finish(struct conn *c)
{
    for (struct dc_host_stream *s = c->streams; s != NULL; s = s->next) {
        size_t len;

        if (s->dead || !s->open || c->yamux == NULL)
            continue;
        if (s->send_err < 0) {
            (void)!dc_yamux_stream_reset(c->yamux, s->id);
            stream_fire_close(s, s->send_err);
            continue;
        }
        (void)stream_unsent(s, &len);
        if (len == 0 && s->close_requested && !s->fin_sent) {
            s->fin_sent = true;
            (void)!dc_yamux_stream_close(c->yamux, s->id); /* may fire on_close */
        }
    }
}

/* Moves queued plaintext (mss during MSS_MUX, yamux afterwards) through Noise to the socket,
 * as long as the socket keeps up. */
static void conn_flush(struct conn *c)
{
    const uint8_t *p;
    size_t len;
    int rc;

    if (c->closing || c->noise == NULL || !dc_noise_is_done(c->noise))
        return;
    if (c->state == ST_MSS_MUX && c->mss != NULL) {
        p = dc_mss_output(c->mss, &len);
        if (len > 0) {
            rc = dc_noise_write(c->noise, p, len);
            if (rc < 0) {
                conn_fail(c, rc);
                return;
            }
            dc_mss_output_consume(c->mss, len);
        }
    }
    flush_noise_raw(c);
    streams_finish(c);
    while (c->yamux != NULL && c->write_queued < WRITE_HIGH && !c->failed && !c->closing) {
        if (!conn_seal(c))
            break;
        streams_finish(c);
    }
}

static void conn_pump(struct conn *c)
{
    conn_flush(c);
}

/* ---- yamux callbacks -------------------------------------------------------------------- */

static struct handler *handler_find(struct dc_host *h, const char *protocol)
{
    for (size_t i = 0; i < h->n_handlers; i++)
        if (strcmp(h->handlers[i].protocol, protocol) == 0)
            return &h->handlers[i];
    return NULL;
}

static void stream_fire_close(struct dc_host_stream *s, int err)
{
    if (s->dead)
        return;
    s->dead = true;
    if (s->cb != NULL && s->cb->on_close != NULL)
        s->cb->on_close(s->ud, s, err);
}

/* Sends negotiation bytes on a stream right away (tiny; within the initial window). */
static void stream_flush_mss(struct dc_host_stream *s)
{
    size_t len, w;
    const uint8_t *p = dc_mss_output(s->mss, &len);

    if (len == 0)
        return;
    if (dc_yamux_stream_write(s->c->yamux, s->id, p, len, &w) < 0 || w != len) {
        (void)!dc_yamux_stream_reset(s->c->yamux, s->id);
        stream_fire_close(s, DC_ELIMIT);
        return;
    }
    dc_mss_output_consume(s->mss, len);
}

static struct dc_host_stream *stream_new(struct conn *c, bool outbound)
{
    struct dc_host_stream *s = dc_calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->c = c;
    s->outbound = outbound;
    dc_buf_init(&s->pending, STREAM_MAX_QUEUED);
    s->next = c->streams;
    c->streams = s;
    return s;
}

static int y_on_stream_open(void *ud, uint32_t id, void **stream_user)
{
    struct conn *c = ud;
    struct dc_host *h = c->h;
    const char *protos[MAX_HANDLERS];
    struct dc_mss_config mc = {.initiator = false};
    struct dc_host_stream *s;
    int rc;

    if (h->closing || c->failed || h->n_handlers == 0)
        return DC_ECLOSED;
    for (size_t i = 0; i < h->n_handlers; i++)
        protos[i] = h->handlers[i].protocol;
    mc.protocols = protos;
    mc.n_protocols = h->n_handlers < DC_MSS_MAX_PROPOSALS ? h->n_handlers : DC_MSS_MAX_PROPOSALS;
    s = stream_new(c, false);
    if (s == NULL)
        return DC_ENOMEM;
    rc = dc_mss_new(&mc, &s->mss);
    if (rc < 0) {
        s->dead = true;
        return rc;
    }
    s->id = id;
    *stream_user = s;
    return 0;
}

static void stream_deliver(struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    if (n > 0 && !s->dead && s->cb != NULL && s->cb->on_data != NULL)
        s->cb->on_data(s->ud, s, p, n);
}

static void y_on_data(void *ud, uint32_t id, void *su, const uint8_t *p, size_t n)
{
    struct conn *c = ud;
    struct dc_host_stream *s = su;
    size_t used;
    int rc;

    if (s != NULL && !s->dead && !s->open) {
        rc = dc_mss_feed(s->mss, p, n, &used);
        stream_flush_mss(s);
        if (rc < 0) {
            (void)!dc_yamux_stream_reset(c->yamux, id);
            stream_fire_close(s, rc);
        } else if (rc == 1 && !s->dead) {
            s->protocol = dc_strdup(dc_mss_protocol(s->mss));
            dc_mss_free(s->mss);
            s->mss = NULL;
            if (s->protocol == NULL) {
                (void)!dc_yamux_stream_reset(c->yamux, id);
                stream_fire_close(s, DC_ENOMEM);
            } else {
                if (!s->outbound) {
                    struct handler *hd = handler_find(c->h, s->protocol);
                    s->cb = hd != NULL ? hd->cb : NULL;
                    s->ud = hd != NULL ? hd->ud : NULL;
                }
                s->open = true;
                if (s->cb != NULL && s->cb->on_open != NULL)
                    s->cb->on_open(s->ud, s);
                if (!s->dead)
                    stream_flush(s);
                stream_deliver(s, p + used, n - used);
            }
        }
    } else if (s != NULL) {
        stream_deliver(s, p, n);
    }
    (void)!dc_yamux_stream_consume(c->yamux, id, n);
}

static void y_on_fin(void *ud, uint32_t id, void *su)
{
    struct conn *c = ud;
    struct dc_host_stream *s = su;

    if (s == NULL || s->dead)
        return;
    if (!s->open) {
        (void)!dc_yamux_stream_reset(c->yamux, id);
        stream_fire_close(s, DC_EPROTO);
        return;
    }
    if (s->cb != NULL && s->cb->on_fin != NULL)
        s->cb->on_fin(s->ud, s);
}

static void y_on_writable(void *ud, uint32_t id, void *su)
{
    struct dc_host_stream *s = su;

    DC_UNUSED(ud);
    DC_UNUSED(id);
    if (s != NULL && !s->dead && s->open)
        stream_flush(s);
}

static void y_on_close(void *ud, uint32_t id, void *su, int err)
{
    struct dc_host_stream *s = su;

    DC_UNUSED(ud);
    DC_UNUSED(id);
    if (s != NULL)
        stream_fire_close(s, err);
}

/* ---- reading and the upgrade ------------------------------------------------------------ */

static void secure_input(struct conn *c, const uint8_t *p, size_t n)
{
    size_t used;
    int rc;

    if (c->state == ST_MSS_MUX) {
        rc = dc_mss_feed(c->mss, p, n, &used);
        conn_flush(c);
        if (rc < 0) {
            conn_fail(c, rc);
            return;
        }
        if (rc == 0)
            return;
        if (strcmp(dc_mss_protocol(c->mss), DC_YAMUX_PROTOCOL_ID) != 0) {
            conn_fail(c, DC_EPROTO);
            return;
        }
        {
            struct dc_yamux_config yc;
            dc_yamux_config_default(&yc);
            yc.is_client = c->outbound;
            yc.max_streams = c->h->max_streams;
            yc.ud = c;
            yc.cb.on_stream_open = y_on_stream_open;
            yc.cb.on_data = y_on_data;
            yc.cb.on_fin = y_on_fin;
            yc.cb.on_writable = y_on_writable;
            yc.cb.on_close = y_on_close;
            yc.cb.now_us = yamux_now_us;
            rc = dc_yamux_new(&yc, &c->yamux);
        }
        if (rc < 0) {
            conn_fail(c, rc);
            return;
        }
        dc_mss_free(c->mss);
        c->mss = NULL;
        c->state = ST_MUX;
        p += used;
        n -= used;
        on_established(c);
        if (c->failed || c->closing)
            return;
    }
    if (c->state == ST_MUX && n > 0) {
        rc = dc_yamux_feed(c->yamux, p, n);
        conn_flush(c);
        if (rc < 0)
            conn_fail(c, rc);
    }
}

static int start_mss(struct conn *c, const char *protocol)
{
    const char *protos[1] = {protocol};
    struct dc_mss_config mc = {.initiator = c->outbound, .protocols = protos, .n_protocols = 1};

    return dc_mss_new(&mc, &c->mss);
}

static void conn_input(struct conn *c, const uint8_t *p, size_t n)
{
    size_t used, len;
    const uint8_t *pt;
    int rc;

    while (n > 0 && !c->failed && !c->closing) {
        if (c->state == ST_MSS_SEC) {
            rc = dc_mss_feed(c->mss, p, n, &used);
            flush_mss_raw(c);
            if (rc < 0) {
                conn_fail(c, rc);
                return;
            }
            if (rc == 0)
                return;
            if (strcmp(dc_mss_protocol(c->mss), DC_NOISE_PROTOCOL_ID) != 0) {
                conn_fail(c, DC_EPROTO);
                return;
            }
            dc_mss_free(c->mss);
            c->mss = NULL;
            {
                struct dc_noise_config nc = {.initiator = c->outbound, .identity = c->h->id};
                nc.expected_peer = c->has_expected ? &c->expected : NULL;
                rc = dc_noise_new(&nc, &c->noise);
            }
            if (rc < 0) {
                conn_fail(c, rc);
                return;
            }
            c->state = ST_NOISE;
            flush_noise_raw(c);
            p += used;
            n -= used;
            continue;
        }
        rc = dc_noise_feed(c->noise, p, n);
        if (c->state == ST_NOISE)
            flush_noise_raw(c);
        if (rc < 0) {
            conn_fail(c, rc);
            return;
        }
        if (rc == 1) {
            c->peer = *dc_noise_remote_peer(c->noise);
            if (dc_peer_id_equal(&c->peer, dc_identity_peer_id(c->h->id))) {
                conn_fail(c, DC_EPEER);
                return;
            }
            rc = start_mss(c, DC_YAMUX_PROTOCOL_ID);
            if (rc < 0) {
                conn_fail(c, rc);
                return;
            }
            c->state = ST_MSS_MUX;
            conn_flush(c);
        }
        pt = dc_noise_plaintext(c->noise, &len);
        if (len > 0) {
            /* Used in place: what secure_input sets off (yamux, stream callbacks, writes)
             * only queues output, and the only feeder of the plaintext buffer is this read
             * path, which libuv never re-enters; the connection's memory outlives the call
             * (it is freed from a close callback). */
            secure_input(c, pt, len);
            dc_noise_plaintext_consume(c->noise, len);
        }
        return;
    }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = handle->data;
    struct dc_host *h = c->h;

    DC_UNUSED(suggested);
    if (h->rbuf == NULL)
        h->rbuf = dc_malloc(READ_CHUNK);
    buf->base = (char *)h->rbuf;
    buf->len = h->rbuf != NULL ? READ_CHUNK : 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    uint8_t *p = (uint8_t *)buf->base;
    size_t skip = 0;

    if (c->closing)
        return;
    conn_enter(c);
    if (nread < 0) {
        conn_fail(c, nread == UV_EOF ? DC_ECLOSED : (int)nread);
    } else if (nread > 0) {
        if (c->use_psk)
            dc_pnet_decrypt(&c->pnet, p, (size_t)nread, &skip);
        conn_input(c, p + skip, (size_t)nread - skip);
    } else if (buf->base == NULL) {
        conn_fail(c, DC_ENOMEM);
    }
    conn_leave(c);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;

    conn_enter(c);
    if (!c->established)
        conn_fail(c, DC_ETIMEDOUT);
    else if (c->yamux != NULL && dc_yamux_stream_count(c->yamux) == 0)
        conn_fail(c, 0); /* idle */
    else if (c->h->idle_timeout_ms > 0)
        uv_timer_start(&c->timer, on_timer, c->h->idle_timeout_ms, 0);
    conn_leave(c);
}

/* The socket is connected (either way): start the upgrade. */
static void conn_start(struct conn *c, uint32_t timeout_ms)
{
    int rc;

    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
            (void)sockaddr_to_multiaddr((struct sockaddr *)&ss, &c->remote, c->remote_text,
                                        sizeof(c->remote_text));
    }
    if (timeout_ms > 0)
        uv_timer_start(&c->timer, on_timer, timeout_ms, 0);
    if (c->use_psk) {
        dc_pnet_init(&c->pnet, c->h->psk, NULL);
        conn_write_raw(c, c->pnet.local_nonce, DC_PNET_NONCE_LEN, true);
    }
    rc = start_mss(c, DC_NOISE_PROTOCOL_ID);
    if (rc < 0) {
        conn_fail(c, rc);
        return;
    }
    c->state = ST_MSS_SEC;
    flush_mss_raw(c);
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0)
        conn_fail(c, rc);
}

static void on_conn_handle_closed(uv_handle_t *handle)
{
    struct conn *c = handle->data;
    struct dc_host *h = c->h;

    if (--c->handles > 0)
        return;
    dc_mss_free(c->mss);
    dc_noise_free(c->noise);
    if (c->use_psk)
        dc_pnet_cleanup(&c->pnet);
    dc_free(c);
    h->handles--;
    host_maybe_free(h);
}

/* Delivers a dial's result from the loop (never inside the caller's dc_host_dial). */
static void dial_complete(struct dial *d, int status, const struct dc_peer_id *peer)
{
    struct dc_host *h = d->h;

    d->status = status;
    if (peer != NULL)
        d->peer = *peer;
    d->next = h->completed;
    h->completed = d;
    if (!h->closing)
        uv_timer_start(&h->tick, on_tick, 0, 0);
}

static size_t peer_conn_count(const struct dc_host *h, const struct dc_peer_id *id)
{
    size_t n = 0;

    for (const struct conn *c = h->conns; c != NULL; c = c->next)
        if (c->established && dc_peer_id_equal(&c->peer, id))
            n++;
    return n;
}

static const char *stage_name(enum conn_state st)
{
    switch (st) {
    case ST_CONNECTING:
        return "connect";
    case ST_MSS_SEC:
        return "security negotiation (multistream-select)";
    case ST_NOISE:
        return "noise handshake";
    case ST_MSS_MUX:
        return "muxer negotiation (multistream-select)";
    default:
        return "session";
    }
}

static void conn_close(struct conn *c, int err)
{
    struct dc_host *h = c->h;
    struct conn **pp;
    bool was_established = c->established;

    if (c->closing)
        return;
    c->closing = true;
    c->busy++; /* nothing below may re-enter a close */
    for (pp = &h->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            h->n_conns--;
            break;
        }
    }
    if (c->inbound_counted) {
        h->inbound_hs--;
        c->inbound_counted = false;
    }
    if (!was_established && err != 0 && !h->closing && h->ev.on_conn_error != NULL) {
        const char *hint = NULL;
        /* Under pnet, a peer with another key reads our bytes as noise and we read its: the
         * first negotiation fails (or the peer hangs up, or waits forever for a length). */
        if (c->use_psk && c->state == ST_MSS_SEC)
            hint = "the peer is not in this private network (different or no swarm key)";
        else if (!c->use_psk && c->state == ST_MSS_SEC &&
                 (err == DC_EPROTO || err == DC_ECORRUPT || err == DC_ELIMIT))
            hint = "the peer does not speak libp2p, or it is in a private network (swarm key)";
        else if (err == DC_EPEER)
            hint = "the peer's identity is not the PeerId that was dialed";
        h->ev.on_conn_error(h->ud, c->remote_text, c->outbound, err, stage_name(c->state), hint);
    }
    if (c->dial != NULL) {
        /* A connection that lost the dedup race still means the peer is reachable; one that
         * reached another PeerId than the dialed one does not (even when we are connected to
         * that other peer). */
        const struct dc_peer_id *pid = c->noise != NULL ? dc_noise_remote_peer(c->noise) : NULL;

        if (pid != NULL && !h->closing &&
            (!c->has_expected || dc_peer_id_equal(pid, &c->expected)) &&
            peer_conn_count(h, pid) > 0) {
            dial_complete(c->dial, 0, pid);
        } else {
            dial_complete(c->dial, err != 0 ? err : DC_ECLOSED, NULL);
            if (c->has_expected && !c->no_backoff && !h->closing)
                peer_dial_failed(h, &c->expected);
        }
        c->dial = NULL;
    }
    for (struct dc_host_stream *s = c->streams; s != NULL; s = s->next)
        stream_fire_close(s, DC_ECLOSED);
    dc_yamux_free(c->yamux); /* its on_close calls find every stream dead */
    c->yamux = NULL;
    while (c->streams != NULL) {
        struct dc_host_stream *s = c->streams;
        c->streams = s->next;
        stream_free(s);
    }
    c->established = false;
    if (was_established && peer_conn_count(h, &c->peer) == 0) {
        struct peer *p = peer_find(h, &c->peer);
        if (p != NULL) {
            p->info.connected = false;
            p->info.last_seen_ms = dc_wall_ms();
            p->dirty = true;
            if (c->outbound && c->remote.len > 0)
                peer_add_addr(p, &c->remote, DC_ADDR_SOURCE_DIALED);
        }
        if (!h->closing && h->ev.on_disconnected != NULL)
            h->ev.on_disconnected(h->ud, &c->peer, err);
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static struct conn *conn_new(struct dc_host *h, bool outbound)
{
    struct conn *c = dc_calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->h = h;
    c->outbound = outbound;
    c->use_psk = h->use_psk;
    if (uv_tcp_init(h->loop, &c->tcp) < 0) {
        dc_free(c);
        return NULL;
    }
    uv_timer_init(h->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    h->handles++;
    snprintf(c->remote_text, sizeof(c->remote_text), "?");
    c->next = h->conns;
    h->conns = c;
    h->n_conns++;
    return c;
}

/* ---- identify and ping ------------------------------------------------------------------ */

static void identify_start(struct conn *c);

static void on_established(struct conn *c)
{
    struct dc_host *h = c->h;
    struct conn *other = NULL;
    struct peer *p;
    bool first;

    uv_timer_stop(&c->timer);
    if (c->inbound_counted) {
        h->inbound_hs--;
        c->inbound_counted = false;
    }
    for (struct conn *o = h->conns; o != NULL; o = o->next)
        if (o != c && o->established && dc_peer_id_equal(&o->peer, &c->peer))
            other = o;
    if (other != NULL) {
        /* Keep the connection dialed by the smaller PeerId, so both ends pick the same one;
         * between two dialed by the same side, keep the older. */
        const struct dc_peer_id *self = dc_identity_peer_id(h->id);
        const struct dc_peer_id *dc_new = c->outbound ? self : &c->peer;
        const struct dc_peer_id *dc_old = other->outbound ? self : &other->peer;
        bool keep_new = false;
        if (!dc_peer_id_equal(dc_new, dc_old)) {
            size_t n = dc_new->len < dc_old->len ? dc_new->len : dc_old->len;
            int cmp = memcmp(dc_new->bytes, dc_old->bytes, n);
            keep_new = cmp < 0 || (cmp == 0 && dc_new->len < dc_old->len);
        }
        if (!keep_new) {
            if (c->dial != NULL) {
                dial_complete(c->dial, 0, &c->peer);
                c->dial = NULL;
            }
            conn_fail(c, 0);
            return;
        }
        c->established = true;
        if (other->dial != NULL) {
            dial_complete(other->dial, 0, &c->peer);
            other->dial = NULL;
        }
        conn_fail(other, 0);
    }
    first = peer_conn_count(h, &c->peer) == 0;
    c->established = true;
    p = peer_get(h, &c->peer);
    if (p != NULL) {
        p->dial_failures = 0;
        p->backoff_until_ms = 0;
        p->info.connected = true;
        p->info.last_seen_ms = dc_wall_ms();
        p->dirty = true;
        if (c->outbound && c->remote.len > 0)
            peer_add_addr(p, &c->remote, DC_ADDR_SOURCE_DIALED);
    }
    if (c->dial != NULL) {
        dial_complete(c->dial, 0, &c->peer);
        c->dial = NULL;
    }
    if (h->idle_timeout_ms > 0)
        uv_timer_start(&c->timer, on_timer, h->idle_timeout_ms, 0);
    if (first && h->ev.on_connected != NULL)
        h->ev.on_connected(h->ud, &c->peer, c->outbound, &c->remote);
    if (!c->failed)
        identify_start(c);
}

/* Ping client state. */
struct ping {
    struct dc_host *h;
    dc_host_ping_cb cb;
    void *ud;
    uint8_t payload[DC_PING_LEN], got[DC_PING_LEN];
    size_t have;
    uint64_t t0;
    bool done;
};

static void ping_finish(struct ping *pg, struct dc_host_stream *s, int status, uint64_t rtt)
{
    if (pg->done)
        return;
    pg->done = true;
    if (status == 0) {
        struct peer *p = peer_find(pg->h, &s->c->peer);
        if (p != NULL) {
            p->info.rtt_us = rtt;
            p->info.last_seen_ms = dc_wall_ms();
            p->dirty = true;
        }
    }
    if (pg->cb != NULL)
        pg->cb(pg->ud, status, rtt);
}

static void ping_on_open(void *ud, struct dc_host_stream *s)
{
    struct ping *pg = ud;

    pg->t0 = uv_hrtime();
    if (dc_host_stream_write(s, pg->payload, sizeof(pg->payload)) < 0) {
        ping_finish(pg, s, DC_ENOMEM, 0);
        dc_host_stream_reset(s);
        dc_free(pg);
    }
}

static void ping_on_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    struct ping *pg = ud;
    size_t take = DC_PING_LEN - pg->have < n ? DC_PING_LEN - pg->have : n;

    memcpy(pg->got + pg->have, p, take);
    pg->have += take;
    if (pg->have < DC_PING_LEN && take == n)
        return;
    if (pg->have == DC_PING_LEN && take == n && memcmp(pg->got, pg->payload, DC_PING_LEN) == 0)
        ping_finish(pg, s, 0, (uv_hrtime() - pg->t0) / 1000u);
    else
        ping_finish(pg, s, DC_EPROTO, 0);
    dc_host_stream_reset(s);
    dc_free(pg);
}

static void ping_on_close(void *ud, struct dc_host_stream *s, int err)
{
    struct ping *pg = ud;

    ping_finish(pg, s, err != 0 ? err : DC_EPROTO, 0);
    dc_free(pg);
}

static const struct dc_host_stream_cb ping_client_cb = {
    .on_open = ping_on_open, .on_data = ping_on_data, .on_close = ping_on_close};

/* The ping server echoes every byte until the peer closes. */
static void ping_server_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    DC_UNUSED(ud);
    if (dc_host_stream_write(s, p, n) < 0)
        dc_host_stream_reset(s);
}

static void ping_server_fin(void *ud, struct dc_host_stream *s)
{
    DC_UNUSED(ud);
    (void)!dc_host_stream_close(s);
}

static const struct dc_host_stream_cb ping_server_cb = {.on_data = ping_server_data,
                                                        .on_fin = ping_server_fin};

int dc_host_ping(struct dc_host *h, const struct dc_peer_id *peer, dc_host_ping_cb cb, void *ud)
{
    const char *protos[1] = {DC_PING_PROTOCOL_ID};
    struct dc_host_stream *s;
    struct ping *pg = dc_calloc(1, sizeof(*pg));
    int rc;

    if (pg == NULL)
        return DC_ENOMEM;
    pg->h = h;
    pg->cb = cb;
    pg->ud = ud;
    randombytes_buf(pg->payload, sizeof(pg->payload));
    rc = dc_host_new_stream(h, peer, protos, 1, &ping_client_cb, pg, &s);
    if (rc < 0)
        dc_free(pg);
    return rc;
}

/* Identify: the server writes one length-prefixed Identify message and closes; the client
 * collects it until the peer's FIN. */
static void identify_server_open(void *ud, struct dc_host_stream *s)
{
    struct dc_host *h = ud;
    Dc__Identify__Identify msg = DC__IDENTIFY__IDENTIFY__INIT;
    struct dc_multiaddr addrs[DC_PEER_MAX_ADDRS];
    ProtobufCBinaryData bins[DC_PEER_MAX_ADDRS];
    char *protos[MAX_HANDLERS];
    uint8_t key[DC_ED25519_PUBLIC_KEY_PROTO_LEN], *buf;
    size_t n_addrs, key_len, len, vlen;
    int rc;

    n_addrs = dc_host_listen_addrs(h, addrs, DC_ARRAY_LEN(addrs));
    if (n_addrs > DC_ARRAY_LEN(addrs))
        n_addrs = DC_ARRAY_LEN(addrs);
    for (size_t i = 0; i < n_addrs; i++) {
        bins[i].data = addrs[i].bytes;
        bins[i].len = addrs[i].len;
    }
    for (size_t i = 0; i < h->n_handlers; i++)
        protos[i] = h->handlers[i].protocol;
    if (dc_identity_public_key_proto(h->id, key, sizeof(key), &key_len) < 0)
        goto fail;
    msg.protocolversion = (char *)DC_IDENTIFY_PROTOCOL_VERSION;
    msg.agentversion = h->agent;
    msg.has_publickey = 1;
    msg.publickey.data = key;
    msg.publickey.len = key_len;
    msg.n_listenaddrs = n_addrs;
    msg.listenaddrs = bins;
    msg.n_protocols = h->n_handlers;
    msg.protocols = protos;
    if (s->c->remote.len > 0) {
        msg.has_observedaddr = 1;
        msg.observedaddr.data = s->c->remote.bytes;
        msg.observedaddr.len = s->c->remote.len;
    }
    len = dc__identify__identify__get_packed_size(&msg);
    buf = dc_malloc(len + DC_VARINT_MAX_LEN);
    if (buf == NULL)
        goto fail;
    vlen = dc_varint_encode(len, buf);
    dc__identify__identify__pack(&msg, buf + vlen);
    rc = dc_host_stream_write(s, buf, vlen + len);
    dc_free(buf);
    if (rc < 0)
        goto fail;
    (void)!dc_host_stream_close(s);
    return;
fail:
    dc_host_stream_reset(s);
}

static void identify_server_fin(void *ud, struct dc_host_stream *s)
{
    DC_UNUSED(ud);
    (void)!dc_host_stream_close(s);
}

static const struct dc_host_stream_cb identify_server_cb = {.on_open = identify_server_open,
                                                            .on_fin = identify_server_fin};

struct ident {
    struct dc_host *h;
    struct dc_buf buf;
    bool stored;
    bool push; /* an inbound /ipfs/id/push/1.0.0 stream: fields it leaves out stay */
};

void dc_peer_info_cleanup(struct dc_peer_info *info)
{
    for (size_t i = 0; i < info->n_protocols; i++)
        dc_free(info->protocols[i]);
    info->n_protocols = 0;
}

int dc_identify_parse(const uint8_t *p, size_t len, const struct dc_peer_id *peer,
                      struct dc_peer_info *out)
{
    Dc__Identify__Identify *msg;
    uint64_t body;
    size_t used;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    out->id = *peer;
    if (len > IDENTIFY_MAX)
        return DC_ELIMIT;
    if (dc_varint_decode(p, len, &body, &used) < 0 || body != len - used)
        return DC_ECORRUPT;
    msg = dc__identify__identify__unpack(&dc_pb_allocator, (size_t)body, p + used);
    if (msg == NULL)
        return DC_ECORRUPT;
    /* The key must be the one the connection authenticated. */
    if (msg->has_publickey) {
        struct dc_peer_id pid;
        if (dc_peer_id_from_public_key_proto(msg->publickey.data, msg->publickey.len, &pid) < 0 ||
            !dc_peer_id_equal(&pid, peer)) {
            rc = DC_EPEER;
            goto out;
        }
    }
    snprintf(out->agent, sizeof(out->agent), "%s",
             msg->agentversion != NULL ? msg->agentversion : "");
    snprintf(out->protocol_version, sizeof(out->protocol_version), "%s",
             msg->protocolversion != NULL ? msg->protocolversion : "");
    for (size_t i = 0; i < msg->n_protocols && out->n_protocols < DC_PEER_MAX_PROTOCOLS; i++) {
        if (strlen(msg->protocols[i]) > DC_PROTOCOL_ID_MAX)
            continue;
        char *dup = dc_strdup(msg->protocols[i]);
        if (dup == NULL) {
            rc = DC_ENOMEM;
            goto out;
        }
        out->protocols[out->n_protocols++] = dup;
    }
    for (size_t i = 0; i < msg->n_listenaddrs && out->n_addrs < DC_PEER_MAX_ADDRS; i++) {
        struct dc_multiaddr ma;
        if (dc_multiaddr_from_bytes(msg->listenaddrs[i].data, msg->listenaddrs[i].len, &ma, NULL) ==
            0)
            out->addrs[out->n_addrs++] = ma;
    }
    if (msg->has_observedaddr &&
        dc_multiaddr_from_bytes(msg->observedaddr.data, msg->observedaddr.len, &out->observed,
                                NULL) < 0)
        out->observed.len = 0;
    out->identified = true;
out:
    if (rc < 0)
        dc_peer_info_cleanup(out);
    dc__identify__identify__free_unpacked(msg, &dc_pb_allocator);
    return rc;
}

static void identify_store(struct ident *id, struct dc_host_stream *s)
{
    struct dc_host *h = id->h;
    struct dc_peer_info info;
    struct peer *p;

    if (id->stored)
        return;
    id->stored = true;
    if (dc_identify_parse(id->buf.data, id->buf.len, &s->c->peer, &info) < 0)
        return;
    p = peer_get(h, &s->c->peer);
    if (p == NULL) {
        dc_peer_info_cleanup(&info);
        return;
    }
    /* A push may carry only what changed: an empty field there means "unchanged". */
    if (!id->push || info.agent[0] != '\0')
        memcpy(p->info.agent, info.agent, sizeof(info.agent));
    if (!id->push || info.protocol_version[0] != '\0')
        memcpy(p->info.protocol_version, info.protocol_version, sizeof(info.protocol_version));
    if (!id->push || info.n_protocols > 0) {
        dc_peer_info_cleanup(&p->info);
        memcpy(p->info.protocols, info.protocols, info.n_protocols * sizeof(info.protocols[0]));
        p->info.n_protocols = info.n_protocols; /* the strings move over */
    } else {
        dc_peer_info_cleanup(&info);
    }
    for (size_t i = 0; i < info.n_addrs; i++)
        peer_add_addr(p, &info.addrs[i], DC_ADDR_SOURCE_IDENTIFY);
    if (!id->push || info.observed.len > 0)
        p->info.observed = info.observed;
    p->info.identified = true;
    p->dirty = true;
    p->info.last_seen_ms = dc_wall_ms();
    if (!h->closing && h->ev.on_identified != NULL)
        h->ev.on_identified(h->ud, &p->info);
}

static void ident_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    struct ident *id = ud;

    if (dc_buf_append(&id->buf, p, n) < 0)
        dc_host_stream_reset(s); /* on_close will not fire: free here */
    if (s->dead) {
        dc_buf_cleanup(&id->buf);
        dc_free(id);
    }
}

static void ident_fin(void *ud, struct dc_host_stream *s)
{
    struct ident *id = ud;

    identify_store(id, s);
    (void)!dc_host_stream_close(s);
}

static void ident_close(void *ud, struct dc_host_stream *s, int err)
{
    struct ident *id = ud;

    if (err == 0)
        identify_store(id, s);
    dc_buf_cleanup(&id->buf);
    dc_free(id);
}

static const struct dc_host_stream_cb identify_client_cb = {
    .on_data = ident_data, .on_fin = ident_fin, .on_close = ident_close};

/* Identify push, receiving side: the peer opens /ipfs/id/push/1.0.0, writes one Identify
 * message and closes; it is read and stored like an identify answer. */
static void push_server_open(void *ud, struct dc_host_stream *s)
{
    struct ident *id = dc_calloc(1, sizeof(*id));

    if (id == NULL) {
        dc_host_stream_reset(s);
        return;
    }
    id->h = ud;
    id->push = true;
    dc_buf_init(&id->buf, IDENTIFY_MAX);
    dc_host_stream_set_user(s, id);
}

static const struct dc_host_stream_cb push_server_cb = {.on_open = push_server_open,
                                                        .on_data = ident_data,
                                                        .on_fin = ident_fin,
                                                        .on_close = ident_close};

/* Sending side: the same message the identify server writes, on a stream we open. */
static const struct dc_host_stream_cb push_client_cb = {.on_open = identify_server_open};

static bool info_has_protocol(const struct dc_peer_info *info, const char *proto)
{
    for (size_t i = 0; i < info->n_protocols; i++)
        if (strcmp(info->protocols[i], proto) == 0)
            return true;
    return false;
}

/* Pushes our identify to every connected peer that takes pushes. The PeerIds are collected
 * first: opening a stream may close a failed connection and change the list. */
static void on_push_timer(uv_timer_t *t)
{
    const char *protos[1] = {DC_IDENTIFY_PUSH_PROTOCOL_ID};
    struct dc_host *h = t->data;
    struct dc_peer_id *ids;
    size_t n = 0;

    if (h->closing || h->n_conns == 0)
        return;
    ids = dc_malloc(h->n_conns * sizeof(*ids));
    if (ids == NULL)
        return;
    for (struct conn *c = h->conns; c != NULL && n < h->n_conns; c = c->next) {
        const struct peer *p = c->established && !c->failed ? peer_find(h, &c->peer) : NULL;
        if (p != NULL && info_has_protocol(&p->info, DC_IDENTIFY_PUSH_PROTOCOL_ID))
            ids[n++] = c->peer;
    }
    for (size_t i = 0; i < n; i++) {
        struct dc_host_stream *s;
        (void)!dc_host_new_stream(h, &ids[i], protos, 1, &push_client_cb, h, &s);
    }
    dc_free(ids);
}

/* Our protocols or addresses changed: push soon (changes in a burst make one push). */
static void push_schedule(struct dc_host *h)
{
    if (h->timers_ready && !h->closing && h->n_conns > 0)
        uv_timer_start(&h->push_timer, on_push_timer, PUSH_DELAY_MS, 0);
}

static void identify_start(struct conn *c)
{
    const char *protos[1] = {DC_IDENTIFY_PROTOCOL_ID};
    struct dc_host_stream *s;
    struct ident *id = dc_calloc(1, sizeof(*id));

    if (id == NULL)
        return;
    id->h = c->h;
    dc_buf_init(&id->buf, IDENTIFY_MAX);
    if (dc_host_new_stream(c->h, &c->peer, protos, 1, &identify_client_cb, id, &s) < 0) {
        dc_buf_cleanup(&id->buf);
        dc_free(id);
        return;
    }
    (void)!dc_host_stream_close(s); /* we only read */
}

/* ---- streams ---------------------------------------------------------------------------- */

static void stream_flush(struct dc_host_stream *s)
{
    if (s->dead || !s->open || s->c->yamux == NULL)
        return;
    conn_flush(s->c);
}

/* Moves what is left of a direct write into 'pending'. Pending is empty while a direct write
 * runs, so the order holds. */
static int stream_spill_direct(struct dc_host_stream *s)
{
    const uint8_t *p = s->direct;
    size_t n = s->direct_len;

    s->direct = NULL;
    s->direct_len = 0;
    if (n == 0 || s->dead)
        return 0;
    return dc_buf_append(&s->pending, p, n);
}

int dc_host_stream_write(struct dc_host_stream *s, const void *p, size_t len)
{
    struct conn *c = s->c;
    int rc;

    if (s->dead || s->close_requested)
        return DC_ESTATE;
    if (len == 0)
        return 0;
    if (s->pending.len - s->pending_off + s->direct_len + len > STREAM_MAX_QUEUED)
        return DC_ELIMIT;
    if (s->direct_len > 0) {
        /* A nested write (from a callback inside our own send): queue behind the rest. */
        rc = stream_spill_direct(s);
        if (rc < 0)
            return rc;
    }
    if (s->pending.len == s->pending_off && s->open && c->yamux != NULL) {
        /* Nothing queued ahead: frame straight from the caller's buffer, queue the rest. */
        s->direct = p;
        s->direct_len = len;
        conn_enter(c);
        conn_flush(c);
        rc = stream_spill_direct(s);
        conn_leave(c);
        return rc;
    }
    if (s->pending_off > 1024 * 1024 && s->pending_off >= s->pending.len - s->pending_off) {
        /* Compact only once the sent part is at least the rest: each byte moves at most
         * once on average, however large the queue. */
        dc_buf_consume(&s->pending, s->pending_off);
        s->pending_off = 0;
    }
    rc = dc_buf_append(&s->pending, p, len);
    if (rc < 0)
        return rc;
    conn_enter(c);
    stream_flush(s);
    conn_leave(c);
    return 0;
}

size_t dc_host_stream_queued(const struct dc_host_stream *s)
{
    return s->pending.len - s->pending_off + s->direct_len;
}

int dc_host_stream_close(struct dc_host_stream *s)
{
    struct conn *c = s->c;

    if (s->dead || s->close_requested)
        return DC_ESTATE;
    s->close_requested = true;
    conn_enter(c);
    stream_flush(s);
    conn_leave(c);
    return 0;
}

void dc_host_stream_reset(struct dc_host_stream *s)
{
    struct conn *c = s->c;

    if (s->dead)
        return;
    s->dead = true;
    conn_enter(c);
    if (c->yamux != NULL)
        (void)!dc_yamux_stream_reset(c->yamux, s->id);
    conn_flush(c);
    conn_leave(c);
}

const char *dc_host_stream_protocol(const struct dc_host_stream *s)
{
    return s->open ? s->protocol : NULL;
}

const struct dc_peer_id *dc_host_stream_peer(const struct dc_host_stream *s)
{
    return &s->c->peer;
}

void dc_host_stream_set_user(struct dc_host_stream *s, void *ud)
{
    s->ud = ud;
}

static struct conn *conn_for_peer(const struct dc_host *h, const struct dc_peer_id *peer)
{
    for (struct conn *c = h->conns; c != NULL; c = c->next)
        if (c->established && !c->failed && dc_peer_id_equal(&c->peer, peer))
            return c;
    return NULL;
}

int dc_host_new_stream(struct dc_host *h, const struct dc_peer_id *peer,
                       const char *const *protocols, size_t n, const struct dc_host_stream_cb *cb,
                       void *ud, struct dc_host_stream **out)
{
    struct dc_mss_config mc = {.initiator = true, .protocols = protocols, .n_protocols = n};
    struct dc_host_stream *s;
    struct conn *c;
    int rc;

    *out = NULL;
    if (h->closing)
        return DC_ECLOSED;
    c = conn_for_peer(h, peer);
    if (c == NULL)
        return DC_ENOENT;
    if (n == 0)
        return DC_EINVAL;
    s = stream_new(c, true);
    if (s == NULL)
        return DC_ENOMEM;
    s->cb = cb;
    s->ud = ud;
    rc = dc_mss_new(&mc, &s->mss);
    if (rc < 0) {
        s->dead = true;
        return rc;
    }
    conn_enter(c);
    rc = dc_yamux_stream_open(c->yamux, s, &s->id);
    if (rc < 0) {
        s->dead = true;
        conn_leave(c);
        return rc == DC_EAGAIN ? DC_ELIMIT : rc;
    }
    stream_flush_mss(s);
    conn_flush(c);
    if (s->dead) {
        conn_leave(c);
        return DC_ELIMIT;
    }
    conn_leave(c);
    *out = s;
    return 0;
}

/* ---- listening and dialing -------------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *handle)
{
    struct listener *l = handle->data;
    struct dc_host *h = l->h;

    dc_free(l);
    h->handles--;
    host_maybe_free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct dc_host *h = l->h;
    struct conn *c;

    if (status < 0 || h->closing)
        return;
    c = conn_new(h, false);
    if (c == NULL)
        return;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c, 0);
        return;
    }
    /* Over a limit: accept and close at once, so the backlog does not fill with them. */
    if (h->n_conns > h->max_conns || h->inbound_hs >= h->max_inbound_hs) {
        conn_close(c, 0);
        return;
    }
    c->inbound_counted = true;
    h->inbound_hs++;
    conn_enter(c);
    conn_start(c, h->hs_timeout_ms);
    conn_leave(c);
}

int dc_host_listen(struct dc_host *h, const struct dc_multiaddr *ma)
{
    struct dc_multiaddr_target t;
    struct sockaddr_storage ss;
    struct listener *l;
    int rc, len;

    if (h->closing)
        return DC_ESTATE;
    if (h->n_listeners >= MAX_LISTENERS)
        return DC_ELIMIT;
    rc = dc_multiaddr_target(ma, &t);
    if (rc < 0)
        return rc;
    rc = target_to_sockaddr(&t, &ss);
    if (rc < 0)
        return rc;
    l = dc_calloc(1, sizeof(*l));
    if (l == NULL)
        return DC_ENOMEM;
    l->h = h;
    l->family = ss.ss_family;
    uv_tcp_init(h->loop, &l->tcp);
    l->tcp.data = l;
    h->handles++;
    rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss,
                     ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 128, on_connection);
    if (rc == 0) {
        len = sizeof(ss);
        rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
    }
    if (rc == 0)
        rc = sockaddr_to_multiaddr((struct sockaddr *)&ss, &l->addr, NULL, 0);
    if (rc < 0) {
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
        return rc;
    }
    if (ss.ss_family == AF_INET)
        l->unspecified = ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    else
        l->unspecified = IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&ss)->sin6_addr);
    h->listeners[h->n_listeners++] = l;
    push_schedule(h);
    return 0;
}

size_t dc_host_listen_addrs(const struct dc_host *h, struct dc_multiaddr *out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; i < h->n_listeners; i++) {
        const struct listener *l = h->listeners[i];
        struct dc_multiaddr_target t;

        if (!l->unspecified) {
            if (n < cap)
                out[n] = l->addr;
            n++;
            continue;
        }
        if (dc_multiaddr_target(&l->addr, &t) < 0)
            continue;
        uv_interface_address_t *ifs;
        int count;
        if (uv_interface_addresses(&ifs, &count) != 0)
            continue;
        /* Loopback first: it is the one address every local peer can reach. */
        for (int pass = 0; pass < 2; pass++) {
            for (int k = 0; k < count; k++) {
                struct sockaddr_storage ss;
                struct dc_multiaddr ma;

                if ((pass == 0) != (ifs[k].is_internal != 0))
                    continue;
                if (ifs[k].address.address4.sin_family != l->family)
                    continue;
                memset(&ss, 0, sizeof(ss));
                if (l->family == AF_INET) {
                    struct sockaddr_in a = ifs[k].address.address4;
                    a.sin_port = htons(t.port);
                    memcpy(&ss, &a, sizeof(a));
                } else {
                    struct sockaddr_in6 a = ifs[k].address.address6;
                    if (IN6_IS_ADDR_LINKLOCAL(&a.sin6_addr))
                        continue; /* needs a zone to be dialable */
                    a.sin6_port = htons(t.port);
                    memcpy(&ss, &a, sizeof(a));
                }
                if (sockaddr_to_multiaddr((struct sockaddr *)&ss, &ma, NULL, 0) < 0)
                    continue;
                if (n < cap)
                    out[n] = ma;
                n++;
            }
        }
        uv_free_interface_addresses(ifs, count);
    }
    return n;
}

const struct dc_peer_id *dc_host_peer_id(const struct dc_host *h)
{
    return dc_identity_peer_id(h->id);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;

    if (c->closing)
        return;
    conn_enter(c);
    if (status < 0)
        conn_fail(c, status);
    else
        conn_start(c, 0 /* keep the dial's timer */);
    conn_leave(c);
}

static void on_tick(uv_timer_t *t)
{
    struct dc_host *h = t->data;

    while (h->completed != NULL && !h->closing) {
        struct dial *d = h->completed;
        h->completed = d->next;
        if (d->cb != NULL)
            d->cb(d->ud, d->status, d->status == 0 ? &d->peer : NULL);
        dc_free(d);
    }
}

/* Starts a TCP dial to 'sa'. 'expected' (NULL: any peer) is the PeerId Noise must see;
 * 'no_backoff' leaves a failure out of that PeerId's dial backoff. Returns 0 (cb will fire),
 * -errno from connect, or DC_ENOMEM. */
static int dial_sockaddr(struct dc_host *h, const struct sockaddr *sa,
                         const struct dc_peer_id *expected, bool no_backoff, uint32_t timeout_ms,
                         dc_host_dial_cb cb, void *ud)
{
    struct dial *d;
    struct conn *c;
    int rc;

    d = dc_calloc(1, sizeof(*d));
    if (d == NULL)
        return DC_ENOMEM;
    d->h = h;
    d->cb = cb;
    d->ud = ud;
    c = conn_new(h, true);
    if (c == NULL) {
        dc_free(d);
        return DC_ENOMEM;
    }
    c->has_expected = expected != NULL;
    if (expected != NULL)
        c->expected = *expected;
    c->no_backoff = no_backoff;
    (void)sockaddr_to_multiaddr(sa, &c->remote, c->remote_text, sizeof(c->remote_text));
    c->connect_req.data = c;
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, sa, on_connect);
    if (rc < 0) {
        dc_free(d);
        conn_close(c, 0);
        return rc;
    }
    c->dial = d;
    uv_timer_start(&c->timer, on_timer, timeout_ms ? timeout_ms : h->hs_timeout_ms, 0);
    return 0;
}

/* ---- dialing /dns, /dns4 and /dns6 ------------------------------------------------------
 *
 * A DNS dial resolves the name with uv_getaddrinfo (libuv's thread pool) and then dials the
 * answers one after another, each with what is left of the dial's timeout, until one comes up
 * as the expected PeerId. The timer bounds the resolution itself (a stuck resolver cannot
 * hold the dial past its timeout); once the addresses are in, each attempt carries its own
 * timer. The record lives until the resolution returned, the timer closed and no attempt is
 * outstanding, whichever comes last; it counts as one of the host's handles so the host
 * outlives it. */

struct resolve {
    struct dc_host *h;
    uv_getaddrinfo_t req;
    uv_timer_t timer;
    bool resolving;  /* req outstanding */
    bool timer_open; /* timer not yet closed */
    bool attempting; /* an address's dial outstanding */
    bool reported;   /* cb fired */
    dc_host_dial_cb cb;
    void *ud;
    bool has_expected;
    struct dc_peer_id expected;
    uint16_t port;
    char name[DC_MULTIADDR_MAX_NAME + 1];
    uint64_t deadline; /* uv_now() */
    struct addrinfo *ai, *next_ai;
    int last_err;
    struct resolve *next;
};

static void resolve_maybe_free(struct resolve *r)
{
    struct dc_host *h = r->h;

    if (r->resolving || r->timer_open || r->attempting)
        return;
    for (struct resolve **pp = &h->resolves; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    uv_freeaddrinfo(r->ai);
    dc_free(r);
    h->handles--;
    host_maybe_free(h);
}

static void on_resolve_timer_closed(uv_handle_t *handle)
{
    struct resolve *r = handle->data;

    r->timer_open = false;
    resolve_maybe_free(r);
}

/* Reports the outcome once; a failure puts the PeerId in dial backoff like any failed dial. */
static void resolve_report(struct resolve *r, int status, const struct dc_peer_id *peer)
{
    struct dc_host *h = r->h;

    if (r->reported)
        return;
    r->reported = true;
    if (status < 0 && r->has_expected && !h->closing)
        peer_dial_failed(h, &r->expected);
    if (r->resolving)
        (void)uv_cancel((uv_req_t *)&r->req); /* best effort: it may be running already */
    uv_close((uv_handle_t *)&r->timer, on_resolve_timer_closed);
    if (r->cb != NULL)
        r->cb(r->ud, status, status == 0 ? peer : NULL);
}

static void on_resolve_attempt(void *ud, int status, const struct dc_peer_id *peer);

/* Dials the next resolved address, or reports the end. */
static void resolve_try_next(struct resolve *r)
{
    struct dc_host *h = r->h;

    while (r->next_ai != NULL && !h->closing) {
        const struct addrinfo *ai = r->next_ai;
        struct sockaddr_storage ss;
        uint64_t now = uv_now(h->loop);
        int rc;

        r->next_ai = ai->ai_next;
        if (now >= r->deadline) {
            resolve_report(r, DC_ETIMEDOUT, NULL);
            return;
        }
        memset(&ss, 0, sizeof(ss));
        if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
            memcpy(&ss, ai->ai_addr, sizeof(struct sockaddr_in));
            ((struct sockaddr_in *)&ss)->sin_port = htons(r->port);
        } else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            memcpy(&ss, ai->ai_addr, sizeof(struct sockaddr_in6));
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons(r->port);
        } else {
            continue;
        }
        rc = dial_sockaddr(h, (struct sockaddr *)&ss, r->has_expected ? &r->expected : NULL, true,
                           (uint32_t)(r->deadline - now), on_resolve_attempt, r);
        if (rc == 0) {
            r->attempting = true;
            return;
        }
        r->last_err = rc;
    }
    resolve_report(r, h->closing ? DC_ECLOSED : r->last_err, NULL);
}

static void on_resolve_attempt(void *ud, int status, const struct dc_peer_id *peer)
{
    struct resolve *r = ud;

    r->attempting = false;
    if (status == 0 || status == DC_EPEER || r->reported || r->h->closing)
        resolve_report(r, status, peer); /* a wrong PeerId is not cured by another address */
    else {
        r->last_err = status;
        resolve_try_next(r);
    }
    resolve_maybe_free(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct resolve *r = req->data;
    struct dc_host *h = r->h;

    r->resolving = false;
    r->ai = res;
    r->next_ai = res;
    if (!r->reported) {
        if (status < 0) {
            /* The dial callback gets DC_ERESOLVE; the event says what the resolver said. */
            if (status != UV_EAI_CANCELED && !h->closing && h->ev.on_conn_error != NULL)
                h->ev.on_conn_error(h->ud, r->name, true, DC_ERESOLVE, "DNS resolution",
                                    uv_strerror(status));
            resolve_report(r, h->closing ? DC_ECLOSED : DC_ERESOLVE, NULL);
        } else {
            r->last_err = DC_ERESOLVE; /* stays when no answer is an address we can use */
            resolve_try_next(r);
        }
    }
    resolve_maybe_free(r);
}

static void on_resolve_timer(uv_timer_t *t)
{
    struct resolve *r = t->data;

    /* Only the resolution is timed here; address attempts time out on their own. */
    if (r->resolving)
        resolve_report(r, DC_ETIMEDOUT, NULL);
}

static int dial_dns(struct dc_host *h, const struct dc_multiaddr_target *t,
                    const struct dc_peer_id *expected, uint32_t timeout_ms, dc_host_dial_cb cb,
                    void *ud)
{
    struct resolve *r = dc_calloc(1, sizeof(*r));
    struct addrinfo hints;
    int rc;

    if (r == NULL)
        return DC_ENOMEM;
    r->h = h;
    r->cb = cb;
    r->ud = ud;
    r->has_expected = expected != NULL;
    if (expected != NULL)
        r->expected = *expected;
    r->port = t->port;
    snprintf(r->name, sizeof(r->name), "%s", t->host);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = t->host_proto == DC_MA_DNS4   ? AF_INET
                      : t->host_proto == DC_MA_DNS6 ? AF_INET6
                                                    : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r->req.data = r;
    rc = uv_getaddrinfo(h->loop, &r->req, on_resolved, r->name, NULL, &hints);
    if (rc < 0) {
        dc_free(r);
        return rc == UV_ENOMEM ? DC_ENOMEM : DC_ERESOLVE;
    }
    r->resolving = true;
    uv_timer_init(h->loop, &r->timer);
    r->timer.data = r;
    r->timer_open = true;
    uv_update_time(h->loop);
    r->deadline = uv_now(h->loop) + (timeout_ms ? timeout_ms : h->hs_timeout_ms);
    uv_timer_start(&r->timer, on_resolve_timer, timeout_ms ? timeout_ms : h->hs_timeout_ms, 0);
    r->next = h->resolves;
    h->resolves = r;
    h->handles++;
    return 0;
}

int dc_host_dial(struct dc_host *h, const struct dc_multiaddr *ma, uint32_t timeout_ms,
                 dc_host_dial_cb cb, void *ud)
{
    struct dc_multiaddr_target t;
    struct sockaddr_storage ss;
    const uint8_t *mh;
    size_t mh_len;
    struct dc_peer_id expected;
    bool has_expected = false, dns;
    int rc;

    if (h->closing)
        return DC_ESTATE;
    rc = dc_multiaddr_target(ma, &t);
    if (rc < 0)
        return rc;
    dns = t.transport == DC_MA_TCP &&
          (t.host_proto == DC_MA_DNS || t.host_proto == DC_MA_DNS4 || t.host_proto == DC_MA_DNS6);
    if (!dns) {
        rc = target_to_sockaddr(&t, &ss);
        if (rc < 0)
            return rc;
    }
    if (dc_multiaddr_peer_id(ma, &mh, &mh_len) == 0) {
        if (dc_peer_id_from_bytes(mh, mh_len, &expected) < 0)
            return DC_EINVAL;
        if (dc_peer_id_equal(&expected, dc_identity_peer_id(h->id)))
            return DC_EINVAL;
        has_expected = true;
    }
    if (has_expected && conn_for_peer(h, &expected) != NULL) {
        struct dial *d = dc_calloc(1, sizeof(*d));
        if (d == NULL)
            return DC_ENOMEM;
        d->h = h;
        d->cb = cb;
        d->ud = ud;
        dial_complete(d, 0, &expected);
        return 0;
    }
    if (has_expected) {
        const struct peer *p = peer_find(h, &expected);
        if (p != NULL && p->backoff_until_ms > dc_wall_ms())
            return DC_EAGAIN;
    }
    if (dns)
        return dial_dns(h, &t, has_expected ? &expected : NULL, timeout_ms, cb, ud);
    return dial_sockaddr(h, (struct sockaddr *)&ss, has_expected ? &expected : NULL, false,
                         timeout_ms, cb, ud);
}

/* ---- the host --------------------------------------------------------------------------- */

int dc_host_set_handler(struct dc_host *h, const char *protocol, const struct dc_host_stream_cb *cb,
                        void *ud)
{
    struct handler *hd;
    char *dup;

    if (protocol == NULL || protocol[0] == '\0' || strlen(protocol) > DC_PROTOCOL_ID_MAX ||
        strchr(protocol, '\n') != NULL)
        return DC_EINVAL;
    hd = handler_find(h, protocol);
    if (hd != NULL) {
        hd->cb = cb;
        hd->ud = ud;
        return 0;
    }
    if (h->n_handlers >= DC_MSS_MAX_PROPOSALS)
        return DC_ELIMIT;
    dup = dc_strdup(protocol);
    if (dup == NULL)
        return DC_ENOMEM;
    h->handlers[h->n_handlers++] = (struct handler){dup, cb, ud};
    push_schedule(h);
    return 0;
}

int dc_host_new(const struct dc_host_config *cfg, struct dc_host **out)
{
    struct dc_host *h;
    int rc;

    *out = NULL;
    if (cfg->loop == NULL || cfg->identity == NULL)
        return DC_EINVAL;
    h = dc_calloc(1, sizeof(*h));
    if (h == NULL)
        return DC_ENOMEM;
    h->loop = cfg->loop;
    h->id = cfg->identity;
    h->agent = dc_strdup(cfg->agent_version != NULL ? cfg->agent_version : "democritus");
    if (h->agent == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    h->use_psk = cfg->use_psk;
    memcpy(h->psk, cfg->psk, sizeof(h->psk));
    h->max_conns = cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNS;
    h->max_inbound_hs =
        cfg->max_inbound_handshakes ? cfg->max_inbound_handshakes : DEFAULT_MAX_INBOUND_HS;
    h->hs_timeout_ms =
        cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : DEFAULT_HANDSHAKE_TIMEOUT;
    h->idle_timeout_ms = cfg->idle_timeout_ms;
    h->max_streams = cfg->max_streams ? cfg->max_streams : DEFAULT_MAX_STREAMS;
    h->ev = cfg->ev;
    h->ud = cfg->ud;
    h->max_peers = cfg->max_peers ? cfg->max_peers : DC_HOST_DEFAULT_MAX_PEERS;
    h->addr_ttl_ms = cfg->addr_ttl_ms ? cfg->addr_ttl_ms : DC_HOST_ADDR_TTL_MS;
    h->save_ms = cfg->peer_save_ms ? cfg->peer_save_ms : DEFAULT_PEER_SAVE_MS;
    crypto_shorthash_keygen(h->peer_hash_key);
    h->peer_buckets = dc_calloc(PEER_BUCKETS_MIN, sizeof(*h->peer_buckets));
    if (h->peer_buckets == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    h->peer_mask = PEER_BUCKETS_MIN - 1;
    rc = dc_host_set_handler(h, DC_IDENTIFY_PROTOCOL_ID, &identify_server_cb, h);
    if (rc == 0)
        rc = dc_host_set_handler(h, DC_IDENTIFY_PUSH_PROTOCOL_ID, &push_server_cb, h);
    if (rc == 0)
        rc = dc_host_set_handler(h, DC_PING_PROTOCOL_ID, &ping_server_cb, h);
    if (rc < 0)
        goto err_free;
    if (cfg->state_dir != NULL) {
        rc = peers_open(h, cfg->state_dir);
        if (rc < 0)
            goto err_free;
    }
    uv_timer_init(h->loop, &h->tick);
    uv_timer_init(h->loop, &h->save_timer);
    uv_timer_init(h->loop, &h->push_timer);
    h->tick.data = h->save_timer.data = h->push_timer.data = h;
    h->handles = 3;
    h->timers_ready = true;
    /* Maintenance alone does not keep a loop alive. */
    uv_unref((uv_handle_t *)&h->save_timer);
    uv_timer_start(&h->save_timer, on_save_timer, h->save_ms, h->save_ms);
    /* on_tick is given at each start (uv_timer_start needs the callback). */
    *out = h;
    return 0;

err_free:
    if (h->peer_buckets != NULL)
        peers_free_all(h);
    dc_free(h->peer_buckets);
    for (size_t i = 0; i < h->n_handlers; i++)
        dc_free(h->handlers[i].protocol);
    dc_free(h->agent);
    dc_free(h);
    return rc;
}

static void on_tick_closed(uv_handle_t *handle)
{
    struct dc_host *h = handle->data;

    h->handles--;
    host_maybe_free(h);
}

void dc_host_free(struct dc_host *h)
{
    if (h == NULL)
        return;
    /* No events from here on; dial results (queued or caused by the closing below) and
     * streams' on_close are delivered now: callbacks never outlive the host. */
    h->closing = true;
    while (h->conns != NULL)
        conn_close(h->conns, DC_ECLOSED);
    while (h->completed != NULL) {
        struct dial *d = h->completed;
        h->completed = d->next;
        if (d->cb != NULL)
            d->cb(d->ud, d->status, d->status == 0 ? &d->peer : NULL);
        dc_free(d);
    }
    /* DNS dials still resolving; each is freed once its resolver request returned. */
    for (struct resolve *r = h->resolves, *next; r != NULL; r = next) {
        next = r->next;
        resolve_report(r, DC_ECLOSED, NULL);
    }
    for (size_t i = 0; i < h->n_listeners; i++)
        uv_close((uv_handle_t *)&h->listeners[i]->tcp, on_listener_closed);
    h->n_listeners = 0;
    /* Every connection is down now: the last save records them as last seen now. */
    (void)peers_save(h);
    dc_peerstore_close(h->ps);
    h->ps = NULL;
    uv_close((uv_handle_t *)&h->tick, on_tick_closed);
    uv_close((uv_handle_t *)&h->save_timer, on_tick_closed);
    uv_close((uv_handle_t *)&h->push_timer, on_tick_closed);
}

const struct dc_peer_info *dc_host_peer_info(const struct dc_host *h, const struct dc_peer_id *peer)
{
    const struct peer *p = peer_find(h, peer);

    return p != NULL ? &p->info : NULL;
}

int dc_host_add_peer_addrs(struct dc_host *h, const struct dc_peer_id *peer,
                           const struct dc_multiaddr *addrs, size_t n)
{
    struct peer *p;

    if (dc_peer_id_equal(peer, dc_identity_peer_id(h->id)))
        return DC_EINVAL;
    p = peer_get(h, peer);
    if (p == NULL)
        return peer_find(h, peer) == NULL && h->n_peers >= h->max_peers ? DC_ELIMIT : DC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct dc_multiaddr ma = addrs[i];
        (void)dc_multiaddr_strip_p2p(&ma);
        if (ma.len > 0)
            peer_add_addr(p, &ma, DC_ADDR_SOURCE_DHT);
    }
    return 0;
}

size_t dc_host_peers(const struct dc_host *h, const struct dc_peer_info **out, size_t cap)
{
    size_t n = 0, kept = 0;

    /* Insertion into out[0..kept), most recent first: O(peers * cap), cap is small. */
    for (const struct peer *p = h->peers; p != NULL; p = p->next, n++) {
        uint64_t r = peer_recency(&p->info);
        size_t k = kept;

        if (cap == 0)
            continue;
        if (kept == cap && r <= peer_recency(out[cap - 1]))
            continue;
        if (kept < cap)
            kept++;
        k = kept - 1;
        while (k > 0 && peer_recency(out[k - 1]) < r) {
            out[k] = out[k - 1];
            k--;
        }
        out[k] = &p->info;
    }
    return n;
}

void dc_host_set_keep_peer(struct dc_host *h, dc_host_keep_peer_cb cb, void *ud)
{
    h->keep_peer = cb;
    h->keep_peer_ud = ud;
}

size_t dc_host_peer_count(const struct dc_host *h)
{
    return h->n_peers;
}

const char *dc_host_peerstore_error(const struct dc_host *h)
{
    return h->ps_err;
}

int dc_host_peerstore_save(struct dc_host *h)
{
    return peers_save(h);
}

bool dc_host_is_connected(const struct dc_host *h, const struct dc_peer_id *peer)
{
    return conn_for_peer(h, peer) != NULL;
}

size_t dc_host_connected_count(const struct dc_host *h)
{
    size_t n = 0;

    for (const struct peer *p = h->peers; p != NULL; p = p->next)
        if (p->info.connected)
            n++;
    return n;
}

size_t dc_host_connection_count(const struct dc_host *h)
{
    return h->n_conns;
}

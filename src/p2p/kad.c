/* SPDX-License-Identifier: MIT */
/*
 * kad.c - the Kademlia DHT node: key-space arithmetic, the k-bucket routing table, the
 * iterative lookup state machine, the request handler, and the bounded record and provider
 * stores with their versioned serialisation. No I/O and no clock: time comes in as now_ms,
 * work goes out as actions (kad.h explains how a host drives it).
 *
 * Map of the file:
 *   keys      - 256-bit key-space points kept as four native 64-bit words, most significant
 *               first, so XOR distance comparison is four word compares.
 *   table     - 256 buckets indexed by the common prefix length with our key. Each bucket is
 *               an array in least-recently-seen order (index 0 = seen longest ago) plus a
 *               replacement cache; arrays grow on demand up to k, so a node of a 10,000-node
 *               network costs tens of KiB, not 256 * k entries.
 *   stores    - records and provider keys in chained hash tables keyed with SipHash under a
 *               per-node random key (peers choose the keys, so they must not choose the
 *               collisions). Every count is capped by the config.
 *   lookup    - candidates sorted by distance in one capped array, a small id hash set so a
 *               peer heard of twice is not hashed twice, alpha requests in flight.
 *   server    - dc_kad_handle_request().
 *   persist   - dc_kad_store_save() / dc_kad_store_load().
 */
#include "p2p/kad.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/varint.h"
#include "p2p/record.h"

#define MAX_VALIDATORS  16
#define NS_MAX          64
#define STORE_BUCKETS   1024 /* hash chains per store; caps bound the chain lengths */
#define PERSIST_MAGIC   "DCKAD"
#define PERSIST_VERSION 1u

/* ============================================================================================
 * Keys
 * ========================================================================================== */

struct kkey {
    uint64_t w[4];
};

static void kkey_from_bytes(const uint8_t b[DC_KAD_KEY_LEN], struct kkey *k)
{
    for (int i = 0; i < 4; i++) {
        uint64_t v = 0;

        for (int j = 0; j < 8; j++)
            v = (v << 8) | b[i * 8 + j];
        k->w[i] = v;
    }
}

static void kkey_of(const uint8_t *p, size_t len, struct kkey *k)
{
    uint8_t d[DC_KAD_KEY_LEN];

    dc_sha256(p, len, d);
    kkey_from_bytes(d, k);
}

static void kkey_of_peer(const struct dc_peer_id *id, struct kkey *k)
{
    kkey_of(id->bytes, id->len, k);
}

static unsigned kkey_cpl(const struct kkey *a, const struct kkey *b)
{
    for (int i = 0; i < 4; i++) {
        uint64_t x = a->w[i] ^ b->w[i];

        if (x != 0)
            return (unsigned)(i * 64 + __builtin_clzll(x));
    }
    return DC_KAD_KEY_BITS;
}

/* <0 when a is closer to t than b. */
static int kkey_dist_cmp(const struct kkey *t, const struct kkey *a, const struct kkey *b)
{
    for (int i = 0; i < 4; i++) {
        uint64_t da = a->w[i] ^ t->w[i], db = b->w[i] ^ t->w[i];

        if (da != db)
            return da < db ? -1 : 1;
    }
    return 0;
}

static bool kkey_eq(const struct kkey *a, const struct kkey *b)
{
    return memcmp(a, b, sizeof(*a)) == 0;
}

void dc_kad_hash(const uint8_t *key, size_t len, uint8_t out[DC_KAD_KEY_LEN])
{
    dc_sha256(key, len, out);
}

unsigned dc_kad_common_prefix(const uint8_t a[DC_KAD_KEY_LEN], const uint8_t b[DC_KAD_KEY_LEN])
{
    struct kkey ka, kb;

    kkey_from_bytes(a, &ka);
    kkey_from_bytes(b, &kb);
    return kkey_cpl(&ka, &kb);
}

int dc_kad_distance_cmp(const uint8_t target[DC_KAD_KEY_LEN], const uint8_t a[DC_KAD_KEY_LEN],
                        const uint8_t b[DC_KAD_KEY_LEN])
{
    struct kkey t, ka, kb;

    kkey_from_bytes(target, &t);
    kkey_from_bytes(a, &ka);
    kkey_from_bytes(b, &kb);
    return kkey_dist_cmp(&t, &ka, &kb);
}

/* ============================================================================================
 * The node
 * ========================================================================================== */

struct rt_entry {
    struct dc_peer_id id;
    struct kkey key;
    uint64_t last_seen_ms;
    uint32_t fails;
};

struct rt_bucket {
    struct rt_entry *e;    /* least recently seen first */
    struct rt_entry *repl; /* replacement cache, least recently seen first */
    uint8_t n, cap, n_repl, cap_repl;
    bool ping_queued;  /* a PING action for e[0] waits in the queue */
    bool ping_pending; /* a PING action was handed out; waiting for dc_kad_ping_result */
};

struct validator {
    char ns[NS_MAX];
    bool unsupported; /* namespace known, records refused (none built in today) */
    struct dc_kad_validator v;
};

struct rec {
    struct rec *next;
    uint64_t h;
    uint8_t *key;
    size_t key_len;
    uint8_t *value;
    size_t value_len;
    uint64_t received_ms;
};

struct prov {
    struct dc_peer_id id;
    uint64_t expires_ms;
    uint8_t *addrs; /* (varint length, binary multiaddr)* */
    size_t addrs_len;
};

struct pkey {
    struct pkey *next;
    uint64_t h;
    uint8_t *key;
    size_t key_len;
    struct prov *provs;
    size_t n, cap;
};

struct dc_kad {
    struct dc_kad_config cfg;
    struct kkey self_key;
    struct rt_bucket buckets[DC_KAD_KEY_BITS];
    size_t n_peers;
    uint8_t ping_queue[DC_KAD_KEY_BITS]; /* bucket indexes with ping_queued, FIFO */
    size_t ping_head, n_ping;
    uint64_t next_req_id;
    struct validator validators[MAX_VALIDATORS];
    size_t n_validators;
    uint8_t hash_key[16]; /* SipHash key of the stores */
    struct rec **recs;    /* STORE_BUCKETS chains, allocated on first use */
    struct pkey **pkeys;
    size_t n_recs, rec_bytes, n_pkeys, n_provs;
};

static int pk_validate(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                       size_t value_len, uint64_t now_ms);

void dc_kad_config_default(struct dc_kad_config *cfg, const struct dc_peer_id *self)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->self = *self;
    cfg->k = DC_KAD_K;
    cfg->alpha = DC_KAD_ALPHA;
    cfg->request_timeout_ms = 10000;
    cfg->max_failures = 2;
    cfg->replacements = DC_KAD_K;
    cfg->ping_after_ms = 60000;
    cfg->record_ttl_ms = DC_KAD_RECORD_TTL_MS;
    cfg->provider_ttl_ms = DC_KAD_PROVIDER_TTL_MS;
    cfg->max_records = 4096;
    cfg->max_record_bytes = 16u << 20;
    cfg->max_provider_keys = 16384;
    cfg->max_providers_per_key = 64;
    cfg->max_providers = 65536;
}

int dc_kad_new(const struct dc_kad_config *cfg, struct dc_kad **out)
{
    struct dc_kad *kad;
    struct dc_kad_validator pk = {.validate = pk_validate}, ipns;

    *out = NULL;
    if (cfg->self.len == 0 || cfg->self.len > DC_PEER_ID_MAX || cfg->k > 64 || cfg->alpha > 16 ||
        cfg->replacements > 64)
        return DC_EINVAL;
    if (dc_crypto_init() < 0) /* the store's hash key comes from libsodium's RNG */
        return DC_ECRYPTO;
    kad = dc_calloc(1, sizeof(*kad));
    if (kad == NULL)
        return DC_ENOMEM;
    kad->cfg = *cfg;
#define DEF(f, v)                                                                                  \
    if (kad->cfg.f == 0)                                                                           \
    kad->cfg.f = (v)
    DEF(k, DC_KAD_K);
    DEF(alpha, DC_KAD_ALPHA);
    DEF(request_timeout_ms, 10000);
    DEF(max_failures, 2);
    DEF(replacements, kad->cfg.k);
    DEF(ping_after_ms, 60000);
    DEF(record_ttl_ms, DC_KAD_RECORD_TTL_MS);
    DEF(provider_ttl_ms, DC_KAD_PROVIDER_TTL_MS);
    DEF(max_records, 4096);
    DEF(max_record_bytes, 16u << 20);
    DEF(max_provider_keys, 16384);
    DEF(max_providers_per_key, 64);
    DEF(max_providers, 65536);
#undef DEF
    kkey_of_peer(&cfg->self, &kad->self_key);
    kad->next_req_id = 1;
    randombytes_buf(kad->hash_key, sizeof(kad->hash_key));
    /* Built-in namespaces: /pk and /ipns (record.h). */
    dc_ipns_validator(&ipns);
    strcpy(kad->validators[0].ns, "pk");
    kad->validators[0].v = pk;
    strcpy(kad->validators[1].ns, "ipns");
    kad->validators[1].v = ipns;
    kad->n_validators = 2;
    *out = kad;
    return 0;
}

static void rec_free(struct rec *r)
{
    dc_free(r->key);
    dc_free(r->value);
    dc_free(r);
}

static void pkey_free(struct pkey *pk)
{
    for (size_t i = 0; i < pk->n; i++)
        dc_free(pk->provs[i].addrs);
    dc_free(pk->provs);
    dc_free(pk->key);
    dc_free(pk);
}

void dc_kad_free(struct dc_kad *kad)
{
    if (kad == NULL)
        return;
    for (int i = 0; i < DC_KAD_KEY_BITS; i++) {
        dc_free(kad->buckets[i].e);
        dc_free(kad->buckets[i].repl);
    }
    if (kad->recs != NULL) {
        for (size_t i = 0; i < STORE_BUCKETS; i++)
            for (struct rec *r = kad->recs[i], *nx; r != NULL; r = nx) {
                nx = r->next;
                rec_free(r);
            }
        dc_free(kad->recs);
    }
    if (kad->pkeys != NULL) {
        for (size_t i = 0; i < STORE_BUCKETS; i++)
            for (struct pkey *p = kad->pkeys[i], *nx; p != NULL; p = nx) {
                nx = p->next;
                pkey_free(p);
            }
        dc_free(kad->pkeys);
    }
    dc_free(kad);
}

/* ---- validators ------------------------------------------------------------------------- */

/* The namespace of "/ns/rest": ns must be non-empty and followed by '/'. */
static int key_namespace(const uint8_t *key, size_t len, char ns[NS_MAX])
{
    size_t i;

    if (len < 3 || key[0] != '/')
        return DC_EUNSUPPORTED;
    for (i = 1; i < len && key[i] != '/'; i++)
        if (i >= NS_MAX - 1 || key[i] == '\0')
            return DC_EUNSUPPORTED;
    if (i == 1 || i >= len)
        return DC_EUNSUPPORTED;
    memcpy(ns, key + 1, i - 1);
    ns[i - 1] = '\0';
    return 0;
}

static const struct validator *find_validator(const struct dc_kad *kad, const uint8_t *key,
                                              size_t len)
{
    char ns[NS_MAX];

    if (key_namespace(key, len, ns) < 0)
        return NULL;
    for (size_t i = 0; i < kad->n_validators; i++)
        if (strcmp(kad->validators[i].ns, ns) == 0)
            return &kad->validators[i];
    return NULL;
}

int dc_kad_set_validator(struct dc_kad *kad, const char *ns, const struct dc_kad_validator *v)
{
    size_t len = ns != NULL ? strlen(ns) : 0;
    struct validator *slot = NULL;

    if (len == 0 || len >= NS_MAX || strchr(ns, '/') != NULL || v == NULL || v->validate == NULL)
        return DC_EINVAL;
    for (size_t i = 0; i < kad->n_validators; i++)
        if (strcmp(kad->validators[i].ns, ns) == 0)
            slot = &kad->validators[i];
    if (slot == NULL) {
        if (kad->n_validators >= MAX_VALIDATORS)
            return DC_ELIMIT;
        slot = &kad->validators[kad->n_validators++];
        memcpy(slot->ns, ns, len + 1);
    }
    slot->unsupported = false;
    slot->v = *v;
    return 0;
}

int dc_kad_validate(struct dc_kad *kad, const uint8_t *key, size_t key_len, const uint8_t *value,
                    size_t value_len, uint64_t now_ms)
{
    const struct validator *v;

    if (key_len > DC_KAD_MAX_KEY || value_len > DC_KAD_MAX_VALUE)
        return DC_ELIMIT;
    v = find_validator(kad, key, key_len);
    if (v == NULL || v->unsupported)
        return DC_EUNSUPPORTED;
    return v->v.validate(v->v.ud, key, key_len, value, value_len, now_ms);
}

/* Index of the better of two valid values for 'key' (0 = a). Stable: ties keep 'a'. */
static size_t select_better(const struct dc_kad *kad, const uint8_t *key, size_t key_len,
                            const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
    const struct validator *v = find_validator(kad, key, key_len);
    const uint8_t *vals[2] = {a, b};
    size_t lens[2] = {a_len, b_len};
    size_t i;

    if (v == NULL || v->v.select == NULL)
        return 0;
    i = v->v.select(v->v.ud, key, key_len, vals, lens, 2);
    return i < 2 ? i : 0;
}

/*
 * /pk/<binary PeerId>: the value is a PublicKey protobuf whose PeerId is the one in the key
 * (the spec's "SHA256(value) == peerID", generalised to identity-multihash PeerIds).
 */
static int pk_validate(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                       size_t value_len, uint64_t now_ms)
{
    struct dc_peer_id want, got;
    int rc;

    (void)ud;
    (void)now_ms;
    if (key_len < 5 || memcmp(key, "/pk/", 4) != 0)
        return DC_ECORRUPT;
    if (dc_peer_id_from_bytes(key + 4, key_len - 4, &want) < 0)
        return DC_ECORRUPT;
    rc = dc_peer_id_from_public_key_proto(value, value_len, &got);
    if (rc < 0)
        return rc == DC_EUNSUPPORTED ? rc : DC_ECORRUPT;
    return dc_peer_id_equal(&want, &got) ? 0 : DC_ECRYPTO;
}

/* ============================================================================================
 * Routing table
 * ========================================================================================== */

static struct rt_bucket *bucket_of(struct dc_kad *kad, const struct kkey *k, unsigned *idx)
{
    unsigned cpl = kkey_cpl(&kad->self_key, k);

    if (cpl >= DC_KAD_KEY_BITS)
        return NULL;
    if (idx != NULL)
        *idx = cpl;
    return &kad->buckets[cpl];
}

static int find_entry(const struct rt_entry *e, size_t n, const struct kkey *k,
                      const struct dc_peer_id *id)
{
    for (size_t i = 0; i < n; i++)
        if (e[i].key.w[0] == k->w[0] && kkey_eq(&e[i].key, k) && dc_peer_id_equal(&e[i].id, id))
            return (int)i;
    return -1;
}

/* Removes e[i] of an array of n, keeping the order. */
static void entry_remove(struct rt_entry *e, uint8_t *n, size_t i)
{
    memmove(&e[i], &e[i + 1], (*n - i - 1) * sizeof(*e));
    (*n)--;
}

/* Makes room for one more entry (array growth on demand, up to 'max'). */
static int entry_reserve(struct rt_entry **e, uint8_t n, uint8_t *cap, uint32_t max)
{
    struct rt_entry *grown;
    uint32_t ncap;

    if (n < *cap)
        return 0;
    if (*cap >= max)
        return DC_ELIMIT;
    ncap = *cap == 0 ? 4 : (uint32_t)*cap * 2;
    if (ncap > max)
        ncap = max;
    grown = dc_realloc(*e, ncap * sizeof(**e));
    if (grown == NULL)
        return DC_ENOMEM;
    *e = grown;
    *cap = (uint8_t)ncap;
    return 0;
}

static void queue_ping(struct dc_kad *kad, struct rt_bucket *b, unsigned idx)
{
    if (b->ping_queued || b->ping_pending || kad->n_ping >= DC_KAD_KEY_BITS)
        return;
    b->ping_queued = true;
    kad->ping_queue[(kad->ping_head + kad->n_ping) % DC_KAD_KEY_BITS] = (uint8_t)idx;
    kad->n_ping++;
}

static int add_peer_key(struct dc_kad *kad, const struct dc_peer_id *id, const struct kkey *k,
                        uint64_t now_ms)
{
    unsigned idx;
    struct rt_bucket *b = bucket_of(kad, k, &idx);
    struct rt_entry ent;
    int i, rc;

    if (b == NULL || id->len == 0)
        return DC_EINVAL; /* ourselves */
    i = find_entry(b->e, b->n, k, id);
    if (i >= 0) {
        ent = b->e[i];
        ent.last_seen_ms = now_ms;
        ent.fails = 0;
        entry_remove(b->e, &b->n, (size_t)i);
        b->e[b->n++] = ent;
        return DC_KAD_ADDED;
    }
    memset(&ent, 0, sizeof(ent));
    ent.id = *id;
    ent.key = *k;
    ent.last_seen_ms = now_ms;
    if (b->n < kad->cfg.k) {
        rc = entry_reserve(&b->e, b->n, &b->cap, kad->cfg.k);
        if (rc < 0)
            return rc;
        i = find_entry(b->repl, b->n_repl, k, id);
        if (i >= 0)
            entry_remove(b->repl, &b->n_repl, (size_t)i);
        b->e[b->n++] = ent;
        kad->n_peers++;
        return DC_KAD_ADDED;
    }
    /* Full: the newcomer waits in the replacement cache (most recent at the end). */
    i = find_entry(b->repl, b->n_repl, k, id);
    if (i >= 0) {
        entry_remove(b->repl, &b->n_repl, (size_t)i);
    } else if (b->n_repl >= kad->cfg.replacements) {
        if (kad->cfg.replacements == 0)
            return DC_KAD_PENDING;
        entry_remove(b->repl, &b->n_repl, 0);
    } else {
        rc = entry_reserve(&b->repl, b->n_repl, &b->cap_repl, kad->cfg.replacements);
        if (rc < 0)
            return rc;
    }
    b->repl[b->n_repl++] = ent;
    if (now_ms >= b->e[0].last_seen_ms + kad->cfg.ping_after_ms)
        queue_ping(kad, b, idx);
    return DC_KAD_PENDING;
}

int dc_kad_add_peer(struct dc_kad *kad, const struct dc_peer_id *id, uint64_t now_ms)
{
    struct kkey k;

    if (id->len == 0 || id->len > DC_PEER_ID_MAX)
        return DC_EINVAL;
    kkey_of_peer(id, &k);
    return add_peer_key(kad, id, &k, now_ms);
}

/* Removes b->e[i] and promotes the most recently seen replacement. */
static void bucket_evict(struct dc_kad *kad, struct rt_bucket *b, size_t i)
{
    entry_remove(b->e, &b->n, i);
    kad->n_peers--;
    if (i == 0)
        b->ping_pending = b->ping_queued = false;
    if (b->n_repl > 0) {
        /* b->e has room: it held one more a moment ago. */
        b->e[b->n++] = b->repl[b->n_repl - 1];
        b->n_repl--;
        kad->n_peers++;
    }
}

static int peer_failed_key(struct dc_kad *kad, const struct dc_peer_id *id, const struct kkey *k)
{
    struct rt_bucket *b = bucket_of(kad, k, NULL);
    int i;

    if (b == NULL)
        return DC_ENOENT;
    i = find_entry(b->e, b->n, k, id);
    if (i < 0) {
        i = find_entry(b->repl, b->n_repl, k, id);
        if (i >= 0)
            entry_remove(b->repl, &b->n_repl, (size_t)i);
        return DC_ENOENT;
    }
    if (++b->e[i].fails < kad->cfg.max_failures)
        return 0;
    bucket_evict(kad, b, (size_t)i);
    return 1;
}

int dc_kad_peer_failed(struct dc_kad *kad, const struct dc_peer_id *id)
{
    struct kkey k;

    kkey_of_peer(id, &k);
    return peer_failed_key(kad, id, &k);
}

int dc_kad_remove_peer(struct dc_kad *kad, const struct dc_peer_id *id)
{
    struct kkey k;
    struct rt_bucket *b;
    int i;

    kkey_of_peer(id, &k);
    b = bucket_of(kad, &k, NULL);
    if (b == NULL)
        return DC_ENOENT;
    i = find_entry(b->e, b->n, &k, id);
    if (i < 0) {
        i = find_entry(b->repl, b->n_repl, &k, id);
        if (i < 0)
            return DC_ENOENT;
        entry_remove(b->repl, &b->n_repl, (size_t)i);
        return 0;
    }
    bucket_evict(kad, b, (size_t)i);
    return 0;
}

int dc_kad_ping_result(struct dc_kad *kad, const struct dc_peer_id *id, bool alive, uint64_t now_ms)
{
    struct kkey k;
    struct rt_bucket *b;
    int i;

    kkey_of_peer(id, &k);
    b = bucket_of(kad, &k, NULL);
    if (b == NULL)
        return DC_ENOENT;
    b->ping_pending = false;
    i = find_entry(b->e, b->n, &k, id);
    if (i < 0)
        return DC_ENOENT;
    if (alive) {
        struct rt_entry ent = b->e[i];

        ent.last_seen_ms = now_ms;
        ent.fails = 0;
        entry_remove(b->e, &b->n, (size_t)i);
        b->e[b->n++] = ent;
    } else {
        bucket_evict(kad, b, (size_t)i);
    }
    return 0;
}

int dc_kad_poll(struct dc_kad *kad, struct dc_kad_action *a)
{
    while (kad->n_ping > 0) {
        struct rt_bucket *b = &kad->buckets[kad->ping_queue[kad->ping_head]];

        kad->ping_head = (kad->ping_head + 1) % DC_KAD_KEY_BITS;
        kad->n_ping--;
        if (!b->ping_queued || b->n == 0)
            continue;
        b->ping_queued = false;
        b->ping_pending = true;
        memset(a, 0, sizeof(*a));
        a->type = DC_KAD_ACTION_PING;
        a->peer = b->e[0].id;
        return 1;
    }
    return 0;
}

bool dc_kad_has_peer(const struct dc_kad *kad, const struct dc_peer_id *id)
{
    struct kkey k;
    unsigned cpl;

    kkey_of_peer(id, &k);
    cpl = kkey_cpl(&kad->self_key, &k);
    if (cpl >= DC_KAD_KEY_BITS)
        return false;
    return find_entry(kad->buckets[cpl].e, kad->buckets[cpl].n, &k, id) >= 0;
}

size_t dc_kad_table_size(const struct dc_kad *kad)
{
    return kad->n_peers;
}

size_t dc_kad_bucket_size(const struct dc_kad *kad, unsigned cpl)
{
    return cpl < DC_KAD_KEY_BITS ? kad->buckets[cpl].n : 0;
}

/*
 * The 'max' table entries closest to 't', closest first, as pointers into the table.
 * Buckets are visited in distance order, which needs no sort across buckets: with
 * c = cpl(self, t), bucket c holds the peers closest to t, then come all buckets above c
 * (their distance to t has exactly bit c as its top bit), then buckets c-1, c-2, ... 0, each
 * farther than everything before it. Only the buckets visited are sorted, by insertion into
 * the bounded result.
 */
static size_t closest_entries(const struct dc_kad *kad, const struct kkey *t,
                              const struct rt_entry **out, size_t max)
{
    unsigned c = kkey_cpl(&kad->self_key, t);
    size_t n = 0;

    if (max == 0)
        return 0;
#define CONSIDER(ent)                                                                              \
    do {                                                                                           \
        const struct rt_entry *e_ = (ent);                                                         \
        size_t j_ = n < max ? n : max - 1;                                                         \
        if (n == max && kkey_dist_cmp(t, &e_->key, &out[max - 1]->key) >= 0)                       \
            break;                                                                                 \
        while (j_ > 0 && kkey_dist_cmp(t, &e_->key, &out[j_ - 1]->key) < 0) {                      \
            out[j_] = out[j_ - 1];                                                                 \
            j_--;                                                                                  \
        }                                                                                          \
        out[j_] = e_;                                                                              \
        if (n < max)                                                                               \
            n++;                                                                                   \
    } while (0)

    if (c < DC_KAD_KEY_BITS) {
        const struct rt_bucket *b = &kad->buckets[c];

        for (size_t i = 0; i < b->n; i++)
            CONSIDER(&b->e[i]);
        /* Every bucket above c is one distance class: take all of it or none. */
        if (n < max)
            for (unsigned j = c + 1; j < DC_KAD_KEY_BITS; j++)
                for (size_t i = 0; i < kad->buckets[j].n; i++)
                    CONSIDER(&kad->buckets[j].e[i]);
    } else {
        /* The target is our own key: every bucket, nearest first. */
        for (unsigned j = DC_KAD_KEY_BITS; j-- > 0 && n < max;)
            for (size_t i = 0; i < kad->buckets[j].n; i++)
                CONSIDER(&kad->buckets[j].e[i]);
        return n;
    }
    for (unsigned j = c; j-- > 0 && n < max;)
        for (size_t i = 0; i < kad->buckets[j].n; i++)
            CONSIDER(&kad->buckets[j].e[i]);
#undef CONSIDER
    return n;
}

size_t dc_kad_closest(const struct dc_kad *kad, const uint8_t target[DC_KAD_KEY_LEN],
                      struct dc_peer_id *out, size_t max)
{
    const struct rt_entry *tmp[64];
    struct kkey t;
    size_t n;

    if (max > DC_ARRAY_LEN(tmp))
        max = DC_ARRAY_LEN(tmp);
    kkey_from_bytes(target, &t);
    n = closest_entries(kad, &t, tmp, max);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[i]->id;
    return n;
}

/* ---- bucket refresh keys ---------------------------------------------------------------- */

#define REFRESH_PREFIX_BITS 16
#define REFRESH_BUDGET      (1u << 22)

struct dc_kad_refresh_table {
    uint32_t seed[1u << REFRESH_PREFIX_BITS];
};

/* The refresh key of 'seed': a sha2-256 multihash whose digest is the seed followed by
 * zeroes. Well-formed as a PeerId, yet nobody holds its key. */
static void refresh_peer(uint32_t seed, struct dc_peer_id *id)
{
    memset(id, 0, sizeof(*id));
    id->bytes[0] = DC_MULTIHASH_SHA2_256;
    id->bytes[1] = 32;
    id->bytes[2] = (uint8_t)(seed >> 24);
    id->bytes[3] = (uint8_t)(seed >> 16);
    id->bytes[4] = (uint8_t)(seed >> 8);
    id->bytes[5] = (uint8_t)seed;
    id->len = 34;
}

int dc_kad_refresh_table_new(struct dc_kad_refresh_table **out)
{
    struct dc_kad_refresh_table *t = dc_malloc(sizeof(*t));
    uint8_t *have;
    size_t missing = 1u << REFRESH_PREFIX_BITS;

    *out = NULL;
    have = dc_calloc(1u << REFRESH_PREFIX_BITS, 1);
    if (t == NULL || have == NULL) {
        dc_free(t);
        dc_free(have);
        return DC_ENOMEM;
    }
    for (uint32_t seed = 1; missing > 0; seed++) {
        struct dc_peer_id id;
        uint8_t d[DC_KAD_KEY_LEN];
        uint32_t prefix;

        refresh_peer(seed, &id);
        dc_sha256(id.bytes, id.len, d);
        prefix = ((uint32_t)d[0] << 8) | d[1];
        if (!have[prefix]) {
            have[prefix] = 1;
            t->seed[prefix] = seed;
            missing--;
        }
    }
    dc_free(have);
    *out = t;
    return 0;
}

void dc_kad_refresh_table_free(struct dc_kad_refresh_table *t)
{
    dc_free(t);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int dc_kad_refresh_key(const struct dc_kad *kad, const struct dc_kad_refresh_table *table,
                       unsigned cpl, uint64_t rnd, struct dc_peer_id *out)
{
    uint64_t top = kad->self_key.w[0];

    if (cpl >= DC_KAD_KEY_BITS)
        return DC_EINVAL;
    if (table != NULL && cpl < REFRESH_PREFIX_BITS) {
        /* Our first cpl bits, then bit cpl flipped, then random bits. */
        uint32_t self16 = (uint32_t)(top >> 48);
        uint32_t keep = cpl == 0 ? 0 : (0xffffu << (16 - cpl)) & 0xffffu;
        uint32_t flip = 1u << (15 - cpl);
        uint32_t prefix =
            ((self16 & keep) | ((self16 & flip) ^ flip) | ((uint32_t)rnd & (flip - 1))) & 0xffffu;

        refresh_peer(table->seed[prefix], out);
        return 0;
    }
    for (uint32_t i = 0; i < REFRESH_BUDGET; i++) {
        struct kkey k;

        refresh_peer((uint32_t)mix64(rnd + i), out);
        /* Widen the seed space past 32 bits with two more digest bytes. */
        out->bytes[6] = (uint8_t)(mix64(rnd + i) >> 40);
        out->bytes[7] = (uint8_t)(mix64(rnd + i) >> 48);
        kkey_of_peer(out, &k);
        if (kkey_cpl(&kad->self_key, &k) == cpl)
            return 0;
    }
    return DC_EAGAIN;
}

/* ============================================================================================
 * Stores
 * ========================================================================================== */

static uint64_t store_hash(const struct dc_kad *kad, const uint8_t *key, size_t len)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v = 0;

    crypto_shorthash(h, key, len, kad->hash_key);
    for (size_t i = 0; i < sizeof(h); i++)
        v = (v << 8) | h[i];
    return v;
}

static struct rec *rec_find(const struct dc_kad *kad, const uint8_t *key, size_t len, uint64_t h,
                            struct rec ***link)
{
    struct rec **pp;

    if (kad->recs == NULL)
        return NULL;
    for (pp = &kad->recs[h % STORE_BUCKETS]; *pp != NULL; pp = &(*pp)->next) {
        struct rec *r = *pp;

        if (r->h == h && r->key_len == len && memcmp(r->key, key, len) == 0) {
            if (link != NULL)
                *link = pp;
            return r;
        }
    }
    return NULL;
}

static void rec_unlink(struct dc_kad *kad, struct rec **link)
{
    struct rec *r = *link;

    *link = r->next;
    kad->n_recs--;
    kad->rec_bytes -= r->key_len + r->value_len;
    rec_free(r);
}

static bool rec_expired(const struct dc_kad *kad, const struct rec *r, uint64_t now_ms)
{
    return now_ms >= r->received_ms && now_ms - r->received_ms >= kad->cfg.record_ttl_ms;
}

/* Stores a validated record received at 'received_ms'. */
static int rec_store(struct dc_kad *kad, const uint8_t *key, size_t key_len, const uint8_t *value,
                     size_t value_len, uint64_t received_ms, uint64_t now_ms)
{
    uint64_t h = store_hash(kad, key, key_len);
    struct rec **link, *r = rec_find(kad, key, key_len, h, &link);
    uint8_t *v = NULL;

    if (r != NULL && !rec_expired(kad, r, now_ms) &&
        select_better(kad, key, key_len, r->value, r->value_len, value, value_len) == 0 &&
        !(r->value_len == value_len && memcmp(r->value, value, value_len) == 0))
        return DC_EEXIST; /* the stored record is better */
    if (r != NULL) {
        size_t bytes = kad->rec_bytes - r->value_len + value_len;

        if (bytes > kad->cfg.max_record_bytes)
            return DC_ELIMIT;
        if (value_len > 0 && (v = dc_malloc(value_len)) == NULL)
            return DC_ENOMEM;
        if (value_len > 0)
            memcpy(v, value, value_len);
        dc_free(r->value);
        r->value = v;
        kad->rec_bytes = bytes;
        r->value_len = value_len;
        r->received_ms = received_ms;
        return 0;
    }
    if (kad->n_recs >= kad->cfg.max_records ||
        kad->rec_bytes + key_len + value_len > kad->cfg.max_record_bytes)
        return DC_ELIMIT;
    if (kad->recs == NULL) {
        kad->recs = dc_calloc(STORE_BUCKETS, sizeof(*kad->recs));
        if (kad->recs == NULL)
            return DC_ENOMEM;
    }
    r = dc_calloc(1, sizeof(*r));
    if (r == NULL)
        return DC_ENOMEM;
    r->key = dc_malloc(key_len);
    r->value = value_len > 0 ? dc_malloc(value_len) : NULL;
    if (r->key == NULL || (value_len > 0 && r->value == NULL)) {
        rec_free(r);
        return DC_ENOMEM;
    }
    memcpy(r->key, key, key_len);
    if (value_len > 0)
        memcpy(r->value, value, value_len);
    r->key_len = key_len;
    r->value_len = value_len;
    r->h = h;
    r->received_ms = received_ms;
    r->next = kad->recs[h % STORE_BUCKETS];
    kad->recs[h % STORE_BUCKETS] = r;
    kad->n_recs++;
    kad->rec_bytes += key_len + value_len;
    return 0;
}

int dc_kad_put_local(struct dc_kad *kad, const uint8_t *key, size_t key_len, const uint8_t *value,
                     size_t value_len, uint64_t now_ms)
{
    int rc = dc_kad_validate(kad, key, key_len, value, value_len, now_ms);

    if (rc < 0)
        return rc;
    return rec_store(kad, key, key_len, value, value_len, now_ms, now_ms);
}

int dc_kad_get_local(const struct dc_kad *kad, const uint8_t *key, size_t key_len, uint64_t now_ms,
                     const uint8_t **value, size_t *value_len)
{
    const struct rec *r;

    if (key_len == 0 || key_len > DC_KAD_MAX_KEY)
        return DC_ENOENT;
    r = rec_find(kad, key, key_len, store_hash(kad, key, key_len), NULL);
    if (r == NULL || rec_expired(kad, r, now_ms))
        return DC_ENOENT;
    *value = r->value;
    *value_len = r->value_len;
    return 0;
}

static struct pkey *pkey_find(const struct dc_kad *kad, const uint8_t *key, size_t len, uint64_t h,
                              struct pkey ***link)
{
    struct pkey **pp;

    if (kad->pkeys == NULL)
        return NULL;
    for (pp = &kad->pkeys[h % STORE_BUCKETS]; *pp != NULL; pp = &(*pp)->next) {
        struct pkey *p = *pp;

        if (p->h == h && p->key_len == len && memcmp(p->key, key, len) == 0) {
            if (link != NULL)
                *link = pp;
            return p;
        }
    }
    return NULL;
}

/* Serialises up to DC_KAD_MAX_PEER_ADDRS addresses as (varint length, bytes)*. */
static int addrs_pack(const struct dc_multiaddr *addrs, size_t n, uint8_t **out, size_t *len)
{
    size_t total = 0, off = 0;
    uint8_t *p;

    *out = NULL;
    *len = 0;
    if (n > DC_KAD_MAX_PEER_ADDRS)
        n = DC_KAD_MAX_PEER_ADDRS;
    for (size_t i = 0; i < n; i++)
        total += dc_varint_len(addrs[i].len) + addrs[i].len;
    if (total == 0)
        return 0;
    p = dc_malloc(total);
    if (p == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        off += dc_varint_encode(addrs[i].len, p + off);
        memcpy(p + off, addrs[i].bytes, addrs[i].len);
        off += addrs[i].len;
    }
    *out = p;
    *len = total;
    return 0;
}

/* Parses what addrs_pack wrote (or a persisted copy) into out[0..max); returns the count or
 * DC_ECORRUPT. */
static int addrs_unpack(const uint8_t *p, size_t len, struct dc_multiaddr *out, size_t max)
{
    size_t off = 0;
    int n = 0;

    while (off < len) {
        uint64_t l;
        size_t used;

        if (dc_varint_decode(p + off, len - off, &l, &used) < 0 || l > len - off - used)
            return DC_ECORRUPT;
        off += used;
        if ((size_t)n >= max)
            return DC_ECORRUPT;
        if (out != NULL && dc_multiaddr_from_bytes(p + off, (size_t)l, &out[n], NULL) < 0)
            return DC_ECORRUPT;
        off += (size_t)l;
        n++;
    }
    return n;
}

static int prov_store(struct dc_kad *kad, const uint8_t *key, size_t key_len,
                      const struct dc_peer_id *id, const struct dc_multiaddr *addrs, size_t n_addrs,
                      uint64_t expires_ms)
{
    uint64_t h;
    struct pkey *pk;
    struct prov *pv = NULL;
    uint8_t *blob;
    size_t blob_len;
    int rc;

    if (key_len == 0 || id->len == 0)
        return DC_EINVAL;
    if (key_len > DC_KAD_MAX_KEY)
        return DC_ELIMIT;
    h = store_hash(kad, key, key_len);
    pk = pkey_find(kad, key, key_len, h, NULL);
    if (pk != NULL)
        for (size_t i = 0; i < pk->n; i++)
            if (dc_peer_id_equal(&pk->provs[i].id, id))
                pv = &pk->provs[i];
    if (pv == NULL) {
        if (kad->n_provs >= kad->cfg.max_providers)
            return DC_ELIMIT;
        if (pk != NULL && pk->n >= kad->cfg.max_providers_per_key)
            return DC_ELIMIT;
        if (pk == NULL && kad->n_pkeys >= kad->cfg.max_provider_keys)
            return DC_ELIMIT;
    }
    rc = addrs_pack(addrs, n_addrs, &blob, &blob_len);
    if (rc < 0)
        return rc;
    if (pv != NULL) {
        dc_free(pv->addrs);
        pv->addrs = blob;
        pv->addrs_len = blob_len;
        if (expires_ms > pv->expires_ms)
            pv->expires_ms = expires_ms;
        return 0;
    }
    if (pk == NULL) {
        if (kad->pkeys == NULL) {
            kad->pkeys = dc_calloc(STORE_BUCKETS, sizeof(*kad->pkeys));
            if (kad->pkeys == NULL)
                goto err_blob;
        }
        pk = dc_calloc(1, sizeof(*pk));
        if (pk == NULL)
            goto err_blob;
        pk->key = dc_malloc(key_len);
        if (pk->key == NULL) {
            dc_free(pk);
            goto err_blob;
        }
        memcpy(pk->key, key, key_len);
        pk->key_len = key_len;
        pk->h = h;
        pk->next = kad->pkeys[h % STORE_BUCKETS];
        kad->pkeys[h % STORE_BUCKETS] = pk;
        kad->n_pkeys++;
    }
    if (pk->n == pk->cap) {
        size_t ncap = pk->cap == 0 ? 4 : pk->cap * 2;
        struct prov *grown = dc_realloc(pk->provs, ncap * sizeof(*grown));

        if (grown == NULL)
            goto err_blob; /* an empty new pkey stays; expiry removes it */
        pk->provs = grown;
        pk->cap = ncap;
    }
    pv = &pk->provs[pk->n++];
    pv->id = *id;
    pv->expires_ms = expires_ms;
    pv->addrs = blob;
    pv->addrs_len = blob_len;
    kad->n_provs++;
    return 0;

err_blob:
    dc_free(blob);
    return DC_ENOMEM;
}

int dc_kad_add_provider_local(struct dc_kad *kad, const uint8_t *key, size_t key_len,
                              const struct dc_kad_peer_info *p, uint64_t now_ms)
{
    return prov_store(kad, key, key_len, &p->id, p->addrs, p->n_addrs,
                      now_ms + kad->cfg.provider_ttl_ms);
}

size_t dc_kad_provider_count(const struct dc_kad *kad, const uint8_t *key, size_t key_len,
                             uint64_t now_ms)
{
    const struct pkey *pk;
    size_t n = 0;

    if (key_len == 0 || key_len > DC_KAD_MAX_KEY)
        return 0;
    pk = pkey_find(kad, key, key_len, store_hash(kad, key, key_len), NULL);
    if (pk == NULL)
        return 0;
    for (size_t i = 0; i < pk->n; i++)
        if (pk->provs[i].expires_ms > now_ms)
            n++;
    return n;
}

size_t dc_kad_expire(struct dc_kad *kad, uint64_t now_ms)
{
    size_t dropped = 0;

    for (size_t b = 0; kad->recs != NULL && b < STORE_BUCKETS; b++) {
        struct rec **pp = &kad->recs[b];

        while (*pp != NULL) {
            if (rec_expired(kad, *pp, now_ms)) {
                rec_unlink(kad, pp);
                dropped++;
            } else {
                pp = &(*pp)->next;
            }
        }
    }
    for (size_t b = 0; kad->pkeys != NULL && b < STORE_BUCKETS; b++) {
        struct pkey **pp = &kad->pkeys[b];

        while (*pp != NULL) {
            struct pkey *pk = *pp;
            size_t keep = 0;

            for (size_t i = 0; i < pk->n; i++) {
                if (pk->provs[i].expires_ms > now_ms) {
                    pk->provs[keep++] = pk->provs[i];
                } else {
                    dc_free(pk->provs[i].addrs);
                    kad->n_provs--;
                    dropped++;
                }
            }
            pk->n = keep;
            if (keep == 0) {
                *pp = pk->next;
                kad->n_pkeys--;
                pkey_free(pk);
            } else {
                pp = &pk->next;
            }
        }
    }
    return dropped;
}

void dc_kad_store_stats(const struct dc_kad *kad, struct dc_kad_store_stats *out)
{
    out->records = kad->n_recs;
    out->record_bytes = kad->rec_bytes;
    out->provider_keys = kad->n_pkeys;
    out->providers = kad->n_provs;
}

/* ============================================================================================
 * Lookups
 * ========================================================================================== */

enum lk_state { LK_NEW, LK_INFLIGHT, LK_OK, LK_FAILED };

struct lk_peer {
    struct dc_peer_id id;
    struct kkey key;
    uint64_t req_id;
    uint64_t deadline_ms;
    uint8_t state;
    uint8_t depth; /* 0 for seeds from the table; responder's depth + 1 for peers it taught */
};

#define LK_SET_SLOTS 1024 /* > 2 * DC_KAD_LOOKUP_MAX_PEERS + DC_KAD_MAX_MSG_PEERS: stays sparse */

struct dc_kad_lookup {
    struct dc_kad *kad;
    struct dc_kad_lookup_config cfg;
    uint8_t key[DC_KAD_MAX_KEY];
    struct kkey target;
    struct dc_kad_msg request;
    struct lk_peer *peers; /* sorted by distance to target, DC_KAD_LOOKUP_MAX_PEERS */
    size_t n;
    /* Peer ids ever seen, by a keyed 64-bit hash of the id bytes, so that a peer named by
     * many responses is recognised before paying for its SHA-256. 0 marks an empty slot. */
    uint64_t seen[LK_SET_SLOTS];
    size_t n_seen;
    uint32_t inflight;
    bool done, done_emitted;
    struct dc_kad_lookup_stats stats;
    /* GET_VALUE */
    uint8_t *best;
    size_t best_len;
    uint32_t n_values;
    struct dc_peer_id *best_peers, *outdated;
    size_t n_best_peers, n_outdated;
    /* GET_PROVIDERS */
    struct dc_kad_peer_info *provs;
    size_t n_provs;
};

/* Keyed (SipHash, the node's secret key), so a peer cannot craft ids that collide with the
 * ids of honest peers and get those skipped. */
static uint64_t id_fast_hash(const struct dc_kad *kad, const struct dc_peer_id *id)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;

    crypto_shorthash(h, id->bytes, id->len, kad->hash_key);
    memcpy(&v, h, sizeof(v));
    return v | 1; /* never 0 */
}

/* Returns true when 'id' was already seen, else remembers it. */
static bool lk_seen_add(struct dc_kad_lookup *l, const struct dc_peer_id *id)
{
    uint64_t h = id_fast_hash(l->kad, id);
    size_t i = (size_t)(h % LK_SET_SLOTS);

    while (l->seen[i] != 0) {
        if (l->seen[i] == h)
            return true;
        i = (i + 1) % LK_SET_SLOTS;
    }
    if (l->n_seen >= LK_SET_SLOTS * 3 / 4)
        return false; /* full: fall back to the sorted array's own duplicate check */
    l->seen[i] = h;
    l->n_seen++;
    return false;
}

void dc_kad_lookup_free(struct dc_kad_lookup *l)
{
    if (l == NULL)
        return;
    dc_kad_msg_cleanup(&l->request);
    dc_free(l->peers);
    dc_free(l->best);
    dc_free(l->best_peers);
    dc_free(l->outdated);
    for (size_t i = 0; i < l->n_provs; i++)
        dc_free(l->provs[i].addrs);
    dc_free(l->provs);
    dc_free(l);
}

/* Binary search: index of the first peer not closer than k. */
static size_t lk_lower_bound(const struct dc_kad_lookup *l, const struct kkey *k)
{
    size_t lo = 0, hi = l->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (kkey_dist_cmp(&l->target, &l->peers[mid].key, k) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * Adds a candidate. Returns 1 when added, 0 when known or not worth keeping. When the array
 * is full the farthest peer that is not in flight makes room, or the newcomer is dropped
 * when it is farther than all of them.
 */
static int lk_insert(struct dc_kad_lookup *l, const struct dc_peer_id *id, const struct kkey *k,
                     uint8_t depth)
{
    size_t pos = lk_lower_bound(l, k);

    if (pos < l->n && kkey_eq(&l->peers[pos].key, k))
        return 0;
    if (l->n == DC_KAD_LOOKUP_MAX_PEERS) {
        size_t victim = l->n;

        while (victim-- > 0)
            if (l->peers[victim].state != LK_INFLIGHT)
                break;
        if (victim >= l->n || victim < pos)
            return 0;
        memmove(&l->peers[victim], &l->peers[victim + 1],
                (l->n - victim - 1) * sizeof(l->peers[0]));
        l->n--;
    }
    memmove(&l->peers[pos + 1], &l->peers[pos], (l->n - pos) * sizeof(l->peers[0]));
    memset(&l->peers[pos], 0, sizeof(l->peers[0]));
    l->peers[pos].id = *id;
    l->peers[pos].key = *k;
    l->peers[pos].state = LK_NEW;
    l->peers[pos].depth = depth;
    l->n++;
    return 1;
}

int dc_kad_lookup_new(struct dc_kad *kad, const struct dc_kad_lookup_config *cfg, uint64_t now_ms,
                      struct dc_kad_lookup **out)
{
    struct dc_kad_lookup *l;
    const struct rt_entry *seeds[64];
    size_t n_seeds;
    int rc;

    *out = NULL;
    if ((cfg->type != DC_KAD_FIND_NODE && cfg->type != DC_KAD_GET_VALUE &&
         cfg->type != DC_KAD_GET_PROVIDERS) ||
        cfg->key == NULL || cfg->key_len == 0 || cfg->key_len > DC_KAD_MAX_KEY)
        return DC_EINVAL;
    l = dc_calloc(1, sizeof(*l));
    if (l == NULL)
        return DC_ENOMEM;
    l->kad = kad;
    l->cfg = *cfg;
    memcpy(l->key, cfg->key, cfg->key_len);
    l->cfg.key = l->key;
    kkey_of(l->key, cfg->key_len, &l->target);
    dc_kad_msg_init(&l->request);
    l->request.type = cfg->type;
    rc = dc_kad_msg_set_key(&l->request, l->key, cfg->key_len);
    if (rc < 0)
        goto err_free;
    l->peers = dc_malloc(DC_KAD_LOOKUP_MAX_PEERS * sizeof(*l->peers));
    if (l->peers == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    if (cfg->type == DC_KAD_GET_VALUE) {
        const uint8_t *v;
        size_t vlen;

        if (dc_kad_get_local(kad, l->key, cfg->key_len, now_ms, &v, &vlen) == 0) {
            l->best = dc_malloc(vlen > 0 ? vlen : 1);
            if (l->best == NULL) {
                rc = DC_ENOMEM;
                goto err_free;
            }
            memcpy(l->best, v, vlen);
            l->best_len = vlen;
            l->n_values = 1;
        }
    }
    n_seeds = closest_entries(kad, &l->target, seeds, kad->cfg.k);
    for (size_t i = 0; i < n_seeds; i++) {
        lk_seen_add(l, &seeds[i]->id);
        (void)lk_insert(l, &seeds[i]->id, &seeds[i]->key, 0);
    }
    *out = l;
    return 0;

err_free:
    dc_kad_lookup_free(l);
    return rc;
}

static struct lk_peer *lk_by_req(struct dc_kad_lookup *l, uint64_t req_id)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->peers[i].state == LK_INFLIGHT && l->peers[i].req_id == req_id)
            return &l->peers[i];
    return NULL;
}

static void lk_fail(struct dc_kad_lookup *l, struct lk_peer *p)
{
    p->state = LK_FAILED;
    l->inflight--;
    l->stats.failed++;
    (void)peer_failed_key(l->kad, &p->id, &p->key);
}

int dc_kad_lookup_on_failure(struct dc_kad_lookup *l, uint64_t req_id, uint64_t now_ms)
{
    struct lk_peer *p = lk_by_req(l, req_id);

    (void)now_ms;
    if (p == NULL || l->done)
        return DC_ENOENT;
    lk_fail(l, p);
    return 0;
}

static bool lk_quorum_reached(const struct dc_kad_lookup *l)
{
    if (l->cfg.type == DC_KAD_GET_VALUE)
        return l->cfg.quorum > 0 && l->n_values >= l->cfg.quorum;
    if (l->cfg.type == DC_KAD_GET_PROVIDERS)
        return l->cfg.max_providers > 0 && l->n_provs >= l->cfg.max_providers;
    return false;
}

int dc_kad_lookup_poll(struct dc_kad_lookup *l, uint64_t now_ms, struct dc_kad_action *a)
{
    size_t seen = 0;
    bool waiting = false;

    memset(a, 0, sizeof(*a));
    if (l->done_emitted)
        return 0;
    /* Deadlines first: a timed-out request is a failure, and the host resets its stream. */
    for (size_t i = 0; i < l->n; i++) {
        struct lk_peer *p = &l->peers[i];

        if (p->state == LK_INFLIGHT && (l->done || now_ms >= p->deadline_ms)) {
            a->type = DC_KAD_ACTION_CANCEL;
            a->req_id = p->req_id;
            a->peer = p->id;
            if (l->done) {
                /* Finished early (quorum): abandoned, not failed. */
                p->state = LK_NEW;
                l->inflight--;
            } else {
                lk_fail(l, p);
            }
            return 1;
        }
    }
    if (!l->done && lk_quorum_reached(l))
        l->done = true;
    /*
     * The k closest candidates that have not failed decide: all answered -> done; one not
     * yet asked -> ask it if alpha allows; otherwise wait for the ones in flight.
     */
    for (size_t i = 0; !l->done && i < l->n && seen < l->kad->cfg.k; i++) {
        struct lk_peer *p = &l->peers[i];

        if (p->state == LK_FAILED)
            continue;
        seen++;
        if (p->state == LK_INFLIGHT) {
            waiting = true;
        } else if (p->state == LK_NEW) {
            waiting = true;
            if (l->inflight >= l->kad->cfg.alpha)
                break;
            p->state = LK_INFLIGHT;
            p->req_id = l->kad->next_req_id++;
            p->deadline_ms = now_ms + l->kad->cfg.request_timeout_ms;
            l->inflight++;
            l->stats.sent++;
            a->type = DC_KAD_ACTION_SEND;
            a->req_id = p->req_id;
            a->peer = p->id;
            a->msg = &l->request;
            return 1;
        }
    }
    if (!waiting && !l->done)
        l->done = true;
    if (l->done && l->inflight > 0)
        return dc_kad_lookup_poll(l, now_ms, a); /* cancel the abandoned ones first */
    if (l->done) {
        l->done_emitted = true;
        a->type = DC_KAD_ACTION_DONE;
        return 1;
    }
    return 0;
}

static bool peer_in(const struct dc_peer_id *list, size_t n, const struct dc_peer_id *id)
{
    for (size_t i = 0; i < n; i++)
        if (dc_peer_id_equal(&list[i], id))
            return true;
    return false;
}

static int peer_push(struct dc_peer_id **list, size_t *n, const struct dc_peer_id *id)
{
    struct dc_peer_id *grown;

    if (*n >= DC_KAD_MAX_MSG_PEERS || peer_in(*list, *n, id))
        return 0;
    grown = dc_realloc(*list, (*n + 1) * sizeof(**list));
    if (grown == NULL)
        return DC_ENOMEM;
    *list = grown;
    grown[(*n)++] = *id;
    return 0;
}

/* A GET_VALUE response's record competes with the best value so far. */
static int lk_take_value(struct dc_kad_lookup *l, const struct lk_peer *from,
                         const struct dc_kad_msg *resp, uint64_t now_ms)
{
    const uint8_t *v = resp->record.value;
    size_t vlen = resp->record.value_len;
    uint8_t *copy;

    if (resp->record.key_len != l->cfg.key_len ||
        memcmp(resp->record.key, l->key, l->cfg.key_len) != 0)
        return 0; /* a record for another key proves nothing */
    if (dc_kad_validate(l->kad, l->key, l->cfg.key_len, v, vlen, now_ms) < 0)
        return 0;
    l->n_values++;
    if (l->best != NULL && l->best_len == vlen && memcmp(l->best, v, vlen) == 0)
        return peer_push(&l->best_peers, &l->n_best_peers, &from->id);
    if (l->best != NULL &&
        select_better(l->kad, l->key, l->cfg.key_len, l->best, l->best_len, v, vlen) == 0)
        return peer_push(&l->outdated, &l->n_outdated, &from->id);
    copy = dc_malloc(vlen > 0 ? vlen : 1);
    if (copy == NULL)
        return DC_ENOMEM;
    memcpy(copy, v, vlen);
    for (size_t i = 0; i < l->n_best_peers; i++)
        if (peer_push(&l->outdated, &l->n_outdated, &l->best_peers[i]) < 0)
            break; /* best effort: a correction fewer */
    l->n_best_peers = 0;
    dc_free(l->best);
    l->best = copy;
    l->best_len = vlen;
    return peer_push(&l->best_peers, &l->n_best_peers, &from->id);
}

static int lk_take_provider(struct dc_kad_lookup *l, const struct dc_kad_peer_info *p)
{
    struct dc_kad_peer_info *grown, *e;

    for (size_t i = 0; i < l->n_provs; i++)
        if (dc_peer_id_equal(&l->provs[i].id, &p->id))
            return 0;
    if (l->n_provs >= DC_KAD_LOOKUP_MAX_PROVIDERS)
        return 0;
    grown = dc_realloc(l->provs, (l->n_provs + 1) * sizeof(*grown));
    if (grown == NULL)
        return DC_ENOMEM;
    l->provs = grown;
    e = &grown[l->n_provs];
    *e = *p;
    e->addrs = NULL;
    if (p->n_addrs > 0) {
        e->addrs = dc_malloc(p->n_addrs * sizeof(*e->addrs));
        if (e->addrs == NULL)
            return DC_ENOMEM;
        memcpy(e->addrs, p->addrs, p->n_addrs * sizeof(*e->addrs));
    }
    l->n_provs++;
    return 0;
}

int dc_kad_lookup_on_response(struct dc_kad_lookup *l, uint64_t req_id,
                              const struct dc_kad_msg *resp, uint64_t now_ms)
{
    struct lk_peer *p = lk_by_req(l, req_id);
    struct dc_kad *kad = l->kad;
    struct lk_peer from;
    struct kkey best = {{0}};
    bool have_best, progress = false;
    int rc = 0;

    if (p == NULL || l->done)
        return DC_ENOENT;
    if (resp->type != l->cfg.type) {
        lk_fail(l, p);
        return DC_EPROTO;
    }
    p->state = LK_OK;
    l->inflight--;
    l->stats.answered++;
    from = *p; /* 'p' moves as candidates are inserted */
    (void)add_peer_key(kad, &from.id, &from.key, now_ms);

    /* The closest candidate that has not failed (the responder included): a response makes
     * progress when it names a peer closer than that. */
    have_best = false;
    for (size_t i = 0; i < l->n && !have_best; i++)
        if (l->peers[i].state != LK_FAILED) {
            best = l->peers[i].key;
            have_best = true;
        }
    for (size_t i = 0; i < resp->n_closer; i++) {
        const struct dc_kad_peer_info *c = &resp->closer[i];
        struct kkey k;

        if (kad->cfg.on_peer_learned != NULL)
            kad->cfg.on_peer_learned(kad->cfg.ud, c);
        if (c->id.len == 0 || dc_peer_id_equal(&c->id, &kad->cfg.self))
            continue;
        if (lk_seen_add(l, &c->id))
            continue;
        kkey_of_peer(&c->id, &k);
        if (lk_insert(l, &c->id, &k, (uint8_t)(from.depth < 254 ? from.depth + 1 : 255)) &&
            (!have_best || kkey_dist_cmp(&l->target, &k, &best) < 0)) {
            best = k;
            have_best = true;
            progress = true;
        }
    }
    if (progress && (uint32_t)from.depth + 1 > l->stats.hops)
        l->stats.hops = (uint32_t)from.depth + 1;
    if (l->cfg.type == DC_KAD_GET_VALUE && resp->has_record)
        rc = lk_take_value(l, &from, resp, now_ms);
    if (l->cfg.type == DC_KAD_GET_PROVIDERS)
        for (size_t i = 0; i < resp->n_providers && rc == 0; i++) {
            if (kad->cfg.on_peer_learned != NULL)
                kad->cfg.on_peer_learned(kad->cfg.ud, &resp->providers[i]);
            rc = lk_take_provider(l, &resp->providers[i]);
        }
    return rc;
}

int dc_kad_lookup_on_response_bytes(struct dc_kad_lookup *l, uint64_t req_id, const uint8_t *body,
                                    size_t len, uint64_t now_ms)
{
    struct dc_kad_msg m;
    int rc;

    if (lk_by_req(l, req_id) == NULL || l->done)
        return DC_ENOENT;
    rc = dc_kad_msg_decode(body, len, &m);
    if (rc < 0) {
        (void)dc_kad_lookup_on_failure(l, req_id, now_ms);
        return rc == DC_ENOMEM ? rc : DC_ECORRUPT;
    }
    rc = dc_kad_lookup_on_response(l, req_id, &m, now_ms);
    dc_kad_msg_cleanup(&m);
    return rc;
}

uint64_t dc_kad_lookup_next_deadline(const struct dc_kad_lookup *l)
{
    uint64_t d = UINT64_MAX;

    for (size_t i = 0; i < l->n; i++)
        if (l->peers[i].state == LK_INFLIGHT && l->peers[i].deadline_ms < d)
            d = l->peers[i].deadline_ms;
    return d;
}

bool dc_kad_lookup_done(const struct dc_kad_lookup *l)
{
    return l->done;
}

size_t dc_kad_lookup_closest(const struct dc_kad_lookup *l, struct dc_peer_id *out, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < l->n && n < max; i++)
        if (l->peers[i].state == LK_OK)
            out[n++] = l->peers[i].id;
    return n;
}

void dc_kad_lookup_stats(const struct dc_kad_lookup *l, struct dc_kad_lookup_stats *out)
{
    *out = l->stats;
}

int dc_kad_lookup_value(const struct dc_kad_lookup *l, const uint8_t **value, size_t *value_len,
                        uint32_t *n_found, struct dc_peer_id *outdated, size_t max_outdated,
                        size_t *n_outdated)
{
    size_t n = 0;

    if (outdated != NULL)
        for (; n < l->n_outdated && n < max_outdated; n++)
            outdated[n] = l->outdated[n];
    if (n_outdated != NULL)
        *n_outdated = n;
    if (n_found != NULL)
        *n_found = l->n_values;
    if (l->best == NULL)
        return DC_ENOENT;
    *value = l->best;
    *value_len = l->best_len;
    return 0;
}

const struct dc_kad_peer_info *dc_kad_lookup_providers(const struct dc_kad_lookup *l, size_t *n)
{
    *n = l->n_provs;
    return l->provs;
}

/* ============================================================================================
 * Serving requests
 * ========================================================================================== */

/* RFC 3339 UTC text of a Unix time in ms, for Record.timeReceived. */
static void format_time(uint64_t ms, char out[48])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    if (gmtime_r(&secs, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    snprintf(out, 48, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
}

/* Fills 'e' for peer 'id' with the addresses the host knows; e->addrs is heap. */
static int info_for(struct dc_kad *kad, const struct dc_peer_id *id, struct dc_kad_peer_info *e)
{
    struct dc_multiaddr tmp[DC_KAD_MAX_PEER_ADDRS];
    size_t n = 0;

    memset(e, 0, sizeof(*e));
    e->id = *id;
    if (kad->cfg.peer_addrs != NULL)
        n = kad->cfg.peer_addrs(kad->cfg.ud, id, tmp, DC_KAD_MAX_PEER_ADDRS);
    if (n > DC_KAD_MAX_PEER_ADDRS)
        n = DC_KAD_MAX_PEER_ADDRS;
    if (n > 0) {
        e->addrs = dc_malloc(n * sizeof(*e->addrs));
        if (e->addrs == NULL)
            return DC_ENOMEM;
        memcpy(e->addrs, tmp, n * sizeof(*e->addrs));
        e->n_addrs = n;
    }
    return 0;
}

/* closerPeers: the k table peers closest to SHA-256(key), without the requester. */
static int fill_closer(struct dc_kad *kad, struct dc_kad_msg *resp, const uint8_t *key,
                       size_t key_len, const struct dc_peer_id *from)
{
    const struct rt_entry *ents[65];
    struct kkey t;
    size_t n;

    if (key_len == kad->cfg.self.len && memcmp(key, kad->cfg.self.bytes, key_len) == 0) {
        resp->closer = dc_calloc(1, sizeof(*resp->closer));
        if (resp->closer == NULL)
            return DC_ENOMEM;
        resp->n_closer = 1;
        return info_for(kad, &kad->cfg.self, &resp->closer[0]);
    }
    kkey_of(key, key_len, &t);
    n = closest_entries(kad, &t, ents, kad->cfg.k + 1);
    if (n == 0)
        return 0;
    resp->closer = dc_calloc(n, sizeof(*resp->closer));
    if (resp->closer == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < n && resp->n_closer < kad->cfg.k; i++) {
        if (from != NULL && dc_peer_id_equal(&ents[i]->id, from))
            continue;
        /* Count the entry before filling it, so cleanup frees its addresses on failure. */
        if (info_for(kad, &ents[i]->id, &resp->closer[resp->n_closer++]) < 0)
            return DC_ENOMEM;
    }
    return 0;
}

static int fill_providers(struct dc_kad *kad, struct dc_kad_msg *resp, const uint8_t *key,
                          size_t key_len, uint64_t now_ms)
{
    const struct pkey *pk = pkey_find(kad, key, key_len, store_hash(kad, key, key_len), NULL);
    size_t n = 0;

    if (pk == NULL)
        return 0;
    for (size_t i = 0; i < pk->n; i++)
        if (pk->provs[i].expires_ms > now_ms)
            n++;
    if (n > DC_KAD_MAX_MSG_PEERS)
        n = DC_KAD_MAX_MSG_PEERS;
    if (n == 0)
        return 0;
    resp->providers = dc_calloc(n, sizeof(*resp->providers));
    if (resp->providers == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < pk->n && resp->n_providers < n; i++) {
        const struct prov *pv = &pk->provs[i];
        struct dc_kad_peer_info *e;
        int na;

        if (pv->expires_ms <= now_ms)
            continue;
        e = &resp->providers[resp->n_providers++];
        if (pv->addrs_len == 0) {
            if (info_for(kad, &pv->id, e) < 0)
                return DC_ENOMEM;
            continue;
        }
        e->id = pv->id;
        na = addrs_unpack(pv->addrs, pv->addrs_len, NULL, DC_KAD_MAX_PEER_ADDRS);
        if (na <= 0)
            continue; /* cannot happen: we packed it */
        e->addrs = dc_malloc((size_t)na * sizeof(*e->addrs));
        if (e->addrs == NULL)
            return DC_ENOMEM;
        if (addrs_unpack(pv->addrs, pv->addrs_len, e->addrs, (size_t)na) == na)
            e->n_addrs = (size_t)na;
    }
    return 0;
}

int dc_kad_handle_request(struct dc_kad *kad, const struct dc_peer_id *from,
                          const struct dc_kad_msg *req, uint64_t now_ms, struct dc_kad_msg *resp)
{
    int rc;

    dc_kad_msg_init(resp);
    if (kad->cfg.client_mode)
        return DC_ESTATE;
    resp->type = req->type;
    if (req->type == DC_KAD_PING)
        return 0;
    if (req->key_len == 0)
        return DC_EPROTO;
    switch (req->type) {
    case DC_KAD_FIND_NODE:
        rc = dc_kad_msg_set_key(resp, req->key, req->key_len);
        if (rc == 0)
            rc = fill_closer(kad, resp, req->key, req->key_len, from);
        return rc;
    case DC_KAD_GET_VALUE: {
        const struct rec *r;

        rc = dc_kad_msg_set_key(resp, req->key, req->key_len);
        if (rc < 0)
            return rc;
        r = rec_find(kad, req->key, req->key_len, store_hash(kad, req->key, req->key_len), NULL);
        if (r != NULL && !rec_expired(kad, r, now_ms)) {
            char when[48];

            format_time(r->received_ms, when);
            rc = dc_kad_msg_set_record(resp, r->key, r->key_len, r->value, r->value_len, when);
            if (rc < 0)
                return rc;
        }
        return fill_closer(kad, resp, req->key, req->key_len, from);
    }
    case DC_KAD_PUT_VALUE:
        if (!req->has_record || req->record.key_len != req->key_len ||
            memcmp(req->record.key, req->key, req->key_len) != 0)
            return DC_EPROTO;
        rc = dc_kad_put_local(kad, req->key, req->key_len, req->record.value, req->record.value_len,
                              now_ms);
        if (rc < 0 && rc != DC_EEXIST)
            return rc;
        /* The response echoes the request (a better stored record is kept silently). */
        rc = dc_kad_msg_set_key(resp, req->key, req->key_len);
        if (rc == 0)
            rc = dc_kad_msg_set_record(resp, req->record.key, req->record.key_len,
                                       req->record.value, req->record.value_len, NULL);
        return rc;
    case DC_KAD_GET_PROVIDERS:
        rc = dc_kad_msg_set_key(resp, req->key, req->key_len);
        if (rc == 0)
            rc = fill_providers(kad, resp, req->key, req->key_len, now_ms);
        if (rc == 0)
            rc = fill_closer(kad, resp, req->key, req->key_len, from);
        return rc;
    case DC_KAD_ADD_PROVIDER:
        /* Only the sender may announce itself (spec); other entries are ignored. */
        for (size_t i = 0; i < req->n_providers; i++) {
            const struct dc_kad_peer_info *p = &req->providers[i];

            if (from == NULL || !dc_peer_id_equal(&p->id, from))
                continue;
            rc = dc_kad_add_provider_local(kad, req->key, req->key_len, p, now_ms);
            if (rc < 0)
                return rc;
        }
        return DC_KAD_NO_RESPONSE;
    default:
        return DC_EPROTO;
    }
}

int dc_kad_handle_request_bytes(struct dc_kad *kad, const struct dc_peer_id *from,
                                const uint8_t *body, size_t len, uint64_t now_ms,
                                struct dc_buf *out)
{
    struct dc_kad_msg req, resp;
    int rc;

    if (kad->cfg.client_mode)
        return DC_ESTATE;
    rc = dc_kad_msg_decode(body, len, &req);
    if (rc < 0)
        return rc;
    rc = dc_kad_handle_request(kad, from, &req, now_ms, &resp);
    if (rc == 0)
        rc = dc_kad_msg_encode(&resp, out);
    dc_kad_msg_cleanup(&resp);
    dc_kad_msg_cleanup(&req);
    return rc;
}

/* ============================================================================================
 * Persistence
 *
 * Version 1 layout, all integers unsigned varints, all times absolute Unix milliseconds:
 *   "DCKAD" version=1
 *   n_records  { key_len key value_len value received_ms }*
 *   n_pkeys    { key_len key n_providers { id_len id expires_ms addrs_len addrs }* }*
 * where 'addrs' is (varint length, binary multiaddr)*. A newer version is refused rather
 * than misread; a version bump must keep a loader for the old one.
 * ========================================================================================== */

static int put_varint(struct dc_buf *b, uint64_t v)
{
    uint8_t tmp[DC_VARINT_MAX_LEN];

    return dc_buf_append(b, tmp, dc_varint_encode(v, tmp));
}

static int put_bytes(struct dc_buf *b, const void *p, size_t n)
{
    int rc = put_varint(b, n);

    return rc < 0 ? rc : dc_buf_append(b, p, n);
}

int dc_kad_store_save(const struct dc_kad *kad, struct dc_buf *out)
{
    size_t start = out->len;
    int rc;

    rc = dc_buf_append(out, PERSIST_MAGIC, 5);
    if (rc == 0)
        rc = put_varint(out, PERSIST_VERSION);
    if (rc == 0)
        rc = put_varint(out, kad->n_recs);
    for (size_t b = 0; rc == 0 && kad->recs != NULL && b < STORE_BUCKETS; b++)
        for (const struct rec *r = kad->recs[b]; rc == 0 && r != NULL; r = r->next) {
            rc = put_bytes(out, r->key, r->key_len);
            if (rc == 0)
                rc = put_bytes(out, r->value, r->value_len);
            if (rc == 0)
                rc = put_varint(out, r->received_ms);
        }
    if (rc == 0)
        rc = put_varint(out, kad->n_pkeys);
    for (size_t b = 0; rc == 0 && kad->pkeys != NULL && b < STORE_BUCKETS; b++)
        for (const struct pkey *pk = kad->pkeys[b]; rc == 0 && pk != NULL; pk = pk->next) {
            rc = put_bytes(out, pk->key, pk->key_len);
            if (rc == 0)
                rc = put_varint(out, pk->n);
            for (size_t i = 0; rc == 0 && i < pk->n; i++) {
                rc = put_bytes(out, pk->provs[i].id.bytes, pk->provs[i].id.len);
                if (rc == 0)
                    rc = put_varint(out, pk->provs[i].expires_ms);
                if (rc == 0)
                    rc = put_bytes(out, pk->provs[i].addrs, pk->provs[i].addrs_len);
            }
        }
    if (rc < 0)
        out->len = start;
    return rc;
}

struct rd {
    const uint8_t *p;
    size_t len, off;
};

static int rd_varint(struct rd *r, uint64_t *v)
{
    size_t used;

    if (dc_varint_decode(r->p + r->off, r->len - r->off, v, &used) < 0)
        return DC_ECORRUPT;
    r->off += used;
    return 0;
}

static int rd_bytes(struct rd *r, size_t max, const uint8_t **p, size_t *n)
{
    uint64_t v;

    if (rd_varint(r, &v) < 0 || v > max || v > r->len - r->off)
        return DC_ECORRUPT;
    *p = r->p + r->off;
    *n = (size_t)v;
    r->off += (size_t)v;
    return 0;
}

/* One pass over the blob: checks everything when 'kad' is NULL, applies it otherwise. */
static int store_load_pass(struct dc_kad *kad, const uint8_t *p, size_t len, uint64_t now_ms)
{
    struct rd r = {p + 5, len - 5, 0};
    uint64_t version, n, m, t;
    const uint8_t *k, *v;
    size_t kl, vl;
    int rc;

    if (rd_varint(&r, &version) < 0)
        return DC_ECORRUPT;
    if (version != PERSIST_VERSION)
        return DC_EUNSUPPORTED;
    if (rd_varint(&r, &n) < 0)
        return DC_ECORRUPT;
    for (uint64_t i = 0; i < n; i++) {
        if (rd_bytes(&r, DC_KAD_MAX_KEY, &k, &kl) < 0 || kl == 0 ||
            rd_bytes(&r, DC_KAD_MAX_VALUE, &v, &vl) < 0 || rd_varint(&r, &t) < 0)
            return DC_ECORRUPT;
        if (t > now_ms)
            t = now_ms; /* nothing was received in the future */
        if (kad == NULL || now_ms - t >= kad->cfg.record_ttl_ms ||
            dc_kad_validate(kad, k, kl, v, vl, now_ms) < 0)
            continue;
        rc = rec_store(kad, k, kl, v, vl, t, now_ms);
        if (rc == DC_ENOMEM)
            return rc;
    }
    if (rd_varint(&r, &n) < 0)
        return DC_ECORRUPT;
    for (uint64_t i = 0; i < n; i++) {
        if (rd_bytes(&r, DC_KAD_MAX_KEY, &k, &kl) < 0 || kl == 0 || rd_varint(&r, &m) < 0)
            return DC_ECORRUPT;
        for (uint64_t j = 0; j < m; j++) {
            struct dc_multiaddr addrs[DC_KAD_MAX_PEER_ADDRS];
            struct dc_peer_id id;
            int na;

            if (rd_bytes(&r, DC_PEER_ID_MAX, &v, &vl) < 0 ||
                dc_peer_id_from_bytes(v, vl, &id) < 0 || rd_varint(&r, &t) < 0 ||
                rd_bytes(&r, SIZE_MAX, &v, &vl) < 0)
                return DC_ECORRUPT;
            na = addrs_unpack(v, vl, addrs, DC_KAD_MAX_PEER_ADDRS);
            if (na < 0)
                return DC_ECORRUPT;
            if (kad == NULL || t <= now_ms)
                continue;
            rc = prov_store(kad, k, kl, &id, addrs, (size_t)na, t);
            if (rc == DC_ENOMEM)
                return rc;
        }
    }
    return r.off == r.len ? 0 : DC_ECORRUPT;
}

int dc_kad_store_load(struct dc_kad *kad, const uint8_t *p, size_t len, uint64_t now_ms)
{
    int rc;

    if (len < 5 || memcmp(p, PERSIST_MAGIC, 5) != 0)
        return DC_ECORRUPT;
    rc = store_load_pass(NULL, p, len, now_ms);
    if (rc < 0)
        return rc;
    return store_load_pass(kad, p, len, now_ms);
}

/* SPDX-License-Identifier: MIT */
/*
 * dht.c - bench/dht: an in-process Kademlia simulator. It builds networks of N nodes (1,000
 * and 10,000 by default) from the real routing-table, lookup and request-handler code of
 * src/p2p/kad.c, joined by a simulated transport: a request is handed to the destination's
 * dc_kad_handle_request() after a random latency on a virtual clock, and optionally lost (it
 * then times out like a real one). Nothing but the transport is simulated.
 *
 * Each network is bootstrapped the way a node joins: it learns three random nodes already in
 * the network, looks itself up, and - once all have joined - refreshes its buckets that are
 * not full (a lookup per bucket for a key in that bucket), as periodic refresh would. Servers
 * add every requester to their table, as a host does once identify shows that the peer
 * speaks the protocol. Then random nodes look up random keys; each lookup is compared with
 * the ground truth (all nodes sorted by distance to the key) and its hops are counted (a hop
 * is a round of the lookup that learned a closer peer; see dc_kad_lookup_stats).
 *
 * Usage: dht [--nodes N] [--lookups Q] [--fail PCT] [--seed S] [--wire] [--json]
 *   --nodes   run one network size (default: 1000 and 10000)
 *   --lookups random-key lookups per network (default 1000)
 *   --fail    also run each size with PCT% of requests lost (default 0: lossless only)
 *   --wire    pass every request and response through the protobuf codec
 *   --json    print one JSON object instead of the table
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "p2p/kad.h"

#define JOIN_CONTACTS 3
#define MAX_PENDING   32

struct node {
    struct dc_kad *kad;
    struct dc_peer_id id;
    uint8_t key[DC_KAD_KEY_LEN];
};

struct sim {
    struct node *nodes;
    size_t n;
    size_t *index; /* open addressing: peer id -> node + 1 */
    size_t index_cap;
    uint64_t rng;
    uint64_t now_ms;
    double fail; /* probability that a request is lost */
    bool wire;
    uint64_t rpcs;
    struct dc_kad_refresh_table *refresh;
};

struct run_result {
    size_t n;
    double fail_pct;
    size_t lookups;
    double hops_p50, hops_p99, hops_mean;
    unsigned target;
    double exact;
    double rpcs_per_lookup;
    double build_s, lookup_s;
    size_t table_mean;
    double rpcs_per_node; /* bootstrap requests per node */
};

static uint64_t rnd(struct sim *s)
{
    /* splitmix64: reproducible from --seed */
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd01(struct sim *s)
{
    return (double)(rnd(s) >> 11) / 9007199254740992.0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t id_hash(const struct dc_peer_id *id)
{
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < id->len; i++)
        h = (h ^ id->bytes[i]) * 1099511628211ull;
    return h;
}

static struct node *find_node(const struct sim *s, const struct dc_peer_id *id)
{
    size_t i = (size_t)(id_hash(id) & (s->index_cap - 1));

    while (s->index[i] != 0) {
        struct node *nd = &s->nodes[s->index[i] - 1];

        if (dc_peer_id_equal(&nd->id, id))
            return nd;
        i = (i + 1) & (s->index_cap - 1);
    }
    return NULL;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "dht: %s: %s\n", what, dc_strerror(rc));
    exit(1);
}

static void sim_free(struct sim *s)
{
    for (size_t i = 0; i < s->n; i++)
        dc_kad_free(s->nodes[i].kad);
    free(s->nodes);
    free(s->index);
}

/* Answers the routing tables' liveness checks: every simulated node stays up. */
static void drain_pings(struct sim *s, struct node *nd)
{
    struct dc_kad_action a;

    while (dc_kad_poll(nd->kad, &a) == 1)
        if (a.type == DC_KAD_ACTION_PING)
            (void)dc_kad_ping_result(nd->kad, &a.peer, find_node(s, &a.peer) != NULL, s->now_ms);
}

/* Delivers request 'msg' from 'from' to 'to' and hands the response to the lookup. */
static void deliver(struct sim *s, struct node *from, struct node *to, struct dc_kad_lookup *l,
                    uint64_t req_id, const struct dc_kad_msg *msg)
{
    int rc;

    s->rpcs++;
    /* The server's host has identified the requester as a DHT server. */
    rc = dc_kad_add_peer(to->kad, &from->id, s->now_ms);
    if (rc < 0)
        die("add_peer", rc);
    if (s->wire) {
        struct dc_buf req, resp;
        const uint8_t *body;
        size_t body_len, used;

        dc_buf_init(&req, 0);
        dc_buf_init(&resp, 0);
        rc = dc_kad_msg_encode(msg, &req);
        if (rc < 0)
            die("encode", rc);
        rc = dc_kad_frame_split(req.data, req.len, &body, &body_len, &used);
        if (rc == 0)
            rc = dc_kad_handle_request_bytes(to->kad, &from->id, body, body_len, s->now_ms, &resp);
        if (rc < 0)
            die("handle", rc);
        rc = dc_kad_frame_split(resp.data, resp.len, &body, &body_len, &used);
        if (rc == 0)
            rc = dc_kad_lookup_on_response_bytes(l, req_id, body, body_len, s->now_ms);
        if (rc < 0)
            die("response", rc);
        dc_buf_cleanup(&req);
        dc_buf_cleanup(&resp);
    } else {
        struct dc_kad_msg resp;

        rc = dc_kad_handle_request(to->kad, &from->id, msg, s->now_ms, &resp);
        if (rc < 0)
            die("handle", rc);
        rc = dc_kad_lookup_on_response(l, req_id, &resp, s->now_ms);
        if (rc < 0)
            die("response", rc);
        dc_kad_msg_cleanup(&resp);
    }
    drain_pings(s, to);
}

struct pending {
    uint64_t req_id;
    struct node *to;
    const struct dc_kad_msg *msg; /* the lookup's request, borrowed */
    uint64_t at_ms;
    bool lost;
};

/*
 * Runs one lookup from 'origin' to completion on the virtual clock. Returns the finished
 * lookup (the caller frees it).
 */
static struct dc_kad_lookup *run_lookup(struct sim *s, struct node *origin,
                                        enum dc_kad_msg_type type, const uint8_t *key,
                                        size_t key_len)
{
    struct dc_kad_lookup_config cfg = {.type = type, .key = key, .key_len = key_len};
    struct pending pend[MAX_PENDING];
    size_t n_pend = 0;
    struct dc_kad_lookup *l;
    struct dc_kad_action a;
    int rc = dc_kad_lookup_new(origin->kad, &cfg, s->now_ms, &l);

    if (rc < 0)
        die("lookup", rc);
    for (;;) {
        uint64_t next;
        size_t pick = SIZE_MAX;

        while (dc_kad_lookup_poll(l, s->now_ms, &a) == 1) {
            if (a.type == DC_KAD_ACTION_DONE) {
                drain_pings(s, origin);
                return l;
            }
            if (a.type == DC_KAD_ACTION_CANCEL) {
                for (size_t i = 0; i < n_pend; i++)
                    if (pend[i].req_id == a.req_id)
                        pend[i--] = pend[--n_pend];
                continue;
            }
            if (n_pend == MAX_PENDING)
                die("pending", DC_ELIMIT);
            pend[n_pend].req_id = a.req_id;
            pend[n_pend].to = find_node(s, &a.peer);
            pend[n_pend].msg = a.msg;
            pend[n_pend].at_ms = s->now_ms + 10 + rnd(s) % 90;
            pend[n_pend].lost = pend[n_pend].to == NULL || rnd01(s) < s->fail;
            n_pend++;
        }
        drain_pings(s, origin);
        next = dc_kad_lookup_next_deadline(l);
        for (size_t i = 0; i < n_pend; i++)
            if (!pend[i].lost && pend[i].at_ms <= next) {
                next = pend[i].at_ms;
                pick = i;
            }
        if (next == UINT64_MAX)
            die("lookup stalled", DC_ESTATE);
        if (next > s->now_ms)
            s->now_ms = next;
        if (pick != SIZE_MAX) {
            struct pending p = pend[pick];

            pend[pick] = pend[--n_pend];
            deliver(s, origin, p.to, l, p.req_id, p.msg);
        }
    }
}

static void make_peer_id(struct sim *s, struct dc_peer_id *id)
{
    /* The shape of an Ed25519 PeerId: identity multihash of a PublicKey protobuf. */
    static const uint8_t head[6] = {0x00, 0x24, 0x08, 0x01, 0x12, 0x20};

    memcpy(id->bytes, head, sizeof(head));
    for (size_t i = 0; i < 32; i += 8) {
        uint64_t v = rnd(s);

        memcpy(id->bytes + 6 + i, &v, 8);
    }
    id->len = 38;
}

static void sim_build(struct sim *s, size_t n)
{
    s->n = n;
    s->nodes = calloc(n, sizeof(*s->nodes));
    for (s->index_cap = 1; s->index_cap < 2 * n; s->index_cap *= 2)
        ;
    s->index = calloc(s->index_cap, sizeof(*s->index));
    if (s->nodes == NULL || s->index == NULL)
        die("calloc", DC_ENOMEM);
    for (size_t i = 0; i < n; i++) {
        struct node *nd = &s->nodes[i];
        struct dc_kad_config cfg;
        size_t slot;
        int rc;

        do {
            make_peer_id(s, &nd->id);
        } while (find_node(s, &nd->id) != NULL);
        dc_kad_hash(nd->id.bytes, nd->id.len, nd->key);
        dc_kad_config_default(&cfg, &nd->id);
        rc = dc_kad_new(&cfg, &nd->kad);
        if (rc < 0)
            die("dc_kad_new", rc);
        slot = (size_t)(id_hash(&nd->id) & (s->index_cap - 1));
        while (s->index[slot] != 0)
            slot = (slot + 1) & (s->index_cap - 1);
        s->index[slot] = i + 1;
    }
}

/* Joins every node in turn, then refreshes every node's buckets that are not full. */
static void sim_bootstrap(struct sim *s)
{
    for (size_t i = 0; i < s->n; i++) {
        struct node *nd = &s->nodes[i];

        for (size_t j = 0; j < JOIN_CONTACTS && j < i; j++) {
            int rc = dc_kad_add_peer(nd->kad, &s->nodes[rnd(s) % i].id, s->now_ms);

            if (rc < 0)
                die("add_peer", rc);
        }
        if (i > 0)
            dc_kad_lookup_free(run_lookup(s, nd, DC_KAD_FIND_NODE, nd->id.bytes, nd->id.len));
    }
    for (size_t i = 0; i < s->n; i++) {
        struct node *nd = &s->nodes[i];
        unsigned top = 0;

        for (unsigned c = 0; c < DC_KAD_KEY_BITS; c++)
            if (dc_kad_bucket_size(nd->kad, c) > 0)
                top = c;
        /* Beyond the 16 bits the refresh table covers a key costs ~2^(c+1) hashes; those
         * deep buckets hold the node's nearest neighbours, which its self-lookup found. */
        for (unsigned c = 0; c <= top && c < 16; c++) {
            struct dc_peer_id target;

            if (dc_kad_bucket_size(nd->kad, c) >= DC_KAD_K)
                continue;
            if (dc_kad_refresh_key(nd->kad, s->refresh, c, rnd(s), &target) < 0)
                continue; /* too deep to target; the self-lookup covers it */
            dc_kad_lookup_free(run_lookup(s, nd, DC_KAD_FIND_NODE, target.bytes, target.len));
        }
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Ground truth: the k nodes closest to 'target', 'origin' excluded, closest first. */
static size_t true_closest(const struct sim *s, const struct node *origin,
                           const uint8_t target[DC_KAD_KEY_LEN], const struct node **out)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n; i++) {
        const struct node *nd = &s->nodes[i];
        size_t j;

        if (nd == origin)
            continue;
        if (n == DC_KAD_K && dc_kad_distance_cmp(target, nd->key, out[n - 1]->key) >= 0)
            continue;
        j = n < DC_KAD_K ? n++ : n - 1;
        while (j > 0 && dc_kad_distance_cmp(target, nd->key, out[j - 1]->key) < 0) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = nd;
    }
    return n;
}

static void run(size_t n, size_t lookups, double fail_pct, uint64_t seed, bool wire,
                struct dc_kad_refresh_table *refresh, struct run_result *res)
{
    struct sim s = {.rng = seed, .fail = fail_pct / 100.0, .wire = wire, .refresh = refresh};
    uint32_t *hops = calloc(lookups, sizeof(*hops));
    size_t exact = 0, table = 0;
    uint64_t rpcs0;
    double t0 = now_s(), t1, hsum = 0;

    if (hops == NULL)
        die("calloc", DC_ENOMEM);
    sim_build(&s, n);
    sim_bootstrap(&s);
    t1 = now_s();
    rpcs0 = s.rpcs;
    res->rpcs_per_node = (double)s.rpcs / (double)n;
    for (size_t q = 0; q < lookups; q++) {
        struct node *origin = &s.nodes[rnd(&s) % n];
        const struct node *truth[DC_KAD_K];
        struct dc_peer_id got[DC_KAD_K];
        struct dc_peer_id key;
        uint8_t target[DC_KAD_KEY_LEN];
        struct dc_kad_lookup_stats st;
        struct dc_kad_lookup *l;
        size_t nt, ng;
        bool same;

        make_peer_id(&s, &key);
        dc_kad_hash(key.bytes, key.len, target);
        l = run_lookup(&s, origin, DC_KAD_FIND_NODE, key.bytes, key.len);
        dc_kad_lookup_stats(l, &st);
        hops[q] = st.hops;
        hsum += st.hops;
        ng = dc_kad_lookup_closest(l, got, DC_KAD_K);
        nt = true_closest(&s, origin, target, truth);
        same = ng == nt;
        for (size_t i = 0; same && i < nt; i++)
            same = dc_peer_id_equal(&got[i], &truth[i]->id);
        exact += same;
        dc_kad_lookup_free(l);
    }
    for (size_t i = 0; i < n; i++)
        table += dc_kad_table_size(s.nodes[i].kad);
    qsort(hops, lookups, sizeof(*hops), cmp_u32);
    res->n = n;
    res->fail_pct = fail_pct;
    res->lookups = lookups;
    res->hops_p50 = hops[(lookups - 1) / 2];
    res->hops_p99 = hops[(size_t)ceil(0.99 * (double)lookups) - 1];
    res->hops_mean = hsum / (double)lookups;
    res->target = (unsigned)ceil(log2((double)n) / 2.0) + 2;
    res->exact = (double)exact / (double)lookups;
    res->rpcs_per_lookup = (double)(s.rpcs - rpcs0) / (double)lookups;
    res->build_s = t1 - t0;
    res->lookup_s = now_s() - t1;
    res->table_mean = table / n;
    free(hops);
    sim_free(&s);
}

int main(int argc, char **argv)
{
    size_t sizes[2] = {1000, 10000}, n_sizes = 2, lookups = 1000;
    double fail = 0.0;
    uint64_t seed = 42;
    bool json = false, wire = false;
    struct run_result res[8];
    size_t n_res = 0;
    struct dc_kad_refresh_table *refresh;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--nodes") == 0 && i + 1 < argc) {
            sizes[0] = strtoull(argv[++i], NULL, 10);
            n_sizes = 1;
        } else if (strcmp(argv[i], "--lookups") == 0 && i + 1 < argc) {
            lookups = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--fail") == 0 && i + 1 < argc) {
            fail = strtod(argv[++i], NULL);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--wire") == 0) {
            wire = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "usage: dht [--nodes N] [--lookups Q] [--fail PCT] [--seed S] [--wire] "
                            "[--json]\n");
            return 2;
        }
    }
    if (lookups == 0 || sizes[0] < 2 || fail < 0 || fail >= 100) {
        fprintf(stderr, "dht: need --lookups >= 1, --nodes >= 2, 0 <= --fail < 100\n");
        return 2;
    }
    rc = dc_kad_refresh_table_new(&refresh);
    if (rc < 0)
        die("refresh table", rc);
    for (size_t i = 0; i < n_sizes; i++) {
        run(sizes[i], lookups, 0.0, seed, wire, refresh, &res[n_res++]);
        if (fail > 0)
            run(sizes[i], lookups, fail, seed, wire, refresh, &res[n_res++]);
    }
    dc_kad_refresh_table_free(refresh);

    if (json) {
        printf("{\"bench\":\"dht\",\"k\":%d,\"alpha\":%d,\"seed\":%llu,\"wire\":%s,\"runs\":[",
               DC_KAD_K, DC_KAD_ALPHA, (unsigned long long)seed, wire ? "true" : "false");
        for (size_t i = 0; i < n_res; i++) {
            const struct run_result *r = &res[i];

            printf("%s{\"nodes\":%zu,\"fail_pct\":%.2f,\"lookups\":%zu,\"hops_p50\":%.0f,"
                   "\"hops_p99\":%.0f,\"hops_mean\":%.3f,\"hops_target\":%u,\"exact\":%.4f,"
                   "\"rpcs_per_lookup\":%.2f,\"table_mean\":%zu,\"bootstrap_rpcs_per_node\":%.1f,"
                   "\"bootstrap_s\":%.3f,"
                   "\"lookups_s\":%.3f,\"pass\":%s}",
                   i > 0 ? "," : "", r->n, r->fail_pct, r->lookups, r->hops_p50, r->hops_p99,
                   r->hops_mean, r->target, r->exact, r->rpcs_per_lookup, r->table_mean,
                   r->rpcs_per_node, r->build_s, r->lookup_s,
                   r->hops_p99 <= r->target && (r->fail_pct > 0 || r->exact >= 0.99) ? "true"
                                                                                     : "false");
        }
        printf("]}\n");
        return 0;
    }
    printf("bench/dht: Kademlia simulator, k=%d alpha=%d, seed %llu%s\n", DC_KAD_K, DC_KAD_ALPHA,
           (unsigned long long)seed, wire ? ", through the wire codec" : "");
    printf("%7s %5s %7s %8s %8s %8s %5s %7s %8s %5s %8s %7s %8s\n", "nodes", "loss%", "lookups",
           "hops p50", "hops p99", "p99 goal", "mean", "exact%", "rpc/look", "table", "rpc/join",
           "build s", "lookup s");
    for (size_t i = 0; i < n_res; i++) {
        const struct run_result *r = &res[i];

        printf("%7zu %5.1f %7zu %8.0f %8.0f %8u %5.2f %7.2f %8.1f %5zu %8.1f %7.2f %8.2f\n", r->n,
               r->fail_pct, r->lookups, r->hops_p50, r->hops_p99, r->target, r->hops_mean,
               100.0 * r->exact, r->rpcs_per_lookup, r->table_mean, r->rpcs_per_node, r->build_s,
               r->lookup_s);
    }
    printf("goals: p99 hops <= ceil(log2(N)/2)+2 and >= 99%% exact (lossless runs). Lossy runs use "
           "the same ground truth,\nso a lost request to one of the true k closest makes that "
           "lookup inexact.\n");
    return 0;
}

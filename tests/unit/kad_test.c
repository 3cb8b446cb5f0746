/* SPDX-License-Identifier: MIT */
/*
 * kad_test.c - unit tests of the Kademlia core (src/p2p/kad.c, kad_msg.c): key-space
 * arithmetic, the routing table (insertion, replacement cache, ping-before-evict, failures,
 * closest-peer queries checked against brute force), the lookup state machine driven step by
 * step over a small in-memory network (convergence to the true k closest, the alpha limit,
 * timeouts, failures, GET_VALUE and GET_PROVIDERS), the request handler for every message
 * type, the /pk validator and a pluggable one, provider expiry on a fake clock, store
 * serialisation, size limits, the codec, and allocation-failure loops on constructors and
 * parsers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/kad.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static uint64_t rng_state = 1;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A random Ed25519-shaped PeerId (identity multihash of a PublicKey protobuf). */
static void rand_peer(struct dc_peer_id *id)
{
    static const uint8_t head[6] = {0x00, 0x24, 0x08, 0x01, 0x12, 0x20};

    memset(id, 0, sizeof(*id));
    memcpy(id->bytes, head, sizeof(head));
    for (size_t i = 0; i < 32; i++)
        id->bytes[6 + i] = (uint8_t)rnd();
    id->len = 38;
}

static void peer_key(const struct dc_peer_id *id, uint8_t k[DC_KAD_KEY_LEN])
{
    dc_kad_hash(id->bytes, id->len, k);
}

/* A peer whose key shares exactly 'cpl' bits with 'self' (by search; cpl must be small). */
static void peer_in_bucket(const struct dc_peer_id *self, unsigned cpl, struct dc_peer_id *out)
{
    uint8_t a[DC_KAD_KEY_LEN], b[DC_KAD_KEY_LEN];

    peer_key(self, a);
    do {
        rand_peer(out);
        peer_key(out, b);
    } while (dc_kad_common_prefix(a, b) != cpl);
}

static struct dc_kad *new_kad(const struct dc_peer_id *self, void (*tweak)(struct dc_kad_config *))
{
    struct dc_kad_config cfg;
    struct dc_kad *kad;

    dc_kad_config_default(&cfg, self);
    if (tweak != NULL)
        tweak(&cfg);
    assert_int_equal(dc_kad_new(&cfg, &kad), 0);
    return kad;
}

/* ---- keys ------------------------------------------------------------------------------- */

static void test_distance(void **state)
{
    uint8_t a[32] = {0}, b[32] = {0}, t[32] = {0};

    (void)state;
    assert_int_equal(dc_kad_common_prefix(a, b), 256);
    b[0] = 0x80;
    assert_int_equal(dc_kad_common_prefix(a, b), 0);
    b[0] = 0x01;
    assert_int_equal(dc_kad_common_prefix(a, b), 7);
    b[0] = 0;
    b[31] = 1;
    assert_int_equal(dc_kad_common_prefix(a, b), 255);
    b[31] = 0;
    b[8] = 0x10; /* crosses the 64-bit word boundary */
    assert_int_equal(dc_kad_common_prefix(a, b), 67);

    /* XOR distance: a = 0..., b = 0x10 at byte 8; target 0x18 at byte 8 -> b is closer */
    t[8] = 0x18;
    assert_true(dc_kad_distance_cmp(t, b, a) < 0);
    assert_true(dc_kad_distance_cmp(t, a, b) > 0);
    assert_int_equal(dc_kad_distance_cmp(t, a, a), 0);

    /* The hash is SHA-256: "abc" */
    {
        static const uint8_t want[4] = {0xba, 0x78, 0x16, 0xbf};
        uint8_t d[32];

        dc_kad_hash((const uint8_t *)"abc", 3, d);
        assert_memory_equal(d, want, 4);
    }
}

/* ---- routing table ---------------------------------------------------------------------- */

static void tweak_small(struct dc_kad_config *cfg)
{
    cfg->k = 4;
    cfg->replacements = 2;
    cfg->ping_after_ms = 1000;
}

static void test_table_insert_evict(void **state)
{
    struct dc_peer_id self, p[8], extra;
    struct dc_kad_action a;
    struct dc_kad *kad;

    (void)state;
    rand_peer(&self);
    kad = new_kad(&self, tweak_small);
    assert_int_equal(dc_kad_add_peer(kad, &self, 0), DC_EINVAL);
    for (int i = 0; i < 8; i++)
        peer_in_bucket(&self, 0, &p[i]);
    for (int i = 0; i < 4; i++)
        assert_int_equal(dc_kad_add_peer(kad, &p[i], (uint64_t)i), DC_KAD_ADDED);
    assert_int_equal(dc_kad_bucket_size(kad, 0), 4);
    assert_int_equal(dc_kad_table_size(kad), 4);
    /* Re-adding refreshes, does not duplicate. */
    assert_int_equal(dc_kad_add_peer(kad, &p[0], 10), DC_KAD_ADDED);
    assert_int_equal(dc_kad_table_size(kad), 4);

    /* Full: a newcomer waits. p[1] (seen at 1) is the least recently seen; at time 500 it is
     * not stale yet (ping_after 1000): no ping. */
    assert_int_equal(dc_kad_add_peer(kad, &p[4], 500), DC_KAD_PENDING);
    assert_false(dc_kad_has_peer(kad, &p[4]));
    assert_int_equal(dc_kad_poll(kad, &a), 0);
    /* At 2000 it is stale: one ping for p[1], and only one while it is outstanding. */
    assert_int_equal(dc_kad_add_peer(kad, &p[5], 2000), DC_KAD_PENDING);
    assert_int_equal(dc_kad_add_peer(kad, &p[6], 2001), DC_KAD_PENDING);
    assert_int_equal(dc_kad_poll(kad, &a), 1);
    assert_int_equal(a.type, DC_KAD_ACTION_PING);
    assert_true(dc_peer_id_equal(&a.peer, &p[1]));
    assert_int_equal(dc_kad_poll(kad, &a), 0);
    /* It answers: it stays (long-lived peers are preferred) and moves to the back. */
    assert_int_equal(dc_kad_ping_result(kad, &p[1], true, 2002), 0);
    assert_true(dc_kad_has_peer(kad, &p[1]));
    assert_false(dc_kad_has_peer(kad, &p[6]));
    /* The next stale one is p[2]; it does not answer: evicted, the most recent replacement
     * (p[6]; the cache holds 2, so p[4] was dropped) takes its place. */
    assert_int_equal(dc_kad_add_peer(kad, &p[7], 3000), DC_KAD_PENDING);
    assert_int_equal(dc_kad_poll(kad, &a), 1);
    assert_true(dc_peer_id_equal(&a.peer, &p[2]));
    assert_int_equal(dc_kad_ping_result(kad, &p[2], false, 3001), 0);
    assert_false(dc_kad_has_peer(kad, &p[2]));
    assert_true(dc_kad_has_peer(kad, &p[7]));
    assert_int_equal(dc_kad_table_size(kad), 4);
    assert_int_equal(dc_kad_ping_result(kad, &p[2], true, 3002), DC_ENOENT);

    /* Failures: max_failures (2) in a row remove a peer and promote a replacement. */
    assert_int_equal(dc_kad_peer_failed(kad, &p[3]), 0);
    assert_true(dc_kad_has_peer(kad, &p[3]));
    assert_int_equal(dc_kad_peer_failed(kad, &p[3]), 1);
    assert_false(dc_kad_has_peer(kad, &p[3]));
    assert_true(dc_kad_has_peer(kad, &p[6]));
    assert_int_equal(dc_kad_table_size(kad), 4);
    /* A success in between resets the count. */
    assert_int_equal(dc_kad_peer_failed(kad, &p[0]), 0);
    assert_int_equal(dc_kad_add_peer(kad, &p[0], 4000), DC_KAD_ADDED);
    assert_int_equal(dc_kad_peer_failed(kad, &p[0]), 0);
    assert_true(dc_kad_has_peer(kad, &p[0]));
    rand_peer(&extra);
    assert_int_equal(dc_kad_peer_failed(kad, &extra), DC_ENOENT);
    assert_int_equal(dc_kad_remove_peer(kad, &p[0]), 0);
    assert_int_equal(dc_kad_remove_peer(kad, &p[0]), DC_ENOENT);
    dc_kad_free(kad);
}

static uint8_t sort_target[32];
static uint8_t (*sort_keys)[32];

static int cmp_idx(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;

    return dc_kad_distance_cmp(sort_target, sort_keys[x], sort_keys[y]);
}

static void test_table_closest(void **state)
{
    enum { N = 600 };
    static struct dc_peer_id peers[N];
    static uint8_t keys[N][32];
    static size_t order[N];
    struct dc_peer_id self, got[DC_KAD_K];
    uint8_t self_key[32];
    struct dc_kad *kad;
    size_t in_table = 0;

    (void)state;
    rand_peer(&self);
    peer_key(&self, self_key);
    kad = new_kad(&self, NULL);
    for (size_t i = 0; i < N; i++) {
        rand_peer(&peers[i]);
        peer_key(&peers[i], keys[i]);
        assert_true(dc_kad_add_peer(kad, &peers[i], i) >= 0);
    }
    /* Brute force over the peers that made it into the table. */
    for (size_t i = 0; i < N; i++)
        if (dc_kad_has_peer(kad, &peers[i]))
            order[in_table++] = i;
    assert_int_equal(in_table, dc_kad_table_size(kad));
    sort_keys = keys;
    for (int trial = 0; trial < 200; trial++) {
        size_t n;

        if (trial == 0)
            memcpy(sort_target, self_key, 32); /* our own key */
        else if (trial < 20)
            memcpy(sort_target, keys[order[rnd() % in_table]], 32); /* a table peer */
        else
            for (int j = 0; j < 32; j++)
                sort_target[j] = (uint8_t)rnd();
        qsort(order, in_table, sizeof(order[0]), cmp_idx);
        n = dc_kad_closest(kad, sort_target, got, DC_KAD_K);
        assert_int_equal(n, DC_KAD_K);
        for (size_t j = 0; j < n; j++)
            assert_true(dc_peer_id_equal(&got[j], &peers[order[j]]));
    }
    dc_kad_free(kad);
}

static void test_refresh_key(void **state)
{
    struct dc_kad_refresh_table *t;
    struct dc_peer_id self, key, check;
    uint8_t a[32], b[32];
    struct dc_kad *kad;

    (void)state;
    rand_peer(&self);
    peer_key(&self, a);
    kad = new_kad(&self, NULL);
    assert_int_equal(dc_kad_refresh_table_new(&t), 0);
    for (unsigned cpl = 0; cpl < 20; cpl++) {
        assert_int_equal(dc_kad_refresh_key(kad, cpl < 16 ? t : NULL, cpl, rnd(), &key), 0);
        assert_int_equal(dc_peer_id_from_bytes(key.bytes, key.len, &check), 0);
        peer_key(&key, b);
        assert_int_equal(dc_kad_common_prefix(a, b), cpl);
    }
    assert_int_equal(dc_kad_refresh_key(kad, t, 256, 0, &key), DC_EINVAL);
    dc_kad_refresh_table_free(t);
    dc_kad_free(kad);
}

/* ---- a tiny network --------------------------------------------------------------------- */

#define NET_MAX 64

struct net {
    size_t n;
    struct dc_peer_id ids[NET_MAX];
    struct dc_kad *kads[NET_MAX];
    bool dead[NET_MAX];
};

static int net_find(const struct net *net, const struct dc_peer_id *id)
{
    for (size_t i = 0; i < net->n; i++)
        if (dc_peer_id_equal(&net->ids[i], id))
            return (int)i;
    return -1;
}

/* n nodes; node 0 knows 'degree' random others, every other node tries to add all nodes
 * (its buckets keep what fits), as a settled network would have it. */
static void net_build(struct net *net, size_t n, size_t degree)
{
    memset(net, 0, sizeof(*net));
    net->n = n;
    for (size_t i = 0; i < n; i++) {
        rand_peer(&net->ids[i]);
        net->kads[i] = new_kad(&net->ids[i], NULL);
    }
    for (size_t j = 0; j < degree; j++) {
        size_t o = 1 + rnd() % (n - 1);

        assert_true(dc_kad_add_peer(net->kads[0], &net->ids[o], 0) >= 0);
    }
    for (size_t i = 1; i < n; i++)
        for (size_t o = 0; o < n; o++)
            if (o != i)
                assert_true(dc_kad_add_peer(net->kads[i], &net->ids[o], 0) >= 0);
}

static void net_free(struct net *net)
{
    for (size_t i = 0; i < net->n; i++)
        dc_kad_free(net->kads[i]);
}

/* Answers request 'a' from node 'from' on node a.peer; returns 0 or the handler's code. */
static int net_answer(struct net *net, size_t from, struct dc_kad_lookup *l,
                      const struct dc_kad_action *a, uint64_t now)
{
    int to = net_find(net, &a->peer);
    struct dc_kad_msg resp;
    int rc;

    assert_true(to >= 0);
    rc = dc_kad_handle_request(net->kads[to], &net->ids[from], a->msg, now, &resp);
    if (rc == 0)
        assert_int_equal(dc_kad_lookup_on_response(l, a->req_id, &resp, now), 0);
    dc_kad_msg_cleanup(&resp);
    return rc;
}

/* Ground truth: is got[0..n) the k closest nodes to 'key' (the origin excluded)? */
static bool is_exact(const struct net *net, size_t origin, const uint8_t *key, size_t key_len,
                     const struct dc_peer_id *got, size_t n)
{
    uint8_t t[32], keys[NET_MAX][32];
    size_t order[NET_MAX], m = 0;

    dc_kad_hash(key, key_len, t);
    for (size_t i = 0; i < net->n; i++) {
        peer_key(&net->ids[i], keys[i]);
        if (i != origin && !net->dead[i])
            order[m++] = i;
    }
    memcpy(sort_target, t, 32);
    sort_keys = keys;
    qsort(order, m, sizeof(order[0]), cmp_idx);
    if (n != (m < DC_KAD_K ? m : DC_KAD_K))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!dc_peer_id_equal(&got[i], &net->ids[order[i]]))
            return false;
    return true;
}

static void test_lookup_converges(void **state)
{
    struct net net;
    struct dc_kad_lookup_config cfg = {.type = DC_KAD_FIND_NODE};
    struct dc_kad_lookup *l;
    struct dc_kad_action a, inflight[DC_KAD_ALPHA + 1];
    struct dc_kad_lookup_stats st;
    struct dc_peer_id target, got[DC_KAD_K];
    size_t n_inflight = 0, dones = 0;
    uint64_t now = 1000;

    (void)state;
    net_build(&net, NET_MAX, 4);
    rand_peer(&target);
    cfg.key = target.bytes;
    cfg.key_len = target.len;
    assert_int_equal(dc_kad_lookup_new(net.kads[0], &cfg, now, &l), 0);
    for (int steps = 0; steps < 10000; steps++) {
        while (dc_kad_lookup_poll(l, now, &a) == 1) {
            if (a.type == DC_KAD_ACTION_DONE) {
                dones++;
                continue;
            }
            assert_int_equal(a.type, DC_KAD_ACTION_SEND);
            assert_int_equal(a.msg->type, DC_KAD_FIND_NODE);
            assert_memory_equal(a.msg->key, target.bytes, target.len);
            inflight[n_inflight++] = a;
            /* Never more than alpha requests at once. */
            assert_true(n_inflight <= DC_KAD_ALPHA);
        }
        if (dones > 0)
            break;
        assert_true(n_inflight > 0);
        /* Answer the oldest one. */
        now += 5;
        assert_int_equal(net_answer(&net, 0, l, &inflight[0], now), 0);
        memmove(&inflight[0], &inflight[1], (--n_inflight) * sizeof(inflight[0]));
    }
    assert_int_equal(dones, 1);
    assert_true(dc_kad_lookup_done(l));
    assert_int_equal(dc_kad_lookup_poll(l, now, &a), 0); /* DONE only once */
    dc_kad_lookup_stats(l, &st);
    assert_true(st.answered >= DC_KAD_K);
    assert_int_equal(st.failed, 0);
    assert_true(st.hops >= 1);
    assert_true(
        is_exact(&net, 0, target.bytes, target.len, got, dc_kad_lookup_closest(l, got, DC_KAD_K)));
    /* Responders joined node 0's table. */
    assert_true(dc_kad_table_size(net.kads[0]) >= DC_KAD_K);
    /* A late reply to nothing is refused. */
    assert_int_equal(dc_kad_lookup_on_failure(l, 999999, now), DC_ENOENT);
    dc_kad_lookup_free(l);
    net_free(&net);
}

static void test_lookup_timeouts_and_failures(void **state)
{
    struct net net;
    struct dc_kad_lookup_config cfg = {.type = DC_KAD_FIND_NODE};
    struct dc_kad_lookup *l;
    struct dc_kad_action a;
    struct dc_kad_lookup_stats st;
    struct dc_peer_id target, got[DC_KAD_K];
    size_t cancels = 0, sends = 0;
    uint64_t now = 0;
    bool done = false;

    (void)state;
    net_build(&net, 40, 10);
    for (size_t i = 1; i < net.n; i += 4)
        net.dead[i] = true; /* these never answer */
    rand_peer(&target);
    cfg.key = target.bytes;
    cfg.key_len = target.len;
    assert_int_equal(dc_kad_lookup_new(net.kads[0], &cfg, now, &l), 0);
    while (!done) {
        struct dc_kad_action batch[DC_KAD_ALPHA];
        size_t nb = 0;

        while (dc_kad_lookup_poll(l, now, &a) == 1) {
            if (a.type == DC_KAD_ACTION_DONE)
                done = true;
            else if (a.type == DC_KAD_ACTION_CANCEL)
                cancels++;
            else
                batch[nb++] = a, sends++;
        }
        for (size_t i = 0; i < nb; i++) {
            int to = net_find(&net, &batch[i].peer);

            if (net.dead[to])
                continue; /* silent: it will time out */
            if (to % 4 == 2) {
                /* A refused stream: reported as a failure at once. */
                assert_int_equal(dc_kad_lookup_on_failure(l, batch[i].req_id, now), 0);
                continue;
            }
            assert_int_equal(net_answer(&net, 0, l, &batch[i], now), 0);
        }
        if (!done && nb == 0) {
            uint64_t d = dc_kad_lookup_next_deadline(l);

            assert_true(d != UINT64_MAX);
            now = d; /* jump to the next deadline */
        }
    }
    dc_kad_lookup_stats(l, &st);
    assert_true(cancels > 0);
    assert_int_equal(st.failed, cancels + (st.failed - cancels));
    assert_true(st.failed > cancels); /* the refused ones too */
    assert_int_equal(st.sent, sends);
    assert_int_equal(dc_kad_lookup_next_deadline(l), UINT64_MAX);
    /*
     * The result: only working peers, and every working peer among the k closest nodes of
     * the network (responders cannot know who is down, so they name only the k closest;
     * working peers beyond those are never heard of, as in any Kademlia).
     */
    {
        size_t n = dc_kad_lookup_closest(l, got, DC_KAD_K), order[NET_MAX], m = 0;
        uint8_t t[32], keys[NET_MAX][32];

        for (size_t i = 0; i < n; i++) {
            int who = net_find(&net, &got[i]);

            assert_true(who > 0 && who % 4 != 1 && who % 4 != 2);
        }
        dc_kad_hash(target.bytes, target.len, t);
        for (size_t i = 0; i < net.n; i++) {
            peer_key(&net.ids[i], keys[i]);
            if (i != 0)
                order[m++] = i;
        }
        memcpy(sort_target, t, 32);
        sort_keys = keys;
        qsort(order, m, sizeof(order[0]), cmp_idx);
        for (size_t i = 0; i < DC_KAD_K; i++) {
            bool found = false;

            if (order[i] % 4 == 1 || order[i] % 4 == 2)
                continue;
            for (size_t j = 0; j < n; j++)
                found = found || dc_peer_id_equal(&got[j], &net.ids[order[i]]);
            assert_true(found);
        }
    }
    dc_kad_lookup_free(l);
    net_free(&net);
}

static void test_lookup_empty_table(void **state)
{
    struct dc_peer_id self;
    struct dc_kad *kad;
    struct dc_kad_lookup *l;
    struct dc_kad_lookup_config cfg = {.type = DC_KAD_FIND_NODE};
    struct dc_kad_action a;

    (void)state;
    rand_peer(&self);
    kad = new_kad(&self, NULL);
    cfg.key = self.bytes;
    cfg.key_len = self.len;
    assert_int_equal(dc_kad_lookup_new(kad, &cfg, 0, &l), 0);
    assert_int_equal(dc_kad_lookup_poll(l, 0, &a), 1);
    assert_int_equal(a.type, DC_KAD_ACTION_DONE);
    dc_kad_lookup_free(l);
    cfg.type = DC_KAD_PUT_VALUE;
    assert_int_equal(dc_kad_lookup_new(kad, &cfg, 0, &l), DC_EINVAL);
    cfg.type = DC_KAD_FIND_NODE;
    cfg.key_len = 0;
    assert_int_equal(dc_kad_lookup_new(kad, &cfg, 0, &l), DC_EINVAL);
    dc_kad_free(kad);
}

/* ---- validators ------------------------------------------------------------------------- */

/* /democritus/<anything>: values are "v<digit>" and a higher digit wins. */
static int demo_validate(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                         size_t value_len, uint64_t now_ms)
{
    (void)ud;
    (void)key;
    (void)key_len;
    (void)now_ms;
    if (value_len != 2 || value[0] != 'v' || value[1] < '0' || value[1] > '9')
        return DC_ECRYPTO;
    return 0;
}

static size_t demo_select(void *ud, const uint8_t *key, size_t key_len,
                          const uint8_t *const *values, const size_t *lens, size_t n)
{
    size_t best = 0;

    (void)ud;
    (void)key;
    (void)key_len;
    (void)lens;
    for (size_t i = 1; i < n; i++)
        if (values[i][1] > values[best][1])
            best = i;
    return best;
}

static const struct dc_kad_validator demo_validator = {.validate = demo_validate,
                                                       .select = demo_select};

/* Builds "/pk/<peer id>" and the PublicKey value of a fresh identity. */
static void make_pk_record(uint8_t *key, size_t *key_len, uint8_t *value, size_t *value_len,
                           struct dc_peer_id *id_out)
{
    struct dc_identity *id;
    const struct dc_peer_id *pid;

    assert_int_equal(dc_identity_generate(&id), 0);
    pid = dc_identity_peer_id(id);
    memcpy(key, "/pk/", 4);
    memcpy(key + 4, pid->bytes, pid->len);
    *key_len = 4 + pid->len;
    assert_int_equal(dc_identity_public_key_proto(id, value, 64, value_len), 0);
    if (id_out != NULL)
        *id_out = *pid;
    dc_identity_free(id);
}

static void test_validators(void **state)
{
    struct dc_peer_id self;
    struct dc_kad *kad;
    uint8_t key[128], value[64], key2[128], value2[64];
    size_t kl, vl, kl2, vl2;
    const uint8_t *got;
    size_t got_len;

    (void)state;
    rand_peer(&self);
    kad = new_kad(&self, NULL);
    make_pk_record(key, &kl, value, &vl, NULL);
    make_pk_record(key2, &kl2, value2, &vl2, NULL);
    assert_int_equal(dc_kad_validate(kad, key, kl, value, vl, 0), 0);
    /* Another key's public key does not match. */
    assert_int_equal(dc_kad_validate(kad, key, kl, value2, vl2, 0), DC_ECRYPTO);
    assert_int_equal(dc_kad_validate(kad, key, kl, (const uint8_t *)"junk", 4, 0), DC_ECORRUPT);
    assert_int_equal(dc_kad_validate(kad, (const uint8_t *)"/pk/xx", 6, value, vl, 0), DC_ECORRUPT);
    assert_int_equal(dc_kad_put_local(kad, key, kl, value, vl, 0), 0);
    assert_int_equal(dc_kad_get_local(kad, key, kl, 1, &got, &got_len), 0);
    assert_int_equal(got_len, vl);
    assert_memory_equal(got, value, vl);
    assert_int_equal(dc_kad_put_local(kad, key2, kl2, value, vl, 0), DC_ECRYPTO);

    /* /ipns is validated (ipns_test.c has the details): "abc" is no binary PeerId. Unknown
     * namespaces and malformed keys are refused. */
    assert_int_equal(dc_kad_validate(kad, (const uint8_t *)"/ipns/abc", 9, value, vl, 0),
                     DC_ECORRUPT);
    assert_int_equal(dc_kad_validate(kad, (const uint8_t *)"/nope/abc", 9, value, vl, 0),
                     DC_EUNSUPPORTED);
    assert_int_equal(dc_kad_validate(kad, (const uint8_t *)"pk/abc", 6, value, vl, 0),
                     DC_EUNSUPPORTED);
    assert_int_equal(dc_kad_validate(kad, (const uint8_t *)"/pk", 3, value, vl, 0),
                     DC_EUNSUPPORTED);

    /* A pluggable validator and selector for /democritus/. */
    assert_int_equal(dc_kad_set_validator(kad, "bad/ns", &demo_validator), DC_EINVAL);
    assert_int_equal(dc_kad_set_validator(kad, "democritus", &demo_validator), 0);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/x", 13, (const uint8_t *)"v5", 2, 0),
        0);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/x", 13, (const uint8_t *)"v3", 2, 0),
        DC_EEXIST);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/x", 13, (const uint8_t *)"zz", 2, 0),
        DC_ECRYPTO);
    assert_int_equal(dc_kad_get_local(kad, (const uint8_t *)"/democritus/x", 13, 0, &got, &got_len),
                     0);
    assert_memory_equal(got, "v5", 2);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/x", 13, (const uint8_t *)"v7", 2, 0),
        0);
    assert_int_equal(dc_kad_get_local(kad, (const uint8_t *)"/democritus/x", 13, 0, &got, &got_len),
                     0);
    assert_memory_equal(got, "v7", 2);
    /* Records expire after record_ttl. */
    assert_int_equal(dc_kad_get_local(kad, (const uint8_t *)"/democritus/x", 13,
                                      DC_KAD_RECORD_TTL_MS, &got, &got_len),
                     DC_ENOENT);
    assert_int_equal(dc_kad_expire(kad, DC_KAD_RECORD_TTL_MS), 2);
    dc_kad_free(kad);
}

/* ---- the request handler ---------------------------------------------------------------- */

static size_t fake_addrs(void *ud, const struct dc_peer_id *id, struct dc_multiaddr *out,
                         size_t max)
{
    (void)ud;
    (void)id;
    if (max < 1 || dc_multiaddr_parse("/ip4/192.0.2.1/tcp/4001", &out[0], NULL) != 0)
        return 0;
    return 1;
}

static void tweak_addrs(struct dc_kad_config *cfg)
{
    cfg->peer_addrs = fake_addrs;
}

static void test_server(void **state)
{
    struct dc_peer_id self, from, other, peers[30];
    struct dc_kad *kad;
    struct dc_kad_msg req, resp;
    uint8_t key[128], value[64];
    size_t kl, vl;

    (void)state;
    rand_peer(&self);
    rand_peer(&from);
    rand_peer(&other);
    kad = new_kad(&self, tweak_addrs);
    assert_true(dc_kad_add_peer(kad, &from, 0) >= 0);
    for (int i = 0; i < 30; i++) {
        rand_peer(&peers[i]);
        assert_true(dc_kad_add_peer(kad, &peers[i], 0) >= 0);
    }

    /* PING */
    dc_kad_msg_init(&req);
    req.type = DC_KAD_PING;
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), 0);
    assert_int_equal(resp.type, DC_KAD_PING);
    dc_kad_msg_cleanup(&resp);

    /* FIND_NODE: k closest, never the requester, with addresses. */
    req.type = DC_KAD_FIND_NODE;
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), DC_EPROTO); /* no key */
    dc_kad_msg_cleanup(&resp);
    assert_int_equal(dc_kad_msg_set_key(&req, from.bytes, from.len), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), 0);
    assert_int_equal(resp.n_closer, DC_KAD_K);
    for (size_t i = 0; i < resp.n_closer; i++) {
        assert_false(dc_peer_id_equal(&resp.closer[i].id, &from));
        assert_int_equal(resp.closer[i].n_addrs, 1);
    }
    dc_kad_msg_cleanup(&resp);
    /* Asked for ourselves: just us. */
    assert_int_equal(dc_kad_msg_set_key(&req, self.bytes, self.len), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), 0);
    assert_int_equal(resp.n_closer, 1);
    assert_true(dc_peer_id_equal(&resp.closer[0].id, &self));
    dc_kad_msg_cleanup(&resp);

    /* PUT_VALUE then GET_VALUE of a /pk record. */
    make_pk_record(key, &kl, value, &vl, NULL);
    req.type = DC_KAD_PUT_VALUE;
    assert_int_equal(dc_kad_msg_set_key(&req, key, kl), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), DC_EPROTO); /* no rec */
    dc_kad_msg_cleanup(&resp);
    assert_int_equal(dc_kad_msg_set_record(&req, key, kl, value, vl - 1, NULL), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), DC_ECORRUPT);
    dc_kad_msg_cleanup(&resp);
    assert_int_equal(dc_kad_msg_set_record(&req, key, kl - 1, value, vl, NULL), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), DC_EPROTO);
    dc_kad_msg_cleanup(&resp);
    assert_int_equal(dc_kad_msg_set_record(&req, key, kl, value, vl, NULL), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), 0);
    assert_int_equal(resp.type, DC_KAD_PUT_VALUE);
    assert_true(resp.has_record);
    assert_int_equal(resp.record.value_len, vl);
    dc_kad_msg_cleanup(&resp);
    dc_kad_msg_cleanup(&req);
    req.type = DC_KAD_GET_VALUE;
    assert_int_equal(dc_kad_msg_set_key(&req, key, kl), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 5000, &resp), 0);
    assert_true(resp.has_record);
    assert_memory_equal(resp.record.value, value, vl);
    assert_non_null(resp.record.time_received);
    assert_string_equal(resp.record.time_received, "1970-01-01T00:00:00.000Z");
    assert_int_equal(resp.n_closer, DC_KAD_K);
    dc_kad_msg_cleanup(&resp);
    /* /ipns: a value that is no IPNS record is refused. */
    dc_kad_msg_cleanup(&req);
    req.type = DC_KAD_PUT_VALUE;
    assert_int_equal(dc_kad_msg_set_key(&req, (const uint8_t *)"/ipns/x", 7), 0);
    assert_int_equal(dc_kad_msg_set_record(&req, (const uint8_t *)"/ipns/x", 7, value, 3, NULL), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), DC_ECORRUPT);
    dc_kad_msg_cleanup(&resp);
    dc_kad_msg_cleanup(&req);

    /* ADD_PROVIDER: only the sender's own entry counts; no response. */
    {
        struct dc_kad_peer_info pi = {.id = from};
        struct dc_multiaddr ma;

        assert_int_equal(dc_multiaddr_parse("/ip4/198.51.100.7/tcp/1234", &ma, NULL), 0);
        pi.addrs = &ma;
        pi.n_addrs = 1;
        req.type = DC_KAD_ADD_PROVIDER;
        assert_int_equal(dc_kad_msg_set_key(&req, (const uint8_t *)"cid-1", 5), 0);
        assert_int_equal(dc_kad_msg_add_peer(&req, true, &pi), 0);
        pi.id = other;
        assert_int_equal(dc_kad_msg_add_peer(&req, true, &pi), 0);
        assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), DC_KAD_NO_RESPONSE);
        dc_kad_msg_cleanup(&resp);
        assert_int_equal(dc_kad_provider_count(kad, (const uint8_t *)"cid-1", 5, 0), 1);
        dc_kad_msg_cleanup(&req);

        req.type = DC_KAD_GET_PROVIDERS;
        assert_int_equal(dc_kad_msg_set_key(&req, (const uint8_t *)"cid-1", 5), 0);
        assert_int_equal(dc_kad_handle_request(kad, &other, &req, 10, &resp), 0);
        assert_int_equal(resp.n_providers, 1);
        assert_true(dc_peer_id_equal(&resp.providers[0].id, &from));
        assert_int_equal(resp.providers[0].n_addrs, 1);
        assert_true(dc_multiaddr_equal(&resp.providers[0].addrs[0], &ma));
        assert_int_equal(resp.n_closer, DC_KAD_K);
        dc_kad_msg_cleanup(&resp);
        /* Expired after the provider TTL (fake clock). */
        assert_int_equal(dc_kad_handle_request(kad, &other, &req, DC_KAD_PROVIDER_TTL_MS, &resp),
                         0);
        assert_int_equal(resp.n_providers, 0);
        dc_kad_msg_cleanup(&resp);
        assert_int_equal(
            dc_kad_provider_count(kad, (const uint8_t *)"cid-1", 5, DC_KAD_PROVIDER_TTL_MS - 1), 1);
        /* The record (36 h) goes first, then the provider (48 h). */
        assert_int_equal(dc_kad_expire(kad, DC_KAD_PROVIDER_TTL_MS - 1), 1);
        assert_int_equal(dc_kad_expire(kad, DC_KAD_PROVIDER_TTL_MS), 1);
        dc_kad_msg_cleanup(&req);
    }

    /* Unknown type. */
    req.type = (enum dc_kad_msg_type)9;
    assert_int_equal(dc_kad_msg_set_key(&req, (const uint8_t *)"k", 1), 0);
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), DC_EPROTO);
    dc_kad_msg_cleanup(&resp);
    dc_kad_msg_cleanup(&req);
    dc_kad_free(kad);
}

static void tweak_client(struct dc_kad_config *cfg)
{
    cfg->client_mode = true;
}

static void test_client_mode(void **state)
{
    struct dc_peer_id self, from;
    struct dc_kad *kad;
    struct dc_kad_msg req, resp;
    struct dc_buf out;
    static const uint8_t ping[2] = {0x08, 0x05};

    (void)state;
    rand_peer(&self);
    rand_peer(&from);
    kad = new_kad(&self, tweak_client);
    dc_kad_msg_init(&req);
    req.type = DC_KAD_PING;
    assert_int_equal(dc_kad_handle_request(kad, &from, &req, 0, &resp), DC_ESTATE);
    dc_kad_msg_cleanup(&resp);
    dc_buf_init(&out, 0);
    assert_int_equal(dc_kad_handle_request_bytes(kad, &from, ping, 2, 0, &out), DC_ESTATE);
    assert_int_equal(out.len, 0);
    dc_buf_cleanup(&out);
    dc_kad_free(kad);
}

/* GET_VALUE and GET_PROVIDERS lookups over the tiny network. */
static void run_to_done(struct net *net, size_t origin, struct dc_kad_lookup *l)
{
    struct dc_kad_action a;
    uint64_t now = 0;

    for (int guard = 0; guard < 10000; guard++) {
        struct dc_kad_action batch[DC_KAD_ALPHA];
        size_t nb = 0;

        while (dc_kad_lookup_poll(l, now, &a) == 1) {
            if (a.type == DC_KAD_ACTION_DONE)
                return;
            if (a.type == DC_KAD_ACTION_SEND)
                batch[nb++] = a;
        }
        assert_true(nb > 0);
        for (size_t i = 0; i < nb; i++)
            assert_int_equal(net_answer(net, origin, l, &batch[i], ++now), 0);
    }
    fail_msg("lookup did not finish");
}

static void test_lookup_value_and_providers(void **state)
{
    struct net net;
    struct dc_kad_lookup_config cfg = {0};
    struct dc_kad_lookup *l;
    const uint8_t *v;
    size_t vl, n_out, n;
    uint32_t found;
    struct dc_peer_id outdated[8];
    const struct dc_kad_peer_info *provs;
    struct dc_kad_peer_info me = {0};
    static const uint8_t key[] = "/democritus/expert/1";

    (void)state;
    net_build(&net, 30, 5);
    for (size_t i = 0; i < net.n; i++)
        assert_int_equal(dc_kad_set_validator(net.kads[i], "democritus", &demo_validator), 0);
    /* Nodes 1..14 hold the outdated v2, nodes 15..29 the best, v9. */
    for (size_t i = 1; i < net.n; i++)
        assert_int_equal(dc_kad_put_local(net.kads[i], key, sizeof(key) - 1,
                                          (const uint8_t *)(i < 15 ? "v2" : "v9"), 2, 0),
                         0);
    cfg.type = DC_KAD_GET_VALUE;
    cfg.key = key;
    cfg.key_len = sizeof(key) - 1;
    assert_int_equal(dc_kad_lookup_new(net.kads[0], &cfg, 0, &l), 0);
    run_to_done(&net, 0, l);
    assert_int_equal(dc_kad_lookup_value(l, &v, &vl, &found, outdated, 8, &n_out), 0);
    {
        struct dc_kad_lookup_stats st;

        dc_kad_lookup_stats(l, &st);
        assert_int_equal(found, st.answered); /* every node answered with a valid value */
    }
    assert_int_equal(vl, 2);
    assert_memory_equal(v, "v9", 2);
    assert_true(n_out >= 1); /* the v2 holders among the k closest need correcting */
    for (size_t i = 0; i < n_out; i++)
        assert_true(net_find(&net, &outdated[i]) < 15);
    dc_kad_lookup_free(l);
    /* Quorum 1 with a local value: done before sending anything. */
    assert_int_equal(
        dc_kad_put_local(net.kads[0], key, sizeof(key) - 1, (const uint8_t *)"v1", 2, 0), 0);
    cfg.quorum = 1;
    assert_int_equal(dc_kad_lookup_new(net.kads[0], &cfg, 0, &l), 0);
    {
        struct dc_kad_action a;

        assert_int_equal(dc_kad_lookup_poll(l, 0, &a), 1);
        assert_int_equal(a.type, DC_KAD_ACTION_DONE);
    }
    dc_kad_lookup_free(l);

    /* Providers: nodes 7 and 8 announced themselves at nodes 11..29. */
    for (size_t p = 7; p <= 8; p++)
        for (size_t at = 11; at < net.n; at++) {
            me.id = net.ids[p];
            assert_int_equal(
                dc_kad_add_provider_local(net.kads[at], (const uint8_t *)"cid", 3, &me, 0), 0);
        }
    memset(&cfg, 0, sizeof(cfg));
    cfg.type = DC_KAD_GET_PROVIDERS;
    cfg.key = (const uint8_t *)"cid";
    cfg.key_len = 3;
    assert_int_equal(dc_kad_lookup_new(net.kads[0], &cfg, 0, &l), 0);
    run_to_done(&net, 0, l);
    provs = dc_kad_lookup_providers(l, &n);
    assert_int_equal(n, 2);
    assert_true(net_find(&net, &provs[0].id) == 7 || net_find(&net, &provs[0].id) == 8);
    dc_kad_lookup_free(l);
    net_free(&net);
}

/* ---- codec ------------------------------------------------------------------------------ */

static void test_codec_roundtrip(void **state)
{
    struct dc_kad_msg m, d;
    struct dc_kad_peer_info pi = {0};
    struct dc_multiaddr ma[2];
    struct dc_buf out;
    const uint8_t *body;
    size_t body_len, used;

    (void)state;
    dc_kad_msg_init(&m);
    m.type = DC_KAD_GET_PROVIDERS;
    assert_int_equal(dc_kad_msg_set_key(&m, (const uint8_t *)"key", 3), 0);
    assert_int_equal(dc_kad_msg_set_record(&m, (const uint8_t *)"key", 3, (const uint8_t *)"val", 3,
                                           "2024-01-01T00:00:00Z"),
                     0);
    assert_int_equal(dc_multiaddr_parse("/ip4/127.0.0.1/tcp/1", &ma[0], NULL), 0);
    assert_int_equal(dc_multiaddr_parse("/dns4/example.com/tcp/443/wss", &ma[1], NULL), 0);
    rand_peer(&pi.id);
    pi.addrs = ma;
    pi.n_addrs = 2;
    pi.connection = DC_KAD_CONNECTED;
    assert_int_equal(dc_kad_msg_add_peer(&m, false, &pi), 0);
    rand_peer(&pi.id);
    pi.n_addrs = 0;
    assert_int_equal(dc_kad_msg_add_peer(&m, true, &pi), 0);

    dc_buf_init(&out, 0);
    assert_int_equal(dc_kad_msg_encode(&m, &out), 0);
    /* Every prefix of the frame is incomplete. */
    for (size_t i = 0; i < out.len; i++)
        assert_int_equal(dc_kad_frame_split(out.data, i, &body, &body_len, &used), DC_ETRUNCATED);
    assert_int_equal(dc_kad_frame_split(out.data, out.len, &body, &body_len, &used), 0);
    assert_int_equal(used, out.len);
    assert_int_equal(dc_kad_msg_decode(body, body_len, &d), 0);
    assert_int_equal(d.type, DC_KAD_GET_PROVIDERS);
    assert_int_equal(d.key_len, 3);
    assert_true(d.has_record);
    assert_memory_equal(d.record.value, "val", 3);
    assert_string_equal(d.record.time_received, "2024-01-01T00:00:00Z");
    assert_int_equal(d.n_closer, 1);
    assert_int_equal(d.closer[0].n_addrs, 2);
    assert_int_equal(d.closer[0].connection, DC_KAD_CONNECTED);
    assert_true(dc_multiaddr_equal(&d.closer[0].addrs[1], &ma[1]));
    assert_int_equal(d.n_providers, 1);
    assert_true(dc_peer_id_equal(&d.providers[0].id, &pi.id));
    dc_kad_msg_cleanup(&d);
    dc_kad_msg_cleanup(&m);
    dc_buf_cleanup(&out);

    /* Go's FIND_NODE request bytes: type 4, key. An unknown field (clusterLevelRaw) too. */
    {
        static const uint8_t wire[] = {0x08, 0x04, 0x12, 0x02, 'h', 'i', 0x50, 0x07};

        assert_int_equal(dc_kad_msg_decode(wire, sizeof(wire), &d), 0);
        assert_int_equal(d.type, DC_KAD_FIND_NODE);
        assert_memory_equal(d.key, "hi", 2);
        dc_kad_msg_cleanup(&d);
    }
    /* Garbage and bad types. */
    {
        static const uint8_t bad1[] = {0x12, 0x05, 'x'};              /* truncated key */
        static const uint8_t bad2[] = {0x08, 0x09};                   /* type 9 */
        static const uint8_t bad3[] = {0x42, 0x03, 0x0a, 0x01, 0x00}; /* peer with bad id */

        assert_int_equal(dc_kad_msg_decode(bad1, sizeof(bad1), &d), DC_ECORRUPT);
        assert_int_equal(dc_kad_msg_decode(bad2, sizeof(bad2), &d), DC_ECORRUPT);
        /* A broken peer entry is dropped, not fatal. */
        assert_int_equal(dc_kad_msg_decode(bad3, sizeof(bad3), &d), 0);
        assert_int_equal(d.n_closer, 0);
        dc_kad_msg_cleanup(&d);
    }
}

static void test_limits(void **state)
{
    struct dc_kad_msg m;
    struct dc_buf out;
    uint8_t big[DC_KAD_MAX_VALUE + 1] = {0};
    const uint8_t *body;
    size_t body_len, used;
    uint8_t frame[8];
    struct dc_kad_peer_info pi = {0};
    struct dc_peer_id self;
    struct dc_kad *kad;

    (void)state;
    dc_kad_msg_init(&m);
    assert_int_equal(dc_kad_msg_set_key(&m, big, DC_KAD_MAX_KEY + 1), DC_ELIMIT);
    assert_int_equal(dc_kad_msg_set_record(&m, big, 1, big, DC_KAD_MAX_VALUE + 1, NULL), DC_ELIMIT);
    for (unsigned i = 0; i < DC_KAD_MAX_MSG_PEERS; i++) {
        rand_peer(&pi.id);
        assert_int_equal(dc_kad_msg_add_peer(&m, false, &pi), 0);
    }
    assert_int_equal(dc_kad_msg_add_peer(&m, false, &pi), DC_ELIMIT);
    /* An encoding over the cap is refused. */
    {
        struct dc_multiaddr ma[DC_KAD_MAX_PEER_ADDRS];

        for (size_t i = 0; i < DC_KAD_MAX_PEER_ADDRS; i++)
            assert_int_equal(dc_multiaddr_parse("/dns4/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                                ".example/tcp/1",
                                                &ma[i], NULL),
                             0);
        pi.addrs = ma;
        pi.n_addrs = DC_KAD_MAX_PEER_ADDRS;
        for (unsigned i = 0; i < DC_KAD_MAX_MSG_PEERS; i++)
            assert_int_equal(dc_kad_msg_add_peer(&m, true, &pi), 0);
    }
    dc_buf_init(&out, 0);
    assert_int_equal(dc_kad_msg_encode(&m, &out), DC_ELIMIT);
    assert_int_equal(out.len, 0);
    dc_buf_cleanup(&out);
    dc_kad_msg_cleanup(&m);
    /* A frame announcing more than the cap is refused before its body arrives. */
    frame[0] = 0x81;
    frame[1] = 0x80;
    frame[2] = 0x04; /* 65537 */
    assert_int_equal(dc_kad_frame_split(frame, 3, &body, &body_len, &used), DC_ELIMIT);
    frame[0] = 0x80;
    frame[1] = 0x00; /* non-minimal varint */
    assert_int_equal(dc_kad_frame_split(frame, 2, &body, &body_len, &used), DC_ECORRUPT);
    assert_int_equal(dc_kad_msg_decode(big, DC_KAD_MAX_MESSAGE + 1, &m), DC_ELIMIT);

    /* Store caps. */
    rand_peer(&self);
    {
        struct dc_kad_config cfg;

        dc_kad_config_default(&cfg, &self);
        cfg.max_records = 2;
        cfg.max_providers_per_key = 2;
        cfg.max_provider_keys = 2;
        cfg.max_providers = 3;
        struct dc_kad *bad;

        assert_int_equal(dc_kad_new(&cfg, &kad), 0);
        cfg.k = 65;
        assert_int_equal(dc_kad_new(&cfg, &bad), DC_EINVAL);
        assert_null(bad);
    }
    assert_int_equal(dc_kad_set_validator(kad, "democritus", &demo_validator), 0);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/a", 13, (const uint8_t *)"v1", 2, 0),
        0);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/b", 13, (const uint8_t *)"v1", 2, 0),
        0);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/c", 13, (const uint8_t *)"v1", 2, 0),
        DC_ELIMIT);
    /* Replacing an existing key is still fine. */
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/a", 13, (const uint8_t *)"v2", 2, 0),
        0);
    pi.n_addrs = 0;
    pi.addrs = NULL;
    for (int i = 0; i < 2; i++) {
        rand_peer(&pi.id);
        assert_int_equal(dc_kad_add_provider_local(kad, (const uint8_t *)"k1", 2, &pi, 0), 0);
    }
    rand_peer(&pi.id);
    assert_int_equal(dc_kad_add_provider_local(kad, (const uint8_t *)"k1", 2, &pi, 0), DC_ELIMIT);
    assert_int_equal(dc_kad_add_provider_local(kad, (const uint8_t *)"k2", 2, &pi, 0), 0);
    rand_peer(&pi.id);
    assert_int_equal(dc_kad_add_provider_local(kad, (const uint8_t *)"k2", 2, &pi, 0), DC_ELIMIT);
    assert_int_equal(dc_kad_add_provider_local(kad, (const uint8_t *)"k3", 2, &pi, 0), DC_ELIMIT);
    {
        struct dc_kad_store_stats st;

        dc_kad_store_stats(kad, &st);
        assert_int_equal(st.records, 2);
        assert_int_equal(st.provider_keys, 2);
        assert_int_equal(st.providers, 3);
    }
    dc_kad_free(kad);
}

/* ---- persistence ------------------------------------------------------------------------ */

static void fill_store(struct dc_kad *kad, struct dc_peer_id *prov)
{
    struct dc_kad_peer_info pi = {0};
    struct dc_multiaddr ma;

    assert_int_equal(dc_kad_set_validator(kad, "democritus", &demo_validator), 0);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/a", 13, (const uint8_t *)"v1", 2, 100),
        0);
    assert_int_equal(
        dc_kad_put_local(kad, (const uint8_t *)"/democritus/b", 13, (const uint8_t *)"v4", 2, 200),
        0);
    assert_int_equal(dc_multiaddr_parse("/ip4/10.0.0.1/tcp/9", &ma, NULL), 0);
    rand_peer(prov);
    pi.id = *prov;
    pi.addrs = &ma;
    pi.n_addrs = 1;
    assert_int_equal(dc_kad_add_provider_local(kad, (const uint8_t *)"cid", 3, &pi, 300), 0);
}

static void test_persist(void **state)
{
    struct dc_peer_id self, prov;
    struct dc_kad *a, *b;
    struct dc_buf blob, again;
    struct dc_kad_store_stats st;
    const uint8_t *v;
    size_t vl;

    (void)state;
    rand_peer(&self);
    a = new_kad(&self, NULL);
    b = new_kad(&self, NULL);
    fill_store(a, &prov);
    dc_buf_init(&blob, 0);
    assert_int_equal(dc_kad_store_save(a, &blob), 0);
    assert_memory_equal(blob.data, "DCKAD\x01", 6);
    assert_int_equal(dc_kad_set_validator(b, "democritus", &demo_validator), 0);
    assert_int_equal(dc_kad_store_load(b, blob.data, blob.len, 1000), 0);
    dc_kad_store_stats(b, &st);
    assert_int_equal(st.records, 2);
    assert_int_equal(st.providers, 1);
    assert_int_equal(dc_kad_get_local(b, (const uint8_t *)"/democritus/b", 13, 1000, &v, &vl), 0);
    assert_memory_equal(v, "v4", 2);
    assert_int_equal(dc_kad_provider_count(b, (const uint8_t *)"cid", 3, 1000), 1);
    /* Save again: same content (the order may differ; compare sizes and a reload). */
    dc_buf_init(&again, 0);
    assert_int_equal(dc_kad_store_save(b, &again), 0);
    assert_int_equal(again.len, blob.len);
    dc_buf_cleanup(&again);
    dc_kad_free(b);

    /* Expired entries are skipped on load; without the validator records are skipped too. */
    b = new_kad(&self, NULL);
    assert_int_equal(dc_kad_store_load(b, blob.data, blob.len, 1000), 0);
    dc_kad_store_stats(b, &st);
    assert_int_equal(st.records, 0);
    assert_int_equal(st.providers, 1);
    dc_kad_free(b);
    b = new_kad(&self, NULL);
    assert_int_equal(dc_kad_store_load(b, blob.data, blob.len, 300 + DC_KAD_PROVIDER_TTL_MS), 0);
    dc_kad_store_stats(b, &st);
    assert_int_equal(st.providers, 0);

    /* Every truncation is corrupt and changes nothing; so is a trailing byte. */
    for (size_t i = 0; i < blob.len; i++)
        assert_int_equal(dc_kad_store_load(b, blob.data, i, 0), DC_ECORRUPT);
    dc_kad_store_stats(b, &st);
    assert_int_equal(st.providers + st.records, 0);
    assert_int_equal(dc_buf_append(&blob, "", 1), 0);
    assert_int_equal(dc_kad_store_load(b, blob.data, blob.len, 0), DC_ECORRUPT);
    /* A future version is refused. */
    blob.data[5] = 2;
    assert_int_equal(dc_kad_store_load(b, blob.data, blob.len, 0), DC_EUNSUPPORTED);
    dc_buf_cleanup(&blob);
    dc_kad_free(b);
    dc_kad_free(a);
}

/* ---- allocation failure ----------------------------------------------------------------- */

static void test_alloc_failures(void **state)
{
    struct dc_peer_id self, prov, from;
    struct dc_kad *kad, *full;
    struct dc_buf blob, req, out;
    int rc;

    (void)state;
    rand_peer(&self);
    rand_peer(&from);
    for (long i = 0;; i++) {
        dc_alloc_fail_after(i);
        rc = dc_kad_new(&(struct dc_kad_config){.self = self}, &kad);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
    }
    dc_kad_free(kad);

    /* A populated node, a saved store, a request in wire form. */
    full = new_kad(&self, tweak_addrs);
    fill_store(full, &prov);
    for (int i = 0; i < 50; i++) {
        struct dc_peer_id p;

        rand_peer(&p);
        assert_true(dc_kad_add_peer(full, &p, 0) >= 0);
    }
    dc_buf_init(&blob, 0);
    assert_int_equal(dc_kad_store_save(full, &blob), 0);
    dc_buf_init(&req, 0);
    {
        struct dc_kad_msg m;

        dc_kad_msg_init(&m);
        m.type = DC_KAD_GET_PROVIDERS;
        assert_int_equal(dc_kad_msg_set_key(&m, (const uint8_t *)"cid", 3), 0);
        assert_int_equal(dc_kad_msg_encode(&m, &req), 0);
        dc_kad_msg_cleanup(&m);
    }

    /* Store load. */
    for (long i = 0;; i++) {
        kad = new_kad(&self, NULL);
        assert_int_equal(dc_kad_set_validator(kad, "democritus", &demo_validator), 0);
        dc_alloc_fail_after(i);
        rc = dc_kad_store_load(kad, blob.data, blob.len, 1000);
        dc_alloc_fail_after(-1);
        dc_kad_free(kad);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
    }
    /* Handle a request in wire form (decode, closest peers with addresses, encode). */
    for (long i = 0;; i++) {
        dc_buf_init(&out, 0);
        dc_alloc_fail_after(i);
        rc = dc_kad_handle_request_bytes(full, &from, req.data + 1, req.len - 1, 1000, &out);
        dc_alloc_fail_after(-1);
        dc_buf_cleanup(&out);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
    }
    /* Lookup construction and one response. */
    for (long i = 0;; i++) {
        struct dc_kad_lookup *l;
        struct dc_kad_lookup_config cfg = {
            .type = DC_KAD_GET_PROVIDERS, .key = (const uint8_t *)"cid", .key_len = 3};
        struct dc_kad_action a;
        struct dc_kad_msg resp;

        dc_alloc_fail_after(i);
        rc = dc_kad_lookup_new(full, &cfg, 0, &l);
        if (rc == 0) {
            assert_int_equal(dc_kad_lookup_poll(l, 0, &a), 1);
            assert_int_equal(a.type, DC_KAD_ACTION_SEND);
            dc_alloc_fail_after(-1);
            assert_int_equal(dc_kad_handle_request(full, &from, a.msg, 0, &resp), 0);
            dc_alloc_fail_after(i);
            rc = dc_kad_lookup_on_response(l, a.req_id, &resp, 0);
            dc_alloc_fail_after(-1);
            dc_kad_msg_cleanup(&resp);
            dc_kad_lookup_free(l);
        }
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
    }
    dc_buf_cleanup(&req);
    dc_buf_cleanup(&blob);
    dc_kad_free(full);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance),
        cmocka_unit_test(test_table_insert_evict),
        cmocka_unit_test(test_table_closest),
        cmocka_unit_test(test_refresh_key),
        cmocka_unit_test(test_lookup_converges),
        cmocka_unit_test(test_lookup_timeouts_and_failures),
        cmocka_unit_test(test_lookup_empty_table),
        cmocka_unit_test(test_validators),
        cmocka_unit_test(test_server),
        cmocka_unit_test(test_client_mode),
        cmocka_unit_test(test_lookup_value_and_providers),
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_persist),
        cmocka_unit_test(test_alloc_failures),
    };

    if (dc_crypto_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}

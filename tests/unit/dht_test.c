/* SPDX-License-Identifier: MIT */
/*
 * dht_test.c - the Kademlia service on real hosts: four hosts on one libuv loop over
 * 127.0.0.1, each with a DHT server (one in client mode); identify fills the routing tables.
 * Covers PUT/GET and PROVIDE/FIND_PROVIDERS across nodes, a client-mode node that is never
 * asked, a lookup whose peer died, operations cut short by dc_dht_free (DC_ECLOSED), and the
 * SQLite store surviving a restart. /democritus/ values are signed records (p2p/record.h):
 * their builder and validator are tested here too, without hosts (shape and signature
 * errors, replay under another key, expiry, selection, caps, allocation failures). Also the
 * routing table's liveness check (a real kad PING to a quiet peer before a newcomer may
 * replace it). Leaks show up under ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <uv.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/dht.h"
#include "p2p/host.h"
#include "p2p/record.h"

#define N_NODES 4

struct node {
    struct dc_identity *id;
    struct dc_host *host;
    struct dc_dht *dht;
    struct dc_multiaddr addr; /* with /p2p/ */
};

struct result {
    bool done;
    int status;
    uint8_t value[2048]; /* GET: the envelope */
    size_t value_len;
    size_t n_providers;
    struct dc_peer_id provider;
    size_t n_stored;
};

static uv_loop_t loop;
static uv_timer_t wake;
static struct node nodes[N_NODES];

static void on_identified(void *ud, const struct dc_peer_info *info)
{
    struct node *n = ud;

    if (n->dht != NULL)
        dc_dht_peer_identified(n->dht, info);
}

static void on_wake(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *flag or 10 s. */
static void run_until(const bool *flag)
{
    uint64_t end = uv_now(&loop) + 10000;

    while (!*flag && uv_now(&loop) < end) {
        uv_timer_start(&wake, on_wake, 20, 0);
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_true(*flag);
}

static void run_for(uint64_t ms)
{
    uint64_t end = uv_now(&loop) + ms;

    while (uv_now(&loop) < end) {
        uv_timer_start(&wake, on_wake, 10, 0);
        uv_run(&loop, UV_RUN_ONCE);
    }
}

static void on_done(void *ud, int status, const struct dc_dht_result *r)
{
    struct result *res = ud;

    res->done = true;
    res->status = status;
    res->n_providers = r->n_providers;
    res->n_stored = r->n_stored;
    if (r->n_providers > 0)
        res->provider = r->providers[0].id;
    if (r->value != NULL && r->value_len <= sizeof(res->value)) {
        memcpy(res->value, r->value, r->value_len);
        res->value_len = r->value_len;
    }
}

static uint64_t now_ms(void)
{
    return (uint64_t)time(NULL) * 1000u;
}

/* Writes "/democritus/<kind>/<id's PeerId>" into key[0..cap). */
static void record_key(const struct dc_identity *id, const char *kind, char *key, size_t cap)
{
    char peer[DC_PEER_ID_STR_MAX];

    assert_true(dc_peer_id_to_string(dc_identity_peer_id(id), peer, sizeof(peer)) > 0);
    assert_true((size_t)snprintf(key, cap, "/democritus/%s/%s", kind, peer) < cap);
}

/* A record signed by 'id' (seq, expiry in an hour) appended to 'out'. */
static void record_sign(const struct dc_identity *id, const char *key, uint64_t seq,
                        const char *body, struct dc_buf *out)
{
    assert_int_equal(dc_dht_record_sign(id, (const uint8_t *)key, strlen(key), seq,
                                        now_ms() + 3600000u, (const uint8_t *)body, strlen(body),
                                        out),
                     0);
}

/* The body of the record GET found under 'key' equals 'body'. */
static void assert_body(const struct result *res, const char *key, const char *body)
{
    struct dc_dht_record r;

    assert_int_equal(dc_dht_record_open((const uint8_t *)key, strlen(key), res->value,
                                        res->value_len, now_ms(), &r),
                     0);
    assert_int_equal(r.body_len, strlen(body));
    assert_memory_equal(r.body, body, r.body_len);
}

static void node_start(struct node *n, bool client, const char *db)
{
    struct dc_host_config hc = {0};
    struct dc_dht_config dc = {0};
    struct dc_multiaddr ma, addrs[4];

    assert_int_equal(dc_identity_generate(&n->id), 0);
    hc.loop = &loop;
    hc.identity = n->id;
    hc.ev.on_identified = on_identified;
    hc.ud = n;
    assert_int_equal(dc_host_new(&hc, &n->host), 0);
    assert_int_equal(dc_multiaddr_parse("/ip4/127.0.0.1/tcp/0", &ma, NULL), 0);
    assert_int_equal(dc_host_listen(n->host, &ma), 0);
    assert_true(dc_host_listen_addrs(n->host, addrs, 4) >= 1);
    n->addr = addrs[0];
    assert_int_equal(dc_multiaddr_append_p2p(&n->addr, dc_host_peer_id(n->host)->bytes,
                                             dc_host_peer_id(n->host)->len),
                     0);
    dc.host = n->host;
    dc.loop = &loop;
    dc.client_mode = client;
    dc.db_path = db;
    dc.request_timeout_ms = 2000;
    assert_int_equal(dc_dht_new(&dc, &n->dht), 0);
}

static void node_stop(struct node *n)
{
    dc_dht_free(n->dht);
    n->dht = NULL;
    dc_host_free(n->host);
    n->host = NULL;
    run_for(30);
    dc_identity_free(n->id);
    n->id = NULL;
}

static void on_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    int *left = ud;

    (void)peer;
    assert_int_equal(status, 0);
    (*left)--;
}

/* Nodes 1..N-1 dial node 0; every server ends up in node 0's table and node 0 in theirs. */
static int setup(void **state)
{
    int left = N_NODES - 1;
    bool joined = false;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &wake);
    for (int i = 0; i < N_NODES; i++)
        node_start(&nodes[i], i == N_NODES - 1, NULL);
    for (int i = 1; i < N_NODES; i++)
        assert_int_equal(dc_host_dial(nodes[i].host, &nodes[0].addr, 5000, on_dialed, &left), 0);
    for (uint64_t end = uv_now(&loop) + 10000; !joined && uv_now(&loop) < end;) {
        run_for(20);
        /* Node 0 knows the two other servers; they know node 0 (self lookups run). */
        joined = left == 0 && dc_dht_table_size(nodes[0].dht) == N_NODES - 2 &&
                 dc_dht_table_size(nodes[1].dht) >= 1 && dc_dht_table_size(nodes[2].dht) >= 1;
    }
    assert_true(joined);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_NODES; i++)
        if (nodes[i].host != NULL)
            node_stop(&nodes[i]);
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

static void test_client_mode_not_in_tables(void **state)
{
    (void)state;
    /* The client advertises no kad protocol: no server put it in its table. */
    for (int i = 0; i < N_NODES - 1; i++)
        assert_int_equal(dc_dht_table_size(nodes[i].dht) <= N_NODES - 2, true);
    assert_true(dc_dht_table_size(nodes[N_NODES - 1].dht) >= 1);
}

static void test_put_get(void **state)
{
    const char *val = "hello dht";
    char key[256];
    struct result put = {0}, get = {0}, miss = {0};
    struct dc_buf rec;

    (void)state;
    record_key(nodes[2].id, "test", key, sizeof(key));
    dc_buf_init(&rec, 0);
    record_sign(nodes[2].id, key, 1, val, &rec);
    /* An unsigned value is refused at once. */
    assert_int_equal(dc_dht_put(nodes[2].dht, (const uint8_t *)key, strlen(key),
                                (const uint8_t *)val, strlen(val), on_done, &put),
                     DC_ECORRUPT);
    assert_int_equal(dc_dht_put(nodes[2].dht, (const uint8_t *)key, strlen(key), rec.data, rec.len,
                                on_done, &put),
                     0);
    dc_buf_cleanup(&rec);
    assert_false(put.done); /* never inside the call */
    run_until(&put.done);
    assert_int_equal(put.status, 0);
    assert_true(put.n_stored >= 1);
    /* The client (never stored anything) finds it through the servers. */
    assert_int_equal(
        dc_dht_get(nodes[N_NODES - 1].dht, (const uint8_t *)key, strlen(key), on_done, &get), 0);
    run_until(&get.done);
    assert_int_equal(get.status, 0);
    assert_body(&get, key, val);
    assert_int_equal(
        dc_dht_get(nodes[1].dht, (const uint8_t *)"/democritus/test/none", 21, on_done, &miss), 0);
    run_until(&miss.done);
    assert_int_equal(miss.status, DC_ENOENT);
    /* A namespace without a validator is refused at once. */
    assert_int_equal(dc_dht_put(nodes[1].dht, (const uint8_t *)"/nope/x", 7, (const uint8_t *)"v",
                                1, on_done, &miss),
                     DC_EUNSUPPORTED);
}

static void test_provide_find(void **state)
{
    const uint8_t key[] = "band-key-1234";
    struct result prov = {0}, find = {0}, none = {0};

    (void)state;
    assert_int_equal(dc_dht_provide(nodes[1].dht, key, sizeof(key) - 1, true, on_done, &prov), 0);
    run_until(&prov.done);
    assert_int_equal(prov.status, 0);
    assert_int_equal(
        dc_dht_find_providers(nodes[N_NODES - 1].dht, key, sizeof(key) - 1, 1, on_done, &find), 0);
    run_until(&find.done);
    assert_int_equal(find.status, 0);
    assert_int_equal(find.n_providers, 1);
    assert_true(dc_peer_id_equal(&find.provider, dc_host_peer_id(nodes[1].host)));
    assert_int_equal(
        dc_dht_find_providers(nodes[2].dht, (const uint8_t *)"nobody", 6, 0, on_done, &none), 0);
    run_until(&none.done);
    assert_int_equal(none.status, DC_ENOENT);
}

static void test_dead_peer(void **state)
{
    const char *val = "still here";
    char key[256];
    struct result put = {0}, get = {0};
    struct dc_buf rec;

    (void)state;
    record_key(nodes[0].id, "after-death", key, sizeof(key));
    dc_buf_init(&rec, 0);
    record_sign(nodes[0].id, key, 1, val, &rec);
    assert_int_equal(dc_dht_put(nodes[0].dht, (const uint8_t *)key, strlen(key), rec.data, rec.len,
                                on_done, &put),
                     0);
    dc_buf_cleanup(&rec);
    run_until(&put.done);
    /* Node 2 goes away; node 1's lookups find its entry dead and carry on. */
    node_stop(&nodes[2]);
    assert_int_equal(dc_dht_get(nodes[1].dht, (const uint8_t *)key, strlen(key), on_done, &get), 0);
    run_until(&get.done);
    assert_int_equal(get.status, 0);
    assert_body(&get, key, val);
}

static void test_free_cancels(void **state)
{
    struct result get = {0};

    (void)state;
    assert_int_equal(
        dc_dht_get(nodes[1].dht, (const uint8_t *)"/democritus/test/cut", 20, on_done, &get), 0);
    dc_dht_free(nodes[1].dht);
    nodes[1].dht = NULL;
    assert_true(get.done);
    assert_int_equal(get.status, DC_ECLOSED);
}

static void test_persistence(void **state)
{
    char dir[] = "/tmp/dc-dht-test-XXXXXX", path[64], key[256];
    const uint8_t *v;
    size_t vlen;
    struct node n = {0};
    struct result put = {0};
    struct dc_buf rec;
    struct dc_identity *signer;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/dht.sqlite", dir);
    /* Any peer's record can be stored; this one is signed by a key of its own. */
    assert_int_equal(dc_identity_generate(&signer), 0);
    record_key(signer, "persist", key, sizeof(key));
    dc_buf_init(&rec, 0);
    record_sign(signer, key, 1, "kept", &rec);
    dc_identity_free(signer);
    node_start(&n, false, path);
    /* No peers: stored locally, the network part reports DC_EAGAIN. */
    assert_int_equal(
        dc_dht_put(n.dht, (const uint8_t *)key, strlen(key), rec.data, rec.len, on_done, &put), 0);
    run_until(&put.done);
    assert_int_equal(put.status, DC_EAGAIN);
    node_stop(&n);
    node_start(&n, false, path);
    assert_int_equal(
        dc_kad_get_local(dc_dht_kad(n.dht), (const uint8_t *)key, strlen(key), now_ms(), &v, &vlen),
        0);
    assert_int_equal(vlen, rec.len);
    assert_memory_equal(v, rec.data, vlen);
    dc_buf_cleanup(&rec);
    node_stop(&n);
    unlink(path);
    snprintf(path, sizeof(path), "%s/dht.sqlite-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/dht.sqlite-shm", dir);
    unlink(path);
    rmdir(dir);
}

/* Common prefix length of two peers' key-space points. */
static unsigned peer_cpl(const struct dc_peer_id *a, const struct dc_peer_id *b)
{
    uint8_t ka[DC_KAD_KEY_LEN], kb[DC_KAD_KEY_LEN];

    dc_kad_hash(a->bytes, a->len, ka);
    dc_kad_hash(b->bytes, b->len, kb);
    return dc_kad_common_prefix(ka, kb);
}

/* The next PeerId (a sha2-256 multihash of a counter) in bucket 'cpl' of 'self'. */
static void fake_peer_in(const struct dc_peer_id *self, unsigned cpl, uint32_t *ctr,
                         struct dc_peer_id *out)
{
    uint8_t mh[34] = {0x12, 0x20};

    do {
        (*ctr)++;
        crypto_hash_sha256(mh + 2, (const uint8_t *)ctr, sizeof(*ctr));
        assert_int_equal(dc_peer_id_from_bytes(mh, sizeof(mh), out), 0);
    } while (peer_cpl(self, out) != cpl);
}

/* Routing-table liveness: a full bucket pings its quiet least-recently-seen peer for real
 * (dialing it: it is not connected) and keeps it when it answers; a peer that cannot be
 * reached is evicted and a waiting newcomer takes its place. */
static void test_liveness_ping(void **state)
{
    struct node a = {0}, x = {0};
    const struct dc_peer_id *a_id, *x_id;
    struct dc_peer_id fake, first_fake, newcomer;
    struct dc_kad *kad;
    uint64_t old = now_ms() - 600000u;
    uint32_t ctr = 0;
    unsigned cpl;

    (void)state;
    node_start(&a, false, NULL);
    a_id = dc_host_peer_id(a.host);
    for (;;) { /* a near bucket needs few fake peers to fill */
        node_start(&x, false, NULL);
        x_id = dc_host_peer_id(x.host);
        cpl = peer_cpl(a_id, x_id);
        if (cpl <= 3)
            break;
        node_stop(&x);
    }
    kad = dc_dht_kad(a.dht);
    assert_int_equal(dc_host_add_peer_addrs(a.host, x_id, &x.addr, 1), 0);
    assert_int_equal(dc_kad_add_peer(kad, x_id, old), DC_KAD_ADDED);
    fake_peer_in(a_id, cpl, &ctr, &first_fake);
    assert_int_equal(dc_kad_add_peer(kad, &first_fake, old + 1), DC_KAD_ADDED);
    while (dc_kad_bucket_size(kad, cpl) < DC_KAD_K) {
        fake_peer_in(a_id, cpl, &ctr, &fake);
        assert_int_equal(dc_kad_add_peer(kad, &fake, old + 2), DC_KAD_ADDED);
    }
    assert_false(dc_host_is_connected(a.host, x_id));

    /* A newcomer: x (quiet for 10 min, not connected) is asked, answers, and stays. */
    fake_peer_in(a_id, cpl, &ctr, &newcomer);
    dc_dht_add_server(a.dht, &newcomer);
    for (uint64_t end = uv_now(&loop) + 10000; uv_now(&loop) < end;) {
        run_for(20);
        if (dc_host_is_connected(a.host, x_id))
            break;
    }
    assert_true(dc_host_is_connected(a.host, x_id)); /* the check dialed it */
    run_for(300);
    assert_true(dc_kad_has_peer(kad, x_id));

    /* Another newcomer: now the oldest is a fake peer without addresses. It cannot answer,
     * so it goes and a newcomer takes its place. */
    fake_peer_in(a_id, cpl, &ctr, &newcomer);
    dc_dht_add_server(a.dht, &newcomer);
    run_for(300);
    assert_false(dc_kad_has_peer(kad, &first_fake));
    assert_true(dc_kad_has_peer(kad, x_id));
    /* (The other fake peers may be gone too by now: the table refresh's lookups fail on
     * them.) */
    /* The peerstore keeps routing-table peers: the hook answers for x. */
    assert_non_null(dc_host_peer_info(a.host, x_id));
    node_stop(&x);
    node_stop(&a);
}

/* ---- signed records, no hosts ------------------------------------------------------------ */

static void test_record_roundtrip(void **state)
{
    struct dc_identity *id, *other;
    char key[256], key2[256], okey[256];
    struct dc_dht_record r;
    struct dc_buf b;
    const uint64_t now = 1800000000000ull;

    (void)state;
    assert_int_equal(dc_identity_generate(&id), 0);
    assert_int_equal(dc_identity_generate(&other), 0);
    record_key(id, "expert", key, sizeof(key));
    record_key(id, "other/kind", key2, sizeof(key2));
    record_key(other, "expert", okey, sizeof(okey));
    dc_buf_init(&b, 0);
    assert_int_equal(dc_dht_record_sign(id, (const uint8_t *)key, strlen(key), 42, now + 1000,
                                        (const uint8_t *)"body", 4, &b),
                     0);
    assert_int_equal(dc_dht_record_open((const uint8_t *)key, strlen(key), b.data, b.len, now, &r),
                     0);
    assert_int_equal(r.seq, 42);
    assert_int_equal(r.expires_ms, now + 1000);
    assert_int_equal(r.body_len, 4);
    assert_memory_equal(r.body, "body", 4);
    assert_true(dc_peer_id_equal(&r.signer, dc_identity_peer_id(id)));
    /* Expired; replayed under another key of the same peer; under another peer's key. */
    assert_int_equal(
        dc_dht_record_open((const uint8_t *)key, strlen(key), b.data, b.len, now + 1000, NULL),
        DC_ETIMEDOUT);
    assert_int_equal(
        dc_dht_record_open((const uint8_t *)key2, strlen(key2), b.data, b.len, now, NULL),
        DC_EPERM);
    assert_int_equal(
        dc_dht_record_open((const uint8_t *)okey, strlen(okey), b.data, b.len, now, NULL),
        DC_EPERM);
    /* Any changed byte is refused; so is every truncation. */
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x10;
        assert_true(
            dc_dht_record_open((const uint8_t *)key, strlen(key), b.data, b.len, now, NULL) < 0);
        b.data[i] ^= 0x10;
    }
    for (size_t n = 0; n < b.len; n++)
        assert_true(dc_dht_record_open((const uint8_t *)key, strlen(key), b.data, n, now, NULL) <
                    0);
    /* Signing refuses keys that are not ours, malformed keys, and oversized bodies. */
    assert_int_equal(
        dc_dht_record_sign(id, (const uint8_t *)okey, strlen(okey), 1, now, NULL, 0, &b), DC_EPERM);
    assert_int_equal(
        dc_dht_record_sign(id, (const uint8_t *)"/democritus/x", 13, 1, now, NULL, 0, &b),
        DC_ECORRUPT);
    assert_int_equal(
        dc_dht_record_key_check((const uint8_t *)"/democritus//x", 14, dc_identity_peer_id(id)),
        DC_ECORRUPT);
    assert_int_equal(dc_dht_record_sign(id, (const uint8_t *)key, strlen(key), 1, 0, NULL, 0, &b),
                     DC_EINVAL);
    {
        static uint8_t big[DC_DHT_RECORD_MAX_BODY + 1];
        size_t before = b.len;

        assert_int_equal(
            dc_dht_record_sign(id, (const uint8_t *)key, strlen(key), 1, now, big, sizeof(big), &b),
            DC_ELIMIT);
        assert_int_equal(b.len, before);
    }
    dc_buf_cleanup(&b);
    dc_identity_free(other);
    dc_identity_free(id);
}

static void test_record_select(void **state)
{
    struct dc_identity *id;
    struct dc_kad_validator v;
    struct dc_buf a, b, c;
    char key[256];
    const uint64_t now = 1800000000000ull;

    (void)state;
    assert_int_equal(dc_identity_generate(&id), 0);
    record_key(id, "sel", key, sizeof(key));
    dc_buf_init(&a, 0);
    dc_buf_init(&b, 0);
    dc_buf_init(&c, 0);
    assert_int_equal(dc_dht_record_sign(id, (const uint8_t *)key, strlen(key), 5, now + 1000,
                                        (const uint8_t *)"a", 1, &a),
                     0);
    assert_int_equal(dc_dht_record_sign(id, (const uint8_t *)key, strlen(key), 9, now + 1000,
                                        (const uint8_t *)"b", 1, &b),
                     0);
    assert_int_equal(dc_dht_record_sign(id, (const uint8_t *)key, strlen(key), 9, now + 1000,
                                        (const uint8_t *)"c", 1, &c),
                     0);
    dc_dht_record_validator(&v);
    {
        const uint8_t *vals[3] = {a.data, b.data, c.data};
        size_t lens[3] = {a.len, b.len, c.len};

        assert_int_equal(v.select(NULL, (const uint8_t *)key, strlen(key), vals, lens, 3), 1);
        assert_int_equal(v.select(NULL, (const uint8_t *)key, strlen(key), vals + 2, lens + 2, 1),
                         0);
    }
    /* Through a kad store: a lower seq does not replace a higher one. */
    {
        struct dc_kad_config cfg;
        struct dc_kad *kad;

        dc_kad_config_default(&cfg, dc_identity_peer_id(id));
        assert_int_equal(dc_kad_new(&cfg, &kad), 0);
        assert_int_equal(dc_kad_set_validator(kad, "democritus", &v), 0);
        assert_int_equal(
            dc_kad_put_local(kad, (const uint8_t *)key, strlen(key), b.data, b.len, now), 0);
        assert_int_equal(
            dc_kad_put_local(kad, (const uint8_t *)key, strlen(key), a.data, a.len, now),
            DC_EEXIST);
        dc_kad_free(kad);
    }
    dc_buf_cleanup(&a);
    dc_buf_cleanup(&b);
    dc_buf_cleanup(&c);
    dc_identity_free(id);
}

/* dc_dht_record_sign and dc_dht_record_open unwind with DC_ENOMEM at every allocation and
 * leak nothing. */
static void test_record_alloc_failures(void **state)
{
    struct dc_identity *id;
    struct dc_dht_record r;
    char key[256];
    struct dc_buf b;
    int rc = DC_ENOMEM;

    (void)state;
    assert_int_equal(dc_identity_generate(&id), 0);
    record_key(id, "oom", key, sizeof(key));
    dc_buf_init(&b, 0);
    for (long n = 0; rc == DC_ENOMEM; n++) {
        assert_true(n < 64);
        dc_alloc_fail_after(n);
        rc = dc_dht_record_sign(id, (const uint8_t *)key, strlen(key), 1, 1000,
                                (const uint8_t *)"x", 1, &b);
        dc_alloc_fail_after(-1);
        assert_true(rc == 0 || (rc == DC_ENOMEM && b.len == 0));
    }
    assert_int_equal(rc, 0);
    rc = DC_ENOMEM;
    for (long n = 0; rc == DC_ENOMEM; n++) {
        assert_true(n < 64);
        dc_alloc_fail_after(n);
        rc = dc_dht_record_open((const uint8_t *)key, strlen(key), b.data, b.len, 999, &r);
        dc_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == DC_ENOMEM);
    }
    assert_int_equal(rc, 0);
    /* The opened record borrows from the envelope. */
    assert_true(r.key >= b.data && r.key + r.key_len <= b.data + b.len);
    assert_true(r.body >= b.data && r.body + r.body_len <= b.data + b.len);
    assert_memory_equal(r.body, "x", 1);
    dc_buf_cleanup(&b);
    dc_identity_free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test(test_record_select),
        cmocka_unit_test(test_record_alloc_failures),
        cmocka_unit_test(test_client_mode_not_in_tables),
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_provide_find),
        cmocka_unit_test(test_dead_peer),
        cmocka_unit_test(test_free_cancels),
        cmocka_unit_test(test_persistence),
        cmocka_unit_test(test_liveness_ping),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

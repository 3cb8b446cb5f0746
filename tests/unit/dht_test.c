/* SPDX-License-Identifier: MIT */
/*
 * dht_test.c - the Kademlia service on real hosts: four hosts on one libuv loop over
 * 127.0.0.1, each with a DHT server (one in client mode); identify fills the routing tables.
 * Covers PUT/GET and PROVIDE/FIND_PROVIDERS across nodes, a client-mode node that is never
 * asked, a lookup whose peer died, operations cut short by dc_dht_free (DC_ECLOSED), and the
 * SQLite store surviving a restart. Leaks show up under ASan.
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
#include <uv.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/dht.h"
#include "p2p/host.h"

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
    char value[64];
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
    if (r->value != NULL && r->value_len < sizeof(res->value)) {
        memcpy(res->value, r->value, r->value_len);
        res->value[r->value_len] = '\0';
    }
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
    const char *key = "/democritus/test/put-get", *val = "hello dht";
    struct result put = {0}, get = {0}, miss = {0};

    (void)state;
    assert_int_equal(dc_dht_put(nodes[2].dht, (const uint8_t *)key, strlen(key),
                                (const uint8_t *)val, strlen(val), on_done, &put),
                     0);
    assert_false(put.done); /* never inside the call */
    run_until(&put.done);
    assert_int_equal(put.status, 0);
    assert_true(put.n_stored >= 1);
    /* The client (never stored anything) finds it through the servers. */
    assert_int_equal(
        dc_dht_get(nodes[N_NODES - 1].dht, (const uint8_t *)key, strlen(key), on_done, &get), 0);
    run_until(&get.done);
    assert_int_equal(get.status, 0);
    assert_string_equal(get.value, val);
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
    const char *key = "/democritus/test/after-death", *val = "still here";
    struct result put = {0}, get = {0};

    (void)state;
    assert_int_equal(dc_dht_put(nodes[0].dht, (const uint8_t *)key, strlen(key),
                                (const uint8_t *)val, strlen(val), on_done, &put),
                     0);
    run_until(&put.done);
    /* Node 2 goes away; node 1's lookups find its entry dead and carry on. */
    node_stop(&nodes[2]);
    assert_int_equal(dc_dht_get(nodes[1].dht, (const uint8_t *)key, strlen(key), on_done, &get), 0);
    run_until(&get.done);
    assert_int_equal(get.status, 0);
    assert_string_equal(get.value, val);
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
    char dir[] = "/tmp/dc-dht-test-XXXXXX", path[64];
    const char *key = "/democritus/test/persist", *val = "kept";
    const uint8_t *v;
    size_t vlen;
    struct node n = {0};
    struct result put = {0};

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/dht.sqlite", dir);
    node_start(&n, false, path);
    /* No peers: stored locally, the network part reports DC_EAGAIN. */
    assert_int_equal(dc_dht_put(n.dht, (const uint8_t *)key, strlen(key), (const uint8_t *)val,
                                strlen(val), on_done, &put),
                     0);
    run_until(&put.done);
    assert_int_equal(put.status, DC_EAGAIN);
    node_stop(&n);
    node_start(&n, false, path);
    assert_int_equal(dc_kad_get_local(dc_dht_kad(n.dht), (const uint8_t *)key, strlen(key),
                                      (uint64_t)time(NULL) * 1000u, &v, &vlen),
                     0);
    assert_int_equal(vlen, strlen(val));
    assert_memory_equal(v, val, vlen);
    node_stop(&n);
    unlink(path);
    snprintf(path, sizeof(path), "%s/dht.sqlite-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/dht.sqlite-shm", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_mode_not_in_tables),
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_provide_find),
        cmocka_unit_test(test_dead_peer),
        cmocka_unit_test(test_free_cancels),
        cmocka_unit_test(test_persistence),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}

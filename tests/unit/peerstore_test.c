/* SPDX-License-Identifier: MIT */
/*
 * peerstore_test.c - the peerstore: the SQLite file on its own (round trip across reopen, the
 * peer bound, address expiry, a corrupt file, allocation failures while loading and saving)
 * and through the host (two hosts on one loop: what one learned about the other survives its
 * restart; the in-memory bounds on peers and addresses, a connected peer never evicted; address
 * expiry on the save timer; a corrupt or unreachable database leaves a working memory-only host
 * with a clear error; an allocation-failure loop over dc_host_new with a database to load).
 * Leaks show up under ASan.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/host.h"
#include "p2p/peerstore.h"

#define DAY_MS (24ull * 3600u * 1000u)

static uv_loop_t loop;
static uv_timer_t wake;
static char dir[64];

static uint64_t wall_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void on_wake(uv_timer_t *t)
{
    (void)t;
}

static void run_for(uint64_t ms)
{
    uint64_t end;

    uv_update_time(&loop);
    end = uv_now(&loop) + ms;
    while (uv_now(&loop) < end) {
        uv_timer_start(&wake, on_wake, 5, 0);
        uv_run(&loop, UV_RUN_ONCE);
    }
}

static void path_in_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static void remove_db(void)
{
    const char *names[] = {"peers.sqlite", "peers.sqlite-wal", "peers.sqlite-shm"};
    char p[128];

    for (size_t i = 0; i < DC_ARRAY_LEN(names); i++) {
        path_in_dir(p, sizeof(p), names[i]);
        unlink(p);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/dc-peerstore-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &wake);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    remove_db();
    rmdir(dir);
    return 0;
}

/* A peer with a fresh identity, 'n_addrs' loopback addresses and two protocols. */
static void make_info(struct dc_peer_info *info, size_t n_addrs, uint64_t seen_ms)
{
    struct dc_identity *id;
    char text[64];

    memset(info, 0, sizeof(*info));
    assert_int_equal(dc_identity_generate(&id), 0);
    info->id = *dc_identity_peer_id(id);
    dc_identity_free(id);
    snprintf(info->agent, sizeof(info->agent), "agent/%llu", (unsigned long long)seen_ms);
    snprintf(info->protocol_version, sizeof(info->protocol_version), "ipfs/0.1.0");
    info->protocols[0] = dc_strdup("/ipfs/id/1.0.0");
    info->protocols[1] = dc_strdup("/democritus/kad/1.0.0");
    assert_non_null(info->protocols[0]);
    assert_non_null(info->protocols[1]);
    info->n_protocols = 2;
    for (size_t i = 0; i < n_addrs; i++) {
        snprintf(text, sizeof(text), "/ip4/127.0.0.1/tcp/%zu", 4000 + i);
        assert_int_equal(dc_multiaddr_parse(text, &info->addrs[i], NULL), 0);
        info->addr_source[i] = DC_ADDR_SOURCE_IDENTIFY;
        info->addr_seen_ms[i] = seen_ms;
    }
    info->n_addrs = n_addrs;
    info->last_seen_ms = seen_ms;
    info->rtt_us = 1234;
}

struct loaded {
    size_t n;
    struct dc_peer_info info[16];
};

static int collect(void *ud, struct dc_peer_info *info)
{
    struct loaded *l = ud;

    if (l->n < DC_ARRAY_LEN(l->info))
        l->info[l->n++] = *info;
    else
        dc_peer_info_cleanup(info);
    return 0;
}

static void loaded_cleanup(struct loaded *l)
{
    for (size_t i = 0; i < l->n; i++)
        dc_peer_info_cleanup(&l->info[i]);
    l->n = 0;
}

/* ---- the database on its own ------------------------------------------------------------ */

static void test_db_reopen(void **state)
{
    struct dc_peerstore *ps;
    struct dc_peer_info a, b;
    const struct dc_peer_info *batch[2] = {&a, &b};
    struct loaded l = {0};
    char path[128], err[256];
    struct stat st;
    uint64_t now = wall_ms();

    (void)state;
    path_in_dir(path, sizeof(path), "peers.sqlite");
    make_info(&a, 3, now - 1000);
    make_info(&b, 1, now);
    assert_int_equal(dc_peerstore_open(path, &ps, err, sizeof(err)), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(
        dc_peerstore_save(ps, batch, 2, now, DC_HOST_ADDR_TTL_MS, 100, err, sizeof(err)), 0);
    /* Saving again replaces (no duplicate rows). */
    assert_int_equal(
        dc_peerstore_save(ps, batch, 2, now, DC_HOST_ADDR_TTL_MS, 100, err, sizeof(err)), 0);
    dc_peerstore_close(ps);

    assert_int_equal(dc_peerstore_open(path, &ps, err, sizeof(err)), 0);
    assert_int_equal(dc_peerstore_count(ps), 2);
    assert_int_equal(
        dc_peerstore_load(ps, now, DC_HOST_ADDR_TTL_MS, 100, collect, &l, err, sizeof(err)), 0);
    assert_int_equal(l.n, 2);
    /* Most recently seen first. */
    assert_true(dc_peer_id_equal(&l.info[0].id, &b.id));
    assert_true(dc_peer_id_equal(&l.info[1].id, &a.id));
    assert_string_equal(l.info[1].agent, a.agent);
    assert_string_equal(l.info[1].protocol_version, "ipfs/0.1.0");
    assert_int_equal(l.info[1].n_protocols, 2);
    assert_string_equal(l.info[1].protocols[1], "/democritus/kad/1.0.0");
    assert_int_equal(l.info[1].n_addrs, 3);
    assert_int_equal(l.info[1].addr_source[0], DC_ADDR_SOURCE_IDENTIFY);
    assert_int_equal(l.info[1].addr_seen_ms[0], now - 1000);
    assert_int_equal(l.info[1].last_seen_ms, now - 1000);
    assert_int_equal(l.info[1].rtt_us, 1234);
    assert_false(l.info[1].connected);
    loaded_cleanup(&l);
    dc_peerstore_close(ps);
    dc_peer_info_cleanup(&a);
    dc_peer_info_cleanup(&b);
    dc_peerstore_close(NULL);
}

static void test_db_bounds_and_expiry(void **state)
{
    struct dc_peerstore *ps;
    struct dc_peer_info p[10];
    const struct dc_peer_info *batch[10];
    struct loaded l = {0};
    char path[128], err[256];
    uint64_t now = wall_ms();

    (void)state;
    path_in_dir(path, sizeof(path), "peers.sqlite");
    for (size_t i = 0; i < 10; i++) {
        make_info(&p[i], 2, now - (10 - i) * 1000);
        batch[i] = &p[i];
    }
    /* Peer 9's first address is 8 days old: past the 7-day TTL. */
    p[9].addr_seen_ms[0] = now - 8 * DAY_MS;
    assert_int_equal(dc_peerstore_open(path, &ps, err, sizeof(err)), 0);
    assert_int_equal(
        dc_peerstore_save(ps, batch, 10, now, DC_HOST_ADDR_TTL_MS, 4, err, sizeof(err)), 0);
    assert_int_equal(dc_peerstore_count(ps), 4);
    /* Even with an endless TTL on load, the pruned address is gone from the file. */
    assert_int_equal(dc_peerstore_load(ps, now, UINT64_MAX / 2, 100, collect, &l, err, sizeof(err)),
                     0);
    assert_int_equal(l.n, 4);
    assert_true(dc_peer_id_equal(&l.info[0].id, &p[9].id));
    assert_int_equal(l.info[0].n_addrs, 1);
    assert_true(dc_peer_id_equal(&l.info[3].id, &p[6].id));
    loaded_cleanup(&l);
    /* Load applies its own bound and TTL. */
    assert_int_equal(dc_peerstore_load(ps, now + 8 * DAY_MS, DC_HOST_ADDR_TTL_MS, 2, collect, &l,
                                       err, sizeof(err)),
                     0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.info[0].n_addrs, 0);
    loaded_cleanup(&l);
    dc_peerstore_close(ps);
    for (size_t i = 0; i < 10; i++)
        dc_peer_info_cleanup(&p[i]);
}

static void test_db_corrupt(void **state)
{
    struct dc_peerstore *ps = NULL;
    char path[128], err[256] = "";
    FILE *f;

    (void)state;
    path_in_dir(path, sizeof(path), "peers.sqlite");
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database ", f);
    fclose(f);
    assert_int_equal(dc_peerstore_open(path, &ps, err, sizeof(err)), DC_ECORRUPT);
    assert_null(ps);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "not a database"));
    /* A directory that does not exist: -errno, and the path in the message. */
    err[0] = '\0';
    assert_int_equal(dc_peerstore_open("/nonexistent-dc-dir/peers.sqlite", &ps, err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "/nonexistent-dc-dir/peers.sqlite"));
}

static void test_db_alloc_failures(void **state)
{
    struct dc_peerstore *ps;
    struct dc_peer_info a;
    const struct dc_peer_info *batch[1] = {&a};
    char path[128], err[256];
    uint64_t now = wall_ms();
    int rc;

    (void)state;
    path_in_dir(path, sizeof(path), "peers.sqlite");
    make_info(&a, 2, now);
    for (long n = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_peerstore_open(path, &ps, err, sizeof(err));
        if (rc == 0)
            rc = dc_peerstore_save(ps, batch, 1, now, DC_HOST_ADDR_TTL_MS, 10, err, sizeof(err));
        dc_alloc_fail_after(-1);
        if (rc == 0) {
            dc_peerstore_close(ps);
            break;
        }
        assert_int_equal(rc, DC_ENOMEM);
        dc_peerstore_close(ps);
        ps = NULL;
        assert_true(n < 100);
    }
    assert_int_equal(dc_peerstore_open(path, &ps, err, sizeof(err)), 0);
    for (long n = 0;; n++) {
        struct loaded l = {0};

        dc_alloc_fail_after(n);
        rc = dc_peerstore_load(ps, now, DC_HOST_ADDR_TTL_MS, 10, collect, &l, err, sizeof(err));
        dc_alloc_fail_after(-1);
        if (rc == 0) {
            assert_int_equal(l.n, 1);
            assert_int_equal(l.info[0].n_protocols, 2);
            loaded_cleanup(&l);
            break;
        }
        assert_int_equal(rc, DC_ENOMEM);
        loaded_cleanup(&l);
        assert_true(n < 100);
    }
    dc_peerstore_close(ps);
    dc_peer_info_cleanup(&a);
}

/* ---- through the host ------------------------------------------------------------------- */

struct node {
    struct dc_identity *id;
    struct dc_host *host;
    int identified;
};

static void on_identified(void *ud, const struct dc_peer_info *info)
{
    struct node *n = ud;

    (void)info;
    n->identified++;
}

static int host_start(struct node *n, const char *state_dir, uint32_t max_peers,
                      uint64_t addr_ttl_ms, uint32_t save_ms)
{
    struct dc_host_config cfg = {0};

    if (n->id == NULL)
        assert_int_equal(dc_identity_generate(&n->id), 0);
    cfg.loop = &loop;
    cfg.identity = n->id;
    cfg.agent_version = "democritus/peerstore-test";
    cfg.state_dir = state_dir;
    cfg.max_peers = max_peers;
    cfg.addr_ttl_ms = addr_ttl_ms;
    cfg.peer_save_ms = save_ms;
    cfg.ev.on_identified = on_identified;
    cfg.ud = n;
    return dc_host_new(&cfg, &n->host);
}

static void host_stop(struct node *n)
{
    dc_host_free(n->host);
    n->host = NULL;
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void dial_cb(void *ud, int status, const struct dc_peer_id *peer)
{
    int *done = ud;

    (void)peer;
    assert_int_equal(status, 0);
    (*done)++;
}

static void test_host_persists_across_restart(void **state)
{
    struct node a = {0}, b = {0};
    struct dc_multiaddr ma, b_addr;
    const struct dc_peer_info *pi, *list[4];
    const struct dc_peer_id *bid;
    int done = 0;

    (void)state;
    assert_int_equal(host_start(&a, dir, 0, 0, 0), 0);
    assert_string_equal(dc_host_peerstore_error(a.host), "");
    assert_int_equal(host_start(&b, NULL, 0, 0, 0), 0);
    assert_int_equal(dc_multiaddr_parse("/ip4/127.0.0.1/tcp/0", &ma, NULL), 0);
    assert_int_equal(dc_host_listen(b.host, &ma), 0);
    assert_int_equal(dc_host_listen_addrs(b.host, &b_addr, 1), 1);
    bid = dc_host_peer_id(b.host);
    {
        struct dc_multiaddr dial = b_addr;
        assert_int_equal(dc_multiaddr_append_p2p(&dial, bid->bytes, bid->len), 0);
        assert_int_equal(dc_host_dial(a.host, &dial, 0, dial_cb, &done), 0);
    }
    while (a.identified < 1)
        uv_run(&loop, UV_RUN_ONCE);
    pi = dc_host_peer_info(a.host, bid);
    assert_non_null(pi);
    assert_true(pi->connected && pi->identified);

    /* Restart A: B stays up, A's view of it comes back from the file. */
    host_stop(&a);
    assert_int_equal(host_start(&a, dir, 0, 0, 0), 0);
    assert_int_equal(dc_host_peer_count(a.host), 1);
    pi = dc_host_peer_info(a.host, bid);
    assert_non_null(pi);
    assert_false(pi->connected);
    assert_false(pi->identified);
    assert_string_equal(pi->agent, "democritus/peerstore-test");
    assert_true(pi->last_seen_ms > 0);
    {
        bool found = false;
        for (size_t i = 0; i < pi->n_addrs; i++)
            if (dc_multiaddr_equal(&pi->addrs[i], &b_addr)) {
                found = true;
                assert_true(pi->addr_source[i] == DC_ADDR_SOURCE_DIALED ||
                            pi->addr_source[i] == DC_ADDR_SOURCE_IDENTIFY);
            }
        assert_true(found);
        found = false;
        for (size_t i = 0; i < pi->n_protocols; i++)
            found |= strcmp(pi->protocols[i], DC_IDENTIFY_PUSH_PROTOCOL_ID) == 0;
        assert_true(found);
    }
    assert_int_equal(dc_host_peers(a.host, list, DC_ARRAY_LEN(list)), 1);
    assert_ptr_equal(list[0], pi);
    /* The restarted node redials B by PeerId alone... by the stored address. */
    {
        struct dc_multiaddr dial = pi->addrs[0];
        done = 0;
        assert_int_equal(dc_multiaddr_append_p2p(&dial, bid->bytes, bid->len), 0);
        assert_int_equal(dc_host_dial(a.host, &dial, 0, dial_cb, &done), 0);
        while (done < 1)
            uv_run(&loop, UV_RUN_ONCE);
    }
    host_stop(&a);
    host_stop(&b);
    dc_identity_free(a.id);
    dc_identity_free(b.id);
}

static void test_host_bounds(void **state)
{
    struct node a = {0};
    struct dc_peer_info p[10];
    struct dc_multiaddr many[DC_PEER_MAX_ADDRS + 4];
    const struct dc_peer_info *pi;

    (void)state;
    assert_int_equal(host_start(&a, dir, 4, 0, 0), 0);
    for (size_t i = 0; i < 10; i++) {
        make_info(&p[i], 1, 0);
        assert_int_equal(dc_host_add_peer_addrs(a.host, &p[i].id, p[i].addrs, 1), 0);
        assert_true(dc_host_peer_count(a.host) <= 4);
    }
    assert_int_equal(dc_host_peer_count(a.host), 4);
    for (size_t i = 0; i < 6; i++)
        assert_null(dc_host_peer_info(a.host, &p[i].id));
    for (size_t i = 6; i < 10; i++)
        assert_non_null(dc_host_peer_info(a.host, &p[i].id));
    /* Addresses per peer: the cap holds and the newest address is in. */
    for (size_t i = 0; i < DC_ARRAY_LEN(many); i++) {
        char text[64];
        snprintf(text, sizeof(text), "/ip4/10.0.0.%zu/tcp/4001", i + 1);
        assert_int_equal(dc_multiaddr_parse(text, &many[i], NULL), 0);
        assert_int_equal(dc_host_add_peer_addrs(a.host, &p[9].id, &many[i], 1), 0);
    }
    pi = dc_host_peer_info(a.host, &p[9].id);
    assert_int_equal(pi->n_addrs, DC_PEER_MAX_ADDRS);
    {
        bool found = false;
        for (size_t i = 0; i < pi->n_addrs; i++) {
            found |= dc_multiaddr_equal(&pi->addrs[i], &many[DC_ARRAY_LEN(many) - 1]);
            assert_int_equal(pi->addr_source[i], DC_ADDR_SOURCE_DHT);
        }
        assert_true(found);
    }
    /* The file keeps the same bound. */
    assert_int_equal(dc_host_peerstore_save(a.host), 0);
    host_stop(&a);
    assert_int_equal(host_start(&a, dir, 4, 0, 0), 0);
    assert_int_equal(dc_host_peer_count(a.host), 4);
    assert_int_equal(dc_host_peer_info(a.host, &p[9].id)->n_addrs, DC_PEER_MAX_ADDRS);
    host_stop(&a);
    dc_identity_free(a.id);
    for (size_t i = 0; i < 10; i++)
        dc_peer_info_cleanup(&p[i]);
}

/* A connected peer is never evicted: with room for one peer, a stranger is refused. */
static void test_host_keeps_connected(void **state)
{
    struct node a = {0}, b = {0};
    struct dc_multiaddr ma, dial;
    struct dc_peer_info p;
    const struct dc_peer_id *bid;
    int done = 0;

    (void)state;
    assert_int_equal(host_start(&a, NULL, 1, 0, 0), 0);
    assert_int_equal(host_start(&b, NULL, 0, 0, 0), 0);
    assert_int_equal(dc_multiaddr_parse("/ip4/127.0.0.1/tcp/0", &ma, NULL), 0);
    assert_int_equal(dc_host_listen(b.host, &ma), 0);
    assert_int_equal(dc_host_listen_addrs(b.host, &dial, 1), 1);
    bid = dc_host_peer_id(b.host);
    assert_int_equal(dc_multiaddr_append_p2p(&dial, bid->bytes, bid->len), 0);
    assert_int_equal(dc_host_dial(a.host, &dial, 0, dial_cb, &done), 0);
    while (done < 1)
        uv_run(&loop, UV_RUN_ONCE);
    make_info(&p, 1, 0);
    assert_int_equal(dc_host_add_peer_addrs(a.host, &p.id, p.addrs, 1), DC_ELIMIT);
    assert_int_equal(dc_host_peer_count(a.host), 1);
    assert_non_null(dc_host_peer_info(a.host, bid));
    host_stop(&a);
    host_stop(&b);
    dc_identity_free(a.id);
    dc_identity_free(b.id);
    dc_peer_info_cleanup(&p);
}

static void test_host_addr_expiry(void **state)
{
    struct node a = {0};
    struct dc_peer_info p;

    (void)state;
    assert_int_equal(host_start(&a, NULL, 0, 50, 20), 0);
    make_info(&p, 2, 0);
    assert_int_equal(dc_host_add_peer_addrs(a.host, &p.id, p.addrs, 2), 0);
    assert_int_equal(dc_host_peer_info(a.host, &p.id)->n_addrs, 2);
    run_for(300);
    /* Both addresses expired, and a peer never seen with no address left is dropped. */
    assert_null(dc_host_peer_info(a.host, &p.id));
    assert_int_equal(dc_host_peer_count(a.host), 0);
    host_stop(&a);
    dc_identity_free(a.id);
    dc_peer_info_cleanup(&p);
}

static void test_host_bad_db_falls_back(void **state)
{
    struct node a = {0};
    struct dc_peer_info p;
    char path[128];
    FILE *f;

    (void)state;
    path_in_dir(path, sizeof(path), "peers.sqlite");
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 512; i++)
        fputs("garbage garbage garbage ", f);
    fclose(f);
    assert_int_equal(host_start(&a, dir, 0, 0, 0), 0);
    assert_non_null(strstr(dc_host_peerstore_error(a.host), "peers.sqlite"));
    /* Memory only, and working. */
    make_info(&p, 1, 0);
    assert_int_equal(dc_host_add_peer_addrs(a.host, &p.id, p.addrs, 1), 0);
    assert_int_equal(dc_host_peer_count(a.host), 1);
    assert_int_equal(dc_host_peerstore_save(a.host), 0);
    host_stop(&a);
    /* A state directory that cannot hold the file. */
    assert_int_equal(host_start(&a, "/nonexistent-dc-dir", 0, 0, 0), 0);
    assert_non_null(strstr(dc_host_peerstore_error(a.host), "/nonexistent-dc-dir/peers.sqlite"));
    host_stop(&a);
    dc_identity_free(a.id);
    dc_peer_info_cleanup(&p);
}

static void test_host_alloc_failures(void **state)
{
    struct node a = {0};
    struct dc_peer_info p[3];
    int rc;

    (void)state;
    assert_int_equal(host_start(&a, dir, 0, 0, 0), 0);
    for (size_t i = 0; i < 3; i++) {
        make_info(&p[i], 2, 0);
        assert_int_equal(dc_host_add_peer_addrs(a.host, &p[i].id, p[i].addrs, 2), 0);
    }
    host_stop(&a);
    for (long n = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = host_start(&a, dir, 0, 0, 0);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(a.host);
        assert_true(n < 200);
    }
    assert_int_equal(dc_host_peer_count(a.host), 3);
    assert_string_equal(dc_host_peerstore_error(a.host), "");
    host_stop(&a);
    dc_identity_free(a.id);
    for (size_t i = 0; i < 3; i++)
        dc_peer_info_cleanup(&p[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_db_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_bounds_and_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_persists_across_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_keeps_connected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_addr_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_bad_db_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_alloc_failures, setup, teardown),
    };

    /* B keeps writing to A's half-closed socket across A's restart, as a daemon would. */
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

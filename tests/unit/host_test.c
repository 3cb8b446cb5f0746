/* SPDX-License-Identifier: MIT */
/*
 * host_test.c - the libp2p host end to end inside one process: two (or three) hosts on one
 * libuv loop over 127.0.0.1 with kernel-chosen ports. Covers connect + identify both ways,
 * ping RTT, a custom protocol echoing 1 MiB, a dial with the wrong expected PeerId (which then
 * is in dial backoff), pnet with the same and with different keys, dial timeout and refusal,
 * simultaneous dials (dedup), idle close, identify push (a handler registered and a listener
 * added after the connection reach the peer), shutdown with connections and streams open
 * (leaks show up under ASan), dialing /dns4 and /dns names (and one that does not resolve),
 * and the peerstore's PeerId index and eviction hook with thousands of peers.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>
#include <uv.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/host.h"

#define ECHO_PROTO "/democritus/test-echo/1.0.0"

struct node {
    struct dc_identity *id;
    struct dc_host *host;
    int connected, disconnected, identified, conn_errors;
    int last_conn_err;
    char last_hint[256];
};

struct ctx {
    uv_loop_t loop;
    uv_timer_t wake;
    struct node n[3];
};

static struct ctx T;

static void on_connected(void *ud, const struct dc_peer_id *peer, bool outbound,
                         const struct dc_multiaddr *remote)
{
    struct node *n = ud;

    (void)peer;
    (void)outbound;
    (void)remote;
    n->connected++;
}

static void on_disconnected(void *ud, const struct dc_peer_id *peer, int err)
{
    struct node *n = ud;

    (void)peer;
    (void)err;
    n->disconnected++;
}

static void on_identified(void *ud, const struct dc_peer_info *info)
{
    struct node *n = ud;

    (void)info;
    n->identified++;
}

static void on_conn_error(void *ud, const char *remote, bool outbound, int err, const char *stage,
                          const char *hint)
{
    struct node *n = ud;

    (void)remote;
    (void)outbound;
    (void)stage;
    n->conn_errors++;
    n->last_conn_err = err;
    snprintf(n->last_hint, sizeof(n->last_hint), "%s", hint != NULL ? hint : "");
}

static void wake_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *flag becomes true or 'ms' pass. */
static bool wait_until(const int *counter, int target, int ms)
{
    uint64_t end;

    uv_update_time(&T.loop);
    end = uv_now(&T.loop) + (uint64_t)ms;
    while (*counter < target) {
        uv_run(&T.loop, UV_RUN_ONCE);
        if (uv_now(&T.loop) > end)
            return false;
    }
    return true;
}

static void node_start(int i, const uint8_t *psk, uint32_t idle_ms)
{
    struct dc_host_config cfg = {0};
    struct node *n = &T.n[i];

    memset(n, 0, sizeof(*n));
    assert_int_equal(dc_identity_generate(&n->id), 0);
    cfg.loop = &T.loop;
    cfg.identity = n->id;
    cfg.agent_version = "democritus/test";
    if (psk != NULL) {
        cfg.use_psk = true;
        memcpy(cfg.psk, psk, DC_PNET_KEY_LEN);
    }
    cfg.idle_timeout_ms = idle_ms;
    cfg.handshake_timeout_ms = 3000;
    cfg.ev.on_connected = on_connected;
    cfg.ev.on_disconnected = on_disconnected;
    cfg.ev.on_identified = on_identified;
    cfg.ev.on_conn_error = on_conn_error;
    cfg.ud = n;
    assert_int_equal(dc_host_new(&cfg, &n->host), 0);
}

static void node_listen(int i, struct dc_multiaddr *bound_with_p2p)
{
    struct dc_multiaddr ma, addrs[8];
    const struct dc_peer_id *pid = dc_host_peer_id(T.n[i].host);

    assert_int_equal(dc_multiaddr_parse("/ip4/127.0.0.1/tcp/0", &ma, NULL), 0);
    assert_int_equal(dc_host_listen(T.n[i].host, &ma), 0);
    assert_int_equal(dc_host_listen_addrs(T.n[i].host, addrs, 8), 1);
    *bound_with_p2p = addrs[0];
    assert_int_equal(dc_multiaddr_append_p2p(bound_with_p2p, pid->bytes, pid->len), 0);
}

static void node_stop(int i)
{
    dc_host_free(T.n[i].host);
    T.n[i].host = NULL;
}

static void node_cleanup(int i)
{
    dc_identity_free(T.n[i].id);
    T.n[i].id = NULL;
}

static int setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof(T));
    assert_int_equal(uv_loop_init(&T.loop), 0);
    uv_timer_init(&T.loop, &T.wake);
    uv_timer_start(&T.wake, wake_cb, 10, 10);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        if (T.n[i].host != NULL)
            node_stop(i);
    uv_close((uv_handle_t *)&T.wake, NULL);
    uv_run(&T.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&T.loop), 0);
    for (int i = 0; i < 3; i++)
        node_cleanup(i);
    return 0;
}

struct dial_result {
    int done;
    int status;
    struct dc_peer_id peer;
};

static void dial_cb(void *ud, int status, const struct dc_peer_id *peer)
{
    struct dial_result *r = ud;

    r->done++;
    r->status = status;
    if (peer != NULL)
        r->peer = *peer;
}

static void connect_nodes(int from, int to, struct dc_multiaddr *to_addr)
{
    struct dial_result r = {0};

    assert_int_equal(dc_host_dial(T.n[from].host, to_addr, 0, dial_cb, &r), 0);
    assert_int_equal(r.done, 0); /* never synchronously */
    assert_true(wait_until(&r.done, 1, 5000));
    assert_int_equal(r.status, 0);
    assert_true(dc_peer_id_equal(&r.peer, dc_host_peer_id(T.n[to].host)));
}

static bool has_protocol(const struct dc_peer_info *pi, const char *proto)
{
    for (size_t i = 0; i < pi->n_protocols; i++)
        if (strcmp(pi->protocols[i], proto) == 0)
            return true;
    return false;
}

struct ping_result {
    int done;
    int status;
    uint64_t rtt;
};

static void ping_cb(void *ud, int status, uint64_t rtt)
{
    struct ping_result *r = ud;

    r->done++;
    r->status = status;
    r->rtt = rtt;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_connect_identify_ping(void **state)
{
    struct dc_multiaddr a_addr, b_addr;
    const struct dc_peer_info *pi;
    struct ping_result pr = {0};
    const struct dc_peer_id *a = NULL, *b = NULL;

    (void)state;
    node_start(0, NULL, 0);
    node_start(1, NULL, 0);
    node_listen(0, &a_addr);
    node_listen(1, &b_addr);
    a = dc_host_peer_id(T.n[0].host);
    b = dc_host_peer_id(T.n[1].host);
    connect_nodes(1, 0, &a_addr);
    assert_true(wait_until(&T.n[0].identified, 1, 5000));
    assert_true(wait_until(&T.n[1].identified, 1, 5000));
    assert_int_equal(T.n[0].connected, 1);
    assert_int_equal(T.n[1].connected, 1);
    assert_int_equal(dc_host_connected_count(T.n[0].host), 1);

    /* B's view of A: identify told it A's agent, protocols and listen address. */
    pi = dc_host_peer_info(T.n[1].host, a);
    assert_non_null(pi);
    assert_true(pi->connected && pi->identified);
    assert_string_equal(pi->agent, "democritus/test");
    assert_string_equal(pi->protocol_version, DC_IDENTIFY_PROTOCOL_VERSION);
    assert_true(has_protocol(pi, DC_PING_PROTOCOL_ID));
    assert_true(has_protocol(pi, DC_IDENTIFY_PROTOCOL_ID));
    assert_true(has_protocol(pi, DC_IDENTIFY_PUSH_PROTOCOL_ID));
    assert_true(pi->n_addrs >= 1);
    {
        struct dc_multiaddr plain = a_addr;
        bool found = false;
        dc_multiaddr_strip_p2p(&plain);
        for (size_t i = 0; i < pi->n_addrs; i++)
            found |= dc_multiaddr_equal(&pi->addrs[i], &plain);
        assert_true(found);
    }
    assert_true(pi->observed.len > 0);
    assert_true(pi->last_seen_ms > 0);
    /* A's view of B (identified over the inbound connection). */
    pi = dc_host_peer_info(T.n[0].host, b);
    assert_non_null(pi);
    assert_true(pi->identified);
    assert_string_equal(pi->agent, "democritus/test");

    /* Ping both ways. */
    assert_int_equal(dc_host_ping(T.n[1].host, a, ping_cb, &pr), 0);
    assert_true(wait_until(&pr.done, 1, 5000));
    assert_int_equal(pr.status, 0);
    assert_true(pr.rtt > 0);
    assert_int_equal(dc_host_peer_info(T.n[1].host, a)->rtt_us, pr.rtt);
    pr.done = 0;
    assert_int_equal(dc_host_ping(T.n[0].host, b, ping_cb, &pr), 0);
    assert_true(wait_until(&pr.done, 1, 5000));
    assert_int_equal(pr.status, 0);

    /* Dialing again reuses the connection. */
    connect_nodes(1, 0, &a_addr);
    assert_int_equal(dc_host_connection_count(T.n[1].host), 1);
    /* Dialing ourselves is refused. */
    {
        struct dial_result r = {0};
        assert_int_equal(dc_host_dial(T.n[0].host, &a_addr, 0, dial_cb, &r), DC_EINVAL);
    }
    /* No connection: no stream, no ping. */
    {
        struct dc_identity *other;
        assert_int_equal(dc_identity_generate(&other), 0);
        assert_int_equal(dc_host_ping(T.n[0].host, dc_identity_peer_id(other), ping_cb, &pr),
                         DC_ENOENT);
        dc_identity_free(other);
    }
}

/* The echo server: everything back, FIN answered with FIN. */
static void echo_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    (void)ud;
    assert_int_equal(dc_host_stream_write(s, p, n), 0);
}

static void echo_fin(void *ud, struct dc_host_stream *s)
{
    (void)ud;
    assert_int_equal(dc_host_stream_close(s), 0);
}

static const struct dc_host_stream_cb echo_cb = {.on_data = echo_data, .on_fin = echo_fin};

struct client {
    struct dc_buf got;
    int opened, fin, closed;
    int close_err;
    char protocol[64];
};

static void client_open(void *ud, struct dc_host_stream *s)
{
    struct client *c = ud;

    c->opened++;
    snprintf(c->protocol, sizeof(c->protocol), "%s", dc_host_stream_protocol(s));
}

static void client_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    struct client *c = ud;

    (void)s;
    assert_int_equal(dc_buf_append(&c->got, p, n), 0);
}

static void client_fin(void *ud, struct dc_host_stream *s)
{
    struct client *c = ud;

    (void)s;
    c->fin++;
}

static void client_close(void *ud, struct dc_host_stream *s, int err)
{
    struct client *c = ud;

    (void)s;
    c->closed++;
    c->close_err = err;
}

static const struct dc_host_stream_cb client_cb = {
    .on_open = client_open, .on_data = client_data, .on_fin = client_fin, .on_close = client_close};

static void test_echo_1mib(void **state)
{
    struct dc_multiaddr a_addr;
    const char *protos[] = {"/democritus/nope/1.0.0", ECHO_PROTO};
    struct dc_host_stream *s;
    struct client cl = {0};
    size_t size = 1024 * 1024;
    uint8_t *data = malloc(size);

    (void)state;
    assert_non_null(data);
    randombytes_buf(data, size);
    dc_buf_init(&cl.got, 0);
    node_start(0, NULL, 0);
    node_start(1, NULL, 0);
    assert_int_equal(dc_host_set_handler(T.n[0].host, ECHO_PROTO, &echo_cb, NULL), 0);
    assert_int_equal(dc_host_set_handler(T.n[0].host, "bad\nname", &echo_cb, NULL), DC_EINVAL);
    node_listen(0, &a_addr);
    connect_nodes(1, 0, &a_addr);
    assert_int_equal(dc_host_new_stream(T.n[1].host, dc_host_peer_id(T.n[0].host), protos, 2,
                                        &client_cb, &cl, &s),
                     0);
    /* Written before negotiation finished: queued, sent after. */
    assert_int_equal(dc_host_stream_write(s, data, size), 0);
    assert_int_equal(dc_host_stream_close(s), 0);
    assert_int_equal(dc_host_stream_write(s, data, 1), DC_ESTATE);
    assert_true(wait_until(&cl.closed, 1, 20000));
    assert_int_equal(cl.opened, 1);
    assert_string_equal(cl.protocol, ECHO_PROTO);
    assert_int_equal(cl.fin, 1);
    assert_int_equal(cl.close_err, 0);
    assert_int_equal(cl.got.len, size);
    assert_memory_equal(cl.got.data, data, size);

    /* A protocol nobody speaks: the stream closes with DC_EPROTO. */
    {
        const char *none[] = {"/democritus/none/1.0.0"};
        struct client c2 = {0};
        dc_buf_init(&c2.got, 0);
        assert_int_equal(dc_host_new_stream(T.n[1].host, dc_host_peer_id(T.n[0].host), none, 1,
                                            &client_cb, &c2, &s),
                         0);
        assert_true(wait_until(&c2.closed, 1, 5000));
        assert_int_equal(c2.opened, 0);
        assert_int_not_equal(c2.close_err, 0);
        dc_buf_cleanup(&c2.got);
    }
    dc_buf_cleanup(&cl.got);
    free(data);
}

static void test_wrong_peer(void **state)
{
    struct dc_multiaddr a_addr;
    struct dc_identity *other;
    struct dial_result r = {0};
    const struct dc_peer_id *pid;

    (void)state;
    node_start(0, NULL, 0);
    node_start(1, NULL, 0);
    node_listen(0, &a_addr);
    assert_int_equal(dc_identity_generate(&other), 0);
    pid = dc_identity_peer_id(other);
    dc_multiaddr_strip_p2p(&a_addr);
    assert_int_equal(dc_multiaddr_append_p2p(&a_addr, pid->bytes, pid->len), 0);
    assert_int_equal(dc_host_dial(T.n[1].host, &a_addr, 0, dial_cb, &r), 0);
    assert_true(wait_until(&r.done, 1, 5000));
    assert_int_equal(r.status, DC_EPEER);
    assert_int_equal(T.n[1].conn_errors, 1);
    assert_int_equal(T.n[1].last_conn_err, DC_EPEER);
    assert_int_equal(dc_host_connected_count(T.n[1].host), 0);
    /* That PeerId failed: it is in dial backoff now (no callback, nothing dialed). */
    assert_int_equal(dc_host_dial(T.n[1].host, &a_addr, 0, dial_cb, &r), DC_EAGAIN);
    /* Without /p2p/ any peer is accepted. */
    dc_multiaddr_strip_p2p(&a_addr);
    connect_nodes(1, 0, &a_addr);
    dc_identity_free(other);
}

static void test_pnet(void **state)
{
    uint8_t k1[DC_PNET_KEY_LEN], k2[DC_PNET_KEY_LEN];
    struct dc_multiaddr a_addr;
    struct dial_result r = {0};
    struct ping_result pr = {0};

    (void)state;
    randombytes_buf(k1, sizeof(k1));
    randombytes_buf(k2, sizeof(k2));
    node_start(0, k1, 0);
    node_start(1, k1, 0);
    node_start(2, k2, 0);
    node_listen(0, &a_addr);
    connect_nodes(1, 0, &a_addr);
    assert_true(wait_until(&T.n[1].identified, 1, 5000));
    assert_int_equal(dc_host_ping(T.n[1].host, dc_host_peer_id(T.n[0].host), ping_cb, &pr), 0);
    assert_true(wait_until(&pr.done, 1, 5000));
    assert_int_equal(pr.status, 0);

    /* A different key: both sides fail early and say why. */
    assert_int_equal(dc_host_dial(T.n[2].host, &a_addr, 0, dial_cb, &r), 0);
    assert_true(wait_until(&r.done, 1, 5000));
    assert_true(r.status < 0);
    assert_true(wait_until(&T.n[0].conn_errors, 1, 5000));
    assert_non_null(strstr(T.n[0].last_hint, "private network"));
    assert_int_equal(dc_host_connected_count(T.n[2].host), 0);
}

static void test_pnet_vs_plain(void **state)
{
    uint8_t k1[DC_PNET_KEY_LEN];
    struct dc_multiaddr a_addr;
    struct dial_result r = {0};

    (void)state;
    randombytes_buf(k1, sizeof(k1));
    node_start(0, k1, 0);
    node_start(1, NULL, 0);
    node_listen(0, &a_addr);
    assert_int_equal(dc_host_dial(T.n[1].host, &a_addr, 2000, dial_cb, &r), 0);
    assert_true(wait_until(&r.done, 1, 5000));
    assert_true(r.status < 0);
    assert_int_equal(dc_host_connected_count(T.n[0].host), 0);
}

static void silent_accept(uv_stream_t *server, int status)
{
    (void)server;
    (void)status;
}

static void test_dial_timeout_and_refused(void **state)
{
    uv_tcp_t silent;
    struct sockaddr_in sin;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char text[128];
    struct dc_multiaddr ma;
    struct dial_result r = {0};

    (void)state;
    node_start(1, NULL, 0);
    /* A listener that never accepts: the TCP connect succeeds, the upgrade never answers. */
    uv_tcp_init(&T.loop, &silent);
    uv_ip4_addr("127.0.0.1", 0, &sin);
    assert_int_equal(uv_tcp_bind(&silent, (struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&silent, 4, silent_accept), 0);
    assert_int_equal(uv_tcp_getsockname(&silent, (struct sockaddr *)&ss, &len), 0);
    snprintf(text, sizeof(text), "/ip4/127.0.0.1/tcp/%d",
             ntohs(((struct sockaddr_in *)&ss)->sin_port));
    assert_int_equal(dc_multiaddr_parse(text, &ma, NULL), 0);
    assert_int_equal(dc_host_dial(T.n[1].host, &ma, 300, dial_cb, &r), 0);
    assert_true(wait_until(&r.done, 1, 5000));
    assert_int_equal(r.status, DC_ETIMEDOUT);
    uv_close((uv_handle_t *)&silent, NULL);

    /* Nobody listening: refused. (The port was just freed by the close above.) */
    uv_run(&T.loop, UV_RUN_NOWAIT);
    r.done = 0;
    assert_int_equal(dc_host_dial(T.n[1].host, &ma, 2000, dial_cb, &r), 0);
    assert_true(wait_until(&r.done, 1, 5000));
    assert_true(r.status == -ECONNREFUSED || r.status == DC_ETIMEDOUT);

    /* Addresses we cannot dial. */
    assert_int_equal(dc_multiaddr_parse("/dnsaddr/example.com/tcp/1", &ma, NULL), 0);
    assert_int_equal(dc_host_dial(T.n[1].host, &ma, 0, dial_cb, &r), DC_EUNSUPPORTED);
    assert_int_equal(dc_multiaddr_parse("/ip4/127.0.0.1/udp/1", &ma, NULL), 0);
    assert_int_equal(dc_host_dial(T.n[1].host, &ma, 0, dial_cb, &r), DC_EUNSUPPORTED);
}

static void test_simultaneous_dial(void **state)
{
    struct dc_multiaddr a_addr, b_addr;
    struct dial_result ra = {0}, rb = {0};

    (void)state;
    node_start(0, NULL, 0);
    node_start(1, NULL, 0);
    node_listen(0, &a_addr);
    node_listen(1, &b_addr);
    assert_int_equal(dc_host_dial(T.n[0].host, &b_addr, 0, dial_cb, &ra), 0);
    assert_int_equal(dc_host_dial(T.n[1].host, &a_addr, 0, dial_cb, &rb), 0);
    assert_true(wait_until(&ra.done, 1, 5000));
    assert_true(wait_until(&rb.done, 1, 5000));
    assert_int_equal(ra.status, 0);
    assert_int_equal(rb.status, 0);
    /* Let the loser close; both keep exactly one, the same one. */
    for (int i = 0; i < 20; i++)
        uv_run(&T.loop, UV_RUN_ONCE);
    assert_int_equal(dc_host_connection_count(T.n[0].host), 1);
    assert_int_equal(dc_host_connection_count(T.n[1].host), 1);
    assert_int_equal(T.n[0].connected, 1);
    assert_int_equal(T.n[0].disconnected, 0);
    {
        struct ping_result pr = {0};
        assert_int_equal(dc_host_ping(T.n[0].host, dc_host_peer_id(T.n[1].host), ping_cb, &pr), 0);
        assert_true(wait_until(&pr.done, 1, 5000));
        assert_int_equal(pr.status, 0);
    }
}

static void test_identify_push(void **state)
{
    struct dc_multiaddr a_addr, second;
    const struct dc_peer_info *pi;
    const struct dc_peer_id *a;

    (void)state;
    node_start(0, NULL, 0);
    node_start(1, NULL, 0);
    node_listen(0, &a_addr);
    a = dc_host_peer_id(T.n[0].host);
    connect_nodes(1, 0, &a_addr);
    assert_true(wait_until(&T.n[1].identified, 1, 5000));
    assert_true(wait_until(&T.n[0].identified, 1, 5000));
    assert_false(has_protocol(dc_host_peer_info(T.n[1].host, a), ECHO_PROTO));

    /* A handler and a listener added while connected: one push (coalesced) tells B. */
    assert_int_equal(dc_host_set_handler(T.n[0].host, ECHO_PROTO, &echo_cb, NULL), 0);
    assert_int_equal(dc_multiaddr_parse("/ip4/127.0.0.1/tcp/0", &second, NULL), 0);
    assert_int_equal(dc_host_listen(T.n[0].host, &second), 0);
    {
        struct dc_multiaddr addrs[4];
        assert_int_equal(dc_host_listen_addrs(T.n[0].host, addrs, 4), 2);
        second = addrs[1];
    }
    assert_true(wait_until(&T.n[1].identified, 2, 5000));
    pi = dc_host_peer_info(T.n[1].host, a);
    assert_non_null(pi);
    assert_true(has_protocol(pi, ECHO_PROTO));
    assert_string_equal(pi->agent, "democritus/test");
    {
        bool found = false;
        for (size_t i = 0; i < pi->n_addrs; i++)
            if (dc_multiaddr_equal(&pi->addrs[i], &second)) {
                found = true;
                assert_int_equal(pi->addr_source[i], DC_ADDR_SOURCE_IDENTIFY);
            }
        assert_true(found);
    }
    /* Re-registering an existing protocol changes nothing: no push. */
    assert_int_equal(dc_host_set_handler(T.n[0].host, ECHO_PROTO, &echo_cb, NULL), 0);
    assert_false(wait_until(&T.n[1].identified, 3, 300));
}

static void test_idle_close(void **state)
{
    struct dc_multiaddr a_addr;

    (void)state;
    node_start(0, NULL, 200);
    node_start(1, NULL, 0);
    node_listen(0, &a_addr);
    connect_nodes(1, 0, &a_addr);
    assert_true(wait_until(&T.n[1].disconnected, 1, 5000));
    assert_true(wait_until(&T.n[0].disconnected, 1, 5000));
    assert_int_equal(dc_host_connection_count(T.n[0].host), 0);
}

static void test_shutdown_with_open_streams(void **state)
{
    struct dc_multiaddr a_addr;
    const char *protos[] = {ECHO_PROTO};
    struct dc_host_stream *s;
    struct client cl = {0};
    struct dial_result pending = {0};

    (void)state;
    dc_buf_init(&cl.got, 0);
    node_start(0, NULL, 0);
    node_start(1, NULL, 0);
    assert_int_equal(dc_host_set_handler(T.n[0].host, ECHO_PROTO, &echo_cb, NULL), 0);
    node_listen(0, &a_addr);
    connect_nodes(1, 0, &a_addr);
    assert_int_equal(dc_host_new_stream(T.n[1].host, dc_host_peer_id(T.n[0].host), protos, 1,
                                        &client_cb, &cl, &s),
                     0);
    assert_int_equal(dc_host_stream_write(s, "ping", 4), 0);
    while (cl.got.len < 4)
        uv_run(&T.loop, UV_RUN_ONCE);
    /* A dial in flight too. */
    dc_multiaddr_strip_p2p(&a_addr);
    assert_int_equal(dc_host_listen(T.n[1].host, &a_addr), -EADDRINUSE);
    {
        struct dc_multiaddr z;
        assert_int_equal(dc_multiaddr_parse("/ip4/127.0.0.1/tcp/1", &z, NULL), 0);
        assert_int_equal(dc_host_dial(T.n[1].host, &z, 0, dial_cb, &pending), 0);
    }
    node_stop(1);
    assert_int_equal(cl.closed, 1);
    assert_int_equal(cl.close_err, DC_ECLOSED);
    assert_int_equal(pending.done, 1);
    assert_int_equal(pending.status, DC_ECLOSED);
    node_stop(0);
    dc_buf_cleanup(&cl.got);
    /* teardown runs the loop to let every handle close; ASan reports any leak. */
}

/* /dns4, /dns and a name that does not resolve. */
static void test_dns_dial(void **state)
{
    struct dc_multiaddr a_addr, ma;
    struct dc_multiaddr_target t;
    const struct dc_peer_id *a_id;
    struct dial_result r = {0};
    char text[256];

    (void)state;
    node_start(0, NULL, 0);
    node_start(1, NULL, 0);
    node_start(2, NULL, 0);
    node_listen(0, &a_addr);
    a_id = dc_host_peer_id(T.n[0].host);
    assert_int_equal(dc_multiaddr_target(&a_addr, &t), 0);

    /* /dns4/localhost: resolved to 127.0.0.1, the PeerId still checked. */
    snprintf(text, sizeof(text), "/dns4/localhost/tcp/%u", (unsigned)t.port);
    assert_int_equal(dc_multiaddr_parse(text, &ma, NULL), 0);
    assert_int_equal(dc_multiaddr_append_p2p(&ma, a_id->bytes, a_id->len), 0);
    connect_nodes(1, 0, &ma);
    assert_true(dc_host_is_connected(T.n[1].host, a_id));

    /* A name that does not resolve: DC_ERESOLVE, and the event names the stage. */
    assert_int_equal(dc_multiaddr_parse("/dns4/democritus-test.invalid/tcp/4001", &ma, NULL), 0);
    assert_int_equal(dc_host_dial(T.n[2].host, &ma, 5000, dial_cb, &r), 0);
    assert_int_equal(r.done, 0);
    assert_true(wait_until(&r.done, 1, 10000));
    assert_int_equal(r.status, DC_ERESOLVE);
    assert_int_equal(T.n[2].conn_errors, 1);
    assert_int_equal(T.n[2].last_conn_err, DC_ERESOLVE);
    assert_string_equal(dc_strerror(DC_ERESOLVE), "name resolution failed");

    /* /dns/localhost may answer ::1 first, where nobody listens: the next address is tried
     * within the same dial. */
    snprintf(text, sizeof(text), "/dns/localhost/tcp/%u", (unsigned)t.port);
    assert_int_equal(dc_multiaddr_parse(text, &ma, NULL), 0);
    assert_int_equal(dc_multiaddr_append_p2p(&ma, a_id->bytes, a_id->len), 0);
    connect_nodes(2, 0, &ma);

    /* The wrong PeerId behind a name is refused like behind an address. */
    {
        struct dc_identity *other;
        const struct dc_peer_id *pid;

        assert_int_equal(dc_identity_generate(&other), 0);
        pid = dc_identity_peer_id(other);
        snprintf(text, sizeof(text), "/dns4/localhost/tcp/%u", (unsigned)t.port);
        assert_int_equal(dc_multiaddr_parse(text, &ma, NULL), 0);
        assert_int_equal(dc_multiaddr_append_p2p(&ma, pid->bytes, pid->len), 0);
        r.done = 0;
        assert_int_equal(dc_host_dial(T.n[2].host, &ma, 5000, dial_cb, &r), 0);
        assert_true(wait_until(&r.done, 1, 10000));
        assert_int_equal(r.status, DC_EPEER);
        /* ... and puts that PeerId in backoff. */
        assert_int_equal(dc_host_dial(T.n[2].host, &ma, 5000, dial_cb, &r), DC_EAGAIN);
        dc_identity_free(other);
    }

    /* Freeing the host while a name resolves reports DC_ECLOSED from inside the free. */
    snprintf(text, sizeof(text), "/dns4/localhost/tcp/%u", (unsigned)t.port);
    assert_int_equal(dc_multiaddr_parse(text, &ma, NULL), 0);
    r.done = 0;
    assert_int_equal(dc_host_dial(T.n[2].host, &ma, 5000, dial_cb, &r), 0);
    node_stop(2);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.status, DC_ECLOSED);
}

/* PeerIds that cost no key generation: sha2-256 multihashes of a counter. */
static void fake_peer(uint32_t i, struct dc_peer_id *out)
{
    uint8_t mh[34] = {0x12, 0x20};

    crypto_hash_sha256(mh + 2, (const uint8_t *)&i, sizeof(i));
    assert_int_equal(dc_peer_id_from_bytes(mh, sizeof(mh), out), 0);
}

#define KEEP_N 10
static struct dc_peer_id keep_ids[KEEP_N];
static int keep_asked;

static bool keep_cb(void *ud, const struct dc_peer_id *peer)
{
    (void)ud;
    keep_asked++;
    for (int i = 0; i < KEEP_N; i++)
        if (dc_peer_id_equal(&keep_ids[i], peer))
            return true;
    return false;
}

/* Thousands of peers through the PeerId index: every one found, evictions keep the index in
 * step (an evicted peer is gone, its replacement found), the keep hook protects peers. */
static void test_peerstore_many(void **state)
{
    enum { N = 3000, MORE = 500 };
    struct dc_host_config cfg = {0};
    struct dc_multiaddr ma;
    struct dc_peer_id id;

    (void)state;
    memset(&T.n[0], 0, sizeof(T.n[0]));
    assert_int_equal(dc_identity_generate(&T.n[0].id), 0);
    cfg.loop = &T.loop;
    cfg.identity = T.n[0].id;
    cfg.max_peers = N;
    assert_int_equal(dc_host_new(&cfg, &T.n[0].host), 0);
    assert_int_equal(dc_multiaddr_parse("/ip4/10.0.0.1/tcp/4001", &ma, NULL), 0);
    for (uint32_t i = 0; i < N; i++) {
        fake_peer(i, &id);
        assert_int_equal(dc_host_add_peer_addrs(T.n[0].host, &id, &ma, 1), 0);
    }
    assert_int_equal(dc_host_peer_count(T.n[0].host), N);
    for (uint32_t i = 0; i < N; i++) {
        fake_peer(i, &id);
        assert_non_null(dc_host_peer_info(T.n[0].host, &id));
    }
    fake_peer(N + MORE, &id);
    assert_null(dc_host_peer_info(T.n[0].host, &id));

    /* The oldest KEEP_N peers are protected: the next oldest go instead. */
    for (int i = 0; i < KEEP_N; i++)
        fake_peer((uint32_t)i, &keep_ids[i]);
    keep_asked = 0;
    dc_host_set_keep_peer(T.n[0].host, keep_cb, NULL);
    for (uint32_t i = N; i < N + MORE; i++) {
        fake_peer(i, &id);
        assert_int_equal(dc_host_add_peer_addrs(T.n[0].host, &id, &ma, 1), 0);
    }
    assert_true(keep_asked > 0);
    assert_int_equal(dc_host_peer_count(T.n[0].host), N);
    for (uint32_t i = 0; i < N + MORE; i++) {
        bool expect = i < KEEP_N || i >= KEEP_N + MORE;
        fake_peer(i, &id);
        assert_int_equal(dc_host_peer_info(T.n[0].host, &id) != NULL, expect);
    }
    {
        const struct dc_peer_info **all = calloc(N, sizeof(*all));
        assert_non_null(all);
        assert_int_equal(dc_host_peers(T.n[0].host, all, N), N);
        free(all);
    }
    node_stop(0);

    /* Every peer protected: a new one does not fit. */
    cfg.max_peers = KEEP_N;
    assert_int_equal(dc_host_new(&cfg, &T.n[0].host), 0);
    dc_host_set_keep_peer(T.n[0].host, keep_cb, NULL);
    for (int i = 0; i < KEEP_N; i++)
        assert_int_equal(dc_host_add_peer_addrs(T.n[0].host, &keep_ids[i], &ma, 1), 0);
    fake_peer(N, &id);
    assert_int_equal(dc_host_add_peer_addrs(T.n[0].host, &id, &ma, 1), DC_ELIMIT);
    dc_host_set_keep_peer(T.n[0].host, NULL, NULL);
    assert_int_equal(dc_host_add_peer_addrs(T.n[0].host, &id, &ma, 1), 0);
    assert_non_null(dc_host_peer_info(T.n[0].host, &id));
    assert_null(dc_host_peer_info(T.n[0].host, &keep_ids[0]));
}

static void test_config(void **state)
{
    struct dc_host_config cfg = {0};
    struct dc_host *h;

    (void)state;
    assert_int_equal(dc_host_new(&cfg, &h), DC_EINVAL);
    assert_null(h);
    dc_host_free(NULL);

    /* Allocation failures: each one in turn gives DC_ENOMEM and leaks nothing (ASan). */
    assert_int_equal(dc_identity_generate(&T.n[0].id), 0);
    cfg.loop = &T.loop;
    cfg.identity = T.n[0].id;
    for (long n = 0;; n++) {
        int rc;

        dc_alloc_fail_after(n);
        rc = dc_host_new(&cfg, &h);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(h);
        assert_true(n < 100);
    }
    T.n[0].host = h;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_identify_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_1mib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pnet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pnet_vs_plain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dial_timeout_and_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simultaneous_dial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identify_push, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_with_open_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dns_dial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peerstore_many, setup, teardown),
    };

    /* A host freed while its peer still writes: the daemon ignores SIGPIPE too. */
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * p2p.c - bench/p2p: the libp2p host between two nodes on loopback, each on its own thread
 * and libuv loop (as two processes would be), through the whole stack: TCP -> multistream ->
 * Noise XX (ChaChaPoly, X25519) -> multistream -> yamux -> stream.
 *
 *   throughput  one stream on one connection: the sender keeps the stream's queue topped up
 *               (a uv_check after every loop turn) and half-closes after --mb MiB; the time
 *               runs from the first write to the receiver's FIN. Target >= 500 MB/s.
 *               Also the CPU time (user + sys, both nodes) per GB sent, which a loaded
 *               machine distorts less than the wall-clock rate.
 *   set-up      --dials fresh connections (a new dialer identity each, so none is reused):
 *               from dc_host_dial() to its callback, i.e. TCP connect, both negotiations
 *               and the Noise handshake, until yamux is up. Target p50 <= 2 ms.
 *
 * Usage: p2p [--mb N] [--dials N] [--psk] [--json]
 *   --mb     MiB to send in the throughput run (default 2048)
 *   --dials  connections to time (default 300)
 *   --psk    run both with the pnet (XSalsa20) layer under Noise too
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/host.h"

#define BENCH_PROTOCOL "/democritus/bench/1.0.0"
#define CHUNK          (256u * 1024u)
#define QUEUE_TARGET   (4u * 1024u * 1024u)

/* ---- the receiving node (its own thread) ------------------------------------------------ */

struct server {
    uv_loop_t loop;
    uv_async_t stop;
    struct dc_identity *id;
    struct dc_host *host;
    bool use_psk;
    uint8_t psk[DC_PNET_KEY_LEN];
    char addr[DC_MULTIADDR_TEXT_MAX];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
    int err;
    /* Throughput run: written by the server thread, read after it signals 'done'. */
    uint64_t received;
    uint64_t t_fin_ns;
    bool done;
};

static void srv_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    struct server *sv = ud;

    DC_UNUSED(s);
    DC_UNUSED(p);
    sv->received += n;
}

static void srv_fin(void *ud, struct dc_host_stream *s)
{
    struct server *sv = ud;

    sv->t_fin_ns = uv_hrtime();
    /* Done is set before our FIN goes out: the sender, woken by that FIN, must see it. */
    pthread_mutex_lock(&sv->mu);
    sv->done = true;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
    (void)!dc_host_stream_close(s);
}

static const struct dc_host_stream_cb srv_cb = {.on_data = srv_data, .on_fin = srv_fin};

static void srv_on_stop(uv_async_t *a)
{
    struct server *sv = a->data;

    dc_host_free(sv->host);
    sv->host = NULL;
    uv_close((uv_handle_t *)&sv->stop, NULL);
}

static void *server_main(void *arg)
{
    struct server *sv = arg;
    struct dc_host_config hc = {0};
    struct dc_multiaddr ma, addrs[4];
    int rc;

    uv_loop_init(&sv->loop);
    uv_async_init(&sv->loop, &sv->stop, srv_on_stop);
    sv->stop.data = sv;
    rc = dc_identity_generate(&sv->id);
    hc.loop = &sv->loop;
    hc.identity = sv->id;
    hc.use_psk = sv->use_psk;
    memcpy(hc.psk, sv->psk, sizeof(hc.psk));
    hc.max_connections = 4096;
    hc.max_inbound_handshakes = 4096;
    if (rc == 0)
        rc = dc_host_new(&hc, &sv->host);
    if (rc == 0)
        rc = dc_host_set_handler(sv->host, BENCH_PROTOCOL, &srv_cb, sv);
    if (rc == 0)
        rc = dc_multiaddr_parse("/ip4/127.0.0.1/tcp/0", &ma, NULL);
    if (rc == 0)
        rc = dc_host_listen(sv->host, &ma);
    if (rc == 0 && dc_host_listen_addrs(sv->host, addrs, 4) >= 1) {
        const struct dc_peer_id *self = dc_identity_peer_id(sv->id);
        rc = dc_multiaddr_append_p2p(&addrs[0], self->bytes, self->len);
        if (rc == 0)
            rc = dc_multiaddr_format(&addrs[0], sv->addr, sizeof(sv->addr)) < 0 ? DC_ELIMIT : 0;
    }
    pthread_mutex_lock(&sv->mu);
    sv->ready = true;
    sv->err = rc;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
    if (rc == 0)
        uv_run(&sv->loop, UV_RUN_DEFAULT);
    uv_run(&sv->loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&sv->loop);
    dc_identity_free(sv->id);
    return NULL;
}

/* ---- the sending node (main thread) ----------------------------------------------------- */

struct client {
    uv_loop_t loop;
    uv_check_t check;
    struct dc_identity *id;
    struct dc_host *host;
    struct dc_host_stream *s;
    uint8_t *chunk;
    uint64_t total, sent;
    uint64_t t_start_ns, t_dial_ns;
    int status;
    bool dialed, closed;
};

static void top_up(struct client *c)
{
    if (c->s == NULL || c->closed)
        return;
    if (c->t_start_ns == 0)
        c->t_start_ns = uv_hrtime();
    while (c->sent < c->total && dc_host_stream_queued(c->s) < QUEUE_TARGET) {
        size_t n = c->total - c->sent < CHUNK ? (size_t)(c->total - c->sent) : CHUNK;
        if (dc_host_stream_write(c->s, c->chunk, n) < 0) {
            c->status = DC_EPEER;
            c->closed = true;
            uv_stop(&c->loop);
            return;
        }
        c->sent += n;
    }
    if (c->sent == c->total) {
        (void)!dc_host_stream_close(c->s);
        c->closed = true;
        uv_check_stop(&c->check);
        uv_stop(&c->loop);
    }
}

static void on_check(uv_check_t *h)
{
    top_up(h->data);
}

static void cl_open(void *ud, struct dc_host_stream *s)
{
    DC_UNUSED(s);
    top_up(ud);
}

static const struct dc_host_stream_cb cl_cb = {.on_open = cl_open};

static void on_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    struct client *c = ud;

    DC_UNUSED(peer);
    c->t_dial_ns = uv_hrtime();
    c->status = status;
    c->dialed = true;
    uv_stop(&c->loop);
}

static int client_host(struct client *c, bool use_psk, const uint8_t *psk)
{
    struct dc_host_config hc = {0};
    int rc;

    rc = dc_identity_generate(&c->id);
    if (rc < 0)
        return rc;
    hc.loop = &c->loop;
    hc.identity = c->id;
    hc.use_psk = use_psk;
    memcpy(hc.psk, psk, sizeof(hc.psk));
    return dc_host_new(&hc, &c->host);
}

static void client_drop_host(struct client *c)
{
    dc_host_free(c->host);
    c->host = NULL;
    uv_run(&c->loop, UV_RUN_NOWAIT);
    uv_run(&c->loop, UV_RUN_NOWAIT);
    dc_identity_free(c->id);
    c->id = NULL;
}

static double cpu_seconds(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int run(uint64_t mb, int dials, bool use_psk, bool json)
{
    struct server sv;
    struct client c;
    pthread_t th;
    struct dc_multiaddr ma;
    uint8_t psk[DC_PNET_KEY_LEN];
    uint64_t *times;
    double mbps = 0, p50 = 0, p90 = 0, p99 = 0, cpu0, cpu_per_gb;
    int rc;

    memset(&sv, 0, sizeof(sv));
    memset(&c, 0, sizeof(c));
    for (size_t i = 0; i < sizeof(psk); i++)
        psk[i] = (uint8_t)(i * 7 + 1);
    sv.use_psk = use_psk;
    memcpy(sv.psk, psk, sizeof(psk));
    pthread_mutex_init(&sv.mu, NULL);
    pthread_cond_init(&sv.cv, NULL);
    pthread_create(&th, NULL, server_main, &sv);
    pthread_mutex_lock(&sv.mu);
    while (!sv.ready)
        pthread_cond_wait(&sv.cv, &sv.mu);
    pthread_mutex_unlock(&sv.mu);
    if (sv.err < 0) {
        fprintf(stderr, "p2p: server failed: %s\n", dc_strerror(sv.err));
        return 1;
    }
    if (dc_multiaddr_parse(sv.addr, &ma, NULL) < 0)
        return 1;
    uv_loop_init(&c.loop);

    /* Connection set-up times. */
    times = calloc((size_t)dials, sizeof(*times));
    if (times == NULL)
        return 1;
    for (int i = 0; i < dials; i++) {
        uint64_t t0;
        if (client_host(&c, use_psk, psk) < 0)
            return 1;
        c.dialed = false;
        t0 = uv_hrtime();
        rc = dc_host_dial(c.host, &ma, 5000, on_dialed, &c);
        if (rc == 0)
            while (!c.dialed)
                uv_run(&c.loop, UV_RUN_ONCE);
        if (rc < 0 || c.status < 0) {
            fprintf(stderr, "p2p: dial %d failed: %s\n", i, dc_strerror(rc < 0 ? rc : c.status));
            return 1;
        }
        times[i] = c.t_dial_ns - t0;
        client_drop_host(&c);
    }
    qsort(times, (size_t)dials, sizeof(*times), cmp_u64);
    p50 = (double)times[dials / 2] / 1e6;
    p90 = (double)times[dials * 9 / 10] / 1e6;
    p99 = (double)times[dials * 99 / 100] / 1e6;
    free(times);

    /* Throughput on one stream. */
    cpu0 = cpu_seconds();
    if (client_host(&c, use_psk, psk) < 0)
        return 1;
    c.dialed = false;
    if (dc_host_dial(c.host, &ma, 5000, on_dialed, &c) < 0)
        return 1;
    while (!c.dialed)
        uv_run(&c.loop, UV_RUN_ONCE);
    if (c.status < 0)
        return 1;
    {
        const char *protos[1] = {BENCH_PROTOCOL};
        const struct dc_peer_id *server_id = dc_identity_peer_id(sv.id);
        c.chunk = malloc(CHUNK);
        if (c.chunk == NULL)
            return 1;
        memset(c.chunk, 0xa5, CHUNK);
        c.total = mb * 1024u * 1024u;
        uv_check_init(&c.loop, &c.check);
        c.check.data = &c;
        uv_check_start(&c.check, on_check);
        rc = dc_host_new_stream(c.host, server_id, protos, 1, &cl_cb, &c, &c.s);
        if (rc < 0) {
            fprintf(stderr, "p2p: stream failed: %s\n", dc_strerror(rc));
            return 1;
        }
    }
    /* Run the sender until the server saw the FIN (its own FIN back wakes us at the end). */
    for (;;) {
        bool done;
        uv_run(&c.loop, UV_RUN_ONCE);
        pthread_mutex_lock(&sv.mu);
        done = sv.done;
        pthread_mutex_unlock(&sv.mu);
        if (done || c.status == DC_EPEER)
            break;
    }
    if (sv.received != c.total) {
        fprintf(stderr, "p2p: received %llu of %llu bytes\n", (unsigned long long)sv.received,
                (unsigned long long)c.total);
        return 1;
    }
    mbps = (double)c.total / 1e6 / ((double)(sv.t_fin_ns - c.t_start_ns) / 1e9);
    cpu_per_gb = (cpu_seconds() - cpu0) / ((double)c.total / 1e9);

    uv_close((uv_handle_t *)&c.check, NULL);
    client_drop_host(&c);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&c.loop);
    free(c.chunk);
    uv_async_send(&sv.stop);
    pthread_join(th, NULL);

    if (json) {
        printf("{\"psk\":%s,\"stream_mb_per_s\":%.1f,\"mib_sent\":%llu,\"setup_ms_p50\":%.3f,"
               "\"cpu_s_per_gb\":%.3f,\"setup_ms_p90\":%.3f,\"setup_ms_p99\":%.3f,\"dials\":%d}\n",
               use_psk ? "true" : "false", mbps, (unsigned long long)mb, p50, cpu_per_gb, p90, p99,
               dials);
    } else {
        printf("%-6s  %10.1f MB/s  %.3f CPU s/GB  (%llu MiB, one stream)   set-up p50 %.3f ms  "
               "p90 %.3f ms  p99 %.3f ms  (%d dials)\n",
               use_psk ? "pnet" : "plain", mbps, cpu_per_gb, (unsigned long long)mb, p50, p90, p99,
               dials);
    }
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t mb = 2048;
    int dials = 300;
    bool psk = false, json = false;

    signal(SIGPIPE, SIG_IGN); /* peers hang up while we write, as a daemon's do */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc)
            mb = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--dials") == 0 && i + 1 < argc)
            dials = atoi(argv[++i]);
        else if (strcmp(argv[i], "--psk") == 0)
            psk = true;
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else {
            fprintf(stderr, "usage: p2p [--mb N] [--dials N] [--psk] [--json]\n");
            return 2;
        }
    }
    if (mb == 0 || dials < 1) {
        fprintf(stderr, "p2p: --mb and --dials must be positive\n");
        return 2;
    }
    if (!json)
        printf("bench/p2p: two hosts on loopback, TCP + Noise XX + yamux, one thread each "
               "(targets: >= 500 MB/s per stream, set-up p50 <= 2 ms)\n");
    if (run(mb, dials, false, json) != 0)
        return 1;
    if (psk && run(mb, dials, true, json) != 0)
        return 1;
    return 0;
}

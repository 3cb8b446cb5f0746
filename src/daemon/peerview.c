/* SPDX-License-Identifier: MIT */
/*
 * peerview.c - the daemon's peer snapshot and dial round trip for the API threads (see
 * peerview.h for the contract).
 *
 * Why a snapshot rather than a round trip for reads: GET /api/peers runs on a libmicrohttpd
 * polling thread, which must never wait on another thread; copying a string under a mutex is
 * bounded and cheap. The loop thread rebuilds the string when something changes, and on a 5 s
 * timer so round-trip times and last-seen stamps stay fresh.
 *
 * Why a round trip for dials: a dial is an action with an answer (the PeerId or why not), and
 * only the loop thread may touch the host. A dial job is shared by the caller and the loop; it
 * holds two references, so whichever side finishes last (the caller may give up at its
 * deadline, the loop's callback may fire late) frees it. Everything shared is under pv->mu.
 */
#include "daemon/peerview.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "crypto/crypto.h"

#define LOG              "daemon"
#define REFRESH_MS       5000
#define PING_EVERY_TICKS 6 /* 30 s */
#define MAX_PEERS        1024

struct pv_peer {
    struct dc_peer_id id;
    bool outbound;
    struct dc_multiaddr remote;
};

struct dial_job {
    struct dc_multiaddr ma;
    uint32_t timeout_ms;
    pthread_cond_t cv;
    int refs;
    bool done;
    int status;
    char peer[DC_PEER_ID_STR_MAX];
    struct dial_job *next;                  /* in the queue to the loop */
    struct dial_job *wait_prev, *wait_next; /* in pv->waiting while its caller waits */
    struct dc_peerview *pv;
};

struct dc_peerview {
    uv_loop_t *loop;
    struct dc_host *host;
    uv_async_t async;
    uv_timer_t timer;
    int open_handles;

    pthread_mutex_t mu;
    char *snap; /* under mu */
    size_t snap_len;
    struct dial_job *queue;   /* under mu */
    struct dial_job *waiting; /* under mu: jobs whose callers wait, woken at shutdown */
    bool closed;              /* under mu (written by the loop thread only) */

    /* loop thread only */
    struct pv_peer *peers;
    size_t n_peers;
    unsigned ticks;
};

/* ---- snapshot (loop thread) ---- */

static json_t *ma_json(const struct dc_multiaddr *ma)
{
    char text[DC_MULTIADDR_TEXT_MAX];

    if (ma->len == 0 || dc_multiaddr_format(ma, text, sizeof(text)) < 0)
        return json_null();
    return json_string(text);
}

static json_t *peer_json(struct dc_peerview *pv, const struct pv_peer *p)
{
    const struct dc_peer_info *info = dc_host_peer_info(pv->host, &p->id);
    char id[DC_PEER_ID_STR_MAX];
    json_t *o, *addrs = json_array(), *protos = json_array();

    if (dc_peer_id_to_string(&p->id, id, sizeof(id)) < 0)
        snprintf(id, sizeof(id), "?");
    if (info != NULL) {
        for (size_t i = 0; i < info->n_addrs && addrs != NULL; i++)
            json_array_append_new(addrs, ma_json(&info->addrs[i]));
        for (size_t i = 0; i < info->n_protocols && protos != NULL; i++)
            json_array_append_new(protos, json_string(info->protocols[i]));
    }
    o = json_pack("{s:s, s:s, s:o, s:o*, s:o*}", "peer_id", id, "direction",
                  p->outbound ? "outbound" : "inbound", "remote_address", ma_json(&p->remote),
                  "addresses", addrs, "protocols", protos);
    if (o == NULL)
        return NULL;
    if (info != NULL && info->rtt_us > 0)
        json_object_set_new(o, "rtt_ms", json_real((double)info->rtt_us / 1000.0));
    else
        json_object_set_new(o, "rtt_ms", json_null());
    json_object_set_new(o, "agent",
                        info != NULL && info->identified ? json_string(info->agent) : json_null());
    json_object_set_new(o, "protocol_version",
                        info != NULL && info->identified ? json_string(info->protocol_version)
                                                         : json_null());
    json_object_set_new(o, "identified", json_boolean(info != NULL && info->identified));
    json_object_set_new(o, "last_seen_ms",
                        json_integer(info != NULL ? (json_int_t)info->last_seen_ms : 0));
    return o;
}

static void refresh(struct dc_peerview *pv)
{
    json_t *arr = json_array();
    char *text;

    if (arr == NULL || pv->closed) {
        json_decref(arr);
        return;
    }
    for (size_t i = 0; i < pv->n_peers; i++)
        json_array_append_new(arr, peer_json(pv, &pv->peers[i]));
    text = json_dumps(arr, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(arr);
    if (text == NULL)
        return; /* keep the old snapshot */
    pthread_mutex_lock(&pv->mu);
    free(pv->snap);
    pv->snap = text;
    pv->snap_len = strlen(text);
    pthread_mutex_unlock(&pv->mu);
}

int dc_peerview_json(void *ud, char **out, size_t *len)
{
    struct dc_peerview *pv = ud;

    pthread_mutex_lock(&pv->mu);
    *out = dc_strdup(pv->snap != NULL ? pv->snap : "[]");
    *len = *out != NULL ? strlen(*out) : 0;
    pthread_mutex_unlock(&pv->mu);
    return *out != NULL ? 0 : DC_ENOMEM;
}

static void on_ping(void *ud, int status, uint64_t rtt_us)
{
    struct dc_peerview *pv = ud;

    DC_UNUSED(rtt_us);
    if (status == DC_ECLOSED || pv->closed)
        return; /* the host is going away: no host calls now */
    refresh(pv);
}

static void ping(struct dc_peerview *pv, const struct dc_peer_id *peer)
{
    if (dc_host_ping(pv->host, peer, on_ping, pv) < 0)
        dc_log_debug(LOG, "cannot ping a peer for its round-trip time");
}

static void on_timer(uv_timer_t *t)
{
    struct dc_peerview *pv = t->data;

    if (pv->closed)
        return;
    if (++pv->ticks % PING_EVERY_TICKS == 0) {
        for (size_t i = 0; i < pv->n_peers; i++)
            ping(pv, &pv->peers[i].id);
    }
    refresh(pv);
}

void dc_peerview_connected(struct dc_peerview *pv, const struct dc_peer_id *peer, bool outbound,
                           const struct dc_multiaddr *remote)
{
    struct pv_peer *p = NULL;

    if (pv == NULL || pv->closed)
        return;
    for (size_t i = 0; i < pv->n_peers && p == NULL; i++) {
        if (dc_peer_id_equal(&pv->peers[i].id, peer))
            p = &pv->peers[i];
    }
    if (p == NULL) {
        struct pv_peer *v;
        if (pv->n_peers >= MAX_PEERS)
            return;
        v = dc_realloc(pv->peers, (pv->n_peers + 1) * sizeof(*v));
        if (v == NULL)
            return;
        pv->peers = v;
        p = &pv->peers[pv->n_peers++];
    }
    p->id = *peer;
    p->outbound = outbound;
    p->remote = *remote;
    refresh(pv);
}

void dc_peerview_disconnected(struct dc_peerview *pv, const struct dc_peer_id *peer)
{
    if (pv == NULL)
        return;
    for (size_t i = 0; i < pv->n_peers; i++) {
        if (dc_peer_id_equal(&pv->peers[i].id, peer)) {
            pv->peers[i] = pv->peers[--pv->n_peers];
            break;
        }
    }
    refresh(pv);
}

void dc_peerview_identified(struct dc_peerview *pv, const struct dc_peer_id *peer)
{
    if (pv == NULL || pv->closed)
        return;
    ping(pv, peer);
    refresh(pv);
}

/* ---- dials ---- */

/* Drops a reference under pv->mu; the last frees the job. */
static void job_unref_locked(struct dial_job *j)
{
    if (--j->refs > 0)
        return;
    pthread_cond_destroy(&j->cv);
    dc_free(j);
}

static void job_finish(struct dial_job *j, int status, const struct dc_peer_id *peer)
{
    struct dc_peerview *pv = j->pv;

    pthread_mutex_lock(&pv->mu);
    j->done = true;
    j->status = status;
    if (status == 0 && peer != NULL && dc_peer_id_to_string(peer, j->peer, sizeof(j->peer)) < 0)
        j->status = DC_ECORRUPT;
    pthread_cond_signal(&j->cv);
    job_unref_locked(j);
    pthread_mutex_unlock(&pv->mu);
}

static void on_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    job_finish(ud, status, peer);
}

static void on_async(uv_async_t *a)
{
    struct dc_peerview *pv = a->data;
    struct dial_job *list;

    pthread_mutex_lock(&pv->mu);
    list = pv->queue;
    pv->queue = NULL;
    pthread_mutex_unlock(&pv->mu);
    while (list != NULL) {
        struct dial_job *j = list;
        int rc;

        list = j->next;
        rc = pv->closed ? DC_ECLOSED : dc_host_dial(pv->host, &j->ma, j->timeout_ms, on_dialed, j);
        if (rc < 0)
            job_finish(j, rc, NULL);
    }
}

int dc_peerview_connect(void *ud, const char *multiaddr, uint32_t timeout_ms, char *peer_id,
                        size_t cap, char *err, size_t errlen)
{
    struct dc_peerview *pv = ud;
    struct dc_multiaddr_error me;
    struct dial_job *j;
    struct timespec until;
    int rc;

    if (timeout_ms == 0)
        timeout_ms = 10000;
    j = dc_calloc(1, sizeof(*j));
    if (j == NULL)
        return DC_ENOMEM;
    rc = dc_multiaddr_parse(multiaddr, &j->ma, &me);
    if (rc < 0) {
        snprintf(err, errlen, "'%s' is not a multiaddr: %s at offset %zu: %s", multiaddr,
                 me.component, me.offset, me.reason);
        dc_free(j);
        return DC_EINVAL;
    }
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&j->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    j->pv = pv;
    j->timeout_ms = timeout_ms;
    j->refs = 2; /* the caller's and the loop's */

    pthread_mutex_lock(&pv->mu);
    if (pv->closed) {
        pthread_mutex_unlock(&pv->mu);
        pthread_cond_destroy(&j->cv);
        dc_free(j);
        snprintf(err, errlen, "the daemon is shutting down");
        return DC_ECLOSED;
    }
    j->next = pv->queue;
    pv->queue = j;
    j->wait_next = pv->waiting;
    if (pv->waiting != NULL)
        pv->waiting->wait_prev = j;
    pv->waiting = j;
    uv_async_send(&pv->async);
    /* The dial has its own timeout; a little more here covers the loop's latency. */
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(timeout_ms / 1000) + 2;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!j->done && !pv->closed) {
        if (pthread_cond_timedwait(&j->cv, &pv->mu, &until) != 0)
            break;
    }
    rc = j->done ? j->status : pv->closed ? DC_ECLOSED : DC_ETIMEDOUT;
    if (rc == 0)
        snprintf(peer_id, cap, "%s", j->peer);
    if (j->wait_prev != NULL)
        j->wait_prev->wait_next = j->wait_next;
    else
        pv->waiting = j->wait_next;
    if (j->wait_next != NULL)
        j->wait_next->wait_prev = j->wait_prev;
    job_unref_locked(j);
    pthread_mutex_unlock(&pv->mu);

    if (rc == 0)
        return 0;
    if (rc == DC_EINVAL)
        snprintf(err, errlen, "cannot dial %s: it names this node or lacks /tcp/", multiaddr);
    else if (rc == DC_EUNSUPPORTED)
        snprintf(err, errlen,
                 "cannot dial %s: only /ip4|/ip6|/dns|/dns4|/dns6/.../tcp/... addresses are "
                 "supported",
                 multiaddr);
    else if (rc == DC_EPEER)
        snprintf(err, errlen, "cannot connect to %s: another PeerId answered", multiaddr);
    else if (rc == DC_ECLOSED)
        snprintf(err, errlen, "the daemon is shutting down");
    else if (rc == DC_EPROTO || rc == DC_ECORRUPT || rc == DC_ECRYPTO)
        snprintf(err, errlen,
                 "cannot connect to %s: the libp2p handshake failed (%s): not a libp2p node, or "
                 "another private swarm key",
                 multiaddr, dc_strerror(rc));
    else
        snprintf(err, errlen, "cannot connect to %s: %s", multiaddr, dc_strerror(rc));
    return rc;
}

/* ---- lifecycle ---- */

int dc_peerview_new(uv_loop_t *loop, struct dc_host *host, struct dc_peerview **out)
{
    struct dc_peerview *pv = dc_calloc(1, sizeof(*pv));
    int rc;

    *out = NULL;
    if (pv == NULL)
        return DC_ENOMEM;
    pv->loop = loop;
    pv->host = host;
    pthread_mutex_init(&pv->mu, NULL);
    rc = uv_async_init(loop, &pv->async, on_async);
    if (rc < 0) {
        pthread_mutex_destroy(&pv->mu);
        dc_free(pv);
        return rc;
    }
    pv->async.data = pv;
    pv->open_handles = 1;
    uv_timer_init(loop, &pv->timer);
    pv->timer.data = pv;
    pv->open_handles++;
    uv_timer_start(&pv->timer, on_timer, REFRESH_MS, REFRESH_MS);
    *out = pv;
    return 0;
}

void dc_peerview_shutdown(struct dc_peerview *pv)
{
    struct dial_job *list;

    if (pv == NULL)
        return;
    pthread_mutex_lock(&pv->mu);
    pv->closed = true;
    list = pv->queue;
    pv->queue = NULL;
    pthread_mutex_unlock(&pv->mu);
    /* Queued dials never reached the host; waiting callers see 'closed'. */
    while (list != NULL) {
        struct dial_job *j = list;
        list = j->next;
        job_finish(j, DC_ECLOSED, NULL);
    }
    /* Dials in flight end when the host is freed, after the API server: wake their callers
     * now, so the server's shutdown does not wait for a dial timeout. */
    pthread_mutex_lock(&pv->mu);
    for (struct dial_job *j = pv->waiting; j != NULL; j = j->wait_next)
        pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&pv->mu);
}

static void on_closed(uv_handle_t *h)
{
    struct dc_peerview *pv = h->data;

    if (--pv->open_handles > 0)
        return;
    pthread_mutex_destroy(&pv->mu);
    free(pv->snap);
    dc_free(pv->peers);
    dc_free(pv);
}

void dc_peerview_free(struct dc_peerview *pv)
{
    if (pv == NULL)
        return;
    dc_peerview_shutdown(pv);
    uv_timer_stop(&pv->timer);
    uv_close((uv_handle_t *)&pv->timer, on_closed);
    uv_close((uv_handle_t *)&pv->async, on_closed);
}

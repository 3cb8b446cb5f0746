/* SPDX-License-Identifier: MIT */
/*
 * dht.c - the Kademlia service: kad.h's core on the host's streams.
 *
 * Map of the file: the state (ops, requests, dials, served streams); the store database; the
 * request path (dial by PeerId -> stream -> one frame each way); the server side; the
 * processing step that polls lookups and finishes operations; maintenance (refresh,
 * republish, expire, save); the public operations.
 *
 * Why a processing step: the host's callbacks (stream data, dial results) may arrive nested
 * inside each other and inside our own calls. They only record what happened and feed the
 * lookup core; everything that creates or frees requests and operations, and every user
 * callback, runs from 'kick', a zero-delay timer, so nothing is freed under a caller and no
 * callback fires inside the call that started an operation.
 *
 * Requests are owned by the dht (list 'reqs'); one belongs to an operation (op) until the op
 * finishes, then it is detached (op NULL) and only waits for its stream to end. Dials are
 * shared per peer ('dialing'); when the dht is freed while a dial is pending the dialing
 * record is orphaned (dht NULL) and freed by the host's dial callback.
 */
#include "p2p/dht.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "base/multibase.h"
#include "base/varint.h"
#include "p2p/record.h"

#define DEFAULT_REQUEST_TIMEOUT 10000u
#define DEFAULT_REFRESH         (10u * 60u * 1000u)
#define DEFAULT_SAVE            (5u * 60u * 1000u)
#define TICK_MS                 500u
#define MAX_KEPT                256u /* keys this node keeps providing */
#define MAX_SERVED              512u /* inbound DHT streams open at once */
#define MAX_REQS                1024u
#define RX_MAX                  (DC_KAD_MAX_MESSAGE + 16u)

enum op_kind { OP_FIND_NODE, OP_GET, OP_PUT, OP_PROVIDE, OP_FINDPROVS };

struct op {
    struct dc_dht *dht;
    enum op_kind kind;
    uint8_t key[DC_KAD_MAX_KEY];
    size_t key_len;
    uint8_t *value; /* PUT */
    size_t value_len;
    uint32_t max_providers;
    struct dc_kad_lookup *lookup;
    dc_dht_done_cb cb;
    void *ud;
    bool self_lookup; /* a table refresh: re-announce kept keys afterwards */
    bool storing;     /* PUT/PROVIDE: lookup over, store requests out */
    bool finished;
    int status;
    size_t outstanding, n_stored, n_peers;
    struct dc_kad_msg result; /* FINDPROVS: merged providers */
    struct op *next;
};

enum req_state { RQ_NEW, RQ_DIAL, RQ_STREAM, RQ_DONE };

struct req {
    struct dc_dht *dht;
    struct op *op; /* NULL once detached */
    bool lookup_req;
    uint64_t req_id;
    bool expect_response;
    struct dc_peer_id peer;
    enum req_state state;
    bool reported; /* success or failure told to the op */
    bool liveness; /* a routing-table liveness check: the outcome goes to dc_kad_ping_result */
    struct dc_buf out;
    struct dc_buf in;
    struct dc_host_stream *s;
    uint64_t deadline_ms;
    struct req *next;
};

struct dialing {
    struct dc_dht *dht; /* NULL when orphaned */
    struct dc_peer_id peer;
    size_t next_addr;
    struct dialing *next;
};

struct served {
    struct dc_dht *dht;
    struct dc_host_stream *s;
    struct dc_buf in;
    struct served *next, *prev;
};

struct kept {
    uint8_t key[DC_KAD_MAX_KEY];
    size_t key_len;
    uint64_t last_ms; /* last announcement that reached a peer, 0 never */
    bool running;
};

struct dc_dht {
    struct dc_host *host;
    uv_loop_t *loop;
    char *protocol;
    bool client_mode;
    uint32_t request_timeout_ms, refresh_ms, save_ms;
    struct dc_kad *kad;
    sqlite3 *db;
    char err[256];
    struct op *ops;
    struct req *reqs;
    size_t n_reqs;
    struct dialing *dials;
    struct served *served;
    size_t n_served;
    struct kept *kept;
    size_t n_kept;
    uv_timer_t kick, tick;
    uint64_t last_refresh_ms, last_save_ms, last_expire_ms;
    bool bootstrapped, refreshing, freeing;
    int timers_closed;
};

static const struct dc_host_stream_cb req_stream_cb, served_stream_cb;

static void on_kick(uv_timer_t *t);

/* Schedules the processing step (see the file header). */
static void kick(struct dc_dht *dht)
{
    if (!dht->freeing)
        uv_timer_start(&dht->kick, on_kick, 0, 0);
}

/* ---- the store database ----------------------------------------------------------------- */

static int db_exec(struct dc_dht *dht, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(dht->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(dht->err, sizeof(dht->err), "%s", msg != NULL ? msg : "sqlite error");
        sqlite3_free(msg);
        return DC_ECORRUPT;
    }
    return 0;
}

static int db_open(struct dc_dht *dht, const char *path)
{
    sqlite3_stmt *st = NULL;
    int fd, rc;

    /* Created here rather than by SQLite so the mode is 0600 whatever the umask (everything in
     * state_dir is); SQLite gives its -wal and -shm files the database file's mode. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
        snprintf(dht->err, sizeof(dht->err), "%s: %s", path, strerror(-rc));
        return rc;
    }
    (void)fchmod(fd, 0600);
    close(fd);
    if (sqlite3_open_v2(path, &dht->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(dht->err, sizeof(dht->err), "%s: %s", path,
                 dht->db != NULL ? sqlite3_errmsg(dht->db) : "cannot open");
        return DC_ECORRUPT;
    }
    sqlite3_busy_timeout(dht->db, 2000);
    rc = db_exec(dht, "PRAGMA journal_mode=WAL;"
                      "CREATE TABLE IF NOT EXISTS kad_store (id INTEGER PRIMARY KEY CHECK (id = 1),"
                      " saved_ms INTEGER NOT NULL, blob BLOB NOT NULL);"
                      "CREATE TABLE IF NOT EXISTS kad_provided (key BLOB PRIMARY KEY);");
    if (rc < 0)
        return rc;
    /* The stores, as dc_kad_store_save() wrote them; a blob that no longer loads is dropped
     * (it is a cache of what peers told us: they republish). */
    if (sqlite3_prepare_v2(dht->db, "SELECT blob FROM kad_store WHERE id = 1", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const void *p = sqlite3_column_blob(st, 0);
        int n = sqlite3_column_bytes(st, 0);
        if (p != NULL && n > 0)
            (void)!dc_kad_store_load(dht->kad, p, (size_t)n, dc_wall_ms());
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(dht->db, "SELECT key FROM kad_provided", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW && dht->n_kept < MAX_KEPT) {
            const void *p = sqlite3_column_blob(st, 0);
            int n = sqlite3_column_bytes(st, 0);
            if (p == NULL || n <= 0 || (size_t)n > DC_KAD_MAX_KEY)
                continue;
            struct kept *k = &dht->kept[dht->n_kept++];
            memset(k, 0, sizeof(*k));
            memcpy(k->key, p, (size_t)n);
            k->key_len = (size_t)n;
        }
    }
    sqlite3_finalize(st);
    return 0;
}

static void db_save(struct dc_dht *dht)
{
    struct dc_buf b;
    sqlite3_stmt *st = NULL;

    if (dht->db == NULL)
        return;
    dc_buf_init(&b, 64u << 20);
    if (dc_kad_store_save(dht->kad, &b) == 0 &&
        sqlite3_prepare_v2(dht->db,
                           "INSERT OR REPLACE INTO kad_store (id, saved_ms, blob) VALUES (1, ?, ?)",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)dc_wall_ms());
        sqlite3_bind_blob(st, 2, b.data != NULL ? (const void *)b.data : "", (int)b.len,
                          SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            snprintf(dht->err, sizeof(dht->err), "saving the DHT store: %s",
                     sqlite3_errmsg(dht->db));
    }
    sqlite3_finalize(st);
    dc_buf_cleanup(&b);
    dht->last_save_ms = dc_wall_ms();
}

static void db_add_kept(struct dc_dht *dht, const uint8_t *key, size_t len)
{
    sqlite3_stmt *st = NULL;

    if (dht->db == NULL)
        return;
    if (sqlite3_prepare_v2(dht->db, "INSERT OR IGNORE INTO kad_provided (key) VALUES (?)", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_blob(st, 1, key, (int)len, SQLITE_STATIC);
        (void)sqlite3_step(st);
    }
    sqlite3_finalize(st);
}

/* ---- kad core callbacks ----------------------------------------------------------------- */

static size_t kad_peer_addrs(void *ud, const struct dc_peer_id *id, struct dc_multiaddr *out,
                             size_t max)
{
    struct dc_dht *dht = ud;
    const struct dc_peer_info *pi;
    size_t n;

    if (dc_peer_id_equal(id, dc_host_peer_id(dht->host))) {
        n = dc_host_listen_addrs(dht->host, out, max);
        return n < max ? n : max;
    }
    pi = dc_host_peer_info(dht->host, id);
    if (pi == NULL)
        return 0;
    n = pi->n_addrs < max ? pi->n_addrs : max;
    memcpy(out, pi->addrs, n * sizeof(*out));
    return n;
}

static void kad_peer_learned(void *ud, const struct dc_kad_peer_info *p)
{
    struct dc_dht *dht = ud;

    if (p->n_addrs > 0)
        (void)!dc_host_add_peer_addrs(dht->host, &p->id, p->addrs, p->n_addrs);
}

/* ---- requests --------------------------------------------------------------------------- */

/* Tells the op how the request went (once). */
static void req_report(struct req *r, bool ok, const uint8_t *body, size_t len)
{
    struct op *op = r->op;
    uint64_t now = dc_wall_ms();

    if (r->reported)
        return;
    r->reported = true;
    if (r->liveness) {
        (void)dc_kad_ping_result(r->dht->kad, &r->peer, ok, now);
        kick(r->dht);
        return;
    }
    if (op == NULL || op->finished)
        return;
    if (r->lookup_req) {
        if (op->lookup == NULL)
            return;
        if (ok && body != NULL)
            (void)!dc_kad_lookup_on_response_bytes(op->lookup, r->req_id, body, len, now);
        else
            (void)dc_kad_lookup_on_failure(op->lookup, r->req_id, now);
    } else {
        if (ok)
            op->n_stored++;
        if (op->outstanding > 0)
            op->outstanding--;
    }
    kick(r->dht);
}

/* Ends a request: resets its stream if any; freed by the processing step. */
static void req_end(struct req *r, bool ok)
{
    req_report(r, ok, NULL, 0);
    if (r->s != NULL) {
        struct dc_host_stream *s = r->s;
        r->s = NULL;
        dc_host_stream_reset(s);
    }
    r->state = RQ_DONE;
    kick(r->dht);
}

static void req_open_stream(struct req *r)
{
    const char *protos[1] = {r->dht->protocol};
    int rc;

    rc = dc_host_new_stream(r->dht->host, &r->peer, protos, 1, &req_stream_cb, r, &r->s);
    if (rc < 0) {
        r->s = NULL;
        req_end(r, false);
        return;
    }
    r->state = RQ_STREAM;
    rc = dc_host_stream_write(r->s, r->out.data, r->out.len);
    if (rc == 0)
        rc = dc_host_stream_close(r->s); /* one request per stream: half-close */
    if (rc < 0)
        req_end(r, false);
}

static void dial_next(struct dialing *d);

static void dialing_done(struct dialing *d, int status)
{
    struct dc_dht *dht = d->dht;

    for (struct dialing **pp = &dht->dials; *pp != NULL; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    for (struct req *r = dht->reqs; r != NULL; r = r->next) {
        if (r->state != RQ_DIAL || !dc_peer_id_equal(&r->peer, &d->peer))
            continue;
        if (r->op == NULL && r->reported)
            req_end(r, false); /* its operation is over: nothing to send */
        else if (status == 0 && dc_host_is_connected(dht->host, &d->peer))
            req_open_stream(r);
        else
            req_end(r, false);
    }
    dc_free(d);
}

static void on_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    struct dialing *d = ud;

    DC_UNUSED(peer);
    if (d->dht == NULL) {
        dc_free(d);
        return;
    }
    if (status < 0 && status != DC_EPEER) {
        dial_next(d);
        return;
    }
    dialing_done(d, status);
}

/* Dials the peer's next known TCP address (with /p2p/ so Noise checks who answers). */
static void dial_next(struct dialing *d)
{
    struct dc_dht *dht = d->dht;
    const struct dc_peer_info *pi = dc_host_peer_info(dht->host, &d->peer);

    while (pi != NULL && d->next_addr < pi->n_addrs) {
        struct dc_multiaddr ma = pi->addrs[d->next_addr++];
        struct dc_multiaddr_target t;

        if (dc_multiaddr_target(&ma, &t) < 0 || t.transport != DC_MA_TCP)
            continue; /* ip4, ip6 and dns names; the host refuses what it cannot dial */
        if (dc_multiaddr_append_p2p(&ma, d->peer.bytes, d->peer.len) < 0)
            continue;
        if (dc_host_dial(dht->host, &ma, dht->request_timeout_ms / 2, on_dialed, d) == 0)
            return;
    }
    dialing_done(d, DC_ENOENT);
}

static void req_start(struct req *r)
{
    struct dc_dht *dht = r->dht;
    struct dialing *d;

    if (dc_host_is_connected(dht->host, &r->peer)) {
        req_open_stream(r);
        return;
    }
    r->state = RQ_DIAL;
    for (d = dht->dials; d != NULL; d = d->next)
        if (dc_peer_id_equal(&d->peer, &r->peer))
            return; /* a dial to it is under way */
    d = dc_calloc(1, sizeof(*d));
    if (d == NULL) {
        req_end(r, false);
        return;
    }
    d->dht = dht;
    d->peer = r->peer;
    d->next = dht->dials;
    dht->dials = d;
    dial_next(d);
}

/* Creates a request for 'op' carrying 'msg' to 'peer' and starts it. */
static int req_new(struct dc_dht *dht, struct op *op, const struct dc_peer_id *peer,
                   const struct dc_kad_msg *msg, bool lookup_req, uint64_t req_id)
{
    struct req *r;
    int rc;

    if (dht->n_reqs >= MAX_REQS)
        return DC_ELIMIT;
    r = dc_calloc(1, sizeof(*r));
    if (r == NULL)
        return DC_ENOMEM;
    r->dht = dht;
    r->op = op;
    r->lookup_req = lookup_req;
    r->req_id = req_id;
    r->peer = *peer;
    r->expect_response = msg->type != DC_KAD_ADD_PROVIDER;
    r->liveness = op == NULL && msg->type == DC_KAD_PING; /* see liveness_check */
    r->deadline_ms = dc_wall_ms() + dht->request_timeout_ms;
    dc_buf_init(&r->out, RX_MAX);
    dc_buf_init(&r->in, RX_MAX);
    rc = dc_kad_msg_encode(msg, &r->out);
    if (rc < 0) {
        dc_buf_cleanup(&r->out);
        dc_buf_cleanup(&r->in);
        dc_free(r);
        return rc;
    }
    r->next = dht->reqs;
    dht->reqs = r;
    dht->n_reqs++;
    req_start(r);
    return 0;
}

static void rq_on_open(void *ud, struct dc_host_stream *s)
{
    struct req *r = ud;

    DC_UNUSED(s);
    if (!r->expect_response) {
        /* ADD_PROVIDER has no answer: the peer took the protocol, the message follows. The
         * stream stays until the peer closes its side (or the deadline). */
        req_report(r, true, NULL, 0);
    }
}

static void rq_on_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    struct req *r = ud;
    const uint8_t *body;
    size_t body_len, used;
    int rc;

    DC_UNUSED(s);
    if (r->s == NULL)
        return;
    if (!r->expect_response || r->reported || dc_buf_append(&r->in, p, n) < 0) {
        req_end(r, r->reported);
        return;
    }
    rc = dc_kad_frame_split(r->in.data, r->in.len, &body, &body_len, &used);
    if (rc == DC_ETRUNCATED)
        return;
    if (rc < 0) {
        req_end(r, false);
        return;
    }
    req_report(r, true, body, body_len);
    req_end(r, true);
}

static void rq_on_fin(void *ud, struct dc_host_stream *s)
{
    struct req *r = ud;

    DC_UNUSED(s);
    if (r->s != NULL)
        req_end(r, r->reported);
}

static void rq_on_close(void *ud, struct dc_host_stream *s, int err)
{
    struct req *r = ud;

    DC_UNUSED(s);
    DC_UNUSED(err);
    r->s = NULL; /* gone: do not reset */
    req_end(r, r->reported);
}

static const struct dc_host_stream_cb req_stream_cb = {
    .on_open = rq_on_open, .on_data = rq_on_data, .on_fin = rq_on_fin, .on_close = rq_on_close};

static void req_free(struct req *r)
{
    dc_buf_cleanup(&r->out);
    dc_buf_cleanup(&r->in);
    dc_free(r);
}

/* ---- serving ---------------------------------------------------------------------------- */

static void served_free(struct served *sv)
{
    struct dc_dht *dht = sv->dht;

    if (sv->prev != NULL)
        sv->prev->next = sv->next;
    else
        dht->served = sv->next;
    if (sv->next != NULL)
        sv->next->prev = sv->prev;
    dht->n_served--;
    dc_buf_cleanup(&sv->in);
    dc_free(sv);
}

static void sv_on_open(void *ud, struct dc_host_stream *s)
{
    struct dc_dht *dht = ud;
    struct served *sv;

    if (dht->n_served >= MAX_SERVED || (sv = dc_calloc(1, sizeof(*sv))) == NULL) {
        dc_host_stream_reset(s);
        return;
    }
    sv->dht = dht;
    sv->s = s;
    dc_buf_init(&sv->in, RX_MAX);
    sv->next = dht->served;
    if (dht->served != NULL)
        dht->served->prev = sv;
    dht->served = sv;
    dht->n_served++;
    dc_host_stream_set_user(s, sv);
}

static void sv_on_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    struct served *sv = ud;
    struct dc_dht *dht;
    struct dc_buf out;
    const uint8_t *body;
    size_t body_len, used;
    int rc;

    if (sv == NULL)
        return;
    dht = sv->dht;
    if (dc_buf_append(&sv->in, p, n) < 0)
        goto fail;
    dc_buf_init(&out, RX_MAX);
    /* Several requests may come on one stream (go-libp2p reuses streams). */
    for (;;) {
        rc = dc_kad_frame_split(sv->in.data, sv->in.len, &body, &body_len, &used);
        if (rc == DC_ETRUNCATED)
            break;
        if (rc < 0) {
            dc_buf_cleanup(&out);
            goto fail;
        }
        rc = dc_kad_handle_request_bytes(dht->kad, dc_host_stream_peer(s), body, body_len,
                                         dc_wall_ms(), &out);
        dc_buf_consume(&sv->in, used);
        if (rc < 0) {
            dc_buf_cleanup(&out);
            goto fail;
        }
    }
    if (out.len > 0 && dc_host_stream_write(s, out.data, out.len) < 0) {
        dc_buf_cleanup(&out);
        goto fail;
    }
    dc_buf_cleanup(&out);
    return;
fail:
    served_free(sv);
    dc_host_stream_reset(s);
}

static void sv_on_fin(void *ud, struct dc_host_stream *s)
{
    DC_UNUSED(ud);
    (void)!dc_host_stream_close(s);
}

static void sv_on_close(void *ud, struct dc_host_stream *s, int err)
{
    struct served *sv = ud;

    DC_UNUSED(s);
    DC_UNUSED(err);
    if (sv != NULL)
        served_free(sv);
}

static const struct dc_host_stream_cb served_stream_cb = {
    .on_open = sv_on_open, .on_data = sv_on_data, .on_fin = sv_on_fin, .on_close = sv_on_close};

/* ---- operations and the processing step ------------------------------------------------- */

static void op_detach_reqs(struct op *op)
{
    for (struct req *r = op->dht->reqs; r != NULL; r = r->next) {
        if (r->op != op)
            continue;
        r->reported = true;
        r->op = NULL;
        if (r->lookup_req && r->state != RQ_DONE) {
            /* Lookup requests still out are of no use any more. */
            if (r->s != NULL) {
                struct dc_host_stream *s = r->s;
                r->s = NULL;
                dc_host_stream_reset(s);
            }
            if (r->state != RQ_DIAL)
                r->state = RQ_DONE;
        }
    }
}

static void op_finish(struct op *op, int status)
{
    if (op->finished)
        return;
    op->finished = true;
    op->status = status;
    kick(op->dht);
}

static void kept_announced(struct dc_dht *dht, const struct op *op)
{
    for (size_t i = 0; i < dht->n_kept; i++) {
        struct kept *k = &dht->kept[i];
        if (k->key_len == op->key_len && memcmp(k->key, op->key, op->key_len) == 0) {
            k->running = false;
            if (op->status == 0)
                k->last_ms = dc_wall_ms();
        }
    }
}

static void op_free(struct op *op)
{
    op_detach_reqs(op);
    dc_kad_lookup_free(op->lookup);
    dc_kad_msg_cleanup(&op->result);
    dc_free(op->value);
    dc_free(op);
}

static void self_info(struct dc_dht *dht, struct dc_kad_peer_info *pi, struct dc_multiaddr *addrs,
                      size_t cap)
{
    memset(pi, 0, sizeof(*pi));
    pi->id = *dc_host_peer_id(dht->host);
    pi->connection = DC_KAD_CONNECTED;
    pi->n_addrs = kad_peer_addrs(dht, &pi->id, addrs, cap);
    pi->addrs = pi->n_addrs > 0 ? addrs : NULL;
}

/* PUT/PROVIDE: the closest peers are known; send them the record or the provider entry. */
static void op_store(struct op *op)
{
    struct dc_dht *dht = op->dht;
    struct dc_peer_id closest[DC_KAD_K];
    struct dc_multiaddr addrs[DC_KAD_MAX_PEER_ADDRS];
    struct dc_kad_peer_info self;
    struct dc_kad_msg m;
    size_t n;
    int rc;

    n = dc_kad_lookup_closest(op->lookup, closest, DC_KAD_K);
    op->storing = true;
    dc_kad_msg_init(&m);
    rc = dc_kad_msg_set_key(&m, op->key, op->key_len);
    if (rc == 0 && op->kind == OP_PUT) {
        m.type = DC_KAD_PUT_VALUE;
        rc = dc_kad_msg_set_record(&m, op->key, op->key_len, op->value, op->value_len, NULL);
    } else if (rc == 0) {
        m.type = DC_KAD_ADD_PROVIDER;
        self_info(dht, &self, addrs, DC_ARRAY_LEN(addrs));
        rc = dc_kad_msg_add_peer(&m, true, &self);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (req_new(dht, op, &closest[i], &m, false, 0) == 0)
            op->outstanding++;
    }
    dc_kad_msg_cleanup(&m);
    if (rc < 0)
        op_finish(op, rc);
    else if (op->outstanding == 0)
        op_finish(op, n == 0 ? DC_EAGAIN : 0);
}

static void merge_providers(struct op *op, const struct dc_kad_peer_info *p, size_t n)
{
    for (size_t i = 0; i < n && op->result.n_providers < op->max_providers; i++) {
        bool dup = false;
        for (size_t j = 0; j < op->result.n_providers && !dup; j++)
            dup = dc_peer_id_equal(&op->result.providers[j].id, &p[i].id);
        if (!dup)
            (void)!dc_kad_msg_add_peer(&op->result, true, &p[i]);
    }
}

static void op_lookup_done(struct op *op)
{
    struct dc_kad_lookup_stats st;
    const uint8_t *v;
    size_t vlen, n;
    uint32_t found;

    dc_kad_lookup_stats(op->lookup, &st);
    op->n_peers = st.answered;
    switch (op->kind) {
    case OP_FIND_NODE:
        op_finish(op, 0);
        break;
    case OP_GET:
        if (dc_kad_lookup_value(op->lookup, &v, &vlen, &found, NULL, 0, &n) == 0) {
            op->value = dc_malloc(vlen > 0 ? vlen : 1);
            if (op->value == NULL) {
                op_finish(op, DC_ENOMEM);
                break;
            }
            memcpy(op->value, v, vlen);
            op->value_len = vlen;
            op_finish(op, 0);
        } else {
            op_finish(op, DC_ENOENT);
        }
        break;
    case OP_FINDPROVS: {
        const struct dc_kad_peer_info *p = dc_kad_lookup_providers(op->lookup, &n);
        merge_providers(op, p, n);
        op_finish(op, op->result.n_providers > 0 ? 0 : DC_ENOENT);
        break;
    }
    case OP_PUT:
    case OP_PROVIDE:
        op_store(op);
        break;
    }
}

static void op_poll(struct op *op)
{
    struct dc_dht *dht = op->dht;
    struct dc_kad_action a;
    uint64_t now = dc_wall_ms();

    if (op->finished || op->storing || op->lookup == NULL)
        return;
    while (!op->finished && dc_kad_lookup_poll(op->lookup, now, &a) == 1) {
        if (a.type == DC_KAD_ACTION_SEND) {
            if (req_new(dht, op, &a.peer, a.msg, true, a.req_id) < 0)
                (void)dc_kad_lookup_on_failure(op->lookup, a.req_id, now);
        } else if (a.type == DC_KAD_ACTION_CANCEL) {
            for (struct req *r = dht->reqs; r != NULL; r = r->next)
                if (r->op == op && r->lookup_req && r->req_id == a.req_id) {
                    r->reported = true;
                    req_end(r, false);
                }
        } else if (a.type == DC_KAD_ACTION_DONE) {
            op_lookup_done(op);
            return;
        }
    }
}

static void announce_kept(struct dc_dht *dht, bool all);

/* Routing-table liveness: a full bucket asks whether its least-recently-seen peer still
 * answers before a newcomer may take its place. The peer itself is asked - a kad PING request
 * on a stream of its own, dialing it from the peerstore when no connection is up (our server
 * and go-libp2p-kad-dht answer PING) - rather than trusting an open connection, which may be
 * half dead, or evicting every unconnected peer, which would favour newcomers over the
 * long-lived peers Kademlia prefers. req_report hands the answer, or the request's failure
 * or timeout, to dc_kad_ping_result. When no request can be made (request cap, memory),
 * whether a connection is up decides. */
static void liveness_check(struct dc_dht *dht, const struct dc_peer_id *peer, uint64_t now)
{
    struct dc_kad_msg m;

    memset(&m, 0, sizeof(m));
    m.type = DC_KAD_PING;
    if (req_new(dht, NULL, peer, &m, false, 0) < 0)
        (void)dc_kad_ping_result(dht->kad, peer, dc_host_is_connected(dht->host, peer), now);
}

static void process(struct dc_dht *dht)
{
    struct dc_kad_action a;
    uint64_t now = dc_wall_ms();

    if (dht->freeing)
        return;
    /* Routing-table liveness checks (see liveness_check). */
    while (dc_kad_poll(dht->kad, &a) == 1)
        if (a.type == DC_KAD_ACTION_PING)
            liveness_check(dht, &a.peer, now);
    for (struct op *op = dht->ops; op != NULL; op = op->next)
        op_poll(op);
    /* Requests past their deadline (stuck dials, silent peers, ADD_PROVIDER streams). */
    for (struct req *r = dht->reqs; r != NULL; r = r->next)
        if (r->state == RQ_STREAM && now > r->deadline_ms)
            req_end(r, r->reported);
    /* Finished operations: the user hears of them here, outside any other call. */
    for (struct op **pp = &dht->ops; *pp != NULL;) {
        struct op *op = *pp;
        if ((op->kind == OP_PUT || op->kind == OP_PROVIDE) && op->storing && !op->finished &&
            op->outstanding == 0)
            op_finish(op, op->n_stored > 0 ? 0 : DC_EAGAIN);
        if (!op->finished) {
            pp = &op->next;
            continue;
        }
        *pp = op->next;
        if (op->kind == OP_PROVIDE)
            kept_announced(dht, op);
        if (op->self_lookup) {
            dht->refreshing = false;
            dht->bootstrapped = true;
            announce_kept(dht, false);
        }
        if (op->cb != NULL) {
            struct dc_dht_result res = {0};
            res.value = op->value;
            res.value_len = op->value_len;
            res.n_providers = op->result.n_providers;
            res.providers = op->result.providers;
            res.n_stored = op->n_stored;
            res.n_peers = op->n_peers;
            op->cb(op->ud, op->status, &res);
        }
        op_free(op);
    }
    /* Free requests that are over and no longer referenced by the host. */
    for (struct req **pp = &dht->reqs; *pp != NULL;) {
        struct req *r = *pp;
        if (r->state == RQ_DONE && r->s == NULL) {
            *pp = r->next;
            dht->n_reqs--;
            req_free(r);
        } else {
            pp = &r->next;
        }
    }
}

static void on_kick(uv_timer_t *t)
{
    process(t->data);
}

static int op_new(struct dc_dht *dht, enum op_kind kind, const uint8_t *key, size_t key_len,
                  uint32_t max_providers, dc_dht_done_cb cb, void *ud, struct op **out)
{
    struct dc_kad_lookup_config lc = {0};
    struct op *op;
    int rc;

    *out = NULL;
    if (dht->freeing)
        return DC_ESTATE;
    if (key == NULL || key_len == 0 || key_len > DC_KAD_MAX_KEY)
        return DC_EINVAL;
    op = dc_calloc(1, sizeof(*op));
    if (op == NULL)
        return DC_ENOMEM;
    op->dht = dht;
    op->kind = kind;
    memcpy(op->key, key, key_len);
    op->key_len = key_len;
    op->cb = cb;
    op->ud = ud;
    op->max_providers = max_providers > 0 ? max_providers : 20;
    if (op->max_providers > DC_KAD_MAX_MSG_PEERS)
        op->max_providers = DC_KAD_MAX_MSG_PEERS;
    dc_kad_msg_init(&op->result);
    lc.key = op->key;
    lc.key_len = key_len;
    lc.max_providers = op->max_providers;
    lc.type = kind == OP_GET         ? DC_KAD_GET_VALUE
              : kind == OP_FINDPROVS ? DC_KAD_GET_PROVIDERS
                                     : DC_KAD_FIND_NODE;
    rc = dc_kad_lookup_new(dht->kad, &lc, dc_wall_ms(), &op->lookup);
    if (rc < 0) {
        dc_free(op);
        return rc;
    }
    op->next = dht->ops;
    dht->ops = op;
    kick(dht);
    *out = op;
    return 0;
}

/* Announces kept keys: all of them, or those never announced or due for republishing. */
static void announce_kept(struct dc_dht *dht, bool all)
{
    uint64_t now = dc_wall_ms();

    if (dc_kad_table_size(dht->kad) == 0)
        return;
    for (size_t i = 0; i < dht->n_kept; i++) {
        struct kept *k = &dht->kept[i];
        struct op *op;

        if (k->running)
            continue;
        if (!all && k->last_ms != 0 && now - k->last_ms < DC_KAD_PROVIDER_REPUBLISH_MS)
            continue;
        if (op_new(dht, OP_PROVIDE, k->key, k->key_len, 0, NULL, NULL, &op) == 0)
            k->running = true;
    }
}

static int start_self_lookup(struct dc_dht *dht)
{
    const struct dc_peer_id *self = dc_host_peer_id(dht->host);
    struct op *op;
    int rc;

    if (dht->refreshing)
        return 0;
    rc = op_new(dht, OP_FIND_NODE, self->bytes, self->len, 0, NULL, NULL, &op);
    if (rc == 0) {
        op->self_lookup = true;
        dht->refreshing = true;
        dht->last_refresh_ms = dc_wall_ms();
    }
    return rc;
}

static void on_tick(uv_timer_t *t)
{
    struct dc_dht *dht = t->data;
    uint64_t now = dc_wall_ms();

    if (dc_kad_table_size(dht->kad) > 0 && now - dht->last_refresh_ms >= dht->refresh_ms) {
        (void)start_self_lookup(dht);
        /* And one random region of the key space, so far buckets fill too. */
        uint8_t rnd[32];
        struct op *op;
        randombytes_buf(rnd, sizeof(rnd));
        (void)op_new(dht, OP_FIND_NODE, rnd, sizeof(rnd), 0, NULL, NULL, &op);
    }
    if (now - dht->last_expire_ms >= 60000u) {
        dht->last_expire_ms = now;
        (void)dc_kad_expire(dht->kad, now);
    }
    if (dht->db != NULL && now - dht->last_save_ms >= dht->save_ms)
        db_save(dht);
    process(dht);
}

/* ---- public ----------------------------------------------------------------------------- */

static bool dht_keep_peer(void *ud, const struct dc_peer_id *peer)
{
    struct dc_dht *dht = ud;

    return dc_kad_has_peer(dht->kad, peer);
}

int dc_dht_new(const struct dc_dht_config *cfg, struct dc_dht **out)
{
    struct dc_kad_config kc;
    struct dc_dht *dht;
    int rc;

    *out = NULL;
    if (cfg->host == NULL || cfg->loop == NULL)
        return DC_EINVAL;
    dht = dc_calloc(1, sizeof(*dht));
    if (dht == NULL)
        return DC_ENOMEM;
    dht->host = cfg->host;
    dht->loop = cfg->loop;
    dht->client_mode = cfg->client_mode;
    dht->request_timeout_ms =
        cfg->request_timeout_ms ? cfg->request_timeout_ms : DEFAULT_REQUEST_TIMEOUT;
    dht->refresh_ms = cfg->refresh_interval_ms ? cfg->refresh_interval_ms : DEFAULT_REFRESH;
    dht->save_ms = cfg->save_interval_ms ? cfg->save_interval_ms : DEFAULT_SAVE;
    dht->protocol = dc_strdup(cfg->protocol != NULL ? cfg->protocol : DC_KAD_PROTOCOL_ID);
    dht->kept = dc_calloc(MAX_KEPT, sizeof(*dht->kept));
    if (dht->protocol == NULL || dht->kept == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    dc_kad_config_default(&kc, dc_host_peer_id(cfg->host));
    kc.client_mode = cfg->client_mode;
    kc.request_timeout_ms = dht->request_timeout_ms;
    kc.peer_addrs = kad_peer_addrs;
    kc.on_peer_learned = kad_peer_learned;
    kc.ud = dht;
    rc = dc_kad_new(&kc, &dht->kad);
    if (rc < 0)
        goto err_free;
    {
        /* /democritus/ records are signed envelopes (p2p/record.h, docs/protocols.md). */
        struct dc_kad_validator v;

        dc_dht_record_validator(&v);
        rc = dc_kad_set_validator(dht->kad, "democritus", &v);
        if (rc < 0)
            goto err_kad;
    }
    if (cfg->db_path != NULL) {
        rc = db_open(dht, cfg->db_path);
        if (rc < 0)
            goto err_kad;
    }
    if (!cfg->client_mode) {
        rc = dc_host_set_handler(cfg->host, dht->protocol, &served_stream_cb, dht);
        if (rc < 0)
            goto err_kad;
    }
    uv_timer_init(cfg->loop, &dht->kick);
    uv_timer_init(cfg->loop, &dht->tick);
    dht->kick.data = dht->tick.data = dht;
    uv_unref((uv_handle_t *)&dht->tick); /* maintenance alone does not keep a loop alive */
    uv_timer_start(&dht->tick, on_tick, TICK_MS, TICK_MS);
    dht->last_save_ms = dht->last_expire_ms = dc_wall_ms();
    /* The peerstore keeps routing-table peers (their addresses live there). */
    dc_host_set_keep_peer(cfg->host, dht_keep_peer, dht);
    *out = dht;
    return 0;

err_kad:
    if (dht->db != NULL)
        sqlite3_close(dht->db);
    dc_kad_free(dht->kad);
err_free:
    dc_free(dht->kept);
    dc_free(dht->protocol);
    dc_free(dht);
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct dc_dht *dht = h->data;

    /* Both timers point at the dht; the second close frees it. */
    if (++dht->timers_closed == 2)
        dc_free(dht);
}

void dc_dht_free(struct dc_dht *dht)
{
    if (dht == NULL)
        return;
    db_save(dht);
    dht->freeing = true;
    /* Operations end with DC_ECLOSED now. */
    while (dht->ops != NULL) {
        struct op *op = dht->ops;
        dht->ops = op->next;
        if (op->cb != NULL && !op->finished) {
            struct dc_dht_result res = {0};
            op->cb(op->ud, DC_ECLOSED, &res);
        }
        op_free(op);
    }
    while (dht->reqs != NULL) {
        struct req *r = dht->reqs;
        dht->reqs = r->next;
        if (r->s != NULL)
            dc_host_stream_reset(r->s);
        req_free(r);
    }
    for (struct dialing *d = dht->dials; d != NULL;) {
        struct dialing *next = d->next;
        d->dht = NULL; /* freed by its dial callback */
        d = next;
    }
    while (dht->served != NULL) {
        struct dc_host_stream *s = dht->served->s;
        served_free(dht->served);
        dc_host_stream_reset(s);
    }
    if (!dht->client_mode)
        (void)!dc_host_set_handler(dht->host, dht->protocol, NULL, NULL);
    dc_host_set_keep_peer(dht->host, NULL, NULL);
    if (dht->db != NULL)
        sqlite3_close(dht->db);
    dc_kad_free(dht->kad);
    dc_free(dht->kept);
    dc_free(dht->protocol);
    uv_close((uv_handle_t *)&dht->kick, on_timer_closed);
    uv_close((uv_handle_t *)&dht->tick, on_timer_closed);
}

const char *dc_dht_error(const struct dc_dht *dht)
{
    return dht->err;
}

struct dc_kad *dc_dht_kad(struct dc_dht *dht)
{
    return dht->kad;
}

void dc_dht_add_server(struct dc_dht *dht, const struct dc_peer_id *peer)
{
    bool was_empty = dc_kad_table_size(dht->kad) == 0;

    if (dht->freeing)
        return;
    if (dc_kad_add_peer(dht->kad, peer, dc_wall_ms()) < 0)
        return;
    if (was_empty && dc_kad_table_size(dht->kad) > 0)
        (void)start_self_lookup(dht);
    kick(dht);
}

void dc_dht_peer_identified(struct dc_dht *dht, const struct dc_peer_info *info)
{
    for (size_t i = 0; i < info->n_protocols; i++)
        if (strcmp(info->protocols[i], dht->protocol) == 0) {
            dc_dht_add_server(dht, &info->id);
            return;
        }
}

int dc_dht_bootstrap(struct dc_dht *dht)
{
    return start_self_lookup(dht);
}

int dc_dht_get(struct dc_dht *dht, const uint8_t *key, size_t key_len, dc_dht_done_cb cb, void *ud)
{
    struct op *op;

    return op_new(dht, OP_GET, key, key_len, 0, cb, ud, &op);
}

int dc_dht_put(struct dc_dht *dht, const uint8_t *key, size_t key_len, const uint8_t *value,
               size_t value_len, dc_dht_done_cb cb, void *ud)
{
    struct op *op;
    uint8_t *copy;
    int rc;

    if (value_len > DC_KAD_MAX_VALUE)
        return DC_ELIMIT;
    rc = dc_kad_put_local(dht->kad, key, key_len, value, value_len, dc_wall_ms());
    if (rc < 0 && rc != DC_EEXIST)
        return rc;
    copy = dc_malloc(value_len > 0 ? value_len : 1);
    if (copy == NULL)
        return DC_ENOMEM;
    memcpy(copy, value, value_len);
    rc = op_new(dht, OP_PUT, key, key_len, 0, cb, ud, &op);
    if (rc < 0) {
        dc_free(copy);
        return rc;
    }
    op->value = copy;
    op->value_len = value_len;
    return 0;
}

int dc_dht_provide(struct dc_dht *dht, const uint8_t *key, size_t key_len, bool keep,
                   dc_dht_done_cb cb, void *ud)
{
    struct dc_multiaddr addrs[DC_KAD_MAX_PEER_ADDRS];
    struct dc_kad_peer_info self;
    struct op *op;
    int rc;

    if (key == NULL || key_len == 0 || key_len > DC_KAD_MAX_KEY)
        return DC_EINVAL;
    if (!dht->client_mode) {
        self_info(dht, &self, addrs, DC_ARRAY_LEN(addrs));
        rc = dc_kad_add_provider_local(dht->kad, key, key_len, &self, dc_wall_ms());
        if (rc < 0)
            return rc;
    }
    rc = op_new(dht, OP_PROVIDE, key, key_len, 0, cb, ud, &op);
    if (rc < 0)
        return rc;
    if (keep) {
        size_t i;
        for (i = 0; i < dht->n_kept; i++)
            if (dht->kept[i].key_len == key_len && memcmp(dht->kept[i].key, key, key_len) == 0)
                break;
        if (i == dht->n_kept && dht->n_kept < MAX_KEPT) {
            memset(&dht->kept[i], 0, sizeof(dht->kept[i]));
            memcpy(dht->kept[i].key, key, key_len);
            dht->kept[i].key_len = key_len;
            dht->n_kept++;
            db_add_kept(dht, key, key_len);
        }
        if (i < dht->n_kept)
            dht->kept[i].running = true;
    }
    return 0;
}

int dc_dht_find_providers(struct dc_dht *dht, const uint8_t *key, size_t key_len, uint32_t max,
                          dc_dht_done_cb cb, void *ud)
{
    struct op *op;
    int rc;

    rc = op_new(dht, OP_FINDPROVS, key, key_len, max, cb, ud, &op);
    if (rc < 0)
        return rc;
    if (!dht->client_mode) {
        /* Providers this node stores itself (the lookup only asks others). */
        struct dc_kad_msg req, resp;
        dc_kad_msg_init(&req);
        dc_kad_msg_init(&resp);
        req.type = DC_KAD_GET_PROVIDERS;
        if (dc_kad_msg_set_key(&req, key, key_len) == 0 &&
            dc_kad_handle_request(dht->kad, dc_host_peer_id(dht->host), &req, dc_wall_ms(),
                                  &resp) == 0)
            merge_providers(op, resp.providers, resp.n_providers);
        dc_kad_msg_cleanup(&resp);
        dc_kad_msg_cleanup(&req);
    }
    return 0;
}

int dc_dht_key_parse(const char *text, uint8_t out[DC_KAD_MAX_KEY], size_t *len)
{
    uint8_t buf[DC_KAD_MAX_KEY + 16];
    size_t tlen = strlen(text);
    int n = -1;

    *len = 0;
    if (tlen == 46 && strncmp(text, "Qm", 2) == 0)
        n = dc_base58_decode(text, tlen, buf, sizeof(buf));
    else if (text[0] == 'b' || text[0] == 'z' || text[0] == 'f')
        n = dc_multibase_decode(text, buf, sizeof(buf));
    if (n > 0 && text[0] != 'Q') {
        /* CIDv1: <version 1><codec><multihash>. */
        uint64_t version, codec;
        size_t u1, u2;
        if (dc_varint_decode(buf, (size_t)n, &version, &u1) == 0 && version == 1 &&
            dc_varint_decode(buf + u1, (size_t)n - u1, &codec, &u2) == 0 && (size_t)n > u1 + u2) {
            memmove(buf, buf + u1 + u2, (size_t)n - u1 - u2);
            n -= (int)(u1 + u2);
        } else {
            n = -1;
        }
    }
    if (n > 0 && (size_t)n <= DC_KAD_MAX_KEY) {
        memcpy(out, buf, (size_t)n);
        *len = (size_t)n;
        return 0;
    }
    if (tlen == 0 || tlen > DC_KAD_MAX_KEY)
        return DC_EINVAL;
    memcpy(out, text, tlen);
    *len = tlen;
    return 0;
}

size_t dc_dht_table_size(const struct dc_dht *dht)
{
    return dc_kad_table_size(dht->kad);
}

size_t dc_dht_busy(const struct dc_dht *dht)
{
    size_t n = dht->n_reqs;

    for (const struct op *op = dht->ops; op != NULL; op = op->next)
        n++;
    return n;
}

/* SPDX-License-Identifier: MIT */
/*
 * peerstore.c - the peerstore database (see peerstore.h).
 *
 * Map of the file: opening (file mode, schema), loading, saving (one transaction per batch,
 * then the pruning that keeps the bounds), counting.
 *
 * Schema: 'peers' has one row per PeerId (multihash bytes) with the identify fields, the
 * protocols joined by '\n' (a protocol id never contains one; those that do are not stored),
 * last_seen_ms and rtt_us; 'peer_addrs' has one row per (peer, binary multiaddr) with its
 * source (enum dc_addr_source) and seen_ms. Saving a peer replaces its address rows, so the
 * database holds exactly the addresses the memory copy had.
 *
 * Why the database never fails the host: the peerstore is a cache of what peers told us. The
 * host logs why it is not in use and runs from memory; the next start tries again.
 */
#include "p2p/peerstore.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct dc_peerstore {
    sqlite3 *db;
};

static int set_err(char *err, size_t errlen, int rc, const char *what, const char *detail)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", what, detail);
    return rc;
}

static int exec(struct dc_peerstore *ps, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;

    if (sqlite3_exec(ps->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        set_err(err, errlen, DC_ECORRUPT, "peerstore", msg != NULL ? msg : "sqlite error");
        sqlite3_free(msg);
        return DC_ECORRUPT;
    }
    return 0;
}

/* ---- opening ---------------------------------------------------------------------------- */

int dc_peerstore_open(const char *path, struct dc_peerstore **out, char *err, size_t errlen)
{
    struct dc_peerstore *ps;
    char what[512];
    int fd, rc;

    *out = NULL;
    snprintf(what, sizeof(what), "peerstore %s", path);
    /* Created here rather than by SQLite so the mode is 0600 whatever the umask; SQLite gives
     * its -wal and -shm files the database file's mode. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return set_err(err, errlen, -errno, what, strerror(errno));
    (void)fchmod(fd, 0600);
    close(fd);
    ps = dc_calloc(1, sizeof(*ps));
    if (ps == NULL)
        return set_err(err, errlen, DC_ENOMEM, what, "out of memory");
    if (sqlite3_open_v2(path, &ps->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        rc = set_err(err, errlen, DC_ECORRUPT, what,
                     ps->db != NULL ? sqlite3_errmsg(ps->db) : "cannot open");
        goto err_close;
    }
    sqlite3_busy_timeout(ps->db, 2000);
    rc = exec(ps,
              "PRAGMA journal_mode=WAL;"
              "PRAGMA synchronous=NORMAL;"
              "CREATE TABLE IF NOT EXISTS peers (id BLOB PRIMARY KEY, agent TEXT NOT NULL,"
              " protocol_version TEXT NOT NULL, protocols TEXT NOT NULL,"
              " last_seen_ms INTEGER NOT NULL, rtt_us INTEGER NOT NULL);"
              "CREATE TABLE IF NOT EXISTS peer_addrs (peer BLOB NOT NULL, addr BLOB NOT NULL,"
              " source INTEGER NOT NULL, seen_ms INTEGER NOT NULL, PRIMARY KEY (peer, addr));"
              "CREATE INDEX IF NOT EXISTS peers_seen ON peers (last_seen_ms);",
              err, errlen);
    if (rc < 0) {
        /* exec wrote "peerstore: <why>"; name the file instead. */
        char why[256];
        snprintf(why, sizeof(why), "%s", sqlite3_errmsg(ps->db));
        set_err(err, errlen, rc, what, why);
        goto err_close;
    }
    *out = ps;
    return 0;

err_close:
    sqlite3_close(ps->db);
    dc_free(ps);
    return rc;
}

void dc_peerstore_close(struct dc_peerstore *ps)
{
    if (ps == NULL)
        return;
    sqlite3_close(ps->db);
    dc_free(ps);
}

/* ---- loading ---------------------------------------------------------------------------- */

/* Splits the '\n'-joined protocol list into info->protocols (owned). */
static int split_protocols(const char *text, struct dc_peer_info *info)
{
    while (text != NULL && *text != '\0' && info->n_protocols < DC_PEER_MAX_PROTOCOLS) {
        const char *end = strchr(text, '\n');
        size_t len = end != NULL ? (size_t)(end - text) : strlen(text);

        if (len > 0 && len <= DC_PROTOCOL_ID_MAX) {
            char *p = dc_malloc(len + 1);
            if (p == NULL)
                return DC_ENOMEM;
            memcpy(p, text, len);
            p[len] = '\0';
            info->protocols[info->n_protocols++] = p;
        }
        text = end != NULL ? end + 1 : NULL;
    }
    return 0;
}

static int load_addrs(sqlite3_stmt *st, const struct dc_peer_id *id, uint64_t min_seen,
                      struct dc_peer_info *info)
{
    int step;

    sqlite3_reset(st);
    sqlite3_bind_blob(st, 1, id->bytes, (int)id->len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)min_seen);
    sqlite3_bind_int(st, 3, DC_PEER_MAX_ADDRS);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const void *p = sqlite3_column_blob(st, 0);
        int n = sqlite3_column_bytes(st, 0);
        struct dc_multiaddr ma;

        if (p == NULL || n <= 0 || info->n_addrs >= DC_PEER_MAX_ADDRS ||
            dc_multiaddr_from_bytes(p, (size_t)n, &ma, NULL) < 0)
            continue;
        info->addrs[info->n_addrs] = ma;
        info->addr_source[info->n_addrs] = (uint8_t)sqlite3_column_int(st, 1);
        info->addr_seen_ms[info->n_addrs] = (uint64_t)sqlite3_column_int64(st, 2);
        info->n_addrs++;
    }
    return step == SQLITE_DONE ? 0 : DC_ECORRUPT;
}

int dc_peerstore_load(struct dc_peerstore *ps, uint64_t now_ms, uint64_t addr_ttl_ms,
                      size_t max_peers, dc_peerstore_load_cb cb, void *ud, char *err, size_t errlen)
{
    sqlite3_stmt *peers = NULL, *addrs = NULL;
    uint64_t min_seen = now_ms > addr_ttl_ms ? now_ms - addr_ttl_ms : 0;
    int rc = 0, step;

    if (sqlite3_prepare_v2(ps->db,
                           "SELECT id, agent, protocol_version, protocols, last_seen_ms, rtt_us"
                           " FROM peers ORDER BY last_seen_ms DESC LIMIT ?",
                           -1, &peers, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ps->db,
                           "SELECT addr, source, seen_ms FROM peer_addrs WHERE peer = ?"
                           " AND seen_ms >= ? ORDER BY seen_ms DESC LIMIT ?",
                           -1, &addrs, NULL) != SQLITE_OK) {
        rc = set_err(err, errlen, DC_ECORRUPT, "loading the peerstore", sqlite3_errmsg(ps->db));
        goto out;
    }
    sqlite3_bind_int64(peers, 1, (sqlite3_int64)(max_peers < INT64_MAX ? max_peers : INT64_MAX));
    while ((step = sqlite3_step(peers)) == SQLITE_ROW) {
        struct dc_peer_info info;
        const void *id = sqlite3_column_blob(peers, 0);
        int id_len = sqlite3_column_bytes(peers, 0);
        const char *text;

        memset(&info, 0, sizeof(info));
        if (id == NULL || id_len <= 0 || dc_peer_id_from_bytes(id, (size_t)id_len, &info.id) < 0)
            continue; /* not a PeerId: skip the row */
        text = (const char *)sqlite3_column_text(peers, 1);
        snprintf(info.agent, sizeof(info.agent), "%s", text != NULL ? text : "");
        text = (const char *)sqlite3_column_text(peers, 2);
        snprintf(info.protocol_version, sizeof(info.protocol_version), "%s",
                 text != NULL ? text : "");
        rc = split_protocols((const char *)sqlite3_column_text(peers, 3), &info);
        if (rc == 0)
            rc = load_addrs(addrs, &info.id, min_seen, &info);
        if (rc < 0) {
            dc_peer_info_cleanup(&info);
            if (rc == DC_ECORRUPT)
                set_err(err, errlen, rc, "loading the peerstore", sqlite3_errmsg(ps->db));
            else
                set_err(err, errlen, rc, "loading the peerstore", "out of memory");
            goto out;
        }
        info.last_seen_ms = (uint64_t)sqlite3_column_int64(peers, 4);
        info.rtt_us = (uint64_t)sqlite3_column_int64(peers, 5);
        rc = cb(ud, &info);
        if (rc < 0)
            goto out;
    }
    if (step != SQLITE_DONE)
        rc = set_err(err, errlen, DC_ECORRUPT, "loading the peerstore", sqlite3_errmsg(ps->db));
out:
    sqlite3_finalize(peers);
    sqlite3_finalize(addrs);
    return rc;
}

/* ---- saving ----------------------------------------------------------------------------- */

/* The protocols joined by '\n' into 'b'. */
static int join_protocols(const struct dc_peer_info *info, struct dc_buf *b)
{
    dc_buf_reset(b);
    for (size_t i = 0; i < info->n_protocols; i++) {
        if (strchr(info->protocols[i], '\n') != NULL)
            continue;
        if ((b->len > 0 && dc_buf_append(b, "\n", 1) < 0) ||
            dc_buf_append_str(b, info->protocols[i]) < 0)
            return DC_ENOMEM;
    }
    return dc_buf_append(b, "", 0);
}

int dc_peerstore_save(struct dc_peerstore *ps, const struct dc_peer_info *const *peers, size_t n,
                      uint64_t now_ms, uint64_t addr_ttl_ms, size_t max_peers, char *err,
                      size_t errlen)
{
    sqlite3_stmt *up = NULL, *del = NULL, *ins = NULL, *prune = NULL;
    uint64_t min_seen = now_ms > addr_ttl_ms ? now_ms - addr_ttl_ms : 0;
    struct dc_buf protos;
    int rc;

    dc_buf_init(&protos, 0);
    rc = exec(ps, "BEGIN", err, errlen);
    if (rc < 0)
        goto out;
    if (sqlite3_prepare_v2(ps->db,
                           "INSERT OR REPLACE INTO peers (id, agent, protocol_version, protocols,"
                           " last_seen_ms, rtt_us) VALUES (?, ?, ?, ?, ?, ?)",
                           -1, &up, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ps->db, "DELETE FROM peer_addrs WHERE peer = ?", -1, &del, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(ps->db,
                           "INSERT OR REPLACE INTO peer_addrs (peer, addr, source, seen_ms)"
                           " VALUES (?, ?, ?, ?)",
                           -1, &ins, NULL) != SQLITE_OK)
        goto err_sql;
    for (size_t i = 0; i < n; i++) {
        const struct dc_peer_info *p = peers[i];

        if (join_protocols(p, &protos) < 0) {
            rc = set_err(err, errlen, DC_ENOMEM, "saving the peerstore", "out of memory");
            goto err_rollback;
        }
        sqlite3_reset(up);
        sqlite3_bind_blob(up, 1, p->id.bytes, (int)p->id.len, SQLITE_STATIC);
        sqlite3_bind_text(up, 2, p->agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(up, 3, p->protocol_version, -1, SQLITE_STATIC);
        sqlite3_bind_text(up, 4, (const char *)protos.data, (int)protos.len, SQLITE_STATIC);
        sqlite3_bind_int64(up, 5, (sqlite3_int64)p->last_seen_ms);
        sqlite3_bind_int64(up, 6, (sqlite3_int64)p->rtt_us);
        if (sqlite3_step(up) != SQLITE_DONE)
            goto err_sql;
        sqlite3_reset(del);
        sqlite3_bind_blob(del, 1, p->id.bytes, (int)p->id.len, SQLITE_STATIC);
        if (sqlite3_step(del) != SQLITE_DONE)
            goto err_sql;
        for (size_t k = 0; k < p->n_addrs && k < DC_PEER_MAX_ADDRS; k++) {
            sqlite3_reset(ins);
            sqlite3_bind_blob(ins, 1, p->id.bytes, (int)p->id.len, SQLITE_STATIC);
            sqlite3_bind_blob(ins, 2, p->addrs[k].bytes, (int)p->addrs[k].len, SQLITE_STATIC);
            sqlite3_bind_int(ins, 3, p->addr_source[k]);
            sqlite3_bind_int64(ins, 4, (sqlite3_int64)p->addr_seen_ms[k]);
            if (sqlite3_step(ins) != SQLITE_DONE)
                goto err_sql;
        }
    }
    /* The bounds: old addresses, then the least recently seen peers beyond max_peers. */
    if (sqlite3_prepare_v2(ps->db, "DELETE FROM peer_addrs WHERE seen_ms < ?", -1, &prune, NULL) !=
        SQLITE_OK)
        goto err_sql;
    sqlite3_bind_int64(prune, 1, (sqlite3_int64)min_seen);
    if (sqlite3_step(prune) != SQLITE_DONE)
        goto err_sql;
    sqlite3_finalize(prune);
    prune = NULL;
    if (sqlite3_prepare_v2(ps->db,
                           "DELETE FROM peers WHERE id NOT IN (SELECT id FROM peers"
                           " ORDER BY last_seen_ms DESC LIMIT ?)",
                           -1, &prune, NULL) != SQLITE_OK)
        goto err_sql;
    sqlite3_bind_int64(prune, 1, (sqlite3_int64)(max_peers < INT64_MAX ? max_peers : INT64_MAX));
    if (sqlite3_step(prune) != SQLITE_DONE)
        goto err_sql;
    sqlite3_finalize(prune);
    prune = NULL;
    rc = exec(ps, "DELETE FROM peer_addrs WHERE peer NOT IN (SELECT id FROM peers); COMMIT", err,
              errlen);
    if (rc < 0)
        goto err_rollback;
    goto out;

err_sql:
    rc = set_err(err, errlen, DC_ECORRUPT, "saving the peerstore", sqlite3_errmsg(ps->db));
err_rollback:
    (void)sqlite3_exec(ps->db, "ROLLBACK", NULL, NULL, NULL);
out:
    sqlite3_finalize(up);
    sqlite3_finalize(del);
    sqlite3_finalize(ins);
    sqlite3_finalize(prune);
    dc_buf_cleanup(&protos);
    return rc;
}

long dc_peerstore_count(struct dc_peerstore *ps)
{
    sqlite3_stmt *st = NULL;
    long n = DC_ECORRUPT;

    if (sqlite3_prepare_v2(ps->db, "SELECT COUNT(*) FROM peers", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

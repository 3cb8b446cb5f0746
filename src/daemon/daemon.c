/* SPDX-License-Identifier: MIT */
/*
 * daemon.c - the node's lifecycle.
 *
 * Start-up order matters: configuration is already validated by the caller (so a bad config
 * never touches state); then the loop and signal handlers come first, so a SIGINT/SIGTERM at any
 * later point of start-up still ends in a clean exit; then the state directory, the exclusive
 * lock (before anything in the directory is written), the open-file limit, the identity, the
 * P2P host (listeners bound before the ready line, so the line can name the real ports), and
 * finally the ready line and daemon.json; bootstrap peers are dialed after that, and their
 * failures are logged, never fatal. Shutdown undoes it in reverse: the host closes every
 * connection, then daemon.json and the lock file are removed while the lock is still held.
 */
#include "daemon/daemon.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "api/api.h"
#include "base/log.h"
#include "base/multibase.h"
#include "crypto/crypto.h"
#include "daemon/peerview.h"
#include "daemon/remote.h"
#include "model/engine.h"
#include "p2p/dht.h"
#include "swarm/coord.h"
#include "p2p/host.h"
#include "swarm/swarm.h"

#define LOG "daemon"

char *dc_state_path(const char *state_dir, const char *name)
{
    return dc_asprintf("%s/%s", state_dir, name);
}

int dc_state_dir_ensure(const char *dir, char *err, size_t errlen)
{
    char *path = dc_strdup(dir);
    struct stat st;
    int rc = 0;

    if (path == NULL)
        return DC_ENOMEM;
    /* mkdir -p, each created component 0700; existing parents are left as they are. */
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            rc = -errno;
            snprintf(err, errlen, "cannot create state directory %s: %s", path, dc_strerror(rc));
            goto out;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    if (stat(dir, &st) != 0) {
        rc = -errno;
        snprintf(err, errlen, "state directory %s: %s", dir, dc_strerror(rc));
    } else if (!S_ISDIR(st.st_mode)) {
        rc = DC_EINVAL;
        snprintf(err, errlen, "state directory %s exists and is not a directory", dir);
    }
out:
    dc_free(path);
    return rc;
}

int dc_state_identity(const char *state_dir, bool create, struct dc_identity **out, char *err,
                      size_t errlen)
{
    char *path = dc_state_path(state_dir, "identity.key");
    int rc;

    *out = NULL;
    if (path == NULL)
        return DC_ENOMEM;
    rc = dc_identity_load_file(path, out, err, errlen);
    if (rc == -ENOENT && create) {
        rc = dc_state_dir_ensure(state_dir, err, errlen);
        if (rc == 0)
            rc = dc_identity_generate(out);
        if (rc == 0)
            rc = dc_identity_save_file(*out, path, false, err, errlen);
        if (rc == 0) {
            dc_log_info(LOG, "created a new identity in %s", path);
        } else {
            dc_identity_free(*out);
            *out = NULL;
        }
    } else if (rc == -ENOENT) {
        snprintf(err, errlen,
                 "no identity key at %s (run `democritus keygen` or start the "
                 "daemon once)",
                 path);
    }
    dc_free(path);
    return rc;
}

int dc_state_lock(const char *state_dir, int *fd_out)
{
    char *path = dc_state_path(state_dir, "daemon.lock");
    struct stat a, b;
    int fd, rc;

    *fd_out = -1;
    if (path == NULL)
        return DC_ENOMEM;
    /* Retry when the file we locked was unlinked by an exiting daemon in between. */
    for (;;) {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            rc = -errno;
            break;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            rc = errno == EWOULDBLOCK ? DC_EBUSY : -errno;
            close(fd);
            break;
        }
        if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev) {
            *fd_out = fd;
            rc = 0;
            break;
        }
        close(fd);
    }
    dc_free(path);
    return rc;
}

/* Reads the pid of the daemon that holds the lock from its daemon.json, or 0. */
static long running_pid(const char *state_dir)
{
    char *path = dc_state_path(state_dir, "daemon.json");
    json_t *j;
    long pid = 0;

    if (path == NULL)
        return 0;
    j = json_load_file(path, 0, NULL);
    if (j != NULL)
        pid = (long)json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    dc_free(path);
    return pid;
}

/* The open-file soft limit goes up to the hard limit: a node holds many peer connections. */
static void raise_nofile_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            dc_log_debug(LOG, "open-file limit raised from %llu to %llu", (unsigned long long)old,
                         (unsigned long long)rl.rlim_max);
    }
}

/* Writes 'j' to 'path' atomically with mode 0600. */
static int write_json_file(const char *path, json_t *j)
{
    char *tmp = dc_asprintf("%s.tmp", path);
    int fd, rc = 0;
    char *text;

    if (tmp == NULL)
        return DC_ENOMEM;
    text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text == NULL) {
        dc_free(tmp);
        return DC_ENOMEM;
    }
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        off += (size_t)n;
    }
    if (rc == 0 && write(fd, "\n", 1) != 1)
        rc = -EIO;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
out:
    free(text);
    dc_free(tmp);
    return rc;
}

struct daemon {
    const struct dc_config *cfg;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    bool stopping;
    int lock_fd;
    struct dc_identity *id;
    char peer[DC_PEER_ID_STR_MAX];
    char *json_path;
    char *lock_path;
    struct dc_host *host;
    struct dc_dht *dht;      /* Kademlia on the host; NULL until started */
    json_t *p2p_addrs;       /* full dialable multiaddrs, /p2p/ included */
    struct dc_registry *reg; /* models; NULL with --no-model */
    struct dc_api *api;      /* REST server */
    /* [api] rate_limit_rpm: the one limiter REST, WebSocket and gRPC share (or NULL) */
    struct dc_api_ratelimit *ratelimit;
    char rest_url[96];
    struct dc_ws *ws;                     /* WebSocket server */
    struct dc_grpc *grpc;                 /* gRPC server */
    char ws_url[96];                      /* ws://HOST:PORT */
    char grpc_addr[96];                   /* HOST:PORT */
    atomic_uint n_peers;                  /* connected peers, read by the API threads */
    struct dc_infer_server *infer;        /* /democritus/infer/1.0.0; NULL without a registry */
    struct dc_peerview *peers;            /* peer snapshot and dials for the API threads */
    struct dc_remote *remote;             /* chats forwarded to peers (model "<PeerId>") */
    struct dc_coord *coord;               /* the model "swarm" and this node's capability record */
    _Atomic(struct dc_coord *) coord_api; /* the same, published for the API threads */
    struct dc_engine *coord_engine;       /* the default model, held for the coordinator */
    pthread_t hasher;                     /* sha256 of the models, off the start-up path */
    bool hasher_started;
    atomic_bool hasher_stop;
};

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;

    if (!d->stopping)
        dc_log_info(LOG, "received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    d->stopping = true;
    uv_stop(&d->loop);
}

/* True once a signal asked us to stop; lets start-up steps bail out between steps. */
static bool poll_stop(struct daemon *d)
{
    uv_run(&d->loop, UV_RUN_NOWAIT);
    return d->stopping;
}

static int write_daemon_json(struct daemon *d)
{
    json_t *j;
    int rc;

    j = json_pack("{s:I, s:s, s:s, s:s, s:I, s:O, s:s, s:s, s:s}", "pid", (json_int_t)getpid(),
                  "peer_id", d->peer, "version", DC_VERSION, "state_dir", d->cfg->state_dir,
                  "started_at", (json_int_t)time(NULL), "p2p", d->p2p_addrs, "rest", d->rest_url,
                  "grpc", d->grpc_addr, "ws", d->ws_url);
    if (j == NULL)
        return DC_ENOMEM;
    rc = write_json_file(d->json_path, j);
    json_decref(j);
    return rc;
}

/* ---- P2P ------------------------------------------------------------------------------ */

static void peer_text(const struct dc_peer_id *id, char *out, size_t cap)
{
    if (dc_peer_id_to_string(id, out, cap) < 0)
        snprintf(out, cap, "?");
}

static void on_p2p_connected(void *ud, const struct dc_peer_id *peer, bool outbound,
                             const struct dc_multiaddr *remote)
{
    char p[DC_PEER_ID_STR_MAX], addr[DC_MULTIADDR_TEXT_MAX];
    struct daemon *d = ud;

    atomic_fetch_add(&d->n_peers, 1);
    dc_peerview_connected(d->peers, peer, outbound, remote);
    peer_text(peer, p, sizeof(p));
    if (dc_multiaddr_format(remote, addr, sizeof(addr)) < 0)
        snprintf(addr, sizeof(addr), "?");
    dc_log_info(LOG, "connected to %s (%s, %s)", p, outbound ? "outbound" : "inbound", addr);
}

static void on_p2p_disconnected(void *ud, const struct dc_peer_id *peer, int err)
{
    char p[DC_PEER_ID_STR_MAX];
    struct daemon *d = ud;

    if (atomic_load(&d->n_peers) > 0)
        atomic_fetch_sub(&d->n_peers, 1);
    dc_peerview_disconnected(d->peers, peer);
    peer_text(peer, p, sizeof(p));
    dc_log_info(LOG, "disconnected from %s%s%s", p, err != 0 ? ": " : "",
                err != 0 ? dc_strerror(err) : "");
}

static void on_p2p_identified(void *ud, const struct dc_peer_info *info)
{
    char p[DC_PEER_ID_STR_MAX];

    struct daemon *d = ud;

    if (d->dht != NULL)
        dc_dht_peer_identified(d->dht, info);
    dc_coord_peer_changed(d->coord, &info->id);
    dc_peerview_identified(d->peers, &info->id);
    peer_text(&info->id, p, sizeof(p));
    dc_log_info(LOG, "identified %s: agent \"%s\", %zu protocol(s), %zu address(es)", p,
                info->agent, info->n_protocols, info->n_addrs);
}

static void on_p2p_conn_error(void *ud, const char *remote, bool outbound, int err,
                              const char *stage, const char *hint)
{
    DC_UNUSED(ud);
    dc_log_warn(LOG, "%s connection %s %s failed during %s: %s%s%s",
                outbound ? "outbound" : "inbound", outbound ? "to" : "from", remote, stage,
                dc_strerror(err), hint != NULL ? "; " : "", hint != NULL ? hint : "");
}

struct bootstrap_dial {
    char *addr;
};

static void on_bootstrap_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    struct bootstrap_dial *b = ud;
    char p[DC_PEER_ID_STR_MAX];

    if (status == 0) {
        peer_text(peer, p, sizeof(p));
        dc_log_info(LOG, "bootstrap node %s reached (peer %s)", b->addr, p);
    } else {
        dc_log_warn(LOG, "cannot reach bootstrap node %s: %s", b->addr, dc_strerror(status));
    }
    dc_free(b->addr);
    dc_free(b);
}

/* Reads the private swarm key from the config: 64 hex digits inline or a PSK file. The key
 * never reaches a log line or an error message. */
static int load_swarm_key(const struct dc_config *cfg, bool *use, uint8_t key[DC_PNET_KEY_LEN])
{
    *use = false;
    if (cfg->private_swarm_key != NULL) {
        if (strlen(cfg->private_swarm_key) != 2 * DC_PNET_KEY_LEN ||
            dc_base16_decode(cfg->private_swarm_key, 2 * DC_PNET_KEY_LEN, key, DC_PNET_KEY_LEN) !=
                DC_PNET_KEY_LEN) {
            dc_log_error(LOG, "[node] private_swarm_key must be 64 hexadecimal digits");
            return DC_ECONFIG;
        }
        *use = true;
        return 0;
    }
    if (cfg->private_swarm_key_file != NULL) {
        char text[1024];
        size_t n;
        int rc;
        FILE *f = fopen(cfg->private_swarm_key_file, "r");

        if (f == NULL) {
            rc = -errno;
            dc_log_error(LOG, "cannot read private swarm key file %s: %s",
                         cfg->private_swarm_key_file, dc_strerror(rc));
            return rc;
        }
        n = fread(text, 1, sizeof(text), f);
        fclose(f);
        rc = n == sizeof(text) ? DC_ECORRUPT : dc_pnet_psk_parse(text, n, key);
        explicit_bzero(text, sizeof(text));
        if (rc < 0) {
            dc_log_error(LOG,
                         "private swarm key file %s is not a libp2p PSK file "
                         "(/key/swarm/psk/1.0.0/, /base16/, 64 hex digits): %s",
                         cfg->private_swarm_key_file, dc_strerror(rc));
            return rc;
        }
        *use = true;
    }
    return 0;
}

/* Creates the host, binds every listen address and collects the dialable addresses. */
static int start_p2p(struct daemon *d)
{
    const struct dc_config *cfg = d->cfg;
    struct dc_host_config hc = {0};
    struct dc_multiaddr addrs[64];
    char agent[64], text[DC_MULTIADDR_TEXT_MAX];
    const struct dc_peer_id *self;
    size_t n;
    int rc;

    rc = load_swarm_key(cfg, &hc.use_psk, hc.psk);
    if (rc < 0)
        return rc;
    snprintf(agent, sizeof(agent), "democritus/%s", DC_VERSION);
    hc.loop = &d->loop;
    hc.identity = d->id;
    hc.agent_version = agent;
    hc.state_dir = cfg->state_dir; /* peers.sqlite */
    hc.ev.on_connected = on_p2p_connected;
    hc.ev.on_disconnected = on_p2p_disconnected;
    hc.ev.on_identified = on_p2p_identified;
    hc.ev.on_conn_error = on_p2p_conn_error;
    hc.ud = d;
    rc = dc_host_new(&hc, &d->host);
    explicit_bzero(hc.psk, sizeof(hc.psk));
    if (rc < 0) {
        dc_log_error(LOG, "cannot start the P2P host: %s", dc_strerror(rc));
        return rc;
    }
    if (dc_host_peerstore_error(d->host)[0] != '\0')
        dc_log_warn(LOG, "%s; known peers are kept in memory only this run",
                    dc_host_peerstore_error(d->host));
    else
        dc_log_info(LOG, "peerstore: %zu known peer(s)", dc_host_peer_count(d->host));
    rc = dc_peerview_new(&d->loop, d->host, &d->peers);
    if (rc < 0) {
        dc_log_error(LOG, "cannot start the peer view: %s", dc_strerror(rc));
        return rc;
    }
    rc = dc_remote_new(&d->loop, d->host, dc_identity_peer_id(d->id), &d->remote);
    if (rc < 0) {
        dc_log_error(LOG, "cannot start chat forwarding: %s", dc_strerror(rc));
        return rc;
    }
    if (hc.use_psk)
        dc_log_info(LOG, "private swarm: pnet enabled (peers without the same key cannot connect)");
    for (size_t i = 0; i < cfg->listen_addresses.n; i++) {
        const char *a = cfg->listen_addresses.items[i];
        struct dc_multiaddr_error me;
        struct dc_multiaddr ma;

        rc = dc_multiaddr_parse(a, &ma, &me);
        if (rc < 0) {
            dc_log_error(LOG, "listen address %s: %s at offset %zu: %s", a, me.component, me.offset,
                         me.reason);
            return rc;
        }
        rc = dc_host_listen(d->host, &ma);
        if (rc < 0) {
            dc_log_error(LOG, "cannot listen on %s: %s", a, dc_strerror(rc));
            return rc;
        }
    }
    d->p2p_addrs = json_array();
    if (d->p2p_addrs == NULL)
        return DC_ENOMEM;
    self = dc_identity_peer_id(d->id);
    n = dc_host_listen_addrs(d->host, addrs, DC_ARRAY_LEN(addrs));
    if (n > DC_ARRAY_LEN(addrs))
        n = DC_ARRAY_LEN(addrs);
    for (size_t i = 0; i < n; i++) {
        if (dc_multiaddr_append_p2p(&addrs[i], self->bytes, self->len) < 0 ||
            dc_multiaddr_format(&addrs[i], text, sizeof(text)) < 0)
            continue;
        dc_log_info(LOG, "listening on %s", text);
        if (json_array_append_new(d->p2p_addrs, json_string(text)) < 0)
            return DC_ENOMEM;
    }
    return 0;
}

/* Starts the DHT service: /democritus/kad/1.0.0 (or /ipfs/kad/1.0.0 with [node] ipfs_dht),
 * served unless [node] dht_client, records and providers kept in state_dir/dht.sqlite. */
static int start_dht(struct daemon *d, const struct dc_daemon_options *opt)
{
    struct dc_dht_config dc = {0};
    char *db = dc_state_path(d->cfg->state_dir, "dht.sqlite");
    int rc;

    if (db == NULL)
        return DC_ENOMEM;
    dc.host = d->host;
    dc.loop = &d->loop;
    dc.protocol = d->cfg->ipfs_dht ? DC_KAD_IPFS_PROTOCOL_ID : DC_KAD_PROTOCOL_ID;
    dc.client_mode = d->cfg->dht_client;
    dc.db_path = db;
    rc = dc_dht_new(&dc, &d->dht);
    if (rc < 0) {
        dc_log_error(LOG, "cannot start the DHT (store %s): %s", db, dc_strerror(rc));
        dc_free(db);
        return rc;
    }
    dc_free(db);
    dc_log_info(LOG, "DHT: %s in %s mode", dc.protocol, dc.client_mode ? "client" : "server");
    {
        /* Re-seed the routing table with the DHT servers the peerstore remembers (the most
         * recently seen); the first lookup dials them. */
        const struct dc_peer_info *known[64];
        size_t n = dc_host_peers(d->host, known, DC_ARRAY_LEN(known));

        for (size_t i = 0; i < n && i < DC_ARRAY_LEN(known); i++)
            if (known[i]->n_addrs > 0)
                dc_dht_peer_identified(d->dht, known[i]);
    }
    if (opt->provide != NULL) {
        uint8_t key[DC_KAD_MAX_KEY];
        size_t key_len;

        rc = dc_dht_key_parse(opt->provide, key, &key_len);
        if (rc == 0)
            rc = dc_dht_provide(d->dht, key, key_len, true, NULL, NULL);
        if (rc < 0)
            dc_log_warn(LOG, "cannot provide %s: %s", opt->provide, dc_strerror(rc));
        else
            dc_log_info(LOG, "providing %s (announced once DHT peers are known)", opt->provide);
    }
    return 0;
}

/* ---- models and the REST API ---------------------------------------------------------- */

static uint32_t peers_count(void *ud)
{
    struct daemon *d = ud;

    return atomic_load(&d->n_peers);
}

/* GET /api/peers and POST /api/peers/connect go through the peer view (peerview.h). */
static int peers_json(void *ud, char **out, size_t *len)
{
    return dc_peerview_json(((struct daemon *)ud)->peers, out, len);
}

/* GET /api/experts: the coordinator's snapshot (thread-safe); "[]" before it starts. */
static int experts_json(void *ud, char **out, size_t *len)
{
    struct daemon *d = ud;
    struct dc_coord *co = atomic_load(&d->coord_api);

    if (co == NULL) {
        *out = dc_strdup("[]");
        *len = 2;
        return *out != NULL ? 0 : DC_ENOMEM;
    }
    return dc_coord_experts_json(co, out, len);
}

/* GET /metrics: the swarm coordinator's counters (thread-safe reads). */
static int swarm_metrics(void *ud, struct dc_buf *b)
{
    struct daemon *d = ud;
    struct dc_coord *co = atomic_load(&d->coord_api);
    struct dc_coord_stats st = {0};

    if (co != NULL)
        dc_coord_stats(co, &st);
    return dc_buf_printf(
        b,
        "# HELP democritus_swarm_chats_total Chats answered by the model \"swarm\".\n"
        "# TYPE democritus_swarm_chats_total counter\ndemocritus_swarm_chats_total %" PRIu64 "\n"
        "# HELP democritus_swarm_expert_calls_total Experts asked (this node included).\n"
        "# TYPE democritus_swarm_expert_calls_total counter\n"
        "democritus_swarm_expert_calls_total %" PRIu64 "\n"
        "# HELP democritus_swarm_failovers_total Failed experts replaced by the next candidate.\n"
        "# TYPE democritus_swarm_failovers_total counter\n"
        "democritus_swarm_failovers_total %" PRIu64 "\n"
        "# HELP democritus_swarm_syntheses_total Answers merged from several experts.\n"
        "# TYPE democritus_swarm_syntheses_total counter\n"
        "democritus_swarm_syntheses_total %" PRIu64 "\n"
        "# HELP democritus_swarm_records_published_total Capability records stored on peers.\n"
        "# TYPE democritus_swarm_records_published_total counter\n"
        "democritus_swarm_records_published_total %" PRIu64 "\n"
        "# HELP democritus_swarm_experts_known Experts in the routing cache, this node included.\n"
        "# TYPE democritus_swarm_experts_known gauge\ndemocritus_swarm_experts_known %u\n",
        st.chats, st.routed, st.failovers, st.syntheses, st.published, st.known);
}

static int peers_connect(void *ud, const char *ma, uint32_t timeout_ms, char *peer, size_t cap,
                         char *err, size_t errlen)
{
    return dc_peerview_connect(((struct daemon *)ud)->peers, ma, timeout_ms, peer, cap, err,
                               errlen);
}

/* The hasher thread: sha256 of every model the cache does not know yet (slow for big files). */
static void *hash_models(void *arg)
{
    struct daemon *d = arg;
    int rc;

    (void)prctl(PR_SET_NAME, "dc-hasher", 0, 0, 0);
    rc = dc_registry_hash_missing(d->reg, &d->hasher_stop);

    if (rc < 0 && rc != DC_ECANCELED)
        dc_log_warn(LOG, "hashing the models stopped: %s", dc_strerror(rc));
    return NULL;
}

/* True when 'dir' holds at least one *.gguf file (a missing folder holds none). */
static bool dir_has_gguf(const char *dir)
{
    DIR *dp = dir != NULL ? opendir(dir) : NULL;
    struct dirent *de;
    bool found = false;

    if (dp == NULL)
        return false;
    while (!found && (de = readdir(dp)) != NULL) {
        size_t n = strlen(de->d_name);

        found = n > 5 && strcmp(de->d_name + n - 5, ".gguf") == 0;
    }
    closedir(dp);
    return found;
}

/* Opens the model registry (unless --no-model) and starts the REST server. A node without a
 * usable model still serves: its inference routes answer 503. */
static int start_api(struct daemon *d, const struct dc_daemon_options *opt)
{
    const struct dc_config *cfg = d->cfg;
    struct dc_api_config ac = {0};
    char err[512];
    int rc;

    if (opt->no_model) {
        dc_log_info(LOG, "--no-model: no model engine; inference routes answer 503");
    } else {
        struct dc_registry_config rcfg = {0};
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        char *cache = dc_state_path(cfg->state_dir, "models.json");

        if (cache == NULL)
            return DC_ENOMEM;
        rcfg.models_dir = cfg->models_dir;
        rcfg.default_model = cfg->model_path;
        if (rcfg.default_model == NULL && opt->demo_model != NULL &&
            !dir_has_gguf(cfg->models_dir)) {
            rcfg.default_model = opt->demo_model;
            dc_log_warn(LOG,
                        "no model configured and none in models_dir %s: serving the DEMO model %s "
                        "(random weights: it answers gibberish). Get a real GGUF with "
                        "`democritus models pull URL` into %s, or set [expert].model_path",
                        cfg->models_dir ? cfg->models_dir : "-", opt->demo_model,
                        cfg->models_dir ? cfg->models_dir : "./models");
        }
        rcfg.cache_path = cache;
        /* [engine] memory_budget_mb = 0 means half of the RAM. */
        rcfg.memory_budget_bytes =
            cfg->memory_budget_mb > 0
                ? (uint64_t)cfg->memory_budget_mb << 20
                : (pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 2 : 0);
        rcfg.engine.n_ctx_per_slot = (uint32_t)cfg->max_context;
        rcfg.engine.n_parallel = (uint32_t)cfg->parallel;
        rcfg.engine.n_threads = (int)cfg->threads;
        rcfg.engine.n_gpu_layers = (int)cfg->gpu_layers;
        rcfg.engine.step_budget_ms = (uint32_t)cfg->step_budget_ms;
        rcfg.no_hash = true; /* hashed by the hasher thread below, so start-up never waits */
        rc = dc_registry_open(&rcfg, &d->reg);
        dc_free(cache);
        if (rc < 0) {
            dc_log_error(LOG, "cannot open the model registry (models_dir %s): %s",
                         cfg->models_dir ? cfg->models_dir : "-", dc_strerror(rc));
            d->reg = NULL;
        } else {
            atomic_init(&d->hasher_stop, false);
            d->hasher_started = pthread_create(&d->hasher, NULL, hash_models, d) == 0;
        }
    }
    ac.bind = cfg->bind;
    ac.port = (uint16_t)cfg->rest_port;
    ac.keys = (const char *const *)cfg->api_keys.items;
    ac.n_keys = cfg->api_keys.n;
    ac.priority_keys = (const char *const *)cfg->priority_api_keys.items;
    ac.n_priority_keys = cfg->priority_api_keys.n;
    ac.registry = d->reg;
    ac.max_queue = (uint32_t)cfg->api_max_queue;
    ac.max_connections = (uint32_t)cfg->api_max_connections;
    ac.timeout_s = (uint32_t)cfg->api_timeout_s;
    ac.default_temperature = cfg->temperature;
    ac.version = DC_VERSION;
    ac.peers_count = peers_count;
    ac.peers_ud = d;
    ac.peers_json = peers_json;
    ac.peers_connect = peers_connect;
    ac.experts_json = experts_json;
    ac.metrics_extra = swarm_metrics;
    if (d->remote != NULL) {
        ac.remote = &dc_remote_hooks;
        ac.remote_ud = d->remote;
    }
    ac.cors_origins = (const char *const *)cfg->cors_origins.items;
    ac.n_cors_origins = cfg->cors_origins.n;
    /* One limiter for the three interfaces: a key's budget is the same whichever it calls. */
    if (cfg->rate_limit_rpm > 0) {
        rc = dc_api_ratelimit_new((uint32_t)cfg->rate_limit_rpm, &d->ratelimit);
        if (rc < 0)
            return rc;
    }
    ac.rate_limit_rpm = (uint32_t)cfg->rate_limit_rpm;
    ac.ratelimit = d->ratelimit;
    rc = dc_api_new(&ac, &d->api, err, sizeof(err));
    if (rc < 0) {
        dc_log_error(LOG, "%s", err);
        return rc;
    }
    snprintf(d->rest_url, sizeof(d->rest_url), "http://%s%s%s:%u",
             strchr(cfg->bind, ':') != NULL ? "[" : "",
             strcmp(cfg->bind, "0.0.0.0") == 0 ? "127.0.0.1"
             : strcmp(cfg->bind, "::") == 0    ? "::1"
                                               : cfg->bind,
             strchr(cfg->bind, ':') != NULL ? "]" : "", (unsigned)dc_api_port(d->api));
    dc_log_info(LOG, "REST API on %s (%s)", d->rest_url,
                dc_api_has_model(d->api) ? "model loaded"
                                         : "no model: inference routes answer 503");
    return 0;
}

/* Starts the swarm coordinator: the model "swarm" on every interface, and this node's
 * capability record on the DHT ([expert] description, tags, price, publish; [swarm]). */
static int start_swarm(struct daemon *d)
{
    const struct dc_config *cfg = d->cfg;
    struct dc_coord_config cc = {0};
    struct dc_model_entry *v = NULL;
    size_t n = 0;
    const char *model_id = NULL, *sha = NULL;
    int rc;

    if (d->reg != NULL && dc_api_has_model(d->api)) {
        char *why = NULL;
        rc = dc_registry_acquire(d->reg, NULL, &d->coord_engine, &why);
        if (rc < 0) {
            dc_log_warn(LOG, "the swarm coordinator cannot use the default model: %s",
                        why != NULL ? why : dc_strerror(rc));
            d->coord_engine = NULL;
        }
        dc_free(why);
        if (d->coord_engine != NULL && dc_registry_list(d->reg, &v, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                if (v[i].is_default) {
                    model_id = v[i].id;
                    sha = v[i].sha256;
                }
        }
    }
    cc.loop = &d->loop;
    cc.host = d->host;
    cc.dht = d->dht;
    cc.identity = d->id;
    cc.engine = d->coord_engine;
    cc.model_id = model_id;
    cc.model_sha256 = sha;
    cc.description = cfg->publish ? cfg->description : NULL;
    cc.tags = (const char *const *)cfg->tags.items;
    cc.n_tags = cfg->tags.n;
    cc.price = cfg->price;
    cc.default_experts = (uint32_t)cfg->swarm_experts;
    cc.expert_timeout_ms = (uint32_t)cfg->swarm_expert_timeout_s * 1000u;
    cc.lookup_timeout_ms = (uint32_t)cfg->swarm_lookup_timeout_ms;
    cc.republish_ms = (uint32_t)cfg->swarm_republish_s * 1000u;
    rc = dc_coord_new(&cc, &d->coord);
    dc_model_entries_free(v, n);
    if (rc < 0) {
        dc_log_error(LOG, "cannot start the swarm coordinator: %s", dc_strerror(rc));
        return rc;
    }
    if (d->remote != NULL)
        dc_remote_set_coord(d->remote, d->coord);
    atomic_store(&d->coord_api, d->coord);
    return 0;
}

/* Parses a list of PeerIds from the config into a heap array (NULL when empty). */
static int parse_peer_list(const struct dc_strlist *l, const char *key, struct dc_peer_id **out)
{
    *out = NULL;
    if (l->n == 0)
        return 0;
    *out = dc_calloc(l->n, sizeof(**out));
    if (*out == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < l->n; i++) {
        if (dc_peer_id_parse(l->items[i], &(*out)[i]) < 0) {
            dc_log_error(LOG, "[node] %s: '%s' is not a PeerId", key, l->items[i]);
            dc_free(*out);
            *out = NULL;
            return DC_ECONFIG;
        }
    }
    return 0;
}

/* Serves /democritus/infer/1.0.0 with the registry's models, within the [node] remote_*
 * bounds. A node without a registry (--no-model) does not register the protocol. */
static int start_infer(struct daemon *d)
{
    const struct dc_config *cfg = d->cfg;
    struct dc_infer_server_config ic = {0};
    struct dc_peer_id *allow = NULL, *deny = NULL;
    int rc;

    if (d->reg == NULL)
        return 0;
    rc = parse_peer_list(&cfg->remote_allow, "remote_allow", &allow);
    if (rc == 0)
        rc = parse_peer_list(&cfg->remote_deny, "remote_deny", &deny);
    if (rc < 0)
        goto out;
    ic.loop = &d->loop;
    ic.host = d->host;
    ic.identity = d->id;
    ic.registry = d->reg;
    ic.serve_remote = cfg->serve_remote;
    ic.max_streams_per_peer = (uint32_t)cfg->remote_max_streams;
    ic.requests_per_minute = (uint32_t)cfg->remote_requests_per_minute;
    ic.tokens_per_minute = (uint32_t)cfg->remote_tokens_per_minute;
    ic.max_tokens = (uint32_t)cfg->remote_max_tokens;
    ic.max_context = (uint32_t)cfg->remote_max_context;
    ic.default_temperature = (float)cfg->temperature;
    ic.allow = allow;
    ic.n_allow = cfg->remote_allow.n;
    ic.deny = deny;
    ic.n_deny = cfg->remote_deny.n;
    rc = dc_infer_server_new(&ic, &d->infer);
    if (rc < 0) {
        dc_log_error(LOG, "cannot serve %s: %s", DC_INFER_PROTOCOL_ID, dc_strerror(rc));
        goto out;
    }
    dc_log_info(LOG, "%s: %s", DC_INFER_PROTOCOL_ID,
                cfg->serve_remote ? "serving peers"
                                  : "refusing peers ([node] serve_remote = false)");
out:
    dc_free(allow);
    dc_free(deny);
    return rc;
}

/* Starts the WebSocket and gRPC servers on [api].bind, serving the registry's models (and
 * peers, through the remote hooks) with the same keys, rate limiter and queue bound as REST. */
static int start_rpc(struct daemon *d)
{
    const struct dc_config *cfg = d->cfg;
    struct dc_rpc_config rc_cfg = {0};
    bool v6 = strchr(cfg->bind, ':') != NULL;
    const char *host = strcmp(cfg->bind, "0.0.0.0") == 0 ? "127.0.0.1"
                       : strcmp(cfg->bind, "::") == 0    ? "::1"
                                                         : cfg->bind;
    char err[512];
    int rc;

    rc_cfg.bind = cfg->bind;
    rc_cfg.keys = (const char *const *)cfg->api_keys.items;
    rc_cfg.n_keys = cfg->api_keys.n;
    rc_cfg.priority_keys = (const char *const *)cfg->priority_api_keys.items;
    rc_cfg.n_priority_keys = cfg->priority_api_keys.n;
    rc_cfg.registry = d->reg;
    rc_cfg.max_queue = (uint32_t)cfg->api_max_queue;
    rc_cfg.max_connections = (uint32_t)cfg->api_max_connections;
    rc_cfg.default_temperature = cfg->temperature;
    rc_cfg.version = DC_VERSION;
    rc_cfg.ratelimit = d->ratelimit;
    if (d->remote != NULL) {
        rc_cfg.remote = &dc_remote_hooks;
        rc_cfg.remote_ud = d->remote;
    }
    rc_cfg.port = (uint16_t)cfg->ws_port;
    rc_cfg.max_message_bytes = (size_t)cfg->ws_max_message_bytes;
    rc = dc_ws_new(&rc_cfg, &d->ws, err, sizeof(err));
    if (rc < 0) {
        dc_log_error(LOG, "%s", err);
        return rc;
    }
    rc_cfg.port = (uint16_t)cfg->grpc_port;
    rc_cfg.max_message_bytes = (size_t)cfg->grpc_max_message_bytes;
    rc = dc_grpc_new(&rc_cfg, &d->grpc, err, sizeof(err));
    if (rc < 0) {
        dc_log_error(LOG, "%s", err);
        return rc;
    }
    snprintf(d->ws_url, sizeof(d->ws_url), "ws://%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "",
             (unsigned)dc_ws_port(d->ws));
    snprintf(d->grpc_addr, sizeof(d->grpc_addr), "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "",
             (unsigned)dc_grpc_port(d->grpc));
    dc_log_info(LOG, "WebSocket API on %s/ws/chat; gRPC API (h2c) on %s", d->ws_url, d->grpc_addr);
    return 0;
}

static void dial_bootstrap(struct daemon *d)
{
    for (size_t i = 0; i < d->cfg->bootstrap_nodes.n; i++) {
        const char *a = d->cfg->bootstrap_nodes.items[i];
        struct dc_multiaddr_error me;
        struct dc_multiaddr ma;
        struct bootstrap_dial *b;
        int rc;

        if (dc_multiaddr_parse(a, &ma, &me) < 0) {
            dc_log_warn(LOG, "bootstrap node %s: %s at offset %zu: %s", a, me.component, me.offset,
                        me.reason);
            continue;
        }
        b = dc_calloc(1, sizeof(*b));
        if (b == NULL || (b->addr = dc_strdup(a)) == NULL) {
            dc_free(b);
            dc_log_warn(LOG, "bootstrap node %s: %s", a, dc_strerror(DC_ENOMEM));
            continue;
        }
        rc = dc_host_dial(d->host, &ma, 0, on_bootstrap_dialed, b);
        if (rc < 0) {
            dc_log_warn(LOG, "cannot dial bootstrap node %s: %s", a, dc_strerror(rc));
            dc_free(b->addr);
            dc_free(b);
        }
    }
}

/* The ready line's p2p= value: the addresses joined by commas. */
static char *p2p_list(const struct daemon *d)
{
    struct dc_buf b;
    size_t i;
    json_t *v;

    dc_buf_init(&b, 0);
    json_array_foreach(d->p2p_addrs, i, v)
    {
        if ((i > 0 && dc_buf_append_str(&b, ",") < 0) ||
            dc_buf_append_str(&b, json_string_value(v)) < 0) {
            dc_buf_cleanup(&b);
            return NULL;
        }
    }
    if (b.data == NULL && dc_buf_append(&b, "", 0) < 0)
        return NULL;
    return (char *)dc_buf_steal(&b, &i);
}

static void close_cb(uv_handle_t *h)
{
    DC_UNUSED(h);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    DC_UNUSED(arg);
    if (!uv_is_closing(h))
        uv_close(h, close_cb);
}

int dc_daemon_run(const struct dc_config *cfg, const struct dc_daemon_options *opt)
{
    struct daemon d;
    char err[512];
    int rc;

    memset(&d, 0, sizeof(d));
    d.cfg = cfg;
    d.lock_fd = -1;
    signal(SIGPIPE, SIG_IGN);

    rc = uv_loop_init(&d.loop);
    if (rc < 0) {
        dc_log_error(LOG, "cannot start the event loop: %s", uv_strerror(rc));
        return rc;
    }
    uv_signal_init(&d.loop, &d.sigint);
    uv_signal_init(&d.loop, &d.sigterm);
    d.sigint.data = d.sigterm.data = &d;
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);

    rc = dc_state_dir_ensure(cfg->state_dir, err, sizeof(err));
    if (rc < 0) {
        dc_log_error(LOG, "%s", err);
        goto out_loop;
    }
    rc = dc_state_lock(cfg->state_dir, &d.lock_fd);
    if (rc == DC_EBUSY) {
        long pid = running_pid(cfg->state_dir);
        if (pid > 0)
            dc_log_error(LOG, "another daemon (pid %ld) is running on state directory %s", pid,
                         cfg->state_dir);
        else
            dc_log_error(LOG, "another daemon is running on state directory %s", cfg->state_dir);
        goto out_loop;
    }
    if (rc < 0) {
        dc_log_error(LOG, "cannot lock state directory %s: %s", cfg->state_dir, dc_strerror(rc));
        goto out_loop;
    }
    d.json_path = dc_state_path(cfg->state_dir, "daemon.json");
    d.lock_path = dc_state_path(cfg->state_dir, "daemon.lock");
    if (d.json_path == NULL || d.lock_path == NULL) {
        rc = DC_ENOMEM;
        goto out_unlock;
    }
    raise_nofile_limit();
    if (poll_stop(&d))
        goto out_unlock;

    rc = dc_state_identity(cfg->state_dir, true, &d.id, err, sizeof(err));
    if (rc < 0) {
        dc_log_error(LOG, "%s", err);
        goto out_unlock;
    }
    rc = dc_peer_id_to_string(dc_identity_peer_id(d.id), d.peer, sizeof(d.peer));
    if (rc < 0)
        goto out_identity;
    rc = 0;
    dc_log_info(LOG, "democritus %s, peer id %s", DC_VERSION, d.peer);
    dc_log_info(LOG,
                "config: %s; state dir %s; listen %zu address(es); %zu bootstrap node(s); "
                "%s; api keys: %zu",
                cfg->source_path ? cfg->source_path : "defaults (no config file)", cfg->state_dir,
                cfg->listen_addresses.n, cfg->bootstrap_nodes.n,
                opt->no_model ? "no model (P2P only)" : "local model engine", cfg->api_keys.n);
    if (poll_stop(&d))
        goto out_identity;

    rc = start_p2p(&d);
    if (rc == 0)
        rc = start_dht(&d, opt);
    if (rc == 0)
        rc = start_api(&d, opt);
    if (rc == 0)
        rc = start_rpc(&d);
    if (rc == 0)
        rc = start_infer(&d);
    if (rc == 0)
        rc = start_swarm(&d);
    if (rc < 0)
        goto out_host;
    if (poll_stop(&d))
        goto out_host;

    rc = write_daemon_json(&d);
    if (rc < 0) {
        dc_log_error(LOG, "cannot write %s: %s", d.json_path, dc_strerror(rc));
        goto out_host;
    }
    {
        char *list = p2p_list(&d);
        if (list == NULL) {
            rc = DC_ENOMEM;
            unlink(d.json_path);
            goto out_host;
        }
        printf("ready peer=%s p2p=%s rest=%s grpc=%s ws=%s\n", d.peer, list, d.rest_url,
               d.grpc_addr, d.ws_url);
        dc_free(list);
    }
    fflush(stdout);
    dc_log_info(LOG, "ready");
    if (d.reg != NULL && d.rest_url[0] != '\0') {
        /* Something to paste, for people starting their first node. */
        dc_log_info(LOG,
                    "try: curl -s %s/v1/chat/completions -H 'Content-Type: application/json'%s "
                    "-d '{\"model\":\"local\",\"messages\":[{\"role\":\"user\",\"content\":"
                    "\"Hello\"}]}'",
                    d.rest_url,
                    cfg->api_keys.n > 0 ? " -H 'Authorization: Bearer <your key>'" : "");
        dc_log_info(LOG, "or:  democritus ask --url %s \"Hello\"", d.rest_url);
    }
    dial_bootstrap(&d);

    if (!d.stopping)
        uv_run(&d.loop, UV_RUN_DEFAULT);
    dc_log_info(LOG, "stopped");
    unlink(d.json_path);
    rc = 0;

out_host:
    /* Closes every connection now; the loop run below lets libuv finish closing them. The DHT
     * goes first: it saves its stores and resets its streams on the live host. */
    dc_peerview_shutdown(d.peers); /* wakes API threads waiting on a dial */
    dc_remote_shutdown(d.remote);  /* ends forwarded chats: the API waits for them */
    dc_coord_shutdown(d.coord);    /* and what the swarm chats still ran */
    dc_grpc_free(d.grpc);
    dc_ws_free(d.ws);
    dc_api_free(d.api);
    atomic_store(&d.coord_api, NULL);
    /* After the three servers that borrow it. */
    dc_api_ratelimit_free(d.ratelimit);
    dc_infer_server_free(d.infer); /* before the registry: it releases the engines it holds */
    if (d.coord_engine != NULL)
        dc_registry_release(d.reg, d.coord_engine);
    if (d.hasher_started) {
        atomic_store(&d.hasher_stop, true); /* it gives up within one 1 MiB read */
        pthread_join(d.hasher, NULL);
    }
    dc_registry_close(d.reg);
    dc_dht_free(d.dht);
    dc_host_free(d.host);
    dc_coord_free(d.coord); /* after the DHT: its last callbacks reach the coordinator */
    dc_peerview_free(d.peers);
    dc_remote_free(d.remote);
    json_decref(d.p2p_addrs);
out_identity:
    dc_identity_free(d.id);
out_unlock:
    if (d.lock_path != NULL)
        unlink(d.lock_path);
    if (d.lock_fd >= 0)
        close(d.lock_fd);
    dc_free(d.json_path);
    dc_free(d.lock_path);
out_loop:
    uv_walk(&d.loop, walk_close, NULL);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    uv_loop_close(&d.loop);
    return d.stopping && rc == 0 ? 0 : rc;
}

/* SPDX-License-Identifier: MIT */
/*
 * daemon.c - the node's lifecycle.
 *
 * Start-up order matters: configuration is already validated by the caller (so a bad config
 * never touches state); then the loop and signal handlers come first, so a SIGINT/SIGTERM at any
 * later point of start-up still ends in a clean exit; then the state directory, the exclusive
 * lock (before anything in the directory is written), the open-file limit, the identity, and
 * finally the ready line and daemon.json. Shutdown undoes it in reverse: daemon.json and the
 * lock file are removed while the lock is still held.
 */
#include "daemon/daemon.h"

#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/log.h"
#include "crypto/crypto.h"

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

    j = json_pack("{s:I, s:s, s:s, s:s, s:I, s:[]}", "pid", (json_int_t)getpid(), "peer_id",
                  d->peer, "version", DC_VERSION, "state_dir", d->cfg->state_dir, "started_at",
                  (json_int_t)time(NULL), "p2p");
    if (j == NULL)
        return DC_ENOMEM;
    rc = write_json_file(d->json_path, j);
    json_decref(j);
    return rc;
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
                opt->no_model ? "no model (P2P only)" : "model engine not built yet",
                cfg->api_keys.n);
    if (poll_stop(&d))
        goto out_identity;

    rc = write_daemon_json(&d);
    if (rc < 0) {
        dc_log_error(LOG, "cannot write %s: %s", d.json_path, dc_strerror(rc));
        goto out_identity;
    }
    printf("ready peer=%s\n", d.peer);
    fflush(stdout);
    dc_log_info(LOG, "ready");

    if (!d.stopping)
        uv_run(&d.loop, UV_RUN_DEFAULT);
    dc_log_info(LOG, "stopped");
    unlink(d.json_path);
    rc = 0;

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

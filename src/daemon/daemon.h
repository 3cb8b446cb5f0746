/* SPDX-License-Identifier: MIT */
/*
 * daemon.h - the node process: state directory, exclusive lock, identity, the libuv loop, the
 * ready line and daemon.json, signals and graceful shutdown. The CLI's `daemon` command calls
 * dc_daemon_run(); other commands use the state-directory helpers to find or inspect a daemon.
 */
#ifndef DC_DAEMON_H
#define DC_DAEMON_H

#include "daemon/config.h"

struct dc_identity;

struct dc_daemon_options {
    bool no_model;       /* P2P-only node: no engine (swarm tests) */
    const char *provide; /* a DHT key (CID or text) to provide and keep announcing, or NULL */
    /* A GGUF to serve when no model is configured and models_dir holds none (`make run` passes
     * a demo model made by gguf-gen); the log says it is a demo. NULL: none. */
    const char *demo_model;
};

/*
 * Runs the daemon until SIGINT/SIGTERM. 'cfg' is borrowed. Prints the ready line to stdout
 * once serving. Returns 0 after a clean shutdown (also when a signal came during start-up),
 * or a negative code after logging one clear line (state dir, lock, key problems).
 */
DC_MUST_CHECK int dc_daemon_run(const struct dc_config *cfg, const struct dc_daemon_options *opt);

/*
 * Creates 'dir' and missing parents with mode 0700. Refuses a path that exists and is not a
 * directory. Returns 0 or -errno / DC_EINVAL with a line in 'err'.
 */
DC_MUST_CHECK int dc_state_dir_ensure(const char *dir, char *err, size_t errlen);

/*
 * Loads the node identity from '<state_dir>/identity.key'; creates it (and the state dir)
 * when absent and 'create' is set. Errors as dc_identity_load_file(), with one line in 'err'.
 */
DC_MUST_CHECK int dc_state_identity(const char *state_dir, bool create, struct dc_identity **out,
                                    char *err, size_t errlen);

/* Path of '<state_dir>/<name>' in a new heap string, or NULL on allocation failure. */
char *dc_state_path(const char *state_dir, const char *name);

/*
 * Tries to take the exclusive daemon lock ('<state_dir>/daemon.lock'). On success '*fd_out'
 * holds it (close to release). Returns DC_EBUSY when another process holds it, -errno
 * otherwise.
 */
DC_MUST_CHECK int dc_state_lock(const char *state_dir, int *fd_out);

#endif

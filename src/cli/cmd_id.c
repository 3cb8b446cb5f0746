/* SPDX-License-Identifier: MIT */
/*
 * cmd_id.c - `democritus id` and `democritus keygen`: the node's identity key in state_dir.
 * `id` only reads the key (it works beside a running daemon) and creates it on first use;
 * `keygen --force` replaces it, so it refuses while a daemon holds the state directory.
 */
#include <stdio.h>
#include <unistd.h>

#include "cli/cli.h"
#include "crypto/crypto.h"
#include "daemon/daemon.h"

static int print_peer_id(const struct dc_identity *id)
{
    char peer[DC_PEER_ID_STR_MAX];

    if (dc_peer_id_to_string(dc_identity_peer_id(id), peer, sizeof(peer)) < 0)
        return 1;
    printf("%s\n", peer);
    return 0;
}

int cli_cmd_id(int argc, char **argv)
{
    struct cli_ctx ctx = {
        .cmd = "id",
        .usage = "id [--state-dir DIR]",
        .summary = "Prints this node's PeerId, creating the identity key on first use.",
    };
    struct dc_identity *id;
    struct dc_config cfg;
    char err[512];
    bool done;
    int rc;

    rc = cli_parse(&ctx, argc, argv, 0, &done);
    if (rc != 0 || done)
        return rc;
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0)
        return rc;
    if (dc_crypto_init() < 0) {
        fprintf(stderr, "democritus id: cannot initialise libsodium\n");
        dc_config_cleanup(&cfg);
        return 1;
    }
    rc = dc_state_identity(cfg.state_dir, true, &id, err, sizeof(err));
    dc_config_cleanup(&cfg);
    if (rc < 0) {
        fprintf(stderr, "democritus id: %s\n", err);
        return 1;
    }
    rc = print_peer_id(id);
    dc_identity_free(id);
    return rc;
}

int cli_cmd_keygen(int argc, char **argv)
{
    bool force = false, done;
    const struct cli_opt opts[] = {
        {"force", 'f', CLI_BOOL, NULL, "replace an existing key (the PeerId changes)", &force,
         NULL},
    };
    struct cli_ctx ctx = {
        .cmd = "keygen",
        .usage = "keygen [--force] [--state-dir DIR]",
        .summary = "Creates the node's Ed25519 identity key in the state directory and prints\n"
                   "its PeerId. An existing key is kept unless --force is given.",
        .opts = opts,
        .n_opts = DC_ARRAY_LEN(opts),
    };
    struct dc_identity *id = NULL;
    struct dc_config cfg;
    char err[512], *path = NULL;
    int rc, lock_fd = -1, status = 1;

    rc = cli_parse(&ctx, argc, argv, 0, &done);
    if (rc != 0 || done)
        return rc;
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0)
        return rc;
    if (dc_crypto_init() < 0) {
        fprintf(stderr, "democritus keygen: cannot initialise libsodium\n");
        goto out;
    }
    rc = dc_state_dir_ensure(cfg.state_dir, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "democritus keygen: %s\n", err);
        goto out;
    }
    /* A running daemon keeps using its old key in memory; replacing it under it would lie. */
    rc = dc_state_lock(cfg.state_dir, &lock_fd);
    if (rc == DC_EBUSY) {
        fprintf(stderr, "democritus keygen: a daemon is running on %s; stop it first\n",
                cfg.state_dir);
        goto out;
    }
    path = dc_state_path(cfg.state_dir, "identity.key");
    if (path == NULL || dc_identity_generate(&id) < 0) {
        fprintf(stderr, "democritus keygen: out of memory\n");
        goto out;
    }
    rc = dc_identity_save_file(id, path, force, err, sizeof(err));
    if (rc == DC_EEXIST) {
        fprintf(stderr, "democritus keygen: %s already exists; use --force to replace it\n", path);
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "democritus keygen: %s\n", err);
        goto out;
    }
    status = print_peer_id(id);
out:
    if (lock_fd >= 0) {
        char *lock = dc_state_path(cfg.state_dir, "daemon.lock");
        if (lock != NULL)
            unlink(lock);
        dc_free(lock);
        close(lock_fd);
    }
    dc_identity_free(id);
    dc_free(path);
    dc_config_cleanup(&cfg);
    return status;
}

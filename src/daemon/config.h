/* SPDX-License-Identifier: MIT */
/*
 * config.h - the node's configuration: one schema table (config.c) from which the TOML
 * validation, the environment and command-line overrides, `config.example.toml` and
 * docs/configuration.md all follow, so they never drift.
 *
 * Precedence: defaults < config file < environment (DEMOCRITUS_<SECTION>_<KEY>) < flags
 * (named after the key: --state-dir, --rest-port, ...). Loading never touches the state
 * directory; errors name the file, line and key (or the variable or flag) in one line.
 */
#ifndef DC_CONFIG_H
#define DC_CONFIG_H

#include <stdio.h>

#include "base/base.h"

struct dc_strlist {
    char **items;
    size_t n;
};

/* Every field is owned by the config and freed by dc_config_cleanup(). */
struct dc_config {
    /* [node] */
    char *name;
    struct dc_strlist listen_addresses;
    struct dc_strlist bootstrap_nodes;
    char *state_dir;
    char *private_swarm_key; /* secret: never logged */
    char *private_swarm_key_file;
    bool ipfs_dht;   /* speak /ipfs/kad/1.0.0 instead of /democritus/kad/1.0.0 */
    bool dht_client; /* DHT client mode: query, never serve */
    /* [node] remote inference (/democritus/infer/1.0.0) */
    bool serve_remote;
    struct dc_strlist remote_allow; /* PeerIds; empty = every peer */
    struct dc_strlist remote_deny;  /* PeerIds */
    int64_t remote_max_streams;     /* per peer, concurrent */
    int64_t remote_requests_per_minute;
    int64_t remote_tokens_per_minute;
    int64_t remote_max_tokens;
    int64_t remote_max_context;
    /* [expert] */
    char *description;
    char *model_path;
    int64_t max_context;
    double temperature;
    char *backend;
    char *upstream_url;
    struct dc_strlist tags; /* intent classes the expert accepts */
    double price;           /* credits per 1,000 generated tokens it asks */
    bool publish;           /* advertise the capability record on the DHT */
    /* [swarm] */
    int64_t swarm_experts;           /* experts per chat of the model "swarm" */
    int64_t swarm_expert_timeout_s;  /* one expert's whole answer */
    int64_t swarm_lookup_timeout_ms; /* routing lookups */
    int64_t swarm_republish_s;       /* capability record re-signed */
    /* [engine] */
    char *models_dir;
    int64_t threads;
    int64_t parallel;
    int64_t gpu_layers;
    int64_t step_budget_ms;
    int64_t memory_budget_mb;
    /* [api] */
    char *bind;
    int64_t rest_port;
    int64_t grpc_port;
    int64_t ws_port;
    struct dc_strlist api_keys; /* secret: never logged; priority keys included after loading */
    struct dc_strlist priority_api_keys; /* secret: queued ahead of other keys' requests */
    char *api_key_file;
    int64_t api_max_queue;          /* per model, beyond its slots */
    int64_t api_max_connections;    /* REST connections */
    int64_t api_timeout_s;          /* REST idle/header timeout */
    struct dc_strlist cors_origins; /* browser origins allowed by CORS */
    int64_t rate_limit_rpm;         /* per key (or client address), all interfaces; 0 = off */
    int64_t ws_max_message_bytes;   /* WebSocket message limit */
    int64_t grpc_max_message_bytes; /* gRPC request message limit */
    /* [log] */
    char *log_level;
    char *log_format;

    char *source_path; /* the file that was loaded, or NULL */
};

/* One command-line override, collected by the CLI and applied last. Borrowed strings. */
struct dc_config_flag {
    const char *name;  /* without the leading dashes, e.g. "rest-port" */
    const char *value; /* as given */
};

/*
 * True when "--<name>" is a configuration flag; '*takes_value' tells whether it takes an
 * argument (all do today, but booleans may not).
 */
bool dc_config_is_flag(const char *name, bool *takes_value);

/*
 * Builds the effective configuration. 'path' is the --config file or NULL (then ./config.toml
 * when present, else none). 'env' is an environ-style array (NULL = no environment).
 * Returns 0; DC_ECONFIG with one line in 'err' (file:line: [section] key: problem) for a bad
 * value, unknown key, wrong type or out-of-range number; -errno when the file can't be read
 * (message names it); DC_ENOMEM. On failure '*cfg' is cleaned up.
 */
DC_MUST_CHECK int dc_config_load(struct dc_config *cfg, const char *path, char *const *env,
                                 const struct dc_config_flag *flags, size_t n_flags, char *err,
                                 size_t errlen);

void dc_config_cleanup(struct dc_config *cfg);

/*
 * Resolves secrets kept in files (api_key_file adds one key per non-empty line,
 * private_swarm_key_file is read as a libp2p PSK file by the P2P layer, so only checked for
 * readability here). Returns 0 or an error with a message naming the file.
 */
DC_MUST_CHECK int dc_config_load_secrets(struct dc_config *cfg, char *err, size_t errlen);

/* Writes the commented example file (every key, its default and help) to 'f'. */
void dc_config_write_example(FILE *f);
/* Writes the reference table (markdown) of every key: section, key, type, default, env, flag. */
void dc_config_write_docs(FILE *f);
/* Writes the effective configuration as TOML, secrets replaced by "<redacted>". */
void dc_config_write_effective(const struct dc_config *cfg, FILE *f);
/* Writes "  --flag VALUE   help" lines for --help output. */
void dc_config_write_flag_help(FILE *f);

#endif

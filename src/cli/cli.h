/* SPDX-License-Identifier: MIT */
/*
 * cli.h - the command-line front end: a small option parser shared by every subcommand (each
 * also accepts the configuration flags of config.h), and one entry point per command file.
 * Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
 */
#ifndef DC_CLI_H
#define DC_CLI_H

#include "daemon/config.h"

#define CLI_MAX_FLAGS 128
#define CLI_MAX_POS   16

enum cli_opt_kind {
    CLI_BOOL,  /* --name sets *set */
    CLI_VALUE, /* --name VALUE or --name=VALUE stores into *value */
};

struct cli_opt {
    const char *name; /* long name, without dashes */
    char short_name;  /* or 0 */
    enum cli_opt_kind kind;
    const char *arg; /* metavariable for --help, e.g. "N" */
    const char *help;
    bool *set;
    const char **value;
};

/* One command invocation: what it parsed and the configuration it gathered. */
struct cli_ctx {
    const char *cmd;   /* "daemon", "peers list", ... */
    const char *usage; /* the synopsis line(s) after "usage: democritus " */
    const char *summary;
    const struct cli_opt *opts;
    size_t n_opts;
    const char *config_path;
    struct dc_config_flag flags[CLI_MAX_FLAGS];
    size_t n_flags;
    const char *pos[CLI_MAX_POS];
    size_t n_pos;
};

/*
 * Parses argv (after the command words) into 'ctx'. Accepts the command's own options,
 * --config FILE, -h/--help, and every configuration flag. Returns 0 to go on, or an exit code:
 * 0 after printing --help (with *done set), 2 after printing a usage error.
 */
int cli_parse(struct cli_ctx *ctx, int argc, char **argv, size_t max_pos, bool *done);

/* Prints "democritus <cmd>: <message>" and the command's usage to stderr; returns 2. */
int cli_usage_error(const struct cli_ctx *ctx, const char *fmt, ...) DC_PRINTF(2, 3);

/* Loads the configuration and sets up logging. Prints the error and returns 2 on failure. */
int cli_load_config(const struct cli_ctx *ctx, struct dc_config *cfg);

/* Prints "democritus <cmd>: <what> is not available in this build yet" and returns 1. */
int cli_not_built(const struct cli_ctx *ctx, const char *what);

struct dc_client;
/*
 * cmd_ask.c: opens a client SDK handle on the running daemon: 'url' when given, else the "rest"
 * URL of <state_dir>/daemon.json; the key is the first of cfg->api_keys. Returns 0 with '*out'
 * (dc_client_free), or prints one line and returns 1 (no daemon running) or 2 (a bad URL).
 */
int cli_daemon_client(const struct cli_ctx *ctx, const struct dc_config *cfg, const char *url,
                      struct dc_client **out);
/* cmd_ask.c: prints one line for a failed client call (a refused connection says the daemon is
 * not running). */
void cli_client_error(const struct cli_ctx *ctx, struct dc_client *c, int rc);

/*
 * GET 'path' from the running daemon (found as cli_daemon_client finds it, with the command's
 * configuration) and return its JSON member 'member', which must be an array: '*root' owns
 * the parsed answer (json_decref) and '*array' borrows from it. Returns 0, or an exit code
 * after printing why (1: the daemon failed or answered something else; 2: configuration).
 */
struct json_t;
int cli_admin_array(const struct cli_ctx *ctx, const char *url, const char *path,
                    const char *member, struct json_t **root, struct json_t **array);

/* Prints 'v' as indented JSON on stdout (what --json prints). Returns 0, or 1 out of memory. */
int cli_print_json(const struct json_t *v);

int cli_cmd_daemon(int argc, char **argv);
int cli_cmd_id(int argc, char **argv);
int cli_cmd_keygen(int argc, char **argv);
int cli_cmd_version(int argc, char **argv);
int cli_cmd_config(int argc, char **argv);
int cli_cmd_ask(int argc, char **argv);
int cli_cmd_generate(int argc, char **argv);
int cli_cmd_peers(int argc, char **argv);
int cli_cmd_experts(int argc, char **argv);
int cli_cmd_dht(int argc, char **argv);
int cli_cmd_ping(int argc, char **argv);
int cli_cmd_reputation(int argc, char **argv);
int cli_cmd_ledger(int argc, char **argv);
int cli_cmd_models(int argc, char **argv);
int cli_cmd_benchmark(int argc, char **argv);

#endif

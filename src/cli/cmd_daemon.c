/* SPDX-License-Identifier: MIT */
/* cmd_daemon.c - `democritus daemon`: load the configuration, then run the node. */
#include "cli/cli.h"
#include "daemon/daemon.h"

int cli_cmd_daemon(int argc, char **argv)
{
    struct dc_daemon_options opt = {0};
    struct dc_config cfg;
    bool done;
    const struct cli_opt opts[] = {
        {"no-model", 0, CLI_BOOL, NULL, "run a P2P-only node without a model engine", &opt.no_model,
         NULL},
        {"provide", 0, CLI_VALUE, "KEY",
         "announce this node in the DHT as a provider of KEY (a CID, or text) and keep it "
         "announced",
         NULL, &opt.provide},
        {"demo-model", 0, CLI_VALUE, "FILE",
         "serve FILE as a demo model when no model is configured and models_dir has none", NULL,
         &opt.demo_model},
    };
    struct cli_ctx ctx = {
        .cmd = "daemon",
        .usage =
            "daemon [--no-model] [--provide KEY] [--demo-model FILE] [--config FILE] [options]",
        .summary = "Runs a node until SIGINT/SIGTERM. When ready it prints one line to stdout:\n"
                   "  ready peer=<PeerId> ...\n"
                   "and writes the same facts to <state_dir>/daemon.json.",
        .opts = opts,
        .n_opts = DC_ARRAY_LEN(opts),
    };
    int rc;

    rc = cli_parse(&ctx, argc, argv, 0, &done);
    if (rc != 0 || done)
        return rc;
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0)
        return rc;
    rc = dc_daemon_run(&cfg, &opt);
    dc_config_cleanup(&cfg);
    return rc < 0 ? 1 : 0;
}

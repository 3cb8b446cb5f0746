/* SPDX-License-Identifier: MIT */
/*
 * cmd_config.c - `democritus config show|example|docs` and `democritus version`.
 * `example` and `docs` print config.example.toml and the reference table of
 * docs/configuration.md from the schema; a test checks the committed files match them.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int cli_cmd_config(int argc, char **argv)
{
    struct cli_ctx ctx = {
        .cmd = "config",
        .usage = "config show|example|docs [--config FILE] [options]",
        .summary = "show     print the effective configuration (secrets redacted)\n"
                   "example  print a commented config.toml with every key and its default\n"
                   "docs     print the reference table of every key (markdown)",
    };
    struct dc_config cfg;
    bool done;
    int rc;

    rc = cli_parse(&ctx, argc, argv, 1, &done);
    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos != 1)
        return cli_usage_error(&ctx, "which one: show, example or docs?");
    if (strcmp(ctx.pos[0], "example") == 0) {
        dc_config_write_example(stdout);
        return 0;
    }
    if (strcmp(ctx.pos[0], "docs") == 0) {
        dc_config_write_docs(stdout);
        return 0;
    }
    if (strcmp(ctx.pos[0], "show") != 0)
        return cli_usage_error(&ctx, "unknown subcommand '%s'", ctx.pos[0]);
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0)
        return rc;
    printf("# source: %s\n", cfg.source_path ? cfg.source_path : "defaults (no config file)");
    dc_config_write_effective(&cfg, stdout);
    dc_config_cleanup(&cfg);
    return 0;
}

int cli_cmd_version(int argc, char **argv)
{
    struct cli_ctx ctx = {.cmd = "version", .usage = "version"};
    bool done;
    int rc;

    rc = cli_parse(&ctx, argc, argv, 0, &done);
    if (rc != 0 || done)
        return rc;
    printf("democritus %s\n", DC_VERSION);
    return 0;
}

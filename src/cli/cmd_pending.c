/* SPDX-License-Identifier: MIT */
/*
 * cmd_pending.c - commands whose subsystems are not built yet. Each parses its real options
 * (so scripts get the same usage errors they will get later) and then says what is missing,
 * with exit code 1. Each moves to its own file when its subsystem lands.
 */
#include <string.h>

#include "cli/cli.h"

/* Parses, then requires one of 'subs' (NULL-terminated; NULL list = none) as first word. */
static int pending(struct cli_ctx *ctx, int argc, char **argv, const char *const *subs,
                   size_t max_pos, const char *missing)
{
    bool done;
    int rc;

    rc = cli_parse(ctx, argc, argv, max_pos, &done);
    if (rc != 0 || done)
        return rc;
    if (subs != NULL) {
        bool ok = false;
        if (ctx->n_pos == 0)
            return cli_usage_error(ctx, "missing subcommand");
        for (const char *const *s = subs; *s != NULL; s++)
            ok = ok || strcmp(*s, ctx->pos[0]) == 0;
        if (!ok)
            return cli_usage_error(ctx, "unknown subcommand '%s'", ctx->pos[0]);
    }
    return cli_not_built(ctx, missing);
}

int cli_cmd_reputation(int argc, char **argv)
{
    static const char *const subs[] = {"show", NULL};
    struct cli_ctx ctx = {.cmd = "reputation", .usage = "reputation show [PEER]"};

    return pending(&ctx, argc, argv, subs, 2, "needs the trust layer");
}

int cli_cmd_ledger(int argc, char **argv)
{
    static const char *const subs[] = {"show", NULL};
    struct cli_ctx ctx = {.cmd = "ledger", .usage = "ledger show"};

    return pending(&ctx, argc, argv, subs, 1, "needs the trust layer");
}

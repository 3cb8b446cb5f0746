/* SPDX-License-Identifier: MIT */
/*
 * cmd_experts.c - `democritus experts [list] [--json] [--url URL]`: the experts the running
 * daemon knows (its routing cache and its own capability record), from GET /api/experts. One
 * line per expert: PeerId (marked "(self)" for this node), model, load (active + queued of its
 * slots), and the start of its description; --json prints the daemon's array as it is.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void print_expert(json_t *x)
{
    const char *id = json_string_value(json_object_get(x, "peer_id"));
    const char *model = json_string_value(json_object_get(x, "model"));
    const char *desc = json_string_value(json_object_get(x, "description"));
    json_int_t active = json_integer_value(json_object_get(x, "active"));
    json_int_t queued = json_integer_value(json_object_get(x, "queued"));
    json_int_t slots = json_integer_value(json_object_get(x, "slots"));
    char load[48], name[80];
    int cut = 60;

    snprintf(name, sizeof(name), "%s%s", id != NULL ? id : "?",
             json_is_true(json_object_get(x, "self")) ? " (self)" : "");
    snprintf(load, sizeof(load), "%lld+%lld/%lld", (long long)active, (long long)queued,
             (long long)slots);
    if (desc == NULL)
        desc = "";
    /* Cut the description at a UTF-8 boundary. */
    if ((int)strlen(desc) > cut)
        while (cut > 0 && ((unsigned char)desc[cut] & 0xc0) == 0x80)
            cut--;
    printf("%-59s  %-20s  %-9s  %.*s%s\n", name, model != NULL && model[0] ? model : "-", load, cut,
           desc, (int)strlen(desc) > cut ? "..." : "");
}

int cli_cmd_experts(int argc, char **argv)
{
    bool as_json = false;
    const char *url = NULL;
    const struct cli_opt opts[] = {
        {"json", 0, CLI_BOOL, NULL, "print the daemon's JSON array", &as_json, NULL},
        {"url", 0, CLI_VALUE, "URL", "daemon REST URL (default: from <state_dir>/daemon.json)",
         NULL, &url},
    };
    struct cli_ctx ctx = {.cmd = "experts",
                          .usage = "experts [list] [--json] [--url URL]",
                          .summary = "Lists the experts the running daemon knows: its own "
                                     "capability record and those found on the DHT.",
                          .opts = opts,
                          .n_opts = DC_ARRAY_LEN(opts)};
    json_t *root = NULL, *experts, *x;
    size_t i;
    bool done;
    int rc = cli_parse(&ctx, argc, argv, 0, &done);

    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos > 1 || (ctx.n_pos == 1 && strcmp(ctx.pos[0], "list") != 0))
        return cli_usage_error(&ctx, "unknown subcommand '%s'", ctx.pos[0]);
    rc = cli_admin_array(&ctx, url, "/api/experts", "experts", &root, &experts);
    if (rc != 0)
        return rc;
    if (as_json) {
        rc = cli_print_json(experts);
        goto out;
    }
    if (json_array_size(experts) == 0) {
        printf("no experts known (set [expert] description to publish this node; peers' "
               "records arrive once they are connected)\n");
        goto out;
    }
    printf("%-59s  %-20s  %-9s  %s\n", "PEER ID", "MODEL", "LOAD", "DESCRIPTION");
    json_array_foreach(experts, i, x) print_expert(x);
out:
    json_decref(root);
    return rc;
}

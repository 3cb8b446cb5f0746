/* SPDX-License-Identifier: MIT */
/*
 * cmd_peers.c - `democritus peers list [--verbose] [--json] [--url URL]`: the running daemon's
 * connected peers, from GET /api/peers (through the client SDK). One line per peer (PeerId,
 * direction, round trip, agent); --verbose adds the addresses and protocols; --json prints the
 * daemon's array as it is.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void print_peer(json_t *p, bool verbose)
{
    const char *id = json_string_value(json_object_get(p, "peer_id"));
    const char *dir = json_string_value(json_object_get(p, "direction"));
    const char *agent = json_string_value(json_object_get(p, "agent"));
    json_t *rtt = json_object_get(p, "rtt_ms");
    char rtt_text[32];
    size_t i;
    json_t *v;

    if (json_is_number(rtt))
        snprintf(rtt_text, sizeof(rtt_text), "%.2f ms", json_number_value(rtt));
    else
        snprintf(rtt_text, sizeof(rtt_text), "-");
    printf("%-52s  %-8s  %10s  %s\n", id != NULL ? id : "?", dir != NULL ? dir : "?", rtt_text,
           agent != NULL ? agent : "-");
    if (!verbose)
        return;
    v = json_object_get(p, "remote_address");
    if (json_is_string(v))
        printf("    connection: %s\n", json_string_value(v));
    json_array_foreach(json_object_get(p, "addresses"), i, v)
    {
        if (json_is_string(v))
            printf("    address:    %s\n", json_string_value(v));
    }
    json_array_foreach(json_object_get(p, "protocols"), i, v)
    {
        if (json_is_string(v))
            printf("    protocol:   %s\n", json_string_value(v));
    }
}

int cli_cmd_peers(int argc, char **argv)
{
    bool verbose = false, as_json = false;
    const char *url = NULL;
    const struct cli_opt opts[] = {
        {"verbose", 'v', CLI_BOOL, NULL, "addresses, protocols, agent", &verbose, NULL},
        {"json", 0, CLI_BOOL, NULL, "print the daemon's JSON array", &as_json, NULL},
        {"url", 0, CLI_VALUE, "URL", "daemon REST URL (default: from <state_dir>/daemon.json)",
         NULL, &url},
    };
    struct cli_ctx ctx = {.cmd = "peers",
                          .usage = "peers list [--verbose] [--json] [--url URL]",
                          .summary = "Lists the peers the running daemon is connected to.",
                          .opts = opts,
                          .n_opts = DC_ARRAY_LEN(opts)};
    json_t *root = NULL, *peers, *p;
    size_t i;
    bool done;
    int rc = cli_parse(&ctx, argc, argv, 1, &done);

    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos == 0)
        return cli_usage_error(&ctx, "missing subcommand");
    if (strcmp(ctx.pos[0], "list") != 0)
        return cli_usage_error(&ctx, "unknown subcommand '%s'", ctx.pos[0]);
    rc = cli_admin_array(&ctx, url, "/api/peers", "peers", &root, &peers);
    if (rc != 0)
        return rc;
    if (as_json) {
        rc = cli_print_json(peers);
        goto out;
    }
    if (json_array_size(peers) == 0) {
        printf("no peers connected\n");
        goto out;
    }
    printf("%-52s  %-8s  %10s  %s\n", "PEER ID", "DIR", "RTT", "AGENT");
    json_array_foreach(peers, i, p) print_peer(p, verbose);
out:
    json_decref(root);
    return rc;
}

/* SPDX-License-Identifier: MIT */
/*
 * cmd_ask.c - `democritus ask "QUESTION" [--stream] [--experts N] [--model M] [--peer MULTIADDR]
 * [--max-tokens N] [--url URL] [--api-key KEY]`: one question to the running daemon through the
 * C client SDK (include/democritus/client.h), and cli_daemon_client(), which finds that daemon
 * for every command that talks to one.
 *
 * The daemon is found through <state_dir>/daemon.json (its "rest" URL) unless --url names one;
 * the key is the first of [api].api_keys, which --api-key, api_key_file and
 * DEMOCRITUS_API_API_KEYS fill as for the daemon. A daemon that is not running is one line on
 * stderr and exit 1.
 *
 * --peer dials the peer through the daemon (POST /api/peers/connect) and asks with model
 * "<PeerId>", which the daemon forwards over /democritus/infer/1.0.0. --experts N asks with the
 * model "swarm": the daemon routes the question to the N best-matching experts of the swarm and
 * merges their answers (src/swarm/coord.h).
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "daemon/daemon.h"
#include "democritus/client.h"

/* Reads the "rest" URL of the daemon that runs on 'state_dir'. Prints why not and returns 1. */
static int daemon_url(const struct cli_ctx *ctx, const char *state_dir, char *url, size_t cap)
{
    char *path = dc_state_path(state_dir, "daemon.json");
    json_error_t je;
    json_t *j;
    const char *rest;
    json_int_t pid;

    if (path == NULL)
        return 1;
    j = json_load_file(path, 0, &je);
    if (j == NULL) {
        if (access(path, F_OK) != 0)
            fprintf(stderr,
                    "democritus %s: no daemon is running on state directory %s (start one with "
                    "`democritus daemon`, or give --url)\n",
                    ctx->cmd, state_dir);
        else
            fprintf(stderr, "democritus %s: cannot read %s: %s\n", ctx->cmd, path, je.text);
        dc_free(path);
        return 1;
    }
    rest = json_string_value(json_object_get(j, "rest"));
    pid = json_integer_value(json_object_get(j, "pid"));
    if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
        fprintf(stderr,
                "democritus %s: no daemon is running on state directory %s (%s is left from "
                "pid %lld, which has exited)\n",
                ctx->cmd, state_dir, path, (long long)pid);
        json_decref(j);
        dc_free(path);
        return 1;
    }
    if (rest == NULL || rest[0] == '\0') {
        fprintf(stderr, "democritus %s: %s names no REST URL (is the daemon's REST API off?)\n",
                ctx->cmd, path);
        json_decref(j);
        dc_free(path);
        return 1;
    }
    snprintf(url, cap, "%s", rest);
    json_decref(j);
    dc_free(path);
    return 0;
}

int cli_daemon_client(const struct cli_ctx *ctx, const struct dc_config *cfg, const char *url,
                      struct dc_client **out)
{
    char found[512];
    const char *key = cfg->api_keys.n > 0 ? cfg->api_keys.items[0] : NULL;
    int rc;

    *out = NULL;
    if (url == NULL) {
        rc = daemon_url(ctx, cfg->state_dir, found, sizeof(found));
        if (rc != 0)
            return rc;
        url = found;
    }
    rc = dc_client_new(url, key, out);
    if (rc == DC_CLIENT_EINVAL) {
        fprintf(stderr, "democritus %s: '%s' is not an http:// or https:// URL\n", ctx->cmd, url);
        return 2;
    }
    if (rc != 0) {
        fprintf(stderr, "democritus %s: %s\n", ctx->cmd, dc_client_strerror(rc));
        return 1;
    }
    return 0;
}

/* One line for a failed call; a refused connection says the daemon is not running. */
void cli_client_error(const struct cli_ctx *ctx, struct dc_client *c, int rc)
{
    if (rc == DC_CLIENT_ECONNECT)
        fprintf(stderr, "democritus %s: the daemon is not running or not reachable (%s)\n",
                ctx->cmd, dc_client_error(c));
    else
        fprintf(stderr, "democritus %s: %s\n", ctx->cmd,
                dc_client_error(c)[0] ? dc_client_error(c) : dc_client_strerror(rc));
}

int cli_admin_array(const struct cli_ctx *ctx, const char *url, const char *path,
                    const char *member, json_t **root, json_t **array)
{
    struct dc_config cfg;
    struct dc_client *c = NULL;
    char *body = NULL;
    int rc;

    *root = *array = NULL;
    rc = cli_load_config(ctx, &cfg);
    if (rc != 0)
        return rc;
    rc = cli_daemon_client(ctx, &cfg, url, &c);
    if (rc == 0) {
        rc = dc_client_get(c, path, &body, NULL);
        if (rc != 0) {
            cli_client_error(ctx, c, rc);
            rc = 1;
        }
    }
    if (rc == 0) {
        *root = json_loads(body, 0, NULL);
        *array = json_object_get(*root, member);
        if (!json_is_array(*array)) {
            fprintf(stderr, "democritus %s: the daemon's %s answer has no %s array\n", ctx->cmd,
                    path, member);
            json_decref(*root);
            *root = *array = NULL;
            rc = 1;
        }
    }
    free(body);
    dc_client_free(c);
    dc_config_cleanup(&cfg);
    return rc;
}

int cli_print_json(const json_t *v)
{
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_REAL_PRECISION(6));

    if (text == NULL)
        return 1;
    puts(text);
    free(text);
    return 0;
}

/* Parses a whole positive number no larger than 'max'. */
static bool parse_count(const char *s, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > max)
        return false;
    *out = v;
    return true;
}

static int on_token(void *ud, const char *text, size_t len)
{
    DC_UNUSED(ud);
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* POST /api/peers/connect; fills 'peer' with the PeerId. Returns 0 or an exit code. */
static int connect_peer(const struct cli_ctx *ctx, struct dc_client *c, const char *ma, char *peer,
                        size_t cap)
{
    json_t *req = json_pack("{s:s}", "multiaddr", ma), *ans;
    char *body = NULL, *text = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    const char *id;
    int rc;

    json_decref(req);
    if (text == NULL)
        return 1;
    rc = dc_client_post(c, "/api/peers/connect", text, &body, NULL);
    free(text);
    if (rc != 0) {
        if (rc == DC_CLIENT_EHTTP && dc_client_http_status(c) == 404)
            fprintf(stderr,
                    "democritus %s: --peer is not available yet: this daemon has no "
                    "/api/peers/connect\n",
                    ctx->cmd);
        else
            cli_client_error(ctx, c, rc);
        return 1;
    }
    ans = json_loads(body, 0, NULL);
    id = json_string_value(json_object_get(ans, "peer_id"));
    if (id == NULL) {
        fprintf(stderr, "democritus %s: the daemon's answer to peers/connect has no peer_id\n",
                ctx->cmd);
        json_decref(ans);
        free(body);
        return 1;
    }
    snprintf(peer, cap, "%s", id);
    json_decref(ans);
    free(body);
    return 0;
}

int cli_cmd_ask(int argc, char **argv)
{
    bool stream = false;
    const char *experts = NULL, *model = NULL, *peer = NULL, *max_tokens = NULL, *url = NULL;
    const struct cli_opt opts[] = {
        {"stream", 0, CLI_BOOL, NULL, "print tokens as they arrive", &stream, NULL},
        {"experts", 0, CLI_VALUE, "N",
         "ask the N (1-8) best-matching experts of the swarm and merge their answers (the model "
         "\"swarm\")",
         NULL, &experts},
        {"model", 0, CLI_VALUE, "M", "model id, PeerId, \"local\" or \"swarm\" (default: local)",
         NULL, &model},
        {"peer", 0, CLI_VALUE, "MULTIADDR", "connect to this peer and ask its model", NULL, &peer},
        {"max-tokens", 0, CLI_VALUE, "N", "limit the answer's length", NULL, &max_tokens},
        {"url", 0, CLI_VALUE, "URL", "daemon REST URL (default: from <state_dir>/daemon.json)",
         NULL, &url},
    };
    struct cli_ctx ctx = {.cmd = "ask",
                          .usage = "ask \"QUESTION\" [--stream] [--experts N] [--model M] "
                                   "[--peer MULTIADDR] [--max-tokens N] [--url URL] "
                                   "[--api-key KEY]",
                          .summary = "Asks the running daemon one question and prints the answer.",
                          .opts = opts,
                          .n_opts = DC_ARRAY_LEN(opts)};
    struct dc_config cfg;
    struct dc_client *c = NULL;
    struct dc_client_message msg = {"user", NULL};
    struct dc_client_chat req = DC_CLIENT_CHAT_INIT;
    struct dc_client_reply reply = {0};
    char peer_id[128];
    long n_experts = 0, n_max = 0;
    bool done;
    int rc = cli_parse(&ctx, argc, argv, 1, &done);

    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos == 0)
        return cli_usage_error(&ctx, "missing the question");
    if (ctx.pos[0][0] == '\0')
        return cli_usage_error(&ctx, "the question is empty");
    if (experts != NULL && !parse_count(experts, 8, &n_experts))
        return cli_usage_error(&ctx, "--experts wants a number from 1 to 8, not '%s'", experts);
    if (experts != NULL && (peer != NULL || (model != NULL && strcmp(model, "swarm") != 0)))
        return cli_usage_error(&ctx, "--experts asks the swarm; it does not go with --peer or "
                                     "--model");
    if (max_tokens != NULL && !parse_count(max_tokens, 1000000, &n_max))
        return cli_usage_error(&ctx, "--max-tokens wants a positive number, not '%s'", max_tokens);
    if (peer != NULL && model != NULL)
        return cli_usage_error(&ctx, "--peer and --model both choose the model; give one");
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0)
        return rc;
    rc = cli_daemon_client(&ctx, &cfg, url, &c);
    if (rc != 0)
        goto out;
    if (peer != NULL) {
        rc = connect_peer(&ctx, c, peer, peer_id, sizeof(peer_id));
        if (rc != 0)
            goto out;
        model = peer_id;
    }
    msg.content = ctx.pos[0];
    req.messages = &msg;
    req.n_messages = 1;
    req.model = model;
    req.max_tokens = (int32_t)n_max;
    if (n_experts > 0) {
        req.model = "swarm";
        req.experts = (uint32_t)n_experts;
    }
    if (stream)
        rc = dc_client_chat_stream(c, &req, on_token, NULL, &reply);
    else
        rc = dc_client_ask(c, &req, &reply);
    if (rc != 0) {
        if (stream && reply.text_len > 0)
            putchar('\n');
        cli_client_error(&ctx, c, rc);
        rc = 1;
        goto out;
    }
    if (!stream)
        fputs(reply.text, stdout);
    putchar('\n');
    if (reply.finish_reason != NULL && strcmp(reply.finish_reason, "length") == 0)
        fprintf(stderr, "democritus ask: the answer was cut at --max-tokens / the server's "
                        "limit\n");
out:
    dc_client_reply_cleanup(&reply);
    dc_client_free(c);
    dc_config_cleanup(&cfg);
    return rc;
}

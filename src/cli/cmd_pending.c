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

int cli_cmd_ask(int argc, char **argv)
{
    bool stream = false;
    const char *experts = NULL, *model = NULL, *peer = NULL, *max_tokens = NULL, *url = NULL;
    const struct cli_opt opts[] = {
        {"stream", 0, CLI_BOOL, NULL, "print tokens as they arrive", &stream, NULL},
        {"experts", 0, CLI_VALUE, "N", "number of experts to consult", NULL, &experts},
        {"model", 0, CLI_VALUE, "M", "model id, PeerId, \"local\" or \"swarm\"", NULL, &model},
        {"peer", 0, CLI_VALUE, "MULTIADDR", "ask this peer directly", NULL, &peer},
        {"max-tokens", 0, CLI_VALUE, "N", "limit the answer's length", NULL, &max_tokens},
        {"url", 0, CLI_VALUE, "URL", "daemon REST URL (default: from daemon.json)", NULL, &url},
    };
    struct cli_ctx ctx = {.cmd = "ask",
                          .usage = "ask \"QUESTION\" [--stream] [--experts N] [--model M] "
                                   "[--peer MULTIADDR] [--max-tokens N]",
                          .opts = opts,
                          .n_opts = DC_ARRAY_LEN(opts)};
    bool done;
    int rc = cli_parse(&ctx, argc, argv, 1, &done);

    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos == 0)
        return cli_usage_error(&ctx, "missing the question");
    return cli_not_built(&ctx, "needs the REST interface");
}

int cli_cmd_generate(int argc, char **argv)
{
    bool chat = false, json = false, prompt_tokens = false;
    const char *model = NULL, *prompt = NULL, *n = NULL, *temp = NULL, *seed = NULL, *top_k = NULL,
               *top_p = NULL, *logprobs = NULL;
    const struct cli_opt opts[] = {
        {"model", 'm', CLI_VALUE, "FILE", "GGUF model file", NULL, &model},
        {"prompt", 'p', CLI_VALUE, "TEXT", "prompt text", NULL, &prompt},
        {"n", 'n', CLI_VALUE, "N", "tokens to generate (default 128)", NULL, &n},
        {"temp", 0, CLI_VALUE, "T", "sampling temperature (0 = argmax)", NULL, &temp},
        {"seed", 0, CLI_VALUE, "S", "sampling seed", NULL, &seed},
        {"top-k", 0, CLI_VALUE, "K", "top-k sampling", NULL, &top_k},
        {"top-p", 0, CLI_VALUE, "P", "top-p sampling", NULL, &top_p},
        {"chat", 0, CLI_BOOL, NULL, "render the prompt with the model's chat template", &chat,
         NULL},
        {"logprobs", 0, CLI_VALUE, "N", "with --json: top-N alternatives per token", NULL,
         &logprobs},
        {"json", 0, CLI_BOOL, NULL, "JSON Lines output", &json, NULL},
        {"prompt-tokens", 0, CLI_BOOL, NULL, "print the prompt's token ids and exit",
         &prompt_tokens, NULL},
    };
    struct cli_ctx ctx = {.cmd = "generate",
                          .usage = "generate --model FILE --prompt TEXT [-n N] [--temp T] "
                                   "[--seed S] [--json]",
                          .opts = opts,
                          .n_opts = DC_ARRAY_LEN(opts)};

    return pending(&ctx, argc, argv, NULL, 0, "needs the inference engine");
}

int cli_cmd_peers(int argc, char **argv)
{
    static const char *const subs[] = {"list", NULL};
    bool verbose = false;
    const struct cli_opt opts[] = {
        {"verbose", 'v', CLI_BOOL, NULL, "addresses, protocols, agent", &verbose, NULL},
    };
    struct cli_ctx ctx = {.cmd = "peers",
                          .usage = "peers list [--verbose]",
                          .opts = opts,
                          .n_opts = DC_ARRAY_LEN(opts)};

    return pending(&ctx, argc, argv, subs, 1, "needs the P2P layer and the admin API");
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

int cli_cmd_models(int argc, char **argv)
{
    static const char *const subs[] = {"list", "pull", NULL};
    struct cli_ctx ctx = {.cmd = "models", .usage = "models list | models pull URL"};

    return pending(&ctx, argc, argv, subs, 2, "needs the model registry");
}

int cli_cmd_benchmark(int argc, char **argv)
{
    static const char *const subs[] = {"engine", NULL};
    bool json = false;
    const char *model = NULL, *threads = NULL, *pp = NULL, *tg = NULL, *parallel = NULL;
    const struct cli_opt opts[] = {
        {"model", 'm', CLI_VALUE, "FILE", "GGUF model file", NULL, &model},
        {"threads", 't', CLI_VALUE, "N", "compute threads", NULL, &threads},
        {"pp", 0, CLI_VALUE, "N", "prompt tokens (default 128)", NULL, &pp},
        {"tg", 0, CLI_VALUE, "N", "generated tokens (default 64)", NULL, &tg},
        {"parallel", 0, CLI_VALUE, "LIST", "concurrent streams, e.g. 1,4,16", NULL, &parallel},
        {"json", 0, CLI_BOOL, NULL, "one JSON object instead of a table", &json, NULL},
    };
    struct cli_ctx ctx = {.cmd = "benchmark",
                          .usage = "benchmark engine --model FILE [--threads N] [--pp N] "
                                   "[--tg N] [--parallel 1,4,16] [--json]",
                          .opts = opts,
                          .n_opts = DC_ARRAY_LEN(opts)};

    return pending(&ctx, argc, argv, subs, 1, "needs the inference engine");
}

/* SPDX-License-Identifier: MIT */
/*
 * cmd_generate.c - `democritus generate`: runs a local GGUF model directly through the engine,
 * without a daemon. Text streams to stdout as the engine releases it (the end-of-generation
 * token is never printed); --json writes JSON Lines instead, one object per token and a final
 * summary; --prompt-tokens prints the prompt's token ids and exits, loading only the
 * vocabulary (so it works on vocabulary-only GGUF files too). --chat renders the prompt (after
 * an optional --system message), or a whole --messages conversation, with the model's chat
 * template; --print-prompt prints that rendering (or the raw prompt) exactly and exits, also
 * loading only the vocabulary: the interop tests compare it with a real Jinja renderer. Logs go
 * to stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "base/log.h"
#include "cli/cli.h"
#include "model/engine.h"

/* Shared by the main thread and the engine's callback. */
struct gen_out {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct dc_engine *e;
    bool json;
    bool done;
    bool write_failed;
    uint32_t n_top;
    struct dc_gen_event last; /* the DONE event (its strings are not kept) */
    char error_msg[256];
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    DC_UNUSED(sig);
    interrupted = 1;
}

/* Token output. The callback runs on the engine's scheduler thread; a command-line run has one
 * request, so writing stdout right here (and letting a slow pipe slow generation) is simpler
 * than a hand-off and costs nobody else anything. */
static void print_token(struct gen_out *o, const struct dc_gen_event *ev)
{
    json_t *j, *top;
    char *line;

    if (!o->json) {
        if (ev->text_len > 0 && fwrite(ev->text, 1, ev->text_len, stdout) != ev->text_len)
            o->write_failed = true;
        fflush(stdout);
        return;
    }
    /* The end-of-generation token is not output; a held-back tail it releases still is. */
    if (dc_engine_token_is_eog(o->e, ev->id) && ev->text_len == 0)
        return;
    j = json_object();
    json_object_set_new(j, "id", json_integer(ev->id));
    json_object_set_new(j, "text", json_stringn(ev->text, ev->text_len));
    json_object_set_new(j, "logprob", json_real(ev->logprob));
    if (o->n_top > 0) {
        top = json_array();
        for (uint32_t i = 0; i < ev->n_top; i++) {
            json_t *t = json_object();
            json_object_set_new(t, "id", json_integer(ev->top[i].id));
            json_object_set_new(t, "text", json_string(ev->top[i].text));
            json_object_set_new(t, "logprob", json_real(ev->top[i].logprob));
            json_array_append_new(top, t);
        }
        json_object_set_new(j, "top", top);
    }
    line = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (line == NULL || printf("%s\n", line) < 0)
        o->write_failed = true;
    free(line);
    fflush(stdout);
}

static void on_event(void *ud, const struct dc_gen_event *ev)
{
    struct gen_out *o = ud;

    if (ev->type == DC_GEN_EV_TOKEN) {
        print_token(o, ev);
        return;
    }
    pthread_mutex_lock(&o->mu);
    o->last = *ev;
    o->last.error_msg = NULL;
    if (ev->error_msg != NULL)
        snprintf(o->error_msg, sizeof(o->error_msg), "%s", ev->error_msg);
    o->done = true;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->mu);
}

static int print_summary(const struct gen_out *o, const char *model, uint32_t n_prompt)
{
    const struct dc_gen_event *d = &o->last;
    double pps = d->prompt_ms > 0 ? (d->n_prompt - d->n_cached) * 1e3 / d->prompt_ms : 0;
    double gps = d->gen_ms > 0 && d->n_generated > 1 ? (d->n_generated - 1) * 1e3 / d->gen_ms : 0;
    json_t *s, *j;
    char *line;

    DC_UNUSED(n_prompt);
    if (!o->json) {
        if (!o->write_failed)
            fputc('\n', stdout);
        dc_log_info("generate",
                    "%s: %u prompt tokens (%.1f tok/s), %u generated (%.1f tok/s), finish %s",
                    model, d->n_prompt, pps, d->n_generated, gps, dc_gen_finish_name(d->finish));
        return 0;
    }
    s = json_object();
    json_object_set_new(s, "tokens", json_integer(d->n_generated));
    json_object_set_new(s, "finish_reason", json_string(dc_gen_finish_name(d->finish)));
    json_object_set_new(s, "prompt_tokens", json_integer(d->n_prompt));
    json_object_set_new(s, "cached_tokens", json_integer(d->n_cached));
    json_object_set_new(s, "prompt_tokens_per_s", json_real(pps));
    json_object_set_new(s, "gen_tokens_per_s", json_real(gps));
    json_object_set_new(s, "queue_ms", json_real(d->queue_ms));
    json_object_set_new(s, "prompt_ms", json_real(d->prompt_ms));
    json_object_set_new(s, "gen_ms", json_real(d->gen_ms));
    json_object_set_new(s, "model", json_string(model));
    j = json_object();
    json_object_set_new(j, "summary", s);
    line = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (line == NULL)
        return -1;
    printf("%s\n", line);
    free(line);
    fflush(stdout);
    return 0;
}

#define GEN_MAX_MESSAGES 1024 /* --messages entries */

/* A chat to render: the messages point into 'json' (or into argv), which owns their text. */
struct gen_chat {
    struct dc_chat_msg *msgs;
    size_t n;
    json_t *json;
};

static void gen_chat_cleanup(struct gen_chat *c)
{
    dc_free(c->msgs);
    json_decref(c->json);
    memset(c, 0, sizeof(*c));
}

/*
 * Builds the chat from --messages (a JSON array of {"role": R, "content": C} objects, both
 * strings) or from --system and --prompt. Returns 0, or -1 after writing one line to 'why'.
 */
static int gen_chat_init(struct gen_chat *c, const char *messages, const char *system,
                         const char *prompt, char *why, size_t why_len)
{
    json_error_t jerr;
    size_t i;

    memset(c, 0, sizeof(*c));
    if (messages == NULL) {
        c->msgs = dc_calloc(2, sizeof(*c->msgs));
        if (c->msgs == NULL)
            goto err_nomem;
        if (system != NULL)
            c->msgs[c->n++] = (struct dc_chat_msg){.role = "system", .content = system};
        c->msgs[c->n++] = (struct dc_chat_msg){.role = "user", .content = prompt};
        return 0;
    }
    c->json = json_loads(messages, JSON_REJECT_DUPLICATES, &jerr);
    if (c->json == NULL) {
        snprintf(why, why_len, "--messages: invalid JSON at column %d: %s", jerr.column, jerr.text);
        return -1;
    }
    if (!json_is_array(c->json) || json_array_size(c->json) == 0 ||
        json_array_size(c->json) > GEN_MAX_MESSAGES) {
        snprintf(why, why_len, "--messages wants a JSON array of 1..%d messages", GEN_MAX_MESSAGES);
        goto err_json;
    }
    c->msgs = dc_calloc(json_array_size(c->json), sizeof(*c->msgs));
    if (c->msgs == NULL)
        goto err_nomem;
    for (i = 0; i < json_array_size(c->json); i++) {
        json_t *m = json_array_get(c->json, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *content = json_string_value(json_object_get(m, "content"));

        if (role == NULL || content == NULL) {
            snprintf(why, why_len, "--messages[%zu] wants string \"role\" and \"content\" members",
                     i);
            goto err_json;
        }
        c->msgs[c->n++] = (struct dc_chat_msg){.role = role, .content = content};
    }
    return 0;

err_nomem:
    snprintf(why, why_len, "%s", dc_strerror(DC_ENOMEM));
err_json:
    gen_chat_cleanup(c);
    return -1;
}

/* Renders the chat with the model's template into '*out' (heap). Warns, as the engine's users
 * do, when the template is not one llama.cpp knows and ChatML stands in for it. Returns 0 or
 * -1 after printing one line. */
static int gen_chat_render(struct dc_engine *e, const char *model, const struct gen_chat *c,
                           char **out)
{
    bool fallback = false;
    int rc;

    rc = dc_engine_chat_render(e, c->msgs, c->n, true, out, &fallback);
    if (rc < 0) {
        fprintf(stderr, "democritus generate: cannot render the chat prompt: %s\n",
                dc_strerror(rc));
        return -1;
    }
    if (fallback)
        dc_log_warn("generate", "%s: no usable chat template, using ChatML", model);
    return 0;
}

/* --print-prompt: the exact text generation would start from, without a newline added. Loads
 * only the vocabulary, which is all the chat template needs. */
static int print_prompt(const char *model, const char *prompt, const struct gen_chat *chat)
{
    struct dc_engine_config ecfg = {.model_path = model, .vocab_only = true};
    struct dc_engine *e;
    char *err = NULL, *rendered = NULL;
    const char *text = prompt;
    int status = 1, rc;

    rc = dc_engine_open(&ecfg, &e, &err);
    if (rc < 0) {
        fprintf(stderr, "democritus generate: %s\n", err != NULL ? err : dc_strerror(rc));
        dc_free(err);
        return 1;
    }
    if (chat != NULL) {
        if (gen_chat_render(e, model, chat, &rendered) < 0)
            goto out_close;
        text = rendered;
    }
    if (fwrite(text, 1, strlen(text), stdout) != strlen(text) || fflush(stdout) != 0) {
        fprintf(stderr, "democritus generate: cannot write the output\n");
        goto out_close;
    }
    status = 0;

out_close:
    dc_free(rendered);
    dc_engine_close(e);
    return status;
}

/* Parses an integer option within [lo, hi]. */
static bool parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static int print_prompt_tokens(const char *model, const char *prompt)
{
    struct dc_engine_config ecfg = {.model_path = model, .vocab_only = true};
    struct dc_engine *e;
    int32_t *ids;
    size_t n;
    char *err = NULL;
    int rc;

    rc = dc_engine_open(&ecfg, &e, &err);
    if (rc < 0) {
        fprintf(stderr, "democritus generate: %s\n", err != NULL ? err : dc_strerror(rc));
        dc_free(err);
        return 1;
    }
    rc = dc_engine_tokenize(e, prompt, strlen(prompt), true, false, &ids, &n);
    if (rc < 0) {
        fprintf(stderr, "democritus generate: cannot tokenize the prompt: %s\n", dc_strerror(rc));
        dc_engine_close(e);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        printf("%s%" PRId32, i > 0 ? " " : "", ids[i]);
    printf("\n");
    dc_free(ids);
    dc_engine_close(e);
    return 0;
}

int cli_cmd_generate(int argc, char **argv)
{
    bool chat = false, json = false, prompt_tokens = false, print = false, done;
    const char *model = NULL, *prompt = NULL, *n = NULL, *temp = NULL, *seed = NULL, *top_k = NULL,
               *top_p = NULL, *logprobs = NULL, *threads = NULL, *system = NULL, *messages = NULL,
               *gpu_layers = NULL;
    const struct cli_opt opts[] = {
        {"model", 'm', CLI_VALUE, "FILE", "GGUF model file", NULL, &model},
        {"prompt", 'p', CLI_VALUE, "TEXT", "prompt text", NULL, &prompt},
        {"n", 'n', CLI_VALUE, "N", "tokens to generate (default 128)", NULL, &n},
        {"temp", 0, CLI_VALUE, "T",
         "sampling temperature (0 = argmax; default [expert].temperature)", NULL, &temp},
        {"seed", 0, CLI_VALUE, "S", "sampling seed", NULL, &seed},
        {"top-k", 0, CLI_VALUE, "K", "top-k sampling (0 = off)", NULL, &top_k},
        {"top-p", 0, CLI_VALUE, "P", "top-p sampling (1 = off)", NULL, &top_p},
        {"threads", 't', CLI_VALUE, "N", "compute threads (default [engine].threads)", NULL,
         &threads},
        {"gpu-layers", 0, CLI_VALUE, "N",
         "layers on the GPU in GPU builds (-1 = all that fit, 0 = CPU; default "
         "[engine].gpu_layers)",
         NULL, &gpu_layers},
        {"chat", 0, CLI_BOOL, NULL, "render the prompt with the model's chat template", &chat,
         NULL},
        {"system", 0, CLI_VALUE, "TEXT", "with --chat: a system message before the prompt", NULL,
         &system},
        {"messages", 0, CLI_VALUE, "JSON",
         "with --chat, instead of --prompt: [{\"role\":R,\"content\":C},...]", NULL, &messages},
        {"logprobs", 0, CLI_VALUE, "N", "with --json: top-N alternatives per token", NULL,
         &logprobs},
        {"json", 0, CLI_BOOL, NULL, "JSON Lines output", &json, NULL},
        {"prompt-tokens", 0, CLI_BOOL, NULL, "print the prompt's token ids and exit",
         &prompt_tokens, NULL},
        {"print-prompt", 0, CLI_BOOL, NULL,
         "print the exact prompt text (with --chat: its rendering) and exit", &print, NULL},
    };
    struct cli_ctx ctx = {
        .cmd = "generate",
        .usage = "generate --model FILE --prompt TEXT [-n N] [--temp T] [--seed S] [--top-k K]\n"
                 "       [--top-p P] [--threads N] [--gpu-layers N] [--chat [--system TEXT]]\n"
                 "       [--logprobs N]"
                 " [--json] [--prompt-tokens] [--print-prompt]\n"
                 "   or: democritus generate --model FILE --chat --messages JSON [...]",
        .summary = "Runs a local GGUF model directly, without a daemon, and streams the text to\n"
                   "stdout (--json: one JSON object per token, then a summary).",
        .opts = opts,
        .n_opts = DC_ARRAY_LEN(opts),
    };
    struct dc_engine_config ecfg = {0};
    struct dc_gen_request req;
    struct gen_chat conv = {0};
    struct gen_out out = {.json = false};
    struct dc_config cfg;
    struct dc_engine *e = NULL;
    struct dc_gen *g = NULL;
    char *err = NULL, *rendered = NULL, why[256];
    long n_tokens = 128, v;
    double f;
    int rc, status = 1;

    rc = cli_parse(&ctx, argc, argv, 0, &done);
    if (rc != 0 || done)
        return rc;
    if (model == NULL)
        return cli_usage_error(&ctx, "--model is required");
    if (messages != NULL && (!chat || prompt != NULL || system != NULL || prompt_tokens))
        return cli_usage_error(&ctx, "--messages goes with --chat, instead of --prompt and "
                                     "--system, and not with --prompt-tokens");
    if (prompt == NULL && messages == NULL)
        return cli_usage_error(&ctx, "--prompt is required");
    if (system != NULL && !chat)
        return cli_usage_error(&ctx, "--system needs --chat");
    if (prompt_tokens && print)
        return cli_usage_error(&ctx, "--prompt-tokens and --print-prompt exclude each other");
    if (prompt_tokens)
        return print_prompt_tokens(model, prompt);

    memset(&req, 0, sizeof(req));
    dc_sampling_defaults(&req.sampling);
    if (n != NULL && !parse_int(n, 1, INT32_MAX, &n_tokens))
        return cli_usage_error(&ctx, "-n wants a positive integer, not '%s'", n);
    if (temp != NULL) {
        if (!parse_float(temp, 0, 100, &f))
            return cli_usage_error(&ctx, "--temp wants a number >= 0, not '%s'", temp);
        req.sampling.temperature = (float)f;
    }
    if (seed != NULL) {
        char *end;
        errno = 0;
        req.sampling.seed = strtoull(seed, &end, 10);
        if (errno != 0 || end == seed || *end != '\0')
            return cli_usage_error(&ctx, "--seed wants an unsigned integer, not '%s'", seed);
        req.sampling.has_seed = true;
    }
    if (top_k != NULL) {
        if (!parse_int(top_k, 0, INT32_MAX, &v))
            return cli_usage_error(&ctx, "--top-k wants an integer >= 0, not '%s'", top_k);
        req.sampling.top_k = (int32_t)v;
    }
    if (top_p != NULL) {
        if (!parse_float(top_p, 0, 1, &f))
            return cli_usage_error(&ctx, "--top-p wants a number in [0, 1], not '%s'", top_p);
        req.sampling.top_p = (float)f;
    }
    if (logprobs != NULL) {
        if (!parse_int(logprobs, 0, DC_ENGINE_MAX_TOP_LOGPROBS, &v))
            return cli_usage_error(&ctx, "--logprobs wants 0..%d, not '%s'",
                                   DC_ENGINE_MAX_TOP_LOGPROBS, logprobs);
        req.n_logprobs = (uint32_t)v;
    }
    if (threads != NULL) {
        if (!parse_int(threads, 1, 1024, &v))
            return cli_usage_error(&ctx, "--threads wants 1..1024, not '%s'", threads);
        ecfg.n_threads = (int)v;
    }
    if (gpu_layers != NULL) {
        if (!parse_int(gpu_layers, -1, 100000, &v))
            return cli_usage_error(&ctx, "--gpu-layers wants -1..100000, not '%s'", gpu_layers);
        ecfg.n_gpu_layers = (int)v;
    }

    if (chat && gen_chat_init(&conv, messages, system, prompt, why, sizeof(why)) < 0)
        return cli_usage_error(&ctx, "%s", why);
    if (print) {
        status = print_prompt(model, prompt, chat ? &conv : NULL);
        gen_chat_cleanup(&conv);
        return status;
    }

    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0) {
        gen_chat_cleanup(&conv);
        return rc;
    }
    if (temp == NULL)
        req.sampling.temperature = (float)cfg.temperature;
    if (threads == NULL)
        ecfg.n_threads = (int)cfg.threads;
    if (gpu_layers == NULL)
        ecfg.n_gpu_layers = (int)cfg.gpu_layers;
    ecfg.model_path = model;
    ecfg.n_parallel = 1;
    ecfg.n_ctx_per_slot = (uint32_t)cfg.max_context;
    dc_config_cleanup(&cfg);

    rc = dc_engine_open(&ecfg, &e, &err);
    if (rc < 0) {
        fprintf(stderr, "democritus generate: %s\n", err != NULL ? err : dc_strerror(rc));
        dc_free(err);
        gen_chat_cleanup(&conv);
        return 1;
    }
    if (dc_engine_info(e)->has_encoder) {
        fprintf(stderr, "democritus generate: %s is an embedding model (%s): it cannot generate\n",
                model, dc_engine_info(e)->arch);
        goto out_close;
    }
    req.prompt = prompt;
    if (chat) {
        if (gen_chat_render(e, model, &conv, &rendered) < 0)
            goto out_close;
        req.prompt = rendered;
        req.prompt_parse_special = true;
    }
    req.prompt_len = strlen(req.prompt);
    req.max_tokens = (int32_t)n_tokens;
    req.logprobs = json;

    pthread_mutex_init(&out.mu, NULL);
    pthread_cond_init(&out.cond, NULL);
    out.e = e;
    out.json = json;
    out.n_top = json ? req.n_logprobs : 0;
    if (!json)
        req.n_logprobs = 0;
    rc = dc_engine_submit(e, &req, on_event, &out, &g);
    if (rc == DC_ELIMIT) {
        fprintf(stderr,
                "democritus generate: the prompt and -n %ld do not fit the context of %u "
                "tokens\n",
                n_tokens, dc_engine_info(e)->n_ctx_per_slot);
        goto out_sync;
    }
    if (rc < 0) {
        fprintf(stderr, "democritus generate: %s\n", dc_strerror(rc));
        goto out_sync;
    }
    signal(SIGINT, on_sigint);
    pthread_mutex_lock(&out.mu);
    while (!out.done) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&out.cond, &out.mu, &ts);
        if (interrupted)
            dc_gen_cancel(g);
    }
    pthread_mutex_unlock(&out.mu);
    signal(SIGINT, SIG_DFL);
    dc_gen_release(g);
    if (out.last.finish == DC_GEN_FINISH_ERROR) {
        fprintf(stderr, "democritus generate: generation failed: %s\n",
                out.error_msg[0] != '\0' ? out.error_msg : dc_strerror(out.last.error));
        goto out_sync;
    }
    if (print_summary(&out, model, out.last.n_prompt) < 0 || out.write_failed) {
        fprintf(stderr, "democritus generate: cannot write the output\n");
        goto out_sync;
    }
    status = out.last.finish == DC_GEN_FINISH_CANCELLED ? 130 : 0;

out_sync:
    pthread_cond_destroy(&out.cond);
    pthread_mutex_destroy(&out.mu);
out_close:
    dc_engine_close(e);
    dc_free(rendered);
    gen_chat_cleanup(&conv);
    return status;
}

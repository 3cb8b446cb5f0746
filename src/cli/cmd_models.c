/* SPDX-License-Identifier: MIT */
/*
 * cmd_models.c - `democritus models list [--json]` and `democritus models pull URL
 * [--output NAME]`. Both work without a daemon: list opens the registry on the configured
 * models_dir and model_path directly (sharing the daemon's sha256 cache in state_dir when that
 * folder exists), pull downloads into models_dir.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "daemon/daemon.h"
#include "model/engine.h"

/* "164.2K", "1.10B": parameter counts as people say them. */
static void fmt_count(uint64_t v, char *buf, size_t len)
{
    if (v >= 1000000000ull)
        snprintf(buf, len, "%.2fB", (double)v / 1e9);
    else if (v >= 1000000ull)
        snprintf(buf, len, "%.1fM", (double)v / 1e6);
    else if (v >= 1000ull)
        snprintf(buf, len, "%.1fK", (double)v / 1e3);
    else
        snprintf(buf, len, "%" PRIu64, v);
}

static void fmt_bytes(uint64_t v, char *buf, size_t len)
{
    if (v >= (1ull << 30))
        snprintf(buf, len, "%.2f GiB", (double)v / (double)(1ull << 30));
    else if (v >= (1ull << 20))
        snprintf(buf, len, "%.1f MiB", (double)v / (double)(1ull << 20));
    else if (v >= (1ull << 10))
        snprintf(buf, len, "%.1f KiB", (double)v / (double)(1ull << 10));
    else
        snprintf(buf, len, "%" PRIu64 " B", v);
}

static int print_json(const struct dc_config *cfg, const struct dc_model_entry *v, size_t n)
{
    json_t *arr = json_array(), *doc;
    char *s;

    if (arr == NULL)
        return 1;
    for (size_t i = 0; i < n; i++) {
        const struct dc_model_entry *e = &v[i];
        json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I}", "id", e->id, "path", e->path, "default",
                              e->is_default, "size_bytes", (json_int_t)e->size_bytes, "mtime",
                              (json_int_t)e->mtime);
        if (o == NULL)
            goto err;
        if (e->error != NULL) {
            json_object_set_new(o, "error", json_string(e->error));
        } else {
            json_object_set_new(o, "arch", json_string(e->arch));
            json_object_set_new(o, "name", json_string(e->name));
            json_object_set_new(o, "quantization", json_string(e->quantization));
            json_object_set_new(o, "params", json_integer((json_int_t)e->n_params));
            json_object_set_new(o, "ctx", json_integer((json_int_t)e->n_ctx_train));
            json_object_set_new(o, "sha256", e->sha256[0] ? json_string(e->sha256) : json_null());
        }
        json_array_append_new(arr, o);
    }
    doc = json_pack("{s:s?, s:o}", "models_dir", cfg->models_dir, "models", arr);
    arr = NULL;
    if (doc == NULL)
        return 1;
    s = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    if (s == NULL)
        return 1;
    puts(s);
    free(s);
    return 0;
err:
    json_decref(arr);
    return 1;
}

static void print_table(const struct dc_config *cfg, const struct dc_model_entry *v, size_t n)
{
    size_t w_id = 2;

    if (n == 0) {
        printf("no models in %s%s%s\n", cfg->models_dir ? cfg->models_dir : "(no models_dir)",
               cfg->model_path ? " and model_path " : "", cfg->model_path ? cfg->model_path : "");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i].id);
        if (l > w_id)
            w_id = l;
    }
    printf("  %-*s  %-8s  %8s  %-8s  %10s  %7s  %-12s\n", (int)w_id, "ID", "ARCH", "PARAMS",
           "QUANT", "SIZE", "CTX", "SHA256");
    for (size_t i = 0; i < n; i++) {
        const struct dc_model_entry *e = &v[i];
        char params[32], size[32];

        fmt_bytes(e->size_bytes, size, sizeof(size));
        if (e->error != NULL) {
            printf("%c %-*s  error: %s\n", e->is_default ? '*' : ' ', (int)w_id, e->id, e->error);
            continue;
        }
        fmt_count(e->n_params, params, sizeof(params));
        printf("%c %-*s  %-8s  %8s  %-8s  %10s  %7" PRIu64 "  %-12.12s\n",
               e->is_default ? '*' : ' ', (int)w_id, e->id, e->arch, params, e->quantization, size,
               e->n_ctx_train, e->sha256[0] ? e->sha256 : "-");
    }
    printf("\n* serves \"local\" (model_path, else the first usable file)\n");
}

static int models_list(const struct cli_ctx *ctx, const struct dc_config *cfg, bool json)
{
    struct dc_registry_config rc_cfg = {0};
    struct dc_registry *r;
    struct dc_model_entry *v;
    struct stat st;
    char *cache = NULL;
    size_t n;
    int rc, code = 0;

    rc_cfg.models_dir = cfg->models_dir;
    rc_cfg.default_model = cfg->model_path;
    rc_cfg.no_probe = true; /* listing never loads a model */
    /* Share the daemon's hash cache, but never create a state directory just to list. */
    if (cfg->state_dir != NULL && stat(cfg->state_dir, &st) == 0 && S_ISDIR(st.st_mode)) {
        cache = dc_state_path(cfg->state_dir, "models.json");
        rc_cfg.cache_path = cache;
    }
    rc = dc_registry_open(&rc_cfg, &r);
    if (rc < 0) {
        fprintf(stderr, "democritus %s: %s: %s\n", ctx->cmd,
                cfg->models_dir ? cfg->models_dir : "models_dir", dc_strerror(rc));
        dc_free(cache);
        return 1;
    }
    rc = dc_registry_list(r, &v, &n);
    if (rc < 0) {
        fprintf(stderr, "democritus %s: %s\n", ctx->cmd, dc_strerror(rc));
        code = 1;
    } else {
        if (json)
            code = print_json(cfg, v, n);
        else
            print_table(cfg, v, n);
        dc_model_entries_free(v, n);
    }
    dc_registry_close(r);
    dc_free(cache);
    return code;
}

struct bar {
    bool tty;
    double last;
    struct dc_pull_progress seen; /* the latest report, drawn or not */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bar_draw(const struct dc_pull_progress *p)
{
    char got[32], total[32];

    fmt_bytes(p->received, got, sizeof(got));
    if (p->total > 0) {
        int pct = (int)((double)p->received * 100.0 / (double)p->total);
        int fill = pct / 4;
        fmt_bytes(p->total, total, sizeof(total));
        fprintf(stderr, "\r[%.*s%*s] %3d%% %s / %s   ", fill, "#########################",
                25 - fill, "", pct, got, total);
    } else {
        fprintf(stderr, "\r%s   ", got);
    }
}

/* A progress bar on stderr, redrawn at most ten times a second, only on a terminal. */
static void on_progress(const struct dc_pull_progress *p, void *ud)
{
    struct bar *b = ud;
    double t = now_s();

    b->seen = *p;
    if (!b->tty || t - b->last < 0.1)
        return;
    b->last = t;
    bar_draw(p);
}

static int models_pull(const struct cli_ctx *ctx, const struct dc_config *cfg, const char *url,
                       const char *output)
{
    struct bar b = {.tty = isatty(STDERR_FILENO) == 1};
    char sha[65], *path = NULL, *err = NULL;
    int rc;

    if (cfg->models_dir == NULL) {
        fprintf(stderr, "democritus %s: no models_dir configured\n", ctx->cmd);
        return 2;
    }
    rc = dc_model_pull(url, cfg->models_dir, output, on_progress, &b, &path, sha, &err);
    if (b.tty && b.last > 0) {
        /* The last state, also when the transfer outran the redraw interval. */
        if (rc == 0)
            b.seen.total = b.seen.received;
        bar_draw(&b.seen);
        fputc('\n', stderr);
    }
    if (rc < 0) {
        fprintf(stderr, "democritus %s: %s\n", ctx->cmd, err ? err : dc_strerror(rc));
        dc_free(err);
        return rc == DC_EINVAL ? 2 : 1;
    }
    printf("%s  %s\n", sha, path);
    dc_free(path);
    return 0;
}

int cli_cmd_models(int argc, char **argv)
{
    bool json = false;
    const char *output = NULL;
    const struct cli_opt opts[] = {
        {"json", 0, CLI_BOOL, NULL, "list: JSON instead of a table", &json, NULL},
        {"output", 'o', CLI_VALUE, "NAME", "pull: file name in models_dir (default: from the URL)",
         NULL, &output},
    };
    struct cli_ctx ctx = {
        .cmd = "models",
        .usage = "models list [--json] | models pull URL [--output NAME]",
        .summary = "list  the GGUF files of models_dir (and model_path): id, architecture,\n"
                   "      parameters, quantization, size, context, sha256; works without a daemon\n"
                   "pull  download a GGUF file into models_dir (resumes NAME.part, checks the\n"
                   "      GGUF magic and validates the file, prints its sha256)",
        .opts = opts,
        .n_opts = DC_ARRAY_LEN(opts),
    };
    struct dc_config cfg;
    bool done;
    int rc;

    rc = cli_parse(&ctx, argc, argv, 2, &done);
    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos == 0)
        return cli_usage_error(&ctx, "missing subcommand");
    if (strcmp(ctx.pos[0], "list") == 0) {
        if (ctx.n_pos != 1)
            return cli_usage_error(&ctx, "unexpected argument '%s'", ctx.pos[1]);
        if (output != NULL)
            return cli_usage_error(&ctx, "--output is for pull");
    } else if (strcmp(ctx.pos[0], "pull") == 0) {
        if (ctx.n_pos != 2)
            return cli_usage_error(&ctx, "pull needs a URL");
        if (json)
            return cli_usage_error(&ctx, "--json is for list");
    } else {
        return cli_usage_error(&ctx, "unknown subcommand '%s'", ctx.pos[0]);
    }
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0)
        return rc;
    if (strcmp(ctx.pos[0], "list") == 0)
        rc = models_list(&ctx, &cfg, json);
    else
        rc = models_pull(&ctx, &cfg, ctx.pos[1], output);
    dc_config_cleanup(&cfg);
    return rc;
}

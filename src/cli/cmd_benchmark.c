/* SPDX-License-Identifier: MIT */
/*
 * cmd_benchmark.c - `democritus benchmark engine --model FILE [--threads N] [--pp N] [--tg N]
 * [--parallel 1,4,16] [--slots N] [--json]`: prompt and generation speed through our engine and
 * through llama.cpp's bare decode loop on the same file (src/model/bench.c), their ratio, and the
 * aggregate generation speed with N concurrent streams. A table, or one JSON object:
 * {"model","threads","slots","n_params","size_bytes","pp":{"n","ours","llama","ratio"},
 * "tg":{...},"parallel":[{"n","tok_s"}]}. --slots N opens the engine with N slots (default:
 * the largest stream count), to see what idle slots cost a single stream.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "model/bench.h"
#include "model/model.h"

static bool parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max || s[0] == '-')
        return false;
    *out = (uint32_t)v;
    return true;
}

/* "1,4,16" into cfg->parallel. */
static bool parse_list(const char *s, struct dc_bench_config *cfg)
{
    char buf[256], *save = NULL;

    if (strlen(s) >= sizeof(buf))
        return false;
    strcpy(buf, s);
    cfg->n_parallel = 0;
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (cfg->n_parallel >= DC_BENCH_MAX_PARALLEL ||
            !parse_u32(t, 1, 256, &cfg->parallel[cfg->n_parallel]))
            return false;
        cfg->n_parallel++;
    }
    return cfg->n_parallel > 0;
}

/* The engine's slot count: --slots, else the largest stream count (as dc_bench_engine). */
static uint32_t slots_of(const struct dc_bench_config *cfg)
{
    uint32_t n = 1;

    if (cfg->n_slots != 0)
        return cfg->n_slots;
    for (size_t i = 0; i < cfg->n_parallel; i++)
        n = cfg->parallel[i] > n ? cfg->parallel[i] : n;
    return n;
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

/* Engine time per generated token over the bare loop's, in microseconds (negative: faster). */
static double overhead_us(const struct dc_bench_result *r)
{
    if (r->tg_ours <= 0 || r->tg_llama <= 0)
        return 0;
    return 1e6 / r->tg_ours - 1e6 / r->tg_llama;
}

static int print_json(const struct dc_bench_config *cfg, const struct dc_bench_result *r)
{
    json_t *par = json_array(), *doc;
    char *s;

    for (size_t i = 0; par != NULL && i < cfg->n_parallel; i++)
        json_array_append_new(par, json_pack("{s:i, s:f}", "n", (int)cfg->parallel[i], "tok_s",
                                             r->parallel_tok_s[i]));
    doc = json_pack("{s:s, s:i, s:i, s:i, s:I, s:I, s:{s:i, s:f, s:f, s:f}, s:{s:i, s:f, s:f, s:f, "
                    "s:f}, s:o*}",
                    "model", cfg->model_path, "threads", cfg->n_threads, "gpu_layers",
                    cfg->n_gpu_layers, "slots", (int)slots_of(cfg), "n_params",
                    (json_int_t)r->n_params, "size_bytes", (json_int_t)r->size_bytes, "pp", "n",
                    (int)cfg->n_pp, "ours", r->pp_ours, "llama", r->pp_llama, "ratio",
                    ratio(r->pp_ours, r->pp_llama), "tg", "n", (int)cfg->n_tg, "ours", r->tg_ours,
                    "llama", r->tg_llama, "ratio", ratio(r->tg_ours, r->tg_llama), "overhead_us",
                    overhead_us(r), "parallel", par);
    if (doc == NULL)
        return 1;
    s = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    json_decref(doc);
    if (s == NULL)
        return 1;
    puts(s);
    free(s);
    return 0;
}

static void print_table(const struct dc_bench_config *cfg, const struct dc_bench_result *r)
{
    printf("model    %s (%.1fM params, %.1f MiB)\n", cfg->model_path, (double)r->n_params / 1e6,
           (double)r->size_bytes / (double)(1u << 20));
    printf("threads  %d, gpu layers %d, engine slots %u\n\n", cfg->n_threads, cfg->n_gpu_layers,
           slots_of(cfg));
    printf("%-10s %14s %16s %8s\n", "test", "ours tok/s", "llama.cpp tok/s", "ratio");
    printf("pp%-8u %14.1f %16.1f %8.3f\n", cfg->n_pp, r->pp_ours, r->pp_llama,
           ratio(r->pp_ours, r->pp_llama));
    printf("tg%-8u %14.1f %16.1f %8.3f\n", cfg->n_tg, r->tg_ours, r->tg_llama,
           ratio(r->tg_ours, r->tg_llama));
    if (r->tg_ours > 0 && r->tg_llama > 0)
        printf("engine overhead per generated token: %.1f us\n", overhead_us(r));
    if (cfg->n_parallel > 0) {
        printf("\n%-10s %14s   (aggregate, tg%u per stream)\n", "streams", "tok/s", cfg->n_tg);
        for (size_t i = 0; i < cfg->n_parallel; i++)
            printf("%-10u %14.1f\n", cfg->parallel[i], r->parallel_tok_s[i]);
    }
}

int cli_cmd_benchmark(int argc, char **argv)
{
    bool json = false;
    const char *model = NULL, *threads = NULL, *pp = NULL, *tg = NULL, *parallel = NULL,
               *reps = NULL, *slots = NULL, *gpu_layers = NULL;
    const struct cli_opt opts[] = {
        {"model", 'm', CLI_VALUE, "FILE", "GGUF model file", NULL, &model},
        {"threads", 't', CLI_VALUE, "N", "compute threads (default: [engine] threads)", NULL,
         &threads},
        {"pp", 0, CLI_VALUE, "N", "prompt tokens (default 128)", NULL, &pp},
        {"tg", 0, CLI_VALUE, "N", "generated tokens (default 64)", NULL, &tg},
        {"parallel", 0, CLI_VALUE, "LIST", "concurrent streams, e.g. 1,4,16 (default 1,4)", NULL,
         &parallel},
        {"slots", 0, CLI_VALUE, "N",
         "engine slots (n_parallel; default the largest --parallel entry)", NULL, &slots},
        {"reps", 0, CLI_VALUE, "N", "repetitions per test (default 3)", NULL, &reps},
        {"gpu-layers", 0, CLI_VALUE, "N",
         "layers on the GPU in GPU builds, both sides (-1 = all that fit, 0 = CPU; default "
         "[engine].gpu_layers)",
         NULL, &gpu_layers},
        {"json", 0, CLI_BOOL, NULL, "one JSON object instead of a table", &json, NULL},
    };
    struct cli_ctx ctx = {.cmd = "benchmark",
                          .usage = "benchmark engine --model FILE [--threads N] [--pp N] "
                                   "[--tg N] [--parallel 1,4,16] [--slots N] [--reps N]\n"
                                   "       [--gpu-layers N] [--json]",
                          .summary = "Measures prompt (pp) and generation (tg) tokens/s through "
                                     "the engine and through\nllama.cpp's bare decode loop, and "
                                     "aggregate tokens/s with N concurrent streams.",
                          .opts = opts,
                          .n_opts = DC_ARRAY_LEN(opts)};
    struct dc_bench_config bc = {.n_pp = 128, .n_tg = 64, .reps = 3};
    struct dc_bench_result res = {0};
    struct dc_config cfg;
    struct dc_gguf *g;
    uint32_t n = 0;
    char *err = NULL;
    bool done;
    int rc;

    rc = cli_parse(&ctx, argc, argv, 1, &done);
    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos == 0)
        return cli_usage_error(&ctx, "missing subcommand");
    if (strcmp(ctx.pos[0], "engine") != 0)
        return cli_usage_error(&ctx, "unknown subcommand '%s'", ctx.pos[0]);
    if (model == NULL)
        return cli_usage_error(&ctx, "--model FILE is required");
    if (pp != NULL && !parse_u32(pp, 0, 65536, &bc.n_pp))
        return cli_usage_error(&ctx, "--pp: not a number in [0, 65536]: '%s'", pp);
    if (tg != NULL && !parse_u32(tg, 2, 65536, &bc.n_tg))
        return cli_usage_error(&ctx, "--tg: not a number in [2, 65536]: '%s'", tg);
    if (reps != NULL && !parse_u32(reps, 1, 1000, &bc.reps))
        return cli_usage_error(&ctx, "--reps: not a number in [1, 1000]: '%s'", reps);
    if (!parse_list(parallel ? parallel : "1,4", &bc))
        return cli_usage_error(&ctx, "--parallel: a list of stream counts in [1, 256] "
                                     "(at most 16), e.g. 1,4,16");
    if (slots != NULL && !parse_u32(slots, 1, 256, &bc.n_slots))
        return cli_usage_error(&ctx, "--slots: not a number in [1, 256]: '%s'", slots);
    if (threads != NULL && !parse_u32(threads, 1, 1024, &n))
        return cli_usage_error(&ctx, "--threads: not a number in [1, 1024]: '%s'", threads);
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0)
        return rc;
    bc.n_threads = threads != NULL ? (int)n : (int)cfg.threads;
    if (bc.n_threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        bc.n_threads = cpus > 0 ? (int)cpus : 1;
    }
    bc.n_gpu_layers = (int)cfg.gpu_layers;
    if (gpu_layers != NULL) {
        char *end;
        long v;
        errno = 0;
        v = strtol(gpu_layers, &end, 10);
        if (errno != 0 || end == gpu_layers || *end != '\0' || v < -1 || v > 100000) {
            dc_config_cleanup(&cfg);
            return cli_usage_error(&ctx, "--gpu-layers: not a number in [-1, 100000]: '%s'",
                                   gpu_layers);
        }
        bc.n_gpu_layers = (int)v;
    }
    bc.model_path = model;

    /* A hostile file must be a clean error here too, before llama.cpp sees it. */
    rc = dc_gguf_open(model, &g);
    if (rc < 0) {
        fprintf(stderr, "democritus %s: %s: %s\n", ctx.cmd, model,
                rc == DC_ECORRUPT ? dc_gguf_error() : dc_strerror(rc));
        rc = 1;
        goto out;
    }
    dc_gguf_close(g);
    if (!json)
        fprintf(stderr, "benchmarking %s with %d threads...\n", model, bc.n_threads);
    rc = dc_bench_llama(&bc, &res, &err);
    if (rc == 0)
        rc = dc_bench_engine(&bc, &res, &err);
    if (rc < 0) {
        fprintf(stderr, "democritus %s: %s\n", ctx.cmd, err ? err : dc_strerror(rc));
        dc_free(err);
        rc = 1;
        goto out;
    }
    rc = json ? print_json(&bc, &res) : (print_table(&bc, &res), 0);
out:
    dc_config_cleanup(&cfg);
    return rc;
}

/* SPDX-License-Identifier: MIT */
/*
 * engine.c - engine speed on generated models: for each model size, quantization and thread
 * count, prompt (pp) and generation (tg) tokens/s through our engine and through llama.cpp's
 * bare decode loop (src/model/bench.c, the same code as `democritus benchmark engine`), their
 * ratio, the engine's overhead per generated token in microseconds, and aggregate tokens/s
 * with N concurrent streams. Models come from gguf-gen (random weights, real shapes) and are
 * kept in --dir between runs (same arguments, same bytes).
 *
 * Usage: engine [--sizes 100m,600m] [--types q8_0,q4_0,q4_k_m] [--threads 1,2] [--pp 128]
 *               [--tg 64] [--reps 2] [--parallel 1,4] [--slots N] [--dir /tmp/dc-bench-models]
 * Sizes: tiny (~3M), 25m, 100m, 600m. The 600M models take minutes on two cores; choose.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "model/bench.h"
#include "models.h"

/* Splits a comma list in place into at most 'max' items. */
static size_t split(char *s, char **items, size_t max)
{
    size_t n = 0;
    char *save = NULL;

    for (char *t = strtok_r(s, ",", &save); t != NULL && n < max; t = strtok_r(NULL, ",", &save))
        items[n++] = t;
    return n;
}

int main(int argc, char **argv)
{
    char sizes_s[128] = "100m,600m", types_s[128] = "q8_0,q4_0,q4_k_m", threads_s[64] = "1,2";
    char par_s[64] = "1,4";
    const char *dir = "/tmp/dc-bench-models";
    char *sizes[8], *types[8], *threads[8], *pars[DC_BENCH_MAX_PARALLEL];
    size_t n_sizes, n_types, n_threads, n_pars;
    struct dc_bench_config base = {.n_pp = 128, .n_tg = 64, .reps = 2};

    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--sizes") == 0)
            snprintf(sizes_s, sizeof(sizes_s), "%s", v);
        else if (strcmp(k, "--types") == 0)
            snprintf(types_s, sizeof(types_s), "%s", v);
        else if (strcmp(k, "--threads") == 0)
            snprintf(threads_s, sizeof(threads_s), "%s", v);
        else if (strcmp(k, "--parallel") == 0)
            snprintf(par_s, sizeof(par_s), "%s", v);
        else if (strcmp(k, "--pp") == 0)
            base.n_pp = (uint32_t)atoi(v);
        else if (strcmp(k, "--tg") == 0)
            base.n_tg = (uint32_t)atoi(v);
        else if (strcmp(k, "--slots") == 0)
            base.n_slots = (uint32_t)atoi(v);
        else if (strcmp(k, "--reps") == 0)
            base.reps = (uint32_t)atoi(v);
        else if (strcmp(k, "--dir") == 0)
            dir = v;
        else {
            fprintf(stderr, "usage: engine [--sizes tiny,25m,100m,600m] [--types q8_0,...] "
                            "[--threads 1,2] [--pp N] [--tg N] [--reps N] [--parallel 1,4] "
                            "[--slots N] [--dir DIR]\n");
            return 2;
        }
    }
    if (base.n_tg < 2)
        base.n_tg = 2;
    n_sizes = split(sizes_s, sizes, 8);
    n_types = split(types_s, types, 8);
    n_threads = split(threads_s, threads, 8);
    n_pars = split(par_s, pars, DC_BENCH_MAX_PARALLEL);
    for (size_t i = 0; i < n_pars; i++)
        base.parallel[i] = (uint32_t)atoi(pars[i]);
    base.n_parallel = n_pars;
    if (mkdir(dir, 0755) != 0 && access(dir, W_OK) != 0) {
        perror(dir);
        return 1;
    }

    printf("engine benchmark: pp%u, tg%u, %u reps; ours = dc_engine_*, llama = bare "
           "llama_decode loop\n\n",
           base.n_pp, base.n_tg, base.reps);
    printf("%-6s %-7s %3s %8s | %9s %9s %6s | %8s %8s %6s %9s |", "size", "type", "thr", "params",
           "pp ours", "pp llama", "ratio", "tg ours", "tg llama", "ratio", "ovh us/t");
    for (size_t i = 0; i < n_pars; i++)
        printf(" par%-3u", base.parallel[i]);
    printf("\n");
    fflush(stdout);

    for (size_t s = 0; s < n_sizes; s++) {
        const struct size_preset *p = NULL;
        for (size_t k = 0; k < DC_ARRAY_LEN(presets); k++) {
            if (strcmp(presets[k].name, sizes[s]) == 0)
                p = &presets[k];
        }
        if (p == NULL) {
            fprintf(stderr, "unknown size '%s' (tiny, 25m, 100m, 600m)\n", sizes[s]);
            return 2;
        }
        for (size_t t = 0; t < n_types; t++) {
            char *path = dc_asprintf("%s/llama-%s-%s.gguf", dir, p->name, types[t]);
            struct stat st;

            if (path == NULL)
                return 1;
            if (stat(path, &st) != 0) {
                fprintf(stderr, "generating %s ...\n", path);
                if (gen_model(p, types[t], path) != 0) {
                    fprintf(stderr, "gguf-gen failed for %s\n", path);
                    dc_free(path);
                    return 1;
                }
            }
            for (size_t th = 0; th < n_threads; th++) {
                struct dc_bench_config cfg = base;
                struct dc_bench_result r = {0};
                char *err = NULL;
                int rc;

                cfg.model_path = path;
                cfg.n_threads = atoi(threads[th]);
                rc = dc_bench_llama(&cfg, &r, &err);
                if (rc == 0)
                    rc = dc_bench_engine(&cfg, &r, &err);
                if (rc < 0) {
                    fprintf(stderr, "%s: %s\n", path, err ? err : dc_strerror(rc));
                    dc_free(err);
                    continue;
                }
                printf("%-6s %-7s %3d %7.1fM | %9.1f %9.1f %6.3f | %8.1f %8.1f %6.3f %9.1f |",
                       p->name, types[t], cfg.n_threads, (double)r.n_params / 1e6, r.pp_ours,
                       r.pp_llama, r.pp_llama > 0 ? r.pp_ours / r.pp_llama : 0, r.tg_ours,
                       r.tg_llama, r.tg_llama > 0 ? r.tg_ours / r.tg_llama : 0,
                       r.tg_ours > 0 && r.tg_llama > 0 ? 1e6 / r.tg_ours - 1e6 / r.tg_llama : 0);
                for (size_t i = 0; i < n_pars; i++)
                    printf(" %6.1f", r.parallel_tok_s[i]);
                printf("\n");
                fflush(stdout);
            }
            dc_free(path);
        }
    }
    return 0;
}

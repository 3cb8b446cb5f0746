/* SPDX-License-Identifier: MIT */
/*
 * bench_engine.c - the engine benchmark of `democritus benchmark engine` (src/model/bench.c)
 * without the CLI around it, for the stand-alone GPU check (tests/gpu/CMakeLists.txt):
 *
 *   bench_engine MODEL THREADS GPU_LAYERS PARALLEL_LIST [SLOTS]
 *
 * prints one JSON object: pp/tg tokens/s through our engine and llama.cpp's bare loop, their
 * ratio, the engine's extra time per generated token, and aggregate tokens/s per stream count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/bench.h"

int main(int argc, char **argv)
{
    struct dc_bench_config bc = {.n_pp = 128, .n_tg = 64, .reps = 3};
    struct dc_bench_result r = {0};
    char *err = NULL, *list, *tok, *save = NULL;
    int rc;

    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL THREADS GPU_LAYERS PARALLEL_LIST [SLOTS]\n", argv[0]);
        return 2;
    }
    bc.model_path = argv[1];
    bc.n_threads = atoi(argv[2]);
    bc.n_gpu_layers = atoi(argv[3]);
    list = argv[4];
    for (tok = strtok_r(list, ",", &save); tok != NULL && bc.n_parallel < DC_BENCH_MAX_PARALLEL;
         tok = strtok_r(NULL, ",", &save))
        bc.parallel[bc.n_parallel++] = (uint32_t)atoi(tok);
    if (argc > 5)
        bc.n_slots = (uint32_t)atoi(argv[5]);
    rc = dc_bench_llama(&bc, &r, &err);
    if (rc == 0)
        rc = dc_bench_engine(&bc, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "bench_engine: %s\n", err != NULL ? err : dc_strerror(rc));
        dc_free(err);
        return 1;
    }
    printf(
        "{\"model\":\"%s\",\"threads\":%d,\"gpu_layers\":%d,\"n_params\":%llu,"
        "\"pp\":{\"ours\":%.1f,\"llama\":%.1f,\"ratio\":%.3f},"
        "\"tg\":{\"ours\":%.1f,\"llama\":%.1f,\"ratio\":%.3f,\"overhead_us\":%.1f},\"parallel\":[",
        bc.model_path, bc.n_threads, bc.n_gpu_layers, (unsigned long long)r.n_params, r.pp_ours,
        r.pp_llama, r.pp_llama > 0 ? r.pp_ours / r.pp_llama : 0, r.tg_ours, r.tg_llama,
        r.tg_llama > 0 ? r.tg_ours / r.tg_llama : 0,
        r.tg_ours > 0 && r.tg_llama > 0 ? 1e6 / r.tg_ours - 1e6 / r.tg_llama : 0);
    for (size_t i = 0; i < bc.n_parallel; i++)
        printf("%s{\"n\":%u,\"tok_s\":%.1f}", i ? "," : "", bc.parallel[i], r.parallel_tok_s[i]);
    printf("]}\n");
    return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * bench.h - engine benchmarks shared by `democritus benchmark engine` and bench/engine: the
 * same prompt-processing (pp) and text-generation (tg) measurements run twice, once through
 * our engine (dc_engine_*: queue, scheduler, sampling, streaming) and once as llama.cpp's bare
 * decode loop in the style of llama-bench (random tokens into an empty context, no sampling),
 * so the ratio is the serving layer's cost. Plus aggregate generation speed with N concurrent
 * streams through the engine (continuous batching).
 */
#ifndef DC_BENCH_H
#define DC_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define DC_BENCH_MAX_PARALLEL 16 /* entries in dc_bench_config.parallel */

struct dc_bench_config {
    const char *model_path; /* borrowed */
    int n_threads;          /* compute threads; 0 = llama.cpp's default */
    uint32_t n_pp;          /* prompt tokens (pp test); 0 = skip pp */
    uint32_t n_tg;          /* generated tokens (tg test and each parallel stream) */
    uint32_t reps;          /* repetitions; the result is their median; 0 = 3 */
    uint32_t parallel[DC_BENCH_MAX_PARALLEL]; /* stream counts for the aggregate test */
    size_t n_parallel;
    uint32_t n_slots; /* engine slots (n_parallel of dc_engine_open); 0 = max(parallel) */
    int n_gpu_layers; /* layers offloaded in GPU builds (-1 = all that fit, 0 = CPU); both sides */
};

struct dc_bench_result {
    double pp_ours, pp_llama;                     /* prompt tokens per second */
    double tg_ours, tg_llama;                     /* generated tokens per second, one stream */
    double parallel_tok_s[DC_BENCH_MAX_PARALLEL]; /* aggregate, per cfg.parallel entry */
    uint64_t n_params, size_bytes;
};

/*
 * llama.cpp alone: probes the file in a child process first (a file llama.cpp aborts on is
 * DC_EUNSUPPORTED, not a crash; call this while the process is single-threaded), then, on a
 * thread of its own that is joined before this returns (so its OpenMP team does not outlive it
 * and slow the engine's, bench.c), loads the model, then per repetition clears the KV cache and
 * decodes n_pp random tokens in one batch (pp), clears it again and decodes n_tg random tokens one
 * at a time (tg), after one warm-up of each. Fills pp_llama, tg_llama, n_params, size_bytes.
 * Returns 0, DC_EUNSUPPORTED when llama.cpp cannot load it or decode fails, with '*err' (heap) one
 * line.
 */
DC_MUST_CHECK int dc_bench_llama(const struct dc_bench_config *cfg, struct dc_bench_result *out,
                                 char **err);

/*
 * The same through dc_engine_*: pp from a request's prompt time (distinct random prompts, so
 * no prefix reuse), tg from its generation time (ignore_eos, greedy), and for each parallel
 * entry N the aggregate tokens/s of N concurrent requests of n_tg tokens each (the engine opens
 * with n_slots slots, default max(parallel); entries above n_slots queue). Fills pp_ours, tg_ours,
 * parallel_tok_s. Errors as dc_engine_open and dc_engine_submit, with '*err' (heap) one line.
 */
DC_MUST_CHECK int dc_bench_engine(const struct dc_bench_config *cfg, struct dc_bench_result *out,
                                  char **err);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * models.h - the gguf-gen model shapes the engine benchmarks share (bench/engine.c,
 * bench/cancel.c), so both use and reuse the same generated files, and the one way they run
 * gguf-gen (DC_GGUF_GEN, set by bench/CMakeLists.txt).
 */
#ifndef DC_BENCH_MODELS_H
#define DC_BENCH_MODELS_H

#include <sys/wait.h>
#include <unistd.h>

struct size_preset {
    const char *name;
    const char *dim, *layers, *heads, *kv_heads, *ff, *vocab;
};

/* Llama shapes; params = 2*dim*vocab + layers*(2*dim^2 + 2*dim*kv_dim + 3*dim*ff). */
static const struct size_preset presets[] = {
    {"tiny", "256", "4", "4", "4", "768", "4000"},
    {"25m", "512", "6", "8", "8", "1536", "8000"},
    {"100m", "768", "12", "12", "12", "2048", "8000"},
    {"600m", "1536", "23", "12", "4", "4096", "8000"},
};

static inline int gen_model(const struct size_preset *p, const char *type, const char *out)
{
    const char *argv[] = {DC_GGUF_GEN, "--arch",  "llama",  "--dim",      p->dim,      "--layers",
                          p->layers,   "--heads", p->heads, "--kv-heads", p->kv_heads, "--ff",
                          p->ff,       "--vocab", p->vocab, "--ctx",      "2048",      "--type",
                          type,        "--seed",  "1",      "-o",         out,         NULL};
    int status;
    pid_t pid = fork();

    if (pid < 0)
        return -1;
    if (pid == 0) {
        execv(DC_GGUF_GEN, (char *const *)argv);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

#endif

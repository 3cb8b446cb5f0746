/* SPDX-License-Identifier: MIT */
/*
 * cancel.c - how fast a cancelled generation gives its slot back under load: the time from
 * dc_gen_cancel() to the request's DONE (the engine frees the slot and its KV, and updates
 * 'active', just before it delivers DONE), p50/p90/p99/max over many cancels.
 *
 * The load: every slot but one prefills long random prompts (no prefix reuse, so every
 * request is a full prefill) and generates a few tokens, resubmitted as soon as they end, so
 * most steps carry big prompt chunks. The victim in the last slot generates; after its first
 * token and a random 5-80 ms it is cancelled. Also reports the prompt and generated tokens/s
 * of the whole run, so a smaller step (more steps for the same prompt) shows as lost throughput.
 *
 * Usage: cancel [--size tiny|25m|100m] [--type q8_0] [--threads 2] [--slots 4] [--prompt 1024]
 *               [--cancels 40] [--budget-ms N] [--no-abort 0|1] [--dir /tmp/dc-bench-models]
 * --no-abort 1 plays a backend that cannot stop a decode (GPU): then the step budget is what
 * bounds the wait.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "model/engine_int.h"
#include "models.h"

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One request's progress, written by the scheduler thread's callback. */
struct track {
    pthread_mutex_t mu;
    struct dc_gen *g;
    uint32_t n_tok;
    bool done;
    double t_done;
    enum dc_gen_finish finish;
};

static void track_cb(void *ud, const struct dc_gen_event *ev)
{
    struct track *t = ud;

    pthread_mutex_lock(&t->mu);
    if (ev->type == DC_GEN_EV_TOKEN) {
        t->n_tok++;
    } else {
        t->done = true;
        t->t_done = now_ms();
        t->finish = ev->finish;
    }
    pthread_mutex_unlock(&t->mu);
}

static int submit(struct dc_engine *e, struct track *t, int32_t *ids, size_t n, int32_t max_tok,
                  uint32_t n_vocab, unsigned *seed)
{
    struct dc_gen_request r;

    memset(&r, 0, sizeof(r));
    dc_sampling_defaults(&r.sampling);
    r.sampling.temperature = 0.0f;
    for (size_t i = 0; i < n; i++)
        ids[i] = 3 + (int32_t)((unsigned)rand_r(seed) % (n_vocab - 3));
    r.prompt_ids = ids;
    r.n_prompt_ids = n;
    r.max_tokens = max_tok;
    r.ignore_eos = true;
    pthread_mutex_lock(&t->mu);
    t->n_tok = 0;
    t->done = false;
    pthread_mutex_unlock(&t->mu);
    return dc_engine_submit(e, &r, track_cb, t, &t->g);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);

    return v[i < n ? i : n - 1];
}

int main(int argc, char **argv)
{
    const char *size = "25m", *type = "q8_0", *dir = "/tmp/dc-bench-models";
    uint32_t n_slots = 4, n_prompt = 1024, n_cancels = 40, budget_ms = 0;
    int n_threads = 2;
    bool no_abort = false;
    const struct size_preset *p = NULL;
    struct dc_engine_config cfg = {0};
    struct dc_engine_stats st0, st1;
    struct dc_engine_step_stats ss;
    struct dc_engine *e = NULL;
    struct track *tr;
    int32_t **ids;
    double *lat, t_start, t_end;
    unsigned seed = 12345;
    uint32_t n_lat = 0, n_vocab;
    char *path, *err = NULL;
    struct stat sb;
    int rc;

    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--size") == 0)
            size = v;
        else if (strcmp(k, "--type") == 0)
            type = v;
        else if (strcmp(k, "--threads") == 0)
            n_threads = atoi(v);
        else if (strcmp(k, "--slots") == 0)
            n_slots = (uint32_t)atoi(v);
        else if (strcmp(k, "--prompt") == 0)
            n_prompt = (uint32_t)atoi(v);
        else if (strcmp(k, "--cancels") == 0)
            n_cancels = (uint32_t)atoi(v);
        else if (strcmp(k, "--budget-ms") == 0)
            budget_ms = (uint32_t)atoi(v);
        else if (strcmp(k, "--dir") == 0)
            dir = v;
        else if (strcmp(k, "--no-abort") == 0)
            no_abort = atoi(v) != 0;
        else {
            fprintf(stderr, "usage: cancel [--size tiny|25m|100m] [--type q8_0] [--threads N] "
                            "[--slots N] [--prompt N] [--cancels N] [--budget-ms N] "
                            "[--no-abort 0|1] [--dir DIR]\n");
            return 2;
        }
    }
    for (size_t k = 0; k < DC_ARRAY_LEN(presets); k++) {
        if (strcmp(presets[k].name, size) == 0)
            p = &presets[k];
    }
    if (p == NULL || n_slots < 2 || n_prompt < 2 || n_prompt > 2000 || n_cancels == 0) {
        fprintf(stderr, "bad arguments (size tiny|25m|100m, slots >= 2, prompt 2..2000)\n");
        return 2;
    }
    if (mkdir(dir, 0755) != 0 && access(dir, W_OK) != 0) {
        perror(dir);
        return 1;
    }
    path = dc_asprintf("%s/llama-%s-%s.gguf", dir, p->name, type);
    if (path == NULL)
        return 1;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "generating %s ...\n", path);
        if (gen_model(p, type, path) != 0) {
            fprintf(stderr, "gguf-gen failed for %s\n", path);
            return 1;
        }
    }
    cfg.model_path = path;
    cfg.n_ctx_per_slot = 2048;
    cfg.n_parallel = n_slots;
    cfg.n_threads = n_threads;
    cfg.step_budget_ms = budget_ms;
    rc = dc_engine_open(&cfg, &e, &err);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", path, err != NULL ? err : dc_strerror(rc));
        return 1;
    }
    if (no_abort)
        dc_engine_test_no_abort(e);
    n_vocab = dc_engine_info(e)->n_vocab;
    tr = calloc(n_slots, sizeof(*tr));
    ids = calloc(n_slots, sizeof(*ids));
    lat = calloc(n_cancels, sizeof(*lat));
    if (tr == NULL || ids == NULL || lat == NULL)
        return 1;
    for (uint32_t i = 0; i < n_slots; i++) {
        pthread_mutex_init(&tr[i].mu, NULL);
        ids[i] = calloc(n_prompt, sizeof(int32_t));
        if (ids[i] == NULL)
            return 1;
    }

    /* Slots 0..n-2: the load. Slot n-1: the victim. */
    dc_engine_stats(e, &st0);
    t_start = now_ms();
    for (uint32_t i = 0; i + 1 < n_slots; i++) {
        if (submit(e, &tr[i], ids[i], n_prompt, 8, n_vocab, &seed) < 0)
            return 1;
    }
    while (n_lat < n_cancels) {
        struct track *v = &tr[n_slots - 1];
        double t_cancel, wait_ms;
        bool done;

        if (submit(e, v, ids[n_slots - 1], 16, 0, n_vocab, &seed) < 0)
            return 1;
        /* Until its first token (it is generating), then a random while. */
        for (;;) {
            pthread_mutex_lock(&v->mu);
            done = v->n_tok > 0 || v->done;
            pthread_mutex_unlock(&v->mu);
            if (done)
                break;
            usleep(500);
        }
        wait_ms = 5.0 + (double)(rand_r(&seed) % 76);
        for (double t0 = now_ms(); now_ms() - t0 < wait_ms;) {
            usleep(500);
            /* Keep the load going meanwhile. */
            for (uint32_t i = 0; i + 1 < n_slots; i++) {
                pthread_mutex_lock(&tr[i].mu);
                done = tr[i].done;
                pthread_mutex_unlock(&tr[i].mu);
                if (done) {
                    dc_gen_release(tr[i].g);
                    if (submit(e, &tr[i], ids[i], n_prompt, 8, n_vocab, &seed) < 0)
                        return 1;
                }
            }
        }
        t_cancel = now_ms();
        dc_gen_cancel(v->g);
        for (;;) {
            pthread_mutex_lock(&v->mu);
            done = v->done;
            pthread_mutex_unlock(&v->mu);
            if (done)
                break;
            usleep(100);
        }
        if (v->finish == DC_GEN_FINISH_CANCELLED)
            lat[n_lat++] = v->t_done - t_cancel;
        dc_gen_release(v->g);
    }
    t_end = now_ms();
    dc_engine_stats(e, &st1);
    dc_engine_step_stats(e, &ss);
    for (uint32_t i = 0; i + 1 < n_slots; i++)
        dc_gen_cancel(tr[i].g);
    dc_engine_close(e);
    for (uint32_t i = 0; i + 1 < n_slots; i++)
        dc_gen_release(tr[i].g);

    qsort(lat, n_lat, sizeof(*lat), cmp_double);
    printf(
        "cancel -> DONE (slot free), %s %s, %d threads, %u slots (%u loading with %u-token "
        "prompts), step budget %u ms (0 = default)%s: n=%u p50 %.1f p90 %.1f p99 %.1f max %.1f ms; "
        "throughput: prompt %.0f tok/s, generated %.0f tok/s\n",
        p->name, type, n_threads, n_slots, n_slots - 1, n_prompt, budget_ms,
        no_abort ? ", decodes never stopped" : "", n_lat, pct(lat, n_lat, 0.5),
        pct(lat, n_lat, 0.9), pct(lat, n_lat, 0.99), lat[n_lat - 1],
        (double)(st1.tokens_prompt - st0.tokens_prompt) / ((t_end - t_start) / 1e3),
        (double)(st1.tokens_generated - st0.tokens_generated) / ((t_end - t_start) / 1e3));
    printf("steps %llu, budgeted %llu (over 2x budget: %llu, longest %.1f ms), cost %.3f ms/token, "
           "aborted decodes %llu, queued cancels ended mid-decode %llu\n",
           (unsigned long long)ss.steps, (unsigned long long)ss.budgeted,
           (unsigned long long)ss.budgeted_over, ss.budgeted_ms_max, ss.ms_per_token,
           (unsigned long long)ss.aborted, (unsigned long long)ss.queue_reaped);
    for (uint32_t i = 0; i < n_slots; i++)
        free(ids[i]);
    free(ids);
    free(tr);
    free(lat);
    dc_free(path);
    return 0;
}

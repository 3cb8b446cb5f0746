/* SPDX-License-Identifier: MIT */
/*
 * route.c - bench/route: the cost of routing a prompt with route.h's model-free embedder.
 *
 * It builds N synthetic expert records (10,000 by default): each description is 12-40 words
 * drawn from a fixed word list with a deterministic generator, embedded, quantized and
 * LSH-keyed exactly as dc_expert_embed() does, with a random load. Then, for Q prompts of 200
 * words (1,000 by default), it times
 *   - dc_embed_text() of the prompt alone,
 *   - the prompt's embedding plus dc_expert_rank() over all N records, keeping the top 3
 *     (what a node does with every record it knows when no LSH pre-selection is used),
 * and prints p50/p99/mean per call. Two routing figures come with them: how many records share
 * at least one LSH band with the prompt (what a band lookup would return) and how often the
 * best-ranked record is among those.
 *
 * Usage: route [--experts N] [--queries Q] [--words W] [--seed S]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "swarm/route.h"

#define TOP_K 3

static const char *const words[] = {
    "algebra",   "calculus",   "geometry",  "proof",      "theorem",    "equation",    "matrix",
    "integral",  "python",     "rust",      "javascript", "compiler",   "debugging",   "function",
    "database",  "query",      "network",   "kernel",     "poem",       "sonnet",      "story",
    "novel",     "lyrics",     "haiku",     "character",  "dialogue",   "medicine",    "symptom",
    "diagnosis", "treatment",  "dosage",    "disease",    "patient",    "clinical",    "law",
    "contract",  "court",      "liability", "statute",    "finance",    "market",      "stock",
    "portfolio", "interest",   "inflation", "chemistry",  "molecule",   "reaction",    "physics",
    "quantum",   "gravity",    "energy",    "biology",    "protein",    "genome",      "cell",
    "history",   "empire",     "war",       "revolution", "ancient",    "geography",   "climate",
    "weather",   "ocean",      "mountain",  "cooking",    "recipe",     "baking",      "flavor",
    "travel",    "hotel",      "flight",    "language",   "grammar",    "translate",   "french",
    "german",    "spanish",    "japanese",  "music",      "guitar",     "melody",      "rhythm",
    "painting",  "sculpture",  "design",    "typography", "marketing",  "brand",       "sales",
    "customer",  "support",    "email",     "summarize",  "explain",    "analyze",     "compare",
    "write",     "generate",   "review",    "optimize",   "security",   "encryption",  "password",
    "server",    "cloud",      "container", "deploy",     "testing",    "bug",         "error",
    "json",      "parse",      "regex",     "sql",        "linux",      "shell",       "script",
    "game",      "chess",      "strategy",  "sport",      "football",   "fitness",     "nutrition",
    "sleep",     "psychology", "emotion",   "education",  "teacher",    "student",     "exam",
    "essay",     "research",   "paper",     "citation",   "statistics", "probability", "data",
    "model",     "training",   "neural",    "learning",   "robot",      "sensor",      "circuit",
    "voltage",   "the",        "and",       "of",         "for",        "with",        "a",
};

static uint64_t rnd(uint64_t *s)
{
    /* splitmix64: reproducible from --seed */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 'n' random words separated by spaces (and now and then a comma) into out[0..cap). */
static size_t make_text(uint64_t *s, size_t n, char *out, size_t cap)
{
    size_t len = 0;

    for (size_t i = 0; i < n; i++) {
        const char *w = words[rnd(s) % DC_ARRAY_LEN(words)];
        size_t wl = strlen(w);

        if (len + wl + 2 >= cap)
            break;
        memcpy(out + len, w, wl);
        len += wl;
        out[len++] = (rnd(s) % 8 == 0) ? ',' : ' ';
    }
    out[len] = '\0';
    return len;
}

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

struct stats {
    double p50, p99, mean;
};

/* Sorts t[0..n). */
static struct stats summarize(double *t, size_t n)
{
    struct stats st = {0, 0, 0};

    if (n == 0)
        return st;
    qsort(t, n, sizeof(*t), cmp_double);
    for (size_t i = 0; i < n; i++)
        st.mean += t[i];
    st.mean /= (double)n;
    st.p50 = t[(n - 1) / 2];
    st.p99 = t[(size_t)ceil(0.99 * (double)n) - 1];
    return st;
}

static bool shares_band(uint64_t a, uint64_t b)
{
    for (unsigned i = 0; i < DC_LSH_BANDS; i++)
        if (dc_lsh_band(a, i) == dc_lsh_band(b, i))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    size_t n_experts = 10000, n_queries = 1000, n_words = 200;
    unsigned long long seed = 1;
    struct dc_expert *x;
    const struct dc_expert **cands;
    double *t_embed, *t_route, *t_rank, *t_desc;
    double cand_sum = 0, t0;
    size_t top1_found = 0, empty = 0;
    uint64_t s;
    char *text;
    const size_t text_cap = 64 * 1024;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--experts") == 0 && i + 1 < argc) {
            n_experts = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc) {
            n_queries = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--words") == 0 && i + 1 < argc) {
            n_words = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: route [--experts N] [--queries Q] [--words W] [--seed S]\n");
            return 2;
        }
    }
    if (n_experts == 0 || n_queries == 0 || n_words == 0 || n_words > 4000) {
        fprintf(stderr, "route: need --experts >= 1, --queries >= 1, 1 <= --words <= 4000\n");
        return 2;
    }
    x = calloc(n_experts, sizeof(*x));
    cands = calloc(n_experts, sizeof(*cands));
    t_desc = calloc(n_experts, sizeof(double));
    t_embed = calloc(n_queries, sizeof(double));
    t_route = calloc(n_queries, sizeof(double));
    t_rank = calloc(n_queries, sizeof(double));
    text = malloc(text_cap);
    if (x == NULL || cands == NULL || t_desc == NULL || t_embed == NULL || t_route == NULL ||
        t_rank == NULL || text == NULL) {
        fprintf(stderr, "route: out of memory\n");
        return 1;
    }

    /* The records, filled as dc_expert_embed() would (this bench does not need expert.c). */
    s = seed;
    for (size_t i = 0; i < n_experts; i++) {
        struct dc_expert *e = &x[i];
        float v[DC_EMBED_DIM];
        size_t len = make_text(&s, 12 + rnd(&s) % 29, e->description, sizeof(e->description));

        t0 = now_us();
        if (dc_embed_text(e->description, len, v) == 0)
            empty++;
        dc_embed_quantize(v, e->embedding);
        e->lsh = dc_lsh_key_q(e->embedding);
        t_desc[i] = now_us() - t0;
        strcpy(e->embedder, DC_EMBEDDER_ID);
        e->slots = 1 + (uint32_t)(rnd(&s) % 8);
        e->active = (uint32_t)(rnd(&s) % (e->slots + 1));
        e->queued = (uint32_t)(rnd(&s) % 4);
        cands[i] = e;
    }

    for (size_t q = 0; q < n_queries; q++) {
        float v[DC_EMBED_DIM];
        struct dc_expert_rank top[TOP_K];
        size_t len = make_text(&s, n_words, text, text_cap), n_top;
        uint64_t key;
        double t1, t2;

        /* (a) the embedding alone */
        t0 = now_us();
        (void)dc_embed_text(text, len, v);
        t_embed[q] = now_us() - t0;

        /* (b) embedding + ranking every record (the embedding is recomputed on purpose) */
        t1 = now_us();
        (void)dc_embed_text(text, len, v);
        t2 = now_us();
        n_top = dc_expert_rank(v, cands, n_experts, NULL, top, TOP_K);
        t_route[q] = now_us() - t1;
        t_rank[q] = now_us() - t2;

        /* What an LSH band lookup would have found. */
        key = dc_lsh_key(v);
        for (size_t i = 0; i < n_experts; i++)
            cand_sum += shares_band(key, x[i].lsh);
        if (n_top > 0 && shares_band(key, x[top[0].index].lsh))
            top1_found++;
    }

    {
        struct stats d = summarize(t_desc, n_experts), e = summarize(t_embed, n_queries);
        struct stats r = summarize(t_route, n_queries), k = summarize(t_rank, n_queries);
        char label[64];

        printf("bench/route: embedder %s (dim %u), %zu expert records, %zu queries of %zu words, "
               "top %d, seed %llu\n",
               DC_EMBEDDER_ID, DC_EMBED_DIM, n_experts, n_queries, n_words, TOP_K, seed);
        printf("%-44s %8s %10s %10s %10s\n", "operation", "calls", "p50 us", "p99 us", "mean us");
        printf("%-44s %8zu %10.1f %10.1f %10.1f\n", "embed+quantize+lsh of a description (setup)",
               n_experts, d.p50, d.p99, d.mean);
        snprintf(label, sizeof(label), "dc_embed_text, %zu-word prompt", n_words);
        printf("%-44s %8zu %10.1f %10.1f %10.1f\n", label, n_queries, e.p50, e.p99, e.mean);
        printf("%-44s %8zu %10.1f %10.1f %10.1f\n", "embed prompt + dc_expert_rank (per query)",
               n_queries, r.p50, r.p99, r.mean);
        printf("%-44s %8zu %10.1f %10.1f %10.1f\n", "  of which dc_expert_rank", n_queries, k.p50,
               k.p99, k.mean);
        printf("prompt embedding throughput: %.0f prompts/s (mean)\n", 1e6 / e.mean);
        printf("LSH (%u bands of %u bits): a band lookup returns %.1f%% of the records on "
               "average; the top-ranked record is among them for %.1f%% of queries\n",
               DC_LSH_BANDS, DC_LSH_BAND_BITS, 100.0 * cand_sum / (double)n_queries / n_experts,
               100.0 * (double)top1_found / (double)n_queries);
        if (empty > 0)
            printf("note: %zu descriptions gave no features\n", empty);
    }
    free(text);
    free(t_rank);
    free(t_route);
    free(t_embed);
    free(t_desc);
    free(cands);
    free(x);
    return 0;
}

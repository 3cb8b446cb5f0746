/* SPDX-License-Identifier: MIT */
/*
 * rank.c - dc_expert_rank (route.h part 4): which of the experts a lookup found should answer
 * a prompt, best first.
 *
 * The order is a total order (score, then similarity, then index: no two candidates compare
 * equal), so the result does not depend on the selection algorithm and is the same on every
 * run and every node. Selection keeps the best 'max' in a heap built inside out[] itself -
 * O(n log max) time and no allocation, so ranking cannot fail - and finally heap-sorts them.
 */
#include "swarm/route.h"

#include <string.h>

/* True when 'a' ranks before 'b'. */
static bool rank_better(const struct dc_expert_rank *a, const struct dc_expert_rank *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    if (a->similarity != b->similarity)
        return a->similarity > b->similarity;
    return a->index < b->index;
}

/* Restores the heap below 'i' in h[0..n), where each parent ranks after its children (the
 * root is the worst kept so far, the one a better candidate replaces). */
static void heap_sift_down(struct dc_expert_rank *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, worst = i;
        struct dc_expert_rank t;

        if (l < n && rank_better(&h[worst], &h[l]))
            worst = l;
        if (r < n && rank_better(&h[worst], &h[r]))
            worst = r;
        if (worst == i)
            return;
        t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

static void heap_sift_up(struct dc_expert_rank *h, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        struct dc_expert_rank t;

        if (!rank_better(&h[parent], &h[i]))
            return;
        t = h[i];
        h[i] = h[parent];
        h[parent] = t;
        i = parent;
    }
}

static bool is_our_embedder(const struct dc_expert *x)
{
    /* Bounded: a caller-filled record need not be NUL-terminated. */
    return memchr(x->embedder, '\0', sizeof(x->embedder)) != NULL &&
           strcmp(x->embedder, DC_EMBEDDER_ID) == 0;
}

/* The load factor of route.h: 1 at idle, falling towards 0.5 as the queue grows. Summed in
 * double so that active + queued cannot wrap. */
static double load_factor(const struct dc_expert *x)
{
    double busy = (double)x->active + (double)x->queued;
    double slots = x->slots > 0 ? (double)x->slots : 1.0;

    return 1.0 / (1.0 + busy / slots) / 2.0 + 0.5;
}

size_t dc_expert_rank(const float q[DC_EMBED_DIM], const struct dc_expert *const *cands, size_t n,
                      const float *reputation, struct dc_expert_rank *out, size_t max)
{
    size_t kept = 0;

    if (max == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const struct dc_expert *x = cands[i];
        struct dc_expert_rank r;
        float sim;
        double rep = 1.0;

        if (x == NULL || !is_our_embedder(x))
            continue;
        sim = dc_embed_cosine(q, x->embedding);
        if (!(sim > 0.0f))
            continue;
        if (reputation != NULL) {
            rep = reputation[i];
            if (!(rep >= 0.0)) /* negative or NaN */
                rep = 0.0;
            else if (rep > 1.0)
                rep = 1.0;
        }
        r.index = i;
        r.similarity = sim;
        r.score = (float)((double)sim * rep * load_factor(x));
        if (kept < max) {
            out[kept] = r;
            heap_sift_up(out, kept++);
        } else if (rank_better(&r, &out[0])) {
            out[0] = r;
            heap_sift_down(out, kept, 0);
        }
    }
    /* Heap sort: moving the worst to the end each time leaves out[] best first. */
    for (size_t end = kept; end > 1; end--) {
        struct dc_expert_rank t = out[0];

        out[0] = out[end - 1];
        out[end - 1] = t;
        heap_sift_down(out, end - 1, 0);
    }
    return kept;
}

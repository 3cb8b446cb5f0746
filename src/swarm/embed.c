/* SPDX-License-Identifier: MIT */
/*
 * embed.c - the model-free text embedding DC_EMBEDDER_ID ("dc-hash-384/1") and its
 * random-hyperplane LSH key (route.h parts 1 and 2).
 *
 * The embedding is feature hashing: one pass over the text decodes UTF-8, folds ASCII case,
 * cuts words, drops stop words, and adds each word (weight 1.0) and each character trigram of
 * "^word$" (weight 0.5) to a signed bucket chosen by SipHash-2-4 under a fixed key. The pass
 * is linear in the text, allocates nothing and never looks past text[len), whatever the bytes.
 *
 * What must agree between nodes. A capability record carries the int8 embedding and its LSH
 * key, and a receiver recomputes only dc_lsh_key_q() of that int8 vector, which is integer
 * arithmetic and exact. The float pipeline (log1p, sqrt, the quantizer's division) uses only
 * IEEE-exact operations except log1p, whose last bit may differ between libm versions; such a
 * difference can only move a quantized value sitting exactly on a .5 rounding boundary or flip
 * an LSH bit of a dot product within rounding of zero, so nodes agree in practice and the
 * signed record is what the network relies on anyway.
 *
 * Changing anything here that changes the vectors (the hash key, the feature prefixes, the
 * stop words, the word cut, the weights, the hyperplane seed) changes what DC_EMBEDDER_ID
 * means: it must then get a new name, since every node has to compute the same vectors.
 */
#include "swarm/route.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* ---- Feature hashing ---- */

/* The SipHash key of DC_EMBEDDER_ID's feature hash. Part of the embedder's definition: every
 * node must use these exact bytes (see the file comment). */
static const uint8_t feature_hash_key[crypto_shorthash_KEYBYTES] = {
    'd', 'c', '-', 'h', 'a', 's', 'h', '-', '3', '8', '4', '/', '1', 0x5e, 0xa1, 0x7d,
};

/* Feature kinds hash with different first bytes, so the word "abc" and the trigram "abc" land
 * in unrelated buckets. */
#define FEATURE_WORD    'w'
#define FEATURE_TRIGRAM 't'

#define WORD_WEIGHT    1.0
#define TRIGRAM_WEIGHT 0.5

/* A word is hashed from at most its first WORD_MAX_BYTES bytes, cut at a code point boundary;
 * that bounds the work per word and the stack buffer. */
#define WORD_MAX_BYTES 64u

/* Common English function words, dropped before hashing. Must stay sorted by strcmp (bsearch);
 * every entry is lowercase ASCII. */
static const char *const stop_words[] = {
    "a",     "about", "after",  "all",   "also",  "am",   "an",   "and",   "any",   "are",  "as",
    "at",    "be",    "been",   "being", "but",   "by",   "can",  "could", "did",   "do",   "does",
    "for",   "from",  "had",    "has",   "have",  "he",   "her",  "him",   "his",   "how",  "i",
    "if",    "in",    "into",   "is",    "it",    "its",  "me",   "my",    "of",    "on",   "or",
    "our",   "she",   "should", "so",    "some",  "than", "that", "the",   "their", "them", "then",
    "there", "these", "they",   "this",  "those", "to",   "us",   "was",   "we",    "were", "what",
    "when",  "where", "which",  "who",   "whom",  "why",  "will", "with",  "would", "you",  "your",
};

#define STOP_WORD_MAX_LEN 6u /* the longest entry ("should"): longer words are never looked up */

static int stop_word_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(const char *const *)elem);
}

static bool is_stop_word(const char *word, size_t len)
{
    if (len > STOP_WORD_MAX_LEN)
        return false;
    return bsearch(word, stop_words, DC_ARRAY_LEN(stop_words), sizeof(stop_words[0]),
                   stop_word_cmp) != NULL;
}

/* The running sums, in double so that megabytes of text add up exactly (every weight is a
 * multiple of 0.5). */
struct accum {
    double sum[DC_EMBED_DIM];
    size_t n_features;
};

static void add_feature(struct accum *acc, uint8_t kind, const uint8_t *bytes, size_t len,
                        double weight)
{
    uint8_t in[1 + WORD_MAX_BYTES];
    uint8_t h8[crypto_shorthash_BYTES];
    uint64_t h = 0;

    assert(len <= WORD_MAX_BYTES);
    in[0] = kind;
    memcpy(in + 1, bytes, len);
    crypto_shorthash(h8, in, 1 + len, feature_hash_key);
    /* Little-endian by definition, whatever the host's byte order. */
    for (size_t i = 0; i < sizeof(h8); i++)
        h |= (uint64_t)h8[i] << (8 * i);
    acc->sum[h % DC_EMBED_DIM] += (h >> 63) ? -weight : weight;
    acc->n_features++;
}

/* A word being collected: its bytes (lowercased, at most WORD_MAX_BYTES) and the byte offset
 * of each of its code points, so trigrams can be cut from it. */
struct word {
    uint8_t bytes[WORD_MAX_BYTES + 1]; /* +1: NUL for the stop-word lookup */
    size_t len;
    uint8_t char_off[WORD_MAX_BYTES + 1]; /* char_off[n_chars] == len */
    size_t n_chars;
    bool full; /* a code point did not fit: the rest of the word is ignored */
};

static void word_append(struct word *w, const uint8_t *cp, size_t cp_len)
{
    if (w->full)
        return;
    if (w->len + cp_len > WORD_MAX_BYTES) {
        w->full = true;
        return;
    }
    w->char_off[w->n_chars++] = (uint8_t)w->len;
    for (size_t i = 0; i < cp_len; i++) {
        uint8_t c = cp[i];

        w->bytes[w->len++] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;
    }
}

static void word_flush(struct word *w, struct accum *acc)
{
    size_t n = w->n_chars;

    if (w->len == 0)
        return;
    w->bytes[w->len] = '\0';
    w->char_off[n] = (uint8_t)w->len;
    if (!is_stop_word((const char *)w->bytes, w->len)) {
        add_feature(acc, FEATURE_WORD, w->bytes, w->len, WORD_WEIGHT);
        /* The n trigrams of "^c0 c1 ... c(n-1)$": the markers are separators in the text, so
         * they never occur inside a word and need no escaping. A trigram spans at most three
         * code points of <= 4 bytes. */
        if (n >= 3) {
            for (size_t i = 0; i < n; i++) {
                uint8_t tri[12];
                size_t t = 0;
                size_t from = (i == 0) ? 0 : i - 1;  /* first real char in this trigram */
                size_t to = (i + 2 > n) ? n : i + 2; /* one past the last real char */
                size_t b0 = w->char_off[from], b1 = w->char_off[to];

                if (i == 0)
                    tri[t++] = '^';
                memcpy(tri + t, w->bytes + b0, b1 - b0);
                t += b1 - b0;
                if (i + 2 > n)
                    tri[t++] = '$';
                add_feature(acc, FEATURE_TRIGRAM, tri, t, TRIGRAM_WEIGHT);
            }
        }
    }
    w->len = 0;
    w->n_chars = 0;
    w->full = false;
}

/* The length (2..4) of the well-formed UTF-8 sequence of a non-ASCII code point at p[0..n),
 * or 0 when it is not one (Unicode table 3-7: no overlong forms, surrogates or values past
 * U+10FFFF). */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0], lo = 0x80, hi = 0xbf;
    size_t need;

    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return need;
}

static bool is_word_ascii(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

size_t dc_embed_text(const char *text, size_t len, float out[DC_EMBED_DIM])
{
    const uint8_t *p = (const uint8_t *)text;
    struct accum acc;
    struct word w;
    double norm2 = 0;
    size_t i = 0;

    memset(&acc, 0, sizeof(acc));
    memset(&w, 0, sizeof(w));
    while (i < len) {
        uint8_t c = p[i];

        if (c < 0x80) {
            if (is_word_ascii(c))
                word_append(&w, &p[i], 1);
            else
                word_flush(&w, &acc);
            i++;
        } else {
            size_t cl = utf8_len(&p[i], len - i);

            if (cl == 0) { /* an invalid byte separates, and only it is skipped */
                word_flush(&w, &acc);
                i++;
            } else {
                word_append(&w, &p[i], cl);
                i += cl;
            }
        }
    }
    word_flush(&w, &acc);

    for (size_t d = 0; d < DC_EMBED_DIM; d++) {
        double s = acc.sum[d];

        s = (s < 0) ? -log1p(-s) : log1p(s);
        acc.sum[d] = s;
        norm2 += s * s;
    }
    if (norm2 == 0) {
        /* No features, or features that cancelled out in every bucket. */
        memset(out, 0, DC_EMBED_DIM * sizeof(out[0]));
        return acc.n_features;
    }
    norm2 = sqrt(norm2);
    for (size_t d = 0; d < DC_EMBED_DIM; d++)
        out[d] = (float)(acc.sum[d] / norm2);
    return acc.n_features;
}

void dc_embed_quantize(const float in[DC_EMBED_DIM], int8_t out[DC_EMBED_DIM])
{
    float max = 0;

    for (size_t i = 0; i < DC_EMBED_DIM; i++) {
        float a = fabsf(in[i]);

        if (isfinite(a) && a > max) /* NaN and infinity are ignored */
            max = a;
    }
    for (size_t i = 0; i < DC_EMBED_DIM; i++) {
        double x = (max > 0) ? round((double)in[i] * 127.0 / (double)max) : 0.0;

        /* Clamp (an infinite input) and keep NaN out of the integer conversion. */
        if (!(x >= -127.0))
            x = (x != x) ? 0.0 : -127.0;
        else if (x > 127.0)
            x = 127.0;
        out[i] = (int8_t)x;
    }
}

/* The sums run in COSINE_LANES independent accumulators, added in a fixed order at the end:
 * the same result on every machine, without one long chain of dependent additions (ranking
 * computes this for every known record). Each product (float x int8, float x float) is exact
 * in double, so a compiler's fused multiply-add gives the same bits as separate operations. */
#define COSINE_LANES 8u

float dc_embed_cosine(const float a[DC_EMBED_DIM], const int8_t b[DC_EMBED_DIM])
{
    double dot[COSINE_LANES] = {0}, na[COSINE_LANES] = {0};
    int32_t nb = 0; /* <= 384 * 127^2 */
    double d = 0, n = 0, c;

    for (size_t i = 0; i < DC_EMBED_DIM; i += COSINE_LANES) {
        for (size_t l = 0; l < COSINE_LANES; l++) {
            double x = a[i + l];

            dot[l] += x * b[i + l];
            na[l] += x * x;
            nb += (int32_t)b[i + l] * b[i + l];
        }
    }
    for (size_t l = 0; l < COSINE_LANES; l++) {
        d += dot[l];
        n += na[l];
    }
    if (!(n > 0) || nb == 0)
        return 0.0f;
    c = d / sqrt(n * (double)nb);
    if (!(c >= -1.0)) /* also NaN from a non-finite input */
        return c != c ? 0.0f : -1.0f;
    return c > 1.0 ? 1.0f : (float)c;
}

/* ---- LSH ---- */

#define LSH_BITS 64u

/* Seed of the hyperplanes; part of DC_EMBEDDER_ID like the hash key. */
#define LSH_SEED 0x64632d6c73682f31ull /* "dc-lsh/1" */

/*
 * The 64 hyperplanes, one +1/-1 coefficient per dimension (Rademacher vectors) taken from the
 * bits of a splitmix64 stream: unlike Gaussian vectors (Box-Muller needs log, sqrt, cos),
 * they come out bit-identical everywhere with no floating point at all, and random-sign
 * projections approximate the angle just as SimHash needs. plane[i][d] is coefficient d of
 * hyperplane i; bit k of splitmix64 output j gives coefficient (64 * j + k) of the row-major
 * 64 x DC_EMBED_DIM matrix. Built once (pthread_once) and then read-only.
 */
static int8_t lsh_plane[LSH_BITS][DC_EMBED_DIM];
static pthread_once_t lsh_once = PTHREAD_ONCE_INIT;

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void lsh_init_once(void)
{
    uint64_t state = LSH_SEED, r = 0;
    size_t k = 0;

    for (size_t i = 0; i < LSH_BITS; i++) {
        for (size_t d = 0; d < DC_EMBED_DIM; d++, k++) {
            if (k % 64 == 0)
                r = splitmix64(&state);
            lsh_plane[i][d] = ((r >> (k % 64)) & 1) ? 1 : -1;
        }
    }
}

/* Both key functions: a dot product >= 0 (so exactly 0 too) sets the bit. The float version
 * accumulates in double, so for a vector whose entries are an int8 vector times a power of two
 * every partial sum is exact and the key equals dc_lsh_key_q()'s; for other scalings of an
 * int8 vector the two differ only where a dot product lies within rounding of zero. */
uint64_t dc_lsh_key(const float v[DC_EMBED_DIM])
{
    uint64_t key = 0;

    pthread_once(&lsh_once, lsh_init_once);
    for (size_t i = 0; i < LSH_BITS; i++) {
        double dot = 0;

        for (size_t d = 0; d < DC_EMBED_DIM; d++)
            dot += (double)lsh_plane[i][d] * (double)v[d];
        if (dot >= 0) /* false for NaN: a non-finite vector sets no bit */
            key |= (uint64_t)1 << i;
    }
    return key;
}

uint64_t dc_lsh_key_q(const int8_t v[DC_EMBED_DIM])
{
    uint64_t key = 0;

    pthread_once(&lsh_once, lsh_init_once);
    for (size_t i = 0; i < LSH_BITS; i++) {
        int32_t dot = 0; /* |dot| <= 384 * 128 */

        for (size_t d = 0; d < DC_EMBED_DIM; d++)
            dot += (int32_t)lsh_plane[i][d] * v[d];
        if (dot >= 0)
            key |= (uint64_t)1 << i;
    }
    return key;
}

size_t dc_lsh_band_key(uint64_t key, unsigned band, uint8_t *out, size_t cap)
{
    char buf[48];
    int n;

    if (band >= DC_LSH_BANDS)
        return 0;
    n = snprintf(buf, sizeof(buf), "/democritus/lsh/1/%u/%x", band, dc_lsh_band(key, band));
    if (n < 0 || (size_t)n > cap)
        return 0;
    memcpy(out, buf, (size_t)n);
    return (size_t)n;
}

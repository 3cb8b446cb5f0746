/* SPDX-License-Identifier: MIT */
/*
 * route.h - what a node knows about other experts and how a prompt picks among them: the
 * shared text embedding, its locality-sensitive hash, the signed capability record an expert
 * publishes on the DHT, and the ranking. All pure (no I/O, no globals that change), so every
 * node computes the same vectors, keys and scores for the same text; the coordinator
 * (coord.h) does the lookups and the calls.
 *
 * Why a model-free embedding: a prompt's vector and an expert's description vector are only
 * comparable when every node computes them the same way, whatever model it serves. The
 * embedder here (DC_EMBEDDER_ID) is feature hashing of words and character trigrams, which
 * needs no weights and gives the same bytes on every machine. A record names its embedder, so
 * a later learned embedder (a BERT GGUF) can be added beside it; vectors of different
 * embedders are never compared.
 */
#ifndef DC_SWARM_ROUTE_H
#define DC_SWARM_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/kad.h"

/* ---- 1. Embedding ---- */

#define DC_EMBED_DIM   384u
#define DC_EMBEDDER_ID "dc-hash-384/1"

/*
 * The embedding of text[0..len) (UTF-8; invalid bytes are treated as separators): ASCII
 * letters lowercased (other code points are kept as they are), split into words
 * (runs of letters, digits and non-ASCII code points; everything else separates), common
 * English function words dropped. Each remaining word adds weight 1.0 and each character
 * trigram of "^word$" weight 0.5 (words of 1-2 characters give no trigrams) to the bucket
 * chosen by a fixed-key hash of the feature, with a sign from the same hash; each bucket's
 * sum s then becomes sign(s) * log(1 + |s|), and the vector is scaled to unit L2 length.
 * Returns the number of features seen (0: the vector is all zeros, e.g. empty text or only
 * stop words).
 */
size_t dc_embed_text(const char *text, size_t len, float out[DC_EMBED_DIM]);

/* Symmetric int8 quantization: out[i] = round(in[i] * 127 / max|in|) (all zeros stay zeros). */
void dc_embed_quantize(const float in[DC_EMBED_DIM], int8_t out[DC_EMBED_DIM]);

/* Cosine similarity in [-1, 1] between a float vector and an int8 one (0 when either is all
 * zeros). */
float dc_embed_cosine(const float a[DC_EMBED_DIM], const int8_t b[DC_EMBED_DIM]);

/* ---- 2. Locality-sensitive hash (random hyperplanes, "SimHash") ----
 *
 * Bit i of the key is 1 when the vector's dot product with hyperplane i is >= 0; the 64
 * hyperplanes are random +1/-1 vectors drawn from a fixed seed (the same on every node; exact
 * integers, unlike Gaussian ones). Two vectors at angle t agree on each bit with probability
 * close to 1 - t/pi (exactly that for Gaussian hyperplanes). The key is cut into
 * DC_LSH_BANDS bands of DC_LSH_BAND_BITS bits; an expert announces itself as a DHT provider of
 * each of its bands, and a prompt looks up the providers of its own bands, so experts whose
 * vectors are near the prompt's are found without asking everyone. Short bands give recall in
 * small swarms; the ranking (below) then orders the candidates by the true cosine. */

#define DC_LSH_BANDS     16u
#define DC_LSH_BAND_BITS 4u

uint64_t dc_lsh_key(const float v[DC_EMBED_DIM]);
uint64_t dc_lsh_key_q(const int8_t v[DC_EMBED_DIM]);

/* The value of band 'band' (0..DC_LSH_BANDS-1) of 'key'. */
static inline uint32_t dc_lsh_band(uint64_t key, unsigned band)
{
    return (uint32_t)((key >> (band * DC_LSH_BAND_BITS)) & ((1u << DC_LSH_BAND_BITS) - 1u));
}

/*
 * The DHT provider key of band 'band' of 'key': the bytes "/democritus/lsh/1/<band>/<value>"
 * (decimal band, lowercase hex value), written to out[0..cap). Returns the length, or 0 when
 * 'cap' is too small or band >= DC_LSH_BANDS.
 */
size_t dc_lsh_band_key(uint64_t key, unsigned band, uint8_t *out, size_t cap);

/* Every expert is also a provider of this key, so a small swarm can list all experts with one
 * lookup (the LSH bands are what scales). */
#define DC_EXPERTS_KEY "/democritus/experts/1"

/* ---- 3. Capability records ----
 *
 * What an expert says about itself, signed with its node key and stored on the DHT as a
 * Democritus signed record (p2p/record.h) under "/democritus/expert/<PeerId>". The body is the
 * protobuf Capability of proto/capability.proto. */

#define DC_EXPERT_KEY_PREFIX "/democritus/expert/"
#define DC_EXPERT_MAX_DESC   1024u /* bytes of description */
#define DC_EXPERT_MAX_MODEL  128u  /* bytes of model name */
#define DC_EXPERT_MAX_TAGS   16u
#define DC_EXPERT_MAX_TAG    32u /* bytes per tag */

struct dc_expert {
    struct dc_peer_id peer;                   /* the signer (set by open; ignored by sign) */
    char description[DC_EXPERT_MAX_DESC + 1]; /* UTF-8, what the expert is good at */
    char embedder[32];                        /* DC_EMBEDDER_ID for ours */
    int8_t embedding[DC_EMBED_DIM];           /* of the description (quantized) */
    uint64_t lsh;                             /* dc_lsh_key_q(embedding) */
    char model[DC_EXPERT_MAX_MODEL + 1];      /* the served model's registry id */
    uint8_t model_sha256[32];                 /* of its GGUF file */
    bool has_model_sha256;
    uint32_t n_ctx;  /* context length a request may use */
    uint32_t slots;  /* parallel sequences the engine runs */
    uint32_t active; /* generating now (when signed) */
    uint32_t queued; /* waiting now (when signed) */
    double price;    /* credits per 1,000 generated tokens; 0: free */
    char tags[DC_EXPERT_MAX_TAGS]
             [DC_EXPERT_MAX_TAG + 1]; /* intent classes it accepts, e.g. "code" */
    size_t n_tags;
    uint64_t seq;        /* the record's (set by open) */
    uint64_t expires_ms; /* Unix ms (set by open) */
};

/*
 * Fills x->embedder, x->embedding and x->lsh from x->description (dc_embed_text, quantized).
 * Returns 0, or DC_EINVAL when the description gives no features.
 */
DC_MUST_CHECK int dc_expert_embed(struct dc_expert *x);

/* The DHT key of 'peer''s capability record: DC_EXPERT_KEY_PREFIX + base58 PeerId. Writes
 * out[0..DC_KAD_MAX_KEY) and '*len'. Returns 0 or DC_EINVAL. */
DC_MUST_CHECK int dc_expert_key(const struct dc_peer_id *peer, uint8_t out[DC_KAD_MAX_KEY],
                                size_t *len);

/*
 * Encodes 'x' as the Capability protobuf and signs it as the record for id's key
 * (dc_dht_record_sign), appending the envelope (the DHT value) to 'out'. Returns 0;
 * DC_EINVAL when a field is out of range (empty or over-long description or model, invalid
 * UTF-8, an lsh that does not match the embedding, n_tags over the cap); as
 * dc_dht_record_sign otherwise.
 */
DC_MUST_CHECK int dc_expert_sign(const struct dc_identity *id, const struct dc_expert *x,
                                 uint64_t seq, uint64_t expires_ms, struct dc_buf *out);

/*
 * Opens the DHT value stored under key[0..key_len) at 'now_ms' (dc_dht_record_open: the key
 * must be an expert key naming the signer) and decodes its body into '*out', checking every
 * field as dc_expert_sign does (a record of another embedder is accepted with its embedding
 * zeroed and must not be ranked: dc_expert_rank skips it). Returns 0; the errors of
 * dc_dht_record_open; DC_ECORRUPT for a body that does not parse or breaks a rule; DC_EPERM
 * when the key is not under DC_EXPERT_KEY_PREFIX.
 */
DC_MUST_CHECK int dc_expert_open(const uint8_t *key, size_t key_len, const uint8_t *value,
                                 size_t value_len, uint64_t now_ms, struct dc_expert *out);

/* ---- 4. Ranking ---- */

struct dc_expert_rank {
    size_t index;     /* into the candidates given */
    float similarity; /* cosine(query, embedding) */
    float score;      /* similarity x reputation x load factor */
};

/*
 * Orders 'n' candidates for the query vector 'q': score = similarity * reputation[i]
 * (NULL: 1.0 each; clamped to [0, 1]) * load factor, where the load factor is
 * 1 / (1 + (active + queued) / max(slots, 1)) / 2 + 0.5 (so a saturated expert keeps at least
 * half its weight). Candidates of another embedder, with a zero similarity or less, or with
 * a NULL entry are left out. Writes the best min(max, kept) in descending score (ties: the
 * higher similarity, then the lower index) to out[] and returns how many.
 */
size_t dc_expert_rank(const float q[DC_EMBED_DIM], const struct dc_expert *const *cands, size_t n,
                      const float *reputation, struct dc_expert_rank *out, size_t max);

#endif

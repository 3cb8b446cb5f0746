/* SPDX-License-Identifier: MIT */
/*
 * expert_fuzz.c - libFuzzer harness for capability records (swarm/route.h, dc_expert_open).
 * The first input byte picks what the rest is:
 *
 *   0..254  the length n of a DHT key: data[1..1+n) is the key and the remainder the value,
 *           opened as they are. A fuzzer cannot forge a signature, so this reaches the key
 *           checks and the envelope and payload parsing in front of the signature.
 *   255     a Capability body: it is signed as the record of a fixed identity (so the
 *           signature is good) and opened under that identity's expert key, which takes it
 *           through every body rule. What opens must also sign again and open to the same
 *           fields.
 *
 * Every call must return 0 or a DC_E* code; ASan/UBSan catch the rest. Seeds in
 * tests/fuzz/corpus/expert/ (written by expert_test with DC_EXPERT_SEED_DIR set).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/record.h"
#include "swarm/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dc_identity *id;
static uint8_t key[DC_KAD_MAX_KEY];
static size_t key_len;

static void setup(void)
{
    /* libp2p PrivateKey protobuf: Type Ed25519 (1), Data = seed || public key. */
    uint8_t proto[4 + 64], pk[32], sk[64], seed[32];

    if (dc_crypto_init() < 0)
        abort();
    for (size_t i = 0; i < sizeof(seed); i++)
        seed[i] = (uint8_t)(i * 7u + 3u);
    crypto_sign_seed_keypair(pk, sk, seed);
    proto[0] = 0x08, proto[1] = 0x01, proto[2] = 0x12, proto[3] = 64;
    memcpy(proto + 4, sk, 64);
    if (dc_identity_from_private_key_proto(proto, sizeof(proto), &id) < 0 ||
        dc_expert_key(dc_identity_peer_id(id), key, &key_len) < 0)
        abort();
}

/* Fields equal, as the unit test's assert_same_fields (strings are NUL-terminated by open). */
static bool same(const struct dc_expert *a, const struct dc_expert *b)
{
    if (strcmp(a->description, b->description) != 0 || strcmp(a->embedder, b->embedder) != 0 ||
        memcmp(a->embedding, b->embedding, DC_EMBED_DIM) != 0 || a->lsh != b->lsh ||
        strcmp(a->model, b->model) != 0 || a->has_model_sha256 != b->has_model_sha256 ||
        memcmp(a->model_sha256, b->model_sha256, 32) != 0 || a->n_ctx != b->n_ctx ||
        a->slots != b->slots || a->active != b->active || a->queued != b->queued ||
        memcmp(&a->price, &b->price, sizeof(a->price)) != 0 || a->n_tags != b->n_tags)
        return false;
    for (size_t i = 0; i < a->n_tags; i++)
        if (strcmp(a->tags[i], b->tags[i]) != 0)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    static struct dc_expert x, again;
    struct dc_buf v;
    int rc;

    if (!ready) {
        setup();
        ready = true;
    }
    if (size == 0)
        return 0;
    if (data[0] != 0xff) {
        size_t n = data[0] < size - 1 ? data[0] : size - 1;

        rc = dc_expert_open(data + 1, n, data + 1 + n, size - 1 - n, 0, &x);
        if (rc > 0)
            abort();
        return 0;
    }
    dc_buf_init(&v, 0);
    if (dc_dht_record_sign(id, key, key_len, 1, UINT64_MAX, data + 1, size - 1, &v) < 0)
        goto out;
    rc = dc_expert_open(key, key_len, v.data, v.len, 0, &x);
    if (rc > 0)
        abort();
    if (rc == 0) {
        /* What opened obeys the rules, so it signs again and reads back the same. */
        dc_buf_reset(&v);
        if (dc_expert_sign(id, &x, 2, UINT64_MAX, &v) < 0 ||
            dc_expert_open(key, key_len, v.data, v.len, 0, &again) < 0)
            abort();
        /* A foreign embedder's vector is not carried by sign; it was zeroed by open. */
        if (!same(&x, &again))
            abort();
    }
out:
    dc_buf_cleanup(&v);
    return 0;
}

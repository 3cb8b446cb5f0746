/* SPDX-License-Identifier: MIT */
/*
 * noise_test.c - unit tests of the Noise secure channel (src/p2p/noise.c): the raw XX
 * handshake and cipher states against published test vectors (cacophony and snow,
 * Noise_XX_25519_ChaChaPoly_SHA256), then the libp2p session between two in-memory parties:
 * every split of the input, transport data both ways, tampered messages, a wrong expected
 * PeerId, a bad signature, other key types, oversized and undersized frames, output and
 * plaintext caps, and allocation-failure loops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "libp2p/noise.pb-c.h"
#include "p2p/noise.h"
#include "p2p/noise_int.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;

    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

struct vector {
    const char *prologue;
    const char *init_static, *init_ephemeral, *resp_static, *resp_ephemeral;
    const char *handshake_hash; /* may be NULL */
    const char *payload[6];
    const char *ciphertext[6];
};

/* Test vectors for Noise_XX_25519_ChaChaPoly_SHA256: the cacophony one
 * (haskell-cryptography/cacophony vectors/cacophony.txt) and the snow one
 * (mcginty/snow tests/vectors/snow.txt). Messages alternate initiator/responder, the first
 * three are the handshake, the rest transport messages. */
static const struct vector vectors[] = {
    {
        "4a6f686e2047616c74",
        "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "c8e5f64e846193be2a834104c2a009868d6c9f3bd3c186299888b488b2f1f58e",
        {"4c756477696720766f6e204d69736573", "4d757272617920526f746862617264",
         "462e20412e20486179656b", "4361726c204d656e676572", "4a65616e2d426170746973746520536179",
         "457567656e2042f6686d20766f6e2042617765726b"},
        {"ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d"
         "69736573",
         "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381cbad1f276e038c48378ffc"
         "e2b65285e08d6b68aaa3629a5a8639392490e5b9bd5269c2f1e4f488ed8831161f19b7815528f8982ffe09be"
         "9b5c412f8a0db50f8814c7194e83f23dbd8d162c9326ad",
         "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a80ae475b9df0f169ae80a89be"
         "0865b57f58c9fea0d4ec82a286427402f113e4b6ae769a1d95941d49b25030",
         "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df",
         "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5",
         "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"},
    },
    {
        "5468657265206973206e6f20726967687420616e642077726f6e672e2054686572652773206f6e6c792066"
        "756e20616e6420626f72696e672e",
        "7dec208517a3b81a2861d7a71266d5d6dc944c5a8816634a86fe63198a0148ee",
        "a32daf21e93c0131495ce1d903181fde81cc46937daaeb990bae7c992709421e",
        "4d0aed5098e3b4ef20357e9f686ce66204c792b358da2e475017d6c485304881",
        "4eece0f195d026db035ff987597c429d3ad3bcc2944df37d649528951b2a27c5",
        NULL,
        {"d03c489139e645d0711a3c9e810d776b46a84912463fafa87b884eebf242dc34",
         "d8190a92f7dc0c93dbea9118ba8055751fb7c6590c416ffbd419964132b99a85",
         "77891b19dcb92ef7c055b672c4a5aa7fdf1c84146b8b303459022729473ce254",
         "d7efdf988072881941db045a42882433817555128fbf5663e56081712ec7d212",
         "dd7bf01a588bafb52c6cfba952e5d8fe35cc2b3f92b4730ae2474615157345ce", NULL},
        {"f9fa868ba97ab8a2686deccfaad5a484ee10a5bb85e3d1dce015a84797f92818d03c489139e645d0711a3c9e"
         "810d776b46a84912463fafa87b884eebf242dc34",
         "8c4e6fdb7d09d501a86f7eca5c234522751706ed409182c05cdf5f827d4dae47b81c6c5f43b025692c24391e"
         "efee725c17d8cb0fbe3e4abb8aedf42c4fd2592d4ea48ac08989d6ae8b4adae08b2c34087c808c7aa55a63c0"
         "2b0fab9e930612336bd43eaea04d3c670a0a146691aa9cc9d357872320dc735dbc48580cffb553db",
         "933ca6b5ed60df3df66121f0ab49a09e49efa45c613a86a3cecbf4c535cef2f83f72b42837b18e3572f2fdc2"
         "b74c331e2368a545cef54bdca081678ab0e9dd5348122459e0c034c851984d88ce610963d43cde6cfe73a67f"
         "bd5a63e8bfca96d0",
         "54ef0ff0629e1aaa7685a2806ab111cba76b52331f2642276736f415868eacb69ab2577f3bda0cbf72f87968"
         "5f6ed25f",
         "356be70f110306d5c699bb834bb9d58d909e325924dfbec972e406e6f294dc63e1daebefe8a62a334facc804"
         "8ab4ad66",
         NULL},
    },
};

/* ---- known answers ---------------------------------------------------------------------- */

static void test_vectors(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    for (size_t v = 0; v < DC_ARRAY_LEN(vectors); v++) {
        const struct vector *tv = &vectors[v];
        uint8_t prologue[128], is[32], ie[32], rs[32], re[32], want[512], got[512], pl[512];
        uint8_t payload[512];
        struct dc_noise_hs ini, resp;
        struct dc_noise_cipher i1, i2, r1, r2;
        size_t plen_n = unhex(tv->prologue, prologue, sizeof(prologue)), n, plen, wlen;

        unhex(tv->init_static, is, sizeof(is));
        unhex(tv->init_ephemeral, ie, sizeof(ie));
        unhex(tv->resp_static, rs, sizeof(rs));
        unhex(tv->resp_ephemeral, re, sizeof(re));
        assert_int_equal(dc_noise_hs_init(&ini, true, prologue, plen_n, is, ie), 0);
        assert_int_equal(dc_noise_hs_init(&resp, false, prologue, plen_n, rs, re), 0);
        /* Out of turn. */
        assert_int_equal(dc_noise_hs_write(&resp, NULL, 0, got, sizeof(got), &n), DC_ESTATE);
        assert_int_equal(dc_noise_hs_read(&ini, got, 32, pl, sizeof(pl), &n), DC_ESTATE);
        for (int m = 0; m < 3; m++) {
            struct dc_noise_hs *tx = m % 2 == 0 ? &ini : &resp, *rx = m % 2 == 0 ? &resp : &ini;

            plen = unhex(tv->payload[m], payload, sizeof(payload));
            wlen = unhex(tv->ciphertext[m], want, sizeof(want));
            assert_int_equal(dc_noise_hs_write(tx, payload, plen, got, sizeof(got), &n), 0);
            assert_int_equal(n, wlen);
            assert_memory_equal(got, want, wlen);
            assert_int_equal(dc_noise_hs_read(rx, got, n, pl, sizeof(pl), &n), 0);
            assert_int_equal(n, plen);
            assert_memory_equal(pl, payload, plen);
        }
        assert_memory_equal(ini.h, resp.h, 32);
        if (tv->handshake_hash != NULL) {
            unhex(tv->handshake_hash, want, sizeof(want));
            assert_memory_equal(ini.h, want, 32);
        }
        dc_noise_hs_split(&ini, &i1, &i2);
        dc_noise_hs_split(&resp, &r1, &r2);
        for (int m = 3; m < 6 && tv->payload[m] != NULL; m++) {
            struct dc_noise_cipher *tx = m % 2 == 0 ? &i1 : &r2, *rx = m % 2 == 0 ? &r1 : &i2;

            plen = unhex(tv->payload[m], payload, sizeof(payload));
            wlen = unhex(tv->ciphertext[m], want, sizeof(want));
            assert_int_equal(dc_noise_cipher_encrypt(tx, NULL, 0, payload, plen, got), 0);
            assert_int_equal(plen + 16, wlen);
            assert_memory_equal(got, want, wlen);
            /* A flipped bit fails and does not advance the nonce. */
            got[0] ^= 1;
            assert_int_equal(dc_noise_cipher_decrypt(rx, NULL, 0, got, wlen, pl), DC_ECRYPTO);
            got[0] ^= 1;
            assert_int_equal(dc_noise_cipher_decrypt(rx, NULL, 0, got, wlen, pl), 0);
            assert_memory_equal(pl, payload, plen);
        }
        dc_noise_hs_cleanup(&ini);
        dc_noise_hs_cleanup(&resp);
    }
}

static void test_cipher_limits(void **state)
{
    struct dc_noise_cipher c = {.has_key = true, .n = UINT64_MAX - 1};
    struct dc_noise_cipher d = c;
    uint8_t p[4] = {1, 2, 3, 4}, ct[20], out[4];

    (void)state;
    assert_int_equal(dc_noise_cipher_encrypt(&c, NULL, 0, p, 4, ct), 0);
    assert_int_equal(dc_noise_cipher_encrypt(&c, NULL, 0, p, 4, ct), DC_ELIMIT);
    assert_int_equal(dc_noise_cipher_decrypt(&d, NULL, 0, ct, 15, out), DC_ECORRUPT);
    assert_int_equal(dc_noise_cipher_decrypt(&d, NULL, 0, ct, 20, out), 0);
    assert_memory_equal(out, p, 4);
    assert_int_equal(dc_noise_cipher_decrypt(&d, NULL, 0, ct, 20, out), DC_ELIMIT);
}

/* ---- two libp2p parties ----------------------------------------------------------------- */

struct pair {
    struct dc_identity *ida, *idb;
    struct dc_noise *a, *b; /* a dials */
    int ra, rb;             /* last feed result of each */
    bool done_a, done_b;
};

static void pair_setup(struct pair *p, const struct dc_peer_id *expect, const uint8_t *fixed)
{
    struct dc_noise_config ca = {.initiator = true}, cb = {.initiator = false};

    memset(p, 0, sizeof(*p));
    assert_int_equal(dc_identity_generate(&p->ida), 0);
    assert_int_equal(dc_identity_generate(&p->idb), 0);
    ca.identity = p->ida;
    cb.identity = p->idb;
    ca.expected_peer = expect;
    if (fixed != NULL) {
        ca.static_secret = fixed;
        ca.ephemeral_secret = fixed + 32;
        cb.static_secret = fixed + 64;
        cb.ephemeral_secret = fixed + 96;
    }
    assert_int_equal(dc_noise_new(&ca, &p->a), 0);
    assert_int_equal(dc_noise_new(&cb, &p->b), 0);
}

static void pair_free(struct pair *p)
{
    dc_noise_free(p->a);
    dc_noise_free(p->b);
    dc_identity_free(p->ida);
    dc_identity_free(p->idb);
}

/* Moves 'from''s output into 'to' in chunks of 'chunk' bytes. Returns the last result. */
static int move(struct dc_noise *from, struct dc_noise *to, size_t chunk, bool *done)
{
    size_t len;
    const uint8_t *p = dc_noise_output(from, &len);
    uint8_t *copy = malloc(len + 1);
    int rc = 0;

    assert_non_null(copy);
    memcpy(copy, p, len);
    dc_noise_output_consume(from, len);
    for (size_t off = 0; off < len && rc >= 0;) {
        size_t n = len - off < chunk ? len - off : chunk;
        rc = dc_noise_feed(to, copy + off, n);
        if (rc == 1)
            *done = true;
        off += n;
    }
    free(copy);
    return rc;
}

/* Runs the handshake to completion (or the first error). */
static void pump(struct pair *p, size_t chunk)
{
    for (int round = 0; round < 4; round++) {
        p->rb = move(p->a, p->b, chunk, &p->done_b);
        if (p->rb < 0)
            return;
        p->ra = move(p->b, p->a, chunk, &p->done_a);
        if (p->ra < 0)
            return;
    }
}

static void check_transport(struct pair *p, size_t size)
{
    uint8_t *data = malloc(size + 1), *got = malloc(size + 1);
    size_t len, have = 0;
    const uint8_t *pt;

    assert_non_null(data);
    assert_non_null(got);
    randombytes_buf(data, size);
    for (int dir = 0; dir < 2; dir++) {
        struct dc_noise *tx = dir == 0 ? p->a : p->b, *rx = dir == 0 ? p->b : p->a;
        size_t off = 0;
        bool dummy = false;

        have = 0;
        while (off < size || have < size) {
            size_t n = size - off;
            if (n > 300000)
                n = 300000;
            if (n > 0)
                assert_int_equal(dc_noise_write(tx, data + off, n), 0);
            off += n;
            assert_int_equal(move(tx, rx, 4093, &dummy), 0);
            pt = dc_noise_plaintext(rx, &len);
            assert_true(have + len <= size);
            if (len > 0)
                memcpy(got + have, pt, len);
            have += len;
            dc_noise_plaintext_consume(rx, len);
        }
        assert_memory_equal(got, data, size);
    }
    free(data);
    free(got);
}

static void test_handshake_every_split(void **state)
{
    size_t chunks[] = {1, 2, 3, 5, 17, 32, 33, 79, 100, 1000, 65536};

    (void)state;
    for (size_t c = 0; c < DC_ARRAY_LEN(chunks); c++) {
        struct pair p;
        uint8_t h1[32], h2[32];
        struct dc_peer_id want_b;

        pair_setup(&p, NULL, NULL);
        want_b = *dc_identity_peer_id(p.idb);
        assert_null(dc_noise_remote_peer(p.a));
        assert_false(dc_noise_is_done(p.a));
        assert_int_equal(dc_noise_write(p.a, "x", 1), DC_ESTATE);
        assert_int_equal(dc_noise_handshake_hash(p.a, h1), DC_ESTATE);
        pump(&p, chunks[c]);
        assert_true(p.ra >= 0 && p.rb >= 0);
        assert_true(p.done_a && p.done_b);
        assert_true(dc_noise_is_done(p.a) && dc_noise_is_done(p.b));
        assert_true(dc_peer_id_equal(dc_noise_remote_peer(p.a), &want_b));
        assert_true(dc_peer_id_equal(dc_noise_remote_peer(p.b), dc_identity_peer_id(p.ida)));
        assert_int_equal(dc_noise_handshake_hash(p.a, h1), 0);
        assert_int_equal(dc_noise_handshake_hash(p.b, h2), 0);
        assert_memory_equal(h1, h2, 32);
        {
            uint8_t key[64];
            size_t klen;
            struct dc_peer_id pid;
            assert_int_equal(dc_noise_remote_identity_key(p.b, key, sizeof(key), &klen), 0);
            assert_int_equal(dc_peer_id_from_public_key_proto(key, klen, &pid), 0);
            assert_true(dc_peer_id_equal(&pid, dc_identity_peer_id(p.ida)));
            assert_int_equal(dc_noise_remote_identity_key(p.b, key, 3, &klen), DC_ELIMIT);
        }
        check_transport(&p, c == 0 ? 1000 : 70000);
        pair_free(&p);
    }
}

/* The initiator's last handshake message and its first transport frame arrive together, split
 * at every byte boundary. */
static void test_final_message_and_data_every_boundary(void **state)
{
    uint8_t fixed[128];
    size_t total;

    (void)state;
    for (size_t i = 0; i < sizeof(fixed); i++)
        fixed[i] = (uint8_t)(i * 7 + 1);
    for (size_t k = 0;; k++) {
        struct pair p;
        bool d = false;
        const uint8_t *out, *pt;
        uint8_t buf[1024];
        size_t len;

        pair_setup(&p, NULL, fixed);
        assert_int_equal(move(p.a, p.b, 1 << 20, &d), 0);
        assert_int_equal(move(p.b, p.a, 1 << 20, &d), 1);
        assert_int_equal(dc_noise_write(p.a, "hello, world", 12), 0);
        out = dc_noise_output(p.a, &len);
        total = len;
        assert_true(len <= sizeof(buf));
        memcpy(buf, out, len);
        if (k > total) {
            pair_free(&p);
            break;
        }
        int r1 = dc_noise_feed(p.b, buf, k);
        int r2 = dc_noise_feed(p.b, buf + k, total - k);
        assert_true(r1 >= 0 && r2 >= 0);
        assert_int_equal(r1 + r2, 1);
        pt = dc_noise_plaintext(p.b, &len);
        assert_int_equal(len, 12);
        assert_memory_equal(pt, "hello, world", 12);
        pair_free(&p);
    }
    assert_true(total > 100);
}

static void test_tampered(void **state)
{
    uint8_t fixed[128];

    (void)state;
    for (size_t i = 0; i < sizeof(fixed); i++)
        fixed[i] = (uint8_t)(i * 13 + 5);
    /* Every byte of message 2 (responder -> initiator), past the length prefix. */
    for (size_t idx = 2;; idx++) {
        struct pair p;
        bool d = false;
        uint8_t *out;
        size_t len;
        int rc;

        pair_setup(&p, NULL, fixed);
        assert_int_equal(move(p.a, p.b, 1 << 20, &d), 0);
        out = (uint8_t *)dc_noise_output(p.b, &len);
        if (idx >= len) {
            pair_free(&p);
            break;
        }
        out[idx] ^= 0x40;
        rc = move(p.b, p.a, 1 << 20, &d);
        assert_true(rc == DC_ECRYPTO || rc == DC_ECORRUPT);
        assert_null(dc_noise_remote_peer(p.a));
        assert_int_equal(dc_noise_feed(p.a, (const uint8_t *)"x", 1), DC_ESTATE);
        pair_free(&p);
    }
    /* Every byte of message 3 (initiator -> responder). */
    for (size_t idx = 2;; idx++) {
        struct pair p;
        bool d = false;
        uint8_t *out;
        size_t len;
        int rc;

        pair_setup(&p, NULL, fixed);
        assert_int_equal(move(p.a, p.b, 1 << 20, &d), 0);
        assert_int_equal(move(p.b, p.a, 1 << 20, &d), 1);
        out = (uint8_t *)dc_noise_output(p.a, &len);
        if (idx >= len) {
            pair_free(&p);
            break;
        }
        out[idx] ^= 0x01;
        rc = move(p.a, p.b, 1 << 20, &d);
        assert_true(rc == DC_ECRYPTO || rc == DC_ECORRUPT);
        assert_false(dc_noise_is_done(p.b));
        pair_free(&p);
    }
    /* A transport frame. */
    {
        struct pair p;
        bool d = false;
        uint8_t *out;
        size_t len;

        pair_setup(&p, NULL, NULL);
        pump(&p, 1 << 20);
        assert_true(p.done_a && p.done_b);
        assert_int_equal(dc_noise_write(p.b, "data", 4), 0);
        out = (uint8_t *)dc_noise_output(p.b, &len);
        out[len - 1] ^= 0x80;
        assert_int_equal(move(p.b, p.a, 1 << 20, &d), DC_ECRYPTO);
        assert_int_equal(dc_noise_write(p.a, "x", 1), DC_ESTATE);
        pair_free(&p);
    }
}

static void test_wrong_peer(void **state)
{
    struct dc_identity *other;
    struct pair p;

    (void)state;
    assert_int_equal(dc_identity_generate(&other), 0);
    pair_setup(&p, dc_identity_peer_id(other), NULL);
    pump(&p, 1 << 20);
    assert_int_equal(p.ra, DC_EPEER);
    assert_false(p.done_a);
    assert_false(p.done_b);
    pair_free(&p);
    dc_identity_free(other);

    /* The right expected peer succeeds. */
    {
        struct dc_identity *idb;
        struct dc_noise_config ca = {.initiator = true}, cb = {.initiator = false};
        struct dc_noise *a, *b;
        bool da = false, db = false;

        pair_setup(&p, NULL, NULL);
        idb = p.idb;
        ca.identity = p.ida;
        ca.expected_peer = dc_identity_peer_id(idb);
        cb.identity = idb;
        assert_int_equal(dc_noise_new(&ca, &a), 0);
        assert_int_equal(dc_noise_new(&cb, &b), 0);
        assert_int_equal(move(a, b, 64, &db), 0);
        assert_int_equal(move(b, a, 64, &da), 1);
        assert_int_equal(move(a, b, 64, &db), 1);
        dc_noise_free(a);
        dc_noise_free(b);
        pair_free(&p);
    }
}

/*
 * A hand-driven responder that sends a payload of our choosing, to test what the libp2p layer
 * does with bad identity payloads. Returns the initiator's feed result for message 2.
 */
static int responder_with_payload(const uint8_t *payload, size_t plen)
{
    struct dc_identity *ida;
    struct dc_noise_config ca = {.initiator = true};
    struct dc_noise *a;
    struct dc_noise_hs hs;
    uint8_t s_sk[32], msg[2048], pl[64];
    const uint8_t *out;
    size_t len, n;
    int rc;

    assert_int_equal(dc_identity_generate(&ida), 0);
    ca.identity = ida;
    assert_int_equal(dc_noise_new(&ca, &a), 0);
    randombytes_buf(s_sk, sizeof(s_sk));
    assert_int_equal(dc_noise_hs_init(&hs, false, NULL, 0, s_sk, NULL), 0);
    out = dc_noise_output(a, &len);
    assert_int_equal(dc_noise_hs_read(&hs, out + 2, len - 2, pl, sizeof(pl), &n), 0);
    dc_noise_output_consume(a, len);
    assert_int_equal(dc_noise_hs_write(&hs, payload, plen, msg + 2, sizeof(msg) - 2, &n), 0);
    msg[0] = (uint8_t)(n >> 8);
    msg[1] = (uint8_t)n;
    rc = dc_noise_feed(a, msg, n + 2);
    dc_noise_free(a);
    dc_identity_free(ida);
    dc_noise_hs_cleanup(&hs);
    return rc;
}

static size_t make_payload(const uint8_t *key, size_t key_len, const uint8_t *sig, size_t sig_len,
                           uint8_t *out)
{
    Dc__Noise__NoiseHandshakePayload pl = DC__NOISE__NOISE_HANDSHAKE_PAYLOAD__INIT;

    if (key != NULL) {
        pl.has_identity_key = 1;
        pl.identity_key.data = (uint8_t *)key;
        pl.identity_key.len = key_len;
    }
    if (sig != NULL) {
        pl.has_identity_sig = 1;
        pl.identity_sig.data = (uint8_t *)sig;
        pl.identity_sig.len = sig_len;
    }
    return dc__noise__noise_handshake_payload__pack(&pl, out);
}

static void test_bad_payloads(void **state)
{
    struct dc_identity *id;
    uint8_t key[64], sig[64], payload[512], rsa_key[] = {0x08, 0x00, 0x12, 0x03, 1, 2, 3};
    size_t klen, n;

    (void)state;
    assert_int_equal(dc_identity_generate(&id), 0);
    assert_int_equal(dc_identity_public_key_proto(id, key, sizeof(key), &klen), 0);
    /* A signature over something else (not our static key). */
    assert_int_equal(dc_identity_sign(id, (const uint8_t *)"not the static key", 18, sig), 0);
    n = make_payload(key, klen, sig, sizeof(sig), payload);
    assert_int_equal(responder_with_payload(payload, n), DC_ECRYPTO);
    /* A short signature. */
    n = make_payload(key, klen, sig, 10, payload);
    assert_int_equal(responder_with_payload(payload, n), DC_ECRYPTO);
    /* Missing fields. */
    n = make_payload(key, klen, NULL, 0, payload);
    assert_int_equal(responder_with_payload(payload, n), DC_ECORRUPT);
    n = make_payload(NULL, 0, sig, sizeof(sig), payload);
    assert_int_equal(responder_with_payload(payload, n), DC_ECORRUPT);
    assert_int_equal(responder_with_payload(NULL, 0), DC_ECORRUPT);
    /* Garbage protobuf. */
    memset(payload, 0xff, 40);
    assert_int_equal(responder_with_payload(payload, 40), DC_ECORRUPT);
    /* Another key type. */
    n = make_payload(rsa_key, sizeof(rsa_key), sig, sizeof(sig), payload);
    assert_int_equal(responder_with_payload(payload, n), DC_EUNSUPPORTED);
    /* Malformed key. */
    n = make_payload(rsa_key, 3, sig, sizeof(sig), payload);
    assert_int_equal(responder_with_payload(payload, n), DC_ECORRUPT);
    dc_identity_free(id);
}

static void test_frames(void **state)
{
    struct pair p;
    uint8_t *big;
    size_t len;
    const uint8_t *out;

    (void)state;
    /* Message 1 shorter than an ephemeral key. */
    pair_setup(&p, NULL, NULL);
    {
        const uint8_t m[7] = {0, 5, 'h', 'e', 'l', 'l', 'o'};
        assert_int_equal(dc_noise_feed(p.b, m, sizeof(m)), DC_ECORRUPT);
    }
    pair_free(&p);
    /* Message 2 too short for its tokens. */
    pair_setup(&p, NULL, NULL);
    {
        uint8_t m[2 + 64] = {0, 64};
        assert_int_equal(dc_noise_feed(p.a, m, sizeof(m)), DC_ECORRUPT);
    }
    pair_free(&p);

    pair_setup(&p, NULL, NULL);
    pump(&p, 1 << 20);
    assert_true(p.done_a && p.done_b);
    /* A transport frame shorter than the tag. */
    {
        const uint8_t m[5] = {0, 3, 'a', 'b', 'c'};
        assert_int_equal(dc_noise_feed(p.a, m, sizeof(m)), DC_ECORRUPT);
    }
    /* The largest frame of garbage fails authentication after being reassembled. */
    big = calloc(1, 2 + 65535);
    assert_non_null(big);
    big[0] = big[1] = 0xff;
    assert_int_equal(dc_noise_feed(p.b, big, 2 + 65535), DC_ECRYPTO);
    free(big);
    pair_free(&p);

    /* Frames are at most 65535 bytes: a large write is split. */
    pair_setup(&p, NULL, NULL);
    pump(&p, 1 << 20);
    big = calloc(1, 200000);
    assert_non_null(big);
    assert_int_equal(dc_noise_write(p.a, big, 200000), 0);
    out = dc_noise_output(p.a, &len);
    assert_int_equal(len, 200000 + 4 * (2 + 16));
    assert_int_equal((out[0] << 8) | out[1], 65535);
    /* The output cap (4 MiB by default). */
    for (;;) {
        int rc = dc_noise_write(p.a, big, 200000);
        if (rc == DC_ELIMIT)
            break;
        assert_int_equal(rc, 0);
    }
    assert_true(dc_noise_write_room(p.a) < 200000);
    assert_int_equal(dc_noise_write(p.a, big, dc_noise_write_room(p.a)), 0);
    assert_int_equal(dc_noise_write_room(p.a), 0);
    free(big);
    pair_free(&p);
}

/* The gathering sealer: pieces of every size (crossing ChaCha20 blocks and Noise messages)
 * give the same bytes as dc_noise_seal() over their concatenation, and the peer opens them. */
static void test_sealer(void **state)
{
    uint8_t fixed[128];
    struct pair p1, p2;
    bool d = false;
    size_t total = 300000, len, sealed, off = 0, taken, have = 0, cap;
    uint8_t *data = malloc(total), *ref, *out, *got = malloc(total);
    const uint8_t *pt;
    struct dc_noise_sealer sl;
    static const size_t sizes[] = {1, 12, 52, 63, 64, 65, 127, 1000, 65507, 65519, 70000, 3};

    (void)state;
    assert_non_null(data);
    assert_non_null(got);
    for (size_t i = 0; i < sizeof(fixed); i++)
        fixed[i] = (uint8_t)(i * 11 + 3);
    randombytes_buf(data, total);
    pair_setup(&p1, NULL, fixed);
    pair_setup(&p2, NULL, fixed);
    pump(&p1, 1 << 20);
    pump(&p2, 1 << 20);
    assert_true(p1.done_a && p1.done_b && p2.done_a && p2.done_b);

    cap = dc_noise_sealed_len(total);
    ref = malloc(cap);
    out = malloc(cap);
    assert_non_null(ref);
    assert_non_null(out);
    assert_int_equal(dc_noise_seal(p1.a, data, total, ref, cap, &sealed), 0);
    assert_int_equal(sealed, cap);
    dc_noise_sealer_init(&sl, out, cap);
    assert_int_equal(dc_noise_sealer_space(&sl), total);
    for (size_t k = 0; off < total; k++) {
        size_t n = sizes[k % (sizeof(sizes) / sizeof(sizes[0]))];
        if (n > total - off)
            n = total - off;
        assert_int_equal(dc_noise_sealer_put(p2.a, &sl, data + off, n, &taken), 0);
        assert_int_equal(taken, n);
        off += n;
        assert_int_equal(dc_noise_sealer_space(&sl), total - off);
    }
    assert_int_equal(dc_noise_sealer_put(p2.a, &sl, data, 1, &taken), 0);
    assert_int_equal(taken, 0); /* full */
    assert_int_equal(dc_noise_sealer_finish(p2.a, &sl, &sealed), 0);
    assert_int_equal(sealed, cap);
    assert_memory_equal(out, ref, cap);
    assert_int_equal(dc_noise_feed(p2.b, out, sealed), 0);
    pt = dc_noise_plaintext(p2.b, &len);
    assert_int_equal(len, total);
    assert_memory_equal(pt, data, total);
    dc_noise_plaintext_consume(p2.b, len);

    /* A small cap ends inside the first message; the session goes on after it. */
    dc_noise_sealer_init(&sl, out, 1000);
    assert_int_equal(dc_noise_sealer_space(&sl), 1000 - 18);
    assert_int_equal(dc_noise_sealer_put(p2.a, &sl, data, 5000, &taken), 0);
    assert_int_equal(taken, 1000 - 18);
    assert_int_equal(dc_noise_sealer_finish(p2.a, &sl, &sealed), 0);
    assert_int_equal(sealed, 1000);
    assert_int_equal(dc_noise_write(p2.a, data + taken, 100), 0);
    assert_int_equal(dc_noise_feed(p2.b, out, sealed), 0);
    assert_int_equal(move(p2.a, p2.b, 777, &d), 0);
    pt = dc_noise_plaintext(p2.b, &len);
    assert_int_equal(len, 1000 - 18 + 100);
    memcpy(got + have, pt, len);
    assert_memory_equal(got, data, len);
    /* Queued output first: the sealer refuses, as dc_noise_seal does. */
    assert_int_equal(dc_noise_write(p2.a, data, 10), 0);
    dc_noise_sealer_init(&sl, out, 1000);
    assert_int_equal(dc_noise_sealer_put(p2.a, &sl, data, 10, &taken), DC_ESTATE);
    /* Before the handshake it refuses too. */
    pair_free(&p1);
    pair_setup(&p1, NULL, NULL);
    assert_int_equal(dc_noise_sealer_put(p1.a, &sl, data, 10, &taken), DC_ESTATE);
    assert_int_equal(dc_noise_sealer_finish(p1.a, &sl, &sealed), DC_ESTATE);
    pair_free(&p1);
    pair_free(&p2);
    free(ref);
    free(out);
    free(data);
    free(got);
}

static void test_plaintext_cap(void **state)
{
    struct dc_identity *ida, *idb;
    struct dc_noise_config ca = {.initiator = true, .max_plaintext = 100000}, cb = {0};
    struct dc_noise *a, *b;
    uint8_t data[60000] = {0};
    bool d = false;

    (void)state;
    assert_int_equal(dc_identity_generate(&ida), 0);
    assert_int_equal(dc_identity_generate(&idb), 0);
    ca.identity = ida;
    cb.identity = idb;
    assert_int_equal(dc_noise_new(&ca, &a), 0);
    assert_int_equal(dc_noise_new(&cb, &b), 0);
    assert_int_equal(move(a, b, 1 << 20, &d), 0);
    assert_int_equal(move(b, a, 1 << 20, &d), 1);
    assert_int_equal(move(a, b, 1 << 20, &d), 1);
    assert_int_equal(dc_noise_write(b, data, sizeof(data)), 0);
    assert_int_equal(dc_noise_write(b, data, sizeof(data)), 0);
    assert_int_equal(move(b, a, 1 << 20, &d), DC_ELIMIT);
    dc_noise_free(a);
    dc_noise_free(b);
    dc_identity_free(ida);
    dc_identity_free(idb);
}

static void test_config_and_enomem(void **state)
{
    struct dc_noise_config cfg = {.initiator = true};
    struct dc_noise *n = NULL;
    struct dc_identity *ida, *idb;
    long i;
    int rc;

    (void)state;
    assert_int_equal(dc_noise_new(&cfg, &n), DC_EINVAL);
    assert_null(n);
    assert_int_equal(dc_identity_generate(&ida), 0);
    assert_int_equal(dc_identity_generate(&idb), 0);
    cfg.identity = ida;
    for (i = 0;; i++) {
        dc_alloc_fail_after(i);
        rc = dc_noise_new(&cfg, &n);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(n);
    }
    assert_true(i >= 2);
    dc_noise_free(n);
    dc_noise_free(NULL);

    /* The whole handshake with the n-th allocation failing: a clean error, never a crash or
     * leak (protobuf-c's failed allocation reads as a malformed payload). */
    for (i = 0;; i++) {
        struct dc_noise_config ca = {.initiator = true, .identity = ida};
        struct dc_noise_config cb = {.initiator = false, .identity = idb};
        struct dc_noise *a = NULL, *b = NULL;
        bool da = false, db = false;
        int r = 0;

        dc_alloc_fail_after(i);
        rc = dc_noise_new(&ca, &a);
        if (rc == 0)
            rc = dc_noise_new(&cb, &b);
        if (rc == 0)
            r = move(a, b, 1 << 20, &db);
        if (rc == 0 && r >= 0)
            r = move(b, a, 1 << 20, &da);
        if (rc == 0 && r >= 0)
            r = move(a, b, 1 << 20, &db);
        dc_alloc_fail_after(-1);
        dc_noise_free(a);
        dc_noise_free(b);
        if (rc == 0 && r >= 0 && da && db)
            break;
        assert_true(rc == DC_ENOMEM || r == DC_ENOMEM || r == DC_ECORRUPT);
        assert_true(i < 1000);
    }
    dc_identity_free(ida);
    dc_identity_free(idb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_cipher_limits),
        cmocka_unit_test(test_handshake_every_split),
        cmocka_unit_test(test_final_message_and_data_every_boundary),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_wrong_peer),
        cmocka_unit_test(test_bad_payloads),
        cmocka_unit_test(test_sealer),
        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_plaintext_cap),
        cmocka_unit_test(test_config_and_enomem),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

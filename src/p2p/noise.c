/* SPDX-License-Identifier: MIT */
/*
 * noise.c - the libp2p Noise secure channel: Noise_XX_25519_ChaChaPoly_SHA256 over libsodium
 * (X25519, ChaCha20-Poly1305 IETF, SHA-256, HMAC-SHA256 for HKDF), the libp2p handshake
 * payload, and the length-prefixed transport framing.
 *
 * The file has three layers. The bottom one is the Noise framework itself (CipherState,
 * SymmetricState, the XX HandshakeState), written against the Noise spec and checked by the
 * unit test against published vectors. The middle one is the libp2p payload: the protobuf
 * codec (protobuf-c, allocating through dc_malloc so allocation-failure tests reach it) and
 * the signature over the static key. The top one is the byte-stream session the host drives:
 * it reassembles 2-byte-length-prefixed messages from arbitrary splits, runs the handshake,
 * then decrypts frames into a plaintext buffer and encrypts writes into an output buffer,
 * both capped. Beside the output buffer, dc_noise_seal() and the gathering sealer encrypt
 * into the caller's memory (the host's socket write requests); the sealer splits the AEAD
 * into its ChaCha20 and Poly1305 halves so that it can encrypt pieces from where they lie.
 */
#include "p2p/noise_int.h"

#include <sodium.h>
#include <string.h>

#include "libp2p/noise.pb-c.h"
#include "p2p/pb.h"

#define DH_LEN       32
#define LEN_PREFIX   2
#define SIG_PREFIX_N (sizeof(DC_NOISE_SIG_PREFIX) - 1)
/* Our payload: identity key (36) + signature (64) + protobuf tags; generous. */
#define MAX_OUR_PAYLOAD 256

/* ---- CipherState ---------------------------------------------------------------------- */

/* The ChaChaPoly nonce: 32 bits of zeros then the 64-bit counter little-endian (spec 12.3). */
static void nonce_bytes(uint64_t n, uint8_t out[12])
{
    memset(out, 0, 4);
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(n >> (8 * i));
}

int dc_noise_cipher_encrypt(struct dc_noise_cipher *c, const uint8_t *ad, size_t ad_len,
                            const uint8_t *p, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    unsigned long long clen;

    if (!c->has_key) {
        if (len > 0)
            memmove(out, p, len);
        return 0;
    }
    /* 2^64-1 is reserved (spec 5.1): a session that gets there is over. */
    if (c->n == UINT64_MAX)
        return DC_ELIMIT;
    nonce_bytes(c->n, nonce);
    crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, p, len, ad, ad_len, NULL, nonce, c->k);
    c->n++;
    return 0;
}

int dc_noise_cipher_decrypt(struct dc_noise_cipher *c, const uint8_t *ad, size_t ad_len,
                            const uint8_t *p, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    unsigned long long mlen;

    if (!c->has_key) {
        if (len > 0)
            memmove(out, p, len);
        return 0;
    }
    if (len < DC_NOISE_TAG_LEN)
        return DC_ECORRUPT;
    if (c->n == UINT64_MAX)
        return DC_ELIMIT;
    nonce_bytes(c->n, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(out, &mlen, NULL, p, len, ad, ad_len, nonce,
                                                  c->k) != 0)
        return DC_ECRYPTO;
    c->n++;
    return 0;
}

/* ---- SymmetricState ------------------------------------------------------------------- */

static void hmac(const uint8_t key[DC_NOISE_HASH_LEN], const uint8_t *a, size_t a_len,
                 const uint8_t *b, size_t b_len, uint8_t out[DC_NOISE_HASH_LEN])
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, key, DC_NOISE_HASH_LEN);
    crypto_auth_hmacsha256_update(&st, a, a_len);
    if (b_len > 0)
        crypto_auth_hmacsha256_update(&st, b, b_len);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof(st));
}

/* HKDF(ck, ikm) with two outputs (spec 4.3). */
static void hkdf2(const uint8_t ck[DC_NOISE_HASH_LEN], const uint8_t *ikm, size_t ikm_len,
                  uint8_t o1[DC_NOISE_HASH_LEN], uint8_t o2[DC_NOISE_HASH_LEN])
{
    static const uint8_t one = 0x01, two = 0x02;
    uint8_t temp[DC_NOISE_HASH_LEN], t1[DC_NOISE_HASH_LEN];

    hmac(ck, ikm, ikm_len, NULL, 0, temp);
    hmac(temp, &one, 1, NULL, 0, t1);
    hmac(temp, t1, sizeof(t1), &two, 1, o2);
    memcpy(o1, t1, sizeof(t1));
    sodium_memzero(temp, sizeof(temp));
    sodium_memzero(t1, sizeof(t1));
}

static void mix_hash(struct dc_noise_hs *hs, const uint8_t *p, size_t len)
{
    crypto_hash_sha256_state st;

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, hs->h, sizeof(hs->h));
    crypto_hash_sha256_update(&st, p, len);
    crypto_hash_sha256_final(&st, hs->h);
}

static void mix_key(struct dc_noise_hs *hs, const uint8_t ikm[DH_LEN])
{
    uint8_t ck[DC_NOISE_HASH_LEN];

    hkdf2(hs->ck, ikm, DH_LEN, ck, hs->cs.k);
    memcpy(hs->ck, ck, sizeof(ck));
    sodium_memzero(ck, sizeof(ck));
    hs->cs.n = 0;
    hs->cs.has_key = true;
}

/* EncryptAndHash: out gets len (+16 with a key) bytes. */
static int encrypt_and_hash(struct dc_noise_hs *hs, const uint8_t *p, size_t len, uint8_t *out,
                            size_t *out_len)
{
    int rc = dc_noise_cipher_encrypt(&hs->cs, hs->h, sizeof(hs->h), p, len, out);

    if (rc < 0)
        return rc;
    *out_len = len + (hs->cs.has_key ? DC_NOISE_TAG_LEN : 0);
    mix_hash(hs, out, *out_len);
    return 0;
}

static int decrypt_and_hash(struct dc_noise_hs *hs, const uint8_t *c, size_t len, uint8_t *out)
{
    uint8_t h_before[DC_NOISE_HASH_LEN];
    int rc;

    memcpy(h_before, hs->h, sizeof(h_before));
    rc = dc_noise_cipher_decrypt(&hs->cs, h_before, sizeof(h_before), c, len, out);
    if (rc < 0)
        return rc;
    mix_hash(hs, c, len);
    return 0;
}

/* X25519; libsodium refuses results that are all zeros (small-order peer keys). */
static int dh(const uint8_t sk[32], const uint8_t pk[32], uint8_t out[32])
{
    return crypto_scalarmult_curve25519(out, sk, pk) == 0 ? 0 : DC_ECRYPTO;
}

static int mix_dh(struct dc_noise_hs *hs, const uint8_t sk[32], const uint8_t pk[32])
{
    uint8_t shared[32];
    int rc = dh(sk, pk, shared);

    if (rc == 0)
        mix_key(hs, shared);
    sodium_memzero(shared, sizeof(shared));
    return rc;
}

/* ---- HandshakeState (XX) -------------------------------------------------------------- */

int dc_noise_hs_init(struct dc_noise_hs *hs, bool initiator, const uint8_t *prologue,
                     size_t prologue_len, const uint8_t s_sk[32], const uint8_t *e_sk)
{
    static const char name[] = DC_NOISE_PROTOCOL_NAME;

    _Static_assert(sizeof(name) - 1 == DC_NOISE_HASH_LEN, "protocol name is exactly HASHLEN");
    memset(hs, 0, sizeof(*hs));
    if (sodium_init() < 0)
        return DC_ECRYPTO;
    hs->initiator = initiator;
    /* A name of exactly HASHLEN bytes is used as h directly (spec 5.2). */
    memcpy(hs->h, name, DC_NOISE_HASH_LEN);
    memcpy(hs->ck, hs->h, DC_NOISE_HASH_LEN);
    mix_hash(hs, prologue, prologue_len);
    memcpy(hs->s_sk, s_sk, 32);
    if (crypto_scalarmult_curve25519_base(hs->s_pk, hs->s_sk) != 0)
        return DC_ECRYPTO;
    if (e_sk != NULL) {
        memcpy(hs->e_sk, e_sk, 32);
        hs->fixed_e = true;
    }
    return 0;
}

static int make_ephemeral(struct dc_noise_hs *hs)
{
    if (!hs->fixed_e)
        randombytes_buf(hs->e_sk, sizeof(hs->e_sk));
    return crypto_scalarmult_curve25519_base(hs->e_pk, hs->e_sk) == 0 ? 0 : DC_ECRYPTO;
}

/* Whose turn: messages 0 and 2 go initiator -> responder. */
static bool our_turn(const struct dc_noise_hs *hs)
{
    return hs->step < 3 && ((hs->step % 2 == 0) == hs->initiator);
}

int dc_noise_hs_write(struct dc_noise_hs *hs, const uint8_t *payload, size_t plen, uint8_t *out,
                      size_t cap, size_t *out_len)
{
    size_t pos = 0, n;
    int rc;

    *out_len = 0;
    if (!our_turn(hs))
        return DC_ESTATE;
    /* Upper bound: e (32) + encrypted s (48) + payload + tag. */
    if (cap < 32 + 48 + plen + DC_NOISE_TAG_LEN)
        return DC_ELIMIT;
    switch (hs->step) {
    case 0: /* -> e */
        rc = make_ephemeral(hs);
        if (rc < 0)
            return rc;
        memcpy(out, hs->e_pk, 32);
        mix_hash(hs, hs->e_pk, 32);
        pos = 32;
        break;
    case 1: /* <- e, ee, s, es */
        rc = make_ephemeral(hs);
        if (rc < 0)
            return rc;
        memcpy(out, hs->e_pk, 32);
        mix_hash(hs, hs->e_pk, 32);
        pos = 32;
        rc = mix_dh(hs, hs->e_sk, hs->re);
        if (rc < 0)
            return rc;
        rc = encrypt_and_hash(hs, hs->s_pk, 32, out + pos, &n);
        if (rc < 0)
            return rc;
        pos += n;
        rc = mix_dh(hs, hs->s_sk, hs->re);
        if (rc < 0)
            return rc;
        break;
    default: /* -> s, se */
        rc = encrypt_and_hash(hs, hs->s_pk, 32, out, &n);
        if (rc < 0)
            return rc;
        pos = n;
        rc = mix_dh(hs, hs->s_sk, hs->re);
        if (rc < 0)
            return rc;
        break;
    }
    rc = encrypt_and_hash(hs, payload, plen, out + pos, &n);
    if (rc < 0)
        return rc;
    *out_len = pos + n;
    hs->step++;
    return 0;
}

int dc_noise_hs_read(struct dc_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload,
                     size_t cap, size_t *plen)
{
    size_t pos = 0, rest;
    int rc;

    *plen = 0;
    if (hs->step >= 3 || our_turn(hs))
        return DC_ESTATE;
    switch (hs->step) {
    case 0: /* -> e */
        if (len < 32)
            return DC_ECORRUPT;
        memcpy(hs->re, msg, 32);
        mix_hash(hs, hs->re, 32);
        pos = 32;
        break;
    case 1: /* <- e, ee, s, es */
        if (len < 32 + 48 + DC_NOISE_TAG_LEN)
            return DC_ECORRUPT;
        memcpy(hs->re, msg, 32);
        mix_hash(hs, hs->re, 32);
        rc = mix_dh(hs, hs->e_sk, hs->re);
        if (rc < 0)
            return rc;
        rc = decrypt_and_hash(hs, msg + 32, 48, hs->rs);
        if (rc < 0)
            return rc;
        rc = mix_dh(hs, hs->e_sk, hs->rs);
        if (rc < 0)
            return rc;
        pos = 80;
        break;
    default: /* -> s, se */
        if (len < 48 + DC_NOISE_TAG_LEN)
            return DC_ECORRUPT;
        rc = decrypt_and_hash(hs, msg, 48, hs->rs);
        if (rc < 0)
            return rc;
        rc = mix_dh(hs, hs->e_sk, hs->rs);
        if (rc < 0)
            return rc;
        pos = 48;
        break;
    }
    rest = len - pos;
    if (hs->cs.has_key) {
        if (rest < DC_NOISE_TAG_LEN)
            return DC_ECORRUPT;
        if (rest - DC_NOISE_TAG_LEN > cap)
            return DC_ELIMIT;
        *plen = rest - DC_NOISE_TAG_LEN;
    } else {
        if (rest > cap)
            return DC_ELIMIT;
        *plen = rest;
    }
    rc = decrypt_and_hash(hs, msg + pos, rest, payload);
    if (rc < 0) {
        *plen = 0;
        return rc;
    }
    hs->step++;
    return 0;
}

void dc_noise_hs_split(const struct dc_noise_hs *hs, struct dc_noise_cipher *c1,
                       struct dc_noise_cipher *c2)
{
    memset(c1, 0, sizeof(*c1));
    memset(c2, 0, sizeof(*c2));
    hkdf2(hs->ck, NULL, 0, c1->k, c2->k);
    c1->has_key = c2->has_key = true;
}

void dc_noise_hs_cleanup(struct dc_noise_hs *hs)
{
    sodium_memzero(hs, sizeof(*hs));
}

/* ---- libp2p payload ------------------------------------------------------------------- */

/* Builds our payload: identity key and its signature over the prefix and our static key. */
static int payload_encode(const struct dc_identity *id, const uint8_t s_pk[32], uint8_t *out,
                          size_t cap, size_t *len)
{
    Dc__Noise__NoiseHandshakePayload pl = DC__NOISE__NOISE_HANDSHAKE_PAYLOAD__INIT;
    uint8_t key[DC_ED25519_PUBLIC_KEY_PROTO_LEN], sig[DC_ED25519_SIGNATURE_LEN];
    uint8_t msg[SIG_PREFIX_N + 32];
    size_t key_len;
    int rc;

    rc = dc_identity_public_key_proto(id, key, sizeof(key), &key_len);
    if (rc < 0)
        return rc;
    memcpy(msg, DC_NOISE_SIG_PREFIX, SIG_PREFIX_N);
    memcpy(msg + SIG_PREFIX_N, s_pk, 32);
    rc = dc_identity_sign(id, msg, sizeof(msg), sig);
    if (rc < 0)
        return rc;
    pl.has_identity_key = pl.has_identity_sig = 1;
    pl.identity_key.data = key;
    pl.identity_key.len = key_len;
    pl.identity_sig.data = sig;
    pl.identity_sig.len = sizeof(sig);
    if (dc__noise__noise_handshake_payload__get_packed_size(&pl) > cap)
        return DC_ELIMIT;
    *len = dc__noise__noise_handshake_payload__pack(&pl, out);
    return 0;
}

/*
 * Checks the peer's payload against the static key 'rs' it sent in the same message: the
 * identity key must be Ed25519 and sign "noise-libp2p-static-key:" || rs. Fills 'peer' and
 * copies the encoded key to key_out (up to *key_len bytes on entry, the length on return).
 */
static int payload_verify(const uint8_t *p, size_t len, const uint8_t rs[32],
                          struct dc_peer_id *peer, uint8_t *key_out, size_t *key_len)
{
    Dc__Noise__NoiseHandshakePayload *pl;
    struct dc_public_key pk;
    uint8_t msg[SIG_PREFIX_N + 32];
    int rc;

    pl = dc__noise__noise_handshake_payload__unpack(&dc_pb_allocator, len, p);
    if (pl == NULL)
        return DC_ECORRUPT; /* protobuf-c does not tell a bad message from a failed malloc */
    if (!pl->has_identity_key || !pl->has_identity_sig) {
        rc = DC_ECORRUPT;
        goto out;
    }
    rc = dc_public_key_proto_decode(pl->identity_key.data, pl->identity_key.len, &pk);
    if (rc < 0)
        goto out;
    if (pk.type != DC_KEY_ED25519) {
        rc = DC_EUNSUPPORTED;
        goto out;
    }
    if (pl->identity_sig.len != DC_ED25519_SIGNATURE_LEN) {
        rc = DC_ECRYPTO;
        goto out;
    }
    memcpy(msg, DC_NOISE_SIG_PREFIX, SIG_PREFIX_N);
    memcpy(msg + SIG_PREFIX_N, rs, 32);
    rc = dc_ed25519_verify(pk.data, msg, sizeof(msg), pl->identity_sig.data);
    if (rc < 0)
        goto out;
    rc = dc_peer_id_from_public_key_proto(pl->identity_key.data, pl->identity_key.len, peer);
    if (rc < 0)
        goto out;
    if (pl->identity_key.len > *key_len) {
        rc = DC_ECORRUPT;
        goto out;
    }
    memcpy(key_out, pl->identity_key.data, pl->identity_key.len);
    *key_len = pl->identity_key.len;
out:
    dc__noise__noise_handshake_payload__free_unpacked(pl, &dc_pb_allocator);
    return rc;
}

/* ---- the session ---------------------------------------------------------------------- */

#define DEFAULT_MAX_OUTPUT    (4u * 1024u * 1024u)
#define DEFAULT_MAX_PLAINTEXT (1024u * 1024u)
#define REMOTE_KEY_MAX        128

struct dc_noise {
    const struct dc_identity *id;
    struct dc_noise_hs hs;
    struct dc_noise_cipher tx, rx;
    bool has_expected;
    struct dc_peer_id expected;
    bool have_remote;
    struct dc_peer_id remote;
    uint8_t remote_key[REMOTE_KEY_MAX];
    size_t remote_key_len;
    bool done;
    int err; /* first error; every later feed/write fails */
    /* Incoming bytes of the message being reassembled (length prefix included). */
    uint8_t *msg;
    size_t msg_have;
    struct dc_buf out;
    struct dc_buf plain;
    size_t max_output;
    uint8_t scratch[DC_NOISE_MAX_MESSAGE]; /* decrypted handshake payloads and frames */
};

/* Queues one handshake message with its length prefix. */
static int queue_hs_message(struct dc_noise *n, const uint8_t *payload, size_t plen)
{
    uint8_t buf[LEN_PREFIX + 32 + 48 + MAX_OUR_PAYLOAD + DC_NOISE_TAG_LEN];
    size_t len;
    int rc;

    rc = dc_noise_hs_write(&n->hs, payload, plen, buf + LEN_PREFIX, sizeof(buf) - LEN_PREFIX, &len);
    if (rc < 0)
        return rc;
    buf[0] = (uint8_t)(len >> 8);
    buf[1] = (uint8_t)len;
    rc = dc_buf_append(&n->out, buf, LEN_PREFIX + len);
    sodium_memzero(buf, sizeof(buf));
    return rc;
}

/* Writes our next handshake message: empty payload first, then the signed one. */
static int send_next(struct dc_noise *n)
{
    uint8_t payload[MAX_OUR_PAYLOAD];
    size_t plen = 0;
    int rc;

    if (n->hs.step > 0) {
        rc = payload_encode(n->id, n->hs.s_pk, payload, sizeof(payload), &plen);
        if (rc < 0)
            return rc;
    }
    return queue_hs_message(n, payload, plen);
}

static void finish_handshake(struct dc_noise *n)
{
    struct dc_noise_cipher c1, c2;

    dc_noise_hs_split(&n->hs, &c1, &c2);
    n->tx = n->hs.initiator ? c1 : c2;
    n->rx = n->hs.initiator ? c2 : c1;
    sodium_memzero(&c1, sizeof(c1));
    sodium_memzero(&c2, sizeof(c2));
    /* Keep h for dc_noise_handshake_hash(); drop every other secret. */
    sodium_memzero(n->hs.ck, sizeof(n->hs.ck));
    sodium_memzero(&n->hs.cs, sizeof(n->hs.cs));
    sodium_memzero(n->hs.s_sk, sizeof(n->hs.s_sk));
    sodium_memzero(n->hs.e_sk, sizeof(n->hs.e_sk));
    n->done = true;
}

/* Handles one complete handshake message m[0..len) from the peer. Returns 1 when the
 * handshake is now complete. */
static int on_hs_message(struct dc_noise *n, const uint8_t *m, size_t len)
{
    size_t plen;
    int rc;

    rc = dc_noise_hs_read(&n->hs, m, len, n->scratch, sizeof(n->scratch), &plen);
    if (rc < 0)
        return rc;
    if (n->hs.step >= 2) {
        /* Messages 2 and 3 carry the peer's identity; message 1's payload is ignored. */
        size_t key_len = sizeof(n->remote_key);

        rc = payload_verify(n->scratch, plen, n->hs.rs, &n->remote, n->remote_key, &key_len);
        if (rc < 0)
            return rc;
        n->remote_key_len = key_len;
        n->have_remote = true;
        if (n->has_expected && !dc_peer_id_equal(&n->remote, &n->expected))
            return DC_EPEER;
    }
    if (n->hs.step < 3) {
        rc = send_next(n);
        if (rc < 0)
            return rc;
    }
    if (n->hs.step == 3) {
        finish_handshake(n);
        return 1;
    }
    return 0;
}

/* Makes room for 'extra' more bytes in n->plain (the caller checked its cap), keeping the
 * dc_buf invariant of a NUL past 'len'. The buffer only grows: it settles at the most
 * plaintext one read produces. */
static int plain_reserve(struct dc_noise *n, size_t extra)
{
    struct dc_buf *b = &n->plain;
    size_t need = b->len + extra + 1, cap = b->cap != 0 ? b->cap : 64u * 1024u;
    uint8_t *p;

    if (need <= b->cap)
        return 0;
    while (cap < need)
        cap *= 2;
    p = dc_realloc(b->data, cap);
    if (p == NULL)
        return DC_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* Decrypts one transport message straight into the plaintext buffer (no staging copy). */
static int on_transport_frame(struct dc_noise *n, const uint8_t *c, size_t len)
{
    size_t plen;
    int rc;

    if (len < DC_NOISE_TAG_LEN)
        return DC_ECORRUPT;
    plen = len - DC_NOISE_TAG_LEN;
    if (n->plain.len + plen > n->plain.max)
        return DC_ELIMIT;
    rc = plain_reserve(n, plen);
    if (rc < 0)
        return rc;
    rc = dc_noise_cipher_decrypt(&n->rx, NULL, 0, c, len, n->plain.data + n->plain.len);
    if (rc < 0)
        return rc;
    n->plain.len += plen;
    n->plain.data[n->plain.len] = '\0';
    return 0;
}

int dc_noise_new(const struct dc_noise_config *cfg, struct dc_noise **out)
{
    struct dc_noise *n;
    uint8_t s_sk[32];
    int rc;

    *out = NULL;
    if (cfg->identity == NULL)
        return DC_EINVAL;
    rc = dc_crypto_init();
    if (rc < 0)
        return rc;
    n = dc_calloc(1, sizeof(*n));
    if (n == NULL)
        return DC_ENOMEM;
    n->msg = dc_malloc(LEN_PREFIX + DC_NOISE_MAX_MESSAGE);
    if (n->msg == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    n->id = cfg->identity;
    n->max_output = cfg->max_output ? cfg->max_output : DEFAULT_MAX_OUTPUT;
    dc_buf_init(&n->out, n->max_output + LEN_PREFIX + DC_NOISE_MAX_MESSAGE);
    dc_buf_init(&n->plain, cfg->max_plaintext ? cfg->max_plaintext : DEFAULT_MAX_PLAINTEXT);
    if (cfg->expected_peer != NULL) {
        n->expected = *cfg->expected_peer;
        n->has_expected = true;
    }
    /* The Noise static key is per session: libp2p authenticates it with the identity key,
     * so nothing is gained by keeping one across connections. */
    if (cfg->static_secret != NULL)
        memcpy(s_sk, cfg->static_secret, sizeof(s_sk));
    else
        randombytes_buf(s_sk, sizeof(s_sk));
    rc = dc_noise_hs_init(&n->hs, cfg->initiator, NULL, 0, s_sk, cfg->ephemeral_secret);
    sodium_memzero(s_sk, sizeof(s_sk));
    if (rc < 0)
        goto err_free;
    if (cfg->initiator) {
        rc = send_next(n);
        if (rc < 0)
            goto err_free;
    }
    *out = n;
    return 0;

err_free:
    dc_noise_free(n);
    return rc;
}

void dc_noise_free(struct dc_noise *n)
{
    if (n == NULL)
        return;
    dc_buf_cleanup(&n->out);
    if (n->plain.data != NULL)
        sodium_memzero(n->plain.data, n->plain.cap);
    dc_buf_cleanup(&n->plain);
    dc_free(n->msg);
    sodium_memzero(n, sizeof(*n));
    dc_free(n);
}

int dc_noise_feed(struct dc_noise *n, const uint8_t *in, size_t len)
{
    bool completed = false;
    int rc = 0;

    if (n->err < 0)
        return DC_ESTATE;
    while (len > 0) {
        size_t need, take, body;

        /* A whole transport frame in the input: decrypt it from there (no copy). */
        if (n->done && n->msg_have == 0 && len >= LEN_PREFIX) {
            body = ((size_t)in[0] << 8) | in[1];
            if (len >= LEN_PREFIX + body) {
                rc = on_transport_frame(n, in + LEN_PREFIX, body);
                if (rc < 0)
                    break;
                in += LEN_PREFIX + body;
                len -= LEN_PREFIX + body;
                continue;
            }
        }
        /* First the 2-byte length, then the body it announces. */
        need = LEN_PREFIX;
        if (n->msg_have >= LEN_PREFIX)
            need += ((size_t)n->msg[0] << 8) | n->msg[1];
        take = need - n->msg_have;
        if (take > len)
            take = len;
        memcpy(n->msg + n->msg_have, in, take);
        n->msg_have += take;
        in += take;
        len -= take;
        if (n->msg_have < LEN_PREFIX)
            break;
        body = ((size_t)n->msg[0] << 8) | n->msg[1];
        if (n->msg_have < LEN_PREFIX + body)
            continue;
        n->msg_have = 0;
        if (n->done) {
            rc = on_transport_frame(n, n->msg + LEN_PREFIX, body);
        } else {
            rc = on_hs_message(n, n->msg + LEN_PREFIX, body);
            if (rc == 1) {
                completed = true;
                rc = 0;
            }
        }
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        n->err = rc;
        return rc;
    }
    return completed ? 1 : 0;
}

bool dc_noise_is_done(const struct dc_noise *n)
{
    return n->done;
}

const uint8_t *dc_noise_output(const struct dc_noise *n, size_t *len)
{
    *len = n->out.len;
    return n->out.data;
}

void dc_noise_output_consume(struct dc_noise *n, size_t k)
{
    dc_buf_consume(&n->out, k);
}

size_t dc_noise_write_room(const struct dc_noise *n)
{
    size_t free_bytes, frames;

    if (!n->done || n->err < 0 || n->out.len >= n->max_output)
        return 0;
    free_bytes = n->max_output - n->out.len;
    frames = free_bytes / (LEN_PREFIX + DC_NOISE_MAX_MESSAGE) + 1;
    if (free_bytes <= frames * (LEN_PREFIX + DC_NOISE_TAG_LEN))
        return 0;
    return free_bytes - frames * (LEN_PREFIX + DC_NOISE_TAG_LEN);
}

int dc_noise_write(struct dc_noise *n, const void *p, size_t len)
{
    const uint8_t *src = p;
    size_t frames, total, old_len;
    int rc;

    if (!n->done || n->err < 0)
        return DC_ESTATE;
    if (len == 0)
        return 0;
    frames = (len + DC_NOISE_MAX_PLAINTEXT - 1) / DC_NOISE_MAX_PLAINTEXT;
    total = len + frames * (LEN_PREFIX + DC_NOISE_TAG_LEN);
    if (total > n->max_output || n->out.len + total > n->max_output)
        return DC_ELIMIT;
    old_len = n->out.len;
    while (len > 0) {
        size_t chunk = len < DC_NOISE_MAX_PLAINTEXT ? len : DC_NOISE_MAX_PLAINTEXT;
        size_t flen = chunk + DC_NOISE_TAG_LEN;
        uint8_t hdr[LEN_PREFIX] = {(uint8_t)(flen >> 8), (uint8_t)flen};

        rc = dc_noise_cipher_encrypt(&n->tx, NULL, 0, src, chunk, n->scratch);
        if (rc == 0)
            rc = dc_buf_append(&n->out, hdr, sizeof(hdr));
        if (rc == 0)
            rc = dc_buf_append(&n->out, n->scratch, flen);
        if (rc < 0) {
            /* Frames already encrypted used nonces; the stream cannot be resumed. */
            n->out.len = old_len;
            n->err = rc;
            return rc;
        }
        src += chunk;
        len -= chunk;
    }
    return 0;
}

size_t dc_noise_sealed_len(size_t len)
{
    size_t frames = (len + DC_NOISE_MAX_PLAINTEXT - 1) / DC_NOISE_MAX_PLAINTEXT;

    return len + frames * (LEN_PREFIX + DC_NOISE_TAG_LEN);
}

int dc_noise_seal(struct dc_noise *n, const void *p, size_t len, uint8_t *out, size_t cap,
                  size_t *out_len)
{
    const uint8_t *src = p;
    size_t pos = 0;
    int rc;

    *out_len = 0;
    if (!n->done || n->err < 0 || n->out.len > 0)
        return DC_ESTATE;
    if (cap < dc_noise_sealed_len(len))
        return DC_ELIMIT;
    while (len > 0) {
        size_t chunk = len < DC_NOISE_MAX_PLAINTEXT ? len : DC_NOISE_MAX_PLAINTEXT;
        size_t flen = chunk + DC_NOISE_TAG_LEN;

        out[pos] = (uint8_t)(flen >> 8);
        out[pos + 1] = (uint8_t)flen;
        rc = dc_noise_cipher_encrypt(&n->tx, NULL, 0, src, chunk, out + pos + LEN_PREFIX);
        if (rc < 0) {
            n->err = rc;
            return rc;
        }
        pos += LEN_PREFIX + flen;
        src += chunk;
        len -= chunk;
    }
    *out_len = pos;
    return 0;
}

void dc_noise_sealer_init(struct dc_noise_sealer *s, uint8_t *out, size_t cap)
{
    s->out = out;
    s->cap = cap;
    s->len = 0;
    s->fill = 0;
}

/* Room for plaintext in the open message, under both the message limit and 'cap'. */
static size_t sealer_room(const struct dc_noise_sealer *s)
{
    size_t at = s->len + LEN_PREFIX + s->fill, r = DC_NOISE_MAX_PLAINTEXT - s->fill;

    if (at + DC_NOISE_TAG_LEN >= s->cap)
        return 0;
    return r < s->cap - at - DC_NOISE_TAG_LEN ? r : s->cap - at - DC_NOISE_TAG_LEN;
}

size_t dc_noise_sealer_space(const struct dc_noise_sealer *s)
{
    size_t room = sealer_room(s), total = room, left;

    if (room < DC_NOISE_MAX_PLAINTEXT - s->fill)
        return total; /* 'cap' ends inside the open message */
    left = s->cap - (s->len + LEN_PREFIX + DC_NOISE_MAX_MESSAGE);
    while (left > LEN_PREFIX + DC_NOISE_TAG_LEN) {
        size_t msg = left - LEN_PREFIX - DC_NOISE_TAG_LEN;

        if (msg > DC_NOISE_MAX_PLAINTEXT)
            msg = DC_NOISE_MAX_PLAINTEXT;
        total += msg;
        left -= msg + LEN_PREFIX + DC_NOISE_TAG_LEN;
    }
    return total;
}

/*
 * ChaCha20-Poly1305 (RFC 8439, as libsodium's _ietf AEAD) taken apart so that a message can
 * be encrypted piece by piece from different sources: the keystream of byte 'off' of the
 * plaintext is block 1 + off / 64 (block 0 keys Poly1305), so each piece is XORed with
 * crypto_stream_chacha20_ietf_xor_ic() from its block, a piece that starts inside a block
 * going through a 64-byte scratch block first. The tag is computed at the close over the
 * ciphertext, exactly as crypto_aead_chacha20poly1305_ietf_encrypt() does (no AD).
 */
static void xor_at(const struct dc_noise_cipher *c, uint8_t *dst, const uint8_t *src, size_t len,
                   size_t off)
{
    uint8_t nonce[12];

    nonce_bytes(c->n, nonce);
    if (off % 64 != 0) {
        uint8_t blk[64] = {0};
        size_t in = off % 64, k = 64 - in < len ? 64 - in : len;

        memcpy(blk + in, src, k);
        crypto_stream_chacha20_ietf_xor_ic(blk, blk, sizeof(blk), nonce, (uint32_t)(1 + off / 64),
                                           c->k);
        memcpy(dst, blk + in, k);
        sodium_memzero(blk, sizeof(blk));
        dst += k;
        src += k;
        len -= k;
        off += k;
    }
    if (len > 0)
        crypto_stream_chacha20_ietf_xor_ic(dst, src, len, nonce, (uint32_t)(1 + off / 64), c->k);
}

/* Tags the open message (its plaintext already encrypted in place) and closes it. */
static int sealer_close(struct dc_noise *n, struct dc_noise_sealer *s)
{
    static const uint8_t pad0[16];
    uint8_t *m = s->out + s->len, block0[64], nonce[12], lens[16];
    size_t flen = s->fill + DC_NOISE_TAG_LEN;
    crypto_onetimeauth_poly1305_state st;

    if (n->tx.n == UINT64_MAX) {
        n->err = DC_ELIMIT;
        return DC_ELIMIT;
    }
    nonce_bytes(n->tx.n, nonce);
    crypto_stream_chacha20_ietf(block0, sizeof(block0), nonce, n->tx.k);
    crypto_onetimeauth_poly1305_init(&st, block0);
    crypto_onetimeauth_poly1305_update(&st, m + LEN_PREFIX, s->fill);
    crypto_onetimeauth_poly1305_update(&st, pad0, (0x10 - s->fill) & 0xf);
    memset(lens, 0, 8); /* AD length 0, then the ciphertext length, both 64-bit LE */
    for (int i = 0; i < 8; i++)
        lens[8 + i] = (uint8_t)((uint64_t)s->fill >> (8 * i));
    crypto_onetimeauth_poly1305_update(&st, lens, sizeof(lens));
    crypto_onetimeauth_poly1305_final(&st, m + LEN_PREFIX + s->fill);
    sodium_memzero(block0, sizeof(block0));
    sodium_memzero(&st, sizeof(st));
    m[0] = (uint8_t)(flen >> 8);
    m[1] = (uint8_t)flen;
    n->tx.n++;
    s->len += LEN_PREFIX + flen;
    s->fill = 0;
    return 0;
}

int dc_noise_sealer_put(struct dc_noise *n, struct dc_noise_sealer *s, const void *p, size_t len,
                        size_t *taken)
{
    const uint8_t *src = p;
    size_t done = 0;
    int rc = 0;

    *taken = 0;
    if (!n->done || n->err < 0 || n->out.len > 0)
        return DC_ESTATE;
    while (done < len) {
        size_t room = sealer_room(s);

        if (room == 0)
            break;
        if (room > len - done)
            room = len - done;
        xor_at(&n->tx, s->out + s->len + LEN_PREFIX + s->fill, src + done, room, s->fill);
        s->fill += room;
        done += room;
        if (s->fill == DC_NOISE_MAX_PLAINTEXT) {
            rc = sealer_close(n, s);
            if (rc < 0)
                break;
        }
    }
    *taken = done;
    return rc;
}

int dc_noise_sealer_finish(struct dc_noise *n, struct dc_noise_sealer *s, size_t *len)
{
    int rc = 0;

    *len = 0;
    if (!n->done || n->err < 0 || n->out.len > 0)
        return DC_ESTATE;
    if (s->fill > 0)
        rc = sealer_close(n, s);
    *len = s->len;
    return rc;
}

const uint8_t *dc_noise_plaintext(const struct dc_noise *n, size_t *len)
{
    *len = n->plain.len;
    return n->plain.data;
}

void dc_noise_plaintext_consume(struct dc_noise *n, size_t k)
{
    dc_buf_consume(&n->plain, k);
}

const struct dc_peer_id *dc_noise_remote_peer(const struct dc_noise *n)
{
    return n->have_remote ? &n->remote : NULL;
}

int dc_noise_remote_identity_key(const struct dc_noise *n, uint8_t *out, size_t cap, size_t *len)
{
    if (!n->have_remote)
        return DC_ESTATE;
    if (cap < n->remote_key_len)
        return DC_ELIMIT;
    memcpy(out, n->remote_key, n->remote_key_len);
    *len = n->remote_key_len;
    return 0;
}

int dc_noise_handshake_hash(const struct dc_noise *n, uint8_t out[DC_NOISE_HASH_LEN])
{
    if (!n->done)
        return DC_ESTATE;
    memcpy(out, n->hs.h, DC_NOISE_HASH_LEN);
    return 0;
}

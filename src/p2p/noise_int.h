/* SPDX-License-Identifier: MIT */
/*
 * noise_int.h - the raw Noise framework objects under dc_noise (Noise spec rev 34, sections 5
 * and 7): a CipherState, and an XX HandshakeState with arbitrary prologue and payloads. The
 * libp2p session in noise.c is built on them; the unit test drives them directly to check the
 * published test vectors byte for byte. Not for other modules.
 */
#ifndef DC_P2P_NOISE_INT_H
#define DC_P2P_NOISE_INT_H

#include "p2p/noise.h"

/* CipherState: key, nonce. 'has_key' false means EncryptWithAd is the identity. */
struct dc_noise_cipher {
    uint8_t k[DC_NOISE_KEY_LEN];
    uint64_t n;
    bool has_key;
};

/* HandshakeState for XX: the SymmetricState (ck, h, cipher) plus the DH keys. */
struct dc_noise_hs {
    uint8_t ck[DC_NOISE_HASH_LEN];
    uint8_t h[DC_NOISE_HASH_LEN];
    struct dc_noise_cipher cs;
    uint8_t s_sk[32], s_pk[32];
    uint8_t e_sk[32], e_pk[32];
    uint8_t rs[32], re[32];
    bool initiator;
    bool fixed_e; /* e_sk was given (tests); otherwise drawn when first needed */
    int step;     /* next message: 0, 1, 2; 3 = done */
};

/*
 * Initialises 'hs' for XX with 'prologue' (may be empty). 's_sk' is the static X25519 secret;
 * 'e_sk' the ephemeral secret or NULL for a random one. Returns 0 or DC_ECRYPTO.
 */
DC_MUST_CHECK int dc_noise_hs_init(struct dc_noise_hs *hs, bool initiator, const uint8_t *prologue,
                                   size_t prologue_len, const uint8_t s_sk[32],
                                   const uint8_t *e_sk);

/*
 * Writes the next handshake message (this side's turn) carrying payload[0..plen) into
 * out[0..cap); '*out_len' gets its length. Returns 0, DC_ESTATE when it is not our turn,
 * DC_ELIMIT when 'cap' is too small, DC_ECRYPTO on a failed DH (weak remote key).
 */
DC_MUST_CHECK int dc_noise_hs_write(struct dc_noise_hs *hs, const uint8_t *payload, size_t plen,
                                    uint8_t *out, size_t cap, size_t *out_len);

/*
 * Reads the peer's next handshake message msg[0..len), decrypting its payload into
 * payload[0..cap) ('*plen' its length). Returns 0, DC_ESTATE when it is not the peer's turn,
 * DC_ECORRUPT when the message is too short for its tokens, DC_ELIMIT when 'cap' is too small,
 * DC_ECRYPTO when authentication or a DH fails. On failure 'hs' must be discarded.
 */
DC_MUST_CHECK int dc_noise_hs_read(struct dc_noise_hs *hs, const uint8_t *msg, size_t len,
                                   uint8_t *payload, size_t cap, size_t *plen);

/* After the third message: the initiator-to-responder and responder-to-initiator ciphers. */
void dc_noise_hs_split(const struct dc_noise_hs *hs, struct dc_noise_cipher *c1,
                       struct dc_noise_cipher *c2);

/* Wipes the secrets in 'hs'. */
void dc_noise_hs_cleanup(struct dc_noise_hs *hs);

/*
 * EncryptWithAd: out[0..len+16) = ChaCha20-Poly1305(k, nonce n, ad, p[0..len)); n advances.
 * 'out' may not overlap 'p'. Without a key it copies. Returns 0 or DC_ELIMIT when the nonce
 * space is used up.
 */
DC_MUST_CHECK int dc_noise_cipher_encrypt(struct dc_noise_cipher *c, const uint8_t *ad,
                                          size_t ad_len, const uint8_t *p, size_t len,
                                          uint8_t *out);

/*
 * DecryptWithAd: out[0..len-16) from ciphertext p[0..len). The nonce advances only on
 * success. Returns 0, DC_ECORRUPT when len < 16 (with a key), DC_ECRYPTO when authentication
 * fails, DC_ELIMIT when the nonce space is used up.
 */
DC_MUST_CHECK int dc_noise_cipher_decrypt(struct dc_noise_cipher *c, const uint8_t *ad,
                                          size_t ad_len, const uint8_t *p, size_t len,
                                          uint8_t *out);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * noise.h - the libp2p Noise secure channel (libp2p/specs noise/README.md): the
 * Noise_XX_25519_ChaChaPoly_SHA256 handshake, the libp2p handshake payload that binds each
 * side's Noise static key to its Ed25519 identity, and the framed transport that follows.
 *
 * Like the other protocol cores in p2p.h this does no I/O: the host feeds it the bytes that
 * multistream-select left after agreeing on "/noise", writes out dc_noise_output(), and once
 * the handshake is done moves application bytes through dc_noise_write() (plaintext in,
 * framed ciphertext queued) and dc_noise_plaintext() (decrypted bytes out).
 *
 * Wire format: every Noise message, handshake or transport, is a 2-byte big-endian length
 * followed by that many bytes (at most 65535, so a transport frame carries at most 65519
 * plaintext bytes after the 16-byte tag).
 *
 * Handshake (XX, empty prologue):
 *   -> e                          empty payload
 *   <- e, ee, s, es               responder's NoiseHandshakePayload
 *   -> s, se                      initiator's NoiseHandshakePayload
 * Each payload carries the identity PublicKey and an Ed25519 signature over
 * "noise-libp2p-static-key:" || the Noise static public key; the receiver verifies it and
 * derives the peer's PeerId from the key. A dialer that knows whom it called (/p2p/ part of
 * the multiaddr) passes that PeerId and the handshake fails when the key does not match.
 */
#ifndef DC_P2P_NOISE_H
#define DC_P2P_NOISE_H

#include "base/base.h"
#include "crypto/crypto.h"

#define DC_NOISE_PROTOCOL_ID   "/noise"
#define DC_NOISE_PROTOCOL_NAME "Noise_XX_25519_ChaChaPoly_SHA256"
/* Largest Noise message (length-prefix limit) and the plaintext one transport frame holds. */
#define DC_NOISE_MAX_MESSAGE   65535
#define DC_NOISE_TAG_LEN       16
#define DC_NOISE_MAX_PLAINTEXT (DC_NOISE_MAX_MESSAGE - DC_NOISE_TAG_LEN)
#define DC_NOISE_KEY_LEN       32
#define DC_NOISE_HASH_LEN      32
/* The prefix of the message each side signs with its identity key. */
#define DC_NOISE_SIG_PREFIX "noise-libp2p-static-key:"

struct dc_noise;

struct dc_noise_config {
    bool initiator; /* true on the dialing side: it sends the first message */
    /* Our identity (borrowed: must outlive the session); it signs our static key. */
    const struct dc_identity *identity;
    /* Optional (copied): the PeerId the dialer expects; a different one fails the handshake
     * with DC_EPEER. NULL accepts any peer (listeners, dials without /p2p/). */
    const struct dc_peer_id *expected_peer;
    /* Optional X25519 secret keys (32 bytes, copied) for reproducible tests; NULL draws fresh
     * random ones, which is what every real connection must do. */
    const uint8_t *static_secret;
    const uint8_t *ephemeral_secret;
    /* Cap on queued, unwritten ciphertext (0: 4 MiB). */
    size_t max_output;
    /* Cap on decrypted bytes not yet taken with dc_noise_plaintext_consume() (0: 1 MiB). */
    size_t max_plaintext;
};

/*
 * Creates a session. 'cfg' is copied (the identity is borrowed). An initiator queues its first
 * handshake message at once: write out dc_noise_output(). Returns 0 with '*out' owning the
 * session (release with dc_noise_free), DC_EINVAL when cfg->identity is NULL, DC_ECRYPTO when
 * libsodium cannot initialise or a given secret is unusable, or DC_ENOMEM.
 */
DC_MUST_CHECK int dc_noise_new(const struct dc_noise_config *cfg, struct dc_noise **out);

/* Wipes the keys and frees 'n'. NULL is a no-op. */
void dc_noise_free(struct dc_noise *n);

/*
 * Consumes received bytes in[0..len), in any split (partial messages are kept). During the
 * handshake it processes handshake messages and queues our answers; bytes after the final
 * handshake message, and everything fed afterwards, are transport frames, decrypted into the
 * plaintext buffer (take them with dc_noise_plaintext after every call). Returns:
 *   1   this call completed the handshake: dc_noise_remote_peer() is valid from now on;
 *   0   all bytes consumed (handshake still running, or transport data);
 *   DC_ECRYPTO   a message failed authentication, a remote key is weak, or the remote
 *                identity's signature over its static key does not verify;
 *   DC_EPEER     the remote PeerId is not the expected one;
 *   DC_ECORRUPT  a malformed message (wrong size for its step, bad payload protobuf, no
 *                identity key or signature, a transport frame shorter than the tag);
 *   DC_EUNSUPPORTED  the remote identity key is not Ed25519;
 *   DC_ELIMIT    the plaintext buffer would exceed max_plaintext, or our answer the output cap;
 *   DC_ENOMEM;
 *   DC_ESTATE    called after an error.
 * Errors are final; every later call returns DC_ESTATE. Close the connection.
 */
DC_MUST_CHECK int dc_noise_feed(struct dc_noise *n, const uint8_t *in, size_t len);

/* True once the handshake completed. */
bool dc_noise_is_done(const struct dc_noise *n);

/* Bytes queued for the peer (borrowed, valid until the next call on 'n'). */
const uint8_t *dc_noise_output(const struct dc_noise *n, size_t *len);
/* Marks the first k queued bytes as written. */
void dc_noise_output_consume(struct dc_noise *n, size_t k);

/*
 * Encrypts p[0..len) into transport frames of at most DC_NOISE_MAX_PLAINTEXT bytes each and
 * queues them (len 0 queues nothing). Returns 0; DC_ESTATE before the handshake completed or
 * after an error; DC_ELIMIT when the frames would not fit under max_output (nothing queued:
 * drain the output and retry); DC_ENOMEM.
 */
DC_MUST_CHECK int dc_noise_write(struct dc_noise *n, const void *p, size_t len);

/* Room under max_output for plaintext passed to dc_noise_write() now (framing accounted). */
size_t dc_noise_write_room(const struct dc_noise *n);

/* Bytes dc_noise_seal() produces for 'len' bytes of plaintext (2-byte lengths and tags). */
size_t dc_noise_sealed_len(size_t len);

/*
 * Like dc_noise_write(), but writes the frames straight into the caller's out[0..cap) instead
 * of the output queue, so a host can encrypt into its socket write buffer without a copy.
 * The output queue must be empty (frames must leave in order). On success '*out_len' is
 * dc_noise_sealed_len(len). Returns 0; DC_ESTATE before the handshake finished, after an
 * error or while queued output remains; DC_ELIMIT when 'cap' is too small; DC_ELIMIT when
 * the nonce space is exhausted (the session is then failed).
 */
DC_MUST_CHECK int dc_noise_seal(struct dc_noise *n, const void *p, size_t len, uint8_t *out,
                                size_t cap, size_t *out_len);

/*
 * Gathering seal, for a caller that assembles plaintext from several places (the host: yamux
 * control frames, then data frame headers and payloads from each stream's queue): every piece
 * is encrypted from where it lies straight into out[0..cap), laid out as a run of full-size
 * transport messages, and each message gets its tag once full (or at the finish). The bytes
 * are identical to dc_noise_seal() over the concatenated pieces, without first copying them
 * together. The session's output queue must be empty, as for dc_noise_seal(), and no other
 * write may run on the session between init and finish. Embedded; no cleanup.
 */
struct dc_noise_sealer {
    uint8_t *out;
    size_t cap;
    size_t len;  /* bytes of finished messages in out */
    size_t fill; /* plaintext bytes encrypted into the open message (at out + len + 2) */
};

/* Starts sealing into out[0..cap) (borrowed until the finish). */
void dc_noise_sealer_init(struct dc_noise_sealer *s, uint8_t *out, size_t cap);

/* Plaintext bytes that still fit (each further message needs 18 bytes of framing). */
size_t dc_noise_sealer_space(const struct dc_noise_sealer *s);

/*
 * Encrypts p[0..len) into the open message(s); '*taken' gets the bytes that fit (all of them
 * when len <= dc_noise_sealer_space()). Returns 0; DC_ESTATE before the handshake finished,
 * after an error or while queued output remains; DC_ELIMIT when the nonce space is exhausted
 * (the session is then failed).
 */
DC_MUST_CHECK int dc_noise_sealer_put(struct dc_noise *n, struct dc_noise_sealer *s, const void *p,
                                      size_t len, size_t *taken);

/* Tags the open message, if it holds plaintext; '*len' gets the bytes of out to send.
 * Errors as for dc_noise_sealer_put(). */
DC_MUST_CHECK int dc_noise_sealer_finish(struct dc_noise *n, struct dc_noise_sealer *s,
                                         size_t *len);

/* Decrypted bytes waiting (borrowed, valid until the next call on 'n'). */
const uint8_t *dc_noise_plaintext(const struct dc_noise *n, size_t *len);
/* Marks the first k decrypted bytes as taken. */
void dc_noise_plaintext_consume(struct dc_noise *n, size_t k);

/* The remote PeerId once its payload verified (borrowed, lives as long as 'n'), else NULL. */
const struct dc_peer_id *dc_noise_remote_peer(const struct dc_noise *n);

/*
 * Copies the remote identity's encoded PublicKey (as the peer sent it in its payload) to
 * out[0..cap), its length to '*len'. Returns 0, DC_ESTATE before it is known, DC_ELIMIT.
 */
DC_MUST_CHECK int dc_noise_remote_identity_key(const struct dc_noise *n, uint8_t *out, size_t cap,
                                               size_t *len);

/* The handshake hash h once done (channel binding; both sides see the same value).
 * Returns 0 or DC_ESTATE before the handshake completed. */
DC_MUST_CHECK int dc_noise_handshake_hash(const struct dc_noise *n, uint8_t out[DC_NOISE_HASH_LEN]);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * crypto.h - the node's identity and the libp2p key and PeerId formats, over libsodium.
 *
 * An identity is an Ed25519 key pair plus the PeerId derived from it. Keys cross the I/O
 * boundary in the libp2p protobuf encodings (peer-ids spec): PublicKey { Type = 1; Data = 32
 * bytes } for the wire, PrivateKey { Type = 1; Data = secret || public, 64 bytes } on disk, so
 * key files are interchangeable with go-libp2p, rust-libp2p and js-libp2p. A PeerId is a
 * multihash of the encoded public key: the identity multihash when the encoding is at most 42
 * bytes (every Ed25519 key: "12D3KooW..."), sha2-256 otherwise ("Qm..."). Text forms: the
 * base58btc multihash (what we print) and the CIDv1 "libp2p-key" form (which we also parse).
 *
 * Call dc_crypto_init() once at start-up; the functions that need randomness call it too.
 * Nothing here prints or logs, and no key byte ever reaches an error message.
 */
#ifndef DC_CRYPTO_H
#define DC_CRYPTO_H

#include "base/base.h"

#define DC_PEER_ID_MAX     64  /* bytes of a PeerId multihash we accept */
#define DC_PEER_ID_STR_MAX 128 /* room for any PeerId text form we print or parse, with NUL */

#define DC_ED25519_PUBLIC_KEY_LEN 32
#define DC_ED25519_SIGNATURE_LEN  64
/* An encoded Ed25519 PublicKey protobuf: 08 01 12 20 <32 bytes>. */
#define DC_ED25519_PUBLIC_KEY_PROTO_LEN 36
/* The longest encoded public key that gets the identity multihash (peer-ids spec). */
#define DC_PEER_ID_INLINE_KEY_MAX 42

/* Multicodec numbers used by PeerIds. */
#define DC_MULTIHASH_IDENTITY    0x00
#define DC_MULTIHASH_SHA2_256    0x12
#define DC_MULTICODEC_LIBP2P_KEY 0x72

/* libp2p KeyType enum values (the Type field of PublicKey/PrivateKey). */
enum dc_key_type {
    DC_KEY_RSA = 0,
    DC_KEY_ED25519 = 1,
    DC_KEY_SECP256K1 = 2,
    DC_KEY_ECDSA = 3,
};

/* A PeerId: the raw multihash bytes. Plain value; copy and compare freely. */
struct dc_peer_id {
    uint8_t bytes[DC_PEER_ID_MAX];
    size_t len;
};

/* A decoded PublicKey protobuf. 'data' borrows from the buffer that was decoded. */
struct dc_public_key {
    enum dc_key_type type;
    const uint8_t *data;
    size_t len;
};

/* Opaque: an Ed25519 key pair (libsodium's 64-byte secret key) and its PeerId. */
struct dc_identity;

/*
 * Initialises libsodium. Safe to call more than once and from several threads.
 * Returns 0, or DC_ECRYPTO when libsodium cannot initialise (no usable randomness source).
 */
DC_MUST_CHECK int dc_crypto_init(void);

/*
 * Creates a fresh random identity. On success '*out' owns it; release with dc_identity_free().
 * Returns 0, DC_ENOMEM, or DC_ECRYPTO when libsodium cannot initialise.
 */
DC_MUST_CHECK int dc_identity_generate(struct dc_identity **out);

/*
 * Creates an identity from an encoded libp2p PrivateKey protobuf (Type Ed25519, Data 64 bytes
 * secret || public, or the legacy 96 bytes secret || public || public). 'p' is borrowed and
 * may be wiped by the caller afterwards. Returns 0, DC_ENOMEM, DC_EUNSUPPORTED for a
 * well-formed key of another type, or DC_ECORRUPT for a malformed encoding or a public half
 * that does not belong to the secret.
 */
DC_MUST_CHECK int dc_identity_from_private_key_proto(const uint8_t *p, size_t len,
                                                     struct dc_identity **out);

/*
 * Loads an identity from a key file holding a libp2p PrivateKey protobuf (see above). The file
 * must be a regular file that neither group nor others may read or write (0600 or 0400).
 * On success '*out' owns the identity and 'err' is the empty string. On failure 'err' (when
 * not NULL, 'errlen' bytes) gets one line naming the file and the problem, never key bytes.
 * Returns 0; -ENOENT when the file does not exist; DC_EPERM when its mode lets group or others
 * in ("key file X has mode 0644; it must be 0600 (chmod 600 X)"); DC_ECORRUPT when the content
 * is not a valid Ed25519 private key (wrong size, malformed protobuf, other key type,
 * mismatched public half); DC_ENOMEM; or another -errno from open/read.
 */
DC_MUST_CHECK int dc_identity_load_file(const char *path, struct dc_identity **out, char *err,
                                        size_t errlen);

/*
 * Saves 'id' to 'path' in the format dc_identity_load_file() reads, atomically: the key is
 * written to a new temporary file beside 'path' (created O_EXCL with mode 0600), fsynced, then
 * moved into place, and the directory is fsynced. Without 'force' an existing file is never
 * replaced, even one that appears while we write. 'err' is as for dc_identity_load_file().
 * Returns 0; DC_EEXIST when 'path' exists and !force; DC_ENOMEM; or -errno (e.g. -ENOENT when
 * the directory does not exist, -EACCES).
 */
DC_MUST_CHECK int dc_identity_save_file(const struct dc_identity *id, const char *path, bool force,
                                        char *err, size_t errlen);

/* Wipes the secret key and frees 'id'. NULL is a no-op. */
void dc_identity_free(struct dc_identity *id);

/* The identity's PeerId, borrowed: valid as long as 'id'. */
const struct dc_peer_id *dc_identity_peer_id(const struct dc_identity *id);

/* Signs msg[0..len) with Ed25519 (RFC 8032) into 'sig'. Returns 0 or DC_ECRYPTO. */
DC_MUST_CHECK int dc_identity_sign(const struct dc_identity *id, const uint8_t *msg, size_t len,
                                   uint8_t sig[DC_ED25519_SIGNATURE_LEN]);

/* Copies the raw 32-byte Ed25519 public key. */
void dc_identity_public_key(const struct dc_identity *id, uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN]);

/*
 * Writes the identity's PublicKey protobuf (DC_ED25519_PUBLIC_KEY_PROTO_LEN bytes), as sent in
 * Noise handshake payloads and identify, to out[0..cap) and its length to '*len'.
 * Returns 0 or DC_ELIMIT when 'cap' is too small.
 */
DC_MUST_CHECK int dc_identity_public_key_proto(const struct dc_identity *id, uint8_t *out,
                                               size_t cap, size_t *len);

/*
 * Encodes a raw Ed25519 public key as a PublicKey protobuf into out[0..cap).
 * Returns 0 (length in '*len', always DC_ED25519_PUBLIC_KEY_PROTO_LEN) or DC_ELIMIT.
 */
DC_MUST_CHECK int dc_ed25519_public_key_proto(const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN],
                                              uint8_t *out, size_t cap, size_t *len);

/*
 * Decodes a PublicKey protobuf received from a peer. Fields may come in any order and unknown
 * fields are skipped; both Type and Data are required, and an Ed25519 key must be 32 bytes.
 * '*out' borrows from 'p'. Returns 0, DC_EUNSUPPORTED for a KeyType outside the enum, or
 * DC_ECORRUPT.
 */
DC_MUST_CHECK int dc_public_key_proto_decode(const uint8_t *p, size_t len,
                                             struct dc_public_key *out);

/*
 * Derives the PeerId of an encoded PublicKey (any key type). The key is decoded and
 * re-encoded canonically (Type then Data), then wrapped in the identity multihash when that
 * is at most 42 bytes and hashed with sha2-256 otherwise, as the peer-ids spec says.
 * Returns 0, or as dc_public_key_proto_decode().
 */
DC_MUST_CHECK int dc_peer_id_from_public_key_proto(const uint8_t *pk_proto, size_t len,
                                                   struct dc_peer_id *out);

/* PeerId of a raw Ed25519 public key. Returns 0 (it cannot fail for valid arguments). */
DC_MUST_CHECK int dc_peer_id_from_ed25519(const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN],
                                          struct dc_peer_id *out);

/*
 * Validates a binary multihash as a PeerId and copies it to '*out': the identity multihash
 * with a 1..42-byte digest, or sha2-256 with a 32-byte digest, and nothing after the digest.
 * Returns 0 or DC_ECORRUPT.
 */
DC_MUST_CHECK int dc_peer_id_from_bytes(const uint8_t *mh, size_t len, struct dc_peer_id *out);

/*
 * Writes the canonical text form, the base58btc multihash ("12D3KooW..." for Ed25519,
 * "Qm..." for sha2-256), NUL-terminated. DC_PEER_ID_STR_MAX is always enough.
 * Returns the length, DC_ELIMIT when 'cap' is too small, or DC_EINVAL for a struct whose 'len'
 * exceeds DC_PEER_ID_MAX (never the case for one this module filled in).
 */
DC_MUST_CHECK int dc_peer_id_to_string(const struct dc_peer_id *id, char *out, size_t cap);

/*
 * Writes the CIDv1 text form: multibase base32 of <0x01><0x72 libp2p-key><multihash>
 * ("bafz..."). Returns as dc_peer_id_to_string().
 */
DC_MUST_CHECK int dc_peer_id_to_cid_string(const struct dc_peer_id *id, char *out, size_t cap);

/*
 * Parses a PeerId in either text form: a base58btc multihash (starts with "1" or "Qm") or a
 * CIDv1 in any multibase we decode (base32 "b"/"B", base58btc "z", base16 "f"/"F") whose
 * codec is libp2p-key. The multihash is validated as by dc_peer_id_from_bytes(). Text longer
 * than DC_PEER_ID_STR_MAX - 1 is refused. Returns 0 or DC_ECORRUPT.
 */
DC_MUST_CHECK int dc_peer_id_parse(const char *s, struct dc_peer_id *out);

/* True when both PeerIds are the same multihash. */
bool dc_peer_id_equal(const struct dc_peer_id *a, const struct dc_peer_id *b);

/*
 * Extracts the Ed25519 public key inlined in an identity-multihash PeerId.
 * Returns 0, DC_EUNSUPPORTED when the PeerId is a hash (the key must come from the peer) or
 * inlines another key type, or DC_ECORRUPT when the inlined bytes are not a PublicKey.
 */
DC_MUST_CHECK int dc_peer_id_ed25519_public_key(const struct dc_peer_id *id,
                                                uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN]);

/*
 * Verifies an Ed25519 signature over msg[0..len). libsodium's checks apply: non-canonical
 * signatures and small-order public keys are rejected. Returns 0 or DC_ECRYPTO.
 */
DC_MUST_CHECK int dc_ed25519_verify(const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN], const uint8_t *msg,
                                    size_t len, const uint8_t sig[DC_ED25519_SIGNATURE_LEN]);

/* SHA-256 of p[0..len). */
void dc_sha256(const void *p, size_t len, uint8_t digest[32]);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * infer.h - the protocol core of /democritus/infer/1.0.0 (docs/protocols.md): frame encoding
 * and decoding, Ed25519 signing and verification of token packets and of the final InferDone,
 * and the running transcript hash. No I/O and no engine: bytes in, frames and bytes out, so
 * the same code runs in the server and client on the loop (src/swarm/), in tests and in the
 * fuzzer.
 *
 * Wire format: each frame is an unsigned varint length (1..DC_INFER_MAX_FRAME) followed by an
 * InferFrame protobuf (proto/infer.proto) whose oneof holds exactly one of InferRequest,
 * TokenPacket or InferDone. The values below are plain C views of those messages; decoded
 * strings are NUL-terminated and borrowed from the frame that holds them.
 *
 * Signatures (all Ed25519 by the server's identity key, verified against the public key inlined
 * in its PeerId):
 *   token: sign("democritus/infer/1.0.0/token\0" || request_id[16] || u64be(seq) || body)
 *   done:  sign("democritus/infer/1.0.0/done\0" || request_id[16] || body)
 * where 'body' is the message's encoding with its signature field (15) removed, the other
 * bytes in the order received. The transcript hash in InferDone is
 *   SHA-256("democritus/infer/1.0.0/transcript\0" || u64be(len(R)) || R
 *           || for each TokenPacket P in order: u64be(len(P)) || P)
 * with R the InferRequest bytes and P each TokenPacket's full bytes (signature included).
 */
#ifndef DC_P2P_INFER_H
#define DC_P2P_INFER_H

#include <sodium.h>

#include "base/base.h"
#include "crypto/crypto.h"

#define DC_INFER_PROTOCOL_ID    "/democritus/infer/1.0.0"
#define DC_INFER_MAX_FRAME      (1u << 20) /* bytes of one frame after its length prefix */
#define DC_INFER_REQUEST_ID_LEN 16
#define DC_INFER_HASH_LEN       32
#define DC_INFER_MAX_MESSAGES   256 /* chat messages in one request */
#define DC_INFER_MAX_STOP       8   /* stop strings in one request */
#define DC_INFER_MAX_TOP        20  /* top logprobs per token */

struct dc_infer_message {
    const char *role;
    const char *content;
};

/* A request. Optional sampling fields carry a has_ flag (absent: the server's default). */
struct dc_infer_request {
    uint8_t request_id[DC_INFER_REQUEST_ID_LEN];
    size_t n_messages;
    const struct dc_infer_message *messages;
    bool has_temperature, has_top_p, has_top_k, has_min_p, has_seed;
    float temperature, top_p, min_p;
    int32_t top_k;
    uint64_t seed;
    int32_t max_tokens; /* <= 0: the server's cap */
    size_t n_stop;
    const char *stop[DC_INFER_MAX_STOP];
    uint32_t n_logprobs; /* 0..DC_INFER_MAX_TOP */
    bool want_logprobs;
    const char *model; /* NULL: the server's default */
    /* NULL, or the start of the assistant's answer to continue (a backup expert taking over
     * an answer part of which the caller already has): appended to the rendered chat. */
    const char *continue_text;
};

struct dc_infer_top {
    int32_t id;
    float logprob;
    const char *text;
};

struct dc_infer_token {
    uint64_t seq;
    const char *text; /* 'text_len' bytes, NUL-terminated when decoded */
    size_t text_len;
    int32_t token_id;
    bool has_logprob;
    float logprob;
    size_t n_top;
    struct dc_infer_top top[DC_INFER_MAX_TOP];
};

struct dc_infer_done {
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    const char *finish_reason; /* "stop", "length", "cancelled", "error", "refused" */
    const char *error;         /* NULL or one line */
    const char *error_code;    /* NULL or a DC_INFER_ERR_* string */
    uint64_t n_packets;
    uint8_t transcript_hash[DC_INFER_HASH_LEN];
};

/* Machine-readable error codes carried in InferDone.error_code. */
#define DC_INFER_ERR_REFUSED     "refused"      /* serve_remote off, or the peer is not allowed */
#define DC_INFER_ERR_RATE        "rate_limited" /* a per-peer quota is exhausted */
#define DC_INFER_ERR_INVALID     "invalid"      /* a malformed or out-of-range request */
#define DC_INFER_ERR_TOO_LARGE   "too_large"    /* max_tokens or the context over the caps */
#define DC_INFER_ERR_UNAVAILABLE "unavailable"  /* no such model, or it cannot be loaded */
#define DC_INFER_ERR_INTERNAL    "internal"     /* the engine failed */

enum dc_infer_frame_type {
    DC_INFER_FRAME_REQUEST = 1,
    DC_INFER_FRAME_TOKEN = 2,
    DC_INFER_FRAME_DONE = 3,
};

/* A decoded frame. 'raw' is the inner message's bytes (what signatures and the transcript
 * cover); it and every string are owned by the frame until dc_infer_frame_cleanup(). */
struct dc_infer_frame {
    enum dc_infer_frame_type type;
    struct dc_infer_request request;
    struct dc_infer_token token;
    struct dc_infer_done done;
    const uint8_t *raw;
    size_t raw_len;
    bool has_signature; /* token/done: a 64-byte signature field was present */
    /* private */
    void *pb;
    struct dc_infer_message *msgs;
    uint8_t *raw_copy;
    char *text_copy;
};

/*
 * Decodes one frame body p[0..len) (after its length prefix). On success '*f' owns what it
 * points to; release with dc_infer_frame_cleanup(). Returns 0; DC_ECORRUPT for a malformed
 * protobuf, not exactly one oneof member, a request_id that is not 16 bytes, a transcript hash
 * that is not 32 bytes, a signature that is not 64 bytes or appears more than once; DC_ELIMIT
 * over DC_INFER_MAX_FRAME, DC_INFER_MAX_MESSAGES, DC_INFER_MAX_STOP or DC_INFER_MAX_TOP;
 * DC_ENOMEM. '*f' needs no cleanup after a failure.
 */
DC_MUST_CHECK int dc_infer_frame_decode(const uint8_t *p, size_t len, struct dc_infer_frame *f);

/* Releases what a decoded frame owns. Safe on a zeroed frame. */
void dc_infer_frame_cleanup(struct dc_infer_frame *f);

/* Reassembles frames from a byte stream, holding at most one frame plus its length prefix. */
struct dc_infer_reader {
    struct dc_buf buf;
    int err; /* the first error; every later call returns it */
};

void dc_infer_reader_init(struct dc_infer_reader *r);
void dc_infer_reader_cleanup(struct dc_infer_reader *r);

/* Receives one decoded frame, borrowed for the call. Return 0 to go on, or a negative code
 * to stop: dc_infer_reader_push() then returns that code at once. */
typedef int (*dc_infer_frame_cb)(void *ud, const struct dc_infer_frame *f);

/*
 * Consumes received bytes p[0..n) (any split) and calls 'cb' for each complete frame, in
 * order. Returns 0; the callback's negative code; or a final error: DC_ECORRUPT for a bad
 * length prefix (zero) or as dc_infer_frame_decode(), DC_ELIMIT for a frame announced over
 * DC_INFER_MAX_FRAME, DC_ENOMEM. After an error (not a callback's code) every call returns it
 * again.
 */
DC_MUST_CHECK int dc_infer_reader_push(struct dc_infer_reader *r, const uint8_t *p, size_t n,
                                       dc_infer_frame_cb cb, void *ud);

/* The running transcript hash of one request (see the header comment). */
struct dc_infer_transcript {
    crypto_hash_sha256_state st;
    uint64_t n_packets;
};

/* Starts a transcript with the InferRequest bytes req[0..len). */
void dc_infer_transcript_init(struct dc_infer_transcript *t, const uint8_t *req, size_t len);
/* Adds one TokenPacket's bytes (signature included). */
void dc_infer_transcript_add(struct dc_infer_transcript *t, const uint8_t *packet, size_t len);
/* The hash so far (the transcript can continue after). */
void dc_infer_transcript_hash(const struct dc_infer_transcript *t, uint8_t out[DC_INFER_HASH_LEN]);

/*
 * Appends a request frame to 'out'. When 'raw_out' is not NULL it gets a heap copy of the
 * InferRequest bytes (dc_free), for the client's transcript. Returns 0; DC_EINVAL for more
 * than DC_INFER_MAX_MESSAGES messages or DC_INFER_MAX_STOP stops, n_logprobs over
 * DC_INFER_MAX_TOP or NULL strings; DC_ELIMIT when the frame would exceed DC_INFER_MAX_FRAME
 * or the buffer's cap; DC_ENOMEM.
 */
DC_MUST_CHECK int dc_infer_request_encode(const struct dc_infer_request *req, struct dc_buf *out,
                                          uint8_t **raw_out, size_t *raw_len);

/*
 * Encodes, signs and appends a token frame to 'out', and adds the packet to 't' (may be NULL).
 * Returns 0; DC_EINVAL for n_top over DC_INFER_MAX_TOP; DC_ELIMIT as above; DC_ECRYPTO;
 * DC_ENOMEM. 'out' is unchanged on failure.
 */
DC_MUST_CHECK int dc_infer_token_encode(const struct dc_identity *id,
                                        const uint8_t rid[DC_INFER_REQUEST_ID_LEN],
                                        const struct dc_infer_token *tok,
                                        struct dc_infer_transcript *t, struct dc_buf *out);

/*
 * Encodes, signs and appends the done frame. Its transcript_hash and n_packets are taken from
 * 't' (NULL: zero hash, e.g. a request refused before it could be read). Returns as
 * dc_infer_token_encode().
 */
DC_MUST_CHECK int dc_infer_done_encode(const struct dc_identity *id,
                                       const uint8_t rid[DC_INFER_REQUEST_ID_LEN],
                                       const struct dc_infer_done *done,
                                       const struct dc_infer_transcript *t, struct dc_buf *out);

/*
 * Verifies a decoded token or done frame's signature with the raw Ed25519 key 'pk' of the
 * server and the request id the client chose. Returns 0; DC_ECRYPTO for a missing or bad
 * signature; DC_ECORRUPT when the frame is a request.
 */
DC_MUST_CHECK int dc_infer_frame_verify(const struct dc_infer_frame *f,
                                        const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN],
                                        const uint8_t rid[DC_INFER_REQUEST_ID_LEN]);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * swarm.h - the swarm module: what a node does with its peers beyond the transport. This first
 * part is remote inference over /democritus/infer/1.0.0 (docs/protocols.md):
 *
 *   server - answers inbound requests with the local model engine, within the operator's bounds
 *            (serve_remote, allow/deny lists, per-peer quotas, caps on tokens and context);
 *   client - sends one request to a peer and delivers its tokens, each verified against the
 *            peer's PeerId, then the verified InferDone.
 *
 * Threads: both belong to the loop thread of the host they use (DESIGN.md section 4). The engine
 * reports tokens on its own thread; the server hands them to the loop through a queue and a
 * uv_async_t, so every host call stays on the loop.
 */
#ifndef DC_SWARM_H
#define DC_SWARM_H

#include <uv.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "model/engine.h"
#include "p2p/host.h"
#include "p2p/infer.h"

/* ---- server ---- */

struct dc_infer_server;

struct dc_infer_server_config {
    uv_loop_t *loop;                    /* borrowed: the host's loop */
    struct dc_host *host;               /* borrowed: must outlive the server */
    const struct dc_identity *identity; /* borrowed: signs every packet (the host's identity) */
    struct dc_registry *registry;       /* borrowed: models are acquired per request */
    bool serve_remote;                  /* false: every request is refused */
    uint32_t max_streams;               /* requests in flight from all peers; 0: 64 */
    uint32_t max_streams_per_peer;      /* 0: 4 */
    uint32_t requests_per_minute;       /* per peer; 0: unlimited */
    uint32_t tokens_per_minute;         /* per peer, generated tokens; 0: unlimited */
    uint32_t max_tokens;                /* cap on a request's max_tokens; 0: 1024 */
    uint32_t max_context;               /* cap on prompt + max_tokens; 0: the model's slot */
    float default_temperature;          /* when a request gives none */
    uint32_t read_timeout_ms;           /* the request frame must arrive within; 0: 10 s */
    const struct dc_peer_id *allow;     /* borrowed (copied); n_allow 0: every peer */
    size_t n_allow;
    const struct dc_peer_id *deny; /* borrowed (copied); checked first */
    size_t n_deny;
};

/*
 * Creates the server and registers DC_INFER_PROTOCOL_ID on the host. Returns 0 with '*out'
 * owning it (release with dc_infer_server_free), DC_EINVAL when loop, host, identity or
 * registry is missing, or as dc_host_set_handler() (DC_ELIMIT, DC_ENOMEM).
 */
DC_MUST_CHECK int dc_infer_server_new(const struct dc_infer_server_config *cfg,
                                      struct dc_infer_server **out);

/*
 * Unregisters the protocol, resets every stream, cancels every generation and waits (blocking,
 * usually milliseconds; a model load in progress is waited for) until the engines have stopped
 * calling back and every acquired model is released. Call it before dc_registry_close() and
 * dc_host_free(); the loop must run once more afterwards to close the server's handle (which
 * releases its memory). NULL is a no-op.
 */
void dc_infer_server_free(struct dc_infer_server *s);

struct dc_infer_server_stats {
    uint32_t active;   /* requests being read, loaded or generated now */
    uint64_t served;   /* requests that reached the engine */
    uint64_t refused;  /* requests answered with an error before the engine */
    uint64_t tokens;   /* token packets sent */
    uint64_t canceled; /* generations stopped because the client went away */
};

void dc_infer_server_stats(const struct dc_infer_server *s, struct dc_infer_server_stats *out);

/*
 * The text an expert decodes for a chat: the messages rendered with the engine's chat template
 * and its generation prompt, then 'continue_text' (NULL or "": none) - the start of the answer
 * when it continues one another expert began (InferRequest.continue_text). '*out' is heap
 * (dc_free); '*fallback' (may be NULL) as dc_engine_chat_render. The server and the
 * coordinator's local runs both build prompts here. Returns 0 or as dc_engine_chat_render.
 */
DC_MUST_CHECK int dc_infer_prompt(struct dc_engine *e, const struct dc_chat_msg *msgs, size_t n,
                                  const char *continue_text, char **out, bool *fallback);

/* ---- client ---- */

struct dc_infer_call;

struct dc_infer_call_cb {
    /* One token packet whose signature verified and whose seq is the next one; borrowed for the
     * call. May call dc_infer_call_cancel(). */
    void (*on_token)(void *ud, const struct dc_infer_token *tok);
    /* The end, exactly once unless the call was canceled: status 0 with the verified InferDone
     * (its finish_reason says whether the server generated or refused, and error/error_code
     * why), or a negative code with done NULL: DC_ECRYPTO (a bad signature, a transcript hash
     * that differs: the stream was reset), DC_EPROTO (packets out of order, frames the protocol
     * does not allow, a malformed frame), DC_ETIMEDOUT, DC_ECLOSED / -ECONNRESET (the stream
     * ended before InferDone), or the dial's error. The call is freed after it returns. */
    void (*on_done)(void *ud, int status, const struct dc_infer_done *done);
};

/*
 * Asks 'peer' for one inference, on 'loop' (the host's). When no connection to it is up, 'addr'
 * (may be NULL; a /p2p/ part must name 'peer') is dialed first. 'req' is copied (its request_id is
 * replaced by a fresh random one, see dc_infer_call_request_id). 'timeout_ms' (0: 120 s) bounds the
 * whole call. 'cb' is borrowed (keep it static). Returns 0 with '*out' valid until on_done returns
 * or dc_infer_call_cancel(); DC_EUNSUPPORTED when the PeerId does not inline an Ed25519 key
 * (the signatures could not be checked); DC_ENOENT when not connected and no 'addr'; DC_EINVAL;
 * as dc_infer_request_encode(), dc_host_dial() or dc_host_new_stream(). On failure no
 * callback fires.
 */
DC_MUST_CHECK int dc_infer_call_start(uv_loop_t *loop, struct dc_host *h,
                                      const struct dc_peer_id *peer,
                                      const struct dc_multiaddr *addr,
                                      const struct dc_infer_request *req, uint32_t timeout_ms,
                                      const struct dc_infer_call_cb *cb, void *ud,
                                      struct dc_infer_call **out);

/* Stops the call: resets its stream (the server cancels the generation). No callback fires
 * afterwards. Not valid after on_done returned. */
void dc_infer_call_cancel(struct dc_infer_call *c);

/* A verified token as the engine's token event, so forwarded tokens take the engine's path:
 * fills '*ev' (type DC_GEN_EV_TOKEN; text borrowed from 'tok') and top[0..n_top) with the
 * alternatives, each text cut at a UTF-8 boundary to fit. */
void dc_infer_token_event(const struct dc_infer_token *tok,
                          struct dc_top_logprob top[DC_INFER_MAX_TOP], struct dc_gen_event *ev);

/* The request id the call sent (borrowed). */
const uint8_t *dc_infer_call_request_id(const struct dc_infer_call *c);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * coord.h - the swarm coordinator: publishes this node as an expert and answers a chat with
 * the experts of the swarm (the model "swarm").
 *
 * Publishing. When the node serves a model and has a description ([swarm] description), the
 * coordinator signs its capability record (route.h) and stores it on the DHT under
 * /democritus/expert/<PeerId>, and announces itself as a provider of DC_EXPERTS_KEY and of
 * each LSH band key of its description. The record carries the engine's load and is signed
 * again every republish interval (its expiry is three intervals), so a node that goes away
 * drops out of everyone's candidates.
 *
 * One chat, in order:
 *   1. route   - the last user message is embedded (dc_embed_text); the providers of its LSH
 *                bands and of DC_EXPERTS_KEY are looked up (once per refresh interval for the
 *                latter) and the capability records not yet cached are fetched and verified;
 *                every cached record is ranked (dc_expert_rank) and the best N are chosen.
 *                This node's own record is a candidate like any other: when chosen, it
 *                answers with the local engine.
 *   2. dispatch - the N experts run in parallel over /democritus/infer/1.0.0 (signed, verified
 *                tokens); an expert that fails before its answer ends is replaced by the next
 *                candidate (failover), up to 'max_failovers' times per chat.
 *   3. aggregate - one answer: streamed through as it arrives (after a failure mid-way, the
 *                replacement continues the text already sent: InferRequest.continue_text).
 *                Several: once all have ended, the local engine writes one
 *                answer from them (Mixture-of-Agents synthesis) and that is streamed; a node
 *                without a model returns the medoid (the answer closest to all the others).
 *
 * Threads: everything runs on the host's loop thread; local engine events are carried to it
 * through a queue and a uv_async_t. Callbacks fire on the loop thread.
 */
#ifndef DC_SWARM_COORD_H
#define DC_SWARM_COORD_H

#include <uv.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "model/engine.h"
#include "p2p/dht.h"
#include "p2p/host.h"
#include "p2p/infer.h"
#include "swarm/route.h"

#define DC_COORD_MAX_EXPERTS 8u

struct dc_coord;
struct dc_coord_call;

struct dc_coord_config {
    uv_loop_t *loop;                    /* the host's loop */
    struct dc_host *host;               /* borrowed, must outlive the coordinator */
    struct dc_dht *dht;                 /* borrowed, may be NULL: no discovery, no publishing */
    const struct dc_identity *identity; /* borrowed: signs the capability record */
    /* Borrowed, may be NULL: the local model, which answers when this node is chosen and
     * writes the synthesis. Must stay loaded while the coordinator lives. */
    struct dc_engine *engine;
    const char *model_id;     /* its registry id (copied), for the record */
    const char *model_sha256; /* hex or NULL/"" (copied) */
    /* What this node is good at (copied); NULL or empty: not published, not a candidate. */
    const char *description;
    const char *const *tags; /* copied; at most DC_EXPERT_MAX_TAGS */
    size_t n_tags;
    double price;                  /* credits per 1,000 tokens it asks */
    uint32_t default_experts;      /* experts per chat when a request names none; 0: 3 */
    uint32_t expert_timeout_ms;    /* one expert's whole answer; 0: 120 s */
    uint32_t lookup_timeout_ms;    /* routing lookups; 0: 3 s */
    uint32_t republish_ms;         /* capability record re-signed; 0: 10 min */
    uint32_t refresh_ms;           /* DC_EXPERTS_KEY lookup at most this often; 0: 30 s */
    uint32_t max_failovers;        /* replacement experts per chat; 0: 2 */
    uint32_t synthesis_max_tokens; /* cap on the synthesis answer when the request has none;
                                      0: 512 */
};

/* Creates the coordinator and, when it has a description, an engine and a DHT, publishes the
 * record now (and on every republish). Returns 0, DC_EINVAL (missing loop, host or identity,
 * a description that gives no features), DC_ENOMEM, or a libuv error. */
DC_MUST_CHECK int dc_coord_new(const struct dc_coord_config *cfg, struct dc_coord **out);

/* Ends every chat in flight (their on_done fires with CANCELLED), stops publishing, waits
 * (blocking, usually milliseconds) for the local generations it canceled. Loop thread, while
 * the host and the DHT are alive. The coordinator stays allocated until dc_coord_free. */
void dc_coord_shutdown(struct dc_coord *c);

/* After dc_coord_shutdown and after dc_dht_free (whose last callbacks still reach the
 * coordinator): closes the handles; the memory goes once libuv has closed them (run the loop
 * once more). NULL is a no-op. */
void dc_coord_free(struct dc_coord *c);

/* 'peer' was identified on a new connection: the next chat refreshes the expert list, and if
 * the peer is an expert that failed a chat lately (ranked last for a while), it is ranked
 * normally again - it is back (a restart, a network that healed). 'peer' may be NULL. */
void dc_coord_peer_changed(struct dc_coord *c, const struct dc_peer_id *peer);

struct dc_coord_cb {
    /* A token of the final answer (ev->type DC_GEN_EV_TOKEN). */
    void (*on_token)(void *ud, const struct dc_gen_event *ev);
    /* The end, exactly once (ev->type DC_GEN_EV_DONE; on ERROR ev->error and ev->error_msg
     * say why: DC_ENOENT no expert found, DC_EPEER every expert failed, ...). n_prompt and
     * n_generated count the final answer's stage; the call is gone after it returns. */
    void (*on_done)(void *ud, const struct dc_gen_event *ev);
};

/*
 * Starts a chat: 'req' as an infer request (copied; model and request_id ignored) for
 * 'experts' experts (0: the default; capped at DC_COORD_MAX_EXPERTS). 'cb' is borrowed (keep it
 * static). Returns 0 with '*out' valid until on_done returns (on_done never fires inside this
 * call), DC_ECLOSED after shutdown, DC_EINVAL (no user message), DC_ENOMEM.
 */
DC_MUST_CHECK int dc_coord_chat(struct dc_coord *c, const struct dc_infer_request *req,
                                uint32_t experts, const struct dc_coord_cb *cb, void *ud,
                                struct dc_coord_call **out);

/* Stops the chat and everything it runs; no callback fires afterwards. Loop thread; not valid
 * after on_done returned. */
void dc_coord_cancel(struct dc_coord_call *call);

/* The experts this node knows (the routing cache, refreshed in the background every
 * refresh_ms while peers are connected, and this node's own record) as a JSON array (heap,
 * dc_free): peer_id, self, description, model, tags, n_ctx, slots, active, queued, price,
 * expires_unix_ms. Any thread: a snapshot the loop keeps current. */
DC_MUST_CHECK int dc_coord_experts_json(struct dc_coord *c, char **out, size_t *len);

struct dc_coord_stats {
    uint64_t chats;     /* chats started */
    uint64_t routed;    /* expert calls dispatched (local ones included) */
    uint64_t failovers; /* replacements */
    uint64_t syntheses; /* MoA answers written */
    uint64_t published; /* records stored */
    uint32_t known;     /* experts in the cache, this node included */
};
/* Any thread. */
void dc_coord_stats(struct dc_coord *c, struct dc_coord_stats *out);

#endif

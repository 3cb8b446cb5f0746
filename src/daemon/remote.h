/* SPDX-License-Identifier: MIT */
/*
 * remote.h - chat completions forwarded to a peer (daemon-internal): the daemon's side of the
 * REST server's remote hooks (dc_api_remote_hooks in api/api.h).
 *
 * A REST request whose model is a PeerId reaches dc_remote_hooks.start on an API worker thread.
 * The call crosses to the loop thread through a queue and a uv_async_t (the host belongs to the
 * loop), where it runs as a /democritus/infer/1.0.0 client call (dc_infer_call_start): each
 * verified token goes back to the API as an engine event, from the loop thread, and the end as
 * one DONE event with the peer's refusal or the failure mapped to an OpenAI error. A cancel from
 * any API thread takes the same queue and ends in dc_infer_call_cancel on the loop.
 */
#ifndef DC_DAEMON_REMOTE_H
#define DC_DAEMON_REMOTE_H

#include <uv.h>

#include "api/api.h"
#include "base/base.h"
#include "model/engine.h"
#include "p2p/host.h"
#include "p2p/infer.h"

struct dc_remote;

/* Creates the forwarder on 'loop' for 'host' ('self' is this node's PeerId, copied; all
 * borrowed, call on the loop thread). Returns 0, DC_ENOMEM, or a libuv error. */
DC_MUST_CHECK int dc_remote_new(uv_loop_t *loop, struct dc_host *host,
                                const struct dc_peer_id *self, struct dc_remote **out);

/* The coordinator that answers the model "swarm" (borrowed; NULL: "swarm" answers 503). Loop
 * thread, before the API serves; it must outlive dc_remote_shutdown(). */
struct dc_coord;
void dc_remote_set_coord(struct dc_remote *rm, struct dc_coord *coord);

/* The hooks for dc_api_config.remote; their 'ud' is the struct dc_remote. */
extern const struct dc_api_remote_hooks dc_remote_hooks;

/*
 * Maps the end of an infer call to what the REST client gets. 'status' and 'done' are as
 * dc_infer_call_cb.on_done gives them ('done' NULL when status < 0). Returns the finish
 * (DC_GEN_FINISH_STOP, _LENGTH, _CANCELLED) with 'e' untouched, or DC_GEN_FINISH_ERROR with
 * 'e' filled: 429 rate_limited, 403 refused, 400 too_large / invalid, 502 unavailable /
 * internal / a bad signature / a broken stream, 504 a timeout. 'peer' names the peer in the
 * message. Pure: the unit test drives it.
 */
enum dc_gen_finish dc_remote_map_end(const char *peer, int status, const struct dc_infer_done *done,
                                     struct dc_api_remote_error *e);

/* Loop thread: refuses new calls and ends every call in flight (their DONE fires now), so the
 * API server can be freed without waiting on the loop. Call before dc_api_free(). */
void dc_remote_shutdown(struct dc_remote *rm);

/* Loop thread, after dc_api_free() and dc_host_free(): closes the handle; the memory goes when
 * libuv closes it (run the loop once more). NULL is a no-op. */
void dc_remote_free(struct dc_remote *rm);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * resolve.c - which model answers a request. REST (rest.c), WebSocket (ws.c) and gRPC
 * (grpc.c, through rpc.c) all call dc_api_model_resolve, so a "model" means the same on every
 * interface: "local" (or nothing, or the default model's own id) is the pinned default engine,
 * a PeerId is a peer to forward the chat to, and anything else is a registry id, loaded on
 * demand. Only that last case can block (a load takes seconds), which is why the target is
 * told apart first (dc_api_model_target): the callers that run an event loop resolve it on a
 * worker, the others inline.
 */
#include <string.h>

#include "api/api_int.h"
#include "crypto/crypto.h"

enum dc_api_target dc_api_model_target(const struct dc_api_models *m, const char *model)
{
    struct dc_peer_id id;

    if (model == NULL || model[0] == '\0' || strcmp(model, "local") == 0 ||
        (m->def_id != NULL && m->def_id[0] != '\0' && strcmp(model, m->def_id) == 0))
        return DC_API_TARGET_DEFAULT;
    /* A model id that parses as a PeerId (a multihash, base58 or CIDv1) names a peer; "swarm"
     * the experts of the swarm (src/swarm/coord.h). Both go through the remote hooks. */
    if (strcmp(model, DC_API_SWARM_MODEL) == 0 || dc_peer_id_parse(model, &id) == 0)
        return DC_API_TARGET_PEER;
    return DC_API_TARGET_REGISTRY;
}

static void no_model(struct dc_api_error *e)
{
    dc_api_error_set(e, 503, "server_error", "model_not_loaded", NULL, "%s",
                     "No model is loaded on this node (started without a model)");
}

/* What a forwarded chat cannot carry: refused before anything is sent to the peer. */
static int peer_ok(const struct dc_api_models *m, const struct dc_api_request *q,
                   struct dc_api_error *e)
{
    bool swarm = strcmp(q->model, DC_API_SWARM_MODEL) == 0;

    if (m->remote == NULL) {
        if (swarm)
            dc_api_error_set(e, 503, "server_error", "p2p_unavailable", "model", "%s",
                             "The model \"swarm\" needs the P2P layer, which this server "
                             "does not have");
        else
            dc_api_error_set(e, 503, "server_error", "p2p_unavailable", "model",
                             "'%s' is a PeerId, but this server cannot forward to peers", q->model);
        return DC_ESTATE;
    }
    if (q->kind != DC_API_CHAT) {
        dc_api_error_set(e, 400, "invalid_request_error", "model_not_supported", "model",
                         "%s works with /v1/chat/completions only",
                         swarm ? "The model \"swarm\"" : "A PeerId as the model");
        return DC_EINVAL;
    }
    if (q->gen.json_object || q->gen.grammar != NULL) {
        dc_api_error_set(e, 400, "invalid_request_error", "unsupported_parameter",
                         "response_format", "response_format is not supported %s",
                         swarm ? "with the model \"swarm\"" : "when forwarding to a peer");
        return DC_EINVAL;
    }
    return 0;
}

int dc_api_model_resolve(const struct dc_api_models *m, const struct dc_api_request *q,
                         enum dc_api_target *target, struct dc_engine **engine,
                         struct dc_api_error *e)
{
    char *why = NULL;
    int rc;

    *engine = NULL;
    *target = dc_api_model_target(m, q->model);
    if (*target == DC_API_TARGET_PEER)
        return peer_ok(m, q, e);
    /* A node without its default model serves none (the registry may still list files). */
    if (m->reg == NULL || m->def_engine == NULL) {
        no_model(e);
        return DC_ESTATE;
    }
    if (*target == DC_API_TARGET_DEFAULT) {
        *engine = m->def_engine;
        return 0;
    }
    rc = dc_registry_acquire(m->reg, q->model, engine, &why);
    if (rc == 0)
        return 0;
    *engine = NULL;
    if (rc == DC_ENOENT)
        dc_api_error_set(e, 404, "invalid_request_error", "model_not_found", "model",
                         "The model '%s' does not exist; see GET /v1/models", q->model);
    else if (rc == DC_ELIMIT)
        dc_api_error_set(e, 503, "server_error", "model_not_loaded", "model",
                         "The model '%s' does not fit the memory budget now", q->model);
    else
        dc_api_error_set(e, 500, "server_error", "model_load_failed", "model", "%s",
                         why != NULL ? why : dc_strerror(rc));
    dc_free(why);
    return rc;
}

void dc_api_queue_full(struct dc_api_error *e, const char *model)
{
    dc_api_error_set(e, 429, "rate_limit_error", "queue_full", NULL,
                     "Too many requests queued for model '%s'; retry after 1000 ms",
                     model != NULL && model[0] != '\0' ? model : "local");
    e->retry_after_ms = 1000;
}

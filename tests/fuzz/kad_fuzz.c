/* SPDX-License-Identifier: MIT */
/*
 * kad_fuzz.c - libFuzzer harness for the Kademlia core. The input is used twice: as the body
 * of a request from a peer, handed to dc_kad_handle_request_bytes() on a node with a filled
 * routing table and stores (whatever it returns, a response it writes must decode again);
 * and as the body of a response to a lookup's first request (each request of a lookup is
 * answered with the input, so a hostile peer steers the whole lookup), which must end with
 * DONE after finitely many steps. A first byte >= 0x80 also feeds the input to the store
 * loader. ASan/UBSan catch the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/kad.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dc_kad *node;
static struct dc_peer_id peer_from;

static void fixed_peer(uint8_t seed, struct dc_peer_id *id)
{
    static const uint8_t head[6] = {0x00, 0x24, 0x08, 0x01, 0x12, 0x20};

    memset(id, 0, sizeof(*id));
    memcpy(id->bytes, head, sizeof(head));
    for (size_t i = 0; i < 32; i++)
        id->bytes[6 + i] = (uint8_t)(seed * 31u + i * 7u);
    id->len = 38;
}

static int demo_validate(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                         size_t value_len, uint64_t now_ms)
{
    (void)ud;
    (void)key;
    (void)key_len;
    (void)now_ms;
    return value_len > 0 && value[0] == 'v' ? 0 : DC_ECRYPTO;
}

static void setup(void)
{
    struct dc_kad_config cfg;
    struct dc_kad_validator v = {.validate = demo_validate};
    struct dc_peer_id self;

    if (dc_crypto_init() < 0)
        abort();
    fixed_peer(0, &self);
    fixed_peer(1, &peer_from);
    dc_kad_config_default(&cfg, &self);
    if (dc_kad_new(&cfg, &node) < 0 || dc_kad_set_validator(node, "democritus", &v) < 0)
        abort();
    for (uint8_t i = 1; i < 100; i++) {
        struct dc_peer_id p;

        fixed_peer(i, &p);
        if (dc_kad_add_peer(node, &p, 0) < 0)
            abort();
    }
}

static void as_request(const uint8_t *data, size_t size)
{
    struct dc_buf out;
    const uint8_t *body;
    size_t body_len, used;
    int rc;

    dc_buf_init(&out, 0);
    rc = dc_kad_handle_request_bytes(node, &peer_from, data, size, 1000, &out);
    if (rc == 0) {
        struct dc_kad_msg m;

        if (dc_kad_frame_split(out.data, out.len, &body, &body_len, &used) != 0 ||
            used != out.len || dc_kad_msg_decode(body, body_len, &m) != 0)
            abort();
        dc_kad_msg_cleanup(&m);
    } else if (out.len != 0) {
        abort();
    }
    dc_buf_cleanup(&out);
    /* Keep the stores from growing across runs. */
    (void)dc_kad_expire(node, UINT64_MAX / 2);
}

static void as_response(const uint8_t *data, size_t size)
{
    static const enum dc_kad_msg_type types[3] = {DC_KAD_FIND_NODE, DC_KAD_GET_VALUE,
                                                  DC_KAD_GET_PROVIDERS};
    struct dc_kad_lookup_config cfg = {
        .type = types[size % 3], .key = (const uint8_t *)"/democritus/x", .key_len = 13};
    struct dc_kad_lookup *l;
    struct dc_kad_action a;
    uint64_t now = 0;
    int steps = 0;

    if (dc_kad_lookup_new(node, &cfg, now, &l) < 0)
        abort();
    while (!dc_kad_lookup_done(l)) {
        if (++steps > 10000)
            abort(); /* a peer must not keep a lookup alive forever */
        if (dc_kad_lookup_poll(l, now, &a) == 0) {
            now = dc_kad_lookup_next_deadline(l);
            continue;
        }
        if (a.type == DC_KAD_ACTION_SEND)
            (void)dc_kad_lookup_on_response_bytes(l, a.req_id, data, size, now);
    }
    while (dc_kad_lookup_poll(l, now, &a) == 1)
        ;
    dc_kad_lookup_free(l);
    while (dc_kad_poll(node, &a) == 1)
        (void)dc_kad_ping_result(node, &a.peer, true, now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (node == NULL)
        setup();
    if (size > DC_KAD_MAX_MESSAGE + 16)
        return 0;
    as_request(data, size);
    as_response(data, size);
    if (size > 0 && data[0] >= 0x80) {
        struct dc_peer_id self;
        struct dc_kad_config cfg;
        struct dc_kad *k;

        fixed_peer(0, &self);
        dc_kad_config_default(&cfg, &self);
        if (dc_kad_new(&cfg, &k) < 0)
            abort();
        (void)dc_kad_store_load(k, data + 1, size - 1, 1000);
        dc_kad_free(k);
    }
    return 0;
}

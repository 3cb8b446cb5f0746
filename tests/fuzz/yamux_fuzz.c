/* SPDX-License-Identifier: MIT */
/*
 * yamux_fuzz.c - libFuzzer harness for the yamux session core. The input is a script: each
 * step's first byte picks an action, either feeding the next bytes as if the peer sent them,
 * or an application call (open, write, consume, close, reset, ping, go away, drain output).
 * Callbacks consume or reset depending on the data they see, so re-entry is exercised too.
 * Checks beyond "no crash, no leak": output never exceeds its cap plus the control reserve,
 * writes never exceed the window, and once the session fails every feed returns the error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p2p/p2p.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_IDS    16
#define MAX_OUTPUT (64u * 1024u)

struct state {
    struct dc_yamux *y;
    uint32_t ids[MAX_IDS]; /* streams we know of (may be gone: calls then say DC_ENOENT) */
    size_t n_ids;
    size_t unconsumed[MAX_IDS];
    bool consume_in_cb;
};

static void remember(struct state *st, uint32_t id)
{
    st->ids[st->n_ids % MAX_IDS] = id;
    st->unconsumed[st->n_ids % MAX_IDS] = 0;
    st->n_ids++;
}

static size_t *unconsumed_of(struct state *st, uint32_t id)
{
    for (size_t i = 0; i < MAX_IDS && i < st->n_ids; i++)
        if (st->ids[i] == id)
            return &st->unconsumed[i];
    return NULL;
}

static int cb_open(void *ud, uint32_t id, void **user)
{
    struct state *st = ud;

    *user = NULL;
    if (id % 7 == 0)
        return DC_EPERM;
    remember(st, id);
    return 0;
}

static void cb_data(void *ud, uint32_t id, void *user, const uint8_t *p, size_t n)
{
    struct state *st = ud;
    size_t *u = unconsumed_of(st, id);

    (void)user;
    if (n == 0)
        abort();
    if (p[0] == 0xEE) {
        (void)dc_yamux_stream_reset(st->y, id);
        return;
    }
    if (st->consume_in_cb) {
        if (dc_yamux_stream_consume(st->y, id, n) == DC_EINVAL)
            abort();
    } else if (u != NULL) {
        *u += n;
    }
}

static void cb_fin(void *ud, uint32_t id, void *user)
{
    struct state *st = ud;

    (void)user;
    if (id % 3 == 0)
        (void)dc_yamux_stream_close(st->y, id);
}

static void cb_close(void *ud, uint32_t id, void *user, int err)
{
    (void)ud;
    (void)id;
    (void)user;
    if (err != 0 && err != -ECONNRESET && err != DC_EPROTO && err != DC_ELIMIT &&
        err != DC_ECLOSED && err != DC_ENOMEM)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t payload[4096];
    struct dc_yamux_config cfg;
    struct state st;
    size_t pos = 1, len, w;
    int fail = 0;

    if (size < 1)
        return 0;
    memset(&st, 0, sizeof(st));
    dc_yamux_config_default(&cfg);
    cfg.is_client = data[0] & 1;
    cfg.max_streams = 8;
    cfg.recv_window = DC_YAMUX_INITIAL_WINDOW + (data[0] & 2 ? 4096u : 0u);
    cfg.max_output = MAX_OUTPUT;
    cfg.cb.on_stream_open = cb_open;
    cfg.cb.on_data = cb_data;
    cfg.cb.on_fin = cb_fin;
    cfg.cb.on_close = cb_close;
    cfg.ud = &st;
    st.consume_in_cb = (data[0] & 4) != 0;
    if (dc_yamux_new(&cfg, &st.y) != 0)
        abort();

    while (pos < size) {
        uint8_t op = data[pos++];
        uint32_t id = st.n_ids > 0 ? st.ids[op % (st.n_ids < MAX_IDS ? st.n_ids : MAX_IDS)] : 1;
        size_t n = (size_t)(op >> 3) * 37;
        size_t *u;
        int rc;

        switch (op & 7) {
        case 0:
        case 1: /* feed: the next (op >> 1) + 1 bytes, or the rest for a big step */
            n = op == 0 ? size - pos : (size_t)(op >> 1) + 1;
            if (n > size - pos)
                n = size - pos;
            rc = dc_yamux_feed(st.y, data + pos, n);
            pos += n;
            if (fail != 0 && rc != fail)
                abort();
            if (rc < 0)
                fail = rc;
            break;
        case 2:
            if (dc_yamux_stream_open(st.y, NULL, &id) == 0)
                remember(&st, id);
            break;
        case 3: {
            size_t win = dc_yamux_stream_send_window(st.y, id);

            if (n > sizeof(payload))
                n = sizeof(payload);
            if (op & 8) {
                /* The copy-free form: only its accounting is exercised (the header and
                 * payload would be the caller's to send). */
                uint8_t hdr[DC_YAMUX_HEADER_LEN];

                rc = dc_yamux_stream_frame(st.y, id, n, hdr, &w);
                if (rc == 0 && (w > n || w > win || w > DC_YAMUX_MAX_FRAME_DATA))
                    abort();
                break;
            }
            rc = dc_yamux_stream_write(st.y, id, payload, n, &w);
            if (rc == 0 && (w > n || w > win))
                abort();
            break;
        }
        case 4:
            u = unconsumed_of(&st, id);
            if (u != NULL) {
                rc = dc_yamux_stream_consume(st.y, id, *u);
                if (rc == 0 || rc == DC_ENOENT)
                    *u = 0;
            }
            break;
        case 5:
            (void)dc_yamux_stream_close(st.y, id);
            break;
        case 6:
            if (op & 8)
                (void)dc_yamux_stream_reset(st.y, id);
            else if (op & 16)
                (void)dc_yamux_ping(st.y);
            else
                (void)dc_yamux_go_away(st.y, DC_YAMUX_GO_AWAY_NORMAL);
            break;
        case 7:
            (void)dc_yamux_output(st.y, &len);
            dc_yamux_output_consume(st.y, (op & 8) ? len : len / 2);
            break;
        }
        (void)dc_yamux_output(st.y, &len);
        if (len > MAX_OUTPUT + 64u * 1024u)
            abort();
    }
    dc_yamux_free(st.y);
    return 0;
}

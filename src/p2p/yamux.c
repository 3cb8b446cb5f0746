/* SPDX-License-Identifier: MIT */
/*
 * yamux.c - the yamux session core (hashicorp yamux spec.md, libp2p yamux spec).
 *
 * Map of the file: the output buffer (one dc_buf drained from the front by an offset, so a
 * partial socket write costs no memmove), the stream table (a chained hash keyed by id), the
 * receive path (a parser that takes 12-byte headers straight from the caller's buffer when
 * they are whole and hands data payloads to on_data in place), and the API calls that queue
 * frames.
 *
 * Flow control: each stream tracks recv_window (bytes the peer may still send), unconsumed
 * (bytes given to the application and not yet consumed) and credit (consumed, not yet granted
 * back). recv_window + unconsumed + credit always equals the stream's window, and credit is
 * returned in one update once it reaches half of it, so the peer never stalls for long and
 * updates stay rare. Data beyond recv_window is a protocol error that ends the session.
 * A stream's window is fixed when it opens: the spec's 256 KiB, plus up to recv_window more
 * while the windows of all streams together stay within max_buffered, which bounds what the
 * application can be made to hold for a peer that sends without it consuming.
 *
 * Callbacks may re-enter the API and may remove the stream they are called for; the parser
 * therefore never holds a stream pointer across a callback without checking 'cur' again
 * (stream_remove clears it).
 */
#include "p2p/p2p.h"

#include <string.h>

/* Room beyond max_output kept for control frames (ACK, FIN, RST, window updates, pings). */
#define YMX_CONTROL_RESERVE (64u * 1024u)

struct ymx_stream {
    uint32_t id;
    struct ymx_stream *hnext; /* hash chain */
    void *user;
    uint64_t send_window; /* bytes the peer lets us send */
    uint64_t recv_window; /* bytes the peer may still send us */
    uint64_t unconsumed;  /* handed to on_data, not yet consumed */
    uint64_t credit;      /* consumed, not yet granted back */
    uint32_t window;      /* the stream's total receive window */
    bool outbound;
    bool acked;
    bool local_fin;
    bool remote_fin;
    bool write_blocked; /* a write was cut short by the window: report on_writable */
};

struct dc_yamux {
    struct dc_yamux_config cfg;

    struct ymx_stream **buckets;
    uint32_t bucket_mask;
    size_t n_streams;
    uint32_t next_id;
    uint32_t unacked; /* outbound streams still waiting for the peer's ACK */
    uint64_t granted; /* sum of the streams' windows */

    struct dc_buf out;
    size_t out_off; /* out.data[out_off..out.len) is unwritten */

    /* Receive parser. */
    uint8_t hdr[DC_YAMUX_HEADER_LEN];
    size_t hdr_got;
    size_t payload_left;    /* data bytes of the current frame still to come */
    struct ymx_stream *cur; /* stream they belong to, NULL to discard them */
    uint16_t cur_flags;     /* flags of the current data frame, applied after its payload */

    bool ping_out;
    uint32_t ping_opaque;
    uint64_t ping_sent_us;

    bool go_away_sent;
    bool go_away_recv;
    bool in_feed;
    int err; /* sticky session failure */
};

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- output ------------------------------------------------------------------------------ */

static size_t out_pending(const struct dc_yamux *y)
{
    return y->out.len - y->out_off;
}

/* Checks that n more bytes fit under the data cap (or the control cap) and makes room. */
static int out_reserve(struct dc_yamux *y, size_t n, bool control)
{
    size_t limit = y->cfg.max_output + (control ? YMX_CONTROL_RESERVE : 0);
    size_t pending = out_pending(y);

    if (pending > limit || n > limit - pending)
        return DC_ELIMIT;
    if (n > y->out.max - y->out.len && y->out_off > 0) {
        memmove(y->out.data, y->out.data + y->out_off, pending);
        y->out.len = pending;
        y->out_off = 0;
    }
    return 0;
}

/* Queues a 12-byte header. */
static int send_frame(struct dc_yamux *y, uint8_t type, uint16_t flags, uint32_t id,
                      uint32_t length, bool control)
{
    uint8_t h[DC_YAMUX_HEADER_LEN];
    int rc = out_reserve(y, sizeof(h), control);

    if (rc < 0)
        return rc;
    h[0] = 0;
    h[1] = type;
    h[2] = (uint8_t)(flags >> 8);
    h[3] = (uint8_t)flags;
    put_be32(h + 4, id);
    put_be32(h + 8, length);
    return dc_buf_append(&y->out, h, sizeof(h));
}

const uint8_t *dc_yamux_output(const struct dc_yamux *y, size_t *len)
{
    *len = out_pending(y);
    return *len > 0 ? y->out.data + y->out_off : NULL;
}

void dc_yamux_output_consume(struct dc_yamux *y, size_t n)
{
    if (n > out_pending(y))
        n = out_pending(y);
    y->out_off += n;
    if (y->out_off == y->out.len) {
        y->out_off = 0;
        y->out.len = 0;
    }
}

/* ---- stream table ------------------------------------------------------------------------ */

static struct ymx_stream **bucket_of(const struct dc_yamux *y, uint32_t id)
{
    return &y->buckets[(id ^ (id >> 16)) & y->bucket_mask];
}

static struct ymx_stream *stream_find(const struct dc_yamux *y, uint32_t id)
{
    struct ymx_stream *s = *bucket_of(y, id);

    while (s != NULL && s->id != id)
        s = s->hnext;
    return s;
}

static struct ymx_stream *stream_add(struct dc_yamux *y, uint32_t id, bool outbound)
{
    struct ymx_stream *s = dc_calloc(1, sizeof(*s));
    struct ymx_stream **b;

    if (s == NULL)
        return NULL;
    s->id = id;
    s->outbound = outbound;
    s->send_window = DC_YAMUX_INITIAL_WINDOW;
    s->recv_window = DC_YAMUX_INITIAL_WINDOW;
    s->window = DC_YAMUX_INITIAL_WINDOW;
    y->granted += s->window;
    b = bucket_of(y, id);
    s->hnext = *b;
    *b = s;
    y->n_streams++;
    if (outbound)
        y->unacked++;
    return s;
}

/* Unlinks and frees 's' without callbacks. */
static void stream_remove(struct dc_yamux *y, struct ymx_stream *s)
{
    struct ymx_stream **pp = bucket_of(y, s->id);

    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    y->n_streams--;
    y->granted -= s->window;
    if (s->outbound && !s->acked)
        y->unacked--;
    if (y->cur == s)
        y->cur = NULL;
    dc_free(s);
}

/* Removes 's' and tells the application it is gone. */
static void stream_end(struct dc_yamux *y, struct ymx_stream *s, int err)
{
    uint32_t id = s->id;
    void *user = s->user;

    stream_remove(y, s);
    if (y->cfg.cb.on_close != NULL)
        y->cfg.cb.on_close(y->cfg.ud, id, user, err);
}

/* Ends every stream with 'err' (session failure or free). Callbacks may not add streams
 * because y->err is set first. */
static void end_all_streams(struct dc_yamux *y, int err)
{
    for (uint32_t i = 0; i <= y->bucket_mask; i++)
        while (y->buckets[i] != NULL)
            stream_end(y, y->buckets[i], err);
}

/* ---- session ------------------------------------------------------------------------------ */

void dc_yamux_config_default(struct dc_yamux_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_streams = 256;
    cfg->recv_window = 4u * 1024u * 1024u;
    cfg->max_output = 4u * 1024u * 1024u;
    cfg->max_buffered = 64u * 1024u * 1024u;
}

int dc_yamux_new(const struct dc_yamux_config *cfg, struct dc_yamux **out)
{
    struct dc_yamux *y;
    uint32_t n_buckets = 16;

    *out = NULL;
    if (cfg->recv_window < DC_YAMUX_INITIAL_WINDOW || cfg->max_streams == 0 ||
        cfg->max_streams > 65536 || cfg->max_output < 64u * 1024u || cfg->max_output > SIZE_MAX / 4)
        return DC_EINVAL;
    y = dc_calloc(1, sizeof(*y));
    if (y == NULL)
        return DC_ENOMEM;
    y->cfg = *cfg;
    while (n_buckets < cfg->max_streams)
        n_buckets <<= 1;
    y->buckets = dc_calloc(n_buckets, sizeof(*y->buckets));
    if (y->buckets == NULL)
        goto err_free_session;
    y->bucket_mask = n_buckets - 1;
    y->next_id = cfg->is_client ? 1 : 2;
    dc_buf_init(&y->out, cfg->max_output + YMX_CONTROL_RESERVE);
    *out = y;
    return 0;

err_free_session:
    dc_free(y);
    return DC_ENOMEM;
}

void dc_yamux_free(struct dc_yamux *y)
{
    if (y == NULL)
        return;
    if (y->err == 0)
        y->err = DC_ECLOSED;
    end_all_streams(y, DC_ECLOSED);
    dc_free(y->buckets);
    dc_buf_cleanup(&y->out);
    dc_free(y);
}

/* Ends the session after a failure: Go Away for protocol errors, every stream closed. */
static int session_fail(struct dc_yamux *y, int err)
{
    if (y->err != 0)
        return y->err;
    if (err == DC_EPROTO && !y->go_away_sent) {
        y->go_away_sent = true;
        /* Best effort: when even the control reserve is full the peer is not reading. */
        (void)send_frame(y, DC_YAMUX_TYPE_GO_AWAY, 0, 0, DC_YAMUX_GO_AWAY_PROTOCOL, true);
    }
    y->err = err;
    y->payload_left = 0;
    end_all_streams(y, err);
    return err;
}

/* ---- receive path ------------------------------------------------------------------------ */

/* The peer half-closed 's'. */
static void remote_fin(struct dc_yamux *y, struct ymx_stream *s)
{
    uint32_t id = s->id;

    if (s->remote_fin)
        return; /* a repeated FIN changes nothing */
    s->remote_fin = true;
    if (y->cfg.cb.on_fin != NULL) {
        y->cfg.cb.on_fin(y->cfg.ud, id, s->user);
        s = stream_find(y, id); /* the callback may have reset it */
        if (s == NULL)
            return;
    }
    if (s->local_fin)
        stream_end(y, s, 0);
}

/* Window to grant a new stream beyond the initial one: the configured size while the session
 * budget allows, else none. */
static uint32_t extra_window(const struct dc_yamux *y)
{
    uint32_t extra = y->cfg.recv_window - DC_YAMUX_INITIAL_WINDOW;

    return y->granted + extra <= y->cfg.max_buffered ? extra : 0;
}

/* Records that 'extra' more window was granted to 's'. */
static void grow_window(struct dc_yamux *y, struct ymx_stream *s, uint32_t extra)
{
    s->recv_window += extra;
    s->window += extra;
    y->granted += extra;
}

/* A SYN from the peer: accept (ACK with our larger window) or refuse (RST). Returns the new
 * stream, NULL when refused, or sets '*rc' on a session error. */
static struct ymx_stream *accept_stream(struct dc_yamux *y, uint32_t id, int *rc)
{
    struct ymx_stream *s;
    void *user = NULL;
    uint32_t extra;

    *rc = 0;
    if ((id & 1) == (y->cfg.is_client ? 1u : 0u)) {
        *rc = DC_EPROTO; /* the peer used our half of the id space */
        return NULL;
    }
    if (y->go_away_sent || y->n_streams >= y->cfg.max_streams || y->cfg.cb.on_stream_open == NULL ||
        (s = stream_add(y, id, false)) == NULL) {
        *rc = send_frame(y, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_RST, id, 0, true);
        return NULL;
    }
    /* ACK before the callback runs, so that anything it writes follows the ACK. */
    extra = extra_window(y);
    *rc = send_frame(y, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_ACK, id, extra, true);
    if (*rc < 0) {
        stream_remove(y, s);
        return NULL;
    }
    grow_window(y, s, extra);
    s->acked = true;
    if (y->cfg.cb.on_stream_open(y->cfg.ud, id, &user) < 0) {
        s = stream_find(y, id);
        if (s != NULL)
            stream_remove(y, s);
        *rc = send_frame(y, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_RST, id, 0, true);
        return NULL;
    }
    s = stream_find(y, id); /* the callback may have reset it already */
    if (s != NULL)
        s->user = user;
    return s;
}

/* Applies a window-update frame to 's'. */
static int on_window_update(struct dc_yamux *y, struct ymx_stream *s, uint16_t flags,
                            uint32_t delta)
{
    if (flags & DC_YAMUX_FLAG_RST) {
        stream_end(y, s, -ECONNRESET);
        return 0;
    }
    if (s->send_window + delta > UINT32_MAX)
        return DC_EPROTO;
    s->send_window += delta;
    if (delta > 0 && s->write_blocked && !s->local_fin) {
        uint32_t id = s->id;

        s->write_blocked = false;
        if (y->cfg.cb.on_writable != NULL) {
            y->cfg.cb.on_writable(y->cfg.ud, id, s->user);
            s = stream_find(y, id);
            if (s == NULL)
                return 0;
        }
    }
    if (flags & DC_YAMUX_FLAG_FIN)
        remote_fin(y, s);
    return 0;
}

/* A data or window-update header. For data it sets up payload delivery. */
static int on_stream_frame(struct dc_yamux *y, uint8_t type, uint16_t flags, uint32_t id,
                           uint32_t length)
{
    struct ymx_stream *s = stream_find(y, id);
    int rc;

    if (flags & DC_YAMUX_FLAG_SYN) {
        if (s != NULL)
            return DC_EPROTO; /* SYN for a stream that is open */
        s = accept_stream(y, id, &rc);
        if (rc < 0)
            return rc;
    } else if (s != NULL && (flags & DC_YAMUX_FLAG_ACK) && s->outbound && !s->acked) {
        s->acked = true;
        y->unacked--;
    }

    if (type == DC_YAMUX_TYPE_WINDOW_UPDATE)
        return s != NULL ? on_window_update(y, s, flags, length) : 0;

    if (s == NULL) {
        /* A stream we refused, reset or finished: frames in flight are skipped, but never
         * more than any window we could have granted. */
        if (length > y->cfg.recv_window)
            return DC_EPROTO;
        y->cur = NULL;
        y->payload_left = length;
        return 0;
    }
    if (flags & DC_YAMUX_FLAG_RST) {
        stream_end(y, s, -ECONNRESET);
        if (length > y->cfg.recv_window)
            return DC_EPROTO;
        y->cur = NULL;
        y->payload_left = length;
        return 0;
    }
    if (length > 0 && s->remote_fin)
        return DC_EPROTO; /* data after FIN */
    if (length > s->recv_window)
        return DC_EPROTO; /* beyond the window we granted */
    s->recv_window -= length;
    y->cur = s;
    y->cur_flags = flags;
    y->payload_left = length;
    if (length == 0 && (flags & DC_YAMUX_FLAG_FIN))
        remote_fin(y, s);
    return 0;
}

static int on_header(struct dc_yamux *y, const uint8_t *h)
{
    uint8_t type = h[1];
    uint16_t flags = (uint16_t)(h[2] << 8 | h[3]);
    uint32_t id = get_be32(h + 4);
    uint32_t length = get_be32(h + 8);

    if (h[0] != 0)
        return DC_EPROTO;
    switch (type) {
    case DC_YAMUX_TYPE_DATA:
    case DC_YAMUX_TYPE_WINDOW_UPDATE:
        if (id == 0)
            return DC_EPROTO;
        return on_stream_frame(y, type, flags, id, length);
    case DC_YAMUX_TYPE_PING:
        if (id != 0)
            return DC_EPROTO;
        if (flags & DC_YAMUX_FLAG_SYN)
            return send_frame(y, DC_YAMUX_TYPE_PING, DC_YAMUX_FLAG_ACK, 0, length, true);
        if ((flags & DC_YAMUX_FLAG_ACK) && y->ping_out && length == y->ping_opaque) {
            uint64_t rtt = 0;

            y->ping_out = false;
            if (y->cfg.cb.now_us != NULL)
                rtt = y->cfg.cb.now_us(y->cfg.ud) - y->ping_sent_us;
            if (y->cfg.cb.on_ping != NULL)
                y->cfg.cb.on_ping(y->cfg.ud, rtt);
        }
        return 0;
    case DC_YAMUX_TYPE_GO_AWAY:
        if (id != 0)
            return DC_EPROTO;
        if (!y->go_away_recv) {
            y->go_away_recv = true;
            if (y->cfg.cb.on_go_away != NULL)
                y->cfg.cb.on_go_away(y->cfg.ud, length);
        }
        return 0;
    default:
        return DC_EPROTO;
    }
}

/* Hands n payload bytes of the current data frame to the application (or drops them). */
static void on_payload(struct dc_yamux *y, const uint8_t *p, size_t n)
{
    struct ymx_stream *s = y->cur;

    if (s == NULL)
        return;
    s->unconsumed += n;
    if (y->cfg.cb.on_data != NULL)
        y->cfg.cb.on_data(y->cfg.ud, s->id, s->user, p, n);
}

int dc_yamux_feed(struct dc_yamux *y, const uint8_t *in, size_t len)
{
    size_t pos = 0;
    int rc = 0;

    if (y->err != 0)
        return y->err;
    if (y->in_feed)
        return DC_ESTATE;
    y->in_feed = true;
    while (pos < len && y->err == 0) {
        const uint8_t *h;

        if (y->payload_left > 0) {
            size_t n = len - pos < y->payload_left ? len - pos : y->payload_left;

            y->payload_left -= n;
            on_payload(y, in + pos, n);
            pos += n;
            if (y->payload_left == 0 && y->cur != NULL && (y->cur_flags & DC_YAMUX_FLAG_FIN))
                remote_fin(y, y->cur);
            continue;
        }
        if (y->hdr_got == 0 && len - pos >= DC_YAMUX_HEADER_LEN) {
            h = in + pos; /* the common case: a whole header, no copy */
            pos += DC_YAMUX_HEADER_LEN;
        } else {
            size_t n = DC_YAMUX_HEADER_LEN - y->hdr_got;

            if (n > len - pos)
                n = len - pos;
            memcpy(y->hdr + y->hdr_got, in + pos, n);
            y->hdr_got += n;
            pos += n;
            if (y->hdr_got < DC_YAMUX_HEADER_LEN)
                break;
            y->hdr_got = 0;
            h = y->hdr;
        }
        rc = on_header(y, h);
        if (rc < 0)
            break;
    }
    y->in_feed = false;
    if (rc < 0)
        return session_fail(y, rc);
    return y->err;
}

/* ---- API calls --------------------------------------------------------------------------- */

int dc_yamux_stream_open(struct dc_yamux *y, void *stream_user, uint32_t *id)
{
    struct ymx_stream *s;
    uint32_t extra;
    int rc;

    if (y->err != 0 || y->go_away_sent || y->go_away_recv)
        return DC_ECLOSED;
    if (y->n_streams >= y->cfg.max_streams || y->next_id > UINT32_MAX - 2)
        return DC_ELIMIT;
    if (y->unacked >= DC_YAMUX_MAX_ACK_BACKLOG)
        return DC_EAGAIN;
    s = stream_add(y, y->next_id, true);
    if (s == NULL)
        return DC_ENOMEM;
    extra = extra_window(y);
    rc = send_frame(y, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_SYN, s->id, extra, true);
    if (rc < 0) {
        stream_remove(y, s);
        return rc;
    }
    grow_window(y, s, extra);
    s->user = stream_user;
    *id = s->id;
    y->next_id += 2;
    return 0;
}

int dc_yamux_stream_set_user(struct dc_yamux *y, uint32_t id, void *stream_user)
{
    struct ymx_stream *s = stream_find(y, id);

    if (s == NULL)
        return DC_ENOENT;
    s->user = stream_user;
    return 0;
}

int dc_yamux_stream_write(struct dc_yamux *y, uint32_t id, const void *p, size_t len,
                          size_t *written)
{
    struct ymx_stream *s = stream_find(y, id);
    const uint8_t *src = p;
    size_t done = 0;
    int rc = 0;

    *written = 0;
    if (y->err != 0)
        return DC_ECLOSED;
    if (s == NULL)
        return DC_ENOENT;
    if (s->local_fin)
        return DC_ESTATE;
    if (len > s->send_window)
        s->write_blocked = true;
    /* Frames of at most DC_YAMUX_MAX_FRAME_DATA: some implementations refuse larger ones. */
    while (done < len) {
        size_t n = len - done, pending = out_pending(y), room, saved;

        if (n > s->send_window)
            n = (size_t)s->send_window;
        if (n > DC_YAMUX_MAX_FRAME_DATA)
            n = DC_YAMUX_MAX_FRAME_DATA;
        room = pending < y->cfg.max_output ? y->cfg.max_output - pending : 0;
        room = room > DC_YAMUX_HEADER_LEN ? room - DC_YAMUX_HEADER_LEN : 0;
        if (n > room)
            n = room;
        if (n == 0)
            break;
        /* Reserve header and payload together so a failure leaves nothing half-queued. */
        rc = out_reserve(y, DC_YAMUX_HEADER_LEN + n, false);
        if (rc < 0)
            break;
        saved = y->out.len;
        rc = send_frame(y, DC_YAMUX_TYPE_DATA, 0, id, (uint32_t)n, false);
        if (rc == 0)
            rc = dc_buf_append(&y->out, src + done, n);
        if (rc < 0) {
            y->out.len = saved;
            break;
        }
        s->send_window -= n;
        done += n;
    }
    *written = done;
    /* Bytes already queued count as success; the failure will recur on the next call. */
    return done > 0 ? 0 : rc;
}

int dc_yamux_stream_frame(struct dc_yamux *y, uint32_t id, size_t len,
                          uint8_t hdr[DC_YAMUX_HEADER_LEN], size_t *n)
{
    struct ymx_stream *s = stream_find(y, id);
    size_t take = len;

    *n = 0;
    if (y->err != 0)
        return DC_ECLOSED;
    if (s == NULL)
        return DC_ENOENT;
    if (s->local_fin)
        return DC_ESTATE;
    if (len == 0)
        return DC_EINVAL;
    if (take > s->send_window) {
        take = (size_t)s->send_window;
        s->write_blocked = true;
    }
    if (take == 0)
        return 0; /* a closed window is reported even while output is queued */
    if (out_pending(y) > 0)
        return DC_ESTATE;
    if (take > DC_YAMUX_MAX_FRAME_DATA)
        take = DC_YAMUX_MAX_FRAME_DATA;
    hdr[0] = 0;
    hdr[1] = DC_YAMUX_TYPE_DATA;
    hdr[2] = 0;
    hdr[3] = 0;
    put_be32(hdr + 4, id);
    put_be32(hdr + 8, (uint32_t)take);
    s->send_window -= take;
    *n = take;
    return 0;
}

size_t dc_yamux_stream_send_window(const struct dc_yamux *y, uint32_t id)
{
    const struct ymx_stream *s = stream_find(y, id);

    return s != NULL ? (size_t)s->send_window : 0;
}

int dc_yamux_stream_consume(struct dc_yamux *y, uint32_t id, size_t n)
{
    struct ymx_stream *s = stream_find(y, id);
    int rc;

    if (s == NULL)
        return DC_ENOENT;
    if (n > s->unconsumed)
        return DC_EINVAL;
    s->unconsumed -= n;
    s->credit += n;
    /* No point granting window to a peer that has finished sending. */
    if (s->remote_fin || s->credit < s->window / 2 || y->err != 0)
        return 0;
    rc = send_frame(y, DC_YAMUX_TYPE_WINDOW_UPDATE, 0, id, (uint32_t)s->credit, true);
    if (rc < 0)
        return rc; /* credit stays; the next consume retries */
    s->recv_window += s->credit;
    s->credit = 0;
    return 0;
}

int dc_yamux_stream_close(struct dc_yamux *y, uint32_t id)
{
    struct ymx_stream *s = stream_find(y, id);
    int rc;

    if (s == NULL)
        return DC_ENOENT;
    if (s->local_fin)
        return DC_ESTATE;
    rc = send_frame(y, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_FIN, id, 0, true);
    if (rc < 0)
        return rc;
    s->local_fin = true;
    if (s->remote_fin)
        stream_end(y, s, 0);
    return 0;
}

int dc_yamux_stream_reset(struct dc_yamux *y, uint32_t id)
{
    struct ymx_stream *s = stream_find(y, id);

    if (s == NULL)
        return DC_ENOENT;
    stream_remove(y, s);
    if (y->err != 0)
        return 0;
    return send_frame(y, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_RST, id, 0, true);
}

int dc_yamux_ping(struct dc_yamux *y)
{
    int rc;

    if (y->err != 0)
        return DC_ECLOSED;
    if (y->ping_out)
        return DC_EBUSY;
    rc = send_frame(y, DC_YAMUX_TYPE_PING, DC_YAMUX_FLAG_SYN, 0, y->ping_opaque + 1, true);
    if (rc < 0)
        return rc;
    y->ping_opaque++;
    y->ping_out = true;
    y->ping_sent_us = y->cfg.cb.now_us != NULL ? y->cfg.cb.now_us(y->cfg.ud) : 0;
    return 0;
}

int dc_yamux_go_away(struct dc_yamux *y, uint32_t code)
{
    int rc;

    if (y->go_away_sent)
        return DC_ESTATE;
    rc = send_frame(y, DC_YAMUX_TYPE_GO_AWAY, 0, 0, code, true);
    if (rc < 0)
        return rc;
    y->go_away_sent = true;
    return 0;
}

size_t dc_yamux_stream_count(const struct dc_yamux *y)
{
    return y->n_streams;
}

bool dc_yamux_is_done(const struct dc_yamux *y)
{
    return y->err != 0 || (y->go_away_sent && y->go_away_recv && y->n_streams == 0);
}

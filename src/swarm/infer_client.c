/* SPDX-License-Identifier: MIT */
/*
 * infer_client.c - the asking side of /democritus/infer/1.0.0.
 *
 * A call dials the peer when needed, opens one stream, writes the request frame and half-closes,
 * then checks everything that comes back before the application sees it: each TokenPacket's
 * signature against the public key inlined in the peer's PeerId, its seq (0, 1, 2, ... with no
 * gap), and at the end the InferDone signature, its packet count and the transcript hash we
 * computed ourselves over the request we sent and the packets we received. Anything wrong
 * resets the stream: the server then cancels the generation. One timer bounds the whole call.
 *
 * Lifetime: the call is freed after on_done (or dc_infer_call_cancel) once its timer handle has
 * closed and no dial callback is pending (a dial cannot be withdrawn: its callback finds the
 * call marked finished and only drops its reference).
 */
#include <string.h>

#include "swarm/swarm.h"

#define DEFAULT_TIMEOUT_MS 120000

struct dc_infer_call {
    struct dc_host *host;
    struct dc_peer_id peer;
    uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN];
    uint8_t rid[DC_INFER_REQUEST_ID_LEN];
    const struct dc_infer_call_cb *cb;
    void *ud;
    struct dc_buf request; /* the encoded frame, until the stream takes it */
    uint8_t *raw;          /* the InferRequest bytes, for the transcript */
    size_t raw_len;
    struct dc_infer_transcript tr;
    struct dc_infer_reader reader;
    struct dc_host_stream *stream;
    uv_timer_t timer;
    bool dialing;
    bool starting; /* inside dc_infer_call_start: an end becomes its return value */
    int start_err;
    bool finished; /* on_done fired or canceled: no more callbacks */
    bool timer_open;
    uint64_t next_seq;
};

static void call_maybe_free(struct dc_infer_call *c)
{
    if (!c->finished || c->dialing || c->timer_open || c->starting)
        return;
    dc_buf_cleanup(&c->request);
    dc_infer_reader_cleanup(&c->reader);
    dc_free(c->raw);
    dc_free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct dc_infer_call *c = h->data;

    c->timer_open = false;
    call_maybe_free(c);
}

/* Stops everything; fires on_done unless 'quiet'. */
static void call_end(struct dc_infer_call *c, int status, const struct dc_infer_done *done,
                     bool quiet)
{
    if (c->finished)
        return;
    c->finished = true;
    c->start_err = status < 0 ? status : DC_ECLOSED;
    if (c->stream != NULL) {
        dc_host_stream_set_user(c->stream, NULL);
        if (status == 0)
            (void)!dc_host_stream_close(c->stream); /* orderly: the server closes too */
        else
            dc_host_stream_reset(c->stream);
        c->stream = NULL;
    }
    if (c->starting)
        return; /* the host failed the stream inside dc_infer_call_start (out of memory) */
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    if (!quiet && c->cb->on_done != NULL)
        c->cb->on_done(c->ud, status, done);
}

static int on_frame(void *ud, const struct dc_infer_frame *f)
{
    struct dc_infer_call *c = ud;
    uint8_t hash[DC_INFER_HASH_LEN];
    int rc;

    if (f->type == DC_INFER_FRAME_REQUEST)
        return DC_EPROTO;
    rc = dc_infer_frame_verify(f, c->pk, c->rid);
    if (rc < 0)
        return DC_ECRYPTO;
    if (f->type == DC_INFER_FRAME_TOKEN) {
        if (f->token.seq != c->next_seq)
            return DC_EPROTO;
        c->next_seq++;
        dc_infer_transcript_add(&c->tr, f->raw, f->raw_len);
        if (c->cb->on_token != NULL)
            c->cb->on_token(c->ud, &f->token);
        return c->finished ? DC_ECLOSED : 0; /* canceled from the callback */
    }
    dc_infer_transcript_hash(&c->tr, hash);
    if (f->done.n_packets != c->tr.n_packets ||
        sodium_memcmp(hash, f->done.transcript_hash, sizeof(hash)) != 0)
        return DC_ECRYPTO;
    call_end(c, 0, &f->done, false);
    return DC_ECLOSED; /* nothing may follow InferDone */
}

static void on_data(void *ud, struct dc_host_stream *s, const uint8_t *p, size_t n)
{
    struct dc_infer_call *c = ud;
    int rc;

    DC_UNUSED(s);
    if (c == NULL || c->finished)
        return;
    rc = dc_infer_reader_push(&c->reader, p, n, on_frame, c);
    if (rc < 0 && !c->finished)
        call_end(c, rc == DC_ECRYPTO ? DC_ECRYPTO : DC_EPROTO, NULL, false);
    call_maybe_free(c);
}

static void on_fin(void *ud, struct dc_host_stream *s)
{
    struct dc_infer_call *c = ud;

    DC_UNUSED(s);
    if (c != NULL && !c->finished) {
        call_end(c, DC_ECLOSED, NULL, false);
        call_maybe_free(c);
    }
}

static void on_close(void *ud, struct dc_host_stream *s, int err)
{
    struct dc_infer_call *c = ud;

    DC_UNUSED(s);
    if (c == NULL)
        return;
    c->stream = NULL;
    if (!c->finished)
        call_end(c, err != 0 ? err : DC_ECLOSED, NULL, false);
    call_maybe_free(c);
}

static const struct dc_host_stream_cb client_cb = {
    .on_data = on_data,
    .on_fin = on_fin,
    .on_close = on_close,
};

static int open_stream(struct dc_infer_call *c)
{
    static const char *const protos[] = {DC_INFER_PROTOCOL_ID};
    struct dc_host_stream *st;
    int rc;

    /* Any call below may end the stream at once: the host then fires on_close from inside it
     * (when a flush fails for memory and takes the connection down), which marks the call
     * finished; the stream pointer is not to be used after that, even one returned with 0. */
    rc = dc_host_new_stream(c->host, &c->peer, protos, 1, &client_cb, c, &st);
    if (rc < 0)
        return rc;
    if (c->finished)
        return c->start_err;
    c->stream = st;
    rc = dc_host_stream_write(st, c->request.data, c->request.len);
    if (rc == 0 && !c->finished)
        rc = dc_host_stream_close(st);
    if (c->finished)
        return c->start_err;
    if (rc < 0) {
        dc_host_stream_set_user(st, NULL);
        dc_host_stream_reset(st);
        c->stream = NULL;
        return rc;
    }
    dc_buf_cleanup(&c->request);
    return 0;
}

static void on_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    struct dc_infer_call *c = ud;

    DC_UNUSED(peer);
    c->dialing = false;
    if (!c->finished) {
        if (status == 0)
            status = open_stream(c);
        if (status < 0)
            call_end(c, status, NULL, false);
    }
    call_maybe_free(c);
}

static void on_timeout(uv_timer_t *t)
{
    struct dc_infer_call *c = t->data;

    call_end(c, DC_ETIMEDOUT, NULL, false);
    call_maybe_free(c);
}

int dc_infer_call_start(uv_loop_t *loop, struct dc_host *h, const struct dc_peer_id *peer,
                        const struct dc_multiaddr *addr, const struct dc_infer_request *req,
                        uint32_t timeout_ms, const struct dc_infer_call_cb *cb, void *ud,
                        struct dc_infer_call **out)
{
    struct dc_infer_request copy;
    struct dc_infer_call *c;
    int rc;

    *out = NULL;
    if (loop == NULL || h == NULL || peer == NULL || req == NULL || cb == NULL)
        return DC_EINVAL;
    c = dc_calloc(1, sizeof(*c));
    if (c == NULL)
        return DC_ENOMEM;
    /* A callback the host fires while we are still inside this function (it should not, but
     * an allocation failure deep in the host can close the connection at once) is turned into
     * our return value; the timer starts only once nothing can fail any more. */
    c->host = h;
    c->peer = *peer;
    c->cb = cb;
    c->ud = ud;
    dc_buf_init(&c->request, 0);
    dc_infer_reader_init(&c->reader);
    rc = dc_peer_id_ed25519_public_key(peer, c->pk);
    if (rc < 0)
        goto err_free;
    if (dc_crypto_init() < 0) {
        rc = DC_ECRYPTO;
        goto err_free;
    }
    randombytes_buf(c->rid, sizeof(c->rid));
    copy = *req;
    memcpy(copy.request_id, c->rid, sizeof(c->rid));
    rc = dc_infer_request_encode(&copy, &c->request, &c->raw, &c->raw_len);
    if (rc < 0)
        goto err_free;
    dc_infer_transcript_init(&c->tr, c->raw, c->raw_len);
    c->starting = true;
    if (dc_host_is_connected(h, peer)) {
        rc = open_stream(c);
    } else if (addr != NULL) {
        rc = dc_host_dial(h, addr, 0, on_dialed, c);
        c->dialing = rc == 0;
    } else {
        rc = DC_ENOENT;
    }
    c->starting = false;
    if (rc == 0 && c->finished)
        rc = c->start_err;
    if (rc < 0)
        goto err_free;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->timer_open = true;
    uv_timer_start(&c->timer, on_timeout, timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS, 0);
    *out = c;
    return 0;

err_free:
    dc_buf_cleanup(&c->request);
    dc_infer_reader_cleanup(&c->reader);
    dc_free(c->raw);
    dc_free(c);
    return rc;
}

void dc_infer_call_cancel(struct dc_infer_call *c)
{
    call_end(c, DC_ECANCELED, NULL, true);
    call_maybe_free(c);
}

const uint8_t *dc_infer_call_request_id(const struct dc_infer_call *c)
{
    return c->rid;
}

void dc_infer_token_event(const struct dc_infer_token *tok,
                          struct dc_top_logprob top[DC_INFER_MAX_TOP], struct dc_gen_event *ev)
{
    size_t n_top = tok->n_top < DC_INFER_MAX_TOP ? tok->n_top : DC_INFER_MAX_TOP;

    memset(ev, 0, sizeof(*ev));
    for (size_t i = 0; i < n_top; i++) {
        const char *t = tok->top[i].text != NULL ? tok->top[i].text : "";
        size_t n = strlen(t);

        top[i].id = tok->top[i].id;
        top[i].logprob = tok->top[i].logprob;
        if (n >= sizeof(top[i].text)) {
            n = sizeof(top[i].text) - 1;
            while (n > 0 && ((unsigned char)t[n] & 0xc0) == 0x80)
                n--;
        }
        memcpy(top[i].text, t, n);
        top[i].text[n] = '\0';
    }
    ev->type = DC_GEN_EV_TOKEN;
    ev->id = tok->token_id;
    ev->text = tok->text != NULL ? tok->text : "";
    ev->text_len = tok->text != NULL ? tok->text_len : 0;
    ev->logprob = tok->has_logprob ? tok->logprob : 0.0f;
    ev->n_top = (uint32_t)n_top;
    ev->top = top;
}

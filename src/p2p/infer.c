/* SPDX-License-Identifier: MIT */
/*
 * infer.c - the /democritus/infer/1.0.0 protocol core: frames, signatures, transcript.
 *
 * The outer InferFrame and the signature field are handled by hand rather than through
 * protoc-c, because signatures must cover the exact bytes a peer sent: the decoder keeps the
 * inner message's bytes ('raw') and the verifier strips field 15 from them, so a peer whose
 * encoder orders fields differently (or adds fields we do not know) still verifies. The inner
 * messages themselves are packed and unpacked by the protoc-c code, with our allocator so that
 * allocation-failure tests reach it.
 */
#include "p2p/infer.h"

#include <string.h>

#include "base/varint.h"
#include "infer.pb-c.h"
#include "p2p/pb.h"

#define SIG_FIELD 15u
#define SIG_TAG   0x7a /* (15 << 3) | 2 */

static const char DOMAIN_TOKEN[] = "democritus/infer/1.0.0/token"; /* NUL included when hashed */
static const char DOMAIN_DONE[] = "democritus/infer/1.0.0/done";
static const char DOMAIN_TRANSCRIPT[] = "democritus/infer/1.0.0/transcript";

/* ---- raw protobuf scanning ------------------------------------------------------------- */

/* A protobuf varint (up to 10 bytes, non-minimal forms accepted as protobuf does). */
static int pb_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned i = 0; i < 10; i++) {
        if (*pos >= len)
            return DC_ECORRUPT;
        uint8_t b = p[(*pos)++];
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return DC_ECORRUPT;
}

struct pb_field {
    uint32_t num;
    unsigned wire;
    size_t start, end;    /* the whole field, tag included */
    const uint8_t *value; /* wire type 2: the payload */
    size_t value_len;
};

/* Reads the field at *pos; returns 1 with '*f', 0 at the end, DC_ECORRUPT. */
static int pb_next(const uint8_t *p, size_t len, size_t *pos, struct pb_field *f)
{
    uint64_t tag, v;
    int rc;

    if (*pos >= len)
        return 0;
    f->start = *pos;
    f->value = NULL;
    f->value_len = 0;
    rc = pb_varint(p, len, pos, &tag);
    if (rc < 0)
        return rc;
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return DC_ECORRUPT;
    f->num = (uint32_t)(tag >> 3);
    f->wire = (unsigned)(tag & 7);
    switch (f->wire) {
    case 0:
        rc = pb_varint(p, len, pos, &v);
        if (rc < 0)
            return rc;
        break;
    case 1:
        if (len - *pos < 8)
            return DC_ECORRUPT;
        *pos += 8;
        break;
    case 5:
        if (len - *pos < 4)
            return DC_ECORRUPT;
        *pos += 4;
        break;
    case 2:
        rc = pb_varint(p, len, pos, &v);
        if (rc < 0)
            return rc;
        if (v > len - *pos)
            return DC_ECORRUPT;
        f->value = p + *pos;
        f->value_len = (size_t)v;
        *pos += (size_t)v;
        break;
    default: /* groups (3, 4) and reserved types */
        return DC_ECORRUPT;
    }
    f->end = *pos;
    return 1;
}

/* Checks that raw[0..len) holds at most one signature field, of 64 bytes; '*sig' gets it. */
static int find_signature(const uint8_t *raw, size_t len, const uint8_t **sig)
{
    struct pb_field f;
    size_t pos = 0;
    int rc;

    *sig = NULL;
    while ((rc = pb_next(raw, len, &pos, &f)) == 1) {
        if (f.num != SIG_FIELD)
            continue;
        if (*sig != NULL || f.wire != 2 || f.value_len != DC_ED25519_SIGNATURE_LEN)
            return DC_ECORRUPT;
        *sig = f.value;
    }
    return rc;
}

/* Appends raw[0..len) without its signature field(s) to 'out'. */
static int strip_signature(const uint8_t *raw, size_t len, struct dc_buf *out)
{
    struct pb_field f;
    size_t pos = 0;
    int rc;

    while ((rc = pb_next(raw, len, &pos, &f)) == 1) {
        if (f.num == SIG_FIELD)
            continue;
        rc = dc_buf_append(out, raw + f.start, f.end - f.start);
        if (rc < 0)
            return rc;
    }
    return rc;
}

static void put_u64be(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* The message a token or done signature covers: domain\0 || rid || [u64be seq] || body. */
static int signed_message(const char *domain, const uint8_t *rid, const uint64_t *seq,
                          struct dc_buf *msg)
{
    uint8_t be[8];
    int rc;

    rc = dc_buf_append(msg, domain, strlen(domain) + 1);
    if (rc == 0)
        rc = dc_buf_append(msg, rid, DC_INFER_REQUEST_ID_LEN);
    if (rc == 0 && seq != NULL) {
        put_u64be(be, *seq);
        rc = dc_buf_append(msg, be, sizeof(be));
    }
    return rc;
}

/* ---- decoding ---------------------------------------------------------------------------- */

void dc_infer_frame_cleanup(struct dc_infer_frame *f)
{
    if (f->pb != NULL)
        protobuf_c_message_free_unpacked(f->pb, &dc_pb_allocator);
    dc_free(f->msgs);
    dc_free(f->raw_copy);
    dc_free(f->text_copy);
    memset(f, 0, sizeof(*f));
}

static int view_request(struct dc_infer_frame *f, Democritus__P2p__InferRequest *m)
{
    struct dc_infer_request *r = &f->request;

    if (!m->has_request_id || m->request_id.len != DC_INFER_REQUEST_ID_LEN)
        return DC_ECORRUPT;
    if (m->n_messages > DC_INFER_MAX_MESSAGES || m->n_stop > DC_INFER_MAX_STOP)
        return DC_ELIMIT;
    memcpy(r->request_id, m->request_id.data, DC_INFER_REQUEST_ID_LEN);
    if (m->n_messages > 0) {
        f->msgs = dc_calloc(m->n_messages, sizeof(*f->msgs));
        if (f->msgs == NULL)
            return DC_ENOMEM;
    }
    for (size_t i = 0; i < m->n_messages; i++) {
        f->msgs[i].role = m->messages[i]->role != NULL ? m->messages[i]->role : "";
        f->msgs[i].content = m->messages[i]->content != NULL ? m->messages[i]->content : "";
    }
    r->messages = f->msgs;
    r->n_messages = m->n_messages;
    r->has_temperature = m->has_temperature;
    r->temperature = m->temperature;
    r->has_top_p = m->has_top_p;
    r->top_p = m->top_p;
    r->has_top_k = m->has_top_k;
    r->top_k = m->top_k;
    r->has_min_p = m->has_min_p;
    r->min_p = m->min_p;
    r->has_seed = m->has_seed;
    r->seed = m->seed;
    r->max_tokens = m->has_max_tokens ? m->max_tokens : 0;
    r->n_stop = m->n_stop;
    for (size_t i = 0; i < m->n_stop; i++)
        r->stop[i] = m->stop[i];
    r->n_logprobs = m->has_n_logprobs ? m->n_logprobs : 0;
    if (r->n_logprobs > DC_INFER_MAX_TOP)
        return DC_ELIMIT;
    r->want_logprobs = m->has_want_logprobs && m->want_logprobs;
    r->model = m->model;
    r->continue_text = m->continue_text;
    return 0;
}

static int view_token(struct dc_infer_frame *f, Democritus__P2p__TokenPacket *m)
{
    struct dc_infer_token *t = &f->token;

    if (m->n_top > DC_INFER_MAX_TOP)
        return DC_ELIMIT;
    t->seq = m->seq;
    f->text_copy = dc_malloc(m->has_text ? m->text.len + 1 : 1);
    if (f->text_copy == NULL)
        return DC_ENOMEM;
    if (m->has_text && m->text.len > 0)
        memcpy(f->text_copy, m->text.data, m->text.len);
    t->text_len = m->has_text ? m->text.len : 0;
    f->text_copy[t->text_len] = '\0';
    t->text = f->text_copy;
    t->token_id = m->token_id;
    t->has_logprob = m->has_logprob;
    t->logprob = m->logprob;
    t->n_top = m->n_top;
    for (size_t i = 0; i < m->n_top; i++) {
        t->top[i].id = m->top[i]->id;
        t->top[i].logprob = m->top[i]->logprob;
        t->top[i].text = m->top[i]->text != NULL ? m->top[i]->text : "";
    }
    return 0;
}

static int view_done(struct dc_infer_frame *f, Democritus__P2p__InferDone *m)
{
    struct dc_infer_done *d = &f->done;

    if (m->has_transcript_hash) {
        if (m->transcript_hash.len != DC_INFER_HASH_LEN)
            return DC_ECORRUPT;
        memcpy(d->transcript_hash, m->transcript_hash.data, DC_INFER_HASH_LEN);
    }
    if (m->usage != NULL) {
        d->prompt_tokens = m->usage->prompt_tokens;
        d->completion_tokens = m->usage->completion_tokens;
    }
    d->finish_reason = m->finish_reason != NULL ? m->finish_reason : "";
    d->error = m->error;
    d->error_code = m->error_code;
    d->n_packets = m->n_packets;
    return 0;
}

int dc_infer_frame_decode(const uint8_t *p, size_t len, struct dc_infer_frame *f)
{
    const uint8_t *inner = NULL, *sig;
    size_t inner_len = 0, pos = 0;
    struct pb_field fl;
    uint32_t kind = 0;
    int rc;

    memset(f, 0, sizeof(*f));
    if (len > DC_INFER_MAX_FRAME)
        return DC_ELIMIT;
    while ((rc = pb_next(p, len, &pos, &fl)) == 1) {
        if (fl.num < 1 || fl.num > 3)
            continue; /* unknown fields are skipped, as protobuf does */
        if (fl.wire != 2 || kind != 0)
            return DC_ECORRUPT; /* exactly one member of the oneof */
        kind = fl.num;
        inner = fl.value;
        inner_len = fl.value_len;
    }
    if (rc < 0)
        return rc;
    if (kind == 0)
        return DC_ECORRUPT;
    f->type = (enum dc_infer_frame_type)kind;
    /* Keep our own copy of the bytes: the reader's buffer moves on. */
    f->raw_copy = dc_malloc(inner_len > 0 ? inner_len : 1);
    if (f->raw_copy == NULL)
        return DC_ENOMEM;
    if (inner_len > 0)
        memcpy(f->raw_copy, inner, inner_len);
    f->raw = f->raw_copy;
    f->raw_len = inner_len;
    if (kind != DC_INFER_FRAME_REQUEST) {
        rc = find_signature(f->raw, f->raw_len, &sig);
        if (rc < 0)
            goto err;
        f->has_signature = sig != NULL;
    }
    switch (kind) {
    case DC_INFER_FRAME_REQUEST:
        f->pb = democritus__p2p__infer_request__unpack(&dc_pb_allocator, f->raw_len, f->raw);
        break;
    case DC_INFER_FRAME_TOKEN:
        f->pb = democritus__p2p__token_packet__unpack(&dc_pb_allocator, f->raw_len, f->raw);
        break;
    default:
        f->pb = democritus__p2p__infer_done__unpack(&dc_pb_allocator, f->raw_len, f->raw);
        break;
    }
    if (f->pb == NULL) {
        rc = dc_pb_unpack_error(f->raw_len);
        goto err;
    }
    if (kind == DC_INFER_FRAME_REQUEST)
        rc = view_request(f, f->pb);
    else if (kind == DC_INFER_FRAME_TOKEN)
        rc = view_token(f, f->pb);
    else
        rc = view_done(f, f->pb);
    if (rc < 0)
        goto err;
    return 0;

err:
    dc_infer_frame_cleanup(f);
    return rc;
}

/* ---- the reader ---------------------------------------------------------------------------- */

void dc_infer_reader_init(struct dc_infer_reader *r)
{
    dc_buf_init(&r->buf, DC_INFER_MAX_FRAME + DC_VARINT_MAX_LEN + 1);
    r->err = 0;
}

void dc_infer_reader_cleanup(struct dc_infer_reader *r)
{
    dc_buf_cleanup(&r->buf);
}

/* Decodes every complete frame at the front of the buffer. */
static int reader_drain(struct dc_infer_reader *r, dc_infer_frame_cb cb, void *ud)
{
    while (r->buf.len > 0) {
        struct dc_infer_frame f;
        uint64_t flen = 0;
        size_t pos = 0;
        int rc;

        rc = pb_varint(r->buf.data, r->buf.len, &pos, &flen);
        if (rc < 0) {
            if (r->buf.len >= 10)
                return r->err = DC_ECORRUPT;
            return 0; /* the prefix is not complete yet */
        }
        if (flen == 0)
            return r->err = DC_ECORRUPT;
        if (flen > DC_INFER_MAX_FRAME)
            return r->err = DC_ELIMIT;
        if (r->buf.len - pos < flen)
            return 0;
        rc = dc_infer_frame_decode(r->buf.data + pos, (size_t)flen, &f);
        if (rc < 0)
            return r->err = rc;
        dc_buf_consume(&r->buf, pos + (size_t)flen);
        rc = cb(ud, &f);
        dc_infer_frame_cleanup(&f);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int dc_infer_reader_push(struct dc_infer_reader *r, const uint8_t *p, size_t n,
                         dc_infer_frame_cb cb, void *ud)
{
    int rc;

    if (r->err < 0)
        return r->err;
    while (n > 0) {
        size_t room = r->buf.max - r->buf.len, take = n < room ? n : room;

        rc = dc_buf_append(&r->buf, p, take);
        if (rc < 0)
            return r->err = rc;
        p += take;
        n -= take;
        rc = reader_drain(r, cb, ud);
        if (rc < 0)
            return rc;
        if (n > 0 && r->buf.len == r->buf.max)
            return r->err = DC_ELIMIT; /* cannot happen: a full buffer holds a whole frame */
    }
    return 0;
}

/* ---- transcript ---------------------------------------------------------------------------- */

static void hash_chunk(crypto_hash_sha256_state *st, const uint8_t *p, size_t len)
{
    uint8_t be[8];

    put_u64be(be, len);
    crypto_hash_sha256_update(st, be, sizeof(be));
    crypto_hash_sha256_update(st, p, len);
}

void dc_infer_transcript_init(struct dc_infer_transcript *t, const uint8_t *req, size_t len)
{
    crypto_hash_sha256_init(&t->st);
    crypto_hash_sha256_update(&t->st, (const uint8_t *)DOMAIN_TRANSCRIPT,
                              sizeof(DOMAIN_TRANSCRIPT));
    hash_chunk(&t->st, req, len);
    t->n_packets = 0;
}

void dc_infer_transcript_add(struct dc_infer_transcript *t, const uint8_t *packet, size_t len)
{
    hash_chunk(&t->st, packet, len);
    t->n_packets++;
}

void dc_infer_transcript_hash(const struct dc_infer_transcript *t, uint8_t out[DC_INFER_HASH_LEN])
{
    crypto_hash_sha256_state copy = t->st;

    crypto_hash_sha256_final(&copy, out);
}

/* ---- encoding ------------------------------------------------------------------------------ */

/* Appends varint(frame) || tag || varint(len) || inner to 'out'; 'out' unchanged on failure. */
static int append_frame(struct dc_buf *out, uint8_t tag, const uint8_t *inner, size_t len)
{
    uint8_t pre[2 * DC_VARINT_MAX_LEN + 1];
    size_t n_inner = dc_varint_len(len), frame = 1 + n_inner + len, n = 0;
    size_t old = out->len;
    int rc;

    if (frame > DC_INFER_MAX_FRAME)
        return DC_ELIMIT;
    n += dc_varint_encode(frame, pre);
    pre[n++] = tag;
    n += dc_varint_encode(len, pre + n);
    rc = dc_buf_append(out, pre, n);
    if (rc == 0) {
        rc = dc_buf_append(out, inner, len);
        if (rc < 0)
            out->len = old;
    }
    return rc;
}

/* Packs 'm' into a heap buffer with room for a trailing signature field. */
static uint8_t *pack_message(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = dc_malloc(n + 2 + DC_ED25519_SIGNATURE_LEN);

    if (p != NULL)
        *len = protobuf_c_message_pack(m, p);
    return p;
}

/* Signs domain || rid || [seq] || body[0..len) and appends the signature field to body, which
 * has room for it. */
static int sign_into(const struct dc_identity *id, const char *domain, const uint8_t *rid,
                     const uint64_t *seq, uint8_t *body, size_t *len)
{
    struct dc_buf msg;
    int rc;

    dc_buf_init(&msg, 0);
    rc = signed_message(domain, rid, seq, &msg);
    if (rc == 0)
        rc = dc_buf_append(&msg, body, *len);
    if (rc == 0)
        rc = dc_identity_sign(id, msg.data, msg.len, body + *len + 2);
    dc_buf_cleanup(&msg);
    if (rc < 0)
        return rc;
    body[*len] = SIG_TAG;
    body[*len + 1] = DC_ED25519_SIGNATURE_LEN;
    *len += 2 + DC_ED25519_SIGNATURE_LEN;
    return 0;
}

int dc_infer_request_encode(const struct dc_infer_request *req, struct dc_buf *out,
                            uint8_t **raw_out, size_t *raw_len)
{
    Democritus__P2p__InferRequest m = DEMOCRITUS__P2P__INFER_REQUEST__INIT;
    Democritus__P2p__ChatMessage *pm = NULL, **pp = NULL;
    uint8_t *body = NULL;
    size_t len = 0;
    int rc;

    if (raw_out != NULL)
        *raw_out = NULL;
    if (req->n_messages > DC_INFER_MAX_MESSAGES || req->n_stop > DC_INFER_MAX_STOP ||
        req->n_logprobs > DC_INFER_MAX_TOP || (req->n_messages > 0 && req->messages == NULL))
        return DC_EINVAL;
    for (size_t i = 0; i < req->n_messages; i++)
        if (req->messages[i].role == NULL || req->messages[i].content == NULL)
            return DC_EINVAL;
    for (size_t i = 0; i < req->n_stop; i++)
        if (req->stop[i] == NULL)
            return DC_EINVAL;
    if (req->n_messages > 0) {
        pm = dc_calloc(req->n_messages, sizeof(*pm));
        pp = dc_calloc(req->n_messages, sizeof(*pp));
        if (pm == NULL || pp == NULL) {
            rc = DC_ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < req->n_messages; i++) {
        democritus__p2p__chat_message__init(&pm[i]);
        pm[i].role = (char *)req->messages[i].role;
        pm[i].content = (char *)req->messages[i].content;
        pp[i] = &pm[i];
    }
    m.has_request_id = true;
    m.request_id.data = (uint8_t *)req->request_id;
    m.request_id.len = DC_INFER_REQUEST_ID_LEN;
    m.n_messages = req->n_messages;
    m.messages = pp;
    m.has_temperature = req->has_temperature;
    m.temperature = req->temperature;
    m.has_top_p = req->has_top_p;
    m.top_p = req->top_p;
    m.has_top_k = req->has_top_k;
    m.top_k = req->top_k;
    m.has_min_p = req->has_min_p;
    m.min_p = req->min_p;
    m.has_seed = req->has_seed;
    m.seed = req->seed;
    m.has_max_tokens = req->max_tokens > 0;
    m.max_tokens = req->max_tokens;
    m.n_stop = req->n_stop;
    m.stop = (char **)req->stop;
    m.has_n_logprobs = req->n_logprobs > 0;
    m.n_logprobs = req->n_logprobs;
    m.has_want_logprobs = req->want_logprobs;
    m.want_logprobs = req->want_logprobs;
    m.model = (char *)req->model;
    m.continue_text = (char *)req->continue_text;
    body = pack_message(&m.base, &len);
    if (body == NULL) {
        rc = DC_ENOMEM;
        goto out;
    }
    rc = append_frame(out, 0x0a, body, len);
    if (rc == 0 && raw_out != NULL) {
        *raw_out = body;
        *raw_len = len;
        body = NULL;
    }
out:
    dc_free(body);
    dc_free(pp);
    dc_free(pm);
    return rc;
}

int dc_infer_token_encode(const struct dc_identity *id, const uint8_t rid[DC_INFER_REQUEST_ID_LEN],
                          const struct dc_infer_token *tok, struct dc_infer_transcript *t,
                          struct dc_buf *out)
{
    Democritus__P2p__TokenPacket m = DEMOCRITUS__P2P__TOKEN_PACKET__INIT;
    Democritus__P2p__TopLogprob top[DC_INFER_MAX_TOP], *tp[DC_INFER_MAX_TOP];
    uint8_t *body;
    size_t len = 0;
    int rc;

    if (tok->n_top > DC_INFER_MAX_TOP)
        return DC_EINVAL;
    for (size_t i = 0; i < tok->n_top; i++) {
        democritus__p2p__top_logprob__init(&top[i]);
        top[i].has_id = true;
        top[i].id = tok->top[i].id;
        top[i].has_logprob = true;
        top[i].logprob = tok->top[i].logprob;
        top[i].text = (char *)(tok->top[i].text != NULL ? tok->top[i].text : "");
        tp[i] = &top[i];
    }
    m.has_seq = true;
    m.seq = tok->seq;
    m.has_text = true;
    m.text.data = (uint8_t *)(tok->text != NULL ? tok->text : "");
    m.text.len = tok->text != NULL ? tok->text_len : 0;
    m.has_token_id = true;
    m.token_id = tok->token_id;
    m.has_logprob = tok->has_logprob;
    m.logprob = tok->logprob;
    m.n_top = tok->n_top;
    m.top = tp;
    body = pack_message(&m.base, &len);
    if (body == NULL)
        return DC_ENOMEM;
    rc = sign_into(id, DOMAIN_TOKEN, rid, &tok->seq, body, &len);
    if (rc == 0)
        rc = append_frame(out, 0x12, body, len);
    if (rc == 0 && t != NULL)
        dc_infer_transcript_add(t, body, len);
    dc_free(body);
    return rc;
}

int dc_infer_done_encode(const struct dc_identity *id, const uint8_t rid[DC_INFER_REQUEST_ID_LEN],
                         const struct dc_infer_done *done, const struct dc_infer_transcript *t,
                         struct dc_buf *out)
{
    Democritus__P2p__InferDone m = DEMOCRITUS__P2P__INFER_DONE__INIT;
    Democritus__P2p__Usage u = DEMOCRITUS__P2P__USAGE__INIT;
    uint8_t hash[DC_INFER_HASH_LEN] = {0}, *body;
    size_t len = 0;
    int rc;

    if (t != NULL)
        dc_infer_transcript_hash(t, hash);
    u.has_prompt_tokens = true;
    u.prompt_tokens = done->prompt_tokens;
    u.has_completion_tokens = true;
    u.completion_tokens = done->completion_tokens;
    m.usage = &u;
    m.finish_reason = (char *)done->finish_reason;
    m.error = (char *)done->error;
    m.error_code = (char *)done->error_code;
    m.has_transcript_hash = true;
    m.transcript_hash.data = hash;
    m.transcript_hash.len = sizeof(hash);
    m.has_n_packets = true;
    m.n_packets = t != NULL ? t->n_packets : 0;
    body = pack_message(&m.base, &len);
    if (body == NULL)
        return DC_ENOMEM;
    rc = sign_into(id, DOMAIN_DONE, rid, NULL, body, &len);
    if (rc == 0)
        rc = append_frame(out, 0x1a, body, len);
    dc_free(body);
    return rc;
}

int dc_infer_frame_verify(const struct dc_infer_frame *f,
                          const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN],
                          const uint8_t rid[DC_INFER_REQUEST_ID_LEN])
{
    const uint8_t *sig;
    struct dc_buf msg;
    int rc;

    if (f->type != DC_INFER_FRAME_TOKEN && f->type != DC_INFER_FRAME_DONE)
        return DC_ECORRUPT;
    rc = find_signature(f->raw, f->raw_len, &sig);
    if (rc < 0)
        return rc;
    if (sig == NULL)
        return DC_ECRYPTO;
    dc_buf_init(&msg, 0);
    rc = signed_message(f->type == DC_INFER_FRAME_TOKEN ? DOMAIN_TOKEN : DOMAIN_DONE, rid,
                        f->type == DC_INFER_FRAME_TOKEN ? &f->token.seq : NULL, &msg);
    if (rc == 0)
        rc = strip_signature(f->raw, f->raw_len, &msg);
    if (rc == 0)
        rc = dc_ed25519_verify(pk, msg.data, msg.len, sig);
    dc_buf_cleanup(&msg);
    return rc;
}

/* SPDX-License-Identifier: MIT */
/*
 * expert.c - capability records (route.h part 3): what an expert publishes about itself on
 * the DHT under "/democritus/expert/<PeerId>", as a Democritus signed record (p2p/record.h)
 * whose body is the Capability protobuf (proto/capability.proto).
 *
 * One set of rules (expert_valid) is applied to what we sign and to what we open, so a record
 * this node signs always opens, and a record it opens is one it could have signed. Opening
 * takes the value as hostile: dc_dht_record_open checks the envelope, the signature and that
 * the key names the signer before the body is looked at; the body is then unpacked by the
 * protoc-c code (allocations through dc_malloc, so the allocation-failure tests reach them),
 * every length is checked against the fixed-size fields of struct dc_expert before anything
 * is copied, and the body is freed before the call returns.
 *
 * Why an embedder id travels with the vector: vectors of different embedders are not
 * comparable. A record of an embedder we do not know is still accepted (so a swarm can move
 * to a better one without a flag day), with its embedding zeroed; ranking skips it.
 */
#include "swarm/route.h"

#include <math.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "capability.pb-c.h"
#include "p2p/pb.h"
#include "p2p/record.h"

#define PREFIX_LEN (sizeof(DC_EXPERT_KEY_PREFIX) - 1)
/* The largest embedding of another embedder accepted on the wire (and then ignored). */
#define FOREIGN_EMBEDDING_MAX 4096u
/* The Capability field numbers of the string fields (proto/capability.proto). */
#define FIELD_DESCRIPTION 1u
#define FIELD_EMBEDDER    2u
#define FIELD_MODEL       5u
#define FIELD_TAGS        12u

typedef Democritus__Swarm__Capability capability_pb;

/* ---- protobuf-c glue -------------------------------------------------------------------- */

/* Reads a protobuf varint (at most 10 bytes) at p[*i] within p[0..len), advancing *i. */
static bool pb_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    uint64_t r = 0;

    for (unsigned n = 0; n < 10 && *i < len; n++) {
        uint8_t b = p[(*i)++];

        r |= (uint64_t)(b & 0x7fu) << (7 * n);
        if ((b & 0x80u) == 0) {
            *v = r;
            return true;
        }
    }
    return false;
}

/*
 * Whether no string field of the Capability in p[0..len) holds a NUL byte. protobuf-c hands
 * strings over NUL-terminated without their length, so "a\0b" would silently be read as "a":
 * a record would then mean one thing to us and another to an implementation that keeps the
 * length. U+0000 has no business in any of these fields, so such a body is refused. The walk
 * is bounded by len; anything it cannot step over is refused too (protobuf-c accepted the body
 * already, so that does not happen).
 */
static bool strings_without_nul(const uint8_t *p, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint64_t tag, n, field;

        if (!pb_varint(p, len, &i, &tag))
            return false;
        field = tag >> 3;
        switch (tag & 7u) {
        case 0: /* varint */
            if (!pb_varint(p, len, &i, &n))
                return false;
            break;
        case 1: /* 64-bit */
            if (len - i < 8)
                return false;
            i += 8;
            break;
        case 5: /* 32-bit */
            if (len - i < 4)
                return false;
            i += 4;
            break;
        case 2: /* length-delimited */
            if (!pb_varint(p, len, &i, &n) || n > len - i)
                return false;
            if ((field == FIELD_DESCRIPTION || field == FIELD_EMBEDDER || field == FIELD_MODEL ||
                 field == FIELD_TAGS) &&
                memchr(p + i, 0, (size_t)n) != NULL)
                return false;
            i += (size_t)n;
            break;
        default: /* groups: protobuf-c does not take them either */
            return false;
        }
    }
    return true;
}

/* ---- field rules ------------------------------------------------------------------------ */

/* Whether p[0..n) is well-formed UTF-8: no overlong forms, surrogates or code points past
 * U+10FFFF. */
static bool utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = p[i];
        uint32_t cp, min;
        size_t k;

        if (c < 0x80u) {
            i++;
            continue;
        }
        /* k continuation bytes; the lead byte keeps its low 6 - k bits. */
        k = (c & 0xe0u) == 0xc0u ? 1 : (c & 0xf0u) == 0xe0u ? 2 : (c & 0xf8u) == 0xf0u ? 3 : 0;
        if (k == 0)
            return false;
        cp = c & (0x7fu >> (k + 1));
        min = k == 1 ? 0x80u : k == 2 ? 0x800u : 0x10000u;
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0u) != 0x80u)
                return false;
            cp = (cp << 6) | (p[i + j] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffffu || (cp >= 0xd800u && cp <= 0xdfffu))
            return false;
        i += k + 1;
    }
    return true;
}

static bool printable_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

/* Whether s (an array of 'cap' bytes) is a C string of min..max bytes; its length in *n. */
static bool text_fits(const char *s, size_t cap, size_t min, size_t max, size_t *n)
{
    *n = strnlen(s, cap);
    return *n < cap && *n >= min && *n <= max;
}

static bool is_ours(const struct dc_expert *x)
{
    return strcmp(x->embedder, DC_EMBEDDER_ID) == 0;
}

/*
 * The rules every record meets, signed or opened (route.h, docs/protocols.md "Capability
 * records"). What only the wire can get wrong (lengths of bytes fields, NULs, too many tags
 * to copy) is checked in parse_body before the copy.
 */
static bool expert_valid(const struct dc_expert *x)
{
    size_t n;

    if (!text_fits(x->description, sizeof(x->description), 1, DC_EXPERT_MAX_DESC, &n) ||
        !utf8_valid((const uint8_t *)x->description, n))
        return false;
    if (!text_fits(x->model, sizeof(x->model), 0, DC_EXPERT_MAX_MODEL, &n) ||
        !utf8_valid((const uint8_t *)x->model, n))
        return false;
    if (!text_fits(x->embedder, sizeof(x->embedder), 1, sizeof(x->embedder) - 1, &n) ||
        !printable_ascii(x->embedder, n))
        return false;
    if (is_ours(x) && x->lsh != dc_lsh_key_q(x->embedding))
        return false;
    if (x->n_tags > DC_EXPERT_MAX_TAGS)
        return false;
    for (size_t i = 0; i < x->n_tags; i++)
        if (!text_fits(x->tags[i], sizeof(x->tags[i]), 1, DC_EXPERT_MAX_TAG, &n) ||
            !printable_ascii(x->tags[i], n))
            return false;
    /* !(price >= 0) is also true for NaN. */
    if (!isfinite(x->price) || !(x->price >= 0.0))
        return false;
    return x->slots >= 1;
}

/* ---- public API ------------------------------------------------------------------------- */

int dc_expert_embed(struct dc_expert *x)
{
    float v[DC_EMBED_DIM];
    bool any = false;

    if (dc_embed_text(x->description, strnlen(x->description, sizeof(x->description)), v) == 0)
        return DC_EINVAL;
    dc_embed_quantize(v, x->embedding);
    for (size_t i = 0; i < DC_EMBED_DIM; i++)
        any |= x->embedding[i] != 0;
    /* Features that all cancel out leave nothing to compare with: as good as none. */
    if (!any)
        return DC_EINVAL;
    memset(x->embedder, 0, sizeof(x->embedder));
    memcpy(x->embedder, DC_EMBEDDER_ID, sizeof(DC_EMBEDDER_ID));
    x->lsh = dc_lsh_key_q(x->embedding);
    return 0;
}

int dc_expert_key(const struct dc_peer_id *peer, uint8_t out[DC_KAD_MAX_KEY], size_t *len)
{
    char text[DC_PEER_ID_STR_MAX];
    int n = dc_peer_id_to_string(peer, text, sizeof(text));

    *len = 0;
    if (n <= 0 || PREFIX_LEN + (size_t)n > DC_KAD_MAX_KEY)
        return DC_EINVAL;
    memcpy(out, DC_EXPERT_KEY_PREFIX, PREFIX_LEN);
    memcpy(out + PREFIX_LEN, text, (size_t)n);
    *len = PREFIX_LEN + (size_t)n;
    return 0;
}

int dc_expert_sign(const struct dc_identity *id, const struct dc_expert *x, uint64_t seq,
                   uint64_t expires_ms, struct dc_buf *out)
{
    capability_pb pb = DEMOCRITUS__SWARM__CAPABILITY__INIT;
    char *tags[DC_EXPERT_MAX_TAGS];
    uint8_t key[DC_KAD_MAX_KEY], body[DC_DHT_RECORD_MAX_BODY];
    size_t key_len, body_len;
    int rc;

    if (!expert_valid(x))
        return DC_EINVAL;
    rc = dc_expert_key(dc_identity_peer_id(id), key, &key_len);
    if (rc < 0)
        return rc;
    /* protobuf-c takes non-const pointers but only reads them when packing. */
    pb.description = (char *)x->description;
    pb.embedder = (char *)x->embedder;
    /* Another embedder's vector does not fit our fixed-size array, so none is sent for it. */
    if (is_ours(x)) {
        pb.embedding.data = (uint8_t *)x->embedding;
        pb.embedding.len = DC_EMBED_DIM;
    }
    pb.lsh = x->lsh;
    pb.model = (char *)x->model;
    if (x->has_model_sha256) {
        pb.model_sha256.data = (uint8_t *)x->model_sha256;
        pb.model_sha256.len = sizeof(x->model_sha256);
    }
    pb.n_ctx = x->n_ctx;
    pb.slots = x->slots;
    pb.active = x->active;
    pb.queued = x->queued;
    pb.price = x->price;
    for (size_t i = 0; i < x->n_tags; i++)
        tags[i] = (char *)x->tags[i];
    pb.n_tags = x->n_tags;
    pb.tags = tags;
    /* Bounded by the caps checked above (about 2.2 KiB); checked all the same. */
    body_len = democritus__swarm__capability__get_packed_size(&pb);
    if (body_len > sizeof(body))
        return DC_ELIMIT;
    democritus__swarm__capability__pack(&pb, body);
    return dc_dht_record_sign(id, key, key_len, seq, expires_ms, body, body_len, out);
}

/* Decodes and checks the Capability in p[0..len) into '*x' (zeroed by the caller). */
static int parse_body(const uint8_t *p, size_t len, struct dc_expert *x)
{
    capability_pb *pb = democritus__swarm__capability__unpack(&dc_pb_allocator, len, p);
    const char *s;
    size_t n;
    int rc = DC_ECORRUPT;

    if (pb == NULL)
        return dc_pb_unpack_error(len);
    if (!strings_without_nul(p, len))
        goto out_pb;
    /* proto3 strings are never NULL after an unpack (absent ones are ""); guarded anyway. */
    s = pb->description != NULL ? pb->description : "";
    if ((n = strlen(s)) > DC_EXPERT_MAX_DESC)
        goto out_pb;
    memcpy(x->description, s, n + 1);
    s = pb->embedder != NULL ? pb->embedder : "";
    if ((n = strlen(s)) >= sizeof(x->embedder))
        goto out_pb;
    memcpy(x->embedder, s, n + 1);
    s = pb->model != NULL ? pb->model : "";
    if ((n = strlen(s)) > DC_EXPERT_MAX_MODEL)
        goto out_pb;
    memcpy(x->model, s, n + 1);
    if (is_ours(x)) {
        if (pb->embedding.len != DC_EMBED_DIM)
            goto out_pb;
        memcpy(x->embedding, pb->embedding.data, DC_EMBED_DIM);
    } else if (pb->embedding.len > FOREIGN_EMBEDDING_MAX) {
        goto out_pb;
    }
    x->lsh = pb->lsh;
    if (pb->model_sha256.len == sizeof(x->model_sha256)) {
        memcpy(x->model_sha256, pb->model_sha256.data, sizeof(x->model_sha256));
        x->has_model_sha256 = true;
    } else if (pb->model_sha256.len != 0) {
        goto out_pb;
    }
    x->n_ctx = pb->n_ctx;
    x->slots = pb->slots > 0 ? pb->slots : 1; /* proto3 leaves 0 out: read as one slot */
    x->active = pb->active;
    x->queued = pb->queued;
    /* -0.0 is sent as nothing (proto3 drops zeros) and read back as 0.0: read it so now. */
    x->price = pb->price == 0.0 ? 0.0 : pb->price;
    if (pb->n_tags > DC_EXPERT_MAX_TAGS)
        goto out_pb;
    for (size_t i = 0; i < pb->n_tags; i++) {
        s = pb->tags[i] != NULL ? pb->tags[i] : "";
        if ((n = strlen(s)) > DC_EXPERT_MAX_TAG)
            goto out_pb;
        memcpy(x->tags[i], s, n + 1);
    }
    x->n_tags = pb->n_tags;
    rc = expert_valid(x) ? 0 : DC_ECORRUPT;
out_pb:
    democritus__swarm__capability__free_unpacked(pb, &dc_pb_allocator);
    return rc;
}

int dc_expert_open(const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
                   uint64_t now_ms, struct dc_expert *out)
{
    uint8_t want[DC_KAD_MAX_KEY];
    struct dc_dht_record r;
    size_t want_len;
    int rc;

    memset(out, 0, sizeof(*out));
    if (key == NULL || key_len < PREFIX_LEN || memcmp(key, DC_EXPERT_KEY_PREFIX, PREFIX_LEN) != 0)
        return DC_EPERM;
    rc = dc_dht_record_open(key, key_len, value, value_len, now_ms, &r);
    if (rc < 0)
        return rc;
    /* The record checks that the key ends with the signer; an expert key is exactly the
     * prefix and the PeerId ("/democritus/expert/x/<PeerId>" is another kind of record). */
    rc = dc_expert_key(&r.signer, want, &want_len);
    if (rc < 0)
        return DC_ECORRUPT;
    if (want_len != key_len || memcmp(want, key, key_len) != 0)
        return DC_EPERM;
    rc = parse_body(r.body, r.body_len, out);
    if (rc < 0) {
        memset(out, 0, sizeof(*out));
        return rc;
    }
    out->peer = r.signer;
    out->seq = r.seq;
    out->expires_ms = r.expires_ms;
    return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * ipns.c - the /ipns/ record validator and selector (record.h part 1), written from the IPNS
 * record spec. An IpnsEntry is a protobuf whose signed content is 'data', a DAG-CBOR map
 * {Value, Validity, ValidityType, Sequence, TTL}; signatureV2 is Ed25519 over
 * "ipns-signature:" || data. The legacy V1 protobuf fields are not signed by V2, so when
 * present they must repeat the CBOR values exactly (otherwise a V1-only reader and we would
 * disagree about what the record says).
 *
 * Map of the file: a bounded CBOR reader (just what DAG-CBOR maps need: definite lengths, a
 * depth limit, unknown entries skipped); the IpnsEntry parser (protoc-c code from
 * proto/libp2p/ipns.proto, with an allocator over dc_malloc so that allocation-failure tests
 * and the fuzzer see every allocation, and the DC_IPNS_MAX_RECORD cap checked before
 * unpacking); RFC 3339; validation; selection.
 *
 * Why our own CBOR reader: the map has five scalar fields; a general decoder would be more
 * code to trust with hostile bytes than this one is (and the project has no CBOR library).
 */
#include "p2p/record.h"

#include <string.h>

#include "libp2p/ipns.pb-c.h"
#include "p2p/pb.h"

#define CBOR_MAX_DEPTH 16

/* ============================================================================================
 * CBOR
 * ========================================================================================== */

enum { CBOR_UINT = 0, CBOR_NINT, CBOR_BYTES, CBOR_TEXT, CBOR_ARRAY, CBOR_MAP, CBOR_TAG, CBOR_7 };

struct cbor {
    const uint8_t *p;
    size_t len, pos;
};

/* Reads one item head: major type and argument. Indefinite lengths (not DAG-CBOR) and the
 * reserved additional-information values are refused. */
static int cbor_head(struct cbor *c, unsigned *major, uint64_t *arg)
{
    uint8_t b, ai;
    size_t n;

    if (c->pos >= c->len)
        return DC_ECORRUPT;
    b = c->p[c->pos++];
    *major = b >> 5;
    ai = b & 31;
    if (ai < 24) {
        *arg = ai;
        return 0;
    }
    if (ai > 27)
        return DC_ECORRUPT;
    n = (size_t)1 << (ai - 24);
    if (c->len - c->pos < n)
        return DC_ECORRUPT;
    *arg = 0;
    for (size_t i = 0; i < n; i++)
        *arg = (*arg << 8) | c->p[c->pos++];
    return 0;
}

/* Skips one complete item (for map entries we do not know). */
static int cbor_skip(struct cbor *c, unsigned depth)
{
    unsigned major;
    uint64_t arg;

    if (depth > CBOR_MAX_DEPTH || cbor_head(c, &major, &arg) < 0)
        return DC_ECORRUPT;
    switch (major) {
    case CBOR_BYTES:
    case CBOR_TEXT:
        if (arg > c->len - c->pos)
            return DC_ECORRUPT;
        c->pos += (size_t)arg;
        return 0;
    case CBOR_ARRAY:
    case CBOR_MAP:
        /* Every item takes at least one byte: this bounds the loop by the input. */
        if (arg > c->len - c->pos || (major == CBOR_MAP && arg > (c->len - c->pos) / 2))
            return DC_ECORRUPT;
        if (major == CBOR_MAP)
            arg *= 2;
        for (uint64_t i = 0; i < arg; i++)
            if (cbor_skip(c, depth + 1) < 0)
                return DC_ECORRUPT;
        return 0;
    case CBOR_TAG:
        return cbor_skip(c, depth + 1);
    default: /* integers, simple values and floats: the head was all */
        return 0;
    }
}

/* Reads a byte or text string of type 'want'. */
static int cbor_string(struct cbor *c, unsigned want, const uint8_t **p, size_t *len)
{
    unsigned major;
    uint64_t arg;

    if (cbor_head(c, &major, &arg) < 0 || major != want || arg > c->len - c->pos)
        return DC_ECORRUPT;
    *p = c->p + c->pos;
    *len = (size_t)arg;
    c->pos += (size_t)arg;
    return 0;
}

static int cbor_uint(struct cbor *c, uint64_t *v)
{
    unsigned major;

    if (cbor_head(c, &major, v) < 0 || major != CBOR_UINT)
        return DC_ECORRUPT;
    return 0;
}

static bool text_is(const uint8_t *p, size_t len, const char *s)
{
    return len == strlen(s) && memcmp(p, s, len) == 0;
}

/* The signed data map. Every known field must be present exactly once. */
static int parse_data(const uint8_t *p, size_t len, struct dc_ipns_entry *e)
{
    struct cbor c = {p, len, 0};
    unsigned major, seen = 0;
    uint64_t n;

    if (cbor_head(&c, &major, &n) < 0 || major != CBOR_MAP || n > (len - c.pos) / 2)
        return DC_ECORRUPT;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *k;
        size_t klen;
        unsigned bit;
        int rc;

        if (cbor_string(&c, CBOR_TEXT, &k, &klen) < 0)
            return DC_ECORRUPT;
        if (text_is(k, klen, "Value")) {
            bit = 1;
            rc = cbor_string(&c, CBOR_BYTES, &e->value, &e->value_len);
        } else if (text_is(k, klen, "Validity")) {
            bit = 2;
            rc = cbor_string(&c, CBOR_BYTES, &e->validity, &e->validity_len);
        } else if (text_is(k, klen, "ValidityType")) {
            bit = 4;
            rc = cbor_uint(&c, &e->validity_type);
        } else if (text_is(k, klen, "Sequence")) {
            bit = 8;
            rc = cbor_uint(&c, &e->sequence);
        } else if (text_is(k, klen, "TTL")) {
            bit = 16;
            rc = cbor_uint(&c, &e->ttl_ns);
        } else {
            bit = 0;
            rc = cbor_skip(&c, 1);
        }
        if (rc < 0 || (seen & bit) != 0)
            return DC_ECORRUPT;
        seen |= bit;
    }
    return seen == 31 && c.pos == len ? 0 : DC_ECORRUPT;
}

/* ============================================================================================
 * IpnsEntry
 * ========================================================================================== */

typedef Dc__Ipns__IpnsEntry entry_pb;

static void entry_free(entry_pb *e)
{
    dc__ipns__ipns_entry__free_unpacked(e, &dc_pb_allocator);
}

/*
 * Unpacks the IpnsEntry rec[0..len) (len already capped) into '*out' (for the caller to free
 * with entry_free) and finds its 'data' field in rec: protobuf-c hands bytes fields over as
 * copies, but struct dc_ipns_entry borrows from the caller's record, so the CBOR is read where
 * it lies in rec (any occurrence of the copied bytes is the same bytes). data and signatureV2
 * are required; the legacy fields are optional (has_*).
 */
static int parse_entry(const uint8_t *rec, size_t len, entry_pb **out, const uint8_t **data)
{
    entry_pb *e;

    *out = NULL;
    e = dc__ipns__ipns_entry__unpack(&dc_pb_allocator, len, rec);
    if (e == NULL)
        return dc_pb_unpack_error(len);
    if (!e->has_data || !e->has_signaturev2) {
        entry_free(e);
        return DC_ECORRUPT;
    }
    /* An empty 'data' stays empty (parse_data refuses it); otherwise it was copied from rec. */
    *data = e->data.len == 0 ? rec + len : memmem(rec, len, e->data.data, e->data.len);
    if (*data == NULL) {
        entry_free(e);
        return DC_ECORRUPT; /* cannot happen: the copy came from rec */
    }
    *out = e;
    return 0;
}

int dc_ipns_parse(const uint8_t *rec, size_t len, struct dc_ipns_entry *out)
{
    const uint8_t *data;
    entry_pb *e;
    int rc;

    memset(out, 0, sizeof(*out));
    if (len > DC_IPNS_MAX_RECORD)
        return DC_ELIMIT;
    rc = parse_entry(rec, len, &e, &data);
    if (rc < 0)
        return rc;
    rc = parse_data(data, e->data.len, out);
    entry_free(e);
    if (rc < 0)
        return rc;
    if (out->validity_type == DC_IPNS_VALIDITY_EOL &&
        dc_ipns_parse_time(out->validity, out->validity_len, &out->eol_ms) < 0)
        return DC_ECORRUPT;
    return 0;
}

/* ============================================================================================
 * RFC 3339
 * ========================================================================================== */

static int digits(const uint8_t *s, size_t n, unsigned *v)
{
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return DC_ECORRUPT;
        *v = *v * 10 + (unsigned)(s[i] - '0');
    }
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = y / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool leap(unsigned y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int dc_ipns_parse_time(const uint8_t *s, size_t len, uint64_t *ms)
{
    static const unsigned mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, sec, frac_ms = 0, oh = 0, om = 0;
    size_t i = 19;
    int64_t t, off = 0;

    if (len < 20 || digits(s, 4, &y) < 0 || s[4] != '-' || digits(s + 5, 2, &mo) < 0 ||
        s[7] != '-' || digits(s + 8, 2, &d) < 0 || (s[10] != 'T' && s[10] != 't') ||
        digits(s + 11, 2, &h) < 0 || s[13] != ':' || digits(s + 14, 2, &mi) < 0 || s[16] != ':' ||
        digits(s + 17, 2, &sec) < 0)
        return DC_ECORRUPT;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 ||
        d > mdays[mo - 1] + (mo == 2 && leap(y) ? 1u : 0u) || h > 23 || mi > 59 || sec > 60)
        return DC_ECORRUPT;
    if (s[i] == '.') {
        size_t start = ++i;

        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (i - start < 3)
                frac_ms = frac_ms * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        if (i == start)
            return DC_ECORRUPT;
        for (size_t k = i - start; k < 3; k++)
            frac_ms *= 10;
    }
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        if (len - i < 6 || digits(s + i + 1, 2, &oh) < 0 || s[i + 3] != ':' ||
            digits(s + i + 4, 2, &om) < 0 || oh > 23 || om > 59)
            return DC_ECORRUPT;
        off = ((int64_t)oh * 60 + om) * 60;
        if (s[i] == '-')
            off = -off;
        i += 6;
    } else {
        return DC_ECORRUPT;
    }
    if (i != len)
        return DC_ECORRUPT;
    t = days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + sec - off;
    if (t < 0)
        return DC_ECORRUPT;
    *ms = (uint64_t)t * 1000u + frac_ms;
    return 0;
}

/* ============================================================================================
 * Validation and selection
 * ========================================================================================== */

/* The Ed25519 key that must have signed records under 'id'. */
static int signer_key(const struct dc_peer_id *id, const entry_pb *e,
                      uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN])
{
    struct dc_public_key k;
    struct dc_peer_id got;
    int rc;

    if (!e->has_pubkey)
        return dc_peer_id_ed25519_public_key(id, pk); /* DC_EUNSUPPORTED for hashed ids */
    rc = dc_peer_id_from_public_key_proto(e->pubkey.data, e->pubkey.len, &got);
    if (rc < 0)
        return rc == DC_EUNSUPPORTED ? rc : DC_ECORRUPT;
    if (!dc_peer_id_equal(&got, id))
        return DC_ECRYPTO;
    rc = dc_public_key_proto_decode(e->pubkey.data, e->pubkey.len, &k);
    if (rc < 0)
        return rc == DC_EUNSUPPORTED ? rc : DC_ECORRUPT;
    if (k.type != DC_KEY_ED25519)
        return DC_EUNSUPPORTED;
    if (k.len != DC_ED25519_PUBLIC_KEY_LEN)
        return DC_ECORRUPT;
    memcpy(pk, k.data, DC_ED25519_PUBLIC_KEY_LEN);
    return 0;
}

static bool bytes_equal(const ProtobufCBinaryData *a, const uint8_t *b, size_t b_len)
{
    return a->len == b_len && (b_len == 0 || memcmp(a->data, b, b_len) == 0);
}

/* Whether the legacy V1 fields that are present repeat the signed data. validityType is the
 * spec's enum, an int32 to every V1 reader: it agrees only when it is that same number. */
static bool v1_agrees(const entry_pb *pb, const struct dc_ipns_entry *e)
{
    return (!pb->has_value || bytes_equal(&pb->value, e->value, e->value_len)) &&
           (!pb->has_validity || bytes_equal(&pb->validity, e->validity, e->validity_len)) &&
           (!pb->has_validitytype ||
            ((int)pb->validitytype >= 0 && (uint64_t)pb->validitytype == e->validity_type)) &&
           (!pb->has_sequence || pb->sequence == e->sequence) &&
           (!pb->has_ttl || pb->ttl == e->ttl_ns);
}

int dc_ipns_validate(const uint8_t *key, size_t key_len, const uint8_t *rec, size_t len,
                     uint64_t now_ms, struct dc_ipns_entry *out)
{
    /* The signed message is small (the record is capped), so it is built on the stack. */
    uint8_t msg[sizeof(DC_IPNS_SIG_PREFIX) - 1 + DC_IPNS_MAX_RECORD];
    const size_t plen = sizeof(DC_IPNS_SIG_PREFIX) - 1;
    uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN];
    struct dc_ipns_entry d, *e = out != NULL ? out : &d;
    struct dc_peer_id id;
    const uint8_t *data;
    entry_pb *pb;
    int rc;

    memset(e, 0, sizeof(*e));
    if (len > DC_IPNS_MAX_RECORD)
        return DC_ELIMIT;
    if (key_len <= 6 || memcmp(key, "/ipns/", 6) != 0 ||
        dc_peer_id_from_bytes(key + 6, key_len - 6, &id) < 0)
        return DC_ECORRUPT;
    rc = parse_entry(rec, len, &pb, &data);
    if (rc < 0)
        return rc;
    rc = parse_data(data, pb->data.len, e);
    if (rc < 0)
        goto out_pb;
    rc = signer_key(&id, pb, pk);
    if (rc < 0)
        goto out_pb;
    /* The signature is over the data bytes as received. */
    rc = DC_ECRYPTO;
    if (pb->signaturev2.len != DC_ED25519_SIGNATURE_LEN)
        goto out_pb;
    memcpy(msg, DC_IPNS_SIG_PREFIX, plen);
    memcpy(msg + plen, data, pb->data.len); /* data.len < len <= DC_IPNS_MAX_RECORD */
    if (dc_ed25519_verify(pk, msg, plen + pb->data.len, pb->signaturev2.data) < 0)
        goto out_pb;
    /* Signed data is trusted from here on; the unsigned V1 copies must agree with it. */
    if (!v1_agrees(pb, e))
        goto out_pb;
    rc = DC_EUNSUPPORTED;
    if (e->validity_type != DC_IPNS_VALIDITY_EOL)
        goto out_pb;
    rc = DC_ECORRUPT;
    if (dc_ipns_parse_time(e->validity, e->validity_len, &e->eol_ms) < 0)
        goto out_pb;
    rc = e->eol_ms < now_ms ? DC_ETIMEDOUT : 0;
out_pb:
    entry_free(pb);
    return rc;
}

static int ipns_validate_cb(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                            size_t value_len, uint64_t now_ms)
{
    DC_UNUSED(ud);
    return dc_ipns_validate(key, key_len, value, value_len, now_ms, NULL);
}

/* Higher Sequence wins, then the later end of life; ties keep the earlier index. A value
 * that does not parse (the caller validated them, so it should not happen) never wins. */
static size_t ipns_select_cb(void *ud, const uint8_t *key, size_t key_len,
                             const uint8_t *const *values, const size_t *value_lens, size_t n)
{
    struct dc_ipns_entry best = {0}, e;
    size_t best_i = 0;
    bool have = false;

    DC_UNUSED(ud);
    DC_UNUSED(key);
    DC_UNUSED(key_len);
    for (size_t i = 0; i < n; i++) {
        if (dc_ipns_parse(values[i], value_lens[i], &e) < 0)
            continue;
        if (!have || e.sequence > best.sequence ||
            (e.sequence == best.sequence && e.eol_ms > best.eol_ms)) {
            best = e;
            best_i = i;
            have = true;
        }
    }
    return best_i;
}

void dc_ipns_validator(struct dc_kad_validator *out)
{
    memset(out, 0, sizeof(*out));
    out->validate = ipns_validate_cb;
    out->select = ipns_select_cb;
}

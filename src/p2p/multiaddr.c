/* SPDX-License-Identifier: MIT */
/*
 * multiaddr.c - multiaddr text <-> binary conversion and the accessors a host needs to dial.
 * One table describes every supported protocol (code, name, how its value is encoded); the
 * text parser, the binary validator and the printer all walk it, so adding a protocol is one
 * line. Binary input is validated once on the way in (dc_multiaddr_from_bytes or
 * dc_multiaddr_parse); afterwards the iterator trusts the bytes. Values that are text (DNS
 * names, SNI, IPv6 zones) must not contain '/' or control bytes, because the text form could
 * not carry them and a binary address must always print to text that parses back to it.
 */
#include "p2p/p2p.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "base/multibase.h"
#include "base/varint.h"

/* How a protocol's value is encoded. */
enum ma_kind {
    MA_NONE, /* no value */
    MA_IP4,  /* 4 bytes */
    MA_IP6,  /* 16 bytes */
    MA_PORT, /* 2 bytes, big endian */
    MA_NAME, /* varint length + text without '/' */
    MA_P2P,  /* varint length + multihash; base58btc in text */
};

struct ma_proto {
    uint32_t code;
    const char *name;
    enum ma_kind kind;
};

/* The first entry for a code names it when printing; later entries are parse-only aliases. */
static const struct ma_proto ma_protos[] = {
    {DC_MA_IP4, "ip4", MA_IP4},
    {DC_MA_TCP, "tcp", MA_PORT},
    {DC_MA_UDP, "udp", MA_PORT},
    {DC_MA_DCCP, "dccp", MA_PORT},
    {DC_MA_IP6, "ip6", MA_IP6},
    {DC_MA_IP6ZONE, "ip6zone", MA_NAME},
    {DC_MA_DNS, "dns", MA_NAME},
    {DC_MA_DNS4, "dns4", MA_NAME},
    {DC_MA_DNS6, "dns6", MA_NAME},
    {DC_MA_DNSADDR, "dnsaddr", MA_NAME},
    {DC_MA_SCTP, "sctp", MA_PORT},
    {DC_MA_UDT, "udt", MA_NONE},
    {DC_MA_UTP, "utp", MA_NONE},
    {DC_MA_P2P, "p2p", MA_P2P},
    {DC_MA_P2P, "ipfs", MA_P2P},
    {DC_MA_P2P_CIRCUIT, "p2p-circuit", MA_NONE},
    {DC_MA_WEBRTC_DIRECT, "webrtc-direct", MA_NONE},
    {DC_MA_WEBRTC, "webrtc", MA_NONE},
    {DC_MA_HTTPS, "https", MA_NONE},
    {DC_MA_TLS, "tls", MA_NONE},
    {DC_MA_SNI, "sni", MA_NAME},
    {DC_MA_NOISE, "noise", MA_NONE},
    {DC_MA_QUIC, "quic", MA_NONE},
    {DC_MA_QUIC_V1, "quic-v1", MA_NONE},
    {DC_MA_WEBTRANSPORT, "webtransport", MA_NONE},
    {DC_MA_WS, "ws", MA_NONE},
    {DC_MA_WSS, "wss", MA_NONE},
    {DC_MA_HTTP, "http", MA_NONE},
};

static const struct ma_proto *proto_by_code(uint64_t code)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(ma_protos); i++)
        if (ma_protos[i].code == code)
            return &ma_protos[i];
    return NULL;
}

static const struct ma_proto *proto_by_name(const char *s, size_t n)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(ma_protos); i++)
        if (strlen(ma_protos[i].name) == n && memcmp(ma_protos[i].name, s, n) == 0)
            return &ma_protos[i];
    return NULL;
}

static int set_err(struct dc_multiaddr_error *err, int rc, size_t offset, const char *comp,
                   size_t comp_len, const char *reason)
{
    if (err != NULL) {
        err->offset = offset;
        if (comp_len >= sizeof(err->component))
            comp_len = sizeof(err->component) - 1;
        memcpy(err->component, comp, comp_len);
        err->component[comp_len] = '\0';
        err->reason = reason;
    }
    return rc;
}

/* A byte allowed in a text value: printable, no '/', no space (which would also make the text
 * form ambiguous to humans). UTF-8 bytes pass so that names stay opaque. */
static bool name_byte_ok(uint8_t c)
{
    return c > 0x20 && c != 0x7f && c != '/';
}

static bool name_ok(const uint8_t *p, size_t n)
{
    if (n == 0 || n > DC_MULTIADDR_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_byte_ok(p[i]))
            return false;
    return true;
}

/* A multihash is <varint code><varint digest length><digest>, nothing more. */
static bool multihash_ok(const uint8_t *p, size_t n)
{
    uint64_t code, dlen;
    size_t u1, u2;

    if (n == 0 || n > DC_MULTIADDR_MAX_MULTIHASH)
        return false;
    if (dc_varint_decode(p, n, &code, &u1) < 0)
        return false;
    if (dc_varint_decode(p + u1, n - u1, &dlen, &u2) < 0)
        return false;
    return dlen == n - u1 - u2;
}

/* Appends bytes to the binary form, bounded by DC_MULTIADDR_MAX_LEN. */
static int ma_put(struct dc_multiaddr *ma, const void *p, size_t n)
{
    if (n > DC_MULTIADDR_MAX_LEN - ma->len)
        return DC_ELIMIT;
    memcpy(ma->bytes + ma->len, p, n);
    ma->len += n;
    return 0;
}

static int ma_put_varint(struct dc_multiaddr *ma, uint64_t v)
{
    uint8_t tmp[DC_VARINT_MAX_LEN];

    return ma_put(ma, tmp, dc_varint_encode(v, tmp));
}

/* Parses a decimal port "0".."65535" (leading zeros tolerated, as other implementations do). */
static bool parse_port(const char *s, size_t n, uint16_t *port)
{
    uint32_t v = 0;

    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* Encodes one text value of protocol 'p' into 'ma'. Returns 0, DC_ECORRUPT with '*why' set,
 * or DC_ELIMIT. */
static int put_text_value(struct dc_multiaddr *ma, const struct ma_proto *p, const char *v,
                          size_t n, const char **why)
{
    char tmp[64];
    uint8_t bin[DC_MULTIADDR_MAX_MULTIHASH];
    uint16_t port;
    int rc;

    switch (p->kind) {
    case MA_IP4:
    case MA_IP6:
        /* inet_pton wants a C string; anything longer than an IPv6 text is wrong anyway. */
        if (n == 0 || n >= sizeof(tmp)) {
            *why = "bad address";
            return DC_ECORRUPT;
        }
        memcpy(tmp, v, n);
        tmp[n] = '\0';
        if (inet_pton(p->kind == MA_IP4 ? AF_INET : AF_INET6, tmp, bin) != 1) {
            *why = "bad address";
            return DC_ECORRUPT;
        }
        return ma_put(ma, bin, p->kind == MA_IP4 ? 4 : 16);
    case MA_PORT:
        if (!parse_port(v, n, &port)) {
            *why = "bad port";
            return DC_ECORRUPT;
        }
        bin[0] = (uint8_t)(port >> 8);
        bin[1] = (uint8_t)port;
        return ma_put(ma, bin, 2);
    case MA_NAME:
        if (!name_ok((const uint8_t *)v, n)) {
            *why = "bad name";
            return DC_ECORRUPT;
        }
        rc = ma_put_varint(ma, n);
        return rc < 0 ? rc : ma_put(ma, v, n);
    case MA_P2P:
        /* base58 decoding is quadratic: refuse text longer than any accepted multihash. */
        if (n > 2 * DC_MULTIADDR_MAX_MULTIHASH) {
            *why = "peer id too long";
            return DC_ECORRUPT;
        }
        rc = dc_base58_decode(v, n, bin, sizeof(bin));
        if (rc < 0 || !multihash_ok(bin, (size_t)rc)) {
            *why = "bad peer id (want a base58btc multihash)";
            return DC_ECORRUPT;
        }
        n = (size_t)rc;
        rc = ma_put_varint(ma, n);
        return rc < 0 ? rc : ma_put(ma, bin, n);
    case MA_NONE:
        break;
    }
    return 0;
}

int dc_multiaddr_parse(const char *text, struct dc_multiaddr *out, struct dc_multiaddr_error *err)
{
    const char *s = text;
    int rc;

    out->len = 0;
    if (*s != '/')
        return set_err(err, DC_ECORRUPT, 0, "?", 1, "must start with '/'");
    while (*s == '/' && s[1] != '\0') {
        const char *name = s + 1;
        size_t name_len = strcspn(name, "/");
        size_t offset = (size_t)(s - text);
        const struct ma_proto *p;
        const char *why = NULL;

        if (name_len == 0)
            return set_err(err, DC_ECORRUPT, offset, "?", 1, "empty component");
        p = proto_by_name(name, name_len);
        if (p == NULL)
            return set_err(err, DC_EUNSUPPORTED, offset, name, name_len, "unknown protocol");
        rc = ma_put_varint(out, p->code);
        if (rc < 0)
            return set_err(err, rc, offset, p->name, strlen(p->name), "address too long");
        s = name + name_len;
        if (p->kind == MA_NONE)
            continue;
        if (*s != '/')
            return set_err(err, DC_ECORRUPT, offset, p->name, strlen(p->name), "missing value");
        s++;
        name_len = strcspn(s, "/");
        rc = put_text_value(out, p, s, name_len, &why);
        if (rc < 0)
            return set_err(err, rc, offset, p->name, strlen(p->name),
                           why != NULL ? why : "address too long");
        s += name_len;
    }
    /* One trailing '/' is tolerated ("/ip4/1.2.3.4/tcp/1/"); "/" alone is not an address. */
    if (out->len == 0)
        return set_err(err, DC_ECORRUPT, 0, "?", 1, "empty address");
    return 0;
}

/* Reads the component at p[pos..len): on success fills 'c' and returns the bytes it spans.
 * Validates values, so it serves both from_bytes (untrusted) and the iterator (trusted). */
static int read_component(const uint8_t *p, size_t len, size_t pos,
                          struct dc_multiaddr_component *c, const char **why)
{
    const struct ma_proto *proto;
    uint64_t code, vlen;
    size_t used, used2;
    int rc;

    c->name = "?";
    rc = dc_varint_decode(p + pos, len - pos, &code, &used);
    if (rc < 0) {
        *why = "bad protocol code";
        return DC_ECORRUPT;
    }
    proto = proto_by_code(code);
    if (proto == NULL) {
        *why = "unknown protocol";
        return DC_EUNSUPPORTED;
    }
    c->code = proto->code;
    c->name = proto->name;
    pos += used;
    switch (proto->kind) {
    case MA_NONE:
        vlen = 0;
        break;
    case MA_IP4:
        vlen = 4;
        break;
    case MA_IP6:
        vlen = 16;
        break;
    case MA_PORT:
        vlen = 2;
        break;
    default:
        rc = dc_varint_decode(p + pos, len - pos, &vlen, &used2);
        if (rc < 0) {
            *why = "bad value length";
            return DC_ECORRUPT;
        }
        pos += used2;
        used += used2;
        break;
    }
    if (vlen > len - pos) {
        *why = "value truncated";
        return DC_ECORRUPT;
    }
    c->value = p + pos;
    c->value_len = (size_t)vlen;
    if (proto->kind == MA_NAME && !name_ok(c->value, c->value_len)) {
        *why = "bad name";
        return DC_ECORRUPT;
    }
    if (proto->kind == MA_P2P && !multihash_ok(c->value, c->value_len)) {
        *why = "bad multihash";
        return DC_ECORRUPT;
    }
    return (int)(used + vlen);
}

int dc_multiaddr_from_bytes(const uint8_t *p, size_t len, struct dc_multiaddr *out,
                            struct dc_multiaddr_error *err)
{
    struct dc_multiaddr_component c;
    size_t pos = 0;

    out->len = 0;
    if (len > DC_MULTIADDR_MAX_LEN)
        return set_err(err, DC_ELIMIT, 0, "?", 1, "address too long");
    while (pos < len) {
        const char *why = NULL;
        int n = read_component(p, len, pos, &c, &why);

        if (n < 0)
            return set_err(err, n, pos, c.name, strlen(c.name), why);
        pos += (size_t)n;
    }
    if (len > 0)
        memcpy(out->bytes, p, len);
    out->len = len;
    return 0;
}

int dc_multiaddr_next(const struct dc_multiaddr *ma, size_t *pos, struct dc_multiaddr_component *c)
{
    const char *why;
    int n;

    if (*pos >= ma->len)
        return 0;
    n = read_component(ma->bytes, ma->len, *pos, c, &why);
    if (n < 0)
        return 0; /* cannot happen for a validated multiaddr */
    *pos += (size_t)n;
    return 1;
}

bool dc_multiaddr_equal(const struct dc_multiaddr *a, const struct dc_multiaddr *b)
{
    return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

/* Bounded string writer for dc_multiaddr_format. */
struct text_out {
    char *p;
    size_t cap;
    size_t len;
    bool overflow;
};

static void out_put(struct text_out *o, const char *s, size_t n)
{
    if (o->overflow || n >= o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(struct text_out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

/* Writes the text of one value (dotted address, port, name, base58 peer id). */
static void format_value(struct text_out *o, const struct ma_proto *p,
                         const struct dc_multiaddr_component *c)
{
    char tmp[DC_MULTIADDR_MAX_MULTIHASH * 2];
    int n;

    switch (p->kind) {
    case MA_IP4:
    case MA_IP6:
        if (inet_ntop(p->kind == MA_IP4 ? AF_INET : AF_INET6, c->value, tmp, sizeof(tmp)) == NULL) {
            o->overflow = true;
            return;
        }
        out_str(o, tmp);
        return;
    case MA_PORT:
        n = snprintf(tmp, sizeof(tmp), "%u", (unsigned)(c->value[0] << 8 | c->value[1]));
        out_put(o, tmp, (size_t)n);
        return;
    case MA_NAME:
        out_put(o, (const char *)c->value, c->value_len);
        return;
    case MA_P2P:
        n = dc_base58_encode(c->value, c->value_len, tmp, sizeof(tmp));
        if (n < 0) {
            o->overflow = true;
            return;
        }
        out_put(o, tmp, (size_t)n);
        return;
    case MA_NONE:
        return;
    }
}

int dc_multiaddr_format(const struct dc_multiaddr *ma, char *out, size_t cap)
{
    struct text_out o = {out, cap, 0, cap == 0};
    struct dc_multiaddr_component c;
    size_t pos = 0;

    if (cap > 0)
        out[0] = '\0';
    while (dc_multiaddr_next(ma, &pos, &c)) {
        const struct ma_proto *p = proto_by_code(c.code);

        out_put(&o, "/", 1);
        out_str(&o, p->name);
        if (p->kind == MA_NONE)
            continue;
        out_put(&o, "/", 1);
        format_value(&o, p, &c);
    }
    if (o.overflow)
        return DC_ELIMIT;
    return (int)o.len;
}

int dc_multiaddr_target(const struct dc_multiaddr *ma, struct dc_multiaddr_target *out)
{
    struct dc_multiaddr_component host, transport;
    size_t pos = 0;

    memset(out, 0, sizeof(*out));
    if (!dc_multiaddr_next(ma, &pos, &host) || !dc_multiaddr_next(ma, &pos, &transport))
        return DC_EUNSUPPORTED;
    if (transport.code != DC_MA_TCP && transport.code != DC_MA_UDP)
        return DC_EUNSUPPORTED;
    switch (host.code) {
    case DC_MA_IP4:
    case DC_MA_IP6:
        memcpy(out->ip, host.value, host.value_len);
        if (inet_ntop(host.code == DC_MA_IP4 ? AF_INET : AF_INET6, host.value, out->host,
                      sizeof(out->host)) == NULL)
            return DC_EUNSUPPORTED;
        break;
    case DC_MA_DNS:
    case DC_MA_DNS4:
    case DC_MA_DNS6:
        memcpy(out->host, host.value, host.value_len); /* <= DC_MULTIADDR_MAX_NAME */
        out->host[host.value_len] = '\0';
        break;
    default:
        return DC_EUNSUPPORTED;
    }
    out->host_proto = host.code;
    out->transport = transport.code;
    out->port = (uint16_t)(transport.value[0] << 8 | transport.value[1]);
    return 0;
}

/* Finds the last /p2p/ component: its value and where the component starts. */
static bool find_last_p2p(const struct dc_multiaddr *ma, struct dc_multiaddr_component *found,
                          size_t *start)
{
    struct dc_multiaddr_component c;
    size_t pos = 0, at = 0;
    bool any = false;

    while (at = pos, dc_multiaddr_next(ma, &pos, &c)) {
        if (c.code == DC_MA_P2P) {
            *found = c;
            *start = at;
            any = true;
        }
    }
    return any;
}

int dc_multiaddr_peer_id(const struct dc_multiaddr *ma, const uint8_t **mh, size_t *mh_len)
{
    struct dc_multiaddr_component c;
    size_t start;

    if (!find_last_p2p(ma, &c, &start))
        return DC_ENOENT;
    *mh = c.value;
    *mh_len = c.value_len;
    return 0;
}

int dc_multiaddr_append_p2p(struct dc_multiaddr *ma, const uint8_t *mh, size_t mh_len)
{
    size_t saved = ma->len;
    int rc;

    if (!multihash_ok(mh, mh_len))
        return DC_EINVAL;
    rc = ma_put_varint(ma, DC_MA_P2P);
    if (rc == 0)
        rc = ma_put_varint(ma, mh_len);
    if (rc == 0)
        rc = ma_put(ma, mh, mh_len);
    if (rc < 0)
        ma->len = saved;
    return rc;
}

bool dc_multiaddr_strip_p2p(struct dc_multiaddr *ma)
{
    struct dc_multiaddr_component c;
    size_t start;

    if (!find_last_p2p(ma, &c, &start))
        return false;
    if ((size_t)(c.value + c.value_len - ma->bytes) != ma->len)
        return false; /* not trailing */
    ma->len = start;
    return true;
}

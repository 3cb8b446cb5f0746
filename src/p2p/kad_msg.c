/* SPDX-License-Identifier: MIT */
/*
 * kad_msg.c - the Kademlia RPC message: struct dc_kad_msg, its builders, and its codec over
 * the protoc-c code generated from proto/libp2p/kad.proto. Frames are <uvarint length><body>
 * with the body capped at DC_KAD_MAX_MESSAGE before anything is parsed, so a peer can never
 * make us allocate more than a constant multiple of that. protobuf-c allocates through
 * dc_malloc (a custom allocator), so allocation-failure tests and the fuzzer see every
 * allocation. Decoding is lenient where the spec's peers are sloppy (unknown multiaddr
 * protocols, broken peer entries are dropped) and strict where it matters (caps, protobuf
 * well-formedness).
 */
#include "p2p/kad.h"

#include <string.h>

#include "base/varint.h"
#include "libp2p/kad.pb-c.h"
#include "p2p/pb.h"

/* ---- builders --------------------------------------------------------------------------- */

void dc_kad_msg_init(struct dc_kad_msg *m)
{
    memset(m, 0, sizeof(*m));
}

static void peers_free(struct dc_kad_peer_info *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dc_free(p[i].addrs);
    dc_free(p);
}

void dc_kad_msg_cleanup(struct dc_kad_msg *m)
{
    if (m == NULL)
        return;
    dc_free(m->key);
    dc_free(m->record.key);
    dc_free(m->record.value);
    dc_free(m->record.time_received);
    peers_free(m->closer, m->n_closer);
    peers_free(m->providers, m->n_providers);
    dc_kad_msg_init(m);
}

/* dc_malloc of a copy; a zero-length copy is NULL (not an error). */
static int dup_bytes(const uint8_t *p, size_t n, uint8_t **out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    *out = dc_malloc(n);
    if (*out == NULL)
        return DC_ENOMEM;
    memcpy(*out, p, n);
    return 0;
}

int dc_kad_msg_set_key(struct dc_kad_msg *m, const uint8_t *key, size_t len)
{
    uint8_t *copy;
    int rc;

    if (len > DC_KAD_MAX_KEY)
        return DC_ELIMIT;
    rc = dup_bytes(key, len, &copy);
    if (rc < 0)
        return rc;
    dc_free(m->key);
    m->key = copy;
    m->key_len = len;
    return 0;
}

int dc_kad_msg_set_record(struct dc_kad_msg *m, const uint8_t *key, size_t key_len,
                          const uint8_t *value, size_t value_len, const char *time_received)
{
    uint8_t *k = NULL, *v = NULL;
    char *t = NULL;

    if (key_len > DC_KAD_MAX_KEY || value_len > DC_KAD_MAX_VALUE)
        return DC_ELIMIT;
    if (dup_bytes(key, key_len, &k) < 0 || dup_bytes(value, value_len, &v) < 0)
        goto err_nomem;
    if (time_received != NULL && (t = dc_strdup(time_received)) == NULL)
        goto err_nomem;
    dc_free(m->record.key);
    dc_free(m->record.value);
    dc_free(m->record.time_received);
    m->has_record = true;
    m->record.key = k;
    m->record.key_len = key_len;
    m->record.value = v;
    m->record.value_len = value_len;
    m->record.time_received = t;
    return 0;

err_nomem:
    dc_free(k);
    dc_free(v);
    return DC_ENOMEM;
}

int dc_kad_msg_add_peer(struct dc_kad_msg *m, bool providers, const struct dc_kad_peer_info *p)
{
    struct dc_kad_peer_info **list = providers ? &m->providers : &m->closer;
    size_t *n = providers ? &m->n_providers : &m->n_closer;
    struct dc_kad_peer_info *grown, *e;
    struct dc_multiaddr *addrs = NULL;

    if (*n >= DC_KAD_MAX_MSG_PEERS || p->n_addrs > DC_KAD_MAX_PEER_ADDRS)
        return DC_ELIMIT;
    if (p->n_addrs > 0) {
        addrs = dc_malloc(p->n_addrs * sizeof(*addrs));
        if (addrs == NULL)
            return DC_ENOMEM;
        memcpy(addrs, p->addrs, p->n_addrs * sizeof(*addrs));
    }
    grown = dc_realloc(*list, (*n + 1) * sizeof(**list));
    if (grown == NULL) {
        dc_free(addrs);
        return DC_ENOMEM;
    }
    *list = grown;
    e = &grown[(*n)++];
    e->id = p->id;
    e->connection = p->connection;
    e->n_addrs = p->n_addrs;
    e->addrs = addrs;
    return 0;
}

/* ---- encoding --------------------------------------------------------------------------- */

/* The generated structs of one peer list, pointing into the dc_kad_msg (no copies). */
struct pb_peers {
    Dc__Kad__Message__Peer *peers;
    Dc__Kad__Message__Peer **ptrs;
    ProtobufCBinaryData *addrs;
};

static void pb_peers_free(struct pb_peers *pp)
{
    dc_free(pp->peers);
    dc_free(pp->ptrs);
    dc_free(pp->addrs);
}

static int pb_peers_build(const struct dc_kad_peer_info *src, size_t n, struct pb_peers *pp)
{
    size_t n_addrs = 0, a = 0;

    memset(pp, 0, sizeof(*pp));
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        n_addrs += src[i].n_addrs;
    pp->peers = dc_calloc(n, sizeof(*pp->peers));
    pp->ptrs = dc_calloc(n, sizeof(*pp->ptrs));
    pp->addrs = n_addrs > 0 ? dc_calloc(n_addrs, sizeof(*pp->addrs)) : NULL;
    if (pp->peers == NULL || pp->ptrs == NULL || (n_addrs > 0 && pp->addrs == NULL)) {
        pb_peers_free(pp);
        return DC_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        Dc__Kad__Message__Peer *p = &pp->peers[i];

        dc__kad__message__peer__init(p);
        p->id.data = (uint8_t *)src[i].id.bytes;
        p->id.len = src[i].id.len;
        p->connection = (Dc__Kad__Message__ConnectionType)src[i].connection;
        p->n_addrs = src[i].n_addrs;
        p->addrs = src[i].n_addrs > 0 ? &pp->addrs[a] : NULL;
        for (size_t j = 0; j < src[i].n_addrs; j++, a++) {
            pp->addrs[a].data = (uint8_t *)src[i].addrs[j].bytes;
            pp->addrs[a].len = src[i].addrs[j].len;
        }
        pp->ptrs[i] = p;
    }
    return 0;
}

int dc_kad_msg_encode(const struct dc_kad_msg *m, struct dc_buf *out)
{
    Dc__Kad__Message pb;
    Dc__Kad__Record rec;
    struct pb_peers closer, providers;
    uint8_t prefix[DC_VARINT_MAX_LEN];
    size_t body_len, prefix_len, start = out->len;
    uint8_t *packed;
    int rc;

    dc__kad__message__init(&pb);
    pb.type = (Dc__Kad__Message__MessageType)m->type;
    pb.key.data = m->key;
    pb.key.len = m->key_len;
    if (m->has_record) {
        dc__kad__record__init(&rec);
        rec.key.data = m->record.key;
        rec.key.len = m->record.key_len;
        rec.value.data = m->record.value;
        rec.value.len = m->record.value_len;
        if (m->record.time_received != NULL)
            rec.timereceived = m->record.time_received;
        pb.record = &rec;
    }
    rc = pb_peers_build(m->closer, m->n_closer, &closer);
    if (rc < 0)
        return rc;
    rc = pb_peers_build(m->providers, m->n_providers, &providers);
    if (rc < 0)
        goto out_closer;
    pb.n_closerpeers = m->n_closer;
    pb.closerpeers = closer.ptrs;
    pb.n_providerpeers = m->n_providers;
    pb.providerpeers = providers.ptrs;

    body_len = dc__kad__message__get_packed_size(&pb);
    if (body_len > DC_KAD_MAX_MESSAGE) {
        rc = DC_ELIMIT;
        goto out_providers;
    }
    packed = dc_malloc(body_len > 0 ? body_len : 1);
    if (packed == NULL) {
        rc = DC_ENOMEM;
        goto out_providers;
    }
    if (dc__kad__message__pack(&pb, packed) != body_len) {
        rc = DC_EPROTO; /* cannot happen: protobuf-c packs exactly get_packed_size bytes */
        goto out_packed;
    }
    prefix_len = dc_varint_encode(body_len, prefix);
    rc = dc_buf_append(out, prefix, prefix_len);
    if (rc == 0)
        rc = dc_buf_append(out, packed, body_len);
    if (rc < 0)
        out->len = start;
out_packed:
    dc_free(packed);
out_providers:
    pb_peers_free(&providers);
out_closer:
    pb_peers_free(&closer);
    return rc;
}

/* ---- decoding --------------------------------------------------------------------------- */

int dc_kad_frame_split(const uint8_t *p, size_t len, const uint8_t **body, size_t *body_len,
                       size_t *used)
{
    uint64_t n;
    size_t vlen;
    int rc = dc_varint_decode(p, len, &n, &vlen);

    if (rc < 0)
        return rc;
    if (n > DC_KAD_MAX_MESSAGE)
        return DC_ELIMIT;
    if (len - vlen < n)
        return DC_ETRUNCATED;
    *body = p + vlen;
    *body_len = (size_t)n;
    *used = vlen + (size_t)n;
    return 0;
}

/*
 * Converts the generated peer list into dc_kad_peer_info entries, dropping entries whose id
 * is not a valid PeerId and addresses that do not parse (or are of protocols we do not
 * know: peers advertise certhash, webrtc and the like, which are no reason to drop the
 * peer). At most DC_KAD_MAX_MSG_PEERS peers and DC_KAD_MAX_PEER_ADDRS addresses each.
 */
static int peers_from_pb(Dc__Kad__Message__Peer *const *src, size_t n,
                         struct dc_kad_peer_info **out, size_t *n_out)
{
    struct dc_kad_peer_info *list;
    size_t cap = n < DC_KAD_MAX_MSG_PEERS ? n : DC_KAD_MAX_MSG_PEERS, k = 0;

    *out = NULL;
    *n_out = 0;
    if (cap == 0)
        return 0;
    list = dc_calloc(cap, sizeof(*list));
    if (list == NULL)
        return DC_ENOMEM;
    for (size_t i = 0; i < n && k < cap; i++) {
        const Dc__Kad__Message__Peer *p = src[i];
        struct dc_kad_peer_info *e = &list[k];
        size_t na = 0;

        if (dc_peer_id_from_bytes(p->id.data, p->id.len, &e->id) < 0)
            continue;
        e->connection = (p->connection >= 0 && p->connection <= 3) ? (enum dc_kad_conn)p->connection
                                                                   : DC_KAD_NOT_CONNECTED;
        if (p->n_addrs > 0) {
            size_t want = p->n_addrs < DC_KAD_MAX_PEER_ADDRS ? p->n_addrs : DC_KAD_MAX_PEER_ADDRS;

            e->addrs = dc_malloc(want * sizeof(*e->addrs));
            if (e->addrs == NULL) {
                peers_free(list, k);
                return DC_ENOMEM;
            }
            /* Empty addresses are skipped before parsing: protobuf-c hands them over as
             * (NULL, 0), which dc_multiaddr_from_bytes would memcpy from. */
            for (size_t j = 0; j < p->n_addrs && na < want; j++)
                if (p->addrs[j].len > 0 &&
                    dc_multiaddr_from_bytes(p->addrs[j].data, p->addrs[j].len, &e->addrs[na],
                                            NULL) == 0)
                    na++;
            if (na == 0) {
                dc_free(e->addrs);
                e->addrs = NULL;
            }
        }
        e->n_addrs = na;
        k++;
    }
    if (k == 0) {
        dc_free(list);
        return 0;
    }
    *out = list;
    *n_out = k;
    return 0;
}

int dc_kad_msg_decode(const uint8_t *p, size_t len, struct dc_kad_msg *out)
{
    Dc__Kad__Message *pb;
    int rc;

    dc_kad_msg_init(out);
    if (len > DC_KAD_MAX_MESSAGE)
        return DC_ELIMIT;
    pb = dc__kad__message__unpack(&dc_pb_allocator, len, p);
    if (pb == NULL)
        return dc_pb_unpack_error(len);
    if ((int)pb->type < 0 || (int)pb->type > (int)DC_KAD_PING) {
        rc = DC_ECORRUPT;
        goto out_pb;
    }
    out->type = (enum dc_kad_msg_type)pb->type;
    rc = dc_kad_msg_set_key(out, pb->key.data, pb->key.len);
    if (rc < 0)
        goto out_fail;
    if (pb->record != NULL) {
        const char *t = pb->record->timereceived;

        if (t != NULL && t[0] == '\0')
            t = NULL;
        /* timeReceived is informative; a silly one is dropped, not an error. */
        if (t != NULL && strlen(t) > 64)
            t = NULL;
        rc = dc_kad_msg_set_record(out, pb->record->key.data, pb->record->key.len,
                                   pb->record->value.data, pb->record->value.len, t);
        if (rc < 0)
            goto out_fail;
    }
    rc = peers_from_pb(pb->closerpeers, pb->n_closerpeers, &out->closer, &out->n_closer);
    if (rc < 0)
        goto out_fail;
    rc = peers_from_pb(pb->providerpeers, pb->n_providerpeers, &out->providers, &out->n_providers);
    if (rc < 0)
        goto out_fail;
    dc__kad__message__free_unpacked(pb, &dc_pb_allocator);
    return 0;

out_fail:
    dc_kad_msg_cleanup(out);
out_pb:
    dc__kad__message__free_unpacked(pb, &dc_pb_allocator);
    return rc;
}

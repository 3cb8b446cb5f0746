/* SPDX-License-Identifier: MIT */
/*
 * p2p_test.c - unit tests of the P2P protocol cores: multiaddr vectors and errors,
 * multistream-select between two in-memory state machines, yamux between two in-memory
 * sessions (including every-byte-boundary splits and a peer that violates the window), the
 * pnet PSK parser and cipher, and allocation-failure loops on the constructors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "base/base.h"
#include "base/multibase.h"
#include "p2p/p2p.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;

    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

/* Text -> binary must give 'hex'; binary -> text must give 'canon' (or the input). */
static void check_vector(const char *text, const char *hex, const char *canon)
{
    struct dc_multiaddr ma, ma2;
    uint8_t want[DC_MULTIADDR_MAX_LEN];
    char buf[DC_MULTIADDR_TEXT_MAX];
    size_t n = unhex(hex, want, sizeof(want));
    int len;

    assert_int_equal(dc_multiaddr_parse(text, &ma, NULL), 0);
    assert_int_equal(ma.len, n);
    assert_memory_equal(ma.bytes, want, n);
    assert_int_equal(dc_multiaddr_from_bytes(want, n, &ma2, NULL), 0);
    assert_true(dc_multiaddr_equal(&ma, &ma2));
    len = dc_multiaddr_format(&ma2, buf, sizeof(buf));
    assert_true(len > 0);
    assert_string_equal(buf, canon != NULL ? canon : text);
    assert_int_equal((size_t)len, strlen(buf));
}

#define PEER_QM     "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"
#define PEER_QM_HEX "1220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b"
#define PEER_ED     "12D3KooW9pP4Seg3kZYhySpuVjn1RPdQBsUFZKiFxGMGQN5MeL6A"
#define PEER_ED_HEX "002408011220000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

/* ---- multiaddr -------------------------------------------------------------------------- */

static void test_multiaddr_vectors(void **state)
{
    (void)state;
    check_vector("/ip4/192.0.2.42/tcp/443", "04c000022a0601bb", NULL);
    check_vector("/ip4/127.0.0.1/udp/1234", "047f000001910204d2", NULL);
    check_vector("/ip4/127.0.0.1/udp/1234/quic-v1", "047f000001910204d2cd03", NULL);
    check_vector("/p2p/" PEER_QM, "a50322" PEER_QM_HEX, NULL);
    check_vector("/ipfs/" PEER_QM, "a50322" PEER_QM_HEX, "/p2p/" PEER_QM);
    check_vector("/ip4/127.0.0.1/tcp/4001/p2p/" PEER_ED,
                 "047f00000106"
                 "0fa1"
                 "a50326" PEER_ED_HEX,
                 NULL);
    check_vector("/dns4/example.com/tcp/443/wss", "360b6578616d706c652e636f6d0601bbde03", NULL);
    check_vector("/ip6/2001:db8::1/tcp/4001",
                 "2920010db8000000000000000000000001"
                 "060fa1",
                 NULL);
    check_vector("/ip6/0:0:0:0:0:0:0:1/tcp/80",
                 "29000000000000000000000000000000010600"
                 "50",
                 "/ip6/::1/tcp/80");
    check_vector("/dns/a.b/udp/0", "3503612e6291020000", NULL);
    check_vector("/dns6/x/tcp/1/",
                 "3701780600"
                 "01",
                 "/dns6/x/tcp/1");
    check_vector("/tcp/0080", "060050", "/tcp/80");
    check_vector("/ip4/1.2.3.4/tcp/1/p2p-circuit/p2p/" PEER_QM,
                 "04010203040600"
                 "01a202a50322" PEER_QM_HEX,
                 NULL);
    check_vector("/ip4/1.2.3.4/tcp/1/ws/tls/noise/webrtc-direct/webtransport",
                 "04010203040600"
                 "01dd03c003c6039802d103",
                 NULL);
}

static void expect_parse_error(const char *text, int rc, const char *comp)
{
    struct dc_multiaddr ma;
    struct dc_multiaddr_error err;

    memset(&err, 0, sizeof(err));
    assert_int_equal(dc_multiaddr_parse(text, &ma, &err), rc);
    assert_string_equal(err.component, comp);
    assert_non_null(err.reason);
}

static void test_multiaddr_errors(void **state)
{
    struct dc_multiaddr ma;
    struct dc_multiaddr_error err;
    char longname[400];
    uint8_t bin[8];

    (void)state;
    expect_parse_error("", DC_ECORRUPT, "?");
    expect_parse_error("/", DC_ECORRUPT, "?");
    expect_parse_error("ip4/1.2.3.4", DC_ECORRUPT, "?");
    expect_parse_error("/ip4", DC_ECORRUPT, "ip4");
    expect_parse_error("/ip4/", DC_ECORRUPT, "ip4");
    expect_parse_error("/ip4/256.0.0.1", DC_ECORRUPT, "ip4");
    expect_parse_error("/ip4/1.2.3", DC_ECORRUPT, "ip4");
    expect_parse_error("/ip4/1.2.3.4/tcp/65536", DC_ECORRUPT, "tcp");
    expect_parse_error("/ip4/1.2.3.4/tcp/-1", DC_ECORRUPT, "tcp");
    expect_parse_error("/ip4/1.2.3.4/tcp/", DC_ECORRUPT, "tcp");
    expect_parse_error("/ip6/::1::2", DC_ECORRUPT, "ip6");
    expect_parse_error("/ip6/fe80::1%eth0", DC_ECORRUPT, "ip6");
    expect_parse_error("/ip4/1.2.3.4//tcp/1", DC_ECORRUPT, "?");
    expect_parse_error("/foo/1", DC_EUNSUPPORTED, "foo");
    expect_parse_error("/p2p/0OIl", DC_ECORRUPT, "p2p");
    expect_parse_error("/p2p/abc", DC_ECORRUPT, "p2p"); /* base58 but not a multihash */
    expect_parse_error("/dns4/a b/tcp/1", DC_ECORRUPT, "dns4");

    /* The offset names the component. */
    assert_int_equal(dc_multiaddr_parse("/ip4/1.2.3.4/udp/99999", &ma, &err), DC_ECORRUPT);
    assert_int_equal(err.offset, 12);
    assert_string_equal(err.component, "udp");

    /* Names longer than 255 bytes. */
    memset(longname, 'a', sizeof(longname));
    memcpy(longname, "/dns/", 5);
    longname[5 + 256] = '\0';
    assert_int_equal(dc_multiaddr_parse(longname, &ma, NULL), DC_ECORRUPT);
    longname[5 + 255] = '\0';
    assert_int_equal(dc_multiaddr_parse(longname, &ma, NULL), 0);

    /* Binary: truncated value, unknown code, bad varint, bad name, bad multihash. */
    assert_int_equal(dc_multiaddr_from_bytes(bin, unhex("047f00", bin, 8), &ma, &err), DC_ECORRUPT);
    assert_string_equal(err.component, "ip4");
    assert_int_equal(dc_multiaddr_from_bytes(bin, unhex("047f0000010601", bin, 8), &ma, &err),
                     DC_ECORRUPT);
    assert_string_equal(err.component, "tcp");
    assert_int_equal(err.offset, 5);
    assert_int_equal(dc_multiaddr_from_bytes(bin, unhex("ff0f", bin, 8), &ma, &err),
                     DC_EUNSUPPORTED);
    assert_int_equal(dc_multiaddr_from_bytes(bin, unhex("80", bin, 8), &ma, &err), DC_ECORRUPT);
    assert_int_equal(dc_multiaddr_from_bytes(bin, unhex("3502612f", bin, 8), &ma, &err),
                     DC_ECORRUPT);
    assert_string_equal(err.component, "dns");
    assert_int_equal(dc_multiaddr_from_bytes(bin, unhex("a503031202aa", bin, 8), &ma, &err),
                     DC_ECORRUPT);
    assert_string_equal(err.component, "p2p");
    assert_int_equal(dc_multiaddr_from_bytes(bin, 0, &ma, NULL), 0); /* empty is valid */
    assert_int_equal(ma.len, 0);
}

static void test_multiaddr_helpers(void **state)
{
    struct dc_multiaddr ma, plain;
    struct dc_multiaddr_target t;
    const uint8_t *mh;
    size_t mh_len;
    uint8_t want[64];
    char buf[DC_MULTIADDR_TEXT_MAX];

    (void)state;
    assert_int_equal(dc_multiaddr_parse("/ip4/10.1.2.3/tcp/4001/p2p/" PEER_ED, &ma, NULL), 0);
    assert_int_equal(dc_multiaddr_target(&ma, &t), 0);
    assert_int_equal(t.host_proto, DC_MA_IP4);
    assert_int_equal(t.transport, DC_MA_TCP);
    assert_int_equal(t.port, 4001);
    assert_string_equal(t.host, "10.1.2.3");
    assert_int_equal(t.ip[0], 10);
    assert_int_equal(t.ip[3], 3);

    assert_int_equal(dc_multiaddr_peer_id(&ma, &mh, &mh_len), 0);
    assert_int_equal(mh_len, unhex(PEER_ED_HEX, want, sizeof(want)));
    assert_memory_equal(mh, want, mh_len);

    plain = ma;
    assert_true(dc_multiaddr_strip_p2p(&plain));
    assert_int_equal(dc_multiaddr_format(&plain, buf, sizeof(buf)), 22);
    assert_string_equal(buf, "/ip4/10.1.2.3/tcp/4001");
    assert_false(dc_multiaddr_strip_p2p(&plain));
    assert_int_equal(dc_multiaddr_peer_id(&plain, &mh, &mh_len), DC_ENOENT);
    assert_int_equal(dc_multiaddr_append_p2p(&plain, want, 38), 0);
    assert_true(dc_multiaddr_equal(&plain, &ma));
    assert_int_equal(dc_multiaddr_append_p2p(&plain, want, 37), DC_EINVAL);
    assert_true(dc_multiaddr_equal(&plain, &ma));

    /* Too small a text buffer. */
    assert_int_equal(dc_multiaddr_format(&ma, buf, 10), DC_ELIMIT);
    assert_int_equal(dc_multiaddr_format(&ma, buf, 0), DC_ELIMIT);

    assert_int_equal(dc_multiaddr_parse("/dns6/node.example/udp/9/quic-v1", &ma, NULL), 0);
    assert_int_equal(dc_multiaddr_target(&ma, &t), 0);
    assert_int_equal(t.host_proto, DC_MA_DNS6);
    assert_int_equal(t.transport, DC_MA_UDP);
    assert_string_equal(t.host, "node.example");
    assert_int_equal(dc_multiaddr_parse("/ip6/::ffff:1.2.3.4/tcp/5", &ma, NULL), 0);
    assert_int_equal(dc_multiaddr_target(&ma, &t), 0);
    assert_string_equal(t.host, "::ffff:1.2.3.4");
    assert_int_equal(dc_multiaddr_parse("/p2p/" PEER_QM, &ma, NULL), 0);
    assert_int_equal(dc_multiaddr_target(&ma, &t), DC_EUNSUPPORTED);
    assert_int_equal(dc_multiaddr_parse("/ip4/1.2.3.4/ws", &ma, NULL), 0);
    assert_int_equal(dc_multiaddr_target(&ma, &t), DC_EUNSUPPORTED);

    /* Appending past the size limit leaves the address unchanged. */
    memset(&ma, 0, sizeof(ma));
    ma.len = DC_MULTIADDR_MAX_LEN - 10;
    assert_int_equal(dc_multiaddr_append_p2p(&ma, want, 38), DC_ELIMIT);
    assert_int_equal(ma.len, DC_MULTIADDR_MAX_LEN - 10);
}

static void test_multiaddr_limits(void **state)
{
    static char text[DC_MULTIADDR_TEXT_MAX * 2];
    struct dc_multiaddr ma;
    char out[DC_MULTIADDR_TEXT_MAX];
    size_t n = 0;
    int len;

    (void)state;
    /* The worst text expansion (2-byte code, 14 characters) must fit DC_MULTIADDR_TEXT_MAX. */
    while (n + 14 < sizeof(text))
        n += (size_t)snprintf(text + n, sizeof(text) - n, "/webrtc-direct");
    assert_int_equal(dc_multiaddr_parse(text, &ma, NULL), DC_ELIMIT);
    text[14 * (DC_MULTIADDR_MAX_LEN / 2)] = '\0';
    assert_int_equal(dc_multiaddr_parse(text, &ma, NULL), 0);
    assert_int_equal(ma.len, DC_MULTIADDR_MAX_LEN);
    len = dc_multiaddr_format(&ma, out, sizeof(out));
    assert_int_equal(len, 14 * (DC_MULTIADDR_MAX_LEN / 2));
}

/* ---- multistream ------------------------------------------------------------------------ */

/* Moves queued bytes from 'from' into 'to' in chunks of 'chunk' (0: all at once). Returns the
 * last feed result; leftover protocol bytes are appended to 'rest'. */
static int mss_pump(struct dc_mss *from, struct dc_mss *to, size_t chunk, int *to_rc,
                    struct dc_buf *rest)
{
    size_t len, off = 0;
    const uint8_t *p = dc_mss_output(from, &len);
    uint8_t copy[8192];

    assert_true(len <= sizeof(copy));
    memcpy(copy, p, len);
    dc_mss_output_consume(from, len);
    while (off < len) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk, used;

        if (*to_rc != 0) {
            /* Negotiated or failed: the rest belongs to the protocol. */
            if (rest != NULL)
                assert_int_equal(dc_buf_append(rest, copy + off, n), 0);
            off += n;
            continue;
        }
        *to_rc = dc_mss_feed(to, copy + off, n, &used);
        if (*to_rc == 1 && rest != NULL)
            assert_int_equal(dc_buf_append(rest, copy + off + used, n - used), 0);
        if (*to_rc == 0)
            assert_int_equal(used, n);
        off += n;
    }
    return (int)len;
}

/* Runs a whole negotiation; returns the initiator's and the responder's results. */
static void mss_run(const char *const *ini, size_t n_ini, const char *const *resp, size_t n_resp,
                    size_t chunk, int *ini_rc, int *resp_rc, const char **ini_proto,
                    const char **resp_proto)
{
    struct dc_mss_config ci = {true, ini, n_ini, false}, cr = {false, resp, n_resp, false};
    struct dc_mss *a, *b;

    assert_int_equal(dc_mss_new(&ci, &a), 0);
    assert_int_equal(dc_mss_new(&cr, &b), 0);
    *ini_rc = 0;
    *resp_rc = 0;
    for (int round = 0; round < 100; round++) {
        int moved = mss_pump(a, b, chunk, resp_rc, NULL);
        moved += mss_pump(b, a, chunk, ini_rc, NULL);
        if (moved == 0)
            break;
    }
    *ini_proto = dc_mss_protocol(a) != NULL && *ini_rc == 1 ? dc_mss_protocol(a) : NULL;
    *resp_proto = dc_mss_protocol(b) != NULL && *resp_rc == 1 ? dc_mss_protocol(b) : NULL;
    /* Copy the names out before freeing. */
    static char pa[64], pb[64];
    if (*ini_proto != NULL) {
        snprintf(pa, sizeof(pa), "%s", *ini_proto);
        *ini_proto = pa;
    }
    if (*resp_proto != NULL) {
        snprintf(pb, sizeof(pb), "%s", *resp_proto);
        *resp_proto = pb;
    }
    dc_mss_free(a);
    dc_mss_free(b);
}

static void test_mss_wire_format(void **state)
{
    static const char *const protos[] = {"/noise"};
    struct dc_mss_config cfg = {true, protos, 1, false};
    struct dc_mss *m;
    const uint8_t *p;
    size_t len;

    (void)state;
    assert_int_equal(dc_mss_new(&cfg, &m), 0);
    p = dc_mss_output(m, &len);
    assert_int_equal(len, 20 + 8);
    assert_memory_equal(p, "\x13/multistream/1.0.0\n\x07/noise\n", len);
    assert_null(dc_mss_protocol(m));
    dc_mss_free(m);
}

static void test_mss_success(void **state)
{
    static const char *const ini[] = {"/noise"};
    static const char *const resp[] = {"/tls/1.0.0", "/noise"};
    const char *pa, *pb;
    int ra, rb;

    (void)state;
    for (size_t chunk = 0; chunk < 30; chunk++) {
        mss_run(ini, 1, resp, 2, chunk, &ra, &rb, &pa, &pb);
        assert_int_equal(ra, 1);
        assert_int_equal(rb, 1);
        assert_string_equal(pa, "/noise");
        assert_string_equal(pb, "/noise");
    }
}

static void test_mss_fallback(void **state)
{
    static const char *const ini[] = {"/yamux/2.0.0", "/mplex/6.7.0", "/yamux/1.0.0"};
    static const char *const resp[] = {"/yamux/1.0.0"};
    static const char *const none[] = {"/other/1"};
    const char *pa, *pb;
    int ra, rb;

    (void)state;
    for (size_t chunk = 0; chunk < 8; chunk++) {
        mss_run(ini, 3, resp, 1, chunk, &ra, &rb, &pa, &pb);
        assert_int_equal(ra, 1);
        assert_int_equal(rb, 1);
        assert_string_equal(pa, "/yamux/1.0.0");
        assert_string_equal(pb, "/yamux/1.0.0");
    }
    /* No protocol in common: the initiator gives up after the last "na". */
    mss_run(ini, 3, none, 1, 0, &ra, &rb, &pa, &pb);
    assert_int_equal(ra, DC_EPROTO);
    assert_int_equal(rb, 0);
}

/* A responder fed 'bytes' must fail with 'rc'. */
static void expect_resp_error(const void *bytes, size_t n, int rc)
{
    static const char *const resp[] = {"/noise"};
    struct dc_mss_config cfg = {false, resp, 1, false};
    struct dc_mss *m;
    size_t used;

    assert_int_equal(dc_mss_new(&cfg, &m), 0);
    assert_int_equal(dc_mss_feed(m, bytes, n, &used), rc);
    if (rc != 0)
        assert_int_equal(dc_mss_feed(m, bytes, n, &used), DC_ESTATE);
    dc_mss_free(m);
}

static void test_mss_garbage(void **state)
{
    uint8_t big[3000];

    (void)state;
    expect_resp_error("\x13/multistream/2.0.0\n", 20, DC_EPROTO);
    expect_resp_error("\x05hello", 6, DC_ECORRUPT); /* no newline */
    expect_resp_error("\x00", 1, DC_ECORRUPT);      /* empty message */
    expect_resp_error("\x03"
                      "a\nb",
                      4, DC_ECORRUPT); /* newline inside */
    expect_resp_error("\x03"
                      "a\0\n",
                      4, DC_ECORRUPT);               /* NUL inside */
    expect_resp_error("\x81\x08", 2, DC_ELIMIT);     /* 1025 bytes */
    expect_resp_error("\x80\x80\x01", 3, DC_ELIMIT); /* three-byte length */
    expect_resp_error("\x80\x00", 2, DC_ECORRUPT);   /* non-minimal varint */
    expect_resp_error("GET / HTTP/1.1\r\n", 16, 0);  /* waits for 71 bytes... */
    memset(big, 'A', sizeof(big));
    big[0] = 'G';
    expect_resp_error(big, 72, DC_ECORRUPT); /* ...which are not a message */
    /* The largest message is accepted as a message (then refused as a header). */
    big[0] = 0x80;
    big[1] = 0x08;
    big[1025] = '\n';
    expect_resp_error(big, 1026, DC_EPROTO);
}

static void test_mss_too_many_proposals(void **state)
{
    static const char *const resp[] = {"/noise"};
    struct dc_mss_config cfg = {false, resp, 1, false};
    struct dc_mss *m;
    size_t used;
    int rc = 0, i;

    (void)state;
    assert_int_equal(dc_mss_new(&cfg, &m), 0);
    assert_int_equal(dc_mss_feed(m, (const uint8_t *)"\x13/multistream/1.0.0\n", 20, &used), 0);
    for (i = 0; i < 100 && rc == 0; i++)
        rc = dc_mss_feed(m, (const uint8_t *)"\x04/no\n", 5, &used);
    assert_int_equal(rc, DC_ELIMIT);
    assert_int_equal(i, DC_MSS_MAX_PROPOSALS + 1);
    dc_mss_free(m);
}

static void test_mss_lazy_leftover(void **state)
{
    static const char *const protos[] = {"/echo/1.0.0"};
    struct dc_mss_config ci = {true, protos, 1, true}, cr = {false, protos, 1, false};
    struct dc_mss *a, *b;
    struct dc_buf rest_b, rest_a;
    const uint8_t *p;
    size_t len, used;
    uint8_t wire[256];
    int rb = 0, ra = 0;

    (void)state;
    dc_buf_init(&rest_a, 0);
    dc_buf_init(&rest_b, 0);
    assert_int_equal(dc_mss_new(&ci, &a), 0);
    assert_int_equal(dc_mss_new(&cr, &b), 0);
    assert_string_equal(dc_mss_protocol(a), "/echo/1.0.0");
    /* The lazy initiator writes protocol data right after its proposal, in one segment. */
    p = dc_mss_output(a, &len);
    memcpy(wire, p, len);
    memcpy(wire + len, "PING", 4);
    dc_mss_output_consume(a, len);
    assert_int_equal(dc_mss_feed(b, wire, len + 4, &used), 1);
    assert_int_equal(used, len);
    assert_memory_equal(wire + used, "PING", 4);
    assert_string_equal(dc_mss_protocol(b), "/echo/1.0.0");

    /* The responder's answer and its first data arrive together, split at every byte. */
    p = dc_mss_output(b, &len);
    memcpy(wire, p, len);
    memcpy(wire + len, "PONG", 4);
    for (size_t i = 0; i < len + 4; i++) {
        if (ra == 1) {
            assert_int_equal(dc_buf_append(&rest_a, wire + i, 1), 0);
            continue;
        }
        ra = dc_mss_feed(a, wire + i, 1, &used);
        assert_true(ra == 0 || ra == 1);
        assert_int_equal(used, 1);
    }
    assert_int_equal(ra, 1);
    assert_int_equal(rest_a.len, 4);
    assert_memory_equal(rest_a.data, "PONG", 4);
    (void)rb;
    dc_buf_cleanup(&rest_a);
    dc_buf_cleanup(&rest_b);
    dc_mss_free(a);
    dc_mss_free(b);
}

static void test_mss_ls(void **state)
{
    static const char *const resp[] = {"/a", "/bc"};
    struct dc_mss_config cfg = {false, resp, 2, false};
    struct dc_mss *m;
    const uint8_t *p;
    size_t len, used;

    (void)state;
    assert_int_equal(dc_mss_new(&cfg, &m), 0);
    assert_int_equal(dc_mss_feed(m, (const uint8_t *)"\x13/multistream/1.0.0\n\x03ls\n", 24, &used),
                     0);
    p = dc_mss_output(m, &len);
    assert_int_equal(len, 20 + 1 + 10);
    assert_memory_equal(p, "\x13/multistream/1.0.0\n\x0a\x03/a\n\x04/bc\n\n", len);
    dc_mss_free(m);
}

static void test_mss_config_and_enomem(void **state)
{
    static const char *const ok[] = {"/a", "/b"};
    static const char *const bad1[] = {"na"};
    static const char *const bad2[] = {"/a\n"};
    static const char *const bad3[] = {""};
    struct dc_mss_config cfg = {true, ok, 2, false};
    struct dc_mss *m;
    long i;
    int rc;

    (void)state;
    cfg.n_protocols = 0;
    assert_int_equal(dc_mss_new(&cfg, &m), DC_EINVAL);
    assert_null(m);
    cfg.n_protocols = 2;
    cfg.lazy = true; /* lazy needs exactly one protocol */
    assert_int_equal(dc_mss_new(&cfg, &m), DC_EINVAL);
    cfg.lazy = false;
    cfg.protocols = bad1;
    cfg.n_protocols = 1;
    assert_int_equal(dc_mss_new(&cfg, &m), DC_EINVAL);
    cfg.protocols = bad2;
    assert_int_equal(dc_mss_new(&cfg, &m), DC_EINVAL);
    cfg.protocols = bad3;
    assert_int_equal(dc_mss_new(&cfg, &m), DC_EINVAL);

    cfg.protocols = ok;
    cfg.n_protocols = 2;
    for (i = 0;; i++) {
        dc_alloc_fail_after(i);
        rc = dc_mss_new(&cfg, &m);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(m);
    }
    assert_true(i >= 4);
    dc_mss_free(m);
    dc_mss_free(NULL);
}

/* ---- yamux ------------------------------------------------------------------------------ */

#define MAX_EV 64

struct side {
    struct dc_yamux *y;
    struct dc_buf data; /* all stream data received, in order */
    uint32_t data_id;   /* stream of the last data */
    bool auto_consume;
    bool refuse;
    uint32_t opened[MAX_EV];
    size_t n_opened;
    uint32_t fins[MAX_EV];
    size_t n_fins;
    uint32_t closed[MAX_EV];
    int close_err[MAX_EV];
    size_t n_closed;
    size_t n_writable;
    size_t n_pings;
    uint64_t last_rtt;
    size_t n_go_away;
    uint32_t go_away_code;
};

static uint64_t fake_now;

static uint64_t cb_now(void *ud)
{
    (void)ud;
    return fake_now;
}

static int cb_open(void *ud, uint32_t id, void **user)
{
    struct side *s = ud;

    if (s->refuse)
        return DC_EPERM;
    assert_true(s->n_opened < MAX_EV);
    s->opened[s->n_opened++] = id;
    *user = s;
    return 0;
}

static void cb_data(void *ud, uint32_t id, void *user, const uint8_t *p, size_t n)
{
    struct side *s = ud;

    (void)user;
    assert_true(n > 0);
    assert_int_equal(dc_buf_append(&s->data, p, n), 0);
    s->data_id = id;
    if (s->auto_consume)
        assert_int_equal(dc_yamux_stream_consume(s->y, id, n), 0);
}

static void cb_fin(void *ud, uint32_t id, void *user)
{
    struct side *s = ud;

    (void)user;
    assert_true(s->n_fins < MAX_EV);
    s->fins[s->n_fins++] = id;
}

static void cb_writable(void *ud, uint32_t id, void *user)
{
    (void)id;
    (void)user;
    ((struct side *)ud)->n_writable++;
}

static void cb_close(void *ud, uint32_t id, void *user, int err)
{
    struct side *s = ud;

    (void)user;
    if (s->n_closed < MAX_EV) {
        s->closed[s->n_closed] = id;
        s->close_err[s->n_closed] = err;
    }
    s->n_closed++;
}

static void cb_ping(void *ud, uint64_t rtt)
{
    struct side *s = ud;

    s->n_pings++;
    s->last_rtt = rtt;
}

static void cb_go_away(void *ud, uint32_t code)
{
    struct side *s = ud;

    s->n_go_away++;
    s->go_away_code = code;
}

static void side_init(struct side *s, bool client, uint32_t recv_window)
{
    struct dc_yamux_config cfg;

    memset(s, 0, sizeof(*s));
    dc_buf_init(&s->data, 0);
    dc_yamux_config_default(&cfg);
    cfg.is_client = client;
    cfg.recv_window = recv_window;
    cfg.cb.on_stream_open = cb_open;
    cfg.cb.on_data = cb_data;
    cfg.cb.on_fin = cb_fin;
    cfg.cb.on_writable = cb_writable;
    cfg.cb.on_close = cb_close;
    cfg.cb.on_ping = cb_ping;
    cfg.cb.on_go_away = cb_go_away;
    cfg.cb.now_us = cb_now;
    cfg.ud = s;
    assert_int_equal(dc_yamux_new(&cfg, &s->y), 0);
}

static void side_cleanup(struct side *s)
{
    dc_yamux_free(s->y);
    dc_buf_cleanup(&s->data);
}

/* Moves everything 'from' has queued into 'to', 'chunk' bytes per feed (0: at once).
 * Returns the bytes moved. */
static size_t pump(struct side *from, struct side *to, size_t chunk)
{
    size_t len, off = 0;
    const uint8_t *p = dc_yamux_output(from->y, &len);
    uint8_t *copy;

    if (len == 0)
        return 0;
    copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, p, len);
    dc_yamux_output_consume(from->y, len);
    while (off < len) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;

        assert_int_equal(dc_yamux_feed(to->y, copy + off, n), 0);
        off += n;
    }
    free(copy);
    return len;
}

static void pump_all(struct side *a, struct side *b)
{
    while (pump(a, b, 0) + pump(b, a, 0) > 0)
        ;
}

static void test_yamux_open_data(void **state)
{
    struct side c, s;
    uint32_t id, id2;
    size_t w;

    (void)state;
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(dc_yamux_stream_write(c.y, id, "hello", 5, &w), 0);
    assert_int_equal(w, 5);
    pump_all(&c, &s);
    assert_int_equal(s.n_opened, 1);
    assert_int_equal(s.opened[0], 1);
    assert_int_equal(s.data.len, 5);
    assert_memory_equal(s.data.data, "hello", 5);
    assert_int_equal(dc_yamux_stream_consume(s.y, id, 5), 0);
    assert_int_equal(dc_yamux_stream_consume(s.y, id, 1), DC_EINVAL);

    assert_int_equal(dc_yamux_stream_write(s.y, id, "world!", 6, &w), 0);
    pump_all(&c, &s);
    assert_int_equal(c.data.len, 6);
    assert_memory_equal(c.data.data, "world!", 6);
    assert_int_equal(c.data_id, 1);

    /* The server opens even ids; the client learns of them. */
    assert_int_equal(dc_yamux_stream_open(s.y, NULL, &id2), 0);
    assert_int_equal(id2, 2);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    assert_int_equal(id, 3);
    pump_all(&c, &s);
    assert_int_equal(c.n_opened, 1);
    assert_int_equal(c.opened[0], 2);
    assert_int_equal(s.n_opened, 2);
    assert_int_equal(dc_yamux_stream_count(c.y), 3);
    assert_int_equal(dc_yamux_stream_count(s.y), 3);
    assert_int_equal(dc_yamux_stream_write(c.y, 99, "x", 1, &w), DC_ENOENT);
    side_cleanup(&c);
    assert_int_equal(c.n_closed, 3);
    assert_int_equal(c.close_err[0], DC_ECLOSED);
    side_cleanup(&s);
}

/* dc_yamux_stream_frame: the caller lays out header and payload itself; the window is taken
 * as by dc_yamux_stream_write, a closed window reports on_writable later, and queued output
 * must go first. */
static void test_yamux_stream_frame(void **state)
{
    static uint8_t big[300000];
    struct side c, s;
    uint8_t hdr[DC_YAMUX_HEADER_LEN];
    uint32_t id;
    size_t n, w, total = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 5 + 1);
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    /* The SYN is still queued. */
    assert_int_equal(dc_yamux_stream_frame(c.y, id, 10, hdr, &n), DC_ESTATE);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_frame(c.y, id, 0, hdr, &n), DC_EINVAL);
    assert_int_equal(dc_yamux_stream_frame(c.y, 99, 10, hdr, &n), DC_ENOENT);
    while (total < sizeof(big)) {
        assert_int_equal(dc_yamux_stream_frame(c.y, id, sizeof(big) - total, hdr, &n), 0);
        if (n == 0)
            break;
        assert_true(n <= DC_YAMUX_MAX_FRAME_DATA);
        assert_int_equal(hdr[1], DC_YAMUX_TYPE_DATA);
        assert_int_equal(dc_yamux_feed(s.y, hdr, sizeof(hdr)), 0);
        assert_int_equal(dc_yamux_feed(s.y, big + total, n), 0);
        total += n;
    }
    assert_int_equal(total, DC_YAMUX_INITIAL_WINDOW); /* the peer's window, no more */
    assert_int_equal(s.data.len, total);
    assert_memory_equal(s.data.data, big, total);
    assert_int_equal(dc_yamux_stream_consume(s.y, id, total), 0);
    pump_all(&c, &s); /* the window update reopens the window: on_writable */
    assert_true(c.n_writable > 0);
    assert_int_equal(dc_yamux_stream_frame(c.y, id, 100, hdr, &n), 0);
    assert_int_equal(n, 100);
    assert_int_equal(dc_yamux_feed(s.y, hdr, sizeof(hdr)), 0);
    assert_int_equal(dc_yamux_feed(s.y, big + total, n), 0);
    assert_memory_equal(s.data.data + total, big + total, n);
    assert_int_equal(dc_yamux_stream_close(c.y, id), 0);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_frame(c.y, id, 10, hdr, &n), DC_ESTATE);
    assert_int_equal(dc_yamux_stream_write(c.y, id, "x", 1, &w), DC_ESTATE);
    side_cleanup(&c);
    side_cleanup(&s);
}

static void test_yamux_window(void **state)
{
    static uint8_t big[1 << 20];
    struct side c, s;
    uint32_t id;
    size_t w, total = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 3);
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    assert_int_equal(dc_yamux_stream_write(c.y, id, big, sizeof(big), &w), 0);
    assert_int_equal(w, DC_YAMUX_INITIAL_WINDOW);
    total += w;
    /* The SYN, then the data in four frames of DC_YAMUX_MAX_FRAME_DATA. */
    {
        size_t len;
        const uint8_t *out = dc_yamux_output(c.y, &len);

        assert_int_equal(len, 12 + 4 * (12 + DC_YAMUX_MAX_FRAME_DATA));
        assert_int_equal(out[12 + 1], DC_YAMUX_TYPE_DATA);
        assert_int_equal(out[12 + 9], 1); /* length 0x00010000 */
        assert_int_equal(out[12 + 10], 0);
    }
    assert_int_equal(dc_yamux_stream_send_window(c.y, id), 0);
    assert_int_equal(dc_yamux_stream_write(c.y, id, big + total, sizeof(big) - total, &w), 0);
    assert_int_equal(w, 0);
    pump_all(&c, &s);
    assert_int_equal(s.data.len, DC_YAMUX_INITIAL_WINDOW);
    /* Consuming less than half the window grants nothing yet. */
    assert_int_equal(dc_yamux_stream_consume(s.y, id, 1000), 0);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_send_window(c.y, id), 0);
    assert_int_equal(c.n_writable, 0);
    /* Consuming everything reopens the window; the writer hears about it. */
    assert_int_equal(dc_yamux_stream_consume(s.y, id, DC_YAMUX_INITIAL_WINDOW - 1000), 0);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_send_window(c.y, id), DC_YAMUX_INITIAL_WINDOW);
    assert_int_equal(c.n_writable, 1);
    /* With automatic consumption the rest flows through. */
    s.auto_consume = true;
    while (total < sizeof(big)) {
        assert_int_equal(dc_yamux_stream_write(c.y, id, big + total, sizeof(big) - total, &w), 0);
        total += w;
        pump_all(&c, &s);
    }
    assert_int_equal(s.data.len, sizeof(big));
    assert_memory_equal(s.data.data, big, sizeof(big));
    side_cleanup(&c);
    side_cleanup(&s);
}

static void test_yamux_large_window(void **state)
{
    static uint8_t big[3u << 20];
    struct side c, s;
    uint32_t id;
    size_t w;

    (void)state;
    side_init(&c, true, 4u << 20);
    side_init(&s, false, 4u << 20);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    pump_all(&c, &s);
    /* The server's ACK granted 4 MiB, so 3 MiB go out in one write. */
    assert_int_equal(dc_yamux_stream_send_window(c.y, id), 4u << 20);
    assert_int_equal(dc_yamux_stream_write(c.y, id, big, sizeof(big), &w), 0);
    assert_int_equal(w, sizeof(big));
    pump_all(&c, &s);
    assert_int_equal(s.data.len, sizeof(big));
    side_cleanup(&c);
    side_cleanup(&s);
}

static void test_yamux_output_cap(void **state)
{
    static uint8_t big[1 << 20];
    struct dc_yamux_config cfg;
    struct dc_yamux *y;
    uint32_t id;
    size_t w, len;

    (void)state;
    dc_yamux_config_default(&cfg);
    cfg.is_client = true;
    cfg.max_output = 64 * 1024;
    assert_int_equal(dc_yamux_new(&cfg, &y), 0);
    assert_int_equal(dc_yamux_stream_open(y, NULL, &id), 0);
    assert_int_equal(dc_yamux_stream_write(y, id, big, sizeof(big), &w), 0);
    (void)dc_yamux_output(y, &len);
    assert_int_equal(len, 64 * 1024);
    assert_int_equal(w, 64 * 1024 - 24);
    assert_int_equal(dc_yamux_stream_write(y, id, big, sizeof(big), &w), 0);
    assert_int_equal(w, 0);
    /* Control frames still fit in the reserve. */
    assert_int_equal(dc_yamux_ping(y), 0);
    /* Draining part of the output makes room again. */
    dc_yamux_output_consume(y, 1000);
    assert_int_equal(dc_yamux_stream_write(y, id, big, sizeof(big), &w), 0);
    assert_int_equal(w, 1000 - 12 - 12); /* the ping took 12 of the 1000 bytes freed */
    (void)dc_yamux_output(y, &len);
    assert_int_equal(len, 64 * 1024);
    dc_yamux_free(y);
}

static void test_yamux_fin(void **state)
{
    struct side c, s;
    uint32_t id;
    size_t w;

    (void)state;
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    assert_int_equal(dc_yamux_stream_write(c.y, id, "req", 3, &w), 0);
    assert_int_equal(dc_yamux_stream_close(c.y, id), 0);
    assert_int_equal(dc_yamux_stream_close(c.y, id), DC_ESTATE);
    assert_int_equal(dc_yamux_stream_write(c.y, id, "x", 1, &w), DC_ESTATE);
    pump_all(&c, &s);
    assert_int_equal(s.n_fins, 1);
    assert_int_equal(s.fins[0], id);
    assert_int_equal(s.n_closed, 0);
    /* Half-closed: the server still answers. */
    assert_int_equal(dc_yamux_stream_write(s.y, id, "resp", 4, &w), 0);
    assert_int_equal(dc_yamux_stream_close(s.y, id), 0);
    assert_int_equal(s.n_closed, 1);
    assert_int_equal(s.close_err[0], 0);
    pump_all(&c, &s);
    assert_int_equal(c.data.len, 4);
    assert_int_equal(c.n_fins, 1);
    assert_int_equal(c.n_closed, 1);
    assert_int_equal(c.close_err[0], 0);
    assert_int_equal(dc_yamux_stream_count(c.y), 0);
    assert_int_equal(dc_yamux_stream_count(s.y), 0);
    assert_int_equal(dc_yamux_stream_consume(c.y, id, 4), DC_ENOENT);
    side_cleanup(&c);
    side_cleanup(&s);
}

static void test_yamux_rst(void **state)
{
    struct side c, s;
    uint32_t id;
    size_t w;

    (void)state;
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_write(s.y, id, "late", 4, &w), 0);
    assert_int_equal(dc_yamux_stream_reset(c.y, id), 0);
    assert_int_equal(dc_yamux_stream_reset(c.y, id), DC_ENOENT);
    assert_int_equal(dc_yamux_stream_write(c.y, id, "x", 1, &w), DC_ENOENT);
    pump_all(&c, &s); /* the server's in-flight data for the reset stream is dropped */
    assert_int_equal(c.data.len, 0);
    assert_int_equal(c.n_closed, 0);
    assert_int_equal(s.n_closed, 1);
    assert_int_equal(s.close_err[0], -ECONNRESET);
    assert_int_equal(dc_yamux_stream_count(s.y), 0);

    /* A refused stream is reset at once. */
    s.refuse = true;
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    assert_int_equal(dc_yamux_stream_write(c.y, id, "data", 4, &w), 0);
    pump_all(&c, &s);
    assert_int_equal(c.n_closed, 1);
    assert_int_equal(c.close_err[0], -ECONNRESET);
    assert_int_equal(s.data.len, 0);
    side_cleanup(&c);
    side_cleanup(&s);
}

static void test_yamux_ping_go_away(void **state)
{
    struct side c, s;
    uint32_t id;

    (void)state;
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
    fake_now = 1000;
    assert_int_equal(dc_yamux_ping(c.y), 0);
    assert_int_equal(dc_yamux_ping(c.y), DC_EBUSY);
    pump(&c, &s, 0);
    fake_now = 1750;
    pump(&s, &c, 0);
    assert_int_equal(c.n_pings, 1);
    assert_int_equal(c.last_rtt, 750);
    assert_int_equal(s.n_pings, 0);
    assert_int_equal(dc_yamux_ping(c.y), 0);

    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    pump_all(&c, &s);
    assert_int_equal(c.n_pings, 2);
    assert_int_equal(dc_yamux_go_away(s.y, DC_YAMUX_GO_AWAY_NORMAL), 0);
    assert_int_equal(dc_yamux_go_away(s.y, DC_YAMUX_GO_AWAY_NORMAL), DC_ESTATE);
    pump_all(&c, &s);
    assert_int_equal(c.n_go_away, 1);
    assert_int_equal(c.go_away_code, 0);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), DC_ECLOSED);
    assert_int_equal(dc_yamux_stream_open(s.y, NULL, &id), DC_ECLOSED);
    assert_false(dc_yamux_is_done(c.y));
    assert_int_equal(dc_yamux_go_away(c.y, DC_YAMUX_GO_AWAY_NORMAL), 0);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_close(c.y, 1), 0);
    assert_int_equal(dc_yamux_stream_close(s.y, 1), 0);
    pump_all(&c, &s);
    assert_true(dc_yamux_is_done(c.y));
    assert_true(dc_yamux_is_done(s.y));
    side_cleanup(&c);
    side_cleanup(&s);
}

static void frame(uint8_t *h, uint8_t type, uint16_t flags, uint32_t id, uint32_t len)
{
    h[0] = 0;
    h[1] = type;
    h[2] = (uint8_t)(flags >> 8);
    h[3] = (uint8_t)flags;
    h[4] = (uint8_t)(id >> 24);
    h[5] = (uint8_t)(id >> 16);
    h[6] = (uint8_t)(id >> 8);
    h[7] = (uint8_t)id;
    h[8] = (uint8_t)(len >> 24);
    h[9] = (uint8_t)(len >> 16);
    h[10] = (uint8_t)(len >> 8);
    h[11] = (uint8_t)len;
}

/* The server fed 'in' must fail with DC_EPROTO and answer with Go Away (protocol error). */
static void expect_proto_error(const uint8_t *in, size_t n)
{
    struct side s;
    const uint8_t *out;
    size_t len;

    side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
    assert_int_equal(dc_yamux_feed(s.y, in, n), DC_EPROTO);
    out = dc_yamux_output(s.y, &len);
    assert_true(len >= 12);
    assert_int_equal(out[len - 12 + 1], DC_YAMUX_TYPE_GO_AWAY);
    assert_int_equal(out[len - 1], DC_YAMUX_GO_AWAY_PROTOCOL);
    assert_int_equal(dc_yamux_feed(s.y, in, n), DC_EPROTO);
    assert_true(dc_yamux_is_done(s.y));
    assert_int_equal(dc_yamux_stream_count(s.y), 0);
    for (size_t i = 0; i < s.n_closed && i < MAX_EV; i++)
        assert_int_equal(s.close_err[i], DC_EPROTO);
    side_cleanup(&s);
}

static void test_yamux_protocol_errors(void **state)
{
    static uint8_t buf[DC_YAMUX_INITIAL_WINDOW + 64];
    uint8_t *h = buf;

    (void)state;
    /* A peer sending one byte beyond the window. */
    frame(h, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_SYN, 1, 0);
    frame(h + 12, DC_YAMUX_TYPE_DATA, 0, 1, DC_YAMUX_INITIAL_WINDOW + 1);
    expect_proto_error(buf, 24);
    /* Exactly the window is fine; one more byte in a second frame is not. */
    {
        struct side s;

        side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
        frame(h, DC_YAMUX_TYPE_DATA, DC_YAMUX_FLAG_SYN, 1, DC_YAMUX_INITIAL_WINDOW);
        memset(h + 12, 'z', DC_YAMUX_INITIAL_WINDOW);
        assert_int_equal(dc_yamux_feed(s.y, buf, 12 + DC_YAMUX_INITIAL_WINDOW), 0);
        assert_int_equal(s.data.len, DC_YAMUX_INITIAL_WINDOW);
        frame(h, DC_YAMUX_TYPE_DATA, 0, 1, 1);
        assert_int_equal(dc_yamux_feed(s.y, buf, 13), DC_EPROTO);
        assert_int_equal(s.n_closed, 1);
        assert_int_equal(s.close_err[0], DC_EPROTO);
        side_cleanup(&s);
    }
    frame(h, DC_YAMUX_TYPE_DATA, DC_YAMUX_FLAG_SYN, 1, 0);
    h[0] = 1; /* version */
    expect_proto_error(buf, 12);
    frame(h, 4, 0, 1, 0); /* type */
    expect_proto_error(buf, 12);
    frame(h, DC_YAMUX_TYPE_PING, DC_YAMUX_FLAG_SYN, 1, 0); /* ping off stream 0 */
    expect_proto_error(buf, 12);
    frame(h, DC_YAMUX_TYPE_DATA, 0, 0, 0); /* data on stream 0 */
    expect_proto_error(buf, 12);
    frame(h, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_SYN, 2, 0); /* our parity */
    expect_proto_error(buf, 12);
    frame(h, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_SYN, 1, 0); /* duplicate SYN */
    frame(h + 12, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_SYN, 1, 0);
    expect_proto_error(buf, 24);
    frame(h, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_SYN | DC_YAMUX_FLAG_FIN, 1, 0);
    frame(h + 12, DC_YAMUX_TYPE_DATA, 0, 1, 1); /* data after FIN */
    expect_proto_error(buf, 25);
    frame(h, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_SYN, 1, 0xffffffffu); /* overflow */
    expect_proto_error(buf, 12);
    /* A flood of updates that only together pass 2^32-1: an error too, not a wrap. */
    frame(h, DC_YAMUX_TYPE_WINDOW_UPDATE, DC_YAMUX_FLAG_SYN, 1, 0);
    for (int i = 1; i <= 3; i++)
        frame(h + 12 * i, DC_YAMUX_TYPE_WINDOW_UPDATE, 0, 1, 0x7fffffffu);
    expect_proto_error(buf, 48);
    frame(h, DC_YAMUX_TYPE_DATA, 0, 7, 0x7fffffffu); /* unknown stream, absurd length */
    expect_proto_error(buf, 12);
}

static void test_yamux_limits(void **state)
{
    struct dc_yamux_config cfg;
    struct side c, s;
    struct dc_yamux *y;
    uint32_t id;
    int rc = 0;
    size_t i;

    (void)state;
    dc_yamux_config_default(&cfg);
    cfg.recv_window = 1000;
    assert_int_equal(dc_yamux_new(&cfg, &y), DC_EINVAL);
    dc_yamux_config_default(&cfg);
    cfg.max_streams = 0;
    assert_int_equal(dc_yamux_new(&cfg, &y), DC_EINVAL);

    /* max_streams on the receiving side: extra streams are reset, the session lives. */
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    dc_yamux_free(NULL);
    dc_yamux_config_default(&cfg);
    memset(&s, 0, sizeof(s));
    dc_buf_init(&s.data, 0);
    cfg.max_streams = 2;
    cfg.cb.on_stream_open = cb_open;
    cfg.cb.on_close = cb_close;
    cfg.ud = &s;
    assert_int_equal(dc_yamux_new(&cfg, &s.y), 0);
    for (i = 0; i < 3; i++)
        assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    pump_all(&c, &s);
    assert_int_equal(s.n_opened, 2);
    assert_int_equal(c.n_closed, 1);
    assert_int_equal(c.closed[0], 5);
    assert_int_equal(c.close_err[0], -ECONNRESET);
    side_cleanup(&s);

    side_cleanup(&c);

    /* The ACK backlog: 256 unanswered opens, then DC_EAGAIN. */
    dc_yamux_config_default(&cfg);
    cfg.is_client = true;
    cfg.max_streams = 1000;
    assert_int_equal(dc_yamux_new(&cfg, &y), 0);
    for (i = 0; i < 300 && rc == 0; i++)
        rc = dc_yamux_stream_open(y, NULL, &id);
    assert_int_equal(rc, DC_EAGAIN);
    assert_int_equal(i, DC_YAMUX_MAX_ACK_BACKLOG + 1);
    dc_yamux_free(y);

    /* With max_streams at its limit, opening fails with DC_ELIMIT. */
    cfg.max_streams = 3;
    assert_int_equal(dc_yamux_new(&cfg, &y), 0);
    for (i = 0; i < 3; i++)
        assert_int_equal(dc_yamux_stream_open(y, NULL, &id), 0);
    assert_int_equal(dc_yamux_stream_open(y, NULL, &id), DC_ELIMIT);
    dc_yamux_free(y);
}

/* The session budget: only the first stream gets the large window. */
static void test_yamux_budget(void **state)
{
    struct dc_yamux_config cfg;
    struct side c, s;
    uint32_t id1, id2, id3;

    (void)state;
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    memset(&s, 0, sizeof(s));
    dc_buf_init(&s.data, 0);
    dc_yamux_config_default(&cfg);
    cfg.recv_window = 4u << 20;
    cfg.max_buffered = 5u << 20;
    cfg.cb.on_stream_open = cb_open;
    cfg.cb.on_close = cb_close;
    cfg.ud = &s;
    assert_int_equal(dc_yamux_new(&cfg, &s.y), 0);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id1), 0);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id2), 0);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_send_window(c.y, id1), 4u << 20);
    assert_int_equal(dc_yamux_stream_send_window(c.y, id2), DC_YAMUX_INITIAL_WINDOW);
    /* Once the big stream is gone its budget serves the next one. */
    assert_int_equal(dc_yamux_stream_reset(c.y, id1), 0);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id3), 0);
    pump_all(&c, &s);
    assert_int_equal(dc_yamux_stream_send_window(c.y, id3), 4u << 20);
    side_cleanup(&c);
    side_cleanup(&s);
}

static void test_yamux_enomem(void **state)
{
    struct dc_yamux_config cfg;
    struct dc_yamux *y;
    uint32_t id;
    long i;
    int rc;

    (void)state;
    dc_yamux_config_default(&cfg);
    for (i = 0;; i++) {
        dc_alloc_fail_after(i);
        rc = dc_yamux_new(&cfg, &y);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(y);
    }
    assert_int_equal(i, 2);
    for (i = 0;; i++) {
        dc_alloc_fail_after(i);
        rc = dc_yamux_stream_open(y, NULL, &id);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_int_equal(dc_yamux_stream_count(y), 0);
    }
    dc_yamux_free(y);
}

/* The same conversation with the wire split into every chunk size from 1 to 40 bytes. */
static void test_yamux_split(void **state)
{
    (void)state;
    for (size_t chunk = 1; chunk <= 40; chunk++) {
        struct side c, s;
        uint32_t id1, id2;
        size_t w;

        side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
        side_init(&s, false, DC_YAMUX_INITIAL_WINDOW);
        s.auto_consume = true;
        assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id1), 0);
        assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id2), 0);
        assert_int_equal(dc_yamux_stream_write(c.y, id1, "abcdefghij", 10, &w), 0);
        assert_int_equal(dc_yamux_stream_write(c.y, id2, "0123456789", 10, &w), 0);
        assert_int_equal(dc_yamux_stream_write(c.y, id1, "KLMNOPQRSTUVWXYZ", 16, &w), 0);
        assert_int_equal(dc_yamux_stream_close(c.y, id1), 0);
        assert_int_equal(dc_yamux_ping(c.y), 0);
        assert_int_equal(dc_yamux_stream_reset(c.y, id2), 0);
        while (pump(&c, &s, chunk) + pump(&s, &c, chunk) > 0)
            ;
        assert_int_equal(s.data.len, 36);
        assert_memory_equal(s.data.data, "abcdefghij0123456789KLMNOPQRSTUVWXYZ", 36);
        assert_int_equal(s.n_opened, 2);
        assert_int_equal(s.n_fins, 1);
        assert_int_equal(s.n_closed, 1);
        assert_int_equal(s.close_err[0], -ECONNRESET);
        assert_int_equal(c.n_pings, 1);
        side_cleanup(&c);
        side_cleanup(&s);
    }
}

/* Callbacks that reset the stream they are called for, mid-frame. */
static int reset_in_data_calls;

static void cb_data_reset(void *ud, uint32_t id, void *user, const uint8_t *p, size_t n)
{
    struct side *s = ud;

    (void)user;
    (void)p;
    (void)n;
    reset_in_data_calls++;
    assert_int_equal(dc_yamux_stream_reset(s->y, id), 0);
}

static void test_yamux_reentrant_reset(void **state)
{
    struct dc_yamux_config cfg;
    struct side c, s;
    uint32_t id;
    size_t w;

    (void)state;
    side_init(&c, true, DC_YAMUX_INITIAL_WINDOW);
    memset(&s, 0, sizeof(s));
    dc_yamux_config_default(&cfg);
    cfg.cb.on_stream_open = cb_open;
    cfg.cb.on_data = cb_data_reset;
    cfg.ud = &s;
    assert_int_equal(dc_yamux_new(&cfg, &s.y), 0);
    assert_int_equal(dc_yamux_stream_open(c.y, NULL, &id), 0);
    assert_int_equal(dc_yamux_stream_write(c.y, id, "0123456789", 10, &w), 0);
    assert_int_equal(dc_yamux_stream_close(c.y, id), 0);
    while (pump(&c, &s, 3) + pump(&s, &c, 3) > 0)
        ;
    assert_int_equal(reset_in_data_calls, 1);
    assert_int_equal(c.n_closed, 1);
    assert_int_equal(c.close_err[0], -ECONNRESET);
    dc_yamux_free(s.y);
    side_cleanup(&c);
}

/* ---- pnet ------------------------------------------------------------------------------- */

static void test_pnet_psk(void **state)
{
    static const char good[] = "/key/swarm/psk/1.0.0/\n/base16/\n"
                               "000102030405060708090a0b0c0d0e0f"
                               "101112131415161718191A1B1C1D1E1F\n";
    uint8_t key[DC_PNET_KEY_LEN];
    char buf[256];

    (void)state;
    assert_int_equal(dc_pnet_psk_parse(good, strlen(good), key), 0);
    for (int i = 0; i < DC_PNET_KEY_LEN; i++)
        assert_int_equal(key[i], i);
    assert_int_equal(dc_pnet_psk_parse(good, strlen(good) - 1, key), 0); /* no final newline */
    snprintf(buf, sizeof(buf), "%s", good);
    buf[3] = 'X';
    assert_int_equal(dc_pnet_psk_parse(buf, strlen(buf), key), DC_ECORRUPT);
    snprintf(buf, sizeof(buf), "/key/swarm/psk/1.0.0/\n/base64/\nAAAA\n");
    assert_int_equal(dc_pnet_psk_parse(buf, strlen(buf), key), DC_EUNSUPPORTED);
    snprintf(buf, sizeof(buf), "/key/swarm/psk/1.0.0/\n/base16/\n0011\n");
    assert_int_equal(dc_pnet_psk_parse(buf, strlen(buf), key), DC_ECORRUPT);
    snprintf(buf, sizeof(buf), "%s", good);
    buf[40] = 'g';
    assert_int_equal(dc_pnet_psk_parse(buf, strlen(buf), key), DC_ECORRUPT);
    snprintf(buf, sizeof(buf), "%sjunk\n", good);
    assert_int_equal(dc_pnet_psk_parse(buf, strlen(buf), key), DC_ECORRUPT);
    assert_int_equal(dc_pnet_psk_parse("", 0, key), DC_ECORRUPT);
}

static void test_pnet_stream(void **state)
{
    static uint8_t plain[5000], wire[5000 + DC_PNET_NONCE_LEN], ref[5000];
    uint8_t key[DC_PNET_KEY_LEN], nonce[DC_PNET_NONCE_LEN];
    struct dc_pnet a, b;
    size_t off, chunk = 1;

    (void)state;
    for (size_t i = 0; i < sizeof(plain); i++)
        plain[i] = (uint8_t)(i * 31 + 7);
    memset(key, 0x42, sizeof(key));
    memset(nonce, 0x24, sizeof(nonce));
    dc_pnet_init(&a, key, nonce);
    dc_pnet_init(&b, key, NULL);

    /* Encrypt in chunks of growing size: the result equals one-shot XSalsa20. */
    memcpy(wire, a.local_nonce, DC_PNET_NONCE_LEN);
    memcpy(wire + DC_PNET_NONCE_LEN, plain, sizeof(plain));
    for (off = 0; off < sizeof(plain); off += chunk, chunk = chunk * 2 + 1) {
        size_t n = chunk < sizeof(plain) - off ? chunk : sizeof(plain) - off;
        dc_pnet_encrypt(&a, wire + DC_PNET_NONCE_LEN + off, n);
    }
    assert_int_equal(crypto_stream_xsalsa20_xor(ref, plain, sizeof(plain), nonce, key), 0);
    assert_memory_equal(wire + DC_PNET_NONCE_LEN, ref, sizeof(ref));

    /* Decrypt in 7-byte pieces: the nonce straddles the first pieces. */
    for (off = 0; off < sizeof(wire); off += 7) {
        size_t n = 7 < sizeof(wire) - off ? 7 : sizeof(wire) - off, skip;

        dc_pnet_decrypt(&b, wire + off, n, &skip);
        if (off + n <= DC_PNET_NONCE_LEN)
            assert_int_equal(skip, n);
        else if (off >= DC_PNET_NONCE_LEN)
            assert_int_equal(skip, 0);
        else
            assert_int_equal(skip, DC_PNET_NONCE_LEN - off);
    }
    assert_memory_equal(wire + DC_PNET_NONCE_LEN, plain, sizeof(plain));
    dc_pnet_cleanup(&a);
    dc_pnet_cleanup(&b);
    assert_int_equal(a.key[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multiaddr_vectors),
        cmocka_unit_test(test_multiaddr_errors),
        cmocka_unit_test(test_multiaddr_helpers),
        cmocka_unit_test(test_multiaddr_limits),
        cmocka_unit_test(test_mss_wire_format),
        cmocka_unit_test(test_mss_success),
        cmocka_unit_test(test_mss_fallback),
        cmocka_unit_test(test_mss_garbage),
        cmocka_unit_test(test_mss_too_many_proposals),
        cmocka_unit_test(test_mss_lazy_leftover),
        cmocka_unit_test(test_mss_ls),
        cmocka_unit_test(test_mss_config_and_enomem),
        cmocka_unit_test(test_yamux_open_data),
        cmocka_unit_test(test_yamux_window),
        cmocka_unit_test(test_yamux_stream_frame),
        cmocka_unit_test(test_yamux_large_window),
        cmocka_unit_test(test_yamux_output_cap),
        cmocka_unit_test(test_yamux_fin),
        cmocka_unit_test(test_yamux_rst),
        cmocka_unit_test(test_yamux_ping_go_away),
        cmocka_unit_test(test_yamux_protocol_errors),
        cmocka_unit_test(test_yamux_limits),
        cmocka_unit_test(test_yamux_budget),
        cmocka_unit_test(test_yamux_enomem),
        cmocka_unit_test(test_yamux_split),
        cmocka_unit_test(test_yamux_reentrant_reset),
        cmocka_unit_test(test_pnet_psk),
        cmocka_unit_test(test_pnet_stream),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

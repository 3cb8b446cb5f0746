/* SPDX-License-Identifier: MIT */
/*
 * infer_test.c - /democritus/infer/1.0.0: the protocol core (frame round trips byte by byte,
 * limits, malformed frames, signatures on tampered packets, the transcript, allocation
 * failures), then two hosts on one loop over 127.0.0.1: A serves a tiny llama model that
 * gguf-gen writes at test time, B asks. B verifies every packet and the transcript, and its
 * greedy text equals what A's engine gives locally; the refusals (serve_remote off, a denied
 * PeerId, the request quota, max_tokens over the cap) arrive as signed errors; a cancel from B
 * frees A's slot.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "base/base.h"
#include "base/log.h"
#include "base/varint.h"
#include "crypto/crypto.h"
#include "model/engine.h"
#include "p2p/host.h"
#include "p2p/infer.h"
#include "swarm/swarm.h"
#include "gen_util.h"

/* ---- the protocol core ------------------------------------------------------------------- */

struct frames {
    int n;
    struct dc_infer_frame copy_type[8];
    enum dc_infer_frame_type types[8];
    char text[8][64];
    int verify[8];
    const uint8_t *pk;
    uint8_t rid[DC_INFER_REQUEST_ID_LEN];
    struct dc_infer_transcript tr;
    bool have_tr;
    uint8_t done_hash[DC_INFER_HASH_LEN];
    uint64_t done_packets;
    char finish[32];
};

static int collect_frame(void *ud, const struct dc_infer_frame *f)
{
    struct frames *c = ud;
    int i = c->n++;

    assert_true(i < 8);
    c->types[i] = f->type;
    if (f->type == DC_INFER_FRAME_REQUEST) {
        const struct dc_infer_request *r = &f->request;
        snprintf(c->text[i], sizeof(c->text[i]), "%s:%s|%zu|%s", r->messages[0].role,
                 r->messages[0].content, r->n_stop, r->n_stop > 0 ? r->stop[0] : "");
        memcpy(c->rid, r->request_id, sizeof(c->rid));
        assert_true(r->has_temperature);
        assert_true(r->temperature == 0.5f);
        assert_false(r->has_top_p);
        assert_true(r->has_seed);
        assert_int_equal(r->seed, 42);
        assert_int_equal(r->max_tokens, 7);
        assert_int_equal(r->n_logprobs, 3);
        assert_true(r->want_logprobs);
        assert_string_equal(r->model, "m1");
        assert_string_equal(r->continue_text, "Once upon");
        dc_infer_transcript_init(&c->tr, f->raw, f->raw_len);
        c->have_tr = true;
    } else if (f->type == DC_INFER_FRAME_TOKEN) {
        snprintf(c->text[i], sizeof(c->text[i]), "%s", f->token.text);
        c->verify[i] = dc_infer_frame_verify(f, c->pk, c->rid);
        if (c->have_tr)
            dc_infer_transcript_add(&c->tr, f->raw, f->raw_len);
    } else {
        c->verify[i] = dc_infer_frame_verify(f, c->pk, c->rid);
        memcpy(c->done_hash, f->done.transcript_hash, DC_INFER_HASH_LEN);
        c->done_packets = f->done.n_packets;
        snprintf(c->finish, sizeof(c->finish), "%s", f->done.finish_reason);
    }
    return 0;
}

static void make_request(struct dc_infer_request *r, struct dc_infer_message *m)
{
    memset(r, 0, sizeof(*r));
    m[0].role = "user";
    m[0].content = "hello there";
    m[1].role = "assistant";
    m[1].content = "hi";
    memset(r->request_id, 0xab, sizeof(r->request_id));
    r->messages = m;
    r->n_messages = 2;
    r->has_temperature = true;
    r->temperature = 0.5f;
    r->has_seed = true;
    r->seed = 42;
    r->max_tokens = 7;
    r->stop[0] = "END";
    r->n_stop = 1;
    r->n_logprobs = 3;
    r->want_logprobs = true;
    r->model = "m1";
    r->continue_text = "Once upon";
}

static void make_token(struct dc_infer_token *t, uint64_t seq, const char *text)
{
    memset(t, 0, sizeof(*t));
    t->seq = seq;
    t->text = text;
    t->text_len = strlen(text);
    t->token_id = 100 + (int32_t)seq;
    t->has_logprob = true;
    t->logprob = -0.25f;
    t->n_top = 2;
    t->top[0] = (struct dc_infer_top){100, -0.25f, "a"};
    t->top[1] = (struct dc_infer_top){101, -2.0f, "b"};
}

static void test_codec_roundtrip(void **state)
{
    struct dc_infer_message m[2];
    struct dc_infer_request req;
    struct dc_infer_token tok;
    struct dc_infer_done done = {
        .prompt_tokens = 5, .completion_tokens = 2, .finish_reason = "stop"};
    struct dc_infer_transcript tr;
    struct dc_infer_reader rd;
    struct dc_identity *id;
    struct frames c;
    uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN], *raw = NULL, hash[DC_INFER_HASH_LEN];
    size_t raw_len = 0;
    struct dc_buf b;

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(dc_identity_generate(&id), 0);
    dc_identity_public_key(id, pk);
    c.pk = pk;
    make_request(&req, m);
    dc_buf_init(&b, 0);
    assert_int_equal(dc_infer_request_encode(&req, &b, &raw, &raw_len), 0);
    dc_infer_transcript_init(&tr, raw, raw_len);
    make_token(&tok, 0, "Hel");
    assert_int_equal(dc_infer_token_encode(id, req.request_id, &tok, &tr, &b), 0);
    make_token(&tok, 1, "lo\xc3\xa9");
    assert_int_equal(dc_infer_token_encode(id, req.request_id, &tok, &tr, &b), 0);
    assert_int_equal(dc_infer_done_encode(id, req.request_id, &done, &tr, &b), 0);
    dc_infer_transcript_hash(&tr, hash);

    /* Byte by byte: the reader reassembles every frame. */
    dc_infer_reader_init(&rd);
    for (size_t i = 0; i < b.len; i++)
        assert_int_equal(dc_infer_reader_push(&rd, b.data + i, 1, collect_frame, &c), 0);
    dc_infer_reader_cleanup(&rd);
    assert_int_equal(c.n, 4);
    assert_int_equal(c.types[0], DC_INFER_FRAME_REQUEST);
    assert_string_equal(c.text[0], "user:hello there|1|END");
    assert_int_equal(c.types[1], DC_INFER_FRAME_TOKEN);
    assert_string_equal(c.text[1], "Hel");
    assert_int_equal(c.verify[1], 0);
    assert_string_equal(c.text[2], "lo\xc3\xa9");
    assert_int_equal(c.verify[2], 0);
    assert_int_equal(c.types[3], DC_INFER_FRAME_DONE);
    assert_int_equal(c.verify[3], 0);
    assert_string_equal(c.finish, "stop");
    assert_int_equal(c.done_packets, 2);
    assert_memory_equal(c.done_hash, hash, sizeof(hash));
    /* The receiver's own transcript (request + packets as received) gives the same hash. */
    dc_infer_transcript_hash(&c.tr, hash);
    assert_memory_equal(c.done_hash, hash, sizeof(hash));

    /* All at once too. */
    memset(&c, 0, sizeof(c));
    c.pk = pk;
    dc_infer_reader_init(&rd);
    assert_int_equal(dc_infer_reader_push(&rd, b.data, b.len, collect_frame, &c), 0);
    dc_infer_reader_cleanup(&rd);
    assert_int_equal(c.n, 4);

    dc_buf_cleanup(&b);
    dc_free(raw);
    dc_identity_free(id);
}

/* Finds 'needle' in the buffer and returns its offset. */
static size_t find(const struct dc_buf *b, const char *needle)
{
    size_t n = strlen(needle);

    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->data + i, needle, n) == 0)
            return i;
    fail_msg("'%s' not found", needle);
    return 0;
}

static int decode_one(const struct dc_buf *b, struct dc_infer_frame *f)
{
    uint64_t len;
    size_t used;

    assert_int_equal(dc_varint_decode(b->data, b->len, &len, &used), 0);
    return dc_infer_frame_decode(b->data + used, (size_t)len, f);
}

static void test_tampered(void **state)
{
    struct dc_identity *id, *other;
    struct dc_infer_token tok;
    struct dc_infer_frame f;
    uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN], pk2[DC_ED25519_PUBLIC_KEY_LEN];
    uint8_t rid[DC_INFER_REQUEST_ID_LEN] = {1, 2, 3}, rid2[DC_INFER_REQUEST_ID_LEN] = {9};
    struct dc_buf b;

    (void)state;
    assert_int_equal(dc_identity_generate(&id), 0);
    assert_int_equal(dc_identity_generate(&other), 0);
    dc_identity_public_key(id, pk);
    dc_identity_public_key(other, pk2);
    dc_buf_init(&b, 0);
    make_token(&tok, 3, "secret text");
    assert_int_equal(dc_infer_token_encode(id, rid, &tok, NULL, &b), 0);

    assert_int_equal(decode_one(&b, &f), 0);
    assert_true(f.has_signature);
    assert_int_equal(dc_infer_frame_verify(&f, pk, rid), 0);
    /* Another key, another request id: refused. */
    assert_int_equal(dc_infer_frame_verify(&f, pk2, rid), DC_ECRYPTO);
    assert_int_equal(dc_infer_frame_verify(&f, pk, rid2), DC_ECRYPTO);
    dc_infer_frame_cleanup(&f);

    /* One changed byte of text: still decodes, no longer verifies. */
    b.data[find(&b, "secret")] = 'S';
    assert_int_equal(decode_one(&b, &f), 0);
    assert_string_equal(f.token.text, "Secret text");
    assert_int_equal(dc_infer_frame_verify(&f, pk, rid), DC_ECRYPTO);
    dc_infer_frame_cleanup(&f);

    /* A flipped signature byte (the last byte of the frame). */
    b.data[find(&b, "Secret")] = 's';
    b.data[b.len - 1] ^= 1;
    assert_int_equal(decode_one(&b, &f), 0);
    assert_int_equal(dc_infer_frame_verify(&f, pk, rid), DC_ECRYPTO);
    dc_infer_frame_cleanup(&f);

    /* Without its signature field (shortened by the 66 signature bytes). */
    b.data[b.len - 1] ^= 1;
    {
        struct dc_buf cut;
        uint8_t pre[DC_VARINT_MAX_LEN];
        uint64_t flen;
        size_t used;

        assert_int_equal(dc_varint_decode(b.data, b.len, &flen, &used), 0);
        /* frame: 0x12 varint(inner) inner; inner ends with 7a 40 <64>. */
        dc_buf_init(&cut, 0);
        size_t inner = (size_t)flen - 2 - 66; /* one-byte inner length before and after */
        assert_true(inner < 128);
        assert_int_equal(dc_buf_append(&cut, pre, dc_varint_encode(inner + 2, pre)), 0);
        uint8_t hdr[2] = {0x12, (uint8_t)inner};
        assert_int_equal(dc_buf_append(&cut, hdr, 2), 0);
        assert_int_equal(dc_buf_append(&cut, b.data + used + 2, inner), 0);
        assert_int_equal(decode_one(&cut, &f), 0);
        assert_false(f.has_signature);
        assert_int_equal(dc_infer_frame_verify(&f, pk, rid), DC_ECRYPTO);
        dc_infer_frame_cleanup(&f);
        dc_buf_cleanup(&cut);
    }
    dc_buf_cleanup(&b);
    dc_identity_free(id);
    dc_identity_free(other);
}

static int count_frame(void *ud, const struct dc_infer_frame *f)
{
    (void)f;
    (*(int *)ud)++;
    return 0;
}

static int push_bytes(const uint8_t *p, size_t n)
{
    struct dc_infer_reader rd;
    int count = 0, rc;

    dc_infer_reader_init(&rd);
    rc = dc_infer_reader_push(&rd, p, n, count_frame, &count);
    dc_infer_reader_cleanup(&rd);
    return rc;
}

static void test_limits(void **state)
{
    struct dc_infer_message m[2];
    struct dc_infer_request req;
    struct dc_infer_frame f;
    struct dc_buf b;
    uint8_t buf[64];

    (void)state;
    /* A length prefix over 1 MiB, and zero. */
    buf[0] = 0x81;
    buf[1] = 0x80;
    buf[2] = 0x40; /* 1 MiB + 1 */
    assert_int_equal(push_bytes(buf, 3), DC_ELIMIT);
    buf[0] = 0;
    assert_int_equal(push_bytes(buf, 1), DC_ECORRUPT);
    /* Two members of the oneof; none; a truncated field. */
    {
        const uint8_t two[] = {0x12, 0x00, 0x1a, 0x00};
        const uint8_t none[] = {0x20, 0x01};
        const uint8_t trunc[] = {0x12, 0x05, 0x08};
        assert_int_equal(dc_infer_frame_decode(two, sizeof(two), &f), DC_ECORRUPT);
        assert_int_equal(dc_infer_frame_decode(none, sizeof(none), &f), DC_ECORRUPT);
        assert_int_equal(dc_infer_frame_decode(trunc, sizeof(trunc), &f), DC_ECORRUPT);
    }
    /* A request whose id is not 16 bytes. */
    {
        const uint8_t bad_id[] = {0x0a, 0x04, 0x0a, 0x02, 0x01, 0x02};
        assert_int_equal(dc_infer_frame_decode(bad_id, sizeof(bad_id), &f), DC_ECORRUPT);
    }
    /* Two signatures; a short signature (token frames). */
    {
        uint8_t two_sig[3 + 2 * 66], short_sig[2 + 4];
        two_sig[0] = 0x12;
        two_sig[1] = 0x84; /* varint 132 */
        two_sig[2] = 0x01;
        for (int k = 0; k < 2; k++) {
            two_sig[3 + 66 * k] = 0x7a;
            two_sig[3 + 66 * k + 1] = 64;
            memset(two_sig + 3 + 66 * k + 2, k, 64);
        }
        short_sig[0] = 0x12;
        short_sig[1] = 4;
        short_sig[2] = 0x7a;
        short_sig[3] = 2;
        short_sig[4] = 0;
        short_sig[5] = 0;
        assert_int_equal(dc_infer_frame_decode(two_sig, sizeof(two_sig), &f), DC_ECORRUPT);
        assert_int_equal(dc_infer_frame_decode(short_sig, sizeof(short_sig), &f), DC_ECORRUPT);
    }
    /* The encoder refuses what the decoder would. */
    make_request(&req, m);
    dc_buf_init(&b, 0);
    req.n_stop = DC_INFER_MAX_STOP + 1;
    assert_int_equal(dc_infer_request_encode(&req, &b, NULL, NULL), DC_EINVAL);
    req.n_stop = 0;
    req.n_logprobs = DC_INFER_MAX_TOP + 1;
    assert_int_equal(dc_infer_request_encode(&req, &b, NULL, NULL), DC_EINVAL);
    req.n_logprobs = 0;
    /* A request over 1 MiB. */
    {
        char *big = dc_malloc(DC_INFER_MAX_FRAME + 1);
        assert_non_null(big);
        memset(big, 'x', DC_INFER_MAX_FRAME);
        big[DC_INFER_MAX_FRAME] = '\0';
        m[0].content = big;
        assert_int_equal(dc_infer_request_encode(&req, &b, NULL, NULL), DC_ELIMIT);
        assert_int_equal(b.len, 0);
        dc_free(big);
    }
    /* Nine stop strings on the wire: DC_ELIMIT. */
    {
        struct dc_buf raw;
        uint8_t pre[DC_VARINT_MAX_LEN];
        m[0].content = "hi";
        req.n_stop = 0;
        dc_buf_init(&raw, 0);
        assert_int_equal(dc_infer_request_encode(&req, &raw, NULL, NULL), 0);
        /* Append nine "stop" fields (9: tag 0x4a) to the inner message and re-frame it. */
        uint64_t flen, ilen;
        size_t u1, u2;
        assert_int_equal(dc_varint_decode(raw.data, raw.len, &flen, &u1), 0);
        assert_int_equal(dc_varint_decode(raw.data + u1 + 1, raw.len - u1 - 1, &ilen, &u2), 0);
        struct dc_buf inner, frame;
        dc_buf_init(&inner, 0);
        dc_buf_init(&frame, 0);
        assert_int_equal(dc_buf_append(&inner, raw.data + u1 + 1 + u2, (size_t)ilen), 0);
        for (int i = 0; i < 9; i++)
            assert_int_equal(dc_buf_append(&inner, "\x4a\x01x", 3), 0);
        assert_true(inner.len < 128);
        assert_int_equal(dc_buf_append(&frame, "\x0a", 1), 0);
        uint8_t l = (uint8_t)inner.len;
        assert_int_equal(dc_buf_append(&frame, &l, 1), 0);
        assert_int_equal(dc_buf_append(&frame, inner.data, inner.len), 0);
        assert_int_equal(dc_infer_frame_decode(frame.data, frame.len, &f), DC_ELIMIT);
        dc_buf_reset(&raw);
        assert_int_equal(dc_buf_append(&raw, pre, dc_varint_encode(frame.len, pre)), 0);
        assert_int_equal(dc_buf_append(&raw, frame.data, frame.len), 0);
        assert_int_equal(push_bytes(raw.data, raw.len), DC_ELIMIT);
        dc_buf_cleanup(&inner);
        dc_buf_cleanup(&frame);
        dc_buf_cleanup(&raw);
    }
    dc_buf_cleanup(&b);
}

/* Every allocation of encode and decode fails in turn: DC_ENOMEM, no leak (ASan). */
static void test_alloc_failures(void **state)
{
    struct dc_infer_message m[2];
    struct dc_infer_request req;
    struct dc_infer_token tok;
    struct dc_infer_frame f;
    struct dc_identity *id;
    uint8_t rid[DC_INFER_REQUEST_ID_LEN] = {0};
    struct dc_buf b, t;
    uint64_t len;
    size_t used;
    int rc;

    (void)state;
    assert_int_equal(dc_identity_generate(&id), 0);
    make_request(&req, m);
    make_token(&tok, 0, "x");
    dc_buf_init(&b, 0);
    dc_buf_init(&t, 0);
    assert_int_equal(dc_infer_request_encode(&req, &b, NULL, NULL), 0);
    assert_int_equal(dc_infer_token_encode(id, rid, &tok, NULL, &t), 0);
    for (int which = 0; which < 2; which++) {
        struct dc_buf *src = which == 0 ? &b : &t;
        assert_int_equal(dc_varint_decode(src->data, src->len, &len, &used), 0);
        for (long n = 0;; n++) {
            dc_alloc_fail_after(n);
            rc = dc_infer_frame_decode(src->data + used, (size_t)len, &f);
            dc_alloc_fail_after(-1);
            if (rc == 0) {
                dc_infer_frame_cleanup(&f);
                break;
            }
            assert_int_equal(rc, DC_ENOMEM);
            assert_true(n < 100);
        }
    }
    for (long n = 0;; n++) {
        struct dc_buf o;
        dc_buf_init(&o, 0);
        dc_alloc_fail_after(n);
        rc = dc_infer_token_encode(id, rid, &tok, NULL, &o);
        dc_alloc_fail_after(-1);
        dc_buf_cleanup(&o);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_true(n < 100);
    }
    dc_buf_cleanup(&b);
    dc_buf_cleanup(&t);
    dc_identity_free(id);
}

/* ---- two hosts and a model --------------------------------------------------------------- */

static char tmpdir[64];
static char model_path[128];

struct node {
    struct dc_identity *id;
    struct dc_host *host;
};

static struct {
    uv_loop_t loop;
    uv_timer_t wake;
    struct node a, b;
    struct dc_multiaddr a_addr;
    struct dc_registry *reg;
    struct dc_infer_server *srv;
} T;

static void wake_cb(uv_timer_t *t)
{
    (void)t;
}

static bool wait_for(const int *flag, int ms)
{
    uint64_t end;

    uv_update_time(&T.loop);
    end = uv_now(&T.loop) + (uint64_t)ms;
    while (!*flag) {
        uv_run(&T.loop, UV_RUN_ONCE);
        if (uv_now(&T.loop) > end)
            return false;
    }
    return true;
}

static void dial_cb(void *ud, int status, const struct dc_peer_id *peer)
{
    int *r = ud;

    (void)peer;
    *r = status == 0 ? 1 : -1;
}

static void server_stop(void);

static void server_start(const struct dc_infer_server_config *over)
{
    struct dc_infer_server_config cfg = {0};

    if (T.srv != NULL) /* left running by a test that failed */
        server_stop();
    if (over != NULL)
        cfg = *over;
    else
        cfg.serve_remote = true;
    cfg.loop = &T.loop;
    cfg.host = T.a.host;
    cfg.identity = T.a.id;
    cfg.registry = T.reg;
    if (cfg.max_tokens == 0)
        cfg.max_tokens = 1000;
    assert_int_equal(dc_infer_server_new(&cfg, &T.srv), 0);
}

static void server_stop(void)
{
    dc_infer_server_free(T.srv);
    T.srv = NULL;
    uv_run(&T.loop, UV_RUN_NOWAIT);
}

static int setup_swarm(void **state)
{
    struct dc_registry_config rc = {0};
    struct dc_host_config hc = {0};
    struct dc_multiaddr ma, addrs[4];
    const struct dc_peer_id *pid;
    int dialed = 0;

    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/dc-infer-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(model_path, sizeof(model_path), "%s/tiny.gguf", tmpdir);
    if (run_gen("--arch", "llama", "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads",
                "2", "--vocab", "512", "--ctx", "1024", "--type", "f32", "--seed", "11", "-o",
                model_path, NULL) != 0)
        return -1;
    rc.models_dir = tmpdir;
    rc.default_model = model_path;
    rc.no_probe = true;
    rc.no_hash = true;
    rc.engine.n_ctx_per_slot = 1024;
    rc.engine.n_parallel = 2;
    rc.engine.n_threads = 2;
    if (dc_registry_open(&rc, &T.reg) != 0)
        return -1;

    memset(&T.loop, 0, sizeof(T.loop));
    if (uv_loop_init(&T.loop) != 0)
        return -1;
    uv_timer_init(&T.loop, &T.wake);
    uv_timer_start(&T.wake, wake_cb, 10, 10);
    for (int i = 0; i < 2; i++) {
        struct node *n = i == 0 ? &T.a : &T.b;
        if (dc_identity_generate(&n->id) != 0)
            return -1;
        hc.loop = &T.loop;
        hc.identity = n->id;
        hc.agent_version = "democritus/test";
        if (dc_host_new(&hc, &n->host) != 0)
            return -1;
    }
    if (dc_multiaddr_parse("/ip4/127.0.0.1/tcp/0", &ma, NULL) != 0 ||
        dc_host_listen(T.a.host, &ma) != 0 || dc_host_listen_addrs(T.a.host, addrs, 4) != 1)
        return -1;
    T.a_addr = addrs[0];
    pid = dc_host_peer_id(T.a.host);
    if (dc_multiaddr_append_p2p(&T.a_addr, pid->bytes, pid->len) != 0)
        return -1;
    if (dc_host_dial(T.b.host, &T.a_addr, 0, dial_cb, &dialed) != 0 || !wait_for(&dialed, 5000) ||
        dialed != 1)
        return -1;
    return 0;
}

static int teardown_swarm(void **state)
{
    char cmd[128];

    (void)state;
    if (T.srv != NULL)
        server_stop();
    dc_host_free(T.a.host);
    dc_host_free(T.b.host);
    uv_close((uv_handle_t *)&T.wake, NULL);
    uv_run(&T.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&T.loop) != 0)
        return -1;
    dc_registry_close(T.reg);
    dc_identity_free(T.a.id);
    dc_identity_free(T.b.id);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

struct answer {
    int done;
    int status;
    int n_tokens;
    uint64_t last_seq;
    char text[8192];
    size_t text_len;
    char finish[32];
    char error[256];
    char code[32];
    uint32_t completion_tokens;
    uint32_t prompt_tokens;
    bool bad_top;
    int cancel_after;
    struct dc_infer_call *call;
};

static void on_token(void *ud, const struct dc_infer_token *t)
{
    struct answer *a = ud;

    a->last_seq = t->seq;
    a->n_tokens++;
    if (a->text_len + t->text_len < sizeof(a->text)) {
        memcpy(a->text + a->text_len, t->text, t->text_len);
        a->text_len += t->text_len;
        a->text[a->text_len] = '\0';
    }
    if (!t->has_logprob || t->n_top != 3 || t->top[0].logprob < t->top[1].logprob)
        a->bad_top = true;
    if (a->cancel_after > 0 && a->n_tokens == a->cancel_after) {
        dc_infer_call_cancel(a->call);
        a->done = 1;
        a->status = DC_ECANCELED;
    }
}

static void on_done(void *ud, int status, const struct dc_infer_done *d)
{
    struct answer *a = ud;

    a->done = 1;
    a->status = status;
    if (d != NULL) {
        snprintf(a->finish, sizeof(a->finish), "%s", d->finish_reason);
        snprintf(a->error, sizeof(a->error), "%s", d->error != NULL ? d->error : "");
        snprintf(a->code, sizeof(a->code), "%s", d->error_code != NULL ? d->error_code : "");
        a->completion_tokens = d->completion_tokens;
        a->prompt_tokens = d->prompt_tokens;
    }
}

static const struct dc_infer_call_cb call_cb = {.on_token = on_token, .on_done = on_done};

static const struct dc_infer_message hello[] = {
    {"system", "You are terse."},
    {"user", "Tell me a story about a robot."},
};

static void ask(struct answer *a, int32_t max_tokens)
{
    struct dc_infer_request req = {0};

    memset(a, 0, sizeof(*a));
    req.messages = hello;
    req.n_messages = 2;
    req.has_temperature = true;
    req.temperature = 0.0f;
    req.max_tokens = max_tokens;
    req.want_logprobs = true;
    req.n_logprobs = 3;
    assert_int_equal(dc_infer_call_start(&T.loop, T.b.host, dc_host_peer_id(T.a.host),
                                         &T.a_addr /* dialed again when not connected */, &req,
                                         30000, &call_cb, a, &a->call),
                     0);
}

static void ask_wait(struct answer *a, int32_t max_tokens)
{
    ask(a, max_tokens);
    assert_true(wait_for(&a->done, 60000));
}

/* What A's engine generates for the same chat, greedy, without the network. */
struct local {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
    char text[8192];
    size_t len;
};

static void local_cb(void *ud, const struct dc_gen_event *ev)
{
    struct local *l = ud;

    pthread_mutex_lock(&l->mu);
    if (ev->type == DC_GEN_EV_TOKEN) {
        if (l->len + ev->text_len < sizeof(l->text)) {
            memcpy(l->text + l->len, ev->text, ev->text_len);
            l->len += ev->text_len;
            l->text[l->len] = '\0';
        }
    } else {
        l->done = true;
        pthread_cond_broadcast(&l->cond);
    }
    pthread_mutex_unlock(&l->mu);
}

static void local_greedy(int32_t max_tokens, struct local *l)
{
    struct dc_chat_msg msgs[2] = {{hello[0].role, hello[0].content},
                                  {hello[1].role, hello[1].content}};
    struct dc_gen_request g = {0};
    struct dc_engine *e;
    struct dc_gen *gen;
    char *prompt = NULL;

    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cond, NULL);
    assert_int_equal(dc_registry_acquire(T.reg, NULL, &e, NULL), 0);
    assert_int_equal(dc_engine_chat_render(e, msgs, 2, true, &prompt, NULL), 0);
    dc_sampling_defaults(&g.sampling);
    g.sampling.temperature = 0.0f;
    g.prompt = prompt;
    g.prompt_len = strlen(prompt);
    g.prompt_parse_special = true;
    g.max_tokens = max_tokens;
    assert_int_equal(dc_engine_submit(e, &g, local_cb, l, &gen), 0);
    pthread_mutex_lock(&l->mu);
    while (!l->done)
        pthread_cond_wait(&l->cond, &l->mu);
    pthread_mutex_unlock(&l->mu);
    dc_gen_release(gen);
    dc_free(prompt);
    dc_registry_release(T.reg, e);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cond);
}

static void test_remote_greedy(void **state)
{
    struct dc_infer_server_stats st;
    struct answer a;
    struct local l;

    (void)state;
    server_start(NULL);
    ask_wait(&a, 24);
    if (a.status != 0)
        fail_msg("status %s", dc_strerror(a.status));
    assert_false(a.bad_top);
    assert_true(strcmp(a.finish, "length") == 0 || strcmp(a.finish, "stop") == 0);
    assert_true(a.n_tokens > 0);
    assert_int_equal(a.completion_tokens, (uint32_t)a.n_tokens);
    local_greedy(24, &l);
    print_message("remote greedy: %d tokens, finish %s, text \"%s\"\n", a.n_tokens, a.finish,
                  a.text);
    assert_string_equal(a.text, l.text);
    dc_infer_server_stats(T.srv, &st);
    assert_int_equal(st.served, 1);
    assert_int_equal(st.tokens, (uint64_t)a.n_tokens);

    /* A second request on the same connection. */
    ask(&a, 4);
    assert_true(wait_for(&a.done, 60000));
    assert_int_equal(a.status, 0);
    server_stop();
}

static void expect_refused(const char *code, const char *error_part, int32_t max_tokens)
{
    struct answer a;

    ask_wait(&a, max_tokens);
    assert_int_equal(a.status, 0); /* a verified InferDone */
    assert_string_equal(a.finish, "refused");
    assert_string_equal(a.code, code);
    if (strstr(a.error, error_part) == NULL)
        fail_msg("error '%s' lacks '%s'", a.error, error_part);
    assert_int_equal(a.n_tokens, 0);
}

static void test_refusals(void **state)
{
    struct dc_infer_server_config cfg = {0};
    struct answer a;

    (void)state;
    /* serve_remote = false */
    server_start(&cfg);
    expect_refused(DC_INFER_ERR_REFUSED, "does not serve remote", 4);
    server_stop();

    /* B's PeerId on the deny list. */
    cfg.serve_remote = true;
    cfg.deny = dc_host_peer_id(T.b.host);
    cfg.n_deny = 1;
    server_start(&cfg);
    expect_refused(DC_INFER_ERR_REFUSED, "PeerId", 4);
    server_stop();

    /* An allow list without B. */
    cfg.deny = NULL;
    cfg.n_deny = 0;
    cfg.allow = dc_host_peer_id(T.a.host);
    cfg.n_allow = 1;
    server_start(&cfg);
    expect_refused(DC_INFER_ERR_REFUSED, "PeerId", 4);
    server_stop();

    /* One request per minute: the second is refused. */
    cfg.allow = NULL;
    cfg.n_allow = 0;
    cfg.requests_per_minute = 1;
    server_start(&cfg);
    ask_wait(&a, 2);
    assert_int_equal(a.status, 0);
    assert_string_not_equal(a.finish, "refused");
    expect_refused(DC_INFER_ERR_RATE, "per minute", 2);
    server_stop();

    /* One concurrent request per peer: a second one while the first streams is refused. */
    cfg.requests_per_minute = 0;
    cfg.max_streams_per_peer = 1;
    server_start(&cfg);
    {
        struct answer first;
        ask(&first, 900);
        while (first.n_tokens < 1 && !first.done)
            uv_run(&T.loop, UV_RUN_ONCE);
        assert_false(first.done);
        expect_refused(DC_INFER_ERR_RATE, "concurrent", 4);
        dc_infer_call_cancel(first.call);
    }
    server_stop();
    cfg.max_streams_per_peer = 0;

    /* max_tokens over the cap, and a prompt + max_tokens over the context cap. */
    cfg.requests_per_minute = 0;
    cfg.max_tokens = 16;
    server_start(&cfg);
    expect_refused(DC_INFER_ERR_TOO_LARGE, "max_tokens 32", 32);
    server_stop();
    cfg.max_tokens = 0;
    cfg.max_context = 20;
    server_start(&cfg);
    expect_refused(DC_INFER_ERR_TOO_LARGE, "context", 8);
    server_stop();
    /* Without max_tokens, a request gets what the context cap leaves after its prompt. */
    cfg.max_context = 120;
    server_start(&cfg);
    ask_wait(&a, 0);
    assert_int_equal(a.status, 0);
    assert_string_equal(a.finish, "length");
    assert_true(a.prompt_tokens > 0 && a.prompt_tokens < 120);
    assert_int_equal(a.prompt_tokens + a.completion_tokens, 120);
    server_stop();
}

static void test_cancel_frees_slot(void **state)
{
    struct dc_infer_server_stats st;
    struct dc_engine_stats es;
    struct dc_engine *e;
    struct answer a, b;
    int idle = 0;

    (void)state;
    server_start(NULL);
    ask(&a, 900);
    a.cancel_after = 2;
    assert_true(wait_for(&a.done, 60000));
    assert_int_equal(a.status, DC_ECANCELED);
    /* A notices the reset and cancels the generation: the engine's slot is free again. */
    assert_int_equal(dc_registry_acquire(T.reg, NULL, &e, NULL), 0);
    uv_update_time(&T.loop);
    for (uint64_t end = uv_now(&T.loop) + 10000; uv_now(&T.loop) < end;) {
        uv_run(&T.loop, UV_RUN_ONCE);
        dc_engine_stats(e, &es);
        dc_infer_server_stats(T.srv, &st);
        if (es.active == 0 && es.queued == 0 && st.active == 0) {
            idle = 1;
            break;
        }
    }
    assert_true(idle);
    assert_int_equal(st.canceled, 1);
    print_message("canceled after %d tokens; the engine generated %llu in all\n", a.n_tokens,
                  (unsigned long long)es.tokens_generated);
    assert_true(es.tokens_generated < 900 * 2);
    dc_registry_release(T.reg, e);
    /* And the next request is served. */
    ask_wait(&b, 4);
    assert_int_equal(b.status, 0);
    assert_string_not_equal(b.finish, "refused");
    server_stop();
}

struct raw {
    int closed;
    int err;
    size_t got;
};

static void raw_data(void *ud, struct dc_host_stream *st, const uint8_t *p, size_t n)
{
    struct raw *r = ud;

    (void)st;
    (void)p;
    r->got += n;
}

static void raw_close(void *ud, struct dc_host_stream *st, int err)
{
    struct raw *r = ud;

    (void)st;
    r->closed = 1;
    r->err = err;
}

static const struct dc_host_stream_cb raw_cb = {.on_data = raw_data, .on_close = raw_close};

static void raw_stream(struct raw *r, const void *p, size_t n, struct dc_host_stream **out)
{
    static const char *const protos[] = {DC_INFER_PROTOCOL_ID};

    memset(r, 0, sizeof(*r));
    assert_int_equal(
        dc_host_new_stream(T.b.host, dc_host_peer_id(T.a.host), protos, 1, &raw_cb, r, out), 0);
    if (n > 0)
        assert_int_equal(dc_host_stream_write(*out, p, n), 0);
}

/* Hostile clients: silence, garbage, a frame of the wrong kind. Each stream is reset and the
 * server forgets it. */
static void test_hostile_clients(void **state)
{
    struct dc_infer_server_config cfg = {.serve_remote = true, .read_timeout_ms = 200};
    struct dc_infer_server_stats st;
    struct dc_host_stream *s1, *s2, *s3;
    struct raw r1, r2, r3;
    struct dc_infer_token tok;
    uint8_t rid[DC_INFER_REQUEST_ID_LEN] = {0};
    struct dc_buf b;

    (void)state;
    server_start(&cfg);
    raw_stream(&r1, NULL, 0, &s1);
    raw_stream(&r2, "\x05\xff\xff\xff\xff\xff", 6, &s2);
    dc_buf_init(&b, 0);
    make_token(&tok, 0, "not a request");
    assert_int_equal(dc_infer_token_encode(T.b.id, rid, &tok, NULL, &b), 0);
    raw_stream(&r3, b.data, b.len, &s3);
    dc_buf_cleanup(&b);
    assert_true(wait_for(&r2.closed, 5000));
    assert_true(wait_for(&r3.closed, 5000));
    assert_true(wait_for(&r1.closed, 5000)); /* after the read timeout */
    assert_int_equal(r1.err, -ECONNRESET);
    assert_int_equal(r2.err, -ECONNRESET);
    assert_int_equal(r3.err, -ECONNRESET);
    assert_int_equal(r1.got + r2.got + r3.got, 0);
    dc_infer_server_stats(T.srv, &st);
    assert_int_equal(st.active, 0);
    server_stop();
}

/* The constructors unwind on every allocation failure. */
static void test_alloc_failures_swarm(void **state)
{
    struct dc_infer_server_config cfg = {.serve_remote = true};
    struct dc_infer_request req = {0};
    struct dc_infer_call *call;
    struct answer a;
    int rc;

    (void)state;
    if (T.srv != NULL)
        server_stop();
    cfg.loop = &T.loop;
    cfg.host = T.a.host;
    cfg.identity = T.a.id;
    cfg.registry = T.reg;
    cfg.deny = dc_host_peer_id(T.a.host);
    cfg.n_deny = 1;
    for (long n = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_infer_server_new(&cfg, &T.srv);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(T.srv);
        assert_true(n < 50);
    }
    req.messages = hello;
    req.n_messages = 2;
    req.max_tokens = 2;
    memset(&a, 0, sizeof(a));
    for (long n = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_infer_call_start(&T.loop, T.b.host, dc_host_peer_id(T.a.host), &T.a_addr, &req,
                                 30000, &call_cb, &a, &call);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        /* The host turns a failed allocation in its connection flush into a closed
         * connection (DC_ECLOSED); the next round dials again. */
        if (rc != DC_ENOMEM && rc != DC_ECLOSED)
            fail_msg("round %ld: %s", n, dc_strerror(rc));
        assert_null(call);
        assert_true(n < 50);
        uv_run(&T.loop, UV_RUN_NOWAIT);
    }
    assert_true(wait_for(&a.done, 60000));
    assert_int_equal(a.status, 0);
    assert_string_equal(a.finish, "length");
    assert_int_equal(a.n_tokens, 2);
    server_stop();
}

/* Freeing the server while a generation streams: the client sees the stream end. */
static void test_free_while_running(void **state)
{
    struct answer a;

    (void)state;
    server_start(NULL);
    ask(&a, 900);
    while (a.n_tokens < 1 && !a.done)
        uv_run(&T.loop, UV_RUN_ONCE);
    server_stop();
    assert_true(wait_for(&a.done, 10000));
    assert_true(a.status < 0);
}

int main(void)
{
    const struct CMUnitTest core[] = {
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_alloc_failures),
    };
    const struct CMUnitTest swarm[] = {
        cmocka_unit_test(test_remote_greedy),        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_cancel_frees_slot),    cmocka_unit_test(test_hostile_clients),
        cmocka_unit_test(test_alloc_failures_swarm), cmocka_unit_test(test_free_while_running),
    };
    int failed;

    if (dc_crypto_init() != 0)
        return 1;
    dc_log_setup(DC_LOG_WARN, DC_LOG_FORMAT_TEXT, 2);
    failed = cmocka_run_group_tests_name("infer core", core, NULL, NULL);
    failed += cmocka_run_group_tests_name("infer swarm", swarm, setup_swarm, teardown_swarm);
    return failed;
}

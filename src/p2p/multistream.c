/* SPDX-License-Identifier: MIT */
/*
 * multistream.c - multistream-select 1.0 as a byte-driven state machine. Incoming messages are
 * assembled in a fixed DC_MSS_MAX_MESSAGE array (the peer cannot grow anything), one byte of
 * length prefix at a time, so the machine never reads past the message that ends the
 * negotiation: whatever follows in the caller's buffer is protocol data and stays the
 * caller's. The initiator pipelines the header with its first proposal, as go-libp2p and
 * rust-libp2p do; the responder answers only after it has seen the initiator's header, so a
 * peer that does not speak multistream gets nothing back.
 */
#include "p2p/p2p.h"

#include <string.h>

#include "base/varint.h"

/* Output holds at most an "ls" answer: every protocol name plus framing. */
#define MSS_MAX_OUTPUT (DC_MSS_MAX_PROPOSALS * (DC_MSS_MAX_MESSAGE + 4) + 64)

enum mss_state {
    MSS_WAIT_HEADER,   /* waiting for the peer's "/multistream/1.0.0" */
    MSS_WAIT_ANSWER,   /* initiator: a proposal is out, waiting for echo or "na" */
    MSS_WAIT_PROPOSAL, /* responder: waiting for a proposal (or "ls") */
    MSS_DONE,
    MSS_FAILED,
};

struct dc_mss {
    bool initiator;
    bool lazy;
    enum mss_state state;
    char **protos; /* owned copies */
    size_t n_protos;
    size_t next;        /* initiator: index of the proposal awaiting its answer */
    size_t n_proposals; /* responder: proposals (and "ls") answered so far */
    const char *chosen;

    /* Message being assembled: length prefix first, then the body. */
    uint8_t len_bytes[DC_VARINT_MAX_LEN];
    size_t len_got;
    bool have_len;
    size_t msg_len;
    size_t msg_got;
    uint8_t msg[DC_MSS_MAX_MESSAGE];

    struct dc_buf out;
};

static bool name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n >= DC_MSS_MAX_MESSAGE)
        return false;
    if (strchr(s, '\n') != NULL)
        return false;
    return strcmp(s, "na") != 0 && strcmp(s, "ls") != 0;
}

/* Queues one message: <varint len+1><text>\n. */
static int queue_msg(struct dc_mss *m, const char *text, size_t n)
{
    uint8_t pre[DC_VARINT_MAX_LEN];
    size_t pre_len = dc_varint_encode(n + 1, pre);
    size_t saved = m->out.len;
    int rc;

    rc = dc_buf_append(&m->out, pre, pre_len);
    if (rc == 0)
        rc = dc_buf_append(&m->out, text, n);
    if (rc == 0)
        rc = dc_buf_append(&m->out, "\n", 1);
    if (rc < 0)
        m->out.len = saved;
    return rc;
}

static int queue_str(struct dc_mss *m, const char *s)
{
    return queue_msg(m, s, strlen(s));
}

/* The "ls" answer, as go-libp2p and rust-libp2p shape it: one message whose body is every
 * protocol as its own length-prefixed line, followed by a bare "\n". */
static int queue_ls(struct dc_mss *m)
{
    uint8_t pre[DC_VARINT_MAX_LEN];
    size_t body = 1, saved = m->out.len;
    int rc;

    for (size_t i = 0; i < m->n_protos; i++) {
        size_t n = strlen(m->protos[i]) + 1;
        body += dc_varint_len(n) + n;
    }
    rc = dc_buf_append(&m->out, pre, dc_varint_encode(body, pre));
    for (size_t i = 0; i < m->n_protos && rc == 0; i++)
        rc = queue_str(m, m->protos[i]);
    if (rc == 0)
        rc = dc_buf_append(&m->out, "\n", 1);
    if (rc < 0)
        m->out.len = saved;
    return rc;
}

int dc_mss_new(const struct dc_mss_config *cfg, struct dc_mss **out)
{
    struct dc_mss *m;
    int rc;

    *out = NULL;
    if (cfg->n_protocols == 0 || cfg->n_protocols > DC_MSS_MAX_PROPOSALS || cfg->protocols == NULL)
        return DC_EINVAL;
    if (cfg->lazy && (!cfg->initiator || cfg->n_protocols != 1))
        return DC_EINVAL;
    for (size_t i = 0; i < cfg->n_protocols; i++)
        if (cfg->protocols[i] == NULL || !name_ok(cfg->protocols[i]))
            return DC_EINVAL;

    m = dc_calloc(1, sizeof(*m));
    if (m == NULL)
        return DC_ENOMEM;
    m->initiator = cfg->initiator;
    m->lazy = cfg->lazy;
    m->state = MSS_WAIT_HEADER;
    dc_buf_init(&m->out, MSS_MAX_OUTPUT);
    m->protos = dc_calloc(cfg->n_protocols, sizeof(*m->protos));
    if (m->protos == NULL) {
        rc = DC_ENOMEM;
        goto err_free;
    }
    for (m->n_protos = 0; m->n_protos < cfg->n_protocols; m->n_protos++) {
        m->protos[m->n_protos] = dc_strdup(cfg->protocols[m->n_protos]);
        if (m->protos[m->n_protos] == NULL) {
            rc = DC_ENOMEM;
            goto err_free;
        }
    }
    if (m->initiator) {
        rc = queue_str(m, DC_MSS_PROTOCOL_ID);
        if (rc == 0)
            rc = queue_str(m, m->protos[0]);
        if (rc < 0)
            goto err_free;
        if (m->lazy)
            m->chosen = m->protos[0];
    }
    *out = m;
    return 0;

err_free:
    dc_mss_free(m);
    return rc;
}

void dc_mss_free(struct dc_mss *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_protos; i++)
        dc_free(m->protos[i]);
    dc_free(m->protos);
    dc_buf_cleanup(&m->out);
    dc_free(m);
}

static bool text_is(const char *text, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(text, s, n) == 0;
}

/* Acts on one complete message. Returns 1 when negotiation finished, 0 to continue, or an
 * error. */
static int handle_message(struct dc_mss *m)
{
    const char *text = (const char *)m->msg;
    size_t n = m->msg_len - 1;

    if (m->msg[n] != '\n' || memchr(text, '\n', n) != NULL || memchr(text, '\0', n) != NULL)
        return DC_ECORRUPT;

    switch (m->state) {
    case MSS_WAIT_HEADER:
        if (!text_is(text, n, DC_MSS_PROTOCOL_ID))
            return DC_EPROTO;
        if (m->initiator) {
            m->state = MSS_WAIT_ANSWER;
            return 0;
        }
        m->state = MSS_WAIT_PROPOSAL;
        return queue_str(m, DC_MSS_PROTOCOL_ID);
    case MSS_WAIT_ANSWER:
        if (text_is(text, n, m->protos[m->next])) {
            m->chosen = m->protos[m->next];
            return 1;
        }
        if (!text_is(text, n, "na"))
            return DC_EPROTO;
        if (++m->next == m->n_protos)
            return DC_EPROTO; /* the peer refused every protocol we speak */
        return queue_str(m, m->protos[m->next]);
    case MSS_WAIT_PROPOSAL:
        if (++m->n_proposals > DC_MSS_MAX_PROPOSALS)
            return DC_ELIMIT;
        if (text_is(text, n, "ls"))
            return queue_ls(m);
        for (size_t i = 0; i < m->n_protos; i++) {
            if (text_is(text, n, m->protos[i])) {
                int rc = queue_str(m, m->protos[i]);

                if (rc < 0)
                    return rc;
                m->chosen = m->protos[i];
                return 1;
            }
        }
        return queue_str(m, "na");
    default:
        return DC_ESTATE;
    }
}

int dc_mss_feed(struct dc_mss *m, const uint8_t *in, size_t len, size_t *used)
{
    size_t pos = 0;
    int rc;

    *used = 0;
    if (m->state == MSS_DONE || m->state == MSS_FAILED)
        return DC_ESTATE;
    while (pos < len) {
        if (!m->have_len) {
            uint64_t v;
            size_t u;

            m->len_bytes[m->len_got++] = in[pos++];
            rc = dc_varint_decode(m->len_bytes, m->len_got, &v, &u);
            if (rc == DC_ETRUNCATED) {
                /* A continuation after two bytes means >= 2^14: over the limit already. */
                if (m->len_got >= 2) {
                    rc = DC_ELIMIT;
                    goto fail;
                }
                continue;
            }
            if (rc < 0 || v == 0) {
                rc = DC_ECORRUPT;
                goto fail;
            }
            if (v > DC_MSS_MAX_MESSAGE) {
                rc = DC_ELIMIT;
                goto fail;
            }
            m->have_len = true;
            m->msg_len = (size_t)v;
            m->msg_got = 0;
            continue;
        }
        size_t take = m->msg_len - m->msg_got;
        if (take > len - pos)
            take = len - pos;
        memcpy(m->msg + m->msg_got, in + pos, take);
        m->msg_got += take;
        pos += take;
        if (m->msg_got < m->msg_len)
            break;
        m->have_len = false;
        m->len_got = 0;
        rc = handle_message(m);
        if (rc < 0)
            goto fail;
        if (rc == 1) {
            m->state = MSS_DONE;
            *used = pos;
            return 1;
        }
    }
    *used = pos;
    return 0;

fail:
    m->state = MSS_FAILED;
    *used = pos;
    return rc;
}

const uint8_t *dc_mss_output(const struct dc_mss *m, size_t *len)
{
    *len = m->out.len;
    return m->out.data;
}

void dc_mss_output_consume(struct dc_mss *m, size_t n)
{
    dc_buf_consume(&m->out, n);
}

const char *dc_mss_protocol(const struct dc_mss *m)
{
    return m->chosen;
}

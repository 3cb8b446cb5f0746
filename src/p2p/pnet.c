/* SPDX-License-Identifier: MIT */
/*
 * pnet.c - libp2p private networks: the PSK file parser and the XSalsa20 stream cipher that
 * wraps the whole connection. The cipher is a pure key stream, so it works in place on any
 * split of the byte stream; the key-stream position is kept per direction and libsodium's
 * block-counter variant (crypto_stream_xsalsa20_xor_ic) resumes at any 64-byte block, with
 * one extra block computed when a chunk starts mid-block.
 */
#include "p2p/p2p.h"

#include <sodium.h>
#include <string.h>

#include "base/multibase.h"

#define PNET_HEADER  "/key/swarm/psk/1.0.0/"
#define XSALSA_BLOCK 64

/* Returns the next line of text[*pos..len) without its "\n" and trailing '\r'/spaces. */
static const char *next_line(const char *text, size_t len, size_t *pos, size_t *line_len)
{
    const char *start = text + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    size_t n = nl != NULL ? (size_t)(nl - start) : len - *pos;

    *pos += n + (nl != NULL ? 1 : 0);
    while (n > 0 && (start[n - 1] == '\r' || start[n - 1] == ' ' || start[n - 1] == '\t'))
        n--;
    *line_len = n;
    return start;
}

static bool line_is(const char *line, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(line, s, n) == 0;
}

int dc_pnet_psk_parse(const char *text, size_t len, uint8_t key[DC_PNET_KEY_LEN])
{
    size_t pos = 0, n;
    const char *line;
    uint8_t tmp[DC_PNET_KEY_LEN];
    int rc;

    line = next_line(text, len, &pos, &n);
    if (!line_is(line, n, PNET_HEADER))
        return DC_ECORRUPT;
    line = next_line(text, len, &pos, &n);
    if (line_is(line, n, "/base64/") || line_is(line, n, "/bin/"))
        return DC_EUNSUPPORTED;
    if (!line_is(line, n, "/base16/"))
        return DC_ECORRUPT;
    line = next_line(text, len, &pos, &n);
    if (n != 2 * DC_PNET_KEY_LEN)
        return DC_ECORRUPT;
    /* Only blank lines may follow the key. */
    for (size_t i = pos; i < len; i++)
        if (text[i] != '\n' && text[i] != '\r' && text[i] != ' ' && text[i] != '\t')
            return DC_ECORRUPT;
    rc = dc_base16_decode(line, n, tmp, sizeof(tmp));
    if (rc != DC_PNET_KEY_LEN) {
        sodium_memzero(tmp, sizeof(tmp));
        return DC_ECORRUPT;
    }
    memcpy(key, tmp, sizeof(tmp));
    sodium_memzero(tmp, sizeof(tmp));
    return 0;
}

void dc_pnet_init(struct dc_pnet *p, const uint8_t key[DC_PNET_KEY_LEN], const uint8_t *local_nonce)
{
    memset(p, 0, sizeof(*p));
    memcpy(p->key, key, DC_PNET_KEY_LEN);
    if (local_nonce != NULL) {
        memcpy(p->local_nonce, local_nonce, DC_PNET_NONCE_LEN);
    } else {
        /* Safe to call repeatedly; randombytes works even if initialisation reports failure. */
        (void)!sodium_init();
        randombytes_buf(p->local_nonce, DC_PNET_NONCE_LEN);
    }
}

void dc_pnet_cleanup(struct dc_pnet *p)
{
    sodium_memzero(p, sizeof(*p));
}

/* XORs buf with the key stream of (key, nonce) starting at byte '*offset'. */
static void xor_stream(const uint8_t *key, const uint8_t *nonce, uint64_t *offset, uint8_t *buf,
                       size_t len)
{
    uint64_t off = *offset;
    size_t in_block = (size_t)(off % XSALSA_BLOCK);

    if (in_block != 0 && len > 0) {
        uint8_t ks[XSALSA_BLOCK] = {0};
        size_t n = XSALSA_BLOCK - in_block;

        if (n > len)
            n = len;
        crypto_stream_xsalsa20_xor_ic(ks, ks, sizeof(ks), nonce, off / XSALSA_BLOCK, key);
        for (size_t i = 0; i < n; i++)
            buf[i] ^= ks[in_block + i];
        sodium_memzero(ks, sizeof(ks));
        buf += n;
        len -= n;
        off += n;
    }
    if (len > 0) {
        crypto_stream_xsalsa20_xor_ic(buf, buf, len, nonce, off / XSALSA_BLOCK, key);
        off += len;
    }
    *offset = off;
}

void dc_pnet_encrypt(struct dc_pnet *p, uint8_t *buf, size_t len)
{
    xor_stream(p->key, p->local_nonce, &p->tx_offset, buf, len);
}

void dc_pnet_decrypt(struct dc_pnet *p, uint8_t *buf, size_t len, size_t *skip)
{
    size_t n = 0;

    if (p->remote_nonce_len < DC_PNET_NONCE_LEN) {
        n = DC_PNET_NONCE_LEN - p->remote_nonce_len;
        if (n > len)
            n = len;
        memcpy(p->remote_nonce + p->remote_nonce_len, buf, n);
        p->remote_nonce_len += n;
    }
    if (skip != NULL)
        *skip = n;
    xor_stream(p->key, p->remote_nonce, &p->rx_offset, buf + n, len - n);
}

/* SPDX-License-Identifier: MIT */
/*
 * multibase.c - base58btc, RFC 4648 base32 (lower case, unpadded), base16, and the multibase
 * prefix dispatch, written from the multibase and RFC 4648 texts.
 *
 * No function allocates: base58, which needs a big-number work area, does its arithmetic in the
 * caller's output buffer, so the capacity check and the work space are the same thing and a
 * too-small buffer is found before any byte past 'cap' is touched. base58 is quadratic in the
 * input length; callers that take text from a peer bound it first (PeerIds are <= 128 chars).
 * Every encoder NUL-terminates; on failure the output holds an empty string (encoders) or
 * unspecified bytes (decoders).
 */
#include "base/multibase.h"

#include <limits.h>
#include <string.h>

static const char b58_alphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
static const char b32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char b16_alphabet[] = "0123456789abcdef";

/* Results are returned as int, so no buffer larger than INT_MAX is ever needed or used. */
static size_t clamp_cap(size_t cap)
{
    return cap > (size_t)INT_MAX ? (size_t)INT_MAX : cap;
}

/* Value of a base58btc character, or -1. */
static int b58_value(unsigned char c)
{
    const char *p;

    if (c == '\0')
        return -1;
    p = memchr(b58_alphabet, c, sizeof(b58_alphabet) - 1);
    return p == NULL ? -1 : (int)(p - b58_alphabet);
}

/* Value of an RFC 4648 base32 character in either case, or -1. */
static int b32_value(unsigned char c)
{
    if (c >= 'a' && c <= 'z')
        return c - 'a';
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= '2' && c <= '7')
        return c - '2' + 26;
    return -1;
}

static int b16_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void reverse_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n / 2; i++) {
        uint8_t t = p[i];

        p[i] = p[n - 1 - i];
        p[n - 1 - i] = t;
    }
}

int dc_base58_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    uint8_t *digits = (uint8_t *)out;
    size_t zeros = 0, ndigits = 0;

    cap = clamp_cap(cap);
    if (cap == 0)
        return DC_ELIMIT;
    /* Each leading zero byte is one leading '1' (base58btc keeps them, the number drops them). */
    while (zeros < len && in[zeros] == 0)
        zeros++;
    if (zeros >= cap)
        goto err_limit;
    /*
     * The rest is a big-endian number; keep it as little-endian base-58 digits in out[] and
     * multiply by 256 and add each byte. The digits must leave room for the '1's and the NUL.
     */
    for (size_t i = zeros; i < len; i++) {
        unsigned carry = in[i];

        for (size_t j = 0; j < ndigits; j++) {
            carry += (unsigned)digits[j] << 8;
            digits[j] = (uint8_t)(carry % 58);
            carry /= 58;
        }
        while (carry > 0) {
            if (zeros + ndigits + 1 >= cap)
                goto err_limit;
            digits[ndigits++] = (uint8_t)(carry % 58);
            carry /= 58;
        }
    }
    reverse_bytes(digits, ndigits);
    memmove(out + zeros, digits, ndigits);
    memset(out, '1', zeros);
    for (size_t j = zeros; j < zeros + ndigits; j++)
        out[j] = b58_alphabet[(uint8_t)out[j]];
    out[zeros + ndigits] = '\0';
    return (int)(zeros + ndigits);

err_limit:
    out[0] = '\0';
    return DC_ELIMIT;
}

int dc_base58_decode(const char *s, size_t slen, uint8_t *out, size_t cap)
{
    size_t ones = 0, nbytes = 0;

    cap = clamp_cap(cap);
    while (ones < slen && s[ones] == '1')
        ones++;
    /* Validate the alphabet first so bad text is DC_ECORRUPT whatever the capacity. */
    for (size_t i = ones; i < slen; i++) {
        if (b58_value((unsigned char)s[i]) < 0)
            return DC_ECORRUPT;
    }
    if (ones > cap)
        return DC_ELIMIT;
    /* Little-endian base-256 accumulator in out[]: multiply by 58, add the digit. */
    for (size_t i = ones; i < slen; i++) {
        unsigned carry = (unsigned)b58_value((unsigned char)s[i]);

        for (size_t j = 0; j < nbytes; j++) {
            carry += (unsigned)out[j] * 58;
            out[j] = (uint8_t)carry;
            carry >>= 8;
        }
        while (carry > 0) {
            if (ones + nbytes >= cap)
                return DC_ELIMIT;
            out[nbytes++] = (uint8_t)carry;
            carry >>= 8;
        }
    }
    reverse_bytes(out, nbytes);
    memmove(out + ones, out, nbytes);
    memset(out, 0, ones);
    return (int)(ones + nbytes);
}

/* Characters of unpadded base32 for 'len' bytes, or SIZE_MAX when that overflows. */
static size_t b32_encoded_len(size_t len)
{
    size_t groups = len / 5, rest = len % 5;

    if (groups > (SIZE_MAX - 8) / 8)
        return SIZE_MAX;
    return groups * 8 + (rest * 8 + 4) / 5;
}

int dc_base32_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t need = b32_encoded_len(len), o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    cap = clamp_cap(cap);
    if (cap == 0)
        return DC_ELIMIT;
    if (need >= cap) {
        out[0] = '\0';
        return DC_ELIMIT;
    }
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = b32_alphabet[(acc >> bits) & 31];
        }
    }
    if (bits > 0)
        out[o++] = b32_alphabet[(acc << (5 - bits)) & 31];
    out[o] = '\0';
    return (int)o;
}

int dc_base32_decode(const char *s, size_t slen, uint8_t *out, size_t cap)
{
    size_t need, o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    cap = clamp_cap(cap);
    /*
     * Unpadded base32 text is 8 characters per 5 bytes; a final group of 1, 3 or 6 characters
     * cannot come from whole bytes.
     */
    switch (slen % 8) {
    case 1:
    case 3:
    case 6:
        return DC_ECORRUPT;
    default:
        break;
    }
    need = slen / 8 * 5 + (slen % 8) * 5 / 8;
    for (size_t i = 0; i < slen; i++) {
        if (b32_value((unsigned char)s[i]) < 0)
            return DC_ECORRUPT;
    }
    if (need > cap)
        return DC_ELIMIT;
    for (size_t i = 0; i < slen; i++) {
        acc = (acc << 5) | (uint32_t)b32_value((unsigned char)s[i]);
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* The padding bits of the last character must be zero, or two texts would mean one value. */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return DC_ECORRUPT;
    return (int)o;
}

int dc_base16_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    cap = clamp_cap(cap);
    if (cap == 0)
        return DC_ELIMIT;
    if (len > (cap - 1) / 2) {
        out[0] = '\0';
        return DC_ELIMIT;
    }
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = b16_alphabet[in[i] >> 4];
        out[2 * i + 1] = b16_alphabet[in[i] & 15];
    }
    out[2 * len] = '\0';
    return (int)(2 * len);
}

int dc_base16_decode(const char *s, size_t slen, uint8_t *out, size_t cap)
{
    cap = clamp_cap(cap);
    if (slen % 2 != 0)
        return DC_ECORRUPT;
    for (size_t i = 0; i < slen; i++) {
        if (b16_value((unsigned char)s[i]) < 0)
            return DC_ECORRUPT;
    }
    if (slen / 2 > cap)
        return DC_ELIMIT;
    for (size_t i = 0; i < slen / 2; i++)
        out[i] = (uint8_t)(b16_value((unsigned char)s[2 * i]) << 4 |
                           b16_value((unsigned char)s[2 * i + 1]));
    return (int)(slen / 2);
}

int dc_multibase_encode(char base, const uint8_t *in, size_t len, char *out, size_t cap)
{
    int rc;

    cap = clamp_cap(cap);
    if (cap < 2) {
        if (cap == 1)
            out[0] = '\0';
        return DC_ELIMIT;
    }
    switch (base) {
    case DC_MULTIBASE_BASE58BTC:
        rc = dc_base58_encode(in, len, out + 1, cap - 1);
        break;
    case DC_MULTIBASE_BASE32:
        rc = dc_base32_encode(in, len, out + 1, cap - 1);
        break;
    case DC_MULTIBASE_BASE16:
        rc = dc_base16_encode(in, len, out + 1, cap - 1);
        break;
    default:
        out[0] = '\0';
        return DC_EUNSUPPORTED;
    }
    if (rc < 0) {
        out[0] = '\0';
        return rc;
    }
    out[0] = base;
    return rc + 1;
}

int dc_multibase_decode(const char *s, uint8_t *out, size_t cap)
{
    size_t slen;

    if (s[0] == '\0')
        return DC_ECORRUPT;
    slen = strlen(s + 1);
    switch (s[0]) {
    case 'z':
        return dc_base58_decode(s + 1, slen, out, cap);
    case 'b':
    case 'B':
        /* The upper-case prefix names the upper-case alphabet; we accept either case. */
        return dc_base32_decode(s + 1, slen, out, cap);
    case 'f':
    case 'F':
        return dc_base16_decode(s + 1, slen, out, cap);
    default:
        return DC_EUNSUPPORTED;
    }
}

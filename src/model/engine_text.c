/* SPDX-License-Identifier: MIT */
/*
 * engine_text.c - the engine's text plumbing, free of llama.cpp state so the unit test can
 * drive it directly: UTF-8 completion of detokenized bytes (a token may end in the middle of
 * a character; we never release half of one), the stop-string scan that holds back text which
 * may still become a stop string, the longest-common-prefix used for prefix reuse, and the
 * built-in JSON grammar.
 */
#include <string.h>

#include "model/engine_int.h"

/*
 * One JSON object. Whitespace is bounded (a free-running model could otherwise emit spaces
 * forever inside a valid prefix); strings exclude control characters as RFC 8259 requires.
 */
const char dc_engine_json_gbnf[] =
    "root ::= object\n"
    "value ::= object | array | string | number | (\"true\" | \"false\" | \"null\")\n"
    "object ::= \"{\" ws ( string ws \":\" ws value ws ( \",\" ws string ws \":\" ws value ws "
    ")* )? \"}\"\n"
    "array ::= \"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\"\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" "
    "[0-9a-fA-F]{4} ) )* \"\\\"\"\n"
    "number ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,15} ) ( \".\" [0-9]{1,16} )? "
    "( [eE] [-+]? [0-9]{1,3} )?\n"
    "ws ::= [ \\t\\n]{0,8}\n";

static const uint8_t replacement[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */

/* Length of the UTF-8 sequence a lead byte starts, or 0 for a byte that cannot lead. */
static size_t utf8_len(uint8_t c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

/* Whether p[1..n) continue a valid sequence led by p[0] (n = utf8_len(p[0])); checks the
 * overlong and surrogate ranges of the second byte as RFC 3629 does. 'have' bytes exist. */
static bool utf8_valid_prefix(const uint8_t *p, size_t n, size_t have)
{
    for (size_t i = 1; i < n && i < have; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return false;
    }
    if (have >= 2) {
        if (p[0] == 0xE0 && p[1] < 0xA0)
            return false;
        if (p[0] == 0xED && p[1] > 0x9F)
            return false;
        if (p[0] == 0xF0 && p[1] < 0x90)
            return false;
        if (p[0] == 0xF4 && p[1] > 0x8F)
            return false;
    }
    return true;
}

int dc_engine_utf8_take(uint8_t *raw, size_t *n_raw, bool final, struct dc_buf *out)
{
    size_t n = *n_raw, i = 0, start = 0;
    int rc;

    while (i < n) {
        size_t len = utf8_len(raw[i]);
        size_t have = n - i;

        if (len != 0 && utf8_valid_prefix(raw + i, len, have)) {
            if (have < len) {
                if (!final)
                    break; /* wait for the rest of the character */
            } else {
                i += len;
                continue;
            }
        }
        /* raw[i] is invalid (or an unfinished character at the very end): flush the valid run
         * before it and write U+FFFD for the one byte. */
        rc = dc_buf_append(out, raw + start, i - start);
        if (rc == 0)
            rc = dc_buf_append(out, replacement, sizeof(replacement));
        if (rc < 0)
            return rc;
        i++;
        if (final && len != 0 && have < len)
            i = n; /* the unfinished character becomes one replacement */
        start = i;
    }
    rc = dc_buf_append(out, raw + start, i - start);
    if (rc < 0)
        return rc;
    memmove(raw, raw + i, n - i);
    *n_raw = n - i;
    return 0;
}

size_t dc_engine_utf8_clean(const char *in, size_t n, char *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)in;
    size_t i = 0, o = 0;

    while (i < n) {
        size_t len = utf8_len(p[i]);
        bool ok = len != 0 && i + len <= n && utf8_valid_prefix(p + i, len, len);
        const uint8_t *src = ok ? p + i : replacement;
        size_t w = ok ? len : sizeof(replacement);

        if (o + w + 1 > cap)
            break;
        memcpy(out + o, src, w);
        o += w;
        i += ok ? len : 1;
    }
    if (cap > 0)
        out[o] = '\0';
    return o;
}

size_t dc_engine_stop_scan(const char *t, size_t n, char *const *stop, const size_t *stop_len,
                           size_t n_stop, bool *matched)
{
    size_t best = n, hold = 0;

    *matched = false;
    for (size_t k = 0; k < n_stop; k++) {
        const char *hit =
            stop_len[k] > 0 && stop_len[k] <= n ? memmem(t, n, stop[k], stop_len[k]) : NULL;
        if (hit != NULL && (size_t)(hit - t) < best) {
            best = (size_t)(hit - t);
            *matched = true;
        }
    }
    if (*matched)
        return best;
    /* The longest suffix of t that is a proper prefix of a stop string. */
    for (size_t k = 0; k < n_stop; k++) {
        if (stop_len[k] == 0)
            continue;
        size_t max = stop_len[k] - 1 < n ? stop_len[k] - 1 : n;
        for (size_t l = max; l > hold; l--) {
            if (memcmp(t + n - l, stop[k], l) == 0) {
                hold = l;
                break;
            }
        }
    }
    return n - hold;
}

size_t dc_engine_lcp(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t n = na < nb ? na : nb, i = 0;

    while (i < n && a[i] == b[i])
        i++;
    return i;
}

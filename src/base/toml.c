/* SPDX-License-Identifier: MIT */
/*
 * toml.c - the TOML 1.0.0 decoder behind toml.h, written from the specification.
 *
 * Map of the file:
 *   values      - the tree: one struct per value, tables as an insertion-ordered entry array
 *                 plus an open-addressing hash index once they grow past a few keys.
 *   errors      - the parser records the first error with its byte offset; line and column are
 *                 computed from the offset only when an error is reported.
 *   lexing      - whitespace, newlines, comments, UTF-8 validation.
 *   strings     - the four string forms, decoded into a scratch buffer owned by the parser.
 *   scalars     - integers, floats, booleans and the four date/time forms.
 *   keys        - bare, quoted and dotted keys, and the rules for which tables a dotted key or a
 *                 [header] may open, create or extend.
 *   parse       - arrays, inline tables, key/value lines, headers and the document loop.
 *
 * Table "kinds" carry the spec's redefinition rules. A table is IMPLICIT when a [header] or
 * [[header]] created it only as a parent (it may be defined once later by its own header),
 * HEADER when a header defined it (or it is an element of an array of tables), DOTTED when a
 * dotted key created it, INLINE when it was written as { ... } (frozen). Dotted keys may only
 * walk into DOTTED tables; headers may walk through anything except INLINE tables and static
 * arrays, and may only define a table that is missing or IMPLICIT.
 *
 * Ownership during parsing: every value is either attached to the tree that the root owns or
 * held by exactly one local that frees it on the error path, so any failure (including each
 * allocation failure) unwinds by freeing the root.
 */
#include "base/toml.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- values ---------------------------------------------------------------------------- */

enum toml_kind {
    TK_IMPLICIT, /* table created as the parent in a [header]; may still be defined */
    TK_HEADER,   /* table defined by [header], array-of-tables element, or the root */
    TK_DOTTED,   /* table created by a dotted key */
    TK_INLINE,   /* inline table { ... }: frozen */
    TK_STATIC,   /* array written as [ ... ]: frozen */
    TK_AOT,      /* array of tables built by [[header]] */
};

/* Below this many entries a table is searched linearly and has no hash index. */
#define TOML_INDEX_MIN 8

struct toml_entry {
    char *key; /* owned, NUL-terminated, may contain NUL bytes */
    size_t key_len;
    uint32_t hash;
    struct dc_toml_value *val; /* owned */
};

struct dc_toml_value {
    enum dc_toml_type type;
    unsigned line;
    uint8_t kind;   /* enum toml_kind for tables and arrays */
    uint16_t depth; /* containers: 0 for the root, parent + 1 below */
    union {
        struct {
            char *s;
            size_t len;
        } str;
        int64_t i;
        double f;
        bool b;
        struct dc_toml_datetime dt;
        struct {
            struct dc_toml_value **items;
            size_t len, cap;
        } arr;
        struct {
            struct toml_entry *ent;
            size_t len, cap;
            uint32_t *idx; /* slots hold entry index + 1; 0 is empty; NULL below the minimum */
            size_t idx_cap;
        } tab;
    } u;
};

static void value_free(struct dc_toml_value *v)
{
    size_t i;

    if (v == NULL)
        return;
    switch (v->type) {
    case DC_TOML_STRING:
        dc_free(v->u.str.s);
        break;
    case DC_TOML_ARRAY:
        for (i = 0; i < v->u.arr.len; i++)
            value_free(v->u.arr.items[i]);
        dc_free(v->u.arr.items);
        break;
    case DC_TOML_TABLE:
        for (i = 0; i < v->u.tab.len; i++) {
            dc_free(v->u.tab.ent[i].key);
            value_free(v->u.tab.ent[i].val);
        }
        dc_free(v->u.tab.ent);
        dc_free(v->u.tab.idx);
        break;
    default:
        break;
    }
    dc_free(v);
}

static struct dc_toml_value *value_new(enum dc_toml_type type, unsigned line)
{
    struct dc_toml_value *v = dc_calloc(1, sizeof(*v));

    if (v != NULL) {
        v->type = type;
        v->line = line;
    }
    return v;
}

/* FNV-1a: cheap and good enough for config keys. */
static uint32_t key_hash(const char *k, size_t n)
{
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (uint8_t)k[i];
        h *= 16777619u;
    }
    return h;
}

static struct toml_entry *table_find(const struct dc_toml_value *t, const char *k, size_t n)
{
    size_t i, mask;
    uint32_t h;

    if (t->u.tab.idx == NULL) {
        for (i = 0; i < t->u.tab.len; i++) {
            struct toml_entry *e = &t->u.tab.ent[i];

            if (e->key_len == n && memcmp(e->key, k, n) == 0)
                return e;
        }
        return NULL;
    }
    h = key_hash(k, n);
    mask = t->u.tab.idx_cap - 1;
    for (i = h & mask; t->u.tab.idx[i] != 0; i = (i + 1) & mask) {
        struct toml_entry *e = &t->u.tab.ent[t->u.tab.idx[i] - 1];

        if (e->hash == h && e->key_len == n && memcmp(e->key, k, n) == 0)
            return e;
    }
    return NULL;
}

static void index_put(uint32_t *idx, size_t cap, uint32_t h, uint32_t slot)
{
    size_t i, mask = cap - 1;

    for (i = h & mask; idx[i] != 0; i = (i + 1) & mask)
        ;
    idx[i] = slot;
}

/* Adds 'key' (owned, 'n' bytes) -> 'val' to table 't'. The caller has checked that the key is
 * absent. On success the table owns both; on DC_ENOMEM the caller still does. */
static int table_add(struct dc_toml_value *t, char *key, size_t n, struct dc_toml_value *val)
{
    size_t len = t->u.tab.len;
    struct toml_entry *e;
    uint32_t h = key_hash(key, n);

    if (len == t->u.tab.cap) {
        size_t cap = t->u.tab.cap == 0 ? 4 : t->u.tab.cap * 2;

        e = dc_realloc(t->u.tab.ent, cap * sizeof(*e));
        if (e == NULL)
            return DC_ENOMEM;
        t->u.tab.ent = e;
        t->u.tab.cap = cap;
    }
    if (len + 1 >= TOML_INDEX_MIN && (len + 1) * 2 > t->u.tab.idx_cap) {
        size_t cap = t->u.tab.idx_cap == 0 ? 32 : t->u.tab.idx_cap * 2;
        uint32_t *idx = dc_calloc(cap, sizeof(*idx));
        size_t i;

        if (idx == NULL)
            return DC_ENOMEM;
        for (i = 0; i < len; i++)
            index_put(idx, cap, t->u.tab.ent[i].hash, (uint32_t)(i + 1));
        dc_free(t->u.tab.idx);
        t->u.tab.idx = idx;
        t->u.tab.idx_cap = cap;
    }
    e = &t->u.tab.ent[len];
    e->key = key;
    e->key_len = n;
    e->hash = h;
    e->val = val;
    if (t->u.tab.idx != NULL)
        index_put(t->u.tab.idx, t->u.tab.idx_cap, h, (uint32_t)(len + 1));
    t->u.tab.len = len + 1;
    return 0;
}

/* Appends 'val' to array 'a'. On DC_ENOMEM the caller still owns 'val'. */
static int array_add(struct dc_toml_value *a, struct dc_toml_value *val)
{
    if (a->u.arr.len == a->u.arr.cap) {
        size_t cap = a->u.arr.cap == 0 ? 4 : a->u.arr.cap * 2;
        struct dc_toml_value **items = dc_realloc(a->u.arr.items, cap * sizeof(*items));

        if (items == NULL)
            return DC_ENOMEM;
        a->u.arr.items = items;
        a->u.arr.cap = cap;
    }
    a->u.arr.items[a->u.arr.len++] = val;
    return 0;
}

/* ---- parser state and errors ------------------------------------------------------------ */

struct key_part {
    size_t off; /* into parser->keybuf */
    size_t len;
    size_t pos; /* input offset of the part, for error messages */
};

struct toml_parser {
    const char *s;
    size_t len;
    size_t pos;
    unsigned line; /* line of 'pos', kept current as newlines are consumed */
    struct dc_toml_error *err;
    bool err_set;
    struct dc_buf scratch; /* decoded string or number being read */
    struct dc_buf keybuf;  /* bytes of the key parts being read */
    struct key_part parts[DC_TOML_MAX_DEPTH + 1];
    size_t n_parts;
};

static void set_error_at(struct toml_parser *p, size_t pos, const char *msg)
{
    unsigned line = 1, col = 1;
    size_t i;

    if (p->err_set)
        return;
    p->err_set = true;
    if (p->err == NULL)
        return;
    if (pos > p->len)
        pos = p->len;
    /* A leading byte order mark is not a character of the first line. */
    i = pos >= 3 && memcmp(p->s, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    for (; i < pos; i++) {
        uint8_t c = (uint8_t)p->s[i];

        if (c == '\n') {
            line++;
            col = 1;
        } else if ((c & 0xc0) != 0x80) {
            col++;
        }
    }
    p->err->line = line;
    p->err->column = col;
    snprintf(p->err->message, sizeof(p->err->message), "%s", msg);
}

/* Records a DC_ECORRUPT (or 'rc') error at input offset 'pos' and returns 'rc'. */
static int fail_rc(struct toml_parser *p, size_t pos, int rc, const char *fmt, ...) DC_PRINTF(4, 5);

static int fail_rc(struct toml_parser *p, size_t pos, int rc, const char *fmt, ...)
{
    char msg[sizeof(((struct dc_toml_error *)0)->message)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    set_error_at(p, pos, msg);
    return rc;
}

#define fail(p, pos, ...) fail_rc((p), (pos), DC_ECORRUPT, __VA_ARGS__)

/* Writes a printable, shortened rendering of 'n' bytes of 'k' (valid UTF-8) into 'out' for
 * messages; 'cap' >= 4. Only whole characters are copied, so the message stays valid UTF-8. */
static void show_bytes(char *out, size_t cap, const char *k, size_t n)
{
    size_t o = 0, i = 0;

    while (i < n) {
        uint8_t c = (uint8_t)k[i];
        size_t clen = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;

        if (clen > n - i)
            clen = n - i;
        if (o + clen + 4 > cap)
            break;
        if (clen == 1) {
            out[o++] = (c < 0x20 || c == 0x7f || c == '\'') ? '?' : (char)c;
        } else {
            memcpy(out + o, k + i, clen);
            o += clen;
        }
        i += clen;
    }
    if (i < n) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Renders the first 'n' parts of the current key as a.b.c for messages. */
static const char *show_key(struct toml_parser *p, size_t n, char *out, size_t cap)
{
    size_t o = 0, i;

    out[0] = '\0';
    for (i = 0; i < n && o + 8 < cap; i++) {
        const struct key_part *kp = &p->parts[i];

        if (i > 0)
            out[o++] = '.';
        show_bytes(out + o, cap - o, (const char *)p->keybuf.data + kp->off, kp->len);
        o += strlen(out + o);
    }
    return out;
}

static const char *char_desc(struct toml_parser *p, size_t pos, char *out, size_t cap)
{
    uint8_t c;

    if (pos >= p->len)
        return "end of input";
    c = (uint8_t)p->s[pos];
    if (c == '\n')
        return "newline";
    if (c < 0x20 || c == 0x7f)
        snprintf(out, cap, "control character U+%04X", c);
    else if (c >= 0x80)
        snprintf(out, cap, "non-ASCII character");
    else
        snprintf(out, cap, "'%c'", c);
    return out;
}

static int fail_unexpected(struct toml_parser *p, const char *what)
{
    char buf[48];

    return fail(p, p->pos, "expected %s, found %s", what, char_desc(p, p->pos, buf, sizeof(buf)));
}

/* ---- lexing ----------------------------------------------------------------------------- */

static int peek_at(const struct toml_parser *p, size_t off)
{
    return p->pos + off < p->len ? (uint8_t)p->s[p->pos + off] : -1;
}

static int peek(const struct toml_parser *p)
{
    return peek_at(p, 0);
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_bare_key_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '-';
}

/* Returns the byte length of the valid UTF-8 sequence at s[0..n) or 0 when it is invalid
 * (truncated, overlong, surrogate or above U+10FFFF). */
static size_t utf8_seq_len(const uint8_t *s, size_t n)
{
    uint32_t cp;
    size_t len, i;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int check_utf8(struct toml_parser *p)
{
    const uint8_t *s = (const uint8_t *)p->s;
    size_t i = 0;

    while (i < p->len) {
        size_t n;

        if (s[i] < 0x80) {
            i++;
            continue;
        }
        n = utf8_seq_len(s + i, p->len - i);
        if (n == 0)
            return fail(p, i, "invalid UTF-8 byte 0x%02X", s[i]);
        i += n;
    }
    return 0;
}

static void skip_ws(struct toml_parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'))
        p->pos++;
}

/* Consumes one newline (LF or CRLF) if there is one. Returns 1 when consumed, 0 when the next
 * byte is no newline, or an error for a lone CR. */
static int eat_newline(struct toml_parser *p)
{
    int c = peek(p);

    if (c == '\n') {
        p->pos++;
        p->line++;
        return 1;
    }
    if (c == '\r') {
        if (peek_at(p, 1) != '\n')
            return fail(p, p->pos, "carriage return not followed by line feed");
        p->pos += 2;
        p->line++;
        return 1;
    }
    return 0;
}

/* Skips a comment starting at '#' up to (not including) its newline. */
static int skip_comment(struct toml_parser *p)
{
    p->pos++;
    while (p->pos < p->len) {
        uint8_t c = (uint8_t)p->s[p->pos];

        if (c == '\n' || (c == '\r' && peek_at(p, 1) == '\n'))
            return 0;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(p, p->pos, "control character U+%04X in comment", c);
        p->pos++;
    }
    return 0;
}

/* Skips whitespace, newlines and comments (inside arrays). */
static int skip_ws_nl(struct toml_parser *p)
{
    int rc;

    for (;;) {
        skip_ws(p);
        if (peek(p) == '#') {
            rc = skip_comment(p);
            if (rc < 0)
                return rc;
        }
        rc = eat_newline(p);
        if (rc <= 0)
            return rc;
    }
}

/* After a key/value pair or header: optional whitespace and comment, then newline or EOF. */
static int end_of_line(struct toml_parser *p)
{
    int rc;

    skip_ws(p);
    if (peek(p) == '#') {
        rc = skip_comment(p);
        if (rc < 0)
            return rc;
    }
    if (p->pos >= p->len)
        return 0;
    rc = eat_newline(p);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fail_unexpected(p, "newline or end of line");
    return 0;
}

/* ---- strings ---------------------------------------------------------------------------- */

static int put_byte(struct toml_parser *p, uint8_t c)
{
    return dc_buf_append(&p->scratch, &c, 1);
}

static int put_utf8(struct toml_parser *p, uint32_t cp)
{
    uint8_t b[4];
    size_t n;

    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xc0 | (cp >> 6));
        b[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xe0 | (cp >> 12));
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (uint8_t)(0xf0 | (cp >> 18));
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return dc_buf_append(&p->scratch, b, n);
}

static int hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes the escape at p->pos (which is at the backslash) into the scratch buffer. */
static int read_escape(struct toml_parser *p)
{
    size_t start = p->pos;
    int c = peek_at(p, 1);
    uint32_t cp = 0;
    int i, n;
    char buf[48];

    switch (c) {
    case 'b':
        p->pos += 2;
        return put_byte(p, '\b');
    case 't':
        p->pos += 2;
        return put_byte(p, '\t');
    case 'n':
        p->pos += 2;
        return put_byte(p, '\n');
    case 'f':
        p->pos += 2;
        return put_byte(p, '\f');
    case 'r':
        p->pos += 2;
        return put_byte(p, '\r');
    case '"':
        p->pos += 2;
        return put_byte(p, '"');
    case '\\':
        p->pos += 2;
        return put_byte(p, '\\');
    case 'u':
    case 'U':
        n = c == 'u' ? 4 : 8;
        for (i = 0; i < n; i++) {
            int h = hex_val(peek_at(p, 2 + (size_t)i));

            if (h < 0)
                return fail(p, start, "escape \\%c needs %d hexadecimal digits", c, n);
            cp = (cp << 4) | (uint32_t)h;
        }
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return fail(p, start, "escape \\%c%.*s is not a Unicode scalar value", c, n,
                        p->s + start + 2);
        p->pos += 2 + (size_t)n;
        return put_utf8(p, cp);
    default:
        return fail(p, start, "invalid escape sequence: backslash followed by %s",
                    char_desc(p, start + 1, buf, sizeof(buf)));
    }
}

/* Checks one raw byte of string content: tab is the only control character allowed. */
static int check_string_byte(struct toml_parser *p, uint8_t c)
{
    if ((c < 0x20 && c != '\t') || c == 0x7f)
        return fail(p, p->pos, "control character U+%04X in string (use an escape)", c);
    return 0;
}

/* Reads a single-line basic ("...") or literal ('...') string; decoded bytes end up in the
 * scratch buffer. */
static int read_line_string(struct toml_parser *p)
{
    size_t start = p->pos;
    uint8_t q = (uint8_t)p->s[p->pos];
    int rc;

    dc_buf_reset(&p->scratch);
    p->pos++;
    for (;;) {
        uint8_t c;

        if (p->pos >= p->len || p->s[p->pos] == '\n' || p->s[p->pos] == '\r')
            return fail(p, start, "unterminated string");
        c = (uint8_t)p->s[p->pos];
        if (c == q) {
            p->pos++;
            return 0;
        }
        if (c == '\\' && q == '"') {
            rc = read_escape(p);
        } else {
            rc = check_string_byte(p, c);
            if (rc == 0) {
                /* Copy a run of plain bytes at once. */
                size_t end = p->pos + 1;

                while (end < p->len && (uint8_t)p->s[end] >= 0x20 && p->s[end] != (char)q &&
                       p->s[end] != '\\' && p->s[end] != 0x7f)
                    end++;
                rc = dc_buf_append(&p->scratch, p->s + p->pos, end - p->pos);
                p->pos = end;
            }
        }
        if (rc < 0)
            return rc;
    }
}

/* Reads a multi-line basic ("""...""") or literal ('''...''') string at p->pos. */
static int read_ml_string(struct toml_parser *p)
{
    size_t start = p->pos;
    uint8_t q = (uint8_t)p->s[p->pos];
    int rc;

    dc_buf_reset(&p->scratch);
    p->pos += 3;
    /* A newline right after the opening delimiter is trimmed. */
    rc = eat_newline(p);
    if (rc < 0)
        return rc;
    for (;;) {
        uint8_t c;

        if (p->pos >= p->len)
            return fail(p, start, "unterminated multi-line string");
        c = (uint8_t)p->s[p->pos];
        if (c == q) {
            size_t n = 0;

            while (peek_at(p, n) == q)
                n++;
            if (n >= 3) {
                /* Up to two quotes may sit right before the closing delimiter. */
                if (n > 5)
                    return fail(p, p->pos + 5, "too many quotes at end of multi-line string");
                rc = dc_buf_append(&p->scratch, p->s + p->pos, n - 3);
                p->pos += n;
                return rc;
            }
            rc = dc_buf_append(&p->scratch, p->s + p->pos, n);
            p->pos += n;
        } else if (c == '\\' && q == '"') {
            size_t look = p->pos + 1;

            while (look < p->len && (p->s[look] == ' ' || p->s[look] == '\t'))
                look++;
            if (look < p->len && (p->s[look] == '\n' || p->s[look] == '\r')) {
                /* Line-ending backslash: drop it and all whitespace up to the next text. */
                p->pos = look;
                for (;;) {
                    skip_ws(p);
                    rc = eat_newline(p);
                    if (rc <= 0)
                        break;
                }
            } else {
                rc = read_escape(p);
            }
        } else if (c == '\n' || c == '\r') {
            rc = eat_newline(p);
            if (rc > 0)
                rc = put_byte(p, '\n');
        } else {
            rc = check_string_byte(p, c);
            if (rc == 0) {
                rc = put_byte(p, c);
                p->pos++;
            }
        }
        if (rc < 0)
            return rc;
    }
}

/* ---- scalars ---------------------------------------------------------------------------- */

/* Reads digits accepted by 'ok' with single underscores between digits, appending the digits
 * to the scratch buffer. At least one digit is required. */
static int read_digits(struct toml_parser *p, bool (*ok)(int), const char *what)
{
    int rc;

    if (!ok(peek(p)))
        return fail_unexpected(p, what);
    for (;;) {
        int c = peek(p);

        if (ok(c)) {
            rc = put_byte(p, (uint8_t)c);
            if (rc < 0)
                return rc;
            p->pos++;
        } else if (c == '_') {
            if (!ok(peek_at(p, 1)))
                return fail(p, p->pos, "underscore must sit between two digits");
            p->pos++;
        } else {
            return 0;
        }
    }
}

static bool is_hex(int c)
{
    return hex_val(c) >= 0;
}

static bool is_oct(int c)
{
    return c >= '0' && c <= '7';
}

static bool is_bin(int c)
{
    return c == '0' || c == '1';
}

/* Parses 0x / 0o / 0b integers (no sign allowed, leading zeros allowed). */
static int read_prefixed_int(struct toml_parser *p, int64_t *out)
{
    size_t start = p->pos;
    int base = p->s[p->pos + 1] == 'x' ? 16 : p->s[p->pos + 1] == 'o' ? 8 : 2;
    uint64_t v = 0;
    size_t i;
    int rc;

    p->pos += 2;
    dc_buf_reset(&p->scratch);
    rc = read_digits(p,
                     base == 16  ? is_hex
                     : base == 8 ? is_oct
                                 : is_bin,
                     base == 16  ? "hexadecimal digit"
                     : base == 8 ? "octal digit"
                                 : "binary digit");
    if (rc < 0)
        return rc;
    for (i = 0; i < p->scratch.len; i++) {
        if (v > ((uint64_t)INT64_MAX - (uint64_t)hex_val(p->scratch.data[i])) / (uint64_t)base)
            return fail(p, start, "integer does not fit in 64 bits");
        v = v * (uint64_t)base + (uint64_t)hex_val(p->scratch.data[i]);
    }
    *out = (int64_t)v;
    return 0;
}

/* Parses a decimal integer or a float (including inf and nan) at p->pos into 'v'. */
static int read_number(struct toml_parser *p, struct dc_toml_value *v)
{
    size_t start = p->pos, digits_start;
    bool neg = false, is_float = false;
    int c = peek(p), rc;

    dc_buf_reset(&p->scratch);
    if (c == '+' || c == '-') {
        neg = c == '-';
        rc = put_byte(p, (uint8_t)c);
        if (rc < 0)
            return rc;
        p->pos++;
        c = peek(p);
    }
    if (c == 'i' || c == 'n') {
        const char *word = c == 'i' ? "inf" : "nan";

        if (p->len - p->pos < 3 || memcmp(p->s + p->pos, word, 3) != 0)
            return fail(p, start, "invalid value (did you mean '%s'?)", word);
        p->pos += 3;
        v->type = DC_TOML_FLOAT;
        v->u.f = c == 'i' ? (neg ? -INFINITY : INFINITY) : (neg ? -NAN : NAN);
        return 0;
    }
    if (c == '0' && (peek_at(p, 1) == 'x' || peek_at(p, 1) == 'o' || peek_at(p, 1) == 'b')) {
        if (p->pos != start)
            return fail(p, start,
                        "a sign is not allowed on hexadecimal, octal or binary "
                        "integers");
        v->type = DC_TOML_INTEGER;
        return read_prefixed_int(p, &v->u.i);
    }
    digits_start = p->scratch.len;
    rc = read_digits(p, is_digit, "digit");
    if (rc < 0)
        return rc;
    if (p->scratch.data[digits_start] == '0' && p->scratch.len - digits_start > 1)
        return fail(p, start, "leading zeros are not allowed in decimal numbers");
    if (peek(p) == '.') {
        is_float = true;
        p->pos++;
        rc = put_byte(p, '.');
        if (rc == 0)
            rc = read_digits(p, is_digit, "digit after decimal point");
        if (rc < 0)
            return rc;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        is_float = true;
        p->pos++;
        rc = put_byte(p, 'e');
        if (rc == 0 && (peek(p) == '+' || peek(p) == '-')) {
            rc = put_byte(p, (uint8_t)peek(p));
            p->pos++;
        }
        if (rc == 0)
            rc = read_digits(p, is_digit, "digit in exponent");
        if (rc < 0)
            return rc;
    }
    if (is_float) {
        char *end;
        double d = strtod((const char *)p->scratch.data, &end);

        if (isinf(d))
            return fail(p, start, "float is out of range");
        v->type = DC_TOML_FLOAT;
        v->u.f = d;
        return 0;
    }
    {
        uint64_t mag = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        size_t i;

        for (i = digits_start; i < p->scratch.len; i++) {
            uint64_t d = (uint64_t)(p->scratch.data[i] - '0');

            if (mag > (lim - d) / 10)
                return fail(p, start, "integer does not fit in 64 bits");
            mag = mag * 10 + d;
        }
        v->type = DC_TOML_INTEGER;
        v->u.i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    }
    return 0;
}

/* Reads exactly 'n' ASCII digits as a number; -1 when they are not all digits. */
static int fixed_digits(struct toml_parser *p, size_t off, int n)
{
    int v = 0, i;

    for (i = 0; i < n; i++) {
        int c = peek_at(p, off + (size_t)i);

        if (!is_digit(c))
            return -1;
        v = v * 10 + (c - '0');
    }
    return v;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Does the input at p->pos look like HH: (the start of a time)? */
static bool looks_like_time(struct toml_parser *p, size_t off)
{
    return is_digit(peek_at(p, off)) && is_digit(peek_at(p, off + 1)) && peek_at(p, off + 2) == ':';
}

/* Reads HH:MM:SS[.frac] at p->pos. */
static int read_time(struct toml_parser *p, struct dc_toml_datetime *dt)
{
    size_t start = p->pos;
    int h = fixed_digits(p, 0, 2), m, s;

    if (h < 0 || peek_at(p, 2) != ':')
        return fail(p, start, "malformed time (expected HH:MM:SS)");
    m = fixed_digits(p, 3, 2);
    if (m < 0 || peek_at(p, 5) != ':')
        return fail(p, start, "malformed time (expected HH:MM:SS; seconds are required)");
    s = fixed_digits(p, 6, 2);
    if (s < 0)
        return fail(p, start, "malformed time (expected HH:MM:SS)");
    if (h > 23 || m > 59 || s > 60)
        return fail(p, start, "time %02d:%02d:%02d is out of range", h, m, s);
    p->pos += 8;
    dt->hour = h;
    dt->minute = m;
    dt->second = s;
    dt->nanosecond = 0;
    dt->has_time = true;
    if (peek(p) == '.') {
        int n = 0;

        p->pos++;
        if (!is_digit(peek(p)))
            return fail_unexpected(p, "digit after '.' in time");
        while (is_digit(peek(p))) {
            if (n < 9) {
                dt->nanosecond = dt->nanosecond * 10 + (peek(p) - '0');
                n++;
            }
            p->pos++;
        }
        for (; n < 9; n++)
            dt->nanosecond *= 10;
    }
    return 0;
}

/* Reads a local date, local date-time, offset date-time (starting YYYY-) or local time
 * (starting HH:) into 'v'. */
static int read_datetime(struct toml_parser *p, struct dc_toml_value *v)
{
    struct dc_toml_datetime *dt = &v->u.dt;
    size_t start = p->pos;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int rc;

    memset(dt, 0, sizeof(*dt));
    if (looks_like_time(p, 0)) {
        v->type = DC_TOML_TIME_LOCAL;
        return read_time(p, dt);
    }
    dt->year = fixed_digits(p, 0, 4);
    dt->month = fixed_digits(p, 5, 2);
    dt->day = fixed_digits(p, 8, 2);
    if (dt->year < 0 || peek_at(p, 4) != '-' || dt->month < 0 || peek_at(p, 7) != '-' ||
        dt->day < 0)
        return fail(p, start, "malformed date (expected YYYY-MM-DD)");
    if (dt->month < 1 || dt->month > 12 || dt->day < 1 ||
        dt->day > mdays[dt->month - 1] + (dt->month == 2 && is_leap(dt->year)))
        return fail(p, start, "date %04d-%02d-%02d does not exist", dt->year, dt->month, dt->day);
    dt->has_date = true;
    p->pos += 10;
    v->type = DC_TOML_DATE_LOCAL;
    if (peek(p) == 'T' || peek(p) == 't' || (peek(p) == ' ' && looks_like_time(p, 1))) {
        p->pos++;
        rc = read_time(p, dt);
        if (rc < 0)
            return rc;
        v->type = DC_TOML_DATETIME_LOCAL;
        if (peek(p) == 'Z' || peek(p) == 'z') {
            p->pos++;
            dt->has_offset = true;
            v->type = DC_TOML_DATETIME;
        } else if (peek(p) == '+' || peek(p) == '-') {
            int sign = peek(p) == '-' ? -1 : 1;
            int oh = fixed_digits(p, 1, 2), om = fixed_digits(p, 4, 2);

            if (oh < 0 || peek_at(p, 3) != ':' || om < 0)
                return fail(p, p->pos, "malformed UTC offset (expected +HH:MM or -HH:MM)");
            if (oh > 23 || om > 59)
                return fail(p, p->pos, "UTC offset is out of range");
            p->pos += 6;
            dt->offset_minutes = sign * (oh * 60 + om);
            dt->has_offset = true;
            v->type = DC_TOML_DATETIME;
        }
    }
    return 0;
}

/* ---- keys ------------------------------------------------------------------------------- */

/* Reads a dotted key (one or more bare or quoted parts) into p->parts / p->keybuf. */
static int read_key(struct toml_parser *p)
{
    int rc;

    p->n_parts = 0;
    dc_buf_reset(&p->keybuf);
    for (;;) {
        struct key_part *kp;
        int c = peek(p);

        if (p->n_parts == DC_TOML_MAX_DEPTH)
            return fail_rc(p, p->pos, DC_ELIMIT, "key has more than %d parts", DC_TOML_MAX_DEPTH);
        kp = &p->parts[p->n_parts];
        kp->pos = p->pos;
        kp->off = p->keybuf.len;
        if (c == '"' || c == '\'') {
            if (peek_at(p, 1) == c && peek_at(p, 2) == c)
                return fail(p, p->pos, "multi-line strings cannot be keys");
            rc = read_line_string(p);
            if (rc == 0)
                rc = dc_buf_append(&p->keybuf, p->scratch.data, p->scratch.len);
        } else if (is_bare_key_char(c)) {
            size_t end = p->pos;

            while (end < p->len && is_bare_key_char((uint8_t)p->s[end]))
                end++;
            rc = dc_buf_append(&p->keybuf, p->s + p->pos, end - p->pos);
            p->pos = end;
        } else {
            return fail_unexpected(p, "a key");
        }
        if (rc < 0)
            return rc;
        kp->len = p->keybuf.len - kp->off;
        p->n_parts++;
        skip_ws(p);
        if (peek(p) != '.')
            return 0;
        p->pos++;
        skip_ws(p);
    }
}

static const char *part_bytes(struct toml_parser *p, size_t i)
{
    return (const char *)p->keybuf.data + p->parts[i].off;
}

static struct toml_entry *find_part(struct toml_parser *p, struct dc_toml_value *t, size_t i)
{
    return table_find(t, part_bytes(p, i), p->parts[i].len);
}

/* Copies key part 'i' into a new heap string. */
static char *dup_part(struct toml_parser *p, size_t i)
{
    size_t n = p->parts[i].len;
    char *k = dc_malloc(n + 1);

    if (k != NULL) {
        memcpy(k, part_bytes(p, i), n);
        k[n] = '\0';
    }
    return k;
}

/* Creates an empty container of 'type' and 'kind' under key part 'i' of table 't'. */
static int add_container(struct toml_parser *p, struct dc_toml_value *t, size_t i,
                         enum dc_toml_type type, enum toml_kind kind, unsigned line,
                         struct dc_toml_value **out)
{
    struct dc_toml_value *c;
    char *k;
    int rc;

    if (t->depth + 1 > DC_TOML_MAX_DEPTH)
        return fail_rc(p, p->parts[i].pos, DC_ELIMIT, "tables nested more than %d deep",
                       DC_TOML_MAX_DEPTH);
    c = value_new(type, line);
    if (c == NULL)
        return DC_ENOMEM;
    c->kind = (uint8_t)kind;
    c->depth = (uint16_t)(t->depth + 1);
    k = dup_part(p, i);
    if (k == NULL) {
        rc = DC_ENOMEM;
        goto err_free_value;
    }
    rc = table_add(t, k, p->parts[i].len, c);
    if (rc < 0)
        goto err_free_key;
    *out = c;
    return 0;

err_free_key:
    dc_free(k);
err_free_value:
    value_free(c);
    return rc;
}

static int fail_defined(struct toml_parser *p, size_t i, const struct dc_toml_value *v,
                        const char *why)
{
    char key[128];

    return fail(p, p->parts[i].pos, "key '%s' is already defined as %s %s%s",
                show_key(p, i + 1, key, sizeof(key)),
                v->type == DC_TOML_ARRAY || v->type == DC_TOML_INTEGER ? "an" : "a",
                dc_toml_type_name(v->type), why);
}

/* For a key/value line: walks all but the last key part from 't', creating DOTTED tables, and
 * returns the table that receives the last part. */
static int walk_dotted(struct toml_parser *p, struct dc_toml_value *t, unsigned line,
                       struct dc_toml_value **out)
{
    size_t i;
    int rc;

    for (i = 0; i + 1 < p->n_parts; i++) {
        struct toml_entry *e = find_part(p, t, i);

        if (e == NULL) {
            rc = add_container(p, t, i, DC_TOML_TABLE, TK_DOTTED, line, &t);
            if (rc < 0)
                return rc;
            continue;
        }
        if (e->val->type != DC_TOML_TABLE)
            return fail_defined(p, i, e->val, "");
        if (e->val->kind == TK_INLINE)
            return fail_defined(p, i, e->val, " (inline tables cannot be extended)");
        if (e->val->kind != TK_DOTTED)
            return fail_defined(p, i, e->val,
                                " (dotted keys cannot extend a table defined by "
                                "a [header])");
        t = e->val;
    }
    *out = t;
    return 0;
}

/* For [a.b.c] and [[a.b.c]]: walks all but the last part from the root, creating IMPLICIT
 * tables and descending into the last element of arrays of tables. */
static int walk_header(struct toml_parser *p, struct dc_toml_value *t, unsigned line,
                       struct dc_toml_value **out)
{
    size_t i;
    int rc;

    for (i = 0; i + 1 < p->n_parts; i++) {
        struct toml_entry *e = find_part(p, t, i);

        if (e == NULL) {
            rc = add_container(p, t, i, DC_TOML_TABLE, TK_IMPLICIT, line, &t);
            if (rc < 0)
                return rc;
            continue;
        }
        if (e->val->type == DC_TOML_TABLE && e->val->kind != TK_INLINE) {
            t = e->val;
        } else if (e->val->type == DC_TOML_ARRAY && e->val->kind == TK_AOT) {
            t = e->val->u.arr.items[e->val->u.arr.len - 1];
        } else if (e->val->type == DC_TOML_TABLE) {
            return fail_defined(p, i, e->val, " (inline tables cannot be extended)");
        } else if (e->val->type == DC_TOML_ARRAY) {
            return fail_defined(p, i, e->val, " (static arrays cannot be extended)");
        } else {
            return fail_defined(p, i, e->val, "");
        }
    }
    *out = t;
    return 0;
}

/* ---- parse ------------------------------------------------------------------------------ */

static int parse_value(struct toml_parser *p, uint16_t depth, struct dc_toml_value **out);
static int parse_keyval(struct toml_parser *p, struct dc_toml_value *t);

static int parse_array(struct toml_parser *p, struct dc_toml_value *a)
{
    int rc;

    p->pos++;
    for (;;) {
        struct dc_toml_value *item;

        rc = skip_ws_nl(p);
        if (rc < 0)
            return rc;
        if (peek(p) == ']')
            break;
        rc = parse_value(p, (uint16_t)(a->depth + 1), &item);
        if (rc < 0)
            return rc;
        rc = array_add(a, item);
        if (rc < 0) {
            value_free(item);
            return rc;
        }
        rc = skip_ws_nl(p);
        if (rc < 0)
            return rc;
        if (peek(p) == ',') {
            p->pos++;
            continue;
        }
        if (peek(p) == ']')
            break;
        return fail_unexpected(p, "',' or ']' in array");
    }
    p->pos++;
    return 0;
}

static int parse_inline_table(struct toml_parser *p, struct dc_toml_value *t)
{
    int rc;

    p->pos++;
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (peek(p) == '\n' || peek(p) == '\r')
            return fail(p, p->pos, "newlines are not allowed inside inline tables");
        rc = parse_keyval(p, t);
        if (rc < 0)
            return rc;
        skip_ws(p);
        if (peek(p) == '}') {
            p->pos++;
            return 0;
        }
        if (peek(p) != ',')
            return fail_unexpected(p, "',' or '}' in inline table");
        p->pos++;
        skip_ws(p);
        if (peek(p) == '}')
            return fail(p, p->pos, "trailing comma is not allowed in inline tables");
    }
}

/* Parses any value at p->pos; 'depth' is the depth the value will sit at. */
static int parse_value(struct toml_parser *p, uint16_t depth, struct dc_toml_value **out)
{
    struct dc_toml_value *v;
    int c = peek(p), rc;

    *out = NULL;
    /* Starts as a type that owns nothing, so the error path can free it at any point. */
    v = value_new(DC_TOML_BOOL, p->line);
    if (v == NULL)
        return DC_ENOMEM;
    v->depth = depth;
    if (c == '"' || c == '\'') {
        if (peek_at(p, 1) == c && peek_at(p, 2) == c)
            rc = read_ml_string(p);
        else
            rc = read_line_string(p);
        if (rc == 0) {
            v->u.str.s = dc_malloc(p->scratch.len + 1);
            if (v->u.str.s == NULL) {
                rc = DC_ENOMEM;
            } else {
                if (p->scratch.len > 0)
                    memcpy(v->u.str.s, p->scratch.data, p->scratch.len);
                v->u.str.s[p->scratch.len] = '\0';
                v->u.str.len = p->scratch.len;
                v->type = DC_TOML_STRING;
            }
        }
    } else if (c == '[' || c == '{') {
        if (depth > DC_TOML_MAX_DEPTH) {
            rc = fail_rc(p, p->pos, DC_ELIMIT, "arrays and tables nested more than %d deep",
                         DC_TOML_MAX_DEPTH);
        } else if (c == '[') {
            v->type = DC_TOML_ARRAY;
            v->kind = TK_STATIC;
            rc = parse_array(p, v);
        } else {
            v->type = DC_TOML_TABLE;
            v->kind = TK_INLINE;
            rc = parse_inline_table(p, v);
        }
    } else if (c == 't' || c == 'f') {
        const char *word = c == 't' ? "true" : "false";
        size_t n = strlen(word);

        v->type = DC_TOML_BOOL;
        v->u.b = c == 't';
        if (p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0 &&
            !is_bare_key_char(peek_at(p, n))) {
            p->pos += n;
            rc = 0;
        } else {
            rc = fail(p, p->pos, "invalid value (booleans are 'true' and 'false')");
        }
    } else if (is_digit(c) &&
               (looks_like_time(p, 0) || (fixed_digits(p, 0, 4) >= 0 && peek_at(p, 4) == '-'))) {
        rc = read_datetime(p, v);
    } else if (is_digit(c) || c == '+' || c == '-' || c == 'i' || c == 'n') {
        rc = read_number(p, v);
    } else {
        rc = fail_unexpected(p, "a value");
    }
    if (rc < 0) {
        value_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

/* Parses key = value into table 't' (the current section, or an inline table). */
static int parse_keyval(struct toml_parser *p, struct dc_toml_value *t)
{
    struct dc_toml_value *target = NULL, *val = NULL;
    unsigned line = p->line;
    size_t last, key_len;
    char *key, name[128];
    int rc;

    rc = read_key(p);
    if (rc < 0)
        return rc;
    if (peek(p) != '=')
        return fail_unexpected(p, "'=' after key");
    p->pos++;
    skip_ws(p);
    rc = walk_dotted(p, t, line, &target);
    if (rc < 0)
        return rc;
    last = p->n_parts - 1;
    if (find_part(p, target, last) != NULL)
        return fail(p, p->parts[last].pos, "duplicate key '%s'",
                    show_key(p, p->n_parts, name, sizeof(name)));
    /* The key parts live in a buffer that nested values reuse: copy the last one first. */
    key_len = p->parts[last].len;
    key = dup_part(p, last);
    if (key == NULL)
        return DC_ENOMEM;
    rc = parse_value(p, (uint16_t)(target->depth + 1), &val);
    if (rc < 0)
        goto err_free_key;
    val->line = line;
    rc = table_add(target, key, key_len, val);
    if (rc < 0)
        goto err_free_val;
    return 0;

err_free_val:
    value_free(val);
err_free_key:
    dc_free(key);
    return rc;
}

/* Parses [a.b] or [[a.b]] at p->pos and returns the table that following keys go into. */
static int parse_header(struct toml_parser *p, struct dc_toml_value *root,
                        struct dc_toml_value **cur)
{
    bool aot = peek_at(p, 1) == '[';
    unsigned line = p->line;
    struct dc_toml_value *t = NULL, *v = NULL;
    struct toml_entry *e;
    char name[128];
    size_t last;
    int rc;

    p->pos += aot ? 2 : 1;
    skip_ws(p);
    rc = read_key(p);
    if (rc < 0)
        return rc;
    if (peek(p) != ']' || (aot && peek_at(p, 1) != ']'))
        return fail_unexpected(p, aot ? "']]' to close the array of tables header"
                                      : "']' to close the table header");
    p->pos += aot ? 2 : 1;
    rc = walk_header(p, root, line, &t);
    if (rc < 0)
        return rc;
    last = p->n_parts - 1;
    e = find_part(p, t, last);
    show_key(p, p->n_parts, name, sizeof(name));
    if (!aot) {
        if (e == NULL)
            return add_container(p, t, last, DC_TOML_TABLE, TK_HEADER, line, cur);
        if (e->val->type == DC_TOML_TABLE && e->val->kind == TK_IMPLICIT) {
            e->val->kind = TK_HEADER;
            e->val->line = line;
            *cur = e->val;
            return 0;
        }
        if (e->val->type == DC_TOML_TABLE)
            return fail(p, p->parts[last].pos, "table '%s' is already defined", name);
        return fail_defined(p, last, e->val, "");
    }
    if (e == NULL) {
        rc = add_container(p, t, last, DC_TOML_ARRAY, TK_AOT, line, &v);
        if (rc < 0)
            return rc;
    } else if (e->val->type == DC_TOML_ARRAY && e->val->kind == TK_AOT) {
        v = e->val;
    } else if (e->val->type == DC_TOML_ARRAY) {
        return fail(p, p->parts[last].pos,
                    "key '%s' is a static array and cannot be extended with [[%s]]", name, name);
    } else {
        return fail_defined(p, last, e->val, "");
    }
    if (v->depth + 1 > DC_TOML_MAX_DEPTH)
        return fail_rc(p, p->parts[last].pos, DC_ELIMIT, "tables nested more than %d deep",
                       DC_TOML_MAX_DEPTH);
    t = value_new(DC_TOML_TABLE, line);
    if (t == NULL)
        return DC_ENOMEM;
    t->kind = TK_HEADER;
    t->depth = (uint16_t)(v->depth + 1);
    rc = array_add(v, t);
    if (rc < 0) {
        value_free(t);
        return rc;
    }
    *cur = t;
    return 0;
}

static int parse_document(struct toml_parser *p, struct dc_toml_value *root)
{
    struct dc_toml_value *cur = root;
    int rc;

    if (p->len >= 3 && memcmp(p->s, "\xef\xbb\xbf", 3) == 0)
        p->pos = 3;
    for (;;) {
        int c;

        skip_ws(p);
        c = peek(p);
        if (c < 0)
            return 0;
        if (c == '#' || c == '\n' || c == '\r') {
            rc = end_of_line(p);
        } else {
            if (c == '[')
                rc = parse_header(p, root, &cur);
            else
                rc = parse_keyval(p, cur);
            if (rc == 0)
                rc = end_of_line(p);
        }
        if (rc < 0)
            return rc;
    }
}

int dc_toml_parse(const char *text, size_t len, struct dc_toml_value **out,
                  struct dc_toml_error *err)
{
    struct toml_parser *p;
    struct dc_toml_value *root;
    int rc;

    *out = NULL;
    if (err != NULL)
        memset(err, 0, sizeof(*err));
    if (len > DC_TOML_MAX_INPUT) {
        if (err != NULL) {
            err->line = 1;
            err->column = 1;
            snprintf(err->message, sizeof(err->message), "document is larger than %u bytes",
                     DC_TOML_MAX_INPUT);
        }
        return DC_ELIMIT;
    }
    /* The parser holds the key-part array, too big for comfort on small thread stacks. */
    p = dc_calloc(1, sizeof(*p));
    if (p == NULL) {
        rc = DC_ENOMEM;
        goto err_report;
    }
    p->s = text;
    p->len = len;
    p->line = 1;
    p->err = err;
    dc_buf_init(&p->scratch, DC_TOML_MAX_INPUT + 1);
    dc_buf_init(&p->keybuf, DC_TOML_MAX_INPUT + 1);
    root = value_new(DC_TOML_TABLE, 0);
    if (root == NULL) {
        rc = DC_ENOMEM;
        goto err_free_parser;
    }
    root->kind = TK_HEADER;
    rc = check_utf8(p);
    if (rc == 0)
        rc = parse_document(p, root);
    if (rc < 0)
        goto err_free_root;
    dc_buf_cleanup(&p->scratch);
    dc_buf_cleanup(&p->keybuf);
    dc_free(p);
    *out = root;
    return 0;

err_free_root:
    value_free(root);
err_free_parser:
    if (!p->err_set)
        set_error_at(p, p->pos, dc_strerror(rc));
    dc_buf_cleanup(&p->scratch);
    dc_buf_cleanup(&p->keybuf);
    dc_free(p);
    return rc;

err_report:
    if (err != NULL) {
        err->line = 1;
        err->column = 1;
        snprintf(err->message, sizeof(err->message), "%s", dc_strerror(rc));
    }
    return rc;
}

/* ---- getters ---------------------------------------------------------------------------- */

void dc_toml_free(struct dc_toml_value *v)
{
    value_free(v);
}

enum dc_toml_type dc_toml_type(const struct dc_toml_value *v)
{
    return v->type;
}

const char *dc_toml_type_name(enum dc_toml_type t)
{
    switch (t) {
    case DC_TOML_STRING:
        return "string";
    case DC_TOML_INTEGER:
        return "integer";
    case DC_TOML_FLOAT:
        return "float";
    case DC_TOML_BOOL:
        return "bool";
    case DC_TOML_DATETIME:
        return "datetime";
    case DC_TOML_DATETIME_LOCAL:
        return "datetime-local";
    case DC_TOML_DATE_LOCAL:
        return "date-local";
    case DC_TOML_TIME_LOCAL:
        return "time-local";
    case DC_TOML_ARRAY:
        return "array";
    case DC_TOML_TABLE:
        return "table";
    }
    return "unknown";
}

size_t dc_toml_len(const struct dc_toml_value *v)
{
    if (v == NULL)
        return 0;
    if (v->type == DC_TOML_ARRAY)
        return v->u.arr.len;
    if (v->type == DC_TOML_TABLE)
        return v->u.tab.len;
    return 0;
}

const struct dc_toml_value *dc_toml_at(const struct dc_toml_value *arr, size_t i)
{
    if (arr == NULL || arr->type != DC_TOML_ARRAY || i >= arr->u.arr.len)
        return NULL;
    return arr->u.arr.items[i];
}

const char *dc_toml_key_at_len(const struct dc_toml_value *table, size_t i, size_t *key_len,
                               const struct dc_toml_value **val)
{
    const struct toml_entry *e;

    if (table == NULL || table->type != DC_TOML_TABLE || i >= table->u.tab.len)
        return NULL;
    e = &table->u.tab.ent[i];
    if (key_len != NULL)
        *key_len = e->key_len;
    if (val != NULL)
        *val = e->val;
    return e->key;
}

const char *dc_toml_key_at(const struct dc_toml_value *table, size_t i,
                           const struct dc_toml_value **val)
{
    return dc_toml_key_at_len(table, i, NULL, val);
}

const struct dc_toml_value *dc_toml_get_len(const struct dc_toml_value *table, const char *key,
                                            size_t key_len)
{
    const struct toml_entry *e;

    if (table == NULL || table->type != DC_TOML_TABLE || key == NULL)
        return NULL;
    e = table_find(table, key, key_len);
    return e != NULL ? e->val : NULL;
}

const struct dc_toml_value *dc_toml_get(const struct dc_toml_value *table, const char *key)
{
    return key == NULL ? NULL : dc_toml_get_len(table, key, strlen(key));
}

const char *dc_toml_string(const struct dc_toml_value *v, size_t *len)
{
    if (v == NULL || v->type != DC_TOML_STRING)
        return NULL;
    if (len != NULL)
        *len = v->u.str.len;
    return v->u.str.s;
}

int64_t dc_toml_int(const struct dc_toml_value *v)
{
    return v != NULL && v->type == DC_TOML_INTEGER ? v->u.i : 0;
}

double dc_toml_float(const struct dc_toml_value *v)
{
    return v != NULL && v->type == DC_TOML_FLOAT ? v->u.f : 0.0;
}

bool dc_toml_bool(const struct dc_toml_value *v)
{
    return v != NULL && v->type == DC_TOML_BOOL ? v->u.b : false;
}

const struct dc_toml_datetime *dc_toml_datetime(const struct dc_toml_value *v)
{
    if (v == NULL || v->type < DC_TOML_DATETIME || v->type > DC_TOML_TIME_LOCAL)
        return NULL;
    return &v->u.dt;
}

unsigned dc_toml_line(const struct dc_toml_value *v)
{
    return v != NULL ? v->line : 0;
}

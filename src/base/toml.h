/* SPDX-License-Identifier: MIT */
/*
 * toml.h - a TOML 1.0.0 decoder. dc_toml_parse() turns a UTF-8 document into a read-only tree of
 * values (tables, arrays and scalars) that the caller walks with the getters below and releases
 * with dc_toml_free(). Tables keep their keys in insertion order and answer lookups through a
 * hash index, so big tables stay linear. Every value remembers the line that defined it, so a
 * config loader can print "file:line: key ..." for its own semantic errors.
 *
 * The decoder does no I/O and keeps no global state; the whole tree is owned by the root value.
 * Getters return borrowed pointers that stay valid until the root is freed.
 */
#ifndef DC_TOML_H
#define DC_TOML_H

#include "base/base.h"

/* Hard limits: documents larger than DC_TOML_MAX_INPUT bytes and trees nested deeper than
 * DC_TOML_MAX_DEPTH containers (arrays, tables, inline tables, dotted-key parts) are refused
 * with DC_ELIMIT. */
#define DC_TOML_MAX_INPUT (64u * 1024u * 1024u)
#define DC_TOML_MAX_DEPTH 128

enum dc_toml_type {
    DC_TOML_STRING,
    DC_TOML_INTEGER,
    DC_TOML_FLOAT,
    DC_TOML_BOOL,
    DC_TOML_DATETIME,       /* offset date-time: 1979-05-27T07:32:00Z */
    DC_TOML_DATETIME_LOCAL, /* local date-time: 1979-05-27T07:32:00 */
    DC_TOML_DATE_LOCAL,     /* local date: 1979-05-27 */
    DC_TOML_TIME_LOCAL,     /* local time: 07:32:00 */
    DC_TOML_ARRAY,
    DC_TOML_TABLE,
};

struct dc_toml_value; /* opaque */

/* Where and why parsing failed. 'line' and 'column' are 1-based; the column counts UTF-8
 * characters, not bytes. 'message' is one NUL-terminated sentence without a trailing newline. */
struct dc_toml_error {
    unsigned line;
    unsigned column;
    char message[256];
};

/* The four TOML date/time types share one struct; has_date/has_time/has_offset say which parts
 * are present. 'nanosecond' holds the fractional seconds (digits past the ninth are truncated);
 * 'offset_minutes' is the UTC offset (east positive) and is 0 for "Z" or when absent. */
struct dc_toml_datetime {
    int year, month, day;
    int hour, minute, second;
    int nanosecond;
    int offset_minutes;
    bool has_date, has_time, has_offset;
};

/*
 * Parses 'len' bytes of 'text' (need not be NUL-terminated; a leading UTF-8 BOM is skipped).
 * On success '*out' is the root table, owned by the caller (release with dc_toml_free()).
 * 'err' may be NULL; when not, it is filled on every failure.
 * Returns 0; DC_ECORRUPT for malformed TOML or invalid UTF-8 ('err' gives the 1-based line and
 * column of the offending spot and a message such as "duplicate key 'x'"); DC_ELIMIT when the
 * input exceeds DC_TOML_MAX_INPUT or nesting exceeds DC_TOML_MAX_DEPTH; DC_ENOMEM.
 * '*out' is NULL on failure.
 */
DC_MUST_CHECK int dc_toml_parse(const char *text, size_t len, struct dc_toml_value **out,
                                struct dc_toml_error *err);

/* Frees the whole tree rooted at 'v' (pass the root from dc_toml_parse). NULL is a no-op. */
void dc_toml_free(struct dc_toml_value *v);

/* The value's type. 'v' must not be NULL. */
enum dc_toml_type dc_toml_type(const struct dc_toml_value *v);

/* A static lowercase name for 't': "string", "integer", "float", "bool", "datetime",
 * "datetime-local", "date-local", "time-local", "array", "table" (the toml-test spellings). */
const char *dc_toml_type_name(enum dc_toml_type t);

/* Number of entries of a table or array; 0 for scalars and NULL. */
size_t dc_toml_len(const struct dc_toml_value *v);

/* The i-th element of array 'arr'; NULL when 'arr' is not an array or 'i' is out of range. */
const struct dc_toml_value *dc_toml_at(const struct dc_toml_value *arr, size_t i);

/* The i-th key of 'table' in insertion order, and its value through 'val' (may be NULL).
 * Returns NULL when 'table' is not a table or 'i' is out of range. The key is NUL-terminated
 * but may itself contain NUL bytes (from "\u0000"); use dc_toml_key_at_len() when that
 * matters. */
const char *dc_toml_key_at(const struct dc_toml_value *table, size_t i,
                           const struct dc_toml_value **val);

/* As dc_toml_key_at(), also storing the key's length in bytes in '*key_len' (may be NULL). */
const char *dc_toml_key_at_len(const struct dc_toml_value *table, size_t i, size_t *key_len,
                               const struct dc_toml_value **val);

/* The value stored under 'key' (a C string) in 'table'; NULL when absent or when 'table' is not
 * a table. Average O(1). */
const struct dc_toml_value *dc_toml_get(const struct dc_toml_value *table, const char *key);

/* As dc_toml_get() for a key of 'key_len' bytes that may contain NUL bytes. */
const struct dc_toml_value *dc_toml_get_len(const struct dc_toml_value *table, const char *key,
                                            size_t key_len);

/* The string's bytes (UTF-8, NUL-terminated, may contain NUL bytes) and its length in '*len'
 * (may be NULL). NULL when 'v' is not a string. */
const char *dc_toml_string(const struct dc_toml_value *v, size_t *len);

/* Scalar getters: 0 / 0.0 / false when 'v' is NULL or of another type. dc_toml_float() does not
 * convert integers; check the type first. */
int64_t dc_toml_int(const struct dc_toml_value *v);
double dc_toml_float(const struct dc_toml_value *v);
bool dc_toml_bool(const struct dc_toml_value *v);

/* The date/time of any of the four datetime types; NULL for other types. */
const struct dc_toml_datetime *dc_toml_datetime(const struct dc_toml_value *v);

/* 1-based line where this value's key was written (for table entries, including tables made
 * by [headers] and dotted keys) or where the value starts (for array elements). 0 for NULL and
 * for the root table. */
unsigned dc_toml_line(const struct dc_toml_value *v);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * toml-decode.c - the toml-test decoder harness for dc_toml. Reads a TOML document on stdin and
 * prints it on stdout as toml-test's "tagged JSON": tables become objects, arrays become arrays
 * and every scalar becomes {"type": T, "value": "V"} with V spelled as a string. Exits 0 on
 * success; on a parse error prints "toml-decode: line L, column C: message" on stderr and exits
 * 1. tests/toml/run-toml-test.mjs runs it over the whole suite.
 */
#include "base/base.h"
#include "base/toml.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints 'n' bytes of 's' as a JSON string literal. Input is valid UTF-8 (the decoder checked
 * it), so only quotes, backslashes and control characters need escaping. */
static void put_json_string(FILE *f, const char *s, size_t n)
{
    size_t i;

    fputc('"', f);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* Prints fractional seconds (if any) without trailing zeros. */
static void put_fraction(FILE *f, int ns)
{
    char buf[16];
    int n;

    if (ns == 0)
        return;
    snprintf(buf, sizeof(buf), "%09d", ns);
    for (n = 9; n > 1 && buf[n - 1] == '0'; n--)
        ;
    fprintf(f, ".%.*s", n, buf);
}

static void put_datetime(FILE *f, const struct dc_toml_datetime *dt)
{
    if (dt->has_date)
        fprintf(f, "%04d-%02d-%02d", dt->year, dt->month, dt->day);
    if (dt->has_date && dt->has_time)
        fputc('T', f);
    if (dt->has_time) {
        fprintf(f, "%02d:%02d:%02d", dt->hour, dt->minute, dt->second);
        put_fraction(f, dt->nanosecond);
    }
    if (dt->has_offset) {
        int off = dt->offset_minutes;

        if (off == 0) {
            fputc('Z', f);
        } else {
            fputc(off < 0 ? '-' : '+', f);
            off = abs(off);
            fprintf(f, "%02d:%02d", off / 60, off % 60);
        }
    }
}

static void put_value(FILE *f, const struct dc_toml_value *v)
{
    enum dc_toml_type t = dc_toml_type(v);
    size_t i, n;

    if (t == DC_TOML_TABLE) {
        fputc('{', f);
        for (i = 0; i < dc_toml_len(v); i++) {
            const struct dc_toml_value *child;
            const char *k = dc_toml_key_at_len(v, i, &n, &child);

            if (i > 0)
                fputc(',', f);
            put_json_string(f, k, n);
            fputc(':', f);
            put_value(f, child);
        }
        fputc('}', f);
        return;
    }
    if (t == DC_TOML_ARRAY) {
        fputc('[', f);
        for (i = 0; i < dc_toml_len(v); i++) {
            if (i > 0)
                fputc(',', f);
            put_value(f, dc_toml_at(v, i));
        }
        fputc(']', f);
        return;
    }
    fprintf(f, "{\"type\":\"%s\",\"value\":", dc_toml_type_name(t));
    switch (t) {
    case DC_TOML_STRING: {
        const char *s = dc_toml_string(v, &n);

        put_json_string(f, s, n);
        break;
    }
    case DC_TOML_INTEGER:
        fprintf(f, "\"%" PRId64 "\"", dc_toml_int(v));
        break;
    case DC_TOML_FLOAT: {
        double d = dc_toml_float(v);

        if (isnan(d))
            fputs("\"nan\"", f);
        else if (isinf(d))
            fputs(d < 0 ? "\"-inf\"" : "\"inf\"", f);
        else
            fprintf(f, "\"%.17g\"", d);
        break;
    }
    case DC_TOML_BOOL:
        fputs(dc_toml_bool(v) ? "\"true\"" : "\"false\"", f);
        break;
    default:
        fputc('"', f);
        put_datetime(f, dc_toml_datetime(v));
        fputc('"', f);
        break;
    }
    fputc('}', f);
}

int main(void)
{
    struct dc_buf in;
    struct dc_toml_value *root;
    struct dc_toml_error err;
    char chunk[65536];
    size_t n;
    int rc;

    dc_buf_init(&in, (size_t)DC_TOML_MAX_INPUT + 1);
    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
        rc = dc_buf_append(&in, chunk, n);
        if (rc < 0) {
            fprintf(stderr, "toml-decode: reading stdin: %s\n", dc_strerror(rc));
            dc_buf_cleanup(&in);
            return 1;
        }
    }
    if (ferror(stdin)) {
        fprintf(stderr, "toml-decode: reading stdin failed\n");
        dc_buf_cleanup(&in);
        return 1;
    }
    rc = dc_toml_parse((const char *)in.data, in.len, &root, &err);
    dc_buf_cleanup(&in);
    if (rc < 0) {
        fprintf(stderr, "toml-decode: line %u, column %u: %s\n", err.line, err.column, err.message);
        return 1;
    }
    put_value(stdout, root);
    fputc('\n', stdout);
    dc_toml_free(root);
    return fflush(stdout) == 0 ? 0 : 1;
}

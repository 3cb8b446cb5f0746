/* SPDX-License-Identifier: MIT */
/*
 * toml_test.c - unit tests for the TOML decoder (base/toml.h): every value type and its getter,
 * insertion order and hashed lookup on big tables, error codes with their line/column and
 * message, the line numbers the config loader reports, the hard limits, and the
 * allocation-failure loop (each allocation of a rich parse fails in turn; ASan checks leaks).
 * Conformance with the full toml-test suite is the separate ctest toml.suite.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "base/base.h"
#include "base/toml.h"

/* A document that exercises every value type, headers, arrays of tables, dotted keys, inline
 * tables and a table big enough to get a hash index. */
static const char rich_doc[] =
    "# rich document\n"
    "title = \"TOML \\u00e9xample\"\n"
    "lit = 'C:\\path'\n"
    "ml = \"\"\"\nline one \\\n    continued\nline two\"\"\"\n"
    "mll = '''\nraw\\n'''\n"
    "int = -9_223_372_036_854_775_808\n"
    "hex = 0xdead_BEEF\n"
    "oct = 0o755\n"
    "bin = 0b1010\n"
    "flt = 6.626e-34\n"
    "pinf = +inf\n"
    "qnan = nan\n"
    "yes = true\n"
    "odt = 1979-05-27T07:32:00.999999-07:00\n"
    "ldt = 1979-05-27 07:32:00\n"
    "ld = 1979-05-27\n"
    "lt = 00:32:00.5\n"
    "arr = [ 1, 'two', [3.0], { four = 4 }, ]\n"
    "inline = { a.b = 1, c = [ { d = 'e' } ] }\n"
    "k1 = 1\nk2 = 2\nk3 = 3\nk4 = 4\nk5 = 5\nk6 = 6\nk7 = 7\nk8 = 8\nk9 = 9\nk10 = 10\n"
    "[server]\n"
    "host = \"localhost\"\n"
    "port.http = 8080\n"
    "[server.tls.files]\n"
    "cert = 'c.pem'\n"
    "[[peers]]\n"
    "id = 'a'\n"
    "[peers.meta]\n"
    "x = 1\n"
    "[[peers]]\n"
    "id = 'b'\n"
    "[server.tls]\n"
    "on = true\n";

static struct dc_toml_value *parse_ok(const char *text)
{
    struct dc_toml_value *root = NULL;
    struct dc_toml_error err;
    int rc = dc_toml_parse(text, strlen(text), &root, &err);

    if (rc != 0)
        print_error("unexpected error %d at %u:%u: %s\n", rc, err.line, err.column, err.message);
    assert_int_equal(rc, 0);
    assert_non_null(root);
    return root;
}

static void expect_error(const char *text, int want_rc, unsigned line, unsigned column,
                         const char *msg_part)
{
    struct dc_toml_value *root = (struct dc_toml_value *)&root; /* must be reset to NULL */
    struct dc_toml_error err;
    int rc = dc_toml_parse(text, strlen(text), &root, &err);

    if (rc != want_rc || (line != 0 && (err.line != line || err.column != column)) ||
        (msg_part != NULL && strstr(err.message, msg_part) == NULL))
        print_error("for %s: got %d at %u:%u: %s\n", text, rc, err.line, err.column, err.message);
    assert_int_equal(rc, want_rc);
    assert_null(root);
    if (line != 0) {
        assert_int_equal(err.line, line);
        assert_int_equal(err.column, column);
    }
    if (msg_part != NULL)
        assert_non_null(strstr(err.message, msg_part));
    assert_true(err.message[0] != '\0');
}

static void test_scalars(void **state)
{
    struct dc_toml_value *root;
    const struct dc_toml_value *v;
    const struct dc_toml_datetime *dt;
    size_t len;

    (void)state;
    root = parse_ok(rich_doc);
    assert_int_equal(dc_toml_type(root), DC_TOML_TABLE);

    v = dc_toml_get(root, "title");
    assert_int_equal(dc_toml_type(v), DC_TOML_STRING);
    assert_string_equal(dc_toml_string(v, &len), "TOML \xc3\xa9xample");
    assert_int_equal(len, 13);
    assert_string_equal(dc_toml_string(dc_toml_get(root, "lit"), NULL), "C:\\path");
    assert_string_equal(dc_toml_string(dc_toml_get(root, "ml"), NULL),
                        "line one continued\nline two");
    assert_string_equal(dc_toml_string(dc_toml_get(root, "mll"), NULL), "raw\\n");

    assert_true(dc_toml_int(dc_toml_get(root, "int")) == INT64_MIN);
    assert_int_equal(dc_toml_int(dc_toml_get(root, "hex")), 0xdeadbeef);
    assert_int_equal(dc_toml_int(dc_toml_get(root, "oct")), 0755);
    assert_int_equal(dc_toml_int(dc_toml_get(root, "bin")), 10);
    assert_true(dc_toml_float(dc_toml_get(root, "flt")) == 6.626e-34);
    assert_true(isinf(dc_toml_float(dc_toml_get(root, "pinf"))));
    assert_true(isnan(dc_toml_float(dc_toml_get(root, "qnan"))));
    assert_true(dc_toml_bool(dc_toml_get(root, "yes")));

    v = dc_toml_get(root, "odt");
    assert_int_equal(dc_toml_type(v), DC_TOML_DATETIME);
    dt = dc_toml_datetime(v);
    assert_non_null(dt);
    assert_int_equal(dt->year, 1979);
    assert_int_equal(dt->month, 5);
    assert_int_equal(dt->day, 27);
    assert_int_equal(dt->hour, 7);
    assert_int_equal(dt->minute, 32);
    assert_int_equal(dt->second, 0);
    assert_int_equal(dt->nanosecond, 999999000);
    assert_int_equal(dt->offset_minutes, -420);
    assert_true(dt->has_date && dt->has_time && dt->has_offset);
    assert_int_equal(dc_toml_type(dc_toml_get(root, "ldt")), DC_TOML_DATETIME_LOCAL);
    dt = dc_toml_datetime(dc_toml_get(root, "ld"));
    assert_int_equal(dc_toml_type(dc_toml_get(root, "ld")), DC_TOML_DATE_LOCAL);
    assert_true(dt->has_date && !dt->has_time && !dt->has_offset);
    dt = dc_toml_datetime(dc_toml_get(root, "lt"));
    assert_int_equal(dc_toml_type(dc_toml_get(root, "lt")), DC_TOML_TIME_LOCAL);
    assert_true(!dt->has_date && dt->has_time);
    assert_int_equal(dt->nanosecond, 500000000);

    /* Getters of the wrong type answer zero values, never crash. */
    assert_null(dc_toml_string(dc_toml_get(root, "yes"), &len));
    assert_int_equal(dc_toml_int(dc_toml_get(root, "title")), 0);
    assert_true(dc_toml_float(dc_toml_get(root, "int")) == 0.0);
    assert_false(dc_toml_bool(NULL));
    assert_null(dc_toml_datetime(dc_toml_get(root, "yes")));
    assert_null(dc_toml_at(root, 0));
    assert_null(dc_toml_get(dc_toml_get(root, "arr"), "x"));
    assert_int_equal(dc_toml_len(dc_toml_get(root, "yes")), 0);
    assert_int_equal(dc_toml_len(NULL), 0);
    dc_toml_free(root);
    dc_toml_free(NULL);
}

static void test_structure(void **state)
{
    struct dc_toml_value *root;
    const struct dc_toml_value *arr, *v, *peers, *tls;

    (void)state;
    root = parse_ok(rich_doc);
    arr = dc_toml_get(root, "arr");
    assert_int_equal(dc_toml_type(arr), DC_TOML_ARRAY);
    assert_int_equal(dc_toml_len(arr), 4);
    assert_int_equal(dc_toml_int(dc_toml_at(arr, 0)), 1);
    assert_string_equal(dc_toml_string(dc_toml_at(arr, 1), NULL), "two");
    assert_true(dc_toml_float(dc_toml_at(dc_toml_at(arr, 2), 0)) == 3.0);
    assert_int_equal(dc_toml_int(dc_toml_get(dc_toml_at(arr, 3), "four")), 4);
    assert_null(dc_toml_at(arr, 4));

    v = dc_toml_get(dc_toml_get(dc_toml_get(root, "inline"), "a"), "b");
    assert_int_equal(dc_toml_int(v), 1);

    assert_int_equal(
        dc_toml_int(dc_toml_get(dc_toml_get(dc_toml_get(root, "server"), "port"), "http")), 8080);
    tls = dc_toml_get(dc_toml_get(root, "server"), "tls");
    assert_true(dc_toml_bool(dc_toml_get(tls, "on")));
    assert_string_equal(dc_toml_string(dc_toml_get(dc_toml_get(tls, "files"), "cert"), NULL),
                        "c.pem");

    peers = dc_toml_get(root, "peers");
    assert_int_equal(dc_toml_type(peers), DC_TOML_ARRAY);
    assert_int_equal(dc_toml_len(peers), 2);
    assert_string_equal(dc_toml_string(dc_toml_get(dc_toml_at(peers, 1), "id"), NULL), "b");
    assert_int_equal(dc_toml_int(dc_toml_get(dc_toml_get(dc_toml_at(peers, 0), "meta"), "x")), 1);
    assert_null(dc_toml_get(root, "absent"));
    assert_null(dc_toml_get(root, "k11"));
    dc_toml_free(root);
}

static void test_order_and_big_table(void **state)
{
    enum { N = 20000 };
    struct dc_buf b;
    struct dc_toml_value *root;
    const struct dc_toml_value *v;
    char key[32];
    size_t i, n;
    const char *k;

    (void)state;
    dc_buf_init(&b, 0);
    /* Keys in a scrambled order, so insertion order differs from any sorted order. */
    for (i = 0; i < N; i++)
        assert_int_equal(dc_buf_printf(&b, "key%zu = %zu\n", (i * 7919) % N, i), 0);
    root = parse_ok((const char *)b.data);
    dc_buf_cleanup(&b);
    assert_int_equal(dc_toml_len(root), N);
    for (i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "key%zu", (i * 7919) % N);
        k = dc_toml_key_at_len(root, i, &n, &v);
        assert_string_equal(k, key);
        assert_int_equal(n, strlen(key));
        assert_int_equal(dc_toml_int(v), (int64_t)i);
        assert_ptr_equal(dc_toml_get(root, key), v);
        assert_int_equal(dc_toml_line(v), i + 1);
    }
    assert_null(dc_toml_key_at(root, N, &v));
    assert_null(dc_toml_get(root, "key20000"));
    dc_toml_free(root);
}

static void test_nul_in_keys_and_strings(void **state)
{
    static const char doc[] = "\"a\\u0000b\" = \"x\\u0000y\"\n'a' = 1\n";
    struct dc_toml_value *root;
    const struct dc_toml_value *v;
    const char *s;
    size_t len;

    (void)state;
    root = parse_ok(doc);
    assert_int_equal(dc_toml_len(root), 2);
    v = dc_toml_get_len(root, "a\0b", 3);
    assert_non_null(v);
    s = dc_toml_string(v, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "x\0y", 4);
    s = dc_toml_key_at_len(root, 0, &len, NULL);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 4);
    /* The C-string lookup sees "a" only, which is the second key. */
    assert_int_equal(dc_toml_int(dc_toml_get(root, "a")), 1);
    dc_toml_free(root);
    /* The mark does not count as a column, and is only allowed at the very start. */
    expect_error("\xef\xbb\xbf"
                 "a = x\n",
                 DC_ECORRUPT, 1, 5, "value");
    expect_error("a = 1\n\xef\xbb\xbf", DC_ECORRUPT, 2, 1, "key");
}

static void test_lines(void **state)
{
    static const char doc[] = "a = 1\n"
                              "\n"
                              "b = [\n"
                              "  1,\n"
                              "  2,\n"
                              "]\n"
                              "s = '''\n"
                              "x\n"
                              "'''\n"
                              "[t]\n"
                              "c.d = 3\n"
                              "[[u]]\n"
                              "[[u]]\n";
    struct dc_toml_value *root;
    const struct dc_toml_value *b, *t, *u;

    (void)state;
    root = parse_ok(doc);
    assert_int_equal(dc_toml_line(root), 0);
    assert_int_equal(dc_toml_line(dc_toml_get(root, "a")), 1);
    b = dc_toml_get(root, "b");
    assert_int_equal(dc_toml_line(b), 3);
    assert_int_equal(dc_toml_line(dc_toml_at(b, 0)), 4);
    assert_int_equal(dc_toml_line(dc_toml_at(b, 1)), 5);
    assert_int_equal(dc_toml_line(dc_toml_get(root, "s")), 7);
    t = dc_toml_get(root, "t");
    assert_int_equal(dc_toml_line(t), 10);
    assert_int_equal(dc_toml_line(dc_toml_get(t, "c")), 11);
    assert_int_equal(dc_toml_line(dc_toml_get(dc_toml_get(t, "c"), "d")), 11);
    u = dc_toml_get(root, "u");
    assert_int_equal(dc_toml_line(dc_toml_at(u, 0)), 12);
    assert_int_equal(dc_toml_line(dc_toml_at(u, 1)), 13);
    assert_int_equal(dc_toml_line(NULL), 0);
    dc_toml_free(root);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("x = 1\nx = 2\n", DC_ECORRUPT, 2, 1, "duplicate key 'x'");
    expect_error("[a]\nb.c = 1\n[a]\n", DC_ECORRUPT, 3, 2, "table 'a' is already defined");
    expect_error("a = 1\n  b = \"abc\n", DC_ECORRUPT, 2, 7, "unterminated string");
    expect_error("a = 01\n", DC_ECORRUPT, 1, 5, "leading zeros");
    expect_error("a = 9223372036854775808\n", DC_ECORRUPT, 1, 5, "64 bits");
    expect_error("a = 1979-02-29\n", DC_ECORRUPT, 1, 5, "does not exist");
    expect_error("a = { b = 1 }\na.c = 2\n", DC_ECORRUPT, 2, 1, "inline");
    expect_error("a = [1]\n[[a]]\n", DC_ECORRUPT, 2, 3, "static array");
    expect_error("a = \"\\q\"\n", DC_ECORRUPT, 1, 6, "invalid escape");
    expect_error("a = 1 b = 2\n", DC_ECORRUPT, 1, 7, "expected newline");
    expect_error("a = 1e400\n", DC_ECORRUPT, 1, 5, "out of range");
    expect_error("a = {\n}\n", DC_ECORRUPT, 1, 6, "newline");
    expect_error("a = 1\r\n\rb = 2\n", DC_ECORRUPT, 2, 1, "carriage return");
    /* Columns count characters, not bytes: 'é' is two bytes. */
    expect_error("\"\xc3\xa9\" = tru\n", DC_ECORRUPT, 1, 7, "boolean");
    expect_error("a = \"\xff\"\n", DC_ECORRUPT, 1, 6, "UTF-8");
    expect_error("a = \"\xed\xa0\x80\"\n", DC_ECORRUPT, 1, 6, "UTF-8"); /* surrogate */
    expect_error("a = \"\xc0\xaf\"\n", DC_ECORRUPT, 1, 6, "UTF-8");     /* overlong */
    expect_error("a =", DC_ECORRUPT, 1, 4, "end of input");
}

/* Long keys are shortened in messages, on a character boundary. */
static void test_long_key_message(void **state)
{
    struct dc_buf b;
    struct dc_toml_value *root = NULL;
    struct dc_toml_error err;
    size_t i;

    (void)state;
    dc_buf_init(&b, 0);
    for (i = 0; i < 2; i++) {
        size_t j;

        assert_int_equal(dc_buf_append_str(&b, "\""), 0);
        for (j = 0; j < 300; j++)
            assert_int_equal(dc_buf_append_str(&b, "\xc3\xa9"), 0);
        assert_int_equal(dc_buf_append_str(&b, "\" = 1\n"), 0);
    }
    assert_int_equal(dc_toml_parse((const char *)b.data, b.len, &root, &err), DC_ECORRUPT);
    assert_int_equal(err.line, 2);
    assert_int_equal(err.column, 1);
    assert_non_null(strstr(err.message, "duplicate key '\xc3\xa9"));
    assert_non_null(strstr(err.message, "\xc3\xa9...'"));
    dc_buf_cleanup(&b);
}

static void test_table_rules(void **state)
{
    struct dc_toml_value *root;

    (void)state;
    /* Defining a parent after its children is fine, once. */
    root = parse_ok("[a.b.c]\nx = 1\n[a]\ny = 2\n");
    dc_toml_free(root);
    /* Headers may add sub-tables to tables made by dotted keys. */
    root = parse_ok("[fruit]\napple.color = 'red'\n[fruit.apple.texture]\nsmooth = true\n");
    dc_toml_free(root);
    expect_error("[fruit]\napple.color = 'red'\n[fruit.apple]\n", DC_ECORRUPT, 3, 8,
                 "already defined");
    expect_error("[a.b.c]\n[a]\nb.c.d = 1\n", DC_ECORRUPT, 3, 1, "dotted keys");
    expect_error("[a]\n[[a]]\n", DC_ECORRUPT, 2, 3, "already defined");
    expect_error("a = {}\n[a.b]\n", DC_ECORRUPT, 2, 2, "inline");
}

static void test_limits(void **state)
{
    char *deep;
    size_t i, n = 1000;
    struct dc_toml_value *root = NULL;
    struct dc_toml_error err;
    struct dc_buf b;

    (void)state;
    /* Deeply nested arrays. */
    deep = dc_malloc(2 * n + 8);
    assert_non_null(deep);
    memcpy(deep, "a = ", 4);
    for (i = 0; i < n; i++)
        deep[4 + i] = '[';
    for (i = 0; i < n; i++)
        deep[4 + n + i] = ']';
    deep[4 + 2 * n] = '\0';
    assert_int_equal(dc_toml_parse(deep, strlen(deep), &root, &err), DC_ELIMIT);
    assert_null(root);
    assert_non_null(strstr(err.message, "deep"));
    dc_free(deep);

    /* 128 levels are fine, one more is not: inline tables and dotted keys count alike. */
    dc_buf_init(&b, 0);
    assert_int_equal(dc_buf_append_str(&b, "a"), 0);
    for (i = 1; i < DC_TOML_MAX_DEPTH; i++)
        assert_int_equal(dc_buf_append_str(&b, ".a"), 0);
    assert_int_equal(dc_buf_append_str(&b, " = 1\n"), 0);
    root = parse_ok((const char *)b.data);
    dc_toml_free(root);
    dc_buf_reset(&b);
    assert_int_equal(dc_buf_append_str(&b, "[a"), 0);
    for (i = 1; i < DC_TOML_MAX_DEPTH; i++)
        assert_int_equal(dc_buf_append_str(&b, ".a"), 0);
    assert_int_equal(dc_buf_append_str(&b, "]\nb.c = 1\n"), 0);
    assert_int_equal(dc_toml_parse((const char *)b.data, b.len, &root, &err), DC_ELIMIT);
    assert_null(root);
    assert_int_equal(err.line, 2);
    dc_buf_cleanup(&b);

    /* Oversized input is refused before it is read. */
    assert_int_equal(dc_toml_parse("", (size_t)DC_TOML_MAX_INPUT + 1, &root, &err), DC_ELIMIT);
    assert_null(root);
    assert_non_null(strstr(err.message, "larger"));

    /* A NULL error pointer is allowed. */
    assert_int_equal(dc_toml_parse("x", 1, &root, NULL), DC_ECORRUPT);
}

static void test_empty_and_bom(void **state)
{
    struct dc_toml_value *root;

    (void)state;
    assert_int_equal(dc_toml_parse(NULL, 0, &root, NULL), 0);
    assert_int_equal(dc_toml_len(root), 0);
    dc_toml_free(root);
    root = parse_ok("\xef\xbb\xbf"
                    "a = 1");
    assert_int_equal(dc_toml_int(dc_toml_get(root, "a")), 1);
    dc_toml_free(root);
    /* The mark does not count as a column, and is only allowed at the very start. */
    expect_error("\xef\xbb\xbf"
                 "a = x\n",
                 DC_ECORRUPT, 1, 5, "value");
    expect_error("a = 1\n\xef\xbb\xbf", DC_ECORRUPT, 2, 1, "key");
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(dc_toml_type_name(DC_TOML_STRING), "string");
    assert_string_equal(dc_toml_type_name(DC_TOML_INTEGER), "integer");
    assert_string_equal(dc_toml_type_name(DC_TOML_FLOAT), "float");
    assert_string_equal(dc_toml_type_name(DC_TOML_BOOL), "bool");
    assert_string_equal(dc_toml_type_name(DC_TOML_DATETIME), "datetime");
    assert_string_equal(dc_toml_type_name(DC_TOML_DATETIME_LOCAL), "datetime-local");
    assert_string_equal(dc_toml_type_name(DC_TOML_DATE_LOCAL), "date-local");
    assert_string_equal(dc_toml_type_name(DC_TOML_TIME_LOCAL), "time-local");
    assert_string_equal(dc_toml_type_name(DC_TOML_ARRAY), "array");
    assert_string_equal(dc_toml_type_name(DC_TOML_TABLE), "table");
}

/* Fails the 1st, 2nd, 3rd... allocation of a rich parse: each must end in DC_ENOMEM with no
 * output and no leak, until the parse finally has all it needs. */
static void test_alloc_failure(void **state)
{
    struct dc_toml_value *root;
    struct dc_toml_error err;
    long n;
    int rc;

    (void)state;
    for (n = 0;; n++) {
        root = (struct dc_toml_value *)&root;
        dc_alloc_fail_after(n);
        rc = dc_toml_parse(rich_doc, strlen(rich_doc), &root, &err);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(root);
        assert_true(err.message[0] != '\0');
        assert_true(n < 100000);
    }
    assert_true(n > 50); /* the document needs many allocations; all of them were tried */
    assert_string_equal(
        dc_toml_string(dc_toml_get(dc_toml_at(dc_toml_get(root, "peers"), 1), "id"), NULL), "b");
    dc_toml_free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_order_and_big_table),
        cmocka_unit_test(test_nul_in_keys_and_strings),
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_long_key_message),
        cmocka_unit_test(test_table_rules),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_empty_and_bom),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

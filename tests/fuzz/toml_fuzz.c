/* SPDX-License-Identifier: MIT */
/*
 * toml_fuzz.c - libFuzzer harness for the TOML decoder. Parses the input; on success walks the
 * whole tree through the public getters (so every stored value is read back under ASan) and
 * checks a few invariants; on failure checks that the error is one of the documented codes and
 * that its position and message are filled in. The seed corpus is tests/fuzz/corpus/toml/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk(const struct dc_toml_value *v, unsigned depth)
{
    size_t n = 1, i, len;
    const struct dc_toml_value *child;
    const char *key, *s;

    if (depth > DC_TOML_MAX_DEPTH + 1)
        abort();
    switch (dc_toml_type(v)) {
    case DC_TOML_TABLE:
        for (i = 0; i < dc_toml_len(v); i++) {
            key = dc_toml_key_at_len(v, i, &len, &child);
            if (key == NULL || child == NULL || key[len] != '\0')
                abort();
            /* Hashed lookup must find exactly the entry that iteration found. */
            if (dc_toml_get_len(v, key, len) != child)
                abort();
            n += walk(child, depth + 1);
        }
        break;
    case DC_TOML_ARRAY:
        for (i = 0; i < dc_toml_len(v); i++)
            n += walk(dc_toml_at(v, i), depth + 1);
        break;
    case DC_TOML_STRING:
        s = dc_toml_string(v, &len);
        if (s == NULL || s[len] != '\0')
            abort();
        break;
    case DC_TOML_INTEGER:
        (void)dc_toml_int(v);
        break;
    case DC_TOML_FLOAT:
        (void)dc_toml_float(v);
        break;
    case DC_TOML_BOOL:
        (void)dc_toml_bool(v);
        break;
    default:
        if (dc_toml_datetime(v) == NULL)
            abort();
        break;
    }
    if (dc_toml_type_name(dc_toml_type(v)) == NULL)
        abort();
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dc_toml_value *root = NULL;
    struct dc_toml_error err;
    int rc = dc_toml_parse((const char *)data, size, &root, &err);

    if (rc == 0) {
        if (root == NULL || dc_toml_type(root) != DC_TOML_TABLE)
            abort();
        (void)walk(root, 0);
        dc_toml_free(root);
        return 0;
    }
    if (root != NULL)
        abort();
    if (rc != DC_ECORRUPT && rc != DC_ELIMIT && rc != DC_ENOMEM)
        abort();
    if (err.line == 0 || err.column == 0 || err.message[0] == '\0' ||
        strnlen(err.message, sizeof(err.message)) == sizeof(err.message))
        abort();
    return 0;
}

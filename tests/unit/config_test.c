/* SPDX-License-Identifier: MIT */
/*
 * config_test.c - the configuration loader: defaults, the file/env/flag precedence, every kind
 * of validation error (each naming file, line and key), secrets from files, and that the
 * committed config.example.toml and docs/configuration.md are what the schema prints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/config.h"

static char tmpdir[] = "/tmp/dc-config-test-XXXXXX";

static const char *write_tmp(const char *name, const char *text)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int load(struct dc_config *cfg, const char *path, char **env,
                const struct dc_config_flag *flags, size_t n, char *err)
{
    return dc_config_load(cfg, path, env, flags, n, err, 512);
}

static void test_defaults(void **state)
{
    struct dc_config cfg;
    char err[512];
    char *env[] = {"XDG_DATA_HOME=/xdg", "HOME=/home/u", NULL};
    char *env_home[] = {"HOME=/home/u", NULL};

    (void)state;
    assert_int_equal(load(&cfg, NULL, env, NULL, 0, err), 0);
    assert_int_equal(cfg.rest_port, 8080);
    assert_int_equal(cfg.grpc_port, 50051);
    assert_int_equal(cfg.ws_port, 8081);
    assert_string_equal(cfg.bind, "127.0.0.1");
    assert_string_equal(cfg.models_dir, "./models");
    assert_int_equal(cfg.listen_addresses.n, 1);
    assert_string_equal(cfg.listen_addresses.items[0], "/ip4/0.0.0.0/tcp/4001");
    assert_int_equal(cfg.bootstrap_nodes.n, 0);
    assert_string_equal(cfg.log_level, "info");
    assert_string_equal(cfg.state_dir, "/xdg/democritus");
    assert_null(cfg.source_path);
    dc_config_cleanup(&cfg);
    assert_int_equal(load(&cfg, NULL, env_home, NULL, 0, err), 0);
    assert_string_equal(cfg.state_dir, "/home/u/.local/share/democritus");
    dc_config_cleanup(&cfg);
}

static void test_precedence(void **state)
{
    struct dc_config cfg;
    char err[512];
    const char *path =
        write_tmp("prec.toml", "[api]\nrest_port = 1111\ngrpc_port = 2222\n"
                               "ws_port = 3333\n[node]\nlisten_addresses = "
                               "[\"/ip4/127.0.0.1/tcp/1\", \"/ip4/127.0.0.1/tcp/2\"]\n");
    char *env[] = {"DEMOCRITUS_API_GRPC_PORT=4444", "DEMOCRITUS_API_WS_PORT=5555",
                   "DEMOCRITUS_LOG_LEVEL=debug", NULL};
    struct dc_config_flag flags[] = {{"ws-port", "6666"}, {"listen", "/ip4/127.0.0.1/tcp/0"}};

    (void)state;
    assert_int_equal(load(&cfg, path, env, flags, 2, err), 0);
    assert_int_equal(cfg.rest_port, 1111); /* file */
    assert_int_equal(cfg.grpc_port, 4444); /* env over file */
    assert_int_equal(cfg.ws_port, 6666);   /* flag over env */
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.listen_addresses.n, 1); /* a list flag replaces the file's list */
    assert_string_equal(cfg.listen_addresses.items[0], "/ip4/127.0.0.1/tcp/0");
    assert_string_equal(cfg.source_path, path);
    dc_config_cleanup(&cfg);
}

static void test_repeatable_flag(void **state)
{
    struct dc_config cfg;
    char err[512];
    struct dc_config_flag flags[] = {{"api-key", "k1"}, {"api-key", "k2"}};
    char *env[] = {"DEMOCRITUS_API_API_KEYS=e1,e2,e3", NULL};

    (void)state;
    assert_int_equal(load(&cfg, NULL, env, flags, 2, err), 0);
    assert_int_equal(cfg.api_keys.n, 2);
    assert_string_equal(cfg.api_keys.items[1], "k2");
    dc_config_cleanup(&cfg);
    assert_int_equal(load(&cfg, NULL, env, NULL, 0, err), 0);
    assert_int_equal(cfg.api_keys.n, 3);
    dc_config_cleanup(&cfg);
}

/* Each bad input must fail with DC_ECONFIG and a message containing 'expect'. */
static void expect_error(const char *toml, char **env, const struct dc_config_flag *flags, size_t n,
                         const char *expect)
{
    struct dc_config cfg;
    char err[512];
    const char *path = toml ? write_tmp("bad.toml", toml) : NULL;
    int rc = load(&cfg, path, env, flags, n, err);

    if (rc != DC_ECONFIG || strstr(err, expect) == NULL)
        fail_msg("rc=%d err='%s', expected '%s'", rc, err, expect);
}

static void test_errors(void **state)
{
    char *env_port[] = {"DEMOCRITUS_API_REST_PORT=99999", NULL};
    char *env_nan[] = {"DEMOCRITUS_ENGINE_THREADS=many", NULL};
    struct dc_config_flag bad_level[] = {{"log-level", "loud"}};
    struct dc_config_flag bad_psk[] = {{"private-swarm-key", "s3cr3t-not-hex"}};

    (void)state;
    expect_error("[api]\nrest_port = 70000\n", NULL, NULL, 0,
                 "bad.toml:2: [api] rest_port: 70000 is out of range (0 to 65535)");
    expect_error("[node]\nname = \"x\"\n\nnmae = \"y\"\n", NULL, NULL, 0,
                 "bad.toml:4: [node] unknown key 'nmae' (did you mean 'name'?)");
    expect_error("[api]\nrest_port = \"8080\"\n", NULL, NULL, 0,
                 "bad.toml:2: [api] rest_port: expected an integer, got string");
    expect_error("[bogus]\nx = 1\n", NULL, NULL, 0, "bad.toml:1: unknown section [bogus]");
    expect_error("[node]\nlisten_addresses = [1, 2]\n", NULL, NULL, 0,
                 "expected an array of strings");
    expect_error("[api\nrest_port = 1\n", NULL, NULL, 0, "bad.toml:1:");
    expect_error(NULL, env_port, NULL, 0, "environment DEMOCRITUS_API_REST_PORT: 99999 is out");
    expect_error(NULL, env_nan, NULL, 0, "'many' is not an integer");
    expect_error(NULL, NULL, bad_level, 1, "--log-level: must be one of error|warn|info");
    expect_error("[expert]\nbackend = \"upstream\"\n", NULL, NULL, 0, "needs [expert] upstream");
    expect_error(NULL, NULL, bad_psk, 1, "--private-swarm-key: must be 64 hexadecimal digits");
    expect_error("[api]\nws_max_message_bytes = 100\n", NULL, NULL, 0,
                 "[api] ws_max_message_bytes: 100 is out of range (1024 to 67108864)");
    expect_error("[api]\ngrpc_max_message_bytes = 134217728\n", NULL, NULL, 0,
                 "[api] grpc_max_message_bytes: 134217728 is out of range (1024 to 67108864)");
}

/* The message limits of WebSocket and gRPC: defaults as the compile-time ones were, and
 * settable by file, environment and flag. */
static void test_message_limits(void **state)
{
    struct dc_config cfg;
    char err[512];
    char *env[] = {"DEMOCRITUS_API_GRPC_MAX_MESSAGE_BYTES=65536", NULL};
    struct dc_config_flag flags[] = {{"ws-max-message-bytes", "4096"}};

    (void)state;
    assert_int_equal(load(&cfg, NULL, NULL, NULL, 0, err), 0);
    assert_int_equal(cfg.ws_max_message_bytes, 1 << 20);
    assert_int_equal(cfg.grpc_max_message_bytes, 4 << 20);
    dc_config_cleanup(&cfg);
    assert_int_equal(load(&cfg, NULL, env, flags, 1, err), 0);
    assert_int_equal(cfg.ws_max_message_bytes, 4096);
    assert_int_equal(cfg.grpc_max_message_bytes, 65536);
    dc_config_cleanup(&cfg);
}

static void test_secret_not_echoed(void **state)
{
    struct dc_config cfg;
    char err[512];
    struct dc_config_flag bad_psk[] = {{"private-swarm-key", "s3cr3t-not-hex"}};

    (void)state;
    assert_int_equal(load(&cfg, NULL, NULL, bad_psk, 1, err), DC_ECONFIG);
    assert_null(strstr(err, "s3cr3t"));
}

static void test_missing_file(void **state)
{
    struct dc_config cfg;
    char err[512];

    (void)state;
    assert_int_equal(load(&cfg, "/nonexistent/dc.toml", NULL, NULL, 0, err), -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/dc.toml"));
}

static void test_api_key_file(void **state)
{
    struct dc_config cfg;
    char err[512], flagval[512];
    struct dc_config_flag flags[] = {{"api-key-file", flagval}};

    (void)state;
    snprintf(flagval, sizeof(flagval), "%s",
             write_tmp("keys", "# comment\nkey-one\n\n key-two \n"));
    assert_int_equal(load(&cfg, NULL, NULL, flags, 1, err), 0);
    assert_int_equal(dc_config_load_secrets(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.api_keys.n, 2);
    assert_string_equal(cfg.api_keys.items[0], "key-one");
    assert_string_equal(cfg.api_keys.items[1], "key-two");
    dc_config_cleanup(&cfg);
}

static void test_alloc_failures(void **state)
{
    const char *path =
        write_tmp("rich.toml", "[node]\nname = \"n\"\nlisten_addresses = "
                               "[\"/ip4/127.0.0.1/tcp/1\"]\n[api]\nbind = \"::1\"\n");
    char *env[] = {"DEMOCRITUS_NODE_BOOTSTRAP_NODES=a,b", NULL};
    struct dc_config_flag flags[] = {{"api-key", "k"}};
    struct dc_config cfg;
    char err[512];
    int rc = DC_ENOMEM;

    (void)state;
    for (long n = 0; rc == DC_ENOMEM; n++) {
        dc_alloc_fail_after(n);
        rc = load(&cfg, path, env, flags, 1, err);
        dc_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == DC_ENOMEM);
        assert_true(n < 10000);
    }
    dc_config_cleanup(&cfg);
}

/* Compares a committed file with what a writer prints now. */
static void expect_generated(const char *relpath, void (*writer)(FILE *), const char *marker)
{
    char path[512], *committed = NULL, *generated = NULL;
    size_t clen = 0, glen = 0;
    FILE *f, *mem;

    snprintf(path, sizeof(path), "%s/%s", DC_SOURCE_DIR, relpath);
    f = fopen(path, "r");
    assert_non_null(f);
    mem = open_memstream(&committed, &clen);
    for (int c; (c = fgetc(f)) != EOF;)
        fputc(c, mem);
    fclose(mem);
    fclose(f);
    mem = open_memstream(&generated, &glen);
    writer(mem);
    fclose(mem);
    if (marker != NULL) {
        /* The docs page holds the table after a marker line; compare from there. */
        char *at = strstr(committed, marker);
        assert_non_null(at);
        at += strlen(marker);
        if (strncmp(at, generated, glen) != 0)
            fail_msg("%s is out of date: run `make docs`", relpath);
    } else if (strcmp(committed, generated) != 0) {
        fail_msg("%s is out of date: run `make docs`", relpath);
    }
    free(committed);
    free(generated);
}

static void test_generated_files_current(void **state)
{
    (void)state;
    expect_generated("config.example.toml", dc_config_write_example, NULL);
    expect_generated("docs/configuration.md", dc_config_write_docs,
                     "<!-- generated: democritus config docs -->\n");
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    char cmd[600];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_repeatable_flag), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_message_limits),  cmocka_unit_test(test_secret_not_echoed),
        cmocka_unit_test(test_missing_file),    cmocka_unit_test(test_api_key_file),
        cmocka_unit_test(test_alloc_failures),  cmocka_unit_test(test_generated_files_current),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* SPDX-License-Identifier: MIT */
/*
 * opts.c - the option parser every command shares. GNU-style long options (--name VALUE,
 * --name=VALUE), a few short ones, "--" to end options. Configuration flags are collected in
 * order and handed to dc_config_load(), which owns their meaning and validation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli/cli.h"

extern char **environ;

static void print_help(const struct cli_ctx *ctx, FILE *f)
{
    fprintf(f, "usage: democritus %s\n", ctx->usage);
    if (ctx->summary != NULL)
        fprintf(f, "\n%s\n", ctx->summary);
    fputs("\noptions:\n", f);
    for (size_t i = 0; i < ctx->n_opts; i++) {
        const struct cli_opt *o = &ctx->opts[i];
        char left[64];
        if (o->short_name)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", o->short_name, o->name,
                     o->kind == CLI_VALUE ? " " : "", o->kind == CLI_VALUE ? o->arg : "");
        else
            snprintf(left, sizeof(left), "--%s%s%s", o->name, o->kind == CLI_VALUE ? " " : "",
                     o->kind == CLI_VALUE ? o->arg : "");
        fprintf(f, "  %-30s %s\n", left, o->help);
    }
    fprintf(f, "  %-30s %s\n", "--config FILE", "configuration file (default ./config.toml)");
    fprintf(f, "  %-30s %s\n", "-h, --help", "show this help");
    fputs("\nconfiguration flags (override config file and environment):\n", f);
    dc_config_write_flag_help(f);
}

int cli_usage_error(const struct cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "democritus %s: ", ctx->cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: democritus %s\nTry 'democritus %s --help'.\n", ctx->usage, ctx->cmd);
    return 2;
}

static const struct cli_opt *find_opt(const struct cli_ctx *ctx, const char *name, size_t len,
                                      char short_name)
{
    for (size_t i = 0; i < ctx->n_opts; i++) {
        const struct cli_opt *o = &ctx->opts[i];
        if (short_name != 0 ? o->short_name == short_name
                            : strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    }
    return NULL;
}

int cli_parse(struct cli_ctx *ctx, int argc, char **argv, size_t max_pos, bool *done)
{
    bool only_pos = false;

    *done = false;
    ctx->n_flags = 0;
    ctx->n_pos = 0;
    ctx->config_path = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *name, *eq, *value = NULL;
        const struct cli_opt *o;
        size_t len;
        char flagname[64];

        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (ctx->n_pos >= max_pos || ctx->n_pos >= CLI_MAX_POS)
                return cli_usage_error(ctx, "unexpected argument '%s'", a);
            ctx->pos[ctx->n_pos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_help(ctx, stdout);
            *done = true;
            return 0;
        }
        if (a[1] != '-') {
            /* A short option: -x or -x VALUE. */
            o = a[2] == '\0' ? find_opt(ctx, NULL, 0, a[1]) : NULL;
            if (o == NULL)
                return cli_usage_error(ctx, "unknown option '%s'", a);
            if (o->kind == CLI_BOOL) {
                *o->set = true;
            } else {
                if (i + 1 >= argc)
                    return cli_usage_error(ctx, "option '%s' needs a value", a);
                *o->value = argv[++i];
            }
            continue;
        }
        name = a + 2;
        eq = strchr(name, '=');
        len = eq ? (size_t)(eq - name) : strlen(name);
        if (eq != NULL)
            value = eq + 1;
        o = find_opt(ctx, name, len, 0);
        if (o != NULL && o->kind == CLI_BOOL) {
            if (value != NULL)
                return cli_usage_error(ctx, "option '--%.*s' takes no value", (int)len, name);
            *o->set = true;
            continue;
        }
        if (len >= sizeof(flagname))
            return cli_usage_error(ctx, "unknown option '%s'", a);
        memcpy(flagname, name, len);
        flagname[len] = '\0';
        bool is_config = strcmp(flagname, "config") == 0;
        if (o == NULL && !is_config && !dc_config_is_flag(flagname, NULL))
            return cli_usage_error(ctx, "unknown option '--%s'", flagname);
        if (value == NULL) {
            if (i + 1 >= argc)
                return cli_usage_error(ctx, "option '--%s' needs a value", flagname);
            value = argv[++i];
        }
        if (o != NULL) {
            *o->value = value;
        } else if (is_config) {
            ctx->config_path = value;
        } else {
            if (ctx->n_flags >= CLI_MAX_FLAGS)
                return cli_usage_error(ctx, "too many options");
            /* The name points into argv, which outlives the command. */
            ctx->flags[ctx->n_flags].name = name;
            ctx->flags[ctx->n_flags].value = value;
            if (eq != NULL) {
                /* Terminate the name inside argv: "--rest-port=0" -> "rest-port". */
                argv[i][2 + len] = '\0';
            }
            ctx->n_flags++;
        }
    }
    return 0;
}

int cli_load_config(const struct cli_ctx *ctx, struct dc_config *cfg)
{
    enum dc_log_level level;
    enum dc_log_format format;
    char err[1024];
    int rc;

    rc = dc_config_load(cfg, ctx->config_path, environ, ctx->flags, ctx->n_flags, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "democritus %s: %s\n", ctx->cmd, err);
        return 2;
    }
    rc = dc_config_load_secrets(cfg, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "democritus %s: %s\n", ctx->cmd, err);
        dc_config_cleanup(cfg);
        return 2;
    }
    /* Both were validated against their choices by the schema. */
    if (dc_log_level_parse(cfg->log_level, &level) < 0)
        level = DC_LOG_INFO;
    if (dc_log_format_parse(cfg->log_format, &format) < 0)
        format = DC_LOG_FORMAT_TEXT;
    dc_log_setup(level, format, 2);
    return 0;
}

int cli_not_built(const struct cli_ctx *ctx, const char *what)
{
    fprintf(stderr, "democritus %s: not available in this build yet (%s)\n", ctx->cmd, what);
    return 1;
}

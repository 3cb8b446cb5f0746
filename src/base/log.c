/* SPDX-License-Identifier: MIT */
/*
 * log.c - formats each line into a stack buffer and writes it with one write(2), so lines from
 * different threads never interleave. Messages longer than the buffer are cut with "...".
 */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static enum dc_log_level log_level = DC_LOG_INFO;
static enum dc_log_format log_format = DC_LOG_FORMAT_TEXT;
static int log_fd = 2;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

void dc_log_setup(enum dc_log_level level, enum dc_log_format format, int fd)
{
    log_level = level;
    log_format = format;
    log_fd = fd;
}

bool dc_log_enabled(enum dc_log_level level)
{
    return level <= log_level;
}

const char *dc_log_level_name(enum dc_log_level level)
{
    if ((unsigned)level >= DC_ARRAY_LEN(level_names))
        return "?";
    return level_names[level];
}

int dc_log_level_parse(const char *s, enum dc_log_level *out)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum dc_log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = DC_LOG_WARN;
        return 0;
    }
    return DC_EINVAL;
}

int dc_log_format_parse(const char *s, enum dc_log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = DC_LOG_FORMAT_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = DC_LOG_FORMAT_JSON;
    else
        return DC_EINVAL;
    return 0;
}

/* Appends 's' JSON-escaped to dst[*pos..cap), always leaving room for the line's tail. */
static void json_escape(char *dst, size_t *pos, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t p = *pos;

    for (; *s != '\0' && p + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[p++] = '\\';
            dst[p++] = (char)c;
        } else if (c == '\n') {
            dst[p++] = '\\';
            dst[p++] = 'n';
        } else if (c < 0x20) {
            memcpy(dst + p, "\\u00", 4);
            dst[p + 4] = hex[c >> 4];
            dst[p + 5] = hex[c & 15];
            p += 6;
        } else {
            dst[p++] = (char)c;
        }
    }
    *pos = p;
}

void dc_log(enum dc_log_level level, const char *component, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX], line[LOG_LINE_MAX + 256], ts[40];
    struct timespec now;
    struct tm tm;
    va_list ap;
    size_t pos;
    int n;

    if (!dc_log_enabled(level))
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(msg))
        memcpy(msg + sizeof(msg) - 4, "...", 4);

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    /* 24 bytes for any year up to 9999; a later one is cut, not overrun. */
    if (snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 now.tv_nsec / 1000000) >= (int)sizeof(ts))
        ts[sizeof(ts) - 1] = '\0';

    if (log_format == DC_LOG_FORMAT_JSON) {
        pos =
            (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"",
                             ts, dc_log_level_name(level));
        json_escape(line, &pos, sizeof(line), component);
        memcpy(line + pos, "\",\"msg\":\"", 9);
        pos += 9;
        json_escape(line, &pos, sizeof(line), msg);
        memcpy(line + pos, "\"}\n", 3);
        pos += 3;
    } else {
        n = snprintf(line, sizeof(line), "%s %-5s %s: %s\n", ts, dc_log_level_name(level),
                     component, msg);
        pos = n < 0 ? 0 : (size_t)n;
        if (pos >= sizeof(line)) {
            pos = sizeof(line) - 1;
            line[pos - 1] = '\n';
        }
    }
    /* A failed log write has nowhere to be reported; ignore it. */
    if (write(log_fd, line, pos) < 0)
        return;
}

/* SPDX-License-Identifier: MIT */
/*
 * log.h - the daemon's log: one line per event on stderr, as text or as JSON lines. Set up once
 * by main() before any thread starts; after that only read, so logging needs no locking beyond
 * a single write(2) per line. Never pass secrets (keys, PSKs, API keys) to it.
 */
#ifndef DC_LOG_H
#define DC_LOG_H

#include "base/base.h"

enum dc_log_level {
    DC_LOG_ERROR = 0,
    DC_LOG_WARN,
    DC_LOG_INFO,
    DC_LOG_DEBUG,
    DC_LOG_TRACE,
};

enum dc_log_format {
    DC_LOG_FORMAT_TEXT = 0,
    DC_LOG_FORMAT_JSON,
};

/* Sets the threshold and format (defaults: info, text) and the file descriptor (default 2). */
void dc_log_setup(enum dc_log_level level, enum dc_log_format format, int fd);

/* True when a message at 'level' would be written (to skip costly formatting). */
bool dc_log_enabled(enum dc_log_level level);

/* Parses "error", "warn", "info", "debug", "trace". Returns 0 or DC_EINVAL. */
DC_MUST_CHECK int dc_log_level_parse(const char *s, enum dc_log_level *out);
/* Parses "text" or "json". Returns 0 or DC_EINVAL. */
DC_MUST_CHECK int dc_log_format_parse(const char *s, enum dc_log_format *out);
const char *dc_log_level_name(enum dc_log_level level);

/* Writes one line: timestamp, level, component ("daemon", "p2p", ...) and the message. */
void dc_log(enum dc_log_level level, const char *component, const char *fmt, ...) DC_PRINTF(3, 4);

#define dc_log_error(comp, ...) dc_log(DC_LOG_ERROR, comp, __VA_ARGS__)
#define dc_log_warn(comp, ...)  dc_log(DC_LOG_WARN, comp, __VA_ARGS__)
#define dc_log_info(comp, ...)  dc_log(DC_LOG_INFO, comp, __VA_ARGS__)
#define dc_log_debug(comp, ...) dc_log(DC_LOG_DEBUG, comp, __VA_ARGS__)

#endif

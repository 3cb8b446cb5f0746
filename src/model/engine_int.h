/* SPDX-License-Identifier: MIT */
/*
 * engine_int.h - what the engine's own files (engine.c, engine_text.c) and its unit test
 * share: the engine and request structures, and the text helpers the scheduler uses for its
 * output (UTF-8 completion, stop-string hold-back). Not for other modules: they see engine.h.
 */
#ifndef DC_ENGINE_INT_H
#define DC_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <llama.h>

#include "model/engine.h"

/* The built-in GBNF grammar that json_object requests use: one JSON object, bounded
 * whitespace. */
extern const char dc_engine_json_gbnf[];

/*
 * Moves the whole UTF-8 characters at the front of 'raw' ('*n_raw' bytes) into 'out', replacing
 * each invalid byte with U+FFFD. An incomplete character at the end stays in 'raw' (moved to its
 * front) unless 'final', when it becomes U+FFFD too. Returns 0 or DC_ENOMEM / DC_ELIMIT from
 * 'out'.
 */
DC_MUST_CHECK int dc_engine_utf8_take(uint8_t *raw, size_t *n_raw, bool final, struct dc_buf *out);

/*
 * Copies 'n' bytes of 'in' into 'out' ('cap' bytes, NUL-ended) as valid UTF-8: invalid bytes
 * become U+FFFD and the copy stops at the last whole character that fits. Returns its length.
 */
size_t dc_engine_utf8_clean(const char *in, size_t n, char *out, size_t cap);

/*
 * Stop-string scan of the unsent text 't' ('n' bytes). Returns the offset of the earliest full
 * match of any of the 'n_stop' strings and sets '*matched'; otherwise clears '*matched' and
 * returns how many bytes may be released now: 'n' minus the longest suffix that is a proper
 * prefix of some stop string (held back until the next token decides it).
 */
size_t dc_engine_stop_scan(const char *t, size_t n, char *const *stop, const size_t *stop_len,
                           size_t n_stop, bool *matched);

/* What the scheduler measured of its own steps (for the unit test and diagnostics). */
struct dc_engine_step_stats {
    uint32_t budget_ms;          /* the step budget in force */
    uint64_t steps;              /* decodes the scheduler ran for generation */
    uint64_t budgeted;           /* of which carried prompt tokens and more than one sequence and
                                    could not be stopped by a cancel: the steps the budget governs */
    uint64_t budgeted_over;      /* of those, how many took more than twice the budget */
    double budgeted_ms_max;      /* the longest of those, decode and output handling */
    uint64_t budgeted_pred_over; /* of those, how many the cost estimate at the time predicted
                                    over the budget with more than the least prompt chunk: the
                                    scheduler's own promise, 0 unless it is broken */
    double ms_per_token;         /* the current cost estimate, 0 before the first timed step */
    uint64_t aborted;            /* decodes stopped because every sequence in them was cancelled */
    uint64_t queue_reaped;       /* cancelled queued requests ended from inside a decode */
};

/* Thread-safe snapshot of the step statistics. */
void dc_engine_step_stats(struct dc_engine *e, struct dc_engine_step_stats *out);

/* Test hook: from now on the engine behaves as on a backend that never stops a decode (the
 * abort callback honours only close), so the step budget is what bounds a cancel. Call it
 * before the first submit. */
void dc_engine_test_no_abort(struct dc_engine *e);

/* Longest common prefix of two token arrays. */
size_t dc_engine_lcp(const int32_t *a, size_t na, const int32_t *b, size_t nb);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * registry_int.h - internals of the registry shared by its files (registry.c, probe.c,
 * pull.c) and its unit test: the child-process probe load (direct or through the prober
 * process), the streaming file hash, and
 * counters that let the test see what the registry did (hashed a file, forked a probe).
 */
#ifndef DC_REGISTRY_INT_H
#define DC_REGISTRY_INT_H

#include <stdatomic.h>

#include "model/engine.h"

/*
 * Loads 'path' with llama.cpp in a child forked from this process (CPU only, a small context,
 * one decoded token) and waits at most 'timeout_ms' (0 = 5 minutes). Safe only while this
 * process has a single thread (see dc_prober_start for the general case). The child's llama.cpp
 * errors and abort messages go to a pipe; the last line becomes part of the error. Returns 0 when
 * the child exited 0; DC_EUNSUPPORTED when it failed, died of a signal or was killed at the
 * timeout, with '*err' (heap) one line such as "llama.cpp rejected m.gguf: child died with signal 6
 * (Aborted): GGML_ASSERT(...) failed"; -errno when fork or pipe failed; DC_ENOMEM. 'n_threads'
 * bounds the child's compute threads.
 */
DC_MUST_CHECK int dc_model_probe(const char *path, int n_threads, uint32_t timeout_ms, char **err);

/*
 * The prober: a single-threaded helper process forked now (call this early, before the process
 * starts other threads) that forks every probe child, so no probe inherits another thread's
 * locks. dc_prober_probe() is dc_model_probe() run through it (thread-safe, one probe at a time;
 * DC_ECLOSED when the prober is gone). dc_prober_stop() closes it and reaps it; NULL is a no-op.
 */
struct dc_prober;
DC_MUST_CHECK int dc_prober_start(struct dc_prober **out);
DC_MUST_CHECK int dc_prober_probe(struct dc_prober *p, const char *path, int n_threads,
                                  uint32_t timeout_ms, char **err);
void dc_prober_stop(struct dc_prober *p);

/* The sha256 of a file's contents, streamed, as 64 hex digits + NUL. Returns 0 or -errno. */
DC_MUST_CHECK int dc_sha256_file(const char *path, char hex[65]);
/* Same, but gives up with DC_ECANCELED between two 1 MiB reads once '*stop' is set (NULL: never).
 */
DC_MUST_CHECK int dc_sha256_file_until(const char *path, char hex[65], const atomic_bool *stop);

/* Files hashed and probe children forked since the registry opened (tests). Thread-safe. */
uint64_t dc_registry_hash_count(struct dc_registry *r);
uint64_t dc_registry_probe_count(struct dc_registry *r);

#endif

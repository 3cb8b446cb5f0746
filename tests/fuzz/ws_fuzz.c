/* SPDX-License-Identifier: MIT */
/*
 * ws_fuzz.c - libFuzzer harness for the WebSocket path after the upgrade: raw frames from a
 * client go through wslay's server context and our message handling (JSON, auth, chat
 * validation with REST's parser, cancel), on a backend without a model and with one API key.
 * The first byte picks whether the upgrade was authenticated and the feed chunk size. Checks:
 * no crash or leak under ASan/UBSan, output stays bounded while it is drained, and a conn that
 * reported a fatal error stays failed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/ws_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"fuzz-key"};
    static struct dc_rpc_config cfg = {.keys = keys, .n_keys = 1, .default_temperature = 0.7};
    struct dc_rpc_backend backend;
    struct dc_rpc_mailbox mb;
    struct dc_ws_shared sh;
    struct dc_ws_conn *c;
    size_t pos = 1, chunk;
    char err[256];
    bool failed = false;

    if (size < 1)
        return 0;
    if (dc_rpc_backend_init(&backend, &cfg, err, sizeof(err)) != 0 ||
        dc_rpc_mailbox_init(&mb, NULL) != 0)
        abort();
    memset(&sh, 0, sizeof(sh));
    sh.backend = &backend;
    sh.mb = &mb;
    sh.max_message = 4096; /* small, so the 1009 path is reachable */
    chunk = 1 + (size_t)(data[0] >> 1) * 3;
    if (dc_ws_conn_new(&sh, (data[0] & 1) != 0, &c) != 0)
        abort();
    while (pos < size) {
        size_t n = size - pos < chunk ? size - pos : chunk;
        const uint8_t *out;
        size_t out_len;
        int rc = dc_ws_conn_feed(c, data + pos, n);

        if (failed && rc == 0)
            abort(); /* a broken conn must stay broken */
        failed = rc < 0;
        pos += n;
        dc_ws_conn_output(c, &out, &out_len);
        if (out_len > DC_WS_OUT_CHUNK)
            abort();
        dc_ws_conn_consume(c, out_len);
        (void)dc_ws_conn_finished(c);
    }
    if (sh.n_calls != 0)
        abort(); /* no engine: nothing can be in flight */
    dc_ws_conn_free(c);
    dc_rpc_mailbox_cleanup(&mb);
    dc_rpc_backend_cleanup(&backend);
    return 0;
}

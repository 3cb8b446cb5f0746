/* SPDX-License-Identifier: MIT */
/*
 * grpc_fuzz.c - libFuzzer harness for the gRPC server core: raw HTTP/2 bytes from a client
 * (the connection preface is prepended when the input lacks it, so the fuzzer spends its time
 * on frames) go through an nghttp2 server session and our stream handling: header checks,
 * authorization, grpc-timeout, message framing and protobuf decoding of every method, on a
 * backend without a model and with one API key. The first byte picks the chunk size and
 * whether deadlines are expired between chunks. Checks: no crash or leak under ASan/UBSan,
 * bounded output, nothing left in flight.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/grpc_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static int feed(struct dc_grpc_conn *c, const uint8_t *p, size_t n, bool expire)
{
    const uint8_t *out;
    size_t out_len;
    int rc = dc_grpc_conn_feed(c, p, n);

    if (expire)
        dc_grpc_conn_expire(c, UINT64_MAX);
    dc_grpc_conn_output(c, &out, &out_len);
    if (out_len > DC_GRPC_OUT_CHUNK + (64u << 10))
        abort();
    dc_grpc_conn_consume(c, out_len);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"fuzz-key"};
    static struct dc_rpc_config cfg = {.keys = keys, .n_keys = 1, .default_temperature = 0.7};
    struct dc_rpc_backend backend;
    struct dc_rpc_mailbox mb;
    struct dc_grpc_shared sh;
    struct dc_grpc_conn *c;
    size_t pos = 1, chunk;
    char err[256];
    bool expire;

    if (size < 1)
        return 0;
    if (dc_rpc_backend_init(&backend, &cfg, err, sizeof(err)) != 0 ||
        dc_rpc_mailbox_init(&mb, NULL) != 0)
        abort();
    memset(&sh, 0, sizeof(sh));
    sh.backend = &backend;
    sh.mb = &mb;
    sh.max_message = 8192;
    chunk = 1 + (size_t)(data[0] >> 1) * 9;
    expire = (data[0] & 1) != 0;
    if (dc_grpc_conn_new(&sh, &c) != 0)
        abort();
    if (size - 1 < sizeof(preface) - 1 || memcmp(data + 1, preface, sizeof(preface) - 1) != 0)
        (void)feed(c, (const uint8_t *)preface, sizeof(preface) - 1, false);
    while (pos < size) {
        size_t n = size - pos < chunk ? size - pos : chunk;

        if (feed(c, data + pos, n, expire) < 0)
            break;
        pos += n;
    }
    (void)dc_grpc_conn_next_deadline(c);
    dc_grpc_conn_shutdown(c);
    if (sh.n_calls != 0)
        abort();
    dc_grpc_conn_free(c);
    dc_rpc_mailbox_cleanup(&mb);
    dc_rpc_backend_cleanup(&backend);
    return 0;
}

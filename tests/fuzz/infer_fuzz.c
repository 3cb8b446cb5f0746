/* SPDX-License-Identifier: MIT */
/*
 * infer_fuzz.c - libFuzzer harness for the /democritus/infer/1.0.0 frame decoder. The input is
 * fed to a frame reader as a byte stream, split at a point the first byte chooses, so the
 * reassembly is exercised too; every frame that decodes is verified against a fixed key (it
 * must fail cleanly: no signature made with that key is in the corpus), and a decoded request
 * is encoded again, which must succeed and decode to a frame of the same type. ASan/UBSan
 * catch the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/infer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_frame(void *ud, const struct dc_infer_frame *f)
{
    static const uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN] = {
        0x3b, 0x6a, 0x27, 0xbc, 0xce, 0xb6, 0xa4, 0x2d, 0x62, 0xa3, 0xa8,
        0xd0, 0x2a, 0x6f, 0x0d, 0x73, 0x65, 0x32, 0x15, 0x77, 0x1d, 0xe2,
        0x43, 0xa6, 0x3a, 0xc0, 0x48, 0xa1, 0x8b, 0x59, 0xda, 0x29};
    uint8_t rid[DC_INFER_REQUEST_ID_LEN] = {0};
    int rc;

    (void)ud;
    if (f->type == DC_INFER_FRAME_REQUEST) {
        struct dc_infer_frame again;
        struct dc_buf b;
        uint64_t len = 0;
        size_t pos = 0;

        dc_buf_init(&b, 0);
        rc = dc_infer_request_encode(&f->request, &b, NULL, NULL);
        if (rc == 0) {
            /* The length prefix is a protobuf varint of at most 3 bytes (1 MiB). */
            for (unsigned shift = 0; pos < b.len; shift += 7) {
                len |= (uint64_t)(b.data[pos] & 0x7f) << shift;
                if ((b.data[pos++] & 0x80) == 0)
                    break;
            }
            if (dc_infer_frame_decode(b.data + pos, (size_t)len, &again) == 0) {
                if (again.type != DC_INFER_FRAME_REQUEST)
                    abort();
                dc_infer_frame_cleanup(&again);
            } else {
                abort();
            }
        } else if (rc != DC_ELIMIT && rc != DC_ENOMEM) {
            abort();
        }
        dc_buf_cleanup(&b);
        return 0;
    }
    rc = dc_infer_frame_verify(f, pk, rid);
    if (rc == 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dc_infer_reader r;
    struct dc_infer_frame f;
    size_t split;

    /* The whole input as one frame body. */
    if (dc_infer_frame_decode(data, size, &f) == 0) {
        (void)on_frame(NULL, &f);
        dc_infer_frame_cleanup(&f);
    }
    /* And as a stream in two pieces. */
    split = size > 0 ? data[0] % (size + 1) : 0;
    dc_infer_reader_init(&r);
    if (dc_infer_reader_push(&r, data, split, on_frame, NULL) == 0)
        (void)dc_infer_reader_push(&r, data + split, size - split, on_frame, NULL);
    dc_infer_reader_cleanup(&r);
    return 0;
}

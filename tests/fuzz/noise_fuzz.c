/* SPDX-License-Identifier: MIT */
/*
 * noise_fuzz.c - libFuzzer harness for the Noise secure channel. The first input byte picks
 * what the rest attacks: (0) a responder fed raw bytes as handshake messages, (1) an
 * initiator fed them as the answer to its first message, (2) an encrypted, authenticated
 * message 2 whose payload is the input, so the payload protobuf and identity checks see
 * arbitrary bytes behind valid cryptography, (3) a completed session fed them as transport
 * frames. Chunk sizes come from the input too. Nothing may crash, leak or report success for
 * a handshake it could not have verified.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "p2p/noise.h"
#include "p2p/noise_int.h"

#define MAX_INPUT 70000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dc_identity *ida, *idb;

static void setup(void)
{
    if (ida == NULL && (dc_identity_generate(&ida) != 0 || dc_identity_generate(&idb) != 0))
        abort();
}

/* Feeds in[0..len) in chunks sized from the input; returns the first non-zero result. */
static int feed_chunked(struct dc_noise *n, const uint8_t *in, size_t len, uint8_t seed)
{
    size_t chunk = 1 + (size_t)seed * 37;
    int rc = 0;

    for (size_t off = 0; off < len && rc >= 0;) {
        size_t k = len - off < chunk ? len - off : chunk;
        rc = dc_noise_feed(n, in + off, k);
        off += k;
    }
    return rc;
}

static void drain(struct dc_noise *n)
{
    size_t len;

    (void)dc_noise_output(n, &len);
    dc_noise_output_consume(n, len);
    (void)dc_noise_plaintext(n, &len);
    dc_noise_plaintext_consume(n, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dc_noise_config ca = {.initiator = true}, cb = {.initiator = false};
    struct dc_noise *a = NULL, *b = NULL;
    uint8_t fixed[64];
    int rc;

    if (size < 2 || size > MAX_INPUT)
        return 0;
    setup();
    memset(fixed, 0x42, sizeof(fixed));
    ca.identity = ida;
    cb.identity = idb;
    ca.static_secret = cb.static_secret = fixed;
    ca.ephemeral_secret = cb.ephemeral_secret = fixed + 32;
    if (dc_noise_new(&ca, &a) != 0 || dc_noise_new(&cb, &b) != 0)
        abort();

    switch (data[0] % 4) {
    case 0:
        rc = feed_chunked(b, data + 2, size - 2, data[1]);
        if (rc == 1)
            abort(); /* a responder cannot finish without a verified message 3 */
        break;
    case 1:
        rc = feed_chunked(a, data + 2, size - 2, data[1]);
        if (rc == 1)
            abort();
        break;
    case 2: {
        struct dc_noise_hs hs;
        static uint8_t msg[2 + DC_NOISE_MAX_MESSAGE];
        uint8_t pl[64];
        const uint8_t *out;
        size_t len, n, plen = size - 2;

        if (plen > DC_NOISE_MAX_MESSAGE - 96)
            break;
        if (dc_noise_hs_init(&hs, false, NULL, 0, fixed, NULL) != 0)
            abort();
        out = dc_noise_output(a, &len);
        if (dc_noise_hs_read(&hs, out + 2, len - 2, pl, sizeof(pl), &n) != 0)
            abort();
        if (dc_noise_hs_write(&hs, data + 2, plen, msg + 2, sizeof(msg) - 2, &n) != 0)
            abort();
        msg[0] = (uint8_t)(n >> 8);
        msg[1] = (uint8_t)n;
        rc = feed_chunked(a, msg, n + 2, data[1]);
        dc_noise_hs_cleanup(&hs);
        break;
    }
    default: {
        size_t len;
        const uint8_t *out;

        out = dc_noise_output(a, &len);
        if (dc_noise_feed(b, out, len) != 0)
            abort();
        dc_noise_output_consume(a, len);
        out = dc_noise_output(b, &len);
        if (dc_noise_feed(a, out, len) != 1)
            abort();
        dc_noise_output_consume(b, len);
        out = dc_noise_output(a, &len);
        if (dc_noise_feed(b, out, len) != 1)
            abort();
        dc_noise_output_consume(a, len);
        rc = feed_chunked(b, data + 2, size - 2, data[1]);
        drain(b);
        /* Whatever came in, our own traffic must still round-trip if the session lives. */
        if (rc == 0 && dc_noise_write(a, data, size < 1000 ? size : 1000) == 0) {
            out = dc_noise_output(a, &len);
            (void)dc_noise_feed(b, out, len);
        }
        break;
    }
    }
    dc_noise_free(a);
    dc_noise_free(b);
    return 0;
}

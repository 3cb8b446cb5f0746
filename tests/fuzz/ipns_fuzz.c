/* SPDX-License-Identifier: MIT */
/*
 * ipns_fuzz.c - libFuzzer harness for the signed DHT record validators (p2p/record.h). The
 * input is offered as an IPNS record for a fixed /ipns/ key, as a Democritus signed envelope
 * for a fixed /democritus/ key, to both selectors (next to a copy of itself cut in half), to
 * the RFC 3339 parser, and as a user-typed key. Signatures cannot be forged by a fuzzer, so
 * what this exercises is the bounded parsing in front of them: protobuf, CBOR, envelope and
 * payload. Every call must return 0 or a DC_E* code; ASan/UBSan catch the rest.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "crypto/crypto.h"
#include "p2p/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t ipns_key[6 + DC_PEER_ID_MAX];
static size_t ipns_key_len;
static char demo_key[DC_KAD_MAX_KEY];
static size_t demo_key_len;

static void setup(void)
{
    uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN];
    char text[DC_PEER_ID_STR_MAX];
    struct dc_peer_id id;

    if (dc_crypto_init() < 0)
        abort();
    for (size_t i = 0; i < sizeof(pk); i++)
        pk[i] = (uint8_t)(i * 13u + 1u);
    if (dc_peer_id_from_ed25519(pk, &id) < 0 || dc_peer_id_to_string(&id, text, sizeof(text)) < 0)
        abort();
    memcpy(ipns_key, "/ipns/", 6);
    memcpy(ipns_key + 6, id.bytes, id.len);
    ipns_key_len = 6 + id.len;
    demo_key_len = (size_t)snprintf(demo_key, sizeof(demo_key), "/democritus/fuzz/%s", text);
}

/* Whether p[0..len) lies within data[0..size). */
static bool inside(const uint8_t *p, size_t len, const uint8_t *data, size_t size)
{
    return p >= data && len <= size && p - data <= (ptrdiff_t)(size - len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    struct dc_kad_validator v;
    struct dc_ipns_entry e;
    struct dc_dht_record r;
    const uint8_t *vals[2] = {data, data};
    size_t lens[2] = {size, size / 2};
    uint64_t ms;
    int rc;

    if (!ready) {
        setup();
        ready = true;
    }
    rc = dc_ipns_validate(ipns_key, ipns_key_len, data, size, 0, &e);
    if (rc > 0)
        abort();
    rc = dc_ipns_parse(data, size, &e);
    /* What was parsed borrows from the input. */
    if (rc == 0 && !inside(e.value, e.value_len, data, size))
        abort();
    if (rc == 0 && !inside(e.validity, e.validity_len, data, size))
        abort();
    dc_ipns_validator(&v);
    if (v.select(NULL, ipns_key, ipns_key_len, vals, lens, 2) > 1)
        abort();
    rc = dc_dht_record_open((const uint8_t *)demo_key, demo_key_len, data, size, 0, &r);
    if (rc > 0)
        abort();
    if (rc == 0 &&
        (!inside(r.key, r.key_len, data, size) || !inside(r.body, r.body_len, data, size)))
        abort();
    dc_dht_record_validator(&v);
    if (v.select(NULL, (const uint8_t *)demo_key, demo_key_len, vals, lens, 2) > 1)
        abort();
    (void)dc_ipns_parse_time(data, size, &ms);
    if (size < 1024) {
        char text[1024];
        uint8_t key[DC_KAD_MAX_KEY];
        size_t key_len;

        memcpy(text, data, size);
        text[size] = '\0';
        if (dc_dht_record_key_from_text(text, key, &key_len) == 0 && key_len > DC_KAD_MAX_KEY)
            abort();
    }
    return 0;
}

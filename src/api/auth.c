/* SPDX-License-Identifier: MIT */
/*
 * auth.c - API keys: the one check REST, WebSocket and gRPC share.
 *
 * Only SHA-256 hashes of the keys are kept. A presented key is hashed and compared with every
 * stored hash using sodium_memcmp, without stopping at a match, so the time taken says nothing
 * about which key (or how much of one) matched; hashing first also makes the comparison length
 * independent of the key's length.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"

struct dc_auth {
    size_t n;
    uint8_t (*hash)[crypto_hash_sha256_BYTES];
    size_t n_priority;
    char (*priority_id)[DC_AUTH_KEY_ID_LEN]; /* key ids of the priority keys */
};

static void key_id_of(const uint8_t h[crypto_hash_sha256_BYTES], char id[DC_AUTH_KEY_ID_LEN])
{
    snprintf(id, DC_AUTH_KEY_ID_LEN, "key-%02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
}

int dc_auth_new(const char *const *keys, size_t n, const char *const *priority_keys,
                size_t n_priority, struct dc_auth **out)
{
    struct dc_auth *a;

    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        if (keys[i] == NULL || keys[i][0] == '\0')
            return DC_EINVAL;
    }
    for (size_t i = 0; i < n_priority; i++) {
        bool known = false;

        if (priority_keys[i] == NULL)
            return DC_EINVAL;
        for (size_t j = 0; j < n && !known; j++)
            known = strcmp(keys[j], priority_keys[i]) == 0;
        if (!known)
            return DC_EINVAL;
    }
    if (sodium_init() < 0)
        return DC_ECRYPTO;
    a = dc_calloc(1, sizeof(*a));
    if (a == NULL)
        return DC_ENOMEM;
    if (n > 0) {
        a->hash = dc_calloc(n, sizeof(*a->hash));
        if (a->hash == NULL) {
            dc_free(a);
            return DC_ENOMEM;
        }
    }
    if (n_priority > 0) {
        a->priority_id = dc_calloc(n_priority, sizeof(*a->priority_id));
        if (a->priority_id == NULL) {
            dc_free(a->hash);
            dc_free(a);
            return DC_ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++)
        crypto_hash_sha256(a->hash[i], (const unsigned char *)keys[i], strlen(keys[i]));
    for (size_t i = 0; i < n_priority; i++) {
        uint8_t h[crypto_hash_sha256_BYTES];

        crypto_hash_sha256(h, (const unsigned char *)priority_keys[i], strlen(priority_keys[i]));
        key_id_of(h, a->priority_id[i]);
        sodium_memzero(h, sizeof(h));
    }
    a->n = n;
    a->n_priority = n_priority;
    *out = a;
    return 0;
}

int32_t dc_auth_priority(const struct dc_auth *a, const char *key_id)
{
    if (a == NULL || key_id == NULL)
        return 0;
    for (size_t i = 0; i < a->n_priority; i++) {
        if (strcmp(a->priority_id[i], key_id) == 0)
            return DC_AUTH_PRIORITY_HIGH;
    }
    return 0;
}

void dc_auth_free(struct dc_auth *a)
{
    if (a == NULL)
        return;
    if (a->hash != NULL)
        sodium_memzero(a->hash, a->n * sizeof(*a->hash));
    dc_free(a->hash);
    dc_free(a->priority_id);
    dc_free(a);
}

bool dc_auth_enabled(const struct dc_auth *a)
{
    return a != NULL && a->n > 0;
}

int dc_auth_check(const struct dc_auth *a, const char *authorization,
                  char key_id[DC_AUTH_KEY_ID_LEN])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    const char *key;
    int found = -1;

    if (!dc_auth_enabled(a)) {
        if (key_id != NULL)
            snprintf(key_id, DC_AUTH_KEY_ID_LEN, "-");
        return 0;
    }
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return DC_EPERM;
    key = authorization + 7;
    while (*key == ' ')
        key++;
    if (*key == '\0')
        return DC_EPERM;
    crypto_hash_sha256(h, (const unsigned char *)key, strlen(key));
    for (size_t i = 0; i < a->n; i++) {
        /* No early exit: every hash is compared. The branch-free select keeps the first match. */
        int eq = sodium_memcmp(h, a->hash[i], sizeof(h)) == 0;
        int take = eq & (found < 0);
        found = take ? (int)i : found;
    }
    if (found < 0)
        return DC_EPERM;
    if (key_id != NULL)
        key_id_of(h, key_id);
    sodium_memzero(h, sizeof(h));
    return 0;
}

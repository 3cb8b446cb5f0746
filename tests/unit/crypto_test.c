/* SPDX-License-Identifier: MIT */
/*
 * crypto_test.c - identities, key encodings and PeerIds against the libp2p peer-ids spec test
 * vectors and examples, RFC 8032 signing, the key file (round trip, modes, corrupt, truncated,
 * absent, no-clobber) in a private temporary directory, and allocation-failure loops over
 * every constructor.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "base/multibase.h"
#include "crypto/crypto.h"

/* peer-ids spec, "Test vectors": an Ed25519 PrivateKey and its PublicKey. */
static const char spec_ed25519_private_hex[] =
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d1ed1e8fae2c4a144b8"
    "be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
static const char spec_ed25519_public_hex[] =
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
/* Its PeerId (identity multihash 00 24 || public key protobuf) in both text forms. */
static const char spec_ed25519_peer_id[] = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq";
static const char spec_ed25519_cid[] =
    "bafzaajaiaejcahwr5d5ofrfbis4l5d6uwr57hu5tjodrypfm6yaq6dsc2r2pzyt6";

/* The spec's secp256k1 (37 bytes: identity) and ECDSA (95 bytes: sha2-256) public keys. */
static const char spec_secp256k1_public_hex[] =
    "08021221037777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99";
static const char spec_secp256k1_peer_id[] =
    "16Uiu2HAmLhLvBoYaoZfaMUKuibM6ac163GwKY74c5kiSLg5KvLpY";
static const char spec_ecdsa_public_hex[] =
    "0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004de3d300fa36ae0e8f5d530899d83ab"
    "ab44abf3161f162a4bc901d8e6ecda020e8b6d5f8da30525e71d6851510c098e5c47c646a597fb4dcec034e9f7"
    "7c409e62";
static const char spec_ecdsa_peer_id[] = "QmVMT29id3TUASyfZZ6k9hmNyc2nYabCo4uMSpDw4zrgDk";

/* peer-ids spec, "String representation" examples. */
static const char spec_sha256_peer_id[] = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
static const char spec_sha256_cid[] = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe";
static const char spec_identity_peer_id[] = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
static const char spec_identity_key_hex[] =
    "2ffa35a99d3a3cfbb17bb7c1dc5561b18a8dcca4df38dc613ea859c37eb1336b";

/* RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte 0x72). */
static const char rfc8032_1_sk[] =
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
static const char rfc8032_1_pk[] =
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char rfc8032_1_sig[] =
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701c"
    "f9b46bd25bf5f0595bbe24655141438e7a100b";
static const char rfc8032_2_sk[] =
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
static const char rfc8032_2_pk[] =
    "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
static const char rfc8032_2_sig[] =
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0"
    "f11d8c387b2eaeb4302aeeb00d291612bb0c00";

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    int n = dc_base16_decode(hex, strlen(hex), out, cap);

    assert_true(n >= 0);
    return (size_t)n;
}

/* 08 01 12 40 || seed || pk: the PrivateKey protobuf for an RFC 8032 key. */
static size_t private_proto(const char *sk_hex, const char *pk_hex, uint8_t out[68])
{
    out[0] = 0x08;
    out[1] = 0x01;
    out[2] = 0x12;
    out[3] = 0x40;
    assert_int_equal(unhex(sk_hex, out + 4, 32), 32);
    assert_int_equal(unhex(pk_hex, out + 36, 32), 32);
    return 68;
}

static void test_spec_ed25519_vector(void **state)
{
    uint8_t priv[128], pub[64], got[64], pk[32], pk2[32];
    size_t priv_len, pub_len, got_len;
    struct dc_identity *id;
    struct dc_peer_id a, b, c;
    char s[DC_PEER_ID_STR_MAX];

    (void)state;
    priv_len = unhex(spec_ed25519_private_hex, priv, sizeof(priv));
    pub_len = unhex(spec_ed25519_public_hex, pub, sizeof(pub));
    assert_int_equal(dc_identity_from_private_key_proto(priv, priv_len, &id), 0);

    /* The public key the spec gives belongs to the private key. */
    assert_int_equal(dc_identity_public_key_proto(id, got, sizeof(got), &got_len), 0);
    assert_int_equal(got_len, DC_ED25519_PUBLIC_KEY_PROTO_LEN);
    assert_memory_equal(got, pub, pub_len);
    assert_int_equal(dc_identity_public_key_proto(id, got, got_len - 1, &got_len), DC_ELIMIT);
    dc_identity_public_key(id, pk);
    assert_memory_equal(pk, pub + 4, 32);

    /* PeerId: identity multihash 00 24 || protobuf, printed as base58btc. */
    assert_int_equal(dc_identity_peer_id(id)->len, 38);
    assert_int_equal(dc_identity_peer_id(id)->bytes[0], 0x00);
    assert_int_equal(dc_identity_peer_id(id)->bytes[1], 36);
    assert_memory_equal(dc_identity_peer_id(id)->bytes + 2, pub, pub_len);
    assert_int_equal(dc_peer_id_to_string(dc_identity_peer_id(id), s, sizeof(s)),
                     (int)strlen(spec_ed25519_peer_id));
    assert_string_equal(s, spec_ed25519_peer_id);
    assert_int_equal(dc_peer_id_to_string(dc_identity_peer_id(id), s, 10), DC_ELIMIT);

    /* The same PeerId three more ways. */
    assert_int_equal(dc_peer_id_from_public_key_proto(pub, pub_len, &a), 0);
    assert_int_equal(dc_peer_id_from_ed25519(pk, &b), 0);
    assert_int_equal(dc_peer_id_parse(spec_ed25519_peer_id, &c), 0);
    assert_true(dc_peer_id_equal(&a, dc_identity_peer_id(id)));
    assert_true(dc_peer_id_equal(&b, dc_identity_peer_id(id)));
    assert_true(dc_peer_id_equal(&c, dc_identity_peer_id(id)));

    /* CIDv1 (libp2p-key, base32) form, printed and parsed, in either case. */
    assert_int_equal(dc_peer_id_to_cid_string(&a, s, sizeof(s)), (int)strlen(spec_ed25519_cid));
    assert_string_equal(s, spec_ed25519_cid);
    memset(&c, 0, sizeof(c));
    assert_int_equal(dc_peer_id_parse(spec_ed25519_cid, &c), 0);
    assert_true(dc_peer_id_equal(&a, &c));
    for (char *p = s; *p != '\0'; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    assert_int_equal(dc_peer_id_parse(s, &c), 0);
    assert_true(dc_peer_id_equal(&a, &c));

    /* The key comes back out of the PeerId. */
    assert_int_equal(dc_peer_id_ed25519_public_key(&c, pk2), 0);
    assert_memory_equal(pk2, pk, 32);
    dc_identity_free(id);
}

static void test_spec_other_key_types(void **state)
{
    /* Same secp256k1 key with Data first, an unknown varint field and an unknown bytes field. */
    static const uint8_t reordered_prefix[] = {0x18, 0x05, 0x22, 0x01, 0xaa, 0x12, 0x21};
    uint8_t pub[128], reordered[128], pk[32];
    size_t pub_len;
    struct dc_peer_id a, b;
    struct dc_public_key key;
    char s[DC_PEER_ID_STR_MAX];

    (void)state;
    pub_len = unhex(spec_secp256k1_public_hex, pub, sizeof(pub));
    assert_int_equal(dc_public_key_proto_decode(pub, pub_len, &key), 0);
    assert_int_equal(key.type, DC_KEY_SECP256K1);
    assert_int_equal(key.len, 33);
    assert_int_equal(dc_peer_id_from_public_key_proto(pub, pub_len, &a), 0);
    assert_int_equal(a.bytes[0], 0x00);
    assert_true(dc_peer_id_to_string(&a, s, sizeof(s)) > 0);
    assert_string_equal(s, spec_secp256k1_peer_id);
    assert_int_equal(dc_peer_id_ed25519_public_key(&a, pk), DC_EUNSUPPORTED);

    /* Non-canonical encodings hash as their canonical re-encoding, as other stacks do. */
    memcpy(reordered, reordered_prefix, sizeof(reordered_prefix));
    memcpy(reordered + sizeof(reordered_prefix), pub + 4, 33);
    reordered[sizeof(reordered_prefix) + 33] = 0x08;
    reordered[sizeof(reordered_prefix) + 34] = 0x02;
    assert_int_equal(dc_peer_id_from_public_key_proto(reordered, sizeof(reordered_prefix) + 35, &b),
                     0);
    assert_true(dc_peer_id_equal(&a, &b));

    pub_len = unhex(spec_ecdsa_public_hex, pub, sizeof(pub));
    assert_int_equal(dc_peer_id_from_public_key_proto(pub, pub_len, &a), 0);
    assert_int_equal(a.len, 34);
    assert_int_equal(a.bytes[0], 0x12);
    assert_true(dc_peer_id_to_string(&a, s, sizeof(s)) > 0);
    assert_string_equal(s, spec_ecdsa_peer_id);
    assert_int_equal(dc_peer_id_ed25519_public_key(&a, pk), DC_EUNSUPPORTED);
}

static void test_public_key_proto_bad(void **state)
{
    static const uint8_t unknown_type[] = {0x08, 0x09, 0x12, 0x01, 0x00};
    static const uint8_t short_ed25519[] = {0x08, 0x01, 0x12, 0x02, 0x00, 0x00};
    static const uint8_t no_data[] = {0x08, 0x01};
    static const uint8_t no_type[] = {0x12, 0x01, 0x00};
    static const uint8_t overrun[] = {0x08, 0x01, 0x12, 0x20, 0x00};
    static const uint8_t wrong_wire[] = {0x0a, 0x01, 0x01, 0x12, 0x01, 0x00};
    static const uint8_t group[] = {0x08, 0x01, 0x12, 0x01, 0x00, 0x1b};
    static const uint8_t field0[] = {0x00, 0x08, 0x01, 0x12, 0x01, 0x00};
    static const uint8_t empty_data[] = {0x08, 0x00, 0x12, 0x00};
    struct dc_peer_id id;
    uint8_t out[8], pk[32] = {0};
    size_t len;

    (void)state;
    assert_int_equal(dc_peer_id_from_public_key_proto(unknown_type, sizeof(unknown_type), &id),
                     DC_EUNSUPPORTED);
    assert_int_equal(dc_peer_id_from_public_key_proto(short_ed25519, sizeof(short_ed25519), &id),
                     DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_public_key_proto(no_data, sizeof(no_data), &id), DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_public_key_proto(no_type, sizeof(no_type), &id), DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_public_key_proto(overrun, sizeof(overrun), &id), DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_public_key_proto(wrong_wire, sizeof(wrong_wire), &id),
                     DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_public_key_proto(group, sizeof(group), &id), DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_public_key_proto(field0, sizeof(field0), &id), DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_public_key_proto(empty_data, sizeof(empty_data), &id),
                     DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_public_key_proto(NULL, 0, &id), DC_ECORRUPT);
    assert_int_equal(dc_ed25519_public_key_proto(pk, out, sizeof(out), &len), DC_ELIMIT);
}

static void test_spec_string_examples(void **state)
{
    uint8_t want[32], pk[32];
    struct dc_peer_id a, b;
    char s[DC_PEER_ID_STR_MAX];

    (void)state;
    /* A sha2-256 PeerId, as base58btc and as the spec's CID; each prints as the other. */
    assert_int_equal(dc_peer_id_parse(spec_sha256_peer_id, &a), 0);
    assert_int_equal(a.len, 34);
    assert_int_equal(dc_peer_id_parse(spec_sha256_cid, &b), 0);
    assert_true(dc_peer_id_equal(&a, &b));
    assert_true(dc_peer_id_to_cid_string(&a, s, sizeof(s)) > 0);
    assert_string_equal(s, spec_sha256_cid);
    assert_true(dc_peer_id_to_string(&b, s, sizeof(s)) > 0);
    assert_string_equal(s, spec_sha256_peer_id);
    assert_int_equal(dc_peer_id_ed25519_public_key(&a, pk), DC_EUNSUPPORTED);

    /* The spec's Ed25519 example; its key is inlined. */
    assert_int_equal(dc_peer_id_parse(spec_identity_peer_id, &a), 0);
    assert_int_equal(dc_peer_id_ed25519_public_key(&a, pk), 0);
    unhex(spec_identity_key_hex, want, sizeof(want));
    assert_memory_equal(pk, want, 32);
    assert_true(dc_peer_id_to_string(&a, s, sizeof(s)) > 0);
    assert_string_equal(s, spec_identity_peer_id);
    /* CIDv1 in base58btc ('z') and base16 ('f') multibase parse too. */
    {
        uint8_t cid[2 + DC_PEER_ID_MAX];
        char t[DC_PEER_ID_STR_MAX];

        cid[0] = 0x01;
        cid[1] = 0x72;
        memcpy(cid + 2, a.bytes, a.len);
        assert_true(dc_multibase_encode('z', cid, 2 + a.len, t, sizeof(t)) > 0);
        assert_int_equal(dc_peer_id_parse(t, &b), 0);
        assert_true(dc_peer_id_equal(&a, &b));
        assert_true(dc_multibase_encode('f', cid, 2 + a.len, t, sizeof(t)) > 0);
        assert_int_equal(dc_peer_id_parse(t, &b), 0);
        assert_true(dc_peer_id_equal(&a, &b));
        /* dag-pb (0x70) is a CID but not a PeerId; neither is CID version 0 or 2. */
        cid[1] = 0x70;
        assert_true(dc_multibase_encode('b', cid, 2 + a.len, t, sizeof(t)) > 0);
        assert_int_equal(dc_peer_id_parse(t, &b), DC_ECORRUPT);
        cid[1] = 0x72;
        cid[0] = 0x00;
        assert_true(dc_multibase_encode('b', cid, 2 + a.len, t, sizeof(t)) > 0);
        assert_int_equal(dc_peer_id_parse(t, &b), DC_ECORRUPT);
        cid[0] = 0x02;
        assert_true(dc_multibase_encode('b', cid, 2 + a.len, t, sizeof(t)) > 0);
        assert_int_equal(dc_peer_id_parse(t, &b), DC_ECORRUPT);
    }
}

static void test_parse_bad(void **state)
{
    static const char *const bad[] = {
        "",
        "1",
        "Qm",
        "Q",
        "12D3KooW",
        "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3p",   /* one char short */
        "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pqq", /* one char long */
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5",         /* digest too short */
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N ",       /* trailing space */
        " QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx50", /* '0' not base58 */
        "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqx",
        "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxf", /* trailing bits */
        "mAXIAJAgBEiAe0ej64sShRLi+j9S0e/PTs0uHHDys9gEPDkLUdPzifg",     /* base64: unsupported */
        "b",
        "z",
        "/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
    };
    char longstr[DC_PEER_ID_STR_MAX + 8];
    struct dc_peer_id id;

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_LEN(bad); i++) {
        if (dc_peer_id_parse(bad[i], &id) != DC_ECORRUPT)
            fail_msg("accepted '%s'", bad[i]);
    }
    /* Over-long text is refused before any decoding. */
    memset(longstr, '1', sizeof(longstr) - 1);
    longstr[sizeof(longstr) - 1] = '\0';
    assert_int_equal(dc_peer_id_parse(longstr, &id), DC_ECORRUPT);
}

static void test_from_bytes(void **state)
{
    uint8_t mh[80];
    struct dc_peer_id id;

    (void)state;
    memset(mh, 0x5a, sizeof(mh));
    /* sha2-256 needs exactly 32 digest bytes and nothing after. */
    mh[0] = 0x12;
    mh[1] = 0x20;
    assert_int_equal(dc_peer_id_from_bytes(mh, 34, &id), 0);
    assert_int_equal(id.len, 34);
    assert_memory_equal(id.bytes, mh, 34);
    assert_int_equal(dc_peer_id_from_bytes(mh, 33, &id), DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_bytes(mh, 35, &id), DC_ECORRUPT);
    mh[1] = 0x1f;
    assert_int_equal(dc_peer_id_from_bytes(mh, 33, &id), DC_ECORRUPT);
    /* identity: 1..42 digest bytes. */
    mh[0] = 0x00;
    mh[1] = 42;
    assert_int_equal(dc_peer_id_from_bytes(mh, 44, &id), 0);
    mh[1] = 43;
    assert_int_equal(dc_peer_id_from_bytes(mh, 45, &id), DC_ECORRUPT);
    mh[1] = 0;
    assert_int_equal(dc_peer_id_from_bytes(mh, 2, &id), DC_ECORRUPT);
    mh[1] = 1;
    assert_int_equal(dc_peer_id_from_bytes(mh, 3, &id), 0);
    /* Other hash functions (sha2-512 0x13, blake2b-256 0xb220) are not PeerIds. */
    mh[0] = 0x13;
    mh[1] = 0x40;
    assert_int_equal(dc_peer_id_from_bytes(mh, 66, &id), DC_ECORRUPT);
    mh[0] = 0xa0;
    mh[1] = 0xe4;
    mh[2] = 0x02;
    mh[3] = 0x20;
    assert_int_equal(dc_peer_id_from_bytes(mh, 36, &id), DC_ECORRUPT);
    /* Non-minimal varint code, empty, lone code, and more than DC_PEER_ID_MAX bytes. */
    mh[0] = 0x92;
    mh[1] = 0x00;
    mh[2] = 0x20;
    assert_int_equal(dc_peer_id_from_bytes(mh, 35, &id), DC_ECORRUPT);
    assert_int_equal(dc_peer_id_from_bytes(mh, 0, &id), DC_ECORRUPT);
    mh[0] = 0x12;
    assert_int_equal(dc_peer_id_from_bytes(mh, 1, &id), DC_ECORRUPT);
    mh[1] = 0x20;
    assert_int_equal(dc_peer_id_from_bytes(mh, sizeof(mh), &id), DC_ECORRUPT);

    /* An identity PeerId whose digest is not a key. */
    mh[0] = 0x00;
    mh[1] = 3;
    mh[2] = 0xff;
    assert_int_equal(dc_peer_id_from_bytes(mh, 5, &id), 0);
    {
        uint8_t pk[32];

        assert_int_equal(dc_peer_id_ed25519_public_key(&id, pk), DC_ECORRUPT);
    }
}

static void test_sign_verify(void **state)
{
    static const char *const sks[] = {rfc8032_1_sk, rfc8032_2_sk};
    static const char *const pks[] = {rfc8032_1_pk, rfc8032_2_pk};
    static const char *const sigs[] = {rfc8032_1_sig, rfc8032_2_sig};
    static const uint8_t msg2[] = {0x72};
    uint8_t proto[68], sig[64], want[64], pk[32], other_pk[32];
    struct dc_identity *id, *other;

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        const uint8_t *msg = i == 0 ? NULL : msg2;
        size_t len = i == 0 ? 0 : sizeof(msg2);
        size_t plen = private_proto(sks[i], pks[i], proto);

        assert_int_equal(dc_identity_from_private_key_proto(proto, plen, &id), 0);
        assert_int_equal(dc_identity_sign(id, msg, len, sig), 0);
        unhex(sigs[i], want, sizeof(want));
        assert_memory_equal(sig, want, 64);
        dc_identity_public_key(id, pk);
        assert_int_equal(dc_ed25519_verify(pk, msg, len, sig), 0);
        sig[i * 20] ^= 0x01;
        assert_int_equal(dc_ed25519_verify(pk, msg, len, sig), DC_ECRYPTO);
        dc_identity_free(id);
    }

    assert_int_equal(dc_crypto_init(), 0);
    assert_int_equal(dc_crypto_init(), 0);
    assert_int_equal(dc_identity_generate(&id), 0);
    assert_int_equal(dc_identity_generate(&other), 0);
    assert_false(dc_peer_id_equal(dc_identity_peer_id(id), dc_identity_peer_id(other)));
    dc_identity_public_key(id, pk);
    dc_identity_public_key(other, other_pk);
    assert_int_equal(dc_identity_sign(id, (const uint8_t *)"hello", 5, sig), 0);
    assert_int_equal(dc_ed25519_verify(pk, (const uint8_t *)"hello", 5, sig), 0);
    assert_int_equal(dc_ed25519_verify(pk, (const uint8_t *)"hellp", 5, sig), DC_ECRYPTO);
    assert_int_equal(dc_ed25519_verify(other_pk, (const uint8_t *)"hello", 5, sig), DC_ECRYPTO);
    /* A generated identity's PeerId holds its key. */
    assert_int_equal(dc_peer_id_ed25519_public_key(dc_identity_peer_id(id), other_pk), 0);
    assert_memory_equal(other_pk, pk, 32);
    dc_identity_free(id);
    dc_identity_free(other);
    dc_identity_free(NULL);
}

static void test_private_key_proto_bad(void **state)
{
    uint8_t proto[128];
    struct dc_identity *id = (struct dc_identity *)1;
    size_t len;

    (void)state;
    len = private_proto(rfc8032_1_sk, rfc8032_1_pk, proto);
    /* Another key type. */
    proto[1] = 0x00;
    assert_int_equal(dc_identity_from_private_key_proto(proto, len, &id), DC_EUNSUPPORTED);
    assert_null(id);
    proto[1] = 0x01;
    /* Public half of another key. */
    proto[40] ^= 0x01;
    assert_int_equal(dc_identity_from_private_key_proto(proto, len, &id), DC_ECORRUPT);
    proto[40] ^= 0x01;
    /* Truncations, and a 63-byte Data. */
    for (size_t n = 0; n < len; n++)
        assert_int_equal(dc_identity_from_private_key_proto(proto, n, &id), DC_ECORRUPT);
    proto[3] = 63;
    assert_int_equal(dc_identity_from_private_key_proto(proto, 67, &id), DC_ECORRUPT);
    proto[3] = 64;
    /* Legacy 96-byte form: accepted when both public copies agree. */
    proto[3] = 96;
    memcpy(proto + 68, proto + 36, 32);
    assert_int_equal(dc_identity_from_private_key_proto(proto, 100, &id), 0);
    dc_identity_free(id);
    proto[99] ^= 0x80;
    assert_int_equal(dc_identity_from_private_key_proto(proto, 100, &id), DC_ECORRUPT);
}

/* ---- key files, in a private directory per test ---- */

struct dir_fixture {
    char dir[64];
    char path[128];
};

static int dir_setup(void **state)
{
    struct dir_fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/dc-crypto-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/identity.key", f->dir);
    *state = f;
    return 0;
}

/* Counts the directory's entries (a failed save must leave no temporary file). */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

static int dir_teardown(void **state)
{
    struct dir_fixture *f = *state;
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char p[256];

    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            if (snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name) >= (int)sizeof(p))
                continue;
            if (unlink(p) != 0)
                rmdir(p);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const void *p, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void test_file_roundtrip(void **state)
{
    struct dir_fixture *f = *state;
    struct dc_identity *id, *loaded;
    struct stat st;
    uint8_t sig[64], pk[32];
    char err[512];

    assert_int_equal(dc_identity_generate(&id), 0);
    strcpy(err, "junk");
    assert_int_equal(dc_identity_save_file(id, f->path, false, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 68);
    assert_int_equal(dir_entries(f->dir), 1);

    strcpy(err, "junk");
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_true(dc_peer_id_equal(dc_identity_peer_id(id), dc_identity_peer_id(loaded)));
    /* The loaded secret signs for the saved public key. */
    dc_identity_public_key(id, pk);
    assert_int_equal(dc_identity_sign(loaded, (const uint8_t *)"m", 1, sig), 0);
    assert_int_equal(dc_ed25519_verify(pk, (const uint8_t *)"m", 1, sig), 0);
    dc_identity_free(loaded);

    /* A read-only key (0400) is private too. */
    assert_int_equal(chmod(f->path, 0400), 0);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, NULL, 0), 0);
    dc_identity_free(loaded);
    dc_identity_free(id);
}

static void test_file_spec_vector(void **state)
{
    struct dir_fixture *f = *state;
    struct dc_identity *id;
    uint8_t priv[128];
    size_t len = unhex(spec_ed25519_private_hex, priv, sizeof(priv));
    char s[DC_PEER_ID_STR_MAX], err[512];

    /* A key file as go-libp2p or js-libp2p writes it loads to the spec's PeerId. */
    write_file(f->path, priv, len, 0600);
    assert_int_equal(dc_identity_load_file(f->path, &id, err, sizeof(err)), 0);
    assert_true(dc_peer_id_to_string(dc_identity_peer_id(id), s, sizeof(s)) > 0);
    assert_string_equal(s, spec_ed25519_peer_id);
    /* And saving it again writes the same bytes. */
    assert_int_equal(dc_identity_save_file(id, f->path, true, err, sizeof(err)), 0);
    {
        uint8_t back[128];
        int fd = open(f->path, O_RDONLY);

        assert_true(fd >= 0);
        assert_int_equal(read(fd, back, sizeof(back)), (ssize_t)len);
        close(fd);
        assert_memory_equal(back, priv, len);
    }
    dc_identity_free(id);
}

static void test_file_no_clobber(void **state)
{
    struct dir_fixture *f = *state;
    struct dc_identity *a, *b, *loaded;
    char err[512];

    assert_int_equal(dc_identity_generate(&a), 0);
    assert_int_equal(dc_identity_generate(&b), 0);
    assert_int_equal(dc_identity_save_file(a, f->path, false, err, sizeof(err)), 0);
    assert_int_equal(dc_identity_save_file(b, f->path, false, err, sizeof(err)), DC_EEXIST);
    assert_non_null(strstr(err, f->path));
    assert_non_null(strstr(err, "already exists"));
    assert_int_equal(dir_entries(f->dir), 1);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), 0);
    assert_true(dc_peer_id_equal(dc_identity_peer_id(a), dc_identity_peer_id(loaded)));
    dc_identity_free(loaded);

    /* force replaces it, still 0600, and leaves no temporary file. */
    assert_int_equal(dc_identity_save_file(b, f->path, true, err, sizeof(err)), 0);
    assert_int_equal(dir_entries(f->dir), 1);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), 0);
    assert_true(dc_peer_id_equal(dc_identity_peer_id(b), dc_identity_peer_id(loaded)));
    dc_identity_free(loaded);

    /* A directory that does not exist. */
    {
        char missing[256];

        snprintf(missing, sizeof(missing), "%s/no/such/dir/key", f->dir);
        assert_int_equal(dc_identity_save_file(a, missing, false, err, sizeof(err)), -ENOENT);
        assert_non_null(strstr(err, missing));
        assert_int_equal(dc_identity_save_file(a, missing, true, err, sizeof(err)), -ENOENT);
    }
    dc_identity_free(a);
    dc_identity_free(b);
}

static void test_file_mode(void **state)
{
    struct dir_fixture *f = *state;
    struct dc_identity *id, *loaded = (struct dc_identity *)1;
    char err[512], want[512];

    assert_int_equal(dc_identity_generate(&id), 0);
    assert_int_equal(dc_identity_save_file(id, f->path, false, err, sizeof(err)), 0);
    assert_int_equal(chmod(f->path, 0644), 0);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), DC_EPERM);
    assert_null(loaded);
    snprintf(want, sizeof(want), "key file %s has mode 0644; it must be 0600 (chmod 600 %s)",
             f->path, f->path);
    assert_string_equal(err, want);
    /* Group-writable only is refused as well. */
    assert_int_equal(chmod(f->path, 0620), 0);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), DC_EPERM);
    assert_non_null(strstr(err, "0620"));
    /* A tiny error buffer is still NUL-terminated. */
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, 8), DC_EPERM);
    assert_int_equal(strlen(err), 7);
    dc_identity_free(id);
}

static void test_file_bad_content(void **state)
{
    struct dir_fixture *f = *state;
    struct dc_identity *id, *loaded = (struct dc_identity *)1;
    uint8_t good[68], buf[8192];
    char err[512];
    int fd;

    assert_int_equal(dc_identity_generate(&id), 0);
    assert_int_equal(dc_identity_save_file(id, f->path, true, err, sizeof(err)), 0);
    fd = open(f->path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, good, sizeof(good)), 68);
    close(fd);

    /* Junk. */
    write_file(f->path, "this is not a key\n", 18, 0600);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), DC_ECORRUPT);
    assert_null(loaded);
    assert_non_null(strstr(err, f->path));

    /* Every truncation, including the empty file. */
    for (size_t n = 0; n < sizeof(good); n++) {
        write_file(f->path, good, n, 0600);
        assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), DC_ECORRUPT);
        assert_non_null(strstr(err, f->path));
    }
    write_file(f->path, good, 0, 0600);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), DC_ECORRUPT);
    assert_non_null(strstr(err, "empty"));

    /* Public half that does not belong to the secret. */
    memcpy(buf, good, sizeof(good));
    buf[67] ^= 0x01;
    write_file(f->path, buf, sizeof(good), 0600);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), DC_ECORRUPT);
    assert_non_null(strstr(err, "does not match"));

    /* An RSA PrivateKey header. */
    memcpy(buf, good, sizeof(good));
    buf[1] = 0x00;
    write_file(f->path, buf, sizeof(good), 0600);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), DC_ECORRUPT);
    assert_non_null(strstr(err, "RSA"));

    /* Too large. */
    memset(buf, 0, sizeof(buf));
    write_file(f->path, buf, sizeof(buf), 0600);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), DC_ECORRUPT);
    assert_non_null(strstr(err, "too large"));

    /* Absent, and a directory. */
    unlink(f->path);
    assert_int_equal(dc_identity_load_file(f->path, &loaded, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, f->path));
    assert_int_equal(dc_identity_load_file(f->dir, &loaded, err, sizeof(err)), DC_EINVAL);
    assert_non_null(strstr(err, f->dir));
    assert_null(loaded);
    dc_identity_free(id);
}

/* ---- allocation failure: fail the 1st, 2nd, ... allocation until the call succeeds ---- */

static void test_alloc_failure(void **state)
{
    struct dir_fixture *f = *state;
    struct dc_identity *id = NULL, *tmp;
    uint8_t proto[68];
    size_t len = private_proto(rfc8032_1_sk, rfc8032_1_pk, proto);
    char err[512];
    long n;
    int rc, failures;

    assert_int_equal(dc_crypto_init(), 0);
    for (n = 0, failures = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_identity_generate(&tmp);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(tmp);
        failures++;
    }
    assert_true(failures > 0);
    id = tmp;

    for (n = 0, failures = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_identity_from_private_key_proto(proto, len, &tmp);
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        failures++;
    }
    assert_true(failures > 0);
    dc_identity_free(tmp);

    for (n = 0, failures = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_identity_save_file(id, f->path, false, err, sizeof(err));
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_non_null(strstr(err, f->path));
        /* Nothing left behind by a failed save. */
        assert_int_equal(dir_entries(f->dir), 0);
        failures++;
    }
    assert_true(failures > 0);

    for (n = 0, failures = 0;; n++) {
        dc_alloc_fail_after(n);
        rc = dc_identity_load_file(f->path, &tmp, err, sizeof(err));
        dc_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, DC_ENOMEM);
        assert_null(tmp);
        assert_non_null(strstr(err, f->path));
        failures++;
    }
    assert_true(failures > 0);
    assert_true(dc_peer_id_equal(dc_identity_peer_id(id), dc_identity_peer_id(tmp)));
    dc_identity_free(tmp);
    dc_identity_free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_ed25519_vector),
        cmocka_unit_test(test_spec_other_key_types),
        cmocka_unit_test(test_public_key_proto_bad),
        cmocka_unit_test(test_spec_string_examples),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_from_bytes),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_private_key_proto_bad),
        cmocka_unit_test_setup_teardown(test_file_roundtrip, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_file_spec_vector, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_file_no_clobber, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_file_mode, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_file_bad_content, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failure, dir_setup, dir_teardown),
    };

    if (dc_crypto_init() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * identity.c - the node's Ed25519 identity: generation, the libp2p PrivateKey protobuf, the key
 * file (load with a permission check, atomic save), and signing.
 *
 * Secrets live in three places only: the identity object, the stack buffers that encode or
 * decode a key file, and libsodium's own stack. Each of ours is wiped with sodium_memzero()
 * before it goes out of scope, on every path. Error messages name the file and the problem
 * and never include key bytes.
 */
#include "crypto/crypto_int.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

/* Largest key file we read; an Ed25519 one is 68 bytes (100 in the legacy form). */
#define KEY_FILE_MAX 4096
/* Encoded Ed25519 PrivateKey: 08 01 12 40 <secret 32 || public 32>. */
#define PRIVATE_KEY_PROTO_LEN (4 + crypto_sign_SECRETKEYBYTES)

struct dc_identity {
    uint8_t sk[crypto_sign_SECRETKEYBYTES]; /* libsodium layout: seed 32 || public 32 */
    struct dc_peer_id id;
};

int dc_crypto_init(void)
{
    /* sodium_init() is thread-safe and returns 1 when already initialised. */
    return sodium_init() < 0 ? DC_ECRYPTO : 0;
}

static void DC_PRINTF(3, 4) set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Wraps a libsodium secret key (seed || public) in a new identity; 'sk' is copied. */
static int identity_new(const uint8_t sk[crypto_sign_SECRETKEYBYTES], struct dc_identity **out)
{
    struct dc_identity *id = dc_calloc(1, sizeof(*id));
    int rc;

    if (id == NULL)
        return DC_ENOMEM;
    memcpy(id->sk, sk, sizeof(id->sk));
    rc = dc_peer_id_from_ed25519(id->sk + crypto_sign_SEEDBYTES, &id->id);
    if (rc < 0)
        goto err_free;
    *out = id;
    return 0;

err_free:
    dc_identity_free(id);
    return rc;
}

int dc_identity_generate(struct dc_identity **out)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    int rc;

    *out = NULL;
    rc = dc_crypto_init();
    if (rc < 0)
        return rc;
    if (crypto_sign_keypair(pk, sk) != 0) {
        rc = DC_ECRYPTO;
        goto out_wipe;
    }
    rc = identity_new(sk, out);
out_wipe:
    sodium_memzero(sk, sizeof(sk));
    return rc;
}

static const char *key_type_name(uint64_t type)
{
    switch (type) {
    case DC_KEY_RSA:
        return "an RSA";
    case DC_KEY_SECP256K1:
        return "a secp256k1";
    case DC_KEY_ECDSA:
        return "an ECDSA";
    default:
        return "an unknown type of";
    }
}

/*
 * Decodes a PrivateKey protobuf into a libsodium secret key, checking that the public half
 * belongs to the secret (recomputed from the seed). On failure '*why' completes the sentence
 * "key file X ..." and nothing is left in 'sk'.
 */
static int private_key_decode(const uint8_t *p, size_t len, uint8_t sk[crypto_sign_SECRETKEYBYTES],
                              const char **why)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint64_t type;
    const uint8_t *data;
    size_t dlen;
    int rc = 0;

    if (dc_key_proto_parse(p, len, &type, &data, &dlen) < 0) {
        *why = "is not a libp2p PrivateKey protobuf";
        return DC_ECORRUPT;
    }
    if (type != DC_KEY_ED25519) {
        *why = key_type_name(type);
        return DC_EUNSUPPORTED;
    }
    /*
     * Older libp2p code wrote secret || public || public (96 bytes); the spec asks readers to
     * accept it when both copies of the public key agree.
     */
    if (dlen == 96) {
        if (sodium_memcmp(data + 32, data + 64, 32) != 0) {
            *why = "holds a legacy 96-byte Ed25519 key whose two public key copies differ";
            return DC_ECORRUPT;
        }
    } else if (dlen != 64) {
        *why = "holds Ed25519 key data that is not 64 bytes (secret || public)";
        return DC_ECORRUPT;
    }
    if (crypto_sign_seed_keypair(pk, sk, data) != 0) {
        *why = "could not be turned into an Ed25519 key pair";
        rc = DC_ECRYPTO;
        goto out_wipe;
    }
    if (sodium_memcmp(pk, data + crypto_sign_SEEDBYTES, sizeof(pk)) != 0) {
        *why = "holds a public key that does not match its secret key";
        rc = DC_ECORRUPT;
        goto out_wipe;
    }
    return 0;

out_wipe:
    sodium_memzero(sk, crypto_sign_SECRETKEYBYTES);
    return rc;
}

int dc_identity_from_private_key_proto(const uint8_t *p, size_t len, struct dc_identity **out)
{
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    const char *why;
    int rc;

    *out = NULL;
    rc = dc_crypto_init();
    if (rc < 0)
        return rc;
    rc = private_key_decode(p, len, sk, &why);
    if (rc < 0)
        return rc;
    rc = identity_new(sk, out);
    sodium_memzero(sk, sizeof(sk));
    return rc;
}

/* Reads the whole file (at most 'cap' bytes) from 'fd'. Returns the length, or -errno. */
static ssize_t read_all(int fd, uint8_t *buf, size_t cap)
{
    size_t n = 0;

    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    return (ssize_t)n;
}

int dc_identity_load_file(const char *path, struct dc_identity **out, char *err, size_t errlen)
{
    /* One byte more than we accept, to tell "too large" from "exactly the maximum". */
    uint8_t buf[KEY_FILE_MAX + 1];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    struct stat st;
    const char *why;
    ssize_t n;
    int fd, rc;

    *out = NULL;
    set_err(err, errlen, "%s", "");
    rc = dc_crypto_init();
    if (rc < 0) {
        set_err(err, errlen, "cannot load key file %s: libsodium failed to initialise", path);
        return rc;
    }
    /* O_NONBLOCK so a FIFO in its place cannot hang us; it is refused below. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = -errno;
        if (rc == -ENOENT)
            set_err(err, errlen, "key file %s does not exist", path);
        else
            set_err(err, errlen, "cannot open key file %s: %s", path, dc_strerror(rc));
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        set_err(err, errlen, "cannot stat key file %s: %s", path, dc_strerror(rc));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = DC_EINVAL;
        set_err(err, errlen, "key file %s is not a regular file", path);
        goto out_close;
    }
    /* Like ssh: a secret others can read (or replace) is no longer ours alone. */
    if ((st.st_mode & 077) != 0) {
        rc = DC_EPERM;
        set_err(err, errlen, "key file %s has mode %04o; it must be 0600 (chmod 600 %s)", path,
                (unsigned)(st.st_mode & 07777), path);
        goto out_close;
    }
    n = read_all(fd, buf, sizeof(buf));
    if (n < 0) {
        rc = (int)n;
        set_err(err, errlen, "cannot read key file %s: %s", path, dc_strerror(rc));
        goto out_wipe;
    }
    if (n == 0) {
        rc = DC_ECORRUPT;
        set_err(err, errlen, "key file %s is empty", path);
        goto out_wipe;
    }
    if (n > KEY_FILE_MAX) {
        rc = DC_ECORRUPT;
        set_err(err, errlen,
                "key file %s is too large to be an Ed25519 private key (%lld bytes; expected 68)",
                path, (long long)st.st_size);
        goto out_wipe;
    }
    rc = private_key_decode(buf, (size_t)n, sk, &why);
    if (rc == DC_EUNSUPPORTED) {
        rc = DC_ECORRUPT;
        set_err(err, errlen, "key file %s holds %s key; only Ed25519 keys are supported", path,
                why);
        goto out_wipe;
    }
    if (rc < 0) {
        set_err(err, errlen, "key file %s %s", path, why);
        goto out_wipe;
    }
    rc = identity_new(sk, out);
    if (rc < 0)
        set_err(err, errlen, "cannot load key file %s: %s", path, dc_strerror(rc));
    sodium_memzero(sk, sizeof(sk));
out_wipe:
    sodium_memzero(buf, sizeof(buf));
out_close:
    close(fd);
    return rc;
}

/*
 * Moves the finished temporary file to 'path'. With 'force' a plain rename() replaces any old
 * file atomically. Without it, link() gives no-clobber atomically (it fails with EEXIST
 * rather than replace); on file systems without hard links we fall back to a check and a
 * rename, which can only lose a race against a file created in the same instant.
 */
static int install_tmp(const char *tmp, const char *path, bool force)
{
    struct stat st;

    if (force)
        return rename(tmp, path) == 0 ? 0 : -errno;
    if (link(tmp, path) == 0) {
        unlink(tmp);
        return 0;
    }
    switch (errno) {
    case EPERM:
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
    case ENOSYS:
    case EMLINK:
        break;
    default:
        return -errno;
    }
    if (lstat(path, &st) == 0)
        return DC_EEXIST;
    return rename(tmp, path) == 0 ? 0 : -errno;
}

/*
 * fsyncs the directory holding 'path' so the rename itself survives a crash. Best effort:
 * the key is already complete on disk, and some file systems refuse fsync on directories.
 */
static void sync_parent_dir(char *path_copy)
{
    int dfd = open(dirname(path_copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (dfd < 0)
        return;
    (void)fsync(dfd);
    close(dfd);
}

int dc_identity_save_file(const struct dc_identity *id, const char *path, bool force, char *err,
                          size_t errlen)
{
    uint8_t buf[PRIVATE_KEY_PROTO_LEN];
    uint8_t hdr[DC_KEY_PROTO_HEADER_MAX];
    char *tmp = NULL, *dir_copy;
    struct stat st;
    size_t hlen;
    int fd = -1, rc, attempt;

    set_err(err, errlen, "%s", "");
    if (!force) {
        /* Checked first so the common refusal leaves no trace; install_tmp() closes the race. */
        if (lstat(path, &st) == 0) {
            set_err(err, errlen, "key file %s already exists; not overwriting it", path);
            return DC_EEXIST;
        }
        if (errno != ENOENT) {
            rc = -errno;
            set_err(err, errlen, "cannot check key file %s: %s", path, dc_strerror(rc));
            return rc;
        }
    }
    rc = dc_crypto_init();
    if (rc < 0) {
        set_err(err, errlen, "cannot save key file %s: libsodium failed to initialise", path);
        return rc;
    }
    /* Allocated before anything is written, so running out of memory leaves no file behind. */
    dir_copy = dc_strdup(path);
    if (dir_copy == NULL) {
        set_err(err, errlen, "cannot save key file %s: %s", path, dc_strerror(DC_ENOMEM));
        return DC_ENOMEM;
    }
    /* A random suffix, retried on collision, so concurrent savers never share a temp file. */
    for (attempt = 0; attempt < 8; attempt++) {
        tmp = dc_asprintf("%s.tmp-%08x", path, (unsigned)randombytes_random());
        if (tmp == NULL) {
            rc = DC_ENOMEM;
            set_err(err, errlen, "cannot save key file %s: %s", path, dc_strerror(rc));
            goto out_free_dir;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0 || errno != EEXIST)
            break;
        dc_free(tmp);
        tmp = NULL;
    }
    if (fd < 0) {
        rc = tmp == NULL ? DC_EEXIST : -errno;
        set_err(err, errlen, "cannot create a temporary file beside key file %s: %s", path,
                dc_strerror(rc));
        goto out_free_tmp;
    }
    /* The umask may have narrowed 0600 further (e.g. to 0400); make it exactly 0600. */
    if (fchmod(fd, 0600) < 0) {
        rc = -errno;
        set_err(err, errlen, "cannot set mode 0600 on %s: %s", tmp, dc_strerror(rc));
        goto out_unlink;
    }
    hlen = dc_key_proto_header(DC_KEY_ED25519, sizeof(id->sk), hdr);
    memcpy(buf, hdr, hlen);
    memcpy(buf + hlen, id->sk, sizeof(id->sk));
    rc = dc_write_all(fd, buf, hlen + sizeof(id->sk));
    sodium_memzero(buf, sizeof(buf));
    if (rc < 0) {
        set_err(err, errlen, "cannot write %s: %s", tmp, dc_strerror(rc));
        goto out_unlink;
    }
    if (fsync(fd) < 0) {
        rc = -errno;
        set_err(err, errlen, "cannot fsync %s: %s", tmp, dc_strerror(rc));
        goto out_unlink;
    }
    rc = close(fd) < 0 ? -errno : 0;
    fd = -1;
    if (rc < 0) {
        set_err(err, errlen, "cannot close %s: %s", tmp, dc_strerror(rc));
        goto out_unlink;
    }
    rc = install_tmp(tmp, path, force);
    if (rc == DC_EEXIST) {
        set_err(err, errlen, "key file %s already exists; not overwriting it", path);
        goto out_unlink;
    }
    if (rc < 0) {
        set_err(err, errlen, "cannot move %s to key file %s: %s", tmp, path, dc_strerror(rc));
        goto out_unlink;
    }
    sync_parent_dir(dir_copy);
    goto out_free_tmp;

out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
out_free_tmp:
    dc_free(tmp);
out_free_dir:
    dc_free(dir_copy);
    return rc;
}

void dc_identity_free(struct dc_identity *id)
{
    if (id == NULL)
        return;
    sodium_memzero(id, sizeof(*id));
    dc_free(id);
}

const struct dc_peer_id *dc_identity_peer_id(const struct dc_identity *id)
{
    return &id->id;
}

int dc_identity_sign(const struct dc_identity *id, const uint8_t *msg, size_t len,
                     uint8_t sig[DC_ED25519_SIGNATURE_LEN])
{
    return crypto_sign_detached(sig, NULL, msg, len, id->sk) == 0 ? 0 : DC_ECRYPTO;
}

void dc_identity_public_key(const struct dc_identity *id, uint8_t pk[DC_ED25519_PUBLIC_KEY_LEN])
{
    memcpy(pk, id->sk + crypto_sign_SEEDBYTES, DC_ED25519_PUBLIC_KEY_LEN);
}

int dc_identity_public_key_proto(const struct dc_identity *id, uint8_t *out, size_t cap,
                                 size_t *len)
{
    return dc_ed25519_public_key_proto(id->sk + crypto_sign_SEEDBYTES, out, cap, len);
}

/* SPDX-License-Identifier: MIT */
/*
 * pull.c - `models pull`: downloads a GGUF file into models_dir with libcurl. The bytes go to
 * NAME.part, so an interrupted download resumes with a Range request, and nothing half-written
 * ever carries a name the registry would list. The first four bytes are checked against the
 * GGUF magic as soon as they arrive (an HTML error page or a wrong URL stops at once, and the
 * partial file is deleted); the finished file goes through the same validator the registry
 * uses before it is renamed into place.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "model/engine.h"
#include "model/model.h"
#include "model/registry_int.h"

struct pull {
    int fd;
    uint64_t offset;   /* bytes already in the .part file when the transfer started */
    uint64_t received; /* bytes in the .part file now */
    uint64_t total;
    unsigned char head[4];
    size_t head_len;
    bool started;   /* the first body bytes were seen (status checked) */
    bool bad_magic; /* the body does not start with "GGUF" */
    int io_error;   /* -errno of a failed write */
    long status;
    CURL *curl;
    void (*progress)(const struct dc_pull_progress *p, void *ud);
    void *ud;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct pull *p = ud;
    size_t n = size * nmemb;

    if (!p->started) {
        p->started = true;
        curl_easy_getinfo(p->curl, CURLINFO_RESPONSE_CODE, &p->status);
        if (p->status >= 300)
            return 0; /* an error page is not the model */
        if (p->offset > 0 && p->status != 206) {
            /* The server ignored the Range: start over from the first byte. */
            if (ftruncate(p->fd, 0) != 0 || lseek(p->fd, 0, SEEK_SET) != 0) {
                p->io_error = -errno;
                return 0;
            }
            p->offset = 0;
            p->received = 0;
        }
    }
    /* The magic: the first four bytes of the file (a resumed file was checked before). */
    if (p->received < 4) {
        size_t take = 4 - (size_t)p->received < n ? 4 - (size_t)p->received : n;
        memcpy(p->head + p->head_len, data, take);
        p->head_len += take;
        if (memcmp(p->head, "GGUF", p->head_len) != 0) {
            p->bad_magic = true;
            return 0;
        }
    }
    if (dc_write_all(p->fd, data, n) < 0) {
        p->io_error = errno ? -errno : DC_EPEER;
        return 0;
    }
    p->received += n;
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct pull *p = ud;
    struct dc_pull_progress pr;

    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    if (p->progress == NULL)
        return 0;
    pr.received = p->received;
    pr.total = dltotal > 0 ? p->offset + (uint64_t)dltotal : 0;
    p->total = pr.total;
    p->progress(&pr, p->ud);
    return 0;
}

/* The file name the URL names: its path's last segment, without query or fragment. */
static char *name_from_url(const char *url)
{
    const char *s = strstr(url, "://"), *end, *slash;

    s = s ? s + 3 : url;
    end = s + strcspn(s, "?#");
    slash = NULL;
    for (const char *c = s; c < end; c++) {
        if (*c == '/')
            slash = c;
    }
    if (slash == NULL || slash + 1 >= end)
        return NULL;
    return dc_strndup(slash + 1, (size_t)(end - slash - 1));
}

static bool name_ok(const char *name)
{
    return name[0] != '\0' && name[0] != '.' && strchr(name, '/') == NULL && strlen(name) < 240;
}

#define PULL_ERR(code, ...)                                                                        \
    do {                                                                                           \
        rc = (code);                                                                               \
        if (err != NULL && *err == NULL)                                                           \
            *err = dc_asprintf(__VA_ARGS__);                                                       \
    } while (0)

int dc_model_pull(const char *url, const char *dir, const char *name,
                  void (*progress)(const struct dc_pull_progress *p, void *ud), void *ud,
                  char **path_out, char sha256_hex[65], char **err)
{
    struct pull p = {.fd = -1, .progress = progress, .ud = ud};
    char *base = NULL, *final = NULL, *part = NULL;
    struct dc_gguf *g = NULL;
    struct stat st;
    CURLcode cc;
    int rc = 0;

    *path_out = NULL;
    sha256_hex[0] = '\0';
    if (err != NULL)
        *err = NULL;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        PULL_ERR(DC_EINVAL, "%s: only http:// and https:// URLs can be pulled", url);
        return rc;
    }
    base = name ? dc_strdup(name) : name_from_url(url);
    if (base == NULL) {
        PULL_ERR(name ? DC_ENOMEM : DC_EINVAL, "%s: the URL names no file; use --output NAME", url);
        return rc;
    }
    if (!name_ok(base)) {
        PULL_ERR(DC_EINVAL, "'%s' is not a usable file name", base);
        goto out_free;
    }
    {
        size_t n = strlen(base);
        bool ext = n > 5 && strcmp(base + n - 5, ".gguf") == 0;
        final = dc_asprintf("%s/%s%s", dir, base, ext ? "" : ".gguf");
        part = final ? dc_asprintf("%s.part", final) : NULL;
    }
    if (final == NULL || part == NULL) {
        rc = DC_ENOMEM;
        goto out_free;
    }
    if (stat(final, &st) == 0) {
        PULL_ERR(DC_EEXIST, "%s already exists", final);
        goto out_free;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        PULL_ERR(-errno, "cannot create %s: %s", dir, strerror(errno));
        goto out_free;
    }
    p.fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (p.fd < 0) {
        PULL_ERR(-errno, "cannot open %s: %s", part, strerror(errno));
        goto out_free;
    }
    if (fstat(p.fd, &st) != 0) {
        PULL_ERR(-errno, "%s: %s", part, strerror(errno));
        goto out_close;
    }
    p.offset = (uint64_t)st.st_size;
    if (p.offset > 0) {
        /* Resume only a partial file that starts like a GGUF one. */
        unsigned char magic[4];
        if (p.offset < 4 || pread(p.fd, magic, 4, 0) != 4 || memcmp(magic, "GGUF", 4) != 0) {
            if (ftruncate(p.fd, 0) != 0) {
                PULL_ERR(-errno, "%s: %s", part, strerror(errno));
                goto out_close;
            }
            p.offset = 0;
        } else {
            memcpy(p.head, magic, 4);
            p.head_len = 4;
        }
    }
    if (lseek(p.fd, (off_t)p.offset, SEEK_SET) < 0) {
        PULL_ERR(-errno, "%s: %s", part, strerror(errno));
        goto out_close;
    }
    p.received = p.offset;

    pthread_once(&curl_once, curl_init_once);
    p.curl = curl_easy_init();
    if (p.curl == NULL) {
        rc = DC_ENOMEM;
        goto out_close;
    }
    curl_easy_setopt(p.curl, CURLOPT_URL, url);
    curl_easy_setopt(p.curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(p.curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(p.curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(p.curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(p.curl, CURLOPT_USERAGENT, "democritus");
    curl_easy_setopt(p.curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(p.curl, CURLOPT_WRITEDATA, &p);
    curl_easy_setopt(p.curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(p.curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(p.curl, CURLOPT_XFERINFODATA, &p);
    curl_easy_setopt(p.curl, CURLOPT_CONNECTTIMEOUT, 30L);
    /* A stalled transfer (under 1 byte/s for a minute) fails; the .part stays for a resume. */
    curl_easy_setopt(p.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(p.curl, CURLOPT_LOW_SPEED_TIME, 60L);
    if (p.offset > 0)
        curl_easy_setopt(p.curl, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)p.offset);
    cc = curl_easy_perform(p.curl);
    if (p.status == 0)
        curl_easy_getinfo(p.curl, CURLINFO_RESPONSE_CODE, &p.status);
    curl_easy_cleanup(p.curl);

    if (p.bad_magic) {
        unlink(part);
        PULL_ERR(DC_ECORRUPT, "%s is not a GGUF file (it does not start with \"GGUF\")", url);
        goto out_close;
    }
    if (p.io_error < 0) {
        PULL_ERR(p.io_error, "writing %s: %s", part, dc_strerror(p.io_error));
        goto out_close;
    }
    if (p.status >= 300 || (p.status == 0 && cc == CURLE_OK)) {
        PULL_ERR(DC_EPEER, "%s: HTTP status %ld", url, p.status);
        goto out_close;
    }
    if (cc != CURLE_OK) {
        PULL_ERR(DC_EPEER, "%s: %s (%llu bytes kept in %s; run the same command to resume)", url,
                 curl_easy_strerror(cc), (unsigned long long)p.received, part);
        goto out_close;
    }
    if (fsync(p.fd) != 0) {
        PULL_ERR(-errno, "%s: %s", part, strerror(errno));
        goto out_close;
    }
    close(p.fd);
    p.fd = -1;

    rc = dc_gguf_open(part, &g);
    if (rc < 0) {
        PULL_ERR(rc, "%s: downloaded file is not a valid GGUF: %s", url,
                 rc == DC_ECORRUPT ? dc_gguf_error() : dc_strerror(rc));
        unlink(part);
        goto out_free;
    }
    dc_gguf_close(g);
    /* link + unlink: never replaces a file that appeared meanwhile. */
    if (link(part, final) != 0) {
        if (errno == EEXIST) {
            PULL_ERR(DC_EEXIST, "%s already exists", final);
            goto out_free;
        }
        if (rename(part, final) != 0) {
            PULL_ERR(-errno, "cannot rename %s: %s", part, strerror(errno));
            goto out_free;
        }
    } else {
        unlink(part);
    }
    rc = dc_sha256_file(final, sha256_hex);
    if (rc < 0) {
        PULL_ERR(rc, "%s: %s", final, dc_strerror(rc));
        goto out_free;
    }
    *path_out = final;
    final = NULL;
    rc = 0;
    goto out_free;

out_close:
    if (p.fd >= 0)
        close(p.fd);
out_free:
    dc_free(base);
    dc_free(final);
    dc_free(part);
    return rc;
}

/* SPDX-License-Identifier: MIT */
/*
 * probe.c - load isolation for the registry. llama.cpp validates hyperparameters with
 * GGML_ASSERT, which abort()s the process: a GGUF that passes our structural validator (gguf.c)
 * can still kill the daemon, e.g. with llama.block_count = 0. So the first load of a file
 * happens in a child process that loads it, decodes one token and _exit()s; only a file whose
 * child exited 0 is ever loaded in-process.
 *
 * Why a prober process. fork() in a multithreaded process copies only the calling thread, and a
 * lock another thread held at that moment stays locked in the child forever. The child loads a
 * model, which allocates: with an allocator that is not fork-safe (ASan's, in our test builds)
 * or any library lock caught mid-use, it hangs. We saw exactly that when probes raced scans and
 * engine threads. So the registry forks one prober when it opens (typically before the daemon
 * starts its other threads), and that single-threaded process forks every probe child: forking
 * from a process with one thread is always safe. Requests and verdicts cross a socketpair; the
 * prober enforces the timeout and dies with its parent (PR_SET_PDEATHSIG). dc_model_probe() is
 * the direct, in-process fork for callers that know they are single-threaded (tests, tools).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <llama.h>

#include "model/registry_int.h"

/* Child exit codes, each a distinct failure the parent names. */
enum {
    PROBE_EXIT_LOAD = 10,    /* llama_model_load_from_file returned NULL */
    PROBE_EXIT_CONTEXT = 11, /* llama_init_from_model returned NULL */
    PROBE_EXIT_DECODE = 12,  /* llama_decode/llama_encode failed */
};

#define PROBE_TAIL_MAX           4096 /* bytes of the child's stderr kept for the message */
#define PROBE_DEFAULT_TIMEOUT_MS 300000u

/* In the child: only warnings and errors reach stderr, which is the pipe to the parent. */
static void probe_log(enum ggml_log_level level, const char *text, void *ud)
{
    ssize_t w;

    (void)ud;
    if (level != GGML_LOG_LEVEL_ERROR && level != GGML_LOG_LEVEL_WARN)
        return;
    w = write(STDERR_FILENO, text, strlen(text));
    (void)w;
}

static int probe_child(const char *path, int n_threads)
{
    struct llama_model_params mp = llama_model_default_params();
    struct llama_context_params cp = llama_context_default_params();
    struct llama_model *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    llama_token tok;
    bool encoder_only;
    int rc;

    llama_log_set(probe_log, NULL);
    llama_backend_init();
    mp.n_gpu_layers = 0;
    model = llama_model_load_from_file(path, mp);
    if (model == NULL)
        return PROBE_EXIT_LOAD;
    encoder_only = llama_model_has_encoder(model) && !llama_model_has_decoder(model);
    cp.n_ctx = 256;
    cp.n_batch = 32;
    cp.n_ubatch = 32;
    cp.n_seq_max = 1;
    cp.n_threads = n_threads > 0 ? n_threads : 1;
    cp.n_threads_batch = cp.n_threads;
    cp.embeddings = encoder_only;
    ctx = llama_init_from_model(model, cp);
    if (ctx == NULL)
        return PROBE_EXIT_CONTEXT;
    vocab = llama_model_get_vocab(model);
    tok = llama_vocab_bos(vocab);
    if (tok < 0 || tok >= llama_vocab_n_tokens(vocab))
        tok = 0;
    if (encoder_only)
        rc = llama_encode(ctx, llama_batch_get_one(&tok, 1));
    else
        rc = llama_decode(ctx, llama_batch_get_one(&tok, 1));
    llama_free(ctx);
    llama_model_free(model);
    return rc == 0 ? 0 : PROBE_EXIT_DECODE;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The line of the child's output that says most, trimmed, in 'line': the last one naming an
 * error or a failed assertion (llama.cpp's loader ends with a generic "failed to load model"
 * after the line with the reason), else the last non-empty one.
 */
static void pick_line(const char *buf, size_t len, char *line, size_t cap)
{
    size_t best_start = 0, best_end = 0, end = len;
    bool found = false;

    while (end > 0) {
        size_t start, e = end;
        while (e > 0 && (buf[e - 1] == '\n' || buf[e - 1] == '\r' || buf[e - 1] == ' '))
            e--;
        start = e;
        while (start > 0 && buf[start - 1] != '\n')
            start--;
        if (e > start) {
            bool generic = memmem(buf + start, e - start, "failed to load model", 20) != NULL;
            bool telling = memmem(buf + start, e - start, "error", 5) != NULL ||
                           memmem(buf + start, e - start, "GGML_ASSERT", 11) != NULL;
            if (best_end == 0) {
                best_start = start;
                best_end = e;
            }
            if (telling && !generic) {
                best_start = start;
                best_end = e;
                found = true;
            }
        }
        if (found || start == 0)
            break;
        end = start;
    }
    if (best_end - best_start >= cap)
        best_start = best_end - (cap - 1);
    memcpy(line, buf + best_start, best_end - best_start);
    line[best_end - best_start] = '\0';
    for (char *p = line; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    }
}

/* What became of one probe child: the raw facts the message is made from. */
struct probe_outcome {
    bool timed_out;
    int status; /* waitpid status */
    char tail[PROBE_TAIL_MAX];
    size_t tail_len;
};

/* Forks the child that loads 'path', collects its stderr and status. -errno on fork failure. */
static int probe_run(const char *path, int n_threads, uint32_t timeout_ms, struct probe_outcome *o)
{
    int fds[2], rc;
    int64_t deadline;
    pid_t pid;

    memset(o, 0, sizeof(*o));
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -errno;
    /* Nothing buffered may be written twice (once by each process). */
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        close(fds[0]);
        close(fds[1]);
        return rc;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        /* Nothing of the parent's (sockets, locks, the pipe's read end) stays open here. */
        close_range(3, ~0u, 0);
        /* ggml_abort would otherwise attach gdb to print a backtrace. */
        setenv("GGML_NO_BACKTRACE", "1", 1);
        _exit(probe_child(path, n_threads));
    }
    close(fds[1]);
    deadline = now_ms() + timeout_ms;
    for (;;) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int64_t left = deadline - now_ms();
        char chunk[1024];
        ssize_t got;
        int pr;

        if (left <= 0) {
            o->timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        pr = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        got = read(fds[0], chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* EOF: the child exited (or closed stderr) */
        /* Keep only the last PROBE_TAIL_MAX bytes (a chunk is smaller than the tail). */
        if (o->tail_len + (size_t)got > sizeof(o->tail)) {
            size_t drop = o->tail_len + (size_t)got - sizeof(o->tail);
            memmove(o->tail, o->tail + drop, o->tail_len - drop);
            o->tail_len -= drop;
        }
        memcpy(o->tail + o->tail_len, chunk, (size_t)got);
        o->tail_len += (size_t)got;
    }
    close(fds[0]);
    while (waitpid(pid, &o->status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

/* 0 for a child that loaded the model; otherwise DC_EUNSUPPORTED with the one-line verdict. */
static int probe_verdict(const char *path, uint32_t timeout_ms, const struct probe_outcome *o,
                         char **err)
{
    char line[512], what[128];

    if (!o->timed_out && WIFEXITED(o->status) && WEXITSTATUS(o->status) == 0)
        return 0;
    pick_line(o->tail, o->tail_len, line, sizeof(line));
    if (o->timed_out) {
        snprintf(what, sizeof(what), "the probe load did not finish in %u ms", timeout_ms);
    } else if (WIFSIGNALED(o->status)) {
        snprintf(what, sizeof(what), "child died with signal %d (%s)", WTERMSIG(o->status),
                 strsignal(WTERMSIG(o->status)));
    } else {
        switch (WEXITSTATUS(o->status)) {
        case PROBE_EXIT_LOAD:
            snprintf(what, sizeof(what), "the model failed to load");
            break;
        case PROBE_EXIT_CONTEXT:
            snprintf(what, sizeof(what), "no context could be created");
            break;
        case PROBE_EXIT_DECODE:
            snprintf(what, sizeof(what), "decoding one token failed");
            break;
        default:
            snprintf(what, sizeof(what), "child exited with status %d", WEXITSTATUS(o->status));
            break;
        }
    }
    if (err != NULL) {
        *err = dc_asprintf("llama.cpp rejected %s: %s%s%s", path, what, line[0] ? ": " : "", line);
        if (*err == NULL)
            return DC_ENOMEM;
    }
    return DC_EUNSUPPORTED;
}

int dc_model_probe(const char *path, int n_threads, uint32_t timeout_ms, char **err)
{
    struct probe_outcome *o;
    int rc;

    if (err != NULL)
        *err = NULL;
    if (timeout_ms == 0)
        timeout_ms = PROBE_DEFAULT_TIMEOUT_MS;
    o = dc_malloc(sizeof(*o));
    if (o == NULL)
        return DC_ENOMEM;
    rc = probe_run(path, n_threads, timeout_ms, o);
    if (rc == 0)
        rc = probe_verdict(path, timeout_ms, o, err);
    dc_free(o);
    return rc;
}

/* ---- the prober: a single-threaded process that forks the probe children ---- */

/*
 * Request (parent -> prober): u32 n_threads, u32 timeout_ms, u32 path length, the path.
 * Response: i32 rc (0 or -errno of probe_run), u8 timed_out, i32 status, u32 tail length, tail.
 */
struct dc_prober {
    pid_t pid;
    int fd;
    pthread_mutex_t mu; /* one probe at a time */
};

/* The probe protocol's reads and writes: whole or failed (dc_read_full / dc_write_all). */
static bool read_ok(int fd, void *p, size_t n)
{
    return dc_read_full(fd, p, n) == 0;
}

static bool write_ok(int fd, const void *p, size_t n)
{
    return dc_write_all(fd, p, n) == 0;
}

/* The prober's life: serve requests until the registry closes its end (or dies). */
static void prober_main(int fd)
{
    static char path[PATH_MAX + 1];
    static struct probe_outcome o;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGCHLD, SIG_DFL);
    for (;;) {
        uint32_t hdr[3];
        int32_t rc, status;
        uint32_t tail_len;
        uint8_t timed_out;

        if (!read_ok(fd, hdr, sizeof(hdr)) || hdr[2] > PATH_MAX || !read_ok(fd, path, hdr[2]))
            _exit(0);
        path[hdr[2]] = '\0';
        rc = probe_run(path, (int)hdr[0], hdr[1], &o);
        timed_out = o.timed_out;
        status = o.status;
        tail_len = (uint32_t)o.tail_len;
        if (!write_ok(fd, &rc, sizeof(rc)) || !write_ok(fd, &timed_out, 1) ||
            !write_ok(fd, &status, sizeof(status)) || !write_ok(fd, &tail_len, sizeof(tail_len)) ||
            !write_ok(fd, o.tail, tail_len))
            _exit(0);
    }
}

int dc_prober_start(struct dc_prober **out)
{
    struct dc_prober *p;
    int sv[2], rc;

    *out = NULL;
    p = dc_calloc(1, sizeof(*p));
    if (p == NULL)
        return DC_ENOMEM;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = -errno;
        dc_free(p);
        return rc;
    }
    fflush(stdout);
    fflush(stderr);
    p->pid = fork();
    if (p->pid < 0) {
        rc = -errno;
        close(sv[0]);
        close(sv[1]);
        dc_free(p);
        return rc;
    }
    if (p->pid == 0) {
        /* Keep stdio (the children's go to a pipe anyway) and our end of the socket. */
        if (sv[1] != 3) {
            dup2(sv[1], 3);
            close(sv[1]);
        }
        close_range(4, ~0u, 0);
        prober_main(3);
        _exit(0);
    }
    close(sv[1]);
    p->fd = sv[0];
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return 0;
}

void dc_prober_stop(struct dc_prober *p)
{
    if (p == NULL)
        return;
    close(p->fd); /* EOF: the prober exits */
    while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    pthread_mutex_destroy(&p->mu);
    dc_free(p);
}

int dc_prober_probe(struct dc_prober *p, const char *path, int n_threads, uint32_t timeout_ms,
                    char **err)
{
    struct probe_outcome *o;
    uint32_t hdr[3];
    int32_t rc = 0, status;
    uint32_t tail_len;
    uint8_t timed_out;
    size_t len = strlen(path);

    if (err != NULL)
        *err = NULL;
    if (timeout_ms == 0)
        timeout_ms = PROBE_DEFAULT_TIMEOUT_MS;
    if (len > PATH_MAX)
        return DC_EINVAL;
    o = dc_calloc(1, sizeof(*o));
    if (o == NULL)
        return DC_ENOMEM;
    hdr[0] = (uint32_t)(n_threads > 0 ? n_threads : 1);
    hdr[1] = timeout_ms;
    hdr[2] = (uint32_t)len;
    pthread_mutex_lock(&p->mu);
    /* The prober enforces the timeout itself and always answers; it only fails to when it is
     * gone, which reads as EOF here. */
    if (!write_ok(p->fd, hdr, sizeof(hdr)) || !write_ok(p->fd, path, len) ||
        !read_ok(p->fd, &rc, sizeof(rc)) || !read_ok(p->fd, &timed_out, 1) ||
        !read_ok(p->fd, &status, sizeof(status)) || !read_ok(p->fd, &tail_len, sizeof(tail_len)) ||
        tail_len > sizeof(o->tail) || !read_ok(p->fd, o->tail, tail_len))
        rc = DC_ECLOSED;
    pthread_mutex_unlock(&p->mu);
    if (rc == 0) {
        o->timed_out = timed_out != 0;
        o->status = status;
        o->tail_len = tail_len;
        rc = probe_verdict(path, timeout_ms, o, err);
    }
    dc_free(o);
    return rc;
}

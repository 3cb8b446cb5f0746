/* SPDX-License-Identifier: MIT */
/*
 * gen_util.h - shared by the unit tests that make their models at test time: runs the gguf-gen
 * tool (tools/gguf-gen.c, path in DC_GGUF_GEN, set by CMake for those tests) as a child process,
 * so the tests never need a model file from outside the repository, and reads files back.
 * Include it after <cmocka.h>.
 */
#ifndef DC_TEST_GEN_UTIL_H
#define DC_TEST_GEN_UTIL_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef DC_GGUF_GEN
#error "DC_GGUF_GEN (the gguf-gen binary) must be defined by the build"
#endif

/*
 * Runs gguf-gen with the given arguments (NULL-terminated, at most 45) with its stdout sent to
 * /dev/null (its errors stay on stderr, where a failing test shows them). Returns its exit
 * status, 128 when it died of a signal, or -1 when it could not be started.
 */
static inline int run_gen(const char *arg, ...)
{
    const char *argv[48];
    int n = 0, status;
    va_list ap;
    pid_t pid;

    argv[n++] = DC_GGUF_GEN;
    va_start(ap, arg);
    for (const char *a = arg; a != NULL && n < 46; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);

        if (devnull >= 0)
            dup2(devnull, 1);
        execv(DC_GGUF_GEN, (char *const *)argv);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* Reads a whole non-empty file into a malloc()ed buffer (free()); fails the test otherwise. */
static inline uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    p = malloc((size_t)n);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

#endif

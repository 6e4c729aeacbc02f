/* common.c — see common.h. No MPI, no HDF5. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void (*fatal_hook)(int code);
static int log_rank, log_world = 1;

int koe_error_set(KoeError *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void koe_set_fatal_hook(void (*hook)(int code)) { fatal_hook = hook; }

static void log_prefix(FILE *f) {
    if (log_world > 1)
        fprintf(f, "koe[%d]: ", log_rank);
    else
        fputs("koe: ", f);
}

void koe_fatal(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_prefix(stderr);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    fflush(stdout);
    if (fatal_hook) fatal_hook(code);
    exit(code);
}

void koe_set_log_rank(int rank, int world) {
    log_rank = rank;
    log_world = world;
}

void koe_log(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_prefix(stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void koe_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_prefix(stderr);
    fputs("warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void *koe_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) koe_fatal(KOE_EXIT_INTERNAL, "out of memory allocating %zu bytes", n);
    return p;
}

void *koe_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) koe_fatal(KOE_EXIT_INTERNAL, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *koe_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) koe_fatal(KOE_EXIT_INTERNAL, "out of memory reallocating to %zu bytes", n);
    return q;
}

char *koe_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(koe_malloc(n), s, n);
}

uint64_t koe_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * KOE_FNV_PRIME;
    return h;
}

double koe_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fsync_path(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int koe_publish_file(const char *tmp, const char *path, KoeError *err) {
    int rc = 0;
    if (fsync_path(tmp, O_RDONLY) < 0)
        rc = koe_error_set(err, "%s: fsync failed: %s", tmp, strerror(errno));
    else if (rename(tmp, path) < 0)
        rc = koe_error_set(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    char *dir = koe_strdup(path);
    if (fsync_path(dirname(dir), O_RDONLY | O_DIRECTORY) < 0)
        rc = koe_error_set(err, "%s: fsync of its directory failed: %s", path, strerror(errno));
    free(dir);
    return rc;
}

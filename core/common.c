/* common.c — see common.h. No MPI, no HDF5. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void (*fatal_hook)(int code);
static int log_rank;

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

static char log_lead[32] = "koe: ";

static atomic_int line_open;

void koe_log_line_open(void) { atomic_store(&line_open, 1); }

void koe_log_end_line(void) {
    if (atomic_exchange(&line_open, 0)) fputc('\n', stderr);
}

static void log_prefix(FILE *f) {
    koe_log_end_line();
    fputs(log_lead, f);
}

const char *koe_log_prefix(void) { return log_lead; }

int koe_log_rank(void) { return log_rank; }

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
    if (world > 1) snprintf(log_lead, sizeof log_lead, "koe[%d]: ", rank);
    else
        snprintf(log_lead, sizeof log_lead, "koe: ");
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

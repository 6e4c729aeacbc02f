/* common.c — see common.h. No MPI, no HDF5. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static void (*fatal_hook)(int code);
static int log_rank;

#define OUTPUTS_MAX 16
static char *outputs[OUTPUTS_MAX]; /* koe_output_begin's files; NULL slots are free */
static int output_nth[OUTPUTS_MAX]; /* which koe_output_begin made each (1, 2, ...) */
static pthread_mutex_t outputs_lock = PTHREAD_MUTEX_INITIALIZER;

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
const char *koe_fs_trouble(const char *path) {
    if (errno == ENOSPC || errno == EDQUOT) return "disk full";
    if (errno == EROFS) return "read-only file system";
    struct statvfs fs;
    if (statvfs(path, &fs) < 0) { /* not created yet, or already removed: its directory */
        char *dir = koe_strdup(path);
        int rc = statvfs(dirname(dir), &fs);
        free(dir);
        if (rc < 0) return NULL;
    }
    if (fs.f_flag & ST_RDONLY) return "read-only file system";
    if ((double)fs.f_bavail * (double)fs.f_frsize < 1024.0 * 1024.0) return "disk full";
    return NULL;
}

/* Every koe_fs_note ends so: a message that has one is not given another. */
#define FS_NOTE_END "and run again)"

const char *koe_fs_note(const char *path) {
    static __thread char note[KOE_ERR_LEN];
    const char *why = koe_fs_trouble(path);
    note[0] = 0;
    if (why && !strcmp(why, "disk full"))
        snprintf(note, sizeof note, ": disk full (no space left on the file system holding %s; free space " FS_NOTE_END,
                 path);
    else if (why)
        snprintf(note, sizeof note, ": read-only file system (%s is on one; make it writable or choose another place, "
                 FS_NOTE_END, path);
    return note;
}

int koe_error_fs(KoeError *err, const char *path) {
    const char *note = koe_fs_note(path);
    if (err && note[0] && !strstr(err->msg, FS_NOTE_END)) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, "%s", note);
    }
    return -1;
}

/* KOE_TEST_STOP_AT_OUTPUT=N[:data|:published] (see common.h): the output N and the point, parsed once. */
enum { STOP_CREATED, STOP_DATA, STOP_PUBLISHED };
static int stop_nth(int *point) {
    static int n = -1, at;
    if (n < 0) {
        const char *v = getenv("KOE_TEST_STOP_AT_OUTPUT");
        char *end = NULL;
        n = v ? (int)strtol(v, &end, 10) : 0;
        at = !end || !*end ? STOP_CREATED : !strcmp(end, ":data") ? STOP_DATA
                                          : !strcmp(end, ":published") ? STOP_PUBLISHED : -1;
        if (at < 0) koe_fatal(KOE_EXIT_USAGE, "KOE_TEST_STOP_AT_OUTPUT=%s: want N, N:data or N:published", v);
    }
    *point = at;
    return n;
}

/* Which koe_output_begin registered tmp (0: none); the caller holds outputs_lock. */
static int nth_of(const char *tmp) {
    for (int i = 0; i < OUTPUTS_MAX; i++)
        if (outputs[i] && !strcmp(outputs[i], tmp)) return output_nth[i];
    return 0;
}

void koe_output_begin(const char *tmp) {
    pthread_mutex_lock(&outputs_lock);
    int i = 0;
    while (i < OUTPUTS_MAX && outputs[i]) i++;
    KOE_ASSERT(i < OUTPUTS_MAX);
    outputs[i] = koe_strdup(tmp);
    static int calls;
    output_nth[i] = ++calls;
    int point;
    const int stop = stop_nth(&point) == calls && point == STOP_CREATED;
    pthread_mutex_unlock(&outputs_lock);
    if (stop) raise(SIGSTOP);
}

int koe_output_data_stop(const char *tmp) {
    pthread_mutex_lock(&outputs_lock);
    static int done;
    int point;
    const int stop = !done && stop_nth(&point) == nth_of(tmp) && point == STOP_DATA;
    done |= stop;
    pthread_mutex_unlock(&outputs_lock);
    return stop;
}

void koe_output_stop(void) { raise(SIGSTOP); }

void koe_output_data_file(FILE *f, const char *tmp) {
    if (!koe_output_data_stop(tmp)) return;
    fflush(f);
    koe_output_stop();
}

void koe_output_end(const char *tmp) {
    pthread_mutex_lock(&outputs_lock);
    for (int i = 0; i < OUTPUTS_MAX; i++)
        if (outputs[i] && !strcmp(outputs[i], tmp)) {
            free(outputs[i]);
            outputs[i] = NULL;
            break;
        }
    pthread_mutex_unlock(&outputs_lock);
}

/* koe_fatal's cleanup: say (if asked) which outputs in progress met a full or read-only file system, remove them.
 * No lock: a fatal error may come from a thread that holds it (the registry is only read here). */
static void outputs_remove_all(int say) {
    for (int i = 0; i < OUTPUTS_MAX; i++) {
        if (!outputs[i] || access(outputs[i], F_OK) < 0) continue;
        errno = 0;
        const char *note = say ? koe_fs_note(outputs[i]) : "";
        if (note[0]) {
            log_prefix(stderr);
            fprintf(stderr, "error: %s: removed (half written, nothing published)%s\n", outputs[i], note);
        }
        unlink(outputs[i]);
    }
}

void koe_fatal(int code, const char *fmt, ...) {
    char msg[4 * KOE_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_prefix(stderr);
    fprintf(stderr, "error: %s\n", msg);
    outputs_remove_all(!strstr(msg, FS_NOTE_END)); /* unless the message said so */
    fflush(stderr);
    fflush(stdout);
    if (fatal_hook) fatal_hook(code);
    /* _exit: no atexit teardown. HDF5's would flush and close files a failed write left half open (it
     * crashes in H5F__close_cb after an MPI-IO write error), while another thread may still use HDF5. */
    _exit(code);
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

void koe_advise_huge(void *p, size_t n) {
    const uintptr_t huge = (uintptr_t)1 << 21, a = ((uintptr_t)p + huge - 1) & ~(huge - 1),
                    b = ((uintptr_t)p + n) & ~(huge - 1);
    if (b > a) madvise((void *)a, b - a, MADV_HUGEPAGE); /* a kernel without THP says EINVAL: no matter */
}

uint64_t koe_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * KOE_FNV_PRIME;
    return h;
}

int koe_file_checksum(const char *path, char out[17], KoeError *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return koe_error_set(err, "%s: cannot open: %s", path, strerror(errno));
    uint64_t h = KOE_FNV_OFFSET;
    static const size_t bufsz = 1 << 20;
    unsigned char *buf = koe_malloc(bufsz);
    int rc = 0;
    for (;;) {
        ssize_t got = read(fd, buf, bufsz);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            rc = koe_error_set(err, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
        if (got == 0) break;
        h = koe_fnv1a(h, buf, (size_t)got);
    }
    free(buf);
    close(fd);
    if (rc == 0) snprintf(out, 17, "%016llx", (unsigned long long)h);
    return rc;
}

double koe_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int koe_cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double koe_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, koe_cmp_double);
    return v[n / 2];
}

static int fsync_path(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int koe_publish_file(const char *tmp, const char *path, KoeError *err) {
    int rc = 0, point;
    pthread_mutex_lock(&outputs_lock);
    const int nth = nth_of(tmp);
    pthread_mutex_unlock(&outputs_lock);
    const int stop = nth && stop_nth(&point) == nth && point == STOP_PUBLISHED; /* test hook, see common.h */
    koe_output_end(tmp);
    if (fsync_path(tmp, O_RDONLY) < 0)
        rc = koe_error_set(err, "%s: fsync failed: %s", tmp, strerror(errno));
    else if (rename(tmp, path) < 0)
        rc = koe_error_set(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc < 0) {
        koe_error_fs(err, tmp);
        unlink(tmp);
        return rc;
    }
    char *dir = koe_strdup(path);
    if (fsync_path(dirname(dir), O_RDONLY | O_DIRECTORY) < 0)
        rc = koe_error_set(err, "%s: fsync of its directory failed: %s", path, strerror(errno));
    free(dir);
    if (stop) raise(SIGSTOP);
    return rc;
}

/* common.h — error reporting, assertions, allocation and timing shared by every module.
 * Must not include MPI or HDF5: core/ and data/ stay testable in one process. */
#pragma once
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes of the koe binary (recipes/README.md, Exit codes). */
enum {
    KOE_EXIT_OK = 0,        /* success */
    KOE_EXIT_USAGE = 1,     /* usage or bad input: the message names the file, line or key */
    KOE_EXIT_INTERNAL = 2,  /* internal error */
    KOE_EXIT_PREEMPTED = 3, /* stopped by a preemption signal after a clean checkpoint */
};

/* The one audio sample rate of koe: corpora, features and models are 16 kHz; audio at other rates
 * is resampled when the corpus is prepared. */
#define KOE_SAMPLE_RATE 16000

/* A recoverable error a user can cause (bad file, bad key): filled by the callee, printed or
 * recorded (prepare-report.tsv) by the caller. Functions that take one return 0 or -1. */
#define KOE_ERR_LEN 1024
typedef struct {
    char msg[KOE_ERR_LEN];
} KoeError;

int koe_error_set(KoeError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fatal errors. On a multi-rank run distributed/ installs a hook that aborts the communicator,
 * so one rank never exits while the others wait in a collective. */
void koe_set_fatal_hook(void (*hook)(int code));
void koe_fatal(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

#define KOE_ASSERT(cond)                                                                          \
    do {                                                                                          \
        if (!(cond))                                                                              \
            koe_fatal(KOE_EXIT_INTERNAL, "%s:%d: internal error: assertion failed: %s", __FILE__, \
                      __LINE__, #cond);                                                           \
    } while (0)

/* Logging to stderr, prefixed with the rank on multi-rank runs ("koe[2]: ..."). */
void koe_set_log_rank(int rank, int world);
int koe_log_rank(void);
const char *koe_log_prefix(void); /* "koe: " or "koe[R]: " */
/* A progress line (core/progress.h) is on the terminal without its newline: the next message,
 * from any thread, ends it first (koe_log, koe_warn, koe_fatal, or koe_log_end_line before other output). */
void koe_log_line_open(void);
void koe_log_end_line(void);
void koe_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void koe_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation that never returns NULL: running out of memory is fatal, with the size asked for. */
void *koe_malloc(size_t n);
void *koe_calloc(size_t n, size_t size);
void *koe_realloc(void *p, size_t n);
char *koe_strdup(const char *s);
/* Transparent huge pages for the 2 MiB-aligned interior of p (n bytes, not yet touched): for large
 * buffers that are filled once and kept (AdamW's moments, the model's parameters, gradients and arena), whose
 * first touch otherwise costs a page fault per 4 KiB: in a VM most of the time of reading a checkpoint
 * into them (base /model, 1 rank, Zen 5 VM: 2.0 s with 4 KiB pages, 0.13-0.17 s with 2 MiB). Advice only: where
 * the kernel has no THP nothing changes. */
void koe_advise_huge(void *p, size_t n);

/* FNV-1a 64 over n bytes, continuing from h (start from KOE_FNV_OFFSET): koe's checksums of file
 * contents (label files' shard fingerprints, shard audio, recipes). */
#define KOE_FNV_OFFSET 0xcbf29ce484222325ULL
#define KOE_FNV_PRIME 0x100000001b3ULL
uint64_t koe_fnv1a(uint64_t h, const void *p, size_t n);
/* FNV-1a 64 over a file's bytes as 16 lowercase hex digits (+ NUL) in out: the identity of a
 * checkpoint or k-means file that labels and features record. */
int koe_file_checksum(const char *path, char out[17], KoeError *err);

double koe_now(void); /* monotonic seconds */
/* qsort's comparison for doubles in ascending order */
int koe_cmp_double(const void *a, const void *b);
/* v[0, n) sorted in place, then v[n / 2]: the median, of an even count the upper of the two middle ones */
double koe_median(double *v, int n);

/* One arena carved into named views (llm.c style). A carve function lists every view once and runs
 * twice: over arena_measure() to size the arena (arena_take returns NULL and only counts), then over
 * arena_over(mem, floats) to bind the views. Each view takes n floats rounded up to 16, so views stay
 * 64-byte aligned relative to the arena; taking past the arena's end is an internal error. */
typedef struct {
    float *base;  /* NULL: measuring */
    int64_t cap;  /* floats at base */
    int64_t used; /* floats taken so far, rounding included */
} Arena;

static inline Arena arena_measure(void) { return (Arena){NULL, 0, 0}; }
static inline Arena arena_over(float *base, int64_t floats) { return (Arena){base, floats, 0}; }

static inline float *arena_take(Arena *a, int64_t n) {
    KOE_ASSERT(n >= 0);
    float *v = a->base ? a->base + a->used : NULL;
    a->used += (n + 15) & ~(int64_t)15;
    KOE_ASSERT(!a->base || a->used <= a->cap);
    return v;
}

/* Publish a finished file: fsync tmp, rename it to path, fsync path's directory. A reader never
 * sees a partial file under the final name. On failure tmp is removed and err names the step (and a
 * full or read-only file system, koe_error_fs). Either way tmp is no longer an output in progress. */
int koe_publish_file(const char *tmp, const char *path, KoeError *err);

/* Why a write to path (a file, or a name in a directory) failed, when the file system is the cause:
 * "disk full" (errno ENOSPC or EDQUOT, or under 1 MiB left), "read-only file system" (EROFS, or
 * mounted read-only), else NULL. Call it before removing the half-written file: that frees the space. */
const char *koe_fs_trouble(const char *path);

/* The file system's part of an error about writing path, when koe_fs_trouble finds one, else "":
 * ": disk full (no space left on the file system holding PATH; free space and run again)" or
 * ": read-only file system (PATH is on one; ...)" (a per-thread buffer).
 * koe_error_fs appends it to err (once) and returns -1. */
const char *koe_fs_note(const char *path);
int koe_error_fs(KoeError *err, const char *path);

/* Outputs in progress (a NAME.tmp being written; at most 16 at a time). A fatal error removes every
 * registered file, first saying which were on a full or read-only file system, so no .tmp is left
 * behind by an error that cannot return to its writer (a collective HDF5 write under MPI-IO).
 * A writer that publishes or removes its file itself calls koe_output_end. */
void koe_output_begin(const char *tmp);
void koe_output_end(const char *tmp);
int koe_output_data_stop(const char *tmp);
void koe_output_stop(void);
void koe_output_data_file(FILE *f, const char *tmp); /* the N:data point of a stdio file */
/* Test hook KOE_TEST_STOP_AT_OUTPUT (tests/e2e/kill_commands.sh): the process stops itself (SIGSTOP)
 * at a point of its Nth output, so a test can kill -9 it there without timing guesswork:
 *   N            in the Nth koe_output_begin: the file created, nothing in it;
 *   N:data       in the middle of its data: a writer calls koe_output_data_stop(tmp) after the first
 *                block of the file's data; when it returns 1 the writer makes what it wrote reach
 *                the file (H5Fflush, fflush) and calls koe_output_stop();
 *   N:published  right after koe_publish_file gave it its final name (before a second file of the same
 *                output, such as an export's config.json, is published). */

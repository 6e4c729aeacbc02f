/* progress.c — see progress.h. No MPI: the rank comes from koe_set_log_rank. */
#include "progress.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config_keys.h"

#define PROGRESS_TTY_S 0.25     /* a terminal's line is redrawn at most this often */
#define PROGRESS_BATCH_S 10.0   /* KOE_PROGRESS_S's default */
#define PROGRESS_DETAIL 256

struct Progress {
    char what[64], unit[16];
    int64_t total, done0;     /* done0: finished before this process */
    _Atomic int64_t done;
    int show, tty, batch;     /* show: this rank prints; tty: on a terminal; batch: batch-log lines */
    double t0, every, last;   /* open time; seconds between two lines; time of the last line */
    int printed, line_len;    /* lines (or redraws) so far; length of the terminal's line */
    int64_t shown;            /* done as of the last line (-1: none yet) */
    char detail[PROGRESS_DETAIL];
    pthread_mutex_t lock;     /* printing and detail */
};

/* KOE_PROGRESS_S, or the default; a bad value is a warning naming it. */
static double batch_every(void) {
    const char *s = getenv("KOE_PROGRESS_S");
    if (!s || !*s) return PROGRESS_BATCH_S;
    double v;
    if (config_parse_real(s, &v) || !(v >= 0)) { /* the recipes' number syntax (config_keys.h) */
        koe_warn("KOE_PROGRESS_S=%s: expected seconds >= 0 between two progress lines; using %g", s, PROGRESS_BATCH_S);
        return PROGRESS_BATCH_S;
    }
    return v;
}

Progress *progress_open(const char *what, const char *unit, int64_t total) {
    Progress *p = koe_calloc(1, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total;
    atomic_init(&p->done, 0);
    p->show = koe_log_rank() == 0;
    p->tty = p->show && isatty(STDERR_FILENO);
    p->batch = p->show && !p->tty;
    p->every = p->tty ? PROGRESS_TTY_S : batch_every();
    p->t0 = p->last = koe_now();
    p->shown = -1;
    pthread_mutex_init(&p->lock, NULL);
    return p;
}

void progress_resume(Progress *p, int64_t done) {
    if (!p) return;
    p->done0 = done;
    atomic_store(&p->done, done);
}

void progress_tty_only(Progress *p) {
    if (p) p->batch = 0;
}

int progress_on_tty(const Progress *p) { return p && p->tty; }

void progress_fmt_eta(char *out, size_t n, double s) {
    if (!isfinite(s) || s < 0) {
        snprintf(out, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
}

void progress_format(char *out, size_t n, const char *what, const char *unit, int64_t done, int64_t total,
                     double rate, const char *detail) {
    char r[32], eta[32], pct[16] = "";
    snprintf(r, sizeof r, rate >= 1000 ? "%.0f" : "%.3g", isfinite(rate) ? rate : 0.0);
    const double left = rate > 0 && total > 0 ? (double)(total > done ? total - done : 0) / rate : NAN;
    progress_fmt_eta(eta, sizeof eta, left);
    if (total > 0) snprintf(pct, sizeof pct, " (%d%%)", (int)(100 * (done < total ? done : total) / total));
    int k = total > 0 ? snprintf(out, n, "%s %lld/%lld %s%s, %s %s/s, eta %s", what, (long long)done,
                                 (long long)total, unit, pct, r, unit, eta)
                      : snprintf(out, n, "%s %lld %s, %s %s/s", what, (long long)done, unit, r, unit);
    if (detail && detail[0] && k >= 0 && (size_t)k < n) snprintf(out + k, n - (size_t)k, ", %s", detail);
}

static double rate_of(const Progress *p, int64_t done, double now) {
    return now > p->t0 ? (double)(done - p->done0) / (now - p->t0) : 0.0;
}

double progress_eta_s(const Progress *p) {
    if (!p) return NAN;
    const int64_t done = atomic_load(&p->done);
    const double rate = rate_of(p, done, koe_now());
    return rate > 0 && p->total > 0 ? (double)(p->total > done ? p->total - done : 0) / rate : NAN;
}

/* Under p->lock: the line for the current state, in place on a terminal, else as a new line. */
static void print_line(Progress *p, double now) {
    const int64_t done = atomic_load(&p->done);
    char line[512];
    progress_format(line, sizeof line, p->what, p->unit, done, p->total, rate_of(p, done, now), p->detail);
    const int len = (int)strlen(line);
    if (p->tty) { /* pad over the longer line it replaces */
        fprintf(stderr, "\r%s%s%*s", koe_log_prefix(), line, p->line_len > len ? p->line_len - len : 0, "");
        p->line_len = len;
        koe_log_line_open();
    } else {
        fprintf(stderr, "%s%s\n", koe_log_prefix(), line);
    }
    fflush(stderr);
    p->last = now;
    p->printed++;
    p->shown = done;
}

void progress_add(Progress *p, int64_t n) {
    if (!p) return;
    atomic_fetch_add(&p->done, n);
    if (!p->tty && !p->batch) return;
    const double now = koe_now();
    if (now - p->last < p->every || pthread_mutex_trylock(&p->lock) != 0) return; /* another thread prints */
    if (now - p->last >= p->every) print_line(p, now);
    pthread_mutex_unlock(&p->lock);
}

void progress_detail(Progress *p, const char *fmt, ...) {
    if (!p || !p->show) return;
    pthread_mutex_lock(&p->lock);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->detail, sizeof p->detail, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&p->lock);
}

void progress_break(Progress *p) {
    if (p && p->tty) koe_log_end_line();
}

void progress_close(Progress *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    if ((p->tty || (p->batch && p->printed)) && atomic_load(&p->done) != p->shown) print_line(p, koe_now());
    if (p->tty) koe_log_end_line();
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

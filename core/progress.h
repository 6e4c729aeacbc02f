/* progress.h — the progress line of every long koe command (train, prepare, features, kmeans, label,
 * embed, analyze): the work done of the total, the rate and the time left, in one format:
 *   koe: features 1200/4800 utt (25%), 38.2 utt/s, eta 1m34s
 * On a terminal (stderr is a tty) the line is rewritten in place ("\r") at most every 0.25 s and
 * ended at close; in a batch log (stderr a file or a pipe) it is one line every KOE_PROGRESS_S
 * seconds (default 10; 0: at every step), and a last one at close when any was printed. Only log
 * rank 0 (koe_set_log_rank) prints; the counts are this process's own work (under mpirun rank 0's
 * share, which the commands split evenly), so the rate and the ETA are the run's.
 * progress_add may be called from OpenMP threads at once; one of them prints at a time and none waits.
 * Every function accepts NULL (nothing is shown).
 * Must not: write anywhere but stderr, or make a working thread wait for another one's printing. */
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct Progress Progress;

/* what: the command or phase ("features"); unit: what is counted ("utt"); total: units of this
 * process's work (<= 0: unknown, no percentage and no ETA). */
Progress *progress_open(const char *what, const char *unit, int64_t total);
/* done units were finished before this process (a resumed `koe train`): shown, not in the rate. */
void progress_resume(Progress *p, int64_t done);
/* n more units finished. */
void progress_add(Progress *p, int64_t n);
/* Text shown after the ETA from now on (koe train: the step's loss, accuracy and gradient norm). */
void progress_detail(Progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* No batch-log lines: the caller writes its own (koe train's log lines, which give progress_eta_s). */
void progress_tty_only(Progress *p);
/* 1: p's line is on a terminal (and this rank prints it). */
int progress_on_tty(const Progress *p);
/* Output other than koe_log/koe_warn follows (those end the line themselves): a terminal's line is
 * ended first. */
void progress_break(Progress *p);
/* Seconds left at the current rate (NAN: unknown yet). */
double progress_eta_s(const Progress *p);
/* Shows the final state (terminal; batch log: when a line was printed) and frees p. */
void progress_close(Progress *p);

/* The line, without "koe: ", "\r" or newline: done of total at rate units/s, then detail (or NULL). */
void progress_format(char *out, size_t n, const char *what, const char *unit, int64_t done, int64_t total,
                     double rate, const char *detail);
/* A duration as "4m07s", or "2h05m" from an hour; "?" when not finite or negative. */
void progress_fmt_eta(char *out, size_t n, double seconds);

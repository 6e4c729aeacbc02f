/* segments.h — the units of `koe analyze layers` on an utterance's frames (spec
 * ../shared/specs/analyze_layers.md §4, §8.3, §8.4), as index arithmetic:
 *   - phone runs: maximal runs of one phone id in a 10 ms alignment (adjacent identical phones
 *     merge, since the alignment is per frame), frames without a phone or of a skipped phone left out;
 *   - the pooling window of a run on encoder frames at rate R Hz: a = floor(t0 R), b = min(ceil(t1 R), T)
 *     with t0 = j0 / 100 and t1 = (j1 + 1) / 100; the middle third [a + o, b - o), o = floor((b - a + 1) / 3),
 *     one frame [a + o, a + o + 1) when that is empty (Pasad et al.'s phone segments);
 *   - the window of a word (start and end in seconds): all of its frames (Pasad et al.'s word segments);
 *   - the 10 ms alignment frame under the centre of encoder frame i, which covers the samples
 *     [i hop, i hop + win): floor((i hop + win / 2) / 160).
 * Must not: do I/O or MPI. */
#pragma once
#include <stdint.h>

typedef struct {
    int64_t j0, j1; /* first and last 10 ms frame */
    int id;         /* the alignment's phone id */
} PhoneRun;

/* The runs of align (n frames): ids equal to no_phone, or with skip[id] != 0, are not runs. Writes
 * at most n runs to out; returns their count. */
int64_t segments_runs(const uint16_t *align, int64_t n, uint16_t no_phone, const unsigned char *skip, PhoneRun *out);
/* The middle-third window [*first, *end) of a run on T encoder frames at rate Hz; 0 when the run
 * starts at or after frame T (no window), else 1. */
int segments_window(const PhoneRun *r, double rate, int64_t T, int64_t *first, int64_t *end);
/* The whole-segment window [*first, *end) of a segment from t0 to t1 seconds (a word) on T encoder
 * frames at rate Hz: a = floor(t0 R), b = min(ceil(t1 R), T), one frame [a, a + 1) when that is
 * empty; 0 when a >= T (no window), else 1. */
int segments_span_window(double t0, double t1, double rate, int64_t T, int64_t *first, int64_t *end);
/* The 10 ms alignment frame under the centre of encoder frame i (hop, win in samples at 16 kHz). */
int64_t segments_center_frame(int64_t i, int64_t hop, int64_t win);

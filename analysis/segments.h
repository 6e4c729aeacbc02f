/* segments.h — the units of `koe analyze layers` on an utterance's frames (spec
 * ../shared/specs/analyze_layers.md §4, §8.3, §8.4), as index arithmetic:
 *   - phone runs: maximal runs of one phone id in a 10 ms alignment (adjacent identical phones
 *     merge, since the alignment is per frame), frames without a phone or of a skipped phone left out;
 *   - the pooling window of a run on encoder frames at rate R Hz: a = floor(t0 R), b = min(ceil(t1 R), T)
 *     with t0 = j0 / 100 and t1 = (j1 + 1) / 100; the middle third [a + o, b - o), o = floor((b - a + 1) / 3),
 *     one frame [a + o, a + o + 1) when that is empty (Pasad et al.'s phone segments);
 *   - the window of a word (start and end in seconds): all of its frames (Pasad et al.'s word segments);
 *   - the 10 ms alignment frame under the centre of encoder frame i, which covers the samples
 *     [i hop, i hop + win): floor((i hop + win / 2) / 160);
 *   - the averaging of a conv layer's output onto the 10 ms fbank frames (Pasad et al.'s kernels for
 *     the `mel` of conv layers C1..Cn).
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

/* How conv layer c (0-based) of a stack (kernels, strides in input samples per step) is compared with
 * the 10 ms fbank, whose frame t covers the samples [160 t, 160 t + 400). The layer's frame j covers
 * [j S, j S + R) (S the product of the strides up to c, R its receptive field). When S <= 160: pooled
 * frame t is the mean of the layer's frames [t stride, t stride + kernel) with stride = 160 / S and
 * kernel = floor((400 - R) / S) + 1, the most frames that fit in fbank frame t's 25 ms (Pasad et al.'s
 * kernels: C1 (79, 32) ... C6 (2, 1) for wav2vec 2.0's stack), fb_step 1. When S > 160 (the last layer
 * at 50 Hz): kernel = stride = 1 and frame j is compared with fbank frame j S / 160 (fb_step), which
 * covers the same samples when R = 400. Returns 0, or -1 when 160 is not a multiple of S nor S of 160,
 * or R > 400 (the layer's frames do not fall on the fbank's). */
typedef struct {
    int kernel, stride, fb_step;
} ConvPool;
int segments_conv_pool(const int *kernels, const int *strides, int c, ConvPool *out);
/* The number of pooled frames of a conv layer with T frames against nf fbank frames. */
int64_t segments_conv_pooled(const ConvPool *p, int64_t T, int64_t nf);

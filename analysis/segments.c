/* segments.c — phone runs, pooling windows and frame centres (segments.h).
 * Must not: do I/O or MPI. */
#include "segments.h"

#include <math.h>

int64_t segments_runs(const uint16_t *align, int64_t n, uint16_t no_phone, const unsigned char *skip, PhoneRun *out) {
    int64_t k = 0;
    for (int64_t j = 0; j < n;) {
        int64_t e = j + 1;
        while (e < n && align[e] == align[j]) e++;
        if (align[j] != no_phone && !skip[align[j]]) out[k++] = (PhoneRun){j, e - 1, align[j]};
        j = e;
    }
    return k;
}

int segments_window(const PhoneRun *r, double rate, int64_t T, int64_t *first, int64_t *end) {
    /* the small slack keeps exact products (j * 50 / 100) exact when rate / 100 is not a power of 2 */
    const int64_t a = (int64_t)floor((double)r->j0 * rate / 100.0 + 1e-9);
    int64_t b = (int64_t)ceil((double)(r->j1 + 1) * rate / 100.0 - 1e-9);
    if (b > T) b = T;
    if (a >= T) return 0;
    const int64_t o = (b - a + 1) / 3;
    *first = a + o;
    *end = b - o;
    if (*end <= *first) *end = *first + 1;
    if (*first >= T) *first = T - 1, *end = T;
    return 1;
}

int segments_span_window(double t0, double t1, double rate, int64_t T, int64_t *first, int64_t *end) {
    const int64_t a = (int64_t)floor(t0 * rate + 1e-9);
    int64_t b = (int64_t)ceil(t1 * rate - 1e-9);
    if (a >= T) return 0;
    if (b > T) b = T;
    if (b <= a) b = a + 1;
    *first = a, *end = b;
    return 1;
}

int64_t segments_center_frame(int64_t i, int64_t hop, int64_t win) { return (i * hop + win / 2) / 160; }

int segments_conv_pool(const int *kernels, const int *strides, int c, ConvPool *out) {
    int64_t S = 1, R = 1;
    for (int i = 0; i <= c; i++) R += (int64_t)(kernels[i] - 1) * S, S *= strides[i];
    if (R > 400) return -1;
    if (S <= 160) {
        if (160 % S) return -1;
        *out = (ConvPool){(int)((400 - R) / S + 1), (int)(160 / S), 1};
    } else {
        if (S % 160) return -1;
        *out = (ConvPool){1, 1, (int)(S / 160)};
    }
    return 0;
}

int64_t segments_conv_pooled(const ConvPool *p, int64_t T, int64_t nf) {
    const int64_t by_layer = T >= p->kernel ? (T - p->kernel) / p->stride + 1 : 0, by_fbank = (nf + p->fb_step - 1) / p->fb_step;
    return by_layer < by_fbank ? by_layer : by_fbank;
}

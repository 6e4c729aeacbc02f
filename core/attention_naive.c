/* attention_naive.c — double-precision loop reference of the attention kernels (attention_naive.h),
 * written from the definitions, not from attention.c. Tests only; slow on purpose. */
#include "attention_naive.h"

#include <math.h>
#include <stdlib.h>

#include "common.h"

int attention_keep_naive(const AttentionDropout *drop, int b, int h, int64_t i, int64_t j) {
    if (!drop || drop->p <= 0.0f) return 1;
    uint64_t id = drop->utt ? (uint64_t)drop->utt[b] : (uint64_t)b;
    KoeRng r = koe_rng(drop->seed, drop->step, koe_hash64(koe_hash64(drop->layer ^ koe_hash64(id)) + (uint64_t)h),
                       KOE_RNG_DROPOUT);
    r.ctr = (uint64_t)i * ((uint64_t)1 << 32) + (uint64_t)(j / 2); /* word ctr is number ctr + 1 of the stream */
    uint64_t u = koe_rng_u64(&r);
    uint32_t bits = (j % 2) ? (uint32_t)(u >> 32) : (uint32_t)u;
    double thr = (double)drop->p * 4294967296.0;
    return (double)bits >= thr;
}

/* 1 if key j of utterance b is masked: padded, unless every key of b is padded. */
static int attention_masked_naive(const uint8_t *key_pad, int b, int64_t T, int64_t j) {
    if (!key_pad) return 0;
    int all = 1;
    for (int64_t t = 0; t < T; t++) all &= key_pad[(int64_t)b * T + t] != 0;
    return !all && key_pad[(int64_t)b * T + j];
}

static double attention_dropped_naive(const AttentionDropout *drop, const double *att, int b, int h, int64_t i,
                                      int64_t j, int64_t T, int H) {
    double p = att[(((int64_t)b * H + h) * T + i) * T + j];
    if (!drop || drop->p <= 0.0f) return p;
    return attention_keep_naive(drop, b, h, i, j) ? p / (1.0 - (double)drop->p) : 0.0;
}

void attention_forward_naive(double *out, double *att, const double *qkv, const uint8_t *key_pad, int B, int64_t T,
                             int C, int H, const AttentionDropout *drop) {
    int Dh = C / H;
    double scale = 1.0 / sqrt((double)Dh);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                double *a = att + (((int64_t)b * H + h) * T + i) * T;
                const double *q = qkv + ((int64_t)b * T + i) * 3 * C + h * Dh;
                double mx = -INFINITY;
                for (int64_t j = 0; j < T; j++) {
                    const double *k = qkv + ((int64_t)b * T + j) * 3 * C + C + h * Dh;
                    double s = 0;
                    for (int d = 0; d < Dh; d++) s += q[d] * scale * k[d];
                    a[j] = attention_masked_naive(key_pad, b, T, j) ? -INFINITY : s;
                    if (a[j] > mx) mx = a[j];
                }
                double sum = 0;
                for (int64_t j = 0; j < T; j++) sum += (a[j] = exp(a[j] - mx));
                for (int64_t j = 0; j < T; j++) a[j] /= sum;
                for (int d = 0; d < Dh; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < T; j++)
                        o += attention_dropped_naive(drop, att, b, h, i, j, T, H) *
                             qkv[((int64_t)b * T + j) * 3 * C + 2 * C + h * Dh + d];
                    out[((int64_t)b * T + i) * C + h * Dh + d] = o;
                }
            }
}

void attention_backward_naive(double *dqkv, const double *dout, const double *qkv, const double *att,
                              const uint8_t *key_pad, int B, int64_t T, int C, int H, const AttentionDropout *drop) {
    (void)key_pad; /* masked keys have att = 0, so their gradient is 0 through the softmax Jacobian */
    int Dh = C / H;
    double scale = 1.0 / sqrt((double)Dh);
    double *dp = koe_malloc((size_t)T * sizeof(double)); /* d loss / d att[b, h, i, :] */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                const double *a = att + (((int64_t)b * H + h) * T + i) * T;
                const double *dO = dout + ((int64_t)b * T + i) * C + h * Dh;
                for (int64_t j = 0; j < T; j++) {
                    const double *v = qkv + ((int64_t)b * T + j) * 3 * C + 2 * C + h * Dh;
                    double *dv = dqkv + ((int64_t)b * T + j) * 3 * C + 2 * C + h * Dh;
                    /* pd = att * f with f = keep / (1 - p) (1 without dropout) */
                    double f = 1.0;
                    if (drop && drop->p > 0.0f)
                        f = attention_keep_naive(drop, b, h, i, j) ? 1.0 / (1.0 - (double)drop->p) : 0.0;
                    double g = 0;
                    for (int d = 0; d < Dh; d++) {
                        dv[d] += a[j] * f * dO[d];
                        g += dO[d] * v[d];
                    }
                    dp[j] = g * f;
                }
                double dot = 0;
                for (int64_t j = 0; j < T; j++) dot += dp[j] * a[j];
                const double *q = qkv + ((int64_t)b * T + i) * 3 * C + h * Dh;
                double *dq = dqkv + ((int64_t)b * T + i) * 3 * C + h * Dh;
                for (int64_t j = 0; j < T; j++) {
                    double ds = a[j] * (dp[j] - dot); /* softmax Jacobian */
                    const double *k = qkv + ((int64_t)b * T + j) * 3 * C + C + h * Dh;
                    double *dk = dqkv + ((int64_t)b * T + j) * 3 * C + C + h * Dh;
                    for (int d = 0; d < Dh; d++) {
                        dq[d] += ds * scale * k[d];
                        dk[d] += ds * scale * q[d];
                    }
                }
            }
    free(dp);
}

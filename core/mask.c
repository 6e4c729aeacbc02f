/* mask.c — span masks (fairseq semantics, keyed by utterance), BEST-RQ masks and noise, and the
 * learned mask embedding. See mask.h for the exact rules. Must not: depend on batch composition. */
#include "mask.h"

#include <string.h>

#include "common.h"
#include "rng.h"

int64_t mask_spans(uint8_t *mask, int64_t len, float prob, int span, int min_spans, uint64_t seed, uint64_t step,
                   uint64_t utt) {
    KOE_ASSERT(span >= 1 && min_spans >= 0 && prob >= 0.0f);
    if (len <= 0) return 0;
    memset(mask, 0, (size_t)len);
    KoeRng r = koe_rng(seed, step, utt, KOE_RNG_MASK);
    const double u = koe_rng_uniform(&r);
    int64_t n = (int64_t)((double)prob * (double)len / (double)span + u);
    if (n < min_spans) n = min_spans;
    if (n == 0) return 0;
    int64_t m = span;
    if (len - m <= n) m = len - n - 1;
    const int64_t range = len - m; /* starts in [0, range), range > n: fairseq's choice(len - m, n, replace=False) */
    /* Selection sampling (Knuth's algorithm S): each n-subset of [0, range) equally likely, in order. */
    int64_t need = n;
    for (int64_t s = 0; s < range && need > 0; s++) {
        if ((double)(range - s) * koe_rng_uniform(&r) < (double)need) {
            need--;
            int64_t e = s + span < len ? s + span : len;
            for (int64_t t = s; t < e; t++) mask[t] = 1;
        }
    }
    int64_t count = 0;
    for (int64_t t = 0; t < len; t++) count += mask[t];
    return count;
}

int64_t mask_spans_batch(uint8_t *mask, const int64_t *len, const int64_t *utt, int B, int64_t T, float prob,
                         int span, int min_spans, uint64_t seed, uint64_t step) {
    memset(mask, 0, (size_t)B * (size_t)T);
    int64_t count = 0;
    for (int b = 0; b < B; b++) {
        KOE_ASSERT(len[b] >= 0 && len[b] <= T);
        count += mask_spans(mask + (int64_t)b * T, len[b], prob, span, min_spans, seed, step, (uint64_t)utt[b]);
    }
    return count;
}

int64_t mask_bestrq(uint8_t *mask, int64_t len, float prob, int span, uint64_t seed, uint64_t step, uint64_t utt) {
    KOE_ASSERT(span >= 1 && prob >= 0.0f);
    if (len <= 0) return 0;
    memset(mask, 0, (size_t)len);
    KoeRng r = koe_rng(seed, step, utt, KOE_RNG_MASK);
    int64_t count = 0, covered_to = 0; /* frames [.., covered_to) are already masked */
    for (int64_t s = 0; s < len; s++) {
        if (koe_rng_uniform(&r) >= (double)prob) continue;
        int64_t e = s + span < len ? s + span : len;
        for (int64_t t = s > covered_to ? s : covered_to; t < e; t++) {
            mask[t] = 1;
            count++;
        }
        if (e > covered_to) covered_to = e;
    }
    return count;
}

void mask_bestrq_noise(float *x, const uint8_t *mask, int64_t len, int C, uint64_t seed, uint64_t step, uint64_t utt) {
    KoeRng r = koe_rng(seed, step, utt, KOE_RNG_NOISE);
    for (int64_t t = 0; t < len; t++) {
        if (!mask[t]) continue;
        for (int c = 0; c < C; c++) x[t * C + c] = MASK_BESTRQ_NOISE_STD * (float)koe_rng_normal(&r);
    }
}

void mask_embed_forward(float *x, const uint8_t *mask, const float *emb, int64_t N, int D) {
    if (!mask) return;
    for (int64_t i = 0; i < N; i++)
        if (mask[i]) memcpy(x + i * D, emb, (size_t)D * sizeof *emb);
}

void mask_embed_backward(float *demb, float *dx, const uint8_t *mask, int64_t N, int D) {
    if (!mask) return;
    for (int64_t i = 0; i < N; i++) {
        if (!mask[i]) continue;
        float *row = dx + i * D;
        for (int d = 0; d < D; d++) {
            demb[d] += row[d];
            row[d] = 0.0f;
        }
    }
}

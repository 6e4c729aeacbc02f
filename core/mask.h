/* mask.h — which frames an objective hides from the encoder (core/README.md, Objectives), and the two ways
 * they are hidden: a learned mask embedding after the frontend (HuBERT, wav2vec 2.0) or noise on the
 * input features (BEST-RQ).
 *
 * Span masks follow fairseq's compute_mask_indices (mask_type static, overlap allowed) for one
 * utterance of `len` valid frames:
 *   n = max(min_spans, int(prob * len / span + u)), u uniform in [0, 1);
 *   starts: n distinct values drawn uniformly from [0, len - m), m = span, or m = len - n - 1 when
 *   len - span <= n; every span [s, s + span) is clipped at len; spans may overlap.
 * Unlike fairseq, masks are keyed by utterance: all draws (u first, then the starts) come from
 * koe_rng(seed, step, utt, KOE_RNG_MASK), and nothing is trimmed to the batch's smallest mask count,
 * so an utterance's mask does not depend on which batch or rank it lands in.
 * BEST-RQ: every valid input frame starts a span of `span` frames with probability prob (draws from the
 * same stream, one per frame); masked frames are replaced by N(0, 0.1^2) noise from
 * koe_rng(seed, step, utt, KOE_RNG_NOISE).
 * No MPI, no HDF5, no allocation. */
#pragma once
#include <stdint.h>

#define MASK_BESTRQ_NOISE_STD 0.1f

/* mask (len) := 1 on masked frames, 0 elsewhere; returns the number of masked frames. len 0 gives 0. */
int64_t mask_spans(uint8_t *mask, int64_t len, float prob, int span, int min_spans, uint64_t seed, uint64_t step,
                   uint64_t utt);
/* A padded batch: mask (B, T); utterance b has len[b] valid frames and corpus id utt[b]; padding stays 0.
 * Returns the number of masked frames. */
int64_t mask_spans_batch(uint8_t *mask, const int64_t *len, const int64_t *utt, int B, int64_t T, float prob,
                         int span, int min_spans, uint64_t seed, uint64_t step);

/* BEST-RQ: mask (len) as described above; returns the number of masked frames. */
int64_t mask_bestrq(uint8_t *mask, int64_t len, float prob, int span, uint64_t seed, uint64_t step, uint64_t utt);
/* x (len, C): rows with mask set get N(0, 0.1^2) noise (row-major draw order). */
void mask_bestrq_noise(float *x, const uint8_t *mask, int64_t len, int C, uint64_t seed, uint64_t step, uint64_t utt);

/* Learned mask embedding on x (N, D): rows with mask set are replaced by emb (D). mask NULL: no-op. */
void mask_embed_forward(float *x, const uint8_t *mask, const float *emb, int64_t N, int D);
/* Backward of the replacement: demb += sum of dx over masked rows, then those rows of dx are zeroed
 * (the values they replaced got no gradient). */
void mask_embed_backward(float *demb, float *dx, const uint8_t *mask, int64_t N, int D);

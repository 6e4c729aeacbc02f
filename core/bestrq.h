/* bestrq.h — BEST-RQ's targets, input masking and prediction head (core/README.md, Objectives; Chiu et al.
 * 2022, "Self-supervised learning with random-projection quantizer for speech recognition").
 *
 * Per batch of fbank features, as the model's fbank frontend presents them (model_fbank_input: the
 * loader's feats (B, F, 80) copied into the model's input buffer and, with model.fbank_norm =
 * utterance, BEST-RQ's normalisation: per utterance and per feature dimension, mean 0 and variance 1
 * over the utterance's valid frames, (x - mean) / sqrt(var + MODEL_FBANK_NORM_EPS), padding 0 —
 * per-utterance rather than corpus statistics: no extra pass over the corpus, no statistics file to
 * keep in step with the checkpoint, and an utterance's targets depend on its own frames only):
 *   1. the model owns that normalisation, so the encoder's input depends on the model config alone
 *      (koe embed and layer k-means need not know the objective); BEST-RQ works on the model's copy,
 *      never on the loader's batch.
 *   2. targets, from the UNMASKED normalised features: encoder frame t stacks input frames
 *      [stack*t, stack*t + stack) into one (stack*feat_dim) row — exactly the model's fbank frontend
 *      rows — and for each of the `codebooks` quantizers q:
 *        z = row @ projection_q             projection_q (stack*feat_dim, codebook_dim), Xavier
 *                                           uniform (nn.init.xavier_uniform_), frozen
 *        target_q = argmax_c  codebook_q[c] . z / |z|
 *                                           codebook_q (codebook_size, codebook_dim): N(0, 1) rows
 *                                           divided by their norm, frozen
 *      i.e. the nearest code to the l2-normalised projection (for unit vectors, the smallest L2
 *      distance is the largest dot product). Dividing z by |z| does not change the argmax, so it is
 *      skipped. Ties go to the lowest code index. Each score is a 16-term dot product in a fixed
 *      order, so a frame's target is bit-reproducible whatever the batch, position or thread count.
 *   3. masking on the input: for each utterance, mask_bestrq (mask.h) picks input frames (each valid
 *      frame starts a span of mask_length = 40 frames with probability mask_prob = 0.01), keyed by
 *      (seed, step, utterance id); those frames of the model's input copy are replaced by
 *      N(0, noise_std^2) noise (mask_bestrq_noise, rescaled from its 0.1 to noise_std). The model then
 *      runs on the noised copy with NO mask embedding (model_forward(m, copy, ..., mask = NULL, ...)).
 *   4. loss frames: encoder frame t of utterance b is scored when t < frames[b] / stack and ALL of
 *      its `stack` input frames are masked (WeNet's BestRQModel takes the min over the stack the same
 *      way). "All" rather than "any": a scored frame never sees any of its own clean input, only
 *      context, which is what the masked-prediction task asks; a 40-frame span covers 9 or 10 whole
 *      encoder frames of 4.
 * Head: for each quantizer q a softmax classifier over its codes, classifier_q: Linear(D ->
 * codebook_size) (nn.Linear's default initialisation); loss = sum over the loss frames of the mean
 * over quantizers of the cross-entropy against target_q (reduction "sum": the trainer divides by the
 * global count of loss frames, as for HuBERT). A frame is correct for q when target_q's logit is the
 * largest (ties count as correct); `correct` is the count averaged over quantizers, so accuracy =
 * correct / frames, as for HuBERT.
 *
 * Parameter table: quantizer.q.projection, quantizer.q.codebook (frozen: params_set_frozen, so the
 * trainer's params_freeze_step keeps them bit-identical, and checkpoints keep the labels fixed across
 * resumes), classifier.q.weight (C, D), classifier.q.bias (C).
 *
 * Dimension letters: B utterances, F input (fbank) frames, E feat_dim, S = stack, P = S*E, T = F / S
 * encoder frames, D encoder width, K codebook_dim, C codebook_size, Q codebooks, M loss frames
 * (<= max_frames = max_B * (max_F / S)).
 * Must not: allocate in prepare/forward/backward, include MPI or HDF5, or normalise the loss. */
#pragma once
#include <stdint.h>

#include "params.h"

#define BESTRQ_MAX_CODEBOOKS 64 /* the recipe's objective.codebooks range */

typedef struct {
    int feat_dim;      /* E: model.fbank_dim = 80 */
    int stack;         /* S: model.fbank_stack = 4 */
    int D;             /* model.encoder_embed_dim */
    int codebooks;     /* Q: objective.codebooks = 1 */
    int codebook_size; /* C: objective.codebook_size = 8192 */
    int codebook_dim;  /* K: objective.codebook_dim = 16 */
    float mask_prob;   /* model.mask_prob = 0.01 */
    int mask_length;   /* model.mask_length = 40 (input frames) */
    float noise_std;   /* objective.mask_noise_std = 0.1 */
} BestrqConfig;

/* Views into the parameter (or gradient) buffer; q < codebooks. In the gradient buffer the
 * quantizer views exist (same layout) but nothing writes them. */
typedef struct {
    float *proj[BESTRQ_MAX_CODEBOOKS];     /* (P, K) quantizer.q.projection, frozen */
    float *codebook[BESTRQ_MAX_CODEBOOKS]; /* (C, K) quantizer.q.codebook, unit rows, frozen */
    float *cls_w[BESTRQ_MAX_CODEBOOKS];    /* (C, D) classifier.q.weight */
    float *cls_b[BESTRQ_MAX_CODEBOOKS];    /* (C) classifier.q.bias */
} BestrqParams;

/* Everything prepare and the head keep; views into one arena of bestrq_act_floats() floats. */
typedef struct {
    BestrqConfig cfg;
    int max_B;
    int64_t max_F, max_frames;
    /* bestrq_prepare_input's outputs for the last batch (B, T = F / S) */
    int B;
    int64_t F, T;
    uint8_t *in_mask;  /* (max_B * max_F) input frames replaced by noise, (B, F) */
    uint8_t *mask;     /* (max_B * T) loss frames (see 4. above), (B, T) */
    int32_t *targets;  /* (max_frames * Q) code ids, (B, T, Q); -1 on padding frames */
    /* quantizer scratch */
    float *z;          /* (max_frames, K) projections */
    float *codes_t;    /* (K, C) one codebook transposed */
    /* head: what the forward keeps for backward */
    int64_t M;         /* frames scored by the last forward */
    int32_t *idx;      /* (max_frames) b*T + t of each scored frame */
    int32_t *tgt;      /* (Q, max_frames) its targets */
    float *xs;         /* (max_frames, D) the scored rows of x */
    float *prob;       /* (Q, max_frames, C) softmax of the logits; backward turns it into d logits */
    float *row_loss;   /* (Q, max_frames) */
    float *dxs;        /* (max_frames, D) backward scratch */
} BestrqAct;

/* Appends, for q = 0 .. codebooks-1: quantizer.q.projection (P, K) U(+-sqrt(6 / (P + K))) and
 * quantizer.q.codebook (C, K) unit rows (both frozen), classifier.q.weight (C, D) and
 * classifier.q.bias (C) U(+-1/sqrt(D)) (nn.Linear's default). */
void bestrq_add_params(ParamTable *t, const BestrqConfig *cfg);
/* Views of the objective's tensors in buf (parameters or gradients: same layout). */
void bestrq_bind(const ParamTable *t, const BestrqConfig *cfg, float *buf, BestrqParams *p);

/* Floats of the act arena for batches of up to max_B utterances of up to max_F input frames, and the
 * views carved from mem (which must hold that many floats and outlive act). */
int64_t bestrq_act_floats(const BestrqConfig *cfg, int max_B, int64_t max_F);
void bestrq_act_bind(BestrqAct *act, const BestrqConfig *cfg, int max_B, int64_t max_F, float *mem);

/* ---- the two steps of bestrq_prepare_input, exposed for tests --------------------------------- */
/* 2. targets (B, T, Q), T = F / S: codes of every valid encoder frame (t < frames[b] / S), -1 after. */
void bestrq_quantize(BestrqAct *act, int32_t *targets, const BestrqParams *p, const float *feats,
                     const int64_t *frames, int B, int64_t F);
/* 3. in_mask (B, F) and mask (B, T) as described above; masked input rows of feats get the noise.
 *    Returns the number of loss frames. */
int64_t bestrq_mask_input(const BestrqConfig *cfg, uint8_t *in_mask, uint8_t *mask, float *feats,
                          const int64_t *frames, const int64_t *utt, int B, int64_t F, uint64_t seed,
                          uint64_t step);

/* The objective's call, per (micro-)batch, before model_forward: feats is the model's input copy
 * (B, F, E) from model_fbank_input (the targets come from it; its masked frames get the noise in
 * place), frames (B) the valid frames, utt the corpus ids (b->utt), (seed, step) the run's seed and
 * update count. Fills act->in_mask, act->mask, act->targets, act->B/F/T and returns the number of loss
 * frames. Then:
 *   model_forward(m, feats, frames, B, F, NULL, &run);          (m->T == act->T)
 *   bestrq_head_forward(act, &p, m->a.out, act->mask, act->targets, B, act->T, ...);
 *   bestrq_head_backward(dout, &g, act, &p, 1 / global loss frames); model_backward(m, dout, 0, NULL). */
int64_t bestrq_prepare_input(BestrqAct *act, const BestrqParams *p, float *feats, const int64_t *frames,
                             const int64_t *utt, int B, int64_t F, uint64_t seed, uint64_t step);

/* x (B, T, D) encoder output; mask (B, T) 1 on loss frames; targets (B, T, Q) (>= 0 on every loss
 * frame). Returns the summed loss (mean over quantizers of each frame's CE, summed over frames), the
 * number of frames scored and the correct count averaged over quantizers. */
void bestrq_head_forward(BestrqAct *act, const BestrqParams *p, const float *x, const uint8_t *mask,
                         const int32_t *targets, int B, int64_t T, double *loss_sum, int64_t *n_frames,
                         double *n_correct);
/* Gradient of dloss * loss_sum of the last forward: accumulates into dx (B, T, D) (rows not scored are
 * untouched; NULL: not needed) and into g's classifier tensors. p must be the forward's parameters.
 * Consumes the forward's probabilities (one backward per forward). */
void bestrq_head_backward(float *dx, const BestrqParams *g, BestrqAct *act, const BestrqParams *p, float dloss);

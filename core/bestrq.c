/* bestrq.c — BEST-RQ's targets, input masking and prediction head (see bestrq.h for the method and
 * the choices made: per-utterance normalisation, "all input frames masked" loss frames).
 *
 * Prepare: normalise (per utterance, one dimension per thread) -> project every valid stacked frame
 * (fixed-order dot products) -> scan each codebook in blocks of BESTRQ_SCAN codes for the largest dot
 * product -> span masks and noise per utterance (mask.h) -> loss frames.
 * Head: gather the loss frames' rows of x -> per quantizer one GEMM to logits, softmax CE per row.
 * Backward is the same list reversed. The loss is summed in a fixed order, so it does not depend on
 * the thread count.
 * Must not: allocate, include MPI or HDF5, or decide how the loss is normalised (the caller does). */
#include "bestrq.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "mask.h"

#define BESTRQ_SCAN 256 /* codes scored at once per frame (one L1-resident block of dot products) */

void bestrq_add_params(ParamTable *t, const BestrqConfig *cfg) {
    KOE_ASSERT(cfg->feat_dim > 0 && cfg->stack > 0 && cfg->D > 0 && cfg->codebook_size > 1 && cfg->codebook_dim > 0);
    KOE_ASSERT(cfg->codebooks >= 1 && cfg->codebooks <= BESTRQ_MAX_CODEBOOKS);
    const int64_t P = (int64_t)cfg->stack * cfg->feat_dim, K = cfg->codebook_dim, C = cfg->codebook_size;
    const float xavier = sqrtf(6.0f / (float)(P + K)); /* nn.init.xavier_uniform_, gain 1 */
    const float bound = 1.0f / sqrtf((float)cfg->D);   /* nn.Linear: kaiming_uniform_(a=sqrt(5)) and its bias rule */
    const int64_t ps[2] = {P, K}, cs[2] = {C, K}, ws[2] = {C, cfg->D}, bs[1] = {C};
    char name[PARAM_NAME_LEN];
    for (int q = 0; q < cfg->codebooks; q++) {
        snprintf(name, sizeof name, "quantizer.%d.projection", q);
        params_set_frozen(t, params_add(t, name, 2, ps, PARAM_INIT_UNIFORM, -xavier, xavier));
        snprintf(name, sizeof name, "quantizer.%d.codebook", q);
        params_set_frozen(t, params_add(t, name, 2, cs, PARAM_INIT_UNIT_ROWS, 0.0f, 0.0f));
        snprintf(name, sizeof name, "classifier.%d.weight", q);
        params_add(t, name, 2, ws, PARAM_INIT_UNIFORM, -bound, bound);
        snprintf(name, sizeof name, "classifier.%d.bias", q);
        params_add(t, name, 1, bs, PARAM_INIT_UNIFORM, -bound, bound);
    }
}

void bestrq_bind(const ParamTable *t, const BestrqConfig *cfg, float *buf, BestrqParams *p) {
    memset(p, 0, sizeof *p);
    char name[PARAM_NAME_LEN];
    for (int q = 0; q < cfg->codebooks; q++) {
        snprintf(name, sizeof name, "quantizer.%d.projection", q);
        p->proj[q] = params_view(t, buf, name);
        snprintf(name, sizeof name, "quantizer.%d.codebook", q);
        p->codebook[q] = params_view(t, buf, name);
        snprintf(name, sizeof name, "classifier.%d.weight", q);
        p->cls_w[q] = params_view(t, buf, name);
        snprintf(name, sizeof name, "classifier.%d.bias", q);
        p->cls_b[q] = params_view(t, buf, name);
    }
}

/* ---- act arena ------------------------------------------------------------------------------------ */

/* Takes every view from ar (measuring or binding, common.h). int32 views take one float
 * slot per element, byte views a quarter (the arena is malloc'ed memory: no declared type). */
static void act_carve(BestrqAct *a, const BestrqConfig *c, int max_B, int64_t max_F, Arena *ar) {
    _Static_assert(sizeof(int32_t) == sizeof(float), "int32 views take one float slot");
    const int64_t Q = c->codebooks, K = c->codebook_dim, C = c->codebook_size, D = c->D;
    const int64_t M = (int64_t)max_B * (max_F / c->stack);
    a->in_mask = (uint8_t *)arena_take(ar, ((int64_t)max_B * max_F + 3) / 4);
    a->mask = (uint8_t *)arena_take(ar, (M + 3) / 4);
    a->targets = (int32_t *)arena_take(ar, M * Q);
    a->z = arena_take(ar, M * K);
    a->codes_t = arena_take(ar, K * C);
    a->idx = (int32_t *)arena_take(ar, M);
    a->tgt = (int32_t *)arena_take(ar, Q * M);
    a->xs = arena_take(ar, M * D);
    a->prob = arena_take(ar, Q * M * C);
    a->row_loss = arena_take(ar, Q * M);
    a->dxs = arena_take(ar, M * D);
}

int64_t bestrq_act_floats(const BestrqConfig *cfg, int max_B, int64_t max_F) {
    BestrqAct a;
    Arena ar = arena_measure();
    act_carve(&a, cfg, max_B, max_F, &ar);
    return ar.used;
}

void bestrq_act_bind(BestrqAct *act, const BestrqConfig *cfg, int max_B, int64_t max_F, float *mem) {
    KOE_ASSERT(max_B >= 1 && max_F >= 0);
    KOE_ASSERT((int64_t)max_B * (max_F / cfg->stack) <= INT32_MAX);
    memset(act, 0, sizeof *act);
    act->cfg = *cfg;
    act->max_B = max_B;
    act->max_F = max_F;
    act->max_frames = (int64_t)max_B * (max_F / cfg->stack);
    Arena ar = arena_over(mem, bestrq_act_floats(cfg, max_B, max_F));
    act_carve(act, cfg, max_B, max_F, &ar);
}

/* ---- 2. targets ------------------------------------------------------------------------------------ */

/* z (K) = row (P) @ proj (P, K), accumulated over p in order (vectorised across k). */
static void project_row(float *z, const float *row, const float *proj, int64_t P, int K) {
    for (int k = 0; k < K; k++) z[k] = 0.0f;
    for (int64_t i = 0; i < P; i++) {
        const float v = row[i];
        const float *w = proj + i * K;
        for (int k = 0; k < K; k++) z[k] += v * w[k];
    }
}

/* argmax over c of codes_t[:, c] . z (codes_t (K, C)); the first of equal maxima. */
static int32_t nearest_code(const float *z, const float *codes_t, int K, int C) {
    float acc[BESTRQ_SCAN];
    float best = -INFINITY;
    int32_t arg = 0;
    for (int c0 = 0; c0 < C; c0 += BESTRQ_SCAN) {
        const int n = C - c0 < BESTRQ_SCAN ? C - c0 : BESTRQ_SCAN;
        const float *ct = codes_t + c0;
        for (int j = 0; j < n; j++) acc[j] = z[0] * ct[j];
        for (int k = 1; k < K; k++) {
            const float zk = z[k];
            const float *r = ct + (int64_t)k * C;
            for (int j = 0; j < n; j++) acc[j] += zk * r[j];
        }
        for (int j = 0; j < n; j++)
            if (acc[j] > best) best = acc[j], arg = c0 + j;
    }
    return arg;
}

void bestrq_quantize(BestrqAct *act, int32_t *targets, const BestrqParams *p, const float *feats,
                     const int64_t *frames, int B, int64_t F) {
    const BestrqConfig *c = &act->cfg;
    const int S = c->stack, E = c->feat_dim, K = c->codebook_dim, C = c->codebook_size, Q = c->codebooks;
    const int64_t P = (int64_t)S * E, T = F / S, BT = (int64_t)B * T;
    KOE_ASSERT(B <= act->max_B && BT <= act->max_frames);
    for (int q = 0; q < Q; q++) {
        const float *cb = p->codebook[q];
#pragma omp parallel for schedule(static)
        for (int k = 0; k < K; k++)
            for (int64_t j = 0; j < C; j++) act->codes_t[(int64_t)k * C + j] = cb[j * K + k];
        /* the stacked rows of utterance b are its first T*S input frames read as (T, P) */
#pragma omp parallel for schedule(dynamic, 16)
        for (int64_t i = 0; i < BT; i++) {
            const int64_t b = i / T, t = i % T;
            if (t >= frames[b] / S) {
                targets[i * Q + q] = -1;
                continue;
            }
            float *z = act->z + i * K;
            project_row(z, feats + (b * F + t * S) * E, p->proj[q], P, K);
            targets[i * Q + q] = nearest_code(z, act->codes_t, K, C);
        }
    }
}

/* ---- 3. masking ------------------------------------------------------------------------------------ */

int64_t bestrq_mask_input(const BestrqConfig *cfg, uint8_t *in_mask, uint8_t *mask, float *feats,
                          const int64_t *frames, const int64_t *utt, int B, int64_t F, uint64_t seed,
                          uint64_t step) {
    const int S = cfg->stack, E = cfg->feat_dim;
    const int64_t T = F / S;
    const float rescale = cfg->noise_std / MASK_BESTRQ_NOISE_STD;
    int64_t total = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total)
    for (int b = 0; b < B; b++) {
        const int64_t n = frames[b];
        KOE_ASSERT(n >= 0 && n <= F);
        uint8_t *im = in_mask + (int64_t)b * F;
        float *u = feats + (int64_t)b * F * E;
        memset(im, 0, (size_t)F);
        mask_bestrq(im, n, cfg->mask_prob, cfg->mask_length, seed, step, (uint64_t)utt[b]);
        mask_bestrq_noise(u, im, n, E, seed, step, (uint64_t)utt[b]);
        if (rescale != 1.0f)
            for (int64_t f = 0; f < n; f++)
                if (im[f])
                    for (int e = 0; e < E; e++) u[f * E + e] *= rescale;
        uint8_t *m = mask + (int64_t)b * T;
        const int64_t Tb = n / S;
        for (int64_t t = 0; t < T; t++) {
            int all = t < Tb;
            for (int s = 0; s < S && all; s++) all = im[t * S + s] != 0;
            m[t] = (uint8_t)all;
            total += all;
        }
    }
    return total;
}

int64_t bestrq_prepare_input(BestrqAct *act, const BestrqParams *p, float *feats, const int64_t *frames,
                             const int64_t *utt, int B, int64_t F, uint64_t seed, uint64_t step) {
    const BestrqConfig *c = &act->cfg;
    KOE_ASSERT(B >= 1 && B <= act->max_B && F <= act->max_F);
    act->B = B;
    act->F = F;
    act->T = F / c->stack;
    bestrq_quantize(act, act->targets, p, feats, frames, B, F);
    return bestrq_mask_input(c, act->in_mask, act->mask, feats, frames, utt, B, F, seed, step);
}

/* ---- head ------------------------------------------------------------------------------------------ */

void bestrq_head_forward(BestrqAct *act, const BestrqParams *p, const float *x, const uint8_t *mask,
                         const int32_t *targets, int B, int64_t T, double *loss_sum, int64_t *n_frames,
                         double *n_correct) {
    const BestrqConfig *c = &act->cfg;
    const int D = c->D, C = c->codebook_size, Q = c->codebooks;
    const int64_t BT = (int64_t)B * T, MF = act->max_frames;
    KOE_ASSERT(BT <= MF);
    int64_t M = 0;
    for (int64_t i = 0; i < BT; i++) {
        if (!mask[i]) continue;
        act->idx[M] = (int32_t)i;
        for (int q = 0; q < Q; q++) {
            const int32_t y = targets[i * Q + q];
            KOE_ASSERT(y >= 0 && y < C); /* loss frames are valid frames, which all have targets */
            act->tgt[q * MF + M] = y;
        }
        M++;
    }
    act->M = M;
    *loss_sum = 0.0;
    *n_frames = M;
    *n_correct = 0.0;
    if (M == 0) return;

    gather_rows_forward(act->xs, x, act->idx, M, D);
    int64_t correct = 0;
    for (int q = 0; q < Q; q++) {
        float *prob = act->prob + q * MF * C; /* logits, then probabilities in place */
        linear_forward(prob, act->xs, p->cls_w[q], p->cls_b[q], M, D, C);
        correct += softmax_xent_forward(prob, act->row_loss + q * MF, prob, act->tgt + q * MF, M, C);
    }
    double loss = 0.0;
    for (int q = 0; q < Q; q++)
        for (int64_t i = 0; i < M; i++) loss += act->row_loss[q * MF + i];
    *loss_sum = loss / Q;
    *n_correct = (double)correct / Q;
}

void bestrq_head_backward(float *dx, const BestrqParams *g, BestrqAct *act, const BestrqParams *p, float dloss) {
    const BestrqConfig *c = &act->cfg;
    const int D = c->D, C = c->codebook_size, Q = c->codebooks;
    const int64_t M = act->M, MF = act->max_frames;
    if (M == 0) return;
    const float s = dloss / (float)Q; /* the loss is the mean over quantizers */
    if (dx) memset(act->dxs, 0, (size_t)(M * D) * sizeof(float));
    for (int q = 0; q < Q; q++) {
        float *dl = act->prob + q * MF * C; /* d logits = s (softmax - onehot), in place */
        softmax_xent_backward(dl, dl, act->tgt + q * MF, s, M, C);
        linear_backward(dx ? act->dxs : NULL, g->cls_w[q], g->cls_b[q], dl, act->xs, p->cls_w[q], M, D, C);
    }
    act->M = 0; /* the probabilities are spent */
    if (dx) gather_rows_backward(dx, act->dxs, act->idx, M, D);
}

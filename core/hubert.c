/* hubert.c — HuBERT's prediction head and masked-prediction loss (see hubert.h for the math and the
 * torchaudio/fairseq correspondence).
 *
 * Forward: select the frames -> gather their rows of x -> final_proj (one GEMM) -> normalise rows ->
 * cosine logits against the normalised label embeddings (one GEMM, 1/logit_temp folded in) -> softmax
 * cross-entropy per row. Backward is the same list reversed. Per-row work is split over OpenMP
 * threads; the loss is summed in a fixed order, so it does not depend on the thread count.
 * Must not: allocate, include MPI or HDF5, or decide how the loss is normalised (the caller does). */
#include "hubert.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "gemm.h"
#include "layers.h"

void hubert_head_add_params(ParamTable *t, const HubertHeadConfig *cfg) {
    KOE_ASSERT(cfg->D > 0 && cfg->final_dim > 0 && cfg->n_classes > 0 && cfg->logit_temp > 0.0f);
    const float bound = 1.0f / sqrtf((float)cfg->D); /* nn.Linear: kaiming_uniform_(a=sqrt(5)) and its bias rule */
    const int64_t w[2] = {cfg->final_dim, cfg->D}, b[1] = {cfg->final_dim}, e[2] = {cfg->n_classes, cfg->final_dim};
    params_add(t, "final_proj.weight", 2, w, PARAM_INIT_UNIFORM, -bound, bound);
    params_add(t, "final_proj.bias", 1, b, PARAM_INIT_UNIFORM, -bound, bound);
    params_add(t, "label_embeddings", 2, e, PARAM_INIT_UNIFORM, 0.0f, 1.0f);
}

void hubert_head_bind(const ParamTable *t, float *buf, HubertHeadParams *p) {
    p->proj_w = params_view(t, buf, "final_proj.weight");
    p->proj_b = params_view(t, buf, "final_proj.bias");
    p->label_emb = params_view(t, buf, "label_embeddings");
}

/* ---- act arena ------------------------------------------------------------------------------------ */

/* Takes every view from ar (measuring or binding, common.h). The int32 views take one
 * float slot per element (the arena is malloc'ed memory, so its elements have no declared type). */
static void act_carve(HubertHeadAct *a, const HubertHeadConfig *c, int64_t M, Arena *ar) {
    _Static_assert(sizeof(int32_t) == sizeof(float), "int32 views take one float slot");
    const int64_t D = c->D, F = c->final_dim, C = c->n_classes;
    a->idx = (int32_t *)arena_take(ar, M);
    a->label = (int32_t *)arena_take(ar, M);
    a->xs = arena_take(ar, M * D);
    a->phat = arena_take(ar, M * F);
    a->pnorm = arena_take(ar, M);
    a->ehat = arena_take(ar, C * F);
    a->enorm = arena_take(ar, C);
    a->prob = arena_take(ar, M * C);
    a->row_loss = arena_take(ar, M);
    a->dlogit = arena_take(ar, M * C);
    a->dphat = arena_take(ar, M * F);
    a->dproj = arena_take(ar, M * F);
    a->dxs = arena_take(ar, M * D);
    a->dehat = arena_take(ar, C * F);
}

int64_t hubert_head_act_floats(const HubertHeadConfig *cfg, int64_t max_frames) {
    HubertHeadAct a;
    Arena ar = arena_measure();
    act_carve(&a, cfg, max_frames, &ar);
    return ar.used;
}

void hubert_head_act_bind(HubertHeadAct *act, const HubertHeadConfig *cfg, int64_t max_frames, float *mem) {
    KOE_ASSERT(max_frames >= 0 && max_frames <= INT32_MAX);
    memset(act, 0, sizeof *act);
    act->cfg = *cfg;
    act->max_frames = max_frames;
    Arena ar = arena_over(mem, hubert_head_act_floats(cfg, max_frames));
    act_carve(act, cfg, max_frames, &ar);
}

/* ---- forward / backward ----------------------------------------------------------------------------- */

void hubert_head_forward(HubertHeadAct *act, const HubertHeadParams *p, const float *x, const uint8_t *mask,
                         const uint8_t *pad, const int32_t *labels, int B, int64_t T, HubertFrames which,
                         double *loss_sum, int64_t *n_frames, int64_t *n_correct) {
    const HubertHeadConfig *c = &act->cfg;
    const int D = c->D, F = c->final_dim, C = c->n_classes;
    const int64_t BT = (int64_t)B * T;
    KOE_ASSERT(BT <= act->max_frames);
    KOE_ASSERT(which == HUBERT_FRAMES_MASKED || which == HUBERT_FRAMES_UNMASKED);
    const int want = which == HUBERT_FRAMES_MASKED;

    int64_t N = 0;
    for (int64_t i = 0; i < BT; i++) {
        if ((mask[i] != 0) != want || (pad && pad[i]) || labels[i] < 0) continue;
        KOE_ASSERT(labels[i] < C); /* the label set's k is checked against n_classes when it is opened */
        act->idx[N] = (int32_t)i;
        act->label[N] = labels[i];
        N++;
    }
    act->N = N;
    *loss_sum = 0.0;
    *n_frames = N;
    *n_correct = 0;
    if (N == 0) return;

    gather_rows_forward(act->xs, x, act->idx, N, D);
    linear_forward(act->phat, act->xs, p->proj_w, p->proj_b, N, D, F);
    rownorm_forward(act->phat, act->pnorm, act->phat, N, F, HUBERT_COS_EPS);
    rownorm_forward(act->ehat, act->enorm, p->label_emb, C, F, HUBERT_COS_EPS);
    /* logits (N, C) = phat ehat^T / logit_temp, written into prob and turned into probabilities */
    sgemm_fp32('N', 'T', N, C, F, 1.0f / c->logit_temp, act->phat, F, act->ehat, F, 0.0f, act->prob, C);
    const int64_t correct = softmax_xent_forward(act->prob, act->row_loss, act->prob, act->label, N, C);
    double loss = 0.0;
    for (int64_t i = 0; i < N; i++) loss += act->row_loss[i];
    *loss_sum = loss;
    *n_correct = correct;
}

void hubert_head_backward(float *dx, const HubertHeadParams *g, HubertHeadAct *act, const HubertHeadParams *p,
                          float dloss) {
    const HubertHeadConfig *c = &act->cfg;
    const int D = c->D, F = c->final_dim, C = c->n_classes;
    const int64_t N = act->N;
    if (N == 0) return;
    /* d logits = dloss (softmax - onehot); d cos = d logits / logit_temp */
    softmax_xent_backward(act->dlogit, act->prob, act->label, dloss / c->logit_temp, N, C);
    /* dphat (N, F) = dcos ehat; dehat (C, F) = dcos^T phat */
    sgemm_fp32('N', 'N', N, F, C, 1.0f, act->dlogit, C, act->ehat, F, 0.0f, act->dphat, F);
    sgemm_fp32('T', 'N', C, F, N, 1.0f, act->dlogit, C, act->phat, F, 0.0f, act->dehat, F);
    rownorm_backward(g->label_emb, act->dehat, act->ehat, act->enorm, C, F);
    memset(act->dproj, 0, (size_t)N * F * sizeof(float));
    rownorm_backward(act->dproj, act->dphat, act->phat, act->pnorm, N, F);
    if (dx) memset(act->dxs, 0, (size_t)N * D * sizeof(float));
    linear_backward(dx ? act->dxs : NULL, g->proj_w, g->proj_b, act->dproj, act->xs, p->proj_w, N, D, F);
    if (dx) gather_rows_backward(dx, act->dxs, act->idx, N, D);
}

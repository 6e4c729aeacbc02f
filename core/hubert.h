/* hubert.h — HuBERT's prediction head and masked-prediction loss (core/README.md, Objectives): the encoder
 * output x of each selected frame is projected by final_proj (Linear D -> final_dim, with bias), and
 * its logits are the cosine similarities to every label embedding divided by logit_temp (0.1):
 *   logit[c] = cos(final_proj(x), label_embeddings[c]) / logit_temp,   c = 0 .. n_classes - 1
 * loss = sum over the selected frames of the cross-entropy against the frame's label (reduction
 * "sum": the caller scales by 1 / the global count of masked frames); a frame is correct when its
 * label's logit is the largest (ties count as correct, as argmax == 0 in torchaudio's layout).
 *
 * This is torchaudio's LogitGenerator + _compute_logits and fairseq's hubert_criterion in plain form:
 * they build [positive, all classes with the positive set to -inf] and take the CE with target 0,
 * which is the same value and gradient as the CE over all classes with the true label (see
 * tests/reference/hubert_ref.py, which checks it). They differ only when two label embeddings are
 * exactly equal (torchaudio then masks both); that never happens after uniform initialisation.
 * Cosine follows torch.cosine_similarity (torch 1.13): each vector is divided by
 * sqrt(max(|v|^2, eps^2)), eps = 1e-8, and the gradient flows through that clamped norm as torch's does.
 *
 * Dimension letters: B utterances, T frames, D encoder width, F final_dim, C n_classes, N selected
 * frames (<= max_frames). Labels are int32 class ids, -1 = no label (frame skipped).
 * Must not: allocate in forward/backward, include MPI or HDF5, or know how labels or masks are made. */
#pragma once
#include <stdint.h>

#include "params.h"

#define HUBERT_COS_EPS 1e-8f

typedef struct {
    int D;            /* encoder_embed_dim */
    int final_dim;    /* final_dim = 256 */
    int n_classes;    /* k of the label set (100 for iteration 1, 500 for iteration 2) */
    float logit_temp; /* logit_temp = 0.1 */
} HubertHeadConfig;

/* Views into the parameter (or gradient) buffer. */
typedef struct {
    float *proj_w;    /* (F, D) final_proj.weight */
    float *proj_b;    /* (F)    final_proj.bias */
    float *label_emb; /* (C, F) label_embeddings */
} HubertHeadParams;

/* Which frames a forward scores (never padding, never label -1). The unmasked-frame loss is
 * fairseq's pred_nomask_weight term (0 by default): a second forward/backward with its own act. */
typedef enum { HUBERT_FRAMES_MASKED = 1, HUBERT_FRAMES_UNMASKED = 2 } HubertFrames;

/* What one forward keeps for backward; views into one arena of hubert_head_act_floats() floats. */
typedef struct {
    HubertHeadConfig cfg;
    int64_t max_frames;
    int64_t N;        /* frames scored by the last forward */
    int32_t *idx;     /* (max_frames) b*T + t of each scored frame */
    int32_t *label;   /* (max_frames) its class */
    float *xs;        /* (max_frames, D) the scored rows of x (final_proj's input) */
    float *phat;      /* (max_frames, F) final_proj output / its clamped norm */
    float *pnorm;     /* (max_frames) clamped norm of the final_proj output */
    float *ehat;      /* (C, F) label embeddings / their clamped norms */
    float *enorm;     /* (C) */
    float *prob;      /* (max_frames, C) softmax of the logits */
    float *row_loss;  /* (max_frames) CE of each scored frame */
    /* backward scratch */
    float *dlogit;    /* (max_frames, C) */
    float *dphat;     /* (max_frames, F) */
    float *dproj;     /* (max_frames, F) d final_proj output */
    float *dxs;       /* (max_frames, D) */
    float *dehat;     /* (C, F) */
} HubertHeadAct;

/* Appends final_proj.weight (F, D), final_proj.bias (F) — PyTorch's nn.Linear default
 * U(-1/sqrt(D), 1/sqrt(D)) for both — and label_embeddings (C, F) U(0, 1) to the table. */
void hubert_head_add_params(ParamTable *t, const HubertHeadConfig *cfg);
/* Views of the head's tensors in buf (parameters or gradients: same layout). */
void hubert_head_bind(const ParamTable *t, float *buf, HubertHeadParams *p);

/* Floats of the act arena for forwards of up to max_frames = B*T frames, and the views carved from
 * mem (which must hold that many floats and outlive act). */
int64_t hubert_head_act_floats(const HubertHeadConfig *cfg, int64_t max_frames);
void hubert_head_act_bind(HubertHeadAct *act, const HubertHeadConfig *cfg, int64_t max_frames, float *mem);

/* x (B, T, D) encoder output; mask (B, T) 1 on masked frames; pad (B, T) 1 on padding, or NULL;
 * labels (B, T), -1 = none. Scores the frames `which` selects and returns the summed CE, the number
 * of frames scored and how many of them are correct. */
void hubert_head_forward(HubertHeadAct *act, const HubertHeadParams *p, const float *x, const uint8_t *mask,
                         const uint8_t *pad, const int32_t *labels, int B, int64_t T, HubertFrames which,
                         double *loss_sum, int64_t *n_frames, int64_t *n_correct);
/* Gradient of dloss * loss_sum of the last forward: accumulates into dx (B, T, D) (rows of frames
 * not scored are untouched; NULL: not needed) and into g (all three tensors). p must be the
 * forward's parameters; x itself is not needed (act keeps the scored rows). */
void hubert_head_backward(float *dx, const HubertHeadParams *g, HubertHeadAct *act, const HubertHeadParams *p,
                          float dloss);

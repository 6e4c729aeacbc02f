/* objective.h — one small interface over the pretraining objectives (core/README.md), so the
 * training loop does not branch on which one runs: where the mask goes (after the frontend for
 * HuBERT and wav2vec 2.0, on the input features for BEST-RQ), the model's forward, the head's loss,
 * and the backward through head and model.
 *
 * Loss normalisation is the caller's, as in fairseq: forward returns SUMS over the scored (masked)
 * frames — the head's loss plus each auxiliary term (feature penalty, diversity) multiplied by the
 * micro-batch's frame count, which is how fairseq's criteria add them — and backward takes dloss, the
 * factor the gradient of that sum is scaled by. The trainer passes dloss = 1 for every micro-batch,
 * sums the gradients, and scales them by 1 / (frames of the whole update, over all ranks) once.
 *
 * Across ranks (each holding a slice of the global micro-batch), the terms that are not sums over
 * frames — the feature penalty (a mean over the conv features) and wav2vec 2.0's perplexities and
 * diversity — must come from the whole global micro-batch. The trainer sets o->reduce: forward then
 * sums those statistics over ranks through it between the head's forward and the loss, so loss_sum,
 * summed over ranks, and the gradients, summed over ranks, equal one process's on the global batch.
 * A rank whose slice is empty calls objective_forward_empty instead (same collective calls).
 *
 * Dimension letters: B utterances, S input length (samples, or fbank frames), T encoder frames,
 * D model width. Must not: allocate after objective_create, normalise the loss, include MPI or HDF5,
 * or know where labels come from (HuBERT's arrive per encoder frame in the batch). */
#pragma once
#include <stdint.h>

#include "bestrq.h"
#include "hubert.h"
#include "model.h"
#include "wav2vec2.h"

/* The recipe's objective.name. */
typedef enum { OBJ_HUBERT = 1, OBJ_WAV2VEC2 = 2, OBJ_BESTRQ = 3 } ObjectiveName;

typedef struct {
    ObjectiveName name;
    HubertHeadConfig hubert;  /* OBJ_HUBERT (n_classes from the label set) */
    Wav2vec2HeadConfig wav2vec2; /* OBJ_WAV2VEC2 */
    BestrqConfig bestrq;      /* OBJ_BESTRQ */
    float feature_pen_weight; /* HuBERT, wav2vec 2.0: weight of the feature penalty (10) */
    float diversity_weight;   /* wav2vec 2.0: weight of the diversity term (0.1) */
    float nomask_weight;      /* HuBERT: weight of the CE on unmasked frames (fairseq pred_nomask_weight, 0) */
} ObjectiveConfig;

/* One micro-batch. */
typedef struct {
    const float *inp;      /* (B, S) waveform or (B, S, fbank_dim) features (not modified) */
    const int64_t *in_len; /* (B) valid input length */
    const int64_t *utt;    /* (B) corpus utterance ids: the keys of masks and noise */
    int B;
    int64_t S;
    const int32_t *labels; /* HuBERT: (B, T) class of each encoder frame, -1 = none (T = model_frames(S)) */
    ModelRun run;          /* train (dropout), seed and step: the keys of masks, noise and dropout */
} ObjectiveBatch;

/* What one forward measured. loss_sum / frames is the micro-batch's loss. */
typedef struct {
    double loss_sum;    /* head loss sum + aux terms x frames */
    double head_sum;    /* the head's loss sum alone (HuBERT: masked + nomask_weight x unmasked) */
    int64_t frames;     /* frames scored (masked frames with a target) */
    double correct;     /* frames whose target scored highest */
    int64_t frames_u;   /* HuBERT, nomask_weight > 0 or objective_score_unmasked: unmasked frames with a label */
    double correct_u;   /* ... and how many of them are correct (acc_u) */
    double feature_pen; /* the model's feature penalty (waveform frontend), unweighted */
    /* wav2vec 2.0 (0 otherwise) */
    double code_ppl, prob_ppl, diversity, temp;
} ObjectiveStats;

typedef struct {
    ObjectiveConfig cfg;
    int max_B;
    int64_t max_T;
    HubertHeadParams hp, hg;
    HubertHeadAct hact, hact_u; /* masked frames; unmasked frames (nomask_weight > 0, or acc_u) */
    Wav2vec2HeadParams wp, wg;
    Wav2vec2HeadAct wact;
    BestrqParams bp, bg;
    BestrqAct bact;
    float *act_mem;  /* the head's act arena */
    float *act_mem_u; /* HuBERT's second arena, for the unmasked frames */
    uint8_t *mask;   /* (max_B * max_T) frames the model masks */
    int64_t *utt_frames; /* (max_B) valid encoder frames of each utterance */
    float *dout;     /* (max_B * max_T, D) gradient w.r.t. the encoder output */
    float *dfeat;    /* wav2vec 2.0: (max_B * max_T, C) gradient w.r.t. the normalised features */
    int64_t frames;  /* the last forward's scored frames */
    int B;
    /* across ranks: reduce(reduce_ctx, v, n) sums v (n doubles) over ranks in place; NULL: one process */
    void (*reduce)(void *ctx, double *v, int n);
    void *reduce_ctx;
    double *red;           /* the reduced statistics (see objective.c) */
    int64_t frames_global; /* the last forward's scored frames over all ranks */
    float pen_share;       /* this rank's share of the feature penalty's elements (1 on one process) */
} Objective;

/* Append the head's tensors to the model's table (before model_create_with_table). */
void objective_add_params(ParamTable *t, const ObjectiveConfig *cfg);
/* Bind the head's views in m's parameter and gradient buffers and size everything for m's max_B and
 * max_S. m must outlive o. */
void objective_create(Objective *o, const ObjectiveConfig *cfg, Model *m);
void objective_free(Objective *o);
/* Mask, model forward, head forward. Fills st. b->inp and b->labels must stay valid until backward. */
void objective_forward(Objective *o, Model *m, const ObjectiveBatch *b, ObjectiveStats *st);
/* HuBERT: the head's predictions on the last forward's unmasked frames, for acc_u: st->frames_u and
 * st->correct_u (forward only, no gradient; nothing more to do when nomask_weight > 0). Between
 * objective_forward(o, m, b, st) and objective_backward. */
void objective_score_unmasked(Objective *o, Model *m, const ObjectiveBatch *b, ObjectiveStats *st);
/* A rank with no utterance in this micro-batch: takes part in forward's reduction (o->reduce) with
 * zeros; st is all zero and there is no backward to run. */
void objective_forward_empty(Objective *o, Model *m, ObjectiveStats *st);
/* Gradients of dloss * (the last forward's loss_sum), accumulated into m->grads. */
void objective_backward(Objective *o, Model *m, float dloss);

/* wav2vec2.h — wav2vec 2.0's objective head (core/README.md, Objectives): the Gumbel product quantizer of the
 * unmasked features, the contrastive (InfoNCE) loss over masked frames with negatives from the same
 * utterance, and the diversity term. fairseq's Wav2Vec2Model (quantizer path, sample_negatives,
 * compute_preds), GumbelVectorQuantizer and wav2vec_criterion, in plain form:
 *
 *   frames    n = the masked, unpadded frames of utterances that have at least 2 of them (fairseq
 *             asserts high > 1; here a smaller utterance simply contributes nothing)
 *   y_n       = dropout_features(feat_n)                      feat = the model's m->a.fp_ln (B, T, C)
 *   l_n       = weight_proj(y_n)                              (G*V) logits, G groups of V entries
 *   soft      = softmax_v(l_n,g)                              -> prob_perplexity, diversity
 *   training: s_n,g = softmax_v((l_n,g + gumbel_n,g) / tau),  k_n,g = argmax_v s_n,g,
 *             forward uses the one-hot of k, backward the gradient of s (straight-through,
 *             F.gumbel_softmax(hard=True)); evaluation: k_n,g = argmax_v l_n,g and no gradient
 *   q_n       = concat_g codevectors[g*V + k_n,g]             (vq_dim)
 *   z_n       = project_q(q_n)                                (F)
 *   c_n       = final_proj(x_n)                               (F)   x = encoder output (B, T, D)
 *   logit_n,0 = cos(c_n, z_n) / logit_temp,  logit_n,j = cos(c_n, z_neg(n,j)) / logit_temp, j = 1..K,
 *             -inf when negative j has the same code as n in every group (then z is identical:
 *             fairseq's neg_is_pos; comparing codes is exact where comparing floats after a GEMM is not)
 *   loss_sum  = sum_n CE(logit_n, 0)                          (InfoNCE, reduction "sum")
 *   n_correct = frames whose positive is the argmax and not also the argmin (fairseq's count)
 *   prob_ppl  = sum_g exp(-sum_v a_gv log(a_gv + 1e-7)),  a_gv = mean over the frames of soft_n,gv
 *   code_ppl  = the same with the hard argmax of l (no noise) one-hots
 *   diversity = (G*V - prob_ppl) / (G*V)
 *   tau       = max(max_temp * decay^step, min_temp), step = updates completed (fairseq's num_updates)
 *
 * Negatives: for frame i of an utterance with M such frames, K indices j = uniform in [0, M-2],
 * j += (j >= i): with replacement, never i itself, always in the same utterance (fairseq's
 * sample_negatives with cross_sample_negatives = 0). Drawn in frame order from the stream
 * (seed, step, utterance id, KOE_RNG_NEGATIVES). Gumbel noise of frame t (its index in the utterance)
 * is numbers t*G*V + 1 .. (t+1)*G*V of (seed, step, utterance id, KOE_RNG_GUMBEL) (see
 * wav2vec2_gumbel_noise). dropout_features of frame t draws from the dropout stream
 * (seed, step, hash(utterance id, t)). Nothing depends on the batch layout or the rank count.
 *
 * Normalisation (the caller's; fairseq: loss = sum CE + 0.1 * sample_size * diversity
 * + 10 * sample_size * features_pen, gradients divided by sample_size = masked frames): the loss
 * optimised is
 *   L = loss_sum / N_global + diversity_weight * diversity + feature_pen_weight * features_pen,
 * so backward takes dloss = 1 / N_global and ddiv = diversity_weight (0.1); the feature penalty
 * (model->feature_pen) is not this head's: pass dpen = feature_pen_weight (10) to model_backward.
 * Across ranks, prob_ppl must come from the global average: allreduce (sum) act->prob_sum (G*V),
 * act->code_count (G*V) and act->n_sum, then call wav2vec2_head_reduce before backward. Then the
 * diversity term is the single-process value of the whole global batch whatever the rank count
 * (fairseq instead weights each GPU's own diversity by its sample_size).
 *
 * Parameters (Hugging Face Wav2Vec2ForPreTraining names, except final_proj — HF's project_hid — kept
 * as fairseq's and as core/hubert.h names it; fairseq calls the codevectors quantizer.vars):
 *   quantizer.weight_proj.weight (G*V, C)  N(0, 1)      quantizer.weight_proj.bias (G*V)  zeros
 *   quantizer.codevectors (1, G*V, vq_dim/G)  U(0, 1)
 *   project_q.weight (F, vq_dim), project_q.bias (F)     nn.Linear default U(+-1/sqrt(vq_dim))
 *   final_proj.weight (F, D), final_proj.bias (F)        nn.Linear default U(+-1/sqrt(D))
 *
 * Dimension letters: B utterances, T frames, C feature channels (512), D encoder width, F final_dim,
 * G groups, V entries per group, Q vq_dim, K negatives, N scored frames (<= B*T).
 * Must not: allocate in forward/backward, include MPI or HDF5, or normalise the loss. */
#pragma once
#include <stdint.h>

#include "model.h"
#include "params.h"

#define WAV2VEC2_COS_EPS 1e-8f  /* torch.cosine_similarity's eps */
#define WAV2VEC2_PPL_EPS 1e-7   /* GumbelVectorQuantizer's log(p + 1e-7) */

typedef struct {
    int C;                  /* quantizer input: conv feature channels (512) */
    int D;                  /* encoder_embed_dim */
    int final_dim;          /* final_dim = 256 */
    int G;                  /* latent_groups = 2 */
    int V;                  /* latent_vars = 320 */
    int vq_dim;             /* latent_dim, or final_dim when that is 0 (256); multiple of G */
    int n_negatives;        /* num_negatives = 100 */
    float logit_temp;       /* logit_temp = 0.1 */
    double temp[3];         /* latent_temp = (2, 0.5, 0.999995): max, min, decay per update */
    float dropout_features; /* dropout_features = 0.1 (training only) */
} Wav2vec2HeadConfig;

/* Views into the parameter (or gradient) buffer. */
typedef struct {
    float *wp_w;        /* (G*V, C) quantizer.weight_proj.weight */
    float *wp_b;        /* (G*V)    quantizer.weight_proj.bias */
    float *codevectors; /* (G*V, Q/G) quantizer.codevectors */
    float *pq_w;        /* (F, Q)   project_q.weight */
    float *pq_b;        /* (F)      project_q.bias */
    float *fp_w;        /* (F, D)   final_proj.weight */
    float *fp_b;        /* (F)      final_proj.bias */
} Wav2vec2HeadParams;

/* What a forward reports (loss_sum and the counts are this process's; the perplexities and the
 * diversity are from act's sums, i.e. global after an allreduce + wav2vec2_head_reduce). */
typedef struct {
    double loss_sum;  /* summed InfoNCE over the scored frames */
    int64_t n_frames; /* frames scored */
    int64_t n_correct;
    double code_ppl, prob_ppl, diversity;
    double temp;      /* Gumbel temperature used */
} Wav2vec2Stats;

/* What one forward keeps for backward; views into one arena of wav2vec2_head_act_floats() floats. */
typedef struct {
    Wav2vec2HeadConfig cfg;
    int max_B;
    int64_t max_T, max_frames;
    /* the last forward */
    int B;
    int64_t T, N;
    ModelRun run;
    double temp;
    int64_t *utt;      /* (max_B) utterance ids */
    int32_t *first;    /* (max_B) first scored row of each utterance */
    int32_t *count;    /* (max_B) its scored rows (0 when fewer than 2 masked frames) */
    int32_t *idx;      /* (max_frames) b*T + t of each scored row */
    int32_t *code;     /* (max_frames, G) chosen entry per group */
    int32_t *hard;     /* (max_frames, G) argmax of the logits (no noise), for code_ppl */
    int32_t *neg;      /* (max_frames, K) scored row of each negative */
    float *xs;         /* (max_frames, D) scored rows of x */
    float *yin;        /* (max_frames, C) dropout_features(feat) rows: weight_proj's input */
    float *soft;       /* (max_frames, G*V) softmax of the logits per group */
    float *gsoft;      /* (max_frames, G*V) softmax((logits + noise) / tau) per group (training) */
    float *q;          /* (max_frames, Q) chosen codevectors, concatenated */
    float *zhat, *znorm; /* (max_frames, F), (max_frames) project_q(q) / its clamped norm */
    float *chat, *cnorm; /* (max_frames, F), (max_frames) final_proj(x) / its clamped norm */
    float *prob;       /* (max_frames, 1+K) softmax of the logits [positive, negatives] (0 at -inf) */
    float *row_loss;   /* (max_frames) */
    double *prob_sum;  /* (G*V) sum over scored rows of soft (allreduce across ranks) */
    double *code_count; /* (G*V) how many scored rows chose each entry by argmax of the logits */
    double n_sum;      /* rows in prob_sum (allreduce across ranks) */
    /* backward scratch */
    float *dlogit;     /* (max_frames, 1+K) */
    float *dchat, *dzhat; /* (max_frames, F) */
    float *dproj;      /* (max_frames, F) d final_proj output, then d project_q output */
    float *dq;         /* (max_frames, Q) */
    float *dl;         /* (max_frames, G*V) d weight_proj output */
    float *dgs;        /* (max_frames, G*V) d gsoft */
    float *dyin;       /* (max_frames, C) */
    float *dxs;        /* (max_frames, D) */
    float *cdiv;       /* (G*V) d diversity / d soft (same for every row) */
} Wav2vec2HeadAct;

/* Appends the head's tensors (names, shapes and fairseq's initialisation above) to the table. */
void wav2vec2_head_add_params(ParamTable *t, const Wav2vec2HeadConfig *cfg);
/* Views of the head's tensors in buf (parameters or gradients: same layout). */
void wav2vec2_head_bind(const ParamTable *t, float *buf, Wav2vec2HeadParams *p);

/* Floats of the act arena for batches of up to max_B utterances of up to max_T frames, and the views
 * carved from mem (which must hold that many floats, 8-byte aligned, and outlive act). */
int64_t wav2vec2_head_act_floats(const Wav2vec2HeadConfig *cfg, int max_B, int64_t max_T);
void wav2vec2_head_act_bind(Wav2vec2HeadAct *act, const Wav2vec2HeadConfig *cfg, int max_B, int64_t max_T,
                            float *mem);

/* Gumbel temperature after `step` completed updates: max(max * decay^step, min). */
double wav2vec2_temperature(const Wav2vec2HeadConfig *cfg, int64_t step);
/* The Gumbel noise -log(-log(u)) of frame t of utterance utt, out (G*V); u in (0, 1) from the
 * stream (seed, step, utt, KOE_RNG_GUMBEL), numbers t*GV + 1 .. t*GV + GV. */
void wav2vec2_gumbel_noise(float *out, uint64_t seed, uint64_t step, int64_t utt, int64_t t, int GV);

/* x (B, T, D) encoder output; feat (B, T, C) the LayerNorm'd unmasked features (m->a.fp_ln); mask
 * (B, T) 1 on masked frames; pad (B, T) 1 on padding, or NULL; utt (B) utterance ids; run: train
 * (Gumbel sampling and dropout_features), seed and step (completed updates). x and feat need not stay
 * valid after the call. Fills st from this batch alone (see wav2vec2_head_reduce for several ranks). */
void wav2vec2_head_forward(Wav2vec2HeadAct *act, const Wav2vec2HeadParams *p, const float *x, const float *feat,
                           const uint8_t *mask, const uint8_t *pad, const int64_t *utt, int B, int64_t T,
                           const ModelRun *run, Wav2vec2Stats *st);
/* The quantizer as evaluation sees it (no Gumbel noise, no dropout_features): feat (n, C) rows of the
 * LayerNorm'd features; soft (n, G*V) each group's softmax of the logits, hard (n, G) each group's
 * argmax (the first on ties) — act->soft and act->hard of an evaluation forward. For `koe analyze
 * codebook`. */
void wav2vec2_quantize(const Wav2vec2HeadConfig *c, const Wav2vec2HeadParams *p, const float *feat, int64_t n,
                       float *soft, int32_t *hard);
/* sum_g exp(-sum_v a_gv log(a_gv + 1e-7)), a = sum / n (sum (G*V)): prob_ppl from summed soft
 * probabilities, code_ppl from summed one-hots; 0 when n <= 0. */
double wav2vec2_perplexity(const double *sum, double n, int G, int V);
/* Recomputes st's code_ppl, prob_ppl and diversity from act->prob_sum, act->code_count and
 * act->n_sum (after the caller has summed them over ranks); backward then uses those sums. */
void wav2vec2_head_reduce(const Wav2vec2HeadAct *act, Wav2vec2Stats *st);
/* Gradient of dloss * loss_sum + ddiv * diversity: accumulates into dx (B, T, D) and dfeat (B, T, C)
 * (rows of unscored frames untouched; either may be NULL) and into g (all seven tensors). p must be
 * the forward's parameters. */
void wav2vec2_head_backward(float *dx, float *dfeat, const Wav2vec2HeadParams *g, Wav2vec2HeadAct *act,
                            const Wav2vec2HeadParams *p, float dloss, float ddiv);

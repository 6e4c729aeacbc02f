/* conformer.h — one Conformer encoder layer (core/README.md, encoder `conformer`): forward and
 * backward as a straight list of core/layers.h kernel calls, in torchaudio's ConformerLayer order:
 *
 *   x1  = x  + 0.5 * FFN1(x)                 FFN(z) = drop(W2 drop_act(swish(W1 LN(z) + b1)) + b2)
 *   x2  = x1 + drop(OutProj(MHSA(LN(x1))))   q/k/v/out projections, key padding mask
 *   x3  = x2 + ConvModule(x2)                see below
 *   x4  = x3 + 0.5 * FFN2(x3)
 *   out = LN(x4)
 *
 *   ConvModule(z) = drop(PW2 swish(LN_dw(DW(zero_pad(GLU(PW1 LN(z)))))))
 *     PW1: pointwise conv D -> 2D, GLU over channels back to D, DW: depthwise conv kernel K
 *     ('same' padding (K-1)/2), LN_dw: a per-frame LayerNorm over the D channels, PW2: pointwise D -> D.
 *
 * Differences from torchaudio's ConformerLayer, on purpose:
 *   - the conv module normalises with a per-frame LayerNorm (as transformers' Wav2Vec2Bert does),
 *     not BatchNorm / one-group GroupNorm: no statistics across frames, utterances or ranks, so
 *     padding cannot leak through it;
 *   - padded frames (key_pad = 1) are set to zero right before the depthwise conv, so the conv's
 *     window never carries a padded frame into a valid one. Everything else in the layer is per
 *     frame or uses the key padding mask, so the outputs on valid frames do not depend on what the
 *     padded frames hold (test_conformer checks this). Padded frames get finite, meaningless outputs;
 *   - the convolutions have no bias (transformers' Wav2Vec2Conformer and fairseq; torchaudio has one).
 *
 * Parameters use the names of transformers' Wav2Vec2ConformerEncoderLayer (below, relative to
 * "encoder.layers.N."), except conv_module.depthwise_layer_norm (Wav2Vec2Bert's name for the same
 * LayerNorm) in place of conv_module.batch_norm. Shapes are PyTorch's: Linear (out, in),
 * Conv1d (out, in/groups, K).
 *
 * One layer's parameters are one contiguous block laid out in the table's order
 * (conformer_layer_param_specs); conformer_layer_bind carves a block (parameters or gradients) into
 * views. The q, k, v weights are adjacent and so are their biases, so the three projections run as
 * one (3D, D) GEMM into the packed qkv that attention_forward takes.
 *
 * Dimension letters: B batch, T frames, D model width, F FFN width, H heads, K depthwise kernel,
 * N = B*T rows. Activations are (B, T, D) time-major.
 * No MPI, no HDF5, no allocation: the caller owns parameters, activations and scratch. */
#pragma once
#include <stdint.h>

#include "common.h"

/* Feed-forward module with its own pre-LayerNorm. */
typedef struct {
    float *ln_w, *ln_b; /* (D), (D)      ffnX_layer_norm */
    float *w1, *b1;     /* (F, D), (F)   ffnX.intermediate_dense */
    float *w2, *b2;     /* (D, F), (D)   ffnX.output_dense */
} ConformerFFN;

/* Views into one layer's parameter block, or into the matching gradient block. */
typedef struct {
    ConformerFFN ffn1;
    float *attn_ln_w, *attn_ln_b; /* (D), (D)           self_attn_layer_norm */
    float *qkv_w;                 /* (3D, D)            self_attn.linear_q|linear_k|linear_v.weight */
    float *qkv_b;                 /* (3D)               self_attn.linear_q|linear_k|linear_v.bias */
    float *out_w, *out_b;         /* (D, D), (D)        self_attn.linear_out */
    float *conv_ln_w, *conv_ln_b; /* (D), (D)           conv_module.layer_norm */
    float *pw1_w;                 /* (2D, D, 1)         conv_module.pointwise_conv1.weight */
    float *dw_w;                  /* (D, 1, K)          conv_module.depthwise_conv.weight */
    float *dw_ln_w, *dw_ln_b;     /* (D), (D)           conv_module.depthwise_layer_norm */
    float *pw2_w;                 /* (D, D, 1)          conv_module.pointwise_conv2.weight */
    ConformerFFN ffn2;
    float *final_ln_w, *final_ln_b; /* (D), (D)         final_layer_norm */
} ConformerLayerParams;

/* How a parameter is initialised (fairseq: init_bert_params for Linear, PyTorch's default for the
 * conv module's Conv1d, LayerNorm 1/0). The model applies it with its own RNG keys. */
typedef enum {
    CONFORMER_INIT_ONES = 1,    /* LayerNorm weight */
    CONFORMER_INIT_ZEROS,       /* LayerNorm and Linear bias */
    CONFORMER_INIT_NORMAL_002,  /* Linear weight: N(0, 0.02) */
    CONFORMER_INIT_CONV_KAIMING /* Conv1d weight: U(-b, b), b = 1/sqrt(in/groups * K) (PyTorch's default) */
} ConformerInit;

typedef struct {
    const char *name;  /* relative to "encoder.layers.N." */
    int ndim;
    int64_t shape[3];
    int64_t offset;    /* floats from the start of the layer's block */
    ConformerInit init;
} ConformerParamSpec;

#define CONFORMER_N_PARAMS 31
/* Fills specs[CONFORMER_N_PARAMS] in block order; returns the block size in floats. */
int64_t conformer_layer_param_specs(ConformerParamSpec *specs, int D, int F, int K);
int64_t conformer_layer_param_floats(int D, int F, int K);
/* Views into a block of conformer_layer_param_floats(D, F, K) floats (parameters or gradients). */
void conformer_layer_bind(ConformerLayerParams *p, float *block, int D, int F, int K);

/* What backward needs, saved by forward. Besides these, backward reads the layer's input
 * (the previous layer's output, which the caller keeps) and recomputes the cheap elementwise
 * swish/dropout outputs instead of storing them. */
typedef struct {
    float *ffn1_ln, *ffn1_mean, *ffn1_rstd; /* (N, D), (N), (N) */
    float *ffn1_pre;                        /* (N, F) intermediate_dense output, before swish */
    float *x1;                              /* (N, D) after FFN1 residual */
    float *attn_ln, *attn_mean, *attn_rstd; /* (N, D), (N), (N) */
    float *qkv;                             /* (N, 3D) */
    float *att;                             /* (B, H, T, T) attention probabilities */
    float *attn_y;                          /* (N, D) heads concatenated, before linear_out */
    float *x2;                              /* (N, D) after the attention residual */
    float *conv_ln, *conv_mean, *conv_rstd; /* (N, D), (N), (N) */
    float *pw1;                             /* (N, 2D) pointwise_conv1 output */
    float *glu;                             /* (N, D) GLU output, padded frames zeroed (depthwise input) */
    float *dw;                              /* (N, D) depthwise conv output */
    float *dw_ln, *dw_mean, *dw_rstd;       /* (N, D), (N), (N) */
    float *x3;                              /* (N, D) after the conv module residual */
    float *ffn2_ln, *ffn2_mean, *ffn2_rstd; /* (N, D), (N), (N) */
    float *ffn2_pre;                        /* (N, F) */
    float *x4;                              /* (N, D) after FFN2 residual, input of final_layer_norm */
    float *final_mean, *final_rstd;         /* (N), (N) */
} ConformerLayerAct;

/* The views of one layer's activations taken from ar (common.h: measuring or binding), so a model's
 * arena holds them among its own; conformer_layer_act_floats measures them and act_bind carves them
 * from base alone. */
void conformer_layer_act_carve(ConformerLayerAct *a, Arena *ar, int B, int64_t T, int D, int F, int H);
int64_t conformer_layer_act_floats(int B, int64_t T, int D, int F, int H);
void conformer_layer_act_bind(ConformerLayerAct *a, float *base, int B, int64_t T, int D, int F, int H);
/* Scratch for forward and backward (contents need not survive between calls). */
int64_t conformer_layer_scratch_floats(int B, int64_t T, int D, int F, int H, int K);

/* Dropout of one layer: p on the residual branches (FFN outputs, attention output, conv module
 * output), p_act after the FFN's swish, p_att on the attention probabilities. The layer draws from
 * CONFORMER_DROPOUT_STREAMS dropout sites stream + i, i = 0..6, so the caller gives each layer its
 * own range of stream ids. Utterance b's (T, C) block at site s has its own stream (seed, step,
 * hash(s ^ hash(utt[b]))) indexed by frame * C + channel (attention: layers.h), so its mask does not
 * depend on its batch position or padding. All zero = off (evaluation). */
#define CONFORMER_DROPOUT_STREAMS 7
typedef struct {
    float p, p_act, p_att;
    uint64_t seed, step, stream;
    const int64_t *utt; /* (B) utterance ids keying the masks; NULL: utt[b] = b */
} ConformerDropout;

/* out (B, T, D) = layer(inp (B, T, D)); key_pad (B, T): 1 on padded frames, or NULL (no padding).
 * eps: LayerNorm epsilon. scratch: conformer_layer_scratch_floats(...) floats. */
void conformer_layer_forward(float *out, ConformerLayerAct *act, const float *inp, const ConformerLayerParams *p,
                             const uint8_t *key_pad, int B, int64_t T, int D, int F, int H, int K, float eps,
                             const ConformerDropout *drop, float *scratch);

/* Accumulates (+=) into dinp (B, T, D) (NULL: not needed) and every gradient view of g, given
 * dout (B, T, D), the same inp, parameters, key_pad and dropout as forward, and forward's act. */
void conformer_layer_backward(float *dinp, const ConformerLayerParams *g, const float *dout, const float *inp,
                              const ConformerLayerParams *p, const ConformerLayerAct *act, const uint8_t *key_pad,
                              int B, int64_t T, int D, int F, int H, int K, const ConformerDropout *drop,
                              float *scratch);

/* layers.h — the kernels every encoder is built from: forward/backward pairs in the llm.c style.
 * Dimension letters: B batch, T frames (time), C channels in, OC channels out, H heads, K kernel
 * width, G groups, N rows (= B*T for per-frame ops). Tensors are row-major and time-major:
 * activations are (B, T, C). Weights use PyTorch's layouts so parameters load by name unchanged:
 * Linear (OC, C), Conv1d (OC, C/G, K).
 *
 * Conventions:
 *   - forward writes its outputs (=); backward ACCUMULATES (+=) into every gradient it is given,
 *     parameters and inputs alike, so residual branches just add. A NULL gradient pointer means
 *     "not needed" and is skipped (e.g. the input of the first layer). The one exception is
 *     softmax_xent_backward, which writes (see there).
 *   - backward gets what forward saved (mean/rstd, attention probabilities, ...) and never
 *     recomputes from scratch what forward already had.
 *   - each kernel has a naive reference (`*_naive`, in layers_naive.c) that the tests compare the
 *     fast one against; the naive ones are only for tests.
 *   - no allocation inside a kernel except where a scratch argument is documented.
 * No MPI, no HDF5. Threads: OpenMP for loops and GEMMs (gemm.h). */
#pragma once
#include <stdint.h>

#include "rng.h"

/* out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC); bias may be NULL. */
void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int C, int OC);
void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int64_t N, int C, int OC);

/* The same with inp kept in bf16 (uint16_t bit patterns, gemm.h), for a bf16 run only (gemm_precision()
 * == GEMM_BF16): inp is only a GEMM operand there, rounded to bf16 anyway, so the results are the
 * fp32-input call's on inp's fp32 original (core/README.md, Precision). */
void linear_forward_bf16in(float *out, const uint16_t *inp, const float *weight, const float *bias, int64_t N, int C,
                           int OC);
void linear_backward_bf16in(float *dinp, float *dweight, float *dbias, const float *dout, const uint16_t *inp,
                            const float *weight, int64_t N, int C, int OC);
/* The backward with dout in bf16 (gelu_backward_bf16's), for a bf16 run only: its GEMMs read it as it
 * is, its bias gradient sums its widened values (as conv1d_backward_bf16). */
void linear_backward_bf16dout(float *dinp, float *dweight, float *dbias, const uint16_t *dout, const float *inp,
                              const float *weight, int64_t N, int C, int OC);

/* 1-d convolution over time, time-major. inp (B, Ti, C), out (B, To, OC), weight (OC, C/G, K),
 * bias (OC) or NULL; zero padding `pad` on both sides; To = (Ti + 2*pad - K) / stride + 1.
 * Covers the waveform stack (G=1, strided), the positional conv (G=16, pad K/2; the caller drops
 * the last output frame when K is even, as wav2vec 2.0 does) and depthwise (G=C=OC). */
int64_t conv1d_out_len(int64_t Ti, int K, int stride, int pad);
/* scratch: conv1d_scratch_floats(...) floats, shared by forward and backward (the weight in a
 * GEMM-friendly layout, and its gradient or channel-major copies of the input and dout, and blocks of
 * unfolded windows, one per OpenMP thread for grouped convs); its contents need not survive between
 * calls. The size depends on the OpenMP thread
 * count (omp_get_max_threads()): size the scratch after setting it, and do not raise it later. */
int64_t conv1d_scratch_floats(int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G);
void conv1d_forward(float *out, const float *inp, const float *weight, const float *bias, int B, int64_t Ti,
                    int C, int OC, int K, int stride, int pad, int G, float *scratch);
void conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G,
                     float *scratch);

/* The same convolution of an input kept in bf16, as linear_*_bf16in. Not for depthwise convs. */
void conv1d_forward_bf16in(float *out, const uint16_t *inp, const float *weight, const float *bias, int B,
                           int64_t Ti, int C, int OC, int K, int stride, int pad, int G, float *scratch);
void conv1d_backward_bf16in(float *dinp, float *dweight, float *dbias, const float *dout, const uint16_t *inp,
                            const float *weight, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G,
                            float *scratch);
/* The backward with dout in bf16 too (gelu_backward_bf16's): its GEMMs read it as it is, its bias
 * gradient sums its widened values. */
void conv1d_backward_bf16(float *dinp, float *dweight, float *dbias, const uint16_t *dout, const uint16_t *inp,
                          const float *weight, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G,
                          float *scratch);

/* LayerNorm over the last dimension C of (N, C); eps as PyTorch (1e-5). mean, rstd: (N). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int64_t N, int C, float eps);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int64_t N, int C);

/* GroupNorm with one group per channel (the wav2vec 2.0 Base first conv layer): each (b, c)
 * normalised over T. inp/out (B, T, C); mean, rstd (B, C). C at most GROUPNORM_MAX_C (the backward
 * sums the weight and bias gradients over the batch in an array of that many channels). */
#define GROUPNORM_MAX_C 4096
void groupnorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int B, int64_t T, int C, float eps);
void groupnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int B, int64_t T, int C);
/* The same backward of an input kept in bf16 (a bf16 run's conv output, core/README.md, Precision): the
 * forward it pairs with normalised those bf16 values (widened), so inp is exact here. */
void groupnorm_backward_bf16in(float *dinp, float *dweight, float *dbias, const float *dout, const uint16_t *inp,
                               const float *weight, const float *mean, const float *rstd, int B, int64_t T, int C);
/* A bf16 run's GroupNorm and the GELU after it (the waveform stack's layer 0, core/README.md,
 * Precision), fused: two passes over the layer instead of six. Forward: xk = inp rounded to bf16 (the
 * kept conv output), normalised as groupnorm_forward normalises those values, the result rounded into
 * nk (the kept GELU input), act = GELU(nk) rounded (the next conv's input). The same bits as
 * bf16_round_f32, groupnorm_forward and gelu_forward_bf16 in turn. Backward: dout, d of act, is
 * overwritten with d of the GroupNorm output; then as groupnorm_backward_bf16in from xk. */
void groupnorm_gelu_forward_bf16(uint16_t *xk, uint16_t *nk, uint16_t *act, float *mean, float *rstd,
                                 const float *inp, const float *weight, const float *bias, int B, int64_t T, int C,
                                 float eps);
void groupnorm_gelu_backward_bf16(float *dinp, float *dweight, float *dbias, float *dout, const uint16_t *nk,
                                  const uint16_t *xk, const float *weight, const float *mean, const float *rstd,
                                  int B, int64_t T, int C);

/* Elementwise activations over n values. GELU is the exact erf form (PyTorch's default; layers.c gives
 * its accuracy). */
void gelu_forward(float *out, const float *inp, int64_t n);
/* A bf16 run's GELU of a GEMM output it keeps in bf16 (core/README.md, Precision), in one pass: kept =
 * inp rounded to bf16, out = GELU(kept) rounded to bf16; its backward is gelu_backward_bf16in on kept.
 * The same bits as bf16_round_f32, gelu_forward and bf16_from_f32 in turn. */
void gelu_forward_bf16(uint16_t *kept, uint16_t *out, const float *inp, int64_t n);
void gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n);
/* d = d * GELU'(inp): dout overwritten with dinp (=, not +=), for a caller that reads dout no more
 * (the conv stack, the FFN): no zeroed dinp to fill, two memory sweeps fewer. */
void gelu_backward_inplace(float *d, const float *inp, int64_t n);
/* The same with the GELU input kept in bf16, as groupnorm_backward_bf16in. */
void gelu_backward_bf16in(float *dinp, const float *dout, const uint16_t *inp, int64_t n);
/* The same, but writing (=, not +=) dinp in bf16: for a gradient whose only readers are a bf16 run's
 * GEMMs (conv1d_backward_bf16), as autocast's gradient of a bf16 conv output is bf16 itself. */
void gelu_backward_bf16(uint16_t *dinp, const float *dout, const uint16_t *inp, int64_t n);
void swish_forward(float *out, const float *inp, int64_t n);
void swish_backward(float *dinp, const float *dout, const float *inp, int64_t n);
/* GLU over the channel dim: inp (N, 2C) -> out (N, C) = a * sigmoid(b), a = inp[:, :C], b = inp[:, C:]. */
void glu_forward(float *out, const float *inp, int64_t N, int C);
void glu_backward(float *dinp, const float *dout, const float *inp, int64_t N, int C);

/* Multi-head scaled dot-product self-attention on packed projections.
 * qkv (B, T, 3C): q | k | v, each (B, T, C) split into H heads of C/H; q is scaled by (C/H)^-0.5.
 * key_pad (B, T): 1 where frame t of utterance b is padding (never attended to), or NULL.
 * att (B, H, T, T): the softmax probabilities after dropout is NOT applied — the probabilities
 * themselves, the only thing backward keeps (no pre-softmax scores). out (B, T, C): heads concatenated.
 * Attention dropout (p > 0) of head h of utterance b draws from its own rng stream, named by
 * (seed, step, layer, utterance id utt[b], h) and not by b (attention.c), and is recomputed
 * identically in backward. Padded query rows produce finite outputs (they attend to the
 * unpadded keys as usual). scratch: attention_scratch_floats(B, T, C, H) floats. */
typedef struct {
    float p;        /* attention dropout probability; 0 = off */
    uint64_t seed;  /* dropout stream name: (seed, step, layer, utt[b], head) */
    uint64_t step;
    uint64_t layer;
    const int64_t *utt; /* (B) utterance ids keying each utterance's masks; NULL: utt[b] = b */
} AttentionDropout;
int64_t attention_scratch_floats(int B, int64_t T, int C, int H);
void attention_forward(float *out, float *att, const float *qkv, const uint8_t *key_pad, int B, int64_t T, int C,
                       int H, const AttentionDropout *drop, float *scratch);
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, const uint8_t *key_pad,
                        int B, int64_t T, int C, int H, const AttentionDropout *drop, float *scratch);
/* The same with qkv kept in bf16, as linear_*_bf16in (a bf16 run only; q, k and v are only GEMM operands). */
void attention_forward_bf16qkv(float *out, float *att, const uint16_t *qkv, const uint8_t *key_pad, int B, int64_t T,
                               int C, int H, const AttentionDropout *drop, float *scratch);
void attention_backward_bf16qkv(float *dqkv, const float *dout, const uint16_t *qkv, const float *att,
                                const uint8_t *key_pad, int B, int64_t T, int C, int H, const AttentionDropout *drop,
                                float *scratch);

/* Inverted dropout over n values, mask from the stream (seed, a, b, KOE_RNG_DROPOUT): out = inp *
 * keep / (1 - p); element i is kept when the top 24 bits of the stream's number i (koe_rng_u64 with
 * ctr = i) as a fraction of 2^24 are >= p. The same (seed, a, b) gives the same mask in backward; nothing is stored. */
void dropout_forward(float *out, const float *inp, int64_t n, float p, uint64_t seed, uint64_t a, uint64_t b);
void dropout_backward(float *dinp, const float *dout, int64_t n, float p, uint64_t seed, uint64_t a, uint64_t b);

/* Weight normalisation with dim=2 (the positional conv): w[o, i, k] = v[o, i, k] * (g[k] / ||v[:, :, k]||).
 * v (OC, Ci, K), g (K), w (OC, Ci, K); norm (K) saved for backward. scratch: weightnorm_scratch_floats(K)
 * floats (8-byte aligned), used within one call. */
int64_t weightnorm_scratch_floats(int K);
void weightnorm_forward(float *w, float *norm, const float *g, const float *v, int OC, int Ci, int K,
                        float *scratch);
void weightnorm_backward(float *dg, float *dv, const float *dw, const float *g, const float *v, const float *norm,
                         int OC, int Ci, int K, float *scratch);

/* out = a + b, y += x (n values), and y += s * x: residual adds and gradient scaling
 * (feature_grad_mult). */
void add_vectors(float *out, const float *a, const float *b, int64_t n);
void add_inplace(float *y, const float *x, int64_t n);
void axpy_inplace(float *y, float s, const float *x, int64_t n);

/* ---- the objective heads' kernels (hubert.c, wav2vec2.c, bestrq.c) ---- */

/* Rows divided by their clamped norm, as torch.cosine_similarity divides each vector:
 * out (N, C) = inp / norm, norm (N) = sqrt(max(|row|^2, eps^2)); out may be inp. */
void rownorm_forward(float *out, float *norm, const float *inp, int64_t N, int C, float eps);
/* dinp (N, C) += (dout - out (out . dout)) / norm. The clamped norm's gradient is taken as torch takes
 * it (d norm / d inp = inp / norm, even when clamped). dinp must not be dout. */
void rownorm_backward(float *dinp, const float *dout, const float *out, const float *norm, int64_t N, int C);

/* Softmax cross-entropy per row: prob (N, C) = softmax(logit), loss (N) = logsumexp(logit) -
 * logit[target]; prob may be logit (in place). target (N) the class of each row, or NULL: class 0 of
 * every row (a contrastive row whose positive comes first). -inf logits get probability 0 (the first
 * logit of each row must be finite). Returns how many rows' target logit is the largest (ties count). */
int64_t softmax_xent_forward(float *prob, float *loss, const float *logit, const int32_t *target, int64_t N, int C);
/* dlogit (N, C) = dloss (prob - onehot(target)), the gradient of dloss * sum(loss). The one backward
 * that WRITES its gradient instead of adding to it: it starts a head's backward (nothing else feeds
 * the logits), and dlogit may be prob itself, so a head with a large class count (BEST-RQ's codebook)
 * keeps one (N, C) buffer for probabilities and their gradient. */
void softmax_xent_backward(float *dlogit, const float *prob, const int32_t *target, float dloss, int64_t N, int C);

/* The rows a head scores: out (N, C) row i = inp row idx[i] (inp (R, C), idx in [0, R)). Backward:
 * dinp row idx[i] += dout row i; the idx of one call must be distinct (rows run in parallel). */
void gather_rows_forward(float *out, const float *inp, const int32_t *idx, int64_t N, int C);
void gather_rows_backward(float *dinp, const float *dout, const int32_t *idx, int64_t N, int C);

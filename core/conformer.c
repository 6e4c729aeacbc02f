/* conformer.c — one Conformer layer, forward and backward (conformer.h): a list of layers.h kernel
 * calls, and the same list reversed. Owns the layer's parameter table (names, shapes, block
 * layout, init kind) and its activation/scratch layouts. Must not allocate, and must not hold any
 * state between calls: everything backward needs is in ConformerLayerAct. */
#include "conformer.h"

#include <string.h>

#include "common.h"
#include "layers.h"
#include "rng.h"

/* ------------------------------------------------------------------------------------------------
 * Parameter table */

/* Shape symbols: a spec's dims are products of these, resolved against (D, F, K). */
enum { S_D = -1, S_F = -2, S_K = -3, S_2D = -4, S_ONE = -5 };

static const struct {
    const char *name;
    int ndim;
    int dims[3];
    ConformerInit init;
} conformer_table[CONFORMER_N_PARAMS] = {
    {"ffn1_layer_norm.weight", 1, {S_D}, CONFORMER_INIT_ONES},
    {"ffn1_layer_norm.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"ffn1.intermediate_dense.weight", 2, {S_F, S_D}, CONFORMER_INIT_NORMAL_002},
    {"ffn1.intermediate_dense.bias", 1, {S_F}, CONFORMER_INIT_ZEROS},
    {"ffn1.output_dense.weight", 2, {S_D, S_F}, CONFORMER_INIT_NORMAL_002},
    {"ffn1.output_dense.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"self_attn_layer_norm.weight", 1, {S_D}, CONFORMER_INIT_ONES},
    {"self_attn_layer_norm.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"self_attn.linear_q.weight", 2, {S_D, S_D}, CONFORMER_INIT_NORMAL_002},
    {"self_attn.linear_k.weight", 2, {S_D, S_D}, CONFORMER_INIT_NORMAL_002},
    {"self_attn.linear_v.weight", 2, {S_D, S_D}, CONFORMER_INIT_NORMAL_002},
    {"self_attn.linear_q.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"self_attn.linear_k.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"self_attn.linear_v.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"self_attn.linear_out.weight", 2, {S_D, S_D}, CONFORMER_INIT_NORMAL_002},
    {"self_attn.linear_out.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"conv_module.layer_norm.weight", 1, {S_D}, CONFORMER_INIT_ONES},
    {"conv_module.layer_norm.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"conv_module.pointwise_conv1.weight", 3, {S_2D, S_D, S_ONE}, CONFORMER_INIT_CONV_KAIMING},
    {"conv_module.depthwise_conv.weight", 3, {S_D, S_ONE, S_K}, CONFORMER_INIT_CONV_KAIMING},
    {"conv_module.depthwise_layer_norm.weight", 1, {S_D}, CONFORMER_INIT_ONES},
    {"conv_module.depthwise_layer_norm.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"conv_module.pointwise_conv2.weight", 3, {S_D, S_D, S_ONE}, CONFORMER_INIT_CONV_KAIMING},
    {"ffn2_layer_norm.weight", 1, {S_D}, CONFORMER_INIT_ONES},
    {"ffn2_layer_norm.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"ffn2.intermediate_dense.weight", 2, {S_F, S_D}, CONFORMER_INIT_NORMAL_002},
    {"ffn2.intermediate_dense.bias", 1, {S_F}, CONFORMER_INIT_ZEROS},
    {"ffn2.output_dense.weight", 2, {S_D, S_F}, CONFORMER_INIT_NORMAL_002},
    {"ffn2.output_dense.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
    {"final_layer_norm.weight", 1, {S_D}, CONFORMER_INIT_ONES},
    {"final_layer_norm.bias", 1, {S_D}, CONFORMER_INIT_ZEROS},
};

static int64_t conformer_dim(int sym, int D, int F, int K) {
    switch (sym) {
    case S_D: return D;
    case S_F: return F;
    case S_K: return K;
    case S_2D: return 2 * (int64_t)D;
    case S_ONE: return 1;
    }
    KOE_ASSERT(0);
    return 0;
}

int64_t conformer_layer_param_specs(ConformerParamSpec *specs, int D, int F, int K) {
    int64_t off = 0;
    for (int i = 0; i < CONFORMER_N_PARAMS; i++) {
        ConformerParamSpec *s = &specs[i];
        s->name = conformer_table[i].name;
        s->ndim = conformer_table[i].ndim;
        s->offset = off;
        s->init = conformer_table[i].init;
        int64_t n = 1;
        for (int d = 0; d < 3; d++) {
            s->shape[d] = d < s->ndim ? conformer_dim(conformer_table[i].dims[d], D, F, K) : 0;
            if (d < s->ndim) n *= s->shape[d];
        }
        off += n;
    }
    return off;
}

int64_t conformer_layer_param_floats(int D, int F, int K) {
    ConformerParamSpec specs[CONFORMER_N_PARAMS];
    return conformer_layer_param_specs(specs, D, F, K);
}

void conformer_layer_bind(ConformerLayerParams *p, float *block, int D, int F, int K) {
    ConformerParamSpec s[CONFORMER_N_PARAMS];
    conformer_layer_param_specs(s, D, F, K);
    float **views[CONFORMER_N_PARAMS] = {
        &p->ffn1.ln_w, &p->ffn1.ln_b, &p->ffn1.w1, &p->ffn1.b1, &p->ffn1.w2, &p->ffn1.b2,
        &p->attn_ln_w, &p->attn_ln_b, &p->qkv_w, NULL, NULL, &p->qkv_b, NULL, NULL, &p->out_w, &p->out_b,
        &p->conv_ln_w, &p->conv_ln_b, &p->pw1_w, &p->dw_w, &p->dw_ln_w, &p->dw_ln_b, &p->pw2_w,
        &p->ffn2.ln_w, &p->ffn2.ln_b, &p->ffn2.w1, &p->ffn2.b1, &p->ffn2.w2, &p->ffn2.b2,
        &p->final_ln_w, &p->final_ln_b,
    };
    for (int i = 0; i < CONFORMER_N_PARAMS; i++)
        if (views[i]) *views[i] = block + s[i].offset;
    /* the packed projections rely on linear_k/linear_v following linear_q in the table */
    KOE_ASSERT(s[9].offset == s[8].offset + (int64_t)D * D && s[10].offset == s[9].offset + (int64_t)D * D);
    KOE_ASSERT(s[12].offset == s[11].offset + D && s[13].offset == s[12].offset + D);
}

/* ------------------------------------------------------------------------------------------------
 * Activations and scratch */

void conformer_layer_act_carve(ConformerLayerAct *a, Arena *ar, int B, int64_t T, int D, int F, int H) {
    const int64_t N = (int64_t)B * T, ND = N * D, NF = N * F;
    a->ffn1_ln = arena_take(ar, ND), a->ffn1_mean = arena_take(ar, N), a->ffn1_rstd = arena_take(ar, N);
    a->ffn1_pre = arena_take(ar, NF), a->x1 = arena_take(ar, ND);
    a->attn_ln = arena_take(ar, ND), a->attn_mean = arena_take(ar, N), a->attn_rstd = arena_take(ar, N);
    a->qkv = arena_take(ar, 3 * ND), a->att = arena_take(ar, (int64_t)B * H * T * T);
    a->attn_y = arena_take(ar, ND), a->x2 = arena_take(ar, ND);
    a->conv_ln = arena_take(ar, ND), a->conv_mean = arena_take(ar, N), a->conv_rstd = arena_take(ar, N);
    a->pw1 = arena_take(ar, 2 * ND), a->glu = arena_take(ar, ND), a->dw = arena_take(ar, ND);
    a->dw_ln = arena_take(ar, ND), a->dw_mean = arena_take(ar, N), a->dw_rstd = arena_take(ar, N);
    a->x3 = arena_take(ar, ND);
    a->ffn2_ln = arena_take(ar, ND), a->ffn2_mean = arena_take(ar, N), a->ffn2_rstd = arena_take(ar, N);
    a->ffn2_pre = arena_take(ar, NF), a->x4 = arena_take(ar, ND);
    a->final_mean = arena_take(ar, N), a->final_rstd = arena_take(ar, N);
}

int64_t conformer_layer_act_floats(int B, int64_t T, int D, int F, int H) {
    ConformerLayerAct a;
    Arena ar = arena_measure();
    conformer_layer_act_carve(&a, &ar, B, T, D, F, H);
    return ar.used;
}

void conformer_layer_act_bind(ConformerLayerAct *a, float *base, int B, int64_t T, int D, int F, int H) {
    Arena ar = arena_over(base, conformer_layer_act_floats(B, T, D, F, H));
    conformer_layer_act_carve(a, &ar, B, T, D, F, H);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Scratch layout: four (N, D) buffers, one (N, max(3D, 2D, F)) and one (N, max(F, D)), then the
 * attention and depthwise-conv scratch (used one at a time, so they share). */
typedef struct {
    float *r, *a, *b, *c; /* (N, D) */
    float *wide;          /* (N, max(3D, F)) */
    float *wide2;         /* (N, max(F, D)) */
    float *kernel;        /* attention or conv1d scratch */
} ConformerScratch;

static void conformer_scratch_carve(ConformerScratch *sc, Arena *ar, int B, int64_t T, int D, int F, int H, int K) {
    const int64_t N = (int64_t)B * T, ND = N * D;
    sc->r = arena_take(ar, ND), sc->a = arena_take(ar, ND), sc->b = arena_take(ar, ND), sc->c = arena_take(ar, ND);
    sc->wide = arena_take(ar, N * max64(3 * (int64_t)D, F));
    sc->wide2 = arena_take(ar, N * max64(F, D));
    sc->kernel = arena_take(ar, max64(attention_scratch_floats(B, T, D, H),
                                      conv1d_scratch_floats(B, T, D, D, K, 1, (K - 1) / 2, D)));
}

int64_t conformer_layer_scratch_floats(int B, int64_t T, int D, int F, int H, int K) {
    ConformerScratch sc;
    Arena ar = arena_measure();
    conformer_scratch_carve(&sc, &ar, B, T, D, F, H, K);
    return ar.used;
}

static ConformerScratch conformer_scratch(float *s, int B, int64_t T, int D, int F, int H, int K) {
    ConformerScratch sc;
    Arena ar = arena_over(s, conformer_layer_scratch_floats(B, T, D, F, H, K));
    conformer_scratch_carve(&sc, &ar, B, T, D, F, H, K);
    return sc;
}

/* ------------------------------------------------------------------------------------------------
 * Forward */

static void scale_inplace(float *y, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= s;
}

/* Rows of padded frames set to zero: x (B*T, C). */
static void zero_padded_rows(float *x, const uint8_t *key_pad, int64_t N, int C) {
    if (!key_pad) return;
    for (int64_t i = 0; i < N; i++)
        if (key_pad[i]) memset(x + i * C, 0, (size_t)C * sizeof(float));
}

/* Dropout at site `stream` of x (B, n) in place, each utterance's n values from its own stream
 * (conformer.h). */
static void conformer_drop_fwd(float *x, int B, int64_t n, float p, const ConformerDropout *drop, uint64_t stream) {
    for (int b = 0; b < B; b++) {
        const uint64_t u = drop->utt ? (uint64_t)drop->utt[b] : (uint64_t)b;
        dropout_forward(x + b * n, x + b * n, n, p, drop->seed, drop->step, koe_hash64(stream ^ koe_hash64(u)));
    }
}
/* dinp (B, n) += dropout'(dout) at site `stream`. */
static void conformer_drop_bwd(float *dinp, const float *dout, int B, int64_t n, float p, const ConformerDropout *drop,
                               uint64_t stream) {
    for (int b = 0; b < B; b++) {
        const uint64_t u = drop->utt ? (uint64_t)drop->utt[b] : (uint64_t)b;
        dropout_backward(dinp + b * n, dout + b * n, n, p, drop->seed, drop->step, koe_hash64(stream ^ koe_hash64(u)));
    }
}

/* y (N, D) = drop(W2 drop_act(swish(W1 LN(x) + b1)) + b2); saves ln, mean, rstd, pre.
 * h (N, F) is scratch. Streams: stream (after swish), stream + 1 (output). */
static void conformer_ffn_forward(float *y, float *ln, float *mean, float *rstd, float *pre, const float *x,
                                  const ConformerFFN *f, int B, int64_t N, int D, int F, float eps, float *h,
                                  const ConformerDropout *drop, uint64_t stream) {
    layernorm_forward(ln, mean, rstd, x, f->ln_w, f->ln_b, N, D, eps);
    linear_forward(pre, ln, f->w1, f->b1, N, D, F);
    swish_forward(h, pre, N * F);
    conformer_drop_fwd(h, B, N / B * F, drop->p_act, drop, stream);
    linear_forward(y, h, f->w2, f->b2, N, F, D);
    conformer_drop_fwd(y, B, N / B * D, drop->p, drop, stream + 1);
}

void conformer_layer_forward(float *out, ConformerLayerAct *act, const float *inp, const ConformerLayerParams *p,
                             const uint8_t *key_pad, int B, int64_t T, int D, int F, int H, int K, float eps,
                             const ConformerDropout *drop, float *scratch) {
    KOE_ASSERT(K % 2 == 1 && D % H == 0);
    int64_t N = (int64_t)B * T, ND = N * D;
    ConformerScratch sc = conformer_scratch(scratch, B, T, D, F, H, K);
    uint64_t st = drop->stream;

    /* x1 = x + 0.5 * FFN1(x) */
    conformer_ffn_forward(sc.a, act->ffn1_ln, act->ffn1_mean, act->ffn1_rstd, act->ffn1_pre, inp, &p->ffn1, B, N, D,
                          F, eps, sc.wide2, drop, st + 0);
    memcpy(act->x1, inp, (size_t)ND * sizeof(float));
    axpy_inplace(act->x1, 0.5f, sc.a, ND);

    /* x2 = x1 + drop(linear_out(MHSA(LN(x1)))) */
    layernorm_forward(act->attn_ln, act->attn_mean, act->attn_rstd, act->x1, p->attn_ln_w, p->attn_ln_b, N, D, eps);
    linear_forward(act->qkv, act->attn_ln, p->qkv_w, p->qkv_b, N, D, 3 * D);
    AttentionDropout ad = {drop->p_att, drop->seed, drop->step, st + 2, drop->utt};
    attention_forward(act->attn_y, act->att, act->qkv, key_pad, B, T, D, H, &ad, sc.kernel);
    linear_forward(sc.a, act->attn_y, p->out_w, p->out_b, N, D, D);
    conformer_drop_fwd(sc.a, B, T * D, drop->p, drop, st + 3);
    memcpy(act->x2, act->x1, (size_t)ND * sizeof(float));
    add_inplace(act->x2, sc.a, ND);

    /* x3 = x2 + drop(PW2 swish(LN_dw(DW(zero_pad(GLU(PW1 LN(x2))))))) */
    layernorm_forward(act->conv_ln, act->conv_mean, act->conv_rstd, act->x2, p->conv_ln_w, p->conv_ln_b, N, D, eps);
    linear_forward(act->pw1, act->conv_ln, p->pw1_w, NULL, N, D, 2 * D);
    glu_forward(act->glu, act->pw1, N, D);
    zero_padded_rows(act->glu, key_pad, N, D);
    conv1d_forward(act->dw, act->glu, p->dw_w, NULL, B, T, D, D, K, 1, (K - 1) / 2, D, sc.kernel);
    layernorm_forward(act->dw_ln, act->dw_mean, act->dw_rstd, act->dw, p->dw_ln_w, p->dw_ln_b, N, D, eps);
    swish_forward(sc.b, act->dw_ln, ND);
    linear_forward(sc.a, sc.b, p->pw2_w, NULL, N, D, D);
    conformer_drop_fwd(sc.a, B, T * D, drop->p, drop, st + 4);
    memcpy(act->x3, act->x2, (size_t)ND * sizeof(float));
    add_inplace(act->x3, sc.a, ND);

    /* x4 = x3 + 0.5 * FFN2(x3); out = LN(x4) */
    conformer_ffn_forward(sc.a, act->ffn2_ln, act->ffn2_mean, act->ffn2_rstd, act->ffn2_pre, act->x3, &p->ffn2, B, N,
                          D, F, eps, sc.wide2, drop, st + 5);
    memcpy(act->x4, act->x3, (size_t)ND * sizeof(float));
    axpy_inplace(act->x4, 0.5f, sc.a, ND);
    layernorm_forward(out, act->final_mean, act->final_rstd, act->x4, p->final_ln_w, p->final_ln_b, N, D, eps);
}

/* ------------------------------------------------------------------------------------------------
 * Backward: the forward list reversed. sc.r carries dL/d(residual stream) from x4 down to x. */

/* dx += d FFN(x)/dx . (scale * dres), gradients into g. Uses sc.a, sc.c, wide2 (h) and wide (dh). */
static void conformer_ffn_backward(float *dx, const ConformerFFN *g, const float *dres, float scale, const float *x,
                                   const float *ln, const float *mean, const float *rstd, const float *pre,
                                   const ConformerFFN *f, int B, int64_t N, int D, int F, const ConformerScratch *sc,
                                   const ConformerDropout *drop, uint64_t stream) {
    int64_t ND = N * D, NF = N * F;
    float *dy = sc->a, *dln = sc->c, *h = sc->wide2, *dh = sc->wide;
    /* dy = scale * drop'(dres) */
    memset(dy, 0, (size_t)ND * sizeof(float));
    conformer_drop_bwd(dy, dres, B, ND / B, drop->p, drop, stream + 1);
    scale_inplace(dy, scale, ND);
    /* h = drop_act(swish(pre)), recomputed */
    swish_forward(h, pre, NF);
    conformer_drop_fwd(h, B, NF / B, drop->p_act, drop, stream);
    memset(dh, 0, (size_t)NF * sizeof(float));
    linear_backward(dh, g->w2, g->b2, dy, h, f->w2, N, F, D);
    /* through dropout (into h, now free) and swish (back into dh) */
    memset(h, 0, (size_t)NF * sizeof(float));
    conformer_drop_bwd(h, dh, B, NF / B, drop->p_act, drop, stream);
    memset(dh, 0, (size_t)NF * sizeof(float));
    swish_backward(dh, h, pre, NF);
    memset(dln, 0, (size_t)ND * sizeof(float));
    linear_backward(dln, g->w1, g->b1, dh, ln, f->w1, N, D, F);
    layernorm_backward(dx, g->ln_w, g->ln_b, dln, x, f->ln_w, mean, rstd, N, D);
}

void conformer_layer_backward(float *dinp, const ConformerLayerParams *g, const float *dout, const float *inp,
                              const ConformerLayerParams *p, const ConformerLayerAct *act, const uint8_t *key_pad,
                              int B, int64_t T, int D, int F, int H, int K, const ConformerDropout *drop,
                              float *scratch) {
    int64_t N = (int64_t)B * T, ND = N * D;
    size_t nd_bytes = (size_t)ND * sizeof(float);
    ConformerScratch sc = conformer_scratch(scratch, B, T, D, F, H, K);
    uint64_t st = drop->stream;
    float *r = sc.r;

    /* out = LN(x4) */
    memset(r, 0, nd_bytes);
    layernorm_backward(r, g->final_ln_w, g->final_ln_b, dout, act->x4, p->final_ln_w, act->final_mean,
                       act->final_rstd, N, D);

    /* x4 = x3 + 0.5 * FFN2(x3): r becomes dL/dx3 */
    conformer_ffn_backward(r, &g->ffn2, r, 0.5f, act->x3, act->ffn2_ln, act->ffn2_mean, act->ffn2_rstd,
                           act->ffn2_pre, &p->ffn2, B, N, D, F, &sc, drop, st + 5);

    /* x3 = x2 + conv module(x2): r becomes dL/dx2 */
    float *dy = sc.a, *s = sc.b, *ds = sc.c, *d2 = sc.wide;
    memset(dy, 0, nd_bytes);
    conformer_drop_bwd(dy, r, B, T * D, drop->p, drop, st + 4);
    swish_forward(s, act->dw_ln, ND);
    memset(ds, 0, nd_bytes);
    linear_backward(ds, g->pw2_w, NULL, dy, s, p->pw2_w, N, D, D);
    float *ddw_ln = sc.a, *ddw = sc.b, *dglu = sc.c;
    memset(ddw_ln, 0, nd_bytes);
    swish_backward(ddw_ln, ds, act->dw_ln, ND);
    memset(ddw, 0, nd_bytes);
    layernorm_backward(ddw, g->dw_ln_w, g->dw_ln_b, ddw_ln, act->dw, p->dw_ln_w, act->dw_mean, act->dw_rstd, N, D);
    memset(dglu, 0, nd_bytes);
    conv1d_backward(dglu, g->dw_w, NULL, ddw, act->glu, p->dw_w, B, T, D, D, K, 1, (K - 1) / 2, D, sc.kernel);
    zero_padded_rows(dglu, key_pad, N, D);
    memset(d2, 0, (size_t)(2 * ND) * sizeof(float));
    glu_backward(d2, dglu, act->pw1, N, D);
    float *dconv_ln = sc.a;
    memset(dconv_ln, 0, nd_bytes);
    linear_backward(dconv_ln, g->pw1_w, NULL, d2, act->conv_ln, p->pw1_w, N, D, 2 * D);
    layernorm_backward(r, g->conv_ln_w, g->conv_ln_b, dconv_ln, act->x2, p->conv_ln_w, act->conv_mean,
                       act->conv_rstd, N, D);

    /* x2 = x1 + drop(linear_out(MHSA(LN(x1)))): r becomes dL/dx1 */
    float *dattn_y = sc.b, *dqkv = sc.wide, *dattn_ln = sc.c;
    memset(dy, 0, nd_bytes);
    conformer_drop_bwd(dy, r, B, T * D, drop->p, drop, st + 3);
    memset(dattn_y, 0, nd_bytes);
    linear_backward(dattn_y, g->out_w, g->out_b, dy, act->attn_y, p->out_w, N, D, D);
    memset(dqkv, 0, (size_t)(3 * ND) * sizeof(float));
    AttentionDropout ad = {drop->p_att, drop->seed, drop->step, st + 2, drop->utt};
    attention_backward(dqkv, dattn_y, act->qkv, act->att, key_pad, B, T, D, H, &ad, sc.kernel);
    memset(dattn_ln, 0, nd_bytes);
    linear_backward(dattn_ln, g->qkv_w, g->qkv_b, dqkv, act->attn_ln, p->qkv_w, N, D, 3 * D);
    layernorm_backward(r, g->attn_ln_w, g->attn_ln_b, dattn_ln, act->x1, p->attn_ln_w, act->attn_mean,
                       act->attn_rstd, N, D);

    /* x1 = x + 0.5 * FFN1(x): r becomes dL/dx */
    conformer_ffn_backward(r, &g->ffn1, r, 0.5f, inp, act->ffn1_ln, act->ffn1_mean, act->ffn1_rstd, act->ffn1_pre,
                           &p->ffn1, B, N, D, F, &sc, drop, st + 0);
    if (dinp) add_inplace(dinp, r, ND);
}

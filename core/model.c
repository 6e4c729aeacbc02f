/* model.c — the speech encoder of core/README.md (The model) as straight lists of layers.h kernel calls:
 * frontend (waveform conv stack + LayerNorm + projection, or normalised, stacked fbank + projection),
 * learned mask embedding, and the transformer encoder (conv positional embedding, post-LN or pre-LN layers,
 * layerdrop) or the conformer encoder (core/conformer.h layers behind the same positional embedding).
 * Forward and backward follow torchaudio.models.wav2vec2 (components.py) operation by operation;
 * backward is forward's list reversed, accumulating into the gradient buffer.
 *
 * Parameters: one flat buffer laid out by the {name, shape} table (params.h) with the Hugging Face
 * transformers names; gradients in a second buffer with the same layout. Initialisation as fairseq:
 *   conv stack weights   kaiming_normal_ (std sqrt(2 / (C_in K))); conv biases PyTorch's default
 *                        U(+-1/sqrt(C_in K)); norms 1 / 0
 *   feature_projection   LayerNorm 1 / 0; projection PyTorch's nn.Linear default U(+-1/sqrt(C_in))
 *                        (fairseq's post_extract_proj is outside init_bert_params)
 *   masked_spec_embed    U(0, 1)
 *   pos_conv             weight_v N(0, 4 / (K D)), bias 0, weight_g = ||weight_v[:, :, k]|| (weight_norm)
 *   encoder Linear       N(0, 0.02), bias 0 (init_bert_params); LayerNorm 1 / 0
 * Activations: one arena sized at creation for (max_B, max_S) and carved into views for each
 * forward's (B, S); every view's size grows with B and S, so any smaller batch fits.
 * Randomness (train only): at dropout site k of layer l, utterance b's (T, C) block draws from the
 * stream (seed, step, hash(s ^ hash(utt[b]))), s = MODEL_STREAM_DROPOUT + 16 l + k, element
 * t * C + c (so the mask of a frame does not depend on the batch position or padding); attention
 * dropout from (seed, step, l, utt[b]) (layers.h); layerdrop of layer l (the whole batch) from
 * (seed, step, MODEL_STREAM_LAYERDROP + l).
 * Must not: allocate after model_create, talk MPI or HDF5, or know about objectives. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gemm.h"
#include "layers.h"
#include "mask.h"
#include "rng.h"

#define MODEL_STREAM_DROPOUT ((uint64_t)1 << 32)
#define MODEL_STREAM_LAYERDROP ((uint64_t)2 << 32)
/* dropout sites: k of layer l; the encoder input uses layer L, the frontend layer L + 1 */
enum { SITE_ATTN_OUT = 0, SITE_FFN_ACT = 1, SITE_FFN_OUT = 2, SITE_INPUT = 3 };

static uint64_t site(int l, int k) { return MODEL_STREAM_DROPOUT + 16 * (uint64_t)l + (uint64_t)k; }

static int64_t i64max(int64_t a, int64_t b) { return a > b ? a : b; }

/* bf16 activations (core/README.md, Precision): the conv stack's outputs and group-normed values are
 * kept in bf16 in a bf16 run, but not beside a per-layer LayerNorm (extractor_mode = layer_norm). */
static int conv_pre_bf16(const ModelConfig *c, int bf16) { return bf16 && c->conv_norm != CONV_NORM_LAYER; }
/* whether conv layer i's GroupNorm and GELU run fused (groupnorm_gelu_*_bf16): kept in bf16 (bpre, which
 * rules out LayerNorm), normed, and not the last layer, whose GELU output (the features) is fp32 */
static int conv_norm_fused(const ModelConfig *c, const ModelActs *a, int bpre, int i) {
    return bpre && a->norm_out[i] && i < c->n_conv - 1;
}

/* ---- frames ------------------------------------------------------------------------------------ */

int64_t model_frames(const ModelConfig *cfg, int64_t n) {
    if (cfg->frontend == FRONTEND_FBANK) return n / cfg->fbank_stack;
    for (int i = 0; i < cfg->n_conv; i++) n = n < cfg->conv_kernel[i] ? 0 : (n - cfg->conv_kernel[i]) / cfg->conv_stride[i] + 1;
    return n;
}

static int frontend_dim(const ModelConfig *c) {
    return c->frontend == FRONTEND_FBANK ? c->fbank_dim * c->fbank_stack : c->conv_dim[c->n_conv - 1];
}

/* Conv stack output lengths of a padded input of S samples. */
static void conv_lengths(const ModelConfig *c, int64_t S, int64_t *Tc) {
    for (int i = 0; i < c->n_conv; i++) {
        S = conv1d_out_len(S, c->conv_kernel[i], c->conv_stride[i], 0);
        KOE_ASSERT(S >= 1);
        Tc[i] = S;
    }
}

/* ---- parameter table ----------------------------------------------------------------------------- */

static void add1(ParamTable *t, const char *name, int64_t n, ParamInit init, float a, float b) {
    int64_t shape[1] = {n};
    params_add(t, name, 1, shape, init, a, b);
}
static void add2(ParamTable *t, const char *name, int64_t n0, int64_t n1, ParamInit init, float a, float b) {
    int64_t shape[2] = {n0, n1};
    params_add(t, name, 2, shape, init, a, b);
}

void model_table_build(const ModelConfig *c, ParamTable *t) {
    char name[PARAM_NAME_LEN];
    const int D = c->D, F = c->F;
    if (c->frontend == FRONTEND_WAVEFORM) {
        int cin = 1;
        for (int i = 0; i < c->n_conv; i++) {
            const int C = c->conv_dim[i], K = c->conv_kernel[i];
            const float fan_in = (float)cin * (float)K;
            int64_t shape[3] = {C, cin, K};
            snprintf(name, sizeof name, "feature_extractor.conv_layers.%d.conv.weight", i);
            params_set_rearranged(t, params_add(t, name, 3, shape, PARAM_INIT_NORMAL, sqrtf(2.0f / fan_in), 0.0f));
            if (c->conv_bias) {
                snprintf(name, sizeof name, "feature_extractor.conv_layers.%d.conv.bias", i);
                add1(t, name, C, PARAM_INIT_UNIFORM, -1.0f / sqrtf(fan_in), 1.0f / sqrtf(fan_in));
            }
            if (c->conv_norm == CONV_NORM_LAYER || i == 0) {
                snprintf(name, sizeof name, "feature_extractor.conv_layers.%d.layer_norm.weight", i);
                add1(t, name, C, PARAM_INIT_ONE, 0, 0);
                snprintf(name, sizeof name, "feature_extractor.conv_layers.%d.layer_norm.bias", i);
                add1(t, name, C, PARAM_INIT_ZERO, 0, 0);
            }
            cin = C;
        }
        add1(t, "feature_projection.layer_norm.weight", cin, PARAM_INIT_ONE, 0, 0);
        add1(t, "feature_projection.layer_norm.bias", cin, PARAM_INIT_ZERO, 0, 0);
    }
    const int Cf = frontend_dim(c);
    const float bound = 1.0f / sqrtf((float)Cf);
    add2(t, "feature_projection.projection.weight", D, Cf, PARAM_INIT_UNIFORM, -bound, bound);
    add1(t, "feature_projection.projection.bias", D, PARAM_INIT_UNIFORM, -bound, bound);
    add1(t, "masked_spec_embed", D, PARAM_INIT_UNIFORM, 0.0f, 1.0f);

    const int K = c->pos_conv_kernel, G = c->pos_conv_groups;
    int64_t vshape[3] = {D, D / G, K}, gshape[3] = {1, 1, K};
    int v = params_add(t, "encoder.pos_conv_embed.conv.weight_v", 3, vshape, PARAM_INIT_NORMAL,
                       sqrtf(4.0f / ((float)K * (float)D)), 0.0f);
    params_set_rearranged(t, v);
    params_set_rearranged(t, params_add_norm_of(t, "encoder.pos_conv_embed.conv.weight_g", 3, gshape, v));
    add1(t, "encoder.pos_conv_embed.conv.bias", D, PARAM_INIT_ZERO, 0, 0);
    add1(t, "encoder.layer_norm.weight", D, PARAM_INIT_ONE, 0, 0);
    add1(t, "encoder.layer_norm.bias", D, PARAM_INIT_ZERO, 0, 0);

    for (int l = 0; l < c->L; l++) {
        if (c->encoder == ENCODER_CONFORMER) {
            ConformerParamSpec spec[CONFORMER_N_PARAMS];
            conformer_layer_param_specs(spec, D, F, c->conformer_kernel);
            for (int j = 0; j < CONFORMER_N_PARAMS; j++) {
                const ConformerParamSpec *s = &spec[j];
                snprintf(name, sizeof name, "encoder.layers.%d.%s", l, s->name);
                ParamInit init = PARAM_INIT_ZERO;
                float a = 0, b = 0;
                switch (s->init) {
                case CONFORMER_INIT_ONES: init = PARAM_INIT_ONE; break;
                case CONFORMER_INIT_ZEROS: init = PARAM_INIT_ZERO; break;
                case CONFORMER_INIT_NORMAL_002: init = PARAM_INIT_NORMAL, a = 0.02f; break;
                case CONFORMER_INIT_CONV_KAIMING:
                    KOE_ASSERT(s->ndim == 3);
                    init = PARAM_INIT_UNIFORM;
                    b = 1.0f / sqrtf((float)(s->shape[1] * s->shape[2]));
                    a = -b;
                    break;
                }
                params_add(t, name, s->ndim, s->shape, init, a, b);
            }
            continue;
        }
        static const char *proj[] = {"q_proj", "k_proj", "v_proj"};
        for (int j = 0; j < 3; j++) { /* q|k|v weights adjacent, then q|k|v biases: one (3D, D) GEMM */
            snprintf(name, sizeof name, "encoder.layers.%d.attention.%s.weight", l, proj[j]);
            add2(t, name, D, D, PARAM_INIT_NORMAL, 0.02f, 0);
        }
        for (int j = 0; j < 3; j++) {
            snprintf(name, sizeof name, "encoder.layers.%d.attention.%s.bias", l, proj[j]);
            add1(t, name, D, PARAM_INIT_ZERO, 0, 0);
        }
        snprintf(name, sizeof name, "encoder.layers.%d.attention.out_proj.weight", l);
        add2(t, name, D, D, PARAM_INIT_NORMAL, 0.02f, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.attention.out_proj.bias", l);
        add1(t, name, D, PARAM_INIT_ZERO, 0, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.layer_norm.weight", l);
        add1(t, name, D, PARAM_INIT_ONE, 0, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.layer_norm.bias", l);
        add1(t, name, D, PARAM_INIT_ZERO, 0, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.feed_forward.intermediate_dense.weight", l);
        add2(t, name, F, D, PARAM_INIT_NORMAL, 0.02f, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.feed_forward.intermediate_dense.bias", l);
        add1(t, name, F, PARAM_INIT_ZERO, 0, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.feed_forward.output_dense.weight", l);
        add2(t, name, D, F, PARAM_INIT_NORMAL, 0.02f, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.feed_forward.output_dense.bias", l);
        add1(t, name, D, PARAM_INIT_ZERO, 0, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.final_layer_norm.weight", l);
        add1(t, name, D, PARAM_INIT_ONE, 0, 0);
        snprintf(name, sizeof name, "encoder.layers.%d.final_layer_norm.bias", l);
        add1(t, name, D, PARAM_INIT_ZERO, 0, 0);
    }
}

static float *view_or_null(const ParamTable *t, float *buf, const char *name) {
    int i = params_find(t, name);
    return i < 0 ? NULL : buf + t->e[i].offset;
}

static void bind_params(const Model *m, float *buf, ModelParams *p) {
    const ModelConfig *c = &m->cfg;
    const ParamTable *t = &m->table;
    char name[PARAM_NAME_LEN];
    if (c->frontend == FRONTEND_WAVEFORM) {
        for (int i = 0; i < c->n_conv; i++) {
            snprintf(name, sizeof name, "feature_extractor.conv_layers.%d.conv.weight", i);
            p->conv_w[i] = params_view(t, buf, name);
            snprintf(name, sizeof name, "feature_extractor.conv_layers.%d.conv.bias", i);
            p->conv_b[i] = view_or_null(t, buf, name);
            snprintf(name, sizeof name, "feature_extractor.conv_layers.%d.layer_norm.weight", i);
            p->norm_w[i] = view_or_null(t, buf, name);
            snprintf(name, sizeof name, "feature_extractor.conv_layers.%d.layer_norm.bias", i);
            p->norm_b[i] = view_or_null(t, buf, name);
        }
        p->fp_ln_w = params_view(t, buf, "feature_projection.layer_norm.weight");
        p->fp_ln_b = params_view(t, buf, "feature_projection.layer_norm.bias");
    }
    p->fp_w = params_view(t, buf, "feature_projection.projection.weight");
    p->fp_b = params_view(t, buf, "feature_projection.projection.bias");
    p->mask_emb = params_view(t, buf, "masked_spec_embed");
    p->pos_g = params_view(t, buf, "encoder.pos_conv_embed.conv.weight_g");
    p->pos_v = params_view(t, buf, "encoder.pos_conv_embed.conv.weight_v");
    p->pos_b = params_view(t, buf, "encoder.pos_conv_embed.conv.bias");
    p->enc_ln_w = params_view(t, buf, "encoder.layer_norm.weight");
    p->enc_ln_b = params_view(t, buf, "encoder.layer_norm.bias");
    for (int l = 0; l < c->L; l++) {
        if (c->encoder == ENCODER_CONFORMER) {
            ConformerParamSpec spec[CONFORMER_N_PARAMS];
            conformer_layer_param_specs(spec, c->D, c->F, c->conformer_kernel);
            snprintf(name, sizeof name, "encoder.layers.%d.%s", l, spec[0].name);
            conformer_layer_bind(&p->clayer[l], params_view(t, buf, name), c->D, c->F, c->conformer_kernel);
            continue;
        }
        TransformerLayerParams *q = &p->layer[l];
#define V(field, suffix)                                               \
    snprintf(name, sizeof name, "encoder.layers.%d.%s", l, suffix); \
    q->field = params_view(t, buf, name)
        V(qkv_w, "attention.q_proj.weight");
        V(qkv_b, "attention.q_proj.bias");
        V(out_w, "attention.out_proj.weight");
        V(out_b, "attention.out_proj.bias");
        V(ln_w, "layer_norm.weight");
        V(ln_b, "layer_norm.bias");
        V(fc1_w, "feed_forward.intermediate_dense.weight");
        V(fc1_b, "feed_forward.intermediate_dense.bias");
        V(fc2_w, "feed_forward.output_dense.weight");
        V(fc2_b, "feed_forward.output_dense.bias");
        V(fln_w, "final_layer_norm.weight");
        V(fln_b, "final_layer_norm.bias");
#undef V
        /* the packed (3D, D) view relies on the table order */
        snprintf(name, sizeof name, "encoder.layers.%d.attention.v_proj.weight", l);
        KOE_ASSERT(params_view(t, buf, name) == q->qkv_w + 2 * (int64_t)c->D * c->D);
        snprintf(name, sizeof name, "encoder.layers.%d.attention.v_proj.bias", l);
        KOE_ASSERT(params_view(t, buf, name) == q->qkv_b + 2 * (int64_t)c->D);
    }
}

/* ---- activation arena ------------------------------------------------------------------------------ */

/* Takes every view for a batch of B utterances of S input samples/frames from cv (measuring, or binding
 * the arena sized for the worst batch; common.h). */
static void carve(Model *m, Arena *cv, int B, int64_t S) {
    const ModelConfig *c = &m->cfg;
    ModelActs *a = &m->a;
    const int D = c->D, F = c->F, H = c->H, K = c->pos_conv_kernel, G = c->pos_conv_groups;
    int64_t Tc[MODEL_MAX_CONV];
    int64_t T, conv_scratch = 0, conv_max = 0;
    if (c->frontend == FRONTEND_WAVEFORM) {
        const int bpre = conv_pre_bf16(c, m->arena_bf16);
        conv_lengths(c, S, Tc);
        int64_t Tin = S;
        int cin = 1;
        for (int i = 0; i < c->n_conv; i++) {
            const int64_t n = (int64_t)B * Tc[i] * c->conv_dim[i];
            const int normed = c->conv_norm == CONV_NORM_LAYER || i == 0;
            a->conv_out[i] = arena_take(cv, bpre ? (n + 1) / 2 : n);
            a->norm_out[i] = normed ? arena_take(cv, bpre ? (n + 1) / 2 : n) : NULL;
            const int64_t stats = c->conv_norm == CONV_NORM_GROUP ? (int64_t)B * c->conv_dim[i] : (int64_t)B * Tc[i];
            a->norm_mean[i] = normed ? arena_take(cv, stats) : NULL;
            a->norm_rstd[i] = normed ? arena_take(cv, stats) : NULL;
            a->conv_act[i] = arena_take(cv, m->arena_bf16 && i < c->n_conv - 1 ? (n + 1) / 2 : n);
            conv_scratch = i64max(conv_scratch, conv1d_scratch_floats(B, Tin, cin, c->conv_dim[i], c->conv_kernel[i],
                                                                      c->conv_stride[i], 0, 1));
            conv_max = i64max(conv_max, n);
            Tin = Tc[i];
            cin = c->conv_dim[i];
        }
        T = Tc[c->n_conv - 1];
        a->stacked = NULL;
        a->fp_ln = arena_take(cv, (int64_t)B * T * cin);
        a->fp_mean = arena_take(cv, (int64_t)B * T);
        a->fp_rstd = arena_take(cv, (int64_t)B * T);
    } else {
        T = S / c->fbank_stack;
        KOE_ASSERT(T >= 1);
        a->stacked = arena_take(cv, (int64_t)B * T * frontend_dim(c));
        a->fp_ln = a->fp_mean = a->fp_rstd = NULL;
    }
    const int64_t N = (int64_t)B * T, ND = N * D;
    const int64_t Tp = conv1d_out_len(T, K, 1, K / 2);
    a->x_in = arena_take(cv, ND);
    a->pos_w = arena_take(cv, (int64_t)D * (D / G) * K);
    a->pos_norm = arena_take(cv, K);
    a->pos_raw = arena_take(cv, (int64_t)B * Tp * D);
    a->x0 = arena_take(cv, ND);
    const int post_ln = !c->layer_norm_first;
    a->x0n = post_ln ? arena_take(cv, ND) : NULL;
    a->x0_mean = post_ln ? arena_take(cv, N) : NULL;
    a->x0_rstd = post_ln ? arena_take(cv, N) : NULL;
    a->enc_in = arena_take(cv, ND);
    for (int l = 0; l < c->L; l++) {
        if (c->encoder == ENCODER_CONFORMER) {
            conformer_layer_act_carve(&a->clayer[l], cv, B, T, D, F, H);
        } else {
            TransformerLayerAct *y = &a->layer[l];
            y->n1 = post_ln ? NULL : arena_take(cv, ND);
            y->ln_mean = arena_take(cv, N);
            y->ln_rstd = arena_take(cv, N);
            y->qkv = arena_take(cv, m->arena_bf16 ? (3 * ND + 1) / 2 : 3 * ND);
            y->att = arena_take(cv, (int64_t)B * H * T * T);
            y->attn = arena_take(cv, ND);
            y->r1 = arena_take(cv, ND);
            y->n2 = arena_take(cv, ND);
            y->fln_mean = arena_take(cv, N);
            y->fln_rstd = arena_take(cv, N);
            y->h = arena_take(cv, m->arena_bf16 ? (N * F + 1) / 2 : N * F);
            y->g = arena_take(cv, m->arena_bf16 ? (N * F + 1) / 2 : N * F);
            y->r2 = post_ln ? arena_take(cv, ND) : NULL;
        }
        a->layer_out[l] = arena_take(cv, ND);
    }
    a->out_mean = post_ln ? NULL : arena_take(cv, N);
    a->out_rstd = post_ln ? NULL : arena_take(cv, N);
    a->out = post_ln ? (c->L ? a->layer_out[c->L - 1] : a->enc_in) : arena_take(cv, ND);

    /* scratch, shared by forward and backward */
    conv_scratch = i64max(conv_scratch, conv1d_scratch_floats(B, T, D, D, K, 1, K / 2, G));
    conv_scratch = i64max(conv_scratch, weightnorm_scratch_floats(K)); /* the positional conv's, in turn */
    m->s_conv = arena_take(cv, conv_scratch);
    int64_t att_scratch = attention_scratch_floats(B, T, D, H);
    if (c->encoder == ENCODER_CONFORMER)
        att_scratch = i64max(att_scratch, conformer_layer_scratch_floats(B, T, D, F, H, c->conformer_kernel));
    m->s_att = arena_take(cv, att_scratch);
    const int64_t dwidth = i64max(ND, N * frontend_dim(c));
    for (int k = 0; k < 4; k++) m->s_d[k] = arena_take(cv, dwidth);
    for (int k = 0; k < 2; k++) m->s_f[k] = arena_take(cv, N * F);
    m->s_qkv = arena_take(cv, 3 * ND);
    for (int k = 0; k < 2; k++) m->s_c[k] = arena_take(cv, conv_max);
    m->s_posw = arena_take(cv, (int64_t)D * (D / G) * K);
    m->s_posraw = arena_take(cv, (int64_t)B * Tp * D);
    if (cv->base) {
        m->T = T;
        if (c->frontend == FRONTEND_WAVEFORM) memcpy(m->Tc, Tc, sizeof Tc);
    }
}

/* ---- create / free / init ------------------------------------------------------------------------ */

Model *model_create(const ModelConfig *cfg, int max_B, int64_t max_S) {
    ParamTable t;
    params_table_init(&t);
    model_table_build(cfg, &t);
    return model_create_with_table(cfg, t, max_B, max_S);
}

Model *model_create_with_table(const ModelConfig *cfg, ParamTable table, int max_B, int64_t max_S) {
    return model_create_budget(cfg, table, max_B, max_S, (int64_t)max_B * max_S);
}

Model *model_create_budget(const ModelConfig *cfg, ParamTable table, int max_B, int64_t max_S, int64_t max_tokens) {
    KOE_ASSERT(max_tokens >= max_S);
    KOE_ASSERT(max_B >= 1 && cfg->D % cfg->H == 0 && cfg->D % cfg->pos_conv_groups == 0);
    KOE_ASSERT(cfg->frontend == FRONTEND_FBANK || (cfg->n_conv >= 1 && cfg->n_conv <= MODEL_MAX_CONV));
    KOE_ASSERT(model_frames(cfg, max_S) >= 1);
    Model *m = koe_calloc(1, sizeof *m);
    m->cfg = *cfg;
    m->table = table;
    m->params = koe_calloc((size_t)m->table.total, sizeof(float));
    m->grads = koe_calloc((size_t)m->table.total, sizeof(float));
    /* both filled whole before the first step (a checkpoint's /model read, or the init; the first
     * gradients), and kept: 2 MiB pages, not a fault per 4 KiB (common.h) */
    koe_advise_huge(m->params, (size_t)m->table.total * sizeof(float));
    koe_advise_huge(m->grads, (size_t)m->table.total * sizeof(float));
    const int L = cfg->L;
    if (cfg->encoder == ENCODER_CONFORMER) {
        m->p.clayer = koe_calloc((size_t)(L ? L : 1), sizeof(ConformerLayerParams));
        m->g.clayer = koe_calloc((size_t)(L ? L : 1), sizeof(ConformerLayerParams));
        m->a.clayer = koe_calloc((size_t)(L ? L : 1), sizeof(ConformerLayerAct));
    } else {
        m->p.layer = koe_calloc((size_t)(L ? L : 1), sizeof(TransformerLayerParams));
        m->g.layer = koe_calloc((size_t)(L ? L : 1), sizeof(TransformerLayerParams));
        m->a.layer = koe_calloc((size_t)(L ? L : 1), sizeof(TransformerLayerAct));
    }
    m->a.layer_out = koe_calloc((size_t)(L ? L : 1), sizeof(float *));
    bind_params(m, m->params, &m->p);
    bind_params(m, m->grads, &m->g);
    m->max_B = max_B;
    m->max_S = max_S;
    /* The worst batch under the budget: per-frame activations grow with B*S, attention's (B, H, T, T)
     * probabilities with B*T^2, so every batch count B with S = min(max_S, max_tokens / B) is tried. */
    m->arena_floats = 0;
    m->arena_bf16 = gemm_precision() == GEMM_BF16;
    for (int B = 1; B <= max_B; B++) {
        int64_t S = max_tokens / B < max_S ? max_tokens / B : max_S;
        if (model_frames(cfg, S) < 1) break;
        Arena cv = arena_measure();
        carve(m, &cv, B, S);
        if (cv.used > m->arena_floats) m->arena_floats = cv.used;
    }
    m->max_tokens = max_tokens;
    m->arena = koe_malloc((size_t)m->arena_floats * sizeof(float));
    koe_advise_huge(m->arena, (size_t)m->arena_floats * sizeof(float)); /* a carve uses a prefix (core/README.md) */
    if (cfg->frontend == FRONTEND_FBANK) m->fbank_in = koe_malloc((size_t)(max_tokens * cfg->fbank_dim) * sizeof(float));
    if (cfg->frontend == FRONTEND_WAVEFORM && cfg->normalize_waveform)
        m->wave_in = koe_malloc((size_t)max_tokens * sizeof(float));
    const int64_t max_T = model_frames(cfg, max_S);
    m->key_pad = koe_calloc((size_t)(max_B * max_T), 1);
    m->frames = koe_calloc((size_t)max_B, sizeof(int64_t));
    m->skipped = koe_calloc((size_t)(L ? L : 1), sizeof(int));
    /* where each layer's tensors start; the encoder's own tensors are the first ones of the table */
    m->layer_first = koe_calloc((size_t)L + 1, sizeof(int64_t));
    ParamTable own;
    params_table_init(&own);
    model_table_build(cfg, &own);
    const ParamEntry *last = &own.e[own.n - 1];
    m->layer_first[L] = last->offset + last->numel;
    for (int l = 0; l < L; l++) {
        char prefix[48];
        const int n = snprintf(prefix, sizeof prefix, "encoder.layers.%d.", l);
        m->layer_first[l] = m->layer_first[L];
        for (int i = 0; i < own.n; i++)
            if (!strncmp(own.e[i].name, prefix, (size_t)n) && own.e[i].offset < m->layer_first[l])
                m->layer_first[l] = own.e[i].offset;
    }
    params_table_free(&own);
    return m;
}

void model_free(Model *m) {
    if (!m) return;
    params_table_free(&m->table);
    free(m->layer_first);
    free(m->params);
    free(m->grads);
    free(m->p.layer);
    free(m->g.layer);
    free(m->a.layer);
    free(m->p.clayer);
    free(m->g.clayer);
    free(m->a.clayer);
    free(m->a.layer_out);
    free(m->arena);
    free(m->fbank_in);
    free(m->wave_in);
    free(m->key_pad);
    free(m->frames);
    free(m->skipped);
    free(m);
}

void model_init_params(Model *m, uint64_t seed) { params_init(&m->table, m->params, seed); }

void model_zero_grad(Model *m) { memset(m->grads, 0, (size_t)m->table.total * sizeof(float)); }

const float *model_hidden(const Model *m, int i) {
    KOE_ASSERT(i >= 0 && i <= m->cfg.L);
    return i == 0 ? m->a.enc_in : m->a.layer_out[i - 1];
}

/* ---- small helpers ------------------------------------------------------------------------------- */

const char *const model_prof_names[PROF_N] = {"conv stack", "features+proj", "pos conv", "qkv proj", "attention",
                                              "out proj", "ffn", "norms+resid", "conformer"};

void model_profile_reset(Model *m) { memset(m->prof, 0, sizeof m->prof); }

/* Charge the time since *t to section k of direction dir, and restart the clock. */
static void prof(Model *m, int dir, ModelProfSection k, double *t) {
    const double now = koe_now();
    m->prof[dir][k] += now - *t;
    *t = now;
}

/* The dropout stream of site s for utterance b (see the file header). */
static uint64_t utt_site(const Model *m, int b, uint64_t s) {
    const uint64_t u = m->run.utt ? (uint64_t)m->run.utt[b] : (uint64_t)b;
    return koe_hash64(s ^ koe_hash64(u));
}
/* out = inp (B utterances of n / B values), or its inverted dropout when p > 0 (out may equal inp). */
static void drop_fwd(const Model *m, float *out, const float *inp, int64_t n, float p, uint64_t s) {
    const int64_t nb = n / m->B;
    if (p > 0)
        for (int b = 0; b < m->B; b++)
            dropout_forward(out + b * nb, inp + b * nb, nb, p, m->run.seed, m->run.step, utt_site(m, b, s));
    else if (out != inp) memcpy(out, inp, (size_t)n * sizeof *out);
}
/* dinp += dropout'(dout) */
static void drop_bwd(const Model *m, float *dinp, const float *dout, int64_t n, float p, uint64_t s) {
    const int64_t nb = n / m->B;
    if (p > 0)
        for (int b = 0; b < m->B; b++)
            dropout_backward(dinp + b * nb, dout + b * nb, nb, p, m->run.seed, m->run.step, utt_site(m, b, s));
    else add_inplace(dinp, dout, n);
}
/* A gradient buffer cleared for the accumulating backward kernels, split over the threads from 128 Ki
 * floats (one thread alone would leave the other idle: 1.6% of a Base bf16 step's samples). */
static void zero(float *x, int64_t n) {
    const int64_t chunk = (int64_t)1 << 16;
#pragma omp parallel for schedule(static) if (n >= 2 * chunk)
    for (int64_t i = 0; i < n; i += chunk) memset(x + i, 0, (size_t)(n - i < chunk ? n - i : chunk) * sizeof *x);
}

/* ---- transformer layer --------------------------------------------------------------------------- */

static void transformer_layer_forward(Model *m, int l, float *out, const float *x, float p_drop, float p_act,
                                      float p_att) {
    const ModelConfig *c = &m->cfg;
    const TransformerLayerParams *p = &m->p.layer[l];
    TransformerLayerAct *y = &m->a.layer[l];
    const int B = m->B, D = c->D, F = c->F, H = c->H;
    const int64_t T = m->T, N = (int64_t)B * T, ND = N * D;
    const float eps = c->layer_norm_eps;
    const ModelRun *r = &m->run;
    float *tmp = m->s_d[0];
    float *tmpf = m->s_f[0];
    AttentionDropout ad = {p_att, r->seed, r->step, (uint64_t)l, r->utt};
    const float *att_in = x;
    double t = koe_now();
    if (c->layer_norm_first) {
        layernorm_forward(y->n1, y->ln_mean, y->ln_rstd, x, p->ln_w, p->ln_b, N, D, eps);
        att_in = y->n1;
        prof(m, 0, PROF_NORMS, &t);
    }
    if (m->a.acts_bf16) { /* q|k|v kept in bf16: through s_qkv, free until backward */
        linear_forward(m->s_qkv, att_in, p->qkv_w, p->qkv_b, N, D, 3 * D);
        bf16_from_f32((uint16_t *)y->qkv, m->s_qkv, 3 * ND);
        prof(m, 0, PROF_QKV, &t);
        attention_forward_bf16qkv(y->attn, y->att, (const uint16_t *)y->qkv, m->key_pad, B, T, D, H, &ad, m->s_att);
    } else {
        linear_forward(y->qkv, att_in, p->qkv_w, p->qkv_b, N, D, 3 * D);
        prof(m, 0, PROF_QKV, &t);
        attention_forward(y->attn, y->att, y->qkv, m->key_pad, B, T, D, H, &ad, m->s_att);
    }
    prof(m, 0, PROF_ATTENTION, &t);
    linear_forward(tmp, y->attn, p->out_w, p->out_b, N, D, D);
    prof(m, 0, PROF_OUTPROJ, &t);
    drop_fwd(m, tmp, tmp, ND, p_drop, site(l, SITE_ATTN_OUT));
    add_vectors(y->r1, x, tmp, ND);
    if (c->layer_norm_first) layernorm_forward(y->n2, y->fln_mean, y->fln_rstd, y->r1, p->fln_w, p->fln_b, N, D, eps);
    else layernorm_forward(y->n2, y->ln_mean, y->ln_rstd, y->r1, p->ln_w, p->ln_b, N, D, eps);
    prof(m, 0, PROF_NORMS, &t);
    /* g, output_dense's input, is kept as it enters the GEMM: after the dropout, in bf16 in a bf16 run;
     * there h is kept in bf16 too, and the GELU reads the values kept (h through s_f[1], g through
     * s_f[0] = tmpf when there is a dropout between: both free until backward) */
    const int64_t NF = N * F;
    if (!m->a.acts_bf16) {
        linear_forward(y->h, y->n2, p->fc1_w, p->fc1_b, N, D, F);
        gelu_forward(y->g, y->h, NF);
        drop_fwd(m, y->g, y->g, NF, p_act, site(l, SITE_FFN_ACT));
        linear_forward(tmp, y->g, p->fc2_w, p->fc2_b, N, F, D);
    } else {
        linear_forward(m->s_f[1], y->n2, p->fc1_w, p->fc1_b, N, D, F);
        if (p_act > 0) {
            bf16_round_f32((uint16_t *)y->h, m->s_f[1], NF);
            gelu_forward(tmpf, m->s_f[1], NF);
            drop_fwd(m, tmpf, tmpf, NF, p_act, site(l, SITE_FFN_ACT));
            bf16_from_f32((uint16_t *)y->g, tmpf, NF);
        } else {
            gelu_forward_bf16((uint16_t *)y->h, (uint16_t *)y->g, m->s_f[1], NF);
        }
        linear_forward_bf16in(tmp, (const uint16_t *)y->g, p->fc2_w, p->fc2_b, N, F, D);
    }
    prof(m, 0, PROF_FFN, &t);
    drop_fwd(m, tmp, tmp, ND, p_drop, site(l, SITE_FFN_OUT));
    if (c->layer_norm_first) {
        add_vectors(out, y->r1, tmp, ND);
    } else {
        add_vectors(y->r2, y->n2, tmp, ND);
        layernorm_forward(out, y->fln_mean, y->fln_rstd, y->r2, p->fln_w, p->fln_b, N, D, eps);
    }
    prof(m, 0, PROF_NORMS, &t);
}

/* dx += d layer / d x given dy; dy (s_d[3]'s caller buffer) may be overwritten. Uses s_d[0..2], s_f, s_qkv. */
static void transformer_layer_backward(Model *m, int l, float *dx, const float *dy, const float *x, float p_drop,
                                       float p_act, float p_att) {
    const ModelConfig *c = &m->cfg;
    const TransformerLayerParams *p = &m->p.layer[l];
    const TransformerLayerParams *gp = &m->g.layer[l];
    const TransformerLayerAct *y = &m->a.layer[l];
    const int B = m->B, D = c->D, F = c->F, H = c->H;
    const int64_t T = m->T, N = (int64_t)B * T, ND = N * D, NF = N * F;
    const ModelRun *r = &m->run;
    float *d1 = m->s_d[0], *d2 = m->s_d[1], *d3 = m->s_d[2], *f1 = m->s_f[0], *f2 = m->s_f[1], *dqkv = m->s_qkv;
    AttentionDropout ad = {p_att, r->seed, r->step, (uint64_t)l, r->utt};
    const int pre = c->layer_norm_first;

    double t = koe_now();
    /* d of the FFN residual sum (pre-LN: the output itself; post-LN: through final_layer_norm) */
    const float *dsum = dy;
    if (!pre) {
        zero(d1, ND);
        layernorm_backward(d1, gp->fln_w, gp->fln_b, dy, y->r2, p->fln_w, y->fln_mean, y->fln_rstd, N, D);
        dsum = d1; /* = d r2 = d n2 (residual part) = d FFN output */
    }
    /* FFN: output dropout, output_dense, activation dropout, GELU, intermediate_dense */
    zero(d2, ND);
    drop_bwd(m, d2, dsum, ND, p_drop, site(l, SITE_FFN_OUT));
    prof(m, 1, PROF_NORMS, &t);
    zero(f2, NF);
    if (m->a.acts_bf16)
        linear_backward_bf16in(f2, gp->fc2_w, gp->fc2_b, d2, (const uint16_t *)y->g, p->fc2_w, N, F, D);
    else
        linear_backward(f2, gp->fc2_w, gp->fc2_b, d2, y->g, p->fc2_w, N, F, D);
    float *dg = f2, *dh = f1;
    if (p_act > 0) {
        zero(f1, NF);
        drop_bwd(m, f1, f2, NF, p_act, site(l, SITE_FFN_ACT));
        dg = f1;
        dh = f2;
    }
    /* d n2: post-LN it also gets the residual (d1 already holds it); pre-LN starts from zero */
    float *dn2 = d1;
    if (pre) zero(dn2, ND);
    if (m->a.acts_bf16) { /* d h, only intermediate_dense's dout, written in bf16 as its GEMMs read it */
        gelu_backward_bf16((uint16_t *)dh, dg, (const uint16_t *)y->h, NF);
        linear_backward_bf16dout(dn2, gp->fc1_w, gp->fc1_b, (const uint16_t *)dh, y->n2, p->fc1_w, N, D, F);
    } else { /* dg, read no more, becomes d h */
        gelu_backward_inplace(dg, y->h, NF);
        linear_backward(dn2, gp->fc1_w, gp->fc1_b, dg, y->n2, p->fc1_w, N, D, F);
    }
    prof(m, 1, PROF_FFN, &t);
    /* d r1 into d3 */
    float *dr1 = d3;
    if (pre) {
        memcpy(dr1, dy, (size_t)ND * sizeof *dr1); /* residual */
        layernorm_backward(dr1, gp->fln_w, gp->fln_b, dn2, y->r1, p->fln_w, y->fln_mean, y->fln_rstd, N, D);
    } else {
        zero(dr1, ND);
        layernorm_backward(dr1, gp->ln_w, gp->ln_b, dn2, y->r1, p->ln_w, y->ln_mean, y->ln_rstd, N, D);
    }
    /* attention branch: output dropout, out_proj, attention, q|k|v projection */
    add_inplace(dx, dr1, ND); /* residual */
    zero(d2, ND);
    drop_bwd(m, d2, dr1, ND, p_drop, site(l, SITE_ATTN_OUT));
    zero(d1, ND);
    prof(m, 1, PROF_NORMS, &t);
    linear_backward(d1, gp->out_w, gp->out_b, d2, y->attn, p->out_w, N, D, D);
    prof(m, 1, PROF_OUTPROJ, &t);
    zero(dqkv, 3 * ND);
    if (m->a.acts_bf16)
        attention_backward_bf16qkv(dqkv, d1, (const uint16_t *)y->qkv, y->att, m->key_pad, B, T, D, H, &ad, m->s_att);
    else
        attention_backward(dqkv, d1, y->qkv, y->att, m->key_pad, B, T, D, H, &ad, m->s_att);
    prof(m, 1, PROF_ATTENTION, &t);
    if (pre) {
        zero(d2, ND);
        linear_backward(d2, gp->qkv_w, gp->qkv_b, dqkv, y->n1, p->qkv_w, N, D, 3 * D);
        prof(m, 1, PROF_QKV, &t);
        layernorm_backward(dx, gp->ln_w, gp->ln_b, d2, x, p->ln_w, y->ln_mean, y->ln_rstd, N, D);
        prof(m, 1, PROF_NORMS, &t);
    } else {
        linear_backward(dx, gp->qkv_w, gp->qkv_b, dqkv, x, p->qkv_w, N, D, 3 * D);
        prof(m, 1, PROF_QKV, &t);
    }
}

/* ---- forward ------------------------------------------------------------------------------------- */

/* Conv layer i's norm (where it has one) and GELU, unfused, on its conv output co (n values; no is
 * where the norm writes its output, s_c[0] in a bf16 run): what each layer keeps in bf16 in a bf16 run
 * is rounded here. */
static void conv_norm_gelu_forward(Model *m, int i, float *co, float *no, int64_t n) {
    const ModelConfig *c = &m->cfg;
    ModelActs *a = &m->a;
    const int bf = a->acts_bf16, bpre = conv_pre_bf16(c, bf), last = i == c->n_conv - 1;
    const int64_t Ti = m->Tc[i];
    float *pre = co;
    uint16_t *kept = bpre ? (uint16_t *)a->conv_out[i] : NULL; /* where pre is kept in bf16 */
    if (a->norm_out[i]) {
        if (kept) bf16_round_f32(kept, co, n);
        if (c->conv_norm == CONV_NORM_GROUP)
            groupnorm_forward(no, a->norm_mean[i], a->norm_rstd[i], co, m->p.norm_w[i], m->p.norm_b[i], m->B, Ti,
                              c->conv_dim[i], c->layer_norm_eps);
        else
            layernorm_forward(no, a->norm_mean[i], a->norm_rstd[i], co, m->p.norm_w[i], m->p.norm_b[i],
                              (int64_t)m->B * Ti, c->conv_dim[i], c->layer_norm_eps);
        pre = no;
        kept = bpre ? (uint16_t *)a->norm_out[i] : NULL;
    }
    /* in bf16 the GELU outputs but the last (the features) only feed the next conv: kept in bf16 */
    if (kept && !last) {
        gelu_forward_bf16(kept, (uint16_t *)a->conv_act[i], pre, n);
    } else if (bf && !last) { /* through s_c[0], free until backward: gelu_forward's own bits */
        gelu_forward(m->s_c[0], pre, n);
        bf16_from_f32((uint16_t *)a->conv_act[i], m->s_c[0], n);
    } else {
        if (kept) bf16_round_f32(kept, pre, n);
        gelu_forward(a->conv_act[i], pre, n);
    }
}

static void frontend_forward(Model *m, const float *inp, const int64_t *in_len, float p_in) {
    const ModelConfig *c = &m->cfg;
    ModelActs *a = &m->a;
    const int B = m->B, D = c->D;
    const int64_t T = m->T, N = (int64_t)B * T;
    const float eps = c->layer_norm_eps;
    double t = koe_now();
    for (int b = 0; b < B; b++) {
        KOE_ASSERT(in_len[b] >= 0 && in_len[b] <= m->S);
        m->frames[b] = model_frames(c, in_len[b]);
        KOE_ASSERT(m->frames[b] <= T);
    }
    if (c->frontend == FRONTEND_WAVEFORM) {
        const int bf = a->acts_bf16, bpre = conv_pre_bf16(c, bf); /* bf16 activations */
        const float *x = inp; /* (B, S, 1) */
        int64_t Tin = m->S;
        int cin = 1;
        for (int i = 0; i < c->n_conv; i++) {
            const int C = c->conv_dim[i];
            const int64_t Ti = m->Tc[i], n = (int64_t)B * Ti * C;
            /* bpre: the conv output and the group-normed values are computed in s_c[1] and s_c[0] (free
             * until backward), kept rounded to bf16, and read as kept */
            float *co = bpre ? m->s_c[1] : a->conv_out[i], *no = bpre ? m->s_c[0] : a->norm_out[i];
            if (bf && i > 0)
                conv1d_forward_bf16in(co, (const uint16_t *)x, m->p.conv_w[i], m->p.conv_b[i], B, Tin, cin, C,
                                      c->conv_kernel[i], c->conv_stride[i], 0, 1, m->s_conv);
            else
                conv1d_forward(co, x, m->p.conv_w[i], m->p.conv_b[i], B, Tin, cin, C, c->conv_kernel[i],
                               c->conv_stride[i], 0, 1, m->s_conv);
            if (conv_norm_fused(c, a, bpre, i))
                groupnorm_gelu_forward_bf16((uint16_t *)a->conv_out[i], (uint16_t *)a->norm_out[i],
                                            (uint16_t *)a->conv_act[i], a->norm_mean[i], a->norm_rstd[i], co,
                                            m->p.norm_w[i], m->p.norm_b[i], B, Ti, C, eps);
            else
                conv_norm_gelu_forward(m, i, co, no, n);
            x = a->conv_act[i];
            Tin = Ti;
            cin = C;
        }
        prof(m, 0, PROF_CONV, &t);
        /* feature penalty over valid frames */
        double s = 0;
        int64_t cnt = 0;
        for (int b = 0; b < B; b++) {
            const float *f = x + (int64_t)b * T * cin;
            const int64_t n = m->frames[b] * cin;
            for (int64_t i = 0; i < n; i++) s += (double)f[i] * f[i];
            cnt += n;
        }
        m->feature_pen = cnt ? (float)(s / (double)cnt) : 0.0f;
        m->feature_pen_sum = s;
        m->feature_pen_count = cnt;
        layernorm_forward(a->fp_ln, a->fp_mean, a->fp_rstd, x, m->p.fp_ln_w, m->p.fp_ln_b, N, cin, eps);
        linear_forward(a->x_in, a->fp_ln, m->p.fp_w, m->p.fp_b, N, cin, D);
    } else {
        const int Cs = frontend_dim(c);
        for (int b = 0; b < B; b++) /* the first T*stack frames of each utterance, rows concatenated */
            memcpy(a->stacked + (int64_t)b * T * Cs, inp + (int64_t)b * m->S * c->fbank_dim,
                   (size_t)(T * Cs) * sizeof(float));
        m->feature_pen = 0.0f;
        m->feature_pen_sum = 0;
        m->feature_pen_count = 0;
        linear_forward(a->x_in, a->stacked, m->p.fp_w, m->p.fp_b, N, Cs, D);
    }
    drop_fwd(m, a->x_in, a->x_in, N * D, p_in, site(c->L + 1, SITE_INPUT));
    mask_embed_forward(a->x_in, m->mask, m->p.mask_emb, N, D);
    for (int b = 0; b < B; b++)
        for (int64_t f = 0; f < T; f++) {
            const int pad = f >= m->frames[b];
            m->key_pad[(int64_t)b * T + f] = (uint8_t)pad;
            if (pad) zero(a->x_in + ((int64_t)b * T + f) * D, D);
        }
    prof(m, 0, PROF_FEATURES, &t);
}

void model_fbank_normalize(float *x, const int64_t *frames, int B, int64_t F, int E) {
    for (int b = 0; b < B; b++) {
        const int64_t n = frames[b];
        KOE_ASSERT(n >= 0 && n <= F);
        float *u = x + (int64_t)b * F * E;
        if (n > 0) {
#pragma omp parallel for schedule(static)
            for (int e = 0; e < E; e++) {
                double s = 0.0;
                for (int64_t t = 0; t < n; t++) s += u[t * E + e];
                const double mean = s / (double)n;
                double ss = 0.0; /* two passes: no cancellation for large log-energies */
                for (int64_t t = 0; t < n; t++) {
                    const double d = u[t * E + e] - mean;
                    ss += d * d;
                }
                const double inv = 1.0 / sqrt(ss / (double)n + MODEL_FBANK_NORM_EPS);
                for (int64_t t = 0; t < n; t++) u[t * E + e] = (float)((u[t * E + e] - mean) * inv);
            }
        }
        memset(u + n * E, 0, (size_t)((F - n) * E) * sizeof(float));
    }
}

float *model_fbank_input(Model *m, const float *feats, const int64_t *frames, int B, int64_t F) {
    const ModelConfig *c = &m->cfg;
    const int E = c->fbank_dim;
    KOE_ASSERT(c->frontend == FRONTEND_FBANK && B >= 1 && (int64_t)B * F <= m->max_tokens);
    for (int b = 0; b < B; b++) {
        KOE_ASSERT(frames[b] >= 0 && frames[b] <= F);
        float *u = m->fbank_in + (int64_t)b * F * E;
        memcpy(u, feats + (int64_t)b * F * E, (size_t)(frames[b] * E) * sizeof(float));
        zero(u + frames[b] * E, (F - frames[b]) * E);
    }
    if (c->fbank_norm == FBANK_NORM_UTTERANCE) model_fbank_normalize(m->fbank_in, frames, B, F, E);
    return m->fbank_in;
}

/* normalize_waveform: wave (B, S) into m->wave_in, each utterance's valid samples to zero mean and
 * unit variance as transformers' Wav2Vec2FeatureExtractor does ((x - mean) / sqrt(var + 1e-7), the
 * variance over the valid samples), padding zero. Returns m->wave_in. */
static const float *waveform_input(Model *m, const float *wave, const int64_t *len, int B, int64_t S) {
    KOE_ASSERT((int64_t)B * S <= m->max_tokens);
    for (int b = 0; b < B; b++) {
        const int64_t n = len[b];
        KOE_ASSERT(n >= 0 && n <= S);
        const float *x = wave + (int64_t)b * S;
        float *u = m->wave_in + (int64_t)b * S;
        double sum = 0.0, ss = 0.0;
        for (int64_t t = 0; t < n; t++) sum += x[t];
        const double mean = n ? sum / (double)n : 0.0;
        for (int64_t t = 0; t < n; t++) ss += (x[t] - mean) * (x[t] - mean); /* two passes, as for fbank */
        const double inv = 1.0 / sqrt((n ? ss / (double)n : 0.0) + MODEL_WAVE_NORM_EPS);
        for (int64_t t = 0; t < n; t++) u[t] = (float)((x[t] - mean) * inv);
        zero(u + n, S - n);
    }
    return m->wave_in;
}

void model_forward(Model *m, const float *inp, const int64_t *in_len, int B, int64_t S, const uint8_t *mask,
                   const ModelRun *run) {
    const ModelConfig *c = &m->cfg;
    KOE_ASSERT(B >= 1 && B <= m->max_B && S <= m->max_S);
    if (c->frontend == FRONTEND_FBANK && inp != m->fbank_in) inp = model_fbank_input(m, inp, in_len, B, S);
    if (c->frontend == FRONTEND_WAVEFORM && c->normalize_waveform) inp = waveform_input(m, inp, in_len, B, S);
    m->B = B;
    m->S = S;
    m->inp = inp;
    m->mask = mask;
    m->run = *run;
    KOE_ASSERT((int64_t)B * S <= m->max_tokens);
    Arena cv = arena_over(m->arena, m->arena_floats);
    carve(m, &cv, B, S);
    ModelActs *a = &m->a;
    /* in bf16, activations that are only GEMM operands are kept in bf16 (core/README.md, Precision) */
    a->acts_bf16 = gemm_precision() == GEMM_BF16;
    if (m->arena_bf16 && !a->acts_bf16)
        koe_fatal(KOE_EXIT_INTERNAL, "internal error: a model created for bf16 activations ran a forward in fp32");
    const int D = c->D, K = c->pos_conv_kernel, G = c->pos_conv_groups;
    const int64_t T = m->T, N = (int64_t)B * T, ND = N * D;
    const float eps = c->layer_norm_eps;
    const int train = run->train;
    const float p_drop = train ? c->dropout : 0, p_act = train ? c->activation_dropout : 0,
                p_att = train ? c->attention_dropout : 0;

    double t = koe_now();
    frontend_forward(m, inp, in_len, train ? c->dropout_input : 0);
    t = koe_now();

    /* positional embedding: x0 = x_in + GELU(conv(x_in))[:, :T] */
    const int64_t Tp = conv1d_out_len(T, K, 1, K / 2);
    weightnorm_forward(a->pos_w, a->pos_norm, m->p.pos_g, m->p.pos_v, D, D / G, K, m->s_conv);
    conv1d_forward(a->pos_raw, a->x_in, a->pos_w, m->p.pos_b, B, T, D, D, K, 1, K / 2, G, m->s_conv);
    for (int b = 0; b < B; b++) gelu_forward(a->x0 + (int64_t)b * T * D, a->pos_raw + (int64_t)b * Tp * D, T * D);
    add_inplace(a->x0, a->x_in, ND);
    const float *e = a->x0;
    if (!c->layer_norm_first) {
        layernorm_forward(a->x0n, a->x0_mean, a->x0_rstd, a->x0, m->p.enc_ln_w, m->p.enc_ln_b, N, D, eps);
        e = a->x0n;
    }
    drop_fwd(m, a->enc_in, e, ND, p_drop, site(c->L, SITE_INPUT));
    prof(m, 0, PROF_POSCONV, &t);

    const float *x = a->enc_in;
    for (int l = 0; l < c->L; l++) {
        m->skipped[l] = 0;
        if (train && c->encoder_layerdrop > 0) {
            KoeRng r = koe_rng(run->seed, run->step, MODEL_STREAM_LAYERDROP + (uint64_t)l, KOE_RNG_DROPOUT);
            m->skipped[l] = koe_rng_uniform(&r) < (double)c->encoder_layerdrop;
        }
        if (m->skipped[l]) memcpy(a->layer_out[l], x, (size_t)ND * sizeof *x);
        else if (c->encoder == ENCODER_CONFORMER) {
            ConformerDropout cd = {p_drop, p_act, p_att, run->seed, run->step, site(l, 0), run->utt};
            t = koe_now();
            conformer_layer_forward(a->layer_out[l], &a->clayer[l], x, &m->p.clayer[l], m->key_pad, B, T, D, c->F,
                                    c->H, c->conformer_kernel, eps, &cd, m->s_att);
            prof(m, 0, PROF_CONFORMER, &t);
        } else
            transformer_layer_forward(m, l, a->layer_out[l], x, p_drop, p_act, p_att);
        x = a->layer_out[l];
    }
    if (c->layer_norm_first) {
        t = koe_now();
        layernorm_forward(a->out, a->out_mean, a->out_rstd, x, m->p.enc_ln_w, m->p.enc_ln_b, N, D, eps);
        prof(m, 0, PROF_NORMS, &t);
    }
}

/* ---- backward ------------------------------------------------------------------------------------ */

static void frontend_backward(Model *m, float *dx_in, float dpen, const float *dfeat) {
    const ModelConfig *c = &m->cfg;
    ModelActs *a = &m->a;
    const int B = m->B, D = c->D;
    const int64_t T = m->T, N = (int64_t)B * T;
    double t = koe_now();
    for (int b = 0; b < B; b++) /* padded frames were zeroed */
        zero(dx_in + ((int64_t)b * T + m->frames[b]) * D, (T - m->frames[b]) * D);
    mask_embed_backward(m->g.mask_emb, dx_in, m->mask, N, D);
    float *dproj = m->s_d[1];
    zero(dproj, N * D);
    drop_bwd(m, dproj, dx_in, N * D, m->run.train ? c->dropout_input : 0, site(c->L + 1, SITE_INPUT));
    if (c->frontend == FRONTEND_FBANK) {
        linear_backward(NULL, m->g.fp_w, m->g.fp_b, dproj, a->stacked, m->p.fp_w, N, frontend_dim(c), D);
        prof(m, 1, PROF_FEATURES, &t);
        return;
    }
    const int C = c->conv_dim[c->n_conv - 1];
    const float mult = c->feature_grad_mult;
    float *dln = m->s_d[2];
    if (dfeat) memcpy(dln, dfeat, (size_t)(N * C) * sizeof *dln);
    else zero(dln, N * C);
    linear_backward(mult != 0 ? dln : NULL, m->g.fp_w, m->g.fp_b, dproj, a->fp_ln, m->p.fp_w, N, C, D);
    float *dfeatures = m->s_c[0];
    zero(dfeatures, N * C);
    const float *features = a->conv_act[c->n_conv - 1];
    layernorm_backward(mult != 0 ? dfeatures : NULL, m->g.fp_ln_w, m->g.fp_ln_b, dln, features, m->p.fp_ln_w,
                       a->fp_mean, a->fp_rstd, N, C);
    prof(m, 1, PROF_FEATURES, &t);
    if (mult == 0) return; /* fairseq: feature_grad_mult 0 runs the conv stack without gradient */
    int64_t cnt = 0;
    for (int b = 0; b < B; b++) cnt += m->frames[b] * C;
    if (dpen != 0 && cnt) {
        const float s = 2.0f * dpen / (float)cnt;
        for (int b = 0; b < B; b++) {
            const int64_t o = (int64_t)b * T * C, n = m->frames[b] * C;
            for (int64_t i = 0; i < n; i++) dfeatures[o + i] += s * features[o + i];
        }
    }
    if (mult != 1.0f)
        for (int64_t i = 0; i < N * C; i++) dfeatures[i] *= mult;
    /* conv stack, last layer first; cur holds d of the layer's GELU output */
    const int bpre = conv_pre_bf16(c, a->acts_bf16);
    float *cur = dfeatures, *other = m->s_c[1];
    for (int i = c->n_conv - 1; i >= 0; i--) {
        const int Ci = c->conv_dim[i], cin = i ? c->conv_dim[i - 1] : 1;
        const int64_t Ti = m->Tc[i], n = (int64_t)B * Ti * Ci, Tin = i ? m->Tc[i - 1] : m->S;
        const float *pre = a->norm_out[i] ? a->norm_out[i] : a->conv_out[i];
        if (bpre && i > 0 && !a->norm_out[i]) {
            /* d of the kept conv output, read only by the conv's GEMMs: written in bf16 into other, and
             * d of the conv input accumulated into cur, which is read no more */
            gelu_backward_bf16((uint16_t *)other, cur, (const uint16_t *)pre, n);
            zero(cur, (int64_t)B * Tin * cin);
            conv1d_backward_bf16(cur, m->g.conv_w[i], m->g.conv_b[i], (const uint16_t *)other,
                                 (const uint16_t *)a->conv_act[i - 1], m->p.conv_w[i], B, Tin, cin, Ci,
                                 c->conv_kernel[i], c->conv_stride[i], 0, 1, m->s_conv);
            continue;
        }
        const int fused = conv_norm_fused(c, a, bpre, i);
        float *t;
        if (!fused && !bpre) {
            gelu_backward_inplace(cur, pre, n); /* cur, d of the GELU output, becomes d of its input */
        } else {
            zero(other, n);
            if (fused) /* the norm's backward too; cur, d of the GELU output, becomes d of the norm output */
                groupnorm_gelu_backward_bf16(other, m->g.norm_w[i], m->g.norm_b[i], cur,
                                             (const uint16_t *)a->norm_out[i], (const uint16_t *)a->conv_out[i],
                                             m->p.norm_w[i], a->norm_mean[i], a->norm_rstd[i], B, Ti, Ci);
            else
                gelu_backward_bf16in(other, cur, (const uint16_t *)pre, n);
            t = cur;
            cur = other;
            other = t;
        }
        if (a->norm_out[i] && !fused) {
            zero(other, n);
            if (bpre)
                groupnorm_backward_bf16in(other, m->g.norm_w[i], m->g.norm_b[i], cur, (const uint16_t *)a->conv_out[i],
                                          m->p.norm_w[i], a->norm_mean[i], a->norm_rstd[i], B, Ti, Ci);
            else if (c->conv_norm == CONV_NORM_GROUP)
                groupnorm_backward(other, m->g.norm_w[i], m->g.norm_b[i], cur, a->conv_out[i], m->p.norm_w[i],
                                   a->norm_mean[i], a->norm_rstd[i], B, Ti, Ci);
            else
                layernorm_backward(other, m->g.norm_w[i], m->g.norm_b[i], cur, a->conv_out[i], m->p.norm_w[i],
                                   a->norm_mean[i], a->norm_rstd[i], (int64_t)B * Ti, Ci);
            t = cur;
            cur = other;
            other = t;
        }
        float *dinp = NULL;
        if (i > 0) {
            dinp = other;
            zero(dinp, (int64_t)B * Tin * cin);
        }
        if (i > 0 && a->acts_bf16)
            conv1d_backward_bf16in(dinp, m->g.conv_w[i], m->g.conv_b[i], cur, (const uint16_t *)a->conv_act[i - 1],
                                   m->p.conv_w[i], B, Tin, cin, Ci, c->conv_kernel[i], c->conv_stride[i], 0, 1,
                                   m->s_conv);
        else
            conv1d_backward(dinp, m->g.conv_w[i], m->g.conv_b[i], cur, i ? a->conv_act[i - 1] : m->inp,
                            m->p.conv_w[i], B, Tin, cin, Ci, c->conv_kernel[i], c->conv_stride[i], 0, 1, m->s_conv);
        if (dinp) {
            cur = dinp;
            other = (cur == m->s_c[0]) ? m->s_c[1] : m->s_c[0];
        }
    }
    prof(m, 1, PROF_CONV, &t);
}

void model_backward(Model *m, const float *dout, float dpen, const float *dfeat) {
    const ModelConfig *c = &m->cfg;
    ModelActs *a = &m->a;
    const int B = m->B, D = c->D, K = c->pos_conv_kernel, G = c->pos_conv_groups;
    const int64_t T = m->T, N = (int64_t)B * T, ND = N * D;
    const ModelRun *run = &m->run;
    const int train = run->train;
    const float p_drop = train ? c->dropout : 0, p_act = train ? c->activation_dropout : 0,
                p_att = train ? c->attention_dropout : 0;
    /* gx: d of the current layer's output, then of its input (the running residual gradient) */
    float *gx = m->s_d[3], *gy = m->s_posraw; /* s_posraw (>= N*D floats) is free until the positional conv */
    if (m->on_grads_ready) m->on_grads_ready(m->grads_ctx, m->layer_first[c->L]);
    double t = koe_now();
    if (c->layer_norm_first) {
        zero(gx, ND);
        const float *last = c->L ? a->layer_out[c->L - 1] : a->enc_in;
        layernorm_backward(gx, m->g.enc_ln_w, m->g.enc_ln_b, dout, last, m->p.enc_ln_w, a->out_mean, a->out_rstd, N, D);
        prof(m, 1, PROF_NORMS, &t);
    } else
        memcpy(gx, dout, (size_t)ND * sizeof *gx);
    for (int l = c->L - 1; l >= 0; l--) {
        if (m->skipped[l]) continue; /* identity: the gradient passes unchanged */
        const float *x = l ? a->layer_out[l - 1] : a->enc_in;
        memcpy(gy, gx, (size_t)ND * sizeof *gx);
        zero(gx, ND);
        if (c->encoder == ENCODER_CONFORMER) {
            ConformerDropout cd = {p_drop, p_act, p_att, run->seed, run->step, site(l, 0), run->utt};
            t = koe_now();
            conformer_layer_backward(gx, &m->g.clayer[l], gy, x, &m->p.clayer[l], &a->clayer[l], m->key_pad, B, T,
                                     D, c->F, c->H, c->conformer_kernel, &cd, m->s_att);
            prof(m, 1, PROF_CONFORMER, &t);
        } else
            transformer_layer_backward(m, l, gx, gy, x, p_drop, p_act, p_att);
        if (m->on_grads_ready) m->on_grads_ready(m->grads_ctx, m->layer_first[l]);
    }
    /* encoder input: dropout, (post-LN) encoder.layer_norm, positional embedding */
    t = koe_now();
    float *dx0 = m->s_d[0];
    zero(dx0, ND);
    if (!c->layer_norm_first) {
        float *d = m->s_d[1];
        zero(d, ND);
        drop_bwd(m, d, gx, ND, p_drop, site(c->L, SITE_INPUT));
        layernorm_backward(dx0, m->g.enc_ln_w, m->g.enc_ln_b, d, a->x0, m->p.enc_ln_w, a->x0_mean, a->x0_rstd, N, D);
    } else
        drop_bwd(m, dx0, gx, ND, p_drop, site(c->L, SITE_INPUT));
    const int64_t Tp = conv1d_out_len(T, K, 1, K / 2);
    float *dpos = m->s_posraw; /* (B, Tp, D); the last frame (dropped) gets no gradient */
    zero(dpos, (int64_t)B * Tp * D);
    for (int b = 0; b < B; b++)
        gelu_backward(dpos + (int64_t)b * Tp * D, dx0 + (int64_t)b * T * D, a->pos_raw + (int64_t)b * Tp * D, T * D);
    float *dx_in = m->s_d[3];
    memcpy(dx_in, dx0, (size_t)ND * sizeof *dx_in); /* residual */
    zero(m->s_posw, (int64_t)D * (D / G) * K);
    conv1d_backward(dx_in, m->s_posw, m->g.pos_b, dpos, a->x_in, a->pos_w, B, T, D, D, K, 1, K / 2, G, m->s_conv);
    weightnorm_backward(m->g.pos_g, m->g.pos_v, m->s_posw, m->p.pos_g, m->p.pos_v, a->pos_norm, D, D / G, K,
                        m->s_conv);
    prof(m, 1, PROF_POSCONV, &t);
    frontend_backward(m, dx_in, dpen, dfeat);
    if (m->on_grads_ready) m->on_grads_ready(m->grads_ctx, 0);
}

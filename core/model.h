/* model.h — a speech encoder: frontend -> (mask) -> encoder, as core/README.md describes.
 * ModelConfig is what the recipe's [model] section resolves to: its keys (fairseq's names) are
 * declared once, in model_keys (model_config.c). The rest of this header (parameter table,
 * activations, forward/backward) is the model's own API. No MPI, no HDF5. */
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "config_keys.h"

#define MODEL_MAX_CONV 16

typedef enum { FRONTEND_WAVEFORM = 1, FRONTEND_FBANK = 2 } FrontendKind;
typedef enum { ENCODER_TRANSFORMER = 1, ENCODER_CONFORMER = 2 } EncoderKind;
typedef enum { CONV_NORM_GROUP = 1, CONV_NORM_LAYER = 2 } ConvNorm; /* fairseq extractor_mode default / layer_norm */
typedef enum { FBANK_NORM_NONE = 1, FBANK_NORM_UTTERANCE = 2 } FbankNorm;

#define MODEL_FBANK_NORM_EPS 1e-5 /* fbank_norm = utterance: added to each bin's variance */
#define MODEL_WAVE_NORM_EPS 1e-7  /* normalize_waveform: added to the variance, as Wav2Vec2FeatureExtractor does */

/* The comments name each field's recipe key; its type, default, range, doc and config.json name are
 * in model_keys (model_config.c), the only place they are written. */
typedef struct {
    /* frontend */
    FrontendKind frontend;       /* frontend */
    int n_conv;                  /* conv_feature_layers: (dim, kernel, stride) of each conv layer */
    int conv_dim[MODEL_MAX_CONV], conv_kernel[MODEL_MAX_CONV], conv_stride[MODEL_MAX_CONV];
    ConvNorm conv_norm;          /* extractor_mode */
    int conv_bias;               /* conv_bias */
    float feature_grad_mult;     /* feature_grad_mult */
    int fbank_dim;               /* fbank_dim */
    int fbank_stack;             /* fbank_stack: frames concatenated */
    FbankNorm fbank_norm;        /* fbank_norm: the frontend's input normalisation */
    int normalize_waveform;      /* normalize_waveform: the waveform frontend's input normalisation */
    /* encoder */
    EncoderKind encoder;         /* encoder */
    int D;                       /* encoder_embed_dim */
    int L;                       /* encoder_layers */
    int H;                       /* encoder_attention_heads */
    int F;                       /* encoder_ffn_embed_dim */
    int pos_conv_kernel;         /* conv_pos */
    int pos_conv_groups;         /* conv_pos_groups */
    int layer_norm_first;        /* layer_norm_first: pre-LN */
    int conformer_kernel;        /* depthwise_conv_kernel_size */
    float layer_norm_eps;        /* layer_norm_eps */
    /* regularisation, as in fairseq */
    float dropout;               /* dropout */
    float attention_dropout;     /* attention_dropout */
    float activation_dropout;    /* activation_dropout */
    float encoder_layerdrop;     /* encoder_layerdrop */
    float dropout_input;         /* dropout_input (after the frontend projection) */
    float dropout_features;      /* dropout_features (unmasked features for the targets) */
    /* masking (the objective decides where it applies) */
    float mask_prob;             /* mask_prob */
    int mask_length;             /* mask_length (frames; BEST-RQ: input frames) */
    int mask_min_spans;          /* mask_min_masks */
} ModelConfig;

/* Every ModelConfig setting: the recipe's [model] keys and the config.json fields (config_keys.h). */
extern const ConfigKey model_keys[];
extern const int model_n_keys;
/* model_keys' defaults: HuBERT/wav2vec 2.0 Base as fairseq trains it. */
void model_config_default(ModelConfig *cfg);
/* The first architecture key (ConfigKey.setting = 0) whose value differs between a and b, with both
 * values as recipe text in va and vb (n bytes each, truncated to fit); NULL when they all agree. */
const ConfigKey *model_config_arch_diff(const ModelConfig *a, const ModelConfig *b, char *va, char *vb, size_t n);
/* fairseq's conv_feature_layers grammar: a sum of lists of (dim, kernel, stride) tuples, each list
 * optionally repeated with *N, e.g. "[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2". Fills n_conv
 * and the conv arrays of m (the rest zero); on error returns -1 with why (naming the character) in
 * msg and m unchanged. model_format_conv_layers writes the canonical form. */
int model_parse_conv_layers(const char *s, ModelConfig *m, char *msg, size_t msg_len);
void model_format_conv_layers(FILE *f, const ModelConfig *m);

/* ---- the model: parameters, activations, forward and backward ---------------------------------
 * Dimension letters: B utterances, S input length (samples, or fbank frames), T encoder frames,
 * C conv/feature channels, D model width, F FFN width, H heads, L layers, K kernel width, N = B*T. */
#include "conformer.h"
#include "params.h"

/* One transformer layer's views (parameters or gradients). q|k|v weights are adjacent in the table
 * (and so are their biases), so the three projections are one (3D, D) GEMM. */
typedef struct {
    float *qkv_w, *qkv_b; /* (3D, D), (3D)   attention.{q,k,v}_proj */
    float *out_w, *out_b; /* (D, D), (D)     attention.out_proj */
    float *ln_w, *ln_b;   /* (D), (D)        layer_norm */
    float *fc1_w, *fc1_b; /* (F, D), (F)     feed_forward.intermediate_dense */
    float *fc2_w, *fc2_b; /* (D, F), (D)     feed_forward.output_dense */
    float *fln_w, *fln_b; /* (D), (D)        final_layer_norm */
} TransformerLayerParams;

typedef struct {
    float *conv_w[MODEL_MAX_CONV];  /* (C_i, C_{i-1}, K_i)   feature_extractor.conv_layers.i.conv.weight */
    float *conv_b[MODEL_MAX_CONV];  /* (C_i) or NULL (conv_bias = false) */
    float *norm_w[MODEL_MAX_CONV];  /* (C_i) or NULL (no norm on this layer)  .layer_norm */
    float *norm_b[MODEL_MAX_CONV];
    float *fp_ln_w, *fp_ln_b;       /* (C) feature_projection.layer_norm (waveform only) */
    float *fp_w, *fp_b;             /* (D, C) or (D, fbank_dim*stack), (D)  feature_projection.projection */
    float *mask_emb;                /* (D) masked_spec_embed */
    float *pos_g, *pos_v, *pos_b;   /* (1, 1, K), (D, D/G, K), (D)  encoder.pos_conv_embed.conv */
    float *enc_ln_w, *enc_ln_b;     /* (D) encoder.layer_norm */
    TransformerLayerParams *layer;  /* (L) encoder = transformer */
    ConformerLayerParams *clayer;   /* (L) encoder = conformer */
} ModelParams;

/* What one transformer layer's forward keeps for backward. */
typedef struct {
    float *n1;                /* (N, D) pre-LN: layer_norm(x), the attention input; NULL for post-LN */
    float *ln_mean, *ln_rstd; /* (N) stats of layer_norm */
    float *qkv;               /* (N, 3D) (bf16 when ModelActs.acts_bf16) */
    float *att;               /* (B, H, T, T) attention probabilities */
    float *attn;              /* (N, D) heads concatenated (out_proj input) */
    float *r1;                /* (N, D) x + drop(attention) */
    float *n2;                /* (N, D) FFN input: post-LN layer_norm(r1), pre-LN final_layer_norm(r1) */
    float *fln_mean, *fln_rstd; /* (N) stats of final_layer_norm */
    float *h;                 /* (N, F) intermediate_dense output (GELU input) */
    float *g;                 /* (N, F) output_dense's input: GELU output after activation dropout (bf16 when
                                 ModelActs.acts_bf16) */
    float *r2;                /* (N, D) post-LN: n2 + FFN, the final_layer_norm input; NULL for pre-LN */
} TransformerLayerAct;

typedef struct {
    float *conv_out[MODEL_MAX_CONV]; /* (B, T_i, C_i) conv output */
    float *norm_out[MODEL_MAX_CONV]; /* (B, T_i, C_i) after group/layer norm, or NULL */
    float *norm_mean[MODEL_MAX_CONV], *norm_rstd[MODEL_MAX_CONV]; /* (B, C_i) group / (B*T_i) layer */
    float *conv_act[MODEL_MAX_CONV]; /* (B, T_i, C_i) GELU output; the last one is the features */
    int acts_bf16;            /* the last forward ran in bf16 and kept conv_act[0 .. n_conv-2] and each transformer
                                 layer's qkv and g as bf16 (uint16_t) in those views: only GEMM operands
                                 (core/README.md, Precision) */
    float *stacked;           /* fbank: (B, T, fbank_dim*stack) */
    float *fp_ln, *fp_mean, *fp_rstd; /* (B, T, C), (N), (N) LayerNorm of the features (waveform) */
    float *x_in;              /* (B, T, D) projection -> dropout_input -> mask embedding -> padding zeroed */
    float *pos_w, *pos_norm;  /* (D, D/G, K), (K) weight-normed positional conv weight */
    float *pos_raw;           /* (B, T + 1 - K%2, D) positional conv output (before GELU, last frame dropped later) */
    float *x0;                /* (B, T, D) x_in + GELU(pos conv) */
    float *x0n, *x0_mean, *x0_rstd; /* post-LN: encoder.layer_norm(x0) */
    float *enc_in;            /* (B, T, D) hidden state 0: after the encoder's input dropout */
    TransformerLayerAct *layer; /* (L) encoder = transformer */
    ConformerLayerAct *clayer;  /* (L) encoder = conformer */
    float **layer_out;        /* (L) each (B, T, D): layer l's output (a copy of its input when layerdrop skips it) */
    float *out_mean, *out_rstd; /* pre-LN: stats of the final encoder.layer_norm */
    float *out;               /* (B, T, D) the encoder output */
} ModelActs;

/* Where a training step's time goes (koe bench): seconds per section, forward and backward,
 * accumulated over every call until model_profile_reset. */
typedef enum {
    PROF_CONV,      /* waveform conv stack: convs, norms, GELUs */
    PROF_FEATURES,  /* feature penalty, LayerNorm, projection, input dropout, mask embedding */
    PROF_POSCONV,   /* positional conv: weight norm, grouped conv, GELU, encoder LayerNorm */
    PROF_QKV,       /* q|k|v projection */
    PROF_ATTENTION, /* attention kernel */
    PROF_OUTPROJ,   /* out_proj */
    PROF_FFN,       /* intermediate_dense, GELU, output_dense */
    PROF_NORMS,     /* layer norms, residual adds and dropouts inside the layers */
    PROF_CONFORMER, /* conformer layers (one bucket) */
    PROF_N
} ModelProfSection;
extern const char *const model_prof_names[PROF_N];

/* A forward pass's randomness: dropout and layerdrop only when train is set. Every dropout mask of
 * utterance b is keyed by utt[b] (distributed/README.md, Determinism: never by its batch position or rank), so
 * the same utterance gets the same masks on its valid frames alone or in any padded batch. */
typedef struct {
    int train;
    uint64_t seed, step;
    const int64_t *utt; /* (B) corpus utterance ids, borrowed until backward; NULL: utt[b] = b */
} ModelRun;

typedef struct {
    ModelConfig cfg;
    ParamTable table;
    float *params, *grads; /* (table.total) each, same layout */
    ModelParams p, g;      /* named views into params and grads */
    int max_B;
    int64_t max_S;
    int64_t max_tokens;    /* B * S of any forward is at most this */
    float *arena;          /* activations + scratch, sized once for (max_B, max_S) */
    int64_t arena_floats;
    int arena_bf16;        /* created while the GEMM precision was bf16: the arena holds the bf16 activations'
                              smaller views, and every forward must run in bf16 */
    float *fbank_in;       /* fbank frontend: (max_tokens, fbank_dim) the encoder's input (model_fbank_input) */
    float *wave_in;        /* waveform frontend with normalize_waveform: (max_tokens) the normalised samples */
    uint8_t *key_pad;      /* (max_B * max_T) 1 on padded frames */
    int64_t *frames;       /* (max_B) valid encoder frames of each utterance */
    int *skipped;          /* (L) layerdrop decisions of the last forward */
    /* the last forward */
    int B;
    int64_t S, T;
    int64_t Tc[MODEL_MAX_CONV]; /* conv layer output lengths for S */
    const float *inp;      /* (B, S) samples or (B, S, fbank_dim), borrowed until backward */
    const uint8_t *mask;   /* (B, T) or NULL, borrowed until backward */
    ModelRun run;
    float feature_pen;     /* mean of squared conv features over valid frames (waveform) */
    double feature_pen_sum; /* (waveform) the sum of squares and the element count feature_pen is their */
    int64_t feature_pen_count; /* ratio of: across ranks the trainer sums these (objective.h) */
    /* Optional, set by the caller (distributed/ data parallelism): model_backward calls
     * on_grads_ready(grads_ctx, first) each time grads[first, table.total) has become final — at its
     * start (tensors after the encoder's own: the objective's head, whose backward runs first), after
     * each encoder layer, and with first = 0 at its end. first only decreases within one backward. */
    void (*on_grads_ready)(void *ctx, int64_t first);
    void *grads_ctx;
    int64_t *layer_first;  /* (L) flat offset of layer l's first tensor; [L]: end of the encoder's own tensors */
    ModelActs a;
    double prof[2][PROF_N]; /* seconds: [0] forward, [1] backward */
    /* scratch views (see model.c) */
    float *s_conv, *s_att, *s_d[4], *s_f[2], *s_qkv, *s_c[2], *s_posw, *s_posraw;
} Model;

/* Encoder frames for an input of n samples (waveform: the conv stack's floor((n - K)/stride) + 1 per
 * layer, 0 when too short, as torchaudio's _get_feat_extract_output_lengths) or n fbank frames (n / stack). */
int64_t model_frames(const ModelConfig *cfg, int64_t n);
/* Builds the table and allocates parameters, gradients and an arena for up to max_B utterances of up
 * to max_S input samples (or fbank frames). Parameters are zero until model_init_params or a load. */
Model *model_create(const ModelConfig *cfg, int max_B, int64_t max_S);
/* The encoder's parameter table alone: an objective appends its head's tensors (hubert_head_add_params,
 * ...) and passes the table to model_create_with_table, so every parameter lives in the one flat
 * buffer. The model owns the table afterwards (the head binds its views with params_view). */
void model_table_build(const ModelConfig *cfg, ParamTable *t);
Model *model_create_with_table(const ModelConfig *cfg, ParamTable table, int max_B, int64_t max_S);
/* The same with a token budget: batches of up to max_B utterances, each up to max_S long, with
 * B * S <= max_tokens (the loader's budget). The arena is sized for the worst such batch, not for
 * max_B * max_S, which for Base recipes is ~8x larger than any real batch. */
Model *model_create_budget(const ModelConfig *cfg, ParamTable table, int max_B, int64_t max_S, int64_t max_tokens);
void model_free(Model *m);
/* fairseq's initialisation, from the seed only (see model.c for each tensor's rule). */
void model_init_params(Model *m, uint64_t seed);
/* fbank frontend: the features the encoder reads — feats (B, F, fbank_dim), frames (B) valid each —
 * copied into m->fbank_in, normalised per utterance (each bin to mean 0, variance 1 + eps over the
 * utterance's valid frames) when cfg.fbank_norm = utterance, zero past the valid frames. Returns
 * m->fbank_in. model_forward calls it; a caller that needs the encoder's input before the forward
 * (BEST-RQ: its targets come from it and its masked frames get noise in it) calls it, may change the
 * returned frames, and passes the returned pointer to model_forward, which then uses it as it is. */
float *model_fbank_input(Model *m, const float *feats, const int64_t *frames, int B, int64_t F);
/* Per-utterance normalisation in place: x (B, F, E), frames (B); padding zeroed. */
void model_fbank_normalize(float *x, const int64_t *frames, int B, int64_t F, int E);
/* inp: (B, S) waveform samples in [-1, 1], or (B, S, fbank_dim) features; in_len (B): valid input
 * length of each utterance (the rest is padding, zero for the waveform). With normalize_waveform the
 * conv stack reads a copy of the waveform with each utterance's valid samples at zero mean and unit
 * variance (+ MODEL_WAVE_NORM_EPS), as transformers' Wav2Vec2FeatureExtractor (do_normalize) gives. mask (B, T) or NULL: frames
 * replaced by the mask embedding (T = model_frames(cfg, S)). inp and mask must stay valid until
 * model_backward. Sets m->T, m->frames, m->a.out and, for the waveform, m->feature_pen. */
void model_forward(Model *m, const float *inp, const int64_t *in_len, int B, int64_t S, const uint8_t *mask,
                   const ModelRun *run);
/* Hidden state i of the last forward, (B, T, D): 0 = encoder input after the positional embedding
 * (and, post-LN, its LayerNorm), i = output of layer i (1..L). */
const float *model_hidden(const Model *m, int i);
void model_zero_grad(Model *m);
void model_profile_reset(Model *m);
/* Accumulates into m->grads the gradient of a loss whose gradient is dout (B, T, D) w.r.t. m->a.out,
 * dpen w.r.t. m->feature_pen, and dfeat (B, T, C) w.r.t. m->a.fp_ln (the unmasked normalised
 * features; NULL if unused). The conv stack gets its gradient scaled by feature_grad_mult (0: skipped). */
void model_backward(Model *m, const float *dout, float dpen, const float *dfeat);

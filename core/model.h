/* model.h — a speech encoder: frontend -> (mask) -> encoder, as DESIGN.md section 2 describes.
 * ModelConfig is what the recipe's [model] section resolves to (recipes/recipe.c parses it; the keys
 * use fairseq's names). The rest of this header (parameter table, activations, forward/backward)
 * is the model's own API. No MPI, no HDF5. */
#pragma once
#include <stdint.h>

#define MODEL_MAX_CONV 16

typedef enum { FRONTEND_WAVEFORM = 1, FRONTEND_FBANK = 2 } FrontendKind;
typedef enum { ENCODER_TRANSFORMER = 1, ENCODER_CONFORMER = 2 } EncoderKind;
typedef enum { CONV_NORM_GROUP = 1, CONV_NORM_LAYER = 2 } ConvNorm; /* fairseq extractor_mode default / layer_norm */

typedef struct {
    /* frontend */
    FrontendKind frontend;       /* frontend = waveform | fbank */
    int n_conv;                  /* conv_feature_layers = [(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2 */
    int conv_dim[MODEL_MAX_CONV], conv_kernel[MODEL_MAX_CONV], conv_stride[MODEL_MAX_CONV];
    ConvNorm conv_norm;          /* extractor_mode = default (group norm on layer 0) | layer_norm */
    int conv_bias;               /* conv_bias = false */
    float feature_grad_mult;     /* feature_grad_mult = 0.1 */
    int fbank_dim;               /* fbank_dim = 80 */
    int fbank_stack;             /* fbank_stack = 4 (frames concatenated: 40 ms) */
    /* encoder */
    EncoderKind encoder;         /* encoder = transformer | conformer */
    int D;                       /* encoder_embed_dim = 768 */
    int L;                       /* encoder_layers = 12 */
    int H;                       /* encoder_attention_heads = 12 */
    int F;                       /* encoder_ffn_embed_dim = 3072 */
    int pos_conv_kernel;         /* conv_pos = 128 */
    int pos_conv_groups;         /* conv_pos_groups = 16 */
    int layer_norm_first;        /* layer_norm_first = false (post-LN, Base) */
    int conformer_kernel;        /* depthwise_conv_kernel_size = 31 */
    float layer_norm_eps;        /* 1e-5 */
    /* regularisation, as in fairseq */
    float dropout;               /* dropout = 0.1 */
    float attention_dropout;     /* attention_dropout = 0.1 */
    float activation_dropout;    /* activation_dropout = 0.0 */
    float encoder_layerdrop;     /* encoder_layerdrop = 0.05 */
    float dropout_input;         /* dropout_input = 0.1 (after the frontend projection) */
    float dropout_features;      /* dropout_features = 0.1 (unmasked features for the targets) */
    /* masking (the objective decides where it applies) */
    float mask_prob;             /* mask_prob = 0.8 HuBERT, 0.65 wav2vec 2.0, 0.01 BEST-RQ */
    int mask_length;             /* mask_length = 10 (frames; BEST-RQ: 40 input frames) */
    int mask_min_spans;          /* mask_min_masks = 2 */
} ModelConfig;

/* HuBERT/wav2vec 2.0 Base defaults (the numbers above). */
void model_config_default(ModelConfig *cfg);

/* model_config.c — the default ModelConfig: HuBERT Base as fairseq trains it (core/README.md,
 * Objectives). The recipe's [model] table (recipes/recipe.c) states the same numbers as its defaults;
 * tests/unit/test_recipe.c checks that the two agree. Must not hold anything but numbers. */
#include <string.h>

#include "model.h"

void model_config_default(ModelConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->frontend = FRONTEND_WAVEFORM;
    /* conv_feature_layers = [(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2 */
    static const int kernel[] = {10, 3, 3, 3, 3, 2, 2}, stride[] = {5, 2, 2, 2, 2, 2, 2};
    cfg->n_conv = 7;
    for (int i = 0; i < cfg->n_conv; i++) {
        cfg->conv_dim[i] = 512;
        cfg->conv_kernel[i] = kernel[i];
        cfg->conv_stride[i] = stride[i];
    }
    cfg->conv_norm = CONV_NORM_GROUP;
    cfg->conv_bias = 0;
    cfg->feature_grad_mult = 0.1f;
    cfg->fbank_dim = 80;
    cfg->fbank_stack = 4;
    cfg->encoder = ENCODER_TRANSFORMER;
    cfg->D = 768;
    cfg->L = 12;
    cfg->H = 12;
    cfg->F = 3072;
    cfg->pos_conv_kernel = 128;
    cfg->pos_conv_groups = 16;
    cfg->layer_norm_first = 0;
    cfg->conformer_kernel = 31;
    cfg->layer_norm_eps = 1e-5f;
    cfg->dropout = 0.1f;
    cfg->attention_dropout = 0.1f;
    cfg->activation_dropout = 0.0f;
    cfg->encoder_layerdrop = 0.05f;
    cfg->dropout_input = 0.1f;
    cfg->dropout_features = 0.1f;
    cfg->mask_prob = 0.8f;
    cfg->mask_length = 10;
    cfg->mask_min_spans = 2;
}

/* model_config.c — the model's keys: model_keys is the only place a ModelConfig setting is declared
 * (recipe name = fairseq's, type, field, default = HuBERT Base as fairseq trains it, range, doc and
 * Hugging Face config.json name). The recipe's [model] section (recipes/recipe.c) is this table, the
 * config.json writer and reader (data/hf.c) walk it, and model_config_default is its defaults. It
 * lives here, not in recipes/, because core/ must not depend on recipes/ (see config_keys.h).
 * Also fairseq's conv_feature_layers grammar and the comparison of two configs' architectures. Must
 * not hold anything but the table, its parsing and that comparison:
 * tests/unit/test_recipe.c checks that every ModelConfig field has exactly one key. */
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static const EnumName frontend_names[] = {
    {"waveform", FRONTEND_WAVEFORM, "waveform"}, {"fbank", FRONTEND_FBANK, "fbank"}, {NULL, 0, NULL}};
static const EnumName extractor_names[] = {
    {"default", CONV_NORM_GROUP, "group"}, {"layer_norm", CONV_NORM_LAYER, "layer"}, {NULL, 0, NULL}};
static const EnumName fbank_norm_names[] = {
    {"none", FBANK_NORM_NONE, "none"}, {"utterance", FBANK_NORM_UTTERANCE, "utterance"}, {NULL, 0, NULL}};
static const EnumName encoder_names[] = {
    {"transformer", ENCODER_TRANSFORMER, "transformer"}, {"conformer", ENCODER_CONFORMER, "conformer"}, {NULL, 0, NULL}};

/* enum fields are written through int pointers */
_Static_assert(sizeof(FrontendKind) == sizeof(int) && sizeof(EncoderKind) == sizeof(int) &&
                   sizeof(ConvNorm) == sizeof(int) && sizeof(FbankNorm) == sizeof(int),
               "enums are int-sized");

#define OFF(field) offsetof(ModelConfig, field)
#define KN(key, type, field, def, lo, hi, open, hf, doc) {key, type, OFF(field), def, lo, hi, open, NULL, doc, hf, 0}
#define KE(key, field, def, names, hf, doc) {key, K_ENUM, OFF(field), def, 0, 0, 0, names, doc, hf, 0}
#define KB(key, field, def, hf, doc) {key, K_BOOL, OFF(field), def, 0, 0, 0, NULL, doc, hf, 0}
/* a training setting (ConfigKey.setting), not the architecture */
#define KS(key, type, field, def, lo, hi, open, hf, doc) {key, type, OFF(field), def, lo, hi, open, NULL, doc, hf, 1}

/* The Hugging Face names are transformers' Wav2Vec2Config fields for the architecture; koe_frontend,
 * koe_encoder, fbank_*, koe_fbank_norm, conformer_kernel and feature_grad_mult are koe's own (transformers'
 * Wav2Vec2 has no field for them). The pretraining settings (dropouts, layerdrop, masking) have koe's
 * own names too (koe_dropout, koe_mask_prob, ...): a published config.json holds transformers'
 * fine-tuning values under hidden_dropout, mask_time_prob, ..., which must not become a pretraining
 * recipe's (mask_time_prob 0.05 against pretraining's 0.8 / 0.65), so importing one leaves these keys
 * at the recipe defaults, while a koe export read back keeps its own. koe export writes transformers'
 * fine-tuning defaults under transformers' names (data/hf.c). do_normalize is the waveform
 * normalisation of transformers' Wav2Vec2FeatureExtractor (fairseq's task.normalize). */
const ConfigKey model_keys[] = {
    KE("frontend", frontend, "waveform", frontend_names, "koe_frontend", "waveform (conv stack) | fbank (stacked log-mel)"),
    {"conv_feature_layers", K_CONV, 0, "[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2", 0, 0, 0, NULL,
     "waveform conv stack: sum of lists of (dim, kernel, stride), each optionally *N", "conv", 0},
    KE("extractor_mode", conv_norm, "default", extractor_names, "feat_extract_norm",
       "default = group norm on the first conv layer (Base) | layer_norm = on every layer (Large)"),
    KB("conv_bias", conv_bias, "false", "conv_bias", "bias in the conv layers"),
    KS("feature_grad_mult", K_FLOAT, feature_grad_mult, "0.1", 0, 1, 0, "feature_grad_mult",
       "gradient into the conv stack is scaled by this"),
    KN("fbank_dim", K_INT, fbank_dim, "80", 1, 1024, 0, "fbank_dim", "fbank frontend: mel bins per frame"),
    KN("fbank_stack", K_INT, fbank_stack, "4", 1, 64, 0, "fbank_stack", "fbank frontend: frames concatenated (4 = 40 ms)"),
    KE("fbank_norm", fbank_norm, "utterance", fbank_norm_names, "koe_fbank_norm",
       "fbank frontend: utterance = each bin to mean 0, variance 1 over the utterance (BEST-RQ) | none"),
    KB("normalize_waveform", normalize_waveform, "false", "do_normalize",
       "waveform frontend: each utterance to zero mean, unit variance over its samples first (Large models)"),
    KE("encoder", encoder, "transformer", encoder_names, "koe_encoder", "transformer | conformer"),
    KN("encoder_embed_dim", K_INT, D, "768", 1, 65536, 0, "hidden_size", "model width D"),
    KN("encoder_layers", K_INT, L, "12", 1, 1024, 0, "num_hidden_layers", "encoder layers L"),
    KN("encoder_attention_heads", K_INT, H, "12", 1, 1024, 0, "num_attention_heads", "attention heads H (divides D)"),
    KN("encoder_ffn_embed_dim", K_INT, F, "3072", 1, 1048576, 0, "intermediate_size", "feed-forward width F"),
    KN("conv_pos", K_INT, pos_conv_kernel, "128", 1, 4096, 0, "num_conv_pos_embeddings",
       "convolutional positional embedding kernel"),
    KN("conv_pos_groups", K_INT, pos_conv_groups, "16", 1, 65536, 0, "num_conv_pos_embedding_groups",
       "groups of the positional convolution (divides D)"),
    KB("layer_norm_first", layer_norm_first, "false", "do_stable_layer_norm",
       "pre-LN (true, Large) or post-LN (false, Base)"),
    KN("depthwise_conv_kernel_size", K_INT, conformer_kernel, "31", 1, 1023, 0, "conformer_kernel",
       "conformer: depthwise convolution kernel (odd)"),
    KN("layer_norm_eps", K_FLOAT, layer_norm_eps, "1e-05", 0, 0.1, OPEN_LO, "layer_norm_eps", "LayerNorm epsilon"),
    KS("dropout", K_FLOAT, dropout, "0.1", 0, 1, OPEN_HI, "koe_dropout", "dropout in the encoder"),
    KS("attention_dropout", K_FLOAT, attention_dropout, "0.1", 0, 1, OPEN_HI, "koe_attention_dropout",
       "dropout on attention probabilities"),
    KS("activation_dropout", K_FLOAT, activation_dropout, "0", 0, 1, OPEN_HI, "koe_activation_dropout",
       "dropout after the feed-forward activation"),
    KS("encoder_layerdrop", K_FLOAT, encoder_layerdrop, "0.05", 0, 1, OPEN_HI, "koe_layerdrop",
       "probability of skipping a whole encoder layer"),
    KS("dropout_input", K_FLOAT, dropout_input, "0.1", 0, 1, OPEN_HI, "koe_dropout_input",
       "dropout on the frontend output (encoder input)"),
    KS("dropout_features", K_FLOAT, dropout_features, "0.1", 0, 1, OPEN_HI, "koe_dropout_features",
       "dropout on the unmasked features used for targets"),
    KS("mask_prob", K_FLOAT, mask_prob, "0.8", 0, 1, 0, "koe_mask_prob",
       "probability that a frame starts a masked span (0.8 HuBERT, 0.65 wav2vec 2.0, 0.01 BEST-RQ)"),
    KS("mask_length", K_INT, mask_length, "10", 1, 100000, 0, "koe_mask_length",
       "masked span length in frames (BEST-RQ: 10 ms input frames, 40)"),
    KS("mask_min_masks", K_INT, mask_min_spans, "2", 0, 100000, 0, "koe_mask_min_masks",
       "at least this many spans per utterance"),
};
const int model_n_keys = (int)(sizeof model_keys / sizeof model_keys[0]);

void model_config_default(ModelConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    config_keys_default(model_keys, model_n_keys, cfg);
}

const ConfigKey *model_config_arch_diff(const ModelConfig *a, const ModelConfig *b, char *va, char *vb, size_t n) {
    for (int i = 0; i < model_n_keys; i++) {
        const ConfigKey *k = &model_keys[i];
        if (k->setting) continue;
        FILE *fa = fmemopen(va, n, "w"), *fb = fmemopen(vb, n, "w");
        KOE_ASSERT(fa && fb);
        config_key_format(fa, k, (const char *)a + k->off);
        config_key_format(fb, k, (const char *)b + k->off);
        fclose(fa);
        fclose(fb);
        if (strcmp(va, vb)) return k;
    }
    return NULL;
}

/* ---- conv_feature_layers ---------------------------------------------------------------------- */

/* Canonical form: runs of equal layers as [(d,k,s)]*n, neighbouring single layers in one list. */
void model_format_conv_layers(FILE *f, const ModelConfig *m) {
    int i = 0, in_list = 0;
    while (i < m->n_conv) {
        int j = i + 1;
        while (j < m->n_conv && m->conv_dim[j] == m->conv_dim[i] && m->conv_kernel[j] == m->conv_kernel[i] &&
               m->conv_stride[j] == m->conv_stride[i])
            j++;
        if (j - i > 1) {
            fprintf(f, "%s%s[(%d,%d,%d)]*%d", in_list ? "]" : "", i ? " + " : "", m->conv_dim[i],
                    m->conv_kernel[i], m->conv_stride[i], j - i);
            in_list = 0;
        } else {
            fprintf(f, "%s(%d,%d,%d)", in_list ? "," : i ? " + [" : "[", m->conv_dim[i], m->conv_kernel[i],
                    m->conv_stride[i]);
            in_list = 1;
        }
        i = j;
    }
    if (in_list) fputc(']', f);
}

typedef struct {
    const char *s, *p;
    char *msg;
    size_t msg_len;
} ConvParser;

static void conv_skip(ConvParser *c) {
    while (isspace((unsigned char)*c->p)) c->p++;
}

static int conv_fail(ConvParser *c, const char *what) {
    snprintf(c->msg, c->msg_len, "'%s': %s at character %d (%s)", c->s, what, (int)(c->p - c->s) + 1,
             *c->p ? "here" : "end of text");
    return -1;
}

static int conv_expect(ConvParser *c, char ch) {
    conv_skip(c);
    if (*c->p != ch) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", ch);
        return conv_fail(c, what);
    }
    c->p++;
    return 0;
}

/* A number of the recipes' syntax (config_parse_i64): a sign, then up to a blank or a character of
 * the grammar. */
static int conv_int(ConvParser *c, int *out) {
    conv_skip(c);
    const size_t sign = *c->p == '+' || *c->p == '-';
    const int len = (int)(sign + strcspn(c->p + sign, " \t\r\n\v\f,()[]*+"));
    if (len == 0) return conv_fail(c, "expected an integer");
    int64_t v;
    const int rc = config_parse_i64_n(c->p, (size_t)len, &v);
    if (rc || v < 1 || v > 1000000) {
        char what[96];
        snprintf(what, sizeof what, "'%.*s' is %s", len > 40 ? 40 : len, c->p,
                 rc < 0 ? "not an integer" : "out of range: must be in [1, 1000000]");
        return conv_fail(c, what);
    }
    c->p += len;
    *out = (int)v;
    return 0;
}

int model_parse_conv_layers(const char *s, ModelConfig *m, char *msg, size_t msg_len) {
    ConvParser c = {s, s, msg, msg_len};
    int n = 0, dim[MODEL_MAX_CONV], kernel[MODEL_MAX_CONV], stride[MODEL_MAX_CONV];
    for (;;) { /* term: '[' tuple (',' tuple)* ']' ('*' N)? */
        if (conv_expect(&c, '[')) return -1;
        int first = n;
        for (;;) {
            int t[3];
            if (conv_expect(&c, '(') || conv_int(&c, &t[0]) || conv_expect(&c, ',') || conv_int(&c, &t[1]) ||
                conv_expect(&c, ',') || conv_int(&c, &t[2]) || conv_expect(&c, ')'))
                return -1;
            if (n == MODEL_MAX_CONV) return conv_fail(&c, "more than " "16" " conv layers");
            dim[n] = t[0], kernel[n] = t[1], stride[n] = t[2];
            n++;
            conv_skip(&c);
            if (*c.p != ',') break;
            c.p++;
        }
        if (conv_expect(&c, ']')) return -1;
        conv_skip(&c);
        if (*c.p == '*') {
            c.p++;
            int rep;
            if (conv_int(&c, &rep)) return -1;
            int len = n - first;
            if ((int64_t)len * rep + first > MODEL_MAX_CONV) return conv_fail(&c, "more than " "16" " conv layers");
            for (int r = 1; r < rep; r++)
                for (int i = 0; i < len; i++) {
                    dim[n] = dim[first + i], kernel[n] = kernel[first + i], stride[n] = stride[first + i];
                    n++;
                }
            conv_skip(&c);
        }
        if (!*c.p) break;
        if (*c.p != '+') return conv_fail(&c, "expected '+' or the end");
        c.p++;
    }
    m->n_conv = n;
    for (int i = 0; i < MODEL_MAX_CONV; i++) {
        m->conv_dim[i] = i < n ? dim[i] : 0;
        m->conv_kernel[i] = i < n ? kernel[i] : 0;
        m->conv_stride[i] = i < n ? stride[i] : 0;
    }
    return 0;
}
_Static_assert(MODEL_MAX_CONV == 16, "the conv_feature_layers messages say 16");

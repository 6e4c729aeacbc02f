/* recipe.c — the recipe key table, the INI parser on top of libinih, overrides, validation and
 * the resolved text. See recipe.h. Must not touch the corpus, the model or MPI: a recipe is only
 * checked for what it says, not for what exists on disk. */
#include "recipe.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

/* ---- the key table -------------------------------------------------------------------------- */

typedef enum { K_STR, K_INT, K_I64, K_U64, K_FLOAT, K_DOUBLE, K_BOOL, K_ENUM, K_TUPLE2, K_TUPLE3, K_CONV } KeyType;

typedef struct {
    const char *name;
    int value;
} EnumName;

enum { OPEN_LO = 1, OPEN_HI = 2 }; /* range bounds that are exclusive */

typedef struct {
    const char *section, *key;
    KeyType type;
    size_t off;            /* offsetof(Recipe, ...) */
    const char *def;       /* the default, written as in a recipe (canonical form) */
    double lo, hi;         /* numbers (each element of a tuple): allowed range */
    int open;              /* OPEN_LO | OPEN_HI */
    const EnumName *names; /* K_ENUM: {NULL, 0}-terminated */
    const char *doc;
} RecipeKey;

static const EnumName features_names[] = {{"none", 0}, {"fbank", FEAT_FBANK}, {"mfcc", FEAT_MFCC}, {NULL, 0}};
static const EnumName frontend_names[] = {{"waveform", FRONTEND_WAVEFORM}, {"fbank", FRONTEND_FBANK}, {NULL, 0}};
static const EnumName extractor_names[] = {{"default", CONV_NORM_GROUP}, {"layer_norm", CONV_NORM_LAYER}, {NULL, 0}};
static const EnumName encoder_names[] = {{"transformer", ENCODER_TRANSFORMER}, {"conformer", ENCODER_CONFORMER}, {NULL, 0}};
static const EnumName objective_names[] = {
    {"hubert", OBJECTIVE_HUBERT}, {"wav2vec2", OBJECTIVE_WAV2VEC2}, {"bestrq", OBJECTIVE_BESTRQ}, {NULL, 0}};
static const EnumName schedule_names[] = {
    {"linear", SCHEDULE_LINEAR}, {"cosine", SCHEDULE_COSINE}, {"tri_stage", SCHEDULE_TRI_STAGE}, {NULL, 0}};

/* enum fields are written through int pointers */
_Static_assert(sizeof(FrontendKind) == sizeof(int) && sizeof(EncoderKind) == sizeof(int) &&
                   sizeof(ConvNorm) == sizeof(int) && sizeof(ObjectiveKind) == sizeof(int) &&
                   sizeof(ScheduleKind) == sizeof(int),
               "enums are int-sized");

#define OFF(field) offsetof(Recipe, field)
#define INF INFINITY
#define IMAX 2147483647.0
#define KS(sec, key, field, def, doc) {sec, key, K_STR, OFF(field), def, 0, 0, 0, NULL, doc}
#define KN(sec, key, type, field, def, lo, hi, open, doc) {sec, key, type, OFF(field), def, lo, hi, open, NULL, doc}
#define KE(sec, key, field, def, names, doc) {sec, key, K_ENUM, OFF(field), def, 0, 0, 0, names, doc}
#define KB(sec, key, field, def, doc) {sec, key, K_BOOL, OFF(field), def, 0, 0, 0, NULL, doc}

static const RecipeKey keys[] = {
    /* [data] */
    KS("data", "corpus", data.corpus, "", "corpus directory (koe prepare --out)"),
    KS("data", "valid_corpus", data.valid_corpus, "", "held-out corpus for validation; empty = no validation"),
    KS("data", "labels", data.labels, "", "label set name under CORPUS/labels/ (HuBERT targets)"),
    KN("data", "max_tokens", K_I64, data.max_tokens, "1400000", 1, INF, 0,
       "samples per global batch: utterances x longest crop <= max_tokens"),
    KN("data", "max_sample_size", K_I64, data.max_sample_size, "250000", 1, INF, 0,
       "longer utterances are cropped to this many samples"),
    KN("data", "min_sample_size", K_I64, data.min_sample_size, "32000", 0, INF, 0,
       "shorter utterances are skipped (samples)"),
    KN("data", "lang_alpha", K_DOUBLE, data.lang_alpha, "0.5", 0, 1, 0,
       "multilingual sampling exponent: 1 = as is, 0 = uniform over languages"),
    KN("data", "bucket_batches", K_I64, data.bucket_batches, "100", 1, INF, 0,
       "batches' worth of utterances sorted together by length"),
    KN("data", "threads", K_INT, data.threads, "1", 0, 256, 0, "loader prefetch threads; 0 = read synchronously"),
    KE("data", "features", data.features, "none", features_names,
       "features computed by the loader: none | fbank | mfcc (fbank frontend and BEST-RQ need fbank)"),
    /* [model] (fairseq names) */
    KE("model", "frontend", model.frontend, "waveform", frontend_names, "waveform (conv stack) | fbank (stacked log-mel)"),
    KN("model", "conv_feature_layers", K_CONV, model, "[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2", 0, 0, 0,
       "waveform conv stack: sum of lists of (dim, kernel, stride), each optionally *N"),
    KE("model", "extractor_mode", model.conv_norm, "default", extractor_names,
       "default = group norm on the first conv layer (Base) | layer_norm = on every layer (Large)"),
    KB("model", "conv_bias", model.conv_bias, "false", "bias in the conv layers"),
    KN("model", "feature_grad_mult", K_FLOAT, model.feature_grad_mult, "0.1", 0, 1, 0,
       "gradient into the conv stack is scaled by this"),
    KN("model", "fbank_dim", K_INT, model.fbank_dim, "80", 1, 1024, 0, "fbank frontend: mel bins per frame"),
    KN("model", "fbank_stack", K_INT, model.fbank_stack, "4", 1, 64, 0, "fbank frontend: frames concatenated (4 = 40 ms)"),
    KE("model", "encoder", model.encoder, "transformer", encoder_names, "transformer | conformer"),
    KN("model", "encoder_embed_dim", K_INT, model.D, "768", 1, 65536, 0, "model width D"),
    KN("model", "encoder_layers", K_INT, model.L, "12", 1, 1024, 0, "encoder layers L"),
    KN("model", "encoder_attention_heads", K_INT, model.H, "12", 1, 1024, 0, "attention heads H (divides D)"),
    KN("model", "encoder_ffn_embed_dim", K_INT, model.F, "3072", 1, 1048576, 0, "feed-forward width F"),
    KN("model", "conv_pos", K_INT, model.pos_conv_kernel, "128", 1, 4096, 0, "convolutional positional embedding kernel"),
    KN("model", "conv_pos_groups", K_INT, model.pos_conv_groups, "16", 1, 65536, 0,
       "groups of the positional convolution (divides D)"),
    KB("model", "layer_norm_first", model.layer_norm_first, "false", "pre-LN (true, Large) or post-LN (false, Base)"),
    KN("model", "depthwise_conv_kernel_size", K_INT, model.conformer_kernel, "31", 1, 1023, 0,
       "conformer: depthwise convolution kernel (odd)"),
    KN("model", "layer_norm_eps", K_FLOAT, model.layer_norm_eps, "1e-05", 0, 0.1, OPEN_LO, "LayerNorm epsilon"),
    KN("model", "dropout", K_FLOAT, model.dropout, "0.1", 0, 1, OPEN_HI, "dropout in the encoder"),
    KN("model", "attention_dropout", K_FLOAT, model.attention_dropout, "0.1", 0, 1, OPEN_HI,
       "dropout on attention probabilities"),
    KN("model", "activation_dropout", K_FLOAT, model.activation_dropout, "0", 0, 1, OPEN_HI,
       "dropout after the feed-forward activation"),
    KN("model", "encoder_layerdrop", K_FLOAT, model.encoder_layerdrop, "0.05", 0, 1, OPEN_HI,
       "probability of skipping a whole encoder layer"),
    KN("model", "dropout_input", K_FLOAT, model.dropout_input, "0.1", 0, 1, OPEN_HI,
       "dropout on the frontend output (encoder input)"),
    KN("model", "dropout_features", K_FLOAT, model.dropout_features, "0.1", 0, 1, OPEN_HI,
       "dropout on the unmasked features used for targets"),
    KN("model", "mask_prob", K_FLOAT, model.mask_prob, "0.8", 0, 1, 0,
       "probability that a frame starts a masked span (0.8 HuBERT, 0.65 wav2vec 2.0, 0.01 BEST-RQ)"),
    KN("model", "mask_length", K_INT, model.mask_length, "10", 1, 100000, 0,
       "masked span length in frames (BEST-RQ: 10 ms input frames, 40)"),
    KN("model", "mask_min_masks", K_INT, model.mask_min_spans, "2", 0, 100000, 0, "at least this many spans per utterance"),
    /* [objective] */
    KE("objective", "name", objective.name, "hubert", objective_names, "hubert | wav2vec2 | bestrq"),
    KN("objective", "final_dim", K_INT, objective.final_dim, "256", 1, 65536, 0,
       "hubert, wav2vec2: projection dim of the logits"),
    KN("objective", "logit_temp", K_DOUBLE, objective.logit_temp, "0.1", 0, INF, OPEN_LO,
       "hubert, wav2vec2: cosine similarity is divided by this"),
    KN("objective", "feature_pen_weight", K_DOUBLE, objective.feature_pen_weight, "10", 0, INF, 0,
       "hubert, wav2vec2: weight of the feature penalty (mean squared conv output)"),
    KN("objective", "label_rate", K_INT, objective.label_rate, "50", 1, 1000, 0,
       "hubert: label frames per second (100 for MFCC labels, 50 for layer labels)"),
    KN("objective", "pred_nomask_weight", K_DOUBLE, objective.pred_nomask_weight, "0", 0, INF, 0,
       "hubert: weight of the cross-entropy on unmasked frames (the paper's 1 - alpha; 0 = masked only)"),
    KN("objective", "latent_groups", K_INT, objective.latent_groups, "2", 1, 64, 0, "wav2vec2: quantizer groups G"),
    KN("objective", "latent_vars", K_INT, objective.latent_vars, "320", 1, 65536, 0,
       "wav2vec2: codebook entries per group V"),
    KN("objective", "latent_dim", K_INT, objective.latent_dim, "0", 0, 65536, 0,
       "wav2vec2: codevector dim (split over groups); 0 = final_dim"),
    KN("objective", "num_negatives", K_INT, objective.num_negatives, "100", 1, 100000, 0,
       "wav2vec2: distractors from masked frames of the same utterance"),
    KN("objective", "diversity_weight", K_DOUBLE, objective.diversity_weight, "0.1", 0, INF, 0,
       "wav2vec2: weight of the codebook diversity loss"),
    KN("objective", "temp", K_TUPLE3, objective.temp, "(2,0.5,0.999995)", 0, INF, OPEN_LO,
       "wav2vec2: Gumbel temperature (max, min, decay): max(max * decay^step, min)"),
    KN("objective", "codebooks", K_INT, objective.codebooks, "1", 1, 64, 0, "bestrq: independent quantizers"),
    KN("objective", "codebook_size", K_INT, objective.codebook_size, "8192", 2, 65536, 0, "bestrq: codes per codebook"),
    KN("objective", "codebook_dim", K_INT, objective.codebook_dim, "16", 1, 4096, 0, "bestrq: code dimension"),
    KN("objective", "mask_noise_std", K_DOUBLE, objective.mask_noise_std, "0.1", 0, INF, 0,
       "bestrq: masked input frames are replaced by N(0, std^2) noise"),
    /* [optim] */
    KN("optim", "lr", K_DOUBLE, optim.lr, "0.0005", 0, 10, OPEN_LO, "peak learning rate"),
    KN("optim", "betas", K_TUPLE2, optim.betas, "(0.9,0.98)", 0, 1, OPEN_HI, "AdamW (beta1, beta2)"),
    KN("optim", "eps", K_DOUBLE, optim.eps, "1e-06", 0, 1, OPEN_LO, "AdamW epsilon"),
    KN("optim", "weight_decay", K_DOUBLE, optim.weight_decay, "0.01", 0, INF, 0, "AdamW decoupled weight decay"),
    KN("optim", "clip_norm", K_DOUBLE, optim.clip_norm, "10", 0, INF, 0,
       "clip the global gradient norm to this; 0 = no clipping"),
    KE("optim", "schedule", optim.schedule, "linear", schedule_names,
       "linear (fairseq polynomial_decay) | cosine | tri_stage"),
    KN("optim", "warmup", K_I64, optim.warmup, "32000", 0, INF, 0, "linear, cosine: warmup updates from lr 0"),
    KN("optim", "max_updates", K_I64, optim.max_updates, "400000", 1, INF, 0, "updates in the run"),
    KN("optim", "phase_ratio", K_TUPLE3, optim.phase_ratio, "(0.1,0.4,0.5)", 0, 1, 0,
       "tri_stage: warmup, hold, decay fractions of max_updates (sum 1)"),
    KN("optim", "init_lr_scale", K_DOUBLE, optim.init_lr_scale, "0.01", 0, 1, OPEN_LO, "tri_stage: first lr / peak lr"),
    KN("optim", "final_lr_scale", K_DOUBLE, optim.final_lr_scale, "0.05", 0, 1, OPEN_LO, "tri_stage: last lr / peak lr"),
    KN("optim", "update_freq", K_INT, optim.update_freq, "1", 1, 1000000, 0,
       "micro-batches whose gradients are summed per update"),
    KN("optim", "max_skips", K_INT, optim.max_skips, "10", 1, IMAX, 0,
       "steps with NaN/Inf loss or gradient in a row before the run stops"),
    /* [run] */
    KS("run", "dir", run.dir, "run", "run directory: log.jsonl, checkpoints/"),
    KN("run", "seed", K_U64, run.seed, "1", 0, 0, 0, "seed of every random choice (data order, masks, init)"),
    KN("run", "threads", K_INT, run.threads, "0", 0, 4096, 0, "compute threads per rank; 0 = OMP_NUM_THREADS"),
    KN("run", "log_every", K_I64, run.log_every, "100", 1, INF, 0, "log a line to RUN/log.jsonl every N updates"),
    KN("run", "save_every", K_I64, run.save_every, "10000", 1, INF, 0, "checkpoint every N updates (and at the end)"),
    KN("run", "keep_last", K_INT, run.keep_last, "3", 1, 1000000, 0, "checkpoints kept"),
    KN("run", "valid_every", K_I64, run.valid_every, "10000", 0, INF, 0,
       "validate on data.valid_corpus every N updates; 0 = never"),
    KN("run", "zero", K_INT, run.zero, "0", 0, 1, 0, "1 = ZeRO-1: each rank keeps its slice of the optimizer state"),
    KN("run", "watchdog_s", K_DOUBLE, run.watchdog_s, "600", 0, INF, 0,
       "abort when a step makes no progress for this many seconds; 0 = off"),
};
#define N_KEYS ((int)(sizeof keys / sizeof keys[0]))

static const char *const sections[] = {"data", "model", "objective", "optim", "run"};
#define N_SECTIONS ((int)(sizeof sections / sizeof sections[0]))
#define SECTION_LIST "[data] [model] [objective] [optim] [run]"

static int find_section(const char *s) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(sections[i], s)) return i;
    return -1;
}

/* Edit distance (insert, delete, substitute), for "did you mean" hints; short strings only. */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* " (did you mean 'x'?)" for the closest key of the section within distance 3, else "". */
static const char *did_you_mean(const char *section, const char *key, char *buf, size_t n);

static int find_key(const char *section, const char *key) {
    for (int k = 0; k < N_KEYS; k++)
        if (!strcmp(keys[k].section, section) && !strcmp(keys[k].key, key)) return k;
    return -1;
}

static const char *did_you_mean(const char *section, const char *key, char *buf, size_t n) {
    int best = 4, best_k = -1;
    for (int k = 0; k < N_KEYS; k++) {
        if (strcmp(keys[k].section, section)) continue;
        int d = edit_distance(key, keys[k].key);
        if (d < best) best = d, best_k = k;
    }
    if (best_k < 0) return "";
    snprintf(buf, n, " (did you mean '%s'?)", keys[best_k].key);
    return buf;
}

/* ---- values ------------------------------------------------------------------------------------ */

/* Whole numbers as integers ("10", not "1e+01"), others as the shortest %g text that reads back
 * as the same number. */
static void format_double(char *buf, size_t n, double v) {
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static void format_float(char *buf, size_t n, float v) {
    if (v == floorf(v) && fabsf(v) < 1e7f) {
        snprintf(buf, n, "%.0f", (double)v);
        return;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
}

static void describe_range(const RecipeKey *k, char *buf, size_t n) {
    char lo[32], hi[32];
    format_double(lo, sizeof lo, k->lo);
    format_double(hi, sizeof hi, k->hi);
    if (isinf(k->hi))
        snprintf(buf, n, "%s %s", k->open & OPEN_LO ? ">" : ">=", lo);
    else
        snprintf(buf, n, "in %c%s, %s%c", k->open & OPEN_LO ? '(' : '[', lo, hi, k->open & OPEN_HI ? ')' : ']');
}

static int in_range(const RecipeKey *k, double v) {
    if (k->open & OPEN_LO ? !(v > k->lo) : !(v >= k->lo)) return 0;
    if (k->open & OPEN_HI ? !(v < k->hi) : !(v <= k->hi)) return 0;
    return 1;
}

static int parse_integer(const RecipeKey *k, const char *s, double lo_type, double hi_type, long long *out,
                         char *why, size_t wn) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno) {
        snprintf(why, wn, "'%s' is not an integer", s);
        return -1;
    }
    char range[96];
    describe_range(k, range, sizeof range);
    if ((double)v < lo_type || (double)v > hi_type || !in_range(k, (double)v)) {
        snprintf(why, wn, "%s is out of range: must be %s", s, range);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_real(const RecipeKey *k, const char *s, double *out, char *why, size_t wn) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || isspace((unsigned char)*s)) {
        snprintf(why, wn, "'%s' is not a number", s);
        return -1;
    }
    if (!isfinite(v) || errno == ERANGE) {
        snprintf(why, wn, "'%s' is not a finite number", s);
        return -1;
    }
    if (!in_range(k, v)) {
        char range[96];
        describe_range(k, range, sizeof range);
        snprintf(why, wn, "%s is out of range: must be %s", s, range);
        return -1;
    }
    *out = v;
    return 0;
}

/* "(a, b[, c])": n numbers, each in the key's range. */
static int parse_tuple(const RecipeKey *k, const char *s, int n, double *out, char *why, size_t wn) {
    const char *p = s;
    double v[3];
    while (isspace((unsigned char)*p)) p++;
    if (*p++ != '(') goto bad;
    for (int i = 0; i < n; i++) {
        while (isspace((unsigned char)*p)) p++;
        char *end;
        errno = 0;
        v[i] = strtod(p, &end);
        if (end == p || errno == ERANGE || !isfinite(v[i])) goto bad;
        p = end;
        while (isspace((unsigned char)*p)) p++;
        if (*p++ != (i == n - 1 ? ')' : ',')) goto bad;
    }
    while (isspace((unsigned char)*p)) p++;
    if (*p) goto bad;
    for (int i = 0; i < n; i++) {
        if (!in_range(k, v[i])) {
            char range[96], num[32];
            describe_range(k, range, sizeof range);
            format_double(num, sizeof num, v[i]);
            snprintf(why, wn, "element %d (%s) of '%s' is out of range: must be %s", i + 1, num, s, range);
            return -1;
        }
    }
    memcpy(out, v, (size_t)n * sizeof(double));
    return 0;
bad:
    snprintf(why, wn, "'%s' is not a tuple of %d numbers like %s", s, n, k->def);
    return -1;
}

/* A string must survive being written as `key = value` and read back by libinih. */
static int check_string(const char *s, char *why, size_t wn) {
    if (strlen(s) >= RECIPE_STR_MAX) {
        snprintf(why, wn, "value is %zu characters long; at most %d are allowed", strlen(s), RECIPE_STR_MAX - 1);
        return -1;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p < 32) {
            snprintf(why, wn, "value contains a control character");
            return -1;
        }
        if (*p == ';' && p > s && isspace((unsigned char)p[-1])) {
            snprintf(why, wn, "value contains ' ;', which an INI file reads as a comment");
            return -1;
        }
    }
    if (*s && (isspace((unsigned char)s[0]) || isspace((unsigned char)s[strlen(s) - 1]))) {
        snprintf(why, wn, "value starts or ends with white space");
        return -1;
    }
    return 0;
}

/* Parse s as key k's value into r. On error returns -1 with the reason in why. */
static int set_value(Recipe *r, const RecipeKey *k, const char *s, char *why, size_t wn) {
    char *field = (char *)r + k->off;
    long long iv;
    double dv;
    switch (k->type) {
    case K_STR:
        if (check_string(s, why, wn)) return -1;
        snprintf(field, RECIPE_STR_MAX, "%s", s);
        return 0;
    case K_INT:
        if (parse_integer(k, s, INT_MIN, INT_MAX, &iv, why, wn)) return -1;
        *(int *)field = (int)iv;
        return 0;
    case K_I64:
        if (parse_integer(k, s, (double)INT64_MIN, (double)INT64_MAX, &iv, why, wn)) return -1;
        *(int64_t *)field = iv;
        return 0;
    case K_U64: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (!*s || *end || errno || strchr(s, '-')) {
            snprintf(why, wn, "'%s' is not a non-negative integer below 2^64", s);
            return -1;
        }
        *(uint64_t *)field = v;
        return 0;
    }
    case K_FLOAT:
        if (parse_real(k, s, &dv, why, wn)) return -1;
        *(float *)field = (float)dv;
        return 0;
    case K_DOUBLE:
        if (parse_real(k, s, &dv, why, wn)) return -1;
        *(double *)field = dv;
        return 0;
    case K_BOOL:
        if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcmp(s, "1")) {
            *(int *)field = 1;
            return 0;
        }
        if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcmp(s, "0")) {
            *(int *)field = 0;
            return 0;
        }
        snprintf(why, wn, "'%s' is not a boolean: use true or false", s);
        return -1;
    case K_ENUM: {
        for (const EnumName *e = k->names; e->name; e++)
            if (!strcmp(e->name, s)) {
                *(int *)field = e->value;
                return 0;
            }
        int len = snprintf(why, wn, "'%s' is not one of", s);
        for (const EnumName *e = k->names; e->name && len >= 0 && (size_t)len < wn; e++)
            len += snprintf(why + len, wn - (size_t)len, " %s", e->name);
        return -1;
    }
    case K_TUPLE2: return parse_tuple(k, s, 2, (double *)field, why, wn);
    case K_TUPLE3: return parse_tuple(k, s, 3, (double *)field, why, wn);
    case K_CONV: {
        ModelConfig tmp = *(ModelConfig *)field;
        if (recipe_parse_conv_layers(s, &tmp, why, wn)) return -1;
        *(ModelConfig *)field = tmp;
        return 0;
    }
    }
    koe_fatal(KOE_EXIT_INTERNAL, "recipe: key %s.%s has no type", k->section, k->key);
}

/* Canonical form: runs of equal layers as [(d,k,s)]*n, neighbouring single layers in one list. */
static void format_conv_layers(FILE *f, const ModelConfig *m) {
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

static void format_value(FILE *f, const Recipe *r, const RecipeKey *k) {
    const char *field = (const char *)r + k->off;
    char num[3][40];
    switch (k->type) {
    case K_STR: fputs(field, f); return;
    case K_INT: fprintf(f, "%d", *(const int *)field); return;
    case K_I64: fprintf(f, "%" PRId64, *(const int64_t *)field); return;
    case K_U64: fprintf(f, "%" PRIu64, *(const uint64_t *)field); return;
    case K_FLOAT:
        format_float(num[0], sizeof num[0], *(const float *)field);
        fputs(num[0], f);
        return;
    case K_DOUBLE:
        format_double(num[0], sizeof num[0], *(const double *)field);
        fputs(num[0], f);
        return;
    case K_BOOL: fputs(*(const int *)field ? "true" : "false", f); return;
    case K_ENUM:
        for (const EnumName *e = k->names; e->name; e++)
            if (e->value == *(const int *)field) {
                fputs(e->name, f);
                return;
            }
        koe_fatal(KOE_EXIT_INTERNAL, "recipe: %s.%s holds %d, not a value of its enum", k->section, k->key,
                  *(const int *)field);
    case K_TUPLE2:
    case K_TUPLE3: {
        int n = k->type == K_TUPLE2 ? 2 : 3;
        for (int i = 0; i < n; i++) format_double(num[i], sizeof num[i], ((const double *)field)[i]);
        if (n == 2)
            fprintf(f, "(%s,%s)", num[0], num[1]);
        else
            fprintf(f, "(%s,%s,%s)", num[0], num[1], num[2]);
        return;
    }
    case K_CONV: format_conv_layers(f, (const ModelConfig *)field); return;
    }
}

/* ---- conv_feature_layers ---------------------------------------------------------------------- */

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

static int conv_int(ConvParser *c, int *out) {
    conv_skip(c);
    if (!isdigit((unsigned char)*c->p)) return conv_fail(c, "expected a positive integer");
    char *end;
    errno = 0;
    long v = strtol(c->p, &end, 10);
    if (errno || v < 1 || v > 1000000) return conv_fail(c, "expected an integer in [1, 1000000]");
    c->p = end;
    *out = (int)v;
    return 0;
}

int recipe_parse_conv_layers(const char *s, ModelConfig *m, char *msg, size_t msg_len) {
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

/* ---- parsing ---------------------------------------------------------------------------------- */

typedef struct {
    Recipe *r;
    const char *name;        /* file name for messages */
    const char *text;        /* what the reader hands to libinih, line by line */
    size_t pos;
    int line;                /* line of what the reader handed out last */
    int indented;            /* that line starts with white space (libinih: a continuation) */
    int set_line[N_KEYS];    /* where each key got its value: 0 default, > 0 file line, < 0 override */
    char *const *overrides;
    int err_line;            /* first error we found (0: none) */
    KoeError err;
} ParseState;

static void parse_error(ParseState *ps, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void parse_error(ParseState *ps, int line, const char *fmt, ...) {
    if (ps->err_line) return; /* keep the first */
    ps->err_line = line;
    int len = snprintf(ps->err.msg, sizeof ps->err.msg, "%s:%d: ", ps->name, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err.msg + len, sizeof ps->err.msg - (size_t)len, fmt, ap);
    va_end(ap);
}

/* libinih reads through this, so that we know the line of every key and can check section names
 * (libinih only reports keys, so an empty unknown section would otherwise pass). */
static char *recipe_line_reader(char *buf, int num, void *stream) {
    ParseState *ps = stream;
    const char *s = ps->text + ps->pos;
    if (!*s) return NULL;
    const char *nl = strchr(s, '\n');
    size_t len = nl ? (size_t)(nl - s) + 1 : strlen(s);
    ps->pos += len;
    ps->line++;
    ps->indented = isspace((unsigned char)s[0]) && s[0] != '\n' && s[0] != '\r';
    size_t content = len - (nl ? 1 : 0);
    if (content > 0 && s[content - 1] == '\r') content--;
    if (content + 3 > (size_t)num)
        parse_error(ps, ps->line, "line is %zu characters long; at most %d fit", content, num - 3);
    size_t copy = len < (size_t)num - 1 ? len : (size_t)num - 1;
    memcpy(buf, s, copy);
    buf[copy] = 0;
    const char *p = s;
    while (p < s + content && isspace((unsigned char)*p)) p++;
    if (p < s + content && *p == '[') {
        const char *close = memchr(p, ']', (size_t)(s + content - p));
        if (close) {
            char sec[64];
            size_t n = (size_t)(close - p - 1);
            snprintf(sec, sizeof sec, "%.*s", (int)(n < sizeof sec - 1 ? n : sizeof sec - 1), p + 1);
            if (find_section(sec) < 0)
                parse_error(ps, ps->line, "unknown section [%s]; the sections are " SECTION_LIST, sec);
        }
    }
    return buf;
}

static int recipe_key_handler(void *user, const char *section, const char *name, const char *value) {
    ParseState *ps = user;
    const int line = ps->line;
    if (!*section) {
        parse_error(ps, line, "key '%s' is outside any section; put it under one of " SECTION_LIST, name);
        return 0;
    }
    if (find_section(section) < 0) {
        parse_error(ps, line, "[%s] %s: unknown section [%s]; the sections are " SECTION_LIST, section, name, section);
        return 0;
    }
    int k = find_key(section, name);
    if (k < 0) {
        char hint[96];
        parse_error(ps, line, "[%s] %s: unknown key '%s'%s; `koe help train` lists the keys", section, name, name,
                    did_you_mean(section, name, hint, sizeof hint));
        return 0;
    }
    if (ps->set_line[k] > 0) {
        if (ps->indented)
            parse_error(ps, line, "[%s] %s: an indented line continues the value of '%s'; remove the indentation",
                        section, name, name);
        else
            parse_error(ps, line, "[%s] %s: key given twice (first at line %d)", section, name, ps->set_line[k]);
        return 0;
    }
    char why[512];
    if (set_value(ps->r, &keys[k], value, why, sizeof why)) {
        parse_error(ps, line, "[%s] %s = %s: %s", section, name, value, why);
        return 0;
    }
    ps->set_line[k] = line;
    return 1;
}

static int apply_override(ParseState *ps, int i, KoeError *err) {
    const char *o = ps->overrides[i];
    const char *eq = strchr(o, '='), *dot = strchr(o, '.');
    if (!eq || !dot || dot > eq)
        return koe_error_set(err, "command line override '%s': expected section.key=value (e.g. optim.lr=1e-4)", o);
    char section[64], key[128], value[1024];
    const char *a = o, *b = dot;
    while (isspace((unsigned char)*a)) a++;
    snprintf(section, sizeof section, "%.*s", (int)(b - a), a);
    a = dot + 1, b = eq;
    while (b > a && isspace((unsigned char)b[-1])) b--;
    snprintf(key, sizeof key, "%.*s", (int)(b - a), a);
    a = eq + 1;
    while (isspace((unsigned char)*a)) a++;
    b = a + strlen(a);
    while (b > a && isspace((unsigned char)b[-1])) b--;
    if ((size_t)(b - a) >= sizeof value)
        return koe_error_set(err, "command line override '%s': value too long", o);
    snprintf(value, sizeof value, "%.*s", (int)(b - a), a);
    if (find_section(section) < 0)
        return koe_error_set(err, "command line override '%s': unknown section [%s]; the sections are " SECTION_LIST,
                             o, section);
    int k = find_key(section, key);
    if (k < 0) {
        char hint[96];
        return koe_error_set(err, "command line override '%s': unknown key %s.%s%s; `koe help train` lists the keys",
                             o, section, key, did_you_mean(section, key, hint, sizeof hint));
    }
    char why[512];
    if (set_value(ps->r, &keys[k], value, why, sizeof why))
        return koe_error_set(err, "command line override '%s': %s.%s: %s", o, section, key, why);
    ps->set_line[k] = -(i + 1);
    return 0;
}

/* Where key (section, key) got its value, for cross-key messages. */
static const char *where(const ParseState *ps, const char *section, const char *key, char *buf, size_t n) {
    int k = find_key(section, key);
    KOE_ASSERT(k >= 0);
    int s = ps->set_line[k];
    if (s > 0)
        snprintf(buf, n, "%s:%d", ps->name, s);
    else if (s < 0)
        snprintf(buf, n, "command line override '%s'", ps->overrides[-s - 1]);
    else
        snprintf(buf, n, "%s (default)", ps->name);
    return buf;
}

/* Rules between keys. The message names the first key's place and value, then the other's. */
static int check_recipe(const ParseState *ps, KoeError *err) {
    const Recipe *r = ps->r;
    const ModelConfig *m = &r->model;
    char w1[1200], w2[1200];
#define WHERE1(s, k) where(ps, s, k, w1, sizeof w1)
#define WHERE2(s, k) where(ps, s, k, w2, sizeof w2)
    if (m->D % m->H)
        return koe_error_set(err, "%s: model.encoder_attention_heads = %d must divide model.encoder_embed_dim = %d (%s)",
                             WHERE1("model", "encoder_attention_heads"), m->H, m->D,
                             WHERE2("model", "encoder_embed_dim"));
    if (m->encoder == ENCODER_TRANSFORMER && m->D % m->pos_conv_groups)
        return koe_error_set(err, "%s: model.conv_pos_groups = %d must divide model.encoder_embed_dim = %d (%s)",
                             WHERE1("model", "conv_pos_groups"), m->pos_conv_groups, m->D,
                             WHERE2("model", "encoder_embed_dim"));
    if (m->encoder == ENCODER_CONFORMER && m->conformer_kernel % 2 == 0)
        return koe_error_set(err, "%s: model.depthwise_conv_kernel_size = %d must be odd (same-length convolution)",
                             WHERE1("model", "depthwise_conv_kernel_size"), m->conformer_kernel);
    if (r->data.min_sample_size > r->data.max_sample_size)
        return koe_error_set(err, "%s: data.min_sample_size = %" PRId64 " is above data.max_sample_size = %" PRId64 " (%s)",
                             WHERE1("data", "min_sample_size"), r->data.min_sample_size, r->data.max_sample_size,
                             WHERE2("data", "max_sample_size"));
    if (r->data.max_tokens < r->data.max_sample_size)
        return koe_error_set(err,
                             "%s: data.max_tokens = %" PRId64 " cannot hold one utterance of data.max_sample_size = %" PRId64
                             " (%s); raise max_tokens or lower max_sample_size",
                             WHERE1("data", "max_tokens"), r->data.max_tokens, r->data.max_sample_size,
                             WHERE2("data", "max_sample_size"));
    const RecipeOptim *o = &r->optim;
    if (o->schedule != SCHEDULE_TRI_STAGE && o->warmup >= o->max_updates)
        return koe_error_set(err, "%s: optim.warmup = %" PRId64 " must be below optim.max_updates = %" PRId64 " (%s)",
                             WHERE1("optim", "warmup"), o->warmup, o->max_updates, WHERE2("optim", "max_updates"));
    if (o->schedule == SCHEDULE_TRI_STAGE) {
        double sum = o->phase_ratio[0] + o->phase_ratio[1] + o->phase_ratio[2];
        if (fabs(sum - 1.0) > 1e-6)
            return koe_error_set(err, "%s: optim.phase_ratio must sum to 1 (it sums to %g) for optim.schedule = tri_stage",
                                 WHERE1("optim", "phase_ratio"), sum);
    }
    const RecipeObjective *ob = &r->objective;
    if (ob->temp[0] < ob->temp[1] || ob->temp[2] > 1.0)
        return koe_error_set(err, "%s: objective.temp = (max, min, decay) needs max >= min and decay <= 1",
                             WHERE1("objective", "temp"));
    int vq_dim = ob->latent_dim > 0 ? ob->latent_dim : ob->final_dim;
    if (ob->name == OBJECTIVE_WAV2VEC2 && vq_dim % ob->latent_groups)
        return koe_error_set(err, "%s: objective.latent_groups = %d must divide the codevector dim %d (latent_dim, or final_dim when latent_dim = 0)",
                             WHERE1("objective", "latent_groups"), ob->latent_groups, vq_dim);
    if (m->frontend == FRONTEND_FBANK && r->data.features != FEAT_FBANK)
        return koe_error_set(err, "%s: model.frontend = fbank needs data.features = fbank (%s)",
                             WHERE1("model", "frontend"), WHERE2("data", "features"));
    if (ob->name == OBJECTIVE_BESTRQ && r->data.features != FEAT_FBANK)
        return koe_error_set(err, "%s: objective.name = bestrq quantizes fbank frames: it needs data.features = fbank (%s)",
                             WHERE1("objective", "name"), WHERE2("data", "features"));
#undef WHERE1
#undef WHERE2
    return 0;
}

/* Every resolved line must fit libinih's line (INI_MAX_LINE 200 with '\r', '\n' and NUL), or the
 * stored recipe would not parse again. */
#define RECIPE_LINE_MAX 197

static int check_lines(const ParseState *ps, KoeError *err) {
    const char *t = ps->r->text;
    while (*t) {
        const char *nl = strchr(t, '\n');
        size_t len = nl ? (size_t)(nl - t) : strlen(t);
        if (len > RECIPE_LINE_MAX) {
            char key[64], w[1200];
            const char *eq = memchr(t, ' ', len);
            snprintf(key, sizeof key, "%.*s", (int)(eq ? eq - t : 0), t);
            for (int k = 0; k < N_KEYS; k++)
                if (!strcmp(keys[k].key, key))
                    return koe_error_set(err, "%s: %s.%s: the value is too long: its recipe line would be %zu "
                                         "characters, at most %d fit", where(ps, keys[k].section, key, w, sizeof w),
                                         keys[k].section, key, len, RECIPE_LINE_MAX);
            koe_fatal(KOE_EXIT_INTERNAL, "recipe: resolved line without a key: %.40s", t);
        }
        t += len + (nl ? 1 : 0);
    }
    return 0;
}

static char *format_recipe(const Recipe *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) koe_fatal(KOE_EXIT_INTERNAL, "open_memstream failed");
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "%s[%s]\n", s ? "\n" : "", sections[s]);
        for (int k = 0; k < N_KEYS; k++) {
            if (strcmp(keys[k].section, sections[s])) continue;
            fprintf(f, "%s =", keys[k].key);
            if (keys[k].type != K_STR || *((const char *)r + keys[k].off)) fputc(' ', f);
            format_value(f, r, &keys[k]);
            fputc('\n', f);
        }
    }
    if (fclose(f)) koe_fatal(KOE_EXIT_INTERNAL, "formatting the recipe failed");
    return buf;
}

uint64_t recipe_hash_text(const char *text) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 */
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void set_defaults(Recipe *r) {
    memset(r, 0, sizeof *r);
    for (int k = 0; k < N_KEYS; k++) {
        char why[512];
        if (set_value(r, &keys[k], keys[k].def, why, sizeof why))
            koe_fatal(KOE_EXIT_INTERNAL, "recipe: default of %s.%s: %s", keys[k].section, keys[k].key, why);
    }
}

int recipe_load_string(Recipe *r, const char *name, const char *text, int n_overrides, char *const *overrides,
                       KoeError *err) {
    set_defaults(r);
    ParseState ps = {.r = r, .name = name, .text = text, .overrides = overrides};
    int rc = ini_parse_stream(recipe_line_reader, &ps, recipe_key_handler, &ps);
    if (rc == -2) koe_fatal(KOE_EXIT_INTERNAL, "recipe %s: out of memory in libinih", name);
    if (rc > 0 && (!ps.err_line || rc < ps.err_line)) {
        ps.err_line = 0;
        parse_error(&ps, rc, "syntax error: expected [section], key = value, or a comment starting with ; or #");
    }
    if (rc != 0 || ps.err_line) {
        if (err) *err = ps.err;
        return -1;
    }
    for (int i = 0; i < n_overrides; i++)
        if (apply_override(&ps, i, err)) return -1;
    if (check_recipe(&ps, err)) return -1;
    r->text = format_recipe(r);
    if (check_lines(&ps, err)) {
        recipe_free(r);
        return -1;
    }
    r->hash = recipe_hash_text(r->text);
    return 0;
}

int recipe_load(Recipe *r, const char *path, int n_overrides, char *const *overrides, KoeError *err) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) return koe_error_set(err, "cannot open recipe %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) text = koe_realloc(text, cap = 2 * cap + 4096 + 1);
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    text[len] = 0;
    if (bad) {
        free(text);
        return koe_error_set(err, "cannot read recipe %s: read error", path);
    }
    if (strlen(text) != len) {
        free(text);
        return koe_error_set(err, "%s: not a text file (contains a NUL byte)", path);
    }
    int rc = recipe_load_string(r, path, text, n_overrides, overrides, err);
    free(text);
    return rc;
}

void recipe_adamw_config(const Recipe *r, AdamWConfig *c) {
    *c = (AdamWConfig){.beta1 = r->optim.betas[0], .beta2 = r->optim.betas[1], .eps = r->optim.eps,
                       .weight_decay = r->optim.weight_decay};
}

void recipe_schedule_config(const Recipe *r, ScheduleConfig *s) {
    const RecipeOptim *o = &r->optim;
    *s = (ScheduleConfig){.kind = o->schedule, .lr = o->lr, .warmup = o->warmup, .max_updates = o->max_updates,
                          .phase_ratio = {o->phase_ratio[0], o->phase_ratio[1], o->phase_ratio[2]},
                          .init_lr_scale = o->init_lr_scale, .final_lr_scale = o->final_lr_scale};
}

int recipe_objective_config(const Recipe *r, int n_classes, ObjectiveConfig *c, KoeError *err) {
    const RecipeObjective *o = &r->objective;
    const ModelConfig *m = &r->model;
    *c = (ObjectiveConfig){
        .name = (ObjectiveName)o->name,
        .feature_pen_weight = (float)o->feature_pen_weight,
        .diversity_weight = (float)o->diversity_weight,
        .nomask_weight = (float)o->pred_nomask_weight,
        .hubert = {.D = m->D, .final_dim = o->final_dim, .n_classes = n_classes, .logit_temp = (float)o->logit_temp},
        .wav2vec2 = {.C = m->conv_dim[m->n_conv - 1],
                     .D = m->D,
                     .final_dim = o->final_dim,
                     .G = o->latent_groups,
                     .V = o->latent_vars,
                     .vq_dim = o->latent_dim ? o->latent_dim : o->final_dim,
                     .n_negatives = o->num_negatives,
                     .logit_temp = (float)o->logit_temp,
                     .temp = {o->temp[0], o->temp[1], o->temp[2]},
                     .dropout_features = m->dropout_features},
        .bestrq = {.feat_dim = m->fbank_dim,
                   .stack = m->fbank_stack,
                   .D = m->D,
                   .codebooks = o->codebooks,
                   .codebook_size = o->codebook_size,
                   .codebook_dim = o->codebook_dim,
                   .mask_prob = m->mask_prob,
                   .mask_length = m->mask_length,
                   .noise_std = (float)o->mask_noise_std},
    };
    if (o->name == OBJECTIVE_WAV2VEC2 && c->wav2vec2.vq_dim % o->latent_groups)
        return koe_error_set(err, "objective.latent_dim (or final_dim) = %d must be a multiple of "
                                  "objective.latent_groups = %d",
                             c->wav2vec2.vq_dim, o->latent_groups);
    return 0;
}

void recipe_free(Recipe *r) {
    free(r->text);
    r->text = NULL;
}

void recipe_print_keys(FILE *f) {
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "%s[%s]\n", s ? "\n" : "", sections[s]);
        for (int k = 0; k < N_KEYS; k++) {
            if (strcmp(keys[k].section, sections[s])) continue;
            char def[128];
            snprintf(def, sizeof def, "%s", *keys[k].def ? keys[k].def : "\"\"");
            if (strlen(def) > 24)
                fprintf(f, "  %-26s = %s\n  %-26s   %-24s %s\n", keys[k].key, def, "", "", keys[k].doc);
            else
                fprintf(f, "  %-26s = %-24s %s\n", keys[k].key, def, keys[k].doc);
        }
    }
}

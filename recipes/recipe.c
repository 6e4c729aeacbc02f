/* recipe.c — the recipe key table, the INI parser on top of libinih, overrides, validation and
 * the resolved text. See recipe.h. Must not touch the corpus, the model or MPI: a recipe is only
 * checked for what it says, not for what exists on disk. */
#include "recipe.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ini.h>

#include "../core/layers.h"
#include "../data/loader.h"

/* ---- the key table ----------------------------------------------------------------------------
 * A recipe key is declared once, by the struct that holds it: [model] is core's model_keys (the
 * ModelConfig settings, with their config.json names), [data] is the recipe's own corpus keys plus
 * data/loader.c's loader_keys (stored in RecipeData's fields of the same names), and [objective]
 * [optim] [run] are declared here. keys[] lists them all, in the order of the resolved text. */

typedef struct {
    const char *section;
    const ConfigKey *k;
    size_t off; /* offsetof(Recipe, field) */
} RecipeKey;

static const EnumName objective_names[] = {
    {"hubert", OBJ_HUBERT, NULL}, {"wav2vec2", OBJ_WAV2VEC2, NULL}, {"bestrq", OBJ_BESTRQ, NULL},
    {NULL, 0, NULL}};
static const EnumName schedule_names[] = {{"linear", SCHEDULE_LINEAR, NULL}, {"cosine", SCHEDULE_COSINE, NULL},
                                          {"tri_stage", SCHEDULE_TRI_STAGE, NULL}, {NULL, 0, NULL}};
static const EnumName precision_names[] = {{"fp32", PRECISION_FP32, NULL}, {"bf16", PRECISION_BF16, NULL},
                                           {"auto", PRECISION_AUTO, NULL}, {NULL, 0, NULL}};

/* enum fields are written through int pointers */
_Static_assert(sizeof(ObjectiveName) == sizeof(int) && sizeof(ScheduleKind) == sizeof(int) &&
                   sizeof(RunPrecision) == sizeof(int),
               "enums are int-sized");

#define OFF(field) offsetof(Recipe, field)
#define INF INFINITY
#define IMAX 2147483647.0
#define KS(key, field, def, doc) {key, K_STR, OFF(field), def, 0, 0, 0, NULL, doc, NULL, 0}
#define KN(key, type, field, def, lo, hi, open, doc) {key, type, OFF(field), def, lo, hi, open, NULL, doc, NULL, 0}
#define KE(key, field, def, names, doc) {key, K_ENUM, OFF(field), def, 0, 0, 0, names, doc, NULL, 0}

static const ConfigKey data_keys[] = {
    KS("corpus", data.corpus, "", "corpus directory (koe prepare --out)"),
    KS("valid_corpus", data.valid_corpus, "", "held-out corpus for validation; empty = no validation"),
    KS("labels", data.labels, "", "label set name under CORPUS/labels/ (HuBERT targets)"),
};
static const ConfigKey objective_keys[] = {
    KE("name", objective.name, "hubert", objective_names, "hubert | wav2vec2 | bestrq"),
    KN("final_dim", K_INT, objective.final_dim, "256", 1, 65536, 0,
       "hubert, wav2vec2: projection dim of the logits"),
    KN("logit_temp", K_DOUBLE, objective.logit_temp, "0.1", 0, INF, OPEN_LO,
       "hubert, wav2vec2: cosine similarity is divided by this"),
    KN("feature_pen_weight", K_DOUBLE, objective.feature_pen_weight, "10", 0, INF, 0,
       "hubert, wav2vec2: weight of the feature penalty (mean squared conv output)"),
    KN("label_rate", K_INT, objective.label_rate, "50", 1, 1000, 0,
       "hubert: label frames per second (100 for MFCC labels, 50 for layer labels)"),
    KN("pred_nomask_weight", K_DOUBLE, objective.pred_nomask_weight, "0", 0, INF, 0,
       "hubert: weight of the cross-entropy on unmasked frames (the paper's 1 - alpha; 0 = masked only)"),
    KN("latent_groups", K_INT, objective.latent_groups, "2", 1, 64, 0, "wav2vec2: quantizer groups G"),
    KN("latent_vars", K_INT, objective.latent_vars, "320", 1, 65536, 0,
       "wav2vec2: codebook entries per group V"),
    KN("latent_dim", K_INT, objective.latent_dim, "0", 0, 65536, 0,
       "wav2vec2: codevector dim (split over groups); 0 = final_dim"),
    KN("num_negatives", K_INT, objective.num_negatives, "100", 1, 100000, 0,
       "wav2vec2: distractors from masked frames of the same utterance"),
    KN("diversity_weight", K_DOUBLE, objective.diversity_weight, "0.1", 0, INF, 0,
       "wav2vec2: weight of the codebook diversity loss"),
    KN("temp", K_TUPLE3, objective.temp, "(2,0.5,0.999995)", 0, INF, OPEN_LO,
       "wav2vec2: Gumbel temperature (max, min, decay): max(max * decay^step, min)"),
    KN("codebooks", K_INT, objective.codebooks, "1", 1, 64, 0, "bestrq: independent quantizers"),
    KN("codebook_size", K_INT, objective.codebook_size, "8192", 2, 65536, 0, "bestrq: codes per codebook"),
    KN("codebook_dim", K_INT, objective.codebook_dim, "16", 1, 4096, 0, "bestrq: code dimension"),
    KN("mask_noise_std", K_DOUBLE, objective.mask_noise_std, "0.1", 0, INF, 0,
       "bestrq: masked input frames are replaced by N(0, std^2) noise"),
};
static const ConfigKey optim_keys[] = {
    KN("lr", K_DOUBLE, optim.lr, "0.0005", 0, 10, OPEN_LO, "peak learning rate"),
    KN("betas", K_TUPLE2, optim.betas, "(0.9,0.98)", 0, 1, OPEN_HI, "AdamW (beta1, beta2)"),
    KN("eps", K_DOUBLE, optim.eps, "1e-06", 0, 1, OPEN_LO, "AdamW epsilon"),
    KN("weight_decay", K_DOUBLE, optim.weight_decay, "0.01", 0, INF, 0, "AdamW decoupled weight decay"),
    KN("clip_norm", K_DOUBLE, optim.clip_norm, "10", 0, INF, 0,
       "clip the global gradient norm to this; 0 = no clipping"),
    KE("schedule", optim.schedule, "linear", schedule_names,
       "linear (fairseq polynomial_decay) | cosine | tri_stage"),
    KN("warmup", K_I64, optim.warmup, "32000", 0, INF, 0, "linear, cosine: warmup updates from lr 0"),
    KN("max_updates", K_I64, optim.max_updates, "400000", 1, INF, 0, "updates in the run"),
    KN("phase_ratio", K_TUPLE3, optim.phase_ratio, "(0.1,0.4,0.5)", 0, 1, 0,
       "tri_stage: warmup, hold, decay fractions of max_updates (sum 1)"),
    KN("init_lr_scale", K_DOUBLE, optim.init_lr_scale, "0.01", 0, 1, OPEN_LO, "tri_stage: first lr / peak lr"),
    KN("final_lr_scale", K_DOUBLE, optim.final_lr_scale, "0.05", 0, 1, OPEN_LO, "tri_stage: last lr / peak lr"),
    KN("update_freq", K_INT, optim.update_freq, "1", 1, 1000000, 0,
       "micro-batches whose gradients are summed per update"),
    KN("max_skips", K_INT, optim.max_skips, "10", 1, IMAX, 0,
       "steps with NaN/Inf loss or gradient in a row before the run stops"),
};
static const ConfigKey run_keys[] = {
    KS("dir", run.dir, "run", "run directory: log.jsonl, checkpoints/"),
    KN("seed", K_U64, run.seed, "1", 0, 0, 0, "seed of every random choice (data order, masks, init)"),
    KS("init_from", run.init_from, "",
       "a new run starts from this checkpoint's weights (koe init --from DIR|FILE.pt imports a published "
       "model as one): same architecture, head where it fits, fresh optimizer, step 0; empty = run.seed's init"),
    KN("threads", K_INT, run.threads, "0", 0, 4096, 0, "compute threads per rank; 0 = OMP_NUM_THREADS"),
    KE("precision", run.precision, "fp32", precision_names,
       "fp32 | bf16 | auto: bf16 = GEMM and convolution operands in bf16 with fp32 accumulation (weights, "
       "gradients, AdamW, norms, softmax, losses in fp32), refused on a CPU without bf16 dot products; "
       "auto = bf16 where every rank's CPU has them, else fp32"),
    KN("log_every", K_I64, run.log_every, "100", 1, INF, 0, "log a line to RUN/log.jsonl every N updates"),
    KN("save_every", K_I64, run.save_every, "10000", 1, INF, 0, "checkpoint every N updates (and at the end)"),
    KN("keep_last", K_INT, run.keep_last, "3", 1, 1000000, 0, "checkpoints kept"),
    KN("valid_every", K_I64, run.valid_every, "10000", 0, INF, 0,
       "validate on data.valid_corpus every N updates; 0 = never"),
    KN("zero", K_INT, run.zero, "0", 0, 1, 0, "1 = ZeRO-1: each rank keeps its slice of the optimizer state"),
    KN("watchdog_s", K_DOUBLE, run.watchdog_s, "600", 0, INF, 0,
       "abort when a step makes no progress for this many seconds; 0 = off"),
    KN("plot_every", K_I64, run.plot_every, "0", 0, INF, 0,
       "redraw RUN/plots (as koe plot) at each checkpoint whose step is a multiple of N; 0 = never"),
    KN("health_min_ppl", K_DOUBLE, run.health_min_ppl, "4", 0, INF, 0,
       "wav2vec 2.0: stop (exit 2) when code_ppl or prob_ppl stays below this after warmup; 0 = off"),
    KN("health_min_target_ppl", K_DOUBLE, run.health_min_target_ppl, "2", 0, INF, 0,
       "BEST-RQ: stop (exit 2) when the targets' perplexity (mean over codebooks) stays below this; 0 = off"),
    KN("health_patience", K_INT, run.health_patience, "5", 1, 1000000, 0,
       "log lines in a row a health_min_ppl or health_min_target_ppl collapse must last before the run stops"),
    KN("health_plateau_updates", K_I64, run.health_plateau_updates, "5000", 0, INF, 0,
       "stop (exit 2) when the loss at this many updates and after has not fallen by health_plateau_drop "
       "from its first logged value; 0 = off"),
    KN("health_plateau_drop", K_DOUBLE, run.health_plateau_drop, "0.01", 0, 1, OPEN_LO,
       "the least relative fall of the loss health_plateau_updates asks for"),
};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define MAX_KEYS 128
static RecipeKey keys[MAX_KEYS];
static int n_keys;
static pthread_once_t keys_once = PTHREAD_ONCE_INIT;

static void add_keys(const char *section, const ConfigKey *k, int n, size_t base) {
    for (int i = 0; i < n; i++) {
        KOE_ASSERT(n_keys < MAX_KEYS);
        keys[n_keys++] = (RecipeKey){section, &k[i], base + k[i].off};
    }
}

static void build_keys(void) {
    add_keys("data", data_keys, COUNT(data_keys), 0);
    add_keys("data", loader_keys, loader_n_keys, OFF(data.loader));
    add_keys("model", model_keys, model_n_keys, OFF(model));
    add_keys("objective", objective_keys, COUNT(objective_keys), 0);
    add_keys("optim", optim_keys, COUNT(optim_keys), 0);
    add_keys("run", run_keys, COUNT(run_keys), 0);
}

/* The table, built on first use. */
static void recipe_keys(void) { pthread_once(&keys_once, build_keys); }

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
    recipe_keys();
    for (int k = 0; k < n_keys; k++)
        if (!strcmp(keys[k].section, section) && !strcmp(keys[k].k->key, key)) return k;
    return -1;
}

static const char *did_you_mean(const char *section, const char *key, char *buf, size_t n) {
    int best = 4, best_k = -1;
    for (int k = 0; k < n_keys; k++) {
        if (strcmp(keys[k].section, section)) continue;
        int d = edit_distance(key, keys[k].k->key);
        if (d < best) best = d, best_k = k;
    }
    if (best_k < 0) return "";
    snprintf(buf, n, " (did you mean '%s'?)", keys[best_k].k->key);
    return buf;
}

/* ---- values ------------------------------------------------------------------------------------ */

/* Parse s as key k's value into r. On error returns -1 with the reason in why. */
static int set_value(Recipe *r, const RecipeKey *k, const char *s, char *why, size_t wn) {
    return config_key_parse(k->k, (char *)r + k->off, s, why, wn);
}

static void format_value(FILE *f, const Recipe *r, const RecipeKey *k) {
    config_key_format(f, k->k, (const char *)r + k->off);
}

/* ---- parsing ---------------------------------------------------------------------------------- */

enum { SET_BY_SOURCE = INT_MAX };

typedef struct {
    Recipe *r;
    const char *name;        /* file name for messages */
    const char *text;        /* what the reader hands to libinih, line by line */
    size_t pos;
    int line;                /* line of what the reader handed out last */
    int indented;            /* that line starts with white space (libinih: a continuation) */
    int set_line[MAX_KEYS];  /* where each key got its value: 0 default, > 0 file line, < 0 override,
                                SET_BY_SOURCE: [model] from recipe_load_model's source */
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
    if (s == SET_BY_SOURCE)
        snprintf(buf, n, "%s", ps->name);
    else if (s > 0)
        snprintf(buf, n, "%s:%d", ps->name, s);
    else if (s < 0)
        snprintf(buf, n, "command line override '%s'", ps->overrides[-s - 1]);
    else
        snprintf(buf, n, "%s (default)", ps->name);
    return buf;
}

#define WHERE1(s, k) where(ps, s, k, w1, sizeof w1)
#define WHERE2(s, k) where(ps, s, k, w2, sizeof w2)

/* Whether an input of n samples (or fbank frames) gives at least one encoder frame; the receptive
 * field is checked against n at each layer, since a stack of large strides overflows int64. */
static int frontend_fits(const ModelConfig *m, int64_t n) {
    if (m->frontend == FRONTEND_FBANK) return n >= m->fbank_stack;
    int64_t r = 1;
    for (int i = m->n_conv - 1; i >= 0; i--)
        if (__builtin_mul_overflow(r - 1, (int64_t)m->conv_stride[i], &r) ||
            __builtin_add_overflow(r, (int64_t)m->conv_kernel[i], &r) || r > n)
            return 0;
    return 1;
}

/* Rules between [model] keys, and between [model] and [data]. */
static int check_model(const ParseState *ps, KoeError *err) {
    const Recipe *r = ps->r;
    const ModelConfig *m = &r->model;
    char w1[1200], w2[1200];
    if (m->D % m->H)
        return koe_error_set(err, "%s: model.encoder_attention_heads = %d must divide model.encoder_embed_dim = %d (%s)",
                             WHERE1("model", "encoder_attention_heads"), m->H, m->D,
                             WHERE2("model", "encoder_embed_dim"));
    if (m->D % m->pos_conv_groups) /* both encoders start with the convolutional positional embedding */
        return koe_error_set(err, "%s: model.conv_pos_groups = %d must divide model.encoder_embed_dim = %d (%s)",
                             WHERE1("model", "conv_pos_groups"), m->pos_conv_groups, m->D,
                             WHERE2("model", "encoder_embed_dim"));
    if (m->frontend == FRONTEND_WAVEFORM && m->conv_norm == CONV_NORM_GROUP && m->conv_dim[0] > GROUPNORM_MAX_C)
        return koe_error_set(err, "%s: the first conv layer has %d channels; its GroupNorm (model.extractor_mode = "
                             "default) takes at most %d: use fewer, or model.extractor_mode = layer_norm",
                             WHERE1("model", "conv_feature_layers"), m->conv_dim[0], GROUPNORM_MAX_C);
    if (m->encoder == ENCODER_CONFORMER && m->conformer_kernel % 2 == 0)
        return koe_error_set(err, "%s: model.depthwise_conv_kernel_size = %d must be odd (same-length convolution)",
                             WHERE1("model", "depthwise_conv_kernel_size"), m->conformer_kernel);
    if (m->frontend == FRONTEND_FBANK && m->fbank_dim != features_dim(FEAT_FBANK))
        return koe_error_set(err, "%s: model.fbank_dim = %d, but koe computes %d-bin fbank; set model.fbank_dim = %d",
                             WHERE1("model", "fbank_dim"), m->fbank_dim, features_dim(FEAT_FBANK),
                             features_dim(FEAT_FBANK));
    const int64_t min_len = r->data.loader.plan.min_sample_size;
    const int64_t min_in = m->frontend == FRONTEND_FBANK ? features_num_frames(min_len) : min_len;
    if (!frontend_fits(m, min_in)) {
        const int fb = m->frontend == FRONTEND_FBANK;
        return koe_error_set(err, "%s: %s: an utterance of data.min_sample_size = %" PRId64 " samples (%s) gives "
                             "no encoder frame; raise data.min_sample_size or shrink the %s",
                             WHERE1("model", fb ? "fbank_stack" : "conv_feature_layers"),
                             fb ? "model.fbank_stack" : "model.conv_feature_layers", min_len,
                             WHERE2("data", "min_sample_size"), fb ? "stack" : "kernels and strides");
    }
    return 0;
}

/* Rules between keys. The message names the first key's place and value, then the other's. */
static int check_recipe(const ParseState *ps, KoeError *err) {
    const Recipe *r = ps->r;
    char w1[1200], w2[1200];
    if (check_model(ps, err)) return -1;
    if (!r->run.dir[0])
        return koe_error_set(err, "%s: run.dir is empty; name the run directory (relative paths are under the "
                             "current directory)", WHERE1("run", "dir"));
    if (r->data.loader.plan.min_sample_size > r->data.loader.plan.max_sample_size)
        return koe_error_set(err, "%s: data.min_sample_size = %" PRId64 " is above data.max_sample_size = %" PRId64 " (%s)",
                             WHERE1("data", "min_sample_size"), r->data.loader.plan.min_sample_size, r->data.loader.plan.max_sample_size,
                             WHERE2("data", "max_sample_size"));
    if (r->data.loader.plan.max_tokens < r->data.loader.plan.max_sample_size)
        return koe_error_set(err,
                             "%s: data.max_tokens = %" PRId64 " cannot hold one utterance of data.max_sample_size = %" PRId64
                             " (%s); raise max_tokens or lower max_sample_size",
                             WHERE1("data", "max_tokens"), r->data.loader.plan.max_tokens, r->data.loader.plan.max_sample_size,
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
    if (ob->name == OBJ_WAV2VEC2 && vq_dim % ob->latent_groups)
        return koe_error_set(err, "%s: objective.latent_groups = %d must divide the codevector dim %d (latent_dim, or final_dim when latent_dim = 0)",
                             WHERE1("objective", "latent_groups"), ob->latent_groups, vq_dim);
    const ModelConfig *m = &r->model;
    if (m->frontend == FRONTEND_FBANK && r->data.loader.features != FEAT_FBANK)
        return koe_error_set(err, "%s: model.frontend = fbank needs data.features = fbank (%s)",
                             WHERE1("model", "frontend"), WHERE2("data", "features"));
    if (m->frontend == FRONTEND_FBANK && m->normalize_waveform)
        return koe_error_set(err, "%s: model.normalize_waveform = true normalises the waveform frontend's input, but "
                                  "model.frontend = fbank (%s); the fbank frontend has model.fbank_norm",
                             WHERE1("model", "normalize_waveform"), WHERE2("model", "frontend"));
    if (ob->name == OBJ_BESTRQ && (r->data.loader.features != FEAT_FBANK || m->frontend != FRONTEND_FBANK))
        return koe_error_set(err, "%s: objective.name = bestrq quantizes fbank frames: it needs model.frontend = fbank "
                                  "and data.features = fbank (%s)",
                             WHERE1("objective", "name"), WHERE2("data", "features"));
    if (ob->name == OBJ_WAV2VEC2 && m->frontend != FRONTEND_WAVEFORM)
        return koe_error_set(err, "%s: objective.name = wav2vec2 quantizes the conv features: it needs "
                                  "model.frontend = waveform (%s)",
                             WHERE1("objective", "name"), WHERE2("model", "frontend"));
    return 0;
}
#undef WHERE1
#undef WHERE2

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
            for (int k = 0; k < n_keys; k++)
                if (!strcmp(keys[k].k->key, key))
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
        for (int k = 0; k < n_keys; k++) {
            if (strcmp(keys[k].section, sections[s])) continue;
            fprintf(f, "%s =", keys[k].k->key);
            if (keys[k].k->type != K_STR || *((const char *)r + keys[k].off)) fputc(' ', f);
            format_value(f, r, &keys[k]);
            fputc('\n', f);
        }
    }
    if (fclose(f)) koe_fatal(KOE_EXIT_INTERNAL, "formatting the recipe failed");
    return buf;
}

uint64_t recipe_hash_text(const char *text) { return koe_fnv1a(KOE_FNV_OFFSET, text, strlen(text)); }

static void set_defaults(Recipe *r) {
    recipe_keys();
    memset(r, 0, sizeof *r);
    loader_config_default(&r->data.loader); /* the loader's settings that are not keys (depth, ...) */
    for (int k = 0; k < n_keys; k++) {
        char why[512];
        if (set_value(r, &keys[k], keys[k].k->def, why, sizeof why))
            koe_fatal(KOE_EXIT_INTERNAL, "recipe: default of %s.%s: %s", keys[k].section, keys[k].k->key, why);
    }
}

/* The file text (or, when model is given, that [model] and no text), then the overrides. */
static int recipe_resolve(Recipe *r, const char *name, const char *text, const ModelConfig *model, int n_overrides,
                          char *const *overrides, KoeError *err) {
    set_defaults(r);
    ParseState ps = {.r = r, .name = name, .text = text, .overrides = overrides};
    if (model) {
        r->model = *model;
        for (int k = 0; k < n_keys; k++)
            if (!strcmp(keys[k].section, "model")) ps.set_line[k] = SET_BY_SOURCE;
    }
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
    r->text = format_recipe(r);
    if (check_lines(&ps, err) || check_recipe(&ps, err)) {
        recipe_free(r);
        return -1;
    }
    r->hash = recipe_hash_text(r->text);
    return 0;
}

int recipe_load_string(Recipe *r, const char *name, const char *text, int n_overrides, char *const *overrides,
                       KoeError *err) {
    return recipe_resolve(r, name, text, NULL, n_overrides, overrides, err);
}

int recipe_load_model(Recipe *r, const char *name, const ModelConfig *model, int n_overrides, char *const *overrides,
                      KoeError *err) {
    return recipe_resolve(r, name, "", model, n_overrides, overrides, err);
}

/* Far more than any recipe (every key fits in a few kB); reading stops there, so that a device or a
 * pipe that never ends is refused rather than read until memory runs out. */
#define RECIPE_MAX_BYTES (1 << 20)

int recipe_load(Recipe *r, const char *path, int n_overrides, char *const *overrides, KoeError *err) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) return koe_error_set(err, "cannot open recipe %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return koe_error_set(err, "recipe %s is a directory; give the .ini file", path);
    }
    char *text = koe_malloc(RECIPE_MAX_BYTES + 2);
    size_t len = 0, got;
    while (len <= RECIPE_MAX_BYTES && (got = fread(text + len, 1, RECIPE_MAX_BYTES + 1 - len, f)) > 0) len += got;
    int bad = ferror(f);
    const int e = errno;
    fclose(f);
    text[len] = 0;
    if (bad || len > RECIPE_MAX_BYTES) {
        free(text);
        if (bad) return koe_error_set(err, "cannot read recipe %s: %s", path, strerror(e));
        return koe_error_set(err, "recipe %s is larger than %d MiB: not a recipe", path, RECIPE_MAX_BYTES >> 20);
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

void recipe_objective_config(const Recipe *r, int n_classes, ObjectiveConfig *c) {
    const RecipeObjective *o = &r->objective;
    const ModelConfig *m = &r->model;
    *c = (ObjectiveConfig){
        .name = o->name,
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
}

void recipe_free(Recipe *r) {
    free(r->text);
    r->text = NULL;
}

void recipe_print_keys(FILE *f) {
    recipe_keys();
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "%s[%s]\n", s ? "\n" : "", sections[s]);
        for (int k = 0; k < n_keys; k++) {
            if (strcmp(keys[k].section, sections[s])) continue;
            char def[128];
            snprintf(def, sizeof def, "%s", *keys[k].k->def ? keys[k].k->def : "\"\"");
            if (strlen(def) > 24)
                fprintf(f, "  %-26s = %s\n  %-26s   %-24s %s\n", keys[k].k->key, def, "", "", keys[k].k->doc);
            else
                fprintf(f, "  %-26s = %-24s %s\n", keys[k].k->key, def, keys[k].k->doc);
        }
    }
}

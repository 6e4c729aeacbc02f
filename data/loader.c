/* loader.c — the batch loader: epoch plans, rank slices and crops (pure), then reading audio and
 * features for them, in prefetch threads. See loader.h for the design. Must not call MPI, and must
 * not touch HDF5 except through corpus_read (which holds h5_lock()). */
#include "loader.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../core/rng.h"


/* ---- planning -------------------------------------------------------------------------------- */

struct LoaderPlan {
    LoaderPlanConfig cfg;
    int64_t n_utts;
    int64_t *length;    /* (n_utts) */
    int32_t *lang;      /* (n_utts) */
    int n_langs;
    char **lang_names;  /* (n_langs) or NULL */
    int64_t *lang_off;  /* (n_langs + 1) into elig */
    int64_t *elig;      /* eligible utterances grouped by language, corpus order inside */
    double *lang_hours; /* (n_langs) over eligible utterances */
    int64_t *lang_m;    /* (n_langs) utterances drawn per epoch (the same every epoch) */
    int64_t n_chosen;   /* sum of lang_m */
    /* first global batch of each epoch whose batch count is known: (n_epochs_known + 1) */
    int64_t n_epochs_known;
    int64_t *epoch_first;
    int64_t logged_epoch;  /* last epoch logged (-1: none yet, the language shares are listed with the first) */
    /* the current epoch's plan */
    int64_t cur_epoch;     /* -1: none */
    int64_t cur_batches;
    int64_t *cur_utts;     /* (n_chosen) in batch order */
    int64_t *cur_off;      /* (cur_batches + 1) into cur_utts */
    /* scratch for building a plan */
    int64_t *chosen, *tmp, *off_tmp, *order;
    struct BucketItem *items;
};

typedef struct BucketItem {
    int64_t eff, pos, utt;
} BucketItem;

static const EnumName features_names[] = {
    {"none", 0, NULL}, {"fbank", FEAT_FBANK, NULL}, {"mfcc", FEAT_MFCC, NULL}, {NULL, 0, NULL}};
_Static_assert(sizeof(FeatureKind) == sizeof(int), "features is written through an int pointer");

#define OFF(field) offsetof(LoaderConfig, field)
#define KN(key, type, field, def, lo, hi, doc) {key, type, OFF(field), def, lo, hi, 0, NULL, doc, NULL, 0}
const ConfigKey loader_keys[] = {
    KN("max_tokens", K_I64, plan.max_tokens, "1400000", 1, INFINITY,
       "samples per global batch: utterances x longest crop <= max_tokens"),
    KN("max_sample_size", K_I64, plan.max_sample_size, "250000", 1, INFINITY,
       "longer utterances are cropped to this many samples"),
    KN("min_sample_size", K_I64, plan.min_sample_size, "32000", 0, INFINITY, "shorter utterances are skipped (samples)"),
    KN("lang_alpha", K_DOUBLE, plan.lang_alpha, "0.5", 0, 1,
       "multilingual sampling exponent: 1 = as is, 0 = uniform over languages"),
    KN("bucket_batches", K_I64, plan.bucket_batches, "100", 1, INFINITY,
       "batches' worth of utterances sorted together by length"),
    KN("threads", K_INT, threads, "1", 0, 256, "loader prefetch threads; 0 = read synchronously"),
    {"features", K_ENUM, OFF(features), "none", 0, 0, 0, features_names,
     "features computed by the loader: none | fbank | mfcc (fbank frontend and BEST-RQ need fbank)", NULL, 0},
};
const int loader_n_keys = (int)(sizeof loader_keys / sizeof loader_keys[0]);
#undef KN
#undef OFF

void loader_config_default(LoaderConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    config_keys_default(loader_keys, loader_n_keys, cfg);
    cfg->plan.seed = 1;
    cfg->plan.crop_to_shortest = 1;
    cfg->plan.world = 1;
    cfg->plan.log = 1;
    cfg->depth = 4;
}

void loader_plan_config_default(LoaderPlanConfig *cfg) {
    LoaderConfig c;
    loader_config_default(&c);
    *cfg = c.plan;
}

LoaderPlan *loader_plan_create(const int64_t *length, const int32_t *lang, int64_t n_utts, int n_langs,
                               char *const *lang_names, const LoaderPlanConfig *cfg, KoeError *err) {
    if (cfg->world < 1 || cfg->rank < 0 || cfg->rank >= cfg->world) {
        koe_error_set(err, "loader: rank %d of world %d is not a valid slice", cfg->rank, cfg->world);
        return NULL;
    }
    if (cfg->max_sample_size < 1 || cfg->min_sample_size < 1 || cfg->bucket_batches < 1) {
        koe_error_set(err, "loader: max_sample_size (%lld), min_sample_size (%lld) and bucket_batches "
                      "(%lld) must be positive", (long long)cfg->max_sample_size,
                      (long long)cfg->min_sample_size, (long long)cfg->bucket_batches);
        return NULL;
    }
    if (cfg->max_tokens < cfg->max_sample_size) {
        koe_error_set(err, "loader: max_tokens (%lld) is smaller than max_sample_size (%lld): one "
                      "cropped utterance would not fit a batch; raise max_tokens or lower max_sample_size",
                      (long long)cfg->max_tokens, (long long)cfg->max_sample_size);
        return NULL;
    }
    if (!(cfg->lang_alpha >= 0.0 && cfg->lang_alpha <= 1.0)) {
        koe_error_set(err, "loader: lang_alpha %g is outside [0, 1]", cfg->lang_alpha);
        return NULL;
    }
    if (n_langs < 1) {
        koe_error_set(err, "loader: the corpus has no languages");
        return NULL;
    }
    LoaderPlan *p = koe_calloc(1, sizeof *p);
    p->cfg = *cfg;
    p->n_utts = n_utts;
    p->n_langs = n_langs;
    p->length = koe_malloc((size_t)(n_utts ? n_utts : 1) * sizeof(int64_t));
    memcpy(p->length, length, (size_t)n_utts * sizeof(int64_t));
    p->lang = koe_malloc((size_t)(n_utts ? n_utts : 1) * sizeof(int32_t));
    memcpy(p->lang, lang, (size_t)n_utts * sizeof(int32_t));
    if (lang_names) {
        p->lang_names = koe_malloc((size_t)n_langs * sizeof(char *));
        for (int l = 0; l < n_langs; l++) p->lang_names[l] = koe_strdup(lang_names[l]);
    }
    p->lang_off = koe_calloc((size_t)n_langs + 1, sizeof(int64_t));
    p->lang_hours = koe_calloc((size_t)n_langs, sizeof(double));
    p->lang_m = koe_calloc((size_t)n_langs, sizeof(int64_t));
    for (int64_t i = 0; i < n_utts; i++) {
        if (lang[i] < 0 || lang[i] >= n_langs) {
            koe_error_set(err, "loader: utterance %lld has language index %d, outside [0, %d)",
                          (long long)i, lang[i], n_langs);
            loader_plan_free(p);
            return NULL;
        }
        if (length[i] >= cfg->min_sample_size) {
            p->lang_off[lang[i] + 1]++;
            p->lang_hours[lang[i]] += (double)length[i] / KOE_SAMPLE_RATE / 3600.0;
        }
    }
    for (int l = 0; l < n_langs; l++) p->lang_off[l + 1] += p->lang_off[l];
    int64_t n_elig = p->lang_off[n_langs];
    if (n_elig == 0) {
        koe_error_set(err, "loader: none of the %lld utterances is at least min_sample_size = %lld "
                      "samples long; lower min_sample_size", (long long)n_utts,
                      (long long)cfg->min_sample_size);
        loader_plan_free(p);
        return NULL;
    }
    p->elig = koe_malloc((size_t)n_elig * sizeof(int64_t));
    int64_t *fill = koe_malloc((size_t)n_langs * sizeof(int64_t));
    memcpy(fill, p->lang_off, (size_t)n_langs * sizeof(int64_t));
    for (int64_t i = 0; i < n_utts; i++)
        if (length[i] >= cfg->min_sample_size) p->elig[fill[lang[i]]++] = i;
    free(fill);

    /* m_l = round(n_l * r_l), r_l = p_l / q_l; alpha = 1 gives r_l = 1 up to rounding, so m_l = n_l. */
    double total_h = 0, total_pa = 0;
    for (int l = 0; l < n_langs; l++) {
        if (p->lang_off[l + 1] == p->lang_off[l]) continue;
        total_h += p->lang_hours[l];
        total_pa += pow(p->lang_hours[l], cfg->lang_alpha);
    }
    for (int l = 0; l < n_langs; l++) {
        int64_t n_l = p->lang_off[l + 1] - p->lang_off[l];
        if (n_l == 0) continue;
        double r = (pow(p->lang_hours[l], cfg->lang_alpha) / total_pa) / (p->lang_hours[l] / total_h);
        p->lang_m[l] = llround((double)n_l * r);
        p->n_chosen += p->lang_m[l];
    }
    KOE_ASSERT(p->n_chosen > 0);
    p->epoch_first = koe_calloc(1, sizeof(int64_t));
    p->logged_epoch = -1;
    p->cur_epoch = -1;
    p->cur_utts = koe_malloc((size_t)p->n_chosen * sizeof(int64_t));
    p->cur_off = koe_malloc(((size_t)p->n_chosen + 1) * sizeof(int64_t));
    p->chosen = koe_malloc((size_t)p->n_chosen * sizeof(int64_t));
    p->tmp = koe_malloc((size_t)n_elig * sizeof(int64_t));
    p->off_tmp = koe_malloc(((size_t)p->n_chosen + 1) * sizeof(int64_t));
    p->order = koe_malloc((size_t)p->n_chosen * sizeof(int64_t));
    p->items = koe_malloc((size_t)p->n_chosen * sizeof(BucketItem));
    return p;
}

void loader_plan_free(LoaderPlan *p) {
    if (!p) return;
    if (p->lang_names)
        for (int l = 0; l < p->n_langs; l++) free(p->lang_names[l]);
    free(p->lang_names);
    free(p->length);
    free(p->lang);
    free(p->lang_off);
    free(p->elig);
    free(p->lang_hours);
    free(p->lang_m);
    free(p->epoch_first);
    free(p->cur_utts);
    free(p->cur_off);
    free(p->chosen);
    free(p->tmp);
    free(p->off_tmp);
    free(p->order);
    free(p->items);
    free(p);
}

static int64_t plan_eff(const LoaderPlan *p, int64_t utt) {
    int64_t n = p->length[utt];
    return n < p->cfg.max_sample_size ? n : p->cfg.max_sample_size;
}

static int bucket_item_cmp(const void *a, const void *b) {
    const BucketItem *x = a, *y = b;
    if (x->eff != y->eff) return x->eff < y->eff ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Build epoch e's plan into cur_*: resample languages, permute, bucket, shuffle batch order. */
static void plan_build_epoch(LoaderPlan *p, int64_t e) {
    if (p->cur_epoch == e) return;
    const LoaderPlanConfig *cfg = &p->cfg;
    int64_t n = 0;
    for (int l = 0; l < p->n_langs; l++) {
        int64_t n_l = p->lang_off[l + 1] - p->lang_off[l];
        if (n_l == 0) continue;
        const int64_t *list = p->elig + p->lang_off[l];
        int64_t full = p->lang_m[l] / n_l, extra = p->lang_m[l] % n_l;
        for (int64_t k = 0; k < full; k++) {
            memcpy(p->chosen + n, list, (size_t)n_l * sizeof(int64_t));
            n += n_l;
        }
        if (extra > 0) { /* partial Fisher-Yates: the first `extra` of a random permutation */
            KoeRng r = koe_rng(cfg->seed, (uint64_t)e, (uint64_t)l, KOE_RNG_LANG_SAMPLE);
            memcpy(p->tmp, list, (size_t)n_l * sizeof(int64_t));
            for (int64_t i = 0; i < extra; i++) {
                int64_t j = i + (int64_t)koe_rng_below(&r, (uint64_t)(n_l - i));
                int64_t t = p->tmp[i];
                p->tmp[i] = p->tmp[j];
                p->tmp[j] = t;
            }
            memcpy(p->chosen + n, p->tmp, (size_t)extra * sizeof(int64_t));
            n += extra;
        }
    }
    KOE_ASSERT(n == p->n_chosen);
    KoeRng perm = koe_rng(cfg->seed, (uint64_t)e, 0, KOE_RNG_EPOCH_ORDER);
    koe_rng_shuffle_i64(&perm, p->chosen, n);

    /* Windows of about bucket_batches batches' worth of utterances, by the mean cropped length. */
    int64_t sum_eff = 0;
    for (int64_t i = 0; i < n; i++) sum_eff += plan_eff(p, p->chosen[i]);
    int64_t mean_eff = sum_eff / n > 0 ? sum_eff / n : 1;
    int64_t per_batch = cfg->max_tokens / mean_eff > 0 ? cfg->max_tokens / mean_eff : 1;
    int64_t window = cfg->bucket_batches * per_batch;
    int64_t nb = 0;
    p->off_tmp[0] = 0;
    for (int64_t w0 = 0; w0 < n; w0 += window) {
        int64_t w1 = w0 + window < n ? w0 + window : n;
        for (int64_t i = w0; i < w1; i++)
            p->items[i] = (BucketItem){.eff = plan_eff(p, p->chosen[i]), .pos = i, .utt = p->chosen[i]};
        qsort(p->items + w0, (size_t)(w1 - w0), sizeof(BucketItem), bucket_item_cmp);
        int64_t in_batch = 0;
        for (int64_t i = w0; i < w1; i++) {
            /* sorted ascending, so the newcomer is the batch's longest */
            if (in_batch > 0 && (in_batch + 1) * p->items[i].eff > cfg->max_tokens) {
                p->off_tmp[++nb] = i;
                in_batch = 0;
            }
            in_batch++;
        }
        p->off_tmp[++nb] = w1;
    }
    for (int64_t b = 0; b < nb; b++) p->order[b] = b;
    KoeRng bo = koe_rng(cfg->seed, (uint64_t)e, 0, KOE_RNG_BATCH_ORDER);
    koe_rng_shuffle_i64(&bo, p->order, nb);
    int64_t at = 0;
    p->cur_off[0] = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t src = p->order[b];
        for (int64_t i = p->off_tmp[src]; i < p->off_tmp[src + 1]; i++) p->cur_utts[at++] = p->items[i].utt;
        p->cur_off[b + 1] = at;
    }
    p->cur_batches = nb;
    p->cur_epoch = e;
}

/* Make sure epoch_first covers epochs 0..e (first batch of e + 1 known). */
static void plan_know_epoch(LoaderPlan *p, int64_t e) {
    while (p->n_epochs_known <= e) {
        plan_build_epoch(p, p->n_epochs_known);
        p->epoch_first = koe_realloc(p->epoch_first, ((size_t)p->n_epochs_known + 2) * sizeof(int64_t));
        p->epoch_first[p->n_epochs_known + 1] = p->epoch_first[p->n_epochs_known] + p->cur_batches;
        p->n_epochs_known++;
    }
}

int64_t loader_plan_epoch_batches(LoaderPlan *p, int64_t epoch) {
    KOE_ASSERT(epoch >= 0);
    plan_know_epoch(p, epoch);
    return p->epoch_first[epoch + 1] - p->epoch_first[epoch];
}

void loader_plan_epoch_lang_counts(LoaderPlan *p, int64_t epoch, int64_t *counts) {
    KOE_ASSERT(epoch >= 0);
    plan_build_epoch(p, epoch);
    memset(counts, 0, (size_t)p->n_langs * sizeof(int64_t));
    for (int64_t i = 0; i < p->n_chosen; i++) counts[p->lang[p->cur_utts[i]]]++;
}

static void plan_log_epoch(LoaderPlan *p, int64_t e) {
    char line[4096];
    size_t at = 0;
    at += (size_t)snprintf(line + at, sizeof line - at, "loader: epoch %lld: %lld global batches, %lld utterances%s",
                           (long long)e, (long long)p->cur_batches, (long long)p->n_chosen,
                           p->logged_epoch < 0 ? ":" : "");
    /* the per-language shares are fixed for the run: listed once, not every epoch */
    for (int l = 0; p->logged_epoch < 0 && l < p->n_langs && at < sizeof line; l++) {
        int64_t n_l = p->lang_off[l + 1] - p->lang_off[l];
        if (n_l == 0) continue;
        char name[32];
        if (p->lang_names) snprintf(name, sizeof name, "%s", p->lang_names[l]);
        else snprintf(name, sizeof name, "lang%d", l);
        at += (size_t)snprintf(line + at, sizeof line - at, " %s %lld of %lld (x%.2f, %.3g h)", name,
                               (long long)p->lang_m[l], (long long)n_l, (double)p->lang_m[l] / (double)n_l,
                               p->lang_hours[l]);
    }
    koe_log("%s", line);
}

static void batch_reserve_n(LoaderBatch *b, int64_t n) {
    if ((size_t)n <= b->cap_n) return;
    size_t cap = (size_t)n;
    b->utt = koe_realloc(b->utt, cap * sizeof(int64_t));
    b->start = koe_realloc(b->start, cap * sizeof(int64_t));
    b->length = koe_realloc(b->length, cap * sizeof(int64_t));
    b->frames = koe_realloc(b->frames, cap * sizeof(int64_t));
    b->cap_n = cap;
}

void loader_plan_batch(LoaderPlan *p, int64_t g, LoaderBatch *b) {
    KOE_ASSERT(g >= 0);
    const LoaderPlanConfig *cfg = &p->cfg;
    plan_know_epoch(p, 0);
    while (p->epoch_first[p->n_epochs_known] <= g) plan_know_epoch(p, p->n_epochs_known);
    int64_t e = 0;
    while (p->epoch_first[e + 1] <= g) e++;
    plan_build_epoch(p, e);
    if (cfg->log && cfg->rank == 0 && e > p->logged_epoch) {
        plan_log_epoch(p, e);
        p->logged_epoch = e;
    }
    int64_t k = g - p->epoch_first[e];
    const int64_t *u = p->cur_utts + p->cur_off[k];
    int64_t gn = p->cur_off[k + 1] - p->cur_off[k];
    int64_t shortest = INT64_MAX;
    for (int64_t i = 0; i < gn; i++) {
        int64_t eff = plan_eff(p, u[i]);
        if (eff < shortest) shortest = eff;
    }
    int64_t P = cfg->world, r = cfg->rank;
    int64_t n = gn > r ? (gn - r + P - 1) / P : 0;
    batch_reserve_n(b, n);
    b->index = g;
    b->epoch = e;
    b->index_in_epoch = k;
    b->global_n = gn;
    b->n = n;
    b->global_samples = 0;
    b->T = 0;
    for (int64_t i = 0; i < gn; i++) {
        int64_t keep = cfg->crop_to_shortest ? shortest : plan_eff(p, u[i]);
        b->global_samples += keep;
        if (i % P != r) continue;
        int64_t copies = 0; /* earlier copies of this utterance in the global batch */
        for (int64_t j = 0; j < i; j++) copies += u[j] == u[i];
        int64_t len = p->length[u[i]], start = 0;
        if (len > keep) {
            KoeRng cr = koe_rng(cfg->seed, (uint64_t)g, (uint64_t)(u[i] + copies * p->n_utts), KOE_RNG_CROP);
            start = (int64_t)koe_rng_below(&cr, (uint64_t)(len - keep + 1));
        }
        int64_t s = i / P;
        b->utt[s] = u[i];
        b->start[s] = start;
        b->length[s] = keep;
        if (keep > b->T) b->T = keep;
    }
}

void loader_batch_free(LoaderBatch *b) {
    free(b->utt);
    free(b->start);
    free(b->length);
    free(b->frames);
    free(b->audio);
    free(b->audio_pad);
    free(b->feats);
    free(b->feat_pad);
    memset(b, 0, sizeof *b);
}

/* ---- reading --------------------------------------------------------------------------------- */

int loader_batch_read(Corpus *c, LoaderBatch *b, FeatureExtractor *fe, FeatureKind kind,
                      int16_t **pcm, size_t *pcm_cap, KoeError *err) {
    size_t na = (size_t)b->n * (size_t)b->T;
    if (na > b->cap_audio) {
        b->audio = koe_realloc(b->audio, na * sizeof(float));
        b->audio_pad = koe_realloc(b->audio_pad, na);
        b->cap_audio = na;
    }
    for (int64_t i = 0; i < b->n; i++) {
        int64_t len = b->length[i];
        if ((size_t)len > *pcm_cap) {
            *pcm = koe_realloc(*pcm, (size_t)len * sizeof(int16_t));
            *pcm_cap = (size_t)len;
        }
        KoeError e;
        if (corpus_read(c, b->utt[i], b->start[i], len, *pcm, &e) != 0)
            return koe_error_set(err, "loader: global batch %lld: utterance %s (#%lld, samples %lld..%lld): %s",
                                 (long long)b->index, corpus_utt_id(c, b->utt[i]), (long long)b->utt[i],
                                 (long long)b->start[i], (long long)(b->start[i] + len), e.msg);
        float *row = b->audio + (size_t)i * (size_t)b->T;
        uint8_t *pad = b->audio_pad + (size_t)i * (size_t)b->T;
        for (int64_t t = 0; t < len; t++) row[t] = (float)(*pcm)[t] / 32768.0f;
        memset(row + len, 0, (size_t)(b->T - len) * sizeof(float));
        memset(pad, 0, (size_t)len);
        memset(pad + len, 1, (size_t)(b->T - len));
    }
    b->feat_kind = fe ? kind : 0;
    b->D = 0;
    b->F = 0;
    if (!fe) return 0;
    b->D = features_dim(kind);
    for (int64_t i = 0; i < b->n; i++) {
        b->frames[i] = features_num_frames(b->length[i]);
        if (b->frames[i] > b->F) b->F = b->frames[i];
    }
    size_t nf = (size_t)b->n * (size_t)b->F;
    if (nf * (size_t)b->D > b->cap_feats) {
        b->feats = koe_realloc(b->feats, nf * (size_t)b->D * sizeof(float));
        b->feat_pad = koe_realloc(b->feat_pad, nf);
        b->cap_feats = nf * (size_t)b->D;
    }
    for (int64_t i = 0; i < b->n; i++) {
        float *out = b->feats + (size_t)i * (size_t)b->F * (size_t)b->D;
        uint8_t *pad = b->feat_pad + (size_t)i * (size_t)b->F;
        int64_t f = b->frames[i];
        if (f > 0) features_compute(fe, b->audio + (size_t)i * (size_t)b->T, b->length[i], out);
        memset(out + f * b->D, 0, (size_t)(b->F - f) * (size_t)b->D * sizeof(float));
        memset(pad, 0, (size_t)f);
        memset(pad + f, 1, (size_t)(b->F - f));
    }
    return 0;
}

/* ---- the loader: a ring of slots filled by prefetch threads ---------------------------------- */

typedef struct {
    struct Loader *l;
    FeatureExtractor *fe;
    int16_t *pcm;
    size_t pcm_cap;
    pthread_t thread;
} LoaderWorker;

struct Loader {
    Corpus *c;
    LoaderConfig cfg;
    LoaderPlan *plan;
    int K;                /* slots: depth ahead + the one the caller holds */
    LoaderBatch *slots;   /* (K); batch g lives in slot g % K */
    int64_t *slot_g;      /* (K) which batch the slot holds */
    int *slot_ready;      /* (K) */
    int *slot_failed;     /* (K) */
    KoeError *slot_err;   /* (K) */
    int64_t first;        /* `consumed` at open */
    int64_t next_assign;  /* next batch a worker takes */
    int64_t delivered;    /* next batch loader_next returns */
    int stop, failed;
    pthread_mutex_t mu;
    pthread_cond_t cond_ready, cond_space;
    int n_workers;
    LoaderWorker *workers; /* (n_workers); synchronous mode uses workers[0] in the caller */
};

/* The oldest batch whose slot may not be reused: the one the caller holds (or the first). */
static int64_t loader_released(const Loader *l) {
    return l->delivered > l->first ? l->delivered - 1 : l->first;
}

static void *loader_worker_main(void *arg) {
    LoaderWorker *w = arg;
    Loader *l = w->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && !l->failed && l->next_assign >= loader_released(l) + l->K)
            pthread_cond_wait(&l->cond_space, &l->mu);
        if (l->stop || l->failed) break;
        int64_t g = l->next_assign++;
        int s = (int)(g % l->K);
        l->slot_g[s] = g;
        l->slot_ready[s] = 0;
        loader_plan_batch(l->plan, g, &l->slots[s]);
        pthread_mutex_unlock(&l->mu);
        KoeError e;
        int rc = loader_batch_read(l->c, &l->slots[s], w->fe, l->cfg.features, &w->pcm, &w->pcm_cap, &e);
        pthread_mutex_lock(&l->mu);
        if (rc != 0) {
            l->slot_failed[s] = 1;
            l->slot_err[s] = e;
            l->failed = 1;
        }
        l->slot_ready[s] = 1;
        pthread_cond_broadcast(&l->cond_ready);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

Loader *loader_open(Corpus *c, const LoaderConfig *cfg, int64_t consumed, KoeError *err) {
    if (cfg->threads < 0 || cfg->depth < 1) {
        koe_error_set(err, "loader: threads (%d) must be >= 0 and depth (%d) >= 1", cfg->threads, cfg->depth);
        return NULL;
    }
    if (consumed < 0) {
        koe_error_set(err, "loader: consumed batches %lld is negative", (long long)consumed);
        return NULL;
    }
    if (cfg->features != 0 && cfg->features != FEAT_FBANK && cfg->features != FEAT_MFCC) {
        koe_error_set(err, "loader: unknown feature kind %d", (int)cfg->features);
        return NULL;
    }
    LoaderPlan *plan = loader_plan_create(c->utt_length, c->utt_lang, c->n_utts, c->n_langs, c->langs,
                                          &cfg->plan, err);
    if (!plan) return NULL;
    Loader *l = koe_calloc(1, sizeof *l);
    l->c = c;
    l->cfg = *cfg;
    l->plan = plan;
    l->K = cfg->depth + 1;
    l->slots = koe_calloc((size_t)l->K, sizeof(LoaderBatch));
    l->slot_g = koe_malloc((size_t)l->K * sizeof(int64_t));
    for (int s = 0; s < l->K; s++) l->slot_g[s] = -1;
    l->slot_ready = koe_calloc((size_t)l->K, sizeof(int));
    l->slot_failed = koe_calloc((size_t)l->K, sizeof(int));
    l->slot_err = koe_calloc((size_t)l->K, sizeof(KoeError));
    l->first = l->next_assign = l->delivered = consumed;
    l->n_workers = cfg->threads > 0 ? cfg->threads : 1;
    l->workers = koe_calloc((size_t)l->n_workers, sizeof(LoaderWorker));
    for (int i = 0; i < l->n_workers; i++) {
        l->workers[i].l = l;
        if (cfg->features) l->workers[i].fe = features_create(cfg->features);
    }
    /* Resume: walk the epochs up to `consumed` now, so the threads start on a known plan. */
    loader_plan_batch(plan, consumed, &l->slots[0]);
    if (cfg->threads == 0) return l;
    int rc = pthread_mutex_init(&l->mu, NULL);
    if (rc == 0) rc = pthread_cond_init(&l->cond_ready, NULL);
    if (rc == 0) rc = pthread_cond_init(&l->cond_space, NULL);
    if (rc != 0) koe_fatal(KOE_EXIT_INTERNAL, "loader: pthread mutex/cond init failed (%s)", strerror(rc));
    for (int i = 0; i < l->n_workers; i++) {
        rc = pthread_create(&l->workers[i].thread, NULL, loader_worker_main, &l->workers[i]);
        if (rc != 0) koe_fatal(KOE_EXIT_INTERNAL, "loader: cannot start prefetch thread %d (%s)", i, strerror(rc));
    }
    return l;
}

const LoaderBatch *loader_next(Loader *l, KoeError *err) {
    if (l->cfg.threads == 0) {
        LoaderWorker *w = &l->workers[0];
        LoaderBatch *b = &l->slots[0];
        loader_plan_batch(l->plan, l->delivered, b);
        if (loader_batch_read(l->c, b, w->fe, l->cfg.features, &w->pcm, &w->pcm_cap, err) != 0) return NULL;
        l->delivered++;
        return b;
    }
    int s = (int)(l->delivered % l->K);
    pthread_mutex_lock(&l->mu);
    while (!(l->slot_g[s] == l->delivered && l->slot_ready[s])) pthread_cond_wait(&l->cond_ready, &l->mu);
    if (l->slot_failed[s]) {
        if (err) *err = l->slot_err[s];
        pthread_mutex_unlock(&l->mu);
        return NULL;
    }
    l->delivered++;
    pthread_cond_broadcast(&l->cond_space); /* the previously held slot is free now */
    pthread_mutex_unlock(&l->mu);
    return &l->slots[s];
}

int64_t loader_consumed(const Loader *l) { return l->delivered; }

void loader_close(Loader *l) {
    if (!l) return;
    if (l->cfg.threads > 0) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cond_space);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < l->n_workers; i++) pthread_join(l->workers[i].thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cond_ready);
        pthread_cond_destroy(&l->cond_space);
    }
    for (int i = 0; i < l->n_workers; i++) {
        if (l->workers[i].fe) features_free(l->workers[i].fe);
        free(l->workers[i].pcm);
    }
    for (int s = 0; s < l->K; s++) loader_batch_free(&l->slots[s]);
    free(l->workers);
    free(l->slots);
    free(l->slot_g);
    free(l->slot_ready);
    free(l->slot_failed);
    free(l->slot_err);
    loader_plan_free(l->plan);
    free(l);
}

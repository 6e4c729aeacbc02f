/* analyze_layers.c — `koe analyze layers` (analyze_layers.h): sampling, forwards, reductions and
 * output; the math is analysis/ (moments, cca, cka, segments, pnmi) and core/kmeans.
 *   1. The plan, identical on every rank (keyed randomness, no communication): a keyed order of the
 *      utterances (aligned ones when a phone property is asked for); the frame sample (whole
 *      utterances in that order until --frames model frames), each frame's fold and subsample draw;
 *      the phone segments (runs of the 10 ms alignment, middle third, at most --phone-cap per phone in
 *      keyed order, classes with fewer than max(--min-class, --folds) dropped, folds stratified); the
 *      word segments likewise from a word CTM (the corpus's words.ctm or --words: whole spans, the
 *      --word-vocab most frequent words, at most --word-cap each).
 *   2. The ranks split the utterances that hold a unit (contiguous, at equal shares of samples); each
 *      runs one forward per utterance and adds its units to per-layer fold co-moments (double) —
 *      hidden states are never kept, except the keyed frame subsample CKA and PNMI need
 *      (--sub-frames); with --conv also each conv layer's output averaged onto the 10 ms fbank frames.
 *   3. The co-moments are summed over ranks about the global mean; the solves, one per (property,
 *      layer, trial), are spread over ranks by estimated cost and gathered; CKA from summed Gram blocks;
 *      k-means per layer on the subsample's training folds (distributed/kmeans), PNMI of its test folds
 *      against phones.
 *   4. Rank 0 prints the table (or --json) and writes --out DIR/layers.json, layers.tsv, cka.tsv; the
 *      last rank draws the charts meanwhile (every rank holds the results).
 * Must not: keep hidden states beyond the subsample, or depend on the rank count beyond float
 * reassociation of the sums. */
#include "analyze_layers.h"

#include <jansson.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../analysis/cca.h"
#include "../analysis/cka.h"
#include "../analysis/label_join.h"
#include "../analysis/moments.h"
#include "../analysis/pnmi.h"
#include "../analysis/segments.h"
#include "../core/common.h"
#include "../core/config_keys.h"
#include "../core/kmeans.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../data/corpus.h"
#include "../data/ctm.h"
#include "../distributed/comm.h"
#include "../distributed/kmeans.h"
#include "ckpt_model.h"
#include "plot.h"

/* Property i is bit ALP_* = 1 << i; the CCA ones come first. */
static const char *const PROP_NAMES[] = {"mel", "phone", "phone-frame", "intra", "inter", "word", "cka", "pnmi"};
enum { PI_MEL, PI_PHONE, PI_PHONE_FRAME, PI_INTRA, PI_INTER, PI_WORD, PI_CKA, PI_PNMI, N_PROPS, N_CCA = PI_CKA };

int analyze_layers_parse_eps(const char *list, void *eps, char *why, size_t why_len) {
    AnalyzeEps *e = eps;
    char *copy = koe_strdup(list), *save = NULL;
    int rc = 0;
    e->n = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        double v;
        if (e->n == ALP_MAX_EPS) {
            snprintf(why, why_len, "at most %d values", ALP_MAX_EPS);
            rc = -1;
        } else if (config_parse_real(t, &v) != 0 || !(v >= 0 && v <= 1)) {
            snprintf(why, why_len, "'%s' is not a number in [0, 1]", t);
            rc = -1;
        } else {
            e->v[e->n++] = v;
        }
    }
    free(copy);
    if (rc == 0 && e->n == 0) {
        snprintf(why, why_len, "no value");
        rc = -1;
    }
    return rc;
}

int analyze_layers_parse_props(const char *list, unsigned *props, char *bad, int bad_len) {
    *props = 0;
    char *copy = koe_strdup(list), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int p = 0; p < N_PROPS; p++)
            if (!strcmp(t, PROP_NAMES[p])) found = p;
        if (found < 0) {
            snprintf(bad, (size_t)bad_len, "%s", t);
            rc = -1;
            break;
        }
        *props |= 1u << found;
    }
    free(copy);
    return rc == 0 && *props == 0 ? -1 : rc;
}

typedef struct {
    int64_t utt, first, end; /* encoder frames [first, end) */
    int phone, cls, fold;    /* inventory index (of phones or words), segment class */
    uint64_t key;
} SegUnit;

/* The segment units of one property (phone, word): ascending by utterance. */
typedef struct {
    SegUnit *seg;
    int64_t n;
    int *cls, ncls; /* inventory -> class (-1: dropped) */
    int *label;     /* (ncls) class -> inventory */
} SegSet;

/* The per-property CCA results: job (prop, layer). */
typedef struct {
    int prop;  /* PI_MEL .. PI_WORD */
    int layer; /* the row: C1..Cn (--conv, mel only) then T0..TL (layer_name) */
    CcaResult r;
} Job;

typedef struct {
    const AnalyzeLayersOpts *o;
    CkptCorpus cc; /* the corpus, --ckpt's model, its input, one utterance's buffers */
    Model *m2;     /* --ckpt2, for inter */
    Recipe r2;
    CkptInput in2;
    int L1, D, D2;
    double rate;
    int64_t hop, win;
    /* plan */
    PhoneInventory inv;
    int **map;             /* (shards) shard phone id -> inventory */
    int *fcls, nfcls;      /* inventory -> phone-frame class (-1: silence) */
    SegSet ph, wd;         /* phone and word segments */
    PhoneInventory winv;   /* the word names */
    unsigned char *in_frames;
    int64_t n_frames, n_frame_utts;
    int64_t *run_utts, n_run; /* utterances with a unit, ascending */
    double sub_p;
    /* statistics, (L1) each or NULL */
    FoldStats *fr, *pf, *sg, *wg; /* frames, phone-frame, phone and word segments */
    int nc;                       /* --conv: the conv layers in the mel curve (rows 0 .. nc-1), else 0 */
    ConvPool *cpool;              /* (nc) each conv layer's averaging onto the fbank frames */
    FoldStats *cv;                /* (nc) [pooled conv layer | fbank frame] */
    int fr_dim, mel_off, base_off, inter_off;
    /* the subsample on this rank */
    float *sub;
    int64_t n_sub, cap_sub;
    int *sub_fold, *sub_lab;
    int64_t *sub_key; /* keyed order for the k-means sample */
    /* buffers */
    float *fb;
    FeatureExtractor *fe;
    uint16_t *al;
    int64_t max_al;
    /* results */
    Job *jobs;
    int n_jobs;
    double *cka, *cka_biased;
    int64_t cka_n;
    double *pnmi; /* (L1) */
    int64_t pnmi_train, pnmi_test;
    double t_forward; /* seconds in model_forward on this rank */
    double sec[7];    /* this rank's seconds: forwards, statistics, waiting for the other ranks after them,
                       * reductions, solves, CKA and k-means, outputs and charts (rank 0 the files,
                       * the last rank the charts) */
} Ctx;

static int need_align(const AnalyzeLayersOpts *o) { return (o->props & (ALP_PHONE | ALP_PHONE_FRAME | ALP_PNMI)) != 0; }
static int need_frames(const AnalyzeLayersOpts *o) { return (o->props & ~(unsigned)(ALP_PHONE | ALP_WORD)) != 0; }

/* The statistics keep the dev and test folds of every trial apart (0 .. 2T-1) and the folds only
 * ever trained on as one (slot 2T): the protocol needs nothing finer, and it saves memory. */
static int n_slots(const AnalyzeLayersOpts *o) { return 2 * o->trials < o->folds ? 2 * o->trials + 1 : o->folds; }
static int slot_of(const AnalyzeLayersOpts *o, int fold) { return fold < 2 * o->trials ? fold : 2 * o->trials; }

/* Row g of the table: conv layer C(g+1) for g < nc, else hidden state T(g-nc). */
static int n_rows(const Ctx *x) { return x->nc + x->L1; }
static void layer_name(const Ctx *x, int g, char *buf, size_t n) {
    if (g < x->nc) snprintf(buf, n, "C%d", g + 1);
    else snprintf(buf, n, "T%d", g - x->nc);
}

static int64_t utt_frames(const Ctx *x, int64_t u) { return ckpt_model_frames(x->cc.m, x->cc.c.utt_length[u]); }

static int64_t read_align(Ctx *x, int64_t u, KoeError *err) {
    CorpusShard *s = &x->cc.c.shards[x->cc.c.utt_shard[u]];
    return corpus_shard_read_align(s, x->cc.c.utt_index[u], x->al, x->max_al, err);
}

static int in_list(const char *list, const char *name) {
    const size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* The phone inventory over every shard, each shard's map into it, the phone-frame classes (every
 * phone not in --silence). Errors name the shard without alignments. */
static int plan_phones(Ctx *x, KoeError *err) {
    x->map = koe_calloc((size_t)x->cc.c.n_shards, sizeof(int *));
    for (int si = 0; si < x->cc.c.n_shards; si++) {
        const CorpusShard *s = &x->cc.c.shards[si];
        if (!s->align_offset)
            return koe_error_set(err, "%s has no phone alignments (/align), which --props %s need: use a corpus made "
                                 "by `koe synth` or prepared with `koe prepare --align`", s->path,
                                 x->o->props & ALP_PHONE ? "phone" : x->o->props & ALP_PHONE_FRAME ? "phone-frame" : "pnmi");
        x->map[si] = koe_malloc((size_t)(s->n_phones ? s->n_phones : 1) * sizeof(int));
        for (int64_t p = 0; p < s->n_phones; p++) x->map[si][p] = phone_inventory_index(&x->inv, s->phones[p]);
        for (int64_t i = 0; i < s->n; i++)
            if (s->align_offset[i + 1] - s->align_offset[i] > x->max_al) x->max_al = s->align_offset[i + 1] - s->align_offset[i];
    }
    x->fcls = koe_malloc(sizeof(int) * (x->inv.n ? x->inv.n : 1));
    for (int p = 0; p < x->inv.n; p++) x->fcls[p] = in_list(x->o->silence, x->inv.names[p]) ? -1 : x->nfcls++;
    if (x->nfcls < 2) return koe_error_set(err, "%s: the alignments have fewer than 2 phones besides --silence", x->o->corpus);
    x->al = koe_malloc(sizeof(uint16_t) * x->max_al);
    return 0;
}

/* The keyed utterance order and the frame sample: whole utterances in that order until
 * --frames model frames (--frames 0: all of them). */
static void plan_frames(Ctx *x) {
    const int64_t n = x->cc.c.n_utts;
    int64_t *order = koe_malloc(sizeof(int64_t) * (n ? n : 1)), k = 0;
    for (int64_t u = 0; u < n; u++) {
        if (utt_frames(x, u) == 0) continue;
        if (need_align(x->o)) {
            const CorpusShard *s = &x->cc.c.shards[x->cc.c.utt_shard[u]];
            const int64_t i = x->cc.c.utt_index[u];
            if (s->align_offset[i + 1] == s->align_offset[i]) continue;
        }
        order[k++] = u;
    }
    KoeRng g = koe_rng(x->o->seed, 0, 0, KOE_RNG_ANALYZE_ORDER);
    koe_rng_shuffle_i64(&g, order, k);
    x->in_frames = koe_calloc((size_t)(n ? n : 1), 1);
    for (int64_t i = 0; i < k && need_frames(x->o); i++) {
        if (x->o->frames > 0 && x->n_frames >= x->o->frames) break;
        x->in_frames[order[i]] = 1;
        x->n_frames += utt_frames(x, order[i]);
        x->n_frame_utts++;
    }
    free(order);
    x->sub_p = x->n_frames > 0 ? (double)x->o->sub_frames / (double)x->n_frames : 0;
}

static int cmp_i64_desc(const void *a, const void *b) {
    const int64_t p = *(const int64_t *)a, q = *(const int64_t *)b;
    return p > q ? -1 : p < q;
}

static int seg_by_phone_key(const void *a, const void *b) {
    const SegUnit *p = a, *q = b;
    if (p->phone != q->phone) return p->phone < q->phone ? -1 : 1;
    return p->key < q->key ? -1 : p->key > q->key;
}

static int seg_by_utt(const void *a, const void *b) {
    const SegUnit *p = a, *q = b;
    if (p->utt != q->utt) return p->utt < q->utt ? -1 : 1;
    return p->first < q->first ? -1 : p->first > q->first;
}

/* Every phone run of every aligned utterance, its middle-third window and its key. */
static int64_t plan_collect_segments(Ctx *x, SegUnit **out, KoeError *err) {
    unsigned char *skip = koe_calloc((size_t)(x->inv.n ? x->inv.n : 1), 1);
    PhoneRun *runs = koe_malloc(sizeof(PhoneRun) * x->max_al);
    int64_t n = 0, cap = 1024;
    SegUnit *seg = koe_malloc(sizeof(SegUnit) * cap);
    for (int64_t u = 0; u < x->cc.c.n_utts; u++) {
        const int64_t na = read_align(x, u, err), T = utt_frames(x, u);
        if (na < 0) {
            free(skip), free(runs), free(seg);
            return -1;
        }
        const int *map = x->map[x->cc.c.utt_shard[u]];
        for (int64_t j = 0; j < na; j++) /* to inventory ids, so skip[] and runs use one numbering */
            if (x->al[j] != SHARD_NO_PHONE) x->al[j] = (uint16_t)map[x->al[j]];
        for (int p = 0; p < x->inv.n; p++) skip[p] = x->fcls[p] < 0;
        const int64_t nr = segments_runs(x->al, na, SHARD_NO_PHONE, skip, runs);
        for (int64_t r = 0; r < nr; r++) {
            SegUnit s = {.utt = u, .phone = runs[r].id, .cls = -1};
            if (!segments_window(&runs[r], x->rate, T, &s.first, &s.end)) continue;
            KoeRng g = koe_rng(x->o->seed, (uint64_t)u, (uint64_t)runs[r].j0, KOE_RNG_ANALYZE_SEGMENT);
            s.key = koe_rng_u64(&g);
            if (n == cap) seg = koe_realloc(seg, sizeof(SegUnit) * (cap *= 2));
            seg[n++] = s;
        }
    }
    free(skip), free(runs);
    *out = seg;
    return n;
}

/* The classes of one segment property from all (n, any order; .phone its inventory index < n_labels):
 * with vocab > 0 only the vocab labels with the most segments (ties: the lower index); each label
 * capped at cap segments in key order; the classes with at least max(--min-class, --folds) kept; folds
 * stratified. all is reordered; out is filled, ascending by utterance. */
static int seg_select(const Ctx *x, SegUnit *all, int64_t n, int n_labels, int cap, int vocab, const char *prop,
                      SegSet *out, KoeError *err) {
    qsort(all, (size_t)n, sizeof *all, seg_by_phone_key);
    const int F = x->o->folds, need = x->o->min_class > F ? x->o->min_class : F;
    int64_t *count = koe_calloc((size_t)(n_labels ? n_labels : 1), sizeof(int64_t)), most = 0;
    for (int64_t i = 0; i < n; i++) count[all[i].phone]++;
    int64_t bar = 0; /* with vocab: a label needs more than bar segments, or bar and a low enough index */
    int at_bar = n_labels;
    if (vocab > 0 && vocab < n_labels) {
        int64_t *sorted = koe_malloc(sizeof(int64_t) * n_labels);
        memcpy(sorted, count, sizeof(int64_t) * n_labels);
        qsort(sorted, (size_t)n_labels, sizeof *sorted, cmp_i64_desc);
        bar = sorted[vocab - 1];
        int above = 0;
        for (int l = 0; l < n_labels; l++) above += sorted[l] > bar;
        at_bar = vocab - above; /* how many labels with exactly bar segments fit */
        free(sorted);
    }
    out->cls = koe_malloc(sizeof(int) * (n_labels ? n_labels : 1));
    out->label = koe_malloc(sizeof(int) * (n_labels ? n_labels : 1));
    out->seg = koe_malloc(sizeof(SegUnit) * (n ? n : 1));
    for (int p = 0; p < n_labels; p++) {
        out->cls[p] = -1;
        if (vocab > 0 && vocab < n_labels && count[p] <= bar) count[p] = count[p] == bar && at_bar-- > 0 ? count[p] : -1;
    }
    for (int64_t i = 0; i < n;) {
        int64_t e = i;
        while (e < n && all[e].phone == all[i].phone) e++;
        const int64_t nc = e - i < cap ? e - i : cap;
        if (count[all[i].phone] >= 0) most = nc > most ? nc : most;
        if (nc >= need && count[all[i].phone] >= 0) {
            const int cls = out->ncls++;
            out->cls[all[i].phone] = cls;
            out->label[cls] = all[i].phone;
            for (int64_t r = 0; r < nc; r++) {
                SegUnit s = all[i + r];
                s.cls = cls;
                if (r < F * (nc / F)) {
                    s.fold = (int)(r % F);
                } else {
                    KoeRng g = {.key = s.key, .ctr = 0};
                    s.fold = (int)koe_rng_below(&g, (uint64_t)F);
                }
                out->seg[out->n++] = s;
            }
        }
        i = e;
    }
    free(count);
    if (out->ncls < 2)
        return koe_error_set(err, "%s: property %s: %d class(es) have at least %d segments (the most: %lld); "
                             "the folds need max(--min-class, --folds) = %d per class: use a larger corpus or lower "
                             "--min-class/--folds", x->o->corpus, prop, out->ncls, need, (long long)most, need);
    qsort(out->seg, (size_t)out->n, sizeof *out->seg, seg_by_utt);
    return 0;
}

/* The phone segments: runs of the alignment, at most --phone-cap per phone. */
static int plan_segments(Ctx *x, KoeError *err) {
    SegUnit *all;
    const int64_t n = plan_collect_segments(x, &all, err);
    if (n < 0) return -1;
    const int rc = seg_select(x, all, n, x->inv.n, x->o->phone_cap, 0, "phone", &x->ph, err);
    free(all);
    return rc;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The word segments: the word CTM (--words, else the corpus's words.ctm from `koe prepare --words`)
 * matched to the corpus by utterance id, each word's whole span, the --word-vocab most frequent words
 * at most --word-cap times each. */
static int plan_words(Ctx *x, KoeError *err) {
    char def[4200];
    const char *path = x->o->words;
    if (!path) {
        snprintf(def, sizeof def, "%s/words.ctm", x->o->corpus);
        if (access(def, F_OK) != 0)
            return koe_error_set(err, "property word needs word alignments and %s does not exist: prepare the corpus "
                                 "with `koe prepare --words CTM` (koe synth writes DIR/words.ctm) or pass --words CTM "
                                 "(a word CTM from a forced aligner: utt channel start dur word)", def);
        path = def;
    }
    CtmSeg *ctm;
    int64_t n;
    if (ctm_read(path, "--words", &ctm, &n, err) < 0) return -1;
    int64_t *utt = koe_malloc(sizeof(int64_t) * n);
    if (ctm_match_corpus(ctm, n, &x->cc.c, utt) == 0) {
        koe_error_set(err, "--words %s: none of its utterance ids matches corpus %s (the CTM's first: '%s'; the "
                      "corpus's: '%s'): the first column must be the corpus's utterance id", path, x->o->corpus,
                      ctm[0].utt, x->cc.c.n_utts ? corpus_utt_id(&x->cc.c, 0) : "");
        free(utt), ctm_free(ctm, n);
        return -1;
    }
    char **names = koe_malloc(sizeof(char *) * n);
    int nw = 0;
    for (int64_t i = 0; i < n; i++) names[i] = ctm[i].name;
    qsort(names, (size_t)n, sizeof *names, cmp_name);
    for (int64_t i = 0; i < n; i++)
        if (nw == 0 || strcmp(names[nw - 1], names[i])) names[nw++] = names[i];
    x->winv.names = koe_malloc(sizeof(char *) * nw);
    for (int i = 0; i < nw; i++) x->winv.names[i] = koe_strdup(names[i]);
    x->winv.n = nw;
    SegUnit *all = koe_malloc(sizeof(SegUnit) * n);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        SegUnit s = {.utt = utt[i], .cls = -1};
        if (utt[i] < 0 || !segments_span_window(ctm[i].start, ctm[i].end, x->rate, utt_frames(x, utt[i]), &s.first, &s.end))
            continue;
        s.phone = (int)((char **)bsearch(&ctm[i].name, x->winv.names, (size_t)nw, sizeof(char *), cmp_name) - x->winv.names);
        KoeRng g = koe_rng(x->o->seed, (uint64_t)utt[i], (uint64_t)llround(ctm[i].start * 1000), KOE_RNG_ANALYZE_WORD);
        s.key = koe_rng_u64(&g);
        all[k++] = s;
    }
    free(names), free(utt), ctm_free(ctm, n);
    const int rc = seg_select(x, all, k, nw, x->o->word_cap, x->o->word_vocab, "word", &x->wd, err);
    free(all);
    return rc;
}

/* The utterances to run: the frame sample and every utterance with a segment, ascending. */
static void plan_run_list(Ctx *x) {
    unsigned char *use = koe_calloc((size_t)(x->cc.c.n_utts ? x->cc.c.n_utts : 1), 1);
    for (int64_t u = 0; u < x->cc.c.n_utts; u++) use[u] = x->in_frames[u];
    for (int64_t i = 0; i < x->ph.n; i++) use[x->ph.seg[i].utt] = 1;
    for (int64_t i = 0; i < x->wd.n; i++) use[x->wd.seg[i].utt] = 1;
    x->run_utts = koe_malloc(sizeof(int64_t) * (x->cc.c.n_utts ? x->cc.c.n_utts : 1));
    for (int64_t u = 0; u < x->cc.c.n_utts; u++)
        if (use[u]) x->run_utts[x->n_run++] = u;
    free(use);
}

/* One set per layer of dimension dim, but base_dim for layer base. */
static FoldStats *stats_sets(int L1, int dim, int base, int base_dim, int folds) {
    FoldStats *s = koe_malloc(sizeof(FoldStats) * L1);
    for (int l = 0; l < L1; l++) moments_init(&s[l], l == base ? base_dim : dim, folds);
    return s;
}

/* Bytes of every statistics set, the subsample on one rank, and the CKA Gram sums. */
static double memory_estimate(const Ctx *x, int world) {
    const AnalyzeLayersOpts *o = x->o;
    double b = 0, big = 0;
    const FoldStats *sets[4] = {x->fr, x->pf, x->sg, x->wg};
    for (int s = 0; s < 4; s++)
        for (int l = 0; sets[s] && l < x->L1; l++) {
            const double d = sets[s][l].dim;
            b += moments_bytes((int)d, n_slots(o));
            big = fmax(big, 8.0 * n_slots(o) * (1 + d + d * (d + 1) / 2));
        }
    for (int c = 0; c < x->nc; c++) {
        const int dc = x->cc.m->cfg.conv_dim[c] + 80;
        b += moments_bytes(dc, n_slots(o));
        big = fmax(big, 8.0 * n_slots(o) * (1 + dc + dc * (dc + 1) / 2.0));
    }
    b += big; /* the sums buffer of one set during the reduction */
    const double sub = (double)(o->sub_frames < x->n_frames ? o->sub_frames : x->n_frames);
    if (o->props & (ALP_CKA | ALP_PNMI)) b += 1.2 * sub * x->L1 * x->D * 4.0 / world;
    if (o->props & ALP_CKA) b += 8.0 * (double)x->L1 * x->D * x->L1 * x->D;
    /* the model(s): parameters, gradients (allocated, unused) and the activation arena */
    for (const Model *m = x->cc.m; m; m = m == x->cc.m ? x->m2 : NULL) b += 4.0 * (2.0 * m->table.total + m->arena_floats);
    return b;
}

static double mem_total_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    double kb = 0;
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemTotal: %lf kB", &kb) == 1) break;
        fclose(f);
    }
    return kb * 1024.0;
}

/* Frame i's row of the frame set st (fold slot f): [x_l | mel | x2_l | x_base] (h, h2, hb the layer,
 * the same layer of --ckpt2, the base layer; hb NULL for the base layer's own set, which has no x_base:
 * intra is not asked of it, and the block would repeat x_l). */
static void frame_row(const Ctx *x, FoldStats *st, int f, const float *h, const float *hb, const float *h2,
                      const float *mel, int64_t i) {
    const int D = x->D;
    double *z = moments_row(st, f);
    for (int j = 0; j < D; j++) z[j] = h[i * D + j];
    if (x->o->props & ALP_MEL)
        for (int j = 0; j < 80; j++) z[x->mel_off + j] = mel[i * 80 + j];
    if (x->o->props & ALP_INTER)
        for (int j = 0; j < x->D2; j++) z[x->inter_off + j] = h2[i * x->D2 + j];
    if ((x->o->props & ALP_INTRA) && hb)
        for (int j = 0; j < D; j++) z[x->base_off + j] = hb[i * D + j];
    moments_row_done(st, f);
}

/* Frame i's row [x_l | one-hot(cls)] of st (fold slot f), q classes. */
static void class_row(const Ctx *x, FoldStats *st, int f, const float *h, int cls, int q, int64_t i) {
    const int D = x->D;
    double *z = moments_row(st, f);
    for (int j = 0; j < D; j++) z[j] = h[i * D + j];
    memset(z + D, 0, sizeof(double) * q);
    z[D + cls] = 1;
    moments_row_done(st, f);
}

/* The mel property of each encoder frame (T, 80): waveform frontends the fbank frame under the same
 * samples (i * hop / 160), fbank frontends the mean of the stacked frames. */
static void mel_of_frames(Ctx *x, int64_t n, int64_t T, float *mel) {
    const int64_t nf = features_num_frames(n), step = x->hop / 160;
    features_compute(x->fe, x->cc.wav, n, x->fb);
    const int stack = x->cc.m->cfg.frontend == FRONTEND_FBANK ? x->cc.m->cfg.fbank_stack : 1;
    for (int64_t i = 0; i < T; i++)
        for (int j = 0; j < 80; j++) {
            double s = 0;
            for (int k = 0; k < stack; k++) {
                int64_t f = i * step + k;
                s += x->fb[(f < nf ? f : nf - 1) * 80 + j];
            }
            mel[i * 80 + j] = (float)(s / stack);
        }
}

/* Each frame's fold, subsample draw and phone-frame class (-1: no phone). */
static int frame_labels(Ctx *x, int64_t u, int64_t T, int *fold, double *draw, int *lab, KoeError *err) {
    int64_t na = 0;
    if (need_align(x->o) && (na = read_align(x, u, err)) < 0) return -1;
    const int *map = need_align(x->o) ? x->map[x->cc.c.utt_shard[u]] : NULL;
    for (int64_t i = 0; i < T; i++) {
        KoeRng g = koe_rng(x->o->seed, (uint64_t)u, (uint64_t)i, KOE_RNG_ANALYZE_FRAME);
        fold[i] = (int)koe_rng_below(&g, (uint64_t)x->o->folds);
        draw[i] = koe_rng_uniform(&g);
        lab[i] = -1;
        const int64_t j = segments_center_frame(i, x->hop, x->win);
        if (map && j < na && x->al[j] != SHARD_NO_PHONE) lab[i] = x->fcls[map[x->al[j]]];
    }
    return 0;
}

/* Room for cap subsample frames. */
static void sub_reserve(Ctx *x, int64_t cap) {
    if (cap <= x->cap_sub) return;
    x->cap_sub = cap;
    x->sub = koe_realloc(x->sub, sizeof(float) * x->cap_sub * x->L1 * x->D);
    x->sub_fold = koe_realloc(x->sub_fold, sizeof(int) * x->cap_sub);
    x->sub_lab = koe_realloc(x->sub_lab, sizeof(int) * x->cap_sub);
    x->sub_key = koe_realloc(x->sub_key, sizeof(int64_t) * x->cap_sub);
}

static void sub_append(Ctx *x, const float **hid, int64_t i, int fold, int lab, double draw) {
    const int64_t w = (int64_t)x->L1 * x->D;
    if (x->n_sub == x->cap_sub) sub_reserve(x, x->cap_sub + x->cap_sub / 2 + 1024); /* beyond run_forwards' reserve */
    x->sub_key[x->n_sub] = (int64_t)(draw * 9007199254740992.0);
    for (int l = 0; l < x->L1; l++) memcpy(x->sub + x->n_sub * w + (int64_t)l * x->D, hid[l] + i * x->D, sizeof(float) * x->D);
    x->sub_fold[x->n_sub] = fold;
    x->sub_lab[x->n_sub++] = lab;
}

/* z = the mean of rows [a, b) of h (rows of C floats), summed in row order: each z[j] is the sum the
 * row-by-row loop gives, in vector registers (omp simd: -O2's cost model leaves it scalar, and the
 * pooling windows of --conv sum ~150 rows per 10 ms frame over the stack). */
static void window_mean(const float *restrict h, int C, int64_t a, int64_t b, double *restrict z) {
    memset(z, 0, sizeof(double) * C);
    for (int64_t i = a; i < b; i++) {
        const float *restrict r = h + i * C;
#pragma omp simd
        for (int j = 0; j < C; j++) z[j] += r[j];
    }
    const double n = (double)(b - a);
#pragma omp simd
    for (int j = 0; j < C; j++) z[j] /= n;
}

/* --conv: each conv layer's output of utterance u (n samples; the model's last forward) averaged onto
 * the fbank frames (x->fb, from mel_of_frames) and added with them, each pooled frame in the fold
 * keyed by (utterance, fbank frame). */
static void add_conv_frames(Ctx *x, int64_t u, int64_t n) {
    const int64_t nf = features_num_frames(n);
    for (int c = 0; c < x->nc; c++) {
        const ConvPool *p = &x->cpool[c];
        const int C = x->cc.m->cfg.conv_dim[c];
        const int64_t nt = segments_conv_pooled(p, x->cc.m->Tc[c], nf);
        const float *act = x->cc.m->a.conv_act[c];
        for (int64_t t = 0; t < nt; t++) {
            const int64_t fb = t * p->fb_step;
            KoeRng g = koe_rng(x->o->seed, (uint64_t)u, (uint64_t)fb, KOE_RNG_ANALYZE_CONV);
            const int f = slot_of(x->o, (int)koe_rng_below(&g, (uint64_t)x->o->folds));
            double *z = moments_row(&x->cv[c], f);
            window_mean(act, C, t * p->stride, t * p->stride + p->kernel, z);
            for (int j = 0; j < 80; j++) z[C + j] = x->fb[fb * 80 + j];
            moments_row_done(&x->cv[c], f);
        }
    }
}

/* The frame units of utterance u (n samples, T encoder frames, hidden states hid, and hid2 of
 * --ckpt2 for inter), each frame's row into its fold slot. */
static int add_frames(Ctx *x, int64_t u, int64_t n, int64_t T, const float **hid, const float **hid2, KoeError *err) {
    int *fold = koe_malloc(sizeof(int) * T), *lab = koe_malloc(sizeof(int) * T);
    double *draw = koe_malloc(sizeof(double) * T);
    float *mel = x->o->props & ALP_MEL ? koe_malloc(sizeof(float) * T * 80) : NULL;
    int rc = frame_labels(x, u, T, fold, draw, lab, err);
    if (rc == 0) {
        if (mel) mel_of_frames(x, n, T, mel);
        if (x->nc) add_conv_frames(x, u, n);
        for (int l = 0; l < x->L1; l++)
            for (int64_t i = 0; i < T; i++) {
                const int f = slot_of(x->o, fold[i]);
                if (x->fr) frame_row(x, &x->fr[l], f, hid[l], l == x->o->base_layer ? NULL : hid[x->o->base_layer],
                                     hid2 ? hid2[l] : NULL, mel, i);
                if (x->pf && lab[i] >= 0) class_row(x, &x->pf[l], f, hid[l], lab[i], x->nfcls, i);
            }
        if (x->o->props & (ALP_CKA | ALP_PNMI))
            for (int64_t i = 0; i < T; i++)
                if (draw[i] < x->sub_p) sub_append(x, hid, i, fold[i], lab[i], draw[i]);
    }
    free(fold), free(lab), free(draw), free(mel);
    return rc;
}

/* The segment units of utterance u (seg[0 .. ns), q classes) into st: per layer, each segment's row
 * [mean of the window | one-hot] into its fold slot. */
static void add_segments(Ctx *x, FoldStats *st, int q, const SegUnit *seg, int64_t ns, const float **hid) {
    const int D = x->D;
    for (int l = 0; l < x->L1; l++)
        for (int64_t s = 0; s < ns; s++) {
            const int f = slot_of(x->o, seg[s].fold);
            double *z = moments_row(&st[l], f);
            window_mean(hid[l], D, seg[s].first, seg[s].end, z);
            memset(z + D, 0, sizeof(double) * q);
            z[D + seg[s].cls] = 1;
            moments_row_done(&st[l], f);
        }
}

/* The segments of set ss in utterance u (ss ascending by utterance; *at the cursor) into st. */
static void add_utt_segments(Ctx *x, FoldStats *st, const SegSet *ss, int64_t *at, int64_t u, const float **hid) {
    while (*at < ss->n && ss->seg[*at].utt < u) (*at)++;
    int64_t e = *at;
    while (e < ss->n && ss->seg[e].utt == u) e++;
    if (e > *at) add_segments(x, st, ss->ncls, ss->seg + *at, e - *at, hid);
    *at = e;
}

/* One forward of wav (n samples) through m; the time goes to x->t_forward. Returns the frame count. */
static int64_t forward(Ctx *x, Model *m, CkptInput *in, int64_t n) {
    ModelRun run = {0};
    int64_t S;
    const float *inp = ckpt_input_compute(in, x->cc.wav, n, &S);
    const double t = koe_now();
    model_forward(m, inp, &S, 1, S, NULL, &run);
    x->t_forward += koe_now() - t;
    return m->T;
}

/* This rank's share [*s0, *s1) of the run list: contiguous, split at equal shares of the samples (a
 * forward's cost) rather than of the utterance count, so the ranks finish their forwards together. */
static void rank_share(const Ctx *x, int64_t *s0, int64_t *s1) {
    const int world = comm_size(), rank = comm_rank();
    double total = 0, at = 0;
    for (int64_t k = 0; k < x->n_run; k++) total += (double)x->cc.c.utt_length[x->run_utts[k]];
    *s0 = *s1 = x->n_run;
    for (int64_t k = 0; k < x->n_run; k++) { /* k starts rank r when the samples before it reach total r / world */
        if (*s0 == x->n_run && at >= total * rank / world) *s0 = k;
        if (at >= total * (rank + 1) / world && rank + 1 < world) {
            *s1 = k;
            break;
        }
        at += (double)x->cc.c.utt_length[x->run_utts[k]];
    }
    if (*s1 < *s0) *s1 = *s0;
}

/* This rank's utterances (rank_share): one forward each (and one of --ckpt2 for the frame sample when
 * inter is asked for), units added. */
static int run_forwards(Ctx *x, KoeError *err) {
    int64_t s0, s1, si = 0, wi = 0;
    rank_share(x, &s0, &s1);
    if (x->o->props & (ALP_CKA | ALP_PNMI)) { /* the expected subsample of this share, and a margin */
        double n = 0;
        for (int64_t k = s0; k < s1; k++) n += x->in_frames[x->run_utts[k]] ? (double)utt_frames(x, x->run_utts[k]) : 0;
        sub_reserve(x, (int64_t)fmin(n, x->sub_p * n * 1.05 + 256));
    }
    const float **hid = koe_malloc(sizeof(float *) * x->L1), **hid2 = koe_malloc(sizeof(float *) * x->L1);
    int rc = 0;
    Progress *pr = progress_open("analyze layers", "utt", s1 - s0);
    for (int64_t k = s0; k < s1 && rc == 0; progress_add(pr, 1), k++) {
        const int64_t u = x->run_utts[k], n = ckpt_corpus_read(&x->cc, u, err);
        if (n < 0) {
            rc = -1;
            break;
        }
        const int64_t T = forward(x, x->cc.m, &x->cc.in, n);
        KOE_ASSERT(T == utt_frames(x, u));
        for (int l = 0; l < x->L1; l++) hid[l] = model_hidden(x->cc.m, l);
        const int two = x->m2 && x->in_frames[u];
        if (two) KOE_ASSERT(forward(x, x->m2, &x->in2, n) == T);
        for (int l = 0; two && l < x->L1; l++) hid2[l] = model_hidden(x->m2, l);
        if (x->in_frames[u]) rc = add_frames(x, u, n, T, hid, two ? hid2 : NULL, err);
        if (rc == 0 && x->sg) add_utt_segments(x, x->sg, &x->ph, &si, u, hid);
        if (rc == 0 && x->wg) add_utt_segments(x, x->wg, &x->wd, &wi, u, hid);
    }
    progress_close(pr);
    free(hid), free(hid2);
    return rc;
}

static void allreduce_f64(double *v, int64_t n) {
    for (int64_t o = 0; o < n; o += 1 << 27) comm_allreduce_sum_f64(v + o, (int)(n - o < (1 << 27) ? n - o : 1 << 27));
}

/* Every statistics set summed over ranks about its global mean: one allreduce of all the sets'
 * weighted means, then each set's sums (moments_to_sums) through one buffer sized for the largest. */
static void reduce_stats(Ctx *x) {
    FoldStats **sets = koe_malloc(sizeof(FoldStats *) * (4 * x->L1 + x->nc));
    int ns = 0;
    for (int l = 0; l < x->L1; l++) {
        FoldStats *of[4] = {x->fr, x->pf, x->sg, x->wg};
        for (int k = 0; k < 4; k++)
            if (of[k]) sets[ns++] = &of[k][l];
    }
    for (int c = 0; c < x->nc; c++) sets[ns++] = &x->cv[c];
    int64_t lc = 0, ls = 0;
    for (int i = 0; i < ns; i++) {
        moments_flush(sets[i]);
        lc += sets[i]->dim + 1;
        ls = moments_sums_len(sets[i]) > ls ? moments_sums_len(sets[i]) : ls;
    }
    double *c = koe_malloc(sizeof(double) * (lc ? lc : 1)), *sums = koe_malloc(sizeof(double) * (ls ? ls : 1));
    for (int i = 0, o = 0; i < ns; o += sets[i++]->dim + 1) moments_weighted_mean(sets[i], c + o, c + o + sets[i]->dim);
    allreduce_f64(c, lc);
    for (int i = 0, o = 0; i < ns; o += sets[i++]->dim + 1) {
        const int d = sets[i]->dim;
        for (int j = 0; j < d; j++) c[o + j] = c[o + d] > 0 ? c[o + j] / c[o + d] : 0;
        moments_to_sums(sets[i], c + o, sums);
        allreduce_f64(sums, moments_sums_len(sets[i]));
        moments_from_sums(sets[i], c + o, sums);
    }
    free(sums), free(c), free(sets);
}

/* The set and views of a job. */
static FoldStats *job_stats(const Ctx *x, const Job *j, CcaViews *v) {
    const int D = x->D;
    const int l = j->layer - x->nc;
    if (l < 0) { /* a conv layer: mel */
        const int C = x->cc.m->cfg.conv_dim[j->layer];
        *v = (CcaViews){0, C, C, 80};
        return &x->cv[j->layer];
    }
    switch (j->prop) {
    case PI_MEL: *v = (CcaViews){0, D, x->mel_off, 80}; return &x->fr[l];
    case PI_PHONE: *v = (CcaViews){0, D, D, x->ph.ncls}; return &x->sg[l];
    case PI_PHONE_FRAME: *v = (CcaViews){0, D, D, x->nfcls}; return &x->pf[l];
    case PI_WORD: *v = (CcaViews){0, D, D, x->wd.ncls}; return &x->wg[l];
    case PI_INTRA: *v = (CcaViews){0, D, x->base_off, D}; return &x->fr[l];
    default: *v = (CcaViews){0, D, x->inter_off, x->D2}; return &x->fr[l];
    }
}

static void make_jobs(Ctx *x) {
    x->jobs = koe_calloc((size_t)N_CCA * n_rows(x), sizeof(Job));
    for (int p = 0; p < N_CCA; p++)
        for (int g = 0; g < n_rows(x); g++)
            if ((x->o->props & (1u << p)) && !(p == PI_INTRA && g - x->nc == x->o->base_layer) &&
                (g >= x->nc || p == PI_MEL)) /* conv rows: mel only */
                x->jobs[x->n_jobs++] = (Job){p, g, {0}};
}

/* Refuse a property whose training folds hold no more units than its dimensions. */
static int check_sizes(const Ctx *x, KoeError *err) {
    for (int i = 0; i < x->n_jobs; i++) {
        CcaViews v;
        const FoldStats *fs = job_stats(x, &x->jobs[i], &v);
        double n = 0;
        for (int f = 0; f < fs->folds; f++) n += fs->n[f];
        for (int t = 0; t < x->o->trials; t++) {
            const double ntr = n - fs->n[2 * t] - fs->n[2 * t + 1];
            if (ntr <= (v.p > v.q ? v.p : v.q) || fs->n[2 * t] < 2 || fs->n[2 * t + 1] < 2)
                return koe_error_set(err, "%s: property %s: trial %d has %.0f training units for %d + %d dimensions "
                                     "(dev %.0f, test %.0f): use more --frames, a larger corpus or fewer --folds",
                                     x->o->corpus, PROP_NAMES[x->jobs[i].prop],
                                     t, ntr, v.p, v.q, fs->n[2 * t], fs->n[2 * t + 1]);
        }
    }
    return 0;
}

/* Each solve's rank, a solve being one trial of one job (cca_trial): the solves by estimated cost,
 * largest first (into order), each to the rank with the least so far (ties: the lower rank, the lower
 * solve), the same on every rank. The cost of a fit: the eigenproblems p^3 + q^3 and the SVD
 * p q min(p, q) of its job's views' dimensions. */
static int *solve_owners(const Ctx *x, int world, int *order) {
    const int T = x->o->trials, n = x->n_jobs * T;
    int *owner = koe_malloc(sizeof(int) * (n ? n : 1));
    double *cost = koe_malloc(sizeof(double) * (n ? n : 1)), *load = koe_calloc((size_t)world, sizeof(double));
    for (int i = 0; i < n; i++) {
        CcaViews v;
        job_stats(x, &x->jobs[i / T], &v);
        const double p = v.p, q = v.q;
        cost[i] = p * p * p + q * q * q + p * q * fmin(p, q);
        order[i] = i;
    }
    for (int a = 1; a < n; a++) /* insertion sort: descending cost, ascending index */
        for (int b = a; b > 0 && cost[order[b]] > cost[order[b - 1]]; b--) {
            const int t = order[b];
            order[b] = order[b - 1], order[b - 1] = t;
        }
    for (int a = 0; a < n; a++) {
        int r = 0;
        for (int k = 1; k < world; k++)
            if (load[k] < load[r]) r = k;
        owner[order[a]] = r;
        load[r] += cost[order[a]];
    }
    free(cost), free(load);
    return owner;
}

/* Every solve (job i, trial t) on its rank (solve_owners), a rank's solves over its OpenMP threads
 * largest first, so that no large one is left for the end while the other threads idle (each solve's
 * BLAS then runs on one thread; a trial's result does not depend on which thread or rank runs it); the
 * trials gathered by one allreduce and combined per job (cca_combine) on every rank. */
static void solve_jobs(Ctx *x) {
    enum { W = 10 }; /* doubles per trial */
    const int T = x->o->trials, n = x->n_jobs * T, rank = comm_rank();
    double *buf = koe_calloc((size_t)(n ? n : 1) * W, sizeof(double));
    int *order = koe_malloc(sizeof(int) * (n ? n : 1)), *owner = solve_owners(x, comm_size(), order);
    CcaProtocol pr = {.trials = T, .eps = x->o->eps.v, .n_eps = x->o->eps.n, .null_tol = x->o->null_tol};
#pragma omp parallel for schedule(dynamic)
    for (int a = 0; a < n; a++) {
        const int i = order[a];
        if (owner[i] != rank) continue;
        CcaViews v;
        const FoldStats *fs = job_stats(x, &x->jobs[i / T], &v);
        const CcaTrial r = cca_trial(fs, v, &pr, i % T);
        double *b = buf + (int64_t)i * W;
        b[0] = r.pwcca, b[1] = r.mean_rho, b[2] = r.rho1, b[3] = r.k, b[4] = r.dropped;
        b[5] = r.eps[0], b[6] = r.eps[1], b[7] = r.n_train, b[8] = r.n_dev, b[9] = r.n_test;
    }
    allreduce_f64(buf, (int64_t)n * W);
    for (int i = 0; i < x->n_jobs; i++) {
        CcaTrial tr[CCA_MAX_TRIALS];
        for (int t = 0; t < T; t++) {
            const double *b = buf + ((int64_t)i * T + t) * W;
            tr[t] = (CcaTrial){.pwcca = b[0], .mean_rho = b[1], .rho1 = b[2], .k = (int)b[3], .dropped = (int)b[4],
                               .eps = {b[5], b[6]}, .n_train = b[7], .n_dev = b[8], .n_test = b[9]};
        }
        x->jobs[i].r = cca_combine(tr, T);
        const CcaResult *r = &x->jobs[i].r;
        char name[16];
        layer_name(x, x->jobs[i].layer, name, sizeof name);
        if (r->dropped > 0 && rank == 0)
            koe_warn("analyze layers: %s %s: %d canonical direction(s) without variance on a test fold (a class it "
                     "lacks) left out of its score", PROP_NAMES[x->jobs[i].prop], name, r->dropped);
    }
    free(buf), free(owner), free(order);
}

/* Debiased and biased CKA between every pair of layers on the subsample, centred on its global mean. */
static void compute_cka(Ctx *x) {
    const int nb = x->L1, dim = nb * x->D;
    int *off = koe_malloc(sizeof(int) * (nb + 1));
    for (int b = 0; b <= nb; b++) off[b] = b * x->D;
    double *mean = koe_calloc((size_t)dim + 1, sizeof(double));
    for (int64_t r = 0; r < x->n_sub; r++)
        for (int j = 0; j < dim; j++) mean[j] += x->sub[r * dim + j];
    mean[dim] = (double)x->n_sub;
    allreduce_f64(mean, dim + 1);
    x->cka_n = (int64_t)mean[dim];
    for (int j = 0; j < dim; j++) mean[j] /= mean[dim] > 0 ? mean[dim] : 1;
    const int64_t len = (int64_t)dim * dim + nb * nb + nb;
    double *sums = koe_calloc((size_t)len, sizeof(double));
    cka_accumulate(x->sub, x->n_sub, dim, mean, off, nb, sums, sums + (int64_t)dim * dim, sums + (int64_t)dim * dim + nb * nb);
    allreduce_f64(sums, len);
    x->cka = koe_malloc(sizeof(double) * nb * nb);
    x->cka_biased = koe_malloc(sizeof(double) * nb * nb);
    const double *rr = sums + (int64_t)dim * dim, *rs = rr + nb * nb;
    cka_matrix(sums, dim, off, nb, rr, rs, (double)x->cka_n, 1, x->cka);
    cka_matrix(sums, dim, off, nb, rr, rs, (double)x->cka_n, 0, x->cka_biased);
    free(sums), free(mean), free(off);
}

/* Lloyd iterations of k-means on this rank's training rows X (n, D) from the shared sample S. */
static void kmeans_layer(const Ctx *x, const float *X, int64_t n, const float *S, int64_t Ns, int K, float *C) {
    const int D = x->D;
    KoeRng g = koe_rng(x->o->seed, 0, 0, KOE_RNG_KMEANS);
    kmeans_dist_init(C, S, Ns, D, K, 0, &g);
    KmeansStats st;
    kmeans_stats_init(&st, K, D);
    float *csq = koe_malloc(sizeof(float) * K), *scratch = koe_malloc(sizeof(float) * KMEANS_BLOCK * K);
    int32_t *as = koe_malloc(sizeof(int32_t) * (n ? n : 1));
    for (int it = 0; it < x->o->pnmi_iters; it++) {
        kmeans_stats_clear(&st);
        kmeans_sqnorms(C, K, D, csq);
        kmeans_stats_add_inertia(&st, kmeans_assign(X, n, D, C, csq, K, as, NULL, scratch));
        kmeans_accumulate(X, n, D, as, st.sums, st.counts);
        int empty;
        kmeans_dist_update(&st, C, S, Ns, &empty);
    }
    kmeans_stats_free(&st);
    free(csq), free(scratch), free(as);
}

/* Per layer: k-means (--pnmi-k) on the subsample frames outside the trials' test folds, PNMI of the
 * test folds' frames with a phone against their phone-frame class. */
static void compute_pnmi(Ctx *x) {
    const int D = x->D, K0 = x->o->pnmi_k, w = x->L1 * D;
    float *tr = koe_malloc(sizeof(float) * (x->n_sub ? x->n_sub : 1) * D), *te = koe_malloc(sizeof(float) * (x->n_sub ? x->n_sub : 1) * D);
    uint16_t *te_lab = koe_malloc(sizeof(uint16_t) * (x->n_sub ? x->n_sub : 1));
    x->pnmi = koe_malloc(sizeof(double) * x->L1);
    for (int l = 0; l < x->L1; l++) {
        int64_t ntr = 0, nte = 0;
        KmeansSample smp;
        kmeans_sample_init(&smp, x->o->sub_frames, D);
        for (int64_t r = 0; r < x->n_sub; r++) {
            const float *row = x->sub + r * w + (int64_t)l * D;
            const int f = x->sub_fold[r], test = f % 2 == 1 && f < 2 * x->o->trials;
            if (!test) {
                memcpy(tr + ntr++ * D, row, sizeof(float) * D);
                kmeans_sample_offer(&smp, x->sub_key[r], row);
            } else if (x->sub_lab[r] >= 0) {
                te_lab[nte] = (uint16_t)x->sub_lab[r];
                memcpy(te + nte++ * D, row, sizeof(float) * D);
            }
        }
        float *S;
        const int64_t Ns = kmeans_sample_merge(&smp, &S);
        kmeans_sample_free(&smp);
        const int K = Ns < K0 ? (int)Ns : K0;
        PnmiCounts pc;
        pnmi_counts_init(&pc, x->nfcls, K > 0 ? K : 1);
        if (K > 0) {
            float *C = koe_malloc(sizeof(float) * K * D), *csq = koe_malloc(sizeof(float) * K);
            float *scratch = koe_malloc(sizeof(float) * KMEANS_BLOCK * K);
            int32_t *as = koe_malloc(sizeof(int32_t) * (nte ? nte : 1));
            kmeans_layer(x, tr, ntr, S, Ns, K, C);
            kmeans_sqnorms(C, K, D, csq);
            kmeans_assign(te, nte, D, C, csq, K, as, NULL, scratch);
            pnmi_add(&pc, te_lab, as, nte);
            free(C), free(csq), free(scratch), free(as);
        }
        int64_t cnt[2] = {ntr, nte};
        comm_allreduce_sum_i64(cnt, 2);
        x->pnmi_train = cnt[0], x->pnmi_test = cnt[1];
        const int64_t nj = (int64_t)pc.n_phones * pc.n_clusters;
        comm_allreduce_sum_i64(pc.joint, (int)nj);
        pc.frames = cnt[1];
        x->pnmi[l] = pnmi_compute(&pc).pnmi;
        pnmi_counts_free(&pc);
        free(S);
    }
    free(tr), free(te), free(te_lab);
}

/* The columns of the table: the per-layer properties asked for, in PROP_NAMES order (not cka). */
static int columns(const Ctx *x, int *col) {
    int n = 0;
    for (int p = 0; p < N_PROPS; p++)
        if (p != PI_CKA && (x->o->props & (1u << p))) col[n++] = p;
    return n;
}

/* Score of property p at layer l: 1 and *v, or 0 when there is none (intra at its base, a failed fit). */
static int score(const Ctx *x, int p, int l, double *v) {
    if (p == PI_PNMI) return l >= x->nc ? (*v = x->pnmi[l - x->nc], 1) : 0;
    for (int i = 0; i < x->n_jobs; i++)
        if (x->jobs[i].prop == p && x->jobs[i].layer == l && x->jobs[i].r.ok) return *v = x->jobs[i].r.pwcca, 1;
    return 0;
}

static int best_layer(const Ctx *x, int p) {
    int best = -1;
    double bv = -INFINITY, v;
    for (int l = 0; l < n_rows(x); l++)
        if (score(x, p, l, &v) && v > bv) bv = v, best = l;
    return best;
}

static void print_cka(const Ctx *x, FILE *f) {
    fprintf(f, "debiased linear CKA (%lld frames):\n%-6s", (long long)x->cka_n, "");
    for (int l = 0; l < x->L1; l++) {
        char name[16];
        snprintf(name, sizeof name, "T%d", l);
        fprintf(f, " %6s", name);
    }
    fputc('\n', f);
    for (int a = 0; a < x->L1; a++) {
        fprintf(f, "T%-5d", a);
        for (int b = 0; b < x->L1; b++) fprintf(f, " %6.3f", x->cka[a * x->L1 + b]);
        fputc('\n', f);
    }
}

/* The table (stdout, sep " ", then the CKA matrix) or layers.tsv (sep "\t"). */
static void write_table(const Ctx *x, FILE *f, int tsv) {
    int col[N_PROPS];
    const int nc = columns(x, col);
    if (!tsv) {
        fprintf(f, "koe analyze layers: ckpt=%s corpus=%s frames=%lld (%lld utts)\n", x->o->ckpt, x->o->corpus,
                (long long)x->n_frames, (long long)x->n_frame_utts);
        if (x->o->props & ALP_PHONE) fprintf(f, "  phone segments=%lld (%d classes)", (long long)x->ph.n, x->ph.ncls);
        if (x->o->props & ALP_WORD) fprintf(f, "  word segments=%lld (%d classes)", (long long)x->wd.n, x->wd.ncls);
        fprintf(f, "  folds=%d trials=%d seed=%llu\n", x->o->folds, x->o->trials, (unsigned long long)x->o->seed);
    }
    fprintf(f, tsv ? "%s" : "%-6s", "layer");
    for (int c = 0; c < nc; c++) fprintf(f, tsv ? "\t%s" : " %-11s", PROP_NAMES[col[c]]);
    fputc('\n', f);
    for (int l = 0; l < n_rows(x) && nc > 0; l++) {
        char name[16];
        layer_name(x, l, name, sizeof name);
        fprintf(f, tsv ? "%s" : "%-6s", name);
        for (int c = 0; c < nc; c++) {
            double v;
            if (score(x, col[c], l, &v)) fprintf(f, tsv ? "\t%.6f" : " %-11.4f", v);
            else fprintf(f, tsv ? "\tNA" : " %-11s", "-");
        }
        fputc('\n', f);
    }
    fprintf(f, tsv ? "%s" : "%-6s", "best");
    for (int c = 0; c < nc; c++) {
        char b[16] = "-";
        const int l = best_layer(x, col[c]);
        if (l >= 0) layer_name(x, l, b, sizeof b);
        fprintf(f, tsv ? "\t%s" : " %-11s", b);
    }
    fputc('\n', f);
    if (!tsv && x->cka) print_cka(x, f);
}

static void write_cka_tsv(const Ctx *x, FILE *f) {
    fprintf(f, "layer");
    for (int l = 0; l < x->L1; l++) fprintf(f, "\tT%d", l);
    fputc('\n', f);
    for (int a = 0; a < x->L1; a++) {
        fprintf(f, "T%d", a);
        for (int b = 0; b < x->L1; b++) fprintf(f, "\t%.6f", x->cka[a * x->L1 + b]);
        fputc('\n', f);
    }
}

static json_t *json_num_or_null(int ok, double v) { return ok && isfinite(v) ? json_real(v) : json_null(); }

static json_t *json_matrix(const double *m, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) {
        json_t *row = json_array();
        for (int j = 0; j < n; j++) json_array_append_new(row, json_real(m[i * n + j]));
        json_array_append_new(a, row);
    }
    return a;
}

/* properties.<name> of a CCA property: per-layer arrays (null where there is no score); the unit
 * count n and n_train, n_dev, n_test of trial 0 (the same units at every T layer; --conv's C rows have
 * their own 10 ms units, not counted here). */
static json_t *json_cca_prop(const Ctx *x, int p) {
    static const char *const fields[] = {"pwcca", "pwcca_std", "mean_rho", "rho1", "k", "dropped"};
    json_t *o = json_object(), *arr[6], *eps = json_array();
    for (int f = 0; f < 6; f++) arr[f] = json_array();
    const CcaResult *any = NULL;
    double n = 0;
    for (int l = 0; l < n_rows(x); l++) {
        const CcaResult *r = NULL;
        for (int i = 0; i < x->n_jobs; i++)
            if (x->jobs[i].prop == p && x->jobs[i].layer == l) r = &x->jobs[i].r, any = l >= x->nc ? r : any;
        const double v[4] = {r ? r->pwcca : 0, r ? r->pwcca_std : 0, r ? r->mean_rho : 0, r ? r->rho1 : 0};
        for (int f = 0; f < 4; f++) json_array_append_new(arr[f], json_num_or_null(r && r->ok, v[f]));
        json_array_append_new(arr[4], r ? json_integer(r->k) : json_null());
        json_array_append_new(arr[5], r ? json_integer(r->dropped) : json_null());
        json_t *le = json_array();
        for (int t = 0; r && t < x->o->trials; t++) json_array_append_new(le, json_pack("[ff]", r->eps[t][0], r->eps[t][1]));
        json_array_append_new(eps, r ? le : (json_decref(le), json_null()));
    }
    for (int i = 0; i < x->n_jobs; i++)
        if (x->jobs[i].prop == p && x->jobs[i].layer >= x->nc) { /* a T layer's units (not --conv's) */
            CcaViews v;
            const FoldStats *fs = job_stats(x, &x->jobs[i], &v);
            for (int f = 0; f < fs->folds; f++) n += fs->n[f];
            break;
        }
    const SegSet *ss = p == PI_PHONE ? &x->ph : p == PI_WORD ? &x->wd : NULL;
    json_object_set_new(o, "unit", json_string(ss ? "segment" : "frame"));
    json_object_set_new(o, "n", json_integer((json_int_t)n));
    json_object_set_new(o, "dim", json_integer(p == PI_MEL ? 80 : ss ? ss->ncls : p == PI_PHONE_FRAME ? x->nfcls
                                               : p == PI_INTER ? x->D2 : x->D));
    if (ss || p == PI_PHONE_FRAME) {
        json_t *names = json_array();
        const PhoneInventory *inv = p == PI_WORD ? &x->winv : &x->inv;
        for (int c = 0; c < (ss ? ss->ncls : x->nfcls); c++)
            if (ss) {
                json_array_append_new(names, json_string(inv->names[ss->label[c]]));
            } else {
                for (int q = 0; q < inv->n; q++)
                    if (x->fcls[q] == c) json_array_append_new(names, json_string(inv->names[q]));
            }
        json_object_set_new(o, "classes", json_integer((json_int_t)json_array_size(names)));
        json_object_set_new(o, "class_names", names);
    }
    if (p == PI_INTRA) json_object_set_new(o, "base", json_integer(x->o->base_layer));
    for (int f = 0; f < 6; f++) json_object_set_new(o, fields[f], arr[f]);
    json_object_set_new(o, "eps", eps);
    json_object_set_new(o, "n_train", json_integer(any ? (json_int_t)any->n_train : 0));
    json_object_set_new(o, "n_dev", json_integer(any ? (json_int_t)any->n_dev : 0));
    json_object_set_new(o, "n_test", json_integer(any ? (json_int_t)any->n_test : 0));
    return o;
}

static json_t *json_report(const Ctx *x) {
    const AnalyzeLayersOpts *o = x->o;
    const ModelConfig *mc = &x->cc.m->cfg;
    json_t *root = json_object(), *props = json_object(), *best = json_object(), *layers = json_array(), *eps = json_array();
    json_object_set_new(root, "format", json_string("koe-analyze-layers"));
    json_object_set_new(root, "format_version", json_integer(1));
    json_object_set_new(root, "ckpt", json_string(o->ckpt));
    json_object_set_new(root, "ckpt2", o->ckpt2 ? json_string(o->ckpt2) : json_null());
    json_object_set_new(root, "corpus", json_string(o->corpus));
    json_object_set_new(root, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(root, "model", json_pack("{s:s,s:s,s:i,s:i,s:f,s:b,s:s}", "encoder",
                        mc->encoder == ENCODER_CONFORMER ? "conformer" : "transformer", "frontend",
                        mc->frontend == FRONTEND_FBANK ? "fbank" : "waveform", "layers", mc->L, "dim", mc->D,
                        "frame_rate", x->rate, "layer_norm_first", mc->layer_norm_first, "last_layer",
                        "before final LayerNorm"));
    for (int i = 0; i < o->eps.n; i++) json_array_append_new(eps, json_real(o->eps.v[i]));
    json_object_set_new(root, "settings", json_pack("{s:i,s:i,s:o,s:f,s:s,s:s,s:I,s:I,s:I,s:i,s:i}", "folds", o->folds,
                        "trials", o->trials, "eps", eps, "null_tol", o->null_tol, "fold_by", "frame", "pwcca",
                        "centred, null-truncated (differs from layerwise-analysis; see help)", "frames",
                        (json_int_t)x->n_frames, "utterances", (json_int_t)x->n_frame_utts, "sub_frames",
                        (json_int_t)o->sub_frames, "phone_cap", o->phone_cap, "min_class", o->min_class));
    for (int l = 0; l < n_rows(x); l++) {
        char name[16];
        layer_name(x, l, name, sizeof name);
        json_array_append_new(layers, json_string(name));
    }
    json_object_set_new(root, "layers", layers);
    for (int p = 0; p < N_CCA; p++)
        if (o->props & (1u << p)) json_object_set_new(props, PROP_NAMES[p], json_cca_prop(x, p));
    if (o->props & ALP_PNMI) {
        json_t *v = json_array();
        for (int l = 0; l < n_rows(x); l++) json_array_append_new(v, l < x->nc ? json_null() : json_real(x->pnmi[l - x->nc]));
        json_object_set_new(props, "pnmi", json_pack("{s:s,s:i,s:I,s:I,s:o}", "unit", "frame", "k", o->pnmi_k,
                            "n_train", (json_int_t)x->pnmi_train, "n_test", (json_int_t)x->pnmi_test, "pnmi", v));
    }
    json_object_set_new(root, "properties", props);
    json_object_set_new(root, "cka", !(o->props & ALP_CKA) ? json_null()
                        : json_pack("{s:I,s:b,s:o,s:o}", "frames", (json_int_t)x->cka_n, "debiased", 1, "matrix",
                                    json_matrix(x->cka, x->L1), "biased", json_matrix(x->cka_biased, x->L1)));
    json_object_set_new(root, "procrustes", json_null());
    int col[N_PROPS];
    const int nc = columns(x, col);
    for (int c = 0; c < nc; c++) {
        const int l = best_layer(x, col[c]);
        char name[16];
        layer_name(x, l, name, sizeof name);
        json_object_set_new(best, PROP_NAMES[col[c]], l >= 0 ? json_string(name) : json_null());
    }
    json_object_set_new(root, "best", best);
    return root;
}

/* PATH.tmp for writing (NULL and err set when it cannot be created); text_publish closes it and renames
 * it to PATH when every write went through, else removes it: a killed or failed run leaves no partial
 * report under its final name. */
static FILE *text_create(const char *path, char *tmp, size_t n, KoeError *err) {
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        koe_error_set(err, "%s: cannot create: %s", tmp, strerror(errno));
        koe_error_fs(err, tmp);
    } else {
        koe_output_begin(tmp);
    }
    return f;
}

static int text_publish(FILE *f, const char *tmp, const char *path, KoeError *err) {
    koe_output_data_file(f, tmp); /* test hook: every line written, not yet closed and renamed */
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad) {
        koe_error_set(err, "%s: write failed: %s", tmp, strerror(errno));
        koe_error_fs(err, tmp);
        koe_output_end(tmp);
        unlink(tmp);
        return -1;
    }
    return koe_publish_file(tmp, path, err);
}

/* --dump FILE: every unit, `unit utt first end label fold sub` (unit frame, segment (a phone) or word;
 * encoder frames [first, end); label the phone-frame, phone or word class, -1 none; sub 1 for the
 * CKA/PNMI subsample). Rank 0, from the plan. */
static int write_dump(Ctx *x, const char *path, KoeError *err) {
    char tmp[4200];
    FILE *f = text_create(path, tmp, sizeof tmp, err);
    if (!f) return -1;
    fprintf(f, "unit\tutt\tfirst\tend\tlabel\tfold\tsub\n");
    int rc = 0;
    for (int64_t u = 0; u < x->cc.c.n_utts && rc == 0; u++) {
        if (!x->in_frames[u]) continue;
        const int64_t T = utt_frames(x, u);
        int *fold = koe_malloc(sizeof(int) * T), *lab = koe_malloc(sizeof(int) * T);
        double *draw = koe_malloc(sizeof(double) * T);
        rc = frame_labels(x, u, T, fold, draw, lab, err);
        for (int64_t i = 0; i < T && rc == 0; i++)
            fprintf(f, "frame\t%s\t%lld\t%lld\t%d\t%d\t%d\n", corpus_utt_id(&x->cc.c, u), (long long)i, (long long)i + 1,
                    lab[i], fold[i], draw[i] < x->sub_p);
        free(fold), free(lab), free(draw);
    }
    const SegSet *sets[2] = {&x->ph, &x->wd};
    for (int k = 0; k < 2; k++)
        for (int64_t s = 0; s < sets[k]->n; s++) {
            const SegUnit *g = &sets[k]->seg[s];
            fprintf(f, "%s\t%s\t%lld\t%lld\t%d\t%d\t0\n", k ? "word" : "segment", corpus_utt_id(&x->cc.c, g->utt),
                    (long long)g->first, (long long)g->end, g->cls, g->fold);
        }
    if (rc < 0) {
        fclose(f);
        koe_output_end(tmp);
        unlink(tmp);
        return rc;
    }
    return text_publish(f, tmp, path, err);
}

/* --out DIR's charts through recipes/plot.h: curves (each property's score by layer), curves_norm
 * (each min-max normalised to [0, 1], the authors' all-in-one figure) and cka (the heatmap), each as
 * .png, .svg and the kept .gp script. Without gnuplot the scripts stay and koe says what to install. */
static void write_plots(const Ctx *x) {
    int col[N_PROPS];
    const int nc = columns(x, col);
    const int nr = n_rows(x);
    double *xs = koe_malloc((size_t)nr * sizeof *xs), *ys = koe_malloc((size_t)(2 * nc * nr + 1) * sizeof *ys);
    PlotSeries raw[N_PROPS], norm[N_PROPS];
    for (int l = 0; l < nr; l++) xs[l] = l - x->nc; /* --conv: C1..Cn at -n..-1 */
    for (int c = 0; c < nc; c++) {
        double *y = ys + 2 * c * nr, *z = y + nr, lo = INFINITY, hi = -INFINITY;
        for (int l = 0; l < nr; l++) {
            if (!score(x, col[c], l, &y[l])) y[l] = NAN;
            if (isfinite(y[l])) lo = fmin(lo, y[l]), hi = fmax(hi, y[l]);
        }
        for (int l = 0; l < nr; l++) z[l] = hi > lo ? (y[l] - lo) / (hi - lo) : NAN;
        raw[c] = (PlotSeries){PROP_NAMES[col[c]], xs, y, nr};
        norm[c] = (PlotSeries){PROP_NAMES[col[c]], xs, z, nr};
    }
    char stem[3][4200]; /* the scripts are written first, then drawn by one gnuplot (plot_draw) */
    const char *drawn[3];
    int n = 0, rc = 0;
    KoeError err;
    PlotSpec spec = {.title = "koe analyze layers",
                     .xlabel = x->nc ? "layer (T0 = encoder input; conv layers C1..Cn at -n..-1)" : "layer (T0 = encoder input)",
                     .ylabel = "score",
                     .x_integer = 1, .formats = PLOT_PNG | PLOT_SVG, .defer = 1};
    if (nc > 0) {
        snprintf(stem[n], sizeof stem[n], "%s/curves", x->o->out);
        if ((rc = plot_lines(stem[n], &spec, raw, nc, &err)) == PLOT_DRAWN) drawn[n] = stem[n], n++;
        spec.ylabel = "score, min-max normalised per property";
        snprintf(stem[n], sizeof stem[n], "%s/curves_norm", x->o->out);
        if (rc >= 0 && (rc = plot_lines(stem[n], &spec, norm, nc, &err)) == PLOT_DRAWN) drawn[n] = stem[n], n++;
    }
    if (x->cka && rc >= 0) {
        spec = (PlotSpec){.title = "debiased linear CKA between layers", .xlabel = "layer", .ylabel = "layer",
                          .formats = PLOT_PNG | PLOT_SVG, .defer = 1};
        PlotMatrix mx = {.v = x->cka, .rows = x->L1, .cols = x->L1, .cell_fmt = "%.2f"};
        snprintf(stem[n], sizeof stem[n], "%s/cka", x->o->out);
        if ((rc = plot_heatmap(stem[n], &spec, &mx, &err)) == PLOT_DRAWN) drawn[n] = stem[n], n++;
    }
    if (rc >= 0) rc = plot_draw(drawn, n, NULL, &err);
    if (rc == PLOT_NO_GNUPLOT || rc < 0) koe_warn("--out %s: charts not drawn: %s", x->o->out, err.msg);
    free(xs);
    free(ys);
}

/* Rank 0: the table or JSON on stdout, and --out DIR's files but the charts (write_plots). */
static int write_outputs(const Ctx *x, KoeError *err) {
    json_t *root = json_report(x);
    int rc = 0;
    if (x->o->json) json_dumpf(root, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17)), fputc('\n', stdout);
    else write_table(x, stdout, 0);
    fflush(stdout);
    if (x->o->out) {
        char path[4200], tmp[4200];
        mkdir(x->o->out, 0777);
        for (int k = 0; k < 3 && rc == 0; k++) { /* each file whole or not at all */
            static const char *const names[3] = {"layers.json", "layers.tsv", "cka.tsv"};
            if (k == 2 && !x->cka) break;
            snprintf(path, sizeof path, "%s/%s", x->o->out, names[k]);
            FILE *f = text_create(path, tmp, sizeof tmp, err);
            if (!f) rc = -1;
            else {
                if (k == 0) json_dumpf(root, f, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
                else if (k == 1) write_table(x, f, 1);
                else write_cka_tsv(x, f);
                rc = text_publish(f, tmp, path, err);
            }
        }
    }
    json_decref(root);
    return rc;
}

/* --ckpt2 for inter: the same number of layers and the same frame rate as --ckpt. */
static int open_second(Ctx *x, KoeError *err) {
    const AnalyzeLayersOpts *o = x->o;
    if (!o->ckpt2) return koe_error_set(err, "--props inter needs --ckpt2 CKPT.h5 (the model to compare with)");
    if (!(x->m2 = ckpt_model_open(o->ckpt2, 1, x->cc.max_len, NULL, &x->r2, err))) return -1;
    ckpt_input_init(&x->in2, x->m2, x->cc.max_len);
    x->D2 = x->m2->cfg.D;
    const double rate2 = ckpt_model_frame_rate(x->m2);
    if (rate2 != x->rate || ckpt_model_frames(x->m2, x->cc.max_len) != ckpt_model_frames(x->cc.m, x->cc.max_len))
        return koe_error_set(err, "--ckpt2 %s has a frame rate of %g Hz, --ckpt %s %g Hz: inter compares the same "
                             "frames, so both need the same frontend", o->ckpt2, rate2, o->ckpt, x->rate);
    if (x->m2->cfg.L != x->cc.m->cfg.L)
        return koe_error_set(err, "--ckpt2 %s has %d layers, --ckpt %s %d: inter compares layer by layer", o->ckpt2,
                             x->m2->cfg.L, o->ckpt, x->cc.m->cfg.L);
    return 0;
}

/* --conv: each conv layer's averaging onto the fbank frames and its statistics. */
static int open_conv(Ctx *x, KoeError *err) {
    const ModelConfig *mc = &x->cc.m->cfg;
    if (mc->frontend != FRONTEND_WAVEFORM)
        return koe_error_set(err, "--conv: %s has an fbank frontend, without conv layers", x->o->ckpt);
    x->nc = mc->n_conv;
    x->cpool = koe_malloc(sizeof(ConvPool) * x->nc);
    x->cv = koe_malloc(sizeof(FoldStats) * x->nc);
    for (int c = 0; c < x->nc; c++) {
        if (segments_conv_pool(mc->conv_kernel, mc->conv_stride, c, &x->cpool[c]) < 0) {
            x->nc = c;
            return koe_error_set(err, "--conv: conv layer C%d of %s does not fall on the 10 ms fbank frames (its hop "
                                 "must divide 160 samples or be a multiple of it, its receptive field at most 400): "
                                 "leave out --conv", c + 1, x->o->ckpt);
        }
        moments_init(&x->cv[c], mc->conv_dim[c] + 80, n_slots(x->o));
    }
    return 0;
}

static int ctx_open(Ctx *x, const AnalyzeLayersOpts *o, KoeError *err) {
    memset(x, 0, sizeof *x);
    x->o = o;
    if (ckpt_corpus_open(&x->cc, o->ckpt, o->corpus, err) < 0) return -1;
    const ModelConfig *mc = &x->cc.m->cfg;
    x->L1 = mc->L + 1, x->D = mc->D;
    if (o->base_layer > mc->L)
        return koe_error_set(err, "--base-layer %d: %s has layers 0..%d", o->base_layer, o->ckpt, mc->L);
    x->rate = ckpt_model_frame_rate(x->cc.m);
    if ((o->props & ALP_INTER) && open_second(x, err) < 0) return -1;
    x->hop = (int64_t)llround(KOE_SAMPLE_RATE / x->rate);
    x->win = mc->frontend == FRONTEND_FBANK ? 160 * (mc->fbank_stack - 1) + 400 : ckpt_model_min_input(mc);
    if (o->conv && open_conv(x, err) < 0) return -1;
    if (need_align(o) && plan_phones(x, err) < 0) return -1;
    plan_frames(x);
    if (need_frames(o) && x->n_frames == 0) return koe_error_set(err, "%s: no utterance gives an encoder frame", o->corpus);
    if ((o->props & ALP_PHONE) && plan_segments(x, err) < 0) return -1;
    if ((o->props & ALP_WORD) && plan_words(x, err) < 0) return -1;
    plan_run_list(x);
    x->mel_off = x->D;
    x->inter_off = x->D + (o->props & ALP_MEL ? 80 : 0);
    x->base_off = x->inter_off + (o->props & ALP_INTER ? x->D2 : 0);
    x->fr_dim = x->base_off + (o->props & ALP_INTRA ? x->D : 0);
    if (o->props & (ALP_MEL | ALP_INTRA | ALP_INTER))
        x->fr = stats_sets(x->L1, x->fr_dim, o->base_layer, x->base_off, n_slots(o));
    if (o->props & ALP_PHONE_FRAME) x->pf = stats_sets(x->L1, x->D + x->nfcls, -1, 0, n_slots(o));
    if (o->props & ALP_PHONE) x->sg = stats_sets(x->L1, x->D + x->ph.ncls, -1, 0, n_slots(o));
    if (o->props & ALP_WORD) x->wg = stats_sets(x->L1, x->D + x->wd.ncls, -1, 0, n_slots(o));
    if (o->props & ALP_MEL) {
        x->fe = features_create(FEAT_FBANK);
        x->fb = koe_malloc(sizeof(float) * features_num_frames(x->cc.max_len) * 80);
    }
    return 0;
}

static void free_sets(FoldStats *s, int n) {
    for (int l = 0; s && l < n; l++) moments_free(&s[l]);
    free(s);
}

static void ctx_close(Ctx *x) {
    free_sets(x->fr, x->L1), free_sets(x->pf, x->L1), free_sets(x->sg, x->L1), free_sets(x->wg, x->L1);
    free_sets(x->cv, x->nc), free(x->cpool);
    if (x->m2) ckpt_input_free(&x->in2), model_free(x->m2), recipe_free(&x->r2);
    if (x->fe) features_free(x->fe);
    for (int si = 0; x->map && si < x->cc.c.n_shards; si++) free(x->map[si]);
    free(x->map), free(x->fcls), free(x->in_frames);
    free(x->ph.cls), free(x->ph.label), free(x->ph.seg), free(x->wd.cls), free(x->wd.label), free(x->wd.seg);
    free(x->run_utts), free(x->sub), free(x->sub_fold), free(x->sub_lab), free(x->sub_key);
    free(x->fb), free(x->al), free(x->jobs), free(x->cka), free(x->cka_biased);
    free(x->pnmi);
    phone_inventory_free(&x->inv);
    phone_inventory_free(&x->winv);
    ckpt_corpus_close(&x->cc);
}

/* Memory check (rank 0 prints), forwards, reductions and solves. Returns 0, or -1 with err set
 * (the same on every rank: every failure here is agreed). */
static int analyze(Ctx *x, KoeError *err) {
    const AnalyzeLayersOpts *o = x->o;
    const int rank = comm_rank(), world = comm_size();
    const double mem = memory_estimate(x, world), limit = o->max_mem_gb > 0 ? o->max_mem_gb * 1e9 : 0.8 * mem_total_bytes();
    if (rank == 0)
        fprintf(stderr, "koe analyze layers: %lld utterances to run (%lld frames in the frame sample, %lld segments), "
                "memory estimate %.0f MB per rank\n", (long long)x->n_run, (long long)x->n_frames, (long long)(x->ph.n + x->wd.n), mem / 1e6);
    if (limit > 0 && mem > limit)
        return koe_error_set(err, "memory estimate %.0f MB per rank is above --max-mem %.0f MB: lower --frames, "
                             "--sub-frames or --folds, use fewer --props, or more ranks", mem / 1e6, limit / 1e6);
    double *t = x->sec, t0 = koe_now();
    int64_t bad = run_forwards(x, err) < 0;
    t[0] = x->t_forward, t[1] = koe_now() - t0 - x->t_forward, t0 = koe_now();
    if (bad) fprintf(stderr, "koe analyze layers: %s\n", err->msg);
    comm_allreduce_max_i64(&bad, 1); /* also where the ranks meet after their forwards */
    if (bad) return koe_error_set(err, "stopped: a corpus read failed (the message above names it)");
    t[2] = koe_now() - t0, t0 = koe_now();
    reduce_stats(x);
    make_jobs(x);
    if (check_sizes(x, err) < 0) return -1;
    t[3] = koe_now() - t0, t0 = koe_now();
    solve_jobs(x);
    t[4] = koe_now() - t0, t0 = koe_now();
    if (o->props & ALP_CKA) compute_cka(x);
    if (o->props & ALP_PNMI) compute_pnmi(x);
    t[5] = koe_now() - t0;
    return 0;
}

/* Where the time went (rank 0 prints; collective): each part's mean over ranks, the outputs and charts
 * (rank 0 the files, the last rank the charts: the longer of the two), the time outside the forwards
 * (everything else, waiting included) against the forwards', and the largest peak RSS of any rank. */
static void report_times(Ctx *x) {
    const int world = comm_size();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t mx[2] = {ru.ru_maxrss, llround(x->sec[6] * 1e6)}; /* KB, microseconds */
    comm_allreduce_max_i64(mx, 2);
    const int64_t rss = mx[0];
    x->sec[6] = (double)mx[1] * 1e-6;
    comm_allreduce_sum_f64(x->sec, 6);
    double *t = x->sec, rest = t[6];
    for (int i = 0; i < 6; i++) t[i] /= world;
    for (int i = 1; i < 6; i++) rest += t[i];
    if (comm_rank() == 0)
        fprintf(stderr, "koe analyze layers: seconds per rank (mean of %d): forwards %.2f; statistics %.2f, waiting for "
                "the other ranks %.2f, reductions %.2f, solves %.2f, CKA and k-means %.2f, outputs and charts %.2f; "
                "outside the forwards %.2f (%.2f x the forwards); peak RSS %.0f MB (largest rank)\n", world, t[0], t[1],
                t[2], t[3], t[4], t[5], t[6], rest, t[0] > 0 ? rest / t[0] : 0, (double)rss / 1024.0);
}

int analyze_layers_run(const AnalyzeLayersOpts *o) {
    Ctx x;
    KoeError err = {{0}};
    int rc = ctx_open(&x, o, &err) < 0 || analyze(&x, &err) < 0 ? -1 : 0;
    const int analysed = rc == 0; /* the same on every rank */
    const double t0 = koe_now();
    const int rank = comm_rank(), last = comm_size() - 1;
    if (rc == 0 && rank == 0 && o->dump) rc = write_dump(&x, o->dump, &err);
    if (rc == 0 && rank == 0) rc = write_outputs(&x, &err);
    /* the charts: every rank holds the results, so the last one draws them while rank 0 writes the rest */
    if (rc == 0 && rank == last && o->out) mkdir(o->out, 0777), write_plots(&x);
    x.sec[6] = koe_now() - t0;
    if (analysed) report_times(&x);
    if (rc < 0 && comm_rank() == 0) fprintf(stderr, "koe analyze layers: %s\n", err.msg);
    ctx_close(&x);
    return rc < 0 ? KOE_EXIT_USAGE : KOE_EXIT_OK;
}

/* trainer.c — see trainer.h. An update reads like fairseq's train_step: micro-batches summed, one
 * normalisation by the update's scored-frame count over all ranks, clip, AdamW, schedule. */
#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/gemm.h"
#include "../core/objective.h"
#include "../core/optim.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../core/version.h"
#include "../data/checkpoint.h"
#include "../data/corpus.h"
#include "../data/features.h"
#include "../data/labels.h"
#include "../data/loader.h"
#include "../data/tfevents.h"
#include "../distributed/ckpt.h"
#include "../distributed/comm.h"
#include "../distributed/dp.h"
#include "../distributed/rundir.h"
#include "../distributed/watchdog.h"
#include "cli.h"
#include "plot.h"
#include "run_plot.h"

/* Validation masks are keyed by this fixed step, so every validation sees the same masks. */
#define TRAINER_VALID_STEP 0x7A11D000ULL
/* Gradient buckets reduced across ranks while backward runs (distributed/dp.h). */
#define TRAINER_BUCKET_BYTES (25 << 20)
#define TRAINER_PATH_MAX 4200

/* One corpus and what reads it: the training data or the validation data. */
typedef struct {
    Corpus corpus;
    int has_corpus;
    LabelSet labels;
    int has_labels;
} DataSide;

typedef struct { /* sums over a logging interval; all doubles: saved in checkpoints as TrainState.log_sums */
    double loss, head, correct, gnorm, samples;
    double code_ppl, prob_ppl, temp; /* wav2vec 2.0, summed over updates */
    double frames, updates;
    double comm; /* seconds waiting on the gradient reduction after backward (several ranks) */
    double pen, diversity; /* the weighted feature penalty and diversity terms x scored frames */
    double clipped, utts;  /* updates clipped; utterances of the applied updates */
} Interval;
/* TrainState.log_sums: the Interval; in the last slots the run's first logged loss (0: none yet) and its
 * training seconds at the checkpoint */
#define TRAINER_LOSS0_SLOT (CHECKPOINT_LOG_SUMS - 2)
#define TRAINER_ELAPSED_SLOT (CHECKPOINT_LOG_SUMS - 1)
_Static_assert(sizeof(Interval) <= TRAINER_LOSS0_SLOT * sizeof(double), "Interval fits TrainState.log_sums");

struct Trainer {
    const Recipe *rc;
    TrainerOptions opt;
    int rank, world;
    DataSide train, valid;
    int has_valid;
    Loader *loader;      /* NULL with a synthetic batch */
    LoaderBatch synth;   /* the synthetic batch (koe bench) */
    Model *m;
    Objective obj;
    ObjectiveConfig oc;
    int stride;          /* samples per encoder frame (waveform: product of conv strides) */
    int32_t *lab;        /* (max_B * max_T) labels per encoder frame */
    int32_t *lab_utt;    /* (lab_cap) one utterance's label frames */
    int64_t lab_cap;
    uint8_t *decay;      /* (P) 1 where weight decay applies; NULL: everywhere (no frozen tensor) */
    AdamW adamw;
    ScheduleConfig sched;
    DataParallel *dp;    /* several ranks: gradients reduced by buckets during backward */
    int64_t s0, s1;      /* this rank's AdamW slice of the flat buffer */
    int slice_cleared;   /* 1: the last AdamW step cleared the gradient's [s0, s1) (clear_grads) */
    uint16_t *wbf16;     /* (P) bf16 runs: the parameters rounded to bf16, the GEMMs' weights
                            (gemm_set_bf16_copy), inside wbf16_r only (the rest is never written, so never
                            resident); AdamW rewrites its slice, the rest follows the allgather */
    int64_t *wbf16_r;    /* the ranges of wbf16 kept (params_bf16_ranges) */
    int wbf16_nr;
    int wbf16_stale;     /* an fp32 step (koe bench --interleave) updated the parameters, not wbf16 */
    TrainState st;
    Interval iv;
    FILE *logf;          /* rank 0 with a run directory */
    TfEvents *tb[2];     /* rank 0 with a run directory: RUN/tb/train, RUN/tb/valid (TensorBoard) */
    TfScalar tb_vals[2][32]; /* the log line's scalars, train and valid (tags without "valid_") */
    int tb_n[2];
    int log_lines;       /* lines in log.jsonl (0 at step 0: the next one is the run's first; it names the version) */
    Progress *progress;  /* with a run directory: the progress line (rank 0 prints it) */
    double t_start, t_iv;
    double elapsed0;     /* training seconds before this process (from the checkpoint) */
    double loss0;        /* the run's first logged loss (health_plateau_*); 0 until then */
    int score_u;         /* HuBERT: this update is logged, score its unmasked frames too */
    double acc_u;        /* ... their accuracy (the logged update's own, over all ranks) */
    double monitor_s, update_s; /* this process: seconds monitoring (trainer_log, code counts, acc_u), updating */
    int health_run;      /* log lines in a row with a collapsed wav2vec 2.0 perplexity */
    int health_rq;       /* log lines in a row with collapsed BEST-RQ targets */
    int unhealthy;       /* a health check stops the run (trainer_unhealthy) */
    int plot_off;        /* run.plot_every: gnuplot is missing, do not try again */
    int64_t saved_step;  /* step of the newest checkpoint (-1: none) */
    double *code_hist;   /* BEST-RQ: (Q, codebook_size) training targets counted since the last log line */
    double code_usage, target_ppl; /* BEST-RQ, from code_hist at a log line */
    int64_t step0;
    int64_t hang_at_step; /* test hook KOE_TEST_HANG_AT_STEP=N[:S]: rank 1 waits before update N, */
    double hang_s;        /* S seconds, or for good without S (e2e train_watchdog, train_resume) */
    char ckdir[TRAINER_PATH_MAX], logpath[TRAINER_PATH_MAX], stoppath[TRAINER_PATH_MAX];
};

/* ---- corpus sides -------------------------------------------------------------------------------- */

static int open_side(DataSide *d, const Recipe *rc, const char *dir, const char *what, KoeError *err) {
    memset(d, 0, sizeof *d);
    if (corpus_open(&d->corpus, dir, err) < 0) {
        char msg[KOE_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return koe_error_set(err, "%s (%s = %s)", msg, what, dir);
    }
    d->has_corpus = 1;
    if (rc->objective.name != OBJ_HUBERT) return 0;
    if (!rc->data.labels[0])
        return koe_error_set(err, "HuBERT needs targets: set data.labels to a label set of %s (koe label --corpus %s "
                                  "--name NAME)", dir, dir);
    if (labelset_open(&d->labels, &d->corpus, rc->data.labels, err) < 0) return -1;
    d->has_labels = 1;
    if (fabs(d->labels.info.frame_rate - rc->objective.label_rate) > 1e-9)
        return koe_error_set(err, "label set %s of %s has frame_rate %g but objective.label_rate = %d: set "
                                  "objective.label_rate=%g (100 for MFCC labels, 50 for layer labels)",
                             rc->data.labels, dir, d->labels.info.frame_rate, rc->objective.label_rate,
                             d->labels.info.frame_rate);
    return 0;
}

static void close_side(DataSide *d) {
    if (d->has_labels) labelset_close(&d->labels);
    if (d->has_corpus) corpus_close(&d->corpus);
}

static int open_sides(Trainer *tr, KoeError *err) {
    const Recipe *rc = tr->rc;
    if (!rc->data.corpus[0]) return koe_error_set(err, "data.corpus is not set: pass data.corpus=DIR");
    if (open_side(&tr->train, rc, rc->data.corpus, "data.corpus", err) < 0) return -1;
    tr->has_valid = tr->opt.run_dir && rc->data.valid_corpus[0] != 0;
    if (tr->has_valid && open_side(&tr->valid, rc, rc->data.valid_corpus, "data.valid_corpus", err) < 0) return -1;
    if (tr->has_valid && tr->train.has_labels && tr->valid.labels.info.n_classes != tr->train.labels.info.n_classes)
        return koe_error_set(err, "label set %s has %d classes on %s but %d on %s: label both with the same k-means",
                             rc->data.labels, tr->train.labels.info.n_classes, rc->data.corpus,
                             tr->valid.labels.info.n_classes, rc->data.valid_corpus);
    return 0;
}

/* Largest batch (utterances) and longest input the loader can hand out for this corpus. */
static void batch_bounds(const Recipe *rc, const Corpus *c, int64_t *max_B, int64_t *max_len) {
    const LoaderPlanConfig *p = &rc->data.loader.plan;
    int64_t shortest = INT64_MAX, longest = 0, eligible = 0;
    for (int64_t i = 0; i < c->n_utts; i++) {
        if (c->utt_length[i] < p->min_sample_size) continue;
        int64_t L = c->utt_length[i] < p->max_sample_size ? c->utt_length[i] : p->max_sample_size;
        if (L < shortest) shortest = L;
        if (L > longest) longest = L;
        eligible++;
    }
    int64_t b = eligible ? p->max_tokens / shortest : 0;
    if (b < 1) b = 1;
    if (b > eligible) b = eligible;
    if (b > *max_B) *max_B = b;
    if (longest > *max_len) *max_len = longest;
}

static void loader_cfg(const Recipe *rc, LoaderConfig *lc, int valid) {
    *lc = rc->data.loader;
    lc->plan.seed = rc->run.seed;
    if (valid) lc->plan.lang_alpha = 1.0; /* validation: every utterance once */
    lc->plan.crop_to_shortest = rc->model.frontend == FRONTEND_WAVEFORM;
    lc->plan.rank = comm_rank();
    lc->plan.world = comm_size();
    lc->plan.log = !valid;
}

/* ---- the synthetic batch (koe bench) -------------------------------------------------------------- */

static void synth_batch(Trainer *tr, const TrainerSynthetic *sy) {
    const ModelConfig *mc = &tr->rc->model;
    LoaderBatch *b = &tr->synth;
    const int64_t B = sy->B, S = sy->S;
    b->n = B;
    b->global_n = B * tr->world;
    b->global_samples = B * S * tr->world;
    b->T = S;
    b->utt = koe_malloc((size_t)B * sizeof *b->utt);
    b->start = koe_calloc((size_t)B, sizeof *b->start);
    b->length = koe_malloc((size_t)B * sizeof *b->length);
    b->frames = koe_malloc((size_t)B * sizeof *b->frames);
    KoeRng r = koe_rng(tr->rc->run.seed, 0, (uint64_t)tr->rank, KOE_RNG_NOISE);
    if (mc->frontend == FRONTEND_WAVEFORM) {
        b->audio = koe_malloc((size_t)(B * S) * sizeof *b->audio);
        for (int64_t i = 0; i < B * S; i++) b->audio[i] = (float)koe_rng_normal(&r);
    } else {
        b->feat_kind = FEAT_FBANK;
        b->D = mc->fbank_dim;
        b->F = features_num_frames(S);
        b->feats = koe_malloc((size_t)(B * b->F * b->D) * sizeof *b->feats);
        for (int64_t i = 0; i < B * b->F * b->D; i++) b->feats[i] = (float)koe_rng_normal(&r);
    }
    for (int64_t i = 0; i < B; i++) {
        b->utt[i] = tr->rank * B + i;
        b->length[i] = S;
        b->frames[i] = b->F;
    }
    const int64_t T = model_frames(mc, mc->frontend == FRONTEND_WAVEFORM ? S : b->F);
    for (int64_t i = 0; i < B * T; i++) tr->lab[i] = (int32_t)koe_rng_below(&r, (uint64_t)sy->classes);
}

/* ---- one micro-batch ------------------------------------------------------------------------------ */

/* HuBERT targets of a batch, per encoder frame, as fairseq's hubert dataset + model do: the labels are
 * cropped with the audio (first label frame round(start * rate / sr), at most round(len * rate / sr)
 * frames, sr = KOE_SAMPLE_RATE) and encoder frame t takes label floor(t * rate * stride / sr); frames
 * past the labels get -1 (not scored). */
static int batch_labels(Trainer *tr, LabelSet *ls, const LoaderBatch *b, int64_t T, KoeError *err) {
    const double rate = ls->info.frame_rate;
    for (int64_t i = 0; i < b->n; i++) {
        const int64_t utt = b->utt[i];
        int64_t n = labelset_read(ls, utt, NULL, 0, err);
        if (n < 0) return -1;
        if (n > tr->lab_cap) {
            tr->lab_cap = n;
            tr->lab_utt = koe_realloc(tr->lab_utt, (size_t)n * sizeof *tr->lab_utt);
        }
        if (labelset_read(ls, utt, tr->lab_utt, tr->lab_cap, err) < 0) return -1;
        const int64_t first = llround((double)b->start[i] * rate / (double)KOE_SAMPLE_RATE);
        int64_t end = first + llround((double)b->length[i] * rate / (double)KOE_SAMPLE_RATE);
        if (end > n) end = n;
        const int64_t frames = model_frames(&tr->m->cfg, b->length[i]);
        int32_t *out = tr->lab + i * T;
        for (int64_t t = 0; t < T; t++) {
            /* exact integer form of fairseq's long(t * label_rate * stride / sample_rate) */
            int64_t j = first + (int64_t)floor((double)t * rate * tr->stride / (double)KOE_SAMPLE_RATE);
            out[t] = t < frames && j < end ? tr->lab_utt[j] : -1;
        }
    }
    return 0;
}

/* BEST-RQ: the batch's targets (every valid frame, not only the scored ones) into code_hist. */
static void code_count(Trainer *tr) {
    const BestrqAct *a = &tr->obj.bact;
    const int Q = tr->rc->objective.codebooks, K = tr->rc->objective.codebook_size;
    for (int64_t i = 0; i < (int64_t)a->B * a->T * Q; i++)
        if (a->targets[i] >= 0) tr->code_hist[(i % Q) * K + a->targets[i]] += 1.0;
}

/* BEST-RQ at a log line (every rank: the counts are summed over ranks): code_usage, the share of the
 * codebooks' entries used since the last log line, and target_ppl, exp of the targets' entropy (mean
 * over codebooks). A restart inside an interval counts from the restart. */
static void code_stats(Trainer *tr) {
    const int Q = tr->rc->objective.codebooks, K = tr->rc->objective.codebook_size;
    if (tr->dp) comm_allreduce_sum_f64(tr->code_hist, Q * K);
    double used = 0, ppl = 0;
    for (int q = 0; q < Q; q++) {
        const double *h = tr->code_hist + (size_t)q * K;
        double n = 0, ent = 0;
        for (int k = 0; k < K; k++) n += h[k];
        for (int k = 0; k < K; k++) {
            used += h[k] > 0;
            if (h[k] > 0) ent -= h[k] / n * log(h[k] / n);
        }
        ppl += n > 0 ? exp(ent) / Q : NAN;
    }
    tr->code_usage = used / ((double)Q * K);
    tr->target_ppl = ppl;
    memset(tr->code_hist, 0, (size_t)Q * K * sizeof *tr->code_hist);
}

/* One micro-batch through the objective; adds to *sum. backward = 0: forward only (validation). */
static int micro_batch(Trainer *tr, DataSide *side, const LoaderBatch *b, ModelRun run, int backward,
                       ObjectiveStats *sum, KoeError *err) {
    if (b->n == 0) { /* this rank's slice of the global batch is empty */
        ObjectiveStats st;
        if (tr->obj.reduce) objective_forward_empty(&tr->obj, tr->m, &st);
        return 0;
    }
    const Recipe *rc = tr->rc;
    const int wave = rc->model.frontend == FRONTEND_WAVEFORM;
    ObjectiveBatch ob = {
        .inp = wave ? b->audio : b->feats,
        .in_len = wave ? b->length : b->frames,
        .utt = b->utt,
        .B = (int)b->n,
        .S = wave ? b->T : b->F,
        .run = run,
    };
    ob.run.utt = b->utt; /* dropout masks keyed by utterance (distributed/README.md, Determinism) */
    if (rc->objective.name == OBJ_HUBERT) {
        const int64_t T = model_frames(&rc->model, ob.S);
        /* the synthetic batch's targets are in lab already */
        if (!tr->opt.synthetic && batch_labels(tr, &side->labels, b, T, err) < 0) return -1;
        ob.labels = tr->lab;
    }
    ObjectiveStats st;
    objective_forward(&tr->obj, tr->m, &ob, &st);
    const double t = koe_now();
    if (backward && tr->score_u) objective_score_unmasked(&tr->obj, tr->m, &ob, &st);
    tr->monitor_s += koe_now() - t;
    if (backward) objective_backward(&tr->obj, tr->m, 1.0f);
    const double t2 = koe_now();
    if (backward && tr->code_hist) code_count(tr);
    tr->monitor_s += koe_now() - t2;
    sum->loss_sum += st.loss_sum;
    sum->head_sum += st.head_sum;
    sum->frames += st.frames;
    sum->correct += st.correct;
    sum->frames_u += st.frames_u;
    sum->correct_u += st.correct_u;
    /* the auxiliary terms, frame-weighted here (the log divides by the scored frames over ranks) */
    sum->feature_pen += (double)rc->objective.feature_pen_weight * st.feature_pen * (double)st.frames;
    sum->diversity += (double)rc->objective.diversity_weight * st.diversity * (double)st.frames;
    /* wav2vec 2.0's perplexities and temperature: the micro-batches' mean (divided by the caller) */
    sum->code_ppl += st.code_ppl;
    sum->prob_ppl += st.prob_ppl;
    sum->temp += st.temp;
    return 0;
}

/* ---- opening --------------------------------------------------------------------------------------- */

/* objective.h's reduce hook: the objective's statistics summed over ranks */
static void reduce_sum(void *ctx, double *v, int n) {
    (void)ctx;
    comm_allreduce_sum_f64(v, n);
}

/* The model with the head in its table, sized for the largest batch the data can produce. */
static int build_model(Trainer *tr, KoeError *err) {
    const Recipe *rc = tr->rc;
    const int wave = rc->model.frontend == FRONTEND_WAVEFORM;
    const TrainerSynthetic *sy = tr->opt.synthetic;
    int64_t max_B = 0, max_len = 0, budget;
    if (sy) {
        max_B = sy->B;
        max_len = sy->S;
    } else {
        batch_bounds(rc, &tr->train.corpus, &max_B, &max_len);
        if (tr->has_valid) batch_bounds(rc, &tr->valid.corpus, &max_B, &max_len);
        if (max_len == 0)
            return koe_error_set(err, "%s: no utterance is at least data.min_sample_size = %lld samples long",
                                 rc->data.corpus, (long long)rc->data.loader.plan.min_sample_size);
    }
    const int64_t max_S = wave ? max_len : features_num_frames(max_len);
    /* The arena follows the loader's budget (B * cropped length <= data.max_tokens samples), not
     * max_B * max_S, which for the Base recipes is ~8x any real batch. In fbank frames a batch of
     * n <= max_B utterances holds at most max_tokens / hop + n frames. */
    if (sy) budget = max_B * max_S;
    else budget = wave ? rc->data.loader.plan.max_tokens : rc->data.loader.plan.max_tokens / FEATURES_HOP + max_B;
    const int n_classes = sy ? sy->classes : tr->train.has_labels ? tr->train.labels.info.n_classes : 0;
    recipe_objective_config(rc, n_classes, &tr->oc);
    ParamTable table;
    params_table_init(&table);
    model_table_build(&rc->model, &table);
    objective_add_params(&table, &tr->oc);
    const GemmPrecision prec = tr->opt.any_precision ? gemm_set_precision(GEMM_FP32) : gemm_precision();
    tr->m = model_create_budget(&rc->model, table, (int)max_B, max_S, budget > max_S ? budget : max_S);
    gemm_set_precision(prec);
    if (!tr->opt.run_dir) model_init_params(tr->m, rc->run.seed); /* with a run directory: resume() */
    objective_create(&tr->obj, &tr->oc, tr->m);
    tr->stride = wave ? 1 : rc->model.fbank_stack * FEATURES_HOP;
    for (int i = 0; wave && i < rc->model.n_conv; i++) tr->stride *= rc->model.conv_stride[i];
    tr->lab = koe_malloc((size_t)(max_B * model_frames(&rc->model, max_S)) * sizeof *tr->lab);
    if (rc->objective.name == OBJ_BESTRQ)
        tr->code_hist = koe_calloc((size_t)rc->objective.codebooks * (size_t)rc->objective.codebook_size, sizeof(double));
    return 0;
}

/* AdamW over this rank's slice; on several ranks the bucketed gradient reduction during backward. */
static void build_optimizer(Trainer *tr) {
    const Recipe *rc = tr->rc;
    Model *m = tr->m;
    /* the weight-decay mask is needed only when some tensor is frozen (BEST-RQ's quantizer): NULL
     * decays every parameter and saves a byte per parameter (95 MB at Base) */
    int frozen = 0;
    for (int i = 0; i < m->table.n; i++) frozen |= m->table.e[i].frozen;
    if (frozen) {
        tr->decay = koe_malloc((size_t)m->table.total);
        memset(tr->decay, 1, (size_t)m->table.total);
    }
    AdamWConfig ac;
    recipe_adamw_config(rc, &ac);
    recipe_schedule_config(rc, &tr->sched);
    tr->s0 = 0;
    tr->s1 = m->table.total;
    if (tr->world > 1) {
        tr->dp = dp_create(&m->table, m->grads, TRAINER_BUCKET_BYTES, rc->run.zero);
        dp_slice(tr->dp, &tr->s0, &tr->s1);
        m->on_grads_ready = dp_grads_ready;
        m->grads_ctx = tr->dp;
        tr->obj.reduce = reduce_sum;
    }
    adamw_init(&tr->adamw, &ac, (size_t)tr->s0, (size_t)tr->s1, tr->decay);
}

/* mkdir -p */
static int make_dir(const char *path, KoeError *err) {
    char *p = koe_strdup(path);
    int rc = 0;
    for (char *s = p + 1; rc == 0; s++) {
        const char c = *s;
        if (c != '/' && c != 0) continue;
        *s = 0;
        if (mkdir(p, 0777) < 0 && errno != EEXIST)
            rc = koe_error_set(err, "%s: cannot create directory: %s", p, strerror(errno));
        *s = c;
        if (!c) break;
    }
    free(p);
    return rc;
}

/* Keep the lines of RUN/log.jsonl up to `step` (a resumed run rewrites what followed its checkpoint),
 * and never a last line without its newline (a write cut short by a full disk or a kill). */
static int log_truncate(const char *path, int64_t step, KoeError *err) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = strlen(path) + 5;
    char *tmp = koe_malloc(n), line[8192];
    snprintf(tmp, n, "%s.tmp", path);
    FILE *o = fopen(tmp, "w");
    if (!o) {
        fclose(f);
        koe_error_set(err, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        long long s;
        if (sscanf(line, "{\"step\": %lld", &s) == 1 && s > step) break;
        if (!strchr(line, '\n') && feof(f)) break;
        fputs(line, o);
    }
    fclose(f);
    int bad = ferror(o);
    bad |= fclose(o) != 0;
    int rc = 0;
    if (bad) {
        koe_error_set(err, "%s: write failed: %s", tmp, strerror(errno));
        rc = koe_error_fs(err, tmp);
        unlink(tmp);
    } else {
        rc = koe_publish_file(tmp, path, err);
    }
    free(tmp);
    return rc;
}

/* Every rank must start from the same state: a clear error naming what differs. */
static void check_agree(uint64_t x, const char *what) {
    if (!comm_all_equal_u64(x))
        koe_fatal(KOE_EXIT_USAGE, "the ranks disagree on %s (this rank has %016llx): every rank must run the same "
                                  "recipe on the same run.dir (a shared file system) and resume the same checkpoint",
                  what, (unsigned long long)x);
}

/* run.init_from (a new run only), rank 0: the weights of a checkpoint whose architecture is this
 * recipe's; the head's tensors where the file has them in this run's shape, the rest keep run.seed's
 * init. */
static int init_weights_read(Trainer *tr, KoeError *err) {
    const char *given = tr->rc->run.init_from;
    char *text = NULL, va[256], vb[256], msg[KOE_ERR_LEN], followed[4200];
    const int follow = rundir_follow_latest(given, followed, sizeof followed, err);
    if (follow < 0) {
        snprintf(msg, sizeof msg, "%s", err->msg);
        return koe_error_set(err, "run.init_from = %s: %s", given, msg);
    }
    const char *path = follow ? followed : given;
    if (follow) koe_log("run.init_from = %s names the run's newest checkpoint, %s: reading that", given, path);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return koe_error_set(err, "run.init_from = %s is a directory: import a published model first (koe init --from "
                             "%s --out CKPT.h5) and set run.init_from=CKPT.h5 (of a koe run: RUN/checkpoints/step-N.h5)",
                             path, path);
    Recipe ck;
    if (checkpoint_read_config(path, &text, err) < 0 || recipe_load_string(&ck, path, text, 0, NULL, err) < 0) {
        free(text);
        snprintf(msg, sizeof msg, "%s", err->msg);
        return koe_error_set(err, "run.init_from: %s", msg);
    }
    free(text);
    const ConfigKey *k = model_config_arch_diff(&ck.model, &tr->rc->model, va, vb, sizeof va);
    recipe_free(&ck);
    if (k)
        return koe_error_set(err, "run.init_from = %s has another architecture: model.%s = %s there, %s in this recipe; "
                             "set model.%s=%s (the architecture must be the checkpoint's)", path, k->key, va, vb, k->key, va);
    const ParamTable *t = &tr->m->table;
    ParamTable enc; /* the encoder: the first entries of the table (build_model) */
    params_table_init(&enc);
    model_table_build(&tr->rc->model, &enc);
    signed char *got = koe_malloc((size_t)t->n);
    int rc = checkpoint_read_matching(path, t, tr->m->params, got, err), fresh = 0;
    for (int i = 0; rc == 0 && i < t->n; i++) {
        if (i < enc.n && got[i] != 1) rc = koe_error_set(err, "run.init_from = %s: encoder tensor /model/%s is %s", path,
                                                         t->e[i].name, got[i] ? "another shape" : "missing");
        else if (got[i] != 1) {
            fresh++;
            koe_log("run.init_from: %s %s in %s: it starts from run.seed's initialisation", t->e[i].name,
                    got[i] ? "has another shape" : "is not", path);
        }
    }
    if (rc == 0)
        koe_log("run.init_from: weights from %s (encoder, %d of %d head tensors); fresh optimizer, step 0", path,
                t->n - enc.n - fresh, t->n - enc.n);
    params_table_free(&enc);
    free(got);
    return rc;
}

/* Collective: rank 0 reads run.init_from and broadcasts the parameters (the tensors it did not read
 * are run.seed's, the same on every rank), so a large run reads the file once, not once per rank;
 * every rank returns rank 0's result and message. */
static int init_weights(Trainer *tr, KoeError *err) {
    int rc = tr->rank == 0 ? init_weights_read(tr, err) : 0;
    if (tr->world == 1) return rc;
    comm_bcast(&rc, sizeof rc, 0);
    if (rc < 0) {
        comm_bcast(err->msg, sizeof err->msg, 0);
        return -1;
    }
    comm_bcast(tr->m->params, (size_t)tr->m->table.total * sizeof *tr->m->params, 0);
    return 0;
}

/* Resume from RUN/checkpoints/latest when there is one: rank 0 reads the parameters for every rank,
 * each rank the moments of its own slice (any world size); a new run starts from run.init_from when set. */
static int resume(Trainer *tr, KoeError *err) {
    const Recipe *rc = tr->rc;
    Model *m = tr->m;
    char *ck_text = NULL, ck_path[TRAINER_PATH_MAX + 200];
    const int resumed = ckpt_load(tr->ckdir, &m->table, m->params, tr->adamw.m, tr->adamw.v, tr->s0, tr->s1, &tr->st,
                                  &ck_text, ck_path, sizeof ck_path);
    /* a checkpoint's /model is read whole (its checksum covers every tensor), so only a new run draws
     * the initial weights (Base: 1-3 s) */
    if (!resumed) model_init_params(m, rc->run.seed);
    if (!resumed && rc->run.init_from[0] && init_weights(tr, err) < 0) return -1;
    if (tr->world > 1) {
        check_agree(rc->hash, "the recipe hash");
        check_agree((uint64_t)tr->st.step, "the step to start from");
        check_agree(checkpoint_sum(m->params, 0, m->table.total), "the parameter checksum");
    }
    int rcode = 0;
    if (resumed) {
        if (strcmp(ck_text, rc->text))
            koe_warn("the recipe differs from the one %s was trained with; continuing with the new one (the run "
                     "will not repeat an uninterrupted one)", ck_path);
        if (tr->st.seed != rc->run.seed)
            rcode = koe_error_set(err, "%s was trained with run.seed = %llu, the recipe says %llu: resume with the "
                                       "same seed or use another run.dir",
                                  ck_path, (unsigned long long)tr->st.seed, (unsigned long long)rc->run.seed);
        tr->adamw.t = tr->st.adam_t;
        memcpy(&tr->iv, tr->st.log_sums, sizeof tr->iv); /* continue the interval it stopped in */
        tr->elapsed0 = tr->st.log_sums[TRAINER_ELAPSED_SLOT];
        tr->loss0 = tr->st.log_sums[TRAINER_LOSS0_SLOT];
        tr->saved_step = tr->st.step;
        if (rcode == 0 && tr->rank == 0) {
            koe_log("resumed from %s at step %lld (%lld global batches consumed)", ck_path, (long long)tr->st.step,
                    (long long)tr->st.consumed);
            rcode = log_truncate(tr->logpath, tr->st.step, err);
        }
    }
    free(ck_text);
    return rcode;
}

static double wall_time(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Rank 0: a new TensorBoard event file in RUN/tb/train and RUN/tb/valid, and the resolved recipe as a
 * text summary. Every file starts with a SessionLog START at the checkpoint's step + 1: TensorBoard
 * takes the first START of a run as its start and each later one as a restart, dropping what the
 * killed run logged after the checkpoint (its line at the checkpoint's step stays, as in log.jsonl). */
static int tb_open(Trainer *tr, KoeError *err) {
    static const char *const side[2] = {"train", "valid"};
    const double now = wall_time();
    for (int i = 0; i < 2; i++) {
        char dir[TRAINER_PATH_MAX + 16];
        snprintf(dir, sizeof dir, "%s/tb/%s", tr->rc->run.dir, side[i]);
        if (make_dir(dir, err) < 0 || !(tr->tb[i] = tfevents_open(dir, now, err))) return -1;
        if (tfevents_session_start(tr->tb[i], now, tr->st.step + 1, err) < 0) return -1;
    }
    char *md = NULL; /* the recipe as a markdown code block: every line indented by 4 spaces */
    size_t md_len = 0;
    FILE *f = open_memstream(&md, &md_len);
    fprintf(f, "    # resolved recipe (hash %016llx)\n    ", (unsigned long long)tr->rc->hash);
    for (const char *c = tr->rc->text; *c; c++) {
        fputc(*c, f);
        if (*c == '\n' && c[1]) fputs("    ", f);
    }
    fclose(f);
    const int rc = tfevents_text(tr->tb[0], now, tr->st.step, "recipe", md, err);
    free(md);
    return rc;
}

/* The run directory: checkpoints/, and on rank 0 recipe.ini and log.jsonl (appended). */
static int open_run_dir(Trainer *tr, KoeError *err) {
    const Recipe *rc = tr->rc;
    snprintf(tr->ckdir, sizeof tr->ckdir, "%s/checkpoints", rc->run.dir);
    snprintf(tr->logpath, sizeof tr->logpath, "%s/log.jsonl", rc->run.dir);
    snprintf(tr->stoppath, sizeof tr->stoppath, "%s/STOP", rc->run.dir);
    if (make_dir(tr->ckdir, err) < 0) return -1;
    if (resume(tr, err) < 0) return -1;
    if (tr->rank != 0) return 0;
    char recpath[TRAINER_PATH_MAX];
    snprintf(recpath, sizeof recpath, "%s/recipe.ini", rc->run.dir);
    FILE *rf = fopen(recpath, "w");
    int bad = !rf;
    if (rf) {
        bad |= fputs(rc->text, rf) < 0;
        bad |= fclose(rf) != 0;
    }
    if (bad) {
        koe_error_set(err, "%s: cannot write: %s", recpath, strerror(errno));
        return koe_error_fs(err, recpath);
    }
    tr->logf = fopen(tr->logpath, "a");
    if (!tr->logf) return koe_error_set(err, "%s: cannot open for appending: %s", tr->logpath, strerror(errno));
    fseek(tr->logf, 0, SEEK_END);
    tr->log_lines = ftell(tr->logf) > 0;
    return tb_open(tr, err);
}

/* run.precision -> core/gemm.h's precision, the same on every rank: bf16 needs bf16 dot products on
 * every rank's CPU (oneDNN's effective ISA), and auto falls back to fp32 when one lacks them. Rank 0
 * says which kernels run. */
static int set_precision(const Recipe *rc, int rank, KoeError *err) {
    int64_t lacking = !gemm_bf16_supported();
    if (comm_size() > 1) comm_allreduce_max_i64(&lacking, 1);
    const RunPrecision want = rc->run.precision;
    if (want == PRECISION_BF16 && lacking)
        return koe_error_set(err,
                             "run.precision = bf16: %s has no bf16 dot products (oneDNN's effective ISA has neither "
                             "avx512_core_bf16 nor AMX; ONEDNN_MAX_CPU_ISA, if set, can cap it); set run.precision = "
                             "fp32, or auto to fall back to fp32 by itself",
                             comm_size() > 1 ? "a rank's CPU" : "this CPU");
    gemm_set_precision(want == PRECISION_BF16 || (want == PRECISION_AUTO && !lacking) ? GEMM_BF16 : GEMM_FP32);
    if (rank == 0) {
        char kern[512];
        gemm_describe(kern, sizeof kern);
        koe_log("%s", kern);
        if (want == PRECISION_AUTO && lacking)
            koe_log("run.precision = auto: %s has no bf16 dot products; running in fp32",
                    comm_size() > 1 ? "a rank's CPU" : "this CPU");
    }
    return 0;
}

Trainer *trainer_open(const Recipe *rc, const TrainerOptions *opt, KoeError *err) {
    Trainer *tr = koe_calloc(1, sizeof *tr);
    tr->rc = rc;
    tr->opt = *opt;
    tr->rank = comm_rank();
    tr->world = comm_size();
    tr->st.seed = rc->run.seed;
    tr->saved_step = -1;
    const char *hang = getenv("KOE_TEST_HANG_AT_STEP");
    tr->hang_at_step = hang ? atoll(hang) : -1;
    tr->hang_s = hang && strchr(hang, ':') ? atof(strchr(hang, ':') + 1) : -1.0;
    cli_threads(0, rc->run.threads);
    if (opt->run_dir) {
        watchdog_start(rc->run.watchdog_s);
        watchdog_phase(0, "start-up (corpus, model, resume)");
    }
    int ok = set_precision(rc, tr->rank, err) == 0 && (opt->synthetic || open_sides(tr, err) == 0) &&
             build_model(tr, err) == 0;
    if (ok) build_optimizer(tr);
    if (ok && opt->run_dir) ok = open_run_dir(tr, err) == 0;
    if (ok && opt->synthetic) synth_batch(tr, opt->synthetic);
    if (ok && !opt->synthetic) {
        LoaderConfig lc;
        loader_cfg(rc, &lc, 0);
        tr->loader = loader_open(&tr->train.corpus, &lc, tr->st.consumed, err);
        ok = tr->loader != NULL;
    }
    if (!ok) {
        trainer_close(tr);
        return NULL;
    }
    if (gemm_precision() == GEMM_BF16) { /* the weights rounded once per update, not at every GEMM */
        const int64_t P = tr->m->table.total;
        tr->wbf16 = koe_malloc((size_t)P * sizeof(uint16_t));
        tr->wbf16_r = koe_malloc((size_t)(2 * tr->m->table.n) * sizeof(int64_t));
        tr->wbf16_nr = params_bf16_ranges(&tr->m->table, tr->wbf16_r);
        bf16_from_f32_ranges(tr->wbf16, tr->m->params, tr->wbf16_r, tr->wbf16_nr, 0, P);
        tr->adamw.bf16_ranges = tr->wbf16_r; /* adamw.bf16: set by each update (apply_update) */
        tr->adamw.bf16_nr = tr->wbf16_nr;
        gemm_set_bf16_copy(tr->m->params, tr->wbf16, tr->wbf16_r, tr->wbf16_nr);
    }
    tr->t_start = tr->t_iv = koe_now();
    tr->step0 = tr->st.step;
    if (opt->run_dir) { /* on a terminal; a batch log gets the log lines (trainer_log) */
        tr->progress = progress_open("train", "step", rc->optim.max_updates);
        progress_resume(tr->progress, tr->step0);
        progress_tty_only(tr->progress);
    }
    if (tr->rank == 0 && !opt->synthetic)
        koe_log("koe %s training %s: %.2fM parameters, %lld utterances (%.2f h), up to %d utterances x %lld per batch, "
                "steps %lld -> %lld",
                koe_version(), rc->data.corpus, (double)tr->m->table.total / 1e6, (long long)tr->train.corpus.n_utts,
                tr->train.corpus.hours, tr->m->max_B, (long long)tr->m->max_S, (long long)tr->st.step,
                (long long)rc->optim.max_updates);
    return tr;
}

void trainer_close(Trainer *tr) {
    if (!tr) return;
    progress_close(tr->progress);
    if (tr->opt.run_dir) watchdog_stop();
    if (tr->logf) fclose(tr->logf);
    tfevents_close(tr->tb[0]);
    tfevents_close(tr->tb[1]);
    dp_free(tr->dp);
    if (tr->loader) loader_close(tr->loader);
    loader_batch_free(&tr->synth);
    free(tr->lab);
    free(tr->lab_utt);
    free(tr->code_hist);
    free(tr->decay);
    if (tr->wbf16) gemm_set_bf16_copy(NULL, NULL, NULL, 0);
    free(tr->wbf16);
    free(tr->wbf16_r);
    adamw_free(&tr->adamw);
    if (tr->m) {
        objective_free(&tr->obj);
        model_free(tr->m);
    }
    if (tr->has_valid) close_side(&tr->valid);
    close_side(&tr->train);
    free(tr);
}

void trainer_fatal(Trainer *tr, int code, const char *fmt, ...) {
    char msg[KOE_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    trainer_close(tr);
    koe_fatal(code, "%s", msg);
}

static int due_valid_at(const Trainer *tr, int64_t step) {
    const int64_t every = tr->rc->run.valid_every;
    return tr->has_valid && every > 0 && step % every == 0;
}

/* trainer_due_log after `step` updates (trainer_step asks before the update: HuBERT's acc_u). */
static int due_log_at(const Trainer *tr, int64_t step) {
    return step % tr->rc->run.log_every == 0 || due_valid_at(tr, step) || step == tr->rc->optim.max_updates;
}

/* ---- one update ------------------------------------------------------------------------------------ */

/* The update's sums over all ranks (the gradient itself is reduced by dp during backward). */
static void reduce_update(ObjectiveStats *u) {
    double v[8] = {u->loss_sum, u->head_sum, (double)u->frames, u->correct, u->feature_pen, u->diversity,
                   (double)u->frames_u, u->correct_u};
    comm_allreduce_sum_f64(v, 8);
    u->loss_sum = v[0];
    u->head_sum = v[1];
    u->frames = (int64_t)v[2];
    u->correct = v[3];
    u->feature_pen = v[4];
    u->diversity = v[5];
    u->frames_u = (int64_t)v[6];
    u->correct_u = v[7];
}

/* Skip (returns 0) or apply (returns 1) the update whose gradient is in m->grads, normalised. */
static int apply_update(Trainer *tr, TrainerStep *s) {
    const Recipe *rc = tr->rc;
    TrainState *st = &tr->st;
    int64_t nonfinite = !isfinite(s->loss) || !isfinite(s->gnorm);
    if (tr->dp) comm_allreduce_max_i64(&nonfinite, 1); /* non-finite on any rank: every rank skips */
    if (s->frames == 0) {
        /* nothing was masked (BEST-RQ's sparse input masks can miss a short batch): no loss to learn
         * from; skipped, but not a failure counted toward optim.max_skips */
        st->skipped++;
        if (tr->rank == 0) koe_warn("step %lld: no masked frames in the batch; update skipped", (long long)st->step);
        return 0;
    }
    if (nonfinite) {
        st->skipped++;
        st->skips_in_row++;
        if (tr->rank == 0)
            koe_warn("step %lld: loss %g, gradient norm %g (scored frames %lld): update skipped (%lld in a row; "
                     "optim.max_skips = %d)",
                     (long long)st->step, s->loss, s->gnorm, (long long)s->frames, (long long)st->skips_in_row,
                     rc->optim.max_skips);
        s->give_up = st->skips_in_row >= rc->optim.max_skips;
        if (s->give_up && tr->rank == 0)
            koe_log("stopping: %lld updates in a row had a non-finite loss or gradient; the last good checkpoint "
                    "(%s/latest) is intact. Lower optim.lr or check the data.",
                    (long long)st->skips_in_row, tr->ckdir);
        return 0;
    }
    st->skips_in_row = 0;
    Model *m = tr->m;
    /* one factor: the normalisation by the update's scored frames and the clipping coefficient */
    const double coef = optim_clip_coef(s->gnorm, rc->optim.clip_norm);
    params_freeze_step(&m->table, m->grads, tr->decay);
    /* The copy is rewritten by a bf16 step's update only: an fp32 step (koe bench --interleave) costs
     * what an fp32 run's does, and the copy is brought up to date before the next bf16 step begins. */
    const int copy = tr->wbf16 && gemm_precision() == GEMM_BF16;
    tr->adamw.bf16 = copy ? tr->wbf16 : NULL;
    tr->wbf16_stale |= tr->wbf16 && !copy;
    adamw_step(&tr->adamw, m->params, m->grads, schedule_lr(&tr->sched, st->step), (float)(coef / (double)s->frames));
    tr->slice_cleared = 1;
    if (tr->s0 != 0 || tr->s1 != m->table.total) {
        dp_allgather_params(tr->dp, m->params);
        if (copy) { /* the other ranks' slices */
            bf16_from_f32_ranges(tr->wbf16, m->params, tr->wbf16_r, tr->wbf16_nr, 0, tr->s0);
            bf16_from_f32_ranges(tr->wbf16, m->params, tr->wbf16_r, tr->wbf16_nr, tr->s1, m->table.total);
        }
    }
    return 1;
}

/* The gradient the next backward accumulates into starts at zero: AdamW cleared its slice [s0, s1)
 * as it read it; the rest (the other ranks' ZeRO-1 slices), or all of it after a skipped update,
 * is cleared here. */
static void clear_grads(Trainer *tr) {
    Model *m = tr->m;
    if (tr->slice_cleared) {
        memset(m->grads, 0, (size_t)tr->s0 * sizeof(float));
        memset(m->grads + tr->s1, 0, (size_t)(m->table.total - tr->s1) * sizeof(float));
    } else
        model_zero_grad(m);
    tr->slice_cleared = 0;
}

static const LoaderBatch *next_batch(Trainer *tr, KoeError *err) {
    return tr->loader ? loader_next(tr->loader, err) : &tr->synth;
}

int trainer_step(Trainer *tr, TrainerStep *s, KoeError *err) {
    const Recipe *rc = tr->rc;
    TrainState *st = &tr->st;
    Model *m = tr->m;
    if (tr->wbf16_stale && gemm_precision() == GEMM_BF16) { /* after fp32 steps; not part of this step's time */
        bf16_from_f32_ranges(tr->wbf16, m->params, tr->wbf16_r, tr->wbf16_nr, 0, m->table.total);
        tr->wbf16_stale = 0;
    }
    const double t0 = koe_now();
    memset(s, 0, sizeof *s);
    s->step = st->step;
    clear_grads(tr);
    ObjectiveStats upd = {0};
    double samples = 0, utts = 0;
    ModelRun run = {.train = 1, .seed = rc->run.seed, .step = (uint64_t)st->step};
    tr->score_u = rc->objective.name == OBJ_HUBERT && tr->opt.run_dir && due_log_at(tr, st->step + 1);
    watchdog_phase(0, "forward/backward step %lld", (long long)st->step);
    for (int u = 0; u < rc->optim.update_freq; u++) {
        const LoaderBatch *b = next_batch(tr, err);
        if (tr->hang_at_step == st->step && tr->rank == 1) { /* test hook KOE_TEST_HANG_AT_STEP: rank 1 waits */
            const double until = koe_now() + tr->hang_s;
            while (tr->hang_s < 0 || koe_now() < until) usleep(100000);
        }
        if (tr->dp && u == rc->optim.update_freq - 1) dp_arm(tr->dp); /* this backward ends the update */
        if (!b || micro_batch(tr, &tr->train, b, run, 1, &upd, err) < 0) return -1;
        samples += (double)b->global_samples;
        utts += (double)b->global_n;
        st->epoch = b->epoch;
    }
    if (tr->loader) st->consumed = loader_consumed(tr->loader);
    watchdog_phase(1, "gradient reduction and update step %lld", (long long)st->step);
    double comm_wait = 0;
    if (tr->dp) {
        comm_wait = dp_finish(tr->dp);
        reduce_update(&upd);
    }
    /* normalise by the update's scored frames over all ranks; clip on the global norm */
    s->frames = upd.frames;
    s->loss = upd.frames ? upd.loss_sum / (double)upd.frames : NAN;
    s->acc = upd.frames ? upd.correct / (double)upd.frames : NAN;
    tr->acc_u = upd.frames_u ? upd.correct_u / (double)upd.frames_u : NAN;
    double gsq = optim_grad_sqnorm(m->grads, (size_t)tr->s0, (size_t)tr->s1); /* of the sum, not yet normalised */
    if (tr->s0 != 0 || tr->s1 != m->table.total) comm_allreduce_sum_f64(&gsq, 1);
    s->gnorm = sqrt(gsq) / (double)(upd.frames ? upd.frames : 1);
    s->applied = apply_update(tr, s);
    Interval *iv = &tr->iv;
    if (s->applied) {
        iv->loss += upd.loss_sum;
        iv->head += upd.head_sum;
        iv->correct += upd.correct;
        iv->frames += (double)upd.frames;
        iv->gnorm += s->gnorm;
        iv->pen += upd.feature_pen;
        iv->diversity += upd.diversity;
        iv->clipped += optim_clip_coef(s->gnorm, rc->optim.clip_norm) < 1.0;
        iv->utts += utts;
        iv->code_ppl += upd.code_ppl / rc->optim.update_freq;
        iv->prob_ppl += upd.prob_ppl / rc->optim.update_freq;
        iv->temp += upd.temp / rc->optim.update_freq;
        iv->updates++;
    }
    iv->comm += comm_wait;
    iv->samples += samples;
    s->samples = samples;
    st->step++;
    st->sched_step = st->step;
    if (rc->objective.name == OBJ_WAV2VEC2) st->gumbel_temp = wav2vec2_temperature(&tr->oc.wav2vec2, st->step);
    st->adam_t = tr->adamw.t;
    s->seconds = koe_now() - t0;
    tr->update_s += s->seconds;
    return 0;
}

/* ---- validation, logging, checkpoints, stopping ---------------------------------------------------- */

int trainer_validate(Trainer *tr, double *loss, double *acc, KoeError *err) {
    DataSide *v = &tr->valid;
    watchdog_phase(0, "validation step %lld", (long long)tr->st.step);
    LoaderConfig lc;
    loader_cfg(tr->rc, &lc, 1);
    lc.threads = 0;
    LoaderPlan *plan = loader_plan_create(v->corpus.utt_length, v->corpus.utt_lang, v->corpus.n_utts,
                                          v->corpus.n_langs, v->corpus.langs, &lc.plan, err);
    if (!plan) return -1;
    const int64_t n = loader_plan_epoch_batches(plan, 0);
    loader_plan_free(plan);
    Loader *l = loader_open(&v->corpus, &lc, 0, err);
    if (!l) return -1;
    ObjectiveStats sum = {0};
    ModelRun run = {.seed = tr->rc->run.seed, .step = TRAINER_VALID_STEP};
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i++) {
        const LoaderBatch *b = loader_next(l, err);
        rc = b ? micro_batch(tr, v, b, run, 0, &sum, err) : -1;
    }
    loader_close(l);
    double tot[3] = {sum.loss_sum, (double)sum.frames, sum.correct}; /* over ranks */
    if (tr->world > 1) comm_allreduce_sum_f64(tot, 3);
    *loss = tot[1] > 0 ? tot[0] / tot[1] : NAN;
    *acc = tot[1] > 0 ? tot[2] / tot[1] : NAN;
    return rc;
}

/* `"name": value` for log.jsonl; JSON has no NaN or Infinity: a non-finite value is null. A finite
 * value also goes to TensorBoard as printed (so both show the same number), valid_NAME as NAME in
 * RUN/tb/valid. */
static void json_num(Trainer *tr, const char *name, double v, const char *fmt) {
    FILE *f = tr->logf;
    fprintf(f, ", \"%s\": ", name);
    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    char num[64];
    snprintf(num, sizeof num, fmt, v);
    fputs(num, f);
    const int valid = strncmp(name, "valid_", 6) == 0;
    KOE_ASSERT(tr->tb_n[valid] < (int)(sizeof tr->tb_vals[0] / sizeof tr->tb_vals[0][0]));
    tr->tb_vals[valid][tr->tb_n[valid]++] = (TfScalar){valid ? name + 6 : name, (float)strtod(num, NULL)};
}

/* The log line's scalars to RUN/tb/train and RUN/tb/valid; a failed write turns TensorBoard off. */
static void tb_write(Trainer *tr) {
    for (int i = 0; i < 2; i++) {
        KoeError err;
        if (tr->tb[i] && tr->tb_n[i] &&
            tfevents_scalars(tr->tb[i], wall_time(), tr->st.step, tr->tb_vals[i], tr->tb_n[i], &err) < 0) {
            koe_warn("%s; no more TensorBoard events this run", err.msg);
            tfevents_close(tr->tb[i]);
            tr->tb[i] = NULL;
        }
        tr->tb_n[i] = 0;
    }
}

/* The auxiliary loss terms, per scored frame, where the objective has them (loss = head_loss + these). */
static void log_loss_terms(Trainer *tr) {
    const Interval *iv = &tr->iv;
    const Recipe *rc = tr->rc;
    const int pen = rc->objective.name != OBJ_BESTRQ && rc->model.frontend == FRONTEND_WAVEFORM;
    if (!pen && rc->objective.name != OBJ_WAV2VEC2) return;
    const double fr = iv->frames > 0 ? iv->frames : NAN;
    json_num(tr, "head_loss", iv->head / fr, "%.9g");
    if (rc->objective.name == OBJ_WAV2VEC2) json_num(tr, "diversity_loss", iv->diversity / fr, "%.9g");
    if (pen) json_num(tr, "feature_pen", iv->pen / fr, "%.9g");
}

static void write_log_line(Trainer *tr, double dt, int valid, double vloss, double vacc, int64_t rss_kb) {
    const Interval *iv = &tr->iv;
    FILE *f = tr->logf;
    const double n = iv->updates;
    const off_t start = ftello(f); /* where a line that does not fit is cut back to */
    fprintf(f, "{\"step\": %lld", (long long)tr->st.step);
    json_num(tr, "loss", iv->frames > 0 ? iv->loss / iv->frames : NAN, "%.9g");
    json_num(tr, "acc", iv->frames > 0 ? iv->correct / iv->frames : NAN, "%.9g");
    if (tr->rc->objective.name == OBJ_HUBERT) json_num(tr, "acc_u", tr->acc_u, "%.9g");
    json_num(tr, "lr", schedule_lr(&tr->sched, tr->st.step - 1), "%.9g");
    json_num(tr, "grad_norm", n > 0 ? iv->gnorm / n : NAN, "%.9g");
    json_num(tr, "audio_s_per_s", dt > 0 ? iv->samples / KOE_SAMPLE_RATE / dt : 0, "%.4g");
    json_num(tr, "elapsed_s", tr->elapsed0 + koe_now() - tr->t_start, "%.1f");
    json_num(tr, "max_rss_mb", (double)rss_kb / 1024.0, "%.0f");
    json_num(tr, "skipped", (double)tr->st.skipped, "%.0f");
    json_num(tr, "frames", iv->frames, "%.0f");
    if (tr->rc->objective.name == OBJ_WAV2VEC2 && n > 0) {
        json_num(tr, "code_ppl", iv->code_ppl / n, "%.9g");
        json_num(tr, "prob_ppl", iv->prob_ppl / n, "%.9g");
        json_num(tr, "temp", iv->temp / n, "%.9g");
    }
    log_loss_terms(tr);
    if (tr->code_hist) {
        json_num(tr, "code_usage", tr->code_usage, "%.9g");
        json_num(tr, "target_ppl", tr->target_ppl, "%.9g");
    }
    json_num(tr, "clip", n > 0 ? iv->clipped / n : NAN, "%.9g");
    json_num(tr, "utts", n > 0 ? iv->utts / n : NAN, "%.9g");
    json_num(tr, "epoch", (double)tr->st.epoch, "%.0f");
    if (tr->dp) json_num(tr, "comm_time_s", n > 0 ? iv->comm / n : 0.0, "%.4g");
    if (valid) {
        json_num(tr, "valid_loss", vloss, "%.9g");
        json_num(tr, "valid_acc", vacc, "%.9g");
    }
    if (tr->log_lines == 0 && tr->step0 == 0) /* a run's first line: which koe started it */
        fprintf(f, ", \"version\": \"%s\"", koe_version());
    fprintf(f, "}\n");
    if (fflush(f) != 0 || ferror(f)) { /* the checkpoints hold the state: a resume truncates the log to the newest */
        const int e = errno;
        const char *note = koe_fs_note(tr->logpath);
        const int cut = ftruncate(fileno(f), start) == 0; /* no half line: the log stays whole JSON lines */
        koe_fatal(KOE_EXIT_INTERNAL, "%s: cannot append the step %lld line: %s%s; %sthe newest checkpoint is intact "
                  "and the run resumes from it", tr->logpath, (long long)tr->st.step, strerror(e), note,
                  cut ? "" : "its last line is cut short (a resume drops it); ");
    }
    tr->log_lines++;
    tb_write(tr);
}

/* A health check fired: say what was seen, its usual causes with the keys to change, and where the
 * newest checkpoint is; trainer_unhealthy then stops the run (exit 2). */
static void health_stop(Trainer *tr, const char *key, const char *seen, const char *causes) {
    tr->unhealthy = 1;
    char ck[TRAINER_PATH_MAX + 64] = "none yet";
    if (tr->saved_step >= 0)
        snprintf(ck, sizeof ck, "%s/latest (step %lld; it resumes)", tr->ckdir, (long long)tr->saved_step);
    koe_log("health check %s failed at step %lld: %s. Usually: %s. Stopping (exit 2); newest checkpoint: %s; %s=0 "
            "turns this check off.",
            key, (long long)tr->st.step, seen, causes, ck, key);
}

/* Rank 0, at a log line: the run.health_* checks on the interval's values (recipes/README.md). */
static void health_check(Trainer *tr) {
    const Recipe *rc = tr->rc;
    const RecipeRun *run = &rc->run;
    const Interval *iv = &tr->iv;
    const double loss = iv->frames > 0 ? iv->loss / iv->frames : NAN;
    char seen[256];
    if (!(tr->loss0 > 0) && isfinite(loss)) tr->loss0 = loss;
    if (rc->objective.name == OBJ_WAV2VEC2 && run->health_min_ppl > 0 && tr->st.step > rc->optim.warmup &&
        iv->updates > 0) {
        const double code = iv->code_ppl / iv->updates, prob = iv->prob_ppl / iv->updates;
        tr->health_run = code < run->health_min_ppl || prob < run->health_min_ppl ? tr->health_run + 1 : 0;
        snprintf(seen, sizeof seen, "code_ppl %.3g, prob_ppl %.3g below run.health_min_ppl = %g for %d log lines in a row",
                 code, prob, run->health_min_ppl, tr->health_run);
        if (tr->health_run >= run->health_patience)
            health_stop(tr, "run.health_min_ppl", seen,
                        "the quantizer's codebook collapsed: a learning rate too high for it (lower optim.lr, longer "
                        "optim.warmup), a Gumbel temperature that falls too fast (objective.temp's decay closer to 1), "
                        "too weak a diversity term (raise objective.diversity_weight)");
    }
    if (tr->code_hist && run->health_min_target_ppl > 0) {
        tr->health_rq = tr->target_ppl < run->health_min_target_ppl ? tr->health_rq + 1 : 0;
        snprintf(seen, sizeof seen, "target_ppl %.3g (code_usage %.3g) below run.health_min_target_ppl = %g for %d log "
                 "lines in a row", tr->target_ppl, tr->code_usage, run->health_min_target_ppl, tr->health_rq);
        if (tr->health_rq >= run->health_patience)
            health_stop(tr, "run.health_min_target_ppl", seen,
                        "BEST-RQ's frozen quantizer maps almost every frame to one code: a degenerate codebook "
                        "(objective.codebook_size, objective.codebook_dim) or input features that are not "
                        "normalised or all alike (data.features, the corpus's audio)");
    }
    const double drop = run->health_plateau_drop;
    if (!tr->unhealthy && run->health_plateau_updates > 0 && tr->st.step >= run->health_plateau_updates &&
        isfinite(loss) && loss > (1.0 - drop) * tr->loss0) {
        snprintf(seen, sizeof seen, "the loss %.4f has not fallen by run.health_plateau_drop = %g from its first logged "
                 "value %.4f after %lld updates", loss, drop, tr->loss0, (long long)tr->st.step);
        health_stop(tr, "run.health_plateau_updates", seen,
                    "a learning rate far too low or too high (optim.lr, optim.warmup), targets that carry no "
                    "information (HuBERT: data.labels, objective.label_rate; BEST-RQ: objective.codebook_size), or "
                    "masks that hide nothing (model.mask_prob, model.mask_length)");
    }
}

int trainer_unhealthy(const Trainer *tr) { return tr->unhealthy; }

void trainer_log(Trainer *tr, const TrainerStep *s, int valid, double vloss, double vacc) {
    const double now = koe_now();
    trainer_progress(tr, s); /* first: the ETA below counts this update */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t rss_kb = ru.ru_maxrss; /* the largest rank's */
    if (tr->dp) comm_allreduce_max_i64(&rss_kb, 1);
    if (tr->code_hist) code_stats(tr);
    if (tr->rank == 0 && tr->logf) {
        const Interval *iv = &tr->iv;
        const double dt = now - tr->t_iv;
        write_log_line(tr, dt, valid, vloss, vacc, rss_kb);
        if (!progress_on_tty(tr->progress) || valid) {
            char eta[32];
            progress_fmt_eta(eta, sizeof eta, progress_eta_s(tr->progress));
            koe_log("step %lld/%lld loss %.4f acc %.3f lr %.3g gnorm %.3g %.2f audio s/s skipped %lld eta %s",
                    (long long)tr->st.step, (long long)tr->rc->optim.max_updates,
                    iv->frames > 0 ? iv->loss / iv->frames : NAN, iv->frames > 0 ? iv->correct / iv->frames : NAN,
                    schedule_lr(&tr->sched, tr->st.step - 1), iv->updates > 0 ? iv->gnorm / iv->updates : NAN,
                    dt > 0 ? iv->samples / KOE_SAMPLE_RATE / dt : 0, (long long)tr->st.skipped, eta);
            if (valid) koe_log("step %lld valid_loss %.4f valid_acc %.3f", (long long)tr->st.step, vloss, vacc);
        }
        health_check(tr);
    }
    if (tr->dp) comm_bcast(&tr->unhealthy, sizeof tr->unhealthy, 0); /* rank 0 checked: every rank stops */
    memset(&tr->iv, 0, sizeof tr->iv);
    tr->t_iv = now;
    tr->monitor_s += koe_now() - now;
}

void trainer_progress(Trainer *tr, const TrainerStep *s) {
    progress_detail(tr->progress, "loss %.4f acc %.3f gnorm %.3g", s->loss, s->frames ? s->acc : 0.0, s->gnorm);
    progress_add(tr->progress, tr->st.step - s->step);
}

/* run.plot_every: RUN/plots redrawn from log.jsonl, as koe plot does. A failure is a warning. */
static void plot_redraw(Trainer *tr) {
    char dir[TRAINER_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/plots", tr->rc->run.dir);
    KoeError err;
    int n = 0;
    const int rc = run_plot(tr->logpath, dir, PLOT_PNG | PLOT_SVG, NULL, &n, &err);
    if (rc == PLOT_DRAWN) return;
    koe_warn("run.plot_every: %s", err.msg);
    tr->plot_off = rc == PLOT_NO_GNUPLOT;
}

void trainer_save(Trainer *tr) {
    memcpy(tr->st.log_sums, &tr->iv, sizeof tr->iv);
    tr->st.log_sums[TRAINER_ELAPSED_SLOT] = tr->elapsed0 + koe_now() - tr->t_start;
    tr->st.log_sums[TRAINER_LOSS0_SLOT] = tr->loss0;
    /* every rank writes /state and its checksum: rank 0's sums (the ones it logs; the comm wait and the
     * clock differ between ranks) */
    if (tr->dp) comm_bcast(tr->st.log_sums, sizeof tr->st.log_sums, 0);
    ckpt_save(tr->ckdir, &tr->m->table, tr->m->params, tr->adamw.m, tr->adamw.v, tr->s0, tr->s1, tr->rc->text,
              &tr->st, tr->rc->run.keep_last);
    tr->saved_step = tr->st.step;
    const int64_t every = tr->rc->run.plot_every;
    if (tr->rank == 0 && every > 0 && tr->st.step % every == 0 && !tr->plot_off) plot_redraw(tr);
}

void trainer_stop_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGUSR1);
}

int trainer_stop_agreed(Trainer *tr, volatile sig_atomic_t *stop) {
    sigset_t set; /* a stop signal pending on this thread is handled here, between updates */
    trainer_stop_signals(&set);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int64_t stopping = (stop && *stop) || access(tr->stoppath, F_OK) == 0;
    watchdog_phase(1, "stop agreement step %lld", (long long)tr->st.step);
    if (tr->dp) comm_allreduce_max_i64(&stopping, 1); /* a signal or stop file seen by any rank stops all */
    return stopping != 0;
}

void trainer_stopped(Trainer *tr) {
    if (tr->rank != 0) return;
    if (access(tr->stoppath, F_OK) == 0) {
        if (remove(tr->stoppath) < 0) koe_warn("cannot remove %s: %s", tr->stoppath, strerror(errno));
        koe_log("%s asked for a stop; removed it so that the next run continues", tr->stoppath);
    }
    koe_log("stopped by a signal or stop file at step %lld after a clean checkpoint; run the same command to resume",
            (long long)tr->st.step);
}

void trainer_done(Trainer *tr) {
    if (tr->rank == 0)
        koe_log("done: %lld steps, %lld skipped; checkpoint %s/latest; monitoring (log lines, TensorBoard, health "
                "checks, BEST-RQ code counts, HuBERT acc_u) took %.3f s, %.2f%% of the %.1f s of updates",
                (long long)tr->st.step, (long long)tr->st.skipped, tr->ckdir, tr->monitor_s,
                tr->update_s > 0 ? 100.0 * tr->monitor_s / tr->update_s : 0.0, tr->update_s);
}

int64_t trainer_steps_done(const Trainer *tr) { return tr->st.step; }
int64_t trainer_max_updates(const Trainer *tr) { return tr->rc->optim.max_updates; }
Model *trainer_model(Trainer *tr) { return tr->m; }

int trainer_due_valid(const Trainer *tr) { return due_valid_at(tr, tr->st.step); }

int trainer_due_log(const Trainer *tr) { return due_log_at(tr, tr->st.step); }

int trainer_due_save(const Trainer *tr) {
    return tr->st.step % tr->rc->run.save_every == 0 || tr->st.step == tr->rc->optim.max_updates;
}

/* train.c — see train.h. The loop reads like fairseq's train_step: micro-batches summed, one
 * normalisation by the update's scored-frame count, clip, AdamW, schedule.
 * Must not: keep any randomness outside core/rng.h streams keyed by (seed, step, utterance), or write
 * a checkpoint anywhere but through distributed/ckpt.h (data/checkpoint.h's collective mode, which
 * never leaves a partial file under a final name). */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/model.h"
#include "../core/objective.h"
#include "../core/optim.h"
#include "../data/checkpoint.h"
#include "../data/corpus.h"
#include "../data/labels.h"
#include "../data/loader.h"
#include "../distributed/ckpt.h"
#include "../distributed/comm.h"
#include "../distributed/dp.h"
#include "../distributed/watchdog.h"

/* Validation masks are keyed by this fixed step, so every validation sees the same masks. */
#define TRAIN_VALID_STEP 0x7A11D000ULL
/* Gradient buckets reduced across ranks while backward runs (distributed/dp.h). */
#define TRAIN_BUCKET_BYTES (25 << 20)

/* One corpus and what reads it: the training data or the validation data. */
typedef struct {
    Corpus corpus;
    int has_corpus;
    LabelSet labels;
    int has_labels;
} DataSide;

typedef struct {
    const Recipe *rc;
    Model *m;
    Objective obj;
    int stride;          /* samples per encoder frame (waveform: product of conv strides) */
    int32_t *lab;        /* (max_B * max_T) labels per encoder frame */
    int32_t *lab_utt;    /* (lab_cap) one utterance's label frames */
    int64_t lab_cap;
} Trainer;

typedef struct { /* sums over a logging interval; all doubles: saved in checkpoints as TrainState.log_sums */
    double loss, head, correct, gnorm, samples;
    double code_ppl, prob_ppl, temp; /* wav2vec 2.0, summed over updates */
    double frames, updates;
    double comm; /* seconds waiting on the gradient reduction after backward (several ranks) */
} Interval;
_Static_assert(sizeof(Interval) <= sizeof(((TrainState *)0)->log_sums), "Interval fits TrainState.log_sums");

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

static int open_side(DataSide *d, const Recipe *rc, const char *dir, const char *what, KoeError *err) {
    memset(d, 0, sizeof *d);
    if (corpus_open(&d->corpus, dir, err) < 0) {
        char msg[KOE_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return koe_error_set(err, "%s (%s = %s)", msg, what, dir);
    }
    d->has_corpus = 1;
    if (rc->objective.name != OBJECTIVE_HUBERT) return 0;
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

/* Largest batch (utterances) and longest input the loader can hand out for this corpus. */
static void batch_bounds(const Recipe *rc, const Corpus *c, int64_t *max_B, int64_t *max_len) {
    int64_t shortest = INT64_MAX, longest = 0, eligible = 0;
    for (int64_t i = 0; i < c->n_utts; i++) {
        if (c->utt_length[i] < rc->data.min_sample_size) continue;
        int64_t L = c->utt_length[i] < rc->data.max_sample_size ? c->utt_length[i] : rc->data.max_sample_size;
        if (L < shortest) shortest = L;
        if (L > longest) longest = L;
        eligible++;
    }
    int64_t b = eligible ? rc->data.max_tokens / shortest : 0;
    if (b < 1) b = 1;
    if (b > eligible) b = eligible;
    if (b > *max_B) *max_B = b;
    if (longest > *max_len) *max_len = longest;
}

static void loader_cfg(const Recipe *rc, LoaderConfig *lc, int valid) {
    loader_config_default(lc);
    lc->plan.seed = rc->run.seed;
    lc->plan.max_tokens = rc->data.max_tokens;
    lc->plan.max_sample_size = rc->data.max_sample_size;
    lc->plan.min_sample_size = rc->data.min_sample_size;
    lc->plan.lang_alpha = valid ? 1.0 : rc->data.lang_alpha; /* validation: every utterance once */
    lc->plan.crop_to_shortest = rc->model.frontend == FRONTEND_WAVEFORM;
    lc->plan.bucket_batches = rc->data.bucket_batches;
    lc->plan.rank = comm_rank();
    lc->plan.world = comm_size();
    lc->plan.log = !valid;
    lc->features = (FeatureKind)rc->data.features;
    lc->threads = rc->data.threads;
}

/* HuBERT targets of a batch, per encoder frame, as fairseq's hubert dataset + model do: the labels are
 * cropped with the audio (first label frame round(start * rate / 16000), at most round(len * rate /
 * 16000) frames) and encoder frame t takes label floor(t * rate * stride / 16000); frames past the
 * labels get -1 (not scored). */
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
        const int64_t first = llround((double)b->start[i] * rate / 16000.0);
        int64_t end = first + llround((double)b->length[i] * rate / 16000.0);
        if (end > n) end = n;
        const int64_t frames = model_frames(&tr->m->cfg, b->length[i]);
        int32_t *out = tr->lab + i * T;
        for (int64_t t = 0; t < T; t++) {
            /* exact integer form of fairseq's long(t * label_rate * stride / sample_rate) */
            int64_t j = first + (int64_t)floor((double)t * rate * tr->stride / 16000.0);
            out[t] = t < frames && j < end ? tr->lab_utt[j] : -1;
        }
    }
    return 0;
}

/* One micro-batch through the objective; adds to *st (sums). dloss = 0: forward only (validation). */
static int micro_batch(Trainer *tr, DataSide *side, const LoaderBatch *b, ModelRun run, int backward,
                       ObjectiveStats *sum, KoeError *err) {
    if (b->n == 0) { /* this rank's slice of the global batch is empty */
        ObjectiveStats st;
        if (tr->obj.reduce) objective_forward_empty(&tr->obj, tr->m, &st);
        return 0;
    }
    const Recipe *rc = tr->rc;
    ObjectiveBatch ob = {0};
    ob.B = (int)b->n;
    ob.utt = b->utt;
    ob.run = run;
    ob.run.utt = b->utt; /* dropout masks keyed by utterance (distributed/README.md, Determinism) */
    if (rc->model.frontend == FRONTEND_WAVEFORM) {
        ob.inp = b->audio;
        ob.in_len = b->length;
        ob.S = b->T;
    } else {
        ob.inp = b->feats;
        ob.in_len = b->frames;
        ob.S = b->F;
    }
    if (rc->objective.name == OBJECTIVE_HUBERT) {
        const int64_t T = model_frames(&rc->model, ob.S);
        if (batch_labels(tr, &side->labels, b, T, err) < 0) return -1;
        ob.labels = tr->lab;
    }
    ObjectiveStats st;
    objective_forward(&tr->obj, tr->m, &ob, &st);
    if (backward) objective_backward(&tr->obj, tr->m, 1.0f);
    sum->loss_sum += st.loss_sum;
    sum->head_sum += st.head_sum;
    sum->frames += st.frames;
    sum->correct += st.correct;
    /* wav2vec 2.0's perplexities and temperature: the micro-batches' mean (divided by the caller) */
    sum->code_ppl += st.code_ppl;
    sum->prob_ppl += st.prob_ppl;
    sum->temp += st.temp;
    return 0;
}

/* Loss and accuracy over the whole validation corpus (epoch 0 of its own plan, every utterance once),
 * without dropout, with masks keyed by TRAIN_VALID_STEP. */
static int validate(Trainer *tr, DataSide *v, double *loss, double *acc, KoeError *err) {
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
    ModelRun run = {.seed = tr->rc->run.seed, .step = TRAIN_VALID_STEP};
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i++) {
        const LoaderBatch *b = loader_next(l, err);
        rc = b ? micro_batch(tr, v, b, run, 0, &sum, err) : -1;
    }
    loader_close(l);
    double tot[3] = {sum.loss_sum, (double)sum.frames, sum.correct}; /* over ranks */
    if (comm_size() > 1) comm_allreduce_sum_f64(tot, 3);
    sum.loss_sum = tot[0];
    sum.frames = (int64_t)tot[1];
    sum.correct = tot[2];
    *loss = sum.frames ? sum.loss_sum / (double)sum.frames : NAN;
    *acc = sum.frames ? sum.correct / (double)sum.frames : NAN;
    return rc;
}

/* The collective checkpoint (distributed/ckpt.h): every rank writes its slices of one file. */
static void save(Trainer *tr, const AdamW *opt, const TrainState *st, const char *ckdir) {
    ckpt_save(ckdir, &tr->m->table, tr->m->params, opt->m, opt->v, (int64_t)opt->start, (int64_t)opt->end,
              tr->rc->text, st, tr->rc->run.keep_last);
}

void train_stop_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGUSR1);
}

/* A stop signal pending on this thread is handled here, between updates (see train_stop_signals). */
static void stop_signals_deliver(void) {
    sigset_t set;
    train_stop_signals(&set);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* A stop file in the run directory asks for the same clean stop as a signal (exit code 3). */
static int stop_file_present(const char *path) { return access(path, F_OK) == 0; }

/* Keep the lines of RUN/log.jsonl up to `step` (a resumed run rewrites what followed its checkpoint). */
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
        fputs(line, o);
    }
    fclose(f);
    int rc = fclose(o) == 0 ? koe_publish_file(tmp, path, err) : koe_error_set(err, "%s: write failed", tmp);
    free(tmp);
    return rc;
}

static void fmt_eta(char *out, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
}

/* objective.h's reduce hook: the objective's statistics summed over ranks */
static void reduce_sum(void *ctx, double *v, int n) {
    (void)ctx;
    comm_allreduce_sum_f64(v, n);
}

/* Every rank must start from the same state: a clear error naming what differs. */
static void check_agree(uint64_t x, const char *what) {
    if (!comm_all_equal_u64(x))
        koe_fatal(KOE_EXIT_USAGE, "the ranks disagree on %s (this rank has %016llx): every rank must run the same "
                                  "recipe on the same run.dir (a shared file system) and resume the same checkpoint",
                  what, (unsigned long long)x);
}

int train_run(const Recipe *rc, volatile sig_atomic_t *stop) {
    KoeError err;
    const int rank = comm_rank(), world = comm_size();
    int threads = rc->run.threads;
    if (!threads) threads = getenv("OMP_NUM_THREADS") ? atoi(getenv("OMP_NUM_THREADS")) : 1;
    if (threads < 1) threads = 1;
    omp_set_num_threads(threads);
    if (!rc->data.corpus[0]) koe_fatal(KOE_EXIT_USAGE, "data.corpus is not set: pass data.corpus=DIR");
    if (rc->model.frontend == FRONTEND_FBANK && rc->data.features != FEAT_FBANK)
        koe_fatal(KOE_EXIT_USAGE, "model.frontend = fbank needs data.features = fbank");
    if (rc->objective.name == OBJECTIVE_BESTRQ && rc->model.frontend != FRONTEND_FBANK)
        koe_fatal(KOE_EXIT_USAGE, "objective.name = bestrq quantizes fbank frames: set model.frontend = fbank and "
                                  "data.features = fbank");
    if (rc->objective.name == OBJECTIVE_WAV2VEC2 && rc->model.frontend != FRONTEND_WAVEFORM)
        koe_fatal(KOE_EXIT_USAGE, "objective.name = wav2vec2 quantizes the conv features: set model.frontend = "
                                  "waveform");

    if (rank == 0) {
        printf("# resolved recipe (hash %016llx)\n%s", (unsigned long long)rc->hash, rc->text);
        fflush(stdout);
    }
    char ckdir[4200], logpath[4200], recpath[4200], stoppath[4200];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", rc->run.dir);
    snprintf(logpath, sizeof logpath, "%s/log.jsonl", rc->run.dir);
    snprintf(recpath, sizeof recpath, "%s/recipe.ini", rc->run.dir);
    snprintf(stoppath, sizeof stoppath, "%s/STOP", rc->run.dir);
    watchdog_start(rc->run.watchdog_s);
    watchdog_phase(0, "start-up (corpus, model, resume)");
    const char *hang = getenv("KOE_TEST_HANG_AT_STEP"); /* test hook for e2e train_watchdog */
    const int64_t hang_at_step = hang ? atoll(hang) : -1;

    DataSide train, valid;
    int has_valid = rc->data.valid_corpus[0] != 0;
    if (open_side(&train, rc, rc->data.corpus, "data.corpus", &err) < 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    if (has_valid && open_side(&valid, rc, rc->data.valid_corpus, "data.valid_corpus", &err) < 0)
        koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    if (has_valid && train.has_labels && valid.labels.info.n_classes != train.labels.info.n_classes)
        koe_fatal(KOE_EXIT_USAGE, "label set %s has %d classes on %s but %d on %s: label both with the same k-means",
                  rc->data.labels, train.labels.info.n_classes, rc->data.corpus, valid.labels.info.n_classes,
                  rc->data.valid_corpus);

    if (make_dir(ckdir, &err) < 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);

    /* the model, its head in the same flat buffer, the optimizer */
    ObjectiveConfig oc = {0};
    oc.name = (ObjectiveName)rc->objective.name;
    oc.feature_pen_weight = (float)rc->objective.feature_pen_weight;
    oc.diversity_weight = (float)rc->objective.diversity_weight;
    oc.nomask_weight = (float)rc->objective.pred_nomask_weight;
    oc.hubert = (HubertHeadConfig){rc->model.D, rc->objective.final_dim,
                                   train.has_labels ? train.labels.info.n_classes : 0, (float)rc->objective.logit_temp};
    const RecipeObjective *ro = &rc->objective;
    oc.wav2vec2 = (Wav2vec2HeadConfig){rc->model.conv_dim[rc->model.n_conv - 1],
                                       rc->model.D,
                                       ro->final_dim,
                                       ro->latent_groups,
                                       ro->latent_vars,
                                       ro->latent_dim ? ro->latent_dim : ro->final_dim,
                                       ro->num_negatives,
                                       (float)ro->logit_temp,
                                       {ro->temp[0], ro->temp[1], ro->temp[2]},
                                       rc->model.dropout_features};
    if (ro->name == OBJECTIVE_WAV2VEC2 && oc.wav2vec2.vq_dim % ro->latent_groups)
        koe_fatal(KOE_EXIT_USAGE, "objective.latent_dim (or final_dim) = %d must be a multiple of "
                                  "objective.latent_groups = %d",
                  oc.wav2vec2.vq_dim, ro->latent_groups);
    oc.bestrq = (BestrqConfig){rc->model.fbank_dim, rc->model.fbank_stack, rc->model.D,
                               ro->codebooks,       ro->codebook_size,    ro->codebook_dim,
                               rc->model.mask_prob, rc->model.mask_length, (float)ro->mask_noise_std};
    int64_t max_B = 0, max_len = 0;
    batch_bounds(rc, &train.corpus, &max_B, &max_len);
    if (has_valid) batch_bounds(rc, &valid.corpus, &max_B, &max_len);
    if (max_len == 0)
        koe_fatal(KOE_EXIT_USAGE, "%s: no utterance is at least data.min_sample_size = %lld samples long",
                  rc->data.corpus, (long long)rc->data.min_sample_size);
    const int64_t max_S = rc->model.frontend == FRONTEND_WAVEFORM ? max_len : features_num_frames(max_len);
    ParamTable table;
    params_table_init(&table);
    model_table_build(&rc->model, &table);
    objective_add_params(&table, &oc);
    Trainer tr = {0};
    tr.rc = rc;
    /* The arena follows the loader's budget (B * cropped length <= data.max_tokens samples), not
     * max_B * max_S, which for the Base recipes is ~8x any real batch. In fbank frames a batch of
     * n <= max_B utterances holds at most max_tokens / 160 + n frames. */
    const int64_t budget = rc->model.frontend == FRONTEND_WAVEFORM ? rc->data.max_tokens
                                                                   : rc->data.max_tokens / 160 + max_B;
    tr.m = model_create_budget(&rc->model, table, (int)max_B, max_S, budget > max_S ? budget : max_S);
    Model *m = tr.m;
    model_init_params(m, rc->run.seed);
    objective_create(&tr.obj, &oc, m);
    tr.stride = rc->model.frontend == FRONTEND_FBANK ? rc->model.fbank_stack * 160 : 1;
    for (int i = 0; rc->model.frontend == FRONTEND_WAVEFORM && i < rc->model.n_conv; i++)
        tr.stride *= rc->model.conv_stride[i];
    tr.lab = koe_malloc((size_t)(max_B * model_frames(&rc->model, max_S)) * sizeof *tr.lab);
    const size_t P = (size_t)m->table.total;
    uint8_t *decay = koe_malloc(P);
    memset(decay, 1, P);
    AdamWConfig ac;
    recipe_adamw_config(rc, &ac);
    ScheduleConfig sc;
    recipe_schedule_config(rc, &sc);
    AdamW opt;
    /* several ranks: gradients reduced by buckets during backward; ZeRO-1: this rank's AdamW slice */
    DataParallel *dp = world > 1 ? dp_create(&m->table, m->grads, TRAIN_BUCKET_BYTES, rc->run.zero) : NULL;
    int64_t s0 = 0, s1 = (int64_t)P;
    if (dp) {
        dp_slice(dp, &s0, &s1);
        m->on_grads_ready = dp_grads_ready;
        m->grads_ctx = dp;
        tr.obj.reduce = reduce_sum;
    }
    const int sliced = s0 != 0 || s1 != (int64_t)P;
    adamw_init(&opt, &ac, (size_t)s0, (size_t)s1, decay);

    /* resume */
    TrainState st = {0};
    st.seed = rc->run.seed;
    char *ck_text = NULL, ck_path[4400];
    /* every rank reads the parameters and the moments of its own slice (any world size) */
    const int resumed = ckpt_load(ckdir, &m->table, m->params, opt.m, opt.v, s0, s1, &st, &ck_text, ck_path,
                                  sizeof ck_path);
    if (world > 1) {
        check_agree(rc->hash, "the recipe hash");
        check_agree((uint64_t)st.step, "the step to start from");
        check_agree(checkpoint_sum(m->params, 0, (int64_t)P), "the parameter checksum");
    }
    if (resumed) {
        if (strcmp(ck_text, rc->text))
            koe_warn("the recipe differs from the one %s was trained with; continuing with the new one (the run "
                     "will not repeat an uninterrupted one)", ck_path);
        if (st.seed != rc->run.seed)
            koe_fatal(KOE_EXIT_USAGE, "%s was trained with run.seed = %llu, the recipe says %llu: resume with the "
                                      "same seed or use another run.dir",
                      ck_path, (unsigned long long)st.seed, (unsigned long long)rc->run.seed);
        opt.t = st.adam_t;
        if (rank == 0)
            koe_log("resumed from %s at step %lld (%lld global batches consumed)", ck_path, (long long)st.step,
                (long long)st.consumed);
        if (rank == 0 && log_truncate(logpath, st.step, &err) < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    }
    free(ck_text);
    FILE *logf = NULL; /* rank 0 writes the run's files */
    if (rank == 0) {
        FILE *rf = fopen(recpath, "w");
        if (!rf || fputs(rc->text, rf) < 0 || fclose(rf) != 0) koe_fatal(KOE_EXIT_USAGE, "%s: cannot write", recpath);
        logf = fopen(logpath, "a");
        if (!logf) koe_fatal(KOE_EXIT_USAGE, "%s: cannot open for appending: %s", logpath, strerror(errno));
    }

    LoaderConfig lc;
    loader_cfg(rc, &lc, 0);
    Loader *loader = loader_open(&train.corpus, &lc, st.consumed, &err);
    if (!loader) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    if (rank == 0)
        koe_log("training %s: %.2fM parameters, %lld utterances (%.2f h), up to %lld utterances x %lld per batch, "
                "steps %lld -> %lld",
                rc->data.corpus, (double)P / 1e6, (long long)train.corpus.n_utts, train.corpus.hours,
                (long long)max_B, (long long)max_S, (long long)st.step, (long long)rc->optim.max_updates);

    const int tty = rank == 0 && isatty(fileno(stderr));
    Interval iv = {0};
    memcpy(&iv, st.log_sums, sizeof iv); /* a resumed run continues the interval it stopped in */
    const double t_start = koe_now();
    const int64_t step0 = st.step;
    double t_iv = koe_now();
    int exit_code = KOE_EXIT_OK;
    while (st.step < rc->optim.max_updates) {
        model_zero_grad(m);
        ObjectiveStats upd = {0};
        double samples = 0;
        ModelRun run = {.train = 1, .seed = rc->run.seed, .step = (uint64_t)st.step};
        watchdog_phase(0, "forward/backward step %lld", (long long)st.step);
        for (int u = 0; u < rc->optim.update_freq; u++) {
            const LoaderBatch *b = loader_next(loader, &err);
            if (hang_at_step == st.step && rank == 1) /* test hook KOE_TEST_HANG_AT_STEP: rank 1 hangs here */
                for (;;) sleep(1);
            if (dp && u == rc->optim.update_freq - 1) dp_arm(dp); /* this backward ends the update */
            if (!b || micro_batch(&tr, &train, b, run, 1, &upd, &err) < 0)
                koe_fatal(KOE_EXIT_USAGE, "step %lld: %s", (long long)st.step, err.msg);
            samples += (double)b->global_samples;
            st.epoch = b->epoch;
        }
        st.consumed = loader_consumed(loader);
        watchdog_phase(1, "gradient reduction and update step %lld", (long long)st.step);
        /* several ranks: the gradient (ZeRO-1: this rank's slice of it) and the sums over all ranks */
        double comm_wait = 0;
        if (dp) {
            comm_wait = dp_finish(dp);
            double v[4] = {upd.loss_sum, upd.head_sum, (double)upd.frames, upd.correct};
            comm_allreduce_sum_f64(v, 4);
            upd.loss_sum = v[0];
            upd.head_sum = v[1];
            upd.frames = (int64_t)v[2];
            upd.correct = v[3];
        }
        /* normalise by the update's scored frames over all ranks; clip on the global norm */
        const int64_t frames = upd.frames;
        const double loss = frames ? upd.loss_sum / (double)frames : NAN;
        if (frames) optim_scale_grads(m->grads, (size_t)s0, (size_t)s1, (float)(1.0 / (double)frames));
        double gsq = optim_grad_sqnorm(m->grads, (size_t)s0, (size_t)s1);
        if (sliced) comm_allreduce_sum_f64(&gsq, 1);
        const double gnorm = sqrt(gsq);
        int64_t nonfinite = !isfinite(loss) || !isfinite(gnorm);
        if (dp) comm_allreduce_max_i64(&nonfinite, 1); /* non-finite on any rank: every rank skips */
        if (frames == 0) {
            /* nothing was masked (BEST-RQ's sparse input masks can miss a short batch): no loss to
             * learn from; skipped, but not a failure counted toward optim.max_skips */
            st.skipped++;
            if (rank == 0) koe_warn("step %lld: no masked frames in the batch; update skipped", (long long)st.step);
        } else if (nonfinite) {
            st.skipped++;
            st.skips_in_row++;
            if (rank == 0) koe_warn("step %lld: loss %g, gradient norm %g (scored frames %lld): update skipped (%lld in a row; "
                     "optim.max_skips = %d)",
                     (long long)st.step, loss, gnorm, (long long)frames, (long long)st.skips_in_row, rc->optim.max_skips);
            if (st.skips_in_row >= rc->optim.max_skips) {
                if (rank == 0) koe_log("stopping: %lld updates in a row had a non-finite loss or gradient; the last good "
                        "checkpoint (%s/latest) is intact. Lower optim.lr or check the data.",
                        (long long)st.skips_in_row, ckdir);
                exit_code = KOE_EXIT_INTERNAL;
                break;
            }
        } else {
            st.skips_in_row = 0;
            const double coef = optim_clip_coef(gnorm, rc->optim.clip_norm);
            if (coef != 1.0) optim_scale_grads(m->grads, (size_t)s0, (size_t)s1, (float)coef);
            params_freeze_step(&m->table, m->grads, decay);
            adamw_step(&opt, m->params, m->grads, schedule_lr(&sc, st.step));
            if (sliced) dp_allgather_params(dp, m->params);
            iv.loss += upd.loss_sum;
            iv.head += upd.head_sum;
            iv.correct += upd.correct;
            iv.frames += (double)frames;
            iv.gnorm += gnorm;
            iv.code_ppl += upd.code_ppl / rc->optim.update_freq;
            iv.prob_ppl += upd.prob_ppl / rc->optim.update_freq;
            iv.temp += upd.temp / rc->optim.update_freq;
            iv.updates++;
        }
        iv.comm += comm_wait;
        iv.samples += samples;
        st.step++;
        st.sched_step = st.step;
        if (rc->objective.name == OBJECTIVE_WAV2VEC2) st.gumbel_temp = wav2vec2_temperature(&oc.wav2vec2, st.step);
        st.adam_t = opt.t;

        const int do_valid = has_valid && rc->run.valid_every > 0 && st.step % rc->run.valid_every == 0;
        const int do_log = st.step % rc->run.log_every == 0 || do_valid || st.step == rc->optim.max_updates;
        double vloss = NAN, vacc = NAN;
        if (do_valid) watchdog_phase(0, "validation step %lld", (long long)st.step);
        if (do_valid && validate(&tr, &valid, &vloss, &vacc, &err) < 0)
            koe_fatal(KOE_EXIT_USAGE, "validation at step %lld: %s", (long long)st.step, err.msg);
        const double now = koe_now();
        if (do_log && rank == 0) {
            const double dt = now - t_iv;
            const double l = iv.frames > 0 ? iv.loss / iv.frames : NAN;
            const double acc = iv.frames > 0 ? iv.correct / iv.frames : NAN;
            const double gn = iv.updates > 0 ? iv.gnorm / iv.updates : NAN;
            const double lr = schedule_lr(&sc, st.step - 1);
            const double aps = dt > 0 ? iv.samples / 16000.0 / dt : 0;
            fprintf(logf, "{\"step\": %lld, \"loss\": %.9g, \"acc\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
                          "\"audio_s_per_s\": %.4g, \"skipped\": %lld, \"frames\": %lld",
                    (long long)st.step, l, acc, lr, gn, aps, (long long)st.skipped, (long long)iv.frames);

            if (rc->objective.name == OBJECTIVE_WAV2VEC2 && iv.updates > 0)
                fprintf(logf, ", \"code_ppl\": %.9g, \"prob_ppl\": %.9g, \"temp\": %.9g", iv.code_ppl / iv.updates,
                        iv.prob_ppl / iv.updates, iv.temp / iv.updates);
            if (dp) fprintf(logf, ", \"comm_time_s\": %.4g", iv.updates > 0 ? iv.comm / iv.updates : 0.0);
            if (do_valid) fprintf(logf, ", \"valid_loss\": %.9g, \"valid_acc\": %.9g", vloss, vacc);
            fprintf(logf, "}\n");
            fflush(logf);
            if (!tty || do_valid) {
                char eta[32];
                fmt_eta(eta, sizeof eta, (now - t_start) / (double)(st.step - step0) *
                                             (double)(rc->optim.max_updates - st.step));
                if (tty) fputc('\n', stderr);
                koe_log("step %lld/%lld loss %.4f acc %.3f lr %.3g gnorm %.3g %.2f audio s/s skipped %lld eta %s",
                        (long long)st.step, (long long)rc->optim.max_updates, l, acc, lr, gn, aps,
                        (long long)st.skipped, eta);
                if (do_valid) koe_log("step %lld valid_loss %.4f valid_acc %.3f", (long long)st.step, vloss, vacc);
            }
        }
        if (do_log) {
            memset(&iv, 0, sizeof iv);
            t_iv = now;
        }
        if (tty) {
            char eta[32];
            fmt_eta(eta, sizeof eta,
                    (now - t_start) / (double)(st.step - step0) * (double)(rc->optim.max_updates - st.step));
            fprintf(stderr, "\rkoe: step %lld/%lld  loss %.4f  acc %.3f  gnorm %.3g  eta %s   ", (long long)st.step,
                    (long long)rc->optim.max_updates, loss, frames ? upd.correct / (double)frames : 0.0, gnorm, eta);
            fflush(stderr);
        }
        stop_signals_deliver();
        int64_t stopping = (stop && *stop) || stop_file_present(stoppath);
        watchdog_phase(1, "stop agreement step %lld", (long long)st.step);
        if (dp) comm_allreduce_max_i64(&stopping, 1); /* a signal or stop file seen by any rank stops all of them */
        if (st.step % rc->run.save_every == 0 || st.step == rc->optim.max_updates || stopping) {
            if (tty) fputc('\n', stderr);
            memcpy(st.log_sums, &iv, sizeof iv);
            save(&tr, &opt, &st, ckdir);
        }
        if (stopping) {
            if (rank == 0 && stop_file_present(stoppath)) {
                if (remove(stoppath) < 0) koe_warn("cannot remove %s: %s", stoppath, strerror(errno));
                koe_log("%s asked for a stop; removed it so that the next run continues", stoppath);
            }
            if (rank == 0) koe_log("stopped by a signal or stop file at step %lld after a clean checkpoint; run the same command to resume",
                    (long long)st.step);
            exit_code = KOE_EXIT_PREEMPTED;
            break;
        }
    }
    if (tty) fputc('\n', stderr);
    watchdog_stop();
    if (exit_code == KOE_EXIT_OK && rank == 0) koe_log("done: %lld steps, %lld skipped; checkpoint %s/latest", (long long)st.step,
                                          (long long)st.skipped, ckdir);
    if (logf) fclose(logf);
    dp_free(dp);
    loader_close(loader);
    free(tr.lab);
    free(tr.lab_utt);
    free(decay);
    adamw_free(&opt);
    objective_free(&tr.obj);
    model_free(m);
    if (has_valid) close_side(&valid);
    close_side(&train);
    return exit_code;
}

/* cmd_bench.c — `koe bench RECIPE.ini`: time the training steps `koe train` runs (recipes/trainer.h's
 * trainer_step: the recipe's objective, masks, loss normalisation, clipping, AdamW at the schedule's
 * lr, the gradient reduction under mpirun) on a synthetic batch — the batch of
 * ../shared/anchors/torch_hubert_step.py, so the two compare side by side — or, when the overrides
 * set data.corpus, on the recipe's real batches. Prints each step's loss, one line ending in
 * audio_s_per_s=X, the achieved GFLOP/s against the peak of our sgemm (oneDNN, core/gemm.h), of
 * oneDNN's bf16 GEMM (where the CPU has bf16 dot products) and of OpenBLAS's sgemm, all measured in the
 * same process after the steps; paired_fraction, each timed step's GFLOP/s over the peak of its
 * precision measured right after it (step_peak_gflops: their median), the median over the steps: on a
 * host whose speed drifts by a third within a minute (the Zen 5 VM of the twelfth session: one process's
 * steps at 161-220 GFLOP/s, the peak after each at 215-348), a peak taken once, seconds away from the
 * steps, moves the plain fraction more than anything koe does (0.44-0.80 for one binary); the pairs
 * move together. And where the time goes: per section its share of the step and its GFLOP/s as a
 * fraction of step_peak_gflops. The sections are the model's (core/model.h's
 * profile, forward and backward); the last row, head+optimizer, is the rest of each step's wall time,
 * measured in the same step as its sections (the step's time minus the sections' time in it, so never
 * below zero): the objective's head and loss, masks, clearing the gradients, their norm, AdamW, and
 * under mpirun the wait for the gradient reduction. All rows are means over the timed steps, shares of
 * the mean step. --precision runs the steps as run.precision says. peak_rss_mb leaves out the peak
 * GEMM's operands (PeakGemm).
 * A benchmark, not a test: it checks nothing but that the loss is finite. */
#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../core/common.h"
#include "../core/gemm.h"
#include "../core/model.h"
#include "../core/rng.h"
#include "../data/labels.h"
#include "../distributed/comm.h"
#include "commands.h"
#include "recipe.h"
#include "trainer.h"

void openblas_set_num_threads(int n); /* OpenBLAS's own; not in cblas.h */

typedef struct {
    int batch, steps, threads, classes, no_profile, interleave;
    double seconds;
    const char *precision;
} BenchOptions;

#define O(field) offsetof(BenchOptions, field)
static const CliFlag bench_flags[] = {
    CLI_N("--batch", CLI_INT, O(batch), "2", 1, 4096, 0, "B", "utterances per step"),
    CLI_N("--seconds", CLI_DOUBLE, O(seconds), "4", 0, 3600, CLI_ABOVE_LO, "S", "seconds of audio per utterance"),
    CLI_N("--steps", CLI_INT, O(steps), "4", 1, 1000000, 0, "N", "timed steps after the warm-up"),
    CLI_THREADS(O(threads)),
    CLI_N("--classes", CLI_INT, O(classes), "100", 2, LABELS_MAX_CLASSES, 0, "K", "label classes of the HuBERT head"),
    CLI_B("--no-profile", O(no_profile), "skip the per-section table"),
    CLI_S("--precision", O(precision), NULL, 0, "P",
          "fp32, bf16 or auto: run.precision for these steps (default: the recipe's)"),
    CLI_B("--interleave", O(interleave),
          "alternate fp32 and bf16 steps in this one process (each step's loss and\n"
          "time), then print both medians and their ratio (a busy machine's load then\n"
          "falls on both alike); needs a CPU with bf16 dot products"),
    CLI_END,
};

static int bench_command(const void *opts, int n_args, char **args);

const CliCommand cmd_bench = {
    .name = "bench",
    .summary = "time training steps of a recipe's model (prints audio_s_per_s=X)",
    .args = "RECIPE.ini [section.key=value ...]",
    .min_args = 1,
    .max_args = -1,
    .about = "Times the training steps koe train runs (the recipe's objective: forward, loss, backward,\n"
             "clipping, AdamW) on a synthetic batch of N(0, 1) audio with uniform HuBERT targets, like\n"
             "../shared/anchors/torch_hubert_step.py, or on the recipe's corpus when data.corpus=DIR is given\n"
             "(--batch and --seconds then do not apply; koe train's first updates compute the same losses).\n"
             "Prints each step's loss, then step_median_s, peak_rss_mb, audio_s_per_s, the GFLOP/s reached\n"
             "against the peak of koe's sgemm (oneDNN), of oneDNN's bf16 GEMM (bf16_gflops, bf16_fraction; on a CPU\n"
             "with bf16 dot products) and of OpenBLAS in the same process; paired_fraction, the median over the\n"
             "steps of each step's GFLOP/s over the peak of its precision measured right after it\n"
             "(step_peak_gflops, their median), which a machine's changing speed disturbs least; and a per-section\n"
             "profile (each section's share of the mean step and its fraction of step_peak_gflops; the last\n"
             "row, head+optimizer, is the rest of each step: head, loss, masks, gradient norm, AdamW). The first\n"
             "step is a warm-up. Writes nothing on disk.\n",
    .flags = bench_flags,
    .opts_size = sizeof(BenchOptions),
    .run = bench_command,
};

/* Multiply-add FLOPs (x2) of one forward through the model and head, and of the matching backward,
 * per profile section (model.h's ModelProfSection; index PROF_N: the head). Counted as transformer
 * layers (charged to the conformer section when the encoder is one) and a HuBERT head (classes = 0:
 * none): for a conformer or another head the figures are lower bounds. */
typedef struct {
    double fwd[PROF_N + 1], bwd[PROF_N + 1];
} StepFlops;

static StepFlops step_flops(const Model *m, int classes, int64_t masked) {
    const ModelConfig *c = &m->cfg;
    const double B = m->B, T = (double)m->T, N = B * T, D = c->D, F = c->F;
    StepFlops s = {{0}, {0}};
    if (c->frontend == FRONTEND_WAVEFORM) {
        int cin = 1;
        for (int i = 0; i < c->n_conv; i++) {
            const double x = 2.0 * B * (double)m->Tc[i] * c->conv_dim[i] * cin * c->conv_kernel[i];
            s.fwd[PROF_CONV] += x;
            s.bwd[PROF_CONV] += (i == 0 || c->feature_grad_mult == 0) ? (c->feature_grad_mult == 0 ? 0 : x) : 2 * x;
            cin = c->conv_dim[i];
        }
        s.fwd[PROF_FEATURES] = 2.0 * N * cin * D;
        s.bwd[PROF_FEATURES] = 2 * 2.0 * N * cin * D;
    } else {
        s.fwd[PROF_FEATURES] = 2.0 * N * c->fbank_dim * c->fbank_stack * D;
        s.bwd[PROF_FEATURES] = 2.0 * N * c->fbank_dim * c->fbank_stack * D;
    }
    const int conformer = c->encoder == ENCODER_CONFORMER;
    const double layer[][2] = {{PROF_POSCONV, 2.0 * N * D * (D / c->pos_conv_groups) * c->pos_conv_kernel},
                               {PROF_QKV, c->L * 2.0 * N * D * 3 * D},
                               {PROF_ATTENTION, c->L * 2 * 2.0 * B * T * T * D},
                               {PROF_OUTPROJ, c->L * 2.0 * N * D * D},
                               {PROF_FFN, c->L * 2 * 2.0 * N * D * F},
                               {PROF_N, 2.0 * (double)masked * D * 256 + 2.0 * (double)masked * 256 * classes}};
    for (size_t i = 0; i < sizeof layer / sizeof *layer; i++) {
        int k = (int)layer[i][0];
        if (conformer && k != PROF_POSCONV && k != PROF_N) k = PROF_CONFORMER;
        s.fwd[k] += layer[i][1];
        s.bwd[k] += 2 * layer[i][1];
    }
    return s;
}

enum { PEAK_SGEMM, PEAK_OPENBLAS, PEAK_BF16 };

/* The peak's square GEMM: its operands, allocated and written before the trainer opens, so they are
 * resident through every step and the peak RSS is given without them (their bytes, exactly: written
 * whole, never freed before the reading). */
typedef struct {
    int n;
    float *a, *b, *c;
    uint16_t *ah;
    double bytes;
} PeakGemm;

static void peak_open(PeakGemm *p) {
    const int n = p->n = 1536;
    const size_t nn = (size_t)n * n;
    p->a = koe_malloc(nn * sizeof *p->a), p->b = koe_malloc(nn * sizeof *p->b), p->c = koe_malloc(nn * sizeof *p->c);
    p->ah = koe_malloc(nn * sizeof *p->ah);
    KoeRng r = koe_rng(1, 0, 0, KOE_RNG_INIT);
    for (size_t i = 0; i < nn; i++) p->a[i] = p->b[i] = (float)koe_rng_uniform(&r), p->c[i] = 0;
    bf16_from_f32(p->ah, p->a, (int64_t)nn);
    p->bytes = (double)nn * (3 * sizeof(float) + sizeof(uint16_t));
}

static void peak_close(PeakGemm *p) {
    free(p->a);
    free(p->b);
    free(p->c);
    free(p->ah);
}

/* Best of 3 of the square GEMM with the current thread count (after one call that warms up threads
 * and kernels): the attainable peak of koe's sgemm (oneDNN fp32), of oneDNN's bf16 GEMM on operands
 * already in bf16 (the kernel alone: the model's sgemm adds the fp32 -> bf16 rounding of its
 * operands), or, for reference, of OpenBLAS. */
static double peak_gflops(const PeakGemm *p, int which) {
    const int n = p->n;
    double best = 1e30;
    for (int k = 0; k < 4; k++) {
        double t = koe_now();
        if (which == PEAK_OPENBLAS)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, p->a, n, p->b, n, 0.0f, p->c, n);
        else if (which == PEAK_BF16)
            bgemm('N', 'N', n, n, n, 1.0f, p->ah, n, p->ah, n, 0.0f, p->c, n);
        else
            sgemm_fp32('N', 'N', n, n, n, 1.0f, p->a, n, p->b, n, 0.0f, p->c, n);
        t = koe_now() - t;
        if (k && t < best) best = t;
    }
    return 2.0 * n * n * (double)n / best / 1e9;
}

/* --interleave: steps alternately in fp32 and bf16 (one warm-up of each first), each step's loss and
 * time, then the median step time of each precision and bf16's speed-up. Only on a CPU with bf16 dot
 * products (bench_command). */
static void bench_interleaved(Trainer *tr, int steps) {
    KoeError err;
    double *t[2] = {koe_malloc((size_t)(steps + 1) * sizeof(double)), koe_malloc((size_t)(steps + 1) * sizeof(double))};
    TrainerStep st;
    for (int s = 0; s <= steps; s++)
        for (int p = 0; p < 2; p++) {
            gemm_set_precision(p ? GEMM_BF16 : GEMM_FP32);
            if (trainer_step(tr, &st, &err) < 0) trainer_fatal(tr, KOE_EXIT_USAGE, "bench: step %d: %s", s, err.msg);
            if (!isfinite(st.loss)) trainer_fatal(tr, KOE_EXIT_INTERNAL, "bench: step %d: loss is %g", s, st.loss);
            t[p][s] = st.seconds;
            if (comm_rank() == 0)
                printf("step %d %s loss %.9g seconds %.3f\n", s, p ? "bf16" : "fp32", st.loss, st.seconds);
        }
    const double m32 = koe_median(t[0] + 1, steps), m16 = koe_median(t[1] + 1, steps); /* warm-ups left out */
    if (comm_rank() == 0)
        printf("koe interleaved fp32_step_median_s=%.3f bf16_step_median_s=%.3f bf16_speedup=%.2f\n", m32, m16,
               m32 / m16);
    free(t[0]);
    free(t[1]);
}

/* The per-section table: each of the model's sections, then the rest of the step (head+optimizer);
 * means over the timed steps (step_s: their summed wall time, model_s: the sections' part of it),
 * shares of the mean step. */
static void print_profile(const Model *m, const StepFlops *fl, int steps, double step_s, double model_s,
                         double sec_peak, const char *peak_name) {
    /* per section its GFLOP/s over the peak of its precision (sec_peak; the column says which:
     * sgemm_fraction or bf16_fraction); "-" for a section without matrix products (the head's rest is
     * its optimizer and elementwise passes) */
    printf("%-16s %9s %9s %7s %8s %14s\n", "section", "fwd ms", "bwd ms", "share", "GFLOP/s", peak_name);
    for (int k = 0; k <= PROF_N; k++) {
        const double sec = (k < PROF_N ? m->prof[0][k] + m->prof[1][k] : step_s - model_s) / steps;
        const double g = fl->fwd[k] + fl->bwd[k];
        if (k < PROF_N && sec == 0) continue;
        if (k < PROF_N)
            printf("%-16s %9.1f %9.1f %6.1f%%", model_prof_names[k], 1e3 * m->prof[0][k] / steps,
                   1e3 * m->prof[1][k] / steps, 100.0 * sec * steps / step_s);
        else
            printf("%-16s %19.1f %6.1f%%", "head+optimizer", 1e3 * sec, 100.0 * sec * steps / step_s);
        if (g > 0 && sec > 0) printf(" %8.1f %14.2f\n", g / sec / 1e9, g / sec / 1e9 / sec_peak);
        else printf(" %8s %14s\n", "-", "-");
    }
}

/* Seconds in the model's profiled sections so far. */
static double model_prof_s(const Model *m) {
    double t = 0;
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < PROF_N; k++) t += m->prof[d][k];
    return t;
}

static int bench_command(const void *opts, int n_args, char **args) {
    const BenchOptions *o = opts;
    const int batch = o->batch, steps = o->steps, classes = o->classes, profile = !o->no_profile;
    const double seconds = o->seconds;
    const char *recipe_path = args[0];
    if (o->interleave && !gemm_bf16_supported()) /* before the recipe's run.precision is checked, whose advice differs */
        koe_fatal(KOE_EXIT_USAGE,
                  "bench --interleave: this CPU has no bf16 dot products (oneDNN's effective ISA; ONEDNN_MAX_CPU_ISA, if "
                  "set, can cap it), and --interleave compares fp32 steps with bf16 ones; run without it");
    Recipe rc;
    KoeError err;
    /* --precision P is the override run.precision=P, after the command line's own */
    char prec[RECIPE_STR_MAX + 32], **ov = koe_malloc((size_t)n_args * sizeof *ov);
    int n_ov = n_args - 1;
    memcpy(ov, args + 1, (size_t)n_ov * sizeof *ov);
    if (o->precision || o->interleave) { /* --interleave opens in bf16 (its weights' bf16 copy), then alternates */
        snprintf(prec, sizeof prec, "run.precision=%s", o->interleave ? "bf16" : o->precision);
        ov[n_ov++] = prec;
    }
    if (recipe_load(&rc, recipe_path, n_ov, ov, &err) < 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    free(ov);
    const int threads = cli_threads(o->threads, rc.run.threads);
    openblas_set_num_threads(threads);

    rc.run.threads = threads;
    TrainerSynthetic sy = {.B = batch, .S = (int64_t)(seconds * KOE_SAMPLE_RATE), .classes = classes};
    const int real = rc.data.corpus[0] != 0; /* data.corpus=DIR: the recipe's own batches */
    PeakGemm pk;
    peak_open(&pk); /* before the trainer, so resident through the steps (PeakGemm) */
    Trainer *tr = trainer_open(&rc, &(TrainerOptions){.synthetic = real ? NULL : &sy, .any_precision = o->interleave}, &err);
    if (!tr) koe_fatal(KOE_EXIT_USAGE, "bench: %s", err.msg);
    if (o->interleave) {
        bench_interleaved(tr, steps);
        trainer_close(tr);
        peak_close(&pk);
        recipe_free(&rc);
        return KOE_EXIT_OK;
    }
    Model *m = trainer_model(tr);
    const int bf16 = gemm_precision() == GEMM_BF16;
    const int step_peak = bf16 ? PEAK_BF16 : PEAK_SGEMM; /* the peak of the precision the steps run in */
    const int hubert_classes = rc.objective.name == OBJ_HUBERT ? classes : 0;
    /* per timed step: its time, the peak measured right after it, and its GFLOP/s over that peak */
    double *times = koe_malloc((size_t)(steps + 1) * sizeof *times), audio_s = 0, step_s = 0;
    double *probe = koe_malloc((size_t)steps * sizeof *probe), *paired = koe_malloc((size_t)steps * sizeof *paired);
    TrainerStep st;
    for (int s = 0; s <= steps; s++) {
        if (s == 1) model_profile_reset(m);
        if (trainer_step(tr, &st, &err) < 0) trainer_fatal(tr, KOE_EXIT_USAGE, "bench: step %d: %s", s, err.msg);
        times[s] = st.seconds;
        if (s) audio_s += st.samples / KOE_SAMPLE_RATE / steps, step_s += st.seconds;
        if (comm_rank() == 0) printf("step %d loss %.9g frames %lld seconds %.3f\n", s, st.loss, (long long)st.frames,
                                     st.seconds);
        if (!isfinite(st.loss)) trainer_fatal(tr, KOE_EXIT_INTERNAL, "bench: step %d: loss is %g", s, st.loss);
        if (s) {
            const StepFlops f = step_flops(m, hubert_classes, st.frames);
            double g = 0;
            for (int k = 0; k <= PROF_N; k++) g += f.fwd[k] + f.bwd[k];
            probe[s - 1] = peak_gflops(&pk, step_peak);
            paired[s - 1] = g / st.seconds / 1e9 / probe[s - 1];
        }
    }
    qsort(times + 1, (size_t)steps, sizeof *times, koe_cmp_double);
    qsort(probe, (size_t)steps, sizeof *probe, koe_cmp_double);
    qsort(paired, (size_t)steps, sizeof *paired, koe_cmp_double);
    /* medians; of an even count the slower time, the higher peak and the lower fraction */
    const double med = times[1 + steps / 2], probe_med = probe[steps / 2], paired_med = paired[(steps - 1) / 2];
    const StepFlops fl = step_flops(m, hubert_classes, st.frames);
    double flops = 0;
    for (int k = 0; k <= PROF_N; k++) flops += fl.fwd[k] + fl.bwd[k];
    const double gflops = flops / med / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru); /* before the peaks below, and less the peak GEMM's operands */
    const double rss_mb = ((double)ru.ru_maxrss * 1024.0 - pk.bytes) / 1048576.0;
    const double peak = peak_gflops(&pk, PEAK_SGEMM), openblas_peak = peak_gflops(&pk, PEAK_OPENBLAS);
    const double bf16_peak = gemm_bf16_supported() ? peak_gflops(&pk, PEAK_BF16) : 0.0;
    if (comm_rank() == 0) {
        if (profile) /* the sections' means over the steps, against the median of the peaks after them */
            print_profile(m, &fl, steps, step_s, model_prof_s(m), probe_med, bf16 ? "bf16_fraction" : "sgemm_fraction");
        char bfs[96] = "";
        if (bf16_peak > 0)
            snprintf(bfs, sizeof bfs, " bf16_gflops=%.1f bf16_fraction=%.2f", bf16_peak, gflops / bf16_peak);
        printf("koe threads=%d model=%s precision=%s params=%.1fM batch=%dx%gs loss=%.3f step_median_s=%.3f "
               "gflops=%.1f sgemm_gflops=%.1f sgemm_fraction=%.2f%s openblas_gflops=%.1f step_peak_gflops=%.1f "
               "paired_fraction=%.2f peak_rss_mb=%.0f audio_s_per_s=%.3f\n",
               threads, recipe_path, bf16 ? "bf16" : "fp32", (double)m->table.total / 1e6, m->B, seconds, st.loss,
               med, gflops, peak, gflops / peak, bfs, openblas_peak, probe_med, paired_med, rss_mb, audio_s / med);
    }
    free(probe);
    free(paired);
    free(times);
    trainer_close(tr);
    peak_close(&pk);
    recipe_free(&rc);
    return KOE_EXIT_OK;
}

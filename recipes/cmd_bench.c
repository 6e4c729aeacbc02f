/* cmd_bench.c — `koe bench RECIPE.ini`: time full training steps of the recipe's model on synthetic
 * audio, as ../shared/anchors/torch_hubert_step.py does for PyTorch, so the two compare side by side:
 * forward, HuBERT masked-prediction loss over `--classes` labels (+ 10 x feature penalty), backward,
 * gradient clipping, AdamW. Prints one line ending in audio_s_per_s=X, the achieved GFLOP/s against
 * the peak of our sgemm (oneDNN, core/gemm.h) and of OpenBLAS's, both measured in the same process,
 * and where the time goes.
 * A benchmark, not a test: it checks nothing but that the loss is finite. */
#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../core/common.h"
#include "../core/gemm.h"
#include "../core/hubert.h"
#include "../core/mask.h"
#include "../core/model.h"
#include "../core/optim.h"
#include "../core/rng.h"
#include "../data/labels.h"
#include "../distributed/comm.h"
#include "commands.h"
#include "recipe.h"

void openblas_set_num_threads(int n); /* OpenBLAS's own; not in cblas.h */

typedef struct {
    int batch, steps, threads, classes, no_profile;
    double seconds;
} BenchOptions;

#define O(field) offsetof(BenchOptions, field)
static const CliFlag bench_flags[] = {
    CLI_N("--batch", CLI_INT, O(batch), "2", 1, 4096, 0, "B", "utterances per step"),
    CLI_N("--seconds", CLI_DOUBLE, O(seconds), "4", 0, 3600, CLI_ABOVE_LO, "S", "seconds of audio per utterance"),
    CLI_N("--steps", CLI_INT, O(steps), "4", 1, 1000000, 0, "N", "timed steps after the warm-up"),
    CLI_THREADS(O(threads)),
    CLI_N("--classes", CLI_INT, O(classes), "100", 2, LABELS_MAX_CLASSES, 0, "K", "label classes of the HuBERT head"),
    CLI_B("--no-profile", O(no_profile), "skip the per-section table"),
    CLI_END,
};

static int bench_command(const void *opts, int n_args, char **args);

const CliCommand cmd_bench = {
    .name = "bench",
    .summary = "time training steps of a recipe's model (prints audio_s_per_s=X)",
    .args = "RECIPE.ini [section.key=value ...]",
    .min_args = 1,
    .max_args = -1,
    .about = "Times full HuBERT-style training steps (forward, masked-prediction loss, backward, clipping,\n"
             "AdamW) of the recipe's model on synthetic audio, like ../shared/anchors/torch_hubert_step.py,\n"
             "and prints step_median_s, peak_rss_mb, audio_s_per_s, the GFLOP/s reached against the peak of\n"
             "koe's sgemm (oneDNN) and of OpenBLAS in the same process, and a per-section profile. The first\n"
             "step is a warm-up.\n",
    .flags = bench_flags,
    .opts_size = sizeof(BenchOptions),
    .run = bench_command,
};

/* Multiply-add FLOPs (x2) of one forward through the model and head, and of the matching backward. */
typedef struct {
    double fwd, bwd;
} StepFlops;

static StepFlops step_flops(const Model *m, int classes, int64_t masked) {
    const ModelConfig *c = &m->cfg;
    const double B = m->B, T = (double)m->T, N = B * T, D = c->D, F = c->F;
    double f = 0, b = 0;
    if (c->frontend == FRONTEND_WAVEFORM) {
        int cin = 1;
        for (int i = 0; i < c->n_conv; i++) {
            const double x = 2.0 * B * (double)m->Tc[i] * c->conv_dim[i] * cin * c->conv_kernel[i];
            f += x;
            b += (i == 0 || c->feature_grad_mult == 0) ? (c->feature_grad_mult == 0 ? 0 : x) : 2 * x;
            cin = c->conv_dim[i];
        }
        f += 2.0 * N * cin * D;
        b += 2 * 2.0 * N * cin * D;
    }
    const double pos = 2.0 * N * D * (D / c->pos_conv_groups) * c->pos_conv_kernel;
    const double layer = 2.0 * N * D * 3 * D + 2 * 2.0 * B * T * T * D + 2.0 * N * D * D + 2 * 2.0 * N * D * F;
    const double head = 2.0 * (double)masked * D * 256 + 2.0 * (double)masked * 256 * classes;
    f += pos + c->L * layer + head;
    b += 2 * (pos + c->L * layer + head);
    return (StepFlops){f, b};
}

/* Best of 3 of a square GEMM with the current thread count: the attainable peak of koe's sgemm
 * (the one the model uses) or, for reference, of OpenBLAS. */
static double sgemm_gflops(int openblas) {
    const int n = 1536;
    float *a = koe_malloc((size_t)n * n * sizeof *a), *b = koe_malloc((size_t)n * n * sizeof *b),
          *c = koe_malloc((size_t)n * n * sizeof *c);
    KoeRng r = koe_rng(1, 0, 0, KOE_RNG_INIT);
    for (int64_t i = 0; i < (int64_t)n * n; i++) a[i] = b[i] = (float)koe_rng_uniform(&r);
    double best = 1e30;
    for (int k = 0; k < 4; k++) {
        double t = koe_now();
        if (openblas)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        else
            sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        t = koe_now() - t;
        if (k && t < best) best = t; /* the first call warms up threads and kernels */
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int bench_command(const void *opts, int n_args, char **args) {
    const BenchOptions *o = opts;
    const int batch = o->batch, steps = o->steps, classes = o->classes, profile = !o->no_profile;
    const double seconds = o->seconds;
    const char *recipe_path = args[0];
    Recipe rc;
    KoeError err;
    if (recipe_load(&rc, recipe_path, n_args - 1, args + 1, &err) < 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    const int threads = cli_threads(o->threads, rc.run.threads);
    openblas_set_num_threads(threads);

    const ModelConfig *mc = &rc.model;
    if (mc->frontend != FRONTEND_WAVEFORM)
        koe_fatal(KOE_EXIT_USAGE, "bench: %s has an fbank frontend; koe bench times the waveform models the "
                                  "PyTorch anchor has", recipe_path);
    const int64_t S = (int64_t)(seconds * 16000);
    const int B = batch;
    HubertHeadConfig hc = {mc->D, rc.objective.final_dim, classes, (float)rc.objective.logit_temp};
    ParamTable table;
    params_table_init(&table);
    model_table_build(mc, &table);
    hubert_head_add_params(&table, &hc);
    Model *m = model_create_with_table(mc, table, B, S);
    model_init_params(m, rc.run.seed);
    HubertHeadParams hp, hg;
    hubert_head_bind(&m->table, m->params, &hp);
    hubert_head_bind(&m->table, m->grads, &hg);
    const int64_t T = model_frames(mc, S), N = (int64_t)B * T;
    float *head_mem = koe_malloc((size_t)hubert_head_act_floats(&hc, N) * sizeof(float));
    HubertHeadAct act;
    hubert_head_act_bind(&act, &hc, N, head_mem);

    /* synthetic batch: N(0, 1) samples as the anchor's torch.randn, uniform labels */
    float *wav = koe_malloc((size_t)(B * S) * sizeof *wav);
    int64_t *len = koe_malloc((size_t)B * sizeof *len), *utt = koe_malloc((size_t)B * sizeof *utt),
            *frames = koe_malloc((size_t)B * sizeof *frames);
    int32_t *labels = koe_malloc((size_t)N * sizeof *labels);
    uint8_t *mask = koe_malloc((size_t)N);
    KoeRng r = koe_rng(rc.run.seed, 0, 0, KOE_RNG_NOISE);
    for (int64_t i = 0; i < B * S; i++) wav[i] = (float)koe_rng_normal(&r);
    for (int64_t i = 0; i < N; i++) labels[i] = (int32_t)koe_rng_below(&r, (uint64_t)classes);
    for (int b = 0; b < B; b++) len[b] = S, utt[b] = b, frames[b] = T;
    float *dx = koe_malloc((size_t)(N * mc->D) * sizeof *dx);

    AdamWConfig ac;
    recipe_adamw_config(&rc, &ac);
    AdamW opt;
    adamw_init(&opt, &ac, 0, (size_t)m->table.total, NULL);
    const double pen_w = rc.objective.feature_pen_weight;
    double *times = koe_malloc((size_t)(steps + 1) * sizeof *times);
    int64_t masked = 0;
    double loss = 0;
    for (int s = 0; s <= steps; s++) {
        if (s == 1) model_profile_reset(m);
        double t0 = koe_now();
        masked = mask_spans_batch(mask, frames, utt, B, T, mc->mask_prob, mc->mask_length, mc->mask_min_spans,
                                  rc.run.seed, (uint64_t)s);
        model_zero_grad(m);
        ModelRun run = {.train = 1, .seed = rc.run.seed, .step = (uint64_t)s};
        model_forward(m, wav, len, B, S, mask, &run);
        double loss_sum = 0;
        int64_t n_frames = 0, n_correct = 0;
        hubert_head_forward(&act, &hp, m->a.out, mask, m->key_pad, labels, B, T, HUBERT_FRAMES_MASKED, &loss_sum,
                            &n_frames, &n_correct);
        loss = loss_sum / (double)(n_frames ? n_frames : 1) + pen_w * m->feature_pen;
        memset(dx, 0, (size_t)(N * mc->D) * sizeof *dx);
        hubert_head_backward(dx, &hg, &act, &hp, 1.0f / (float)(n_frames ? n_frames : 1));
        model_backward(m, dx, (float)pen_w, NULL);
        double norm = sqrt(optim_grad_sqnorm(m->grads, 0, (size_t)m->table.total));
        double coef = optim_clip_coef(norm, rc.optim.clip_norm);
        if (coef != 1.0) optim_scale_grads(m->grads, 0, (size_t)m->table.total, (float)coef);
        adamw_step(&opt, m->params, m->grads, rc.optim.lr);
        times[s] = koe_now() - t0;
        if (!isfinite(loss)) koe_fatal(KOE_EXIT_INTERNAL, "bench: step %d: loss is %g", s, loss);
    }
    qsort(times + 1, (size_t)steps, sizeof *times, cmp_double);
    const double med = times[1 + steps / 2];
    StepFlops fl = step_flops(m, classes, masked);
    const double gflops = (fl.fwd + fl.bwd) / med / 1e9;
    const double peak = sgemm_gflops(0), openblas_peak = sgemm_gflops(1);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (comm_rank() == 0) {
        if (profile) {
            double tot[2] = {0, 0};
            for (int d = 0; d < 2; d++)
                for (int k = 0; k < PROF_N; k++) tot[d] += m->prof[d][k];
            printf("%-16s %9s %9s %7s\n", "section", "fwd ms", "bwd ms", "share");
            for (int k = 0; k < PROF_N; k++) {
                if (m->prof[0][k] + m->prof[1][k] == 0) continue;
                printf("%-16s %9.1f %9.1f %6.1f%%\n", model_prof_names[k], 1e3 * m->prof[0][k] / steps,
                       1e3 * m->prof[1][k] / steps, 100.0 * (m->prof[0][k] + m->prof[1][k]) / steps / med);
            }
            const double rest = med - (tot[0] + tot[1]) / steps;
            printf("%-16s %19.1f %6.1f%%\n", "head+optimizer", 1e3 * rest, 100.0 * rest / med);
        }
        printf("koe threads=%d model=%s params=%.1fM batch=%dx%gs loss=%.3f step_median_s=%.3f "
               "gflops=%.1f sgemm_gflops=%.1f sgemm_fraction=%.2f openblas_gflops=%.1f peak_rss_mb=%.0f "
               "audio_s_per_s=%.3f\n",
               threads, recipe_path, (double)m->table.total / 1e6, B, seconds, loss, med, gflops, peak,
               gflops / peak, openblas_peak, (double)ru.ru_maxrss / 1024.0, B * seconds / med);
    }
    free(times);
    free(dx);
    free(mask);
    free(labels);
    free(frames);
    free(utt);
    free(len);
    free(wav);
    free(head_mem);
    adamw_free(&opt);
    model_free(m);
    recipe_free(&rc);
    return KOE_EXIT_OK;
}

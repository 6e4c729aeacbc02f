/* test_optim.c — AdamW, clipping and schedules (core/optim.c).
 * Without arguments: cmocka unit tests (AdamW against a double-precision transcription of the
 * formulas, slices, the decay mask, the bias-corrected first step, thread-independent squared norm,
 * clipping, schedule values at their corners).
 * With `--parity DIR`: reads the inputs that tests/reference/optim_ref.py wrote to DIR, runs koe's
 * optimizer on them and writes the results back for the script to compare with torch and fairseq's
 * formulas (tests/e2e/optim_parity.sh). */
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../core/common.h"
#include "../../core/gemm.h"
#include "../../core/optim.h"
#include "../../core/rng.h"

/* ---- unit tests --------------------------------------------------------------------------------- */

static void fill_normal(float *x, size_t n, double scale, uint64_t key) {
    KoeRng r = koe_rng(7, key, 0, KOE_RNG_INIT);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * koe_rng_normal(&r));
}

/* torch.optim.AdamW written out in double, one element at a time. */
static void adamw_reference(double *p, double *m, double *v, const float *g, const uint8_t *decay, size_t n,
                            const AdamWConfig *c, double lr, int64_t t) {
    for (size_t i = 0; i < n; i++) {
        if (!decay || decay[i]) p[i] *= 1.0 - lr * c->weight_decay;
        m[i] = c->beta1 * m[i] + (1.0 - c->beta1) * g[i];
        v[i] = c->beta2 * v[i] + (1.0 - c->beta2) * (double)g[i] * g[i];
        double mhat = m[i] / (1.0 - pow(c->beta1, (double)t));
        double denom = sqrt(v[i]) / sqrt(1.0 - pow(c->beta2, (double)t)) + c->eps;
        p[i] -= lr * mhat / denom;
    }
}

static void test_adamw_matches_formulas(void **state) {
    (void)state;
    enum { N = 3000, STEPS = 12 };
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6, .weight_decay = 0.1};
    float *p = koe_malloc(N * sizeof(float)), *g = koe_malloc(N * sizeof(float));
    double *rp = koe_malloc(N * sizeof(double)), *rm = koe_calloc(N, sizeof(double)), *rv = koe_calloc(N, sizeof(double));
    uint8_t decay[N];
    double *gmax = koe_calloc(N, sizeof(double)); /* scale of each moment: the largest |g| seen */
    fill_normal(p, N, 1.0, 1);
    for (size_t i = 0; i < N; i++) rp[i] = p[i], decay[i] = (i / 100) % 3 != 0;
    AdamW o;
    adamw_init(&o, &cfg, 0, N, decay);
    double moved = 0; /* each update moves a parameter by about lr: float rounding is relative to that */
    for (int s = 1; s <= STEPS; s++) {
        fill_normal(g, N, 1.0, 100 + s);
        /* a third of the gradients are tiny, where eps and the bias corrections decide the update */
        for (size_t i = 0; i < N; i += 3) g[i] *= 1e-7f;
        for (size_t i = 0; i < N; i++) gmax[i] = fmax(gmax[i], fabs(g[i]));
        double lr = 1e-2 * s / STEPS + 1e-3;
        moved += lr;
        adamw_reference(rp, rm, rv, g, decay, N, &cfg, lr, s);
        adamw_step(&o, p, g, lr, 1.0f);
        for (size_t i = 0; i < N; i++) assert_true(g[i] == 0.0f); /* cleared for the next accumulation */
    }
    assert_int_equal(o.t, STEPS);
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < N; i++) {
        double e = fabs(p[i] - rp[i]) / (fabs(rp[i]) + moved);
        if (e > worst) worst = e, wi = i;
        assert_true(fabs(o.m[i] - rm[i]) <= 1e-6 * gmax[i]);
        assert_true(fabs(o.v[i] - rv[i]) <= 1e-6 * gmax[i] * gmax[i]);
    }
    if (worst > 1e-6) {
        print_error("param %zu: koe %.9g reference %.9g (relative %.3g)\n", wi, p[wi], rp[wi], worst);
        fail();
    }
    adamw_free(&o);
    free(p), free(g), free(rp), free(rm), free(rv), free(gmax);
}

/* The first update moves each parameter by lr * g / (|g| + eps * ...) ~ lr * sign(g): the bias
 * corrections undo the (1 - beta) scaling of both moments. */
static void test_adamw_first_step(void **state) {
    (void)state;
    enum { N = 64 };
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6, .weight_decay = 0};
    float p[N] = {0}, g[N];
    for (int i = 0; i < N; i++) g[i] = (i % 2 ? 1.0f : -1.0f) * (float)(0.01 + i);
    AdamW o;
    adamw_init(&o, &cfg, 0, N, NULL);
    float g0[N];
    memcpy(g0, g, sizeof g);
    adamw_step(&o, p, g, 1e-3, 1.0f);
    for (int i = 0; i < N; i++) assert_true(fabs(p[i] + 1e-3 * (g0[i] > 0 ? 1 : -1)) < 1e-3 * 1e-3);
    adamw_free(&o);
}

/* Two optimizers on [0, k) and [k, n) (ZeRO-1 slices) give the bits of one on [0, n); nothing outside
 * a slice is touched. */
static void test_adamw_slices(void **state) {
    (void)state;
    enum { N = 1001, K = 377 };
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6, .weight_decay = 0.01};
    float a[N], b[N], g[N];
    fill_normal(a, N, 1.0, 2);
    memcpy(b, a, sizeof a);
    AdamW whole, lo, hi;
    adamw_init(&whole, &cfg, 0, N, NULL);
    adamw_init(&lo, &cfg, 0, K, NULL);
    adamw_init(&hi, &cfg, K, N, NULL);
    for (int s = 0; s < 5; s++) {
        fill_normal(g, N, 0.1, 50 + s);
        float g1[N], g2[N], before[N];
        memcpy(g1, g, sizeof g), memcpy(g2, g, sizeof g);
        adamw_step(&whole, a, g1, 1e-3, 1.0f);
        memcpy(before, b, sizeof b);
        adamw_step(&lo, b, g2, 1e-3, 1.0f);
        assert_memory_equal(b + K, before + K, (N - K) * sizeof(float));
        for (int i = 0; i < N; i++) assert_true(g2[i] == (i < K ? 0.0f : g[i])); /* only its slice cleared */
        adamw_step(&hi, b, g2, 1e-3, 1.0f);
        assert_memory_not_equal(b + K, before + K, (N - K) * sizeof(float));
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(whole.m + K, hi.m, (N - K) * sizeof(float));
    assert_memory_equal(whole.v, lo.v, K * sizeof(float));
    adamw_free(&whole), adamw_free(&lo), adamw_free(&hi);
}

/* With zero gradients Adam does nothing: decayed parameters shrink by (1 - lr wd), masked ones stay. */
static void test_decay_mask(void **state) {
    (void)state;
    enum { N = 10 };
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6, .weight_decay = 0.1};
    float p[N], g[N] = {0};
    uint8_t decay[N] = {1, 0, 1, 0, 0, 1, 1, 0, 1, 1};
    for (int i = 0; i < N; i++) p[i] = (float)(i + 1);
    AdamW o;
    adamw_init(&o, &cfg, 0, N, decay);
    adamw_step(&o, p, g, 0.5, 1.0f);
    for (int i = 0; i < N; i++) assert_true(p[i] == (decay[i] ? (float)(i + 1) * (float)(1.0 - 0.05) : (float)(i + 1)));
    adamw_free(&o);
}

/* gscale folds the trainer's normalisation and clipping into the pass: the same bits as stepping with
 * the gradient multiplied by it beforehand (one float product either way), across several blocks of
 * the pass and a ragged end; the bf16 copy it writes is the updated parameters rounded. */
static void test_adamw_gscale(void **state) {
    (void)state;
    enum { N = 3 * 4096 + 123 };
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6, .weight_decay = 0.01};
    float *a = koe_malloc(N * sizeof(float)), *b = koe_malloc(N * sizeof(float));
    float *ga = koe_malloc(N * sizeof(float)), *gb = koe_malloc(N * sizeof(float));
    fill_normal(a, N, 1.0, 4);
    memcpy(b, a, N * sizeof(float));
    AdamW oa, ob;
    adamw_init(&oa, &cfg, 0, N, NULL);
    adamw_init(&ob, &cfg, 0, N, NULL);
    const float scale[3] = {1.0f / 3000.0f, 0.37f / 517.0f, 1.0f};
    uint16_t *copy = koe_malloc(N * sizeof(uint16_t)), *want = koe_malloc(N * sizeof(uint16_t));
    oa.bf16 = copy; /* the bf16 copy the pass writes: the updated parameters rounded, inside its ranges */
    const int64_t ranges[4] = {0, 3, 10, N};
    oa.bf16_ranges = ranges;
    oa.bf16_nr = 2;
    memset(copy, 0, N * sizeof(uint16_t));
    for (int s = 0; s < 3; s++) {
        fill_normal(ga, N, 50.0, 60 + s);
        for (int i = 0; i < N; i++) gb[i] = ga[i] * scale[s];
        adamw_step(&oa, a, ga, 2e-3, scale[s]);
        adamw_step(&ob, b, gb, 2e-3, 1.0f);
        assert_memory_equal(a, b, N * sizeof(float));
        assert_memory_equal(oa.v, ob.v, N * sizeof(float));
        bf16_from_f32(want, a, N);
        memset(want + 3, 0, 7 * sizeof(uint16_t)); /* [3, 10) is outside the ranges: never written */
        assert_memory_equal(copy, want, N * sizeof(uint16_t));
    }
    free(copy), free(want);
    adamw_free(&oa), adamw_free(&ob);
    free(a), free(b), free(ga), free(gb);
}

static void test_grad_sqnorm(void **state) {
    (void)state;
    enum { N = 100003 };
    float *g = koe_malloc(N * sizeof(float));
    fill_normal(g, N, 3.0, 9);
    long double ref = 0;
    for (size_t i = 0; i < N; i++) ref += (long double)g[i] * g[i];
    omp_set_num_threads(1);
    double one = optim_grad_sqnorm(g, 0, N);
    omp_set_num_threads(2);
    double two = optim_grad_sqnorm(g, 0, N);
    omp_set_num_threads(3);
    double three = optim_grad_sqnorm(g, 0, N);
    assert_memory_equal(&one, &two, sizeof one); /* same bits for any thread count */
    assert_memory_equal(&one, &three, sizeof one);
    assert_true(fabs(one - (double)ref) <= 1e-12 * (double)ref);
    /* slices add up (the caller's allreduce) */
    double parts = optim_grad_sqnorm(g, 0, 12345) + optim_grad_sqnorm(g, 12345, N);
    assert_true(fabs(parts - one) <= 1e-12 * one);
    assert_true(optim_grad_sqnorm(g, 5, 5) == 0.0);
    /* a NaN or Inf anywhere makes the norm non-finite: how the trainer spots a bad step */
    g[77777] = NAN;
    assert_true(isnan(optim_grad_sqnorm(g, 0, N)));
    g[77777] = INFINITY;
    assert_true(isinf(optim_grad_sqnorm(g, 0, N)));
    free(g);
}

static void test_clip(void **state) {
    (void)state;
    assert_true(optim_clip_coef(5.0, 10.0) == 1.0);
    assert_true(optim_clip_coef(20.0, 10.0) == 10.0 / (20.0 + 1e-6));
    assert_true(optim_clip_coef(1e9, 0.0) == 1.0); /* clip_norm = 0: off */
    float g[5] = {3, 4, 0, 0, 0};
    double norm = sqrt(optim_grad_sqnorm(g, 0, 5));
    assert_true(norm == 5.0);
    const float coef = (float)optim_clip_coef(norm, 1.0);
    assert_true(fabsf(g[0] * coef - 0.6f) < 1e-6f && fabsf(g[1] * coef - 0.8f) < 1e-6f);
}

static void test_schedules(void **state) {
    (void)state;
    const double lr = 5e-4;
    ScheduleConfig lin = {.kind = SCHEDULE_LINEAR, .lr = lr, .warmup = 100, .max_updates = 1100};
    assert_true(schedule_lr(&lin, 0) == 0.0);
    assert_true(fabs(schedule_lr(&lin, 50) - lr / 2) < 1e-18);
    assert_true(schedule_lr(&lin, 100) == lr);
    assert_true(fabs(schedule_lr(&lin, 600) - lr / 2) < 1e-18);
    assert_true(fabs(schedule_lr(&lin, 1099) - lr / 1000) < 1e-18);
    assert_true(schedule_lr(&lin, 1100) == 0.0 && schedule_lr(&lin, 5000) == 0.0);
    lin.warmup = 0; /* no warmup: decay from the first update */
    assert_true(schedule_lr(&lin, 0) == lr);
    ScheduleConfig cosine = {.kind = SCHEDULE_COSINE, .lr = lr, .warmup = 100, .max_updates = 1100};
    assert_true(schedule_lr(&cosine, 0) == 0.0);
    assert_true(fabs(schedule_lr(&cosine, 25) - lr / 4) < 1e-18);
    assert_true(fabs(schedule_lr(&cosine, 100) - lr) < 1e-18);
    assert_true(fabs(schedule_lr(&cosine, 600) - lr / 2) < 1e-15);
    assert_true(fabs(schedule_lr(&cosine, 350) - lr * (0.5 + sqrt(0.5) / 2)) < 1e-15);
    assert_true(fabs(schedule_lr(&cosine, 1100) - lr * 0.1) < 1e-15); /* fairseq restarts at lr_shrink */
    ScheduleConfig tri = {.kind = SCHEDULE_TRI_STAGE, .lr = lr, .max_updates = 1000, .phase_ratio = {0.1, 0.4, 0.5},
                          .init_lr_scale = 0.01, .final_lr_scale = 0.05};
    assert_true(fabs(schedule_lr(&tri, 0) - 0.01 * lr) < 1e-18);
    assert_true(fabs(schedule_lr(&tri, 50) - (0.01 + 0.99 / 2) * lr) < 1e-15);
    assert_true(schedule_lr(&tri, 100) == lr && schedule_lr(&tri, 499) == lr);
    assert_true(fabs(schedule_lr(&tri, 500) - lr) < 1e-18);
    assert_true(fabs(schedule_lr(&tri, 750) - lr * sqrt(0.05)) < 1e-15);
    assert_true(fabs(schedule_lr(&tri, 1000) - 0.05 * lr) < 1e-15);
    assert_true(fabs(schedule_lr(&tri, 1001) - 0.05 * lr) < 1e-18);
}

/* ---- parity mode: run on optim_ref.py's inputs ------------------------------------------------- */

static void *read_file(const char *dir, const char *name, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) koe_fatal(KOE_EXIT_USAGE, "cannot open %s", path);
    void *buf = koe_malloc(bytes);
    if (fread(buf, 1, bytes, f) != bytes) koe_fatal(KOE_EXIT_USAGE, "%s: expected %zu bytes", path, bytes);
    fclose(f);
    return buf;
}

static void write_file(const char *dir, const char *name, const void *buf, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, bytes, f) != bytes || fclose(f)) koe_fatal(KOE_EXIT_INTERNAL, "cannot write %s", path);
}

/* spec.txt: "n N", "steps S", "split K", "beta1 B", "beta2 B", "eps E", "wd W", "lr L1 .. LS",
 * "clip M1 M2", then "schedule KIND LR WARMUP MAX R0 R1 R2 INIT FINAL" lines, and "steps_at S1 ..". */
static int parity(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/spec.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) koe_fatal(KOE_EXIT_USAGE, "cannot open %s", path);
    size_t n = 0, split = 0;
    int steps = 0;
    AdamWConfig cfg = {0};
    double lr[64], clip[2];
    ScheduleConfig sched[8];
    int n_sched = 0, n_at = 0;
    int64_t at[256];
    char word[64];
    while (fscanf(f, "%63s", word) == 1) {
        if (!strcmp(word, "n")) KOE_ASSERT(fscanf(f, "%zu", &n) == 1);
        else if (!strcmp(word, "steps")) KOE_ASSERT(fscanf(f, "%d", &steps) == 1 && steps <= 64);
        else if (!strcmp(word, "split")) KOE_ASSERT(fscanf(f, "%zu", &split) == 1);
        else if (!strcmp(word, "beta1")) KOE_ASSERT(fscanf(f, "%lf", &cfg.beta1) == 1);
        else if (!strcmp(word, "beta2")) KOE_ASSERT(fscanf(f, "%lf", &cfg.beta2) == 1);
        else if (!strcmp(word, "eps")) KOE_ASSERT(fscanf(f, "%lf", &cfg.eps) == 1);
        else if (!strcmp(word, "wd")) KOE_ASSERT(fscanf(f, "%lf", &cfg.weight_decay) == 1);
        else if (!strcmp(word, "lr"))
            for (int s = 0; s < steps; s++) KOE_ASSERT(fscanf(f, "%lf", &lr[s]) == 1);
        else if (!strcmp(word, "clip")) KOE_ASSERT(fscanf(f, "%lf %lf", &clip[0], &clip[1]) == 2);
        else if (!strcmp(word, "schedule")) {
            KOE_ASSERT(n_sched < 8);
            ScheduleConfig *s = &sched[n_sched++];
            char kind[32];
            KOE_ASSERT(fscanf(f, "%31s %lf %" SCNd64 " %" SCNd64 " %lf %lf %lf %lf %lf", kind, &s->lr, &s->warmup,
                              &s->max_updates, &s->phase_ratio[0], &s->phase_ratio[1], &s->phase_ratio[2],
                              &s->init_lr_scale, &s->final_lr_scale) == 9);
            s->kind = !strcmp(kind, "linear") ? SCHEDULE_LINEAR : !strcmp(kind, "cosine") ? SCHEDULE_COSINE
                                                                                          : SCHEDULE_TRI_STAGE;
        } else if (!strcmp(word, "steps_at")) {
            while (n_at < 256 && fscanf(f, "%" SCNd64, &at[n_at]) == 1) n_at++;
        } else
            koe_fatal(KOE_EXIT_USAGE, "%s: unknown word '%s'", path, word);
    }
    fclose(f);
    KOE_ASSERT(n > 0 && split <= n && steps > 0);

    /* AdamW: two slices, as two ZeRO ranks would update them */
    float *p = read_file(dir, "params0.f32", n * sizeof(float));
    float *g = read_file(dir, "grads.f32", (size_t)steps * n * sizeof(float));
    uint8_t *decay = read_file(dir, "decay.u8", n);
    float *trace = koe_malloc((size_t)steps * n * sizeof(float));
    AdamW lo, hi;
    adamw_init(&lo, &cfg, 0, split, decay);
    adamw_init(&hi, &cfg, split, n, decay);
    for (int s = 0; s < steps; s++) {
        adamw_step(&lo, p, g + (size_t)s * n, lr[s], 1.0f);
        adamw_step(&hi, p, g + (size_t)s * n, lr[s], 1.0f);
        memcpy(trace + (size_t)s * n, p, n * sizeof(float));
    }
    float *m = koe_malloc(n * sizeof(float)), *v = koe_malloc(n * sizeof(float));
    memcpy(m, lo.m, split * sizeof(float)), memcpy(m + split, hi.m, (n - split) * sizeof(float));
    memcpy(v, lo.v, split * sizeof(float)), memcpy(v + split, hi.v, (n - split) * sizeof(float));
    write_file(dir, "koe_params.f32", trace, (size_t)steps * n * sizeof(float));
    write_file(dir, "koe_m.f32", m, n * sizeof(float));
    write_file(dir, "koe_v.f32", v, n * sizeof(float));
    adamw_free(&lo), adamw_free(&hi);

    /* clipping: squared norms of two slices summed (the allreduce), then scaled in place */
    float *cg = read_file(dir, "clip_grads.f32", n * sizeof(float));
    FILE *out = fopen(strcat(strcpy(path, dir), "/koe_clip.txt"), "w");
    KOE_ASSERT(out);
    for (int c = 0; c < 2; c++) {
        float *x = koe_malloc(n * sizeof(float));
        memcpy(x, cg, n * sizeof(float));
        double norm = sqrt(optim_grad_sqnorm(x, 0, split) + optim_grad_sqnorm(x, split, n));
        float coef = (float)optim_clip_coef(norm, clip[c]);
        for (size_t i = 0; i < n; i++) x[i] *= coef; /* what adamw_step's gscale does as it reads them */
        fprintf(out, "%.17g\n", norm);
        char name[64];
        snprintf(name, sizeof name, "koe_clipped%d.f32", c);
        write_file(dir, name, x, n * sizeof(float));
        free(x);
    }
    KOE_ASSERT(fclose(out) == 0);

    /* schedules */
    out = fopen(strcat(strcpy(path, dir), "/koe_schedules.txt"), "w");
    KOE_ASSERT(out);
    for (int s = 0; s < n_sched; s++) {
        for (int i = 0; i < n_at; i++)
            if (at[i] <= sched[s].max_updates + 10) fprintf(out, "%d %" PRId64 " %.17g\n", s, at[i], schedule_lr(&sched[s], at[i]));
    }
    KOE_ASSERT(fclose(out) == 0);
    free(p), free(g), free(decay), free(trace), free(m), free(v), free(cg);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--parity")) return parity(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_matches_formulas),
        cmocka_unit_test(test_adamw_first_step),
        cmocka_unit_test(test_adamw_slices),
        cmocka_unit_test(test_decay_mask),
        cmocka_unit_test(test_adamw_gscale),
        cmocka_unit_test(test_grad_sqnorm),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_schedules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

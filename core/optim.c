/* optim.c — AdamW, gradient clipping and learning-rate schedules; see optim.h for the formulas.
 * Must stay elementwise over the flat buffer (no knowledge of tensors or ranks) and must not
 * allocate in the step. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gemm.h"

void adamw_init(AdamW *o, const AdamWConfig *cfg, size_t start, size_t end, const uint8_t *decay) {
    KOE_ASSERT(start <= end);
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->start = start;
    o->end = end;
    o->m = koe_calloc(end - start, sizeof(float));
    o->v = koe_calloc(end - start, sizeof(float));
    koe_advise_huge(o->m, (end - start) * sizeof(float)); /* a resume's read fills them first */
    koe_advise_huge(o->v, (end - start) * sizeof(float));
    o->decay = decay;
}

void adamw_free(AdamW *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

/* Elements per block of the AdamW pass: each thread turns a block's decay mask into multipliers on
 * its stack, then runs one branch-free loop the compiler vectorises (omp simd; sqrtf inlines as one
 * instruction under -fno-math-errno, Makefile). */
#define ADAMW_BLOCK 4096
/* Blocks a thread takes at a time. Taken as the threads finish (each element's update is independent
 * of the order) rather than in equal halves: a bf16 run's pass also rewrites the weights' bf16 copy,
 * which leaves out the conv weights at the front of the table (params_bf16_ranges), so equal halves
 * are unequal work, and a slower vCPU (core/README.md, Threads) is absorbed. Base, 2 threads, the
 * pass timed with each schedule on alternate steps of one koe bench run (medians of 24-25 steps, two
 * runs of 50 steps): bf16 69.6 -> 63.7 and 62.3 -> 60.2 ms, fp32 44.9 -> 43.9 and 42.0 -> 42.5 ms. */
#define ADAMW_CHUNK 16

typedef struct {
    float b1, w1, b2, w2, step_size, bc2_sqrt, eps, gscale;
} AdamWScalars;

/* One block: the formulas of optim.h in float, in torch's order of operations. */
static void adamw_block(float *restrict p, float *restrict g, float *restrict m, float *restrict v,
                        const float *restrict decay_mul, int64_t n, AdamWScalars c) {
#pragma omp simd /* -O2's cost model would leave a loop of unknown length scalar */
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i] * c.gscale;
        m[i] = m[i] * c.b1 + c.w1 * gi;
        v[i] = v[i] * c.b2 + c.w2 * gi * gi;
        const float denom = sqrtf(v[i]) / c.bc2_sqrt + c.eps;
        p[i] = p[i] * decay_mul[i] - c.step_size * (m[i] / denom);
    }
    memset(g, 0, (size_t)n * sizeof(float)); /* while the block is in cache */
}

void adamw_step(AdamW *o, float *params, float *grads, double lr, float gscale) {
    o->t++;
    const AdamWConfig *c = &o->cfg;
    /* Scalars as torch computes them: in double (Python floats), then used as float32 scalars. */
    const float decay_mul = (float)(1.0 - lr * c->weight_decay);
    const double bc1 = 1.0 - pow(c->beta1, (double)o->t), bc2 = 1.0 - pow(c->beta2, (double)o->t);
    const AdamWScalars k = {
        .b1 = (float)c->beta1, .w1 = (float)(1.0 - c->beta1), .b2 = (float)c->beta2, .w2 = (float)(1.0 - c->beta2),
        .step_size = (float)(lr / bc1), .bc2_sqrt = (float)sqrt(bc2), .eps = (float)c->eps, .gscale = gscale};
    const uint8_t *decay = o->decay;
    const int64_t lo = (int64_t)o->start, n = (int64_t)(o->end - o->start);
    const int64_t nb = (n + ADAMW_BLOCK - 1) / ADAMW_BLOCK;
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, ADAMW_CHUNK) nowait
        for (int64_t b = 0; b < nb; b++) {
            const int64_t i0 = lo + b * ADAMW_BLOCK, len = b == nb - 1 ? n - b * ADAMW_BLOCK : ADAMW_BLOCK;
            float mul[ADAMW_BLOCK]; /* the decay multiplier of each element; p * 1 keeps p's bits */
            if (decay) {
#pragma omp simd
                for (int64_t i = 0; i < len; i++) mul[i] = decay[i0 + i] ? decay_mul : 1.0f;
            } else {
#pragma omp simd
                for (int64_t i = 0; i < len; i++) mul[i] = decay_mul;
            }
            adamw_block(params + i0, grads + i0, o->m + (i0 - lo), o->v + (i0 - lo), mul, len, k);
            if (o->bf16) bf16_from_f32_ranges(o->bf16, params, o->bf16_ranges, o->bf16_nr, i0, i0 + len);
        }
        if (o->bf16) bf16_stream_fence(); /* the copy's non-temporal stores, before the region's end */
    }
}

/* Fixed-size blocks summed in double, then the block sums added in order: the same bits for any
 * number of threads. */
#define SQNORM_BLOCK 8192
#define SQNORM_LANES 16

double optim_grad_sqnorm(const float *grads, size_t start, size_t end) {
    KOE_ASSERT(start <= end);
    const int64_t n = (int64_t)(end - start);
    const int64_t nb = (n + SQNORM_BLOCK - 1) / SQNORM_BLOCK;
    double *partial = koe_malloc((size_t)(nb > 0 ? nb : 1) * sizeof(double)); /* once per step */
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const float *g = grads + start + (size_t)b * SQNORM_BLOCK;
        const int64_t len = (b == nb - 1) ? n - b * SQNORM_BLOCK : SQNORM_BLOCK;
        double acc[SQNORM_LANES] = {0}; /* independent partial sums in a fixed order: vectorisable, and
                                            the same bits whatever the CPU's vector width */
        int64_t i = 0;
        for (; i + SQNORM_LANES <= len; i += SQNORM_LANES)
            for (int j = 0; j < SQNORM_LANES; j++) acc[j] += (double)g[i + j] * g[i + j];
        for (; i < len; i++) acc[0] += (double)g[i] * g[i];
        double s = 0.0;
        for (int j = 0; j < SQNORM_LANES; j++) s += acc[j];
        partial[b] = s;
    }
    double total = 0.0;
    for (int64_t b = 0; b < nb; b++) total += partial[b];
    free(partial);
    return total;
}

double optim_clip_coef(double norm, double max_norm) {
    if (max_norm <= 0.0) return 1.0;
    const double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? coef : 1.0;
}

/* ---- schedules ---------------------------------------------------------------------------------- */

/* fairseq PolynomialDecayLRSchedule.step_update, power 1, end_learning_rate 0. */
static double lr_linear(const ScheduleConfig *s, int64_t step) {
    if (s->warmup > 0 && step <= s->warmup) return (double)step / (double)s->warmup * s->lr;
    if (step >= s->max_updates) return 0.0;
    const double pct_remaining = 1.0 - (double)(step - s->warmup) / (double)(s->max_updates - s->warmup);
    return s->lr * pct_remaining;
}

/* fairseq CosineLRSchedule.step_update: min_lr 0, warmup_init_lr 0, t_mult 1, lr_shrink 0.1,
 * period = max_update - warmup_updates (a new, shrunk cycle would start at max_update). */
static double lr_cosine(const ScheduleConfig *s, int64_t step) {
    if (step < s->warmup) return (double)step * (s->lr / (double)s->warmup);
    const int64_t period = s->max_updates - s->warmup;
    const int64_t cur = step - s->warmup;
    const int64_t i = cur / period, t_curr = cur - period * i;
    const double max_lr = s->lr * pow(0.1, (double)i);
    return 0.5 * max_lr * (1.0 + cos(M_PI * (double)t_curr / (double)period));
}

/* fairseq TriStageLRSchedule with phase_ratio: steps per phase int(max_update * ratio). */
static double lr_tri_stage(const ScheduleConfig *s, int64_t step) {
    const double peak = s->lr, init = s->init_lr_scale * peak, final = s->final_lr_scale * peak;
    const int64_t warm = (int64_t)((double)s->max_updates * s->phase_ratio[0]);
    const int64_t hold = (int64_t)((double)s->max_updates * s->phase_ratio[1]);
    const int64_t decay = (int64_t)((double)s->max_updates * s->phase_ratio[2]);
    if (step < warm) return init + (peak - init) / (double)warm * (double)step;
    if (step < warm + hold) return peak;
    if (step <= warm + hold + decay) {
        if (decay == 0) return peak;
        const double decay_factor = -log(s->final_lr_scale) / (double)decay;
        return peak * exp(-decay_factor * (double)(step - warm - hold));
    }
    return final;
}

double schedule_lr(const ScheduleConfig *s, int64_t step) {
    KOE_ASSERT(step >= 0 && s->max_updates > 0);
    switch (s->kind) {
    case SCHEDULE_LINEAR: return lr_linear(s, step);
    case SCHEDULE_COSINE: KOE_ASSERT(s->warmup < s->max_updates); return lr_cosine(s, step);
    case SCHEDULE_TRI_STAGE: return lr_tri_stage(s, step);
    }
    koe_fatal(KOE_EXIT_INTERNAL, "schedule_lr: unknown schedule kind %d", (int)s->kind);
}

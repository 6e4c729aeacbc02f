/* optim.h — AdamW, gradient-norm clipping and learning-rate schedules over the flat parameter
 * buffer (core/README.md). Everything works on a slice [start, end) of the flat
 * buffers, so ZeRO-1 (distributed/) updates its own slice with the same code; reductions across
 * ranks are the caller's (optim_grad_sqnorm returns the local part, the caller sums it). Gradient
 * accumulation is the caller's too: sum the gradients of update_freq micro-batches, then step.
 * No MPI, no HDF5, no allocation in the step. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* ---- AdamW, exactly torch.optim.AdamW (amsgrad=False, maximize=False) ----------------------------
 * For each element i of the slice, at update t = 1, 2, ...:
 *   p -= lr * wd * p                         (decoupled weight decay; wd = 0 where decay[i] == 0)
 *   m  = beta1 * m + (1 - beta1) * g
 *   v  = beta2 * v + (1 - beta2) * g * g
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * fairseq applies weight decay to every parameter; the mask makes no-decay groups possible. */
typedef struct {
    double beta1, beta2; /* (0.9, 0.98) */
    double eps;          /* 1e-6 */
    double weight_decay; /* 0.01 */
} AdamWConfig;

typedef struct {
    AdamWConfig cfg;
    size_t start, end;    /* the slice of the flat buffer this optimizer updates */
    float *m, *v;         /* (end - start) first and second moments; index i - start */
    const uint8_t *decay; /* borrowed, indexed by flat position i (whole buffer); NULL: decay all */
    uint16_t *bf16;       /* borrowed, indexed by flat position: receives each updated parameter inside
                             bf16_ranges rounded to bf16 (bf16_from_f32_ranges, core/gemm.h), the GEMMs'
                             copy in bf16 runs; NULL: none */
    const int64_t *bf16_ranges; /* borrowed: bf16_nr ranges of flat positions (gemm_set_bf16_copy's) */
    int bf16_nr;
    int64_t t;            /* updates taken (torch's state["step"]); checkpoints store it */
} AdamW;

/* Zeroed moments, t = 0. decay (may be NULL) must outlive the optimizer. */
void adamw_init(AdamW *o, const AdamWConfig *cfg, size_t start, size_t end, const uint8_t *decay);
void adamw_free(AdamW *o);
/* One update of params[start, end) at learning rate lr from the gradient g = gscale * grads[i] (a
 * float product: the caller folds its normalisation and clipping coefficient into gscale; 1: the
 * gradient as it is), in one vectorised pass that also clears grads[start, end) as it reads them
 * (the next update accumulates from zero) and writes o->bf16 over [start, end) inside its ranges when set. Both buffers are indexed by flat position; increments t
 * first, as torch does. */
void adamw_step(AdamW *o, float *params, float *grads, double lr, float gscale);

/* ---- gradient clipping, as torch.nn.utils.clip_grad_norm_ / fairseq clip_grad_norm_ ------------
 * norm = sqrt(sum over all ranks' slices of optim_grad_sqnorm); coef = optim_clip_coef(norm, max);
 * the gradient times coef is what AdamW steps with (adamw_step's gscale). A NaN or Inf anywhere
 * makes the squared norm non-finite, which is how the trainer detects a bad step. */
/* Sum of g^2 over [start, end), accumulated in double in fixed blocks and added in block order, so
 * the result does not depend on the thread count. */
double optim_grad_sqnorm(const float *grads, size_t start, size_t end);
/* min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (clipping off, fairseq clip_norm=0). */
double optim_clip_coef(double norm, double max_norm);

/* ---- learning-rate schedules: pure functions of the update count --------------------------------
 * lr(s) is fairseq's lr_scheduler.step_update(s): the update that takes the count from s to s+1
 * uses lr(s) (fairseq sets step_update(0) when it builds the optimizer, then step_update(s) after
 * update s). */
typedef enum {
    SCHEDULE_LINEAR = 1, /* fairseq polynomial_decay, power 1, end_learning_rate 0 */
    SCHEDULE_COSINE = 2, /* fairseq cosine, min_lr 0, warmup from 0, t_mult 1, lr_shrink 0.1 */
    SCHEDULE_TRI_STAGE = 3, /* fairseq tri_stage with phase_ratio */
} ScheduleKind;

typedef struct {
    ScheduleKind kind;
    double lr;              /* peak learning rate */
    int64_t warmup;         /* linear, cosine: warmup_updates */
    int64_t max_updates;    /* linear: total_num_update; cosine, tri_stage: max_update */
    double phase_ratio[3];  /* tri_stage: warmup, hold, decay fractions of max_updates */
    double init_lr_scale;   /* tri_stage: 0.01 */
    double final_lr_scale;  /* tri_stage: 0.05 */
} ScheduleConfig;

double schedule_lr(const ScheduleConfig *s, int64_t step);

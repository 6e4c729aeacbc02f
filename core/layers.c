/* layers.c — the fast kernels of layers.h (all but attention, which is in attention.c): GEMMs
 * through sgemm (gemm.h), everything else OpenMP loops over contiguous memory.
 * Must not allocate (scratch comes from the caller) or include MPI or HDF5. sgemm called from serial
 * code uses the OpenMP threads; called inside a parallel region (the grouped conv's per-group loop)
 * it runs single-threaded by itself.
 * Dimension letters as in layers.h; Cg = C/G input channels per group, OCg = OC/G, KC = K*Cg the
 * length of one unfolded input window of a group. */
#include "layers.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "common.h"
#include "gemm.h"
#include "vmath.h"

/* ---- the elementwise functions --------------------------------------------------------------------
 * GELU in its exact form x Phi(x), and GELU'(x) = Phi(x) + x phi(x), phi and Phi the standard normal's
 * density and distribution. The tail is Phi(-u) = phi(u) R(u), u = |x|, R the Mills ratio, with
 * R(u) = t P(t), t = 1/(1 + 0.21 u) and P of degree 8 fitted in relative error (2.2e-8 with its float
 * coefficients; tests/reference/gelu_fit.py derives them), and phi from koe_exp_nonpos (vmath.h): no
 * libm call, so vector and scalar loops give the same bits. Against erfc in double, over every float
 * |x| <= 14, with FMA (koe_madd) or without (tests/unit/test_layers.c checks a sample, or all with
 * KOE_GELU_EVERY_FLOAT=1): GELU within (11.4 + x^2/2) 2^-24 relative and GELU' within (11.5 + x^2/2)
 * 2^-24 of Phi + |x phi| (the x^2/2 is x*x's rounding inside the exp), where the exact value is at
 * least FLT_MIN; below it, within 1e-37. The form used before, 0.5 x (1 + erff(x / sqrt2)) with
 * libmvec's erff, lost the negative tail to cancellation (18 ulp at |x| < 2, all of it at x = -5.5)
 * and took 1.07x (forward) and 1.6x (backward) as long (Base's FFN, 2 threads). */
static inline float normal_pdf(float x) {
    const float y = -0.5f * x * x;
    return y < -87.0f ? 0.0f : 0.398942280f * koe_exp_nonpos(y); /* 0 where phi(x) < FLT_MIN */
}
static inline float normal_cdf(float x, float pdf) {
    const float t = 1.0f / (1.0f + 0.209999993f * fabsf(x));
    float p = -0.180619389f;
    p = koe_madd(p, t, 0.715823233f);
    p = koe_madd(p, t, -0.838346899f);
    p = koe_madd(p, t, 0.888231933f);
    p = koe_madd(p, t, -0.244346082f);
    p = koe_madd(p, t, 0.316989899f);
    p = koe_madd(p, t, 0.172359735f);
    p = koe_madd(p, t, 0.213398263f);
    p = koe_madd(p, t, 0.209823444f);
    const float tail = pdf * t * p; /* Phi(-|x|) */
    return x < 0.0f ? tail : 1.0f - tail;
}
static inline float gelu(float x) { return x * normal_cdf(x, normal_pdf(x)); }
static inline float gelu_grad(float x) {
    const float pdf = normal_pdf(x);
    return normal_cdf(x, pdf) + x * pdf;
}

/* ---- linear ------------------------------------------------------------------------------------ */

static void linear_fwd(float *out, const void *inp, int in_bf16, const float *weight, const float *bias, int64_t N,
                       int C, int OC) {
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) memcpy(out + n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    sgemm_mixed('N', 'T', N, OC, C, 1.0f, inp, in_bf16, C, weight, 0, C, beta, out, OC);
}

void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int C, int OC) {
    linear_fwd(out, inp, 0, weight, bias, N, C, OC);
}

void linear_forward_bf16in(float *out, const uint16_t *inp, const float *weight, const float *bias, int64_t N, int C,
                           int OC) {
    linear_fwd(out, inp, 1, weight, bias, N, C, OC);
}

/* dst (OC) += column sums of src (N rows of OC, row stride ld; bf16 when src_bf16): threads split the
 * columns so no two threads write the same element. */
static void colsum_accumulate(float *dst, const void *src, int src_bf16, int64_t N, int OC, int64_t ld) {
    enum { CB = 64 };
#pragma omp parallel for schedule(dynamic, 1)
    for (int o0 = 0; o0 < OC; o0 += CB) {
        int o1 = o0 + CB < OC ? o0 + CB : OC;
        double acc[CB] = {0};
        for (int64_t n = 0; n < N; n++) {
            if (src_bf16) {
                const uint16_t *row = (const uint16_t *)src + n * ld;
#pragma omp simd
                for (int o = o0; o < o1; o++) acc[o - o0] += bf16_to_f32(row[o]);
            } else {
                const float *row = (const float *)src + n * ld;
#pragma omp simd
                for (int o = o0; o < o1; o++) acc[o - o0] += row[o];
            }
        }
        for (int o = o0; o < o1; o++) dst[o] += (float)acc[o - o0];
    }
}

static void linear_bwd(float *dinp, float *dweight, float *dbias, const void *dout, int dout_bf16, const void *inp,
                       int in_bf16, const float *weight, int64_t N, int C, int OC) {
    /* in a bf16 run an fp32 dout, A of both products, is rounded once (their B operands stage elsewhere) */
    const int stage = !dout_bf16 && gemm_precision() == GEMM_BF16 && dinp && dweight;
    const void *d = stage ? (const void *)gemm_stage_a(dout, N, OC, OC) : dout;
    const int db = dout_bf16 || stage;
    if (dinp)
        sgemm_mixed('N', 'N', N, C, OC, 1.0f, d, db, OC, weight, 0, C, 1.0f, dinp, C);
    if (dweight)
        sgemm_mixed('T', 'N', OC, C, N, 1.0f, d, db, OC, inp, in_bf16, C, 1.0f, dweight, C);
    if (dbias) colsum_accumulate(dbias, dout, dout_bf16, N, OC, OC);
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int64_t N, int C, int OC) {
    linear_bwd(dinp, dweight, dbias, dout, 0, inp, 0, weight, N, C, OC);
}

void linear_backward_bf16in(float *dinp, float *dweight, float *dbias, const float *dout, const uint16_t *inp,
                            const float *weight, int64_t N, int C, int OC) {
    linear_bwd(dinp, dweight, dbias, dout, 0, inp, 1, weight, N, C, OC);
}

void linear_backward_bf16dout(float *dinp, float *dweight, float *dbias, const uint16_t *dout, const float *inp,
                              const float *weight, int64_t N, int C, int OC) {
    KOE_ASSERT(gemm_precision() == GEMM_BF16);
    linear_bwd(dinp, dweight, dbias, dout, 1, inp, 0, weight, N, C, OC);
}

/* ---- conv1d -------------------------------------------------------------------------------------
 * Three paths, chosen by shape:
 *   depthwise (G = C = OC): a direct loop over frames, channels innermost (weight as (K, C)).
 *   G = 1 without padding (the waveform stack): the GEMMs read the input where it lies (conv_view_*,
 *     below): utterance b's windows are the rows of its input from row t*stride on.
 *   otherwise (grouped or padded: the positional conv): per group, blocks of up to CONV_BLOCK_FLOATS
 *     unfolded windows times the group's weight in one GEMM (conv_unfold, below). The groups go to the
 *     OpenMP threads (one unfolding buffer each) and each group's GEMM runs on its own thread: the
 *     group GEMMs are narrow (OC/G columns), and threading inside them spends more time synchronising
 *     than computing (positional conv: 2-3x).
 * The view path's backward GEMMs use the weight as Wr (OC, K, Cg) (PyTorch stores (OC, Cg, K)), its
 * forward Wr's transpose (K*Cg, OC), both built in scratch, so that every product is 'N', 'N' or
 * 'T', 'N': oneDNN's sgemm ran the stack's forward as 'N', 'T' by Wr at 0.6-0.85 of the 'N', 'N' rate
 * (layers 1-4 0.82, 5-6 0.6; tests/bench/bench_layers fp32, forward of layers 1-6 227 -> 189 ms at 2
 * threads). Its bf16 GEMM runs both alike; there the transpose's extra 0.2 ms a layer over Wr's gather
 * was lost in the noise of a step (conv stack forward 112-114 -> 113-119 ms, three alternating pairs).
 * The unfolded path's use the weight as stored.
 * oneDNN 2.6's convolution primitives (what PyTorch runs) measured no faster on the waveform stack
 * than its im2col path (tests/bench/conv_dnnl.sh, Zen 4, reorders counted, fwd+bwd of the stack, time
 * koe / oneDNN): at 1 thread 0.84-1.01 in bf16, 0.88-0.97 in fp32 (oneDNN's blocked layouts; 0.5 on
 * time-major nwc); at 2 threads the same CPU time (0.90-1.14), wall 1.04-1.34 only on a machine with
 * one core busy. With the view path, on an idle machine: 1 thread 0.92-1.00 in bf16, 0.89 in fp32
 * (blocked; 0.55 nwc); 2 threads 0.96-1.08 in bf16, 1.00 in fp32 (blocked; 0.57 nwc). */
#define CONV_BLOCK_FLOATS (1 << 22)
/* In a bf16 run the backward rounds an fp32 dout a block's (M, OC/G) rows at a time: the unfolded path
 * into sgemm's staging buffer (gemm.h), which keeps the size of the largest, the view path into the
 * conv's scratch. The backward's blocks are also bounded to this many of those values: when the
 * first layer's weight gradient was bf16, its one block (Base, 2 x 4 s: 25598 rows of 512) grew the
 * staging buffer to 26 MB, 4 MB with the bound. The forward rounds no activation of that size and keeps
 * its blocks (smaller ones measured slower on the first layer). */
#define CONV_STAGE_FLOATS (1 << 21)

int64_t conv1d_out_len(int64_t Ti, int K, int stride, int pad) {
    int64_t span = Ti + 2 * (int64_t)pad - K;
    return span < 0 ? 0 : span / stride + 1;
}

static int conv_is_depthwise(int C, int OC, int G) { return G == C && OC == C; }

/* G = 1 without padding (the waveform stack): utterance b's windows are already a matrix in memory,
 * its input read from row t*stride on, so the GEMMs read the input where it lies (conv_view_*) */
static int conv_is_view(int pad, int G) { return G == 1 && pad == 0; }

/* OpenMP threads running groups at once in the unfolded path (each needs its own unfolding buffer):
 * 1 when G = 1, where the GEMMs use sgemm's threads instead. */
static int conv_slots(int G) {
    int nt = omp_get_max_threads();
    return G > 1 && nt > 1 ? (G < nt ? G : nt) : 1;
}

/* rows of unfolded windows per im2col block; bwd: for the backward (CONV_STAGE_FLOATS), never more */
static int64_t conv_block_rows(int64_t rows, int64_t KC, int OCg, int bwd) {
    int64_t rb = CONV_BLOCK_FLOATS / KC;
    if (bwd && gemm_precision() == GEMM_BF16 && CONV_STAGE_FLOATS / OCg < rb) rb = CONV_STAGE_FLOATS / OCg;
    if (rb < 16) rb = 16;
    return rb < rows ? rb : rows;
}

/* The views of a conv's scratch (common.h's arena): depthwise only the weight as (K, C) in wr. The view
 * path: Wr and its gradient, and the bf16 operands of a bf16 run (Wr, a block's input rows and its dout
 * rows, each when it is not bf16 already). The unfolded path: the packed input and dout (xp, dp; fp32,
 * and in a bf16 run rounded into xb, db), the input gradient's weight wt, and one block of unfolded
 * rows per slot. */
typedef struct {
    float *wr, *dwr, *col, *xp, *dp, *wt;
    uint16_t *w16, *x16, *d16, *xb, *db;
} ConvScratch;

/* the view path's output frames per block of one utterance: bf16 operands are rounded into scratch a
 * block at a time (CONV_BLOCK_FLOATS, and in the backward CONV_STAGE_FLOATS); fp32 ones are read in
 * place, so one block is the whole utterance */
static int64_t conv_view_rows(int64_t To, int64_t KC, int OC, int bwd, int bf16) {
    return bf16 ? conv_block_rows(To, KC, OC, bwd) : To;
}

/* the unfolded path's packed lengths: the input padded (windows of output frames), and dout spread
 * `stride` apart and shifted for the transposed conv (windows of input frames) */
static int64_t conv_packed_len_x(int64_t Ti, int pad) { return Ti + 2 * (int64_t)pad; }
static int64_t conv_packed_len_d(int64_t Ti, int K) { return Ti + K - 1; }

/* the unfolded path's floats per slot: a block of the forward's windows or of the input gradient's */
static int64_t conv_slot_floats(int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G) {
    const int64_t KC = (int64_t)K * (C / G), KCo = (int64_t)K * (OC / G);
    const int64_t fwd = conv_block_rows((int64_t)B * conv1d_out_len(Ti, K, stride, pad), KC, OC / G, 0) * KC;
    const int64_t dx = conv_block_rows((int64_t)B * Ti, KCo, C / G, 0) * KCo;
    return fwd > dx ? fwd : dx;
}

static void conv_scratch_carve(ConvScratch *s, Arena *ar, int B, int64_t Ti, int C, int OC, int K, int stride,
                               int pad, int G) {
    KOE_ASSERT(G > 0 && C % G == 0 && OC % G == 0 && K > 0 && stride > 0 && pad >= 0);
    memset(s, 0, sizeof *s);
    if (conv_is_depthwise(C, OC, G)) {
        s->wr = arena_take(ar, (int64_t)K * C);
        return;
    }
    const int64_t KC = (int64_t)K * (C / G), To = conv1d_out_len(Ti, K, stride, pad);
    if (!conv_is_view(pad, G)) {
        const int64_t nx = (int64_t)B * C * conv_packed_len_x(Ti, pad), nd = (int64_t)B * OC * conv_packed_len_d(Ti, K);
        s->xp = arena_take(ar, nx), s->xb = (uint16_t *)arena_take(ar, (nx + 1) / 2);
        s->dp = arena_take(ar, nd), s->db = (uint16_t *)arena_take(ar, (nd + 1) / 2);
        s->wt = arena_take(ar, (int64_t)OC * KC);
        s->col = arena_take(ar, conv_slots(G) * conv_slot_floats(B, Ti, C, OC, K, stride, pad, G));
        return;
    }
    s->wr = arena_take(ar, (int64_t)OC * KC);
    s->dwr = arena_take(ar, (int64_t)OC * KC);
    /* the largest block, the forward's (conv_block_rows with bwd = 0 bounds the backward's too) */
    const int64_t M = conv_block_rows(To, KC, OC, 0), rows = M ? (M - 1) * stride + K : 0;
    s->w16 = (uint16_t *)arena_take(ar, ((int64_t)OC * KC + 1) / 2);
    s->x16 = (uint16_t *)arena_take(ar, (rows * C + 1) / 2);
    s->d16 = (uint16_t *)arena_take(ar, (M * OC + 1) / 2);
}

int64_t conv1d_scratch_floats(int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G) {
    ConvScratch s;
    Arena ar = arena_measure();
    conv_scratch_carve(&s, &ar, B, Ti, C, OC, K, stride, pad, G);
    return ar.used;
}

static ConvScratch conv_scratch(float *scratch, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G) {
    ConvScratch s;
    Arena ar = arena_over(scratch, conv1d_scratch_floats(B, Ti, C, OC, K, stride, pad, G));
    conv_scratch_carve(&s, &ar, B, Ti, C, OC, K, stride, pad, G);
    return s;
}

/* Wr[o][k][cg] = weight[o][cg][k]: k outer, so that the stores run along Wr's rows and the loads
 * become vector gathers (omp simd) */
static void conv_weight_to_wr(float *wr, const float *weight, int OC, int Cg, int K) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < K; k++) {
            float *restrict r = wr + ((int64_t)o * K + k) * Cg;
            const float *restrict w = weight + (int64_t)o * Cg * K + k;
#pragma omp simd
            for (int cg = 0; cg < Cg; cg++) r[cg] = w[(int64_t)cg * K];
        }
}

/* Wr transposed, (K*Cg, OC): row k*Cg + cg holds every output channel's weight at (cg, k); by tiles
 * of 16 output x 16 input channels (0.28 ms for 512 x 512 x 3 at 2 threads, where a loop writing
 * whole output rows took 0.8 ms; conv_weight_to_wr's gather takes 0.07). */
static void conv_weight_to_wrt(float *wrt, const float *weight, int OC, int Cg, int K) {
    enum { TB = 16 };
#pragma omp parallel for schedule(static) collapse(2)
    for (int o0 = 0; o0 < OC; o0 += TB)
        for (int c0 = 0; c0 < Cg; c0 += TB) {
            const int no = OC - o0 < TB ? OC - o0 : TB, nc = Cg - c0 < TB ? Cg - c0 : TB;
            for (int k = 0; k < K; k++)
                for (int c = 0; c < nc; c++) {
                    float *restrict r = wrt + ((int64_t)k * Cg + c0 + c) * OC + o0;
                    const float *restrict w = weight + ((int64_t)o0 * Cg + c0 + c) * K + k;
                    for (int o = 0; o < no; o++) r[o] = w[(int64_t)o * Cg * K];
                }
        }
}

static void conv_wr_grad_accumulate(float *dweight, const float *dwr, int OC, int Cg, int K) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++)
        for (int cg = 0; cg < Cg; cg++) {
            float *restrict d = dweight + ((int64_t)o * Cg + cg) * K;
            const float *restrict r = dwr + (int64_t)o * K * Cg + cg;
#pragma omp simd
            for (int k = 0; k < K; k++) d[k] += r[(int64_t)k * Cg];
        }
}

/* this tap's range of output frames [*t0, *t1) whose input row t*stride + k - pad is inside [0, Ti) */
static void conv_tap_range(int64_t *t0, int64_t *t1, int64_t Ti, int64_t To, int k, int stride, int pad) {
    int64_t lo = pad - k; /* need t*stride >= lo */
    int64_t a = lo <= 0 ? 0 : (lo + stride - 1) / stride;
    int64_t hi = Ti - 1 + pad - k; /* need t*stride <= hi */
    int64_t b = hi < 0 ? 0 : hi / stride + 1;
    if (b > To) b = To;
    *t0 = a;
    *t1 = b > a ? b : a;
}

/* ---- the unfolded path: its operands are packed channel-major, (B, channels, L), so that a window of
 * K taps of one channel is K consecutive values: an unfolded row is Cg runs of K values copied whole, in
 * the weight's own (Cg, K) order, and the forward's and the weight gradient's GEMMs use the weight and
 * its gradient as they are stored. The input gradient is the transposed conv: dinp frame i gets
 * weight tap k times dout frame t where t*stride + k = i + pad, which is the same unfolding of dout
 * spread `stride` apart and shifted by K-1-pad (conv_pack), times the weight with its channels swapped
 * and its taps reversed (conv_weight_flip): one GEMM of depth K*OC/G per block and group, writing dinp
 * where it lies. With stride > 1 that product multiplies the zeros between dout's frames too (no
 * model has a strided unfolded conv; the tests do). Against the im2col of time-major rows it replaced
 * (taps of Cg values each, the weight rearranged to (OC, K, Cg) and back, the input gradient as a
 * depth-OC/G product scattered back by col2im), Base's positional conv, 2 x 4 s, 2 threads: forward
 * 16.2 -> 12.0 ms and backward 35.5 -> 26.5 ms in bf16, 30.6 -> 27.3 and 61.5 -> 54.3 ms in fp32;
 * 55-58 -> 46-47 ms of a bf16 step (koe bench, pos conv row). */

/* xp (B, Cx, L): xp[b][c][shift + up*i] = x[b][i][c] (x (B, n, Cx), bf16 when x_bf16) where that is
 * inside [0, L), zeros elsewhere. */
static void conv_pack(float *xp, const void *x, int x_bf16, int B, int64_t n, int Cx, int64_t L, int64_t shift,
                      int up) {
    const int64_t i0 = shift >= 0 ? 0 : (-shift + up - 1) / up; /* shift + up*i >= 0 */
    int64_t i1 = L - shift <= 0 ? 0 : (L - 1 - shift) / up + 1;  /* shift + up*i <= L - 1 */
    if (i1 > n) i1 = n;
#pragma omp parallel for schedule(static)
    for (int64_t bc = 0; bc < (int64_t)B * Cx; bc++) {
        const int64_t b = bc / Cx, c = bc % Cx;
        float *restrict row = xp + bc * L;
        memset(row, 0, (size_t)L * sizeof *row);
        if (x_bf16) {
            const uint16_t *src = (const uint16_t *)x + b * n * Cx + c;
            for (int64_t i = i0; i < i1; i++) row[shift + up * i] = bf16_to_f32(src[i * Cx]);
        } else {
            const float *src = (const float *)x + b * n * Cx + c;
            for (int64_t i = i0; i < i1; i++) row[shift + up * i] = src[i * Cx];
        }
    }
}

/* col (M, Cg*K): rows r0 .. r0+M-1 (r = b*Tr + t) of group g's windows in xp (B, Cx, L; es bytes a
 * value): row r holds, channel after channel, xp[b][g*Cg + c][t*stride + k] for k < K. */
static void conv_unfold(void *col, const void *xp, size_t es, int64_t r0, int64_t M, int64_t Tr, int64_t L, int Cx,
                        int Cg, int K, int stride, int g) {
    const int64_t KC = (int64_t)K * Cg;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const int64_t r = r0 + m, b = r / Tr, t = r % Tr;
        char *dst = (char *)col + (size_t)(m * KC) * es;
        const char *src = (const char *)xp + (size_t)((b * Cx + (int64_t)g * Cg) * L + t * stride) * es;
        for (int c = 0; c < Cg; c++) memcpy(dst + (size_t)c * K * es, src + (size_t)(c * L) * es, (size_t)K * es);
    }
}

/* wt (G, OCg*K, Cg): wt[g][o*K + k][c] = weight[g*OCg + o][c][K-1-k], the transposed conv's weight, laid
 * out for an 'N', 'N' product: oneDNN ran the positional conv's input-gradient GEMM (400 x 48, depth
 * 6144, one thread) 1.37x (fp32) and 1.12x (bf16) as fast as the 'N', 'T' of (Cg, OCg*K). With this
 * gather's cost (1.2 ms, where the (Cg, OCg*K) copy took 0.85), Base's positional conv backward
 * (bench_layers, 2 threads, three alternating runs) went 56-58 -> 50-56 ms in fp32 and stayed 28.6-29.2
 * ms in bf16. */
static void conv_weight_flip(float *wt, const float *weight, int G, int Cg, int OCg, int K) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int g = 0; g < G; g++)
        for (int o = 0; o < OCg; o++) {
            const float *restrict w = weight + ((int64_t)g * OCg + o) * Cg * K + K - 1;
            float *restrict d = wt + ((int64_t)g * OCg + o) * K * Cg;
            for (int k = 0; k < K; k++) {
#pragma omp simd /* a gather: 1.2 ms for Base's 4.7 M values at 2 threads, 1.9 without */
                for (int c = 0; c < Cg; c++) d[(int64_t)k * Cg + c] = w[(int64_t)c * K - k];
            }
        }
}

/* the packed operand the GEMMs read: xp itself, or in a bf16 run its rounding into xb */
static const void *conv_packed(float *xp, uint16_t *xb, int64_t n, int bf16) {
    if (!bf16) return xp;
    bf16_from_f32(xb, xp, n);
    return xb;
}

static void conv_depthwise_forward(float *out, const float *inp, const float *weight, const float *bias, int B,
                                   int64_t Ti, int64_t To, int C, int K, int stride, int pad, float *wd) {
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++) wd[(int64_t)k * C + c] = weight[(int64_t)c * K + k];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < (int64_t)B * To; r++) {
        int64_t b = r / To, t = r % To;
        float *o = out + r * C;
        for (int c = 0; c < C; c++) o[c] = bias ? bias[c] : 0.0f;
        for (int k = 0; k < K; k++) {
            int64_t i = t * stride + k - pad;
            if (i < 0 || i >= Ti) continue;
            const float *x = inp + (b * Ti + i) * C, *w = wd + (int64_t)k * C;
            for (int c = 0; c < C; c++) o[c] += w[c] * x[c];
        }
    }
}

static void conv_depthwise_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                    const float *weight, int B, int64_t Ti, int64_t To, int C, int K, int stride,
                                    int pad, float *scratch) {
    float *wd = scratch; /* (K, C) */
    int64_t R = (int64_t)B * To;
    if (dbias) colsum_accumulate(dbias, dout, 0, R, C, C);
    if (dweight) {
        enum { CB = 64 };
#pragma omp parallel for schedule(dynamic, 1)
        for (int c0 = 0; c0 < C; c0 += CB) {
            int c1 = c0 + CB < C ? c0 + CB : C;
            /* tap by tap, the sum over frames stays in registers (CB accumulators) */
            for (int k = 0; k < K; k++) {
                int64_t t0, t1;
                conv_tap_range(&t0, &t1, Ti, To, k, stride, pad);
                float acc[CB] = {0};
                for (int b = 0; b < B; b++)
                    for (int64_t t = t0; t < t1; t++) {
                        const float *d = dout + ((int64_t)b * To + t) * C;
                        const float *x = inp + ((int64_t)b * Ti + t * stride + k - pad) * C;
                        for (int c = c0; c < c1; c++) acc[c - c0] += d[c] * x[c];
                    }
                for (int c = c0; c < c1; c++) dweight[(int64_t)c * K + k] += acc[c - c0];
            }
        }
    }
    if (dinp) {
        for (int c = 0; c < C; c++)
            for (int k = 0; k < K; k++) wd[(int64_t)k * C + c] = weight[(int64_t)c * K + k];
#pragma omp parallel for schedule(static)
        for (int64_t ri = 0; ri < (int64_t)B * Ti; ri++) {
            int64_t b = ri / Ti, i = ri % Ti;
            int64_t lo = i + pad - K + 1;
            int64_t ta = lo <= 0 ? 0 : (lo + stride - 1) / stride;
            int64_t tb = (i + pad) / stride;
            if (tb > To - 1) tb = To - 1;
            float *dx = dinp + ri * C;
            for (int64_t t = ta; t <= tb; t++) {
                const float *d = dout + (b * To + t) * C, *w = wd + (i + pad - t * stride) * C;
                for (int c = 0; c < C; c++) dx[c] += d[c] * w[c];
            }
        }
    }
}

/* ---- the view path: the window of output frame t of utterance b is its input rows [t*stride,
 * t*stride + K), K*C values in a row, so frames t0, t0 + 1, ... are the rows of a matrix over the input
 * with leading dimension stride*C. oneDNN wants a leading dimension >= the row's length, which
 * overlapping windows (K > stride: K = 3, stride 2) do not have, so the frames go in P = ceil(K /
 * stride) phases: phase p is frames t0 + p + P*u, whose windows lie P*stride >= K rows apart, a
 * (ceil((M - p) / P), K*C) matrix with leading dimension P*stride*C, and its output rows are every
 * P-th row of out (leading dimension P*OC). In the backward the windows of one phase cover each input
 * row at most once, so dinp's rows take their gradients from its product directly (beta = 1).
 * Measured on the Base stack (tests/bench/conv_dnnl.sh, Zen 4, 2 threads, fwd+bwd, fuzzers at nice 19 on
 * both cores): fp32 860-950 ms with im2col, 620-680 ms this way; bf16 475-640 ms, 295-310 ms. Layer 0's
 * two phases replaced two products of 5 taps each, which passed twice over its 25598 x 512 output:
 * forward 6.9 -> 3.3 ms in fp32, 5.7 -> 2.8 in bf16; backward 6.4 -> 4.3 ms. */

/* phases (above) and phase p's frames among M */
static int conv_view_phases(int K, int stride) { return (K + stride - 1) / stride; }
static int64_t conv_view_frames(int64_t M, int P, int p) { return (M - p + P - 1) / P; }

/* the block's input rows: as they are, or rounded into s->x16 when the GEMMs are bf16 and inp is fp32 */
static const void *conv_view_input(const ConvScratch *s, int *x_bf16, const void *inp, int in_bf16, int col_bf16,
                                   int64_t Ti, int C, int K, int stride, int b, int64_t t0, int64_t M) {
    const int64_t r0 = (int64_t)b * Ti + t0 * stride, rows = (M - 1) * stride + K;
    *x_bf16 = in_bf16 || col_bf16;
    if (in_bf16) return (const uint16_t *)inp + r0 * C;
    if (!col_bf16) return (const float *)inp + r0 * C;
    bf16_from_f32(s->x16, (const float *)inp + r0 * C, rows * C);
    return s->x16;
}

/* s->wr holds Wr's transpose (conv_forward) */
static void conv_view_forward(float *out, const void *inp, int in_bf16, float beta0, int B, int64_t Ti, int64_t To,
                              int C, int OC, int K, int stride, const ConvScratch *s) {
    const int col_bf16 = gemm_precision() == GEMM_BF16;
    const int P = conv_view_phases(K, stride);
    const int64_t KC = (int64_t)K * C, ld = (int64_t)P * stride * C, RB = conv_view_rows(To, KC, OC, 0, col_bf16);
    const void *w = s->wr;
    if (col_bf16) bf16_from_f32(s->w16, s->wr, OC * KC), w = s->w16;
    for (int b = 0; b < B; b++)
        for (int64_t t0 = 0; t0 < To; t0 += RB) {
            const int64_t M = To - t0 < RB ? To - t0 : RB;
            int xb;
            const char *x = conv_view_input(s, &xb, inp, in_bf16, col_bf16, Ti, C, K, stride, b, t0, M);
            for (int p = 0; p < P && p < M; p++)
                sgemm_mixed('N', 'N', conv_view_frames(M, P, p), OC, KC, 1.0f, x + (size_t)p * stride * C * (xb ? 2 : 4),
                            xb, ld, w, col_bf16, OC, beta0, out + ((int64_t)b * To + t0 + p) * OC, (int64_t)P * OC);
        }
}

/* dinp += and dwr += (dwr: the gradient of Wr). A weight gradient of a few columns from fp32 operands
 * (the waveform's first layer: K*C = 10) is computed in fp32 in a bf16 run too: it is 2*K*C flops per
 * dout value, and rounding dout to bf16 for it cost more than the product (Base layer 0's backward in a
 * bf16 run, conv_dnnl.sh, 2 threads: 12.4 ms rounded, 6.4 ms in fp32, as in an fp32 run). */
static void conv_view_backward(float *dinp, float *dwr, const void *dout, int dout_bf16, const void *inp, int in_bf16,
                               int B, int64_t Ti, int64_t To, int C, int OC, int K, int stride, const ConvScratch *s) {
    const int P = conv_view_phases(K, stride);
    const int64_t KC = (int64_t)K * C, ld = (int64_t)P * stride * C;
    const int dw_fp32 = !dout_bf16 && !in_bf16 && KC < 64;
    const int col_bf16 = gemm_precision() == GEMM_BF16 && !(dw_fp32 && !dinp);
    const int64_t RB = conv_view_rows(To, KC, OC, 1, col_bf16);
    const void *w = s->wr;
    if (dinp && col_bf16) bf16_from_f32(s->w16, s->wr, OC * KC), w = s->w16;
    for (int b = 0; b < B; b++)
        for (int64_t t0 = 0; t0 < To; t0 += RB) {
            const int64_t M = To - t0 < RB ? To - t0 : RB;
            const char *d = (const char *)dout + (size_t)(((int64_t)b * To + t0) * OC) * (dout_bf16 ? 2 : 4);
            int db = dout_bf16;
            if (dwr && dw_fp32) {
                const float *x = (const float *)inp + ((int64_t)b * Ti + t0 * stride) * C;
                for (int p = 0; p < P && p < M; p++)
                    sgemm_fp32('T', 'N', OC, KC, conv_view_frames(M, P, p), 1.0f, (const float *)d + (int64_t)p * OC,
                               (int64_t)P * OC, x + (int64_t)p * stride * C, ld, 1.0f, dwr, KC);
            }
            if (col_bf16 && !db) { /* rounded once for all of the block's products */
                bf16_from_f32(s->d16, (const float *)d, M * OC);
                d = (const char *)s->d16, db = 1;
            }
            if (dwr && !dw_fp32) {
                int xb;
                const char *x = conv_view_input(s, &xb, inp, in_bf16, col_bf16, Ti, C, K, stride, b, t0, M);
                for (int p = 0; p < P && p < M; p++)
                    sgemm_mixed('T', 'N', OC, KC, conv_view_frames(M, P, p), 1.0f, d + (size_t)p * OC * (db ? 2 : 4), db,
                                (int64_t)P * OC, x + (size_t)p * stride * C * (xb ? 2 : 4), xb, ld, 1.0f, dwr, KC);
            }
            if (dinp)
                for (int p = 0; p < P && p < M; p++)
                    sgemm_mixed('N', 'N', conv_view_frames(M, P, p), KC, OC, 1.0f, d + (size_t)p * OC * (db ? 2 : 4), db,
                                (int64_t)P * OC, w, col_bf16, KC, 1.0f,
                                dinp + ((int64_t)b * Ti + (t0 + p) * stride) * C, ld);
        }
}

/* The unfolded path's windows are bf16 in a bf16 run (gemm_precision()): copied from a bf16 input
 * (in_bf16), rounded from an fp32 one, and multiplied as they are (sgemm_mixed), never staged. */
static void conv_forward(float *out, const void *inp, int in_bf16, const float *weight, const float *bias, int B,
                         int64_t Ti, int C, int OC, int K, int stride, int pad, int G, float *scratch) {
    KOE_ASSERT(G > 0 && C % G == 0 && OC % G == 0 && K > 0 && stride > 0 && pad >= 0);
    const int col_bf16 = gemm_precision() == GEMM_BF16;
    KOE_ASSERT(col_bf16 || !in_bf16);
    int64_t To = conv1d_out_len(Ti, K, stride, pad), R = (int64_t)B * To;
    if (R == 0) return;
    const ConvScratch s = conv_scratch(scratch, B, Ti, C, OC, K, stride, pad, G);
    if (conv_is_depthwise(C, OC, G)) {
        KOE_ASSERT(!in_bf16);
        conv_depthwise_forward(out, inp, weight, bias, B, Ti, To, C, K, stride, pad, s.wr);
        return;
    }
    const int Cg = C / G, OCg = OC / G;
    const int64_t KC = (int64_t)K * Cg;
    /* out starts as the bias; without one, the GEMMs write all of it (beta = 0) */
    const float beta0 = bias ? 1.0f : 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < R; r++) memcpy(out + r * OC, bias, (size_t)OC * sizeof(float));
    }
    if (conv_is_view(pad, G)) {
        conv_weight_to_wrt(s.wr, weight, OC, Cg, K);
        conv_view_forward(out, inp, in_bf16, beta0, B, Ti, To, C, OC, K, stride, &s);
        return;
    }
    const int64_t L = conv_packed_len_x(Ti, pad);
    conv_pack(s.xp, inp, in_bf16, B, Ti, C, L, pad, 1);
    const void *xp = conv_packed(s.xp, s.xb, (int64_t)B * C * L, col_bf16);
    const size_t es = col_bf16 ? sizeof(uint16_t) : sizeof(float);
    const int64_t RB = conv_block_rows(R, KC, OCg, 0), slot = conv_slot_floats(B, Ti, C, OC, K, stride, pad, G);
    const int slots = conv_slots(G);
#pragma omp parallel for schedule(dynamic, 1) num_threads(slots) if (slots > 1)
    for (int g = 0; g < G; g++) {
        float *colg = s.col + omp_get_thread_num() * slot;
        for (int64_t r0 = 0; r0 < R; r0 += RB) {
            const int64_t M = R - r0 < RB ? R - r0 : RB;
            conv_unfold(colg, xp, es, r0, M, To, L, C, Cg, K, stride, g);
            sgemm_mixed('N', 'T', M, OCg, KC, 1.0f, colg, col_bf16, KC, weight + (int64_t)g * OCg * KC, 0, KC, beta0,
                        out + r0 * OC + (int64_t)g * OCg, OC);
        }
    }
}

static void conv_backward(float *dinp, float *dweight, float *dbias, const void *dout, int dout_bf16, const void *inp,
                          int in_bf16, const float *weight, int B, int64_t Ti, int C, int OC, int K, int stride,
                          int pad, int G, float *scratch) {
    KOE_ASSERT(G > 0 && C % G == 0 && OC % G == 0 && K > 0 && stride > 0 && pad >= 0);
    const int col_bf16 = gemm_precision() == GEMM_BF16;
    KOE_ASSERT(col_bf16 || (!in_bf16 && !dout_bf16));
    int64_t To = conv1d_out_len(Ti, K, stride, pad), R = (int64_t)B * To;
    if (R == 0) return;
    const ConvScratch s = conv_scratch(scratch, B, Ti, C, OC, K, stride, pad, G);
    if (conv_is_depthwise(C, OC, G)) {
        KOE_ASSERT(!in_bf16 && !dout_bf16);
        conv_depthwise_backward(dinp, dweight, dbias, dout, inp, weight, B, Ti, To, C, K, stride, pad, s.wr);
        return;
    }
    const int Cg = C / G, OCg = OC / G;
    const int64_t KC = (int64_t)K * Cg, KCo = (int64_t)K * OCg;
    if (dbias) colsum_accumulate(dbias, dout, dout_bf16, R, OC, OC);
    if (!dinp && !dweight) return;
    if (conv_is_view(pad, G)) {
        if (dinp) conv_weight_to_wr(s.wr, weight, OC, Cg, K);
        if (dweight) memset(s.dwr, 0, (size_t)OC * KC * sizeof(float));
        conv_view_backward(dinp, dweight ? s.dwr : NULL, dout, dout_bf16, inp, in_bf16, B, Ti, To, C, OC, K, stride, &s);
        if (dweight) conv_wr_grad_accumulate(dweight, s.dwr, OC, Cg, K);
        return;
    }
    const size_t es = col_bf16 ? sizeof(uint16_t) : sizeof(float);
    const int64_t Lx = conv_packed_len_x(Ti, pad), Ld = conv_packed_len_d(Ti, K), Ri = (int64_t)B * Ti;
    const void *xp = NULL, *dp = NULL;
    if (dweight) {
        conv_pack(s.xp, inp, in_bf16, B, Ti, C, Lx, pad, 1);
        xp = conv_packed(s.xp, s.xb, (int64_t)B * C * Lx, col_bf16);
    }
    if (dinp) {
        conv_pack(s.dp, dout, dout_bf16, B, To, OC, Ld, K - 1 - pad, stride);
        dp = conv_packed(s.dp, s.db, (int64_t)B * OC * Ld, col_bf16);
        conv_weight_flip(s.wt, weight, G, Cg, OCg, K);
    }
    /* groups write disjoint rows of dweight and disjoint channels of dinp: no two threads meet */
    const int64_t RB = conv_block_rows(R, KC, OCg, 1), RBi = conv_block_rows(Ri, KCo, Cg, 0);
    const int64_t slot = conv_slot_floats(B, Ti, C, OC, K, stride, pad, G);
    const int slots = conv_slots(G);
#pragma omp parallel for schedule(dynamic, 1) num_threads(slots) if (slots > 1)
    for (int g = 0; g < G; g++) {
        float *colg = s.col + omp_get_thread_num() * slot;
        for (int64_t r0 = 0; dweight && r0 < R; r0 += RB) {
            const int64_t M = R - r0 < RB ? R - r0 : RB;
            const void *d = (const char *)dout + (size_t)(r0 * OC + (int64_t)g * OCg) * (dout_bf16 ? 2 : 4);
            conv_unfold(colg, xp, es, r0, M, To, Lx, C, Cg, K, stride, g);
            sgemm_mixed('T', 'N', OCg, KC, M, 1.0f, d, dout_bf16, OC, colg, col_bf16, KC, 1.0f,
                        dweight + (int64_t)g * OCg * KC, KC);
        }
        for (int64_t r0 = 0; dinp && r0 < Ri; r0 += RBi) {
            const int64_t M = Ri - r0 < RBi ? Ri - r0 : RBi;
            conv_unfold(colg, dp, es, r0, M, Ti, Ld, OC, OCg, K, 1, g);
            sgemm_mixed('N', 'N', M, Cg, KCo, 1.0f, colg, col_bf16, KCo, s.wt + (int64_t)g * Cg * KCo, 0, Cg, 1.0f,
                        dinp + r0 * C + (int64_t)g * Cg, C);
        }
    }
}

void conv1d_forward(float *out, const float *inp, const float *weight, const float *bias, int B, int64_t Ti,
                    int C, int OC, int K, int stride, int pad, int G, float *scratch) {
    conv_forward(out, inp, 0, weight, bias, B, Ti, C, OC, K, stride, pad, G, scratch);
}

void conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G,
                     float *scratch) {
    conv_backward(dinp, dweight, dbias, dout, 0, inp, 0, weight, B, Ti, C, OC, K, stride, pad, G, scratch);
}

void conv1d_forward_bf16in(float *out, const uint16_t *inp, const float *weight, const float *bias, int B,
                           int64_t Ti, int C, int OC, int K, int stride, int pad, int G, float *scratch) {
    conv_forward(out, inp, 1, weight, bias, B, Ti, C, OC, K, stride, pad, G, scratch);
}

void conv1d_backward_bf16in(float *dinp, float *dweight, float *dbias, const float *dout, const uint16_t *inp,
                            const float *weight, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G,
                            float *scratch) {
    conv_backward(dinp, dweight, dbias, dout, 0, inp, 1, weight, B, Ti, C, OC, K, stride, pad, G, scratch);
}

void conv1d_backward_bf16(float *dinp, float *dweight, float *dbias, const uint16_t *dout, const uint16_t *inp,
                          const float *weight, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G,
                          float *scratch) {
    conv_backward(dinp, dweight, dbias, dout, 1, inp, 1, weight, B, Ti, C, OC, K, stride, pad, G, scratch);
}

/* ---- layernorm ----------------------------------------------------------------------------------- */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int64_t N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *y = out + n * C;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) s += x[c];
        float m = s / C, v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float r = 1.0f / sqrtf(v / C + eps);
#pragma omp simd
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * r * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = r;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int64_t N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *x = inp + n * C, *d = dout + n * C;
            float m = mean[n], r = rstd[n], sd = 0.0f, sdx = 0.0f;
#pragma omp simd reduction(+ : sd, sdx)
            for (int c = 0; c < C; c++) {
                float dn = d[c] * weight[c];
                sd += dn;
                sdx += dn * (x[c] - m) * r;
            }
            sd /= C;
            sdx /= C;
            float *dx = dinp + n * C;
#pragma omp simd
            for (int c = 0; c < C; c++) dx[c] += r * (d[c] * weight[c] - sd - (x[c] - m) * r * sdx);
        }
    }
    if (dweight || dbias) {
        enum { CB = 64 };
#pragma omp parallel for schedule(dynamic, 1)
        for (int c0 = 0; c0 < C; c0 += CB) {
            int c1 = c0 + CB < C ? c0 + CB : C;
            double aw[CB] = {0}, ab[CB] = {0};
            for (int64_t n = 0; n < N; n++) {
                const float *x = inp + n * C, *d = dout + n * C;
                float m = mean[n], r = rstd[n];
#pragma omp simd
                for (int c = c0; c < c1; c++) {
                    aw[c - c0] += d[c] * (x[c] - m) * r;
                    ab[c - c0] += d[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dweight) dweight[c] += (float)aw[c - c0];
                if (dbias) dbias[c] += (float)ab[c - c0];
            }
        }
    }
}

/* ---- groupnorm (one group per channel): statistics of each (b, c) over T -------------------------- */

/* A job is one utterance's channels [c0, c0 + CB): at most GN_CB of them (the stack arrays), and as
 * many as leave every thread a job. Whole rows where the batch alone gives every thread one: a thread
 * that streams part of each row (layer 0, Base: 1 KB of every 2 KB) gets a third of the memory rate
 * that it gets from whole rows (the fused forward at 1 thread: 48 ms in half rows, 18 ms in whole). */
#define GN_CB 512
/* frames per float partial sum: blocks of GN_TB frames are summed in float (16 lanes at a time),
 * the blocks' sums in double */
#define GN_TB 64
static int groupnorm_block(int B, int C) {
    int nt = omp_get_max_threads(), nblk = (nt + B - 1) / B, cb = (C + nblk - 1) / nblk;
    cb = (cb + 15) / 16 * 16;
    return cb < GN_CB ? cb : GN_CB;
}

/* Values [c0, c1) of row o of an input that is bf16 when xb is set (widened into buf; xf unused), else
 * fp32 (in place): the loops below then run on floats either way. */
static inline const float *gn_row(const float *xf, const uint16_t *xb, int64_t o, int c0, int c1, float *buf) {
    if (!xb) return xf + o + c0;
#pragma omp simd
    for (int c = c0; c < c1; c++) buf[c - c0] = bf16_to_f32(xb[o + c]);
    return buf;
}

/* The forward, fp32 (xk NULL: out = the normalised inp), or fused for a bf16 run
 * (groupnorm_gelu_forward_bf16: inp rounded into xk, the statistics those of the kept values, the
 * normalised values rounded into nk, their GELU rounded into act; out unused). */
static void groupnorm_fwd(float *out, uint16_t *xk, uint16_t *nk, uint16_t *act, float *mean, float *rstd,
                          const float *inp, const float *weight, const float *bias, int B, int64_t T, int C,
                          float eps) {
    /* jobs of wide channel blocks (groupnorm_block). Sum and sum of squares in one pass, in float within
     * blocks of GN_TB frames and in double across them (var = E[x^2] - mean^2 loses nothing that
     * matters in double). */
    const int CB = groupnorm_block(B, C);
    int nblk = (C + CB - 1) / CB;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t job = 0; job < (int64_t)B * nblk; job++) {
        int64_t b = job / nblk;
        int c0 = (int)(job % nblk) * CB, c1 = c0 + CB < C ? c0 + CB : C;
        const int64_t o = b * T * C;
        const float *x = inp + o;
        uint16_t *xb = xk ? xk + o : NULL;
        double s[GN_CB] = {0}, q[GN_CB] = {0};
        float xw[GN_CB];
        for (int64_t tb = 0; tb < T; tb += GN_TB) {
            const int64_t te = tb + GN_TB < T ? tb + GN_TB : T;
            float fs[GN_CB] = {0}, fq[GN_CB] = {0};
            for (int64_t t = tb; t < te; t++) {
                if (xb) bf16_from_f32(xb + t * C + c0, x + t * C + c0, c1 - c0);
                const float *xr = gn_row(x, xb, t * C, c0, c1, xw);
#pragma omp simd
                for (int c = c0; c < c1; c++) {
                    float v = xr[c - c0];
                    fs[c - c0] += v;
                    fq[c - c0] += v * v;
                }
            }
            for (int c = c0; c < c1; c++) s[c - c0] += fs[c - c0], q[c - c0] += fq[c - c0];
        }
        float a[GN_CB], sh[GN_CB];
        for (int c = c0; c < c1; c++) {
            double m = s[c - c0] / (double)T, var = q[c - c0] / (double)T - m * m;
            float r = (float)(1.0 / sqrt((var > 0.0 ? var : 0.0) + eps));
            mean[b * C + c] = (float)m;
            rstd[b * C + c] = r;
            a[c - c0] = r * weight[c]; /* y = a * x + sh */
            sh[c - c0] = bias[c] - (float)m * a[c - c0];
        }
        for (int64_t t = 0; t < T; t++) {
            const float *xr = gn_row(x, xb, t * C, c0, c1, xw);
            if (!xb) {
                float *y = out + o + t * C;
#pragma omp simd
                for (int c = c0; c < c1; c++) y[c] = a[c - c0] * xr[c - c0] + sh[c - c0];
                continue;
            }
            float y[GN_CB];
            uint16_t *nr = nk + o + t * C + c0;
#pragma omp simd
            for (int c = c0; c < c1; c++) y[c - c0] = a[c - c0] * xr[c - c0] + sh[c - c0];
            bf16_from_f32(nr, y, c1 - c0);
#pragma omp simd
            for (int c = c0; c < c1; c++) y[c - c0] = gelu(bf16_to_f32(nr[c - c0]));
            bf16_from_f32(act + o + t * C + c0, y, c1 - c0);
        }
    }
}

void groupnorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int B, int64_t T, int C, float eps) {
    groupnorm_fwd(out, NULL, NULL, NULL, mean, rstd, inp, weight, bias, B, T, C, eps);
}

void groupnorm_gelu_forward_bf16(uint16_t *xk, uint16_t *nk, uint16_t *act, float *mean, float *rstd,
                                 const float *inp, const float *weight, const float *bias, int B, int64_t T, int C,
                                 float eps) {
    groupnorm_fwd(NULL, xk, nk, act, mean, rstd, inp, weight, bias, B, T, C, eps);
}

/* The backward. gk set (groupnorm_gelu_backward_bf16): dout is d of the GELU of the output, which is
 * kept in gk, and is overwritten row by row with d of the output, dout * GELU'(gk), before the rows
 * are read as the unfused backward reads them; else dout is only read. */
static void groupnorm_bwd(float *dinp, float *dweight, float *dbias, float *dout, const uint16_t *gk,
                          const float *inpf, const uint16_t *inpb, const float *weight, const float *mean,
                          const float *rstd, int B, int64_t T, int C) {
    KOE_ASSERT(C <= GROUPNORM_MAX_C);
    const int CB = groupnorm_block(B, C);
    const int nblk = (C + CB - 1) / CB;
    double aw[GROUPNORM_MAX_C], ab[GROUPNORM_MAX_C]; /* sums over the batch, in b order at any thread count */
    memset(aw, 0, (size_t)C * sizeof *aw), memset(ab, 0, (size_t)C * sizeof *ab);
#pragma omp parallel for ordered schedule(dynamic, 1)
    for (int64_t job = 0; job < (int64_t)B * nblk; job++) {
        const int64_t b = job / nblk;
        const int c0 = (int)(job % nblk) * CB, c1 = c0 + CB < C ? c0 + CB : C;
        const int64_t o = b * T * C;
        const float *x = inpb ? NULL : inpf + o;
        float *d = dout + o;
        const uint16_t *xb = inpb ? inpb + o : NULL, *g = gk ? gk + o : NULL;
        double sd[GN_CB] = {0}, sdx[GN_CB] = {0};
        const float *mb = mean + b * C, *rb = rstd + b * C;
        for (int64_t tb = 0; tb < T; tb += GN_TB) { /* float within GN_TB frames, as in forward */
            const int64_t te = tb + GN_TB < T ? tb + GN_TB : T;
            float fd[GN_CB] = {0}, fdx[GN_CB] = {0}, xw[GN_CB];
            for (int64_t t = tb; t < te; t++) {
                if (g)
#pragma omp simd
                    for (int c = c0; c < c1; c++) d[t * C + c] *= gelu_grad(bf16_to_f32(g[t * C + c]));
                const float *xr = gn_row(x, xb, t * C, c0, c1, xw);
#pragma omp simd
                for (int c = c0; c < c1; c++) {
                    float xh = (xr[c - c0] - mb[c]) * rb[c];
                    fd[c - c0] += d[t * C + c];
                    fdx[c - c0] += d[t * C + c] * xh;
                }
            }
            for (int c = c0; c < c1; c++) sd[c - c0] += fd[c - c0], sdx[c - c0] += fdx[c - c0];
        }
        if (dinp) {
            /* dxhat = d * w: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) */
            float k1[GN_CB], k2[GN_CB], wr[GN_CB], xw[GN_CB];
            for (int c = c0; c < c1; c++) {
                k1[c - c0] = (float)(sd[c - c0] / (double)T) * weight[c];
                k2[c - c0] = (float)(sdx[c - c0] / (double)T) * weight[c];
                wr[c - c0] = weight[c] * rb[c];
            }
            float *dx = dinp + o;
            for (int64_t t = 0; t < T; t++) {
                const float *xr = gn_row(x, xb, t * C, c0, c1, xw);
#pragma omp simd
                for (int c = c0; c < c1; c++) {
                    float r = rb[c], xh = (xr[c - c0] - mb[c]) * r;
                    dx[t * C + c] += wr[c - c0] * d[t * C + c] - r * (k1[c - c0] + xh * k2[c - c0]);
                }
            }
        }
#pragma omp ordered
        for (int c = c0; c < c1; c++) aw[c] += sdx[c - c0], ab[c] += sd[c - c0];
    }
    for (int c = 0; c < C; c++) {
        if (dweight) dweight[c] += (float)aw[c];
        if (dbias) dbias[c] += (float)ab[c];
    }
}

/* (the unfused backwards only read dout: groupnorm_bwd writes it only with gk) */
void groupnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int B, int64_t T, int C) {
    groupnorm_bwd(dinp, dweight, dbias, (float *)dout, NULL, inp, NULL, weight, mean, rstd, B, T, C);
}

void groupnorm_backward_bf16in(float *dinp, float *dweight, float *dbias, const float *dout, const uint16_t *inp,
                               const float *weight, const float *mean, const float *rstd, int B, int64_t T, int C) {
    groupnorm_bwd(dinp, dweight, dbias, (float *)dout, NULL, NULL, inp, weight, mean, rstd, B, T, C);
}

void groupnorm_gelu_backward_bf16(float *dinp, float *dweight, float *dbias, float *dout, const uint16_t *nk,
                                  const uint16_t *xk, const float *weight, const float *mean, const float *rstd,
                                  int B, int64_t T, int C) {
    groupnorm_bwd(dinp, dweight, dbias, dout, nk, NULL, xk, weight, mean, rstd, B, T, C);
}

/* ---- activations ---------------------------------------------------------------------------------- */

void gelu_forward(float *out, const float *inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = gelu(inp[i]);
}

/* values per job of gelu_forward_bf16 and gelu_backward_bf16: a stack buffer of floats between the
 * conversions */
#define GELU_BLOCK 1024

void gelu_forward_bf16(uint16_t *kept, uint16_t *out, const float *inp, int64_t n) {
    const int64_t nb = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * GELU_BLOCK, len = n - i0 < GELU_BLOCK ? n - i0 : GELU_BLOCK;
        float t[GELU_BLOCK];
        bf16_from_f32(kept + i0, inp + i0, len);
#pragma omp simd
        for (int64_t i = 0; i < len; i++) t[i] = gelu(bf16_to_f32(kept[i0 + i]));
        bf16_from_f32(out + i0, t, len);
    }
}

void gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) dinp[i] += dout[i] * gelu_grad(inp[i]);
}

void gelu_backward_inplace(float *d, const float *inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) d[i] *= gelu_grad(inp[i]);
}

void gelu_backward_bf16in(float *dinp, const float *dout, const uint16_t *inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) dinp[i] += dout[i] * gelu_grad(bf16_to_f32(inp[i]));
}

void gelu_backward_bf16(uint16_t *dinp, const float *dout, const uint16_t *inp, int64_t n) {
    const int64_t nb = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * GELU_BLOCK, len = n - i0 < GELU_BLOCK ? n - i0 : GELU_BLOCK;
        float t[GELU_BLOCK];
#pragma omp simd
        for (int64_t i = 0; i < len; i++) t[i] = dout[i0 + i] * gelu_grad(bf16_to_f32(inp[i0 + i]));
        bf16_from_f32(dinp + i0, t, len);
    }
}

/* swish's expf is libmvec's vector one (glibc, within 4 ulp; linked through libm). math.h declares it
 * SIMD-callable only under -ffast-math, which we do not use (NaN checks), so it is declared so here. */
#if defined(__GLIBC__) && defined(__x86_64__) && __GLIBC_PREREQ(2, 35)
float expf(float) __attribute__((simd("notinbranch")));
#endif
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void swish_forward(float *out, const float *inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = inp[i] * sigmoidf(inp[i]);
}

void swish_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float s = sigmoidf(inp[i]);
        dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
    }
}

void glu_forward(float *out, const float *inp, int64_t N, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *a = inp + n * 2 * C, *g = a + C;
        float *y = out + n * C;
        for (int c = 0; c < C; c++) y[c] = a[c] * sigmoidf(g[c]);
    }
}

void glu_backward(float *dinp, const float *dout, const float *inp, int64_t N, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *a = inp + n * 2 * C, *g = a + C, *d = dout + n * C;
        float *da = dinp + n * 2 * C, *dg = da + C;
        for (int c = 0; c < C; c++) {
            float s = sigmoidf(g[c]);
            da[c] += d[c] * s;
            dg[c] += d[c] * a[c] * s * (1.0f - s);
        }
    }
}

/* ---- dropout ---------------------------------------------------------------------------------------- */

/* 1 / (1 - p) for kept elements (0 when everything is dropped), and the keep threshold in 2^-24 units */
static float dropout_scale(float p) { return p >= 1.0f ? 0.0f : 1.0f / (1.0f - p); }

/* element i keeps its value: its number of the stream (koe_rng_u64 after i draws), inline so that the
 * loops below run as vectors */
static inline int dropout_keep(uint64_t key, int64_t i, uint64_t threshold) {
    return (koe_rng_number(key, (uint64_t)i + 1) >> 40) >= threshold;
}

static uint64_t dropout_threshold(float p) { return (uint64_t)ceil((double)p * 16777216.0); }

void dropout_forward(float *out, const float *inp, int64_t n, float p, uint64_t seed, uint64_t a, uint64_t b) {
    if (p <= 0.0f) {
        if (out != inp) memcpy(out, inp, (size_t)n * sizeof(float));
        return;
    }
    KoeRng base = koe_rng(seed, a, b, KOE_RNG_DROPOUT);
    uint64_t th = dropout_threshold(p);
    float s = dropout_scale(p);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = dropout_keep(base.key, i, th) ? inp[i] * s : 0.0f;
}

void dropout_backward(float *dinp, const float *dout, int64_t n, float p, uint64_t seed, uint64_t a, uint64_t b) {
    if (p <= 0.0f) {
        add_inplace(dinp, dout, n);
        return;
    }
    KoeRng base = koe_rng(seed, a, b, KOE_RNG_DROPOUT);
    uint64_t th = dropout_threshold(p);
    float s = dropout_scale(p);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) dinp[i] += dropout_keep(base.key, i, th) ? dout[i] * s : 0.0f;
}

/* ---- weight norm over dim 2 ------------------------------------------------------------------------- */

/* w[r][k] = v[r][k] * (g[k] / ||v[:, k]||) over the OC * Ci rows r (torch's _weight_norm, dim = 2: the
 * scale first, as there). The sums over rows stream the rows in WN_CHUNKS fixed chunks, each summed in
 * double in row order and the chunks added in order: the same bits at any thread count. At the Base
 * positional conv's 768 x 48 x 128 (bench_layers, 2 threads) this takes 1.3-1.4 ms forward and 2.0 ms
 * backward; blocks of 32 taps read with a stride of K floats in scalar loops (gcc -O2 left them so)
 * took 5 and 13-23 ms, and the same blocks as omp simd loops 2.5 and 7. */
enum { WN_CHUNKS = 16 };

/* the chunks' partial sums (WN_CHUNKS * K doubles), then the K per-tap values each pass derives */
int64_t weightnorm_scratch_floats(int K) { return (int64_t)(2 * WN_CHUNKS + 2) * K; }

/* sum[k] = the sum over rows of a[r][k] * b[r][k]; part: WN_CHUNKS * K doubles */
static void wn_colsum_product(double *sum, double *part, const float *a, const float *b, int64_t rows, int K) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < WN_CHUNKS; c++) {
        double *restrict p = part + (int64_t)c * K;
        memset(p, 0, sizeof(double) * K);
        for (int64_t r = rows * c / WN_CHUNKS; r < rows * (c + 1) / WN_CHUNKS; r++) {
            const float *restrict x = a + r * K, *restrict y = b + r * K;
#pragma omp simd
            for (int k = 0; k < K; k++) p[k] += (double)x[k] * y[k];
        }
    }
    for (int k = 0; k < K; k++) {
        sum[k] = 0;
        for (int c = 0; c < WN_CHUNKS; c++) sum[k] += part[(int64_t)c * K + k];
    }
}

void weightnorm_forward(float *w, float *norm, const float *g, const float *v, int OC, int Ci, int K,
                        float *scratch) {
    const int64_t rows = (int64_t)OC * Ci;
    double *part = (double *)scratch, *sq = part + (int64_t)WN_CHUNKS * K;
    wn_colsum_product(sq, part, v, v, rows, K);
    float *scale = scratch; /* over the partial sums, read no more */
    for (int k = 0; k < K; k++) norm[k] = (float)sqrt(sq[k]), scale[k] = g[k] / norm[k];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *restrict o = w + r * K;
        const float *restrict x = v + r * K;
#pragma omp simd
        for (int k = 0; k < K; k++) o[k] = x[k] * scale[k];
    }
}

/* with s[k] = sum over rows of dw * v: dg = s / norm, dv = g / norm * dw - g s / norm^3 * v */
void weightnorm_backward(float *dg, float *dv, const float *dw, const float *g, const float *v, const float *norm,
                         int OC, int Ci, int K, float *scratch) {
    const int64_t rows = (int64_t)OC * Ci;
    double *part = (double *)scratch, *s = part + (int64_t)WN_CHUNKS * K;
    wn_colsum_product(s, part, dw, v, rows, K);
    float *a = scratch, *b = scratch + K; /* over the partial sums, read no more */
    for (int k = 0; k < K; k++) {
        const float sk = (float)s[k], nk = norm[k];
        if (dg) dg[k] += sk / nk;
        a[k] = g[k] / nk, b[k] = g[k] * sk / (nk * nk * nk);
    }
    if (dv) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            float *restrict o = dv + r * K;
            const float *restrict d = dw + r * K, *restrict x = v + r * K;
#pragma omp simd
            for (int k = 0; k < K; k++) o[k] += a[k] * d[k] - b[k] * x[k];
        }
    }
}

/* ---- residual adds -------------------------------------------------------------------------------- */

void add_vectors(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void add_inplace(float *y, const float *x, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void axpy_inplace(float *y, float s, const float *x, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] += s * x[i];
}

/* ---- the objective heads' kernels ----------------------------------------------------------------- */

void rownorm_forward(float *out, float *norm, const float *inp, int64_t N, int C, float eps) {
    const double eps2 = (double)eps * eps;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *r = inp + i * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)r[c] * r[c];
        const float nrm = (float)sqrt(ss > eps2 ? ss : eps2), inv = 1.0f / nrm;
        norm[i] = nrm;
        float *o = out + i * C;
        for (int c = 0; c < C; c++) o[c] = r[c] * inv;
    }
}

void rownorm_backward(float *dinp, const float *dout, const float *out, const float *norm, int64_t N, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *h = out + i * C, *dh = dout + i * C;
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)h[c] * dh[c];
        const float inv = 1.0f / norm[i], fdot = (float)dot;
        float *d = dinp + i * C;
        for (int c = 0; c < C; c++) d[c] += (dh[c] - h[c] * fdot) * inv;
    }
}

int64_t softmax_xent_forward(float *prob, float *loss, const float *logit, const int32_t *target, int64_t N, int C) {
    int64_t top = 0;
#pragma omp parallel for schedule(static) reduction(+ : top)
    for (int64_t i = 0; i < N; i++) {
        const float *r = logit + i * C;
        const int y = target ? target[i] : 0;
        float mx = r[0];
        for (int k = 1; k < C; k++) mx = r[k] > mx ? r[k] : mx;
        top += r[y] >= mx;
        double s = 0.0;
        for (int k = 0; k < C; k++) s += exp((double)(r[k] - mx));
        const double lse = mx + log(s);
        loss[i] = (float)(lse - r[y]);
        float *p = prob + i * C; /* may be r: r[y] is read above */
        for (int k = 0; k < C; k++) p[k] = (float)exp(r[k] - lse);
    }
    return top;
}

void softmax_xent_backward(float *dlogit, const float *prob, const int32_t *target, float dloss, int64_t N, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *p = prob + i * C;
        float *d = dlogit + i * C;
        for (int k = 0; k < C; k++) d[k] = dloss * p[k];
        d[target ? target[i] : 0] -= dloss;
    }
}

void gather_rows_forward(float *out, const float *inp, const int32_t *idx, int64_t N, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) memcpy(out + i * C, inp + (int64_t)idx[i] * C, (size_t)C * sizeof(float));
}

void gather_rows_backward(float *dinp, const float *dout, const int32_t *idx, int64_t N, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        float *d = dinp + (int64_t)idx[i] * C;
        const float *src = dout + i * C;
        for (int c = 0; c < C; c++) d[c] += src[c];
    }
}

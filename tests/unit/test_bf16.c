/* test_bf16.c — the bf16 path of core/gemm.h (run.precision = bf16) and the layers over it, against
 * the fp32 path. The tolerances are derived from the rounding, not tuned:
 *
 *   u = 2^-8. bf16 keeps 8 significant bits, so rounding to nearest even gives r(x) = x (1 + d),
 *   |d| <= u. The product of two bf16 numbers is exact in fp32 (8 + 8 <= 24 bits), so an output of
 *   the bf16 GEMM, a sum of n terms (products, plus a bias or the C it adds onto), is
 *       s_bf16 = sum r(a_i) r(b_i) + e,   |e| <= g_n sum |r(a_i) r(b_i)|,   g_n = n 2^-24 / (1 - n 2^-24)
 *   (fp32 accumulation in any order); the fp32 path's error is <= g_n sum |a_i b_i| likewise. Hence
 *   (1) exact:   |s_bf16 - sum r(a_i) r(b_i)| <= g_n sum |r(a_i) r(b_i)|  (the operands, and nothing
 *                else, were rounded, to nearest even: truncation or a missed operand fails)
 *   (2) vs fp32: |s_bf16 - s_fp32| <= ((1 + u)^2 (1 + g_n) - 1 + g_n) sum |a_i b_i|
 *   (3) and bf16 really ran: some element of some output differs from fp32 by more than g_n sum|a b|
 *       allows the fp32 path alone.
 *   The sums of |a_i b_i| are the naive double kernels (layers_naive.c) run on |operands|.
 * Attention (forward) composes two GEMMs around the fp32 softmax; for query row i of a head, with
 *   S_ij = scale sum_c |q_ic k_jc| and D_i = ((1+u)^2 (1+g) - 1 + g) max_j S_ij bounding every
 *   score's change, each probability moves by at most p_ij (e^(2 D_i) - 1) (softmax of scores moved
 *   by <= D_i), plus each side's fp32 softmax error r = 5 2^-24 + g_T (exp within 4 ulp, division 1,
 *   the sum g_T) relative, and out = P V with both rounded:
 *       |out_bf16 - out_fp32| <= ((e^(2 D_i) - 1 + 2 r) (1+u)^2 + (1+u)^2 (1 + g) - 1 + g) sum_j p_ij |v_j|.
 * Attention backward takes each path's own probabilities, so with dP = dO V^T, r_i = sum_k p_ik dP_ik
 *   and dS = P (dP - r), the measured |dp| = |p_bf16 - p_fp32| propagates: dP moves by at most
 *   E = (b(Dh+1) + g) sum_c |dO_c V_c| (b(n) the bound of (2) without the sum), r by
 *   R_i = sum_k (|dp| (|dP| + E) + p E) + 2 g_T sum_k (p + |dp|)(|dP| + E), dS by
 *   Z = |dp| (|dP| + E + |r| + R) + p (E + R) + 3 2^-24 (p + |dp|)(|dP| + E + |r| + R), and then
 *   dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO (both operands rounded) by
 *       scale sum_j (Z (1+u)^2 + A ((1+u)^2 - 1) + 2 g_T (A + Z)(1+u)^2) |K_j|,  A = p (|dP| + |r|),
 *   and sum_i (|dp| (1+u)^2 + p ((1+u)^2 - 1) + 2 g_T (p + |dp|)(1+u)^2) |dO_i|.
 * The conversion itself: the AVX512_BF16 path and the scalar loop give the same bits for normal,
 * subnormal, tie, infinite and NaN inputs. */
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
#include "../../core/layers.h"
#include "../../core/layers_naive.h"
#include "../../core/rng.h"
#include "bf16_here.h"

static const double U = 1.0 / 256.0; /* 2^-8 */

static double gam(int64_t n) { return n * 0x1p-24 / (1.0 - n * 0x1p-24); }
static double bound2(int64_t n) { return (1 + U) * (1 + U) * (1 + gam(n)) - 1 + gam(n); }

static float rnd(float x) {
    uint16_t h;
    bf16_from_f32_scalar(&h, &x, 1);
    return bf16_to_f32(h);
}

static void fill(float *x, int64_t n, double scale, KoeRng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * koe_rng_normal(r));
}

/* as double: the values, their bf16 roundings, and their magnitudes (plain and rounded) */
typedef struct {
    double *v, *r, *a, *ra;
} Views;

static Views views(const float *x, int64_t n) {
    Views w = {koe_malloc((size_t)n * sizeof(double)), koe_malloc((size_t)n * sizeof(double)),
               koe_malloc((size_t)n * sizeof(double)), koe_malloc((size_t)n * sizeof(double))};
    for (int64_t i = 0; i < n; i++) {
        w.v[i] = x[i];
        w.r[i] = rnd(x[i]);
        w.a[i] = fabs(w.v[i]);
        w.ra[i] = fabs(w.r[i]);
    }
    return w;
}

static void views_free(Views *w) { free(w->v), free(w->r), free(w->a), free(w->ra); }

static double *dzeros(int64_t n) { return koe_calloc((size_t)n, sizeof(double)); }

/* Checks (1) and (2) on one output tensor of n elements, each a sum of `terms` terms; exact = the
 * naive result on rounded operands, absr/abs = on |rounded| and |plain| operands. Returns how many
 * elements differ from fp32 by more than the fp32 path alone could (check 3 sums these). */
static int64_t check_tensor(const char *what, const float *b16, const float *f32, const double *exact,
                            const double *absr, const double *abs_, int64_t n, int64_t terms) {
    double w1 = 0, w2 = 0; /* worst ratio error / bound */
    int64_t beyond = 0, at1 = 0, at2 = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e1 = fabs(b16[i] - exact[i]) / (gam(terms) * absr[i] + 1e-300);
        const double e2 = fabs((double)b16[i] - f32[i]) / (bound2(terms) * abs_[i] + 1e-300);
        if (!(e1 <= w1)) w1 = e1, at1 = i;
        if (!(e2 <= w2)) w2 = e2, at2 = i;
        beyond += fabs((double)b16[i] - f32[i]) > 2 * gam(terms) * abs_[i];
    }
    printf("%-28s n=%-7lld terms=%-5lld exact: worst err/bound %.3f at %lld; vs fp32: worst err/bound %.3f at %lld; "
           "%lld beyond fp32's own error\n",
           what, (long long)n, (long long)terms, w1, (long long)at1, w2, (long long)at2, (long long)beyond);
    assert_true(w1 <= 1.0);
    assert_true(w2 <= 1.0);
    return beyond;
}

/* ---- the conversion --------------------------------------------------------------------------------- */

static void test_conversion(void **state) {
    (void)state;
    enum { N = 4099 }; /* not a multiple of 16 or 32: the masked tail runs */
    float *x = koe_malloc(N * sizeof(float));
    KoeRng r = koe_rng(5, 0, 0, KOE_RNG_INIT);
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)koe_rng_u64(&r);
        if (i % 3 == 0) u = (u & 0xffff0000u) | 0x8000u; /* exact ties: even goes down, odd up */
        memcpy(&x[i], &u, sizeof u);                     /* every pattern: NaN, inf, subnormal too */
    }
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 3.3895314e38f, 1.0f, -1.0f};
    memcpy(x, special, sizeof special);
    uint16_t *a = koe_malloc(N * sizeof(uint16_t)), *b = koe_malloc(N * sizeof(uint16_t));
    bf16_from_f32(a, x, N);
    bf16_from_f32_scalar(b, x, N);
    for (int i = 0; i < N; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        if (a[i] != b[i]) fail_msg("element %d: %08x -> dispatched %04x, scalar %04x", i, bits, a[i], b[i]);
    }
    /* round to nearest even on finite normals, by the definition */
    for (int i = 0; i < N; i++) {
        if (!isnormal(x[i])) continue;
        const double v = x[i], lo = bf16_to_f32((uint16_t)(b[i] - 1)), hi = bf16_to_f32((uint16_t)(b[i] + 1)),
                     got = bf16_to_f32(b[i]);
        if (isinf(got)) continue; /* rounded past the largest bf16 */
        assert_true(fabs(got - v) <= fabs(v - lo) || isinf(lo));
        assert_true(fabs(got - v) <= fabs(hi - v) || isinf(hi));
        if (fabs(got - v) == fabs(v - lo) || fabs(got - v) == fabs(hi - v)) assert_true((b[i] & 1) == 0);
    }
    assert_true(b[4] != 0 && isnan(bf16_to_f32(b[4])));
    assert_true(b[5] == 0 && b[6] == 0x8000); /* subnormals to signed zero, as VCVTNEPS2BF16 */
    free(x), free(a), free(b);
}

/* ---- the GEMM: every transposition, a leading dimension wider than the matrix, inside a parallel region */

static void test_gemm(void **state) {
    (void)state;
    if (!bf16_here(__func__)) skip();
    const int64_t M = 37, N = 29, K = 300, pad = 3;
    KoeRng r = koe_rng(6, 0, 0, KOE_RNG_INIT);
    float *A = koe_malloc((size_t)(M + pad) * (K + pad) * sizeof(float));
    float *B = koe_malloc((size_t)(N + pad) * (K + pad) * sizeof(float));
    float *C0 = koe_malloc((size_t)M * N * sizeof(float)), *C16 = koe_malloc((size_t)M * N * sizeof(float)),
          *C32 = koe_malloc((size_t)M * N * sizeof(float));
    fill(A, (M + pad) * (K + pad), 1.0, &r);
    fill(B, (N + pad) * (K + pad), 1.0, &r);
    fill(C0, M * N, 1.0, &r);
    int64_t beyond = 0;
    for (int t = 0; t < 8; t++) {
        const char ta = t & 1 ? 'T' : 'N', tb = t & 2 ? 'T' : 'N';
        const int par = t & 4;
        const int64_t lda = (ta == 'N' ? K : M) + pad, ldb = (tb == 'N' ? N : K) + pad;
        const float alpha = 0.75f, beta = 1.0f;
        memcpy(C16, C0, (size_t)M * N * sizeof(float));
        memcpy(C32, C0, (size_t)M * N * sizeof(float));
        GemmPrecision old = gemm_set_precision(GEMM_BF16);
        assert_int_equal(old, GEMM_FP32);
        if (par) { /* as attention and the grouped conv call it: one thread, in a parallel region */
#pragma omp parallel num_threads(2)
#pragma omp single
            sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C16, N);
        } else {
            sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C16, N);
        }
        gemm_set_precision(GEMM_FP32);
        sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C32, N);
        double *ex = dzeros(M * N), *absr = dzeros(M * N), *abs_ = dzeros(M * N);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0, sr = 0, sa = 0;
                for (int64_t k = 0; k < K; k++) {
                    const float a = ta == 'N' ? A[i * lda + k] : A[k * lda + i];
                    const float b = tb == 'N' ? B[k * ldb + j] : B[j * ldb + k];
                    s += (double)rnd(a) * rnd(b), sr += fabs((double)rnd(a) * rnd(b)), sa += fabs((double)a * b);
                }
                ex[i * N + j] = alpha * s + beta * C0[i * N + j];
                absr[i * N + j] = alpha * sr + fabs(beta * C0[i * N + j]);
                abs_[i * N + j] = alpha * sa + fabs(beta * C0[i * N + j]);
            }
        char what[64];
        snprintf(what, sizeof what, "gemm %c%c%s", ta, tb, par ? " in parallel" : "");
        beyond += check_tensor(what, C16, C32, ex, absr, abs_, M * N, K + 2);
        free(ex), free(absr), free(abs_);
    }
    assert_true(beyond > 0);
    free(A), free(B), free(C0), free(C16), free(C32);
}

/* The copy's refresh (bf16_from_f32_ranges, non-temporal stores from each 64-byte boundary on where
 * the CPU has AVX512_BF16): the bits of bf16_from_f32 inside the ranges, from any start (the regular
 * stores before the first boundary, the masked tail after the last whole 32 values), nothing outside
 * them; from serial code, in one part and in parts split over the threads (>= 2^16 values), and
 * inside a parallel region, each thread its own blocks, fenced before the region ends. */
static void test_copy_refresh(void **state) {
    (void)state;
    enum { N = 3 * 65536 + 777 };
    KoeRng r = koe_rng(6, 2, 0, KOE_RNG_INIT);
    float *x = koe_malloc(N * sizeof(float));
    fill(x, N, 1.0, &r);
    uint16_t *want = koe_malloc(N * sizeof(uint16_t)), *got = koe_malloc(N * sizeof(uint16_t));
    for (int start = 0; start < 40; start += 3) {
        for (int len = 0; len < 70; len += 7) { /* short runs: head and tail only, or one block between */
            const int64_t rg[4] = {start, start + len, start + len + 5, N - start};
            memset(got, 0xab, N * sizeof(uint16_t));
            bf16_from_f32_ranges(got, x, rg, 2, 0, N);
            memset(want, 0xab, N * sizeof(uint16_t));
            bf16_from_f32(want + rg[0], x + rg[0], rg[1] - rg[0]);
            bf16_from_f32(want + rg[2], x + rg[2], rg[3] - rg[2]);
            assert_memory_equal(got, want, N * sizeof(uint16_t));
        }
    }
    /* inside a parallel region, in blocks of 4099 (AdamW's pass calls it so), lo/hi cutting the ranges */
    const int64_t rg[4] = {17, 100000, 100031, N - 3};
    memset(got, 0xab, N * sizeof(uint16_t));
    enum { BLK = 4099 };
#pragma omp parallel num_threads(2)
    {
#pragma omp for schedule(static) nowait
        for (int64_t b = 0; b < N; b += BLK) bf16_from_f32_ranges(got, x, rg, 2, b, b + BLK < N ? b + BLK : N);
        bf16_stream_fence();
    }
    memset(want, 0xab, N * sizeof(uint16_t));
    bf16_from_f32(want + rg[0], x + rg[0], rg[1] - rg[0]);
    bf16_from_f32(want + rg[2], x + rg[2], rg[3] - rg[2]);
    assert_memory_equal(got, want, N * sizeof(uint16_t));
    free(x), free(want), free(got);
}

/* The registered bf16 copy (gemm_set_bf16_copy): an operand inside one of its ranges is read from the
 * copy, at its offset and leading dimension, giving the bits of rounding it into staging; one reaching
 * past a range's end, or across two ranges, is staged. The copy here holds another matrix's rounding
 * (B2), so which one was read shows in the result. */
static void test_bf16_copy(void **state) {
    (void)state;
    if (!bf16_here(__func__)) skip();
    const int64_t M = 23, N = 31, K = 150, pad = 5, nb = (N + pad) * (K + pad);
    KoeRng r = koe_rng(6, 1, 0, KOE_RNG_INIT);
    float *A = koe_malloc((size_t)(M + pad) * (K + pad) * sizeof(float));
    float *B = koe_malloc((size_t)nb * sizeof(float)), *B2 = koe_malloc((size_t)nb * sizeof(float));
    float *C1 = koe_malloc((size_t)M * N * sizeof(float)), *C2 = koe_malloc((size_t)M * N * sizeof(float));
    uint16_t *copy = koe_malloc((size_t)nb * sizeof(uint16_t));
    fill(A, (M + pad) * (K + pad), 1.0, &r);
    fill(B, nb, 1.0, &r);
    fill(B2, nb, 1.0, &r);
    bf16_from_f32(copy, B2, nb);
    gemm_set_precision(GEMM_BF16);
    for (int t = 0; t < 4; t++) {
        const char ta = t & 1 ? 'T' : 'N', tb = t & 2 ? 'T' : 'N';
        const int64_t lda = (ta == 'N' ? K : M) + pad, ldb = (tb == 'N' ? N : K) + pad;
        const int64_t off = pad; /* the operand starts inside the region, not at its start */
        const int64_t end = off + ((tb == 'N' ? K : N) - 1) * ldb + (tb == 'N' ? N : K); /* one past its last element */
        KOE_ASSERT(end <= nb);
        /* read from the copy: the bits of B2's product */
        gemm_set_bf16_copy(B, copy, (int64_t[]){0, nb}, 1);
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B + off, ldb, 0.0f, C1, N);
        gemm_set_bf16_copy(NULL, NULL, NULL, 0);
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B2 + off, ldb, 0.0f, C2, N);
        assert_memory_equal(C1, C2, (size_t)M * N * sizeof(float));
        /* the range ends one element before the operand does: staged from B itself */
        gemm_set_bf16_copy(B, copy, (int64_t[]){0, end - 1}, 1);
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B + off, ldb, 0.0f, C1, N);
        gemm_set_bf16_copy(NULL, NULL, NULL, 0);
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B + off, ldb, 0.0f, C2, N);
        assert_memory_equal(C1, C2, (size_t)M * N * sizeof(float));
        /* two ranges meeting inside the operand: staged */
        gemm_set_bf16_copy(B, copy, (int64_t[]){0, off + 1, off + 1, nb}, 2);
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B + off, ldb, 0.0f, C1, N);
        gemm_set_bf16_copy(NULL, NULL, NULL, 0);
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B + off, ldb, 0.0f, C2, N);
        assert_memory_equal(C1, C2, (size_t)M * N * sizeof(float));
        /* ... and a range from the operand's first element exactly to its end, after another: from the copy */
        gemm_set_bf16_copy(B, copy, (int64_t[]){0, 1, off, end}, 2);
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B + off, ldb, 0.0f, C1, N);
        gemm_set_bf16_copy(NULL, NULL, NULL, 0);
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B2 + off, ldb, 0.0f, C2, N);
        assert_memory_equal(C1, C2, (size_t)M * N * sizeof(float));
    }
    gemm_set_precision(GEMM_FP32);
    free(A), free(B), free(B2), free(C1), free(C2), free(copy);
}

/* ---- linear and conv1d: forward and backward ----------------------------------------------------------- */

typedef struct {
    int B, C, OC, K, stride, pad, G, bias;
    int64_t Ti;
} ConvCase;

/* One bilinear layer run four ways: fast bf16, fast fp32, naive on rounded operands, naive on |.|. */
typedef struct {
    int64_t n_in, n_w, n_out;
    float *x, *w, *bias, *dout;
} Operands;

static void run_conv(const ConvCase *c, float *out, float *dx, float *dw, float *db, const Operands *o) {
    int64_t ns = conv1d_scratch_floats(c->B, c->Ti, c->C, c->OC, c->K, c->stride, c->pad, c->G);
    float *scratch = koe_malloc((size_t)(ns > 0 ? ns : 1) * sizeof(float));
    conv1d_forward(out, o->x, o->w, c->bias ? o->bias : NULL, c->B, c->Ti, c->C, c->OC, c->K, c->stride, c->pad, c->G,
                   scratch);
    conv1d_backward(dx, dw, c->bias ? db : NULL, o->dout, o->x, o->w, c->B, c->Ti, c->C, c->OC, c->K, c->stride,
                    c->pad, c->G, scratch);
    free(scratch);
}

static void naive_conv(const ConvCase *c, double *out, double *dx, double *dw, double *db, const double *x,
                       const double *w, const double *bias, const double *dout) {
    conv1d_forward_naive(out, x, w, c->bias ? bias : NULL, c->B, c->Ti, c->C, c->OC, c->K, c->stride, c->pad, c->G);
    conv1d_backward_naive(dx, dw, c->bias ? db : NULL, dout, x, w, c->B, c->Ti, c->C, c->OC, c->K, c->stride, c->pad,
                          c->G);
}

/* Linear is the conv with K = 1, Ti = N frames: checked through linear_* with the same operands. */
static void run_case(const ConvCase *c, int linear, int64_t *beyond) {
    const int64_t To = conv1d_out_len(c->Ti, c->K, c->stride, c->pad);
    Operands o = {.n_in = (int64_t)c->B * c->Ti * c->C, .n_w = (int64_t)c->OC * (c->C / c->G) * c->K,
                  .n_out = (int64_t)c->B * To * c->OC};
    KoeRng r = koe_rng(7, (uint64_t)c->C, (uint64_t)c->K, KOE_RNG_INIT);
    o.x = koe_malloc((size_t)o.n_in * sizeof(float)), o.w = koe_malloc((size_t)o.n_w * sizeof(float));
    o.bias = koe_malloc((size_t)c->OC * sizeof(float)), o.dout = koe_malloc((size_t)o.n_out * sizeof(float));
    fill(o.x, o.n_in, 1.0, &r), fill(o.w, o.n_w, 0.3, &r), fill(o.bias, c->OC, 1.0, &r), fill(o.dout, o.n_out, 1.0, &r);
    float *res[2][4]; /* [bf16, fp32][out, dx, dw, db] */
    for (int p = 0; p < 2; p++) {
        res[p][0] = koe_malloc((size_t)o.n_out * sizeof(float));
        res[p][1] = koe_calloc((size_t)o.n_in, sizeof(float));
        res[p][2] = koe_calloc((size_t)o.n_w, sizeof(float));
        res[p][3] = koe_calloc((size_t)c->OC, sizeof(float));
        gemm_set_precision(p == 0 ? GEMM_BF16 : GEMM_FP32);
        if (linear) {
            const int64_t N = (int64_t)c->B * c->Ti;
            linear_forward(res[p][0], o.x, o.w, c->bias ? o.bias : NULL, N, c->C, c->OC);
            linear_backward(res[p][1], res[p][2], c->bias ? res[p][3] : NULL, o.dout, o.x, o.w, N, c->C, c->OC);
        } else {
            run_conv(c, res[p][0], res[p][1], res[p][2], res[p][3], &o);
        }
    }
    gemm_set_precision(GEMM_FP32);
    Views x = views(o.x, o.n_in), w = views(o.w, o.n_w), b = views(o.bias, c->OC), d = views(o.dout, o.n_out);
    double *ref[3][4]; /* [exact on rounded, |rounded|, |plain|][out, dx, dw, db] */
    for (int k = 0; k < 3; k++) {
        ref[k][0] = dzeros(o.n_out), ref[k][1] = dzeros(o.n_in), ref[k][2] = dzeros(o.n_w), ref[k][3] = dzeros(c->OC);
        const double *xs = k == 0 ? x.r : k == 1 ? x.ra : x.a, *ws = k == 0 ? w.r : k == 1 ? w.ra : w.a;
        const double *bs = k == 0 ? b.v : b.a, *ds = k == 0 ? d.r : k == 1 ? d.ra : d.a;
        naive_conv(c, ref[k][0], ref[k][1], ref[k][2], ref[k][3], xs, ws, bs, ds);
    }
    char what[96];
    const int Cg = c->C / c->G;
    const int64_t terms[3] = {(int64_t)c->K * Cg + 2, (int64_t)c->K * c->OC / c->G + 2, (int64_t)c->B * To + 2};
    const char *names[3] = {"out", "dinp", "dweight"};
    for (int t = 0; t < 3; t++) {
        snprintf(what, sizeof what, "%s C=%d OC=%d K=%d s=%d G=%d %s", linear ? "linear" : "conv", c->C, c->OC, c->K,
                 c->stride, c->G, names[t]);
        const int64_t n = t == 0 ? o.n_out : t == 1 ? o.n_in : o.n_w;
        if (c->G == c->C && c->OC == c->C && !linear) { /* depthwise: no GEMM, so fp32 bit for bit */
            assert_memory_equal(res[0][t], res[1][t], (size_t)n * sizeof(float));
            printf("%-28s depthwise: bit-identical to fp32\n", what);
            continue;
        }
        if (!linear && t == 2 && c->G == 1 && c->pad == 0 && c->K * c->C < 64) {
            /* the first waveform layer's weight gradient stays fp32 (layers.c, conv_view_backward); the
             * utterances here are one block, so the same products as the fp32 run's */
            assert_memory_equal(res[0][t], res[1][t], (size_t)n * sizeof(float));
            printf("%-28s a few columns from fp32 operands: bit-identical to fp32\n", what);
            continue;
        }
        *beyond += check_tensor(what, res[0][t], res[1][t], ref[0][t], ref[1][t], ref[2][t], n, terms[t]);
    }
    /* the bias gradient is a column sum of dout in fp32, not a GEMM: the same bits as fp32 */
    if (c->bias) assert_memory_equal(res[0][3], res[1][3], (size_t)c->OC * sizeof(float));
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++) free(ref[k][j]);
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 4; j++) free(res[p][j]);
    views_free(&x), views_free(&w), views_free(&b), views_free(&d);
    free(o.x), free(o.w), free(o.bias), free(o.dout);
}

static void test_linear_conv(void **state) {
    (void)state;
    if (!bf16_here(__func__)) skip();
    const ConvCase lin[] = {{2, 96, 40, 1, 1, 0, 1, 1, 33}, {1, 20, 130, 1, 1, 0, 1, 0, 7}};
    const ConvCase conv[] = {
        {2, 1, 16, 10, 5, 0, 1, 0, 400},  /* the waveform's first layer: read in place, fp32 weight gradient */
        {2, 40, 48, 3, 2, 0, 1, 1, 90},   /* the conv stack: read in place */
        {1, 22, 4, 3, 2, 0, 1, 1, 140001}, /* one long utterance: rounded in blocks of CONV_BLOCK_FLOATS / 66 rows */
        {2, 32, 32, 8, 1, 4, 4, 1, 50},   /* the positional conv: grouped, padded, unfolded */
        {2, 24, 24, 5, 1, 2, 24, 1, 40},  /* the conformer's depthwise conv */
    };
    int64_t beyond = 0;
    for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) run_case(&lin[i], 1, &beyond);
    for (size_t i = 0; i < sizeof conv / sizeof *conv; i++) run_case(&conv[i], 0, &beyond);
    assert_true(beyond > 0);
}

/* ---- inputs kept in bf16 ------------------------------------------------------------------------------ */

/* A bf16 run keeps the waveform stack's GELU outputs in bf16 and convolves them
 * with conv1d_*_bf16in, and each transformer layer's q|k|v and output_dense input with
 * attention_*_bf16qkv and linear_*_bf16in: the input is only a GEMM operand, rounded anyway, so every
 * output must be the fp32-input call's, bit for bit. */
static void test_bf16_inputs(void **state) {
    (void)state;
    if (!bf16_here(__func__)) skip();
    const ConvCase cases[] = {
        {2, 40, 48, 3, 2, 0, 1, 1, 90},  /* the conv stack: G = 1, one run of rows per window */
        {3, 40, 24, 2, 2, 0, 1, 0, 41},  /* odd lengths, no bias */
        {2, 32, 32, 8, 1, 4, 4, 1, 50},  /* grouped and padded: unfolded */
    };
    KoeRng r = koe_rng(8, 0, 0, KOE_RNG_INIT);
    gemm_set_precision(GEMM_BF16);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const ConvCase *c = &cases[i];
        const int64_t To = conv1d_out_len(c->Ti, c->K, c->stride, c->pad), n_in = (int64_t)c->B * c->Ti * c->C;
        const int64_t n_w = (int64_t)c->OC * (c->C / c->G) * c->K, n_out = (int64_t)c->B * To * c->OC;
        float *x = koe_malloc((size_t)n_in * sizeof(float)), *w = koe_malloc((size_t)n_w * sizeof(float));
        float *bias = koe_malloc((size_t)c->OC * sizeof(float)), *dout = koe_malloc((size_t)n_out * sizeof(float));
        uint16_t *xb = koe_malloc((size_t)n_in * sizeof(uint16_t));
        fill(x, n_in, 1.0, &r), fill(w, n_w, 0.3, &r), fill(bias, c->OC, 1.0, &r), fill(dout, n_out, 1.0, &r);
        bf16_from_f32(xb, x, n_in);
        const int64_t ns = conv1d_scratch_floats(c->B, c->Ti, c->C, c->OC, c->K, c->stride, c->pad, c->G);
        float *scratch = koe_malloc((size_t)ns * sizeof(float)), *res[2][4];
        for (int p = 0; p < 2; p++) {
            res[p][0] = koe_malloc((size_t)n_out * sizeof(float));
            res[p][1] = koe_calloc((size_t)n_in, sizeof(float));
            res[p][2] = koe_calloc((size_t)n_w, sizeof(float));
            res[p][3] = koe_calloc((size_t)c->OC, sizeof(float));
            const float *b = c->bias ? bias : NULL;
            float *db = c->bias ? res[p][3] : NULL;
            if (p == 0) {
                conv1d_forward_bf16in(res[p][0], xb, w, b, c->B, c->Ti, c->C, c->OC, c->K, c->stride, c->pad, c->G,
                                      scratch);
                conv1d_backward_bf16in(res[p][1], res[p][2], db, dout, xb, w, c->B, c->Ti, c->C, c->OC, c->K,
                                       c->stride, c->pad, c->G, scratch);
            } else {
                conv1d_forward(res[p][0], x, w, b, c->B, c->Ti, c->C, c->OC, c->K, c->stride, c->pad, c->G, scratch);
                conv1d_backward(res[p][1], res[p][2], db, dout, x, w, c->B, c->Ti, c->C, c->OC, c->K, c->stride,
                                c->pad, c->G, scratch);
            }
        }
        assert_memory_equal(res[0][0], res[1][0], (size_t)n_out * sizeof(float));
        assert_memory_equal(res[0][1], res[1][1], (size_t)n_in * sizeof(float));
        assert_memory_equal(res[0][2], res[1][2], (size_t)n_w * sizeof(float));
        assert_memory_equal(res[0][3], res[1][3], (size_t)c->OC * sizeof(float));
        printf("conv C=%d OC=%d K=%d s=%d G=%d from a bf16 input: bit-identical to the fp32 input's\n", c->C, c->OC,
               c->K, c->stride, c->G);
        for (int p = 0; p < 2; p++)
            for (int j = 0; j < 4; j++) free(res[p][j]);
        free(x), free(w), free(bias), free(dout), free(xb), free(scratch);
    }
    /* linear (output_dense's input kept in bf16) */
    const int64_t N = 37;
    const int C = 70, OC = 29;
    float *x = koe_malloc((size_t)N * C * sizeof(float)), *w = koe_malloc((size_t)OC * C * sizeof(float));
    float *bias = koe_malloc((size_t)OC * sizeof(float)), *dout = koe_malloc((size_t)N * OC * sizeof(float));
    uint16_t *xb = koe_malloc((size_t)N * C * sizeof(uint16_t));
    fill(x, N * C, 1.0, &r), fill(w, (int64_t)OC * C, 0.3, &r), fill(bias, OC, 1.0, &r), fill(dout, N * OC, 1.0, &r);
    bf16_from_f32(xb, x, N * C);
    float *res[2][4];
    for (int p = 0; p < 2; p++) {
        res[p][0] = koe_malloc((size_t)N * OC * sizeof(float));
        res[p][1] = koe_calloc((size_t)N * C, sizeof(float));
        res[p][2] = koe_calloc((size_t)OC * C, sizeof(float));
        res[p][3] = koe_calloc((size_t)OC, sizeof(float));
        if (p == 0) {
            linear_forward_bf16in(res[p][0], xb, w, bias, N, C, OC);
            linear_backward_bf16in(res[p][1], res[p][2], res[p][3], dout, xb, w, N, C, OC);
        } else {
            linear_forward(res[p][0], x, w, bias, N, C, OC);
            linear_backward(res[p][1], res[p][2], res[p][3], dout, x, w, N, C, OC);
        }
    }
    assert_memory_equal(res[0][0], res[1][0], (size_t)N * OC * sizeof(float));
    assert_memory_equal(res[0][1], res[1][1], (size_t)N * C * sizeof(float));
    assert_memory_equal(res[0][2], res[1][2], (size_t)OC * C * sizeof(float));
    assert_memory_equal(res[0][3], res[1][3], (size_t)OC * sizeof(float));
    printf("linear C=%d OC=%d from a bf16 input: bit-identical to the fp32 input's\n", C, OC);
    /* dout in bf16 (intermediate_dense's, from gelu_backward_bf16): the fp32 call's bits on its values */
    uint16_t *db16 = koe_malloc((size_t)N * OC * sizeof(uint16_t));
    bf16_round_f32(db16, dout, N * OC);
    for (int p = 0; p < 2; p++) {
        for (int j = 1; j < 4; j++) memset(res[p][j], 0, (size_t)(j == 1 ? N * C : j == 2 ? OC * C : OC) * sizeof(float));
        if (p == 0) linear_backward_bf16dout(res[p][1], res[p][2], res[p][3], db16, x, w, N, C, OC);
        else linear_backward(res[p][1], res[p][2], res[p][3], dout, x, w, N, C, OC);
    }
    assert_memory_equal(res[0][1], res[1][1], (size_t)N * C * sizeof(float));
    assert_memory_equal(res[0][2], res[1][2], (size_t)OC * C * sizeof(float));
    assert_memory_equal(res[0][3], res[1][3], (size_t)OC * sizeof(float));
    printf("linear C=%d OC=%d backward from a bf16 dout: bit-identical to the fp32 call on its values\n", C, OC);
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 4; j++) free(res[p][j]);
    free(x), free(w), free(bias), free(dout), free(xb), free(db16);
    /* attention (q|k|v kept in bf16), with dropout and a padded utterance */
    const int Bq = 2, Cq = 32, Hq = 4;
    const int64_t Tq = 19, nq = (int64_t)Bq * Tq * 3 * Cq, no = (int64_t)Bq * Tq * Cq, na = (int64_t)Bq * Hq * Tq * Tq;
    float *qkv = koe_malloc((size_t)nq * sizeof(float)), *dO = koe_malloc((size_t)no * sizeof(float));
    uint16_t *qkvb = koe_malloc((size_t)nq * sizeof(uint16_t));
    uint8_t pad[2 * 19] = {0};
    for (int64_t t = 15; t < Tq; t++) pad[Tq + t] = 1;
    fill(qkv, nq, 1.0, &r), fill(dO, no, 1.0, &r);
    bf16_from_f32(qkvb, qkv, nq);
    float *scr = koe_malloc((size_t)attention_scratch_floats(Bq, Tq, Cq, Hq) * sizeof(float)), *ares[2][3];
    const AttentionDropout drop = {.p = 0.2f, .seed = 3, .step = 1, .layer = 0, .utt = NULL};
    for (int p = 0; p < 2; p++) {
        ares[p][0] = koe_malloc((size_t)no * sizeof(float));
        ares[p][1] = koe_malloc((size_t)na * sizeof(float));
        ares[p][2] = koe_calloc((size_t)nq, sizeof(float));
        if (p == 0) {
            attention_forward_bf16qkv(ares[p][0], ares[p][1], qkvb, pad, Bq, Tq, Cq, Hq, &drop, scr);
            attention_backward_bf16qkv(ares[p][2], dO, qkvb, ares[p][1], pad, Bq, Tq, Cq, Hq, &drop, scr);
        } else {
            attention_forward(ares[p][0], ares[p][1], qkv, pad, Bq, Tq, Cq, Hq, &drop, scr);
            attention_backward(ares[p][2], dO, qkv, ares[p][1], pad, Bq, Tq, Cq, Hq, &drop, scr);
        }
    }
    assert_memory_equal(ares[0][0], ares[1][0], (size_t)no * sizeof(float));
    assert_memory_equal(ares[0][1], ares[1][1], (size_t)na * sizeof(float));
    assert_memory_equal(ares[0][2], ares[1][2], (size_t)nq * sizeof(float));
    printf("attention C=%d H=%d from a bf16 q|k|v: bit-identical to the fp32 q|k|v's\n", Cq, Hq);
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 3; j++) free(ares[p][j]);
    free(qkv), free(dO), free(qkvb), free(scr);
    gemm_set_precision(GEMM_FP32);
}

/* ---- attention forward -------------------------------------------------------------------------------- */

/* Attention backward in bf16 against fp32, each from its own forward's probabilities att[0] (bf16),
 * att[1] (fp32); the bound is the header's. */
static void attention_backward_check(const float *qkv, float *const *att, int B, int64_t T, int C, int H,
                                     float *scratch) {
    const int Dh = C / H;
    const double scale = 1.0 / sqrt((double)Dh), gT = gam(T + 1), E0 = bound2(Dh + 1) + gam(Dh + 1);
    const double u2 = (1 + U) * (1 + U);
    const int64_t nqkv = (int64_t)B * T * 3 * C, nout = (int64_t)B * T * C;
    KoeRng r = koe_rng(9, 0, 0, KOE_RNG_INIT);
    float *dout = koe_malloc((size_t)nout * sizeof(float)), *dq[2];
    fill(dout, nout, 1.0, &r);
    const AttentionDropout drop = {0};
    for (int p = 0; p < 2; p++) {
        dq[p] = koe_calloc((size_t)nqkv, sizeof(float));
        gemm_set_precision(p == 0 ? GEMM_BF16 : GEMM_FP32);
        attention_backward(dq[p], dout, qkv, att[p], NULL, B, T, C, H, &drop, scratch);
    }
    gemm_set_precision(GEMM_FP32);
    double *bnd = dzeros(nqkv); /* the bound of each element of dqkv */
    double *Z = dzeros(T * T), *A = dzeros(T * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *P = att[1] + ((int64_t)b * H + h) * T * T, *P16 = att[0] + ((int64_t)b * H + h) * T * T;
#define QKV(t, part, c) ((double)qkv[((int64_t)b * T + (t)) * 3 * C + (part) * C + h * Dh + (c)])
#define DO(t, c) ((double)dout[((int64_t)b * T + (t)) * C + h * Dh + (c)])
            for (int64_t i = 0; i < T; i++) {
                double rr = 0, Rr = 0, Rg = 0, dP[64], E[64], dp[64];
                KOE_ASSERT(T <= 64);
                for (int64_t k = 0; k < T; k++) {
                    double d = 0, a = 0;
                    for (int c = 0; c < Dh; c++) d += DO(i, c) * QKV(k, 2, c), a += fabs(DO(i, c) * QKV(k, 2, c));
                    dP[k] = d, E[k] = E0 * a, dp[k] = fabs((double)P16[i * T + k] - P[i * T + k]);
                    rr += P[i * T + k] * d;
                    Rr += dp[k] * (fabs(d) + E[k]) + P[i * T + k] * E[k];
                    Rg += (P[i * T + k] + dp[k]) * (fabs(d) + E[k]);
                }
                Rr += 2 * gT * Rg;
                for (int64_t j = 0; j < T; j++) {
                    const double pj = P[i * T + j], m = fabs(dP[j]) + E[j] + fabs(rr) + Rr;
                    Z[i * T + j] = dp[j] * m + pj * (E[j] + Rr) + 3 * 0x1p-24 * (pj + dp[j]) * m;
                    A[i * T + j] = pj * (fabs(dP[j]) + fabs(rr));
                }
            }
            for (int64_t i = 0; i < T; i++)
                for (int c = 0; c < Dh; c++) {
                    double bq = 0, bk = 0, bv = 0;
                    for (int64_t j = 0; j < T; j++) {
                        const double zq = Z[i * T + j], aq = A[i * T + j], zk = Z[j * T + i], ak = A[j * T + i];
                        bq += (zq * u2 + aq * (u2 - 1) + 2 * gT * (aq + zq) * u2) * fabs(QKV(j, 1, c));
                        bk += (zk * u2 + ak * (u2 - 1) + 2 * gT * (ak + zk) * u2) * fabs(QKV(j, 0, c));
                        const double pji = P[j * T + i], dpji = fabs((double)P16[j * T + i] - pji);
                        bv += (dpji * u2 + pji * (u2 - 1) + 2 * gT * (pji + dpji) * u2) * fabs(DO(j, c));
                    }
                    const int64_t row = ((int64_t)b * T + i) * 3 * C + h * Dh + c;
                    bnd[row] = scale * bq, bnd[row + C] = scale * bk, bnd[row + 2 * C] = bv;
                }
#undef QKV
#undef DO
        }
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < nqkv; i++) {
        const double e = fabs((double)dq[0][i] - dq[1][i]) / bnd[i];
        if (!(e <= worst)) worst = e, at = i;
    }
    printf("attention backward: dqkv worst err/bound %.3f at %lld (bf16 %.9g, fp32 %.9g)\n", worst, (long long)at,
           (double)dq[0][at], (double)dq[1][at]);
    assert_true(worst <= 1.0);
    free(bnd), free(Z), free(A), free(dout), free(dq[0]), free(dq[1]);
}

/* A bf16 run also keeps GEMM outputs that feed elementwise code in bf16 (core/README.md, Precision):
 * bf16_round_f32 rounds them in place and keeps the bits, and groupnorm_backward_bf16in and
 * gelu_backward_bf16in read the kept bits: each must give the fp32 kernel's bits on the rounded values. */
static void test_bf16_kept(void **state) {
    (void)state;
    const int B = 2, C = 40;
    const int64_t T = 150, n = (int64_t)B * T * C;
    KoeRng r = koe_rng(9, 0, 0, KOE_RNG_INIT);
    float *x = koe_malloc((size_t)n * sizeof(float)), *xr = koe_malloc((size_t)n * sizeof(float));
    float *dout = koe_malloc((size_t)n * sizeof(float)), *y = koe_malloc((size_t)n * sizeof(float));
    float *w = koe_malloc((size_t)C * sizeof(float)), *bias = koe_malloc((size_t)C * sizeof(float));
    float *mean = koe_malloc((size_t)B * C * sizeof(float)), *rstd = koe_malloc((size_t)B * C * sizeof(float));
    uint16_t *xb = koe_malloc((size_t)n * sizeof(uint16_t)), *want = koe_malloc((size_t)n * sizeof(uint16_t));
    fill(x, n, 2.0, &r), fill(dout, n, 1.0, &r), fill(w, C, 1.0, &r), fill(bias, C, 1.0, &r);
    memcpy(xr, x, (size_t)n * sizeof(float));
    bf16_round_f32(xb, xr, n);
    bf16_from_f32(want, x, n);
    assert_memory_equal(xb, want, (size_t)n * sizeof(uint16_t));
    for (int64_t i = 0; i < n; i++) assert_true(xr[i] == bf16_to_f32(want[i]));
    groupnorm_forward(y, mean, rstd, xr, w, bias, B, T, C, 1e-5f);
    float *res[2][3];
    for (int p = 0; p < 2; p++) {
        for (int j = 0; j < 3; j++) res[p][j] = koe_calloc((size_t)(j ? C : n), sizeof(float));
        if (p == 0) groupnorm_backward_bf16in(res[p][0], res[p][1], res[p][2], dout, xb, w, mean, rstd, B, T, C);
        else groupnorm_backward(res[p][0], res[p][1], res[p][2], dout, xr, w, mean, rstd, B, T, C);
    }
    assert_memory_equal(res[0][0], res[1][0], (size_t)n * sizeof(float));
    assert_memory_equal(res[0][1], res[1][1], (size_t)C * sizeof(float));
    assert_memory_equal(res[0][2], res[1][2], (size_t)C * sizeof(float));
    memset(res[0][0], 0, (size_t)n * sizeof(float)), memset(res[1][0], 0, (size_t)n * sizeof(float));
    gelu_backward_bf16in(res[0][0], dout, xb, n);
    gelu_backward(res[1][0], dout, xr, n);
    assert_memory_equal(res[0][0], res[1][0], (size_t)n * sizeof(float));
    printf("groupnorm and GELU backward from bf16-kept inputs: bit-identical to fp32 on the rounded values\n");
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 3; j++) free(res[p][j]);
    free(x), free(xr), free(dout), free(y), free(w), free(bias), free(mean), free(rstd), free(xb), free(want);
}

/* The fused GroupNorm + GELU of a bf16 run's layer 0 (groupnorm_gelu_*_bf16) against the unfused kernels
 * it replaces (bf16_round_f32, groupnorm_forward and gelu_forward_bf16; gelu_backward_bf16in and
 * groupnorm_backward_bf16in), whose bits test_bf16_kept and test_layers vouch for: the same bits, C a
 * multiple of 16 or not (the GELU's vector and scalar forms agree, layers.c), at 1, 2 and 4 threads,
 * which split the rows differently. */
static void groupnorm_gelu_case(int B, int C, int64_t T) {
    const int64_t n = (int64_t)B * T * C;
    KoeRng r = koe_rng(11, (uint64_t)C, 0, KOE_RNG_INIT);
    float *x = koe_malloc((size_t)n * sizeof(float)), *co = koe_malloc((size_t)n * sizeof(float));
    float *no = koe_malloc((size_t)n * sizeof(float)), *dact = koe_malloc((size_t)n * sizeof(float));
    float *w = koe_malloc((size_t)C * sizeof(float)), *bias = koe_malloc((size_t)C * sizeof(float));
    fill(x, n, 2.0, &r), fill(dact, n, 1.0, &r), fill(w, C, 1.0, &r), fill(bias, C, 1.0, &r);
    for (int64_t i = 0; i < n; i++) x[i] += (float)(i % C) * 0.1f; /* per-channel offsets */
    /* unfused */
    uint16_t *xk0 = koe_malloc((size_t)n * 2), *nk0 = koe_malloc((size_t)n * 2), *act0 = koe_malloc((size_t)n * 2);
    float *mean0 = koe_malloc((size_t)B * C * sizeof(float)), *rstd0 = koe_malloc((size_t)B * C * sizeof(float));
    memcpy(co, x, (size_t)n * sizeof(float));
    bf16_round_f32(xk0, co, n);
    groupnorm_forward(no, mean0, rstd0, co, w, bias, B, T, C, 1e-5f);
    gelu_forward_bf16(nk0, act0, no, n);
    float *dn0 = koe_calloc((size_t)n, sizeof(float)), *dx0 = koe_calloc((size_t)n, sizeof(float));
    float *dw0 = koe_calloc((size_t)C, sizeof(float)), *db0 = koe_calloc((size_t)C, sizeof(float));
    gelu_backward_bf16in(dn0, dact, nk0, n);
    groupnorm_backward_bf16in(dx0, dw0, db0, dn0, xk0, w, mean0, rstd0, B, T, C);
    const int threads[3] = {1, 2, 4};
    uint16_t *xk = koe_malloc((size_t)n * 2), *nk = koe_malloc((size_t)n * 2), *act = koe_malloc((size_t)n * 2);
    float *mean = koe_malloc((size_t)B * C * sizeof(float)), *rstd = koe_malloc((size_t)B * C * sizeof(float));
    float *dn = koe_malloc((size_t)n * sizeof(float)), *res[3][3];
    for (int k = 0; k < 3; k++) {
        omp_set_num_threads(threads[k]);
        groupnorm_gelu_forward_bf16(xk, nk, act, mean, rstd, x, w, bias, B, T, C, 1e-5f);
        assert_memory_equal(xk, xk0, (size_t)n * 2);
        assert_memory_equal(nk, nk0, (size_t)n * 2);
        assert_memory_equal(mean, mean0, (size_t)B * C * sizeof(float));
        assert_memory_equal(rstd, rstd0, (size_t)B * C * sizeof(float));
        assert_memory_equal(act, act0, (size_t)n * 2);
        memcpy(dn, dact, (size_t)n * sizeof(float));
        for (int j = 0; j < 3; j++) res[k][j] = koe_calloc((size_t)(j ? C : n), sizeof(float));
        groupnorm_gelu_backward_bf16(res[k][0], res[k][1], res[k][2], dn, nk, xk, w, mean, rstd, B, T, C);
        for (int64_t i = 0; i < n; i++) {
            assert_true(dn[i] == dn0[i]); /* == : a zero's sign may differ (dact * 0 against 0 + that) */
            assert_true(res[k][0][i] == dx0[i]);
        }
        for (int c = 0; c < C; c++) assert_true(res[k][1][c] == dw0[c] && res[k][2][c] == db0[c]);
        if (k) /* every thread count: the bits of 1 thread */
            for (int j = 0; j < 3; j++) assert_memory_equal(res[k][j], res[0][j], (size_t)(j ? C : n) * sizeof(float));
    }
    omp_set_num_threads(2);
    printf("groupnorm + GELU fused, B=%d C=%d T=%lld: bit-identical to the unfused kernels at 1, 2, 4 threads\n", B, C,
           (long long)T);
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 3; j++) free(res[k][j]);
    free(x), free(co), free(no), free(dact), free(w), free(bias), free(xk0), free(nk0), free(act0), free(mean0);
    free(rstd0), free(dn0), free(dx0), free(dw0), free(db0), free(xk), free(nk), free(act), free(mean), free(rstd);
    free(dn);
}

static void test_groupnorm_gelu(void **state) {
    (void)state;
    groupnorm_gelu_case(3, 48, 150);
    groupnorm_gelu_case(2, 40, 97);
    groupnorm_gelu_case(1, 512, 70);
}

static void test_attention(void **state) {
    (void)state;
    if (!bf16_here(__func__)) skip();
    const int B = 2, C = 32, H = 4, Dh = C / H;
    const int64_t T = 45;
    const double scale = 1.0 / sqrt((double)Dh);
    KoeRng r = koe_rng(8, 0, 0, KOE_RNG_INIT);
    const int64_t nqkv = (int64_t)B * T * 3 * C, nout = (int64_t)B * T * C, natt = (int64_t)B * H * T * T;
    float *qkv = koe_malloc((size_t)nqkv * sizeof(float));
    fill(qkv, nqkv, 1.5, &r);
    float *out[2], *att[2];
    float *scratch = koe_malloc((size_t)attention_scratch_floats(B, T, C, H) * sizeof(float));
    const AttentionDropout drop = {0};
    for (int p = 0; p < 2; p++) {
        out[p] = koe_malloc((size_t)nout * sizeof(float)), att[p] = koe_malloc((size_t)natt * sizeof(float));
        gemm_set_precision(p == 0 ? GEMM_BF16 : GEMM_FP32);
        attention_forward(out[p], att[p], qkv, NULL, B, T, C, H, &drop, scratch);
    }
    gemm_set_precision(GEMM_FP32);
    const double rho = 5 * 0x1p-24 + gam(T), gq = gam(Dh + 1), gv = gam(T + 1);
    double worst_p = 0, worst_o = 0;
    int64_t beyond = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                const float *q = qkv + ((int64_t)b * T + i) * 3 * C + h * Dh;
                double smax = 0;
                for (int64_t j = 0; j < T; j++) {
                    const float *k = qkv + ((int64_t)b * T + j) * 3 * C + C + h * Dh;
                    double s = 0;
                    for (int c = 0; c < Dh; c++) s += fabs((double)q[c] * k[c]);
                    smax = fmax(smax, scale * s);
                }
                const double Di = ((1 + U) * (1 + U) * (1 + gq) - 1 + gq) * smax, dp = exp(2 * Di) - 1 + 2 * rho;
                const int64_t prow = (((int64_t)b * H + h) * T + i) * T;
                for (int64_t j = 0; j < T; j++) {
                    const double e = fabs((double)att[0][prow + j] - att[1][prow + j]);
                    worst_p = fmax(worst_p, e / (dp * att[1][prow + j] + 1e-300));
                }
                for (int c = 0; c < Dh; c++) {
                    double pv = 0;
                    for (int64_t j = 0; j < T; j++)
                        pv += att[1][prow + j] * fabs((double)qkv[((int64_t)b * T + j) * 3 * C + 2 * C + h * Dh + c]);
                    const int64_t oi = ((int64_t)b * T + i) * C + h * Dh + c;
                    const double e = fabs((double)out[0][oi] - out[1][oi]);
                    const double bound = (dp * (1 + U) * (1 + U) + (1 + U) * (1 + U) * (1 + gv) - 1 + gv) * pv;
                    worst_o = fmax(worst_o, e / bound);
                    beyond += e > 2 * gv * pv;
                }
            }
    printf("attention forward: probabilities worst err/bound %.3f, out worst err/bound %.3f, %lld beyond fp32's own\n",
           worst_p, worst_o, (long long)beyond);
    assert_true(worst_p <= 1.0);
    assert_true(worst_o <= 1.0);
    assert_true(beyond > 0);
    attention_backward_check(qkv, att, B, T, C, H, scratch);
    for (int p = 0; p < 2; p++) free(out[p]), free(att[p]);
    free(qkv), free(scratch);
}

int main(void) {
    omp_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversion),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_copy_refresh),
        cmocka_unit_test(test_bf16_copy),
        cmocka_unit_test(test_linear_conv),
        cmocka_unit_test(test_bf16_inputs),
        cmocka_unit_test(test_bf16_kept),
        cmocka_unit_test(test_groupnorm_gelu),
        cmocka_unit_test(test_attention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_gemm.c — core/gemm.h's fp32 product where it departs from a plain dnnl_sgemm call: an 'N', 'T'
 * product with a long, narrow B (K >= 2N, at least SGEMM_TRANSPOSE_MIN values) has B transposed into a
 * staging buffer and runs 'N', 'N'. Checked:
 *   - it gives the bits of dnnl_sgemm 'N', 'N' on B transposed by hand (a value misplaced or altered
 *     by the transposition fails), and every other product the bits of dnnl_sgemm called as it is.
 *     (oneDNN 2.6 here also gives 'N', 'T' and 'N', 'N' the same bits on these shapes, so this cannot
 *     tell whether the transposition ran: the speed shows that, tests/bench/bench_layers);
 *   - both are within g_K sum |alpha a b| + |beta c| ... of the product in double (g_K = K 2^-24 / (1 -
 *     K 2^-24), fp32 accumulation in any order), as in test_bf16.c;
 * on shapes just inside and outside the rule, sizes that are not multiples of the 8 x 8 blocks (their
 * edges take the scalar loop, which a CPU without AVX runs for all of B) or of the 64 x 64 tiles, a
 * leading dimension wider than the matrix, and inside a parallel region (one thread, as the grouped
 * conv calls it). */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../core/common.h"
#include "../../core/gemm.h"
#include "../../core/rng.h"

static void fill(float *x, int64_t n, KoeRng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)koe_rng_normal(r);
}

typedef struct {
    int64_t M, N, K, pad;
    int transposed; /* whether the rule applies */
} Shape;

static void check_shape(const Shape *s, int par) {
    const int64_t M = s->M, N = s->N, K = s->K, lda = K + s->pad, ldb = K + s->pad;
    KoeRng r = koe_rng(7, (uint64_t)(M * 131 + N), (uint64_t)K, KOE_RNG_INIT);
    float *A = koe_malloc((size_t)(M * lda) * sizeof(float)), *B = koe_malloc((size_t)(N * ldb) * sizeof(float));
    float *Bt = koe_malloc((size_t)(K * N) * sizeof(float)), *C0 = koe_malloc((size_t)(M * N) * sizeof(float));
    float *C = koe_malloc((size_t)(M * N) * sizeof(float)), *R = koe_malloc((size_t)(M * N) * sizeof(float));
    fill(A, M * lda, &r);
    fill(B, N * ldb, &r);
    fill(C0, M * N, &r);
    for (int64_t j = 0; j < N; j++)
        for (int64_t k = 0; k < K; k++) Bt[k * N + j] = B[j * ldb + k];
    const float alpha = 0.75f, beta = 1.0f;
    memcpy(C, C0, (size_t)(M * N) * sizeof(float));
    memcpy(R, C0, (size_t)(M * N) * sizeof(float));
    if (par) {
#pragma omp parallel num_threads(2)
#pragma omp single
        {
            sgemm_fp32('N', 'T', M, N, K, alpha, A, lda, B, ldb, beta, C, N);
            if (s->transposed)
                dnnl_sgemm('N', 'N', M, N, K, alpha, A, lda, Bt, N, beta, R, N);
            else
                dnnl_sgemm('N', 'T', M, N, K, alpha, A, lda, B, ldb, beta, R, N);
        }
    } else {
        sgemm_fp32('N', 'T', M, N, K, alpha, A, lda, B, ldb, beta, C, N);
        if (s->transposed)
            dnnl_sgemm('N', 'N', M, N, K, alpha, A, lda, Bt, N, beta, R, N);
        else
            dnnl_sgemm('N', 'T', M, N, K, alpha, A, lda, B, ldb, beta, R, N);
    }
    assert_memory_equal(C, R, (size_t)(M * N) * sizeof(float));
    const double g = (double)K * 0x1p-24 / (1.0 - (double)K * 0x1p-24);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double sum = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                const double p = (double)A[i * lda + k] * B[j * ldb + k];
                sum += p, mag += fabs(p);
            }
            const double ex = alpha * sum + beta * C0[i * N + j];
            /* g over the K products and the added C, plus alpha's product rounded (2^-24) */
            const double tol = (g + 0x1p-24) * (alpha * mag + fabs(beta * C0[i * N + j])) + 0x1p-24 * fabs(ex);
            if (fabs(C[i * N + j] - ex) > tol)
                fail_msg("M=%lld N=%lld K=%lld%s: C[%lld][%lld] = %.9g, exact %.9g, bound %.3g", (long long)M,
                         (long long)N, (long long)K, par ? " in parallel" : "", (long long)i, (long long)j,
                         C[i * N + j], ex, tol);
        }
    free(A), free(B), free(Bt), free(C0), free(C), free(R);
}

static void test_transposed_b(void **state) {
    (void)state;
    assert_int_equal(gemm_precision(), GEMM_FP32);
    const Shape shapes[] = {
        {37, 100, 3000, 5, 1},  /* K >= 2N, 300000 values: rows and columns past the 8 x 8 blocks */
        {45, 129, 2058, 0, 1},  /* 265482 values, just above the size floor; 64 x 64 tiles with edges */
        {16, 48, 6144, 0, 1},   /* the positional conv's group shape (Base) */
        {21, 200, 399, 3, 0},   /* K < 2N */
        {21, 100, 2000, 0, 0},  /* K >= 2N but 200000 values: below the floor */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int par = 0; par < 2; par++) check_shape(&shapes[i], par);
}

int main(void) {
    omp_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transposed_b),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

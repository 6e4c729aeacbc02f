/* test_cka.c — analysis/cka with known answers (spec ../shared/specs/analyze_layers.md §8.9 item 2):
 * CKA(X, X) = 1; invariance to an orthogonal transform and an isotropic scale; sums accumulated in
 * two batches equal one; independent Gaussian views: biased CKA within 10% of sqrt(pq)/n, debiased
 * below a tenth of it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../analysis/cka.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double unif(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(void) { return sqrt(-2 * log(unif())) * cos(2 * M_PI * unif()); }

/* The 3 x 3 CKA matrix of rows (n, dim) split in blocks off, both variants; sums in `batches` parts. */
static void cka_of(const float *rows, int64_t n, int dim, const int *off, int batches, double *biased, double *deb) {
    double *mean = calloc((size_t)dim, sizeof(double)), *gram = calloc((size_t)dim * dim, sizeof(double));
    double rr[9] = {0}, rs[3] = {0};
    for (int64_t r = 0; r < n; r++)
        for (int j = 0; j < dim; j++) mean[j] += rows[r * dim + j] / (double)n;
    const int64_t cut = batches > 1 ? n / 3 : n;
    cka_accumulate(rows, cut, dim, mean, off, 3, gram, rr, rs);
    if (cut < n) cka_accumulate(rows + cut * dim, n - cut, dim, mean, off, 3, gram, rr, rs);
    cka_matrix(gram, dim, off, 3, rr, rs, (double)n, 0, biased);
    cka_matrix(gram, dim, off, 3, rr, rs, (double)n, 1, deb);
    free(mean), free(gram);
}

static void test_invariances(void **state) {
    (void)state;
    enum { N = 3000, PD = 12, DIM = 3 * PD };
    /* block 0: X; block 1: 2.5 X Q (Q orthogonal, Gram-Schmidt of a Gaussian matrix); block 2: X + noise */
    double Qm[PD * PD];
    for (int i = 0; i < PD * PD; i++) Qm[i] = gauss();
    for (int c = 0; c < PD; c++) {
        for (int p = 0; p < c; p++) {
            double d = 0;
            for (int i = 0; i < PD; i++) d += Qm[i * PD + c] * Qm[i * PD + p];
            for (int i = 0; i < PD; i++) Qm[i * PD + c] -= d * Qm[i * PD + p];
        }
        double nn = 0;
        for (int i = 0; i < PD; i++) nn += Qm[i * PD + c] * Qm[i * PD + c];
        for (int i = 0; i < PD; i++) Qm[i * PD + c] /= sqrt(nn);
    }
    float *rows = malloc(sizeof(float) * N * DIM);
    for (int r = 0; r < N; r++) {
        float *x = rows + (int64_t)r * DIM;
        for (int j = 0; j < PD; j++) x[j] = (float)(gauss() * (1 + j % 3) + 7);
        for (int j = 0; j < PD; j++) {
            double s = 0;
            for (int i = 0; i < PD; i++) s += x[i] * Qm[i * PD + j];
            x[PD + j] = (float)(2.5 * s);
            x[2 * PD + j] = (float)(x[j] + gauss());
        }
    }
    const int off[4] = {0, PD, 2 * PD, 3 * PD};
    double b[9], u[9], b2[9], u2[9];
    cka_of(rows, N, DIM, off, 1, b, u);
    cka_of(rows, N, DIM, off, 2, b2, u2);
    for (int i = 0; i < 3; i++) assert_true(fabs(b[i * 4] - 1) < 1e-12 && fabs(u[i * 4] - 1) < 1e-12);
    /* float rows: X Q is exact only to float rounding */
    assert_true(fabs(b[1] - 1) < 1e-6 && fabs(u[1] - 1) < 1e-6);
    assert_true(fabs(b[2] - b[5]) < 1e-6 && fabs(u[2] - u[5]) < 1e-6);
    assert_true(b[2] > 0.5 && b[2] < 0.99 && u[2] > 0.5 && u[2] < 0.99);
    for (int i = 0; i < 9; i++) assert_true(fabs(b[i] - b2[i]) < 1e-12 && fabs(u[i] - u2[i]) < 1e-12);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) assert_true(b[i * 3 + j] == b[j * 3 + i]);
    free(rows);
}

static void test_independent(void **state) {
    (void)state;
    enum { N = 5000, PD = 50, DIM = 3 * PD };
    float *rows = malloc(sizeof(float) * N * DIM);
    for (int64_t i = 0; i < (int64_t)N * DIM; i++) rows[i] = (float)gauss();
    const int off[4] = {0, PD, 2 * PD, 3 * PD};
    double b[9], u[9];
    cka_of(rows, N, DIM, off, 1, b, u);
    const double floor = sqrt((double)PD * PD) / N;
    assert_true(fabs(b[1] - floor) < 0.1 * floor);
    assert_true(fabs(u[1]) < 0.1 * floor && fabs(u[2]) < 0.1 * floor);
    free(rows);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invariances),
        cmocka_unit_test(test_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

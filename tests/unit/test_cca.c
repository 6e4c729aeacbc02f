/* test_cca.c — analysis/moments and analysis/cca with known answers (spec
 * ../shared/specs/analyze_layers.md §8.9 item 1): planted canonical correlations recovered;
 * training and held-out correlations unchanged by re-mixing either view with an invertible matrix
 * or scaling it; negating canonical pairs leaves PWCCA unchanged; a q-class one-hot view gives
 * q - 1 canonical pairs, and an evaluation set lacking a class leaves its direction out; fold statistics merge exactly, within a process and through the sums about
 * a shift that ranks add; a trial's test score is that of a fresh fit with its chosen eps pair, and
 * the trials combined are the protocol. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../analysis/cca.h"
#include "../../analysis/moments.h"

static uint64_t rng_state = 88172645463325252ull;
static double unif(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(void) { return sqrt(-2 * log(unif())) * cos(2 * M_PI * unif()); }

static const double PLANTED[4] = {0.9, 0.7, 0.5, 0.3};
enum { P = 6, Q = 5, DIM = P + Q, FOLDS = 10 };

/* Row r of z = [x; y]: latent pairs with correlations PLANTED, x = A [u; noise], y = B [v; noise]. */
static void planted_rows(double *z, int64_t n, const double *A, const double *B) {
    for (int64_t r = 0; r < n; r++) {
        double lx[P], ly[Q];
        for (int i = 0; i < 4; i++) {
            const double u = gauss(), e = gauss();
            lx[i] = u;
            ly[i] = PLANTED[i] * u + sqrt(1 - PLANTED[i] * PLANTED[i]) * e;
        }
        for (int i = 4; i < P; i++) lx[i] = gauss();
        for (int i = 4; i < Q; i++) ly[i] = gauss();
        for (int i = 0; i < P; i++) {
            z[r * DIM + i] = 5.0 * (i + 1); /* large means: the statistics are centred */
            for (int j = 0; j < P; j++) z[r * DIM + i] += A[i * P + j] * lx[j];
        }
        for (int i = 0; i < Q; i++) {
            z[r * DIM + P + i] = -3.0;
            for (int j = 0; j < Q; j++) z[r * DIM + P + i] += B[i * Q + j] * ly[j];
        }
    }
}

static void random_matrix(double *a, int n) {
    for (int i = 0; i < n * n; i++) a[i] = gauss() + (i % (n + 1) == 0 ? 2.0 : 0.0);
}

/* Statistics of n rows, each in a random fold, added in batches of up to 97 rows of one fold. */
static void stats_of(FoldStats *fs, const double *z, int64_t n, int dim, const int *fold) {
    moments_init(fs, dim, FOLDS);
    double *buf = malloc(sizeof(double) * 97 * dim);
    for (int f = 0; f < FOLDS; f++) {
        int m = 0;
        for (int64_t r = 0; r <= n; r++) {
            if (r == n || m == 97) moments_add(fs, f, buf, m), m = 0;
            if (r < n && fold[r] == f) memcpy(buf + (int64_t)m++ * dim, z + r * dim, sizeof(double) * dim);
        }
    }
    moments_flush(fs);
    free(buf);
}

static const CcaViews VIEWS = {0, P, P, Q};

/* Fit on every fold. eps = 0: the relative eps (1e-10 of the largest covariance entry) shifts the
 * eigenvalues of a re-mixed view differently, by up to 4e-9 in rho here; without it CCA is exactly
 * invariant. */
static void fit_all(const FoldStats *fs, CcaFit *fit, double *n, double *m) {
    unsigned char use[FOLDS];
    memset(use, 1, sizeof use);
    double *mu = malloc(sizeof(double) * fs->dim);
    moments_merge_folds(fs, use, n, mu, m);
    free(mu);
    cca_fit(fit, fs->dim, *n, m, VIEWS, 0, 0, 1e-12);
}

static void test_planted_and_invariance(void **state) {
    (void)state;
    const int64_t n = 200000;
    double A[P * P], B[Q * Q], R[P * P];
    random_matrix(A, P), random_matrix(B, Q), random_matrix(R, P);
    double *z = malloc(sizeof(double) * n * DIM), *z2 = malloc(sizeof(double) * n * DIM);
    int *fold = malloc(sizeof(int) * n);
    planted_rows(z, n, A, B);
    for (int64_t r = 0; r < n; r++) fold[r] = (int)(unif() * FOLDS);
    /* z2: x re-mixed by R, y scaled by 3.7 */
    for (int64_t r = 0; r < n; r++) {
        for (int i = 0; i < P; i++) {
            z2[r * DIM + i] = 0;
            for (int j = 0; j < P; j++) z2[r * DIM + i] += R[i * P + j] * z[r * DIM + j];
        }
        for (int i = 0; i < Q; i++) z2[r * DIM + P + i] = 3.7 * z[r * DIM + P + i];
    }
    FoldStats fs, fs2;
    stats_of(&fs, z, n, DIM, fold);
    stats_of(&fs2, z2, n, DIM, fold);
    CcaFit fit, fit2;
    double nt, *m = malloc(sizeof(double) * DIM * DIM);
    fit_all(&fs, &fit, &nt, m);
    fit_all(&fs2, &fit2, &nt, m);
    assert_int_equal(fit.k, Q);
    assert_int_equal(fit2.k, Q);
    for (int i = 0; i < 4; i++) assert_true(fabs(fit.rho[i] - PLANTED[i]) < 0.01);
    assert_true(fit.rho[4] < 0.02);
    for (int i = 0; i < Q; i++) assert_true(fabs(fit.rho[i] - fit2.rho[i]) < 1e-9);
    /* held out: the same correlations on fold 0 */
    CcaScore s, s2;
    assert_int_equal(cca_eval(&fit, DIM, fs.m, &s), 0);
    assert_int_equal(cca_eval(&fit2, DIM, fs2.m, &s2), 0);
    assert_true(fabs(s.mean_rho - s2.mean_rho) < 1e-9 && fabs(s.rho1 - s2.rho1) < 1e-9);
    assert_true(fabs(s.rho1 - 0.9) < 0.02);
    /* negating canonical pairs 1 and 3 (an equally valid SVD) leaves every score unchanged */
    for (int i = 1; i < fit.k; i += 2) {
        for (int j = 0; j < fit.nx; j++) fit.ax[i * fit.nx + j] = -fit.ax[i * fit.nx + j];
        for (int j = 0; j < fit.ny; j++) fit.ay[i * fit.ny + j] = -fit.ay[i * fit.ny + j];
    }
    CcaScore f;
    assert_int_equal(cca_eval(&fit, DIM, fs.m, &f), 0);
    assert_true(fabs(f.pwcca - s.pwcca) < 1e-12 && fabs(f.mean_rho - s.mean_rho) < 1e-12);
    /* the protocol: PWCCA of the planted views lies between the smallest and largest correlation */
    const double eps[3] = {1e-11, 1e-10, 1e-9};
    CcaProtocol pr = {.trials = 3, .eps = eps, .n_eps = 3, .null_tol = 1e-12};
    CcaResult res = cca_protocol(&fs, VIEWS, &pr);
    assert_true(res.ok && res.k == Q && res.pwcca > 0.3 && res.pwcca < 0.9 && res.pwcca_std < 0.01);
    cca_fit_free(&fit), cca_fit_free(&fit2);
    moments_free(&fs), moments_free(&fs2);
    free(z), free(z2), free(fold), free(m);
}

static void test_one_hot(void **state) {
    (void)state;
    enum { PX = 8, NC = 6, D1 = PX + NC };
    const int64_t n = 20000;
    double means[NC][PX];
    for (int c = 0; c < NC; c++)
        for (int j = 0; j < PX; j++) means[c][j] = gauss();
    double *z = calloc((size_t)n * D1, sizeof(double));
    int *fold = malloc(sizeof(int) * n);
    for (int64_t r = 0; r < n; r++) {
        const int c = (int)(unif() * NC);
        for (int j = 0; j < PX; j++) z[r * D1 + j] = means[c][j] + gauss();
        z[r * D1 + PX + c] = 1;
        fold[r] = (int)(unif() * FOLDS);
    }
    FoldStats fs;
    stats_of(&fs, z, n, D1, fold);
    const CcaViews v = {0, PX, PX, NC};
    const double eps[3] = {1e-11, 1e-10, 1e-9};
    CcaProtocol pr = {.trials = 3, .eps = eps, .n_eps = 3, .null_tol = 1e-12};
    CcaResult res = cca_protocol(&fs, v, &pr);
    assert_true(res.ok);
    assert_int_equal(res.k, NC - 1);
    assert_int_equal(res.dropped, 0);
    assert_true(res.pwcca > 0.5 && res.pwcca < 1);
    /* an evaluation set without class 0: the direction it lacks is left out, not a failed score */
    FoldStats ev;
    int *in_eval = malloc(sizeof(int) * n);
    for (int64_t r = 0; r < n; r++) in_eval[r] = z[r * D1 + PX] == 1 ? 1 : 0; /* class 0 -> fold 1, unused */
    stats_of(&ev, z, n, D1, in_eval);
    CcaFit fit;
    unsigned char use[FOLDS];
    memset(use, 1, sizeof use);
    double nt, mu[D1], m[D1 * D1];
    moments_merge_folds(&fs, use, &nt, mu, m);
    assert_int_equal(cca_fit(&fit, D1, nt, m, v, 1e-10, 1e-10, 1e-12), NC - 1);
    CcaScore all, lacking;
    assert_int_equal(cca_eval(&fit, D1, fs.m, &all), 0);
    assert_int_equal(cca_eval(&fit, D1, ev.m, &lacking), 0);
    assert_true(all.dropped == 0 && lacking.dropped == 1);
    assert_true(lacking.pwcca > 0.3 && lacking.pwcca < 1);
    cca_fit_free(&fit);
    moments_free(&ev);
    moments_free(&fs);
    free(z), free(fold), free(in_eval);
}

/* cca_trial scores its chosen fit on the test fold as fitted: the same number as a fresh fit with the
 * chosen pair on the training folds scored there; cca_combine of the trials is cca_protocol. */
static void test_trial_as_refit(void **state) {
    (void)state;
    const int64_t n = 20000;
    double A[P * P], B[Q * Q];
    random_matrix(A, P), random_matrix(B, Q);
    double *z = malloc(sizeof(double) * n * DIM);
    int *fold = malloc(sizeof(int) * n);
    planted_rows(z, n, A, B);
    for (int64_t r = 0; r < n; r++) fold[r] = (int)(unif() * FOLDS);
    FoldStats fs;
    stats_of(&fs, z, n, DIM, fold);
    const double eps[3] = {1e-3, 1e-2, 1e-1}; /* large enough that the pairs' fits and dev scores differ */
    CcaProtocol pr = {.trials = 3, .eps = eps, .n_eps = 3, .null_tol = 1e-12};
    CcaTrial tr[3];
    for (int t = 0; t < 3; t++) {
        tr[t] = cca_trial(&fs, VIEWS, &pr, t);
        unsigned char use[FOLDS];
        for (int f = 0; f < FOLDS; f++) use[f] = f != 2 * t && f != 2 * t + 1;
        double nt, mu[DIM], m[DIM * DIM];
        moments_merge_folds(&fs, use, &nt, mu, m);
        CcaFit fit;
        CcaScore sc;
        /* the trial scores the pairs on the dev fold in the views' eigenbases: it must choose the pair
         * that each pair's own fit scored on the dev fold (cca_eval) chooses */
        double dev[9], best = -INFINITY;
        for (int e = 0; e < 9; e++) {
            assert_true(cca_fit(&fit, DIM, nt, m, VIEWS, eps[e / 3], eps[e % 3], 1e-12) > 0);
            assert_int_equal(cca_eval(&fit, DIM, fs.m + (int64_t)(2 * t) * DIM * DIM, &sc), 0);
            dev[e] = sc.pwcca, best = fmax(best, sc.pwcca);
            cca_fit_free(&fit);
        }
        int e = 0;
        while (dev[e] < best - 1e-12) e++;
        assert_true(tr[t].eps[0] == eps[e / 3] && tr[t].eps[1] == eps[e % 3]);
        assert_int_equal(cca_fit(&fit, DIM, nt, m, VIEWS, tr[t].eps[0], tr[t].eps[1], 1e-12), tr[t].k);
        assert_int_equal(cca_eval(&fit, DIM, fs.m + (int64_t)(2 * t + 1) * DIM * DIM, &sc), 0);
        assert_true(fabs(sc.pwcca - tr[t].pwcca) < 1e-12 && fabs(sc.rho1 - tr[t].rho1) < 1e-12);
        assert_true(tr[t].n_train == nt && tr[t].n_test == fs.n[2 * t + 1]);
        cca_fit_free(&fit);
    }
    const CcaResult all = cca_protocol(&fs, VIEWS, &pr), comb = cca_combine(tr, 3);
    assert_true(all.ok && comb.ok && all.pwcca == comb.pwcca && all.pwcca_std == comb.pwcca_std && all.k == comb.k);
    assert_true(fabs(comb.pwcca - (tr[0].pwcca + tr[1].pwcca + tr[2].pwcca) / 3) < 1e-15);
    moments_free(&fs);
    free(z), free(fold);
}

static void assert_stats_close(const FoldStats *a, int fa, const double *n, const double *mu, const double *m) {
    const int d = a->dim;
    assert_true(a->n[fa] == *n);
    double scale = 0;
    for (int i = 0; i < d * d; i++) scale = fmax(scale, fabs(m[i]));
    for (int i = 0; i < d; i++) assert_true(fabs(a->mean[fa * d + i] - mu[i]) <= 1e-12 * (1 + fabs(mu[i])));
    for (int i = 0; i < d * d; i++) assert_true(fabs(a->m[(int64_t)fa * d * d + i] - m[i]) <= 1e-12 * scale);
}

static void test_merge_exact(void **state) {
    (void)state;
    enum { D = 7 };
    const int64_t n = 5000;
    double *z = malloc(sizeof(double) * n * D);
    for (int64_t i = 0; i < n * D; i++) z[i] = 40.0 + 0.1 * gauss() + (i % D) * gauss();
    int *fold = malloc(sizeof(int) * n), *zero = calloc((size_t)n, sizeof(int));
    for (int64_t r = 0; r < n; r++) fold[r] = (int)(unif() * FOLDS);
    FoldStats split, whole;
    stats_of(&split, z, n, D, fold);
    stats_of(&whole, z, n, D, zero);
    /* merging every fold equals the statistics of all rows */
    unsigned char use[FOLDS];
    memset(use, 1, sizeof use);
    double nm, mu[D], m[D * D];
    moments_merge_folds(&split, use, &nm, mu, m);
    assert_stats_close(&whole, 0, &nm, mu, m);
    /* two "ranks" holding the first and second half, summed about a common shift */
    FoldStats r0, r1;
    stats_of(&r0, z, n / 2, D, fold);
    stats_of(&r1, z + (n / 2) * D, n - n / 2, D, fold + n / 2);
    double c[D], c1[D], n0, n1;
    moments_weighted_mean(&r0, c, &n0);
    moments_weighted_mean(&r1, c1, &n1);
    for (int i = 0; i < D; i++) c[i] = (c[i] + c1[i]) / (n0 + n1);
    const int64_t len = moments_sums_len(&r0);
    double *s0 = malloc(sizeof(double) * len), *s1 = malloc(sizeof(double) * len);
    moments_to_sums(&r0, c, s0);
    moments_to_sums(&r1, c, s1);
    for (int64_t i = 0; i < len; i++) s0[i] += s1[i];
    moments_from_sums(&r0, c, s0);
    for (int f = 0; f < FOLDS; f++) assert_stats_close(&r0, f, &split.n[f], split.mean + f * D, split.m + f * D * D);
    moments_free(&split), moments_free(&whole), moments_free(&r0), moments_free(&r1);
    free(z), free(fold), free(zero), free(s0), free(s1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_planted_and_invariance),
        cmocka_unit_test(test_one_hot),
        cmocka_unit_test(test_merge_exact),
        cmocka_unit_test(test_trial_as_refit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

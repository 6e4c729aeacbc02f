/* test_kmeans.c — core/kmeans: the sgemm assignment equals a brute-force double-precision one;
 * k-means++ + Lloyd recovers well-separated Gaussian blobs; empty clusters move onto the farthest
 * sample rows; the same seed gives bit-identical centroids; k-means++ starts (and ends) with a
 * lower inertia than random rows on blobs of unequal sizes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../core/common.h"
#include "../../core/kmeans.h"
#include "../../core/rng.h"

/* N points around K true centres (spread 10, noise sd 0.3) in D dims; blob k gets a share
 * proportional to (k + 1) when skewed, else equal. truth (N) gets the blob of each point. */
static float *make_blobs(int64_t N, int D, int K, int skewed, uint64_t seed, float *centres, int32_t *truth) {
    KoeRng g = koe_rng(seed, 0, 0, KOE_RNG_KMEANS);
    for (int64_t i = 0; i < (int64_t)K * D; i++) centres[i] = (float)(10.0 * koe_rng_normal(&g));
    float *X = koe_malloc((size_t)N * D * sizeof(float));
    int64_t total = skewed ? (int64_t)K * (K + 1) / 2 : K;
    for (int64_t i = 0; i < N; i++) {
        int64_t r = (int64_t)koe_rng_below(&g, (uint64_t)total), k = 0;
        if (skewed)
            while (r >= k + 1) r -= ++k;
        else
            k = r;
        truth[i] = (int32_t)k;
        for (int d = 0; d < D; d++) X[i * D + d] = centres[k * D + d] + (float)(0.3 * koe_rng_normal(&g));
    }
    return X;
}

static double brute_inertia(const float *X, int64_t N, int D, const float *C, int K, int32_t *assign) {
    double tot = 0;
    for (int64_t i = 0; i < N; i++) {
        double best = INFINITY;
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int d = 0; d < D; d++) {
                double t = (double)X[i * D + d] - C[k * D + d];
                s += t * t;
            }
            if (s < best) {
                best = s;
                if (assign) assign[i] = k;
            }
        }
        tot += best;
    }
    return tot;
}

/* Lloyd until no change or 100 iterations, reseeding from X itself. Returns the final inertia. */
static double lloyd(const float *X, int64_t N, int D, float *C, int K) {
    float *c_sqn = koe_malloc((size_t)K * sizeof(float));
    int32_t *assign = koe_malloc((size_t)N * sizeof(int32_t));
    float *scratch = koe_malloc((size_t)KMEANS_BLOCK * K * sizeof(float));
    double *sums = koe_malloc((size_t)K * D * sizeof(double)), *counts = koe_malloc((size_t)K * sizeof(double));
    double prev = INFINITY, in = 0;
    for (int it = 0; it < 100; it++) {
        memset(sums, 0, (size_t)K * D * sizeof(double));
        memset(counts, 0, (size_t)K * sizeof(double));
        kmeans_sqnorms(C, K, D, c_sqn);
        in = kmeans_assign(X, N, D, C, c_sqn, K, assign, NULL, scratch);
        kmeans_accumulate(X, N, D, assign, sums, counts);
        if (kmeans_update(C, sums, counts, K, D)) kmeans_reseed_empty(C, counts, K, D, X, N);
        if (in >= prev) break;
        prev = in;
    }
    free(c_sqn);
    free(assign);
    free(scratch);
    free(sums);
    free(counts);
    return brute_inertia(X, N, D, C, K, NULL);
}

static void test_assign_matches_brute_force(void **state) {
    (void)state;
    const int64_t N = 2500; /* more than two sgemm blocks */
    const int D = 13, K = 37;
    KoeRng g = koe_rng(7, 1, 0, KOE_RNG_KMEANS);
    float *X = koe_malloc((size_t)N * D * sizeof(float)), *C = koe_malloc((size_t)K * D * sizeof(float));
    for (int64_t i = 0; i < N * D; i++) X[i] = (float)(3 + koe_rng_normal(&g));
    for (int64_t i = 0; i < (int64_t)K * D; i++) C[i] = (float)(3 + koe_rng_normal(&g));
    float *c_sqn = koe_malloc((size_t)K * sizeof(float)), *dist = koe_malloc((size_t)N * sizeof(float));
    float *scratch = koe_malloc((size_t)KMEANS_BLOCK * K * sizeof(float));
    int32_t *a = koe_malloc((size_t)N * sizeof(int32_t)), *b = koe_malloc((size_t)N * sizeof(int32_t));
    kmeans_sqnorms(C, K, D, c_sqn);
    double tot = kmeans_assign(X, N, D, C, c_sqn, K, a, dist, scratch);
    double ref = brute_inertia(X, N, D, C, K, b);
    int64_t differ = 0;
    for (int64_t i = 0; i < N; i++) {
        if (a[i] != b[i]) {
            /* only a near-tie may differ: the two distances agree to float rounding */
            double da = 0, db = 0;
            for (int d = 0; d < D; d++) {
                da += pow((double)X[i * D + d] - C[a[i] * D + d], 2);
                db += pow((double)X[i * D + d] - C[b[i] * D + d], 2);
            }
            assert_true(fabs(da - db) < 1e-4 * db);
            differ++;
        }
    }
    assert_true(differ < N / 100);
    assert_true(fabs(tot - ref) < 1e-5 * ref);
    free(X), free(C), free(c_sqn), free(dist), free(scratch), free(a), free(b);
}

/* Each recovered centroid within 0.1 of a distinct true centre. */
static void test_recovers_blobs(void **state) {
    (void)state;
    const int64_t N = 4000;
    const int D = 8, K = 12;
    float *truth_c = koe_malloc((size_t)K * D * sizeof(float));
    int32_t *truth = koe_malloc((size_t)N * sizeof(int32_t));
    float *X = make_blobs(N, D, K, 0, 3, truth_c, truth);
    float *C = koe_malloc((size_t)K * D * sizeof(float));
    KoeRng g = koe_rng(1, 3, 0, KOE_RNG_KMEANS);
    kmeans_plusplus(X, N, D, K, &g, C);
    lloyd(X, N, D, C, K);
    int used[12] = {0};
    for (int k = 0; k < K; k++) {
        int best = -1;
        double bd = INFINITY;
        for (int j = 0; j < K; j++) {
            double s = 0;
            for (int d = 0; d < D; d++) s += pow((double)C[k * D + d] - truth_c[j * D + d], 2);
            if (s < bd) bd = s, best = j;
        }
        assert_true(sqrt(bd) < 0.1);
        assert_int_equal(used[best], 0);
        used[best] = 1;
    }
    free(truth_c), free(truth), free(X), free(C);
}

static void test_empty_cluster_reseeded(void **state) {
    (void)state;
    /* points at 0 and 1 on a line plus one far point at 100; centroid 2 sits where nothing is
     * nearest to it (empty) and must move to the far point, centroid 3 (also empty) to the next
     * farthest point after that move. */
    const int D = 1, K = 4;
    float X[] = {0, 0.1f, 1, 1.1f, 100, 50};
    float C[] = {0, 1, -1000, -2000};
    double counts[] = {2, 2, 0, 0};
    int moved = kmeans_reseed_empty(C, counts, K, D, X, 6);
    assert_int_equal(moved, 2);
    assert_true(C[0] == 0 && C[1] == 1);
    assert_true(C[2] == 100);
    assert_true(C[3] == 50);
    /* update leaves empty rows alone and says how many */
    double sums[] = {0.1, 2.1, 0, 0};
    float C2[] = {0, 1, 7, 8};
    assert_int_equal(kmeans_update(C2, sums, counts, K, D), 2);
    assert_true(fabsf(C2[0] - 0.05f) < 1e-7f && fabsf(C2[1] - 1.05f) < 1e-6f && C2[2] == 7 && C2[3] == 8);
}

static void test_deterministic(void **state) {
    (void)state;
    const int64_t N = 3000;
    const int D = 5, K = 9;
    float *tc = koe_malloc((size_t)K * D * sizeof(float));
    int32_t *truth = koe_malloc((size_t)N * sizeof(int32_t));
    float *X = make_blobs(N, D, K, 1, 11, tc, truth);
    float *C1 = koe_malloc((size_t)K * D * sizeof(float)), *C2 = koe_malloc((size_t)K * D * sizeof(float));
    float *C3 = koe_malloc((size_t)K * D * sizeof(float));
    KoeRng g1 = koe_rng(5, 3, 0, KOE_RNG_KMEANS), g2 = koe_rng(5, 3, 0, KOE_RNG_KMEANS), g3 = koe_rng(6, 3, 0, KOE_RNG_KMEANS);
    kmeans_plusplus(X, N, D, K, &g1, C1);
    kmeans_plusplus(X, N, D, K, &g2, C2);
    kmeans_plusplus(X, N, D, K, &g3, C3);
    assert_memory_equal(C1, C2, (size_t)K * D * sizeof(float));
    assert_memory_not_equal(C1, C3, (size_t)K * D * sizeof(float)); /* the seed matters */
    lloyd(X, N, D, C1, K);
    lloyd(X, N, D, C2, K);
    assert_memory_equal(C1, C2, (size_t)K * D * sizeof(float));
    free(tc), free(truth), free(X), free(C1), free(C2), free(C3);
}

/* On blobs of very unequal sizes, random rows put several centroids in the big blobs and miss
 * small ones; k-means++ covers them. Averaged over 10 seeds, both at init and after Lloyd. */
static void test_plusplus_beats_random(void **state) {
    (void)state;
    const int64_t N = 5000;
    const int D = 4, K = 15;
    float *tc = koe_malloc((size_t)K * D * sizeof(float));
    int32_t *truth = koe_malloc((size_t)N * sizeof(int32_t));
    float *X = make_blobs(N, D, K, 1, 21, tc, truth);
    float *C = koe_malloc((size_t)K * D * sizeof(float));
    int64_t *perm = koe_malloc((size_t)N * sizeof(int64_t));
    double pp_init = 0, rnd_init = 0, pp_end = 0, rnd_end = 0;
    for (uint64_t s = 0; s < 10; s++) {
        KoeRng g = koe_rng(100 + s, 3, 0, KOE_RNG_KMEANS);
        kmeans_plusplus(X, N, D, K, &g, C);
        pp_init += brute_inertia(X, N, D, C, K, NULL);
        pp_end += lloyd(X, N, D, C, K);
        for (int64_t i = 0; i < N; i++) perm[i] = i;
        koe_rng_shuffle_i64(&g, perm, N);
        for (int k = 0; k < K; k++) memcpy(C + k * D, X + perm[k] * D, (size_t)D * sizeof(float));
        rnd_init += brute_inertia(X, N, D, C, K, NULL);
        rnd_end += lloyd(X, N, D, C, K);
    }
    print_message("k-means++ init %.4g end %.4g; random init %.4g end %.4g (sums over 10 seeds)\n", pp_init, pp_end,
                  rnd_init, rnd_end);
    assert_true(pp_init < 0.5 * rnd_init);
    assert_true(pp_end < rnd_end);
    free(tc), free(truth), free(X), free(C), free(perm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assign_matches_brute_force),
        cmocka_unit_test(test_recovers_blobs),
        cmocka_unit_test(test_empty_cluster_reseeded),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_plusplus_beats_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

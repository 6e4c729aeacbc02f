/* test_rng.c — the counter-based RNG: a stream is a pure function of its name, streams with
 * different names are independent-looking, and the distributions are right. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../core/rng.h"

static void test_same_name_same_stream(void **state) {
    (void)state;
    KoeRng a = koe_rng(42, 7, 3, KOE_RNG_CROP), b = koe_rng(42, 7, 3, KOE_RNG_CROP);
    for (int i = 0; i < 1000; i++) assert_int_equal(koe_rng_u64(&a), koe_rng_u64(&b));
}

static void test_random_access(void **state) {
    (void)state;
    /* number n of a stream does not depend on what was drawn before: jump by setting ctr */
    KoeRng a = koe_rng(1, 2, 3, KOE_RNG_MASK);
    uint64_t v[100];
    for (int i = 0; i < 100; i++) v[i] = koe_rng_u64(&a);
    KoeRng b = koe_rng(1, 2, 3, KOE_RNG_MASK);
    b.ctr = 57;
    assert_int_equal(koe_rng_u64(&b), v[57]);
    /* the j-th normal from a state (params_init draws them in parallel): the sequential draws' bits */
    KoeRng c = koe_rng(4, 5, 6, KOE_RNG_INIT);
    koe_rng_u64(&c); /* an odd counter: normals need not start at an even one */
    const KoeRng at = c;
    for (uint64_t j = 0; j < 1000; j++) {
        const double x = koe_rng_normal(&c);
        assert_memory_equal(&x, &(double){koe_rng_normal_at(&at, j)}, sizeof x);
    }
    assert_true(at.ctr == 1 && c.ctr == 2001);
}

static void test_names_differ(void **state) {
    (void)state;
    /* changing any part of the name changes the first draws */
    KoeRng base = koe_rng(1, 2, 3, KOE_RNG_MASK);
    KoeRng other[4] = {koe_rng(2, 2, 3, KOE_RNG_MASK), koe_rng(1, 3, 3, KOE_RNG_MASK),
                       koe_rng(1, 2, 4, KOE_RNG_MASK), koe_rng(1, 2, 3, KOE_RNG_NOISE)};
    uint64_t x = koe_rng_u64(&base);
    for (int k = 0; k < 4; k++) assert_true(koe_rng_u64(&other[k]) != x);
    /* swapping a and b is a different stream too */
    KoeRng s1 = koe_rng(9, 1, 2, KOE_RNG_CROP), s2 = koe_rng(9, 2, 1, KOE_RNG_CROP);
    assert_true(koe_rng_u64(&s1) != koe_rng_u64(&s2));
}

static void test_uniform_and_below(void **state) {
    (void)state;
    KoeRng r = koe_rng(5, 0, 0, KOE_RNG_INIT);
    enum { N = 200000, K = 10 };
    int hist[K] = {0};
    double sum = 0;
    for (int i = 0; i < N; i++) {
        double u = koe_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
        uint64_t b = koe_rng_below(&r, K);
        assert_true(b < K);
        hist[b]++;
    }
    assert_true(fabs(sum / N - 0.5) < 0.005);
    double chi2 = 0;
    for (int k = 0; k < K; k++) chi2 += (hist[k] - N / K) * (double)(hist[k] - N / K) / (N / K);
    assert_true(chi2 < 27.9); /* 9 degrees of freedom, p = 0.001 */
}

static void test_normal_moments(void **state) {
    (void)state;
    KoeRng r = koe_rng(11, 0, 0, KOE_RNG_NOISE);
    enum { N = 200000 };
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        double x = koe_rng_normal(&r);
        assert_true(isfinite(x));
        s += x;
        s2 += x * x;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    assert_true(fabs(mean) < 0.01);
    assert_true(fabs(var - 1.0) < 0.02);
}

static void test_shuffle_is_permutation(void **state) {
    (void)state;
    enum { N = 1000 };
    int64_t v[N];
    int seen[N] = {0};
    for (int i = 0; i < N; i++) v[i] = i;
    KoeRng r = koe_rng(3, 1, 0, KOE_RNG_EPOCH_ORDER);
    koe_rng_shuffle_i64(&r, v, N);
    int moved = 0;
    for (int i = 0; i < N; i++) {
        assert_true(v[i] >= 0 && v[i] < N);
        seen[v[i]]++;
        moved += v[i] != i;
    }
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    assert_true(moved > N / 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_name_same_stream), cmocka_unit_test(test_random_access),
        cmocka_unit_test(test_names_differ),          cmocka_unit_test(test_uniform_and_below),
        cmocka_unit_test(test_normal_moments),        cmocka_unit_test(test_shuffle_is_permutation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

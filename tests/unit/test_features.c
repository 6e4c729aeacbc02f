/* test_features.c — fbank/MFCC: frame counting, short input, silence (the log floor), the fast
 * path against the naive double-precision reference, the log against libm over its whole input
 * range, and two extractors on two threads. Parity with torchaudio itself is
 * tests/e2e/features_parity.sh. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../core/common.h"
#include "../../core/rng.h"
#include "../../data/features.h"

/* A speech-like test signal: a gliding harmonic tone with an amplitude envelope, plus noise. */
static float *make_signal(int64_t n, uint64_t seed, double amp) {
    float *x = koe_malloc((size_t)n * sizeof(float));
    KoeRng r = koe_rng(seed, 0, 0, KOE_RNG_NOISE);
    double phase = 0;
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / 16000.0;
        double f0 = 120.0 + 80.0 * sin(2 * M_PI * 0.7 * t);
        phase += 2 * M_PI * f0 / 16000.0;
        double env = 0.5 + 0.5 * sin(2 * M_PI * 3.0 * t);
        double v = 0;
        for (int h = 1; h <= 12; h++) v += sin(h * phase) / h;
        x[i] = (float)(amp * (0.4 * env * v + 0.02 * koe_rng_normal(&r)));
    }
    return x;
}

static void test_frame_count(void **state) {
    (void)state;
    assert_int_equal(features_num_frames(0), 0);
    assert_int_equal(features_num_frames(399), 0);
    assert_int_equal(features_num_frames(400), 1);
    assert_int_equal(features_num_frames(559), 1);
    assert_int_equal(features_num_frames(560), 2);
    assert_int_equal(features_num_frames(16000), 98);
    assert_int_equal(features_num_frames((int64_t)16000 * 3600 * 10), 3599998); /* 10 h: no int overflow */
    assert_int_equal(features_dim(FEAT_FBANK), 80);
    assert_int_equal(features_dim(FEAT_MFCC), 39);
}

static void test_kind_names(void **state) {
    (void)state;
    FeatureKind k;
    assert_int_equal(features_kind_parse("mfcc", &k), 0);
    assert_int_equal(k, FEAT_MFCC);
    assert_string_equal(features_kind_name(k), "mfcc");
    assert_int_equal(features_kind_parse("fbank", &k), 0);
    assert_int_equal(k, FEAT_FBANK);
    assert_string_equal(features_kind_name(k), "fbank");
    assert_int_equal(features_kind_parse("MFCC", &k), -1);
    assert_int_equal(features_kind_parse("", &k), -1);
}

/* Fewer than 400 samples: no frames, and nothing written. */
static void test_short_input(void **state) {
    (void)state;
    float *x = make_signal(399, 1, 1.0);
    float out[80];
    for (int kind = FEAT_FBANK; kind <= FEAT_MFCC; kind++) {
        FeatureExtractor *fe = features_create((FeatureKind)kind);
        for (int i = 0; i < 80; i++) out[i] = 12345.0f;
        features_compute(fe, x, 399, out);
        features_compute(fe, x, 0, out);
        for (int i = 0; i < 80; i++) assert_true(out[i] == 12345.0f);
        features_free(fe);
    }
    free(x);
}

/* Digital silence: every mel energy is floored at float epsilon, so fbank is log(eps) everywhere;
 * MFCC c0 is sqrt(23) log(eps) (the DCT's first row is 1/sqrt(23)), the other cepstra and all
 * deltas are 0. */
static void test_silence(void **state) {
    (void)state;
    const int64_t n = 16000;
    float *x = koe_calloc((size_t)n, sizeof(float));
    int64_t T = features_num_frames(n);
    float *out = koe_malloc((size_t)T * 80 * sizeof(float));
    FeatureExtractor *fb = features_create(FEAT_FBANK);
    features_compute(fb, x, n, out);
    const double log_eps = log(FLT_EPSILON);
    for (int64_t i = 0; i < T * 80; i++) assert_float_equal(out[i], log_eps, 2e-6);
    features_free(fb);
    FeatureExtractor *mf = features_create(FEAT_MFCC);
    features_compute(mf, x, n, out);
    for (int64_t t = 0; t < T; t++) {
        assert_float_equal(out[t * 39], sqrt(23.0) * log_eps, 1e-4);
        for (int d = 1; d < 39; d++) assert_float_equal(out[t * 39 + d], 0.0, 1e-4);
    }
    features_free(mf);
    free(out);
    free(x);
}

/* Fast vs naive: max |fast - naive| per dimension <= tol * max(1, range of that dimension). */
static void check_against_naive(FeatureKind kind, const float *x, int64_t n, double tol) {
    int64_t T = features_num_frames(n);
    int D = features_dim(kind);
    float *fast = koe_malloc((size_t)T * (size_t)D * sizeof(float));
    float *ref = koe_malloc((size_t)T * (size_t)D * sizeof(float));
    FeatureExtractor *fe = features_create(kind);
    features_compute(fe, x, n, fast);
    features_compute_naive(kind, x, n, ref);
    double worst = 0;
    int worst_d = 0;
    int64_t worst_t = 0;
    for (int d = 0; d < D; d++) {
        double lo = INFINITY, hi = -INFINITY;
        for (int64_t t = 0; t < T; t++) {
            lo = fmin(lo, ref[t * D + d]);
            hi = fmax(hi, ref[t * D + d]);
        }
        double scale = fmax(1.0, hi - lo);
        for (int64_t t = 0; t < T; t++) {
            double e = fabs((double)fast[t * D + d] - ref[t * D + d]) / scale;
            if (e > worst) worst = e, worst_d = d, worst_t = t;
        }
    }
    print_message("%s n=%lld: worst dim %d frame %lld: fast %.7g naive %.7g (error/range %.3g, limit %.3g)\n",
                  features_kind_name(kind), (long long)n, worst_d, (long long)worst_t,
                  (double)fast[worst_t * D + worst_d], (double)ref[worst_t * D + worst_d], worst, tol);
    assert_true(worst <= tol);
    features_free(fe);
    free(fast);
    free(ref);
}

static void test_fast_matches_naive(void **state) {
    (void)state;
    const int64_t n = 16000 + 123;
    float *x = make_signal(n, 7, 1.0);
    check_against_naive(FEAT_FBANK, x, n, 5e-5);
    check_against_naive(FEAT_MFCC, x, n, 5e-5);
    /* Full scale and very quiet: the log's whole range, nothing clips or floors wrongly. */
    float *loud = make_signal(n, 8, 2.4);
    for (int64_t i = 0; i < n; i++) loud[i] = fmaxf(-1.0f, fminf(1.0f, loud[i]));
    check_against_naive(FEAT_FBANK, loud, n, 5e-5);
    float *quiet = make_signal(n, 9, 1e-3);
    check_against_naive(FEAT_FBANK, quiet, n, 5e-5);
    check_against_naive(FEAT_MFCC, quiet, n, 5e-5);
    free(x);
    free(loud);
    free(quiet);
}

/* 1, 2, 3 and 5 frames: the deltas' replicate padding at both edges. */
static void test_few_frames(void **state) {
    (void)state;
    float *x = make_signal(1200, 11, 1.0);
    int64_t lengths[] = {400, 560, 720, 1040};
    for (int i = 0; i < 4; i++) check_against_naive(FEAT_MFCC, x, lengths[i], 5e-5);
    free(x);
}

/* The vectorised log against libm's (through the naive path) over its whole working range: the
 * same signal scaled over 7 decades of amplitude (14 of power), from all-floored to full scale. */
static void test_log_range(void **state) {
    (void)state;
    const int64_t n = 4000;
    float *base = make_signal(n, 12, 1.0);
    float *x = koe_malloc((size_t)n * sizeof(float));
    for (int decade = -7; decade <= 0; decade++) {
        float g = powf(10.0f, (float)decade);
        for (int64_t i = 0; i < n; i++) x[i] = g * base[i];
        check_against_naive(FEAT_FBANK, x, n, 5e-5);
    }
    free(x);
    free(base);
}

typedef struct {
    FeatureKind kind;
    const float *x;
    int64_t n;
    float *out;
    int rounds;
} ThreadJob;

static void *thread_run(void *arg) {
    ThreadJob *j = arg;
    FeatureExtractor *fe = features_create(j->kind);
    for (int r = 0; r < j->rounds; r++) features_compute(fe, j->x, j->n, j->out);
    features_free(fe);
    return NULL;
}

/* Two extractors on two threads at once give exactly what one extractor gives alone. */
static void test_two_threads(void **state) {
    (void)state;
    const int64_t n = 16000 * 4;
    float *a = make_signal(n, 21, 1.0), *b = make_signal(n, 22, 0.5);
    for (int kind = FEAT_FBANK; kind <= FEAT_MFCC; kind++) {
        size_t sz = (size_t)features_num_frames(n) * (size_t)features_dim((FeatureKind)kind);
        float *ra = koe_malloc(sz * sizeof(float)), *rb = koe_malloc(sz * sizeof(float));
        FeatureExtractor *fe = features_create((FeatureKind)kind);
        features_compute(fe, a, n, ra);
        features_compute(fe, b, n, rb);
        features_free(fe);
        float *oa = koe_malloc(sz * sizeof(float)), *ob = koe_malloc(sz * sizeof(float));
        ThreadJob ja = {(FeatureKind)kind, a, n, oa, 5}, jb = {(FeatureKind)kind, b, n, ob, 5};
        pthread_t ta, tb;
        assert_int_equal(pthread_create(&ta, NULL, thread_run, &ja), 0);
        assert_int_equal(pthread_create(&tb, NULL, thread_run, &jb), 0);
        assert_int_equal(pthread_join(ta, NULL), 0);
        assert_int_equal(pthread_join(tb, NULL), 0);
        assert_memory_equal(oa, ra, sz * sizeof(float));
        assert_memory_equal(ob, rb, sz * sizeof(float));
        free(ra);
        free(rb);
        free(oa);
        free(ob);
    }
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_count), cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_short_input), cmocka_unit_test(test_silence),
        cmocka_unit_test(test_fast_matches_naive), cmocka_unit_test(test_few_frames),
        cmocka_unit_test(test_log_range), cmocka_unit_test(test_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

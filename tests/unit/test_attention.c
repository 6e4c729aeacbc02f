/* test_attention.c — the attention kernels (core/attention.c): fast (float, BLAS, threads) against
 * the naive double reference, forward and backward, with and without key padding, odd T, H = 1
 * and H = 4, attention dropout; the fast backward against central finite differences of the
 * double forward; all-padded utterances stay finite; the dropout mask does not depend on the
 * thread count, nor on the utterance's batch position or padding (it is keyed by the utterance id). Dimension letters as in core/layers.h. */
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

#include "../../core/attention_naive.h"
#include "../../core/common.h"
#include "../../core/layers.h"

typedef enum { PAD_NONE, PAD_SUFFIX, PAD_MIXED } PadKind;

typedef struct {
    int B;
    int64_t T;
    int C, H;
    PadKind pad;
    float p;
} Case;

/* A test problem: float inputs and their double copies. */
typedef struct {
    Case c;
    int64_t nqkv, nout, natt;
    float *qkv, *dout;   /* (B, T, 3C), (B, T, C) */
    double *qkvd, *doutd;
    uint8_t *key_pad;    /* (B, T) or NULL */
    AttentionDropout drop;
} Problem;

static Problem problem_make(Case c, uint64_t seed) {
    Problem pr = {.c = c};
    pr.nqkv = (int64_t)c.B * c.T * 3 * c.C;
    pr.nout = (int64_t)c.B * c.T * c.C;
    pr.natt = (int64_t)c.B * c.H * c.T * c.T;
    pr.qkv = koe_malloc((size_t)pr.nqkv * sizeof(float));
    pr.dout = koe_malloc((size_t)pr.nout * sizeof(float));
    pr.qkvd = koe_malloc((size_t)pr.nqkv * sizeof(double));
    pr.doutd = koe_malloc((size_t)pr.nout * sizeof(double));
    KoeRng r = koe_rng(seed, 0, 0, KOE_RNG_INIT);
    /* scale 1.5: scores of a few units, so softmax rows are neither flat nor one-hot */
    for (int64_t i = 0; i < pr.nqkv; i++) pr.qkv[i] = (float)(1.5 * koe_rng_normal(&r)), pr.qkvd[i] = pr.qkv[i];
    for (int64_t i = 0; i < pr.nout; i++) pr.dout[i] = (float)koe_rng_normal(&r), pr.doutd[i] = pr.dout[i];
    pr.key_pad = NULL;
    if (c.pad != PAD_NONE) {
        pr.key_pad = koe_calloc((size_t)(c.B * c.T), 1);
        for (int b = 1; b < c.B; b++) /* utterance 0 full length, the others shorter */
            for (int64_t t = c.T - b * c.T / (c.B + 1); t < c.T; t++) pr.key_pad[b * c.T + t] = 1;
        if (c.pad == PAD_MIXED) {
            pr.key_pad[0 * c.T + 1] = 1; /* a padded key in the middle */
            for (int64_t t = 0; t < c.T; t++) pr.key_pad[(int64_t)(c.B - 1) * c.T + t] = 1; /* all padding */
        }
    }
    static const int64_t ids[4] = {11, 5, 90210, 3}; /* utterance ids keying the dropout masks */
    KOE_ASSERT(c.B <= 4);
    pr.drop = (AttentionDropout){.p = c.p, .seed = seed, .step = 3, .layer = 5, .utt = ids};
    return pr;
}

static void problem_free(Problem *pr) {
    free(pr->qkv), free(pr->dout), free(pr->qkvd), free(pr->doutd), free(pr->key_pad);
}

/* max |got - ref| <= rtol * max|ref| + atol; prints the worst element either way. */
static void check_close(const char *what, const float *got, const double *ref, int64_t n, double rtol, double atol) {
    double maxref = 0, worst = -1;
    int64_t wi = 0;
    for (int64_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= worst)) worst = e, wi = i; /* NaN counts as worst */
    }
    double tol = rtol * maxref + atol;
    printf("  %-28s max|err| %.3g (tol %.3g, max|ref| %.3g) worst [%lld] got %.9g ref %.9g\n", what, worst, tol,
           maxref, (long long)wi, (double)got[wi], ref[wi]);
    assert_true(worst <= tol);
}

/* Fast against naive for one case: out, att, and dqkv (accumulated onto a non-zero start). */
static void run_case(Case c) {
    printf("case B=%d T=%lld C=%d H=%d pad=%d p=%.2f\n", c.B, (long long)c.T, c.C, c.H, (int)c.pad, (double)c.p);
    Problem pr = problem_make(c, 1000 + (uint64_t)c.T);
    float *out = koe_malloc((size_t)pr.nout * sizeof(float)), *att = koe_malloc((size_t)pr.natt * sizeof(float));
    float *dqkv = koe_malloc((size_t)pr.nqkv * sizeof(float));
    double *outd = koe_malloc((size_t)pr.nout * sizeof(double)), *attd = koe_malloc((size_t)pr.natt * sizeof(double));
    double *dqkvd = koe_malloc((size_t)pr.nqkv * sizeof(double));
    float *scratch = koe_malloc((size_t)attention_scratch_floats(c.B, c.T, c.C, c.H) * sizeof(float));
    for (int64_t i = 0; i < pr.nqkv; i++) dqkv[i] = 0.25f, dqkvd[i] = 0.25;

    attention_forward(out, att, pr.qkv, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop, scratch);
    attention_backward(dqkv, pr.dout, pr.qkv, att, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop, scratch);
    attention_forward_naive(outd, attd, pr.qkvd, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop);
    attention_backward_naive(dqkvd, pr.doutd, pr.qkvd, attd, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop);
    check_close("att", att, attd, pr.natt, 1e-5, 1e-7);
    check_close("out", out, outd, pr.nout, 1e-5, 1e-7);
    check_close("dqkv", dqkv, dqkvd, pr.nqkv, 1e-5, 1e-7);
    /* padded keys get probability 0 exactly (unless the whole utterance is padding) */
    if (pr.key_pad)
        for (int b = 0; b < c.B; b++) {
            int all = 1;
            for (int64_t t = 0; t < c.T; t++) all &= pr.key_pad[b * c.T + t];
            for (int h = 0; h < c.H; h++)
                for (int64_t i = 0; i < c.T; i++)
                    for (int64_t j = 0; j < c.T; j++)
                        if (pr.key_pad[b * c.T + j] && !all)
                            assert_true(att[(((int64_t)b * c.H + h) * c.T + i) * c.T + j] == 0.0f);
        }
    free(out), free(att), free(dqkv), free(outd), free(attd), free(dqkvd), free(scratch);
    problem_free(&pr);
}

static void test_fast_vs_naive_nopad(void **state) {
    (void)state;
    run_case((Case){2, 7, 8, 1, PAD_NONE, 0.0f});
    run_case((Case){2, 9, 16, 4, PAD_NONE, 0.0f});
}

static void test_fast_vs_naive_pad(void **state) {
    (void)state;
    run_case((Case){3, 13, 8, 1, PAD_SUFFIX, 0.0f});
    run_case((Case){3, 21, 32, 4, PAD_SUFFIX, 0.0f});
    run_case((Case){3, 17, 16, 4, PAD_MIXED, 0.0f});
}

static void test_fast_vs_naive_dropout(void **state) {
    (void)state;
    run_case((Case){2, 11, 8, 1, PAD_NONE, 0.1f});
    run_case((Case){3, 19, 16, 4, PAD_MIXED, 0.1f});
    run_case((Case){2, 65, 64, 4, PAD_SUFFIX, 0.1f});
}

/* The fast backward against central differences of the double forward, every element of qkv:
 * loss = sum(out * dout). */
static void fd_case(Case c) {
    printf("fd case B=%d T=%lld C=%d H=%d pad=%d p=%.2f\n", c.B, (long long)c.T, c.C, c.H, (int)c.pad, (double)c.p);
    Problem pr = problem_make(c, 77);
    float *out = koe_malloc((size_t)pr.nout * sizeof(float)), *att = koe_malloc((size_t)pr.natt * sizeof(float));
    float *dqkv = koe_calloc((size_t)pr.nqkv, sizeof(float));
    float *scratch = koe_malloc((size_t)attention_scratch_floats(c.B, c.T, c.C, c.H) * sizeof(float));
    double *outd = koe_malloc((size_t)pr.nout * sizeof(double)), *attd = koe_malloc((size_t)pr.natt * sizeof(double));
    double *fd = koe_malloc((size_t)pr.nqkv * sizeof(double));
    double *dnaive = koe_calloc((size_t)pr.nqkv, sizeof(double));
    attention_forward(out, att, pr.qkv, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop, scratch);
    attention_backward(dqkv, pr.dout, pr.qkv, att, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop, scratch);
    attention_forward_naive(outd, attd, pr.qkvd, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop);
    attention_backward_naive(dnaive, pr.doutd, pr.qkvd, attd, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop);
    const double eps = 1e-5;
    for (int64_t i = 0; i < pr.nqkv; i++) {
        double x0 = pr.qkvd[i], lp = 0, lm = 0;
        pr.qkvd[i] = x0 + eps;
        attention_forward_naive(outd, attd, pr.qkvd, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop);
        for (int64_t j = 0; j < pr.nout; j++) lp += outd[j] * pr.doutd[j];
        pr.qkvd[i] = x0 - eps;
        attention_forward_naive(outd, attd, pr.qkvd, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop);
        for (int64_t j = 0; j < pr.nout; j++) lm += outd[j] * pr.doutd[j];
        pr.qkvd[i] = x0;
        fd[i] = (lp - lm) / (2 * eps);
    }
    /* fast (float): float rounding; naive (double): only the FD truncation error */
    check_close("fast dqkv vs finite diff", dqkv, fd, pr.nqkv, 1e-5, 1e-6);
    double maxfd = 0, worst = 0;
    for (int64_t i = 0; i < pr.nqkv; i++) maxfd = fmax(maxfd, fabs(fd[i])), worst = fmax(worst, fabs(dnaive[i] - fd[i]));
    printf("  naive dqkv vs finite diff   max|err| %.3g (max|fd| %.3g)\n", worst, maxfd);
    assert_true(worst <= 1e-7 * maxfd + 1e-9);
    free(out), free(att), free(dqkv), free(scratch), free(outd), free(attd), free(fd), free(dnaive);
    problem_free(&pr);
}

static void test_backward_finite_differences(void **state) {
    (void)state;
    fd_case((Case){2, 5, 8, 1, PAD_NONE, 0.0f});
    fd_case((Case){3, 7, 16, 4, PAD_MIXED, 0.0f});
    fd_case((Case){2, 9, 8, 2, PAD_SUFFIX, 0.1f});
}

/* An utterance that is all padding: everything finite, in forward and backward. */
static void test_all_padded_finite(void **state) {
    (void)state;
    Case c = {2, 12, 16, 4, PAD_NONE, 0.1f};
    Problem pr = problem_make(c, 5);
    pr.key_pad = koe_calloc((size_t)(c.B * c.T), 1);
    memset(pr.key_pad + c.T, 1, (size_t)c.T); /* utterance 1: all padding */
    for (int64_t t = 3; t < c.T; t++) pr.key_pad[t] = 1; /* utterance 0: 3 frames */
    float *out = koe_malloc((size_t)pr.nout * sizeof(float)), *att = koe_malloc((size_t)pr.natt * sizeof(float));
    float *dqkv = koe_calloc((size_t)pr.nqkv, sizeof(float));
    float *scratch = koe_malloc((size_t)attention_scratch_floats(c.B, c.T, c.C, c.H) * sizeof(float));
    attention_forward(out, att, pr.qkv, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop, scratch);
    attention_backward(dqkv, pr.dout, pr.qkv, att, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop, scratch);
    for (int64_t i = 0; i < pr.nout; i++) assert_true(isfinite(out[i]));
    for (int64_t i = 0; i < pr.natt; i++) assert_true(isfinite(att[i]));
    for (int64_t i = 0; i < pr.nqkv; i++) assert_true(isfinite(dqkv[i]));
    /* every probability row sums to 1 */
    for (int64_t r = 0; r < (int64_t)c.B * c.H * c.T; r++) {
        double s = 0;
        for (int64_t j = 0; j < c.T; j++) s += att[r * c.T + j];
        assert_true(fabs(s - 1.0) < 1e-5);
    }
    free(out), free(att), free(dqkv), free(scratch);
    problem_free(&pr);
}

/* Same stream -> the same outputs bit for bit on 1 and 2 threads; the mask drops about p. */
static void test_dropout_thread_independent(void **state) {
    (void)state;
    Case c = {2, 40, 32, 4, PAD_SUFFIX, 0.1f};
    Problem pr = problem_make(c, 9);
    float *out[2], *dqkv[2], *att = koe_malloc((size_t)pr.natt * sizeof(float));
    int saved = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k + 1);
        float *scratch = koe_malloc((size_t)attention_scratch_floats(c.B, c.T, c.C, c.H) * sizeof(float));
        out[k] = koe_malloc((size_t)pr.nout * sizeof(float));
        dqkv[k] = koe_calloc((size_t)pr.nqkv, sizeof(float));
        attention_forward(out[k], att, pr.qkv, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop, scratch);
        attention_backward(dqkv[k], pr.dout, pr.qkv, att, pr.key_pad, c.B, c.T, c.C, c.H, &pr.drop, scratch);
        free(scratch);
    }
    omp_set_num_threads(saved);
    assert_memory_equal(out[0], out[1], (size_t)pr.nout * sizeof(float));
    assert_memory_equal(dqkv[0], dqkv[1], (size_t)pr.nqkv * sizeof(float));
    int64_t kept = 0, n = 0;
    for (int h = 0; h < c.H; h++)
        for (int64_t i = 0; i < c.T; i++)
            for (int64_t j = 0; j < c.T; j++, n++) kept += attention_keep_naive(&pr.drop, 0, h, i, j);
    double frac = (double)(n - kept) / (double)n; /* n = 6400: sd of the fraction 0.0038 */
    printf("  dropped fraction %.4f (p = 0.1)\n", frac);
    assert_true(fabs(frac - 0.1) < 0.02);
    for (int k = 0; k < 2; k++) free(out[k]), free(dqkv[k]);
    free(att);
    problem_free(&pr);
}

/* Dropout keyed by utterance id: an utterance of 13 frames gets the same outputs and gradient alone
 * (B = 1, T = 13) as at batch position 2 of a batch padded to T = 20, and a different id changes them. */
static void test_dropout_keyed_by_utterance(void **state) {
    (void)state;
    const int C = 16, H = 4;
    const int64_t Tv = 13;
    Case cb = {3, 20, C, H, PAD_NONE, 0.2f};
    Problem big = problem_make(cb, 21);
    big.key_pad = koe_calloc((size_t)(cb.B * cb.T), 1);
    for (int b = 0; b < cb.B; b++)
        for (int64_t t = Tv; t < cb.T; t++) {
            big.key_pad[b * cb.T + t] = 1;
            memset(big.dout + (b * cb.T + t) * C, 0, (size_t)C * sizeof(float)); /* no loss on padding */
        }
    const int64_t ids[3] = {7, 1000003, 42};
    big.drop.utt = ids;
    Case ca = {1, Tv, C, H, PAD_NONE, 0.2f};
    Problem one = problem_make(ca, 21);
    for (int64_t t = 0; t < Tv; t++) /* utterance 2's valid frames and output gradient */
        for (int k = 0; k < 3 * C; k++) one.qkv[t * 3 * C + k] = big.qkv[(2 * cb.T + t) * 3 * C + k];
    for (int64_t t = 0; t < Tv; t++)
        for (int k = 0; k < C; k++) one.dout[t * C + k] = big.dout[(2 * cb.T + t) * C + k];
    const int64_t id42 = 42, id43 = 43;
    float *res[3][2]; /* [big, one with id 42, one with id 43][out, dqkv] */
    for (int k = 0; k < 3; k++) {
        Problem *pr = k ? &one : &big;
        if (k) pr->drop.utt = k == 1 ? &id42 : &id43;
        const Case c = pr->c;
        float *att = koe_malloc((size_t)pr->natt * sizeof(float));
        float *scratch = koe_malloc((size_t)attention_scratch_floats(c.B, c.T, C, H) * sizeof(float));
        res[k][0] = koe_malloc((size_t)pr->nout * sizeof(float));
        res[k][1] = koe_calloc((size_t)pr->nqkv, sizeof(float));
        attention_forward(res[k][0], att, pr->qkv, pr->key_pad, c.B, c.T, C, H, &pr->drop, scratch);
        attention_backward(res[k][1], pr->dout, pr->qkv, att, pr->key_pad, c.B, c.T, C, H, &pr->drop, scratch);
        free(att), free(scratch);
    }
    double diff[2] = {0, 0}, other = 0;
    for (int64_t t = 0; t < Tv; t++) {
        for (int k = 0; k < C; k++) {
            diff[0] = fmax(diff[0], fabs(res[0][0][(2 * cb.T + t) * C + k] - res[1][0][t * C + k]));
            other = fmax(other, fabs(res[2][0][t * C + k] - res[1][0][t * C + k]));
        }
        for (int k = 0; k < 3 * C; k++)
            diff[1] = fmax(diff[1], fabs(res[0][1][(2 * cb.T + t) * 3 * C + k] - res[1][1][t * 3 * C + k]));
    }
    printf("  alone vs in a padded batch: max|d out| %.3g max|d dqkv| %.3g; another id: max|d out| %.3g\n", diff[0],
           diff[1], other);
    assert_true(diff[0] < 1e-5 && diff[1] < 1e-5);
    assert_true(other > 1e-2);
    for (int k = 0; k < 3; k++) free(res[k][0]), free(res[k][1]);
    problem_free(&big);
    problem_free(&one);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_naive_nopad),         cmocka_unit_test(test_fast_vs_naive_pad),
        cmocka_unit_test(test_fast_vs_naive_dropout),       cmocka_unit_test(test_backward_finite_differences),
        cmocka_unit_test(test_all_padded_finite),           cmocka_unit_test(test_dropout_thread_independent),
        cmocka_unit_test(test_dropout_keyed_by_utterance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_mask.c — span masks: fairseq's counts and coverage, keyed by utterance (independent of the
 * batch), min spans, short utterances; BEST-RQ masks and noise; the learned mask embedding. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../core/mask.h"

/* Maximal runs of 1s: every run must be at least `span` long unless it touches the end. */
static int runs_ok(const uint8_t *m, int64_t len, int span, int64_t *n_runs) {
    *n_runs = 0;
    for (int64_t t = 0; t < len;) {
        if (!m[t]) {
            t++;
            continue;
        }
        int64_t s = t;
        while (t < len && m[t]) t++;
        (*n_runs)++;
        if (t - s < span && t != len) return 0;
    }
    return 1;
}

static void test_span_count_and_shape(void **state) {
    (void)state;
    enum { LEN = 1000 };
    uint8_t m[LEN];
    for (uint64_t utt = 0; utt < 200; utt++) {
        /* prob * len / span = 5 exactly: n = int(5 + u) = 5 spans of 10 */
        int64_t c = mask_spans(m, LEN, 0.05f, 10, 2, 7, 3, utt), runs;
        int64_t sum = 0;
        for (int t = 0; t < LEN; t++) sum += m[t];
        assert_int_equal(c, sum);
        assert_true(c >= 10 && c <= 50);
        assert_true(runs_ok(m, LEN, 10, &runs));
        assert_true(runs >= 1 && runs <= 5);
        /* prob 0: exactly min_spans spans */
        c = mask_spans(m, LEN, 0.0f, 10, 2, 7, 3, utt);
        assert_true(c >= 10 && c <= 20);
        assert_true(runs_ok(m, LEN, 10, &runs));
        assert_true(runs >= 1 && runs <= 2);
        c = mask_spans(m, LEN, 0.0f, 10, 0, 7, 3, utt);
        assert_int_equal(c, 0);
    }
}

/* Expected masked fraction of fairseq's scheme, n starts without replacement from R = len - span
 * candidates: frame t is masked unless none of its covering starts [max(0, t-span+1), min(t, R-1)]
 * (w of them) is chosen, P = C(R - w, n) / C(R, n). */
static double expected_fraction(int64_t len, int span, int64_t n) {
    int64_t R = len - span;
    double sum = 0;
    for (int64_t t = 0; t < len; t++) {
        int64_t lo = t - span + 1 > 0 ? t - span + 1 : 0, hi = t < R - 1 ? t : R - 1;
        int64_t w = hi >= lo ? hi - lo + 1 : 0;
        double p = 1;
        for (int64_t i = 0; i < n; i++) p *= (double)(R - w - i) / (double)(R - i);
        sum += 1 - (p > 0 ? p : 0);
    }
    return sum / (double)len;
}

static void test_span_coverage_matches_fairseq(void **state) {
    (void)state;
    /* HuBERT: p = 0.8, span 10, 500 frames -> n = int(40 + u) = 40 for every u */
    enum { LEN = 500, N_UTT = 3000 };
    uint8_t m[LEN];
    double frac = 0, start_frac = 0, end_frac = 0, last = 0;
    for (uint64_t u = 0; u < N_UTT; u++) {
        frac += (double)mask_spans(m, LEN, 0.8f, 10, 2, 11, 0, u) / LEN;
        start_frac += m[0];
        end_frac += m[LEN - 2];
        last += m[LEN - 1];
    }
    frac /= N_UTT;
    double want = expected_fraction(LEN, 10, 40);
    assert_true(fabs(frac - want) < 0.005);
    /* frame 0 is covered only by start 0: P = 40/490; frame 498 by start 489 only; starts stop at
     * len - span - 1, so fairseq never masks the last frame */
    assert_true(fabs(start_frac / N_UTT - 40.0 / 490.0) < 0.02);
    assert_true(fabs(end_frac / N_UTT - 40.0 / 490.0) < 0.02);
    assert_true(last == 0);
}

static void test_fractional_count(void **state) {
    (void)state;
    /* prob * len / span = 2.5: n is 2 or 3 with equal odds (u below or above 0.5) -> mean masked
     * frames between the two expectations */
    enum { LEN = 250, N_UTT = 4000 };
    uint8_t m[LEN];
    double mean = 0;
    for (uint64_t u = 0; u < N_UTT; u++) mean += (double)mask_spans(m, LEN, 0.1f, 10, 0, 5, 9, u);
    mean /= N_UTT;
    double want = 0.5 * LEN * (expected_fraction(LEN, 10, 2) + expected_fraction(LEN, 10, 3));
    assert_true(fabs(mean - want) < 0.5);
}

static void test_keyed_by_utterance(void **state) {
    (void)state;
    enum { B = 3, T = 300 };
    int64_t len[B] = {300, 120, 250}, utt[B] = {17, 4, 99};
    uint8_t a[B * T], b[B * T], one[T];
    int64_t ca = mask_spans_batch(a, len, utt, B, T, 0.65f, 10, 2, 1, 5);
    /* the same utterances in another order, in a bigger padded batch: same masks */
    int64_t len2[2] = {250, 300}, utt2[2] = {99, 17};
    mask_spans_batch(b, len2, utt2, 2, T, 0.65f, 10, 2, 1, 5);
    assert_memory_equal(a + 2 * T, b, T);
    assert_memory_equal(a, b + T, T);
    /* alone */
    int64_t c1 = mask_spans(one, 120, 0.65f, 10, 2, 1, 5, 4);
    assert_memory_equal(a + T, one, 120);
    for (int t = 120; t < T; t++) assert_int_equal(a[T + t], 0); /* padding never masked */
    int64_t sum = 0;
    for (int i = 0; i < B * T; i++) sum += a[i];
    assert_int_equal(ca, sum);
    assert_true(c1 > 0);
    /* another step or seed gives another mask */
    mask_spans(one, 300, 0.65f, 10, 2, 1, 6, 17);
    assert_true(memcmp(one, a, T) != 0);
    mask_spans(one, 300, 0.65f, 10, 2, 2, 5, 17);
    assert_true(memcmp(one, a, T) != 0);
}

static void test_short_utterances(void **state) {
    (void)state;
    uint8_t m[16];
    for (int64_t len = 0; len <= 16; len++) {
        for (uint64_t u = 0; u < 50; u++) {
            memset(m, 0xAB, sizeof m);
            int64_t c = mask_spans(m, len, 0.8f, 10, 2, 3, 1, u);
            assert_true(c >= 0 && c <= len);
            if (len >= 3) assert_true(c > 0); /* fairseq: len - span <= n -> starts from [0, n + 1) */
            for (int64_t t = 0; t < len; t++) assert_true(m[t] <= 1);
            for (int64_t t = len; t < 16; t++) assert_int_equal(m[t], 0xAB); /* writes stay inside len */
        }
    }
}

static void test_bestrq(void **state) {
    (void)state;
    enum { LEN = 2000, N_UTT = 400, C = 8 };
    static uint8_t m[LEN];
    double frac = 0;
    for (uint64_t u = 0; u < N_UTT; u++) {
        int64_t c = mask_bestrq(m, LEN, 0.01f, 40, 3, 2, u), runs, sum = 0;
        for (int t = 0; t < LEN; t++) sum += m[t];
        assert_int_equal(c, sum);
        assert_true(runs_ok(m, LEN, 40, &runs));
        frac += (double)c / LEN;
    }
    frac /= N_UTT;
    /* interior frame masked unless none of the 40 frames before it (itself included) starts a span */
    double want = 0;
    for (int t = 0; t < LEN; t++) want += 1 - pow(0.99, t + 1 < 40 ? t + 1 : 40);
    want /= LEN;
    assert_true(fabs(frac - want) < 0.01);

    /* noise: only masked rows change; std 0.1; deterministic */
    float x[LEN * C], y[LEN * C];
    mask_bestrq(m, LEN, 0.01f, 40, 3, 2, 1);
    for (int i = 0; i < LEN * C; i++) x[i] = y[i] = 5.0f;
    mask_bestrq_noise(x, m, LEN, C, 3, 2, 1);
    mask_bestrq_noise(y, m, LEN, C, 3, 2, 1);
    assert_memory_equal(x, y, sizeof x);
    double s2 = 0;
    int64_t n = 0;
    for (int t = 0; t < LEN; t++)
        for (int c = 0; c < C; c++) {
            if (!m[t]) assert_true(x[t * C + c] == 5.0f);
            else {
                s2 += (double)x[t * C + c] * x[t * C + c];
                n++;
            }
        }
    assert_true(n > 100);
    assert_true(fabs(sqrt(s2 / n) - 0.1) < 0.02);
}

static void test_mask_embedding(void **state) {
    (void)state;
    enum { N = 5, D = 3 };
    float x[N * D], emb[D] = {7, 8, 9}, demb[D] = {1, 1, 1}, dx[N * D];
    uint8_t m[N] = {0, 1, 0, 0, 1};
    for (int i = 0; i < N * D; i++) x[i] = (float)i, dx[i] = (float)(i + 1);
    mask_embed_forward(x, m, emb, N, D);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) assert_true(x[i * D + d] == (m[i] ? emb[d] : (float)(i * D + d)));
    mask_embed_backward(demb, dx, m, N, D);
    for (int d = 0; d < D; d++) assert_true(demb[d] == 1.0f + (float)(1 * D + d + 1) + (float)(4 * D + d + 1));
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) assert_true(dx[i * D + d] == (m[i] ? 0.0f : (float)(i * D + d + 1)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_span_count_and_shape), cmocka_unit_test(test_span_coverage_matches_fairseq),
        cmocka_unit_test(test_fractional_count),     cmocka_unit_test(test_keyed_by_utterance),
        cmocka_unit_test(test_short_utterances),     cmocka_unit_test(test_bestrq),
        cmocka_unit_test(test_mask_embedding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

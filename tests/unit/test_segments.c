/* test_segments.c — analysis/segments' conv pooling (koe analyze layers --conv) with known answers:
 * for wav2vec 2.0's conv stack [(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2 the averaging kernels and
 * strides onto the 10 ms fbank are Pasad et al.'s table (layerwise-analysis, spec
 * ../shared/specs/analyze_layers.md §4: C1 (79, 32), C2 (39, 16), C3 (19, 8), C4 (9, 4), C5 (4, 2),
 * C6 (2, 1)); the last layer (50 Hz) is compared with every second fbank frame. Every pooled frame t
 * of every layer covers samples inside [160 t, 160 t + 400), fbank frame t's, by brute force over the
 * receptive fields; stacks whose frames do not fall on the fbank's are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../analysis/segments.h"

static const int W2V_K[7] = {10, 3, 3, 3, 3, 2, 2}, W2V_S[7] = {5, 2, 2, 2, 2, 2, 2};

static void test_pasad_kernels(void **state) {
    (void)state;
    static const int want[7][3] = {{79, 32, 1}, {39, 16, 1}, {19, 8, 1}, {9, 4, 1}, {4, 2, 1}, {2, 1, 1}, {1, 1, 2}};
    for (int c = 0; c < 7; c++) {
        ConvPool p;
        assert_int_equal(segments_conv_pool(W2V_K, W2V_S, c, &p), 0);
        assert_int_equal(p.kernel, want[c][0]);
        assert_int_equal(p.stride, want[c][1]);
        assert_int_equal(p.fb_step, want[c][2]);
    }
}

/* The samples of conv frame j of layer c: [j S, j S + R), from the stack directly. */
static void frame_span(const int *k, const int *s, int c, int64_t j, int64_t *a, int64_t *b) {
    int64_t S = 1, R = 1;
    for (int i = 0; i <= c; i++) R += (int64_t)(k[i] - 1) * S, S *= s[i];
    *a = j * S, *b = j * S + R;
}

static void test_windows_inside_fbank_frame(void **state) {
    (void)state;
    static const int K2[4] = {7, 5, 3, 2}, S2[4] = {4, 2, 4, 5}; /* another stack: S 4, 8, 32, 160 */
    const int *ks[2] = {W2V_K, K2}, *ss[2] = {W2V_S, S2}, nl[2] = {7, 4};
    for (int st = 0; st < 2; st++)
        for (int c = 0; c < nl[st]; c++) {
            ConvPool p;
            assert_int_equal(segments_conv_pool(ks[st], ss[st], c, &p), 0);
            for (int64_t t = 0; t < 50; t++) {
                int64_t a0, b0, a1, b1;
                (void)b0, (void)a1;
                frame_span(ks[st], ss[st], c, t * p.stride, &a0, &b0);
                frame_span(ks[st], ss[st], c, t * p.stride + p.kernel - 1, &a1, &b1);
                const int64_t f = t * p.fb_step; /* fbank frame f covers [160 f, 160 f + 400) */
                assert_int_equal(a0, 160 * f);
                assert_true(b1 <= 160 * f + 400);
                if (p.fb_step == 1) { /* the widest such window: one more frame would not fit */
                    int64_t a2, b2;
                    frame_span(ks[st], ss[st], c, t * p.stride + p.kernel, &a2, &b2);
                    assert_true(b2 > 160 * f + 400);
                }
            }
        }
    /* a pooled frame count: T layer frames, nf fbank frames */
    ConvPool p = {79, 32, 1};
    assert_int_equal(segments_conv_pooled(&p, 78, 100), 0);
    assert_int_equal(segments_conv_pooled(&p, 79, 100), 1);
    assert_int_equal(segments_conv_pooled(&p, 79 + 32 * 9, 100), 10);
    assert_int_equal(segments_conv_pooled(&p, 79 + 32 * 9, 4), 4);
    p = (ConvPool){1, 1, 2};
    assert_int_equal(segments_conv_pooled(&p, 10, 19), 10);
    assert_int_equal(segments_conv_pooled(&p, 10, 18), 9);
}

static void test_refused(void **state) {
    (void)state;
    ConvPool p;
    static const int k3[1] = {10}, s3[1] = {3}; /* 3 samples per step: not on the 10 ms grid */
    assert_int_equal(segments_conv_pool(k3, s3, 0, &p), -1);
    static const int k4[2] = {400, 2}, s4[2] = {160, 1}; /* receptive field 401 > 400 */
    assert_int_equal(segments_conv_pool(k4, s4, 1, &p), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pasad_kernels),
        cmocka_unit_test(test_windows_inside_fbank_frame),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

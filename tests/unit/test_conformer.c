/* test_conformer.c — one Conformer layer (core/conformer.c):
 *   - the parameter table: HF names, unique, contiguous, q/k/v packed, sizes from (D, F, K);
 *   - backward against central finite differences of the float forward (loss sum(out * R)
 *     accumulated in double), every parameter element and every input element, with key padding,
 *     with dropout off and on (the dropout masks are counter-based, so the loss stays a fixed function);
 *   - padding invariance: a padded batch gives the unpadded utterance's outputs on its valid frames,
 *     the padded frames' contents do not matter, and the parameter gradients of the batch are the
 *     sum of the per-utterance ones;
 *   - parity with PyTorch (tests/reference/conformer_ref.py, run by tests/e2e/conformer_parity.sh):
 *     skipped unless KOE_CONFORMER_REF names the reference file (and then the only test run).
 * KOE_DEBUG_FD=1 prints every tensor's finite-difference error, not only the failing ones.
 * Dimension letters as in conformer.h. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../core/common.h"
#include "../../core/conformer.h"
#include "../../core/rng.h"
#include "../../data/h5util.h"
#include "parity.h"

typedef struct {
    int B, D, F, H, K;
    int64_t T;
    float eps;
    int64_t n_params;
    float *params, *grads; /* one layer's block */
    ConformerLayerParams p, g;
    float *act_mem, *scratch;
    ConformerLayerAct act;
    float *out;            /* (B, T, D) */
} Harness;

static void harness_init(Harness *h, int B, int64_t T, int D, int F, int H, int K) {
    memset(h, 0, sizeof(*h));
    h->B = B, h->T = T, h->D = D, h->F = F, h->H = H, h->K = K, h->eps = 1e-5f;
    h->n_params = conformer_layer_param_floats(D, F, K);
    h->params = koe_calloc((size_t)h->n_params, sizeof(float));
    h->grads = koe_calloc((size_t)h->n_params, sizeof(float));
    conformer_layer_bind(&h->p, h->params, D, F, K);
    conformer_layer_bind(&h->g, h->grads, D, F, K);
    h->act_mem = koe_calloc((size_t)conformer_layer_act_floats(B, T, D, F, H), sizeof(float));
    conformer_layer_act_bind(&h->act, h->act_mem, B, T, D, F, H);
    h->scratch = koe_calloc((size_t)conformer_layer_scratch_floats(B, T, D, F, H, K), sizeof(float));
    h->out = koe_calloc((size_t)(B * T * D), sizeof(float));
}

static void harness_free(Harness *h) {
    free(h->params), free(h->grads), free(h->act_mem), free(h->scratch), free(h->out);
}

static void fill_normal(float *x, int64_t n, float mean, float std, uint64_t seed, uint64_t tag) {
    KoeRng r = koe_rng(seed, tag, 0, KOE_RNG_INIT);
    for (int64_t i = 0; i < n; i++) x[i] = mean + std * (float)koe_rng_normal(&r);
}

/* Random parameters with every LayerNorm scale away from 1 and every bias away from 0, so that no
 * gradient term is hidden by a trivial value. */
static void harness_random_params(Harness *h, uint64_t seed) {
    ConformerParamSpec s[CONFORMER_N_PARAMS];
    conformer_layer_param_specs(s, h->D, h->F, h->K);
    for (int i = 0; i < CONFORMER_N_PARAMS; i++) {
        int64_t n = 1;
        for (int d = 0; d < s[i].ndim; d++) n *= s[i].shape[d];
        /* fan-in of a weight: every dim but the first */
        int64_t fan_in = s[i].ndim > 1 ? n / s[i].shape[0] : 1;
        float mean = s[i].init == CONFORMER_INIT_ONES ? 1.0f : 0.0f;
        float std = s[i].ndim > 1 ? 1.0f / sqrtf((float)fan_in) : 0.2f;
        fill_normal(h->params + s[i].offset, n, mean, std, seed, (uint64_t)i);
    }
}

static void harness_forward(Harness *h, const float *x, const uint8_t *key_pad, const ConformerDropout *drop) {
    conformer_layer_forward(h->out, &h->act, x, &h->p, key_pad, h->B, h->T, h->D, h->F, h->H, h->K, h->eps, drop,
                            h->scratch);
}

static void harness_backward(Harness *h, float *dx, const float *dout, const float *x, const uint8_t *key_pad,
                             const ConformerDropout *drop) {
    conformer_layer_backward(dx, &h->g, dout, x, &h->p, &h->act, key_pad, h->B, h->T, h->D, h->F, h->H, h->K, drop,
                             h->scratch);
}

static double harness_loss(Harness *h, const float *x, const uint8_t *key_pad, const ConformerDropout *drop,
                           const float *R) {
    harness_forward(h, x, key_pad, drop);
    double l = 0;
    for (int64_t i = 0; i < (int64_t)h->B * h->T * h->D; i++) l += (double)h->out[i] * R[i];
    return l;
}

static uint8_t *key_pad_from_lengths(int B, int64_t T, const int64_t *len) {
    uint8_t *kp = koe_calloc((size_t)(B * T), 1);
    for (int b = 0; b < B; b++)
        for (int64_t t = len[b]; t < T; t++) kp[b * T + t] = 1;
    return kp;
}

/* ------------------------------------------------------------------------------------------------ */

static void test_param_table(void **state) {
    (void)state;
    const int D = 12, F = 20, K = 7;
    ConformerParamSpec s[CONFORMER_N_PARAMS];
    int64_t total = conformer_layer_param_specs(s, D, F, K);
    /* FFN: LN 2D, (F, D) + F, (D, F) + D; attention: LN 2D, 4 (D, D) + 4 D; conv: LN 2D, (2D, D),
     * (D, K), LN 2D, (D, D); final LN 2D */
    int64_t ffn = 2 * D + F * D + F + D * F + D;
    int64_t expect = 2 * ffn + (2 * D + 4 * D * D + 4 * D) + (2 * D + 2 * D * D + D * K + 2 * D + D * D) + 2 * D;
    assert_int_equal(total, expect);
    assert_int_equal(conformer_layer_param_floats(D, F, K), expect);
    int64_t off = 0;
    for (int i = 0; i < CONFORMER_N_PARAMS; i++) {
        assert_int_equal(s[i].offset, off);
        int64_t n = 1;
        for (int d = 0; d < s[i].ndim; d++) n *= s[i].shape[d];
        off += n;
        for (int j = 0; j < i; j++) assert_true(strcmp(s[i].name, s[j].name) != 0);
        /* LayerNorm weights start at 1, biases at 0 */
        const char *dot = strrchr(s[i].name, '.');
        if (strstr(s[i].name, "layer_norm") && strcmp(dot, ".weight") == 0) assert_int_equal(s[i].init, CONFORMER_INIT_ONES);
        if (strcmp(dot, ".bias") == 0) assert_int_equal(s[i].init, CONFORMER_INIT_ZEROS);
    }
    /* the names transformers' Wav2Vec2ConformerEncoderLayer uses, and PyTorch's conv shapes */
    const char *want[] = {"ffn1_layer_norm.weight", "ffn1.intermediate_dense.weight", "self_attn.linear_q.weight",
                          "self_attn.linear_out.bias", "conv_module.pointwise_conv1.weight",
                          "conv_module.depthwise_conv.weight", "conv_module.depthwise_layer_norm.bias",
                          "ffn2.output_dense.weight", "final_layer_norm.bias"};
    for (size_t w = 0; w < sizeof(want) / sizeof(*want); w++) {
        int found = -1;
        for (int i = 0; i < CONFORMER_N_PARAMS; i++)
            if (strcmp(s[i].name, want[w]) == 0) found = i;
        assert_true(found >= 0);
        if (strcmp(want[w], "conv_module.depthwise_conv.weight") == 0) {
            assert_int_equal(s[found].ndim, 3);
            assert_int_equal(s[found].shape[0], D), assert_int_equal(s[found].shape[1], 1);
            assert_int_equal(s[found].shape[2], K);
        }
    }
    /* views: q|k|v packed, every view inside the block */
    float *block = koe_calloc((size_t)total, sizeof(float));
    ConformerLayerParams p;
    conformer_layer_bind(&p, block, D, F, K);
    assert_ptr_equal(p.ffn1.ln_w, block);
    assert_ptr_equal(p.final_ln_b + D, block + total);
    free(block);
}

/* ------------------------------------------------------------------------------------------------
 * Finite differences. Each element of each parameter tensor and of the input is moved by +-h and
 * the loss difference compared with the analytic gradient, per tensor:
 * |analytic - numeric| <= 1e-2 * max|numeric| + 2e-3 (float forward: the numeric gradient carries
 * ~1e-3 rounding and truncation error; a broken backward term is off by O(max|grad|)). */

typedef struct {
    int bad;
    double worst;
} FdResult;

static FdResult fd_check_tensor(Harness *h, const char *name, float *v, const float *grad, int64_t n,
                                const float *x, const uint8_t *kp, const ConformerDropout *drop, const float *R) {
    const float step = 3e-3f;
    double *num = koe_malloc((size_t)n * sizeof(double));
    double maxnum = 0;
    for (int64_t i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + step;
        double lp = harness_loss(h, x, kp, drop, R);
        v[i] = keep - step;
        double lm = harness_loss(h, x, kp, drop, R);
        v[i] = keep;
        num[i] = (lp - lm) / (2.0 * step);
        if (fabs(num[i]) > maxnum) maxnum = fabs(num[i]);
    }
    double tol = 1e-2 * maxnum + 2e-3, worst = 0;
    int64_t wi = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(grad[i] - num[i]);
        if (e > worst) worst = e, wi = i;
    }
    FdResult r = {worst > tol, worst / tol};
    if (r.bad || getenv("KOE_DEBUG_FD"))
        printf("  %-42s worst |analytic - numeric| = %.3g at %lld (analytic %.6g, numeric %.6g), tol %.3g\n", name,
               worst, (long long)wi, grad[wi], num[wi], tol);
    free(num);
    return r;
}

static void run_gradcheck(const ConformerDropout *drop) {
    const int B = 2, D = 8, F = 12, H = 2, K = 5;
    const int64_t T = 7, len[2] = {7, 4};
    Harness h;
    harness_init(&h, B, T, D, F, H, K);
    harness_random_params(&h, 11);
    int64_t nx = (int64_t)B * T * D;
    float *x = koe_malloc((size_t)nx * sizeof(float)), *R = koe_malloc((size_t)nx * sizeof(float));
    float *dx = koe_calloc((size_t)nx, sizeof(float));
    fill_normal(x, nx, 0.0f, 1.0f, 12, 0);
    fill_normal(R, nx, 0.0f, 1.0f, 13, 0);
    uint8_t *kp = key_pad_from_lengths(B, T, len);

    harness_forward(&h, x, kp, drop);
    harness_backward(&h, dx, R, x, kp, drop);

    ConformerParamSpec s[CONFORMER_N_PARAMS];
    conformer_layer_param_specs(s, D, F, K);
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < CONFORMER_N_PARAMS; i++) {
        int64_t n = 1;
        for (int d = 0; d < s[i].ndim; d++) n *= s[i].shape[d];
        FdResult r = fd_check_tensor(&h, s[i].name, h.params + s[i].offset, h.grads + s[i].offset, n, x, kp, drop, R);
        bad += r.bad;
        if (r.worst > worst) worst = r.worst;
    }
    FdResult r = fd_check_tensor(&h, "input", x, dx, nx, x, kp, drop, R);
    bad += r.bad;
    if (r.worst > worst) worst = r.worst;
    printf("gradcheck (dropout p=%.2f): %d of %d tensors off; worst error / tolerance = %.3g\n", drop->p, bad,
           CONFORMER_N_PARAMS + 1, worst);
    assert_int_equal(bad, 0);
    free(x), free(R), free(dx), free(kp);
    harness_free(&h);
}

static void test_gradcheck(void **state) {
    (void)state;
    ConformerDropout off = {0};
    run_gradcheck(&off);
}

static void test_gradcheck_dropout(void **state) {
    (void)state;
    ConformerDropout on = {.p = 0.2f, .p_act = 0.3f, .p_att = 0.25f, .seed = 5, .step = 3, .stream = 40};
    run_gradcheck(&on);
}

/* ------------------------------------------------------------------------------------------------
 * Padding invariance. */

static float max_abs_diff(const float *a, const float *b, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

static float max_abs(const float *a, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i]));
    return m;
}

static void test_padding_invariance(void **state) {
    (void)state;
    const int D = 16, F = 24, H = 4, K = 7;
    const int64_t T = 12, len[2] = {12, 5};
    ConformerDropout off = {0};
    Harness pair, one[2];
    harness_init(&pair, 2, T, D, F, H, K);
    harness_random_params(&pair, 21);
    for (int b = 0; b < 2; b++) {
        harness_init(&one[b], 1, len[b], D, F, H, K);
        memcpy(one[b].params, pair.params, (size_t)pair.n_params * sizeof(float));
    }
    int64_t nx = 2 * T * D;
    float *x = koe_malloc((size_t)nx * sizeof(float)), *R = koe_malloc((size_t)nx * sizeof(float));
    float *dx = koe_calloc((size_t)nx, sizeof(float));
    fill_normal(x, nx, 0.0f, 1.0f, 22, 0);
    fill_normal(R, nx, 0.0f, 1.0f, 23, 0);
    /* padded frames: large garbage in the input, zero weight in the loss */
    for (int64_t t = len[1]; t < T; t++)
        for (int c = 0; c < D; c++) x[(T + t) * D + c] = 50.0f * x[(T + t) * D + c] + 7.0f, R[(T + t) * D + c] = 0;
    uint8_t *kp = key_pad_from_lengths(2, T, len);
    harness_forward(&pair, x, kp, &off);
    harness_backward(&pair, dx, R, x, kp, &off);

    float *grad_sum = koe_calloc((size_t)pair.n_params, sizeof(float));
    float scale = max_abs(pair.out, nx);
    for (int b = 0; b < 2; b++) {
        int64_t n = len[b] * D;
        float *dx1 = koe_calloc((size_t)n, sizeof(float));
        harness_forward(&one[b], x + b * T * D, NULL, &off);
        harness_backward(&one[b], dx1, R + b * T * D, x + b * T * D, NULL, &off);
        float e = max_abs_diff(one[b].out, pair.out + b * T * D, n);
        float ed = max_abs_diff(dx1, dx + b * T * D, n);
        printf("utterance %d (%lld of %lld frames): max |out diff| %.3g, max |dinp diff| %.3g\n", b,
               (long long)len[b], (long long)T, e, ed);
        assert_true(e <= 1e-5f * scale);
        assert_true(ed <= 1e-5f * max_abs(dx1, n) + 1e-6f);
        for (int64_t i = 0; i < pair.n_params; i++) grad_sum[i] += one[b].grads[i];
        free(dx1);
    }
    /* nothing flows back into the padded frames */
    assert_true(max_abs(dx + (T + len[1]) * D, (T - len[1]) * D) == 0.0f);
    float eg = max_abs_diff(grad_sum, pair.grads, pair.n_params);
    printf("parameter gradients: batch vs sum of utterances, max diff %.3g (max |grad| %.3g)\n", eg,
           max_abs(grad_sum, pair.n_params));
    assert_true(eg <= 1e-5f * max_abs(grad_sum, pair.n_params) + 1e-6f);
    free(x), free(R), free(dx), free(kp), free(grad_sum);
    harness_free(&pair), harness_free(&one[0]), harness_free(&one[1]);
}

/* ------------------------------------------------------------------------------------------------
 * Parity with PyTorch (tests/reference/conformer_ref.py). The file holds flat float32 datasets:
 * param/<name> (weights, by HF name), x, R, lengths (int64), out, x1..x4 (the residual stream after
 * each block), grad/<name>, grad_input (gradients of sum(out * R)); attrs B T D F H K eps. */

static float *ref_read(hid_t f, const char *path, const char *name, int64_t n) {
    KoeError err;
    void *v = NULL;
    if (h5_read_array(f, path, name, H5T_NATIVE_FLOAT, sizeof(float), n, &v, NULL, &err) != 0)
        fail_msg("%s", err.msg);
    return v;
}

static int64_t ref_attr(hid_t f, const char *path, const char *name) {
    KoeError err;
    int64_t v = 0;
    if (h5_attr_read_i64(f, path, name, &v, &err) != 0) fail_msg("%s", err.msg);
    return v;
}

/* error <= 1e-4 * max|ref| + 1e-5; prints the worst element either way. */
static int parity_compare(const char *name, const float *got, const float *ref, int64_t n) {
    return parity_check(name, got, ref, n, NULL);
}

static void test_parity_torch(void **state) {
    (void)state;
    const char *path = getenv("KOE_CONFORMER_REF");
    if (!path) {
        printf("SKIPPED: set KOE_CONFORMER_REF to a file made by tests/reference/conformer_ref.py "
               "(tests/e2e/conformer_parity.sh does both)\n");
        skip();
    }
    h5_init();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_msg("cannot open %s", path);
    int B = (int)ref_attr(f, path, "B"), D = (int)ref_attr(f, path, "D"), F = (int)ref_attr(f, path, "F");
    int H = (int)ref_attr(f, path, "H"), K = (int)ref_attr(f, path, "K");
    int64_t T = ref_attr(f, path, "T");
    Harness h;
    harness_init(&h, B, T, D, F, H, K);
    ConformerParamSpec s[CONFORMER_N_PARAMS];
    conformer_layer_param_specs(s, D, F, K);
    char ds[256];
    for (int i = 0; i < CONFORMER_N_PARAMS; i++) {
        int64_t n = 1;
        for (int d = 0; d < s[i].ndim; d++) n *= s[i].shape[d];
        snprintf(ds, sizeof(ds), "param/%s", s[i].name);
        float *v = ref_read(f, path, ds, n);
        memcpy(h.params + s[i].offset, v, (size_t)n * sizeof(float));
        free(v);
    }
    int64_t nx = (int64_t)B * T * D;
    float *x = ref_read(f, path, "x", nx), *R = ref_read(f, path, "R", nx);
    KoeError err;
    void *lv = NULL;
    if (h5_read_array(f, path, "lengths", H5T_NATIVE_INT64, sizeof(int64_t), B, &lv, NULL, &err) != 0)
        fail_msg("%s", err.msg);
    uint8_t *kp = key_pad_from_lengths(B, T, lv);
    float *dx = koe_calloc((size_t)nx, sizeof(float));
    ConformerDropout off = {0};
    harness_forward(&h, x, kp, &off);
    harness_backward(&h, dx, R, x, kp, &off);

    int ok = 1;
    const struct {
        const char *name;
        const float *got;
    } outs[] = {{"x1", h.act.x1}, {"x2", h.act.x2}, {"x3", h.act.x3}, {"x4", h.act.x4}, {"out", h.out},
                {"grad_input", dx}};
    for (size_t o = 0; o < sizeof(outs) / sizeof(*outs); o++) {
        float *ref = ref_read(f, path, outs[o].name, nx);
        ok &= parity_compare(outs[o].name, outs[o].got, ref, nx);
        free(ref);
    }
    for (int i = 0; i < CONFORMER_N_PARAMS; i++) {
        int64_t n = 1;
        for (int d = 0; d < s[i].ndim; d++) n *= s[i].shape[d];
        snprintf(ds, sizeof(ds), "grad/%s", s[i].name);
        float *ref = ref_read(f, path, ds, n);
        ok &= parity_compare(ds, h.grads + s[i].offset, ref, n);
        free(ref);
    }
    H5Fclose(f);
    free(x), free(R), free(lv), free(kp), free(dx);
    harness_free(&h);
    assert_true(ok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_table),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_gradcheck_dropout),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_parity_torch),
    };
    /* tests/e2e/conformer_parity.sh sets KOE_CONFORMER_REF and needs only the parity test */
    const struct CMUnitTest parity_only[] = {cmocka_unit_test(test_parity_torch)};
    if (getenv("KOE_CONFORMER_REF")) return cmocka_run_group_tests(parity_only, NULL, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

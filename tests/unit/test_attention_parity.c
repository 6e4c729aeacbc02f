/* test_attention_parity.c — attention_forward/attention_backward (core/attention.c) against
 * torchaudio's SelfAttention: the reference file written by tests/reference/attention_ref.py
 * (path in env KOE_ATTENTION_REF; tests/e2e/attention_parity.sh makes it and runs this binary).
 * Without KOE_ATTENTION_REF the test is skipped. The q/k/v/out projections around the kernel are
 * done here with cblas_sgemm; loss = sum(out * R). Every tensor: max|koe - torch| <=
 * 1e-4 * max|torch| + 1e-5, worst element printed. Dimension letters as in core/layers.h. */
#include <cblas.h>
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
#include "../../core/layers.h"
#include "../../data/h5util.h"
#include "parity.h"

static float *read_f32(hid_t f, const char *path, const char *name, int64_t n) {
    void *v;
    KoeError err;
    if (h5_read_array(f, path, name, H5T_NATIVE_FLOAT, sizeof(float), n, &v, NULL, &err))
        koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    return v;
}

static int compare(const char *name, const float *got, const float *ref, int64_t n) {
    return parity_check(name, got, ref, n, NULL);
}

/* y (N, ldy) columns [0, OC) = x (N, Cin) W^T + b, W (OC, Cin). */
static void proj_forward(float *y, int ldy, const float *x, const float *W, const float *b, int N, int Cin, int OC) {
    for (int n = 0; n < N; n++) memcpy(y + (int64_t)n * ldy, b, (size_t)OC * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, Cin, 1.0f, x, Cin, W, Cin, 1.0f, y, ldy);
}

/* Gradients of proj_forward given dy (N, ldy): dW += dy^T x, db += colsum dy, dx += dy W. */
static void proj_backward(float *dx, float *dW, float *db, const float *dy, int ldy, const float *x, const float *W,
                          int N, int Cin, int OC) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, Cin, N, 1.0f, dy, ldy, x, Cin, 1.0f, dW, Cin);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) db[o] += dy[(int64_t)n * ldy + o];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Cin, OC, 1.0f, dy, ldy, W, Cin, 1.0f, dx, Cin);
}

static void test_parity_with_torchaudio(void **state) {
    (void)state;
    const char *path = getenv("KOE_ATTENTION_REF");
    if (!path || !*path) {
        printf("SKIPPED: KOE_ATTENTION_REF is not set; tests/e2e/attention_parity.sh makes the reference file "
               "(tests/reference/attention_ref.py) and runs this test\n");
        skip();
    }
    h5_init();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) koe_fatal(KOE_EXIT_USAGE, "%s: cannot open (%s)", path, h5_last_error());
    int64_t B, T, C, H;
    KoeError err;
    if (h5_attr_read_i64(f, path, "B", &B, &err) || h5_attr_read_i64(f, path, "T", &T, &err) ||
        h5_attr_read_i64(f, path, "C", &C, &err) || h5_attr_read_i64(f, path, "H", &H, &err))
        koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    const int N = (int)(B * T);
    int64_t *lengths;
    if (h5_read_array(f, path, "lengths", H5T_NATIVE_INT64, sizeof(int64_t), B, (void **)&lengths, NULL, &err))
        koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    const char *proj[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    float *W[4], *bias[4], *gW_ref[4], *gb_ref[4];
    char name[64];
    for (int s = 0; s < 4; s++) {
        snprintf(name, sizeof name, "%s.weight", proj[s]), W[s] = read_f32(f, path, name, C * C);
        snprintf(name, sizeof name, "%s.bias", proj[s]), bias[s] = read_f32(f, path, name, C);
        snprintf(name, sizeof name, "grad.%s.weight", proj[s]), gW_ref[s] = read_f32(f, path, name, C * C);
        snprintf(name, sizeof name, "grad.%s.bias", proj[s]), gb_ref[s] = read_f32(f, path, name, C);
    }
    float *x = read_f32(f, path, "x", N * C), *R = read_f32(f, path, "R", N * C);
    float *out_ref = read_f32(f, path, "out", N * C), *gx_ref = read_f32(f, path, "grad.x", N * C);
    H5Fclose(f);

    uint8_t *key_pad = koe_malloc((size_t)N); /* (B, T) */
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) key_pad[b * T + t] = t >= lengths[b];
    float *qkv = koe_malloc((size_t)N * 3 * C * sizeof(float));     /* (B, T, 3C) */
    float *dqkv = koe_calloc((size_t)N * 3 * C, sizeof(float));      /* (B, T, 3C) */
    float *a = koe_malloc((size_t)N * C * sizeof(float));            /* (B, T, C) attention output */
    float *da = koe_calloc((size_t)N * C, sizeof(float));            /* (B, T, C) */
    float *out = koe_malloc((size_t)N * C * sizeof(float));          /* (B, T, C) */
    float *att = koe_malloc((size_t)(B * H * T * T) * sizeof(float)); /* (B, H, T, T) */
    float *scratch = koe_malloc((size_t)attention_scratch_floats((int)B, T, (int)C, (int)H) * sizeof(float));
    float *dx = koe_calloc((size_t)N * C, sizeof(float)), *gW[4], *gb[4];
    for (int s = 0; s < 4; s++) gW[s] = koe_calloc((size_t)(C * C), sizeof(float)), gb[s] = koe_calloc((size_t)C, 4);
    AttentionDropout nodrop = {.p = 0.0f};

    for (int s = 0; s < 3; s++) proj_forward(qkv + s * C, (int)(3 * C), x, W[s], bias[s], N, (int)C, (int)C);
    attention_forward(a, att, qkv, key_pad, (int)B, T, (int)C, (int)H, &nodrop, scratch);
    proj_forward(out, (int)C, a, W[3], bias[3], N, (int)C, (int)C);
    /* d loss / d out = R */
    proj_backward(da, gW[3], gb[3], R, (int)C, a, W[3], N, (int)C, (int)C);
    attention_backward(dqkv, da, qkv, att, key_pad, (int)B, T, (int)C, (int)H, &nodrop, scratch);
    for (int s = 0; s < 3; s++) proj_backward(dx, gW[s], gb[s], dqkv + s * C, (int)(3 * C), x, W[s], N, (int)C, (int)C);

    printf("%s: B=%lld T=%lld C=%lld H=%lld lengths", path, (long long)B, (long long)T, (long long)C, (long long)H);
    for (int64_t b = 0; b < B; b++) printf(" %lld", (long long)lengths[b]);
    printf("\n");
    int ok = compare("out", out, out_ref, N * C);
    ok &= compare("grad.x", dx, gx_ref, N * C);
    for (int s = 0; s < 4; s++) {
        snprintf(name, sizeof name, "grad.%s.weight", proj[s]), ok &= compare(name, gW[s], gW_ref[s], C * C);
        snprintf(name, sizeof name, "grad.%s.bias", proj[s]), ok &= compare(name, gb[s], gb_ref[s], C);
    }
    assert_true(ok);

    for (int s = 0; s < 4; s++) free(W[s]), free(bias[s]), free(gW_ref[s]), free(gb_ref[s]), free(gW[s]), free(gb[s]);
    free(x), free(R), free(out_ref), free(gx_ref), free(lengths), free(key_pad), free(qkv), free(dqkv), free(a);
    free(da), free(out), free(att), free(scratch), free(dx);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parity_with_torchaudio)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

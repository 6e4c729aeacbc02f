/* test_layers_parity.c — the layer kernels against PyTorch on the tensors that
 * tests/reference/layers_ref.py writes (run by tests/e2e/layers_parity.sh, which sets KOE_LAYERS_REF
 * to the .h5 path). Without KOE_LAYERS_REF every test is skipped with a message saying so.
 * For each case: forward output and the gradients of sum(out * R) for every input and parameter,
 * each within 1e-4 * max|ref| + 1e-5 (tests/unit/parity.h); the worst element is printed on failure
 * and every tensor's max error is printed as a "parity" line for the report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <math.h>

#include "../../core/common.h"
#include "../../core/layers.h"
#include "../../data/h5util.h"
#include "parity.h"

typedef struct {
    hid_t file, grp;
    const char *path;
    char name[64];
} RefCase;

static const char *ref_path(void) {
    const char *p = getenv("KOE_LAYERS_REF");
    if (!p || !*p) {
        print_message("KOE_LAYERS_REF is not set: skipping the PyTorch parity checks (run tests/e2e/layers_parity.sh, "
                      "which makes the reference file and sets it)\n");
        skip();
    }
    return p;
}

static RefCase ref_open(const char *name) {
    RefCase c = {.path = ref_path()};
    snprintf(c.name, sizeof c.name, "%s", name);
    h5_init();
    c.file = H5Fopen(c.path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (c.file < 0) fail_msg("%s: cannot open: %s", c.path, h5_last_error());
    c.grp = H5Gopen2(c.file, name, H5P_DEFAULT);
    if (c.grp < 0) fail_msg("%s: no group '%s' (regenerate it with tests/reference/layers_ref.py)", c.path, name);
    return c;
}

static void ref_close(RefCase *c) {
    H5Gclose(c->grp);
    H5Fclose(c->file);
}

static int64_t ref_int(RefCase *c, const char *attr) {
    int64_t v;
    KoeError err;
    if (h5_attr_read_i64(c->grp, c->path, attr, &v, &err) < 0) fail_msg("%s/%s: %s", c->path, c->name, err.msg);
    return v;
}

static float *ref_tensor(RefCase *c, const char *name, int64_t n) {
    void *v;
    KoeError err;
    if (h5_read_array(c->grp, c->path, name, H5T_NATIVE_FLOAT, sizeof(float), n, &v, NULL, &err) < 0)
        fail_msg("%s/%s: %s", c->path, c->name, err.msg);
    return v;
}

static float *zeros(int64_t n) { return koe_calloc((size_t)(n ? n : 1), sizeof(float)); }

/* got vs the reference dataset `name` of the case: 1e-4 * max|ref| + 1e-5 */
static void ref_check(RefCase *c, const char *name, const float *got, int64_t n) {
    float *ref = ref_tensor(c, name, n);
    char what[96];
    snprintf(what, sizeof what, "%s %s", c->name, name);
    ParityResult r;
    if (!parity_check(what, got, ref, n, &r))
        fail_msg("%s: worst element %lld: koe %.9g, torch %.9g, |err| %.3g > tol %.3g", what, (long long)r.at,
                 got[r.at], ref[r.at], r.worst, r.tol);
    free(ref);
}

static void test_linear(void **state) {
    (void)state;
    RefCase c = ref_open("linear");
    int64_t N = ref_int(&c, "N");
    int C = (int)ref_int(&c, "C"), OC = (int)ref_int(&c, "OC");
    float *x = ref_tensor(&c, "x", N * C), *w = ref_tensor(&c, "w", (int64_t)OC * C), *b = ref_tensor(&c, "b", OC);
    float *R = ref_tensor(&c, "R", N * OC), *out = zeros(N * OC);
    float *dx = zeros(N * C), *dw = zeros((int64_t)OC * C), *db = zeros(OC);
    linear_forward(out, x, w, b, N, C, OC);
    linear_backward(dx, dw, db, R, x, w, N, C, OC);
    ref_check(&c, "out", out, N * OC);
    ref_check(&c, "dx", dx, N * C);
    ref_check(&c, "dw", dw, (int64_t)OC * C);
    ref_check(&c, "db", db, OC);
    free(x), free(w), free(b), free(R), free(out), free(dx), free(dw), free(db);
    ref_close(&c);
}

static void run_conv_case(const char *name) {
    RefCase c = ref_open(name);
    int B = (int)ref_int(&c, "B"), C = (int)ref_int(&c, "C"), OC = (int)ref_int(&c, "OC");
    int K = (int)ref_int(&c, "K"), S = (int)ref_int(&c, "stride"), P = (int)ref_int(&c, "pad");
    int G = (int)ref_int(&c, "G"), has_bias = (int)ref_int(&c, "bias");
    int64_t Ti = ref_int(&c, "Ti"), To = conv1d_out_len(Ti, K, S, P);
    int64_t nx = B * Ti * C, nw = (int64_t)OC * (C / G) * K, ny = B * To * OC;
    float *x = ref_tensor(&c, "x", nx), *w = ref_tensor(&c, "w", nw), *b = has_bias ? ref_tensor(&c, "b", OC) : NULL;
    float *R = ref_tensor(&c, "R", ny), *out = zeros(ny), *dx = zeros(nx), *dw = zeros(nw);
    float *db = has_bias ? zeros(OC) : NULL;
    float *scratch = zeros(conv1d_scratch_floats(B, Ti, C, OC, K, S, P, G));
    conv1d_forward(out, x, w, b, B, Ti, C, OC, K, S, P, G, scratch);
    conv1d_backward(dx, dw, db, R, x, w, B, Ti, C, OC, K, S, P, G, scratch);
    ref_check(&c, "out", out, ny);
    ref_check(&c, "dx", dx, nx);
    ref_check(&c, "dw", dw, nw);
    if (has_bias) ref_check(&c, "db", db, OC);
    free(x), free(w), free(b), free(R), free(out), free(dx), free(dw), free(db), free(scratch);
    ref_close(&c);
}

static void test_conv_waveform0(void **state) {
    (void)state;
    run_conv_case("conv_waveform0");
}
static void test_conv_strided(void **state) {
    (void)state;
    run_conv_case("conv_strided");
}
static void test_conv_grouped_same(void **state) {
    (void)state;
    run_conv_case("conv_grouped_same");
}
static void test_conv_depthwise(void **state) {
    (void)state;
    run_conv_case("conv_depthwise");
}

static void run_norm_case(const char *name, int group) {
    RefCase c = ref_open(name);
    int B = group ? (int)ref_int(&c, "B") : 1, C = (int)ref_int(&c, "C");
    int64_t T = group ? ref_int(&c, "T") : ref_int(&c, "N"), n = B * T * C, nstat = group ? (int64_t)B * C : T;
    float *x = ref_tensor(&c, "x", n), *w = ref_tensor(&c, "w", C), *b = ref_tensor(&c, "b", C);
    float *R = ref_tensor(&c, "R", n), *out = zeros(n), *dx = zeros(n), *dw = zeros(C), *db = zeros(C);
    float *mean = zeros(nstat), *rstd = zeros(nstat);
    if (group) {
        groupnorm_forward(out, mean, rstd, x, w, b, B, T, C, 1e-5f);
        groupnorm_backward(dx, dw, db, R, x, w, mean, rstd, B, T, C);
    } else {
        layernorm_forward(out, mean, rstd, x, w, b, T, C, 1e-5f);
        layernorm_backward(dx, dw, db, R, x, w, mean, rstd, T, C);
    }
    ref_check(&c, "out", out, n);
    ref_check(&c, "dx", dx, n);
    ref_check(&c, "dw", dw, C);
    ref_check(&c, "db", db, C);
    free(x), free(w), free(b), free(R), free(out), free(dx), free(dw), free(db), free(mean), free(rstd);
    ref_close(&c);
}

static void test_layernorm(void **state) {
    (void)state;
    run_norm_case("layernorm", 0);
}
static void test_groupnorm(void **state) {
    (void)state;
    run_norm_case("groupnorm", 1);
}

static void test_activations(void **state) {
    (void)state;
    const char *names[3] = {"gelu", "swish", "glu"};
    for (int a = 0; a < 3; a++) {
        RefCase c = ref_open(names[a]);
        int64_t nin, nout;
        int C = 0;
        if (a == 2) {
            C = (int)ref_int(&c, "C");
            nout = ref_int(&c, "N") * C;
            nin = 2 * nout;
        } else {
            nin = nout = ref_int(&c, "n");
        }
        float *x = ref_tensor(&c, "x", nin), *R = ref_tensor(&c, "R", nout), *out = zeros(nout), *dx = zeros(nin);
        if (a == 0) {
            gelu_forward(out, x, nin);
            gelu_backward(dx, R, x, nin);
        } else if (a == 1) {
            swish_forward(out, x, nin);
            swish_backward(dx, R, x, nin);
        } else {
            glu_forward(out, x, nout / C, C);
            glu_backward(dx, R, x, nout / C, C);
        }
        ref_check(&c, "out", out, nout);
        ref_check(&c, "dx", dx, nin);
        free(x), free(R), free(out), free(dx);
        ref_close(&c);
    }
}

/* weight_norm(dim=2) -> grouped "same" conv -> drop the last frame: torchaudio's positional conv */
static void test_weightnorm_conv(void **state) {
    (void)state;
    RefCase c = ref_open("weightnorm_conv");
    int B = (int)ref_int(&c, "B"), C = (int)ref_int(&c, "C"), K = (int)ref_int(&c, "K"), G = (int)ref_int(&c, "G");
    int64_t T = ref_int(&c, "T"), To = conv1d_out_len(T, K, 1, K / 2), nx = B * T * C, nw = (int64_t)C * (C / G) * K;
    float *x = ref_tensor(&c, "x", nx), *g = ref_tensor(&c, "g", K), *v = ref_tensor(&c, "v", nw);
    float *b = ref_tensor(&c, "b", C), *R = ref_tensor(&c, "R", nx);
    float *w = zeros(nw), *norm = zeros(K), *full = zeros(B * To * C), *out = zeros(nx), *dfull = zeros(B * To * C);
    float *dx = zeros(nx), *dw = zeros(nw), *dg = zeros(K), *dv = zeros(nw), *db = zeros(C);
    float *scratch = zeros(conv1d_scratch_floats(B, T, C, C, K, 1, K / 2, G));
    float *wns = zeros(weightnorm_scratch_floats(K));
    weightnorm_forward(w, norm, g, v, C, C / G, K, wns);
    conv1d_forward(full, x, w, b, B, T, C, C, K, 1, K / 2, G, scratch);
    for (int bb = 0; bb < B; bb++) {
        memcpy(out + (int64_t)bb * T * C, full + (int64_t)bb * To * C, (size_t)(T * C) * sizeof(float));
        memcpy(dfull + (int64_t)bb * To * C, R + (int64_t)bb * T * C, (size_t)(T * C) * sizeof(float));
    }
    conv1d_backward(dx, dw, db, dfull, x, w, B, T, C, C, K, 1, K / 2, G, scratch);
    weightnorm_backward(dg, dv, dw, g, v, norm, C, C / G, K, wns);
    ref_check(&c, "w", w, nw);
    ref_check(&c, "out", out, nx);
    ref_check(&c, "dx", dx, nx);
    ref_check(&c, "db", db, C);
    ref_check(&c, "dg", dg, K);
    ref_check(&c, "dv", dv, nw);
    free(x), free(g), free(v), free(b), free(R), free(w), free(norm), free(full), free(out), free(dfull);
    free(dx), free(dw), free(dg), free(dv), free(db), free(scratch), free(wns);
    ref_close(&c);
}

static void test_dropout(void **state) {
    (void)state;
    RefCase c = ref_open("dropout");
    int64_t n = ref_int(&c, "n");
    double p;
    KoeError err;
    if (h5_attr_read_f64(c.grp, c.path, "p", &p, &err) < 0) fail_msg("%s", err.msg);
    uint64_t seed = (uint64_t)ref_int(&c, "seed"), a = (uint64_t)ref_int(&c, "a"), b = (uint64_t)ref_int(&c, "b");
    float *x = ref_tensor(&c, "x", n), *R = ref_tensor(&c, "R", n), *out = zeros(n), *dx = zeros(n);
    dropout_forward(out, x, n, (float)p, seed, a, b);
    dropout_backward(dx, R, n, (float)p, seed, a, b);
    ref_check(&c, "out", out, n);
    ref_check(&c, "dx", dx, n);
    free(x), free(R), free(out), free(dx);
    ref_close(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),          cmocka_unit_test(test_conv_waveform0),
        cmocka_unit_test(test_conv_strided),    cmocka_unit_test(test_conv_grouped_same),
        cmocka_unit_test(test_conv_depthwise),  cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_groupnorm),       cmocka_unit_test(test_activations),
        cmocka_unit_test(test_weightnorm_conv), cmocka_unit_test(test_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

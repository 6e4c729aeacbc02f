/* bench_layers.c — times the layer kernels at HuBERT Base sizes (batch 2 x 4 s of audio: waveform
 * stack, positional conv, one transformer layer's norms/activations/linears, the conformer's
 * depthwise conv) and prints one line per kernel: median ms of forward and backward over --reps
 * runs, and GFLOP/s for the GEMM-shaped ones. A measurement, not a test: nothing is asserted.
 *   bench_layers [--reps N] [--only NAME] [--bf16]
 * --bf16: as a bf16 run (gemm_set_precision): every GEMM rounds its fp32 operands to bf16, as the
 * positional conv's and the linears' fp32 inputs are in a bf16 step (the waveform stack's bf16-kept
 * activations are not modelled here: tests/bench/bench_conv_dnnl.c --bf16 has them).
 * Threads from OMP_NUM_THREADS / OPENBLAS_NUM_THREADS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/common.h"
#include "../../core/gemm.h"
#include "../../core/layers.h"
#include "../../core/rng.h"

static int reps = 5;
static const char *only = NULL;

static float *randn(int64_t n, KoeRng *r) {
    float *x = koe_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = (float)koe_rng_normal(r);
    return x;
}

static void report(const char *name, const double *tf, const double *tb, double gflop_fwd) {
    double f[64], b[64];
    memcpy(f, tf, (size_t)reps * sizeof(double));
    memcpy(b, tb, (size_t)reps * sizeof(double));
    double mf = koe_median(f, reps), mb = koe_median(b, reps);
    printf("%-28s fwd %9.2f ms  bwd %9.2f ms", name, 1e3 * mf, 1e3 * mb);
    if (gflop_fwd > 0) printf("  fwd %6.1f GFLOP/s  bwd %6.1f GFLOP/s", gflop_fwd / mf, 2 * gflop_fwd / mb);
    printf("\n");
    fflush(stdout);
}

static int wanted(const char *name) { return !only || strstr(name, only); }

static void bench_conv(const char *name, int B, int64_t Ti, int C, int OC, int K, int S, int P, int G, int need_dinp,
                       KoeRng *r) {
    if (!wanted(name)) return;
    int64_t To = conv1d_out_len(Ti, K, S, P);
    float *x = randn(B * Ti * C, r), *w = randn((int64_t)OC * (C / G) * K, r), *dy = randn(B * To * OC, r);
    float *y = koe_malloc((size_t)(B * To * OC) * sizeof(float)), *dx = koe_calloc((size_t)(B * Ti * C), sizeof(float));
    float *dw = koe_calloc((size_t)OC * (C / G) * K, sizeof(float));
    float *scratch = koe_malloc((size_t)conv1d_scratch_floats(B, Ti, C, OC, K, S, P, G) * sizeof(float));
    double tf[64], tb[64];
    for (int i = 0; i < reps; i++) {
        double t0 = koe_now();
        conv1d_forward(y, x, w, NULL, B, Ti, C, OC, K, S, P, G, scratch);
        double t1 = koe_now();
        conv1d_backward(need_dinp ? dx : NULL, dw, NULL, dy, x, w, B, Ti, C, OC, K, S, P, G, scratch);
        tb[i] = koe_now() - t1;
        tf[i] = t1 - t0;
    }
    report(name, tf, tb, 2e-9 * B * To * OC * (C / G) * K);
    free(x), free(w), free(dy), free(y), free(dx), free(dw), free(scratch);
}

static void bench_linear(const char *name, int64_t N, int C, int OC, KoeRng *r) {
    if (!wanted(name)) return;
    float *x = randn(N * C, r), *w = randn((int64_t)OC * C, r), *b = randn(OC, r), *dy = randn(N * OC, r);
    float *y = koe_malloc((size_t)(N * OC) * sizeof(float)), *dx = koe_calloc((size_t)(N * C), sizeof(float));
    float *dw = koe_calloc((size_t)OC * C, sizeof(float)), *db = koe_calloc((size_t)OC, sizeof(float));
    double tf[64], tb[64];
    for (int i = 0; i < reps; i++) {
        double t0 = koe_now();
        linear_forward(y, x, w, b, N, C, OC);
        double t1 = koe_now();
        linear_backward(dx, dw, db, dy, x, w, N, C, OC);
        tb[i] = koe_now() - t1;
        tf[i] = t1 - t0;
    }
    report(name, tf, tb, 2e-9 * N * C * OC);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
}

static void bench_norm(const char *name, int group, int B, int64_t T, int C, KoeRng *r) {
    if (!wanted(name)) return;
    int64_t n = B * T * C, ns = group ? (int64_t)B * C : B * T;
    float *x = randn(n, r), *w = randn(C, r), *b = randn(C, r), *dy = randn(n, r);
    float *y = koe_malloc((size_t)n * sizeof(float)), *dx = koe_calloc((size_t)n, sizeof(float));
    float *dw = koe_calloc((size_t)C, sizeof(float)), *db = koe_calloc((size_t)C, sizeof(float));
    float *mean = koe_malloc((size_t)ns * sizeof(float)), *rstd = koe_malloc((size_t)ns * sizeof(float));
    double tf[64], tb[64];
    for (int i = 0; i < reps; i++) {
        double t0 = koe_now();
        if (group)
            groupnorm_forward(y, mean, rstd, x, w, b, B, T, C, 1e-5f);
        else
            layernorm_forward(y, mean, rstd, x, w, b, B * T, C, 1e-5f);
        double t1 = koe_now();
        if (group)
            groupnorm_backward(dx, dw, db, dy, x, w, mean, rstd, B, T, C);
        else
            layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, B * T, C);
        tb[i] = koe_now() - t1;
        tf[i] = t1 - t0;
    }
    report(name, tf, tb, 0);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db), free(mean), free(rstd);
}

static void bench_gelu(const char *name, int64_t n, KoeRng *r) {
    if (!wanted(name)) return;
    float *x = randn(n, r), *dy = randn(n, r), *y = koe_malloc((size_t)n * sizeof(float));
    float *dx = koe_calloc((size_t)n, sizeof(float));
    double tf[64], tb[64];
    for (int i = 0; i < reps; i++) {
        double t0 = koe_now();
        gelu_forward(y, x, n);
        double t1 = koe_now();
        gelu_backward(dx, dy, x, n);
        tb[i] = koe_now() - t1;
        tf[i] = t1 - t0;
    }
    report(name, tf, tb, 0);
    free(x), free(dy), free(y), free(dx);
}

static void bench_weightnorm(const char *name, int OC, int Ci, int K, KoeRng *r) {
    if (!wanted(name)) return;
    int64_t n = (int64_t)OC * Ci * K;
    float *g = randn(K, r), *v = randn(n, r), *dw = randn(n, r), *w = koe_malloc((size_t)n * sizeof(float));
    float *norm = koe_malloc((size_t)K * sizeof(float)), *dg = koe_calloc((size_t)K, sizeof(float));
    float *dv = koe_calloc((size_t)n, sizeof(float));
    float *s = koe_malloc((size_t)weightnorm_scratch_floats(K) * sizeof(float));
    double tf[64], tb[64];
    for (int i = 0; i < reps; i++) {
        double t0 = koe_now();
        weightnorm_forward(w, norm, g, v, OC, Ci, K, s);
        double t1 = koe_now();
        weightnorm_backward(dg, dv, dw, g, v, norm, OC, Ci, K, s);
        tb[i] = koe_now() - t1;
        tf[i] = t1 - t0;
    }
    report(name, tf, tb, 0);
    free(g), free(v), free(dw), free(w), free(norm), free(dg), free(dv), free(s);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--bf16")) {
            if (!gemm_bf16_supported())
                koe_fatal(KOE_EXIT_USAGE,
                          "bench_layers --bf16: oneDNN has no bf16 GEMM on this CPU (no AVX512_BF16 or AMX)");
            gemm_set_precision(GEMM_BF16);
        } else {
            fprintf(stderr, "usage: bench_layers [--reps N (1..64, default 5)] [--only NAME] [--bf16]\n");
            return 1;
        }
    }
    if (reps < 1 || reps > 64) koe_fatal(KOE_EXIT_USAGE, "bench_layers: --reps must be 1..64, got %d", reps);
    KoeRng r = koe_rng(1, 0, 0, KOE_RNG_INIT);
    const int B = 2;
    const int64_t S = 64000; /* 4 s at 16 kHz */
    int64_t T = S;
    int K[7] = {10, 3, 3, 3, 3, 2, 2}, St[7] = {5, 2, 2, 2, 2, 2, 2};
    for (int l = 0; l < 7; l++) {
        char name[32];
        snprintf(name, sizeof name, "conv_waveform%d", l);
        bench_conv(name, B, T, l ? 512 : 1, 512, K[l], St[l], 0, 1, l > 0, &r);
        T = conv1d_out_len(T, K[l], St[l], 0);
    }
    bench_norm("groupnorm_waveform0", 1, B, conv1d_out_len(S, 10, 5, 0), 512, &r);
    bench_conv("conv_positional", B, T, 768, 768, 128, 1, 64, 16, 1, &r);
    bench_weightnorm("weightnorm_positional", 768, 48, 128, &r);
    bench_linear("linear_qkv", B * T, 768, 3 * 768, &r);
    bench_linear("linear_ffn1", B * T, 768, 3072, &r);
    bench_linear("linear_ffn2", B * T, 3072, 768, &r);
    bench_norm("layernorm_768", 0, B, T, 768, &r);
    bench_gelu("gelu_ffn", B * T * 3072, &r);
    bench_conv("conv_depthwise_conformer", B, T, 768, 768, 31, 1, 15, 768, 1, &r);
    return 0;
}

/* test_layers.c — every kernel of layers.h except attention, three ways on one table of cases:
 *   1. fast (float, layers.c) forward vs the naive double reference (layers_naive.c);
 *   2. fast backward vs naive backward, both accumulating onto random nonzero gradients (so a
 *      backward that overwrites instead of adding fails);
 *   3. finite differences in double: for each input tensor x_j and a random direction d,
 *      <dL/dx_j, d> from the fast and from the naive backward against
 *      (L(x + h d) - L(x - h d)) / 2h with L = <forward_naive(x), R>.
 * The objective heads' kernels (row normalisation, softmax cross-entropy, gathered rows) run the same way.
 * Tolerances: fast vs naive 1e-4 * max|ref| + 1e-5 per tensor (the project's parity rule), worst
 * element printed on failure; directional derivatives 1e-4 (fast) and 1e-7 (naive) of sum|g_i d_i|. */
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

#include "../../core/common.h"
#include "../../core/layers.h"
#include "../../core/layers_naive.h"
#include "../../core/rng.h"

#define MAX_IN 4

/* A kernel under test: up to MAX_IN input tensors (activations and parameters alike) -> one output.
 * fwd saves whatever its backward needs inside ctx; bwd accumulates into din[j] (NULL: not needed). */
typedef struct {
    const char *name;
    int n_in;
    int64_t in_n[MAX_IN];
    int64_t out_n;
    double in_scale[MAX_IN]; /* inputs are N(in_offset, in_scale^2) */
    double in_offset[MAX_IN];
    void (*fwd)(void *ctx, float *out, float *const *in);
    void (*bwd)(void *ctx, float *const *din, const float *dout, float *const *in);
    void (*fwd_d)(void *ctx, double *out, double *const *in);
    void (*bwd_d)(void *ctx, double *const *din, const double *dout, double *const *in);
    void *ctx;
} Kernel;

static void fill_normal(float *x, int64_t n, double scale, double offset, KoeRng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(offset + scale * koe_rng_normal(r));
}

static void to_double(double *d, const float *f, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = f[i];
}

/* 0 if |got - ref| <= 1e-4 * max|ref| + 1e-5 everywhere, else prints the worst element and returns 1 */
static int check_close(const char *what, const char *tensor, const float *got, const double *ref, int64_t n) {
    double maxref = 0.0, worst = -1.0;
    int64_t wi = 0;
    for (int64_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
    double tol = 1e-4 * maxref + 1e-5;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= worst)) {
            worst = e;
            wi = i;
        }
    }
    if (!(worst <= tol)) {
        print_error("%s %s: worst element %lld: got %.9g, ref %.9g, |err| %.3g > tol %.3g (max|ref| %.3g)\n", what,
                    tensor, (long long)wi, got[wi], ref[wi], worst, tol, maxref);
        return 1;
    }
    return 0;
}

/* L = <forward_naive(x), R> in double */
static double loss_d(const Kernel *k, double *const *in, const double *R, double *out) {
    k->fwd_d(k->ctx, out, in);
    double L = 0.0;
    for (int64_t i = 0; i < k->out_n; i++) L += out[i] * R[i];
    return L;
}

static void run_kernel(const Kernel *k, uint64_t seed) {
    KoeRng r = koe_rng(seed, 0, 0, KOE_RNG_INIT);
    float *in[MAX_IN], *din[MAX_IN], *g0[MAX_IN];
    double *in_d[MAX_IN], *din_d[MAX_IN];
    for (int j = 0; j < k->n_in; j++) {
        int64_t n = k->in_n[j];
        in[j] = koe_malloc((size_t)n * sizeof(float));
        din[j] = koe_malloc((size_t)n * sizeof(float));
        g0[j] = koe_malloc((size_t)n * sizeof(float));
        in_d[j] = koe_malloc((size_t)n * sizeof(double));
        din_d[j] = koe_malloc((size_t)n * sizeof(double));
        fill_normal(in[j], n, k->in_scale[j], k->in_offset[j], &r);
        to_double(in_d[j], in[j], n);
        fill_normal(g0[j], n, 1.0, 0.0, &r);
        memcpy(din[j], g0[j], (size_t)n * sizeof(float));
        to_double(din_d[j], g0[j], n);
    }
    float *out = koe_malloc((size_t)k->out_n * sizeof(float)), *R = koe_malloc((size_t)k->out_n * sizeof(float));
    double *out_d = koe_malloc((size_t)k->out_n * sizeof(double)), *R_d = koe_malloc((size_t)k->out_n * sizeof(double));
    fill_normal(R, k->out_n, 1.0, 0.0, &r);
    to_double(R_d, R, k->out_n);

    /* every check runs and reports; the kernel fails at the end if any did */
    int bad = 0;
    /* 1. forward */
    k->fwd(k->ctx, out, in);
    k->fwd_d(k->ctx, out_d, in_d);
    bad |= check_close(k->name, "forward", out, out_d, k->out_n);

    /* 2. backward of L = <out, R>: increments over the random starting gradients */
    k->bwd(k->ctx, din, R, in);
    k->bwd_d(k->ctx, din_d, R_d, in_d);
    for (int j = 0; j < k->n_in; j++) {
        int64_t n = k->in_n[j];
        for (int64_t i = 0; i < n; i++) {
            din[j][i] -= g0[j][i];
            din_d[j][i] -= g0[j][i];
        }
        char tensor[32];
        snprintf(tensor, sizeof tensor, "grad of input %d", j);
        bad |= check_close(k->name, tensor, din[j], din_d[j], n);
    }

    /* 3. directional finite differences through the naive forward */
    const double h = 1e-5;
    for (int j = 0; j < k->n_in; j++) {
        int64_t n = k->in_n[j];
        double *dir = koe_malloc((size_t)n * sizeof(double)), *x0 = koe_malloc((size_t)n * sizeof(double));
        memcpy(x0, in_d[j], (size_t)n * sizeof(double));
        double a_fast = 0.0, a_naive = 0.0, scale = 0.0;
        for (int64_t i = 0; i < n; i++) {
            dir[i] = koe_rng_normal(&r);
            a_fast += din[j][i] * dir[i];
            a_naive += din_d[j][i] * dir[i];
            scale += fabs(din_d[j][i] * dir[i]);
        }
        for (int64_t i = 0; i < n; i++) in_d[j][i] = x0[i] + h * dir[i];
        double Lp = loss_d(k, in_d, R_d, out_d);
        for (int64_t i = 0; i < n; i++) in_d[j][i] = x0[i] - h * dir[i];
        double Lm = loss_d(k, in_d, R_d, out_d);
        memcpy(in_d[j], x0, (size_t)n * sizeof(double));
        double fd = (Lp - Lm) / (2 * h);
        double e_fast = fabs(a_fast - fd), e_naive = fabs(a_naive - fd);
        if (!(e_fast <= 1e-4 * scale + 1e-6) || !(e_naive <= 1e-7 * scale + 1e-8)) {
            print_error("%s input %d: finite difference %.12g, fast backward %.12g (err %.3g), naive backward "
                        "%.12g (err %.3g), sum|g d| %.3g\n",
                        k->name, j, fd, a_fast, e_fast, a_naive, e_naive, scale);
            bad = 1;
        }
        free(dir);
        free(x0);
    }
    for (int j = 0; j < k->n_in; j++) {
        free(in[j]);
        free(din[j]);
        free(g0[j]);
        free(in_d[j]);
        free(din_d[j]);
    }
    free(out);
    free(R);
    free(out_d);
    free(R_d);
    if (bad) fail_msg("%s: see the messages above", k->name);
}

/* ---- linear ----------------------------------------------------------------------------------- */

typedef struct {
    int64_t N;
    int C, OC, bias;
} LinearCase;

static void lin_fwd(void *c, float *out, float *const *in) {
    LinearCase *p = c;
    linear_forward(out, in[0], in[1], p->bias ? in[2] : NULL, p->N, p->C, p->OC);
}
static void lin_bwd(void *c, float *const *din, const float *dout, float *const *in) {
    LinearCase *p = c;
    linear_backward(din[0], din[1], p->bias ? din[2] : NULL, dout, in[0], in[1], p->N, p->C, p->OC);
}
static void lin_fwd_d(void *c, double *out, double *const *in) {
    LinearCase *p = c;
    linear_forward_naive(out, in[0], in[1], p->bias ? in[2] : NULL, p->N, p->C, p->OC);
}
static void lin_bwd_d(void *c, double *const *din, const double *dout, double *const *in) {
    LinearCase *p = c;
    linear_backward_naive(din[0], din[1], p->bias ? din[2] : NULL, dout, in[0], in[1], p->N, p->C, p->OC);
}

static void test_linear(void **state) {
    (void)state;
    LinearCase cases[] = {{7, 5, 3, 1}, {33, 64, 17, 1}, {10, 9, 130, 0}, {1, 1, 1, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        LinearCase *p = &cases[i];
        Kernel k = {.name = "linear", .n_in = p->bias ? 3 : 2,
                    .in_n = {p->N * p->C, (int64_t)p->OC * p->C, p->OC}, .out_n = p->N * p->OC,
                    .in_scale = {1, 0.3, 1}, .fwd = lin_fwd, .bwd = lin_bwd, .fwd_d = lin_fwd_d,
                    .bwd_d = lin_bwd_d, .ctx = p};
        run_kernel(&k, 100 + i);
    }
}

/* ---- conv1d ----------------------------------------------------------------------------------- */

typedef struct {
    int B;
    int64_t Ti;
    int C, OC, K, stride, pad, G, bias;
    float *scratch;
} ConvCase;

static void conv_fwd(void *c, float *out, float *const *in) {
    ConvCase *p = c;
    conv1d_forward(out, in[0], in[1], p->bias ? in[2] : NULL, p->B, p->Ti, p->C, p->OC, p->K, p->stride, p->pad,
                   p->G, p->scratch);
}
static void conv_bwd(void *c, float *const *din, const float *dout, float *const *in) {
    ConvCase *p = c;
    conv1d_backward(din[0], din[1], p->bias ? din[2] : NULL, dout, in[0], in[1], p->B, p->Ti, p->C, p->OC, p->K,
                    p->stride, p->pad, p->G, p->scratch);
}
static void conv_fwd_d(void *c, double *out, double *const *in) {
    ConvCase *p = c;
    conv1d_forward_naive(out, in[0], in[1], p->bias ? in[2] : NULL, p->B, p->Ti, p->C, p->OC, p->K, p->stride,
                         p->pad, p->G);
}
static void conv_bwd_d(void *c, double *const *din, const double *dout, double *const *in) {
    ConvCase *p = c;
    conv1d_backward_naive(din[0], din[1], p->bias ? din[2] : NULL, dout, in[0], in[1], p->B, p->Ti, p->C, p->OC,
                          p->K, p->stride, p->pad, p->G);
}

static void run_conv(ConvCase *p, uint64_t seed) {
    int64_t To = conv1d_out_len(p->Ti, p->K, p->stride, p->pad);
    assert_true(To > 0);
    p->scratch = koe_malloc((size_t)conv1d_scratch_floats(p->B, p->Ti, p->C, p->OC, p->K, p->stride, p->pad, p->G) *
                            sizeof(float));
    char name[160];
    snprintf(name, sizeof name, "conv1d(B=%d Ti=%lld C=%d OC=%d K=%d stride=%d pad=%d G=%d bias=%d)", p->B,
             (long long)p->Ti, p->C, p->OC, p->K, p->stride, p->pad, p->G, p->bias);
    Kernel k = {.name = name, .n_in = p->bias ? 3 : 2,
                .in_n = {(int64_t)p->B * p->Ti * p->C, (int64_t)p->OC * (p->C / p->G) * p->K, p->OC},
                .out_n = p->B * To * p->OC, .in_scale = {1, 0.3, 1}, .fwd = conv_fwd, .bwd = conv_bwd,
                .fwd_d = conv_fwd_d, .bwd_d = conv_bwd_d, .ctx = p};
    run_kernel(&k, seed);
    free(p->scratch);
}

static void test_conv1d_out_len(void **state) {
    (void)state;
    /* the wav2vec 2.0 stack: 16000 samples -> 49 frames, 250000 -> 781 */
    int K[] = {10, 3, 3, 3, 3, 2, 2}, S[] = {5, 2, 2, 2, 2, 2, 2};
    int64_t a = 16000, b = 250000;
    for (int l = 0; l < 7; l++) {
        a = conv1d_out_len(a, K[l], S[l], 0);
        b = conv1d_out_len(b, K[l], S[l], 0);
    }
    assert_int_equal(a, 49);
    assert_int_equal(b, 781);
    assert_int_equal(conv1d_out_len(200, 128, 1, 64), 201); /* positional conv: one frame too many */
    assert_int_equal(conv1d_out_len(5, 10, 5, 0), 0);
    assert_int_equal(conv1d_out_len(10, 10, 5, 0), 1);
}

static void test_conv1d(void **state) {
    (void)state;
    ConvCase cases[] = {
        {2, 53, 1, 8, 10, 5, 0, 1, 0, NULL},  /* waveform layer 0: C = 1, read in place, two products */
        {2, 29, 8, 6, 3, 2, 0, 1, 1, NULL},   /* few channels: read in place */
        {2, 37, 40, 12, 3, 2, 0, 1, 0, NULL}, /* waveform layers 1-4 shape: overlapping windows */
        {2, 23, 33, 7, 2, 2, 0, 1, 1, NULL},  /* layers 5-6: non-overlapping windows */
        {2, 30, 8, 6, 2, 3, 0, 1, 1, NULL},   /* windows shorter than the stride: rows between them */
        {2, 21, 40, 8, 4, 1, 2, 1, 1, NULL},  /* G = 1 with padding */
        {3, 9, 36, 5, 5, 3, 4, 1, 1, NULL},   /* padding larger than the stride, odd sizes */
        {2, 19, 16, 16, 8, 1, 4, 4, 1, NULL}, /* positional conv, small: grouped, "same" padding */
        {1, 5, 16, 16, 8, 1, 4, 4, 1, NULL},  /* kernel longer than the input */
        {2, 17, 12, 8, 3, 2, 1, 4, 1, NULL},  /* grouped, strided, OC/G != C/G */
        {2, 17, 8, 8, 5, 1, 2, 8, 1, NULL},   /* depthwise (conformer conv module) */
        {2, 16, 6, 6, 3, 2, 1, 6, 0, NULL},   /* depthwise, strided */
        {2, 11, 6, 12, 3, 1, 1, 6, 1, NULL},  /* G = C but OC = 2C: the grouped path */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_conv(&cases[i], 200 + i);
}

/* The unfolded-window path in blocks: HuBERT's positional conv shape with fewer channels (one
 * block), and windows of K*C/G = 2^18 floats, so blocks of 16 rows: B*To = 82 rows make six blocks,
 * one of them straddling the two utterances, grouped (one buffer per thread) and G = 1 (one buffer,
 * the GEMMs threaded). */
static void test_conv1d_blocks(void **state) {
    (void)state;
    ConvCase pos = {2, 100, 96, 96, 128, 1, 64, 2, 1, NULL};
    run_conv(&pos, 300);
    ConvCase wide = {2, 40, 1024, 2, 512, 1, 256, 2, 1, NULL};
    int slots = omp_get_max_threads() > 1 ? 2 : 1; /* one unfolding buffer per thread, at most G */
    /* the packed input (B, C, Ti + 2 pad) in fp32 and bf16, the packed dout (B, OC, Ti + K - 1) the
     * same, the flipped weight (OC * K * C/G), then per slot a block of at least 16 windows of K * C/G
     * (the forward's, larger here than the input gradient's), each rounded up to 16 floats */
#define R16(n) (((int64_t)(n) + 15) / 16 * 16)
    assert_int_equal(conv1d_scratch_floats(2, 40, 1024, 2, 512, 1, 256, 2),
                     R16(2 * 1024 * 552) + R16(1024 * 552) + R16(2 * 2 * 551) + R16(2 * 551) + R16(2 * 512 * 512) +
                         slots * 16 * 512 * 512);
    run_conv(&wide, 301);
    ConvCase wide1 = {2, 40, 1024, 3, 256, 1, 128, 1, 1, NULL};
    assert_int_equal(conv1d_scratch_floats(2, 40, 1024, 3, 256, 1, 128, 1),
                     R16(2 * 1024 * 296) + R16(1024 * 296) + R16(2 * 3 * 295) + R16(3 * 295) + R16(3 * 256 * 1024) +
                         16 * 256 * 1024);
#undef R16
    run_conv(&wide1, 302);
}

/* ---- layernorm, groupnorm ------------------------------------------------------------------------ */

typedef struct {
    int B;
    int64_t T; /* layernorm: N = B*T rows */
    int C;
    float *mean, *rstd;
    double *mean_d, *rstd_d;
} NormCase;

static void ln_fwd(void *c, float *out, float *const *in) {
    NormCase *p = c;
    layernorm_forward(out, p->mean, p->rstd, in[0], in[1], in[2], p->B * p->T, p->C, 1e-5f);
}
static void ln_bwd(void *c, float *const *din, const float *dout, float *const *in) {
    NormCase *p = c;
    layernorm_backward(din[0], din[1], din[2], dout, in[0], in[1], p->mean, p->rstd, p->B * p->T, p->C);
}
static void ln_fwd_d(void *c, double *out, double *const *in) {
    NormCase *p = c;
    layernorm_forward_naive(out, p->mean_d, p->rstd_d, in[0], in[1], in[2], p->B * p->T, p->C, 1e-5);
}
static void ln_bwd_d(void *c, double *const *din, const double *dout, double *const *in) {
    NormCase *p = c;
    layernorm_backward_naive(din[0], din[1], din[2], dout, in[0], in[1], p->mean_d, p->rstd_d, p->B * p->T, p->C);
}
static void gn_fwd(void *c, float *out, float *const *in) {
    NormCase *p = c;
    groupnorm_forward(out, p->mean, p->rstd, in[0], in[1], in[2], p->B, p->T, p->C, 1e-5f);
}
static void gn_bwd(void *c, float *const *din, const float *dout, float *const *in) {
    NormCase *p = c;
    groupnorm_backward(din[0], din[1], din[2], dout, in[0], in[1], p->mean, p->rstd, p->B, p->T, p->C);
}
static void gn_fwd_d(void *c, double *out, double *const *in) {
    NormCase *p = c;
    groupnorm_forward_naive(out, p->mean_d, p->rstd_d, in[0], in[1], in[2], p->B, p->T, p->C, 1e-5);
}
static void gn_bwd_d(void *c, double *const *din, const double *dout, double *const *in) {
    NormCase *p = c;
    groupnorm_backward_naive(din[0], din[1], din[2], dout, in[0], in[1], p->mean_d, p->rstd_d, p->B, p->T, p->C);
}

static void run_norm(NormCase *p, int group, uint64_t seed) {
    int64_t nstat = group ? (int64_t)p->B * p->C : p->B * p->T;
    p->mean = koe_malloc((size_t)nstat * sizeof(float));
    p->rstd = koe_malloc((size_t)nstat * sizeof(float));
    p->mean_d = koe_malloc((size_t)nstat * sizeof(double));
    p->rstd_d = koe_malloc((size_t)nstat * sizeof(double));
    char name[96];
    snprintf(name, sizeof name, "%s(B=%d T=%lld C=%d)", group ? "groupnorm" : "layernorm", p->B, (long long)p->T,
             p->C);
    /* inputs off-centre so the mean matters; weights around 1 */
    Kernel k = {.name = name, .n_in = 3, .in_n = {(int64_t)p->B * p->T * p->C, p->C, p->C},
                .out_n = (int64_t)p->B * p->T * p->C, .in_scale = {2, 0.5, 1}, .in_offset = {0.7, 1, 0},
                .fwd = group ? gn_fwd : ln_fwd, .bwd = group ? gn_bwd : ln_bwd, .fwd_d = group ? gn_fwd_d : ln_fwd_d,
                .bwd_d = group ? gn_bwd_d : ln_bwd_d, .ctx = p};
    run_kernel(&k, seed);
    free(p->mean);
    free(p->rstd);
    free(p->mean_d);
    free(p->rstd_d);
}

static void test_layernorm(void **state) {
    (void)state;
    NormCase cases[] = {{.B = 1, .T = 9, .C = 7}, {.B = 2, .T = 5, .C = 130}, {.B = 3, .T = 1, .C = 64}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_norm(&cases[i], 0, 400 + i);
}

static void test_groupnorm(void **state) {
    (void)state;
    NormCase cases[] = {{.B = 2, .T = 11, .C = 5}, {.B = 3, .T = 40, .C = 70}, {.B = 1, .T = 6, .C = 129}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_norm(&cases[i], 1, 500 + i);
}

/* ---- activations, dropout ---------------------------------------------------------------------------- */

typedef struct {
    int64_t n; /* glu: rows N */
    int C;     /* glu: output channels */
    float p;   /* dropout */
    uint64_t seed, a, b;
} EltCase;

static void gelu_f(void *c, float *o, float *const *in) { gelu_forward(o, in[0], ((EltCase *)c)->n); }
static void gelu_b(void *c, float *const *d, const float *g, float *const *in) {
    gelu_backward(d[0], g, in[0], ((EltCase *)c)->n);
}
static void gelu_fd(void *c, double *o, double *const *in) { gelu_forward_naive(o, in[0], ((EltCase *)c)->n); }
static void gelu_bd(void *c, double *const *d, const double *g, double *const *in) {
    gelu_backward_naive(d[0], g, in[0], ((EltCase *)c)->n);
}
static void swish_f(void *c, float *o, float *const *in) { swish_forward(o, in[0], ((EltCase *)c)->n); }
static void swish_b(void *c, float *const *d, const float *g, float *const *in) {
    swish_backward(d[0], g, in[0], ((EltCase *)c)->n);
}
static void swish_fd(void *c, double *o, double *const *in) { swish_forward_naive(o, in[0], ((EltCase *)c)->n); }
static void swish_bd(void *c, double *const *d, const double *g, double *const *in) {
    swish_backward_naive(d[0], g, in[0], ((EltCase *)c)->n);
}
static void glu_f(void *c, float *o, float *const *in) {
    glu_forward(o, in[0], ((EltCase *)c)->n, ((EltCase *)c)->C);
}
static void glu_b(void *c, float *const *d, const float *g, float *const *in) {
    glu_backward(d[0], g, in[0], ((EltCase *)c)->n, ((EltCase *)c)->C);
}
static void glu_fd(void *c, double *o, double *const *in) {
    glu_forward_naive(o, in[0], ((EltCase *)c)->n, ((EltCase *)c)->C);
}
static void glu_bd(void *c, double *const *d, const double *g, double *const *in) {
    glu_backward_naive(d[0], g, in[0], ((EltCase *)c)->n, ((EltCase *)c)->C);
}
static void drop_f(void *c, float *o, float *const *in) {
    EltCase *p = c;
    dropout_forward(o, in[0], p->n, p->p, p->seed, p->a, p->b);
}
static void drop_b(void *c, float *const *d, const float *g, float *const *in) {
    EltCase *p = c;
    (void)in;
    dropout_backward(d[0], g, p->n, p->p, p->seed, p->a, p->b);
}
static void drop_fd(void *c, double *o, double *const *in) {
    EltCase *p = c;
    dropout_forward_naive(o, in[0], p->n, p->p, p->seed, p->a, p->b);
}
static void drop_bd(void *c, double *const *d, const double *g, double *const *in) {
    EltCase *p = c;
    (void)in;
    dropout_backward_naive(d[0], g, p->n, p->p, p->seed, p->a, p->b);
}

static void test_activations(void **state) {
    (void)state;
    EltCase e = {1001, 0, 0, 0, 0, 0};
    Kernel gelu = {.name = "gelu", .n_in = 1, .in_n = {e.n}, .out_n = e.n, .in_scale = {2.5}, .fwd = gelu_f,
                   .bwd = gelu_b, .fwd_d = gelu_fd, .bwd_d = gelu_bd, .ctx = &e};
    run_kernel(&gelu, 600);
    Kernel swish = {.name = "swish", .n_in = 1, .in_n = {e.n}, .out_n = e.n, .in_scale = {4}, .fwd = swish_f,
                    .bwd = swish_b, .fwd_d = swish_fd, .bwd_d = swish_bd, .ctx = &e};
    run_kernel(&swish, 601);
    EltCase g = {9, 13, 0, 0, 0, 0};
    Kernel glu = {.name = "glu", .n_in = 1, .in_n = {2 * g.n * g.C}, .out_n = g.n * g.C, .in_scale = {2},
                  .fwd = glu_f, .bwd = glu_b, .fwd_d = glu_fd, .bwd_d = glu_bd, .ctx = &g};
    run_kernel(&glu, 602);
}

static void test_gelu_values(void **state) {
    (void)state;
    /* torch.nn.functional.gelu(torch.tensor([-3., -1., 0.5, 2.])) */
    float x[4] = {-3.0f, -1.0f, 0.5f, 2.0f}, y[4];
    const float ref[4] = {-0.0040496886f, -0.15865526f, 0.34573123f, 1.9544997f};
    gelu_forward(y, x, 4);
    for (int i = 0; i < 4; i++) assert_float_equal(y[i], ref[i], 1e-6f);
}

/* GELU and GELU' against erfc in double on every 101st float with |x| <= 14, both signs (with
 * KOE_GELU_EVERY_FLOAT=1 in the environment: every float, 45 s), against layers.c's bound (measured
 * there over every float: at most (11.5 + x^2/2) 2^-24 relative, asserted with 12), the same bits
 * from a lone element as from inside a vector loop, and the in-place backward's values those of the
 * accumulating one. */
static void test_gelu_accuracy(void **state) {
    (void)state;
    const uint32_t stride = getenv("KOE_GELU_EVERY_FLOAT") ? 1 : 101, end = 0x41600000; /* 14.0f */
    const int64_t chunk = 1 << 20;
    float *x = koe_malloc((size_t)chunk * sizeof(float)), *y = koe_malloc((size_t)chunk * sizeof(float));
    float *dy = koe_malloc((size_t)chunk * sizeof(float)), *one = koe_malloc((size_t)chunk * sizeof(float));
    float *y2 = koe_malloc((size_t)chunk * sizeof(float)), *dz = koe_malloc((size_t)chunk * sizeof(float));
    for (int64_t i = 0; i < chunk; i++) one[i] = 1.0f;
    double worst = 0.0, worst_d = 0.0, worst_tiny = 0.0;
    int64_t count = 0;
    for (uint32_t sign = 0; sign < 2; sign++)
        for (uint64_t b0 = 0; b0 <= end; b0 += (uint64_t)chunk * stride) {
            int64_t n = 0;
            for (uint64_t b = b0; b <= end && n < chunk; b += stride) {
                const uint32_t bits = (uint32_t)b | sign << 31;
                memcpy(&x[n++], &bits, sizeof bits);
            }
            memset(dy, 0, (size_t)n * sizeof(float));
            gelu_forward(y, x, n);
            gelu_backward(dy, one, x, n);
#pragma omp parallel for reduction(max : worst, worst_d, worst_tiny)
            for (int64_t i = 0; i < n; i++) {
                const double xd = x[i], cdf = 0.5 * erfc(-xd / M_SQRT2), pdf = exp(-0.5 * xd * xd) / sqrt(2.0 * M_PI);
                const double g = xd * cdf, gd = cdf + xd * pdf, k = 0x1p-24 * (12.0 + 0.5 * xd * xd);
                if (fabs(g) < 0x1p-126 || fabs(gd) < 0x1p-126) {
                    worst_tiny = fmax(worst_tiny, fmax(fabs(y[i] - g), fabs(dy[i] - gd)));
                    continue;
                }
                worst = fmax(worst, fabs(y[i] - g) / fabs(g) / k);
                worst_d = fmax(worst_d, fabs(dy[i] - gd) / (cdf + fabs(xd) * pdf) / k);
            }
            /* in place: d * GELU'(x) written over d, the values of the accumulating form on a zeroed dinp
             * (as values: 0 + -0 is +0) */
            for (int64_t i = 0; i < n; i++) y2[i] = (float)(i % 7 - 3) * 0.37f, dz[i] = 0.0f;
            gelu_backward(dz, y2, x, n);
            gelu_backward_inplace(y2, x, n);
            for (int64_t i = 0; i < n; i++)
                if (!(y2[i] == dz[i] || (isnan(y2[i]) && isnan(dz[i]))))
                    fail_msg("gelu_backward_inplace at x = %a: %a, gelu_backward %a", x[i], y2[i], dz[i]);
            for (int64_t i = 0; i < n; i += 9973) { /* alone: the scalar form */
                float yi, di = 0.0f;
                gelu_forward(&yi, &x[i], 1);
                gelu_backward(&di, &one[i], &x[i], 1);
                assert_memory_equal(&yi, &y[i], sizeof yi);
                assert_memory_equal(&di, &dy[i], sizeof di);
            }
            count += n;
        }
    printf("gelu on %lld floats: worst err/bound %.3f, gelu' %.3f; below FLT_MIN within %.3g\n", (long long)count,
           worst, worst_d, worst_tiny);
    assert_true(worst <= 1.0 && worst_d <= 1.0 && worst_tiny <= 1e-37);
    const float special[4] = {NAN, INFINITY, 0.0f, -0.0f};
    float ys[4];
    gelu_forward(ys, special, 4);
    assert_true(isnan(ys[0]) && ys[1] == INFINITY && ys[2] == 0.0f && ys[3] == 0.0f);
    free(x), free(y), free(dy), free(one), free(y2), free(dz);
}

static void test_dropout(void **state) {
    (void)state;
    EltCase e = {4000, 0, 0.3f, 7, 11, 3};
    Kernel k = {.name = "dropout", .n_in = 1, .in_n = {e.n}, .out_n = e.n, .in_scale = {1}, .in_offset = {2},
                .fwd = drop_f, .bwd = drop_b, .fwd_d = drop_fd, .bwd_d = drop_bd, .ctx = &e};
    run_kernel(&k, 700);
    /* the mask keeps about 1-p, scales by 1/(1-p), and depends on every part of the stream's name */
    enum { N = 20000 };
    float *x = koe_malloc(N * sizeof(float)), *y = koe_malloc(N * sizeof(float)), *z = koe_malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = 1.0f;
    dropout_forward(y, x, N, 0.3f, 7, 11, 3);
    int kept = 0;
    for (int i = 0; i < N; i++) {
        assert_true(y[i] == 0.0f || fabsf(y[i] - 1.0f / 0.7f) < 1e-6f);
        kept += y[i] != 0.0f;
    }
    assert_true(fabs(kept / (double)N - 0.7) < 0.01);
    uint64_t other[3][3] = {{8, 11, 3}, {7, 12, 3}, {7, 11, 4}};
    for (int v = 0; v < 3; v++) {
        dropout_forward(z, x, N, 0.3f, other[v][0], other[v][1], other[v][2]);
        int same = 0;
        for (int i = 0; i < N; i++) same += (y[i] != 0.0f) == (z[i] != 0.0f);
        assert_true(same < N * 0.65); /* independent masks agree on 0.7^2 + 0.3^2 = 58% */
    }
    dropout_forward(z, x, N, 0.0f, 7, 11, 3); /* p = 0: identity */
    assert_memory_equal(z, x, N * sizeof(float));
    free(x);
    free(y);
    free(z);
}

/* ---- weight norm, residual adds -------------------------------------------------------------------- */

typedef struct {
    int OC, Ci, K;
    float *norm, *scratch;
    double *norm_d;
} WnCase;

static void wn_f(void *c, float *o, float *const *in) {
    WnCase *p = c;
    weightnorm_forward(o, p->norm, in[0], in[1], p->OC, p->Ci, p->K, p->scratch);
}
static void wn_b(void *c, float *const *d, const float *g, float *const *in) {
    WnCase *p = c;
    weightnorm_backward(d[0], d[1], g, in[0], in[1], p->norm, p->OC, p->Ci, p->K, p->scratch);
}
static void wn_fd(void *c, double *o, double *const *in) {
    WnCase *p = c;
    weightnorm_forward_naive(o, p->norm_d, in[0], in[1], p->OC, p->Ci, p->K);
}
static void wn_bd(void *c, double *const *d, const double *g, double *const *in) {
    WnCase *p = c;
    weightnorm_backward_naive(d[0], d[1], g, in[0], in[1], p->norm_d, p->OC, p->Ci, p->K);
}

static void test_weightnorm(void **state) {
    (void)state;
    WnCase cases[] = {{6, 4, 5, NULL, NULL, NULL}, {16, 4, 40, NULL, NULL, NULL},
                      {2, 3, 7, NULL, NULL, NULL}}; /* 6 rows: empty chunks */
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        WnCase *p = &cases[i];
        p->norm = koe_malloc((size_t)p->K * sizeof(float));
        p->norm_d = koe_malloc((size_t)p->K * sizeof(double));
        p->scratch = koe_malloc((size_t)weightnorm_scratch_floats(p->K) * sizeof(float));
        int64_t nv = (int64_t)p->OC * p->Ci * p->K;
        Kernel k = {.name = "weightnorm", .n_in = 2, .in_n = {p->K, nv}, .out_n = nv, .in_scale = {1, 1},
                    .fwd = wn_f, .bwd = wn_b, .fwd_d = wn_fd, .bwd_d = wn_bd, .ctx = p};
        run_kernel(&k, 800 + i);
        free(p->norm);
        free(p->norm_d);
        free(p->scratch);
    }
}

static void test_add_axpy(void **state) {
    (void)state;
    enum { N = 777 };
    float y[N], x[N], y2[N];
    double yd[N], yd2[N], xd[N];
    KoeRng r = koe_rng(9, 0, 0, KOE_RNG_INIT);
    fill_normal(y, N, 1, 0, &r);
    fill_normal(x, N, 1, 0, &r);
    memcpy(y2, y, sizeof y);
    to_double(yd, y, N);
    to_double(yd2, y, N);
    to_double(xd, x, N);
    add_inplace(y, x, N);
    add_inplace_naive(yd, xd, N);
    assert_false(check_close("add_inplace", "y", y, yd, N));
    axpy_inplace(y2, 0.1f, x, N);
    axpy_inplace_naive(yd2, (double)0.1f, xd, N);
    assert_false(check_close("axpy_inplace", "y", y2, yd2, N));
    for (int i = 0; i < N; i++) assert_float_equal(y2[i], yd2[i], 1e-6); /* really y + s x, not y + x */
    float z[N];
    add_vectors(z, y2, x, N);
    for (int i = 0; i < N; i++) assert_true(z[i] == y2[i] + x[i]); /* the sum, rounded once */
}

/* ---- the objective heads' kernels: row normalisation, softmax cross-entropy, gathered rows ---------- */

typedef struct {
    int64_t N;
    int C;
    float *norm, *out; /* the fast forward's, for its backward */
    double *norm_d, *out_d;
} RownormCase;

static void rn_f(void *c, float *o, float *const *in) {
    RownormCase *p = c;
    rownorm_forward(o, p->norm, in[0], p->N, p->C, 1e-8f);
    memcpy(p->out, o, (size_t)(p->N * p->C) * sizeof(float));
}
static void rn_b(void *c, float *const *d, const float *g, float *const *in) {
    RownormCase *p = c;
    (void)in;
    rownorm_backward(d[0], g, p->out, p->norm, p->N, p->C);
}
static void rn_fd(void *c, double *o, double *const *in) {
    RownormCase *p = c;
    rownorm_forward_naive(o, p->norm_d, in[0], p->N, p->C, 1e-8);
    memcpy(p->out_d, o, (size_t)(p->N * p->C) * sizeof(double));
}
static void rn_bd(void *c, double *const *d, const double *g, double *const *in) {
    RownormCase *p = c;
    (void)in;
    rownorm_backward_naive(d[0], g, p->out_d, p->norm_d, p->N, p->C);
}

static void test_rownorm(void **state) {
    (void)state;
    RownormCase cases[] = {{.N = 5, .C = 7}, {.N = 33, .C = 256}, {.N = 1, .C = 1}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        RownormCase *p = &cases[i];
        const int64_t n = p->N * p->C;
        p->norm = koe_malloc((size_t)p->N * sizeof(float));
        p->out = koe_malloc((size_t)n * sizeof(float));
        p->norm_d = koe_malloc((size_t)p->N * sizeof(double));
        p->out_d = koe_malloc((size_t)n * sizeof(double));
        Kernel k = {.name = "rownorm", .n_in = 1, .in_n = {n}, .out_n = n, .in_scale = {1}, .in_offset = {0.3},
                    .fwd = rn_f, .bwd = rn_b, .fwd_d = rn_fd, .bwd_d = rn_bd, .ctx = p};
        run_kernel(&k, 900 + i);
        free(p->norm);
        free(p->out);
        free(p->norm_d);
        free(p->out_d);
    }
    /* a zero row and a row below eps: divided by eps (torch.cosine_similarity's clamp), in place */
    float x[2][3] = {{0, 0, 0}, {3e-9f, 0, -4e-9f}}, norm[2];
    rownorm_forward(&x[0][0], norm, &x[0][0], 2, 3, 1e-8f);
    assert_float_equal(norm[0], 1e-8f, 0);
    assert_float_equal(norm[1], 1e-8f, 0);
    for (int c = 0; c < 3; c++) assert_float_equal(x[0][c], 0.0f, 0);
    assert_float_equal(x[1][0], 0.3f, 1e-6);
    assert_float_equal(x[1][2], -0.4f, 1e-6);
}

typedef struct {
    int64_t N;
    int C;
    const int32_t *target; /* NULL: class 0 */
    float *prob;
    double *prob_d;
} XentCase;

/* The kernel's backward takes one dloss for all rows; <loss, R> needs R[i] for row i, so the wrappers
 * call it row by row (N = 1), and add: the kernel writes its gradient. */
static void xe_f(void *c, float *o, float *const *in) {
    XentCase *p = c;
    softmax_xent_forward(p->prob, o, in[0], p->target, p->N, p->C);
}
static void xe_b(void *c, float *const *d, const float *g, float *const *in) {
    XentCase *p = c;
    (void)in;
    float *row = koe_malloc((size_t)p->C * sizeof(float));
    for (int64_t i = 0; i < p->N; i++) {
        softmax_xent_backward(row, p->prob + i * p->C, p->target ? p->target + i : NULL, g[i], 1, p->C);
        for (int k = 0; k < p->C; k++) d[0][i * p->C + k] += row[k];
    }
    free(row);
}
static void xe_fd(void *c, double *o, double *const *in) {
    XentCase *p = c;
    softmax_xent_forward_naive(p->prob_d, o, in[0], p->target, p->N, p->C);
}
static void xe_bd(void *c, double *const *d, const double *g, double *const *in) {
    XentCase *p = c;
    (void)in;
    double *row = koe_malloc((size_t)p->C * sizeof(double));
    for (int64_t i = 0; i < p->N; i++) {
        softmax_xent_backward_naive(row, p->prob_d + i * p->C, p->target ? p->target + i : NULL, g[i], 1, p->C);
        for (int k = 0; k < p->C; k++) d[0][i * p->C + k] += row[k];
    }
    free(row);
}

static void test_softmax_xent(void **state) {
    (void)state;
    enum { NMAX = 40 };
    int32_t target[NMAX];
    for (int i = 0; i < NMAX; i++) target[i] = (i * 7) % 13;
    XentCase cases[] = {{6, 13, target, NULL, NULL}, {40, 500, target, NULL, NULL}, {9, 101, NULL, NULL, NULL},
                        {3, 1, NULL, NULL, NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        XentCase *p = &cases[i];
        p->prob = koe_malloc((size_t)(p->N * p->C) * sizeof(float));
        p->prob_d = koe_malloc((size_t)(p->N * p->C) * sizeof(double));
        Kernel k = {.name = "softmax_xent", .n_in = 1, .in_n = {p->N * p->C}, .out_n = p->N, .in_scale = {3},
                    .fwd = xe_f, .bwd = xe_b, .fwd_d = xe_fd, .bwd_d = xe_bd, .ctx = p};
        run_kernel(&k, 1000 + i);
        free(p->prob);
        free(p->prob_d);
    }
}

/* All rows at once and in place: probabilities, the count of rows won, -inf logits, one dloss. */
static void test_softmax_xent_rows(void **state) {
    (void)state;
    enum { N = 5, C = 6 };
    const float logit[N][C] = {{1, 2, 3, 0, -1, 2},     {4, 1, 4, 0, 0, 0}, {0.5f, -INFINITY, 0.25f, -INFINITY, 0, 0},
                               {-2, -2, -2, -2, -2, -2}, {9, 8, 7, 6, 5, 4}};
    const int32_t target[N] = {2, 0, 0, 3, 1}; /* won, tied (counts), won over -inf, all tied, lost */
    float x[N][C], prob[N][C], loss[N], loss2[N], d[N][C];
    double ld[N][C], pd[N][C], lossd[N], dd[N][C];
    memcpy(x, logit, sizeof x);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < C; k++) ld[i][k] = logit[i][k];
    assert_int_equal(softmax_xent_forward(&prob[0][0], loss, &logit[0][0], target, N, C), 4);
    assert_int_equal(softmax_xent_forward_naive(&pd[0][0], lossd, &ld[0][0], target, N, C), 4);
    assert_int_equal(softmax_xent_forward(&x[0][0], loss2, &x[0][0], target, N, C), 4); /* in place */
    assert_false(check_close("softmax_xent", "prob", &prob[0][0], &pd[0][0], N * C));
    assert_false(check_close("softmax_xent", "loss", loss, lossd, N));
    assert_memory_equal(x, prob, sizeof x);
    assert_memory_equal(loss2, loss, sizeof loss);
    assert_float_equal(prob[2][1], 0.0f, 0);
    assert_float_equal(loss[3], logf(C), 1e-6);
    softmax_xent_backward(&d[0][0], &prob[0][0], target, 0.25f, N, C);
    softmax_xent_backward_naive(&dd[0][0], &pd[0][0], target, 0.25, N, C);
    assert_false(check_close("softmax_xent", "dlogit", &d[0][0], &dd[0][0], N * C));
    softmax_xent_backward(&x[0][0], &x[0][0], target, 0.25f, N, C); /* in place */
    assert_memory_equal(x, d, sizeof x);
    assert_float_equal(d[2][3], 0.0f, 0);
    /* target NULL: class 0 */
    softmax_xent_forward(&prob[0][0], loss2, &logit[0][0], NULL, N, C);
    softmax_xent_forward(&x[0][0], loss, &logit[0][0], (const int32_t[N]){0}, N, C);
    assert_memory_equal(loss2, loss, sizeof loss);
}

typedef struct {
    int64_t R, N;
    int C;
    int32_t *idx;
} GatherCase;

static void ga_f(void *c, float *o, float *const *in) {
    GatherCase *p = c;
    gather_rows_forward(o, in[0], p->idx, p->N, p->C);
}
static void ga_b(void *c, float *const *d, const float *g, float *const *in) {
    GatherCase *p = c;
    (void)in;
    gather_rows_backward(d[0], g, p->idx, p->N, p->C);
}
static void ga_fd(void *c, double *o, double *const *in) {
    GatherCase *p = c;
    gather_rows_forward_naive(o, in[0], p->idx, p->N, p->C);
}
static void ga_bd(void *c, double *const *d, const double *g, double *const *in) {
    GatherCase *p = c;
    (void)in;
    gather_rows_backward_naive(d[0], g, p->idx, p->N, p->C);
}

static void test_gather_rows(void **state) {
    (void)state;
    GatherCase cases[] = {{20, 11, 9, NULL}, {300, 200, 64, NULL}, {5, 5, 1, NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        GatherCase *p = &cases[i];
        p->idx = koe_malloc((size_t)p->N * sizeof(int32_t));
        for (int64_t j = 0; j < p->N; j++) p->idx[j] = (int32_t)((j * 7 + 3) % p->R); /* distinct: R prime to 7 */
        Kernel k = {.name = "gather_rows", .n_in = 1, .in_n = {p->R * p->C}, .out_n = p->N * p->C, .in_scale = {1},
                    .fwd = ga_f, .bwd = ga_b, .fwd_d = ga_fd, .bwd_d = ga_bd, .ctx = p};
        run_kernel(&k, 1100 + i);
        free(p->idx);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),      cmocka_unit_test(test_conv1d_out_len), cmocka_unit_test(test_conv1d),
        cmocka_unit_test(test_conv1d_blocks), cmocka_unit_test(test_layernorm),    cmocka_unit_test(test_groupnorm),
        cmocka_unit_test(test_activations), cmocka_unit_test(test_gelu_values), cmocka_unit_test(test_gelu_accuracy),    cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_weightnorm),  cmocka_unit_test(test_add_axpy),    cmocka_unit_test(test_rownorm),
        cmocka_unit_test(test_softmax_xent), cmocka_unit_test(test_softmax_xent_rows),
        cmocka_unit_test(test_gather_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

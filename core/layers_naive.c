/* layers_naive.c — the naive double-precision references declared in layers_naive.h, written
 * straight from the definitions (PyTorch's documentation of each layer). Only tests use them; they
 * must stay simple enough to check by eye, so no blocking, no threads, no BLAS. */
#include "layers_naive.h"

#include <math.h>
#include <stddef.h>

#include "rng.h"

void linear_forward_naive(double *out, const double *inp, const double *weight, const double *bias, int64_t N, int C,
                          int OC) {
    for (int64_t n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int c = 0; c < C; c++) s += inp[n * C + c] * weight[(int64_t)o * C + c];
            out[n * OC + o] = s;
        }
}

void linear_backward_naive(double *dinp, double *dweight, double *dbias, const double *dout, const double *inp,
                           const double *weight, int64_t N, int C, int OC) {
    for (int64_t n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double d = dout[n * OC + o];
            if (dbias) dbias[o] += d;
            for (int c = 0; c < C; c++) {
                if (dinp) dinp[n * C + c] += d * weight[(int64_t)o * C + c];
                if (dweight) dweight[(int64_t)o * C + c] += d * inp[n * C + c];
            }
        }
}

static int64_t conv_out_len_naive(int64_t Ti, int K, int stride, int pad) {
    int64_t To = 0;
    while (To * stride + K <= Ti + 2 * (int64_t)pad) To++;
    return To;
}

void conv1d_forward_naive(double *out, const double *inp, const double *weight, const double *bias, int B,
                          int64_t Ti, int C, int OC, int K, int stride, int pad, int G) {
    int Cg = C / G, OCg = OC / G;
    int64_t To = conv_out_len_naive(Ti, K, stride, pad);
    for (int b = 0; b < B; b++)
        for (int64_t t = 0; t < To; t++)
            for (int o = 0; o < OC; o++) {
                int g = o / OCg;
                double s = bias ? bias[o] : 0.0;
                for (int cg = 0; cg < Cg; cg++)
                    for (int k = 0; k < K; k++) {
                        int64_t i = t * stride + k - pad;
                        if (i < 0 || i >= Ti) continue;
                        s += weight[((int64_t)o * Cg + cg) * K + k] * inp[((int64_t)b * Ti + i) * C + g * Cg + cg];
                    }
                out[((int64_t)b * To + t) * OC + o] = s;
            }
}

void conv1d_backward_naive(double *dinp, double *dweight, double *dbias, const double *dout, const double *inp,
                           const double *weight, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G) {
    int Cg = C / G, OCg = OC / G;
    int64_t To = conv_out_len_naive(Ti, K, stride, pad);
    for (int b = 0; b < B; b++)
        for (int64_t t = 0; t < To; t++)
            for (int o = 0; o < OC; o++) {
                int g = o / OCg;
                double d = dout[((int64_t)b * To + t) * OC + o];
                if (dbias) dbias[o] += d;
                for (int cg = 0; cg < Cg; cg++)
                    for (int k = 0; k < K; k++) {
                        int64_t i = t * stride + k - pad;
                        if (i < 0 || i >= Ti) continue;
                        int64_t xi = ((int64_t)b * Ti + i) * C + g * Cg + cg, wi = ((int64_t)o * Cg + cg) * K + k;
                        if (dinp) dinp[xi] += d * weight[wi];
                        if (dweight) dweight[wi] += d * inp[xi];
                    }
            }
}

/* normalise n values at stride `st` starting at x: mean, 1/sqrt(biased var + eps) */
static void moments_naive(double *mean, double *rstd, const double *x, int64_t n, int64_t st, double eps) {
    double m = 0.0, v = 0.0;
    for (int64_t i = 0; i < n; i++) m += x[i * st];
    m /= (double)n;
    for (int64_t i = 0; i < n; i++) v += (x[i * st] - m) * (x[i * st] - m);
    *mean = m;
    *rstd = 1.0 / sqrt(v / (double)n + eps);
}

/* backward of y = xhat * w + bias over n values at stride st (w, dw, db are scalars here) */
static void norm_backward_naive(double *dx, double *dw, double *db, const double *dy, const double *x,
                                const double *w, int64_t wst, double mean, double rstd, int64_t n, int64_t st) {
    double sd = 0.0, sdx = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double xh = (x[i * st] - mean) * rstd, g = dy[i * st] * w[i * wst];
        sd += g;
        sdx += g * xh;
        if (dw) dw[i * wst] += dy[i * st] * xh;
        if (db) db[i * wst] += dy[i * st];
    }
    if (!dx) return;
    for (int64_t i = 0; i < n; i++) {
        double xh = (x[i * st] - mean) * rstd;
        dx[i * st] += rstd * (dy[i * st] * w[i * wst] - sd / (double)n - xh * sdx / (double)n);
    }
}

void layernorm_forward_naive(double *out, double *mean, double *rstd, const double *inp, const double *weight,
                             const double *bias, int64_t N, int C, double eps) {
    for (int64_t n = 0; n < N; n++) {
        moments_naive(&mean[n], &rstd[n], inp + n * C, C, 1, eps);
        for (int c = 0; c < C; c++) out[n * C + c] = (inp[n * C + c] - mean[n]) * rstd[n] * weight[c] + bias[c];
    }
}

void layernorm_backward_naive(double *dinp, double *dweight, double *dbias, const double *dout, const double *inp,
                              const double *weight, const double *mean, const double *rstd, int64_t N, int C) {
    for (int64_t n = 0; n < N; n++)
        norm_backward_naive(dinp ? dinp + n * C : NULL, dweight, dbias, dout + n * C, inp + n * C, weight, 1, mean[n],
                            rstd[n], C, 1);
}

void groupnorm_forward_naive(double *out, double *mean, double *rstd, const double *inp, const double *weight,
                             const double *bias, int B, int64_t T, int C, double eps) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            int64_t bc = (int64_t)b * C + c, base = (int64_t)b * T * C + c;
            moments_naive(&mean[bc], &rstd[bc], inp + base, T, C, eps);
            for (int64_t t = 0; t < T; t++)
                out[base + t * C] = (inp[base + t * C] - mean[bc]) * rstd[bc] * weight[c] + bias[c];
        }
}

void groupnorm_backward_naive(double *dinp, double *dweight, double *dbias, const double *dout, const double *inp,
                              const double *weight, const double *mean, const double *rstd, int B, int64_t T, int C) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            int64_t bc = (int64_t)b * C + c, base = (int64_t)b * T * C + c;
            /* one channel: weight, dweight, dbias are the same scalar for every t (stride 0) */
            norm_backward_naive(dinp ? dinp + base : NULL, dweight ? dweight + c : NULL, dbias ? dbias + c : NULL,
                                dout + base, inp + base, weight + c, 0, mean[bc], rstd[bc], T, C);
        }
}

void gelu_forward_naive(double *out, const double *inp, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = inp[i] * 0.5 * (1.0 + erf(inp[i] / sqrt(2.0)));
}

void gelu_backward_naive(double *dinp, const double *dout, const double *inp, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double x = inp[i], phi = exp(-x * x / 2.0) / sqrt(2.0 * M_PI);
        dinp[i] += dout[i] * (0.5 * (1.0 + erf(x / sqrt(2.0))) + x * phi);
    }
}

static double sigmoid_naive(double x) { return 1.0 / (1.0 + exp(-x)); }

void swish_forward_naive(double *out, const double *inp, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = inp[i] * sigmoid_naive(inp[i]);
}

void swish_backward_naive(double *dinp, const double *dout, const double *inp, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double s = sigmoid_naive(inp[i]);
        dinp[i] += dout[i] * (s + inp[i] * s * (1.0 - s));
    }
}

void glu_forward_naive(double *out, const double *inp, int64_t N, int C) {
    for (int64_t n = 0; n < N; n++)
        for (int c = 0; c < C; c++) out[n * C + c] = inp[n * 2 * C + c] * sigmoid_naive(inp[n * 2 * C + C + c]);
}

void glu_backward_naive(double *dinp, const double *dout, const double *inp, int64_t N, int C) {
    for (int64_t n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double a = inp[n * 2 * C + c], s = sigmoid_naive(inp[n * 2 * C + C + c]), d = dout[n * C + c];
            dinp[n * 2 * C + c] += d * s;
            dinp[n * 2 * C + C + c] += d * a * s * (1.0 - s);
        }
}

/* the mask drawn sequentially from the stream: element i uses the stream's (i+1)-th draw */
static void dropout_apply_naive(double *y, const double *x, int accumulate, int64_t n, float p, uint64_t seed,
                                uint64_t a, uint64_t b) {
    KoeRng r = koe_rng(seed, a, b, KOE_RNG_DROPOUT);
    for (int64_t i = 0; i < n; i++) {
        double u = (double)(koe_rng_u64(&r) >> 40) / 16777216.0;
        double v = p > 0.0f ? (u >= p ? x[i] / (1.0 - p) : 0.0) : x[i];
        y[i] = accumulate ? y[i] + v : v;
    }
}

void dropout_forward_naive(double *out, const double *inp, int64_t n, float p, uint64_t seed, uint64_t a, uint64_t b) {
    dropout_apply_naive(out, inp, 0, n, p, seed, a, b);
}

void dropout_backward_naive(double *dinp, const double *dout, int64_t n, float p, uint64_t seed, uint64_t a,
                            uint64_t b) {
    dropout_apply_naive(dinp, dout, 1, n, p, seed, a, b);
}

void weightnorm_forward_naive(double *w, double *norm, const double *g, const double *v, int OC, int Ci, int K) {
    int64_t rows = (int64_t)OC * Ci;
    for (int k = 0; k < K; k++) {
        double s = 0.0;
        for (int64_t r = 0; r < rows; r++) s += v[r * K + k] * v[r * K + k];
        norm[k] = sqrt(s);
        for (int64_t r = 0; r < rows; r++) w[r * K + k] = g[k] * v[r * K + k] / norm[k];
    }
}

void weightnorm_backward_naive(double *dg, double *dv, const double *dw, const double *g, const double *v,
                               const double *norm, int OC, int Ci, int K) {
    int64_t rows = (int64_t)OC * Ci;
    for (int k = 0; k < K; k++) {
        /* w = g v / |v|: dg = <dw, v>/|v|; dv = g/|v| dw - g <dw, v> v / |v|^3 */
        double s = 0.0;
        for (int64_t r = 0; r < rows; r++) s += dw[r * K + k] * v[r * K + k];
        if (dg) dg[k] += s / norm[k];
        if (dv)
            for (int64_t r = 0; r < rows; r++)
                dv[r * K + k] += g[k] / norm[k] * dw[r * K + k] - g[k] * s * v[r * K + k] / pow(norm[k], 3);
    }
}

void add_inplace_naive(double *y, const double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void axpy_inplace_naive(double *y, double s, const double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += s * x[i];
}

void rownorm_forward_naive(double *out, double *norm, const double *inp, int64_t N, int C, double eps) {
    for (int64_t i = 0; i < N; i++) {
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += inp[i * C + c] * inp[i * C + c];
        norm[i] = fmax(sqrt(ss), eps); /* sqrt(max(ss, eps^2)) */
        for (int c = 0; c < C; c++) out[i * C + c] = inp[i * C + c] / norm[i];
    }
}

void rownorm_backward_naive(double *dinp, const double *dout, const double *out, const double *norm, int64_t N,
                            int C) {
    /* out_j = v_j / n, n = |v| (torch's gradient, clamped or not): d out_j / d v_k = (delta_jk - out_j out_k) / n */
    for (int64_t i = 0; i < N; i++)
        for (int k = 0; k < C; k++) {
            double g = 0.0;
            for (int j = 0; j < C; j++)
                g += dout[i * C + j] * ((j == k) - out[i * C + j] * out[i * C + k]) / norm[i];
            dinp[i * C + k] += g;
        }
}

int64_t softmax_xent_forward_naive(double *prob, double *loss, const double *logit, const int32_t *target, int64_t N,
                                   int C) {
    int64_t top = 0;
    for (int64_t i = 0; i < N; i++) {
        const double *l = logit + i * C;
        const int y = target ? target[i] : 0;
        double mx = -INFINITY, s = 0.0;
        for (int k = 0; k < C; k++) mx = fmax(mx, l[k]);
        for (int k = 0; k < C; k++) s += exp(l[k] - mx);
        for (int k = 0; k < C; k++) prob[i * C + k] = exp(l[k] - mx) / s;
        loss[i] = mx + log(s) - l[y];
        top += l[y] == mx;
    }
    return top;
}

void softmax_xent_backward_naive(double *dlogit, const double *prob, const int32_t *target, double dloss, int64_t N,
                                 int C) {
    for (int64_t i = 0; i < N; i++)
        for (int k = 0; k < C; k++) dlogit[i * C + k] = dloss * (prob[i * C + k] - (k == (target ? target[i] : 0)));
}

void gather_rows_forward_naive(double *out, const double *inp, const int32_t *idx, int64_t N, int C) {
    for (int64_t i = 0; i < N; i++)
        for (int c = 0; c < C; c++) out[i * C + c] = inp[(int64_t)idx[i] * C + c];
}

void gather_rows_backward_naive(double *dinp, const double *dout, const int32_t *idx, int64_t N, int C) {
    for (int64_t i = 0; i < N; i++)
        for (int c = 0; c < C; c++) dinp[(int64_t)idx[i] * C + c] += dout[i * C + c];
}

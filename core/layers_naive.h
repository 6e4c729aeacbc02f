/* layers_naive.h — naive references of the layers.h kernels (all but attention), in double:
 * the obvious loops, written from the definitions and independent of layers.c's tricks, for the
 * unit tests (fast vs naive, and finite differences through the naive forward). Same argument order
 * and the same accumulate-into-gradients convention as layers.h; NULL gradients are skipped.
 * Not for production use: slow, and no threads. */
#pragma once
#include <stdint.h>

void linear_forward_naive(double *out, const double *inp, const double *weight, const double *bias, int64_t N, int C,
                          int OC);
void linear_backward_naive(double *dinp, double *dweight, double *dbias, const double *dout, const double *inp,
                           const double *weight, int64_t N, int C, int OC);

void conv1d_forward_naive(double *out, const double *inp, const double *weight, const double *bias, int B,
                          int64_t Ti, int C, int OC, int K, int stride, int pad, int G);
void conv1d_backward_naive(double *dinp, double *dweight, double *dbias, const double *dout, const double *inp,
                           const double *weight, int B, int64_t Ti, int C, int OC, int K, int stride, int pad, int G);

void layernorm_forward_naive(double *out, double *mean, double *rstd, const double *inp, const double *weight,
                             const double *bias, int64_t N, int C, double eps);
void layernorm_backward_naive(double *dinp, double *dweight, double *dbias, const double *dout, const double *inp,
                              const double *weight, const double *mean, const double *rstd, int64_t N, int C);

void groupnorm_forward_naive(double *out, double *mean, double *rstd, const double *inp, const double *weight,
                             const double *bias, int B, int64_t T, int C, double eps);
void groupnorm_backward_naive(double *dinp, double *dweight, double *dbias, const double *dout, const double *inp,
                              const double *weight, const double *mean, const double *rstd, int B, int64_t T, int C);

void gelu_forward_naive(double *out, const double *inp, int64_t n);
void gelu_backward_naive(double *dinp, const double *dout, const double *inp, int64_t n);
void swish_forward_naive(double *out, const double *inp, int64_t n);
void swish_backward_naive(double *dinp, const double *dout, const double *inp, int64_t n);
void glu_forward_naive(double *out, const double *inp, int64_t N, int C);
void glu_backward_naive(double *dinp, const double *dout, const double *inp, int64_t N, int C);

void dropout_forward_naive(double *out, const double *inp, int64_t n, float p, uint64_t seed, uint64_t a, uint64_t b);
void dropout_backward_naive(double *dinp, const double *dout, int64_t n, float p, uint64_t seed, uint64_t a,
                            uint64_t b);

void weightnorm_forward_naive(double *w, double *norm, const double *g, const double *v, int OC, int Ci, int K);
void weightnorm_backward_naive(double *dg, double *dv, const double *dw, const double *g, const double *v,
                               const double *norm, int OC, int Ci, int K);

void add_inplace_naive(double *y, const double *x, int64_t n);
void axpy_inplace_naive(double *y, double s, const double *x, int64_t n);

void rownorm_forward_naive(double *out, double *norm, const double *inp, int64_t N, int C, double eps);
void rownorm_backward_naive(double *dinp, const double *dout, const double *out, const double *norm, int64_t N,
                            int C);
int64_t softmax_xent_forward_naive(double *prob, double *loss, const double *logit, const int32_t *target, int64_t N,
                                   int C);
void softmax_xent_backward_naive(double *dlogit, const double *prob, const int32_t *target, double dloss, int64_t N,
                                 int C);
void gather_rows_forward_naive(double *out, const double *inp, const int32_t *idx, int64_t N, int C);
void gather_rows_backward_naive(double *dinp, const double *dout, const int32_t *idx, int64_t N, int C);

/* cka.h — linear CKA between blocks of one set of unit vectors (Kornblith et al. 2019), biased and
 * debiased (the feature-space U-statistic form of their debiased helper; spec
 * ../shared/specs/analyze_layers.md §6), from sums that add across batches and processes:
 * with X, Y two blocks of the centred rows, r_x the rows' squared norms (n values), s_x = sum r_x,
 *   CKA    = ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F)
 *   h(v, x, y) = v - n/(n-2) sum_i r_x,i r_y,i + s_x s_y / ((n-1)(n-2))
 *   CKA_u  = h(||X^T Y||^2, x, y) / sqrt(h(||X^T X||^2, x, x) h(||Y^T Y||^2, y, y)).
 * Biased CKA of independent views is about sqrt(pq)/n, the debiased one about 0.
 * Must not: do I/O or MPI. */
#pragma once
#include <stdint.h>

/* Add n rows (n, dim) centred by mean (dim) to the sums: gram (dim, dim) += Xc^T Xc (upper triangle
 * only), and for the nb blocks [off[b], off[b+1]) of each row: rr (nb, nb) += r_b r_c, rs (nb) += r_b. */
void cka_accumulate(const float *rows, int64_t n, int dim, const double *mean, const int *off, int nb, double *gram,
                    double *rr, double *rs);
/* The (nb, nb) CKA matrix of the sums over n rows; debiased != 0 for CKA_u. */
void cka_matrix(const double *gram, int dim, const int *off, int nb, const double *rr, const double *rs, double n,
                int debiased, double *out);

/* cka.c — linear CKA, biased and debiased, from summed Gram blocks (cka.h).
 * Must not: do I/O or MPI. */
#include "cka.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "../core/common.h"

void cka_accumulate(const float *rows, int64_t n, int dim, const double *mean, const int *off, int nb, double *gram,
                    double *rr, double *rs) {
    enum { BATCH = 1024 };
    double *xc = koe_malloc(sizeof(double) * BATCH * dim), *r = koe_malloc(sizeof(double) * nb);
    for (int64_t b0 = 0; b0 < n; b0 += BATCH) {
        const int m = (int)(n - b0 < BATCH ? n - b0 : BATCH);
        for (int i = 0; i < m; i++) {
            const float *x = rows + (b0 + i) * dim;
            double *o = xc + (int64_t)i * dim;
            for (int j = 0; j < dim; j++) o[j] = (double)x[j] - mean[j];
            for (int b = 0; b < nb; b++) {
                r[b] = 0;
                for (int j = off[b]; j < off[b + 1]; j++) r[b] += o[j] * o[j];
                rs[b] += r[b];
            }
            for (int b = 0; b < nb; b++)
                for (int c = 0; c < nb; c++) rr[b * nb + c] += r[b] * r[c];
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dim, m, 1.0, xc, dim, 1.0, gram, dim);
    }
    free(xc);
    free(r);
}

/* ||block (b, c) of the symmetric gram||_F^2, from its upper triangle. */
static double block_sq(const double *gram, int dim, const int *off, int b, int c) {
    double s = 0;
    for (int i = off[b]; i < off[b + 1]; i++)
        for (int j = off[c]; j < off[c + 1]; j++) {
            const double g = i <= j ? gram[(int64_t)i * dim + j] : gram[(int64_t)j * dim + i];
            s += g * g;
        }
    return s;
}

void cka_matrix(const double *gram, int dim, const int *off, int nb, const double *rr, const double *rs, double n,
                int debiased, double *out) {
    KOE_ASSERT(!debiased || n > 3);
    double *h = koe_malloc(sizeof(double) * nb * nb);
    for (int b = 0; b < nb; b++)
        for (int c = b; c < nb; c++) {
            double v = block_sq(gram, dim, off, b, c);
            if (debiased) v += -n / (n - 2) * rr[b * nb + c] + rs[b] * rs[c] / ((n - 1) * (n - 2));
            h[b * nb + c] = h[c * nb + b] = v;
        }
    for (int b = 0; b < nb; b++)
        for (int c = 0; c < nb; c++) out[b * nb + c] = h[b * nb + c] / sqrt(h[b * nb + b] * h[c * nb + c]);
    free(h);
}

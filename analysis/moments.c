/* moments.c — per-fold co-moments in double precision (moments.h).
 * Must not: do I/O or MPI. */
#include "moments.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"

static int batch_rows(int dim) { return dim / 4 < 256 ? 256 : dim / 4 > 512 ? 512 : dim / 4; }

double moments_bytes(int dim, int folds) {
    return 8.0 * ((double)folds * (1 + dim + (double)dim * dim + (double)batch_rows(dim) * dim) +
                  (double)dim * (batch_rows(dim) + 1));
}

void moments_init(FoldStats *fs, int dim, int folds) {
    KOE_ASSERT(dim > 0 && folds > 0);
    fs->dim = dim;
    fs->folds = folds;
    fs->n = koe_calloc((size_t)folds, sizeof(double));
    fs->mean = koe_calloc((size_t)folds * dim, sizeof(double));
    fs->m = koe_calloc((size_t)folds * dim * dim, sizeof(double));
    fs->batch = batch_rows(dim);
    fs->scratch = koe_calloc((size_t)dim * (fs->batch + 1), sizeof(double));
    fs->pend = koe_malloc(sizeof(double) * folds * fs->batch * dim);
    fs->n_pend = koe_calloc((size_t)folds, sizeof(int));
    fs->stale = 0;
}

void moments_free(FoldStats *fs) {
    free(fs->n);
    free(fs->mean);
    free(fs->m);
    free(fs->scratch);
    free(fs->pend);
    free(fs->n_pend);
    memset(fs, 0, sizeof *fs);
}

void moments_merge(int dim, double *n, double *mean, double *m, double nb, const double *mb, const double *Mb) {
    if (nb == 0) return;
    const double na = *n, nt = na + nb, f = na * nb / nt;
    for (int i = 0; i < dim; i++) {
        const double di = mb[i] - mean[i];
        for (int j = 0; j < dim; j++) m[(int64_t)i * dim + j] += Mb[(int64_t)i * dim + j] + f * di * (mb[j] - mean[j]);
    }
    for (int i = 0; i < dim; i++) mean[i] += (mb[i] - mean[i]) * nb / nt;
    *n = nt;
}

/* Fold rows (at most fs->batch) of z into fold `fold`. */
static void update(FoldStats *fs, int fold, const double *z, int64_t rows) {
    const int d = fs->dim;
    double *mu = fs->mean + (int64_t)fold * d, *M = fs->m + (int64_t)fold * d * d, *sb = fs->scratch, *zc = sb + d;
    if (fs->n[fold] == 0) { /* the first batch's own mean is the centre */
        memset(mu, 0, sizeof(double) * d);
        for (int64_t r = 0; r < rows; r++)
            for (int i = 0; i < d; i++) mu[i] += z[r * d + i];
        for (int i = 0; i < d; i++) mu[i] /= (double)rows;
    }
    /* rows centred on the current mean mu: with s = sum (z - mu) and n the new count,
     * M += sum (z - mu)(z - mu)^T - s s^T / n, mu += s / n (exact) */
    memset(sb, 0, sizeof(double) * d);
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < d; i++) sb[i] += zc[r * d + i] = z[r * d + i] - mu[i];
    const double n = fs->n[fold] + (double)rows;
    /* the upper triangle only (half the flops); moments_flush mirrors it */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)rows, 1.0, zc, d, 1.0, M, d);
    cblas_dsyr(CblasRowMajor, CblasUpper, d, -1.0 / n, sb, 1, M, d);
    for (int i = 0; i < d; i++) mu[i] += sb[i] / n;
    fs->n[fold] = n;
    fs->stale = 1;
}

double *moments_row(FoldStats *fs, int fold) {
    KOE_ASSERT(fold >= 0 && fold < fs->folds);
    return fs->pend + ((int64_t)fold * fs->batch + fs->n_pend[fold]) * fs->dim;
}

void moments_row_done(FoldStats *fs, int fold) {
    if (++fs->n_pend[fold] == fs->batch) update(fs, fold, fs->pend + (int64_t)fold * fs->batch * fs->dim, fs->batch), fs->n_pend[fold] = 0;
}

void moments_add(FoldStats *fs, int fold, const double *z, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        memcpy(moments_row(fs, fold), z + r * fs->dim, sizeof(double) * fs->dim);
        moments_row_done(fs, fold);
    }
}

void moments_flush(FoldStats *fs) {
    const int d = fs->dim;
    for (int f = 0; f < fs->folds; f++)
        if (fs->n_pend[f] > 0) update(fs, f, fs->pend + (int64_t)f * fs->batch * d, fs->n_pend[f]), fs->n_pend[f] = 0;
    for (int f = 0; f < fs->folds && fs->stale; f++) {
        double *M = fs->m + (int64_t)f * d * d;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < i; j++) M[(int64_t)i * d + j] = M[(int64_t)j * d + i];
    }
    fs->stale = 0;
}

static void assert_flushed(const FoldStats *fs) {
    KOE_ASSERT(!fs->stale);
    for (int f = 0; f < fs->folds; f++) KOE_ASSERT(fs->n_pend[f] == 0);
}

void moments_merge_folds(const FoldStats *fs, const unsigned char *use, double *n, double *mean, double *m) {
    assert_flushed(fs);
    const int d = fs->dim;
    *n = 0;
    memset(mean, 0, sizeof(double) * d);
    memset(m, 0, sizeof(double) * d * d);
    for (int f = 0; f < fs->folds; f++)
        if (use[f]) moments_merge(d, n, mean, m, fs->n[f], fs->mean + (int64_t)f * d, fs->m + (int64_t)f * d * d);
}

void moments_weighted_mean(const FoldStats *fs, double *n_mean_sum, double *n_sum) {
    assert_flushed(fs);
    memset(n_mean_sum, 0, sizeof(double) * fs->dim);
    *n_sum = 0;
    for (int f = 0; f < fs->folds; f++) {
        for (int i = 0; i < fs->dim; i++) n_mean_sum[i] += fs->n[f] * fs->mean[(int64_t)f * fs->dim + i];
        *n_sum += fs->n[f];
    }
}

/* Per fold: n, s (dim), then S's upper triangle row by row (dim (dim + 1) / 2): S is symmetric. */
static int64_t fold_sums_len(int d) { return 1 + d + (int64_t)d * (d + 1) / 2; }

int64_t moments_sums_len(const FoldStats *fs) { return (int64_t)fs->folds * fold_sums_len(fs->dim); }

void moments_to_sums(const FoldStats *fs, const double *c, double *sums) {
    assert_flushed(fs);
    const int d = fs->dim;
    for (int f = 0; f < fs->folds; f++) {
        double *o = sums + (int64_t)f * fold_sums_len(d), *s = o + 1, *S = o + 1 + d;
        const double n = fs->n[f], *mu = fs->mean + (int64_t)f * d, *M = fs->m + (int64_t)f * d * d;
        o[0] = n;
        for (int i = 0; i < d; i++) s[i] = n * (mu[i] - c[i]);
        for (int i = 0; i < d; i++)
            for (int j = i; j < d; j++) *S++ = M[(int64_t)i * d + j] + n * (mu[i] - c[i]) * (mu[j] - c[j]);
    }
}

void moments_from_sums(FoldStats *fs, const double *c, const double *sums) {
    assert_flushed(fs);
    const int d = fs->dim;
    for (int f = 0; f < fs->folds; f++) {
        const double *o = sums + (int64_t)f * fold_sums_len(d), *s = o + 1, *S = o + 1 + d;
        const double n = o[0];
        double *mu = fs->mean + (int64_t)f * d, *M = fs->m + (int64_t)f * d * d;
        fs->n[f] = n;
        for (int i = 0; i < d; i++) mu[i] = n > 0 ? c[i] + s[i] / n : 0;
        for (int i = 0; i < d; i++)
            for (int j = i; j < d; j++, S++)
                M[(int64_t)i * d + j] = M[(int64_t)j * d + i] = n > 0 ? *S - s[i] * s[j] / n : 0;
    }
}

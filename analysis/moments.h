/* moments.h — per-fold co-moments of unit vectors z (count, mean, centred co-moment
 * M = sum (z - mu)(z - mu)^T), in double precision, the statistics every CCA score is computed from
 * (spec ../shared/specs/analyze_layers.md §7.3, §8.5).
 * Rows are added in batches, centred on the fold's running mean (the first batch's own mean to
 * begin with) and folded in exactly (M += sum (z - mu)(z - mu)^T - s s^T / n, s the batch's sum of
 * z - mu), so an outlier dimension with a large mean loses no precision. Rows are held per fold
 * until a batch of `batch` rows is full (a few rows at a time would make each update one pass over
 * M; an update is a dsyrk of the upper triangle); moments_flush folds in what is pending and
 * mirrors the triangles, and every reader asserts nothing is pending. Statistics of different
 * folds or processes merge exactly (up to float reassociation): two sets merge with
 * moments_merge; across ranks, each rank turns its folds into sums about a common shift c
 * (moments_to_sums), the sums are added (an allreduce), and moments_from_sums turns them back.
 * Must not: do I/O, call MPI, or know what the dimensions of z mean. */
#pragma once
#include <stdint.h>

typedef struct {
    int dim, folds;
    double *n;    /* (folds) unit counts */
    double *mean; /* (folds, dim) */
    double *m;    /* (folds, dim, dim) centred co-moments, full symmetric, row-major */
    double *scratch; /* (dim): one batch's sum; (batch, dim): its centred rows */
    int batch;       /* rows held per fold before an update: dim / 4 within [256, 512] */
    double *pend;    /* (folds, batch, dim) rows not yet folded in */
    int *n_pend;     /* (folds) */
    int stale;       /* updates write m's upper triangles only; moments_flush mirrors them */
} FoldStats;

void moments_init(FoldStats *fs, int dim, int folds);
/* The bytes moments_init allocates. */
double moments_bytes(int dim, int folds);
void moments_free(FoldStats *fs);
/* Add `rows` rows of z (rows, dim), all in fold `fold` (held until its batch is full). */
void moments_add(FoldStats *fs, int fold, const double *z, int64_t rows);
/* A row written in place: moments_row gives the next pending row of fold `fold` (dim doubles, to be
 * filled), moments_row_done adds it (moments_add is this with a copy). */
double *moments_row(FoldStats *fs, int fold);
void moments_row_done(FoldStats *fs, int fold);
/* Fold in every pending row and complete m. Call before reading n, mean or m. */
void moments_flush(FoldStats *fs);
/* (n, mean, m) += (nb, mb, Mb), sets of dimension dim (Chan et al.). */
void moments_merge(int dim, double *n, double *mean, double *m, double nb, const double *mb, const double *Mb);
/* The merge of the folds f with use[f] != 0 into (n, mean, m). */
void moments_merge_folds(const FoldStats *fs, const unsigned char *use, double *n, double *mean, double *m);
/* sum over folds of n * mean (dim) and of n (1): what an allreduce turns into a common shift. */
void moments_weighted_mean(const FoldStats *fs, double *n_mean_sum, double *n_sum);
/* Sums about the shift c (dim), per fold: [n, s = n (mu - c) (dim), S = M + n (mu - c)(mu - c)^T, its
 * upper triangle row by row (dim (dim + 1) / 2)], moments_sums_len(fs) doubles in all. Sums of different processes add; moments_from_sums inverts. */
int64_t moments_sums_len(const FoldStats *fs);
void moments_to_sums(const FoldStats *fs, const double *c, double *sums);
void moments_from_sums(FoldStats *fs, const double *c, const double *sums);

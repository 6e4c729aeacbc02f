/* kmeans.h — the arithmetic of k-means on arrays in memory: nearest-centroid assignment with
 * GEMM-based distances, accumulation of the Lloyd statistics, the centroid update, greedy
 * k-means++ seeding and re-seeding of empty clusters. Letters: N frames, D feature dim, K clusters.
 * Must not: do I/O, call MPI, or know where features come from (recipes/cmd_kmeans.c streams them
 * from the corpus; distributed/kmeans.c sums the statistics across ranks). */
#pragma once
#include <stdint.h>

#include "rng.h"

/* Rows per sgemm block in kmeans_assign: scratch is KMEANS_BLOCK * K floats. */
#define KMEANS_BLOCK 1024

/* out[i] = ||X[i]||^2 for N rows of D (accumulated in double). */
void kmeans_sqnorms(const float *X, int64_t N, int D, float *out);

/* For each row of X (N, D), the nearest of the K centroids C (K, D) (c_sqn (K) their squared norms)
 * as assign[i] (lowest index on ties) and its squared distance dist[i] (may be NULL), computed as
 * ||x||^2 - 2 x.c + ||c||^2 with one sgemm per block of KMEANS_BLOCK rows, clamped at 0.
 * scratch: (KMEANS_BLOCK * K) floats. Returns the summed squared distance (double). */
double kmeans_assign(const float *X, int64_t N, int D, const float *C, const float *c_sqn, int K, int32_t *assign,
                     float *dist, float *scratch);

/* Lloyd statistics: sums[assign[i]] += X[i] (sums (K, D) double), counts[assign[i]] += 1, in row
 * order: the same for any thread count. */
void kmeans_accumulate(const float *X, int64_t N, int D, const int32_t *assign, double *sums, double *counts);

/* C[k] = sums[k] / counts[k] for every non-empty cluster; empty clusters keep their row.
 * Returns the number of empty clusters. */
int kmeans_update(float *C, const double *sums, const double *counts, int K, int D);

/* Greedy k-means++ (Arthur & Vassilvitskii; the greedy variant scikit-learn uses): the first
 * centre is a uniformly drawn row of the sample S (Ns, D); each next one is the best, by total
 * potential, of 2 + floor(ln K) candidates drawn with probability proportional to the squared
 * distance to the nearest centre so far. Writes C (K, D). Deterministic given rng. Needs Ns >= K. */
void kmeans_plusplus(const float *S, int64_t Ns, int D, int K, KoeRng *rng, float *C);

/* Move every empty cluster (counts[k] == 0) onto a row of the sample S (Ns, D): the row farthest
 * from its nearest centroid, each row used once (the farthest first, then the next farthest
 * after that centroid moved). Deterministic; returns how many clusters moved. */
int kmeans_reseed_empty(float *C, const double *counts, int K, int D, const float *S, int64_t Ns);

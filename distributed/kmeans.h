/* kmeans.h — k-means across ranks (the MPI half of `koe kmeans`; the arithmetic is core/kmeans.h):
 *   - the init sample: each rank keeps the frames with the smallest 63-bit keys it saw (a bounded
 *     bottom-M sample), and the merge gives every rank the global bottom-M, sorted by key, so the
 *     sample is the same for any rank count;
 *   - the init: k-means++ or random rows of that sample, broadcast from rank 0;
 *   - one Lloyd update: sums, counts and inertia accumulated in double on each rank, summed over
 *     ranks in one allreduce, then the centroid update and the re-seeding of empty clusters, so the
 *     centroids equal one rank's up to float reassociation.
 * Letters: D feature dim, K clusters, M sample rows.
 * Every function named _merge, _init or _update is collective (all ranks, same order).
 * Must not: read features or files (recipes/cmd_kmeans.c streams them), or draw randomness from
 * anything but the rng it is handed. */
#pragma once
#include <stdint.h>

#include "../core/rng.h"

/* Bottom-M sample by 63-bit key: a max-heap of slots. */
typedef struct {
    int64_t M, n;
    int D;
    int64_t *key;  /* (M) heap of keys */
    int64_t *slot; /* (M) heap position -> row of data */
    float *data;   /* (M, D) */
} KmeansSample;

void kmeans_sample_init(KmeansSample *r, int64_t M, int D);
/* Keep row x (D floats) if key is among the M smallest offered so far. Local, no MPI. */
void kmeans_sample_offer(KmeansSample *r, int64_t key, const float *x);
/* The global bottom-M over every rank's sample, identical on every rank and sorted by key. Returns
 * its row count; *out (malloc'ed) holds (rows, D). Collective. */
int64_t kmeans_sample_merge(const KmeansSample *r, float **out);
void kmeans_sample_free(KmeansSample *r);

/* C (K, D): K distinct rows of the sample S (Ns, D) in an order drawn from rng (random = 1), or
 * greedy k-means++ on S; every rank computes the same, rank 0's is broadcast to be sure. Needs
 * Ns >= K. Collective. */
void kmeans_dist_init(float *C, const float *S, int64_t Ns, int D, int K, int random, KoeRng *rng);

/* The Lloyd statistics of one pass, in one buffer so that one allreduce sums them. */
typedef struct {
    int K, D;
    double *stat;   /* (K * D + K + 1): sums, counts, inertia */
    double *sums;   /* (K, D) view */
    double *counts; /* (K) view */
} KmeansStats;

void kmeans_stats_init(KmeansStats *s, int K, int D);
void kmeans_stats_clear(KmeansStats *s);
/* This rank's part of a pass: inertia (summed squared distance) of rows it assigned; sums and counts
 * go through core/kmeans.h's kmeans_accumulate on s->sums, s->counts. */
void kmeans_stats_add_inertia(KmeansStats *s, double inertia);
void kmeans_stats_free(KmeansStats *s);

/* End of a pass: sum s over ranks, move each centroid of C (K, D) to the mean of its frames, and
 * re-seed empty clusters from the sample S (Ns, D). Returns the global inertia; *empty: how many
 * clusters were empty. Collective. */
double kmeans_dist_update(KmeansStats *s, float *C, const float *S, int64_t Ns, int *empty);

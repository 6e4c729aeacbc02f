/* kmeans.c — k-means arithmetic on arrays (kmeans.h). Distances go through sgemm:
 * ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, the form scikit-learn and faiss use; the cancellation
 * error (~1e-7 of ||x||^2) only matters between near-equal centroids, where either choice is fine.
 * Must not: do I/O or MPI, or draw randomness from anything but the KoeRng it is given. */
#include "kmeans.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gemm.h"

void kmeans_sqnorms(const float *X, int64_t N, int D, float *out) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *x = X + i * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)x[d] * x[d];
        out[i] = (float)s;
    }
}

double kmeans_assign(const float *X, int64_t N, int D, const float *C, const float *c_sqn, int K, int32_t *assign,
                     float *dist, float *scratch) {
    double total = 0;
    for (int64_t b0 = 0; b0 < N; b0 += KMEANS_BLOCK) {
        const int nb = (int)(N - b0 < KMEANS_BLOCK ? N - b0 : KMEANS_BLOCK);
        float *G = scratch; // (nb, K) x . c
        sgemm_fp32('N', 'T', nb, K, D, 1.0f, X + b0 * D, D, C, D, 0.0f, G, K);
        double block_total = 0;
#pragma omp parallel for schedule(static) reduction(+ : block_total)
        for (int i = 0; i < nb; i++) {
            const float *x = X + (b0 + i) * D;
            double xs = 0;
            for (int d = 0; d < D; d++) xs += (double)x[d] * x[d];
            const float *g = G + (int64_t)i * K;
            int best = 0;
            float bd = c_sqn[0] - 2.0f * g[0];
            for (int k = 1; k < K; k++) {
                float dk = c_sqn[k] - 2.0f * g[k];
                if (dk < bd) {
                    bd = dk;
                    best = k;
                }
            }
            float d2 = (float)(xs + bd);
            if (d2 < 0) d2 = 0;
            assign[b0 + i] = best;
            if (dist) dist[b0 + i] = d2;
            block_total += d2;
        }
        total += block_total;
    }
    return total;
}

/* Threads split the columns, not the rows: every sums element is still added in row order, so the
 * result is the same for any thread count (and no two threads write one element). */
void kmeans_accumulate(const float *X, int64_t N, int D, const int32_t *assign, double *sums, double *counts) {
    enum { COLS = 64 }; /* columns per task: a cache line of doubles times 8 */
#pragma omp parallel for schedule(static)
    for (int d0 = 0; d0 < D; d0 += COLS) {
        const int d1 = d0 + COLS < D ? d0 + COLS : D;
        for (int64_t i = 0; i < N; i++) {
            const float *x = X + i * D;
            double *s = sums + (int64_t)assign[i] * D;
            for (int d = d0; d < d1; d++) s[d] += x[d];
        }
    }
    for (int64_t i = 0; i < N; i++) counts[assign[i]] += 1.0;
}

int kmeans_update(float *C, const double *sums, const double *counts, int K, int D) {
    int empty = 0;
    for (int k = 0; k < K; k++) {
        if (counts[k] <= 0) {
            empty++;
            continue;
        }
        for (int d = 0; d < D; d++) C[(int64_t)k * D + d] = (float)(sums[(int64_t)k * D + d] / counts[k]);
    }
    return empty;
}

/* dist[i] = ||S[i] - c||^2 for one centre, directly (exact enough for the first potential). */
static void sqdist_to(const float *S, int64_t Ns, int D, const float *c, float *dist) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < Ns; i++) {
        double s = 0;
        for (int d = 0; d < D; d++) {
            double t = (double)S[i * D + d] - c[d];
            s += t * t;
        }
        dist[i] = (float)s;
    }
}

void kmeans_plusplus(const float *S, int64_t Ns, int D, int K, KoeRng *rng, float *C) {
    KOE_ASSERT(Ns >= K && K > 0);
    const int trials = 2 + (int)log((double)K);
    float *closest = koe_malloc((size_t)Ns * sizeof(float));
    float *s_sqn = koe_malloc((size_t)Ns * sizeof(float));
    double *cum = koe_malloc((size_t)Ns * sizeof(double));
    float *cand = koe_malloc((size_t)trials * D * sizeof(float));      // (trials, D)
    float *cand_sqn = koe_malloc((size_t)trials * sizeof(float));
    float *G = koe_malloc((size_t)Ns * trials * sizeof(float));        // (Ns, trials) S . cand
    int64_t *cand_id = koe_malloc((size_t)trials * sizeof(int64_t));
    double *pot_t = koe_malloc((size_t)trials * sizeof(double));
    kmeans_sqnorms(S, Ns, D, s_sqn);

    int64_t first = (int64_t)koe_rng_below(rng, (uint64_t)Ns);
    memcpy(C, S + first * D, (size_t)D * sizeof(float));
    sqdist_to(S, Ns, D, C, closest);
    for (int c = 1; c < K; c++) {
        double acc = 0;
        for (int64_t i = 0; i < Ns; i++) cum[i] = (acc += closest[i]);
        for (int t = 0; t < trials; t++) {
            double r = koe_rng_uniform(rng) * acc;
            int64_t lo = 0, hi = Ns - 1; // first i with cum[i] > r (numpy searchsorted, side left on r)
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (cum[mid] > r) hi = mid;
                else lo = mid + 1;
            }
            cand_id[t] = lo;
            memcpy(cand + (int64_t)t * D, S + lo * D, (size_t)D * sizeof(float));
        }
        kmeans_sqnorms(cand, trials, D, cand_sqn);
        sgemm_fp32('N', 'T', (int)Ns, trials, D, 1.0f, S, D, cand, D, 0.0f, G, trials);
        for (int t = 0; t < trials; t++) pot_t[t] = 0;
#pragma omp parallel
        {
            double local[64] = {0};
            KOE_ASSERT(trials <= 64);
#pragma omp for schedule(static)
            for (int64_t i = 0; i < Ns; i++) {
                for (int t = 0; t < trials; t++) {
                    float d2 = s_sqn[i] - 2.0f * G[i * trials + t] + cand_sqn[t];
                    if (d2 < 0) d2 = 0;
                    local[t] += d2 < closest[i] ? d2 : closest[i];
                }
            }
#pragma omp critical
            for (int t = 0; t < trials; t++) pot_t[t] += local[t];
        }
        int best = 0;
        for (int t = 1; t < trials; t++)
            if (pot_t[t] < pot_t[best]) best = t;
        memcpy(C + (int64_t)c * D, S + cand_id[best] * D, (size_t)D * sizeof(float));
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < Ns; i++) {
            float d2 = s_sqn[i] - 2.0f * G[i * trials + best] + cand_sqn[best];
            if (d2 < 0) d2 = 0;
            if (d2 < closest[i]) closest[i] = d2;
        }
    }
    free(closest);
    free(s_sqn);
    free(cum);
    free(cand);
    free(cand_sqn);
    free(G);
    free(cand_id);
    free(pot_t);
}

int kmeans_reseed_empty(float *C, const double *counts, int K, int D, const float *S, int64_t Ns) {
    int n_empty = 0;
    for (int k = 0; k < K; k++) n_empty += counts[k] <= 0;
    if (n_empty == 0 || Ns == 0) return 0;
    float *c_sqn = koe_malloc((size_t)K * sizeof(float));
    float *mind = koe_malloc((size_t)Ns * sizeof(float));
    int32_t *assign = koe_malloc((size_t)Ns * sizeof(int32_t));
    float *scratch = koe_malloc((size_t)KMEANS_BLOCK * K * sizeof(float));
    float *d_new = koe_malloc((size_t)Ns * sizeof(float));
    kmeans_sqnorms(C, K, D, c_sqn);
    kmeans_assign(S, Ns, D, C, c_sqn, K, assign, mind, scratch);
    int moved = 0;
    for (int k = 0; k < K && moved < Ns; k++) {
        if (counts[k] > 0) continue;
        int64_t far = 0;
        for (int64_t i = 1; i < Ns; i++)
            if (mind[i] > mind[far]) far = i;
        memcpy(C + (int64_t)k * D, S + far * D, (size_t)D * sizeof(float));
        sqdist_to(S, Ns, D, C + (int64_t)k * D, d_new);
        for (int64_t i = 0; i < Ns; i++)
            if (d_new[i] < mind[i]) mind[i] = d_new[i];
        mind[far] = -1; // used: never picked again, even if every row is at distance 0
        moved++;
    }
    free(c_sqn);
    free(mind);
    free(assign);
    free(scratch);
    free(d_new);
    return moved;
}

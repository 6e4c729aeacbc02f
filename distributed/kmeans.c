/* kmeans.c — see kmeans.h. */
#include "kmeans.h"

#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/kmeans.h"
#include "comm.h"

void kmeans_sample_init(KmeansSample *r, int64_t M, int D) {
    memset(r, 0, sizeof *r);
    r->M = M;
    r->D = D;
    r->key = koe_malloc((size_t)(M ? M : 1) * sizeof(int64_t));
    r->slot = koe_malloc((size_t)(M ? M : 1) * sizeof(int64_t));
    r->data = koe_malloc((size_t)(M ? M : 1) * D * sizeof(float));
}

void kmeans_sample_free(KmeansSample *r) {
    free(r->key);
    free(r->slot);
    free(r->data);
    memset(r, 0, sizeof *r);
}

static void sample_sift_down(KmeansSample *r, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, big = i;
        if (l < r->n && r->key[l] > r->key[big]) big = l;
        if (l + 1 < r->n && r->key[l + 1] > r->key[big]) big = l + 1;
        if (big == i) return;
        int64_t tk = r->key[i], ts = r->slot[i];
        r->key[i] = r->key[big], r->slot[i] = r->slot[big];
        r->key[big] = tk, r->slot[big] = ts;
        i = big;
    }
}

void kmeans_sample_offer(KmeansSample *r, int64_t key, const float *x) {
    if (r->n < r->M) {
        int64_t i = r->n++;
        r->slot[i] = i;
        r->key[i] = key;
        memcpy(r->data + i * r->D, x, (size_t)r->D * sizeof(float));
        while (i > 0 && r->key[(i - 1) / 2] < r->key[i]) { /* sift up */
            int64_t p = (i - 1) / 2, tk = r->key[i], ts = r->slot[i];
            r->key[i] = r->key[p], r->slot[i] = r->slot[p];
            r->key[p] = tk, r->slot[p] = ts;
            i = p;
        }
    } else if (r->M > 0 && key < r->key[0]) {
        r->key[0] = key;
        memcpy(r->data + r->slot[0] * r->D, x, (size_t)r->D * sizeof(float));
        sample_sift_down(r, 0);
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Rank 0: the (key, row) records gathered from every rank (n of rec bytes), sorted by key, first M
 * rows kept into *out (malloc'ed). Returns the row count. */
static int64_t sample_keep_smallest(const char *got, int64_t n, size_t rec, int64_t M, int D, float **out) {
    int64_t *order = koe_malloc((size_t)(n ? n : 1) * 2 * sizeof(int64_t)); /* (key, index) pairs */
    for (int64_t i = 0; i < n; i++) {
        memcpy(&order[2 * i], got + i * rec, sizeof(int64_t));
        order[2 * i + 1] = i;
    }
    qsort(order, (size_t)n, 2 * sizeof(int64_t), cmp_i64);
    const int64_t rows = n < M ? n : M;
    float *data = koe_malloc((size_t)(rows ? rows : 1) * D * sizeof(float));
    for (int64_t i = 0; i < rows; i++)
        memcpy(data + i * D, got + order[2 * i + 1] * rec + sizeof(int64_t), (size_t)D * sizeof(float));
    free(order);
    *out = data;
    return rows;
}

int64_t kmeans_sample_merge(const KmeansSample *r, float **out) {
    const int world = comm_size(), rank = comm_rank(), D = r->D;
    const int64_t M = r->M;
    int64_t *mine = koe_malloc((size_t)(M ? M : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < M; i++) mine[i] = i < r->n ? r->key[i] : INT64_MAX;
    int64_t *all = koe_malloc((size_t)world * (M ? M : 1) * sizeof(int64_t));
    comm_allgather_i64(mine, (int)M, all);
    qsort(all, (size_t)world * M, sizeof(int64_t), cmp_i64);
    const int64_t thr = all[M - 1]; /* the M-th smallest key over all ranks */
    free(all);
    free(mine);
    /* each rank sends (key, row) for its keys <= thr; rank 0 sorts and keeps M */
    const size_t rec = sizeof(int64_t) + (size_t)D * sizeof(float);
    int64_t cnt = 0;
    for (int64_t i = 0; i < r->n; i++) cnt += r->key[i] <= thr;
    char *buf = koe_malloc((size_t)(cnt ? cnt : 1) * rec), *p = buf;
    for (int64_t i = 0; i < r->n; i++) {
        if (r->key[i] > thr) continue;
        memcpy(p, &r->key[i], sizeof(int64_t));
        memcpy(p + sizeof(int64_t), r->data + r->slot[i] * D, (size_t)D * sizeof(float));
        p += rec;
    }
    int64_t total = 0;
    char *got = comm_gather_bytes(buf, cnt * (int64_t)rec, 0, &total);
    free(buf);
    int64_t rows = 0;
    float *data = NULL;
    if (rank == 0) {
        rows = sample_keep_smallest(got, total / (int64_t)rec, rec, M, D, &data);
        free(got);
    }
    comm_bcast(&rows, sizeof rows, 0);
    if (rank != 0) data = koe_malloc((size_t)(rows ? rows : 1) * D * sizeof(float));
    comm_bcast(data, (size_t)rows * D * sizeof(float), 0);
    *out = data;
    return rows;
}

void kmeans_dist_init(float *C, const float *S, int64_t Ns, int D, int K, int random, KoeRng *rng) {
    KOE_ASSERT(Ns >= K);
    if (random) {
        int64_t *perm = koe_malloc((size_t)Ns * sizeof(int64_t));
        for (int64_t i = 0; i < Ns; i++) perm[i] = i;
        koe_rng_shuffle_i64(rng, perm, Ns);
        for (int k = 0; k < K; k++) memcpy(C + (int64_t)k * D, S + perm[k] * D, (size_t)D * sizeof(float));
        free(perm);
    } else {
        kmeans_plusplus(S, Ns, D, K, rng, C);
    }
    comm_bcast(C, (size_t)K * D * sizeof(float), 0);
}

void kmeans_stats_init(KmeansStats *s, int K, int D) {
    const int64_t n = (int64_t)K * D + K + 1;
    KOE_ASSERT(n < INT32_MAX); /* one allreduce of an int count */
    s->K = K;
    s->D = D;
    s->stat = koe_malloc((size_t)n * sizeof(double));
    s->sums = s->stat;
    s->counts = s->stat + (int64_t)K * D;
    kmeans_stats_clear(s);
}

void kmeans_stats_clear(KmeansStats *s) {
    memset(s->stat, 0, (size_t)((int64_t)s->K * s->D + s->K + 1) * sizeof(double));
}

void kmeans_stats_add_inertia(KmeansStats *s, double inertia) { s->stat[(int64_t)s->K * s->D + s->K] += inertia; }

void kmeans_stats_free(KmeansStats *s) {
    free(s->stat);
    memset(s, 0, sizeof *s);
}

double kmeans_dist_update(KmeansStats *s, float *C, const float *S, int64_t Ns, int *empty) {
    const int64_t n = (int64_t)s->K * s->D + s->K + 1;
    comm_allreduce_sum_f64(s->stat, (int)n);
    *empty = kmeans_update(C, s->sums, s->counts, s->K, s->D);
    if (*empty) kmeans_reseed_empty(C, s->counts, s->K, s->D, S, Ns);
    return s->stat[n - 1];
}

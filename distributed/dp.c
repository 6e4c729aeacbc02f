/* dp.c — see dp.h. Buckets are planned once from the table; each update launches them in the same
 * order on every rank (the collectives match by order), only the moment differs.
 * Must not: call MPI outside the bucket collectives and the ZeRO-1 gathers, or allocate per update. */
#include "dp.h"

#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "comm.h"
#include "mpi_check.h"

struct DataParallel {
    float *grads;
    int64_t total;
    int zero, world, rank;
    int n_buckets;
    int64_t *b_start, *b_end; /* (n_buckets) bucket k = [b_start, b_end); k = 0 is the end of the buffer */
    MPI_Request *req;         /* (n_buckets) */
    int *counts;              /* (n_buckets * world) ZeRO-1: each rank's part of each bucket */
    int *s_counts, *s_displs; /* (world) every rank's slice */
    int64_t s0, s1;           /* this rank's slice */
    float *own;               /* ZeRO-1: (s1 - s0) the reduced slice */
    int armed, launched;
};

DataParallel *dp_create(const ParamTable *t, float *grads, int64_t bucket_bytes, int zero) {
    DataParallel *d = koe_calloc(1, sizeof *d);
    d->grads = grads;
    d->total = t->total;
    d->zero = zero;
    d->world = comm_size();
    d->rank = comm_rank();
    const int64_t cap = bucket_bytes / (int64_t)sizeof(float) > 0 ? bucket_bytes / (int64_t)sizeof(float) : 1;
    d->b_start = koe_malloc((size_t)(t->n ? t->n : 1) * sizeof(int64_t));
    d->b_end = koe_malloc((size_t)(t->n ? t->n : 1) * sizeof(int64_t));
    int64_t end = t->total;
    for (int i = t->n - 1; i >= 0; i--) { /* whole tensors, from the last one */
        const int64_t start = t->e[i].offset;
        if (end - start >= cap || i == 0) {
            KOE_ASSERT(end - start <= INT32_MAX);
            d->b_start[d->n_buckets] = start;
            d->b_end[d->n_buckets] = end;
            d->n_buckets++;
            end = start;
        }
    }
    d->req = koe_malloc((size_t)(d->n_buckets ? d->n_buckets : 1) * sizeof *d->req);
    for (int k = 0; k < d->n_buckets; k++) d->req[k] = MPI_REQUEST_NULL;
    d->s_counts = koe_malloc((size_t)d->world * sizeof(int));
    d->s_displs = koe_malloc((size_t)d->world * sizeof(int));
    for (int r = 0; r < d->world; r++) {
        int64_t a, b;
        comm_slice(t->total, d->world, r, &a, &b);
        KOE_ASSERT(b <= INT32_MAX);
        d->s_counts[r] = (int)(b - a);
        d->s_displs[r] = (int)a;
    }
    d->s0 = 0;
    d->s1 = t->total;
    if (zero) {
        comm_slice(t->total, d->world, d->rank, &d->s0, &d->s1);
        d->own = koe_calloc((size_t)(d->s1 - d->s0 ? d->s1 - d->s0 : 1), sizeof(float));
        d->counts = koe_calloc((size_t)d->n_buckets * (size_t)d->world, sizeof(int));
        for (int k = 0; k < d->n_buckets; k++)
            for (int r = 0; r < d->world; r++) {
                const int64_t a = d->b_start[k] > d->s_displs[r] ? d->b_start[k] : d->s_displs[r];
                const int64_t b = d->b_end[k] < (int64_t)d->s_displs[r] + d->s_counts[r]
                                      ? d->b_end[k]
                                      : (int64_t)d->s_displs[r] + d->s_counts[r];
                d->counts[(size_t)k * d->world + r] = b > a ? (int)(b - a) : 0;
            }
    }
    return d;
}

void dp_free(DataParallel *d) {
    if (!d) return;
    free(d->b_start);
    free(d->b_end);
    free(d->req);
    free(d->counts);
    free(d->s_counts);
    free(d->s_displs);
    free(d->own);
    free(d);
}

void dp_slice(const DataParallel *d, int64_t *start, int64_t *end) {
    *start = d->s0;
    *end = d->s1;
}

void dp_arm(DataParallel *d) {
    KOE_ASSERT(d->launched == 0);
    d->armed = 1;
}

static void launch(DataParallel *d, int k) {
    float *buf = d->grads + d->b_start[k];
    const int n = (int)(d->b_end[k] - d->b_start[k]);
    if (!d->zero) {
        mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &d->req[k]));
        return;
    }
    /* this rank's part of bucket k lands at its place in the slice */
    const int64_t first = d->b_start[k] > d->s0 ? d->b_start[k] : d->s0;
    float *recv = d->own + (first < d->s1 ? first - d->s0 : 0);
    mpiCheck(MPI_Ireduce_scatter(buf, recv, d->counts + (size_t)k * d->world, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                                 &d->req[k]));
}

void dp_grads_ready(void *ctx, int64_t first) {
    DataParallel *d = ctx;
    if (!d->armed) return;
    while (d->launched < d->n_buckets && d->b_start[d->launched] >= first) launch(d, d->launched++);
    if (d->launched > 0) {
        int done = 0; /* Open MPI progresses non-blocking collectives inside MPI calls: give it one */
        mpiCheck(MPI_Testall(d->launched, d->req, &done, MPI_STATUSES_IGNORE));
    }
}

double dp_finish(DataParallel *d) {
    d->armed = 1;
    while (d->launched < d->n_buckets) launch(d, d->launched++);
    const double t0 = koe_now();
    mpiCheck(MPI_Waitall(d->n_buckets, d->req, MPI_STATUSES_IGNORE));
    const double waited = koe_now() - t0;
    if (d->zero) memcpy(d->grads + d->s0, d->own, (size_t)(d->s1 - d->s0) * sizeof(float));
    d->armed = 0;
    d->launched = 0;
    return waited;
}

void dp_allgather_params(DataParallel *d, float *params) {
    KOE_ASSERT(d->zero);
    mpiCheck(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, d->s_counts, d->s_displs, MPI_FLOAT,
                            MPI_COMM_WORLD));
}

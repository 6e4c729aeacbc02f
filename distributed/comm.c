/* comm.c — MPI setup and the few collectives koe needs. See comm.h. */
#include "comm.h"

#include <limits.h>
#include <stdlib.h>

#include "../core/common.h"
#include "mpi_check.h"

static int world_rank, world_size = 1;

void comm_init(int *argc, char ***argv) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) mpiCheck(MPI_Init(argc, argv));
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    mpiCheck(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
    mpiCheck(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
    koe_set_log_rank(world_rank, world_size);
    if (world_size > 1) koe_set_fatal_hook(comm_abort);
    /* `srun -n N koe ...` without PMIx support starts N separate worlds of one, which would all do
     * rank 0's work on the same files. srun sets SLURM_STEP_NUM_TASKS for the step it launched. */
    const char *nt = getenv("SLURM_STEP_NUM_TASKS");
    if (nt && world_size == 1 && atoi(nt) > 1)
        koe_fatal(KOE_EXIT_USAGE,
                  "srun started %s tasks but each sees an MPI world of 1: the ranks did not find each "
                  "other. Use `srun --mpi=pmix ...` or `mpirun -np $SLURM_NTASKS koe ...`",
                  nt);
}

void comm_finalize(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

int comm_rank(void) { return world_rank; }
int comm_size(void) { return world_size; }
void comm_barrier(void) { mpiCheck(MPI_Barrier(MPI_COMM_WORLD)); }
void comm_abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    abort(); /* MPI_Abort does not return; if it ever did, this rank must not go on alone */
}

void comm_slice(int64_t total, int world, int rank, int64_t *start, int64_t *end) {
    KOE_ASSERT(total >= 0 && world >= 1 && rank >= 0 && rank < world);
    const int64_t q = total / world, r = total % world;
    *start = rank * q + (rank < r ? rank : r);
    *end = *start + q + (rank < r ? 1 : 0);
}

void comm_allreduce_sum_i64(int64_t *v, int n) {
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
}
void comm_allreduce_sum_f64(double *v, int n) {
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
}
void comm_allreduce_max_i64(int64_t *v, int n) {
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD));
}
void comm_allgather_i64(const int64_t *mine, int n, int64_t *all) {
    mpiCheck(MPI_Allgather(mine, n, MPI_INT64_T, all, n, MPI_INT64_T, MPI_COMM_WORLD));
}
void comm_bcast(void *buf, size_t bytes, int root) {
    const size_t chunk = (size_t)1 << 30; /* MPI counts are int: a large model goes in pieces */
    size_t o = 0;
    do {
        const size_t n = bytes - o < chunk ? bytes - o : chunk;
        mpiCheck(MPI_Bcast((char *)buf + o, (int)n, MPI_BYTE, root, MPI_COMM_WORLD));
        o += n;
    } while (o < bytes);
}

void comm_allgather_ranges(float *buf, const int64_t *start) {
    const int world = comm_size();
    if (world == 1) return;
    if (start[world] <= INT_MAX) {
        int *counts = koe_malloc((size_t)world * sizeof *counts), *displs = koe_malloc((size_t)world * sizeof *displs);
        for (int r = 0; r < world; r++) {
            displs[r] = (int)start[r];
            counts[r] = (int)(start[r + 1] - start[r]);
        }
        mpiCheck(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_FLOAT, MPI_COMM_WORLD));
        free(counts);
        free(displs);
        return;
    }
    for (int r = 0; r < world; r++) /* displacements past INT_MAX: comm_bcast goes in pieces */
        if (start[r + 1] > start[r]) comm_bcast(buf + start[r], (size_t)(start[r + 1] - start[r]) * sizeof *buf, r);
}

void comm_allgather_slices(float *buf, int64_t total) {
    const int world = comm_size();
    int64_t *start = koe_malloc((size_t)(world + 1) * sizeof *start), e;
    for (int r = 0; r < world; r++) comm_slice(total, world, r, &start[r], &e);
    start[world] = total;
    comm_allgather_ranges(buf, start);
    free(start);
}

int comm_all_equal_u64(uint64_t x) {
    /* max(-x) == -min(x): compare as two's complement halves to stay exact for all 64 bits */
    uint64_t v[2] = {x, ~x}, r[2];
    mpiCheck(MPI_Allreduce(v, r, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD));
    return r[0] == x && r[1] == ~x;
}

char *comm_gather_bytes(const void *mine, int64_t n, int root, int64_t *total) {
    KOE_ASSERT(n >= 0 && n <= (int64_t)INT32_MAX);
    int me = (int)n;
    int *counts = NULL, *displs = NULL;
    char *all = NULL;
    if (world_rank == root) {
        counts = koe_malloc((size_t)world_size * sizeof *counts);
        displs = koe_malloc((size_t)world_size * sizeof *displs);
    }
    mpiCheck(MPI_Gather(&me, 1, MPI_INT, counts, 1, MPI_INT, root, MPI_COMM_WORLD));
    if (world_rank == root) {
        int64_t sum = 0;
        for (int r = 0; r < world_size; r++) {
            KOE_ASSERT(sum <= (int64_t)INT32_MAX);
            displs[r] = (int)sum;
            sum += counts[r];
        }
        KOE_ASSERT(sum <= (int64_t)INT32_MAX);
        all = koe_malloc((size_t)sum + 1);
        all[sum] = 0;
        *total = sum;
    }
    mpiCheck(MPI_Gatherv(mine, me, MPI_BYTE, all, counts, displs, MPI_BYTE, root, MPI_COMM_WORLD));
    free(counts);
    free(displs);
    return all;
}

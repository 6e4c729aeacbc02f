/* comm.h — the MPI world as the rest of koe sees it. Only distributed/ includes <mpi.h>.
 * Every call is checked; a fatal error on any rank aborts the whole communicator. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* MPI_Init (a plain `koe CMD` without mpirun is a world of one), the fatal hook that aborts the
 * communicator, and the rank prefix for logs. Under srun, a step of N tasks whose ranks each see
 * a world of one is an error (srun without PMIx starts N separate worlds of one). */
void comm_init(int *argc, char ***argv);
void comm_finalize(void);
int comm_rank(void);
int comm_size(void);
void comm_barrier(void);
/* End the whole job with exit code `code` (MPI_Abort; never returns, never exit()s one rank alone).
 * The only fatal path under MPI: koe_fatal's hook on a multi-rank run, and the watchdog. */
void comm_abort(int code) __attribute__((noreturn));

/* Rank `rank`'s part [*start, *end) of a flat buffer of `total` elements split over `world` ranks:
 * even, the first total % world ranks one element longer. The ZeRO-1 slices of the gradients and
 * AdamW moments, and the /optim slices a rank writes to and reads from a checkpoint. */
void comm_slice(int64_t total, int world, int rank, int64_t *start, int64_t *end);

/* Collectives on plain arrays, in place. */
void comm_allreduce_sum_i64(int64_t *v, int n);
void comm_allreduce_sum_f64(double *v, int n);
void comm_allreduce_max_i64(int64_t *v, int n);
void comm_allgather_i64(const int64_t *mine, int n, int64_t *all /* (size, n) */);
void comm_bcast(void *buf, size_t bytes, int root); /* any size: in pieces of 1 GiB */
/* buf whole on every rank, rank r having filled [start[r], start[r + 1]) (start: world + 1 nondecreasing
 * offsets in floats): one MPI_Allgatherv, so every rank's part moves at once (a broadcast per owner
 * when buf passes MPI's int counts). */
void comm_allgather_ranges(float *buf, const int64_t *start);
/* The same with rank r's part its comm_slice of total floats. */
void comm_allgather_slices(float *buf, int64_t total);

/* Agreement: true on every rank iff every rank passed the same x (one allreduce of (-x, x) under MAX). */
int comm_all_equal_u64(uint64_t x);

/* Concatenate every rank's bytes on root, in rank order: returns a malloc'ed buffer there (its size
 * in *total), NULL on the other ranks. For small reports (prepare's rejections), not for data. */
char *comm_gather_bytes(const void *mine, int64_t n, int root, int64_t *total);

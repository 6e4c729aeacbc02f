/* ckpt.c — see ckpt.h. The only place that writes or reads a training checkpoint collectively (its
 * file opened through distributed/h5par.c's h5par_fapl).
 * Must not: let one rank return early from a collective step (errors are fatal), or publish latest
 * before every rank's part is on disk. */
#include "ckpt.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../data/h5util.h"
#include "comm.h"
#include "h5par.h"
#include "mpi_check.h"
#include "rundir.h"
#include "watchdog.h"

/* The part of the moments this rank writes (and verifies): its ZeRO-1 slice, or, when it holds the
 * whole buffer, its comm_slice of it. */
static void moment_part(int64_t total, int64_t mstart, int64_t mend, int64_t *s, int64_t *e) {
    if (mstart == 0 && mend == total) comm_slice(total, comm_size(), comm_rank(), s, e);
    else {
        *s = mstart;
        *e = mend;
    }
}

void ckpt_save(const char *ckdir, const ParamTable *t, const float *params, const float *m, const float *v,
               int64_t mstart, int64_t mend, const char *config_text, const TrainState *st, int keep_last) {
    const int rank = comm_rank(), world = comm_size();
    char path[4200];
    rundir_step_path(path, sizeof path, ckdir, st->step);
    watchdog_phase(1, "checkpoint write step %lld", (long long)st->step);
    const double t0 = koe_now();
    CheckpointIO io;
    io.rank = rank;
    io.fapl = h5par_fapl();
    io.dxpl_tensor = h5par_dxpl(0);
    io.dxpl_optim = h5par_dxpl(1);
    KoeError err;
    CheckpointWriter *w = checkpoint_writer_open_io(path, t, 1, &io, &err);
    if (!w) koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    /* /model: the tensors that start in this rank's slice of the flat buffer */
    int64_t ps, pe;
    comm_slice(t->total, world, rank, &ps, &pe);
    for (int i = 0; i < t->n; i++)
        if (t->e[i].offset >= ps && t->e[i].offset < pe &&
            checkpoint_writer_tensor(w, i, params + t->e[i].offset, &err) < 0)
            koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    int64_t s, e;
    moment_part(t->total, mstart, mend, &s, &e);
    if (checkpoint_writer_optim(w, 0, s, e - s, m + (s - mstart), &err) < 0 ||
        checkpoint_writer_optim(w, 1, s, e - s, v + (s - mstart), &err) < 0)
        koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    const char *slow = getenv("KOE_TEST_SLOW_CKPT"); /* test hook, see ckpt.h */
    if (slow && atoi(slow) > 0) sleep((unsigned)atoi(slow));
    uint64_t *sums = checkpoint_writer_sums(w);
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, sums, 3, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
    if (checkpoint_writer_finish(w, config_text, st, &err) < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    H5Pclose(io.dxpl_optim);
    H5Pclose(io.dxpl_tensor);
    H5Pclose(io.fapl);
    comm_barrier(); /* rank 0 has renamed the file: every part of it is on disk */
    if (rank == 0) {
        if (rundir_publish_latest(ckdir, st->step, keep_last, &err) < 0)
            koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
        struct stat sb;
        koe_log("checkpoint %s (%lld bytes, written in %.3f s by %d rank%s)", path,
                stat(path, &sb) == 0 ? (long long)sb.st_size : -1LL, koe_now() - t0, world, world > 1 ? "s" : "");
    }
    comm_barrier();
}

/* Where each rank's share of a /model read starts: rank r reads tensors [first[r], first[r + 1]) of t,
 * those whose first element lies in its comm_slice of the flat buffer (the ones it writes in
 * ckpt_save), which fill [start[r], start[r + 1]) of it. */
static void model_shares(const ParamTable *t, int world, int *first, int64_t *start) {
    int i = 0;
    for (int r = 0; r < world; r++) {
        int64_t s, e;
        comm_slice(t->total, world, r, &s, &e);
        while (i < t->n && t->e[i].offset < s) i++;
        first[r] = i;
        start[r] = i < t->n ? t->e[i].offset : t->total;
    }
    first[world] = t->n;
    start[world] = t->total;
    for (int k = 1; k < t->n; k++) KOE_ASSERT(t->e[k - 1].offset + t->e[k - 1].numel <= t->e[k].offset);
}

int ckpt_read_model(const char *path, const ParamTable *t, float *params, int encoder, KoeError *err) {
    const int rank = comm_rank(), world = comm_size();
    int *first = koe_malloc((size_t)(world + 1) * sizeof *first);
    int64_t *start = koe_malloc((size_t)(world + 1) * sizeof *start);
    model_shares(t, world, first, start);
    uint64_t sum = 0, stored = 0;
    const int rc = checkpoint_read_model_part(path, t, first[rank], first[rank + 1], encoder, rank == 0, params, &sum,
                                              &stored, err);
    int64_t failed = rc < 0 ? -(int64_t)rank : -(int64_t)world; /* the first rank that failed gives its message */
    comm_allreduce_max_i64(&failed, 1);
    int ok = failed == -(int64_t)world;
    if (!ok) comm_bcast(err->msg, sizeof err->msg, (int)-failed);
    else {
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
        comm_bcast(&stored, sizeof stored, 0);
        ok = checkpoint_verify_sum(path, "/model", sum, stored, err) == 0;
    }
    if (ok) comm_allgather_ranges(params, start);
    free(first);
    free(start);
    return ok ? 0 : -1;
}

int ckpt_file_checksum(const char *path, char out[17], KoeError *err) {
    int rc = comm_rank() == 0 ? koe_file_checksum(path, out, err) : 0;
    comm_bcast(&rc, sizeof rc, 0);
    if (rc < 0) comm_bcast(err->msg, sizeof err->msg, 0);
    else
        comm_bcast(out, 17, 0);
    return rc;
}

/* CPU seconds of this process (all its threads): beside the wall times, what a load costs on a busy node. */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int ckpt_load(const char *ckdir, const ParamTable *t, float *params, float *m, float *v, int64_t mstart,
              int64_t mend, TrainState *st, char **config_text, char *path_out, size_t n) {
    const int rank = comm_rank();
    watchdog_phase(1, "checkpoint load");
    comm_barrier(); /* the time logged is the load's, not how late the last rank arrived */
    const double t0 = koe_now(), c0 = cpu_seconds();
    int64_t *steps = NULL, hdr[2] = {0, 0}; /* candidates, and whether latest exists */
    if (rank == 0) {
        char latest[4200];
        snprintf(latest, sizeof latest, "%s/latest", ckdir);
        hdr[0] = rundir_candidates(ckdir, &steps);
        hdr[1] = access(latest, F_OK) == 0;
    }
    comm_bcast(hdr, sizeof hdr, 0);
    const int64_t ns = hdr[0];
    if (rank != 0) steps = koe_malloc((size_t)(ns + 1) * sizeof *steps);
    if (ns) comm_bcast(steps, (size_t)ns * sizeof *steps, 0);
    const int full = mstart == 0 && mend == t->total;
    int64_t s, e; /* the part of the moments this rank reads: a rank holding them whole reads its comm_slice */
    moment_part(t->total, mstart, mend, &s, &e);
    for (int64_t i = 0; i < ns; i++) {
        char path[4400];
        rundir_step_path(path, sizeof path, ckdir, steps[i]);
        KoeError err;
        char *text = NULL;
        uint64_t part[2] = {0, 0}, stored[2] = {0, 0};
        double at[4]; /* rank 0's phases: start, moments read and hashed, checksums agreed, /model in */
        at[0] = koe_now();
        /* /model is read once every rank's part checks out, by ckpt_read_model */
        int ok = checkpoint_read_train_slice(path, t, m + (s - mstart), v + (s - mstart), s, e, st, &text, part,
                                             stored, &err) == 0;
        if (!ok) koe_warn("checkpoint %s is unusable on this rank: %s", path, err.msg);
        at[1] = koe_now();
        /* the slices add up to the stored checksums over ranks (each rank reads and hashes only its own,
         * also when every rank holds the whole moments: those are gathered once they check out) */
        uint64_t contrib[2] = {part[0], part[1]};
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, contrib, 2, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
        int64_t bad = !ok;
        comm_allreduce_max_i64(&bad, 1);
        if (!bad && (contrib[0] != stored[0] || contrib[1] != stored[1])) {
            if (rank == 0)
                koe_warn("checkpoint %s: %s fails its checksum over the ranks: the file is damaged", path,
                         contrib[0] != stored[0] ? "/optim/m" : "/optim/v");
            bad = 1;
        }
        at[2] = koe_now();
        if (!bad && ckpt_read_model(path, t, params, 0, &err) < 0) {
            if (rank == 0) koe_warn("checkpoint %s is unusable: %s", path, err.msg);
            bad = 1;
        }
        at[3] = koe_now();
        if (!bad) {
            if (full) {
                comm_allgather_slices(m, t->total);
                comm_allgather_slices(v, t->total);
            }
            if (i > 0 && rank == 0) koe_warn("resuming from %s instead of the latest", path);
            if (rank == 0)
                koe_log("checkpoint %s read and verified in %.3f s by %d rank%s (s: moments read %.3f, their "
                        "checksums agreed %.3f, /model %.3f, moments gathered %.3f; rank 0's CPU %.3f)",
                        path, koe_now() - t0, comm_size(), comm_size() > 1 ? "s" : "", at[1] - at[0], at[2] - at[1],
                        at[3] - at[2], koe_now() - at[3], cpu_seconds() - c0);
            snprintf(path_out, n, "%s", path);
            *config_text = text;
            free(steps);
            return 1;
        }
        free(text);
        if (rank == 0)
            koe_warn("checkpoint %s is unusable (see above)%s", path, i + 1 < ns ? "; trying the one before" : "");
    }
    free(steps);
    if (ns == 0 && !hdr[1]) return 0;
    koe_fatal(KOE_EXIT_USAGE, "%s: checkpoints exist but none is usable (see the warnings above); move them away to "
                              "start afresh, or restore a good one",
              ckdir);
}

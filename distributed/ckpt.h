/* ckpt.h — training checkpoints written and read collectively (distributed/README.md): the collective
 * mode of data/checkpoint.h's CheckpointWriter. One parallel-HDF5 file per checkpoint through MPI-IO
 * (collective metadata operations; HDF5_USE_FILE_LOCKING=FALSE in the environment is honoured by
 * HDF5 itself), each rank writing its slices: the /model tensors whose first element lies in its
 * comm_slice of the flat buffer, and its part of /optim/m and /optim/v (its ZeRO-1 slice, or, when
 * every rank holds the whole moments, its comm_slice). The additive checksums are summed over ranks
 * and stored by the collective finish; rank 0 fsyncs and renames the .tmp, then, after a barrier,
 * points latest at it and prunes to keep_last.
 * Loading: rank 0 reads the parameters (/model, its checksum verified) and broadcasts them; every
 * rank reads the part of the moments it holds for the world size now in use (slices are ranges of the
 * flat datasets, so a checkpoint written by 4 ranks resumes on 2 or 3); the checksums are verified
 * collectively and all ranks fall back to the previous checkpoint together when any rank finds a
 * problem.
 * Every function here is collective. Failures while writing abort the communicator (one rank
 * returning from a collective would hang the others). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../core/params.h"
#include "../data/checkpoint.h"

/* Write ckdir/step-NNNNNNNN.h5 for st->step and publish it. params: the whole flat buffer (the same on
 * every rank); m, v: the moments of flat positions [mstart, mend) (index i - mstart) this rank holds.
 * Test hook: KOE_TEST_SLOW_CKPT=S sleeps S seconds after the data is written, before the finish, so a
 * test can kill the job in the middle of a checkpoint write. */
void ckpt_save(const char *ckdir, const ParamTable *t, const float *params, const float *m, const float *v,
               int64_t mstart, int64_t mend, const char *config_text, const TrainState *st, int keep_last);

/* Collective: the tensors of t from path's /model into params on every rank. Each rank reads and
 * checks its share (the tensors that start in its comm_slice of the flat buffer, as ckpt_save writes
 * them), rank 0 also the group's names; the shares' checksums are summed and compared with the stored
 * /model checksum, then exchanged in one allgather: every byte is read once per job and verified, and
 * the reading and hashing run on every rank at once. Used by a resume (ckpt_load) and by every command
 * that opens a model on all ranks (recipes/ckpt_model.c). encoder: t may be a subset of the file's
 * tensors (checkpoint_read_encoder), else it is all of them (checkpoint_read_params). Every rank
 * returns the same result, err the message of the first rank that failed. */
int ckpt_read_model(const char *path, const ParamTable *t, float *params, int encoder, KoeError *err);

/* Collective: koe_file_checksum of path computed by rank 0 (one read of the whole file per job, not one
 * per rank), its result and err's message on every rank. */
int ckpt_file_checksum(const char *path, char out[17], KoeError *err);

/* Resume from ckdir: latest, or the newest older step file that every rank can read and that passes
 * every checksum (each skipped one gets a message saying why). Loads params (whole), the moments of
 * [mstart, mend) into m, v, the state and the config text (malloc'ed). Returns 1 with path_out set, 0
 * when ckdir holds no checkpoint; when checkpoints exist but none is usable the run stops (fatal). */
int ckpt_load(const char *ckdir, const ParamTable *t, float *params, float *m, float *v, int64_t mstart,
              int64_t mend, TrainState *st, char **config_text, char *path_out, size_t n);

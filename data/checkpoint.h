/* checkpoint.h — checkpoint files (data/README.md, Checkpoint):
 *   /model/<hf name>  float32, shaped as the parameter table says     attr checksum
 *   /optim/m, /optim/v  float32 [total] AdamW moments, flat (training checkpoints)  attr checksum each
 *   /state            group; attrs step, epoch, consumed, seed, adam_t, skipped, skips_in_row,
 *                     sched_step (int64), gumbel_temp (float64), checksum;
 *                     /state/log_sums float64 [CHECKPOINT_LOG_SUMS]
 *   /config           strings [1]: the resolved recipe text the model was built from; attr checksum
 *   attrs: format="koe-checkpoint", format_version=1
 * Checksums are 16 hex digits. The tensor checksums are additive: sum over elements i of
 * hash(i, bits of x[i]) mod 2^64, i the flat buffer position for /optim (so slices written by
 * different ranks, ZeRO-1, add up to the whole buffer's checksum) and, for /model, the position in
 * the tensor offset by a hash of its name (so the group verifies whatever table reads it); a flipped
 * byte changes it.
 *
 * Writing goes through CheckpointWriter, which is handed whole /model tensors and [offset, count)
 * slices of the flat /optim datasets, and accumulates the checksums of what it wrote. This file does
 * the serial I/O mode (one process writes everything); the collective mode (distributed/ckpt.h)
 * opens the same layout through MPI-IO, has each rank write its slices, and sums the checksums over
 * ranks before checkpoint_writer_finish — the calls stay the same.
 * The file is written as PATH.tmp, fsynced and renamed (the run directory's latest and keep_last are
 * distributed/rundir.h's). Readers check every tensor by name, shape and type and say which one is
 * wrong; training loads (distributed/ckpt.c) verify the checksums and fall back to an older
 * checkpoint when the newest is corrupt or incomplete. No MPI here. */
#pragma once
#include <hdf5.h>
#include <stdint.h>

#include "../core/common.h"
#include "../core/params.h"

#define CHECKPOINT_FORMAT "koe-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 1
#define CHECKPOINT_LOG_SUMS 24 /* older files have 12: read as the first 12, the rest 0 */

/* Where a training run stands: what a resumed run needs besides the weights and the moments. */
typedef struct {
    int64_t step;         /* updates taken (= scheduler step) */
    int64_t epoch;        /* epoch of the last batch consumed */
    int64_t consumed;     /* global batches consumed (the loader's resume point) */
    uint64_t seed;        /* run.seed: every random stream is keyed by it and the step */
    int64_t adam_t;       /* AdamW's update count (steps minus skipped updates) */
    int64_t skipped;      /* updates skipped for a non-finite loss or gradient, in total */
    int64_t skips_in_row; /* ... in a row up to this step */
    int64_t sched_step;   /* the learning-rate schedule's step */
    double gumbel_temp;   /* wav2vec 2.0's temperature at this step (0 for the other objectives) */
    /* The trainer's sums over the logging interval in progress (its own layout), so that a run resumed
     * mid-interval logs the same averages as an uninterrupted one. */
    double log_sums[CHECKPOINT_LOG_SUMS];
} TrainState;

/* The additive checksum of v (n floats) at flat positions first .. first + n - 1. */
uint64_t checkpoint_sum(const float *v, int64_t first, int64_t n);

/* ---- writing ---------------------------------------------------------------------------------- */
typedef struct CheckpointWriter CheckpointWriter;

/* Create path.tmp with every dataset of the layout (optim = 1: /optim/m and /optim/v too). */
CheckpointWriter *checkpoint_writer_open(const char *path, const ParamTable *t, int optim, KoeError *err);
/* How the collective mode (distributed/ckpt.c) reaches the file: fapl with the MPI-IO driver (and
 * collective metadata; distributed/h5par.h's h5par_fapl), the transfer lists for the whole /model tensors a rank writes (independent)
 * and for the /optim slices (collective: every rank calls checkpoint_writer_optim once per moment,
 * count 0 allowed), and the rank. Every rank creates the datasets and writes the attributes with the
 * same values (the summed checksums); only rank 0, after the parallel close, adds /config (variable
 * length, which parallel HDF5 cannot write) and publishes path. Errors inside it are the caller's to
 * make fatal (one rank returning from a collective would hang the others). */
typedef struct {
    hid_t fapl, dxpl_tensor, dxpl_optim;
    int rank;
} CheckpointIO;
CheckpointWriter *checkpoint_writer_open_io(const char *path, const ParamTable *t, int optim, const CheckpointIO *io,
                                            KoeError *err);
/* Tensor i of the table, whole (v: its numel floats). */
int checkpoint_writer_tensor(CheckpointWriter *w, int i, const float *v, KoeError *err);
/* Elements [offset, offset + count) of /optim/m (which = 0) or /optim/v (which = 1) from v. */
int checkpoint_writer_optim(CheckpointWriter *w, int which, int64_t offset, int64_t count, const float *v,
                            KoeError *err);
/* Checksums of what this writer wrote: [0] model, [1] optim/m, [2] optim/v. The collective mode sums
 * them over ranks and stores the totals back before finishing. */
uint64_t *checkpoint_writer_sums(CheckpointWriter *w);
/* Write /config, /state (NULL: no /state, a model-only checkpoint), the checksums and the format
 * attributes; close, fsync, rename to path. Frees w (on failure too, removing path.tmp). */
int checkpoint_writer_finish(CheckpointWriter *w, const char *config_text, const TrainState *st, KoeError *err);
void checkpoint_writer_abort(CheckpointWriter *w); /* removes path.tmp; frees w */

/* A model-only checkpoint (koe init): every tensor, /config, no /optim, no /state. */
int checkpoint_write(const char *path, const ParamTable *t, const float *params, const char *config_text,
                     KoeError *err);

/* ---- reading ---------------------------------------------------------------------------------- */
/* The /config text, malloc'ed. */
int checkpoint_read_config(const char *path, char **config_text, KoeError *err);
/* Every tensor of the table from /model into params (laid out by t). A missing tensor, another
 * shape, or a tensor in the file that the table does not have is an error naming it. */
int checkpoint_read_params(const char *path, const ParamTable *t, float *params, KoeError *err);
/* The same for a table that is a subset of the file's /model: tensors the table lacks (a training
 * checkpoint's objective head: final_proj, label_embeddings, quantizer, ...) are skipped, though
 * still read for the /model checksum. For koe embed, export and kmeans, which need the encoder. */
int checkpoint_read_encoder(const char *path, const ParamTable *t, float *params, KoeError *err);
/* A share of a /model read, for readers that split the tensors between them (distributed/ckpt.c's
 * ckpt_read_model): tensors [lo, hi) of t into params, each checked by name, shape and type; *sum their
 * part of the /model checksum, *stored the group's stored checksum (required). group != 0 (one reader of
 * the group): also the group's own checks — a tensor of the file that t lacks is an error unless subset;
 * with subset those tensors are read for their part of the checksum, added to *sum. The sum of the
 * parts over the readers must equal *stored (checkpoint_verify_sum). */
int checkpoint_read_model_part(const char *path, const ParamTable *t, int lo, int hi, int subset, int group,
                               float *params, uint64_t *sum, uint64_t *stored, KoeError *err);
/* 0 when computed == stored, else -1 with err saying that path's `what` fails its checksum. */
int checkpoint_verify_sum(const char *path, const char *what, uint64_t computed, uint64_t stored, KoeError *err);
/* run.init_from: the tensors of the table that the file has in the same shape, into params; got[i]
 * (t->n entries) says 1 read, 0 not in the file, -1 in the file in another shape (not read). The
 * /model checksum is verified over every tensor of the file. */
int checkpoint_read_matching(const char *path, const ParamTable *t, float *params, signed char *got, KoeError *err);
/* The rest of a training checkpoint's read (distributed/ckpt.c's ckpt_load; /model comes from
 * checkpoint_read_params on rank 0, broadcast): elements [start, end) of the moments (m, v: end - start
 * floats each; t gives their total), the state and the config text (malloc'ed), every checksum verified
 * but the moments': sums[k] is the additive checksum of the slice read, stored[k] the file's checksum
 * of the whole dataset (k = 0: m, 1: v); the caller sums the slices over ranks and compares. */
int checkpoint_read_train_slice(const char *path, const ParamTable *t, float *m, float *v, int64_t start,
                                int64_t end, TrainState *st, char **config_text, uint64_t sums[2], uint64_t stored[2],
                                KoeError *err);

/* rundir.h — the policy of a run's checkpoint directory RUN/checkpoints, beside distributed/ckpt.c
 * which follows it:
 *   step-NNNNNNNN.h5  the checkpoints (data/checkpoint.h); a *.tmp is one being written, never a
 *                     checkpoint
 *   latest            a one-line text file naming the newest step file, replaced (written .tmp,
 *                     fsynced, renamed) only after that file is published
 *   keep_last         after each publish only the keep_last newest step files are kept
 *   candidates        on resume: the step file latest names, then every other one newest first
 *   follow            a checkpoint path given by a user (--ckpt, run.init_from, koe info) that is a
 *                     latest file stands for the step file it names
 * Plain file operations, no MPI: ckpt.c calls them on rank 0 and broadcasts what the ranks need. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../core/common.h"

/* dir/step-NNNNNNNN.h5 for step (out: n bytes). */
void rundir_step_path(char *out, size_t n, const char *dir, int64_t step);
/* After a step file is published: point dir/latest at it (written .tmp, fsynced, renamed) and delete
 * all but the keep_last newest step files (never the one just published). */
int rundir_publish_latest(const char *dir, int64_t step, int keep_last, KoeError *err);
/* The step files to try on resume, in order (malloc'ed, the count returned): the one dir/latest names,
 * then every other step file newest first. A latest that names no step file gets a warning. */
int64_t rundir_candidates(const char *dir, int64_t **steps);
/* A checkpoint path as a user gives it: when path is a latest file (known by its content, the one line
 * "step-NNNNNNNN.h5"), the step file it names, in the same directory, into out (n bytes), returning 1;
 * 0 when path is anything else (its reader opens or refuses it); -1 when that step file is missing
 * (err says so, without path: the caller names it). */
int rundir_follow_latest(const char *path, char *out, size_t n, KoeError *err);

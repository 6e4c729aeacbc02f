/* rundir.h — the policy of a run's checkpoint directory RUN/checkpoints, beside distributed/ckpt.c
 * which follows it:
 *   step-NNNNNNNN.h5  the checkpoints (data/checkpoint.h); a *.tmp is one being written, never a
 *                     checkpoint
 *   latest            a one-line text file naming the newest step file, replaced (written .tmp,
 *                     fsynced, renamed) only after that file is published
 *   keep_last         after each publish only the keep_last newest step files are kept
 *   candidates        on resume: the step file latest names, then every other one newest first
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

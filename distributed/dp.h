/* dp.h — data-parallel gradient reduction (distributed/README.md): the flat gradient buffer cut into
 * buckets of whole tensors in reverse table order (the order backward finishes them), each reduced
 * over MPI_COMM_WORLD with a non-blocking collective as soon as the model reports it final
 * (Model.on_grads_ready), so communication overlaps the rest of backward.
 *   plain:  MPI_Iallreduce (sum, in place): every rank ends with the whole summed gradient.
 *   ZeRO-1: MPI_Ireduce_scatter (sum): rank r ends with the summed gradient of its slice
 *           comm_slice(total, world, r) only; after its AdamW step on that slice,
 *           dp_allgather_params gives every rank all the parameters.
 * Must not: scale, clip or inspect the gradients (the trainer does, on the reduced sums), or touch
 * anything but the buffers it was given. */
#pragma once
#include <stdint.h>

#include "../core/params.h"

typedef struct DataParallel DataParallel;

/* grads: the model's flat gradient buffer (t->total floats, borrowed). bucket_bytes: target size of a
 * bucket (a tensor larger than that is a bucket alone). zero: ZeRO-1 (reduce-scatter). */
DataParallel *dp_create(const ParamTable *t, float *grads, int64_t bucket_bytes, int zero);
void dp_free(DataParallel *d);
/* This rank's slice [*start, *end): the whole buffer without ZeRO-1. */
void dp_slice(const DataParallel *d, int64_t *start, int64_t *end);
/* Arm the reduction for the backward that ends the update (the last micro-batch): from now on,
 * dp_grads_ready launches the buckets that became final. */
void dp_arm(DataParallel *d);
/* Model.on_grads_ready (ctx = the DataParallel): grads[first, total) are final. Launches the armed
 * buckets that lie above first, in order, and lets the launched ones progress. */
void dp_grads_ready(void *ctx, int64_t first);
/* Launches what is left (a rank without utterances in the last micro-batch ran no backward) and waits
 * for every bucket; returns the seconds spent waiting. The reduced gradient is then in grads (ZeRO-1:
 * in this rank's slice of grads; the rest of grads is undefined). */
double dp_finish(DataParallel *d);
/* ZeRO-1: every rank's slice of params to every rank (MPI_Allgatherv, in place). */
void dp_allgather_params(DataParallel *d, float *params);

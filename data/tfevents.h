/* tfevents.h — TensorBoard event files (the format `tensorboard --logdir` reads), written without
 * TensorFlow or protobuf.
 *
 * A file is a sequence of records: u64 length (little-endian), u32 masked CRC-32C of those 8 bytes,
 * an `Event` protobuf, u32 masked CRC-32C of the Event (mask: ((crc >> 15) | (crc << 17)) + 0xa282ead8;
 * CRC-32C is Castagnoli's polynomial, not zlib's). The Event fields used, hand-encoded: wall_time
 * (1, double), step (2, int64), file_version (3, "brain.Event:2" in the first event), summary (5:
 * Summary.value (1) = {tag (1), simple_value (2, float)}, or a text summary: tensor (8) of DT_STRING
 * with metadata (9) naming the "text" plugin), session_log (7: status START = 1; TensorBoard takes the
 * first START of a run as its start and, at each later one, drops the points at and after its step
 * that older files logged: a resumed run draws one clean curve).
 * Each record goes to the file in one write(), so a killed writer leaves whole records; a write that
 * fails (a full disk) cuts the file back to its last whole record and says so in err.
 *
 * Must not: depend on anything but libc (core/common.h for errors), or buffer a record past the call
 * that made it. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../core/common.h"

typedef struct {
    const char *tag;
    float value;
} TfScalar;

typedef struct TfEvents TfEvents;

/* A new file dir/events.out.tfevents.<time>.<host>.<pid>.<n> (dir must exist; <time> is wall_time's
 * seconds, or one past the newest file's in dir, so that names sort in creation order; n makes the
 * name new) whose first record is the file_version event. Returns NULL with err set. */
TfEvents *tfevents_open(const char *dir, double wall_time, KoeError *err);
/* One Event at step with a Summary of n simple_value scalars. Returns 0 or -1 with err set. */
int tfevents_scalars(TfEvents *w, double wall_time, int64_t step, const TfScalar *v, int n, KoeError *err);
/* One Event with a text summary (TensorBoard's Text tab renders it as markdown). */
int tfevents_text(TfEvents *w, double wall_time, int64_t step, const char *tag, const char *markdown, KoeError *err);
/* SessionLog START at step: after the run's first, TensorBoard discards what older files logged at
 * steps >= step. */
int tfevents_session_start(TfEvents *w, double wall_time, int64_t step, KoeError *err);
const char *tfevents_path(const TfEvents *w);
void tfevents_close(TfEvents *w);

/* CRC-32C (Castagnoli) of n bytes, and the masked form the record format stores. */
uint32_t tfevents_crc32c(const void *p, size_t n);
uint32_t tfevents_masked_crc(const void *p, size_t n);

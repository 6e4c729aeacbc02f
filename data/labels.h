/* labels.h — a label set (data/README.md, Label set): HuBERT's frame targets, one file per corpus shard,
 * never inside the shard:
 *   DIR/labels/NAME/shard-NNNNN.h5   (same base name as the corpus shard it labels)
 *     /labels  uint16 [frames]   class ids, all < n_classes
 *     /offset  int64  [n+1]      utterance i has frames offset[i] .. offset[i+1]-1
 *     attrs: format="koe-labels", format_version=1, n_classes, frame_rate (Hz, float64),
 *            source ("mfcc" | "fbank" | "layer:N"), kmeans_checksum, ckpt_checksum ("" but for layer:N),
 *            shard_fingerprint (labels_shard_fingerprint of the corpus shard, 16 hex digits),
 *            corpus_shard (its base name), n_utts
 * The writer writes NAME.tmp and publishes it complete (koe_publish_file). The reader checks
 * everything the trainer relies on, so a stale or foreign label set is refused, never trained on.
 * No MPI here (callers split shards across ranks). Every function that touches HDF5 takes
 * h5_lock() itself; never call one while holding it. */
#pragma once
#include <stdint.h>

#include "../core/common.h"
#include "corpus.h"

#define LABELS_FORMAT "koe-labels"
#define LABELS_FORMAT_VERSION 1
#define LABELS_MAX_CLASSES 65535 /* ids are uint16 */
/* Training refuses an utterance whose label duration and audio duration differ by more. */
#define LABELS_MAX_LENGTH_DIFF_S 0.1

/* What a label set is: the same in every file of the set. */
typedef struct {
    int32_t n_classes;
    double frame_rate;         /* 100 (MFCC, fbank) or 50 (layer labels) */
    char source[64];           /* "mfcc" | "fbank" | "layer:N" */
    char kmeans_checksum[17];  /* koe_file_checksum of KM.h5 */
    char ckpt_checksum[17];    /* of the checkpoint for layer:N, "" for mfcc */
} LabelSetInfo;

/* The corpus shard's identity: FNV-1a 64 over, for each utterance in shard order, its id bytes,
 * a NUL, and its length in samples (8 bytes little-endian). Labels made for another shard (other
 * utterances, other order, re-prepared audio of another length) get another fingerprint. */
uint64_t labels_shard_fingerprint(const CorpusShard *s);

/* DIR/labels/NAME (malloc'ed) and the label file of one corpus shard (malloc'ed). */
char *labels_dir(const char *corpus_dir, const char *name);
char *labels_shard_path(const char *corpus_dir, const char *name, const CorpusShard *s);
/* mkdir -p DIR/labels/NAME. */
int labels_make_dir(const char *corpus_dir, const char *name, KoeError *err);

/* Write the label file of corpus shard s: labels (offset[s->n]) and offset (s->n + 1, offset[0] = 0,
 * non-decreasing). Checks every label < info->n_classes. Writes .tmp, publishes when complete. */
int labels_write_shard(const char *corpus_dir, const char *name, const CorpusShard *s, const LabelSetInfo *info,
                       const uint16_t *labels, const int64_t *offset, KoeError *err);

typedef struct {
    char *dir;            /* DIR/labels/NAME */
    LabelSetInfo info;
    int n_shards;
    int64_t *hid_file;    /* (n_shards) hid_t of each open label file */
    int64_t *hid_labels;  /* (n_shards) its /labels dataset */
    int64_t n_utts;
    int64_t *utt_start;   /* (n_utts) first frame in its shard's /labels */
    int64_t *utt_frames;  /* (n_utts) frame count */
    int32_t *utt_shard;   /* (n_utts) = corpus utt_shard */
} LabelSet;

/* Open label set NAME of corpus c: every shard's label file must exist and carry the right format,
 * the fingerprint of the corpus shard it sits beside, the same n_classes (> 0, <= 65535),
 * frame_rate and source in every file, and an /offset of n+1 non-decreasing entries from 0 to the
 * length of /labels; every utterance's label duration must be within LABELS_MAX_LENGTH_DIFF_S of
 * its audio. Errors name the file and utterance and say to re-run `koe label`. c must stay open. */
int labelset_open(LabelSet *ls, const Corpus *c, const char *name, KoeError *err);
/* Frames of utterance utt (global corpus numbering) as int32 class ids into out. out == NULL:
 * returns the frame count. More frames than cap is an error. Returns -1 on error (labels out of
 * range count as an error: the file is damaged). */
int64_t labelset_read(LabelSet *ls, int64_t utt, int32_t *out, int64_t cap, KoeError *err);
void labelset_close(LabelSet *ls);

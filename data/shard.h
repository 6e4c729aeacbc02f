/* shard.h — one corpus shard, DESIGN.md section 5:
 *   /audio       int16 [samples]  chunked, shuffle + zstd (32015) + fletcher32
 *   /utt/offset  int64 [n]   /utt/length int64 [n]
 *   /utt/id, /utt/lang, /utt/speaker, /utt/source   strings [n]
 *   /align/phones strings [P]  /align/frames uint16 [frames]  /align/offset int64 [n+1]  (optional;
 *                10 ms frames, index into /align/phones; 0xFFFF = no phone)
 *   attrs: format="koe-corpus-shard", format_version=1, sample_rate=16000
 * The writer writes NAME.tmp and renames it when complete, so a killed writer never leaves a
 * shard that looks valid. No MPI here. */
#pragma once
#include <stdint.h>

#include "../core/common.h"

#define SHARD_FORMAT "koe-corpus-shard"
#define SHARD_FORMAT_VERSION 1
#define SHARD_SAMPLE_RATE 16000
#define SHARD_NO_PHONE 0xFFFF

typedef struct ShardWriter ShardWriter;

/* phones: the phone inventory for /align (NULL, 0 when the corpus has no alignments). */
ShardWriter *shard_writer_create(const char *path, char *const *phones, int n_phones, KoeError *err);
/* Append one utterance. align: n_align 10 ms frames of phone indices, or NULL. */
int shard_writer_add(ShardWriter *w, const char *id, const char *lang, const char *speaker,
                     const char *source, const int16_t *pcm, int64_t n, const uint16_t *align,
                     int64_t n_align, KoeError *err);
int64_t shard_writer_bytes(const ShardWriter *w); /* raw audio bytes appended so far */
/* Write the tables and attributes, flush, fsync, rename NAME.tmp to NAME. Frees w. */
int shard_writer_finish(ShardWriter *w, KoeError *err);
void shard_writer_abort(ShardWriter *w); /* removes NAME.tmp; frees w */

typedef struct {
    char *path;
    int64_t hid_file, hid_audio; /* hid_t, kept as int64 so this header needs no hdf5.h */
    int64_t n;                   /* utterances */
    int64_t *offset, *length;    /* (n) in samples */
    char **id, **lang, **speaker, **source; /* (n) */
    int64_t n_phones;            /* 0 when the shard has no alignments */
    char **phones;               /* (n_phones) */
    int64_t *align_offset;       /* (n + 1) into /align/frames, or NULL */
} CorpusShard;

/* Open and check a shard (format, version, sample rate, table shapes, offsets inside /audio). */
int corpus_shard_open(CorpusShard *s, const char *path, KoeError *err);
/* count samples of utterance i starting at sample start. Takes h5_lock() itself. */
int corpus_shard_read(CorpusShard *s, int64_t i, int64_t start, int64_t count, int16_t *out, KoeError *err);
/* The phone alignment of utterance i: frames written to out (at most cap); returns the count or -1. */
int64_t corpus_shard_read_align(CorpusShard *s, int64_t i, uint16_t *out, int64_t cap, KoeError *err);
void corpus_shard_close(CorpusShard *s);

/* shard.h — one corpus shard (data/README.md, Corpus):
 *   /audio       int16 [samples]  chunked, shuffle + zstd (32015) + fletcher32
 *   /utt/offset  int64 [n]   /utt/length int64 [n]   /utt/checksum uint64 [n] (shard_audio_checksum)
 *   /utt/id, /utt/lang, /utt/speaker, /utt/source   fixed-length strings [n]
 *   /align/phones strings [P]  /align/frames uint16 [frames]  /align/offset int64 [n+1]  (optional;
 *                10 ms frames, index into /align/phones; 0xFFFF = no phone)
 *   attrs: format="koe-corpus-shard", format_version=2, sample_rate=16000, n_utts, samples
 * Every table is chunked with fletcher32, and the file is in HDF5's checksummed 1.10 format
 * (h5util.h): a flipped bit anywhere is an error naming the shard. Version 1 shards (strings in the
 * HDF5 global heap, no audio checksums) are refused with a message to re-run koe prepare: a corpus
 * is cheap to remake from its sources and a version 1 shard's damage can crash libhdf5 or go unseen.
 * The writer writes NAME.tmp and renames it when complete, so a killed writer never leaves a
 * shard that looks valid. No MPI here.
 *
 * Threads: every function here takes h5_lock() itself (the loader reads from a prefetch thread);
 * never call one while holding it. */
#pragma once
#include <stdint.h>

#include "../core/common.h"

#define SHARD_FORMAT "koe-corpus-shard"
#define SHARD_FORMAT_VERSION 2
#define SHARD_NO_PHONE 0xFFFF
/* 64k samples (128 KB raw) per HDF5 chunk: a 250k-sample crop touches at most 5 chunks, and a
 * chunk is big enough for zstd to find the redundancy in speech. */
#define SHARD_CHUNK_SAMPLES 65536
#define SHARD_ZSTD_LEVEL 3 /* tests/bench/zstd.sh measures the other levels */

typedef struct ShardWriter ShardWriter;

/* phones: the phone inventory for /align (NULL, 0 when the corpus has no alignments).
 * Memory stays bounded by one chunk of audio plus the utterance tables and alignments. */
ShardWriter *shard_writer_create(const char *path, char *const *phones, int n_phones, KoeError *err);
/* The same with the zstd level and chunk size chosen (benchmarks). */
ShardWriter *shard_writer_create_opts(const char *path, char *const *phones, int n_phones, int zstd_level,
                                      int64_t chunk_samples, KoeError *err);
/* Append one utterance of n > 0 samples at 16 kHz. id must be non-empty; lang, speaker and source
 * may be NULL or "" (lang is then stored as "und", ISO 639-2 "undetermined"). align: n_align 10 ms
 * frames of phone indices (< n_phones, or SHARD_NO_PHONE), or NULL. After an HDF5 write error the
 * writer cannot continue: call shard_writer_abort. */
int shard_writer_add(ShardWriter *w, const char *id, const char *lang, const char *speaker,
                     const char *source, const int16_t *pcm, int64_t n, const uint16_t *align,
                     int64_t n_align, KoeError *err);
int64_t shard_writer_bytes(const ShardWriter *w); /* raw audio bytes appended so far */
int64_t shard_writer_utts(const ShardWriter *w);  /* utterances appended so far */
/* Write the tables and attributes, flush, fsync, rename NAME.tmp to NAME, fsync the directory.
 * Frees w (on failure too, removing NAME.tmp). */
int shard_writer_finish(ShardWriter *w, KoeError *err);
void shard_writer_abort(ShardWriter *w); /* removes NAME.tmp; frees w */

typedef struct {
    char *path;
    int64_t hid_file, hid_audio; /* hid_t, kept as int64 so this header needs no hdf5.h */
    int64_t n;                   /* utterances */
    int64_t samples;             /* length of /audio */
    int64_t *offset, *length;    /* (n) in samples */
    uint64_t *checksum;          /* (n) shard_audio_checksum of each utterance */
    char **id, **lang, **speaker, **source; /* (n) */
    int64_t n_phones;            /* 0 when the shard has no alignments */
    char **phones;               /* (n_phones) */
    int64_t *align_offset;       /* (n + 1) into /align/frames, or NULL */
} CorpusShard;

/* Open and check a shard: format, version, sample rate, table shapes, offsets inside /audio,
 * sorted and non-overlapping, ids non-empty and unique. Errors name the file. */
int corpus_shard_open(CorpusShard *s, const char *path, KoeError *err);
/* /utt/checksum: FNV-1a 64 taken over 64-bit words instead of bytes: the samples' little-endian
 * int16 bytes read as little-endian uint64 words, the last one zero-padded; h = 0xcbf29ce484222325,
 * then h = (h ^ word) * 0x100000001b3 (mod 2^64) for each word. */
uint64_t shard_audio_checksum(const int16_t *pcm, int64_t n);
/* count samples of utterance i starting at sample start (inside the utterance). The whole utterance is
 * read and checked against /utt/checksum; a damaged chunk (fletcher32 or zstd failure) or a mismatch
 * (e.g. a damaged chunk index that makes HDF5 return zeros) is an error naming the utterance, never
 * garbage samples. */
int corpus_shard_read(CorpusShard *s, int64_t i, int64_t start, int64_t count, int16_t *out, KoeError *err);
/* The phone alignment of utterance i. out == NULL: returns the frame count. Otherwise writes the
 * frames to out (an error if more than cap) and returns the count; -1 on error, or when the
 * shard has no alignments. Every value is checked (< n_phones or SHARD_NO_PHONE). */
int64_t corpus_shard_read_align(CorpusShard *s, int64_t i, uint16_t *out, int64_t cap, KoeError *err);
/* Bytes /audio takes on disk (compressed), for `koe info` and benchmarks. */
int64_t corpus_shard_storage_bytes(CorpusShard *s);
void corpus_shard_close(CorpusShard *s);

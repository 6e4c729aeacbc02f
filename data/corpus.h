/* corpus.h — a corpus directory (data/README.md, Corpus): DIR/corpus.h5 (the index) and
 * DIR/shard-NNNNN.h5. corpus.h5 (HDF5's checksummed format, every table with fletcher32: h5util.h) holds
 *   /shards fixed-length strings [S] (file names)  /shard_utts int64 [S]
 *   /langs strings [Lg]  /lang_utts int64 [Lg]  /lang_hours float64 [Lg]
 *   attrs: format="koe-corpus", format_version=2, sample_rate, n_utts, hours, settings (text)
 * corpus_open reads the index and every shard's utterance table, and flattens them into one
 * global utterance numbering: shard order, then order inside the shard. No MPI here.
 * Every function here takes h5_lock() itself; never call one while holding it. */
#pragma once
#include <stdint.h>

#include "../core/common.h"
#include "shard.h"

#define CORPUS_FORMAT "koe-corpus"
#define CORPUS_FORMAT_VERSION 2 /* 1: strings in the HDF5 global heap (refused: re-run koe prepare) */

typedef struct {
    char *dir;
    int n_shards;
    CorpusShard *shards; /* (n_shards) */
    int64_t n_utts;
    int32_t *utt_shard;  /* (n_utts) which shard */
    int64_t *utt_index;  /* (n_utts) index inside that shard */
    int64_t *utt_length; /* (n_utts) samples at 16 kHz */
    int32_t *utt_lang;   /* (n_utts) index into langs */
    int n_langs;
    char **langs;        /* (n_langs) sorted */
    double *lang_hours;  /* (n_langs) */
    int64_t *lang_utts;  /* (n_langs) */
    double hours;
    char *settings;      /* the provenance text corpus_write_index recorded */
} Corpus;

/* Checks the index (format, sample rate, table shapes), opens and checks every shard, checks
 * each shard's utterance count and the per-language tables against the index, and that utterance
 * ids are unique across the corpus. Errors name the file and say what to do. */
int corpus_open(Corpus *c, const char *dir, KoeError *err);
void corpus_close(Corpus *c);
const char *corpus_utt_id(const Corpus *c, int64_t utt);
/* count samples of utterance utt from sample start (thread-safe: takes h5_lock()). */
int corpus_read(Corpus *c, int64_t utt, int64_t start, int64_t count, int16_t *out, KoeError *err);

/* Write DIR/corpus.h5 from the shards already in DIR (rank 0 does this after every rank has
 * written its shards). settings: free text recorded as provenance. */
int corpus_write_index(const char *dir, char *const *shard_names, int n_shards, const char *settings, KoeError *err);

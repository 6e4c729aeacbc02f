/* prepare.h — `koe prepare` without the MPI: turn inputs (audio directories, fairseq .tsv manifests,
 * Kaldi wav.scp, single files) into corpus shards (data/README.md, Corpus).
 *
 * The steps, each deterministic and independent of the rank count:
 *   prepare_collect      every rank lists the same candidates in the same order (directories sorted
 *                        by path, manifests in file order); duplicate ids are rejected here.
 *   prepare_load_align   optional phone alignments (CTM lines `utt channel start dur phone`, seconds).
 *   prepare_probe        rank r reads the headers of candidates i % world == r; the caller sums
 *                        est_samples over ranks (entries of other ranks are 0, rejected ones -1).
 *   prepare_plan_shards  cut the accepted candidates, in order, into shards of ~shard_bytes of int16.
 *   prepare_write_shards rank r decodes and writes shards k % world == r. A shard whose inputs were
 *                        all rejected is not written.
 * Rejections carry the candidate's position so that the report is in input order whoever found them.
 * No MPI here: rank and world are plain ints. */
#pragma once
#include <signal.h>
#include <stdint.h>

#include "../core/common.h"

#define PREPARE_PIPE_EST_SAMPLES (10 * KOE_SAMPLE_RATE) /* a pipe's length is unknown until it runs */

typedef struct {
    const char *lang;    /* --lang, or NULL */
    int lang_from_dir;   /* language = name of the file's parent directory */
    int allow_pipes;     /* run wav.scp `cmd |` entries */
    int64_t shard_bytes; /* target raw int16 audio bytes per shard */
} PrepareOptions;

typedef struct {
    char *id;      /* utterance id: path relative to its root without extension, or the wav.scp key */
    char *source;  /* file path, or the shell command of a wav.scp pipe */
    char *origin;  /* what a rejection names: the path, or "wav.scp:LINE" for a pipe */
    char *lang, *speaker;
    int is_pipe;
    int64_t order; /* position among all candidates (rejected ones included) */
} PrepareItem;

typedef struct {
    int64_t order;
    char *input;  /* path, or "FILE:LINE" for a manifest line */
    char *reason; /* one line, no tabs */
} PrepareReject;

typedef struct {
    PrepareReject *v;
    int64_t n, cap;
} PrepareRejects;

typedef struct {
    PrepareItem *items; /* (n_items) candidates that passed collection, in order */
    int64_t n_items;
    int64_t *est_samples; /* (n_items) 16 kHz samples from the header; -1 rejected by the probe */
    int64_t n_orders;     /* candidates seen, rejected ones included */

    /* Phone alignments: inventory sorted by strcmp, identical for every shard. */
    int n_phones;
    char **phones;
    int64_t n_align_utts;
    char **align_utt;          /* (n_align_utts) sorted */
    int64_t *align_first;      /* (n_align_utts + 1) into the segments */
    double *seg_start, *seg_end; /* seconds */
    int *seg_phone;

    /* Shard plan: shard k holds accepted candidates plan[shard_first[k] .. shard_first[k + 1]). */
    int64_t *plan;
    int64_t n_plan;
    int n_shards;
    int64_t *shard_first; /* (n_shards + 1) */
} PreparePlan;

typedef struct {
    int64_t *shard_utts;  /* (n_shards) utterances written per shard; 0 = shard not written */
    int64_t files_ok, files_rejected;
    int64_t samples, clipped;
    int64_t unaligned;    /* utterances without any alignment when --align was given */
} PrepareStats;

void prepare_reject(PrepareRejects *r, int64_t order, const char *input, const char *reason);
void prepare_rejects_free(PrepareRejects *r);
/* Sort by order and write `input<TAB>reason` lines (with a header) to path via path.tmp. */
int prepare_report_write(const char *path, PrepareRejects *r, KoeError *err);
/* One line per reject, "order<TAB>input<TAB>reason\n", for gathering across ranks, and back. */
char *prepare_rejects_serialize(const PrepareRejects *r, int64_t *bytes);
void prepare_rejects_deserialize(PrepareRejects *r, const char *buf, int64_t bytes);

void prepare_collect(PreparePlan *p, char *const *inputs, int n_inputs, const PrepareOptions *opt,
                     PrepareRejects *rej);
int prepare_load_align(PreparePlan *p, const char *ctm_path, KoeError *err);
void prepare_probe(PreparePlan *p, int rank, int world, PrepareRejects *rej);
void prepare_plan_shards(PreparePlan *p, int64_t shard_bytes);
/* Shard file name of plan shard k ("shard-00042.h5"); buf of at least 32 bytes. */
void prepare_shard_name(int k, char *buf, size_t n);
/* Returns -1 (err filled) only when a shard cannot be written (disk full, HDF5 error): bad inputs
 * are rejections, not errors. *stop (a signal handler's flag) is checked before each input: when
 * set, the shard being written is removed (no .tmp is left) and -2 returned. stats->shard_utts is
 * allocated here. */
int prepare_write_shards(const PreparePlan *p, const char *out_dir, int rank, int world,
                         const volatile sig_atomic_t *stop, PrepareStats *stats, PrepareRejects *rej, KoeError *err);
void prepare_plan_free(PreparePlan *p);
void prepare_stats_free(PrepareStats *s);

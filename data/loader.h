/* loader.h — the batch loader (distributed/README.md, Determinism): which utterances form each
 * global batch, which part of it this rank gets, where each utterance is cropped, and a background
 * prefetch that reads audio (and fbank/MFCC) ahead of the trainer. No MPI: rank and world are ints.
 *
 * Two layers:
 *   Planning (LoaderPlan): a pure function of (utterance lengths, languages, config, seed, global
 *     batch index). No I/O, so it is tested with in-memory arrays at several world sizes in one process.
 *   Reading (Loader): fills the planned batch with audio from a Corpus and optional features,
 *     synchronously (threads = 0) or from prefetch threads that keep a ring of ready batches.
 *
 * Epoch plan, from (seed, epoch) only:
 *   1. Eligible utterances: length >= min_sample_size (shorter ones are never used).
 *   2. Multilingual resampling: language l (hours h_l over its eligible utterances) is drawn with
 *      p_l = h_l^alpha / sum_k h_k^alpha. Its n_l utterances are resampled to m_l = round(n_l * r_l),
 *      r_l = p_l / (h_l / sum_k h_k): floor(m_l / n_l) full copies plus a subset without replacement
 *      of m_l mod n_l utterances drawn from (seed, epoch, l, KOE_RNG_LANG_SAMPLE). alpha = 1 is the
 *      identity: every eligible utterance exactly once per epoch. Redrawn every epoch; the
 *      per-language counts are logged (rank 0) when the epoch starts.
 *   3. One global permutation of the chosen list from (seed, epoch, KOE_RNG_EPOCH_ORDER).
 *   4. Length bucketing: the permuted list is cut into windows of about bucket_batches batches'
 *      worth of utterances; each window is sorted by cropped length (min(len, max_sample_size)),
 *      ties by position, and cut greedily into global batches while n * max_len <= max_tokens.
 *   5. The order of the epoch's batches is shuffled from (seed, epoch, KOE_RNG_BATCH_ORDER).
 *
 * max_tokens is the budget of one GLOBAL batch in samples (fairseq's is per GPU; here it is
 * global on purpose): that is what makes the global batches identical for every world size. A rank
 * holds about max_tokens / world samples. Rank r of P takes utterances i of each global batch with
 * i % P == r (the batch is sorted by length, so slices are balanced); a slice may be empty when the
 * batch has fewer than P utterances. Every rank therefore runs the same number of steps.
 *
 * Crops: an utterance keeps L = min(len, max_sample_size) samples (padding mode), or, with
 * crop_to_shortest (the waveform frontend), every utterance of the global batch keeps the global
 * batch's shortest L, so no padding is needed and slices agree whatever the rank count. The crop
 * start is uniform in [0, len - L] from (seed, global batch index, utterance + k * n_utts,
 * KOE_RNG_CROP), where k counts earlier copies of the same utterance in that global batch (upsampled
 * languages put copies next to each other after the length sort; they must not get the same crop).
 *
 * Resume: the stream is a pure function of (seed, consumed global batches). loader_open(...,
 * consumed) starts at global batch `consumed`, walking epochs by counting each epoch plan's batches
 * (counts are cached). Global batch g is the g-th batch over all epochs.
 *
 * Threads: the planner is not thread-safe (the Loader guards it with its own mutex, and plans
 * batches in order under it, so an epoch plan is built once: O(N log N), ~0.1 s per million
 * utterances, during which loader_next may wait once per epoch). Prefetch
 * threads read through corpus_read (which holds h5_lock(); zstd decode runs inside HDF5) and
 * compute features outside the lock, one FeatureExtractor per thread. An error in a thread is
 * returned by the loader_next() that asks for that batch, naming the utterance. */
#pragma once
#include <stdint.h>

#include "../core/common.h"
#include "../core/config_keys.h"
#include "corpus.h"
#include "features.h"

typedef struct {
    uint64_t seed;
    int64_t max_tokens;      /* samples per GLOBAL batch: n * longest cropped length <= max_tokens */
    int64_t max_sample_size; /* crop longer utterances to this many samples */
    int64_t min_sample_size; /* skip utterances shorter than this */
    double lang_alpha;       /* multilingual sampling exponent: 1 = as is, 0 = uniform */
    int crop_to_shortest;    /* 1: crop the global batch to its shortest (waveform frontend); 0: pad */
    int64_t bucket_batches;  /* batches' worth of utterances sorted together by length */
    int rank, world;         /* this rank's slice of every global batch */
    int log;                 /* 1: log per-language counts when an epoch's batches are first used */
} LoaderPlanConfig;

/* One rank's slice of one global batch, plus what was read for it. B below is n (this rank's
 * utterances), T audio samples, F feature frames, D the feature dimension. */
typedef struct {
    int64_t index;          /* global batch index = global batches consumed before this one */
    int64_t epoch;
    int64_t index_in_epoch;
    int64_t global_n;       /* utterances in the global batch, all ranks */
    int64_t global_samples; /* samples in the global batch after cropping, all ranks */
    int64_t n;              /* this rank's utterances (0 allowed) */
    int64_t *utt;           /* (B) global corpus utterance indices */
    int64_t *start;         /* (B) crop start, samples */
    int64_t *length;        /* (B) samples kept after the crop */
    int64_t T;              /* longest length in this slice (crop_to_shortest: all lengths equal) */
    /* Filled by the reading layer (NULL / 0 in a plan-only batch): */
    float *audio;           /* (B, T) int16 / 32768, zero past length */
    uint8_t *audio_pad;     /* (B, T) 1 where padding */
    FeatureKind feat_kind;  /* 0 when no features were asked for */
    int D;                  /* features_dim(feat_kind) */
    int64_t F;              /* longest frame count in this slice */
    int64_t *frames;        /* (B) feature frames per utterance: features_num_frames(length) */
    float *feats;           /* (B, F, D) zero past frames */
    uint8_t *feat_pad;      /* (B, F) 1 where padding */
    size_t cap_n, cap_audio, cap_feats; /* allocated element counts (internal) */
} LoaderBatch;

/* ---- planning: pure, no I/O ------------------------------------------------------------------ */
typedef struct LoaderPlan LoaderPlan;

void loader_plan_config_default(LoaderPlanConfig *cfg); /* loader_config_default's plan */
/* length, lang: (n_utts) samples and language index in [0, n_langs); lang_names (n_langs) may be
 * NULL (used for logging only). The arrays are copied. Fails when the config is invalid or no
 * utterance is at least min_sample_size long. */
LoaderPlan *loader_plan_create(const int64_t *length, const int32_t *lang, int64_t n_utts, int n_langs,
                               char *const *lang_names, const LoaderPlanConfig *cfg, KoeError *err);
void loader_plan_free(LoaderPlan *p);
int64_t loader_plan_epoch_batches(LoaderPlan *p, int64_t epoch);
/* counts: (n_langs) utterances chosen for each language in that epoch. */
void loader_plan_epoch_lang_counts(LoaderPlan *p, int64_t epoch, int64_t *counts);
/* Fill the plan fields of b (index .. T) for global batch g; audio and features are untouched. */
void loader_plan_batch(LoaderPlan *p, int64_t g, LoaderBatch *b);
void loader_batch_free(LoaderBatch *b); /* frees the buffers; b itself may be on the stack */

/* ---- reading and prefetch -------------------------------------------------------------------- */
typedef struct {
    LoaderPlanConfig plan;
    FeatureKind features; /* 0: audio only; FEAT_FBANK or FEAT_MFCC */
    int threads;          /* 0: read in loader_next (synchronous); >= 1 prefetch threads */
    int depth;            /* ready batches kept ahead (ring of depth + 1 slots) */
} LoaderConfig;

typedef struct Loader Loader;

/* The settings a recipe states in [data] (max_tokens ... features), declared once: offsets into
 * LoaderConfig, defaults that are the recipe's (recipes/recipe.c lists this table). */
extern const ConfigKey loader_keys[];
extern const int loader_n_keys;
/* loader_keys' defaults; seed 1, crop_to_shortest, rank 0 of 1, logging on, depth 4. */
void loader_config_default(LoaderConfig *cfg);
/* The corpus is borrowed and must outlive the loader. Starts at global batch `consumed`. */
Loader *loader_open(Corpus *c, const LoaderConfig *cfg, int64_t consumed, KoeError *err);
/* The next batch of this rank; valid until the next loader_next or loader_close. Returns NULL
 * with err filled (naming the utterance) when reading failed. */
const LoaderBatch *loader_next(Loader *l, KoeError *err);
int64_t loader_consumed(const Loader *l); /* global batches returned so far, counting `consumed` */
void loader_close(Loader *l);             /* stops and joins the threads */

/* Read audio (and features when fe != NULL) for a planned batch: the synchronous path, also used by
 * each prefetch thread. pcm: scratch that grows as needed (*pcm_cap int16 elements). */
int loader_batch_read(Corpus *c, LoaderBatch *b, FeatureExtractor *fe, FeatureKind kind,
                      int16_t **pcm, size_t *pcm_cap, KoeError *err);

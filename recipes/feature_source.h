/* feature_source.h — the features `koe kmeans` clusters and `koe label` labels, computed one
 * utterance at a time from a corpus: MFCC 39-d or fbank 80-d at 100 Hz (data/features.h), or hidden
 * state N of a checkpoint's
 * encoder at its frame rate (50 Hz, or 100 / fbank_stack), run through recipes/ckpt_model.c.
 * (The k-means file itself is data/kmeans_file.h.)
 * Opening a layer source is collective (every rank of kmeans and label opens it): rank 0 hashes the
 * checkpoint file and the ranks share the read of its weights (distributed/ckpt.h).
 * Must not: hold more than one utterance's features, or call MPI beyond that open (the commands split
 * the work). */
#pragma once
#include <stdint.h>

#include "../core/common.h"
#include "../core/model.h"
#include "../data/corpus.h"
#include "../data/features.h"
#include "ckpt_model.h"
#include "recipe.h"

typedef struct {
    char source[64];         /* "mfcc" | "fbank" | "layer:N" */
    int layer;               /* N, or -1 for mfcc and fbank */
    int dim;
    double frame_rate;       /* 100 (mfcc, fbank), or the encoder's (50; 25 for a 4-frame fbank stack) */
    char ckpt_checksum[17];  /* "" for mfcc and fbank */
    FeatureExtractor *fe;    /* mfcc, fbank */
    Model *m;                /* layer:N */
    Recipe r;
    CkptInput in;            /* layer:N: the encoder input of an utterance */
    int64_t max_len;         /* longest utterance of the corpus, samples */
    int16_t *pcm;            /* (max_len) */
    float *wav;              /* (max_len) */
    float *out;              /* (frames of max_len, dim) mfcc or fbank output */
} FeatureSource;

/* source as `koe kmeans --source` and a k-means file name it: "mfcc" or "fbank" (*layer -1) or "layer:N" with N a
 * layer number 0..1000 in the recipes' syntax (core/config_keys.h). On error -1 with the reason in why
 * (the caller names the flag or file). */
int feature_source_parse(const char *source, int *layer, char *why, size_t n);
/* source: "mfcc", "fbank" or "layer:N" (N in 0..L of the checkpoint; needs ckpt).
 * c: the corpus whose utterances will be computed (sizes the buffers). */
int feature_source_open(FeatureSource *s, const char *source, const char *ckpt, const Corpus *c, KoeError *err);
/* Frames an utterance of n samples gives. */
int64_t feature_source_frames(const FeatureSource *s, int64_t n);
/* The features of corpus utterance utt: returns the frame count T and sets *feats to (T, dim),
 * valid until the next call; -1 with err filled on a read error. */
int64_t feature_source_compute(FeatureSource *s, Corpus *c, int64_t utt, const float **feats, KoeError *err);
void feature_source_close(FeatureSource *s);

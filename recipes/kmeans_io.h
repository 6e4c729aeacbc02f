/* kmeans_io.h — what `koe kmeans` and `koe label` share: the features k-means clusters, computed
 * one utterance at a time from a corpus (MFCC 39-d at 100 Hz, or hidden state N of a checkpoint's
 * encoder at its frame rate: 50 Hz, or 100 / fbank_stack), and the k-means file KM.h5:
 *   /centroids float32 [k, dim]
 *   attrs: format="koe-kmeans", format_version=1, source ("mfcc" | "layer:N"), k, dim, frame_rate,
 *          corpus, ckpt_checksum ("" for mfcc), seed, sample, iterations, inertia, frames
 * Must not: hold more than one utterance's features, or call MPI (the commands split the work). */
#pragma once
#include <stdint.h>

#include "../core/common.h"
#include "../core/model.h"
#include "../data/corpus.h"
#include "../data/features.h"
#include "ckpt_model.h"
#include "recipe.h"

#define KMEANS_FORMAT "koe-kmeans"
#define KMEANS_FORMAT_VERSION 1

typedef struct {
    char source[64];         /* "mfcc" | "layer:N" */
    int layer;               /* N, or -1 for mfcc */
    int dim;
    double frame_rate;       /* 100 (mfcc), or the encoder's (50; 25 for a 4-frame fbank stack) */
    char ckpt_checksum[17];  /* "" for mfcc */
    FeatureExtractor *fe;    /* mfcc */
    Model *m;                /* layer:N */
    Recipe r;
    CkptInput in;            /* layer:N: the encoder input of an utterance */
    int64_t max_len;         /* longest utterance of the corpus, samples */
    int16_t *pcm;            /* (max_len) */
    float *wav;              /* (max_len) */
    float *out;              /* (frames of max_len, dim) mfcc output */
} KmSource;

/* source: "mfcc" or "layer:N" (N in 0..L of the checkpoint; needs ckpt).
 * c: the corpus whose utterances will be computed (sizes the buffers). */
int km_source_open(KmSource *s, const char *source, const char *ckpt, const Corpus *c, KoeError *err);
/* Frames an utterance of n samples gives. */
int64_t km_source_frames(const KmSource *s, int64_t n);
/* The features of corpus utterance utt: returns the frame count T and sets *feats to (T, dim),
 * valid until the next call; -1 with err filled on a read error. */
int64_t km_source_compute(KmSource *s, Corpus *c, int64_t utt, const float **feats, KoeError *err);
void km_source_close(KmSource *s);

typedef struct {
    int k, dim;
    float *centroids; /* (k, dim) */
    char source[64];
    double frame_rate;
    char ckpt_checksum[17];
    char checksum[17]; /* of the KM.h5 file itself */
} KmFile;

/* Write KM.h5 (as KM.h5.tmp, published when complete). attrs of the header comment. */
int km_file_write(const char *path, const float *centroids, int k, int dim, const KmSource *s,
                  const char *corpus_dir, uint64_t seed, double sample, int iterations, double inertia,
                  int64_t frames, KoeError *err);
/* Read and check KM.h5 (format, shapes, finite centroids, k <= 65535). */
int km_file_read(KmFile *f, const char *path, KoeError *err);
void km_file_free(KmFile *f);

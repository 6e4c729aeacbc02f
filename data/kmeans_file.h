/* kmeans_file.h — the k-means file KM.h5 that `koe kmeans` writes and `koe label` reads:
 *   /centroids float32 [k, dim]
 *   attrs: format="koe-kmeans", format_version=1, source ("mfcc" | "fbank" | "layer:N"), k, dim,
 *          frame_rate, corpus, features, ckpt_checksum ("" but for layer:N), seed, sample, iterations,
 *          inertia, frames
 * Must not: call MPI (rank 0 writes), or know how the features were computed. */
#pragma once
#include <stdint.h>

#include "../core/common.h"

#define KMEANS_FORMAT "koe-kmeans"
#define KMEANS_FORMAT_VERSION 1

typedef struct {
    int k, dim;
    float *centroids;       /* (k, dim) */
    char source[64];        /* "mfcc" | "fbank" | "layer:N" */
    double frame_rate;      /* of the features clustered */
    char ckpt_checksum[17]; /* of the checkpoint whose layer was clustered; "" for mfcc */
    /* provenance: written, not read back */
    const char *corpus;   /* "" when read from a features file */
    const char *features; /* the features file read (--source file:), or "" */
    uint64_t seed;
    double sample;
    int iterations;
    double inertia; /* of the last pass */
    int64_t frames;
    /* read: the checksum of the KM.h5 file itself */
    char checksum[17];
} KmeansFile;

/* Write KM.h5 (as KM.h5.tmp, published when complete): every field of f but checksum. */
int kmeans_file_write(const char *path, const KmeansFile *f, KoeError *err);
/* Read and check KM.h5 (format, shapes, finite centroids, k <= 65535): k, dim, centroids, source,
 * frame_rate, ckpt_checksum and checksum. */
int kmeans_file_read(KmeansFile *f, const char *path, KoeError *err);
void kmeans_file_free(KmeansFile *f);

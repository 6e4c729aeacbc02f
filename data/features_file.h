/* features_file.h — a koe-features file (data/README.md, Features) read a block of rows at a time:
 * the 2-d /feats [frames, dim] that `koe features` and `koe embed --layer N` write, and its /offset.
 * `koe kmeans --source file:FEATS.h5` streams it. Opening checks the format, the shapes and the
 * offsets; every block read is checked for non-finite values, naming the row and its utterance.
 * Must not: read all of /feats at once, or call MPI (each rank opens the file read-only itself). */
#pragma once
#include <hdf5.h>
#include <stdint.h>

#include "../core/common.h"

typedef struct {
    char path[4096];
    hid_t file, feats;
    int dim;
    int64_t frames, n_utts;
    int64_t *offset;        /* (n_utts + 1): utterance u is rows offset[u] .. offset[u+1]-1 */
    char kind[64];          /* "mfcc", "fbank", "layer:N" */
    double frame_rate;
    char ckpt_checksum[17]; /* of the checkpoint `koe embed` ran; "" when the file has none */
} FeaturesFile;

/* Open and check path: format koe-features, a 2-d float /feats of `dim` columns (a --layer all file
 * is refused: it holds every layer), /offset non-decreasing from 0 to the row count. */
int features_file_open(FeaturesFile *f, const char *path, KoeError *err);
/* Rows [row0, row0 + n) of /feats into out (n, dim); -1 with err on a read failure or a
 * non-finite value. */
int features_file_read(FeaturesFile *f, int64_t row0, int64_t n, float *out, KoeError *err);
void features_file_close(FeaturesFile *f);

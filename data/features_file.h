/* features_file.h — a koe-features file (data/README.md, Features): its index written, and the file
 * read back a block of rows at a time. `koe features` and `koe embed` each fill /feats their own way
 * (collectively by rows; one utterance at a time) and end the file with features_file_write_index.
 * `koe kmeans --source file:FEATS.h5` streams the 2-d /feats [frames, dim] of `koe features` and
 * `koe embed --layer N`. Opening checks the format, the shapes and the offsets; every block read is
 * checked for non-finite values, naming the row and its utterance.
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

/* What every koe-features file holds beside /feats: /offset (n_utts + 1 rows, from 0), /utt_id and the
 * attributes format, format_version, kind, frame_rate (float64) and dim. The writer adds its own
 * attributes after (corpus; checkpoint and ckpt_checksum) and holds h5_lock where threads share HDF5.
 * Returns 0, or -1 (h5_last_error says why). */
int features_file_write_index(hid_t file, const int64_t *offset, char *const *utt_id, int64_t n_utts,
                              const char *kind, double frame_rate, int64_t dim);

/* Open and check path: HDF5 1.10's checksummed format (h5_open_checksummed: a damaged structure is
 * an error, not something libhdf5 parses), format koe-features, frame_rate in (0, 1000], a 2-d float
 * /feats of `dim` columns that stores every row its shape claims (a --layer all file is refused: it
 * holds every layer), /offset non-decreasing from 0 to the row count. */
int features_file_open(FeaturesFile *f, const char *path, KoeError *err);
/* Rows [row0, row0 + n) of /feats into out (n, dim); -1 with err on a read failure or a
 * non-finite value. */
int features_file_read(FeaturesFile *f, int64_t row0, int64_t n, float *out, KoeError *err);
void features_file_close(FeaturesFile *f);

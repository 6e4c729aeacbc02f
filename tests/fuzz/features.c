/* features.c — libFuzzer harness of the koe-features reader (data/features_file.c): the input is
 * FEATS.h5, opened as `koe kmeans --source file:` opens it, then its rows read a block at a time
 * (the first blocks and the last). Seeds: KOE_FUZZ_SEEDS=DIR writes two valid files, as koe features
 * (mfcc) and koe embed --layer N (with a ckpt_checksum) end theirs, a valid one with a chunked /feats
 * (as h5py writes) and one whose /feats has 1 of its 3 chunks (h5_check_stored refuses it). */
#include "../../data/features_file.h"
#include "fuzz_util.h"

#define BLOCK_ROWS 16  /* rows a read asks for */
#define MAX_BLOCKS 64  /* blocks read from the front: a lying row count costs no more */

/* A koe-features file at path: 3 utterances of 7, 0 and 5 frames of dim columns. chunk_rows > 0: /feats
 * chunked in blocks of that many rows (as h5py writes), of which only the first `written` rows are
 * written (a writer killed part-way when written < 12); 0: contiguous, as koe writes. */
static void write_file(const char *path, int dim, const char *kind, double frame_rate, const char *checksum,
                       hsize_t chunk_rows, hsize_t written) {
    int64_t offset[4] = {0, 7, 7, 12};
    char *ids[3] = {"u0", "u1", "u2"};
    float feats[12 * 39];
    for (int i = 0; i < 12 * dim; i++) feats[i] = (float)(i % 11) * 0.5f - 2;
    hid_t f = h5_create(path);
    hsize_t dims[2] = {12, (hsize_t)dim};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[2] = {chunk_rows, (hsize_t)dim}, count[2] = {written, (hsize_t)dim}, start[2] = {0, 0};
    if (chunk_rows) H5Pset_chunk(dcpl, 2, chunk);
    hid_t d = H5Dcreate2(f, "feats", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    hid_t ms = H5Screate_simple(2, count, NULL);
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL);
    if (f < 0 || d < 0 || H5Dwrite(d, H5T_NATIVE_FLOAT, ms, sp, H5P_DEFAULT, feats) < 0 ||
        features_file_write_index(f, offset, ids, 3, kind, frame_rate, dim) < 0 ||
        (checksum && h5_attr_write_str(f, "ckpt_checksum", checksum) < 0)) {
        fprintf(stderr, "fuzz setup: %s: %s\n", path, h5_last_error());
        abort();
    }
    H5Dclose(d);
    H5Sclose(ms);
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Fclose(f);
}

static void write_seeds(const char *dir) {
    char path[400];
    snprintf(path, sizeof path, "%s/mfcc.h5", dir);
    write_file(path, 39, "mfcc", 100, NULL, 0, 12);
    snprintf(path, sizeof path, "%s/layer.h5", dir);
    write_file(path, 8, "layer:1", 50, "0123456789abcdef", 0, 12);
    snprintf(path, sizeof path, "%s/chunked.h5", dir);
    write_file(path, 8, "fbank", 100, NULL, 4, 12);
    snprintf(path, sizeof path, "%s/partial.h5", dir);
    write_file(path, 8, "fbank", 100, NULL, 4, 4);
}

FUZZ_INITIALIZE(write_seeds)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("feats.h5", data, size);
    FeaturesFile f;
    KoeError err;
    if (features_file_open(&f, path, &err) == 0) {
        float *block = malloc((size_t)BLOCK_ROWS * f.dim * sizeof(float));
        for (int64_t r = 0, b = 0; r < f.frames && b < MAX_BLOCKS; r += BLOCK_ROWS, b++)
            if (features_file_read(&f, r, f.frames - r < BLOCK_ROWS ? f.frames - r : BLOCK_ROWS, block, &err) < 0) break;
        if (f.frames > 0) features_file_read(&f, f.frames - 1, 1, block, &err);
        free(block);
        features_file_close(&f);
    }
    fuzz_check_h5_closed();
    return 0;
}

/* features_file.c — see features_file.h. */
#include "features_file.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"

#define FEATURES_FILE_FORMAT "koe-features"
#define FEATURES_FILE_VERSION 1
/* What to run for a file the reader refuses for want of checksums (h5_open_checksummed). */
#define FEATURES_FILE_RERUN                                                                                \
    "koe features or koe embed (features of your own: write them in HDF5 1.10's format, as h5py.File(path, " \
    "\"w\", libver=(\"v110\", \"v110\")) does)"

int features_file_write_index(hid_t file, const int64_t *offset, char *const *utt_id, int64_t n_utts,
                              const char *kind, double frame_rate, int64_t dim) {
    return h5_write_array(file, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, offset, n_utts + 1) < 0 ||
                   h5_write_strings(file, "utt_id", utt_id, n_utts) < 0 ||
                   h5_attr_write_str(file, "format", FEATURES_FILE_FORMAT) < 0 ||
                   h5_attr_write_i64(file, "format_version", FEATURES_FILE_VERSION) < 0 ||
                   h5_attr_write_str(file, "kind", kind) < 0 || h5_attr_write_f64(file, "frame_rate", frame_rate) < 0 ||
                   h5_attr_write_i64(file, "dim", dim) < 0
               ? -1
               : 0;
}

/* /feats: a 2-d float dataset of dim columns; *frames gets its rows. 0, or -1 with err. */
static int feats_check(hid_t d, const char *path, int64_t dim, int64_t *frames, KoeError *err) {
    hid_t sp = H5Dget_space(d), ft = H5Dget_type(d);
    const int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[3] = {0, 0, 0};
    int rc = -1;
    if (nd == 3)
        koe_error_set(err, "%s: /feats holds every layer ([L+1, frames, dim], koe embed --layer all); k-means needs "
                           "one: write it with koe embed --layer N", path);
    else if (nd != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) != 2 || H5Tget_class(ft) != H5T_FLOAT)
        koe_error_set(err, "%s: /feats is not a 2-d float [frames, dim] dataset", path);
    else if ((int64_t)dims[1] != dim)
        koe_error_set(err, "%s: /feats has %lld columns but the file's dim attribute says %lld (a damaged or "
                           "hand-made file: write it again with koe features or koe embed)",
                      path, (long long)dims[1], (long long)dim);
    else if (h5_check_stored(d, path, "feats", "the command that wrote it, to the end", err) == 0) {
        *frames = (int64_t)dims[0];
        rc = 0;
    }
    H5Tclose(ft);
    H5Sclose(sp);
    return rc;
}

/* /offset: n_utts + 1 entries, 0 first, non-decreasing, frames last. 0, or -1 with err. */
static int offset_check(const FeaturesFile *f, KoeError *err) {
    if (f->n_utts < 1 || f->offset[0] != 0 || f->offset[f->n_utts] != f->frames)
        return koe_error_set(err, "%s: /offset must run from 0 to the %lld rows of /feats", f->path,
                             (long long)f->frames);
    for (int64_t u = 0; u < f->n_utts; u++)
        if (f->offset[u + 1] < f->offset[u])
            return koe_error_set(err, "%s: /offset decreases at utterance %lld", f->path, (long long)u);
    return 0;
}

static int attrs_read(FeaturesFile *f, hid_t file, int64_t *dim, KoeError *err) {
    if (h5_check_format(file, f->path, FEATURES_FILE_FORMAT, FEATURES_FILE_VERSION, err) < 0 ||
        h5_attr_read_str(file, f->path, "kind", f->kind, sizeof f->kind, err) < 0 ||
        h5_attr_read_i64(file, f->path, "dim", dim, err) < 0 ||
        h5_attr_read_f64(file, f->path, "frame_rate", &f->frame_rate, err) < 0)
        return -1;
    if (*dim < 1 || *dim > 65536) return koe_error_set(err, "%s: dim %lld out of range 1..65536", f->path, (long long)*dim);
    if (!(f->frame_rate > 0 && f->frame_rate <= 1000)) /* as a label set's (data/labels.c) */
        return koe_error_set(err, "%s: frame_rate = %g is not a frame rate (0 < Hz <= 1000)", f->path, f->frame_rate);
    KoeError none;
    if (H5Aexists(file, "ckpt_checksum") > 0 &&
        h5_attr_read_str(file, f->path, "ckpt_checksum", f->ckpt_checksum, sizeof f->ckpt_checksum, &none) < 0)
        return koe_error_set(err, "%s: attribute ckpt_checksum is not a string", f->path);
    return 0;
}

int features_file_open(FeaturesFile *f, const char *path, KoeError *err) {
    memset(f, 0, sizeof *f);
    f->file = f->feats = -1;
    if (strlen(path) >= sizeof f->path) return koe_error_set(err, "features file path is too long: %s", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    if (access(path, R_OK) != 0)
        return koe_error_set(err, "%s: cannot read: %s (a koe-features file from koe features or koe embed)", path,
                             strerror(errno));
    h5_lock();
    hid_t file = h5_open_checksummed(path, FEATURES_FILE_RERUN, err), d = -1;
    int64_t dim = 0;
    int rc = -1;
    if (file < 0) goto out;
    if (attrs_read(f, file, &dim, err) < 0) goto out;
    if (H5Lexists(file, "feats", H5P_DEFAULT) <= 0 || (d = H5Dopen2(file, "feats", H5P_DEFAULT)) < 0) {
        koe_error_set(err, "%s: /feats is missing", path);
        goto out;
    }
    if (feats_check(d, path, dim, &f->frames, err) < 0) goto out;
    void *off = NULL;
    int64_t n_off = 0;
    if (h5_read_array(file, path, "offset", H5T_NATIVE_INT64, sizeof(int64_t), -1, &off, &n_off, err) < 0) goto out;
    f->offset = off;
    f->n_utts = n_off - 1;
    f->dim = (int)dim;
    if (offset_check(f, err) < 0) goto out;
    rc = 0;
out:
    if (rc == 0) {
        f->file = file;
        f->feats = d;
    } else {
        if (d >= 0) H5Dclose(d);
        if (file >= 0) H5Fclose(file);
        free(f->offset);
        f->offset = NULL;
    }
    h5_unlock();
    return rc;
}

/* The utterance holding row (offset is non-decreasing). */
static int64_t utt_of_row(const FeaturesFile *f, int64_t row) {
    int64_t lo = 0, hi = f->n_utts - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (f->offset[mid] <= row) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

int features_file_read(FeaturesFile *f, int64_t row0, int64_t n, float *out, KoeError *err) {
    KOE_ASSERT(row0 >= 0 && n >= 0 && row0 + n <= f->frames);
    if (n == 0) return 0;
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, (hsize_t)f->dim};
    h5_lock();
    hid_t fs = H5Dget_space(f->feats), ms = H5Screate_simple(2, count, NULL);
    int ok = fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
             H5Dread(f->feats, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out) >= 0;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    h5_unlock();
    if (!ok)
        return koe_error_set(err, "%s: cannot read /feats rows %lld..%lld: %s", f->path, (long long)row0,
                             (long long)(row0 + n - 1), h5_last_error());
    const int64_t total = n * f->dim;
    int64_t bad = total;
#pragma omp parallel for reduction(min : bad) schedule(static)
    for (int64_t i = 0; i < total; i++)
        if (!isfinite(out[i]) && i < bad) bad = i;
    if (bad < total) {
        const int64_t row = row0 + bad / f->dim;
        return koe_error_set(err, "%s: /feats row %lld (utterance %lld) has a non-finite value", f->path,
                             (long long)row, (long long)utt_of_row(f, row));
    }
    return 0;
}

void features_file_close(FeaturesFile *f) {
    h5_lock();
    if (f->feats >= 0) H5Dclose(f->feats);
    if (f->file >= 0) H5Fclose(f->file);
    h5_unlock();
    free(f->offset);
    memset(f, 0, sizeof *f);
    f->file = f->feats = -1;
}

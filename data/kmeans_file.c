/* kmeans_file.c — see kmeans_file.h. */
#include "kmeans_file.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "labels.h"

int kmeans_file_write(const char *path, const KmeansFile *km, KoeError *err) {
    size_t tn = strlen(path) + 8;
    char *tmp = koe_malloc(tn);
    snprintf(tmp, tn, "%s.tmp", path);
    int rc = 0;
    h5_lock();
    hid_t f = h5_create(tmp);
    if (f >= 0) koe_output_begin(tmp);
    if (f < 0) {
        rc = koe_error_set(err, "%s: cannot create: %s (does the directory exist?)", tmp, h5_last_error());
    } else {
        hsize_t dims[2] = {(hsize_t)km->k, (hsize_t)km->dim};
        hid_t sp = H5Screate_simple(2, dims, NULL);
        hid_t d = sp >= 0 ? H5Dcreate2(f, "centroids", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
        int ok = d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, km->centroids) >= 0;
        if (ok) h5_output_data(d, tmp); /* test hook */
        if (d >= 0) H5Dclose(d);
        if (sp >= 0) H5Sclose(sp);
        ok = ok && h5_attr_write_str(f, "source", km->source) >= 0 && h5_attr_write_i64(f, "k", km->k) >= 0 &&
             h5_attr_write_i64(f, "dim", km->dim) >= 0 && h5_attr_write_f64(f, "frame_rate", km->frame_rate) >= 0 &&
             h5_attr_write_str(f, "corpus", km->corpus ? km->corpus : "") >= 0 &&
             h5_attr_write_str(f, "features", km->features ? km->features : "") >= 0 &&
             h5_attr_write_str(f, "ckpt_checksum", km->ckpt_checksum) >= 0 &&
             h5_attr_write_i64(f, "seed", (int64_t)km->seed) >= 0 && h5_attr_write_f64(f, "sample", km->sample) >= 0 &&
             h5_attr_write_i64(f, "iterations", km->iterations) >= 0 &&
             h5_attr_write_f64(f, "inertia", km->inertia) >= 0 && h5_attr_write_i64(f, "frames", km->frames) >= 0 &&
             h5_attr_write_i64(f, "format_version", KMEANS_FORMAT_VERSION) >= 0 &&
             h5_attr_write_str(f, "format", KMEANS_FORMAT) >= 0;
        if (!ok) rc = koe_error_set(err, "%s: cannot write: %s", tmp, h5_last_error());
        if (H5Fclose(f) < 0 && rc == 0) rc = koe_error_set(err, "%s: cannot close: %s", tmp, h5_last_error());
    }
    h5_unlock();
    if (rc == 0) rc = koe_publish_file(tmp, path, err);
    if (rc < 0) {
        koe_error_fs(err, tmp);
        koe_output_end(tmp);
        remove(tmp);
    }
    free(tmp);
    return rc;
}

int kmeans_file_read(KmeansFile *f, const char *path, KoeError *err) {
    memset(f, 0, sizeof *f);
    if (koe_file_checksum(path, f->checksum, err) < 0) return -1;
    int rc = -1;
    h5_lock();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int64_t k = 0, dim = 0;
    if (file < 0) {
        koe_error_set(err, "%s: cannot open as HDF5: %s", path, h5_last_error());
        goto out;
    }
    if (h5_check_format(file, path, KMEANS_FORMAT, KMEANS_FORMAT_VERSION, err) < 0 ||
        h5_attr_read_i64(file, path, "k", &k, err) < 0 || h5_attr_read_i64(file, path, "dim", &dim, err) < 0 ||
        h5_attr_read_str(file, path, "source", f->source, sizeof f->source, err) < 0 ||
        h5_attr_read_f64(file, path, "frame_rate", &f->frame_rate, err) < 0 ||
        h5_attr_read_str(file, path, "ckpt_checksum", f->ckpt_checksum, sizeof f->ckpt_checksum, err) < 0)
        goto out;
    if (k < 1 || k > LABELS_MAX_CLASSES || dim < 1 || dim > 65536) {
        koe_error_set(err, "%s: k = %lld, dim = %lld out of range (k 1..%d)", path, (long long)k, (long long)dim,
                      LABELS_MAX_CLASSES);
        goto out;
    }
    hid_t d = H5Lexists(file, "centroids", H5P_DEFAULT) > 0 ? H5Dopen2(file, "centroids", H5P_DEFAULT) : -1;
    if (d < 0) {
        koe_error_set(err, "%s: /centroids is missing", path);
        goto out;
    }
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    int ok = H5Sget_simple_extent_ndims(sp) == 2 && H5Sget_simple_extent_dims(sp, dims, NULL) == 2 &&
             dims[0] == (hsize_t)k && dims[1] == (hsize_t)dim;
    H5Sclose(sp);
    if (ok && h5_check_stored(d, path, "centroids", "`koe kmeans`", err) < 0) {
        H5Dclose(d);
        goto out;
    }
    if (ok) {
        f->centroids = koe_malloc((size_t)k * dim * sizeof(float));
        ok = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, f->centroids) >= 0;
    }
    H5Dclose(d);
    if (!ok) {
        koe_error_set(err, "%s: /centroids is not a readable float [%lld, %lld] dataset", path, (long long)k,
                      (long long)dim);
        goto out;
    }
    for (int64_t i = 0; i < k * dim; i++) {
        if (!isfinite(f->centroids[i])) {
            koe_error_set(err, "%s: centroid %lld has a non-finite value", path, (long long)(i / dim));
            goto out;
        }
    }
    f->k = (int)k;
    f->dim = (int)dim;
    rc = 0;
out:
    if (file >= 0) H5Fclose(file);
    h5_unlock();
    if (rc < 0) kmeans_file_free(f);
    return rc;
}

void kmeans_file_free(KmeansFile *f) {
    free(f->centroids);
    f->centroids = NULL;
}

/* kmeans_io.c — see kmeans_io.h. */
#include "kmeans_io.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../data/h5util.h"
#include "../data/labels.h"

int km_source_open(KmSource *s, const char *source, const char *ckpt, const Corpus *c, KoeError *err) {
    memset(s, 0, sizeof *s);
    s->layer = -1;
    if (strlen(source) >= sizeof s->source) return koe_error_set(err, "source '%s' is too long", source);
    snprintf(s->source, sizeof s->source, "%s", source);
    s->max_len = 1;
    for (int64_t i = 0; i < c->n_utts; i++)
        if (c->utt_length[i] > s->max_len) s->max_len = c->utt_length[i];
    if (!strcmp(source, "mfcc")) {
        s->dim = features_dim(FEAT_MFCC);
        s->frame_rate = 100;
        s->fe = features_create(FEAT_MFCC);
        int64_t fmax = features_num_frames(s->max_len);
        s->out = koe_malloc((size_t)(fmax ? fmax : 1) * s->dim * sizeof(float));
    } else if (!strncmp(source, "layer:", 6)) {
        char *end;
        errno = 0;
        long n = strtol(source + 6, &end, 10);
        if (errno || end == source + 6 || *end || n < 0 || n > 1000)
            return koe_error_set(err, "source '%s': expected mfcc or layer:N with N a layer number", source);
        if (!ckpt) return koe_error_set(err, "source '%s' needs --ckpt CKPT.h5 (the model whose layer is clustered)", source);
        s->layer = (int)n;
        if (koe_file_checksum(ckpt, s->ckpt_checksum, err) < 0) return -1;
        s->m = ckpt_model_open(ckpt, 1, s->max_len, &s->r, err);
        if (!s->m) return -1;
        if (s->layer > s->m->cfg.L) {
            koe_error_set(err, "%s: source %s: the model has layers 0..%d", ckpt, source, s->m->cfg.L);
            km_source_close(s);
            return -1;
        }
        ckpt_input_init(&s->in, s->m, &s->r, s->max_len);
        s->dim = s->m->cfg.D;
        s->frame_rate = ckpt_model_frame_rate(s->m);
    } else {
        return koe_error_set(err, "source '%s': expected mfcc or layer:N", source);
    }
    s->pcm = koe_malloc((size_t)s->max_len * sizeof(int16_t));
    s->wav = koe_malloc((size_t)s->max_len * sizeof(float));
    return 0;
}

int64_t km_source_frames(const KmSource *s, int64_t n) {
    return s->m ? ckpt_model_frames(s->m, n) : features_num_frames(n);
}

int64_t km_source_compute(KmSource *s, Corpus *c, int64_t utt, const float **feats, KoeError *err) {
    const int64_t n = c->utt_length[utt];
    const int64_t T = km_source_frames(s, n);
    if (T == 0) return 0;
    if (corpus_read(c, utt, 0, n, s->pcm, err) < 0) return -1;
    for (int64_t i = 0; i < n; i++) s->wav[i] = (float)s->pcm[i] / 32768.0f;
    if (s->m) {
        ModelRun run = {0};
        int64_t S;
        const float *inp = ckpt_input_compute(&s->in, s->wav, n, &S);
        model_forward(s->m, inp, &S, 1, S, NULL, &run);
        KOE_ASSERT(s->m->T == T);
        *feats = model_hidden(s->m, s->layer);
    } else {
        features_compute(s->fe, s->wav, n, s->out);
        *feats = s->out;
    }
    return T;
}

void km_source_close(KmSource *s) {
    if (s->fe) features_free(s->fe);
    if (s->m) {
        ckpt_input_free(&s->in);
        model_free(s->m);
        recipe_free(&s->r);
    }
    free(s->pcm);
    free(s->wav);
    free(s->out);
    memset(s, 0, sizeof *s);
}

int km_file_write(const char *path, const float *centroids, int k, int dim, const KmSource *s,
                  const char *corpus_dir, uint64_t seed, double sample, int iterations, double inertia,
                  int64_t frames, KoeError *err) {
    size_t tn = strlen(path) + 8;
    char *tmp = koe_malloc(tn);
    snprintf(tmp, tn, "%s.tmp", path);
    int rc = 0;
    h5_lock();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        rc = koe_error_set(err, "%s: cannot create: %s (does the directory exist?)", tmp, h5_last_error());
    } else {
        hsize_t dims[2] = {(hsize_t)k, (hsize_t)dim};
        hid_t sp = H5Screate_simple(2, dims, NULL);
        hid_t d = sp >= 0 ? H5Dcreate2(f, "centroids", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
        int ok = d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, centroids) >= 0;
        if (d >= 0) H5Dclose(d);
        if (sp >= 0) H5Sclose(sp);
        ok = ok && h5_attr_write_str(f, "source", s->source) >= 0 && h5_attr_write_i64(f, "k", k) >= 0 &&
             h5_attr_write_i64(f, "dim", dim) >= 0 && h5_attr_write_f64(f, "frame_rate", s->frame_rate) >= 0 &&
             h5_attr_write_str(f, "corpus", corpus_dir) >= 0 &&
             h5_attr_write_str(f, "ckpt_checksum", s->ckpt_checksum) >= 0 &&
             h5_attr_write_i64(f, "seed", (int64_t)seed) >= 0 && h5_attr_write_f64(f, "sample", sample) >= 0 &&
             h5_attr_write_i64(f, "iterations", iterations) >= 0 && h5_attr_write_f64(f, "inertia", inertia) >= 0 &&
             h5_attr_write_i64(f, "frames", frames) >= 0 &&
             h5_attr_write_i64(f, "format_version", KMEANS_FORMAT_VERSION) >= 0 &&
             h5_attr_write_str(f, "format", KMEANS_FORMAT) >= 0;
        if (!ok) rc = koe_error_set(err, "%s: cannot write: %s", tmp, h5_last_error());
        if (H5Fclose(f) < 0 && rc == 0) rc = koe_error_set(err, "%s: cannot close: %s", tmp, h5_last_error());
    }
    h5_unlock();
    if (rc == 0) rc = koe_publish_file(tmp, path, err);
    if (rc < 0) remove(tmp);
    free(tmp);
    return rc;
}

int km_file_read(KmFile *f, const char *path, KoeError *err) {
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
    if (rc < 0) km_file_free(f);
    return rc;
}

void km_file_free(KmFile *f) {
    free(f->centroids);
    f->centroids = NULL;
}

/* labels.c — label set files (labels.h): the writer `koe label` uses and the checked reader the
 * trainer uses. Must not: know how labels are made (k-means lives in core/kmeans.c and
 * recipes/cmd_kmeans.c), call MPI, or hold h5_lock() across calls. */
#include "labels.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"

uint64_t labels_shard_fingerprint(const CorpusShard *s) {
    uint64_t h = KOE_FNV_OFFSET;
    for (int64_t i = 0; i < s->n; i++) {
        h = koe_fnv1a(h, s->id[i], strlen(s->id[i]) + 1);
        unsigned char le[8];
        for (int b = 0; b < 8; b++) le[b] = (unsigned char)((uint64_t)s->length[i] >> (8 * b));
        h = koe_fnv1a(h, le, 8);
    }
    return h;
}

static int labels_check_name(const char *name, KoeError *err) {
    if (!name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return koe_error_set(err, "label set name '%s' is not a plain name (no '/', not empty, '.' or '..')", name);
    return 0;
}

char *labels_dir(const char *corpus_dir, const char *name) {
    size_t n = strlen(corpus_dir) + strlen(name) + 16;
    char *p = koe_malloc(n);
    snprintf(p, n, "%s/labels/%s", corpus_dir, name);
    return p;
}

char *labels_shard_path(const char *corpus_dir, const char *name, const CorpusShard *s) {
    const char *base = strrchr(s->path, '/');
    base = base ? base + 1 : s->path;
    char *dir = labels_dir(corpus_dir, name);
    size_t n = strlen(dir) + strlen(base) + 2;
    char *p = koe_malloc(n);
    snprintf(p, n, "%s/%s", dir, base);
    free(dir);
    return p;
}

static int mkdir_ok(const char *path, KoeError *err) {
    if (mkdir(path, 0777) == 0 || errno == EEXIST) return 0;
    return koe_error_set(err, "%s: cannot create the directory: %s", path, strerror(errno));
}

int labels_make_dir(const char *corpus_dir, const char *name, KoeError *err) {
    if (labels_check_name(name, err) < 0) return -1;
    size_t n = strlen(corpus_dir) + 16;
    char *top = koe_malloc(n);
    snprintf(top, n, "%s/labels", corpus_dir);
    char *dir = labels_dir(corpus_dir, name);
    int rc = (mkdir_ok(top, err) < 0 || mkdir_ok(dir, err) < 0) ? -1 : 0;
    free(top);
    free(dir);
    return rc;
}

int labels_write_shard(const char *corpus_dir, const char *name, const CorpusShard *s, const LabelSetInfo *info,
                       const uint16_t *labels, const int64_t *offset, KoeError *err) {
    if (labels_check_name(name, err) < 0) return -1;
    KOE_ASSERT(info->n_classes > 0 && info->n_classes <= LABELS_MAX_CLASSES && info->frame_rate > 0);
    KOE_ASSERT(offset[0] == 0);
    for (int64_t i = 0; i < s->n; i++) KOE_ASSERT(offset[i + 1] >= offset[i]);
    for (int64_t f = 0; f < offset[s->n]; f++) KOE_ASSERT(labels[f] < info->n_classes);

    char *path = labels_shard_path(corpus_dir, name, s);
    size_t tn = strlen(path) + 8;
    char *tmp = koe_malloc(tn);
    snprintf(tmp, tn, "%s.tmp", path);
    const char *base = strrchr(s->path, '/');
    base = base ? base + 1 : s->path;
    char fp[17];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)labels_shard_fingerprint(s));

    int rc = 0;
    h5_lock();
    hid_t file = h5_create(tmp);
    if (file >= 0) koe_output_begin(tmp);
    if (file < 0) {
        rc = koe_error_set(err, "%s: cannot create: %s (is the directory there and writable?)", tmp, h5_last_error());
    } else {
        int bad = h5_write_array(file, "labels", H5T_STD_U16LE, H5T_NATIVE_UINT16, labels, offset[s->n]) < 0;
        if (!bad) h5_output_data(file, tmp); /* test hook */
        if (bad || h5_write_array(file, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, offset, s->n + 1) < 0 ||
            h5_attr_write_i64(file, "n_classes", info->n_classes) < 0 ||
            h5_attr_write_f64(file, "frame_rate", info->frame_rate) < 0 ||
            h5_attr_write_str(file, "source", info->source) < 0 ||
            h5_attr_write_str(file, "kmeans_checksum", info->kmeans_checksum) < 0 ||
            h5_attr_write_str(file, "ckpt_checksum", info->ckpt_checksum) < 0 ||
            h5_attr_write_str(file, "shard_fingerprint", fp) < 0 || h5_attr_write_str(file, "corpus_shard", base) < 0 ||
            h5_attr_write_i64(file, "n_utts", s->n) < 0 ||
            h5_attr_write_i64(file, "format_version", LABELS_FORMAT_VERSION) < 0 ||
            h5_attr_write_str(file, "format", LABELS_FORMAT) < 0)
            rc = koe_error_set(err, "%s: cannot write the labels: %s", tmp, h5_last_error());
        else if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0)
            rc = koe_error_set(err, "%s: cannot flush: %s", tmp, h5_last_error());
        if (H5Fclose(file) < 0 && rc == 0) rc = koe_error_set(err, "%s: cannot close: %s", tmp, h5_last_error());
    }
    h5_unlock();
    if (rc == 0) rc = koe_publish_file(tmp, path, err);
    if (rc < 0) {
        koe_error_fs(err, tmp);
        koe_output_end(tmp);
        unlink(tmp);
    }
    free(tmp);
    free(path);
    return rc;
}

/* One label file's attributes and /offset, checked against its corpus shard (h5_lock held). */
static int labels_check_file(hid_t file, const char *path, const CorpusShard *s, LabelSetInfo *info,
                             int64_t **offset_out, int64_t *n_labels_out, KoeError *err) {
    if (h5_check_format(file, path, LABELS_FORMAT, LABELS_FORMAT_VERSION, err) < 0) return -1;
    int64_t k = 0, n_utts = 0;
    char fp[64], want[17];
    if (h5_attr_read_i64(file, path, "n_classes", &k, err) < 0 ||
        h5_attr_read_f64(file, path, "frame_rate", &info->frame_rate, err) < 0 ||
        h5_attr_read_str(file, path, "source", info->source, sizeof info->source, err) < 0 ||
        h5_attr_read_str(file, path, "kmeans_checksum", info->kmeans_checksum, sizeof info->kmeans_checksum, err) < 0 ||
        h5_attr_read_str(file, path, "ckpt_checksum", info->ckpt_checksum, sizeof info->ckpt_checksum, err) < 0 ||
        h5_attr_read_str(file, path, "shard_fingerprint", fp, sizeof fp, err) < 0 ||
        h5_attr_read_i64(file, path, "n_utts", &n_utts, err) < 0)
        return -1;
    if (k <= 0 || k > LABELS_MAX_CLASSES)
        return koe_error_set(err, "%s: n_classes = %lld (expected 1 .. %d); re-run `koe label`", path, (long long)k,
                             LABELS_MAX_CLASSES);
    info->n_classes = (int32_t)k;
    if (!(info->frame_rate > 0 && info->frame_rate <= 1000))
        return koe_error_set(err, "%s: frame_rate = %g is not a frame rate; re-run `koe label`", path, info->frame_rate);
    snprintf(want, sizeof want, "%016llx", (unsigned long long)labels_shard_fingerprint(s));
    if (strcmp(fp, want) || n_utts != s->n)
        return koe_error_set(err,
                             "%s: made for another corpus shard (fingerprint %s, %lld utterances; %s has %s, %lld); "
                             "re-run `koe label` on this corpus",
                             path, fp, (long long)n_utts, s->path, want, (long long)s->n);
    int64_t *offset = NULL;
    if (h5_read_array(file, path, "offset", H5T_NATIVE_INT64, sizeof(int64_t), s->n + 1, (void **)&offset, NULL, err) < 0)
        return -1;
    hid_t d = H5Dopen2(file, "labels", H5P_DEFAULT);
    hsize_t len = 0;
    int ok = 0;
    if (d >= 0) {
        hid_t sp = H5Dget_space(d), ft = H5Dget_type(d);
        ok = H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, &len, NULL) >= 0 &&
             H5Tget_class(ft) == H5T_INTEGER && H5Tget_size(ft) == 2 && H5Tget_sign(ft) == H5T_SGN_NONE &&
             h5_has_fletcher32(d);
        if (ok && h5_check_stored(d, path, "labels", "`koe label`", err) < 0) ok = -1;
        H5Tclose(ft);
        H5Sclose(sp);
        H5Dclose(d);
    }
    if (ok < 0) {
        free(offset);
        return -1;
    }
    if (!ok) {
        free(offset);
        return koe_error_set(err, "%s: /labels is missing or not a 1-d uint16 dataset with checksums; re-run `koe label`",
                             path);
    }
    if (offset[0] != 0 || offset[s->n] != (int64_t)len) {
        koe_error_set(err, "%s: /offset runs from %lld to %lld but /labels has %llu frames; re-run `koe label`", path,
                      (long long)offset[0], (long long)offset[s->n], (unsigned long long)len);
        free(offset);
        return -1;
    }
    for (int64_t i = 0; i < s->n; i++) {
        if (offset[i + 1] < offset[i]) {
            koe_error_set(err, "%s: /offset decreases at utterance %lld (%s); re-run `koe label`", path, (long long)i,
                          s->id[i]);
            free(offset);
            return -1;
        }
    }
    *offset_out = offset;
    *n_labels_out = (int64_t)len;
    return 0;
}

static int labelset_open_shard(LabelSet *ls, const Corpus *c, const char *name, int si, int64_t *utt, KoeError *err) {
    const CorpusShard *s = &c->shards[si];
    char *path = labels_shard_path(c->dir, name, s);
    int rc = -1;
    if (access(path, F_OK) != 0) {
        koe_error_set(err, "%s: missing (label set '%s' has no file for corpus shard %s); run `koe label --corpus %s "
                      "--name %s`", path, name, s->path, c->dir, name);
        free(path);
        return -1;
    }
    h5_lock();
    hid_t file = h5_open_checksummed(path, "`koe label`", err);
    LabelSetInfo info;
    memset(&info, 0, sizeof info);
    int64_t *offset = NULL, n_labels = 0;
    if (file < 0) {
        /* err says why */
    } else if (labels_check_file(file, path, s, &info, &offset, &n_labels, err) == 0) {
        if (si == 0) {
            ls->info = info;
        } else if (info.n_classes != ls->info.n_classes || info.frame_rate != ls->info.frame_rate ||
                   strcmp(info.source, ls->info.source) || strcmp(info.kmeans_checksum, ls->info.kmeans_checksum)) {
            koe_error_set(err,
                          "%s: n_classes %d, frame_rate %g, source %s, k-means %s differ from the set's first file "
                          "(%d, %g, %s, %s): the set mixes two `koe label` runs; re-run `koe label`",
                          path, info.n_classes, info.frame_rate, info.source, info.kmeans_checksum, ls->info.n_classes,
                          ls->info.frame_rate, ls->info.source, ls->info.kmeans_checksum);
            goto out;
        }
        for (int64_t i = 0; i < s->n; i++) {
            int64_t frames = offset[i + 1] - offset[i];
            double dl = (double)frames / info.frame_rate, da = (double)s->length[i] / KOE_SAMPLE_RATE;
            if (fabs(dl - da) > LABELS_MAX_LENGTH_DIFF_S) {
                koe_error_set(err,
                              "%s: utterance %s has %lld label frames (%.3f s at %g Hz) for %.3f s of audio (more than "
                              "%.1f s apart); re-run `koe label`",
                              path, s->id[i], (long long)frames, dl, info.frame_rate, da, LABELS_MAX_LENGTH_DIFF_S);
                goto out;
            }
            ls->utt_start[*utt] = offset[i];
            ls->utt_frames[*utt] = frames;
            ls->utt_shard[*utt] = si;
            (*utt)++;
        }
        hid_t d = H5Dopen2(file, "labels", H5P_DEFAULT);
        if (d < 0) {
            koe_error_set(err, "%s: cannot open /labels: %s", path, h5_last_error());
            goto out;
        }
        ls->hid_file[si] = file;
        ls->hid_labels[si] = d;
        file = -1;
        rc = 0;
    }
out:
    if (file >= 0) H5Fclose(file);
    h5_unlock();
    free(offset);
    free(path);
    return rc;
}

int labelset_open(LabelSet *ls, const Corpus *c, const char *name, KoeError *err) {
    memset(ls, 0, sizeof *ls);
    if (labels_check_name(name, err) < 0) return -1;
    ls->dir = labels_dir(c->dir, name);
    struct stat st;
    if (stat(ls->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        koe_error_set(err, "%s: no such label set; make it with `koe label --corpus %s --kmeans KM.h5 --name %s`",
                      ls->dir, c->dir, name);
        free(ls->dir);
        ls->dir = NULL;
        return -1;
    }
    ls->n_shards = c->n_shards;
    ls->hid_file = koe_malloc((size_t)(c->n_shards ? c->n_shards : 1) * sizeof(int64_t));
    ls->hid_labels = koe_malloc((size_t)(c->n_shards ? c->n_shards : 1) * sizeof(int64_t));
    for (int i = 0; i < c->n_shards; i++) ls->hid_file[i] = ls->hid_labels[i] = -1;
    ls->n_utts = c->n_utts;
    size_t nu = (size_t)(c->n_utts ? c->n_utts : 1);
    ls->utt_start = koe_malloc(nu * sizeof(int64_t));
    ls->utt_frames = koe_malloc(nu * sizeof(int64_t));
    ls->utt_shard = koe_malloc(nu * sizeof(int32_t));
    int64_t utt = 0;
    for (int si = 0; si < c->n_shards; si++) {
        if (labelset_open_shard(ls, c, name, si, &utt, err) < 0) {
            labelset_close(ls);
            return -1;
        }
    }
    KOE_ASSERT(utt == c->n_utts);
    return 0;
}

int64_t labelset_read(LabelSet *ls, int64_t utt, int32_t *out, int64_t cap, KoeError *err) {
    KOE_ASSERT(utt >= 0 && utt < ls->n_utts);
    int64_t n = ls->utt_frames[utt];
    if (!out) return n;
    if (n > cap) {
        koe_error_set(err, "%s: utterance %lld has %lld label frames, more than the %lld asked for", ls->dir,
                      (long long)utt, (long long)n, (long long)cap);
        return -1;
    }
    if (n == 0) return 0;
    uint16_t *tmp = koe_malloc((size_t)n * sizeof(uint16_t));
    int si = ls->utt_shard[utt];
    hsize_t start[1] = {(hsize_t)ls->utt_start[utt]}, count[1] = {(hsize_t)n};
    h5_lock();
    hid_t fs = H5Dget_space((hid_t)ls->hid_labels[si]);
    hid_t ms = H5Screate_simple(1, count, NULL);
    int ok = fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
             H5Dread((hid_t)ls->hid_labels[si], H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, tmp) >= 0;
    if (!ok) {
        char file[4096] = "";
        H5Fget_name((hid_t)ls->hid_file[si], file, sizeof file);
        koe_error_set(err, "%s: cannot read the labels of utterance %lld: %s (the file is damaged: checksum failed; "
                           "re-run `koe label`)", file, (long long)utt, h5_last_error());
    }
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    h5_unlock();
    for (int64_t f = 0; ok && f < n; f++) {
        if (tmp[f] >= ls->info.n_classes) {
            koe_error_set(err, "%s: utterance %lld frame %lld has label %u >= n_classes %d (damaged file); re-run "
                          "`koe label`", ls->dir, (long long)utt, (long long)f, tmp[f], ls->info.n_classes);
            ok = 0;
        }
        out[f] = tmp[f];
    }
    free(tmp);
    return ok ? n : -1;
}

void labelset_close(LabelSet *ls) {
    h5_lock();
    for (int i = 0; ls->hid_file && i < ls->n_shards; i++) {
        if (ls->hid_labels[i] >= 0) H5Dclose((hid_t)ls->hid_labels[i]);
        if (ls->hid_file[i] >= 0) H5Fclose((hid_t)ls->hid_file[i]);
    }
    h5_unlock();
    free(ls->hid_file);
    free(ls->hid_labels);
    free(ls->utt_start);
    free(ls->utt_frames);
    free(ls->utt_shard);
    free(ls->dir);
    memset(ls, 0, sizeof *ls);
}

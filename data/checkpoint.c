/* checkpoint.c — see checkpoint.h. Must not: leave a file under a final name (step file or latest)
 * that is incomplete, or delete a checkpoint that latest names. */
#include "checkpoint.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../core/rng.h"
#include "../core/version.h"
#include "h5util.h"

/* ---- checksums -------------------------------------------------------------------------------- */

/* Below this many elements a tensor is summed by the calling thread: waking a team costs more. */
#define CHECKPOINT_SUM_PARALLEL_MIN 65536

uint64_t checkpoint_sum(const float *v, int64_t first, int64_t n) {
    uint64_t s = 0;
    /* simd: the lanes hash independent elements and the sum is mod 2^64, so it is the same number as the
     * element-by-element loop's, ~8x faster with 64-bit vector multiplies (tests/unit/test_checkpoint.c
     * checks it against that loop) */
#pragma omp parallel for simd reduction(+ : s) schedule(simd : static) if (n >= CHECKPOINT_SUM_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        s += koe_hash64(koe_hash64((uint64_t)(first + i) + 0x632BE59BD9B4E019ULL) ^ bits);
    }
    return s;
}

/* A /model tensor's part of the /model checksum: positions keyed by its name, not by where a table
 * puts it, so a reader that knows only some of the tensors (the encoder of a training checkpoint)
 * can still verify the whole group. */
static uint64_t tensor_sum(const char *name, const float *v, int64_t n) {
    return checkpoint_sum(v, (int64_t)(koe_fnv1a(KOE_FNV_OFFSET, name, strlen(name)) >> 2), n);
}

/* n_sums: how many log_sums the file holds (CHECKPOINT_LOG_SUMS, or fewer in an older file) */
static uint64_t state_sum(const TrainState *st, int64_t n_sums) {
    int64_t f[8] = {st->step, st->epoch, st->consumed, (int64_t)st->seed, st->adam_t, st->skipped, st->skips_in_row,
                    st->sched_step};
    uint64_t h = koe_fnv1a(KOE_FNV_OFFSET, f, sizeof f);
    h = koe_fnv1a(h, st->log_sums, (size_t)n_sums * sizeof st->log_sums[0]);
    return koe_fnv1a(h, &st->gumbel_temp, sizeof st->gumbel_temp);
}

static int attr_write_sum(hid_t obj, uint64_t s) {
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, s);
    return h5_attr_write_str(obj, "checksum", hex);
}

/* The checksum stored on obj: 1 read into *s, 0 none stored, -1 unreadable or malformed (err says which). */
static int attr_read_sum(hid_t obj, const char *path, const char *what, uint64_t *s, KoeError *err) {
    if (H5Aexists(obj, "checksum") <= 0) return 0;
    char hex[32], *end = NULL;
    if (h5_attr_read_str(obj, path, "checksum", hex, sizeof hex, err) < 0) return -1;
    *s = strtoull(hex, &end, 16);
    if (strlen(hex) != 16 || *end) return koe_error_set(err, "%s: %s has a malformed checksum '%s'", path, what, hex);
    return 1;
}

int checkpoint_verify_sum(const char *path, const char *what, uint64_t computed, uint64_t stored, KoeError *err) {
    if (computed == stored) return 0;
    return koe_error_set(err, "%s: %s fails its checksum (stored %016" PRIx64 ", computed %016" PRIx64 "): the file is damaged",
                         path, what, stored, computed);
}

/* 1: matches, 0: no checksum stored, -1: mismatch or unreadable (err says which). */
static int attr_check_sum(hid_t obj, const char *path, const char *what, uint64_t s, KoeError *err) {
    uint64_t stored = 0;
    const int rc = attr_read_sum(obj, path, what, &stored, err);
    return rc == 1 && checkpoint_verify_sum(path, what, s, stored, err) < 0 ? -1 : rc;
}

/* ---- writing ---------------------------------------------------------------------------------- */

struct CheckpointWriter {
    char *path, *tmp;
    const ParamTable *t;
    hid_t file, model, optim[2]; /* optim: /optim/m, /optim/v, or -1 */
    hid_t *ds;                   /* (t->n) the /model datasets, open from creation (collectively) to finish */
    uint64_t sums[3];
    int has_io;
    CheckpointIO io;
};

static hid_t create_dataset(hid_t loc, const char *name, int ndim, const int64_t *shape) {
    hsize_t dims[PARAM_MAX_DIMS];
    for (int d = 0; d < ndim; d++) dims[d] = (hsize_t)shape[d];
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    if (sp < 0) return -1;
    /* every element gets written: no fill pass (parallel HDF5 would otherwise write the zeros first) */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t ds = dcpl >= 0 && H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0
                   ? H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT)
                   : -1;
    if (dcpl >= 0) H5Pclose(dcpl);
    H5Sclose(sp);
    return ds;
}

static void writer_close_handles(CheckpointWriter *w) {
    for (int i = 0; w->ds && i < w->t->n; i++)
        if (w->ds[i] >= 0) H5Dclose(w->ds[i]);
    free(w->ds);
    w->ds = NULL;
    for (int k = 0; k < 2; k++)
        if (w->optim[k] >= 0) H5Dclose(w->optim[k]);
    if (w->model >= 0) H5Gclose(w->model);
    w->optim[0] = w->optim[1] = w->model = -1;
}

static void writer_free(CheckpointWriter *w) {
    free(w->path);
    free(w->tmp);
    free(w);
}

CheckpointWriter *checkpoint_writer_open(const char *path, const ParamTable *t, int optim, KoeError *err) {
    return checkpoint_writer_open_io(path, t, optim, NULL, err);
}

CheckpointWriter *checkpoint_writer_open_io(const char *path, const ParamTable *t, int optim, const CheckpointIO *io,
                                            KoeError *err) {
    CheckpointWriter *w = koe_calloc(1, sizeof *w);
    if (io) {
        w->io = *io;
        w->has_io = 1;
    }
    w->path = koe_strdup(path);
    size_t n = strlen(path) + 5;
    w->tmp = koe_malloc(n);
    snprintf(w->tmp, n, "%s.tmp", path);
    w->t = t;
    w->model = w->optim[0] = w->optim[1] = -1;
    h5_lock();
    w->file = io ? H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, io->fapl) : h5_create(w->tmp);
    if (w->file < 0) {
        koe_error_set(err, "%s: cannot create: %s (does the directory exist and is it writable?)", w->tmp,
                      h5_last_error());
        koe_error_fs(err, w->tmp);
        h5_unlock();
        writer_free(w);
        return NULL;
    }
    int ok = (w->model = H5Gcreate2(w->file, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) >= 0;
    w->ds = koe_malloc((size_t)(t->n ? t->n : 1) * sizeof *w->ds);
    for (int i = 0; i < t->n; i++) w->ds[i] = -1;
    for (int i = 0; ok && i < t->n; i++) ok = (w->ds[i] = create_dataset(w->model, t->e[i].name, t->e[i].ndim, t->e[i].shape)) >= 0;
    if (ok && optim) {
        hid_t g = H5Gcreate2(w->file, "optim", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ok = g >= 0 && (w->optim[0] = create_dataset(g, "m", 1, &t->total)) >= 0 &&
             (w->optim[1] = create_dataset(g, "v", 1, &t->total)) >= 0;
        if (g >= 0) H5Gclose(g);
    }
    if (!ok) {
        koe_error_set(err, "%s: cannot create the checkpoint's datasets: %s", w->tmp, h5_last_error());
        koe_error_fs(err, w->tmp);
        writer_close_handles(w);
        H5Fclose(w->file);
        remove(w->tmp);
        h5_unlock();
        writer_free(w);
        return NULL;
    }
    h5_unlock();
    koe_output_begin(w->tmp);
    return w;
}

int checkpoint_writer_tensor(CheckpointWriter *w, int i, const float *v, KoeError *err) {
    KOE_ASSERT(i >= 0 && i < w->t->n);
    const ParamEntry *e = &w->t->e[i];
    h5_lock();
    int rc = H5Dwrite(w->ds[i], H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, w->has_io ? w->io.dxpl_tensor : H5P_DEFAULT, v) >=
                     0
                 ? 0
                 : -1;
    if (rc < 0) {
        koe_error_set(err, "%s: cannot write /model/%s: %s", w->tmp, e->name, h5_last_error());
        koe_error_fs(err, w->tmp);
    }
    h5_unlock();
    if (rc == 0) w->sums[0] += tensor_sum(e->name, v, e->numel);
    return rc;
}

int checkpoint_writer_optim(CheckpointWriter *w, int which, int64_t offset, int64_t count, const float *v,
                            KoeError *err) {
    KOE_ASSERT(which == 0 || which == 1);
    KOE_ASSERT(w->optim[which] >= 0 && offset >= 0 && count >= 0 && offset + count <= w->t->total);
    if (count == 0 && !w->has_io) return 0; /* collective: an empty part still joins the write */
    h5_lock();
    int rc = h5_write_rows(w->optim[which], H5T_NATIVE_FLOAT, -1, offset, count, v,
                           w->has_io ? w->io.dxpl_optim : H5P_DEFAULT);
    if (rc < 0) {
        koe_error_set(err, "%s: cannot write /optim/%s [%lld, +%lld): %s", w->tmp, which ? "v" : "m",
                      (long long)offset, (long long)count, h5_last_error());
        koe_error_fs(err, w->tmp);
    }
    h5_unlock();
    if (rc == 0) w->sums[1 + which] += checkpoint_sum(v, offset, count);
    return rc;
}

uint64_t *checkpoint_writer_sums(CheckpointWriter *w) { return w->sums; }

void checkpoint_writer_abort(CheckpointWriter *w) {
    h5_lock();
    writer_close_handles(w);
    H5Fclose(w->file);
    h5_unlock();
    koe_output_end(w->tmp);
    remove(w->tmp);
    writer_free(w);
}

/* /config and its checksum; 1 on success. Caller holds h5_lock. */
static int write_config(hid_t file, const char *text) {
    char *cfg[1] = {(char *)text};
    if (h5_write_strings(file, "config", cfg, 1) < 0) return 0;
    hid_t ds = H5Dopen2(file, "config", H5P_DEFAULT);
    int ok = ds >= 0 && attr_write_sum(ds, koe_fnv1a(KOE_FNV_OFFSET, text, strlen(text))) >= 0;
    if (ds >= 0) H5Dclose(ds);
    return ok;
}

int checkpoint_writer_finish(CheckpointWriter *w, const char *config_text, const TrainState *st, KoeError *err) {
    const char *text = config_text ? config_text : "";
    h5_lock();
    int ok = attr_write_sum(w->model, w->sums[0]) >= 0;
    for (int k = 0; ok && k < 2; k++)
        if (w->optim[k] >= 0) ok = attr_write_sum(w->optim[k], w->sums[1 + k]) >= 0;
    if (ok && st) {
        hid_t g = H5Gcreate2(w->file, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ok = g >= 0 && h5_attr_write_i64(g, "step", st->step) >= 0 && h5_attr_write_i64(g, "epoch", st->epoch) >= 0 &&
             h5_attr_write_i64(g, "consumed", st->consumed) >= 0 &&
             h5_attr_write_i64(g, "seed", (int64_t)st->seed) >= 0 && h5_attr_write_i64(g, "adam_t", st->adam_t) >= 0 &&
             h5_attr_write_i64(g, "skipped", st->skipped) >= 0 &&
             h5_attr_write_i64(g, "skips_in_row", st->skips_in_row) >= 0 &&
             h5_attr_write_i64(g, "sched_step", st->sched_step) >= 0 &&
             h5_attr_write_f64(g, "gumbel_temp", st->gumbel_temp) >= 0 &&
             h5_write_array(g, "log_sums", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, st->log_sums, CHECKPOINT_LOG_SUMS) >= 0 &&
             attr_write_sum(g, state_sum(st, CHECKPOINT_LOG_SUMS)) >= 0;
        if (g >= 0) H5Gclose(g);
    }
    if (ok && !w->has_io) ok = write_config(w->file, text);
    ok = ok && h5_attr_write_str(w->file, "format", CHECKPOINT_FORMAT) >= 0 &&
         h5_attr_write_i64(w->file, "format_version", CHECKPOINT_FORMAT_VERSION) >= 0 &&
         h5_attr_write_str(w->file, "koe_version", koe_version()) >= 0;
    if (!ok) koe_error_set(err, "%s: cannot write /config, /state or attributes: %s", w->tmp, h5_last_error());
    writer_close_handles(w);
    if (H5Fclose(w->file) < 0 && ok) {
        koe_error_set(err, "%s: cannot close: %s", w->tmp, h5_last_error());
        ok = 0;
    }
    if (ok && w->has_io && w->io.rank == 0) { /* /config, serially, after the parallel close */
        hid_t f = H5Fopen(w->tmp, H5F_ACC_RDWR, H5P_DEFAULT);
        ok = f >= 0 && write_config(f, text);
        if (f >= 0 && H5Fclose(f) < 0) ok = 0;
        if (!ok) koe_error_set(err, "%s: cannot add /config: %s", w->tmp, h5_last_error());
    }
    h5_unlock();
    int rc = -1;
    if (!ok) koe_error_fs(err, w->tmp);
    if (w->has_io && w->io.rank != 0) {
        rc = ok ? 0 : -1; /* rank 0 publishes */
        koe_output_end(w->tmp);
    } else if (!ok) {
        koe_output_end(w->tmp);
        remove(w->tmp);
    } else
        rc = koe_publish_file(w->tmp, w->path, err);
    writer_free(w);
    return rc;
}

int checkpoint_write(const char *path, const ParamTable *t, const float *params, const char *config_text,
                     KoeError *err) {
    CheckpointWriter *w = checkpoint_writer_open(path, t, 0, err);
    if (!w) return -1;
    for (int i = 0; i < t->n; i++)
        if (checkpoint_writer_tensor(w, i, params + t->e[i].offset, err) < 0) {
            checkpoint_writer_abort(w);
            return -1;
        }
    return checkpoint_writer_finish(w, config_text, NULL, err);
}

/* ---- reading ---------------------------------------------------------------------------------- */

static hid_t open_checked(const char *path, KoeError *err) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        koe_error_set(err, "%s: cannot open as HDF5: %s", path, h5_last_error());
        return -1;
    }
    if (h5_check_format(f, path, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, err) < 0) {
        H5Fclose(f);
        return -1;
    }
    return f;
}

/* /config of an open file, checksum verified when stored. Caller holds h5_lock. */
static int read_config_locked(hid_t f, const char *path, char **config_text, KoeError *err) {
    char **s = NULL;
    int64_t n = 0;
    if (h5_read_strings(f, path, "config", 1, 1, &s, &n, err) < 0) return -1;
    int rc = -1;
    if (n != 1) koe_error_set(err, "%s: /config has %lld entries, expected 1", path, (long long)n);
    else {
        hid_t ds = H5Dopen2(f, "config", H5P_DEFAULT);
        int chk = ds >= 0 ? attr_check_sum(ds, path, "/config", koe_fnv1a(KOE_FNV_OFFSET, s[0], strlen(s[0])), err) : -1;
        if (ds < 0) koe_error_set(err, "%s: cannot open /config: %s", path, h5_last_error());
        if (ds >= 0) H5Dclose(ds);
        if (chk >= 0) {
            *config_text = koe_strdup(s[0]);
            rc = 0;
        }
    }
    h5_strings_free(s, n);
    return rc;
}

int checkpoint_read_config(const char *path, char **config_text, KoeError *err) {
    h5_lock();
    hid_t f = open_checked(path, err);
    int rc = -1;
    if (f >= 0) {
        rc = read_config_locked(f, path, config_text, err);
        H5Fclose(f);
    }
    h5_unlock();
    return rc;
}

/* H5Literate callback: the first dataset in /model that the table does not have, and (extra != 0)
 * the checksum of every such dataset. */
typedef struct {
    const ParamTable *t;
    char unknown[PARAM_NAME_LEN + 32];
    int extra, failed;
    uint64_t extra_sum;
} ScanState;

static herr_t scan_one(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)info;
    ScanState *s = op;
    if (params_find(s->t, name) >= 0) return 0;
    if (!s->unknown[0]) snprintf(s->unknown, sizeof s->unknown, "%s", name);
    if (!s->extra) return 0;
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    float *v = n >= 0 ? koe_malloc((size_t)(n ? n : 1) * sizeof *v) : NULL;
    if (!v || H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) s->failed = 1;
    else
        s->extra_sum += tensor_sum(name, v, (int64_t)n);
    free(v);
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    return 0;
}

/* Tensor e of /model (open group g) into dst, checked by name, shape and type. */
static int read_tensor(hid_t g, const char *path, const ParamEntry *e, float *dst, KoeError *err) {
    char want[128], got[128] = "(";
    params_shape_str(e, want, sizeof want);
    if (H5Lexists(g, e->name, H5P_DEFAULT) <= 0)
        return koe_error_set(err, "%s: tensor /model/%s %s is missing", path, e->name, want);
    hid_t ds = H5Dopen2(g, e->name, H5P_DEFAULT);
    if (ds < 0) return koe_error_set(err, "%s: cannot open /model/%s: %s", path, e->name, h5_last_error());
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[8] = {0};
    int same = nd == e->ndim && H5Tget_class(ty) == H5T_FLOAT;
    if (nd >= 0 && nd <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
    for (int d = 0; d < nd && d < 8; d++) {
        same = same && (int64_t)dims[d] == e->shape[d];
        size_t k = strlen(got);
        snprintf(got + k, sizeof got - k, "%s%llu", d ? ", " : "", (unsigned long long)dims[d]);
    }
    strncat(got, ")", sizeof got - strlen(got) - 1);
    int rc = 0;
    if (!same)
        rc = koe_error_set(err, "%s: tensor /model/%s is %s %s, expected float %s", path, e->name,
                           H5Tget_class(ty) == H5T_FLOAT ? "float" : "non-float", got, want);
    else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
        rc = koe_error_set(err, "%s: cannot read /model/%s: %s", path, e->name, h5_last_error());
    H5Tclose(ty);
    H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

/* checkpoint_read_model_part on an open file. Caller holds h5_lock. */
static int model_part_locked(hid_t f, const char *path, const ParamTable *t, int lo, int hi, int subset, int group,
                             float *params, uint64_t *sum, uint64_t *stored, KoeError *err) {
    int rc = -1;
    hid_t g = H5Lexists(f, "model", H5P_DEFAULT) > 0 ? H5Gopen2(f, "model", H5P_DEFAULT) : -1;
    if (g < 0) return koe_error_set(err, "%s: no /model group", path);
    *sum = 0;
    const int chk = attr_read_sum(g, path, "/model", stored, err);
    if (chk == 0)
        koe_error_set(err, "%s: /model has no checksum (koe writes one with every checkpoint): the file was "
                      "edited or is damaged", path);
    if (chk <= 0) goto done;
    if (group) {
        ScanState scan = {t, "", subset, 0, 0};
        if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, scan_one, &scan) < 0 || scan.failed) {
            koe_error_set(err, "%s: cannot list or read /model: %s", path, h5_last_error());
            goto done;
        }
        if (scan.unknown[0] && !subset) {
            koe_error_set(err, "%s: /model/%s is not a tensor of this model (was it written for another [model] config?)",
                          path, scan.unknown);
            goto done;
        }
        *sum = scan.extra_sum;
    }
    for (int i = lo; i < hi; i++) {
        const ParamEntry *e = &t->e[i];
        if (read_tensor(g, path, e, params + e->offset, err) < 0) goto done;
        *sum += tensor_sum(e->name, params + e->offset, e->numel);
    }
    rc = 0;
done:
    H5Gclose(g);
    return rc;
}

int checkpoint_read_model_part(const char *path, const ParamTable *t, int lo, int hi, int subset, int group,
                               float *params, uint64_t *sum, uint64_t *stored, KoeError *err) {
    KOE_ASSERT(0 <= lo && lo <= hi && hi <= t->n);
    h5_lock();
    hid_t f = open_checked(path, err);
    int rc = -1;
    if (f >= 0) {
        rc = model_part_locked(f, path, t, lo, hi, subset, group, params, sum, stored, err);
        H5Fclose(f);
    }
    h5_unlock();
    return rc;
}

/* Every /model tensor of the table from an open file into params, and the group's checksum verified
 * (required, as /optim's: a deleted checksum would let a damaged tensor through). subset: tensors the
 * table lacks are allowed (and checksummed). Caller holds h5_lock. */
static int read_params_locked(hid_t f, const char *path, const ParamTable *t, float *params, int subset,
                              KoeError *err) {
    uint64_t sum = 0, stored = 0;
    if (model_part_locked(f, path, t, 0, t->n, subset, 1, params, &sum, &stored, err) < 0) return -1;
    return checkpoint_verify_sum(path, "/model", sum, stored, err);
}

/* subset: tensors of the file that the table lacks are skipped (still checksummed). */
static int read_params(const char *path, const ParamTable *t, float *params, int subset, KoeError *err) {
    h5_lock();
    hid_t f = open_checked(path, err);
    int rc = -1;
    if (f >= 0) {
        rc = read_params_locked(f, path, t, params, subset, err);
        H5Fclose(f);
    }
    h5_unlock();
    return rc;
}

int checkpoint_read_params(const char *path, const ParamTable *t, float *params, KoeError *err) {
    return read_params(path, t, params, 0, err);
}

int checkpoint_read_encoder(const char *path, const ParamTable *t, float *params, KoeError *err) {
    return read_params(path, t, params, 1, err);
}

int checkpoint_read_matching(const char *path, const ParamTable *t, float *params, signed char *got, KoeError *err) {
    h5_lock();
    hid_t f = open_checked(path, err);
    int rc = -1;
    hid_t g = f >= 0 && H5Lexists(f, "model", H5P_DEFAULT) > 0 ? H5Gopen2(f, "model", H5P_DEFAULT) : -1;
    if (f >= 0 && g < 0) koe_error_set(err, "%s: no /model group", path);
    if (g >= 0) {
        /* the entries the file has in this shape, at their offsets in t's buffer */
        ParamTable sub = {koe_malloc((size_t)(t->n ? t->n : 1) * sizeof *sub.e), 0, t->n, t->total};
        for (int i = 0; i < t->n; i++) {
            const ParamEntry *e = &t->e[i];
            got[i] = 0;
            if (H5Lexists(g, e->name, H5P_DEFAULT) <= 0) continue;
            hid_t ds = H5Dopen2(g, e->name, H5P_DEFAULT), sp = ds >= 0 ? H5Dget_space(ds) : -1;
            hsize_t dims[PARAM_MAX_DIMS] = {0};
            int same = sp >= 0 && H5Sget_simple_extent_ndims(sp) == e->ndim;
            if (same) H5Sget_simple_extent_dims(sp, dims, NULL);
            for (int d = 0; same && d < e->ndim; d++) same = (int64_t)dims[d] == e->shape[d];
            if (sp >= 0) H5Sclose(sp);
            if (ds >= 0) H5Dclose(ds);
            got[i] = same ? 1 : -1;
            if (same) sub.e[sub.n++] = *e;
        }
        rc = read_params_locked(f, path, &sub, params, 1, err);
        free(sub.e);
        H5Gclose(g);
    }
    if (f >= 0) H5Fclose(f);
    h5_unlock();
    return rc;
}

/* Elements [start, end) of /optim/m or /optim/v of an open file (of exactly total floats) into out; *sum:
 * their additive checksum, *stored: the dataset's (required). Caller holds h5_lock. */
static int read_moment_slice_locked(hid_t f, const char *path, const char *name, int64_t total, int64_t start,
                                    int64_t end, float *out, uint64_t *sum, uint64_t *stored, KoeError *err) {
    if (H5Lexists(f, "optim", H5P_DEFAULT) <= 0 || H5Lexists(f, name, H5P_DEFAULT) <= 0) {
        koe_error_set(err, "%s: no %s: this is not a training checkpoint (koe init writes model-only files)", path,
                      name);
        return -1;
    }
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return koe_error_set(err, "%s: cannot open %s: %s", path, name, h5_last_error());
    hid_t sp = H5Dget_space(ds);
    hsize_t dim = 0;
    int rc = -1;
    if (H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, &dim, NULL) < 0 || (int64_t)dim != total)
        koe_error_set(err, "%s: %s has %llu elements, the model has %lld parameters", path, name,
                      (unsigned long long)dim, (long long)total);
    else {
        hsize_t off = (hsize_t)start, cnt = (hsize_t)(end - start);
        hid_t ms = cnt ? H5Screate_simple(1, &cnt, NULL) : -1;
        int chk = -1;
        if (cnt && (ms < 0 || H5Sselect_hyperslab(sp, H5S_SELECT_SET, &off, NULL, &cnt, NULL) < 0 ||
                    H5Dread(ds, H5T_NATIVE_FLOAT, ms, sp, H5P_DEFAULT, out) < 0))
            koe_error_set(err, "%s: cannot read %s: %s", path, name, h5_last_error());
        else if ((chk = attr_read_sum(ds, path, name, stored, err)) == 0)
            koe_error_set(err, "%s: %s has no checksum", path, name);
        else if (chk == 1) {
            *sum = checkpoint_sum(out, start, end - start);
            rc = 0;
        }
        if (ms >= 0) H5Sclose(ms);
    }
    H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

static int read_state_locked(hid_t f, const char *path, TrainState *st, KoeError *err) {
    if (H5Lexists(f, "state", H5P_DEFAULT) <= 0)
        return koe_error_set(err, "%s: no /state: this is not a training checkpoint", path);
    hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
    if (g < 0) return koe_error_set(err, "%s: cannot open /state: %s", path, h5_last_error());
    int64_t seed = 0, n_sums = 0;
    memset(st, 0, sizeof *st);
    int ok = h5_attr_read_i64(g, path, "step", &st->step, err) == 0 &&
             h5_attr_read_i64(g, path, "epoch", &st->epoch, err) == 0 &&
             h5_attr_read_i64(g, path, "consumed", &st->consumed, err) == 0 &&
             h5_attr_read_i64(g, path, "seed", &seed, err) == 0 &&
             h5_attr_read_i64(g, path, "adam_t", &st->adam_t, err) == 0 &&
             h5_attr_read_i64(g, path, "skipped", &st->skipped, err) == 0 &&
             h5_attr_read_i64(g, path, "skips_in_row", &st->skips_in_row, err) == 0 &&
             h5_attr_read_i64(g, path, "sched_step", &st->sched_step, err) == 0 &&
             h5_attr_read_f64(g, path, "gumbel_temp", &st->gumbel_temp, err) == 0;
    st->seed = (uint64_t)seed;
    if (ok) {
        double *sums = NULL;
        ok = h5_read_array(g, path, "log_sums", H5T_NATIVE_DOUBLE, sizeof(double), -1, (void **)&sums, &n_sums,
                           err) == 0;
        if (ok && n_sums > CHECKPOINT_LOG_SUMS)
            ok = koe_error_set(err, "%s: /state/log_sums has %lld entries, at most %d expected (a newer koe wrote it)",
                               path, (long long)n_sums, CHECKPOINT_LOG_SUMS) == 0;
        if (ok) memcpy(st->log_sums, sums, (size_t)n_sums * sizeof *sums);
        free(sums);
    }
    if (ok) {
        int chk = attr_check_sum(g, path, "/state", state_sum(st, n_sums), err);
        if (chk == 0) koe_error_set(err, "%s: /state has no checksum", path);
        ok = chk == 1;
    }
    H5Gclose(g);
    return ok ? 0 : -1;
}

int checkpoint_read_train_slice(const char *path, const ParamTable *t, float *m, float *v, int64_t start,
                                int64_t end, TrainState *st, char **config_text, uint64_t sums[2], uint64_t stored[2],
                                KoeError *err) {
    KOE_ASSERT(start >= 0 && start <= end && end <= t->total);
    h5_lock();
    hid_t f = open_checked(path, err);
    int rc = -1;
    if (f >= 0) {
        char *text = NULL;
        if (read_state_locked(f, path, st, err) == 0 && read_config_locked(f, path, &text, err) == 0 &&
            read_moment_slice_locked(f, path, "/optim/m", t->total, start, end, m, &sums[0], &stored[0], err) == 0 &&
            read_moment_slice_locked(f, path, "/optim/v", t->total, start, end, v, &sums[1], &stored[1], err) == 0) {
            *config_text = text;
            text = NULL;
            rc = 0;
        }
        free(text);
        H5Fclose(f);
    }
    h5_unlock();
    return rc;
}

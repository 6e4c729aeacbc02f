/* checkpoint.c — see checkpoint.h. Must not: leave a file under the final name that is incomplete. */
#include "checkpoint.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"

static int write_tensor(hid_t g, const ParamEntry *e, const float *v) {
    hsize_t dims[PARAM_MAX_DIMS];
    for (int d = 0; d < e->ndim; d++) dims[d] = (hsize_t)e->shape[d];
    hid_t sp = H5Screate_simple(e->ndim, dims, NULL);
    if (sp < 0) return -1;
    hid_t ds = H5Dcreate2(g, e->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = -1;
    if (ds >= 0) {
        rc = H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0 ? 0 : -1;
        if (H5Dclose(ds) < 0) rc = -1;
    }
    H5Sclose(sp);
    return rc;
}

int checkpoint_write(const char *path, const ParamTable *t, const float *params, const char *config_text,
                     KoeError *err) {
    size_t n = strlen(path) + 5;
    char *tmp = koe_malloc(n);
    snprintf(tmp, n, "%s.tmp", path);
    int rc = -1;
    h5_lock();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        koe_error_set(err, "%s: cannot create: %s (does the directory exist and is it writable?)", tmp, h5_last_error());
        goto out;
    }
    hid_t g = H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int ok = g >= 0;
    for (int i = 0; ok && i < t->n; i++) {
        if (write_tensor(g, &t->e[i], params + t->e[i].offset) < 0) {
            koe_error_set(err, "%s: cannot write /model/%s: %s", tmp, t->e[i].name, h5_last_error());
            ok = 0;
        }
    }
    if (g >= 0) H5Gclose(g);
    char *cfg[1] = {(char *)(config_text ? config_text : "")};
    if (ok && (h5_write_strings(f, "config", cfg, 1) < 0 || h5_attr_write_str(f, "format", CHECKPOINT_FORMAT) < 0 ||
               h5_attr_write_i64(f, "format_version", CHECKPOINT_FORMAT_VERSION) < 0)) {
        koe_error_set(err, "%s: cannot write /config or attributes: %s", tmp, h5_last_error());
        ok = 0;
    }
    if (H5Fclose(f) < 0 && ok) {
        koe_error_set(err, "%s: cannot close: %s", tmp, h5_last_error());
        ok = 0;
    }
    h5_unlock();
    if (!ok) {
        remove(tmp);
        free(tmp);
        return -1;
    }
    rc = koe_publish_file(tmp, path, err);
    free(tmp);
    return rc;
out:
    h5_unlock();
    free(tmp);
    return rc;
}

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

int checkpoint_read_config(const char *path, char **config_text, KoeError *err) {
    h5_lock();
    hid_t f = open_checked(path, err);
    int rc = -1;
    if (f >= 0) {
        char **s = NULL;
        int64_t n = 0;
        if (h5_read_strings(f, path, "config", &s, &n, err) == 0) {
            if (n != 1) koe_error_set(err, "%s: /config has %lld entries, expected 1", path, (long long)n);
            else {
                *config_text = koe_strdup(s[0]);
                rc = 0;
            }
            h5_strings_free(s, n);
        }
        H5Fclose(f);
    }
    h5_unlock();
    return rc;
}

/* H5Literate callback: remember the first dataset in /model that the table does not have. */
typedef struct {
    const ParamTable *t;
    char unknown[PARAM_NAME_LEN + 32];
} ScanState;

static herr_t scan_one(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)g;
    (void)info;
    ScanState *s = op;
    if (!s->unknown[0] && params_find(s->t, name) < 0) snprintf(s->unknown, sizeof s->unknown, "%s", name);
    return 0;
}

int checkpoint_read_params(const char *path, const ParamTable *t, float *params, KoeError *err) {
    h5_lock();
    hid_t f = open_checked(path, err);
    if (f < 0) {
        h5_unlock();
        return -1;
    }
    int rc = -1;
    hid_t g = H5Lexists(f, "model", H5P_DEFAULT) > 0 ? H5Gopen2(f, "model", H5P_DEFAULT) : -1;
    if (g < 0) {
        koe_error_set(err, "%s: no /model group", path);
        goto done;
    }
    ScanState scan = {t, ""};
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, scan_one, &scan) < 0) {
        koe_error_set(err, "%s: cannot list /model: %s", path, h5_last_error());
        goto done;
    }
    if (scan.unknown[0]) {
        koe_error_set(err, "%s: /model/%s is not a tensor of this model (was it written for another [model] config?)",
                      path, scan.unknown);
        goto done;
    }
    for (int i = 0; i < t->n; i++) {
        const ParamEntry *e = &t->e[i];
        char want[128], got[128] = "(";
        params_shape_str(e, want, sizeof want);
        if (H5Lexists(g, e->name, H5P_DEFAULT) <= 0) {
            koe_error_set(err, "%s: tensor /model/%s %s is missing", path, e->name, want);
            goto done;
        }
        hid_t ds = H5Dopen2(g, e->name, H5P_DEFAULT);
        if (ds < 0) {
            koe_error_set(err, "%s: cannot open /model/%s: %s", path, e->name, h5_last_error());
            goto done;
        }
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
        int ok = 0;
        if (!same)
            koe_error_set(err, "%s: tensor /model/%s is %s %s, expected float %s", path, e->name,
                          H5Tget_class(ty) == H5T_FLOAT ? "float" : "non-float", got, want);
        else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, params + e->offset) < 0)
            koe_error_set(err, "%s: cannot read /model/%s: %s", path, e->name, h5_last_error());
        else
            ok = 1;
        H5Tclose(ty);
        H5Sclose(sp);
        H5Dclose(ds);
        if (!ok) goto done;
    }
    rc = 0;
done:
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    h5_unlock();
    return rc;
}

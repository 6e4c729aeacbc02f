/* h5util.c — see h5util.h. */
#include "h5util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zstd_filter.h"

static pthread_mutex_t h5_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t h5_once = PTHREAD_ONCE_INIT;

static void h5_init_once(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (zstd_filter_register() < 0) koe_fatal(KOE_EXIT_INTERNAL, "cannot register the zstd HDF5 filter");
}

void h5_init(void) { pthread_once(&h5_once, h5_init_once); }
void h5_lock(void) { pthread_mutex_lock(&h5_mutex); }
void h5_unlock(void) { pthread_mutex_unlock(&h5_mutex); }

void h5_output_data(hid_t obj, const char *tmp) {
    if (!koe_output_data_stop(tmp)) return;
    H5Fflush(obj, H5F_SCOPE_GLOBAL);
    koe_output_stop();
}

static herr_t walk_first(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0) snprintf((char *)data, 256, "%s", e->desc ? e->desc : "");
    return 0;
}

const char *h5_last_error(void) {
    static __thread char buf[256];
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_first, buf);
    return buf;
}

hid_t h5_fapl_checksummed(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

hid_t h5_create(const char *path) {
    hid_t fapl = h5_fapl_checksummed();
    if (fapl < 0) return -1;
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    return f;
}

/* The superblock version of an HDF5 file, read from its bytes (the signature at 0, 512, 1024, ...,
 * the version byte after it), or -1 when there is no signature. */
static int superblock_version(FILE *f) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char b[9];
    for (long off = 0; off <= (1L << 20); off = off ? 2 * off : 512) {
        if (fseek(f, off, SEEK_SET) != 0 || fread(b, 1, 9, f) != 9) return -1;
        if (memcmp(b, sig, 8) == 0) return b[8];
    }
    return -1;
}

hid_t h5_open_checksummed(const char *path, const char *rerun, KoeError *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        koe_error_set(err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int v = superblock_version(f);
    fclose(f);
    if (v < 0) {
        koe_error_set(err, "%s: not an HDF5 file (truncated or corrupt?)", path);
        return -1;
    }
    if (v < 3) {
        koe_error_set(err, "%s: written without checksums on the file's structure (HDF5 superblock version %d: "
                           "by an older koe, or by another program); re-run %s", path, v, rerun);
        return -1;
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0)
        koe_error_set(err, "%s: not a readable HDF5 file (truncated or corrupt?): %s; re-run %s", path,
                      h5_last_error(), rerun);
    return file;
}

int h5_has_fletcher32(hid_t dset) {
    hid_t dcpl = H5Dget_create_plist(dset);
    if (dcpl < 0) return 0;
    int n = H5Pget_nfilters(dcpl), found = 0;
    for (int i = 0; i < n && !found; i++) {
        unsigned flags = 0, cd[8];
        size_t ncd = 8;
        found = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, 0, NULL, NULL) == H5Z_FILTER_FLETCHER32;
    }
    H5Pclose(dcpl);
    return found;
}

/* a * b, or the largest hsize_t where that overflows (a lying shape's size). */
static hsize_t mul_sat(hsize_t a, hsize_t b) {
    hsize_t r;
    return __builtin_mul_overflow(a, b, &r) ? (hsize_t)-1 : r;
}

int h5_check_stored(hid_t dset, const char *path, const char *name, const char *rerun, KoeError *err) {
    hid_t dcpl = H5Dget_create_plist(dset), sp = H5Dget_space(dset), ft = H5Dget_type(dset);
    const H5D_layout_t layout = dcpl >= 0 ? H5Pget_layout(dcpl) : H5D_LAYOUT_ERROR;
    const int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK], have = 0, need = 1;
    int ok = nd >= 0 && ft >= 0 && H5Sget_simple_extent_dims(sp, dims, NULL) == nd;
    if (ok && layout == H5D_CHUNKED) { /* a chunk never written has no index entry */
        ok = H5Pget_chunk(dcpl, nd, chunk) == nd && H5Dget_num_chunks(dset, sp, &have) >= 0;
        for (int i = 0; ok && i < nd; i++) {
            ok = chunk[i] > 0;
            if (ok) need = mul_sat(need, dims[i] / chunk[i] + (dims[i] % chunk[i] != 0));
        }
    } else if (ok && layout == H5D_CONTIGUOUS) { /* allocated whole, or not at all */
        have = H5Dget_storage_size(dset);
        need = H5Tget_size(ft);
        for (int i = 0; i < nd; i++) need = mul_sat(need, dims[i]);
    } else if (layout != H5D_COMPACT) /* stored in the object header: always whole */
        ok = 0;
    char shape[200] = "";
    for (int i = 0, o = 0; ok && i < nd && o < (int)sizeof shape - 24; i++)
        o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%llu", i ? " x " : "", (unsigned long long)dims[i]);
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (layout == H5D_VIRTUAL)
        return koe_error_set(err, "%s: /%s is a virtual dataset: its values live in other files, and read as zeros "
                                  "where one is missing; write them into the file itself",
                             path, name);
    if (!ok) return koe_error_set(err, "%s: cannot read the layout of /%s: %s", path, name, h5_last_error());
    if (layout != H5D_COMPACT && have < need)
        return koe_error_set(err, "%s: /%s stores %llu of the %llu %s its %s shape needs: values were never written "
                                  "(a writer stopped early, or a damaged file); re-run %s",
                             path, name, (unsigned long long)have, (unsigned long long)need,
                             layout == H5D_CHUNKED ? "chunks" : "bytes", shape, rerun);
    return 0;
}

static int attr_write(hid_t obj, const char *name, hid_t type, hid_t space, const void *v) {
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t rc = H5Awrite(a, type, v);
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

int h5_attr_write_str(hid_t obj, const char *name, const char *value) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    hid_t s = H5Screate(H5S_SCALAR);
    int rc = attr_write(obj, name, t, s, value);
    H5Sclose(s);
    H5Tclose(t);
    return rc;
}

int h5_attr_write_i64(hid_t obj, const char *name, int64_t value) {
    hid_t s = H5Screate(H5S_SCALAR);
    int rc = attr_write(obj, name, H5T_NATIVE_INT64, s, &value);
    H5Sclose(s);
    return rc;
}

int h5_attr_write_f64(hid_t obj, const char *name, double value) {
    hid_t s = H5Screate(H5S_SCALAR);
    int rc = attr_write(obj, name, H5T_NATIVE_DOUBLE, s, &value);
    H5Sclose(s);
    return rc;
}

static hid_t attr_open(hid_t obj, const char *path, const char *name, KoeError *err) {
    if (H5Aexists(obj, name) <= 0) {
        koe_error_set(err, "%s: attribute '%s' is missing", path, name);
        return -1;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) koe_error_set(err, "%s: cannot open attribute '%s': %s", path, name, h5_last_error());
    return a;
}

int h5_attr_read_str(hid_t obj, const char *path, const char *name, char *buf, size_t n, KoeError *err) {
    hid_t a = attr_open(obj, path, name, err);
    if (a < 0) return -1;
    int rc = -1;
    hid_t ft = H5Aget_type(a);
    if (H5Tget_class(ft) != H5T_STRING) {
        koe_error_set(err, "%s: attribute '%s' is not a string", path, name);
    } else if (H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft)); /* HDF5 does not convert between ASCII and UTF-8 (h5py writes UTF-8) */
        if (H5Aread(a, mt, &s) >= 0 && s) {
            snprintf(buf, n, "%s", s);
            H5free_memory(s);
            rc = 0;
        } else {
            koe_error_set(err, "%s: cannot read attribute '%s'", path, name);
        }
        H5Tclose(mt);
    } else {
        size_t sz = H5Tget_size(ft);
        char *tmp = koe_calloc(sz + 1, 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, sz + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (H5Aread(a, mt, tmp) >= 0) {
            snprintf(buf, n, "%s", tmp);
            rc = 0;
        } else {
            koe_error_set(err, "%s: cannot read attribute '%s'", path, name);
        }
        H5Tclose(mt);
        free(tmp);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

static int attr_read_num(hid_t obj, const char *path, const char *name, hid_t mt, void *v, KoeError *err) {
    hid_t a = attr_open(obj, path, name, err);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(ft);
    hid_t s = H5Aget_space(a);
    int rc = -1;
    if ((cls != H5T_INTEGER && cls != H5T_FLOAT) || H5Sget_simple_extent_npoints(s) != 1)
        koe_error_set(err, "%s: attribute '%s' is not a number", path, name);
    else if (H5Aread(a, mt, v) < 0)
        koe_error_set(err, "%s: cannot read attribute '%s'", path, name);
    else
        rc = 0;
    H5Sclose(s);
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int h5_attr_read_i64(hid_t obj, const char *path, const char *name, int64_t *value, KoeError *err) {
    return attr_read_num(obj, path, name, H5T_NATIVE_INT64, value, err);
}

int h5_attr_read_f64(hid_t obj, const char *path, const char *name, double *value, KoeError *err) {
    return attr_read_num(obj, path, name, H5T_NATIVE_DOUBLE, value, err);
}

int h5_check_format(hid_t file, const char *path, const char *format, int64_t max_version, KoeError *err) {
    char got[128];
    int64_t version;
    KoeError e;
    if (h5_attr_read_str(file, path, "format", got, sizeof got, &e) < 0)
        return koe_error_set(err, "%s: not a %s file (no 'format' attribute)", path, format);
    if (strcmp(got, format) != 0)
        return koe_error_set(err, "%s: is a '%s' file, expected '%s'", path, got, format);
    if (h5_attr_read_i64(file, path, "format_version", &version, err) < 0) return -1;
    if (version < 1 || version > max_version)
        return koe_error_set(err, "%s: %s format_version %lld is not one this koe reads (1..%lld); "
                                  "use the koe that wrote it, or a newer one",
                             path, format, (long long)version, (long long)max_version);
    return 0;
}

/* 1 when loc's file is open through MPI-IO (distributed/h5par.h). */
static int file_is_mpio(hid_t loc) {
    hid_t f = H5Iget_file_id(loc), fapl = f >= 0 ? H5Fget_access_plist(f) : -1;
    int mpio = fapl >= 0 && H5Pget_driver(fapl) == H5FD_MPIO;
    if (fapl >= 0) H5Pclose(fapl);
    if (f >= 0) H5Fclose(f);
    return mpio;
}

/* A 1-d dataset of n elements of type t, chunked (H5_ARRAY_CHUNK elements, or n when smaller) with
 * fletcher32, so that HDF5 verifies every chunk it reads. In a file open through MPI-IO (a training
 * checkpoint's /state, written independently by rank 0) contiguous: parallel HDF5 writes filtered
 * datasets only collectively. */
static hid_t create_checked_1d(hid_t loc, const char *name, hid_t t, int64_t n) {
    hsize_t dims[1] = {(hsize_t)n}, chunk[1] = {(hsize_t)(n < H5_ARRAY_CHUNK ? (n > 0 ? n : 1) : H5_ARRAY_CHUNK)};
    hid_t sp = H5Screate_simple(1, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), d = -1;
    if (sp >= 0 && dcpl >= 0 &&
        (file_is_mpio(loc) || (H5Pset_chunk(dcpl, 1, chunk) >= 0 && H5Pset_fletcher32(dcpl) >= 0)))
        d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return d;
}

int h5_write_array(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, const void *v, int64_t n) {
    hid_t d = create_checked_1d(loc, name, file_type, n);
    if (d < 0) return -1;
    int rc = (n == 0 || H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0) ? 0 : -1;
    H5Dclose(d);
    return rc;
}

int h5_write_rows(hid_t dset, hid_t memtype, int64_t plane, int64_t row0, int64_t nrows, const void *buf,
                  hid_t dxpl) {
    hid_t fspace = H5Dget_space(dset);
    if (fspace < 0) return -1;
    const int ndims = H5Sget_simple_extent_ndims(fspace), r = plane >= 0; /* the dimension of the rows */
    hsize_t dims[4], start[4] = {0}, count[4];
    int ok = ndims >= 1 + r && ndims <= 4 && H5Sget_simple_extent_dims(fspace, dims, NULL) == ndims;
    KOE_ASSERT(!ok || (row0 >= 0 && nrows >= 0 && (hsize_t)(row0 + nrows) <= dims[r] && (!r || (hsize_t)plane < dims[0])));
    hid_t mspace = -1;
    if (ok && nrows == 0) { /* still part of a collective: an empty selection on both sides */
        hsize_t one = 1;
        ok = H5Sselect_none(fspace) >= 0 && (mspace = H5Screate_simple(1, &one, NULL)) >= 0 &&
             H5Sselect_none(mspace) >= 0;
    } else if (ok) {
        if (r) start[0] = (hsize_t)plane, count[0] = 1;
        start[r] = (hsize_t)row0;
        count[r] = (hsize_t)nrows;
        for (int i = r + 1; i < ndims; i++) count[i] = dims[i];
        ok = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
             (mspace = H5Screate_simple(ndims, count, NULL)) >= 0;
    }
    static const float nothing = 0; /* HDF5 wants a buffer even for an empty selection */
    ok = ok && H5Dwrite(dset, memtype, mspace, fspace, dxpl, buf && nrows ? buf : &nothing) >= 0;
    if (mspace >= 0) H5Sclose(mspace);
    H5Sclose(fspace);
    return ok ? 0 : -1;
}

int h5_read_array(hid_t loc, const char *path, const char *name, hid_t mem_type, size_t elem_size,
                  int64_t n_expected, void **out, int64_t *n_out, KoeError *err) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return koe_error_set(err, "%s: dataset '%s' is missing", path, name);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return koe_error_set(err, "%s: cannot open '%s': %s", path, name, h5_last_error());
    hid_t sp = H5Dget_space(d), ft = H5Dget_type(d);
    H5T_class_t cls = H5Tget_class(ft), want = H5Tget_class(mem_type);
    hsize_t len = 0;
    int rc = -1;
    if (H5Sget_simple_extent_ndims(sp) != 1 || (cls != H5T_INTEGER && cls != H5T_FLOAT) ||
        (want == H5T_INTEGER && cls != H5T_INTEGER)) {
        koe_error_set(err, "%s: '%s' is not a 1-d %s dataset", path, name, want == H5T_INTEGER ? "integer" : "numeric");
    } else if (H5Sget_simple_extent_dims(sp, &len, NULL) < 0 || (n_expected >= 0 && (int64_t)len != n_expected)) {
        koe_error_set(err, "%s: '%s' has %lld entries, expected %lld", path, name, (long long)len, (long long)n_expected);
    } else if (len > H5_ARRAY_MAX_BYTES / elem_size) {
        koe_error_set(err, "%s: '%s' claims %llu entries, more than the %llu MB koe reads at once (a damaged file?)",
                      path, name, (unsigned long long)len, (unsigned long long)(H5_ARRAY_MAX_BYTES >> 20));
    } else {
        void *v = koe_malloc((len ? len : 1) * elem_size);
        if (len == 0 || H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0) {
            *out = v;
            if (n_out) *n_out = (int64_t)len;
            rc = 0;
        } else {
            free(v);
            koe_error_set(err, "%s: cannot read '%s': %s", path, name, h5_last_error());
        }
    }
    H5Tclose(ft);
    H5Sclose(sp);
    H5Dclose(d);
    return rc;
}

int h5_write_strings(hid_t loc, const char *name, char *const *s, int64_t n) {
    size_t width = 1;
    for (int64_t i = 0; i < n; i++)
        if (strlen(s[i]) + 1 > width) width = strlen(s[i]) + 1;
    char *buf = koe_calloc((size_t)(n ? n : 1), width);
    for (int64_t i = 0; i < n; i++) memcpy(buf + (size_t)i * width, s[i], strlen(s[i]));
    hid_t t = H5Tcopy(H5T_C_S1);
    int rc = -1;
    if (t >= 0 && H5Tset_size(t, width) >= 0 && H5Tset_strpad(t, H5T_STR_NULLPAD) >= 0 &&
        H5Tset_cset(t, H5T_CSET_UTF8) >= 0) {
        hid_t d = create_checked_1d(loc, name, t, n);
        if (d >= 0) {
            rc = (n == 0 || H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0) ? 0 : -1;
            H5Dclose(d);
        }
    }
    if (t >= 0) H5Tclose(t);
    free(buf);
    return rc;
}

static char *strndup_checked(const char *s, size_t n) {
    char *r = strndup(s, n);
    if (!r) koe_fatal(KOE_EXIT_INTERNAL, "out of memory allocating %zu bytes", n + 1);
    return r;
}

/* Fixed-length strings: n of width bytes each (NUL- or space-padded), read into one buffer. */
static int read_fixed_strings(hid_t d, hid_t ft, hsize_t n, char **s) {
    size_t width = H5Tget_size(ft);
    hid_t mt = H5Tcopy(H5T_C_S1);
    char *buf = koe_calloc(n ? n : 1, width);
    int rc = -1;
    if (mt >= 0 && H5Tset_size(mt, width) >= 0 && H5Tset_strpad(mt, H5T_STR_NULLPAD) >= 0 &&
        H5Tset_cset(mt, H5Tget_cset(ft)) >= 0 && (n == 0 || H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0)) {
        for (hsize_t i = 0; i < n; i++) s[i] = strndup_checked(buf + i * width, width);
        rc = 0;
    }
    if (mt >= 0) H5Tclose(mt);
    free(buf);
    return rc;
}

/* Variable-length strings (files of an older koe, kept in HDF5's global heap), copied into our heap. */
static int read_vlen_strings(hid_t d, hid_t ft, hsize_t n, char **s) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(ft)); /* HDF5 does not convert between ASCII and UTF-8 */
    int rc = -1;
    if (n == 0 || H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0) {
        for (hsize_t i = 0; i < n; i++) {
            char *h = s[i];
            s[i] = koe_strdup(h ? h : "");
            if (h) H5free_memory(h);
        }
        rc = 0;
    }
    H5Tclose(mt);
    return rc;
}

int h5_read_strings(hid_t loc, const char *path, const char *name, int64_t max_n, int vlen_ok, char ***out,
                    int64_t *nout, KoeError *err) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return koe_error_set(err, "%s: dataset '%s' is missing", path, name);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return koe_error_set(err, "%s: cannot open '%s': %s", path, name, h5_last_error());
    hid_t sp = H5Dget_space(d);
    hid_t ft = H5Dget_type(d);
    int rc = -1;
    hsize_t n = 0;
    const int vlen = H5Tis_variable_str(ft) > 0;
    if (H5Sget_simple_extent_ndims(sp) != 1 || H5Tget_class(ft) != H5T_STRING || (vlen && !vlen_ok)) {
        koe_error_set(err, "%s: '%s' is not a 1-d %sstring dataset", path, name, vlen_ok ? "" : "fixed-length ");
    } else if (H5Sget_simple_extent_dims(sp, &n, NULL) < 0 || n > (hsize_t)max_n) {
        koe_error_set(err, "%s: '%s' has %llu entries, at most %lld expected (damaged file?)", path, name,
                      (unsigned long long)n, (long long)max_n);
    } else if (!vlen && (H5Tget_size(ft) > H5_STRING_MAX || (hsize_t)H5Tget_size(ft) * n > H5_STRINGS_MAX_BYTES)) {
        koe_error_set(err, "%s: '%s' claims %llu strings of %zu bytes (damaged file?)", path, name,
                      (unsigned long long)n, H5Tget_size(ft));
    } else {
        char **s = koe_calloc(n ? n : 1, sizeof *s);
        if ((vlen ? read_vlen_strings(d, ft, n, s) : read_fixed_strings(d, ft, n, s)) == 0) {
            *out = s;
            *nout = (int64_t)n;
            rc = 0;
        } else {
            free(s);
            koe_error_set(err, "%s: cannot read '%s': %s", path, name, h5_last_error());
        }
    }
    H5Tclose(ft);
    H5Sclose(sp);
    H5Dclose(d);
    return rc;
}

void h5_strings_free(char **s, int64_t n) {
    if (!s) return;
    for (int64_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

/* zstd_filter.c — HDF5 filter 32015 (zstd) on libzstd; see zstd_filter.h.
 * cd_values[0], when present, is the compression level (the convention of the registered
 * filter, so files are readable by other implementations of 32015 and vice versa).
 * Must not call libhdf5 functions in the filter itself: the plugin build is loaded into other
 * HDF5 libraries (h5py's serial one) and links only libzstd. */
#include "zstd_filter.h"

#include <hdf5.h>
#include <stdlib.h>
#include <zstd.h>

#ifndef KOE_H5_PLUGIN
#include <H5PLextern.h>
#endif

#define DEFAULT_LEVEL 3

/* On failure HDF5 expects 0 and the input buffer left untouched. */
static size_t zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                          size_t nbytes, size_t *buf_size, void **buf) {
    void *out = NULL;
    size_t out_n;
    if (flags & H5Z_FLAG_REVERSE) {
        unsigned long long n = ZSTD_getFrameContentSize(*buf, nbytes);
        if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n > ((size_t)1 << 40)) return 0;
        out = malloc(n ? (size_t)n : 1);
        if (!out) return 0;
        out_n = ZSTD_decompress(out, (size_t)n, *buf, nbytes);
        if (ZSTD_isError(out_n) || out_n != n) {
            free(out);
            return 0;
        }
    } else {
        int level = cd_nelmts > 0 ? (int)cd_values[0] : DEFAULT_LEVEL;
        size_t cap = ZSTD_compressBound(nbytes);
        out = malloc(cap);
        if (!out) return 0;
        out_n = ZSTD_compress(out, cap, *buf, nbytes, level);
        if (ZSTD_isError(out_n)) {
            free(out);
            return 0;
        }
    }
    free(*buf);
    *buf = out;
    *buf_size = out_n;
    return out_n;
}

static const H5Z_class2_t zstd_class = {
    .version = H5Z_CLASS_T_VERS,
    .id = KOE_ZSTD_FILTER_ID,
    .encoder_present = 1,
    .decoder_present = 1,
    .name = "zstd (koe, libzstd)",
    .can_apply = NULL,
    .set_local = NULL,
    .filter = zstd_filter,
};

#ifdef KOE_H5_PLUGIN
/* The plugin entry points, declared here so the plugin needs no HDF5 library at link time. */
H5PL_type_t H5PLget_plugin_type(void);
const void *H5PLget_plugin_info(void);
H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
const void *H5PLget_plugin_info(void) { return &zstd_class; }
#else
int zstd_filter_register(void) {
    if (H5Zfilter_avail(KOE_ZSTD_FILTER_ID) > 0) return 0;
    return H5Zregister(&zstd_class) < 0 ? -1 : 0;
}
#endif

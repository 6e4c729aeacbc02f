/* h5util.h — small checked helpers over the HDF5 C API used by every koe file format
 * (corpus shards, label sets, features, checkpoints). Serial HDF5 only; the parallel
 * (MPI-IO) file access lives in distributed/.
 *
 * HDF5 is not built thread-safe here: every HDF5 call made while another thread may use HDF5
 * (the loader's prefetch thread) must hold h5_lock(). */
#pragma once
#include <hdf5.h>
#include <stdint.h>

#include "../core/common.h"

/* Once per process: turn off HDF5's own error printing (we report errors ourselves) and
 * register koe's zstd filter (id 32015). */
void h5_init(void);

/* File access for every file koe creates: HDF5's 1.10 format, in which the superblock, object headers
 * (attributes included) and chunk indexes carry checksums that HDF5 verifies when it reads them, so
 * that a flipped bit in a file's structure is an error, not something libhdf5 parses (damaged
 * structure can crash it). Files are readable by HDF5 >= 1.10 (h5py, h5dump). */
hid_t h5_fapl_checksummed(void);
/* H5Fcreate(path, H5F_ACC_TRUNC) with that access list. */
hid_t h5_create(const char *path);
/* Open a koe file read-only after checking, from its bytes, that it was written so (superblock
 * version >= 3): an older file is refused, saying to re-run `rerun` (e.g. "koe prepare"). The
 * readers of the files koe can remake (corpus shards and index, label sets, features files) open
 * through this. */
hid_t h5_open_checksummed(const char *path, const char *rerun, KoeError *err);
/* 1 when dset's filter pipeline has fletcher32 (HDF5 then verifies each chunk it reads). */
int h5_has_fletcher32(hid_t dset);
/* 0 when dset stores every value its shape claims: each of its chunks, or all its bytes when contiguous;
 * else -1 with err naming path, /name, what is stored and `rerun`. A value never written reads back as
 * the fill value (zero), without an error even under fletcher32: a writer killed while filling a
 * preallocated chunked dataset (h5py's usual way) leaves such values, a lying shape claims far more
 * than the file holds. A virtual dataset (values in other files) is refused. */
int h5_check_stored(hid_t dset, const char *path, const char *name, const char *rerun, KoeError *err);

void h5_lock(void);
void h5_unlock(void);
/* The test hook's N:data point (core/common.h, KOE_TEST_STOP_AT_OUTPUT) of an HDF5 output: call it
 * (holding h5_lock) after a block of tmp's data is written, obj being any object of the file; when
 * the hook names tmp, the file is flushed (what was written is in it, the final attributes are not)
 * and the process stops. */
void h5_output_data(hid_t obj, const char *tmp);

/* The innermost message on HDF5's error stack, for error reports ("" if none). */
const char *h5_last_error(void);

/* The one checked-call macro for HDF5 calls whose failure cannot be handed back to the caller
 * (collective parallel-HDF5 steps in distributed/, where one rank returning would hang the others):
 * fatal, naming the file, the line, the call and HDF5's message. User errors (a bad file) return -1
 * with a KoeError instead. */
#define h5Check(call)                                                                                      \
    do {                                                                                                   \
        if ((call) < 0)                                                                                    \
            koe_fatal(KOE_EXIT_INTERNAL, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call, h5_last_error()); \
    } while (0)

/* Attributes on a file, group or dataset. Readers return -1 (and fill err, naming path and
 * attribute) when the attribute is missing or has the wrong type. */
int h5_attr_write_str(hid_t obj, const char *name, const char *value);
int h5_attr_write_i64(hid_t obj, const char *name, int64_t value);
int h5_attr_write_f64(hid_t obj, const char *name, double value);
int h5_attr_read_str(hid_t obj, const char *path, const char *name, char *buf, size_t n, KoeError *err);
int h5_attr_read_i64(hid_t obj, const char *path, const char *name, int64_t *value, KoeError *err);
int h5_attr_read_f64(hid_t obj, const char *path, const char *name, double *value, KoeError *err);

/* Check the `format` and `format_version` attributes of a koe file: refuses another format or a
 * newer version, naming the file and what was expected. */
int h5_check_format(hid_t file, const char *path, const char *format, int64_t max_version, KoeError *err);

/* Chunks of the datasets h5_write_array and h5_write_strings write (64k elements: a label set's reads
 * of one utterance touch one or two chunks), each with a fletcher32 checksum. */
#define H5_ARRAY_CHUNK 65536
/* Plain 1-d datasets: write n elements of mem_type stored as file_type (chunked, fletcher32); read a 1-d numeric
 * dataset converted to mem_type (elem_size bytes each) into a malloc'ed array. n_expected >= 0
 * refuses another length; *n_out (may be NULL) gets the length read. A dataset of more than
 * H5_ARRAY_MAX_BYTES (in mem_type) is refused before anything is allocated: a damaged dataspace in a
 * file without checksums (a hand-made features file) can claim 2^42 entries. */
#define H5_ARRAY_MAX_BYTES ((hsize_t)1 << 28)
int h5_write_array(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, const void *v, int64_t n);
/* Rows [row0, row0 + nrows) of dimension 0 of dset (with all of its other dimensions, <= 4 in all)
 * from buf, by hyperslab, through the transfer list dxpl: H5P_DEFAULT serially, or collective under
 * MPI-IO (distributed/h5par.h), where a rank with no rows still joins the write (nrows 0, buf may be
 * NULL). plane >= 0: the rows are those of dimension 1 inside index plane of dimension 0 (one layer
 * of a [layers, rows, ...] dataset); -1: of dimension 0. 0, or -1 on an HDF5 failure (h5_last_error
 * says which). */
int h5_write_rows(hid_t dset, hid_t memtype, int64_t plane, int64_t row0, int64_t nrows, const void *buf,
                  hid_t dxpl);
int h5_read_array(hid_t loc, const char *path, const char *name, hid_t mem_type, size_t elem_size,
                  int64_t n_expected, void **out, int64_t *n_out, KoeError *err);

/* String datasets (utterance ids, languages, ...): write n strings as a 1-d dataset of fixed-length
 * UTF-8 strings (as wide as the longest, NUL-padded; chunked, fletcher32), kept in the dataset itself:
 * variable-length strings live in HDF5's global heap, which has no checksum, and a flipped bit there
 * crashes libhdf5. Read returns n malloc'ed strings (free with h5_strings_free), refusing a dataset of
 * more than max_n strings or of strings wider than H5_STRING_MAX before allocating anything (a damaged
 * dataspace can claim 2^36 entries); variable-length strings (files of an older koe) only when vlen_ok. */
#define H5_STRING_MAX (1 << 20)
#define H5_STRINGS_MAX_BYTES ((hsize_t)1 << 28)
int h5_write_strings(hid_t loc, const char *name, char *const *s, int64_t n);
int h5_read_strings(hid_t loc, const char *path, const char *name, int64_t max_n, int vlen_ok, char ***s,
                    int64_t *n, KoeError *err);
void h5_strings_free(char **s, int64_t n);

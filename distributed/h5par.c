/* h5par.c — see h5par.h. The only place that hands MPI's communicator to HDF5. */
#include "h5par.h"

#include <mpi.h>

#include "../data/h5util.h"

#define h5parCheck(call)                                                                        \
    do {                                                                                        \
        if ((call) < 0)                                                                         \
            koe_fatal(KOE_EXIT_INTERNAL, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call,    \
                      h5_last_error());                                                         \
    } while (0)

hid_t h5par_create(const char *path, KoeError *err) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    h5parCheck(fapl);
    h5parCheck(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0)
        koe_error_set(err, "%s: cannot create the file (MPI-IO): %s; check that the directory exists, "
                           "is writable, and is on a file system every rank sees",
                      path, h5_last_error());
    return f;
}

hid_t h5par_create_dataset(hid_t file, const char *name, hid_t type, int ndims, const int64_t *dims) {
    KOE_ASSERT(ndims >= 1 && ndims <= 4);
    hsize_t d[4];
    for (int i = 0; i < ndims; i++) d[i] = (hsize_t)dims[i];
    hid_t space = H5Screate_simple(ndims, d, NULL);
    h5parCheck(space);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    h5parCheck(dcpl);
    h5parCheck(H5Pset_layout(dcpl, H5D_CONTIGUOUS));
    h5parCheck(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY));
    h5parCheck(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
    hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    h5parCheck(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    return ds;
}

void h5par_write_rows(hid_t dset, hid_t memtype, int64_t row0, int64_t nrows, const void *buf) {
    hid_t fspace = H5Dget_space(dset);
    h5parCheck(fspace);
    int ndims = H5Sget_simple_extent_ndims(fspace);
    KOE_ASSERT(ndims >= 1 && ndims <= 4);
    hsize_t dims[4], start[4] = {0}, count[4];
    h5parCheck(H5Sget_simple_extent_dims(fspace, dims, NULL));
    KOE_ASSERT(row0 >= 0 && nrows >= 0 && (hsize_t)(row0 + nrows) <= dims[0]);
    start[0] = (hsize_t)row0;
    count[0] = (hsize_t)nrows;
    for (int i = 1; i < ndims; i++) count[i] = dims[i];
    hid_t mspace;
    if (nrows == 0) {
        /* still part of the collective: an empty selection on both sides */
        h5parCheck(H5Sselect_none(fspace));
        hsize_t one = 1;
        mspace = H5Screate_simple(1, &one, NULL);
        h5parCheck(mspace);
        h5parCheck(H5Sselect_none(mspace));
    } else {
        h5parCheck(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
        mspace = H5Screate_simple(ndims, count, NULL);
        h5parCheck(mspace);
    }
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    h5parCheck(dxpl);
    h5parCheck(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
    static const float nothing = 0; /* HDF5 wants a buffer even for an empty selection */
    h5parCheck(H5Dwrite(dset, memtype, mspace, fspace, dxpl, buf ? buf : &nothing));
    H5Pclose(dxpl);
    H5Sclose(mspace);
    H5Sclose(fspace);
}

void h5par_close_dataset(hid_t dset) { h5parCheck(H5Dclose(dset)); }

void h5par_close(hid_t file) { h5parCheck(H5Fclose(file)); }

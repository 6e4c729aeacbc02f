/* h5par.c — see h5par.h. The only place that hands MPI's communicator to HDF5 (h5par_fapl). */
#include "h5par.h"

#include <mpi.h>

#include "../data/h5util.h"

hid_t h5par_fapl(void) {
    hid_t fapl;
    h5Check(fapl = H5Pcreate(H5P_FILE_ACCESS));
    h5Check(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
    h5Check(H5Pset_all_coll_metadata_ops(fapl, 1));
    h5Check(H5Pset_coll_metadata_write(fapl, 1));
    h5Check(H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110)); /* as h5_fapl_checksummed */
    return fapl;
}

hid_t h5par_dxpl(int collective) {
    hid_t dxpl;
    h5Check(dxpl = H5Pcreate(H5P_DATASET_XFER));
    h5Check(H5Pset_dxpl_mpio(dxpl, collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT));
    return dxpl;
}

hid_t h5par_create(const char *path, KoeError *err) {
    hid_t fapl = h5par_fapl();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0)
        koe_error_set(err, "%s: cannot create the file (MPI-IO): %s; check that the directory exists, "
                           "is writable, and is on a file system every rank sees",
                      path, h5_last_error());
    if (f < 0) koe_error_fs(err, path);
    return f;
}

hid_t h5par_create_dataset(hid_t file, const char *name, hid_t type, int ndims, const int64_t *dims) {
    KOE_ASSERT(ndims >= 1 && ndims <= 4);
    hsize_t d[4];
    for (int i = 0; i < ndims; i++) d[i] = (hsize_t)dims[i];
    hid_t space = H5Screate_simple(ndims, d, NULL);
    h5Check(space);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    h5Check(dcpl);
    h5Check(H5Pset_layout(dcpl, H5D_CONTIGUOUS));
    h5Check(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY));
    h5Check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
    hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    h5Check(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    return ds;
}

void h5par_write_rows(hid_t dset, hid_t memtype, int64_t row0, int64_t nrows, const void *buf) {
    hid_t dxpl = h5par_dxpl(1);
    h5Check(h5_write_rows(dset, memtype, row0, nrows, buf, dxpl));
    H5Pclose(dxpl);
}

void h5par_close_dataset(hid_t dset) { h5Check(H5Dclose(dset)); }

void h5par_close(hid_t file) { h5Check(H5Fclose(file)); }

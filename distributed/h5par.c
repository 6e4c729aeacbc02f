/* h5par.c — see h5par.h. The only place that hands MPI's communicator to HDF5 (h5par_fapl). */
#include "h5par.h"

#include <mpi.h>
#include <stdlib.h>

#include "../data/h5util.h"
#include "comm.h"

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

void h5par_write_rows(hid_t dset, hid_t memtype, int64_t plane, int64_t row0, int64_t nrows, const void *buf) {
    hid_t dxpl = h5par_dxpl(1);
    h5Check(h5_write_rows(dset, memtype, plane, row0, nrows, buf, dxpl));
    H5Pclose(dxpl);
}

/* First item u with offset[u] >= target. */
static int64_t first_item_at(const int64_t *offset, int64_t n, int64_t target) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (offset[mid] >= target) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* Items [u0, u1) in blocks: the count; start (if not NULL, count + 1 long) gets the boundaries. */
static int64_t plan_blocks(const int64_t *offset, int64_t u0, int64_t u1, int64_t cap, int64_t *start) {
    int64_t nb = 0, u = u0;
    while (u < u1) {
        if (start) start[nb] = u;
        int64_t v = u + 1;
        while (v < u1 && offset[v + 1] - offset[u] <= cap) v++;
        nb++;
        u = v;
    }
    if (start) start[nb] = u1;
    return nb;
}

void h5par_plan(H5parPlan *p, const int64_t *offset, int64_t n, int64_t cap) {
    const int rank = comm_rank(), world = comm_size();
    const int64_t F = offset[n];
    p->u0 = rank == 0 ? 0 : first_item_at(offset, n, F / world * rank + F % world * rank / world);
    p->u1 = rank == world - 1 ? n : first_item_at(offset, n, F / world * (rank + 1) + F % world * (rank + 1) / world);
    p->nb = plan_blocks(offset, p->u0, p->u1, cap, NULL);
    p->start = koe_malloc((size_t)(p->nb + 1) * sizeof *p->start);
    plan_blocks(offset, p->u0, p->u1, cap, p->start);
    p->nb_max = p->nb;
    comm_allreduce_max_i64(&p->nb_max, 1);
    p->max_rows = 1;
    for (int64_t b = 0; b < p->nb; b++) {
        const int64_t rows = offset[p->start[b + 1]] - offset[p->start[b]];
        p->max_rows = rows > p->max_rows ? rows : p->max_rows;
    }
}

void h5par_plan_free(H5parPlan *p) {
    free(p->start);
    p->start = NULL;
}

void h5par_close_dataset(hid_t dset) { h5Check(H5Dclose(dset)); }

void h5par_close(hid_t file) { h5Check(H5Fclose(file)); }

/* h5par.h — parallel HDF5 over MPI-IO: one shared file, each rank writes its own rows of a
 * dataset by hyperslab, collectively (the PETSc / parallel-HDF5-examples pattern). Used by
 * `koe features` and `koe embed`; checkpoints (distributed/ckpt.c) open their files with h5par_fapl too.
 * Every function here is collective: all ranks call it, in the same order, with the same
 * file/dataset arguments (the rows may differ, and may be 0). HDF5 failures inside a collective are
 * fatal (they abort the communicator), since one rank returning while the others wait would hang.
 * Must not: write variable-length data (parallel HDF5 cannot); the caller writes strings
 * serially on one rank after h5par_close. */
#pragma once
#include <hdf5.h>
#include <stdint.h>

#include "../core/common.h"

/* The one way a file is opened for parallel HDF5 (every parallel file of koe: `koe features` here,
 * checkpoints through data/checkpoint.h's CheckpointIO): a file access list with the MPI-IO driver
 * over the whole world and collective metadata operations. The caller closes it (H5Pclose). */
hid_t h5par_fapl(void);
/* A dataset transfer list: collective (every rank joins the write) or independent. */
hid_t h5par_dxpl(int collective);

/* Create (truncate) path for writing with the MPI-IO driver over the whole world. A path that
 * cannot be created is a user error: -1 with err naming the path (the same on every rank). */
hid_t h5par_create(const char *path, KoeError *err);
/* A contiguous dataset of ndims (<= 4) dimensions, allocated up front and never filled (every
 * row gets written). */
hid_t h5par_create_dataset(hid_t file, const char *name, hid_t type, int ndims, const int64_t *dims);
/* Write rows [row0, row0 + nrows) of dimension 0 (all of the other dimensions) from buf,
 * collectively; plane >= 0: of dimension 1 inside index plane of dimension 0 (h5_write_rows). A rank
 * with nothing to write passes nrows = 0 (buf may be NULL). */
void h5par_write_rows(hid_t dset, hid_t memtype, int64_t plane, int64_t row0, int64_t nrows, const void *buf);

/* This rank's part of writing n items collectively, item i being rows offset[i] .. offset[i+1]-1
 * (offset non-decreasing, n + 1 long): a contiguous range of items, cut so that the ranks get about
 * the same number of rows, in blocks of whole items of at most cap rows each (or one item). Every
 * rank joins nb_max writes: its blocks, then writes of 0 rows. */
typedef struct {
    int64_t u0, u1;   /* this rank's items [u0, u1) */
    int64_t nb;       /* its blocks */
    int64_t *start;   /* (nb + 1): block b is items start[b] .. start[b+1]-1 */
    int64_t nb_max;   /* the most blocks of any rank */
    int64_t max_rows; /* rows of its largest block, at least 1: the buffer a block needs */
} H5parPlan;
/* Collective (one allreduce, for nb_max). */
void h5par_plan(H5parPlan *p, const int64_t *offset, int64_t n, int64_t cap);
void h5par_plan_free(H5parPlan *p);
void h5par_close_dataset(hid_t dset);
void h5par_close(hid_t file);

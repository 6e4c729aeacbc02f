/* mpi_check.h — the one checked-call macro for MPI inside distributed/ (STYLE.md: every MPI call is
 * checked and a failure names the file, the line and the call). comm_init switches MPI_COMM_WORLD
 * to MPI_ERRORS_RETURN, so failures come back here; koe_fatal aborts the communicator. */
#pragma once
#include <mpi.h>

#include "../core/common.h"

#define mpiCheck(call)                                                                            \
    do {                                                                                          \
        int rc_ = (call);                                                                         \
        if (rc_ != MPI_SUCCESS) {                                                                 \
            char s_[MPI_MAX_ERROR_STRING];                                                        \
            int n_ = 0;                                                                           \
            MPI_Error_string(rc_, s_, &n_);                                                       \
            koe_fatal(KOE_EXIT_INTERNAL, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call, s_); \
        }                                                                                         \
    } while (0)

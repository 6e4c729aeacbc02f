/* lapack.h — the LAPACK routines analysis/ calls, as OpenBLAS exports them (Fortran symbols; Debian
 * installs no lapacke.h). Column-major, arguments by pointer; the hidden string lengths are omitted
 * (every string argument here is one character). Symmetric matrices are the same in row- and
 * column-major order; the callers say where a transpose is implied. */
#pragma once

/* Eigenvalues ascending in w, eigenvectors in the columns of a (jobz = "V"); divide and conquer. */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info);
/* Thin SVD a = U diag(s) VT (jobz = "S"). */
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
             const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info);

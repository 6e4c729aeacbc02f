/* gemm.h — the engine's one matrix product: C = alpha op(A) op(B) + beta C,
 * row-major, op 'N' or 'T' (the arguments of cblas_sgemm(CblasRowMajor, ...)),
 * computed by oneDNN's sgemm. Why oneDNN and not OpenBLAS: oneDNN picks its
 * kernels from the CPU's features at run time (AVX-512 where the CPU has it, as
 * PyTorch's convolutions do), while Debian's OpenBLAS picks them from a table
 * of CPU models and, on machines it does not know, is pinned to its 256-bit
 * Haswell kernels (OPENBLAS_CORETYPE). Measured on this kind of machine (AMD
 * EPYC, AVX-512), one thread, the shapes of the conv stack and the transformer:
 * oneDNN 214-252 GFLOP/s, OpenBLAS 112-128
 * (`make bench BENCH=gemm`). Threads: the OpenMP pool our loops use; called
 * inside a parallel region it runs on the calling thread. Deterministic for a
 * given thread count. */
#pragma once
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>

#include "common.h"

static inline void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K,
                         float alpha, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float beta, float *C,
                         int64_t ldc) {
  dnnl_status_t st =
      dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success)
    koe_fatal(KOE_EXIT_INTERNAL,
              "internal error: oneDNN sgemm %c%c M=%lld N=%lld K=%lld lda=%lld "
              "ldb=%lld ldc=%lld: status %d",
              ta, tb, (long long)M, (long long)N, (long long)K, (long long)lda,
              (long long)ldb, (long long)ldc, (int)st);
}

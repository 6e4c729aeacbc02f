/* gemm.h — the engine's one matrix product: C = alpha op(A) op(B) + beta C,
 * row-major, op 'N' or 'T' (the arguments of cblas_sgemm(CblasRowMajor, ...)),
 * computed by oneDNN. Why oneDNN and not OpenBLAS: oneDNN picks its
 * kernels from the CPU's features at run time (AVX-512 where the CPU has it, as
 * PyTorch's convolutions do), while Debian's OpenBLAS picks them from a table
 * of CPU models and, on machines it does not know, is pinned to its 256-bit
 * Haswell kernels (OPENBLAS_CORETYPE). Measured on this kind of machine (AMD
 * EPYC, AVX-512), one thread, the shapes of the conv stack and the transformer:
 * oneDNN 214-252 GFLOP/s, OpenBLAS 112-128
 * (`make bench BENCH=gemm`). Threads: the OpenMP pool our loops use; called
 * inside a parallel region it runs on the calling thread. Deterministic for a
 * given thread count.
 *
 * Precision (run.precision, recipes/README.md): the process has one GEMM precision, set by the
 * trainer before the first step. GEMM_FP32: dnnl_sgemm. GEMM_BF16: A and B are rounded to bf16
 * (round to nearest even) into per-thread staging buffers and multiplied by oneDNN's
 * dnnl_gemm_bf16bf16f32 with fp32 accumulation into the fp32 C, so every sgemm caller — linear,
 * conv1d, attention — runs in bf16 without knowing it (an operand with a bf16 copy,
 * gemm_set_bf16_copy, is read from it instead); everything around the GEMMs (norms,
 * softmax, losses, AdamW, the reductions) stays fp32, as do the callers of sgemm_fp32 (the
 * heads' logits and quantizers, k-means).
 *
 * In fp32 an 'N', 'T' product whose B is long and narrow (K >= 2N, at least 2^18 values: fc2, the
 * positional conv's groups) has B transposed into a per-thread staging buffer and runs 'N', 'N',
 * which oneDNN 2.6 runs faster (gemm.c, sgemm_fp32); the result is that of the product as asked.
 * The staging buffers are the one allocation below a kernel: each thread's grows to its largest
 * operand in the first step and is reused. */
#pragma once
#include <oneapi/dnnl/dnnl.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef enum { GEMM_FP32 = 0, GEMM_BF16 = 1 } GemmPrecision;

/* C = alpha op(A) op(B) + beta C in the process's precision. */
void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
           const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* sgemm with operands that may already be bf16 (bit patterns): a_bf16 / b_bf16 say that A / B
 * is a uint16_t array, used as it is; a float operand is rounded (or read from the copy) as in
 * sgemm. A bf16 operand is allowed only while the precision is GEMM_BF16: this is how a caller that
 * keeps a GEMM input in bf16 (core/README.md, Precision) multiplies it without a staging pass. */
void sgemm_mixed(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int a_bf16,
                 int64_t lda, const void *B, int b_bf16, int64_t ldb, float beta, float *C, int64_t ldc);
/* X (rows x cols, leading dimension ld) rounded to bf16, packed (leading dimension cols), in the
 * calling thread's staging buffer for A operands: for an fp32 operand that several products read
 * (sgemm_mixed with a_bf16 = 1), rounded once. Valid until the thread's next product stages an A
 * operand; only while the precision is GEMM_BF16. */
const uint16_t *gemm_stage_a(const float *X, int64_t rows, int64_t cols, int64_t ld);
/* The same, always fp32: for the products that are part of a loss or a quantizer. */
void sgemm_fp32(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* The bf16 kernel itself on operands already in bf16 (bit patterns): `koe bench`'s peak. */
void bgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t *A, int64_t lda,
           const uint16_t *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* A bf16 copy of parts of one region of fp32 memory: bf16[i] = bf16_from_f32(f32[i]) for the offsets i
 * in nr ranges [ranges[2j], ranges[2j+1]) (ascending, disjoint; borrowed), kept so by its owner (the
 * trainer: the parameters that GEMMs read as they are stored, which AdamW's pass rewrites after each
 * update, core/optim.h; the tensors no GEMM reads are left out, params.h). In bf16 mode sgemm reads an
 * operand lying wholly inside one range from the copy, at the same offset and leading dimension,
 * instead of rounding it into a staging buffer: the weights are rounded once per update, not at every
 * product. One region per process, set from serial code; (NULL, NULL, NULL, 0) removes it. */
void gemm_set_bf16_copy(const float *f32, const uint16_t *bf16, const int64_t *ranges, int nr);
/* dst[i] = bf16 of src[i] for the i in [lo, hi) inside the ranges (as gemm_set_bf16_copy's): a bf16
 * copy's refresh, by non-temporal stores where the CPU has AVX512_BF16 (the copy is read again only
 * by the next step's products). From serial code (then on all threads, fenced before it returns) or
 * inside a parallel region: then on the calling thread, which must call bf16_stream_fence before the
 * region's end (or anything else that hands dst to another thread). */
void bf16_from_f32_ranges(uint16_t *dst, const float *src, const int64_t *ranges, int nr, int64_t lo, int64_t hi);
/* Orders the calling thread's non-temporal stores before its later stores (sfence): what a thread
 * that called bf16_from_f32_ranges inside a parallel region does before the region ends. */
void bf16_stream_fence(void);

/* Set the precision of sgemm (from serial code, between steps); returns the previous one. */
GemmPrecision gemm_set_precision(GemmPrecision p);
GemmPrecision gemm_precision(void);

/* 1 when oneDNN's effective ISA has bf16 dot products (avx512_core_bf16, or AMX which includes
 * it). oneDNN's ONEDNN_MAX_CPU_ISA caps that ISA (e.g. ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI makes a
 * bf16 CPU look like one without: the tests use it to reach the refusal). */
int gemm_bf16_supported(void);
/* One line naming the kernels: oneDNN's version and effective ISA, whether the CPU reports
 * avx512_bf16 and AMX, and the fp32->bf16 conversion in use. */
void gemm_describe(char *buf, size_t n);

/* fp32 -> bf16, round to nearest even, as VCVTNEPS2BF16 does it: NaN stays NaN (quiet), and
 * subnormal inputs become a zero of their sign. AVX512_BF16 where the CPU has it (checked once, at
 * run time), else the scalar loop; both give the same bits (tests/unit/test_gemm.c). Large arrays are
 * split over the OpenMP threads when called from serial code. */
void bf16_from_f32(uint16_t *dst, const float *src, int64_t n);
void bf16_from_f32_scalar(uint16_t *dst, const float *src, int64_t n);
/* x rounded to bf16 in place (each value replaced by its bf16 value, widened back) and the bf16 bits
 * in dst: for an fp32 result that is kept in bf16 and also read at once by fp32 code, which must see
 * the values that are kept. */
void bf16_round_f32(uint16_t *dst, float *x, int64_t n);
/* bf16 -> fp32, exact (inline: the bf16-input loops of layers.c vectorise it). */
static inline float bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)h << 16};
    return v.f;
}

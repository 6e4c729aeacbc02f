/* gemm.c — sgemm in fp32 or bf16 over oneDNN, and the fp32 -> bf16 conversion (gemm.h). Must not
 * hold any state but the process's precision, the registered bf16 copy and each thread's staging
 * buffers. */
#include "gemm.h"

#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Exported by libdnnl 2.6 beside dnnl_sgemm, with the same row-major convention, but not declared
 * in its dnnl.h (later oneDNN releases declare it); bf16 operands are passed as their bit patterns. */
dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, dnnl_dim_t N, dnnl_dim_t K, float alpha,
                                    const uint16_t *A, dnnl_dim_t lda, const uint16_t *B, dnnl_dim_t ldb, float beta,
                                    float *C, dnnl_dim_t ldc);

static GemmPrecision gemm_mode = GEMM_FP32;

GemmPrecision gemm_set_precision(GemmPrecision p) {
    GemmPrecision old = gemm_mode;
    gemm_mode = p;
    return old;
}

GemmPrecision gemm_precision(void) { return gemm_mode; }

static void gemm_check(dnnl_status_t st, const char *what, char ta, char tb, int64_t M, int64_t N, int64_t K,
                       int64_t lda, int64_t ldb, int64_t ldc) {
    if (st != dnnl_success)
        koe_fatal(KOE_EXIT_INTERNAL,
                  "internal error: oneDNN %s %c%c M=%lld N=%lld K=%lld lda=%lld ldb=%lld ldc=%lld: status %d", what,
                  ta, tb, (long long)M, (long long)N, (long long)K, (long long)lda, (long long)ldb, (long long)ldc,
                  (int)st);
}

/* ---- fp32: a long, narrow B transposed ------------------------------------------------------------ */

/* oneDNN 2.6's sgemm runs an 'N', 'T' product whose B is long and narrow (K >= 2N) below the rate of
 * the same product with B stored transposed ('N', 'N'): Base's fc2 (398 x 768 x 3072) at 216-241
 * GFLOP/s against 298-350, the positional conv's group products (400 x 48 x 6144, one thread) at 71
 * against 93. Such a B is therefore transposed into the calling thread's staging buffer and the product
 * runs 'N', 'N'. With the copy counted (a standalone program, not kept: B from memory, 12 different
 * weights in turn, medians of 9, 2 threads, Zen 5): fc2 1.32-1.33x as fast, (398, 1024 -> 512)
 * 1.18-1.20x, (398, 1536 -> 768) 1.08-1.09x, (398, 768 -> 384) 1.06x, the positional conv's groups
 * 1.30x; B smaller than SGEMM_TRANSPOSE_MIN values gains nothing (hubert's logits, 227 x 100 x 256:
 * 0.95-0.97x), and with K < 2N the 'N', 'T' kernel is as fast or faster (fc1, 398 x 3072 x 768:
 * 0.87-0.90x with the copy). In the kernels (tests/bench/bench_layers, fp32, 2 threads, before and after
 * in turn): linear_ffn2's forward 1.06-1.21x, conv_positional's 1.14-1.34x. */
#define SGEMM_TRANSPOSE_MIN ((int64_t)1 << 18)

/* Per thread, the staging buffers: a bf16 A and a bf16 B (stage_bf16), an fp32 transposed B
 * (stage_transposed); grown, never shrunk. */
enum { STAGE_A, STAGE_B, STAGE_BT, STAGE_N };
static _Thread_local struct {
    void *p;
    size_t cap;
} stage[STAGE_N];

/* the calling thread's staging buffer `slot`, at least `bytes` long (contents not kept) */
static void *stage_buffer(int slot, size_t bytes) {
    if (bytes > stage[slot].cap) {
        free(stage[slot].p);
        stage[slot].p = koe_malloc(bytes);
        stage[slot].cap = bytes;
    }
    return stage[slot].p;
}

/* d (8 x 8, leading dimension ldd) = the transpose of the 8 x 8 block at x (leading dimension ld),
 * written out in full: as loops over arrays of registers, -O2 kept them on the stack (2x slower) */
__attribute__((target("avx"), always_inline)) static inline void transpose8_avx(float *d, int64_t ldd, const float *x,
                                                                              int64_t ld) {
    const __m256 r0 = _mm256_loadu_ps(x), r1 = _mm256_loadu_ps(x + ld), r2 = _mm256_loadu_ps(x + 2 * ld),
                 r3 = _mm256_loadu_ps(x + 3 * ld), r4 = _mm256_loadu_ps(x + 4 * ld), r5 = _mm256_loadu_ps(x + 5 * ld),
                 r6 = _mm256_loadu_ps(x + 6 * ld), r7 = _mm256_loadu_ps(x + 7 * ld);
    /* pairs of rows interleaved, then within each 128-bit lane element j of rows 0-3 and of rows 4-7 */
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
                 t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* rows [r0, r1) x columns [c0, c1) of x, both multiples of 8 long: 8 x 8 blocks */
__attribute__((target("avx"))) static void transpose_blocks_avx(float *d, int64_t ldd, const float *x, int64_t ld,
                                                                  int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    for (int64_t r = r0; r < r1; r += 8)
        for (int64_t c = c0; c < c1; c += 8) transpose8_avx(d + c * ldd + r, ldd, x + r * ld + c, ld);
}

static void transpose_scalar(float *d, int64_t ldd, const float *x, int64_t ld, int64_t r0, int64_t r1, int64_t c0,
                             int64_t c1) {
    for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++) d[c * ldd + r] = x[r * ld + c];
}

static int cpu_has_avx(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx");
}

/* X (rows x cols, leading dimension ld) transposed into the thread's staging buffer (cols x rows,
 * leading dimension rows), in tiles of 64 x 64 (spread over the threads outside a parallel region) */
static const float *stage_transposed(const float *X, int64_t rows, int64_t cols, int64_t ld) {
    static int avx = -1; /* the same answer from every thread: a benign race */
    if (avx < 0) avx = cpu_has_avx();
    float *d = stage_buffer(STAGE_BT, (size_t)(rows * cols) * sizeof(float));
    enum { TB = 64 };
    const int64_t nr = (rows + TB - 1) / TB, nc = (cols + TB - 1) / TB;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int64_t t = 0; t < nr * nc; t++) {
        const int64_t r0 = t / nc * TB, c0 = t % nc * TB;
        const int64_t r1 = r0 + TB < rows ? r0 + TB : rows, c1 = c0 + TB < cols ? c0 + TB : cols;
        /* whole 8 x 8 blocks by AVX where there is AVX, the rest (all of it without) one value at a time */
        const int64_t r8 = avx ? r0 + (r1 - r0) / 8 * 8 : r0, c8 = avx ? c0 + (c1 - c0) / 8 * 8 : c0;
        if (r8 > r0 && c8 > c0) /* never entered without AVX: its code may not run there at all */
            transpose_blocks_avx(d, rows, X, ld, r0, r8, c0, c8);
        transpose_scalar(d, rows, X, ld, r0, r8, c8, c1);
        transpose_scalar(d, rows, X, ld, r8, r1, c0, c1);
    }
    return d;
}

void sgemm_fp32(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (ta == 'N' && tb == 'T' && M > 0 && K >= 2 * N && N * K >= SGEMM_TRANSPOSE_MIN) {
        B = stage_transposed(B, N, K, ldb);
        tb = 'N', ldb = N;
    }
    gemm_check(dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), "sgemm", ta, tb, M, N, K, lda, ldb,
               ldc);
}

void bgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t *A, int64_t lda,
           const uint16_t *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm_check(dnnl_gemm_bf16bf16f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), "gemm_bf16bf16f32", ta,
               tb, M, N, K, lda, ldb, ldc);
}

/* ---- fp32 -> bf16 --------------------------------------------------------------------------------- */

static inline uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN: keep it, quiet */
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000);         /* zero, subnormal: signed 0 */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                  /* nearest, ties to even */
}

void bf16_from_f32_scalar(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_round(src[i]);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void bf16_from_f32_avx512(uint16_t *dst,
                                                                                                const float *src,
                                                                                                int64_t n) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512((void *)(dst + i), (__m512i)v);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16((void *)(dst + i), m, (__m256i)v);
    }
}

static int cpu_has_avx512_bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16");
}

/* bf16_from_f32_avx512 with non-temporal stores from dst's first 64-byte boundary on: for the
 * parameters' bf16 copy (bf16_from_f32_ranges), which the next step's products read long after it
 * has left the caches (171 MB at Base), so that writing it skips reading each of its lines first.
 * AdamW's pass at Base in a bf16 run, 2 threads, alternate steps of one run: 80.0 -> 74.0 ms (medians
 * of 16 and 15). Staging buffers (stage_bf16), read by the product right after, keep ordinary stores. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void bf16_stream_avx512(uint16_t *dst,
                                                                                              const float *src,
                                                                                              int64_t n) {
    int64_t i = (int64_t)((64 - ((uintptr_t)dst & 63)) & 63) / (int64_t)sizeof *dst;
    if (i > n) i = n;
    bf16_from_f32_avx512(dst, src, i);
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_stream_si512((void *)(dst + i), (__m512i)v);
    }
    bf16_from_f32_avx512(dst + i, src + i, n - i);
}

/* on the calling thread; stream: non-temporal stores (bf16_stream_avx512) where the CPU has AVX512_BF16 */
static void bf16_from_f32_serial(uint16_t *dst, const float *src, int64_t n, int stream) {
    static int vec = -1; /* the same answer from every thread: a benign race */
    if (vec < 0) vec = cpu_has_avx512_bf16();
    if (vec && stream)
        bf16_stream_avx512(dst, src, n);
    else if (vec)
        bf16_from_f32_avx512(dst, src, n);
    else
        bf16_from_f32_scalar(dst, src, n);
}

/* Conversions below this many elements run on the calling thread alone: waking the OpenMP team costs
 * about what it saves at 64 Ki elements (3.7 us either way, 2 threads); at 300 Ki the split takes 12 us
 * instead of 21 (a Base activation, 400 x 768). */
#define BF16_PARALLEL_MIN ((int64_t)1 << 16)

void bf16_stream_fence(void) { _mm_sfence(); }

/* bf16_from_f32, by non-temporal stores when stream is set: fenced here, or by the caller inside a
 * parallel region */
static void bf16_convert(uint16_t *dst, const float *src, int64_t n, int stream) {
    const int inside = omp_in_parallel();
    if (n < BF16_PARALLEL_MIN || inside) { /* no OpenMP call at all: im2col converts short runs */
        bf16_from_f32_serial(dst, src, n, stream);
        if (stream && !inside) bf16_stream_fence();
        return;
    }
    const int64_t chunk = 1 << 16;
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < n; i += chunk)
            bf16_from_f32_serial(dst + i, src + i, n - i < chunk ? n - i : chunk, stream);
        if (stream) bf16_stream_fence(); /* this thread's stores, before the region's end hands them on */
    }
}

void bf16_from_f32(uint16_t *dst, const float *src, int64_t n) { bf16_convert(dst, src, n, 0); }

void bf16_round_f32(uint16_t *dst, float *x, int64_t n) {
    const int64_t chunk = 1 << 16;
#pragma omp parallel for schedule(static) if (n >= BF16_PARALLEL_MIN && !omp_in_parallel())
    for (int64_t i = 0; i < n; i += chunk) {
        const int64_t len = n - i < chunk ? n - i : chunk;
        bf16_from_f32_serial(dst + i, x + i, len, 0);
        for (int64_t j = i; j < i + len; j++) x[j] = bf16_to_f32(dst[j]);
    }
}

/* ---- sgemm ------------------------------------------------------------------------------------------ */

/* The stored matrix of op(X) (rows x cols, leading dimension ld) in bf16, packed (leading dimension
 * cols), in staging buffer `slot`. */
static const uint16_t *stage_bf16(int slot, const float *X, int64_t rows, int64_t cols, int64_t ld) {
    const int64_t need = rows * cols;
    uint16_t *d = stage_buffer(slot, (size_t)need * sizeof(uint16_t));
    if (cols == ld) {
        bf16_from_f32(d, X, need);
    } else {
#pragma omp parallel for schedule(static) if (need >= BF16_PARALLEL_MIN && !omp_in_parallel())
        for (int64_t r = 0; r < rows; r++) bf16_from_f32_serial(d + r * cols, X + r * ld, cols, 0);
    }
    return d;
}

/* The region with a bf16 copy (gemm_set_bf16_copy); nr = 0: none. */
static struct {
    const float *f32;
    const uint16_t *bf16;
    const int64_t *r;
    int nr;
} copy;

void gemm_set_bf16_copy(const float *f32, const uint16_t *bf16, const int64_t *ranges, int nr) {
    KOE_ASSERT(nr >= 0 && (nr == 0 || (f32 && bf16 && ranges)));
    for (int j = 0; j < nr; j++) KOE_ASSERT(ranges[2 * j] <= ranges[2 * j + 1] && (!j || ranges[2 * j - 1] <= ranges[2 * j]));
    copy.f32 = f32, copy.bf16 = bf16, copy.r = ranges, copy.nr = nr;
}

void bf16_from_f32_ranges(uint16_t *dst, const float *src, const int64_t *ranges, int nr, int64_t lo, int64_t hi) {
    for (int j = 0; j < nr; j++) {
        const int64_t a = ranges[2 * j] > lo ? ranges[2 * j] : lo, b = ranges[2 * j + 1] < hi ? ranges[2 * j + 1] : hi;
        if (a < b) bf16_convert(dst + a, src + a, b - a, 1);
    }
}

/* op(X)'s stored matrix (rows x cols, leading dimension ld) in bf16: from the copy when it lies in the
 * copied region (*ld_out = ld), else rounded into staging buffer `slot` (*ld_out = cols). */
static const uint16_t *operand_bf16(int slot, const float *X, int64_t rows, int64_t cols, int64_t ld, int64_t *ld_out) {
    const uintptr_t x = (uintptr_t)X, lo = (uintptr_t)copy.f32;
    if (copy.nr && x >= lo) {
        const uint64_t i = (x - lo) / sizeof(float), end = i + (uint64_t)((rows - 1) * ld + cols);
        for (int j = 0; j < copy.nr; j++)
            if (i >= (uint64_t)copy.r[2 * j] && end <= (uint64_t)copy.r[2 * j + 1]) {
                *ld_out = ld;
                return copy.bf16 + i;
            }
    }
    *ld_out = cols;
    return stage_bf16(slot, X, rows, cols, ld);
}

const uint16_t *gemm_stage_a(const float *X, int64_t rows, int64_t cols, int64_t ld) {
    KOE_ASSERT(gemm_mode == GEMM_BF16);
    return stage_bf16(STAGE_A, X, rows, cols, ld);
}

void sgemm_mixed(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int a_bf16,
                 int64_t lda, const void *B, int b_bf16, int64_t ldb, float beta, float *C, int64_t ldc) {
    KOE_ASSERT(gemm_mode == GEMM_BF16 || (!a_bf16 && !b_bf16));
    if (gemm_mode == GEMM_FP32 || M == 0 || N == 0 || K == 0) { /* an empty product reads no operand */
        sgemm_fp32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* stored shapes: A is (M, K) for 'N', (K, M) for 'T'; B is (K, N) for 'N', (N, K) for 'T' */
    const int64_t ar = ta == 'N' ? M : K, ac = ta == 'N' ? K : M;
    const int64_t br = tb == 'N' ? K : N, bc = tb == 'N' ? N : K;
    int64_t la = lda, lb = ldb;
    const uint16_t *a = a_bf16 ? A : operand_bf16(STAGE_A, A, ar, ac, lda, &la);
    const uint16_t *b = b_bf16 ? B : operand_bf16(STAGE_B, B, br, bc, ldb, &lb);
    bgemm(ta, tb, M, N, K, alpha, a, la, b, lb, beta, C, ldc);
}

void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
           const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    sgemm_mixed(ta, tb, M, N, K, alpha, A, 0, lda, B, 0, ldb, beta, C, ldc);
}

/* ---- what runs -------------------------------------------------------------------------------------- */

int gemm_bf16_supported(void) {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) == (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

void gemm_describe(char *buf, size_t n) {
    const dnnl_version_t *v = dnnl_version();
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const int amx = ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_amx) == (unsigned)dnnl_cpu_isa_avx512_core_amx;
    snprintf(buf, n,
             "gemm: oneDNN %d.%d.%d, effective ISA %s (bf16 dot products: %s, AMX: %s; CPU avx512_bf16: %s); "
             "precision %s%s",
             v->major, v->minor, v->patch, isa_name(isa), gemm_bf16_supported() ? "yes" : "no", amx ? "yes" : "no",
             cpu_has_avx512_bf16() ? "yes" : "no", gemm_mode == GEMM_BF16 ? "bf16" : "fp32",
             gemm_mode == GEMM_BF16
                 ? (cpu_has_avx512_bf16()
                        ? " (dnnl_gemm_bf16bf16f32, fp32 accumulation; fp32->bf16 by AVX512_BF16 vcvtne2ps2bf16)"
                        : " (dnnl_gemm_bf16bf16f32, fp32 accumulation; fp32->bf16 by the scalar loop)")
                 : " (dnnl_sgemm)");
}

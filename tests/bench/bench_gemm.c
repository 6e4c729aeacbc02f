/* bench_gemm.c — the transformer's weight products at HuBERT Base sizes (M = 400 rows: batch 2 x 4 s)
 * through koe's GEMM calls, fp32 (sgemm_fp32) and bf16 (bgemm on a bf16 copy of the weights, as a
 * bf16 step reads them), each over --weights different weights in turn ("cold": every call reads its
 * weight from memory, as a step's call does) and over one weight --weights times ("warm"). Prints
 * GFLOP/s per product (median of --reps sweeps) and bf16 / fp32 for each. A measurement, not a test.
 *   bench_gemm [--reps N] [--weights W]
 * Threads from OMP_NUM_THREADS. Forward: Y (M, OC) = X (M, C) W^T, W (OC, C); input gradient:
 * dX (M, C) = dY (M, OC) W. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/common.h"
#include "../../core/gemm.h"
#include "../../core/rng.h"

static int reps = 7, nw = 12;

/* GFLOP/s of one sweep of nw products (median over reps); bf16: the operands' bf16 copies */
static double sweep(int bf16, int fwd, int cold, int64_t M, int C, int OC, float **w32, uint16_t **w16,
                    const float *x32, const uint16_t *x16, float *y) {
    double t[64];
    const int64_t K = fwd ? C : OC, N = fwd ? OC : C;
    for (int r = 0; r <= reps; r++) { /* sweep 0 warms threads and kernels */
        const double t0 = koe_now();
        for (int i = 0; i < nw; i++) {
            const int j = cold ? i : 0;
            if (bf16)
                bgemm('N', fwd ? 'T' : 'N', M, N, K, 1.0f, x16, K, w16[j], C, 0.0f, y, N);
            else
                sgemm_fp32('N', fwd ? 'T' : 'N', M, N, K, 1.0f, x32, K, w32[j], C, 0.0f, y, N);
        }
        if (r) t[r - 1] = koe_now() - t0;
    }
    return 2e-9 * (double)M * (double)N * (double)K * nw / koe_median(t, reps);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc)
            nw = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_gemm [--reps N (1..64, default 7)] [--weights W (1..64, default 12)]\n");
            return 1;
        }
    }
    if (reps < 1 || reps > 64) koe_fatal(KOE_EXIT_USAGE, "bench_gemm: --reps must be 1..64, got %d", reps);
    if (nw < 1 || nw > 64) koe_fatal(KOE_EXIT_USAGE, "bench_gemm: --weights must be 1..64, got %d", nw);
    const int bf = gemm_bf16_supported();
    if (!bf) printf("(no bf16 GEMM on this CPU: fp32 only)\n");
    const int64_t M = 400;
    const struct {
        const char *name;
        int C, OC;
    } lin[] = {{"qkv", 768, 2304}, {"out_proj", 768, 768}, {"ffn1", 768, 3072}, {"ffn2", 3072, 768}};
    KoeRng r = koe_rng(1, 0, 0, KOE_RNG_INIT);
    printf("%-22s %9s %9s %9s %9s %9s %9s\n", "product (GFLOP/s)", "fp32", "fp32", "bf16", "bf16", "bf16/fp32",
           "bf16/fp32");
    printf("%-22s %9s %9s %9s %9s %9s %9s\n", "", "cold", "warm", "cold", "warm", "cold", "warm");
    for (size_t l = 0; l < sizeof lin / sizeof *lin; l++) {
        const int C = lin[l].C, OC = lin[l].OC, big = C > OC ? C : OC;
        float **w32 = koe_malloc((size_t)nw * sizeof *w32), *x = koe_malloc((size_t)(M * big) * sizeof *x);
        uint16_t **w16 = koe_malloc((size_t)nw * sizeof *w16), *x16 = koe_malloc((size_t)(M * big) * sizeof *x16);
        float *y = koe_malloc((size_t)(M * big) * sizeof *y);
        for (int64_t i = 0; i < M * big; i++) x[i] = (float)koe_rng_normal(&r);
        bf16_from_f32(x16, x, M * big);
        for (int j = 0; j < nw; j++) {
            w32[j] = koe_malloc((size_t)OC * C * sizeof **w32);
            w16[j] = koe_malloc((size_t)OC * C * sizeof **w16);
            for (int64_t i = 0; i < (int64_t)OC * C; i++) w32[j][i] = 0.03f * (float)koe_rng_normal(&r);
            bf16_from_f32(w16[j], w32[j], (int64_t)OC * C);
        }
        for (int fwd = 1; fwd >= 0; fwd--) {
            double g[4];
            for (int k = 0; k < 4; k++)
                g[k] = k < 2 || bf ? sweep(k >= 2, fwd, !(k & 1), M, C, OC, w32, w16, x, x16, y) : 0.0;
            char name[40];
            snprintf(name, sizeof name, "%s %s", lin[l].name, fwd ? "forward" : "input_grad");
            if (bf)
                printf("%-22s %9.1f %9.1f %9.1f %9.1f %9.2f %9.2f\n", name, g[0], g[1], g[2], g[3], g[2] / g[0],
                       g[3] / g[1]);
            else
                printf("%-22s %9.1f %9.1f %9s %9s %9s %9s\n", name, g[0], g[1], "-", "-", "-", "-");
            fflush(stdout);
        }
        for (int j = 0; j < nw; j++) free(w32[j]), free(w16[j]);
        free(w32), free(w16), free(x), free(x16), free(y);
    }
    return 0;
}

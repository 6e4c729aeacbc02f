/* bench_attention.c — speed of attention_forward/attention_backward (core/attention.c) at speech
 * sizes, as GFLOP/s next to koe's sgemm (core/gemm.h) measured in the same process (a square GEMM
 * with all the threads: the practical peak for these threads).
 * Usage: bench_attention [--B 4] [--T 750] [--C 768] [--H 12] [--p 0.1] [--pad 0.25] [--repeats 5]
 *   --pad: utterance b of the batch loses pad*b/(B-1) of its frames at the end (a padded batch).
 * Prints one line: fwd_ms=… bwd_ms=… fwd_gflops=… bwd_gflops=… sgemm_gflops=… frac_fwd=… frac_bwd=…
 * FLOPs are those of the GEMMs actually run: keys after an utterance's last frame are skipped, so
 * utterance b counts 4·T·Tk_b·C forward and 8·T·Tk_b·C backward (Tk_b its unpadded length).
 * Medians of the repeats. Not a test: nothing is asserted. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/common.h"
#include "../../core/gemm.h"
#include "../../core/layers.h"

static double sgemm_gflops(int repeats) {
    const int n = 1536;
    float *a = koe_malloc((size_t)n * n * sizeof(float)), *b = koe_malloc((size_t)n * n * sizeof(float));
    float *c = koe_malloc((size_t)n * n * sizeof(float));
    for (int64_t i = 0; i < (int64_t)n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    double t[16];
    for (int r = 0; r <= repeats; r++) {
        double t0 = koe_now();
        sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        if (r > 0) t[r - 1] = koe_now() - t0; /* the first call warms up */
    }
    free(a), free(b), free(c);
    return 2.0 * n * n * (double)n / koe_median(t, repeats) * 1e-9;
}

int main(int argc, char **argv) {
    int B = 4, C = 768, H = 12, repeats = 5;
    int64_t T = 750;
    float p = 0.1f, pad = 0.25f;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--B")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--T")) T = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--C")) C = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--H")) H = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--p")) p = (float)atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--pad")) pad = (float)atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeats")) repeats = atoi(argv[i + 1]);
        else koe_fatal(KOE_EXIT_USAGE, "bench_attention: unknown option %s (see the file header)", argv[i]);
    }
    if (repeats < 1 || repeats > 15) koe_fatal(KOE_EXIT_USAGE, "bench_attention: --repeats must be 1..15");
    int64_t nqkv = (int64_t)B * T * 3 * C, nout = (int64_t)B * T * C, natt = (int64_t)B * H * T * T;
    float *qkv = koe_malloc((size_t)nqkv * sizeof(float)), *dqkv = koe_calloc((size_t)nqkv, sizeof(float));
    float *out = koe_malloc((size_t)nout * sizeof(float)), *dout = koe_malloc((size_t)nout * sizeof(float));
    float *att = koe_malloc((size_t)natt * sizeof(float));
    float *scratch = koe_malloc((size_t)attention_scratch_floats(B, T, C, H) * sizeof(float));
    uint8_t *key_pad = koe_calloc((size_t)(B * T), 1);
    KoeRng r = koe_rng(1, 0, 0, KOE_RNG_INIT);
    for (int64_t i = 0; i < nqkv; i++) qkv[i] = (float)koe_rng_normal(&r);
    for (int64_t i = 0; i < nout; i++) dout[i] = (float)koe_rng_normal(&r);
    double flop_f = 0;
    for (int b = 0; b < B; b++) {
        int64_t Tk = b == 0 ? T : T - (int64_t)(pad * (float)b / (float)(B - 1) * (float)T);
        for (int64_t t = Tk; t < T; t++) key_pad[b * T + t] = 1;
        flop_f += 4.0 * (double)T * (double)Tk * C;
    }
    double flop_b = 2.0 * flop_f;
    AttentionDropout drop = {.p = p, .seed = 1, .step = 0, .layer = 0};
    double tf[16], tb[16];
    for (int k = 0; k <= repeats; k++) {
        double t0 = koe_now();
        attention_forward(out, att, qkv, key_pad, B, T, C, H, &drop, scratch);
        double t1 = koe_now();
        attention_backward(dqkv, dout, qkv, att, key_pad, B, T, C, H, &drop, scratch);
        double t2 = koe_now();
        if (k > 0) tf[k - 1] = t1 - t0, tb[k - 1] = t2 - t1;
    }
    double mf = koe_median(tf, repeats), mb = koe_median(tb, repeats);
    double peak = sgemm_gflops(repeats);
    printf("B=%d T=%lld C=%d H=%d p=%.2f pad=%.2f threads=%d fwd_ms=%.1f bwd_ms=%.1f fwd_gflops=%.1f bwd_gflops=%.1f "
           "sgemm_gflops=%.1f frac_fwd=%.2f frac_bwd=%.2f\n",
           B, (long long)T, C, H, (double)p, (double)pad, omp_get_max_threads(), mf * 1e3, mb * 1e3,
           flop_f / mf * 1e-9, flop_b / mb * 1e-9, peak, flop_f / mf * 1e-9 / peak, flop_b / mb * 1e-9 / peak);
    free(qkv), free(dqkv), free(out), free(dout), free(att), free(scratch), free(key_pad);
    return 0;
}

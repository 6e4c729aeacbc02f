/* bench_conv_dnnl.c — the waveform conv stack (HuBERT Base/tiny, batch 2 x 4 s) through koe's
 * GEMMs (conv1d_forward / conv1d_backward and their bf16 variants) against oneDNN's convolution
 * primitives (1-D, on koe's time-major "nwc" data, weights in whatever layout the primitive picks).
 * The oneDNN side's timed region includes every reorder a conv behind koe's interface would run per
 * call: weights from koe's (OC, C, K) and the weight gradient back, and with --blocked the activations
 * and their gradients from and to nwc (oneDNN then picks their layouts too: nCw16c and the like).
 * Primitives are created once per shape, outside it. A measurement, not a test: per layer and pass
 * (fwd; bwd = data + weights; both) it prints the minimum over --reps runs of wall ms and of process
 * CPU ms, koe then oneDNN then koe / oneDNN (> 1: oneDNN faster), the largest difference of the two
 * results relative to the largest magnitude, and the oneDNN implementations chosen.
 *   bench_conv_dnnl [--reps N] [--bf16] [--blocked]
 * --bf16: as a bf16 run (gemm_set_precision): bf16 input and weights, fp32 output; in the backward
 * bf16 dout (conv1d_backward_bf16, oneDNN's bf16 diff_dst), fp32 weight and input gradients. Layer 0
 * reads the fp32 waveform and its fp32 output gradient in koe, as the model does (its forward rounds
 * the waveform; its weight gradient stays fp32, layers.c), and their bf16 roundings in oneDNN: so the
 * two results differ there by bf16's rounding (about 2e-3), not by a fault. No bias (HuBERT's conv
 * stack has none). Threads from OMP_NUM_THREADS. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#include "../../core/common.h"
#include "../../core/gemm.h"
#include "../../core/layers.h"
#include "../../core/rng.h"

static int reps = 5, bf16 = 0, blocked = 0;
static dnnl_engine_t eng;
static dnnl_stream_t strm;

static void ok(dnnl_status_t st, const char *what) {
    if (st != dnnl_success) koe_fatal(KOE_EXIT_INTERNAL, "oneDNN %s: status %d", what, (int)st);
}

static dnnl_memory_desc_t md3(int64_t a, int64_t b, int64_t c, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
    dnnl_memory_desc_t d;
    dnnl_dims_t dims = {a, b, c};
    ok(dnnl_memory_desc_init_by_tag(&d, 3, dims, dt, tag), "memory_desc_init_by_tag");
    return d;
}

static dnnl_memory_t mem(const dnnl_memory_desc_t *d, void *p) {
    dnnl_memory_t m;
    ok(dnnl_memory_create(&m, d, eng, p ? p : DNNL_MEMORY_ALLOCATE), "memory_create");
    return m;
}

static dnnl_primitive_t reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to) {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    ok(dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, NULL), "reorder_pd");
    ok(dnnl_primitive_create(&p, pd), "reorder");
    dnnl_primitive_desc_destroy(pd);
    return p;
}

static void run(dnnl_primitive_t p, int n, const dnnl_exec_arg_t *args) {
    ok(dnnl_primitive_execute(p, strm, n, args), "execute");
    ok(dnnl_stream_wait(strm), "stream_wait");
}

/* user's values in the layout `want`: user itself when the layouts agree, otherwise a memory of its
 * own and the reorder between the two (from user when in, to user when not), run in the timed
 * region: a conv behind koe's interface would pay for it on every call. */
typedef struct {
    dnnl_memory_t m;
    dnnl_primitive_t r; /* NULL: m is user */
    dnnl_memory_t user;
    int in;
} Staged;

static Staged staged(const dnnl_memory_desc_t *want, dnnl_memory_t user, int in) {
    const dnnl_memory_desc_t *have;
    ok(dnnl_memory_get_memory_desc(user, &have), "get_memory_desc");
    Staged s = {user, NULL, user, in};
    if (dnnl_memory_desc_equal(want, have)) return s;
    s.m = mem(want, NULL);
    s.r = in ? reorder(have, want) : reorder(want, have);
    return s;
}

static void stage_run(const Staged *s) {
    if (s->r)
        run(s->r, 2,
            (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, s->in ? s->user : s->m}, {DNNL_ARG_TO, s->in ? s->m : s->user}});
}

static void stage_free(Staged *s) {
    if (!s->r) return;
    dnnl_primitive_destroy(s->r);
    dnnl_memory_destroy(s->m);
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static const char *impl(const_dnnl_primitive_desc_t pd) {
    const char *s = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
    return s;
}

static float *randn(int64_t n, KoeRng *r) {
    float *x = koe_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = (float)koe_rng_normal(r);
    return x;
}

static uint16_t *to_bf16(const float *x, int64_t n) {
    uint16_t *h = koe_malloc((size_t)n * sizeof(uint16_t));
    bf16_from_f32_scalar(h, x, n);
    return h;
}

/* max |a - b| / max |a| */
static double reldiff(const float *a, const float *b, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)a[i]));
    }
    return m > 0 ? d / m : d;
}

/* one pass: minimum wall ms (koe, oneDNN, ratio), minimum process CPU ms (the same), the results'
 * relative difference (diff < 0: none) and oneDNN's implementation */
static void line(const char *name, const char *pass, double wk, double wd, double ck, double cd, double diff,
                 const char *im) {
    printf("%-15s %-4s wall %8.2f %8.2f %5.2f  cpu %8.2f %8.2f %5.2f", name, pass, 1e3 * wk, 1e3 * wd, wk / wd,
           1e3 * ck, 1e3 * cd, ck / cd);
    if (diff >= 0) printf("  reldiff %.1e  %s", diff, im);
    printf("\n");
    fflush(stdout);
}

static void bench_layer(const char *name, int B, int64_t Ti, int C, int OC, int K, int S, int need_dinp, KoeRng *r) {
    const int64_t To = conv1d_out_len(Ti, K, S, 0), nx = B * Ti * C, nw = (int64_t)OC * C * K, ny = B * To * OC;
    float *x = randn(nx, r), *w = randn(nw, r), *dy = randn(ny, r);
    uint16_t *xh = to_bf16(x, nx), *dyh = to_bf16(dy, ny);
    float *yk = koe_malloc((size_t)ny * sizeof(float)), *yd = koe_malloc((size_t)ny * sizeof(float));
    float *dxk = koe_calloc((size_t)nx, sizeof(float)), *dxd = koe_calloc((size_t)nx, sizeof(float));
    float *dwk = koe_calloc((size_t)nw, sizeof(float)), *dwd = koe_calloc((size_t)nw, sizeof(float));
    float *scratch = koe_malloc((size_t)conv1d_scratch_floats(B, Ti, C, OC, K, S, 0, 1) * sizeof(float));

    /* oneDNN: the same convolution; src, dst, ddst, dsrc in the primitives' layouts (nwc unless
     * --blocked), *_u the same in koe's */
    const dnnl_data_type_t lo = bf16 ? dnnl_bf16 : dnnl_f32;
    const dnnl_format_tag_t act = blocked ? dnnl_format_tag_any : dnnl_nwc;
    dnnl_memory_desc_t src = md3(B, C, Ti, lo, act), dst = md3(B, OC, To, dnnl_f32, act);
    dnnl_memory_desc_t ddst = md3(B, OC, To, lo, act), dsrc = md3(B, C, Ti, dnnl_f32, act);
    dnnl_memory_desc_t src_u = md3(B, C, Ti, lo, dnnl_nwc), dst_u = md3(B, OC, To, dnnl_f32, dnnl_nwc);
    dnnl_memory_desc_t ddst_u = md3(B, OC, To, lo, dnnl_nwc), dsrc_u = md3(B, C, Ti, dnnl_f32, dnnl_nwc);
    dnnl_memory_desc_t wany = md3(OC, C, K, lo, dnnl_format_tag_any), wuser = md3(OC, C, K, dnnl_f32, dnnl_oiw);
    dnnl_memory_desc_t dwany = md3(OC, C, K, dnnl_f32, dnnl_format_tag_any);
    dnnl_dims_t st = {S}, pad = {0};
    dnnl_convolution_desc_t fd, bdd, bwd;
    ok(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &src, &wany, NULL, &dst,
                                          st, pad, pad),
       "fwd desc");
    ok(dnnl_convolution_backward_data_desc_init(&bdd, dnnl_convolution_direct, &dsrc, &wany, &ddst, st, pad, pad),
       "bwd data desc");
    ok(dnnl_convolution_backward_weights_desc_init(&bwd, dnnl_convolution_direct, &src, &dwany, NULL, &ddst, st, pad,
                                                   pad),
       "bwd weights desc");
    dnnl_primitive_desc_t fpd, bdpd = NULL, bwpd;
    ok(dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL), "fwd pd");
    if (need_dinp) ok(dnnl_primitive_desc_create(&bdpd, &bdd, NULL, eng, fpd), "bwd data pd");
    ok(dnnl_primitive_desc_create(&bwpd, &bwd, NULL, eng, fpd), "bwd weights pd");
    const dnnl_memory_desc_t *fw = dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *bw = need_dinp ? dnnl_primitive_desc_query_md(bdpd, dnnl_query_weights_md, 0) : NULL;
    const dnnl_memory_desc_t *dw = dnnl_primitive_desc_query_md(bwpd, dnnl_query_diff_weights_md, 0);
    dnnl_primitive_t fp, bdp = NULL, bwp, rfw, rbw = NULL, rdw;
    ok(dnnl_primitive_create(&fp, fpd), "fwd");
    if (need_dinp) ok(dnnl_primitive_create(&bdp, bdpd), "bwd data");
    ok(dnnl_primitive_create(&bwp, bwpd), "bwd weights");
    rfw = reorder(&wuser, fw);
    if (need_dinp) rbw = reorder(&wuser, bw);
    rdw = reorder(dw, &wuser);
    dnnl_memory_t u_src = mem(&src_u, bf16 ? (void *)xh : x), u_dst = mem(&dst_u, yd);
    dnnl_memory_t u_ddst = mem(&ddst_u, bf16 ? (void *)dyh : dy), u_dsrc = mem(&dsrc_u, dxd);
    dnnl_memory_t m_w = mem(&wuser, w), m_dwu = mem(&wuser, dwd);
    /* each primitive's own layouts (all nwc unless --blocked) */
    Staged g_src = staged(dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0), u_src, 1);
    Staged g_dst = staged(dnnl_primitive_desc_query_md(fpd, dnnl_query_dst_md, 0), u_dst, 0);
    Staged g_wsrc = staged(dnnl_primitive_desc_query_md(bwpd, dnnl_query_src_md, 0), u_src, 1);
    Staged g_ddst = {0}, g_dsrc = {0}, g_wddst;
    if (need_dinp) {
        g_ddst = staged(dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_dst_md, 0), u_ddst, 1);
        g_dsrc = staged(dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_src_md, 0), u_dsrc, 0);
    }
    /* one backward call reorders dout once when its two primitives want the same layout (the
     * forward's reordered input does not survive to the backward: koe's scratch need not) */
    const dnnl_memory_desc_t *wddst = dnnl_primitive_desc_query_md(bwpd, dnnl_query_diff_dst_md, 0), *have = NULL;
    if (g_ddst.r) ok(dnnl_memory_get_memory_desc(g_ddst.m, &have), "get_memory_desc");
    if (have && dnnl_memory_desc_equal(wddst, have))
        g_wddst = (Staged){g_ddst.m, NULL, u_ddst, 1};
    else
        g_wddst = staged(wddst, u_ddst, 1);
    dnnl_memory_t m_fw = mem(fw, NULL), m_bw = need_dinp ? mem(bw, NULL) : NULL, m_dw = mem(dw, NULL);

    /* minimum wall and process CPU seconds: [koe, onednn][fwd, bwd data + weights, both] */
    double wall[2][3], cpu[2][3];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) wall[i][j] = cpu[i][j] = 1e30;
    GemmPrecision old = gemm_set_precision(bf16 ? GEMM_BF16 : GEMM_FP32);
    for (int rep = 0; rep < reps; rep++) {
        double tw[2][3], tc[2][3];
        memset(dxk, 0, (size_t)nx * sizeof(float));
        memset(dwk, 0, (size_t)nw * sizeof(float));
        tw[0][0] = koe_now(), tc[0][0] = cpu_now();
        if (bf16 && C > 1)
            conv1d_forward_bf16in(yk, xh, w, NULL, B, Ti, C, OC, K, S, 0, 1, scratch);
        else
            conv1d_forward(yk, x, w, NULL, B, Ti, C, OC, K, S, 0, 1, scratch);
        tw[0][1] = koe_now(), tc[0][1] = cpu_now();
        if (bf16 && C > 1)
            conv1d_backward_bf16(need_dinp ? dxk : NULL, dwk, NULL, dyh, xh, w, B, Ti, C, OC, K, S, 0, 1, scratch);
        else
            conv1d_backward(need_dinp ? dxk : NULL, dwk, NULL, dy, x, w, B, Ti, C, OC, K, S, 0, 1, scratch);
        tw[0][2] = koe_now(), tc[0][2] = cpu_now();

        tw[1][0] = koe_now(), tc[1][0] = cpu_now();
        run(rfw, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, m_w}, {DNNL_ARG_TO, m_fw}});
        stage_run(&g_src);
        run(fp, 3, (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, g_src.m}, {DNNL_ARG_WEIGHTS, m_fw}, {DNNL_ARG_DST, g_dst.m}});
        stage_run(&g_dst);
        tw[1][1] = koe_now(), tc[1][1] = cpu_now();
        if (need_dinp) {
            run(rbw, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, m_w}, {DNNL_ARG_TO, m_bw}});
            stage_run(&g_ddst);
            run(bdp, 3,
                (dnnl_exec_arg_t[]){
                    {DNNL_ARG_DIFF_DST, g_ddst.m}, {DNNL_ARG_WEIGHTS, m_bw}, {DNNL_ARG_DIFF_SRC, g_dsrc.m}});
            stage_run(&g_dsrc);
        }
        stage_run(&g_wsrc);
        stage_run(&g_wddst);
        run(bwp, 3,
            (dnnl_exec_arg_t[]){
                {DNNL_ARG_SRC, g_wsrc.m}, {DNNL_ARG_DIFF_DST, g_wddst.m}, {DNNL_ARG_DIFF_WEIGHTS, m_dw}});
        run(rdw, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, m_dw}, {DNNL_ARG_TO, m_dwu}});
        tw[1][2] = koe_now(), tc[1][2] = cpu_now();
        for (int i = 0; i < 2; i++) {
            const int from[3] = {0, 1, 0}, to[3] = {1, 2, 2};
            for (int j = 0; j < 3; j++) {
                wall[i][j] = fmin(wall[i][j], tw[i][to[j]] - tw[i][from[j]]);
                cpu[i][j] = fmin(cpu[i][j], tc[i][to[j]] - tc[i][from[j]]);
            }
        }
    }
    gemm_set_precision(old);
    Staged *gs[] = {&g_src, &g_dst, &g_wsrc, &g_wddst, &g_ddst, &g_dsrc};
    for (size_t i = 0; i < sizeof gs / sizeof *gs; i++) stage_free(gs[i]);
    char bimpl[160];
    snprintf(bimpl, sizeof bimpl, "%s / %s", need_dinp ? impl(bdpd) : "-", impl(bwpd));
    const double dd = need_dinp ? reldiff(dxk, dxd, nx) : 0, dwr = reldiff(dwk, dwd, nw);
    line(name, "fwd", wall[0][0], wall[1][0], cpu[0][0], cpu[1][0], reldiff(yk, yd, ny), impl(fpd));
    line(name, "bwd", wall[0][1], wall[1][1], cpu[0][1], cpu[1][1], dd > dwr ? dd : dwr, bimpl);
    line(name, "both", wall[0][2], wall[1][2], cpu[0][2], cpu[1][2], -1, "");

    dnnl_memory_t ms[] = {u_src, u_dst, u_ddst, u_dsrc, m_w, m_dwu, m_fw, m_bw, m_dw};
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
        if (ms[i]) dnnl_memory_destroy(ms[i]);
    dnnl_primitive_t ps[] = {fp, bdp, bwp, rfw, rbw, rdw};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
        if (ps[i]) dnnl_primitive_destroy(ps[i]);
    dnnl_primitive_desc_destroy(fpd);
    if (bdpd) dnnl_primitive_desc_destroy(bdpd);
    dnnl_primitive_desc_destroy(bwpd);
    free(x), free(w), free(dy), free(xh), free(dyh), free(yk), free(yd), free(dxk), free(dxd), free(dwk), free(dwd),
        free(scratch);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bf16"))
            bf16 = 1;
        else if (!strcmp(argv[i], "--blocked"))
            blocked = 1;
        else {
            fprintf(stderr, "usage: bench_conv_dnnl [--reps N (>= 1, default 5)] [--bf16] [--blocked]\n");
            return 1;
        }
    }
    if (reps < 1) koe_fatal(KOE_EXIT_USAGE, "bench_conv_dnnl: --reps must be >= 1, got %d", reps);
    ok(dnnl_engine_create(&eng, dnnl_cpu, 0), "engine_create");
    ok(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags), "stream_create");
    KoeRng r = koe_rng(1, 0, 0, KOE_RNG_INIT);
    const int B = 2;
    int64_t T = 64000; /* 4 s at 16 kHz */
    int K[7] = {10, 3, 3, 3, 3, 2, 2}, St[7] = {5, 2, 2, 2, 2, 2, 2};
    for (int l = 0; l < 7; l++) {
        char name[32];
        snprintf(name, sizeof name, "conv_waveform%d", l);
        bench_layer(name, B, T, l ? 512 : 1, 512, K[l], St[l], l > 0, &r);
        T = conv1d_out_len(T, K[l], St[l], 0);
    }
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
    return 0;
}

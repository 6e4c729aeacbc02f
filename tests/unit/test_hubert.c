/* test_hubert.c — the HuBERT head and loss (core/hubert.c).
 * Unit tests: forward against a naive double transcription of the loss and every gradient (x,
 * final_proj.weight, final_proj.bias, label_embeddings) against central differences of that double
 * loss, for masked and unmasked frames; frames with label -1, padded frames and frames of the other
 * kind contribute nothing (loss bit-identical when their inputs change, zero gradient rows); a case
 * with a known loss and accuracy count (ties count as correct); initialisation ranges; no frames.
 * Parity (only when KOE_HUBERT_REF names the .h5 that tests/reference/hubert_ref.py writes; run by
 * tests/e2e/hubert_parity.sh): loss, counts and all gradients against torchaudio's LogitGenerator,
 * 1e-4 * max|ref| + 1e-5 per tensor, worst element printed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../core/common.h"
#include "../../core/hubert.h"
#include "../../core/rng.h"
#include "../../data/h5util.h"
#include "parity_h5.h"

/* A batch and a head: one flat parameter buffer and one gradient buffer laid out by the table. */
typedef struct {
    HubertHeadConfig cfg;
    ParamTable t;
    float *params, *grads;
    HubertHeadParams p, g;
    int B;
    int64_t T;
    float *x, *dx;    /* (B, T, D) */
    uint8_t *mask, *pad;
    int32_t *labels;
    float *act_mem;
    HubertHeadAct act;
} Case;

static void case_alloc(Case *k, int B, int64_t T, int D, int F, int C) {
    memset(k, 0, sizeof *k);
    k->cfg = (HubertHeadConfig){.D = D, .final_dim = F, .n_classes = C, .logit_temp = 0.1f};
    params_table_init(&k->t);
    hubert_head_add_params(&k->t, &k->cfg);
    k->params = koe_calloc((size_t)k->t.total, sizeof(float));
    k->grads = koe_calloc((size_t)k->t.total, sizeof(float));
    hubert_head_bind(&k->t, k->params, &k->p);
    hubert_head_bind(&k->t, k->grads, &k->g);
    k->B = B;
    k->T = T;
    k->x = koe_calloc((size_t)(B * T * D), sizeof(float));
    k->dx = koe_calloc((size_t)(B * T * D), sizeof(float));
    k->mask = koe_calloc((size_t)(B * T), 1);
    k->pad = koe_calloc((size_t)(B * T), 1);
    k->labels = koe_calloc((size_t)(B * T), sizeof(int32_t));
    k->act_mem = koe_malloc((size_t)hubert_head_act_floats(&k->cfg, B * T) * sizeof(float));
    hubert_head_act_bind(&k->act, &k->cfg, B * T, k->act_mem);
}

/* Random case: parameters from params_init, x ~ N(0, 1), utterance b has T - 3b valid frames, mask
 * ~ Bernoulli(0.5) (padding included: the head must ignore it), 15% of labels -1. */
static void case_random(Case *k, int B, int64_t T, int D, int F, int C, uint64_t seed) {
    case_alloc(k, B, T, D, F, C);
    params_init(&k->t, k->params, seed);
    KoeRng r = koe_rng(seed, 1, 0, KOE_RNG_INIT);
    for (int64_t i = 0; i < B * T * D; i++) k->x[i] = (float)koe_rng_normal(&r);
    for (int b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t;
            k->pad[i] = t >= T - 3 * b;
            k->mask[i] = koe_rng_uniform(&r) < 0.5;
            k->labels[i] = koe_rng_uniform(&r) < 0.15 ? -1 : (int32_t)(koe_rng_uniform(&r) * C);
        }
}

static void case_free(Case *k) {
    params_table_free(&k->t);
    free(k->params);
    free(k->grads);
    free(k->x);
    free(k->dx);
    free(k->mask);
    free(k->pad);
    free(k->labels);
    free(k->act_mem);
}

static int scored(const Case *k, int64_t i, HubertFrames which) {
    return (k->mask[i] != 0) == (which == HUBERT_FRAMES_MASKED) && !k->pad[i] && k->labels[i] >= 0;
}

/* ---- naive double loss ------------------------------------------------------------------------------ */

static double clamped_norm(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i] * v[i];
    return sqrt(fmax(s, (double)HUBERT_COS_EPS * HUBERT_COS_EPS));
}

/* Sum over scored frames of CE(cos(W x + b, E_c) / temp, label), all in double. */
static double loss_naive(const Case *k, const double *x, const double *W, const double *bias, const double *E,
                         HubertFrames which, int64_t *n_frames) {
    const int D = k->cfg.D, F = k->cfg.final_dim, C = k->cfg.n_classes;
    double proj[64], logit[64], loss = 0;
    KOE_ASSERT(F <= 64 && C <= 64);
    *n_frames = 0;
    for (int64_t i = 0; i < k->B * k->T; i++) {
        if (!scored(k, i, which)) continue;
        ++*n_frames;
        for (int f = 0; f < F; f++) {
            proj[f] = bias[f];
            for (int d = 0; d < D; d++) proj[f] += W[f * D + d] * x[i * D + d];
        }
        double pn = clamped_norm(proj, F), mx = -INFINITY;
        for (int c = 0; c < C; c++) {
            double dot = 0;
            for (int f = 0; f < F; f++) dot += proj[f] * E[c * F + f];
            logit[c] = dot / (pn * clamped_norm(E + c * F, F)) / k->cfg.logit_temp;
            mx = fmax(mx, logit[c]);
        }
        double s = 0;
        for (int c = 0; c < C; c++) s += exp(logit[c] - mx);
        loss += mx + log(s) - logit[k->labels[i]];
    }
    return loss;
}

static double *to_double(const float *v, int64_t n) {
    double *d = koe_malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

/* got[i] vs s * d(loss_naive)/d(v[i]) by central differences; 1e-4 * max|fd| + 1e-6. */
static void check_fd(const Case *k, const char *what, double *v, int64_t n, const float *got, double s,
                     double *x, double *W, double *b, double *E, HubertFrames which) {
    const double h = 1e-5;
    double *fd = koe_malloc((size_t)n * sizeof(double)), maxfd = 0, worst = -1;
    int64_t nf, wi = 0;
    for (int64_t i = 0; i < n; i++) {
        double v0 = v[i];
        v[i] = v0 + h;
        double lp = loss_naive(k, x, W, b, E, which, &nf);
        v[i] = v0 - h;
        double lm = loss_naive(k, x, W, b, E, which, &nf);
        v[i] = v0;
        fd[i] = s * (lp - lm) / (2 * h);
        maxfd = fmax(maxfd, fabs(fd[i]));
    }
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(got[i] - fd[i]);
        if (e > worst) worst = e, wi = i;
    }
    double tol = 1e-4 * maxfd + 1e-6;
    print_message("fd %-18s max|fd| %.3e worst error %.3e at %lld (tol %.3e)\n", what, maxfd, worst, (long long)wi, tol);
    if (!(worst <= tol))
        fail_msg("%s: element %lld: backward %.8g, finite difference %.8g", what, (long long)wi, got[wi], fd[wi]);
    free(fd);
}

static void fd_case(HubertFrames which) {
    Case k;
    case_random(&k, 3, 12, 7, 5, 6, which == HUBERT_FRAMES_MASKED ? 11 : 12);
    const int D = k.cfg.D, F = k.cfg.final_dim, C = k.cfg.n_classes;
    const int64_t nx = k.B * k.T * D;
    double loss;
    int64_t nf, nc, nf_naive;
    hubert_head_forward(&k.act, &k.p, k.x, k.mask, k.pad, k.labels, k.B, k.T, which, &loss, &nf, &nc);
    const float s = 0.37f; /* the caller's 1 / masked frames */
    hubert_head_backward(k.dx, &k.g, &k.act, &k.p, s);

    double *x = to_double(k.x, nx), *W = to_double(k.p.proj_w, (int64_t)F * D),
           *b = to_double(k.p.proj_b, F), *E = to_double(k.p.label_emb, (int64_t)C * F);
    double ref = loss_naive(&k, x, W, b, E, which, &nf_naive);
    assert_int_equal(nf, nf_naive);
    assert_true(nf >= 5);
    print_message("loss %.9g naive %.9g over %lld frames\n", loss, ref, (long long)nf);
    assert_true(fabs(loss - ref) <= 1e-5 * fabs(ref));
    check_fd(&k, "x", x, nx, k.dx, s, x, W, b, E, which);
    check_fd(&k, "final_proj.weight", W, (int64_t)F * D, k.g.proj_w, s, x, W, b, E, which);
    check_fd(&k, "final_proj.bias", b, F, k.g.proj_b, s, x, W, b, E, which);
    check_fd(&k, "label_embeddings", E, (int64_t)C * F, k.g.label_emb, s, x, W, b, E, which);
    free(x);
    free(W);
    free(b);
    free(E);
    case_free(&k);
}

static void test_fd_masked(void **state) {
    (void)state;
    fd_case(HUBERT_FRAMES_MASKED);
}

static void test_fd_unmasked(void **state) {
    (void)state;
    fd_case(HUBERT_FRAMES_UNMASKED);
}

/* Backward accumulates: a second backward doubles every gradient. */
static void test_backward_accumulates(void **state) {
    (void)state;
    Case k;
    case_random(&k, 2, 10, 8, 6, 5, 21);
    double loss;
    int64_t nf, nc;
    hubert_head_forward(&k.act, &k.p, k.x, k.mask, k.pad, k.labels, k.B, k.T, HUBERT_FRAMES_MASKED, &loss, &nf, &nc);
    hubert_head_backward(k.dx, &k.g, &k.act, &k.p, 1.0f);
    const int64_t nx = k.B * k.T * k.cfg.D;
    float *once = koe_malloc((size_t)(nx + k.t.total) * sizeof(float));
    memcpy(once, k.dx, (size_t)nx * sizeof(float));
    memcpy(once + nx, k.grads, (size_t)k.t.total * sizeof(float));
    hubert_head_backward(k.dx, &k.g, &k.act, &k.p, 1.0f);
    for (int64_t i = 0; i < nx; i++) assert_float_equal(k.dx[i], 2 * once[i], 1e-6 * (1 + fabs(once[i])));
    for (int64_t i = 0; i < k.t.total; i++)
        assert_float_equal(k.grads[i], 2 * once[nx + i], 1e-6 * (1 + fabs(once[nx + i])));
    free(once);
    case_free(&k);
}

/* Frames with label -1, padded frames and frames of the other kind: changing their x (and the labels
 * of padded / other-kind frames) changes nothing, and their rows of dx stay exactly zero. */
static void skipped_case(HubertFrames which) {
    Case k;
    case_random(&k, 3, 12, 6, 5, 4, 31);
    const int D = k.cfg.D;
    const int64_t BT = k.B * k.T;
    int64_t expect = 0, n_label = 0, n_pad = 0, n_other = 0;
    for (int64_t i = 0; i < BT; i++) {
        expect += scored(&k, i, which);
        n_label += k.labels[i] < 0;
        n_pad += k.pad[i] && k.mask[i] == (which == HUBERT_FRAMES_MASKED);
        n_other += !k.pad[i] && k.labels[i] >= 0 && !scored(&k, i, which);
    }
    assert_true(n_label > 0 && n_pad > 0 && n_other > 0); /* every kind of skipped frame is present */
    double l0, l1;
    int64_t nf0, nc0, nf1, nc1;
    hubert_head_forward(&k.act, &k.p, k.x, k.mask, k.pad, k.labels, k.B, k.T, which, &l0, &nf0, &nc0);
    assert_int_equal(nf0, expect);
    hubert_head_backward(k.dx, &k.g, &k.act, &k.p, 1.0f);
    float *g0 = koe_malloc((size_t)k.t.total * sizeof(float));
    memcpy(g0, k.grads, (size_t)k.t.total * sizeof(float));
    for (int64_t i = 0; i < BT; i++) {
        if (scored(&k, i, which)) continue;
        for (int d = 0; d < D; d++) assert_true(k.dx[i * D + d] == 0.0f);
        for (int d = 0; d < D; d++) k.x[i * D + d] = 100.0f * (float)(d + 1);
        if (k.labels[i] >= 0) k.labels[i] = (k.labels[i] + 1) % k.cfg.n_classes;
    }
    memset(k.grads, 0, (size_t)k.t.total * sizeof(float));
    hubert_head_forward(&k.act, &k.p, k.x, k.mask, k.pad, k.labels, k.B, k.T, which, &l1, &nf1, &nc1);
    hubert_head_backward(NULL, &k.g, &k.act, &k.p, 1.0f);
    assert_true(l0 == l1);
    assert_int_equal(nf0, nf1);
    assert_int_equal(nc0, nc1);
    assert_memory_equal(g0, k.grads, (size_t)k.t.total * sizeof(float));
    free(g0);
    case_free(&k);
}

static void test_skipped_masked(void **state) {
    (void)state;
    skipped_case(HUBERT_FRAMES_MASKED);
}

static void test_skipped_unmasked(void **state) {
    (void)state;
    skipped_case(HUBERT_FRAMES_UNMASKED);
}

/* final_proj = identity, label embeddings = unit vectors: frame i's cosines are exactly known.
 * x rows: e0 (label 0: correct), e1 (label 2: wrong), e0 + e1 (label 1: a tie, correct; label 3: wrong),
 * e3 (label 3, correct). */
static void test_known_loss_and_accuracy(void **state) {
    (void)state;
    Case k;
    const int C = 4;
    case_alloc(&k, 1, 5, C, C, C);
    for (int c = 0; c < C; c++) k.p.proj_w[c * C + c] = 1.0f, k.p.label_emb[c * C + c] = 2.0f;
    const float rows[5][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {1, 1, 0, 0}, {1, 1, 0, 0}, {0, 0, 0, 1}};
    const int32_t lab[5] = {0, 2, 1, 3, 3};
    memcpy(k.x, rows, sizeof rows);
    memcpy(k.labels, lab, sizeof lab);
    memset(k.mask, 1, 5);
    double loss;
    int64_t nf, nc;
    hubert_head_forward(&k.act, &k.p, k.x, k.mask, NULL, k.labels, k.B, k.T, HUBERT_FRAMES_MASKED, &loss, &nf, &nc);
    assert_int_equal(nf, 5);
    assert_int_equal(nc, 3);
    /* one-hot rows: logits (10, 0, 0, 0); two-hot: (a, a, 0, 0) with a = 10 / sqrt(2) */
    const double a = 10.0 / sqrt(2.0), z1 = log(exp(10.0) + 3), z2 = log(2 * exp(a) + 2);
    const double expect = (z1 - 10) + (z1 - 0) + (z2 - a) + (z2 - 0) + (z1 - 10);
    print_message("known case: loss %.9g expected %.9g, correct %lld of 5\n", loss, expect, (long long)nc);
    assert_true(fabs(loss - expect) <= 1e-5 * expect);
    case_free(&k);
}

/* No scored frame: loss 0, nothing counted, backward leaves every gradient at zero. */
static void test_no_frames(void **state) {
    (void)state;
    Case k;
    case_random(&k, 2, 6, 4, 3, 3, 41);
    memset(k.mask, 0, (size_t)(k.B * k.T));
    double loss = -1;
    int64_t nf = -1, nc = -1;
    hubert_head_forward(&k.act, &k.p, k.x, k.mask, k.pad, k.labels, k.B, k.T, HUBERT_FRAMES_MASKED, &loss, &nf, &nc);
    assert_true(loss == 0.0);
    assert_int_equal(nf, 0);
    assert_int_equal(nc, 0);
    hubert_head_backward(k.dx, &k.g, &k.act, &k.p, 1.0f);
    for (int64_t i = 0; i < k.t.total; i++) assert_true(k.grads[i] == 0.0f);
    for (int64_t i = 0; i < k.B * k.T * k.cfg.D; i++) assert_true(k.dx[i] == 0.0f);
    case_free(&k);
}

/* Table entries, shapes and initial ranges: final_proj U(-1/sqrt(D), 1/sqrt(D)), embeddings U(0, 1). */
static void test_params_init(void **state) {
    (void)state;
    Case k;
    case_alloc(&k, 1, 1, 64, 32, 100);
    assert_int_equal(k.t.n, 3);
    assert_string_equal(k.t.e[0].name, "final_proj.weight");
    assert_int_equal(k.t.e[0].shape[0], 32);
    assert_int_equal(k.t.e[0].shape[1], 64);
    assert_string_equal(k.t.e[1].name, "final_proj.bias");
    assert_string_equal(k.t.e[2].name, "label_embeddings");
    assert_int_equal(k.t.e[2].shape[0], 100);
    assert_int_equal(k.t.e[2].shape[1], 32);
    assert_int_equal(k.t.total, 32 * 64 + 32 + 100 * 32);
    params_init(&k.t, k.params, 5);
    const struct {
        const float *v;
        int64_t n;
        double lo, hi;
    } want[3] = {{k.p.proj_w, 32 * 64, -0.125, 0.125}, {k.p.proj_b, 32, -0.125, 0.125}, {k.p.label_emb, 3200, 0, 1}};
    for (int j = 0; j < 3; j++) {
        double mn = INFINITY, mx = -INFINITY, mean = 0;
        for (int64_t i = 0; i < want[j].n; i++) mn = fmin(mn, want[j].v[i]), mx = fmax(mx, want[j].v[i]), mean += want[j].v[i];
        mean /= (double)want[j].n;
        const double w = want[j].hi - want[j].lo, slack = want[j].n > 100 ? 0.02 : 0.25;
        assert_true(mn >= want[j].lo && mx <= want[j].hi);
        assert_true(mn <= want[j].lo + slack * w && mx >= want[j].hi - slack * w);
        assert_true(fabs(mean - 0.5 * (want[j].lo + want[j].hi)) <= (want[j].n > 100 ? 0.03 : 0.2) * w);
    }
    case_free(&k);
}

/* ---- parity with torchaudio (KOE_HUBERT_REF) ------------------------------------------------------ */

static const char *ref_path(void) {
    const char *p = getenv("KOE_HUBERT_REF");
    if (!p || !*p) {
        print_message("KOE_HUBERT_REF is not set: skipping the torchaudio parity check (run "
                      "tests/e2e/hubert_parity.sh, which makes the reference file and sets it)\n");
        skip();
    }
    return p;
}

static int64_t ref_int(hid_t grp, const char *path, const char *attr) {
    int64_t v;
    KoeError err;
    if (h5_attr_read_i64(grp, path, attr, &v, &err) < 0) fail_msg("%s", err.msg);
    return v;
}

static void parity_case(const char *path, hid_t file, const char *cname) {
    hid_t grp = H5Gopen2(file, cname, H5P_DEFAULT);
    if (grp < 0) fail_msg("%s: no group '%s' (regenerate it with tests/reference/hubert_ref.py)", path, cname);
    const int B = (int)ref_int(grp, path, "B"), D = (int)ref_int(grp, path, "D"), F = (int)ref_int(grp, path, "F"),
              C = (int)ref_int(grp, path, "C");
    const int64_t T = ref_int(grp, path, "T");
    const HubertFrames which = (HubertFrames)ref_int(grp, path, "which");
    double scale;
    KoeError err;
    if (h5_attr_read_f64(grp, path, "scale", &scale, &err) < 0) fail_msg("%s", err.msg);
    Case k;
    case_alloc(&k, B, T, D, F, C);
    float *x = ref_read(grp, path, "x", H5T_NATIVE_FLOAT, sizeof(float), (int64_t)B * T * D);
    int32_t *mask = ref_read(grp, path, "mask", H5T_NATIVE_INT32, sizeof(int32_t), B * T);
    int32_t *pad = ref_read(grp, path, "pad", H5T_NATIVE_INT32, sizeof(int32_t), B * T);
    int32_t *labels = ref_read(grp, path, "labels", H5T_NATIVE_INT32, sizeof(int32_t), B * T);
    memcpy(k.x, x, (size_t)B * T * D * sizeof(float));
    memcpy(k.labels, labels, (size_t)B * T * sizeof(int32_t));
    for (int64_t i = 0; i < B * T; i++) k.mask[i] = (uint8_t)mask[i], k.pad[i] = (uint8_t)pad[i];
    for (int j = 0; j < k.t.n; j++) {
        float *w = ref_read(grp, path, k.t.e[j].name, H5T_NATIVE_FLOAT, sizeof(float), k.t.e[j].numel);
        memcpy(k.params + k.t.e[j].offset, w, (size_t)k.t.e[j].numel * sizeof(float));
        free(w);
    }
    double loss;
    int64_t nf, nc;
    hubert_head_forward(&k.act, &k.p, k.x, k.mask, k.pad, k.labels, B, T, which, &loss, &nf, &nc);
    hubert_head_backward(k.dx, &k.g, &k.act, &k.p, (float)scale);
    print_message("parity %s: %lld frames (torch %lld), %lld correct (torch %lld)\n", cname, (long long)nf,
                  (long long)ref_int(grp, path, "n_frames"), (long long)nc, (long long)ref_int(grp, path, "n_correct"));
    assert_int_equal(nf, ref_int(grp, path, "n_frames"));
    assert_int_equal(nc, ref_int(grp, path, "n_correct"));
    const float lossf = (float)loss;
    ref_check(grp, path, cname, "loss", &lossf, 1);
    ref_check(grp, path, cname, "dx", k.dx, (int64_t)B * T * D);
    char name[PARAM_NAME_LEN + 8];
    for (int j = 0; j < k.t.n; j++) {
        snprintf(name, sizeof name, "grad.%s", k.t.e[j].name);
        ref_check(grp, path, cname, name, k.grads + k.t.e[j].offset, k.t.e[j].numel);
    }
    free(x);
    free(mask);
    free(pad);
    free(labels);
    H5Gclose(grp);
    case_free(&k);
}

static void test_parity_torchaudio(void **state) {
    (void)state;
    const char *path = ref_path();
    h5_init();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) fail_msg("%s: cannot open: %s", path, h5_last_error());
    parity_case(path, file, "masked");
    parity_case(path, file, "unmasked");
    parity_case(path, file, "clamped");
    H5Fclose(file);
}

int main(void) {
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_fd_masked),       cmocka_unit_test(test_fd_unmasked),
        cmocka_unit_test(test_backward_accumulates), cmocka_unit_test(test_skipped_masked),
        cmocka_unit_test(test_skipped_unmasked), cmocka_unit_test(test_known_loss_and_accuracy),
        cmocka_unit_test(test_no_frames),       cmocka_unit_test(test_params_init),
    };
    const struct CMUnitTest parity[] = {cmocka_unit_test(test_parity_torchaudio)};
    /* with KOE_HUBERT_REF set only the parity test runs (hubert_parity.sh) */
    const char *ref = getenv("KOE_HUBERT_REF");
    if (ref && *ref) return cmocka_run_group_tests(parity, NULL, NULL);
    return cmocka_run_group_tests(unit, NULL, NULL) | cmocka_run_group_tests(parity, NULL, NULL);
}

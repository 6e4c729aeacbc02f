/* test_model.c — the whole model: finite-difference check of model_backward on tiny configs (every
 * parameter tensor, dropout on, with mask, feature penalty and feature gradient), padding independence,
 * dropout masks keyed by utterance id (the same alone and in a padded batch), layerdrop, the arena bound, and (when KOE_MODEL_REF names a directory of reference files made by
 * tests/reference/model_ref.py; tests/e2e/model_parity.sh does that) parity with torchaudio: every
 * hidden state and every parameter gradient, error <= 1e-4 * max|ref| + 1e-5 per tensor; and in bf16
 * (run.precision = bf16) no further from the float64 answer than PyTorch's autocast (bf16_reference). */
#include <dirent.h>
#include <hdf5.h>
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
#include "../../core/gemm.h"
#include "../../core/mask.h"
#include "../../core/model.h"
#include "../../core/rng.h"
#include "../../data/checkpoint.h"
#include "../../data/h5util.h"
#include "parity.h"

static void tiny_config(ModelConfig *c, FrontendKind fe, ConvNorm norm, int pre_ln, EncoderKind enc) {
    memset(c, 0, sizeof *c);
    c->frontend = fe;
    c->n_conv = 3;
    const int dim[] = {8, 8, 6}, k[] = {10, 3, 2}, s[] = {5, 2, 2};
    for (int i = 0; i < 3; i++) c->conv_dim[i] = dim[i], c->conv_kernel[i] = k[i], c->conv_stride[i] = s[i];
    c->conv_norm = norm;
    c->conv_bias = norm == CONV_NORM_LAYER;
    c->feature_grad_mult = 1.0f;
    c->fbank_dim = 5;
    c->fbank_stack = 3;
    c->encoder = enc;
    c->D = 16;
    c->L = 2;
    c->H = 2;
    c->F = 24;
    c->pos_conv_kernel = 4;
    c->pos_conv_groups = 2;
    c->layer_norm_first = pre_ln;
    c->conformer_kernel = 5;
    c->layer_norm_eps = 1e-5f;
    c->dropout = 0.1f;
    c->attention_dropout = 0.1f;
    c->activation_dropout = 0.1f;
    c->encoder_layerdrop = 0.0f;
    c->dropout_input = 0.1f;
    c->dropout_features = 0.1f;
    c->mask_prob = 0.5f;
    c->mask_length = 2;
    c->mask_min_spans = 1;
}

static void fill_normal(float *x, int64_t n, float std, uint64_t key) {
    KoeRng r = koe_rng(99, key, 0, KOE_RNG_NOISE);
    for (int64_t i = 0; i < n; i++) x[i] = std * (float)koe_rng_normal(&r);
}

/* Fixed inputs and loss weights for one config. */
typedef struct {
    Model *m;
    int B;
    int64_t S, T, C;
    float *inp;    /* (B, S) or (B, S, fbank_dim) */
    int64_t len[3];
    uint8_t *mask; /* (B, T) */
    float *R;      /* (B, T, D) */
    float *Rf;     /* (B, T, C) weights of the normalised features (waveform) */
    float wpen;
    ModelRun run;
} Case;

static double loss_of(Case *k) {
    Model *m = k->m;
    model_forward(m, k->inp, k->len, k->B, k->S, k->mask, &k->run);
    double s = 0;
    const int64_t ND = (int64_t)k->B * k->T * m->cfg.D;
    for (int64_t i = 0; i < ND; i++) s += (double)m->a.out[i] * k->R[i];
    if (m->cfg.frontend == FRONTEND_WAVEFORM) {
        s += (double)k->wpen * m->feature_pen;
        for (int64_t i = 0; i < (int64_t)k->B * k->T * k->C; i++) s += (double)m->a.fp_ln[i] * k->Rf[i];
    }
    return s;
}

static void case_setup(Case *k, const ModelConfig *c, int train) {
    memset(k, 0, sizeof *k);
    k->B = 3;
    const int fb = c->frontend == FRONTEND_FBANK;
    k->S = fb ? 40 : 420;
    k->len[0] = k->S;
    k->len[1] = fb ? 31 : 300;
    k->len[2] = fb ? 22 : 230;
    k->m = model_create(c, k->B, k->S);
    Model *m = k->m;
    model_init_params(m, 7);
    /* move norms, biases, the mask embedding and weight_g off their init so that a mixed-up weight
     * and bias (or a missing bias gradient) shows */
    for (int i = 0; i < m->table.n; i++) {
        const ParamEntry *e = &m->table.e[i];
        if (e->ndim == 1 || strstr(e->name, "weight_g")) {
            KoeRng r = koe_rng(5, (uint64_t)i, 1, KOE_RNG_NOISE);
            for (int64_t j = 0; j < e->numel; j++) m->params[e->offset + j] += 0.2f * (float)koe_rng_normal(&r);
        }
        /* N(0, 0.02) queries and keys make near-uniform attention whose q/k gradients drown in float
         * noise; sharper attention makes them measurable */
        if (strstr(e->name, "q_proj.weight") || strstr(e->name, "k_proj.weight") || strstr(e->name, "linear_q.weight") ||
            strstr(e->name, "linear_k.weight"))
            for (int64_t j = 0; j < e->numel; j++) m->params[e->offset + j] *= 10.0f;
    }
    const int64_t in_n = (int64_t)k->B * k->S * (fb ? c->fbank_dim : 1);
    k->inp = calloc((size_t)in_n, sizeof(float));
    fill_normal(k->inp, in_n, fb ? 1.0f : 0.3f, 1);
    for (int b = 0; b < k->B; b++) /* zero past each length, as the loader pads */
        for (int64_t t = k->len[b]; t < k->S; t++)
            for (int d = 0; d < (fb ? c->fbank_dim : 1); d++) k->inp[((int64_t)b * k->S + t) * (fb ? c->fbank_dim : 1) + d] = 0;
    k->T = model_frames(c, k->S);
    k->C = fb ? 0 : c->conv_dim[c->n_conv - 1];
    k->mask = calloc((size_t)(k->B * k->T), 1);
    int64_t flen[3], utt[3] = {0, 1, 2};
    for (int b = 0; b < k->B; b++) flen[b] = model_frames(c, k->len[b]);
    mask_spans_batch(k->mask, flen, utt, k->B, k->T, c->mask_prob, c->mask_length, c->mask_min_spans, 3, 0);
    k->R = malloc((size_t)(k->B * k->T * c->D) * sizeof(float));
    fill_normal(k->R, k->B * k->T * c->D, 1.0f, 2);
    k->Rf = malloc((size_t)(k->B * k->T * (k->C ? k->C : 1)) * sizeof(float));
    fill_normal(k->Rf, k->B * k->T * (k->C ? k->C : 1), 1.0f, 3);
    k->wpen = 3.0f;
    k->run.train = train;
    k->run.seed = 11;
    k->run.step = 4;
}

static void case_free(Case *k) {
    model_free(k->m);
    free(k->inp);
    free(k->mask);
    free(k->R);
    free(k->Rf);
}

/* For every tensor: the directional derivative along a random +-1 direction, analytic (grad . u) vs
 * central difference in double accumulation. */
static void check_gradients(Case *k, const char *what) {
    Model *m = k->m;
    model_zero_grad(m);
    loss_of(k);
    model_backward(m, k->R, k->wpen, m->cfg.frontend == FRONTEND_WAVEFORM ? k->Rf : NULL);
    int bad = 0;
    for (int i = 0; i < m->table.n; i++) {
        const ParamEntry *e = &m->table.e[i];
        float *p = m->params + e->offset;
        const float *g = m->grads + e->offset;
        float *save = malloc((size_t)e->numel * sizeof(float));
        memcpy(save, p, (size_t)e->numel * sizeof(float));
        KoeRng r = koe_rng(17, (uint64_t)i, 0, KOE_RNG_NOISE);
        signed char *u = malloc((size_t)e->numel);
        double an = 0, scale = 0;
        for (int64_t j = 0; j < e->numel; j++) {
            u[j] = (koe_rng_u64(&r) >> 63) ? 1 : -1;
            an += (double)g[j] * u[j];
            scale += fabs((double)g[j]);
        }
        double rms = 0;
        for (int64_t j = 0; j < e->numel; j++) rms += (double)save[j] * save[j];
        rms = sqrt(rms / (double)e->numel);
        const float h = (float)(1e-2 * (rms > 0.1 ? rms : 0.1));
        for (int64_t j = 0; j < e->numel; j++) p[j] = save[j] + h * u[j];
        double lp = loss_of(k);
        for (int64_t j = 0; j < e->numel; j++) p[j] = save[j] - h * u[j];
        double lm = loss_of(k);
        memcpy(p, save, (size_t)e->numel * sizeof(float));
        double fd = (lp - lm) / (2.0 * h);
        double err = fabs(fd - an), tol = 2e-2 * fabs(an) + 2e-3 * scale + 3e-3; /* 3e-3: float noise of the loss / 2h */
        if (err > tol || !isfinite(an)) {
            printf("%s: %-60s analytic %.6g  finite difference %.6g  (|g|_1 %.3g)\n", what, e->name, an, fd, scale);
            bad++;
        }
        free(u);
        free(save);
    }
    assert_int_equal(bad, 0);
}

static void fd_case(FrontendKind fe, ConvNorm norm, int pre, EncoderKind enc, int train, float layerdrop,
                    const char *what) {
    ModelConfig c;
    tiny_config(&c, fe, norm, pre, enc);
    c.encoder_layerdrop = layerdrop;
    Case k;
    case_setup(&k, &c, train);
    check_gradients(&k, what);
    case_free(&k);
}

static void test_fd_group_postln(void **s) { (void)s, fd_case(FRONTEND_WAVEFORM, CONV_NORM_GROUP, 0, ENCODER_TRANSFORMER, 1, 0, "group/post-LN"); }
static void test_fd_layer_preln(void **s) { (void)s, fd_case(FRONTEND_WAVEFORM, CONV_NORM_LAYER, 1, ENCODER_TRANSFORMER, 1, 0, "layer/pre-LN"); }
static void test_fd_group_preln_eval(void **s) { (void)s, fd_case(FRONTEND_WAVEFORM, CONV_NORM_GROUP, 1, ENCODER_TRANSFORMER, 0, 0, "group/pre-LN eval"); }
static void test_fd_layer_postln_eval(void **s) { (void)s, fd_case(FRONTEND_WAVEFORM, CONV_NORM_LAYER, 0, ENCODER_TRANSFORMER, 0, 0, "layer/post-LN eval"); }
static void test_fd_fbank(void **s) { (void)s, fd_case(FRONTEND_FBANK, CONV_NORM_GROUP, 0, ENCODER_TRANSFORMER, 1, 0, "fbank"); }
static void test_fd_conformer(void **s) { (void)s, fd_case(FRONTEND_FBANK, CONV_NORM_GROUP, 0, ENCODER_CONFORMER, 1, 0, "conformer"); }
static void test_fd_layerdrop(void **s) { (void)s, fd_case(FRONTEND_WAVEFORM, CONV_NORM_GROUP, 0, ENCODER_TRANSFORMER, 1, 0.5f, "layerdrop"); }

/* Valid frames of an utterance do not depend on the padding around it or on batch-mates
 * (layer-norm extractor: no statistics over time), and eval runs are deterministic. */
static void test_padding_independence(void **state) {
    (void)state;
    ModelConfig c;
    tiny_config(&c, FRONTEND_WAVEFORM, CONV_NORM_LAYER, 0, ENCODER_TRANSFORMER);
    Case k;
    case_setup(&k, &c, 0);
    Model *m = k.m;
    model_forward(m, k.inp, k.len, k.B, k.S, NULL, &k.run);
    const int64_t T = m->T, D = c.D, f1 = m->frames[1];
    float *batch = malloc((size_t)(T * D) * sizeof(float));
    memcpy(batch, m->a.out + T * D, (size_t)(f1 * D) * sizeof(float));
    /* utterance 1 alone, cropped to its length */
    model_forward(m, k.inp + k.S, &k.len[1], 1, k.len[1], NULL, &k.run);
    assert_int_equal(m->T, f1);
    double worst = 0;
    for (int64_t i = 0; i < f1 * D; i++) worst = fmax(worst, fabs((double)m->a.out[i] - batch[i]));
    printf("padding independence: worst |diff| %.3g\n", worst);
    assert_true(worst < 1e-4);
    free(batch);
    case_free(&k);
}

/* normalize_waveform: the model's output on a raw batch (an offset and a scale per utterance) equals
 * the output without it on the batch normalised here, in double, as transformers'
 * Wav2Vec2FeatureExtractor does ((x - mean) / sqrt(var + 1e-7) over each utterance's valid samples,
 * padding zero), and differs from the output without it on the raw batch. */
static void test_normalize_waveform(void **state) {
    (void)state;
    ModelConfig c;
    tiny_config(&c, FRONTEND_WAVEFORM, CONV_NORM_LAYER, 1, ENCODER_TRANSFORMER);
    Case plain, norm;
    case_setup(&plain, &c, 0);
    c.normalize_waveform = 1;
    case_setup(&norm, &c, 0);
    const int B = plain.B;
    const int64_t S = plain.S;
    float *ref_in = calloc((size_t)(B * S), sizeof(float));
    for (int b = 0; b < B; b++) {
        float *x = plain.inp + b * S;
        const int64_t n = plain.len[b];
        for (int64_t t = 0; t < n; t++) x[t] = x[t] * (1.5f + b) + 0.1f * (float)(b + 1); /* off mean 0, var 1 */
        double mean = 0, var = 0;
        for (int64_t t = 0; t < n; t++) mean += x[t] / (double)n;
        for (int64_t t = 0; t < n; t++) var += (x[t] - mean) * (x[t] - mean) / (double)n;
        for (int64_t t = 0; t < n; t++) ref_in[b * S + t] = (float)((x[t] - mean) / sqrt(var + 1e-7));
    }
    model_forward(norm.m, plain.inp, plain.len, B, S, NULL, &norm.run);
    const int64_t N = (int64_t)B * norm.m->T * c.D;
    float *got = malloc((size_t)N * sizeof(float));
    memcpy(got, norm.m->a.out, (size_t)N * sizeof(float));
    model_forward(plain.m, ref_in, plain.len, B, S, NULL, &plain.run);
    double worst = 0, raw = 0, maxabs = 0;
    for (int64_t i = 0; i < N; i++) {
        worst = fmax(worst, fabs((double)got[i] - plain.m->a.out[i]));
        maxabs = fmax(maxabs, fabs((double)plain.m->a.out[i]));
    }
    model_forward(plain.m, plain.inp, plain.len, B, S, NULL, &plain.run);
    for (int64_t i = 0; i < N; i++) raw = fmax(raw, fabs((double)got[i] - plain.m->a.out[i]));
    printf("normalize_waveform: vs normalised input worst |diff| %.3g, vs raw input %.3g (max |out| %.3g)\n", worst,
           raw, maxabs);
    assert_true(worst < 1e-5 * fmax(1.0, maxabs));
    assert_true(raw > 1e-2 * maxabs);
    free(got);
    free(ref_in);
    case_free(&plain);
    case_free(&norm);
}

/* Dropout on (train, p = 0.1 at every site): the masks are keyed by utterance id, so utterance 1 (id
 * 7) gets the same outputs on its valid frames at batch position 1 of a padded batch as alone at
 * position 0, cropped to its length; keyed by position (utt = NULL) or by another id they differ. */
static void dropout_by_utterance(FrontendKind fe, EncoderKind enc, const char *name) {
    ModelConfig c;
    tiny_config(&c, fe, CONV_NORM_LAYER, 0, enc);
    Case k;
    case_setup(&k, &c, 1);
    Model *m = k.m;
    const int64_t ids[3] = {20, 7, 31}, id7 = 7, id8 = 8;
    const int64_t per = fe == FRONTEND_FBANK ? c.fbank_dim : 1; /* input values per sample or frame */
    k.run.utt = ids;
    model_forward(m, k.inp, k.len, k.B, k.S, NULL, &k.run);
    const int64_t T = m->T, D = c.D, f1 = m->frames[1];
    float *batch = malloc((size_t)(f1 * D) * sizeof(float));
    memcpy(batch, m->a.out + T * D, (size_t)(f1 * D) * sizeof(float));
    double worst[3] = {0, 0, 0}, maxabs = 0; /* alone with id 7, with utt = NULL, with id 8 */
    const int64_t *alone[3] = {&id7, NULL, &id8};
    for (int v = 0; v < 3; v++) {
        ModelRun run = k.run;
        run.utt = alone[v];
        model_forward(m, k.inp + k.S * per, &k.len[1], 1, k.len[1], NULL, &run);
        assert_int_equal(m->T, f1);
        for (int64_t i = 0; i < f1 * D; i++) {
            worst[v] = fmax(worst[v], fabs((double)m->a.out[i] - batch[i]));
            maxabs = fmax(maxabs, fabs((double)batch[i]));
        }
    }
    printf("%s dropout by utterance: alone vs in the batch worst |diff| %.3g (max |out| %.3g); keyed by position "
           "%.3g, by another id %.3g\n",
           name, worst[0], maxabs, worst[1], worst[2]);
    assert_true(worst[0] < 1e-5 * fmax(1.0, maxabs));
    assert_true(worst[1] > 1e-2 && worst[2] > 1e-2);
    free(batch);
    case_free(&k);
}
static void test_dropout_by_utterance(void **state) {
    (void)state;
    dropout_by_utterance(FRONTEND_WAVEFORM, ENCODER_TRANSFORMER, "waveform/transformer");
    dropout_by_utterance(FRONTEND_FBANK, ENCODER_CONFORMER, "fbank/conformer");
}

/* Layerdrop: the decisions come from (seed, step, layer); some step skips a layer and then the layer's
 * output equals its input. */
static void test_layerdrop_identity(void **state) {
    (void)state;
    ModelConfig c;
    tiny_config(&c, FRONTEND_FBANK, CONV_NORM_GROUP, 0, ENCODER_TRANSFORMER);
    c.encoder_layerdrop = 0.5f;
    Case k;
    case_setup(&k, &c, 1);
    Model *m = k.m;
    int seen_skip = 0, seen_run = 0;
    const int64_t ND = (int64_t)k.B * k.T * c.D;
    for (uint64_t step = 0; step < 16; step++) {
        k.run.step = step;
        model_forward(m, k.inp, k.len, k.B, k.S, NULL, &k.run);
        for (int l = 0; l < c.L; l++) {
            const float *in = model_hidden(m, l), *out = model_hidden(m, l + 1);
            int same = memcmp(in, out, (size_t)ND * sizeof(float)) == 0;
            assert_int_equal(same, m->skipped[l]);
            seen_skip |= m->skipped[l];
            seen_run |= !m->skipped[l];
        }
    }
    assert_true(seen_skip && seen_run);
    case_free(&k);
}

/* ---- parity with torchaudio ----------------------------------------------------------------------- */

static float *read_f32(hid_t f, const char *name, int64_t *n) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t sp = H5Dget_space(d);
    *n = H5Sget_simple_extent_npoints(sp);
    float *v = malloc((size_t)(*n ? *n : 1) * sizeof(float));
    assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
    return v;
}

static int64_t attr_i64(hid_t f, const char *name) {
    int64_t v;
    KoeError err;
    if (h5_attr_read_i64(f, "ref", name, &v, &err) < 0) fail_msg("%s", err.msg);
    return v;
}

/* err <= 1e-4 max|ref| + 1e-5; prints the worst element. Returns 1 when within. */
static int compare(const char *file, const char *what, const float *got, const float *ref, int64_t n, double *worst_rel) {
    char name[192];
    snprintf(name, sizeof name, "%s: %s", file, what);
    ParityResult r;
    const int ok = parity_check(name, got, ref, n, &r);
    if (worst_rel) *worst_rel = r.maxref > 0 ? r.worst / r.maxref : r.worst;
    return ok;
}

/* sum (a - ref)^2 and sum ref^2 of n values, added to e[0], e[1] */
static void l2_accumulate(double *e, const float *a, const float *ref, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - ref[i];
        e[0] += d * d, e[1] += (double)ref[i] * ref[i];
    }
}

static double l2_rel(const double *e) { return sqrt(e[0] / e[1]); }

/* Whole-model bf16 against PyTorch's autocast (the file's /bf16, tests/reference/model_bf16_ref.py).
 * With the float64 /out and /grad as the exact answer, the relative L2 error of koe's bf16 output, and
 * of all its parameter gradients as one vector, must not exceed autocast's: both round the operands of
 * every convolution, linear and attention product to bf16, but autocast also stores those products'
 * outputs and the elementwise results between them (GELU, softmax, the gradients flowing back) in
 * bf16 where koe keeps fp32, so koe's roundings are a subset of autocast's. And it must exceed koe's
 * own fp32 error (bf16 ran). Returns 1 when both hold; nothing to check without /bf16. */
static int bf16_reference(hid_t f, const char *path, Model *m, const float *wav, const int64_t *len, int B,
                          int64_t S, const float *R) {
    if (H5Lexists(f, "bf16", H5P_DEFAULT) <= 0) return 1;
    const int64_t ND = (int64_t)B * m->T * m->cfg.D;
    double err[3][2][2] = {{{0}}}; /* [koe fp32, koe bf16, autocast][out, gradients][sum d^2, sum ref^2] */
    int64_t n;
    float *out_ref = read_f32(f, "out", &n), *out_ac = read_f32(f, "bf16/out", &n);
    assert_int_equal(n, ND);
    l2_accumulate(err[2][0], out_ac, out_ref, ND);
    for (int p = 0; p < 2; p++) {
        gemm_set_precision(p ? GEMM_BF16 : GEMM_FP32);
        ModelRun run = {0};
        model_forward(m, wav, len, B, S, NULL, &run);
        l2_accumulate(err[p][0], m->a.out, out_ref, ND);
        model_zero_grad(m);
        model_backward(m, R, 0.0f, NULL);
        gemm_set_precision(GEMM_FP32);
        for (int i = 0; i < m->table.n; i++) {
            const ParamEntry *e = &m->table.e[i];
            if (!strcmp(e->name, "masked_spec_embed")) continue; /* torchaudio's model has none */
            char name[PARAM_NAME_LEN + 16];
            snprintf(name, sizeof name, "grad/%s", e->name);
            float *g = read_f32(f, name, &n);
            assert_non_null(g);
            l2_accumulate(err[p][1], m->grads + e->offset, g, n);
            if (p == 0) {
                snprintf(name, sizeof name, "bf16/grad/%s", e->name);
                float *ga = read_f32(f, name, &n);
                if (!ga) fail_msg("%s: no autocast gradient %s", path, name);
                l2_accumulate(err[2][1], ga, g, n);
                free(ga);
            }
            free(g);
        }
    }
    free(out_ref);
    free(out_ac);
    int ok = 1;
    const char *what[2] = {"out", "gradients"};
    for (int k = 0; k < 2; k++) {
        const double e32 = l2_rel(err[0][k]), e16 = l2_rel(err[1][k]), eac = l2_rel(err[2][k]);
        const int good = e16 <= eac && e16 > e32;
        printf("%s %s: bf16 %s: relative L2 error vs float64: koe bf16 %.3e, torch autocast %.3e (%.2fx), koe "
               "fp32 %.3e\n",
               good ? "ok  " : "FAIL", path, what[k], e16, eac, eac / e16, e32);
        ok &= good;
    }
    return ok;
}

static int run_reference(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    ModelConfig c;
    tiny_config(&c, FRONTEND_WAVEFORM, CONV_NORM_GROUP, 0, ENCODER_TRANSFORMER);
    c.n_conv = (int)attr_i64(f, "n_conv");
    int64_t n;
    float *conv = read_f32(f, "conv_layers", &n); /* (n_conv, 3) */
    for (int i = 0; i < c.n_conv; i++)
        c.conv_dim[i] = (int)conv[3 * i], c.conv_kernel[i] = (int)conv[3 * i + 1], c.conv_stride[i] = (int)conv[3 * i + 2];
    free(conv);
    c.conv_norm = attr_i64(f, "layer_norm_extractor") ? CONV_NORM_LAYER : CONV_NORM_GROUP;
    c.conv_bias = (int)attr_i64(f, "conv_bias");
    c.feature_grad_mult = 1.0f;
    c.D = (int)attr_i64(f, "D");
    c.L = (int)attr_i64(f, "L");
    c.H = (int)attr_i64(f, "H");
    c.F = (int)attr_i64(f, "F");
    c.pos_conv_kernel = (int)attr_i64(f, "pos_conv_kernel");
    c.pos_conv_groups = (int)attr_i64(f, "pos_conv_groups");
    c.layer_norm_first = (int)attr_i64(f, "layer_norm_first");
    const int B = (int)attr_i64(f, "B");
    const int64_t S = attr_i64(f, "S");
    float *wav = read_f32(f, "input/wav", &n);
    assert_int_equal(n, B * S);
    float *lenf = read_f32(f, "input/len", &n);
    int64_t len[16];
    assert_true(B <= 16);
    for (int b = 0; b < B; b++) len[b] = (int64_t)lenf[b];
    free(lenf);

    Model *m = model_create(&c, B, S);
    KoeError err;
    if (checkpoint_read_params(path, &m->table, m->params, &err) < 0) fail_msg("%s", err.msg);
    ModelRun run = {0};
    model_forward(m, wav, len, B, S, NULL, &run);
    const int64_t ND = (int64_t)B * m->T * c.D;
    int ok = 1;
    double worst_hidden = 0, worst_grad = 0, r;
    for (int i = 0; i <= c.L; i++) {
        char name[64];
        snprintf(name, sizeof name, "hidden/%d", i);
        float *ref = read_f32(f, name, &n);
        assert_non_null(ref);
        assert_int_equal(n, ND);
        ok &= compare(path, name, model_hidden(m, i), ref, n, &r);
        worst_hidden = fmax(worst_hidden, r);
        free(ref);
    }
    float *ref = read_f32(f, "out", &n);
    assert_int_equal(n, ND);
    ok &= compare(path, "out", m->a.out, ref, n, &r);
    worst_hidden = fmax(worst_hidden, r);
    free(ref);
    float *R = read_f32(f, "R", &n);
    assert_int_equal(n, ND);
    model_zero_grad(m);
    model_backward(m, R, 0.0f, NULL);
    int n_grads = 0;
    for (int i = 0; i < m->table.n; i++) {
        const ParamEntry *e = &m->table.e[i];
        char name[PARAM_NAME_LEN + 8];
        snprintf(name, sizeof name, "grad/%s", e->name);
        if (!strcmp(e->name, "masked_spec_embed")) continue; /* torchaudio's model has none; no mask here */
        float *g = read_f32(f, name, &n);
        if (!g) fail_msg("%s: no reference gradient %s", path, name);
        assert_int_equal(n, e->numel);
        if (strstr(e->name, "k_proj.bias")) {
            /* exactly zero in exact arithmetic (softmax is invariant to a per-query constant): both
             * sides are rounding noise of sum_t dk[t]; hold it to noise level of the weight's gradient */
            int64_t nw;
            char wname[PARAM_NAME_LEN + 8];
            snprintf(wname, sizeof wname, "%.*sweight", (int)(strlen(name) - 4), name);
            float *gw = read_f32(f, wname, &nw);
            assert_non_null(gw);
            double mw = 0, mb = 0;
            for (int64_t j = 0; j < nw; j++) mw = fmax(mw, fabs((double)gw[j]));
            for (int64_t j = 0; j < n; j++) mb = fmax(mb, fabs((double)m->grads[e->offset + j]));
            if (!(mb <= 1e-4 * mw + 1e-5)) {
                printf("%s: %s max |grad| %.3g: not at noise level (k_proj.weight max |grad| %.3g)\n", path, name, mb, mw);
                ok = 0;
            }
            free(gw);
            free(g);
            continue;
        }
        ok &= compare(path, name, m->grads + e->offset, g, n, &r);
        worst_grad = fmax(worst_grad, r);
        n_grads++;
        free(g);
    }
    printf("%s: %d hidden states, %d gradients; worst |err|/max|ref|: hidden %.2e, gradients %.2e\n", path, c.L + 2,
           n_grads, worst_hidden, worst_grad);
    ok &= bf16_reference(f, path, m, wav, len, B, S, R);
    free(R);
    free(wav);
    model_free(m);
    H5Fclose(f);
    return ok;
}

static void test_parity_torchaudio(void **state) {
    (void)state;
    const char *dir = getenv("KOE_MODEL_REF");
    if (!dir || !*dir) {
        printf("SKIPPED: parity with torchaudio needs KOE_MODEL_REF=DIR of model_ref.py outputs "
               "(run tests/e2e/model_parity.sh)\n");
        skip();
    }
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int files = 0, ok = 1;
    while ((de = readdir(d))) {
        size_t k = strlen(de->d_name);
        if (k < 3 || strcmp(de->d_name + k - 3, ".h5")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        ok &= run_reference(path);
        files++;
    }
    closedir(d);
    assert_true(files > 0);
    assert_true(ok);
}

int main(void) {
    h5_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_group_postln),   cmocka_unit_test(test_fd_layer_preln),
        cmocka_unit_test(test_fd_group_preln_eval), cmocka_unit_test(test_fd_layer_postln_eval),
        cmocka_unit_test(test_fd_fbank),          cmocka_unit_test(test_fd_conformer),
        cmocka_unit_test(test_fd_layerdrop),      cmocka_unit_test(test_padding_independence),
        cmocka_unit_test(test_layerdrop_identity), cmocka_unit_test(test_dropout_by_utterance),
        cmocka_unit_test(test_normalize_waveform),
        cmocka_unit_test(test_parity_torchaudio),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_objective.c — core/objective: the one interface over the heads composes them with the model
 * correctly. For HuBERT (waveform frontend: head CE + feature_pen_weight x frames x feature penalty)
 * and BEST-RQ (fbank frontend: input normalisation, mask noise, CE per codebook), the gradient that
 * objective_backward accumulates for every trainable tensor matches a central finite difference of
 * the loss_sum objective_forward reports (directional derivative along a random +-1 direction, as
 * test_model does); frozen tensors get no gradient. The loss_sum also equals the head sum plus the
 * weighted penalty times the frame count. HuBERT with pred_nomask_weight w > 0 adds w x the CE of the
 * unmasked frames (recomputed here through the head alone) and its gradient; the unmasked accuracy
 * (acc_u) matches a double transcription of the head. (wav2vec 2.0's straight-through gradient is not the
 * derivative of its forward, so tests/unit/test_wav2vec2.c checks it against its own reference.) */
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
#include "../../core/objective.h"
#include "../../core/rng.h"

static void tiny_model(ModelConfig *c, FrontendKind fe) {
    model_config_default(c);
    c->frontend = fe;
    c->n_conv = 3;
    const int dim[] = {8, 8, 6}, k[] = {10, 3, 2}, s[] = {5, 2, 2};
    for (int i = 0; i < 3; i++) c->conv_dim[i] = dim[i], c->conv_kernel[i] = k[i], c->conv_stride[i] = s[i];
    c->feature_grad_mult = 1.0f;
    c->fbank_dim = 6;
    c->fbank_stack = 2;
    c->D = 16;
    c->L = 1;
    c->H = 2;
    c->F = 24;
    c->pos_conv_kernel = 4;
    c->pos_conv_groups = 2;
    c->encoder_layerdrop = 0;
    c->mask_prob = 0.5f;
    c->mask_length = 2;
    c->mask_min_spans = 1;
}

typedef struct {
    Model *m;
    Objective o;
    float *inp, *work; /* the batch input and the copy a forward may modify */
    int64_t len[2], utt[2];
    int32_t *labels;
    int B;
    int64_t S, n_inp;
} Case;

static double forward_scored(Case *k, ObjectiveStats *st, int score_unmasked) {
    memcpy(k->work, k->inp, (size_t)k->n_inp * sizeof(float));
    ObjectiveBatch b = {k->work, k->len, k->utt, k->B, k->S, k->labels, {0, 5, 3, k->utt}};
    objective_forward(&k->o, k->m, &b, st);
    if (score_unmasked) objective_score_unmasked(&k->o, k->m, &b, st);
    return st->loss_sum;
}

static double loss_of(Case *k, ObjectiveStats *st) { return forward_scored(k, st, 0); }

static void setup(Case *k, ObjectiveName name, float nomask_weight) {
    memset(k, 0, sizeof *k);
    ModelConfig mc;
    tiny_model(&mc, name == OBJ_BESTRQ ? FRONTEND_FBANK : FRONTEND_WAVEFORM);
    ObjectiveConfig oc = {0};
    oc.name = name;
    oc.feature_pen_weight = 10.0f;
    oc.nomask_weight = nomask_weight;
    oc.hubert = (HubertHeadConfig){mc.D, 8, 5, 0.1f};
    oc.bestrq = (BestrqConfig){mc.fbank_dim, mc.fbank_stack, mc.D, 2, 7, 3, 0.3f, 4, 0.1f};
    k->B = 2;
    k->S = name == OBJ_BESTRQ ? 40 : 1200;
    k->len[0] = k->S, k->len[1] = name == OBJ_BESTRQ ? 30 : 900;
    k->utt[0] = 3, k->utt[1] = 8;
    ParamTable t;
    params_table_init(&t);
    model_table_build(&mc, &t);
    objective_add_params(&t, &oc);
    k->m = model_create_with_table(&mc, t, k->B, k->S);
    model_init_params(k->m, 1);
    objective_create(&k->o, &oc, k->m);
    k->n_inp = k->B * k->S * (name == OBJ_BESTRQ ? mc.fbank_dim : 1);
    k->inp = malloc((size_t)k->n_inp * sizeof(float));
    k->work = malloc((size_t)k->n_inp * sizeof(float));
    KoeRng r = koe_rng(4, 0, 0, KOE_RNG_NOISE);
    for (int64_t i = 0; i < k->n_inp; i++) k->inp[i] = (float)(name == OBJ_BESTRQ ? koe_rng_normal(&r) : 0.3 * koe_rng_normal(&r));
    for (int b = 0; b < k->B; b++) /* padding stays zero */
        for (int64_t s = k->len[b]; s < k->S; s++)
            for (int d = 0; d < (name == OBJ_BESTRQ ? mc.fbank_dim : 1); d++)
                k->inp[(b * k->S + s) * (name == OBJ_BESTRQ ? mc.fbank_dim : 1) + d] = 0;
    const int64_t T = model_frames(&mc, k->S);
    k->labels = malloc((size_t)(k->B * T) * sizeof *k->labels);
    for (int64_t i = 0; i < k->B * T; i++) k->labels[i] = (int32_t)koe_rng_below(&r, 5);
}

static void teardown(Case *k) {
    objective_free(&k->o);
    model_free(k->m);
    free(k->inp);
    free(k->work);
    free(k->labels);
}

static void check(ObjectiveName name, float nomask_weight, const char *what) {
    Case k;
    setup(&k, name, nomask_weight);
    Model *m = k.m;
    ObjectiveStats st;
    model_zero_grad(m);
    loss_of(&k, &st);
    assert_true(st.frames > 0);
    const double want = st.head_sum + (name == OBJ_HUBERT ? 10.0 * st.feature_pen * (double)st.frames : 0.0);
    assert_true(fabs(st.loss_sum - want) <= 1e-9 * fabs(want));
    if (name == OBJ_HUBERT) { /* head_sum = masked CE + w x unmasked CE, each from the head alone */
        HubertHeadAct act;
        float *mem = malloc((size_t)hubert_head_act_floats(&k.o.cfg.hubert, k.B * m->T) * sizeof(float));
        hubert_head_act_bind(&act, &k.o.cfg.hubert, k.B * m->T, mem);
        double sum[2];
        int64_t n[2], correct;
        hubert_head_forward(&act, &k.o.hp, m->a.out, k.o.mask, m->key_pad, k.labels, k.B, m->T, HUBERT_FRAMES_MASKED,
                            &sum[0], &n[0], &correct);
        hubert_head_forward(&act, &k.o.hp, m->a.out, k.o.mask, m->key_pad, k.labels, k.B, m->T,
                            HUBERT_FRAMES_UNMASKED, &sum[1], &n[1], &correct);
        assert_true(n[0] == st.frames && n[1] > 0);
        const double head = sum[0] + (double)nomask_weight * sum[1];
        assert_true(fabs(st.head_sum - head) <= 1e-9 * fabs(head));
        free(mem);
    }
    if (name == OBJ_HUBERT) assert_true(st.feature_pen > 0);
    objective_backward(&k.o, m, 1.0f);
    int bad = 0, checked = 0;
    for (int i = 0; i < m->table.n; i++) {
        const ParamEntry *e = &m->table.e[i];
        float *p = m->params + e->offset;
        const float *g = m->grads + e->offset;
        if (e->frozen) {
            for (int64_t j = 0; j < e->numel; j++) assert_true(g[j] == 0.0f);
            continue;
        }
        float *save = malloc((size_t)e->numel * sizeof(float));
        memcpy(save, p, (size_t)e->numel * sizeof(float));
        KoeRng r = koe_rng(17, (uint64_t)i, 0, KOE_RNG_NOISE);
        signed char *u = malloc((size_t)e->numel);
        double an = 0, scale = 0, rms = 0;
        for (int64_t j = 0; j < e->numel; j++) {
            u[j] = (koe_rng_u64(&r) >> 63) ? 1 : -1;
            an += (double)g[j] * u[j];
            scale += fabs((double)g[j]);
            rms += (double)save[j] * save[j];
        }
        rms = sqrt(rms / (double)e->numel);
        /* the step: 1% of the tensor's RMS, at least 3e-3. The float loss has rounding noise of a few
         * 1e-6 (it moved by that when kernels summed in another order), which divided by 2h swamps a
         * small gradient: layer 0's q_proj.bias (zero at init, so its step is the floor) has a
         * directional derivative of 0.0022, and with a floor of 1e-3 the difference read 0.0049 or
         * 0.0057 from builds that differ only in LayerNorm's summation order; with steps of 3e-3, 1e-2
         * and 3e-2 it reads 0.0018, 0.0025 and 0.0021. */
        const float h = (float)(1e-2 * (rms > 0.3 ? rms : 0.3));
        for (int64_t j = 0; j < e->numel; j++) p[j] = save[j] + h * u[j];
        double lp = loss_of(&k, &st);
        for (int64_t j = 0; j < e->numel; j++) p[j] = save[j] - h * u[j];
        double lm = loss_of(&k, &st);
        memcpy(p, save, (size_t)e->numel * sizeof(float));
        const double fd = (lp - lm) / (2.0 * h);
        const double err = fabs(fd - an), tol = 2e-2 * fabs(an) + 2e-3 * scale + 3e-3;
        if (err > tol || !isfinite(an)) {
            printf("%s: %-50s analytic %.6g  finite difference %.6g  (|g|_1 %.3g)\n", what, e->name, an, fd, scale);
            bad++;
        }
        checked++;
        free(u);
        free(save);
    }
    printf("%s: %d tensors checked\n", what, checked);
    assert_int_equal(bad, 0);
    teardown(&k);
}

/* acc_u: the unmasked frames' correct predictions, against a double transcription of the head
 * (cos(final_proj(x), label_embedding_c) / logit_temp, correct when the label's logit is the largest)
 * on the forward's own encoder output, mask and padding. A frame whose two best logits are within
 * 1e-4 could go either way in float: such frames are counted and allowed to differ. Scoring them
 * (objective_score_unmasked) changes neither the loss nor the masked counts; without it nothing is counted. */
static void test_hubert_acc_u(void **state) {
    (void)state;
    Case k;
    setup(&k, OBJ_HUBERT, 0.0f);
    Model *m = k.m;
    ObjectiveStats plain, st;
    const double loss = forward_scored(&k, &plain, 0);
    assert_true(plain.frames_u == 0 && plain.correct_u == 0);
    assert_true(forward_scored(&k, &st, 1) == loss && st.frames == plain.frames && st.correct == plain.correct);
    const HubertHeadConfig *hc = &k.o.cfg.hubert;
    const int D = hc->D, F = hc->final_dim, C = hc->n_classes;
    int64_t n = 0, correct = 0, close = 0;
    for (int64_t i = 0; i < k.B * m->T; i++) {
        if (k.o.mask[i] || m->key_pad[i] || k.labels[i] < 0) continue;
        double p[64], pn = 0, best = -INFINITY, second = -INFINITY, mine = 0;
        assert_true(F <= 64);
        for (int f = 0; f < F; f++) {
            p[f] = k.o.hp.proj_b[f];
            for (int d = 0; d < D; d++) p[f] += (double)k.o.hp.proj_w[f * D + d] * m->a.out[i * D + d];
            pn += p[f] * p[f];
        }
        for (int c = 0; c < C; c++) {
            double dot = 0, en = 0;
            for (int f = 0; f < F; f++) dot += p[f] * k.o.hp.label_emb[c * F + f], en += (double)k.o.hp.label_emb[c * F + f] * k.o.hp.label_emb[c * F + f];
            const double logit = dot / (fmax(sqrt(pn), 1e-8) * fmax(sqrt(en), 1e-8)) / hc->logit_temp;
            if (c == k.labels[i]) mine = logit;
            if (logit > best) second = best, best = logit;
            else if (logit > second) second = logit;
        }
        n++;
        correct += mine >= best;
        close += best - second < 1e-4;
    }
    printf("acc_u: %lld of %lld unmasked frames correct (koe %lld of %lld; %lld near ties)\n", (long long)correct,
           (long long)n, (long long)st.correct_u, (long long)st.frames_u, (long long)close);
    assert_true(n > 0 && st.frames_u == n);
    assert_true(fabs(st.correct_u - (double)correct) <= (double)close);
    teardown(&k);
}

static void test_hubert(void **s) { (void)s, check(OBJ_HUBERT, 0.0f, "hubert"); }
static void test_hubert_nomask(void **s) { (void)s, check(OBJ_HUBERT, 0.5f, "hubert, pred_nomask_weight 0.5"); }
static void test_bestrq(void **s) { (void)s, check(OBJ_BESTRQ, 0.0f, "bestrq"); }

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_hubert), cmocka_unit_test(test_hubert_nomask),
                                       cmocka_unit_test(test_hubert_acc_u),
                                       cmocka_unit_test(test_bestrq)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

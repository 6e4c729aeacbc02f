/* test_wav2vec2.c — wav2vec 2.0's objective head (core/wav2vec2.c).
 * Unit tests:
 *  - fd_train / fd_eval: forward against a naive double transcription (frame selection, dropout,
 *    quantizer, perplexities, InfoNCE with -inf for negatives equal to the positive), and every
 *    gradient (x, features, all seven head tensors) against central differences of the double loss
 *    dloss * sum CE + ddiv * diversity. The straight-through estimator is made differentiable without
 *    changing it: with the Gumbel noise, negatives and dropout mask fixed, the naive loss uses the
 *    codevector weights w = onehot(k0) + s(theta) - s(theta0), where k0 and s(theta0) are the hard
 *    choice and Gumbel-softmax at the point of evaluation. Its value there is the hard forward and its
 *    derivative is exactly the straight-through gradient, so the finite differences check the whole
 *    quantizer path (weight_proj and the features through the soft probabilities, codevectors
 *    through the one-hot).
 *  - negatives: K per frame, never the frame itself, always in the same utterance; utterances with
 *    fewer than 2 masked frames and padded frames are not scored; a 2-frame utterance's negatives are
 *    the other frame; every other frame is drawn; the same utterance gives the same negatives, noise
 *    and row losses in another batch layout.
 *  - a negative with the positive's codes gets probability exactly 0 (-inf logit), others do not.
 *  - ranks: two half-batches with summed prob/code sums (wav2vec2_head_reduce) give the whole batch's
 *    loss, perplexities and gradients.
 *  - temperature schedule, Gumbel noise statistics, backward accumulates, initialisation.
 * Parity (tests/e2e/wav2vec2_parity.sh): with KOE_WAV2VEC2_DUMP=FILE a case (inputs, weights, the
 * Gumbel noise, dropout mask and negatives) is written for tests/reference/wav2vec2_ref.py; with
 * KOE_WAV2VEC2_REF=FILE (the same file after the reference added its results) loss, counts,
 * perplexities and all gradients are compared, 1e-4 * max|ref| + 1e-5, worst element printed. */
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
#include "../../core/rng.h"
#include "../../core/wav2vec2.h"
#include "../../data/h5util.h"
#include "parity_h5.h"

typedef struct {
    Wav2vec2HeadConfig cfg;
    ParamTable t;
    float *params, *grads;
    Wav2vec2HeadParams p, g;
    int B;
    int64_t T;
    float *x, *dx;       /* (B, T, D) */
    float *feat, *dfeat; /* (B, T, C) */
    uint8_t *mask, *pad;
    int64_t *utt;
    float *act_mem;
    Wav2vec2HeadAct act;
    ModelRun run;
} Case;

static Wav2vec2HeadConfig small_cfg(int G, int V, int K) {
    return (Wav2vec2HeadConfig){.C = 6, .D = 5, .final_dim = 4, .G = G, .V = V, .vq_dim = 2 * G, .n_negatives = K,
                                .logit_temp = 0.1f, .temp = {2.0, 0.5, 0.999995}, .dropout_features = 0.25f};
}

static void case_alloc(Case *k, const Wav2vec2HeadConfig *cfg, int B, int64_t T) {
    memset(k, 0, sizeof *k);
    k->cfg = *cfg;
    params_table_init(&k->t);
    wav2vec2_head_add_params(&k->t, &k->cfg);
    k->params = koe_calloc((size_t)k->t.total, sizeof(float));
    k->grads = koe_calloc((size_t)k->t.total, sizeof(float));
    wav2vec2_head_bind(&k->t, k->params, &k->p);
    wav2vec2_head_bind(&k->t, k->grads, &k->g);
    k->B = B;
    k->T = T;
    k->x = koe_calloc((size_t)(B * T * cfg->D), sizeof(float));
    k->dx = koe_calloc((size_t)(B * T * cfg->D), sizeof(float));
    k->feat = koe_calloc((size_t)(B * T * cfg->C), sizeof(float));
    k->dfeat = koe_calloc((size_t)(B * T * cfg->C), sizeof(float));
    k->mask = koe_calloc((size_t)(B * T), 1);
    k->pad = koe_calloc((size_t)(B * T), 1);
    k->utt = koe_calloc((size_t)B, sizeof(int64_t));
    k->act_mem = koe_malloc((size_t)wav2vec2_head_act_floats(&k->cfg, B, T) * sizeof(float));
    wav2vec2_head_act_bind(&k->act, &k->cfg, B, T, k->act_mem);
    k->run = (ModelRun){.train = 1, .seed = 77, .step = 12345};
}

/* Random case: params_init with weight_proj scaled by wp_scale (so the softmaxes are not saturated and
 * the straight-through gradient is visible), x and features N(0, 1), utterance b has T - 2b valid
 * frames, mask ~ Bernoulli(0.5) (padding included: the head must ignore it), utterance ids 1000 + 7b. */
static void case_random(Case *k, const Wav2vec2HeadConfig *cfg, int B, int64_t T, uint64_t seed, float wp_scale) {
    case_alloc(k, cfg, B, T);
    params_init(&k->t, k->params, seed);
    for (int64_t i = 0; i < (int64_t)cfg->G * cfg->V * cfg->C; i++) k->p.wp_w[i] *= wp_scale;
    KoeRng r = koe_rng(seed, 1, 0, KOE_RNG_INIT);
    for (int64_t i = 0; i < B * T * cfg->D; i++) k->x[i] = (float)koe_rng_normal(&r);
    for (int64_t i = 0; i < B * T * cfg->C; i++) k->feat[i] = (float)koe_rng_normal(&r);
    for (int b = 0; b < B; b++) {
        k->utt[b] = 1000 + 7 * b;
        for (int64_t t = 0; t < T; t++) {
            k->pad[b * T + t] = t >= T - 2 * b;
            k->mask[b * T + t] = koe_rng_uniform(&r) < 0.5;
        }
    }
}

static void case_free(Case *k) {
    params_table_free(&k->t);
    free(k->params);
    free(k->grads);
    free(k->x);
    free(k->dx);
    free(k->feat);
    free(k->dfeat);
    free(k->mask);
    free(k->pad);
    free(k->utt);
    free(k->act_mem);
}

static void run_forward(Case *k, Wav2vec2Stats *st) {
    wav2vec2_head_forward(&k->act, &k->p, k->x, k->feat, k->mask, k->pad, k->utt, k->B, k->T, &k->run, st);
}

/* ---- naive double loss -------------------------------------------------------------------------------- */

/* What the naive loss holds fixed: the scored rows (chosen by the naive rule), the dropout keep
 * pattern and negatives (from the C forward), the Gumbel noise, and, after capture, the hard codes
 * and the Gumbel-softmax at the evaluation point. */
typedef struct {
    int64_t N;
    int64_t *row;   /* (N) b*T + t */
    int *ub;        /* (N) utterance */
    uint8_t *keep;  /* (N, C) */
    int32_t *neg;   /* (N, K) */
    float *noise;   /* (N, GV) */
    int32_t *code;  /* (N, G) */
    double *gs0;    /* (N, GV) */
    int captured;
} Frozen;

typedef struct {
    double ce, code_ppl, prob_ppl, diversity;
    int64_t n_correct, n_neg_inf;
} NaiveOut;

static double clamped_norm(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i] * v[i];
    return sqrt(fmax(s, (double)WAV2VEC2_COS_EPS * WAV2VEC2_COS_EPS));
}

static double naive_ppl(const double *sum, double n, int G, int V) {
    double ppl = 0;
    for (int g = 0; g < G; g++) {
        double h = 0;
        for (int v = 0; v < V; v++) h -= sum[g * V + v] / n * log(sum[g * V + v] / n + 1e-7);
        ppl += exp(h);
    }
    return ppl;
}

/* dloss * sum CE + ddiv * diversity, all in double; P laid out by the table. */
static double naive_loss(const Case *k, Frozen *fz, const double *x, const double *feat, const double *P, double dloss,
                         double ddiv, NaiveOut *o) {
    const Wav2vec2HeadConfig *c = &k->cfg;
    const int D = c->D, C = c->C, F = c->final_dim, G = c->G, V = c->V, GV = G * V, Q = c->vq_dim, Qg = Q / G,
              K = c->n_negatives;
    const int train = k->run.train;
    const double *W = P + k->t.e[0].offset, *bw = P + k->t.e[1].offset, *cv = P + k->t.e[2].offset,
                 *Wq = P + k->t.e[3].offset, *bq = P + k->t.e[4].offset, *Wf = P + k->t.e[5].offset,
                 *bf = P + k->t.e[6].offset;
    const double tau = wav2vec2_temperature(c, (int64_t)k->run.step), scale = 1.0 / (1.0 - c->dropout_features);
    const int64_t N = fz->N;
    double *z = koe_calloc((size_t)(N * F), sizeof(double)), *cc = koe_calloc((size_t)(N * F), sizeof(double));
    double *psum = koe_calloc((size_t)GV, sizeof(double)), *csum = koe_calloc((size_t)GV, sizeof(double));
    double y[64], l[640], gs[640], q[64];
    KOE_ASSERT(C <= 64 && GV <= 640 && Q <= 64);
    for (int64_t i = 0; i < N; i++) {
        const int64_t r = fz->row[i];
        for (int ch = 0; ch < C; ch++) y[ch] = train ? feat[r * C + ch] * fz->keep[i * C + ch] * scale : feat[r * C + ch];
        for (int j = 0; j < GV; j++) {
            l[j] = bw[j];
            for (int ch = 0; ch < C; ch++) l[j] += W[j * C + ch] * y[ch];
        }
        for (int g = 0; g < G; g++) {
            const double *lg = l + g * V;
            double mx = lg[0], s = 0;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (lg[v] > lg[best]) best = v;
            mx = lg[best];
            csum[g * V + best] += 1;
            for (int v = 0; v < V; v++) s += exp(lg[v] - mx);
            for (int v = 0; v < V; v++) psum[g * V + v] += exp(lg[v] - mx) / s;
            if (train) {
                double m2 = -INFINITY, s2 = 0;
                for (int v = 0; v < V; v++) gs[g * V + v] = (lg[v] + fz->noise[i * GV + g * V + v]) / tau, m2 = fmax(m2, gs[g * V + v]);
                for (int v = 0; v < V; v++) s2 += exp(gs[g * V + v] - m2);
                int b2 = 0;
                for (int v = 0; v < V; v++) {
                    gs[g * V + v] = exp(gs[g * V + v] - m2) / s2;
                    if (gs[g * V + v] > gs[g * V + b2]) b2 = v;
                }
                if (!fz->captured) fz->code[i * G + g] = b2;
            } else if (!fz->captured) {
                fz->code[i * G + g] = best;
            }
            for (int e = 0; e < Qg; e++) q[g * Qg + e] = 0;
            for (int v = 0; v < V; v++) {
                double w = v == fz->code[i * G + g];
                if (train) {
                    if (!fz->captured) fz->gs0[i * GV + g * V + v] = gs[g * V + v];
                    w += gs[g * V + v] - fz->gs0[i * GV + g * V + v];
                }
                for (int e = 0; e < Qg; e++) q[g * Qg + e] += w * cv[(g * V + v) * Qg + e];
            }
        }
        for (int f = 0; f < F; f++) {
            z[i * F + f] = bq[f];
            for (int e = 0; e < Q; e++) z[i * F + f] += Wq[f * Q + e] * q[e];
            cc[i * F + f] = bf[f];
            for (int d = 0; d < D; d++) cc[i * F + f] += Wf[f * D + d] * x[r * D + d];
        }
    }
    fz->captured = 1;
    memset(o, 0, sizeof *o);
    double logit[256];
    KOE_ASSERT(K + 1 <= 256);
    for (int64_t i = 0; i < N; i++) {
        const double cn = clamped_norm(cc + i * F, F);
        for (int j = 0; j <= K; j++) {
            const int64_t tr = j == 0 ? i : fz->neg[i * K + j - 1];
            int same = j > 0;
            for (int g = 0; g < G; g++) same &= fz->code[i * G + g] == fz->code[tr * G + g];
            if (same) {
                logit[j] = -INFINITY;
                o->n_neg_inf++;
                continue;
            }
            double dot = 0;
            for (int f = 0; f < F; f++) dot += cc[i * F + f] * z[tr * F + f];
            logit[j] = dot / (cn * clamped_norm(z + tr * F, F)) / c->logit_temp;
        }
        double mx = logit[0], mn = logit[0], s = 0;
        for (int j = 1; j <= K; j++) mx = fmax(mx, logit[j]), mn = fmin(mn, logit[j]);
        o->n_correct += logit[0] >= mx && !(logit[0] <= mn);
        for (int j = 0; j <= K; j++) s += exp(logit[j] - mx);
        o->ce += mx + log(s) - logit[0];
    }
    o->prob_ppl = naive_ppl(psum, (double)N, G, V);
    o->code_ppl = naive_ppl(csum, (double)N, G, V);
    o->diversity = (GV - o->prob_ppl) / GV;
    free(z);
    free(cc);
    free(psum);
    free(csum);
    return dloss * o->ce + ddiv * o->diversity;
}

/* Frozen inputs from a C forward: rows by the naive rule (checked against the C selection), keep
 * pattern from the C dropout output, negatives from the C forward, noise regenerated. */
static void frozen_from(Frozen *fz, const Case *k) {
    const Wav2vec2HeadConfig *c = &k->cfg;
    const int C = c->C, G = c->G, GV = G * c->V, K = c->n_negatives;
    const int64_t T = k->T;
    memset(fz, 0, sizeof *fz);
    fz->row = koe_malloc((size_t)(k->B * T) * sizeof(int64_t));
    fz->ub = koe_malloc((size_t)(k->B * T) * sizeof(int));
    for (int b = 0; b < k->B; b++) {
        int64_t m = 0;
        for (int64_t t = 0; t < T; t++) m += k->mask[b * T + t] && !k->pad[b * T + t];
        if (m < 2) continue;
        for (int64_t t = 0; t < T; t++)
            if (k->mask[b * T + t] && !k->pad[b * T + t]) fz->ub[fz->N] = b, fz->row[fz->N++] = b * T + t;
    }
    const int64_t N = fz->N;
    assert_int_equal(N, k->act.N);
    for (int64_t i = 0; i < N; i++) assert_int_equal(fz->row[i], k->act.idx[i]);
    fz->keep = koe_malloc((size_t)(N * C));
    fz->neg = koe_malloc((size_t)(N * K) * sizeof(int32_t));
    fz->noise = koe_malloc((size_t)(N * GV) * sizeof(float));
    fz->code = koe_malloc((size_t)(N * G) * sizeof(int32_t));
    fz->gs0 = koe_malloc((size_t)(N * GV) * sizeof(double));
    for (int64_t i = 0; i < N; i++) {
        for (int ch = 0; ch < C; ch++) {
            assert_true(k->feat[fz->row[i] * C + ch] != 0.0f);
            fz->keep[i * C + ch] = k->act.yin[i * C + ch] != 0.0f;
        }
        const int b = fz->ub[i];
        wav2vec2_gumbel_noise(fz->noise + i * GV, k->run.seed, k->run.step, k->utt[b], fz->row[i] - b * k->T, GV);
    }
    memcpy(fz->neg, k->act.neg, (size_t)(N * K) * sizeof(int32_t));
}

static void frozen_free(Frozen *fz) {
    free(fz->row);
    free(fz->ub);
    free(fz->keep);
    free(fz->neg);
    free(fz->noise);
    free(fz->code);
    free(fz->gs0);
}

static double *to_double(const float *v, int64_t n) {
    double *d = koe_malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

typedef struct {
    const Case *k;
    Frozen *fz;
    double *x, *feat, *P, dloss, ddiv;
} FdArgs;

/* got[i] vs d(naive)/d(v[i]) by central differences; 1e-4 * max|fd| + 1e-6; the gradient must not be
 * negligible (min_max: a check of zeros against zeros proves nothing). */
static void check_fd(const FdArgs *a, const char *what, double *v, int64_t n, const float *got, double min_max) {
    const double h = 1e-5;
    double *fd = koe_malloc((size_t)n * sizeof(double)), maxfd = 0, worst = -1;
    int64_t wi = 0;
    NaiveOut o;
    for (int64_t i = 0; i < n; i++) {
        const double v0 = v[i];
        v[i] = v0 + h;
        const double lp = naive_loss(a->k, a->fz, a->x, a->feat, a->P, a->dloss, a->ddiv, &o);
        v[i] = v0 - h;
        const double lm = naive_loss(a->k, a->fz, a->x, a->feat, a->P, a->dloss, a->ddiv, &o);
        v[i] = v0;
        fd[i] = (lp - lm) / (2 * h);
        maxfd = fmax(maxfd, fabs(fd[i]));
    }
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs(got[i] - fd[i]);
        if (e > worst) worst = e, wi = i;
    }
    const double tol = 1e-4 * maxfd + 1e-6;
    print_message("fd %-30s max|fd| %.3e worst error %.3e at %lld (tol %.3e)\n", what, maxfd, worst, (long long)wi, tol);
    if (!(worst <= tol))
        fail_msg("%s: element %lld: backward %.8g, finite difference %.8g", what, (long long)wi, got[wi], fd[wi]);
    if (!(maxfd >= min_max)) fail_msg("%s: gradient too small to test (max %.3e)", what, maxfd);
    free(fd);
}

static void fd_case(int train) {
    Case k;
    const Wav2vec2HeadConfig cfg = small_cfg(2, 3, 4);
    case_random(&k, &cfg, 3, 10, 5 + (uint64_t)train, 0.3f);
    k.run.train = train;
    Wav2vec2Stats st;
    run_forward(&k, &st);
    const float dloss = 0.37f, ddiv = 0.8f;
    wav2vec2_head_backward(k.dx, k.dfeat, &k.g, &k.act, &k.p, dloss, ddiv);

    Frozen fz;
    frozen_from(&fz, &k);
    const int64_t nx = k.B * k.T * cfg.D, nf = k.B * k.T * cfg.C;
    double *x = to_double(k.x, nx), *feat = to_double(k.feat, nf), *P = to_double(k.params, k.t.total);
    NaiveOut o;
    naive_loss(&k, &fz, x, feat, P, dloss, ddiv, &o);
    for (int64_t i = 0; i < fz.N * cfg.G; i++) assert_int_equal(fz.code[i], k.act.code[i]);
    print_message("%s: %lld frames, loss %.9g naive %.9g, correct %lld (naive %lld), code_ppl %.6g (%.6g), "
                  "prob_ppl %.6g (%.6g), %lld negatives at -inf\n",
                  train ? "train" : "eval", (long long)st.n_frames, st.loss_sum, o.ce, (long long)st.n_correct,
                  (long long)o.n_correct, st.code_ppl, o.code_ppl, st.prob_ppl, o.prob_ppl, (long long)o.n_neg_inf);
    assert_true(st.n_frames >= 8);
    assert_true(o.n_neg_inf > 0); /* the -inf path is exercised */
    assert_true(fabs(st.loss_sum - o.ce) <= 1e-5 * fabs(o.ce));
    assert_int_equal(st.n_correct, o.n_correct);
    assert_true(fabs(st.code_ppl - o.code_ppl) <= 1e-9 * o.code_ppl);
    assert_true(fabs(st.prob_ppl - o.prob_ppl) <= 1e-5 * o.prob_ppl);
    assert_true(fabs(st.diversity - o.diversity) <= 1e-5);
    assert_true(fabs(st.temp - 2.0 * pow(0.999995, 12345)) <= 1e-12);

    FdArgs a = {&k, &fz, x, feat, P, dloss, ddiv};
    check_fd(&a, "x", x, nx, k.dx, 1e-3);
    check_fd(&a, "features", feat, nf, k.dfeat, 1e-3);
    for (int j = 0; j < k.t.n; j++)
        check_fd(&a, k.t.e[j].name, P + k.t.e[j].offset, k.t.e[j].numel, k.grads + k.t.e[j].offset, 1e-3);
    free(x);
    free(feat);
    free(P);
    frozen_free(&fz);
    case_free(&k);
}

static void test_fd_train(void **state) {
    (void)state;
    fd_case(1);
}

static void test_fd_eval(void **state) {
    (void)state;
    fd_case(0);
}

/* Evaluation mode: no dropout, codes = argmax of the logits, and without the diversity term no
 * gradient reaches weight_proj or the features (fairseq uses the hard one-hot without straight-through). */
static void test_eval_no_straight_through(void **state) {
    (void)state;
    Case k;
    const Wav2vec2HeadConfig cfg = small_cfg(2, 5, 6);
    case_random(&k, &cfg, 2, 12, 9, 1.0f);
    k.run.train = 0;
    Wav2vec2Stats st;
    run_forward(&k, &st);
    assert_true(st.n_frames > 0);
    for (int64_t i = 0; i < k.act.N; i++) {
        assert_memory_equal(k.act.yin + i * cfg.C, k.feat + k.act.idx[i] * cfg.C, cfg.C * sizeof(float));
        for (int g = 0; g < cfg.G; g++) assert_int_equal(k.act.code[i * cfg.G + g], k.act.hard[i * cfg.G + g]);
    }
    wav2vec2_head_backward(k.dx, k.dfeat, &k.g, &k.act, &k.p, 1.0f, 0.0f);
    for (int64_t i = 0; i < k.B * k.T * cfg.C; i++) assert_true(k.dfeat[i] == 0.0f);
    for (int64_t i = 0; i < cfg.G * cfg.V * (cfg.C + 1); i++) assert_true(k.grads[i] == 0.0f);
    double s = 0;
    for (int64_t i = 0; i < k.B * k.T * cfg.D; i++) s += fabs(k.dx[i]);
    assert_true(s > 0);
    case_free(&k);
}

/* wav2vec2_quantize (koe analyze codebook) gives an evaluation forward's codes and softmax, and
 * wav2vec2_perplexity of their sums the forward's code and prob perplexity. */
static void test_quantize_matches_eval(void **state) {
    (void)state;
    Case k;
    const Wav2vec2HeadConfig cfg = small_cfg(2, 5, 6);
    case_random(&k, &cfg, 2, 12, 21, 1.0f);
    k.run.train = 0;
    Wav2vec2Stats st;
    run_forward(&k, &st);
    const int64_t N = k.act.N, GV = (int64_t)cfg.G * cfg.V;
    assert_true(N > 0);
    float *rows = koe_malloc(sizeof(float) * N * cfg.C), *soft = koe_malloc(sizeof(float) * N * GV);
    int32_t *hard = koe_malloc(sizeof(int32_t) * N * cfg.G);
    double *count = koe_calloc((size_t)GV, sizeof(double)), *prob = koe_calloc((size_t)GV, sizeof(double));
    for (int64_t i = 0; i < N; i++) memcpy(rows + i * cfg.C, k.feat + k.act.idx[i] * cfg.C, sizeof(float) * cfg.C);
    wav2vec2_quantize(&cfg, &k.p, rows, N, soft, hard);
    for (int64_t i = 0; i < N; i++) {
        for (int g = 0; g < cfg.G; g++) {
            assert_int_equal(hard[i * cfg.G + g], k.act.hard[i * cfg.G + g]);
            count[g * cfg.V + hard[i * cfg.G + g]] += 1;
        }
        for (int64_t j = 0; j < GV; j++) {
            assert_true(fabsf(soft[i * GV + j] - k.act.soft[i * GV + j]) <= 1e-6f);
            prob[j] += soft[i * GV + j];
        }
    }
    assert_true(fabs(wav2vec2_perplexity(count, (double)N, cfg.G, cfg.V) - st.code_ppl) <= 1e-12 * st.code_ppl);
    assert_true(fabs(wav2vec2_perplexity(prob, (double)N, cfg.G, cfg.V) - st.prob_ppl) <= 1e-5 * st.prob_ppl);
    free(rows), free(soft), free(hard), free(count), free(prob);
    case_free(&k);
}

/* ---- negatives ----------------------------------------------------------------------------------------- */

static void test_negatives(void **state) {
    (void)state;
    const Wav2vec2HeadConfig cfg = small_cfg(2, 4, 50);
    const int B = 5;
    const int64_t T = 20;
    Case k;
    case_random(&k, &cfg, B, T, 13, 1.0f);
    memset(k.mask, 0, (size_t)(B * T));
    memset(k.pad, 0, (size_t)(B * T));
    /* utt 0: 12 masked frames and 3 masked padded ones; utt 1: one masked frame; utt 2: two;
     * utt 3: none; utt 4: all 20 */
    for (int t = 2; t < 14; t++) k.mask[0 * T + t] = 1;
    for (int t = 17; t < 20; t++) k.mask[0 * T + t] = 1, k.pad[0 * T + t] = 1;
    k.mask[1 * T + 5] = 1;
    k.mask[2 * T + 3] = k.mask[2 * T + 11] = 1;
    for (int t = 0; t < T; t++) k.mask[4 * T + t] = 1;
    Wav2vec2Stats st;
    run_forward(&k, &st);
    const int32_t want[5] = {12, 0, 2, 0, 20};
    assert_int_equal(st.n_frames, 34);
    const int K = cfg.n_negatives;
    for (int b = 0; b < B; b++) {
        assert_int_equal(k.act.count[b], want[b]);
        const int32_t f0 = k.act.first[b], M = k.act.count[b];
        int64_t *hits = koe_calloc((size_t)M + 1, sizeof(int64_t));
        for (int32_t i = f0; i < f0 + M; i++) {
            const int64_t r = k.act.idx[i];
            assert_true(r / T == b && k.mask[r] && !k.pad[r]);
            for (int j = 0; j < K; j++) {
                const int32_t n = k.act.neg[(int64_t)i * K + j];
                assert_true(n >= f0 && n < f0 + M); /* same utterance */
                assert_true(n != i);                /* never the frame itself */
                hits[n - f0]++;
            }
        }
        for (int32_t i = 0; i < M; i++) assert_true(hits[i] > 0); /* every frame is somebody's negative */
        if (M == 2) assert_true(hits[0] == K && hits[1] == K);
        free(hits);
    }
    /* the same utterance alone, at another batch position: same negatives (relative), noise, codes and row losses */
    Case k1;
    case_alloc(&k1, &cfg, 1, T);
    memcpy(k1.params, k.params, (size_t)k.t.total * sizeof(float));
    memcpy(k1.x, k.x + 4 * T * cfg.D, (size_t)(T * cfg.D) * sizeof(float));
    memcpy(k1.feat, k.feat + 4 * T * cfg.C, (size_t)(T * cfg.C) * sizeof(float));
    memcpy(k1.mask, k.mask + 4 * T, (size_t)T);
    k1.utt[0] = k.utt[4];
    Wav2vec2Stats st1;
    run_forward(&k1, &st1);
    const int32_t f0 = k.act.first[4];
    assert_int_equal(k1.act.N, 20);
    for (int64_t i = 0; i < 20; i++) {
        for (int j = 0; j < K; j++) assert_int_equal(k1.act.neg[i * K + j], k.act.neg[(f0 + i) * K + j] - f0);
        for (int g = 0; g < cfg.G; g++) assert_int_equal(k1.act.code[i * cfg.G + g], k.act.code[(f0 + i) * cfg.G + g]);
        assert_memory_equal(k1.act.yin + i * cfg.C, k.act.yin + (f0 + i) * cfg.C, cfg.C * sizeof(float));
        assert_true(fabsf(k1.act.row_loss[i] - k.act.row_loss[f0 + i]) <= 1e-6f * (1 + fabsf(k.act.row_loss[f0 + i])));
    }
    /* another step draws other negatives */
    k1.run.step++;
    run_forward(&k1, &st1);
    int differ = 0;
    for (int64_t i = 0; i < 20 * K; i++) differ += k1.act.neg[i] != k.act.neg[f0 * K + i] - f0;
    assert_true(differ > 20 * K / 2);
    case_free(&k1);
    case_free(&k);
}

/* G = 1, V = 2: most negatives share the positive's code. Exactly those get probability 0. */
static void test_negative_equal_to_positive(void **state) {
    (void)state;
    const Wav2vec2HeadConfig cfg = small_cfg(1, 2, 8);
    Case k;
    case_random(&k, &cfg, 2, 16, 17, 1.0f);
    Wav2vec2Stats st;
    run_forward(&k, &st);
    const int K = cfg.n_negatives;
    int64_t n_same = 0, n_diff = 0;
    for (int64_t i = 0; i < k.act.N; i++) {
        assert_true(k.act.prob[i * (K + 1)] > 0.0f);
        for (int j = 0; j < K; j++) {
            const int32_t n = k.act.neg[i * K + j];
            const float pr = k.act.prob[i * (K + 1) + 1 + j];
            if (k.act.code[n] == k.act.code[i]) n_same++, assert_true(pr == 0.0f);
            else n_diff++, assert_true(pr > 0.0f);
        }
    }
    print_message("negatives with the positive's code: %lld, others %lld\n", (long long)n_same, (long long)n_diff);
    assert_true(n_same > 0 && n_diff > 0);
    assert_true(isfinite(st.loss_sum));
    case_free(&k);
}

/* ---- ranks: two halves with summed quantizer statistics equal the whole batch ------------------------- */

static void test_reduce_across_halves(void **state) {
    (void)state;
    const Wav2vec2HeadConfig cfg = small_cfg(2, 4, 5);
    const int B = 4;
    const int64_t T = 14;
    Case w, h[2];
    case_random(&w, &cfg, B, T, 23, 0.5f);
    Wav2vec2Stats sw, sh[2];
    run_forward(&w, &sw);
    wav2vec2_head_backward(w.dx, w.dfeat, &w.g, &w.act, &w.p, 0.5f, 0.1f);
    const int64_t GV = cfg.G * cfg.V;
    for (int r = 0; r < 2; r++) {
        case_alloc(&h[r], &cfg, B / 2, T);
        memcpy(h[r].params, w.params, (size_t)w.t.total * sizeof(float));
        memcpy(h[r].x, w.x + r * (B / 2) * T * cfg.D, (size_t)((B / 2) * T * cfg.D) * sizeof(float));
        memcpy(h[r].feat, w.feat + r * (B / 2) * T * cfg.C, (size_t)((B / 2) * T * cfg.C) * sizeof(float));
        memcpy(h[r].mask, w.mask + r * (B / 2) * T, (size_t)((B / 2) * T));
        memcpy(h[r].pad, w.pad + r * (B / 2) * T, (size_t)((B / 2) * T));
        memcpy(h[r].utt, w.utt + r * (B / 2), (size_t)(B / 2) * sizeof(int64_t));
        run_forward(&h[r], &sh[r]);
    }
    /* the allreduce */
    for (int64_t j = 0; j < GV; j++) {
        const double ps = h[0].act.prob_sum[j] + h[1].act.prob_sum[j], cs = h[0].act.code_count[j] + h[1].act.code_count[j];
        for (int r = 0; r < 2; r++) h[r].act.prob_sum[j] = ps, h[r].act.code_count[j] = cs;
    }
    const double n = h[0].act.n_sum + h[1].act.n_sum;
    for (int r = 0; r < 2; r++) {
        h[r].act.n_sum = n;
        wav2vec2_head_reduce(&h[r].act, &sh[r]);
        /* float32 logits: a GEMM's rows may round differently with the batch's row count (oneDNN picks
         * its kernel by shape), so the probabilities agree to float rounding, not bit for bit */
        assert_true(fabs(sh[r].prob_ppl - sw.prob_ppl) <= 1e-6 * sw.prob_ppl);
        assert_true(fabs(sh[r].code_ppl - sw.code_ppl) <= 1e-12 * sw.code_ppl);
        wav2vec2_head_backward(h[r].dx, h[r].dfeat, &h[r].g, &h[r].act, &h[r].p, 0.5f, 0.1f);
    }
    assert_int_equal(sh[0].n_frames + sh[1].n_frames, sw.n_frames);
    assert_int_equal(sh[0].n_correct + sh[1].n_correct, sw.n_correct);
    assert_true(fabs(sh[0].loss_sum + sh[1].loss_sum - sw.loss_sum) <= 1e-6 * sw.loss_sum);
    double mx = 0, err = 0;
    for (int64_t i = 0; i < w.t.total; i++) {
        mx = fmax(mx, fabs(w.grads[i]));
        err = fmax(err, fabs(h[0].grads[i] + h[1].grads[i] - w.grads[i]));
    }
    print_message("halves vs whole: max|grad| %.3e, max error %.3e\n", mx, err);
    assert_true(err <= 1e-5 * mx);
    for (int r = 0; r < 2; r++) {
        const int64_t nx = (B / 2) * T * cfg.D, nf = (B / 2) * T * cfg.C;
        for (int64_t i = 0; i < nx; i++) assert_true(fabsf(h[r].dx[i] - w.dx[r * nx + i]) <= 1e-5f * (1 + fabsf(w.dx[r * nx + i])));
        for (int64_t i = 0; i < nf; i++)
            assert_true(fabsf(h[r].dfeat[i] - w.dfeat[r * nf + i]) <= 1e-5f * (1 + fabsf(w.dfeat[r * nf + i])));
        case_free(&h[r]);
    }
    case_free(&w);
}

/* ---- small pieces -------------------------------------------------------------------------------------- */

static void test_temperature(void **state) {
    (void)state;
    const Wav2vec2HeadConfig cfg = small_cfg(2, 320, 100);
    assert_true(wav2vec2_temperature(&cfg, 0) == 2.0);
    assert_true(fabs(wav2vec2_temperature(&cfg, 100000) - 2.0 * pow(0.999995, 100000)) <= 1e-15);
    assert_true(fabs(wav2vec2_temperature(&cfg, 100000) - 1.2130598) <= 1e-6);
    assert_true(wav2vec2_temperature(&cfg, 277258) > 0.5);  /* 2 * 0.999995^n = 0.5 at n ~ 277258.2 */
    assert_true(wav2vec2_temperature(&cfg, 277259) == 0.5);
    assert_true(wav2vec2_temperature(&cfg, 400000) == 0.5);
}

/* Gumbel(0, 1): mean = Euler's gamma, variance pi^2 / 6; streams differ by utterance, frame and step. */
static void test_gumbel_noise(void **state) {
    (void)state;
    enum { GV = 640, NT = 200 };
    float *v = koe_malloc(sizeof(float) * GV * NT);
    for (int t = 0; t < NT; t++) wav2vec2_gumbel_noise(v + t * GV, 3, 10, 42, t, GV);
    double m = 0, s2 = 0;
    for (int i = 0; i < GV * NT; i++) m += v[i];
    m /= GV * NT;
    for (int i = 0; i < GV * NT; i++) s2 += (v[i] - m) * (v[i] - m);
    s2 /= GV * NT - 1;
    print_message("gumbel noise: mean %.4f (0.5772), variance %.4f (1.6449)\n", m, s2);
    assert_true(fabs(m - 0.5772157) < 0.02 && fabs(s2 - 1.6449341) < 0.05);
    float a[GV], b[GV];
    wav2vec2_gumbel_noise(a, 3, 10, 42, 5, GV);
    assert_memory_equal(a, v + 5 * GV, sizeof a);
    wav2vec2_gumbel_noise(b, 3, 10, 43, 5, GV);
    assert_memory_not_equal(a, b, sizeof a);
    wav2vec2_gumbel_noise(b, 3, 11, 42, 5, GV);
    assert_memory_not_equal(a, b, sizeof a);
    free(v);
}

static void test_backward_accumulates(void **state) {
    (void)state;
    const Wav2vec2HeadConfig cfg = small_cfg(2, 4, 5);
    Case k;
    case_random(&k, &cfg, 2, 12, 29, 0.5f);
    Wav2vec2Stats st;
    run_forward(&k, &st);
    wav2vec2_head_backward(k.dx, k.dfeat, &k.g, &k.act, &k.p, 1.0f, 0.1f);
    const int64_t nx = k.B * k.T * cfg.D, nf = k.B * k.T * cfg.C, n = nx + nf + k.t.total;
    float *once = koe_malloc((size_t)n * sizeof(float));
    memcpy(once, k.dx, (size_t)nx * sizeof(float));
    memcpy(once + nx, k.dfeat, (size_t)nf * sizeof(float));
    memcpy(once + nx + nf, k.grads, (size_t)k.t.total * sizeof(float));
    wav2vec2_head_backward(k.dx, k.dfeat, &k.g, &k.act, &k.p, 1.0f, 0.1f);
    for (int64_t i = 0; i < nx; i++) assert_float_equal(k.dx[i], 2 * once[i], 1e-6 * (1 + fabs(once[i])));
    for (int64_t i = 0; i < nf; i++) assert_float_equal(k.dfeat[i], 2 * once[nx + i], 1e-6 * (1 + fabs(once[nx + i])));
    for (int64_t i = 0; i < k.t.total; i++)
        assert_float_equal(k.grads[i], 2 * once[nx + nf + i], 1e-6 * (1 + fabs(once[nx + nf + i])));
    free(once);
    case_free(&k);
}

/* Names, shapes and fairseq's initialisation at Base sizes. */
static void test_params_init(void **state) {
    (void)state;
    const Wav2vec2HeadConfig cfg = {.C = 512, .D = 768, .final_dim = 256, .G = 2, .V = 320, .vq_dim = 256,
                                    .n_negatives = 100, .logit_temp = 0.1f, .temp = {2, 0.5, 0.999995}};
    ParamTable t;
    params_table_init(&t);
    wav2vec2_head_add_params(&t, &cfg);
    const char *names[7] = {"quantizer.weight_proj.weight", "quantizer.weight_proj.bias", "quantizer.codevectors",
                            "project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias"};
    const int64_t numel[7] = {640 * 512, 640, 640 * 128, 256 * 256, 256, 256 * 768, 256};
    assert_int_equal(t.n, 7);
    int64_t total = 0;
    for (int j = 0; j < 7; j++) assert_string_equal(t.e[j].name, names[j]), assert_int_equal(t.e[j].numel, numel[j]), total += numel[j];
    assert_int_equal(t.total, total);
    assert_int_equal(t.e[2].ndim, 3);
    assert_int_equal(t.e[2].shape[0], 1);
    assert_int_equal(t.e[2].shape[1], 640);
    assert_int_equal(t.e[2].shape[2], 128);
    float *buf = koe_malloc((size_t)t.total * sizeof(float));
    params_init(&t, buf, 3);
    Wav2vec2HeadParams p;
    wav2vec2_head_bind(&t, buf, &p);
    double m = 0, s2 = 0;
    for (int64_t i = 0; i < numel[0]; i++) m += p.wp_w[i], s2 += (double)p.wp_w[i] * p.wp_w[i];
    m /= (double)numel[0];
    s2 = s2 / (double)numel[0] - m * m;
    assert_true(fabs(m) < 0.01 && fabs(s2 - 1.0) < 0.01); /* N(0, 1) */
    for (int64_t i = 0; i < numel[1]; i++) assert_true(p.wp_b[i] == 0.0f);
    const struct {
        const float *v;
        int64_t n;
        double lo, hi;
    } want[5] = {{p.codevectors, numel[2], 0, 1},          {p.pq_w, numel[3], -1 / 16.0, 1 / 16.0},
                 {p.pq_b, numel[4], -1 / 16.0, 1 / 16.0}, {p.fp_w, numel[5], -1 / sqrt(768.0), 1 / sqrt(768.0)},
                 {p.fp_b, numel[6], -1 / sqrt(768.0), 1 / sqrt(768.0)}};
    for (int j = 0; j < 5; j++) {
        double mn = INFINITY, mx = -INFINITY;
        for (int64_t i = 0; i < want[j].n; i++) mn = fmin(mn, want[j].v[i]), mx = fmax(mx, want[j].v[i]);
        const double w = want[j].hi - want[j].lo;
        assert_true(mn >= want[j].lo && mx <= want[j].hi);
        assert_true(mn <= want[j].lo + 0.03 * w && mx >= want[j].hi - 0.03 * w);
    }
    free(buf);
    params_table_free(&t);
}

/* ---- parity with the PyTorch reference (KOE_WAV2VEC2_DUMP, KOE_WAV2VEC2_REF) ---------------------------- */

/* The parity cases: name, config, batch, train flag, weight_proj scale, dloss, ddiv. The Base-like
 * case uses fairseq's V = 320 and G = 2 at reduced widths. */
typedef struct {
    const char *name;
    Wav2vec2HeadConfig cfg;
    int B;
    int64_t T;
    int train;
    float wp_scale, dloss, ddiv;
} ParityCase;

static const ParityCase parity_cases[] = {
    {"train", {.C = 32, .D = 24, .final_dim = 16, .G = 2, .V = 320, .vq_dim = 16, .n_negatives = 100,
               .logit_temp = 0.1f, .temp = {2, 0.5, 0.999995}, .dropout_features = 0.1f}, 3, 60, 1, 0.2f, 0.01f, 0.1f},
    {"collide", {.C = 8, .D = 6, .final_dim = 4, .G = 2, .V = 2, .vq_dim = 4, .n_negatives = 10,
                 .logit_temp = 0.1f, .temp = {2, 0.5, 0.999995}, .dropout_features = 0.3f}, 2, 20, 1, 1.0f, 0.05f, 0.1f},
    {"eval", {.C = 32, .D = 24, .final_dim = 16, .G = 2, .V = 40, .vq_dim = 16, .n_negatives = 20,
              .logit_temp = 0.1f, .temp = {2, 0.5, 0.999995}, .dropout_features = 0.1f}, 2, 30, 0, 0.2f, 0.02f, 0.1f},
};

static void parity_case_make(Case *k, const ParityCase *pc, uint64_t seed) {
    case_random(k, &pc->cfg, pc->B, pc->T, seed, pc->wp_scale);
    k->run.train = pc->train;
    k->run.step = 54321;
}

static int64_t parity_n_cases(void) { return (int64_t)(sizeof parity_cases / sizeof parity_cases[0]); }

static void h5ok(int rc, const char *what) {
    if (rc < 0) fail_msg("writing %s: %s", what, h5_last_error());
}

static void test_parity_dump(void **state) {
    (void)state;
    const char *path = getenv("KOE_WAV2VEC2_DUMP");
    if (!path || !*path) {
        print_message("KOE_WAV2VEC2_DUMP is not set: not writing the parity inputs (tests/e2e/wav2vec2_parity.sh does)\n");
        skip();
    }
    h5_init();
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) fail_msg("%s: cannot create: %s", path, h5_last_error());
    for (int64_t ci = 0; ci < parity_n_cases(); ci++) {
        const ParityCase *pc = &parity_cases[ci];
        const Wav2vec2HeadConfig *c = &pc->cfg;
        Case k;
        parity_case_make(&k, pc, 100 + (uint64_t)ci);
        Wav2vec2Stats st;
        run_forward(&k, &st);
        const int64_t N = k.act.N, GV = c->G * c->V, K = c->n_negatives;
        hid_t g = H5Gcreate2(file, pc->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) fail_msg("%s: cannot create group %s", path, pc->name);
        const struct {
            const char *n;
            int64_t v;
        } ia[] = {{"B", pc->B}, {"T", pc->T}, {"C", c->C}, {"D", c->D}, {"F", c->final_dim}, {"G", c->G}, {"V", c->V},
                  {"Q", c->vq_dim}, {"K", K}, {"N", N}, {"train", pc->train}, {"step", (int64_t)k.run.step}};
        for (size_t i = 0; i < sizeof ia / sizeof ia[0]; i++) h5ok(h5_attr_write_i64(g, ia[i].n, ia[i].v), ia[i].n);
        const struct {
            const char *n;
            double v;
        } fa[] = {{"tau", st.temp}, {"logit_temp", c->logit_temp}, {"dropout", c->dropout_features},
                  {"dloss", pc->dloss}, {"ddiv", pc->ddiv}};
        for (size_t i = 0; i < sizeof fa / sizeof fa[0]; i++) h5ok(h5_attr_write_f64(g, fa[i].n, fa[i].v), fa[i].n);
        h5ok(h5_write_array(g, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, k.x, k.B * k.T * c->D), "x");
        h5ok(h5_write_array(g, "feat", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, k.feat, k.B * k.T * c->C), "feat");
        int32_t *rows = koe_malloc((size_t)N * sizeof(int32_t));
        uint8_t *keep = koe_malloc((size_t)(N * c->C));
        float *noise = koe_malloc((size_t)(N * GV) * sizeof(float));
        for (int64_t i = 0; i < N; i++) {
            const int64_t r = k.act.idx[i], b = r / k.T;
            rows[i] = (int32_t)r;
            for (int ch = 0; ch < c->C; ch++) keep[i * c->C + ch] = k.act.yin[i * c->C + ch] != 0.0f;
            wav2vec2_gumbel_noise(noise + i * GV, k.run.seed, k.run.step, k.utt[b], r - b * k.T, (int)GV);
        }
        h5ok(h5_write_array(g, "rows", H5T_STD_I32LE, H5T_NATIVE_INT32, rows, N), "rows");
        h5ok(h5_write_array(g, "keep", H5T_STD_U8LE, H5T_NATIVE_UINT8, keep, N * c->C), "keep");
        h5ok(h5_write_array(g, "noise", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, noise, N * GV), "noise");
        h5ok(h5_write_array(g, "neg", H5T_STD_I32LE, H5T_NATIVE_INT32, k.act.neg, N * K), "neg");
        for (int j = 0; j < k.t.n; j++)
            h5ok(h5_write_array(g, k.t.e[j].name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, k.params + k.t.e[j].offset,
                                k.t.e[j].numel), k.t.e[j].name);
        print_message("parity dump %s: %lld frames\n", pc->name, (long long)N);
        free(rows);
        free(keep);
        free(noise);
        H5Gclose(g);
        case_free(&k);
    }
    H5Fclose(file);
}

static double ref_f64(hid_t grp, const char *path, const char *attr) {
    double v;
    KoeError err;
    if (h5_attr_read_f64(grp, path, attr, &v, &err) < 0) fail_msg("%s", err.msg);
    return v;
}

static void test_parity_torch(void **state) {
    (void)state;
    const char *path = getenv("KOE_WAV2VEC2_REF");
    if (!path || !*path) {
        print_message("KOE_WAV2VEC2_REF is not set: skipping the PyTorch parity check (run "
                      "tests/e2e/wav2vec2_parity.sh, which makes the reference file and sets it)\n");
        skip();
    }
    h5_init();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) fail_msg("%s: cannot open: %s", path, h5_last_error());
    for (int64_t ci = 0; ci < parity_n_cases(); ci++) {
        const ParityCase *pc = &parity_cases[ci];
        const Wav2vec2HeadConfig *c = &pc->cfg;
        hid_t g = H5Gopen2(file, pc->name, H5P_DEFAULT);
        if (g < 0) fail_msg("%s: no group '%s' (regenerate it with tests/e2e/wav2vec2_parity.sh)", path, pc->name);
        Case k;
        parity_case_make(&k, pc, 100 + (uint64_t)ci); /* the same inputs the dump wrote */
        Wav2vec2Stats st;
        run_forward(&k, &st);
        wav2vec2_head_backward(k.dx, k.dfeat, &k.g, &k.act, &k.p, pc->dloss, pc->ddiv);
        const int64_t N = k.act.N, K = c->n_negatives;
        int32_t *neg = ref_read(g, path, "neg", H5T_NATIVE_INT32, sizeof(int32_t), N * K);
        assert_memory_equal(neg, k.act.neg, (size_t)(N * K) * sizeof(int32_t)); /* the same draws as dumped */
        int32_t *code = ref_read(g, path, "ref/code", H5T_NATIVE_INT32, sizeof(int32_t), N * c->G);
        int64_t code_diff = 0;
        for (int64_t i = 0; i < N * c->G; i++) code_diff += code[i] != k.act.code[i];
        const double n_correct = ref_f64(g, path, "ref_n_correct");
        print_message("parity %s: %lld frames, codes differing from torch: %lld, correct %lld (torch %.0f), "
                      "code_ppl %.6g (torch %.6g), prob_ppl %.6g (torch %.6g), temp %.6g\n",
                      pc->name, (long long)N, (long long)code_diff, (long long)st.n_correct, n_correct, st.code_ppl,
                      ref_f64(g, path, "ref_code_ppl"), st.prob_ppl, ref_f64(g, path, "ref_prob_ppl"), st.temp);
        assert_int_equal(code_diff, 0);
        assert_int_equal(st.n_correct, (int64_t)n_correct);
        const float loss = (float)st.loss_sum, cppl = (float)st.code_ppl, pppl = (float)st.prob_ppl,
                    div = (float)st.diversity;
        ref_check(g, path, pc->name, "ref/loss", &loss, 1);
        ref_check(g, path, pc->name, "ref/code_ppl", &cppl, 1);
        ref_check(g, path, pc->name, "ref/prob_ppl", &pppl, 1);
        ref_check(g, path, pc->name, "ref/diversity", &div, 1);
        ref_check(g, path, pc->name, "ref/dx", k.dx, k.B * k.T * c->D);
        ref_check(g, path, pc->name, "ref/dfeat", k.dfeat, k.B * k.T * c->C);
        char name[PARAM_NAME_LEN + 16];
        for (int j = 0; j < k.t.n; j++) {
            snprintf(name, sizeof name, "ref/grad.%s", k.t.e[j].name);
            ref_check(g, path, pc->name, name, k.grads + k.t.e[j].offset, k.t.e[j].numel);
        }
        free(neg);
        free(code);
        H5Gclose(g);
        case_free(&k);
    }
    H5Fclose(file);
}

int main(void) {
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_fd_train),          cmocka_unit_test(test_fd_eval),
        cmocka_unit_test(test_eval_no_straight_through), cmocka_unit_test(test_quantize_matches_eval),
        cmocka_unit_test(test_negatives),
        cmocka_unit_test(test_negative_equal_to_positive), cmocka_unit_test(test_reduce_across_halves),
        cmocka_unit_test(test_temperature),       cmocka_unit_test(test_gumbel_noise),
        cmocka_unit_test(test_backward_accumulates), cmocka_unit_test(test_params_init),
    };
    const struct CMUnitTest dump[] = {cmocka_unit_test(test_parity_dump)};
    const struct CMUnitTest parity[] = {cmocka_unit_test(test_parity_torch)};
    /* with KOE_WAV2VEC2_DUMP or KOE_WAV2VEC2_REF set only that step runs (wav2vec2_parity.sh) */
    const char *d = getenv("KOE_WAV2VEC2_DUMP"), *r = getenv("KOE_WAV2VEC2_REF");
    if (d && *d) return cmocka_run_group_tests(dump, NULL, NULL);
    if (r && *r) return cmocka_run_group_tests(parity, NULL, NULL);
    return cmocka_run_group_tests(unit, NULL, NULL) | cmocka_run_group_tests(parity, NULL, NULL);
}

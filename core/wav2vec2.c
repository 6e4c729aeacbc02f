/* wav2vec2.c — wav2vec 2.0's objective head: Gumbel product quantizer, negatives, InfoNCE and the
 * diversity term (see wav2vec2.h for the math and the fairseq correspondence).
 *
 * Forward: select the scored frames -> dropout_features -> weight_proj (GEMM) -> per row and group:
 * soft probabilities, Gumbel-softmax and its argmax -> gather the codevectors -> project_q (GEMM) and
 * final_proj (GEMM) -> normalise rows -> sample negatives per utterance -> cosine logits against
 * [positive, negatives] -> softmax CE per row. Backward is the same list reversed. Per-row work runs
 * on OpenMP threads; scatters (negatives, codevectors) run per utterance or serially in a fixed order,
 * and sums are taken in a fixed order, so nothing depends on the thread count.
 * Must not: allocate, include MPI or HDF5, or decide how the loss is normalised (the caller does). */
#include "wav2vec2.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "gemm.h"
#include "layers.h"
#include "rng.h"

/* dropout_features of frame t of an utterance draws from (seed, step, featdrop_stream(utt, t)); the
 * hash keeps these names apart from the model's small per-layer dropout sites. */
#define W2V_FEATDROP_TAG 0x77617632666472ULL /* "wav2fdr" */

static uint64_t featdrop_stream(int64_t utt, int64_t t) {
    return koe_hash64(koe_hash64((uint64_t)utt ^ W2V_FEATDROP_TAG) + (uint64_t)t);
}

void wav2vec2_head_add_params(ParamTable *t, const Wav2vec2HeadConfig *c) {
    KOE_ASSERT(c->C > 0 && c->D > 0 && c->final_dim > 0 && c->G > 0 && c->V > 1 && c->n_negatives > 0);
    KOE_ASSERT(c->vq_dim > 0 && c->vq_dim % c->G == 0 && c->logit_temp > 0.0f);
    const int64_t GV = (int64_t)c->G * c->V, F = c->final_dim, Q = c->vq_dim;
    const int64_t wp[2] = {GV, c->C}, wpb[1] = {GV}, cv[3] = {1, GV, Q / c->G};
    const int64_t pq[2] = {F, Q}, fp[2] = {F, c->D}, fb[1] = {F};
    params_add(t, "quantizer.weight_proj.weight", 2, wp, PARAM_INIT_NORMAL, 1.0f, 0.0f);
    params_add(t, "quantizer.weight_proj.bias", 1, wpb, PARAM_INIT_ZERO, 0.0f, 0.0f);
    params_add(t, "quantizer.codevectors", 3, cv, PARAM_INIT_UNIFORM, 0.0f, 1.0f);
    const float bq = 1.0f / sqrtf((float)Q), bd = 1.0f / sqrtf((float)c->D); /* nn.Linear's default */
    params_add(t, "project_q.weight", 2, pq, PARAM_INIT_UNIFORM, -bq, bq);
    params_add(t, "project_q.bias", 1, fb, PARAM_INIT_UNIFORM, -bq, bq);
    params_add(t, "final_proj.weight", 2, fp, PARAM_INIT_UNIFORM, -bd, bd);
    params_add(t, "final_proj.bias", 1, fb, PARAM_INIT_UNIFORM, -bd, bd);
}

void wav2vec2_head_bind(const ParamTable *t, float *buf, Wav2vec2HeadParams *p) {
    p->wp_w = params_view(t, buf, "quantizer.weight_proj.weight");
    p->wp_b = params_view(t, buf, "quantizer.weight_proj.bias");
    p->codevectors = params_view(t, buf, "quantizer.codevectors");
    p->pq_w = params_view(t, buf, "project_q.weight");
    p->pq_b = params_view(t, buf, "project_q.bias");
    p->fp_w = params_view(t, buf, "final_proj.weight");
    p->fp_b = params_view(t, buf, "final_proj.bias");
}

/* ---- act arena ------------------------------------------------------------------------------------ */

/* Takes every view from ar (measuring or binding, common.h). int32 views take one float
 * slot per element, int64 and double views two (the arena is malloc'ed memory without declared type). */
static void act_carve(Wav2vec2HeadAct *a, const Wav2vec2HeadConfig *c, int max_B, int64_t M, Arena *ar) {
    _Static_assert(sizeof(int32_t) == sizeof(float) && sizeof(double) == 2 * sizeof(float), "slot sizes");
    const int64_t D = c->D, C = c->C, F = c->final_dim, G = c->G, GV = G * c->V, Q = c->vq_dim,
                  K1 = c->n_negatives + 1;
    a->utt = (int64_t *)arena_take(ar, 2 * (int64_t)max_B);
    a->prob_sum = (double *)arena_take(ar, 2 * GV);
    a->code_count = (double *)arena_take(ar, 2 * GV);
    a->first = (int32_t *)arena_take(ar, max_B);
    a->count = (int32_t *)arena_take(ar, max_B);
    a->idx = (int32_t *)arena_take(ar, M);
    a->code = (int32_t *)arena_take(ar, M * G);
    a->hard = (int32_t *)arena_take(ar, M * G);
    a->neg = (int32_t *)arena_take(ar, M * (K1 - 1));
    a->xs = arena_take(ar, M * D);
    a->yin = arena_take(ar, M * C);
    a->soft = arena_take(ar, M * GV);
    a->gsoft = arena_take(ar, M * GV);
    a->q = arena_take(ar, M * Q);
    a->zhat = arena_take(ar, M * F);
    a->znorm = arena_take(ar, M);
    a->chat = arena_take(ar, M * F);
    a->cnorm = arena_take(ar, M);
    a->prob = arena_take(ar, M * K1);
    a->row_loss = arena_take(ar, M);
    a->dlogit = arena_take(ar, M * K1);
    a->dchat = arena_take(ar, M * F);
    a->dzhat = arena_take(ar, M * F);
    a->dproj = arena_take(ar, M * F);
    a->dq = arena_take(ar, M * Q);
    a->dl = arena_take(ar, M * GV);
    a->dgs = arena_take(ar, M * GV);
    a->dyin = arena_take(ar, M * C);
    a->dxs = arena_take(ar, M * D);
    a->cdiv = arena_take(ar, GV);
}

int64_t wav2vec2_head_act_floats(const Wav2vec2HeadConfig *cfg, int max_B, int64_t max_T) {
    Wav2vec2HeadAct a;
    Arena ar = arena_measure();
    act_carve(&a, cfg, max_B, (int64_t)max_B * max_T, &ar);
    return ar.used;
}

void wav2vec2_head_act_bind(Wav2vec2HeadAct *act, const Wav2vec2HeadConfig *cfg, int max_B, int64_t max_T,
                            float *mem) {
    KOE_ASSERT(max_B > 0 && max_T > 0 && (int64_t)max_B * max_T <= INT32_MAX);
    KOE_ASSERT(((uintptr_t)mem & 7) == 0);
    memset(act, 0, sizeof *act);
    act->cfg = *cfg;
    act->max_B = max_B;
    act->max_T = max_T;
    act->max_frames = (int64_t)max_B * max_T;
    Arena ar = arena_over(mem, wav2vec2_head_act_floats(cfg, max_B, max_T));
    act_carve(act, cfg, max_B, act->max_frames, &ar);
}

/* ---- pieces --------------------------------------------------------------------------------------- */

double wav2vec2_temperature(const Wav2vec2HeadConfig *cfg, int64_t step) {
    const double t = cfg->temp[0] * pow(cfg->temp[2], (double)step);
    return t > cfg->temp[1] ? t : cfg->temp[1];
}

void wav2vec2_gumbel_noise(float *out, uint64_t seed, uint64_t step, int64_t utt, int64_t t, int GV) {
    const uint64_t key = koe_rng(seed, step, (uint64_t)utt, KOE_RNG_GUMBEL).key;
    const uint64_t n0 = (uint64_t)t * (uint64_t)GV;
    for (int j = 0; j < GV; j++) {
        const double u = ((double)(koe_rng_number(key, n0 + (uint64_t)j + 1) >> 11) + 0.5) * 0x1.0p-53; /* (0, 1) */
        out[j] = (float)-log(-log(u));
    }
}

/* out (n) = softmax(scale * inp) (out may be inp); returns the index of the largest output (the first). */
static int softmax_row(float *out, const float *inp, int n, float scale) {
    float mx = inp[0] * scale;
    for (int v = 1; v < n; v++) mx = inp[v] * scale > mx ? inp[v] * scale : mx;
    double s = 0.0;
    for (int v = 0; v < n; v++) {
        out[v] = expf(inp[v] * scale - mx);
        s += out[v];
    }
    const float inv = (float)(1.0 / s);
    int best = 0;
    for (int v = 0; v < n; v++) {
        out[v] *= inv;
        if (out[v] > out[best]) best = v;
    }
    return best;
}

static int argmax_row(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

double wav2vec2_perplexity(const double *sum, double n, int G, int V) {
    if (n <= 0) return 0.0;
    double ppl = 0.0;
    for (int g = 0; g < G; g++) {
        double h = 0.0;
        for (int v = 0; v < V; v++) {
            const double a = sum[g * V + v] / n;
            h -= a * log(a + WAV2VEC2_PPL_EPS);
        }
        ppl += exp(h);
    }
    return ppl;
}

static int same_code(const int32_t *a, const int32_t *b, int G) {
    for (int g = 0; g < G; g++)
        if (a[g] != b[g]) return 0;
    return 1;
}

/* The scored rows: masked, unpadded frames of utterances with at least two of them; fills act->utt,
 * first, count and idx, and returns the row count. */
static int64_t select_rows(Wav2vec2HeadAct *act, const uint8_t *mask, const uint8_t *pad, const int64_t *utt, int B,
                           int64_t T) {
    int64_t N = 0;
    for (int b = 0; b < B; b++) {
        act->utt[b] = utt[b];
        int64_t m = 0;
        for (int64_t t = 0; t < T; t++) m += mask[b * T + t] && !(pad && pad[b * T + t]);
        act->first[b] = (int32_t)N;
        act->count[b] = m >= 2 ? (int32_t)m : 0;
        if (m < 2) continue;
        for (int64_t t = 0; t < T; t++)
            if (mask[b * T + t] && !(pad && pad[b * T + t])) act->idx[N++] = (int32_t)(b * T + t);
    }
    return N;
}

/* act->neg: per utterance, in frame order, from the stream (seed, step, utterance id, KOE_RNG_NEGATIVES). */
static void sample_negatives(Wav2vec2HeadAct *act, const ModelRun *run, int B) {
    const int K = act->cfg.n_negatives;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        const int32_t M = act->count[b], f0 = act->first[b];
        if (M == 0) continue;
        KoeRng rng = koe_rng(run->seed, run->step, (uint64_t)act->utt[b], KOE_RNG_NEGATIVES);
        for (int32_t i = 0; i < M; i++)
            for (int k = 0; k < K; k++) {
                int32_t j = (int32_t)koe_rng_below(&rng, (uint64_t)M - 1);
                j += j >= i;
                act->neg[(int64_t)(f0 + i) * K + k] = f0 + j;
            }
    }
}

/* act->prob (N, 1+K) = the logits [positive, negatives]: cos(chat, zhat of the target) / logit_temp,
 * -inf for a negative with the row's own code; returns the rows fairseq counts as correct. */
static int64_t contrastive_logits(Wav2vec2HeadAct *act) {
    const Wav2vec2HeadConfig *c = &act->cfg;
    const int F = c->final_dim, G = c->G, K = c->n_negatives, K1 = K + 1;
    const int64_t N = act->N;
    const float inv_lt = 1.0f / c->logit_temp;
    int64_t correct = 0;
#pragma omp parallel for schedule(static) reduction(+ : correct)
    for (int64_t i = 0; i < N; i++) {
        const float *ci = act->chat + i * F;
        float *pr = act->prob + i * K1;
        for (int j = 0; j < K1; j++) {
            const int64_t tr = j == 0 ? i : act->neg[i * K + j - 1];
            if (j > 0 && same_code(act->code + i * G, act->code + tr * G, G)) {
                pr[j] = -INFINITY;
                continue;
            }
            const float *z = act->zhat + tr * F;
            double dot = 0.0;
            for (int f = 0; f < F; f++) dot += (double)ci[f] * z[f];
            pr[j] = (float)dot * inv_lt;
        }
        float mx = pr[0], mn = pr[0];
        for (int j = 1; j < K1; j++) mx = pr[j] > mx ? pr[j] : mx, mn = pr[j] < mn ? pr[j] : mn;
        correct += pr[0] >= mx && !(pr[0] <= mn); /* fairseq: argmax == 0 and not argmin == 0 */
    }
    return correct;
}

/* From act->dlogit (d cos): dchat = sum_j dcos_j zhat_target(j); dzhat_target(j) += dcos_j chat.
 * Negatives stay inside their utterance, so utterances are independent: one thread each, rows in order. */
static void contrastive_backward(Wav2vec2HeadAct *act) {
    const int F = act->cfg.final_dim, K = act->cfg.n_negatives, K1 = K + 1;
    memset(act->dzhat, 0, (size_t)act->N * F * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < act->B; b++) {
        for (int64_t i = act->first[b]; i < (int64_t)act->first[b] + act->count[b]; i++) {
            const float *dl = act->dlogit + i * K1, *ci = act->chat + i * F;
            float *dc = act->dchat + i * F;
            memset(dc, 0, (size_t)F * sizeof(float));
            for (int j = 0; j < K1; j++) {
                if (dl[j] == 0.0f) continue;
                const int64_t tr = j == 0 ? i : act->neg[i * K + j - 1];
                const float *z = act->zhat + tr * F;
                float *dz = act->dzhat + tr * F;
                for (int f = 0; f < F; f++) dc[f] += dl[j] * z[f], dz[f] += dl[j] * ci[f];
            }
        }
    }
}

/* act->dl (N, G*V) += ddiv * d diversity / d logits, through the per-group softmax soft. */
static void diversity_backward(Wav2vec2HeadAct *act, float ddiv) {
    const int G = act->cfg.G, V = act->cfg.V, GV = G * V;
    const int64_t N = act->N;
    /* diversity = (GV - sum_g exp(H_g)) / GV, H_g = -sum_v a log(a + eps), a = prob_sum / n_sum */
    for (int gg = 0; gg < G; gg++) {
        double h = 0.0;
        for (int v = 0; v < V; v++) {
            const double a = act->prob_sum[gg * V + v] / act->n_sum;
            h -= a * log(a + WAV2VEC2_PPL_EPS);
        }
        const double eh = exp(h);
        for (int v = 0; v < V; v++) {
            const double a = act->prob_sum[gg * V + v] / act->n_sum;
            const double dh = -(log(a + WAV2VEC2_PPL_EPS) + a / (a + WAV2VEC2_PPL_EPS));
            act->cdiv[gg * V + v] = (float)(ddiv * (-eh * dh / GV) / act->n_sum);
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++)
        for (int gg = 0; gg < G; gg++) {
            const float *y = act->soft + i * GV + gg * V, *cd = act->cdiv + gg * V;
            float *dl = act->dl + i * GV + gg * V;
            double dot = 0.0;
            for (int v = 0; v < V; v++) dot += (double)y[v] * cd[v];
            for (int v = 0; v < V; v++) dl[v] += y[v] * (cd[v] - (float)dot);
        }
}

/* ---- forward / backward ----------------------------------------------------------------------------- */

void wav2vec2_head_reduce(const Wav2vec2HeadAct *act, Wav2vec2Stats *st) {
    const Wav2vec2HeadConfig *c = &act->cfg;
    const double GV = (double)c->G * c->V;
    st->prob_ppl = wav2vec2_perplexity(act->prob_sum, act->n_sum, c->G, c->V);
    st->code_ppl = wav2vec2_perplexity(act->code_count, act->n_sum, c->G, c->V);
    st->diversity = act->n_sum > 0 ? (GV - st->prob_ppl) / GV : 0.0;
}

void wav2vec2_quantize(const Wav2vec2HeadConfig *c, const Wav2vec2HeadParams *p, const float *feat, int64_t n,
                       float *soft, int32_t *hard) {
    const int G = c->G, V = c->V, GV = G * V;
    linear_forward(soft, feat, p->wp_w, p->wp_b, n, c->C, GV);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int g = 0; g < G; g++) {
            float *l = soft + i * GV + g * V;
            hard[i * G + g] = argmax_row(l, V);
            softmax_row(l, l, V, 1.0f);
        }
}

void wav2vec2_head_forward(Wav2vec2HeadAct *act, const Wav2vec2HeadParams *p, const float *x, const float *feat,
                           const uint8_t *mask, const uint8_t *pad, const int64_t *utt, int B, int64_t T,
                           const ModelRun *run, Wav2vec2Stats *st) {
    const Wav2vec2HeadConfig *c = &act->cfg;
    const int D = c->D, C = c->C, F = c->final_dim, G = c->G, V = c->V, GV = G * V, Q = c->vq_dim, Qg = Q / G,
              K = c->n_negatives, K1 = K + 1;
    KOE_ASSERT(B <= act->max_B && T <= act->max_T);
    act->B = B;
    act->T = T;
    act->run = *run;
    act->temp = wav2vec2_temperature(c, (int64_t)run->step);
    const float p_drop = run->train ? c->dropout_features : 0.0f;

    const int64_t N = select_rows(act, mask, pad, utt, B, T);
    act->N = N;
    memset(st, 0, sizeof *st);
    st->temp = act->temp;
    st->n_frames = N;
    memset(act->prob_sum, 0, (size_t)GV * sizeof(double));
    memset(act->code_count, 0, (size_t)GV * sizeof(double));
    act->n_sum = (double)N;
    if (N == 0) return;

    /* inputs: x rows; feature rows through dropout_features (one stream per frame) */
    gather_rows_forward(act->xs, x, act->idx, N, D);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const int64_t r = act->idx[i], b = r / T;
        dropout_forward(act->yin + i * C, feat + r * C, C, p_drop, run->seed, run->step,
                        featdrop_stream(act->utt[b], r - b * T));
    }

    /* quantizer: logits into soft, then per group the hard argmax, the Gumbel choice and the softmax;
     * in fp32 whatever the model's GEMM precision (gemm.h): the choice of codes is the quantizer's */
    GemmPrecision prec = gemm_set_precision(GEMM_FP32);
    linear_forward(act->soft, act->yin, p->wp_w, p->wp_b, N, C, GV);
    gemm_set_precision(prec);
    const float inv_tau = (float)(1.0 / act->temp);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const int64_t r = act->idx[i], b = r / T;
        float *l = act->soft + i * GV, *gs = act->gsoft + i * GV;
        if (run->train) {
            wav2vec2_gumbel_noise(gs, run->seed, run->step, act->utt[b], r - b * T, GV);
            for (int j = 0; j < GV; j++) gs[j] += l[j];
        }
        for (int g = 0; g < G; g++) {
            act->hard[i * G + g] = argmax_row(l + g * V, V);
            act->code[i * G + g] = run->train ? softmax_row(gs + g * V, gs + g * V, V, inv_tau) : act->hard[i * G + g];
            softmax_row(l + g * V, l + g * V, V, 1.0f);
            memcpy(act->q + i * Q + g * Qg, p->codevectors + ((int64_t)g * V + act->code[i * G + g]) * Qg,
                   (size_t)Qg * sizeof(float));
        }
    }
    for (int64_t i = 0; i < N; i++) {
        const float *s = act->soft + i * GV;
        for (int j = 0; j < GV; j++) act->prob_sum[j] += s[j];
        for (int g = 0; g < G; g++) act->code_count[g * V + act->hard[i * G + g]] += 1.0;
    }

    /* targets and predictions, normalised for the cosines */
    linear_forward(act->zhat, act->q, p->pq_w, p->pq_b, N, Q, F);
    rownorm_forward(act->zhat, act->znorm, act->zhat, N, F, WAV2VEC2_COS_EPS);
    linear_forward(act->chat, act->xs, p->fp_w, p->fp_b, N, D, F);
    rownorm_forward(act->chat, act->cnorm, act->chat, N, F, WAV2VEC2_COS_EPS);

    sample_negatives(act, run, B);

    /* logits [positive, negatives] -> softmax CE with target 0 */
    const int64_t correct = contrastive_logits(act);
    softmax_xent_forward(act->prob, act->row_loss, act->prob, NULL, N, K1);
    double loss = 0.0;
    for (int64_t i = 0; i < N; i++) loss += act->row_loss[i];
    st->loss_sum = loss;
    st->n_correct = correct;
    wav2vec2_head_reduce(act, st);
}

void wav2vec2_head_backward(float *dx, float *dfeat, const Wav2vec2HeadParams *g, Wav2vec2HeadAct *act,
                            const Wav2vec2HeadParams *p, float dloss, float ddiv) {
    const Wav2vec2HeadConfig *c = &act->cfg;
    const int D = c->D, C = c->C, F = c->final_dim, G = c->G, V = c->V, GV = G * V, Q = c->vq_dim, Qg = Q / G,
              K = c->n_negatives, K1 = K + 1;
    const int64_t N = act->N, T = act->T;
    if (N == 0) return;
    const ModelRun *run = &act->run;

    /* d cos = dloss (softmax - onehot(0)) / logit_temp; -inf entries have probability 0, gradient 0 */
    softmax_xent_backward(act->dlogit, act->prob, NULL, dloss / c->logit_temp, N, K1);
    contrastive_backward(act);

    /* final_proj -> dx, then project_q -> dq (dproj holds d of each projection's output in turn) */
    memset(act->dproj, 0, (size_t)N * F * sizeof(float));
    rownorm_backward(act->dproj, act->dchat, act->chat, act->cnorm, N, F);
    if (dx) memset(act->dxs, 0, (size_t)N * D * sizeof(float));
    linear_backward(dx ? act->dxs : NULL, g->fp_w, g->fp_b, act->dproj, act->xs, p->fp_w, N, D, F);
    if (dx) gather_rows_backward(dx, act->dxs, act->idx, N, D);
    memset(act->dproj, 0, (size_t)N * F * sizeof(float));
    rownorm_backward(act->dproj, act->dzhat, act->zhat, act->znorm, N, F);
    memset(act->dq, 0, (size_t)N * Q * sizeof(float));
    linear_backward(act->dq, g->pq_w, g->pq_b, act->dproj, act->q, p->pq_w, N, Q, F);
    /* codevectors get the rows of the entries chosen */
    for (int64_t i = 0; i < N; i++)
        for (int gg = 0; gg < G; gg++) {
            float *dcv = g->codevectors + ((int64_t)gg * V + act->code[i * G + gg]) * Qg;
            const float *d = act->dq + i * Q + gg * Qg;
            for (int k = 0; k < Qg; k++) dcv[k] += d[k];
        }

    /* d weight_proj output: straight-through (training) + diversity */
    memset(act->dl, 0, (size_t)N * GV * sizeof(float));
    if (run->train) {
        /* d gsoft[i, g*V + v] = dq[i, g block] . codevectors[g*V + v] */
        for (int gg = 0; gg < G; gg++)
            sgemm_fp32('N', 'T', N, V, Qg, 1.0f, act->dq + gg * Qg, Q, p->codevectors + (int64_t)gg * V * Qg, Qg,
                       0.0f, act->dgs + gg * V, GV);
        const float inv_tau = (float)(1.0 / act->temp);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < N; i++)
            for (int gg = 0; gg < G; gg++) {
                const float *y = act->gsoft + i * GV + gg * V, *dy = act->dgs + i * GV + gg * V;
                float *dl = act->dl + i * GV + gg * V;
                double dot = 0.0;
                for (int v = 0; v < V; v++) dot += (double)y[v] * dy[v];
                for (int v = 0; v < V; v++) dl[v] += inv_tau * y[v] * (dy[v] - (float)dot);
            }
    }
    if (ddiv != 0.0f && act->n_sum > 0) diversity_backward(act, ddiv);

    /* weight_proj -> dropout_features -> dfeat */
    if (dfeat) memset(act->dyin, 0, (size_t)N * C * sizeof(float));
    GemmPrecision prec = gemm_set_precision(GEMM_FP32); /* the quantizer in fp32, as in forward */
    linear_backward(dfeat ? act->dyin : NULL, g->wp_w, g->wp_b, act->dl, act->yin, p->wp_w, N, C, GV);
    gemm_set_precision(prec);
    if (!dfeat) return;
    const float p_drop = run->train ? c->dropout_features : 0.0f;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const int64_t r = act->idx[i], b = r / T;
        dropout_backward(dfeat + r * C, act->dyin + i * C, C, p_drop, run->seed, run->step,
                         featdrop_stream(act->utt[b], r - b * T));
    }
}

/* objective.c — see objective.h. Each objective is a short list of calls into its head (hubert.h,
 * ...) and the model; nothing here computes a loss itself.
 * Must not: allocate outside objective_create, or normalise the loss. */
#include "objective.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mask.h"

void objective_add_params(ParamTable *t, const ObjectiveConfig *cfg) {
    switch (cfg->name) {
    case OBJ_HUBERT: hubert_head_add_params(t, &cfg->hubert); return;
    case OBJ_WAV2VEC2: wav2vec2_head_add_params(t, &cfg->wav2vec2); return;
    case OBJ_BESTRQ: bestrq_add_params(t, &cfg->bestrq); return;
    default: koe_fatal(KOE_EXIT_INTERNAL, "objective %d is not built into this koe", (int)cfg->name);
    }
}

void objective_create(Objective *o, const ObjectiveConfig *cfg, Model *m) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->max_B = m->max_B;
    o->max_T = model_frames(&m->cfg, m->max_S);
    const int64_t N = (int64_t)o->max_B * o->max_T;
    o->mask = koe_calloc((size_t)N, 1);
    o->utt_frames = koe_calloc((size_t)o->max_B, sizeof *o->utt_frames);
    o->dout = koe_malloc((size_t)(N * m->cfg.D) * sizeof(float));
    o->red = koe_calloc(4 + 2 * (size_t)cfg->wav2vec2.G * (size_t)cfg->wav2vec2.V, sizeof(double));
    o->pen_share = 1.0f;
    switch (cfg->name) {
    case OBJ_HUBERT:
        hubert_head_bind(&m->table, m->params, &o->hp);
        hubert_head_bind(&m->table, m->grads, &o->hg);
        o->act_mem = koe_malloc((size_t)hubert_head_act_floats(&cfg->hubert, N) * sizeof(float));
        hubert_head_act_bind(&o->hact, &cfg->hubert, N, o->act_mem);
        o->act_mem_u = koe_malloc((size_t)hubert_head_act_floats(&cfg->hubert, N) * sizeof(float));
        hubert_head_act_bind(&o->hact_u, &cfg->hubert, N, o->act_mem_u);
        return;
    case OBJ_WAV2VEC2:
        KOE_ASSERT(m->cfg.frontend == FRONTEND_WAVEFORM && cfg->wav2vec2.C == m->cfg.conv_dim[m->cfg.n_conv - 1]);
        wav2vec2_head_bind(&m->table, m->params, &o->wp);
        wav2vec2_head_bind(&m->table, m->grads, &o->wg);
        o->act_mem = koe_malloc((size_t)wav2vec2_head_act_floats(&cfg->wav2vec2, o->max_B, o->max_T) * sizeof(float));
        wav2vec2_head_act_bind(&o->wact, &cfg->wav2vec2, o->max_B, o->max_T, o->act_mem);
        o->dfeat = koe_malloc((size_t)(N * cfg->wav2vec2.C) * sizeof(float));
        return;
    case OBJ_BESTRQ:
        KOE_ASSERT(m->cfg.frontend == FRONTEND_FBANK);
        bestrq_bind(&m->table, &cfg->bestrq, m->params, &o->bp);
        bestrq_bind(&m->table, &cfg->bestrq, m->grads, &o->bg);
        o->act_mem = koe_malloc((size_t)bestrq_act_floats(&cfg->bestrq, o->max_B, m->max_S) * sizeof(float));
        bestrq_act_bind(&o->bact, &cfg->bestrq, o->max_B, m->max_S, o->act_mem);
        return;
    default: koe_fatal(KOE_EXIT_INTERNAL, "objective %d is not built into this koe", (int)cfg->name);
    }
}

void objective_free(Objective *o) {
    free(o->mask);
    free(o->utt_frames);
    free(o->dout);
    free(o->act_mem);
    free(o->act_mem_u);
    free(o->dfeat);
    free(o->red);
    memset(o, 0, sizeof *o);
}

/* What forward sums over ranks (waveform frontend: HuBERT and wav2vec 2.0):
 *   red[0] scored frames, red[1] and red[2] the feature penalty's sum of squares and element count,
 *   wav2vec 2.0: red[3] the quantizer's rows, red[4 ..] prob_sum (G*V) then code_count (G*V). */
static int reduce_len(const Objective *o, const Model *m) {
    if (!o->reduce || o->cfg.name == OBJ_BESTRQ || m->cfg.frontend != FRONTEND_WAVEFORM) return 0;
    return o->cfg.name == OBJ_WAV2VEC2 ? 4 + 2 * o->cfg.wav2vec2.G * o->cfg.wav2vec2.V : 3;
}

/* Sums the statistics over ranks and returns the global feature penalty; sets frames_global and
 * pen_share; wav2vec 2.0: puts the global quantizer sums back into the head's act. */
static double reduce_stats(Objective *o, const Model *m, int64_t frames) {
    const int n = reduce_len(o, m);
    o->frames_global = frames;
    o->pen_share = 1.0f;
    if (!n) return m->feature_pen;
    const int64_t GV = (int64_t)o->cfg.wav2vec2.G * o->cfg.wav2vec2.V;
    double *v = o->red;
    v[0] = (double)frames;
    v[1] = m->feature_pen_sum;
    v[2] = (double)m->feature_pen_count;
    if (o->cfg.name == OBJ_WAV2VEC2) {
        v[3] = o->wact.n_sum;
        memcpy(v + 4, o->wact.prob_sum, (size_t)GV * sizeof *v);
        memcpy(v + 4 + GV, o->wact.code_count, (size_t)GV * sizeof *v);
    }
    o->reduce(o->reduce_ctx, v, n);
    o->frames_global = (int64_t)v[0];
    o->pen_share = v[2] > 0 ? (float)((double)m->feature_pen_count / v[2]) : 0.0f;
    if (o->cfg.name == OBJ_WAV2VEC2) {
        o->wact.n_sum = v[3];
        memcpy(o->wact.prob_sum, v + 4, (size_t)GV * sizeof *v);
        memcpy(o->wact.code_count, v + 4 + GV, (size_t)GV * sizeof *v);
    }
    return v[2] > 0 ? (double)(float)(v[1] / v[2]) : 0.0;
}

void objective_score_unmasked(Objective *o, Model *m, const ObjectiveBatch *b, ObjectiveStats *st) {
    KOE_ASSERT(o->cfg.name == OBJ_HUBERT && b->B == o->B);
    if (o->cfg.nomask_weight > 0) return; /* the forward scored them, for the loss */
    double sum_u = 0.0;
    int64_t correct_u = 0;
    hubert_head_forward(&o->hact_u, &o->hp, m->a.out, o->mask, m->key_pad, b->labels, b->B, m->T,
                        HUBERT_FRAMES_UNMASKED, &sum_u, &st->frames_u, &correct_u);
    st->correct_u = (double)correct_u;
}

void objective_forward_empty(Objective *o, Model *m, ObjectiveStats *st) {
    memset(st, 0, sizeof *st);
    o->B = 0;
    o->frames = 0;
    m->feature_pen_sum = 0;
    m->feature_pen_count = 0;
    if (o->cfg.name == OBJ_WAV2VEC2) {
        const int64_t GV = (int64_t)o->cfg.wav2vec2.G * o->cfg.wav2vec2.V;
        o->wact.n_sum = 0;
        memset(o->wact.prob_sum, 0, (size_t)GV * sizeof(double));
        memset(o->wact.code_count, 0, (size_t)GV * sizeof(double));
    }
    reduce_stats(o, m, 0);
}

void objective_forward(Objective *o, Model *m, const ObjectiveBatch *b, ObjectiveStats *st) {
    memset(st, 0, sizeof *st);
    const ModelConfig *mc = &m->cfg;
    o->B = b->B;
    switch (o->cfg.name) {
    case OBJ_HUBERT:
    case OBJ_WAV2VEC2: {
        /* the span mask after the frontend needs each utterance's valid frame count */
        const int64_t T = model_frames(mc, b->S);
        KOE_ASSERT(b->B <= o->max_B && T <= o->max_T);
        for (int i = 0; i < b->B; i++) o->utt_frames[i] = model_frames(mc, b->in_len[i]);
        mask_spans_batch(o->mask, o->utt_frames, b->utt, b->B, T, mc->mask_prob, mc->mask_length, mc->mask_min_spans,
                         b->run.seed, b->run.step);
        model_forward(m, b->inp, b->in_len, b->B, b->S, o->mask, &b->run);
        if (o->cfg.name == OBJ_HUBERT) {
            int64_t n = 0, correct = 0;
            hubert_head_forward(&o->hact, &o->hp, m->a.out, o->mask, m->key_pad, b->labels, b->B, m->T,
                                HUBERT_FRAMES_MASKED, &st->head_sum, &n, &correct);
            st->frames = n;
            st->correct = (double)correct;
            if (o->cfg.nomask_weight > 0) { /* fairseq's pred_nomask_weight term; frames, acc: the masked ones */
                double sum_u = 0.0;
                int64_t correct_u = 0;
                hubert_head_forward(&o->hact_u, &o->hp, m->a.out, o->mask, m->key_pad, b->labels, b->B, m->T,
                                    HUBERT_FRAMES_UNMASKED, &sum_u, &st->frames_u, &correct_u);
                st->head_sum += (double)o->cfg.nomask_weight * sum_u;
                st->correct_u = (double)correct_u;
            }
            st->feature_pen = reduce_stats(o, m, n);
        } else {
            Wav2vec2Stats ws;
            wav2vec2_head_forward(&o->wact, &o->wp, m->a.out, m->a.fp_ln, o->mask, m->key_pad, b->utt, b->B, m->T,
                                  &b->run, &ws);
            st->feature_pen = reduce_stats(o, m, ws.n_frames);
            if (reduce_len(o, m)) wav2vec2_head_reduce(&o->wact, &ws);
            st->head_sum = ws.loss_sum;
            st->frames = ws.n_frames;
            st->correct = (double)ws.n_correct;
            st->code_ppl = ws.code_ppl;
            st->prob_ppl = ws.prob_ppl;
            st->diversity = ws.diversity;
            st->temp = ws.temp;
        }
        st->loss_sum = st->head_sum + ((double)o->cfg.feature_pen_weight * st->feature_pen +
                                       (double)o->cfg.diversity_weight * st->diversity) * (double)st->frames;
        o->frames = st->frames;
        return;
    }
    case OBJ_BESTRQ: {
        KOE_ASSERT(b->B <= o->max_B);
        /* the model's copy of its input (normalised as model.fbank_norm says): targets from it, then
         * noise on its masked frames; the loader's batch is not touched */
        float *x = model_fbank_input(m, b->inp, b->in_len, b->B, b->S);
        bestrq_prepare_input(&o->bact, &o->bp, x, b->in_len, b->utt, b->B, b->S, b->run.seed, b->run.step);
        model_forward(m, x, b->in_len, b->B, b->S, NULL, &b->run);
        KOE_ASSERT(m->T == o->bact.T);
        int64_t n = 0;
        bestrq_head_forward(&o->bact, &o->bp, m->a.out, o->bact.mask, o->bact.targets, b->B, o->bact.T,
                            &st->head_sum, &n, &st->correct);
        st->frames = n;
        st->loss_sum = st->head_sum;
        o->frames = n;
        o->frames_global = n;
        return;
    }
    default: koe_fatal(KOE_EXIT_INTERNAL, "objective %d is not built into this koe", (int)o->cfg.name);
    }
}

void objective_backward(Objective *o, Model *m, float dloss) {
    const int64_t ND = (int64_t)o->B * m->T * m->cfg.D;
    memset(o->dout, 0, (size_t)ND * sizeof(float));
    /* fairseq adds each auxiliary term times the micro-batch's frame count to the summed loss; across
     * ranks that is the global micro-batch's count, and this rank's conv features carry pen_share of
     * the global mean's elements */
    const float n = (float)o->frames_global;
    const float dpen =
        m->cfg.frontend == FRONTEND_WAVEFORM ? dloss * o->cfg.feature_pen_weight * n * o->pen_share : 0.0f;
    switch (o->cfg.name) {
    case OBJ_HUBERT:
        hubert_head_backward(o->dout, &o->hg, &o->hact, &o->hp, dloss);
        if (o->cfg.nomask_weight > 0) hubert_head_backward(o->dout, &o->hg, &o->hact_u, &o->hp, dloss * o->cfg.nomask_weight);
        model_backward(m, o->dout, dpen, NULL);
        return;
    case OBJ_WAV2VEC2: {
        memset(o->dfeat, 0, (size_t)((int64_t)o->B * m->T * o->cfg.wav2vec2.C) * sizeof(float));
        wav2vec2_head_backward(o->dout, o->dfeat, &o->wg, &o->wact, &o->wp, dloss, dloss * o->cfg.diversity_weight * n);
        model_backward(m, o->dout, dpen, o->dfeat);
        return;
    }
    case OBJ_BESTRQ:
        bestrq_head_backward(o->dout, &o->bg, &o->bact, &o->bp, dloss);
        model_backward(m, o->dout, 0.0f, NULL);
        return;
    default: koe_fatal(KOE_EXIT_INTERNAL, "objective %d is not built into this koe", (int)o->cfg.name);
    }
}

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
    o->dout = koe_malloc((size_t)(N * m->cfg.D) * sizeof(float));
    switch (cfg->name) {
    case OBJ_HUBERT:
        hubert_head_bind(&m->table, m->params, &o->hp);
        hubert_head_bind(&m->table, m->grads, &o->hg);
        o->act_mem = koe_malloc((size_t)hubert_head_act_floats(&cfg->hubert, N) * sizeof(float));
        hubert_head_act_bind(&o->hact, &cfg->hubert, N, o->act_mem);
        return;
    default: koe_fatal(KOE_EXIT_INTERNAL, "objective %d is not built into this koe", (int)cfg->name);
    }
}

void objective_free(Objective *o) {
    free(o->mask);
    free(o->dout);
    free(o->act_mem);
    memset(o, 0, sizeof *o);
}

void objective_forward(Objective *o, Model *m, const ObjectiveBatch *b, ObjectiveStats *st) {
    memset(st, 0, sizeof *st);
    const ModelConfig *mc = &m->cfg;
    o->B = b->B;
    switch (o->cfg.name) {
    case OBJ_HUBERT: {
        /* frame counts first: the mask needs each utterance's valid frames */
        const int64_t T = model_frames(mc, b->S);
        KOE_ASSERT(b->B <= o->max_B && T <= o->max_T);
        int64_t frames[b->B > 0 ? b->B : 1];
        for (int i = 0; i < b->B; i++) frames[i] = model_frames(mc, b->in_len[i]);
        mask_spans_batch(o->mask, frames, b->utt, b->B, T, mc->mask_prob, mc->mask_length, mc->mask_min_spans,
                         b->run.seed, b->run.step);
        model_forward(m, b->inp, b->in_len, b->B, b->S, o->mask, &b->run);
        int64_t n = 0, correct = 0;
        hubert_head_forward(&o->hact, &o->hp, m->a.out, o->mask, m->key_pad, b->labels, b->B, m->T,
                            HUBERT_FRAMES_MASKED, &st->head_sum, &n, &correct);
        st->frames = n;
        st->correct = (double)correct;
        st->feature_pen = mc->frontend == FRONTEND_WAVEFORM ? m->feature_pen : 0;
        st->loss_sum = st->head_sum + (double)o->cfg.feature_pen_weight * st->feature_pen * (double)n;
        o->frames = n;
        return;
    }
    default: koe_fatal(KOE_EXIT_INTERNAL, "objective %d is not built into this koe", (int)o->cfg.name);
    }
}

void objective_backward(Objective *o, Model *m, float dloss) {
    const int64_t ND = (int64_t)o->B * m->T * m->cfg.D;
    memset(o->dout, 0, (size_t)ND * sizeof(float));
    switch (o->cfg.name) {
    case OBJ_HUBERT: {
        hubert_head_backward(o->dout, &o->hg, &o->hact, &o->hp, dloss);
        const float dpen = m->cfg.frontend == FRONTEND_WAVEFORM
                               ? dloss * o->cfg.feature_pen_weight * (float)o->frames
                               : 0.0f;
        model_backward(m, o->dout, dpen, NULL);
        return;
    }
    default: koe_fatal(KOE_EXIT_INTERNAL, "objective %d is not built into this koe", (int)o->cfg.name);
    }
}

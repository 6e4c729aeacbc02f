/* ckpt_model.c — see ckpt_model.h. */
#include "ckpt_model.h"

#include <stdlib.h>
#include <string.h>

#include "../data/checkpoint.h"

int64_t ckpt_model_min_input(const ModelConfig *c) {
    if (c->frontend == FRONTEND_FBANK) return c->fbank_stack;
    int64_t r = 1;
    for (int i = c->n_conv - 1; i >= 0; i--) r = (r - 1) * c->conv_stride[i] + c->conv_kernel[i];
    return r;
}

Model *ckpt_model_open(const char *path, int max_B, int64_t max_samples, Recipe *r, KoeError *err) {
    char *text = NULL;
    if (checkpoint_read_config(path, &text, err) < 0) return NULL;
    char name[4200];
    snprintf(name, sizeof name, "%s:/config", path);
    int rc = recipe_load_string(r, name, text, 0, NULL, err);
    free(text);
    if (rc < 0) return NULL;
    const int fbank = r->model.frontend == FRONTEND_FBANK; /* the recipe check refused fbank_dim != 80 */
    const int64_t max_S = fbank ? features_num_frames(max_samples) : max_samples;
    const int64_t lo = ckpt_model_min_input(&r->model);
    Model *m = model_create(&r->model, max_B, max_S > lo ? max_S : lo);
    if (checkpoint_read_encoder(path, &m->table, m->params, err) < 0) {
        model_free(m);
        recipe_free(r);
        return NULL;
    }
    return m;
}

int64_t ckpt_model_frames(const Model *m, int64_t n) {
    return model_frames(&m->cfg, m->cfg.frontend == FRONTEND_FBANK ? features_num_frames(n) : n);
}

double ckpt_model_frame_rate(const Model *m) {
    if (m->cfg.frontend == FRONTEND_FBANK) return (double)FEATURES_FRAME_RATE / m->cfg.fbank_stack;
    int64_t stride = 1;
    for (int i = 0; i < m->cfg.n_conv; i++) stride *= m->cfg.conv_stride[i];
    return (double)KOE_SAMPLE_RATE / (double)stride;
}

void ckpt_input_init(CkptInput *ci, const Model *m, int64_t max_samples) {
    memset(ci, 0, sizeof *ci);
    if (m->cfg.frontend != FRONTEND_FBANK) return;
    ci->fe = features_create(FEAT_FBANK);
    const int64_t f = features_num_frames(max_samples);
    ci->feats = koe_malloc((size_t)(f > 0 ? f : 1) * (size_t)features_dim(FEAT_FBANK) * sizeof(float));
}

const float *ckpt_input_compute(CkptInput *ci, const float *wav, int64_t n, int64_t *S) {
    if (!ci->fe) {
        *S = n;
        return wav;
    }
    const int64_t f = features_num_frames(n);
    if (f > 0) features_compute(ci->fe, wav, n, ci->feats);
    *S = f;
    return ci->feats;
}

void ckpt_input_free(CkptInput *ci) {
    if (ci->fe) features_free(ci->fe);
    free(ci->feats);
    memset(ci, 0, sizeof *ci);
}

/* ckpt_model.c — see ckpt_model.h. */
#include "ckpt_model.h"

#include <stdlib.h>

#include "../data/checkpoint.h"

int64_t ckpt_model_min_input(const ModelConfig *c) {
    if (c->frontend == FRONTEND_FBANK) return c->fbank_stack;
    int64_t r = 1;
    for (int i = c->n_conv - 1; i >= 0; i--) r = (r - 1) * c->conv_stride[i] + c->conv_kernel[i];
    return r;
}

Model *ckpt_model_open(const char *path, int max_B, int64_t max_S, Recipe *r, KoeError *err) {
    char *text = NULL;
    if (checkpoint_read_config(path, &text, err) < 0) return NULL;
    char name[4200];
    snprintf(name, sizeof name, "%s:/config", path);
    int rc = recipe_load_string(r, name, text, 0, NULL, err);
    free(text);
    if (rc < 0) return NULL;
    const int64_t lo = ckpt_model_min_input(&r->model);
    Model *m = model_create(&r->model, max_B, max_S > lo ? max_S : lo);
    if (checkpoint_read_encoder(path, &m->table, m->params, err) < 0) {
        model_free(m);
        recipe_free(r);
        return NULL;
    }
    return m;
}

/* ckpt_model.h — build a Model from a checkpoint file: its /config (the resolved recipe) gives the
 * ModelConfig, its /model tensors the weights. Shared by `koe embed` and `koe export`. No MPI. */
#pragma once
#include "../core/model.h"
#include "recipe.h"

/* The shortest input (samples, or fbank frames) that gives one encoder frame. */
int64_t ckpt_model_min_input(const ModelConfig *cfg);
/* r receives the recipe (recipe_free it); the model holds up to max_B utterances of max_S inputs
 * (max_S below ckpt_model_min_input is raised to it). NULL with err filled on failure. */
Model *ckpt_model_open(const char *path, int max_B, int64_t max_S, Recipe *r, KoeError *err);

/* checkpoint.h — a model checkpoint file, serial HDF5 (DESIGN.md section 5; the collective MPI-IO
 * writer with optimizer state comes later and keeps this layout):
 *   /model/<hf name>  float32, shaped as the parameter table says
 *   /config           strings [1]: the resolved recipe text the model was built from
 *   attrs: format="koe-checkpoint", format_version=1
 * Readers check every tensor by name, shape and type and say which one is wrong. No MPI. */
#pragma once
#include "../core/common.h"
#include "../core/params.h"

#define CHECKPOINT_FORMAT "koe-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 1

/* Writes path.tmp and renames it to path when complete. */
int checkpoint_write(const char *path, const ParamTable *t, const float *params, const char *config_text,
                     KoeError *err);
/* The /config text, malloc'ed. */
int checkpoint_read_config(const char *path, char **config_text, KoeError *err);
/* Every tensor of the table from /model into params (laid out by t). A missing tensor, another
 * shape, or a tensor in the file that the table does not have is an error naming it. */
int checkpoint_read_params(const char *path, const ParamTable *t, float *params, KoeError *err);

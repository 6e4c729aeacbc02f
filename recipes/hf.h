/* hf.h — the Hugging Face export of a model (data/README.md, Export): DIR/model.safetensors (tensors
 * under the parameter table's Hugging Face names, F32, __metadata__ {"format":"pt"}) and
 * DIR/config.json with the transformers Wav2Vec2/HuBERT fields (conv_dim, conv_kernel, conv_stride,
 * conv_bias, feat_extract_norm, hidden_size, num_hidden_layers, num_attention_heads,
 * intermediate_size, num_conv_pos_embeddings, num_conv_pos_embedding_groups, do_stable_layer_norm,
 * layer_norm_eps, dropouts, layerdrop, mask_time_*), plus koe_frontend / koe_encoder / fbank_* /
 * conformer_kernel for what transformers has no field for. Reading goes the other way for
 * `koe init --from DIR`. Includes a small JSON reader (enough for these two files). No MPI. */
#pragma once
#include "../core/common.h"
#include "../core/model.h"
#include "../core/params.h"

int hf_export(const char *dir, const ModelConfig *cfg, const ParamTable *t, const float *params, KoeError *err);
/* cfg starts from model_config_default; the fields present in DIR/config.json override it. */
int hf_read_config(const char *dir, ModelConfig *cfg, KoeError *err);
/* Every table tensor from DIR/model.safetensors (F32, same shape); tensors the table lacks are an error,
 * except masked_spec_embed may be absent (published fine-tuned models drop it: it keeps its init). */
int hf_read_params(const char *dir, const ParamTable *t, float *params, KoeError *err);

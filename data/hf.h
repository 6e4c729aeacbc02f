/* hf.h — the Hugging Face format of a model (data/README.md, Export): DIR/model.safetensors (tensors
 * under the parameter table's Hugging Face names, F32, __metadata__ {"format":"pt", "koe_export_id":
 * ID}) and DIR/config.json with the transformers Wav2Vec2/HuBERT fields and the same koe_export_id. The config.json fields are the
 * Hugging Face column of core's model_keys (conv_dim/conv_kernel/conv_stride, feat_extract_norm,
 * hidden_size, ..., mask_time_*, plus koe_frontend / koe_encoder / fbank_* / conformer_kernel for
 * what transformers has no field for): the writer and the reader walk that table, so a model key
 * with an hf name is written and read without an edit here. Reading goes the other way for
 * `koe init --from DIR`. Both JSON texts are read and written with jansson. No MPI. */
#pragma once
#include "../core/common.h"
#include "../core/model.h"
#include "../core/params.h"

/* 1 when path is a Python pickle of a model that data/pickle_to_hf.py converts to this layout: a
 * fairseq checkpoint file (*.pt) or a directory with pytorch_model.bin (or its index) and no
 * safetensors. `koe init --from` runs the converter itself (recipes/cmd_init.c). */
int hf_is_pickle(const char *path);
int hf_export(const char *dir, const ModelConfig *cfg, const ParamTable *t, const float *params, KoeError *err);
/* cfg starts from model_config_default; the fields present in DIR/config.json override it, each
 * checked against its key's range. Errors name DIR/config.json (with line and column for bad JSON),
 * the field and the recipe key. DIR/preprocessor_config.json, when present, overrides do_normalize
 * (transformers keeps the feature extractor's settings there) and must say 16 kHz. Refused, saying why and what to run instead: a path that is not a
 * directory with config.json and model.safetensors (or its sharded index) — a pickle (hf_is_pickle)
 * gets the conversion command —, a model_type other than
 * hubert or wav2vec2 (WavLM, data2vec-audio, UniSpeech, ...), and switches koe cannot compute
 * (feat_proj_layer_norm false as in DistilHuBERT, conv_pos_batch_norm, add_adapter). */
int hf_read_config(const char *dir, ModelConfig *cfg, KoeError *err);
/* The pretraining heads a published model carries, under koe's names, shaped as in the file:
 * wav2vec 2.0's quantizer.weight_proj.{weight,bias}, quantizer.codevectors, project_q.{weight,bias}
 * and final_proj.{weight,bias} (transformers' project_hid); HuBERT's final_proj.{weight,bias} and
 * label_embeddings (fairseq's label_embs_concat). groups: config.json's num_codevector_groups (2). */
typedef struct {
    ParamTable t;
    float *v; /* (t.total) */
    int groups;
} HfHeads;
/* Every table tensor from DIR/model.safetensors, or from the shards DIR/model.safetensors.index.json
 * names (same shape; F32, F16, BF16 or F64, converted to float32); a task model's "hubert." /
 * "wav2vec2." prefix is dropped, known aliases are renamed (project_hid, label_embs_concat,
 * mask_time_emb_vector), the heads' tensors go to *heads (NULL: skipped) and other tensors outside
 * the encoder (a CTC head) are skipped with a warning. Tensors the table lacks are an error, except
 * masked_spec_embed may be absent (published fine-tuned models drop it: it keeps its init). When a
 * single model.safetensors and config.json both carry a koe_export_id, the two must be equal: a pair
 * mixed by an export that stopped between its two renames is refused, saying to export again. */
int hf_read_params(const char *dir, const ParamTable *t, float *params, HfHeads *heads, KoeError *err);
void hf_heads_free(HfHeads *heads);

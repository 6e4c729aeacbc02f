/* ckpt_model.h — build a Model from a checkpoint file (or a Hugging Face export directory): its /config (the resolved recipe) gives the
 * ModelConfig, its /model tensors the weights. Shared by `koe embed`, `koe kmeans`/`koe label`
 * (layer sources) and `koe export`. And the input of one utterance as `koe train`'s loader gives it:
 * the waveform, or for an fbank-frontend model its Kaldi fbank frames (the model's frontend
 * normalises them as its model.fbank_norm says; in training BEST-RQ's masked frames get noise, here
 * none). MPI only to read /model once for all ranks; no knowledge of the objective a checkpoint was
 * trained with. */
#pragma once
#include "../core/model.h"
#include "../data/corpus.h"
#include "../data/features.h"
#include "recipe.h"

/* The parser (cli.h, CLI_CUSTOM) of a flag naming a checkpoint (--ckpt, --ckpt2): a run's
 * RUN/checkpoints/latest stands for the step file it names (distributed/rundir.h), so that every use
 * of the path (the checksum, the attributes and messages that name it) names that file; rank 0 says
 * which. Any other value is kept as given. */
int ckpt_path_parse(const char *s, void *dst, char *why, size_t why_len);
/* The shortest input (samples, or fbank frames) that gives one encoder frame. */
int64_t ckpt_model_min_input(const ModelConfig *cfg);
/* r receives the recipe (recipe_free it); the model holds one forward of up to max_B utterances of
 * max_samples samples each (as input frames for an fbank frontend). NULL with err filled on failure
 * (also when the stored recipe fails the recipe checks, e.g. an fbank_dim other than koe's 80 bins,
 * and when the attention over an utterance of max_samples would not fit in this machine's memory:
 * the message names longest, the id of that utterance, when given).
 * Collective: every rank calls it (kmeans and label layer sources, embed, analyze); /model is read by rank 0
 * alone and broadcast (distributed/ckpt.h's ckpt_read_model, as a resume reads it), and every rank
 * returns NULL when one fails. */
Model *ckpt_model_open(const char *path, int max_B, int64_t max_samples, const char *longest, Recipe *r,
                       KoeError *err);
/* The same on one rank alone, which reads /model itself (export and info run on rank 0). */
Model *ckpt_model_open_local(const char *path, int max_B, int64_t max_samples, const char *longest, Recipe *r,
                             KoeError *err);
/* The weights a checkpoint of an imported model holds: the encoder's, then its pretraining head's. */
typedef struct {
    ParamTable t; /* the encoder's table, then r's objective head */
    float *v;     /* (t.total); NULL: no head was imported, the checkpoint is the model's own */
} CkptHead;
/* The same from a Hugging Face export directory (data/hf.h: config.json + model.safetensors), the
 * recipe's [model] from its config.json plus the overrides "section.key=value" (over, n_over), the
 * rest of the recipe koe's defaults. ckpt_model_open takes this path when path is a directory, so
 * every command that reads a checkpoint (embed, kmeans/label layer sources, analyze, export) takes an
 * export too; `koe init --from DIR` turns one into a checkpoint with head non-NULL: then a pretraining
 * head the export has (wav2vec 2.0's quantizer, project_q, project_hid; fairseq HuBERT's final_proj,
 * label_embs_concat) comes along, r's [objective] gets the keys that fit it before the overrides, and
 * *head the checkpoint's tensors (ckpt_head_free it). A head koe does not know, or one that does not
 * fit koe's, is left out with a warning naming the tensor (head->v NULL, r without its keys). With
 * head NULL the head tensors are skipped. */
Model *ckpt_model_open_hf(const char *dir, int n_over, char **over, int max_B, int64_t max_samples,
                          const char *longest, CkptHead *head, Recipe *r, KoeError *err);
void ckpt_head_free(CkptHead *head);

/* Encoder frames of an utterance of n samples. */
int64_t ckpt_model_frames(const Model *m, int64_t n);
/* Frames per second of the encoder output (50 for the waveform stack, 100 / fbank_stack). */
double ckpt_model_frame_rate(const Model *m);

typedef struct {
    FeatureExtractor *fe; /* fbank frontend */
    float *feats;         /* (fbank frames of max_samples, 80) */
} CkptInput;
/* For utterances of up to max_samples samples. */
void ckpt_input_init(CkptInput *ci, const Model *m, int64_t max_samples);
/* The encoder input of wav (n samples, float in [-1, 1)): returns it and sets *S to its length
 * (samples or frames), for model_forward(m, inp, S, 1, *S, ...). Valid until the next call. */
const float *ckpt_input_compute(CkptInput *ci, const float *wav, int64_t n, int64_t *S);
void ckpt_input_free(CkptInput *ci);

/* A checkpoint's model over a corpus (koe analyze layers and codebook): the corpus opened, the model
 * sized for one forward of its longest utterance (named in ckpt_model_open's memory message), its
 * input, and the buffers that read one utterance. */
typedef struct {
    Corpus c;
    int have_corpus;
    Recipe r;
    Model *m;
    CkptInput in;
    int64_t max_len; /* samples of the longest utterance, at least 400 */
    int16_t *pcm;
    float *wav;      /* (max_len) the utterance ckpt_corpus_read read last, in [-1, 1) */
} CkptCorpus;
/* 0, or -1 with err set (ckpt_corpus_close it either way). */
int ckpt_corpus_open(CkptCorpus *cc, const char *ckpt, const char *corpus, KoeError *err);
/* Utterance u into cc->wav; returns its sample count, or -1 with err set. */
int64_t ckpt_corpus_read(CkptCorpus *cc, int64_t u, KoeError *err);
void ckpt_corpus_close(CkptCorpus *cc);

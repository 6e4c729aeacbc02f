/* cmd_init.c — `koe init RECIPE.ini [section.key=value ...] --out CKPT.h5`: a randomly initialised
 * model (fairseq's initialisation, from run.seed) as a checkpoint; `koe init --from DIR --out CKPT.h5`:
 * the same from a Hugging Face export (model.safetensors + config.json), so that pretraining can
 * continue from a published model. The checkpoint's /config is the resolved recipe.
 * Must not: run under several ranks writing the same file (rank 0 writes; the others wait). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/model.h"
#include "../data/checkpoint.h"
#include "../distributed/comm.h"
#include "ckpt_model.h"
#include "commands.h"
#include "hf.h"
#include "recipe.h"

typedef struct {
    const char *out, *from;
} InitOptions;

#define O(field) offsetof(InitOptions, field)
static const CliFlag init_flags[] = {
    CLI_S("--out", O(out), NULL, CLI_REQUIRED, "CKPT.h5", "output checkpoint"),
    CLI_S("--from", O(from), NULL, 0, "DIR", "load a Hugging Face export instead of initialising (no RECIPE.ini then)"),
    CLI_END,
};

static int init_command(const void *opts, int n_args, char **args);

const CliCommand cmd_init = {
    .name = "init",
    .summary = "a randomly initialised model (or one loaded from a Hugging Face export) as a checkpoint",
    .args = "(RECIPE.ini | --from DIR) [section.key=value ...]",
    .max_args = -1,
    .about = "Writes a checkpoint: /model/<Hugging Face name> float32 tensors, /config (the resolved recipe),\n"
             "attrs format=koe-checkpoint, format_version=1. Written as CKPT.h5.tmp, then renamed.\n"
             "With RECIPE.ini the weights are initialised as fairseq does (from run.seed): conv stack kaiming\n"
             "normal, encoder Linear N(0, 0.02) with zero bias, LayerNorm 1/0, positional conv N(0, 4/(K*D))\n"
             "under weight norm, mask embedding U(0, 1).\n"
             "With --from DIR the [model] section comes from DIR/config.json (transformers Wav2Vec2/HuBERT\n"
             "fields) and the weights from DIR/model.safetensors (tensors outside the encoder, e.g. a CTC head,\n"
             "are skipped with a warning); the other sections are the recipe defaults plus the overrides.\n"
             "section.key=value arguments override the recipe, after the file (`koe help train` lists the keys).\n",
    .flags = init_flags,
    .opts_size = sizeof(InitOptions),
    .run = init_command,
};

/* Recipe overrides that state a ModelConfig read from config.json. */
static int config_overrides(const ModelConfig *c, char ***out) {
    enum { MAXO = 32, LEN = 200 };
    char **o = koe_malloc(MAXO * sizeof *o);
    int n = 0;
    for (int i = 0; i < MAXO; i++) o[i] = koe_malloc(LEN);
    int k = snprintf(o[n], LEN, "model.conv_feature_layers=[");
    for (int i = 0; i < c->n_conv && k < LEN; i++)
        k += snprintf(o[n] + k, (size_t)(LEN - k), "%s(%d,%d,%d)", i ? "," : "", c->conv_dim[i], c->conv_kernel[i],
                      c->conv_stride[i]);
    if (k < LEN) snprintf(o[n] + k, (size_t)(LEN - k), "]");
    n++;
    snprintf(o[n++], LEN, "model.frontend=%s", c->frontend == FRONTEND_FBANK ? "fbank" : "waveform");
    snprintf(o[n++], LEN, "model.encoder=%s", c->encoder == ENCODER_CONFORMER ? "conformer" : "transformer");
    snprintf(o[n++], LEN, "model.extractor_mode=%s", c->conv_norm == CONV_NORM_LAYER ? "layer_norm" : "default");
    snprintf(o[n++], LEN, "model.conv_bias=%s", c->conv_bias ? "true" : "false");
    snprintf(o[n++], LEN, "model.feature_grad_mult=%.9g", (double)c->feature_grad_mult);
    snprintf(o[n++], LEN, "model.fbank_dim=%d", c->fbank_dim);
    snprintf(o[n++], LEN, "model.fbank_stack=%d", c->fbank_stack);
    snprintf(o[n++], LEN, "model.encoder_embed_dim=%d", c->D);
    snprintf(o[n++], LEN, "model.encoder_layers=%d", c->L);
    snprintf(o[n++], LEN, "model.encoder_attention_heads=%d", c->H);
    snprintf(o[n++], LEN, "model.encoder_ffn_embed_dim=%d", c->F);
    snprintf(o[n++], LEN, "model.conv_pos=%d", c->pos_conv_kernel);
    snprintf(o[n++], LEN, "model.conv_pos_groups=%d", c->pos_conv_groups);
    snprintf(o[n++], LEN, "model.layer_norm_first=%s", c->layer_norm_first ? "true" : "false");
    snprintf(o[n++], LEN, "model.depthwise_conv_kernel_size=%d", c->conformer_kernel);
    snprintf(o[n++], LEN, "model.layer_norm_eps=%.9g", (double)c->layer_norm_eps);
    snprintf(o[n++], LEN, "model.dropout=%.9g", (double)c->dropout);
    snprintf(o[n++], LEN, "model.attention_dropout=%.9g", (double)c->attention_dropout);
    snprintf(o[n++], LEN, "model.activation_dropout=%.9g", (double)c->activation_dropout);
    snprintf(o[n++], LEN, "model.encoder_layerdrop=%.9g", (double)c->encoder_layerdrop);
    snprintf(o[n++], LEN, "model.dropout_input=%.9g", (double)c->dropout_input);
    snprintf(o[n++], LEN, "model.mask_prob=%.9g", (double)c->mask_prob);
    snprintf(o[n++], LEN, "model.mask_length=%d", c->mask_length);
    snprintf(o[n++], LEN, "model.mask_min_masks=%d", c->mask_min_spans);
    for (int i = n; i < MAXO; i++) free(o[i]);
    *out = o;
    return n;
}

static int init_command(const void *opts, int n_args, char **args) {
    const InitOptions *o = opts;
    const char *recipe = NULL, *out = o->out, *from = o->from;
    char **over = koe_malloc((size_t)(n_args + 1) * sizeof *over);
    int n_over = 0, rc = KOE_EXIT_OK;
    for (int i = 0; i < n_args && !rc; i++) {
        if (strchr(args[i], '=')) over[n_over++] = args[i];
        else if (!recipe) recipe = args[i];
        else rc = cli_error(&cmd_init, comm_rank() == 0, "unexpected argument %s (one RECIPE.ini)", args[i]);
    }
    if (!rc && (!recipe) == (!from)) rc = cli_error(&cmd_init, comm_rank() == 0, "exactly one of RECIPE.ini or --from DIR is required");
    if (rc) {
        free(over);
        return rc;
    }
    KoeError err;
    Recipe r;
    Model *m = NULL;
    if (recipe) {
        if (recipe_load(&r, recipe, n_over, over, &err) < 0) {
            fprintf(stderr, "koe init: %s\n", err.msg);
            free(over);
            return KOE_EXIT_USAGE;
        }
        m = model_create(&r.model, 1, ckpt_model_min_input(&r.model));
        model_init_params(m, r.run.seed);
    } else {
        ModelConfig c;
        if (hf_read_config(from, &c, &err) < 0) {
            fprintf(stderr, "koe init: %s\n", err.msg);
            free(over);
            return KOE_EXIT_USAGE;
        }
        char **co;
        int nco = config_overrides(&c, &co);
        char **all = koe_malloc((size_t)(nco + n_over) * sizeof *all);
        for (int i = 0; i < nco; i++) all[i] = co[i];
        for (int i = 0; i < n_over; i++) all[nco + i] = over[i];
        char name[4200];
        snprintf(name, sizeof name, "%s/config.json", from);
        int lrc = recipe_load_string(&r, name, "", nco + n_over, all, &err);
        for (int i = 0; i < nco; i++) free(co[i]);
        free(co);
        free(all);
        if (lrc < 0) {
            fprintf(stderr, "koe init: %s\n", err.msg);
            free(over);
            return KOE_EXIT_USAGE;
        }
        m = model_create(&r.model, 1, ckpt_model_min_input(&r.model));
        model_init_params(m, r.run.seed); /* masked_spec_embed keeps this when the export has none */
        if (hf_read_params(from, &m->table, m->params, &err) < 0) {
            fprintf(stderr, "koe init: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        }
    }
    if (rc == KOE_EXIT_OK && comm_rank() == 0) {
        if (checkpoint_write(out, &m->table, m->params, r.text, &err) < 0) {
            fprintf(stderr, "koe init: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        } else
            koe_log("init: wrote %s (%lld parameters in %d tensors)", out, (long long)m->table.total, m->table.n);
    }
    comm_bcast(&rc, sizeof rc, 0); /* every rank exits with rank 0's status */
    model_free(m);
    recipe_free(&r);
    free(over);
    return rc;
}

/* cmd_export.c — `koe export --ckpt CKPT --out DIR`: a checkpoint's model as a Hugging Face export
 * (DIR/model.safetensors + DIR/config.json, see hf.h) that transformers and torchaudio's
 * import_huggingface_model load. Must not: leave half-written files under the final names. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../distributed/comm.h"
#include "ckpt_model.h"
#include "commands.h"
#include "../data/hf.h"

typedef struct {
    const char *ckpt, *out;
} ExportOptions;

#define O(field) offsetof(ExportOptions, field)
static const CliFlag export_flags[] = {
    CLI_P("--ckpt", O(ckpt), ckpt_path_parse, NULL, CLI_REQUIRED, "CKPT.h5", "checkpoint (koe init / koe train)"),
    CLI_S("--out", O(out), NULL, CLI_REQUIRED, "DIR", "output directory, created if missing"),
    CLI_END,
};

static int export_command(const void *opts, int n_args, char **args);

const CliCommand cmd_export = {
    .name = "export",
    .summary = "a checkpoint as model.safetensors + config.json (Hugging Face names)",
    .about =
        "Writes DIR/model.safetensors (every encoder tensor under its Hugging Face transformers name, F32,\n"
        "__metadata__ {\"format\":\"pt\"}) and DIR/config.json (Wav2Vec2 fields: conv_dim, conv_kernel,\n"
        "conv_stride, conv_bias, feat_extract_norm, hidden_size, num_hidden_layers, num_attention_heads,\n"
        "intermediate_size, num_conv_pos_embeddings, num_conv_pos_embedding_groups, do_stable_layer_norm,\n"
        "layer_norm_eps, dropouts, layerdrop, mask_time_*; plus koe_* fields for the fbank frontend and\n"
        "the conformer encoder, which transformers' Wav2Vec2 has no field for).\n"
        "`koe init --from DIR` reads it back.\n",
    .flags = export_flags,
    .opts_size = sizeof(ExportOptions),
    .run = export_command,
};

static int export_command(const void *opts, int n_args, char **args) {
    (void)n_args, (void)args;
    const ExportOptions *o = opts;
    const char *ckpt = o->ckpt, *out = o->out;
    int rc = KOE_EXIT_OK;
    if (comm_rank() == 0) {
        KoeError err;
        Recipe r;
        Model *m = ckpt_model_open_local(ckpt, 1, 0, NULL, &r, &err);
        if (!m) {
            fprintf(stderr, "koe export: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        } else {
            if (mkdir(out, 0777) < 0 && errno != EEXIST) {
                fprintf(stderr, "koe export: --out %s: %s\n", out, strerror(errno));
                rc = KOE_EXIT_USAGE;
            } else if (hf_export(out, &m->cfg, &m->table, m->params, &err) < 0) {
                fprintf(stderr, "koe export: %s\n", err.msg);
                rc = KOE_EXIT_USAGE;
            } else
                koe_log("export: wrote %s/model.safetensors and %s/config.json (%d tensors)", out, out, m->table.n);
            model_free(m);
            recipe_free(&r);
        }
    }
    comm_bcast(&rc, sizeof rc, 0); /* every rank exits with rank 0's status */
    return rc;
}

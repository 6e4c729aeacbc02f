/* cmd_export.c — `koe export --ckpt CKPT --out DIR`: a checkpoint's model as a Hugging Face export
 * (DIR/model.safetensors + DIR/config.json, see hf.h) that transformers and torchaudio's
 * import_huggingface_model load. Must not: leave half-written files under the final names. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../distributed/comm.h"
#include "ckpt_model.h"
#include "commands.h"
#include "../data/hf.h"

const char cmd_export_summary[] = "a checkpoint as model.safetensors + config.json (Hugging Face names)";
const char cmd_export_help[] =
    "usage: koe export --ckpt CKPT.h5 --out DIR\n"
    "\n"
    "Writes DIR/model.safetensors (every encoder tensor under its Hugging Face transformers name, F32,\n"
    "__metadata__ {\"format\":\"pt\"}) and DIR/config.json (Wav2Vec2 fields: conv_dim, conv_kernel,\n"
    "conv_stride, conv_bias, feat_extract_norm, hidden_size, num_hidden_layers, num_attention_heads,\n"
    "intermediate_size, num_conv_pos_embeddings, num_conv_pos_embedding_groups, do_stable_layer_norm,\n"
    "layer_norm_eps, dropouts, layerdrop, mask_time_*; plus koe_* fields for the fbank frontend and\n"
    "the conformer encoder, which transformers' Wav2Vec2 has no field for).\n"
    "`koe init --from DIR` reads it back.\n"
    "\n"
    "options:\n"
    "  --ckpt CKPT.h5   checkpoint (koe init / koe train) (required)\n"
    "  --out DIR        output directory, created if missing (required)\n";

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(cmd_export_help, stdout);
            return KOE_EXIT_OK;
        }
        if (i + 1 < argc && !strcmp(argv[i], "--ckpt")) ckpt = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--out")) out = argv[++i];
        else {
            fprintf(stderr, "koe export: unknown option or missing value: %s (see `koe help export`)\n", argv[i]);
            return KOE_EXIT_USAGE;
        }
    }
    if (!ckpt || !out) {
        fprintf(stderr, "koe export: --ckpt and --out are required (see `koe help export`)\n");
        return KOE_EXIT_USAGE;
    }
    int rc = KOE_EXIT_OK;
    if (comm_rank() == 0) {
        KoeError err;
        Recipe r;
        Model *m = ckpt_model_open(ckpt, 1, 0, &r, &err);
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

/* cmd_init.c — `koe init RECIPE.ini [section.key=value ...] --out CKPT.h5`: a randomly initialised
 * model (fairseq's initialisation, from run.seed) as a checkpoint; `koe init --from DIR --out CKPT.h5`:
 * the same from a Hugging Face export (model.safetensors + config.json), or from a pytorch_model.bin
 * directory or fairseq .pt converted to one by data/pickle_to_hf.py, which it runs, so that
 * pretraining can continue from a published model. The checkpoint's /config is the resolved recipe.
 * Must not: run under several ranks writing the same file (rank 0 writes; the others wait). */
#include <errno.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/model.h"
#include "../data/checkpoint.h"
#include "../distributed/comm.h"
#include "ckpt_model.h"
#include "commands.h"
#include "../data/hf.h"
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
             "With --from DIR the [model] section's architecture comes from DIR/config.json (transformers\n"
             "HuBERT / wav2vec 2.0 fields; do_normalize becomes model.normalize_waveform) and the weights from\n"
             "DIR/model.safetensors or the shards of DIR/model.safetensors.index.json (F32, F16 or BF16). A\n"
             "pretraining head (wav2vec 2.0's quantizer, project_q, project_hid; fairseq HuBERT's final_proj,\n"
             "label_embs_concat) comes along with the [objective] keys that fit it, for run.init_from; other\n"
             "tensors outside the encoder, e.g. a CTC head, are skipped with a warning. The pretraining settings\n"
             "(dropouts, layerdrop, masking) and the other sections are the recipe defaults plus the overrides:\n"
             "a published config.json's mask_time_prob etc. are fine-tuning values and are not used. Other\n"
             "model types (WavLM, data2vec-audio, ...) are refused. DIR may also be a directory with only\n"
             "pytorch_model.bin or a fairseq .pt file (Python pickles): koe converts it first with its\n"
             "pickle_to_hf.py, under $KOE_PYTHON or python3 with torch, reading the pickle without running code.\n"
             "section.key=value arguments override the recipe, after the file (`koe help train` lists the keys).\n",
    .flags = init_flags,
    .opts_size = sizeof(InitOptions),
    .run = init_command,
};

/* The converter's output directory, removed after the import. */
static void remove_converted(const char *dir) {
    static const char *const files[] = {"config.json", "preprocessor_config.json", "model.safetensors"};
    char p[4300];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        remove(p);
    }
    if (rmdir(dir)) koe_warn("cannot remove %s: %s", dir, strerror(errno));
}

/* A pickle (hf_is_pickle) converted by data/pickle_to_hf.py into a new temporary directory, written
 * to dir (empty when none was made; the caller removes it). The converter runs under $KOE_PYTHON, else python3 from PATH (it needs torch). Returns 0,
 * or -1 after saying why and what to do. */
static int convert_pickle(const char *from, char *dir, size_t n) {
    char script[4200];
    if (cli_shipped_path("data/pickle_to_hf.py", "pickle_to_hf.py", script, sizeof script)) {
        fprintf(stderr, "koe init: %s is a Python pickle, and the converter pickle_to_hf.py is not next to the koe "
                        "binary (source tree: data/, installed: PREFIX/share/koe/)\n", from);
        return -1;
    }
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, n, "%s/koe-convert-XXXXXX", tmp);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "koe init: cannot create a directory %s for the converted model: %s\n", dir, strerror(errno));
        dir[0] = 0;
        return -1;
    }
    const char *py = getenv("KOE_PYTHON") && *getenv("KOE_PYTHON") ? getenv("KOE_PYTHON") : "python3";
    char *const argv[] = {(char *)py, script, (char *)from, dir, NULL};
    koe_log("init: %s is a Python pickle; converting it: %s %s %s %s", from, py, script, from, dir);
    pid_t pid;
    int status = 0, rc = posix_spawnp(&pid, py, NULL, NULL, argv, environ);
    if (rc == 0 && waitpid(pid, &status, 0) < 0) rc = errno;
    if (rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    fprintf(stderr, "koe init: converting %s failed (%s). The converter needs Python 3 with torch (Debian: "
                    "apt-get install python3-torch; KOE_PYTHON=/path/to/python selects another); run it yourself to "
                    "see why:\n  %s %s %s OUT\n", from, rc ? strerror(rc) : "see its message above", py, script, from);
    return -1;
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
    if (!rc && (!recipe) == (!from))
        rc = cli_error(&cmd_init, comm_rank() == 0, "exactly one of RECIPE.ini or --from DIR is required");
    if (rc) {
        free(over);
        return rc;
    }
    KoeError err;
    Recipe r;
    Model *m = NULL;
    CkptHead head = {0}; /* with an imported pretraining head: the checkpoint's table and weights */
    if (recipe) {
        if (recipe_load(&r, recipe, n_over, over, &err) < 0) {
            fprintf(stderr, "koe init: %s\n", err.msg);
            free(over);
            return KOE_EXIT_USAGE;
        }
        m = model_create(&r.model, 1, ckpt_model_min_input(&r.model));
        model_init_params(m, r.run.seed);
    } else {
        char converted[4200] = "";
        if (hf_is_pickle(from) && convert_pickle(from, converted, sizeof converted) < 0) rc = KOE_EXIT_USAGE;
        else if (!(m = ckpt_model_open_hf(*converted ? converted : from, n_over, over, 1, 0, NULL, &head, &r, &err))) {
            fprintf(stderr, "koe init: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        }
        if (*converted) remove_converted(converted);
        if (rc) { /* the recipe was not loaded */
            free(over);
            return rc;
        }
    }
    if (comm_rank() == 0) {
        const ParamTable *t = head.v ? &head.t : &m->table;
        if (checkpoint_write(out, t, head.v ? head.v : m->params, r.text, &err) < 0) {
            fprintf(stderr, "koe init: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        } else
            koe_log("init: wrote %s (%lld parameters in %d tensors)", out, (long long)t->total, t->n);
    }
    ckpt_head_free(&head);
    comm_bcast(&rc, sizeof rc, 0); /* every rank exits with rank 0's status */
    model_free(m);
    recipe_free(&r);
    free(over);
    return rc;
}

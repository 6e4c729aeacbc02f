/* recipe.h — training recipes (recipes/README.md, Recipes): INI files parsed with libinih, sections
 * [data] [model] [objective] [optim] [run], plus `section.key=value` overrides from the command
 * line. One table (recipe.c; its [model] keys are core's model_keys, its loader keys data/loader.c's
 * loader_keys) gives every key its type, default and one-line doc; it drives parsing,
 * validation, the `koe help`-style key listing and the resolved text. The resolved text (every
 * key, defaults included, canonical formatting) is what koe prints at start, hashes, checks equal
 * on every rank and stores in checkpoints; parsing it again gives the same text and hash.
 * Errors a user can cause name the file and line (or the override) and the key. No MPI here. */
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "../core/common.h"
#include "../core/model.h"
#include "../core/objective.h"
#include "../core/optim.h"
#include "../data/features.h"
#include "../data/loader.h"

#define RECIPE_STR_MAX CONFIG_STR_MAX /* core/config_keys.h: a resolved line fits libinih's */

typedef struct {
    char corpus[RECIPE_STR_MAX];       /* corpus directory */
    char valid_corpus[RECIPE_STR_MAX]; /* held-out corpus; "" = no validation */
    char labels[RECIPE_STR_MAX];       /* label set name (HuBERT) */
    LoaderConfig loader;               /* the [data] keys of data/loader.c's loader_keys; the trainer sets
                                          the seed, rank, world and cropping */
} RecipeData;

typedef struct {
    ObjectiveName name;
    /* HuBERT and wav2vec 2.0 */
    int final_dim;
    double logit_temp;
    double feature_pen_weight;
    int label_rate;          /* HuBERT: label frames per second */
    double pred_nomask_weight; /* HuBERT: weight of the CE on unmasked frames */
    /* wav2vec 2.0 */
    int latent_groups;       /* G */
    int latent_vars;         /* V */
    int latent_dim;          /* codevector dim; 0 = final_dim */
    int num_negatives;
    double diversity_weight;
    double temp[3];          /* Gumbel temperature (max, min, decay per update) */
    /* BEST-RQ */
    int codebooks;
    int codebook_size;
    int codebook_dim;
    double mask_noise_std;   /* masked input frames are replaced by N(0, std^2) */
} RecipeObjective;

typedef struct {
    double lr;
    double betas[2];
    double eps;
    double weight_decay;
    double clip_norm;        /* 0 = no clipping */
    ScheduleKind schedule;
    int64_t warmup;
    int64_t max_updates;
    double phase_ratio[3];   /* tri_stage */
    double init_lr_scale;    /* tri_stage */
    double final_lr_scale;   /* tri_stage */
    int update_freq;         /* micro-batches summed per update */
    int max_skips;           /* non-finite steps in a row before the run stops */
} RecipeOptim;

/* run.precision: what the trainer asks of core/gemm.h (trainer.c resolves auto) */
typedef enum { PRECISION_FP32, PRECISION_BF16, PRECISION_AUTO } RunPrecision;

typedef struct {
    char dir[RECIPE_STR_MAX];
    uint64_t seed;
    char init_from[RECIPE_STR_MAX]; /* "" = initialise from run.seed */
    int threads;             /* 0 = OMP_NUM_THREADS */
    RunPrecision precision;
    int64_t log_every;
    int64_t save_every;
    int keep_last;
    int64_t valid_every;     /* 0 = never */
    int zero;                /* 1 = ZeRO-1 optimizer-state sharding */
    double watchdog_s;       /* 0 = off */
    int64_t plot_every;      /* 0 = never */
    double health_min_ppl;   /* 0 = off */
    double health_min_target_ppl; /* 0 = off */
    int health_patience;
    int64_t health_plateau_updates; /* 0 = off */
    double health_plateau_drop;
} RecipeRun;

typedef struct {
    RecipeData data;
    ModelConfig model;
    RecipeObjective objective;
    RecipeOptim optim;
    RecipeRun run;
    char *text;    /* the resolved recipe as INI text (owned; recipe_free) */
    uint64_t hash; /* FNV-1a 64 of text */
} Recipe;

/* Parse the file at path, apply the overrides ("section.key=value", in order, after the file),
 * validate, and fill r including r->text and r->hash. On error returns -1 with err naming
 * FILE:LINE and the key (or the override); r is then freed. */
int recipe_load(Recipe *r, const char *path, int n_overrides, char *const *overrides, KoeError *err);
/* The same from text in memory; name is used in messages (e.g. "CKPT.h5:/config"). */
int recipe_load_string(Recipe *r, const char *name, const char *text, int n_overrides,
                       char *const *overrides, KoeError *err);
/* `koe init --from`: the defaults with [model] = *model (read from name, e.g. DIR/config.json, which
 * messages name), then the overrides, validated like a file. */
int recipe_load_model(Recipe *r, const char *name, const ModelConfig *model, int n_overrides,
                      char *const *overrides, KoeError *err);
void recipe_free(Recipe *r);

uint64_t recipe_hash_text(const char *text); /* FNV-1a 64 over the bytes */

/* The [optim] section as the optimizer's and the schedule's configs (core/optim.h). */
void recipe_adamw_config(const Recipe *r, AdamWConfig *c);
void recipe_schedule_config(const Recipe *r, ScheduleConfig *s);
/* The [objective] section (with the model keys the heads share) as the objective's config.
 * n_classes: HuBERT's label classes (from the label set). */
void recipe_objective_config(const Recipe *r, int n_classes, ObjectiveConfig *c);

/* Every key with its default and doc, grouped by section (for `koe help train`). */
void recipe_print_keys(FILE *f);

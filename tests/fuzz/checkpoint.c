/* checkpoint.c — libFuzzer harness of the checkpoint reader (data/checkpoint.c): the input is CKPT.h5.
 * Its /config is read and parsed as a recipe; when that model is small its tensors are read the three
 * ways koe reads them: the whole table (checkpoint_read_params), the encoder (embed, export) and a
 * training checkpoint's resume read (with /optim and /state).
 * Seeds: KOE_FUZZ_SEEDS=DIR writes a model-only and a training checkpoint of a 1140-parameter model. */
#include "../../data/checkpoint.h"
#include "../../recipes/recipe.h"
#include "fuzz_util.h"

#define MAX_PARAMS (1 << 20) /* a larger model in a fuzzed /config is not read (memory, not parsing) */

static void write_seeds(const char *dir) {
    Recipe r;
    KoeError err;
    if (recipe_load_string(&r, "tiny", FUZZ_TINY_RECIPE, 0, NULL, &err) < 0) fuzz_die("recipe", &err);
    ParamTable t;
    params_table_init(&t);
    model_table_build(&r.model, &t);
    float *p = malloc((size_t)t.total * sizeof *p), *m = calloc((size_t)t.total, sizeof *m);
    params_init(&t, p, 1);
    char path[400];
    snprintf(path, sizeof path, "%s/model.h5", dir);
    if (checkpoint_write(path, &t, p, r.text, &err) < 0) fuzz_die(path, &err);
    snprintf(path, sizeof path, "%s/train.h5", dir);
    CheckpointWriter *w = checkpoint_writer_open(path, &t, 1, &err);
    if (!w) fuzz_die(path, &err);
    for (int i = 0; i < t.n; i++)
        if (checkpoint_writer_tensor(w, i, p + t.e[i].offset, &err) < 0) fuzz_die(path, &err);
    for (int64_t i = 0; i < t.total; i++) m[i] = 1e-3f * (float)(i % 17);
    TrainState st = {.step = 3, .epoch = 1, .consumed = 3, .seed = 1, .adam_t = 3, .sched_step = 3};
    if (checkpoint_writer_optim(w, 0, 0, t.total, m, &err) < 0 || checkpoint_writer_optim(w, 1, 0, t.total, m, &err) < 0 ||
        checkpoint_writer_finish(w, r.text, &st, &err) < 0)
        fuzz_die(path, &err);
    free(p);
    free(m);
    params_table_free(&t);
    recipe_free(&r);
}

FUZZ_INITIALIZE(write_seeds)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("ckpt.h5", data, size);
    char *text = NULL;
    KoeError err;
    Recipe r;
    if (checkpoint_read_config(path, &text, &err) == 0 && recipe_load_string(&r, path, text, 0, NULL, &err) == 0) {
        ParamTable t;
        params_table_init(&t);
        model_table_build(&r.model, &t);
        if (t.total <= MAX_PARAMS) {
            float *p = malloc((size_t)t.total * sizeof *p), *m = malloc((size_t)t.total * sizeof *m),
                  *v = malloc((size_t)t.total * sizeof *v);
            checkpoint_read_params(path, &t, p, &err);
            checkpoint_read_encoder(path, &t, p, &err);
            TrainState st;
            char *cfg = NULL;
            uint64_t sums[2], stored[2];
            if (checkpoint_read_train_slice(path, &t, m, v, 0, t.total, &st, &cfg, sums, stored, &err) == 0)
                free(cfg);
            free(p), free(m), free(v);
        }
        params_table_free(&t);
        recipe_free(&r);
    }
    free(text);
    fuzz_check_h5_closed();
    return 0;
}

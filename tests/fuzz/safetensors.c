/* safetensors.c — libFuzzer harness of `koe init --from DIR`'s tensor reader (data/hf.c,
 * hf_read_params): the input is DIR/model.safetensors (8-byte header length, JSON header, data)
 * beside the config.json of a 1140-parameter model, read into that model's table.
 * Seeds: KOE_FUZZ_SEEDS=DIR writes the model's export (hf_export). */
#include "../../data/hf.h"
#include "../../recipes/recipe.h"
#include "fuzz_util.h"

static ParamTable table;
static float *params;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_init();
    Recipe r;
    KoeError err;
    if (recipe_load_string(&r, "tiny", FUZZ_TINY_RECIPE, 0, NULL, &err) < 0) fuzz_die("recipe", &err);
    params_table_init(&table);
    model_table_build(&r.model, &table);
    params = malloc((size_t)table.total * sizeof *params);
    params_init(&table, params, 1);
    if (hf_export(fuzz_dir, &r.model, &table, params, &err) < 0) fuzz_die("export", &err);
    recipe_free(&r);
    fuzz_seed_copy("model.safetensors", "model.safetensors");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write("model.safetensors", data, size);
    KoeError err;
    HfHeads heads; /* the pretraining heads' tensors are parsed too (freed by the reader on an error) */
    if (hf_read_params(fuzz_dir, &table, params, &heads, &err) == 0) hf_heads_free(&heads);
    return 0;
}

/* hf_config.c — libFuzzer harness of `koe init --from DIR`'s config reader (data/hf.c,
 * hf_read_config): the input up to its first NUL is DIR/config.json, the rest (when there is a NUL)
 * DIR/preprocessor_config.json; DIR/model.safetensors exists (empty). A config that is read must
 * then pass or fail the recipe checks as koe init runs them (recipe_load_model). */
#include "../../data/hf.h"
#include "../../recipes/recipe.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_init();
    fuzz_write("model.safetensors", (const uint8_t *)"", 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t cfg = nul ? (size_t)(nul - data) : size;
    fuzz_write("config.json", data, cfg);
    char path[300];
    if (nul)
        fuzz_write("preprocessor_config.json", nul + 1, size - cfg - 1);
    else
        unlink(fuzz_path(path, sizeof path, "preprocessor_config.json"));
    ModelConfig mc;
    KoeError err;
    if (hf_read_config(fuzz_dir, &mc, &err) == 0) {
        Recipe r;
        fuzz_path(path, sizeof path, "config.json");
        if (recipe_load_model(&r, path, &mc, 0, NULL, &err) == 0) recipe_free(&r);
    }
    return 0;
}

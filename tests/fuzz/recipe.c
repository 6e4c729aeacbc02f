/* recipe.c — libFuzzer harness of the recipe parser (recipes/recipe.c): the input up to its first
 * NUL is RECIPE.ini, the rest `section.key=value` overrides, one a line. A recipe that loads must
 * give resolved text that loads again to the same text (checkpoints store it and embed, export and
 * kmeans parse it back). */
#include "../../recipes/recipe.h"
#include "fuzz_util.h"

#define MAX_OVERRIDES 16

FUZZ_INITIALIZE(NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t ini = nul ? (size_t)(nul - data) : size;
    const char *path = fuzz_write("recipe.ini", data, ini);

    char *rest = NULL, *ov[MAX_OVERRIDES];
    int n_ov = 0;
    if (nul) {
        size_t n = size - ini - 1;
        rest = malloc(n + 1);
        memcpy(rest, nul + 1, n);
        rest[n] = 0;
        for (char *save = NULL, *line = strtok_r(rest, "\n", &save); line && n_ov < MAX_OVERRIDES;
             line = strtok_r(NULL, "\n", &save))
            ov[n_ov++] = line;
    }
    Recipe r, again;
    KoeError err;
    if (recipe_load(&r, path, n_ov, ov, &err) == 0) {
        if (recipe_load_string(&again, "resolved", r.text, 0, NULL, &err) != 0) {
            fprintf(stderr, "resolved recipe refused by its own parser: %s\n--- text:\n%s", err.msg, r.text);
            abort();
        }
        if (strcmp(again.text, r.text) != 0 || again.hash != r.hash) {
            fprintf(stderr, "resolved recipe changes when parsed again\n--- first:\n%s--- again:\n%s", r.text,
                    again.text);
            abort();
        }
        recipe_free(&again);
        recipe_free(&r);
    }
    free(rest);
    return 0;
}

/* tsv.c — libFuzzer harness of `koe prepare`'s fairseq manifest reader (data/prepare.c): the input
 * is MANIFEST.tsv (a root directory line, then `path<TAB>samples` lines), collected as prepare does
 * (no audio is opened: that is prepare_probe's, the audio decoder's job). */
#include "../../data/prepare.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[300];
    char *inputs[1] = {(char *)fuzz_write(path, sizeof path, "train.tsv", data, size)};
    PrepareOptions opt = {.lang = NULL, .lang_from_dir = 1, .allow_pipes = 0, .shard_bytes = 1 << 20};
    PreparePlan p = {0};
    PrepareRejects rej = {0};
    prepare_collect(&p, inputs, 1, &opt, &rej);
    prepare_plan_free(&p);
    prepare_rejects_free(&rej);
    return 0;
}

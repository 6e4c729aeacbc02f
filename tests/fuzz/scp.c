/* scp.c — libFuzzer harness of `koe prepare`'s Kaldi wav.scp reader (data/prepare.c): the input is
 * wav.scp (`uttid path` or `uttid command |` lines), collected as `koe prepare --allow-pipes` does.
 * Collecting runs no command and opens no audio (prepare_probe and prepare_write_shards do). */
#include "../../data/prepare.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[300];
    char *inputs[1] = {(char *)fuzz_write(path, sizeof path, "wav.scp", data, size)};
    PrepareOptions opt = {.lang = NULL, .lang_from_dir = 1, .allow_pipes = 1, .shard_bytes = 1 << 20};
    PreparePlan p = {0};
    PrepareRejects rej = {0};
    prepare_collect(&p, inputs, 1, &opt, &rej);
    prepare_plan_free(&p);
    prepare_rejects_free(&rej);
    return 0;
}

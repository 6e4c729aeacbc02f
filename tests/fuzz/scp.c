/* scp.c — libFuzzer harness of `koe prepare`'s Kaldi wav.scp reader (data/prepare.c): the input is
 * wav.scp (`uttid path` or `uttid command |` lines), collected as `koe prepare --allow-pipes` does.
 * Collecting runs no command and opens no audio (prepare_probe and prepare_write_shards do). */
#include "fuzz_util.h"

FUZZ_INITIALIZE(NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_prepare_collect("wav.scp", 1, data, size);
    return 0;
}

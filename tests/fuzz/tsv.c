/* tsv.c — libFuzzer harness of `koe prepare`'s fairseq manifest reader (data/prepare.c): the input
 * is MANIFEST.tsv (a root directory line, then `path<TAB>samples` lines), collected as prepare does
 * (no audio is opened: that is prepare_probe's, the audio decoder's job). */
#include "fuzz_util.h"

FUZZ_INITIALIZE(NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_prepare_collect("train.tsv", 0, data, size);
    return 0;
}

/* ctm.c — libFuzzer harness of `koe prepare --align`'s CTM reader (data/prepare.c,
 * prepare_load_align): the input is the CTM file (`utt channel start dur phone` lines, seconds). */
#include "../../data/prepare.h"
#include "fuzz_util.h"

FUZZ_INITIALIZE(NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("align.ctm", data, size);
    PreparePlan p = {0};
    KoeError err;
    prepare_load_align(&p, path, &err);
    prepare_plan_free(&p);
    return 0;
}

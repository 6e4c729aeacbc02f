/* corpus.c — libFuzzer harness of the corpus index reader (data/corpus.c, corpus_open): the input is
 * DIR/corpus.h5 beside two valid shards (made at start), opened and checked against them as every
 * command that reads a corpus does. Seeds: KOE_FUZZ_SEEDS=DIR writes the valid index. */
#include "fuzz_util.h"

#define INPUT "corpus/corpus.h5"

static char corpus_dir[300];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_init();
    fuzz_path(corpus_dir, sizeof corpus_dir, "corpus");
    fuzz_make_corpus(corpus_dir);
    fuzz_seed_copy(INPUT, "corpus.h5");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write(INPUT, data, size);
    Corpus c;
    KoeError err;
    if (corpus_open(&c, corpus_dir, &err) == 0) corpus_close(&c);
    fuzz_check_h5_closed();
    return 0;
}

/* shard.c — libFuzzer harness of the corpus shard reader (data/shard.c): the input is a shard file,
 * opened as everything that reads audio opens it; then every utterance's audio and alignment is
 * read as the loader and koe info read them. Seeds: KOE_FUZZ_SEEDS=DIR writes a valid shard. */
#include "fuzz_util.h"

static void write_seeds(const char *dir) {
    char path[400];
    snprintf(path, sizeof path, "%s/shard.h5", dir);
    fuzz_make_shard(path, "u");
}

FUZZ_INITIALIZE(write_seeds)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("shard-00000.h5", data, size);
    CorpusShard s;
    KoeError err;
    if (corpus_shard_open(&s, path, &err) == 0) {
        for (int64_t i = 0; i < s.n; i++) {
            int64_t n = s.length[i] < 100000 ? s.length[i] : 100000; /* a crop, as the loader takes */
            int16_t *pcm = malloc((size_t)n * sizeof *pcm);
            if (corpus_shard_read(&s, i, s.length[i] - n, n, pcm, &err) < 0) {
                free(pcm);
                break;
            }
            free(pcm);
            int64_t nf = s.align_offset ? corpus_shard_read_align(&s, i, NULL, 0, &err) : 0;
            if (nf > 0 && nf < 100000) {
                uint16_t *f = malloc((size_t)nf * sizeof *f);
                corpus_shard_read_align(&s, i, f, nf, &err);
                free(f);
            }
        }
        corpus_shard_close(&s);
    }
    fuzz_check_h5_closed();
    return 0;
}

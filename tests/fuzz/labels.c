/* labels.c — libFuzzer harness of the label-set reader (data/labels.c): the input is the label file
 * of the first shard of a valid two-shard corpus (made at start, with a valid label file for the
 * second), opened as koe train opens a HuBERT label set, then every utterance's labels read.
 * Seeds: KOE_FUZZ_SEEDS=DIR writes the first shard's valid label file. */
#include "../../data/labels.h"
#include "fuzz_util.h"

#define INPUT "corpus/labels/fz/shard-00000.h5" /* the first shard's label file */

static char corpus_dir[300];
static Corpus corpus;

/* The label file of shard s of the corpus, as koe label writes it for MFCC labels. */
static void write_labels(int s) {
    const CorpusShard *sh = &corpus.shards[s];
    LabelSetInfo info = {.n_classes = 7, .frame_rate = 100, .source = "mfcc", .kmeans_checksum = "0123456789abcdef"};
    int64_t offset[FUZZ_UTTS + 1] = {0};
    uint16_t labels[64];
    for (int64_t i = 0; i < sh->n; i++) offset[i + 1] = offset[i] + sh->length[i] / 160;
    for (int64_t f = 0; f < offset[sh->n]; f++) labels[f] = (uint16_t)(f * 5 % 7);
    KoeError err;
    if (labels_write_shard(corpus_dir, "fz", sh, &info, labels, offset, &err) < 0) fuzz_die("labels", &err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_init();
    fuzz_path(corpus_dir, sizeof corpus_dir, "corpus");
    fuzz_make_corpus(corpus_dir);
    KoeError err;
    if (corpus_open(&corpus, corpus_dir, &err) < 0 || labels_make_dir(corpus_dir, "fz", &err) < 0)
        fuzz_die(corpus_dir, &err);
    write_labels(0);
    write_labels(1);
    fuzz_seed_copy(INPUT, "labels.h5");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write(INPUT, data, size);
    LabelSet ls;
    KoeError err;
    if (labelset_open(&ls, &corpus, "fz", &err) == 0) {
        for (int64_t u = 0; u < corpus.n_utts; u++) {
            int64_t n = labelset_read(&ls, u, NULL, 0, &err);
            if (n <= 0 || n > 100000) continue;
            int32_t *out = malloc((size_t)n * sizeof *out);
            labelset_read(&ls, u, out, n, &err);
            free(out);
        }
        labelset_close(&ls);
    }
    /* the corpus stays open: only the label files must be closed */
    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE);
    if (open != corpus.n_shards) {
        fprintf(stderr, "fuzz: %zd HDF5 files open after the label reader returned, %d expected\n", open,
                corpus.n_shards);
        abort();
    }
    return 0;
}

/* kmeans.c — libFuzzer harness of the k-means file reader (data/kmeans_file.c, kmeans_file_read): the
 * input is KM.h5, read as koe label reads it. Seeds: KOE_FUZZ_SEEDS=DIR writes a valid file. */
#include "../../data/kmeans_file.h"
#include "fuzz_util.h"

static void write_seeds(const char *dir) {
    char path[400];
    float c[3 * 4];
    for (int i = 0; i < 12; i++) c[i] = (float)i * 0.25f - 1;
    KmeansFile f = {.k = 3, .dim = 4, .centroids = c, .source = "mfcc", .frame_rate = 100, .corpus = "corpus",
                    .seed = 1, .sample = 1, .iterations = 3, .inertia = 1.5, .frames = 100};
    snprintf(path, sizeof path, "%s/km.h5", dir);
    KoeError err;
    if (kmeans_file_write(path, &f, &err) < 0) fuzz_die(path, &err);
    f.k = 2;
    snprintf(f.source, sizeof f.source, "layer:6");
    snprintf(f.ckpt_checksum, sizeof f.ckpt_checksum, "0123456789abcdef");
    f.frame_rate = 50;
    snprintf(path, sizeof path, "%s/km_layer.h5", dir);
    if (kmeans_file_write(path, &f, &err) < 0) fuzz_die(path, &err);
}

FUZZ_INITIALIZE(write_seeds)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("km.h5", data, size);
    KmeansFile f;
    KoeError err;
    if (kmeans_file_read(&f, path, &err) == 0) kmeans_file_free(&f);
    fuzz_check_h5_closed();
    return 0;
}

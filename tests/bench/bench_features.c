/* bench_features.c — fbank/MFCC throughput on one core, the same audio as
 * ../shared/anchors/kaldi_features.py --seconds S (0.1 * Gaussian noise at 16 kHz).
 *   bench_features --kind mfcc|fbank [--seconds 600] [--repeats 3]
 * Prints one line ending in x_realtime=X (seconds of audio per wall-clock second, median of the
 * repeats), like the anchor. Not a test: tests/bench/features.sh turns it into a ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/common.h"
#include "../../core/rng.h"
#include "../../data/features.h"

int main(int argc, char **argv) {
    FeatureKind kind = FEAT_MFCC;
    double seconds = 600.0;
    int repeats = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--kind") && i + 1 < argc) {
            if (features_kind_parse(argv[++i], &kind) < 0)
                koe_fatal(KOE_EXIT_USAGE, "--kind %s: expected mfcc or fbank", argv[i]);
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) {
            repeats = atoi(argv[++i]);
        } else {
            koe_fatal(KOE_EXIT_USAGE, "usage: bench_features --kind mfcc|fbank [--seconds S] [--repeats N]");
        }
    }
    if (seconds <= 0 || repeats < 1 || repeats > 99) koe_fatal(KOE_EXIT_USAGE, "--seconds > 0, 1 <= --repeats <= 99");
    int64_t n = (int64_t)(seconds * 16000);
    float *wav = koe_malloc((size_t)n * sizeof(float)); // (n)
    KoeRng rng = koe_rng(0, 0, 0, KOE_RNG_NOISE);
    for (int64_t i = 0; i < n; i++) wav[i] = (float)(0.1 * koe_rng_normal(&rng));
    int64_t T = features_num_frames(n);
    int dim = features_dim(kind);
    float *out = koe_malloc((size_t)(T > 0 ? T : 1) * (size_t)dim * sizeof(float)); // (T, dim)
    FeatureExtractor *fe = features_create(kind);
    double wall[99];
    double check = 0;
    for (int r = 0; r < repeats; r++) {
        double t0 = koe_now();
        features_compute(fe, wav, n, out);
        wall[r] = koe_now() - t0;
        check += out[(T / 2) * dim];
    }
    double med = koe_median(wall, repeats);
    printf("kind=%s frames=%lld dim=%d audio_s=%.1f wall_s=%.3f check=%.4g x_realtime=%.1f\n",
           features_kind_name(kind), (long long)T, dim, seconds, med, check, seconds / med);
    features_free(fe);
    free(out);
    free(wav);
    return 0;
}

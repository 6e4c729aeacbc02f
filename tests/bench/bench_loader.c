/* bench_loader.c — sustained loader rate: HDF5 read + zstd decode + fbank/MFCC + padding, with
 * prefetch threads, the consumer taking batches as fast as they come. Prints audio seconds per wall
 * second and per CPU second (all threads of the process: the per-core figure). Not a test.
 *
 *   bench_loader --corpus DIR [--features fbank|mfcc|none] [--threads 1] [--depth 4]
 *                [--batches 0] [--seconds 10] [--max-tokens 1400000] [--min-sample 32000]
 *   bench_loader --generate DIR [--minutes 20]     write a corpus of tone+noise in 10 languages first
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../../core/rng.h"
#include "../../data/corpus.h"
#include "../../data/h5util.h"
#include "../../data/loader.h"
#include "../../data/shard.h"

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Utterances of 2-15 s in 10 languages (sizes 1..10 parts), 4 shards. */
static void generate(const char *dir, double minutes) {
    static const char *langs[10] = {"cs", "de", "en", "es", "fi", "fr", "it", "nl", "pl", "pt"};
    if (mkdir(dir, 0755) != 0) koe_fatal(KOE_EXIT_USAGE, "cannot create %s (it must not exist yet)", dir);
    enum { SHARDS = 4 };
    char *names[SHARDS];
    KoeRng r = koe_rng(3, 0, 0, KOE_RNG_SYNTH);
    int64_t total = (int64_t)(minutes * 60 * 16000), done = 0, u = 0;
    int16_t *pcm = koe_malloc(15 * 16000 * sizeof(int16_t));
    for (int s = 0; s < SHARDS; s++) {
        char path[1024];
        names[s] = koe_malloc(32);
        snprintf(names[s], 32, "shard-%05d.h5", s);
        snprintf(path, sizeof path, "%s/%s", dir, names[s]);
        KoeError err;
        ShardWriter *w = shard_writer_create(path, NULL, 0, &err);
        if (!w) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
        while (done < total * (s + 1) / SHARDS) {
            int64_t n = 2 * 16000 + (int64_t)koe_rng_below(&r, 13 * 16000);
            double ph = 0, f = 80 + 300 * koe_rng_uniform(&r);
            for (int64_t t = 0; t < n; t++) {
                ph += 2 * M_PI * f / 16000.0;
                pcm[t] = (int16_t)(6000 * sin(ph) * (0.6 + 0.4 * sin(t * 0.0004)) + 600 * koe_rng_normal(&r));
            }
            int l = (int)sqrt((double)koe_rng_below(&r, 100)); /* 0..9, later languages more often */
            char id[32];
            snprintf(id, sizeof id, "gen%07lld", (long long)u++);
            if (shard_writer_add(w, id, langs[l], "spk", "generated", pcm, n, NULL, 0, &err) != 0)
                koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
            done += n;
        }
        if (shard_writer_finish(w, &err) != 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    }
    KoeError err;
    if (corpus_write_index(dir, names, SHARDS, "bench_loader --generate", &err) != 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    for (int s = 0; s < SHARDS; s++) free(names[s]);
    free(pcm);
}

int main(int argc, char **argv) {
    const char *corpus = NULL, *gen = NULL, *feat = "fbank";
    double minutes = 20, seconds = 10;
    LoaderConfig lc;
    loader_config_default(&lc);
    lc.plan.crop_to_shortest = 0; /* fbank frontend: padding */
    lc.plan.log = 0;              /* one line per epoch would swamp the report on a small corpus */
    int64_t batches = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) koe_fatal(KOE_EXIT_USAGE, "option %s needs a value", a);
        if (!strcmp(a, "--corpus")) corpus = v;
        else if (!strcmp(a, "--generate")) gen = v;
        else if (!strcmp(a, "--minutes")) minutes = atof(v);
        else if (!strcmp(a, "--features")) feat = v;
        else if (!strcmp(a, "--threads")) lc.threads = atoi(v);
        else if (!strcmp(a, "--depth")) lc.depth = atoi(v);
        else if (!strcmp(a, "--batches")) batches = atoll(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--max-tokens")) lc.plan.max_tokens = atoll(v);
        else if (!strcmp(a, "--min-sample")) lc.plan.min_sample_size = atoll(v);
        else koe_fatal(KOE_EXIT_USAGE, "unknown option %s (see the header of tests/bench/bench_loader.c)", a);
        i++;
    }
    h5_init();
    if (gen) {
        generate(gen, minutes);
        if (!corpus) corpus = gen;
    }
    if (!corpus) koe_fatal(KOE_EXIT_USAGE, "give --corpus DIR or --generate DIR");
    if (strcmp(feat, "none") && features_kind_parse(feat, &lc.features) != 0)
        koe_fatal(KOE_EXIT_USAGE, "--features %s: expected fbank, mfcc or none", feat);
    Corpus c;
    KoeError err;
    if (corpus_open(&c, corpus, &err) != 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    Loader *l = loader_open(&c, &lc, 0, &err);
    if (!l) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    /* warm-up: the first batch (the ring fills behind it) */
    if (!loader_next(l, &err)) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    double t0 = koe_now(), c0 = cpu_now(), audio = 0;
    int64_t k = 0, utts = 0;
    while ((batches > 0 && k < batches) || (batches == 0 && koe_now() - t0 < seconds)) {
        const LoaderBatch *b = loader_next(l, &err);
        if (!b) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
        for (int64_t i = 0; i < b->n; i++) audio += (double)b->length[i] / 16000.0;
        utts += b->n;
        k++;
    }
    double wall = koe_now() - t0, cpu = cpu_now() - c0;
    printf("corpus=%s hours=%.2f features=%s threads=%d batches=%lld utts=%lld audio_s=%.1f wall_s=%.3f "
           "cpu_s=%.3f x_realtime=%.1f x_realtime_per_cpu=%.1f\n",
           corpus, c.hours, feat, lc.threads, (long long)k, (long long)utts, audio, wall, cpu, audio / wall,
           audio / cpu);
    loader_close(l);
    corpus_close(&c);
    return 0;
}

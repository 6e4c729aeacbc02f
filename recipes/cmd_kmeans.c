/* cmd_kmeans.c — `koe kmeans (--corpus DIR --source mfcc|fbank|layer:N [--ckpt CKPT] | --source file:FEATS.h5)
 * --k K --out KM.h5`: HuBERT's k-means over features streamed from a corpus or a features file.
 *   1. Utterances: each is kept with probability --sample (RNG keyed by seed and utterance); rank r
 *      takes every world-th kept utterance.
 *   2. Pass 0 reads every kept utterance once and keeps a bounded sample of frames: the
 *      --init-sample frames with the smallest hash keys (seed, utterance, frame), so the sample is
 *      the same for any rank count. Layer features are also written to a per-rank cache file
 *      (raw float32, removed at the end) so the model runs once; MFCC is recomputed each pass; a
 *      features file (koe features, koe embed --layer N) is read again each pass, a block at a time.
 *   3. k-means++ (greedy, core/kmeans.c) on the sample, then Lloyd iterations: one pass per
 *      iteration assigns frames in blocks (sgemm distances) and accumulates sums and counts in
 *      double, summed across ranks (distributed/kmeans.c), so the centroids equal one rank's up to
 *      float reassociation. Empty clusters move to the sample frame farthest from its centroid.
 *      Stops when the inertia improves by less than --tol (relative) or after --iters.
 * Memory: one block of frames, the sample, the centroids and the sums; never all features.
 * Must not: load all features at once, or draw randomness from anything but (seed, utterance, frame). */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/kmeans.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../data/corpus.h"
#include "../data/features_file.h"
#include "../data/kmeans_file.h"
#include "../data/labels.h"
#include "../distributed/comm.h"
#include "../distributed/kmeans.h"
#include "ckpt_model.h"
#include "commands.h"
#include "feature_source.h"

/* The `a` field of the KOE_RNG_KMEANS streams used here. */
enum { KM_RNG_UTT_SAMPLE = 1, KM_RNG_FRAME_KEY = 2, KM_RNG_INIT = 3 };
#define KM_BLOCK_FRAMES 8192
#define KM_SAMPLE_BYTES ((int64_t)384 << 20) /* cap on the init sample's memory */
#define KM_SAMPLE_PER_CLUSTER 64              /* default init sample: this many frames per cluster, */
#define KM_SAMPLE_MIN 10000                   /* and at least this many */

typedef struct {
    const char *corpus, *source, *ckpt, *out, *init, *cache_dir;
    int k, iters, threads;
    double sample, tol;
    uint64_t seed;
    int64_t init_sample;
} KmeansOptions;

static int parse_init(const char *s, void *dst, char *why, size_t n) {
    if (strcmp(s, "k-means++") && strcmp(s, "random")) {
        snprintf(why, n, "expected k-means++ or random");
        return -1;
    }
    *(const char **)dst = s;
    return 0;
}

/* mfcc, fbank, layer:N (feature_source_parse) or file:F.h5 */
static int parse_source(const char *s, void *dst, char *why, size_t n) {
    int layer;
    if (strncmp(s, "file:", 5) && feature_source_parse(s, &layer, why, n)) {
        snprintf(why + strlen(why), n - strlen(why), ", or file:F.h5");
        return -1;
    }
    *(const char **)dst = s;
    return 0;
}

#define O(field) offsetof(KmeansOptions, field)
static const CliFlag kmeans_flags[] = {
    CLI_S("--corpus", O(corpus), NULL, 0, "DIR", "corpus written by `koe prepare` (for mfcc, fbank and layer:N)"),
    CLI_P("--source", O(source), parse_source, NULL, CLI_REQUIRED, "mfcc|fbank|layer:N|file:F.h5",
          "the features clustered: computed from --corpus, or read from a features file\n"
          "(koe features, koe embed --layer N)"),
    CLI_P("--ckpt", O(ckpt), ckpt_path_parse, NULL, 0, "CKPT.h5", "checkpoint whose layer N is clustered (required for layer:N)"),
    CLI_N("--k", CLI_INT, O(k), NULL, 1, LABELS_MAX_CLASSES, CLI_REQUIRED, "K", "clusters"),
    CLI_S("--out", O(out), NULL, CLI_REQUIRED, "KM.h5", "output; written as KM.h5.tmp and renamed"),
    CLI_N("--sample", CLI_DOUBLE, O(sample), "1", 0, 1, CLI_ABOVE_LO, "F", "fraction of utterances used"),
    CLI_N("--seed", CLI_U64, O(seed), "1", 0, 9007199254740992.0, 0, "S",
          "seed of the utterance sample, frame sample and init"),
    CLI_N("--iters", CLI_INT, O(iters), "100", 0, 100000, 0, "N", "maximum Lloyd iterations"),
    CLI_N("--tol", CLI_DOUBLE, O(tol), "1e-4", 0, 1, 0, "X", "stop when the inertia improves by less than X relative"),
    CLI_P("--init", O(init), parse_init, "k-means++", 0, "I", "k-means++ or random"),
    CLI_N("--init-sample", CLI_I64, O(init_sample), NULL, 1, 1e9, 0, "N",
          "frames in the init sample, at least K (default: 64 x K, at least 10000;\n"
          "at most 384 MB of features)"),
    CLI_S("--cache-dir", O(cache_dir), NULL, 0, "DIR",
          "where layer features are cached during the run (default: --out's directory)"),
    CLI_THREADS(O(threads)),
    CLI_END,
};

static int kmeans_command(const void *opts, int n_args, char **args);

const CliCommand cmd_kmeans = {
    .name = "kmeans",
    .summary = "k-means over MFCC, fbank or a checkpoint layer of a corpus, or a features file (HuBERT targets)",
    .about = "Clusters frames: 39-d MFCC of --corpus at 100 Hz (HuBERT iteration 1), 80-d log-mel fbank at\n"
             "100 Hz, hidden state N of a checkpoint's encoder at 50 Hz (layer:6 for iteration 2), or the rows\n"
             "of a features file written by `koe features` or `koe embed --layer N` (file:FEATS.h5; no\n"
             "--corpus). Features are streamed a block at a time; k-means++ runs on a bounded sample of frames,\n"
             "then Lloyd iterations pass over all kept frames. Under mpirun the ranks split the utterances and\n"
             "sum their statistics: the result equals one rank's up to float rounding.\n"
             "Output KM.h5: /centroids float32 [k, dim]; attrs format=koe-kmeans, source, k, dim, frame_rate,\n"
             "corpus, features, ckpt_checksum, seed, sample, iterations, inertia (of the last pass), frames.\n"
             "From a file, source is the file's kind (mfcc, fbank, layer:N) and ckpt_checksum koe embed's, so\n"
             "that `koe label` computes the same features from the corpus.\n",
    .flags = kmeans_flags,
    .opts_size = sizeof(KmeansOptions),
    .run = kmeans_command,
};

/* Where frames come from: a corpus through a feature source (mfcc, fbank, layer:N), or a features file
 * (file:F.h5); and one pass over this rank's utterances, the frames going to a BlockFn in blocks. */
typedef struct {
    int from_file;
    Corpus c;            /* mfcc, fbank, layer:N */
    FeatureSource src;   /* mfcc, fbank, layer:N */
    FeaturesFile ff;     /* file: */
    int D;
    int64_t n_utts;      /* of the corpus or the file */
    const int64_t *utts; /* this rank's utterances */
    int64_t n_mine;
    FILE *cache;         /* layer features: written in pass 0, read after */
    int cached;          /* the cache is complete */
    char cache_path[4400];
    float *block;        /* (KM_BLOCK_FRAMES, D) */
} Stream;

typedef void (*BlockFn)(void *ctx, const float *X, int64_t N, int64_t utt, int64_t frame0);

/* Frames of utterance u. */
static int64_t stream_frames(const Stream *s, int64_t u) {
    return s->from_file ? s->ff.offset[u + 1] - s->ff.offset[u] : feature_source_frames(&s->src, s->c.utt_length[u]);
}

/* Utterance utt from the features file or the cache, a block at a time. */
static void stream_read_utt(Stream *s, int64_t utt, BlockFn fn, void *ctx) {
    const int D = s->D;
    const int64_t T = stream_frames(s, utt);
    KoeError err;
    for (int64_t f0 = 0; f0 < T; f0 += KM_BLOCK_FRAMES) {
        const int64_t nb = T - f0 < KM_BLOCK_FRAMES ? T - f0 : KM_BLOCK_FRAMES;
        if (s->from_file) {
            if (features_file_read(&s->ff, s->ff.offset[utt] + f0, nb, s->block, &err) < 0)
                koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s", err.msg);
        } else if (fread(s->block, sizeof(float) * D, (size_t)nb, s->cache) != (size_t)nb) {
            koe_fatal(KOE_EXIT_INTERNAL, "koe kmeans: the feature cache is short (disk trouble?)");
        }
        fn(ctx, s->block, nb, utt, f0);
    }
}

static void stream_pass(Stream *s, BlockFn fn, void *ctx) {
    const int D = s->D;
    KoeError err;
    if (s->cache && s->cached && fseek(s->cache, 0, SEEK_SET) != 0)
        koe_fatal(KOE_EXIT_INTERNAL, "koe kmeans: cannot rewind the feature cache: %s", strerror(errno));
    Progress *pr = progress_open("kmeans pass", "utt", s->n_mine);
    for (int64_t u = 0; u < s->n_mine; progress_add(pr, 1), u++) {
        const int64_t utt = s->utts[u];
        if (s->from_file || (s->cache && s->cached)) {
            stream_read_utt(s, utt, fn, ctx);
            continue;
        }
        const float *X;
        const int64_t T = feature_source_compute(&s->src, &s->c, utt, &X, &err);
        if (T < 0) koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s", err.msg);
        if (s->cache && fwrite(X, sizeof(float) * D, (size_t)T, s->cache) != (size_t)T)
            koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s: cannot write the feature cache: %s%s (see --cache-dir)",
                      s->cache_path, strerror(errno), koe_fs_note(s->cache_path));
        if (s->cache) koe_output_data_file(s->cache, s->cache_path); /* test hook */
        for (int64_t f0 = 0; f0 < T; f0 += KM_BLOCK_FRAMES)
            fn(ctx, X + f0 * D, T - f0 < KM_BLOCK_FRAMES ? T - f0 : KM_BLOCK_FRAMES, utt, f0);
    }
    progress_close(pr);
    if (s->cache && !s->cached) {
        if (fflush(s->cache) != 0)
            koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s: cannot write the feature cache: %s%s (see --cache-dir)",
                      s->cache_path, strerror(errno), koe_fs_note(s->cache_path));
        s->cached = 1;
    }
}

typedef struct {
    KmeansSample *r;
    uint64_t seed;
    int64_t frames;
} SampleCtx;

static void sample_block(void *ctx, const float *X, int64_t N, int64_t utt, int64_t frame0) {
    SampleCtx *sc = ctx;
    KoeRng g = koe_rng(sc->seed, KM_RNG_FRAME_KEY, (uint64_t)utt, KOE_RNG_KMEANS);
    for (int64_t i = 0; i < N; i++)
        kmeans_sample_offer(sc->r, (int64_t)(koe_rng_number(g.key, (uint64_t)(frame0 + i) + 1) >> 1), X + i * sc->r->D);
    sc->frames += N;
}

typedef struct {
    const float *C, *c_sqn;
    int32_t *assign;
    float *scratch;
    KmeansStats st;
} LloydCtx;

static void lloyd_block(void *ctx, const float *X, int64_t N, int64_t utt, int64_t frame0) {
    (void)utt, (void)frame0;
    LloydCtx *lc = ctx;
    const int K = lc->st.K, D = lc->st.D;
    kmeans_stats_add_inertia(&lc->st, kmeans_assign(X, N, D, lc->C, lc->c_sqn, K, lc->assign, NULL, lc->scratch));
    kmeans_accumulate(X, N, D, lc->assign, lc->st.sums, lc->st.counts);
}

/* The utterances kept by --sample (RNG keyed by seed and utterance), every world-th of them to this
 * rank (malloc'ed, *n_mine of them); *n_kept: how many were kept over all ranks. */
static int64_t *kept_utterances(int64_t n_utts, double sample, uint64_t seed, int64_t *n_kept, int64_t *n_mine) {
    const int rank = comm_rank(), world = comm_size();
    int64_t *utts = koe_malloc((size_t)(n_utts ? n_utts : 1) * sizeof(int64_t));
    *n_kept = *n_mine = 0;
    for (int64_t u = 0; u < n_utts; u++) {
        if (sample < 1) {
            KoeRng g = koe_rng(seed, KM_RNG_UTT_SAMPLE, (uint64_t)u, KOE_RNG_KMEANS);
            if (koe_rng_uniform(&g) >= sample) continue;
        }
        if ((*n_kept)++ % world == rank) utts[(*n_mine)++] = u;
    }
    return utts;
}

/* Lloyd iterations from the centroids C (K, D) over every frame of the stream, until the inertia
 * improves by less than tol (relative) or after iters passes; empty clusters re-seeded from the
 * sample S (Ns, D). Returns the passes made; *inertia: that of the last pass. */
static int lloyd_run(Stream *st, float *C, int K, const float *S, int64_t Ns, int iters, double tol, int64_t frames,
                     double *inertia) {
    const int D = st->D;
    LloydCtx lc = {.C = C};
    float *c_sqn = koe_malloc((size_t)K * sizeof(float));
    lc.c_sqn = c_sqn;
    lc.assign = koe_malloc((size_t)KM_BLOCK_FRAMES * sizeof(int32_t));
    lc.scratch = koe_malloc((size_t)KMEANS_BLOCK * K * sizeof(float));
    kmeans_stats_init(&lc.st, K, D);
    double prev = INFINITY;
    *inertia = NAN;
    int it = 0;
    for (it = 1; it <= iters; it++) {
        double ti = koe_now();
        kmeans_stats_clear(&lc.st);
        kmeans_sqnorms(C, K, D, c_sqn);
        stream_pass(st, lloyd_block, &lc);
        int empty;
        *inertia = kmeans_dist_update(&lc.st, C, S, Ns, &empty);
        if (comm_rank() == 0)
            koe_log("kmeans: iter %d inertia %.6g (%.6g per frame), %d empty cluster%s re-seeded, %.2f s", it, *inertia,
                    *inertia / (double)frames, empty, empty == 1 ? "" : "s", koe_now() - ti);
        if (!empty && prev - *inertia < tol * *inertia) break;
        prev = *inertia;
    }
    free(c_sqn);
    free(lc.assign);
    free(lc.scratch);
    kmeans_stats_free(&lc.st);
    return it > iters ? iters : it;
}

/* --out's directory is writable on every rank; otherwise a message (rank 0) and -1 everywhere. */
static int out_dir_check(const char *out) {
    char *ocopy = koe_strdup(out);
    int64_t no_dir = access(dirname(ocopy), W_OK | X_OK) < 0;
    const int out_errno = errno;
    comm_allreduce_max_i64(&no_dir, 1);
    if (no_dir && comm_rank() == 0)
        fprintf(stderr, "koe kmeans: --out %s: cannot write in %s: %s\n", out, ocopy, strerror(out_errno));
    free(ocopy);
    return no_dir ? -1 : 0;
}

/* This rank's layer-feature cache, .OUT.rankR.feats.tmp in --cache-dir or beside --out. */
static void cache_open(Stream *st, const char *out, const char *cache_dir) {
    char *ocopy = koe_strdup(out);
    snprintf(st->cache_path, sizeof st->cache_path, "%s/.%s.rank%d.feats.tmp", cache_dir ? cache_dir : dirname(ocopy),
             basename(ocopy), comm_rank());
    free(ocopy);
    st->cache = fopen(st->cache_path, "w+b");
    if (!st->cache)
        koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s: cannot create the feature cache: %s%s (see --cache-dir)",
                  st->cache_path, strerror(errno), koe_fs_note(st->cache_path));
    koe_output_begin(st->cache_path); /* a fatal error removes it */
}

/* The input of o (a corpus and its feature source, or a features file) into st, and the provenance
 * of the result into km. Returns 0, or -1 after rank 0 printed why (every rank fails alike: each
 * opens the same files). */
static int stream_open(Stream *st, const KmeansOptions *o, KmeansFile *km) {
    KoeError err;
    memset(st, 0, sizeof *st);
    const int rank = comm_rank();
    st->from_file = !strncmp(o->source, "file:", 5);
    if (st->from_file && (o->corpus || o->ckpt)) {
        if (rank == 0)
            fprintf(stderr, "koe kmeans: --source %s reads the features from the file: drop --%s\n", o->source,
                    o->corpus ? "corpus" : "ckpt");
        return -1;
    }
    if (!st->from_file && !o->corpus) {
        if (rank == 0) fprintf(stderr, "koe kmeans: --source %s needs --corpus DIR\n", o->source);
        return -1;
    }
    if (st->from_file) {
        if (features_file_open(&st->ff, o->source + 5, &err) < 0) {
            if (rank == 0) fprintf(stderr, "koe kmeans: %s\n", err.msg);
            return -1;
        }
        int layer;
        char why[128];
        /* koe label recomputes the features (feature_source.h): a kind it knows, and the checkpoint's
         * checksum exactly when the kind is a layer */
        const char *unlabelable = feature_source_parse(st->ff.kind, &layer, why, sizeof why) ? ""
                                  : (layer >= 0) == (st->ff.ckpt_checksum[0] != 0)         ? NULL
                                  : layer >= 0                                            ? " without a ckpt_checksum"
                                                                                          : " with a ckpt_checksum";
        if (rank == 0 && unlabelable)
            koe_warn("kmeans: %s: kind '%s'%s: koe label cannot compute these features from a corpus, so it will "
                     "refuse %s (koe features and koe embed --layer N write files it can)",
                     st->ff.path, st->ff.kind, unlabelable, o->out);
        st->D = st->ff.dim;
        st->n_utts = st->ff.n_utts;
        km->frame_rate = st->ff.frame_rate;
        snprintf(km->source, sizeof km->source, "%s", st->ff.kind);
        snprintf(km->ckpt_checksum, sizeof km->ckpt_checksum, "%s", st->ff.ckpt_checksum);
        km->features = st->ff.path;
        km->corpus = "";
    } else {
        if (corpus_open(&st->c, o->corpus, &err) < 0) {
            if (rank == 0) fprintf(stderr, "koe kmeans: %s\n", err.msg);
            return -1;
        }
        if (feature_source_open(&st->src, o->source, o->ckpt, &st->c, &err) < 0) {
            if (rank == 0) fprintf(stderr, "koe kmeans: %s\n", err.msg);
            corpus_close(&st->c);
            return -1;
        }
        st->D = st->src.dim;
        st->n_utts = st->c.n_utts;
        km->frame_rate = st->src.frame_rate;
        snprintf(km->source, sizeof km->source, "%s", st->src.source);
        snprintf(km->ckpt_checksum, sizeof km->ckpt_checksum, "%s", st->src.ckpt_checksum);
        km->features = "";
        km->corpus = o->corpus;
        if (st->src.m) cache_open(st, o->out, o->cache_dir);
    }
    st->block = koe_malloc((size_t)KM_BLOCK_FRAMES * st->D * sizeof(float));
    return 0;
}

static void stream_close(Stream *st) {
    if (st->cache) {
        fclose(st->cache);
        koe_output_end(st->cache_path);
        remove(st->cache_path);
    }
    free(st->block);
    if (st->from_file) {
        features_file_close(&st->ff);
    } else {
        feature_source_close(&st->src);
        corpus_close(&st->c);
    }
}

/* Rows of the init sample: --init-sample, or KM_SAMPLE_PER_CLUSTER per cluster and at least
 * KM_SAMPLE_MIN, capped at KM_SAMPLE_BYTES of features; -1 (rank 0 said why) when below K. */
static int64_t init_sample_rows(int64_t asked, int K, int D) {
    int64_t rows = asked ? asked : (int64_t)KM_SAMPLE_PER_CLUSTER * K;
    if (!asked && rows < KM_SAMPLE_MIN) rows = KM_SAMPLE_MIN;
    const int64_t cap = KM_SAMPLE_BYTES / ((int64_t)D * (int64_t)sizeof(float));
    if (rows > cap) rows = cap;
    if (rows >= K) return rows;
    if (comm_rank() == 0)
        fprintf(stderr, "koe kmeans: the init sample would hold %lld frames (--init-sample %lld, at most %lld MB of "
                        "dim-%d features) but --k is %d: raise --init-sample or lower --k\n", (long long)rows,
                (long long)asked, (long long)(KM_SAMPLE_BYTES >> 20), D, K);
    return -1;
}

/* Pass 0: the global init sample of at most max_rows frames into *S (malloc'ed, rows returned);
 * *frames: the frames of every rank's pass. */
static int64_t init_sample(Stream *st, int64_t max_rows, uint64_t seed, int64_t *frames, float **S) {
    const int D = st->D;
    KmeansSample res;
    kmeans_sample_init(&res, max_rows, D);
    SampleCtx sc = {.r = &res, .seed = seed};
    stream_pass(st, sample_block, &sc);
    *frames = sc.frames;
    comm_allreduce_sum_i64(frames, 1);
    const int64_t Ns = kmeans_sample_merge(&res, S);
    kmeans_sample_free(&res);
    return Ns;
}

/* Rank 0 writes KM.h5 and logs the peak RSS of the largest rank; the exit code, agreed by every
 * rank. Collective. */
static int result_write(const char *out, const KmeansFile *km, double t0) {
    int64_t rc = KOE_EXIT_OK;
    KoeError err;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t rss_kb = ru.ru_maxrss; /* Linux: kilobytes */
    comm_allreduce_max_i64(&rss_kb, 1);
    if (comm_rank() == 0) {
        if (kmeans_file_write(out, km, &err) < 0) {
            fprintf(stderr, "koe kmeans: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        } else {
            koe_log("kmeans: wrote %s (k=%d, dim %d, %d iterations, inertia %.6g, %.1f s, peak RSS %lld MB per rank)",
                    out, km->k, km->dim, km->iterations, km->inertia, koe_now() - t0, (long long)(rss_kb / 1024));
        }
    }
    comm_allreduce_max_i64(&rc, 1);
    return (int)rc;
}

static int kmeans_command(const void *opts, int n_args, char **args) {
    (void)n_args, (void)args;
    const KmeansOptions *o = opts;
    const int K = o->k, rank = comm_rank();
    cli_threads(o->threads, 0);
    if (out_dir_check(o->out) < 0) return KOE_EXIT_USAGE; /* first: a run should not end with nowhere to write */
    KmeansFile km = {.k = K, .seed = o->seed, .sample = o->sample};
    Stream st;
    if (stream_open(&st, o, &km) < 0) return KOE_EXIT_USAGE;
    const int D = km.dim = st.D;
    const double t0 = koe_now();

    /* 1. utterances: the kept ones, every world-th to this rank */
    int64_t n_kept;
    int64_t *utts = kept_utterances(st.n_utts, o->sample, o->seed, &n_kept, &st.n_mine);
    st.utts = utts;

    /* 2. pass 0: the init sample (and the layer cache) */
    float *S = NULL, *C = NULL;
    int rc = KOE_EXIT_USAGE;
    const int64_t max_rows = init_sample_rows(o->init_sample, K, D);
    if (max_rows < 0) goto done;
    const int64_t Ns = init_sample(&st, max_rows, o->seed, &km.frames, &S);
    if (Ns < K) {
        if (rank == 0)
            fprintf(stderr, "koe kmeans: only %lld frames in %lld utterances (--sample %g) for --k %d; use more data or "
                            "a smaller --k\n", (long long)km.frames, (long long)n_kept, o->sample, K);
        goto done;
    }
    if (rank == 0)
        koe_log("kmeans: %s, %lld of %lld utterances, %lld frames of dim %d, k=%d, %d ranks; init sample %lld frames "
                "(%.1f s)", o->source, (long long)n_kept, (long long)st.n_utts, (long long)km.frames, D, K, comm_size(),
                (long long)Ns, koe_now() - t0);

    /* 3. init on the sample (every rank computes the same; rank 0's is broadcast to be sure) */
    C = km.centroids = koe_malloc((size_t)K * D * sizeof(float));
    KoeRng g = koe_rng(o->seed, KM_RNG_INIT, 0, KOE_RNG_KMEANS);
    kmeans_dist_init(C, S, Ns, D, K, !strcmp(o->init, "random"), &g);

    /* 4. Lloyd */
    km.iterations = lloyd_run(&st, C, K, S, Ns, o->iters, o->tol, km.frames, &km.inertia);
    rc = result_write(o->out, &km, t0);
done:
    free(C);
    free(S);
    free(utts);
    stream_close(&st);
    return rc;
}

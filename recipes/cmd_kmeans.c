/* cmd_kmeans.c — `koe kmeans --corpus DIR --source mfcc|layer:N [--ckpt CKPT] --k K --out KM.h5`:
 * HuBERT's k-means over features streamed from the corpus.
 *   1. Utterances: each is kept with probability --sample (RNG keyed by seed and utterance); rank r
 *      takes every world-th kept utterance.
 *   2. Pass 0 reads every kept utterance once and keeps a bounded sample of frames: the
 *      --init-sample frames with the smallest hash keys (seed, utterance, frame), so the sample is
 *      the same for any rank count. Layer features are also written to a per-rank cache file
 *      (raw float32, removed at the end) so the model runs once; MFCC is recomputed each pass.
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
#include <unistd.h>

#include "../core/common.h"
#include "../core/kmeans.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../data/corpus.h"
#include "../data/kmeans_file.h"
#include "../data/labels.h"
#include "../distributed/comm.h"
#include "../distributed/kmeans.h"
#include "commands.h"
#include "feature_source.h"

/* The `a` field of the KOE_RNG_KMEANS streams used here. */
enum { KM_RNG_UTT_SAMPLE = 1, KM_RNG_FRAME_KEY = 2, KM_RNG_INIT = 3 };
#define KM_BLOCK_FRAMES 8192
#define KM_SAMPLE_BYTES ((int64_t)384 << 20) /* cap on the init sample's memory */

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

#define O(field) offsetof(KmeansOptions, field)
static const CliFlag kmeans_flags[] = {
    CLI_S("--corpus", O(corpus), NULL, CLI_REQUIRED, "DIR", "corpus written by `koe prepare`"),
    CLI_S("--source", O(source), NULL, CLI_REQUIRED, "mfcc|layer:N", "the features clustered"),
    CLI_S("--ckpt", O(ckpt), NULL, 0, "CKPT.h5", "checkpoint whose layer N is clustered (required for layer:N)"),
    CLI_N("--k", CLI_INT, O(k), NULL, 1, LABELS_MAX_CLASSES, CLI_REQUIRED, "K", "clusters"),
    CLI_S("--out", O(out), NULL, CLI_REQUIRED, "KM.h5", "output; written as KM.h5.tmp and renamed"),
    CLI_N("--sample", CLI_DOUBLE, O(sample), "1", 0, 1, CLI_ABOVE_LO, "F", "fraction of utterances used"),
    CLI_N("--seed", CLI_U64, O(seed), "1", 0, 9007199254740992.0, 0, "S",
          "seed of the utterance sample, frame sample and init"),
    CLI_N("--iters", CLI_INT, O(iters), "100", 0, 100000, 0, "N", "maximum Lloyd iterations"),
    CLI_N("--tol", CLI_DOUBLE, O(tol), "1e-4", 0, 1, 0, "X", "stop when the inertia improves by less than X relative"),
    CLI_P("--init", O(init), parse_init, "k-means++", 0, "I", "k-means++ or random"),
    CLI_N("--init-sample", CLI_I64, O(init_sample), "100000", 1, 1e9, 0, "N",
          "frames in the init sample (at most 384 MB of features)"),
    CLI_S("--cache-dir", O(cache_dir), NULL, 0, "DIR",
          "where layer features are cached during the run (default: --out's directory)"),
    CLI_THREADS(O(threads)),
    CLI_END,
};

static int kmeans_command(const void *opts, int n_args, char **args);

const CliCommand cmd_kmeans = {
    .name = "kmeans",
    .summary = "k-means over MFCC or a checkpoint layer of a corpus (HuBERT targets)",
    .about = "Clusters frames of the corpus: 39-d MFCC at 100 Hz (HuBERT iteration 1), or hidden state N of a\n"
             "checkpoint's encoder at 50 Hz (layer:6 for iteration 2). Features are streamed utterance by\n"
             "utterance; k-means++ runs on a bounded sample of frames, then Lloyd iterations pass over all\n"
             "kept frames. Under mpirun the ranks split the utterances and sum their statistics: the result\n"
             "equals one rank's up to float rounding.\n"
             "Output KM.h5: /centroids float32 [k, dim]; attrs format=koe-kmeans, source, k, dim, frame_rate,\n"
             "corpus, ckpt_checksum, seed, sample, iterations, inertia (of the last pass), frames.\n",
    .flags = kmeans_flags,
    .opts_size = sizeof(KmeansOptions),
    .run = kmeans_command,
};

/* One pass over this rank's utterances: frames go through fn in blocks. */
typedef struct {
    FeatureSource *src;
    Corpus *c;
    const int64_t *utts; /* this rank's utterances */
    int64_t n_utts;
    FILE *cache;         /* layer features: written in pass 0, read after */
    const char *cache_path;
    int cached;          /* the cache is complete */
    float *block;        /* (KM_BLOCK_FRAMES, D) */
} Stream;

typedef void (*BlockFn)(void *ctx, const float *X, int64_t N, int64_t utt, int64_t frame0);

static void stream_pass(Stream *s, BlockFn fn, void *ctx) {
    const int D = s->src->dim;
    KoeError err;
    if (s->cache && s->cached && fseek(s->cache, 0, SEEK_SET) != 0)
        koe_fatal(KOE_EXIT_INTERNAL, "koe kmeans: cannot rewind the feature cache: %s", strerror(errno));
    Progress *pr = progress_open("kmeans pass", "utt", s->n_utts);
    for (int64_t u = 0; u < s->n_utts; progress_add(pr, 1), u++) {
        const int64_t utt = s->utts[u];
        const float *X;
        int64_t T;
        if (s->cache && s->cached) {
            T = feature_source_frames(s->src, s->c->utt_length[utt]);
            for (int64_t f0 = 0; f0 < T; f0 += KM_BLOCK_FRAMES) {
                int64_t nb = T - f0 < KM_BLOCK_FRAMES ? T - f0 : KM_BLOCK_FRAMES;
                if (fread(s->block, sizeof(float) * D, (size_t)nb, s->cache) != (size_t)nb)
                    koe_fatal(KOE_EXIT_INTERNAL, "koe kmeans: the feature cache is short (disk trouble?)");
                fn(ctx, s->block, nb, utt, f0);
            }
            continue;
        }
        T = feature_source_compute(s->src, s->c, utt, &X, &err);
        if (T < 0) koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s", err.msg);
        if (s->cache && fwrite(X, sizeof(float) * D, (size_t)T, s->cache) != (size_t)T)
            koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s: cannot write the feature cache: %s%s (see --cache-dir)",
                      s->cache_path, strerror(errno), koe_fs_note(s->cache_path));
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
static int64_t *kept_utterances(const Corpus *c, double sample, uint64_t seed, int64_t *n_kept, int64_t *n_mine) {
    const int rank = comm_rank(), world = comm_size();
    int64_t *utts = koe_malloc((size_t)(c->n_utts ? c->n_utts : 1) * sizeof(int64_t));
    *n_kept = *n_mine = 0;
    for (int64_t u = 0; u < c->n_utts; u++) {
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
    const int D = st->src->dim;
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

/* This rank's layer-feature cache, .OUT.rankR.feats.tmp in --cache-dir or beside --out (path: n bytes). */
static FILE *cache_open(const char *out, const char *cache_dir, char *path, size_t n) {
    char *ocopy = koe_strdup(out);
    snprintf(path, n, "%s/.%s.rank%d.feats.tmp", cache_dir ? cache_dir : dirname(ocopy), basename(ocopy), comm_rank());
    free(ocopy);
    FILE *f = fopen(path, "w+b");
    if (!f)
        koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s: cannot create the feature cache: %s%s (see --cache-dir)", path,
                  strerror(errno), koe_fs_note(path));
    koe_output_begin(path); /* a fatal error removes it */
    return f;
}

/* Pass 0: the global init sample of at most max_rows frames (capped at KM_SAMPLE_BYTES) into *S
 * (malloc'ed, rows returned); *frames: the frames of every rank's pass. */
static int64_t init_sample(Stream *st, int64_t max_rows, uint64_t seed, int64_t *frames, float **S) {
    const int D = st->src->dim;
    KmeansSample res;
    if (max_rows > KM_SAMPLE_BYTES / ((int64_t)D * 4)) max_rows = KM_SAMPLE_BYTES / ((int64_t)D * 4);
    kmeans_sample_init(&res, max_rows, D);
    SampleCtx sc = {.r = &res, .seed = seed};
    stream_pass(st, sample_block, &sc);
    *frames = sc.frames;
    comm_allreduce_sum_i64(frames, 1);
    const int64_t Ns = kmeans_sample_merge(&res, S);
    kmeans_sample_free(&res);
    return Ns;
}

/* Rank 0 writes KM.h5; the exit code, agreed by every rank. */
static int result_write(const char *out, const KmeansFile *km, double t0) {
    int64_t rc = KOE_EXIT_OK;
    KoeError err;
    if (comm_rank() == 0) {
        if (kmeans_file_write(out, km, &err) < 0) {
            fprintf(stderr, "koe kmeans: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        } else {
            koe_log("kmeans: wrote %s (k=%d, dim %d, %d iterations, inertia %.6g, %.1f s)", out, km->k, km->dim,
                    km->iterations, km->inertia, koe_now() - t0);
        }
    }
    comm_allreduce_max_i64(&rc, 1);
    return (int)rc;
}

static int kmeans_command(const void *opts, int n_args, char **args) {
    (void)n_args, (void)args;
    const KmeansOptions *o = opts;
    const char *corpus_dir = o->corpus, *source = o->source, *ckpt = o->ckpt, *out = o->out, *init = o->init,
               *cache_dir = o->cache_dir;
    const double sample = o->sample, tol = o->tol;
    const int K = o->k, iters = o->iters;
    const uint64_t seed = o->seed;
    const int rank = comm_rank(), world = comm_size();
    cli_threads(o->threads, 0);

    if (out_dir_check(out) < 0) return KOE_EXIT_USAGE; /* first: a run should not end with nowhere to write */
    Corpus c;
    KoeError err;
    if (corpus_open(&c, corpus_dir, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe kmeans: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    FeatureSource src;
    if (feature_source_open(&src, source, ckpt, &c, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe kmeans: %s\n", err.msg);
        corpus_close(&c);
        return KOE_EXIT_USAGE;
    }
    const int D = src.dim;
    double t0 = koe_now();

    /* 1. utterances: the kept ones, every world-th to this rank */
    int64_t n_kept, n_mine;
    int64_t *utts = kept_utterances(&c, sample, seed, &n_kept, &n_mine);

    /* 2. pass 0: the init sample (and the layer cache) */
    Stream st = {.src = &src, .c = &c, .utts = utts, .n_utts = n_mine};
    st.block = koe_malloc((size_t)KM_BLOCK_FRAMES * D * sizeof(float));
    char cache_path[4400] = "";
    if (src.m) st.cache = cache_open(out, cache_dir, cache_path, sizeof cache_path);
    st.cache_path = cache_path;
    int64_t frames;
    float *S = NULL;
    const int64_t Ns = init_sample(&st, o->init_sample, seed, &frames, &S);
    int rc = KOE_EXIT_OK;
    if (Ns < K) {
        if (rank == 0)
            fprintf(stderr, "koe kmeans: only %lld frames in %lld utterances (--sample %g) for --k %d; use more data or "
                            "a smaller --k\n", (long long)frames, (long long)n_kept, sample, K);
        rc = KOE_EXIT_USAGE;
        goto done;
    }
    if (rank == 0)
        koe_log("kmeans: %s, %lld of %lld utterances, %lld frames of dim %d, k=%d, %d ranks; init sample %lld frames "
                "(%.1f s)", source, (long long)n_kept, (long long)c.n_utts, (long long)frames, D, K, world,
                (long long)Ns, koe_now() - t0);

    /* 3. init on the sample (every rank computes the same; rank 0's is broadcast to be sure) */
    float *C = koe_malloc((size_t)K * D * sizeof(float));
    KoeRng g = koe_rng(seed, KM_RNG_INIT, 0, KOE_RNG_KMEANS);
    kmeans_dist_init(C, S, Ns, D, K, !strcmp(init, "random"), &g);

    /* 4. Lloyd */
    double inertia;
    const int it = lloyd_run(&st, C, K, S, Ns, iters, tol, frames, &inertia);
    KmeansFile km = {.k = K, .dim = D, .centroids = C, .frame_rate = src.frame_rate, .corpus = corpus_dir,
                     .seed = seed, .sample = sample, .iterations = it, .inertia = inertia, .frames = frames};
    snprintf(km.source, sizeof km.source, "%s", src.source);
    snprintf(km.ckpt_checksum, sizeof km.ckpt_checksum, "%s", src.ckpt_checksum);
    rc = result_write(out, &km, t0);
    free(C);
done:
    free(S);
    if (st.cache) {
        fclose(st.cache);
        koe_output_end(cache_path);
        remove(cache_path);
    }
    free(st.block);
    free(utts);
    feature_source_close(&src);
    corpus_close(&c);
    return rc;
}

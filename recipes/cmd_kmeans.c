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
 *      double, summed across ranks (allreduce), so the centroids equal one rank's up to float
 *      reassociation. Empty clusters move to the sample frame farthest from its centroid.
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
#include "../core/rng.h"
#include "../data/corpus.h"
#include "../data/labels.h"
#include "../distributed/comm.h"
#include "commands.h"
#include "kmeans_io.h"

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

/* Bottom-M sample by 63-bit key: a max-heap of slots. */
typedef struct {
    int64_t M, n;
    int D;
    int64_t *key;  /* (M) heap of keys */
    int64_t *slot; /* (M) heap position -> row of data */
    float *data;   /* (M, D) */
} Reservoir;

static void reservoir_sift_down(Reservoir *r, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, big = i;
        if (l < r->n && r->key[l] > r->key[big]) big = l;
        if (l + 1 < r->n && r->key[l + 1] > r->key[big]) big = l + 1;
        if (big == i) return;
        int64_t tk = r->key[i], ts = r->slot[i];
        r->key[i] = r->key[big], r->slot[i] = r->slot[big];
        r->key[big] = tk, r->slot[big] = ts;
        i = big;
    }
}

static void reservoir_offer(Reservoir *r, int64_t key, const float *x) {
    if (r->n < r->M) {
        int64_t i = r->n++;
        r->slot[i] = i;
        r->key[i] = key;
        memcpy(r->data + i * r->D, x, (size_t)r->D * sizeof(float));
        while (i > 0 && r->key[(i - 1) / 2] < r->key[i]) { /* sift up */
            int64_t p = (i - 1) / 2, tk = r->key[i], ts = r->slot[i];
            r->key[i] = r->key[p], r->slot[i] = r->slot[p];
            r->key[p] = tk, r->slot[p] = ts;
            i = p;
        }
    } else if (r->M > 0 && key < r->key[0]) {
        r->key[0] = key;
        memcpy(r->data + r->slot[0] * r->D, x, (size_t)r->D * sizeof(float));
        reservoir_sift_down(r, 0);
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The global bottom-M sample, identical on every rank and sorted by key. Returns its row count;
 * *out (malloc'ed) holds (rows, D). */
static int64_t reservoir_merge(const Reservoir *r, float **out) {
    const int world = comm_size(), rank = comm_rank(), D = r->D;
    const int64_t M = r->M;
    int64_t *mine = koe_malloc((size_t)(M ? M : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < M; i++) mine[i] = i < r->n ? r->key[i] : INT64_MAX;
    int64_t *all = koe_malloc((size_t)world * (M ? M : 1) * sizeof(int64_t));
    comm_allgather_i64(mine, (int)M, all);
    qsort(all, (size_t)world * M, sizeof(int64_t), cmp_i64);
    const int64_t thr = all[M - 1]; /* the M-th smallest key over all ranks */
    free(all);
    /* each rank sends (key, row) for its keys <= thr; rank 0 sorts and keeps M */
    const size_t rec = sizeof(int64_t) + (size_t)D * sizeof(float);
    int64_t cnt = 0;
    for (int64_t i = 0; i < r->n; i++) cnt += r->key[i] <= thr;
    char *buf = koe_malloc((size_t)(cnt ? cnt : 1) * rec), *p = buf;
    for (int64_t i = 0; i < r->n; i++) {
        if (r->key[i] > thr) continue;
        memcpy(p, &r->key[i], sizeof(int64_t));
        memcpy(p + sizeof(int64_t), r->data + r->slot[i] * D, (size_t)D * sizeof(float));
        p += rec;
    }
    int64_t total = 0;
    char *got = comm_gather_bytes(buf, cnt * (int64_t)rec, 0, &total);
    free(buf);
    free(mine);
    int64_t rows = 0;
    float *data = NULL;
    if (rank == 0) {
        int64_t n = total / (int64_t)rec;
        int64_t *order = koe_malloc((size_t)(n ? n : 1) * 2 * sizeof(int64_t)); /* (key, index) pairs */
        for (int64_t i = 0; i < n; i++) {
            memcpy(&order[2 * i], got + i * rec, sizeof(int64_t));
            order[2 * i + 1] = i;
        }
        qsort(order, (size_t)n, 2 * sizeof(int64_t), cmp_i64);
        rows = n < M ? n : M;
        data = koe_malloc((size_t)(rows ? rows : 1) * D * sizeof(float));
        for (int64_t i = 0; i < rows; i++)
            memcpy(data + i * D, got + order[2 * i + 1] * rec + sizeof(int64_t), (size_t)D * sizeof(float));
        free(order);
        free(got);
    }
    comm_bcast(&rows, sizeof rows, 0);
    if (rank != 0) data = koe_malloc((size_t)(rows ? rows : 1) * D * sizeof(float));
    comm_bcast(data, (size_t)rows * D * sizeof(float), 0);
    *out = data;
    return rows;
}

/* One pass over this rank's utterances: frames go through fn in blocks. */
typedef struct {
    KmSource *src;
    Corpus *c;
    const int64_t *utts; /* this rank's utterances */
    int64_t n_utts;
    FILE *cache;         /* layer features: written in pass 0, read after */
    int cached;          /* the cache is complete */
    float *block;        /* (KM_BLOCK_FRAMES, D) */
} Stream;

typedef void (*BlockFn)(void *ctx, const float *X, int64_t N, int64_t utt, int64_t frame0);

static void stream_pass(Stream *s, BlockFn fn, void *ctx) {
    const int D = s->src->dim;
    KoeError err;
    if (s->cache && s->cached && fseek(s->cache, 0, SEEK_SET) != 0)
        koe_fatal(KOE_EXIT_INTERNAL, "koe kmeans: cannot rewind the feature cache: %s", strerror(errno));
    for (int64_t u = 0; u < s->n_utts; u++) {
        const int64_t utt = s->utts[u];
        const float *X;
        int64_t T;
        if (s->cache && s->cached) {
            T = km_source_frames(s->src, s->c->utt_length[utt]);
            for (int64_t f0 = 0; f0 < T; f0 += KM_BLOCK_FRAMES) {
                int64_t nb = T - f0 < KM_BLOCK_FRAMES ? T - f0 : KM_BLOCK_FRAMES;
                if (fread(s->block, sizeof(float) * D, (size_t)nb, s->cache) != (size_t)nb)
                    koe_fatal(KOE_EXIT_INTERNAL, "koe kmeans: the feature cache is short (disk trouble?)");
                fn(ctx, s->block, nb, utt, f0);
            }
            continue;
        }
        T = km_source_compute(s->src, s->c, utt, &X, &err);
        if (T < 0) koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s", err.msg);
        if (s->cache && fwrite(X, sizeof(float) * D, (size_t)T, s->cache) != (size_t)T)
            koe_fatal(KOE_EXIT_USAGE, "koe kmeans: cannot write the feature cache (disk full? see --cache-dir): %s",
                      strerror(errno));
        for (int64_t f0 = 0; f0 < T; f0 += KM_BLOCK_FRAMES)
            fn(ctx, X + f0 * D, T - f0 < KM_BLOCK_FRAMES ? T - f0 : KM_BLOCK_FRAMES, utt, f0);
    }
    if (s->cache && !s->cached) {
        if (fflush(s->cache) != 0)
            koe_fatal(KOE_EXIT_USAGE, "koe kmeans: cannot write the feature cache: %s", strerror(errno));
        s->cached = 1;
    }
}

typedef struct {
    Reservoir *r;
    uint64_t seed;
    int64_t frames;
} SampleCtx;

static void sample_block(void *ctx, const float *X, int64_t N, int64_t utt, int64_t frame0) {
    SampleCtx *sc = ctx;
    KoeRng g = koe_rng(sc->seed, KM_RNG_FRAME_KEY, (uint64_t)utt, KOE_RNG_KMEANS);
    for (int64_t i = 0; i < N; i++)
        reservoir_offer(sc->r, (int64_t)(koe_rng_number(g.key, (uint64_t)(frame0 + i) + 1) >> 1), X + i * sc->r->D);
    sc->frames += N;
}

typedef struct {
    const float *C, *c_sqn;
    int K, D;
    int32_t *assign;
    float *scratch;
    double *sums, *counts, inertia;
} LloydCtx;

static void lloyd_block(void *ctx, const float *X, int64_t N, int64_t utt, int64_t frame0) {
    (void)utt, (void)frame0;
    LloydCtx *lc = ctx;
    lc->inertia += kmeans_assign(X, N, lc->D, lc->C, lc->c_sqn, lc->K, lc->assign, NULL, lc->scratch);
    kmeans_accumulate(X, N, lc->D, lc->assign, lc->sums, lc->counts);
}

/* The output directory first: a run should not end with nowhere to write. */
static int check_out_dir(const char *out, int rank) {
    char *ocopy = koe_strdup(out);
    int64_t no_dir = access(dirname(ocopy), W_OK | X_OK) < 0;
    const int out_errno = errno;
    comm_allreduce_max_i64(&no_dir, 1);
    if (no_dir && rank == 0)
        fprintf(stderr, "koe kmeans: --out %s: cannot write in %s: %s\n", out, ocopy, strerror(out_errno));
    free(ocopy);
    return no_dir ? -1 : 0;
}

/* 1. utterances: each kept with probability sample, every world-th kept one to this rank (into utts,
 * c->n_utts long). Returns this rank's count; *n_kept gets the count over all ranks. */
static int64_t keep_utterances(const Corpus *c, double sample, uint64_t seed, int64_t *utts, int64_t *n_kept) {
    const int rank = comm_rank(), world = comm_size();
    int64_t n_mine = 0;
    *n_kept = 0;
    for (int64_t u = 0; u < c->n_utts; u++) {
        if (sample < 1) {
            KoeRng g = koe_rng(seed, KM_RNG_UTT_SAMPLE, (uint64_t)u, KOE_RNG_KMEANS);
            if (koe_rng_uniform(&g) >= sample) continue;
        }
        if ((*n_kept)++ % world == rank) utts[n_mine++] = u;
    }
    return n_mine;
}

/* The per-rank cache of layer features, in --cache-dir or beside --out. */
static FILE *open_cache(const KmeansOptions *o, char *path, size_t n) {
    char *ocopy = koe_strdup(o->out);
    snprintf(path, n, "%s/.%s.rank%d.feats.tmp", o->cache_dir ? o->cache_dir : dirname(ocopy), basename(ocopy),
             comm_rank());
    free(ocopy);
    FILE *f = fopen(path, "w+b");
    if (!f)
        koe_fatal(KOE_EXIT_USAGE, "koe kmeans: %s: cannot create the feature cache: %s (see --cache-dir)", path,
                  strerror(errno));
    return f;
}

/* 2. pass 0: the init sample, merged over the ranks (and the layer cache written). Returns its rows
 * in *S (malloc'ed, (rows, D)); *frames gets the frame count over all ranks. */
static int64_t draw_init_sample(Stream *st, int64_t init_sample, uint64_t seed, float **S, int64_t *frames) {
    const int D = st->src->dim;
    Reservoir res = {.D = D};
    res.M = init_sample;
    if (res.M > KM_SAMPLE_BYTES / ((int64_t)D * 4)) res.M = KM_SAMPLE_BYTES / ((int64_t)D * 4);
    res.key = koe_malloc((size_t)res.M * sizeof(int64_t));
    res.slot = koe_malloc((size_t)res.M * sizeof(int64_t));
    res.data = koe_malloc((size_t)res.M * D * sizeof(float));
    SampleCtx sc = {.r = &res, .seed = seed};
    stream_pass(st, sample_block, &sc);
    *frames = sc.frames;
    comm_allreduce_sum_i64(frames, 1);
    const int64_t Ns = reservoir_merge(&res, S);
    free(res.key);
    free(res.slot);
    free(res.data);
    return Ns;
}

/* 3. init on the sample (every rank computes the same; rank 0's is broadcast to be sure) */
static void init_centroids(const char *init, const float *S, int64_t Ns, int D, int K, uint64_t seed, float *C) {
    KoeRng g = koe_rng(seed, KM_RNG_INIT, 0, KOE_RNG_KMEANS);
    if (!strcmp(init, "random")) {
        int64_t *perm = koe_malloc((size_t)Ns * sizeof(int64_t));
        for (int64_t i = 0; i < Ns; i++) perm[i] = i;
        koe_rng_shuffle_i64(&g, perm, Ns);
        for (int k = 0; k < K; k++) memcpy(C + (int64_t)k * D, S + perm[k] * D, (size_t)D * sizeof(float));
        free(perm);
    } else {
        kmeans_plusplus(S, Ns, D, K, &g, C);
    }
    comm_bcast(C, (size_t)K * D * sizeof(float), 0);
}

/* 4. Lloyd iterations on C (K, D) until the inertia improves by less than tol or after iters.
 * Returns the iterations run; *inertia gets the last pass's. */
static int lloyd(Stream *st, float *C, int K, const float *S, int64_t Ns, int iters, double tol, int64_t frames,
                 double *inertia) {
    const int D = st->src->dim;
    LloydCtx lc = {.C = C, .K = K, .D = D};
    float *c_sqn = koe_malloc((size_t)K * sizeof(float));
    lc.c_sqn = c_sqn;
    lc.assign = koe_malloc((size_t)KM_BLOCK_FRAMES * sizeof(int32_t));
    lc.scratch = koe_malloc((size_t)KMEANS_BLOCK * K * sizeof(float));
    const int64_t n_stat = (int64_t)K * D + K + 1;
    KOE_ASSERT(n_stat < INT32_MAX);
    double *stat = koe_malloc((size_t)n_stat * sizeof(double));
    lc.sums = stat;
    lc.counts = stat + (int64_t)K * D;
    double prev = INFINITY;
    *inertia = NAN;
    int it = 0;
    for (it = 1; it <= iters; it++) {
        double ti = koe_now();
        memset(stat, 0, (size_t)n_stat * sizeof(double));
        lc.inertia = 0;
        kmeans_sqnorms(C, K, D, c_sqn);
        stream_pass(st, lloyd_block, &lc);
        stat[n_stat - 1] = lc.inertia;
        comm_allreduce_sum_f64(stat, (int)n_stat);
        *inertia = stat[n_stat - 1];
        int empty = kmeans_update(C, lc.sums, lc.counts, K, D);
        if (empty) kmeans_reseed_empty(C, lc.counts, K, D, S, Ns);
        if (comm_rank() == 0)
            koe_log("kmeans: iter %d inertia %.6g (%.6g per frame), %d empty cluster%s re-seeded, %.2f s", it, *inertia,
                    *inertia / (double)frames, empty, empty == 1 ? "" : "s", koe_now() - ti);
        if (!empty && prev - *inertia < tol * *inertia) break;
        prev = *inertia;
    }
    free(c_sqn);
    free(lc.assign);
    free(lc.scratch);
    free(stat);
    return it > iters ? iters : it;
}

static int kmeans_command(const void *opts, int n_args, char **args) {
    (void)n_args, (void)args;
    const KmeansOptions *o = opts;
    const int K = o->k, rank = comm_rank(), world = comm_size();
    cli_threads(o->threads, 0);
    if (check_out_dir(o->out, rank) < 0) return KOE_EXIT_USAGE;
    Corpus c;
    KoeError err;
    if (corpus_open(&c, o->corpus, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe kmeans: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    KmSource src;
    if (km_source_open(&src, o->source, o->ckpt, &c, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe kmeans: %s\n", err.msg);
        corpus_close(&c);
        return KOE_EXIT_USAGE;
    }
    const int D = src.dim;
    double t0 = koe_now();
    int64_t *utts = koe_malloc((size_t)(c.n_utts ? c.n_utts : 1) * sizeof(int64_t)), n_kept;
    Stream st = {.src = &src, .c = &c, .utts = utts, .n_utts = keep_utterances(&c, o->sample, o->seed, utts, &n_kept)};
    st.block = koe_malloc((size_t)KM_BLOCK_FRAMES * D * sizeof(float));
    char cache_path[4400] = "";
    if (src.m) st.cache = open_cache(o, cache_path, sizeof cache_path);
    float *S = NULL;
    int64_t frames;
    const int64_t Ns = draw_init_sample(&st, o->init_sample, o->seed, &S, &frames);
    int rc = KOE_EXIT_OK;
    if (Ns < K) {
        if (rank == 0)
            fprintf(stderr, "koe kmeans: only %lld frames in %lld utterances (--sample %g) for --k %d; use more data or "
                            "a smaller --k\n", (long long)frames, (long long)n_kept, o->sample, K);
        rc = KOE_EXIT_USAGE;
        goto done;
    }
    if (rank == 0)
        koe_log("kmeans: %s, %lld of %lld utterances, %lld frames of dim %d, k=%d, %d ranks; init sample %lld frames "
                "(%.1f s)", o->source, (long long)n_kept, (long long)c.n_utts, (long long)frames, D, K, world,
                (long long)Ns, koe_now() - t0);
    float *C = koe_malloc((size_t)K * D * sizeof(float));
    init_centroids(o->init, S, Ns, D, K, o->seed, C);
    double inertia;
    const int it = lloyd(&st, C, K, S, Ns, o->iters, o->tol, frames, &inertia);
    if (rank == 0) {
        if (km_file_write(o->out, C, K, D, &src, o->corpus, o->seed, o->sample, it, inertia, frames, &err) < 0) {
            fprintf(stderr, "koe kmeans: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        } else {
            koe_log("kmeans: wrote %s (k=%d, dim %d, %d iterations, inertia %.6g, %.1f s)", o->out, K, D, it, inertia,
                    koe_now() - t0);
        }
    }
    int64_t flag = rc;
    comm_allreduce_max_i64(&flag, 1);
    rc = (int)flag;
    free(C);
done:
    free(S);
    if (st.cache) {
        fclose(st.cache);
        remove(cache_path);
    }
    free(st.block);
    free(utts);
    km_source_close(&src);
    corpus_close(&c);
    return rc;
}

/* cmd_label.c — `koe label --corpus DIR --kmeans KM.h5 --name NAME [--ckpt CKPT]`: the label set
 * DIR/labels/NAME (data/labels.h) — every frame's nearest centroid, one file per corpus shard,
 * with the k-means file's checksum, the checkpoint's and each shard's fingerprint as provenance.
 * The features are the ones KM.h5 was made from (its `source`); for layer:N the checkpoint must be
 * the one k-means saw (checksums compared). `--part I/N` labels only the shards s with s % N == I
 * (one task of a Slurm job array; the N parts together make the whole set, in any order, since
 * every shard file is written and published on its own); under mpirun the ranks split the part's
 * shards round-robin (rank r takes the part's shards r, r + world, ...).
 * Must not: leave a label file that looks complete after a failure (labels_write_shard publishes
 * complete files only), or let one rank fail alone while the others wait. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/config_keys.h"
#include "../core/kmeans.h"
#include "../core/progress.h"
#include "../data/corpus.h"
#include "../data/kmeans_file.h"
#include "../data/labels.h"
#include "../distributed/comm.h"
#include "ckpt_model.h"
#include "commands.h"
#include "feature_source.h"

typedef struct {
    long part, parts;
} LabelPart;

typedef struct {
    const char *corpus, *kmeans, *name, *ckpt;
    LabelPart part;
    int threads;
} LabelOptions;

/* I/N, two numbers in the recipes' syntax (core/config_keys.h) */
static int parse_part(const char *s, void *dst, char *why, size_t n) {
    LabelPart *p = dst;
    const char *slash = strchr(s, '/');
    int64_t i, parts;
    if (!slash || config_parse_i64_n(s, (size_t)(slash - s), &i) || config_parse_i64(slash + 1, &parts) ||
        parts < 1 || parts > 1000000 || i < 0 || i >= parts) {
        snprintf(why, n, "expected I/N with integers 0 <= I < N, e.g. --part 0/4 (the shards s with s %% N == I)");
        return -1;
    }
    p->part = (long)i, p->parts = (long)parts;
    return 0;
}

#define O(field) offsetof(LabelOptions, field)
static const CliFlag label_flags[] = {
    CLI_S("--corpus", O(corpus), NULL, CLI_REQUIRED, "DIR", "corpus written by `koe prepare`"),
    CLI_S("--kmeans", O(kmeans), NULL, CLI_REQUIRED, "KM.h5", "written by `koe kmeans`"),
    CLI_S("--name", O(name), NULL, CLI_REQUIRED, "NAME", "label set name, a plain name such as km100"),
    CLI_P("--ckpt", O(ckpt), ckpt_path_parse, NULL, 0, "CKPT.h5", "the checkpoint `koe kmeans` used (required when its source is layer:N)"),
    CLI_P("--part", O(part), parse_part, "0/1", 0, "I/N", "label only the shards s with s % N == I, 0 <= I < N (0/1: all of them)"),
    CLI_THREADS(O(threads)),
    CLI_END,
};

static int label_command(const void *opts, int n_args, char **args);

const CliCommand cmd_label = {
    .name = "label",
    .summary = "label every frame of a corpus with its nearest k-means centroid (HuBERT targets)",
    .about = "Writes the label set DIR/labels/NAME/shard-NNNNN.h5, one file per corpus shard: /labels uint16\n"
             "[frames] (nearest centroid of each frame), /offset int64 [n+1], attrs format=koe-labels,\n"
             "n_classes, frame_rate (100 for mfcc and fbank, 50 for layer:N), source, kmeans_checksum,\n"
             "ckpt_checksum, shard_fingerprint. The features are those KM.h5 was made from. Under mpirun the\n"
             "ranks split the shards. `koe train` (data.labels=NAME) refuses a label set that does not match\n"
             "the corpus.\n"
             "\n"
             "--part I/N labels only the shards s with s % N == I (the ranks split those), so N jobs, e.g. the\n"
             "tasks of a Slurm job array (--part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), make the set\n"
             "together, in any order and at the same time. Each shard file is written to a .tmp file and renamed,\n"
             "nothing else is written, so the set is complete once all N parts succeeded; a failed part can be\n"
             "rerun alone. The N parts give the same files as one run without --part.\n",
    .flags = label_flags,
    .opts_size = sizeof(LabelOptions),
    .run = label_command,
};

/* The part's shards are si = part + j * parts; rank r takes j = r, r + world, ... */
static int mine_shard(int si, long part, long parts) {
    return si % parts == part && (si / parts) % comm_size() == comm_rank();
}

/* Label one shard (global utterances first .. first + s->n - 1). */
static int label_shard(Corpus *c, int si, int64_t first, FeatureSource *src, const KmeansFile *km, const float *c_sqn,
                       const LabelSetInfo *info, const char *name, Progress *pr, int64_t *frames_out, KoeError *err) {
    const CorpusShard *s = &c->shards[si];
    int64_t *offset = koe_malloc((size_t)(s->n + 1) * sizeof(int64_t));
    offset[0] = 0;
    for (int64_t i = 0; i < s->n; i++) offset[i + 1] = offset[i] + feature_source_frames(src, s->length[i]);
    const int64_t F = offset[s->n];
    uint16_t *labels = koe_malloc((size_t)(F ? F : 1) * sizeof(uint16_t));
    int32_t *assign = koe_malloc((size_t)KMEANS_BLOCK * sizeof(int32_t));
    float *scratch = koe_malloc((size_t)KMEANS_BLOCK * km->k * sizeof(float));
    int rc = 0;
    for (int64_t i = 0; i < s->n && rc == 0; i++) {
        const float *X;
        int64_t T = feature_source_compute(src, c, first + i, &X, err);
        if (T < 0) {
            rc = -1;
            break;
        }
        KOE_ASSERT(T == offset[i + 1] - offset[i]);
        for (int64_t f0 = 0; f0 < T; f0 += KMEANS_BLOCK) {
            int64_t nb = T - f0 < KMEANS_BLOCK ? T - f0 : KMEANS_BLOCK;
            kmeans_assign(X + f0 * km->dim, nb, km->dim, km->centroids, c_sqn, km->k, assign, NULL, scratch);
            for (int64_t j = 0; j < nb; j++) labels[offset[i] + f0 + j] = (uint16_t)assign[j];
        }
        progress_add(pr, 1);
    }
    if (rc == 0) rc = labels_write_shard(c->dir, name, s, info, labels, offset, err);
    *frames_out = F;
    free(offset);
    free(labels);
    free(assign);
    free(scratch);
    return rc;
}

/* The provenance of a label set made from km, of features at frame_rate Hz. */
static LabelSetInfo label_set_info(const KmeansFile *km, double frame_rate) {
    LabelSetInfo info;
    memset(&info, 0, sizeof info);
    info.n_classes = km->k;
    info.frame_rate = frame_rate;
    snprintf(info.source, sizeof info.source, "%s", km->source);
    snprintf(info.kmeans_checksum, sizeof info.kmeans_checksum, "%s", km->checksum);
    snprintf(info.ckpt_checksum, sizeof info.ckpt_checksum, "%s", km->ckpt_checksum);
    return info;
}

static int label_command(const void *opts, int n_args, char **args) {
    (void)n_args, (void)args;
    const LabelOptions *o = opts;
    const char *corpus_dir = o->corpus, *kmeans = o->kmeans, *name = o->name, *ckpt = o->ckpt;
    const long part = o->part.part, parts = o->part.parts;
    cli_threads(o->threads, 0);
    const int rank = comm_rank();
    KoeError err;
    Corpus c;
    KmeansFile km;
    FeatureSource src;
    if (kmeans_file_read(&km, kmeans, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe label: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    if (corpus_open(&c, corpus_dir, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe label: %s\n", err.msg);
        kmeans_file_free(&km);
        return KOE_EXIT_USAGE;
    }
    int rc = KOE_EXIT_USAGE;
    if (feature_source_open(&src, km.source, ckpt, &c, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe label: %s: %s\n", kmeans, err.msg);
        goto out_corpus;
    }
    if (strcmp(src.ckpt_checksum, km.ckpt_checksum) || src.dim != km.dim) {
        if (rank == 0)
            fprintf(stderr, "koe label: %s was made from %s of a checkpoint with checksum '%s' (dim %d), but --ckpt %s "
                            "has checksum '%s' (dim %d): pass the checkpoint `koe kmeans` used\n",
                    kmeans, km.source, km.ckpt_checksum, km.dim, ckpt ? ckpt : "(none)", src.ckpt_checksum, src.dim);
        goto out_src;
    }
    const LabelSetInfo info = label_set_info(&km, src.frame_rate);

    int64_t bad = 0;
    if (rank == 0 && labels_make_dir(corpus_dir, name, &err) < 0) {
        fprintf(stderr, "koe label: %s\n", err.msg);
        bad = 1;
    }
    comm_allreduce_max_i64(&bad, 1);
    if (bad) goto out_src;

    double t0 = koe_now();
    float *c_sqn = koe_malloc((size_t)km.k * sizeof(float));
    kmeans_sqnorms(km.centroids, km.k, km.dim, c_sqn);
    int64_t first = 0, stats[2] = {0, 0}, mine = 0; /* frames, shards; this rank's utterances */
    for (int si = 0; si < c.n_shards; si++) mine += mine_shard(si, part, parts) ? c.shards[si].n : 0;
    Progress *pr = progress_open("label", "utt", mine);
    for (int si = 0; si < c.n_shards; si++) {
        if (mine_shard(si, part, parts) && !bad) {
            int64_t F = 0;
            if (label_shard(&c, si, first, &src, &km, c_sqn, &info, name, pr, &F, &err) < 0) {
                progress_break(pr);
                fprintf(stderr, "koe label: %s\n", err.msg);
                bad = 1;
            }
            stats[0] += F;
            stats[1]++;
        }
        first += c.shards[si].n;
    }
    progress_close(pr);
    free(c_sqn);
    comm_allreduce_max_i64(&bad, 1);
    comm_allreduce_sum_i64(stats, 2);
    if (!bad) {
        rc = KOE_EXIT_OK;
        if (rank == 0)
            koe_log("label: wrote %s/labels/%s part %ld/%ld (%lld shards, %lld frames at %g Hz, k=%d, source %s, %.1f s)", corpus_dir,
                    name, part, parts, (long long)stats[1], (long long)stats[0], info.frame_rate, km.k, km.source, koe_now() - t0);
    }
out_src:
    feature_source_close(&src);
out_corpus:
    corpus_close(&c);
    kmeans_file_free(&km);
    return rc;
}

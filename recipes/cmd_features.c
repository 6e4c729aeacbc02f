/* cmd_features.c — `koe features --corpus DIR --kind mfcc|fbank --out FILE.h5`: Kaldi-compatible
 * features of every utterance of a corpus into one file (data/README.md, Features):
 *   /feats float32 [frames, dim]   /offset int64 [n+1]   /utt_id strings [n]
 *   attrs: format="koe-features", format_version=1, kind, frame_rate=100, dim (data/features_file.h), corpus
 * Under mpirun, rank r takes a contiguous range of utterances in the corpus's global order (cut so
 * that ranks get about the same number of frames) and writes its rows of /feats collectively
 * (distributed/h5par), in blocks of bounded memory; every rank knows every utterance's frame count
 * from the index, so the file is the same for any rank or thread count. Rank 0 then adds the
 * offsets, ids and attributes serially and renames FILE.h5.tmp to FILE.h5.
 * Must not: leave a FILE.h5 that looks complete after a failure, or let one rank fail alone while
 * the others wait in a collective (errors there are fatal and abort the communicator). */
#include <errno.h>
#include <hdf5.h>
#include <libgen.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/progress.h"
#include "../data/corpus.h"
#include "../data/features.h"
#include "../data/features_file.h"
#include "../data/h5util.h"
#include "../distributed/comm.h"
#include "../distributed/h5par.h"
#include "commands.h"

#define FEATURES_BLOCK_BYTES ((int64_t)64 << 20) /* features held in memory per rank per write */

typedef struct {
    const char *corpus, *kind, *out;
    int threads;
    int64_t block_frames;
} FeaturesOptions;

#define O(field) offsetof(FeaturesOptions, field)
static const CliFlag features_flags[] = {
    CLI_S("--corpus", O(corpus), NULL, CLI_REQUIRED, "DIR", "corpus directory written by `koe prepare`"),
    CLI_S("--kind", O(kind), NULL, CLI_REQUIRED, "mfcc|fbank", "which features"),
    CLI_S("--out", O(out), NULL, CLI_REQUIRED, "FILE.h5", "output file; its directory must exist"),
    CLI_THREADS(O(threads)),
    CLI_N("--block-frames", CLI_I64, O(block_frames), NULL, 1, INT64_MAX / 4096, 0, "N",
          "frames each rank computes between two collective writes\n"
          "(default: 64 MB of features, i.e. 430k mfcc / 209k fbank frames)"),
    CLI_END,
};

static int features_command(const void *opts, int n_args, char **args);

const CliCommand cmd_features = {
    .name = "features",
    .summary = "Kaldi-compatible MFCC (39-d, HuBERT iteration 1) or fbank of a corpus",
    .about = "Compute features of every utterance of a corpus, as torchaudio.compliance.kaldi does:\n"
             "  mfcc   13 cepstra (23 mel bins, lifter 22, no energy) + deltas + delta-deltas = 39 dims\n"
             "  fbank  80 log mel energies\n"
             "25 ms frames every 10 ms (100 Hz), snip_edges: an utterance of n samples has\n"
             "1 + (n - 400) / 160 frames, none below 400 samples (25 ms).\n"
             "Output (HDF5): /feats float32 [frames, dim], /offset int64 [n+1] (utterance i is rows\n"
             "offset[i]..offset[i+1]), /utt_id, attrs format=koe-features, kind, frame_rate=100, dim.\n"
             "Written as FILE.h5.tmp and renamed when complete. Under mpirun the ranks split the utterances\n"
             "and write one shared file (MPI-IO); the result is identical for any number of ranks or threads.\n",
    .flags = features_flags,
    .opts_size = sizeof(FeaturesOptions),
    .run = features_command,
};

/* Rank 0, after the collective part: offsets, ids and attributes, then publish by rename. */
static void finish_file(const char *tmp, const char *out, const Corpus *c, const int64_t *offset, FeatureKind kind) {
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s: cannot reopen: %s", tmp, h5_last_error());
    char **ids = koe_malloc((size_t)(c->n_utts ? c->n_utts : 1) * sizeof *ids);
    for (int64_t i = 0; i < c->n_utts; i++) ids[i] = (char *)corpus_utt_id(c, i);
    if (features_file_write_index(f, offset, ids, c->n_utts, features_kind_name(kind), FEATURES_FRAME_RATE,
                                  features_dim(kind)) < 0 ||
        h5_attr_write_str(f, "corpus", c->dir) < 0)
        koe_fatal(KOE_EXIT_INTERNAL, "%s: cannot write /offset, /utt_id and the attributes: %s", tmp, h5_last_error());
    free(ids);
    if (H5Fclose(f) < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s: cannot close: %s", tmp, h5_last_error());
    KoeError err;
    if (koe_publish_file(tmp, out, &err) < 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
}

/* Rank 0 checks the output directory for all (MPI-IO's own error says little). */
static int check_out_dir(const char *out, int rank) {
    char where[KOE_ERR_LEN] = "";
    if (rank == 0) {
        char *dcopy = koe_strdup(out);
        const char *dir = dirname(dcopy);
        if (access(dir, W_OK | X_OK) < 0)
            snprintf(where, sizeof where, "--out %s: directory %s: %s%s", out, dir, strerror(errno),
                     errno == ENOENT ? " (create it first)" : "");
        free(dcopy);
    }
    comm_bcast(where, sizeof where, 0);
    if (where[0] && rank == 0) fprintf(stderr, "koe features: %s\n", where);
    return where[0] ? -1 : 0;
}

/* Features of utterances [ub, ue) into feats (rows from offset[ub]), threads at a time. A damaged
 * shard on one rank aborts them all, naming it (the others wait in the collective write). */
static void compute_block(Corpus *c, FeatureKind kind, const int64_t *offset, int64_t ub, int64_t ue,
                          int64_t max_len, int threads, Progress *pr, float *feats) {
    const int64_t row0 = offset[ub], dim = features_dim(kind);
    char failed[KOE_ERR_LEN] = "";
#pragma omp parallel num_threads(threads)
    {
        FeatureExtractor *fe = features_create(kind);
        int16_t *pcm = koe_malloc((size_t)(max_len ? max_len : 1) * sizeof *pcm); // (max_len)
        float *wav = koe_malloc((size_t)(max_len ? max_len : 1) * sizeof *wav);   // (max_len)
        KoeError e;
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = ub; u < ue; u++) {
            if (offset[u + 1] == offset[u]) { /* no frames */
                progress_add(pr, 1);
                continue;
            }
            int64_t len = c->utt_length[u];
            if (corpus_read(c, u, 0, len, pcm, &e) < 0) {
#pragma omp critical(features_error)
                if (!failed[0]) snprintf(failed, sizeof failed, "%s", e.msg);
                continue;
            }
            for (int64_t i = 0; i < len; i++) wav[i] = (float)pcm[i] / 32768.0f;
            features_compute(fe, wav, len, feats + (offset[u] - row0) * dim);
            progress_add(pr, 1);
        }
        free(wav);
        free(pcm);
        features_free(fe);
    }
    if (failed[0]) koe_fatal(KOE_EXIT_USAGE, "koe features: %s", failed);
}

static int features_command(const void *opts, int n_args, char **args) {
    (void)n_args, (void)args;
    const FeaturesOptions *o = opts;
    const char *corpus_dir = o->corpus, *out = o->out;
    FeatureKind kind;
    if (features_kind_parse(o->kind, &kind) < 0)
        return cli_error(&cmd_features, comm_rank() == 0, "--kind %s: expected mfcc or fbank", o->kind);
    const int threads = cli_threads(o->threads, 0);
    const int rank = comm_rank(), world = comm_size();
    const int dim = features_dim(kind);
    int64_t block_frames = o->block_frames;
    if (block_frames == 0) block_frames = FEATURES_BLOCK_BYTES / ((int64_t)dim * (int64_t)sizeof(float));

    if (check_out_dir(out, rank) < 0) return KOE_EXIT_USAGE;

    /* Every rank reads the same index: failures are the same everywhere, so returning is safe here
     * (no collective has started). */
    Corpus c;
    KoeError err;
    if (corpus_open(&c, corpus_dir, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe features: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    const int64_t n = c.n_utts;
    int64_t *offset = koe_malloc((size_t)(n + 1) * sizeof *offset); // (n+1)
    offset[0] = 0;
    int64_t n_short = 0;
    for (int64_t u = 0; u < n; u++) {
        int64_t T = features_num_frames(c.utt_length[u]);
        n_short += T == 0;
        offset[u + 1] = offset[u] + T;
    }
    const int64_t F = offset[n];
    if (rank == 0) {
        koe_log("features: %s of %lld utterances (%.2f h), %lld frames x %d, %d rank(s) x %d thread(s)",
                features_kind_name(kind), (long long)n, c.hours, (long long)F, dim, world, threads);
        if (n_short)
            koe_warn("features: %lld utterance(s) shorter than 400 samples (25 ms) get no frames", (long long)n_short);
    }

    /* This rank's utterances, and its blocks. */
    H5parPlan pl;
    h5par_plan(&pl, offset, n, block_frames);
    int64_t max_len = 0;
    for (int64_t u = pl.u0; u < pl.u1; u++) max_len = c.utt_length[u] > max_len ? c.utt_length[u] : max_len;
    float *feats = koe_malloc((size_t)pl.max_rows * (size_t)dim * sizeof(float)); // (max_rows, dim)

    char *tmp = koe_malloc(strlen(out) + 5);
    sprintf(tmp, "%s.tmp", out);
    hid_t file = h5par_create(tmp, &err);
    if (file < 0) koe_fatal(KOE_EXIT_USAGE, "koe features: %s", err.msg);
    koe_output_begin(tmp); /* a fatal error from here on removes it (and says when the disk is full) */
    int64_t dims[2] = {F, dim};
    hid_t dset = h5par_create_dataset(file, "feats", H5T_IEEE_F32LE, 2, dims);

    double t0 = koe_now();
    Progress *pr = progress_open("features", "utt", pl.u1 - pl.u0);
    for (int64_t b = 0; b < pl.nb_max; b++) {
        int64_t row0 = 0, rows = 0;
        if (b < pl.nb) {
            const int64_t ub = pl.start[b], ue = pl.start[b + 1];
            row0 = offset[ub];
            rows = offset[ue] - row0;
            compute_block(&c, kind, offset, ub, ue, max_len, threads, pr, feats);
        }
        h5par_write_rows(dset, H5T_NATIVE_FLOAT, -1, row0, rows, feats);
        h5_output_data(dset, tmp); /* test hook */
    }
    progress_close(pr);
    h5par_close_dataset(dset);
    h5par_close(file);
    double dt = koe_now() - t0;
    comm_barrier();
    if (rank == 0) {
        finish_file(tmp, out, &c, offset, kind);
        double audio_s = c.hours * 3600.0;
        koe_log("features: wrote %s (%lld frames, %.1f s; %.0fx real time over %d rank(s))", out, (long long)F, dt,
                dt > 0 ? audio_s / dt : 0.0, world);
    }
    comm_barrier(); /* nobody reports success before the file is in place */
    koe_output_end(tmp);
    free(tmp);
    free(feats);
    h5par_plan_free(&pl);
    free(offset);
    corpus_close(&c);
    return KOE_EXIT_OK;
}

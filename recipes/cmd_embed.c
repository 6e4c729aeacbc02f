/* cmd_embed.c — `koe embed --ckpt CKPT --layer N|all --out FILE.h5 (--corpus DIR | WAV...)`: hidden
 * states of a checkpoint's encoder for every utterance, in the features file layout of data/README.md
 * (Features):
 *   /feats float32 [frames, D] (--layer N) or [L+1, frames, D] (--layer all)
 *   /offset int64 [n+1]   /utt_id strings [n]
 *   attrs: format="koe-features", format_version=1, kind="layer:N" | "layers:all", frame_rate (50, or
 *          100 / fbank_stack for an fbank frontend), dim (data/features_file.h), checkpoint (its
 *          path), ckpt_checksum
 * Layer 0 is the encoder input after the positional embedding (and, post-LN, its LayerNorm):
 * Hugging Face's hidden_states[0]; layer i the output of transformer layer i, torchaudio's
 * extract_features(...)[i-1]. One utterance per forward (no padding, no masking, no dropout).
 * Under mpirun the ranks split the utterances (contiguous ranges of about the same number of frames,
 * distributed/h5par.h) and write their rows of /feats collectively, a block of bounded memory at a
 * time; rank 0 then adds /offset, /utt_id and the attributes and renames FILE.h5.tmp to FILE.h5. Each
 * utterance is computed alone, so the file is the same for any number of ranks.
 * Must not: leave a FILE.h5 that looks complete after a failure, or let one rank fail alone while the
 * others wait in a collective (errors there are fatal and abort the communicator). */
#include <hdf5.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/config_keys.h"
#include "../core/progress.h"
#include "../data/audio.h"
#include "../data/corpus.h"
#include "../data/features_file.h"
#include "../data/h5util.h"
#include "../data/labels.h"
#include "../distributed/ckpt.h"
#include "../distributed/comm.h"
#include "../distributed/h5par.h"
#include "ckpt_model.h"
#include "commands.h"

#define EMBED_BLOCK_BYTES ((int64_t)64 << 20) /* hidden states held in memory per rank per write */

typedef struct {
    const char *ckpt, *out, *corpus;
    int layer; /* -1: all */
} EmbedOptions;

/* all (-1) or a layer number in the recipes' syntax (core/config_keys.h) */
static int parse_layer(const char *s, void *dst, char *why, size_t n) {
    int64_t v = -1;
    if (strcmp(s, "all") && (config_parse_i64(s, &v) || v < 0 || v > 100000)) {
        snprintf(why, n, "expected a layer number 0..100000 or all");
        return -1;
    }
    *(int *)dst = (int)v;
    return 0;
}

#define O(field) offsetof(EmbedOptions, field)
static const CliFlag embed_flags[] = {
    CLI_P("--ckpt", O(ckpt), ckpt_path_parse, NULL, CLI_REQUIRED, "CKPT.h5", "checkpoint"),
    CLI_P("--layer", O(layer), parse_layer, NULL, CLI_REQUIRED, "N|all", "which hidden state, 0..L, or all of them"),
    CLI_S("--out", O(out), NULL, CLI_REQUIRED, "FILE.h5", "output file; written as FILE.h5.tmp and renamed"),
    CLI_S("--corpus", O(corpus), NULL, 0, "DIR", "a corpus written by `koe prepare` (or WAV files as arguments)"),
    CLI_END,
};

static int embed_command(const void *opts, int n_args, char **args);

const CliCommand cmd_embed = {
    .name = "embed",
    .summary = "hidden states of a checkpoint's encoder (one layer or all) for a corpus or WAV files",
    .args = "[WAV...]",
    .max_args = -1,
    .about = "Runs the encoder on every utterance of --corpus DIR, or of the WAV files given (one at a time:\n"
             "no padding, masking or dropout) and writes\n"
             "/feats float32 [frames, D] for --layer N, or [L+1, frames, D] for --layer all, /offset int64 [n+1]\n"
             "(utterance i is frames offset[i]..offset[i+1]), /utt_id, attrs format=koe-features, kind,\n"
             "frame_rate (50 Hz; 100 / fbank_stack for an fbank frontend), dim. Layer 0 is the encoder input\n"
             "after the positional embedding (and, for post-LN models, its LayerNorm): Hugging Face's\n"
             "hidden_states[0]; layer i (1..L) is the output of layer i (torchaudio's extract_features()[i-1];\n"
             "for pre-LN models, before the final LayerNorm). An fbank-frontend model gets the 80-bin Kaldi\n"
             "fbank of each utterance, normalised per utterance if it was trained with BEST-RQ, as in training.\n"
             "WAV inputs are decoded as `koe prepare` does (16 kHz mono int16, any format libsndfile reads);\n"
             "their utterance ids are the file names without directory and extension.\n"
             "Utterances too short for one frame (400 samples) get no frames. Under mpirun the ranks split the\n"
             "utterances and write their rows together; the file is the same for any number of ranks.\n",
    .flags = embed_flags,
    .opts_size = sizeof(EmbedOptions),
    .run = embed_command,
};

typedef struct {
    int n;
    char **id;
    int64_t *len;
    int16_t **pcm;  /* WAV inputs: decoded up front; corpus: NULL (read one at a time) */
    Corpus *corpus; /* the corpus read from, or NULL */
    int64_t max_len; /* samples of the longest (at least 1) */
    int longest;     /* its index */
} Inputs;

static void inputs_free(Inputs *in) {
    for (int i = 0; i < in->n; i++) {
        free(in->id[i]);
        if (in->pcm) free(in->pcm[i]);
    }
    free(in->id);
    free(in->len);
    free(in->pcm);
    if (in->corpus) corpus_close(in->corpus);
}

/* The corpus's utterances, read one at a time later. Returns 0, or -1 (printed). */
static int inputs_from_corpus(Inputs *in, Corpus *c, const char *corpus_dir) {
    KoeError err;
    if (corpus_open(c, corpus_dir, &err) < 0) {
        if (comm_rank() == 0) fprintf(stderr, "koe embed: %s\n", err.msg);
        return -1;
    }
    in->corpus = c;
    in->n = (int)c->n_utts;
    in->id = koe_calloc((size_t)(in->n ? in->n : 1), sizeof *in->id);
    in->len = koe_calloc((size_t)(in->n ? in->n : 1), sizeof *in->len);
    for (int i = 0; i < in->n; i++) {
        in->id[i] = koe_strdup(corpus_utt_id(c, i));
        in->len[i] = c->utt_length[i];
    }
    return 0;
}

/* The WAV files, decoded now; ids are their names without directory and extension. Returns 0, or
 * -1 (printed). */
static int inputs_from_wavs(Inputs *in, char **wavs, int n_wavs) {
    KoeError err;
    in->n = n_wavs;
    in->id = koe_calloc((size_t)n_wavs, sizeof *in->id);
    in->len = koe_calloc((size_t)n_wavs, sizeof *in->len);
    in->pcm = koe_calloc((size_t)n_wavs, sizeof *in->pcm);
    for (int i = 0; i < n_wavs; i++) {
        Audio a;
        if (audio_decode_file(wavs[i], &a, &err) < 0) {
            if (comm_rank() == 0) fprintf(stderr, "koe embed: %s\n", err.msg);
            return -1;
        }
        in->pcm[i] = a.pcm;
        in->len[i] = a.n;
        a.pcm = NULL;
        audio_free(&a);
        char *copy = koe_strdup(wavs[i]);
        char *base = basename(copy), *dot = strrchr(base, '.');
        if (dot && dot != base) *dot = 0;
        in->id[i] = koe_strdup(base);
        free(copy);
    }
    return 0;
}

static int inputs_load(Inputs *in, Corpus *c, const char *corpus_dir, char **wavs, int n_wavs) {
    if ((corpus_dir ? inputs_from_corpus(in, c, corpus_dir) : inputs_from_wavs(in, wavs, n_wavs)) < 0) return -1;
    in->max_len = 1;
    in->longest = 0;
    for (int i = 0; i < in->n; i++)
        if (in->len[i] > in->max_len) in->max_len = in->len[in->longest = i];
    return 0;
}

/* Utterances [ub, ue) through the encoder: the hidden states kept (layer, or all L+1 with layer
 * -1) into buf (planes, rows, D), rows counted from offset[ub]. A read error is fatal (every rank is
 * inside the collective writes). */
static void embed_block(Model *m, CkptInput *ci, const Inputs *in, const int64_t *offset, int64_t ub, int64_t ue,
                        int layer, int64_t rows, float *buf, float *wav, int16_t *pcm, Progress *pr) {
    const int D = m->cfg.D, all = layer < 0, planes = all ? m->cfg.L + 1 : 1;
    KoeError err;
    for (int64_t i = ub; i < ue; progress_add(pr, 1), i++) {
        const int64_t T = offset[i + 1] - offset[i];
        if (T == 0) continue;
        const int16_t *src = in->pcm ? in->pcm[i] : pcm;
        if (!in->pcm && corpus_read(in->corpus, i, 0, in->len[i], pcm, &err) < 0) {
            progress_break(pr);
            koe_fatal(KOE_EXIT_USAGE, "koe embed: %s", err.msg);
        }
        for (int64_t k = 0; k < in->len[i]; k++) wav[k] = (float)src[k] / 32768.0f;
        int64_t S;
        const float *inp = ckpt_input_compute(ci, wav, in->len[i], &S);
        ModelRun run = {0};
        model_forward(m, inp, &S, 1, S, NULL, &run);
        KOE_ASSERT(m->T == T);
        for (int p = 0; p < planes; p++)
            memcpy(buf + ((size_t)p * rows + (size_t)(offset[i] - offset[ub])) * D, model_hidden(m, all ? p : layer),
                   (size_t)T * D * sizeof(float));
    }
}

/* Rank 0, after the collective part: /offset, /utt_id and the attributes (ckpt_checksum: the
 * checkpoint's, which `koe kmeans --source file:` passes on to koe label), then the file published. */
static void embed_finish(const char *tmp, const char *out, const Inputs *in, const int64_t *offset, const char *kind,
                         const Model *m, const char *ckpt, const char *ckpt_checksum) {
    KoeError err;
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0 || features_file_write_index(f, offset, in->id, in->n, kind, ckpt_model_frame_rate(m), m->cfg.D) < 0 ||
        h5_attr_write_str(f, "checkpoint", ckpt) < 0 || h5_attr_write_str(f, "ckpt_checksum", ckpt_checksum) < 0 ||
        H5Fclose(f) < 0)
        koe_fatal(KOE_EXIT_INTERNAL, "koe embed: %s: cannot finish the file: %s", tmp, h5_last_error());
    if (koe_publish_file(tmp, out, &err) < 0) koe_fatal(KOE_EXIT_USAGE, "koe embed: %s", err.msg);
}

/* Every rank: its share of the utterances (contiguous, about the same frames each; h5par_plan)
 * through the encoder, a block of at most EMBED_BLOCK_BYTES at a time, written collectively into
 * FILE.h5.tmp; rank 0 then ends the file and publishes it. An error before the file exists is the same
 * on every rank (same inputs, same checkpoint): each returns, rank 0 says why. */
static int run(const char *ckpt, int layer, const char *out, Inputs *in) {
    const int rank = comm_rank(), world = comm_size();
    KoeError err;
    Recipe r;
    char checksum[17];
    if (ckpt_file_checksum(ckpt, checksum, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe embed: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    Model *m = ckpt_model_open(ckpt, 1, in->max_len, in->n ? in->id[in->longest] : NULL, &r, &err);
    if (!m) {
        if (rank == 0) fprintf(stderr, "koe embed: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    const int L = m->cfg.L, D = m->cfg.D, planes = layer < 0 ? L + 1 : 1;
    if (layer > L) {
        if (rank == 0) fprintf(stderr, "koe embed: --layer %d: the model has layers 0..%d\n", layer, L);
        model_free(m);
        recipe_free(&r);
        return KOE_EXIT_USAGE;
    }
    char tmp[4200], kind[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    if (layer < 0) snprintf(kind, sizeof kind, "layers:all");
    else snprintf(kind, sizeof kind, "layer:%d", layer);
    hid_t f = h5par_create(tmp, &err);
    if (f < 0) {
        if (rank == 0) fprintf(stderr, "koe embed: %s\n", err.msg);
        model_free(m);
        recipe_free(&r);
        return KOE_EXIT_USAGE;
    }
    koe_output_begin(tmp); /* a fatal error from here on removes it (and says when the disk is full) */
    int64_t *offset = koe_malloc((size_t)(in->n + 1) * sizeof *offset); // (n+1)
    offset[0] = 0;
    for (int i = 0; i < in->n; i++) offset[i + 1] = offset[i] + ckpt_model_frames(m, in->len[i]);
    const int64_t frames = offset[in->n];
    const int64_t dims[3] = {L + 1, frames, D};
    hid_t ds = h5par_create_dataset(f, "feats", H5T_IEEE_F32LE, layer < 0 ? 3 : 2, layer < 0 ? dims : dims + 1);

    const int64_t cap = EMBED_BLOCK_BYTES / ((int64_t)planes * D * (int64_t)sizeof(float));
    H5parPlan pl;
    h5par_plan(&pl, offset, in->n, cap);
    int64_t max_len = 1;
    for (int64_t i = pl.u0; i < pl.u1; i++) max_len = in->len[i] > max_len ? in->len[i] : max_len;
    float *buf = koe_malloc((size_t)planes * pl.max_rows * D * sizeof(float)); // (planes, max_rows, D)
    float *wav = koe_malloc((size_t)max_len * sizeof *wav);
    int16_t *pcm = koe_malloc((size_t)max_len * sizeof *pcm);
    CkptInput ci = {0};
    ckpt_input_init(&ci, m, max_len);

    double t0 = koe_now(), audio_s = 0;
    for (int64_t i = pl.u0; i < pl.u1; i++) audio_s += (double)in->len[i] / KOE_SAMPLE_RATE;
    Progress *pr = progress_open("embed", "utt", pl.u1 - pl.u0);
    for (int64_t b = 0; b < pl.nb_max; b++) {
        int64_t row0 = 0, rows = 0;
        if (b < pl.nb) {
            row0 = offset[pl.start[b]];
            rows = offset[pl.start[b + 1]] - row0;
            embed_block(m, &ci, in, offset, pl.start[b], pl.start[b + 1], layer, rows, buf, wav, pcm, pr);
        }
        for (int p = 0; p < planes; p++)
            h5par_write_rows(ds, H5T_NATIVE_FLOAT, layer < 0 ? p : -1, row0, rows, buf + (size_t)p * rows * D);
        h5_output_data(ds, tmp); /* test hook */
    }
    progress_close(pr);
    h5par_close_dataset(ds);
    h5par_close(f);
    const double dt = koe_now() - t0;
    comm_allreduce_sum_f64(&audio_s, 1);
    comm_barrier();
    if (rank == 0) {
        embed_finish(tmp, out, in, offset, kind, m, ckpt, checksum);
        koe_log("embed: wrote %s (%d utterances, %lld frames, %s; %.1fx real time over %d rank(s))", out, in->n,
                (long long)frames, kind, dt > 0 ? audio_s / dt : 0.0, world);
    }
    comm_barrier(); /* nobody reports success before the file is in place */
    koe_output_end(tmp);
    free(buf);
    free(wav);
    free(pcm);
    h5par_plan_free(&pl);
    free(offset);
    ckpt_input_free(&ci);
    model_free(m);
    recipe_free(&r);
    return KOE_EXIT_OK;
}

static int embed_command(const void *opts, int n_args, char **args) {
    const EmbedOptions *o = opts;
    if ((!o->corpus) == (n_args == 0))
        return cli_error(&cmd_embed, comm_rank() == 0, "give --corpus DIR or WAV files (one of them)");
    Inputs in = {0};
    Corpus c;
    const int rc =
        inputs_load(&in, &c, o->corpus, args, n_args) < 0 ? KOE_EXIT_USAGE : run(o->ckpt, o->layer, o->out, &in);
    inputs_free(&in);
    return rc;
}

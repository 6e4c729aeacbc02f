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
 * Rank 0 does the work (the others wait); splitting utterances across ranks is future work.
 * Must not: leave a FILE.h5 that looks complete after a failure (written as FILE.h5.tmp, renamed). */
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
#include "../distributed/comm.h"
#include "ckpt_model.h"
#include "commands.h"

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
             "Utterances too short for one frame (400 samples) get no frames.\n",
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
        fprintf(stderr, "koe embed: %s\n", err.msg);
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
            fprintf(stderr, "koe embed: %s\n", err.msg);
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

/* /feats of the output: (L+1, frames, D) for all layers, else (frames, D). Returns 0, or -1 (printed). */
static int feats_create(const char *tmp, int all, int L, int64_t frames, int D, hid_t *f, hid_t *ds) {
    h5_lock();
    *f = h5_create(tmp);
    if (*f >= 0) {
        hsize_t dims[3] = {(hsize_t)(L + 1), (hsize_t)frames, (hsize_t)D};
        hid_t sp = all ? H5Screate_simple(3, dims, NULL) : H5Screate_simple(2, dims + 1, NULL);
        *ds = H5Dcreate2(*f, "feats", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Sclose(sp);
    }
    h5_unlock();
    if (*f < 0 || *ds < 0) {
        fprintf(stderr, "koe embed: %s: cannot create: %s (does the directory exist?)%s\n", tmp, h5_last_error(),
                koe_fs_note(tmp));
        return -1;
    }
    return 0;
}

/* Hidden state l (T, D) of the utterance at frame row0 into /feats. Returns 0, or -1 (printed). */
static int feats_write(hid_t ds, const char *tmp, int all, int l, int64_t row0, int64_t T, int D, const float *h) {
    hsize_t start[3] = {(hsize_t)l, (hsize_t)row0, 0}, count[3] = {1, (hsize_t)T, (hsize_t)D};
    h5_lock();
    hid_t fs = H5Dget_space(ds);
    herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, all ? start : start + 1, NULL, all ? count : count + 1, NULL);
    hid_t ms = H5Screate_simple(2, count + 1, NULL);
    if (e >= 0) e = H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, h);
    if (e >= 0) h5_output_data(ds, tmp); /* test hook */
    H5Sclose(ms);
    H5Sclose(fs);
    h5_unlock();
    if (e < 0) {
        fprintf(stderr, "koe embed: %s: write failed: %s%s\n", tmp, h5_last_error(), koe_fs_note(tmp));
        return -1;
    }
    return 0;
}

/* Every utterance through the encoder, its hidden states into /feats. Returns 0, or -1 (printed);
 * *audio_s gets the seconds of audio. */
static int embed_all(Model *m, CkptInput *ci, Inputs *in, const int64_t *offset, int layer, hid_t ds,
                     const char *tmp, double *audio_s) {
    const int L = m->cfg.L, D = m->cfg.D, all = layer < 0;
    float *wav = koe_malloc((size_t)in->max_len * sizeof *wav);
    int16_t *pcm = koe_malloc((size_t)in->max_len * sizeof *pcm);
    KoeError err;
    ModelRun run = {0};
    int rc = 0;
    *audio_s = 0;
    Progress *pr = progress_open("embed", "utt", in->n);
    for (int i = 0; i < in->n && !rc; progress_add(pr, 1), i++) {
        const int64_t T = offset[i + 1] - offset[i];
        *audio_s += (double)in->len[i] / KOE_SAMPLE_RATE;
        if (T == 0) continue;
        const int16_t *src = in->pcm ? in->pcm[i] : pcm;
        if (!in->pcm && corpus_read(in->corpus, i, 0, in->len[i], pcm, &err) < 0) {
            progress_break(pr);
            fprintf(stderr, "koe embed: %s\n", err.msg);
            rc = -1;
            break;
        }
        for (int64_t k = 0; k < in->len[i]; k++) wav[k] = (float)src[k] / 32768.0f;
        int64_t S;
        const float *inp = ckpt_input_compute(ci, wav, in->len[i], &S);
        model_forward(m, inp, &S, 1, S, NULL, &run);
        KOE_ASSERT(m->T == T);
        for (int l = all ? 0 : layer; l <= (all ? L : layer) && !rc; l++)
            rc = feats_write(ds, tmp, all, l, offset[i], T, D, model_hidden(m, l));
    }
    progress_close(pr);
    free(wav);
    free(pcm);
    return rc;
}

/* /offset, /utt_id and the attributes (ckpt_checksum: the checkpoint's, which `koe kmeans --source
 * file:` passes on to koe label); closes ds and f. Returns 0, or -1 (printed). */
static int feats_finish(hid_t f, hid_t ds, const char *tmp, const Inputs *in, const int64_t *offset, const char *kind,
                        const Model *m, const char *ckpt, const char *ckpt_checksum) {
    h5_lock();
    int ok = H5Dclose(ds) >= 0;
    ok = ok && features_file_write_index(f, offset, in->id, in->n, kind, ckpt_model_frame_rate(m), m->cfg.D) >= 0 &&
         h5_attr_write_str(f, "checkpoint", ckpt) >= 0 && h5_attr_write_str(f, "ckpt_checksum", ckpt_checksum) >= 0;
    ok = (H5Fclose(f) >= 0) && ok;
    h5_unlock();
    if (!ok) fprintf(stderr, "koe embed: %s: cannot finish the file: %s%s\n", tmp, h5_last_error(), koe_fs_note(tmp));
    return ok ? 0 : -1;
}

static int run(const char *ckpt, int layer, const char *out, Inputs *in) {
    KoeError err;
    Recipe r;
    char checksum[17];
    if (koe_file_checksum(ckpt, checksum, &err) < 0) {
        fprintf(stderr, "koe embed: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    Model *m = ckpt_model_open_local(ckpt, 1, in->max_len, in->n ? in->id[in->longest] : NULL, &r, &err);
    if (!m) {
        fprintf(stderr, "koe embed: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    CkptInput ci = {0};
    ckpt_input_init(&ci, m, in->max_len);
    int rc = KOE_EXIT_USAGE;
    int64_t *offset = NULL;
    hid_t f = -1, ds = -1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    if (layer > m->cfg.L) {
        fprintf(stderr, "koe embed: --layer %d: the model has layers 0..%d\n", layer, m->cfg.L);
        goto done;
    }
    offset = koe_malloc((size_t)(in->n + 1) * sizeof *offset);
    offset[0] = 0;
    for (int i = 0; i < in->n; i++) offset[i + 1] = offset[i] + ckpt_model_frames(m, in->len[i]);
    const int64_t frames = offset[in->n];
    if (feats_create(tmp, layer < 0, m->cfg.L, frames, m->cfg.D, &f, &ds) < 0) goto done;
    koe_output_begin(tmp);
    double t0 = koe_now(), audio_s;
    if (embed_all(m, &ci, in, offset, layer, ds, tmp, &audio_s) < 0) goto done;
    char kind[32];
    if (layer < 0) snprintf(kind, sizeof kind, "layers:all");
    else snprintf(kind, sizeof kind, "layer:%d", layer);
    int fin = feats_finish(f, ds, tmp, in, offset, kind, m, ckpt, checksum);
    f = ds = -1;
    if (fin < 0) goto done;
    if (koe_publish_file(tmp, out, &err) < 0) {
        fprintf(stderr, "koe embed: %s\n", err.msg);
        goto done;
    }
    double dt = koe_now() - t0;
    koe_log("embed: wrote %s (%d utterances, %lld frames, %s; %.1fx real time)", out, in->n, (long long)frames, kind,
            dt > 0 ? audio_s / dt : 0.0);
    rc = KOE_EXIT_OK;
done:
    h5_lock();
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    h5_unlock();
    koe_output_end(tmp);
    if (rc != KOE_EXIT_OK) remove(tmp);
    free(offset);
    ckpt_input_free(&ci);
    model_free(m);
    recipe_free(&r);
    return rc;
}

static int embed_command(const void *opts, int n_args, char **args) {
    const EmbedOptions *o = opts;
    if ((!o->corpus) == (n_args == 0))
        return cli_error(&cmd_embed, comm_rank() == 0, "give --corpus DIR or WAV files (one of them)");
    int rc = KOE_EXIT_OK;
    if (comm_rank() == 0) {
        Inputs in = {0};
        Corpus c;
        rc = inputs_load(&in, &c, o->corpus, args, n_args) < 0 ? KOE_EXIT_USAGE : run(o->ckpt, o->layer, o->out, &in);
        inputs_free(&in);
    }
    comm_bcast(&rc, sizeof rc, 0);
    return rc;
}

/* cmd_embed.c — `koe embed --ckpt CKPT --layer N|all --out FILE.h5 (--corpus DIR | WAV...)`: hidden
 * states of a checkpoint's encoder for every utterance, in the features file layout of data/README.md
 * (Features):
 *   /feats float32 [frames, D] (--layer N) or [L+1, frames, D] (--layer all)
 *   /offset int64 [n+1]   /utt_id strings [n]
 *   attrs: format="koe-features", format_version=1, kind="layer:N" | "layers:all", frame_rate (50, or
 *          100 / fbank_stack for an fbank frontend), dim
 * Layer 0 is the encoder input after the positional embedding (and, post-LN, its LayerNorm):
 * Hugging Face's hidden_states[0]; layer i the output of transformer layer i, torchaudio's
 * extract_features(...)[i-1]. One utterance per forward (no padding, no masking, no dropout).
 * Rank 0 does the work (the others wait); splitting utterances across ranks is future work.
 * Must not: leave a FILE.h5 that looks complete after a failure (written as FILE.h5.tmp, renamed). */
#include <errno.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../data/audio.h"
#include "../data/corpus.h"
#include "../data/h5util.h"
#include "../distributed/comm.h"
#include "ckpt_model.h"
#include "commands.h"

#define EMBED_FORMAT "koe-features"
#define EMBED_FORMAT_VERSION 1

const char cmd_embed_summary[] = "hidden states of a checkpoint's encoder (one layer or all) for a corpus or WAV files";
const char cmd_embed_help[] =
    "usage: koe embed --ckpt CKPT.h5 --layer N|all --out FILE.h5 (--corpus DIR | WAV...)\n"
    "\n"
    "Runs the encoder on every utterance (one at a time: no padding, masking or dropout) and writes\n"
    "/feats float32 [frames, D] for --layer N, or [L+1, frames, D] for --layer all, /offset int64 [n+1]\n"
    "(utterance i is frames offset[i]..offset[i+1]), /utt_id, attrs format=koe-features, kind,\n"
    "frame_rate (50 Hz; 100 / fbank_stack for an fbank frontend), dim. Layer 0 is the encoder input\n"
    "after the positional embedding (and, for post-LN models, its LayerNorm): Hugging Face's\n"
    "hidden_states[0]; layer i (1..L) is the output of layer i (torchaudio's extract_features()[i-1];\n"
    "for pre-LN models, before the final LayerNorm). An fbank-frontend model gets the 80-bin Kaldi\n"
    "fbank of each utterance, normalised per utterance if it was trained with BEST-RQ, as in training.\n"
    "WAV inputs are decoded as `koe prepare` does (16 kHz mono int16, any format libsndfile reads);\n"
    "their utterance ids are the file names without directory and extension.\n"
    "Utterances too short for one frame (400 samples) get no frames.\n"
    "\n"
    "options:\n"
    "  --ckpt CKPT.h5   checkpoint (required)\n"
    "  --layer N|all    which hidden state, 0..L, or all of them (required)\n"
    "  --out FILE.h5    output file (required); written as FILE.h5.tmp and renamed\n"
    "  --corpus DIR     a corpus written by `koe prepare`, or WAV files as arguments\n";

typedef struct {
    int n;
    char **id;
    int64_t *len;
    int16_t **pcm; /* WAV inputs: decoded up front; corpus: NULL (read one at a time) */
} Inputs;

static void inputs_free(Inputs *in) {
    for (int i = 0; i < in->n; i++) {
        free(in->id[i]);
        if (in->pcm) free(in->pcm[i]);
    }
    free(in->id);
    free(in->len);
    free(in->pcm);
}

static int run(const char *ckpt, int layer, const char *out, const char *corpus_dir, char **wavs, int n_wavs) {
    KoeError err;
    Inputs in = {0};
    Corpus c;
    int have_corpus = 0;
    if (corpus_dir) {
        if (corpus_open(&c, corpus_dir, &err) < 0) {
            fprintf(stderr, "koe embed: %s\n", err.msg);
            return KOE_EXIT_USAGE;
        }
        have_corpus = 1;
        in.n = (int)c.n_utts;
        in.id = koe_calloc((size_t)(in.n ? in.n : 1), sizeof *in.id);
        in.len = koe_calloc((size_t)(in.n ? in.n : 1), sizeof *in.len);
        for (int i = 0; i < in.n; i++) {
            in.id[i] = koe_strdup(corpus_utt_id(&c, i));
            in.len[i] = c.utt_length[i];
        }
    } else {
        in.n = n_wavs;
        in.id = koe_calloc((size_t)n_wavs, sizeof *in.id);
        in.len = koe_calloc((size_t)n_wavs, sizeof *in.len);
        in.pcm = koe_calloc((size_t)n_wavs, sizeof *in.pcm);
        for (int i = 0; i < n_wavs; i++) {
            Audio a;
            if (audio_decode_file(wavs[i], &a, &err) < 0) {
                fprintf(stderr, "koe embed: %s\n", err.msg);
                inputs_free(&in);
                return KOE_EXIT_USAGE;
            }
            in.pcm[i] = a.pcm;
            in.len[i] = a.n;
            a.pcm = NULL;
            audio_free(&a);
            char *copy = koe_strdup(wavs[i]);
            char *base = basename(copy), *dot = strrchr(base, '.');
            if (dot && dot != base) *dot = 0;
            in.id[i] = koe_strdup(base);
            free(copy);
        }
    }
    int64_t max_len = 1;
    for (int i = 0; i < in.n; i++) max_len = in.len[i] > max_len ? in.len[i] : max_len;
    Recipe r;
    Model *m = ckpt_model_open(ckpt, 1, max_len, &r, &err);
    CkptInput ci = {0};
    if (m) ckpt_input_init(&ci, m, &r, max_len);
    int rc = KOE_EXIT_USAGE;
    float *wav = NULL;
    int16_t *pcm = NULL;
    int64_t *offset = NULL;
    hid_t f = -1, ds = -1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    if (!m) {
        fprintf(stderr, "koe embed: %s\n", err.msg);
        goto done;
    }
    const int L = m->cfg.L, D = m->cfg.D;
    if (layer > L) {
        fprintf(stderr, "koe embed: --layer %d: the model has layers 0..%d\n", layer, L);
        goto done;
    }
    offset = koe_malloc((size_t)(in.n + 1) * sizeof *offset);
    offset[0] = 0;
    for (int i = 0; i < in.n; i++) offset[i + 1] = offset[i] + ckpt_model_frames(m, in.len[i]);
    const int64_t frames = offset[in.n];
    const int all = layer < 0;
    h5_lock();
    f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f >= 0) {
        hsize_t dims[3] = {(hsize_t)(L + 1), (hsize_t)frames, (hsize_t)D};
        hid_t sp = all ? H5Screate_simple(3, dims, NULL) : H5Screate_simple(2, dims + 1, NULL);
        ds = H5Dcreate2(f, "feats", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Sclose(sp);
    }
    h5_unlock();
    if (f < 0 || ds < 0) {
        fprintf(stderr, "koe embed: %s: cannot create: %s (does the directory exist?)\n", tmp, h5_last_error());
        goto done;
    }
    wav = koe_malloc((size_t)max_len * sizeof *wav);
    pcm = koe_malloc((size_t)max_len * sizeof *pcm);
    double t0 = koe_now(), audio_s = 0;
    ModelRun run = {0};
    for (int i = 0; i < in.n; i++) {
        const int64_t T = offset[i + 1] - offset[i];
        audio_s += (double)in.len[i] / KOE_SAMPLE_RATE;
        if (T == 0) continue;
        const int16_t *src = in.pcm ? in.pcm[i] : pcm;
        if (!in.pcm && corpus_read(&c, i, 0, in.len[i], pcm, &err) < 0) {
            fprintf(stderr, "koe embed: %s\n", err.msg);
            goto done;
        }
        for (int64_t k = 0; k < in.len[i]; k++) wav[k] = (float)src[k] / 32768.0f;
        int64_t S;
        const float *inp = ckpt_input_compute(&ci, wav, in.len[i], &S);
        model_forward(m, inp, &S, 1, S, NULL, &run);
        KOE_ASSERT(m->T == T);
        for (int l = all ? 0 : layer; l <= (all ? L : layer); l++) {
            hsize_t start[3] = {(hsize_t)l, (hsize_t)offset[i], 0}, count[3] = {1, (hsize_t)T, (hsize_t)D};
            h5_lock();
            hid_t fs = H5Dget_space(ds);
            herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, all ? start : start + 1, NULL, all ? count : count + 1, NULL);
            hid_t ms = H5Screate_simple(2, count + 1, NULL);
            if (e >= 0) e = H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, model_hidden(m, l));
            H5Sclose(ms);
            H5Sclose(fs);
            h5_unlock();
            if (e < 0) {
                fprintf(stderr, "koe embed: %s: write failed: %s\n", tmp, h5_last_error());
                goto done;
            }
        }
    }
    char kind[32];
    if (all) snprintf(kind, sizeof kind, "layers:all");
    else snprintf(kind, sizeof kind, "layer:%d", layer);
    h5_lock();
    int ok = H5Dclose(ds) >= 0;
    ds = -1;
    ok = ok && h5_write_array(f, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, offset, in.n + 1) >= 0 &&
         h5_write_strings(f, "utt_id", in.id, in.n) >= 0 && h5_attr_write_str(f, "format", EMBED_FORMAT) >= 0 &&
         h5_attr_write_i64(f, "format_version", EMBED_FORMAT_VERSION) >= 0 && h5_attr_write_str(f, "kind", kind) >= 0 &&
         h5_attr_write_f64(f, "frame_rate", ckpt_model_frame_rate(m)) >= 0 && h5_attr_write_i64(f, "dim", D) >= 0 &&
         h5_attr_write_str(f, "checkpoint", ckpt) >= 0;
    ok = (H5Fclose(f) >= 0) && ok;
    f = -1;
    h5_unlock();
    if (!ok) {
        fprintf(stderr, "koe embed: %s: cannot finish the file: %s\n", tmp, h5_last_error());
        goto done;
    }
    if (koe_publish_file(tmp, out, &err) < 0) {
        fprintf(stderr, "koe embed: %s\n", err.msg);
        goto done;
    }
    double dt = koe_now() - t0;
    koe_log("embed: wrote %s (%d utterances, %lld frames, %s; %.1fx real time)", out, in.n, (long long)frames, kind,
            dt > 0 ? audio_s / dt : 0.0);
    rc = KOE_EXIT_OK;
done:
    h5_lock();
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    h5_unlock();
    if (rc != KOE_EXIT_OK) remove(tmp);
    free(wav);
    free(pcm);
    free(offset);
    if (m) {
        ckpt_input_free(&ci);
        model_free(m);
        recipe_free(&r);
    }
    inputs_free(&in);
    if (have_corpus) corpus_close(&c);
    return rc;
}

int cmd_embed(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *corpus = NULL, *layer_s = NULL;
    char **wavs = koe_malloc((size_t)argc * sizeof *wavs);
    int n_wavs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(cmd_embed_help, stdout);
            free(wavs);
            return KOE_EXIT_OK;
        }
        const char **dst = !strcmp(a, "--ckpt") ? &ckpt : !strcmp(a, "--out") ? &out : !strcmp(a, "--corpus") ? &corpus
                         : !strcmp(a, "--layer") ? &layer_s : NULL;
        if (dst && i + 1 < argc) *dst = argv[++i];
        else if (a[0] == '-') {
            fprintf(stderr, "koe embed: unknown option or missing value: %s (see `koe help embed`)\n", a);
            free(wavs);
            return KOE_EXIT_USAGE;
        } else wavs[n_wavs++] = argv[i];
    }
    int layer = -1;
    char *end = NULL;
    if (layer_s && strcmp(layer_s, "all")) {
        errno = 0;
        long v = strtol(layer_s, &end, 10);
        if (errno || *end || v < 0 || v > 100000) layer_s = NULL;
        else layer = (int)v;
    }
    if (!ckpt || !out || !layer_s || (!corpus) == (n_wavs == 0)) {
        fprintf(stderr, "koe embed: --ckpt, --layer N|all (N >= 0), --out and one of --corpus DIR or WAV files are "
                        "required (see `koe help embed`)\n");
        free(wavs);
        return KOE_EXIT_USAGE;
    }
    int rc = KOE_EXIT_OK;
    if (comm_rank() == 0) rc = run(ckpt, layer, out, corpus, wavs, n_wavs);
    comm_bcast(&rc, sizeof rc, 0);
    free(wavs);
    return rc;
}

/* bench_zstd.c — how corpus shards compress and how fast they decode through HDF5, for several
 * zstd levels, against HDF5's own deflate (gzip) filter on the same audio in the same run.
 *   bench_zstd --out DIR [--corpus CORPUS_DIR] [--seconds S] [--levels 1,3,9,19] [--repeat R]
 * Audio: the corpus's utterances (up to S seconds), or, without --corpus, S seconds of generated
 * speech-like audio (voiced harmonics under moving formants, unvoiced noise, pauses).
 * Prints one line per codec: ratio (raw int16 / bytes on disk), encode MB/s, decode MB/s of int16
 * for whole utterances in order and for random 250k-sample crops (median of R runs), and decode
 * speed as a multiple of real time. Not a test: no assertions on time. */
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/common.h"
#include "../../core/rng.h"
#include "../../data/corpus.h"
#include "../../data/h5util.h"
#include "../../data/shard.h"

#define CROP 250000

typedef struct {
    int64_t n_utts;
    int64_t *length;  /* (n_utts) */
    int16_t **pcm;    /* (n_utts) */
    int64_t samples;
} Audio;

/* ---- audio --------------------------------------------------------------------------------- */

static void audio_add(Audio *a, int16_t *pcm, int64_t n) {
    a->length = koe_realloc(a->length, (size_t)(a->n_utts + 1) * sizeof *a->length);
    a->pcm = koe_realloc(a->pcm, (size_t)(a->n_utts + 1) * sizeof *a->pcm);
    a->length[a->n_utts] = n;
    a->pcm[a->n_utts] = pcm;
    a->n_utts++;
    a->samples += n;
}

static void audio_from_corpus(Audio *a, const char *dir, int64_t max_samples) {
    Corpus c;
    KoeError err;
    if (corpus_open(&c, dir, &err) < 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
    for (int64_t u = 0; u < c.n_utts && a->samples < max_samples; u++) {
        int16_t *pcm = koe_malloc((size_t)c.utt_length[u] * sizeof *pcm);
        if (corpus_read(&c, u, 0, c.utt_length[u], pcm, &err) < 0) koe_fatal(KOE_EXIT_USAGE, "%s", err.msg);
        audio_add(a, pcm, c.utt_length[u]);
    }
    corpus_close(&c);
}

/* One resonator (2-pole) per formant over a glottal pulse train or noise: crude, but with speech's
 * spectral tilt, syllable-rate modulation and pauses, which is what the compressor sees. */
static void audio_generate(Audio *a, int64_t max_samples) {
    for (uint64_t u = 0; a->samples < max_samples; u++) {
        KoeRng r = koe_rng(1, u, 0, KOE_RNG_SYNTH);
        int64_t n = 32000 + (int64_t)koe_rng_below(&r, 160000);
        int16_t *pcm = koe_malloc((size_t)n * sizeof *pcm);
        double f0 = 90 + 140 * koe_rng_uniform(&r), phase = 0, gain = 2000 + 4000 * koe_rng_uniform(&r);
        double y1[3] = {0}, y2[3] = {0}, fmt[3] = {500, 1500, 2500};
        int voiced = 1;
        double seg_left = 0;
        for (int64_t t = 0; t < n; t++) {
            if (seg_left <= 0) { /* a new "phone" every 50-200 ms */
                seg_left = 800 + (double)koe_rng_below(&r, 2400);
                int kind = (int)koe_rng_below(&r, 10);
                voiced = kind < 7 ? 1 : kind < 9 ? 0 : -1; /* voiced, fricative, pause */
                fmt[0] = 300 + 600 * koe_rng_uniform(&r);
                fmt[1] = 900 + 1400 * koe_rng_uniform(&r);
                fmt[2] = 2200 + 1000 * koe_rng_uniform(&r);
            }
            seg_left--;
            double src;
            phase += f0 * (1 + 0.05 * sin(t * 3e-4)) / 16000;
            if (voiced == 1) {
                src = phase >= 1 ? 1.0 : 0.0;
                if (phase >= 1) phase -= 1;
                src += 0.02 * koe_rng_normal(&r);
            } else if (voiced == 0) {
                src = 0.3 * koe_rng_normal(&r);
            } else {
                src = 0.002 * koe_rng_normal(&r);
            }
            double out = 0;
            for (int k = 0; k < 3; k++) {
                double rad = 0.97, w = 2 * M_PI * fmt[k] / 16000;
                double y = src + 2 * rad * cos(w) * y1[k] - rad * rad * y2[k];
                y2[k] = y1[k];
                y1[k] = y;
                out += y / (k + 1);
            }
            double v = gain * 0.05 * out * (0.6 + 0.4 * sin(t * 2 * M_PI * 4 / 16000));
            pcm[t] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : lrint(v));
        }
        audio_add(a, pcm, n);
    }
}

/* ---- codecs -------------------------------------------------------------------------------- */

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, koe_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* zstd through the shard writer and reader: exactly what training reads. */
static double write_zstd_shard(const char *path, const Audio *a, int level) {
    KoeError err;
    double t0 = koe_now();
    ShardWriter *w = shard_writer_create_opts(path, NULL, 0, level, SHARD_CHUNK_SAMPLES, &err);
    if (!w) koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    for (int64_t u = 0; u < a->n_utts; u++) {
        char id[32];
        snprintf(id, sizeof id, "u%06lld", (long long)u);
        if (shard_writer_add(w, id, "xx", "", "", a->pcm[u], a->length[u], NULL, 0, &err) < 0)
            koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    }
    if (shard_writer_finish(w, &err) < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
    return koe_now() - t0;
}

/* The deflate reference: the same layout (chunks, shuffle, fletcher32) with HDF5's gzip filter. */
static double write_deflate(const char *path, const Audio *a, int level) {
    double t0 = koe_now();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[1] = {(hsize_t)a->samples}, chunk[1] = {SHARD_CHUNK_SAMPLES};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, (unsigned)level);
    H5Pset_fletcher32(dcpl);
    hid_t d = H5Dcreate2(f, "audio", H5T_STD_I16LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (f < 0 || d < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s: cannot create: %s", path, h5_last_error());
    int16_t *all = koe_malloc((size_t)a->samples * sizeof *all);
    for (int64_t u = 0, o = 0; u < a->n_utts; o += a->length[u], u++)
        memcpy(all + o, a->pcm[u], (size_t)a->length[u] * sizeof *all);
    if (H5Dwrite(d, H5T_NATIVE_INT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, all) < 0)
        koe_fatal(KOE_EXIT_INTERNAL, "%s: write failed: %s", path, h5_last_error());
    free(all);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
    return koe_now() - t0;
}

/* One open audio file: a koe shard read through corpus_shard_read, or the deflate file. */
typedef struct {
    int is_shard;
    CorpusShard shard;
    hid_t f, d;
    int64_t stored;
} Reader;

static void reader_open(Reader *rd, const char *path, int is_shard) {
    KoeError err;
    rd->is_shard = is_shard;
    if (is_shard) {
        if (corpus_shard_open(&rd->shard, path, &err) < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
        rd->stored = corpus_shard_storage_bytes(&rd->shard);
        return;
    }
    rd->f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    rd->d = rd->f >= 0 ? H5Dopen2(rd->f, "audio", H5P_DEFAULT) : -1;
    if (rd->d < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s: cannot open: %s", path, h5_last_error());
    rd->stored = (int64_t)H5Dget_storage_size(rd->d);
}

static void reader_close(Reader *rd) {
    if (rd->is_shard) {
        corpus_shard_close(&rd->shard);
    } else {
        H5Dclose(rd->d);
        H5Fclose(rd->f);
    }
}

/* n samples of utterance u from sample start; off: where u starts in /audio (deflate file). */
static void reader_read(Reader *rd, int64_t u, int64_t off, int64_t start, int64_t n, int16_t *out) {
    KoeError err;
    if (rd->is_shard) {
        if (corpus_shard_read(&rd->shard, u, start, n, out, &err) < 0) koe_fatal(KOE_EXIT_INTERNAL, "%s", err.msg);
        return;
    }
    hsize_t fstart[1] = {(hsize_t)(off + start)}, cnt[1] = {(hsize_t)n};
    hid_t fs = H5Dget_space(rd->d), ms = H5Screate_simple(1, cnt, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, fstart, NULL, cnt, NULL);
    if (H5Dread(rd->d, H5T_NATIVE_INT16, ms, fs, H5P_DEFAULT, out) < 0)
        koe_fatal(KOE_EXIT_INTERNAL, "read failed: %s", h5_last_error());
    H5Sclose(ms);
    H5Sclose(fs);
}

/* Decode speeds in MB/s of int16, median of repeat passes: whole utterances in order (checked
 * against the source), and random crops of up to 250k samples, one per utterance in a random
 * order, as the loader reads. The file is reopened for every pass so that HDF5's chunk cache
 * starts cold (the OS page cache stays warm: this measures decoding, not the disk). */
static void decode_speeds(const char *path, int is_shard, const Audio *a, int repeat, double *seq, double *crop,
                          int64_t *stored) {
    int64_t maxlen = 0;
    int64_t *offs = koe_malloc((size_t)a->n_utts * sizeof *offs), *order = koe_malloc((size_t)a->n_utts * sizeof *order);
    for (int64_t u = 0, off = 0; u < a->n_utts; off += a->length[u], u++) {
        offs[u] = off;
        if (a->length[u] > maxlen) maxlen = a->length[u];
    }
    int16_t *buf = koe_malloc((size_t)maxlen * sizeof *buf);
    double *ts = koe_malloc((size_t)repeat * sizeof *ts), *tc = koe_malloc((size_t)repeat * sizeof *tc);
    Reader rd;
    for (int r = 0; r < repeat; r++) {
        reader_open(&rd, path, is_shard);
        *stored = rd.stored;
        double t0 = koe_now();
        for (int64_t u = 0; u < a->n_utts; u++) {
            reader_read(&rd, u, offs[u], 0, a->length[u], buf);
            if (memcmp(buf, a->pcm[u], (size_t)a->length[u] * sizeof *buf) != 0)
                koe_fatal(KOE_EXIT_INTERNAL, "%s: utterance %lld did not round-trip", path, (long long)u);
        }
        ts[r] = koe_now() - t0;
        reader_close(&rd);

        reader_open(&rd, path, is_shard);
        KoeRng rng = koe_rng(3, (uint64_t)r, 0, KOE_RNG_CROP);
        for (int64_t u = 0; u < a->n_utts; u++) order[u] = u;
        koe_rng_shuffle_i64(&rng, order, a->n_utts);
        int64_t crop_samples = 0;
        t0 = koe_now();
        for (int64_t k = 0; k < a->n_utts; k++) {
            int64_t u = order[k], n = a->length[u] < CROP ? a->length[u] : CROP;
            int64_t start = (int64_t)koe_rng_below(&rng, (uint64_t)(a->length[u] - n + 1));
            reader_read(&rd, u, offs[u], start, n, buf);
            crop_samples += n;
        }
        tc[r] = (koe_now() - t0) / (double)crop_samples; /* seconds per sample */
        reader_close(&rd);
    }
    *seq = (double)a->samples * 2 / 1e6 / median(ts, repeat);
    *crop = 2 / 1e6 / median(tc, repeat);
    free(ts);
    free(tc);
    free(order);
    free(offs);
    free(buf);
}

static void report(const char *name, const Audio *a, int64_t stored, double enc_s, double seq, double crop) {
    double mb = (double)a->samples * 2 / 1e6;
    printf("%-10s ratio %5.3f  encode %7.1f MB/s  decode %7.1f MB/s (%6.0fx real time)  crops %7.1f MB/s\n", name,
           (double)a->samples * 2 / (double)stored, mb / enc_s, seq, seq * 1e6 / 2 / KOE_SAMPLE_RATE, crop);
}

int main(int argc, char **argv) {
    const char *out = NULL, *corpus = NULL, *levels = "1,3,9,19";
    double seconds = 600;
    int repeat = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--corpus") && i + 1 < argc) corpus = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--levels") && i + 1 < argc) levels = argv[++i];
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else koe_fatal(KOE_EXIT_USAGE, "usage: bench_zstd --out DIR [--corpus DIR] [--seconds S] [--levels 1,3,9] "
                                       "[--repeat R] (bad argument '%s')", argv[i]);
    }
    if (!out || seconds <= 0 || repeat < 1) koe_fatal(KOE_EXIT_USAGE, "bench_zstd: --out DIR is required");
    h5_init();
    Audio a = {0};
    int64_t max_samples = (int64_t)(seconds * KOE_SAMPLE_RATE);
    if (corpus)
        audio_from_corpus(&a, corpus, max_samples);
    else
        audio_generate(&a, max_samples);
    printf("audio: %s, %lld utterances, %.1f s, %.1f MB int16; decode is median of %d runs\n",
           corpus ? corpus : "generated speech-like", (long long)a.n_utts, (double)a.samples / KOE_SAMPLE_RATE,
           (double)a.samples * 2 / 1e6, repeat);

    char path[4096], name[32];
    double seq, crop;
    snprintf(path, sizeof path, "%s/bench-deflate.h5", out);
    double enc = write_deflate(path, &a, 6);
    int64_t stored;
    decode_speeds(path, 0, &a, repeat, &seq, &crop, &stored);
    report("deflate-6", &a, stored, enc, seq, crop);
    double ref_seq = seq, ref_ratio = (double)a.samples * 2 / (double)stored;
    remove(path);

    for (const char *p = levels; *p;) {
        char *end;
        long level = strtol(p, &end, 10);
        if (end == p) koe_fatal(KOE_EXIT_USAGE, "bench_zstd: bad --levels '%s'", levels);
        snprintf(path, sizeof path, "%s/bench-zstd-%ld.h5", out, level);
        enc = write_zstd_shard(path, &a, (int)level);
        decode_speeds(path, 1, &a, repeat, &seq, &crop, &stored);
        snprintf(name, sizeof name, "zstd-%ld%s", level, level == SHARD_ZSTD_LEVEL ? "*" : "");
        report(name, &a, stored, enc, seq, crop);
        printf("           vs deflate-6: ratio x%.3f, decode x%.2f\n", (double)a.samples * 2 / (double)stored / ref_ratio,
               seq / ref_seq);
        remove(path);
        p = *end == ',' ? end + 1 : end;
    }
    printf("(* = the default, SHARD_ZSTD_LEVEL)\n");
    for (int64_t u = 0; u < a.n_utts; u++) free(a.pcm[u]);
    free(a.pcm);
    free(a.length);
    return 0;
}

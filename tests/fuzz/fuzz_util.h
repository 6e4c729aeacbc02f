/* fuzz_util.h — what the libFuzzer harnesses in tests/fuzz share (tests/fuzz/README.md): a private
 * scratch directory, the fuzzed bytes written to a file in it (koe's parsers read files; each write
 * is a new inode, published by rename, so HDF5 never mistakes it for a file it still has open), a
 * check that a parser closed every HDF5 object it opened, and the seed-writing hooks of the
 * harnesses whose inputs are HDF5 files (KOE_FUZZ_SEEDS=DIR: write valid inputs there, or copy the
 * valid input made at start there, and exit).
 * Must not: hide a parser's error (an error return is a normal outcome; a crash, a sanitizer report,
 * an exit or an HDF5 object left open is a finding). */
#pragma once
#include <ftw.h>
#include <sys/stat.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/common.h"
#include "../../data/h5util.h"

static char fuzz_dir[256];

static inline int fuzz_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static inline void fuzz_cleanup(void) {
    if (fuzz_dir[0]) nftw(fuzz_dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Once, from LLVMFuzzerInitialize: HDF5 set up as koe sets it up, the scratch directory made. */
static inline void fuzz_init(void) {
    h5_init();
    const char *tmp = getenv("TMPDIR");
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/koe-fuzz.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(fuzz_dir)) {
        perror(fuzz_dir);
        abort();
    }
    atexit(fuzz_cleanup);
}

/* fuzz_dir/name in buf. */
static inline const char *fuzz_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", fuzz_dir, name);
    return buf;
}

/* The bytes as fuzz_dir/name (a new file each time); returns its path (valid until the next call). */
static inline const char *fuzz_write(const char *name, const uint8_t *data, size_t size) {
    static char path[300];
    char tmp[300];
    fuzz_path(path, sizeof path, name);
    snprintf(tmp, sizeof tmp, "%s/.write.tmp", fuzz_dir);
    FILE *f = fopen(tmp, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0 || rename(tmp, path) != 0) {
        perror(path);
        abort();
    }
    return path;
}

/* A parser must close what it opened, on every path: an object left open keeps the file open and
 * would make HDF5 hand the next input's reader the old file. */
static inline void fuzz_check_h5_closed(void) {
    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open != 0) {
        fprintf(stderr, "fuzz: %zd HDF5 objects left open after the parser returned\n", open);
        abort();
    }
}

/* KOE_FUZZ_SEEDS=DIR: call write(DIR) to write valid inputs, then exit (run from tests/fuzz/seeds.sh). */
static inline void fuzz_seed_hook(void (*write)(const char *dir)) {
    const char *dir = getenv("KOE_FUZZ_SEEDS");
    if (!dir || !write) return;
    write(dir);
    exit(0);
}

/* The seed hook of a harness whose valid input is a file it made in the scratch directory at start:
 * KOE_FUZZ_SEEDS=DIR copies fuzz_dir/src to DIR/name, then exits. */
static inline void fuzz_seed_copy(const char *src, const char *name) {
    const char *dir = getenv("KOE_FUZZ_SEEDS");
    if (!dir) return;
    char from[400], to[400];
    fuzz_path(from, sizeof from, src);
    snprintf(to, sizeof to, "%s/%s", dir, name);
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) {
        perror(in ? to : from);
        abort();
    }
    char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, k, out) != k) abort();
    fclose(in);
    if (fclose(out) != 0) abort();
    exit(0);
}

/* The LLVMFuzzerInitialize of a harness that needs nothing else at start: fuzz_init, then the seed
 * hook with seeds (a harness of HDF5 inputs; NULL for one of text inputs, whose seeds are files in
 * tests/fuzz/NAME/). */
#define FUZZ_INITIALIZE(seeds)                                                                             \
    int LLVMFuzzerInitialize(int *argc, char ***argv) {                                                    \
        (void)argc, (void)argv;                                                                            \
        fuzz_init();                                                                                       \
        fuzz_seed_hook(seeds);                                                                             \
        return 0;                                                                                          \
    }

static inline void fuzz_die(const char *what, const KoeError *err) {
    fprintf(stderr, "fuzz setup: %s: %s\n", what, err->msg);
    abort();
}

/* ---- koe prepare's input lists (tsv.c, scp.c) ----------------------------------------------------- */
#include "../../data/prepare.h"

/* The input as the list file name (train.tsv, wav.scp), collected as `koe prepare` does
 * (allow_pipes: --allow-pipes); collecting opens no audio and runs no command. */
static inline void fuzz_prepare_collect(const char *name, int allow_pipes, const uint8_t *data, size_t size) {
    char *inputs[1] = {(char *)fuzz_write(name, data, size)};
    PrepareOptions opt = {.lang = NULL, .lang_from_dir = 1, .allow_pipes = allow_pipes, .shard_bytes = 1 << 20};
    PreparePlan p = {0};
    PrepareRejects rej = {0};
    prepare_collect(&p, inputs, 1, &opt, &rej);
    prepare_plan_free(&p);
    prepare_rejects_free(&rej);
}

/* ---- the small valid files the HDF5 harnesses start from --------------------------------------- */
#include "../../data/shard.h"
#include "../../data/corpus.h"

/* A model of 1140 parameters (a 2-layer conv stack, one 8-wide layer): checkpoints and safetensors
 * a few kB long. */
#define FUZZ_TINY_RECIPE                                                                                   \
    "[model]\nconv_feature_layers = [(8,10,5),(8,3,2)]\nencoder_embed_dim = 8\nencoder_layers = 1\n"       \
    "encoder_attention_heads = 2\nencoder_ffn_embed_dim = 16\nconv_pos = 4\nconv_pos_groups = 2\n"

#define FUZZ_UTTS 3
static const int64_t fuzz_utt_len[FUZZ_UTTS] = {1600, 700, 2300};

/* A shard at path: FUZZ_UTTS utterances, phone alignments, chunks of 512 samples (several chunks per
 * utterance, a few kB in all). */
static inline void fuzz_make_shard(const char *path, const char *id_prefix) {
    char *phones[3] = {"a", "sil", "t"};
    KoeError err;
    ShardWriter *w = shard_writer_create_opts(path, phones, 3, 3, 512, &err);
    if (!w) fuzz_die(path, &err);
    int16_t pcm[2300];
    uint16_t align[2300 / 160];
    for (int u = 0; u < FUZZ_UTTS; u++) {
        int64_t n = fuzz_utt_len[u], nf = n / 160;
        for (int64_t i = 0; i < n; i++) pcm[i] = (int16_t)((i * (u + 3) * 37) % 2000 - 1000);
        for (int64_t f = 0; f < nf; f++) align[f] = f == 0 ? SHARD_NO_PHONE : (uint16_t)((f + u) % 3);
        char id[64];
        snprintf(id, sizeof id, "%s-%d", id_prefix, u);
        if (shard_writer_add(w, id, u == 1 ? "de" : "en", "spk", "src.wav", pcm, n, align, nf, &err) < 0)
            fuzz_die(path, &err);
    }
    if (shard_writer_finish(w, &err) < 0) fuzz_die(path, &err);
}

/* A corpus of two such shards in dir (made if missing): shard-00000.h5, shard-00001.h5, corpus.h5. */
static inline void fuzz_make_corpus(const char *dir) {
    char path[400];
    mkdir(dir, 0755);
    char *names[2] = {"shard-00000.h5", "shard-00001.h5"};
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[s]);
        fuzz_make_shard(path, s ? "b" : "a");
    }
    KoeError err;
    if (corpus_write_index(dir, names, 2, "fuzz corpus", &err) < 0) fuzz_die(dir, &err);
}


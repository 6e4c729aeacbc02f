/* test_shard.c — corpus shards and the corpus index: write/read round trips (audio across chunk
 * boundaries, strings, alignments), and every way a shard or index can be bad: empty ids,
 * a flipped bit in a compressed chunk, truncation, another format, a killed writer's .tmp, a
 * missing shard, a shard whose count disagrees with the index, duplicate ids across shards. */
#include <fcntl.h>
#include <ftw.h>
#include <hdf5.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../core/rng.h"
#include "../../data/corpus.h"
#include "../../data/h5util.h"
#include "../../data/shard.h"

static char tmpdir[256];

static char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

/* Speech-like test audio: a few harmonics with a wandering pitch plus noise, seeded per utterance. */
static int16_t *make_audio(int64_t n, uint64_t utt) {
    int16_t *x = koe_malloc((size_t)n * sizeof *x);
    KoeRng r = koe_rng(7, utt, 0, KOE_RNG_SYNTH);
    double f0 = 100 + 100 * koe_rng_uniform(&r), ph = 0;
    for (int64_t t = 0; t < n; t++) {
        ph += 2 * M_PI * f0 * (1 + 0.1 * sin(t * 2e-4)) / 16000;
        double v = 3000 * sin(ph) + 1500 * sin(2 * ph) + 700 * sin(3 * ph) + 200 * koe_rng_normal(&r);
        x[t] = (int16_t)lrint(v);
    }
    return x;
}

typedef struct {
    const char *id, *lang, *speaker, *source;
    int64_t n, n_align;
} UttSpec;

static const UttSpec utts[] = {
    {"u0", "en", "spk1", "a/u0.wav", 70000, 437},
    {"u1", "de", "spk2", "a/u1.flac", 1, 0},
    {"u2", NULL, NULL, NULL, 150001, 937},
    {"u3", "en", "spk1", "a/u3.wav", 65536, 409},
    {"u4", "fr", "", "b/u4.wav", 12345, 77},
};
#define N_UTTS (int64_t)(sizeof utts / sizeof utts[0])
static char *phones[] = {"sil", "a", "k", "o", "e"};

static uint16_t *make_align(int64_t n, uint64_t utt) {
    uint16_t *a = koe_malloc((size_t)(n ? n : 1) * sizeof *a);
    for (int64_t f = 0; f < n; f++) a[f] = (f % 11 == 10) ? SHARD_NO_PHONE : (uint16_t)((f / 7 + utt) % 5);
    return a;
}

/* Write utts[first, first + count) with ids prefixed by prefix; chunk 0 = the default. */
static void write_shard(const char *path, const char *prefix, int64_t first, int64_t count, int64_t chunk) {
    KoeError err;
    ShardWriter *w = chunk ? shard_writer_create_opts(path, phones, 5, 3, chunk, &err)
                           : shard_writer_create(path, phones, 5, &err);
    if (!w) fail_msg("%s", err.msg);
    for (int64_t i = first; i < first + count; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s%s", prefix, utts[i].id);
        int16_t *pcm = make_audio(utts[i].n, (uint64_t)i);
        uint16_t *al = make_align(utts[i].n_align, (uint64_t)i);
        int rc = shard_writer_add(w, id, utts[i].lang, utts[i].speaker, utts[i].source, pcm, utts[i].n,
                                  utts[i].n_align ? al : NULL, utts[i].n_align, &err);
        if (rc < 0) fail_msg("%s", err.msg);
        free(pcm);
        free(al);
    }
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_true(file_exists(tmp));
    if (shard_writer_finish(w, &err) < 0) fail_msg("%s", err.msg);
    assert_true(file_exists(path));
    assert_false(file_exists(tmp));
}

static void check_shard_contents(CorpusShard *s, const char *prefix, int64_t first, int64_t count) {
    KoeError err;
    assert_int_equal(s->n, count);
    assert_int_equal(s->n_phones, 5);
    int64_t total = 0;
    for (int64_t k = 0; k < count; k++) {
        const UttSpec *u = &utts[first + k];
        char id[64];
        snprintf(id, sizeof id, "%s%s", prefix, u->id);
        assert_string_equal(s->id[k], id);
        assert_string_equal(s->lang[k], u->lang ? u->lang : "und");
        assert_string_equal(s->speaker[k], u->speaker ? u->speaker : "");
        assert_string_equal(s->source[k], u->source ? u->source : "");
        assert_int_equal(s->length[k], u->n);
        total += u->n;
        int16_t *want = make_audio(u->n, (uint64_t)(first + k));
        int16_t *got = koe_malloc((size_t)u->n * sizeof *got);
        if (corpus_shard_read(s, k, 0, u->n, got, &err) < 0) fail_msg("%s", err.msg);
        assert_memory_equal(got, want, (size_t)u->n * sizeof *got);
        /* a crop in the middle, crossing chunk boundaries for the long ones */
        int64_t start = u->n / 3, cnt = u->n - start - u->n / 5;
        memset(got, 0, (size_t)u->n * sizeof *got);
        if (corpus_shard_read(s, k, start, cnt, got, &err) < 0) fail_msg("%s", err.msg);
        assert_memory_equal(got, want + start, (size_t)cnt * sizeof *got);
        /* past the end: refused */
        assert_int_equal(corpus_shard_read(s, k, u->n - 1, 2, got, &err), -1);
        assert_non_null(strstr(err.msg, id));
        free(want);
        free(got);

        uint16_t *al_want = make_align(u->n_align, (uint64_t)(first + k));
        uint16_t al[1000];
        assert_int_equal(corpus_shard_read_align(s, k, NULL, 0, &err), u->n_align);
        assert_int_equal(corpus_shard_read_align(s, k, al, 1000, &err), u->n_align);
        if (u->n_align) assert_memory_equal(al, al_want, (size_t)u->n_align * sizeof *al);
        if (u->n_align > 1) assert_int_equal(corpus_shard_read_align(s, k, al, u->n_align - 1, &err), -1);
        free(al_want);
    }
    assert_int_equal(s->samples, total);
    assert_int_equal(corpus_shard_read(s, count, 0, 1, NULL, &err), -1);
}

static void test_round_trip(void **state) {
    (void)state;
    KoeError err;
    int64_t chunks[] = {0, 1000, 65536 + 17};
    for (int c = 0; c < 3; c++) {
        const char *p = tpath("rt.h5");
        write_shard(p, "", 0, N_UTTS, chunks[c]);
        CorpusShard s;
        if (corpus_shard_open(&s, p, &err) < 0) fail_msg("%s", err.msg);
        check_shard_contents(&s, "", 0, N_UTTS);
        for (int i = 0; i < 5; i++) assert_string_equal(s.phones[i], phones[i]);
        /* int16 speech-like audio compresses */
        assert_true(corpus_shard_storage_bytes(&s) < s.samples * 2);
        corpus_shard_close(&s);
        unlink(p);
    }
}

/* A shard with no utterances (every input of a shard rejected) is still a valid, empty shard. */
static void test_empty_shard(void **state) {
    (void)state;
    KoeError err;
    const char *p = tpath("empty.h5");
    ShardWriter *w = shard_writer_create(p, phones, 5, &err);
    assert_non_null(w);
    if (shard_writer_finish(w, &err) < 0) fail_msg("%s", err.msg);
    CorpusShard s;
    if (corpus_shard_open(&s, p, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.samples, 0);
    assert_int_equal(s.n_phones, 5);
    assert_int_equal(corpus_shard_read(&s, 0, 0, 1, NULL, &err), -1);
    corpus_shard_close(&s);
}

static void test_writer_refuses_bad_utterances(void **state) {
    (void)state;
    KoeError err;
    const char *p = tpath("bad.h5");
    ShardWriter *w = shard_writer_create(p, phones, 5, &err);
    assert_non_null(w);
    int16_t pcm[10] = {0};
    uint16_t al[3] = {0, 9, 1};
    assert_int_equal(shard_writer_add(w, "", "en", "", "", pcm, 10, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "empty id"));
    assert_non_null(strstr(err.msg, p));
    assert_int_equal(shard_writer_add(w, NULL, "en", "", "", pcm, 10, NULL, 0, &err), -1);
    assert_int_equal(shard_writer_add(w, "z", "en", "", "", pcm, 0, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "no samples"));
    assert_int_equal(shard_writer_add(w, "z", "en", "", "", pcm, 10, al, 3, &err), -1);
    assert_non_null(strstr(err.msg, "phone 9"));
    assert_int_equal(shard_writer_utts(w), 0);
    assert_int_equal(shard_writer_bytes(w), 0);
    assert_int_equal(shard_writer_add(w, "z", "en", "", "", pcm, 10, al, 1, &err), 0);
    assert_int_equal(shard_writer_bytes(w), 20);
    shard_writer_abort(w);
    assert_false(file_exists(p));
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    assert_false(file_exists(tmp));

    /* no phone inventory: an alignment is refused */
    w = shard_writer_create(p, NULL, 0, &err);
    assert_non_null(w);
    assert_int_equal(shard_writer_add(w, "z", "en", "", "", pcm, 10, al, 1, &err), -1);
    assert_int_equal(shard_writer_add(w, "z", "en", "", "", pcm, 10, NULL, 0, &err), 0);
    if (shard_writer_finish(w, &err) < 0) fail_msg("%s", err.msg);
    CorpusShard s;
    if (corpus_shard_open(&s, p, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(s.n_phones, 0);
    assert_int_equal(corpus_shard_read_align(&s, 0, al, 3, &err), -1);
    assert_non_null(strstr(err.msg, "no phone alignments"));
    corpus_shard_close(&s);

    /* a directory that does not exist */
    assert_null(shard_writer_create(tpath("nodir/x.h5"), NULL, 0, &err));
    assert_non_null(strstr(err.msg, "nodir/x.h5.tmp"));
}

/* Flip one bit in the middle of the second stored chunk of /audio. */
static void flip_chunk_bit(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, "audio", H5P_DEFAULT);
    assert_true(d >= 0);
    hsize_t off[1];
    unsigned mask;
    haddr_t addr;
    hsize_t size;
    hid_t sp = H5Dget_space(d);
    assert_true(H5Dget_chunk_info(d, sp, 1, off, &mask, &addr, &size) >= 0);
    assert_int_equal(off[0], 65536);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    off_t pos = (off_t)(addr + size / 2);
    assert_int_equal(pread(fd, &b, 1, pos), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, pos), 1);
    close(fd);
}

static void test_bit_flip_detected(void **state) {
    (void)state;
    KoeError err;
    const char *p = tpath("flip.h5");
    write_shard(p, "", 0, N_UTTS, 0);
    flip_chunk_bit(p);
    CorpusShard s;
    if (corpus_shard_open(&s, p, &err) < 0) fail_msg("%s", err.msg);
    /* u0 covers samples [0, 70000): its end lies in chunk 1 (from 65536) */
    int16_t *buf = koe_malloc(70000 * sizeof *buf);
    assert_int_equal(corpus_shard_read(&s, 0, 0, 70000, buf, &err), -1);
    assert_non_null(strstr(err.msg, p));
    assert_non_null(strstr(err.msg, "'u0'"));
    assert_non_null(strstr(err.msg, "damaged"));
    /* a crop of u0 inside the intact chunk 0 is refused too: the whole utterance is checked */
    assert_int_equal(corpus_shard_read(&s, 0, 0, 60000, buf, &err), -1);
    assert_non_null(strstr(err.msg, "'u0'"));
    /* u3 lies in intact chunks and still reads */
    int16_t *want = make_audio(utts[3].n, 3);
    buf = koe_realloc(buf, (size_t)utts[3].n * sizeof *buf);
    assert_int_equal(corpus_shard_read(&s, 3, 0, utts[3].n, buf, &err), 0);
    assert_memory_equal(buf, want, (size_t)utts[3].n * sizeof *buf);
    free(want);
    free(buf);
    corpus_shard_close(&s);
}

static void test_truncated_refused(void **state) {
    (void)state;
    KoeError err;
    const char *p = tpath("trunc.h5");
    write_shard(p, "", 0, N_UTTS, 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    off_t cuts[] = {st.st_size / 2, st.st_size - 1, 100, 0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(truncate(p, cuts[i]), 0);
        CorpusShard s;
        assert_int_equal(corpus_shard_open(&s, p, &err), -1);
        assert_non_null(strstr(err.msg, p));
        assert_non_null(strstr(err.msg, "truncated or corrupt"));
    }
    /* and a file that is not there */
    CorpusShard s;
    assert_int_equal(corpus_shard_open(&s, tpath("missing.h5"), &err), -1);
    assert_non_null(strstr(err.msg, "missing.h5"));
    assert_non_null(strstr(err.msg, "No such file"));
}

static void test_wrong_format_refused(void **state) {
    (void)state;
    KoeError err;
    const char *p = tpath("feats.h5");
    hid_t f = h5_create(p);
    assert_true(f >= 0);
    assert_int_equal(h5_attr_write_str(f, "format", "koe-features"), 0);
    assert_int_equal(h5_attr_write_i64(f, "format_version", 1), 0);
    H5Fclose(f);
    CorpusShard s;
    assert_int_equal(corpus_shard_open(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, p));
    assert_non_null(strstr(err.msg, "expected 'koe-corpus-shard'"));

    /* a newer format_version */
    const char *q = tpath("v3.h5");
    write_shard(q, "", 0, 2, 0);
    f = H5Fopen(q, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_int_equal(h5_attr_write_i64(f, "format_version", SHARD_FORMAT_VERSION + 1), 0);
    H5Fclose(f);
    assert_int_equal(corpus_shard_open(&s, q, &err), -1);
    assert_non_null(strstr(err.msg, "format_version 3"));

    /* version 1 (an older koe's: strings in the global heap, no audio checksums) */
    write_shard(q, "", 0, 2, 0);
    f = H5Fopen(q, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_int_equal(h5_attr_write_i64(f, "format_version", 1), 0);
    H5Fclose(f);
    assert_int_equal(corpus_shard_open(&s, q, &err), -1);
    assert_non_null(strstr(err.msg, "re-run koe prepare"));

    /* another sample rate */
    write_shard(q, "", 0, 2, 0);
    f = H5Fopen(q, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_int_equal(h5_attr_write_i64(f, "sample_rate", 8000), 0);
    H5Fclose(f);
    assert_int_equal(corpus_shard_open(&s, q, &err), -1);
    assert_non_null(strstr(err.msg, "sample_rate is 8000"));

    /* an offset pointing past /audio */
    write_shard(q, "", 0, 2, 0);
    f = H5Fopen(q, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "utt/offset", H5P_DEFAULT);
    int64_t bad[2] = {0, 1 << 30};
    assert_true(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, bad) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    assert_int_equal(corpus_shard_open(&s, q, &err), -1);
    assert_non_null(strstr(err.msg, "'u1'"));
    assert_non_null(strstr(err.msg, "outside /audio"));

    /* not HDF5 at all */
    const char *t = tpath("text.h5");
    FILE *fp = fopen(t, "w");
    fputs("this is not an HDF5 file\n", fp);
    fclose(fp);
    assert_int_equal(corpus_shard_open(&s, t, &err), -1);
    assert_non_null(strstr(err.msg, t));
}

/* Replaces dataset name of shard path by an empty chunked one of n elements of type t (nothing
 * written: the file stays small whatever n claims). */
static void replace_dataset(const char *path, const char *name, hid_t t, hsize_t n) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_true(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hsize_t chunk = 1024;
    hid_t sp = H5Screate_simple(1, &n, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(f, name, t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
}

/* Issue 15: one flipped bit in the metadata. A dataspace claiming 2^36 entries is refused before
 * anything that size is allocated; an /audio type that is a 2-byte signed integer but not
 * little-endian int16 (its bit offset moved) is refused, not decoded wrong. */
static void test_damaged_metadata_refused(void **state) {
    (void)state;
    KoeError err;
    CorpusShard s;
    const char *p = tpath("meta.h5");
    const hsize_t huge = (hsize_t)1 << 36;
    write_shard(p, "", 0, 2, 0);
    replace_dataset(p, "utt/offset", H5T_STD_I64LE, huge);
    assert_int_equal(corpus_shard_open(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, "offset"));
    write_shard(p, "", 0, 2, 0);
    hid_t vs = H5Tcopy(H5T_C_S1);
    H5Tset_size(vs, H5T_VARIABLE);
    replace_dataset(p, "utt/id", vs, huge);
    H5Tclose(vs);
    assert_int_equal(corpus_shard_open(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, "'id'"));
    write_shard(p, "", 0, 2, 0);
    hid_t t = H5Tcopy(H5T_STD_I16LE);
    H5Tset_precision(t, 8);
    H5Tset_offset(t, 8);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    int64_t n = 0;
    assert_int_equal(h5_attr_read_i64(f, p, "samples", &n, &err), 0);
    H5Fclose(f);
    replace_dataset(p, "audio", t, (hsize_t)n);
    H5Tclose(t);
    assert_int_equal(corpus_shard_open(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, "/audio"));
    assert_non_null(strstr(err.msg, "int16"));
}

/* The first HDF5 global heap collection ("GCOL") of a file, or -1. */
static off_t find_gcol(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t i = 0; i + 4 <= n; i++)
        if (!memcmp(buf + i, "GCOL", 4)) return (off_t)i;
    return -1;
}

/* Issue 15: a flipped bit in the HDF5 global heap behind the string tables crashed libhdf5. Strings
 * are now fixed-length, in the dataset (no global heap at all), and a shard as an older koe wrote it
 * (format 1, HDF5's old file format, strings in the global heap) is refused from its first bytes,
 * before libhdf5 parses anything, saying to re-run koe prepare, even with its heap damaged. */
static void test_global_heap_gone(void **state) {
    (void)state;
    KoeError err;
    CorpusShard s;
    const char *p = tpath("heap.h5");
    write_shard(p, "", 0, 2, 0);
    assert_int_equal(find_gcol(p), -1);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    const char *names[] = {"utt/id", "utt/lang", "utt/speaker", "utt/source", "align/phones"};
    for (int i = 0; i < 5; i++) {
        hid_t d = H5Dopen2(f, names[i], H5P_DEFAULT), t = H5Dget_type(d);
        assert_int_equal(H5Tget_class(t), H5T_STRING);
        assert_int_equal(H5Tis_variable_str(t), 0);
        assert_true(h5_has_fletcher32(d));
        H5Tclose(t);
        H5Dclose(d);
    }
    H5Fclose(f);

    /* an older koe's shard: default (superblock 0) file, variable-length ids, its heap damaged */
    const char *old = tpath("v1.h5");
    f = H5Fcreate(old, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t vs = H5Tcopy(H5T_C_S1);
    H5Tset_size(vs, H5T_VARIABLE);
    hsize_t two = 2;
    hid_t sp = H5Screate_simple(1, &two, NULL);
    hid_t d = H5Dcreate2(f, "id", vs, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const char *ids[2] = {"utterance-0", "utterance-1"};
    assert_true(H5Dwrite(d, vs, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids) >= 0);
    assert_int_equal(h5_attr_write_str(f, "format", SHARD_FORMAT), 0);
    assert_int_equal(h5_attr_write_i64(f, "format_version", 1), 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(vs);
    H5Fclose(f);
    off_t gcol = find_gcol(old);
    assert_true(gcol > 0);
    int fd = open(old, O_RDWR);
    unsigned char junk[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(pwrite(fd, junk, 8, gcol + 8), 8); /* the collection's size */
    close(fd);
    assert_int_equal(corpus_shard_open(&s, old, &err), -1);
    assert_non_null(strstr(err.msg, old));
    assert_non_null(strstr(err.msg, "re-run koe prepare"));
}

/* Issue 15: a damaged chunk index made HDF5 return 65,536 zeros in place of a chunk, silently.
 * The chunk index is checksummed now; the per-utterance checksum is the end-to-end check behind
 * it: a whole chunk replaced by zeros through HDF5 itself (so that every HDF5 checksum is valid)
 * is still refused, naming the utterance, and the utterances outside that chunk still read. */
static void test_zeroed_chunk_detected(void **state) {
    (void)state;
    KoeError err;
    const char *p = tpath("zeros.h5");
    write_shard(p, "", 0, N_UTTS, 0);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "audio", H5P_DEFAULT);
    hsize_t start = 65536, count = 65536;
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &count, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
    int16_t *zeros = calloc(count, sizeof *zeros);
    assert_true(H5Dwrite(d, H5T_NATIVE_INT16, ms, fs, H5P_DEFAULT, zeros) >= 0);
    free(zeros);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
    CorpusShard s;
    if (corpus_shard_open(&s, p, &err) < 0) fail_msg("%s", err.msg);
    int16_t *buf = koe_malloc((size_t)utts[2].n * sizeof *buf);
    /* u2 [70001, 220002) covers the zeroed chunk [65536, 131072); a crop outside it still fails */
    assert_int_equal(corpus_shard_read(&s, 2, 100000, 1000, buf, &err), -1);
    assert_non_null(strstr(err.msg, "'u2'"));
    assert_non_null(strstr(err.msg, "checksum"));
    assert_int_equal(corpus_shard_read(&s, 0, 0, utts[0].n, buf, &err), -1);
    assert_non_null(strstr(err.msg, "'u0'"));
    int16_t *want = make_audio(utts[4].n, 4);
    assert_int_equal(corpus_shard_read(&s, 4, 0, utts[4].n, buf, &err), 0);
    assert_memory_equal(buf, want, (size_t)utts[4].n * sizeof *buf);
    free(want);
    free(buf);
    corpus_shard_close(&s);
}

static void test_duplicate_id_in_shard_refused(void **state) {
    (void)state;
    KoeError err;
    const char *p = tpath("dup.h5");
    ShardWriter *w = shard_writer_create(p, NULL, 0, &err);
    int16_t pcm[4] = {1, 2, 3, 4};
    assert_int_equal(shard_writer_add(w, "same", "en", "", "", pcm, 4, NULL, 0, &err), 0);
    assert_int_equal(shard_writer_add(w, "same", "en", "", "", pcm, 4, NULL, 0, &err), 0);
    assert_int_equal(shard_writer_finish(w, &err), 0);
    CorpusShard s;
    assert_int_equal(corpus_shard_open(&s, p, &err), -1);
    assert_non_null(strstr(err.msg, "'same' appears twice"));
}

/* The bytes of file p (malloc'ed; *n their count). */
static char *file_bytes(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    *n = (size_t)ftell(f);
    rewind(f);
    char *b = koe_malloc(*n ? *n : 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* A writer killed before finish leaves NAME.tmp, never NAME, and NAME.tmp is not a shard. The kill is
 * not a child process (a fork after OpenMP's threads started would leave the child waiting for them):
 * what kill -9 leaves is what the writer had handed the kernel, the file's bytes as read now; the
 * writer is then abandoned (shard_writer_abort, which removes NAME.tmp) and those bytes put back. */
static void test_killed_writer_tmp_not_a_shard(void **state) {
    (void)state;
    KoeError err;
    const char *p = tpath("killed.h5");
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    ShardWriter *w = shard_writer_create(p, phones, 5, &err);
    if (!w) fail_msg("%s", err.msg);
    for (int64_t i = 0; i < N_UTTS; i++) {
        int16_t *pcm = make_audio(utts[i].n, (uint64_t)i);
        if (shard_writer_add(w, utts[i].id, "en", "", "", pcm, utts[i].n, NULL, 0, &err) < 0) fail_msg("%s", err.msg);
        free(pcm);
    }
    assert_false(file_exists(p));
    size_t n;
    char *left = file_bytes(tmp, &n);
    shard_writer_abort(w);
    assert_false(file_exists(tmp));
    FILE *f = fopen(tmp, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(left, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    free(left);
    CorpusShard s;
    assert_int_equal(corpus_shard_open(&s, tmp, &err), -1);
    assert_non_null(strstr(err.msg, tmp));
    /* a later writer of the same shard starts over */
    write_shard(p, "", 0, 2, 0);
    assert_false(file_exists(tmp));
    assert_int_equal(corpus_shard_open(&s, p, &err), 0);
    assert_int_equal(s.n, 2);
    corpus_shard_close(&s);
}

/* A corpus of two shards in its own directory: shard-00000 holds utts 0..2, shard-00001 utts 3..4. */
static const char *make_corpus(const char *name) {
    const char *dir = tpath(name);
    assert_int_equal(mkdir(dir, 0755), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/shard-00000.h5", dir);
    write_shard(p, "a-", 0, 3, 0);
    snprintf(p, sizeof p, "%s/shard-00001.h5", dir);
    write_shard(p, "b-", 3, 2, 0);
    char *names[] = {"shard-00000.h5", "shard-00001.h5"};
    KoeError err;
    if (corpus_write_index(dir, names, 2, "koe prepare --test", &err) < 0) fail_msg("%s", err.msg);
    return dir;
}

static void test_corpus_round_trip(void **state) {
    (void)state;
    KoeError err;
    const char *dir = make_corpus("corpus1");
    Corpus c;
    if (corpus_open(&c, dir, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(c.n_shards, 2);
    assert_int_equal(c.n_utts, N_UTTS);
    assert_string_equal(c.settings, "koe prepare --test");
    /* languages sorted: de en fr und */
    assert_int_equal(c.n_langs, 4);
    const char *want_langs[] = {"de", "en", "fr", "und"};
    int64_t want_utts[] = {1, 2, 1, 1};
    double total = 0;
    for (int l = 0; l < 4; l++) {
        assert_string_equal(c.langs[l], want_langs[l]);
        assert_int_equal(c.lang_utts[l], want_utts[l]);
    }
    assert_true(fabs(c.lang_hours[1] - (70000.0 + 65536.0) / 16000 / 3600) < 1e-12);
    for (int64_t u = 0; u < N_UTTS; u++) {
        total += (double)utts[u].n / 16000 / 3600;
        char id[64];
        snprintf(id, sizeof id, "%s%s", u < 3 ? "a-" : "b-", utts[u].id);
        assert_string_equal(corpus_utt_id(&c, u), id);
        assert_int_equal(c.utt_length[u], utts[u].n);
        assert_int_equal(c.utt_shard[u], u < 3 ? 0 : 1);
        assert_int_equal(c.utt_index[u], u < 3 ? u : u - 3);
        assert_string_equal(c.langs[c.utt_lang[u]], utts[u].lang ? utts[u].lang : "und");
        int16_t *want = make_audio(utts[u].n, (uint64_t)u);
        int16_t *got = koe_malloc((size_t)utts[u].n * sizeof *got);
        assert_int_equal(corpus_read(&c, u, 0, utts[u].n, got, &err), 0);
        assert_memory_equal(got, want, (size_t)utts[u].n * sizeof *got);
        free(want);
        free(got);
    }
    assert_true(fabs(c.hours - total) < 1e-12);
    assert_int_equal(corpus_read(&c, N_UTTS, 0, 1, NULL, &err), -1);
    corpus_close(&c);
}

static void test_corpus_missing_shard_refused(void **state) {
    (void)state;
    KoeError err;
    const char *dir = make_corpus("corpus2");
    char p[600];
    snprintf(p, sizeof p, "%s/shard-00001.h5", dir);
    assert_int_equal(unlink(p), 0);
    Corpus c;
    assert_int_equal(corpus_open(&c, dir, &err), -1);
    assert_non_null(strstr(err.msg, "shard-00001.h5"));
    assert_non_null(strstr(err.msg, "No such file"));
}

static void test_corpus_count_mismatch_refused(void **state) {
    (void)state;
    KoeError err;
    const char *dir = make_corpus("corpus3");
    char p[600];
    snprintf(p, sizeof p, "%s/shard-00001.h5", dir);
    write_shard(p, "b-", 3, 1, 0); /* one utterance instead of two */
    Corpus c;
    assert_int_equal(corpus_open(&c, dir, &err), -1);
    assert_non_null(strstr(err.msg, "shard-00001.h5: has 1 utterances"));
    assert_non_null(strstr(err.msg, "re-run koe prepare"));

    /* same count, other content: the per-language table disagrees */
    write_shard(p, "b-", 2, 2, 0); /* utts u2 (und), u3 (en) instead of u3 (en), u4 (fr) */
    assert_int_equal(corpus_open(&c, dir, &err), -1);
    assert_non_null(strstr(err.msg, "corpus.h5: lists 4 languages, the shards have 3"));
    /* the right shards, an index whose hours were changed */
    write_shard(p, "b-", 3, 2, 0);
    assert_int_equal(corpus_open(&c, dir, &err), 0);
    corpus_close(&c);
    snprintf(p, sizeof p, "%s/corpus.h5", dir);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "lang_hours", H5P_DEFAULT);
    double hours[4];
    assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, hours) >= 0);
    hours[0] += 0.5;
    assert_true(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, hours) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    assert_int_equal(corpus_open(&c, dir, &err), -1);
    assert_non_null(strstr(err.msg, "corpus.h5: language 'de' (1 utterances"));
    assert_non_null(strstr(err.msg, "disagrees with the shards"));

    /* no index at all */
    assert_int_equal(corpus_open(&c, tpath("nowhere"), &err), -1);
    assert_non_null(strstr(err.msg, "nowhere/corpus.h5"));

    /* a shard given as the corpus index */
    assert_int_equal(corpus_write_index(dir, (char *[]){"shard-00000.h5", "../x.h5"}, 2, "", &err), -1);
    assert_non_null(strstr(err.msg, "'../x.h5' is not a file name"));
}

static void test_corpus_duplicate_ids_refused(void **state) {
    (void)state;
    KoeError err;
    const char *dir = tpath("corpus4");
    assert_int_equal(mkdir(dir, 0755), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/s0.h5", dir);
    write_shard(p, "", 0, 2, 0);
    snprintf(p, sizeof p, "%s/s1.h5", dir);
    write_shard(p, "", 1, 2, 0); /* u1 again */
    assert_int_equal(corpus_write_index(dir, (char *[]){"s0.h5", "s1.h5"}, 2, "", &err), -1);
    assert_non_null(strstr(err.msg, "'u1'"));
    assert_non_null(strstr(err.msg, "s0.h5"));
    assert_non_null(strstr(err.msg, "s1.h5"));
    snprintf(p, sizeof p, "%s/corpus.h5", dir);
    assert_false(file_exists(p));
    snprintf(p, sizeof p, "%s/corpus.h5.tmp", dir);
    assert_false(file_exists(p));
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int main(void) {
    h5_init();
    const char *base = getenv("KOE_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_shard.XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror(tmpdir);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_shard),
        cmocka_unit_test(test_writer_refuses_bad_utterances),
        cmocka_unit_test(test_bit_flip_detected),
        cmocka_unit_test(test_truncated_refused),
        cmocka_unit_test(test_wrong_format_refused),
        cmocka_unit_test(test_damaged_metadata_refused),
        cmocka_unit_test(test_global_heap_gone),
        cmocka_unit_test(test_zeroed_chunk_detected),
        cmocka_unit_test(test_duplicate_id_in_shard_refused),
        cmocka_unit_test(test_killed_writer_tmp_not_a_shard),
        cmocka_unit_test(test_corpus_round_trip),
        cmocka_unit_test(test_corpus_missing_shard_refused),
        cmocka_unit_test(test_corpus_count_mismatch_refused),
        cmocka_unit_test(test_corpus_duplicate_ids_refused),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

/* test_labels.c — label sets (data/labels.h): write/read round trip over two shards, and every
 * refusal the trainer relies on: a missing shard file, labels made for another corpus
 * (fingerprint), durations off by more than 0.1 s, two `koe label` runs mixed, another format,
 * /offset disagreeing with /labels, a label >= n_classes in a damaged file, a bad set name. */
#include <fcntl.h>
#include <ftw.h>
#include <hdf5.h>
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

#include "../../data/corpus.h"
#include "../../data/h5util.h"
#include "../../data/labels.h"
#include "../../data/shard.h"

static char tmpdir[256];

/* Two shards: lengths in samples; utterance ids prefix + index. */
static const int64_t LEN[5] = {16000, 8000, 32000, 12000, 4000};

static const char *make_corpus(const char *name, const char *prefix) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    assert_int_equal(mkdir(dir, 0755), 0);
    KoeError err;
    for (int s = 0; s < 2; s++) {
        char p[600];
        snprintf(p, sizeof p, "%s/shard-%05d.h5", dir, s);
        ShardWriter *w = shard_writer_create(p, NULL, 0, &err);
        if (!w) fail_msg("%s", err.msg);
        for (int i = s ? 3 : 0; i < (s ? 5 : 3); i++) {
            int16_t *pcm = calloc((size_t)LEN[i], sizeof(int16_t));
            for (int64_t k = 0; k < LEN[i]; k++) pcm[k] = (int16_t)((k * 37 + i) % 2000 - 1000);
            char id[32];
            snprintf(id, sizeof id, "%s%d", prefix, i);
            if (shard_writer_add(w, id, "en", "spk", "", pcm, LEN[i], NULL, 0, &err) < 0) fail_msg("%s", err.msg);
            free(pcm);
        }
        if (shard_writer_finish(w, &err) < 0) fail_msg("%s", err.msg);
    }
    char *names[] = {"shard-00000.h5", "shard-00001.h5"};
    if (corpus_write_index(dir, names, 2, "test", &err) < 0) fail_msg("%s", err.msg);
    return dir;
}

/* make_corpus, opened into c. */
static void open_new_corpus(Corpus *c, const char *name, const char *prefix) {
    KoeError err;
    if (corpus_open(c, make_corpus(name, prefix), &err) < 0) fail_msg("%s", err.msg);
}

/* The path of label set set's file of shard s in p. */
static const char *label_file(char *p, size_t n, const Corpus *c, const char *set, int s) {
    snprintf(p, n, "%s/labels/%s/shard-%05d.h5", c->dir, set, s);
    return p;
}

static LabelSetInfo info_k(int k) {
    LabelSetInfo info;
    memset(&info, 0, sizeof info);
    info.n_classes = k;
    info.frame_rate = 50;
    snprintf(info.source, sizeof info.source, "layer:6");
    snprintf(info.kmeans_checksum, sizeof info.kmeans_checksum, "0123456789abcdef");
    snprintf(info.ckpt_checksum, sizeof info.ckpt_checksum, "fedcba9876543210");
    return info;
}

/* Label utterance u frame f as (u * 7 + f) % k; frames = n / 320 + extra_frames on utterance 0. */
static void write_set(const Corpus *c, const char *name, int k, int shard_k1, int extra_frames) {
    KoeError err;
    if (labels_make_dir(c->dir, name, &err) < 0) fail_msg("%s", err.msg);
    int64_t u0 = 0;
    for (int si = 0; si < c->n_shards; si++) {
        const CorpusShard *s = &c->shards[si];
        int64_t *off = calloc((size_t)s->n + 1, sizeof(int64_t));
        for (int64_t i = 0; i < s->n; i++)
            off[i + 1] = off[i] + s->length[i] / 320 + (u0 + i == 0 ? extra_frames : 0);
        uint16_t *lab = calloc((size_t)off[s->n] + 1, sizeof(uint16_t));
        const int kk = si == 1 && shard_k1 ? shard_k1 : k;
        for (int64_t i = 0; i < s->n; i++)
            for (int64_t f = off[i]; f < off[i + 1]; f++) lab[f] = (uint16_t)(((u0 + i) * 7 + (f - off[i])) % kk);
        LabelSetInfo info = info_k(kk);
        if (labels_write_shard(c->dir, name, s, &info, lab, off, &err) < 0) fail_msg("%s", err.msg);
        free(off);
        free(lab);
        u0 += s->n;
    }
}

static void expect_refused(const Corpus *c, const char *name, const char *needle) {
    LabelSet ls;
    KoeError err;
    assert_int_equal(labelset_open(&ls, c, name, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void test_round_trip(void **state) {
    (void)state;
    Corpus c;
    KoeError err;
    open_new_corpus(&c, "c1", "u");
    write_set(&c, "km", 500, 0, 0);
    LabelSet ls;
    if (labelset_open(&ls, &c, "km", &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(ls.info.n_classes, 500);
    assert_true(ls.info.frame_rate == 50);
    assert_string_equal(ls.info.source, "layer:6");
    assert_string_equal(ls.info.kmeans_checksum, "0123456789abcdef");
    assert_string_equal(ls.info.ckpt_checksum, "fedcba9876543210");
    int32_t buf[200];
    for (int64_t u = 0; u < c.n_utts; u++) {
        assert_int_equal(labelset_read(&ls, u, NULL, 0, &err), LEN[u] / 320);
        int64_t n = labelset_read(&ls, u, buf, 200, &err);
        assert_int_equal(n, LEN[u] / 320);
        for (int64_t f = 0; f < n; f++) assert_int_equal(buf[f], (u * 7 + f) % 500);
    }
    assert_int_equal(labelset_read(&ls, 2, buf, 10, &err), -1); /* more frames than cap */
    labelset_close(&ls);
    /* the label files sit beside, never inside, the shards */
    char p[700], tmp[720];
    assert_int_equal(access(label_file(p, sizeof p, &c, "km", 1), F_OK), 0);
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    assert_int_equal(access(tmp, F_OK), -1);
    corpus_close(&c);
}

static void test_refusals(void **state) {
    (void)state;
    Corpus c, other;
    KoeError err;
    open_new_corpus(&c, "c2", "u");
    open_new_corpus(&other, "c3", "v");
    assert_true(labels_shard_fingerprint(&c.shards[0]) != labels_shard_fingerprint(&other.shards[0]));
    assert_true(labels_shard_fingerprint(&c.shards[0]) != labels_shard_fingerprint(&c.shards[1]));

    expect_refused(&c, "nothing", "no such label set");
    /* labels of another corpus copied in: fingerprint mismatch */
    write_set(&other, "foreign", 100, 0, 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/labels && cp -r %s/labels/foreign %s/labels/", c.dir, other.dir, c.dir);
    assert_int_equal(system(cmd), 0);
    expect_refused(&c, "foreign", "another corpus shard");
    /* a missing shard file */
    write_set(&c, "missing", 100, 0, 0);
    assert_int_equal(unlink(label_file(cmd, sizeof cmd, &c, "missing", 1)), 0);
    expect_refused(&c, "missing", "missing");
    /* 0.2 s too many frames on utterance 0 (10 frames at 50 Hz); 0.08 s is accepted */
    write_set(&c, "long", 100, 0, 10);
    expect_refused(&c, "long", "label frames");
    write_set(&c, "ok4", 100, 0, 4);
    LabelSet ls;
    if (labelset_open(&ls, &c, "ok4", &err) < 0) fail_msg("%s", err.msg);
    labelset_close(&ls);
    /* two runs mixed: n_classes differ between the shards */
    write_set(&c, "mixed", 100, 50, 0);
    expect_refused(&c, "mixed", "mixes two");
    /* bad name */
    expect_refused(&c, "../x", "not a plain name");

    /* tampering with a good set's file */
    write_set(&c, "t", 100, 0, 0);
    hid_t f = H5Fopen(label_file(cmd, sizeof cmd, &c, "t", 0), H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, "labels", H5P_DEFAULT);
    uint16_t big = 100; /* == n_classes */
    hsize_t start[1] = {3}, count[1] = {1};
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, count, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    assert_true(H5Dwrite(d, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, &big) >= 0);
    H5Sclose(ms), H5Sclose(fs), H5Dclose(d), H5Fclose(f);
    if (labelset_open(&ls, &c, "t", &err) < 0) fail_msg("%s", err.msg);
    int32_t buf[200];
    assert_int_equal(labelset_read(&ls, 0, buf, 200, &err), -1);
    assert_non_null(strstr(err.msg, ">= n_classes"));
    assert_int_equal(labelset_read(&ls, 1, buf, 200, &err), LEN[1] / 320); /* the others still read */
    labelset_close(&ls);
    /* another format */
    f = H5Fopen(cmd, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "format");
    assert_int_equal(h5_attr_write_str(f, "format", "koe-features"), 0);
    H5Fclose(f);
    expect_refused(&c, "t", "koe-labels");
    /* /offset that does not end at the length of /labels */
    write_set(&c, "off", 100, 0, 0);
    f = H5Fopen(label_file(cmd, sizeof cmd, &c, "off", 1), H5F_ACC_RDWR, H5P_DEFAULT);
    d = H5Dopen2(f, "offset", H5P_DEFAULT);
    int64_t off[3];
    assert_true(H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off) >= 0);
    off[2] += 1;
    assert_true(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off) >= 0);
    H5Dclose(d), H5Fclose(f);
    expect_refused(&c, "off", "/offset runs");
    corpus_close(&c);
    corpus_close(&other);
}

/* Issue 15: a label changed to another valid class went unnoticed. A label file's /labels carries
 * fletcher32 checksums: one flipped bit in the stored labels (the value stays < n_classes) is an
 * error naming the file, and a label file without checksums (as an older koe wrote) is refused. */
static void test_flipped_label_detected(void **state) {
    (void)state;
    Corpus c;
    KoeError err;
    open_new_corpus(&c, "c4", "u");
    write_set(&c, "flip", 500, 0, 0);
    char p[700];
    hid_t f = H5Fopen(label_file(p, sizeof p, &c, "flip", 0), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "labels", H5P_DEFAULT), sp = H5Dget_space(d);
    hsize_t off[1], size;
    unsigned mask;
    haddr_t addr;
    assert_true(H5Dget_chunk_info(d, sp, 0, off, &mask, &addr, &size) >= 0);
    H5Sclose(sp), H5Dclose(d), H5Fclose(f);
    int fd = open(p, O_RDWR);
    uint16_t v;
    assert_int_equal(pread(fd, &v, 2, (off_t)addr + 6), 2); /* frame 3 of utterance 0: (0 * 7 + 3) % 500 */
    assert_int_equal(v, 3);
    v ^= 0x4; /* 7: another valid class */
    assert_int_equal(pwrite(fd, &v, 2, (off_t)addr + 6), 2);
    close(fd);
    LabelSet ls;
    int32_t buf[200];
    if (labelset_open(&ls, &c, "flip", &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(labelset_read(&ls, 0, buf, 200, &err), -1);
    assert_non_null(strstr(err.msg, p));
    labelset_close(&ls);

    /* without checksums: /labels rewritten contiguous, in HDF5's old format (superblock 0) */
    write_set(&c, "old", 500, 0, 0);
    label_file(p, sizeof p, &c, "old", 1);
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "h5repack -l labels:CONTIG -f labels:NONE %s %s.re && mv %s.re %s", p, p, p, p);
    assert_int_equal(system(cmd), 0);
    expect_refused(&c, "old", "checksums");
    corpus_close(&c);
}

static void test_checksum(void **state) {
    (void)state;
    char p[600], a[17], b[17];
    KoeError err;
    snprintf(p, sizeof p, "%s/f.bin", tmpdir);
    FILE *fp = fopen(p, "wb");
    fputs("hello", fp);
    fclose(fp);
    assert_int_equal(koe_file_checksum(p, a, &err), 0);
    assert_string_equal(a, "a430d84680aabd0b"); /* FNV-1a 64 of "hello" */
    fp = fopen(p, "ab");
    fputs("!", fp);
    fclose(fp);
    assert_int_equal(koe_file_checksum(p, b, &err), 0);
    assert_string_not_equal(a, b);
    snprintf(p, sizeof p, "%s/none", tmpdir);
    assert_int_equal(koe_file_checksum(p, a, &err), -1);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int main(void) {
    h5_init();
    const char *base = getenv("KOE_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_labels.XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_flipped_label_detected),
        cmocka_unit_test(test_checksum),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

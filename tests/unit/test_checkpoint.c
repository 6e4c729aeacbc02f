/* test_checkpoint.c — training checkpoints through the path `koe train` takes: ckpt_save and
 * ckpt_load (distributed/ckpt.c) at world size 1 over data/checkpoint.c's files and
 * distributed/rundir.c's run directory. A full round trip of /model, /optim, /state and /config;
 * /optim written in slices (as ZeRO ranks do) equals the whole and the checksums add up; the encoder
 * reader takes a subset table and still verifies the whole /model; a flipped byte in any tensor
 * group is caught by its checksum, and a run whose only checkpoint is damaged stops rather than
 * starting afresh; the run directory: latest is followed, a corrupt or missing latest falls back to
 * the previous checkpoint, a half-written .tmp is never taken for a checkpoint, keep_last prunes the
 * oldest; a checkpoint from before log_sums grew to CHECKPOINT_LOG_SUMS still resumes. */
#include <fcntl.h>
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

#include "../../core/common.h"
#include "../../core/params.h"
#include "../../core/rng.h"
#include "../../data/checkpoint.h"
#include "../../data/h5util.h"
#include "../../distributed/ckpt.h"
#include "../../distributed/comm.h"
#include "../../distributed/rundir.h"

static char dir[256];

static void table(ParamTable *t) {
    params_table_init(t);
    params_add(t, "a.weight", 2, (int64_t[]){7, 5}, PARAM_INIT_NORMAL, 1, 0);
    params_add(t, "a.bias", 1, (int64_t[]){7}, PARAM_INIT_ZERO, 0, 0);
    params_add(t, "b.weight", 3, (int64_t[]){3, 2, 4}, PARAM_INIT_UNIFORM, -1, 1);
}

static void fill(float *x, int64_t n, uint64_t key) {
    KoeRng r = koe_rng(5, key, 0, KOE_RNG_NOISE);
    for (int64_t i = 0; i < n; i++) x[i] = (float)koe_rng_normal(&r);
}

static TrainState state_for(int64_t step) {
    TrainState s = {step, step / 3, step + 1, 42, step - 1, 1, 0, step, 1.5 - 0.01 * (double)step, {0}};
    for (int i = 0; i < CHECKPOINT_LOG_SUMS; i++) s.log_sums[i] = (double)(step * 100 + i) / 7.0;
    return s;
}

/* Write a training checkpoint for `step` into dir with buffers keyed by step, as `koe train` does. */
static void save(const ParamTable *t, int64_t step, int keep_last) {
    const int64_t n = t->total;
    float *p = malloc((size_t)n * sizeof *p), *m = malloc((size_t)n * sizeof *m), *v = malloc((size_t)n * sizeof *v);
    fill(p, n, (uint64_t)step * 3), fill(m, n, (uint64_t)step * 3 + 1), fill(v, n, (uint64_t)step * 3 + 2);
    TrainState st = state_for(step);
    char cfg[64];
    snprintf(cfg, sizeof cfg, "[run]\nseed = %lld\n", (long long)step);
    ckpt_save(dir, t, p, m, v, 0, n, cfg, &st, keep_last);
    free(p), free(m), free(v);
}

/* Resume from the run directory as `koe train` does; returns the step loaded (no checkpoint at all:
 * -2) and checks the buffers are those save() wrote for it. */
static int64_t load(const ParamTable *t) {
    const int64_t n = t->total;
    float *p = malloc((size_t)n * sizeof *p), *m = malloc((size_t)n * sizeof *m), *v = malloc((size_t)n * sizeof *v);
    float *q = malloc((size_t)n * sizeof *q);
    TrainState st;
    char *cfg = NULL, path[512];
    int rc = ckpt_load(dir, t, p, m, v, 0, n, &st, &cfg, path, sizeof path);
    int64_t step = rc == 1 ? st.step : -2;
    if (rc == 1) {
        TrainState want = state_for(st.step);
        assert_memory_equal(&st, &want, sizeof st);
        fill(q, n, (uint64_t)step * 3);
        assert_memory_equal(p, q, (size_t)n * sizeof *q);
        fill(q, n, (uint64_t)step * 3 + 1);
        assert_memory_equal(m, q, (size_t)n * sizeof *q);
        fill(q, n, (uint64_t)step * 3 + 2);
        assert_memory_equal(v, q, (size_t)n * sizeof *q);
        char want_cfg[64];
        snprintf(want_cfg, sizeof want_cfg, "[run]\nseed = %lld\n", (long long)step);
        assert_string_equal(cfg, want_cfg);
        char want_path[512];
        rundir_step_path(want_path, sizeof want_path, dir, step);
        assert_string_equal(path, want_path);
    }
    free(cfg), free(p), free(m), free(v), free(q);
    return step;
}

static jmp_buf fatal_jump;
static void fatal_to_test(int code) { longjmp(fatal_jump, code); }

/* ckpt_load where checkpoints exist but none is usable: the run stops (koe_fatal). Its fatal hook
 * jumps back here (no child process: a fork after OpenMP's threads started would leave the child
 * waiting for them in checkpoint_sum's parallel loop); checks the exit code was KOE_EXIT_USAGE, and
 * returns what it wrote on stderr (malloc'ed). */
static char *load_refused(const ParamTable *t) {
    char log[300];
    snprintf(log, sizeof log, "%s.stderr", dir);
    fflush(stderr);
    const int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644), saved = dup(2);
    assert_true(fd >= 0 && saved >= 0 && dup2(fd, 2) == 2);
    close(fd);
    const int64_t n = t->total;
    float *p = malloc((size_t)n * 3 * sizeof *p);
    TrainState st;
    char *cfg = NULL, path[512];
    koe_set_fatal_hook(fatal_to_test);
    volatile int code = setjmp(fatal_jump);
    if (code == 0) {
        ckpt_load(dir, t, p, p + n, p + 2 * n, 0, n, &st, &cfg, path, sizeof path);
        code = -1; /* it returned: the run would have gone on */
    }
    koe_set_fatal_hook(NULL);
    free(p);
    free(cfg);
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    FILE *fp = fopen(log, "r");
    assert_non_null(fp);
    char *text = calloc(1, 65536);
    size_t got = fread(text, 1, 65535, fp);
    text[got] = 0;
    fclose(fp);
    remove(log);
    if (code != KOE_EXIT_USAGE)
        fail_msg("ckpt_load should stop the run with exit code %d; got %d (-1: it returned), stderr:\n%s",
                 KOE_EXIT_USAGE, code, text);
    return text;
}

/* Flip one byte of dataset `name`'s stored data (contiguous layout) at element `elem`. */
static void flip_byte(const char *path, const char *name, int64_t elem) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(ds >= 0);
    haddr_t off = H5Dget_offset(ds);
    assert_true(off != HADDR_UNDEF);
    H5Dclose(ds);
    H5Fclose(f);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    long at = (long)off + (long)(elem * 4) + 1;
    assert_int_equal(fseek(fp, at, SEEK_SET), 0);
    int c = fgetc(fp);
    assert_int_equal(fseek(fp, at, SEEK_SET), 0);
    fputc(c ^ 0x10, fp);
    fclose(fp);
}

static void fresh_dir(void) {
    snprintf(dir, sizeof dir, "%s/koe_ckpt_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(dir));
}

static void rm_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_round_trip(void **state) {
    (void)state;
    ParamTable t;
    table(&t);
    fresh_dir();
    assert_int_equal(load(&t), -2); /* empty directory: nothing to resume */
    save(&t, 10, 3);
    assert_int_equal(load(&t), 10);
    /* a model-only reader sees the same tensors */
    char path[512];
    rundir_step_path(path, sizeof path, dir, 10);
    float *p = malloc((size_t)t.total * sizeof *p), *q = malloc((size_t)t.total * sizeof *q);
    KoeError err;
    assert_int_equal(checkpoint_read_params(path, &t, p, &err), 0);
    fill(q, t.total, 30);
    assert_memory_equal(p, q, (size_t)t.total * sizeof *q);
    free(p), free(q);
    rm_dir();
    params_table_free(&t);
}

/* The encoder reader takes a subset table (a training checkpoint holds the head too), still verifies
 * the whole /model group, and the strict reader refuses the extra tensor. */
static void test_encoder_subset(void **state) {
    (void)state;
    ParamTable t, sub;
    table(&t);
    params_table_init(&sub);
    params_add(&sub, "a.weight", 2, (int64_t[]){7, 5}, PARAM_INIT_NORMAL, 1, 0);
    params_add(&sub, "a.bias", 1, (int64_t[]){7}, PARAM_INIT_ZERO, 0, 0);
    fresh_dir();
    save(&t, 5, 3);
    char path[512];
    rundir_step_path(path, sizeof path, dir, 5);
    float *p = malloc((size_t)sub.total * sizeof *p), *q = malloc((size_t)t.total * sizeof *q);
    KoeError err;
    if (checkpoint_read_encoder(path, &sub, p, &err) < 0) fail_msg("%s", err.msg);
    fill(q, t.total, 15);
    assert_memory_equal(p, q, (size_t)sub.total * sizeof *p);
    assert_int_equal(checkpoint_read_params(path, &sub, p, &err), -1);
    assert_non_null(strstr(err.msg, "b.weight"));
    flip_byte(path, "/model/b.weight", 1); /* a tensor the subset does not read */
    assert_int_equal(checkpoint_read_encoder(path, &sub, p, &err), -1);
    assert_non_null(strstr(err.msg, "checksum"));
    /* and a deleted checksum does not let the flip through */
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0 && H5Adelete_by_name(f, "model", "checksum", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    assert_int_equal(checkpoint_read_encoder(path, &sub, p, &err), -1);
    assert_non_null(strstr(err.msg, "/model has no checksum"));
    free(p), free(q);
    rm_dir();
    params_table_free(&sub);
    params_table_free(&t);
}

static void test_checksums_catch_flips(void **state) {
    (void)state;
    ParamTable t;
    table(&t);
    const char *groups[] = {"/model/b.weight", "/optim/m", "/optim/v"};
    const char *want[] = {"/model", "/optim/m", "/optim/v"};
    for (int k = 0; k < 3; k++) {
        fresh_dir();
        save(&t, 7, 3);
        char path[512];
        rundir_step_path(path, sizeof path, dir, 7);
        flip_byte(path, groups[k], 3);
        /* the only checkpoint is damaged: resume refuses rather than starting afresh, naming the group */
        char *text = load_refused(&t);
        if (!strstr(text, "checksum") || !strstr(text, want[k]) || !strstr(text, "none is usable"))
            fail_msg("unexpected message: %s", text);
        free(text);
        rm_dir();
    }
    params_table_free(&t);
}

/* A checkpoint from a koe whose /state/log_sums had 12 entries (its checksum over those 12) resumes:
 * the 12 are read, the rest are zero. The file is made by rewriting a current one, the checksum as
 * data/checkpoint.c takes it: FNV-1a 64 (koe_fnv1a) over the 8 int64 attributes, the sums, gumbel_temp. */

static void test_old_log_sums(void **state) {
    (void)state;
    ParamTable t;
    table(&t);
    fresh_dir();
    save(&t, 12, 3);
    char path[512], hex[17];
    rundir_step_path(path, sizeof path, dir, 12);
    TrainState st = state_for(12);
    const int64_t f[8] = {st.step, st.epoch, st.consumed, (int64_t)st.seed, st.adam_t, st.skipped, st.skips_in_row,
                          st.sched_step};
    uint64_t h = koe_fnv1a(KOE_FNV_OFFSET, f, sizeof f);
    h = koe_fnv1a(koe_fnv1a(h, st.log_sums, 12 * sizeof(double)), &st.gumbel_temp, sizeof st.gumbel_temp);
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), g = H5Gopen2(file, "state", H5P_DEFAULT);
    assert_true(file >= 0 && g >= 0);
    assert_true(H5Ldelete(g, "log_sums", H5P_DEFAULT) >= 0 && H5Adelete(g, "checksum") >= 0);
    assert_int_equal(h5_write_array(g, "log_sums", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, st.log_sums, 12), 0);
    assert_int_equal(h5_attr_write_str(g, "checksum", hex), 0);
    H5Gclose(g);
    H5Fclose(file);
    const int64_t n = t.total;
    float *p = malloc((size_t)n * 3 * sizeof *p);
    TrainState got;
    char *cfg = NULL, where[512];
    assert_int_equal(ckpt_load(dir, &t, p, p + n, p + 2 * n, 0, n, &got, &cfg, where, sizeof where), 1);
    for (int i = 12; i < CHECKPOINT_LOG_SUMS; i++) st.log_sums[i] = 0;
    assert_memory_equal(&got, &st, sizeof st);
    free(p), free(cfg);
    rm_dir();
    params_table_free(&t);
}

/* checkpoint_sum is the element-by-element definition (checkpoint.h: the sum mod 2^64 over i of
 * hash(hash(first + i + c) ^ bits of v[i])), written out here as a plain loop, for lengths below and
 * above its serial limit, odd starts and lengths that leave a partial vector; so checkpoints written
 * before it ran in vector lanes still verify. */
static void test_sum_definition(void **state) {
    (void)state;
    const int64_t n = 200003;
    float *v = malloc((size_t)n * sizeof *v);
    fill(v, n, 77);
    v[5] = -0.0f, v[6] = 0.0f, v[7] = 1.0f / 0.0f; /* bits, not values, are hashed */
    const int64_t cases[][2] = {{0, 0}, {0, 1}, {3, 35}, {1000, 4097}, {0, 65535}, {0, 65536}, {17, 131071}, {0, n}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int64_t first = cases[k][0] * 7919 + 11, off = cases[k][0] % 5, len = cases[k][1] - off;
        uint64_t want = 0;
        for (int64_t i = 0; i < len; i++) {
            uint32_t bits;
            memcpy(&bits, &v[off + i], sizeof bits);
            want += koe_hash64(koe_hash64((uint64_t)(first + i) + 0x632BE59BD9B4E019ULL) ^ bits);
        }
        assert_true(checkpoint_sum(v + off, first, len) == want);
    }
    free(v);
}

/* /optim written in slices by separate writer calls (as ZeRO ranks do) reads back as the whole, and
 * the slices' checksums add up to the stored one. */
static void test_optim_slices(void **state) {
    (void)state;
    ParamTable t;
    table(&t);
    fresh_dir();
    const int64_t n = t.total, cut = n / 3;
    float *p = malloc((size_t)n * sizeof *p), *m = malloc((size_t)n * sizeof *m), *v = malloc((size_t)n * sizeof *v);
    fill(p, n, 1), fill(m, n, 2), fill(v, n, 3);
    char path[512];
    rundir_step_path(path, sizeof path, dir, 3);
    KoeError err;
    CheckpointWriter *w = checkpoint_writer_open(path, &t, 1, &err);
    if (!w) fail_msg("%s", err.msg);
    for (int i = 0; i < t.n; i++) assert_int_equal(checkpoint_writer_tensor(w, i, p + t.e[i].offset, &err), 0);
    assert_int_equal(checkpoint_writer_optim(w, 0, cut, n - cut, m + cut, &err), 0);
    assert_int_equal(checkpoint_writer_optim(w, 0, 0, cut, m, &err), 0);
    assert_int_equal(checkpoint_writer_optim(w, 1, 0, n, v, &err), 0);
    assert_true(checkpoint_writer_sums(w)[1] == checkpoint_sum(m, 0, n));
    TrainState st = state_for(3), got;
    if (checkpoint_writer_finish(w, "[run]\n", &st, &err) < 0) fail_msg("%s", err.msg);
    float *q = malloc((size_t)n * 3 * sizeof *q);
    uint64_t total[2] = {0, 0};
    for (int64_t s0 = 0; s0 < n; s0 += cut) { /* read back in other slices than were written */
        const int64_t s1 = s0 + cut < n ? s0 + cut : n;
        uint64_t sums[2], stored[2];
        char *cfg = NULL;
        if (checkpoint_read_train_slice(path, &t, q + n + s0, q + 2 * n + s0, s0, s1, &got, &cfg, sums, stored, &err) <
            0)
            fail_msg("%s", err.msg);
        assert_true(stored[0] == checkpoint_sum(m, 0, n) && stored[1] == checkpoint_sum(v, 0, n));
        total[0] += sums[0], total[1] += sums[1];
        free(cfg);
    }
    assert_true(total[0] == checkpoint_sum(m, 0, n) && total[1] == checkpoint_sum(v, 0, n));
    if (checkpoint_read_params(path, &t, q, &err) < 0) fail_msg("%s", err.msg);
    assert_memory_equal(q, p, (size_t)n * sizeof *p);
    assert_memory_equal(q + n, m, (size_t)n * sizeof *m);
    assert_memory_equal(q + 2 * n, v, (size_t)n * sizeof *v);
    assert_memory_equal(&got, &st, sizeof st);
    free(p), free(m), free(v), free(q);
    rm_dir();
    params_table_free(&t);
}

static void test_fallback_and_keep_last(void **state) {
    (void)state;
    ParamTable t;
    table(&t);
    fresh_dir();
    for (int64_t s = 10; s <= 40; s += 10) save(&t, s, 3);
    char path[512];
    rundir_step_path(path, sizeof path, dir, 10);
    assert_int_equal(access(path, F_OK), -1); /* keep_last 3: step 10 pruned */
    assert_int_equal(load(&t), 40);
    /* a half-written newer checkpoint (killed writer) is ignored */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/step-00000050.h5.tmp", dir);
    FILE *fp = fopen(tmp, "w");
    fputs("partial", fp);
    fclose(fp);
    assert_int_equal(load(&t), 40);
    /* corrupt latest: fall back to the one before */
    rundir_step_path(path, sizeof path, dir, 40);
    flip_byte(path, "/optim/v", 0);
    assert_int_equal(load(&t), 30);
    /* truncated step file (half-written under its final name by a broken filesystem) */
    rundir_step_path(path, sizeof path, dir, 30);
    assert_int_equal(truncate(path, 100), 0);
    assert_int_equal(load(&t), 20);
    /* latest pointer itself damaged */
    char latest[600];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    fp = fopen(latest, "w");
    fputs("garbage\n", fp);
    fclose(fp);
    assert_int_equal(load(&t), 20);
    /* the .tmp never counts toward keep_last and survives pruning of real files only */
    save(&t, 60, 2);
    rundir_step_path(path, sizeof path, dir, 20);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(load(&t), 60);
    rm_dir();
    params_table_free(&t);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv); /* a world of one, as a plain `koe train` without mpirun */
    h5_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encoder_subset),
        cmocka_unit_test(test_sum_definition),
        cmocka_unit_test(test_optim_slices),
        cmocka_unit_test(test_checksums_catch_flips),
        cmocka_unit_test(test_fallback_and_keep_last),
        cmocka_unit_test(test_old_log_sums),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    comm_finalize();
    return rc;
}

/* test_checkpoint.c — training checkpoints (data/checkpoint.c): a full round trip of /model,
 * /optim, /state and /config; /optim written in slices (as ZeRO ranks will) equals the whole and
 * checksums add up; the encoder reader takes a subset table and still verifies the whole /model; a
 * flipped byte in any tensor group is caught by its checksum; the run directory
 * logic: latest is followed, a corrupt or missing latest falls back to the previous checkpoint, a
 * half-written .tmp is never taken for a checkpoint, keep_last prunes the oldest. */
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

/* Write a training checkpoint for `step` into dir with buffers keyed by step; m in two slices. */
static void save(const ParamTable *t, int64_t step, int keep_last) {
    const int64_t n = t->total;
    float *p = malloc((size_t)n * sizeof *p), *m = malloc((size_t)n * sizeof *m), *v = malloc((size_t)n * sizeof *v);
    fill(p, n, (uint64_t)step * 3), fill(m, n, (uint64_t)step * 3 + 1), fill(v, n, (uint64_t)step * 3 + 2);
    char path[512];
    checkpoint_step_path(path, sizeof path, dir, step);
    KoeError err;
    CheckpointWriter *w = checkpoint_writer_open(path, t, 1, &err);
    if (!w) fail_msg("%s", err.msg);
    for (int i = 0; i < t->n; i++) assert_int_equal(checkpoint_writer_tensor(w, i, p + t->e[i].offset, &err), 0);
    const int64_t cut = n / 3;
    assert_int_equal(checkpoint_writer_optim(w, 0, cut, n - cut, m + cut, &err), 0);
    assert_int_equal(checkpoint_writer_optim(w, 0, 0, cut, m, &err), 0);
    assert_int_equal(checkpoint_writer_optim(w, 1, 0, n, v, &err), 0);
    assert_true(checkpoint_writer_sums(w)[1] == checkpoint_sum(m, 0, n));
    TrainState st = state_for(step);
    char cfg[64];
    snprintf(cfg, sizeof cfg, "[run]\nseed = %lld\n", (long long)step);
    if (checkpoint_writer_finish(w, cfg, &st, &err) < 0) fail_msg("%s", err.msg);
    if (checkpoint_publish_latest(dir, step, keep_last, &err) < 0) fail_msg("%s", err.msg);
    free(p), free(m), free(v);
}

/* Load via the run directory; returns the step loaded (-1: none usable, 0 files: -2) and checks the
 * buffers are those save() wrote for it. */
static int64_t load(const ParamTable *t) {
    const int64_t n = t->total;
    float *p = malloc((size_t)n * sizeof *p), *m = malloc((size_t)n * sizeof *m), *v = malloc((size_t)n * sizeof *v);
    float *q = malloc((size_t)n * sizeof *q);
    TrainState st;
    char *cfg = NULL, path[512];
    KoeError err;
    int rc = checkpoint_load_latest(dir, t, p, m, v, &st, &cfg, path, sizeof path, &err);
    int64_t step = rc == 1 ? st.step : rc == 0 ? -2 : -1;
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
        checkpoint_step_path(want_path, sizeof want_path, dir, step);
        assert_string_equal(path, want_path);
    }
    free(cfg), free(p), free(m), free(v), free(q);
    return step;
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
    checkpoint_step_path(path, sizeof path, dir, 10);
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
    checkpoint_step_path(path, sizeof path, dir, 5);
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
        checkpoint_step_path(path, sizeof path, dir, 7);
        flip_byte(path, groups[k], 3);
        float *p = malloc((size_t)t.total * 12);
        TrainState st;
        char *cfg = NULL;
        KoeError err;
        assert_int_equal(checkpoint_read_train(path, &t, p, p + t.total, p + 2 * t.total, &st, &cfg, &err), -1);
        if (!strstr(err.msg, "checksum") || !strstr(err.msg, want[k])) fail_msg("unexpected message: %s", err.msg);
        /* the only checkpoint is damaged: resume refuses rather than starting afresh */
        char used[512];
        assert_int_equal(checkpoint_load_latest(dir, &t, p, p + t.total, p + 2 * t.total, &st, &cfg, used,
                                                sizeof used, &err), -1);
        free(p);
        rm_dir();
    }
    params_table_free(&t);
}

static void test_fallback_and_keep_last(void **state) {
    (void)state;
    ParamTable t;
    table(&t);
    fresh_dir();
    for (int64_t s = 10; s <= 40; s += 10) save(&t, s, 3);
    char path[512];
    checkpoint_step_path(path, sizeof path, dir, 10);
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
    checkpoint_step_path(path, sizeof path, dir, 40);
    flip_byte(path, "/optim/v", 0);
    assert_int_equal(load(&t), 30);
    /* truncated step file (half-written under its final name by a broken filesystem) */
    checkpoint_step_path(path, sizeof path, dir, 30);
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
    checkpoint_step_path(path, sizeof path, dir, 20);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(load(&t), 60);
    rm_dir();
    params_table_free(&t);
}

int main(void) {
    h5_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encoder_subset),
        cmocka_unit_test(test_checksums_catch_flips),
        cmocka_unit_test(test_fallback_and_keep_last),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

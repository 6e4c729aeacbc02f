/* test_progress.c — the progress line (core/progress.h): its one format (done/total, percentage, rate,
 * ETA = units left / rate, detail), the ETA's rendering, and what a batch log gets: a line per step
 * at KOE_PROGRESS_S=0 with no repeated last line, nothing from a short run at the default interval,
 * nothing on a rank other than 0, and every unit counted when OpenMP threads add at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <math.h>

#include "../../core/common.h"
#include "../../core/progress.h"

static void test_fmt_eta(void **state) {
    (void)state;
    const struct {
        double s;
        const char *want;
    } cases[] = {{0, "0m00s"}, {59.4, "0m59s"}, {59.6, "1m00s"}, {754, "12m34s"}, {3599.4, "59m59s"},
                 {3600, "1h00m"}, {7325, "2h02m"}, {NAN, "?"}, {-1, "?"}, {INFINITY, "?"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        progress_fmt_eta(out, sizeof out, cases[i].s);
        assert_string_equal(out, cases[i].want);
    }
}

static void test_format(void **state) {
    (void)state;
    char out[256];
    /* 3600 left at 38.2/s: 94.2 s */
    progress_format(out, sizeof out, "features", "utt", 1200, 4800, 38.2, NULL);
    assert_string_equal(out, "features 1200/4800 utt (25%), 38.2 utt/s, eta 1m34s");
    progress_format(out, sizeof out, "step", "step", 10, 100, 0.5, "loss 4.1234 acc 0.100 gnorm 2.5");
    assert_string_equal(out, "step 10/100 step (10%), 0.5 step/s, eta 3m00s, loss 4.1234 acc 0.100 gnorm 2.5");
    progress_format(out, sizeof out, "embed", "utt", 0, 13, 0.0, "");
    assert_string_equal(out, "embed 0/13 utt (0%), 0 utt/s, eta ?");
    progress_format(out, sizeof out, "label", "utt", 13, 13, 2345.6, NULL);
    assert_string_equal(out, "label 13/13 utt (100%), 2346 utt/s, eta 0m00s");
    progress_format(out, sizeof out, "prepare", "file", 7, 0, 3.5, "0.01 h written");
    assert_string_equal(out, "prepare 7 file, 3.5 file/s, 0.01 h written");
}

/* Runs fn with stderr going to a file; returns what it wrote (malloc'ed). */
static char *capture(void (*fn)(void)) {
    char path[] = "/tmp/test_progress.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *text = calloc((size_t)n + 1, 1);
    assert_int_equal(pread(fd, text, (size_t)n, 0), n);
    close(fd);
    unlink(path);
    return text;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void three_steps(void) {
    Progress *p = progress_open("features", "utt", 3);
    for (int i = 0; i < 3; i++) progress_add(p, 1);
    progress_close(p);
}

static void test_batch_every_step(void **state) {
    (void)state;
    setenv("KOE_PROGRESS_S", "0", 1);
    char *out = capture(three_steps);
    /* one line per step; close does not repeat the last one */
    assert_int_equal(count_lines(out), 3);
    assert_non_null(strstr(out, "koe: features 1/3 utt (33%), "));
    assert_non_null(strstr(out, "koe: features 3/3 utt (100%), "));
    assert_null(strchr(out, '\r'));
    free(out);
}

static void test_batch_quiet_when_short(void **state) {
    (void)state;
    unsetenv("KOE_PROGRESS_S"); /* 10 s: a run this short prints nothing, not even at close */
    char *out = capture(three_steps);
    assert_string_equal(out, "");
    free(out);
}

static void test_other_rank_silent(void **state) {
    (void)state;
    setenv("KOE_PROGRESS_S", "0", 1);
    koe_set_log_rank(1, 2);
    char *out = capture(three_steps);
    koe_set_log_rank(0, 1);
    assert_string_equal(out, "");
    free(out);
}

static void threads_add(void) {
    Progress *p = progress_open("kmeans pass", "utt", 4000);
#pragma omp parallel for num_threads(4)
    for (int i = 0; i < 4000; i++) progress_add(p, 1);
    progress_close(p);
}

static void test_threads(void **state) {
    (void)state;
    setenv("KOE_PROGRESS_S", "0", 1);
    char *out = capture(threads_add);
    /* the last line counts every unit; lines are whole (one thread prints at a time) */
    const char *last = out + strlen(out) - 1;
    while (last > out && last[-1] != '\n') last--;
    assert_true(strncmp(last, "koe: kmeans pass 4000/4000 utt (100%), ", 39) == 0);
    for (const char *l = out; *l; l = strchr(l, '\n') + 1) assert_true(strncmp(l, "koe: kmeans pass ", 17) == 0);
    free(out);
}

/* Not seconds, or not in the recipes' number syntax (core/config_keys.h: no hex, no blanks, no inf). */
static void test_bad_interval(void **state) {
    (void)state;
    const char *bad[] = {"soon", "0x1p3", " 5", "inf", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("KOE_PROGRESS_S", bad[i], 1);
        char *out = capture(three_steps);
        char want[64];
        snprintf(want, sizeof want, "KOE_PROGRESS_S=%s: expected seconds", bad[i]);
        if (!strstr(out, want)) fail_msg("KOE_PROGRESS_S='%s': no warning naming it in:\n%s", bad[i], out);
        assert_int_equal(count_lines(out), 1); /* the warning; then the default interval: no line */
        free(out);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmt_eta),          cmocka_unit_test(test_format),
        cmocka_unit_test(test_batch_every_step), cmocka_unit_test(test_batch_quiet_when_short),
        cmocka_unit_test(test_other_rank_silent), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_bad_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

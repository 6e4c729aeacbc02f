/* test_plot.c — recipes/plot.c: a line chart (log y, a NaN left out, a name with an underscore and a
 * quote) and a heatmap with labelled cells come out as a kept script with the data inline, a PNG (by
 * its signature), an SVG and an ASCII rendering that shows the title and the cell values; a chart with
 * no finite point writes nothing; deferred charts drawn by one gnuplot (plot_draw) come out as drawn
 * alone; without gnuplot ($KOE_GNUPLOT naming a missing program) the script
 * is kept and the message says what to install, as when the program exits 127; another exit status is
 * named. Needs gnuplot (gnuplot-nox).
 * recipes/ is linked into the koe binary only, so plot.c is compiled into this test directly. */
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

#include "../../recipes/plot.c"

static char dir[512];

/* The whole file at path (NULL when missing), its length in *n. */
static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)len + 1);
    *n = fread(s, 1, (size_t)len, f);
    s[*n] = 0;
    fclose(f);
    return s;
}

static char *output(const char *base, const char *ext, size_t *n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s", dir, base, ext);
    return slurp(path, n);
}

static void check_outputs(const char *base, const char *ascii_has) {
    size_t n;
    char *png = output(base, "png", &n);
    assert_non_null(png);
    assert_true(n > 1000 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    char *svg = output(base, "svg", &n);
    assert_non_null(svg);
    assert_non_null(strstr(svg, "<svg"));
    assert_non_null(strstr(svg, "</svg>"));
    char *txt = output(base, "txt", &n);
    assert_non_null(txt);
    if (!strstr(txt, ascii_has)) fail_msg("%s.txt lacks '%s':\n%s", base, ascii_has, txt);
    free(png);
    free(svg);
    free(txt);
}

static void test_lines(void **state) {
    (void)state;
    const double x[4] = {1, 2, 3, 4}, train[4] = {5.5, 3.25, NAN, 1.5}, valid[2] = {4.0, 2.0}, vx[2] = {2, 4};
    PlotSeries s[2] = {{"loss_train 'x'", x, train, 4}, {"valid", vx, valid, 2}};
    char stem[1024];
    snprintf(stem, sizeof stem, "%s/loss", dir);
    char *ascii = NULL;
    size_t ascii_len = 0;
    FILE *a = open_memstream(&ascii, &ascii_len);
    PlotSpec p = {.title = "loss_per_frame", .xlabel = "step", .ylabel = "nats", .log_y = 1,
                  .formats = PLOT_PNG | PLOT_SVG | PLOT_ASCII, .ascii = a};
    KoeError err = {{0}};
    if (plot_lines(stem, &p, s, 2, &err) != PLOT_DRAWN) fail_msg("plot_lines: %s", err.msg);
    fclose(a);
    assert_non_null(strstr(ascii, "loss_per_frame")); /* copied to p.ascii, underscores literal */
    free(ascii);
    check_outputs("loss", "loss_train 'x'");
    size_t n;
    char *gp = output("loss", "gp", &n);
    assert_non_null(strstr(gp, "\n2 3.25\n")); /* data inline */
    assert_null(strstr(gp, "nan"));           /* the NaN left out */
    assert_non_null(strstr(gp, "set logscale y"));
    free(gp);
}

static void test_heatmap(void **state) {
    (void)state;
    const double v[6] = {1.0, 0.25, 0.5, 0.125, 1.0, 0.75};
    const char *rows[2] = {"layer_1", "layer_2"}, *cols[3] = {"a", "b", "c"};
    PlotMatrix m = {.v = v, .rows = 2, .cols = 3, .row_labels = rows, .col_labels = cols, .cell_fmt = "%.3f",
                    .vmin = 0, .vmax = 1};
    PlotSpec p = {.title = "CKA", .formats = PLOT_PNG | PLOT_SVG | PLOT_ASCII};
    char stem[1024];
    snprintf(stem, sizeof stem, "%s/cka", dir);
    KoeError err = {{0}};
    if (plot_heatmap(stem, &p, &m, &err) != PLOT_DRAWN) fail_msg("plot_heatmap: %s", err.msg);
    check_outputs("cka", "0.125");
    size_t n;
    char *svg = output("cka", "svg", &n);
    assert_non_null(strstr(svg, "0.750")); /* every value printed in its cell */
    assert_non_null(strstr(svg, "layer_2"));
    free(svg);
}

/* Deferred charts drawn together by plot_draw: nothing drawn before it, and a heatmap drawn after a
 * log-scale line chart in the same gnuplot comes out byte for byte as when drawn on its own. */
static void test_deferred(void **state) {
    (void)state;
    const double x[3] = {1, 2, 3}, y[3] = {10, 100, 1000}, v[4] = {1.0, 0.5, 0.5, 1.0};
    PlotSeries s = {"grows", x, y, 3};
    PlotMatrix m = {.v = v, .rows = 2, .cols = 2, .cell_fmt = "%.2f"};
    PlotSpec lines = {.title = "deferred", .log_y = 1, .formats = PLOT_SVG, .defer = 1};
    PlotSpec heat = {.title = "similarity", .formats = PLOT_SVG, .defer = 1};
    char stems[3][1024];
    const char *both[2] = {stems[0], stems[1]};
    snprintf(stems[0], sizeof stems[0], "%s/d_lines", dir);
    snprintf(stems[1], sizeof stems[1], "%s/d_heat", dir);
    snprintf(stems[2], sizeof stems[2], "%s/alone_heat", dir);
    KoeError err = {{0}};
    assert_int_equal(plot_lines(stems[0], &lines, &s, 1, &err), PLOT_DRAWN);
    assert_int_equal(plot_heatmap(stems[1], &heat, &m, &err), PLOT_DRAWN);
    size_t n, n2;
    assert_null(output("d_heat", "svg", &n)); /* only the scripts so far */
    if (plot_draw(both, 2, NULL, &err) != PLOT_DRAWN) fail_msg("plot_draw: %s", err.msg);
    heat.defer = 0;
    if (plot_heatmap(stems[2], &heat, &m, &err) != PLOT_DRAWN) fail_msg("plot_heatmap: %s", err.msg);
    char *a = output("d_heat", "svg", &n), *b = output("alone_heat", "svg", &n2), *l = output("d_lines", "svg", &n2);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(l);
    assert_string_equal(a, b);
    free(a);
    free(b);
    free(l);
}

static void test_empty(void **state) {
    (void)state;
    const double x[2] = {1, 2}, y[2] = {NAN, -1};
    PlotSeries s = {"none", x, y, 2};
    PlotSpec p = {.log_y = 1, .formats = PLOT_PNG};
    char stem[1024];
    snprintf(stem, sizeof stem, "%s/empty", dir);
    KoeError err = {{0}};
    assert_int_equal(plot_lines(stem, &p, &s, 1, &err), PLOT_EMPTY);
    size_t n;
    assert_null(output("empty", "gp", &n));
}

static void test_no_gnuplot(void **state) {
    (void)state;
    const double x[2] = {1, 2}, y[2] = {3, 4};
    PlotSeries s = {"lr", x, y, 2};
    PlotSpec p = {.formats = PLOT_PNG};
    char stem[1024];
    snprintf(stem, sizeof stem, "%s/nognuplot", dir);
    setenv("KOE_GNUPLOT", "/nonexistent/gnuplot", 1);
    KoeError err = {{0}};
    const int rc = plot_lines(stem, &p, &s, 1, &err);
    unsetenv("KOE_GNUPLOT");
    assert_int_equal(rc, PLOT_NO_GNUPLOT);
    assert_non_null(strstr(err.msg, "apt-get install gnuplot-nox"));
    assert_non_null(strstr(err.msg, "nognuplot.gp"));
    size_t n;
    char *gp = output("nognuplot", "gp", &n);
    assert_non_null(gp); /* the script is kept */
    free(gp);
    assert_null(output("nognuplot", "png", &n));
}

/* A program in place of gnuplot that exits with `code` (a script in dir); plot_lines' return and message. */
static int fake_gnuplot(int code, const char *stem_name, KoeError *err) {
    char prog[1024], stem[1024];
    snprintf(prog, sizeof prog, "%s/exit%d.sh", dir, code);
    FILE *f = fopen(prog, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\nexit %d\n", code);
    fclose(f);
    assert_int_equal(chmod(prog, 0755), 0);
    const double x[2] = {1, 2}, y[2] = {3, 4};
    PlotSeries s = {"lr", x, y, 2};
    PlotSpec p = {.formats = PLOT_PNG};
    snprintf(stem, sizeof stem, "%s/%s", dir, stem_name);
    setenv("KOE_GNUPLOT", prog, 1);
    const int rc = plot_lines(stem, &p, &s, 1, err);
    unsetenv("KOE_GNUPLOT");
    return rc;
}

/* Where posix_spawn cannot report a failed exec (valgrind, some emulators) the child exits 127, the
 * shell's "command not found": reported as a missing gnuplot. Any other failure names its status. */
static void test_exit_status(void **state) {
    (void)state;
    KoeError err = {{0}};
    assert_int_equal(fake_gnuplot(127, "exit127", &err), PLOT_NO_GNUPLOT);
    assert_non_null(strstr(err.msg, "apt-get install gnuplot-nox"));
    assert_non_null(strstr(err.msg, "exit127.gp"));
    KoeError err1 = {{0}};
    const int rc = fake_gnuplot(1, "exit1", &err1);
    assert_true(rc != PLOT_DRAWN && rc != PLOT_NO_GNUPLOT);
    assert_non_null(strstr(err1.msg, "failed on"));
    assert_non_null(strstr(err1.msg, "exit1.gp"));
    assert_non_null(strstr(err1.msg, "exit status 1"));
}

int main(void) {
    const char *base = getenv("KOE_TMP") ? getenv("KOE_TMP") : "/tmp";
    snprintf(dir, sizeof dir, "%s/test_plot.XXXXXX", base);
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_heatmap),
        cmocka_unit_test(test_deferred),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_no_gnuplot),
        cmocka_unit_test(test_exit_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

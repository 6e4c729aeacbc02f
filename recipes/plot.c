/* plot.c — see plot.h. A chart is written as one gnuplot script (settings, data inline, then the same
 * plot command once per output format) and gnuplot is spawned on it in the script's directory, so the
 * script names its outputs relative to itself and redraws the same way by hand. */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PLOT_PATH_MAX 4096

/* A gnuplot string literal: single quotes, a quote doubled. */
static void gp_quote(FILE *f, const char *s) {
    fputc('\'', f);
    for (; s && *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

/* set title|xlabel|ylabel 'text' (nothing when text is NULL) */
static void gp_set_text(FILE *f, const char *what, const char *text) {
    if (!text) return;
    fprintf(f, "set %s noenhanced ", what);
    gp_quote(f, text);
    fputc('\n', f);
}

/* stem "DIR/NAME" -> dir "DIR" (or "."), base "NAME". */
static void split_stem(const char *stem, char *dir, char *base) {
    const char *slash = strrchr(stem, '/');
    if (!slash) {
        snprintf(dir, PLOT_PATH_MAX, ".");
        snprintf(base, PLOT_PATH_MAX, "%s", stem);
        return;
    }
    snprintf(dir, PLOT_PATH_MAX, "%.*s", slash == stem ? 1 : (int)(slash - stem), stem);
    snprintf(base, PLOT_PATH_MAX, "%s", slash + 1);
}

static FILE *open_script(const char *stem, const PlotSpec *p, KoeError *err) {
    char path[PLOT_PATH_MAX + 8];
    snprintf(path, sizeof path, "%s.gp", stem);
    FILE *f = fopen(path, "w");
    if (!f) {
        koe_error_set(err, "%s: cannot create: %s", path, strerror(errno));
        return NULL;
    }
    char dir[PLOT_PATH_MAX], base[PLOT_PATH_MAX];
    split_stem(stem, dir, base);
    fprintf(f, "# %s — written by koe with its data inline; restyle it and redraw with\n#   cd %s && gnuplot %s.gp\n",
            p->title ? p->title : base, dir, base);
    fputs("reset session\nset encoding utf8\nset key noenhanced\nset grid\n", f);
    gp_set_text(f, "title", p->title);
    gp_set_text(f, "xlabel", p->xlabel);
    gp_set_text(f, "ylabel", p->ylabel);
    return f;
}

/* The plot command once per asked format, each to BASE.png / .svg / .txt beside the script. */
static void write_outputs(FILE *f, const char *stem, const PlotSpec *p, const char *plot_cmd, int w, int h) {
    char dir[PLOT_PATH_MAX], base[PLOT_PATH_MAX];
    split_stem(stem, dir, base);
    static const struct {
        int flag;
        const char *ext, *term;
    } outs[] = {
        {PLOT_PNG, "png", "pngcairo size %d,%d noenhanced font ',10'"},
        {PLOT_SVG, "svg", "svg size %d,%d dynamic noenhanced background rgb 'white'"},
        {PLOT_ASCII, "txt", "dumb size 100,32 noenhanced"},
    };
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
        if (!(p->formats & outs[i].flag)) continue;
        fputs("\nset terminal ", f);
        if (outs[i].flag == PLOT_ASCII) fputs(outs[i].term, f);
        else
            fprintf(f, outs[i].term, w, h);
        fprintf(f, "\nset output '%s.%s'\n%sset output\n", base, outs[i].ext, plot_cmd);
    }
}

static int copy_ascii(const char *stem, FILE *out, KoeError *err) {
    char path[PLOT_PATH_MAX + 8], buf[4096];
    snprintf(path, sizeof path, "%s.txt", stem);
    FILE *f = fopen(path, "r");
    if (!f) return koe_error_set(err, "%s: gnuplot wrote no ASCII rendering: %s", path, strerror(errno));
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, out);
    fclose(f);
    fflush(out);
    return 0;
}

int plot_draw(const char *const *stems, int n, FILE *ascii, KoeError *err) {
    if (n <= 0) return PLOT_DRAWN;
    const char *prog = getenv("KOE_GNUPLOT");
    if (!prog || !*prog) prog = "gnuplot";
    char dir[PLOT_PATH_MAX], other[PLOT_PATH_MAX], (*base)[PLOT_PATH_MAX + 8] = koe_malloc((size_t)n * sizeof *base);
    char **argv = koe_malloc((size_t)(n + 2) * sizeof *argv);
    argv[0] = (char *)prog;
    for (int i = 0; i < n; i++) {
        split_stem(stems[i], i ? other : dir, base[i]);
        if (i && strcmp(other, dir)) koe_fatal(KOE_EXIT_INTERNAL, "plot_draw: %s is not in %s", stems[i], dir);
        strcat(base[i], ".gp");
        argv[i + 1] = base[i];
    }
    argv[n + 1] = NULL;
    const char *stem = stems[0]; /* named in the messages; gnuplot's own name the script that failed */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addchdir_np(&fa, dir);
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    const int e = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    int rc = PLOT_DRAWN, status = 0;
    if (e == 0)
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR) {
                rc = koe_error_set(err, "waiting for %s on %s.gp: %s", prog, stem, strerror(errno));
                break;
            }
    /* Where posix_spawn cannot report a failed exec (under valgrind, some emulators), the child exits
     * 127, the shell's "command not found". */
    if (e == ENOENT || (e == 0 && rc == PLOT_DRAWN && WIFEXITED(status) && WEXITSTATUS(status) == 127)) {
        koe_error_set(err, "%s not found: kept the script%s %s.gp; install gnuplot (Debian: apt-get install gnuplot-nox) "
                           "and run `gnuplot %s` in %s",
                      prog, n > 1 ? "s" : "", stem, base[0], dir);
        rc = PLOT_NO_GNUPLOT;
    } else if (e != 0) {
        rc = koe_error_set(err, "cannot run %s on %s.gp: %s", prog, stem, strerror(e));
    } else if (rc == PLOT_DRAWN && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
        rc = koe_error_set(err, "%s failed on %s.gp%s (%s %d; its messages are above)", prog, stem,
                           n > 1 ? " and the charts drawn with it" : "", WIFEXITED(status) ? "exit status" : "signal",
                           WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    free(argv);
    free(base);
    for (int i = 0; rc == PLOT_DRAWN && ascii && i < n; i++)
        if (copy_ascii(stems[i], ascii, err) < 0) rc = -1;
    return rc;
}

/* Closes the script with its outputs and draws them. */
static int finish(FILE *f, const char *stem, const PlotSpec *p, const char *plot_cmd, int w, int h, KoeError *err) {
    write_outputs(f, stem, p, plot_cmd, w, h);
    if (fclose(f) != 0) return koe_error_set(err, "%s.gp: write failed", stem);
    if (p->defer) return PLOT_DRAWN;
    return plot_draw(&stem, 1, (p->formats & PLOT_ASCII) ? p->ascii : NULL, err);
}

static int keep_point(const PlotSpec *p, double y) { return isfinite(y) && (!p->log_y || y > 0); }

int plot_lines(const char *stem, const PlotSpec *p, const PlotSeries *series, int n_series, KoeError *err) {
    int64_t total = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n_series; i++)
        for (int64_t j = 0; j < series[i].n; j++)
            if (keep_point(p, series[i].y[j])) {
                total++;
                lo = fmin(lo, series[i].y[j]);
                hi = fmax(hi, series[i].y[j]);
            }
    if (total == 0) return PLOT_EMPTY;
    FILE *f = open_script(stem, p, err);
    if (!f) return -1;
    if (p->log_y) fputs("set logscale y\n", f);
    if (p->x_integer) fputs("set xtics 1\nset format x '%.0f'\n", f);
    if (lo == hi) /* a constant curve (clip 0 throughout): a range around it, not gnuplot's warning */
        fprintf(f, "set yrange [%.9g:%.9g]\n", p->log_y ? lo / 2 : lo - 1, p->log_y ? hi * 2 : hi + 1);
    char *cmd = NULL;
    size_t cmd_len = 0;
    FILE *c = open_memstream(&cmd, &cmd_len);
    const char *sep = "plot ";
    for (int i = 0; i < n_series; i++) {
        const PlotSeries *s = &series[i];
        int64_t kept = 0;
        for (int64_t j = 0; j < s->n; j++) kept += keep_point(p, s->y[j]);
        if (!kept) continue;
        fprintf(f, "\n$s%d << EOD\n", i);
        for (int64_t j = 0; j < s->n; j++)
            if (keep_point(p, s->y[j])) fprintf(f, "%.9g %.9g\n", s->x[j], s->y[j]);
        fputs("EOD\n", f);
        fprintf(c, "%s$s%d using 1:2 with %s lw 1.5 title ", sep, i, kept > 1 ? "lines" : "points pt 7");
        gp_quote(c, s->name);
        sep = ", \\\n     ";
    }
    fputc('\n', c);
    fclose(c);
    const int rc = finish(f, stem, p, cmd, 960, 600, err);
    free(cmd);
    return rc;
}

/* set xtics/ytics ('label' 0, 'label' 1, ...) */
static void write_tics(FILE *f, const char *axis, const char *const *labels, int n) {
    if (!labels) {
        fprintf(f, "set %s 0,1,%d\n", axis, n - 1);
        return;
    }
    fprintf(f, "set %s (", axis);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        gp_quote(f, labels[i]);
        fprintf(f, " %d", i);
    }
    fputs(")\n", f);
}

int plot_heatmap(const char *stem, const PlotSpec *p, const PlotMatrix *mtx, KoeError *err) {
    if (mtx->rows < 1 || mtx->cols < 1) return PLOT_EMPTY;
    FILE *f = open_script(stem, p, err);
    if (!f) return -1;
    fprintf(f, "unset grid\nset xrange [-0.5:%g]\nset yrange [%g:-0.5]\n", mtx->cols - 0.5, mtx->rows - 0.5);
    write_tics(f, "xtics", mtx->col_labels, mtx->cols);
    write_tics(f, "ytics", mtx->row_labels, mtx->rows);
    int long_labels = 0; /* column labels longer than a few characters are slanted so they do not collide */
    for (int c = 0; mtx->col_labels && c < mtx->cols; c++) long_labels |= strlen(mtx->col_labels[c]) > 4;
    fprintf(f, "set xtics noenhanced%s\nset ytics noenhanced\nset tics scale 0\n", long_labels ? " rotate by 45 right" : "");
    fputs("set palette defined (0 '#f7fbff', 1 '#4292c6')\n", f);
    if (mtx->vmin != mtx->vmax) fprintf(f, "set cbrange [%.9g:%.9g]\n", mtx->vmin, mtx->vmax);
    fputs("\n$m << EOD\n", f);
    for (int r = 0; r < mtx->rows; r++)
        for (int c = 0; c < mtx->cols; c++)
            fprintf(f, "%.9g%c", mtx->v[(int64_t)r * mtx->cols + c], c + 1 < mtx->cols ? ' ' : '\n');
    fputs("EOD\n", f);
    char *cmd = NULL;
    size_t cmd_len = 0;
    FILE *c = open_memstream(&cmd, &cmd_len);
    fputs("plot $m matrix with image notitle, \\\n     $m matrix using 1:2:(sprintf(", c);
    gp_quote(c, mtx->cell_fmt ? mtx->cell_fmt : "%.2f");
    fputs(", $3)) with labels notitle\n", c);
    fclose(c);
    const int side = 60 * (mtx->cols > mtx->rows ? mtx->cols : mtx->rows);
    const int w = 240 + (side < 400 ? 400 : side > 1800 ? 1800 : side);
    const int rc = finish(f, stem, p, cmd, w, w - 100, err);
    free(cmd);
    return rc;
}

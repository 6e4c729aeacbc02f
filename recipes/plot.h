/* plot.h — charts through gnuplot, shared by `koe plot`, the trainer's redraw and `koe analyze`.
 *
 * Each chart is a self-contained gnuplot script STEM.gp with its data inline (datablocks), written
 * next to the images it draws — STEM.png (pngcairo), STEM.svg, STEM.txt (`set terminal dumb`, for a
 * batch log) — so a user can restyle it and run `gnuplot STEM.gp` in that directory. gnuplot runs as
 * a separate process (the program named by $KOE_GNUPLOT, else `gnuplot` on the PATH); without it the
 * script is kept and the result says what to install.
 *
 * Must not: link any plotting library, or draw anything itself: gnuplot is the only renderer. */
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "../core/common.h"

enum { PLOT_PNG = 1, PLOT_SVG = 2, PLOT_ASCII = 4 }; /* PlotSpec.formats: any combination */

/* What a plot_* call did (or -1 with err set: a file could not be written, or gnuplot failed). */
enum {
    PLOT_DRAWN = 0,      /* the script and every asked format were written */
    PLOT_EMPTY = 1,      /* nothing to draw (no finite point): no file written */
    PLOT_NO_GNUPLOT = 2, /* the script was written; gnuplot is not installed (err says what to install) */
};

typedef struct {
    const char *title, *xlabel, *ylabel; /* shown as given (no gnuplot markup: `loss_0` stays literal) */
    int log_y;                           /* logarithmic y axis (points with y <= 0 are left out) */
    int x_integer;                       /* x ticks at whole numbers only, one per step (layer indices) */
    int formats;                         /* PLOT_PNG | PLOT_SVG | PLOT_ASCII */
    FILE *ascii;                         /* with PLOT_ASCII: STEM.txt is also copied here (NULL: file only) */
    int defer;                           /* write STEM.gp only (returns PLOT_DRAWN; .ascii unused): plot_draw
                                            draws it later, with the other charts of its directory, in one gnuplot */
} PlotSpec;

/* One curve: n points (x[i], y[i]); a non-finite y leaves its point out. */
typedef struct {
    const char *name; /* legend entry */
    const double *x, *y;
    int64_t n;
} PlotSeries;

/* A matrix drawn as coloured cells with each value printed in its cell (row 0 at the top). */
typedef struct {
    const double *v; /* (rows, cols) row-major */
    int rows, cols;
    const char *const *row_labels, *const *col_labels; /* NULL: the indices */
    const char *cell_fmt;                              /* printf format of a cell's value, e.g. "%.2f" */
    double vmin, vmax;                                 /* colour range; vmin == vmax: the data's */
} PlotMatrix;

/* Line chart of n_series curves over a shared x axis (series without a point are left out). */
int plot_lines(const char *stem, const PlotSpec *p, const PlotSeries *series, int n_series, KoeError *err);
/* Heatmap of a matrix, e.g. `koe analyze layers`' CKA similarity between layers. */
int plot_heatmap(const char *stem, const PlotSpec *p, const PlotMatrix *mtx, KoeError *err);
/* Draws the deferred charts STEMS[0..n) (PlotSpec.defer; all in one directory) in one gnuplot process:
 * one start-up (~70 ms) instead of n. Each script begins with `reset session`, so it draws the same after
 * another as on its own. ascii (NULL: none): each chart's STEM.txt (PLOT_ASCII) is copied there, in
 * order. Returns PLOT_DRAWN, PLOT_NO_GNUPLOT or -1, as a plot_* call. */
int plot_draw(const char *const *stems, int n, FILE *ascii, KoeError *err);

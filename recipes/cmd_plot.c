/* cmd_plot.c — `koe plot RUN [--out DIR] [--ascii]`: the curves of a training run from RUN/log.jsonl
 * as PNG and SVG through gnuplot (recipes/run_plot.h says which charts, recipes/plot.h how), each
 * with its gnuplot script kept beside it; --ascii also prints them as text for a batch log.
 * Rank 0 draws; the other ranks only wait for its exit status.
 * Must not: write anything outside the output directory. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../distributed/comm.h"
#include "commands.h"
#include "plot.h"
#include "run_plot.h"

typedef struct {
    const char *out;
    int ascii;
} PlotOptions;

#define O(field) offsetof(PlotOptions, field)
static const CliFlag plot_flags[] = {
    CLI_S("--out", O(out), NULL, 0, "DIR", "output directory, created if missing (default RUN/plots)"),
    CLI_B("--ascii", O(ascii), "also print every chart as text (gnuplot's dumb terminal; kept as DIR/NAME.txt)"),
    CLI_END,
};

static int plot_command(const void *opts, int n_args, char **args);

const CliCommand cmd_plot = {
    .name = "plot",
    .summary = "curves of a training run (log.jsonl) as PNG, SVG and ASCII through gnuplot",
    .args = "RUN",
    .min_args = 1,
    .max_args = 1,
    .about = "Draws the curves of a koe train run from RUN/log.jsonl: loss and accuracy (train and valid),\n"
             "learning rate, gradient norm and clip fraction, throughput, communication time, and the\n"
             "objective's own (wav2vec 2.0 perplexities and temperature, BEST-RQ code usage) — each chart only\n"
             "when the log has its fields. Each chart NAME is DIR/NAME.png and DIR/NAME.svg, drawn by gnuplot\n"
             "(Debian: apt-get install gnuplot-nox) from the script DIR/NAME.gp, which holds its data and is kept\n"
             "so that you can restyle it (edit, then `gnuplot NAME.gp` in DIR). Without gnuplot the scripts are\n"
             "written and koe says what to install (exit code 1).\n",
    .flags = plot_flags,
    .opts_size = sizeof(PlotOptions),
    .run = plot_command,
};

static int plot_command(const void *opts, int n_args, char **args) {
    (void)n_args;
    const PlotOptions *a = opts;
    const char *run = args[0];
    int rc = KOE_EXIT_OK;
    if (comm_rank() == 0) {
        char log[4200], out[4200];
        snprintf(log, sizeof log, "%s/log.jsonl", run);
        snprintf(out, sizeof out, "%s", a->out ? a->out : run);
        if (!a->out) strncat(out, "/plots", sizeof out - strlen(out) - 1);
        KoeError err;
        int n = 0;
        const int r = run_plot(log, out, PLOT_PNG | PLOT_SVG | (a->ascii ? PLOT_ASCII : 0), a->ascii ? stdout : NULL,
                               &n, &err);
        if (r == PLOT_DRAWN) koe_log("plot: %d charts of %s in %s (NAME.png, NAME.svg, NAME.gp)", n, log, out);
        else {
            fprintf(stderr, "koe plot: %s\n", err.msg);
            rc = KOE_EXIT_USAGE;
        }
    }
    comm_bcast(&rc, sizeof rc, 0); /* every rank exits with rank 0's status */
    return rc;
}

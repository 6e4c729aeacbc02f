/* cmd_plot.c — `koe plot RUN [--out DIR] [--ascii]`: the curves of a training run from RUN/log.jsonl
 * as PNG and SVG through gnuplot (recipes/run_plot.h says which charts, recipes/plot.h how), each
 * with its gnuplot script kept beside it; --ascii also prints them as text for a batch log.
 * Rank 0 draws; the other ranks only wait for its exit status.
 * Must not: write anything outside the output directory. */
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../distributed/comm.h"
#include "commands.h"
#include "plot.h"
#include "run_plot.h"

const char cmd_plot_summary[] = "curves of a training run (log.jsonl) as PNG, SVG and ASCII through gnuplot";
const char cmd_plot_help[] =
    "usage: koe plot RUN [--out DIR] [--ascii]\n"
    "\n"
    "Draws the curves of a koe train run from RUN/log.jsonl: loss and accuracy (train and valid),\n"
    "learning rate, gradient norm and clip fraction, throughput, communication time, and the\n"
    "objective's own (wav2vec 2.0 perplexities and temperature, BEST-RQ code usage) — each chart only\n"
    "when the log has its fields. Each chart NAME is DIR/NAME.png and DIR/NAME.svg, drawn by gnuplot\n"
    "(Debian: apt-get install gnuplot-nox) from the script DIR/NAME.gp, which holds its data and is kept\n"
    "so that you can restyle it (edit, then `gnuplot NAME.gp` in DIR). Without gnuplot the scripts are\n"
    "written and koe says what to install (exit code 1).\n"
    "\n"
    "options:\n"
    "  --out DIR   output directory, created if missing (default RUN/plots)\n"
    "  --ascii     also print every chart as text (gnuplot's dumb terminal; kept as DIR/NAME.txt)\n";

typedef struct {
    const char *run, *out;
    int ascii;
} PlotArgs;

/* Returns -1 after a usage error (printed), 1 after --help, 0 otherwise. */
static int parse_args(int argc, char **argv, PlotArgs *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(cmd_plot_help, stdout);
            return 1;
        }
        if (i + 1 < argc && !strcmp(argv[i], "--out")) a->out = argv[++i];
        else if (!strcmp(argv[i], "--ascii"))
            a->ascii = 1;
        else if (argv[i][0] != '-' && !a->run)
            a->run = argv[i];
        else {
            fprintf(stderr, "koe plot: unknown option, missing value or second RUN: %s (see `koe help plot`)\n", argv[i]);
            return -1;
        }
    }
    if (!a->run) {
        fputs("koe plot: missing RUN (the run.dir of koe train; see `koe help plot`)\n", stderr);
        return -1;
    }
    return 0;
}

int cmd_plot(int argc, char **argv) {
    PlotArgs a;
    const int parsed = parse_args(argc, argv, &a);
    if (parsed != 0) return parsed > 0 ? KOE_EXIT_OK : KOE_EXIT_USAGE;
    int rc = KOE_EXIT_OK;
    if (comm_rank() == 0) {
        char log[4200], out[4200];
        snprintf(log, sizeof log, "%s/log.jsonl", a.run);
        snprintf(out, sizeof out, "%s", a.out ? a.out : a.run);
        if (!a.out) strncat(out, "/plots", sizeof out - strlen(out) - 1);
        KoeError err;
        int n = 0;
        const int r = run_plot(log, out, PLOT_PNG | PLOT_SVG | (a.ascii ? PLOT_ASCII : 0), a.ascii ? stdout : NULL,
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

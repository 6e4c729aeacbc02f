/* run_plot.h — the charts of a training run's RUN/log.jsonl (`koe plot`, and the trainer's redraw
 * every run.plot_every updates): loss and accuracy (train and valid), learning rate, gradient norm
 * and clip fraction, throughput and communication time, wav2vec 2.0 perplexities and temperature,
 * BEST-RQ code usage — each chart drawn only when the log has its fields, through plot.h.
 *
 * Must not: write anything but the charts (STEM.gp and its images) in the output directory. */
#pragma once
#include <stdio.h>

#include "../core/common.h"

/* Reads log_path (one JSON object per line, with "step"; null values are left out) and draws every
 * chart it has data for into out_dir (created if missing) as out_dir/NAME.{gp,png,svg[,txt]}.
 * formats: plot.h's PLOT_* flags; ascii: where the ASCII renderings go (with PLOT_ASCII).
 * Returns plot.h's PLOT_DRAWN (n_charts drawn), PLOT_NO_GNUPLOT (the scripts are kept; err says
 * what to install) or -1 with err naming the file and line. */
int run_plot(const char *log_path, const char *out_dir, int formats, FILE *ascii, int *n_charts, KoeError *err);

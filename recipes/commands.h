/* commands.h — the subcommands of the koe binary. Each lives in recipes/cmd_NAME.c and exports
 * cmd_NAME: its flag table, help and run function (cli.h). */
#pragma once
#include "cli.h"

extern const CliCommand cmd_synth, cmd_prepare, cmd_info, cmd_features, cmd_init, cmd_embed, cmd_export,
    cmd_bench, cmd_train, cmd_kmeans, cmd_label, cmd_analyze, cmd_plot;

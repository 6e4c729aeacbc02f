/* cmd_synth.c — placeholder until the synth command lands. */
#include "../core/common.h"
#include "commands.h"

const char cmd_synth_summary[] = "(not built yet)";
const char cmd_synth_help[] = "koe synth: not built yet\n";
int cmd_synth(int argc, char **argv) {
    (void)argc;
    (void)argv;
    koe_fatal(KOE_EXIT_INTERNAL, "koe synth is not built yet");
}

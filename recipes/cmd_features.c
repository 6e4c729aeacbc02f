/* cmd_features.c — placeholder until the features command lands. */
#include "../core/common.h"
#include "commands.h"

const char cmd_features_summary[] = "(not built yet)";
const char cmd_features_help[] = "koe features: not built yet\n";
int cmd_features(int argc, char **argv) {
    (void)argc;
    (void)argv;
    koe_fatal(KOE_EXIT_INTERNAL, "koe features is not built yet");
}

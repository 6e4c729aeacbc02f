/* cmd_prepare.c — placeholder until the prepare command lands. */
#include "../core/common.h"
#include "commands.h"

const char cmd_prepare_summary[] = "(not built yet)";
const char cmd_prepare_help[] = "koe prepare: not built yet\n";
int cmd_prepare(int argc, char **argv) {
    (void)argc;
    (void)argv;
    koe_fatal(KOE_EXIT_INTERNAL, "koe prepare is not built yet");
}

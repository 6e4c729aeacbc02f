/* cmd_info.c — placeholder until the info command lands. */
#include "../core/common.h"
#include "commands.h"

const char cmd_info_summary[] = "(not built yet)";
const char cmd_info_help[] = "koe info: not built yet\n";
int cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    koe_fatal(KOE_EXIT_INTERNAL, "koe info is not built yet");
}

/* commands.h — the subcommands of the koe binary. Each lives in recipes/cmd_NAME.c and exports
 * cmd_NAME (argc/argv after the subcommand name, argv[0] = "NAME") and its help text. */
#pragma once

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary; /* one line for `koe help` */
    const char *help;    /* every option with its default, for `koe help NAME` */
} KoeCommand;

#define KOE_DECLARE_COMMAND(NAME)          \
    int cmd_##NAME(int argc, char **argv); \
    extern const char cmd_##NAME##_summary[]; \
    extern const char cmd_##NAME##_help[];

KOE_DECLARE_COMMAND(synth)
KOE_DECLARE_COMMAND(prepare)
KOE_DECLARE_COMMAND(info)
KOE_DECLARE_COMMAND(features)
KOE_DECLARE_COMMAND(init)
KOE_DECLARE_COMMAND(embed)
KOE_DECLARE_COMMAND(export)
KOE_DECLARE_COMMAND(bench)
KOE_DECLARE_COMMAND(train)
KOE_DECLARE_COMMAND(kmeans)
KOE_DECLARE_COMMAND(label)
KOE_DECLARE_COMMAND(analyze)
KOE_DECLARE_COMMAND(plot)

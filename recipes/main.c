/* main.c — the koe binary: git-style subcommands (recipes/README.md, Subcommands). Every subcommand runs
 * inside MPI (a plain `koe CMD` is a world of one) so that the same binary works under mpirun. */
#include <stdio.h>
#include <string.h>

#include "../core/common.h"
#include "../data/h5util.h"
#include "../distributed/comm.h"
#include "commands.h"

#define COMMAND(NAME) {#NAME, cmd_##NAME, cmd_##NAME##_summary, cmd_##NAME##_help}
static const KoeCommand commands[] = {
    COMMAND(synth),
    COMMAND(prepare),
    COMMAND(info),
    COMMAND(features),
    COMMAND(init),
    COMMAND(embed),
    COMMAND(export),
    COMMAND(bench),
    COMMAND(train),
    COMMAND(kmeans),
    COMMAND(label),
    COMMAND(analyze),
    COMMAND(plot),
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "koe — self-supervised speech pretraining on CPU clusters\n\n"
               "usage: koe COMMAND [options]      (under mpirun, ranks split the work)\n\n"
               "commands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n\nexit codes: 0 success, 1 usage or bad input, 2 internal error, "
               "3 preempted after a clean checkpoint\n",
            "help", "koe help COMMAND: every option with its default");
}

static const KoeCommand *find(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? KOE_EXIT_USAGE : KOE_EXIT_OK;
    }
    if (!strcmp(argv[1], "help")) {
        if (argc < 3) {
            usage(stdout);
            return KOE_EXIT_OK;
        }
        const KoeCommand *c = find(argv[2]);
        if (!c) {
            fprintf(stderr, "koe: unknown command '%s' (see `koe help`)\n", argv[2]);
            return KOE_EXIT_USAGE;
        }
        fputs(c->help, stdout);
        return KOE_EXIT_OK;
    }
    const KoeCommand *c = find(argv[1]);
    if (!c) {
        fprintf(stderr, "koe: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return KOE_EXIT_USAGE;
    }
    comm_init(&argc, &argv);
    h5_init();
    int rc = c->run(argc - 1, argv + 1);
    comm_finalize();
    return rc;
}

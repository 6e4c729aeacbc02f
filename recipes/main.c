/* main.c — the koe binary: git-style subcommands (recipes/README.md, Subcommands). Every subcommand runs
 * inside MPI (a plain `koe CMD` is a world of one) so that the same binary works under mpirun. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/version.h"
#include "../data/h5util.h"
#include "../distributed/comm.h"
#include "cli.h"
#include "commands.h"

static const CliCommand *const commands[] = {
    &cmd_synth, &cmd_prepare, &cmd_info,  &cmd_features, &cmd_init,  &cmd_embed,
    &cmd_export, &cmd_bench,  &cmd_train, &cmd_kmeans,   &cmd_label, &cmd_analyze, &cmd_plot,
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "koe — self-supervised speech pretraining on CPU clusters\n\n"
               "usage: koe COMMAND [options]      (under mpirun, ranks split the work)\n\n"
               "commands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, "  %-10s %s\n  %-10s %s\n\nexit codes: 0 success, 1 usage or bad input, 2 internal error, "
               "3 preempted after a clean checkpoint\n",
            "help", "koe help COMMAND: every option with its default", "version",
            "which koe this is (also koe --version)");
}

static const CliCommand *find(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0) return commands[i];
    return NULL;
}

/* koe CMD ...: MPI up, then the command line read from CMD's flag table (cli.h), so that under
 * mpirun only rank 0 says what is wrong with it, then CMD run. */
static int run_command(const CliCommand *c, int argc, char **argv) {
    comm_init(&argc, &argv);
    h5_init();
    void *opts = koe_malloc(c->opts_size ? c->opts_size : 1);
    char **args = koe_malloc((size_t)argc * sizeof *args);
    int n_args = 0;
    int rc = cli_parse(c, argc, argv, opts, args, &n_args, comm_rank() == 0);
    if (rc == CLI_RUN) rc = c->run(opts, n_args, args);
    free(args);
    free(opts);
    comm_finalize();
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? KOE_EXIT_USAGE : KOE_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("koe %s\n", koe_version());
        return KOE_EXIT_OK;
    }
    if (!strcmp(argv[1], "help")) {
        if (argc < 3) {
            usage(stdout);
            return KOE_EXIT_OK;
        }
        const CliCommand *c = find(argv[2]);
        if (!c) {
            fprintf(stderr, "koe: unknown command '%s' (see `koe help`)\n", argv[2]);
            return KOE_EXIT_USAGE;
        }
        cli_help(c, stdout);
        return KOE_EXIT_OK;
    }
    const CliCommand *c = find(argv[1]);
    if (!c) {
        fprintf(stderr, "koe: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return KOE_EXIT_USAGE;
    }
    return run_command(c, argc - 1, argv + 1);
}

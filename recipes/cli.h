/* cli.h — the command line of every koe subcommand, read from one table per command. A command
 * declares each flag once, {flag, type, field, default, range, value name, help}, plus its
 * positional arguments; parsing (checked numbers: "12x", "" and overflow are errors; an empty string
 * value is an error too), range checks,
 * the errors (naming the flag and the accepted range: "koe bench: --batch 0: must be between 1
 * and 4096"), the usage line and `koe help CMD` / `koe CMD --help` all come from that table.
 * Must not: know any one command, or decide what a value means beyond its type and range (that is
 * the command's: e.g. `--kind` names a feature kind data/features.c parses). */
#pragma once
#include <stddef.h>
#include <stdio.h>

typedef enum { CLI_STR, CLI_INT, CLI_I64, CLI_U64, CLI_DOUBLE, CLI_BOOL, CLI_CUSTOM } CliType;

enum {
    CLI_REQUIRED = 1, /* the command cannot run without it */
    CLI_ABOVE_LO = 2, /* numbers: the lower bound is exclusive, (lo, hi] */
};

/* CLI_CUSTOM: parse s into the field at dst, or return -1 with why (the text after "--flag VALUE: "). */
typedef int (*CliParseFn)(const char *s, void *dst, char *why, size_t why_len);

typedef struct {
    const char *flag;    /* "--batch" */
    CliType type;        /* field: const char * (STR), int (INT, BOOL), int64_t, uint64_t, double */
    size_t off;          /* offsetof(the command's options struct, field) */
    const char *def;     /* default, as it would be typed, parsed like a given value; NULL: 0 / NULL */
    double lo, hi;       /* numbers: the accepted range, [lo, hi] (or (lo, hi] with CLI_ABOVE_LO) */
    int how;             /* CLI_REQUIRED | CLI_ABOVE_LO */
    const char *metavar; /* the value in the help: "N", "DIR" (NULL for CLI_BOOL) */
    const char *help;    /* what it does; further lines after '\n' */
    CliParseFn parse;    /* CLI_CUSTOM */
} CliFlag;

#define CLI_S(flag, off, def, how, metavar, help) {flag, CLI_STR, off, def, 0, 0, how, metavar, help, NULL}
#define CLI_N(flag, type, off, def, lo, hi, how, metavar, help) {flag, type, off, def, lo, hi, how, metavar, help, NULL}
#define CLI_B(flag, off, help) {flag, CLI_BOOL, off, NULL, 0, 0, 0, NULL, help, NULL}
#define CLI_P(flag, off, parse, def, how, metavar, help) {flag, CLI_CUSTOM, off, def, 0, 0, how, metavar, help, parse}
/* The one --threads: an int field, 0 when not given; resolve it with cli_threads. */
#define CLI_THREADS(off)                                                                                 \
    CLI_N("--threads", CLI_INT, off, NULL, 1, 4096, 0, "N",                                              \
          "threads per rank (default: a recipe's run.threads if set,\nelse OMP_NUM_THREADS, else 1)")
#define CLI_END {NULL, CLI_STR, 0, NULL, 0, 0, 0, NULL, NULL, NULL}

typedef struct {
    const char *name;     /* koe NAME */
    const char *summary;  /* one line for `koe help` */
    const char *args;     /* positional arguments in the usage line ("RECIPE.ini [section.key=value ...]"); NULL: none */
    int min_args, max_args; /* how many positionals; max_args -1: any number */
    const char *about;    /* what the command does and writes: the help between the usage line and the options */
    const CliFlag *flags; /* ends with CLI_END */
    size_t opts_size;     /* sizeof the options struct the flags' offsets point into */
    int (*run)(const void *opts, int n_args, char **args);
    void (*help_more)(FILE *f); /* NULL, or more help after the options (koe train: the recipe keys) */
} CliCommand;

/* The command's help: usage line, about, every flag with its value, default and range. */
void cli_help(const CliCommand *c, FILE *f);

/* The result of cli_parse when the command should run. */
#define CLI_RUN (-1)

/* argv[0] is the command's name. Fills opts (c->opts_size bytes: the defaults, then the flags
 * given) and args (positionals in order, pointers into argv; room for argc). Returns CLI_RUN, or
 * an exit code after printing (only when say): KOE_EXIT_OK for --help, KOE_EXIT_USAGE for an error
 * naming the flag. "--" ends the flags; a flag's value is the next argument even when it starts
 * with '-' (--part -1/3 is a bad value, not an unknown flag); --flag=value works too. */
int cli_parse(const CliCommand *c, int argc, char **argv, void *opts, char **args, int *n_args, int say);

/* A usage error found after parsing (values that exclude each other, a bad language code...):
 * prints "koe NAME: MESSAGE (see `koe help NAME`)" when say, and returns KOE_EXIT_USAGE. */
int cli_error(const CliCommand *c, int say, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The stop signals, SIGINT, SIGTERM and SIGUSR1 (Slurm's --signal=B:USR1@T warning before the time
 * limit), call handler, which sets a flag that the command checks where stopping is clean. */
void cli_catch_stop_signals(void (*handler)(int));

/* The thread count of a run, the same way for every command: --threads when given (> 0), else
 * recipe_threads (a recipe's run.threads, 0 when unset or no recipe), else OMP_NUM_THREADS (its
 * first entry), else 1. Sets OpenMP's count to it and returns it; warns when it exceeds the cores
 * this process may run on. */
int cli_threads(int given, int recipe_threads);

/* A file or directory shipped with koe, found from the running binary: BUILD/koe -> ../SOURCE
 * (the source tree) or PREFIX/bin/koe -> ../share/koe/INSTALLED (make install). Fills out with
 * the first that exists; returns -1 when neither does. */
int cli_shipped_path(const char *source, const char *installed, char *out, size_t n);

/* cli.c — parsing, checking and describing a command line from its flag table. See cli.h.
 * Must not: print unless told to (under mpirun only rank 0 says why a command line is wrong). */
#include "cli.h"

#include <math.h>
#include <omp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/config_keys.h"

/* ---- values ------------------------------------------------------------------------------------ */

/* A range bound as typed: 4096, 0.5, 1e-09. */
static void bound_text(char *buf, size_t n, double v) {
    if (v == floor(v) && fabs(v) < 1e16) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%g", v);
}

static void range_text(const CliFlag *f, char *buf, size_t n) {
    char lo[32], hi[32];
    bound_text(lo, sizeof lo, f->lo);
    bound_text(hi, sizeof hi, f->hi);
    if (f->how & CLI_ABOVE_LO) snprintf(buf, n, "greater than %s and at most %s", lo, hi);
    else snprintf(buf, n, "between %s and %s", lo, hi);
}

static int out_of_range(const CliFlag *f, double v, char *why, size_t n) {
    int below = f->how & CLI_ABOVE_LO ? !(v > f->lo) : !(v >= f->lo);
    if (!below && v <= f->hi) return 0;
    char range[96];
    range_text(f, range, sizeof range);
    snprintf(why, n, "must be %s", range);
    return -1;
}

/* Numbers as recipes write them (core/config_keys.h: whole string, decimal); beyond the type is out
 * of the flag's range. */
static int parse_signed(const CliFlag *f, const char *s, int64_t *v, char *why, size_t n) {
    const int rc = config_parse_i64(s, v);
    if (rc < 0) {
        snprintf(why, n, "not an integer");
        return -1;
    }
    return out_of_range(f, rc ? (*v < 0 ? -INFINITY : INFINITY) : (double)*v, why, n);
}

static int parse_unsigned(const CliFlag *f, const char *s, uint64_t *v, char *why, size_t n) {
    const int rc = config_parse_u64(s, v);
    if (rc < 0) {
        snprintf(why, n, "not an integer");
        return -1;
    }
    return out_of_range(f, rc ? (*s == '-' ? -1.0 : INFINITY) : (double)*v, why, n);
}

static int parse_real(const CliFlag *f, const char *s, double *v, char *why, size_t n) {
    if (config_parse_real(s, v) < 0 || isnan(*v)) {
        snprintf(why, n, "not a number");
        return -1;
    }
    return out_of_range(f, *v, why, n);
}

/* The field f points at in opts gets the value s. */
static int set_value(const CliFlag *f, const char *s, void *opts, char *why, size_t n) {
    char *dst = (char *)opts + f->off;
    int64_t i;
    uint64_t u;
    double d;
    switch (f->type) {
    case CLI_STR: /* a path or a name: an empty one would fail only after the work */
        if (!*s) {
            snprintf(why, n, "empty value");
            return -1;
        }
        *(const char **)dst = s;
        return 0;
    case CLI_BOOL: *(int *)dst = 1; return 0;
    case CLI_CUSTOM: return f->parse(s, dst, why, n);
    case CLI_INT:
        if (parse_signed(f, s, &i, why, n)) return -1;
        KOE_ASSERT(i >= INT32_MIN && i <= INT32_MAX); /* the table's range keeps an int an int */
        *(int *)dst = (int)i;
        return 0;
    case CLI_I64:
        if (parse_signed(f, s, &i, why, n)) return -1;
        *(int64_t *)dst = (int64_t)i;
        return 0;
    case CLI_U64:
        if (parse_unsigned(f, s, &u, why, n)) return -1;
        *(uint64_t *)dst = (uint64_t)u;
        return 0;
    case CLI_DOUBLE:
        if (parse_real(f, s, &d, why, n)) return -1;
        *(double *)dst = d;
        return 0;
    }
    return -1;
}

/* ---- parsing ----------------------------------------------------------------------------------- */

static int n_flags(const CliCommand *c) {
    int n = 0;
    while (c->flags[n].flag) n++;
    return n;
}

static const CliFlag *find_flag(const CliCommand *c, const char *arg, size_t len) {
    for (const CliFlag *f = c->flags; f->flag; f++)
        if (strlen(f->flag) == len && !strncmp(f->flag, arg, len)) return f;
    return NULL;
}

int cli_error(const CliCommand *c, int say, const char *fmt, ...) {
    if (say) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "koe %s: ", c->name);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (see `koe help %s`)\n", c->name);
        va_end(ap);
    }
    return KOE_EXIT_USAGE;
}

static void set_defaults(const CliCommand *c, void *opts) {
    memset(opts, 0, c->opts_size);
    for (const CliFlag *f = c->flags; f->flag; f++) {
        char why[256];
        KOE_ASSERT(f->off < c->opts_size);
        if (f->def && set_value(f, f->def, opts, why, sizeof why))
            koe_fatal(KOE_EXIT_INTERNAL, "koe %s: the default of %s, %s: %s", c->name, f->flag, f->def, why);
    }
}

/* One "--flag[=value]" at argv[*i]; moves *i past its value. Returns CLI_RUN or an exit code. */
static int parse_flag(const CliCommand *c, int argc, char **argv, int *i, void *opts, char *seen, int say) {
    const char *a = argv[*i], *eq = strchr(a, '=');
    const CliFlag *f = find_flag(c, a, eq ? (size_t)(eq - a) : strlen(a));
    if (!f) return cli_error(c, say, "unknown option '%.*s'", eq ? (int)(eq - a) : (int)strlen(a), a);
    seen[f - c->flags] = 1;
    const char *v = eq ? eq + 1 : NULL;
    if (f->type == CLI_BOOL) {
        if (v) return cli_error(c, say, "%s takes no value", f->flag);
        v = "";
    } else if (!v) {
        if (*i + 1 >= argc) return cli_error(c, say, "%s needs a value (%s %s)", f->flag, f->flag, f->metavar);
        v = argv[++*i];
    }
    char why[512];
    if (set_value(f, v, opts, why, sizeof why)) return cli_error(c, say, "%s %s: %s", f->flag, *v ? v : "''", why);
    return CLI_RUN;
}

static int is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

int cli_parse(const CliCommand *c, int argc, char **argv, void *opts, char **args, int *n_args, int say) {
    set_defaults(c, opts);
    *n_args = 0;
    char *seen = koe_calloc((size_t)n_flags(c) + 1, 1);
    int rc = CLI_RUN, flags_done = 0;
    for (int i = 1; i < argc && rc == CLI_RUN; i++) {
        const char *a = argv[i];
        if (!flags_done && is_help(a)) {
            if (say) cli_help(c, stdout);
            rc = KOE_EXIT_OK;
        } else if (!flags_done && !strcmp(a, "--")) {
            flags_done = 1;
        } else if (!flags_done && a[0] == '-' && a[1]) {
            rc = parse_flag(c, argc, argv, &i, opts, seen, say);
        } else if (c->max_args >= 0 && *n_args >= c->max_args) {
            rc = c->max_args ? cli_error(c, say, "unexpected argument '%s' (expected %s)", a, c->args)
                             : cli_error(c, say, "unexpected argument '%s'", a);
        } else {
            args[(*n_args)++] = argv[i];
        }
    }
    for (int k = 0; rc == CLI_RUN && c->flags[k].flag; k++)
        if ((c->flags[k].how & CLI_REQUIRED) && !seen[k])
            rc = cli_error(c, say, "%s %s is required", c->flags[k].flag, c->flags[k].metavar);
    if (rc == CLI_RUN && *n_args < c->min_args) rc = cli_error(c, say, "missing %s", c->args);
    free(seen);
    return rc;
}

/* ---- help -------------------------------------------------------------------------------------- */

/* "(required)", "(default 4, in [1, 4096])", "(in (0, 1])", or "". */
static void flag_note(const CliFlag *f, char *buf, size_t n) {
    char range[96] = "";
    if (f->type != CLI_STR && f->type != CLI_BOOL && f->type != CLI_CUSTOM) {
        char lo[32], hi[32];
        bound_text(lo, sizeof lo, f->lo);
        bound_text(hi, sizeof hi, f->hi);
        snprintf(range, sizeof range, "in %c%s, %s]", f->how & CLI_ABOVE_LO ? '(' : '[', lo, hi);
    }
    if (f->how & CLI_REQUIRED) snprintf(buf, n, "(required%s%s)", *range ? ", " : "", range);
    else if (f->def) snprintf(buf, n, "(default %s%s%s)", f->def, *range ? ", " : "", range);
    else if (*range) snprintf(buf, n, "(%s)", range);
    else buf[0] = 0;
}

#define HELP_WIDTH 100 /* a note that would end past this goes on its own line */

/* "  --flag METAVAR" */
static int flag_head(const CliFlag *f, char *buf, size_t n) {
    return snprintf(buf, n, "  %s%s%s", f->flag, f->metavar ? " " : "", f->metavar ? f->metavar : "");
}

/* The flag's line(s); its help starts at column col. */
static void print_flag(const CliFlag *f, int col, FILE *out) {
    char head[64], note[192];
    int len = flag_head(f, head, sizeof head);
    flag_note(f, note, sizeof note);
    int at = len + 2 > col ? len + 2 : col; /* the column after the last line printed */
    fprintf(out, "%s%*s", head, at - len, "");
    for (const char *p = f->help; *p;) { /* later lines of the help indented to the column */
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        fprintf(out, "%.*s", n, p);
        at += n;
        if (!nl) break;
        fprintf(out, "\n%*s", col, "");
        at = col;
        p = nl + 1;
    }
    if (!*note) fprintf(out, "\n");
    else if (at + 1 + (int)strlen(note) <= HELP_WIDTH) fprintf(out, " %s\n", note);
    else fprintf(out, "\n%*s%s\n", col, "", note);
}

void cli_help(const CliCommand *c, FILE *out) {
    int optional = 0;
    fprintf(out, "usage: koe %s", c->name);
    if (c->args) fprintf(out, " %s", c->args);
    for (const CliFlag *f = c->flags; f->flag; f++) {
        if (f->how & CLI_REQUIRED) fprintf(out, " %s %s", f->flag, f->metavar);
        else optional = 1;
    }
    fprintf(out, "%s\n\n%s", optional ? " [options]" : "", c->about);
    if (c->flags[0].flag) fprintf(out, "\noptions:\n");
    int col = 0; /* the help column: after the longest flag, but not too far right */
    for (const CliFlag *f = c->flags; f->flag; f++) {
        char head[64];
        int len = flag_head(f, head, sizeof head) + 2;
        col = len > col && len <= 26 ? len : col;
    }
    for (const CliFlag *f = c->flags; f->flag; f++) print_flag(f, col, out);
    if (c->help_more) c->help_more(out);
}

/* ---- threads ----------------------------------------------------------------------------------- */

void cli_catch_stop_signals(void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

int cli_threads(int given, int recipe_threads) {
    int n = given > 0 ? given : recipe_threads;
    const char *env = getenv("OMP_NUM_THREADS");
    if (n < 1 && env && *env) { /* "4" or "4,2" (one count per nesting level): the first */
        int64_t v;
        if (config_parse_i64_n(env, strcspn(env, ","), &v) || v < 1 || v > 4096)
            koe_warn("OMP_NUM_THREADS=%s is not a thread count in [1, 4096]: using 1 thread", env);
        else n = (int)v;
    }
    if (n < 1) n = 1;
    cpu_set_t cpus; /* the cores this process may run on (taskset, cgroups, Slurm's binding) */
    const int cores = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 0;
    if (cores > 0 && n > cores)
        koe_warn("%d threads on %d cores: oversubscribed, every step waits for threads that share a core; "
                 "use at most %d, or give the process %d cores (srun --cpus-per-task=%d; mpirun binds each of "
                 "1 or 2 ranks to one core unless given --map-by slot:PE=%d --bind-to core)",
                 n, cores, cores, n, n, n);
    omp_set_num_threads(n);
    return n;
}

int cli_shipped_path(const char *source, const char *installed, char *out, size_t n) {
    char exe[4096];
    const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return -1;
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0;
    const char *const cands[2][2] = {{"", source}, {"share/koe/", installed}};
    for (int i = 0; i < 2; i++) {
        char p[4200];
        struct stat st;
        const int m = snprintf(p, sizeof p, "%s/../%s%s", exe, cands[i][0], cands[i][1]);
        if (m > 0 && (size_t)m < sizeof p && (size_t)m < n && stat(p, &st) == 0) {
            memcpy(out, p, (size_t)m + 1);
            return 0;
        }
    }
    return -1;
}

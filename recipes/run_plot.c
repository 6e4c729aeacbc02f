/* run_plot.c — see run_plot.h. log.jsonl is read into one column of (step, value) points per field
 * (jansson), then a table of charts picks the fields each one draws. */
#include "run_plot.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <jansson.h>

#include "plot.h"

typedef struct {
    char *name;
    double *x, *y; /* (n) step, value */
    int64_t n, cap;
} Column;

typedef struct {
    Column *c;
    int n, cap;
} Columns;

/* A chart: up to 4 fields of log.jsonl, each a curve with its legend. */
typedef struct {
    const char *stem, *title, *ylabel;
    int log_y;
    const char *fields[4][2]; /* {key, legend} */
} RunChart;

static const RunChart run_charts[] = {
    {"loss", "loss per scored frame", "nats", 0, {{"loss", "train"}, {"valid_loss", "valid"}, {"head_loss", "head (train)"}}},
    {"acc", "accuracy on scored frames", "accuracy", 0, {{"acc", "train"}, {"valid_acc", "valid"}, {"acc_u", "unmasked (train)"}}},
    {"loss_terms", "auxiliary loss terms (weighted, per scored frame)", "nats", 0,
     {{"diversity_loss", "diversity"}, {"feature_pen", "feature penalty"}}},
    {"lr", "learning rate", "lr", 0, {{"lr", "lr"}}},
    {"grad_norm", "gradient norm before clipping", "norm", 1, {{"grad_norm", "grad norm"}}},
    {"clip", "fraction of updates clipped", "fraction", 0, {{"clip", "clipped"}}},
    {"throughput", "throughput", "audio seconds per second", 0, {{"audio_s_per_s", "audio s/s"}}},
    {"comm_time", "wait for the gradient reduction", "seconds per update", 0, {{"comm_time_s", "comm time"}}},
    {"perplexity", "wav2vec 2.0 codebook perplexity", "perplexity", 0, {{"code_ppl", "code"}, {"prob_ppl", "prob"}}},
    {"temp", "wav2vec 2.0 Gumbel temperature", "temperature", 0, {{"temp", "temp"}}},
    {"code_usage", "BEST-RQ codebook entries used in the interval", "share", 0, {{"code_usage", "code usage"}}},
    {"target_ppl", "BEST-RQ target perplexity", "perplexity", 0, {{"target_ppl", "target ppl"}}},
};

static Column *column(Columns *cs, const char *name, int create) {
    for (int i = 0; i < cs->n; i++)
        if (!strcmp(cs->c[i].name, name)) return &cs->c[i];
    if (!create) return NULL;
    if (cs->n == cs->cap) {
        cs->cap = cs->cap ? 2 * cs->cap : 16;
        cs->c = koe_realloc(cs->c, (size_t)cs->cap * sizeof *cs->c);
    }
    Column *c = &cs->c[cs->n++];
    memset(c, 0, sizeof *c);
    c->name = koe_strdup(name);
    return c;
}

static void column_add(Column *c, double x, double y) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 256;
        c->x = koe_realloc(c->x, (size_t)c->cap * sizeof *c->x);
        c->y = koe_realloc(c->y, (size_t)c->cap * sizeof *c->y);
    }
    c->x[c->n] = x;
    c->y[c->n++] = y;
}

static void columns_free(Columns *cs) {
    for (int i = 0; i < cs->n; i++) {
        free(cs->c[i].name);
        free(cs->c[i].x);
        free(cs->c[i].y);
    }
    free(cs->c);
}

/* Every numeric field of every line, against the line's step. */
static int read_log(const char *path, Columns *cs, KoeError *err) {
    FILE *f = fopen(path, "r");
    if (!f) return koe_error_set(err, "%s: cannot open: %s (is the argument a run directory of koe train?)", path,
                                 strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (int64_t lineno = 1; rc == 0 && getline(&line, &cap, f) > 0; lineno++) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je), *step = o ? json_object_get(o, "step") : NULL;
        if (!json_is_integer(step))
            rc = koe_error_set(err, "%s:%lld: %s", path, (long long)lineno,
                               o ? "no integer \"step\"" : je.text);
        const char *key;
        json_t *v;
        if (rc == 0)
            json_object_foreach(o, key, v) {
                if (json_is_number(v) && strcmp(key, "step"))
                    column_add(column(cs, key, 1), (double)json_integer_value(step), json_number_value(v));
            }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return rc;
}

int run_plot(const char *log_path, const char *out_dir, int formats, FILE *ascii, int *n_charts, KoeError *err) {
    *n_charts = 0;
    if (mkdir(out_dir, 0777) < 0 && errno != EEXIST)
        return koe_error_set(err, "%s: cannot create directory: %s", out_dir, strerror(errno));
    enum { N_CHARTS = sizeof run_charts / sizeof run_charts[0] };
    char(*stems)[4400] = koe_malloc(N_CHARTS * sizeof *stems);
    const char *drawn[N_CHARTS];
    Columns cs = {0};
    int rc = read_log(log_path, &cs, err);
    for (size_t i = 0; rc == PLOT_DRAWN && i < N_CHARTS; i++) {
        const RunChart *ch = &run_charts[i];
        PlotSeries s[4];
        int n = 0;
        for (int j = 0; j < 4 && ch->fields[j][0]; j++) {
            const Column *c = column(&cs, ch->fields[j][0], 0);
            if (c) s[n++] = (PlotSeries){ch->fields[j][1], c->x, c->y, c->n};
        }
        if (!n) continue;
        char *stem = stems[*n_charts];
        snprintf(stem, sizeof stems[0], "%s/%s", out_dir, ch->stem);
        PlotSpec p = {.title = ch->title, .xlabel = "update", .ylabel = ch->ylabel, .log_y = ch->log_y,
                      .formats = formats, .defer = 1};
        const int r = plot_lines(stem, &p, s, n, err);
        if (r == PLOT_DRAWN) drawn[(*n_charts)++] = stem;
        else if (r != PLOT_EMPTY)
            rc = r; /* a script not written: stop */
    }
    if (rc == PLOT_DRAWN) rc = plot_draw(drawn, *n_charts, (formats & PLOT_ASCII) ? ascii : NULL, err); /* one gnuplot */
    columns_free(&cs);
    free(stems);
    return rc;
}

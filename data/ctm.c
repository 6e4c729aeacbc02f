/* ctm.c — see ctm.h. */
#include "ctm.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_seg(const void *a, const void *b) {
    const CtmSeg *x = a, *y = b;
    int c = strcmp(x->utt, y->utt);
    if (c) return c;
    return x->start < y->start ? -1 : x->start > y->start;
}

int ctm_read(const char *path, const char *flag, CtmSeg **out, int64_t *n_out, KoeError *err) {
    FILE *f = fopen(path, "r");
    if (!f) return koe_error_set(err, "%s %s: cannot open: %s", flag, path, strerror(errno));
    CtmSeg *segs = NULL;
    int64_t n = 0, cap = 0, lineno = 0;
    char *line = NULL;
    size_t line_cap = 0;
    int rc = 0;
    while (getline(&line, &line_cap, f) >= 0) {
        lineno++;
        char utt[1024], chan[64], name[256];
        double start, dur;
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == 0 || *s == '\n' || *s == ';') continue; /* blank or a CTM comment */
        if (sscanf(s, "%1023s %63s %lf %lf %255s", utt, chan, &start, &dur, name) != 5 || !isfinite(start) ||
            !isfinite(dur) || start < 0 || dur < 0) {
            rc = koe_error_set(err, "%s %s:%lld: expected `utt channel start dur %s` (seconds, >= 0)", flag, path,
                               (long long)lineno, !strcmp(flag, "--align") ? "phone" : "word");
            break;
        }
        if (n == cap) segs = koe_realloc(segs, (size_t)(cap = cap ? 2 * cap : 1024) * sizeof *segs);
        segs[n++] = (CtmSeg){koe_strdup(utt), koe_strdup(name), start, start + dur};
    }
    free(line);
    fclose(f);
    if (rc == 0 && n == 0) rc = koe_error_set(err, "%s %s: no alignment lines", flag, path);
    if (rc) {
        ctm_free(segs, n);
        return rc;
    }
    qsort(segs, (size_t)n, sizeof *segs, cmp_seg);
    *out = segs;
    *n_out = n;
    return 0;
}

void ctm_free(CtmSeg *segs, int64_t n) {
    for (int64_t i = 0; i < n; i++) free(segs[i].utt), free(segs[i].name);
    free(segs);
}

typedef struct {
    const char *id;
    int64_t utt;
} IdIndex;

static int cmp_id(const void *a, const void *b) { return strcmp(((const IdIndex *)a)->id, ((const IdIndex *)b)->id); }

int64_t ctm_match_corpus(const CtmSeg *segs, int64_t n, const Corpus *c, int64_t *utt) {
    IdIndex *ids = koe_malloc(sizeof *ids * (size_t)(c->n_utts ? c->n_utts : 1));
    for (int64_t u = 0; u < c->n_utts; u++) ids[u] = (IdIndex){corpus_utt_id(c, u), u};
    qsort(ids, (size_t)c->n_utts, sizeof *ids, cmp_id);
    int64_t hits = 0;
    for (int64_t i = 0; i < n; i++) {
        const IdIndex key = {segs[i].utt, 0}, *h = bsearch(&key, ids, (size_t)c->n_utts, sizeof *ids, cmp_id);
        utt[i] = h ? h->utt : -1;
        hits += h != NULL;
    }
    free(ids);
    return hits;
}

int ctm_write(FILE *f, const CtmSeg *segs, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (fprintf(f, "%s 1 %.3f %.3f %s\n", segs[i].utt, segs[i].start, segs[i].end - segs[i].start, segs[i].name) < 0)
            return -1;
    return 0;
}

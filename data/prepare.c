/* prepare.c — inputs to corpus shards: collect, probe, plan, decode, write. See prepare.h.
 * Must not talk MPI (the caller sums the probe and gathers rejections) nor write shard files
 * itself (data/shard.c does, through ShardWriter). */
#include "prepare.h"

#include "ctm.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/progress.h"
#include "audio.h"
#include "shard.h"

/* ---- rejections ---------------------------------------------------------------------------- */

/* Tabs and newlines would break the report's columns. */
static char *one_line(const char *s) {
    char *t = koe_strdup(s);
    for (char *c = t; *c; c++)
        if (*c == '\t' || *c == '\n' || *c == '\r') *c = ' ';
    return t;
}

void prepare_reject(PrepareRejects *r, int64_t order, const char *input, const char *reason) {
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->v = koe_realloc(r->v, (size_t)r->cap * sizeof *r->v);
    }
    r->v[r->n++] = (PrepareReject){order, one_line(input), one_line(reason)};
}

void prepare_rejects_free(PrepareRejects *r) {
    for (int64_t i = 0; i < r->n; i++) free(r->v[i].input), free(r->v[i].reason);
    free(r->v);
    memset(r, 0, sizeof *r);
}

static int cmp_reject(const void *a, const void *b) {
    const PrepareReject *x = a, *y = b;
    if (x->order != y->order) return x->order < y->order ? -1 : 1;
    return strcmp(x->input, y->input);
}

int prepare_report_write(const char *path, PrepareRejects *r, KoeError *err) {
    if (r->n) qsort(r->v, (size_t)r->n, sizeof *r->v, cmp_reject); /* v is NULL when empty */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        koe_error_set(err, "%s: cannot write the report: %s", tmp, strerror(errno));
        return koe_error_fs(err, tmp);
    }
    fprintf(f, "input\treason\n");
    for (int64_t i = 0; i < r->n; i++) fprintf(f, "%s\t%s\n", r->v[i].input, r->v[i].reason);
    int bad = fflush(f) != 0 || ferror(f);
    bad |= fclose(f) != 0;
    if (bad) {
        koe_error_set(err, "%s: cannot write the report: %s", tmp, strerror(errno));
        koe_error_fs(err, tmp);
        unlink(tmp);
        return -1;
    }
    return koe_publish_file(tmp, path, err);
}

char *prepare_rejects_serialize(const PrepareRejects *r, int64_t *bytes) {
    size_t n = 1;
    for (int64_t i = 0; i < r->n; i++) n += 32 + strlen(r->v[i].input) + strlen(r->v[i].reason);
    char *buf = koe_malloc(n), *p = buf;
    for (int64_t i = 0; i < r->n; i++)
        p += sprintf(p, "%lld\t%s\t%s\n", (long long)r->v[i].order, r->v[i].input, r->v[i].reason);
    *bytes = p - buf;
    return buf;
}

void prepare_rejects_deserialize(PrepareRejects *r, const char *buf, int64_t bytes) {
    const char *p = buf, *end = buf + bytes;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        KOE_ASSERT(nl);
        const char *t1 = memchr(p, '\t', (size_t)(nl - p));
        KOE_ASSERT(t1);
        const char *t2 = memchr(t1 + 1, '\t', (size_t)(nl - t1 - 1));
        KOE_ASSERT(t2);
        char *input = koe_malloc((size_t)(t2 - t1)), *reason = koe_malloc((size_t)(nl - t2));
        memcpy(input, t1 + 1, (size_t)(t2 - t1 - 1));
        input[t2 - t1 - 1] = 0;
        memcpy(reason, t2 + 1, (size_t)(nl - t2 - 1));
        reason[nl - t2 - 1] = 0;
        prepare_reject(r, strtoll(p, NULL, 10), input, reason);
        free(input), free(reason);
        p = nl + 1;
    }
}

/* ---- collection ---------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Name of the directory holding path ("b" for "a/b/c.wav"), or NULL when path has none. */
static char *parent_name(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return NULL;
    const char *end = slash;
    while (end > path && end[-1] == '/') end--; /* "a//c.wav" */
    const char *start = end;
    while (start > path && start[-1] != '/') start--;
    size_t n = (size_t)(end - start);
    if (n == 0 || (n == 1 && start[0] == '.') || (n == 2 && start[0] == '.' && start[1] == '.')) return NULL;
    char *s = koe_malloc(n + 1);
    memcpy(s, start, n);
    s[n] = 0;
    return s;
}

/* "spk/utt.flac" -> "spk/utt": drops the extension of the last component only. */
static char *strip_ext(const char *rel) {
    char *s = koe_strdup(rel);
    char *dot = strrchr(s, '.'), *slash = strrchr(s, '/');
    if (dot && dot > s && (!slash || dot > slash + 1)) *dot = 0;
    return s;
}

static void add_item(PreparePlan *p, int64_t *cap, const PrepareOptions *opt, const char *id, const char *source,
                     const char *origin, const char *manifest_lang, int is_pipe, int64_t order) {
    if (p->n_items == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        p->items = koe_realloc(p->items, (size_t)*cap * sizeof *p->items);
    }
    char *parent = is_pipe ? NULL : parent_name(source);
    const char *lang = opt->lang            ? opt->lang
                       : opt->lang_from_dir ? (parent ? parent : "und")
                       : manifest_lang      ? manifest_lang
                                            : "und";
    p->items[p->n_items++] = (PrepareItem){
        .id = koe_strdup(id),
        .source = koe_strdup(source),
        .origin = koe_strdup(origin),
        .lang = koe_strdup(lang),
        .speaker = koe_strdup(parent ? parent : "unknown"),
        .is_pipe = is_pipe,
        .order = order,
    };
    free(parent);
}

/* Recursive listing: every non-hidden entry below root that is not a directory, plus the
 * directories that could not be walked (kept with their reason). */
typedef struct {
    char *path, *why; /* why: NULL for a candidate file */
} ListEntry;

typedef struct {
    ListEntry *v;
    int64_t n, cap;
} Listing;

static void listing_add(Listing *l, const char *path, const char *why) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = koe_realloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (ListEntry){koe_strdup(path), why ? koe_strdup(why) : NULL};
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const ListEntry *)a)->path, ((const ListEntry *)b)->path);
}

static void walk(const char *dir, Listing *l) {
    DIR *d = opendir(dir);
    if (!d) {
        char why[4400];
        snprintf(why, sizeof why, "%s: cannot list the directory: %s", dir, strerror(errno));
        listing_add(l, dir, why);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue; /* hidden, ".", ".." */
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *path = koe_malloc(n);
        snprintf(path, n, "%s/%s", dir, e->d_name);
        struct stat lst, st;
        int is_link = lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode);
        if (!is_link && S_ISDIR(lst.st_mode)) {
            walk(path, l);
        } else if (is_link && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            char why[4400];
            snprintf(why, sizeof why, "%s: symbolic link to a directory, not followed (pass its target as an input)",
                     path);
            listing_add(l, path, why);
        } else {
            listing_add(l, path, NULL); /* libsndfile decides whether it is audio */
        }
        free(path);
    }
    closedir(d);
}

static void collect_dir(PreparePlan *p, int64_t *cap, const char *root, const PrepareOptions *opt,
                        PrepareRejects *rej) {
    Listing l = {0};
    walk(root, &l);
    if (l.n) qsort(l.v, (size_t)l.n, sizeof *l.v, cmp_entry);
    size_t root_len = strlen(root);
    for (int64_t i = 0; i < l.n; i++) {
        const ListEntry *e = &l.v[i];
        int64_t order = p->n_orders++;
        if (e->why) {
            prepare_reject(rej, order, e->path, e->why);
            continue;
        }
        const char *rel = e->path + root_len + 1;
        if (strpbrk(rel, "\t\n\r")) {
            prepare_reject(rej, order, e->path, "file name contains a tab or newline: rename it");
            continue;
        }
        char *id = strip_ext(rel);
        add_item(p, cap, opt, id, e->path, e->path, NULL, 0, order);
        free(id);
    }
    for (int64_t i = 0; i < l.n; i++) free(l.v[i].path), free(l.v[i].why);
    free(l.v);
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = 0;
}

/* fairseq manifest: first line the root directory, then relpath<TAB>nsamples[<TAB>lang]. A relative
 * root is taken relative to the manifest's own directory (so a corpus directory can be moved). */
static void collect_tsv(PreparePlan *p, int64_t *cap, const char *tsv, const PrepareOptions *opt,
                        PrepareRejects *rej) {
    char where[4200], why[4400];
    FILE *f = fopen(tsv, "r");
    if (!f) {
        snprintf(why, sizeof why, "%s: cannot open the manifest: %s", tsv, strerror(errno));
        prepare_reject(rej, p->n_orders++, tsv, why);
        return;
    }
    char *line = NULL, *root = NULL;
    size_t line_cap = 0;
    int64_t lineno = 0;
    while (getline(&line, &line_cap, f) >= 0) {
        lineno++;
        chomp(line);
        snprintf(where, sizeof where, "%s:%lld", tsv, (long long)lineno);
        if (lineno == 1) {
            if (line[0] == 0 || strchr(line, '\t')) {
                snprintf(why, sizeof why, "%s: the first line of a fairseq manifest must be the root directory",
                         where);
                prepare_reject(rej, p->n_orders++, tsv, why);
                break;
            }
            if (line[0] == '/' || !strchr(tsv, '/')) {
                root = koe_strdup(line);
            } else {
                size_t dn = (size_t)(strrchr(tsv, '/') - tsv);
                root = koe_malloc(dn + strlen(line) + 2);
                sprintf(root, "%.*s/%s", (int)dn, tsv, line);
            }
            continue;
        }
        if (line[0] == 0) continue;
        char *f1 = line, *f2 = strchr(f1, '\t'), *f3 = f2 ? strchr(f2 + 1, '\t') : NULL;
        if (f2) *f2++ = 0;
        if (f3) *f3++ = 0;
        char *endp = NULL;
        long long ns = f2 ? strtoll(f2, &endp, 10) : -1;
        if (!f2 || f1[0] == 0 || endp == f2 || *endp || ns < 0 || (f3 && (f3[0] == 0 || strchr(f3, '\t')))) {
            snprintf(why, sizeof why, "%s: expected relpath<TAB>nsamples[<TAB>lang]", where);
            prepare_reject(rej, p->n_orders++, where, why);
            continue;
        }
        size_t n = strlen(root) + strlen(f1) + 2;
        char *path = koe_malloc(n);
        snprintf(path, n, "%s/%s", root, f1);
        char *id = strip_ext(f1);
        add_item(p, cap, opt, id, path, path, f3, 0, p->n_orders++);
        free(id), free(path);
    }
    if (lineno == 0) {
        snprintf(why, sizeof why, "%s: empty manifest (a fairseq .tsv starts with the root directory)", tsv);
        prepare_reject(rej, p->n_orders++, tsv, why);
    }
    free(line), free(root);
    fclose(f);
}

/* Kaldi wav.scp: `uttid path` or `uttid command |`. Paths are relative to the working directory,
 * as in Kaldi. */
static void collect_scp(PreparePlan *p, int64_t *cap, const char *scp, const PrepareOptions *opt,
                        PrepareRejects *rej) {
    char where[4200], why[4600];
    FILE *f = fopen(scp, "r");
    if (!f) {
        snprintf(why, sizeof why, "%s: cannot open the wav.scp: %s", scp, strerror(errno));
        prepare_reject(rej, p->n_orders++, scp, why);
        return;
    }
    char *line = NULL;
    size_t line_cap = 0;
    int64_t lineno = 0;
    while (getline(&line, &line_cap, f) >= 0) {
        lineno++;
        chomp(line);
        snprintf(where, sizeof where, "%s:%lld", scp, (long long)lineno);
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == 0) continue;
        char *id = s;
        while (*s && *s != ' ' && *s != '\t') s++;
        if (*s) *s++ = 0;
        while (*s == ' ' || *s == '\t') s++;
        char *end = s + strlen(s);
        while (end > s && (end[-1] == ' ' || end[-1] == '\t')) *--end = 0;
        if (*s == 0) {
            snprintf(why, sizeof why, "%s: expected `uttid path` or `uttid command |`", where);
            prepare_reject(rej, p->n_orders++, where, why);
            continue;
        }
        int is_pipe = end[-1] == '|';
        if (is_pipe) {
            *--end = 0;
            while (end > s && (end[-1] == ' ' || end[-1] == '\t')) *--end = 0;
            if (!opt->allow_pipes) {
                snprintf(why, sizeof why,
                         "%s: utterance %s is a pipe command (`%s |`); refused: rerun with --allow-pipes to "
                         "execute wav.scp commands",
                         where, id, s);
                prepare_reject(rej, p->n_orders++, where, why);
                continue;
            }
            if (*s == 0) {
                snprintf(why, sizeof why, "%s: utterance %s: empty pipe command", where, id);
                prepare_reject(rej, p->n_orders++, where, why);
                continue;
            }
        }
        add_item(p, cap, opt, id, s, is_pipe ? where : s, NULL, is_pipe, p->n_orders++);
    }
    if (lineno == 0) {
        snprintf(why, sizeof why, "%s: empty wav.scp", scp);
        prepare_reject(rej, p->n_orders++, scp, why);
    }
    free(line);
    fclose(f);
}

/* Keep the first of every id (in candidate order), reject the rest. */
static PrepareItem *dup_sort_items; /* qsort has no context argument */
static int cmp_item_id(const void *a, const void *b) {
    const PrepareItem *x = &dup_sort_items[*(const int64_t *)a], *y = &dup_sort_items[*(const int64_t *)b];
    int c = strcmp(x->id, y->id);
    if (c) return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void item_free(PrepareItem *it) {
    free(it->id), free(it->source), free(it->origin), free(it->lang), free(it->speaker);
}

static void reject_duplicates(PreparePlan *p, PrepareRejects *rej) {
    int64_t n = p->n_items;
    int64_t *idx = koe_malloc((size_t)(n ? n : 1) * sizeof *idx);
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    dup_sort_items = p->items;
    qsort(idx, (size_t)n, sizeof *idx, cmp_item_id);
    char *drop = koe_calloc((size_t)(n ? n : 1), 1);
    for (int64_t k = 0, first = 0; k < n; k++) {
        if (k == 0 || strcmp(p->items[idx[k - 1]].id, p->items[idx[k]].id) != 0) {
            first = k; /* the first (lowest order) of a run of equal ids */
            continue;
        }
        const PrepareItem *a = &p->items[idx[first]], *b = &p->items[idx[k]];
        char why[9000];
        snprintf(why, sizeof why, "%s: duplicate utterance id '%s' (already used by %s): rename one of them",
                 b->origin, b->id, a->origin);
        prepare_reject(rej, b->order, b->origin, why);
        drop[idx[k]] = 1;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (drop[i])
            item_free(&p->items[i]);
        else
            p->items[m++] = p->items[i];
    }
    p->n_items = m;
    free(drop), free(idx);
}

void prepare_collect(PreparePlan *p, char *const *inputs, int n_inputs, const PrepareOptions *opt,
                     PrepareRejects *rej) {
    memset(p, 0, sizeof *p);
    int64_t cap = 0;
    for (int a = 0; a < n_inputs; a++) {
        char *in = koe_strdup(inputs[a]);
        size_t n = strlen(in);
        while (n > 1 && in[n - 1] == '/') in[--n] = 0;
        struct stat st;
        KoeError why;
        if (audio_stat(in, &st, &why)) {
            prepare_reject(rej, p->n_orders++, in, why.msg);
        } else if (S_ISDIR(st.st_mode)) {
            collect_dir(p, &cap, in, opt, rej);
        } else if (ends_with(in, ".tsv")) {
            collect_tsv(p, &cap, in, opt, rej);
        } else if (ends_with(in, ".scp")) {
            collect_scp(p, &cap, in, opt, rej);
        } else {
            char *id = strip_ext(base_name(in));
            add_item(p, &cap, opt, id, in, in, NULL, 0, p->n_orders++);
            free(id);
        }
        free(in);
    }
    reject_duplicates(p, rej);
    p->est_samples = koe_calloc((size_t)(p->n_items ? p->n_items : 1), sizeof *p->est_samples);
}

/* ---- alignments ---------------------------------------------------------------------------- */

int prepare_load_align(PreparePlan *p, const char *ctm_path, KoeError *err) {
    CtmSeg *segs = NULL;
    int64_t n = 0;
    int rc = ctm_read(ctm_path, "--align", &segs, &n, err);
    if (rc == 0) {
        /* Phone inventory: sorted, unique. */
        char **ph = koe_malloc((size_t)n * sizeof *ph);
        for (int64_t i = 0; i < n; i++) ph[i] = segs[i].name;
        qsort(ph, (size_t)n, sizeof *ph, cmp_str);
        int64_t np = 0;
        for (int64_t i = 0; i < n; i++)
            if (np == 0 || strcmp(ph[np - 1], ph[i]) != 0) ph[np++] = ph[i];
        if (np >= SHARD_NO_PHONE) {
            rc = koe_error_set(err, "--align %s: %lld distinct phones, more than %d", ctm_path, (long long)np,
                               SHARD_NO_PHONE - 1);
        } else {
            p->n_phones = (int)np;
            p->phones = koe_malloc((size_t)np * sizeof *p->phones);
            for (int64_t i = 0; i < np; i++) p->phones[i] = koe_strdup(ph[i]);
            p->seg_start = koe_malloc((size_t)n * sizeof *p->seg_start);
            p->seg_end = koe_malloc((size_t)n * sizeof *p->seg_end);
            p->seg_phone = koe_malloc((size_t)n * sizeof *p->seg_phone);
            p->align_utt = koe_malloc((size_t)n * sizeof *p->align_utt);
            p->align_first = koe_malloc((size_t)(n + 1) * sizeof *p->align_first);
            for (int64_t i = 0; i < n; i++) {
                if (i == 0 || strcmp(segs[i - 1].utt, segs[i].utt) != 0) {
                    p->align_utt[p->n_align_utts] = koe_strdup(segs[i].utt);
                    p->align_first[p->n_align_utts++] = i;
                }
                p->seg_start[i] = segs[i].start;
                p->seg_end[i] = segs[i].end;
                char **hit = bsearch(&segs[i].name, p->phones, (size_t)np, sizeof *p->phones, cmp_str);
                KOE_ASSERT(hit);
                p->seg_phone[i] = (int)(hit - p->phones);
            }
            p->align_first[p->n_align_utts] = n;
        }
        free(ph);
    }
    ctm_free(segs, n);
    return rc;
}

/* 10 ms frames of utterance id (n samples at 16 kHz): the phone of each segment fills the frames
 * from round(start / 10 ms) to round(end / 10 ms); later segments win; uncovered = SHARD_NO_PHONE.
 * Returns 1 if the utterance has segments. */
static int align_frames(const PreparePlan *p, const char *id, uint16_t *frames, int64_t n_frames) {
    for (int64_t f = 0; f < n_frames; f++) frames[f] = SHARD_NO_PHONE;
    char **hit = bsearch(&id, p->align_utt, (size_t)p->n_align_utts, sizeof *p->align_utt, cmp_str);
    if (!hit) return 0;
    int64_t u = hit - p->align_utt;
    for (int64_t s = p->align_first[u]; s < p->align_first[u + 1]; s++) {
        int64_t f0 = llround(p->seg_start[s] * 100.0), f1 = llround(p->seg_end[s] * 100.0);
        if (f1 > n_frames) f1 = n_frames;
        for (int64_t f = f0; f < f1; f++) frames[f] = (uint16_t)p->seg_phone[s];
    }
    return 1;
}

/* ---- probe, plan, write -------------------------------------------------------------------- */

void prepare_probe(PreparePlan *p, int rank, int world, PrepareRejects *rej) {
    for (int64_t i = 0; i < p->n_items; i++) {
        p->est_samples[i] = 0;
        if (i % world != rank) continue;
        const PrepareItem *it = &p->items[i];
        if (it->is_pipe) {
            p->est_samples[i] = PREPARE_PIPE_EST_SAMPLES;
            continue;
        }
        AudioInfo info;
        KoeError err = {{0}};
        if (audio_probe_file(it->source, &info, &err) == 0) {
            p->est_samples[i] = info.est_samples;
        } else {
            p->est_samples[i] = -1;
            koe_warn("rejected %s", err.msg);
            prepare_reject(rej, it->order, it->origin, err.msg);
        }
    }
}

void prepare_plan_shards(PreparePlan *p, int64_t shard_bytes) {
    p->plan = koe_malloc((size_t)(p->n_items ? p->n_items : 1) * sizeof *p->plan);
    p->shard_first = koe_malloc((size_t)(p->n_items + 1) * sizeof *p->shard_first);
    p->n_plan = 0;
    p->n_shards = 0;
    int64_t bytes = 0;
    for (int64_t i = 0; i < p->n_items; i++) {
        if (p->est_samples[i] < 0) continue;
        int64_t b = 2 * p->est_samples[i];
        if (p->n_shards == 0 || (bytes > 0 && bytes + b > shard_bytes)) {
            p->shard_first[p->n_shards++] = p->n_plan;
            bytes = 0;
        }
        bytes += b;
        p->plan[p->n_plan++] = i;
    }
    p->shard_first[p->n_shards] = p->n_plan;
}

void prepare_shard_name(int k, char *buf, size_t n) { snprintf(buf, n, "shard-%05d.h5", k); }

/* prepare_write_shards's work, its progress on pr. */
static int write_shards(const PreparePlan *p, const char *out_dir, int rank, int world,
                        const volatile sig_atomic_t *stop, PrepareStats *st, PrepareRejects *rej, Progress *pr,
                        KoeError *err) {
    uint16_t *frames = NULL;
    int64_t frames_cap = 0;
    for (int k = rank; k < p->n_shards; k += world) {
        char name[32], path[4200];
        prepare_shard_name(k, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", out_dir, name);
        ShardWriter *w = NULL; /* created with the first good input: an all-rejected shard is never written */
        for (int64_t j = p->shard_first[k]; j < p->shard_first[k + 1]; j++) {
            if (*stop) {
                shard_writer_abort(w);
                free(frames);
                return -2;
            }
            const PrepareItem *it = &p->items[p->plan[j]];
            Audio a;
            KoeError aerr = {{0}};
            int rc = it->is_pipe ? audio_decode_command(it->source, &a, &aerr) : audio_decode_file(it->source, &a, &aerr);
            progress_add(pr, 1);
            if (rc) {
                if (it->is_pipe) { /* name the wav.scp line too: the command alone may not identify it */
                    KoeError e2;
                    snprintf(e2.msg, sizeof e2.msg, "%.300s: %.700s", it->origin, aerr.msg);
                    aerr = e2;
                }
                koe_warn("rejected %s", aerr.msg);
                prepare_reject(rej, it->order, it->origin, aerr.msg);
                st->files_rejected++;
                continue;
            }
            if (a.clipped)
                koe_warn("%s: %lld samples clipped to the int16 range (%.3f%%)", it->origin, (long long)a.clipped,
                         100.0 * (double)a.clipped / (double)a.n);
            int64_t n_frames = 0;
            if (p->n_phones) {
                n_frames = a.n / (KOE_SAMPLE_RATE / 100);
                if (n_frames > frames_cap) {
                    frames_cap = n_frames;
                    frames = koe_realloc(frames, (size_t)frames_cap * sizeof *frames);
                }
                if (!align_frames(p, it->id, frames, n_frames)) st->unaligned++;
            }
            if (!w && !(w = shard_writer_create(path, p->phones, p->n_phones, err))) {
                audio_free(&a);
                free(frames);
                return -1;
            }
            if (shard_writer_add(w, it->id, it->lang, it->speaker, it->source, a.pcm, a.n,
                                 p->n_phones ? frames : NULL, n_frames, err)) {
                shard_writer_abort(w);
                audio_free(&a);
                free(frames);
                return -1;
            }
            st->shard_utts[k]++;
            st->files_ok++;
            st->samples += a.n;
            st->clipped += a.clipped;
            audio_free(&a);
            progress_detail(pr, "%.2f h written, %lld rejected", (double)st->samples / KOE_SAMPLE_RATE / 3600.0,
                            (long long)st->files_rejected);
        }
        if (w && shard_writer_finish(w, err)) {
            free(frames);
            return -1;
        }
    }
    free(frames);
    return 0;
}

int prepare_write_shards(const PreparePlan *p, const char *out_dir, int rank, int world,
                         const volatile sig_atomic_t *stop, PrepareStats *st, PrepareRejects *rej, KoeError *err) {
    memset(st, 0, sizeof *st);
    st->shard_utts = koe_calloc((size_t)(p->n_shards ? p->n_shards : 1), sizeof *st->shard_utts);
    int64_t mine = 0;
    for (int k = rank; k < p->n_shards; k += world) mine += p->shard_first[k + 1] - p->shard_first[k];
    Progress *pr = progress_open("prepare", "file", mine);
    const int rc = write_shards(p, out_dir, rank, world, stop, st, rej, pr, err);
    progress_close(pr);
    return rc;
}

void prepare_plan_free(PreparePlan *p) {
    for (int64_t i = 0; i < p->n_items; i++) item_free(&p->items[i]);
    free(p->items);
    free(p->est_samples);
    for (int i = 0; i < p->n_phones; i++) free(p->phones[i]);
    free(p->phones);
    for (int64_t i = 0; i < p->n_align_utts; i++) free(p->align_utt[i]);
    free(p->align_utt), free(p->align_first), free(p->seg_start), free(p->seg_end), free(p->seg_phone);
    free(p->plan), free(p->shard_first);
    memset(p, 0, sizeof *p);
}

void prepare_stats_free(PrepareStats *s) {
    free(s->shard_utts);
    memset(s, 0, sizeof *s);
}

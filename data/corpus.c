/* corpus.c — a corpus directory: the index DIR/corpus.h5 and its shards (layout in corpus.h).
 * corpus_open checks the index against the shards it names, so a shard replaced, lost or
 * rewritten after indexing is refused with a message instead of silently changing the data.
 * Must not: split work across ranks (the loader does), write shards (shard.c does). */
#include "corpus.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"

#define CORPUS_INDEX_NAME "corpus.h5"
#define CORPUS_SETTINGS_MAX 65536

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = koe_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* A shard name in the index is a plain file name inside the corpus directory. */
static int check_shard_name(const char *index, const char *name, KoeError *err) {
    if (!name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return koe_error_set(err, "%s: shard name '%s' is not a file name in the corpus directory", index, name);
    return 0;
}

/* ---- statistics shared by the writer and the reader ------------------------------------------ */

typedef struct {
    int n_langs;
    char **langs;       /* (n_langs) sorted, owned */
    int64_t *lang_utts; /* (n_langs) */
    double *lang_hours; /* (n_langs) */
    int32_t *utt_lang;  /* (n_utts) */
    int64_t n_utts;
    double hours;
} CorpusStats;

typedef struct {
    const char *s;
    int shard;
} StrRef;

static int cmp_strref(const void *a, const void *b) {
    return strcmp(((const StrRef *)a)->s, ((const StrRef *)b)->s);
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void stats_free(CorpusStats *st) {
    h5_strings_free(st->langs, st->n_langs);
    free(st->lang_utts);
    free(st->lang_hours);
    free(st->utt_lang);
    memset(st, 0, sizeof *st);
}

/* Languages (sorted), utterances and hours per language, and a check that ids are unique across
 * shards (each shard already checked its own). */
static int stats_compute(const CorpusShard *shards, int n_shards, CorpusStats *st, KoeError *err) {
    memset(st, 0, sizeof *st);
    for (int s = 0; s < n_shards; s++) st->n_utts += shards[s].n;
    size_t n = (size_t)(st->n_utts ? st->n_utts : 1);
    StrRef *refs = koe_malloc(n * sizeof *refs);
    int64_t k = 0;
    for (int s = 0; s < n_shards; s++)
        for (int64_t i = 0; i < shards[s].n; i++) refs[k++] = (StrRef){shards[s].id[i], s};
    qsort(refs, (size_t)st->n_utts, sizeof *refs, cmp_strref);
    for (int64_t i = 1; i < st->n_utts; i++)
        if (strcmp(refs[i - 1].s, refs[i].s) == 0) {
            koe_error_set(err, "utterance id '%s' is in both %s and %s; ids must be unique across the corpus",
                          refs[i].s, shards[refs[i - 1].shard].path, shards[refs[i].shard].path);
            free(refs);
            return -1;
        }
    k = 0;
    for (int s = 0; s < n_shards; s++)
        for (int64_t i = 0; i < shards[s].n; i++) refs[k++] = (StrRef){shards[s].lang[i], s};
    qsort(refs, (size_t)st->n_utts, sizeof *refs, cmp_strref);
    st->langs = koe_malloc(n * sizeof *st->langs);
    for (int64_t i = 0; i < st->n_utts; i++)
        if (i == 0 || strcmp(refs[i - 1].s, refs[i].s) != 0) st->langs[st->n_langs++] = koe_strdup(refs[i].s);
    free(refs);
    st->lang_utts = koe_calloc((size_t)(st->n_langs ? st->n_langs : 1), sizeof *st->lang_utts);
    st->lang_hours = koe_calloc((size_t)(st->n_langs ? st->n_langs : 1), sizeof *st->lang_hours);
    st->utt_lang = koe_malloc(n * sizeof *st->utt_lang);
    int64_t u = 0;
    for (int s = 0; s < n_shards; s++)
        for (int64_t i = 0; i < shards[s].n; i++, u++) {
            char *key = shards[s].lang[i];
            char **hit = bsearch(&key, st->langs, (size_t)st->n_langs, sizeof *st->langs, cmp_str_ptr);
            KOE_ASSERT(hit);
            int l = (int)(hit - st->langs);
            st->utt_lang[u] = l;
            st->lang_utts[l]++;
            st->lang_hours[l] += (double)shards[s].length[i] / KOE_SAMPLE_RATE / 3600.0;
        }
    for (int l = 0; l < st->n_langs; l++) st->hours += st->lang_hours[l];
    return 0;
}

/* ---- index writer ---------------------------------------------------------------------------- */

static int index_write_file(const char *tmp, char *const *names, const int64_t *shard_utts, int n_shards,
                            const CorpusStats *st, const char *settings) {
    hid_t f = h5_create(tmp);
    if (f < 0) return -1;
    int rc = h5_write_strings(f, "shards", names, n_shards) | h5_write_array(f, "shard_utts", H5T_STD_I64LE, H5T_NATIVE_INT64, shard_utts, n_shards) |
             h5_write_strings(f, "langs", st->langs, st->n_langs) |
             h5_write_array(f, "lang_utts", H5T_STD_I64LE, H5T_NATIVE_INT64, st->lang_utts, st->n_langs) |
             h5_write_array(f, "lang_hours", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, st->lang_hours, st->n_langs) |
             h5_attr_write_i64(f, "sample_rate", KOE_SAMPLE_RATE) | h5_attr_write_i64(f, "n_utts", st->n_utts) |
             h5_attr_write_f64(f, "hours", st->hours) | h5_attr_write_str(f, "settings", settings ? settings : "") |
             h5_attr_write_i64(f, "format_version", CORPUS_FORMAT_VERSION) |
             h5_attr_write_str(f, "format", CORPUS_FORMAT);
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = -1;
    if (H5Fclose(f) < 0) rc = -1;
    return rc;
}

int corpus_write_index(const char *dir, char *const *shard_names, int n_shards, const char *settings, KoeError *err) {
    char *index = path_join(dir, CORPUS_INDEX_NAME);
    char *tmp = path_join(dir, CORPUS_INDEX_NAME ".tmp");
    CorpusShard *shards = koe_calloc((size_t)(n_shards > 0 ? n_shards : 1), sizeof *shards);
    int64_t *shard_utts = koe_calloc((size_t)(n_shards > 0 ? n_shards : 1), sizeof *shard_utts);
    CorpusStats st = {0};
    int opened = 0, rc = -1;
    if (n_shards <= 0) {
        koe_error_set(err, "%s: no shards to index", index);
        goto out;
    }
    if (settings && strlen(settings) >= CORPUS_SETTINGS_MAX) {
        koe_error_set(err, "%s: settings text is %zu bytes, at most %d", index, strlen(settings), CORPUS_SETTINGS_MAX - 1);
        goto out;
    }
    for (; opened < n_shards; opened++) {
        if (check_shard_name(index, shard_names[opened], err) < 0) goto out;
        char *p = path_join(dir, shard_names[opened]);
        int orc = corpus_shard_open(&shards[opened], p, err);
        free(p);
        if (orc < 0) goto out;
        shard_utts[opened] = shards[opened].n;
    }
    if (stats_compute(shards, n_shards, &st, err) < 0) goto out;
    h5_lock();
    int wrc = index_write_file(tmp, shard_names, shard_utts, n_shards, &st, settings);
    const char *h5err = h5_last_error();
    if (wrc < 0) koe_error_set(err, "%s: cannot write the corpus index: %s", tmp, h5err);
    h5_unlock();
    if (wrc < 0) {
        koe_error_fs(err, tmp);
        unlink(tmp);
        goto out;
    }
    if (koe_publish_file(tmp, index, err) < 0) goto out;
    rc = 0;
out:
    for (int i = 0; i < opened; i++) corpus_shard_close(&shards[i]);
    stats_free(&st);
    free(shards);
    free(shard_utts);
    free(index);
    free(tmp);
    return rc;
}

/* ---- reader ---------------------------------------------------------------------------------- */

typedef struct {
    char **shards;
    int64_t n_shards;
    int64_t *shard_utts;
    char **langs;
    int64_t n_langs;
    int64_t *lang_utts;
    double *lang_hours;
    int64_t n_utts;
    double hours;
    char *settings;
} CorpusIndex;

static void index_free(CorpusIndex *ix) {
    h5_strings_free(ix->shards, ix->n_shards);
    h5_strings_free(ix->langs, ix->n_langs);
    free(ix->shard_utts);
    free(ix->lang_utts);
    free(ix->lang_hours);
    free(ix->settings);
    memset(ix, 0, sizeof *ix);
}

static int index_read_locked(hid_t f, const char *path, CorpusIndex *ix, KoeError *err) {
    int64_t rate;
    if (h5_check_format(f, path, CORPUS_FORMAT, CORPUS_FORMAT_VERSION, err) < 0) return -1;
    if (h5_attr_read_i64(f, path, "sample_rate", &rate, err) < 0) return -1;
    if (rate != KOE_SAMPLE_RATE)
        return koe_error_set(err, "%s: sample_rate is %lld, koe corpora are %d Hz", path, (long long)rate,
                             KOE_SAMPLE_RATE);
    if (h5_attr_read_i64(f, path, "n_utts", &ix->n_utts, err) < 0 ||
        h5_attr_read_f64(f, path, "hours", &ix->hours, err) < 0)
        return -1;
    ix->settings = koe_malloc(CORPUS_SETTINGS_MAX);
    if (h5_attr_read_str(f, path, "settings", ix->settings, CORPUS_SETTINGS_MAX, err) < 0) return -1;
    /* every shard and every language holds at least one utterance */
    if (h5_read_strings(f, path, "shards", ix->n_utts, 0, &ix->shards, &ix->n_shards, err) < 0) return -1;
    if (ix->n_shards == 0) return koe_error_set(err, "%s: lists no shards", path);
    if (h5_read_array(f, path, "shard_utts", H5T_NATIVE_INT64, sizeof(int64_t), ix->n_shards, (void **)&ix->shard_utts, NULL, err) < 0)
        return -1;
    if (h5_read_strings(f, path, "langs", ix->n_utts, 0, &ix->langs, &ix->n_langs, err) < 0) return -1;
    if (h5_read_array(f, path, "lang_utts", H5T_NATIVE_INT64, sizeof(int64_t), ix->n_langs, (void **)&ix->lang_utts, NULL, err) < 0 ||
        h5_read_array(f, path, "lang_hours", H5T_NATIVE_DOUBLE, sizeof(double), ix->n_langs, (void **)&ix->lang_hours, NULL, err) < 0)
        return -1;
    for (int64_t i = 0; i < ix->n_shards; i++)
        if (check_shard_name(path, ix->shards[i], err) < 0) return -1;
    return 0;
}

static int index_read(const char *path, CorpusIndex *ix, KoeError *err) {
    memset(ix, 0, sizeof *ix);
    h5_lock();
    int rc;
    hid_t f = access(path, R_OK) == 0 ? h5_open_checksummed(path, "koe prepare", err) : -1;
    if (f < 0) {
        if (access(path, R_OK) != 0)
            koe_error_set(err, "%s: cannot open: %s (is this a corpus directory made by koe prepare?)", path,
                          strerror(errno));
        rc = -1;
    } else {
        rc = index_read_locked(f, path, ix, err);
        H5Fclose(f);
    }
    h5_unlock();
    if (rc < 0) index_free(ix);
    return rc;
}

/* The index must describe the shards as they are now. */
static int index_check_stats(const char *path, const CorpusIndex *ix, const CorpusStats *st, KoeError *err) {
    const char *hint = "the corpus changed after it was indexed; re-run koe prepare";
    if (ix->n_utts != st->n_utts)
        return koe_error_set(err, "%s: says %lld utterances, the shards hold %lld; %s", path, (long long)ix->n_utts,
                             (long long)st->n_utts, hint);
    if (ix->n_langs != st->n_langs)
        return koe_error_set(err, "%s: lists %lld languages, the shards have %d; %s", path, (long long)ix->n_langs,
                             st->n_langs, hint);
    for (int l = 0; l < st->n_langs; l++) {
        if (strcmp(ix->langs[l], st->langs[l]) != 0 || ix->lang_utts[l] != st->lang_utts[l] ||
            fabs(ix->lang_hours[l] - st->lang_hours[l]) > 1e-9 * (1.0 + st->lang_hours[l]))
            return koe_error_set(err, "%s: language '%s' (%lld utterances, %.6f h) disagrees with the shards "
                                      "('%s', %lld utterances, %.6f h); %s",
                                 path, ix->langs[l], (long long)ix->lang_utts[l], ix->lang_hours[l], st->langs[l],
                                 (long long)st->lang_utts[l], st->lang_hours[l], hint);
    }
    return 0;
}

int corpus_open(Corpus *c, const char *dir, KoeError *err) {
    memset(c, 0, sizeof *c);
    char *index = path_join(dir, CORPUS_INDEX_NAME);
    CorpusIndex ix;
    CorpusStats st = {0};
    int rc = -1;
    if (index_read(index, &ix, err) < 0) {
        free(index);
        return -1;
    }
    c->dir = koe_strdup(dir);
    c->shards = koe_calloc((size_t)ix.n_shards, sizeof *c->shards);
    for (int64_t s = 0; s < ix.n_shards; s++) {
        char *p = path_join(dir, ix.shards[s]);
        int orc = corpus_shard_open(&c->shards[s], p, err);
        free(p);
        if (orc < 0) goto out;
        c->n_shards++;
        if (c->shards[s].n != ix.shard_utts[s]) {
            koe_error_set(err, "%s: has %lld utterances, %s says %lld; the corpus changed after it was indexed, "
                               "re-run koe prepare",
                          c->shards[s].path, (long long)c->shards[s].n, index, (long long)ix.shard_utts[s]);
            goto out;
        }
    }
    if (stats_compute(c->shards, c->n_shards, &st, err) < 0 || index_check_stats(index, &ix, &st, err) < 0) goto out;

    c->n_utts = st.n_utts;
    size_t n = (size_t)(c->n_utts ? c->n_utts : 1);
    c->utt_shard = koe_malloc(n * sizeof *c->utt_shard);
    c->utt_index = koe_malloc(n * sizeof *c->utt_index);
    c->utt_length = koe_malloc(n * sizeof *c->utt_length);
    int64_t u = 0;
    for (int s = 0; s < c->n_shards; s++)
        for (int64_t i = 0; i < c->shards[s].n; i++, u++) {
            c->utt_shard[u] = s;
            c->utt_index[u] = i;
            c->utt_length[u] = c->shards[s].length[i];
        }
    c->utt_lang = st.utt_lang;
    c->n_langs = st.n_langs;
    c->langs = st.langs;
    c->lang_hours = st.lang_hours;
    c->lang_utts = st.lang_utts;
    c->hours = st.hours;
    memset(&st, 0, sizeof st); /* owned by c now */
    c->settings = ix.settings;
    ix.settings = NULL;
    rc = 0;
out:
    stats_free(&st);
    index_free(&ix);
    free(index);
    if (rc < 0) corpus_close(c);
    return rc;
}

void corpus_close(Corpus *c) {
    for (int s = 0; s < c->n_shards; s++) corpus_shard_close(&c->shards[s]);
    free(c->shards);
    free(c->dir);
    free(c->utt_shard);
    free(c->utt_index);
    free(c->utt_length);
    free(c->utt_lang);
    h5_strings_free(c->langs, c->n_langs);
    free(c->lang_hours);
    free(c->lang_utts);
    free(c->settings);
    memset(c, 0, sizeof *c);
}

const char *corpus_utt_id(const Corpus *c, int64_t utt) {
    KOE_ASSERT(utt >= 0 && utt < c->n_utts);
    return c->shards[c->utt_shard[utt]].id[c->utt_index[utt]];
}

int corpus_read(Corpus *c, int64_t utt, int64_t start, int64_t count, int16_t *out, KoeError *err) {
    if (utt < 0 || utt >= c->n_utts)
        return koe_error_set(err, "%s: utterance %lld out of range (%lld utterances)", c->dir, (long long)utt,
                             (long long)c->n_utts);
    return corpus_shard_read(&c->shards[c->utt_shard[utt]], c->utt_index[utt], start, count, out, err);
}

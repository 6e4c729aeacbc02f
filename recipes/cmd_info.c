/* cmd_info.c — `koe info PATH`: a human summary of any koe file. A corpus (directory or its
 * corpus.h5) and a shard get a purpose-made summary, checked by the same readers training uses;
 * any other koe file (features, label sets, checkpoints) gets its format, attributes and datasets.
 * Single-threaded: the HDF5 calls here need no h5_lock() (the data/ readers take it themselves).
 * Must not: modify anything it reads; print from more than one rank. */
#include <hdf5.h>
#include <libgen.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../data/checkpoint.h"
#include "../data/corpus.h"
#include "../data/h5util.h"
#include "../data/labels.h"
#include "../data/shard.h"
#include "../distributed/comm.h"
#include "../distributed/rundir.h"
#include "ckpt_model.h"
#include "commands.h"

typedef struct {
    int ids;
} InfoOptions;

static const CliFlag info_flags[] = {
    CLI_N("--ids", CLI_INT, offsetof(InfoOptions, ids), "5", 0, 1000000, 0, "N",
          "how many utterance ids of a shard to list"),
    CLI_END,
};

static int info_command(const void *opts, int n_args, char **args);

const CliCommand cmd_info = {
    .name = "info",
    .summary = "summarise a corpus, shard, label set, features file or checkpoint",
    .args = "PATH",
    .min_args = 1,
    .max_args = 1,
    .about = "Summarise a koe file. PATH may be:\n"
             "  a corpus directory (or its corpus.h5): shards, utterances, hours, languages, alignments, settings\n"
             "  a corpus shard (shard-NNNNN.h5): utterances, duration, compression, languages, first ids (and\n"
             "    every utterance's audio is read, so that a damaged chunk is found)\n"
             "  any other koe HDF5 file (features, label set, checkpoint): format, attributes, datasets\n"
             "Every file is checked as the readers used in training check it; a damaged or foreign file is an\n"
             "error (exit 1) naming the file. Under mpirun only rank 0 prints.\n",
    .flags = info_flags,
    .opts_size = sizeof(InfoOptions),
    .run = info_command,
};

/* "12.3 MB": a byte count in the unit that keeps 3-4 significant digits. */
static const char *human_bytes(int64_t b, char *buf, size_t n) {
    const char *unit[] = {"B", "KB", "MB", "GB", "TB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1000.0 && u < 4) {
        v /= 1000.0;
        u++;
    }
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

static void print_duration(const char *label, double seconds) {
    printf("%-14s %.2f h (%.1f s)\n", label, seconds / 3600.0, seconds);
}

/* ---- corpus -------------------------------------------------------------------------------- */

static int info_corpus(const char *dir) {
    Corpus c;
    KoeError err;
    if (corpus_open(&c, dir, &err) < 0) {
        fprintf(stderr, "koe info: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    int64_t samples = 0, stored = 0;
    int aligned = 0;
    for (int s = 0; s < c.n_shards; s++) {
        samples += c.shards[s].samples;
        stored += corpus_shard_storage_bytes(&c.shards[s]);
        aligned += c.shards[s].n_phones > 0;
    }
    printf("%-14s %s\n", "corpus", dir);
    printf("%-14s %s v%d\n", "format", CORPUS_FORMAT, CORPUS_FORMAT_VERSION);
    printf("%-14s %d Hz\n", "sample_rate", KOE_SAMPLE_RATE);
    printf("%-14s %d\n", "shards", c.n_shards);
    printf("%-14s %lld\n", "utterances", (long long)c.n_utts);
    print_duration("duration", c.hours * 3600.0);
    char b1[32], b2[32];
    printf("%-14s %s on disk, %s raw int16 (ratio %.2f)\n", "audio", human_bytes(stored, b1, sizeof b1),
           human_bytes(samples * 2, b2, sizeof b2), stored > 0 ? (double)(samples * 2) / (double)stored : 0.0);
    printf("%-14s %s (%d of %d shards)\n", "alignments", aligned == c.n_shards ? "yes" : aligned ? "partial" : "no",
           aligned, c.n_shards);
    printf("%-14s %s\n", "settings", c.settings[0] ? c.settings : "(none)");
    printf("\n%-10s %10s %10s %8s\n", "language", "utterances", "hours", "share");
    for (int l = 0; l < c.n_langs; l++)
        printf("%-10s %10lld %10.3f %7.1f%%\n", c.langs[l], (long long)c.lang_utts[l], c.lang_hours[l],
               c.hours > 0 ? 100.0 * c.lang_hours[l] / c.hours : 0.0);
    corpus_close(&c);
    return KOE_EXIT_OK;
}

/* ---- shard --------------------------------------------------------------------------------- */

/* Chunk size and filter names of /audio, for the reader of `koe info` who wonders how it is stored. */
static void print_audio_layout(const CorpusShard *s) {
    hid_t dcpl = H5Dget_create_plist((hid_t)s->hid_audio);
    hsize_t chunk[1] = {0};
    char filters[256] = "";
    if (dcpl >= 0) {
        if (H5Pget_layout(dcpl) == H5D_CHUNKED) H5Pget_chunk(dcpl, 1, chunk);
        int nf = H5Pget_nfilters(dcpl);
        for (int i = 0; i < nf; i++) {
            unsigned flags, cd[4];
            size_t ncd = 4;
            char name[64] = "";
            H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof name, name, NULL);
            char one[96];
            if (id == H5Z_FILTER_SHUFFLE)
                snprintf(one, sizeof one, "shuffle");
            else if (id == H5Z_FILTER_FLETCHER32)
                snprintf(one, sizeof one, "fletcher32");
            else if (id == 32015)
                snprintf(one, sizeof one, "zstd(level %u)", ncd > 0 ? cd[0] : 3u);
            else
                snprintf(one, sizeof one, "filter %d", (int)id);
            size_t used = strlen(filters);
            snprintf(filters + used, sizeof filters - used, "%s%s", used ? " + " : "", one);
        }
        H5Pclose(dcpl);
    }
    printf("%-14s chunks of %llu samples, %s\n", "storage", (unsigned long long)chunk[0],
           filters[0] ? filters : "no filters");
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every utterance's audio, read as the loader reads it: a damaged chunk (fletcher32 or zstd) is found
 * here, naming the utterance, not in the middle of a training run. */
static int read_all_audio(CorpusShard *s, KoeError *err) {
    int64_t max = 1;
    for (int64_t i = 0; i < s->n; i++) max = s->length[i] > max ? s->length[i] : max;
    int16_t *buf = koe_malloc((size_t)max * sizeof *buf);
    int rc = 0;
    for (int64_t i = 0; i < s->n && rc == 0; i++) rc = corpus_shard_read(s, i, 0, s->length[i], buf, err);
    free(buf);
    return rc;
}

static int info_shard(const char *path, int n_ids) {
    CorpusShard s;
    KoeError err;
    if (corpus_shard_open(&s, path, &err) < 0) {
        fprintf(stderr, "koe info: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    int64_t stored = corpus_shard_storage_bytes(&s);
    printf("%-14s %s\n", "shard", path);
    printf("%-14s %s v%d\n", "format", SHARD_FORMAT, SHARD_FORMAT_VERSION);
    printf("%-14s %d Hz\n", "sample_rate", KOE_SAMPLE_RATE);
    printf("%-14s %lld\n", "utterances", (long long)s.n);
    printf("%-14s %lld\n", "samples", (long long)s.samples);
    print_duration("duration", (double)s.samples / KOE_SAMPLE_RATE);
    char b1[32], b2[32];
    printf("%-14s %s on disk, %s raw int16 (ratio %.2f)\n", "audio", human_bytes(stored, b1, sizeof b1),
           human_bytes(s.samples * 2, b2, sizeof b2), stored > 0 ? (double)(s.samples * 2) / (double)stored : 0.0);
    print_audio_layout(&s);
    if (s.n_phones > 0)
        printf("%-14s yes (%lld phones, %lld frames)\n", "alignments", (long long)s.n_phones,
               (long long)s.align_offset[s.n]);
    else
        printf("%-14s no\n", "alignments");

    /* languages: the shard's lang strings, counted in sorted order */
    char **sorted = koe_malloc((size_t)(s.n ? s.n : 1) * sizeof *sorted);
    memcpy(sorted, s.lang, (size_t)s.n * sizeof *sorted);
    qsort(sorted, (size_t)s.n, sizeof *sorted, cmp_str_ptr);
    printf("%-14s", "languages");
    for (int64_t i = 0, j; i < s.n; i = j) {
        for (j = i; j < s.n && strcmp(sorted[j], sorted[i]) == 0;) j++;
        printf(" %s (%lld)", sorted[i], (long long)(j - i));
    }
    printf("\n");
    free(sorted);

    int64_t show = n_ids < s.n ? n_ids : s.n;
    if (show > 0) printf("\n%-24s %-6s %10s %8s  %s\n", "id", "lang", "samples", "seconds", "source");
    for (int64_t i = 0; i < show; i++)
        printf("%-24s %-6s %10lld %8.2f  %s\n", s.id[i], s.lang[i], (long long)s.length[i],
               (double)s.length[i] / KOE_SAMPLE_RATE, s.source[i]);
    if (show < s.n) printf("... %lld more\n", (long long)(s.n - show));
    const int rc = read_all_audio(&s, &err);
    if (rc) fprintf(stderr, "koe info: %s\n", err.msg);
    corpus_shard_close(&s);
    return rc ? KOE_EXIT_USAGE : KOE_EXIT_OK;
}

/* ---- any other koe file -------------------------------------------------------------------- */

static void type_name(hid_t t, char *buf, size_t n) {
    H5T_class_t cls = H5Tget_class(t);
    size_t bits = H5Tget_size(t) * 8;
    if (cls == H5T_INTEGER)
        snprintf(buf, n, "%s%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int", bits);
    else if (cls == H5T_FLOAT)
        snprintf(buf, n, "float%zu", bits);
    else if (cls == H5T_STRING)
        snprintf(buf, n, "string");
    else
        snprintf(buf, n, "other (class %d)", (int)cls);
}

static void shape_str(hid_t space, char *buf, size_t n) {
    hsize_t dims[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd <= 0) {
        snprintf(buf, n, "scalar");
        return;
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    size_t used = 0;
    used += (size_t)snprintf(buf + used, n - used, "[");
    for (int i = 0; i < nd && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

typedef struct {
    const char *file;
} AttrCtx;

static herr_t print_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    const AttrCtx *ctx = data;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    H5T_class_t cls = H5Tget_class(t);
    hssize_t npts = H5Sget_simple_extent_npoints(sp);
    char tn[64], sh[128];
    type_name(t, tn, sizeof tn);
    shape_str(sp, sh, sizeof sh);
    KoeError err;
    if (npts == 1 && cls == H5T_STRING) {
        char *v = koe_malloc(65536);
        if (h5_attr_read_str(loc, ctx->file, name, v, 65536, &err) == 0)
            printf("  %-20s %s\n", name, v);
        else
            printf("  %-20s (unreadable: %s)\n", name, err.msg);
        free(v);
    } else if (npts == 1 && cls == H5T_INTEGER) {
        int64_t v;
        if (h5_attr_read_i64(loc, ctx->file, name, &v, &err) == 0) printf("  %-20s %lld\n", name, (long long)v);
    } else if (npts == 1 && cls == H5T_FLOAT) {
        double v;
        if (h5_attr_read_f64(loc, ctx->file, name, &v, &err) == 0) printf("  %-20s %.10g\n", name, v);
    } else {
        printf("  %-20s %s %s\n", name, tn, sh);
    }
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return 0;
}

static herr_t print_object(hid_t root, const char *name, const H5O_info_t *info, void *data) {
    (void)data;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(root, name, H5P_DEFAULT);
    if (d < 0) {
        printf("  /%-30s (cannot open)\n", name);
        return 0;
    }
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    char tn[64], sh[128];
    type_name(t, tn, sizeof tn);
    shape_str(sp, sh, sizeof sh);
    char b[32];
    printf("  /%-30s %-8s %-24s %12s on disk\n", name, tn, sh, human_bytes((int64_t)H5Dget_storage_size(d), b, sizeof b));
    H5Sclose(sp);
    H5Tclose(t);
    H5Dclose(d);
    return 0;
}

static int info_generic(hid_t f, const char *path, const char *format) {
    int64_t version;
    KoeError err;
    if (h5_attr_read_i64(f, path, "format_version", &version, &err) < 0) {
        fprintf(stderr, "koe info: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    AttrCtx ctx = {path};
    printf("%-14s %s\n", "file", path);
    printf("%-14s %s v%lld\n", "format", format, (long long)version);
    printf("attributes:\n");
    hsize_t idx = 0;
    H5Aiterate2(f, H5_INDEX_NAME, H5_ITER_INC, &idx, print_attr, &ctx);
    printf("datasets:\n");
    if (H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, print_object, NULL) < 0) {
        fprintf(stderr, "koe info: %s: cannot list the datasets (damaged file?): %s\n", path, h5_last_error());
        return KOE_EXIT_USAGE;
    }
    return KOE_EXIT_OK;
}

/* ---- training's checks ----------------------------------------------------------------------- */

/* A label file DIR/labels/NAME/shard-NNNNN.h5 is checked as koe train checks its set: the whole set
 * NAME against the corpus DIR. */
static int check_labels(const char *path, KoeError *err) {
    char *a = koe_strdup(path), *b = koe_strdup(dirname(a)); /* DIR/labels/NAME */
    char *name = koe_strdup(basename(b)), *dir = dirname(dirname(b));
    Corpus c;
    int rc = corpus_open(&c, dir, err);
    if (rc == 0) {
        LabelSet ls;
        rc = labelset_open(&ls, &c, name, err);
        if (rc == 0) labelset_close(&ls);
        corpus_close(&c);
    }
    free(a), free(b), free(name);
    return rc;
}

/* A checkpoint: its recipe (and that recipe's checks), the encoder's tensors and /model's checksum, as
 * koe embed, export and a resume read them. */
static int check_checkpoint(const char *path, KoeError *err) {
    Recipe r;
    Model *m = ckpt_model_open_local(path, 1, 0, NULL, &r, err);
    if (!m) return -1;
    model_free(m);
    recipe_free(&r);
    return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static int info_path(const char *given, int n_ids) {
    char followed[4200];
    KoeError ferr = {{0}};
    const int follow = rundir_follow_latest(given, followed, sizeof followed, &ferr);
    if (follow < 0) {
        fprintf(stderr, "koe info: %s: %s\n", given, ferr.msg);
        return KOE_EXIT_USAGE;
    }
    const char *path = follow ? followed : given;
    if (follow) printf("%s names the run's newest checkpoint, %s\n\n", given, path);
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "koe info: %s: no such file or directory\n", path);
        return KOE_EXIT_USAGE;
    }
    if (S_ISDIR(st.st_mode)) return info_corpus(path);

    char format[128];
    KoeError err;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int have_format = f >= 0 && h5_attr_read_str(f, path, "format", format, sizeof format, &err) == 0;
    if (f < 0) {
        fprintf(stderr, "koe info: %s: not a readable HDF5 file (truncated, corrupt, or not a koe file)\n", path);
        return KOE_EXIT_USAGE;
    }
    if (!have_format) {
        H5Fclose(f);
        fprintf(stderr, "koe info: %s: an HDF5 file without a 'format' attribute: not a koe file\n", path);
        return KOE_EXIT_USAGE;
    }
    if (strcmp(format, CORPUS_FORMAT) == 0) {
        H5Fclose(f);
        char *copy = koe_strdup(path);
        int rc = info_corpus(dirname(copy));
        free(copy);
        return rc;
    }
    if (strcmp(format, SHARD_FORMAT) == 0) {
        H5Fclose(f);
        return info_shard(path, n_ids);
    }
    int rc = info_generic(f, path, format);
    H5Fclose(f);
    const int labels = !strcmp(format, LABELS_FORMAT), ckpt = !strcmp(format, CHECKPOINT_FORMAT);
    if (rc == KOE_EXIT_OK && (labels || ckpt) && (labels ? check_labels(path, &err) : check_checkpoint(path, &err))) {
        fprintf(stderr, "koe info: %s\n", err.msg);
        rc = KOE_EXIT_USAGE;
    }
    return rc;
}

static int info_command(const void *opts, int n_args, char **args) {
    (void)n_args;
    if (comm_rank() != 0) return KOE_EXIT_OK; /* one summary per job, not one per rank */
    return info_path(args[0], ((const InfoOptions *)opts)->ids);
}

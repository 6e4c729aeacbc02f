/* cmd_analyze.c — `koe analyze labels --corpus DIR --labels NAME [--json]`: how well a label set
 * matches the corpus's phone alignments (shard /align, 10 ms frames): the HuBERT paper's phone
 * purity, cluster purity and PNMI (analysis/pnmi.h). Labels at 50 Hz are upsampled to the 100 Hz
 * alignment by repetition (alignment frame j takes label floor(j * rate / 100)); frames without a
 * phone, or past the last label, are skipped. Phones are matched across shards by name.
 * Under mpirun the ranks split the shards and sum their counts.
 * Must not: write anything (it only reads the corpus and the label set). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/pnmi.h"
#include "../core/common.h"
#include "../data/corpus.h"
#include "../data/labels.h"
#include "../data/shard.h"
#include "../distributed/comm.h"
#include "commands.h"

typedef struct {
    const char *corpus, *labels;
    int json;
} AnalyzeOptions;

#define O(field) offsetof(AnalyzeOptions, field)
static const CliFlag analyze_flags[] = {
    CLI_S("--corpus", O(corpus), NULL, CLI_REQUIRED, "DIR", "corpus with alignments"),
    CLI_S("--labels", O(labels), NULL, CLI_REQUIRED, "NAME", "label set name"),
    CLI_B("--json", O(json), "print one JSON object {\"phone_purity\":..,\"cluster_purity\":..,\"pnmi\":..,...}\n"
                             "instead of the table"),
    CLI_END,
};

static int analyze_command(const void *opts, int n_args, char **args);

const CliCommand cmd_analyze = {
    .name = "analyze",
    .summary = "label quality vs phone alignments: phone purity, cluster purity, PNMI",
    .args = "labels",
    .min_args = 1,
    .max_args = 1,
    .about = "Compares the label set DIR/labels/NAME with the corpus's frame-level phone alignments (made by\n"
             "`koe synth`; shards without /align cannot be analysed) and prints the HuBERT paper's measures:\n"
             "  phone purity    sum_z max_y p(y, z)   (how pure each cluster is in phones)\n"
             "  cluster purity  sum_y max_z p(y, z)   (how concentrated each phone is in one cluster)\n"
             "  PNMI            I(phone; cluster) / H(phone)\n"
             "50 Hz labels are repeated to the 100 Hz alignment; frames without a phone are skipped.\n",
    .flags = analyze_flags,
    .opts_size = sizeof(AnalyzeOptions),
    .run = analyze_command,
};

/* Index of name in the global phone list, adding it when new. */
static int phone_index(char ***names, int *n, const char *name) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*names)[i], name)) return i;
    *names = koe_realloc(*names, (size_t)(*n + 1) * sizeof(char *));
    (*names)[*n] = koe_strdup(name);
    return (*n)++;
}

/* The global phone inventory (*phones, *n_phones): every rank builds the same one from the shards'
 * lists; map[si][p] is shard si's phone p in it. Returns 0, or -1 (printed) when a shard has no
 * alignments. */
static int phone_inventory(const Corpus *c, char ***phones, int *n_phones, int **map) {
    for (int si = 0; si < c->n_shards; si++) {
        const CorpusShard *s = &c->shards[si];
        if (!s->align_offset) {
            if (comm_rank() == 0)
                fprintf(stderr, "koe analyze: %s has no phone alignments (/align); analysis needs a corpus made by "
                                "`koe synth` or prepared with alignments\n", s->path);
            return -1;
        }
        map[si] = koe_malloc((size_t)(s->n_phones ? s->n_phones : 1) * sizeof(int));
        for (int64_t p = 0; p < s->n_phones; p++) map[si][p] = phone_index(phones, n_phones, s->phones[p]);
    }
    return 0;
}

/* This rank's shards (si % world == rank) into pc: each aligned frame's (phone, label). Returns 0,
 * or -1 (printed) on a read error; *skipped counts frames without a phone or past the last label. */
static int count_pairs(Corpus *c, LabelSet *ls, int *const *map, PnmiCounts *pc, int64_t *skipped) {
    const int rank = comm_rank(), world = comm_size();
    KoeError err;
    int64_t max_al = 1, max_lab = 1, first = 0;
    int bad = 0;
    for (int64_t u = 0; u < c->n_utts; u++)
        if (ls->utt_frames[u] > max_lab) max_lab = ls->utt_frames[u];
    for (int si = 0; si < c->n_shards; si++) {
        CorpusShard *s = &c->shards[si];
        for (int64_t i = 0; i < s->n; i++)
            if (s->align_offset[i + 1] - s->align_offset[i] > max_al) max_al = s->align_offset[i + 1] - s->align_offset[i];
    }
    uint16_t *al = koe_malloc((size_t)max_al * sizeof(uint16_t)), *ph = koe_malloc((size_t)max_al * sizeof(uint16_t));
    int32_t *lab = koe_malloc((size_t)max_lab * sizeof(int32_t)), *zz = koe_malloc((size_t)max_al * sizeof(int32_t));
    for (int si = 0; si < c->n_shards; si++) {
        CorpusShard *s = &c->shards[si];
        for (int64_t i = 0; si % world == rank && i < s->n && !bad; i++) {
            int64_t na = corpus_shard_read_align(s, i, al, max_al, &err);
            int64_t nl = na < 0 ? -1 : labelset_read(ls, first + i, lab, max_lab, &err);
            if (na < 0 || nl < 0) {
                fprintf(stderr, "koe analyze: %s\n", err.msg);
                bad = 1;
                break;
            }
            int64_t n = 0;
            for (int64_t j = 0; j < na; j++) {
                int64_t li = (int64_t)((double)j * ls->info.frame_rate / 100.0);
                if (al[j] == SHARD_NO_PHONE || li >= nl) {
                    (*skipped)++;
                    continue;
                }
                ph[n] = (uint16_t)map[si][al[j]];
                zz[n++] = lab[li];
            }
            pnmi_add(pc, ph, zz, n);
        }
        first += s->n;
    }
    free(al);
    free(ph);
    free(lab);
    free(zz);
    return bad ? -1 : 0;
}

static void print_result(const PnmiResult *r, const LabelSet *ls, int64_t skipped, int n_phones, int json) {
    if (json) {
        printf("{\"phone_purity\":%.6f,\"cluster_purity\":%.6f,\"pnmi\":%.6f,\"frames\":%lld,\"skipped\":%lld,"
               "\"n_phones\":%d,\"n_classes\":%d,\"source\":\"%s\",\"frame_rate\":%g}\n",
               r->phone_purity, r->cluster_purity, r->pnmi, (long long)r->frames, (long long)skipped, n_phones,
               ls->info.n_classes, ls->info.source, ls->info.frame_rate);
    } else {
        printf("label set       %s (source %s, k=%d, %g Hz)\n", ls->dir, ls->info.source, ls->info.n_classes,
               ls->info.frame_rate);
        printf("frames          %lld with a phone (%lld skipped), %d phones\n", (long long)r->frames,
               (long long)skipped, n_phones);
        printf("phone purity    %.4f\n", r->phone_purity);
        printf("cluster purity  %.4f\n", r->cluster_purity);
        printf("PNMI            %.4f\n", r->pnmi);
        printf("H(phone) %.3f bits, H(cluster) %.3f bits, I %.3f bits\n", r->h_phone / 0.6931471805599453,
               r->h_cluster / 0.6931471805599453, r->mutual_info / 0.6931471805599453);
    }
    fflush(stdout);
}

static int analyze_command(const void *opts, int n_args, char **args) {
    (void)n_args;
    const AnalyzeOptions *o = opts;
    const char *corpus_dir = o->corpus, *name = o->labels;
    if (strcmp(args[0], "labels")) return cli_error(&cmd_analyze, comm_rank() == 0, "expected `koe analyze labels ...`");
    const int rank = comm_rank();
    KoeError err;
    Corpus c;
    if (corpus_open(&c, corpus_dir, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe analyze: %s\n", err.msg);
        return KOE_EXIT_USAGE;
    }
    LabelSet ls;
    if (labelset_open(&ls, &c, name, &err) < 0) {
        if (rank == 0) fprintf(stderr, "koe analyze: %s\n", err.msg);
        corpus_close(&c);
        return KOE_EXIT_USAGE;
    }
    int rc = KOE_EXIT_USAGE;
    char **phones = NULL;
    int n_phones = 0;
    int **map = koe_calloc((size_t)c.n_shards, sizeof(int *));
    if (phone_inventory(&c, &phones, &n_phones, map) < 0) goto out;
    if (n_phones == 0) {
        if (rank == 0) fprintf(stderr, "koe analyze: %s: the alignments have no phones\n", corpus_dir);
        goto out;
    }
    PnmiCounts pc;
    pnmi_counts_init(&pc, n_phones, ls.info.n_classes);
    int64_t skipped = 0, bad = count_pairs(&c, &ls, map, &pc, &skipped) < 0;
    comm_allreduce_max_i64(&bad, 1);
    if (!bad) {
        const int64_t n_joint = (int64_t)n_phones * pc.n_clusters;
        for (int64_t off = 0; off < n_joint; off += 1 << 28) /* MPI counts are int */
            comm_allreduce_sum_i64(pc.joint + off, (int)(n_joint - off < (1 << 28) ? n_joint - off : (1 << 28)));
        int64_t tot[2] = {pc.frames, skipped};
        comm_allreduce_sum_i64(tot, 2);
        pc.frames = tot[0];
        PnmiResult r = pnmi_compute(&pc);
        if (rank == 0) print_result(&r, &ls, tot[1], n_phones, o->json);
        if (r.frames == 0) {
            if (rank == 0) fprintf(stderr, "koe analyze: no frame has both a phone and a label\n");
        } else {
            rc = KOE_EXIT_OK;
        }
    }
    pnmi_counts_free(&pc);
out:
    for (int si = 0; si < c.n_shards; si++) free(map[si]);
    free(map);
    for (int i = 0; i < n_phones; i++) free(phones[i]);
    free(phones);
    labelset_close(&ls);
    corpus_close(&c);
    return rc;
}

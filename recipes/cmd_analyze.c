/* cmd_analyze.c — `koe analyze labels --corpus DIR --labels NAME [--json]`: how well a label set
 * matches the corpus's phone alignments (shard /align, 10 ms frames): the HuBERT paper's phone
 * purity, cluster purity and PNMI (analysis/pnmi.h), from the join of labels and alignments in
 * analysis/label_join.h (50 Hz labels repeated to the 100 Hz alignment, frames without a phone
 * skipped, phones matched across shards by name). This file reads the files and prints.
 * Under mpirun the ranks split the shards and sum their counts.
 * Must not: write anything (it only reads the corpus and the label set). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/label_join.h"
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

/* Count this rank's shards (every world-th) into pc: each utterance's alignment joined with its labels
 * (map[si]: shard si's phone ids -> inventory). Returns 1 after a read error (printed), else 0. */
static int64_t count_my_shards(Corpus *c, LabelSet *ls, int **map, PnmiCounts *pc, int64_t *skipped) {
    const int rank = comm_rank(), world = comm_size();
    int64_t max_al = 1, max_lab = 1, first = 0, bad = 0;
    for (int64_t u = 0; u < c->n_utts; u++)
        if (ls->utt_frames[u] > max_lab) max_lab = ls->utt_frames[u];
    for (int si = 0; si < c->n_shards; si++) {
        CorpusShard *s = &c->shards[si];
        for (int64_t i = 0; i < s->n; i++)
            if (s->align_offset[i + 1] - s->align_offset[i] > max_al) max_al = s->align_offset[i + 1] - s->align_offset[i];
    }
    uint16_t *al = koe_malloc((size_t)max_al * sizeof(uint16_t));
    int32_t *lab = koe_malloc((size_t)max_lab * sizeof(int32_t));
    KoeError err;
    for (int si = 0; si < c->n_shards; si++) {
        CorpusShard *s = &c->shards[si];
        if (si % world == rank) {
            for (int64_t i = 0; i < s->n && !bad; i++) {
                int64_t na = corpus_shard_read_align(s, i, al, max_al, &err);
                int64_t nl = na < 0 ? -1 : labelset_read(ls, first + i, lab, max_lab, &err);
                if (na < 0 || nl < 0) {
                    fprintf(stderr, "koe analyze: %s\n", err.msg);
                    bad = 1;
                    break;
                }
                *skipped += label_join_count(pc, al, na, SHARD_NO_PHONE, map[si], lab, nl, ls->info.frame_rate);
            }
        }
        first += s->n;
    }
    free(al);
    free(lab);
    return bad;
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
    const int json = o->json;
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
    /* The global phone inventory: every rank builds the same one from the shards' lists. */
    PhoneInventory phones = {0};
    int **map = koe_calloc((size_t)c.n_shards, sizeof(int *));
    for (int si = 0; si < c.n_shards; si++) {
        const CorpusShard *s = &c.shards[si];
        if (!s->align_offset) {
            if (rank == 0)
                fprintf(stderr, "koe analyze: %s has no phone alignments (/align); analysis needs a corpus made by "
                                "`koe synth` or prepared with alignments\n", s->path);
            goto out;
        }
        map[si] = koe_malloc((size_t)(s->n_phones ? s->n_phones : 1) * sizeof(int));
        for (int64_t p = 0; p < s->n_phones; p++) map[si][p] = phone_inventory_index(&phones, s->phones[p]);
    }
    const int n_phones = phones.n;
    if (n_phones == 0) {
        if (rank == 0) fprintf(stderr, "koe analyze: %s: the alignments have no phones\n", corpus_dir);
        goto out;
    }
    PnmiCounts pc;
    pnmi_counts_init(&pc, n_phones, ls.info.n_classes);
    int64_t skipped = 0, bad = count_my_shards(&c, &ls, map, &pc, &skipped);
    comm_allreduce_max_i64(&bad, 1);
    if (!bad) {
        const int64_t n_joint = (int64_t)n_phones * pc.n_clusters;
        for (int64_t o = 0; o < n_joint; o += 1 << 28) /* MPI counts are int */
            comm_allreduce_sum_i64(pc.joint + o, (int)(n_joint - o < (1 << 28) ? n_joint - o : (1 << 28)));
        int64_t tot[2] = {pc.frames, skipped};
        comm_allreduce_sum_i64(tot, 2);
        pc.frames = tot[0];
        PnmiResult r = pnmi_compute(&pc);
        if (rank == 0) print_result(&r, &ls, tot[1], n_phones, json);
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
    phone_inventory_free(&phones);
    labelset_close(&ls);
    corpus_close(&c);
    return rc;
}

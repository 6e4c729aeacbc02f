/* cmd_analyze.c — `koe analyze labels` and `koe analyze layers`.
 * `koe analyze layers --ckpt CKPT --corpus DIR [--out DIR] [--json]`: what each layer of an encoder
 * carries (recipes/analyze_layers.c); this file parses its options.
 * `koe analyze labels --corpus DIR --labels NAME [--json]`: how well a label set
 * matches the corpus's phone alignments (shard /align, 10 ms frames): the HuBERT paper's phone
 * purity, cluster purity and PNMI (analysis/pnmi.h), from the join of labels and alignments in
 * analysis/label_join.h (50 Hz labels repeated to the 100 Hz alignment, frames without a phone
 * skipped, phones matched across shards by name). This file reads the files and prints.
 * Under mpirun the ranks split the shards and sum their counts.
 * Must not: write anything (it only reads the corpus and the label set). */
#include <errno.h>
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
#include "../analysis/cca.h"
#include "analyze_layers.h"
#include "commands.h"

const char cmd_analyze_summary[] = "what each layer learned (PWCCA, CKA, PNMI); label quality vs phone alignments";
const char cmd_analyze_help[] =
    "usage: koe analyze layers --ckpt CKPT.h5 --corpus DIR [--out DIR] [--json] [options]\n"
    "       koe analyze labels --corpus DIR --labels NAME [--json]\n"
    "\n"
    "koe analyze layers: what each hidden state (T0 = the encoder input, Ti = layer i, as `koe embed`)\n"
    "carries, after Pasad et al.'s layer-wise analysis: projection-weighted CCA (PWCCA) of each layer\n"
    "against properties of the same units, fitted on training folds, eps chosen on a dev fold, scored on\n"
    "a test fold, averaged over trials. Properties (--props, comma-separated):\n"
    "  mel          frames: koe's 80-bin Kaldi fbank of the same samples\n"
    "  phone        phone segments (runs of the corpus's 10 ms alignment): the mean of the middle third\n"
    "               of the segment's frames against the one-hot phone\n"
    "  phone-frame  frames: the one-hot phone under the frame's centre\n"
    "  intra        frames: layer --base-layer of the same model\n"
    "  inter        frames: the same layer of --ckpt2 (same layer count and frame rate)\n"
    "  cka          debiased linear CKA between every pair of layers (frame subsample)\n"
    "  pnmi         k-means (--pnmi-k) of each layer on the subsample's training folds; PNMI of the\n"
    "               test folds' cluster ids against their phones\n"
    "PWCCA here differs from layerwise-analysis on purpose: weights from centred canonical variates\n"
    "(sign-invariant) and whitening directions with eigenvalue <= --null-tol x max dropped (a one-hot\n"
    "property of q classes has q - 1 directions; theirs scores a null one, ~1/q lower); all eps pairs.\n"
    "Units and folds are keyed by --seed: the same for any rank count. Under mpirun the ranks split\n"
    "the utterances and sum the fold co-moments. Prints a table with a `best` row (or --json).\n"
    "\n"
    "options (layers):\n"
    "  --ckpt CKPT.h5       checkpoint (required)\n"
    "  --ckpt2 CKPT.h5      second checkpoint, for inter (e.g. HuBERT iteration 1 vs 2, two training steps)\n"
    "  --corpus DIR         corpus; phone properties need its alignments (required)\n"
    "  --out DIR            write layers.json, layers.tsv, cka.tsv\n"
    "  --json               print layers.json on stdout instead of the table\n"
    "  --props LIST         default mel,phone,intra,cka\n"
    "  --frames N           frame sample: whole utterances in keyed order until N frames (100000; 0: all)\n"
    "  --phone-cap N        segments per phone (200)\n"
    "  --min-class N        drop phones with fewer segments (10; at least --folds)\n"
    "  --silence LIST       alignment names that are not phones (sil,SIL,sp,spn)\n"
    "  --base-layer L       reference layer of intra (0)\n"
    "  --folds F            folds (10); trial t: dev fold 2t, test fold 2t+1\n"
    "  --trials T           trials (3); 2T <= F\n"
    "  --eps LIST           eps grid for both views (1e-11,1e-10,1e-9), relative to the largest covariance\n"
    "  --null-tol X         drop whitening directions with eigenvalue <= X x max (1e-12)\n"
    "  --sub-frames N       keyed frame subsample for cka and pnmi (20000)\n"
    "  --pnmi-k K           clusters per layer for pnmi (100); --pnmi-iters N Lloyd iterations (20)\n"
    "  --seed S             units, folds and subsample (1)\n"
    "  --max-mem GB         refuse above this memory estimate per rank (80% of MemTotal)\n"
    "  --dump FILE          every unit as TSV: unit utt first end label fold sub (for the reference)\n"
    "\n"
    "koe analyze labels:\n"
    "Compares the label set DIR/labels/NAME with the corpus's frame-level phone alignments (made by\n"
    "`koe synth`; shards without /align cannot be analysed) and prints the HuBERT paper's measures:\n"
    "  phone purity    sum_z max_y p(y, z)   (how pure each cluster is in phones)\n"
    "  cluster purity  sum_y max_z p(y, z)   (how concentrated each phone is in one cluster)\n"
    "  PNMI            I(phone; cluster) / H(phone)\n"
    "50 Hz labels are repeated to the 100 Hz alignment; frames without a phone are skipped.\n"
    "\n"
    "options (labels):\n"
    "  --corpus DIR    corpus with alignments (required)\n"
    "  --labels NAME   label set name (required)\n"
    "  --json          print one JSON object {\"phone_purity\":..,\"cluster_purity\":..,\"pnmi\":..,...}\n"
    "                  instead of the table\n";

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

/* A whole-string number in [lo, hi], or -1 with a message naming the flag. */
static int parse_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    *out = strtod(v, &end);
    if (errno || end == v || *end || !(*out >= lo && *out <= hi)) {
        fprintf(stderr, "koe analyze layers: %s %s: expected a number in [%g, %g]\n", flag, v, lo, hi);
        return -1;
    }
    return 0;
}

static int parse_eps(const char *v, AnalyzeLayersOpts *o) {
    char *copy = koe_strdup(v), *save = NULL;
    int rc = 0;
    o->n_eps = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        if (o->n_eps == ALP_MAX_EPS) {
            fprintf(stderr, "koe analyze layers: --eps: at most %d values\n", ALP_MAX_EPS);
            rc = -1;
        } else {
            rc = parse_num("--eps", t, 0, 1, &o->eps[o->n_eps++]);
        }
    }
    free(copy);
    return o->n_eps == 0 ? -1 : rc;
}

/* `koe analyze layers` options into o: 0, 1 after --help (printed), -1 after a usage error (printed). */
static int parse_layers_args(int argc, char **argv, AnalyzeLayersOpts *o) {
    analyze_layers_defaults(o);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(cmd_analyze_help, stdout);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "koe analyze layers: %s needs a value, or is not an option (see `koe help analyze`)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        double d = 0;
        int rc = 0;
        if (!strcmp(a, "--ckpt")) o->ckpt = v;
        else if (!strcmp(a, "--ckpt2")) o->ckpt2 = v;
        else if (!strcmp(a, "--corpus")) o->corpus = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--dump")) o->dump = v;
        else if (!strcmp(a, "--silence")) o->silence = v;
        else if (!strcmp(a, "--eps")) rc = parse_eps(v, o);
        else if (!strcmp(a, "--props")) {
            char bad[64];
            if ((rc = analyze_layers_parse_props(v, &o->props, bad, sizeof bad)) < 0)
                fprintf(stderr, "koe analyze layers: --props %s: unknown property '%s' (mel, phone, phone-frame, intra, "
                                "inter, cka, pnmi)\n", v, bad);
        } else if (!strcmp(a, "--frames")) rc = parse_num(a, v, 0, 1e12, &d), o->frames = (int64_t)d;
        else if (!strcmp(a, "--phone-cap")) rc = parse_num(a, v, 1, 1e9, &d), o->phone_cap = (int)d;
        else if (!strcmp(a, "--min-class")) rc = parse_num(a, v, 1, 1e9, &d), o->min_class = (int)d;
        else if (!strcmp(a, "--base-layer")) rc = parse_num(a, v, 0, 1000, &d), o->base_layer = (int)d;
        else if (!strcmp(a, "--folds")) rc = parse_num(a, v, 2, 64, &d), o->folds = (int)d;
        else if (!strcmp(a, "--trials")) rc = parse_num(a, v, 1, CCA_MAX_TRIALS, &d), o->trials = (int)d;
        else if (!strcmp(a, "--null-tol")) rc = parse_num(a, v, 0, 1, &o->null_tol);
        else if (!strcmp(a, "--sub-frames")) rc = parse_num(a, v, 4, 1e9, &d), o->sub_frames = (int64_t)d;
        else if (!strcmp(a, "--pnmi-k")) rc = parse_num(a, v, 1, 65535, &d), o->pnmi_k = (int)d;
        else if (!strcmp(a, "--pnmi-iters")) rc = parse_num(a, v, 1, 10000, &d), o->pnmi_iters = (int)d;
        else if (!strcmp(a, "--seed")) rc = parse_num(a, v, 0, 9e15, &d), o->seed = (uint64_t)d;
        else if (!strcmp(a, "--max-mem")) rc = parse_num(a, v, 0, 1e6, &o->max_mem_gb);
        else {
            fprintf(stderr, "koe analyze layers: unknown option %s (see `koe help analyze`)\n", a);
            return -1;
        }
        if (rc < 0) return -1;
    }
    if (!o->ckpt || !o->corpus) {
        fprintf(stderr, "koe analyze layers: --ckpt and --corpus are required (see `koe help analyze`)\n");
        return -1;
    }
    if (2 * o->trials > o->folds) {
        fprintf(stderr, "koe analyze layers: --trials %d needs --folds >= %d (a dev and a test fold per trial)\n",
                o->trials, 2 * o->trials);
        return -1;
    }
    return 0;
}

int cmd_analyze(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fputs(cmd_analyze_help, stdout);
        return KOE_EXIT_OK;
    }
    if (argc >= 2 && !strcmp(argv[1], "layers")) {
        AnalyzeLayersOpts o;
        const int rc = parse_layers_args(argc, argv, &o);
        return rc < 0 ? KOE_EXIT_USAGE : rc > 0 ? KOE_EXIT_OK : analyze_layers_run(&o);
    }
    if (argc < 2 || strcmp(argv[1], "labels")) {
        fprintf(stderr, "koe analyze: expected `koe analyze layers ...` or `koe analyze labels ...` (see `koe help analyze`)\n");
        return KOE_EXIT_USAGE;
    }
    const char *corpus_dir = NULL, *name = NULL;
    int json = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(cmd_analyze_help, stdout);
            return KOE_EXIT_OK;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "koe analyze: %s needs a value, or is not an option (see `koe help analyze`)\n", a);
            return KOE_EXIT_USAGE;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--corpus")) corpus_dir = v;
        else if (!strcmp(a, "--labels")) name = v;
        else {
            fprintf(stderr, "koe analyze: unknown option %s (see `koe help analyze`)\n", a);
            return KOE_EXIT_USAGE;
        }
    }
    if (!corpus_dir || !name) {
        fprintf(stderr, "koe analyze: --corpus and --labels are required (see `koe help analyze`)\n");
        return KOE_EXIT_USAGE;
    }
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

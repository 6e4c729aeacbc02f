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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/label_join.h"
#include "../analysis/pnmi.h"
#include "../core/common.h"
#include "../core/progress.h"
#include "../data/corpus.h"
#include "../data/labels.h"
#include "../data/shard.h"
#include "../distributed/comm.h"
#include "../analysis/cca.h"
#include "analyze_layers.h"
#include "ckpt_model.h"
#include "commands.h"

/* One table for both forms: --corpus and --json are shared, --labels is `labels`', the rest
 * `layers`' (analyze_command refuses a flag of the other form). The layers defaults are spec §8.1's. */
typedef struct {
    const char *labels;
    AnalyzeLayersOpts l;
} AnalyzeOptions;

static int parse_props(const char *s, void *dst, char *why, size_t n) {
    char bad[64];
    if (analyze_layers_parse_props(s, dst, bad, sizeof bad) == 0) return 0;
    snprintf(why, n, "unknown property '%s' (mel, phone, phone-frame, intra, inter, word, cka, pnmi)", bad);
    return -1;
}

#define O(field) offsetof(AnalyzeOptions, field)
static const CliFlag analyze_flags[] = {
    CLI_S("--corpus", O(l.corpus), NULL, CLI_REQUIRED, "DIR", "corpus (with its alignments for labels and phone properties)"),
    CLI_S("--labels", O(labels), NULL, 0, "NAME", "labels: the label set to compare with the alignments"),
    CLI_B("--json", O(l.json), "print one JSON object instead of the table (layers: layers.json)"),
    CLI_P("--ckpt", O(l.ckpt), ckpt_path_parse, NULL, 0, "CKPT.h5",
          "layers, codebook: the checkpoint to analyse (layers: also a Hugging Face export directory)"),
    CLI_B("--conv", O(l.conv), "layers: mel also for the conv layers C1..Cn (waveform frontends), averaged onto the 10 ms fbank"),
    CLI_P("--ckpt2", O(l.ckpt2), ckpt_path_parse, NULL, 0, "CKPT.h5",
          "layers: second checkpoint, for inter (e.g. HuBERT iteration 1 vs 2, two training steps)"),
    CLI_S("--out", O(l.out), NULL, 0, "DIR",
          "layers: write layers.json, layers.tsv, cka.tsv and the charts; codebook: codebook.json, usage.tsv, usage chart"),
    CLI_P("--props", O(l.props), parse_props, "mel,phone,intra,cka", 0, "LIST", "layers: properties, comma-separated"),
    CLI_N("--frames", CLI_I64, O(l.frames), "100000", 0, 1e12, 0, "N",
          "layers: frame sample, whole utterances in keyed order until N frames (0: all)"),
    CLI_N("--phone-cap", CLI_INT, O(l.phone_cap), "200", 1, 1e9, 0, "N", "layers: segments per phone"),
    CLI_N("--min-class", CLI_INT, O(l.min_class), "10", 1, 1e9, 0, "N",
          "layers: drop phones with fewer segments (at least --folds)"),
    CLI_S("--words", O(l.words), NULL, 0, "CTM",
          "layers: word alignments for word, lines `utt channel start dur word` (default: DIR/words.ctm)"),
    CLI_N("--word-cap", CLI_INT, O(l.word_cap), "15", 1, 1e9, 0, "N", "layers: segments per word"),
    CLI_N("--word-vocab", CLI_INT, O(l.word_vocab), "500", 1, 1e9, 0, "N", "layers: the N most frequent words"),
    CLI_S("--silence", O(l.silence), "sil,SIL,sp,spn", 0, "LIST", "layers: alignment names that are not phones"),
    CLI_N("--base-layer", CLI_INT, O(l.base_layer), "0", 0, 1000, 0, "L", "layers: reference layer of intra"),
    CLI_N("--folds", CLI_INT, O(l.folds), "10", 2, 64, 0, "F", "layers: folds; trial t: dev fold 2t, test fold 2t+1"),
    CLI_N("--trials", CLI_INT, O(l.trials), "3", 1, CCA_MAX_TRIALS, 0, "T", "layers: trials; 2T <= F"),
    CLI_P("--eps", O(l.eps), analyze_layers_parse_eps, "1e-11,1e-10,1e-9", 0, "LIST",
          "layers: eps grid for both views, relative to the largest covariance"),
    CLI_N("--null-tol", CLI_DOUBLE, O(l.null_tol), "1e-12", 0, 1, 0, "X",
          "layers: drop whitening directions with eigenvalue <= X x max"),
    CLI_N("--sub-frames", CLI_I64, O(l.sub_frames), "20000", 4, 1e9, 0, "N",
          "layers: keyed frame subsample for cka and pnmi"),
    CLI_N("--pnmi-k", CLI_INT, O(l.pnmi_k), "100", 1, 65535, 0, "K", "layers: clusters per layer for pnmi"),
    CLI_N("--pnmi-iters", CLI_INT, O(l.pnmi_iters), "20", 1, 10000, 0, "N", "layers: Lloyd iterations for pnmi"),
    CLI_N("--seed", CLI_U64, O(l.seed), "1", 0, 9e15, 0, "S", "layers: units, folds and subsample"),
    CLI_N("--max-mem", CLI_DOUBLE, O(l.max_mem_gb), "0", 0, 1e6, 0, "GB",
          "layers: refuse above this memory estimate per rank (0: 80% of MemTotal)"),
    CLI_S("--dump", O(l.dump), NULL, 0, "FILE",
          "layers: every unit as TSV (unit utt first end label fold sub); codebook: every frame's codes"),
    CLI_END,
};

static int analyze_command(const void *opts, int n_args, char **args);

const CliCommand cmd_analyze = {
    .name = "analyze",
    .summary = "what each layer learned (PWCCA, CKA, PNMI); quantizer codes and label quality vs phones",
    .args = "layers|codebook|labels",
    .min_args = 1,
    .max_args = 1,
    .about = "koe analyze layers --ckpt CKPT.h5|HF_DIR --corpus DIR [--out DIR] [--json]: what each hidden state\n"
             "(T0 = the encoder input, Ti = layer i, as `koe embed`) carries, after Pasad et al.'s layer-wise\n"
             "analysis: projection-weighted CCA (PWCCA) of each layer against properties of the same units,\n"
             "fitted on training folds, eps chosen on a dev fold, scored on a test fold, averaged over\n"
             "trials. Properties (--props):\n"
             "  mel          frames: koe's 80-bin Kaldi fbank of the same samples; with --conv also the conv\n"
             "               layers C1..Cn (rows before T0): each layer's frames averaged onto the 10 ms fbank\n"
             "               frames they fall in (Pasad et al.'s kernels), the last one (50 Hz) as T0..TL\n"
             "  phone        phone segments (runs of the corpus's 10 ms alignment): the mean of the middle\n"
             "               third of the segment's frames against the one-hot phone\n"
             "  phone-frame  frames: the one-hot phone under the frame's centre\n"
             "  intra        frames: layer --base-layer of the same model\n"
             "  inter        frames: the same layer of --ckpt2 (same layer count and frame rate)\n"
             "  word         word segments (--words CTM, else DIR/words.ctm from `koe prepare --words`): the\n"
             "               mean of the word's frames against the one-hot word (the --word-vocab most\n"
             "               frequent words, at most --word-cap segments each)\n"
             "  cka          debiased linear CKA between every pair of layers (frame subsample)\n"
             "  pnmi         k-means (--pnmi-k) of each layer on the subsample's training folds; PNMI of\n"
             "               the test folds' cluster ids against their phones\n"
             "PWCCA here differs from layerwise-analysis on purpose: weights from centred canonical\n"
             "variates (sign-invariant) and whitening directions with eigenvalue <= --null-tol x max\n"
             "dropped (a one-hot property of q classes has q - 1 directions; theirs scores a null one, ~1/q\n"
             "lower). Units and folds are keyed by --seed: the same for any rank count. Under mpirun the\n"
             "ranks split the utterances and sum the fold co-moments. Prints a table with a `best` row.\n"
             "\n"
             "koe analyze codebook --ckpt CKPT.h5 --corpus DIR [--out DIR] [--json] [--dump FILE]: the quantizer\n"
             "of a wav2vec 2.0 or BEST-RQ checkpoint on the corpus: per codebook (wav2vec 2.0's groups, BEST-RQ's\n"
             "codebooks) the codes used, code perplexity exp(H) of their histogram and (wav2vec 2.0) the prob\n"
             "perplexity of the mean softmax (fairseq's formulas), and the codes as labels against the phone\n"
             "alignments as `analyze labels` measures them (PNMI, phone and cluster purity; also of the joint\n"
             "code of all codebooks when it has at most 2^17 values). The codes are training's without noise.\n"
             "--out DIR: codebook.json, usage.tsv, the usage chart usage.png/.svg/.gp (share of frames by code\n"
             "rank). --dump FILE: every frame's codes (one process).\n"
             "\n"
             "koe analyze labels --corpus DIR --labels NAME [--json]: compares the label set\n"
             "DIR/labels/NAME with the corpus's frame-level phone alignments (made by `koe synth`; shards\n"
             "without /align cannot be analysed) and prints the HuBERT paper's measures:\n"
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
    int64_t mine = 0;
    for (int si = rank; si < c->n_shards; si += world) mine += c->shards[si].n;
    Progress *pr = progress_open("analyze labels", "utt", mine);
    for (int si = 0; si < c->n_shards; si++) {
        CorpusShard *s = &c->shards[si];
        if (si % world == rank) {
            for (int64_t i = 0; i < s->n && !bad; i++) {
                int64_t na = corpus_shard_read_align(s, i, al, max_al, &err);
                int64_t nl = na < 0 ? -1 : labelset_read(ls, first + i, lab, max_lab, &err);
                if (na < 0 || nl < 0) {
                    progress_break(pr);
                    fprintf(stderr, "koe analyze: %s\n", err.msg);
                    bad = 1;
                    break;
                }
                *skipped += label_join_count(pc, al, na, SHARD_NO_PHONE, map[si], lab, nl, ls->info.frame_rate);
                progress_add(pr, 1);
            }
        }
        first += s->n;
    }
    progress_close(pr);
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

/* `koe analyze layers`: the checks between flags the table cannot state. */
static int layers_command(const AnalyzeOptions *o) {
    const int say = comm_rank() == 0;
    if (o->labels) return cli_error(&cmd_analyze, say, "--labels is for `koe analyze labels`");
    if (!o->l.ckpt) return cli_error(&cmd_analyze, say, "koe analyze layers needs --ckpt CKPT.h5");
    if (o->l.conv && !(o->l.props & ALP_MEL))
        return cli_error(&cmd_analyze, say, "--conv adds the conv layers to property mel: add mel to --props");
    if (2 * o->l.trials > o->l.folds)
        return cli_error(&cmd_analyze, say, "--trials %d needs --folds >= %d (a dev and a test fold per trial)",
                         o->l.trials, 2 * o->l.trials);
    return analyze_layers_run(&o->l);
}

/* `koe analyze codebook`: only --ckpt, --corpus, --out, --dump and --json apply. */
static int codebook_command(const AnalyzeOptions *o) {
    const int say = comm_rank() == 0;
    if (o->labels || o->l.ckpt2 || o->l.words)
        return cli_error(&cmd_analyze, say, "--labels, --ckpt2 and --words are not for `koe analyze codebook`");
    if (!o->l.ckpt) return cli_error(&cmd_analyze, say, "koe analyze codebook needs --ckpt CKPT.h5 (wav2vec2 or bestrq)");
    return analyze_codebook_run(&o->l);
}

static int analyze_command(const void *opts, int n_args, char **args) {
    (void)n_args;
    const AnalyzeOptions *o = opts;
    if (!strcmp(args[0], "layers")) return layers_command(o);
    if (!strcmp(args[0], "codebook")) return codebook_command(o);
    const int say = comm_rank() == 0;
    if (strcmp(args[0], "labels"))
        return cli_error(&cmd_analyze, say, "expected `koe analyze layers|codebook|labels ...`");
    if (!o->labels) return cli_error(&cmd_analyze, say, "koe analyze labels needs --labels NAME");
    if (o->l.ckpt || o->l.ckpt2 || o->l.out || o->l.dump || o->l.words)
        return cli_error(&cmd_analyze, say, "--ckpt, --ckpt2, --out, --dump and --words are for `koe analyze layers`");
    const char *corpus_dir = o->l.corpus, *name = o->labels;
    const int json = o->l.json;
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

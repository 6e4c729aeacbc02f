/* analyze_codebook.c — `koe analyze codebook --ckpt CKPT --corpus DIR [--out DIR] [--json] [--dump FILE]`
 * (analyze_layers.h): what a wav2vec 2.0 or BEST-RQ checkpoint's quantizer does with a corpus, the
 * numbers to check before trusting its codes as targets:
 *   - per codebook (wav2vec 2.0: group g of G, V entries; BEST-RQ: codebook q of Q, C codes): how many
 *     codes the corpus's frames use, the code perplexity exp(H) of their histogram, and (wav2vec 2.0)
 *     the prob perplexity of the mean softmax — wav2vec2_perplexity, fairseq's formulas; the totals
 *     are summed over codebooks as fairseq logs them;
 *   - the codes as a label set against the corpus's phone alignments, exactly as `koe analyze labels`
 *     treats k-means labels (analysis/label_join.h, analysis/pnmi.h): phone purity, cluster purity
 *     and PNMI per codebook, and of the joint code (all codebooks together) when it has at most
 *     2^17 values.
 * The codes are the training path's: wav2vec 2.0's argmax of the quantizer logits of the LayerNorm'd
 * conv features without noise (wav2vec2_quantize, the model run in evaluation), BEST-RQ's targets of
 * the per-utterance normalised fbank (bestrq_quantize); the encoder above them is not involved.
 * Under mpirun the ranks split the utterances and sum the counts. Rank 0 prints and writes.
 * Must not: keep more than one utterance's codes. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../analysis/label_join.h"
#include "../analysis/pnmi.h"
#include "../core/common.h"
#include "../core/objective.h"
#include "../data/corpus.h"
#include "../distributed/ckpt.h"
#include "../distributed/comm.h"
#include "analyze_layers.h"
#include "ckpt_model.h"
#include "plot.h"

#define CODEBOOK_MAX_JOINT (1 << 17) /* joint code values counted against phones */

typedef struct {
    const AnalyzeLayersOpts *o;
    CkptCorpus cc; /* the corpus, the model, its input, one utterance's buffers */
    ObjectiveConfig oc;
    ParamTable t;
    float *buf;     /* the quantizer's tensors, laid out by t */
    int w2v;        /* 1: wav2vec 2.0, 0: BEST-RQ */
    int G, V;       /* codebooks, entries per codebook */
    int64_t joint_n; /* V^G, or 0 when above CODEBOOK_MAX_JOINT */
    Wav2vec2HeadParams wp;
    BestrqParams bp;
    BestrqAct ba;
    float *ba_mem;
    double rate;
    int64_t max_len, max_T;
    int16_t *pcm;
    float *wav, *soft;
    int32_t *codes, *lab; /* (max_T, G), (max_T) */
    double *count, *prob, n; /* (G*V) hard counts, summed softmax (wav2vec 2.0); frames */
    /* phones */
    int aligned;
    PhoneInventory inv;
    int **map;
    uint16_t *al;
    int64_t max_al, skipped;
    PnmiCounts *pc; /* (G + 1): each codebook, then the joint code */
    FILE *dump;
} Codebook;

/* The objective's quantizer tensors of the checkpoint; refuses HuBERT and Hugging Face exports. */
static int open_quantizer(Codebook *x, KoeError *err) {
    const char *ck = x->o->ckpt;
    struct stat st;
    if (stat(ck, &st) == 0 && S_ISDIR(st.st_mode))
        return koe_error_set(err, "--ckpt %s is a Hugging Face export: it holds the encoder only, not the quantizer; "
                             "analyse the koe checkpoint it was exported from", ck);
    if (x->cc.r.objective.name != OBJ_WAV2VEC2 && x->cc.r.objective.name != OBJ_BESTRQ)
        return koe_error_set(err, "--ckpt %s was trained with objective.name = hubert, which has no quantizer (its "
                             "targets are k-means labels: `koe analyze labels` measures those); codebook needs a "
                             "wav2vec2 or bestrq checkpoint", ck);
    recipe_objective_config(&x->cc.r, 0, &x->oc);
    params_table_init(&x->t);
    objective_add_params(&x->t, &x->oc);
    x->buf = koe_calloc((size_t)x->t.total, sizeof(float));
    if (ckpt_read_model(ck, &x->t, x->buf, 1, err) < 0) {
        char why[KOE_ERR_LEN];
        snprintf(why, sizeof why, "%s", err->msg);
        return koe_error_set(err, "%s: the quantizer is saved by koe train (a checkpoint of koe init has none)", why);
    }
    x->w2v = x->cc.r.objective.name == OBJ_WAV2VEC2;
    if (x->w2v) {
        wav2vec2_head_bind(&x->t, x->buf, &x->wp);
        x->G = x->oc.wav2vec2.G, x->V = x->oc.wav2vec2.V;
    } else {
        bestrq_bind(&x->t, &x->oc.bestrq, x->buf, &x->bp);
        x->G = x->oc.bestrq.codebooks, x->V = x->oc.bestrq.codebook_size;
        const int64_t F = features_num_frames(x->cc.max_len);
        x->ba_mem = koe_malloc(sizeof(float) * (size_t)bestrq_act_floats(&x->oc.bestrq, 1, F));
        bestrq_act_bind(&x->ba, &x->oc.bestrq, 1, F, x->ba_mem);
    }
    x->joint_n = 1;
    for (int g = 0; g < x->G && x->joint_n; g++) x->joint_n = x->joint_n * x->V > CODEBOOK_MAX_JOINT ? 0 : x->joint_n * x->V;
    return 0;
}

/* The phone inventory and each shard's map into it when every shard has alignments (else no PNMI). */
static void open_phones(Codebook *x) {
    x->aligned = x->cc.c.n_shards > 0;
    for (int si = 0; si < x->cc.c.n_shards; si++) x->aligned &= x->cc.c.shards[si].align_offset != NULL;
    if (!x->aligned) return;
    x->map = koe_calloc((size_t)x->cc.c.n_shards, sizeof(int *));
    for (int si = 0; si < x->cc.c.n_shards; si++) {
        const CorpusShard *s = &x->cc.c.shards[si];
        x->map[si] = koe_malloc((size_t)(s->n_phones ? s->n_phones : 1) * sizeof(int));
        for (int64_t p = 0; p < s->n_phones; p++) x->map[si][p] = phone_inventory_index(&x->inv, s->phones[p]);
        for (int64_t i = 0; i < s->n; i++)
            if (s->align_offset[i + 1] - s->align_offset[i] > x->max_al) x->max_al = s->align_offset[i + 1] - s->align_offset[i];
    }
    x->al = koe_malloc(sizeof(uint16_t) * (size_t)(x->max_al ? x->max_al : 1));
    x->pc = koe_calloc((size_t)x->G + 1, sizeof(PnmiCounts));
    for (int g = 0; g <= x->G; g++)
        if (g < x->G || (x->G > 1 && x->joint_n)) pnmi_counts_init(&x->pc[g], x->inv.n ? x->inv.n : 1, g < x->G ? x->V : (int)x->joint_n);
}

static int cb_open(Codebook *x, const AnalyzeLayersOpts *o, KoeError *err) {
    memset(x, 0, sizeof *x);
    x->o = o;
    if (ckpt_corpus_open(&x->cc, o->ckpt, o->corpus, err) < 0) return -1;
    if (open_quantizer(x, err) < 0) return -1;
    x->rate = ckpt_model_frame_rate(x->cc.m);
    x->max_T = ckpt_model_frames(x->cc.m, x->cc.max_len);
    x->soft = x->w2v ? koe_malloc(sizeof(float) * x->max_T * x->G * x->V) : NULL;
    x->codes = koe_malloc(sizeof(int32_t) * (x->max_T + 1) * x->G);
    x->lab = koe_malloc(sizeof(int32_t) * (x->max_T + 1));
    x->count = koe_calloc((size_t)x->G * x->V, sizeof(double));
    x->prob = koe_calloc((size_t)x->G * x->V, sizeof(double));
    open_phones(x);
    if (o->dump) {
        if (comm_size() > 1) return koe_error_set(err, "--dump writes one file from one process: run without mpirun");
        if (!(x->dump = fopen(o->dump, "w"))) return koe_error_set(err, "--dump %s: cannot create the file", o->dump);
        fprintf(x->dump, "utt\tframe");
        for (int g = 0; g < x->G; g++) fprintf(x->dump, "\tcode%d", g);
        fputc('\n', x->dump);
    }
    return 0;
}

static void cb_close(Codebook *x) {
    if (x->t.n) params_table_free(&x->t);
    for (int si = 0; x->map && si < x->cc.c.n_shards; si++) free(x->map[si]);
    for (int g = 0; x->pc && g <= x->G; g++)
        if (x->pc[g].joint) pnmi_counts_free(&x->pc[g]);
    free(x->pc), free(x->map), free(x->al), free(x->buf), free(x->ba_mem), free(x->soft);
    free(x->codes), free(x->lab), free(x->count), free(x->prob);
    phone_inventory_free(&x->inv);
    if (x->dump) fclose(x->dump);
    ckpt_corpus_close(&x->cc);
}

/* The codes (T, G) of utterance wav (n samples) into x->codes; returns T. */
static int64_t utt_codes(Codebook *x, int64_t n) {
    int64_t S;
    const float *inp = ckpt_input_compute(&x->cc.in, x->cc.wav, n, &S);
    if (x->w2v) {
        ModelRun run = {0};
        model_forward(x->cc.m, inp, &S, 1, S, NULL, &run);
        const int64_t T = x->cc.m->T;
        wav2vec2_quantize(&x->oc.wav2vec2, &x->wp, x->cc.m->a.fp_ln, T, x->soft, x->codes);
        const int GV = x->G * x->V;
        for (int64_t t = 0; t < T; t++)
            for (int j = 0; j < GV; j++) x->prob[j] += x->soft[t * GV + j];
        return T;
    }
    float *feats = model_fbank_input(x->cc.m, inp, &S, 1, S);
    bestrq_quantize(&x->ba, x->codes, &x->bp, feats, &S, 1, S);
    return S / x->oc.bestrq.stack;
}

/* Utterance u: its codes counted, joined with its alignment, dumped. */
static int add_utt(Codebook *x, int64_t u, KoeError *err) {
    const int64_t n = ckpt_corpus_read(&x->cc, u, err);
    if (n < 0) return -1;
    const int64_t T = ckpt_model_frames(x->cc.m, n) > 0 ? utt_codes(x, n) : 0;
    for (int64_t t = 0; t < T; t++)
        for (int g = 0; g < x->G; g++) x->count[g * x->V + x->codes[t * x->G + g]] += 1;
    x->n += (double)T;
    for (int64_t t = 0; x->dump && t < T; t++) {
        fprintf(x->dump, "%s\t%lld", corpus_utt_id(&x->cc.c, u), (long long)t);
        for (int g = 0; g < x->G; g++) fprintf(x->dump, "\t%d", x->codes[t * x->G + g]);
        fputc('\n', x->dump);
    }
    if (!x->aligned || T == 0) return 0;
    CorpusShard *s = &x->cc.c.shards[x->cc.c.utt_shard[u]];
    const int64_t na = corpus_shard_read_align(s, x->cc.c.utt_index[u], x->al, x->max_al, err);
    if (na < 0) return -1;
    for (int g = 0; g <= x->G; g++) {
        if (!x->pc[g].joint) continue;
        for (int64_t t = 0; t < T; t++) {
            int64_t v = 0;
            for (int h = x->G - 1; g == x->G && h >= 0; h--) v = v * x->V + x->codes[t * x->G + h];
            x->lab[t] = g < x->G ? x->codes[t * x->G + g] : (int32_t)v;
        }
        const int64_t sk = label_join_count(&x->pc[g], x->al, na, SHARD_NO_PHONE, x->map[x->cc.c.utt_shard[u]], x->lab, T,
                                            x->rate);
        if (g == 0) x->skipped += sk;
    }
    return 0;
}

static int cmp_desc(const void *a, const void *b) {
    const double p = *(const double *)a, q = *(const double *)b;
    return p > q ? -1 : p < q;
}

static void allreduce_f64(double *v, int64_t n) {
    for (int64_t o = 0; o < n; o += 1 << 27) comm_allreduce_sum_f64(v + o, (int)(n - o < (1 << 27) ? n - o : 1 << 27));
}

static void allreduce_i64(int64_t *v, int64_t n) {
    for (int64_t o = 0; o < n; o += 1 << 27) comm_allreduce_sum_i64(v + o, (int)(n - o < (1 << 27) ? n - o : 1 << 27));
}

/* This rank's utterances, then the counts summed over ranks. */
static int run_counts(Codebook *x, KoeError *err) {
    int64_t u0, u1, bad = 0;
    comm_slice(x->cc.c.n_utts, comm_size(), comm_rank(), &u0, &u1);
    for (int64_t u = u0; u < u1 && !bad; u++) bad = add_utt(x, u, err) < 0;
    if (bad) fprintf(stderr, "koe analyze codebook: %s\n", err->msg);
    comm_allreduce_max_i64(&bad, 1);
    if (bad) return koe_error_set(err, "stopped: a corpus read failed (the message above names it)");
    const int64_t GV = (int64_t)x->G * x->V;
    allreduce_f64(x->count, GV);
    allreduce_f64(x->prob, GV);
    double nn[2] = {x->n, (double)x->skipped};
    comm_allreduce_sum_f64(nn, 2);
    x->n = nn[0], x->skipped = (int64_t)nn[1];
    for (int g = 0; x->aligned && g <= x->G; g++) {
        if (!x->pc[g].joint) continue;
        allreduce_i64(x->pc[g].joint, (int64_t)x->pc[g].n_phones * x->pc[g].n_clusters);
        allreduce_i64(&x->pc[g].frames, 1);
    }
    if (x->n == 0) return koe_error_set(err, "%s: no utterance gives a frame", x->o->corpus);
    return 0;
}

static json_t *json_pnmi(const PnmiCounts *pc) {
    if (!pc || !pc->joint) return json_null();
    const PnmiResult r = pnmi_compute(pc);
    return json_pack("{s:f,s:f,s:f,s:I}", "pnmi", r.pnmi, "phone_purity", r.phone_purity, "cluster_purity",
                     r.cluster_purity, "frames", (json_int_t)r.frames);
}

static json_t *json_report(const Codebook *x) {
    json_t *books = json_array();
    for (int g = 0; g < x->G; g++) {
        const double *h = x->count + (int64_t)g * x->V;
        json_t *counts = json_array();
        int used = 0;
        for (int v = 0; v < x->V; v++) used += h[v] > 0, json_array_append_new(counts, json_integer((json_int_t)h[v]));
        json_t *b = json_pack("{s:i,s:f,s:f,s:o,s:o,s:o}", "used", used, "usage", (double)used / x->V, "code_perplexity",
                              wav2vec2_perplexity(h, x->n, 1, x->V), "prob_perplexity",
                              x->w2v ? json_real(wav2vec2_perplexity(x->prob + (int64_t)g * x->V, x->n, 1, x->V)) : json_null(),
                              "phones", x->aligned ? json_pnmi(&x->pc[g]) : json_null(), "counts", counts);
        json_array_append_new(books, b);
    }
    return json_pack("{s:s,s:i,s:s,s:s,s:s,s:i,s:i,s:f,s:I,s:f,s:o,s:i,s:I,s:o,s:o}", "format", "koe-analyze-codebook",
                     "format_version", 1, "ckpt", x->o->ckpt, "corpus", x->o->corpus, "objective",
                     x->w2v ? "wav2vec2" : "bestrq", "codebooks", x->G, "entries", x->V, "frame_rate", x->rate,
                     "frames", (json_int_t)x->n, "code_perplexity", wav2vec2_perplexity(x->count, x->n, x->G, x->V),
                     "prob_perplexity", x->w2v ? json_real(wav2vec2_perplexity(x->prob, x->n, x->G, x->V)) : json_null(),
                     "phones", x->inv.n, "skipped", (json_int_t)x->skipped, "joint",
                     x->aligned && x->G > 1 ? json_pnmi(&x->pc[x->G]) : json_null(), "per_codebook", books);
}

static void write_table(const Codebook *x, const json_t *js, FILE *f) {
    fprintf(f, "koe analyze codebook: ckpt=%s corpus=%s objective=%s: %d codebook(s) of %d, %.0f frames at %g Hz\n",
            x->o->ckpt, x->o->corpus, x->w2v ? "wav2vec2" : "bestrq", x->G, x->V, x->n, x->rate);
    fprintf(f, "%-9s %-7s %-7s %-9s %-9s %-7s %-7s %-7s\n", "codebook", "used", "usage", "code_ppl", "prob_ppl", "PNMI",
            "ph_pur", "cl_pur");
    const json_t *books = json_object_get(js, "per_codebook");
    for (int g = 0; g <= x->G; g++) {
        const json_t *b = g < x->G ? json_array_get(books, (size_t)g) : NULL;
        const json_t *ph = b ? json_object_get(b, "phones") : json_object_get(js, "joint");
        if (!b && json_is_null(ph)) break;
        char name[16];
        snprintf(name, sizeof name, b ? "%d" : "joint", g);
        fprintf(f, "%-9s ", name);
        if (b) {
            const json_t *pp = json_object_get(b, "prob_perplexity");
            fprintf(f, "%-7lld %-7.4f %-9.2f ", (long long)json_integer_value(json_object_get(b, "used")),
                    json_real_value(json_object_get(b, "usage")), json_real_value(json_object_get(b, "code_perplexity")));
            if (json_is_null(pp)) fprintf(f, "%-9s ", "-");
            else fprintf(f, "%-9.2f ", json_real_value(pp));
        } else {
            fprintf(f, "%-7s %-7s %-9s %-9s ", "-", "-", "-", "-");
        }
        if (json_is_null(ph)) fprintf(f, "%-7s %-7s %-7s\n", "-", "-", "-");
        else fprintf(f, "%-7.4f %-7.4f %-7.4f\n", json_real_value(json_object_get(ph, "pnmi")),
                     json_real_value(json_object_get(ph, "phone_purity")), json_real_value(json_object_get(ph, "cluster_purity")));
    }
    const json_t *pp = json_object_get(js, "prob_perplexity");
    fprintf(f, "total code perplexity %.2f", json_real_value(json_object_get(js, "code_perplexity")));
    if (!json_is_null(pp)) fprintf(f, ", prob perplexity %.2f", json_real_value(pp));
    fprintf(f, " (summed over codebooks, of %d)%s\n", x->G * x->V,
            x->aligned ? "" : "; PNMI: the corpus has no phone alignments (koe prepare --align)");
}

/* --out DIR: codebook.json, usage.tsv (code, then each codebook's frame count) and the usage chart:
 * each codebook's share of frames by code rank (most used first), log y. */
static int write_files(const Codebook *x, json_t *js, KoeError *err) {
    char path[4200];
    mkdir(x->o->out, 0777);
    snprintf(path, sizeof path, "%s/codebook.json", x->o->out);
    if (json_dump_file(js, path, JSON_INDENT(1) | JSON_REAL_PRECISION(17)) != 0)
        return koe_error_set(err, "--out %s: cannot write codebook.json", x->o->out);
    snprintf(path, sizeof path, "%s/usage.tsv", x->o->out);
    FILE *f = fopen(path, "w");
    if (!f) return koe_error_set(err, "--out %s: cannot write usage.tsv", x->o->out);
    fprintf(f, "code");
    for (int g = 0; g < x->G; g++) fprintf(f, "\tcodebook%d", g);
    for (int v = 0; v < x->V; v++) {
        fprintf(f, "\n%d", v);
        for (int g = 0; g < x->G; g++) fprintf(f, "\t%.0f", x->count[(int64_t)g * x->V + v]);
    }
    fputc('\n', f);
    if (fclose(f) != 0) return koe_error_set(err, "--out %s: cannot write usage.tsv (disk full?)", x->o->out);
    double *xs = koe_malloc(sizeof(double) * x->V), *ys = koe_malloc(sizeof(double) * x->V * x->G);
    PlotSeries *ser = koe_malloc(sizeof(PlotSeries) * x->G);
    char(*names)[32] = koe_malloc(sizeof *names * x->G);
    for (int v = 0; v < x->V; v++) xs[v] = v + 1;
    for (int g = 0; g < x->G; g++) {
        double *y = ys + (int64_t)g * x->V;
        for (int v = 0; v < x->V; v++) y[v] = x->count[(int64_t)g * x->V + v] / x->n;
        qsort(y, (size_t)x->V, sizeof *y, cmp_desc);
        snprintf(names[g], sizeof names[g], "codebook %d", g);
        ser[g] = (PlotSeries){names[g], xs, y, x->V};
    }
    PlotSpec spec = {.title = "koe analyze codebook: code usage", .xlabel = "code rank (most used first)",
                     .ylabel = "share of frames", .log_y = 1, .formats = PLOT_PNG | PLOT_SVG};
    snprintf(path, sizeof path, "%s/usage", x->o->out);
    KoeError perr;
    const int rc = plot_lines(path, &spec, ser, x->G, &perr);
    if (rc == PLOT_NO_GNUPLOT || rc < 0) koe_warn("--out %s: usage chart not drawn: %s", x->o->out, perr.msg);
    free(xs), free(ys), free(ser), free(names);
    return 0;
}

int analyze_codebook_run(const AnalyzeLayersOpts *o) {
    Codebook x;
    KoeError err = {{0}};
    int rc = cb_open(&x, o, &err) < 0 ? -1 : 0;
    int64_t bad = rc < 0;
    comm_allreduce_max_i64(&bad, 1); /* every rank opened the same files: a failure is everyone's */
    if (bad && rc == 0) rc = koe_error_set(&err, "stopped: another rank could not open the inputs");
    if (rc == 0) rc = run_counts(&x, &err);
    if (rc == 0 && comm_rank() == 0) {
        json_t *js = json_report(&x);
        if (o->json) json_dumpf(js, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17)), fputc('\n', stdout);
        else write_table(&x, js, stdout);
        fflush(stdout);
        if (o->out) rc = write_files(&x, js, &err);
        json_decref(js);
    }
    if (rc < 0 && comm_rank() == 0) fprintf(stderr, "koe analyze codebook: %s\n", err.msg);
    cb_close(&x);
    return rc < 0 ? KOE_EXIT_USAGE : KOE_EXIT_OK;
}

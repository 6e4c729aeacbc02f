/* cmd_synth.c — `koe synth`: the demo corpus that ships with koe (espeak-ng, no downloads).
 * Plans which utterances to make, splits them across ranks (utterance k of a wave goes to rank
 * k % world), and has rank 0 write the manifest and the alignments. The synthesis itself is
 * data/synth.c. Must not depend on the rank count: the output is byte-identical for any world. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../data/synth.h"
#include "../distributed/comm.h"
#include "commands.h"

#define PRIOR_UTT_SAMPLES (3 * KOE_SAMPLE_RATE) /* guess of an utterance's length before any is made */
#define MAX_WAVE_PER_LANG 256

typedef struct {
    int lang;          /* index into synth_langs */
    SynthWordlist wl;
    int64_t n_made;    /* utterances synthesised so far (the kept ones are a prefix) */
    int64_t n_kept;
    int64_t kept_samples, made_samples;
    int64_t *len;      /* (n_made) samples at 16 kHz */
    int done;
} LangState;

typedef struct {
    const char *out, *langs, *wordlists;
    double minutes;
    uint64_t seed;
    int vocab;
} SynthOptions;

#define O(field) offsetof(SynthOptions, field)
static const CliFlag synth_flags[] = {
    CLI_S("--out", O(out), NULL, CLI_REQUIRED, "DIR", "output directory; DIR/wav must not exist yet"),
    CLI_S("--langs", O(langs), NULL, 0, "L1,L2,...", "comma-separated languages (default: all supported:\n"
                                                     "en,de,fr,es,it,pt,nl,pl,cs,fi,ru,tr,sw,hi)"),
    CLI_N("--minutes", CLI_DOUBLE, O(minutes), "5", 0, 1e5, CLI_ABOVE_LO, "M",
          "minutes of audio in total, split evenly across languages;\n"
          "each language gets utterances until its share is reached"),
    CLI_N("--seed", CLI_U64, O(seed), "1", 0, 9007199254740992.0, 0, "S", "seed of every random choice"),
    CLI_N("--vocab", CLI_INT, O(vocab), "0", 0, 1e9, 0, "N",
          "draw words from the first N of each word list only (0: all), so that words\n"
          "repeat: `koe analyze layers --props word` needs several segments per word"),
    CLI_S("--wordlists", O(wordlists), NULL, 0, "DIR", "word lists LANG.txt (default: data/wordlists of the source\n"
                                                      "tree the koe binary was built in, or PREFIX/share/koe/wordlists\n"
                                                      "when installed)"),
    CLI_END,
};

static int synth_command(const void *opts, int n_args, char **args);

const CliCommand cmd_synth = {
    .name = "synth",
    .summary = "synthesise the multilingual demo corpus (espeak-ng) with phone alignments",
    .about = "Speaks sentences drawn from word lists with espeak-ng, varying voice variant (m1-m7, f1-f4),\n"
             "rate (130-220 wpm), pitch (30-70) and pitch range (20-80) per utterance, resampled to 16 kHz\n"
             "with libsoxr. Deterministic for a seed, and the same under mpirun with any number of ranks.\n"
             "\n"
             "Writes:\n"
             "  DIR/wav/LANG/LANG-NNNNNN-VARIANT.wav  16-bit PCM mono, 16 kHz; the speaker is the variant\n"
             "  DIR/train.tsv   fairseq manifest: first line the absolute path of DIR/wav, then\n"
             "                  RELPATH<TAB>N_SAMPLES<TAB>LANG\n"
             "  DIR/align.ctm   phone alignments, one line per phone: UTT 1 START DUR PHONE (seconds,\n"
             "                  3 decimals), covering each utterance from 0 to its end; phones are espeak-ng's\n"
             "                  IPA names, pauses and leading silence are \"sil\". UTT is the wav path under\n"
             "                  DIR/wav without .wav (e.g. en/en-000003-m2), the id `koe prepare` gives it.\n"
             "  DIR/words.ctm   word alignments from espeak-ng's word events, the same columns with the word\n"
             "                  (as written, without punctuation) for PHONE; a word ends at the next word or\n"
             "                  at a pause inside it\n"
             "  DIR/utts.txt    what each utterance says and how (tab-separated, one header line): id,\n"
             "                  speaker, rate, pitch, range, text\n"
             "\n"
             "Next: koe prepare --out CORPUS --lang-from-dir --align DIR/align.ctm --words DIR/words.ctm DIR/wav\n",
    .flags = synth_flags,
    .opts_size = sizeof(SynthOptions),
    .run = synth_command,
};

/* Paths are built from --out (checked to be short enough) and short names; a truncated path
 * would write somewhere else, so it is fatal rather than silent. */
static void __attribute__((format(printf, 3, 4))) path_printf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= n) koe_fatal(KOE_EXIT_USAGE, "path too long: %s...", buf);
}

/* Rank 0 creates DIR, DIR/wav and DIR/wav/LANG; every rank learns whether that worked. */
static int make_dirs(const char *out, const LangState *ls, int n_langs) {
    int32_t ok = 1;
    if (comm_rank() == 0) {
        char p[PATH_MAX];
        if (mkdir(out, 0777) && errno != EEXIST) {
            koe_log("error: cannot create %s: %s", out, strerror(errno));
            ok = 0;
        }
        path_printf(p, sizeof p, "%s/wav", out);
        if (ok && mkdir(p, 0777)) {
            if (errno == EEXIST)
                koe_log("error: %s already exists: koe synth writes a fresh corpus; remove it or choose "
                        "another --out", p);
            else
                koe_log("error: cannot create %s: %s", p, strerror(errno));
            ok = 0;
        }
        for (int i = 0; ok && i < n_langs; i++) {
            path_printf(p, sizeof p, "%s/wav/%s", out, synth_langs[ls[i].lang].code);
            if (mkdir(p, 0777)) {
                koe_log("error: cannot create %s: %s", p, strerror(errno));
                ok = 0;
            }
        }
    }
    comm_bcast(&ok, sizeof ok, 0);
    return ok ? 0 : -1;
}

typedef struct {
    char *id;
    const char *text; /* the block's lines */
    size_t len;
} CtmBlock;

static int block_cmp(const void *a, const void *b) {
    return strcmp(((const CtmBlock *)a)->id, ((const CtmBlock *)b)->id);
}

static char *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) koe_fatal(KOE_EXIT_INTERNAL, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, got;
    char *b = koe_malloc(cap);
    while ((got = fread(b + n, 1, cap - n - 1, f)) > 0)
        if ((n += got) + 1 == cap) b = koe_realloc(b, cap *= 2);
    if (ferror(f)) koe_fatal(KOE_EXIT_INTERNAL, "read error on %s", path);
    fclose(f);
    b[n] = 0;
    *len = n;
    return b;
}

/* kind "align" (phones) or "words". */
static void part_path(char *buf, size_t n, const char *out, const char *kind, int rank) {
    path_printf(buf, n, "%s/.synth-%s-rank%05d.part", out, kind, rank);
}

static FILE *open_tmp(const char *path, char *tmp, size_t n) {
    path_printf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) koe_fatal(KOE_EXIT_USAGE, "cannot create %s: %s", tmp, strerror(errno));
    return f;
}

static void close_rename(FILE *f, const char *tmp, const char *path) {
    if (ferror(f) | fclose(f)) koe_fatal(KOE_EXIT_USAGE, "write error on %s (disk full?)", tmp);
    if (rename(tmp, path)) koe_fatal(KOE_EXIT_USAGE, "rename %s -> %s: %s", tmp, path, strerror(errno));
}

/* Every rank's part file of kind, cut into blocks of one utterance's lines, sorted by id; texts
 * (world) holds the files, which the blocks point into. */
static CtmBlock *read_parts(const char *out, const char *kind, int world, char **texts, size_t *n_blocks) {
    size_t nb = 0, capb = 1024;
    CtmBlock *blocks = koe_malloc(capb * sizeof *blocks);
    for (int r = 0; r < world; r++) {
        char p[PATH_MAX];
        size_t len;
        part_path(p, sizeof p, out, kind, r);
        texts[r] = read_whole(p, &len);
        for (char *line = texts[r]; *line;) {
            char *nl = strchr(line, '\n');
            KOE_ASSERT(nl);
            char *sp = memchr(line, ' ', (size_t)(nl - line));
            KOE_ASSERT(sp);
            size_t idlen = (size_t)(sp - line);
            CtmBlock *last = nb ? &blocks[nb - 1] : NULL;
            if (last && strlen(last->id) == idlen && !memcmp(last->id, line, idlen)) {
                last->len = (size_t)(nl + 1 - last->text);
            } else {
                if (nb == capb) blocks = koe_realloc(blocks, (capb *= 2) * sizeof *blocks);
                char *id = koe_malloc(idlen + 1);
                memcpy(id, line, idlen);
                id[idlen] = 0;
                blocks[nb++] = (CtmBlock){id, line, (size_t)(nl + 1 - line)};
            }
            line = nl + 1;
        }
    }
    qsort(blocks, nb, sizeof *blocks, block_cmp);
    *n_blocks = nb;
    return blocks;
}

/* After the outputs are in place: the part files of kind removed, the blocks freed. */
static void free_parts(const char *out, const char *kind, CtmBlock *blocks, size_t nb, char **texts, int world) {
    for (size_t b = 0; b < nb; b++) free(blocks[b].id);
    for (int r = 0; r < world; r++) {
        char p[PATH_MAX];
        part_path(p, sizeof p, out, kind, r);
        if (unlink(p)) koe_warn("could not remove %s: %s", p, strerror(errno));
        free(texts[r]);
    }
    free(blocks);
}

/* Rank 0: the manifest and the CTMs (phones, words), in language order then index, from every
 * rank's part files. Every utterance has phones; one whose words espeak-ng did not mark has none. */
static void write_outputs(const char *out, LangState *ls, int n_langs, uint64_t seed, int world) {
    char **texts = koe_malloc((size_t)world * sizeof *texts), **wtexts = koe_malloc((size_t)world * sizeof *wtexts);
    size_t nb, nw;
    CtmBlock *blocks = read_parts(out, "align", world, texts, &nb), *wblocks = read_parts(out, "words", world, wtexts, &nw);
    char wavdir[PATH_MAX], root[PATH_MAX], tmp_tsv[PATH_MAX + 8], tmp_ctm[PATH_MAX + 8], tmp_wctm[PATH_MAX + 8];
    path_printf(wavdir, sizeof wavdir, "%s/wav", out);
    if (!realpath(wavdir, root)) koe_fatal(KOE_EXIT_INTERNAL, "realpath %s: %s", wavdir, strerror(errno));
    char tsv_path[PATH_MAX], ctm_path[PATH_MAX], wctm_path[PATH_MAX], txt_path[PATH_MAX], tmp_txt[PATH_MAX + 8];
    path_printf(tsv_path, sizeof tsv_path, "%s/train.tsv", out);
    path_printf(ctm_path, sizeof ctm_path, "%s/align.ctm", out);
    path_printf(wctm_path, sizeof wctm_path, "%s/words.ctm", out);
    path_printf(txt_path, sizeof txt_path, "%s/utts.txt", out);
    FILE *tsv = open_tmp(tsv_path, tmp_tsv, sizeof tmp_tsv);
    FILE *ctm = open_tmp(ctm_path, tmp_ctm, sizeof tmp_ctm);
    FILE *wctm = open_tmp(wctm_path, tmp_wctm, sizeof tmp_wctm);
    FILE *txt = open_tmp(txt_path, tmp_txt, sizeof tmp_txt);
    fprintf(tsv, "%s\n", root);
    fprintf(txt, "id\tspeaker\trate\tpitch\trange\ttext\n");
    for (int i = 0; i < n_langs; i++) {
        for (int64_t k = 0; k < ls[i].n_kept; k++) {
            SynthUttSpec s;
            synth_utt_spec(&s, seed, ls[i].lang, k, &ls[i].wl);
            char id[128];
            synth_utt_id(id, sizeof id, &s);
            fprintf(txt, "%s\t%s\t%d\t%d\t%d\t%s\n", id, s.variant, s.rate, s.pitch, s.range, s.text);
            synth_utt_spec_free(&s);
            fprintf(tsv, "%s.wav\t%" PRId64 "\t%s\n", id, ls[i].len[k], synth_langs[ls[i].lang].code);
            CtmBlock key = {.id = id};
            CtmBlock *b = bsearch(&key, blocks, nb, sizeof *blocks, block_cmp);
            if (!b) koe_fatal(KOE_EXIT_INTERNAL, "no alignment was written for utterance %s", id);
            fwrite(b->text, 1, b->len, ctm);
            if ((b = bsearch(&key, wblocks, nw, sizeof *wblocks, block_cmp))) fwrite(b->text, 1, b->len, wctm);
        }
    }
    close_rename(tsv, tmp_tsv, tsv_path);
    close_rename(ctm, tmp_ctm, ctm_path);
    close_rename(wctm, tmp_wctm, wctm_path);
    close_rename(txt, tmp_txt, txt_path);
    free_parts(out, "align", blocks, nb, texts, world);
    free_parts(out, "words", wblocks, nw, wtexts, world);
    free(texts);
    free(wtexts);
}

static double cpu_seconds(void) {
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    return (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) +
           1e-6 * (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
                           kids.ru_stime.tv_usec);
}

/* Languages: the requested ones (all when langs is NULL), in the order given, into ls. Returns the
 * count, or -1 (printed on rank 0). */
static int select_langs(const char *langs, LangState *ls) {
    const int say = comm_rank() == 0;
    char supported[256];
    synth_lang_list(supported, sizeof supported);
    char *copy = koe_strdup(langs ? langs : supported);
    int n_langs = 0, rc = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        int l = synth_lang_find(tok);
        if (l < 0) rc = cli_error(&cmd_synth, say, "--langs: unknown language '%s'; supported: %s", tok, supported);
        for (int j = 0; j < n_langs && !rc; j++)
            if (ls[j].lang == l) rc = cli_error(&cmd_synth, say, "--langs: '%s' is given twice", tok);
        if (!rc) ls[n_langs++].lang = l;
    }
    free(copy);
    if (!rc && n_langs == 0) rc = cli_error(&cmd_synth, say, "--langs '%s': no language given", langs);
    return rc ? -1 : n_langs;
}

/* Every language's word list, and an espeak-ng voice for it. Returns 0 or an exit code (printed). */
static int load_langs(const char *wl_dir, int vocab, LangState *ls, int n_langs) {
    const int say = comm_rank() == 0;
    char wl_default[PATH_MAX];
    if (!wl_dir) {
        if (cli_shipped_path("data/wordlists", "wordlists", wl_default, sizeof wl_default))
            return cli_error(&cmd_synth, say, "cannot find the word lists next to the koe binary: pass --wordlists "
                                              "DIR (the source tree's data/wordlists)");
        wl_dir = wl_default;
    }
    KoeError err;
    for (int i = 0; i < n_langs; i++) {
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s.txt", wl_dir, synth_langs[ls[i].lang].code) >= (int)sizeof p)
            return cli_error(&cmd_synth, say, "--wordlists '%s': path too long", wl_dir);
        if (synth_wordlist_load(&ls[i].wl, p, &err)) return cli_error(&cmd_synth, say, "%s", err.msg);
        if (vocab > 0 && ls[i].wl.n > vocab) ls[i].wl.n = vocab; /* the loader's minimum stays the list's */
    }
    int voice_ok[64];
    KOE_ASSERT(synth_n_langs <= 64);
    if (synth_init(voice_ok, &err)) return cli_error(&cmd_synth, say, "%s", err.msg);
    for (int i = 0; i < n_langs; i++)
        if (!voice_ok[ls[i].lang])
            return cli_error(&cmd_synth, say,
                             "espeak-ng has no voice '%s' for language %s: install espeak-ng-data or leave the "
                             "language out of --langs", synth_langs[ls[i].lang].voice, synth_langs[ls[i].lang].code);
    return 0;
}

/* One wave: every language still short of its budget gets about as many utterances as its mean
 * length so far says it needs; this rank makes every world-th, writing its wav and its CTM lines
 * to pf. Returns the utterances made in the wave (0: every language is done). */
static int64_t synth_wave(const char *out, LangState *ls, int n_langs, uint64_t seed, int64_t budget, FILE *pf,
                          FILE *wf, const char *part, int64_t *clipped) {
    const int rank = comm_rank(), world = comm_size();
    int64_t n_jobs = 0;
    int64_t *job_n = koe_calloc((size_t)n_langs, sizeof *job_n);
    for (int i = 0; i < n_langs; i++) {
        if (ls[i].done) continue;
        double est = ls[i].n_made ? (double)ls[i].made_samples / (double)ls[i].n_made : PRIOR_UTT_SAMPLES;
        double need = ceil((double)(budget - ls[i].kept_samples) / est);
        job_n[i] = need < 1 ? 1 : need > MAX_WAVE_PER_LANG ? MAX_WAVE_PER_LANG : (int64_t)need;
        n_jobs += job_n[i];
    }
    int *job_lang = koe_malloc((size_t)(n_jobs ? n_jobs : 1) * sizeof *job_lang); /* index into ls */
    int64_t *job_index = koe_malloc((size_t)(n_jobs ? n_jobs : 1) * sizeof *job_index);
    int64_t *job_len = koe_calloc((size_t)(n_jobs ? n_jobs : 1), sizeof *job_len);
    for (int i = 0, k = 0; i < n_langs; i++)
        for (int64_t j = 0; j < job_n[i]; j++, k++) {
            job_lang[k] = i;
            job_index[k] = ls[i].n_made + j;
        }
    KoeError err;
    for (int64_t k = rank; k < n_jobs; k += world) {
        LangState *L = &ls[job_lang[k]];
        SynthUttSpec s;
        SynthUtt u;
        synth_utt_spec(&s, seed, L->lang, job_index[k], &L->wl);
        char id[128], wav[PATH_MAX];
        synth_utt_id(id, sizeof id, &s);
        if (synth_render(&s, &u, &err)) koe_fatal(KOE_EXIT_INTERNAL, "utterance %s: %s", id, err.msg);
        path_printf(wav, sizeof wav, "%s/wav/%s.wav", out, id);
        if (synth_write_wav(wav, &u, &err)) koe_fatal(KOE_EXIT_USAGE, "utterance %s: %s", id, err.msg);
        if (synth_write_ctm(pf, id, &u) || synth_write_word_ctm(wf, id, &u))
            koe_fatal(KOE_EXIT_USAGE, "write error on %s (disk full?)", part);
        job_len[k] = u.n_samples;
        *clipped += u.n_clipped;
        synth_utt_free(&u);
        synth_utt_spec_free(&s);
    }
    KOE_ASSERT(n_jobs <= INT_MAX);
    if (n_jobs) comm_allreduce_sum_i64(job_len, (int)n_jobs);
    /* The kept utterances are the shortest prefix that reaches the budget, so the result does not
     * depend on how a wave was sized or split, only the waste does. */
    for (int64_t k = 0; k < n_jobs; k++) {
        LangState *L = &ls[job_lang[k]];
        KOE_ASSERT(job_len[k] > 0 && job_index[k] == L->n_made);
        L->len = koe_realloc(L->len, (size_t)(L->n_made + 1) * sizeof *L->len);
        L->len[L->n_made++] = job_len[k];
        L->made_samples += job_len[k];
        if (!L->done) {
            L->n_kept++;
            L->kept_samples += job_len[k];
            L->done = L->kept_samples >= budget;
        } else if (k % world == rank) { /* made in this wave past the budget: not part of the corpus */
            SynthUttSpec s;
            synth_utt_spec(&s, seed, L->lang, job_index[k], &L->wl);
            char id[128], wav[PATH_MAX];
            synth_utt_id(id, sizeof id, &s);
            synth_utt_spec_free(&s);
            path_printf(wav, sizeof wav, "%s/wav/%s.wav", out, id);
            if (unlink(wav)) koe_fatal(KOE_EXIT_USAGE, "cannot remove %s: %s", wav, strerror(errno));
        }
    }
    free(job_n);
    free(job_lang);
    free(job_index);
    free(job_len);
    return n_jobs;
}

static void report(const char *out, const LangState *ls, int n_langs, double t0, int64_t n_made, int64_t clipped) {
    double cpu = cpu_seconds();
    comm_allreduce_sum_f64(&cpu, 1);
    int64_t n_utts = 0, samples = 0;
    for (int i = 0; i < n_langs; i++) {
        n_utts += ls[i].n_kept;
        samples += ls[i].kept_samples;
    }
    double audio_min = (double)samples / KOE_SAMPLE_RATE / 60.0;
    if (comm_rank() == 0) {
        koe_log("synth: %" PRId64 " utterances, %.2f min of audio in %d languages -> %s "
                "(%" PRId64 " synthesised, %" PRId64 " samples clipped)",
                n_utts, audio_min, n_langs, out, n_made, clipped);
        koe_log("synth: %.1f s wall, %.2f CPU s on %d rank(s): %.2f CPU s per minute of audio", koe_now() - t0, cpu,
                comm_size(), cpu / audio_min);
        koe_log("next: koe prepare --out CORPUS --lang-from-dir --align %s/align.ctm --words %s/words.ctm %s/wav", out,
                out, out);
    }
}

static int synth_command(const void *opts, int n_args, char **args) {
    (void)n_args, (void)args;
    const SynthOptions *o = opts;
    const char *out = o->out;
    const int rank = comm_rank();
    if (strlen(out) > PATH_MAX - 256) return cli_error(&cmd_synth, rank == 0, "--out '%s': path too long", out);
    LangState *ls = koe_calloc((size_t)synth_n_langs, sizeof *ls);
    const int n_langs = select_langs(o->langs, ls);
    int rc = n_langs < 0 ? KOE_EXIT_USAGE : load_langs(o->wordlists, o->vocab, ls, n_langs);
    if (!rc && make_dirs(out, ls, n_langs)) rc = KOE_EXIT_USAGE;
    if (rc) {
        for (int i = 0; i < n_langs; i++) synth_wordlist_free(&ls[i].wl);
        free(ls);
        return rc;
    }
    double t0 = koe_now();
    int64_t budget = (int64_t)ceil(o->minutes * 60.0 * KOE_SAMPLE_RATE / n_langs);
    char part[PATH_MAX], wpart[PATH_MAX];
    part_path(part, sizeof part, out, "align", rank);
    part_path(wpart, sizeof wpart, out, "words", rank);
    FILE *pf = fopen(part, "w"), *wf = fopen(wpart, "w");
    if (!pf || !wf) koe_fatal(KOE_EXIT_USAGE, "cannot create %s: %s", pf ? wpart : part, strerror(errno));
    int64_t clipped = 0, n_made = 0, n;
    for (int wave = 1; (n = synth_wave(out, ls, n_langs, o->seed, budget, pf, wf, part, &clipped)) > 0; wave++) {
        n_made += n;
        if (rank == 0) koe_log("synth: wave %d: %" PRId64 " utterances", wave, n);
    }
    if (ferror(pf) | fclose(pf)) koe_fatal(KOE_EXIT_USAGE, "write error on %s (disk full?)", part);
    if (ferror(wf) | fclose(wf)) koe_fatal(KOE_EXIT_USAGE, "write error on %s (disk full?)", wpart);
    comm_allreduce_sum_i64(&clipped, 1);
    comm_barrier(); /* every part file is complete */
    if (rank == 0) write_outputs(out, ls, n_langs, o->seed, comm_size());
    report(out, ls, n_langs, t0, n_made, clipped);
    comm_barrier(); /* the outputs exist when any rank returns */
    for (int i = 0; i < n_langs; i++) {
        synth_wordlist_free(&ls[i].wl);
        free(ls[i].len);
    }
    free(ls);
    return KOE_EXIT_OK;
}

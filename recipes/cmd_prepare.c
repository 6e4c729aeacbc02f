/* cmd_prepare.c — `koe prepare`: audio directories, fairseq manifests and Kaldi wav.scp in, corpus
 * shards + corpus.h5 + prepare-report.tsv out (data/README.md, Corpus). Under mpirun the ranks split the
 * shards of one plan that does not depend on the rank count; rank 0 gathers the rejections and
 * writes the report and the index. The work itself is in data/prepare.c; this file only parses the
 * command line and does the collectives. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../data/corpus.h"
#include "../data/ctm.h"
#include "../data/prepare.h"
#include "../distributed/comm.h"
#include "commands.h"

typedef struct {
    const char *out, *lang, *align, *words;
    double shard_mb;
    int lang_from_dir, allow_pipes, force;
} PrepareCmdOptions;

static int parse_lang(const char *s, void *dst, char *why, size_t n) {
    if (!s[0] || strpbrk(s, " \t\n/")) {
        snprintf(why, n, "expected a language code such as en or sw");
        return -1;
    }
    *(const char **)dst = s;
    return 0;
}

#define O(field) offsetof(PrepareCmdOptions, field)
static const CliFlag prepare_flags[] = {
    CLI_S("--out", O(out), NULL, CLI_REQUIRED, "DIR", "output corpus directory (created if missing)"),
    CLI_N("--shard-mb", CLI_DOUBLE, O(shard_mb), "256", 0, 1e6, CLI_ABOVE_LO, "N",
          "target size of a shard in MB of int16 audio"),
    CLI_P("--lang", O(lang), parse_lang, NULL, 0, "L",
          "language of every utterance (default: the manifest's third column, else und)"),
    CLI_B("--lang-from-dir", O(lang_from_dir), "language = name of each file's parent directory"),
    CLI_S("--align", O(align), NULL, 0, "CTM", "phone alignments, lines `utt channel start dur phone` (seconds),\n"
                                               "stored as 10 ms frames in each shard's /align (default: none)"),
    CLI_S("--words", O(words), NULL, 0, "CTM", "word alignments, lines `utt channel start dur word` (seconds): the\n"
                                               "lines of the corpus's utterances kept as DIR/words.ctm (default: none)"),
    CLI_B("--allow-pipes", O(allow_pipes), "run wav.scp `command |` entries with the shell (default: refused)"),
    CLI_B("--force", O(force), "replace a corpus already in DIR: built in DIR.force.tmp, swapped in when complete "
                               "(default: refuse; a corpus is immutable)"),
    CLI_END,
};

static int prepare_command(const void *opts, int n_args, char **args);

const CliCommand cmd_prepare = {
    .name = "prepare",
    .summary = "audio (dirs, fairseq .tsv, Kaldi wav.scp) to corpus shards",
    .args = "INPUT...",
    .min_args = 1,
    .max_args = -1,
    .about = "Decode every input (any format libsndfile reads), mix to mono, resample to 16 kHz with libsoxr\n"
             "(SOXR_HQ), store int16 in DIR/shard-NNNNN.h5 and index them in DIR/corpus.h5. Inputs that cannot\n"
             "be used are listed with the reason in DIR/prepare-report.tsv and on stderr; the run goes on.\n"
             "Under mpirun the ranks split the shards; the corpus is the same for any number of ranks.\n"
             "\n"
             "INPUT is one of\n"
             "  DIR            every non-hidden file below DIR, sorted by path; id = path relative to DIR\n"
             "                 without extension (files libsndfile cannot read are rejected)\n"
             "  FILE.tsv       fairseq manifest: the root directory (relative to the manifest's directory\n"
             "                 unless absolute), then relpath<TAB>nsamples[<TAB>lang]; id = relpath without extension\n"
             "  FILE.scp       Kaldi wav.scp: `uttid path` or `uttid command |` (see --allow-pipes)\n"
             "  FILE           one audio file; id = its name without extension\n"
             "Ids must be unique: later duplicates are rejected.\n"
             "The speaker of an utterance is its file's parent directory name (unknown for pipes).\n"
             "Exit status: 0 if any utterance was written, 1 if nothing was (or on a usage error).\n",
    .flags = prepare_flags,
    .opts_size = sizeof(PrepareCmdOptions),
    .run = prepare_command,
};

static int is_shard_file(const char *name) {
    if (strncmp(name, "shard-", 6) != 0) return 0;
    const char *s = name + 6;
    if (*s < '0' || *s > '9') return 0;
    while (*s >= '0' && *s <= '9') s++;
    return !strcmp(s, ".h5") || !strcmp(s, ".h5.tmp");
}

/* What a prepare writes in its directory (and removes of an earlier one's). */
static int is_corpus_file(const char *name) {
    return is_shard_file(name) || !strcmp(name, "corpus.h5") || !strcmp(name, "corpus.h5.tmp") ||
           !strcmp(name, "prepare-report.tsv") || !strcmp(name, "words.ctm");
}

/* Remove dir's corpus files (a killed or replaced run's: they belong to no corpus); with other_to,
 * move every other entry (labels/, the user's files) there instead of leaving it. Returns 0, or -1
 * with the reason printed. */
static int clear_corpus_files(const char *dir, const char *other_to) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "koe prepare: cannot list %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    char path[8400], to[8400];
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(to, sizeof to, "%s/%s", other_to ? other_to : "", e->d_name);
        if (is_corpus_file(e->d_name) ? unlink(path) != 0 : other_to && rename(path, to) != 0) {
            fprintf(stderr, "koe prepare: cannot %s %s: %s\n", is_corpus_file(e->d_name) ? "remove the stale" : "move",
                    path, strerror(errno));
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

/* --force over a corpus builds the new one in DIR.force.tmp beside it; the old one stays whole until
 * the new one is complete (a kill, a full disk or an error leaves it as it was). */
static void staging_path(const char *dir, char *out, size_t n) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    snprintf(out, n, "%.*s.force.tmp", (int)len, dir);
}

/* Drop a staging directory: its corpus files, then itself. Returns 0, or -1 (printed: it holds other
 * files, left by a swap that was stopped before it moved them back). */
static int staging_drop(const char *staging) {
    if (access(staging, F_OK) != 0) return 0;
    if (clear_corpus_files(staging, NULL) < 0) return -1;
    if (rmdir(staging) == 0) return 0;
    fprintf(stderr, "koe prepare: cannot remove %s (left by an earlier --force): %s; move what you need out of it "
            "and remove it\n", staging, strerror(errno));
    return -1;
}

/* The new corpus in staging becomes dir: one atomic exchange of the two directories (rename without
 * it on a file system that has no RENAME_EXCHANGE), then what else dir held (labels/, the user's
 * files) moves into the new one and the old corpus files go. Returns 0, or -1 (printed). */
static int staging_swap(const char *staging, const char *dir) {
    char old[4300];
    snprintf(old, sizeof old, "%s", staging);
    if (renameat2(AT_FDCWD, staging, AT_FDCWD, dir, RENAME_EXCHANGE) != 0) {
        if (errno != EINVAL && errno != ENOSYS) {
            fprintf(stderr, "koe prepare: --force: cannot exchange %s and %s: %s; the new corpus is complete in %s, "
                    "the old one untouched in %s\n", staging, dir, strerror(errno), staging, dir);
            return -1;
        }
        snprintf(old, sizeof old, "%.*s.old.tmp", (int)(strlen(staging) - strlen(".force.tmp")), staging);
        if (rename(dir, old) != 0 || rename(staging, dir) != 0) {
            fprintf(stderr, "koe prepare: --force: cannot move the new corpus %s to %s (the old one: %s): %s\n",
                    staging, dir, access(dir, F_OK) == 0 ? dir : old, strerror(errno));
            return -1;
        }
    }
    if (clear_corpus_files(old, dir) < 0 || rmdir(old) != 0) {
        fprintf(stderr, "koe prepare: --force: the new corpus is in %s; the old one's files are left in %s\n", dir, old);
        return -1;
    }
    return 0;
}

/* Rank 0: make DIR ready, or say why not; *staged: the corpus is built in DIR.force.tmp (--force over
 * a corpus). Returns 0 or an exit code. */
static int prepare_out_dir(const char *dir, int force, int *staged) {
    char path[4200];
    *staged = 0;
    if (strlen(dir) > 4000) {
        fprintf(stderr, "koe prepare: --out path too long\n");
        return KOE_EXIT_USAGE;
    }
    for (char *s = strchr(strcpy(path, dir) + 1, '/'); s; s = strchr(s + 1, '/')) { /* mkdir -p */
        *s = 0;
        if (mkdir(path, 0777) != 0 && errno != EEXIST) break;
        *s = '/';
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "koe prepare: cannot create --out %s: %s%s\n", dir, strerror(errno), koe_fs_note(dir));
        return KOE_EXIT_USAGE;
    }
    snprintf(path, sizeof path, "%s/corpus.h5", dir);
    if (access(path, F_OK) == 0) {
        if (!force) {
            fprintf(stderr,
                    "koe prepare: %s already holds a corpus (%s); a corpus is immutable once written: "
                    "choose another --out, or pass --force to replace it\n",
                    dir, path);
            return KOE_EXIT_USAGE;
        }
        staging_path(dir, path, sizeof path);
        if (staging_drop(path) < 0) return KOE_EXIT_USAGE;
        if (mkdir(path, 0777) != 0) {
            fprintf(stderr, "koe prepare: --force: cannot create %s (the new corpus is built there and replaces the "
                    "old one when complete): %s%s\n", path, strerror(errno), koe_fs_note(path));
            return KOE_EXIT_USAGE;
        }
        koe_log("prepare: --force: building the new corpus in %s; it replaces the one in %s when complete", path, dir);
        *staged = 1;
        return 0;
    }
    return clear_corpus_files(dir, NULL) < 0 ? KOE_EXIT_USAGE : 0;
}

/* Provenance stored in corpus.h5 (bounded: the index keeps at most 64 KiB of it). */
static char *settings_text(const PrepareOptions *opt, const char *align, const char *words, char **inputs,
                           int n_inputs) {
    size_t cap = 60000, n = 0;
    char *s = koe_malloc(cap);
    n += (size_t)snprintf(s, cap,
                          "koe prepare: sample_rate=%d resampler=soxr-hq shard_bytes=%lld lang=%s "
                          "lang_from_dir=%d align=%s words=%s allow_pipes=%d inputs=",
                          KOE_SAMPLE_RATE, (long long)opt->shard_bytes, opt->lang ? opt->lang : "-", opt->lang_from_dir,
                          align ? align : "-", words ? words : "-", opt->allow_pipes);
    for (int i = 0; i < n_inputs && n < cap; i++) {
        size_t need = strlen(inputs[i]) + 2;
        if (n + need + 8 >= cap) {
            snprintf(s + n, cap - n, " ...");
            break;
        }
        n += (size_t)snprintf(s + n, cap - n, "%s%s", i ? " " : "", inputs[i]);
    }
    return s;
}

static void allreduce_i64_chunked(int64_t *v, int64_t n) {
    for (int64_t i = 0; i < n; i += 1 << 26) comm_allreduce_sum_i64(v + i, (int)(n - i < (1 << 26) ? n - i : 1 << 26));
}

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* Rank 0, after the index: the lines of --words whose utterance is in the corpus, as DIR/words.ctm
 * (written as .tmp and renamed). None matching is an error naming both sides' ids. */
static int write_words(const char *out, const char *words, KoeError *err) {
    CtmSeg *segs;
    int64_t n;
    if (ctm_read(words, "--words", &segs, &n, err) < 0) return -1;
    Corpus c;
    if (corpus_open(&c, out, err) < 0) return ctm_free(segs, n), -1;
    int64_t *utt = koe_malloc(sizeof *utt * (size_t)n), k = 0, missed = 0;
    const int64_t hits = ctm_match_corpus(segs, n, &c, utt);
    int rc = 0;
    if (hits == 0) {
        rc = koe_error_set(err, "--words %s: none of its utterance ids (the first: '%s') is in the corpus (ids like "
                           "'%s'): the first column must be the id koe prepare gives each input", words, segs[0].utt,
                           c.n_utts ? corpus_utt_id(&c, 0) : "");
    } else {
        for (int64_t i = 0; i < n; i++) {
            missed += utt[i] < 0 && (i == 0 || strcmp(segs[i].utt, segs[i - 1].utt));
            if (utt[i] >= 0) segs[k++] = segs[i];
            else free(segs[i].utt), free(segs[i].name);
        }
        n = k;
        char path[4400], tmp[4410];
        snprintf(path, sizeof path, "%s/words.ctm", out);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        int bad = !f || ctm_write(f, segs, n) < 0;
        if (f) bad |= fclose(f) != 0;
        if (bad || rename(tmp, path) != 0) rc = koe_error_set(err, "cannot write %s (disk full?): %s", path, strerror(errno));
        if (missed) koe_warn("--words %s: %lld utterances are not in the corpus; their lines are left out", words,
                             (long long)missed);
    }
    free(utt);
    corpus_close(&c);
    ctm_free(segs, n);
    return rc;
}

/* Rank 0, a prepare that fails after the output directory was made ready: a staged --force drops the
 * new corpus and keeps the old one; the message says which. */
static const char *prepare_failed(const char *staging, int staged) {
    if (!staged || comm_rank() != 0) return "";
    return staging_drop(staging) == 0 ? "; the corpus there before --force is unchanged" : "";
}

/* Rank 0, the shards written in out: the index and --words there, then a staged --force swapped in, and
 * the summary. tot: utterances, -, -, samples clipped, unaligned. Returns an exit code. */
static int publish_corpus(const PrepareCmdOptions *o, const PrepareOptions *opt, char **inputs, int n_inputs,
                          const char *out, int staged, char **names, int n_names, const int64_t *tot, int64_t n_rejected,
                          double hours, double secs) {
    KoeError err = {{0}};
    char *settings = settings_text(opt, o->align, o->words, inputs, n_inputs);
    if (corpus_write_index(out, names, n_names, settings, &err))
        koe_fatal(KOE_EXIT_INTERNAL, "prepare: %s%s", err.msg, prepare_failed(out, staged));
    free(settings);
    if (o->words && write_words(out, o->words, &err) < 0) {
        fprintf(stderr, "koe prepare: %s%s\n", err.msg, prepare_failed(out, staged));
        return KOE_EXIT_USAGE;
    }
    if (staged && staging_swap(out, o->out) < 0) return KOE_EXIT_INTERNAL;
    koe_log("prepare: wrote %lld utterances (%.3f h) in %d shards to %s%s; %lld inputs rejected (see "
            "%s/prepare-report.tsv); %lld samples clipped; %.1f s (%.2f h of audio per minute)",
            (long long)tot[0], hours, n_names, o->out, staged ? ", replacing the corpus there" : "",
            (long long)n_rejected, o->out, (long long)tot[3], secs, hours / (secs / 60.0));
    if (o->align && tot[4])
        koe_warn("%lld utterances have no line in --align %s (their frames are marked no-phone)", (long long)tot[4],
                 o->align);
    return KOE_EXIT_OK;
}

static int prepare_command(const void *opts, int n_args, char **args) {
    const PrepareCmdOptions *o = opts;
    const char *dir = o->out, *align = o->align;
    char **inputs = args;
    const int n_inputs = n_args, force = o->force;
    PrepareOptions opt = {.shard_bytes = (int64_t)(o->shard_mb * (1 << 20)), .lang = o->lang,
                          .lang_from_dir = o->lang_from_dir, .allow_pipes = o->allow_pipes};
    if (opt.lang && opt.lang_from_dir)
        return cli_error(&cmd_prepare, comm_rank() == 0, "--lang and --lang-from-dir exclude each other");
    int rank = comm_rank(), world = comm_size();
    double t0 = koe_now();

    int staged = 0;
    int64_t rc_dir = rank == 0 ? prepare_out_dir(dir, force, &staged) : 0;
    comm_bcast(&rc_dir, sizeof rc_dir, 0);
    if (rc_dir) {
        return (int)rc_dir;
    }
    comm_bcast(&staged, sizeof staged, 0);
    char staging[4300];
    staging_path(dir, staging, sizeof staging);
    const char *out = staged ? staging : dir; /* where the shards, the index and the report go */

    /* Collection is the same on every rank; rank 0 keeps (and prints) its rejections. */
    PreparePlan plan;
    PrepareRejects rej = {0};
    prepare_collect(&plan, inputs, n_inputs, &opt, &rej);
    if (rank == 0)
        for (int64_t i = 0; i < rej.n; i++) koe_warn("rejected %s", rej.v[i].reason);
    else
        prepare_rejects_free(&rej);
    if (align) {
        KoeError err = {{0}};
        int64_t bad = prepare_load_align(&plan, align, &err) ? 1 : 0;
        comm_allreduce_max_i64(&bad, 1);
        if (bad) {
            if (rank == 0) fprintf(stderr, "koe prepare: %s\n", err.msg[0] ? err.msg : "--align failed on another rank");
            prepare_plan_free(&plan);
            prepare_rejects_free(&rej);
            return KOE_EXIT_USAGE;
        }
    }

    /* Headers, read by all ranks in turn, then one plan everywhere. */
    prepare_probe(&plan, rank, world, &rej);
    allreduce_i64_chunked(plan.est_samples, plan.n_items);
    prepare_plan_shards(&plan, opt.shard_bytes);
    if (rank == 0) {
        int64_t est = 0;
        for (int64_t j = 0; j < plan.n_plan; j++) est += plan.est_samples[plan.plan[j]];
        koe_log("prepare: %lld candidates, %lld with usable headers (~%.2f h), %d shards of ~%.3g MB on %d rank%s",
                (long long)plan.n_orders, (long long)plan.n_plan, (double)est / KOE_SAMPLE_RATE / 3600.0, plan.n_shards,
                (double)opt.shard_bytes / (1 << 20), world, world > 1 ? "s" : "");
    }

    PrepareStats st;
    KoeError err = {{0}};
    cli_catch_stop_signals(on_signal); /* the writing stops between two inputs: no .tmp shard is left */
    const int wrc = prepare_write_shards(&plan, out, rank, world, &stop_requested, &st, &rej, &err);
    if (wrc == -2 && staged)
        koe_fatal(KOE_EXIT_PREEMPTED, "prepare: stopped by a signal: nothing replaced%s", prepare_failed(staging, staged));
    if (wrc == -2)
        koe_fatal(KOE_EXIT_PREEMPTED, "prepare: stopped by a signal: the complete shards of %s are kept, the one "
                  "being written was removed and there is no corpus.h5; run the command again", out);
    if (wrc) koe_fatal(KOE_EXIT_INTERNAL, "prepare: %s%s", err.msg, prepare_failed(staging, staged));

    /* Totals and rejections to rank 0. */
    allreduce_i64_chunked(st.shard_utts, plan.n_shards);
    int64_t tot[5] = {st.files_ok, st.files_rejected, st.samples, st.clipped, st.unaligned};
    comm_allreduce_sum_i64(tot, 5);
    int64_t bytes = 0, all_bytes = 0;
    char *mine = prepare_rejects_serialize(&rej, &bytes);
    char *all = comm_gather_bytes(mine, bytes, 0, &all_bytes);
    free(mine);

    int64_t rc = KOE_EXIT_OK;
    if (rank == 0) {
        PrepareRejects every = {0};
        prepare_rejects_deserialize(&every, all, all_bytes);
        char report[4400];
        snprintf(report, sizeof report, "%s/prepare-report.tsv", out);
        if (prepare_report_write(report, &every, &err))
            koe_fatal(KOE_EXIT_INTERNAL, "prepare: %s%s", err.msg, prepare_failed(staging, staged));
        char **names = koe_malloc((size_t)(plan.n_shards ? plan.n_shards : 1) * sizeof *names);
        int n_names = 0;
        for (int k = 0; k < plan.n_shards; k++) {
            if (!st.shard_utts[k]) continue;
            names[n_names] = koe_malloc(32);
            prepare_shard_name(k, names[n_names++], 32);
        }
        double hours = (double)tot[2] / KOE_SAMPLE_RATE / 3600.0, secs = koe_now() - t0;
        if (n_names == 0) {
            fprintf(stderr, "koe prepare: nothing written: all %lld inputs were rejected (%s)%s\n", (long long)every.n,
                    staged ? "listed above" : report, prepare_failed(staging, staged));
            rc = KOE_EXIT_USAGE;
        } else {
            rc = publish_corpus(o, &opt, inputs, n_inputs, out, staged, names, n_names, tot, every.n, hours, secs);
        }
        for (int i = 0; i < n_names; i++) free(names[i]);
        free(names);
        prepare_rejects_free(&every);
    }
    free(all);
    comm_bcast(&rc, sizeof rc, 0);
    prepare_stats_free(&st);
    prepare_plan_free(&plan);
    prepare_rejects_free(&rej);
    return (int)rc;
}

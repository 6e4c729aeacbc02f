/* analyze_layers.h — `koe analyze layers`: what each hidden state of an encoder carries (PWCCA
 * against acoustic and phonetic properties, PNMI of its k-means clusters) and how similar the
 * layers are (debiased CKA), after Pasad et al. and spec ../shared/specs/analyze_layers.md.
 * recipes/cmd_analyze.c parses the command line into AnalyzeLayersOpts (its flag table holds the
 * defaults, spec §8.1); analyze_layers.c runs it. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../analysis/cca.h"

enum {
    ALP_MEL = 1,
    ALP_PHONE = 2,
    ALP_PHONE_FRAME = 4,
    ALP_INTRA = 8,
    ALP_INTER = 16,
    ALP_WORD = 32,
    ALP_CKA = 64,
    ALP_PNMI = 128,
};

#define ALP_MAX_EPS CCA_MAX_EPS

typedef struct {
    double v[ALP_MAX_EPS];
    int n;
} AnalyzeEps;

typedef struct {
    const char *ckpt, *ckpt2, *corpus, *out, *dump;
    const char *words;       /* word CTM for word (NULL: the corpus's words.ctm) */
    int json;
    int conv;                /* --conv: mel also for the conv layers C1..Cn */
    unsigned props;          /* ALP_* */
    int64_t frames;          /* frame sample: whole utterances until >= frames (0: all) */
    int phone_cap, min_class;
    int word_cap, word_vocab; /* segments per word; the most frequent words kept */
    int base_layer, folds, trials;
    AnalyzeEps eps;          /* the eps grid for both views */
    double null_tol;
    int64_t sub_frames;      /* CKA and PNMI subsample */
    int pnmi_k, pnmi_iters;
    uint64_t seed;
    double max_mem_gb;       /* 0: 80% of MemTotal */
    const char *silence;     /* comma-separated alignment names that are not phones */
} AnalyzeLayersOpts;

/* Parse "mel,phone,..." into *props; -1 with the bad name in err on an unknown one. */
int analyze_layers_parse_props(const char *list, unsigned *props, char *bad, int bad_len);
/* Parse "1e-11,1e-10" into *eps (AnalyzeLayersOpts.eps); -1 with why on a bad list. */
int analyze_layers_parse_eps(const char *list, void *eps, char *why, size_t why_len); /* eps: AnalyzeEps */
/* Run the analysis (collective). Returns a koe exit code. */
int analyze_layers_run(const AnalyzeLayersOpts *o);
/* `koe analyze codebook` (recipes/analyze_codebook.c): the quantizer of a wav2vec 2.0 or BEST-RQ
 * checkpoint on a corpus; reads ckpt, corpus, out, dump and json of o. Collective; a koe exit code. */
int analyze_codebook_run(const AnalyzeLayersOpts *o);

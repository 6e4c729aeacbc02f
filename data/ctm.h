/* ctm.h — CTM time marks, `utt channel start dur name [confidence]` (seconds), the line format of
 * phone alignments (`koe prepare --align`, `koe synth`'s align.ctm) and word alignments (`koe synth`'s
 * words.ctm, a forced aligner's word CTM from Kaldi or the Montreal Forced Aligner, the corpus's
 * DIR/words.ctm that `koe prepare --words` writes). Blank lines and lines starting with ';' are
 * skipped; a confidence column is accepted and ignored. No MPI, no HDF5. */
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "../core/common.h"
#include "corpus.h"

typedef struct {
    char *utt, *name;
    double start, end; /* seconds, end >= start */
} CtmSeg;

/* Every line of path, sorted by (utt, start); flag names the option in messages ("--align", "--words").
 * Errors name path:line and the expected columns; an empty file is an error. */
int ctm_read(const char *path, const char *flag, CtmSeg **segs, int64_t *n, KoeError *err);
void ctm_free(CtmSeg *segs, int64_t n);
/* utt[i] = the corpus index of segs[i].utt, or -1 when the corpus has no such utterance. Returns the
 * number of segments matched. */
int64_t ctm_match_corpus(const CtmSeg *segs, int64_t n, const Corpus *c, int64_t *utt);
/* One line per segment, "utt 1 start dur name" with 3 decimals; -1 on a write error. */
int ctm_write(FILE *f, const CtmSeg *segs, int64_t n);

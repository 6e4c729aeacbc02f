/* synth.h — the demo-corpus synthesizer behind `koe synth`: sentences drawn from the word lists in
 * data/wordlists/LANG.txt, spoken by espeak-ng with a voice variant, rate, pitch and pitch range
 * drawn per utterance, resampled 22050 → 16000 Hz with libsoxr (HQ), and phone alignments taken
 * from espeak-ng's phoneme events (IPA names; pauses and leading silence are "sil").
 *
 * Every choice comes from koe_rng(seed, utterance key, 0, KOE_RNG_SYNTH), where the key names
 * (language, index within the language). espeak-ng keeps synthesis state (wave phase, pitch
 * flutter, noise) in process globals that carry over from one utterance to the next, and
 * espeak_Terminate + espeak_Initialize cannot reset it in-process; so each utterance is spoken in
 * a forked child of a process whose espeak-ng state is fixed (synth_init), which makes an
 * utterance's audio a function of (seed, language, index) only, whichever rank makes it and
 * whatever came before.
 *
 * No MPI here (the command splits utterances across ranks). The forked child calls nothing that
 * could reach MPI (no koe_fatal, no koe_malloc) and leaves with _exit. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../core/common.h"

#define SYNTH_MIN_WORDS 4  /* words per sentence, inclusive */
#define SYNTH_MAX_WORDS 14
#define SYNTH_MIN_WORDLIST 50 /* a word list shorter than this is refused */

typedef struct {
    const char *code;  /* ISO 639-1, also the directory name under DIR/wav */
    const char *voice; /* espeak-ng voice name; "+VARIANT" is appended per utterance */
} SynthLang;

extern const SynthLang synth_langs[];
extern const int synth_n_langs;

int synth_lang_find(const char *code); /* index into synth_langs, or -1 */
void synth_lang_list(char *buf, size_t n); /* "en, de, ..." for messages */

typedef struct {
    char *text;   /* the file's bytes, words point into it */
    char **words; /* (n) */
    int64_t n;
} SynthWordlist;

/* One word per line, UTF-8, '#' starts a comment line, blank lines skipped. Fewer than
 * SYNTH_MIN_WORDLIST words, a word with white space inside, or invalid UTF-8 is an error naming
 * the file and line. */
int synth_wordlist_load(SynthWordlist *wl, const char *path, KoeError *err);
void synth_wordlist_free(SynthWordlist *wl);

/* What to say and how: a pure function of (seed, lang, index, word list). */
typedef struct {
    int lang;        /* index into synth_langs */
    int64_t index;   /* utterance number within its language, from 0 */
    char variant[4]; /* espeak-ng voice variant, the speaker: "m1".."m7", "f1".."f4" */
    int rate;        /* words per minute, 130..220 */
    int pitch;       /* espeakPITCH, 30..70 */
    int range;       /* espeakRANGE, 20..80 */
    char *text;      /* the sentence, UTF-8 */
} SynthUttSpec;

void synth_utt_spec(SynthUttSpec *s, uint64_t seed, int lang, int64_t index, const SynthWordlist *wl);
void synth_utt_spec_free(SynthUttSpec *s);
/* "LANG/LANG-NNNNNN-VARIANT": the wav's path under DIR/wav without ".wav", which is the id that
 * `koe prepare DIR/wav` derives, and the id in align.ctm. */
void synth_utt_id(char *buf, size_t n, const SynthUttSpec *s);

typedef struct {
    int64_t start_ms, end_ms; /* on the audio's timeline, end_ms > start_ms */
    char phone[24];           /* IPA from espeak-ng, or "sil" */
} SynthPhone;

typedef struct {
    int64_t start_ms, end_ms; /* end_ms > start_ms; pauses are not part of a word */
    char word[64];            /* as written in the sentence, without its punctuation */
} SynthWord;

typedef struct {
    int16_t *audio; /* (n_samples) at 16 kHz */
    int64_t n_samples;
    int64_t n_clipped; /* samples clipped to int16 after resampling */
    SynthPhone *phones; /* (n_phones) contiguous, from 0 to the audio's end in ms */
    int64_t n_phones;
    SynthWord *words; /* (n_words) from espeak-ng's word events, in order */
    int64_t n_words;
} SynthUtt;

/* Initialise espeak-ng once per process (synchronous mode, IPA phoneme events) and select every
 * voice of synth_langs in table order, so that every process that calls it is in the same state.
 * ok[l] (synth_n_langs entries) says whether voice l could be selected. */
int synth_init(int *ok, KoeError *err);
/* Speak s in a forked child, resample to 16 kHz, build the phone and word segments. */
int synth_render(const SynthUttSpec *s, SynthUtt *out, KoeError *err);
void synth_utt_free(SynthUtt *u);

/* 16-bit PCM mono wav at 16 kHz, written as PATH.tmp and renamed. */
int synth_write_wav(const char *path, const SynthUtt *u, KoeError *err);
/* One line per phone: "ID 1 START DUR PHONE", seconds with 3 decimals. Returns -1 on a write error. */
int synth_write_ctm(FILE *f, const char *id, const SynthUtt *u);
/* The same for the words: "ID 1 START DUR WORD". */
int synth_write_word_ctm(FILE *f, const char *id, const SynthUtt *u);

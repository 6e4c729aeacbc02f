/* synth.c — sentences, espeak-ng, resampling and phone segments for `koe synth`. See synth.h.
 * Must not call MPI, and must not call koe_fatal/koe_malloc in the forked child (the fatal hook
 * would abort the MPI job from a process MPI does not know). */
#include "synth.h"

#include <errno.h>
#include <espeak-ng/speak_lib.h>
#include <inttypes.h>
#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/rng.h"

/* Append-only: a language's position is part of its utterances' RNG key. */
const SynthLang synth_langs[] = {
    {"en", "en"}, {"de", "de"}, {"fr", "fr"}, {"es", "es"}, {"it", "it"}, {"pt", "pt"}, {"nl", "nl"},
    {"pl", "pl"}, {"cs", "cs"}, {"fi", "fi"}, {"ru", "ru"}, {"tr", "tr"}, {"sw", "sw"}, {"hi", "hi"},
};
const int synth_n_langs = (int)(sizeof synth_langs / sizeof synth_langs[0]);

static const char *const variants[] = {"m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4"};
#define N_VARIANTS (int)(sizeof variants / sizeof variants[0])

static int espeak_rate; /* espeak-ng's output rate, set by synth_init */

int synth_lang_find(const char *code) {
    for (int l = 0; l < synth_n_langs; l++)
        if (!strcmp(synth_langs[l].code, code)) return l;
    return -1;
}

void synth_lang_list(char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (int l = 0; l < synth_n_langs && used < n; l++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", l ? "," : "", synth_langs[l].code);
}

/* ---- word lists ------------------------------------------------------------------------------ */

/* Length of the UTF-8 sequence at s (1..4), or 0 if it is not valid UTF-8. */
static int utf8_len(const unsigned char *s) {
    if (s[0] < 0x80) return 1;
    int n = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return n;
}

int synth_wordlist_load(SynthWordlist *wl, const char *path, KoeError *err) {
    memset(wl, 0, sizeof *wl);
    FILE *f = fopen(path, "rb");
    if (!f) return koe_error_set(err, "%s: cannot open word list: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *text = koe_malloc(cap);
    size_t got;
    while ((got = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) text = koe_realloc(text, cap *= 2);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        return koe_error_set(err, "%s: read error", path);
    }
    text[len] = 0;
    if (strlen(text) != len) {
        free(text);
        return koe_error_set(err, "%s: contains a NUL byte: a word list is UTF-8 text, one word per line", path);
    }
    int64_t cap_words = 512, n = 0, line_no = 0;
    char **words = koe_malloc((size_t)cap_words * sizeof *words);
    for (char *line = text; line && *line;) {
        line_no++;
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r') line[--ll] = 0;
        for (size_t i = 0; i < ll && line[0] != '#';) {
            int k = utf8_len((const unsigned char *)line + i);
            if (!k) {
                free(words);
                free(text);
                return koe_error_set(err, "%s:%" PRId64 ": not valid UTF-8 (byte %zu): save the word list as UTF-8",
                                     path, line_no, i + 1);
            }
            if (line[i] == ' ' || line[i] == '\t') {
                koe_error_set(err, "%s:%" PRId64 ": '%s' has white space inside: one word per line", path, line_no,
                              line);
                free(words);
                free(text);
                return -1;
            }
            i += (size_t)k;
        }
        if (ll && line[0] != '#') {
            if (n == cap_words) words = koe_realloc(words, (size_t)(cap_words *= 2) * sizeof *words);
            words[n++] = line;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (n < SYNTH_MIN_WORDLIST) {
        free(words);
        free(text);
        return koe_error_set(err, "%s: %" PRId64 " words, need at least %d (one word per line)", path, n,
                             SYNTH_MIN_WORDLIST);
    }
    wl->text = text;
    wl->words = words;
    wl->n = n;
    return 0;
}

void synth_wordlist_free(SynthWordlist *wl) {
    free(wl->words);
    free(wl->text);
    memset(wl, 0, sizeof *wl);
}

/* ---- what to say ----------------------------------------------------------------------------- */

void synth_utt_spec(SynthUttSpec *s, uint64_t seed, int lang, int64_t index, const SynthWordlist *wl) {
    KOE_ASSERT(lang >= 0 && lang < synth_n_langs && index >= 0 && index < ((int64_t)1 << 40) && wl->n > 0);
    /* The utterance's key: (language position + 1, index), so a language's utterances are the
     * same whichever other languages are requested. */
    KoeRng r = koe_rng(seed, ((uint64_t)(lang + 1) << 40) | (uint64_t)index, 0, KOE_RNG_SYNTH);
    memset(s, 0, sizeof *s);
    s->lang = lang;
    s->index = index;
    snprintf(s->variant, sizeof s->variant, "%s", variants[koe_rng_below(&r, N_VARIANTS)]);
    s->rate = 130 + (int)koe_rng_below(&r, 91);
    s->pitch = 30 + (int)koe_rng_below(&r, 41);
    s->range = 20 + (int)koe_rng_below(&r, 61);
    int n_words = SYNTH_MIN_WORDS + (int)koe_rng_below(&r, SYNTH_MAX_WORDS - SYNTH_MIN_WORDS + 1);
    /* A comma inside longer sentences gives a phrase break and its pause; some are questions. */
    int comma_after = -1;
    if (n_words >= 7 && koe_rng_uniform(&r) < 0.4) comma_after = 2 + (int)koe_rng_below(&r, (uint64_t)n_words - 4);
    const char *end = koe_rng_uniform(&r) < 0.15 ? "?" : ".";
    size_t cap = 256, len = 0;
    char *text = koe_malloc(cap);
    text[0] = 0;
    for (int i = 0; i < n_words; i++) {
        const char *w = wl->words[koe_rng_below(&r, (uint64_t)wl->n)];
        size_t need = len + strlen(w) + 4;
        if (need > cap) text = koe_realloc(text, cap = 2 * need);
        len += (size_t)sprintf(text + len, "%s%s%s", i ? " " : "", w, i == comma_after ? "," : "");
    }
    if (len + 2 > cap) text = koe_realloc(text, cap = len + 2);
    strcpy(text + len, end);
    s->text = text;
}

void synth_utt_spec_free(SynthUttSpec *s) {
    free(s->text);
    s->text = NULL;
}

void synth_utt_id(char *buf, size_t n, const SynthUttSpec *s) {
    const char *c = synth_langs[s->lang].code;
    snprintf(buf, n, "%s/%s-%06" PRId64 "-%s", c, c, s->index, s->variant);
}

/* ---- espeak-ng ------------------------------------------------------------------------------- */

typedef struct {
    int32_t ms;
    int32_t word_pos, word_len; /* a word event: characters [word_pos - 1, + word_len) of the text; else 0 */
    char name[12];              /* a phoneme event: espeak's phoneme name (<= 8 bytes) + NUL */
} RawEvent;

/* The child's collection buffers (plain malloc: the child must not reach koe_fatal). */
static int16_t *child_pcm;
static int64_t child_n, child_cap;
static RawEvent *child_ev;
static int64_t child_nev, child_capev;
static int child_oom;

static int synth_callback(short *wav, int n, espeak_EVENT *ev) {
    if (n > 0 && wav) {
        if (child_n + n > child_cap) {
            int64_t cap = 2 * (child_n + n);
            int16_t *p = realloc(child_pcm, (size_t)cap * sizeof *p);
            if (!p) return child_oom = 1;
            child_pcm = p;
            child_cap = cap;
        }
        memcpy(child_pcm + child_n, wav, (size_t)n * sizeof *wav);
        child_n += n;
    }
    for (; ev && ev->type != espeakEVENT_LIST_TERMINATED; ev++) {
        if (ev->type != espeakEVENT_PHONEME && ev->type != espeakEVENT_WORD) continue;
        if (child_nev == child_capev) {
            int64_t cap = child_capev ? 2 * child_capev : 256;
            RawEvent *p = realloc(child_ev, (size_t)cap * sizeof *p);
            if (!p) return child_oom = 1;
            child_ev = p;
            child_capev = cap;
        }
        RawEvent *e = &child_ev[child_nev++];
        memset(e, 0, sizeof *e);
        e->ms = ev->audio_position;
        if (ev->type == espeakEVENT_WORD) {
            e->word_pos = ev->text_position > 0 ? ev->text_position : 1;
            e->word_len = ev->length > 0 ? ev->length : 0;
        } else {
            /* up to its NUL, or all 8 bytes: espeak leaves the bytes after a shorter name's NUL unset */
            memcpy(e->name, ev->id.string, strnlen(ev->id.string, sizeof ev->id.string));
        }
    }
    return 0;
}

int synth_init(int *ok, KoeError *err) {
    int rate = espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, NULL,
                                 espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA |
                                     espeakINITIALIZE_DONT_EXIT);
    if (rate <= 0)
        return koe_error_set(err, "espeak-ng could not initialise (returned %d): install espeak-ng-data "
                                  "(apt-get install espeak-ng-data) or set ESPEAK_DATA_PATH", rate);
    espeak_rate = rate;
    espeak_SetSynthCallback(synth_callback);
    for (int l = 0; l < synth_n_langs; l++) ok[l] = espeak_SetVoiceByName(synth_langs[l].voice) == EE_OK;
    return 0;
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* What the child sends back: the header, then either status's message or the samples and events. */
typedef struct {
    int64_t status; /* 0 ok, else msg follows */
    int64_t n_samples, n_events;
} ChildHeader;

static void child_fail(int fd, const char *fmt, const char *a, int code) {
    ChildHeader h = {1, 0, 0};
    char msg[KOE_ERR_LEN];
    snprintf(msg, sizeof msg, fmt, a, code);
    write_all(fd, &h, sizeof h);
    write_all(fd, msg, sizeof msg);
    _exit(0);
}

static void __attribute__((noreturn)) child_speak(int fd, const SynthUttSpec *s) {
    char voice[64];
    snprintf(voice, sizeof voice, "%s+%s", synth_langs[s->lang].voice, s->variant);
    espeak_ERROR e = espeak_SetVoiceByName(voice);
    if (e != EE_OK) child_fail(fd, "espeak_SetVoiceByName(\"%s\") failed (espeak error %d)", voice, e);
    const struct {
        espeak_PARAMETER p;
        int v;
        const char *name;
    } params[] = {{espeakRATE, s->rate, "rate"}, {espeakPITCH, s->pitch, "pitch"}, {espeakRANGE, s->range, "range"}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        if ((e = espeak_SetParameter(params[i].p, params[i].v, 0)) != EE_OK)
            child_fail(fd, "espeak_SetParameter(%s) failed (espeak error %d)", params[i].name, e);
    e = espeak_Synth(s->text, strlen(s->text) + 1, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, NULL, NULL);
    if (e != EE_OK) child_fail(fd, "espeak_Synth(\"%s\") failed (espeak error %d)", s->text, e);
    if ((e = espeak_Synchronize()) != EE_OK)
        child_fail(fd, "espeak_Synchronize after \"%s\" failed (espeak error %d)", s->text, e);
    if (child_oom) child_fail(fd, "out of memory collecting the audio of \"%s\" (%d)", s->text, 0);
    ChildHeader h = {0, child_n, child_nev};
    if (write_all(fd, &h, sizeof h) || write_all(fd, child_pcm, (size_t)child_n * sizeof *child_pcm) ||
        write_all(fd, child_ev, (size_t)child_nev * sizeof *child_ev))
        _exit(3);
    _exit(0);
}

/* Run child_speak in a fork and collect what it sends into *buf (koe_malloc'd). */
static int speak_forked(const SynthUttSpec *s, char **buf, size_t *len, KoeError *err) {
    int fds[2];
    if (pipe(fds)) return koe_error_set(err, "pipe: %s", strerror(errno));
    fflush(NULL); /* the child leaves with _exit, but do not let it inherit half-written buffers */
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return koe_error_set(err, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        child_speak(fds[1], s);
    }
    close(fds[1]);
    size_t cap = 1 << 18, n = 0;
    char *b = koe_malloc(cap);
    int rerr = 0;
    for (;;) {
        if (n == cap) b = koe_realloc(b, cap *= 2);
        ssize_t r = read(fds[0], b + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rerr = errno;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            free(b);
            return koe_error_set(err, "waitpid: %s", strerror(errno));
        }
    }
    if (rerr || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        free(b);
        if (WIFSIGNALED(status))
            return koe_error_set(err, "espeak-ng child died of signal %d speaking \"%s\"", WTERMSIG(status), s->text);
        return koe_error_set(err, "espeak-ng child failed (exit %d%s%s) speaking \"%s\"",
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1, rerr ? ", read: " : "",
                             rerr ? strerror(rerr) : "", s->text);
    }
    *buf = b;
    *len = n;
    return 0;
}

/* ---- resampling and phone segments ----------------------------------------------------------- */

static int resample(const int16_t *in, int64_t n_in, SynthUtt *u, KoeError *err) {
    size_t olen = (size_t)((double)n_in * KOE_SAMPLE_RATE / espeak_rate) + 64, odone = 0;
    float *out = koe_malloc(olen * sizeof *out);
    soxr_io_spec_t io = soxr_io_spec(SOXR_INT16_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
    soxr_runtime_spec_t rt = soxr_runtime_spec(1);
    soxr_error_t e = soxr_oneshot(espeak_rate, KOE_SAMPLE_RATE, 1, in, (size_t)n_in, NULL, out, olen, &odone,
                                  &io, &q, &rt);
    if (e) {
        free(out);
        return koe_error_set(err, "soxr_oneshot %d -> %d Hz failed: %s", espeak_rate, KOE_SAMPLE_RATE, e);
    }
    u->audio = koe_malloc((odone ? odone : 1) * sizeof *u->audio);
    u->n_samples = (int64_t)odone;
    u->n_clipped = 0;
    for (size_t i = 0; i < odone; i++) {
        float x = out[i] * 32768.0f;
        if (x > 32767.0f || x < -32768.0f) u->n_clipped++;
        x = x > 32767.0f ? 32767.0f : x < -32768.0f ? -32768.0f : x;
        u->audio[i] = (int16_t)lrintf(x);
    }
    free(out);
    return 0;
}

static void push_phone(SynthUtt *u, int64_t *cap, int64_t start, int64_t end, const char *label) {
    if (end <= start) return;
    SynthPhone *last = u->n_phones ? &u->phones[u->n_phones - 1] : NULL;
    if (last && !strcmp(label, "sil") && !strcmp(last->phone, "sil")) {
        last->end_ms = end;
        return;
    }
    if (u->n_phones == *cap) u->phones = koe_realloc(u->phones, (size_t)(*cap = 2 * *cap + 16) * sizeof *u->phones);
    SynthPhone *p = &u->phones[u->n_phones++];
    memset(p, 0, sizeof *p); /* whole structs compare equal when the phones do */
    p->start_ms = start;
    p->end_ms = end;
    snprintf(p->phone, sizeof p->phone, "%s", label);
}

/* Phone i runs from its event to the next one (or the audio's end); events without a name are
 * espeak-ng's pauses. Times are ms on the 22050 Hz timeline, which is the same in seconds at 16 kHz. */
static void build_phones(SynthUtt *u, const RawEvent *ev, int64_t n_ev) {
    int64_t end_ms = (u->n_samples * 1000 + KOE_SAMPLE_RATE / 2) / KOE_SAMPLE_RATE, cap = 0;
    int64_t cur = 0;
    char label[sizeof ev->name] = "sil";
    for (int64_t i = 0; i < n_ev; i++) {
        if (ev[i].word_pos) continue; /* a word event: build_words */
        int64_t t = ev[i].ms < cur ? cur : ev[i].ms > end_ms ? end_ms : ev[i].ms;
        push_phone(u, &cap, cur, t, label);
        cur = t;
        if (ev[i].name[0]) {
            snprintf(label, sizeof label, "%s", ev[i].name);
            for (char *c = label; *c; c++)
                if ((unsigned char)*c <= ' ') *c = '_'; /* keep the CTM's columns intact */
        } else {
            strcpy(label, "sil");
        }
    }
    push_phone(u, &cap, cur, end_ms, label);
}

/* Characters [pos - 1, pos - 1 + len) of UTF-8 text as bytes [*b0, *b1). */
static void utf8_span(const char *text, int32_t pos, int32_t len, size_t *b0, size_t *b1) {
    size_t b = 0;
    int32_t c = 0;
    for (; text[b] && c < pos - 1; c++)
        for (b++; ((unsigned char)text[b] & 0xC0) == 0x80; b++) {}
    *b0 = b;
    for (c = 0; text[b] && c < len; c++)
        for (b++; ((unsigned char)text[b] & 0xC0) == 0x80; b++) {}
    *b1 = b;
}

/* Word i runs from its event to the next word's event (or the audio's end), cut at the first pause
 * ("sil" phone) that starts inside it and started after the pause it begins in, so a comma's pause,
 * the leading and the trailing silence are not part of the word. Its name is the text's characters the event points at, without the punctuation koe
 * synth adds (",", ".", "?"), white space as "_" (CTM columns). Words with nothing left are skipped. */
static void build_words(SynthUtt *u, const char *text, const RawEvent *ev, int64_t n_ev) {
    const int64_t end_ms = u->n_phones ? u->phones[u->n_phones - 1].end_ms : 0;
    int64_t cap = 0;
    for (int64_t i = 0; i < n_ev; i++) {
        if (!ev[i].word_pos) continue;
        int64_t t0 = ev[i].ms < 0 ? 0 : ev[i].ms, t1 = end_ms;
        for (int64_t j = i + 1; j < n_ev; j++)
            if (ev[j].word_pos) {
                t1 = ev[j].ms < t1 ? ev[j].ms : t1;
                break;
            }
        for (int64_t p = 0; p < u->n_phones; p++) {
            const SynthPhone *ph = &u->phones[p];
            if (strcmp(ph->phone, "sil")) continue;
            if (ph->start_ms <= t0 && ph->end_ms > t0) t0 = ph->end_ms; /* the leading silence */
            else if (ph->start_ms > t0 && ph->start_ms < t1) t1 = ph->start_ms;
        }
        size_t b0, b1;
        utf8_span(text, ev[i].word_pos, ev[i].word_len, &b0, &b1);
        while (b1 > b0 && strchr(",.?", text[b1 - 1])) b1--;
        if (t1 <= t0 || b1 <= b0 || b1 - b0 >= sizeof u->words->word) continue;
        if (u->n_words == cap) u->words = koe_realloc(u->words, (size_t)(cap = 2 * cap + 8) * sizeof *u->words);
        SynthWord *w = &u->words[u->n_words++];
        memset(w, 0, sizeof *w);
        w->start_ms = t0, w->end_ms = t1;
        memcpy(w->word, text + b0, b1 - b0);
        for (char *c = w->word; *c; c++)
            if ((unsigned char)*c <= ' ') *c = '_';
    }
}

int synth_render(const SynthUttSpec *s, SynthUtt *out, KoeError *err) {
    memset(out, 0, sizeof *out);
    KOE_ASSERT(espeak_rate > 0); /* synth_init first */
    char *buf = NULL;
    size_t len = 0;
    if (speak_forked(s, &buf, &len, err)) return -1;
    ChildHeader h;
    if (len < sizeof h) {
        free(buf);
        return koe_error_set(err, "espeak-ng child sent %zu bytes for \"%s\"", len, s->text);
    }
    memcpy(&h, buf, sizeof h);
    if (h.status) {
        koe_error_set(err, "%.*s", (int)(len - sizeof h < KOE_ERR_LEN ? len - sizeof h : KOE_ERR_LEN - 1),
                      buf + sizeof h);
        free(buf);
        return -1;
    }
    size_t want = sizeof h + (size_t)h.n_samples * sizeof(int16_t) + (size_t)h.n_events * sizeof(RawEvent);
    if (h.n_samples < 0 || h.n_events < 0 || len != want) {
        free(buf);
        return koe_error_set(err, "espeak-ng child sent %zu bytes for \"%s\", expected %zu", len, s->text, want);
    }
    if (h.n_samples == 0) {
        free(buf);
        return koe_error_set(err, "espeak-ng produced no audio for \"%s\"", s->text);
    }
    int16_t *pcm = koe_malloc((size_t)h.n_samples * sizeof *pcm);
    memcpy(pcm, buf + sizeof h, (size_t)h.n_samples * sizeof *pcm);
    RawEvent *ev = koe_malloc((size_t)(h.n_events ? h.n_events : 1) * sizeof *ev);
    memcpy(ev, buf + sizeof h + (size_t)h.n_samples * sizeof *pcm, (size_t)h.n_events * sizeof *ev);
    free(buf);
    int rc = resample(pcm, h.n_samples, out, err);
    if (rc == 0) build_phones(out, ev, h.n_events), build_words(out, s->text, ev, h.n_events);
    free(pcm);
    free(ev);
    return rc;
}

void synth_utt_free(SynthUtt *u) {
    free(u->audio);
    free(u->phones);
    free(u->words);
    memset(u, 0, sizeof *u);
}

/* ---- output ---------------------------------------------------------------------------------- */

int synth_write_wav(const char *path, const SynthUtt *u, KoeError *err) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return koe_error_set(err, "%s: path too long", path);
    SF_INFO info = {.samplerate = KOE_SAMPLE_RATE, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open(tmp, SFM_WRITE, &info);
    if (!f) return koe_error_set(err, "%s: cannot create: %s", tmp, sf_strerror(NULL));
    sf_count_t w = sf_write_short(f, u->audio, u->n_samples);
    if (w != u->n_samples) {
        koe_error_set(err, "%s: wrote %lld of %" PRId64 " samples: %s", tmp, (long long)w, u->n_samples,
                      sf_strerror(f));
        sf_close(f);
        unlink(tmp);
        return -1;
    }
    int rc = sf_close(f);
    if (rc) {
        unlink(tmp);
        return koe_error_set(err, "%s: closing failed: %s", tmp, sf_error_number(rc));
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return koe_error_set(err, "rename %s -> %s: %s", tmp, path, strerror(e));
    }
    return 0;
}

static int ctm_line(FILE *f, const char *id, int64_t start_ms, int64_t end_ms, const char *name) {
    const int64_t d = end_ms - start_ms;
    return fprintf(f, "%s 1 %" PRId64 ".%03d %" PRId64 ".%03d %s\n", id, start_ms / 1000, (int)(start_ms % 1000),
                   d / 1000, (int)(d % 1000), name) < 0 ? -1 : 0;
}

int synth_write_ctm(FILE *f, const char *id, const SynthUtt *u) {
    for (int64_t i = 0; i < u->n_phones; i++)
        if (ctm_line(f, id, u->phones[i].start_ms, u->phones[i].end_ms, u->phones[i].phone)) return -1;
    return 0;
}

int synth_write_word_ctm(FILE *f, const char *id, const SynthUtt *u) {
    for (int64_t i = 0; i < u->n_words; i++)
        if (ctm_line(f, id, u->words[i].start_ms, u->words[i].end_ms, u->words[i].word)) return -1;
    return 0;
}

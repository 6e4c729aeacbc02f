/* audio.c — decode, mix down, resample and quantise audio to 16 kHz mono int16. See audio.h.
 * Must not know about shards, manifests or ranks: one file (or buffer) in, one clip out. */
#include "audio.h"

#include <errno.h>
#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCK_FRAMES 8192 /* frames decoded per libsndfile call */
#define PIPE_MAX_BYTES ((size_t)4 << 30)

int64_t audio_float_to_int16(const float *x, int64_t n, int16_t *out) {
    int64_t clipped = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] * 32768.0f;
        if (v >= 32767.5f) {
            out[i] = 32767;
            clipped++;
        } else if (v < -32768.5f) {
            out[i] = -32768;
            clipped++;
        } else if (isnan(v)) { /* a float file can hold NaN: silence it and count it */
            out[i] = 0;
            clipped++;
        } else {
            out[i] = (int16_t)lrintf(v);
        }
    }
    return clipped;
}

void audio_free(Audio *a) {
    free(a->pcm);
    memset(a, 0, sizeof *a);
}

/* What libsndfile says only in its log. It clamps a data chunk that claims more bytes than the file
 * holds ("data : 32000 (should be 15978)"): a truncated file or an absurd header. And it sizes a
 * WAV sample from the bit width alone, so a header declaring 7 bits over 2-byte blocks would decode
 * as twice the samples: the block alignment must agree with channels x bytes per sample. */
static int check_declared_length(SNDFILE *sf, const SF_INFO *si, const char *name, KoeError *err) {
    char log[8192];
    sf_command(sf, SFC_GET_LOG_INFO, log, sizeof log);
    int align = 0, bits = 0;
    for (char *line = log; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        long long said, should;
        if (sscanf(line, " Block Align : %d", &align) == 1 || sscanf(line, " Bit Width : %d", &bits) == 1) continue;
        if ((sscanf(line, "data : %lld (should be %lld)", &said, &should) == 2 ||
             sscanf(line, "SSND : %lld (should be %lld)", &said, &should) == 2) &&
            said > should)
            return koe_error_set(err,
                                 "%s: truncated or absurd header: it declares %lld bytes of audio but "
                                 "the file holds %lld; re-export or re-download the file",
                                 name, said, should);
    }
    if (align > 0 && bits > 0 && align != si->channels * ((bits + 7) / 8))
        return koe_error_set(err, "%s: absurd header: %d bits per sample in blocks of %d bytes for %d channel(s); "
                             "re-export the file", name, bits, align, si->channels);
    return 0;
}

static int check_info(const SF_INFO *si, const char *name, AudioInfo *info, KoeError *err) {
    if (si->channels < 1 || si->channels > AUDIO_MAX_CHANNELS)
        return koe_error_set(err, "%s: absurd header: %d channels (koe accepts 1..%d)", name, si->channels,
                             AUDIO_MAX_CHANNELS);
    if (si->samplerate < AUDIO_MIN_SOURCE_RATE || si->samplerate > AUDIO_MAX_SOURCE_RATE)
        return koe_error_set(err, "%s: absurd header: sample rate %d Hz (koe accepts %d..%d Hz)", name,
                             si->samplerate, AUDIO_MIN_SOURCE_RATE, AUDIO_MAX_SOURCE_RATE);
    if (si->frames < 0)
        return koe_error_set(err, "%s: absurd header: %lld frames", name, (long long)si->frames);
    if (si->frames == 0) return koe_error_set(err, "%s: no audio samples (0 frames)", name);
    double seconds = (double)si->frames / si->samplerate;
    if (seconds > AUDIO_MAX_SECONDS)
        return koe_error_set(err,
                             "%s: %.1f hours long (header: %lld frames at %d Hz), over the %.0f-hour limit "
                             "per file: split it, or the header is wrong",
                             name, seconds / 3600.0, (long long)si->frames, si->samplerate,
                             AUDIO_MAX_SECONDS / 3600.0);
    /* Bounded by the checks above: frames <= 4 h * 768 kHz, so neither product overflows. */
    info->frames = si->frames;
    info->rate = si->samplerate;
    info->channels = si->channels;
    info->format = si->format;
    info->est_samples = (si->frames * KOE_SAMPLE_RATE + si->samplerate / 2) / si->samplerate;
    return 0;
}

/* A path must be a readable, non-empty regular file before libsndfile sees it, so the reason
 * given is the real one (dangling link, directory, permissions) rather than "format not recognised". */
int audio_stat(const char *path, struct stat *st, KoeError *err) {
    if (stat(path, st) == 0) return 0;
    const int e = errno;
    struct stat lst;
    if (e == ELOOP) return koe_error_set(err, "%s: symbolic link loop (%s)", path, strerror(e));
    if (e == ENOENT && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode))
        return koe_error_set(err, "%s: dangling symbolic link (its target does not exist)", path);
    return koe_error_set(err, "%s: cannot read: %s", path, strerror(e));
}

static int check_path(const char *path, KoeError *err) {
    struct stat st;
    if (audio_stat(path, &st, err)) return -1;
    if (S_ISDIR(st.st_mode)) return koe_error_set(err, "%s: is a directory, not an audio file", path);
    if (!S_ISREG(st.st_mode)) return koe_error_set(err, "%s: not a regular file", path);
    if (access(path, R_OK) != 0) return koe_error_set(err, "%s: cannot read: %s", path, strerror(errno));
    if (st.st_size == 0) return koe_error_set(err, "%s: empty file (0 bytes)", path);
    return 0;
}

static SNDFILE *open_file(const char *path, SF_INFO *si, KoeError *err) {
    if (check_path(path, err)) return NULL;
    memset(si, 0, sizeof *si);
    SNDFILE *sf = sf_open(path, SFM_READ, si);
    if (!sf)
        koe_error_set(err, "%s: not audio that libsndfile can read (%s)", path, sf_strerror(NULL));
    return sf;
}

int audio_probe_file(const char *path, AudioInfo *info, KoeError *err) {
    SF_INFO si;
    SNDFILE *sf = open_file(path, &si, err);
    if (!sf) return -1;
    int rc = check_info(&si, path, info, err);
    if (rc == 0) rc = check_declared_length(sf, &si, path, err);
    sf_close(sf);
    return rc;
}

/* Growing int16 output. */
typedef struct {
    int16_t *pcm;
    int64_t n, cap, clipped;
} PcmOut;

static void pcm_append(PcmOut *o, const float *x, int64_t n) {
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) + (o->n + n) / 4 + BLOCK_FRAMES;
        o->pcm = koe_realloc(o->pcm, (size_t)o->cap * sizeof(int16_t));
    }
    o->clipped += audio_float_to_int16(x, n, o->pcm + o->n);
    o->n += n;
}

/* Bit-exact path: 16 kHz mono 16-bit PCM, read as short. */
static int64_t decode_short(SNDFILE *sf, PcmOut *o, int64_t frames) {
    o->cap = frames;
    o->pcm = koe_malloc((size_t)frames * sizeof(int16_t));
    while (o->n < frames) {
        sf_count_t want = frames - o->n < BLOCK_FRAMES ? frames - o->n : BLOCK_FRAMES;
        sf_count_t got = sf_readf_short(sf, o->pcm + o->n, want);
        if (got <= 0) break;
        o->n += got;
    }
    return o->n;
}

/* Float path: mix to mono, resample when needed, quantise. Returns source frames read or -1. */
static int64_t decode_float(SNDFILE *sf, const AudioInfo *info, const char *name, PcmOut *o, KoeError *err) {
    int ch = info->channels;
    float *buf = koe_malloc((size_t)BLOCK_FRAMES * (size_t)ch * sizeof(float));
    float *mono = koe_malloc(BLOCK_FRAMES * sizeof(float));
    size_t out_cap = 4 * BLOCK_FRAMES;
    float *out = koe_malloc(out_cap * sizeof(float));
    soxr_t rs = NULL;
    int64_t read = 0;
    if (info->rate != KOE_SAMPLE_RATE) {
        soxr_error_t e = NULL;
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        rs = soxr_create(info->rate, KOE_SAMPLE_RATE, 1, &e, &io, &q, NULL);
        if (!rs || e) {
            koe_error_set(err, "%s: libsoxr cannot resample %d Hz to %d Hz: %s", name, info->rate, KOE_SAMPLE_RATE,
                          e ? e : "unknown error");
            read = -1;
            goto done;
        }
    }
    o->cap = info->est_samples + BLOCK_FRAMES;
    o->pcm = koe_malloc((size_t)o->cap * sizeof(int16_t));
    for (;;) {
        sf_count_t got = sf_readf_float(sf, buf, BLOCK_FRAMES);
        if (got <= 0) break;
        read += got;
        const float *m = buf;
        if (ch > 1) {
            for (sf_count_t i = 0; i < got; i++) {
                float s = 0.0f;
                for (int c = 0; c < ch; c++) s += buf[i * ch + c];
                mono[i] = s / (float)ch;
            }
            m = mono;
        }
        if (!rs) {
            pcm_append(o, m, got);
            continue;
        }
        for (size_t off = 0; off < (size_t)got;) {
            size_t idone = 0, odone = 0;
            soxr_error_t e = soxr_process(rs, m + off, (size_t)got - off, &idone, out, out_cap, &odone);
            if (e || (idone == 0 && odone == 0)) {
                koe_error_set(err, "%s: libsoxr failed: %s", name, e ? e : "no progress");
                read = -1;
                goto done;
            }
            pcm_append(o, out, (int64_t)odone);
            off += idone;
        }
    }
    if (rs) { /* flush the resampler's delay line */
        for (;;) {
            size_t odone = 0;
            soxr_error_t e = soxr_process(rs, NULL, 0, NULL, out, out_cap, &odone);
            if (e) {
                koe_error_set(err, "%s: libsoxr failed while flushing: %s", name, e);
                read = -1;
                goto done;
            }
            if (odone == 0) break;
            pcm_append(o, out, (int64_t)odone);
        }
    }
done:
    if (rs) soxr_delete(rs);
    free(buf);
    free(mono);
    free(out);
    return read;
}

/* check_length: compare the header's declared data size with the file (not for streamed data). */
static int decode_sndfile(SNDFILE *sf, const SF_INFO *si, const char *name, int check_length, Audio *a,
                          KoeError *err) {
    memset(a, 0, sizeof *a);
    AudioInfo info;
    if (check_info(si, name, &info, err)) return -1;
    if (check_length && check_declared_length(sf, si, name, err)) return -1;
    PcmOut o = {0};
    int64_t read;
    if (info.rate == KOE_SAMPLE_RATE && info.channels == 1 && (info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16)
        read = decode_short(sf, &o, info.frames);
    else
        read = decode_float(sf, &info, name, &o, err);
    if (read < 0) {
        free(o.pcm);
        return -1;
    }
    if (read < info.frames) {
        free(o.pcm);
        return koe_error_set(err, "%s: truncated: the header says %lld frames but only %lld could be decoded (%s)",
                             name, (long long)info.frames, (long long)read, sf_strerror(sf));
    }
    if (o.n == 0) {
        free(o.pcm);
        return koe_error_set(err, "%s: no audio samples after resampling to 16 kHz", name);
    }
    a->pcm = o.pcm;
    a->n = o.n;
    a->clipped = o.clipped;
    a->src = info;
    return 0;
}

int audio_decode_file(const char *path, Audio *a, KoeError *err) {
    memset(a, 0, sizeof *a);
    SF_INFO si;
    SNDFILE *sf = open_file(path, &si, err);
    if (!sf) return -1;
    int rc = decode_sndfile(sf, &si, path, 1, a, err);
    sf_close(sf);
    return rc;
}

/* ---- in-memory files (libsndfile virtual I/O) ------------------------------------------------ */

typedef struct {
    const unsigned char *data;
    sf_count_t size, pos;
} MemFile;

static sf_count_t mem_length(void *user) { return ((MemFile *)user)->size; }
static sf_count_t mem_tell(void *user) { return ((MemFile *)user)->pos; }
static sf_count_t mem_seek(sf_count_t offset, int whence, void *user) {
    MemFile *m = user;
    sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->size;
    sf_count_t p = base + offset;
    if (p < 0 || p > m->size) return -1;
    m->pos = p;
    return p;
}
static sf_count_t mem_read(void *ptr, sf_count_t count, void *user) {
    MemFile *m = user;
    sf_count_t n = m->size - m->pos < count ? m->size - m->pos : count;
    if (n <= 0) return 0;
    memcpy(ptr, m->data + m->pos, (size_t)n);
    m->pos += n;
    return n;
}
static sf_count_t mem_write(const void *ptr, sf_count_t count, void *user) {
    (void)ptr, (void)count, (void)user;
    return 0; /* read-only */
}

int audio_decode_memory(const void *data, size_t size, const char *name, Audio *a, KoeError *err) {
    memset(a, 0, sizeof *a);
    if (size == 0) return koe_error_set(err, "%s: empty (0 bytes)", name);
    MemFile m = {data, (sf_count_t)size, 0};
    SF_VIRTUAL_IO io = {mem_length, mem_seek, mem_read, mem_write, mem_tell};
    SF_INFO si;
    memset(&si, 0, sizeof si);
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, &si, &m);
    if (!sf) return koe_error_set(err, "%s: not audio that libsndfile can read (%s)", name, sf_strerror(NULL));
    int rc = decode_sndfile(sf, &si, name, 0, a, err);
    sf_close(sf);
    return rc;
}

int audio_decode_command(const char *cmd, Audio *a, KoeError *err) {
    memset(a, 0, sizeof *a);
    fflush(NULL); /* the child must not inherit unflushed output */
    FILE *p = popen(cmd, "r");
    if (!p) return koe_error_set(err, "`%s |`: cannot start the command: %s", cmd, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = koe_malloc(cap);
    int too_big = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= PIPE_MAX_BYTES) {
                too_big = 1;
                break;
            }
            cap *= 2;
            buf = koe_realloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n, p);
        if (got == 0) break;
        n += got;
    }
    if (too_big) { /* drain so the command is not killed by SIGPIPE mid-write, then refuse */
        while (fread(buf, 1, cap, p) > 0) {
        }
    }
    int status = pclose(p);
    int rc;
    if (status == -1)
        rc = koe_error_set(err, "`%s |`: cannot wait for the command: %s", cmd, strerror(errno));
    else if (WIFSIGNALED(status))
        rc = koe_error_set(err, "`%s |`: the command was killed by signal %d", cmd, WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        rc = koe_error_set(err, "`%s |`: the command failed with exit status %d", cmd, WEXITSTATUS(status));
    else if (too_big)
        rc = koe_error_set(err, "`%s |`: the command wrote more than %zu GiB; split the recording", cmd,
                           PIPE_MAX_BYTES >> 30);
    else
        rc = audio_decode_memory(buf, n, cmd, a, err);
    free(buf);
    return rc;
}

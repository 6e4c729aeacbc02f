/* audio.h — decode any audio libsndfile reads into 16 kHz mono int16, the corpus's one format.
 * Channels are averaged, other rates resampled with libsoxr (SOXR_HQ), float converted to int16
 * with rounding and the clipped samples counted. A 16 kHz mono 16-bit source is read as short
 * and copied, so it round-trips bit-exactly. Bad input (not audio, empty, truncated, absurd header,
 * more than AUDIO_MAX_SECONDS) is refused with -1 and a reason in KoeError; nothing here is fatal.
 * No MPI, no HDF5. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "../core/common.h"

#define AUDIO_MAX_SECONDS (4.0 * 3600.0) /* longer files are refused: split them first */
#define AUDIO_MIN_SOURCE_RATE 1000
#define AUDIO_MAX_SOURCE_RATE 768000
#define AUDIO_MAX_CHANNELS 64

/* What a file's header says, checked for sanity. */
typedef struct {
    int64_t frames;      /* source frames */
    int rate, channels;
    int format;          /* libsndfile SF_FORMAT_* (container | subtype) */
    int64_t est_samples; /* frames at 16 kHz, rounded: what decoding should give */
} AudioInfo;

typedef struct {
    int16_t *pcm;    /* (n) 16 kHz mono */
    int64_t n;
    int64_t clipped; /* samples that fell outside int16 and were saturated */
    AudioInfo src;
} Audio;

/* Header only (cheap): used to plan shards before decoding. */
int audio_probe_file(const char *path, AudioInfo *info, KoeError *err);
/* stat(path), or -1 with the reason: a dangling symbolic link, a link loop, or stat's own error. */
int audio_stat(const char *path, struct stat *st, KoeError *err);
int audio_decode_file(const char *path, Audio *a, KoeError *err);
/* Decode an in-memory file (e.g. a pipe's output). name is used in messages only. Streaming
 * writers put placeholder sizes in headers, so no header-vs-length check is made here. */
int audio_decode_memory(const void *data, size_t size, const char *name, Audio *a, KoeError *err);
/* Run a shell command (Kaldi wav.scp `cmd |`) and decode its standard output. */
int audio_decode_command(const char *cmd, Audio *a, KoeError *err);
void audio_free(Audio *a);

/* float in [-1, 1] to int16 with rounding to nearest; returns the number of saturated samples. */
int64_t audio_float_to_int16(const float *x, int64_t n, int16_t *out);

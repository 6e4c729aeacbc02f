/* test_audio.c — data/audio.c: bit-exact 16 kHz int16 round trip, resampling from 8/44.1/48 kHz
 * float and 24-bit sources (length, frequency and phase of a sine kept), stereo mixdown, clipping,
 * memory and pipe decoding, and every class of bad input refused with its reason. Test files are
 * written with libsndfile into a fresh temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/rng.h"
#include "../../data/audio.h"

static char tmpdir[256];

static const char *tmp_path(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* Write frames×channels interleaved doubles in [-1, 1] with libsndfile. */
static void write_audio(const char *path, int format, int rate, int channels, const double *x, int64_t frames) {
    SF_INFO si = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &si);
    if (!sf) fail_msg("cannot write %s: %s", path, sf_strerror(NULL));
    assert_int_equal(sf_writef_double(sf, x, frames), frames);
    sf_close(sf);
}

static void write_short(const char *path, int format, int rate, int channels, const int16_t *x, int64_t frames) {
    SF_INFO si = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &si);
    if (!sf) fail_msg("cannot write %s: %s", path, sf_strerror(NULL));
    assert_int_equal(sf_writef_short(sf, x, frames), frames);
    sf_close(sf);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static int16_t *random_pcm(int64_t n, uint64_t seed) {
    KoeRng r = koe_rng(seed, 0, 0, KOE_RNG_SYNTH);
    int16_t *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = (int16_t)(int64_t)koe_rng_below(&r, 65536) - 32768;
    return x;
}

static void test_roundtrip_16k_int16(void **state) {
    (void)state;
    const int64_t n = 40000;
    int16_t *x = random_pcm(n, 7);
    x[0] = -32768, x[1] = 32767, x[2] = 0, x[3] = -1; /* the extremes too */
    const char *names[2] = {"rt.wav", "rt.flac"};
    const int formats[2] = {SF_FORMAT_WAV | SF_FORMAT_PCM_16, SF_FORMAT_FLAC | SF_FORMAT_PCM_16};
    for (int k = 0; k < 2; k++) {
        const char *p = tmp_path(names[k]);
        write_short(p, formats[k], 16000, 1, x, n);
        Audio a;
        KoeError err = {{0}};
        assert_int_equal(audio_decode_file(p, &a, &err), 0);
        assert_int_equal(a.n, n);
        assert_int_equal(a.clipped, 0);
        assert_memory_equal(a.pcm, x, (size_t)n * sizeof *x);
        audio_free(&a);
    }
    free(x);
}

/* Resampled sine: exact output length, and sample by sample equal to the ideal 16 kHz sine away
 * from the edges (so frequency and phase are kept: no delay from the resampler). */
static void check_sine_resampled(int rate, int format, const char *name) {
    const double secs = 1.5, f0 = 440.0, amp = 0.5;
    int64_t frames = (int64_t)(secs * rate);
    double *x = malloc((size_t)frames * sizeof *x);
    for (int64_t i = 0; i < frames; i++) x[i] = amp * sin(2 * M_PI * f0 * (double)i / rate);
    const char *p = tmp_path(name);
    write_audio(p, format, rate, 1, x, frames);
    free(x);

    AudioInfo info;
    KoeError err = {{0}};
    assert_int_equal(audio_probe_file(p, &info, &err), 0);
    assert_int_equal(info.rate, rate);
    assert_int_equal(info.est_samples, (int64_t)(secs * 16000));

    Audio a;
    if (audio_decode_file(p, &a, &err)) fail_msg("%s", err.msg);
    assert_int_equal(a.n, (int64_t)(secs * 16000));
    assert_int_equal(a.clipped, 0);
    double worst = 0.0;
    for (int64_t i = 1600; i < a.n - 1600; i++) {
        double want = amp * 32768.0 * sin(2 * M_PI * f0 * (double)i / 16000.0);
        double d = fabs((double)a.pcm[i] - want);
        if (d > worst) worst = d;
    }
    /* SOXR_HQ is 20-bit quality: what is left is int16 rounding (0.5 LSB) and a little ripple
     * (measured 0.51). One sample of delay would be ~2800 LSB off. */
    if (worst > 1.0) fail_msg("%s (%d Hz): worst deviation from the ideal sine %.2f LSB", name, rate, worst);
    audio_free(&a);
}

static void test_resample_rates(void **state) {
    (void)state;
    check_sine_resampled(44100, SF_FORMAT_WAV | SF_FORMAT_FLOAT, "s44f.wav");
    check_sine_resampled(48000, SF_FORMAT_WAV | SF_FORMAT_PCM_24, "s48i24.wav");
    check_sine_resampled(8000, SF_FORMAT_WAV | SF_FORMAT_FLOAT, "s8f.wav");
    check_sine_resampled(22050, SF_FORMAT_FLAC | SF_FORMAT_PCM_24, "s22.flac");
    check_sine_resampled(48000, SF_FORMAT_WAV | SF_FORMAT_PCM_32, "s48i32.wav");
}

static void test_stereo_mixdown(void **state) {
    (void)state;
    const int64_t n = 20000;
    int16_t *l = random_pcm(n, 11), *r = random_pcm(n, 12);
    int16_t *x = malloc((size_t)n * 2 * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[2 * i] = l[i], x[2 * i + 1] = r[i];
    const char *p = tmp_path("stereo.wav");
    write_short(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 2, x, n);
    Audio a;
    KoeError err = {{0}};
    assert_int_equal(audio_decode_file(p, &a, &err), 0);
    assert_int_equal(a.n, n);
    assert_int_equal(a.src.channels, 2);
    for (int64_t i = 0; i < n; i++) {
        long want = lrint(((double)l[i] + (double)r[i]) / 2.0);
        if (a.pcm[i] != want) fail_msg("sample %lld: %d, want %ld", (long long)i, a.pcm[i], want);
    }
    audio_free(&a);
    free(l), free(r), free(x);
}

static void test_float_to_int16_clipping(void **state) {
    (void)state;
    const float x[8] = {0.0f, 0.5f, -1.0f, 1.0f, 1.5f, -1.2f, NAN, 32767.0f / 32768.0f};
    const int16_t want[8] = {0, 16384, -32768, 32767, 32767, -32768, 0, 32767};
    int16_t out[8];
    assert_int_equal(audio_float_to_int16(x, 8, out), 4); /* 1.0, 1.5, -1.2, NaN */
    assert_memory_equal(out, want, sizeof want);

    /* A float file with overs: decoded saturated and counted. */
    double y[100];
    for (int i = 0; i < 100; i++) y[i] = (i % 10 == 0) ? 1.7 : 0.25;
    const char *p = tmp_path("overs.wav");
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, y, 100);
    Audio a;
    KoeError err = {{0}};
    assert_int_equal(audio_decode_file(p, &a, &err), 0);
    assert_int_equal(a.clipped, 10);
    assert_int_equal(a.pcm[0], 32767);
    assert_int_equal(a.pcm[1], 8192);
    audio_free(&a);
}

static void test_memory_and_pipe(void **state) {
    (void)state;
    const int64_t n = 12345;
    int16_t *x = random_pcm(n, 21);
    const char *p = tmp_path("mem.wav");
    write_short(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, x, n);
    size_t nb;
    unsigned char *bytes = read_bytes(p, &nb);
    Audio a;
    KoeError err = {{0}};
    assert_int_equal(audio_decode_memory(bytes, nb, "mem.wav", &a, &err), 0);
    assert_int_equal(a.n, n);
    assert_memory_equal(a.pcm, x, (size_t)n * sizeof *x);
    audio_free(&a);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "cat '%s'", p);
    assert_int_equal(audio_decode_command(cmd, &a, &err), 0);
    assert_int_equal(a.n, n);
    assert_memory_equal(a.pcm, x, (size_t)n * sizeof *x);
    audio_free(&a);

    assert_int_equal(audio_decode_command("cat /nonexistent/koe-x.wav 2>/dev/null", &a, &err), -1);
    assert_non_null(strstr(err.msg, "exit status"));
    assert_int_equal(audio_decode_command("true", &a, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));
    assert_int_equal(audio_decode_command("echo hello", &a, &err), -1);
    assert_non_null(strstr(err.msg, "not audio"));
    free(bytes);
    free(x);
}

/* Each bad input class: -1 and a reason that names the file and says what is wrong. */
static void expect_bad(const char *path, const char *reason) {
    Audio a;
    AudioInfo info;
    KoeError err = {{0}};
    if (audio_decode_file(path, &a, &err) != -1) fail_msg("%s was accepted, want '%s'", path, reason);
    if (!strstr(err.msg, reason)) fail_msg("%s: reason '%s', want '%s'", path, err.msg, reason);
    if (!strstr(err.msg, path)) fail_msg("reason '%s' does not name %s", err.msg, path);
    assert_null(a.pcm);
    memset(&err, 0, sizeof err);
    if (audio_probe_file(path, &info, &err) == -1 && !strstr(err.msg, reason))
        fail_msg("probe %s: reason '%s', want '%s'", path, err.msg, reason);
}

static void test_bad_inputs(void **state) {
    (void)state;
    const int64_t n = 16000;
    int16_t *x = random_pcm(n, 31);
    char good[512], goodf[512]; /* tmp_path's buffers are reused */
    snprintf(good, sizeof good, "%s", tmp_path("good.wav"));
    snprintf(goodf, sizeof goodf, "%s", tmp_path("good.flac"));
    write_short(good, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, x, n);
    write_short(goodf, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, x, n);
    size_t nb, nf;
    unsigned char *wav = read_bytes(good, &nb), *flac = read_bytes(goodf, &nf);

    expect_bad(tmp_path("missing.wav"), "No such file");
    assert_int_equal(symlink(tmp_path("nowhere.wav"), tmp_path("dangling.wav")), 0);
    expect_bad(tmp_path("dangling.wav"), "dangling symbolic link");
    assert_int_equal(symlink("loop2.wav", tmp_path("loop1.wav")), 0);
    assert_int_equal(symlink("loop1.wav", tmp_path("loop2.wav")), 0);
    expect_bad(tmp_path("loop1.wav"), "symbolic link loop");
    assert_int_equal(mkdir(tmp_path("dir.wav"), 0755), 0);
    expect_bad(tmp_path("dir.wav"), "is a directory");
    write_bytes(tmp_path("empty.wav"), "", 0);
    expect_bad(tmp_path("empty.wav"), "empty file");
    const char *text = "this is a text file, not FLAC\n";
    write_bytes(tmp_path("text.flac"), text, strlen(text));
    expect_bad(tmp_path("text.flac"), "not audio");
    KoeRng r = koe_rng(5, 0, 0, KOE_RNG_SYNTH);
    unsigned char noise[4096];
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (unsigned char)koe_rng_below(&r, 256);
    write_bytes(tmp_path("noise.wav"), noise, sizeof noise);
    expect_bad(tmp_path("noise.wav"), "not audio");
    write_short(tmp_path("zero.wav"), SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, x, 0);
    expect_bad(tmp_path("zero.wav"), "0 frames");
    write_bytes(tmp_path("trunc.wav"), wav, nb / 2);
    expect_bad(tmp_path("trunc.wav"), "truncated");
    write_bytes(tmp_path("trunc.flac"), flac, nf / 2);
    expect_bad(tmp_path("trunc.flac"), "truncated");

    /* Absurd headers, patched into the good WAV (canonical 44-byte header: channels at 22,
     * rate at 24, data size at 40). */
    unsigned char *h = malloc(nb);
    memcpy(h, wav, nb);
    h[40] = 0xF0, h[41] = 0xFF, h[42] = 0xFF, h[43] = 0xFF; /* data size ~4 GiB */
    write_bytes(tmp_path("hugedata.wav"), h, nb);
    expect_bad(tmp_path("hugedata.wav"), "absurd header");
    memcpy(h, wav, nb);
    h[24] = 1, h[25] = 0, h[26] = 0, h[27] = 0; /* 1 Hz */
    write_bytes(tmp_path("rate1.wav"), h, nb);
    expect_bad(tmp_path("rate1.wav"), "absurd header: sample rate 1 Hz");
    memcpy(h, wav, nb);
    h[34] = 7; /* 7 bits per sample in 2-byte blocks: libsndfile would read 1 byte per sample */
    write_bytes(tmp_path("bits7.wav"), h, nb);
    expect_bad(tmp_path("bits7.wav"), "7 bits per sample");
    free(h);

    /* A file whose header claims more than 4 hours is refused from the header alone. */
    int64_t long_frames = (int64_t)(4.5 * 3600 * 1000);
    int16_t *zeros = calloc((size_t)long_frames, sizeof *zeros);
    write_short(tmp_path("long.wav"), SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1000, 1, zeros, long_frames);
    free(zeros);
    expect_bad(tmp_path("long.wav"), "hour limit");

    /* The good files still decode. */
    Audio a;
    KoeError err = {{0}};
    assert_int_equal(audio_decode_file(good, &a, &err), 0);
    audio_free(&a);
    assert_int_equal(audio_decode_file(goodf, &a, &err), 0);
    audio_free(&a);
    free(wav), free(flac), free(x);
}

static int setup(void **state) {
    (void)state;
    const char *base = getenv("KOE_TMP") ? getenv("KOE_TMP") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/test_audio.XXXXXX", base);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_16k_int16), cmocka_unit_test(test_resample_rates),
        cmocka_unit_test(test_stereo_mixdown),      cmocka_unit_test(test_float_to_int16_clipping),
        cmocka_unit_test(test_memory_and_pipe),     cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

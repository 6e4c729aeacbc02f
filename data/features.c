/* features.c — Kaldi-compatible fbank and MFCC, step for step the recipe of torchaudio.compliance.kaldi
 * (see features.h for the settings). Everything that does not depend on the audio — the povey
 * window, the mel triangles as one contiguous band of FFT bins per mel bin, the DCT with the
 * lifter folded in — is built once in features_create; a frame then costs one kissfft real FFT
 * plus a few hundred multiply-adds and one vectorised log per mel bin.
 * Must not: allocate per frame, touch files, MPI or HDF5, or share an extractor between threads
 * (kiss_fftr_cfg and the frame buffers are scratch). */
#include "features.h"

#include <kiss_fftr.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"

#define FEAT_WIN 400   /* 25 ms at 16 kHz */
#define FEAT_SHIFT FEATURES_HOP
#define FEAT_NFFT 512  /* next power of two of the window (round_to_power_of_two) */
#define FEAT_NBINS (FEAT_NFFT / 2) /* mel weights cover bins 0..255; the Nyquist bin has weight 0 */
#define FEAT_PREEMPH 0.97f
#define FEAT_POVEY_POW 0.85
#define FEAT_LOW_FREQ 20.0f
#define FEAT_FBANK_MELS 80
#define FEAT_MFCC_MELS 23
#define FEAT_MFCC_CEPS 13
#define FEAT_LIFTER 22.0
#define FEAT_MAX_MELS FEAT_FBANK_MELS

struct FeatureExtractor {
    FeatureKind kind;
    int n_mel;
    kiss_fftr_cfg fft;
    float window[FEAT_WIN];
    float frame[FEAT_NFFT]; /* windowed frame, zero-padded: the FFT input */
    kiss_fft_cpx spec[FEAT_NFFT / 2 + 1];
    float power[FEAT_NBINS];
    int mel_first[FEAT_MAX_MELS]; /* mel bin m sums power[mel_first[m] .. + mel_len[m]) */
    int mel_len[FEAT_MAX_MELS];
    int mel_off[FEAT_MAX_MELS];   /* offset of its weights in mel_w */
    float mel_w[2 * FEAT_NBINS];  /* each FFT bin lies under at most two triangles */
    float mel[FEAT_MAX_MELS];
    float dct[FEAT_MFCC_CEPS * FEAT_MFCC_MELS]; /* (ceps, mels), lifter folded in */
};

int features_dim(FeatureKind kind) { return kind == FEAT_MFCC ? 3 * FEAT_MFCC_CEPS : FEAT_FBANK_MELS; }

int64_t features_num_frames(int64_t n_samples) {
    return n_samples < FEAT_WIN ? 0 : 1 + (n_samples - FEAT_WIN) / FEAT_SHIFT;
}

int features_kind_parse(const char *name, FeatureKind *kind) {
    if (!strcmp(name, "fbank")) *kind = FEAT_FBANK;
    else if (!strcmp(name, "mfcc")) *kind = FEAT_MFCC;
    else return -1;
    return 0;
}

const char *features_kind_name(FeatureKind kind) { return kind == FEAT_MFCC ? "mfcc" : "fbank"; }

/* Kaldi's mel scale, in float like torchaudio's tensors. */
static float mel_of_hz(float f) { return 1127.0f * logf(1.0f + f / 700.0f); }

/* torchaudio get_mel_banks with vtln off: triangles equally spaced in mel between low_freq and
 * Nyquist (high_freq 0), weight max(0, min(up, down)) on bin k's mel value, all in float32. */
static void build_mel_banks(FeatureExtractor *fe) {
    const float nyquist = (float)(0.5 * KOE_SAMPLE_RATE);
    const float bin_width = (float)((double)KOE_SAMPLE_RATE / FEAT_NFFT);
    /* python floats in torchaudio: computed in double, rounded where they meet a float tensor */
    const double mel_low_d = 1127.0 * log(1.0 + FEAT_LOW_FREQ / 700.0);
    const double mel_high_d = 1127.0 * log(1.0 + nyquist / 700.0);
    const float mel_low = (float)mel_low_d;
    const float delta = (float)((mel_high_d - mel_low_d) / (fe->n_mel + 1));
    int used = 0;
    for (int m = 0; m < fe->n_mel; m++) {
        float left = mel_low + (float)m * delta;
        float center = mel_low + (float)(m + 1) * delta;
        float right = mel_low + (float)(m + 2) * delta;
        int first = -1, last = -1;
        float w[FEAT_NBINS];
        for (int k = 0; k < FEAT_NBINS; k++) {
            float mel = mel_of_hz(bin_width * (float)k);
            float up = (mel - left) / (center - left);
            float down = (right - mel) / (right - center);
            w[k] = fmaxf(0.0f, fminf(up, down));
            if (w[k] > 0.0f) {
                if (first < 0) first = k;
                last = k;
            }
        }
        /* With 512-point FFTs and >= 23 bins every triangle covers at least one FFT bin. */
        KOE_ASSERT(first >= 0);
        int len = last - first + 1;
        KOE_ASSERT(used + len <= 2 * FEAT_NBINS);
        fe->mel_first[m] = first;
        fe->mel_len[m] = len;
        fe->mel_off[m] = used;
        memcpy(fe->mel_w + used, w + first, (size_t)len * sizeof(float));
        used += len;
    }
}

/* torchaudio _get_dct_matrix: create_dct(n_mels, n_mels, "ortho") with column 0 = sqrt(1/n_mels),
 * first 13 columns, then the Kaldi lifter 1 + (L/2) sin(pi i / L) on cepstrum i. */
static void build_dct(FeatureExtractor *fe) {
    const int n = FEAT_MFCC_MELS;
    for (int i = 0; i < FEAT_MFCC_CEPS; i++) {
        double scale = i == 0 ? sqrt(1.0 / n) : sqrt(2.0 / n);
        double lifter = 1.0 + 0.5 * FEAT_LIFTER * sin(M_PI * i / FEAT_LIFTER);
        for (int j = 0; j < n; j++)
            fe->dct[i * n + j] = (float)(scale * cos(M_PI / n * (j + 0.5) * i) * lifter);
    }
}

FeatureExtractor *features_create(FeatureKind kind) {
    KOE_ASSERT(kind == FEAT_FBANK || kind == FEAT_MFCC);
    FeatureExtractor *fe = koe_calloc(1, sizeof *fe);
    fe->kind = kind;
    fe->n_mel = kind == FEAT_MFCC ? FEAT_MFCC_MELS : FEAT_FBANK_MELS;
    fe->fft = kiss_fftr_alloc(FEAT_NFFT, 0, NULL, NULL);
    if (!fe->fft) koe_fatal(KOE_EXIT_INTERNAL, "kiss_fftr_alloc(%d) failed (out of memory?)", FEAT_NFFT);
    /* povey window: the symmetric Hann window to the power 0.85 */
    for (int j = 0; j < FEAT_WIN; j++)
        fe->window[j] = (float)pow(0.5 - 0.5 * cos(2.0 * M_PI * j / (FEAT_WIN - 1)), FEAT_POVEY_POW);
    build_mel_banks(fe);
    if (kind == FEAT_MFCC) build_dct(fe);
    return fe;
}

void features_free(FeatureExtractor *fe) {
    if (!fe) return;
    kiss_fftr_free(fe->fft);
    free(fe);
}

/* log(max(x, FLT_EPSILON)) for x >= 0, vectorisable (fmaxf and float compares are not, without
 * -ffast-math). The floor is an integer max on the bits: non-negative floats order like their
 * bit patterns. Then x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s),
 * s = (m-1)/(m+1), |s| < 0.172, summed to s^9: the next term is below 1e-9 relative, so the
 * result is within a few ulp of logf (tests/unit/test_features.c checks). */
static inline float log_floored(float x) {
    union { float f; int32_t i; } u = {.f = x}; /* type punning through a union: defined in C11 */
    const int32_t eps_bits = 0x34000000;        /* FLT_EPSILON = 2^-23 */
    int32_t xi = u.i > eps_bits ? u.i : eps_bits;
    int32_t t = xi - 0x3f3504f3; /* bits of sqrt(1/2) */
    int32_t e = t >> 23;         /* arithmetic shift (GCC) */
    u.i = (t & 0x007fffff) + 0x3f3504f3;
    float m = u.f;
    float s = (m - 1.0f) / (m + 1.0f);
    float z = s * s;
    float p = 1.0f + z * (1.0f / 3 + z * (1.0f / 5 + z * (1.0f / 7 + z * (1.0f / 9))));
    return (float)e * 0.693147180559945f + 2.0f * s * p;
}

/* The mel energies of one frame of FEAT_WIN samples into fe->mel (log, floored at float epsilon). */
static void frame_log_mel(FeatureExtractor *fe, const float *x) {
    float *fr = fe->frame;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < FEAT_WIN; j++) sum += x[j];
    const float mean = sum / (float)FEAT_WIN;
    /* remove DC, pre-emphasis with x[-1] := x[0] (torchaudio's replicate pad), povey window */
    fr[0] = ((x[0] - mean) - FEAT_PREEMPH * (x[0] - mean)) * fe->window[0];
#pragma omp simd
    for (int j = 1; j < FEAT_WIN; j++) fr[j] = ((x[j] - mean) - FEAT_PREEMPH * (x[j - 1] - mean)) * fe->window[j];
    kiss_fftr(fe->fft, fr, fe->spec);
    const kiss_fft_cpx *sp = fe->spec;
    float *pw = fe->power;
#pragma omp simd
    for (int k = 0; k < FEAT_NBINS; k++) pw[k] = sp[k].r * sp[k].r + sp[k].i * sp[k].i;
    for (int m = 0; m < fe->n_mel; m++) {
        const float *w = fe->mel_w + fe->mel_off[m];
        const float *p = pw + fe->mel_first[m];
        float e = 0.0f;
        for (int k = 0; k < fe->mel_len[m]; k++) e += w[k] * p[k];
        fe->mel[m] = e;
    }
    float *mel = fe->mel;
    const int n_mel = fe->n_mel;
#pragma omp simd
    for (int m = 0; m < n_mel; m++) mel[m] = log_floored(mel[m]);
}

/* torchaudio.functional.compute_deltas, window 5, replicate padding, over T frames:
 * out[t] = sum_{k=-2..2} k * in[clamp(t+k)] / 10. Rows are `stride` floats apart. */
static void deltas(const float *in, float *out, int64_t T, int dim, int stride) {
    for (int64_t t = 0; t < T; t++) {
        const float *m2 = in + (t < 2 ? 0 : t - 2) * stride;
        const float *m1 = in + (t < 1 ? 0 : t - 1) * stride;
        const float *p1 = in + (t + 1 >= T ? T - 1 : t + 1) * stride;
        const float *p2 = in + (t + 2 >= T ? T - 1 : t + 2) * stride;
        float *o = out + t * stride;
        for (int d = 0; d < dim; d++) o[d] = (-2.0f * m2[d] - m1[d] + p1[d] + 2.0f * p2[d]) / 10.0f;
    }
}

void features_compute(FeatureExtractor *fe, const float *wav, int64_t n, float *out) {
    const int64_t T = features_num_frames(n);
    const int dim = features_dim(fe->kind);
    for (int64_t t = 0; t < T; t++) {
        frame_log_mel(fe, wav + t * FEAT_SHIFT);
        float *o = out + t * dim;
        if (fe->kind == FEAT_FBANK) {
            memcpy(o, fe->mel, FEAT_FBANK_MELS * sizeof(float));
            continue;
        }
        for (int i = 0; i < FEAT_MFCC_CEPS; i++) {
            const float *row = fe->dct + i * FEAT_MFCC_MELS;
            float c = 0.0f;
            for (int j = 0; j < FEAT_MFCC_MELS; j++) c += row[j] * fe->mel[j];
            o[i] = c;
        }
    }
    if (fe->kind == FEAT_MFCC && T > 0) {
        deltas(out, out + FEAT_MFCC_CEPS, T, FEAT_MFCC_CEPS, dim);
        deltas(out + FEAT_MFCC_CEPS, out + 2 * FEAT_MFCC_CEPS, T, FEAT_MFCC_CEPS, dim);
    }
}

/* ---- naive reference ---------------------------------------------------------------------------- */

static double naive_mel(double hz) { return 1127.0 * log(1.0 + hz / 700.0); }

void features_compute_naive(FeatureKind kind, const float *wav, int64_t n, float *out) {
    const int64_t T = features_num_frames(n);
    const int dim = features_dim(kind);
    const int n_mel = kind == FEAT_MFCC ? FEAT_MFCC_MELS : FEAT_FBANK_MELS;
    const int n_bins = FEAT_NFFT / 2 + 1;
    double *frame = koe_malloc(FEAT_WIN * sizeof(double));                      // (FEAT_WIN)
    double *power = koe_malloc((size_t)n_bins * sizeof(double));                // (n_bins)
    double *melw = koe_calloc((size_t)n_mel * (size_t)n_bins, sizeof(double));  // (n_mel, n_bins)
    double *logmel = koe_malloc((size_t)n_mel * sizeof(double));                // (n_mel)
    double *ceps = koe_malloc((size_t)(T > 0 ? T : 1) * FEAT_MFCC_CEPS * sizeof(double)); // (T, 13)
    double *delta = koe_malloc((size_t)(T > 0 ? T : 1) * FEAT_MFCC_CEPS * sizeof(double)); // (T, 13)
    const double mlo = naive_mel(FEAT_LOW_FREQ), mhi = naive_mel(0.5 * KOE_SAMPLE_RATE);
    const double md = (mhi - mlo) / (n_mel + 1);
    for (int m = 0; m < n_mel; m++)
        for (int k = 0; k < FEAT_NFFT / 2; k++) { /* the Nyquist bin keeps weight 0, as in Kaldi */
            double mel = naive_mel(k * (double)KOE_SAMPLE_RATE / FEAT_NFFT);
            double up = (mel - (mlo + m * md)) / md, down = (mlo + (m + 2) * md - mel) / md;
            melw[m * n_bins + k] = fmax(0.0, fmin(up, down));
        }
    for (int64_t t = 0; t < T; t++) {
        const float *x = wav + t * FEAT_SHIFT;
        double mean = 0;
        for (int j = 0; j < FEAT_WIN; j++) mean += x[j];
        mean /= FEAT_WIN;
        for (int j = 0; j < FEAT_WIN; j++) {
            double prev = x[j > 0 ? j - 1 : 0] - mean;
            double hann = 0.5 - 0.5 * cos(2.0 * M_PI * j / (FEAT_WIN - 1));
            frame[j] = ((x[j] - mean) - 0.97 * prev) * pow(hann, FEAT_POVEY_POW);
        }
        for (int k = 0; k < n_bins; k++) { /* the zero padding to FEAT_NFFT adds nothing */
            double re = 0, im = 0;
            for (int j = 0; j < FEAT_WIN; j++) {
                double a = 2.0 * M_PI * (double)((j * k) % FEAT_NFFT) / FEAT_NFFT;
                re += frame[j] * cos(a);
                im -= frame[j] * sin(a);
            }
            power[k] = re * re + im * im;
        }
        for (int m = 0; m < n_mel; m++) {
            double e = 0;
            for (int k = 0; k < n_bins; k++) e += melw[m * n_bins + k] * power[k];
            logmel[m] = log(fmax(e, FLT_EPSILON));
        }
        if (kind == FEAT_FBANK) {
            for (int m = 0; m < n_mel; m++) out[t * dim + m] = (float)logmel[m];
            continue;
        }
        for (int i = 0; i < FEAT_MFCC_CEPS; i++) {
            double c = 0;
            for (int j = 0; j < n_mel; j++)
                c += logmel[j] * cos(M_PI / n_mel * (j + 0.5) * i) * sqrt((i == 0 ? 1.0 : 2.0) / n_mel);
            ceps[t * FEAT_MFCC_CEPS + i] = c * (1.0 + 0.5 * FEAT_LIFTER * sin(M_PI * i / FEAT_LIFTER));
        }
    }
    if (kind == FEAT_MFCC) {
        /* static, delta, delta-delta: each pass reads the previous one, edges replicated */
        for (int pass = 0; pass < 3; pass++) {
            for (int64_t t = 0; t < T; t++)
                for (int i = 0; i < FEAT_MFCC_CEPS; i++) {
                    double v = ceps[t * FEAT_MFCC_CEPS + i];
                    if (pass > 0) {
                        v = 0;
                        for (int k = -2; k <= 2; k++) {
                            int64_t s = t + k < 0 ? 0 : t + k >= T ? T - 1 : t + k;
                            v += k * ceps[s * FEAT_MFCC_CEPS + i];
                        }
                        v /= 10.0;
                        delta[t * FEAT_MFCC_CEPS + i] = v;
                    }
                    out[t * dim + pass * FEAT_MFCC_CEPS + i] = (float)v;
                }
            if (pass > 0) memcpy(ceps, delta, (size_t)T * FEAT_MFCC_CEPS * sizeof(double));
        }
    }
    free(frame);
    free(power);
    free(melw);
    free(logmel);
    free(ceps);
    free(delta);
}

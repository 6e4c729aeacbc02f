/* features.h — Kaldi-compatible fbank and MFCC (torchaudio.compliance.kaldi defaults), FFT by kissfft.
 * Framing: 25 ms window (400 samples), 10 ms shift (160), snip_edges, remove DC, pre-emphasis 0.97,
 * povey window, FFT size 512, power spectrum, no dither.
 *   FEAT_FBANK: 80 log mel energies.
 *   FEAT_MFCC:  23 mel bins -> 13 cepstra (DCT-II orthonormal, lifter 22, use_energy=false), then
 *               deltas and delta-deltas (window 2 each side, torchaudio.functional.compute_deltas
 *               with edge replication) -> 39 dims. This is the HuBERT iteration-1 feature.
 * Input: float audio in [-1, 1] (int16 / 32768). No MPI, no HDF5. */
#pragma once
#include <stdint.h>

#include "../core/common.h"

/* Frames per second of the features: KOE_SAMPLE_RATE / FEATURES_HOP (FEATURES_HOP below). */
#define FEATURES_FRAME_RATE (KOE_SAMPLE_RATE / FEATURES_HOP) /* 100 Hz */

typedef enum { FEAT_FBANK = 1, FEAT_MFCC = 2 } FeatureKind;

typedef struct FeatureExtractor FeatureExtractor; /* holds FFT scratch: one per thread */

FeatureExtractor *features_create(FeatureKind kind);
void features_free(FeatureExtractor *fe);
int features_dim(FeatureKind kind);                  /* 80 or 39 */
#define FEATURES_HOP 160 /* samples between frames (10 ms at 16 kHz) */
int64_t features_num_frames(int64_t n_samples);      /* 0 if n < 400, else 1 + (n - 400) / 160 */
/* out: (features_num_frames(n), features_dim(kind)), row-major. */
void features_compute(FeatureExtractor *fe, const float *wav, int64_t n, float *out);
/* The same features the slow, obvious way: double precision, a direct DFT, a dense mel matrix,
 * libm's log. The reference that tests/unit/test_features.c holds features_compute to. */
void features_compute_naive(FeatureKind kind, const float *wav, int64_t n, float *out);
int features_kind_parse(const char *name, FeatureKind *kind); /* "fbank" | "mfcc"; 0 or -1 */
const char *features_kind_name(FeatureKind kind);

#!/usr/bin/env bash
# tests/bench/features.sh — fbank and MFCC throughput on one core against the torchaudio anchor
# (../shared/anchors/kaldi_features.py), same audio length, measured in this run. Goal:
# ours >= 3x the anchor's x_realtime. Median of 3 for both sides.
set -euo pipefail
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
SECONDS_AUDIO=${FEATURES_BENCH_SECONDS:-600}
xrt() { sed -n 's/.*x_realtime=\([0-9.]*\).*/\1/p'; }
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
for kind in mfcc fbank; do
  theirs=()
  for r in 1 2 3; do
    theirs+=("$("$PYTHON" "$ANCHORS/kaldi_features.py" --kind "$kind" --seconds "$SECONDS_AUDIO" --threads 1 | xrt)")
  done
  t=$(median3 "${theirs[@]}")
  o=$("$KOE_BUILD/bench/bench_features" --kind "$kind" --seconds "$SECONDS_AUDIO" --repeats 3 | xrt)
  awk -v k="$kind" -v o="$o" -v t="$t" 'BEGIN {
    printf "   %-5s koe x_realtime=%.0f  torchaudio x_realtime=%.0f  ratio=%.2f  (goal >= 3, 1 core)\n", k, o, t, o / t }'
done

#!/usr/bin/env bash
# tests/bench/prepare.sh — `koe prepare` throughput, 1 rank, in hours of audio per minute,
# on generated files: half 16 kHz int16 (copied bit-exactly), half 44.1 kHz float
# (resampled with soxr HQ). For scale, the same work with the usual Python stack in this run
# (tests/reference/prepare_baseline.py: soundfile + torchaudio resample + h5py with our zstd plugin).
# Median of 3 for both; koe's figure is its own log line (decode + resample + shard writing + index,
# without process start-up), as the baseline's excludes the Python imports.
set -euo pipefail
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
FILES=${PREPARE_BENCH_FILES:-48}
SECS=${PREPARE_BENCH_SECONDS:-60}
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
src="$KOE_TMP/prepare-bench-audio"
"$PYTHON" "$KOE_ROOT/tests/reference/prepare_inputs.py" make-big "$src" "$FILES" "$SECS"
ours=() theirs=()
for r in 1 2 3; do
  rm -rf "$KOE_TMP/prepare-bench-out"
  line=$("$KOE" prepare --out "$KOE_TMP/prepare-bench-out" "$src" 2>&1 | grep "h of audio per minute")
  ours+=("$(sed -n 's/.*(\([0-9.]*\) h of audio per minute).*/\1/p' <<< "$line")")
  rm -f "$KOE_TMP/prepare-bench-baseline.h5"
  theirs+=("$("$PYTHON" "$KOE_ROOT/tests/reference/prepare_baseline.py" "$KOE_TMP/prepare-bench-baseline.h5" \
    "$src"/*/*.wav | sed -n 's/.*hours_per_minute=\([0-9.]*\).*/\1/p')")
done
echo "   last koe run: $line"
awk -v o="$(median3 "${ours[@]}")" -v t="$(median3 "${theirs[@]}")" -v n="$FILES" -v s="$SECS" 'BEGIN {
  printf "   prepare %d files x %ds (half 16k int16, half 44.1k float), 1 rank: koe %.1f h/min  python (soundfile+torchaudio+h5py) %.1f h/min  ratio=%.2f\n",
    n, s, o, t, o / t }'

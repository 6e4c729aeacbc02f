#!/usr/bin/env bash
# zstd.sh — corpus shard compression ratio and decode speed (MB/s of int16 through HDF5, whole
# utterances and 250k-sample crops) for several zstd levels, against HDF5's deflate-6 on the same
# audio in the same run. The audio: the demo corpus (`koe synth` + `koe prepare`) when koe synth is
# built, else espeak-ng speech in several languages through `koe prepare`, else generated audio.
#   BENCH_ZSTD_SECONDS (default 600) audio seconds; BENCH_ZSTD_LEVELS (default 1,3,6,9,19)
set -euo pipefail
cd "$KOE_TMP"
mkdir -p zstd && cd zstd
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
seconds=${BENCH_ZSTD_SECONDS:-600}
levels=${BENCH_ZSTD_LEVELS:-1,3,6,9,19}
minutes=$(( (seconds + 59) / 60 ))

corpus=""
if "$KOE" help synth | grep -q -- '--out' && "$KOE" synth --out synth --minutes "$minutes" > synth.log 2>&1; then
  manifest=$(find synth -name '*.tsv' | head -n 1)
  if [ -n "$manifest" ] && "$KOE" prepare --out corpus "$manifest" > prepare.log 2>&1; then corpus=corpus; fi
fi
if [ -z "$corpus" ] && command -v espeak-ng > /dev/null; then
  # espeak-ng voices at 22.05 kHz, resampled by koe prepare: real phone sequences, not tones
  words="the quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches"
  i=0
  for lang in en de fr es it pl fi tr; do
    mkdir -p espeak/$lang
    for k in $(seq 1 $(( seconds / 40 + 1 ))); do
      espeak-ng -v "$lang" -s $((120 + (i * 37) % 80)) -p $(( (i * 53) % 99 )) \
        -w espeak/$lang/u$k.wav "$words $k $words $((k * 7)) $words" 2> /dev/null
      i=$((i + 1))
    done
  done
  "$KOE" prepare --out corpus --lang-from-dir espeak > prepare.log 2>&1 && corpus=corpus
fi
mkdir -p out
if [ -n "$corpus" ]; then
  "$KOE_BUILD/bench/bench_zstd" --out out --corpus "$corpus" --seconds "$seconds" --levels "$levels" --repeat 7
else
  "$KOE_BUILD/bench/bench_zstd" --out out --seconds "$seconds" --levels "$levels" --repeat 7
fi

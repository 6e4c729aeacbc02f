#!/usr/bin/env bash
# demo.sh — `make demo`: the main job on the demo corpus, end to end, on this machine.
# synth (espeak-ng, 10+ languages) -> prepare (2 MPI ranks) -> info -> features.
# Output in $DEMO_DIR (default build/demo); each step says what it did and where.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DEMO_DIR=${DEMO_DIR:-$BUILD/demo}
MINUTES=${DEMO_MINUTES:-4}
run() { echo; echo "\$ $*"; "$@"; }
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
export HDF5_USE_FILE_LOCKING=FALSE

echo "== 1. synthesise $MINUTES minutes of multilingual speech with phone alignments"
run "$BUILD/koe" synth --out "$DEMO_DIR/synth" --minutes "$MINUTES" --seed 1

echo; echo "== 2. prepare the corpus (2 MPI ranks): 16 kHz int16 shards, zstd-compressed"
run launch/koe-local -n 2 -t 1 -- koe prepare --out "$DEMO_DIR/corpus" --shard-mb 2 --lang-from-dir \
  --align "$DEMO_DIR/synth/align.ctm" "$DEMO_DIR/synth/wav"

echo; echo "== 3. what is in it"
run "$BUILD/koe" info "$DEMO_DIR/corpus"

echo; echo "== 4. HuBERT iteration-1 features: Kaldi MFCC + deltas (2 MPI ranks)"
run launch/koe-local -n 2 -t 1 -- koe features --corpus "$DEMO_DIR/corpus" --kind mfcc --out "$DEMO_DIR/mfcc.h5"
run "$BUILD/koe" info "$DEMO_DIR/mfcc.h5"

cat <<MSG

Demo done. The corpus is in $DEMO_DIR/corpus (read it from Python with
HDF5_PLUGIN_PATH=$PWD/$BUILD/hdf5-plugins), the features in $DEMO_DIR/mfcc.h5.
Your own audio: build/koe prepare --out DIR --lang-from-dir AUDIO_DIR   (see README.md).
MSG

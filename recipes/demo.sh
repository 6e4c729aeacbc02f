#!/usr/bin/env bash
# demo.sh — `make demo`: the main job on the demo corpus, end to end, on this machine.
# synth (espeak-ng, 10+ languages) -> prepare (2 MPI ranks) -> info -> features -> BEST-RQ
# pretraining of the tiny model on 2 MPI ranks for a few minutes (DEMO_STEPS updates, default 200)
# -> a summary.
# Output in $DEMO_DIR (default build/demo); each step says what it did and where.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DEMO_DIR=${DEMO_DIR:-$BUILD/demo}
MINUTES=${DEMO_MINUTES:-4}
STEPS=${DEMO_STEPS:-200}
run() { echo; echo "\$ $*"; "$@"; }
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
export HDF5_USE_FILE_LOCKING=FALSE

echo "== 1. synthesise $MINUTES minutes of multilingual speech with phone alignments"
run "$BUILD/koe" synth --out "$DEMO_DIR/synth" --minutes "$MINUTES" --seed 1

echo; echo "== 2. prepare the corpus (2 MPI ranks): 16 kHz int16 shards, zstd-compressed"
run launch/koe-local -n 2 -t 1 -- koe prepare --out "$DEMO_DIR/corpus" --shard-mb 2 --lang-from-dir \
  --align "$DEMO_DIR/synth/align.ctm" --words "$DEMO_DIR/synth/words.ctm" "$DEMO_DIR/synth/wav"

echo; echo "== 3. what is in it"
run "$BUILD/koe" info "$DEMO_DIR/corpus"

echo; echo "== 4. HuBERT iteration-1 features: Kaldi MFCC + deltas (2 MPI ranks)"
run launch/koe-local -n 2 -t 1 -- koe features --corpus "$DEMO_DIR/corpus" --kind mfcc --out "$DEMO_DIR/mfcc.h5"
run "$BUILD/koe" info "$DEMO_DIR/mfcc.h5"

echo; echo "== 5. BEST-RQ pretraining of the tiny model on 2 MPI ranks x 1 thread: $STEPS updates"
RUN="$DEMO_DIR/run_bestrq"
run launch/koe-local -n 2 -t 1 -- koe train recipes/tiny/bestrq.ini \
  data.corpus="$DEMO_DIR/corpus" run.dir="$RUN" optim.max_updates="$STEPS" \
  optim.warmup=$((STEPS / 10)) run.log_every=10 run.save_every=100 run.valid_every=0 > "$RUN.recipe.txt"
echo "(the resolved recipe is in $RUN.recipe.txt and $RUN/recipe.ini)"

# summary from RUN/log.jsonl: the first and the last logged update
field() { sed -n "s/.*\"$1\": \([^,}]*\).*/\1/p"; }
first=$(head -n 1 "$RUN/log.jsonl")
last=$(tail -n 1 "$RUN/log.jsonl")
ckpt="$RUN/checkpoints/$(cat "$RUN/checkpoints/latest")"
cat <<MSG

== summary
                 step    loss      masked accuracy
  first logged   $(echo "$first" | field step | xargs printf '%5s')   $(echo "$first" | field loss | xargs printf '%7.3f')   $(echo "$first" | field acc | xargs printf '%.3f')
  last logged    $(echo "$last" | field step | xargs printf '%5s')   $(echo "$last" | field loss | xargs printf '%7.3f')   $(echo "$last" | field acc | xargs printf '%.3f')
  metrics        $RUN/log.jsonl (one JSON object per logged update)
  checkpoint     $ckpt
  export it      $BUILD/koe export --ckpt $ckpt --out $DEMO_DIR/export
                 (model.safetensors + config.json, the encoder under Hugging Face names)
  features       $BUILD/koe embed --ckpt $ckpt --layer all --corpus $DEMO_DIR/corpus \\
                   --out $DEMO_DIR/hidden.h5   (every layer's hidden states, 25 frames/s)
  layers         $BUILD/koe analyze layers --ckpt $ckpt --corpus $DEMO_DIR/corpus --out $DEMO_DIR/layers
                   (what each layer carries: PWCCA against mel features and phones, CKA between layers)
  codebook       $BUILD/koe analyze codebook --ckpt $ckpt --corpus $DEMO_DIR/corpus --out $DEMO_DIR/codebook
                   (BEST-RQ's targets on the corpus: codes used, perplexity, PNMI of the codes vs phones)
  continue       run the same koe train command with a larger optim.max_updates: it resumes from
                 $RUN/checkpoints/latest

The corpus is in $DEMO_DIR/corpus (read it from Python with
HDF5_PLUGIN_PATH=$PWD/$BUILD/hdf5-plugins), the MFCC features in $DEMO_DIR/mfcc.h5.
Your own audio: build/koe prepare --out DIR --lang-from-dir AUDIO_DIR   (see README.md).
HuBERT's two iterations on this corpus, with the PNMI of both label sets (12 min on 2 cores;
LAYER=auto: koe analyze layers picks the iteration-2 layer):
  CORPUS=$DEMO_DIR/corpus WORK=$DEMO_DIR/hubert RECIPE1=recipes/tiny/hubert.ini RECIPE2=recipes/tiny/hubert.ini \\
    LAYER=auto THREADS=2 OMP_NUM_THREADS=2 bash recipes/hubert/run.sh
MSG

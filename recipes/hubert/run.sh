#!/usr/bin/env bash
# recipes/hubert/run.sh — HuBERT's two pretraining iterations on any corpus (Hsu et al. 2021):
#   iteration 1: k-means (k=100) of 39-d MFCC -> label set -> train from scratch
#   iteration 2: k-means (k=500) of layer 6 of iteration 1's final checkpoint -> label set ->
#                train a new model from scratch on those 50 Hz labels
# Every step is a koe subcommand; a step whose output already exists is skipped, so the script can
# be re-run after an interruption (koe train itself resumes from RUN/checkpoints/latest).
#
# usage: CORPUS=DIR [variable=value ...] bash recipes/hubert/run.sh [iter1|iter2|all]
# variables (defaults in brackets):
#   CORPUS       corpus written by `koe prepare` (required)
#   WORK         where k-means files and runs go [runs/hubert]
#   RECIPE1      iteration-1 recipe [recipes/base/hubert_iter1.ini]
#   RECIPE2      iteration-2 recipe [recipes/base/hubert_iter2.ini]
#   K1, K2       clusters per iteration [100, 500]
#   LAYER        iteration-1 layer clustered for iteration 2 [6]; `auto`: the layer whose k-means
#                clusters have the highest phone PNMI (ties: phone PWCCA), from `koe analyze layers
#                --props phone,pnmi` on iteration 1's checkpoint (needs the corpus's alignments); the
#                choice and its table are logged and kept in $WORK/layer_auto/ (layers.tsv, layer) and
#                with the label set ($CORPUS/labels/iter1_l<N>_km$K2/layer_auto.{tsv,txt});
#                recipes/hubert/pick_layer.sh makes the choice for both HuBERT pipelines
#   SAMPLE1/2    fraction of utterances k-means sees [1, 1]; HuBERT used 10% of LibriSpeech 960 h
#   SEED         seed of k-means and training [1]
#   MPIRUN       prefix for every step, e.g. "mpirun -np 8" or "srun" [none: one process]
#   KOE          the koe binary [build/koe beside this script's tree, else koe on PATH]
#   TRAIN_ARGS   extra `section.key=value` overrides for both `koe train` runs, e.g.
#                "optim.max_updates=2000 run.save_every=500" [none]
#   THREADS      threads per rank for kmeans/label [OMP_NUM_THREADS or 1]
# Outputs: $WORK/km_mfcc$K1.h5, $CORPUS/labels/mfcc_km$K1, $WORK/iter1 (run dir),
#          $WORK/km_l${LAYER}_$K2.h5, $CORPUS/labels/iter1_l${LAYER}_km$K2, $WORK/iter2 (LAYER=auto:
#          the chosen number in these names).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${CORPUS:?set CORPUS=DIR (a corpus written by koe prepare)}"
WORK=${WORK:-runs/hubert}
RECIPE1=${RECIPE1:-$ROOT/recipes/base/hubert_iter1.ini}
RECIPE2=${RECIPE2:-$ROOT/recipes/base/hubert_iter2.ini}
K1=${K1:-100} K2=${K2:-500} LAYER=${LAYER:-6}
SAMPLE1=${SAMPLE1:-1} SAMPLE2=${SAMPLE2:-1} SEED=${SEED:-1}
MPIRUN=${MPIRUN:-}
THREADS=${THREADS:-${OMP_NUM_THREADS:-1}}
TRAIN_ARGS=${TRAIN_ARGS:-}
if [ -z "${KOE:-}" ]; then
  if [ -x "$ROOT/build/koe" ]; then KOE=$ROOT/build/koe; else KOE=koe; fi
fi
WHAT=${1:-all}
case "$WHAT" in iter1|iter2|all) ;; *) echo "usage: CORPUS=DIR bash $0 [iter1|iter2|all]" >&2; exit 1 ;; esac
mkdir -p "$WORK"
[[ $LAYER =~ ^([0-9]+|auto)$ ]] || { echo "run.sh: LAYER must be a layer number or auto (got '$LAYER')" >&2; exit 1; }
# a choice LAYER=auto made earlier stays (a re-run resumes with the same layer)
if [ "$LAYER" = auto ] && [ -f "$WORK/layer_auto/layer" ]; then LAYER=$(cat "$WORK/layer_auto/layer"); fi
LABELS1=mfcc_km$K1
LABELS2=iter1_l${LAYER}_km$K2
step() { echo "== $*" >&2; }

# LAYER=auto: analyse the layers of checkpoint $1 and set LAYER and LABELS2 to the chosen one
# (recipes/hubert/pick_layer.sh, shared with launch/slurm/hubert_pipeline.sh).
pick_layer() {
  local out="$WORK/layer_auto"
  step "iteration 2: LAYER=auto: koe analyze layers --props phone,pnmi of $1"
  $MPIRUN "$KOE" analyze layers --ckpt "$1" --corpus "$CORPUS" --props phone,pnmi --seed "$SEED" --out "$out" >&2
  LAYER=$(bash "$ROOT/recipes/hubert/pick_layer.sh" "$out")
  LABELS2=iter1_l${LAYER}_km$K2
}

iter1() {
  if [ ! -f "$WORK/km_mfcc$K1.h5" ]; then
    step "iteration 1: k-means of MFCC, k=$K1"
    $MPIRUN "$KOE" kmeans --corpus "$CORPUS" --source mfcc --k "$K1" --sample "$SAMPLE1" --seed "$SEED" \
      --threads "$THREADS" --out "$WORK/km_mfcc$K1.h5"
  fi
  if [ ! -d "$CORPUS/labels/$LABELS1" ]; then
    step "iteration 1: labels $LABELS1"
    $MPIRUN "$KOE" label --corpus "$CORPUS" --kmeans "$WORK/km_mfcc$K1.h5" --name "$LABELS1" --threads "$THREADS"
  fi
  step "iteration 1: train ($RECIPE1)"
  # shellcheck disable=SC2086
  $MPIRUN "$KOE" train "$RECIPE1" data.corpus="$CORPUS" data.labels="$LABELS1" objective.label_rate=100 \
    run.dir="$WORK/iter1" run.seed="$SEED" $TRAIN_ARGS
}

iter2() {
  local latest="$WORK/iter1/checkpoints/latest"
  [ -f "$latest" ] || { echo "run.sh: $latest is missing: run iteration 1 first" >&2; exit 1; }
  local ckpt
  ckpt="$WORK/iter1/checkpoints/$(head -n 1 "$latest")"
  if [ "$LAYER" = auto ]; then pick_layer "$ckpt"; fi
  if [ ! -f "$WORK/km_l${LAYER}_$K2.h5" ]; then
    step "iteration 2: k-means of layer $LAYER of $ckpt, k=$K2"
    $MPIRUN "$KOE" kmeans --corpus "$CORPUS" --source "layer:$LAYER" --ckpt "$ckpt" --k "$K2" --sample "$SAMPLE2" \
      --seed "$SEED" --threads "$THREADS" --out "$WORK/km_l${LAYER}_$K2.h5"
    echo "$ckpt" > "$WORK/km_l${LAYER}_$K2.ckpt" # the checkpoint the k-means saw, for koe label
  fi
  if [ ! -d "$CORPUS/labels/$LABELS2" ]; then
    step "iteration 2: labels $LABELS2"
    $MPIRUN "$KOE" label --corpus "$CORPUS" --kmeans "$WORK/km_l${LAYER}_$K2.h5" --ckpt "$(cat "$WORK/km_l${LAYER}_$K2.ckpt")" \
      --name "$LABELS2" --threads "$THREADS"
  fi
  if [ -f "$WORK/layer_auto/layer" ] && [ "$(cat "$WORK/layer_auto/layer")" = "$LAYER" ] && \
     [ ! -f "$CORPUS/labels/$LABELS2/layer_auto.txt" ]; then # the choice, kept with the label set
    bash "$ROOT/recipes/hubert/pick_layer.sh" "$WORK/layer_auto" "$CORPUS/labels/$LABELS2" > /dev/null 2>&1
  fi
  step "iteration 2: train from scratch ($RECIPE2)"
  # shellcheck disable=SC2086
  $MPIRUN "$KOE" train "$RECIPE2" data.corpus="$CORPUS" data.labels="$LABELS2" objective.label_rate=50 \
    run.dir="$WORK/iter2" run.seed="$SEED" $TRAIN_ARGS
}

case "$WHAT" in
  iter1) iter1 ;;
  iter2) iter2 ;;
  all) iter1; iter2 ;;
esac
if [ -n "$(ls "$CORPUS"/shard-*.h5 2> /dev/null | head -n 1)" ] && "$KOE" analyze labels --corpus "$CORPUS" \
     --labels "$LABELS1" > /dev/null 2>&1; then
  step "label quality (phone alignments of the corpus)"
  for l in "$LABELS1" "$LABELS2"; do
    if [ -d "$CORPUS/labels/$l" ]; then "$KOE" analyze labels --corpus "$CORPUS" --labels "$l"; fi
  done
fi
exit 0

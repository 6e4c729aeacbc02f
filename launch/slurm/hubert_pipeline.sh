#!/usr/bin/env bash
# hubert_pipeline.sh — submit HuBERT's two iterations as a chain of dependent Slurm jobs
# (--dependency=afterok, --kill-on-invalid-dep=yes), from a login node:
#   1 km1     koe kmeans --source mfcc --k $KOE_K1                  (koe_mpi.sbatch, MPI ranks)
#   2 label1  koe label  --name mfcc_km$KOE_K1 --part I/N          (job array of N tasks, each koe_mpi.sbatch)
#   3 train1  koe train  $KOE_RECIPE_ITER1 data.labels=mfcc_km...   (pretrain.sbatch; requeues itself)
#  (3b layer  KOE_LAYER=auto only: koe analyze layers --props phone,pnmi --ckpt <train1's last checkpoint>;
#             recipes/hubert/pick_layer.sh picks the layer, keeps the choice with the label set, and
#             the job submits steps 4-6 with that layer: KOE_FROM=km2 KOE_LAYER=<N> hubert_pipeline.sh)
#   4 km2     koe kmeans --source layer:$KOE_LAYER --ckpt <train1's last checkpoint> --k $KOE_K2
#   5 label2  koe label  --name iter1_l${KOE_LAYER}_km$KOE_K2 --ckpt <the same checkpoint> --part I/N (job array)
#   6 train2  koe train  $KOE_RECIPE_ITER2 objective.label_rate=50 data.labels=iter1_l..._km...
# Label sets are named as recipes/hubert/run.sh names them (mfcc_km<K1>, iter1_l<LAYER>_km<K2>).
# Each job starts only when the one before ended with exit 0 (for a job array: all its tasks did);
# a failed step cancels the rest.
# The label steps are job arrays (--array=0-(N-1), N = KOE_LABEL_TASKS): task I runs
# `koe label ... --part I/N`, the corpus shards s with s % N == I; together they write the whole set.
# A preempted training job requeues under the same job id, so the chain waits for it.
#
# Environment:
#   KOE_CORPUS        corpus directory (koe prepare --out) on a shared file system (required)
#   KOE_WORK          output directory: km*.h5, iter1/, iter2/, job logs (required)
#   KOE_RECIPE_ITER1  iteration-1 recipe (default recipes/base/hubert_iter1.ini)
#   KOE_RECIPE_ITER2  iteration-2 recipe (default: KOE_RECIPE_ITER1; objective.label_rate=50 is added)
#   KOE_K1, KOE_K2    clusters of iteration 1 and 2 (default 100 and 500, as HuBERT Base)
#   KOE_LAYER         encoder layer clustered for iteration 2 (default 6); auto: the layer with the highest
#                     phone PNMI of iteration 1's checkpoint (ties: phone PWCCA), as run.sh's LAYER=auto
#                     (needs the corpus's phone alignments); table and choice in KOE_WORK/layer_auto/ and
#                     CORPUS/labels/iter1_l<N>_km<K2>/layer_auto.{tsv,txt}
#   KOE_LAYER_SBATCH  sbatch options of the layer job (default: KOE_DATA_SBATCH)
#   KOE_TRAIN_OVERRIDES  more section.key=value words for both koe train jobs (default none)
#   KOE_KMEANS_ARGS   more koe kmeans options, e.g. "--sample 0.1" (default none)
#   KOE_DATA_SBATCH   sbatch options of the k-means and label jobs (default "--ntasks=8 --cpus-per-task=4 --time=04:00:00")
#   KOE_LABEL_TASKS   tasks of each label job array (default 4); a failed task can be rerun alone with
#                     sbatch --array=I (see launch/README.md)
#   KOE_LABEL_SBATCH  sbatch options of each label array task (default: KOE_DATA_SBATCH)
#   KOE_TRAIN_SBATCH  sbatch options of the training jobs (default "--nodes=4 --ntasks-per-node=8
#                     --cpus-per-task=4 --time=24:00:00"; pretrain.sbatch requeues at the limit)
#   KOE_SBATCH        sbatch options for every job, e.g. "--partition=cpu --account=speech" (default none)
#   KOE_FROM          first step to submit: km1 label1 train1 layer km2 label2 train2 (default km1), to pick
#                     up a pipeline whose earlier steps are done
#   KOE_DRY_RUN=1     print the sbatch commands instead of running them
#   KOE, KOE_LAUNCHER, KOE_MPI_ARGS   passed to the jobs (see pretrain.sbatch)
# It must not: start work itself (everything runs in jobs) or submit a step without its dependency.
set -euo pipefail
unset KOE_RECIPE KOE_RUN_DIR KOE_OVERRIDES KOE_CKPT_FROM_RUN KOE_THREADS_FLAG # set per job below
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd) # recipes/ beside launch/ (source tree, or PREFIX/share/koe)
die() { echo "hubert_pipeline.sh: error: $*" >&2; exit 1; }
[ -n "${KOE_CORPUS:-}" ] || die "KOE_CORPUS is not set: KOE_CORPUS=/shared/corpus KOE_WORK=/shared/hubert $0"
[ -n "${KOE_WORK:-}" ] || die "KOE_WORK is not set: KOE_CORPUS=/shared/corpus KOE_WORK=/shared/hubert $0"
[ -f "$KOE_CORPUS/corpus.h5" ] || die "KOE_CORPUS=$KOE_CORPUS has no corpus.h5: run koe prepare --out $KOE_CORPUS first"
recipe1=${KOE_RECIPE_ITER1:-recipes/base/hubert_iter1.ini}
recipe2=${KOE_RECIPE_ITER2:-$recipe1}
[ -f "$recipe1" ] || die "KOE_RECIPE_ITER1=$recipe1: no such file"
[ -f "$recipe2" ] || die "KOE_RECIPE_ITER2=$recipe2: no such file"
k1=${KOE_K1:-100} k2=${KOE_K2:-500} layer=${KOE_LAYER:-6}
label_tasks=${KOE_LABEL_TASKS:-4}
for v in "$k1" "$k2"; do [[ $v =~ ^[0-9]+$ ]] || die "KOE_K1 and KOE_K2 must be numbers (got '$v')"; done
[[ $layer =~ ^([0-9]+|auto)$ ]] || die "KOE_LAYER must be a layer number or auto (got '$layer')"
[[ $label_tasks =~ ^[1-9][0-9]*$ ]] || die "KOE_LABEL_TASKS=$label_tasks: expected a number >= 1"
steps=(km1 label1 train1 layer km2 label2 train2)
from=${KOE_FROM:-km1}
[[ " ${steps[*]} " == *" $from "* ]] || die "KOE_FROM=$from: use one of ${steps[*]}"
# absolute paths: the jobs run in $KOE_WORK
corpus=$(realpath "$KOE_CORPUS") recipe1=$(realpath "$recipe1") recipe2=$(realpath "$recipe2")
[ "${KOE_DRY_RUN:-0}" = 1 ] || mkdir -p "$KOE_WORK"
work=$(realpath -m "$KOE_WORK")
[ -z "${KOE:-}" ] || export KOE=$(realpath "$KOE")

read -r -d '' -a common <<<"${KOE_SBATCH:-}" || true
read -r -d '' -a data_opts <<<"${KOE_DATA_SBATCH:---ntasks=8 --cpus-per-task=4 --time=04:00:00}" || true
read -r -d '' -a label_opts <<<"${KOE_LABEL_SBATCH:-${data_opts[*]}}" || true
read -r -d '' -a train_opts <<<"${KOE_TRAIN_SBATCH:---nodes=4 --ntasks-per-node=8 --cpus-per-task=4 --time=24:00:00}" || true
read -r -d '' -a layer_opts <<<"${KOE_LAYER_SBATCH:-${data_opts[*]}}" || true
labels1=mfcc_km$k1 labels2=iter1_l${layer}_km$k2
km1=$work/km1_mfcc_k$k1.h5 km2=$work/km2_layer${layer}_k$k2.h5

prev="" started=0
submit() { # STEP ENV-ASSIGNMENTS... -- SBATCH-ARGS...   sets prev to the new job id
  local step=$1; shift
  [ "$step" = "$from" ] && started=1
  if [ "$started" = 0 ]; then echo "$step: skipped (KOE_FROM=$from)"; shift "$#"; return; fi
  local envs=() dep=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
  [ -n "$prev" ] && dep=(--dependency="afterok:$prev" --kill-on-invalid-dep=yes)
  local cmd=(env "${envs[@]}" sbatch --parsable --chdir="$work" --job-name="koe-$step" "${common[@]}" "${dep[@]}" "$@")
  if [ "${KOE_DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "${cmd[@]}"; echo
    prev=DRY_$step
  else
    prev=$("${cmd[@]}") || die "sbatch refused step $step"
    prev=${prev%%;*}
    echo "$step: job $prev"
  fi
}

# sbatch options of a label job array: task I runs koe_mpi.sbatch label ARGS --part I/N. The task id
# is known only when the task starts, so the task's script is a --wrap around koe_mpi.sbatch (whose
# own #SBATCH lines then do not apply: label_opts give the resources, --output the log name). N is
# fixed here, not $SLURM_ARRAY_TASK_COUNT, so a task rerun alone (sbatch --array=I) keeps its shards.
label_array() { # KOE-LABEL-ARGS...
  local q
  q=$(printf '%q ' "$here/koe_mpi.sbatch" label "$@")
  echo "--array=0-$((label_tasks - 1))"
  echo "--output=%x_%A_%a.out"
  echo "--wrap=exec bash $q--part \$SLURM_ARRAY_TASK_ID/$label_tasks"
}

submit km1 KOE_THREADS_FLAG=1 -- "${data_opts[@]}" "$here/koe_mpi.sbatch" \
  kmeans --corpus "$corpus" --source mfcc --k "$k1" --out "$km1" ${KOE_KMEANS_ARGS:-}
mapfile -t arr < <(label_array --corpus "$corpus" --kmeans "$km1" --name "$labels1")
submit label1 KOE_THREADS_FLAG=1 -- "${label_opts[@]}" "${arr[@]}"
submit train1 KOE_RECIPE="$recipe1" KOE_RUN_DIR="$work/iter1" \
  KOE_OVERRIDES="data.corpus=$corpus data.labels=$labels1 objective.label_rate=100 ${KOE_TRAIN_OVERRIDES:-}" -- \
  "${train_opts[@]}" "$here/pretrain.sbatch"
if [ "$layer" = auto ]; then
  # the layer is known only when train1 is done: this job analyses, picks, and submits km2..train2
  q=$(printf '%q ' "$here/koe_mpi.sbatch" analyze layers --corpus "$corpus" --props phone,pnmi --out "$work/layer_auto")
  pick=$(printf '%q ' "$root/recipes/hubert/pick_layer.sh" "$work/layer_auto" "$corpus/labels/iter1_l<N>_km$k2")
  submit layer KOE_THREADS_FLAG=0 KOE_CKPT_FROM_RUN="$work/iter1" KOE_CORPUS="$corpus" KOE_WORK="$work" \
    KOE_RECIPE_ITER1="$recipe1" KOE_RECIPE_ITER2="$recipe2" -- "${layer_opts[@]}" --output=%x_%j.out \
    "--wrap=set -e; bash $q; n=\$(bash $pick); KOE_FROM=km2 KOE_LAYER=\$n exec bash $(printf %q "$here/hubert_pipeline.sh")"
  [ "${KOE_DRY_RUN:-0}" = 1 ] && { echo "dry run: nothing submitted (km2, label2 and train2 are submitted by the layer job)"; exit 0; }
  echo "submitted; the layer job submits km2, label2 and train2 once it has chosen; logs in $work/koe-STEP_JOBID.out"
  exit 0
fi
submit km2 KOE_THREADS_FLAG=1 KOE_CKPT_FROM_RUN="$work/iter1" -- "${data_opts[@]}" "$here/koe_mpi.sbatch" \
  kmeans --corpus "$corpus" --source "layer:$layer" --k "$k2" --out "$km2" ${KOE_KMEANS_ARGS:-}
mapfile -t arr < <(label_array --corpus "$corpus" --kmeans "$km2" --name "$labels2")
submit label2 KOE_THREADS_FLAG=1 KOE_CKPT_FROM_RUN="$work/iter1" -- "${label_opts[@]}" "${arr[@]}"
submit train2 KOE_RECIPE="$recipe2" KOE_RUN_DIR="$work/iter2" \
  KOE_OVERRIDES="data.corpus=$corpus data.labels=$labels2 objective.label_rate=50 ${KOE_TRAIN_OVERRIDES:-}" -- \
  "${train_opts[@]}" "$here/pretrain.sbatch"
[ "${KOE_DRY_RUN:-0}" = 1 ] && { echo "dry run: nothing submitted"; exit 0; }
echo "submitted; watch with: squeue -u $(id -un) ; logs in $work/koe-STEP_JOBID.out (label arrays: koe-STEP_JOBID_TASK.out)"

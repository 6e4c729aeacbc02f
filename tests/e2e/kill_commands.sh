#!/usr/bin/env bash
# kill_commands.sh — kill -9 in the middle of `koe features`, `kmeans` (mfcc, and layer:N with its
# feature cache), `label`, `embed`, `analyze layers --out` and `prepare --force` over a corpus
# (prepare into a new directory: tests/e2e/prepare_kill.sh; train: train_resume.sh). The test hook
# KOE_TEST_STOP_AT_OUTPUT (core/common.h) makes the command stop itself at a chosen point of its Nth
# output file, so the kill lands there every time. Each command is killed twice: right after creating
# the file (N), and in the middle of its data (N:data: the first block written and flushed into the
# file, its closing attributes not) — for label in the third of five shard files (two published), for
# kmeans layer:N in the k-means file after the cache and in the cache itself, for analyze in
# layers.tsv after layers.json, for prepare --force in the new corpus's second shard. Then: nothing
# incomplete under a final name; the command that would read the output refuses the partial one (koe
# info refuses each .tmp: the format attribute is written last; train refuses a label set with shard
# files missing; koe info refuses the half-built corpus, whose old one is untouched); and a plain rerun
# completes, leaves no .tmp or cache behind, and writes what an undisturbed run writes.
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/scratch.sh"
. "$KOE_ROOT/tests/e2e/lib/stop_point.sh"
scratch kill_commands
"$KOE" synth --out syn --minutes 1 --langs en --seed 1 2> /dev/null
"$KOE" prepare --out corp --shard-mb 0.3 --lang-from-dir --align syn/align.ctm syn/wav 2> /dev/null
[ "$(ls corp | grep -c '^shard-.*\.h5$')" -ge 4 ] || { ls corp; echo "FAIL: want at least 4 shards"; exit 1; }
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" data.corpus=corp \
  'model.conv_feature_layers=[(64,10,5)]+[(64,3,2)]*4+[(64,2,2)]*2' model.encoder_embed_dim=64 \
  model.encoder_layers=2 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128 model.conv_pos=16 \
  --out init.h5 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 8 --out km.h5 2> /dev/null

# NAME POINT CMD...: CMD (with {} for its output) run undisturbed into ref-NAME (once per NAME), then
# stopped at POINT (N or N:data) and killed, then rerun, into kill-NAME
kill_at() {
  local name=$1 n=$2
  shift 2
  [ -e "ref-$name.stdout" ] ||
    "${@//\{\}/ref-$name}" > "ref-$name.stdout" 2> "ref-$name.err" || { cat "ref-$name.err"; echo "FAIL: $name: undisturbed run"; exit 1; }
  killed_at $n "kill-$name.err" "$name never reached its output $n" "${@//\{\}/kill-$name}"
}
rerun() { # NAME CMD...: the killed command again, plainly
  local name=$1
  shift
  "${@//\{\}/kill-$name}" > "kill-$name.stdout" 2> "kill-$name.rerun" || { cat "kill-$name.rerun"; echo "FAIL: $name: the rerun"; exit 1; }
}
same_h5() { # A B: the same groups, datasets, attributes and data (h5dump, its file name line dropped)
  diff <(h5dump "$1" | tail -n +2) <(h5dump "$2" | tail -n +2 | sed "s|kill-|ref-|g") > /dev/null ||
    { echo "FAIL: $2 differs from an undisturbed run's $1"; exit 1; }
}
PARTIAL="\\(not a readable\\|an HDF5 file without a 'format' attribute\\)" # koe info on a half-written file
no_tmp() { [ -z "$(find . -name '*.tmp' -newer init.h5)" ] || { find . -name '*.tmp'; echo "FAIL: .tmp left after $1"; exit 1; }; }

# NAME CMD...: CMD writes one file, {}.h5, killed as it is created and in the middle of its data: only
# the .tmp is left, koe info refuses it, and the rerun writes what an undisturbed run writes
one_file() {
  local name=$1
  shift
  for at in 1 1:data; do
    kill_at "$name" $at "$@"
    [ -e "kill-$name.h5.tmp" ] && [ ! -e "kill-$name.h5" ] || { ls; echo "FAIL: $name ($at): want only the .tmp"; exit 1; }
    refused "a killed $name .tmp ($at; koe info)" "kill-$name.h5.tmp: $PARTIAL" "$KOE" info "kill-$name.h5.tmp"
    rerun "$name" "$@"
    same_h5 "ref-$name.h5" "kill-$name.h5"
    no_tmp "$name"
    rm "kill-$name.h5"
  done
  echo "  $name: ok"
}

# ---- features
one_file features "$KOE" features --corpus corp --kind mfcc --out {}.h5

# ---- kmeans, mfcc and layer:1 (its feature cache is the first output, the k-means file the second)
K=("$KOE" kmeans --corpus corp --source mfcc --k 8 --out {}.h5)
for at in 1 1:data; do
  kill_at kmeans $at "${K[@]}"
  [ -e kill-kmeans.h5.tmp ] && [ ! -e kill-kmeans.h5 ] || { ls; echo "FAIL: kmeans ($at): want only the .tmp"; exit 1; }
  refused "a killed k-means .tmp ($at; koe label)" "kill-kmeans.h5.tmp: \(cannot open\|not a koe k-means\)" \
    "$KOE" label --corpus corp --kmeans kill-kmeans.h5.tmp --name x
  [ ! -e corp/labels/x ] || [ -z "$(ls corp/labels/x)" ] || { echo "FAIL: label wrote files from a partial k-means file"; exit 1; }
  rerun kmeans "${K[@]}"
  same_h5 ref-kmeans.h5 kill-kmeans.h5
  rm kill-kmeans.h5
done
KL=("$KOE" kmeans --corpus corp --source layer:1 --ckpt init.h5 --k 8 --out {}.h5)
for at in 2 2:data 1:data; do # the k-means file as it is created and half written; the cache half written
  kill_at kmeans-layer $at "${KL[@]}"
  [ -e .kill-kmeans-layer.h5.rank0.feats.tmp ] && [ ! -e kill-kmeans-layer.h5 ] &&
    { [ $at = 1:data ] || [ -e kill-kmeans-layer.h5.tmp ]; } ||
    { ls -a; echo "FAIL: kmeans layer:1 ($at): want the cache (and the .tmp), nothing else"; exit 1; }
  rerun kmeans-layer "${KL[@]}"
  [ ! -e .kill-kmeans-layer.h5.rank0.feats.tmp ] || { echo "FAIL: the rerun left the feature cache"; exit 1; }
  same_h5 ref-kmeans-layer.h5 kill-kmeans-layer.h5
  rm kill-kmeans-layer.h5
done
no_tmp kmeans
echo "  kmeans: ok"

# ---- label: two of the shard files published, the third just created
L=("$KOE" label --corpus corp --kmeans km.h5 --name {})
for at in 3 3:data; do
  kill_at label $at "${L[@]}"
  [ "$(ls corp/labels/kill-label | grep -c '\.h5$')" = 2 ] && [ "$(ls corp/labels/kill-label | grep -c '\.tmp$')" = 1 ] ||
    { ls corp/labels/kill-label; echo "FAIL: label ($at): want 2 published shard files and one .tmp"; exit 1; }
  refused "a label set missing shard files ($at; koe train)" "shard-00002.h5: missing" "$KOE" train \
    "$KOE_ROOT/recipes/tiny/hubert.ini" data.corpus=corp data.labels=kill-label optim.max_updates=2 optim.warmup=1 run.dir=never
  refused "a killed label .tmp ($at; koe info)" "shard-00002.h5.tmp: $PARTIAL" "$KOE" info "$(ls corp/labels/kill-label/*.tmp)"
  rerun label "${L[@]}"
  for f in corp/labels/ref-label/*.h5; do same_h5 "$f" "corp/labels/kill-label/$(basename "$f")"; done
  [ "$(ls corp/labels/kill-label)" = "$(ls corp/labels/ref-label)" ] || { echo "FAIL: label: other files after the rerun"; exit 1; }
  no_tmp label
  rm -r corp/labels/kill-label
done
echo "  label: ok"

# ---- embed
one_file embed "$KOE" embed --ckpt init.h5 --layer all --corpus corp --out {}.h5

# ---- analyze layers --out: layers.json published, layers.tsv just created
A=("$KOE" analyze layers --ckpt init.h5 --corpus corp --props mel,phone,cka --folds 6 --min-class 4 --out {})
for at in 2 2:data; do
  kill_at analyze $at "${A[@]}"
  [ -e kill-analyze/layers.json ] && [ -e kill-analyze/layers.tsv.tmp ] && [ ! -e kill-analyze/layers.tsv ] &&
    [ ! -e kill-analyze/cka.tsv ] || { ls kill-analyze; echo "FAIL: analyze ($at): want layers.json and layers.tsv.tmp only"; exit 1; }
  rerun analyze "${A[@]}"
  for f in layers.json layers.tsv cka.tsv; do
    cmp "ref-analyze/$f" "kill-analyze/$f" || { echo "FAIL: analyze: $f differs from an undisturbed run's"; exit 1; }
  done
  no_tmp analyze
  rm -r kill-analyze
done
echo "  analyze: ok"

# ---- prepare --force over an older corpus: the new one is built beside it (DIR.force.tmp), killed as
# its second shard is created and in the middle of that shard's audio
"$KOE" prepare --out old-corp --shard-mb 0.3 syn/wav 2> /dev/null
mkdir old-corp/labels && echo mine > old-corp/labels/note # what else the directory holds stays
P=("$KOE" prepare --force --out {} --shard-mb 0.3 --lang-from-dir --align syn/align.ctm syn/wav)
for at in 2 2:data; do
  rm -rf kill-prepare && cp -a old-corp kill-prepare
  kill_at prepare $at "${P[@]}"
  diff -r old-corp kill-prepare > /dev/null && [ -e kill-prepare.force.tmp/shard-00001.h5.tmp ] ||
    { ls kill-prepare kill-prepare.force.tmp; echo "FAIL: prepare --force ($at): the old corpus changed"; exit 1; }
  "$KOE" info kill-prepare > /dev/null 2> info.err || { cat info.err; echo "FAIL: the old corpus is not readable"; exit 1; }
  refused "the half-built corpus ($at; koe info)" "kill-prepare.force.tmp/corpus.h5: cannot open" "$KOE" info kill-prepare.force.tmp
  refused "its half-written shard ($at; koe info)" "shard-00001.h5.tmp: $PARTIAL" "$KOE" info kill-prepare.force.tmp/shard-00001.h5.tmp
  rerun prepare "${P[@]}"
  [ ! -e kill-prepare.force.tmp ] || { echo "FAIL: the rerun left kill-prepare.force.tmp"; exit 1; }
  [ "$(cat kill-prepare/labels/note)" = mine ] || { echo "FAIL: prepare --force lost what else the directory held"; exit 1; }
  for f in ref-prepare/*.h5; do same_h5 "$f" "kill-prepare/$(basename "$f")"; done
  cmp ref-prepare/prepare-report.tsv kill-prepare/prepare-report.tsv
done
no_tmp prepare
echo "  prepare --force: ok"
echo "kill_commands: ok"

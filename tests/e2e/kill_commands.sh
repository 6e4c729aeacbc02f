#!/usr/bin/env bash
# kill_commands.sh — kill -9 in the middle of `koe features`, `kmeans` (mfcc, and layer:N with its
# feature cache), `label`, `embed` and `analyze layers --out` (prepare: tests/e2e/prepare_kill.sh;
# train: train_resume.sh). The test hook KOE_TEST_STOP_AT_OUTPUT=N (core/common.h) makes the command
# stop itself right after creating its Nth output file, so the kill lands there every time: for label
# the third of five shard files (two published), for kmeans layer:N the k-means file after the cache,
# for analyze layers.tsv after layers.json. Then: nothing incomplete under a final name; the command
# that would read the output refuses the partial one (koe info refuses each .tmp: the format attribute
# is written last; train refuses a label set with shard files missing); and a plain rerun completes,
# leaves no .tmp or cache behind, and writes what an undisturbed run writes.
set -euo pipefail
D=$KOE_TMP/kill_commands
rm -rf "$D" && mkdir -p "$D"
cd "$D"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
"$KOE" synth --out syn --minutes 1 --langs en --seed 1 2> /dev/null
"$KOE" prepare --out corp --shard-mb 0.3 --lang-from-dir --align syn/align.ctm syn/wav 2> /dev/null
[ "$(ls corp | grep -c '^shard-.*\.h5$')" -ge 4 ] || { ls corp; echo "FAIL: want at least 4 shards"; exit 1; }
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" data.corpus=corp \
  'model.conv_feature_layers=[(64,10,5)]+[(64,3,2)]*4+[(64,2,2)]*2' model.encoder_embed_dim=64 \
  model.encoder_layers=2 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128 model.conv_pos=16 \
  --out init.h5 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 8 --out km.h5 2> /dev/null

# NAME N CMD...: CMD (with {} for its output) run undisturbed into ref-NAME, then stopped at its
# Nth output and killed, then rerun, into kill-NAME
kill_at() {
  local name=$1 n=$2
  shift 2
  "${@//\{\}/ref-$name}" > "ref-$name.stdout" 2> "ref-$name.err" || { cat "ref-$name.err"; echo "FAIL: $name: undisturbed run"; exit 1; }
  KOE_TEST_STOP_AT_OUTPUT=$n "${@//\{\}/kill-$name}" > /dev/null 2> "kill-$name.err" &
  local pid=$! st=
  for _ in $(seq 600); do
    st=$(awk '{ print $3 }' /proc/$pid/stat 2> /dev/null || echo gone)
    [ "$st" = T ] || [ "$st" = gone ] || [ "$st" = Z ] && break
    sleep 0.05
  done
  [ "$st" = T ] || { cat "kill-$name.err"; echo "FAIL: $name never reached its output $n (state $st)"; exit 1; }
  kill -9 $pid
  wait $pid 2> /dev/null || true
}
rerun() { # NAME CMD...: the killed command again, plainly
  local name=$1
  shift
  "${@//\{\}/kill-$name}" > "kill-$name.stdout" 2> "kill-$name.rerun" || { cat "kill-$name.rerun"; echo "FAIL: $name: the rerun"; exit 1; }
}
refused() { # WHAT WHY CMD...: CMD must fail, saying WHY (a regular expression)
  local what=$1 why=$2
  shift 2
  if "$@" > /dev/null 2> refused.err; then echo "FAIL: $what was accepted"; exit 1; fi
  grep -q "$why" refused.err || { cat refused.err; echo "FAIL: $what: refused, but not because '$why'"; exit 1; }
  echo "    refused $what: $(grep -m1 "$why" refused.err | head -c 240)"
}
same_h5() { # A B: the same groups, datasets, attributes and data (h5dump, its file name line dropped)
  diff <(h5dump "$1" | tail -n +2) <(h5dump "$2" | tail -n +2 | sed "s|kill-|ref-|g") > /dev/null ||
    { echo "FAIL: $2 differs from an undisturbed run's $1"; exit 1; }
}
no_tmp() { [ -z "$(find . -name '*.tmp' -newer init.h5)" ] || { find . -name '*.tmp'; echo "FAIL: .tmp left after $1"; exit 1; }; }

# ---- features
F=("$KOE" features --corpus corp --kind mfcc --out {}.h5)
kill_at features 1 "${F[@]}"
[ -e kill-features.h5.tmp ] && [ ! -e kill-features.h5 ] || { ls; echo "FAIL: features: want only the .tmp"; exit 1; }
refused "a killed features .tmp (koe info)" "kill-features.h5.tmp: not a readable" "$KOE" info kill-features.h5.tmp
rerun features "${F[@]}"
same_h5 ref-features.h5 kill-features.h5
no_tmp features
echo "  features: ok"

# ---- kmeans, mfcc and layer:1 (its feature cache is the first output, the k-means file the second)
K=("$KOE" kmeans --corpus corp --source mfcc --k 8 --out {}.h5)
kill_at kmeans 1 "${K[@]}"
[ -e kill-kmeans.h5.tmp ] && [ ! -e kill-kmeans.h5 ] || { ls; echo "FAIL: kmeans: want only the .tmp"; exit 1; }
refused "a killed k-means .tmp (koe label)" "kill-kmeans.h5.tmp: cannot open" "$KOE" label --corpus corp --kmeans kill-kmeans.h5.tmp --name x
[ ! -e corp/labels/x ] || [ -z "$(ls corp/labels/x)" ] || { echo "FAIL: label wrote files from a partial k-means file"; exit 1; }
rerun kmeans "${K[@]}"
same_h5 ref-kmeans.h5 kill-kmeans.h5
KL=("$KOE" kmeans --corpus corp --source layer:1 --ckpt init.h5 --k 8 --out {}.h5)
kill_at kmeans-layer 2 "${KL[@]}"
[ -e kill-kmeans-layer.h5.tmp ] && [ -e .kill-kmeans-layer.h5.rank0.feats.tmp ] && [ ! -e kill-kmeans-layer.h5 ] ||
  { ls -a; echo "FAIL: kmeans layer:1: want the cache and the .tmp, nothing else"; exit 1; }
rerun kmeans-layer "${KL[@]}"
[ ! -e .kill-kmeans-layer.h5.rank0.feats.tmp ] || { echo "FAIL: the rerun left the feature cache"; exit 1; }
same_h5 ref-kmeans-layer.h5 kill-kmeans-layer.h5
no_tmp kmeans
echo "  kmeans: ok"

# ---- label: two of the shard files published, the third just created
L=("$KOE" label --corpus corp --kmeans km.h5 --name {})
kill_at label 3 "${L[@]}"
ls corp/labels/kill-label
[ "$(ls corp/labels/kill-label | grep -c '\.h5$')" = 2 ] && [ "$(ls corp/labels/kill-label | grep -c '\.tmp$')" = 1 ] ||
  { echo "FAIL: label: want 2 published shard files and one .tmp"; exit 1; }
refused "a label set missing shard files (koe train)" "shard-00002.h5: missing" "$KOE" train \
  "$KOE_ROOT/recipes/tiny/hubert.ini" data.corpus=corp data.labels=kill-label optim.max_updates=2 optim.warmup=1 run.dir=never
refused "a killed label .tmp (koe info)" "shard-00002.h5.tmp: not a readable" "$KOE" info "$(ls corp/labels/kill-label/*.tmp)"
rerun label "${L[@]}"
for f in corp/labels/ref-label/*.h5; do same_h5 "$f" "corp/labels/kill-label/$(basename "$f")"; done
[ "$(ls corp/labels/kill-label)" = "$(ls corp/labels/ref-label)" ] || { echo "FAIL: label: other files after the rerun"; exit 1; }
no_tmp label
echo "  label: ok"

# ---- embed
E=("$KOE" embed --ckpt init.h5 --layer all --corpus corp --out {}.h5)
kill_at embed 1 "${E[@]}"
[ -e kill-embed.h5.tmp ] && [ ! -e kill-embed.h5 ] || { ls; echo "FAIL: embed: want only the .tmp"; exit 1; }
refused "a killed embed .tmp (koe info)" "kill-embed.h5.tmp: not a readable" "$KOE" info kill-embed.h5.tmp
rerun embed "${E[@]}"
same_h5 ref-embed.h5 kill-embed.h5
no_tmp embed
echo "  embed: ok"

# ---- analyze layers --out: layers.json published, layers.tsv just created
A=("$KOE" analyze layers --ckpt init.h5 --corpus corp --props mel,phone,cka --folds 6 --min-class 4 --out {})
kill_at analyze 2 "${A[@]}"
[ -e kill-analyze/layers.json ] && [ -e kill-analyze/layers.tsv.tmp ] && [ ! -e kill-analyze/layers.tsv ] &&
  [ ! -e kill-analyze/cka.tsv ] || { ls kill-analyze; echo "FAIL: analyze: want layers.json and layers.tsv.tmp only"; exit 1; }
rerun analyze "${A[@]}"
for f in layers.json layers.tsv cka.tsv; do
  cmp "ref-analyze/$f" "kill-analyze/$f" || { echo "FAIL: analyze: $f differs from an undisturbed run's"; exit 1; }
done
no_tmp analyze
echo "  analyze: ok"
echo "kill_commands: ok"

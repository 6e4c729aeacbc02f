#!/usr/bin/env bash
# recipes/hubert/pick_layer.sh — LAYER=auto of both HuBERT pipelines (recipes/hubert/run.sh and
# launch/slurm/hubert_pipeline.sh): from the table of `koe analyze layers --props phone,pnmi --out OUT`
# on iteration 1's checkpoint, the layer whose k-means clusters have the highest phone PNMI (ties:
# the higher phone PWCCA, then the lower layer).
#
# usage: bash pick_layer.sh OUT [LABELS_DIR]
#   writes OUT/layer (the number), prints the number on stdout and the choice on stderr; with
#   LABELS_DIR (the iteration-2 label set's directory, $CORPUS/labels/iter1_l<N>_km<K2>, '<N>'
#   replaced by the number) also keeps the choice with the label set: LABELS_DIR/layer_auto.tsv (the
#   table) and LABELS_DIR/layer_auto.txt (the layer and how it was chosen).
# It must not: run the analysis itself (each pipeline runs it its own way: mpirun or a Slurm job).
set -euo pipefail
out=${1:?usage: pick_layer.sh OUT [LABELS_DIR]}
table=$out/layers.tsv
[ -s "$table" ] || { echo "pick_layer.sh: $table is missing: run koe analyze layers --props phone,pnmi --out $out first" >&2; exit 1; }
layer=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
  $1 ~ /^T[0-9]+$/ && c["pnmi"] && $c["pnmi"] != "NA" {
    p = $c["pnmi"] + 0; f = !c["phone"] || $c["phone"] == "NA" ? -2 : $c["phone"] + 0
    if (best == "" || p > bp || (p == bp && f > bf)) { best = substr($1, 2); bp = p; bf = f }
  }
  END { print best }' "$table")
[ -n "$layer" ] || { echo "pick_layer.sh: LAYER=auto: no layer has a PNMI in $table" >&2; exit 1; }
echo "$layer" > "$out/layer"
echo "== LAYER=auto chose layer $layer (highest phone PNMI, ties: phone PWCCA; table $table):" >&2
cat "$table" >&2
if [ -n "${2:-}" ]; then
  dir=${2//<N>/$layer}
  mkdir -p "$dir"
  cp "$table" "$dir/layer_auto.tsv"
  printf 'layer %s chosen by LAYER=auto: the highest phone PNMI of koe analyze layers --props phone,pnmi (ties: phone PWCCA); table: layer_auto.tsv, from %s\n' \
    "$layer" "$table" > "$dir/layer_auto.txt"
fi
echo "$layer"

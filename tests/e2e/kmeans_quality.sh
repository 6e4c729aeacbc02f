#!/usr/bin/env bash
# kmeans_quality.sh — koe kmeans against the anchor (../shared/anchors/sklearn_kmeans.py,
# MiniBatchKMeans with the HuBERT settings) on the same MFCC features of a 1-minute demo corpus,
# k=20: koe's inertia over all frames must be <= 1.01x the anchor's (tests/reference/kmeans_vs_anchor.sh).
# tests/bench/kmeans.sh is the larger version with timings.
set -euo pipefail
D=$KOE_TMP/kmeans_quality
rm -rf "$D" && mkdir -p "$D"
"$KOE" synth --out "$D/syn" --langs en,de --minutes 1 --seed 3 2> /dev/null
"$KOE" prepare --out "$D/corpus" --lang-from-dir "$D/syn/wav" 2> /dev/null
"$KOE" features --corpus "$D/corpus" --kind mfcc --out "$D/mfcc.h5" 2> /dev/null
"$KOE" kmeans --corpus "$D/corpus" --source mfcc --k 20 --out "$D/km.h5" 2> "$D/km.log" \
  || { cat "$D/km.log"; echo "FAIL: koe kmeans"; exit 1; }
bash "$KOE_ROOT/tests/reference/kmeans_vs_anchor.sh" "$D/mfcc.h5" "$D/km.h5" 20

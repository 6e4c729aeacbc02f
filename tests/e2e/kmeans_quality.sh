#!/usr/bin/env bash
# kmeans_quality.sh — koe kmeans against the anchor (../shared/anchors/sklearn_kmeans.py,
# MiniBatchKMeans with the HuBERT settings) on the same MFCC features of a 1-minute demo corpus,
# k=20: koe's inertia over all frames (computed by tests/reference/kmeans_inertia.py the way the
# anchor scores its own model) must be <= 1.01x the anchor's. tests/bench/kmeans.sh is the larger
# version with timings.
set -euo pipefail
D=$KOE_TMP/kmeans_quality
rm -rf "$D" && mkdir -p "$D"
"$KOE" synth --out "$D/syn" --langs en,de --minutes 1 --seed 3 2> /dev/null
"$KOE" prepare --out "$D/corpus" --lang-from-dir "$D/syn/wav" 2> /dev/null
"$KOE" features --corpus "$D/corpus" --kind mfcc --out "$D/mfcc.h5" 2> /dev/null
"$KOE" kmeans --corpus "$D/corpus" --source mfcc --k 20 --out "$D/km.h5" 2> "$D/km.log" \
  || { cat "$D/km.log"; echo "FAIL: koe kmeans"; exit 1; }
ref=$($PYTHON "$ANCHORS/sklearn_kmeans.py" --feats "$D/mfcc.h5" --k 20 --n-init 3 --threads 1)
ours=$($PYTHON "$KOE_ROOT/tests/reference/kmeans_inertia.py" --feats "$D/mfcc.h5" --kmeans "$D/km.h5")
echo "anchor: $ref"
echo "koe:    $ours"
$PYTHON - "$ref" "$ours" <<'PY'
import sys
f = lambda s: dict(kv.split("=") for kv in s.split())
r, o = f(sys.argv[1]), f(sys.argv[2])
assert r["frames"] == o["frames"], "FAIL: not the same frames"
ratio = float(o["inertia"]) / float(r["inertia"])
print(f"inertia koe / anchor = {ratio:.4f} (bound 1.01)")
assert ratio <= 1.01, "FAIL: koe's k-means inertia is more than 1.01x the anchor's"
PY

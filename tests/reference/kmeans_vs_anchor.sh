#!/usr/bin/env bash
# kmeans_vs_anchor.sh FEATS.h5 KM.h5 K — the k-means quality check of the e2e tests: koe's inertia
# over every frame of FEATS.h5 (tests/reference/kmeans_inertia.py) must be <= 1.01x the anchor's
# (../shared/anchors/sklearn_kmeans.py: MiniBatchKMeans with HuBERT's settings, n_init 3, one thread)
# on the same frames. Prints both and the ratio; exits 1 with a FAIL line otherwise.
# Needs $PYTHON, $ANCHORS and $KOE_ROOT (set by tests/run.sh).
set -euo pipefail
feats=$1 km=$2 k=$3
ref=$("$PYTHON" "$ANCHORS/sklearn_kmeans.py" --feats "$feats" --k "$k" --n-init 3 --threads 1)
ours=$("$PYTHON" "$KOE_ROOT/tests/reference/kmeans_inertia.py" --feats "$feats" --kmeans "$km")
echo "anchor: $ref"
echo "koe:    $ours"
"$PYTHON" - "$ref" "$ours" <<'PY'
import sys
f = lambda s: dict(kv.split("=") for kv in s.split())
r, o = f(sys.argv[1]), f(sys.argv[2])
assert r["frames"] == o["frames"], "FAIL: not the same frames"
ratio = float(o["inertia"]) / float(r["inertia"])
print(f"inertia koe / anchor = {ratio:.4f} (bound 1.01)")
assert ratio <= 1.01, "FAIL: koe's k-means inertia is more than 1.01x the anchor's"
PY

#!/usr/bin/env bash
# tests/bench/kmeans.sh — koe kmeans against the anchor (../shared/anchors/sklearn_kmeans.py:
# MiniBatchKMeans, HuBERT settings, n_init 20) on the same MFCC of a demo corpus, k=100, 2 threads
# each. Prints both inertias over all frames (ours computed by tests/reference/kmeans_inertia.py the
# way the anchor scores itself), both times and the ratios. Goal: inertia <= 1.01x.
# koe's time includes computing the MFCC on the fly every Lloyd pass; the anchor's excludes loading.
set -euo pipefail
MINUTES=${KMEANS_BENCH_MINUTES:-10}
K=${KMEANS_BENCH_K:-100}
D=$KOE_TMP/bench_kmeans
rm -rf "$D" && mkdir -p "$D"
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
"$KOE" synth --out "$D/syn" --minutes "$MINUTES" 2> /dev/null
"$KOE" prepare --out "$D/corpus" --lang-from-dir "$D/syn/wav" 2> /dev/null
"$KOE" features --corpus "$D/corpus" --kind mfcc --out "$D/mfcc.h5" 2> /dev/null
t0=$(date +%s.%N)
"$KOE" kmeans --corpus "$D/corpus" --source mfcc --k "$K" --threads 2 --out "$D/km.h5" 2> "$D/km.log" \
  || { cat "$D/km.log"; exit 1; }
t1=$(date +%s.%N)
ref=$("$PYTHON" "$ANCHORS/sklearn_kmeans.py" --feats "$D/mfcc.h5" --k "$K" --threads 2)
ours=$("$PYTHON" "$KOE_ROOT/tests/reference/kmeans_inertia.py" --feats "$D/mfcc.h5" --kmeans "$D/km.h5")
iters=$(sed -n 's/.*wrote .*, \([0-9]*\) iterations.*/\1/p' "$D/km.log")
"$PYTHON" - "$ref" "$ours" "$(echo "$t1 - $t0" | bc -l)" "$iters" <<'PY'
import sys
f = lambda s: dict(kv.split("=") for kv in s.split())
r, o, t, it = f(sys.argv[1]), f(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ri, oi, rt = float(r["inertia"]), float(o["inertia"]), float(r["fit_s"])
print(f"   kmeans mfcc k={r['k']} frames={r['frames']}: koe inertia={oi:.6g} ({it} Lloyd iterations, {t:.2f} s) "
      f"sklearn MiniBatchKMeans inertia={ri:.6g} ({rt:.2f} s fit)")
print(f"   inertia ratio koe/sklearn={oi/ri:.4f} (goal <= 1.01)  time ratio koe/sklearn={t/rt:.2f}")
PY

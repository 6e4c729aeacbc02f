#!/usr/bin/env bash
# tests/bench/kmeans_l.sh — k-means at HuBERT iteration-2 scale: k = 500 on 200k frames of 768-d
# features (KMEANS_L_FRAMES, KMEANS_L_K), `koe kmeans --source file:` at 1 rank x 2 threads and
# 2 ranks x 1 thread, against the anchor (../shared/anchors/sklearn_kmeans.py: MiniBatchKMeans with
# HuBERT's settings, n_init 20, 2 threads) on the same features, side by side in one run.
# The features are a stored koe-features file the bench generates (tests/bench/kmeans_feats.py: a
# synthetic stand-in for layer features, 614 MB at the default size), not a model's layer.
# Prints, per rank count: inertia over all frames (ours computed by tests/reference/kmeans_inertia.py
# the way the anchor scores itself) and its ratio to the anchor's, wall time and its ratio, and peak
# RSS (koe: max over ranks, from its own log; the anchor: /usr/bin/time, which includes the features
# it loads). Goal (issue 14): inertia <= 1.01x, time >= 5x faster, at 1 and 2 ranks.
# koe's time is the whole command (reading the file every Lloyd pass); the anchor's is its fit only.
# mpirun runs with --bind-to none: by default Open MPI binds each of 1 or 2 ranks to one core, which
# left the 1-rank run's 2 threads on one core (koe warned; the runs before the 21st session's).
# On a shared machine also compare the CPU seconds it prints (koe: every rank, whole command; the
# anchor: its whole process, loading and scoring included, so that ratio favours the anchor).
set -euo pipefail
FRAMES=${KMEANS_L_FRAMES:-200000}
K=${KMEANS_L_K:-500}
D=$KOE_TMP/bench_kmeans_l
rm -rf "$D" && mkdir -p "$D"
"$PYTHON" "$KOE_ROOT/tests/bench/kmeans_feats.py" --out "$D/feats.h5" --frames "$FRAMES" --dim 768 > /dev/null
export OPENBLAS_NUM_THREADS=2
run_koe() { # run_koe NP THREADS: one koe kmeans; prints "wall cpu rss_mb"
  local np=$1 th=$2 t0 t1
  t0=$(date +%s.%N)
  OMP_NUM_THREADS=$th /usr/bin/time -f "%U %S" -o "$D/km$np.time" mpirun --oversubscribe -np "$np" --bind-to none "$KOE" kmeans \
    --source "file:$D/feats.h5" --k "$K" --threads "$th" --out "$D/km$np.h5" 2> "$D/km$np.log" \
    || { cat "$D/km$np.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc -l) $(awk '{print $1 + $2}' "$D/km$np.time") \
$(sed -n 's/.*peak RSS \([0-9]*\) MB.*/\1/p' "$D/km$np.log")"
}
k1=$(run_koe 1 2)
k2=$(run_koe 2 1)
ref=$(OMP_NUM_THREADS=2 /usr/bin/time -f "rss_kb=%M cpu_s=%U+%S" -o "$D/ref.time" \
  "$PYTHON" "$ANCHORS/sklearn_kmeans.py" --feats "$D/feats.h5" --k "$K" --threads 2)
ref="$ref $(cat "$D/ref.time")"
o1=$("$PYTHON" "$KOE_ROOT/tests/reference/kmeans_inertia.py" --feats "$D/feats.h5" --kmeans "$D/km1.h5")
o2=$("$PYTHON" "$KOE_ROOT/tests/reference/kmeans_inertia.py" --feats "$D/feats.h5" --kmeans "$D/km2.h5")
it1=$(sed -n 's/.*wrote .*, \([0-9]*\) iterations.*/\1/p' "$D/km1.log")
it2=$(sed -n 's/.*wrote .*, \([0-9]*\) iterations.*/\1/p' "$D/km2.log")
"$PYTHON" - "$ref" "$o1" "$k1 $it1" "$o2" "$k2 $it2" <<'PY'
import sys
f = lambda s: dict(kv.split("=") for kv in s.split())
r = f(sys.argv[1])
ri, rt, rm = float(r["inertia"]), float(r["fit_s"]), int(r["rss_kb"]) / 1024
rc = sum(float(x) for x in r["cpu_s"].split("+"))
print(f"   kmeans_l k={r['k']} frames={r['frames']} dim={r['dim']}: sklearn MiniBatchKMeans (n_init 20) "
      f"inertia={ri:.6g} fit {rt:.1f} s (process CPU {rc:.0f} s), peak RSS {rm:.0f} MB")
for label, o, k in (("1 rank x 2 threads", sys.argv[2], sys.argv[3]), ("2 ranks x 1 thread", sys.argv[4], sys.argv[5])):
    oi = float(f(o)["inertia"])
    t, cpu, rss, it = k.split()
    t, cpu = float(t), float(cpu)
    print(f"   koe {label}: inertia={oi:.6g} ({it} Lloyd iterations) {t:.1f} s (CPU {cpu:.0f} s), peak RSS {rss} MB "
          f"per rank; inertia ratio koe/sklearn={oi / ri:.4f} (goal <= 1.01), speed-up sklearn fit / koe wall="
          f"{rt / t:.2f}x (goal >= 5), CPU ratio sklearn process / koe={rc / cpu:.2f}x")
PY

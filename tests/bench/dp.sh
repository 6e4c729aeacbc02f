#!/usr/bin/env bash
# dp.sh — `make bench BENCH=dp`: data-parallel training on one machine. The small
# HuBERT (recipes/tiny/hubert_small.ini, global batch 320000 samples) on a synthesized corpus with
# MFCC k-means labels, at 1 rank x 2 threads and at 2 MPI ranks x 1 thread: seconds per update (the
# difference between a run of LONG and one of SHORT updates, divided by LONG - SHORT, so start-up and
# the final checkpoint cancel), and at 2 ranks the seconds per update spent waiting in MPI_Waitall on
# the gradient buckets after backward ended (log.jsonl comm_time_s), as a fraction of the update
# (goal <= 10%). Checkpoints only at the end; no validation.
set -euo pipefail
T="$KOE_TMP/dp"
mkdir -p "$T"
cd "$T"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SHORT=${KOE_BENCH_DP_SHORT:-2}
LONG=${KOE_BENCH_DP_LONG:-10}
"$KOE" synth --out syn --minutes 3 --langs en,de --seed 1 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 50 --out km.h5 2> /dev/null
"$KOE" label --corpus corp --kmeans km.h5 --name km50 2> /dev/null
OV=(data.corpus=corp data.labels=km50 optim.warmup=1 run.log_every=1 run.save_every=100000 run.valid_every=0)
R="$KOE_ROOT/recipes/tiny/hubert_small.ini"
secs() { # STEPS RANKS THREADS -> wall seconds of the run
  local t0 t1 d=run_$1_$2
  rm -rf "$d"
  t0=$(date +%s.%N)
  if [ "$2" = 1 ]; then
    OMP_NUM_THREADS=$3 OPENBLAS_NUM_THREADS=$3 "$KOE" train "$R" "${OV[@]}" run.threads="$3" optim.max_updates="$1" \
      run.dir="$d" > /dev/null 2> "$d.err" || { cat "$d.err"; exit 1; }
  else
    OMP_NUM_THREADS=$3 OPENBLAS_NUM_THREADS=$3 mpirun --oversubscribe -np "$2" --bind-to none -x OMP_NUM_THREADS \
      -x OPENBLAS_NUM_THREADS "$KOE" train "$R" "${OV[@]}" run.threads="$3" optim.max_updates="$1" run.dir="$d" \
      > /dev/null 2> "$d.err" || { cat "$d.err"; exit 1; }
  fi
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
a1=$(secs "$SHORT" 1 2); b1=$(secs "$LONG" 1 2)
a2=$(secs "$SHORT" 2 1); b2=$(secs "$LONG" 2 1)
"$PYTHON" - "$a1" "$b1" "$a2" "$b2" "$SHORT" "$LONG" "run_${LONG}_2/log.jsonl" << 'PY'
import json, sys
a1, b1, a2, b2 = map(float, sys.argv[1:5])
short, long_, log = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
s1, s2 = (b1 - a1) / (long_ - short), (b2 - a2) / (long_ - short)
rows = [json.loads(l) for l in open(log)]
comm = [r["comm_time_s"] for r in rows if r["step"] > short]
c = sum(comm) / len(comm)
print(f"   small HuBERT, global batch 320000 samples, updates {short + 1}..{long_}:")
print(f"   1 rank x 2 threads   {s1:.3f} s/update")
print(f"   2 ranks x 1 thread   {s2:.3f} s/update   ratio 1x2 / 2x1 = {s1 / s2:.2f}")
print(f"   2 ranks: waiting on gradient communication after backward {c * 1000:.1f} ms/update = "
      f"{100 * c / s2:.1f}% of the update (goal <= 10%)")
PY

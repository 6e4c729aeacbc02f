#!/usr/bin/env bash
# tests/e2e/train_watchdog.sh — a hung rank ends the job: 2 ranks of a tiny run
# with run.watchdog_s=10, rank 1 made to hang at step 3 by the test hook KOE_TEST_HANG_AT_STEP
# (recipes/trainer.c). The job must end by itself (a 120 s timeout catches a job that sits idle) with a
# non-zero exit and a message naming rank 1 and what it was doing; rank 0, waiting on it, may say so
# too. Also: a rank killed outright (kill -9 of rank 1's process) ends the job (Open MPI's part).
set -euo pipefail
T="$KOE_TMP/train_watchdog"
mkdir -p "$T"
cd "$T"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$KOE" synth --out syn --minutes 1 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
OV=(data.corpus=corp data.max_tokens=96000 data.max_sample_size=32000 data.threads=0
    model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_attention_heads=2
    model.encoder_ffn_embed_dim=128 objective.codebook_size=512 optim.max_updates=1000
    run.log_every=1 run.save_every=1000 run.valid_every=0 run.watchdog_s=10)
RECIPE="$KOE_ROOT/recipes/tiny/bestrq.ini"

t0=$(date +%s)
code=0
KOE_TEST_HANG_AT_STEP=3 timeout 120 mpirun -np 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x KOE_TEST_HANG_AT_STEP \
    "$KOE" train "$RECIPE" "${OV[@]}" run.dir=h > /dev/null 2> h.err || code=$?
dt=$(($(date +%s) - t0))
test "$code" != 0 && test "$code" != 124 || { echo "FAIL: exit code $code (124: the job sat idle)"; cat h.err; exit 1; }
grep -q 'watchdog: rank 1 of 2 has been in "forward/backward step 3"' h.err ||
    { echo "FAIL: no watchdog message naming rank 1 and its phase"; cat h.err; exit 1; }
echo "hung rank: job ended after ${dt} s in all (exit $code): $(grep -m1 'watchdog: rank 1' h.err)"

# a rank that dies: Open MPI ends the job
setsid mpirun -np 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS "$KOE" train "$RECIPE" "${OV[@]}" run.dir=d \
    > /dev/null 2> d.err &
pid=$!
for _ in $(seq 600); do test -f d/log.jsonl && test "$(wc -l < d/log.jsonl)" -ge 2 && break; sleep 0.1; done
victim=$(pgrep -P "$pid" | sort -n | tail -1) # the second rank mpirun started
t0=$(date +%s)
kill -9 "$victim"
code=0
timeout 120 tail --pid="$pid" -f /dev/null || { echo "FAIL: the job sat idle after a rank died"; kill -9 $(pgrep -P "$pid") "$pid"; exit 1; }
wait "$pid" || code=$?
test "$code" != 0 || { echo "FAIL: exit code 0 after a rank died"; exit 1; }
echo "dead rank: job ended $(($(date +%s) - t0)) s after kill -9 of one rank (exit $code)"

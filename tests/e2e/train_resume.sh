#!/usr/bin/env bash
# tests/e2e/train_resume.sh — collective checkpoints on several ranks, with the
# tiny BEST-RQ recipe shrunk to seconds per run:
#  (a) 2 ranks killed with kill -9 at a random step, and once in the middle of a checkpoint write
#      (test hook KOE_TEST_SLOW_CKPT), then restarted: log.jsonl equals an uninterrupted 2-rank run's
#      bit for bit (timing fields excluded);
#  (b) a checkpoint written by 4 ranks with ZeRO-1 resumes on 2 ranks and on 3 (without ZeRO) with the
#      same global batches: losses equal the uninterrupted 4-rank run's within 1e-5 relative;
#  (c) a truncated latest, and one with a changed /model tensor (read in shares by the ranks, their
#      checksums summed), is skipped for the previous checkpoint, with a message, and the run still repeats
#      the uninterrupted one;
#  (d) a stop file RUN/STOP, and SIGUSR1 to mpirun: exit code 3 after a clean checkpoint; the next run
#      continues exactly.
set -euo pipefail
T="$KOE_TMP/train_resume"
mkdir -p "$T"
cd "$T"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$KOE" synth --out syn --minutes 1 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null

OV=(data.corpus=corp data.max_tokens=96000 data.max_sample_size=32000 data.threads=0
    model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_attention_heads=2
    model.encoder_ffn_embed_dim=128 model.dropout=0 model.attention_dropout=0 model.dropout_input=0
    model.encoder_layerdrop=0 objective.codebook_size=512 optim.lr=0.002 optim.warmup=5
    optim.max_updates=24 run.log_every=1 run.save_every=4 run.keep_last=3 run.valid_every=0)
RECIPE="$KOE_ROOT/recipes/tiny/bestrq.ini"
mpi() { local n=$1; shift; mpirun --oversubscribe -np "$n" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS "$@"; }
train() { local n=$1 dir=$2; shift 2; mpi "$n" "$KOE" train "$RECIPE" "${OV[@]}" run.dir="$dir" "$@"; }
# the log without its timing fields
strip() { sed -E 's/, "(audio_s_per_s|elapsed_s|max_rss_mb|comm_time_s)": [^,}]*//g' "$1"; }
same_log() {
    diff <(strip "$1/log.jsonl") <(strip "$2/log.jsonl") > /dev/null ||
        { echo "FAIL: $2/log.jsonl differs from $1/log.jsonl"; diff <(strip "$1/log.jsonl") <(strip "$2/log.jsonl") | head; exit 1; }
}

train 2 ref > /dev/null 2> ref.err || { cat ref.err; exit 1; }
test "$(wc -l < ref/log.jsonl)" = 24

# (a) kill -9 at a random step, then in the middle of a checkpoint write; restart each time
kill_when() { # kill -9 the whole job (its process group) once the condition holds
    local cond=$1; shift
    setsid "$@" > /dev/null 2>> kill.err &
    local pid=$!
    for _ in $(seq 600); do eval "$cond" && break; sleep 0.1; done
    eval "$cond" || { echo "FAIL: never saw: $cond"; cat kill.err; exit 1; }
    kill -9 $(pgrep -P "$pid") "$pid" 2> /dev/null || true # the ranks, then mpirun
    wait "$pid" || true
}
at=$((5 + RANDOM % 14))
# KOE_TEST_HANG_AT_STEP holds rank 1 before update `at` (its peers wait in the allreduce), so the job is
# still running when it is killed: a 24-update tiny run is otherwise over before the kill lands.
export KOE_TEST_HANG_AT_STEP=$at
kill_when "test -f k/log.jsonl && test \"\$(wc -l < k/log.jsonl)\" -ge $at" \
    mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x KOE_TEST_HANG_AT_STEP "$KOE" train \
    "$RECIPE" "${OV[@]}" run.dir=k
unset KOE_TEST_HANG_AT_STEP
test "$(wc -l < k/log.jsonl)" -lt 24 || { echo "FAIL: the job finished before it was killed"; exit 1; }
echo "killed at step $at (latest: $(cat k/checkpoints/latest))"
train 2 k > /dev/null 2> k.err || { cat k.err; exit 1; }
grep -q "resumed from k/checkpoints/" k.err
same_log ref k

export KOE_TEST_SLOW_CKPT=2
kill_when "test -e w/checkpoints/step-00000008.h5.tmp" \
    mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x KOE_TEST_SLOW_CKPT "$KOE" train \
    "$RECIPE" "${OV[@]}" run.dir=w
unset KOE_TEST_SLOW_CKPT
test "$(cat w/checkpoints/latest)" = step-00000004.h5
train 2 w > /dev/null 2> w.err || { cat w.err; exit 1; }
grep -q "resumed from w/checkpoints/step-00000004.h5" w.err
same_log ref w
echo "(a) kill -9 at a step and inside a checkpoint write: logs after restart identical to the uninterrupted run"

# (b) 4 ranks with ZeRO-1 -> 2 ranks (ZeRO-1) and 3 ranks (no ZeRO) from its step-12 checkpoint
train 4 r4 optim.max_updates=16 run.zero=1 > /dev/null 2> r4.err || { cat r4.err; exit 1; }
for n in 2 3; do
    mkdir -p c$n/checkpoints
    cp r4/checkpoints/step-00000012.h5 c$n/checkpoints/
    echo step-00000012.h5 > c$n/checkpoints/latest
    head -12 r4/log.jsonl > c$n/log.jsonl
done
train 2 c2 optim.max_updates=16 run.zero=1 > /dev/null 2> c2.err || { cat c2.err; exit 1; }
train 3 c3 optim.max_updates=16 run.zero=0 > /dev/null 2> c3.err || { cat c3.err; exit 1; }
"$PYTHON" - << 'PY'
import json
ref = {r["step"]: r for r in map(json.loads, open("r4/log.jsonl"))}
for run in ("c2", "c3"):
    rows = [json.loads(l) for l in open(f"{run}/log.jsonl")][12:]
    assert [r["step"] for r in rows] == [13, 14, 15, 16], [r["step"] for r in rows]
    for r in rows:
        a, b = r["loss"], ref[r["step"]]["loss"]
        assert abs(a - b) <= 1e-5 * abs(b), (run, r["step"], a, b)
        assert r["frames"] == ref[r["step"]]["frames"], (run, r["step"], "another global batch")
print("(b) 4-rank ZeRO-1 checkpoint resumed on 2 (ZeRO-1) and 3 ranks: steps 13-16 match within 1e-5")
PY

# (c) a truncated latest: the previous checkpoint, with a message
cp -r ref cor
truncate -s 4096 cor/checkpoints/step-00000024.h5
train 2 cor > /dev/null 2> cor.err || { cat cor.err; exit 1; }
grep -q "step-00000024.h5 is unusable" cor.err
grep -q "resuming from cor/checkpoints/step-00000020.h5 instead of the latest" cor.err
same_log ref cor
echo "(c) truncated latest skipped: $(grep -m1 'is unusable on this rank' cor.err)"
# and a changed /model tensor (the ranks read /model in shares and sum their checksums): every rank falls
# back with it
cp -r ref cmo
"$PYTHON" - cmo/checkpoints/step-00000024.h5 << 'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as h:
    d = h["model"][sorted(h["model"])[-1]]
    v = d[()]
    v.flat[0] += 1.0
    d[...] = v
PY
train 2 cmo > /dev/null 2> cmo.err || { cat cmo.err; exit 1; }
grep -q "/model fails its checksum" cmo.err || { cat cmo.err; exit 1; }
grep -q "resuming from cmo/checkpoints/step-00000020.h5 instead of the latest" cmo.err
same_log ref cmo
echo "(c) latest with a changed /model tensor skipped on both ranks: $(grep -m1 'checksum' cmo.err)"

# (d) stop file: exit 3 with a clean checkpoint, then the run continues exactly
mkdir -p s
touch s/STOP
code=0
train 2 s > /dev/null 2> s.err || code=$?
test "$code" = 3 || { echo "FAIL: stop file gave exit code $code, expected 3"; cat s.err; exit 1; }
test "$(cat s/checkpoints/latest)" = step-00000001.h5 && test ! -e s/STOP
train 2 s > /dev/null 2> s2.err || { cat s2.err; exit 1; }
grep -q "resumed from s/checkpoints/step-00000001.h5" s2.err
same_log ref s
echo "(d) stop file: exit 3 at step 1 with a clean checkpoint; the continued run repeats the uninterrupted one"

# (d) SIGUSR1 to mpirun (Slurm's --signal=B:USR1 warning; mpirun forwards it): exit 3, clean checkpoint.
# Rank 1 waits 3 s before update 3 (KOE_TEST_HANG_AT_STEP=3:3), so the signal lands while the job runs:
# the 24-update tiny run is otherwise over in a fraction of the 0.1 s poll (CI saw it finish first).
KOE_TEST_HANG_AT_STEP=3:3 mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
    -x KOE_TEST_HANG_AT_STEP "$KOE" train "$RECIPE" "${OV[@]}" run.dir=u > /dev/null 2> u.err &
pid=$!
for _ in $(seq 600); do test -f u/log.jsonl && test "$(wc -l < u/log.jsonl)" -ge 3 && break; sleep 0.1; done
kill -USR1 "$pid"
code=0
wait "$pid" || code=$?
test "$code" = 3 || { echo "FAIL: SIGUSR1 gave exit code $code, expected 3"; cat u.err; exit 1; }
grep -q "stopped by a signal or stop file at step" u.err
stopped=$(cat u/checkpoints/latest)
train 2 u > /dev/null 2> u2.err || { cat u2.err; exit 1; }
same_log ref u
echo "(d) SIGUSR1 to mpirun: exit 3 with $stopped; the continued run repeats the uninterrupted one"

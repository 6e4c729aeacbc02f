#!/usr/bin/env bash
# slurm_requeue.sh — preemption on a real Slurm: start a single-node cluster on localhost
# (tests/slurm/cluster.sh), pretrain the tiny HuBERT on a synthesized corpus with
# launch/slurm/pretrain.sbatch on 2 ranks once straight through, then again with a preemption in the
# middle (`scancel --signal=USR1 --batch`): the job must stop with exit 3 after a checkpoint, requeue
# itself, resume and finish, and its RUN/log.jsonl must equal the uninterrupted run's step by step
# (every field but the throughput, bit for bit). Needs root and `make deps` (munge, slurm-wlm).
# $KOE_SLURM_TEST_RANKS overrides the rank count (default 2). The daemons are stopped on every exit.
set -euo pipefail
T=$KOE_TMP/slurm_requeue
RANKS=${KOE_SLURM_TEST_RANKS:-2}
STEPS=16
rm -rf "$T" && mkdir -p "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root to start munged and slurmd (the CI machine runs as root)"
koe=$(realpath "$KOE")
"$koe" help train >/dev/null 2>&1 || fail "koe train not available ('$KOE help train' fails): this test waits for it"

# ---- the cluster; stopped on every exit path -----------------------------------------------------
export KOE_SLURM_DIR
KOE_SLURM_DIR=$(mktemp -d /tmp/koe-slurm.XXXXXX) # not under KOE_TMP: munged (user munge) must reach it
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "--- last lines of the Slurm daemons' logs:" >&2
    tail -n 25 "$KOE_SLURM_DIR"/log/slurmctld.log "$KOE_SLURM_DIR"/log/slurmd.log >&2 || true
  fi
  "$KOE_ROOT/tests/slurm/cluster.sh" stop || true # cancels the jobs, then stops the daemons
  rm -rf "$KOE_SLURM_DIR"
}
trap cleanup EXIT
"$KOE_ROOT/tests/slurm/cluster.sh" start
eval "$("$KOE_ROOT/tests/slurm/cluster.sh" env)"

# ---- a tiny corpus with MFCC k-means labels ------------------------------------------------------
prep() { "$koe" "$@" >"$T/prep.log" 2>&1 || { cat "$T/prep.log"; fail "koe $1 failed"; }; }
prep synth --out "$T/synth" --minutes 1 --langs en,de --seed 1
prep prepare --out "$T/corpus" --lang-from-dir "$T/synth/wav"
prep kmeans --corpus "$T/corpus" --source mfcc --k 20 --out "$T/km.h5"
prep label --corpus "$T/corpus" --kmeans "$T/km.h5" --name km20

export KOE=$koe KOE_RECIPE=$KOE_ROOT/recipes/tiny/hubert.ini
export KOE_OVERRIDES="data.corpus=$T/corpus data.labels=km20 model.encoder_layers=2 data.max_tokens=64000
  optim.max_updates=$STEPS optim.warmup=4 run.log_every=1 run.save_every=5 run.valid_every=1000"
export KOE_BIND=none # the two jobs may share the 2 cores (OverSubscribe=FORCE)

state() { scontrol show job -o "$1" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
wait_state() { # JOB REGEX SECONDS
  local i s=""
  for i in $(seq $(( $3 * 5 ))); do
    s=$(state "$1"); [[ $s =~ ^($2)$ ]] && return 0
    [[ $s =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)$ ]] && break
    sleep 0.2
  done
  echo "job $1 is $s (waited up to $3 s for $2):" >&2
  scontrol show job "$1" >&2 || true
  cat "$T"/*_"$1".out >&2 || true
  return 1
}
submit() { # NAME RUN_DIR -> $job
  job=$(KOE_RUN_DIR=$2 sbatch --parsable --job-name="$1" --chdir="$T" --nodes=1 --ntasks-per-node="$RANKS" --cpus-per-task=1 \
        --time=10 "$KOE_ROOT/launch/slurm/pretrain.sbatch") || fail "sbatch refused the job"
}

# ---- 1. uninterrupted ----------------------------------------------------------------------------
submit ref "$T/run_ref"; ref=$job
wait_state "$ref" COMPLETED 150 || fail "the uninterrupted job did not complete"
grep -q 'koe train finished (exit 0)' "$T/ref_$ref.out" || { cat "$T/ref_$ref.out"; fail "no 'finished' line in the job output"; }

# ---- 2. preempted in the middle, requeued, resumed -----------------------------------------------
# KOE_TEST_SLOW_CKPT=1: each checkpoint write of this job takes a second longer (test hook of
# distributed/ckpt.c), so USR1 lands while the run is still going however fast the machine is.
KOE_TEST_SLOW_CKPT=1 submit pre "$T/run_pre"
log=$T/run_pre/log.jsonl
for i in $(seq 750); do
  [ -s "$log" ] && [ "$(wc -l <"$log")" -ge 6 ] && break
  # an empty answer is scontrol timing out on a loaded machine, not a job state: ask again
  s=$(state "$job")
  [[ $s =~ ^(RUNNING|PENDING|CONFIGURING|)$ ]] || { cat "$T/pre_$job.out" || true; fail "job $job is $s before it was preempted"; }
  sleep 0.2
done
{ [ -s "$log" ] && [ "$(wc -l <"$log")" -ge 6 ]; } || { cat "$T/pre_$job.out"; fail "no 6 logged steps within 150 s"; }
scancel --signal=USR1 --batch "$job"
# The trap forwards USR1, koe checkpoints and exits 3, the script requeues: the job comes back
# PENDING and held until its BeginTime (about 2 minutes); release it sooner.
wait_state "$job" PENDING 120 || fail "job $job was not requeued after USR1"
stopped_at=$(wc -l <"$log")
[ "$stopped_at" -lt "$STEPS" ] || fail "the run had finished all $STEPS steps before the preemption took effect"
grep -q 'got SIGUSR1' "$T/pre_$job.out" || fail "the batch script's trap did not see USR1"
grep -q 'stopped after a clean checkpoint (exit 3): requeueing' "$T/pre_$job.out" || { cat "$T/pre_$job.out"; fail "koe did not exit 3 after USR1"; }
# not StartTime=now: slurmd refuses a credential made in the same second as the one it revoked at
# the requeue ("Job credential revoked"); a few seconds on, the job starts cleanly
scontrol update JobId="$job" StartTime=now+3
wait_state "$job" COMPLETED 150 || fail "the requeued job did not complete"
out=$T/pre_$job.out
grep -q "job $job (restart 1)" "$out" || { cat "$out"; fail "the job output has no second start (restart 1)"; }
grep -q 'koe train finished (exit 0)' "$out" || { cat "$out"; fail "the requeued job did not finish"; }
scontrol show job -o "$job" | grep -q 'Restarts=1 ' || fail "Slurm does not count one restart for job $job"
echo "preempted after $stopped_at of $STEPS logged steps; requeued once; resumed and finished"

# ---- 3. the loss logs ----------------------------------------------------------------------------
"$PYTHON" - "$T/run_ref/log.jsonl" "$log" "$STEPS" <<'EOF'
import json, re, sys
timing = re.compile(r"per_s$|time|elapsed|wall|rss")  # measurements of the machine, not of the run
def load(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [{k: v for k, v in r.items() if not timing.search(k)} for r in rows]
ref, pre, steps = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
assert [r["step"] for r in ref] == list(range(1, steps + 1)), f"reference log steps: {[r['step'] for r in ref]}"
assert [r["step"] for r in pre] == [r["step"] for r in ref], f"resumed log steps {[r['step'] for r in pre]} differ from the reference's"
for a, b in zip(ref, pre):
    assert "loss" in a, f"no loss in the log line {a}"
    assert a == b, f"step {a['step']}: uninterrupted {a} != preempted+resumed {b}"
print(f"loss log of the preempted run equals the uninterrupted run's at all {steps} steps ({sorted(ref[0])})")
EOF

#!/usr/bin/env bash
# train_netns.sh — the multi-node path on one machine: two network namespaces joined by a veth pair
# (addresses 10.231.0.1/.2, nothing routed anywhere else), each egress capped by `tc tbf` at 10 Gbit/s
# like a 10 GbE cluster network, and `koe train` on 2 ranks (one per namespace) and 4 (two per
# namespace) with Open MPI forced onto TCP over the veth (`--mca btl tcp,self`, `btl_tcp_if_include`).
# mpirun runs in the first namespace and starts one orted per "node" through an rsh agent that does
# `ip netns exec` (and gives each node its own host name), as ssh would on a cluster. Checks, against
# the same runs over shared memory on one node: every logged loss within 1e-5 relative; the step-8
# checkpoint resumed across the namespaces logs the uninterrupted run's lines bit for bit; a hung rank
# is ended by the watchdog with the same message; a rank killed with kill -9 ends the job. Prints the
# exposed communication time per update (log.jsonl's comm_time_s: the wait for the gradient
# reduction) over TCP and over shared memory, and the bytes the veth carried. Everything it creates is
# removed on every exit (trap). KOE_NETNS_MEASURE=1 measures with a larger model instead (below).
# Skips, with a message, where namespaces cannot be made (not root, no CAP_NET_ADMIN, no iproute2).
set -euo pipefail
T="$KOE_TMP/train_netns"
rm -rf "$T" && mkdir -p "$T"
cd "$T"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
skip() { echo "SKIP: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root to create network namespaces"
command -v ip > /dev/null && command -v tc > /dev/null || skip "needs iproute2 (ip, tc): make deps installs it"

# ---- two namespaces, one veth pair, a 10 Gbit/s cap each way; removed on every exit ----------------
NA=koe-na$$ NB=koe-nb$$ VA=koeva$$ VB=koevb$$ NET=10.231.0
cleanup() {
  local pid
  for ns in "$NA" "$NB"; do # anything of ours still running inside (a failed check mid-run)
    for pid in $(ip netns pids "$ns" 2> /dev/null); do kill -9 "$pid" 2> /dev/null || true; done
    ip netns del "$ns" 2> /dev/null || true # takes its veth end, and so the pair, with it
  done
}
trap cleanup EXIT
ip netns add "$NA" 2> /dev/null && ip netns add "$NB" 2> /dev/null || skip "cannot create a network namespace here"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$NA"
ip link set "$VB" netns "$NB"
ip -n "$NA" addr add $NET.1/24 dev "$VA"
ip -n "$NB" addr add $NET.2/24 dev "$VB"
for x in "$NA $VA" "$NB $VB"; do
  set -- $x
  ip -n "$1" link set lo up
  ip -n "$1" link set "$2" up
  tc -n "$1" qdisc add dev "$2" root tbf rate 10gbit burst 1mb latency 1ms
done
# the rsh agent: "node" $1 is a namespace; its orted gets the namespace's name as host name
cat > agent.sh << EOF
#!/bin/sh
node=\$1; shift
exec ip netns exec "\$node" unshare --uts sh -c "hostname \$node; \$*"
EOF
chmod +x agent.sh
ip netns exec "$NA" unshare --uts true 2> /dev/null || skip "cannot make a UTS namespace (unshare --uts)"

"$KOE" synth --out syn --minutes 1 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
# KOE_NETNS_MEASURE=1: only the 2-rank runs, with the tiny recipe's own model (3.4M parameters) in
# place of the shrunk one, to measure the exposed communication of a larger gradient
SMALL=(model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128)
[ "${KOE_NETNS_MEASURE:-0}" = 1 ] && SMALL=()
OV=(data.corpus="$T/corp" data.max_tokens=96000 data.max_sample_size=32000 data.threads=0
    "${SMALL[@]}" model.dropout=0 model.attention_dropout=0 model.dropout_input=0
    model.encoder_layerdrop=0 objective.codebook_size=512 optim.lr=0.002 optim.warmup=5
    optim.max_updates=16 run.log_every=1 run.save_every=8 run.keep_last=3 run.valid_every=0)
RECIPE="$KOE_ROOT/recipes/tiny/bestrq.ini"
ENVS=(-x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS)
sm() { # RANKS DIR OVERRIDES...: shared memory, one node
  local n=$1 dir=$2; shift 2
  mpirun --oversubscribe -np "$n" "${ENVS[@]}" "$KOE" train "$RECIPE" "${OV[@]}" run.dir="$T/$dir" "$@"
}
net() { # RANKS DIR OVERRIDES...: RANKS/2 per namespace, TCP over the veth only
  local n=$1 dir=$2; shift 2
  ip netns exec "$NA" mpirun --oversubscribe -np "$n" --host "$NA:$((n / 2)),$NB:$((n / 2))" \
    --mca plm_rsh_agent "$T/agent.sh" --mca btl tcp,self --mca btl_tcp_if_include $NET.0/24 \
    --mca oob_tcp_if_include $NET.0/24 "${ENVS[@]}" -x KOE_TEST_HANG_AT_STEP \
    "$KOE" train "$RECIPE" "${OV[@]}" run.dir="$T/$dir" "$@"
}
ok() { "$@" > /dev/null 2> "$T/last.err" || { cat "$T/last.err"; echo "FAIL: $*"; exit 1; }; }
strip() { sed -E 's/, "(audio_s_per_s|elapsed_s|max_rss_mb|comm_time_s)": [^,}]*//g; s/, "version": [^,}]*//' "$1"; }
compare() { # SHARED-MEMORY-RUN TCP-RUN: losses within 1e-5, same frames; mean exposed communication
  "$PYTHON" - "$@" << 'PY'
import json, sys
a, b = ([json.loads(l) for l in open(f"{d}/log.jsonl")] for d in sys.argv[1:3])
assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 17)), (sys.argv, len(b))
worst = 0.0
for x, y in zip(a, b):
    assert x["frames"] == y["frames"] and x["skipped"] == y["skipped"], (x, y)
    rel = abs(x["loss"] - y["loss"]) / abs(x["loss"])
    worst = max(worst, rel)
    assert rel <= 1e-5, f"step {x['step']}: loss {y['loss']} over TCP vs {x['loss']} over shared memory"
comm = lambda log: sum(r["comm_time_s"] for r in log[1:]) / (len(log) - 1)  # step 1 includes set-up
print(f"  {sys.argv[2]}: 16 steps, worst relative loss difference vs {sys.argv[1]} {worst:.1e}; "
      f"exposed communication per update {1e3 * comm(b):.2f} ms over TCP, {1e3 * comm(a):.2f} ms over shared memory")
PY
}
veth_bytes() { ip -n "$NA" -s -j link show "$VA" | "$PYTHON" -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["tx"]["bytes"] + s["rx"]["bytes"])'; }

# ---- rank equivalence at 2 and 4 ranks -------------------------------------------------------------
for n in 2 4; do
  ok sm $n sm$n
  b0=$(veth_bytes)
  ok net $n net$n
  b=$(( $(veth_bytes) - b0 ))
  compare sm$n net$n
  echo "  net$n: the veth carried $((b / 1000)) kB"
  # at 2 ranks each rank sends at least half the gradient at each of the 16 updates (both directions
  # counted here): a run that fell back to shared memory or loopback would not move these bytes
  params=$(sed -n 's/.* \([0-9.]*\)M parameters.*/\1/p' last.err | head -1)
  [ $n = 2 ] && { "$PYTHON" -c "import sys; sys.exit(0 if $b > 16 * 4 * $params * 1e6 else 1)" ||
    { echo "FAIL: the veth carried only $b bytes (want > 16 updates x $params M floats)"; exit 1; }; }
  [ "${KOE_NETNS_MEASURE:-0}" = 1 ] && { echo "train_netns: measured ($params M parameters)"; exit 0; }
done

# ---- the step-8 checkpoint resumed across the namespaces: bit for bit ------------------------------
mkdir -p resume/checkpoints
cp net2/checkpoints/step-00000008.h5 resume/checkpoints/
echo step-00000008.h5 > resume/checkpoints/latest
head -8 net2/log.jsonl > resume/log.jsonl
ok net 2 resume
grep -q "resumed from $T/resume/checkpoints/step-00000008.h5" "$T/last.err" || { cat "$T/last.err"; echo "FAIL: did not resume"; exit 1; }
cmp <(strip net2/log.jsonl) <(strip resume/log.jsonl) || { echo "FAIL: the resumed run's log differs from the uninterrupted one's"; exit 1; }
echo "  resume: 2 ranks over TCP resumed at step 8 log the uninterrupted run's lines bit for bit"

ends() { # PID ERRFILE: the job ends by itself within 120 s, with a non-zero exit
  timeout 120 tail --pid="$1" -f /dev/null || { cat "$2"; echo "FAIL: the job sat idle"; exit 1; }
  code=0
  wait "$1" || code=$?
  test "$code" != 0 || { cat "$2"; echo "FAIL: exit 0"; exit 1; }
}

# ---- a hung rank: the watchdog ends the job, naming rank 1 ------------------------------------------
KOE_TEST_HANG_AT_STEP=3 net 2 hang optim.max_updates=1000 run.save_every=1000 run.watchdog_s=10 > /dev/null 2> hang.err &
ends $! hang.err
grep -q 'watchdog: rank 1 of 2 has been in "forward/backward step 3"' hang.err ||
  { cat hang.err; echo "FAIL: no watchdog message naming rank 1 and its phase"; exit 1; }
echo "  hung rank in $NB: job ended (exit $code): $(grep -m1 'watchdog: rank 1' hang.err)"

# ---- a rank killed with kill -9 in the second namespace ends the job --------------------------------
net 2 dead optim.max_updates=1000 run.save_every=1000 > /dev/null 2> dead.err &
pid=$!
for _ in $(seq 600); do test -f dead/log.jsonl && test "$(wc -l < dead/log.jsonl)" -ge 2 && break; sleep 0.1; done
victim=
for p in $(ip netns pids "$NB"); do [ "$(cat /proc/"$p"/comm 2> /dev/null)" = koe ] && victim=$p; done
[ -n "$victim" ] || { cat dead.err; echo "FAIL: no koe rank running in $NB"; exit 1; }
t0=$(date +%s)
kill -9 "$victim"
ends $pid dead.err
echo "  dead rank in $NB: job ended $(($(date +%s) - t0)) s after kill -9 (exit $code)"
echo "train_netns: ok"

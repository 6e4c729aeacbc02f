#!/usr/bin/env bash
# prepare_kill.sh — a prepare killed with SIGKILL mid-run leaves no shard-*.h5 that is not complete
# (only shard-*.h5.tmp leftovers, and no corpus.h5), and a re-run with --force succeeds and gives
# the same corpus as an undisturbed run. The inputs are wav.scp pipes that sleep before catting
# their file, so the kill lands while a shard is half written without any timing guesswork. SIGTERM
# at the same point stops between two inputs: exit 3, a message, and the half shard removed.
set -euo pipefail
D=$KOE_TMP/prepare_kill
REF="$PYTHON $KOE_ROOT/tests/reference/prepare_inputs.py"
rm -rf "$D" && mkdir -p "$D"
$REF make-big "$D/audio" 12 1.5
ls "$D"/audio/*/*.wav | sort | awk '{ printf "utt%02d sleep 0.3; cat %s |\n", NR, $0 }' > "$D/wav.scp"
# Pipes are planned at 10 s each: --shard-mb 0.7 puts two utterances in each of 6 shards.
args=(--shard-mb 0.7 --allow-pipes "$D/wav.scp")

$KOE prepare --out "$D/out" "${args[@]}" 2> "$D/stderr-kill" &
pid=$!
for _ in $(seq 3000); do  # wait for one complete shard and the next one half written
  [ -e "$D/out/shard-00001.h5" ] && [ -e "$D/out/shard-00002.h5.tmp" ] && break
  sleep 0.01
done
kill -9 $pid
wait $pid 2>/dev/null && { echo "FAIL: prepare finished before it could be killed"; exit 1; } || true
ls -l "$D/out"
[ -e "$D/out/shard-00002.h5.tmp" ] || { echo "FAIL: the kill did not land while shard 2 was being written"; exit 1; }
[ ! -e "$D/out/shard-00002.h5" ] || { echo "FAIL: a half-written shard has the final name"; exit 1; }
[ ! -e "$D/out/corpus.h5" ] || { echo "FAIL: a killed run left a corpus index"; exit 1; }
$REF check-shards "$D/out"  # every shard-*.h5 left is complete and readable

# SIGTERM (Slurm's, or a user's) at the same point: a message, exit 3, and no .tmp left
$KOE prepare --out "$D/term" "${args[@]}" 2> "$D/stderr-term" &
pid=$!
for _ in $(seq 3000); do
  [ -e "$D/term/shard-00001.h5" ] && [ -e "$D/term/shard-00002.h5.tmp" ] && break
  sleep 0.01
done
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc = 3 ] || { cat "$D/stderr-term"; echo "FAIL: SIGTERM: exit $rc, expected 3"; exit 1; }
grep -q "stopped by a signal.*run the command again" "$D/stderr-term" || { cat "$D/stderr-term"; echo "FAIL: no message"; exit 1; }
[ -z "$(ls "$D/term" | grep '\.tmp$' || true)" ] || { ls "$D/term"; echo "FAIL: SIGTERM left a .tmp"; exit 1; }
[ ! -e "$D/term/corpus.h5" ] || { echo "FAIL: a stopped run left a corpus index"; exit 1; }
$REF check-shards "$D/term"

$KOE prepare --out "$D/out" --force "${args[@]}" 2> "$D/stderr-rerun" || { cat "$D/stderr-rerun"; echo "FAIL: re-run"; exit 1; }
[ -z "$(ls "$D/out" | grep '\.tmp$' || true)" ] || { ls "$D/out"; echo "FAIL: .tmp leftovers after the re-run"; exit 1; }
$KOE prepare --out "$D/clean" "${args[@]}" 2> "$D/stderr-clean"
$REF dump "$D/out" | sed "s|$D/out||" > "$D/dump-rerun"
$REF dump "$D/clean" | sed "s|$D/clean||" > "$D/dump-clean"
diff "$D/dump-rerun" "$D/dump-clean" || { echo "FAIL: the re-run differs from an undisturbed run"; exit 1; }
[ "$(wc -l < "$D/dump-clean")" = 12 ] || { echo "FAIL: want 12 utterances"; exit 1; }
echo "prepare_kill: ok"

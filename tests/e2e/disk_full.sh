#!/usr/bin/env bash
# disk_full.sh — full and read-only file systems, on a small tmpfs mounted for the test: each of
# `koe prepare`, `features`, `kmeans` (mfcc, and layer:N with its feature cache), `label`, `embed` and
# `export` first writes a good output there, then runs again with the file system full (a filler file
# takes every free byte) and again with it remounted read-only. Each failing run must exit 1 or 2 with a
# message that says "disk full" / "read-only file system" and names a path on the tmpfs, leave the
# earlier output byte for byte as it was, and leave no .tmp (nor any other new file); after the space
# is freed the same command completes; `prepare --force` over a corpus keeps the old corpus whole.
# `koe train` with run.dir there: a resume on a full disk (the log.jsonl rewrite), a checkpoint that
# does not fit and a log line that does not fit fail the same way with the newest checkpoint and latest
# intact and the log whole JSON lines; after space is freed the run finishes with the log of an
# undisturbed run. TensorBoard's files on a file system of their own that fills: one warning, the run
# finishes, the event file written so far decodes.
# Skips, with a message, where tmpfs cannot be mounted (not root, or no CAP_SYS_ADMIN).
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/scratch.sh"
. "$KOE_ROOT/tests/e2e/lib/stop_point.sh"
scratch disk_full
M=$D/m
mkdir "$M"
mount -t tmpfs -o size=6m koe-disk-full "$M" 2> /dev/null || { echo "SKIP: cannot mount a tmpfs here (needs root)"; exit 0; }
trap 'mount -o remount,rw "$M" 2> /dev/null; umount "$M" || umount -l "$M"' EXIT

"$KOE" synth --out syn --minutes 1 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 8 --out km.h5 2> /dev/null
SMALL=(model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128)
"$KOE" init "$KOE_ROOT/recipes/tiny/bestrq.ini" "${SMALL[@]}" --out init.h5 2> /dev/null

fill() { # take every free byte of the tmpfs (the filler stops at ENOSPC), or leave $1 KiB
  rm -f "$M/filler"
  if [ "${1:-0}" = 0 ]; then
    dd if=/dev/zero of="$M/filler" bs=4k 2> /dev/null || true
  else
    dd if=/dev/zero of="$M/filler" bs=1k count=$(($(df -k --output=avail "$M" | tail -1) - $1)) 2> /dev/null
  fi
}
state() { (cd "$M" && find . -path ./filler -prune -o -type f -print0 | sort -z | xargs -0r md5sum); }
# NAME WHAT CMD...: CMD writes its output on the tmpfs. Good run (unless FIRST=0), then full and
# read-only runs that fail cleanly and change nothing, then a run after the space is freed.
case_() {
  local name=$1 what=$2
  shift 2
  if [ "${FIRST:-1}" = 1 ]; then
    "$@" > /dev/null 2> "$name.good" || { cat "$name.good"; echo "FAIL: $name: the first run"; exit 1; }
  fi
  state > "$name.before"
  for mode in full ro; do
    if [ $mode = full ]; then fill 0; else rm -f "$M/filler"; mount -o remount,ro "$M"; fi
    local rc=0
    "$@" > /dev/null 2> "$name.$mode" || rc=$?
    [ $mode = ro ] && mount -o remount,rw "$M"
    rm -f "$M/filler"
    [ $rc = 1 ] || [ $rc = 2 ] || { cat "$name.$mode"; echo "FAIL: $name on a $mode file system: exit $rc, want 1 or 2"; exit 1; }
    grep -qi "$what" "$name.$mode" && grep -q "$M" "$name.$mode" ||
      { cat "$name.$mode"; echo "FAIL: $name on a $mode file system: no message saying '$what' with the path"; exit 1; }
    state | diff "$name.before" - ||
      { echo "FAIL: $name on a $mode file system changed or left files (above)"; exit 1; }
    what="read-only file system"
    echo "  $name ($mode): exit $rc: $(grep -m1 -o "$M[^ :;)]*" "$name.$mode" | head -1)"
  done
  "$@" > /dev/null 2> "$name.rerun" || { cat "$name.rerun"; echo "FAIL: $name: the run after freeing space"; exit 1; }
}

cp -r corp "$M/corp" # label writes beside its corpus
FIRST=0 case_ prepare "disk full" "$KOE" prepare --out "$M/c" syn
# --force over the corpus just made: the new one is built beside it (c.force.tmp), the old one kept
case_ prepare-force "disk full" "$KOE" prepare --force --out "$M/c" syn
rm -rf "${M:?}/c"
case_ features "disk full" "$KOE" features --corpus corp --kind mfcc --out "$M/f.h5"
case_ kmeans "disk full" "$KOE" kmeans --corpus corp --source mfcc --k 8 --out "$M/km.h5"
case_ kmeans-layer "disk full" "$KOE" kmeans --corpus corp --source layer:1 --ckpt init.h5 --k 8 --out "$M/kml.h5"
case_ label "disk full" "$KOE" label --corpus "$M/corp" --kmeans km.h5 --name km8
case_ embed "disk full" "$KOE" embed --ckpt init.h5 --layer all --corpus corp --out "$M/e.h5"
case_ export "disk full" "$KOE" export --ckpt init.h5 --out "$M/hf"
rm -rf "${M:?}"/*

# ---- koe train, run.dir on the tmpfs ----------------------------------------------------------------
OV=(data.corpus=corp data.max_tokens=96000 data.max_sample_size=32000 data.threads=0 "${SMALL[@]}"
    model.dropout=0 model.attention_dropout=0 model.dropout_input=0 model.encoder_layerdrop=0
    objective.codebook_size=512 optim.lr=0.002 optim.warmup=2 run.log_every=1 run.save_every=4 run.valid_every=0)
train() { "$KOE" train "$KOE_ROOT/recipes/tiny/bestrq.ini" "${OV[@]}" "$@"; }
strip() { sed -E 's/, "(audio_s_per_s|elapsed_s|max_rss_mb)": [^,}]*//g' "$1"; }
train optim.max_updates=8 run.dir=ref run.keep_last=2 > /dev/null 2> ref.err || { cat ref.err; exit 1; }
mkdir -p "$M/run/checkpoints" # the undisturbed run as it was at its step-4 checkpoint
cp ref/checkpoints/step-00000004.h5 "$M/run/checkpoints/"
echo step-00000004.h5 > "$M/run/checkpoints/latest"
head -4 ref/log.jsonl > "$M/run/log.jsonl"
state > run.before
fill 0
rc=0; train optim.max_updates=8 run.dir="$M/run" > /dev/null 2> run2.err || rc=$?
[ $rc = 1 ] || [ $rc = 2 ] || { cat run2.err; echo "FAIL: train resumed on a full disk: exit $rc"; exit 1; }
grep -q "log.jsonl.tmp.*disk full" run2.err || { cat run2.err; echo "FAIL: train: no 'disk full' naming log.jsonl"; exit 1; }
rm -f "$M/filler"
state | diff run.before - || { echo "FAIL: a failed resume changed the run directory"; exit 1; }
echo "  train (resume, full): exit $rc: $(grep -m1 -o "$M[^ :;)]*" run2.err | head -1)"
fill 400 # room for the log and the event files, not for the 1.3 MB checkpoint at step 8
rc=0; train optim.max_updates=8 run.dir="$M/run" > /dev/null 2> run3.err || rc=$?
rm -f "$M/filler"
[ $rc = 1 ] || [ $rc = 2 ] || { cat run3.err; echo "FAIL: train, checkpoint on a full disk: exit $rc"; exit 1; }
grep -q "step-00000008.h5.tmp.*disk full" run3.err || { cat run3.err; echo "FAIL: train: no 'disk full' naming the checkpoint"; exit 1; }
[ "$(cat "$M/run/checkpoints/latest")" = step-00000004.h5 ] || { echo "FAIL: latest moved"; exit 1; }
[ -z "$(find "$M" -name '*.tmp')" ] || { find "$M" -name '*.tmp'; echo "FAIL: a .tmp was left"; exit 1; }
state | grep -F "$(grep step-00000004.h5 run.before)" > /dev/null || { echo "FAIL: the step-4 checkpoint changed"; exit 1; }
echo "  train (checkpoint, full): exit $rc: $(grep -m1 -o "$M[^ :;)]*" run3.err | head -1)"
train optim.max_updates=8 run.dir="$M/run" > /dev/null 2> run4.err || { cat run4.err; echo "FAIL: train after freeing space"; exit 1; }
grep -q "resumed from $M/run/checkpoints/step-00000004.h5" run4.err || { cat run4.err; echo "FAIL: did not resume from step 4"; exit 1; }
cmp <(strip ref/log.jsonl) <(strip "$M/run/log.jsonl") || { echo "FAIL: the finished run's log differs from an undisturbed run's"; exit 1; }

# ---- koe train: the disk fills while log.jsonl is appended ------------------------------------------
# Resumed at step 12 of a 32-update run with no checkpoint before the last, so the full disk meets a
# log line first: the tmpfs keeps one free page, which the log's next page takes; the line that would
# start the page after fails. (TensorBoard's files are on another file system here; its case follows.)
train optim.max_updates=32 run.dir=ref32 run.keep_last=8 > /dev/null 2> ref32.err || { cat ref32.err; exit 1; }
rm -rf "${M:?}"/* tb-elsewhere && mkdir -p "$M/run/checkpoints" tb-elsewhere
ln -s "$D/tb-elsewhere" "$M/run/tb"
cp -r ref32/tb/. tb-elsewhere/ # the undisturbed run's files up to step 12 (a later START drops the rest)
cp ref32/checkpoints/step-00000012.h5 "$M/run/checkpoints/"
echo step-00000012.h5 > "$M/run/checkpoints/latest"
head -12 ref32/log.jsonl > "$M/run/log.jsonl"
fill 4
rc=0; train optim.max_updates=32 run.save_every=100 run.dir="$M/run" > /dev/null 2> run5.err || rc=$?
rm -f "$M/filler"
[ $rc = 1 ] || [ $rc = 2 ] || { cat run5.err; echo "FAIL: train, log.jsonl on a full disk: exit $rc"; exit 1; }
grep -q "$M/run/log.jsonl: cannot append the step [0-9]* line.*disk full" run5.err ||
  { cat run5.err; echo "FAIL: train: no 'disk full' naming log.jsonl"; exit 1; }
n=$(wc -l < "$M/run/log.jsonl")
[ "$n" -gt 12 ] && [ "$n" -lt 32 ] || { echo "FAIL: the log has $n lines: the disk did not fill between steps 12 and 32"; exit 1; }
"$PYTHON" -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1])]' "$M/run/log.jsonl" ||
  { tail -c 300 "$M/run/log.jsonl"; echo "FAIL: the log is not whole JSON lines after the failed append"; exit 1; }
cmp <(strip "$M/run/log.jsonl") <(head -"$n" ref32/log.jsonl | strip /dev/stdin) ||
  { echo "FAIL: the log's lines differ from an undisturbed run's"; exit 1; }
[ "$(cat "$M/run/checkpoints/latest")" = step-00000012.h5 ] && [ -z "$(find "$M" -name '*.tmp')" ] ||
  { ls -R "$M"; echo "FAIL: latest moved or a .tmp was left"; exit 1; }
echo "  train (log.jsonl append, full): exit $rc: $n whole lines kept: $(grep -m1 -o "$M/run/log.jsonl: [^:]*" run5.err)"
train optim.max_updates=32 run.save_every=100 run.dir="$M/run" > /dev/null 2> run6.err ||
  { cat run6.err; echo "FAIL: train after freeing space"; exit 1; }
cmp <(strip ref32/log.jsonl) <(strip "$M/run/log.jsonl") || { echo "FAIL: the finished run's log differs from an undisturbed run's"; exit 1; }
# the event files of the failed run and of the rerun read back whole and merge to the log's values
"$PYTHON" "$KOE_ROOT/tests/reference/tfevents_decode.py" check "$M/run" "$M/run/log.jsonl" > /dev/null ||
  { echo "FAIL: the TensorBoard files do not decode to the log's values"; exit 1; }
# the finished run continued on a read-only file system: refused at once, naming the place, nothing changed
state > run.before
mount -o remount,ro "$M"
rc=0; train optim.max_updates=40 run.save_every=100 run.dir="$M/run" > /dev/null 2> run7.err || rc=$?
mount -o remount,rw "$M"
[ $rc = 1 ] || [ $rc = 2 ] || { cat run7.err; echo "FAIL: train on a read-only file system: exit $rc"; exit 1; }
grep -qi "$M/run.*read-only file system" run7.err || { cat run7.err; echo "FAIL: train: no 'read-only file system' with the path"; exit 1; }
state | diff run.before - || { echo "FAIL: train on a read-only file system changed the run directory"; exit 1; }
echo "  train (resume, ro): exit $rc: $(grep -m1 -o "$M/run[^ :;)]*: [^:]*" run7.err | tail -1)"

# ---- koe train: TensorBoard's file system fills ------------------------------------------------------
# RUN/tb/train is a tmpfs of its own, filled once the run has started (it stops itself as its first
# checkpoint begins: KOE_TEST_STOP_AT_OUTPUT): TensorBoard is turned off with one warning naming the
# file and the full disk, the run finishes with the log of an undisturbed run, and the event file
# written so far decodes: whole records, the log's values up to its last step.
rm -rf tbr && mkdir -p tbr/tb/train
mount -t tmpfs -o size=64k koe-disk-full-tb tbr/tb/train
pid=
trap '[ -z "$pid" ] || kill -9 "$pid" 2> /dev/null || true; wait; umount tbr/tb/train || umount -l tbr/tb/train
      mount -o remount,rw "$M" 2> /dev/null; umount "$M" || umount -l "$M"' EXIT
KOE_TEST_STOP_AT_OUTPUT=1 "$KOE" train "$KOE_ROOT/recipes/tiny/bestrq.ini" "${OV[@]}" optim.max_updates=32 run.dir=tbr \
  > /dev/null 2> tbr.err &
pid=$!
stopped $pid tbr.err "train never reached its first checkpoint"
dd if=/dev/zero of=tbr/tb/train/filler bs=4k 2> /dev/null || true
kill -CONT $pid
rc=0; wait $pid || rc=$?
rm tbr/tb/train/filler
[ $rc = 0 ] || { cat tbr.err; echo "FAIL: train with TensorBoard's disk full: exit $rc, want 0"; exit 1; }
[ "$(grep -c "warning: .*tbr/tb/train/events.out.tfevents.*disk full.*no more TensorBoard events" tbr.err)" = 1 ] ||
  { cat tbr.err; echo "FAIL: want one warning naming the event file and the full disk"; exit 1; }
cmp <(strip ref32/log.jsonl) <(strip tbr/log.jsonl) || { echo "FAIL: the log differs from an undisturbed run's"; exit 1; }
"$PYTHON" "$KOE_ROOT/tests/reference/tfevents_decode.py" check tbr tbr/log.jsonl --partial > tbr.decode ||
  { echo "FAIL: the event file written before the disk filled does not decode"; exit 1; }
grep -q "tbr/tb/train: .*up to step \([1-9]\|[12][0-9]\|3[01]\))" tbr.decode ||
  { cat tbr.decode; echo "FAIL: TensorBoard's file did not stop before the last step"; exit 1; }
echo "  train (TensorBoard's disk full): exit 0, one warning; $(grep -o "up to step [0-9]*" tbr.decode | head -1)"
echo "disk_full: ok"

#!/usr/bin/env bash
# prepare_bad_input.sh — `koe prepare` on good audio in many formats mixed with every class of bad
# input (truncated, empty, zero-sample, random bytes, text named .flac, absurd header sizes, too
# long, dangling symlink, a directory named x.wav, duplicate ids, malformed manifest lines, a pipe
# without --allow-pipes): each is rejected with its reason on stderr and in prepare-report.tsv, all
# good files land (16 kHz int16 ones bit-exact vs python3-soundfile), exit 0. Then: all-bad input
# exits 1; an existing corpus is refused without --force; --allow-pipes runs the wav.scp command.
set -euo pipefail
D=$KOE_TMP/prepare_bad
REF="$PYTHON $KOE_ROOT/tests/reference/prepare_inputs.py"
rm -rf "$D" && mkdir -p "$D"
$REF make "$D"

$KOE prepare --out "$D/out" "$D/audio" "$D/extra.scp" "$D/manifest.tsv" 2> "$D/stderr" \
  || { cat "$D/stderr"; echo "FAIL: koe prepare exited $? on mixed input, want 0"; exit 1; }
cat "$D/stderr"
$REF check-bad "$D/out" "$D"
$KOE info "$D/out" > "$D/info"
grep -q "utterances *9" "$D/info" || { cat "$D/info"; echo "FAIL: koe info does not show 9 utterances"; exit 1; }

# Nothing usable: exit 1, nothing indexed, the report still lists why.
set +e
$KOE prepare --out "$D/out-bad" "$D/audio/bad" 2> "$D/stderr-bad"; rc=$?
set -e
[ $rc = 1 ] || { cat "$D/stderr-bad"; echo "FAIL: all-bad input exited $rc, want 1"; exit 1; }
[ ! -e "$D/out-bad/corpus.h5" ] || { echo "FAIL: corpus.h5 written for all-bad input"; exit 1; }
[ "$(ls "$D/out-bad" | grep -c '^shard-' || true)" = 0 ] || { echo "FAIL: shards written for all-bad input"; exit 1; }
[ "$(wc -l < "$D/out-bad/prepare-report.tsv")" = 11 ] || { cat "$D/out-bad/prepare-report.tsv"; echo "FAIL: want 10 rejections"; exit 1; }
grep -q "nothing written" "$D/stderr-bad" || { echo "FAIL: no 'nothing written' message"; exit 1; }

# The corpus is immutable: refused without --force, replaced with it.
set +e
$KOE prepare --out "$D/out" "$D/audio/spk1" 2> "$D/stderr-again"; rc=$?
set -e
[ $rc = 1 ] || { echo "FAIL: overwriting a corpus exited $rc, want 1"; exit 1; }
grep -q "immutable" "$D/stderr-again" || { cat "$D/stderr-again"; echo "FAIL: no message about the existing corpus"; exit 1; }
$KOE info "$D/out" | grep -q "utterances *9" || { echo "FAIL: the refused run changed the corpus"; exit 1; }
$KOE prepare --out "$D/out" --force --lang fi "$D/audio/spk1" 2> "$D/stderr-force"
$KOE info "$D/out" | grep -Eq "^fi +3 " || { $KOE info "$D/out"; echo "FAIL: --force did not replace the corpus"; exit 1; }

# --allow-pipes: the wav.scp command runs and its output equals the file it cats.
$KOE prepare --out "$D/out-pipe" --allow-pipes "$D/extra.scp" 2> "$D/stderr-pipe"
HDF5_PLUGIN_PATH=$HDF5_PLUGIN_PATH $PYTHON - "$D" <<'PY'
import sys, h5py, soundfile as sf, numpy as np
d = sys.argv[1]
f = h5py.File(f"{d}/out-pipe/shard-00000.h5", "r")
ids = [x.decode() for x in f["utt/id"][:]]
assert ids == ["scp1", "scppipe", "spk1/a16"], ids
o, l, a = f["utt/offset"][:], f["utt/length"][:], f["audio"]
ref = sf.read(f"{d}/audio/spk1/b16.flac", dtype="int16")[0]
assert np.array_equal(a[o[1]:o[1] + l[1]], ref), "pipe output differs from the source"
assert f["utt/speaker"][1].decode() == "unknown"
print("pipe: ok")
PY
grep -q "scpdir" "$D/out-pipe/prepare-report.tsv" || grep -q "xdir.wav" "$D/out-pipe/prepare-report.tsv" \
  || { echo "FAIL: pipe run lost the directory rejection"; exit 1; }
# A failing pipe command is a rejection naming its wav.scp line; the other line still lands.
printf 'good %s\nfails cat /nonexistent/koe.wav |\n' "$D/audio/spk1/a16.wav" > "$D/fail.scp"
$KOE prepare --out "$D/out-fail" --allow-pipes "$D/fail.scp" 2> "$D/stderr-fail"
grep -q "fail.scp:2: .*exit status 1" "$D/stderr-fail" || { cat "$D/stderr-fail"; echo "FAIL: no reason naming fail.scp:2"; exit 1; }
grep -q "^$D/fail.scp:2	" "$D/out-fail/prepare-report.tsv" || { echo "FAIL: report lacks fail.scp:2"; exit 1; }
$KOE info "$D/out-fail" | grep -q "utterances *1" || { echo "FAIL: the good wav.scp line did not land"; exit 1; }
echo "prepare_bad_input: ok"

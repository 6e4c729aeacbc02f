#!/usr/bin/env bash
# prepare_mpi.sh — the corpus does not depend on the rank count: the same inputs (good and bad, with
# phone alignments, small shards so that there are several) prepared at 1, 2 and 3 ranks give the
# same shard file names, the same utterances in each (id, lang, speaker, source, samples, alignment
# frames, compared through h5py rather than raw file bytes) and the same prepare-report.tsv.
# h5py reads /audio through our zstd plugin and it equals python3-soundfile's read of every 16 kHz
# int16 source.
set -euo pipefail
D=$KOE_TMP/prepare_mpi
REF="$PYTHON $KOE_ROOT/tests/reference/prepare_inputs.py"
rm -rf "$D" && mkdir -p "$D"
$REF make "$D"
$REF make-ctm "$D/align.ctm"
for np in 1 2 3; do
  mpirun --oversubscribe -np $np "$KOE" prepare --out "$D/out$np" --shard-mb 0.1 --align "$D/align.ctm" \
    "$D/audio" "$D/extra.scp" "$D/manifest.tsv" 2> "$D/stderr$np" \
    || { cat "$D/stderr$np"; echo "FAIL: prepare at $np ranks exited non-zero"; exit 1; }
  (cd "$D/out$np" && ls shard-*.h5) > "$D/shards$np"
  $REF dump "$D/out$np" > "$D/dump$np"
done
cat "$D/stderr3"
n_shards=$(wc -l < "$D/shards1")
[ "$n_shards" -ge 4 ] || { echo "FAIL: only $n_shards shards: the test needs several to split"; exit 1; }
for np in 2 3; do
  diff "$D/shards1" "$D/shards$np" || { echo "FAIL: shard names differ at $np ranks"; exit 1; }
  diff "$D/dump1" "$D/dump$np" || { echo "FAIL: corpus content differs at $np ranks"; exit 1; }
  diff "$D/out1/prepare-report.tsv" "$D/out$np/prepare-report.tsv" || { echo "FAIL: report differs at $np ranks"; exit 1; }
done
[ "$(wc -l < "$D/dump1")" = 9 ] || { cat "$D/dump1"; echo "FAIL: want 9 utterances"; exit 1; }
[ "$(wc -l < "$D/out1/prepare-report.tsv")" = 17 ] || { echo "FAIL: want 16 rejections"; exit 1; }
# Every rank wrote some shards at 3 ranks (shard k is written by rank k % 3) and rank 0 indexed them all.
$KOE info "$D/out3" | grep -q "shards *$n_shards" || { $KOE info "$D/out3"; echo "FAIL: index does not list $n_shards shards"; exit 1; }
grep -q "koe\[2\]: warning: rejected" "$D/stderr3" || { echo "FAIL: rank 2 reported no rejection (decode or probe)"; exit 1; }
cp "$D/stderr3" "$D/stderr"
$REF check-bad "$D/out3" "$D"
$REF check-align "$D/out2"
echo "prepare_mpi: ok ($n_shards shards)"

#!/usr/bin/env bash
# info.sh — `koe info` on a corpus (directory and corpus.h5), a shard, a features file made by
# h5py, and on things that are not koe files (each a clear error naming the file, exit 1); label
# files and checkpoints damaged as training would refuse them are refused; under mpirun only rank 0
# prints.
set -euo pipefail
cd "$KOE_TMP"
mkdir -p info && cd info

"$PYTHON" - <<'PY'
import os, numpy as np, soundfile as sf
rng = np.random.default_rng(9)
for d, n in (("in/fi/x.wav", 32000), ("in/fi/y.wav", 16000), ("in/tr/z.wav", 48000)):
    os.makedirs(os.path.dirname(d), exist_ok=True)
    sf.write(d, (2000 * rng.standard_normal(n)).astype(np.int16), 16000, subtype="PCM_16")
PY
"$KOE" prepare --out corpus --lang-from-dir in 2> /dev/null

expect() { # expect FILE PATTERN: an extended regex the output must match
  grep -Eq -- "$2" "$1" || { echo "--- $1:"; cat "$1"; echo "--- missing: $2"; exit 1; }
}

"$KOE" info corpus > corpus.txt
expect corpus.txt '^format +koe-corpus v2$'
expect corpus.txt '^shards +1$'
expect corpus.txt '^utterances +3$'
expect corpus.txt '^duration +0\.00 h \(6\.0 s\)$'
expect corpus.txt '^sample_rate +16000 Hz$'
expect corpus.txt '^alignments +no'
expect corpus.txt '^settings +koe prepare'
expect corpus.txt '^fi +2 +0\.001 +50\.0%$'
expect corpus.txt '^tr +1 +0\.001 +50\.0%$'
"$KOE" info corpus/corpus.h5 > index.txt
diff <(tail -n +2 corpus.txt) <(tail -n +2 index.txt)

"$KOE" info --ids 2 corpus/shard-00000.h5 > shard.txt
expect shard.txt '^format +koe-corpus-shard v2$'
expect shard.txt '^utterances +3$'
expect shard.txt '^samples +96000$'
expect shard.txt 'raw int16 \(ratio [0-9.]+\)$'
expect shard.txt 'shuffle \+ zstd\(level 3\) \+ fletcher32'
expect shard.txt '^languages +fi \(2\) tr \(1\)$'
expect shard.txt '^fi/x +fi +32000 +2\.00  in/fi/x\.wav$'
expect shard.txt '^\.\.\. 1 more$'

# another koe format: format, version, attributes, datasets with shapes and types
"$PYTHON" - <<'PY'
import h5py, numpy as np
with h5py.File("feats.h5", "w") as f:
    f.attrs["format"] = "koe-features"
    f.attrs["format_version"] = 1
    f.attrs["kind"] = "mfcc"
    f.attrs["frame_rate"] = 100.0
    f["feats"] = np.zeros((598, 39), np.float32)
    f["offset"] = np.array([0, 199, 298, 598], np.int64)
    f["utt_id"] = np.array([b"fi/x", b"fi/y", b"tr/z"], dtype=h5py.string_dtype())
with h5py.File("plain.h5", "w") as f:
    f["x"] = np.arange(3)
PY
"$KOE" info feats.h5 > feats.txt
expect feats.txt '^format +koe-features v1$'
expect feats.txt '^  kind +mfcc$'
expect feats.txt '^  frame_rate +100$'
expect feats.txt '^  /feats +float32 +\[598, 39\]'
expect feats.txt '^  /offset +int64 +\[4\]'
expect feats.txt '^  /utt_id +string +\[3\]'

# not koe files: exit 1 and a message naming the file
fails() { # fails PATTERN ARGS...: koe info ARGS exits 1 and stderr matches PATTERN
  local pat=$1; shift
  set +e; "$KOE" info "$@" > out.txt 2> err.txt; local rc=$?; set -e
  [ $rc = 1 ] || { echo "koe info $* exited $rc, expected 1"; cat out.txt err.txt; exit 1; }
  expect err.txt "$pat"
}
fails 'plain\.h5: .*not a koe file' plain.h5
echo "not hdf5" > text.h5
fails 'text\.h5: not a readable HDF5 file' text.h5
fails 'nothing\.h5: no such file' nothing.h5
head -c 5000 corpus/shard-00000.h5 > cut.h5
fails 'cut\.h5: .*(truncated|corrupt)' cut.h5
mkdir -p broken && cp corpus/corpus.h5 broken/
fails 'broken/shard-00000\.h5: cannot open' broken
fails 'corpus.h5: .*No such file' in
fails 'unknown option' --frobnicate corpus

# label files and checkpoints get training's checks: what koe train or embed refuses, info refuses
# (info said OK to a failed checksum, decreasing offsets, n_classes = 0, a NaN frame rate)
"$KOE" kmeans --corpus corpus --source mfcc --k 2 --out km.h5 2> /dev/null
"$KOE" label --corpus corpus --kmeans km.h5 --name k2 2> /dev/null
L=corpus/labels/k2/shard-00000.h5
"$KOE" info "$L" > labels.txt
expect labels.txt '^format +koe-labels v1$'
damage() { # damage FILE PYTHON: a copy of FILE edited by the python lines (f: the h5py file)
  cp "$1" "$1.good"
  "$PYTHON" -c "import h5py, numpy as np
f = h5py.File('$1', 'r+')
$2
f.close()"
}
restore() { mv "$1.good" "$1"; }
damage "$L" "f.attrs['n_classes'] = np.int64(0)"
fails 'n_classes = 0' "$L"; restore "$L"
damage "$L" "f.attrs['frame_rate'] = np.nan"
fails 'frame_rate = nan' "$L"; restore "$L"
damage "$L" "o = f['offset'][...]; o[1], o[2] = o[2], o[1]; f['offset'][...] = o"
fails 'offset decreases' "$L"; restore "$L"
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" --out ck.h5 model.encoder_layers=1 2> /dev/null
"$KOE" info ck.h5 > ck.txt
expect ck.txt '^format +koe-checkpoint v1$'
damage ck.h5 "w = f['model/masked_spec_embed']; a = w[...]; a[0] += 1; w[...] = a"
fails 'ck\.h5: /model fails its checksum' ck.h5; restore ck.h5
# a shard whose audio chunk is damaged (fletcher32 fails): named with the utterance
S=corpus/shard-00000.h5
cp "$S" "$S.good"
"$PYTHON" - "$S" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    c = f["audio"].id.get_chunk_info(0)
with open(sys.argv[1], "r+b") as g:
    g.seek(c.byte_offset + c.size // 2)
    b = g.read(1)
    g.seek(c.byte_offset + c.size // 2)
    g.write(bytes([b[0] ^ 0x10]))
PY
fails "shard-00000\.h5: cannot read utterance 'fi/x'.*damaged" "$S"; restore "$S"

# under mpirun, one summary
mpirun -np 2 "$KOE" info corpus > mpi.txt
[ "$(grep -c '^utterances' mpi.txt)" = 1 ] || { cat mpi.txt; echo "expected one summary under mpirun"; exit 1; }
echo "info: ok"

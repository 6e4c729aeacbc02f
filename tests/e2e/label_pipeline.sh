#!/usr/bin/env bash
# label_pipeline.sh — HuBERT targets end to end on a 1-minute demo corpus (5 small shards):
# koe kmeans on MFCC (k=20) gives the same centroids at 1 and 2 ranks (to 1e-5 relative), koe label
# gives the same labels at 1 and 2 ranks, koe analyze labels --json gives purities and PNMI in
# range (the same at 2 ranks), and the checks hold: a label set is refused by a corpus it was not
# made for, layer:N k-means needs its checkpoint and refuses another one.
set -euo pipefail
D=$KOE_TMP/label_pipeline
rm -rf "$D" && mkdir -p "$D"
MPI="mpirun --oversubscribe"
"$KOE" synth --out "$D/syn" --langs en --minutes 1 2> /dev/null
"$KOE" prepare --out "$D/corpus" --shard-mb 0.5 --lang-from-dir --align "$D/syn/align.ctm" "$D/syn/wav" 2> /dev/null
[ "$(ls "$D/corpus" | grep -c '^shard-')" -ge 3 ] || { echo "FAIL: want several shards"; exit 1; }

for np in 1 2; do
  $MPI -np $np "$KOE" kmeans --corpus "$D/corpus" --source mfcc --k 20 --out "$D/km$np.h5" 2> "$D/km$np.log" \
    || { cat "$D/km$np.log"; echo "FAIL: kmeans at $np ranks"; exit 1; }
done
grep -q 'iter 1 inertia' "$D/km1.log" || { cat "$D/km1.log"; echo "FAIL: no inertia logged"; exit 1; }
$PYTHON - "$D/km1.h5" "$D/km2.h5" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r") for p in sys.argv[1:3])
ca, cb = a["centroids"][:], b["centroids"][:]
assert ca.shape == (20, 39), ca.shape
err = np.abs(ca - cb).max() / np.abs(ca).max()
print(f"centroids 1 vs 2 ranks: max rel diff {err:.2e}")
assert err <= 1e-5, "FAIL: centroids differ between 1 and 2 ranks"
for k in ("format", "source", "k", "frames", "inertia", "seed"):
    assert k in a.attrs, f"FAIL: KM.h5 lacks attribute {k}"
assert a.attrs["source"] in ("mfcc", b"mfcc") and a.attrs["k"] == 20
PY

$MPI -np 2 "$KOE" label --corpus "$D/corpus" --kmeans "$D/km1.h5" --name km20 2> "$D/label2.log" \
  || { cat "$D/label2.log"; echo "FAIL: label at 2 ranks"; exit 1; }
"$KOE" label --corpus "$D/corpus" --kmeans "$D/km1.h5" --name km20b 2> /dev/null
$PYTHON - "$D/corpus/labels/km20" "$D/corpus/labels/km20b" "$D/km1.h5" <<'PY'
import sys, os, glob, h5py, numpy as np
a, b, km = sys.argv[1:4]
files = sorted(os.path.basename(p) for p in glob.glob(a + "/shard-*.h5"))
assert files == sorted(os.path.basename(p) for p in glob.glob(b + "/shard-*.h5")) and len(files) >= 3, files
n = 0
for f in files:
    x, y = h5py.File(f"{a}/{f}", "r"), h5py.File(f"{b}/{f}", "r")
    assert x.attrs["format"] in ("koe-labels", b"koe-labels") and x.attrs["n_classes"] == 20
    assert x.attrs["frame_rate"] == 100
    assert np.array_equal(x["labels"][:], y["labels"][:]), f"FAIL: {f}: labels differ between 1 and 2 ranks"
    assert np.array_equal(x["offset"][:], y["offset"][:])
    assert x["labels"][:].max() < 20
    n += len(x["labels"])
print(f"labels: {len(files)} shard files, {n} frames, equal at 1 and 2 ranks")
PY

"$KOE" analyze labels --corpus "$D/corpus" --labels km20 --json > "$D/a1.json"
$MPI -np 2 "$KOE" analyze labels --corpus "$D/corpus" --labels km20 --json > "$D/a2.json"
"$KOE" analyze labels --corpus "$D/corpus" --labels km20
cat "$D/a1.json"
diff "$D/a1.json" "$D/a2.json" || { echo "FAIL: analyze differs at 2 ranks"; exit 1; }
$PYTHON - "$D/a1.json" <<'PY'
import sys, json
r = json.load(open(sys.argv[1]))
for k in ("phone_purity", "cluster_purity", "pnmi"):
    assert 0 < r[k] <= 1, f"FAIL: {k} = {r[k]} out of (0, 1]"
# 20 MFCC clusters carry real phone information on clean synthetic speech, far above chance
assert r["pnmi"] > 0.15, f"FAIL: pnmi {r['pnmi']} is too low for MFCC k-means labels"
assert r["frames"] > 5000
PY

# a corpus the label set was not made for: the same audio, other shard boundaries
"$KOE" prepare --out "$D/other" --shard-mb 0.3 --lang-from-dir --align "$D/syn/align.ctm" "$D/syn/wav" 2> /dev/null
mkdir -p "$D/other/labels" && cp -r "$D/corpus/labels/km20" "$D/other/labels/"
if "$KOE" analyze labels --corpus "$D/other" --labels km20 2> "$D/mismatch.err"; then
  echo "FAIL: a label set of another corpus was accepted"; exit 1
fi
grep -q 'another corpus shard\|missing' "$D/mismatch.err" || { cat "$D/mismatch.err"; echo "FAIL: unclear message"; exit 1; }

# layer:N: the checkpoint is part of the labels' provenance
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" --out "$D/ck.h5" 2> /dev/null
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" run.seed=2 --out "$D/ck2.h5" 2> /dev/null
"$KOE" kmeans --corpus "$D/corpus" --source layer:1 --ckpt "$D/ck.h5" --k 8 --sample 0.5 --iters 5 \
  --out "$D/kml.h5" 2> "$D/kml.log" || { cat "$D/kml.log"; echo "FAIL: kmeans on layer 1"; exit 1; }
if "$KOE" label --corpus "$D/corpus" --kmeans "$D/kml.h5" --name l1 2> "$D/noc.err"; then
  echo "FAIL: layer labels without --ckpt"; exit 1
fi
grep -q -- '--ckpt' "$D/noc.err" || { cat "$D/noc.err"; exit 1; }
if "$KOE" label --corpus "$D/corpus" --kmeans "$D/kml.h5" --name l1 --ckpt "$D/ck2.h5" 2> "$D/wrongc.err"; then
  echo "FAIL: layer labels from another checkpoint"; exit 1
fi
grep -q 'checksum' "$D/wrongc.err" || { cat "$D/wrongc.err"; exit 1; }
"$KOE" label --corpus "$D/corpus" --kmeans "$D/kml.h5" --name l1 --ckpt "$D/ck.h5" 2> /dev/null
"$KOE" analyze labels --corpus "$D/corpus" --labels l1 --json | grep -q '"frame_rate":50' \
  || { echo "FAIL: layer labels are not at 50 Hz"; exit 1; }
echo "label_pipeline: ok"

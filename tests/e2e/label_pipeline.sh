#!/usr/bin/env bash
# label_pipeline.sh — HuBERT targets end to end on a 1-minute demo corpus (5 small shards):
# koe kmeans on MFCC (k=20) gives the same centroids at 1 and 2 ranks (to 1e-5 relative), koe label
# gives the same labels at 1 and 2 ranks and in 3 parts (--part I/N, as the tasks of a Slurm job
# array; a bad --part exits 1 with a message), koe analyze labels --json gives purities and PNMI in
# range (the same at 2 ranks and for the 3-part set), and the checks hold: a label set is refused
# by a corpus it was not made for, layer:N k-means needs its checkpoint and refuses another one, and
# a k-means file whose centroids were not all written is refused.
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

# --part I/N (one task of a Slurm job array each): 3 parts run one after another, part 1 (shards
# 1 and 4) on 2 ranks, make the same files as one run; each part writes only its own shards
for p in 0 1 2; do
  np=1; [ $p = 1 ] && np=2
  $MPI -np $np "$KOE" label --corpus "$D/corpus" --kmeans "$D/km1.h5" --name km20p --part $p/3 2> "$D/part$p.log" \
    || { cat "$D/part$p.log"; echo "FAIL: label --part $p/3"; exit 1; }
  if [ $p = 0 ]; then ls "$D/corpus/labels/km20p" > "$D/part0.ls"; fi
done
grep -q 'part 1/3 (2 shards' "$D/part1.log" || { cat "$D/part1.log"; echo "FAIL: the log does not name the part"; exit 1; }
$PYTHON - "$D/corpus/labels/km20b" "$D/corpus/labels/km20p" "$D/part0.ls" <<'PY'
import sys, os, glob, h5py, numpy as np
a, b, ls0 = sys.argv[1:4]
files = sorted(os.path.basename(p) for p in glob.glob(a + "/shard-*.h5"))
assert files == sorted(os.listdir(b)), f"FAIL: 3 parts wrote {sorted(os.listdir(b))}, one run {files}"
part0 = open(ls0).read().split()
want0 = [f for f in files if int(f[len("shard-"):-len(".h5")]) % 3 == 0]
assert part0 == want0, f"FAIL: --part 0/3 wrote {part0}, want the shards s % 3 == 0: {want0}"
for f in files:
    x, y = h5py.File(f"{a}/{f}", "r"), h5py.File(f"{b}/{f}", "r")
    for d in ("labels", "offset"):
        assert np.array_equal(x[d][:], y[d][:]), f"FAIL: {f}: /{d} differs between 3 parts and one run"
    for k in x.attrs:
        assert np.array_equal(x.attrs[k], y.attrs[k]), f"FAIL: {f}: attribute {k} differs"
print(f"labels --part 0/3, 1/3, 2/3: {len(files)} shard files equal to one run ({len(part0)} from part 0)")
PY
"$KOE" analyze labels --corpus "$D/corpus" --labels km20b --json > "$D/ab.json"
"$KOE" analyze labels --corpus "$D/corpus" --labels km20p --json > "$D/ap.json" \
  || { echo "FAIL: analyze cannot read the label set made in 3 parts"; exit 1; }
diff "$D/ab.json" "$D/ap.json" || { echo "FAIL: analyze differs for the label set made in 3 parts"; exit 1; }
for bad in 3/3 1/0 x 1 -1/3 1/3x; do
  rc=0
  "$KOE" label --corpus "$D/corpus" --kmeans "$D/km1.h5" --name km20q --part "$bad" 2> "$D/badpart.err" || rc=$?
  [ $rc = 1 ] || { echo "FAIL: --part $bad exited $rc, want 1"; exit 1; }
  grep -q -- "--part $bad: expected I/N" "$D/badpart.err" || { cat "$D/badpart.err"; echo "FAIL: unclear --part message"; exit 1; }
done
[ ! -e "$D/corpus/labels/km20q" ] || { echo "FAIL: a bad --part wrote labels"; exit 1; }
# a k-means file whose /centroids were never all written (chunked, 2 of 20 rows stored): the rest
# would read as zero centroids; refused, naming the file and what to re-run
$PYTHON - "$D/km1.h5" "$D/kmpart.h5" <<'PY'
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    c = f["centroids"][:]
    del f["centroids"]
    f.create_dataset("centroids", shape=c.shape, chunks=(2, c.shape[1]), dtype="<f4")[:2] = c[:2]
PY
rc=0
"$KOE" label --corpus "$D/corpus" --kmeans "$D/kmpart.h5" --name kmq 2> "$D/kmpart.err" || rc=$?
[ $rc = 1 ] || { cat "$D/kmpart.err"; echo "FAIL: a part-written KM.h5: exit $rc, want 1"; exit 1; }
grep -q "kmpart.h5: /centroids stores 1 of the 10 chunks its 20 x 39 shape needs.*re-run \`koe kmeans\`" "$D/kmpart.err" \
  || { cat "$D/kmpart.err"; echo "FAIL: unclear message for a part-written KM.h5"; exit 1; }
[ ! -e "$D/corpus/labels/kmq" ] || { echo "FAIL: a part-written KM.h5 made labels"; exit 1; }

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

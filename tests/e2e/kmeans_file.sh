#!/usr/bin/env bash
# kmeans_file.sh — koe kmeans --source file:FEATS.h5 (a koe-features file streamed a block at a time):
#   - koe embed, which writes such files, writes the same file at 1 and 2 ranks (--layer 1 and all);
#   - on the layer-1 features `koe embed --layer 1` wrote, it gives exactly the centroids of
#     --source layer:1 on the same checkpoint (same frames, same order, same blocks), carries the
#     layer source and the checkpoint's checksum, so `koe label` takes it and gives the same labels;
#   - on the fbank features `koe features --kind fbank` wrote, the same: exactly the centroids of
#     --source fbank, and the same labels from either k-means file (koe label computes fbank too);
#   - its inertia over all frames is <= 1.01x the anchor's on the same features
#     (tests/reference/kmeans_vs_anchor.sh);
#   - 1 and 2 ranks give the same centroids to 1e-5 relative: the Lloyd sums are accumulated in
#     double per rank and summed once, so they differ only by reassociation (a float rounding of a
#     centroid flips rarely), as in label_pipeline.sh;
#   - a file of a kind koe label cannot compute (hand-made) is clustered, with a warning that names
#     the kind and says koe label will refuse the result;
#   - clear errors (exit 1, naming the file or the flag): a missing file, a file of another format,
#     a file without HDF5's checksums on its structure (h5py's default; the message says how to write one),
#     a dim attribute that disagrees with /feats, an /offset claiming 2^40 entries (refused before
#     anything is allocated), a /feats that does not store every row its shape claims (a chunked one
#     half written, as by a killed writer; a contiguous one claiming 2^40 rows with nothing stored;
#     a virtual one, whose values live in other files),
#     a NaN frame_rate, a --layer all file, a NaN (row
#     and utterance named), k above the frame count, --corpus given with file:, mfcc without --corpus.
set -euo pipefail
D=$KOE_TMP/kmeans_file
rm -rf "$D" && mkdir -p "$D"
cd "$D"
MPI="mpirun --oversubscribe"
"$KOE" synth --out syn --langs en --minutes 1 --seed 5 2> /dev/null
"$KOE" prepare --out corpus --lang-from-dir syn/wav 2> /dev/null
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" --out ck.h5 2> /dev/null
"$KOE" embed --ckpt ck.h5 --layer 1 --corpus corpus --out l1.h5 2> /dev/null
# koe embed under 2 ranks (each its share of the utterances, rows written collectively): the same
# file as 1 rank's, one layer and all of them
"$KOE" embed --ckpt ck.h5 --layer all --corpus corpus --out all1.h5 2> /dev/null
mpirun --oversubscribe -np 2 "$KOE" embed --ckpt ck.h5 --layer 1 --corpus corpus --out l1_np2.h5 2> embed2.log \
  || { cat embed2.log; echo "FAIL: koe embed at 2 ranks"; exit 1; }
mpirun --oversubscribe -np 2 "$KOE" embed --ckpt ck.h5 --layer all --corpus corpus --out all2.h5 2>> embed2.log \
  || { cat embed2.log; echo "FAIL: koe embed --layer all at 2 ranks"; exit 1; }
for p in "l1 l1_np2" "all1 all2"; do
  set -- $p
  diff <(h5dump "$1.h5" | tail -n +2) <(h5dump "$2.h5" | tail -n +2) > /dev/null \
    || { echo "FAIL: koe embed at 2 ranks: $2.h5 differs from 1 rank's $1.h5"; exit 1; }
done
grep -q "over 2 rank(s)" embed2.log || { cat embed2.log; echo "FAIL: koe embed did not run on 2 ranks"; exit 1; }
echo "koe embed at 2 ranks: the same files as at 1 rank (--layer 1, --layer all)"
KM="--k 12 --iters 8 --seed 3"

"$KOE" kmeans --corpus corpus --source layer:1 --ckpt ck.h5 $KM --out km_layer.h5 2> km_layer.log \
  || { cat km_layer.log; echo "FAIL: kmeans layer:1"; exit 1; }
for np in 1 2; do
  $MPI -np $np "$KOE" kmeans --source file:l1.h5 $KM --out km_file$np.h5 2> km_file$np.log \
    || { cat km_file$np.log; echo "FAIL: kmeans file: at $np ranks"; exit 1; }
done
$PYTHON - <<'PY'
import h5py, numpy as np
lay, f1, f2 = (h5py.File(p, "r") for p in ("km_layer.h5", "km_file1.h5", "km_file2.h5"))
s = lambda v: v.decode() if isinstance(v, bytes) else v
cl, c1, c2 = lay["centroids"][:], f1["centroids"][:], f2["centroids"][:]
assert np.array_equal(cl, c1), f"FAIL: file: and layer: centroids differ (max {np.abs(cl - c1).max():.3g})"
print("file: and layer:1 centroids: identical")
for k in ("source", "ckpt_checksum", "frame_rate", "frames", "iterations"):
    assert s(lay.attrs[k]) == s(f1.attrs[k]), f"FAIL: attribute {k}: {lay.attrs[k]} vs {f1.attrs[k]}"
assert s(f1.attrs["source"]) == "layer:1" and len(s(f1.attrs["ckpt_checksum"])) == 16
assert s(f1.attrs["features"]).endswith("l1.h5") and s(lay.attrs["features"]) == ""
rel = np.abs(c1 - c2).max() / np.abs(c1).max()
print(f"file: 1 vs 2 ranks: max rel diff {rel:.2e}" + (" (identical)" if rel == 0 else ""))
assert rel <= 1e-5, "FAIL: centroids differ between 1 and 2 ranks"
PY
"$KOE" label --corpus corpus --kmeans km_file1.h5 --ckpt ck.h5 --name from_file 2> /dev/null
"$KOE" label --corpus corpus --kmeans km_layer.h5 --ckpt ck.h5 --name from_layer 2> /dev/null
for f in corpus/labels/from_file/*.h5; do
  cmp <(h5dump -d /labels "$f" | tail -n +3) <(h5dump -d /labels "corpus/labels/from_layer/$(basename "$f")" | tail -n +3) \
    || { echo "FAIL: labels from the file's k-means differ from the layer's"; exit 1; }
done

bash "$KOE_ROOT/tests/reference/kmeans_vs_anchor.sh" l1.h5 km_file1.h5 12

# fbank: from the file koe features writes, and computed from the corpus
"$KOE" features --corpus corpus --kind fbank --out fb.h5 2> /dev/null
"$KOE" kmeans --source file:fb.h5 $KM --out km_fbfile.h5 2> km_fbfile.log || { cat km_fbfile.log; echo "FAIL: kmeans file:fb.h5"; exit 1; }
"$KOE" kmeans --corpus corpus --source fbank $KM --out km_fb.h5 2> km_fb.log || { cat km_fb.log; echo "FAIL: kmeans fbank"; exit 1; }
$PYTHON - <<'PY'
import h5py, numpy as np
a, b = h5py.File("km_fbfile.h5", "r"), h5py.File("km_fb.h5", "r")
s = lambda v: v.decode() if isinstance(v, bytes) else v
assert np.array_equal(a["centroids"][:], b["centroids"][:]), "FAIL: file:fb.h5 and fbank centroids differ"
for k in ("source", "ckpt_checksum", "frame_rate", "frames", "iterations"):
    assert s(a.attrs[k]) == s(b.attrs[k]), f"FAIL: attribute {k}: {a.attrs[k]} vs {b.attrs[k]}"
assert s(a.attrs["source"]) == "fbank" and a["centroids"].shape[1] == 80 and a.attrs["frame_rate"] == 100
print("file:fb.h5 and fbank centroids: identical, source fbank")
PY
"$KOE" label --corpus corpus --kmeans km_fbfile.h5 --name fb_file 2> /dev/null
"$KOE" label --corpus corpus --kmeans km_fb.h5 --name fb 2> /dev/null
for f in corpus/labels/fb_file/*.h5; do
  cmp <(h5dump -d /labels "$f" | tail -n +3) <(h5dump -d /labels "corpus/labels/fb/$(basename "$f")" | tail -n +3) \
    || { echo "FAIL: fbank labels from the file's k-means differ from the corpus's"; exit 1; }
done
echo "fbank labels: the same from either k-means file"

# errors
"$PYTHON" "$KOE_ROOT/tests/bench/kmeans_feats.py" --out small.h5 --frames 600 --dim 16 > /dev/null
"$PYTHON" "$KOE_ROOT/tests/bench/kmeans_feats.py" --out baddim.h5 --frames 600 --dim 16 --dim-attr 20 > /dev/null
"$PYTHON" "$KOE_ROOT/tests/bench/kmeans_feats.py" --out nan.h5 --frames 600 --dim 16 --nan-row 400 > /dev/null
$PYTHON - <<'PY' # small.h5 as h5py writes by default: superblock 0, no checksums on its structure
import h5py
with h5py.File("small.h5", "r") as a, h5py.File("nosum.h5", "w") as b:
    for k in a: a.copy(k, b)
    for k, v in a.attrs.items(): b.attrs[k] = v
PY
cp small.h5 hugeoff.h5 # a damaged dataspace: /offset claims 2^40 entries (chunked, none stored)
$PYTHON -c "
import h5py
with h5py.File('hugeoff.h5', 'a') as f:
    del f['offset']
    f.create_dataset('offset', shape=(2**40,), chunks=(1024,), dtype='<i8')"
cp small.h5 partial.h5 # a writer killed while filling a preallocated chunked /feats: 3 of its 6 chunks
$PYTHON -c "
import h5py
with h5py.File('partial.h5', 'a') as f:
    x = f['feats'][:]
    del f['feats']
    f.create_dataset('feats', shape=x.shape, chunks=(100, 16), dtype='<f4')[:300] = x[:300]"
cp small.h5 hugefeats.h5 # a lying shape: /feats claims 2^40 rows (contiguous, nothing stored)
$PYTHON -c "
import h5py, numpy as np
with h5py.File('hugefeats.h5', 'a') as f:
    del f['feats'], f['offset']
    f.create_dataset('feats', shape=(2**40, 16), dtype='<f4')
    f['offset'] = np.array([0, 2**39, 2**40], dtype='<i8')"
cp small.h5 virt.h5 # a virtual /feats (h5py.VirtualLayout): its values in another file
$PYTHON -c "
import h5py
with h5py.File('small.h5', 'r') as a, h5py.File('src.h5', 'w', libver=('v110', 'v110')) as s:
    s['x'] = a['feats'][:]
with h5py.File('virt.h5', 'a') as f:
    shape = f['feats'].shape
    del f['feats']
    lay = h5py.VirtualLayout(shape=shape, dtype='<f4')
    lay[:] = h5py.VirtualSource('src.h5', 'x', shape=shape)
    f.create_virtual_dataset('feats', lay)"
cp small.h5 badrate.h5
$PYTHON -c "import h5py; h5py.File('badrate.h5', 'a').attrs['frame_rate'] = float('nan')"
"$KOE" embed --ckpt ck.h5 --layer all --corpus corpus --out all.h5 2> /dev/null
expect_fail() { # expect_fail PATTERN ARGS...: koe kmeans ARGS exits 1, its message matches PATTERN, no KM.h5
  local pat=$1 rc=0
  shift
  "$KOE" kmeans "$@" --out err_km.h5 > /dev/null 2> err.txt || rc=$?
  [ $rc = 1 ] || { cat err.txt; echo "FAIL: koe kmeans $*: exit $rc, expected 1"; exit 1; }
  grep -q -- "$pat" err.txt || { cat err.txt; echo "FAIL: koe kmeans $*: message lacks '$pat'"; exit 1; }
  [ ! -e err_km.h5 ] || { echo "FAIL: koe kmeans $*: wrote a KM.h5"; exit 1; }
  echo "ok: $(head -c 300 err.txt)"
}
expect_fail "nothere.h5: cannot read: No such file" --source file:nothere.h5 --k 4
expect_fail "km_layer.h5: is a 'koe-kmeans' file, expected 'koe-features'" --source file:km_layer.h5 --k 4
expect_fail "nosum.h5: written without checksums on the file's structure (HDF5 superblock version 0.*libver=(\"v110\", \"v110\")" --source file:nosum.h5 --k 4
expect_fail "baddim.h5: /feats has 16 columns but the file's dim attribute says 20" --source file:baddim.h5 --k 4
expect_fail "hugeoff.h5: 'offset' claims 1099511627776 entries, more than the 256 MB koe reads at once" --source file:hugeoff.h5 --k 4
expect_fail "partial.h5: /feats stores 3 of the 6 chunks its 600 x 16 shape needs: values were never written (a writer stopped early, or a damaged file); re-run the command that wrote it" --source file:partial.h5 --k 4
expect_fail "hugefeats.h5: /feats stores 0 of the 70368744177664 bytes its 1099511627776 x 16 shape needs" --source file:hugefeats.h5 --k 4
expect_fail "virt.h5: /feats is a virtual dataset: its values live in other files" --source file:virt.h5 --k 4
expect_fail "badrate.h5: frame_rate = nan is not a frame rate" --source file:badrate.h5 --k 4
expect_fail "all.h5: /feats holds every layer" --source file:all.h5 --k 4
expect_fail "nan.h5: /feats row 400 (utterance 1) has a non-finite value" --source file:nan.h5 --k 4
expect_fail "only 600 frames in 2 utterances" --source file:small.h5 --k 601 --init-sample 1000
expect_fail "init sample would hold 500 frames (--init-sample 500" --source file:small.h5 --k 501 --init-sample 500
expect_fail "drop --corpus" --source file:small.h5 --corpus corpus --k 4
expect_fail "needs --corpus DIR" --source mfcc --k 4
# a hand-made kind (kmeans_feats.py writes 'synthetic'): clustered, with a warning
"$KOE" kmeans --source file:small.h5 --k 4 --out syn_km.h5 2> syn.txt || { cat syn.txt; echo "FAIL: kmeans file:small.h5"; exit 1; }
grep -q "small.h5: kind 'synthetic': koe label cannot compute these features from a corpus, so it will refuse syn_km.h5" syn.txt \
  || { cat syn.txt; echo "FAIL: no warning for a kind koe label cannot compute"; exit 1; }
! grep -q "warning" km_file1.log km_fbfile.log || { echo "FAIL: a warning for a file koe wrote"; exit 1; }
echo "ok: $(grep warning syn.txt)"
echo "kmeans_file: ok"

#!/usr/bin/env python3
"""Compare koe features with the torchaudio reference, per dimension.

  python3 compare_features.py OURS.h5 REF.h5 [--utt ID] [--rtol 1e-3]

OURS.h5: a `koe features` file (/feats, /offset, /utt_id); --utt picks one utterance (default: the
only one). REF.h5: ../shared/anchors/kaldi_features.py --dump (/feats of one utterance).
Pass when, for every dimension d, max_t |ours - ref| <= rtol * (max_t ref - min_t ref).
Prints the worst dimension (error / range); exits 1 on failure or a shape mismatch.
"""
import argparse, sys
import h5py, numpy as np

p = argparse.ArgumentParser()
p.add_argument("ours")
p.add_argument("ref")
p.add_argument("--utt")
p.add_argument("--rtol", type=float, default=1e-3)
a = p.parse_args()
with h5py.File(a.ours, "r") as h:
    ids = [s.decode() if isinstance(s, bytes) else s for s in h["utt_id"][:]]
    if a.utt is None:
        if len(ids) != 1:
            sys.exit(f"{a.ours}: {len(ids)} utterances; pick one with --utt")
        i = 0
    else:
        if a.utt not in ids:
            sys.exit(f"{a.ours}: no utterance {a.utt!r}")
        i = ids.index(a.utt)
    off = h["offset"][:]
    ours = h["feats"][off[i]:off[i + 1]]
with h5py.File(a.ref, "r") as h:
    ref = h["feats"][:]
if ours.shape != ref.shape:
    sys.exit(f"shape mismatch: ours {ours.shape}, reference {ref.shape}")
err = np.abs(ours.astype(np.float64) - ref).max(axis=0)
rng = ref.max(axis=0) - ref.min(axis=0)
rel = err / np.maximum(rng, 1e-30)
d = int(np.argmax(rel))
ok = bool(np.all(err <= a.rtol * rng))
print(f"{ref.shape[0]} frames x {ref.shape[1]} dims; worst dim {d}: max|diff|={err[d]:.3g} "
      f"range={rng[d]:.3g} ratio={rel[d]:.3g} (limit {a.rtol:g}); max|diff| over all dims {err.max():.3g}")
sys.exit(0 if ok else 1)

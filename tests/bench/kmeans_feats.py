#!/usr/bin/env python3
"""Synthetic stand-in for HuBERT layer features, written as a koe-features file (data/README.md,
Features) for tests/bench/kmeans_l.sh and tests/e2e/kmeans_file.sh.

  kmeans_feats.py --out FEATS.h5 --frames N --dim D [--seed S] [--dim-attr D2] [--nan-row R]

Frames come in utterances of 150..750 frames; inside an utterance they run through "phones"
(segments of 3..12 frames) drawn from a Zipf-weighted inventory of 4 * 256 components whose means
lie near a 48-dimensional subspace, plus speaker offsets, correlated (rank-96) and isotropic noise:
clustered but overlapping, anisotropic and unevenly populated, as layer features are; no cluster
count is planted exactly. Deterministic given the seed. --dim-attr and --nan-row write a damaged
file for the error tests.
"""
import argparse
import os

import h5py
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--frames", type=int, required=True)
p.add_argument("--dim", type=int, default=768)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--dim-attr", type=int, help="write this dim attribute instead (a damaged file)")
p.add_argument("--nan-row", type=int, help="put a NaN in this row (a damaged file)")
a = p.parse_args()

rng = np.random.default_rng(a.seed)
D = a.dim
n_comp = 1024
basis = rng.standard_normal((48, D)).astype(np.float32) / np.sqrt(48)
means = (rng.standard_normal((n_comp, 48)).astype(np.float32) * 3.0) @ basis
means += 0.4 * rng.standard_normal((n_comp, D)).astype(np.float32)
weights = 1.0 / np.arange(1, n_comp + 1) ** 0.8
weights /= weights.sum()
noise_basis = rng.standard_normal((96, D)).astype(np.float32) / np.sqrt(96)

lengths = []
left = a.frames
while left > 0:
    n = min(left, int(rng.integers(150, 751)))
    lengths.append(n)
    left -= n
offset = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

with h5py.File(a.out + ".tmp", "w", libver=("v110", "v110")) as f:  # checksummed, as koe reads features files
    feats = f.create_dataset("feats", (a.frames, D), dtype="<f4")
    for u, n in enumerate(lengths):
        speaker = 0.5 * rng.standard_normal(D).astype(np.float32)
        comp = np.empty(n, dtype=np.int64)
        i = 0
        while i < n:
            seg = int(rng.integers(3, 13))
            comp[i:i + seg] = rng.choice(n_comp, p=weights)
            i += seg
        x = means[comp] + speaker
        x += rng.standard_normal((n, 96)).astype(np.float32) @ noise_basis
        x += 0.3 * rng.standard_normal((n, D)).astype(np.float32)
        feats[offset[u]:offset[u + 1]] = x
    if a.nan_row is not None:
        row = feats[a.nan_row]
        row[D // 2] = np.nan
        feats[a.nan_row] = row
    f.create_dataset("offset", data=offset)
    f.create_dataset("utt_id", data=np.array([f"utt{u:06d}" for u in range(len(lengths))], dtype=object),
                     dtype=h5py.string_dtype())
    f.attrs["format"] = "koe-features"
    f.attrs["format_version"] = np.int64(1)
    f.attrs["kind"] = "synthetic"
    f.attrs["frame_rate"] = 50.0
    f.attrs["dim"] = np.int64(a.dim_attr if a.dim_attr is not None else D)
os.replace(a.out + ".tmp", a.out)
print(f"frames={a.frames} dim={D} utterances={len(lengths)}")

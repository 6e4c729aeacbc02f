#!/usr/bin/env python3
"""Inertia of a koe k-means file over every frame of a features file, computed the way
../shared/anchors/sklearn_kmeans.py scores scikit-learn's model (sum over frames of the squared
distance to the nearest centroid, in float64), so the two numbers compare directly.

  kmeans_inertia.py --feats FEATS.h5 --kmeans KM.h5      prints `frames=N k=K inertia=X per_frame=Y`
"""
import argparse
import h5py
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--feats", required=True)
p.add_argument("--kmeans", required=True)
a = p.parse_args()
x = np.asarray(h5py.File(a.feats, "r")["feats"], dtype=np.float64)
km = h5py.File(a.kmeans, "r")
assert km.attrs["format"] in (b"koe-kmeans", "koe-kmeans"), "not a koe k-means file"
c = np.asarray(km["centroids"], dtype=np.float64)
assert c.shape[1] == x.shape[1], f"dim {c.shape[1]} != features dim {x.shape[1]}"
cn = (c * c).sum(1)
total = 0.0
for i in range(0, len(x), 65536):
    b = x[i:i + 65536]
    d = (b * b).sum(1)[:, None] - 2 * b @ c.T + cn[None, :]
    total += np.maximum(d.min(1), 0).sum()
print(f"frames={len(x)} k={len(c)} inertia={total:.6g} per_frame={total/len(x):.6g}")

#!/usr/bin/env python3
"""Two `koe features` files hold exactly the same thing: every dataset bit-identical, every
attribute equal except `corpus` (the path given on the command line). Exits 1 naming the first difference.

  python3 features_equal.py A.h5 B.h5
"""
import sys
import h5py, numpy as np

a, b = sys.argv[1], sys.argv[2]
with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
    if sorted(fa.keys()) != sorted(fb.keys()):
        sys.exit(f"datasets differ: {sorted(fa.keys())} vs {sorted(fb.keys())}")
    for k in fa.keys():
        x, y = fa[k][()], fb[k][()]
        if x.dtype != y.dtype or x.shape != y.shape:
            sys.exit(f"/{k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
        if x.dtype.kind == "f":
            same = np.array_equal(x.view(np.uint32), y.view(np.uint32))
        else:
            same = np.array_equal(x, y)
        if not same:
            sys.exit(f"/{k}: contents differ")
    keys = set(fa.attrs.keys()) | set(fb.attrs.keys())
    for k in sorted(keys - {"corpus"}):
        if k not in fa.attrs or k not in fb.attrs or fa.attrs[k] != fb.attrs[k]:
            sys.exit(f"attribute {k}: {fa.attrs.get(k)!r} vs {fb.attrs.get(k)!r}")
print(f"{a} == {b}")

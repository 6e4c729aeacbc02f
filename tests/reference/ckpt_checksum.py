#!/usr/bin/env python3
"""ckpt_checksum.py — the /model checksum of a koe checkpoint (data/checkpoint.c, tensor_sum), for
tests that write or edit checkpoints outside koe: model_ref.py's reference files, and a tensor
changed on purpose (train_errors.sh's NaN). koe refuses a /model group without its checksum.

  ckpt_checksum.py FILE.h5   recomputes /model's checksum attribute in place
"""
import sys

import h5py
import numpy as np

M64 = (1 << 64) - 1


def _mix(x):  # core/rng.h koe_hash64 (splitmix64 finaliser), elementwise on uint64
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _fnv(name):  # FNV-1a 64 of the tensor's name
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def model_checksum(group):
    """16 hex digits: the additive checksum of every tensor in an h5py /model group."""
    total = 0
    with np.errstate(over="ignore"):
        for name, ds in group.items():
            bits = np.ascontiguousarray(ds[...], dtype="<f4").ravel().view("<u4").astype(np.uint64)
            first = np.uint64(_fnv(name) >> 2)
            pos = np.arange(bits.size, dtype=np.uint64) + first + np.uint64(0x632BE59BD9B4E019)
            total = (total + int(_mix(_mix(pos) ^ bits).sum(dtype=np.uint64))) & M64
    return "%016x" % total


if __name__ == "__main__":
    with h5py.File(sys.argv[1], "r+") as f:
        f["model"].attrs["checksum"] = model_checksum(f["model"])

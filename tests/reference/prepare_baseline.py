#!/usr/bin/python3
"""prepare_baseline.py — the work of `koe prepare` done with the usual Python stack, for the benchmark:
python3-soundfile decode, channel mean, torchaudio.functional.resample to 16 kHz (its default
windowed-sinc filter), round to int16, h5py write with shuffle + koe's zstd plugin (filter 32015,
HDF5_PLUGIN_PATH) + fletcher32. One thread. Prints hours_per_minute=X.

usage: prepare_baseline.py OUT.h5 FILE...
"""
import sys
import time

import h5py
import numpy as np
import soundfile as sf
import torch
import torchaudio

torch.set_num_threads(1)
out, files = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
samples = 0
with h5py.File(out, "w") as f:
    d = f.create_dataset("audio", (0,), maxshape=(None,), dtype="int16", chunks=(1 << 18,), shuffle=True,
                         compression=32015, compression_opts=(3,), fletcher32=True)
    for p in sorted(files):
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        x = torch.from_numpy(x.mean(axis=1))
        if sr != 16000:
            x = torchaudio.functional.resample(x, sr, 16000)
        y = np.clip(np.rint(x.numpy() * 32768.0), -32768, 32767).astype(np.int16)
        d.resize((samples + len(y),))
        d[samples:] = y
        samples += len(y)
dt = time.perf_counter() - t0
print(f"hours={samples / 16000 / 3600:.4f} seconds={dt:.3f} hours_per_minute={samples / 16000 / 3600 / (dt / 60):.2f}")

#!/usr/bin/env python3
"""Real speech for the feature parity tests: espeak-ng (22050 Hz) -> torchaudio resample -> 16 kHz int16.

  python3 speech_wav.py OUT.wav [--voice en] [--text "..."] [--silence 0.3]

--silence S pads S seconds of digital silence at both ends, so the log floor is exercised too.
Needs the espeak-ng command line tool, python3-torchaudio and python3-soundfile (Debian).
"""
import argparse, os, subprocess, tempfile
import numpy as np, soundfile, torch, torchaudio

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--voice", default="en")
p.add_argument("--text", default="The quick brown fox jumps over the lazy dog, and then it runs "
               "back home through the tall grass before the evening rain begins.")
p.add_argument("--silence", type=float, default=0.3)
a = p.parse_args()
with tempfile.TemporaryDirectory() as d:
    raw = os.path.join(d, "espeak.wav")
    subprocess.run(["espeak-ng", "-v", a.voice, "-w", raw, a.text], check=True)
    x, sr = soundfile.read(raw, dtype="float32")
if x.ndim > 1:
    x = x.mean(axis=1)
y = torchaudio.functional.resample(torch.from_numpy(x), sr, 16000).numpy()
pad = np.zeros(int(a.silence * 16000), dtype=np.float32)
y = np.concatenate([pad, y, pad])
pcm = np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)
soundfile.write(a.out, pcm, 16000, subtype="PCM_16")
print(f"{a.out}: {len(pcm)} samples at 16 kHz ({len(pcm) / 16000:.2f} s)")

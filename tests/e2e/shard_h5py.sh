#!/usr/bin/env bash
# shard_h5py.sh — a shard written by `koe prepare` is plain HDF5 that other tools read: h5py (with
# HDF5_PLUGIN_PATH at our zstd plugin) returns exactly the int16 samples python3-soundfile reads
# from the sources, the tables and attributes are as data/README.md says (strings fixed-length, every
# table with fletcher32, /utt/checksum each utterance's word-wise FNV-1a 64 as shard.h defines it,
# computed here independently), and h5dump decodes /audio. Also: a flipped byte inside a compressed chunk makes h5py fail (fletcher32), not return
# garbage.
set -euo pipefail
cd "$KOE_TMP"
mkdir -p h5py && cd h5py

# 16 kHz int16 sources (so the corpus must hold them bit-exactly), one longer than a chunk.
"$PYTHON" - <<'PY'
import os, numpy as np, soundfile as sf
rng = np.random.default_rng(5)
def speech(n):
    t = np.arange(n) / 16000
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t)
    x = 4000 * np.sin(2 * np.pi * np.cumsum(f0) / 16000) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return np.clip(x + 300 * rng.standard_normal(n), -32768, 32767).astype(np.int16)
for d in ("in/en", "in/sw"):
    os.makedirs(d, exist_ok=True)
sf.write("in/en/a.wav", speech(48000), 16000, subtype="PCM_16")
sf.write("in/en/long.flac", speech(200000), 16000, subtype="PCM_16")
sf.write("in/sw/b.wav", speech(7), 16000, subtype="PCM_16")
sf.write("in/sw/c.wav", speech(70001), 16000, subtype="PCM_16")
PY
"$KOE" prepare --out corpus --lang-from-dir in

"$PYTHON" - <<'PY'
import os, h5py, numpy as np, soundfile as sf
assert os.environ.get("HDF5_PLUGIN_PATH"), "HDF5_PLUGIN_PATH must point at build/hdf5-plugins"
f = h5py.File("corpus/shard-00000.h5", "r")
assert f.attrs["format"] in (b"koe-corpus-shard", "koe-corpus-shard"), f.attrs["format"]
assert f.attrs["format_version"] == 2 and f.attrs["sample_rate"] == 16000
for name in ("utt/id", "utt/lang", "utt/speaker", "utt/source"):
    assert f[name].dtype.kind == "S", (name, f[name].dtype)  # fixed-length: no global heap
for name in ("utt/id", "utt/offset", "utt/length", "utt/checksum"):
    assert f[name].fletcher32, name
audio = f["audio"]
assert audio.dtype == np.int16 and audio.ndim == 1
assert audio.chunks is not None and audio.fletcher32 and audio.shuffle
assert "32015" in audio._filters, audio._filters
ids = [s.decode() for s in f["utt/id"][:]]
src = [s.decode() for s in f["utt/source"][:]]
lang = [s.decode() for s in f["utt/lang"][:]]
off, length = f["utt/offset"][:], f["utt/length"][:]
n = len(ids)
assert n == 4 and f.attrs["n_utts"] == n, (ids, f.attrs["n_utts"])
assert sorted(ids) == ["en/a", "en/long", "sw/b", "sw/c"], ids
assert len(src) == len(lang) == len(off) == len(length) == n
assert f.attrs["samples"] == audio.shape[0] == length.sum()
for i in range(n):
    ref, sr = sf.read(src[i], dtype="int16")
    assert sr == 16000
    got = audio[off[i]:off[i] + length[i]]
    assert got.shape == ref.shape and np.array_equal(got, ref), f"{ids[i]}: samples differ from soundfile"
    assert lang[i] == ids[i].split("/")[0]
    raw = ref.astype("<i2").tobytes()
    raw += bytes(-len(raw) % 8)
    h = 0xcbf29ce484222325
    for word in np.frombuffer(raw, "<u8").tolist():
        h = ((h ^ word) * 0x100000001b3) & 0xffffffffffffffff
    assert int(f["utt/checksum"][i]) == h, f"{ids[i]}: /utt/checksum {int(f['utt/checksum'][i]):x}, FNV-1a {h:x}"
# a crop across a chunk boundary
i = ids.index("en/long")
ref, _ = sf.read(src[i], dtype="int16")
assert np.array_equal(audio[off[i] + 60000:off[i] + 140000], ref[60000:140000])
print("h5py: %d utterances, %d samples equal to soundfile's" % (n, audio.shape[0]))

idx = h5py.File("corpus/corpus.h5", "r")
assert idx.attrs["format"] in (b"koe-corpus", "koe-corpus") and idx.attrs["format_version"] == 2
assert [s.decode() for s in idx["shards"][:]] == ["shard-00000.h5"]
assert list(idx["shard_utts"][:]) == [4] and idx.attrs["n_utts"] == 4
assert [s.decode() for s in idx["langs"][:]] == ["en", "sw"]
assert list(idx["lang_utts"][:]) == [2, 2]
assert abs(idx["lang_hours"][0] - 248000 / 16000 / 3600) < 1e-12
PY

# h5dump (hdf5-tools) decodes /audio through the plugin
h5dump -d /audio -s 0 -c 16 corpus/shard-00000.h5 > dump.txt
grep -q 'DATA {' dump.txt
first=$("$PYTHON" -c "
import h5py; print(int(h5py.File('corpus/shard-00000.h5','r')['audio'][0]))")
grep -Eq "\(0\): $first," dump.txt || { cat dump.txt; echo "h5dump shows another first sample than h5py ($first)"; exit 1; }

# a flipped byte in the middle of the first compressed chunk: h5py refuses to read it
cp corpus/shard-00000.h5 flipped.h5
"$PYTHON" - <<'PY'
import h5py, numpy as np
with h5py.File("flipped.h5", "r") as f:
    info = f["audio"].id.get_chunk_info(0)
with open("flipped.h5", "r+b") as fp:
    fp.seek(info.byte_offset + info.size // 2)
    b = fp.read(1)
    fp.seek(info.byte_offset + info.size // 2)
    fp.write(bytes([b[0] ^ 0x40]))
with h5py.File("flipped.h5", "r") as f:
    try:
        f["audio"][:1000]
    except OSError as e:
        print("h5py refused the damaged chunk:", str(e).splitlines()[0])
    else:
        raise SystemExit("a damaged chunk was read without an error")
PY
echo "shard_h5py: ok"

#!/usr/bin/python3
"""prepare_inputs.py — inputs and checks for the `koe prepare` end-to-end tests.

  make DIR              good audio in many formats plus one file of every bad class, a wav.scp and a
                        fairseq manifest (see EXPECT_REJECT / EXPECT_IDS for what koe must make of them)
  make-big DIR N SECS   N files of SECS seconds (half 16 kHz int16, half 44.1 kHz float) for the kill
                        test and the benchmark
  check-bad OUT DIR     the report and stderr name every bad input with its reason, the corpus holds
                        exactly the good ids, 16 kHz int16 sources equal bit for bit (python3-soundfile)
  dump OUT              canonical listing of a corpus: per shard file, per utterance id, lang, speaker,
                        source, length and the sha256 of its samples (compare across rank counts)
  make-ctm FILE         phone alignments for two of make's utterances (and one unknown utterance)
  check-align OUT       /align in every shard follows that CTM
  check-shards OUT      every shard-*.h5 in OUT opens and is consistent (for the kill test)

Reads shards with h5py; HDF5_PLUGIN_PATH must point at koe's zstd plugin.
"""
import glob
import hashlib
import os
import struct
import sys

import h5py
import numpy as np
import soundfile as sf

SR = 16000


def sine(n, rate, f, amp=0.3, phase=0.0):
    return amp * np.sin(2 * np.pi * f * np.arange(n) / rate + phase)


def make(d):
    rng = np.random.default_rng(1234)
    a = os.path.join(d, "audio")
    for sub in ("spk1", "spk2", "spk3", "bad", "empty-dir"):
        os.makedirs(os.path.join(a, sub), exist_ok=True)
    i16 = lambda n: (rng.standard_normal(n) * 4000).clip(-32768, 32767).astype(np.int16)
    sf.write(f"{a}/spk1/a16.wav", i16(SR * 2), SR, subtype="PCM_16")
    sf.write(f"{a}/spk1/b16.flac", i16(SR * 3 // 2), SR, subtype="PCM_16")
    sf.write(f"{a}/spk2/c44f.wav", sine(44100 * 2, 44100, 300), 44100, subtype="FLOAT")
    st = np.stack([sine(48000, 48000, 500), sine(48000, 48000, 700, 0.2)], axis=1)
    sf.write(f"{a}/spk2/d48i24.wav", st, 48000, subtype="PCM_24")
    sf.write(f"{a}/spk2/e22.ogg", sine(22050 * 2, 22050, 440), 22050, format="OGG", subtype="VORBIS")
    sf.write(f"{a}/spk3/f8k.wav", i16(8000 * 2), 8000, subtype="PCM_16")
    sf.write(f"{a}/spk1/dup.flac", i16(SR), SR, subtype="PCM_16")
    sf.write(f"{a}/spk1/dup.wav", i16(SR), SR, subtype="PCM_16")  # same id spk1/dup: rejected
    sf.write(f"{a}/.hidden.wav", i16(SR), SR, subtype="PCM_16")  # hidden: skipped silently
    good = open(f"{a}/spk1/a16.wav", "rb").read()
    b = f"{a}/bad"
    open(f"{b}/truncated.wav", "wb").write(good[: len(good) // 2 + 1])
    flac = open(f"{a}/spk1/b16.flac", "rb").read()
    open(f"{b}/trunc.flac", "wb").write(flac[: len(flac) // 2])
    open(f"{b}/empty.wav", "wb").close()
    sf.write(f"{b}/zero.wav", np.zeros(0, np.int16), SR, subtype="PCM_16")
    open(f"{b}/noise.wav", "wb").write(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    open(f"{b}/text.flac", "w").write("this is a text file named .flac\n" * 20)
    h = bytearray(good)
    assert h[36:40] == b"data"
    h[40:44] = struct.pack("<I", 0xFFFFFFF0)
    open(f"{b}/hugedata.wav", "wb").write(h)
    h = bytearray(good)
    h[24:28] = struct.pack("<I", 1)
    open(f"{b}/rate1.wav", "wb").write(h)
    # 4.5 hours at 1 kHz, 8-bit: the header alone says too long (a sparse file, nothing to decode)
    frames = int(4.5 * 3600 * 1000)
    with open(f"{b}/long.wav", "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + frames) + b"WAVEfmt " +
                struct.pack("<IHHIIHH", 16, 1, 1, 1000, 1000, 1, 8) + b"data" + struct.pack("<I", frames))
        f.seek(44 + frames - 1)
        f.write(b"\x80")
    os.symlink(f"{b}/nowhere.wav", f"{b}/dangling.wav")
    os.makedirs(f"{d}/xdir.wav", exist_ok=True)
    with open(f"{d}/extra.scp", "w") as f:
        f.write(f"scp1 {a}/spk1/a16.wav\n")
        f.write(f"scpdir {d}/xdir.wav\n")
        f.write(f"scppipe cat {a}/spk1/b16.flac |\n")
        f.write(f"spk1/a16 {a}/spk3/f8k.wav\n")
        f.write("onlyid\n")
    os.makedirs(f"{d}/audio2/sw", exist_ok=True)
    sf.write(f"{d}/audio2/sw/g16.wav", i16(SR * 5 // 4), SR, subtype="PCM_16")
    with open(f"{d}/manifest.tsv", "w") as f:
        f.write("audio2\n")
        f.write(f"sw/g16.wav\t{SR * 5 // 4}\tsw\n")
        f.write("just-a-path-without-count\n")


# (input ends with, reason contains) for every rejection of `koe prepare D/audio D/extra.scp D/manifest.tsv`
EXPECT_REJECT = [
    ("bad/dangling.wav", "dangling symbolic link"),
    ("bad/empty.wav", "empty file"),
    ("bad/hugedata.wav", "absurd header"),
    ("bad/long.wav", "hour limit"),
    ("bad/noise.wav", "not audio"),
    ("bad/rate1.wav", "absurd header: sample rate 1 Hz"),
    ("bad/text.flac", "not audio"),
    ("bad/trunc.flac", "truncated"),
    ("bad/truncated.wav", "truncated"),
    ("bad/zero.wav", "0 frames"),
    ("spk1/dup.wav", "duplicate utterance id 'spk1/dup'"),
    ("xdir.wav", "is a directory"),
    ("extra.scp:3", "--allow-pipes"),
    ("spk3/f8k.wav", "duplicate utterance id 'spk1/a16'"),
    ("extra.scp:5", "expected `uttid path`"),
    ("manifest.tsv:3", "expected relpath<TAB>nsamples"),
]
EXPECT_IDS = {"spk1/a16", "spk1/b16", "spk2/c44f", "spk2/d48i24", "spk2/e22", "spk3/f8k", "spk1/dup", "scp1",
              "sw/g16"}
EXPECT_LANG = {"sw/g16": "sw"}


def s(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def read_corpus(out):
    """{id: (shard name, lang, speaker, source, int16 samples)}"""
    utts = {}
    for p in sorted(glob.glob(os.path.join(out, "shard-*.h5"))):
        with h5py.File(p, "r") as f:
            assert s(f.attrs["format"]) == "koe-corpus-shard", p
            assert int(f.attrs["sample_rate"]) == SR, p
            audio = f["audio"][:]
            assert audio.dtype == np.int16, (p, audio.dtype)
            off, ln = f["utt/offset"][:], f["utt/length"][:]
            cols = [[s(v) for v in f["utt/" + k][:]] for k in ("id", "lang", "speaker", "source")]
            for i in range(len(off)):
                assert cols[0][i] not in utts, f"id {cols[0][i]} in two shards"
                utts[cols[0][i]] = (os.path.basename(p), cols[1][i], cols[2][i], cols[3][i],
                                    audio[off[i]:off[i] + ln[i]])
    return utts


def check_source_equal(utts):
    """Every utterance whose source is 16 kHz mono PCM_16 equals what python3-soundfile reads."""
    exact = 0
    for uid, (_, _, _, src, x) in utts.items():
        if not os.path.isfile(src):
            continue
        info = sf.info(src)
        if info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16":
            ref = sf.read(src, dtype="int16")[0]
            if not np.array_equal(ref, x):
                sys.exit(f"{uid}: samples differ from soundfile's read of {src}")
            exact += 1
        else:
            want = round(info.frames * SR / info.samplerate)
            if len(x) != want:
                sys.exit(f"{uid}: {len(x)} samples from {src}, want {want}")
    return exact


def check_bad(out, d):
    report = [l.rstrip("\n").split("\t") for l in open(os.path.join(out, "prepare-report.tsv"))]
    assert report[0] == ["input", "reason"], report[0]
    rows = report[1:]
    stderr = open(os.path.join(d, "stderr")).read()
    bad = []
    for end, why in EXPECT_REJECT:
        hit = [r for r in rows if r[0].endswith(end) and why in r[1]]
        if len(hit) != 1:
            bad.append(f"report: want one row for {end} with '{why}', got {hit}")
        elif hit[0][1] not in stderr:
            bad.append(f"stderr lacks the reason for {end}: {hit[0][1]}")
    if len(rows) != len(EXPECT_REJECT):
        bad.append(f"report has {len(rows)} rows, want {len(EXPECT_REJECT)}:\n" + "\n".join("\t".join(r) for r in rows))
    if any(".hidden" in r[0] for r in rows):
        bad.append("a hidden file was considered")
    utts = read_corpus(out)
    if set(utts) != EXPECT_IDS:
        bad.append(f"corpus ids {sorted(utts)}, want {sorted(EXPECT_IDS)}")
    for uid, lang in EXPECT_LANG.items():
        if uid in utts and utts[uid][1] != lang:
            bad.append(f"{uid}: lang {utts[uid][1]}, want {lang}")
    if "spk2/d48i24" in utts and utts["spk2/d48i24"][2] != "spk2":
        bad.append(f"spk2/d48i24: speaker {utts['spk2/d48i24'][2]}, want spk2")
    if bad:
        sys.exit("\n".join(bad))
    exact = check_source_equal(utts)
    if exact < 4:
        sys.exit(f"only {exact} bit-exact sources checked, want 4")
    # the stereo 48 kHz 24-bit file: mono mean of the two sines, resampled
    x = utts["spk2/d48i24"][4].astype(np.float64) / 32768
    ref = (sine(len(x), SR, 500) + sine(len(x), SR, 700, 0.2)) / 2
    err = np.abs(x - ref)[800:-800].max()
    if err > 2e-4:
        sys.exit(f"spk2/d48i24: mixdown+resample differs from the ideal by {err:.2e}")
    print(f"check-bad: {len(rows)} rejections with reasons, {len(utts)} utterances, {exact} bit-exact")


def read_align(out):
    """{id: (phone inventory, frames as phone strings)} from every shard's /align."""
    al = {}
    for p in sorted(glob.glob(os.path.join(out, "shard-*.h5"))):
        with h5py.File(p, "r") as f:
            if "align" not in f:
                continue
            phones = [s(v) for v in f["align/phones"][:]]
            frames, aoff = f["align/frames"][:], f["align/offset"][:]
            for i, uid in enumerate(s(v) for v in f["utt/id"][:]):
                fr = frames[aoff[i]:aoff[i + 1]]
                al[uid] = (tuple(phones), tuple("-" if v == 0xFFFF else phones[v] for v in fr))
    return al


def dump(out):
    al = read_align(out)
    for uid, (shard, lang, spk, src, x) in sorted(read_corpus(out).items(), key=lambda kv: (kv[1][0], kv[0])):
        a = hashlib.sha256(repr(al.get(uid)).encode()).hexdigest()[:12]
        print(shard, uid, lang, spk, src, len(x), hashlib.sha256(x.tobytes()).hexdigest()[:16], "align", a)


CTM = [("spk1/a16", 0.0, 0.5, "a"), ("spk1/a16", 0.5, 0.25, "b"), ("spk1/a16", 1.2, 0.8, "sil"),
       ("sw/g16", 0.1, 0.3, "b"), ("nosuchutt", 0.0, 1.0, "zz")]


def make_ctm(path):
    with open(path, "w") as f:
        for u, st, du, ph in CTM:
            f.write(f"{u} 1 {st:.2f} {du:.2f} {ph}\n")


def check_align(out):
    """Frames follow the CTM (round(start/10 ms) .. round(end/10 ms)); unlisted utterances are all no-phone;
    the inventory is the sorted set of the CTM's phones in every shard."""
    al, utts = read_align(out), read_corpus(out)
    inv = tuple(sorted({c[3] for c in CTM}))
    for uid, (_, _, _, _, x) in utts.items():
        phones, fr = al[uid]
        assert phones == inv, (uid, phones, inv)
        want = ["-"] * (len(x) // 160)
        for u, st, du, ph in CTM:
            if u == uid:
                for k in range(round(st * 100), min(round((st + du) * 100), len(want))):
                    want[k] = ph
        assert list(fr) == want, (uid, fr[:80], want[:80])
    print(f"check-align: {len(utts)} utterances match the CTM")


def check_shards(out):
    utts = read_corpus(out)  # asserts format, rate, dtype and readability of every complete shard
    for p in glob.glob(os.path.join(out, "shard-*.h5")):
        with h5py.File(p, "r") as f:
            off, ln, n = f["utt/offset"][:], f["utt/length"][:], f["audio"].shape[0]
            if len(off) == 0 or (off + ln).max() > n:
                sys.exit(f"{p}: utterance table does not fit /audio")
    print(f"check-shards: {len(glob.glob(os.path.join(out, 'shard-*.h5')))} complete shards, {len(utts)} utterances")


def make_big(d, n, secs):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(99)
    for i in range(n):
        sub = os.path.join(d, f"spk{i % 4}")
        os.makedirs(sub, exist_ok=True)
        if i % 2 == 0:
            x = (rng.standard_normal(int(SR * secs)) * 3000).astype(np.int16)
            sf.write(f"{sub}/u{i:04d}.wav", x, SR, subtype="PCM_16")
        else:
            x = sine(int(44100 * secs), 44100, 200 + i) + 0.05 * rng.standard_normal(int(44100 * secs))
            sf.write(f"{sub}/u{i:04d}.wav", x.astype(np.float32), 44100, subtype="FLOAT")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2])
    elif cmd == "make-big":
        make_big(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "check-bad":
        check_bad(sys.argv[2], sys.argv[3])
    elif cmd == "make-ctm":
        make_ctm(sys.argv[2])
    elif cmd == "check-align":
        check_align(sys.argv[2])
    elif cmd == "dump":
        dump(sys.argv[2])
    elif cmd == "check-shards":
        check_shards(sys.argv[2])
    else:
        sys.exit(__doc__)

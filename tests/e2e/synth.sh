#!/usr/bin/env bash
# tests/e2e/synth.sh — `koe synth`: deterministic for a seed (wav bytes, manifest, CTM), different for
# another seed, identical under mpirun -np 2, manifest lengths equal the wav files, CTM covers every
# utterance without gaps or overlaps, >= 10 languages, bad options exit 1 with a message.
set -euo pipefail
T="$KOE_TMP/synth"
mkdir -p "$T"
MIN=1

"$KOE" synth --out "$T/a" --minutes $MIN --seed 7 2> "$T/a.log"
"$KOE" synth --out "$T/b" --minutes $MIN --seed 7 2> /dev/null
"$KOE" synth --out "$T/c" --minutes $MIN --seed 8 2> /dev/null
mpirun -np 2 "$KOE" synth --out "$T/d" --minutes $MIN --seed 7 2> "$T/d.log"
cat "$T/a.log"

# The manifest's first line is its own root; the rows must agree.
rows() { tail -n +2 "$1/train.tsv"; }
same() { # DIR1 DIR2 WHAT
  diff -r "$1/wav" "$2/wav" > /dev/null || { echo "FAIL: $3: wav files differ"; diff -rq "$1/wav" "$2/wav" | head; exit 1; }
  cmp "$1/align.ctm" "$2/align.ctm" || { echo "FAIL: $3: align.ctm differs"; exit 1; }
  cmp "$1/words.ctm" "$2/words.ctm" || { echo "FAIL: $3: words.ctm differs"; exit 1; }
  cmp "$1/utts.txt" "$2/utts.txt" || { echo "FAIL: $3: utts.txt differs"; exit 1; }
  diff <(rows "$1") <(rows "$2") || { echo "FAIL: $3: train.tsv rows differ"; exit 1; }
}
same "$T/a" "$T/b" "same seed twice"
same "$T/a" "$T/d" "1 rank vs 2 ranks"
if cmp -s "$T/a/align.ctm" "$T/c/align.ctm" || diff -rq "$T/a/wav" "$T/c/wav" > /dev/null; then
  echo "FAIL: seeds 7 and 8 gave the same corpus"; exit 1
fi
ls -a "$T/d" | grep -q '\.part$' && { echo "FAIL: part files left in $T/d"; exit 1; }

"$PYTHON" - "$T/a" $MIN <<'EOF'
import math, os, sys
import numpy as np
import soundfile as sf

root, minutes = sys.argv[1], float(sys.argv[2])
lines = open(os.path.join(root, "train.tsv"), encoding="utf-8").read().splitlines()
wavroot = lines[0]
assert wavroot == os.path.realpath(os.path.join(root, "wav")), (wavroot, root)
ids, n_of, lang_of = [], {}, {}
for ln in lines[1:]:
    rel, n, lang = ln.split("\t")
    n = int(n)
    info = sf.info(os.path.join(wavroot, rel))
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16", (rel, info)
    assert info.frames == n, f"{rel}: manifest says {n} samples, the wav has {info.frames}"
    assert rel.split("/")[0] == lang, f"{rel}: language {lang} is not the parent directory"
    x, _ = sf.read(os.path.join(wavroot, rel), dtype="int16")
    assert np.abs(x.astype(np.int32)).max() > 2000, f"{rel}: (nearly) silent"
    uid = rel[:-4]
    assert uid not in n_of, f"duplicate {uid}"
    ids.append(uid); n_of[uid] = n; lang_of[uid] = lang

on_disk = set()
for d, _, files in os.walk(wavroot):
    for f in files:
        on_disk.add(os.path.relpath(os.path.join(d, f), wavroot))
listed = {u + ".wav" for u in ids}
assert on_disk == listed, f"files not in the manifest: {sorted(on_disk - listed)[:5]}, missing: {sorted(listed - on_disk)[:5]}"

langs = sorted(set(lang_of.values()))
assert len(langs) >= 10, langs
# Each language gets the shortest run of utterances that reaches its share.
budget = math.ceil(minutes * 60 * 16000 / len(langs))
for l in langs:
    ns = [n_of[u] for u in ids if lang_of[u] == l]
    assert sum(ns) >= budget and sum(ns) - ns[-1] < budget, (l, ns, budget)

segs = {}
for i, ln in enumerate(open(os.path.join(root, "align.ctm"), encoding="utf-8"), 1):
    f = ln.rstrip("\n").split(" ")
    assert len(f) == 5 and f[1] == "1" and f[4], f"align.ctm:{i}: {ln!r}"
    for t in (f[2], f[3]):
        assert len(t.split(".")[1]) == 3, f"align.ctm:{i}: {t} is not 3 decimals"
    segs.setdefault(f[0], []).append((float(f[2]), float(f[3]), f[4]))
assert list(segs) == ids, "align.ctm utterances differ from the manifest (or are out of order)"
n_phones = 0
for u, s in segs.items():
    assert abs(s[0][0]) < 1e-9, f"{u}: starts at {s[0][0]}"
    for (t0, d0, _), (t1, _, _) in zip(s, s[1:]):
        assert d0 > 0 and abs(t0 + d0 - t1) < 0.0015, f"{u}: gap or overlap at {t0}+{d0} vs {t1}"
    end = s[-1][0] + s[-1][1]
    audio_end = n_of[u] / 16000
    assert abs(end - audio_end) <= 0.030, f"{u}: alignment ends at {end}, audio at {audio_end}"
    real = [p for _, _, p in s if p != "sil"]
    assert len(real) >= 8, f"{u}: only {len(real)} phones"
    n_phones += len(real)
# words.ctm: each utterance's words are its sentence's (utts.txt, punctuation off), in order, one after
# the other inside the audio, each starting on a phone that is not a pause
text = {f[0]: f[5] for f in (ln.rstrip("\n").split("\t") for ln in list(open(os.path.join(root, "utts.txt"), encoding="utf-8"))[1:])}
words = {}
for ln in open(os.path.join(root, "words.ctm"), encoding="utf-8"):
    f = ln.split()
    words.setdefault(f[0], []).append((float(f[2]), float(f[3]), f[4]))
n_words = 0
for u in ids:
    w = words.get(u, [])
    assert [x for _, _, x in w] == [x.strip(",.?") for x in text[u].split()], (u, w, text[u])
    for (t0, d0, _), (t1, _, _) in zip(w, w[1:]):
        assert d0 > 0 and t0 + d0 <= t1 + 1e-9, f"{u}: words overlap at {t0}+{d0} vs {t1}"
    for t0, d0, x in w:
        assert t0 >= 0 and t0 + d0 <= n_of[u] / 16000 + 0.030, (u, x, t0, d0)
        on = [p for s0, ds, p in segs[u] if s0 <= t0 + 1e-9 < s0 + ds]
        assert on and on[0] != "sil", f"{u}: word {x} starts in a pause at {t0}"
    n_words += len(w)
print(f"ok: {len(ids)} utterances, {len(langs)} languages, {sum(n_of.values()) / 16000 / 60:.2f} min, {n_phones} phones, "
      f"{n_words} words")
EOF

# Bad input: exit 1 with a message naming the problem.
expect_usage() { # PATTERN ARGS...
  local pat=$1; shift
  set +e; "$KOE" synth "$@" > "$T/err.out" 2> "$T/err.log"; local rc=$?; set -e
  [ $rc = 1 ] || { echo "FAIL: koe synth $* exited $rc, expected 1"; cat "$T/err.log"; exit 1; }
  grep -q -- "$pat" "$T/err.log" || { echo "FAIL: koe synth $*: message lacks '$pat'"; cat "$T/err.log"; exit 1; }
}
expect_usage "supported: en,de,fr" --out "$T/e" --langs en,xx --minutes 0.1
expect_usage "given twice" --out "$T/e" --langs en,de,en --minutes 0.1
expect_usage "out DIR is required" --minutes 0.1
expect_usage "minutes" --out "$T/e" --minutes -3
expect_usage "seed" --out "$T/e" --seed abc
expect_usage "already exists" --out "$T/a" --minutes 0.1
expect_usage "unknown option" --out "$T/e" --bogus 1
[ ! -e "$T/e" ] || { echo "FAIL: a refused run created $T/e"; exit 1; }
echo "synth: ok"

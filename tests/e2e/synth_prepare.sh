#!/usr/bin/env bash
# tests/e2e/synth_prepare.sh — the contract between `koe synth` and `koe prepare`: the documented
# call `koe prepare --lang-from-dir --align DIR/align.ctm DIR/wav` finds an alignment for every
# utterance (the CTM ids are the ids prepare derives), takes the language from the directory, and
# stores the synthesised samples bit-exactly; the fairseq manifest DIR/train.tsv works as input too.
set -euo pipefail
T="$KOE_TMP/synth_prepare"
mkdir -p "$T"
"$KOE" synth --out "$T/s" --langs en,de,fr,es,it,pt,nl,pl,ru,hi --minutes 0.5 --seed 3 2> /dev/null
"$KOE" prepare --out "$T/c" --lang-from-dir --align "$T/s/align.ctm" "$T/s/wav" 2> "$T/prep.log"
"$KOE" prepare --out "$T/m" --align "$T/s/align.ctm" "$T/s/train.tsv" 2> "$T/prep_tsv.log"
cat "$T/prep.log" "$T/prep_tsv.log"
if grep -q "no line in --align" "$T/prep.log" "$T/prep_tsv.log"; then
  echo "FAIL: prepare found utterances without alignment: synth's CTM ids differ from prepare's ids"; exit 1
fi

"$PYTHON" - "$T/s" "$T/c" "$T/m" <<'EOF'
import glob, math, os, sys
import h5py, numpy as np, soundfile as sf

synth, corpora = sys.argv[1], sys.argv[2:]
lines = open(os.path.join(synth, "train.tsv"), encoding="utf-8").read().splitlines()
root = lines[0]
want = {}
for ln in lines[1:]:
    rel, n, lang = ln.split("\t")
    want[rel[:-4]] = (int(n), lang, os.path.join(root, rel))
ctm_phones = {}
for ln in open(os.path.join(synth, "align.ctm"), encoding="utf-8"):
    u, _, t, d, p = ln.split()
    ctm_phones.setdefault(u, []).append((float(t), float(d), p))

for corpus in corpora:
    seen = set()
    for shard in sorted(glob.glob(os.path.join(corpus, "shard-*.h5"))):
        with h5py.File(shard, "r") as f:
            ids = [x.decode() for x in f["utt/id"][:]]
            langs = [x.decode() for x in f["utt/lang"][:]]
            off, length = f["utt/offset"][:], f["utt/length"][:]
            phones = [x.decode() for x in f["align/phones"][:]]
            frames, aoff = f["align/frames"][:], f["align/offset"][:]
            audio = f["audio"][:]
            for i, u in enumerate(ids):
                assert u in want, f"{corpus}: id {u} is not a synth utterance id"
                n, lang, path = want[u]
                if corpus == corpora[0]:
                    assert langs[i] == lang, (u, langs[i], lang)
                assert length[i] == n, (u, length[i], n)
                x, _ = sf.read(path, dtype="int16")
                assert np.array_equal(audio[off[i]:off[i] + n], x), f"{u}: samples differ from the wav"
                fr = frames[aoff[i]:aoff[i + 1]]
                nophone = np.mean(fr == 0xFFFF)
                assert nophone < 0.05, f"{u}: {nophone:.0%} frames without a phone"
                # prepare's convention: a segment fills frames round(start/10ms) to round(end/10ms),
                # later segments win; so every frame's label is the CTM's phone there.
                exp = [None] * len(fr)
                for s, d, p in ctm_phones[u]:
                    for k in range(math.floor(s * 100.0 + 0.5), min(len(fr), math.floor((s + d) * 100.0 + 0.5))):
                        exp[k] = p
                got = [None if x == 0xFFFF else phones[x] for x in fr]
                assert got == exp, f"{u}: frame labels differ from align.ctm"
                seen.add(u)
    assert seen == set(want), f"{corpus}: {len(seen)} of {len(want)} utterances"
    print(f"ok: {corpus}: {len(seen)} utterances, ids, languages, samples and alignments match")
EOF
echo "synth_prepare: ok"

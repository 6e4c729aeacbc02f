#!/usr/bin/env bash
# features_parity.sh — the real pipeline against torchaudio: espeak-ng speech
# -> koe prepare -> koe features (mfcc, fbank) -> per utterance and per dimension,
# max |koe - torchaudio| <= 1e-3 x that dimension's range (../shared/anchors/kaldi_features.py --dump).
# Then the same files from 2 and 3 ranks (small blocks, so ranks write different numbers of blocks,
# and 2 threads) must be identical to 1 rank; an utterance under 25 ms gets no frames.
set -euo pipefail
T=$KOE_TMP/features_parity
mkdir -p "$T/in"
REF=$KOE_ROOT/tests/reference
"$PYTHON" "$REF/speech_wav.py" "$T/in/en1.wav" --voice en
"$PYTHON" "$REF/speech_wav.py" "$T/in/de1.wav" --voice de --silence 0.05 \
  --text "Guten Morgen, wie geht es dir heute? Das Wetter ist schön, wir gehen spazieren."
"$PYTHON" - "$T/in/tiny.wav" <<'PY'
import sys, numpy as np, soundfile
soundfile.write(sys.argv[1], (np.arange(300) % 50 * 100).astype(np.int16), 16000, subtype="PCM_16")
PY
"$KOE" prepare --out "$T/corpus" --lang xx "$T/in"

for kind in mfcc fbank; do
  "$KOE" features --corpus "$T/corpus" --kind "$kind" --out "$T/$kind.h5"
  test -f "$T/$kind.h5" && ! test -e "$T/$kind.h5.tmp"
  for u in en1 de1; do
    "$PYTHON" "$ANCHORS/kaldi_features.py" --kind "$kind" --wav "$T/in/$u.wav" --dump "$T/ref-$kind-$u.h5"
    echo -n "$kind $u: "
    "$PYTHON" "$REF/compare_features.py" "$T/$kind.h5" "$T/ref-$kind-$u.h5" --utt "$u" --rtol 1e-3
  done
  "$PYTHON" - "$T/$kind.h5" "$kind" <<'PY'
import sys, h5py
path, kind = sys.argv[1], sys.argv[2]
with h5py.File(path, "r") as h:
    a = dict(h.attrs)
    assert a["format"] in (b"koe-features", "koe-features"), a
    assert int(a["format_version"]) == 1 and int(a["frame_rate"]) == 100, a
    assert a["kind"] in (kind, kind.encode()), a
    ids = [s.decode() if isinstance(s, bytes) else s for s in h["utt_id"][:]]
    off = h["offset"][:]
    dim = {"mfcc": 39, "fbank": 80}[kind]
    assert h["feats"].shape == (off[-1], dim) and int(a["dim"]) == dim, (h["feats"].shape, off[-1])
    assert off[0] == 0 and all(off[i] <= off[i + 1] for i in range(len(ids))), off
    t = ids.index("tiny")
    assert off[t + 1] == off[t], "an utterance of 300 samples must have no frames"
    print(f"{path}: {len(ids)} utterances, {off[-1]} frames, attrs ok, tiny has 0 frames")
PY
  mpirun -np 2 "$KOE" features --corpus "$T/corpus" --kind "$kind" --out "$T/$kind-2.h5" --block-frames 150
  "$PYTHON" "$REF/features_equal.py" "$T/$kind.h5" "$T/$kind-2.h5"
  mpirun --oversubscribe -np 3 "$KOE" features --corpus "$T/corpus" --kind "$kind" --out "$T/$kind-3.h5" \
    --block-frames 97 --threads 2
  "$PYTHON" "$REF/features_equal.py" "$T/$kind.h5" "$T/$kind-3.h5"
done

#!/usr/bin/env bash
# export_torchaudio.sh — koe init -> koe export -> torchaudio: the export's
# model.safetensors is loaded into torchaudio's wav2vec2_model(**config from config.json)
# (tests/reference/hf_export.py) through the sub-dicts that
# import_huggingface_model uses, and its hidden states (float64) on real speech (espeak-ng) equal
# `koe embed --layer all` per layer within 1e-4 * max|ref| + 1e-5. Both layer-norm orders and both
# extractors. Then `koe init --from` the export and export again: the same bytes.
set -euo pipefail
T=$KOE_TMP/export_torchaudio
REF=$KOE_ROOT/tests/reference
mkdir -p "$T/in"
"$PYTHON" "$REF/speech_wav.py" "$T/in/en1.wav" --voice en
"$PYTHON" "$REF/speech_wav.py" "$T/in/de1.wav" --voice de --silence 0.05 \
  --text "Guten Morgen, wie geht es dir heute?"
check() { # name, overrides...
  local name=$1; shift
  "$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" "$@" --out "$T/$name.h5"
  "$KOE" export --ckpt "$T/$name.h5" --out "$T/$name"
  "$KOE" embed --ckpt "$T/$name.h5" --layer all --out "$T/$name.emb.h5" "$T/in/en1.wav" "$T/in/de1.wav"
  "$PYTHON" - "$T/$name" "$T/$name.emb.h5" "$T/in/en1.wav" "$T/in/de1.wav" <<'PY'
import os, sys
import h5py
sys.path.insert(0, os.environ["KOE_ROOT"] + "/tests/reference")
import hf_export
exp, emb, wavs = sys.argv[1], sys.argv[2], sys.argv[3:]
cfg, sd = hf_export.load(exp)
model = hf_export.model(cfg)
hf_export.load_weights(model, sd)  # as torchaudio.models.wav2vec2.utils.import_huggingface_model does
assert set(sd) - {k for k in sd if k.split(".")[0] in ("feature_extractor", "feature_projection", "encoder")} == {"masked_spec_embed"}
model.eval().double()
L = cfg["num_hidden_layers"]
with h5py.File(emb, "r") as h:
    feats, offset = h["feats"][:], h["offset"][:]
    ids = [s.decode() if isinstance(s, bytes) else s for s in h["utt_id"][:]]
    assert h.attrs["kind"] in ("layers:all", b"layers:all")
assert feats.shape[0] == L + 1 and ids == ["en1", "de1"], (feats.shape, ids)
worst = hf_export.compare_layers(model, feats, offset, wavs)
print(exp, "hidden states 0..%d match torchaudio; worst |err|/max|ref| per layer:" % L, " ".join("%.1e" % v for v in worst))
PY
}
check postln_group
check preln_layer model.extractor_mode=layer_norm model.layer_norm_first=true model.conv_bias=true
# init --from the export, export again: identical files
"$KOE" init --from "$T/preln_layer" --out "$T/back.h5"
"$KOE" export --ckpt "$T/back.h5" --out "$T/back"
cmp "$T/preln_layer/model.safetensors" "$T/back/model.safetensors"
cmp "$T/preln_layer/config.json" "$T/back/config.json"
# a damaged export is refused, naming the tensor
"$PYTHON" - "$T/back/model.safetensors" <<'PY'
import sys
p = sys.argv[1]
b = open(p, "rb").read()
open(p, "wb").write(b[: len(b) - 100])
PY
if "$KOE" init --from "$T/back" --out "$T/bad.h5" 2> "$T/err"; then echo "truncated safetensors accepted"; exit 1; fi
grep -q "data_offsets" "$T/err"
[ ! -e "$T/bad.h5" ]
echo "export_torchaudio: ok"

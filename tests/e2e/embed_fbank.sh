#!/usr/bin/env bash
# embed_fbank.sh — `koe embed` and `koe kmeans --source layer:N` on fbank-frontend checkpoints: the
# hidden states `koe embed --layer all --corpus` writes equal, per layer, torchaudio's transformer
# (float64, weights from `koe export`, tests/reference/hf_export.py) run on the input training feeds
# the model: the corpus's fbank from `koe features --kind fbank` (itself checked against Kaldi by
# features_parity.sh), normalised per utterance and dimension (mean 0, variance 1 + 1e-5) when the
# checkpoint's model.fbank_norm = utterance (the default: BEST-RQ, and a HuBERT one) and left as is with
# model.fbank_norm = none, 4 frames stacked, through feature_projection.projection: the encoder's input
# follows the model config alone, whichever objective trained it.
# Tolerance 1e-4 * max|ref| + 1e-5. The file's frame_rate is 25 (100 / stack 4); layer k-means and
# labels on the BEST-RQ checkpoint run and the label set says 25 Hz.
set -euo pipefail
T=$KOE_TMP/embed_fbank
rm -rf "$T" && mkdir -p "$T"
cd "$T"
"$KOE" synth --out syn --minutes 0.3 --langs en,de --seed 3 2> /dev/null
"$KOE" prepare --out corpus syn 2> /dev/null
"$KOE" features --corpus corpus --kind fbank --out fbank.h5 2> /dev/null
check() { # name, normalised (1/0), recipe, overrides...
  local name=$1 norm=$2 recipe=$3; shift 3
  "$KOE" init "$recipe" "$@" --out "$name.h5" 2> /dev/null
  "$KOE" export --ckpt "$name.h5" --out "$name" 2> /dev/null
  "$KOE" embed --ckpt "$name.h5" --layer all --corpus corpus --out "$name.emb.h5" 2> "$name.emb.log" \
    || { cat "$name.emb.log"; exit 1; }
  "$PYTHON" - "$name" "$name.emb.h5" fbank.h5 "$norm" << 'PY'
import os, sys
import h5py, numpy as np, torch
sys.path.insert(0, os.environ["KOE_ROOT"] + "/tests/reference")
import hf_export
exp, emb, fb, norm = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
cfg, sd = hf_export.load(exp)
assert cfg["koe_frontend"] == "fbank", cfg
stack, L = cfg["fbank_stack"], cfg["num_hidden_layers"]
model = hf_export.model(cfg)
model.encoder.transformer.load_state_dict(hf_export.sub(sd, "encoder."), strict=True)
model.eval().double()
W, b = sd["feature_projection.projection.weight"].double(), sd["feature_projection.projection.bias"].double()
with h5py.File(fb, "r") as h:
    fbank, foff = h["feats"][:].astype(np.float64), h["offset"][:]
with h5py.File(emb, "r") as h:
    feats, offset = h["feats"][:], h["offset"][:]
    assert float(h.attrs["frame_rate"]) == 100.0 / stack, h.attrs["frame_rate"]
assert feats.shape[0] == L + 1 and len(offset) == len(foff), (feats.shape, len(offset), len(foff))
worst = np.zeros(L + 1)
for i in range(len(foff) - 1):
    f = fbank[foff[i]:foff[i + 1]]
    T = len(f) // stack
    assert offset[i + 1] - offset[i] == T, (i, offset[i + 1] - offset[i], T)
    if T == 0:
        continue
    if norm:
        f = (f - f.mean(0)) / np.sqrt(f.var(0) + 1e-5)
    x = torch.from_numpy(f[:T * stack].reshape(1, T, stack * f.shape[1])) @ W.T + b
    hidden = []
    tr = model.encoder.transformer
    hk = tr.layers[0].register_forward_pre_hook(lambda m, inp: hidden.append(inp[0]))
    with torch.no_grad():
        hidden += tr.get_intermediate_outputs(x)
    hk.remove()
    for l in range(L + 1):
        ref, got = hidden[l][0].numpy(), feats[l, offset[i]:offset[i + 1]]
        err = np.abs(got - ref)
        worst[l] = max(worst[l], err.max() / np.abs(ref).max())
        if err.max() > 1e-4 * np.abs(ref).max() + 1e-5:
            sys.exit(f"utterance {i} layer {l}: |err| {err.max():.3g}, max|ref| {np.abs(ref).max():.3g}")
print(exp, "normalised" if norm else "raw", "fbank: hidden states 0..%d match; worst |err|/max|ref| per layer:" % L,
      " ".join("%.1e" % v for v in worst))
PY
}
check bestrq 1 "$KOE_ROOT/recipes/tiny/bestrq.ini"
check hubert 0 "$KOE_ROOT/recipes/tiny/hubert.ini" model.frontend=fbank data.features=fbank model.fbank_stack=4 \
  model.fbank_norm=none
check hubert_norm 1 "$KOE_ROOT/recipes/tiny/hubert.ini" model.frontend=fbank data.features=fbank model.fbank_stack=4

"$KOE" kmeans --corpus corpus --source layer:2 --ckpt bestrq.h5 --k 8 --out km.h5 2> km.log || { cat km.log; exit 1; }
"$KOE" label --corpus corpus --kmeans km.h5 --ckpt bestrq.h5 --name rq_l2 2> label.log || { cat label.log; exit 1; }
"$PYTHON" - corpus/labels/rq_l2 << 'PY'
import glob, sys, h5py
files = sorted(glob.glob(sys.argv[1] + "/*.h5"))
assert files, "no label files"
with h5py.File(files[0], "r") as h:
    assert float(h.attrs["frame_rate"]) == 25.0, dict(h.attrs)
print("layer k-means and labels of the BEST-RQ checkpoint: frame_rate 25")
PY

#!/usr/bin/env bash
# hf_import.sh — `koe init --from` on stand-ins of published Hugging Face models
# (tests/reference/hf_standin.py: random weights, transformers' names, shapes, dtypes, layouts and
# config.json fields, 2 layers x 32 wide, nothing downloaded). Each one is either imported, and then
# `koe embed --layer all` equals torchaudio's model on the same weights at every layer (1e-4
# relative; the Large one on the waveform normalised as do_normalize says), or refused with a message
# naming the reason. Pickles (a directory with only pytorch_model.bin, fairseq .pt files in both the
# cfg/omegaconf and the older args/Namespace form) are converted by koe's data/pickle_to_hf.py, which
# `koe init --from` runs, and which runs no code from the file. Importing never puts transformers' fine-tuning
# values (mask_time_prob 0.05, layerdrop, dropouts) into the recipe, and `koe export` writes them
# back under transformers' names, with koe's pretraining values under koe_*.
set -euo pipefail
T=$KOE_TMP/hf_import
SI="$PYTHON $KOE_ROOT/tests/reference/hf_standin.py"
mkdir -p "$T"
"$PYTHON" - "$T/a.wav" "$T/b.wav" <<'PY'
import sys, numpy as np, soundfile
r = np.random.default_rng(7)
for path, n, f in ((sys.argv[1], 16000, 220.0), (sys.argv[2], 11000, 310.0)):
    t = np.arange(n) / 16000
    x = 0.3 * np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * r.standard_normal(n) + 0.02
    soundfile.write(path, (x * 32767).astype(np.int16), 16000, subtype="PCM_16")
PY

$SI build "$T"
export KOE_PYTHON=$PYTHON  # the pickle converter's python (with torch)
imported="hubert hubert_f16 hubert_bf16 hubert_sharded hubert_ctc w2v2_pt large large_bf16_sharded bin_only
  fairseq.pt fairseq_large.pt fairseq_w2v2.pt"
for name in $imported; do
  "$KOE" init --from "$T/$name" --out "$T/$name.h5" 2> "$T/$name.init.err"
  "$KOE" embed --ckpt "$T/$name.h5" --layer all --out "$T/$name.emb.h5" "$T/a.wav" "$T/b.wav"
done
$SI check "$T" "$T/a.wav,$T/b.wav" $imported
# the pretraining heads are imported bit for bit under koe's names, with the objective keys that fit
# them: transformers' Wav2Vec2ForPreTraining (BF16 shards; project_hid is koe's final_proj), fairseq's
# wav2vec 2.0 (quantizer.vars) and HuBERT (label_embs_concat); a CTC head is not a pretraining head
"$PYTHON" - "$T" "$KOE_ROOT/tests/reference" <<'PY'
import glob, sys, h5py, numpy as np, torch
sys.path.insert(0, sys.argv[2])
import hf_standin
T = sys.argv[1]
def koe(name):
    with h5py.File(f"{T}/{name}.h5", "r") as h:
        t = h["config"][0]
        return {k: v[()] for k, v in h["model"].items()}, (t.decode() if isinstance(t, bytes) else t)
hf = {}
for f in glob.glob(f"{T}/w2v2_pt/*.safetensors"):
    hf.update(hf_standin.read_safetensors(f))
hf_standin.omegaconf_standin({})  # registers the stand-in omegaconf classes the .pt files name
fs_w2v2 = torch.load(f"{T}/fairseq_w2v2.pt", weights_only=False)["model"]
fs_hubert = torch.load(f"{T}/fairseq.pt", weights_only=False)["model"]
cases = {
    "w2v2_pt": ({"quantizer.codevectors": "quantizer.codevectors", "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
                 "quantizer.weight_proj.bias": "quantizer.weight_proj.bias", "project_q.weight": "project_q.weight",
                 "project_q.bias": "project_q.bias", "final_proj.weight": "project_hid.weight", "final_proj.bias": "project_hid.bias"},
                hf, ["name = wav2vec2", "latent_groups = 2", "latent_vars = 8", "latent_dim = 16", "final_dim = 16"]),
    "fairseq_w2v2.pt": ({"quantizer.codevectors": "quantizer.vars", "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
                         "project_q.weight": "project_q.weight", "final_proj.weight": "final_proj.weight"},
                        fs_w2v2, ["name = wav2vec2", "latent_vars = 8", "final_dim = 16"]),
    "fairseq.pt": ({"label_embeddings": "label_embs_concat", "final_proj.weight": "final_proj.weight", "final_proj.bias": "final_proj.bias"},
                   fs_hubert, ["name = hubert", "final_dim = 16"]),
}
for name, (names, src, keys) in cases.items():
    ours, recipe = koe(name)
    for k, theirs in names.items():
        assert np.array_equal(ours[k], src[theirs].float().numpy()), (name, k)
    for line in keys:
        assert line in recipe.split("[objective]")[1].split("[optim]")[0], (name, line)
ours, _ = koe("hubert_ctc")
assert not any(k.startswith(("lm_head", "final_proj", "label_emb")) for k in ours), sorted(ours)
print("heads imported: codevectors, weight_proj, project_q, project_hid/final_proj, label_embs_concat equal the files'")
PY
# the Large model's embed is normalised: torchaudio on the raw waveform differs
sed -i 's/"do_normalize": true/"do_normalize": false/' "$T/large/preprocessor_config.json"
if $SI check "$T" "$T/a.wav,$T/b.wav" large > "$T/raw.out" 2>&1; then echo "normalisation made no difference"; exit 1; fi

# the recipe in the checkpoint: the architecture from config.json, the pretraining settings koe's
# defaults (config.json has mask_time_prob 0.05, layerdrop 0.1, activation_dropout 0.1)
"$PYTHON" - "$T/hubert.h5" "$T/large.h5" <<'PY'
import sys, h5py
def recipe(p):
    with h5py.File(p, "r") as h:
        t = h["config"][0]
    t = t.decode() if isinstance(t, bytes) else t
    section, out = "", {}
    for line in t.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            out[section + "." + k] = v
    return out
base, large = recipe(sys.argv[1]), recipe(sys.argv[2])
want = {"model.mask_prob": "0.8", "model.encoder_layerdrop": "0.05", "model.activation_dropout": "0",
        "model.dropout": "0.1", "model.mask_length": "10", "model.encoder_embed_dim": "32",
        "model.encoder_layers": "2", "model.conv_pos": "16", "model.normalize_waveform": "false"}
for k, v in want.items():
    assert base[k] == v, (k, base[k], v)
assert large["model.normalize_waveform"] == "true" and large["model.layer_norm_first"] == "true", large
assert large["model.extractor_mode"] == "layer_norm" and large["model.conv_bias"] == "true", large
PY
# koe export: transformers' fine-tuning defaults under their names, the pretraining values under koe_*
"$KOE" export --ckpt "$T/large.h5" --out "$T/large_export"
"$PYTHON" - "$T/large_export/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["mask_time_prob"] == 0.05 and c["layerdrop"] == 0.1 and c["mask_time_length"] == 10, c
assert c["koe_mask_prob"] == 0.8 and c["koe_layerdrop"] == 0.05 and c["do_normalize"] is True, c
PY

refused() { # name, expected text...
  local name=$1; shift
  if "$KOE" init --from "$T/$name" --out "$T/$name.refused.h5" 2> "$T/$name.err"; then
    echo "$name: imported, should be refused"; exit 1
  fi
  for w in "$@"; do
    grep -qF -- "$w" "$T/$name.err" || { echo "$name: message lacks '$w':"; cat "$T/$name.err"; exit 1; }
  done
  [ ! -e "$T/$name.refused.h5" ]
}
refused wavlm 'model_type "wavlm"' "cannot compute"
refused data2vec 'model_type "data2vec-audio"' "cannot compute"
refused distil '"feat_proj_layer_norm" must be true' "cannot compute"
# the converter runs no code from a pickle: a .pt whose unpickling would call os.system is refused
"$PYTHON" - "$T/evil.pt" "$T/pwned" <<'PY'
import os, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"model": {"x": torch.zeros(1)}, "cfg": Evil()}, sys.argv[1])
PY
refused evil.pt "converting" "not a fairseq model config"
[ ! -e "$T/pwned" ] || { echo "the converter ran code from the pickle"; exit 1; }
# without a python that has torch, the message says what to install
KOE_PYTHON=/bin/false refused fairseq.pt "converting" "python3-torch" "pickle_to_hf.py"
echo "hf_import: ok"

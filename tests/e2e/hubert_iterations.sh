#!/usr/bin/env bash
# tests/e2e/hubert_iterations.sh — HuBERT's two iterations through recipes/hubert/run.sh on the demo
# corpus (what `make demo` synthesizes: 4 minutes, 14 languages, phone alignments):
# iteration 1 clusters MFCC (k=100) and trains the tiny recipe (shrunk: 128-wide conv stack, 2 x 128
# transformer, dropout off; pred_nomask_weight 1 as in the tiny recipe) for 800 updates; iteration 2
# clusters the layer LAYER=auto picks (k=500), labels the corpus and trains briefly on those 50 Hz labels. The
# iteration-2 label set must score a higher PNMI than the MFCC labels (koe analyze labels --json), as
# in the HuBERT paper. Control, so the comparison can fail: the same k-means (k=500) on that layer of the
# UNTRAINED model (koe init, same recipe and seed) must score below the MFCC labels — the gain comes
# from training, not from k=500 or the layer. Iteration 2 clusters the layer LAYER=auto picks
# (koe analyze layers --props phone,pnmi); that layer's phone PWCCA must exceed the untrained
# model's at the same layer. The trained model's mel PWCCA over the conv layers and the transformer
# (--conv) is printed, not asserted: issue 11 asked for it to be highest in the lower half, and at
# this size it is not. Iteration 1 learns to predict each frame's MFCC cluster (the unmasked frames'
# too, pred_nomask_weight 1), a function of the same log-mel, so the top layer moves toward it with
# training: T2 0.218 untrained, 0.429 / 0.453 / 0.461 after 400 / 600 / 800 updates, while the
# best conv layer (C2) stays at 0.40-0.44; the top overtakes C2 between updates 400 and 600 (and a
# 4-layer model, an iteration 2 trained as long, rise to the top the same way). HuBERT Base's setting,
# pred_nomask_weight 0 (masked frames only), does not help at this size: after the same 800 updates
# its accuracy is 0.058 (the label prior's level), phone PWCCA 0.10 at every layer (untrained 0.09),
# PNMI per layer 0.29-0.30 (untrained 0.29), and its mel peak at C2 (0.418) is the untrained conv
# stack's (0.400), with T0-T2 at 0.22 as untrained: the shape holds only because nothing was learned.
set -euo pipefail
T="$KOE_TMP/hubert_iterations"
rm -rf "$T" && mkdir -p "$T"
cd "$T"
"$KOE" synth --out syn --minutes 4 --seed 1 2> /dev/null
"$KOE" prepare --out corpus --shard-mb 2 --lang-from-dir --align syn/align.ctm syn/wav 2> /dev/null

SHRINK="data.max_tokens=160000 data.max_sample_size=48000
  model.conv_feature_layers=[(128,10,5)]+[(128,3,2)]*4+[(128,2,2)]*2
  model.encoder_embed_dim=128 model.encoder_layers=2 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=512
  model.conv_pos=32 model.dropout=0 model.attention_dropout=0 model.dropout_input=0 model.encoder_layerdrop=0
  run.log_every=100 run.valid_every=0"
export CORPUS=corpus WORK=work RECIPE1="$KOE_ROOT/recipes/tiny/hubert.ini" RECIPE2="$KOE_ROOT/recipes/tiny/hubert.ini"
export LAYER=auto KOE THREADS=${OMP_NUM_THREADS:-1}
TRAIN_ARGS="$SHRINK optim.warmup=30 optim.max_updates=800" bash "$KOE_ROOT/recipes/hubert/run.sh" iter1 2> iter1.log \
  || { tail -20 iter1.log; exit 1; }
TRAIN_ARGS="$SHRINK optim.warmup=10 optim.max_updates=50" bash "$KOE_ROOT/recipes/hubert/run.sh" iter2 > iter2.out \
  2> iter2.log || { tail -20 iter2.log; exit 1; }
grep "step 800/800" iter1.log
test -f work/iter2/checkpoints/step-00000050.h5 || { echo "FAIL: iteration 2 did not train"; exit 1; }
grep -q "^PNMI" iter2.out || { echo "FAIL: run.sh printed no label-quality table"; exit 1; }
L=$(cat work/layer_auto/layer) # LAYER=auto's choice: the highest phone PNMI of iteration 1's layers
grep "LAYER=auto chose layer $L" iter2.log

# the control: the same recipe, untrained (koe init writes the step-0 checkpoint train would start from)
# shellcheck disable=SC2086
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" $SHRINK data.corpus=corpus data.labels=mfcc_km100 \
  objective.label_rate=100 run.seed=1 --out init.h5 2> init.log || { cat init.log; exit 1; }
"$KOE" kmeans --corpus corpus --source layer:$L --ckpt init.h5 --k 500 --seed 1 --out km_init.h5 2> /dev/null
"$KOE" label --corpus corpus --kmeans km_init.h5 --ckpt init.h5 --name init_l${L}_km500 2> /dev/null

for l in mfcc_km100 iter1_l${L}_km500 init_l${L}_km500; do
  "$KOE" analyze labels --corpus corpus --labels $l --json > $l.json
done
# what each layer learned: the trained iteration-1 model (phone and pnmi from LAYER=auto's run, mel
# here, conv layers included) against the untrained one
ck=work/iter1/checkpoints/$(head -n 1 work/iter1/checkpoints/latest)
"$KOE" analyze layers --ckpt "$ck" --corpus corpus --props mel --conv --out mel_trained > /dev/null 2>&1
"$KOE" analyze layers --ckpt init.h5 --corpus corpus --props mel,phone --out untrained > /dev/null 2>&1
L=$L "$PYTHON" - << 'PY'
import json, os
L = int(os.environ["L"])
p = {l: json.load(open(f"{l}.json"))["pnmi"] for l in ("mfcc_km100", f"iter1_l{L}_km500", f"init_l{L}_km500")}
print("PNMI: MFCC k=100 (iteration 1) %.3f, trained layer %d k=500 (iteration 2, LAYER=auto) %.3f, untrained layer %d "
      "k=500 %.3f" % (p["mfcc_km100"], L, p[f"iter1_l{L}_km500"], L, p[f"init_l{L}_km500"]))
assert p[f"iter1_l{L}_km500"] > p["mfcc_km100"], "FAIL: iteration-2 labels (LAYER=auto) do not beat the MFCC labels"
assert p[f"init_l{L}_km500"] < p["mfcc_km100"], "FAIL: control: an untrained layer already beats MFCC"
auto, mel, un = (json.load(open(f"{d}/layers.json")) for d in ("work/layer_auto", "mel_trained", "untrained"))
best = int(auto["best"]["phone"][1:])
ph, ph0 = auto["properties"]["phone"]["pwcca"][best], un["properties"]["phone"]["pwcca"][best]
print(f"phone PWCCA at the best layer T{best}: trained {ph:.3f}, untrained {ph0:.3f}")
assert ph > ph0, "FAIL: training did not raise the best layer's phone PWCCA"
m = mel["properties"]["mel"]["pwcca"]
assert mel["layers"][0] == "C1" and mel["layers"][-1] == f"T{len(auto['layers']) - 1}", mel["layers"]
print("mel PWCCA by layer (trained; not asserted, see the header):",
      " ".join(f"{n} {v:.3f}" for n, v in zip(mel["layers"], m)), "best", mel["best"]["mel"])
PY

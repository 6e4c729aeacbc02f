#!/usr/bin/env bash
# recipes/analysis/readme_example.sh — `make readme-analysis`: the README's "What each layer
# learned" example, regenerated from a real run (never pasted by hand): the demo corpus (koe synth
# --minutes 4 --seed 1, with phone and word alignments), HuBERT iteration 1 of the tiny recipe shrunk
# as in tests/e2e/hubert_iterations.sh (2 x 128 transformer, 800 updates, through
# recipes/hubert/run.sh iter1), `koe analyze layers` on it and on the same model untrained (koe init,
# same seed), and `koe analyze layers` timings. Writes docs/analysis/{curves,cka}.png and replaces
# the text between the README's `<!-- analysis-example:begin -->` and `<!-- analysis-example:end -->`
# lines with the table and the pictures.
# Environment: BUILD (build), WORK (BUILD/readme-analysis; a finished iteration 1 there is reused),
# THREADS (OMP threads, default 2). About 15 minutes on 2 cores, most of it the training.
# It must not: edit anything in README.md outside the two marker lines.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KOE=$PWD/$BUILD/koe
W=${WORK:-$BUILD/readme-analysis}
export OMP_NUM_THREADS=${THREADS:-2}
grep -q '^<!-- analysis-example:begin -->$' README.md && grep -q '^<!-- analysis-example:end -->$' README.md \
  || { echo "readme_example.sh: README.md lacks the analysis-example marker lines" >&2; exit 1; }
mkdir -p "$W" docs/analysis
[ -d "$W/syn" ] || "$KOE" synth --out "$W/syn" --minutes 4 --seed 1
[ -f "$W/corpus/corpus.h5" ] || "$KOE" prepare --out "$W/corpus" --shard-mb 2 --lang-from-dir \
  --align "$W/syn/align.ctm" --words "$W/syn/words.ctm" "$W/syn/wav"
SHRINK="data.max_tokens=160000 data.max_sample_size=48000
  model.conv_feature_layers=[(128,10,5)]+[(128,3,2)]*4+[(128,2,2)]*2
  model.encoder_embed_dim=128 model.encoder_layers=2 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=512
  model.conv_pos=32 model.dropout=0 model.attention_dropout=0 model.dropout_input=0 model.encoder_layerdrop=0
  run.log_every=100 run.valid_every=0"
CORPUS=$W/corpus WORK=$W/hubert RECIPE1=recipes/tiny/hubert.ini KOE=$KOE THREADS=$OMP_NUM_THREADS \
  TRAIN_ARGS="$SHRINK optim.warmup=30 optim.max_updates=800" bash recipes/hubert/run.sh iter1
ck=$W/hubert/iter1/checkpoints/$(head -n 1 "$W/hubert/iter1/checkpoints/latest")
# shellcheck disable=SC2086
[ -f "$W/init.h5" ] || "$KOE" init recipes/tiny/hubert.ini $SHRINK data.corpus="$W/corpus" data.labels=mfcc_km100 \
  objective.label_rate=100 run.seed=1 --out "$W/init.h5"
PROPS=mel,phone,phone-frame,intra,cka,pnmi
"$KOE" analyze layers --ckpt "$ck" --corpus "$W/corpus" --props $PROPS --conv --out "$W/trained" 2> "$W/trained.log"
"$KOE" analyze layers --ckpt "$W/init.h5" --corpus "$W/corpus" --props $PROPS --conv --out "$W/untrained" 2> "$W/untrained.log"
cp "$W/trained/curves.png" docs/analysis/curves.png
cp "$W/trained/cka.png" docs/analysis/cka.png
"${PYTHON:-/usr/bin/python3}" - "$W" "$ck" << 'PY'
import json, os, re, sys
w, ck = sys.argv[1], sys.argv[2]
t, u = (json.load(open(f"{w}/{d}/layers.json")) for d in ("trained", "untrained"))
props = [p for p in ("mel", "phone", "phone-frame", "intra", "pnmi") if p in t["properties"]]
key = lambda p: "pnmi" if p == "pnmi" else "pwcca"
cell = lambda v: "-" if v is None else f"{v:.3f}"
rows = ["| | " + " | ".join(props) + " |", "| --- |" + " --- |" * len(props)]
for name, js in (("trained", t), ("untrained", u)):
    for l, layer in enumerate(js["layers"]):
        rows.append(f"| {name} {layer} | " + " | ".join(cell(js["properties"][p][key(p)][l]) for p in props) + " |")
ph = t["properties"]["phone"]
s = t["settings"]
stamp = (f"({s['frames']} frames of {s['utterances']} utterances, {ph['n']} phone segments in {ph['classes']} classes, "
         f"{s['folds']} folds, {s['trials']} trials; best layer: " +
         ", ".join(f"{p} {t['best'][p]}" for p in props) + ".)")
timing = open(f"{w}/trained.log").read()
m = re.search(r"seconds per rank \(mean of 1\): forwards ([0-9.]+); statistics ([0-9.]+), waiting for the other ranks "
              r"[0-9.]+, reductions ([0-9.]+), solves ([0-9.]+), CKA and k-means ([0-9.]+), outputs and charts ([0-9.]+); "
              r"outside the forwards ([0-9.]+) \([0-9.]+ x the forwards\); peak RSS ([0-9]+) MB", timing)
body = ["<!-- analysis-example:begin -->",
        "<!-- written by `make readme-analysis` (recipes/analysis/readme_example.sh); do not edit by hand -->",
        "The tiny HuBERT of tests/e2e/hubert_iterations.sh (2 x 128 transformer, iteration 1: 800 updates on",
        "MFCC k-means labels of the demo corpus) against the same model untrained:",
        "", "```", f"koe analyze layers --ckpt {os.path.relpath(ck, w)} --corpus corpus --props {','.join(props)},cka --conv --out layers", "```", ""]
body += rows + ["", stamp]
if not m:
    sys.exit(f"readme_example.sh: {w}/trained.log has no timing line koe analyze layers prints (its format changed?)")
f = [float(x) for x in m.groups()]
body += ["", f"One process (timed by the run that wrote this; times depend on the machine and its load): {f[0]:.1f} s in the forwards, {f[6]:.1f} s outside them (statistics "
         f"{f[1]:.1f}, reductions {f[2]:.1f}, solves {f[3]:.1f}, CKA and k-means {f[4]:.1f}, outputs and charts {f[5]:.1f}); peak RSS {f[7]:.0f} MB."]
body += ["", "![PWCCA and PNMI by layer](docs/analysis/curves.png)", "",
         "![debiased linear CKA between layers](docs/analysis/cka.png)", "<!-- analysis-example:end -->"]
text = open("README.md").read()
a, b = text.index("<!-- analysis-example:begin -->"), text.index("<!-- analysis-example:end -->")
b += len("<!-- analysis-example:end -->")
open("README.md", "w").write(text[:a] + "\n".join(body) + text[b:])
print("README.md: analysis example updated")
PY

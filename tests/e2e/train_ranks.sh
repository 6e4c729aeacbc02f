#!/usr/bin/env bash
# tests/e2e/train_ranks.sh — data-parallel `koe train` gives the same run at any rank count: for each
# objective (HuBERT on k-means labels, wav2vec 2.0, BEST-RQ) the shrunk tiny model trains 20 updates on
# the same global batches at 1 rank and under mpirun at 2, 3 and 4 ranks, with and without ZeRO-1
# (run.zero=1); every logged step's loss must be within 1e-5 (relative) of the 1-rank run's, with the
# same scored-frame count. Small global batches make some ranks' slices empty at 3 and 4 ranks.
# Dropout is on at every site (the recipes' 0.1, plus activation dropout 0.1): its masks are keyed by
# utterance id (distributed/README.md, Determinism), so they do not depend on the rank count or the batch layout.
# In bf16 (run.precision = bf16; HuBERT at 1 and 2 ranks; where the CPU has bf16 dot products,
# lib/bf16.sh) within bf16's resolution, 2^-8 (see there).
# Then checkpoints: a 2-rank ZeRO-1 run resumed from its step-10 checkpoint logs exactly the lines of
# the uninterrupted one, and the same checkpoint resumed on 3 ranks without ZeRO-1 stays within 1e-5.
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/bf16.sh"
T="$KOE_TMP/train_ranks"
mkdir -p "$T"
cd "$T"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$KOE" synth --out syn --minutes 1 --langs en,de --seed 1 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 20 --out km.h5 2> /dev/null
"$KOE" label --corpus corp --kmeans km.h5 --name km20 2> /dev/null

COMMON=(data.corpus=corp data.max_tokens=64000 data.max_sample_size=32000
        model.encoder_embed_dim=64 model.encoder_layers=2 model.encoder_attention_heads=2
        model.encoder_ffn_embed_dim=128 model.activation_dropout=0.1
        model.encoder_layerdrop=0 optim.max_updates=20 optim.warmup=5 optim.lr=0.002
        run.log_every=1 run.save_every=10 run.keep_last=5 run.valid_every=0)
CONV=("model.conv_feature_layers=[(64,10,5)] + [(64,3,2)]*4 + [(64,2,2)]*2" model.conv_pos=16)
run() { # NAME RANKS RECIPE OVERRIDES...
  local name=$1 n=$2 recipe=$3
  shift 3
  if [ "$n" = 1 ]; then
    "$KOE" train "$KOE_ROOT/recipes/tiny/$recipe.ini" "${COMMON[@]}" "$@" run.dir="$name" > /dev/null 2> "$name.err" ||
      { cat "$name.err"; echo "FAIL: $name"; exit 1; }
  else
    mpirun --oversubscribe -np "$n" "$KOE" train "$KOE_ROOT/recipes/tiny/$recipe.ini" "${COMMON[@]}" "$@" \
      run.dir="$name" > /dev/null 2> "$name.err" || { cat "$name.err"; echo "FAIL: $name"; exit 1; }
  fi
}
compare() { # REF RUN [first step [relative tolerance, default 1e-5]]
  "$PYTHON" - "$@" << 'PY'
import json, sys
ref, run = sys.argv[1], sys.argv[2]
first = int(sys.argv[3]) if len(sys.argv) > 3 else 1
tol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-5
load = lambda path: [json.loads(l) for l in open(path)]  # no scored frame in an interval: loss null
a, b = load(f"{ref}/log.jsonl"), load(f"{run}/log.jsonl")
a = [r for r in a if r["step"] >= first]
b = [r for r in b if r["step"] >= first]
assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(first, 21)), (ref, run, [r["step"] for r in b])
worst = 0.0
for x, y in zip(a, b):
    assert x["frames"] == y["frames"] and x["skipped"] == y["skipped"], (run, x, y)
    if x["loss"] is None:
        assert y["loss"] is None, (run, x, y)
        continue
    rel = abs(x["loss"] - y["loss"]) / abs(x["loss"])
    worst = max(worst, rel)
    assert rel <= tol, f"{run} step {x['step']}: loss {y['loss']} vs {x['loss']} at 1 rank (rel {rel:.2e})"
print(f"  {run:>16}: {len(b)} steps, worst relative loss difference vs {ref} {worst:.1e}")
PY
}

for obj in hubert wav2vec2 bestrq; do
  extra=()
  [ $obj = hubert ] && extra=(data.labels=km20 "${CONV[@]}")
  [ $obj = wav2vec2 ] && extra=("${CONV[@]}" objective.num_negatives=10)
  run $obj-1 1 $obj "${extra[@]}"
  for cfg in 2:0 2:1 3:0 3:1 4:0 4:1; do
    n=${cfg%:*} z=${cfg#*:}
    run $obj-$n-z$z "$n" $obj "${extra[@]}" run.zero=$z
    compare $obj-1 $obj-$n-z$z
  done
done

# run.precision = bf16: operands are rounded element by element, so a rank's slice of the batch
# rounds as the whole batch does; what differs is still only the order of fp32 additions, but a value
# moved by that across a bf16 rounding boundary moves by up to 2^-8 of itself. So the rule: every
# step's loss within 2^-8 (relative, bf16's resolution) of the 1-rank bf16 run's.
if bf16_here hubert-1.err "run.precision = bf16 at 1 and 2 ranks"; then
  run hubert16-1 1 hubert data.labels=km20 "${CONV[@]}" run.precision=bf16
  run hubert16-2 2 hubert data.labels=km20 "${CONV[@]}" run.precision=bf16 run.zero=1
  grep -q "precision bf16 (dnnl_gemm_bf16bf16f32" hubert16-2.err || { cat hubert16-2.err; echo "FAIL: not bf16"; exit 1; }
  compare hubert16-1 hubert16-2 1 0.00390625
fi

# ZeRO-1 checkpoints: the step-10 checkpoint of the 2-rank ZeRO-1 run resumed on 2 ranks (bit for bit)
# and on 3 ranks without ZeRO-1 (to float reassociation)
for d in resume2 resume3; do
  mkdir -p $d/checkpoints
  cp bestrq-2-z1/checkpoints/step-00000010.h5 $d/checkpoints/
  echo step-00000010.h5 > $d/checkpoints/latest
  head -10 bestrq-2-z1/log.jsonl > $d/log.jsonl
done
[ "$(cat bestrq-2-z1/checkpoints/latest)" = step-00000020.h5 ] || { echo "FAIL: latest is $(cat bestrq-2-z1/checkpoints/latest)"; exit 1; }
run resume2 2 bestrq run.zero=1
run resume3 3 bestrq run.zero=0
strip() { sed -E 's/"(audio_s_per_s|elapsed_s|max_rss_mb)": [^,]*, //g; s/, "comm_time_s": [^,}]*//' "$1"; }
cmp <(strip bestrq-2-z1/log.jsonl) <(strip resume2/log.jsonl) || { echo "FAIL: resumed 2-rank ZeRO-1 log differs"; exit 1; }
echo "  resume2: 2-rank ZeRO-1 run resumed at step 10 logs the uninterrupted run's lines bit for bit"
compare bestrq-1 resume3 11

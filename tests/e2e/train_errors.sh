#!/usr/bin/env bash
# tests/e2e/train_errors.sh — `koe train` refuses bad input with exit 1 and a message naming what is
# wrong: a recipe typo (file:line and the key), a missing corpus, a missing label set, a label rate
# that disagrees with the label set, labels made for another corpus (fingerprint), a label file
# that does not store every label its shape claims (part-written), a resume with
# another seed; recipes the model or loader cannot run (fbank_dim other than 80, an empty run.dir, a
# conv stack wider than the shortest utterance), run.precision = bf16 on a CPU without bf16 dot
# products. And the non-finite guard: with a NaN in the weights every update is skipped (logged as
# null in log.jsonl, which stays JSON), the run stops after optim.max_skips in a row with exit 2 and
# writes no checkpoint.
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/bf16.sh"
T="$KOE_TMP/train_errors"
mkdir -p "$T"
cd "$T"
"$KOE" synth --out s1 --minutes 0.3 --langs en --seed 1 2> /dev/null
"$KOE" synth --out s2 --minutes 0.3 --langs en --seed 2 2> /dev/null
"$KOE" prepare --out c1 s1 2> /dev/null
"$KOE" prepare --out c2 s2 2> /dev/null
"$KOE" kmeans --corpus c1 --source mfcc --k 8 --out km.h5 2> /dev/null
"$KOE" label --corpus c1 --kmeans km.h5 --name km8 2> /dev/null

R="$KOE_ROOT/recipes/tiny/hubert.ini"
SMALL=(data.max_tokens=64000 data.max_sample_size=32000
       "model.conv_feature_layers=[(32,10,5)] + [(32,3,2)]*4 + [(32,2,2)]*2" model.encoder_embed_dim=32
       model.encoder_layers=1 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=64 model.conv_pos=8
       objective.label_rate=100 optim.warmup=2 optim.max_updates=6 run.save_every=3 run.valid_every=0)

# expect_fail CODE PATTERN... -- ARGS: koe train ARGS exits CODE and its stderr matches every PATTERN
expect_fail() {
  local code=$1; shift
  local pats=()
  while [ "$1" != -- ]; do pats+=("$1"); shift; done
  shift
  local rc=0
  "$KOE" train "$@" > out.txt 2> err.txt || rc=$?
  if [ $rc != "$code" ]; then cat err.txt; echo "FAIL: koe train $*: exit $rc, expected $code"; exit 1; fi
  for p in "${pats[@]}"; do
    grep -q -- "$p" err.txt || { cat err.txt; echo "FAIL: message lacks '$p'"; exit 1; }
  done
  echo "ok ($code): $(head -c 200 err.txt | tr '\n' ' ')"
}

printf '[data]\ncorpus = c1\n\n[model]\nencoder_layerz = 2\n' > typo.ini
expect_fail 1 "typo.ini:5" "encoder_layerz" -- typo.ini
expect_fail 1 "nosuch" -- "$R" data.corpus=nosuch data.labels=km8 run.dir=r "${SMALL[@]}"
expect_fail 1 "data.labels" -- "$R" data.corpus=c1 data.labels= run.dir=r "${SMALL[@]}"
expect_fail 1 "km9" -- "$R" data.corpus=c1 data.labels=km9 run.dir=r "${SMALL[@]}"
expect_fail 1 "frame_rate 100" "objective.label_rate" -- "$R" data.corpus=c1 data.labels=km8 run.dir=r \
  "${SMALL[@]}" objective.label_rate=50
mkdir -p c2/labels && cp -r c1/labels/km8 c2/labels/
expect_fail 1 "c2" "koe label" -- "$R" data.corpus=c2 data.labels=km8 run.dir=r "${SMALL[@]}"
expect_fail 1 "c2" -- "$R" data.corpus=c1 data.labels=km8 data.valid_corpus=c2 run.dir=r "${SMALL[@]}"

# a label file whose /labels a killed writer left part-written (one chunk of four stored): the
# unwritten labels would read as class 0 without an error, fletcher32 or not; refused at open
cp -r c1 cpart
"$PYTHON" - << 'PY'
import h5py
with h5py.File("cpart/labels/km8/shard-00000.h5", "r+") as f:
    x = f["labels"][:]
    assert len(x) > 1500, len(x)
    del f["labels"]
    f.create_dataset("labels", shape=x.shape, chunks=((len(x) + 3) // 4,), fletcher32=True, dtype="<u2")[:10] = x[:10]
PY
expect_fail 1 "shard-00000.h5: /labels stores 1 of the 4 chunks its [0-9]* shape needs: values were never written" \
  "re-run \`koe label\`" -- "$R" data.corpus=cpart data.labels=km8 run.dir=rpart "${SMALL[@]}"

# a label out of range is found at the first step, while the loader's threads read ahead: the error,
# exit 1, and the threads joined before exit (under ASan an exit() under them crashed)
cp -r c1 cdmg
"$PYTHON" -c "import h5py; f = h5py.File('cdmg/labels/km8/shard-00000.h5', 'r+'); f['/labels'][:] = 200"
expect_fail 1 "label 200 >= n_classes 8" "koe label" -- "$R" data.corpus=cdmg data.labels=km8 run.dir=rdmg \
  "${SMALL[@]}" data.threads=2

# run.precision = bf16 on a CPU without bf16 dot products is refused naming the key, before anything is
# written; auto then falls back to fp32 and says so, and picks bf16 where the CPU has it. The CPU
# without: oneDNN's own ONEDNN_MAX_CPU_ISA capping its ISA below avx512_core_bf16.
NOBF16=AVX512_CORE_VNNI
ONEDNN_MAX_CPU_ISA=$NOBF16 expect_fail 1 "run.precision = bf16" "no bf16 dot products" "run.precision = fp32" -- \
  "$R" data.corpus=c1 data.labels=km8 run.dir=rp "${SMALL[@]}" run.precision=bf16
[ ! -e rp ] || { echo "FAIL: the refused bf16 run wrote rp/"; exit 1; }
ONEDNN_MAX_CPU_ISA=$NOBF16 "$KOE" train "$R" data.corpus=c1 data.labels=km8 run.dir=rauto "${SMALL[@]}" \
  run.precision=auto > /dev/null 2> auto.err || { cat auto.err; exit 1; }
grep -q "run.precision = auto: this CPU has no bf16 dot products; running in fp32" auto.err || { cat auto.err; exit 1; }
grep -q "precision fp32 (dnnl_sgemm)" auto.err || { cat auto.err; exit 1; }
if grep -q "bf16 dot products: yes" auto.err; then echo "FAIL: ONEDNN_MAX_CPU_ISA did not cap oneDNN"; exit 1; fi
"$KOE" train "$R" data.corpus=c1 data.labels=km8 run.dir=rauto2 "${SMALL[@]}" run.precision=auto > /dev/null \
  2> auto2.err || { cat auto2.err; exit 1; }
if bf16_here auto2.err "run.precision = auto picking bf16"; then
  grep -q "precision bf16 (dnnl_gemm_bf16bf16f32" auto2.err || { cat auto2.err; echo "FAIL: auto did not pick bf16"; exit 1; }
else
  grep -q "precision fp32 (dnnl_sgemm)" auto2.err || { cat auto2.err; echo "FAIL: auto did not fall back to fp32"; exit 1; }
fi
echo "ok: bf16 refused without bf16 dot products; auto falls back to fp32, and picks bf16 where the CPU has it"

# what the model or the loader cannot run is refused before anything is written
B="$KOE_ROOT/recipes/tiny/bestrq.ini"
expect_fail 1 "model.fbank_dim = 81" "80" -- "$B" data.corpus=c1 run.dir=r81 model.fbank_dim=81 \
  optim.max_updates=2 optim.warmup=1
[ ! -e r81 ] || { echo "FAIL: r81 written"; exit 1; }
expect_fail 1 "run.dir" "empty" -- "$R" data.corpus=c1 data.labels=km8 run.dir= "${SMALL[@]}"
expect_fail 1 "model.conv_feature_layers" "min_sample_size" -- "$R" data.corpus=c1 data.labels=km8 run.dir=r \
  "${SMALL[@]}" "model.conv_feature_layers=[(32,1000000,5)]"

# a good run, then a resume with another seed is refused
"$KOE" train "$R" data.corpus=c1 data.labels=km8 run.dir=good "${SMALL[@]}" > /dev/null 2> good.err \
  || { cat good.err; exit 1; }
expect_fail 1 "run.seed" -- "$R" data.corpus=c1 data.labels=km8 run.dir=good "${SMALL[@]}" run.seed=2 \
  optim.max_updates=9

# NaN weights: every update skipped, stop after max_skips with exit 2, no checkpoint written
mkdir -p nan/checkpoints
cp good/checkpoints/step-00000006.h5 nan/checkpoints/
echo step-00000006.h5 > nan/checkpoints/latest
"$PYTHON" - nan/checkpoints/step-00000006.h5 << 'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    w = f["model/label_embeddings"]
    a = w[...]
    a[0, 0] = np.nan
    w[...] = a
PY
"$PYTHON" "$KOE_ROOT/tests/reference/ckpt_checksum.py" nan/checkpoints/step-00000006.h5  # the NaN is on purpose
expect_fail 2 "update skipped" "optim.max_skips" "checkpoint" -- "$R" data.corpus=c1 data.labels=km8 run.dir=nan \
  "${SMALL[@]}" optim.max_updates=20 optim.max_skips=3
test "$(ls nan/checkpoints)" = "$(printf 'latest\nstep-00000006.h5')"
test "$(cat nan/checkpoints/latest)" = step-00000006.h5
grep -c "update skipped" err.txt | grep -qx 3
# log.jsonl stays JSON when every update of an interval was skipped: no loss is null, not nan
mkdir -p nan2/checkpoints
cp nan/checkpoints/step-00000006.h5 nan/checkpoints/latest nan2/checkpoints/
expect_fail 2 "update skipped" -- "$R" data.corpus=c1 data.labels=km8 run.dir=nan2 "${SMALL[@]}" \
  optim.max_updates=20 optim.max_skips=3 run.log_every=1
"$PYTHON" - nan2/log.jsonl << 'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]  # json.loads rejects nan
assert [r["step"] for r in rows] == [7, 8], rows
assert all(r["loss"] is None and r["acc"] is None and r["grad_norm"] is None for r in rows), rows
PY
echo "all refusals and the non-finite stop behave"

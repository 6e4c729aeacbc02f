#!/usr/bin/env bash
# tests/e2e/train_hubert.sh — `koe train` end to end with HuBERT on a synthesized corpus: labels from
# koe kmeans + koe label (MFCC, k=50), a shrunk tiny model (dropout off) trained 400 updates; the loss falls and the
# masked and unmasked (acc_u) accuracies rise (mean of the first 10% of log lines vs the last 10%), every
# log.jsonl field is present, TensorBoard's files hold the same values, validation fields appear every
# valid_every, checkpoints are written. The same run with run.precision = bf16 (where the CPU has bf16
# dot products, lib/bf16.sh) ends within 2% of its loss
# and 0.01 of its accuracy (precision_match.py). Resume: a run started
# from the first run's checkpoint at step 320, stopped by SIGTERM (exit 3 after a clean checkpoint) and
# resumed again, logs exactly the same lines after step 320 as the uninterrupted run.
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/bf16.sh"
T="$KOE_TMP/train_hubert"
mkdir -p "$T"
cd "$T"
"$KOE" synth --out syn --minutes 1 --langs en,de --seed 1 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 50 --out km.h5 2> /dev/null
"$KOE" label --corpus corp --kmeans km.h5 --name km50 2> /dev/null

# the tiny recipe, shrunk so 400 updates take under a minute on one thread
OV=(data.corpus=corp data.labels=km50 data.valid_corpus=corp objective.label_rate=100
    data.max_tokens=160000 data.max_sample_size=48000 data.min_sample_size=16000
    "model.conv_feature_layers=[(128,10,5)] + [(128,3,2)]*4 + [(128,2,2)]*2"
    model.encoder_embed_dim=128 model.encoder_layers=2 model.encoder_attention_heads=2
    model.encoder_ffn_embed_dim=512 model.conv_pos=32 model.dropout=0 model.attention_dropout=0
    model.dropout_input=0 model.encoder_layerdrop=0
    optim.lr=0.002 optim.warmup=30 optim.max_updates=400
    run.log_every=10 run.save_every=40 run.keep_last=20 run.valid_every=100 run.seed=7)
"$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${OV[@]}" run.dir=a > a.out 2> a.err || { cat a.err; exit 1; }
tail -3 a.err
grep -q "^# resolved recipe (hash [0-9a-f]\{16\})" a.out || { echo "FAIL: resolved recipe not printed"; exit 1; }
test -f a/checkpoints/step-00000400.h5
test "$(cat a/checkpoints/latest)" = step-00000400.h5
test -f a/recipe.ini

"$PYTHON" - a/log.jsonl << 'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(10, 401, 10)), [r["step"] for r in rows]
for r in rows:
    for k in ("step", "loss", "acc", "acc_u", "lr", "grad_norm", "audio_s_per_s", "skipped"):
        assert k in r and math.isfinite(r[k]), (k, r)
    assert 0 <= r["acc_u"] <= 1, r
    assert ("valid_loss" in r) == (r["step"] % 100 == 0), r
    assert r["skipped"] == 0, r
n = max(1, len(rows) // 10)
first, last = rows[:n], rows[-n:]
mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
print(f"loss {mean(first, 'loss'):.3f} -> {mean(last, 'loss'):.3f}, "
      f"acc {mean(first, 'acc'):.3f} -> {mean(last, 'acc'):.3f}")
assert mean(last, "loss") < mean(first, "loss") - 0.3, "loss did not fall"
assert mean(last, "acc") > mean(first, "acc") + 0.02, "masked accuracy did not rise"
v = [r for r in rows if "valid_loss" in r]
print("valid", [(r["step"], round(r["valid_loss"], 3), round(r["valid_acc"], 3)) for r in v])
assert v[-1]["valid_loss"] < v[0]["valid_loss"], "validation loss did not fall"
print(f"acc_u {mean(first, 'acc_u'):.3f} -> {mean(last, 'acc_u'):.3f}")
assert mean(last, "acc_u") > mean(first, "acc_u"), "unmasked accuracy did not rise"
PY
# TensorBoard holds every scalar of log.jsonl, acc_u included, at the same steps
"$PYTHON" "$KOE_ROOT/tests/reference/tfevents_decode.py" check a a/log.jsonl

# run.precision = bf16: the same run with bf16 GEMM operands ends at the same loss and accuracy
if bf16_here a.err "run.precision = bf16"; then
  "$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${OV[@]}" run.precision=bf16 run.dir=a16 > /dev/null 2> a16.err ||
    { cat a16.err; exit 1; }
  grep -q "precision bf16 (dnnl_gemm_bf16bf16f32" a16.err || { cat a16.err; echo "FAIL: bf16 kernels not reported"; exit 1; }
  "$PYTHON" "$KOE_ROOT/tests/reference/precision_match.py" a/log.jsonl a16/log.jsonl
fi

# resume: start from a's step-320 checkpoint, stop with SIGTERM, resume, compare with a
mkdir -p b/checkpoints
cp a/checkpoints/step-00000320.h5 b/checkpoints/
echo step-00000320.h5 > b/checkpoints/latest
"$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${OV[@]}" run.dir=b > /dev/null 2> b.err &
pid=$!
for _ in $(seq 600); do [ -f b/checkpoints/step-00000360.h5 ] && break; sleep 0.1; done
kill -TERM $pid
rc=0
wait $pid || rc=$?
[ $rc = 3 ] || { cat b.err; echo "FAIL: SIGTERM: exit $rc, expected 3"; exit 1; }
grep -q "stopped by a signal" b.err
"$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${OV[@]}" run.dir=b > /dev/null 2> b2.err || { cat b2.err; exit 1; }
grep -q "resumed from b/checkpoints/step-00000[34][0-9][0-9].h5" b2.err || { cat b2.err; echo "FAIL: did not resume"; exit 1; }
strip() { sed -E 's/"(audio_s_per_s|elapsed_s|max_rss_mb)": [^,]*, //g' "$1" | awk -F'[ ,]' '$2 > 320'; }
diff <(strip a/log.jsonl) <(strip b/log.jsonl) || { echo "FAIL: resumed run differs from the uninterrupted one"; exit 1; }
test "$(strip b/log.jsonl | wc -l)" = 8
echo "resume bit-exact: $(strip b/log.jsonl | wc -l) log lines after step 320 identical"

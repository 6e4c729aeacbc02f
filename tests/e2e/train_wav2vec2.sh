#!/usr/bin/env bash
# tests/e2e/train_wav2vec2.sh — `koe train` with wav2vec 2.0 on a synthesized corpus (one minute, two
# languages): the tiny recipe (128-wide conv stack, 4 x 256 transformer, no dropout) with 20 negatives,
# temperature decay 0.99 per update, 600 updates. log.jsonl carries code_ppl, prob_ppl and temp; the
# temperature follows max(2 * 0.99^step, 0.5); prob_ppl stays above 30% of G*V on every line after the
# warmup (no codebook collapse); the loss falls and the masked accuracy rises (mean of the first 10%
# of lines vs the last 10%; the accuracy leaves chance at update ~200 here, at ~400 with Base's
# dropouts (0.10 at 600), and not within 600 updates with a 2 x 128 transformer). With Base's
# dropouts on, a run resumed from a step-40 checkpoint (Gumbel noise, negatives and dropout keyed by
# step) logs exactly the lines of the uninterrupted run after step 40. The same 600 updates with
# run.precision = bf16 end within 2% of the loss and 0.01 of the accuracy (precision_match.py), where the
# CPU has bf16 dot products (lib/bf16.sh).
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/bf16.sh"
T="$KOE_TMP/train_wav2vec2"
mkdir -p "$T"
cd "$T"
"$KOE" synth --out syn --minutes 1 --langs en,de --seed 1 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null

OV=(data.corpus=corp data.max_tokens=160000 data.max_sample_size=48000
    model.encoder_layerdrop=0 objective.num_negatives=20 "objective.temp=(2,0.5,0.99)"
    optim.warmup=30 run.log_every=10 run.save_every=100 run.keep_last=5 run.valid_every=0)
"$KOE" train "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${OV[@]}" optim.max_updates=600 run.dir=a > /dev/null 2> a.err || { cat a.err; exit 1; }
tail -2 a.err

"$PYTHON" - a/log.jsonl << 'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(10, 601, 10)), [r["step"] for r in rows]
GV = 2 * 320
for r in rows:
    for k in ("step", "loss", "acc", "lr", "grad_norm", "audio_s_per_s", "skipped", "code_ppl", "prob_ppl", "temp"):
        assert k in r and math.isfinite(r[k]), (k, r)
    # the line averages the temperatures of its 10 updates, steps s-10 .. s-1 completed
    want = sum(max(2 * 0.99 ** s, 0.5) for s in range(r["step"] - 10, r["step"])) / 10
    assert abs(r["temp"] - want) < 1e-6 * want, (r["step"], r["temp"], want)
    # collapse is a training failure: judged after the warmup (the first line reflects the init)
    if r["step"] > 30:
        assert r["prob_ppl"] > 0.3 * GV, f"codebook collapse at step {r['step']}: prob_ppl {r['prob_ppl']}"
n = max(1, len(rows) // 10)
mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
f, l = rows[:n], rows[-n:]
print(f"loss {mean(f, 'loss'):.3f} -> {mean(l, 'loss'):.3f}, acc {mean(f, 'acc'):.3f} -> {mean(l, 'acc'):.3f}, "
      f"prob_ppl after warmup min {min(r['prob_ppl'] for r in rows if r['step'] > 30):.1f} of {GV}")
assert mean(l, "loss") < mean(f, "loss") - 0.3, "loss did not fall"
assert mean(l, "acc") > mean(f, "acc") + 0.05, "masked accuracy did not rise"
PY

# run.precision = bf16: the same run ends within 2% of fp32's loss and 0.01 of its accuracy
if bf16_here a.err "run.precision = bf16"; then
  "$KOE" train "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${OV[@]}" optim.max_updates=600 run.precision=bf16 run.dir=a16 \
    > /dev/null 2> a16.err || { cat a16.err; exit 1; }
  grep -q "precision bf16 (dnnl_gemm_bf16bf16f32" a16.err || { cat a16.err; echo "FAIL: bf16 kernels not reported"; exit 1; }
  "$PYTHON" "$KOE_ROOT/tests/reference/precision_match.py" a/log.jsonl a16/log.jsonl
fi

# resume, with Base's dropouts on (their masks are keyed by utterance and step too): 60 updates, then
# a run restarted from the step-40 checkpoint logs the same last two lines
OV+=(model.dropout=0.1 model.attention_dropout=0.1 model.dropout_input=0.1 model.dropout_features=0.1
     optim.max_updates=60 run.save_every=20)
"$KOE" train "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${OV[@]}" run.dir=c > /dev/null 2> c.err || { cat c.err; exit 1; }
mkdir -p b/checkpoints
cp c/checkpoints/step-00000040.h5 b/checkpoints/
echo step-00000040.h5 > b/checkpoints/latest
"$KOE" train "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${OV[@]}" run.dir=b > /dev/null 2> b.err || { cat b.err; exit 1; }
grep -q "resumed from b/checkpoints/step-00000040.h5" b.err
strip() { sed -E 's/"(audio_s_per_s|elapsed_s|max_rss_mb)": [^,]*, //g' "$1" | awk -F'[ ,]' '$2 > 40'; }
diff <(strip c/log.jsonl) <(strip b/log.jsonl) || { echo "FAIL: resumed run differs"; exit 1; }
test "$(strip b/log.jsonl | wc -l)" = 2
echo "resume bit-exact: 2 log lines after step 40 identical"

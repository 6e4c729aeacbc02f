#!/usr/bin/env bash
# tests/e2e/train_health.sh — the run.health_* checks stop a dying run with exit code 2 and a message
# naming the check, what usually causes it with the recipe keys to change, and the newest checkpoint,
# which resumes; the same recipes with healthy settings run to the end. Shrunk tiny recipes:
#  (a) wav2vec 2.0 whose quantizer collapses (optim.lr=0.05, no diversity term: code_ppl falls to
#      G = 2 within a few updates): run.health_min_ppl (default 4) stops it after run.health_patience
#      log lines below; resumed with the check off (run.health_min_ppl=0) it continues;
#  (b) BEST-RQ with a 2-entry codebook: run.health_min_target_ppl (default 2) stops it;
#  (c) BEST-RQ at optim.lr=1e-9 (the loss does not move): run.health_plateau_updates=20 stops it at
#      step 20; at optim.lr=0.002 the loss has fallen by more than run.health_plateau_drop (1%), the
#      targets' perplexity is far above 2, and the run ends normally.
set -euo pipefail
T="$KOE_TMP/train_health"
mkdir -p "$T"
cd "$T"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
"$KOE" synth --out syn --minutes 1 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
SMALL=(data.corpus=corp data.max_tokens=96000 data.max_sample_size=32000 data.threads=0
       model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_attention_heads=2
       model.encoder_ffn_embed_dim=128)
expect_stop() { # NAME KEY: exit code 2, the message names the check, its keys and the checkpoint
    local name=$1 key=$2 code=0
    shift 2
    "$KOE" train "$@" run.dir="$name" > /dev/null 2> "$name.err" || code=$?
    test "$code" = 2 || { echo "FAIL: $name exit code $code, expected 2"; cat "$name.err"; exit 1; }
    grep "health check $key failed" "$name.err"
    grep -q "newest checkpoint: $name/checkpoints/latest (step [0-9]*; it resumes)" "$name.err"
    grep -q "$key=0 turns this check off" "$name.err"
}

# (a) wav2vec 2.0 codebook collapse
W2V=("$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${SMALL[@]}" optim.warmup=4 optim.max_updates=40 run.log_every=2
     run.save_every=6 objective.diversity_weight=0 optim.lr=0.05)
expect_stop w2v run.health_min_ppl "${W2V[@]}"
grep -q "objective.diversity_weight" w2v.err && grep -q "objective.temp" w2v.err
"$PYTHON" - << 'PY'
import json
rows = [json.loads(l) for l in open("w2v/log.jsonl")]
last = rows[-5:]
assert all(min(r["code_ppl"], r["prob_ppl"]) < 4 for r in last), [(r["step"], r["code_ppl"]) for r in last]
assert rows[-1]["step"] < 40
print(f"collapse seen: code_ppl {rows[0]['code_ppl']:.1f} at step {rows[0]['step']} -> {rows[-1]['code_ppl']:.2f} at step {rows[-1]['step']}")
PY
"$KOE" train "${W2V[@]}" run.health_min_ppl=0 run.dir=w2v > /dev/null 2> w2v-resume.err ||
    { cat w2v-resume.err; exit 1; }
grep -q "resumed from w2v/checkpoints/step-" w2v-resume.err
test "$(tail -1 w2v/log.jsonl | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["step"])')" = 40

# (b) BEST-RQ with a degenerate codebook (2 entries: the targets' perplexity cannot reach 2)
RQ=("$KOE_ROOT/recipes/tiny/bestrq.ini" "${SMALL[@]}" model.dropout=0 model.attention_dropout=0
    model.dropout_input=0 optim.warmup=5 optim.max_updates=30 run.log_every=2 run.save_every=4)
expect_stop degen run.health_min_target_ppl "${RQ[@]}" objective.codebook_size=2
grep -q "objective.codebook_size" degen.err

# (c) BEST-RQ whose loss does not move, and the same run learning
RQ+=(objective.codebook_size=512 run.health_plateau_updates=20)
expect_stop flat run.health_plateau_updates "${RQ[@]}" optim.lr=1e-9
grep -q "optim.lr" flat.err && grep -q "model.mask_prob" flat.err
test "$(tail -1 flat/log.jsonl | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["step"])')" = 20
"$KOE" train "${RQ[@]}" optim.lr=0.002 run.dir=learns > /dev/null 2> learns.err || { cat learns.err; exit 1; }
! grep -q "health check" learns.err
echo "health checks: a collapsed codebook and a flat loss stop with exit 2; the learning run ends normally"

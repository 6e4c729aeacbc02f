#!/usr/bin/env bash
# tests/e2e/analyze_codebook.sh — `koe analyze codebook` on a small synthesized corpus (phone
# alignments) with a wav2vec 2.0 and a BEST-RQ checkpoint (2 updates of the tiny recipes, narrowed):
#   - the table, codebook.json, usage.tsv and the usage chart (.png, .svg, .gp);
#   - a numpy reference (tests/reference/analyze_codebook_ref.py) recomputes every histogram, code
#     perplexity, PNMI and purity from the dumped codes and the shards' alignments, and for BEST-RQ
#     the codes themselves from `koe features --kind fbank` and the checkpoint's quantizer;
#   - 2 ranks give the same counts and scores;
#   - a corpus without alignments: usage and perplexities, no PNMI, said so;
#   - refused, naming the cause: a HuBERT checkpoint, a koe init checkpoint (no quantizer saved), a
#     Hugging Face export.
set -euo pipefail
T="$KOE_TMP/analyze_codebook"
rm -rf "$T" && mkdir -p "$T"
cd "$T"
fail() { echo "FAIL: $1"; exit 1; }
"$KOE" synth --out syn --minutes 0.5 --seed 3 --langs en,de 2> /dev/null
"$KOE" prepare --out corpus --shard-mb 1 --lang-from-dir --align syn/align.ctm syn/wav 2> /dev/null
SMALL=(data.corpus=corpus model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_attention_heads=2
  model.encoder_ffn_embed_dim=128 optim.max_updates=2 optim.warmup=0 run.log_every=1 run.valid_every=0 data.max_tokens=64000)
for o in wav2vec2 bestrq; do
  "$KOE" train "$KOE_ROOT/recipes/tiny/$o.ini" "${SMALL[@]}" run.dir=$o > /dev/null 2> $o.err || { tail $o.err; exit 1; }
done
"$KOE" features --corpus corpus --kind fbank --out fbank.h5 2> /dev/null
for o in wav2vec2 bestrq; do
  ck=$o/checkpoints/step-00000002.h5
  "$KOE" analyze codebook --ckpt $ck --corpus corpus --out $o.out --dump $o.codes > $o.table 2> $o.log \
    || { cat $o.log; exit 1; }
  cat $o.table
  grep -q "^total code perplexity" $o.table || fail "$o: no total line"
  test -s $o.out/codebook.json && test -s $o.out/usage.tsv && test -s $o.out/usage.gp
  [ "$(head -c 8 $o.out/usage.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$o.out/usage.png is not a PNG"
  grep -q "<svg" $o.out/usage.svg || fail "$o.out/usage.svg is not SVG"
  "$PYTHON" "$KOE_ROOT/tests/reference/analyze_codebook_ref.py" $o.out/codebook.json $o.codes corpus $ck fbank.h5
  mpirun --oversubscribe -np 2 "$KOE" analyze codebook --ckpt $ck --corpus corpus --json > $o.2.json 2> $o.2.log \
    || { cat $o.2.log; exit 1; }
  "$PYTHON" - $o.out/codebook.json $o.2.json << 'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
d = [abs(a[k] - b[k]) for k in ("code_perplexity", "frames")]
for x, y in zip(a["per_codebook"], b["per_codebook"]):
    assert x["counts"] == y["counts"]
    d += [abs(x["phones"][k] - y["phones"][k]) for k in ("pnmi", "phone_purity", "cluster_purity")]
print(f"1 vs 2 ranks: largest difference {max(d):.2e}")
assert max(d) <= 1e-9
PY
done
grep -q '"prob_perplexity": null' bestrq.out/codebook.json || fail "BEST-RQ has no prob perplexity"

"$KOE" prepare --out noalign --shard-mb 1 syn/wav 2> /dev/null
"$KOE" analyze codebook --ckpt bestrq/checkpoints/step-00000002.h5 --corpus noalign > na.table 2> na.log \
  || { cat na.log; exit 1; }
grep -q "PNMI: the corpus has no phone alignments" na.table || fail "no note about the missing alignments: $(cat na.table)"

expect_usage() { # expect_usage PATTERN ARGS...: exit 1 and PATTERN in the message
  local pat=$1 rc=0 msg
  shift
  msg=$("$KOE" analyze codebook "$@" 2>&1 > /dev/null) || rc=$?
  [ "$rc" = 1 ] || fail "analyze codebook $* exited $rc, not 1: $msg"
  grep -q -- "$pat" <<< "$msg" || fail "analyze codebook $*: no '$pat' in: $msg"
  echo "refused as expected: $msg"
}
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" "${SMALL[@]}" --out hubert.h5 2> /dev/null
expect_usage "objective.name = hubert, which has no quantizer" --ckpt hubert.h5 --corpus corpus
"$KOE" init "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${SMALL[@]}" --out w2v_init.h5 2> /dev/null
expect_usage "the quantizer is saved by koe train" --ckpt w2v_init.h5 --corpus corpus
"$KOE" export --ckpt wav2vec2/checkpoints/step-00000002.h5 --out hf 2> /dev/null
expect_usage "is a Hugging Face export" --ckpt hf --corpus corpus
expect_usage "needs --ckpt" --corpus corpus

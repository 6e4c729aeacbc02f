#!/usr/bin/env bash
# tests/e2e/plot.sh — the trainer's redraw (run.plot_every), and `koe plot` on a real (tiny wav2vec 2.0,
# with validation) run: the charts its log has fields for, each a valid PNG (signature) and SVG (parsed
# as XML) beside its kept gnuplot script;
# --ascii prints them into the log; the kept script alone redraws its chart; without gnuplot the
# scripts are kept, the message says what to install, exit code 1; a bad log line is named.
set -euo pipefail
T="$KOE_TMP/plot"
mkdir -p "$T"
cd "$T"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
"$KOE" synth --out syn --minutes 1 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
"$KOE" train "$KOE_ROOT/recipes/tiny/wav2vec2.ini" data.corpus=corp data.valid_corpus=corp data.max_tokens=96000 \
    data.max_sample_size=32000 data.threads=0 model.encoder_embed_dim=64 model.encoder_layers=1 \
    model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128 optim.max_updates=12 optim.warmup=4 \
    run.log_every=2 run.valid_every=6 run.save_every=6 run.plot_every=12 run.dir=run > /dev/null 2> train.err ||
    { cat train.err; exit 1; }
# run.plot_every: the trainer drew the charts at its step-12 checkpoint, with the step-12 point
grep -q "^12 " run/plots/loss.gp && test -s run/plots/loss.png

"$KOE" plot run 2> plot.err || { cat plot.err; exit 1; }
charts="acc clip grad_norm loss loss_terms lr perplexity temp throughput"
test "$(ls run/plots/*.gp | xargs -n1 basename | sed 's/\.gp$//' | sort | tr '\n' ' ')" = "$charts " ||
    { echo "FAIL: charts $(ls run/plots), expected $charts"; exit 1; }
"$PYTHON" - "$charts" << 'PY'
import sys, xml.etree.ElementTree as ET
for c in sys.argv[1].split():
    png = open(f"run/plots/{c}.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000, c
    root = ET.parse(f"run/plots/{c}.svg").getroot()
    assert root.tag.endswith("svg"), (c, root.tag)
gp = open("run/plots/loss.gp").read()
assert "$s1 << EOD" in gp and "'valid'" in gp, "the loss chart has the validation curve, data inline"
print("PNG and SVG valid for", sys.argv[1])
PY
# the log's monitoring fields: loss = head_loss + diversity_loss + feature_pen, clip a fraction, ...
"$PYTHON" - << 'PY'
import json
rows = [json.loads(l) for l in open("run/log.jsonl")]
for r in rows:
    terms = r["head_loss"] + r["diversity_loss"] + r["feature_pen"]
    assert abs(r["loss"] - terms) <= 1e-6 * abs(r["loss"]), (r["step"], r["loss"], terms)
    assert 0 <= r["clip"] <= 1 and r["utts"] >= 1 and r["epoch"] >= 0 and r["max_rss_mb"] > 10, r
assert all(a["elapsed_s"] <= b["elapsed_s"] for a, b in zip(rows, rows[1:]))
print("loss = head_loss + diversity_loss + feature_pen on every line; clip, utts, epoch, elapsed_s, max_rss_mb sane")
PY
grep -q "9 charts of run/log.jsonl in run/plots" plot.err

# --ascii: the charts as text on stdout, for a batch log
"$KOE" plot run --out asc --ascii > ascii.log 2> /dev/null
grep -q "loss per scored frame" ascii.log && grep -q "wav2vec 2.0 Gumbel temperature" ascii.log
test -s asc/temp.txt && test -s asc/temp.png

# the kept script redraws its chart by itself
rm run/plots/lr.png
(cd run/plots && gnuplot lr.gp)
test "$(head -c 4 run/plots/lr.png | tail -c 3)" = PNG

# without gnuplot: the scripts are kept and koe says what to install
code=0
KOE_GNUPLOT=/nonexistent/gnuplot "$KOE" plot run --out nognuplot > /dev/null 2> nognuplot.err || code=$?
test "$code" = 1 || { echo "FAIL: exit code $code without gnuplot"; cat nognuplot.err; exit 1; }
grep -q "apt-get install gnuplot-nox" nognuplot.err
test -s nognuplot/loss.gp && ! ls nognuplot/*.png 2> /dev/null

# a log line that is not JSON is named
mkdir bad && head -2 run/log.jsonl > bad/log.jsonl && echo '{"step": 5, "loss": nan}' >> bad/log.jsonl
code=0
"$KOE" plot bad > /dev/null 2> bad.err || code=$?
test "$code" = 1 && grep -q "bad/log.jsonl:3:" bad.err || { echo "FAIL: bad line: exit $code"; cat bad.err; exit 1; }
rm -r bad # a log koe did not write: tests/run.sh checks every log.jsonl the suite leaves
echo "koe plot: PNG, SVG, ASCII, kept scripts, no-gnuplot message and bad-line error as expected"

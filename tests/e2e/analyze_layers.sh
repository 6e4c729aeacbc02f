#!/usr/bin/env bash
# tests/e2e/analyze_layers.sh — `koe analyze layers` on a synthesized corpus (1 minute of English
# from a 20-word vocabulary so that words repeat, phone and word alignments) and a small untrained
# model (koe init; 2 x 64 transformer, 128-wide conv stack):
#   - every property (mel, phone, phone-frame, intra, inter against a second seed's model, word, cka, pnmi): the table, layers.json, layers.tsv,
#     cka.tsv, the charts curves, curves_norm and cka (.png, .svg, .gp); a numpy reference (tests/reference/analyze_layers_ref.py) recomputes every PWCCA,
#     mean rho, rho1 and CKA from the dumped units and folds, `koe embed --layer all` and
#     `koe features --kind fbank`, and must agree to 1e-4 (it also checks the moment path against the
#     row path);
#   - the same run on 3 ranks gives the same scores to 1e-9, and its charts (drawn by the last rank);
#   - the word windows match words.ctm (kept by koe prepare --words);
#   - a Hugging Face export of the checkpoint (koe export) as --ckpt gives the same scores (on 3 ranks);
#   - bad input: a corpus without alignments asked for phone, without words.ctm asked for word, a
#     word CTM matching no utterance (analyze and prepare --words), too few segments per class for the
#     folds (phone, word), an unknown property, more trials than the folds allow, a memory estimate above --max-mem,
#     inter without --ckpt2 or with a --ckpt2 of another frame rate —
#     each exits 1 naming the cause;
#   - recipes/hubert/run.sh LAYER=auto picks the layer with the highest PNMI and names the labels by it.
set -euo pipefail
T="$KOE_TMP/analyze_layers"
rm -rf "$T" && mkdir -p "$T"
cd "$T"
"$KOE" synth --out syn --minutes 1 --seed 1 --langs en --vocab 20 2> /dev/null
"$KOE" prepare --out corpus --shard-mb 2 --lang-from-dir --align syn/align.ctm --words syn/words.ctm syn/wav 2> /dev/null
cmp <(sort syn/words.ctm) <(sort corpus/words.ctm) || { echo "FAIL: corpus/words.ctm differs from syn/words.ctm"; exit 1; }
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" data.corpus=corpus \
  'model.conv_feature_layers=[(128,10,5)]+[(128,3,2)]*4+[(128,2,2)]*2' model.encoder_embed_dim=64 \
  model.encoder_layers=2 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128 model.conv_pos=16 \
  --out init.h5 2> init.log || { cat init.log; exit 1; }
# --ckpt2 for inter: the same architecture from another seed
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" data.corpus=corpus run.seed=2 \
  'model.conv_feature_layers=[(128,10,5)]+[(128,3,2)]*4+[(128,2,2)]*2' model.encoder_embed_dim=64 \
  model.encoder_layers=2 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128 model.conv_pos=16 \
  --out init2.h5 2> init.log || { cat init.log; exit 1; }

ARGS=(--ckpt init.h5 --ckpt2 init2.h5 --corpus corpus --props mel,phone,phone-frame,intra,inter,word,cka,pnmi --folds 6
  --min-class 6 --pnmi-k 20)
"$KOE" analyze layers "${ARGS[@]}" --out out --dump units.tsv > table.txt 2> run1.log || { cat run1.log; exit 1; }
cat table.txt run1.log
grep -q "memory estimate" run1.log || { echo "FAIL: no memory estimate printed"; exit 1; }
grep -q "^best " table.txt || { echo "FAIL: no best row"; exit 1; }
test -s out/layers.json && test -s out/layers.tsv && test -s out/cka.tsv
# the charts through recipes/plot (gnuplot): PNG and SVG by their headers, the scripts kept beside them
grep -q "^set xtics 1$" out/curves.gp || fail "curves.gp: no integer x ticks"
for c in curves curves_norm cka; do
  [ "$(head -c 8 out/$c.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || { echo "FAIL: out/$c.png is not a PNG"; exit 1; }
  grep -q "<svg" out/$c.svg || { echo "FAIL: out/$c.svg is not SVG"; exit 1; }
  test -s out/$c.gp
done
"$KOE" embed --ckpt init.h5 --layer all --corpus corpus --out emb.h5 2> /dev/null
"$KOE" embed --ckpt init2.h5 --layer all --corpus corpus --out emb2.h5 2> /dev/null
"$KOE" features --corpus corpus --kind fbank --out fbank.h5 2> /dev/null
"$PYTHON" "$KOE_ROOT/tests/reference/analyze_layers_ref.py" out/layers.json units.tsv emb.h5 fbank.h5 emb2.h5

mpirun --oversubscribe -np 3 "$KOE" analyze layers "${ARGS[@]}" --json --out out3 > ranks3.json 2> run3.log || { cat run3.log; exit 1; }
for f in curves curves_norm cka; do # drawn by the last rank
  [ -s out3/$f.png ] && [ -s out3/$f.svg ] || { echo "FAIL: 3 ranks drew no out3/$f.png/.svg"; cat run3.log; exit 1; }
done
"$PYTHON" - << 'PY'
import json
a, b = json.load(open("out/layers.json")), json.load(open("ranks3.json"))
worst = 0.0
for name, p in a["properties"].items():
    for key in ("pwcca", "mean_rho", "rho1", "pnmi"):
        for x, y in zip(p.get(key, []), b["properties"][name].get(key, [])):
            assert (x is None) == (y is None), (name, key)
            if x is not None:
                worst = max(worst, abs(x - y))
for key in ("matrix", "biased"):
    for r, s in zip(a["cka"][key], b["cka"][key]):
        worst = max(worst, max(abs(x - y) for x, y in zip(r, s)))
print(f"1 vs 3 ranks: largest score difference {worst:.2e}")
assert worst <= 1e-9, f"FAIL: 1 and 3 ranks differ by {worst}"
PY

# --conv: mel of the conv layers C1..C7 (their own 10 ms units, keyed by utterance and fbank frame) as
# rows before T0, the same on 1 and 3 ranks
for np in 1 3; do
  mpirun --oversubscribe -np $np "$KOE" analyze layers --ckpt init.h5 --corpus corpus --props mel --conv --folds 6 \
    --json > conv$np.json 2> conv$np.log || { cat conv$np.log; exit 1; }
done
"$PYTHON" - << 'PY'
import json
a, b, t = json.load(open("conv1.json")), json.load(open("conv3.json")), json.load(open("out/layers.json"))
assert a["layers"] == [f"C{c}" for c in range(1, 8)] + t["layers"], a["layers"]
x, y = a["properties"]["mel"]["pwcca"], b["properties"]["mel"]["pwcca"]
assert all(v is not None for v in x), x
worst = max(abs(p - q) for p, q in zip(x, y))
print("--conv mel:", " ".join(f"{n} {v:.3f}" for n, v in zip(a["layers"], x)), f"(1 vs 3 ranks: {worst:.1e})")
assert worst <= 1e-9, f"FAIL: --conv: 1 and 3 ranks differ by {worst}"
assert max(abs(p - q) for p, q in zip(x[7:], t["properties"]["mel"]["pwcca"])) <= 1e-9, "FAIL: --conv changed T rows"
PY

fail() { echo "FAIL: $1"; exit 1; }

# the word windows: each word segment is its words.ctm line's span on the encoder frames
"$PYTHON" - << 'PY'
import collections, json, math
import h5py
with h5py.File("emb.h5", "r") as f:  # each utterance's frame count T
    off = f["offset"][()]
    n_frames = {(u.decode() if isinstance(u, bytes) else u): int(off[i + 1] - off[i])
                for i, u in enumerate(f["utt_id"][()])}
js = json.load(open("out/layers.json"))
rate = js["model"]["frame_rate"]
ctm = collections.defaultdict(list)
for line in open("syn/words.ctm"):
    u, _, t0, d, w = line.split()
    ctm[u].append((float(t0), float(t0) + float(d), w))
names = js["properties"]["word"]["class_names"]
units = [l.rstrip("\n").split("\t") for l in open("units.tsv")][1:]
words = [u for u in units if u[0] == "word"]
assert len(words) == js["properties"]["word"]["n"] > 0
for _, utt, a, b, cls, _, _ in words:
    a, b = int(a), int(b)
    hits = [w for t0, t1, w in ctm[utt] if math.floor(t0 * rate + 1e-9) == a and
            max(min(math.ceil(t1 * rate - 1e-9), n_frames[utt]), a + 1) == b]
    assert names[int(cls)] in hits, (utt, a, b, names[int(cls)], hits)
print(f"word windows: {len(words)} segments of {len(names)} words match words.ctm")
PY

# a Hugging Face export directory as --ckpt, on 3 ranks (rank 0 reads its weights for all): the same
# model, the same scores as init.h5 on 3 ranks
"$KOE" export --ckpt init.h5 --out hfdir 2> /dev/null
mpirun --oversubscribe -np 3 "$KOE" analyze layers --ckpt hfdir "${ARGS[@]:2}" --json > hf.json 2> hf.log || { cat hf.log; exit 1; }
"$PYTHON" - << 'PY'
import json
a, b = json.load(open("ranks3.json")), json.load(open("hf.json"))
for n in a["properties"]:
    for k in ("pwcca", "pnmi"):
        assert a["properties"][n].get(k) == b["properties"][n].get(k), (n, k, a["properties"][n].get(k), b["properties"][n].get(k))
print("the Hugging Face export of init.h5 gives the same scores on 3 ranks")
PY
expect_usage() { # expect_usage PATTERN ARGS...: exit 1 and PATTERN in the message
  local pat=$1 rc=0 msg
  shift
  msg=$("$KOE" analyze layers "$@" 2>&1 > /dev/null) || rc=$?
  [ "$rc" = 1 ] || fail "analyze layers $* exited $rc, not 1: $msg"
  grep -q -- "$pat" <<< "$msg" || fail "analyze layers $*: no '$pat' in: $msg"
  echo "refused as expected: $msg"
}
"$KOE" prepare --out noalign --shard-mb 2 syn/wav 2> /dev/null
expect_usage "noalign/shard-00000.h5 has no phone alignments" --ckpt init.h5 --corpus noalign --props mel,phone
"$KOE" analyze layers --ckpt init.h5 --corpus noalign --props mel --folds 6 > /dev/null 2>&1 \
  || fail "mel alone needs no alignments"
expect_usage "max(--min-class, --folds)" --ckpt init.h5 --corpus corpus --props phone --min-class 100000
expect_usage "unknown property 'words'" --ckpt init.h5 --corpus corpus --props mel,words
expect_usage "noalign/words.ctm does not exist" --ckpt init.h5 --corpus noalign --props word
sed 's/^en/xx/' syn/words.ctm > nomatch.ctm
expect_usage "none of its utterance ids matches corpus corpus" --ckpt init.h5 --corpus corpus --props word --words nomatch.ctm
expect_usage "property word: 0 class(es) have at least 6 segments (the most: 5)" --ckpt init.h5 --corpus corpus --props word \
  --folds 6 --min-class 6 --word-cap 5
msg=$("$KOE" prepare --out cwx --shard-mb 2 --words nomatch.ctm syn/wav 2>&1 > /dev/null) && fail "prepare --words nomatch.ctm passed"
grep -q "none of its utterance ids" <<< "$msg" || fail "prepare --words nomatch.ctm: $msg"
expect_usage "needs --folds >= 8" --ckpt init.h5 --corpus corpus --trials 4 --folds 6
expect_usage "is above --max-mem" --ckpt init.h5 --corpus corpus --max-mem 0.001
expect_usage "needs --ckpt2" --ckpt init.h5 --corpus corpus --props inter
expect_usage "--conv adds the conv layers to property mel" --ckpt init.h5 --corpus corpus --props phone --conv
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" data.corpus=corpus data.features=fbank model.frontend=fbank \
  model.encoder_embed_dim=64 model.encoder_layers=2 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128 \
  model.conv_pos=16 --out fbank.ckpt.h5 2> init.log || { cat init.log; exit 1; }
expect_usage "fbank.ckpt.h5 has a frame rate of 25 Hz, --ckpt init.h5 50 Hz" --ckpt init.h5 --ckpt2 fbank.ckpt.h5 \
  --corpus corpus --props inter

# recipes/hubert/run.sh LAYER=auto: iteration 2 clusters the layer with the highest phone PNMI
# (here of the untrained model standing in for iteration 1's checkpoint), and names the label set by it
mkdir -p work/iter1/checkpoints && cp init.h5 work/iter1/checkpoints/step-00000000.h5
echo step-00000000.h5 > work/iter1/checkpoints/latest
CORPUS=corpus WORK=work LAYER=auto K2=20 RECIPE2="$KOE_ROOT/recipes/tiny/hubert.ini" KOE="$KOE" \
  TRAIN_ARGS="optim.max_updates=1 optim.warmup=0 run.log_every=1 run.valid_every=0 data.max_tokens=64000
  data.max_sample_size=32000 model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_ffn_embed_dim=128" \
  bash "$KOE_ROOT/recipes/hubert/run.sh" iter2 > auto.out 2> auto.log || { tail -20 auto.log; exit 1; }
chosen=$(cat work/layer_auto/layer)
want=$(awk -F'\t' 'NR > 1 && $1 ~ /^T/ { if (b == "" || $3 + 0 > v) { b = substr($1, 2); v = $3 + 0 } } END { print b }' \
  work/layer_auto/layers.tsv)
grep "LAYER=auto chose layer $chosen" auto.log
[ "$chosen" = "$want" ] || fail "LAYER=auto chose $chosen, the highest PNMI is layer $want"
test -d "corpus/labels/iter1_l${chosen}_km20" || fail "no label set iter1_l${chosen}_km20"
grep -q "^layer $chosen chosen by LAYER=auto" "corpus/labels/iter1_l${chosen}_km20/layer_auto.txt" \
  || fail "the choice is not kept with the label set iter1_l${chosen}_km20"
cmp work/layer_auto/layers.tsv "corpus/labels/iter1_l${chosen}_km20/layer_auto.tsv"

# launch/slurm/hubert_pipeline.sh KOE_LAYER=auto, from its layer step, with a stand-in sbatch that runs
# the layer job in place (its koe_mpi.sbatch on 1 rank) and records every other submission: the job
# makes the same choice as run.sh, keeps it with the label set, and submits km2, label2 and train2
# with that layer and run.sh's label set name
mkdir -p fakebin slurm/iter1/checkpoints && cp work/iter1/checkpoints/* slurm/iter1/checkpoints/
cat > fakebin/sbatch << 'SH'
#!/usr/bin/env bash
name=; wrap=
for a in "$@"; do case $a in --job-name=*) name=${a#--job-name=} ;; --wrap=*) wrap=${a#--wrap=} ;; esac; done
echo "$name $* KOE_OVERRIDES=${KOE_OVERRIDES:-}" >> "$SBATCH_LOG"
if [ "$name" = koe-layer ]; then SLURM_JOB_ID=1 SLURM_NTASKS=1 SLURM_CPUS_PER_TASK=1 bash -c "$wrap" >&2 || exit 1; fi
echo "${name#koe-}-job"
SH
chmod +x fakebin/sbatch
rm -rf corpus/labels/iter1_l*_km20
PATH="$PWD/fakebin:$PATH" SBATCH_LOG=$PWD/sbatch.log KOE_FROM=layer KOE_LAYER=auto KOE_K2=20 KOE_CORPUS=corpus \
  KOE_WORK=slurm KOE_RECIPE_ITER1="$KOE_ROOT/recipes/tiny/hubert.ini" KOE="$KOE" \
  bash "$KOE_ROOT/launch/slurm/hubert_pipeline.sh" > slurm.out 2> slurm.log || { cat slurm.out; tail -20 slurm.log; exit 1; }
[ "$(cat slurm/layer_auto/layer)" = "$chosen" ] || fail "the Slurm pipeline chose $(cat slurm/layer_auto/layer), run.sh $chosen"
grep -q "^layer $chosen chosen by LAYER=auto" "corpus/labels/iter1_l${chosen}_km20/layer_auto.txt" \
  || fail "the Slurm pipeline did not keep the choice with the label set"
grep -q "^koe-km2 .*--source layer:$chosen " sbatch.log || fail "km2 not submitted with layer $chosen: $(cat sbatch.log)"
grep -q "^koe-train2 .*data.labels=iter1_l${chosen}_km20 " sbatch.log || fail "train2 not on iter1_l${chosen}_km20"
echo "hubert_pipeline.sh KOE_LAYER=auto chose layer $chosen and submitted km2, label2, train2 with it"

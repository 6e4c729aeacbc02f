#!/usr/bin/env bash
# tests/e2e/bench_train.sh — `koe bench` times the training step `koe train` runs (recipes/trainer.h):
# on the recipe's corpus (data.corpus=DIR) bench's step k computes exactly the loss that train logs at
# update k + 1, for HuBERT (labels, dropout on), BEST-RQ and wav2vec 2.0, on 1 rank and on 2 ranks; its
# profile's rows (the model's sections, then the rest of the step, head+optimizer) are times of the
# same steps: none negative, their shares of the mean step summing to 100%.
# And koe train names its version (`koe --version`) at start, in log.jsonl's first line and in every
# checkpoint.
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/bf16.sh"
T="$KOE_TMP/bench_train"
mkdir -p "$T"
cd "$T"
"$KOE" synth --out syn --minutes 1 --langs en,de --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 20 --out km.h5 2> /dev/null
"$KOE" label --corpus corp --kmeans km.h5 --name km20 2> /dev/null

SMALL=(data.corpus=corp data.max_tokens=96000 data.max_sample_size=48000 data.min_sample_size=16000
       model.encoder_embed_dim=64 model.encoder_layers=2 model.encoder_attention_heads=2
       model.encoder_ffn_embed_dim=128 optim.warmup=1 run.seed=11)
WAVE=("model.conv_feature_layers=[(64,10,5)] + [(64,3,2)]*4 + [(64,2,2)]*2" model.conv_pos=16)
check() { # name np recipe overrides...
  local name=$1 np=$2 recipe=$3; shift 3
  local run=(mpirun -np "$np" --oversubscribe)
  "${run[@]}" "$KOE" train "$recipe" "$@" optim.max_updates=3 run.log_every=1 run.save_every=100 \
    run.valid_every=0 run.dir="$name" > "$name.train.out" 2> "$name.train.err" || { cat "$name.train.err"; exit 1; }
  "${run[@]}" "$KOE" bench "$recipe" "$@" --steps 2 --threads 1 > "$name.bench.out" 2> "$name.bench.err" ||
    { cat "$name.bench.err"; exit 1; }
  "$PYTHON" - "$name" << 'PY'
import json, re, sys
name = sys.argv[1]
train = {r["step"]: r["loss"] for r in map(json.loads, open(f"{name}/log.jsonl"))}
bench = {}
for line in open(f"{name}.bench.out"):
    m = re.match(r"step (\d+) loss (\S+) ", line)
    if m:
        bench[int(m.group(1)) + 1] = float(m.group(2))
assert sorted(bench) == [1, 2, 3] and sorted(train) == [1, 2, 3], (bench, train)
for k in (1, 2, 3):
    # both print %.9g of the same double: equal to the last digit, or the two paths differ
    assert f"{bench[k]:.9g}" == f"{train[k]:.9g}", f"{name}: update {k}: bench loss {bench[k]!r}, train {train[k]!r}"
print(f"{name}: bench and train losses equal at updates 1-3: {[train[k] for k in (1, 2, 3)]}")
rows, on, steps = {}, False, []
for line in open(f"{name}.bench.out"):
    m = re.match(r"step (\d+) loss \S+ frames \d+ seconds (\S+)", line)
    if m and int(m.group(1)) > 0:  # step 0 is the warm-up
        steps.append(float(m.group(2)))
    if line.startswith("section "):
        on = True
    elif on and line.startswith("koe "):
        break
    elif on:
        m = re.match(r"(\S+(?: \S+)?)\s+(-?[\d.]+)\s+(?:(-?[\d.]+)\s+)?(-?[\d.]+)%", line)
        assert m, f"{name}: profile row {line!r}"
        ms = [float(g) for g in m.group(2, 3) if g]
        assert min(ms) >= 0 and float(m.group(4)) >= 0, f"{name}: a negative profile row: {line!r}"
        rows[m.group(1)] = (sum(ms), float(m.group(4)))
assert "head+optimizer" in rows and "ffn" in rows, rows
total = sum(share for _, share in rows.values())
assert abs(total - 100) <= 0.05 * len(rows) + 1e-9, f"{name}: shares sum to {total}%: {rows}"
# the rows are means over the timed steps: together, the mean step (printed to the ms; rows to 0.1 ms)
mean_ms, rows_ms = 1e3 * sum(steps) / len(steps), sum(ms for ms, _ in rows.values())
assert abs(rows_ms - mean_ms) <= 0.5 + 0.1 * len(rows), f"{name}: rows sum to {rows_ms} ms, the mean step is {mean_ms} ms"
print(f"{name}: profile of {len(rows)} rows, {rows_ms:.1f} ms (mean step {mean_ms:.1f} ms), shares {total:.1f}%, "
      f"head+optimizer {rows['head+optimizer'][0]} ms")
PY
}
check hubert 1 "$KOE_ROOT/recipes/tiny/hubert.ini" "${SMALL[@]}" "${WAVE[@]}" data.labels=km20 objective.label_rate=100
check bestrq 1 "$KOE_ROOT/recipes/tiny/bestrq.ini" "${SMALL[@]}"
check wav2vec2 1 "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${SMALL[@]}" "${WAVE[@]}"
check hubert2 2 "$KOE_ROOT/recipes/tiny/hubert.ini" "${SMALL[@]}" "${WAVE[@]}" data.labels=km20 objective.label_rate=100

# --interleave alternates fp32 and bf16 steps on one trainer (synthetic batch): its first fp32 step is
# an fp32 run's step 0, and its first bf16 step (the trainer's step 1) a bf16 run's step 1, both to the
# printed digit (the first update's learning rate is 0: warm-up from 0, so step 1 runs on the initial
# weights whichever precision step 0 ran in), and not the fp32 run's step 1 (the precision switched);
# its last line is the medians of the printed times (the warm-ups, step 0, left out) and their ratio.
# Without bf16 dot products it is refused, as run.precision = bf16 is; there the bf16 runs are skipped
# (lib/bf16.sh).
TINY="$KOE_ROOT/recipes/tiny/hubert.ini"
rc=0
ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI "$KOE" bench "$TINY" --steps 2 --threads 1 --interleave > nobf.out 2> nobf.err || rc=$?
[ "$rc" = 1 ] || { cat nobf.err; echo "FAIL: --interleave without bf16 dot products: exit $rc, not 1"; exit 1; }
grep -q "bench --interleave: this CPU has no bf16 dot products .*run without it" nobf.err || { cat nobf.err; exit 1; }
"$KOE" bench "$TINY" --steps 1 --threads 1 --precision fp32 --no-profile > fp32.out 2> fp32.err || { cat fp32.err; exit 1; }
if bf16_here fp32.err "bench --precision bf16 and --interleave"; then
  "$KOE" bench "$TINY" --steps 1 --threads 1 --precision bf16 --no-profile > bf16.out 2> bf16.err || { cat bf16.err; exit 1; }
  "$KOE" bench "$TINY" --steps 3 --threads 1 --interleave > il.out 2> il.err || { cat il.err; exit 1; }
  "$PYTHON" - << 'PY'
import re
def steps(f):
    return {int(m[1]): m[2] for m in re.finditer(r"^step (\d+) loss (\S+) frames", open(f).read(), re.M)}
fp32, bf16 = steps("fp32.out"), steps("bf16.out")
il = {(int(m[1]), m[2]): (m[3], float(m[4]))
      for m in re.finditer(r"^step (\d+) (fp32|bf16) loss (\S+) seconds (\S+)$", open("il.out").read(), re.M)}
assert sorted(il) == [(s, p) for s in range(4) for p in ("bf16", "fp32")], il
assert il[0, "fp32"][0] == fp32[0], (il[0, "fp32"], fp32)
assert il[0, "bf16"][0] == bf16[1], (il[0, "bf16"], bf16)
assert bf16[1] != fp32[1], f"bf16 and fp32 give the same step-1 loss {fp32[1]}: no precision switched"
last = open("il.out").read().strip().splitlines()[-1]
m = re.fullmatch(r"koe interleaved fp32_step_median_s=(\S+) bf16_step_median_s=(\S+) bf16_speedup=(\S+)", last)
assert m, last
med = {p: sorted(il[s, p][1] for s in (1, 2, 3))[1] for p in ("fp32", "bf16")}
assert float(m[1]) == med["fp32"] and float(m[2]) == med["bf16"], (last, med)
assert abs(float(m[3]) - med["fp32"] / med["bf16"]) <= 0.005 + 0.01 * med["fp32"] / med["bf16"], (last, med)
print(f"--interleave: step 0 fp32 {fp32[0]} and step 1 bf16 {bf16[1]} as the single-precision runs "
      f"(fp32's step 1: {fp32[1]}); {last}")
PY
fi

v=$("$KOE" --version)
grep -q "^koe: $v training " bestrq.train.err || { echo "FAIL: koe train did not name its version ($v)"; exit 1; }
"$PYTHON" - "${v#koe }" bestrq/log.jsonl bestrq/checkpoints/step-00000003.h5 << 'PY'
import json, sys, h5py
v, log, ck = sys.argv[1:]
rows = [json.loads(l) for l in open(log)]
assert rows[0].get("version") == v and all("version" not in r for r in rows[1:]), rows
got = h5py.File(ck, "r").attrs["koe_version"]
assert (got.decode() if isinstance(got, bytes) else got) == v, got
print(f"version {v} in the start line, log.jsonl's first line and the checkpoint")
PY

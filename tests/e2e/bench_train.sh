#!/usr/bin/env bash
# tests/e2e/bench_train.sh — `koe bench` times the training step `koe train` runs (recipes/trainer.h):
# on the recipe's corpus (data.corpus=DIR) bench's step k computes exactly the loss that train logs at
# update k + 1, for HuBERT (labels, dropout on), BEST-RQ and wav2vec 2.0, on 1 rank and on 2 ranks; its
# profile's rows (the model's sections, then the rest of the step, head+optimizer) are times of the
# same steps: none negative, their shares of the mean step summing to 100%.
# And koe train names its version (`koe --version`) at start, in log.jsonl's first line and in every
# checkpoint.
set -euo pipefail
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

#!/usr/bin/env bash
# export_pair.sh — `koe export` publishes two files, model.safetensors and then config.json: killed with
# kill -9 between the two renames (the test hook KOE_TEST_STOP_AT_OUTPUT=1:published, core/common.h),
# it leaves the new weights beside the old config. Both files carry the export's koe_export_id, so every
# koe reader of the directory (koe init --from, koe analyze --ckpt DIR) refuses the mixed pair naming both
# files and saying to export again, and the independent reader (tests/reference/hf_export.py) finds the
# ids differ; the rerun publishes the pair an undisturbed export writes. Killed as the first file is
# created, the previous export stays whole and readable.
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/scratch.sh"
. "$KOE_ROOT/tests/e2e/lib/stop_point.sh"
scratch export_pair
SMALL=(model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128)
# two checkpoints of one architecture: other weights (seed) and another config.json (layer_norm_eps)
"$KOE" init "$KOE_ROOT/recipes/tiny/bestrq.ini" "${SMALL[@]}" run.seed=1 --out a.h5 2> /dev/null
"$KOE" init "$KOE_ROOT/recipes/tiny/bestrq.ini" "${SMALL[@]}" run.seed=2 model.layer_norm_eps=1e-6 --out b.h5 2> /dev/null
"$KOE" export --ckpt b.h5 --out ref-b 2> /dev/null

stopped_at() { # POINT: koe export --ckpt b.h5 --out hf stopped at POINT of its first output, then killed
  killed_at "$1" kill.err "export never reached point $1" "$KOE" export --ckpt b.h5 --out hf
}
readable() { # the directory imports and embeds
  "$KOE" init --from hf --out from-hf.h5 > /dev/null 2> init.err || { cat init.err; echo "FAIL: $1: init --from refused"; exit 1; }
}

# ---- killed as model.safetensors.tmp is created: the earlier export untouched
"$KOE" export --ckpt a.h5 --out hf 2> /dev/null
cp -r hf ref-a
stopped_at 1
[ -e hf/model.safetensors.tmp ] || { ls hf; echo "FAIL: want the .tmp of the killed export"; exit 1; }
cmp hf/model.safetensors ref-a/model.safetensors && cmp hf/config.json ref-a/config.json ||
  { echo "FAIL: a killed export changed the earlier one"; exit 1; }
readable "the earlier export beside a killed one's .tmp"
echo "  killed at model.safetensors.tmp: the earlier export whole and read"

# ---- killed between the renames: new weights, old config
stopped_at 1:published
cmp hf/model.safetensors ref-b/model.safetensors && cmp hf/config.json ref-a/config.json && [ -e hf/config.json.tmp ] ||
  { ls hf; echo "FAIL: the kill did not land between the two renames"; exit 1; }
# refused naming both files and what to do
MIXED="hf/model.safetensors (koe_export_id [0-9a-f]*) and hf/config.json (koe_export_id [0-9a-f]*) are not from the same export.*run koe export again"
refused "koe init --from" "$MIXED" "$KOE" init --from hf --out never.h5
"$KOE" synth --out syn --minutes 0.2 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
refused "koe analyze layers --ckpt DIR" "$MIXED" "$KOE" analyze layers --ckpt hf --corpus corp
[ ! -e never.h5 ] || { echo "FAIL: a refused command wrote its output"; exit 1; }
if "$PYTHON" -c "import sys; sys.path.insert(0, '$KOE_ROOT/tests/reference'); import hf_export; hf_export.load('hf')" 2> py.err; then
  echo "FAIL: the reference reader took the mixed pair"; exit 1
fi
grep -q AssertionError py.err || { cat py.err; echo "FAIL: the reference reader failed otherwise"; exit 1; }

# ---- the rerun: the pair of an undisturbed export, read back
"$KOE" export --ckpt b.h5 --out hf 2> rerun.err || { cat rerun.err; echo "FAIL: the rerun"; exit 1; }
cmp hf/model.safetensors ref-b/model.safetensors && cmp hf/config.json ref-b/config.json ||
  { echo "FAIL: the rerun differs from an undisturbed export"; exit 1; }
[ -z "$(ls hf | grep '\.tmp$' || true)" ] || { ls hf; echo "FAIL: .tmp left after the rerun"; exit 1; }
readable "the rerun's export"
"$PYTHON" -c "import sys; sys.path.insert(0, '$KOE_ROOT/tests/reference'); import hf_export; hf_export.load('hf')"
echo "export_pair: ok"

#!/usr/bin/env bash
# tests/e2e/hostile_input.sh — inputs a cluster job meets that nobody planned for. A long
# recording becomes one long utterance: koe embed and koe kmeans --source layer:N refuse it with exit
# 1, naming the utterance and saying to split it, instead of dying on an allocation of terabytes.
set -euo pipefail
T="$KOE_TMP/hostile_input"
mkdir -p "$T/in"
cd "$T"
"$PYTHON" - in/long.wav <<'PY'
import sys, numpy as np, soundfile
n = 16000 * 600  # 10 minutes: 30000 frames at 50 Hz
soundfile.write(sys.argv[1], (np.sin(np.arange(n) * 0.01) * 3000).astype(np.int16), 16000, subtype="PCM_16")
PY
"$KOE" prepare --out c --lang xx in 2> /dev/null
# 12 layers x 12 heads x 30000^2 frames of attention: ~480 GiB, more than any test machine holds
"$KOE" init "$KOE_ROOT/recipes/tiny/hubert.ini" --out m.h5 model.encoder_layers=12 model.encoder_attention_heads=12 \
  model.encoder_embed_dim=48 model.encoder_ffn_embed_dim=48 model.conv_pos=8 model.conv_pos_groups=4 \
  "model.conv_feature_layers=[(16,10,5)] + [(16,3,2)]*4 + [(16,2,2)]*2" 2> /dev/null
expect_fail() { # expect_fail ARGS...: koe ARGS exits 1 naming the utterance and the remedy
  local rc=0
  "$KOE" "$@" > out.txt 2> err.txt || rc=$?
  [ $rc = 1 ] || { cat err.txt; echo "FAIL: koe $*: exit $rc, expected 1"; exit 1; }
  grep -q "utterance long is 10.0 minutes long" err.txt && grep -q "split" err.txt \
    || { cat err.txt; echo "FAIL: koe $*: the message does not name the utterance and the remedy"; exit 1; }
  echo "ok: $(head -c 200 err.txt)"
}
expect_fail embed --corpus c --ckpt m.h5 --layer 1 --out e.h5
expect_fail kmeans --corpus c --source layer:1 --ckpt m.h5 --k 2 --out km.h5
test ! -e e.h5 && test ! -e km.h5

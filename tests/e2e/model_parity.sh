#!/usr/bin/env bash
# model_parity.sh — the whole model against torchaudio: tests/reference/model_ref.py
# builds wav2vec2_model(...) for the four extractor x layer-norm-order combinations, runs a padded batch
# of three utterances in float64 and writes every hidden state, the output and every parameter's
# gradient of sum(out * R); test_model's parity test loads the same weights through the checkpoint
# reader and compares all of them by name (1e-4 * max|ref| + 1e-5 per tensor, worst element printed).
# bf16: tests/reference/model_bf16_ref.py adds PyTorch autocast's output and gradients to the two
# layer-norm-extractor files; koe's bf16 output and gradients must be no further from the float64
# answer than autocast's (relative L2), and further than koe's fp32 (test_model.c, bf16_reference).
set -euo pipefail
T=$KOE_TMP/model_parity
mkdir -p "$T/ref"
"$PYTHON" "$KOE_ROOT/tests/reference/model_ref.py" "$T/ref"
"$PYTHON" "$KOE_ROOT/tests/reference/model_bf16_ref.py" "$T/ref"
KOE_MODEL_REF="$T/ref" "$KOE_BUILD/tests/test_model" 2>&1 | tee "$T/log"
grep -q 'PASSED  \] 12 test(s)' "$T/log"
! grep -q SKIPPED "$T/log"
[ "$(grep -c 'worst |err|/max|ref|' "$T/log")" = 4 ]
[ "$(grep -c '^ok   .*: bf16 .*koe bf16 .*torch autocast' "$T/log")" = 4 ] # out and gradients of the two layer-norm files
# the comparison must be able to fail: one gradient element of one file off by 1e-3 of its scale
"$PYTHON" - "$T/ref/ref_layer_preln.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as h:
    d = h["grad/encoder.layers.1.feed_forward.intermediate_dense.weight"]
    a = d[:]
    a.flat[77] += 1e-3 * np.abs(a).max()
    d[...] = a
PY
if KOE_MODEL_REF="$T/ref" "$KOE_BUILD/tests/test_model" > "$T/log2" 2>&1; then
  echo "model_parity: a perturbed reference was not detected"; exit 1
fi
grep -q "^FAIL .*intermediate_dense.weight .* at 77 (" "$T/log2"
echo "model_parity: ok (perturbed reference detected)"

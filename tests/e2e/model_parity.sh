#!/usr/bin/env bash
# model_parity.sh — the whole model against torchaudio: tests/reference/model_ref.py
# builds wav2vec2_model(...) for the four extractor x layer-norm-order combinations, runs a padded batch
# of three utterances in float64 and writes every hidden state, the output and every parameter's
# gradient of sum(out * R); test_model's parity test loads the same weights through the checkpoint
# reader and compares all of them by name (1e-4 * max|ref| + 1e-5 per tensor, worst element printed).
# bf16: tests/reference/model_bf16_ref.py adds PyTorch autocast's output and gradients to the four
# files; koe's bf16 output and gradients must be no further from the float64 answer than autocast's
# (relative L2), and further than koe's fp32 (test_model.c, bf16_reference), where the CPU has bf16 dot
# products (lib/bf16.sh; PyTorch's autocast needs them too).
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/parity.sh"
. "$KOE_ROOT/tests/e2e/lib/bf16.sh"
T=$KOE_TMP/model_parity
mkdir -p "$T/ref"
"$PYTHON" "$KOE_ROOT/tests/reference/model_ref.py" "$T/ref"
bf16_probe "$T/probe.err"
want=0 # bf16 lines: out and gradients of the four files, where the CPU has bf16 dot products
if bf16_here "$T/probe.err" "bf16 against torch autocast"; then
  "$PYTHON" "$KOE_ROOT/tests/reference/model_bf16_ref.py" "$T/ref"
  want=8
fi
KOE_MODEL_REF="$T/ref" "$KOE_BUILD/tests/test_model" 2>&1 | tee "$T/log"
all_ran "$T/log" 12
[ "$(grep -c 'worst |err|/max|ref|' "$T/log")" = 4 ]
[ "$(grep -c '^ok   .*: bf16 .*koe bf16 .*torch autocast' "$T/log")" = $want ]
caught "$T/ref/ref_layer_preln.h5" grad/encoder.layers.1.feed_forward.intermediate_dense.weight 77 \
  "^FAIL .*intermediate_dense.weight .* at 77 (" env KOE_MODEL_REF="$T/ref" "$KOE_BUILD/tests/test_model"
echo "model_parity: ok (perturbed reference detected)"

#!/usr/bin/env bash
# model_parity.sh — the whole model against torchaudio: tests/reference/model_ref.py
# builds wav2vec2_model(...) for the four extractor x layer-norm-order combinations, runs a padded batch
# of three utterances in float64 and writes every hidden state, the output and every parameter's
# gradient of sum(out * R); test_model's parity test loads the same weights through the checkpoint
# reader and compares all of them by name (1e-4 * max|ref| + 1e-5 per tensor, worst element printed).
# bf16: tests/reference/model_bf16_ref.py adds PyTorch autocast's output and gradients to the four
# files; koe's bf16 output and gradients must be no further from the float64 answer than autocast's
# (relative L2), and further than koe's fp32 (test_model.c, bf16_reference).
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/parity.sh"
T=$KOE_TMP/model_parity
mkdir -p "$T/ref"
"$PYTHON" "$KOE_ROOT/tests/reference/model_ref.py" "$T/ref"
"$PYTHON" "$KOE_ROOT/tests/reference/model_bf16_ref.py" "$T/ref"
KOE_MODEL_REF="$T/ref" "$KOE_BUILD/tests/test_model" 2>&1 | tee "$T/log"
all_ran "$T/log" 12
[ "$(grep -c 'worst |err|/max|ref|' "$T/log")" = 4 ]
[ "$(grep -c '^ok   .*: bf16 .*koe bf16 .*torch autocast' "$T/log")" = 8 ] # out and gradients of the four files
caught "$T/ref/ref_layer_preln.h5" grad/encoder.layers.1.feed_forward.intermediate_dense.weight 77 \
  "^FAIL .*intermediate_dense.weight .* at 77 (" env KOE_MODEL_REF="$T/ref" "$KOE_BUILD/tests/test_model"
echo "model_parity: ok (perturbed reference detected)"

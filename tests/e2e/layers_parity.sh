#!/usr/bin/env bash
# layers_parity.sh — the layer kernels (core/layers.c) against PyTorch:
# tests/reference/layers_ref.py writes inputs, outputs and gradients of sum(out * R) for linear,
# conv1d (waveform, strided, grouped "same", depthwise), LayerNorm, GroupNorm(C, C), GELU, SiLU,
# GLU, weight_norm(dim=2) + grouped conv and dropout's mask rule; test_layers_parity compares every
# tensor (1e-4 * max|ref| + 1e-5, worst element printed) and prints one "parity" line per tensor.
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/parity.sh"
T=$KOE_TMP/layers_parity
mkdir -p "$T"
"$PYTHON" "$KOE_ROOT/tests/reference/layers_ref.py" "$T/layers_ref.h5"
KOE_LAYERS_REF="$T/layers_ref.h5" "$KOE_BUILD/tests/test_layers_parity" 2>&1 | tee "$T/log"
all_ran "$T/log" 10
caught "$T/layers_ref.h5" layernorm/dx 5 "layernorm dx: worst element 5" \
  env KOE_LAYERS_REF="$T/layers_ref.h5" "$KOE_BUILD/tests/test_layers_parity"
echo "layers_parity: ok (perturbed reference detected)"

#!/usr/bin/env bash
# layers_parity.sh — the layer kernels (core/layers.c) against PyTorch:
# tests/reference/layers_ref.py writes inputs, outputs and gradients of sum(out * R) for linear,
# conv1d (waveform, strided, grouped "same", depthwise), LayerNorm, GroupNorm(C, C), GELU, SiLU,
# GLU, weight_norm(dim=2) + grouped conv and dropout's mask rule; test_layers_parity compares every
# tensor (1e-4 * max|ref| + 1e-5, worst element printed) and prints one "parity" line per tensor.
set -euo pipefail
T=$KOE_TMP/layers_parity
mkdir -p "$T"
"$PYTHON" "$KOE_ROOT/tests/reference/layers_ref.py" "$T/layers_ref.h5"
KOE_LAYERS_REF="$T/layers_ref.h5" "$KOE_BUILD/tests/test_layers_parity" 2>&1 | tee "$T/log"
# cmocka exits 0 when tests are skipped: a run that skipped anything is not a pass here
grep -q 'PASSED  \] 10 test(s)' "$T/log"
! grep -q SKIPPED "$T/log"
# the checks must be able to fail: one reference gradient off by 1e-3 of its scale is caught
"$PYTHON" - "$T/layers_ref.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as h:
    d = h["layernorm/dx"]
    a = d[:]
    a[5] += 1e-3 * np.abs(a).max()
    d[...] = a
PY
if KOE_LAYERS_REF="$T/layers_ref.h5" "$KOE_BUILD/tests/test_layers_parity" > "$T/log2" 2>&1; then
  echo "layers_parity: a perturbed reference was not detected"; exit 1
fi
grep -q "layernorm dx: worst element 5" "$T/log2"
echo "layers_parity: ok (perturbed reference detected)"

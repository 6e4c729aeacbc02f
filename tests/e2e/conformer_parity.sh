#!/usr/bin/env bash
# conformer_parity.sh — one Conformer layer against PyTorch: the reference
# (tests/reference/conformer_ref.py: torch.nn pieces, fixed-seed weights saved by transformers name)
# runs a padded batch, then test_conformer's parity test loads the same weights and compares the
# residual stream after every block, the output, and every gradient of sum(out * R):
# error <= 1e-4 * max|ref| + 1e-5 per tensor, worst element printed. Two shapes: the real depthwise
# kernel (31) with utterances shorter than it, and a wider layer with more heads.
set -euo pipefail
T=$KOE_TMP/conformer_parity
mkdir -p "$T"
REF=$KOE_ROOT/tests/reference
TEST=$KOE_BUILD/tests/test_conformer
run() {
  local name=$1; shift
  "$PYTHON" "$REF/conformer_ref.py" "$T/$name.h5" "$@"
  out=$(KOE_CONFORMER_REF="$T/$name.h5" "$TEST" 2>&1) || { echo "$out"; exit 1; }
  echo "$out" | grep -E '^(ok|FAIL) ' || true
  # the parity test must have run, not been skipped
  echo "$out" | grep -q '^\[       OK \] test_parity_torch' || { echo "$out"; echo "parity test did not run"; exit 1; }
}
run k31 --B 3 --T 48 --D 32 --F 64 --H 4 --K 31 --seed 1
run wide --B 2 --T 40 --D 64 --F 256 --H 8 --K 15 --seed 2

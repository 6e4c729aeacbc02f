#!/usr/bin/env bash
# hubert_parity.sh — the HuBERT head and loss (core/hubert.c) against torchaudio's LogitGenerator
# tests/reference/hubert_ref.py writes a padded batch with masks and labels
# (some -1), the weights, and torchaudio's loss (cross_entropy(logit_m, zeros, reduction="sum"), as
# ../shared/anchors/torch_hubert_step.py takes it) with every gradient, for masked frames, unmasked
# frames and a label embedding whose norm is under cosine_similarity's eps; it also checks that
# torchaudio's form equals the plain CE koe implements. test_hubert compares loss, frame and correct
# counts and every gradient (1e-4 * max|ref| + 1e-5, worst element printed).
set -euo pipefail
T=$KOE_TMP/hubert_parity
mkdir -p "$T"
"$PYTHON" "$KOE_ROOT/tests/reference/hubert_ref.py" "$T/hubert_ref.h5"
for threads in 1 2; do
  KOE_HUBERT_REF="$T/hubert_ref.h5" OMP_NUM_THREADS=$threads "$KOE_BUILD/tests/test_hubert" 2>&1 | tee "$T/log"
  # cmocka exits 0 when tests are skipped: a run that skipped anything is not a pass here
  grep -q 'PASSED  \] 1 test(s)' "$T/log"
  ! grep -q SKIPPED "$T/log"
done
# the check must be able to fail: one reference gradient element off by 1e-3 of its scale is caught
"$PYTHON" - "$T/hubert_ref.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as h:
    d = h["masked/grad.label_embeddings"]
    a = d[:]
    a[7] += 1e-3 * np.abs(a).max()
    d[...] = a
PY
if KOE_HUBERT_REF="$T/hubert_ref.h5" "$KOE_BUILD/tests/test_hubert" > "$T/log2" 2>&1; then
  echo "hubert_parity: a perturbed reference was not detected"; exit 1
fi
grep -q "masked grad.label_embeddings: worst element 7" "$T/log2"
echo "hubert_parity: ok (perturbed reference detected)"

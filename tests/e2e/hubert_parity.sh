#!/usr/bin/env bash
# hubert_parity.sh — the HuBERT head and loss (core/hubert.c) against torchaudio's LogitGenerator
# tests/reference/hubert_ref.py writes a padded batch with masks and labels
# (some -1), the weights, and torchaudio's loss (cross_entropy(logit_m, zeros, reduction="sum"), as
# ../shared/anchors/torch_hubert_step.py takes it) with every gradient, for masked frames, unmasked
# frames and a label embedding whose norm is under cosine_similarity's eps; it also checks that
# torchaudio's form equals the plain CE koe implements. test_hubert compares loss, frame and correct
# counts and every gradient (1e-4 * max|ref| + 1e-5, worst element printed).
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/parity.sh"
T=$KOE_TMP/hubert_parity
mkdir -p "$T"
"$PYTHON" "$KOE_ROOT/tests/reference/hubert_ref.py" "$T/hubert_ref.h5"
for threads in 1 2; do
  KOE_HUBERT_REF="$T/hubert_ref.h5" OMP_NUM_THREADS=$threads "$KOE_BUILD/tests/test_hubert" 2>&1 | tee "$T/log"
  all_ran "$T/log" 1
done
caught "$T/hubert_ref.h5" masked/grad.label_embeddings 7 "masked grad.label_embeddings: worst element 7" \
  env KOE_HUBERT_REF="$T/hubert_ref.h5" "$KOE_BUILD/tests/test_hubert"
echo "hubert_parity: ok (perturbed reference detected)"

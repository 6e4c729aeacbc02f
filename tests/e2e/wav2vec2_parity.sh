#!/usr/bin/env bash
# wav2vec2_parity.sh — the wav2vec 2.0 head (core/wav2vec2.c) against a PyTorch transcription of
# fairseq's GumbelVectorQuantizer, Wav2Vec2Model quantizer/negatives/compute_preds path and
# wav2vec_criterion. test_wav2vec2 writes three cases (KOE_WAV2VEC2_DUMP): a
# training case with V = 320 entries and 100 negatives, a case with G*V = 4 codes so that negatives
# equal to their positive are common (-inf logits; the reference fails if there are none), and an
# evaluation case (hard argmax, no straight-through); each with its inputs, weights, Gumbel noise,
# dropout pattern and negatives. tests/reference/wav2vec2_ref.py adds loss, perplexities, codes and
# every gradient; test_wav2vec2 (KOE_WAV2VEC2_REF) compares them (1e-4 * max|ref| + 1e-5, worst
# element printed) at 1 and 2 threads. Finally a perturbed reference must fail.
set -euo pipefail
T=$KOE_TMP/wav2vec2_parity
mkdir -p "$T"
KOE_WAV2VEC2_DUMP="$T/w2v.h5" "$KOE_BUILD/tests/test_wav2vec2" > "$T/dump.log" 2>&1 || { cat "$T/dump.log"; exit 1; }
grep -q 'PASSED  \] 1 test(s)' "$T/dump.log"
"$PYTHON" "$KOE_ROOT/tests/reference/wav2vec2_ref.py" "$T/w2v.h5"
for threads in 1 2; do
  KOE_WAV2VEC2_REF="$T/w2v.h5" OMP_NUM_THREADS=$threads "$KOE_BUILD/tests/test_wav2vec2" 2>&1 | tee "$T/log"
  # cmocka exits 0 when tests are skipped: a run that skipped anything is not a pass here
  grep -q 'PASSED  \] 1 test(s)' "$T/log"
  ! grep -q SKIPPED "$T/log"
done
# the check must be able to fail: one reference gradient element off by 1e-3 of its scale is caught
"$PYTHON" - "$T/w2v.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as h:
    d = h["train/ref/grad.project_q.weight"]
    a = d[:]
    a[11] += 1e-3 * np.abs(a).max()
    d[...] = a
PY
if KOE_WAV2VEC2_REF="$T/w2v.h5" "$KOE_BUILD/tests/test_wav2vec2" > "$T/log2" 2>&1; then
  echo "wav2vec2_parity: a perturbed reference was not detected"; exit 1
fi
grep -q "train ref/grad.project_q.weight: worst element 11" "$T/log2"
echo "wav2vec2_parity: ok (perturbed reference detected)"

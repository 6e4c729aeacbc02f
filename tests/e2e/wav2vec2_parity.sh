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
. "$KOE_ROOT/tests/e2e/lib/parity.sh"
T=$KOE_TMP/wav2vec2_parity
mkdir -p "$T"
KOE_WAV2VEC2_DUMP="$T/w2v.h5" "$KOE_BUILD/tests/test_wav2vec2" > "$T/dump.log" 2>&1 || { cat "$T/dump.log"; exit 1; }
all_ran "$T/dump.log" 1
"$PYTHON" "$KOE_ROOT/tests/reference/wav2vec2_ref.py" "$T/w2v.h5"
for threads in 1 2; do
  KOE_WAV2VEC2_REF="$T/w2v.h5" OMP_NUM_THREADS=$threads "$KOE_BUILD/tests/test_wav2vec2" 2>&1 | tee "$T/log"
  all_ran "$T/log" 1
done
caught "$T/w2v.h5" train/ref/grad.project_q.weight 11 "train ref/grad.project_q.weight: worst element 11" \
  env KOE_WAV2VEC2_REF="$T/w2v.h5" "$KOE_BUILD/tests/test_wav2vec2"
echo "wav2vec2_parity: ok (perturbed reference detected)"

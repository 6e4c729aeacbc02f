#!/usr/bin/env bash
# optim_parity.sh — core/optim.c against PyTorch and fairseq's formulas (tests/reference/optim_ref.py):
# AdamW (decay/no-decay groups, changing lr, two ZeRO slices) vs torch.optim.AdamW for 10 steps,
# gradient clipping vs torch.nn.utils.clip_grad_norm_, and the linear (polynomial_decay), cosine and
# tri_stage schedules vs fairseq's step_update formulas at sample steps. Also at 2 threads.
set -euo pipefail
for threads in 1 2; do
  echo "== OMP_NUM_THREADS=$threads"
  OMP_NUM_THREADS=$threads "$PYTHON" "$KOE_ROOT/tests/reference/optim_ref.py" \
    --bin "$KOE_BUILD/tests/test_optim" --dir "$KOE_TMP/optim_parity_$threads"
done

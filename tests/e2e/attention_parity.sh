#!/usr/bin/env bash
# attention_parity.sh — koe's attention kernels against torchaudio's SelfAttention:
# tests/reference/attention_ref.py writes the reference tensors for a padded batch (Base sizes, and
# a smaller 4-head case with a longer T), then build/tests/test_attention_parity compares the
# output and every input/weight gradient (error <= 1e-4 max|ref| + 1e-5, worst element printed).
set -euo pipefail
T=$KOE_TMP/attention_parity
mkdir -p "$T"
"$PYTHON" "$KOE_ROOT/tests/reference/attention_ref.py" "$T/base.h5"
KOE_ATTENTION_REF="$T/base.h5" "$KOE_BUILD/tests/test_attention_parity"
"$PYTHON" "$KOE_ROOT/tests/reference/attention_ref.py" "$T/h4.h5" --B 3 --T 203 --C 256 --H 4
KOE_ATTENTION_REF="$T/h4.h5" OMP_NUM_THREADS=2 "$KOE_BUILD/tests/test_attention_parity"

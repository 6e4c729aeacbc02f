#!/usr/bin/env bash
# bestrq_parity.sh — BEST-RQ (core/bestrq.c) against PyTorch: test_bestrq with
# KOE_BESTRQ_REF writes one realistic case (3 utterances of 80-d fbank-like features, 2 quantizers of
# 8192 x 16, noise_std 0.2, a 48-wide head) with every koe result; tests/reference/bestrq_ref.py
# recomputes normalisation, targets, masks, the noised input, the loss and every gradient and compares
# (targets identical, the rest 1e-4 * max|ref| + 1e-5, worst element printed). Run with 1 and 2
# threads (koe's results must not change); then the check must be able to fail: a gradient element
# off by 1e-3 of its scale, a changed target and a dropped loss frame are each caught.
set -euo pipefail
. "$KOE_ROOT/tests/e2e/lib/parity.sh"
T=$KOE_TMP/bestrq_parity
mkdir -p "$T"
for threads in 1 2; do
  KOE_BESTRQ_REF="$T/case$threads.h5" OMP_NUM_THREADS=$threads "$KOE_BUILD/tests/test_bestrq" 2>&1 | tee "$T/log"
  all_ran "$T/log" 1
  "$PYTHON" "$KOE_ROOT/tests/reference/bestrq_ref.py" "$T/case$threads.h5"
done
"$PYTHON" - "$T/case1.h5" "$T/case2.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for k in ("koe.targets", "koe.mask", "koe.input"):
    assert np.array_equal(a[k][:], b[k][:]), f"{k} differs between 1 and 2 threads"
print("bestrq_parity: targets, loss frames and noised input identical with 1 and 2 threads")
PY

# each perturbation must make the reference fail, naming what is wrong
perturb() { # name, python statement on h (the file), expected message
  cp "$T/case2.h5" "$T/bad.h5"
  "$PYTHON" - "$T/bad.h5" "$2" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as h:
    exec(sys.argv[2])
PY
  if "$PYTHON" "$KOE_ROOT/tests/reference/bestrq_ref.py" "$T/bad.h5" > "$T/bad.log" 2>&1; then
    echo "bestrq_parity: $1 was not detected"; exit 1
  fi
  grep -q "$3" "$T/bad.log" || { cat "$T/bad.log"; echo "bestrq_parity: $1: expected '$3'"; exit 1; }
  echo "bestrq_parity: $1 detected"
}
perturb "a gradient off by 1e-3 of its scale" \
  'd = h["koe.grad.classifier.1.weight"]; v = d[:]; v[7] += 1e-3 * np.abs(v).max(); d[...] = v' \
  "grad.classifier.1.weight: worst element 7"
perturb "a changed target" \
  'd = h["koe.targets"]; v = d[:]; v[2] = (v[2] + 1) % 8192; d[...] = v' \
  "FAIL target q0 utt0 frame1"
perturb "a dropped loss frame" \
  'd = h["koe.mask"]; v = d[:]; v[np.nonzero(v)[0][0]] = 0; d[...] = v' \
  "FAIL loss frames = encoder frames with all input frames masked"
echo "bestrq_parity: ok"

# tests/e2e/lib/parity.sh — sourced by the parity tests, where a cmocka binary compares koe with a
# reference file (PyTorch, torchaudio) named in an environment variable.
# all_ran LOG N: the binary's log says N tests passed and none was skipped (cmocka exits 0 when tests
# are skipped: a run that skipped anything is not a pass here).
all_ran() {
  grep -q "PASSED  \] $2 test(s)" "$1" || { cat "$1"; echo "FAIL: want $2 test(s) passed"; exit 1; }
  ! grep -q SKIPPED "$1" || { cat "$1"; echo "FAIL: a test was skipped"; exit 1; }
}

# caught FILE DATASET I WANT CMD...: the comparison must be able to fail. Element I (in row-major order)
# of DATASET in the reference FILE is moved by 1e-3 of the dataset's largest magnitude; then CMD must
# fail, its output matching WANT (a grep regular expression).
caught() {
  local file=$1 ds=$2 i=$3 want=$4
  shift 4
  "$PYTHON" - "$file" "$ds" "$i" << 'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as h:
    d = h[sys.argv[2]]
    a = d[:]
    a.flat[int(sys.argv[3])] += 1e-3 * np.abs(a).max()
    d[...] = a
PY
  if "$@" > "$file.caught" 2>&1; then echo "FAIL: a perturbed reference ($ds, element $i) was not detected"; exit 1; fi
  grep -q "$want" "$file.caught" || { cat "$file.caught"; echo "FAIL: the perturbed reference: no '$want'"; exit 1; }
  echo "perturbed reference detected: $(grep -m1 "$want" "$file.caught")"
}

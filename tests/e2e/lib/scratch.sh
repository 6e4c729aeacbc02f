# tests/e2e/lib/scratch.sh — sourced by e2e tests that work in a directory of their own.
# scratch NAME: D=$KOE_TMP/NAME, made afresh and made the working directory; one thread for OpenMP and
# OpenBLAS (the suite shares 2 cores).
scratch() {
  D=$KOE_TMP/$1
  rm -rf "$D" && mkdir -p "$D"
  cd "$D"
  export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
}

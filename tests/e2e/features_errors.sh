#!/usr/bin/env bash
# features_errors.sh — `koe features` refuses bad usage with exit 1 and a message naming the
# problem, and leaves no output file behind.
set -euo pipefail
T=$KOE_TMP/features_errors
mkdir -p "$T/in"
"$PYTHON" - "$T/in/a.wav" <<'PY'
import sys, numpy as np, soundfile
soundfile.write(sys.argv[1], (np.sin(np.arange(8000) * 0.3) * 3000).astype(np.int16), 16000, subtype="PCM_16")
PY
"$KOE" prepare --out "$T/corpus" --lang xx "$T/in"

expect_fail() { # expect_fail PATTERN ARGS...: exit code 1, PATTERN on stderr
  local pat=$1; shift
  set +e; "$KOE" features "$@" 2> "$T/err"; local rc=$?; set -e
  if [ $rc != 1 ] || ! grep -q -- "$pat" "$T/err"; then
    echo "koe features $*: expected exit 1 and '$pat', got exit $rc:"; cat "$T/err"; exit 1
  fi
}
expect_fail "expected mfcc or fbank" --corpus "$T/corpus" --kind plp --out "$T/x.h5"
expect_fail "required" --corpus "$T/corpus" --out "$T/x.h5"
expect_fail "unknown option" --corpus "$T/corpus" --kind mfcc --out "$T/x.h5" --frobnicate 1
expect_fail "threads" --corpus "$T/corpus" --kind mfcc --out "$T/x.h5" --threads 0
expect_fail "$T/nothere" --corpus "$T/nothere" --kind mfcc --out "$T/x.h5"
expect_fail "$T/no/such/dir/x.h5" --corpus "$T/corpus" --kind mfcc --out "$T/no/such/dir/x.h5"
test ! -e "$T/x.h5" && test ! -e "$T/x.h5.tmp"
"$KOE" help features | grep -q -- "--threads N"
# more threads than cores runs, with a warning
N=$(( $(getconf _NPROCESSORS_ONLN) + 1 )) # not nproc: it honours OMP_NUM_THREADS
"$KOE" features --corpus "$T/corpus" --kind fbank --out "$T/x.h5" --threads $N 2> "$T/err"
grep -q "$N threads on .* cores: oversubscribed" "$T/err" || { cat "$T/err"; echo "FAIL: no oversubscription warning"; exit 1; }
test -f "$T/x.h5"
echo ok

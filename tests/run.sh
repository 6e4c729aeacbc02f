#!/usr/bin/env bash
# tests/run.sh — run the suite: every unit test binary in $BUILD/tests, then every script in
# tests/e2e. Arguments filter by name (substring). Prints one line per test, under it any part the
# test skipped on this machine and why, and a final "N passed, N failed". Each test's output goes to
# $BUILD/test-logs/NAME.log and is shown on failure.
# Last, every log.jsonl the tests' runs left in $KOE_TMP must parse as strict JSON, line by line.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export KOE="$PWD/$BUILD/koe" KOE_BUILD="$PWD/$BUILD" KOE_ROOT="$PWD"
export PYTHON=${PYTHON:-/usr/bin/python3} ANCHORS=${ANCHORS:-$(cd .. && pwd)/shared/anchors}
export HDF5_PLUGIN_PATH="$PWD/$BUILD/hdf5-plugins"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export HDF5_USE_FILE_LOCKING=FALSE
if [ "${SAN:-0}" = 1 ]; then
  # Open MPI and HDF5 keep allocations for the life of the process: leak checks would only report theirs.
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
logs="$BUILD/test-logs"
mkdir -p "$logs"
export KOE_TMP=$(mktemp -d /tmp/koe-test.XXXXXX)
trap 'rm -rf "$KOE_TMP"' EXIT

tests=()
for t in "$BUILD"/tests/test_*; do [ -x "$t" ] && tests+=("$t"); done
for t in tests/e2e/*.sh; do [ -f "$t" ] && tests+=("$t"); done

passed=0 failed=0 failures=()
for t in "${tests[@]}"; do
  name=$(basename "$t"); name=${name%.sh}
  if [ $# -gt 0 ]; then
    keep=0; for f in "$@"; do [[ $name == *"$f"* ]] && keep=1; done
    [ $keep = 1 ] || continue
  fi
  t0=$EPOCHREALTIME
  case $t in
    *.sh) bash "$t" > "$logs/$name.log" 2>&1 ;;
    *) "$t" > "$logs/$name.log" 2>&1 ;;
  esac
  rc=$?
  dt=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc = 0 ]; then
    passed=$((passed + 1)); printf 'PASS  %-28s %6ss\n' "$name" "$dt"
    # what it left out on this machine, and why: the "SKIP: " lines a test prints (lib/bf16.sh,
    # unit/bf16_here.h; not the unit parity cases' "SKIPPED: ", which their e2e scripts run)
    grep '^SKIP: ' "$logs/$name.log" | awk '!seen[$0]++' | sed 's/^/      /'
  else
    failed=$((failed + 1)); failures+=("$name"); printf 'FAIL  %-28s %6ss  (exit %d)\n' "$name" "$dt" "$rc"
    sed 's/^/    | /' "$logs/$name.log" | tail -n 40
  fi
done
# Every log.jsonl the tests' runs wrote is strict JSON, line by line (tests/reference/jsonl_check.py).
mapfile -t runlogs < <(find "$KOE_TMP" -name log.jsonl -type f 2> /dev/null)
if [ ${#runlogs[@]} -gt 0 ]; then
  if "$PYTHON" tests/reference/jsonl_check.py "${runlogs[@]}" > "$logs/log_jsonl.log" 2>&1; then
    passed=$((passed + 1)); printf 'PASS  %-28s %s\n' "log.jsonl" "$(cat "$logs/log_jsonl.log")"
  else
    failed=$((failed + 1)); failures+=("log.jsonl"); printf 'FAIL  %-28s\n' "log.jsonl"
    sed 's/^/    | /' "$logs/log_jsonl.log"
  fi
fi
[ $failed = 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ $failed = 0 ] && [ $passed -gt 0 ]

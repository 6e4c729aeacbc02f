#!/usr/bin/env bash
# tests/bench.sh — `make bench`: every tests/bench/*.sh in turn. Benchmarks print ratios against
# ../shared/anchors measured in the same run; they are not pass/fail tests. What they printed, session
# by session: tests/bench/RESULTS.md.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export KOE="$PWD/$BUILD/koe" KOE_BUILD="$PWD/$BUILD" KOE_ROOT="$PWD"
export PYTHON=${PYTHON:-/usr/bin/python3} ANCHORS=${ANCHORS:-$(cd .. && pwd)/shared/anchors}
export HDF5_PLUGIN_PATH="$PWD/$BUILD/hdf5-plugins"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export HDF5_USE_FILE_LOCKING=FALSE
export KOE_TMP=$(mktemp -d /tmp/koe-bench.XXXXXX)
trap 'rm -rf "$KOE_TMP"' EXIT
rc=0
for b in tests/bench/*.sh; do
  [ -f "$b" ] || continue
  if [ $# -gt 0 ]; then keep=0; for f in "$@"; do [[ $b == *"$f"* ]] && keep=1; done; [ $keep = 1 ] || continue; fi
  echo "== $(basename "$b" .sh)"
  bash "$b" || { echo "   (benchmark $(basename "$b") failed)"; rc=1; }
done
exit $rc

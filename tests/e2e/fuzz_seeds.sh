#!/usr/bin/env bash
# fuzz_seeds.sh — the libFuzzer harnesses (tests/fuzz/README.md) as a regression check: each runs its
# seeds (valid inputs and every input that once crashed it) and fuzzes from them for a few seconds
# (FUZZ_SECONDS, default 3) under ASan+UBSan, in a throw-away corpus. Fails on any crash, hang, leak
# or sanitizer report, printing the report. `make test` builds the harnesses (make fuzz-build).
set -euo pipefail
cd "$KOE_ROOT"
for f in tests/fuzz/*.c; do
  n=${f##*/}; n=${n%.c}
  [ -x "build-fuzz/fuzz/$n" ] || { echo "build-fuzz/fuzz/$n is missing: run make fuzz-build"; exit 1; }
done
# run.sh's own corpus/crash directories stay in build-fuzz; its scratch corpus is under /tmp
FUZZ_SECONDS=${FUZZ_SECONDS:-3} FUZZ_KEEP=0 bash tests/fuzz/run.sh
echo "fuzz_seeds: ok"

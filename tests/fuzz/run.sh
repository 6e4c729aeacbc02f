#!/usr/bin/env bash
# tests/fuzz/run.sh — run the libFuzzer harnesses (tests/fuzz/README.md) built by `make fuzz-build`:
# each for FUZZ_SECONDS (default 60) under nice -n FUZZ_NICE (default 19), starting from tests/fuzz/NAME/seeds plus the
# inputs earlier runs kept (build-fuzz/corpus/NAME; FUZZ_KEEP=0: a throw-away corpus, the regression
# check tests/e2e/fuzz_seeds.sh makes). Arguments: harness names (default all). One line per harness:
# executions, CPU seconds, and FAIL with the log's report when it found a crash, a hang, a leak or a
# sanitizer report (the input is saved as build-fuzz/crashes/NAME-*). With FUZZ_KEEP=1 the CPU
# seconds are added to build-fuzz/fuzz-cpu.tsv (name, cpu_s, execs, status), the campaign's record.
set -u
cd "$(dirname "$0")/../.."
B=${FUZZ_BUILD:-build-fuzz}
secs=${FUZZ_SECONDS:-60}
niceness=${FUZZ_NICE:-19} # 0: a campaign stream that owns a core
keep=${FUZZ_KEEP:-1}
if [ $# -gt 0 ]; then names=("$@"); else
  names=(); for f in tests/fuzz/*.c; do n=${f##*/}; names+=("${n%.c}"); done
fi
# allocator_may_return_null: an impossible allocation returns NULL, as glibc's malloc does, so that
# libhdf5 (not instrumented) fails as it would in koe; koe's own koe_malloc exits, which is a finding
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 HDF5_USE_FILE_LOCKING=FALSE
logs=$B/fuzz-logs; [ "$keep" = 1 ] || logs=$B/fuzz-logs/seeds-only # a campaign and make test may overlap
mkdir -p "$B/crashes" "$logs"
scratch=$(mktemp -d /tmp/koe-fuzz-run.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
failed=0
for n in "${names[@]}"; do
  bin=$B/fuzz/$n
  if [ ! -x "$bin" ] || [ ! -d "tests/fuzz/$n/seeds" ]; then
    echo "FAIL  $n: no $bin or tests/fuzz/$n/seeds (make fuzz-build)"; failed=$((failed + 1)); continue
  fi
  if [ "$keep" = 1 ]; then corpus=$B/corpus/$n; else corpus=$scratch/$n; fi
  mkdir -p "$corpus"
  log=$logs/$n.$$.log # one per run: streams of the same harness at once keep their own counts
  # Text inputs may grow to 8 kB; HDF5 files keep the seeds' size (libFuzzer's default max_len).
  maxlen=(); case $n in recipe|hf_config|tsv|scp|ctm|wordlist) maxlen=(-max_len=8192) ;; esac
  t=$scratch/time.$n
  ( TIMEFORMAT='%U %S'; { time nice -n "$niceness" "$bin" "$corpus" "tests/fuzz/$n/seeds" -max_total_time="$secs" \
      -timeout=20 -rss_limit_mb=2048 "${maxlen[@]}" -artifact_prefix="$B/crashes/$n-" -print_final_stats=1 \
      > "$log" 2>&1; echo $? > "$t.rc"; } 2> "$t" )
  rc=$(cat "$t.rc")
  cpu=$(awk '{ printf "%.1f", $1 + $2 }' "$t")
  execs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log")
  status=ok
  if [ "$rc" != 0 ]; then
    status=FAIL; failed=$((failed + 1))
    echo "FAIL  $n  (exit $rc, ${execs:-?} runs, ${cpu} CPU s; log $log)"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|fuzz: |.*deadly signal|.*timeout|.*out-of-memory|artifact_prefix|Test unit written)' "$log" | head -n 12 | sed 's/^/    | /'
  else
    printf 'ok    %-12s %10s runs %8s CPU s\n' "$n" "${execs:-?}" "$cpu"
  fi
  [ "$keep" = 1 ] && printf '%s\t%s\t%s\t%s\n' "$n" "$cpu" "${execs:-0}" "$status" >> "$B/fuzz-cpu.tsv"
done
[ $failed = 0 ]

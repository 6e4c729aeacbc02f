#!/usr/bin/env bash
# tests/bench/gemm.sh — the transformer's weight products at Base sizes (M = 400) through koe's GEMM
# calls, fp32 and bf16, each weight read cold (a different weight each call, as in a step) and warm
# (bench_gemm.c), 2 threads, twice: what a bf16 step's GEMMs can gain over fp32's before the rest of
# the step (core/README.md, "What bounds a bf16 step's speed-up").
set -euo pipefail
export OMP_NUM_THREADS=2
for run in 1 2; do
  echo "   -- run $run of 2"
  "$KOE_BUILD/bench/bench_gemm" | sed 's/^/   /'
done

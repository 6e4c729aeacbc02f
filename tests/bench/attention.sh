#!/usr/bin/env bash
# tests/bench/attention.sh — attention forward+backward (core/attention.c) on 2 threads at speech
# sizes (C=768, H=12, dropout 0.1, a padded batch), as GFLOP/s against koe's sgemm (core/gemm.h) measured
# in the same process, and as a speed ratio against PyTorch doing the same part of torchaudio's
# SelfAttention (tests/reference/attention_torch_time.py) in the same run.
set -euo pipefail
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2
ms() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
for shape in "8 200" "4 750" "2 1500"; do
  set -- $shape
  o=$("$KOE_BUILD/bench/bench_attention" --B "$1" --T "$2" --p 0.1 --pad 0.25 --repeats 5)
  t=$("$PYTHON" "$KOE_ROOT/tests/reference/attention_torch_time.py" --B "$1" --T "$2" --p 0.1 --pad 0.25 \
    --repeats 5 --threads 2)
  echo "   $o"
  awk -v of="$(echo "$o" | ms fwd_ms)" -v ob="$(echo "$o" | ms bwd_ms)" -v tf="$(echo "$t" | ms fwd_ms)" \
    -v tb="$(echo "$t" | ms bwd_ms)" -v s="B=$1 T=$2" 'BEGIN {
    printf "   %-12s koe fwd+bwd %.1f ms  torch %.1f ms  ratio=%.2f (torch time / koe time)\n", s, of + ob, tf + tb,
      (tf + tb) / (of + ob) }'
done

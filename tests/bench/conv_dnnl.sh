#!/usr/bin/env bash
# tests/bench/conv_dnnl.sh — the waveform conv stack (HuBERT Base sizes, batch 2 x 4 s) through koe's
# GEMMs (read in place, core/layers.c) against oneDNN's convolution primitives (bench_conv_dnnl), fp32 and bf16, on koe's
# time-major layout (nwc) and on the blocked layouts oneDNN prefers (reorders timed), 1 and 2 threads.
# Prints per configuration the stack's fwd+bwd minimum wall and CPU ms and koe / oneDNN (> 1: oneDNN
# faster), and the layer with the largest relative difference of the two results.
set -euo pipefail
for t in 1 2; do
  for p in "" --bf16; do
    for l in "" --blocked; do
      OMP_NUM_THREADS=$t "$KOE_BUILD/bench/bench_conv_dnnl" --reps 5 $p $l |
        awk -v s="threads=$t ${p:---fp32} ${l:---nwc}" '
          $2 == "both" { wk += $4; wd += $5; ck += $8; cd += $9 }
          $2 != "both" && $12 + 0 > d { d = $12 + 0; dl = $1 }
          END { printf "   %-26s wall koe %7.1f ms onednn %7.1f ms ratio=%.2f  cpu koe %7.1f onednn %7.1f ratio=%.2f  reldiff %.1e (%s)\n",
                  s, wk, wd, wk / wd, ck, cd, ck / cd, d, dl }'
    done
  done
done

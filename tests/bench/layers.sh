#!/usr/bin/env bash
# tests/bench/layers.sh — the layer kernels (bench_layers, HuBERT Base sizes, batch 2 x 4 s) against
# the same PyTorch ops on the same shapes in this run (torch layouts: channels-first convs), 2 threads.
# Two environments, each for koe and torch: "default" (as launched), and "tuned":
# OMP_WAIT_POLICY=PASSIVE (OpenMP workers sleep instead of spinning against BLAS pthreads) and,
# on CPUs with AVX-512, OPENBLAS_CORETYPE=SKYLAKEX (OpenBLAS 0.3.21 takes newer AMD CPUs for Haswell
# and runs 256-bit kernels; this matters to PyTorch's OpenBLAS GEMMs only: koe's are oneDNN's,
# core/gemm.h). Prints per kernel fwd+bwd ms (medians of 5) and torch / koe (> 1: koe faster).
set -euo pipefail
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2
tuned=(OMP_WAIT_POLICY=PASSIVE)
grep -qw avx512f /proc/cpuinfo && tuned+=(OPENBLAS_CORETYPE=SKYLAKEX)
echo "   tuned environment: ${tuned[*]}"
"$KOE_BUILD/bench/bench_layers" --reps 5 > "$KOE_TMP/layers-koe.txt"
env "${tuned[@]}" "$KOE_BUILD/bench/bench_layers" --reps 5 > "$KOE_TMP/layers-koe-tuned.txt"
torch_bench() {
"$PYTHON" - <<'PY'
import time, torch, torch.nn.functional as F
torch.set_num_threads(2)
torch.manual_seed(0)

def bench(name, make, reps=5):
    tf, tb = [], []
    for _ in range(reps):
        inputs, fn = make()
        t0 = time.perf_counter()
        y = fn(*inputs)
        t1 = time.perf_counter()
        y.backward(torch.randn_like(y))
        t2 = time.perf_counter()
        tf.append(t1 - t0)
        tb.append(t2 - t1)
    tf.sort(); tb.sort()
    print(f"{name} fwd {1e3 * tf[reps // 2]:.2f} ms bwd {1e3 * tb[reps // 2]:.2f} ms", flush=True)

def leaf(*s, grad=True):
    return torch.randn(*s).requires_grad_(grad)

B, T = 2, 64000
K, S = [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]
for l in range(7):
    C = 1 if l == 0 else 512
    bench(f"conv_waveform{l}", lambda: ((leaf(B, C, T, grad=l > 0), leaf(512, C, K[l])),
                                        lambda x, w: F.conv1d(x, w, stride=S[l])))
    T = (T - K[l]) // S[l] + 1
T0 = (64000 - 10) // 5 + 1
bench("groupnorm_waveform0", lambda: ((leaf(B, 512, T0), leaf(512), leaf(512)),
                                      lambda x, w, b: F.group_norm(x, 512, w, b)))
bench("conv_positional", lambda: ((leaf(B, 768, T), leaf(768, 48, 128)),
                                  lambda x, w: F.conv1d(x, w, padding=64, groups=16)))
bench("weightnorm_positional", lambda: ((leaf(1, 1, 128), leaf(768, 48, 128)),
                                        lambda g, v: torch._weight_norm(v, g, 2)))
for name, C, OC in [("linear_qkv", 768, 3 * 768), ("linear_ffn1", 768, 3072), ("linear_ffn2", 3072, 768)]:
    bench(name, lambda: ((leaf(B * T, C), leaf(OC, C), leaf(OC)), F.linear))
bench("layernorm_768", lambda: ((leaf(B * T, 768), leaf(768), leaf(768)),
                                lambda x, w, b: F.layer_norm(x, (768,), w, b)))
bench("gelu_ffn", lambda: ((leaf(B * T * 3072),), F.gelu))
bench("conv_depthwise_conformer", lambda: ((leaf(B, 768, T), leaf(768, 1, 31)),
                                           lambda x, w: F.conv1d(x, w, padding=15, groups=768)))
PY
}
torch_bench > "$KOE_TMP/layers-torch.txt"
env "${tuned[@]}" bash -c "$(declare -f torch_bench); torch_bench" > "$KOE_TMP/layers-torch-tuned.txt"
awk 'FNR == 1 { f++ } { ms[f, $1] = $3 + $6; if (f == 1) order[++n] = $1 }
  END {
    printf "   %-26s %24s %24s\n", "", "------ default ------", "------- tuned -------"
    printf "   %-26s %8s %8s %6s %8s %8s %6s\n", "kernel (fwd+bwd ms)", "koe", "torch", "ratio", "koe", "torch", "ratio"
    for (i = 1; i <= n; i++) { k = order[i]
      printf "   %-26s %8.2f %8.2f %6.2f %8.2f %8.2f %6.2f\n", k, ms[1, k], ms[3, k], ms[3, k] / ms[1, k],
        ms[2, k], ms[4, k], ms[4, k] / ms[2, k]; tk[1] += ms[1, k]; tk[2] += ms[2, k]; tt[1] += ms[3, k]; tt[2] += ms[4, k] }
    printf "   %-26s %8.2f %8.2f %6.2f %8.2f %8.2f %6.2f\n", "sum", tk[1], tt[1], tt[1] / tk[1], tk[2], tt[2], tt[2] / tk[2]
  }' "$KOE_TMP/layers-koe.txt" "$KOE_TMP/layers-koe-tuned.txt" "$KOE_TMP/layers-torch.txt" "$KOE_TMP/layers-torch-tuned.txt"

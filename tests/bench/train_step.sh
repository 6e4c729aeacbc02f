# train_step.sh — `make bench BENCH=train_step`: a full HuBERT training step (forward, loss, backward,
# AdamW), koe vs ../shared/anchors/torch_hubert_step.py, 2 threads, batch 2 x 4 s, the three model
# sizes, side by side in one run (goal >= 2x, peak RSS <= PyTorch's).
# Run in the machine's environment as it is. This machine sets OPENBLAS_CORETYPE=Haswell (older
# OpenBLAS builds miscompute on some CPUs): PyTorch's OpenBLAS GEMMs follow it, koe's GEMMs (oneDNN,
# core/gemm.h) and PyTorch's convolutions (oneDNN too) pick kernels from the CPU's features.
# KOE_BENCH_NATIVE=1 also runs both sides with OPENBLAS_CORETYPE/L2_SIZE unset.
set -euo pipefail
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
STEPS=${KOE_BENCH_STEPS:-4}
field() { grep -o "$1=[0-9.]*" | tail -1 | cut -d= -f2; }
run_pair() { # label env-prefix...
  local label=$1; shift
  for m in tiny small base; do
    case $m in
      tiny) r=recipes/tiny/hubert.ini ;;
      small) r=recipes/tiny/hubert_small.ini ;;
      base) r=recipes/base/hubert_iter1.ini ;;
    esac
    k=$("$@" "$KOE" bench "$KOE_ROOT/$r" --threads 2 --steps "$STEPS" 2>&1)
    [ $m = base ] && echo "$k" | sed -n '/^section/,/^head/p' | sed 's/^/   /'
    t=$("$@" "$PYTHON" "$ANCHORS/torch_hubert_step.py" --model $m --threads 2 --steps "$STEPS" 2>&1 | tail -1)
    ka=$(echo "$k" | tail -1 | field audio_s_per_s); ta=$(echo "$t" | field audio_s_per_s)
    kr=$(echo "$k" | tail -1 | field peak_rss_mb); tr=$(echo "$t" | field peak_rss_mb)
    kf=$(echo "$k" | tail -1 | field sgemm_fraction)
    printf '   %-7s %-6s koe audio_s_per_s=%-7s torch=%-7s ratio=%-5s  peak_rss_mb koe=%-5s torch=%-5s  koe sgemm_fraction=%s\n' \
      "$label" $m "$ka" "$ta" "$(awk -v a="$ka" -v b="$ta" 'BEGIN{printf "%.2f", a/b}')" "$kr" "$tr" "$kf"
  done
}
run_pair default env
if [ "${KOE_BENCH_NATIVE:-0}" = 1 ]; then run_pair native env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE; fi

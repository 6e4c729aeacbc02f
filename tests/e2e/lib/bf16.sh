# tests/e2e/lib/bf16.sh — sourced by the tests with a run.precision = bf16 part, which needs a CPU with
# bf16 dot products (AVX512_BF16 or AMX; on any other CPU koe refuses bf16, as tests/e2e/train_errors.sh
# checks).
# bf16_here ERR WHAT: whether koe runs bf16 products here, as the gemm line a koe command printed into
# ERR says ("bf16 dot products: yes|no", core/gemm.c gemm_describe). If not, prints "SKIP: WHAT: ..."
# (tests/run.sh shows it under the test's PASS) and returns 1. A CPU that lists avx512_bf16, with
# oneDNN's ISA not capped by ONEDNN_MAX_CPU_ISA, must get a yes: there a skip would hide a regression.
bf16_here() {
  local err=$1 what=$2
  grep -q "bf16 dot products: yes" "$err" && return 0
  grep -q "bf16 dot products: no" "$err" || { cat "$err"; echo "FAIL: no gemm line in $err"; exit 1; }
  if grep -qw avx512_bf16 /proc/cpuinfo && [ -z "${ONEDNN_MAX_CPU_ISA:-}" ]; then
    cat "$err"; echo "FAIL: koe says no bf16 dot products on a CPU with avx512_bf16"; exit 1
  fi
  echo "SKIP: $what: this CPU has no bf16 dot products ($(grep -o 'effective ISA [^ ]*' "$err"))"
  return 1
}

# bf16_probe ERR: a koe command's gemm line for bf16_here, where a test runs none of its own: one
# synthetic fp32 step of the tiny recipe (koe bench, a few seconds).
bf16_probe() {
  "$KOE" bench "$KOE_ROOT/recipes/tiny/hubert.ini" --steps 1 --threads 1 --no-profile > /dev/null 2> "$1" ||
    { cat "$1"; echo "FAIL: koe bench (bf16_probe)"; exit 1; }
}

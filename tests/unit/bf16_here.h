/* bf16_here.h — whether a test's bf16 products can run here: oneDNN has bf16 dot products
 * (gemm_bf16_supported, what run.precision = bf16 needs). Where it has not, bf16_here prints why WHAT
 * is skipped (a "SKIP: " line, which tests/run.sh shows under the test) and returns 0. A CPU that
 * lists avx512bf16, with oneDNN's ISA not capped by ONEDNN_MAX_CPU_ISA, must have them: there a skip
 * would hide a regression, so the test fails. The e2e tests' twin is tests/e2e/lib/bf16.sh.
 * Include after cmocka.h and core/gemm.h. */
#pragma once
#include <stdio.h>
#include <stdlib.h>

static inline int bf16_here(const char *what) {
    if (gemm_bf16_supported()) return 1;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16") && !getenv("ONEDNN_MAX_CPU_ISA"))
        fail_msg("%s: oneDNN has no bf16 dot products on a CPU that lists avx512bf16", what);
    printf("SKIP: %s: this CPU has no bf16 dot products (run.precision = bf16 is refused here)\n", what);
    return 0;
}

/* vmath.h — float functions written for `omp simd` loops: branch-free, plain IEEE operations (no
 * libm call; FMA only where written, koe_madd: -std=c11 does not contract), so the vector and the scalar form of a loop give the
 * same bits and a result does not depend on how a loop is split among threads or into tails. Written
 * for attention's softmax, where glibc's expf (a call per element) took half of the forward's time,
 * and GELU (layers.c). */
#ifndef KOE_VMATH_H
#define KOE_VMATH_H

#include <math.h>
#include <stdint.h>

typedef union {
    float f;
    uint32_t u;
} KoeFloatBits; /* at file scope: clang 14 refuses an unnamed union inside a `declare simd` function */

/* a * b + c: one rounding where the target has FMA (fmaf is then the same instruction in vector and
 * scalar code), two otherwise; a build's results are the same for every loop split, not across builds */
#pragma omp declare simd notinbranch
static inline float koe_madd(float a, float b, float c) {
#ifdef __FMA__
    return fmaf(a, b, c);
#else
    return a * b + c;
#endif
}

/* exp(x) for x <= 0. x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts, so n ln2 is exact),
 * exp(r) by its Taylor series to r^7 (truncation < 1e-8 relative), times 2^n built in the exponent
 * bits. The input is clamped to [-87, 0], which keeps 2^n a normal float: below -87 the result is
 * exp(-87) < 1.7e-38, and a caller for whom that is not nothing selects 0 there itself. */
#pragma omp declare simd notinbranch
static inline float koe_exp_nonpos(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 0.0f ? 0.0f : x; /* attention: only a masked key (result discarded) is above its row's maximum */
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = x - n * 0.693145751953125f; /* ln2 high part: 16 bits, n * it is exact */
    r = r - n * 1.42860682030941723e-6f;  /* ln2 low part */
    float e = 1.0f / 5040.0f;
    e = koe_madd(e, r, 1.0f / 720.0f);
    e = koe_madd(e, r, 1.0f / 120.0f);
    e = koe_madd(e, r, 1.0f / 24.0f);
    e = koe_madd(e, r, 1.0f / 6.0f);
    e = koe_madd(e, r, 0.5f);
    e = koe_madd(e, r, 1.0f);
    e = koe_madd(e, r, 1.0f);
    /* 2^n from t's bits, 0x4B400000 + n (t = 1.5 * 2^23 + n, one binade), in unsigned arithmetic: a NaN
     * x gives t any bits, which must not be converted or shifted as a signed int (undefined); e is NaN
     * then, and so is the result */
    const KoeFloatBits tb = {.f = t};
    const KoeFloatBits scale = {.u = (tb.u - 0x4B400000u + 127u) << 23};
    return e * scale.f;
}

#endif

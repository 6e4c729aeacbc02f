/* parity.h — the one parity rule every test against PyTorch uses:
 * a tensor agrees when every element has |got - ref| <= 1e-4 * max|ref| + 1e-5. parity_check prints
 * one line per tensor with the worst element (NaN counts as the worst) and returns 1 when it agrees. */
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    double maxref, worst, tol; /* max|ref|, the worst |got - ref| (INFINITY for NaN), the tolerance */
    int64_t at;                /* index of the worst element */
} ParityResult;

static inline int parity_check(const char *name, const float *got, const float *ref, int64_t n, ParityResult *res) {
    ParityResult r = {0, -1, 0, 0};
    for (int64_t i = 0; i < n; i++) r.maxref = fmax(r.maxref, fabs((double)ref[i]));
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)ref[i]);
        if (isnan(e)) e = INFINITY;
        if (e > r.worst) r.worst = e, r.at = i;
    }
    r.tol = 1e-4 * r.maxref + 1e-5;
    const int ok = r.worst <= r.tol;
    printf("%s %-44s max|ref| %.3g  worst err %.3g at %lld (koe %.9g, torch %.9g)  tol %.3g\n", ok ? "ok  " : "FAIL",
           name, r.maxref, r.worst, (long long)r.at, n ? (double)got[r.at] : 0.0, n ? (double)ref[r.at] : 0.0, r.tol);
    if (res) *res = r;
    return ok;
}

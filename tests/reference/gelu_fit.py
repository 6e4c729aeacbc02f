#!/usr/bin/python3
"""The coefficients of GELU's normal tail in core/layers.c (normal_cdf).

Phi(-u) = phi(u) R(u) for u >= 0, R the Mills ratio (1 - Phi(u)) / phi(u). With t = 1/(1 + A u),
R(u) = t P(t) where P is smooth on (0, 1] (P(0+) = A, P(1) = R(0) = sqrt(pi/2)). P is fitted by
least squares reweighted towards minimax (Lawson) in relative error over u in [0, 13.3] (below
-13.2 the density underflows float), then its coefficients are rounded to float one at a time from
the highest power down, refitting the rest after each. Prints A, the coefficients c0..c8 and the
worst relative error of t P(t) against R with those float coefficients (evaluated in double).
Run: /usr/bin/python3 tests/reference/gelu_fit.py
"""
import math

import numpy as np

A, DEG, UMAX = 0.21, 8, 13.3


def mills(u):
    return np.array([0.5 * math.erfc(x / math.sqrt(2)) * math.sqrt(2 * math.pi) * math.exp(x * x / 2) for x in u])


def fit(t, y, fixed, iters=80):
    V = np.vander(t, DEG + 1, increasing=True)
    free = [k for k in range(DEG + 1) if k not in fixed]
    rest = y - sum(V[:, k] * v for k, v in fixed.items())
    w = np.full(len(t), 1.0 / len(t))
    for _ in range(iters):
        sw = w / y  # relative error
        cf = np.linalg.lstsq(V[:, free] * sw[:, None], rest * sw, rcond=None)[0]
        c = np.zeros(DEG + 1)
        c[free] = cf
        for k, v in fixed.items():
            c[k] = v
        e = np.abs(V @ c - y) / y
        w = w * e + 1e-300
        w /= w.sum()
    return c


a = float(np.float32(A))
t = np.linspace(1 / (1 + a * UMAX), 1, 40000)
y = mills((1 / t - 1) / a) / t
fixed = {}
for k in range(DEG, -1, -1):
    fixed[k] = float(np.float32(fit(t, y, fixed)[k]))
c = np.array([fixed[k] for k in range(DEG + 1)])
tt = np.linspace(1 / (1 + a * UMAX), 1, 400001)
yy = mills((1 / tt - 1) / a) / tt
print("A = %.9g" % a)
print("c0..c%d = %s" % (DEG, ", ".join("%.9g" % v for v in c)))
print("worst relative error of t P(t) against R: %.3g" % np.max(np.abs(np.polyval(c[::-1], tt) - yy) / yy))

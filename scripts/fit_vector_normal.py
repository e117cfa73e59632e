#!/usr/bin/env python3
"""Fits the polynomials of src/kernels/cpu/vector_normal.hpp (the CPU's f32 GELU).

With z = |x| / sqrt 2:
  P: erf(z) / z as a polynomial of degree 5 in z^2, on z in [0, 0.75];
  Q: erfc(z) exp(z^2) as a polynomial of degree 9 in v = t - c, t = 1 / (1 + 0.3 z),
     on z in [0.75, 9.5] (c the middle of t's range).
Least squares in relative error on 800 Chebyshev nodes against mpmath (30 digits).
Prints the coefficients, lowest degree first, as the header writes them (Horner from the
highest). Needs numpy and mpmath (pip install numpy mpmath).
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 30
TRANSITION, TAIL_END, P_SCALE = 0.75, 9.5, 0.3


def chebyshev_nodes(a, b, n=800):
    k = np.arange(n)
    return (a + b) / 2 + (b - a) / 2 * np.cos((2 * k + 1) * np.pi / (2 * n))


def fit(function, a, b, degree, shift=0.0):
    x = chebyshev_nodes(a, b)
    f = np.array([float(function(mp.mpf(v))) for v in x])
    vandermonde = np.vander(x - shift, degree + 1, increasing=True)
    return np.linalg.lstsq(vandermonde / f[:, None], np.ones_like(f), rcond=None)[0]


def erf_over_z(s):  # of s = z^2
    return mp.erf(mp.sqrt(s)) / mp.sqrt(s) if s > 0 else 2 / mp.sqrt(mp.pi)


def scaled_erfc(t):  # of t = 1 / (1 + 0.3 z)
    z = (1 / t - 1) / P_SCALE
    return mp.erfc(z) * mp.exp(z * z)


p = fit(erf_over_z, 0, TRANSITION**2, 5)
t_low, t_high = 1 / (1 + P_SCALE * TAIL_END), 1 / (1 + P_SCALE * TRANSITION)
shift = (t_low + t_high) / 2
q = fit(scaled_erfc, t_low, t_high, 9, shift)
print("P:", ", ".join("%.9e" % c for c in p))
print("Q shift %.9f:" % shift, ", ".join("%.9e" % c for c in q))

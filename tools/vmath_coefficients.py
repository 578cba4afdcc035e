"""Polynomial coefficients of the vectorized functions in ``actdsl/backends/vmath.py``, computed
with mpmath at 50 digits: Chebyshev interpolation (at Chebyshev points of the first kind: within
a small factor of the best polynomial of that degree), then the same polynomial in the monomial
basis of its variable, converted exactly at 50 digits. Run to reproduce the tables there:

    python tools/vmath_coefficients.py [--single]

erf, erfc and the normal CDF, evaluated in float64 for both kinds (float32 rounds once):

    E(s) = erf(x)/x           s = 2x^2 - 1                            |x| <= 1
    C(s) = erfc(x)            s = 4x - 3 (exact in floating point)     1/2 <= x <= 1
    H(s) = x erfc(x) exp(x^2) s = 2(t - t0)/(1 - t0) - 1,             x >= 1
                              t = (x-K)/(x+K), t0 = (1-K)/(1+K)

H lies in [0.43, 1/sqrt(pi)]: a series for erfc(x) exp(x^2) itself would tend to 0 and lose
its relative accuracy to the rounding of its coefficients. float32's normal CDF has its own,
evaluated in float32 (the numba backend) in two pieces split at U0 = 11/16, where Phi(-u) is
near 1/4, and M over every u >= 0 evaluated in float64 (actdsl.torch):

    S(w) = (Phi(x) - 1/2)/x    w = x^2 <= U0^2                        degree 4
    T(s) = M(t)                s = 2(t - t1)/(t2 - t1) - 1,            U0 <= u <= 15, degree 9
                               t1, t2 = t at u = U0 and u = 15
    M(t) = (u + K) Phi(-u) exp(u^2/2)   t = (u-K)/(u+K)               u >= 0, degree 12

S as monomials in w; s is (ALPHA u + BETA)/(u + K), one multiply-add over the same denominator
as t. M lies in [0.399, 1.5]. The others, evaluated in the kind's own type (degrees double /
single):

    R(u) = (tanh(x) - x)/x^3   u = x^2 <= 0.3025 (|x| < 0.55)        tanh, 10 / 4
    Q(s) = log1p(t)/t          s = 2t - 1, 0 <= t <= 1               softplus, 20 / 10
    P(r) = (e^r - 1 - r)/r^2   |r| <= ln(2)/2                        exp = 1 + r(1 + r P), 10 / 4
    L(q) = (2 atanh(v) - 2v)/v^3, q = v^2 <= ((sqrt2-1)/(sqrt2+1))^2  log, 6 / 2

R, P and L as monomials in u, r and q. P and L replace truncated Taylor series two or three
terms longer (the interpolant spreads its error over the interval). Each table prints
sum |d_k| X^k, X the largest |variable|: all are at most 1.2, so evaluating them in floating
point cancels nothing.
"""
import sys

import mpmath as mp

mp.mp.dps = 50
K = mp.mpf(3)
T0 = (1 - K) / (1 + K)
DEGREES = {"double": (12, 15, 23), "single": (7, 8, 12)}


def chebyshev(f, n):
    nodes = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / (n + 1)) for k in range(n + 1)]
    values = [f(t) for t in nodes]
    c = [2 * mp.fsum(values[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / (n + 1))
                     for k in range(n + 1)) / (n + 1) for j in range(n + 1)]
    c[0] /= 2
    return c


def monomial(c):
    """sum c_j T_j(s) as sum d_k s^k (exact arithmetic at the working precision)."""
    d = [mp.mpf(0)] * len(c)
    prev, cur = [mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]  # T_0, T_1
    for j, cj in enumerate(c):
        t = prev if j == 0 else cur if j == 1 else None
        if j >= 2:
            nxt = [mp.mpf(0)] * (j + 1)
            for k, a in enumerate(cur):
                nxt[k + 1] += 2 * a
            for k, a in enumerate(prev):
                nxt[k] -= a
            prev, cur = cur, nxt
            t = cur
        for k, a in enumerate(t):
            d[k] += cj * a
    return d


def E(s):
    x = mp.sqrt((s + 1) / 2)
    return mp.erf(x) / x if x else 2 / mp.sqrt(mp.pi)


def C(s):
    return mp.erfc((s + 3) / 4)


def H(s):
    t = T0 + (s + 1) * (1 - T0) / 2
    if t >= 1:
        return 1 / mp.sqrt(mp.pi)
    x = K * (1 + t) / (1 - t)
    return x * mp.erfc(x) * mp.exp(x * x)


def M(t):
    if t >= 1:
        return 1 / mp.sqrt(2 * mp.pi)
    u = K * (1 + t) / (1 - t)
    return (u + K) * mp.ncdf(-u) * mp.exp(u * u / 2)


NCDF_U0, NCDF_UMAX = mp.mpf(11) / 16, mp.mpf(15)
NCDF_T1, NCDF_T2 = (NCDF_U0 - K) / (NCDF_U0 + K), (NCDF_UMAX - K) / (NCDF_UMAX + K)
#: s = A t + B maps [t1, t2] onto [-1, 1]; with t = (u-K)/(u+K), s = (ALPHA u + BETA)/(u + K)
_A = 2 / (NCDF_T2 - NCDF_T1)
_B = -2 * NCDF_T1 / (NCDF_T2 - NCDF_T1) - 1
NCDF_ALPHA, NCDF_BETA = _A + _B, (_B - _A) * K


def S(s):
    w = (s + 1) * NCDF_U0 ** 2 / 2
    if w == 0:
        return 1 / mp.sqrt(2 * mp.pi)
    x = mp.sqrt(w)
    return (mp.ncdf(x) - mp.mpf(1) / 2) / x


def T(s):
    return M(NCDF_T1 + (s + 1) * (NCDF_T2 - NCDF_T1) / 2)


def Q(s):
    t = (s + 1) / 2
    return mp.log1p(t) / t if t else mp.mpf(1)


TANH_U = mp.mpf("0.3025")


def R(s):
    u = (s + 1) * TANH_U / 2
    if u == 0:
        return mp.mpf(-1) / 3
    x = mp.sqrt(u)
    return (mp.tanh(x) - x) / x ** 3


def in_u(d, U=TANH_U):
    """sum d_k s^k with s = 2u/U - 1, as sum e_j u^j."""
    e = [mp.mpf(0)] * len(d)
    for k, dk in enumerate(d):
        for j in range(k + 1):
            e[j] += dk * mp.binomial(k, j) * (2 / U) ** j * (-1) ** (k - j)
    return e


EXP_R = mp.log(2) / 2


def P(s):
    r = s * EXP_R
    if abs(r) < mp.mpf("1e-20"):  # (e^r - 1 - r)/r^2 cancels to nothing at 50 digits there
        return mp.mpf(1) / 2 + r / 6
    return (mp.exp(r) - 1 - r) / r ** 2


LOG_Q = ((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) ** 2


def L(s):
    q = (s + 1) * LOG_Q / 2
    if q < mp.mpf("1e-30"):
        return mp.mpf(2) / 3
    v = mp.sqrt(q)
    return (2 * mp.atanh(v) - 2 * v) / v ** 3


def relative_error(d, f, at=lambda s: s, points=401):
    """max |sum d_k at(s)^k - f(s)| / |f(s)| over s in [-1, 1]."""
    return max(abs(mp.polyval(d[::-1], at(s)) - f(s)) / abs(f(s)) for s in mp.linspace(-1, 1, points))


def tables(kind):
    single = kind == "single"
    out = {}
    for name, f, n in zip("ECH", (E, C, H), DEGREES[kind]):
        d = monomial(chebyshev(f, n))
        out[f"ERF_{name}_{kind.upper()}"] = (d, relative_error(d, f), 1)
    if single:
        d = monomial(chebyshev(M, 12))
        out["NCDF_M_SINGLE"] = (d, relative_error(d, M), 1)
        w = NCDF_U0 ** 2
        e = in_u(monomial(chebyshev(S, 4)), w)
        out["NCDF_S_SINGLE"] = (e, relative_error(e, S, lambda s: (s + 1) * w / 2), w)
        d = monomial(chebyshev(T, 9))
        out["NCDF_T_SINGLE"] = (d, relative_error(d, T), 1)
    e = in_u(monomial(chebyshev(R, 4 if single else 10)))
    out[f"TANH_R_{kind.upper()}"] = (e, relative_error(e, R, lambda s: (s + 1) * TANH_U / 2, 201),
                                     TANH_U)
    d = monomial(chebyshev(Q, 10 if single else 20))
    out[f"SOFTPLUS_Q_{kind.upper()}"] = (d, relative_error(d, Q), 1)
    d = [a / EXP_R ** k for k, a in enumerate(monomial(chebyshev(P, 4 if single else 10)))]
    out[f"EXP_P_{kind.upper()}"] = (d, relative_error(d, P, lambda s: s * EXP_R), EXP_R)
    d = in_u(monomial(chebyshev(L, 2 if single else 6)), LOG_Q)
    out[f"LOG_L_{kind.upper()}"] = (d, relative_error(d, L, lambda s: (s + 1) * LOG_Q / 2), LOG_Q)
    return out


if __name__ == "__main__":
    kind = "single" if "--single" in sys.argv else "double"
    for name, (d, err, X) in tables(kind).items():
        # X: the largest |variable|; sum |d_k| X^k near the sum itself means nothing cancels
        print(f"# {name}: degree {len(d) - 1}, max relative error {mp.nstr(err, 3)}, "
              f"sum |d_k| X^k {mp.nstr(mp.fsum(abs(a) * X ** k for k, a in enumerate(d)), 3)}")
        print(f"{name} = ({', '.join(repr(float(a)) for a in d)})")
    print(f"ERF_K, ERF_T0 = {float(K)!r}, {float(T0)!r}")
    print(f"NCDF_K = {float(K)!r}")
    if kind == "single":
        print(f"NCDF_U0, NCDF_ALPHA, NCDF_BETA = {float(NCDF_U0)!r}, {float(NCDF_ALPHA)!r}, "
              f"{float(NCDF_BETA)!r}")

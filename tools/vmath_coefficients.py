"""Polynomial coefficients of vectorized functions in ``actdsl/backends/vmath.py`` (erf, erfc,
float32 softplus), computed
with mpmath at 50 digits: Chebyshev interpolation (at Chebyshev points of the first kind:
within a small factor of the best polynomial of that degree), then the same polynomial in the
monomial basis of s, converted exactly at 50 digits. Run to reproduce the tables there:

    python tools/vmath_coefficients.py [--single]

    E(s) = erf(x)/x           s = 2x^2 - 1                            |x| <= 1
    C(s) = erfc(x)            s = 4x - 3 (exact in floating point)     1/2 <= x <= 1
    H(s) = x erfc(x) exp(x^2) s = 2(t - t0)/(1 - t0) - 1,             x >= 1
                              t = (x-K)/(x+K), t0 = (1-K)/(1+K)

H lies in [0.43, 1/sqrt(pi)]: a series for erfc(x) exp(x^2) itself would tend to 0 and lose
its relative accuracy to the rounding of its coefficients. Each monomial sum has sum|d_k| below
1.2, so evaluating it in floating point cancels nothing. ``--single``: the shorter tables
float32 uses (evaluated in float64, then rounded once), and float32 softplus's

    Q(s) = log1p(t)/t          s = 2t - 1                              0 <= t <= 1

and tanh's R(u) = (tanh(x) - x)/x^3, u = x^2 <= 0.3025 (|x| < 0.55), as monomials in u
(sum |e_k| U^k = 0.38: no cancellation), degree 10 (double) or 4 (single).
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


def in_u(d):
    """sum d_k s^k with s = 2u/U - 1, as sum e_j u^j."""
    e = [mp.mpf(0)] * len(d)
    for k, dk in enumerate(d):
        for j in range(k + 1):
            e[j] += dk * mp.binomial(k, j) * (2 / TANH_U) ** j * (-1) ** (k - j)
    return e


def tables(kind):
    out = {}
    for name, f, n in zip("ECH", (E, C, H), DEGREES[kind]):
        d = monomial(chebyshev(f, n))
        err = max(abs(mp.polyval(d[::-1], s) - f(s)) / abs(f(s)) for s in mp.linspace(-1, 1, 401))
        out[name] = (d, err)
    e = in_u(monomial(chebyshev(R, 4 if kind == "single" else 10)))
    out[f"TANH_R_{kind.upper()}"] = (e, max(abs(mp.polyval(e[::-1], (s + 1) * TANH_U / 2) - R(s)) / abs(R(s))
                                          for s in mp.linspace(-1, 1, 201)))
    if kind == "single":
        d = monomial(chebyshev(Q, 10))
        out["SOFTPLUS_Q"] = (d, max(abs(mp.polyval(d[::-1], s) - Q(s)) / Q(s)
                                    for s in mp.linspace(-1, 1, 401)))
    return out


if __name__ == "__main__":
    kind = "single" if "--single" in sys.argv else "double"
    for name, (d, err) in tables(kind).items():
        print(f"# {name}: degree {len(d) - 1}, max relative error {mp.nstr(err, 3)}, "
              f"sum |d_k| {mp.nstr(mp.fsum(abs(a) for a in d), 3)}")
        label = name if name.startswith(("SOFTPLUS", "TANH")) else f"ERF_{name}_{kind.upper()}"
        print(f"{label} = ({', '.join(repr(float(a)) for a in d)})")
    print(f"ERF_K, ERF_T0 = {float(K)!r}, {float(T0)!r}")

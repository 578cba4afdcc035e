"""Vectorizable elementary functions for Numba, in float32 and float64.

Numba's pip wheels have no SVML, so ``np.exp`` in a loop is a scalar libm call that stops LLVM
from vectorizing. These are written with range reduction, polynomials and integer bit tricks
only (every branch a select), so they inline and vectorize. Special values (NaN, ±inf, zeros,
subnormals) are handled explicitly. ``tests/test_vmath.py`` measures the error against mpmath
(at most 4 ULP over the whole finite range).

The implementations are one template (``_TEMPLATE``) instantiated for each float type, with
constants of that type so nothing is promoted to float64, and loaded as real files through
``actdsl.cache`` so Numba caches their machine code (closures would be re-keyed by pickling
their cells on every process start). ``forceinline`` gives LLVM ``alwaysinline``: callers' loops
see straight-line code and vectorize. A Numba ``overload`` picks the implementation matching
the argument, so generated kernels write ``vm.exp(x)``, and ``vm.lit(x, 0.5)`` for literals.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .. import cache
from ..stable import SCALE_BANDS, SCALE_CAPS
from .emit import TANHSHRINK

#: FMA contraction only. Reassociation would undo the Cody-Waite reduction; nnan/ninf would
#: break NaN and inf handling. Cached: Numba compiles an overload's implementation once per
#: process and kind of caller (elementwise and row kernels have different flags), 0.05-0.45 s each
#: (softplus with the exp it calls: 0.44 s) in every process that compiled a new kernel; from the
#: cache it loads in milliseconds, its IR still there for LLVM to inline into the kernel. The files
#: sit beside the math module's own and are checked and sealed with them (cache.numba_compiling);
#: where the math modules live in memory (no usable cache directory), nothing is cached.
JIT_OPTIONS = dict(fastmath={"contract"}, forceinline=True, error_model="numpy", cache=True)


def _horner1(var: str, coeffs: list[float], T: str = "F") -> str:
    """c0 + v*(c1 + v*(c2 + ...)) as text, constants typed through ``T``."""
    text = f"{T}({coeffs[-1]!r})"
    for c in reversed(coeffs[:-1]):
        text = f"{T}({c!r}) + {var} * ({text})"
    return text


def _leading(var: str, coeffs: list[float], tail: str, T: str) -> str:
    """c0 + v*(c1 + v*tail), ``tail`` a parenthesized or atomic term: the two leading terms outermost, so the result rounds once at the
    top and the tail's roundings are scaled by v^2."""
    return f"{T}({coeffs[0]!r}) + {var} * ({T}({coeffs[1]!r}) + {var} * {tail})"


def _horner(var: str, coeffs: list[float], T: str = "F") -> str:
    """c0 + v*(c1 + v*R(v)) with the tail R as even(v^2) + v odd(v^2): two Horner chains of half
    the length, which the CPU runs side by side (a chain of dependent FMAs is bound by their
    latency: float64 exp 0.88x the time, tanh 0.83x); the two leading terms stay outermost,
    so the split's rounding is scaled by v^2 and the accuracy is Horner's."""
    if len(coeffs) < 8:
        return _horner1(var, coeffs, T)
    tail = coeffs[2:]
    square = f"({var} * {var})"
    split = f"({_horner1(square, tail[0::2], T)}) + {var} * ({_horner1(square, tail[1::2], T)})"
    return _leading(var, coeffs, f"({split})", T)


def _estrin(var: str, coeffs: list[float], T: str = "F") -> str:
    """c0 + v*(c1 + v*E(v)), E evaluated in Estrin's scheme: pairs (e0 + e1 v) + v^2 (e2 + e3 v),
    pairs of pairs combined with v^4, and so on, a dependency chain of about log2(n)
    multiply-adds instead of n/2 (a long polynomial's latency then stops bounding a loop over
    it: float64 softplus's degree-20 Q 0.9x the time of two Horner chains). The two leading
    terms stay outermost, as in Horner's scheme, so the result rounds once at the top and E's
    roundings are scaled by v^2 (Estrin all the way measured 3.0 ULP for float64 softplus)."""
    if len(coeffs) < 6:
        return _horner1(var, coeffs, T)
    terms = [f"{T}({c!r})" for c in coeffs[2:]]
    power = var
    while len(terms) > 1:
        pairs = [f"({a} + {power} * {b})" for a, b in zip(terms[0::2], terms[1::2])]
        terms = pairs + terms[len(pairs) * 2:]
        power = f"({power} * {power})"
    return _leading(var, coeffs, terms[0], T)


#: exp's argument reduction and polynomial for t - b, into k, r and p: pasted into exp,
#: exp_minus and exp_low (one function each for Numba to compile: a shared inner function cost
#: each of them one more compile, 0.2 s of a cold start). With b = ZERO, r - 0 folds away (r + 0
#: would not: -0 + 0 is +0).
_EXP_REDUCE = '''\
    # k = round(t log2 e) through the shifter 1.5 * 2^MANT, whose last bits then hold k as an
    # integer: no float-to-integer conversion (AVX2 has none for float64; LLVM would do it one
    # lane at a time) and no arithmetic shift of 64-bit integers (none in AVX2 either)
    kr = (t - {b}) * LOG2E + SHIFTER
    k = kr - SHIFTER
    r = ((t - k * LN2_HI) - k * LN2_LO) - {b}
    # e^r = 1 + r (1 + r P(r)), |r| <= ln(2)/2, P from tools/vmath_coefficients.py
    p = {poly}'''
#: exp(t - b) for EXP_LO < t < EXP_HI, into y: the reduction, then 2^k as two normal factors
#: (exp_low, where k + 64 is in range, needs one)
_EXP_CORE = _EXP_REDUCE + '''
    ki = as_bits(kr) - SHIFTER_BITS
    k1 = as_bits(k * HALF + SHIFTER) - SHIFTER_BITS
    s1 = from_bits((k1 + BIAS) << MANT)           # 2^k as 2^k1 * 2^(k-k1): both normal,
    s2 = from_bits((ki - k1 + BIAS) << MANT)      # so only the last product rounds
    y = (p * s1) * s2'''


_TEMPLATE = '''\
# Generated by actdsl.backends.vmath for {F}: do not edit.
import math

import numpy as np
from numba import njit

from actdsl.backends.bits import {as_bits} as as_bits, {from_bits} as from_bits, f64_bits, bits_f64
{double_import}
F = np.{F}
I = np.{I}
D = np.float64
JIT = dict(cache=True, fastmath={{"contract"}}, forceinline=True, error_model="numpy")
ZERO, ONE, TWO, HALF = F(0.0), F(1.0), F(2.0), F(0.5)
INF, NAN = F(np.inf), F(np.nan)
LOG2E, LN2_HI, LN2_LO = F(1.4426950408889634), F({ln2_hi!r}), F({ln2_lo!r})
EXP_LO, EXP_HI = F({exp_lo!r}), F({exp_hi!r})
TANH_CAP = F({tanh_cap!r})  # exp(-2 TANH_CAP) < 2^-(p+1): tanh rounds to ±1 from there on
BIAS, MANT, IONE = I({bias}), I({mant}), I(1)
BIAS_UP64, DOWN64 = I({bias} + 64), F(2.0 ** -64)
TINY, UP, UP_BITS = F({tiny!r}), F({up!r}), F({up_bits}.0)
BAND_LO, BAND_HI, CAP = F({band_lo!r}), F({band_hi!r}), F({cap!r})
SQRT2 = F({sqrt2!r})
SHIFTER = F({shifter!r})
SHIFTER_BITS = I({shifter_bits})
MANT_MASK, ONE_BITS, EXP_MASK = I({mant_mask}), I({one_bits}), I({exp_mask})


@njit(**JIT)
def exp(x):
    ok = (x > EXP_LO) & (x < EXP_HI)
    t = x if ok else ZERO
{exp_core_zero}
    return y if ok else (INF if x > ZERO else (ZERO if x < ZERO else x))


@njit(**JIT)
def exp_minus(x, b):
    # exp(x - b) for a small b (|b| < 0.1): k from x - b, and b leaves the reduced argument,
    # so x - b is never rounded (erfc and ncdf need exp(-a^2) with a^2 held as two parts)
    ok = (x > EXP_LO) & (x < EXP_HI)
    t = x if ok else ZERO
    b = b if ok else ZERO
{exp_core_b}
    return y if ok else (INF if x > ZERO else (ZERO if x < ZERO else x))


@njit(**JIT)
def exp_low(t, b):
    # exp(t - b) for -(BIAS + 63) ln 2 <= t - b <= 0 only (|b| < 0.1, as in exp_minus): there
    # 2^(k + 64) is a normal number, so p 2^(k + 64) is exact and the product by 2^-64 rounds once
    # (into the subnormals or not): one scale and no range checks, 0.7x exp's time (issue 16)
{exp_reduce_b}
    return (p * from_bits(((as_bits(kr) - SHIFTER_BITS) + BIAS_UP64) << MANT)) * DOWN64


@njit(**JIT)
def exp_neg_abs(x):
    # exp(-|x|), which cannot overflow: the sigmoid family and softplus need only this; clamped
    # at EXP_LO, where it rounds to 0
    a = -abs(x)
    y = exp_low(a if a > EXP_LO else EXP_LO, ZERO)
    return y if a == a else a


@njit(**JIT)
def exp_nonpos(x):
    # exp(x) for an x that is <= 0 by construction (softmax's exp(u - max u)): nothing to
    # overflow, so exp_low's one scaling and no range checks, 0.7x exp's time; the same bits as
    # exp there (tests/test_vmath.py). Clamped at EXP_LO, where exp rounds to 0; an x rounded
    # above 0 (u computed twice, once contracted into an FMA) gives exp(0) = 1; NaN stays NaN
    t = x if x < ZERO else ZERO
    y = exp_low(t if t > EXP_LO else EXP_LO, ZERO)
    return y if x == x else x


@njit(**JIT)
def expmul(a, b):
    # b * exp(a) as (b * e) * e, e = exp(a/2): finite wherever the product is
    e = exp(a * HALF)
    return (b * e) * e


@njit(**JIT)
def expm1(x):
    small = abs(x) < ONE
    xs = x if small else ZERO  # the unused branch never sees large x (no overflow flags)
    return xs * ({expm1_poly}) if small else exp(x) - ONE


@njit(**JIT)
def log(x):
    # x = 2^e m, m in [sqrt(1/2), sqrt(2)); log(1+f) = f - h + s(h + R), s = f/(2+f), h = f^2/2
    finite_pos = (x > ZERO) & (x < INF)
    t = x if finite_pos else ONE
    sub = t < TINY
    t = t * UP if sub else t
    b = as_bits(t)
    e = ((b >> MANT) & EXP_MASK) - BIAS
    m = from_bits((b & MANT_MASK) | ONE_BITS)
    big = m > SQRT2
    m = m * HALF if big else m
    e = e + IONE if big else e
    ef = F(e) - (UP_BITS if sub else ZERO)
    f = m - ONE
    h = HALF * f * f
    s = f / (TWO + f)
    z = s * s
    R = z * ({log_poly})   # z L(z), L from tools/vmath_coefficients.py
    y = ef * LN2_HI - ((h - (s * (h + R) + ef * LN2_LO)) - f)
    special = x if (x == INF) | (x != x) else (-INF if x == ZERO else NAN)
    return y if finite_pos else special


@njit(**JIT)
def log1p(x):
    u = ONE + x
    mid = (u > ZERO) & (u < INF)
    c = (x - (u - ONE)) / (u if mid else ONE)   # what rounding 1 + x lost
    y = log(u) + (c if mid else ZERO)
    return x if u == ONE else y


@njit(**JIT)
def tanh(x):
    # |x| < 0.55: x + x^3 R(x^2), R a polynomial (tools/vmath_coefficients.py); beyond, where
    # E = exp(-2|x|) <= 0.33 and nothing cancels, (1 - E)/(1 + E) with x's sign. Both are
    # computed (no branch); NaN takes the first, which keeps it.
    a = abs(x)
    u = x * x
    small = x + x * (u * ({tanh_poly}))
    # beyond TANH_CAP, E < 2^-(p+1) and (1 - E)/(1 + E) rounds to 1: clamped there, E needs no
    # range checks (exp_low; a quarter of tanh's time)
    e = exp_low(-TWO * (a if a < TANH_CAP else TANH_CAP), ZERO)
    big = (ONE - e) / (ONE + e)
    return np.copysign(big if a >= F(0.55) else small, x)   # (and tanh(-0) = -0)


@njit(**JIT)
def softsign(x):
    a = abs(x)  # beyond 2^60 the quotient is ±1 rounded, and ±inf/inf would be NaN
    return np.copysign(ONE, x) if a > F(1152921504606846976.0) else x / (ONE + a)


@njit(**JIT)
{tanhshrink}

@njit(**JIT)
def pow2scale(x):
    # stable.pow2scale: 1 in [BAND_LO, BAND_HI] and at 0; else a power of two s <= |x| < 2s
    # (at least TINY, at most CAP: 1/s and ε/s normal); inf at ±inf, NaN at NaN
    # bits: the exponent field alone is 2^floor(log2 |x|) (0 for subnormals, inf for inf/NaN);
    # integer operations only, so a call on a row constant is hoisted out of the row's loops
    # (frexp, a libm call with an out-parameter, was not: 50x slower norm:z)
    a = abs(x)
    s = from_bits(as_bits(a) & (EXP_MASK << MANT))
    s = s if s > TINY else TINY
    s = s if s < CAP else CAP  # (1/s normal: a subnormal 1/s gave NaN gradients; ε/s too)
    ok = (a >= BAND_LO) & (a <= BAND_HI)
    return ONE if (x == ZERO) | ok else (s if a < INF else a)  # (inf for inf, NaN for NaN)


@njit(**JIT)
def sigmoid(x):
    e = exp_neg_abs(x)
    d = ONE / (ONE + e)
    return d if x >= ZERO else (e * d if x < ZERO else x)


@njit(**JIT)
def softplus(x):
    # max(x, 0) + t Q(s), t = exp(-|x|) in [0, 1], Q(s) = log1p(t)/t a polynomial in s = 2t - 1
    # (tools/vmath_coefficients.py): no division and no select, where log1p(t) needs one of each
    t = exp_neg_abs(x)
    s = TWO * t - ONE
    return (x if x > ZERO else ZERO) + t * ({softplus_poly})


@njit(**JIT)
def sech(x):
    e = exp_neg_abs(x)
    return TWO * e / (ONE + e * e)


{erf_block}
'''


# -- erf, erfc and the normal CDF ------------------------------------------------------------------
# Polynomials from tools/vmath_coefficients.py (its docstring defines them; mpmath, 50 digits),
# evaluated in float64 for both float types (float32 rounds once at the end, with the shorter
# tables). Every branch is computed and selected, so the loops vectorize.
# E: degree 12, max relative error 1.45e-19, sum |d_k| 1.13
ERF_E_DOUBLE = (0.9654687386698673, -0.1405360890227171, 0.019852496688983708,
                -0.0022854855611441132, 0.00021751715604159932, -1.7537169441124866e-05,
                1.223382738359897e-06, -7.511569286591727e-08, 4.115800583208149e-09,
                -2.035228405815769e-10, 9.167619596865806e-12, -3.8078824063194953e-13,
                1.4543887079465116e-14)
# C: degree 15, max relative error 1.47e-19, sum |d_k| 0.481
ERF_C_DOUBLE = (0.28884436634648486, -0.16073276729880184, 0.030137393868525347,
                -0.00041857491484062964, -0.000588620973994696, 5.19948527028571e-05,
                6.560671273131536e-06, -1.1251974595701546e-06, -3.5122504096870066e-08,
                1.5137712199228714e-08, -1.7741012764524502e-10, -1.4876914125702992e-10,
                6.324289795634492e-12, 1.1285087265169176e-12, -7.941919470579784e-14,
                -6.5575504473683255e-15)
# H: degree 23, max relative error 3.16e-19, sum |d_k| 0.68
ERF_H_DOUBLE = (0.5535231886653431, 0.032325511271496604, -0.03995258281752317,
                0.029186202095380434, -0.01578590174949955, 0.006499181794319757,
                -0.0019275631197521658, 0.0003202223485811857, 2.533890359320647e-05,
                -2.968253559598407e-05, 4.724605178769229e-06, 1.6380157414017772e-06,
                -6.961617517519252e-07, -7.120065295557848e-08, 7.979212190943146e-08,
                1.8801581840590663e-09, -9.279736347799086e-09, 1.9974052264878118e-11,
                1.1349040577701181e-09, 1.1620372912684412e-11, -1.310302095173028e-10,
                -5.847493061810315e-12, 9.933765534975544e-12, 7.990846817132984e-13)
# E: degree 7, max relative error 3.65e-11, sum |d_k| 1.13
ERF_E_SINGLE = (0.9654687386375691, -0.14053608902112114, 0.019852497722455814,
                -0.002285485612212242, 0.0002175119906208899, -1.7536914180800595e-05,
                1.2316395977478375e-06, -7.552378571474216e-08)
# C: degree 8, max relative error 3.6e-10, sum |d_k| 0.481
ERF_C_SINGLE = (0.28884436634648486, -0.16073276781935208, 0.030137393874271584,
                -0.0004185679690290894, -0.0005886210508272437, 5.19697976965065e-05,
                6.560949976041742e-06, -1.0916349214540395e-06, -3.550067117851402e-08)
# H: degree 12, max relative error 6.46e-11, sum |d_k| 0.68
ERF_H_SINGLE = (0.5535231886653431, 0.03232551147750888, -0.03995258299461082,
                0.029186196320779127, -0.01578589677092299, 0.006499228116191366,
                -0.0019276033532669371, 0.0003200627319665813, 2.5479483377687376e-05,
                -2.9414054214354475e-05, 4.481920218157968e-06, 1.4191191030873323e-06,
                -4.871105980310991e-07)
ERF_K, ERF_T0 = 3.0, -0.5
# M: degree 12, max relative error 2.07e-9, sum |d_k| 1.54 (M lies in [0.399, 1.5]); evaluated in
# float64 by actdsl.torch
NCDF_M_SINGLE = (0.729083690133373, -0.509331983927697, 0.2300177114576697, -0.0472629712800294,
                 -0.01046262728250768, 0.0069722399508593364, 0.0010256491591510198,
                 -0.0010448601400071843, -0.000249755242315111, 0.00015394823440388633,
                 6.697860720512722e-05, -1.5232907447223737e-05, -1.0507186943799685e-05)
NCDF_K = 3.0
# float32's own (evaluated in float32): S degree 4, max relative error 1.05e-9, sum |d_k| X^k 0.433;
# T degree 9, max relative error 2.06e-9, sum |d_k| 1.15 (T lies in [0.47, 1.19])
NCDF_S_SINGLE = (0.39894228000087073, -0.06649033766487726, 0.009972836792343655,
                 -0.001183028286419715, 0.00010485584444337452)
NCDF_T_SINGLE = (0.7191017277374808, -0.3236345707431243, 0.09507214347779731,
                 -0.013010938737050327, -0.0017099306909591396, 0.0008025728800192411,
                 6.285501357373872e-05, -5.104370393510796e-05, -4.981974282037825e-06,
                 2.967804932577778e-06)
NCDF_U0, NCDF_ALPHA, NCDF_BETA = 0.6875, 1.51528384279476, -4.729257641921397

_ERF = '''
@njit(**JIT)
def erf_small(a):
    # erf(a)/a for |a| <= 1: a polynomial in s = 2a^2 - 1
    s = D(2.0) * (a * a) - D(1.0)
    return {poly_e}


@njit(**JIT)
def erfc_mid(a):
    # erfc(a) for 1/2 <= a <= 1: a polynomial in s = 4a - 3, which is exact
    s = D(4.0) * (a - D(0.75))
    return {poly_c}


@njit(**JIT)
def erfc_large(a):
    # erfc(a) for a >= 1 as exp(-a^2) H(a) / a, H a polynomial in s, an affine function of
    # t = (a-K)/(a+K); a is capped where erfc underflows (t stays finite). a^2 = h^2 + q exactly,
    # h the leading 26 bits of a, and exp(-h^2 - q) takes both parts: nothing lost to rounding a^2.
    c = a if a < D(28.0) else D(28.0)
    t = (c - D({k!r})) / (c + D({k!r}))
    s = (t - D({t0!r})) * D({scale!r}) - D(1.0)
    y = {poly_h}
    h = bits_f64(f64_bits(c) & np.int64(-134217728))
    d = c - h
    q = d * (h + h + d)
    return {exp}(-(h * h), q) * (y / c)


@njit(**JIT)
def erfc_pos(a):
    # erfc(a) for a >= 1/2
    big = a > D(1.0)
    m = erfc_mid(D(1.0) if big else a)
    return erfc_large(a if big else D(1.0)) if big else m


@njit(**JIT)
def erf_double(x):
    a = abs(x)
    small = a <= D(1.0)
    y = x * erf_small(a if small else D(0.0)) if small else np.copysign(D(1.0) - erfc_large(a if a > D(1.0) else D(1.0)), x)
    return x if x != x else y


@njit(**JIT)
def erfc_double(x):
    a = abs(x)
    mid = a < D(0.5)
    tl = erfc_pos(D(1.0) if mid else a)
    y = D(1.0) - x * erf_small(a if mid else D(0.0)) if mid else (tl if x > D(0.0) else D(2.0) - tl)
    return x if x != x else y


@njit(**JIT)
def erf(x):
    return F(erf_double(D(x)))


@njit(**JIT)
def erfc(x):
    return F(erfc_double(D(x)))

'''

_NCDF_DOUBLE = '''

@njit(**JIT)
def ncdf(x):
    # the standard normal CDF as erfc(-x/sqrt(2))/2
    return F(D(0.5) * erfc_double(-D(x) * D(0.7071067811865476)))
'''

# float32's normal CDF (gelu's), all in float32 (16 lanes where float64 has 8; a loop that mixes
# the two runs at float64's width throughout), in two pieces, both computed and one selected:
# - |x| < U0 = 11/16 (Phi between 0.246 and 0.754): 1/2 + x S(x^2), S a polynomial;
# - beyond, Phi(-u) = exp(-u^2/2) T(s) / (u + K), u = |x| capped at 15 (Phi(-15) rounds to 0),
#   T a polynomial in s = (ALPHA u + BETA)/(u + K), an affine function of t = (u - K)/(u + K)
#   onto [-1, 1]; u^2/2 = h^2/2 + d (2h + d)/2 with h the leading 12 bits of u (h^2 is exact),
#   so that exp's argument is an exact part and a small one (exp_low); Phi(x) = 1 - Phi(-u) for
#   x > 0. (tools/vmath_coefficients.py: S, T.)
# 1.6x faster than the formula it replaced (M over every u, in float64: gelu over 2^24 float32,
# one thread, AVX-512, 14.5 against 9.0 ms). Over every float32 in [-15.5, 6] (against float64's
# erfc): at most 4.7 ULP, 1.7 conditioned, i.e. counted against ulp(Phi) + |Phi'(x)| ulp(x)
# (Phi's condition number is about x^2 in the tail), which is how tests/test_vmath.py and
# docs/accuracy.md hold every function; the old formula measured 1.7 and 1.0 on 1.2 million
# points.
_NCDF_SINGLE = '''

@njit(**JIT)
def ncdf(x):
    u = abs(x)
    c = u if u < F(15.0) else F(15.0)
    h = from_bits(as_bits(c) & I(-4096))
    d = c - h
    e = exp_low(-(h * h) * HALF, d * (h + h + d) * HALF)  # >= -112.5
    v = c + F({k!r})
    s = (F({alpha!r}) * c + F({beta!r})) / v
    tl = (e * ({poly_t})) / v
    square = x * x
    mid = HALF + x * ({poly_s})
    y = tl if x <= ZERO else ONE - tl
    y = mid if u < F({u0!r}) else y
    return x if x != x else y
'''


def _erf_block(F, double: str) -> str:
    single = F is np.float32
    e, c, h = ((ERF_E_SINGLE, ERF_C_SINGLE, ERF_H_SINGLE) if single else
               (ERF_E_DOUBLE, ERF_C_DOUBLE, ERF_H_DOUBLE))
    ncdf = (_NCDF_SINGLE.format(k=NCDF_K, alpha=NCDF_ALPHA, beta=NCDF_BETA, u0=NCDF_U0,
                                poly_t=_horner("s", NCDF_T_SINGLE), poly_s=_horner("square", NCDF_S_SINGLE))
            if single else _NCDF_DOUBLE)
    return _ERF.format(poly_e=_horner("s", e, "D"), poly_c=_horner("s", c, "D"),
                       poly_h=_horner("s", h, "D"), k=ERF_K, t0=ERF_T0,
                       scale=2 / (1 - ERF_T0),
                       exp="DOUBLE.exp_minus" if single else "exp_minus") + ncdf

# softplus's Q(s) = log1p(t)/t, s = 2t - 1, t in [0, 1]: relative error 1.0e-17 (double, degree
# 20), 8.4e-10 (single, degree 10)
SOFTPLUS_Q_DOUBLE = (0.8109302162163288, -0.14426354954966195, 0.03315243843855094,
                     -0.008461080413870536, 0.0022882409076902767, -0.0006421503724725223,
                     0.00018490300180466052, -5.426089824207432e-05, 1.6156949099580387e-05,
                     -4.866877333591529e-06, 1.4798682669311618e-06, -4.5354366598033807e-07,
                     1.3990346886420576e-07, -4.331304783093553e-08, 1.3500470517435648e-08,
                     -4.336548550414743e-09, 1.363113923159679e-09, -3.420138797930341e-10,
                     1.0787232813120478e-10, -7.317042246170282e-11, 2.330586809976668e-11)
SOFTPLUS_Q_SINGLE = (0.8109302162163288, -0.14426355595755852, 0.03315244042086761,
                     -0.008460952872406847, 0.002288201453946999, -0.0006428557880034785,
                     0.00018512118850238976, -5.26883175421753e-05, 1.5670667294754227e-05,
                     -6.35613983849821e-06, 1.9401333922397076e-06)
# exp's P(r) = (e^r - 1 - r)/r^2 for |r| <= ln(2)/2 (e^r = 1 + r (1 + r P): the error of P is
# scaled by r^2 <= 0.12): relative error 3.0e-18 (double, degree 10), 1.3e-7 (single, degree 4)
EXP_P_DOUBLE = (0.5, 0.1666666666666667, 0.04166666666666667, 0.008333333333326141,
                0.0013888888888883752, 0.00019841269874800493, 2.4801587325533363e-05,
                2.7557255425746435e-06, 2.7557273661348637e-07, 2.510520637395701e-08,
                2.0914679376583935e-09)
EXP_P_SINGLE = (0.5, 0.1666657702559799, 0.041666554662050534, 0.008363173074513711,
                0.001392617611993558)
# log's L(z) = (2 atanh(s) - 2s)/s^3, z = s^2 <= 0.0295 (R = z L(z); s^3 L(z) is at most
# 1/100 of log(1 + f)): relative error 4.6e-16 (double, degree 6), 2.8e-7 (single, degree 2)
LOG_L_DOUBLE = (0.666666666666667, 0.39999999999899505, 0.28571428625975487, 0.2222221113479508,
                0.18182889125261723, 0.15331721600556042, 0.14616449685043406)
LOG_L_SINGLE = (0.6666668503957586, 0.3998878056602198, 0.2957994939197279)

# tanh's R(u) = (tanh(x) - x)/x^3 for u = x^2 <= 0.3025 (tools/vmath_coefficients.py): relative
# error 2.3e-17 (float64, degree 10), 4.0e-8 (float32, degree 4); it is a tenth of the result.
TANH_R_DOUBLE = (-0.3333333333333333, 0.13333333333332714, -0.053968253967434016,
                 0.021869488493666944, -0.008863234397814355, 0.003592110378689024,
                 -0.001455661830100716, 0.0005889360520074057, -0.0002346347410887237,
                 8.511313685577672e-05, -2.060276537636634e-05)
TANH_R_SINGLE = (-0.3333333200797698, 0.1333311372902087, -0.05390942882746055,
                 0.021309388664443474, -0.006610227831114734)

def _source(F, I, mant, bias, expm1_degree, exp_lo, exp_hi, up_bits, ln2_hi, ln2_lo, tanh_cap,
            double: str = "") -> str:
    kind = "SINGLE" if F is np.float32 else "DOUBLE"
    table = globals()
    exp_poly = _estrin("r", [1.0, 1.0, *table[f"EXP_P_{kind}"]])
    return _TEMPLATE.format(
        tanhshrink=TANHSHRINK,
        tanh_poly=_horner("u", table[f"TANH_R_{kind}"]),
        softplus_poly=_estrin("s", table[f"SOFTPLUS_Q_{kind}"]),
        erf_block=_erf_block(F, double),
        double_import=(f"# erf and erfc use the float64 exp of {double}\n"
                       "from actdsl.backends.vmath import DOUBLE\n") if double else "",
        F=F.__name__, I=I.__name__,
        as_bits=f"f{np.dtype(F).itemsize * 8}_bits", from_bits=f"bits_f{np.dtype(F).itemsize * 8}",
        ln2_hi=ln2_hi, ln2_lo=ln2_lo, exp_lo=exp_lo, exp_hi=exp_hi, bias=bias, mant=mant,
        tiny=float(np.finfo(F).smallest_normal),
        band_lo=SCALE_BANDS[F.__name__][0], band_hi=SCALE_BANDS[F.__name__][1], cap=SCALE_CAPS[F.__name__], up=2.0 ** up_bits, up_bits=up_bits,
        sqrt2=math.sqrt(2), shifter=1.5 * 2.0 ** mant,
        shifter_bits=int(np.array(1.5 * 2.0 ** mant, F).view(I)), mant_mask=(1 << mant) - 1, one_bits=bias << mant, exp_mask=2 * bias + 1,
        tanh_cap=tanh_cap, exp_reduce_b=_EXP_REDUCE.format(b="b", poly=exp_poly),
        exp_core_zero=_EXP_CORE.format(b="ZERO", poly=exp_poly),
        exp_core_b=_EXP_CORE.format(b="b", poly=exp_poly),
        # (e^x - 1)/x = sum x^k/(k+1)!
        expm1_poly=_horner("xs", [1 / math.factorial(k) for k in range(1, expm1_degree + 1)]),
        log_poly=_horner("z", table[f"LOG_L_{kind}"]),
    )


_F64 = cache.load(_source(np.float64, np.int64, 52, 1023, expm1_degree=19, exp_lo=-746.0,
                          exp_hi=710.0, tanh_cap=19.5, up_bits=54, ln2_hi=6.93147180369123816490e-01,
                          ln2_lo=1.90821492927058770002e-10), shared=True)
DOUBLE = _F64  # the float32 module's erf and erfc compute in float64, with this module's exp
_F32 = cache.load(_source(np.float32, np.int32, 23, 127, expm1_degree=10, exp_lo=-104.0,
                          exp_hi=89.0, tanh_cap=9.5, up_bits=25, ln2_hi=0.693359375, ln2_lo=-2.12194440e-4,
                          double=_F64.__name__), shared=True)
#: what generated kernels name in their header: the math modules, and this file's own digest
#: (for the intrinsics below, whose IR lands in the kernels' cached machine code)
SOURCE_DIGEST = cache.source_key(Path(__file__).read_text(encoding="utf-8"))
MODULES = f"{_F32.__name__}, {_F64.__name__} (vmath.py {SOURCE_DIGEST})"
NAMES = ("exp", "exp_nonpos", "expmul", "expm1", "log", "log1p", "tanh", "tanhshrink", "softsign", "sigmoid", "softplus",
         "sech", "ncdf", "erf", "erfc", "pow2scale")
F64 = {name: getattr(_F64, name) for name in NAMES}
F32 = {name: getattr(_F32, name) for name in NAMES}
#: the overloads' options: cached beside the math modules, where those are files
_OVERLOAD_OPTIONS = {**JIT_OPTIONS, "no_cfunc_wrapper": True,  # only ever called from kernels
                     "cache": not any(m.__file__.startswith("<") for m in (_F32, _F64))}


def _dispatching(name, arity, by=None):
    """A Python-level stub whose Numba overload picks the float32 or float64 implementation
    (its Python function, compiled as the overload itself: a wrapper calling the typed
    dispatcher cost one more compile per function and type, 0.3 s of softmax's cold compile)."""
    f32, f64 = F32[name], F64[name]

    def pick(*args):
        deciding = args if by is None else (args[by],)  # ``by``: the argument whose float type picks
        if all(a == types.float32 for a in deciding):
            return f32
        if all(isinstance(a, (types.Float, types.Integer)) for a in args):
            return f64
        return None

    if arity == 1:
        def stub(x):
            raise TypeError(f"vm.{name} is for Numba-compiled code")

        @overload(stub, jit_options=_OVERLOAD_OPTIONS)
        def _ov(x):
            impl = pick(x)
            return None if impl is None else impl.py_func
    else:
        def stub(a, b):
            raise TypeError(f"vm.{name} is for Numba-compiled code")

        @overload(stub, jit_options=_OVERLOAD_OPTIONS)
        def _ov(a, b):
            impl = pick(a, b)
            return None if impl is None else impl.py_func
    stub.__name__ = name
    return stub


exp = _dispatching("exp", 1)
exp_nonpos = _dispatching("exp_nonpos", 1)
expm1 = _dispatching("expm1", 1)
expmul = _dispatching("expmul", 2)
log = _dispatching("log", 1)
log1p = _dispatching("log1p", 1)
tanh = _dispatching("tanh", 1)
tanhshrink = _dispatching("tanhshrink", 1)
softsign = _dispatching("softsign", 1)
sigmoid = _dispatching("sigmoid", 1)
softplus = _dispatching("softplus", 1)
sech = _dispatching("sech", 1)
ncdf = _dispatching("ncdf", 1)
erf = _dispatching("erf", 1)
erfc = _dispatching("erfc", 1)
pow2scale = _dispatching("pow2scale", 1)



# -- small helpers as intrinsics -------------------------------------------------------------------
# A few instructions each, written as LLVM IR into the caller: as overloads or jitted functions
# each was one more function for Numba to compile, optimize and link per type (40-70 ms apiece;
# softmax's row kernel called six of them). Their IR is part of this file, which generated
# kernels name (SOURCE_DIGEST in MODULES) so that a change here gives new cache files.

def _float_of(*args):
    """float32 when every argument is float32, float64 for any other numbers, else None."""
    if all(a == types.float32 for a in args):
        return types.float32
    if all(isinstance(a, (types.Float, types.Integer, types.Boolean)) for a in args):
        return types.float64
    return None


def _key_types(like, *keys):
    """(float type, key type) for a float argument ``like`` and integer key arguments, or None
    where the arguments are not of those kinds."""
    f = _float_of(like)
    if f is None or not all(isinstance(k, types.Integer) for k in keys):
        return None
    return f, types.int32 if f == types.float32 else types.int64


def _flagged(instr):
    instr.flags.append("contract")  # as the kernels' fastmath: may fuse into an FMA
    return instr


def _order_key(builder, value, width):
    # an integer that orders like the float (integer max reductions vectorize; float ones with
    # NaN semantics do not); NaN is tracked apart by the caller. Its own inverse.
    b = builder.bitcast(value, ir.IntType(width)) if value.type != ir.IntType(width) else value
    sign = builder.ashr(b, ir.Constant(b.type, width - 1))
    return builder.xor(b, builder.and_(sign, ir.Constant(b.type, (1 << (width - 1)) - 1)))


@intrinsic
def lit(typingctx, like, value):
    """``value`` as the float type of ``like`` (so literals never promote float32 to float64)."""
    f = types.float32 if like == types.float32 else types.float64
    if not isinstance(value, (types.Float, types.Integer, types.Boolean)):
        return None

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[1], sig.args[1], f)
    return f(like, value), codegen


@intrinsic
def where(typingctx, cond, a, b):
    """``a if cond else b``, both evaluated, as one LLVM select: a ternary is a branch, and a
    kernel's scans and picks held hundreds of them (maxout:64's VJP: 526 blocks, whose SSA
    reconstruction in Numba's front end took longer than LLVM). Typed as the ternary is (the
    unified type of a and b)."""
    if not isinstance(cond, types.Boolean):
        return None
    t = typingctx.unify_types(a, b)
    if t is None or not isinstance(t, (types.Float, types.Integer, types.Boolean)):
        return None

    def codegen(context, builder, sig, args):
        c, x, y = args
        x = context.cast(builder, x, sig.args[1], t)
        y = context.cast(builder, y, sig.args[2], t)
        return builder.select(c, x, y)
    return t(cond, a, b), codegen


def _binary(body):
    """An intrinsic of two numbers in the float type of the first float among them: ``body``
    (builder, x, y) writes its value from both, cast to that type."""
    def typer(typingctx, a, b):
        f = _float_of(a, b)
        if f is None:
            return None

        def codegen(context, builder, sig, args):
            x, y = (context.cast(builder, v, t, f) for v, t in zip(args, sig.args))
            return body(builder, x, y)
        return f(a, b), codegen
    typer.__name__ = typer.__qualname__ = body.__name__
    typer.__doc__ = body.__doc__
    return intrinsic(typer)


@_binary
def shifted(builder, x, y):
    """a - b, and 0 where a == b (inf - inf would be NaN: softmax's shift at an infinite max)."""
    same = builder.fcmp_ordered("==", x, y)
    return builder.select(same, ir.Constant(x.type, 0.0), builder.fsub(x, y))


@_binary
def attop(builder, x, y):
    """1 where a == b (an element equal to its row's maximum), else 0, in a's float type."""
    same = builder.fcmp_ordered("==", x, y)
    return builder.select(same, ir.Constant(x.type, 1.0), ir.Constant(x.type, 0.0))


@_binary
def times(builder, x, y):
    """m · u, and 0 where m = 0 and u = ±inf (a zero slope times an infinite input: maxout's flat
    piece keeps its limit)."""
    fabs = builder.module.declare_intrinsic("llvm.fabs", [y.type])
    flat = builder.and_(builder.fcmp_ordered("==", x, ir.Constant(x.type, 0.0)),
                        builder.fcmp_ordered("==", builder.call(fabs, [y]),
                                             ir.Constant(y.type, math.inf)))
    return builder.select(flat, ir.Constant(x.type, 0.0), builder.fmul(x, y))


@_binary
def scaled(builder, x, y):
    """a / b for a row's power-of-two scale b, written so that the row kernels' 'reassoc' cannot
    turn 2 * (z / s) into (2 * z) / s, which overflows near the largest floats."""
    # x times the reciprocal of the row constant y (a power of two, so exact, and hoisted
    # out of the loop): LLVM's reassociation groups loop invariants first, C * (1/y), never
    # C * x; as a division, InstCombine folded C * (x / y) into (C * x) / y, which overflows
    p = builder.fmul(x, builder.fdiv(ir.Constant(x.type, 1.0), y))
    # a row that holds ±inf has s = inf: its infinite entries scale to ±1 (inf · 0 would be
    # NaN), its finite ones to 0, so that the row's normalisation gives its limit. Only such
    # a row has infinite entries (s is finite otherwise, NaN for a row holding NaN).
    fabs = builder.module.declare_intrinsic("llvm.fabs", [x.type])
    infinite = builder.fcmp_ordered("==", builder.call(fabs, [x]), ir.Constant(x.type, math.inf))
    positive = builder.fcmp_ordered(">", x, ir.Constant(x.type, 0.0))
    one = builder.select(positive, ir.Constant(x.type, 1.0), ir.Constant(x.type, -1.0))
    return builder.select(infinite, one, p)


@intrinsic
def lowest_key(typingctx, like):
    """The key of -inf in the key type of ``like``'s float type."""
    if (kinds := _key_types(like)) is None:
        return None
    _, key = kinds

    def codegen(context, builder, sig, args):
        width = key.bitwidth
        minus_inf = np.array(-np.inf, f"float{width}").view(f"int{width}")
        return ir.Constant(ir.IntType(width), int(minus_inf) ^ ((1 << (width - 1)) - 1))
    return key(like), codegen


@intrinsic
def max_key(typingctx, a, b):
    """The larger of key ``a`` and float ``b``'s key, in ``b``'s key type."""
    if (kinds := _key_types(b, a)) is None:
        return None
    f, key = kinds

    def codegen(context, builder, sig, args):
        m = context.cast(builder, args[0], sig.args[0], key)
        k = _order_key(builder, context.cast(builder, args[1], sig.args[1], f), key.bitwidth)
        return builder.select(builder.icmp_signed(">", m, k), m, k)
    return key(a, b), codegen


@intrinsic
def from_order_key(typingctx, like, k):
    """The float of ``like``'s type whose key is ``k``."""
    if (kinds := _key_types(like, k)) is None:
        return None
    f, key = kinds

    def codegen(context, builder, sig, args):
        bits = _order_key(builder, context.cast(builder, args[1], sig.args[1], key), key.bitwidth)
        return builder.bitcast(bits, context.get_value_type(f))
    return f(like, k), codegen


def _power(n):
    @intrinsic
    def ipow(typingctx, x):
        f = _float_of(x)
        if f is None:
            return None

        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[0], sig.args[0], f)
            square = _flagged(builder.fmul(v, v))
            if n == 2:
                return square
            return _flagged(builder.fmul(square, v if n == 3 else square))
        return f(x), codegen
    ipow.__name__ = f"ipow{n}"
    return ipow


ipow2, ipow3, ipow4 = _power(2), _power(3), _power(4)

"""Vectorizable elementary functions for Numba, in float32 and float64.

Numba's pip wheels have no SVML, so ``np.exp`` in a loop is a scalar libm call that stops LLVM
from vectorizing. These are written with range reduction, polynomials and integer bit tricks
only (every branch a select), so they inline and vectorize. Special values (NaN, ±inf, zeros,
subnormals) are handled explicitly. ``tests/test_vmath.py`` measures the error against mpmath
(at most 4 ULP over the whole finite range).

Each function is made twice by a factory, once per float type, with constants of that type so
nothing is promoted to float64; a Numba ``overload`` picks the one matching the argument.
Generated kernels call them as ``vm.exp(x)`` etc. and cast literals with ``vm.lit(x, 0.5)``.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

#: fast-math flags for these functions: FMA contraction only. Reassociation would undo the
#: Cody-Waite reduction; nnan/ninf would break NaN and inf handling.
FLAGS = {"contract"}
#: ``forceinline`` gives LLVM ``alwaysinline``: callers' loops see straight-line code and vectorize.
#: (Numba-level ``inline="always"`` would copy typed IR into every call site: minutes of compile.)
JIT_OPTIONS = dict(fastmath=FLAGS, forceinline=True, error_model="numpy")
_jit = njit(cache=True, **JIT_OPTIONS)


def _bitcast(src, dst):
    @intrinsic
    def cast(typingctx, x):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(dst))
        return dst(src), codegen
    return cast


f64_bits, bits_f64 = _bitcast(types.float64, types.int64), _bitcast(types.int64, types.float64)
f32_bits, bits_f32 = _bitcast(types.float32, types.int32), _bitcast(types.int32, types.float32)


def _taylor(n, first=0):
    return [1 / math.factorial(k) for k in range(first, n + 1)]


def _horner(F, coeffs):
    """p(x) = c0 + c1 x + ... with constants of type F, as nested closures that LLVM inlines
    into one straight line of multiply-adds (a loop here would not always be unrolled, and a
    loop left inside a kernel's loop stops vectorization)."""
    cs = [F(c) for c in coeffs]
    c0 = cs[0]
    if len(cs) == 1:
        return njit(lambda x: c0, **JIT_OPTIONS)
    rest = _horner(F, coeffs[1:])
    return njit(lambda x: c0 + x * rest(x), **JIT_OPTIONS)


def _make(F, I, as_bits, from_bits, mant_bits, bias, exp_degree, expm1_degree, log_terms,
          exp_lo, exp_hi, tanh_one):
    """The functions for one float type F with integer type I of the same width."""
    zero, one, two, half = F(0), F(1), F(2), F(0.5)
    inf, nan = F(np.inf), F(np.nan)
    log2e = F(1.4426950408889634)
    if F is np.float64:
        ln2_hi, ln2_lo = F(6.93147180369123816490e-01), F(1.90821492927058770002e-10)
    else:
        ln2_hi, ln2_lo = F(0.693359375), F(-2.12194440e-4)
    lo, hi = F(exp_lo), F(exp_hi)
    i_bias, i_mant, i_one = I(bias), I(mant_bits), I(1)
    exp_poly = _horner(F, _taylor(exp_degree))
    expm1_poly = _horner(F, _taylor(expm1_degree, first=1))  # (e^x - 1)/x = Σ x^k/(k+1)!
    log_poly = _horner(F, [2 / (2 * k + 1) for k in range(1, log_terms + 1)])

    @_jit
    def exp(x):
        ok = (x > lo) & (x < hi)
        t = x if ok else zero
        k = np.floor(t * log2e + half)
        r = (t - k * ln2_hi) - k * ln2_lo
        p = exp_poly(r)
        ki = I(k)
        k1 = ki >> i_one
        s1 = from_bits((k1 + i_bias) << i_mant)             # 2^k as 2^k1 * 2^(k-k1): both normal,
        s2 = from_bits((ki - k1 + i_bias) << i_mant)        # so only the last product rounds
        y = (p * s1) * s2
        return y if ok else (inf if x > zero else (zero if x < zero else x))

    @_jit
    def expm1(x):
        small = abs(x) < one
        xs = x if small else zero  # the unused branch never sees large x (no overflow flags)
        return xs * expm1_poly(xs) if small else exp(x) - one

    # log: x = 2^e m, m in [sqrt(1/2), sqrt(2)); log(1+f) = f - h + s(h + R), s = f/(2+f)
    tiny = F(np.finfo(F).smallest_normal)
    up_bits = 54 if F is np.float64 else 25
    up = F(2.0 ** up_bits)
    sqrt2 = F(math.sqrt(2))
    mant_mask = I((1 << mant_bits) - 1)
    one_bits = I(bias << mant_bits)
    exp_mask = I((2 * bias + 1))

    @_jit
    def log(x):
        finite_pos = (x > zero) & (x < inf)
        t = x if finite_pos else one
        sub = t < tiny
        t = t * up if sub else t
        b = as_bits(t)
        e = ((b >> i_mant) & exp_mask) - i_bias
        m = from_bits((b & mant_mask) | one_bits)
        big = m > sqrt2
        m = m * half if big else m
        e = e + i_one if big else e
        ef = F(e) - (F(up_bits) if sub else zero)
        f = m - one
        h = half * f * f
        s = f / (two + f)
        z = s * s
        R = z * log_poly(z)
        y = ef * ln2_hi - ((h - (s * (h + R) + ef * ln2_lo)) - f)
        special = x if (x == inf) | (x != x) else (-inf if x == zero else nan)
        return y if finite_pos else special

    @_jit
    def log1p(x):
        u = one + x
        mid = (u > zero) & (u < inf)
        c = (x - (u - one)) / (u if mid else one)
        y = log(u) + (c if mid else zero)
        return x if u == one else y

    @_jit
    def tanh(x):
        a = abs(x)
        e = expm1(two * (a if a < tanh_one else zero))
        t = e / (e + two)
        t = t if a < tanh_one else one
        t = t if x == x else x
        return np.copysign(t, x)

    @_jit
    def sigmoid(x):
        e = exp(-abs(x))
        d = one / (one + e)
        return d if x >= zero else (e * d if x < zero else x)

    @_jit
    def softplus(x):
        return (x if x > zero else zero) + log1p(exp(-abs(x)))

    @_jit
    def sech(x):
        e = exp(-abs(x))
        return two * e / (one + e * e)

    @_jit
    def shifted(a, b):
        return zero if a == b else a - b

    return dict(exp=exp, expm1=expm1, log=log, log1p=log1p, tanh=tanh, sigmoid=sigmoid,
                softplus=softplus, sech=sech, shifted=shifted)


F64 = _make(np.float64, np.int64, f64_bits, bits_f64, 52, 1023, exp_degree=13, expm1_degree=19,
            log_terms=11, exp_lo=-746.0, exp_hi=710.0, tanh_one=22.0)
F32 = _make(np.float32, np.int32, f32_bits, bits_f32, 23, 127, exp_degree=7, expm1_degree=10,
            log_terms=5, exp_lo=-104.0, exp_hi=89.0, tanh_one=9.5)


def _dispatching(name, arity):
    """A Python-level stub whose Numba overload picks the float32 or float64 implementation."""
    f32, f64 = F32[name], F64[name]

    def pick(*args):
        if all(a == types.float32 for a in args):
            return f32
        if all(isinstance(a, (types.Float, types.Integer)) for a in args):
            return f64
        return None

    if arity == 1:
        def stub(x):
            raise TypeError(f"vm.{name} is for Numba-compiled code")

        @overload(stub, jit_options=JIT_OPTIONS)
        def _ov(x):
            impl = pick(x)
            return None if impl is None else (lambda x: impl(x))
    else:
        def stub(a, b):
            raise TypeError(f"vm.{name} is for Numba-compiled code")

        @overload(stub, jit_options=JIT_OPTIONS)
        def _ov(a, b):
            impl = pick(a, b)
            return None if impl is None else (lambda a, b: impl(a, b))
    stub.__name__ = name
    return stub


exp = _dispatching("exp", 1)
expm1 = _dispatching("expm1", 1)
log = _dispatching("log", 1)
log1p = _dispatching("log1p", 1)
tanh = _dispatching("tanh", 1)
sigmoid = _dispatching("sigmoid", 1)
softplus = _dispatching("softplus", 1)
sech = _dispatching("sech", 1)
shifted = _dispatching("shifted", 2)


@njit(**JIT_OPTIONS)
def ipow2(x):
    return x * x


@njit(**JIT_OPTIONS)
def ipow3(x):
    return x * x * x


@njit(**JIT_OPTIONS)
def ipow4(x):
    y = x * x
    return y * y


def lit(like, value):
    """``value`` as the float type of ``like`` (so literals never promote float32 to float64)."""
    raise TypeError("vm.lit is for Numba-compiled code")


@overload(lit, jit_options=JIT_OPTIONS)
def _ov_lit(like, value):
    if like == types.float32:
        return lambda like, value: np.float32(value)
    return lambda like, value: np.float64(value)

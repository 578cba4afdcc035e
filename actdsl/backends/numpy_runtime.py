"""Stable implementations of the numeric primitives and the row helpers that generated NumPy code
calls (as ``_rt.<name>``), written once against an array module: ``RUNTIME`` is NumPy's, and
``actdsl.jax`` makes JAX's from the same functions. Generated functions run under
``np.errstate(all="ignore")``: the formulas here are arranged so that no value they return
depends on an overflow or invalid operation; underflow to 0 and overflow to ±inf happen only
where that is the correctly rounded result."""
from __future__ import annotations

import math
import types

import numpy as np

from ..stable import SCALE_BANDS, SCALE_CAPS


def make(xp, erf, erfc) -> types.SimpleNamespace:
    """The runtime for array module ``xp`` (numpy, jax.numpy, or actdsl.torch's namespace of
    torch operations) and its erf/erfc."""

    def sigmoid(x):
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))  # NaN: e is NaN, so both branches are

    def softplus(x):
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def softsign(x):
        a = xp.abs(x)  # beyond 2^60 the quotient is ±1 rounded, and ±inf/inf would be NaN
        return xp.where(a > 2.0 ** 60, xp.sign(x), x / (1 + a))

    def tanhshrink(x):
        """x - tanh(x); Lambert's continued fraction for |x| < 2, where the difference cancels."""
        small = xp.abs(x) < 2
        xs = xp.where(small, x, 0)
        x2 = xs * xs
        q = xp.zeros_like(x2)
        for k in range(12, 0, -1):
            q = x2 / (2 * k + 1 + q)
        return xp.where(small, xs * q / (1 + q), x - xp.tanh(x))

    def sech(x):
        return 1 / xp.cosh(x)  # cosh overflows to inf exactly where sech underflows to 0

    def pow2scale(a):
        kind = str(a.dtype).rsplit(".", 1)[-1]  # "float32", also from torch's "torch.float32"
        lo, hi = SCALE_BANDS[kind]
        _, e = xp.frexp(a)
        tiny = xp.finfo(a.dtype).tiny
        s = xp.minimum(xp.maximum(xp.ldexp(xp.ones_like(a), e - 1), tiny), SCALE_CAPS[kind])
        keep = (a == 0) | ((xp.abs(a) >= lo) & (xp.abs(a) <= hi))
        return xp.where(keep, 1, xp.where(xp.abs(a) < xp.inf, s, xp.abs(a)))  # inf; NaN

    def scaled(u, s):
        if xp is np and not np.any(s != 1):  # rows in the safe band (most): nothing to divide
            return u
        # s = inf (a row holding ±inf): its infinite entries scale to ±1, its finite ones to 0
        return xp.where(xp.isinf(u) & xp.isinf(s), xp.sign(u), u / s)

    def shifted(a, b):
        return xp.where(a == b, 0, a - b)

    def attop(a, b):
        a = xp.asarray(a)
        return (a == b).astype(a.dtype)

    def times(m, u):
        return xp.where((m == 0) & xp.isinf(u), 0, m * u)

    def expmul(a, g):
        e = xp.exp(xp.asarray(a) * 0.5)
        return (g * e) * e

    def ncdf(x):
        return erfc(-x * 0.7071067811865476) / 2

    def nan_through(value, *operands):
        """``value``, except NaN wherever an operand that a branch condition compared is NaN."""
        for op in operands:
            value = xp.where(op != op, op, value)
        return value

    def rowsum(x, like):
        return xp.sum(xp.broadcast_to(x, like.shape), axis=-1, keepdims=True)

    def rowmax(x, like):
        return xp.max(xp.broadcast_to(x, like.shape), axis=-1, keepdims=True)

    def argmax(x, like):
        """Index of the first maximum of each row (the first NaN if the row has one)."""
        return xp.argmax(xp.broadcast_to(x, like.shape), axis=-1, keepdims=True)

    def take(x, index, like):
        return xp.take_along_axis(xp.broadcast_to(x, like.shape), index, axis=-1)

    def at(index, x, like):
        """``x`` at each row's ``index``, 0 elsewhere (the gradient of a row maximum)."""
        hit = xp.arange(like.shape[-1]) == index
        return xp.where(hit, x, 0)

    return types.SimpleNamespace(
        expm1=xp.expm1, log1p=xp.log1p, sqrt=xp.sqrt, erf=erf, erfc=erfc, sigmoid=sigmoid,
        softplus=softplus, softsign=softsign, pow2scale=pow2scale, scaled=scaled, tanhshrink=tanhshrink, sech=sech, shifted=shifted, attop=attop, expmul=expmul, times=times,
        ncdf=ncdf, nan_through=nan_through, rowsum=rowsum, rowmax=rowmax, argmax=argmax,
        take=take, at=at)


def _scalar(name):
    """The math module's function, elementwise (for a few values: no SciPy import)."""
    scalar = np.frompyfunc(getattr(math, name), 1, 1)

    def f(x):
        x = np.asarray(x)
        return np.asarray(scalar(x), dtype=x.dtype if x.dtype.kind == "f" else np.float64)

    f.__name__ = name
    return f


def _special(name):
    """scipy.special's ufunc where SciPy is installed, else the math module's, elementwise."""
    scalar = _scalar(name)

    def f(x):
        try:
            import scipy.special
        except ImportError:
            return scalar(x)
        return getattr(scipy.special, name)(x)

    f.__name__ = name
    return f


RUNTIME = make(np, _special("erf"), _special("erfc"))
#: for evaluating a few values at compile time (limits.py): importing SciPy takes a second
SCALAR_RUNTIME = make(np, _scalar("erf"), _scalar("erfc"))

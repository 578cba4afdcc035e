"""Stable NumPy implementations of the numeric primitives and the row helpers that generated
NumPy code calls (as ``_rt.<name>``). Generated functions run under ``np.errstate(all="ignore")``:
the formulas here are arranged so that no value they return depends on an overflow or invalid
operation; underflow to 0 and overflow to ±inf happen only where that is the correctly rounded
result."""
from __future__ import annotations

import math

import numpy as np

expm1 = np.expm1
log1p = np.log1p
sqrt = np.sqrt


def sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))  # NaN: e is NaN, so both branches are


def softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def softsign(x):
    return x / (1 + np.abs(x))


def tanhshrink(x):
    """x - tanh(x); Lambert's continued fraction for |x| < 2, where the difference cancels."""
    small = np.abs(x) < 2
    xs = np.where(small, x, 0)
    x2 = xs * xs
    q = np.zeros_like(x2)
    for k in range(12, 0, -1):
        q = x2 / (2 * k + 1 + q)
    return np.where(small, xs * q / (1 + q), x - np.tanh(x))


def sech(x):
    return 1 / np.cosh(x)  # cosh overflows to inf exactly where sech underflows to 0


def shifted(a, b):
    return np.where(a == b, 0, a - b)


def _special(name):
    """scipy.special's ufunc where SciPy is installed, else the math module's, elementwise."""
    scalar = np.frompyfunc(getattr(math, name), 1, 1)

    def f(x):
        try:
            import scipy.special
        except ImportError:
            x = np.asarray(x)
            return scalar(x).astype(x.dtype if x.dtype.kind == "f" else np.float64)
        return getattr(scipy.special, name)(x)

    f.__name__ = name
    return f


erf = _special("erf")
erfc = _special("erfc")


def ncdf(x):
    return erfc(-x * 0.7071067811865476) / 2


def nan_through(value, *operands):
    """``value``, except NaN wherever an operand that a branch condition compared is NaN."""
    for op in operands:
        value = np.where(op != op, op, value)
    return value


def rowsum(x, like):
    return np.sum(np.broadcast_to(x, like.shape), axis=-1, keepdims=True)


def rowmax(x, like):
    return np.max(np.broadcast_to(x, like.shape), axis=-1, keepdims=True)


def argmax(x, like):
    """Index of the first maximum of each row (the first NaN if the row has one)."""
    return np.argmax(np.broadcast_to(x, like.shape), axis=-1, keepdims=True)


def take(x, index, like):
    return np.take_along_axis(np.broadcast_to(x, like.shape), index, axis=-1)


def at(index, x, like):
    """``x`` at each row's ``index``, 0 elsewhere (the gradient of a row maximum)."""
    hit = np.arange(like.shape[-1]) == index
    return np.where(hit, x, 0)

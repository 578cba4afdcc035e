"""Array-like symbols for custom activations: what ``Activation.__call__`` receives as ``z``.

A :class:`Sym` wraps a SymPy expression and behaves like a NumPy array of the layer's outputs:
arithmetic, ``**``, ``abs``, comparisons that act as 0/1 indicators (so theanets' example
``z * (z > 1)`` works verbatim), numpy-style functions (``actdsl.sym.exp``, or methods
``z.exp()``), ``where``/``maximum``/``minimum``/``clip``, and row reductions ``z.mean()``,
``z.sum()``, ``z.max()``, ``z.std()``, ``abs(z).max()``. Nothing here evaluates text.
"""
from __future__ import annotations

import sympy as sp

from .errors import ActdslError
from .ir import RowMax, RowSum, n, row_mean, row_std, row_var
from . import stable


def _expr(value) -> sp.Expr:
    if isinstance(value, Sym):
        return value.expr
    if isinstance(value, bool):
        return sp.Integer(int(value))
    if isinstance(value, (int, float)):
        from .lower import exact
        return exact(value)
    if isinstance(value, sp.Basic):
        return value
    raise ActdslError(f"a custom activation used a {type(value).__name__} where a number or "
                      "an expression of z was expected")


def indicator(cond) -> sp.Expr:
    return sp.Piecewise((1, cond), (0, True))


class Sym:
    """A symbolic array: the input ``z`` of a custom activation, or an expression of it."""

    __array_priority__ = 1000  # numpy scalars on the left defer to us

    def __init__(self, expr):
        self.expr = _expr(expr)

    def __repr__(self):
        return f"Sym({self.expr})"

    # arithmetic
    def __add__(self, o): return Sym(self.expr + _expr(o))
    def __radd__(self, o): return Sym(_expr(o) + self.expr)
    def __sub__(self, o): return Sym(self.expr - _expr(o))
    def __rsub__(self, o): return Sym(_expr(o) - self.expr)
    def __mul__(self, o): return Sym(self.expr * _expr(o))
    def __rmul__(self, o): return Sym(_expr(o) * self.expr)
    def __truediv__(self, o): return Sym(self.expr / _expr(o))
    def __rtruediv__(self, o): return Sym(_expr(o) / self.expr)
    def __pow__(self, o): return Sym(self.expr ** _expr(o))
    def __rpow__(self, o): return Sym(_expr(o) ** self.expr)
    def __neg__(self): return Sym(-self.expr)
    def __pos__(self): return self
    def __abs__(self): return Sym(sp.Abs(self.expr))

    # comparisons are 0/1 indicators, as on arrays of floats
    def __gt__(self, o): return Sym(indicator(self.expr > _expr(o)))
    def __ge__(self, o): return Sym(indicator(self.expr >= _expr(o)))
    def __lt__(self, o): return Sym(indicator(self.expr < _expr(o)))
    def __le__(self, o): return Sym(indicator(self.expr <= _expr(o)))

    def __bool__(self):
        raise ActdslError("a custom activation used `if` or `and`/`or` on z, which depends on "
                          "the data: use actdsl.sym.where(cond, a, b) or an indicator "
                          "such as z * (z > 1)")

    __hash__ = None

    # methods, numpy style
    def exp(self): return exp(self)
    def log(self): return log(self)
    def tanh(self): return tanh(self)
    def sqrt(self): return sqrt(self)
    def clip(self, lo, hi): return clip(self, lo, hi)

    # row reductions (over the row axis, chosen when the kernel is called)
    def sum(self, axis=-1): return _row(axis, RowSum(self.expr))
    def mean(self, axis=-1): return _row(axis, row_mean(self.expr))
    def max(self, axis=-1): return _row(axis, RowMax(self.expr))
    def min(self, axis=-1): return _row(axis, -RowMax(-self.expr))
    def std(self, axis=-1): return _row(axis, row_std(self.expr))
    def var(self, axis=-1): return _row(axis, row_var(self.expr))


def _row(axis, reduced) -> Sym:
    if axis not in (-1, None):
        raise ActdslError("custom activations reduce over the row (axis=-1); the row axis is "
                          "chosen when the kernel is called")
    return Sym(reduced)


def _unary(f):
    def apply(x):
        return Sym(f(_expr(x)))
    apply.__name__ = getattr(f, "__name__", "f")
    return apply


exp = _unary(sp.exp)
log = _unary(sp.log)
tanh = _unary(stable.tanh)
sqrt = _unary(sp.sqrt)
erf = _unary(sp.erf)
sigmoid = _unary(stable.sigmoid)
softplus = _unary(stable.softplus)
expm1 = _unary(stable.expm1)
log1p = _unary(stable.log1p)
absolute = _unary(sp.Abs)
abs = absolute  # noqa: A001 - numpy's name


def where(cond, a, b):
    """``a`` where ``cond`` (an indicator, e.g. ``z > 0``) is 1, else ``b``."""
    c = _expr(cond)
    if isinstance(c, sp.Piecewise) and len(c.args) == 2 and c.args[0][0] == 1 and c.args[1][0] == 0:
        return Sym(sp.Piecewise((_expr(a), c.args[0][1]), (_expr(b), True)))
    return Sym(sp.Piecewise((_expr(a), sp.Ne(c, 0)), (_expr(b), True)))


def maximum(a, b):
    return Sym(sp.Max(_expr(a), _expr(b)))


def minimum(a, b):
    return Sym(sp.Min(_expr(a), _expr(b)))


def clip(x, lo, hi):
    return Sym(sp.Max(_expr(lo), sp.Min(_expr(hi), _expr(x))))

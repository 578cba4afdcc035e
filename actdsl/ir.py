"""The lowered form of a spec: one SymPy expression in ``z`` with row reductions as atoms.

``z`` is one element of a row and ``n`` the row length. A row reduction is an unevaluated SymPy
function of an expression in ``z`` (and of earlier reductions): ``RowSum(f)`` and ``RowMax(f)``
carry gradients; ``RowShift(f)`` is a row maximum whose gradient is zero because the result does
not depend on it (softmax's max shift).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy as sp

from .stable import pow2scale, scaled, shifted, sqrt0

z = sp.Symbol("z", real=True)
n = sp.Symbol("n", positive=True, integer=True)


class RowReduction(sp.Function):
    """A reduction over the row that holds ``z``; subclasses say which."""

    nargs = 1
    is_real = True
    has_gradient = True
    #: never a plain number, even of a constant (RowSum(c) = n c depends on the row), so SymPy
    #: does not try to evaluate it numerically when it simplifies conditions
    is_number = False
    is_comparable = False

    def _eval_evalf(self, prec):
        return None

    # No fdiff: derive.py replaces atoms by symbols before differentiating. SymPy itself may
    # differentiate one while simplifying conditions; its default (an unevaluated Derivative)
    # is the honest answer there.


class RowSum(RowReduction):
    """Σ_j f(z_j) over the row."""


class RowMax(RowReduction):
    """max_j f(z_j) over the row; its gradient flows through the first argmax."""


class RowShift(RowReduction):
    """max_j f(z_j), used only as a shift the result does not depend on: no gradient."""

    has_gradient = False


def row_centered(u: sp.Expr) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """``(c, s, L)``: the deviations from the row mean divided by ``s``, c = (u - mean)/s, computed
    so that nothing overflows and nearby values do not cancel:

    * ``s``, a power of two near max|u| (``pow2scale``): dividing by it is exact, and squares and
      sums of u/s cannot overflow; inf when the row holds ±inf (its direction is then what is
      normalised: the limit), NaN when it holds NaN;
    * the row maximum M as a shift: d = u/s - M/s is exact for elements within a factor 2 of M
      (Sterbenz), 0 for elements equal to M (a constant row gives exactly 0), and never overflows;
    * L = mean(d), small when the mean is close to the maximum; c = d - L (the two-pass
      variance then sums c², with no cancellation: the mean's own size, 1e4 in N(1e4, 1),
      costs no accuracy).

    s and M are gradient-free (``RowShift``): the result does not depend on them."""
    s = pow2scale(RowShift(sp.Abs(u)))
    # one subtraction (``shifted``), not an Add SymPy may reorder into (-M/s - L) + u/s, which
    # rounds M + L (1e4-sized) before the small difference is formed
    d = shifted(scaled(u, s), scaled(RowShift(u), s))
    L = RowSum(d) / n
    return d - L, s, L


def row_mean(u: sp.Expr) -> sp.Expr:
    """s·(M/s + L) (see ``row_centered``): exactly M on a constant row, never overflowing, and
    ±inf for a row holding ±inf (where s = inf and M/s + L is the mean of the row's direction;
    M + s·L would be inf - inf)."""
    _, s, L = row_centered(u)
    return s * (scaled(RowShift(u), s) + L)


def row_var_scaled(u: sp.Expr) -> sp.Expr:
    """The row's variance (ddof 0) divided by s², with ``s`` from ``row_centered``."""
    c, _, _ = row_centered(u)
    return RowSum(c ** 2) / n


def row_std(u: sp.Expr) -> sp.Expr:
    """Standard deviation over the row, ddof 0."""
    _, s, _ = row_centered(u)
    return s * sqrt0(row_var_scaled(u))


def row_var(u: sp.Expr) -> sp.Expr:
    _, s, _ = row_centered(u)
    return s ** 2 * row_var_scaled(u)


def reductions(expr: sp.Expr) -> set[RowReduction]:
    return set(expr.atoms(RowReduction))


@dataclass(frozen=True)
class Param:
    """A learnable parameter: one value (or ``shape`` values) per unit.

    ``symbols`` are the scalars the expression uses: one for ``shape == ()``, otherwise one per
    entry of the last axis (``m_0 .. m_{k-1}`` for maxout's slopes). ``init(units, rng)`` returns
    the default values, an array of shape ``(units, *shape)``.
    """

    name: str
    symbols: tuple[sp.Symbol, ...]
    shape: tuple[int, ...]
    init: Callable[[int, np.random.Generator | None], np.ndarray] = field(compare=False)
    description: str = ""

    def __repr__(self) -> str:
        return f"Param({self.name!r}, shape per unit {self.shape})"


@dataclass(frozen=True)
class IR:
    """A whole spec, lowered: ``expr`` computes y from ``z``; ``display`` is the same function in
    the notation documentation uses (max, |z|, min kept as such)."""

    expr: sp.Expr
    params: tuple[Param, ...]
    display: sp.Expr

    @property
    def rowwise(self) -> bool:
        return bool(reductions(self.expr))

    @property
    def param_symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(s for p in self.params for s in p.symbols)

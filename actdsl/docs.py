"""Documentation built from the registry: LaTeX formulas (and, later, tables and plots)."""
from __future__ import annotations

import functools

import sympy as sp

from .backends.latex import to_latex
from .derive import make_plan
from .lower import lower
from .registry import REGISTRY
from .stage import plain_or_staged
from .syntax import parse


@functools.lru_cache(maxsize=256)
def _lowered(text: str, generation: int):
    spec = parse(text)

    def build(staged):
        ir = lower(spec, text, staged=staged)
        return ir, make_plan(ir)
    return plain_or_staged(build)


def latex(spec: str, derivative: bool = False) -> str:
    """g(z) in LaTeX, or with ``derivative=True`` g'(z) (elementwise specs) or the Jacobian entry
    ∂y_i/∂z_j (row-wise specs), as a textbook prints them (see ``actdsl.textbook``): named
    constants (``textbook.formulas(spec).constants`` has their values), no numerical guards, the
    shortest form, in terms of g's output y where that is shorter."""
    from .textbook import formulas

    f = formulas(spec)
    if not derivative:
        return to_latex(f.g)
    return to_latex(f.dg, index="l" if f.rowwise else None)


def text(spec: str, derivative: bool = False) -> str:
    """The same formula as :func:`latex`, as plain Unicode text for a terminal (SymPy's pretty
    printer; fractions take several lines): Σ for row sums, mean(·), σ, Φ, δ."""
    from .textbook import formulas

    f = formulas(spec)
    expr = f.dg if derivative else f.g
    return sp.pretty(_plain_names(expr, index="l" if f.rowwise and derivative else None),
                     use_unicode=True, wrap_line=False)


def _plain_names(expr: sp.Expr, index: str | None) -> sp.Expr:
    """Row reductions and primitives as named functions the pretty printer shows as such."""
    from .backends.latex import _means
    from .ir import RowMax, RowShift, RowSum, z
    from .stable import EVALUATED_PIECES, Primitive

    names = {RowSum: "Σ", RowMax: "max", RowShift: "max"}
    row_z = sp.Symbol(f"z_{index}", real=True) if index else z

    def rename(e):
        if type(e) in names:
            return sp.Function(names[type(e)])(e.args[0].subs(z, row_z))
        if type(e).__name__ == "RowMean":
            return sp.Function("mean")(e.args[0].subs(z, row_z))
        if isinstance(e, Primitive):
            kind = type(e).__name__
            if kind in ("FirstMax", "Pick") and len(e.args) - (kind == "Pick") > EVALUATED_PIECES:
                # as branches, k(k-1)/2 comparisons: argmax(a_0, ...) and pick(i, v_0, ...)
                return sp.Function("argmax" if kind == "FirstMax" else "pick")(*e.args)
            shown = {"sigmoid": "σ", "ncdf": "Φ"}.get(type(e).__name__)
            return sp.Function(shown)(*e.args) if shown else e.elementary()
        return e

    greek = {s: sp.Symbol("ε", positive=True) for s in expr.free_symbols if s.name == "varepsilon"}
    return _means(expr.xreplace(greek)).replace(
        lambda e: type(e) in names or type(e).__name__ == "RowMean" or isinstance(e, Primitive),
        rename)

"""Documentation built from the registry: LaTeX formulas (and, later, tables and plots)."""
from __future__ import annotations

import functools

from .backends.latex import to_latex
from .derive import derivative as elementwise_derivative, jacobian_entry, make_plan
from .lower import lower
from .registry import REGISTRY
from .syntax import parse


@functools.lru_cache(maxsize=256)
def _lowered(text: str, generation: int):
    ir = lower(parse(text), text)
    return ir, make_plan(ir)


def latex(spec: str, derivative: bool = False) -> str:
    """g(z) in LaTeX, or with ``derivative=True`` g'(z) (elementwise specs) or the Jacobian entry
    ∂y_i/∂z_j (row-wise specs)."""
    from . import library  # noqa: F401  (fills the registry)

    ir, plan = _lowered(str(spec), REGISTRY.generation)
    if not derivative:
        return to_latex(ir.display)
    if plan.rowwise:
        return to_latex(jacobian_entry(plan), index="l")
    return to_latex(elementwise_derivative(ir))

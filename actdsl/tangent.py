"""Forward mode and second order, from the plan of ``derive.py``.

The JVP (``ẏ = J ż``, with parameter tangents ``θ̇``) runs the forward's reductions and carries
each one's tangent forward, innermost first:

    ṙ_k = Σ_j [∂f_k/∂z ż_j + Σ_{m<k} ∂f_k/∂r_m ṙ_m + Σ_θ ∂f_k/∂θ θ̇]      (argmax only for max)
    ẏ_i = ∂F/∂z ż_i + Σ_k ∂F/∂r_k ṙ_k + Σ_θ ∂F/∂θ θ̇

A row shift (softmax's max) has ṙ = 0: the result does not depend on it.

The tangent of the VJP (``vjp_tangent``) is the same rule applied to every per-element quantity
of the VJP (``∂F/∂z``, ``∂F/∂r_k``, ...), each a SymPy expression whose own partial derivatives
SymPy gives; the argmax of a row maximum is locally constant, so its tangent is the tangent taken
at the argmax. Since ``∂/∂x ⟨w, Jᵀg⟩ = Σ_i g_i H_i w`` is the tangent of ``Jᵀg`` along ``w``
(every ``H_i`` is symmetric), it is also the VJP of the VJP with respect to x (and θ); with
respect to g that VJP is the JVP ``J w``. So these two give exact Hessian-vector products.
"""
from __future__ import annotations

import sympy as sp

from .derive import Plan, _diff, defined, tidy, to_piecewise
from .ir import z

#: ż, the tangent of the input; ġ, the tangent of the VJP's dL/dy
DZ = sp.Symbol("v", real=True)
DG = sp.Symbol("h", real=True)
G = sp.Symbol("g")


def dr(symbol: sp.Symbol) -> sp.Symbol:
    """ṙ_k, the tangent of reduction ``r_k``."""
    return sp.Symbol(f"d_{symbol.name}", real=True)


def dparams(plan: Plan) -> tuple[sp.Symbol, ...]:
    """θ̇, one tangent per parameter symbol."""
    return tuple(sp.Symbol(f"q{i}", real=True) for i in range(len(plan.params)))


def body_tangents(plan: Plan) -> dict:
    """r_k -> the per-element tangent of f_k (summed over the row, or taken at the argmax)."""
    q = dict(zip(plan.params, dparams(plan)))
    out = {}
    for r in plan.grad_reductions():
        e = plan.dbody_dz[r.symbol] * DZ
        e += sum((v * dr(k) for (m, k), v in plan.dbody_dr.items() if m == r.symbol), sp.S.Zero)
        e += sum((v * q[p] for (k, p), v in plan.dbody_dp.items() if k == r.symbol), sp.S.Zero)
        out[r.symbol] = e
    return out


def out_tangent(plan: Plan) -> sp.Expr:
    """ẏ per element, given ṙ."""
    q = dparams(plan)
    e = plan.dout_dz * DZ
    e += sum((v * dr(k) for k, v in plan.dout_dr.items()), sp.S.Zero)
    e += sum((v * t for v, t in zip((plan.dout_dp[p] for p in plan.params), q)), sp.S.Zero)
    return e


def _d(expr: sp.Expr, s: sp.Symbol, what: str = "of higher order ") -> sp.Expr:
    """∂expr/∂s with the kink convention: a first derivative may hold |u| (softsign's), which
    becomes Piecewise before it is differentiated again (never sign or DiracDelta). Taken by
    derive's ``_diff``, which differentiates a Piecewise branch by branch without SymPy's
    folding of conditions (SymPy's diff of a Piecewise whose conditions hold a Piecewise failed
    inside SymPy on trel+{tanh(z)*softplus(z)}+prelu+norm:z+{min(z, 1)}+leaky_relu). A 1/0 on a
    branch that is reached is a ParameterError (``derive.defined``), as in the first derivative:
    the emitters have no code for SymPy's zoo."""
    return defined(tidy(to_piecewise(_diff(to_piecewise(expr), s))), what)


def tangent(plan: Plan, expr: sp.Expr) -> sp.Expr:
    """The tangent of a per-element expression in z, the reductions and θ."""
    grad = {r.symbol for r in plan.grad_reductions()}
    e = _d(expr, z) * DZ
    for s in sorted(expr.free_symbols & grad, key=sp.default_sort_key):
        e += _d(expr, s) * dr(s)
    for p, t in zip(plan.params, dparams(plan)):
        if p in expr.free_symbols:
            e += _d(expr, p) * t
    return e


def second_derivative(plan: Plan) -> sp.Expr:
    """g''(z) of an elementwise spec: the derivative of g' with the same kink convention (g' is
    already Piecewise; the branch a definition selects at a kink gives its derivative there)."""
    return _d(plan.dout_dz, z, "of second order ")

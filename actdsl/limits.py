"""The values of elementwise specs at ±inf: the limits (DESIGN.md, "Numerics").

Evaluated as written, a formula can give NaN at ±inf where its limit exists: silu is z·σ(z),
which is -inf·0 at -inf; its derivative σ(z)(1 + z σ(-z)) is 1 + inf·0 at +inf; softsign is
inf/inf. For a spec without learnable parameters, :func:`guard` evaluates the forward and the
derivative at ±inf once, at compile time (with the NumPy backend's code, in float64), and where
that gives NaN it takes the value at the largest finite float instead, which is the limit for
every function that has settled by 1.8e308 (every built-in does, long before: the tests check
them all, and compositions, against SymPy's limits). A value of magnitude above 1e300 there is
taken as ±inf. Where that value is NaN too (a polynomial factor that overflows against an exp
that underflows: z exp(-3 z^4)'s derivative), the first of 1e300, 1e200, ..., 1e20 whose value
the next one agrees with is taken. The forward and derivative are then wrapped in
:class:`~actdsl.stable.at_inf`, which every backend prints as a select on ``z == ±inf``;
nothing changes for finite inputs, and
a spec whose formulas are already right at ±inf (most) is left exactly as it was.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import sympy as sp

from .derive import Plan, to_piecewise
from .ir import reductions, z
from .stable import at_inf

_BIG = 1e300  # |f(±max float)| beyond this: the limit is ±inf


def _number(v: float):
    if np.isnan(v):
        return sp.nan
    if np.isinf(v) or abs(v) > _BIG:
        return sp.oo if v > 0 else -sp.oo
    return sp.Float(float(v), 17)


#: where the value at ±(largest float) is NaN too (z exp(-3 z^4)'s derivative: z^4 overflows,
#: inf · 0), the formula is evaluated at these magnitudes, largest first, and the limit is the
#: first value that the next one agrees with (a function settled by then)
_LADDER = (1e300, 1e200, 1e100, 1e50, 1e30, 1e20)


def _settled(a: float, b: float) -> bool:
    if np.isnan(a) or np.isnan(b):
        return False
    if abs(a) > _BIG or abs(b) > _BIG:
        return abs(a) > _BIG and abs(b) > _BIG and (a > 0) == (b > 0)
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def _limit(at_inf_value: float, at_max: float, ladder=()):
    """The value at ±inf as a SymPy number: the formula's own where it is a number, else the
    value at ±(largest float), else (NaN there too) the first settled value down ``ladder``
    (the values at _LADDER's magnitudes); None when the formula's own is a number (no guard
    needed)."""
    if not np.isnan(at_inf_value):
        return None
    if np.isnan(at_max):
        for a, b in zip(ladder, ladder[1:]):
            if _settled(a, b):
                return _number(a)
    return _number(at_max)


def _at_ends(plan: Plan, fields: tuple[tuple[str, str], ...]) -> dict:
    """{field: values at [-inf, inf, -max, max, -_LADDER..., _LADDER...]} of the plan's
    generated NumPy functions, in float64 (the module is run once and not kept, nor its source in
    linecache)."""
    import linecache

    from .backends import numpy as npb
    from .backends.numpy_runtime import SCALAR_RUNTIME

    source = npb.generate(plan)
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    ns = npb.load(source, key, runtime=SCALAR_RUNTIME, tag="limits")
    linecache.cache.pop(f"<actdsl-limits-{key}>", None)
    big = np.finfo(np.float64).max
    x = np.array([-np.inf, np.inf, -big, big, *[-m for m in _LADDER], *_LADDER])
    out = {}
    for field, fn in fields:
        with np.errstate(all="ignore"):
            out[field] = np.broadcast_to(
                np.asarray(ns[fn](x, np.float64(1.0)), dtype=np.float64), x.shape)
    return out


def _guarded(expr: sp.Expr, v) -> sp.Expr | None:
    """``expr`` wrapped in at_inf where its values ``v`` at ±inf are NaN and a limit exists;
    None where nothing changes."""
    n = len(_LADDER)
    lneg = _limit(v[0], v[2], list(v[4:4 + n]))
    lpos = _limit(v[1], v[3], list(v[4 + n:]))
    if (lneg is None and lpos is None) or (lneg is sp.nan and lpos is sp.nan):
        return None
    return at_inf(expr, z, _number(v[0]) if lneg is None else lneg,
                  _number(v[1]) if lpos is None else lpos)


def guard(plan: Plan) -> Plan:
    """``plan`` with its forward and derivative giving the limits at ±inf where the formulas
    give NaN there (elementwise specs without learnable parameters; others are returned as
    they are: a limit that depends on parameter values is not a constant)."""
    if plan.rowwise or plan.params:
        return plan
    values = _at_ends(plan, (("out", "forward"), ("dout_dz", "derivative")))
    changes = {}
    for field, v in values.items():
        guarded = _guarded(getattr(plan, field), v)
        if guarded is not None:
            changes[field] = guarded
    if not changes:
        return plan
    return dataclasses.replace(plan, **changes)


def guard_input(u: sp.Expr) -> sp.Expr:
    """``u``, the elementwise terms before a row-wise one (``mish`` in ``mish+softmin``), with
    its limits at ±inf where evaluated as written it gives NaN there (mish(-inf) is -inf · 0):
    a row holding ±inf then gives the row-wise term's limit. Expressions with parameters or row
    reductions are returned as they are, as by :func:`guard`."""
    if u == z or not u.has(z) or (u.free_symbols - {z}) or reductions(u):
        return u
    # (as make_plan gives it to the emitters: Max and Min as branches, which they print;
    # {max(z, 0)**2}+trec+sparse_plus+tlin+norm:std failed here on a Max)
    plan = Plan(reductions=(), out=to_piecewise(u), params=(), dout_dz=sp.S.Zero, dout_dr={},
                dbody_dz={}, dbody_dr={}, dout_dp={}, dbody_dp={})
    guarded = _guarded(u, _at_ends(plan, (("out", "forward"),))["out"])
    return u if guarded is None else guarded

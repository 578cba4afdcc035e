"""The values of elementwise specs at ±inf: the limits (DESIGN.md, "Numerics").

Evaluated as written, a formula can give NaN at ±inf where its limit exists: silu is z·σ(z),
which is -inf·0 at -inf; its derivative σ(z)(1 + z σ(-z)) is 1 + inf·0 at +inf; softsign is
inf/inf. For a spec without learnable parameters, :func:`guard` evaluates the forward and the
derivative at ±inf once, at compile time (with the NumPy backend's code, in float64), and where
that gives NaN it takes the value at the largest finite float instead, which is the limit for
every function that has settled by 1.8e308 (every built-in does, long before: the tests check
them all, and compositions, against SymPy's limits). A value of magnitude above 1e300 there is
taken as ±inf. The forward and derivative are then wrapped in :class:`~actdsl.stable.at_inf`,
which every backend prints as a select on ``z == ±inf``; nothing changes for finite inputs, and
a spec whose formulas are already right at ±inf (most) is left exactly as it was.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import sympy as sp

from .derive import Plan
from .ir import z
from .stable import at_inf

_BIG = 1e300  # |f(±max float)| beyond this: the limit is ±inf


def _number(v: float):
    if np.isnan(v):
        return sp.nan
    if np.isinf(v) or abs(v) > _BIG:
        return sp.oo if v > 0 else -sp.oo
    return sp.Float(float(v), 17)


def _limit(at_inf_value: float, at_max: float):
    """The value at ±inf as a SymPy number: the formula's own where it is a number, else the
    value at ±(largest float); None when the formula's own is a number (no guard needed)."""
    if not np.isnan(at_inf_value):
        return None
    return _number(at_max)


def guard(plan: Plan) -> Plan:
    """``plan`` with its forward and derivative giving the limits at ±inf where the formulas
    give NaN there (elementwise specs without learnable parameters; others are returned as
    they are: a limit that depends on parameter values is not a constant)."""
    if plan.rowwise or plan.params:
        return plan
    from .backends import numpy as npb

    source = npb.generate(plan)
    ns = npb.load(source, hashlib.sha256(source.encode()).hexdigest()[:16], tag="limits")
    big = np.finfo(np.float64).max
    x = np.array([-np.inf, np.inf, -big, big])
    changes = {}
    for field, fn in (("out", "forward"), ("dout_dz", "derivative")):
        with np.errstate(all="ignore"):
            v = np.broadcast_to(np.asarray(ns[fn](x, np.float64(1.0)), dtype=np.float64), x.shape)
        lneg, lpos = _limit(v[0], v[2]), _limit(v[1], v[3])
        if (lneg is None and lpos is None) or (lneg is sp.nan and lpos is sp.nan):
            continue
        expr = getattr(plan, field)
        changes[field] = at_inf(expr, z, _number(v[0]) if lneg is None else lneg,
                                _number(v[1]) if lpos is None else lpos)
    if not changes:
        return plan
    return dataclasses.replace(plan, **changes)

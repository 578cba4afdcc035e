"""``actdsl.check``'s checks of forward mode and second order (docs/autodiff.md): each backend's
``jvp``, elementwise ``derivative(order=2)`` and ``vjp_vjp`` against central differences of
the first-order results (the forward, ``derivative`` and ``vjp``), in the dtype checked."""
from __future__ import annotations

import numpy as np
import sympy as sp

from .check import (FiniteDifferenceResult, _boundaries, _flips, _kernel_params, _param_env,
                    _row_flips, _short, _textbook, row_relations, truncation_aware)


def higher_order(k, values, dtype, rng, count: int = 60) -> list[FiniteDifferenceResult]:
    kp = _kernel_params(values, dtype)
    eps = float(np.finfo(dtype).eps)
    h = eps ** (1 / 3)
    bound = 50 * eps ** (2 / 3)
    textbook = None if k.rowwise else _textbook(k.expr)  # (kinks and conditions: elementwise)
    kinks = [] if k.rowwise else [float(b) for b in _boundaries(textbook)] + [0.0]
    relations = [] if k.rowwise else textbook.atoms(sp.core.relational.Relational)
    penv = _param_env(values, dtype)

    def row():
        while True:
            r = np.array([rng.gauss(0, 2) for _ in range(8)], dtype=dtype)
            if all(abs(float(x) - c) > 20 * h * max(1.0, abs(float(x))) for x in r for c in kinks) \
                    and not any(_flips(relations, penv, [float(x) + s * h * max(1.0, abs(float(x)))
                                                         for s in (-8, 0, 8)]) for x in r):
                # (steps of 2h along v, |v| mostly under 4: a condition that changes there)
                return r

    def compare(exact, f, r, v, scale):
        """The largest error of ``exact`` against central differences of ``f`` along ``v`` from
        ``r`` (``check.truncation_aware``: less the step's own truncation error)."""
        def difference(times):
            up, down = (r + dtype(times * h) * v).astype(dtype), (r - dtype(times * h) * v).astype(dtype)
            step = float(np.max(np.abs(up.astype(np.float64) - down.astype(np.float64)) / np.abs(v)))
            with np.errstate(all="ignore"):
                return (f(up).astype(np.float64) - f(down).astype(np.float64)) / step
        err, used = truncation_aware(exact, difference(1), difference(2), scale)
        return float(np.max(err)) if used.any() else 0.0

    results = {"jvp": [0.0, None], "hvp": [0.0, None]}
    if not k.rowwise:
        results["g''"] = [0.0, None]
    along = row_relations(k) if k.rowwise else []
    for _ in range(count // 10):
        for _tries in range(20):  # row-wise: no condition changes within the steps (2h along v)
            r, g, v = row(), *(np.array([rng.gauss(0, 1) for _ in range(8)], dtype=dtype)
                               for _ in range(2))
            if not along or not _row_flips(along, penv, [r - dtype(4 * h) * v, r,
                                                         r + dtype(4 * h) * v]):
                break
        y, dx = k(r, **kp), k.vjp(r, g, **kp)
        errs = {"jvp": compare(k.jvp(r, v, **kp), lambda p: k(p, **kp), r, v,
                               max(1.0, float(np.max(np.abs(y))))),
                "hvp": compare(k.vjp_vjp(r, g, v, **kp)[0], lambda p: k.vjp(p, g, **kp), r, v,
                               max(1.0, float(np.max(np.abs(dx)))))}
        if not k.rowwise:
            d = k.derivative(r, **kp)
            errs["g''"] = compare(k.derivative(r, order=2, **kp) * v,
                                  lambda p: k.derivative(p, **kp), r, v,
                                  max(1.0, float(np.max(np.abs(d)))))
        for name, e in errs.items():
            if e >= results[name][0]:
                results[name] = [e, _short(r.tolist())]
    return [FiniteDifferenceResult(f"{k.backend} {name}", dtype.__name__ if isinstance(dtype, type)
                                   else str(dtype), count // 10, e, bound * 8, where)
            for name, (e, where) in results.items()]

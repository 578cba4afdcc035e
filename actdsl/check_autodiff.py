"""``actdsl.check``'s checks of forward mode and second order (docs/autodiff.md): each backend's
``jvp``, elementwise ``derivative(order=2)`` and ``vjp_vjp`` against central differences of
the first-order results (the forward, ``derivative`` and ``vjp``), in the dtype checked."""
from __future__ import annotations

import numpy as np

from .check import FiniteDifferenceResult, _boundaries, _kernel_params, _short
from .derive import to_piecewise
from .stable import to_elementary


def higher_order(k, values, dtype, rng, count: int = 60) -> list[FiniteDifferenceResult]:
    kp = _kernel_params(values, dtype)
    eps = float(np.finfo(dtype).eps)
    h = eps ** (1 / 3)
    bound = 50 * eps ** (2 / 3)
    kinks = [] if k.rowwise else \
        [float(b) for b in _boundaries(to_elementary(to_piecewise(k.expr)))] + [0.0]

    def row():
        while True:
            r = np.array([rng.gauss(0, 2) for _ in range(8)], dtype=dtype)
            if all(abs(float(x) - c) > 20 * h * max(1.0, abs(float(x))) for x in r for c in kinks):
                return r

    def compare(name, exact, up, down, step, scale):
        """max relative error of ``exact`` against (up - down) / step, over the rows given."""
        fd = (up.astype(np.float64) - down.astype(np.float64)) / step
        return float(np.max(np.abs(exact.astype(np.float64) - fd)) / scale)

    results = {"jvp": [0.0, None], "hvp": [0.0, None]}
    if not k.rowwise:
        results["g''"] = [0.0, None]
    for _ in range(count // 10):
        r, g, v = row(), *(np.array([rng.gauss(0, 1) for _ in range(8)], dtype=dtype)
                           for _ in range(2))
        rp, rm = (r + dtype(h) * v).astype(dtype), (r - dtype(h) * v).astype(dtype)
        step = float(np.max(np.abs(rp.astype(np.float64) - rm.astype(np.float64)) / np.abs(v)))
        y, dx = k(r, **kp), k.vjp(r, g, **kp)
        errs = {"jvp": compare("jvp", k.jvp(r, v, **kp), k(rp, **kp), k(rm, **kp), step,
                               max(1.0, float(np.max(np.abs(y))))),
                "hvp": compare("hvp", k.vjp_vjp(r, g, v, **kp)[0], k.vjp(rp, g, **kp),
                               k.vjp(rm, g, **kp), step, max(1.0, float(np.max(np.abs(dx)))))}
        if not k.rowwise:
            d = k.derivative(r, **kp)
            errs["g''"] = compare("g''", k.derivative(r, order=2, **kp) * v,
                                  k.derivative(rp, **kp), k.derivative(rm, **kp), step,
                                  max(1.0, float(np.max(np.abs(d)))))
        for name, e in errs.items():
            if e >= results[name][0]:
                results[name] = [e, _short(r.tolist())]
    return [FiniteDifferenceResult(f"{k.backend} {name}", dtype.__name__ if isinstance(dtype, type)
                                   else str(dtype), count // 10, e, bound * 8, where)
            for name, (e, where) in results.items()]

"""Forward mode (JVP) for the Numba CPU backend: a row kernel generated from the plan.

``jvp_rows`` runs the forward's reduction passes (with argmax for row maxima), then one pass per
depth summing the reductions' tangents ``ṙ_k`` (a row maximum's is taken at its argmax), then one
pass writing ``ẏ`` (``actdsl/tangent.py`` has the formulas). It is a module of its own, built the
first time a kernel's ``jvp`` is called. Elementwise specs without parameters have a diagonal
Jacobian: their JVP is the VJP's flat loop, ``dx · g'(x)``.
"""
from __future__ import annotations

import numpy as np

from .emit import Source
from .numba_cpu import (ALIAS_CHECKS, HEADER, ROW_FLAGS, NumbaEmitter, Runner, Storage, _names,
                        _param_names, _reduction_passes, _row_prologue, bare_names, compiling,
                        jit_line)
from ..derive import Plan
from ..ir import RowMax
from .. import cache, parallel, tangent as tg


def _emitter(plan: Plan) -> NumbaEmitter:
    names = _names(plan)
    names[tg.DZ] = "v"
    names.update({q: q.name for q in tg.dparams(plan)})
    names.update({tg.dr(r.symbol): tg.dr(r.symbol).name for r in plan.grad_reductions()})
    return NumbaEmitter(names, anchor="nf")


def _open(src: Source, params: list[str], at: str = "j"):
    """Load z, v (z's tangent), the parameters and their tangents of element ``at``."""
    src(f"z = x[{at}]", f"v = gy[{at}]", *[f"{p} = P[{p[1:]}, {at}]" for p in params],
        *[f"q{p[1:]} = DP[{p[1:]}, {at}]" for p in params])


def _storage(plan: Plan) -> Storage:
    """Forward reduction passes, one tangent-sum pass per depth, the output pass."""
    bodies = tg.body_tangents(plan)
    sums = [[bodies[r.symbol] for r in g if r.has_gradient and r.kind is not RowMax]
            for g in plan.depths]
    D = len(plan.depths)
    return Storage(plan, [[r.body for r in g] for g in plan.depths] + sums
                   + [[tg.out_tangent(plan)]], reducing=set(range(2 * D)))


def generate(plan: Plan, key: str) -> tuple[str, int]:
    """The module's source and the number of scratch rows ``jvp_rows`` needs."""
    from . import vmath
    src = Source()
    src(HEADER.format(key=key, vmath=vmath.MODULES, checks=ALIAS_CHECKS))
    params = _param_names(plan)
    em = _emitter(plan)
    bodies = tg.body_tangents(plan)
    groups = [[r for r in g if r.has_gradient] for g in plan.depths]
    out = tg.out_tangent(plan)
    D = len(plan.depths)
    store = _storage(plan)
    cols = ["P", "DP"] if params else []  # parameters and their tangents, a column per row
    src(jit_line(ROW_FLAGS),
        f"def jvp_rows({', '.join(['X', 'GY', 'Y', *cols, 'T'])}):")
    src.indent()
    src("nn = X.shape[1]", "nf = vm.lit(X[0, 0], nn)")
    at = len(src.lines)
    src("for i in range(X.shape[0]):")
    src.indent()
    src("x = X[i]", "gy = GY[i]", "y = Y[i]")
    _reduction_passes(src, em, plan, params, store, argmax=True)
    for d, group in enumerate(groups):
        p = D + d
        sums = [r for r in group if r.kind is not RowMax]
        if sums:
            src(*[f"a_{tg.dr(r.symbol).name} = 0.0" for r in sums])
            store.precompute(src, em, p, params)
            texts = _loop(src, em, store, p, params, [bodies[r.symbol] for r in sums], "e")
            src(*[f"a_{tg.dr(r.symbol).name} += {t}" for r, t in zip(sums, texts)])
            src.dedent()
            src(*[f"{tg.dr(r.symbol).name} = vm.lit(nf, a_{tg.dr(r.symbol).name})" for r in sums])
        for r in group:
            if r.kind is RowMax:  # the tangent of the body at the row's argmax
                _open(src, params, at=f"i_{r.symbol.name}")
                lines, (t,) = em.block([bodies[r.symbol]], prefix="x")
                src(*lines, f"{tg.dr(r.symbol).name} = {t}")
    (t,) = _loop(src, em, store, 2 * D, params, [out], "o")
    src(f"y[j] = z if z != z else {t}")
    src.dedent()
    src.dedent()
    _row_prologue(src, em, at)
    src.dedent()
    src("")
    return bare_names(src.text()), len(store)


def _loop(src, em, store, p, params, exprs, prefix):
    src("for j in range(nn):")
    src.indent()
    _open(src, params)
    exprs = store.replace(exprs)
    src(*store.loop_head(em, p, exprs))
    lines, texts = em.block(exprs, prefix=prefix)
    src(*lines)
    return texts


class TangentRunner:
    """Calls ``jvp_rows`` on chunks of rows (or, for flat specs, the VJP's flat loop)."""

    def __init__(self, runner: Runner, plan: Plan, key: str):
        self.runner = runner
        self.flat = runner.flat
        if not self.flat:
            self.source, self.slots = generate(plan, key)
            self.module = cache.load(self.source)
            self._called = set()

    def jvp(self, xt, v, args, tangents):
        if self.flat:
            return self.runner.vjp(xt, v, args)[0]
        X, G = Runner._rows(xt), Runner._rows(v)
        y = np.empty(xt.shape, xt.dtype)
        Y = y.reshape(X.shape)
        units = X.shape[1]
        cols = Runner._columns(args, units, xt.dtype)
        dcols = Runner._columns([None, *tangents], units, xt.dtype)
        parts = parallel.chunks(X.shape[0], units)
        scratch = [np.empty((self.slots, units), xt.dtype) for _ in parts]
        key = np.dtype(xt.dtype)
        kernel = self.module.jvp_rows
        def args(i, lo, hi):
            return X[lo:hi], G[lo:hi], Y[lo:hi], *cols, *dcols, scratch[i]
        if key in self._called:
            parallel.run(kernel, args, parts)
        else:  # the first call compiles: its cache files are checked before and sealed after
            with compiling(self.module):
                parallel.run(kernel, args, parts)
            self._called.add(key)
        return y


"""The ``actdsl`` command."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from . import compile as compile_spec, latex
from .errors import ActdslError

DEMO_SPECS = ["relu", "softplus", "tanh+norm:z", "maxout:3", "prelu(r=0.1)+softmax"]


def _demo(args) -> int:
    """Compile a few specs, show their formulas and check their gradients by finite differences."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6)) * 2
    g = rng.normal(size=x.shape)
    print(f"actdsl demo: {len(DEMO_SPECS)} specs on a 4x6 float64 array\n")
    worst = 0.0
    for text in DEMO_SPECS:
        k = compile_spec(text, backend=args.backend)
        params = k.init_params(x.shape[-1], rng=1)
        y = k(x, **params)
        dx = k.vjp(x, g, **params)
        h = 1e-6
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[idx] += h
            xm[idx] -= h
            fd[idx] = np.sum(g * (k(xp, **params) - k(xm, **params))) / (2 * h)
        err = float(np.max(np.abs(dx - fd)) / max(1.0, float(np.max(np.abs(fd)))))
        worst = max(worst, err)
        print(f"{k.text:<22} g(z) = {latex(text)}")
        print(f"{'':<22} y[0] = {np.array2string(y[0], precision=3, suppress_small=True)}")
        print(f"{'':<22} vjp vs finite differences: max rel. error {err:.1e}\n")
    ok = worst < 1e-5
    print("all gradients agree" if ok else "GRADIENT MISMATCH")
    return 0 if ok else 1


def _show(args) -> int:
    k = compile_spec(args.spec, backend=args.backend)
    print(f"spec:       {k.text}")
    print(f"kind:       {'row-wise' if k.rowwise else 'elementwise'}")
    print(f"g(z):       {latex(k.text)}")
    print(f"derivative: {latex(k.text, derivative=True)}")
    for p in k.params:
        print(f"parameter:  {p.name}, shape per unit {p.shape}: {p.description}")
    return 0


def _latex(args) -> int:
    print(latex(args.spec, derivative=args.derivative))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actdsl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="compile a few specs and check their gradients")
    p.add_argument("--backend", default="numpy", choices=["numpy", "numba"])
    p.set_defaults(run=_demo)
    p = sub.add_parser("show", help="canonical form, formula, derivative and parameters of SPEC")
    p.add_argument("spec")
    p.add_argument("--backend", default="numpy")
    p.set_defaults(run=_show)
    p = sub.add_parser("latex", help="LaTeX of SPEC")
    p.add_argument("spec")
    p.add_argument("--derivative", action="store_true")
    p.set_defaults(run=_latex)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ActdslError as e:
        print(f"actdsl: error: {e}", file=sys.stderr)
        return 1

"""norm:z on rows whose mean is far above their spread, N(mu, 1): the largest error, in units of
the dtype's epsilon (outputs are O(1), so absolute and relative agree), against an mpmath truth,
for actdsl (NumPy and Numba backends) and, where installed, torch.

    python benchmarks/row_accuracy.py [--rows 8] [--n 1024]

torch's layer_norm-style ``(x - x.mean()) / (x.std(unbiased=False) + eps)`` loses eps*|mu|/sigma:
its mean is rounded to the dtype, and every x - mean carries that rounding. actdsl shifts each row
by its maximum (exact for values within a factor 2 of it) and corrects with the mean of the
shifted values (two-pass), so the error does not grow with mu (docs/numerics.md states the bound).
"""
from __future__ import annotations

import argparse
import platform

import mpmath
import numpy as np

import actdsl

EPS = 1e-8


def truth(x: np.ndarray) -> np.ndarray:
    """norm:z of each row, at 50 digits, from the floats as given."""
    mpmath.mp.dps = 50
    out = np.empty(x.shape, np.float64)
    for i, row in enumerate(x):
        v = [mpmath.mpf(float(a)) for a in row]
        m = mpmath.fsum(v) / len(v)
        sd = mpmath.sqrt(mpmath.fsum((a - m) ** 2 for a in v) / len(v))
        out[i] = [float((a - m) / (sd + mpmath.mpf(EPS))) for a in v]
    return out


def torch_norm_z(x: np.ndarray):
    try:
        import torch
    except ImportError:
        return None
    t = torch.from_numpy(x)
    m = t.mean(-1, keepdim=True)
    return ((t - m) / (t.std(-1, unbiased=False, keepdim=True) + EPS)).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--n", type=int, default=1024)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}; "
          f"max |error| / eps of norm:z on N(mu, 1), {args.rows} rows of {args.n}")
    print("dtype    mu      actdsl-numpy  actdsl-numba  torch")
    for dtype in (np.float64, np.float32):
        eps = np.finfo(dtype).eps
        for mu in (0.0, 1e2, 1e4, 1e6):
            x = (mu + rng.standard_normal((args.rows, args.n))).astype(dtype)
            t = truth(x)
            errs = []
            for backend in ("numpy", "numba"):
                y = actdsl.compile("norm:z", backend=backend)(x)
                errs.append(np.max(np.abs(y.astype(np.float64) - t)) / eps)
            ty = torch_norm_z(x)
            tor = np.max(np.abs(ty.astype(np.float64) - t)) / eps if ty is not None else float("nan")
            print(f"{np.dtype(dtype).name:8} {mu:<7.0e} {errs[0]:12.1f}  {errs[1]:12.1f}  {tor:8.1f}")


if __name__ == "__main__":
    main()

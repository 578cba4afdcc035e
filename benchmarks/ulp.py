"""Worst error, in ULP against mpmath, of the Numba backend's elementary functions over the whole
finite range of float32 and float64 (every binade, both signs, subnormals, special points).

    python benchmarks/ulp.py [--points 3000]
"""
import argparse
import sys
from pathlib import Path

import mpmath as mp
import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_vmath import FUNCS, grid, ufunc, ulp_error  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=3000)
    args = ap.parse_args()
    mp.mp.dps = 40
    print(f"{'function':<10} {'float32 ULP':>12} {'at':>14} {'float64 ULP':>12} {'at':>14}")
    for name, f in FUNCS.items():
        cells = []
        for dtype in (np.float32, np.float64):
            x = grid(dtype, args.points, np.random.default_rng(11))
            if name == "log":
                x = np.abs(x)
            if name == "log1p":
                x = np.where(x < -1, -x, x).astype(dtype)
            with np.errstate(all="ignore"):
                y = ufunc(name)(x)
            errs = [ulp_error(yi, f(mp.mpf(float(xi))), dtype) for xi, yi in zip(x, y)]
            i = int(np.argmax(errs))
            cells += [f"{errs[i]:12.2f}", f"{float(x[i]):14.6g}"]
        print(f"{name:<10} " + " ".join(cells))


if __name__ == "__main__":
    main()

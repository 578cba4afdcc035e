"""actdsl.check on every built-in: the full grid (every binade) from the command line.

    python benchmarks/check_all.py [--dtype float32] [--full] [--json FILE] [--keys gelu ...]

Prints one line per key: the worst forward and derivative errors in ULP (elementwise) or in ε of
the row's scale (row-wise) over the numpy and numba backends, and PASS/FAIL of every part.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from actdsl.check import check
from actdsl.registry import REGISTRY


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", action="append", choices=["float32", "float64"])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--keys", nargs="+", help="only these specs (default: every built-in)")
    args = ap.parse_args(argv)
    keys = args.keys or [d.key if d.key != "maxout" else "maxout:3"
                         for d in REGISTRY.definitions() if d.builtin]
    out, failed = [], 0
    print(f"{'key':<14}{'dtype':<9}{'fwd max':>9}{'fwd cond':>9}{'der max':>9}{'der cond':>9}"
          f"{'subnormal':>10}  result  s")
    for key in keys:
        for dtype in args.dtype or ["float32", "float64"]:
            t = time.time()
            r = check(key, dtype=dtype, full=args.full)
            fw = [x for x in r.numeric if x.what == "forward"]
            dv = [x for x in r.numeric if x.what in ("derivative", "vjp")]
            row = dict(key=key, dtype=dtype, passed=r.passed,
                       forward_max=max(x.max_error for x in fw),
                       forward_cond=max(x.conditioned for x in fw),
                       derivative_max=max(x.max_error for x in dv),
                       derivative_cond=max(x.conditioned for x in dv),
                       subnormal=max(x.subnormal_points for x in r.numeric),
                       points=max(x.points for x in r.numeric), seconds=time.time() - t)
            out.append(row)
            failed += not r.passed
            print(f"{key:<14}{dtype:<9}{row['forward_max']:>9.2f}{row['forward_cond']:>9.2f}"
                  f"{row['derivative_max']:>9.2f}{row['derivative_cond']:>9.2f}{row['subnormal']:>10}"
                  f"  {'PASS' if r.passed else 'FAIL':<6}{row['seconds']:>4.0f}", flush=True)
            if not r.passed:
                print(r, file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"{len(out) - failed}/{len(out)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Longer spec fuzzing than the test suite runs: random text and grammar-shaped specs for a while,
checking that only actdsl.ActdslError is raised, that nothing hangs, and that valid specs compile
and give a forward and a VJP; with a backend other than numpy, that both agree with the NumPy
backend's (a Numba VJP that loaded a value before computing it was found this way).

    python benchmarks/fuzz.py --seconds 300 [--backend numba]

With budgets raised (as a user told by a BudgetError would), the paths behind them are fuzzed too:

    ACTDSL_BUDGET_BRANCH_CONDITIONS=512 ACTDSL_BUDGET_EXPRESSION_NODES=80000 \
        python benchmarks/fuzz.py --seconds 420 --backend numba
"""
import argparse
import random
import sys
import time
import traceback

import numpy as np

import actdsl
from actdsl.registry import REGISTRY

PIECES = ["relu", "tanh", "norm:z", "softmax", "maxout:2", "elu(alpha=0.5)", "prelu(r=0.1)",
          "{z * sigmoid(z)}", "{max(z, 0)}", "{z - mean(z)}", "+", "(", ")", "{", "}", "[", "]",
          ":", "=", ",", "z", "**", "*", "-", "/", "1e9", "-0.0", "__", "'", '"', ".", " "]


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))
    return "".join(chr(rng.randint(32, 0x2FF)) for _ in range(rng.randint(0, 40)))


def grammar_spec(rng: random.Random, keys) -> str:
    terms = []
    for _ in range(rng.randint(1, 3)):
        d = REGISTRY.lookup(rng.choice(keys))
        args = [f"{h.name}={rng.randint(1, 3) if h.integer else round(rng.uniform(0.05, 2), 3)}"
                for h in d.hyper if rng.random() < 0.5]
        terms.append(d.key + (f"({', '.join(args)})" if args else ""))
    return "+".join(terms)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    keys = sorted(d.key for d in REGISTRY.definitions())
    x = np.linspace(-3, 3, 24).reshape(4, 6)
    counts = {"texts": 0, "rejected": 0, "valid": 0}
    end = time.time() + args.seconds
    while time.time() < end:
        for text, must_compile in ((random_text(rng), False), (grammar_spec(rng, keys), True)):
            counts["texts"] += 1
            t = time.perf_counter()
            got = None
            try:
                k = actdsl.compile(text, backend=args.backend)
                params = k.init_params(6)
                with np.errstate(all="ignore"):
                    got = (k(x, **params), k.vjp(x, np.cos(x), **params))
                counts["valid"] += 1
            except actdsl.ActdslError as e:
                counts["rejected"] += 1
                # a drawn hyper-parameter may be out of its range (hardtanh's min_val above 1),
                # and piecewise terms composed may go over a compile budget: both documented
                if must_compile and not isinstance(e, (actdsl.ParameterError, actdsl.BudgetError)):
                    print(f"valid spec rejected: {text!r}")
                    traceback.print_exc()
                    return 1
            except Exception:
                print(f"non-actdsl error for {text!r}")
                traceback.print_exc()
                return 1
            if args.backend != "numpy" and got is not None:
                ref = actdsl.compile(text, backend="numpy")
                with np.errstate(all="ignore"):
                    want = (ref(x, **params), ref.vjp(x, np.cos(x), **params))
                for what, a, b in zip(("forward", "vjp"), got, want):
                    if not np.allclose(a, b, rtol=1e-9, atol=1e-9 * max(1.0, np.nanmax(np.abs(b))),
                                       equal_nan=True):
                        print(f"{args.backend} and numpy disagree on {text!r} ({what}): {a} vs {b}")
                        return 1
            if time.perf_counter() - t > 30:
                print(f"slow: {text!r} took {time.perf_counter() - t:.1f} s")
                return 1
    print(f"fuzzed {counts['texts']} specs in {args.seconds:.0f} s: {counts['valid']} compiled and "
          f"ran, {counts['rejected']} rejected with an ActdslError, nothing else raised")
    return 0


if __name__ == "__main__":
    sys.exit(main())

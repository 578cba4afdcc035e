"""Compile cost (issue 19): a hypothesis search for the slowest spec under 200 characters, and
the cold compile time of random compositions of up to six built-in terms.

    python benchmarks/slow_specs.py --search 300            # seconds of targeted search
    python benchmarks/slow_specs.py --compositions 100      # random 1..6-term compositions
    python benchmarks/slow_specs.py --search 20 --compositions 10   # the short version (CI)

Each compile is a spec this process has not compiled (actdsl's kernel cache does not hold it;
SymPy's own caches are warm after the first few), timed from text to a kernel whose forward and
VJP have both run once, on the backend given (numba: a fresh, empty cache directory, so Numba
compiles too). Before the timed compiles, one spec per function of actdsl's vectorized math
library is compiled (``WARM_UP``; its time is reported as ``warm_up_s``): those functions are
compiled once per machine and loaded from the cache afterwards, so that the first composition
using gelu does not carry the library's one-time cost (``--no-warm-up`` leaves it in). A compile
still running after --hang seconds is stopped (SIGALRM) and reported as a hang. Refusals (BudgetError and the other ActdslErrors) are timed like successes: the budget's
promise is that a refusal comes fast. Writes benchmarks/results/slow_specs.json.
"""
import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ACTDSL_CACHE_DIR", tempfile.mkdtemp(prefix="actdsl-slow-specs-"))

import actdsl  # noqa: E402
from actdsl.registry import REGISTRY  # noqa: E402

KEYS = sorted(d.key for d in REGISTRY.definitions() if d.builtin)
FORMULAS = ["{z**z**z}", "{z*sigmoid(z)}", "{max(z, 0)**2}", "{where(z > 0, z, exp(z) - 1)}",
            "{z - mean(z)}", "{clip(z, -1, 1)}", "{abs(z)**0.5}", "{tanh(z)*softplus(z)}",
            "{(z > 0)*z + (z <= 0)*0.1*z}", "{min(z, 1)}", "{z**7}", "{9**9*z}"]


#: single terms that between them use every function of actdsl's vectorized math (backends/vmath.py)
WARM_UP = ["tanh", "gelu", "softplus", "sigmoid", "softsign", "elu", "mish", "tanhshrink", "selu",
           "{erf(z)}", "{log(z)}", "{log1p(z)}", "{expm1(z)}", "{exp(z)}", "norm:z", "softmax",
           "{sin(z)}", "{cos(z)}"]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def timed_compile(spec: str, backend: str, hang: float) -> tuple[float, str]:
    """Seconds from text to forward + VJP done, and the outcome ('ok', an error class, 'hang')."""
    x = np.linspace(-3, 3, 24).reshape(4, 6)
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, hang)
    t = time.perf_counter()
    try:
        k = actdsl.compile(spec, backend=backend)
        p = k.init_params(6)
        k(x, **p)
        k.vjp(x, x, **p)
        outcome = "ok"
    except Hang:
        outcome = "hang"
    except actdsl.ActdslError as e:
        outcome = type(e).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return time.perf_counter() - t, outcome


def random_term(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(FORMULAS)
    key = rng.choice(KEYS)
    if key == "maxout":
        return f"maxout:{rng.randint(2, 12)}"
    d = REGISTRY.lookup(key)
    args = [f"{h.name}={rng.randint(1, 3) if h.integer else round(rng.uniform(0.05, 2), 3)}"
            for h in d.hyper if rng.random() < 0.3 and h.name != "pieces"]
    return key + (f"({', '.join(args)})" if args else "")


def compositions(count: int, backend: str, hang: float, seed: int = 0) -> dict:
    rng = random.Random(seed)
    rows = []
    seen = set()
    while len(rows) < count:
        terms = [random_term(rng) for _ in range(rng.randint(1, 6))]
        spec = "+".join(terms)
        if spec in seen:
            continue
        seen.add(spec)
        seconds, outcome = timed_compile(spec, backend, hang)
        rows.append({"spec": spec, "terms": len(terms), "seconds": round(seconds, 3),
                     "outcome": outcome})
        print(f"{seconds:7.2f} s  {outcome:<18} {spec}", flush=True)
    times = [r["seconds"] for r in rows]
    return {"count": len(rows), "median_s": float(np.median(times)), "max_s": max(times),
            "over_1s": sum(t > 1 for t in times),
            "refused": sum(r["outcome"] != "ok" for r in rows),
            "slowest": sorted(rows, key=lambda r: -r["seconds"])[:10]}


def search(seconds: float, backend: str, hang: float) -> dict:
    """hypothesis, steered by target() toward slower compiles."""
    from hypothesis import HealthCheck, given, settings, strategies as st, target

    fragment = st.one_of(st.sampled_from(KEYS), st.sampled_from(FORMULAS),
                         st.integers(2, 64).map(lambda k: f"maxout:{k}"),
                         st.integers(1, 30).map(lambda k: "{" + "**".join(["z"] * k) + "}"))
    worst = {"seconds": 0.0}
    stop = time.perf_counter() + seconds
    tried = [0]

    @settings(max_examples=10 ** 6, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(fragment, min_size=1, max_size=12).map("+".join)
           .filter(lambda s: len(s) < 200))
    def probe(spec):
        if time.perf_counter() > stop:
            return
        took, outcome = timed_compile(spec, backend, hang)
        tried[0] += 1
        target(took)
        if took > worst["seconds"]:
            worst.update(spec=spec, seconds=round(took, 3), outcome=outcome)
            print(f"worst so far {took:7.2f} s  {outcome:<18} {spec}", flush=True)
        if time.perf_counter() > stop:
            raise KeyboardInterrupt  # hypothesis has no time limit: end the run here

    try:
        probe()
    except KeyboardInterrupt:
        pass
    return {"tried": tried[0], "worst": worst}


def machine() -> dict:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines()
                      if l.startswith("Model name")), platform.processor())
    except OSError:
        model = platform.processor()
    import numba
    import sympy
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "numba": numba.__version__, "sympy": sympy.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--search", type=float, default=0, help="seconds of targeted search")
    ap.add_argument("--compositions", type=int, default=0, help="random compositions to time")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "numba"])
    ap.add_argument("--hang", type=float, default=120, help="seconds before a compile is a hang")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="time the math library's one-time compile inside the first specs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "slow_specs.json"))
    args = ap.parse_args()
    report = {"machine": machine(), "backend": args.backend,
              "budgets": {k: v[0] for k, v in actdsl.budget.DEFAULTS.items()}}
    if not args.no_warm_up:
        start = time.perf_counter()
        for spec in WARM_UP:
            timed_compile(spec, args.backend, args.hang)
        report["warm_up_s"] = round(time.perf_counter() - start, 2)
        print(f"warm-up (math library, {len(WARM_UP)} specs): {report['warm_up_s']} s", flush=True)
    if args.compositions:
        report["compositions"] = compositions(args.compositions, args.backend, args.hang)
    if args.search:
        report["search"] = search(args.search, args.backend, args.hang)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "budgets"}, indent=1)[:3000])
    hangs = [r for r in report.get("compositions", {}).get("slowest", []) if r["outcome"] == "hang"]
    sys.exit(1 if hangs or report.get("search", {}).get("worst", {}).get("outcome") == "hang" else 0)


if __name__ == "__main__":
    main()

"""actdsl benchmark: forward and VJP of the seed keys and a few compositions, next to memcpy and
every peer that is installed, all measured in one run; plus compile and load times.

    python benchmarks/bench.py                      # 4096x4096 float32, all specs, table + JSON
    python benchmarks/bench.py --dtype float64 --size 2048 --specs relu tanh+norm:z
    python benchmarks/bench.py --compile-only       # cold compile / warm load per spec

Times are medians of ``--repeat`` rounds after one warm-up; in each round every implementation
(and memcpy) runs once, in turn, so that a shared machine's drifting load falls on all alike. actdsl writes into a preallocated
``out=`` (its API offers it; peers allocate their results, which costs page faults here). GB/s counts the bytes an ideal
kernel moves (forward: read x, write y; VJP: read x and dy, write dx). "x copy" divides by
the time np.copyto takes to move the same number of bytes (measured in this run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

import actdsl  # noqa: E402

SEED = ["linear", "sigmoid", "logistic", "tanh", "softplus", "softmax", "relu", "trel", "trec",
        "tlin", "rect:min", "rect:max", "norm:mean", "norm:max", "norm:std", "norm:z", "prelu",
        "lgrelu", "maxout:3"]
SPECS = SEED + ["tanh+norm:z", "softplus+norm:z", "relu+softmax"]


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


SETTLE_S = 0.05


def interleaved_ms(fns: dict, repeat: int) -> dict:
    """Median ms of each callable, timed in rounds (each once per round, in turn): on a shared,
    drifting machine this keeps the ratios between them honest. Each call starts after a pause
    of SETTLE_S, untimed: JAX's worker threads keep spinning after a call, and measured here
    they slowed whatever ran next (actdsl's softplus+norm:z: 24 ms alone, 31 to 36 ms right
    after a JAX call, 24 ms after a 50 ms pause)."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            time.sleep(SETTLE_S)
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def load_peers(specs, dtype):
    table = {"numpy": peers.NUMPY}
    for name, make in [("torch", peers.torch_table), ("jax", lambda: peers.jax_table(dtype)),
                       ("numexpr", peers.numexpr_table)]:
        try:
            table[name] = make()
        except ImportError:
            print(f"({name} not installed: skipped)", file=sys.stderr)
    table["lambdify"] = peers.lambdify_table(specs)
    return table


def convert_params(name, p, dtype):
    if name == "torch":
        import torch
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.items()}
    if name == "jax":
        import jax.numpy as jnp
        return {k: jnp.asarray(v) for k, v in p.items()}
    return p


def as_numpy(r) -> np.ndarray:
    """A peer's result (NumPy, PyTorch or JAX array) as a NumPy array."""
    if hasattr(r, "detach"):
        r = r.detach()
    return np.asarray(r)


def convert_array(name, a):
    if name == "torch":
        import torch
        return torch.from_numpy(a)
    if name == "jax":
        import jax.numpy as jnp
        return jnp.asarray(a)
    return a


def run_speed(args) -> list[dict]:
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(args.size, args.size)) * 2).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    out = np.empty_like(x)
    copy_ms = median_ms(lambda: np.copyto(out, x), args.repeat)
    nbytes = x.nbytes
    table = load_peers(args.specs, dtype)
    rows = []
    print(f"# {args.size}x{args.size} {dtype}, median of {args.repeat}; memcpy (np.copyto) "
          f"{copy_ms:.2f} ms = {2 * nbytes / copy_ms / 1e6:.1f} GB/s\n")
    header = f"{'spec':<16} {'impl':<10} {'fwd ms':>8} {'GB/s':>6} {'x copy':>6}   " \
             f"{'vjp ms':>8} {'GB/s':>6} {'x copy':>6}"
    print(header)
    print("-" * len(header))
    for spec in args.specs:
        kernel = actdsl.compile(spec, backend="numba")
        p = {k: v.astype(dtype) for k, v in kernel.init_params(args.size, rng=1).items()}
        impls = {"actdsl": (lambda x_, p_: kernel(x_, out=out, **p_),
                            lambda x_, g_, p_: kernel.vjp(x_, g_, out=out, **p_))}
        for name, t in table.items():
            if spec in t:
                impls[name] = t[spec]
        calls = {}
        for name, (f, b) in impls.items():
            xa, ga, pa = convert_array(name, x), convert_array(name, g), convert_params(name, p, dtype)
            try:  # a peer that cannot run this spec on this machine is left out
                got = [as_numpy(f(xa, pa)), as_numpy(b(xa, ga, pa))]
            except Exception as e:
                print(f"{spec:<16} {name:<10} failed: {type(e).__name__}: {e}"[:120])
                continue
            wrong = [r.dtype for r in got if r.dtype != dtype]
            if wrong:  # a peer computing in another precision is not measured against this one
                print(f"{spec:<16} {name:<10} left out: it returns {wrong[0]}, not {dtype}")
                continue
            calls[(name, "f")] = lambda f=f, xa=xa, pa=pa: f(xa, pa)
            calls[(name, "b")] = lambda b=b, xa=xa, ga=ga, pa=pa: b(xa, ga, pa)
        calls[("memcpy", "f")] = lambda: np.copyto(out, x)
        timed = interleaved_ms(calls, args.repeat)
        copy_ms = timed[("memcpy", "f")]  # this spec's rounds: the same load as its contenders
        results = {}
        for name in impls:
            if (name, "f") not in timed:
                continue
            fwd, bwd = timed[(name, "f")], timed[(name, "b")]
            results[name] = (fwd, bwd)
            row = dict(spec=spec, impl=name, dtype=str(dtype), size=args.size, memcpy_ms=copy_ms,
                       forward_ms=fwd, forward_gbs=2 * nbytes / fwd / 1e6,
                       forward_x_copy=fwd / copy_ms, vjp_ms=bwd,
                       vjp_gbs=3 * nbytes / bwd / 1e6, vjp_x_copy=bwd / (1.5 * copy_ms))
            rows.append(row)
            print(f"{spec:<16} {name:<10} {fwd:8.2f} {row['forward_gbs']:6.1f} "
                  f"{row['forward_x_copy']:6.2f}   {bwd:8.2f} {row['vjp_gbs']:6.1f} "
                  f"{row['vjp_x_copy']:6.2f}")
        others = {k: v for k, v in results.items() if k != "actdsl"}
        if others and "actdsl" in results:
            best_f = min(others, key=lambda k: others[k][0])
            best_b = min(others, key=lambda k: others[k][1])
            ours = results["actdsl"]
            print(f"{'':<16} {'':<10} fastest peer: fwd {best_f} {ours[0] / others[best_f][0]:.2f}x,"
                  f" vjp {best_b} {ours[1] / others[best_b][1]:.2f}x (actdsl time / peer time)")
    return [dict(memcpy_ms=copy_ms)] + rows


COMPILE_SCRIPT = """
import sys, time, json
import numpy as np, actdsl
x = np.linspace(-3, 3, 64, dtype=np.float32).reshape(8, 8)
t0 = time.perf_counter()
actdsl.compile("softsign", backend="numba")(x)       # one-time process set-up, not per spec
t1 = time.perf_counter()
res = {"setup_s": t1 - t0}
for spec in sys.argv[1:]:
    t = time.perf_counter()
    k = actdsl.compile(spec, backend="numba")
    k(x, **k.init_params(8))
    res[spec] = time.perf_counter() - t
print(json.dumps(res))
"""


def run_compile(args) -> dict:
    """Cold: a new process, an empty cache directory. Warm: a new process, the same directory.
    Each of ``--compile-rounds`` rounds uses its own directory; per spec, the median round."""
    specs = args.specs
    rounds = []
    for _ in range(args.compile_rounds):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "ACTDSL_CACHE_DIR": cache}
            runs = {}
            for label in ("cold", "warm"):
                out = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, *specs], env=env,
                                     capture_output=True, text=True, check=True)
                runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
            rounds.append(runs)
    runs = {label: {key: statistics.median(r[label][key] for r in rounds) for key in rounds[0][label]}
            for label in ("cold", "warm")}
    print(f"\n# compile (parse to machine code, forward float32) and load, seconds "
          f"(median of {len(rounds)} rounds)")
    print(f"one-time process set-up (first kernel): cold {runs['cold']['setup_s']:.2f}, "
          f"warm {runs['warm']['setup_s']:.2f}")
    print(f"{'spec':<16} {'cold':>6} {'warm':>6}")
    for spec in specs:
        print(f"{spec:<16} {runs['cold'][spec]:6.2f} {runs['warm'][spec]:6.2f}")
    cold = [runs["cold"][s] for s in specs]
    warm = [runs["warm"][s] for s in specs]
    print(f"{'median':<16} {statistics.median(cold):6.2f} {statistics.median(warm):6.3f}")
    return runs


def run_peak(args) -> dict:
    """Peak memory NumPy allocates during calls on a 2 GiB float32 array (numba backend), in
    multiples of the array: with out= nothing full-size should appear; without, just the result."""
    import tracemalloc

    rows = args.peak_gib * 2 ** 30 // (4 * 4096)
    x = np.empty((rows, 4096), np.float32)
    for i in range(0, rows, 4096):  # cheap, varied values without a full-size temporary
        x[i:i + 4096] = np.sin(np.arange(4096 * min(4096, rows - i), dtype=np.float32)).reshape(-1, 4096) * 3
    g = x  # a contiguous dy (a strided one is first copied to contiguous rows)
    out = np.empty_like(x)
    print(f"\n# peak memory allocated during one call on {x.nbytes / 2**30:.0f} GiB float32, "
          f"in multiples of the array (numba backend)")
    print(f"{'spec':<16} {'fwd out=':>9} {'fwd new':>8} {'vjp out=':>9} {'vjp new':>8}")
    res = {}
    for spec in ("tanh", "softmax", "prelu", "tanh+norm:z"):
        k = actdsl.compile(spec, backend="numba")
        p = {n: v.astype(np.float32) for n, v in k.init_params(4096).items()}
        peaks = []
        for call in (lambda: k(x, out=out, **p), lambda: k(x, **p),
                     lambda: k.vjp(x, g, out=out, **p), lambda: k.vjp(x, g, **p)):
            call()  # compiled, warm
            tracemalloc.start()
            call()
            peaks.append(tracemalloc.get_traced_memory()[1] / x.nbytes)
            tracemalloc.stop()
        res[spec] = peaks
        print(f"{spec:<16} " + " ".join(f"{v:9.3f}" for v in peaks))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--specs", nargs="+", default=SPECS)
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-rounds", type=int, default=3,
                    help="cold/warm compile rounds, each in new processes with a new cache")
    ap.add_argument("--peak-gib", type=int, default=0, help="also measure peak memory on an array "
                    "of this many GiB (make bench uses 2)")
    ap.add_argument("--json", default=None, help="where to write results (default benchmarks/results/)")
    args = ap.parse_args(argv)
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "numpy": np.__version__, "actdsl": actdsl.__version__}
    if not args.compile_only:
        result["speed"] = run_speed(args)
    if not args.no_compile:
        result["compile"] = run_compile(args)
    if args.peak_gib:
        result["peak"] = run_peak(args)
    path = Path(args.json or Path(__file__).parent / "results" / f"bench-{args.dtype}-{args.size}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

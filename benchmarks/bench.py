"""actdsl benchmark: forward and VJP of the seed keys and a few compositions, next to memcpy and
every peer that is installed, all measured in one run; per-call time on a small array; compile and
load times.

    python benchmarks/bench.py                      # 4096x4096 float32, all specs, table + JSON
    python benchmarks/bench.py --dtype float64 --size 2048 --specs relu tanh+norm:z
    python benchmarks/bench.py --compile-only       # cold compile / warm load per spec

Like is timed against like: a call that allocates its result ("new": ``k(x)``, NumPy, PyTorch
eager, JAX jit, numexpr, SymPy lambdify) against the others that do, a call writing into a
preallocated array ("out=": ``k(x, out=y)``) against the peers that offer that (``np.tanh(x,
out=)``, ``torch.tanh(x, out=)``, ``numexpr.evaluate(..., out=)``). Times are medians of
``--repeat`` rounds after one warm-up; in each round every call (and memcpy, and ``x.copy()``) runs
once, in a new order, each after a 50 ms pause and a 3 ms wake-up of every core (``--no-wake``:
without it), so that a shared machine's drifting load falls on all alike. "x copy" divides by the
time np.copyto takes to move the same bytes; "new/(out= + copy's allocation)" is the allocating
forward over the out= forward plus what ``x.copy()`` pays over ``np.copyto`` (page faults: the cost
of a fresh result). The output starts with the CPU model, its vector extensions, the vector
width actdsl compiles for, the threads and the library versions: a figure is a claim about them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

import actdsl  # noqa: E402

SEED = ["linear", "sigmoid", "logistic", "tanh", "softplus", "softmax", "relu", "trel", "trec",
        "tlin", "rect:min", "rect:max", "norm:mean", "norm:max", "norm:std", "norm:z", "prelu",
        "lgrelu", "maxout:3"]
SPECS = SEED + ["tanh+norm:z", "softplus+norm:z", "relu+softmax", "gelu", "silu"]


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


SETTLE_S = 0.05
#: after the pause, every CPU is kept busy this long, untimed, right before the timed call: on
#: this project's KVM guests a core idle for 50 ms or more wakes late (a thread handed work after
#: a 50 ms pause started 1.4-3.6 ms later, after 20 ms 0.14 ms) and runs slower for a while (the
#: same work 12 ms against 8), which charged every multi-threaded call (actdsl's, PyTorch's,
#: JAX's) a cost that a loop calling it back to back never pays (gelu into out=, two threads:
#: 5.1 ms called back to back, 9.9 ms after a 50 ms pause)
WAKE_S = 0.003


def _spinner():
    from numba import njit

    @njit(nogil=True, cache=False)
    def spin(n):
        s = 0.0
        for _ in range(n):
            s = s * 0.999999 + 1.0
        return s

    spin(1)
    n = 1 << 16
    while True:  # iterations for WAKE_S
        t = time.perf_counter()
        spin(n)
        if time.perf_counter() - t > WAKE_S / 4:
            break
        n *= 2
    n = int(n * WAKE_S / (time.perf_counter() - t))
    return lambda: spin(n)


_SPIN = None


def wake_cores() -> None:
    """Keep every CPU busy for about WAKE_S (GIL-free threads), then return."""
    global _SPIN
    if _SPIN is None:
        _SPIN = _spinner()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = [threading.Thread(target=_SPIN) for _ in range(cpus or 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def interleaved_ms(fns: dict, repeat: int, seed: int = 0, settle: float | None = None,
                   warm_up: bool = True, wake: bool = True) -> dict:
    """Median ms of each callable, timed in rounds (each once per round): on a shared, drifting
    machine this keeps the ratios between them honest. Each call starts after a pause of
    SETTLE_S, untimed: JAX's worker threads keep spinning after a call, and measured here they
    slowed whatever ran next (actdsl's softplus+norm:z: 24 ms alone, 31 to 36 ms right after a
    JAX call, 24 ms after a 50 ms pause). The order is new each round (seeded): in a fixed order,
    what ran just before a call still moved it, pause or not (torch.softmax into out=, 4096x4096
    float32, timed right after actdsl's softmax 11.8-12.3 ms, right after np.copyto 9.0-9.1 ms,
    in the same rounds). After the pause every CPU is woken (``wake_cores``, WAKE_S busy), so
    that a call is timed on awake cores, as in a loop. ``settle``: the pause (default SETTLE_S);
    ``warm_up``: call each once, untimed, first; ``wake``: wake the cores after the pause.
    benchmarks/torch_wrapper.py times its training steps with this too."""
    settle = SETTLE_S if settle is None else settle
    if warm_up:
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(seed)
    for _ in range(repeat):
        rng.shuffle(order)
        for k in order:
            f = fns[k]
            if settle:
                time.sleep(settle)
                if wake:
                    wake_cores()
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def load_peers(specs, dtype):
    """Allocating peers (every spec they can express) and the ``out=`` ones (where they offer it)."""
    table = {"numpy": peers.NUMPY}
    out_table = {"numpy": peers.numpy_out_table()}
    for name, make, make_out in [("torch", peers.torch_table, peers.torch_out_table),
                                 ("jax", lambda: peers.jax_table(dtype), None),
                                 ("numexpr", peers.numexpr_table, peers.numexpr_out_table)]:
        try:
            table[name] = make()
            if make_out is not None:
                out_table[name] = make_out()
        except ImportError:
            print(f"({name} not installed: skipped)", file=sys.stderr)
    table["lambdify"] = peers.lambdify_table(specs)
    return table, out_table


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


def machine() -> dict:
    """What the figures are a claim about: CPU model, vector extensions, what actdsl compiles
    for, threads, library versions."""
    from actdsl import parallel
    from actdsl.backends import wide
    model, flags = platform.processor() or platform.machine(), []
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                     if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in info.splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    vector = [f for f in flags if f in ("sse4_2", "avx", "avx2", "fma") or f.startswith("avx512")]
    cpu, features = wide.host()
    width = 512 if "+avx512f" in features.split(",") else 256 if "+avx" in features.split(",") else 128
    versions = {"python": platform.python_version(), "actdsl": actdsl.__version__}
    for lib in ("numpy", "numba", "llvmlite", "torch", "jax", "numexpr", "sympy"):
        try:
            versions[lib] = __import__(lib).__version__
        except ImportError:
            pass
    threads = {"actdsl": parallel.threads(), "cpus": os.cpu_count()}
    try:
        import torch
        threads["torch"] = torch.get_num_threads()
    except ImportError:
        pass
    return dict(cpu_model=model, vector_extensions=vector, llvm_cpu=cpu, actdsl_vector_bits=width,
                threads=threads, versions=versions)


def same_threads():
    """PyTorch's intra-op threads set to actdsl's (``ACTDSL_NUM_THREADS``, else the CPUs), so
    that an ``out=`` row compares one thread with one, or all with all (NumPy's ufuncs run on
    one thread whatever the setting: the header says so)."""
    try:
        import torch
    except ImportError:
        return
    from actdsl import parallel
    torch.set_num_threads(parallel.threads())


def print_machine(m: dict):
    print(f"# CPU: {m['cpu_model']}; vector extensions: {' '.join(m['vector_extensions']) or 'none'}")
    print(f"# actdsl compiles for LLVM CPU {m['llvm_cpu']!r}, {m['actdsl_vector_bits']}-bit vectors; "
          f"threads: " + ", ".join(f"{k} {v}" for k, v in m["threads"].items())
          + " (NumPy's ufuncs: 1)")
    print("# " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))


def _checked(name, spec, dtype, calls: dict):
    """``calls`` (label -> zero-argument callable) run once each; None (and a line saying why)
    if one fails or returns another precision than ``dtype``."""
    for label, c in calls.items():
        try:
            r = c()
        except Exception as e:  # a peer that cannot run this spec on this machine is left out
            print(f"{spec:<16} {name:<10} {label} failed: {type(e).__name__}: {e}"[:120])
            return None
        if r is not None and as_numpy(r).dtype != dtype:
            print(f"{spec:<16} {name:<10} left out: it returns {as_numpy(r).dtype}, not {dtype}")
            return None
    return calls


def spec_calls(spec, name, impl, out_impl, x, g, p, dtype) -> dict:
    """(name, mode, op) -> callable: mode "new" (allocates its result) or "out" (writes into a
    preallocated array), op "f" (forward) or "b" (VJP)."""
    xa, ga, pa = convert_array(name, x), convert_array(name, g), convert_params(name, p, dtype)
    calls = {}
    if impl is not None:
        f, b = impl
        calls[(name, "new", "f")] = lambda: f(xa, pa)
        calls[(name, "new", "b")] = lambda: b(xa, ga, pa)
    if out_impl is not None:
        fo, bo = out_impl
        oa = convert_array(name, np.empty_like(x))
        calls[(name, "out", "f")] = lambda: fo(xa, pa, oa)
        if bo is not None:
            calls[(name, "out", "b")] = lambda: bo(xa, ga, pa, oa)
    return _checked(name, spec, dtype, calls) or {}


MODES = [("new", "f"), ("out", "f"), ("new", "b"), ("out", "b")]


def run_speed(args) -> list[dict]:
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(args.size, args.size)) * 2).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    out = np.empty_like(x)
    table, out_table = load_peers(args.specs, dtype)
    rows = []
    woken = "cores woken before each call" if not args.no_wake else "no wake-up (--no-wake)"
    print(f"# {args.size}x{args.size} {dtype}, medians of {args.repeat} interleaved rounds "
          f"({woken}). 'new': the call allocates its result; 'out=': it writes into a preallocated array "
          "(only peers that offer that). 'x copy' = time / np.copyto's time for the same bytes.\n")
    header = (f"{'spec':<16} {'impl':<9} {'fwd new':>8} {'fwd out=':>8} {'x copy':>6}   "
              f"{'vjp new':>8} {'vjp out=':>8}")
    print(header)
    print("-" * len(header))
    for spec in args.specs:
        kernel = actdsl.compile(spec, backend="numba")
        p = {k: v.astype(dtype) for k, v in kernel.init_params(args.size, rng=1).items()}
        calls = {("actdsl", "new", "f"): lambda: kernel(x, **p),
                 ("actdsl", "out", "f"): lambda: kernel(x, out=out, **p),
                 ("actdsl", "new", "b"): lambda: kernel.vjp(x, g, **p),
                 ("actdsl", "out", "b"): lambda: kernel.vjp(x, g, out=out, **p)}
        names = ["actdsl"]
        for name in dict.fromkeys([*table, *out_table]):
            impl = table.get(name, {}).get(spec)
            out_impl = out_table.get(name, {}).get(spec)
            if impl is None and out_impl is None:
                continue
            got = spec_calls(spec, name, impl, out_impl, x, g, p, dtype)
            if got:
                calls.update(got)
                names.append(name)
        calls[("memcpy", "out", "f")] = lambda: np.copyto(out, x)
        calls[("x.copy()", "new", "f")] = lambda: x.copy()
        timed = interleaved_ms(calls, args.repeat, wake=not args.no_wake)
        copy_ms = timed[("memcpy", "out", "f")]  # this spec's rounds: the same load as the rest
        copy_new_ms = timed[("x.copy()", "new", "f")]
        results = {}
        for name in names:
            t = {m: timed.get((name, *m)) for m in MODES}
            results[name] = t
            row = dict(spec=spec, impl=name, dtype=str(dtype), size=args.size, memcpy_ms=copy_ms,
                       copy_new_ms=copy_new_ms, **{f"{'forward' if o == 'f' else 'vjp'}_{m}_ms": v
                                                   for (m, o), v in t.items()})
            rows.append(row)
            cells = [f"{v:8.2f}" if v is not None else f"{'':>8}" for v in t.values()]
            ratio = f"{t[('out', 'f')] / copy_ms:6.2f}" if t[("out", "f")] else f"{'':>6}"
            print(f"{spec:<16} {name:<9} {cells[0]} {cells[1]} {ratio}   {cells[2]} {cells[3]}")
        print(summary(spec, results, copy_ms, copy_new_ms))
    return rows


def summary(spec, results, copy_ms, copy_new_ms) -> str:
    """actdsl against the fastest peer doing the same (time ratios: < 1 is faster), and the
    allocating forward against out= plus what x.copy() pays over np.copyto."""
    ours = results["actdsl"]
    parts = []
    for mode, op in MODES:
        peers_ = {k: v[(mode, op)] for k, v in results.items() if k != "actdsl" and v[(mode, op)]}
        if peers_:
            best = min(peers_, key=peers_.get)
            parts.append(f"{'fwd' if op == 'f' else 'vjp'} {'new' if mode == 'new' else 'out='} "
                         f"{ours[(mode, op)] / peers_[best]:.2f}x {best}")
    alloc = ours[("new", "f")] / (ours[("out", "f")] + copy_new_ms - copy_ms)
    return (f"{'':<16} vs fastest peer: " + "; ".join(parts) + f"\n{'':<16} new/(out= + copy's "
            f"allocation {copy_new_ms - copy_ms:.1f} ms): {alloc:.2f}")


SMALL_SPECS = ["tanh", "relu", "sigmoid", "softplus", "softmax", "tanh+norm:z"]


def per_call_us(fn, number: int = 2000, repeat: int = 5) -> float:
    """Fastest of ``repeat`` batches of ``number`` calls, µs per call: per-call overhead, where
    the machine's load only ever adds."""
    import timeit
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def run_small(args) -> dict:
    """Per-call time on a small array (--small, default 32x128), the frontend's overhead."""
    rows, units = (int(v) for v in args.small.split("x"))
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(rows, units)) * 2).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    out = np.empty_like(x)
    table, _ = load_peers([], dtype)
    base = per_call_us(lambda: np.negative(x))
    print(f"\n# per call on {rows}x{units} {dtype}, µs (fastest of 5 batches of 2000 calls); "
          f"np.negative(x), the least any call on it costs: {base:.2f} µs")
    print(f"{'spec':<16} {'impl':<9} {'fwd':>7} {'fwd out=':>8} {'vjp':>7}")
    res = {"np.negative": base}
    for spec in [s for s in args.specs if s in SMALL_SPECS] or SMALL_SPECS:
        k = actdsl.compile(spec, backend="numba")
        impls = {"actdsl": (lambda: k(x), lambda: k(x, out=out), lambda: k.vjp(x, g))}
        for name in ("numpy", "torch"):
            if spec in table.get(name, {}):
                f, b = table[name][spec]
                xa, ga = convert_array(name, x), convert_array(name, g)
                impls[name] = (lambda f=f, xa=xa: f(xa, {}), None, lambda b=b, xa=xa, ga=ga: b(xa, ga, {}))
        for name, fns in impls.items():
            t = [per_call_us(fn) if fn is not None else None for fn in fns]
            res[f"{spec} {name}"] = t
            print(f"{spec:<16} {name:<9} " + " ".join(f"{v:7.2f}" if v is not None else f"{'':>7}"
                                                      for v in t))
    return res


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
    ap.add_argument("--no-wake", action="store_true", help="time each call straight after the "
                    "pause, on cores that may be asleep (see WAKE_S)")
    ap.add_argument("--compile-rounds", type=int, default=3,
                    help="cold/warm compile rounds, each in new processes with a new cache")
    ap.add_argument("--peak-gib", type=int, default=0, help="also measure peak memory on an array "
                    "of this many GiB (make bench uses 2)")
    ap.add_argument("--small", default="32x128", help="per-call overhead on an array of this "
                    "shape (rows x units); 'none' to skip")
    ap.add_argument("--json", default=None, help="where to write results (default benchmarks/results/)")
    args = ap.parse_args(argv)
    same_threads()
    result = {"machine": machine()}
    print_machine(result["machine"])
    if not args.compile_only:
        result["speed"] = run_speed(args)
        if args.small != "none":
            result["small"] = run_small(args)
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

"""Where the time of an allocating call goes: CPU time (all threads, so robust to a shared
machine's load) and minor page faults of ``k(x)`` against ``k(x, out=y)``, ``np.copyto`` and
``x.copy()``, and of populating a fresh array (``MADV_POPULATE_WRITE``: the kernel zeroing new
pages). Linux only.

    ACTDSL_NUM_THREADS=1 python benchmarks/alloc.py tanh relu
    python benchmarks/alloc.py --no-huge-pages tanh
"""
from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import time

import numpy as np

import actdsl

MADV_POPULATE_WRITE = 23  # Linux 5.14


def populate(a: np.ndarray) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    start = a.ctypes.data & ~4095
    end = (a.ctypes.data + a.nbytes + 4095) & ~4095
    if libc.madvise(start, end - start, MADV_POPULATE_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "madvise(MADV_POPULATE_WRITE)")


def measure(fn, repeat: int) -> str:
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    cpu, flt = [], []
    for _ in range(repeat):
        f0, t0 = faults(), time.process_time()
        fn()
        cpu.append(time.process_time() - t0)
        flt.append(faults() - f0)
    return f"{statistics.median(cpu) * 1e3:7.1f} ms CPU {int(statistics.median(flt)):6d} faults"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", default=["tanh", "relu"])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--no-huge-pages", action="store_true",
                    help="turn off NumPy's madvise(MADV_HUGEPAGE) on large arrays")
    args = ap.parse_args()
    if args.no_huge_pages:
        np._core.multiarray._set_madvise_hugepage(False)
    x = np.random.default_rng(0).normal(size=(args.size, args.size)).astype(np.float32)
    out = np.empty_like(x)
    rows = {"np.copyto(out, x)": lambda: np.copyto(out, x), "x.copy()": lambda: x.copy(),
            "np.empty + populate": lambda: populate(np.empty_like(x))}
    for spec in args.specs:
        k = actdsl.compile(spec, backend="numba")
        rows[f"{spec} out="] = lambda k=k: k(x, out=out)
        rows[f"{spec} new"] = lambda k=k: k(x)
    for name, fn in rows.items():
        print(f"{name:<22} {measure(fn, args.repeat)}")


if __name__ == "__main__":
    main()

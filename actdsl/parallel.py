"""Run a GIL-free kernel over chunks of its index range on a few threads.

On this project's 2-core machines Numba's ``parallel=True`` and ``target='parallel'`` cost more
in overhead than they gain (DESIGN.md, Numerics); plain threads over ``nogil`` kernels do not.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: below this many elements, threads cost more than they save
MIN_PARALLEL = 1 << 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def threads() -> int:
    env = os.environ.get("ACTDSL_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="actdsl")
        return _pool


def chunks(total: int, elements_per_item: int = 1) -> list[tuple[int, int]]:
    """How to split ``total`` items (rows or elements) for this machine."""
    count = min(threads(), max(1, total * elements_per_item // MIN_PARALLEL), total)
    count = max(count, 1)
    bounds = [total * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def run(kernel, args_for_chunk, parts: list[tuple[int, int]]):
    """Call ``kernel(*args_for_chunk(i, lo, hi))`` for each part (the first on this thread).

    Kernels get slices, not bounds: a loop over ``range(len)`` has a provably non-negative
    index, while ``range(lo, hi)`` keeps Numba's negative-index wraparound, which stops LLVM
    from vectorizing the loop."""
    if len(parts) == 1:
        kernel(*args_for_chunk(0, *parts[0]))
        return
    pool = _get_pool(len(parts) - 1)
    futures = [pool.submit(kernel, *args_for_chunk(i, lo, hi))
               for i, (lo, hi) in enumerate(parts) if i > 0]
    kernel(*args_for_chunk(0, *parts[0]))
    for f in futures:
        f.result()

"""Run a GIL-free kernel over chunks of its index range on a few threads.

On this project's 2-core machines Numba's ``parallel=True`` and ``target='parallel'`` cost more
in overhead than they gain (DESIGN.md, Numerics); plain threads over ``nogil`` kernels do not.
"""
from __future__ import annotations

import os
import threading
from time import perf_counter
from concurrent.futures import ThreadPoolExecutor

#: below this many elements, threads cost more than they save (used where a kernel's cost per
#: element has not been measured yet)
MIN_PARALLEL = 1 << 16
#: the least work, in nanoseconds of one thread, worth handing to another thread: the pool's
#: hand-off (submit, wake a worker, wait for it) costs 30-60 µs on a 2-core VM, so a relu over
#: 65536 float32 (8 µs on one thread) took 63 µs on two
PART_NS = 60_000
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


_cpus: int | None = None


def threads() -> int:
    """ACTDSL_NUM_THREADS, else the CPUs this process may run on (read once)."""
    env = os.environ.get("ACTDSL_NUM_THREADS")
    if env:
        return max(1, int(env))
    global _cpus
    if _cpus is None:
        try:
            _cpus = max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            _cpus = os.cpu_count() or 1
    return _cpus


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="actdsl")
        return _pool


def chunks(total: int, elements_per_item: int = 1, ns_per_element: float | None = None
           ) -> list[tuple[int, int]]:
    """How to split ``total`` items (rows or elements) for this machine: one part per
    ``PART_NS`` of work where the kernel's cost per element is known (``Cost``), else one part
    per ``MIN_PARALLEL`` elements; at most one per thread."""
    elements = total * elements_per_item
    if ns_per_element is None:
        wanted = elements // MIN_PARALLEL
    else:
        wanted = int(elements * ns_per_element // PART_NS)
    if wanted < 2 or total < 2:
        return [(0, total)]
    count = min(threads(), wanted, total)
    bounds = [total * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class Cost:
    """Nanoseconds per element of one kernel on one thread, measured on its own calls: the first
    part of every call runs on the calling thread and is timed. Calls too small to say (under
    ``MEASURE_FROM`` elements: per-call overhead dominates) are not counted; a new figure moves
    the estimate a quarter of the way, and never more than four-fold at once (a preempted call).

    Once a call has run alone (one part), a split call's figure may lower the estimate but never
    raise it: a part timed while another thread works beside it shares the memory bus and
    caches, and reads slower than the kernel alone. Counted both ways, those figures fed
    themselves: in a training step (a 128x512 relu between PyTorch's matmuls, 15-45 µs alone)
    the split parts read 2 ns per element, which kept the next calls split, and the pool's
    hand-off cost 0.27 ms a step (benchmarks/torch_wrapper.py). (Lowering only, so that an
    estimate raised by preempted calls still comes back down.)"""

    MEASURE_FROM = 1 << 14
    __slots__ = ("ns", "alone_seen")

    def __init__(self):
        self.ns: float | None = None
        self.alone_seen = False

    def alone(self, elements: int) -> bool:
        """Whether a call on ``elements`` runs as one part on this thread (``chunks`` would not
        split it), so that it can skip the slicing and the pool's bookkeeping."""
        ns = self.ns
        if ns is None:
            return elements < 2 * MIN_PARALLEL
        return elements * ns < 2 * PART_NS

    def call(self, kernel, args, elements: int) -> None:
        """``kernel(*args)`` as one part on this thread, timed where it is large enough to say."""
        if elements < self.MEASURE_FROM:
            kernel(*args)
            return
        start = perf_counter()
        kernel(*args)
        self.update(perf_counter() - start, elements)

    def update(self, seconds: float, elements: int, alone: bool = True) -> None:
        """Count ``seconds`` for ``elements`` (``alone``: the call ran as one part)."""
        if elements < self.MEASURE_FROM:
            return
        new = seconds * 1e9 / elements
        if self.ns is None:
            self.ns = new
        elif alone or not self.alone_seen or new < self.ns:
            self.ns = 0.75 * self.ns + 0.25 * min(new, 4.0 * self.ns)
        self.alone_seen |= alone


def run(kernel, args_for_chunk, parts: list[tuple[int, int]], cost: Cost | None = None,
        elements_per_item: int = 1):
    """Call ``kernel(*args_for_chunk(i, lo, hi))`` for each part (the first on this thread,
    timed into ``cost``).

    Kernels get slices, not bounds: a loop over ``range(len)`` has a provably non-negative
    index, while ``range(lo, hi)`` keeps Numba's negative-index wraparound, which stops LLVM
    from vectorizing the loop."""
    futures = ()
    if len(parts) > 1:
        pool = _get_pool(len(parts) - 1)
        futures = [pool.submit(kernel, *args_for_chunk(i, lo, hi))
                   for i, (lo, hi) in enumerate(parts) if i > 0]
    lo, hi = parts[0]
    args = args_for_chunk(0, lo, hi)
    start = perf_counter()
    kernel(*args)
    if cost is not None:
        cost.update(perf_counter() - start, (hi - lo) * elements_per_item, alone=not futures)
    for f in futures:
        f.result()

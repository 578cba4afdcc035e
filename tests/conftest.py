import os

import numpy as np
import pytest
from hypothesis import Phase, settings

import actdsl

# CI runs a fixed set of examples (a landing never hinges on a new random draw) and reports a
# failing one as drawn, unshrunk: each step of a shrink is a compile (seconds), and a shrink ran
# for most of CI's 90 minutes. Local runs keep exploring and shrinking, and benchmarks/fuzz.py
# runs longer. Bugs found either way become regression tests.
settings.register_profile("ci", derandomize=True, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def rng():
    return np.random.default_rng(20261128)


def away_from_kinks(x, kinks=(0.0, 1.0, -1.0), margin=1e-3):
    """Move points that sit within ``margin`` of a kink out of its neighbourhood."""
    x = np.array(x, dtype=np.float64)
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + np.where(x[near] >= k, 2 * margin, -2 * margin)
    return x


def numeric_vjp(f, x, g, h=1e-6):
    """Central differences of sum(g * f(x)) with respect to every entry of x (float64)."""
    x = np.array(x, dtype=np.float64)
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        out[idx] = np.sum(g * (f(xp) - f(xm))) / (2 * h)
    return out


def compiled(spec, backend="numpy"):
    return actdsl.compile(spec, backend=backend)


# tests/cuda runs in its own process (Numba's simulator must be chosen before numba.cuda is
# imported): tests/test_cuda_simulator.py starts it; on a GPU machine, `pytest tests/cuda`.
collect_ignore = [] if os.environ.get("ACTDSL_CUDA_TESTS") else ["cuda"]


def pytest_collection_modifyitems(config, items):
    """Tests of one spec run on one xdist worker (``make test`` uses ``--dist loadgroup``): a
    compile is symbolic work that each process would otherwise repeat (Numba's machine code is
    shared through the on-disk cache, SymPy's work is not)."""
    for item in items:
        spec = getattr(getattr(item, "callspec", None), "params", {}).get("spec")
        if isinstance(spec, str) and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(spec))

"""Memory bounded by what is in use (issue 19): a kernel evicted from the kernel cache and no
longer referenced leaves nothing of actdsl's behind (module, source, line caches). The growth
per spec that remains (SymPy's bounded caches, Numba's JIT) is measured in docs/security.md."""
import gc
import linecache
import sys

import numpy as np
import pytest

import actdsl
from actdsl import compiler


def generated_modules():
    return {k for k in sys.modules if k.startswith("actdsl_generated_")}


def generated_lines():
    return {k for k in linecache.cache if "actdsl-numpy-" in str(k) or "actdsl_generated_" in str(k)}


@pytest.mark.parametrize("backend, count", [("numpy", 40), ("numba", 5)])
def test_evicted_kernels_leave_nothing_behind(monkeypatch, tmp_path, backend, count):
    monkeypatch.setenv("ACTDSL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(compiler, "_CACHE_SIZE", 2)
    monkeypatch.setattr(compiler, "_cache", compiler.OrderedDict())
    x = np.linspace(-2, 2, 6)
    # the spec's number makes each one distinct: 0.5 + i/64 is exact in binary
    specs = [f"{{z * {0.5 + i / 64!r}}}+softsign" for i in range(count)]
    actdsl.compile("{z * 0.25}+softsign", backend=backend)(x)  # shared modules (vmath) load
    compiler._cache.clear()                                       # once, and stay
    gc.collect()
    modules, lines = generated_modules(), generated_lines()
    for i, spec in enumerate(specs):
        y = actdsl.compile(spec, backend=backend)(x)
        t = x * (0.5 + i / 64)
        np.testing.assert_allclose(y, t / (1 + np.abs(t)), rtol=1e-15)  # softsign, by hand
    gc.collect()
    new_modules = generated_modules() - modules
    new_lines = generated_lines() - lines
    # at most the two kernels still in the cache keep a module and their source
    assert len(new_modules) <= 2, new_modules
    assert len(new_lines) <= 2 * 2, new_lines
    kept = list(compiler._cache.values())
    compiler._cache.clear()
    del kept
    gc.collect()
    assert not generated_modules() - modules
    assert not generated_lines() - lines


def test_a_module_shared_by_two_kernels_stays_until_the_last_goes(monkeypatch, tmp_path):
    from actdsl import cache
    monkeypatch.setenv("ACTDSL_CACHE_DIR", str(tmp_path))
    source = "def forward(z):\n    return z\n# shared\n"
    a = cache.load(source)
    b = cache.load(source)
    assert a is b and a.__name__ in sys.modules
    cache.release(a)
    assert a.__name__ in sys.modules
    cache.release(b)
    assert a.__name__ not in sys.modules

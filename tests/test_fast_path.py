"""The Numba backend's fast path (arrays as they are) gives what the reference (NumPy backend)
gives, and hands everything it does not cover to the general path: strided arrays, other dtypes,
another axis, parameters of another shape or dtype, an ``out`` that is wrong (whose errors stay
the same). Both paths split large calls between threads by the kernel's measured cost; split or
not, the results are the same."""
import numpy as np
import pytest

import actdsl
from actdsl import ParameterError
from test_numba_backend import assert_agree

SPECS = ["tanh", "relu", "softplus", "softmax", "tanh+norm:z", "relu+softmax", "prelu", "lgrelu",
         "maxout:3", "prelu+norm:z"]


def kernels(spec):
    return actdsl.compile(spec, backend="numba"), actdsl.compile(spec, backend="numpy")


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_calls_agree_with_the_reference(spec, dtype, rng):
    k, ref = kernels(spec)

    def params(units):
        p = k.init_params(units, rng=rng)
        return {n: (v + rng.uniform(0.05, 0.5, size=v.shape)).astype(dtype) for n, v in p.items()}

    x = (rng.normal(size=(32, 128)) * 3).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    p = params(128)
    k(x, **p), k.vjp(x, g, **p)  # the first call per dtype compiles on the general path
    assert k._runner.fast_forward(x, -1, None, p, k.params) is not None  # the fast path takes it
    assert k._runner.fast_vjp(x, g, -1, None, p, k.params) is not None
    elementwise = not k.rowwise and not k.params
    # (rows of one element are left out for row-wise specs: float32 norm:z's VJP there is
    # rounding over eps on both paths)
    for shape in [(32, 128), (3, 7), (2, 3, 5), (9,)] + ([(), (1, 1)] if elementwise else []):
        x = np.asarray(rng.normal(size=shape) * 3, dtype=dtype)
        g = np.asarray(rng.normal(size=shape), dtype=dtype)
        p = params(shape[-1] if shape else 1)
        y = k(x, **p)
        assert y.dtype == dtype and y.shape == x.shape
        assert_agree(y, ref(x, **p), dtype, k.rowwise, f"{spec} {shape}")
        # a VJP's terms are of the size of dy: cancellation to ~0 is judged against that
        floor = float(np.max(np.abs(g)))
        assert_agree(k.vjp(x, g, **p), ref.vjp(x, g, **p), dtype, k.rowwise, f"{spec} vjp {shape}",
                     floor)
        out = np.full_like(x, np.nan)
        assert k(x, out=out, **p) is out
        assert_agree(out, ref(x, **p), dtype, k.rowwise, f"{spec} out= {shape}")
        dx = np.full_like(x, np.nan)
        assert k.vjp(x, g, out=dx, **p) is dx
        assert_agree(dx, ref.vjp(x, g, **p), dtype, k.rowwise, f"{spec} vjp out= {shape}", floor)


def test_parameters_the_fast_path_leaves_to_the_general_one(rng):
    k, ref = kernels("prelu")
    x = (rng.normal(size=(4, 6)) * 3).astype(np.float32)
    r = np.full(6, 0.25, np.float32)
    k(x, r=r), k.vjp(x, x, r=r)
    run = k._runner
    assert run.fast_forward(x, -1, None, {"r": r}, k.params) is not None
    for other in [{"r": np.float32(0.25)}, {"r": r.astype(np.float64)}, {"r": [0.25] * 6},
                  {"r": np.full((1, 6), 0.25, np.float32)}, {}, {"r": r, "q": r}]:
        assert run.fast_forward(x, -1, None, other, k.params) is None
    for scalar in (np.float32(1.5), np.float32(-1.5)):  # one unit: the general path's case
        assert run.fast_forward(np.asarray(scalar), -1, None, {"r": r[:1]}, k.params) is None
        assert k(np.asarray(scalar), r=r[:1]) == ref(scalar, r=r[:1])
    assert_agree(k(x, r=0.25), ref(x, r=0.25), np.float32, False, "scalar r")
    assert_agree(k(x, r=r[::-1].copy()[::-1]), ref(x, r=r), np.float32, False, "strided r")
    with pytest.raises(ParameterError, match="needs parameter 'r'"):
        k(x)
    with pytest.raises(ParameterError, match="no parameter 'q'"):
        k(x, r=r, q=r)
    with pytest.raises(ParameterError, match="shape"):
        k(x, r=np.ones(5, np.float32))
    dx, grads = k.vjp(x, x, r=r, with_params=True)  # parameter gradients: the general path
    rdx, rgrads = ref.vjp(x, x, r=r, with_params=True)
    assert np.allclose(grads["r"], rgrads["r"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", ["tanh", "softmax"])
def test_what_the_fast_path_leaves_to_the_general_one(spec, rng):
    k, ref = kernels(spec)
    x = (rng.normal(size=(6, 10)) * 3).astype(np.float32)
    k(x), k.vjp(x, x)
    run = k._runner
    assert run.fast_forward(np.asfortranarray(x), -1, None, {}, ()) is None
    assert run.fast_forward(x.astype(np.float16), -1, None, {}, ()) is None
    assert run.fast_vjp(x, x.astype(np.float64), -1, None, {}, ()) is None
    assert run.fast_forward(x, -1, np.empty((6, 10), np.float64), {}, ()) is None
    if k.rowwise:
        assert run.fast_forward(np.asarray(x[0, 0]), -1, None, {}, ()) is None
        with pytest.raises(ParameterError, match="row-wise"):
            k(x[0, 0])
        assert run.fast_forward(x, 0, None, {}, ()) is None
        assert run.fast_forward(x, True, None, {}, ()) is None
        assert run.fast_forward(x[:0], -1, None, {}, ()) is None
    # and the general path still answers these, or refuses them as before
    xt = np.asfortranarray(x)
    assert_agree(k(xt), ref(xt), np.float32, k.rowwise, "Fortran order")
    assert_agree(k(x, axis=0), ref(x, axis=0), np.float32, k.rowwise, "axis=0")
    assert_agree(k.vjp(x, x.astype(np.float64)), ref.vjp(x, x), np.float32, k.rowwise,
                 "dy float64", floor=float(np.max(np.abs(x))))
    with pytest.raises(ParameterError, match="dtype"):
        k(x, out=np.empty((6, 10), np.float64))
    with pytest.raises(ParameterError, match="shape"):
        k(x, out=np.empty((6, 11), np.float32))
    with pytest.raises(ParameterError, match="read-only"):
        ro = np.empty_like(x)
        ro.flags.writeable = False
        k(x, out=ro)
    with pytest.raises(ParameterError, match="shape"):
        k.vjp(x, x[:, :5])
    if k.rowwise:
        with pytest.raises(ParameterError, match="axis"):
            k(x, axis=True)


@pytest.mark.parametrize("spec", ["tanh", "softmax", "prelu+norm:z", "maxout:3"])
def test_calls_split_between_threads_give_what_one_thread_gives(spec, rng, monkeypatch):
    """Every part of the work a kernel is given, on the fast and the general path, forward and
    VJP with parameter gradients (summed over the parts' accumulators): splitting it in 4 (as if
    every element were worth a thread) changes no bit of the result."""
    from actdsl import parallel
    k, ref = kernels(spec)
    x = (rng.normal(size=(64, 24)) * 3).astype(np.float64)
    g = rng.normal(size=x.shape)
    p = {n: v + 0.1 for n, v in k.init_params(24, rng=rng).items()}
    xf = np.asfortranarray(x)  # the general path
    before = [k(x, **p), k.vjp(x, g, **p), k(xf, **p), k.vjp(xf, g, with_params=True, **p)]
    monkeypatch.setenv("ACTDSL_NUM_THREADS", "4")
    monkeypatch.setattr(parallel, "PART_NS", 1e-9)
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)
    monkeypatch.setattr(parallel.Cost, "MEASURE_FROM", 1)
    for key in list(k._runner._costs):
        k._runner._costs[key].ns = 1.0
    assert len(k._runner._parts(k._runner._vjp_kernel, x.dtype, 64, 24)) == 4
    after = [k(x, **p), k.vjp(x, g, **p), k(xf, **p), k.vjp(xf, g, with_params=True, **p)]
    for b, a in zip(before[:3], after[:3]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(after[3][0], before[3][0])
    for name in p:  # sums of four partial sums: equal to rounding
        np.testing.assert_allclose(after[3][1][name], before[3][1][name], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(after[3][1][name], ref.vjp(x, g, with_params=True, **p)[1][name],
                                   rtol=1e-9, atol=1e-9)
    assert_agree(after[0], ref(x, **p), np.float64, k.rowwise, spec)


def test_threads_are_used_where_the_measured_work_pays_for_them(monkeypatch):
    """A kernel's cost per element is measured on its own calls; a call is split only where each
    thread gets at least PART_NS of work: a cheap kernel (relu) on 65536 elements runs on one
    thread, an expensive one on as many threads as there are."""
    from actdsl import parallel
    monkeypatch.setenv("ACTDSL_NUM_THREADS", "2")
    assert parallel.chunks(1 << 16, 1, 0.15) == [(0, 1 << 16)]
    assert parallel.chunks(1 << 16, 1, 10.0) == [(0, 1 << 15), (1 << 15, 1 << 16)]
    assert parallel.chunks(100, 1 << 10, 10.0) == [(0, 50), (50, 100)]  # rows, by elements
    assert parallel.chunks(1, 1 << 20, 10.0) == [(0, 1)]  # one row is one part
    assert parallel.chunks(1 << 22, 1, None) == [(0, 1 << 21), (1 << 21, 1 << 22)]  # unmeasured
    cost = parallel.Cost()
    cost.update(1e-3, 100)  # too few elements to say
    assert cost.ns is None
    cost.update(1e-3, 1 << 20)
    first = cost.ns
    assert first == pytest.approx(1e6 / (1 << 20))
    cost.update(1.0, 1 << 20)  # a preempted call moves the estimate at most 4x, a quarter of the way
    assert cost.ns == pytest.approx(0.75 * first + 0.25 * 4 * first)
    k = actdsl.compile("relu", backend="numba")
    x = np.ones(1 << 16, np.float32)
    for _ in range(3):
        k(x)
    assert k._runner._costs[k._runner._forward_kernel, x.dtype].ns is not None


def test_split_calls_only_lower_the_estimate_once_a_call_has_run_alone():
    """A part timed beside another thread reads slower than the kernel alone (shared memory
    bus): once a call has run as one part, such figures can lower the estimate but not raise it,
    so that they cannot keep splitting calls that one thread does faster (a training step's
    128x512 relu), and an estimate raised by preempted calls still comes down."""
    from actdsl import parallel
    cost = parallel.Cost()
    cost.update(2e-3, 1 << 20, alone=False)  # no alone figure yet: counted
    assert cost.ns == pytest.approx(2e6 / (1 << 20))
    cost.update(1e-3, 1 << 20)
    settled = cost.ns
    assert settled == pytest.approx(0.75 * 2e6 / (1 << 20) + 0.25 * 1e6 / (1 << 20))
    cost.update(4e-3, 1 << 20, alone=False)  # slower than the estimate: ignored from now on
    assert cost.ns == settled
    cost.update(0.5e-3, 1 << 20, alone=False)  # faster: counted
    assert cost.ns == pytest.approx(0.75 * settled + 0.25 * 0.5e6 / (1 << 20))


def test_compiling_the_same_text_again_returns_the_same_kernel(monkeypatch):
    """The adapters compile the spec on every call: a text compiled before is found without
    parsing it again, and texts that mean the same spec share one kernel."""
    import actdsl.compiler as compiler
    k = actdsl.compile("tanh+norm:z", backend="numba")
    parsed = []
    real = compiler.parse
    monkeypatch.setattr(compiler, "parse", lambda text: parsed.append(text) or real(text))
    assert actdsl.compile("tanh+norm:z", backend="numba") is k
    assert parsed == []
    assert actdsl.compile(" tanh + norm:z ", backend="numba") is k
    assert actdsl.compile(" tanh + norm:z ", backend="numba") is k
    assert parsed == [" tanh + norm:z "]
    assert actdsl.compile("tanh+norm:z", backend="numpy") is not k


def test_benchmark_times_in_random_order(monkeypatch):
    """benchmarks/bench.py's timer: each call once a round, in an order that changes between
    rounds (in a fixed order, what ran just before a call moved its time, pause or not), the
    same order for the same seed."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).parent.parent / "benchmarks" / "bench.py"
    spec = importlib.util.spec_from_file_location("_bench_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "SETTLE_S", 0.0)

    def orders(seed):
        calls = []
        fns = {name: (lambda name=name: calls.append(name)) for name in "abcde"}
        medians = bench.interleaved_ms(fns, 12, seed=seed)
        assert set(medians) == set("abcde") and all(v >= 0 for v in medians.values())
        calls = calls[5:]  # the warm-up calls each once, in order
        return [tuple(calls[r * 5:(r + 1) * 5]) for r in range(12)]

    rounds = orders(0)
    assert all(sorted(r) == list("abcde") for r in rounds)
    assert len(set(rounds)) > 6 and len({r[0] for r in rounds}) > 2
    assert orders(0) == rounds

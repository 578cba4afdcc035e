"""The Numba backend's fast path for small arrays without parameters gives what the reference
(NumPy backend) gives, and hands everything it does not cover to the general path: strided or
large arrays, other dtypes, another axis, an ``out`` that is wrong (whose errors stay the same)."""
import numpy as np
import pytest

import actdsl
from actdsl import ParameterError
from test_numba_backend import assert_agree

SPECS = ["tanh", "relu", "softplus", "softmax", "tanh+norm:z", "relu+softmax"]


def kernels(spec):
    return actdsl.compile(spec, backend="numba"), actdsl.compile(spec, backend="numpy")


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_calls_agree_with_the_reference(spec, dtype, rng):
    k, ref = kernels(spec)
    x = (rng.normal(size=(32, 128)) * 3).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    k(x), k.vjp(x, g)  # the first call per dtype compiles on the general path
    assert k._runner.fast_forward(x, -1, None) is not None  # the fast path takes these
    assert k._runner.fast_vjp(x, g, -1, None) is not None
    # (rows of one element are left out for row-wise specs: float32 norm:z's VJP there is
    # rounding over eps on both paths)
    for shape in [(32, 128), (3, 7), (2, 3, 5), (9,)] + ([(), (1, 1)] if not k.rowwise else []):
        x = np.asarray(rng.normal(size=shape) * 3, dtype=dtype)
        g = np.asarray(rng.normal(size=shape), dtype=dtype)
        y = k(x)
        assert y.dtype == dtype and y.shape == x.shape
        assert_agree(y, ref(x), dtype, k.rowwise, f"{spec} {shape}")
        # a VJP's terms are of the size of dy: cancellation to ~0 is judged against that
        floor = float(np.max(np.abs(g)))
        assert_agree(k.vjp(x, g), ref.vjp(x, g), dtype, k.rowwise, f"{spec} vjp {shape}", floor)
        out = np.full_like(x, np.nan)
        assert k(x, out=out) is out
        assert_agree(out, ref(x), dtype, k.rowwise, f"{spec} out= {shape}")
        dx = np.full_like(x, np.nan)
        assert k.vjp(x, g, out=dx) is dx
        assert_agree(dx, ref.vjp(x, g), dtype, k.rowwise, f"{spec} vjp out= {shape}", floor)


@pytest.mark.parametrize("spec", ["tanh", "softmax"])
def test_what_the_fast_path_leaves_to_the_general_one(spec, rng):
    k, ref = kernels(spec)
    x = (rng.normal(size=(6, 10)) * 3).astype(np.float32)
    k(x), k.vjp(x, x)
    run = k._runner
    big = np.zeros((600, 200), np.float32)  # enough elements for the thread pool
    assert run.fast_forward(big, -1, None) is None
    assert run.fast_forward(np.asfortranarray(x), -1, None) is None
    assert run.fast_forward(x.astype(np.float16), -1, None) is None
    assert run.fast_vjp(x, x.astype(np.float64), -1, None) is None
    assert run.fast_forward(x, -1, np.empty((6, 10), np.float64)) is None
    if k.rowwise:
        assert run.fast_forward(x, 0, None) is None
        assert run.fast_forward(x, True, None) is None
        assert run.fast_forward(x[:0], -1, None) is None
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

"""The CUDA backend agrees with the NumPy backend (the reference) on every key and composition
in both dtypes, for host and device arrays.

This module runs in a process of its own: under Numba's CUDA simulator in CI
(``tests/test_cuda_simulator.py`` sets ``NUMBA_ENABLE_CUDASIM=1``), and on the GPU itself where
one is present (``ACTDSL_CUDA_TESTS=1 pytest tests/cuda``). The simulator proves the logic
(indexing, reductions, synchronisation); ``test_gpu_only.py`` holds what only a GPU can show.
"""

import numpy as np
import pytest
from numba import cuda

import actdsl
from reference import KINKS, ROWWISE
from test_numba_backend import (EXTREME, KEYS, SPECS, assert_agree, assert_backend_agrees,
                                params_for)

SIMULATED = bool(getattr(cuda, "simulator", None)) and cuda.is_available() is not None \
    and type(cuda.to_device(np.zeros(1))).__name__ == "FakeCUDAArray"


def pair(spec):
    return actdsl.compile(spec, backend="cuda"), actdsl.compile(spec, backend="numpy")


def test_runs_where_intended():
    """Under the simulator, or on a real device: never silently on neither."""
    assert SIMULATED or cuda.is_available()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SPECS)
def test_cuda_agrees_with_numpy(spec, dtype):
    # 11 units: longer than the simulator's 8-thread blocks, so threads loop over the row
    kc, kp = pair(spec)
    assert_backend_agrees(kc, kp, spec, dtype, units=11, param_bound=16 * np.finfo(dtype).eps * 40,
                          same_shapes=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("key", [k for k in KEYS if k not in ROWWISE and k not in
                                 ("log_softmax", "softmin", "prelu", "lgrelu", "maxout")])
def test_extreme_inputs_and_kinks_agree(key, dtype):
    kc, kp = pair(key)
    with np.errstate(all="ignore"):
        x = np.array(EXTREME + list(KINKS.get(key, {})), dtype=dtype)
        for what in ("__call__", "derivative"):
            assert_agree(getattr(kc, what)(x), getattr(kp, what)(x), dtype, False, f"{key} {what}")
        assert_agree(kc.vjp(x, np.ones_like(x)), kp.vjp(x, np.ones_like(x)), dtype, False, key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("key", sorted(ROWWISE) + ["log_softmax", "softmin"])
def test_rowwise_extremes_agree(key, dtype):
    kc, kp = pair(key)
    rows = np.array([[1e4, -1e4, 88.8, -88.8, 710.0, -710.0], [3.0] * 6, [0.0] * 6,
                     [1.0, 2.0, np.nan, 0.0, 1.0, 1.0]], dtype=dtype)
    if key in ("softmax", "log_softmax", "softmin"):
        rows = np.vstack([rows, np.array([[np.inf, 0, 1, 2, 3, 4], [-np.inf] * 5 + [0.0]], dtype)])
    with np.errstate(all="ignore"):
        assert_agree(kc(rows), kp(rows), dtype, True, key)
        got, want = kc.vjp(rows, np.ones_like(rows)), kp.vjp(rows, np.ones_like(rows))
    for i, row in enumerate(rows):
        # a constant row's norm VJP is a difference of terms of size 1/eps (1e8), exactly 0 in
        # exact arithmetic: both backends return rounding noise of that size
        constant = key.startswith("norm:") and np.all(row == row[0])
        assert_agree(got[i], want[i], dtype, True, f"{key} row {i}", floor=1e8 if constant else 1.0)


def test_ties_route_the_max_gradient_to_the_first_maximum():
    """norm:max's gradient at max|z| goes to one element, the first, as on the CPU backends."""
    x = np.array([[1.0, -3.0, 3.0, 2.0, 3.0, -3.0, 0.5, 1.0, 3.0, 0.0, -1.0]])
    g = np.ones_like(x)
    kc, kp = pair("norm:max")
    np.testing.assert_allclose(kc.vjp(x, g), kp.vjp(x, g), rtol=1e-14, atol=1e-15)


def test_shapes_axes_and_layouts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 6))
    for spec in ("tanh", "softmax", "prelu"):
        kc, kp = pair(spec)
        p = {"r": rng.uniform(0.1, 0.3, size=x.shape[1])} if spec == "prelu" else {}
        for axis in (0, 1, -1):
            if spec == "prelu" and axis != 1:
                continue
            np.testing.assert_allclose(kc(x, axis=axis, **p), kp(x, axis=axis, **p), rtol=1e-13,
                                       atol=1e-15)
        view = x[:, ::2, ::-1]  # non-contiguous host arrays are copied to the device
        q = {"r": 0.2} if spec == "prelu" else {}
        np.testing.assert_allclose(kc(view, **q), kp(view, **q), rtol=1e-13, atol=1e-15)
        assert kc(np.zeros((0, 6)), **q).shape == (0, 6)
    k = actdsl.compile("tanh", backend="cuda")
    assert k(np.float32(0.5)).shape == () and k(np.float32(0.5)).dtype == np.float32
    assert k([1, 2]).dtype == np.float64
    out = np.empty((2, 3), np.float32)
    assert k(np.ones((2, 3), np.float32), out=out) is out
    np.testing.assert_allclose(out, np.tanh(1.0), rtol=1e-6)


@pytest.mark.parametrize("spec", ["sigmoid", "softmax", "prelu", "maxout:3"])
def test_device_arrays_stay_on_the_device(spec):
    rng = np.random.default_rng(1)
    kc, kp = pair(spec)
    x = rng.normal(size=(3, 11)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    p = params_for(kp, 11, rng)
    dx_dev, dg_dev = cuda.to_device(x), cuda.to_device(g)
    y = kc(dx_dev, **p)
    assert not isinstance(y, np.ndarray) and hasattr(y, "copy_to_host")
    assert_agree(y.copy_to_host(), kp(x, **p), np.float32, kc.rowwise, spec)
    out = cuda.device_array(x.shape, np.float32)
    assert kc(dx_dev, out=out, **p) is out
    np.testing.assert_array_equal(out.copy_to_host(), y.copy_to_host())
    stream = cuda.stream()
    d, grads = kc.vjp(dx_dev, dg_dev, with_params=True, stream=stream, **p)
    stream.synchronize()
    rd, rg = kp.vjp(x, g, with_params=True, **p)
    assert_agree(d.copy_to_host(), rd, np.float32, kc.rowwise, spec, floor=float(np.max(np.abs(g))))
    assert set(grads) == set(rg)
    for name in rg:
        host = grads[name].copy_to_host()
        assert host.shape == rg[name].shape
        np.testing.assert_allclose(host, rg[name], rtol=1e-4, atol=1e-4)
    empty = kc(cuda.to_device(np.zeros((0, 11), np.float32)), **p)
    assert tuple(empty.shape) == (0, 11)


def test_device_errors_are_actionable():
    k = actdsl.compile("softmax", backend="cuda")
    d = cuda.to_device(np.zeros((3, 4), np.int32))
    with pytest.raises(actdsl.ArrayTypeError, match="float32 or float64"):
        k(d)
    d = cuda.to_device(np.zeros((3, 4), np.float32))
    with pytest.raises(actdsl.ParameterError, match="row axis last"):
        k(d, axis=0)
    with pytest.raises(actdsl.ParameterError, match="shape"):
        k.vjp(d, cuda.to_device(np.zeros((4, 3), np.float32)))
    with pytest.raises(actdsl.ParameterError, match="stream"):
        k(np.zeros((3, 4)), stream="fast")
    with pytest.raises(actdsl.ParameterError, match="backend='cuda'"):
        actdsl.compile("softmax", backend="numpy")(np.zeros((3, 4)), stream=cuda.stream())


def test_float32_source_has_float32_constants_only():
    src = actdsl.compile("gelu+norm:z", backend="cuda").source
    assert "F = np.float32" in src and "def forward_rows" in src and "def vjp_rows" in src
    # every literal is a module-level constant of the kernel's type
    import re
    constants, kernels = src.split("SLOTS =")
    assert re.search(r"^c\d+ = F\(1e-08\)$", constants, re.M)  # norm:z's eps, typed
    assert not re.search(r"\d\.\d|\de-", kernels), "a float literal in a kernel body"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", ["+".join(["prelu"] * 6),
                                  "trel+{tanh(z)*softplus(z)}+prelu+norm:z+{min(z, 1)}+leaky_relu"])
def test_staged_compositions_agree(spec, dtype):
    """Specs over the plain compile budget, lowered in stages (actdsl.stage): each stage's value
    is an assignment in the kernel, in every loop that reads it."""
    kc, kp = pair(spec)
    assert kc.staged and kp.staged
    assert_backend_agrees(kc, kp, spec, dtype, units=11, param_bound=16 * np.finfo(dtype).eps * 40,
                          same_shapes=True)

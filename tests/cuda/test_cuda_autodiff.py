"""Forward mode and second order with backend='cuda' (under the simulator in CI): g'' runs on
the device; jvp and vjp_vjp take host arrays (NumPy code of the same plan) and refuse device
arrays with an ActdslError, never a crash."""
import numpy as np
import pytest
from numba import cuda

import actdsl


@pytest.mark.parametrize("spec", ["softplus", "gelu", "lgrelu+tanh"])
def test_second_derivative_on_the_device(spec):
    kc, kp = actdsl.compile(spec, backend="cuda"), actdsl.compile(spec)
    x = np.random.default_rng(1).normal(size=(3, 11)) * 3
    params = {n: v + 0.1 for n, v in kp.init_params(11, rng=1).items()}
    ref = kp.derivative(x, order=2, **params)
    np.testing.assert_allclose(kc.derivative(x, order=2, **params), ref, rtol=1e-12, atol=1e-14)
    dev = kc.derivative(cuda.to_device(x), order=2, **params)
    np.testing.assert_allclose(dev.copy_to_host(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("spec", ["tanh+norm:z", "maxout:3+softmax"])
def test_jvp_and_vjp_vjp_on_host_arrays(spec):
    kc, kp = actdsl.compile(spec, backend="cuda"), actdsl.compile(spec)
    rng = np.random.default_rng(2)
    x, v, g = (rng.normal(size=(3, 11)) for _ in range(3))
    params = kp.init_params(11, rng=1)
    np.testing.assert_allclose(kc.jvp(x, v, **params), kp.jvp(x, v, **params), rtol=1e-12)
    for a, b in zip(kc.vjp_vjp(x, g, v, **params), kp.vjp_vjp(x, g, v, **params)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(actdsl.ActdslError, match="host"):
        kc.jvp(cuda.to_device(x), cuda.to_device(v), **params)
    with pytest.raises(actdsl.ActdslError, match="host"):
        kc.vjp_vjp(cuda.to_device(x), g, v, **params)

"""Issue 15's edges on the CUDA backend (simulator in CI, the GPU where present): the limits at
±inf, rows near the largest floats, rows of one, and refused non-real constants. Expected values
are SymPy limits and mpmath truths, shared with tests/test_edges.py."""
import numpy as np
import pytest

import actdsl
from test_edges import (HUGE_ROWS, INDEPENDENT, assert_close_rows, expected_limits, truth_norm,
                        truth_norm_vjp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", ["silu", "mish", "hardswish", "softsign", "{z*exp(-z)}"])
def test_limits_at_inf(spec, dtype):
    assert spec in INDEPENDENT
    lo, hi, dlo, dhi = expected_limits(spec)
    k = actdsl.compile(spec, backend="cuda")
    x = np.array([-np.inf, np.inf], dtype)
    np.testing.assert_allclose(k(x).astype(np.float64), [lo, hi], rtol=1e-6)
    np.testing.assert_allclose(k.derivative(x).astype(np.float64), [dlo, dhi], rtol=1e-6)
    np.testing.assert_allclose(k.vjp(x, np.ones_like(x)).astype(np.float64), [dlo, dhi], rtol=1e-6)


@pytest.mark.parametrize("kind", ["norm:std", "norm:z"])
@pytest.mark.parametrize("dtype,row", HUGE_ROWS)
def test_rows_near_the_largest_floats(kind, dtype, row):
    x = np.array([row], dtype)
    g = np.array([np.linspace(-1, 2, len(row))], dtype)
    k = actdsl.compile(kind, backend="cuda")
    assert_close_rows(k(x), truth_norm(kind, x), dtype)
    assert_close_rows(k.vjp(x, g), truth_norm_vjp(kind, x, g), dtype, ulps=16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inner", ["softplus", "sigmoid", "tanh"])
def test_a_row_of_one_has_a_zero_gradient(inner, dtype):
    k = actdsl.compile(f"{inner}+norm:z", backend="cuda")
    for x in (1.0, 0.3, -5.0):
        for g in (1.0, 0.7):
            assert k.vjp(np.array([[x]], dtype), np.array([[g]], dtype))[0, 0] == 0
    assert np.all(k(np.full((2, 9), 0.7, dtype)) == 0)

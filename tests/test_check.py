"""actdsl.check: the report's arithmetic, every built-in passing, and real bugs caught."""
import math

import mpmath
import numpy as np
import pytest

import actdsl
from actdsl.check import MpEvaluator, check, exact_value, ulp, ulp_error
from actdsl.ir import z
from actdsl.registry import REGISTRY
from reference import COMPOSITIONS

KEYS = sorted(d.key if d.key != "maxout" else "maxout:3" for d in REGISTRY.definitions()
              if d.builtin)


def test_ulp_of_known_values():
    assert ulp(1.0, "float32") == mpmath.ldexp(1, -23)
    assert ulp(1.5, "float32") == mpmath.ldexp(1, -23)
    assert ulp(2.0, "float64") == mpmath.ldexp(1, -51)
    assert ulp(0.75, "float64") == mpmath.ldexp(1, -53)
    assert ulp(0, "float32") == mpmath.ldexp(1, -149)          # subnormal spacing
    assert ulp(1e-40, "float32") == mpmath.ldexp(1, -149)
    assert ulp(-3e38, "float32") == mpmath.ldexp(1, 127 - 23)


def test_ulp_error_of_known_values():
    one_up = float(np.nextafter(np.float32(1), np.float32(2)))
    assert ulp_error(one_up, 1, "float32") == 1.0
    assert ulp_error(1.0, mpmath.mpf(1) + mpmath.ldexp(1, -25), "float32") == 0.25
    # in ULP of the true value: the float just below 2 is half an ULP of 2 away
    assert ulp_error(float(np.nextafter(2.0, 0.0)), 2, "float64") == 0.5
    big = mpmath.mpf(2) ** 130
    assert ulp_error(math.inf, big, "float32") == 0.0                     # rounds to inf
    assert ulp_error(3.4e38, big, "float32") == math.inf
    assert ulp_error(math.nan, mpmath.nan, "float64") == 0.0
    assert ulp_error(0.0, mpmath.nan, "float64") == math.inf
    assert ulp_error(math.inf, 1, "float64") == math.inf


def test_truth_survives_cancellation():
    """x - tanh x at x = 1e-300 is x³/3: the evaluator raises precision until it knows."""
    import sympy as sp
    expr = z - sp.tanh(z)
    x = 1e-300
    t = exact_value(lambda: MpEvaluator({z: mpmath.mpf(x)})(expr))
    with mpmath.workdps(50):
        assert abs(t / (mpmath.mpf(x) ** 3 / 3) - 1) < 1e-25


@pytest.mark.parametrize("spec", KEYS + list(COMPOSITIONS))
def test_every_builtin_passes(spec):
    report = check(spec, points=40)
    assert report.passed, str(report)
    assert {r.backend for r in report.numeric} == {"numpy", "numba"}
    assert {r.dtype for r in report.numeric} == {"float32", "float64"}
    assert report.symbolic and report.finite_differences


def test_a_wrong_user_derivative_is_caught_with_the_point(tmp_path):
    class Wobbly(actdsl.Activation):
        """z³ with a derivative that is off by one."""

        def __call__(self, z):
            return z ** 3

        def derivative(self, z):
            return 3 * z ** 2 + 1

    try:
        report = check("wobbly", backend="numpy", dtype="float64")
        assert not report.passed
        (bad,) = [r for r in report.symbolic if "its derivative" in r.what]
        assert not bad.passed and bad.point is not None
        assert bad.got - bad.expected == pytest.approx(1.0)
        assert "first difference at z =" in str(report)
    finally:
        actdsl.unregister("wobbly")


def test_report_text_and_errors():
    text = str(check("relu", backend="numpy", dtype="float32", points=20))
    assert "symbolic" in text and "finite differences" in text and text.rstrip().endswith("PASS")
    with pytest.raises(actdsl.ActdslError, match="backend"):
        check("relu", backend="tpu")
    with pytest.raises(actdsl.ActdslError, match="dtype"):
        check("relu", dtype="float16")


# -- the bugs the check found, pinned --------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_prelu_keeps_its_leak_for_tiny_negative_inputs(backend):
    """max(0, z) - max(0, -r z) chose the wrong branch when -r z underflowed to 0."""
    for spec, p in (("prelu", {"r": 0.1}), ("lgrelu", {"r": 0.1, "g": 1.0})):
        k = actdsl.compile(spec, backend=backend)
        np.testing.assert_allclose(k.derivative(np.array([-1e-45], np.float32), **p), np.float32(0.1))
        np.testing.assert_allclose(k.derivative(np.array([-5e-324]), **p), 0.1)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanhshrink_is_accurate_near_zero(backend, dtype):
    k = actdsl.compile("tanhshrink", backend=backend)
    x = np.array([1e-30, -3e-8, 1e-3, 0.3, 1.9, 2.1, -5.0], dtype)
    got = k(x)
    for xi, gi in zip(x, got):
        truth = exact_value(lambda: mpmath.mpf(float(xi)) - mpmath.tanh(mpmath.mpf(float(xi))))
        assert ulp_error(gi, truth, np.dtype(dtype).name) <= 4


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_softsign_derivative_does_not_cancel(backend):
    k = actdsl.compile("softsign", backend=backend)
    x = np.array([1e10, -4.85e17, 3.0], np.float32)
    np.testing.assert_allclose(k.derivative(x), 1 / (1 + np.abs(x.astype(np.float64))) ** 2, rtol=1e-6)

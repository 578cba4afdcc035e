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


# -- kinks the floats do not hold: a jump next to x, or one inside a composition -------------------
@pytest.mark.parametrize("spec", [
    # at x = fl(0.331) (above the exact 331/1000) the true derivative is 1 and 0 one ULP below;
    # the kernels compare with 0.331 rounded to the dtype (2^23 ULP in float32 by the linear measure)
    "hardtanh(min_val=0.331, max_val=0.652)",
    # |leaky(z)| > 1/2 meets at z = -5: a finite difference across it was an error of 10
    "{min(z, 1)}+{(z > 0)*z + (z <= 0)*0.1*z}+hardshrink",
])
def test_kinks_between_floats_and_inside_compositions_pass(spec):
    report = check(spec, backend="numpy", points=40)
    assert report.passed, str(report)


class _Planted:
    """A kernel whose derivative (and VJP) is ``wrong`` where ``where(x)``: what the check
    must still report."""

    def __init__(self, kernel, where, wrong):
        self.k, self.where, self.wrong = kernel, where, wrong

    def __call__(self, x, **p):
        return self.k(x, **p)

    def derivative(self, x, **p):
        d = np.array(self.k.derivative(x, **p))
        d[self.where(x)] = self.wrong
        return d

    def vjp(self, x, g, **p):
        return self.derivative(x, **p) * g


@pytest.mark.parametrize("where, wrong, worst", [
    (lambda x: x == 0, 1.0, 0.0),      # relu'(0) = 1: the convention at a kink is held exactly
    (lambda x: (x > 1) & (x < 10), 1.5, None),  # plain wrong values, no kink near them
    (lambda x: (x > 0) & (x < 1e-30), 0.0, None),  # the kink taken for tiny positive x
])
def test_a_wrong_derivative_near_a_kink_is_still_caught(where, wrong, worst):
    import random
    from actdsl.check import _numeric_elementwise, _param_values
    ref = actdsl.compile("relu")
    planted = _Planted(ref, where, wrong)
    for dtype in ("float32", "float64"):
        results = _numeric_elementwise({"planted": planted}, ref, _param_values(ref), dtype,
                                       random.Random(0), False, 40)
        for r in results:
            if r.what == "forward":
                assert r.passed, r
            else:
                assert not r.passed, r
                if worst is not None:
                    assert r.worst_input == worst

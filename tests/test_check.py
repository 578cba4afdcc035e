"""actdsl.check: the report's arithmetic, every built-in passing, and real bugs caught."""
import math
import signal

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


def test_truth_of_a_sum_that_cancels_below_every_precision_tried():
    """1 - erfc(u/√2)/2 (Φ in textbook form) at u = -40 is 3.6e-350: exactly 0 at 50 and 70
    digits, which agreed, so the truth of gelu's derivative u φ(u) + Φ(u) there lost its Φ
    term (off by 6e-4 relative)."""
    import sympy as sp
    u = sp.Symbol("u", real=True)
    gelu_d = u * sp.exp(-u ** 2 / 2) / sp.sqrt(2 * sp.pi) + 1 - sp.erfc(u / sp.sqrt(2)) / 2
    t = exact_value(lambda: MpEvaluator({u: mpmath.mpf(-40)})(gelu_d))
    with mpmath.workdps(60):
        assert abs(t / (-40 * mpmath.npdf(-40) + mpmath.ncdf(-40)) - 1) < 1e-25
    assert MpEvaluator({u: mpmath.mpf(-1)})(u + 1) == 0   # a true 0 stays 0


def test_the_truth_of_a_power_far_beyond_every_float():
    """z**z**z at 3e38 is 2 to the 10**40: mpmath wrote out its exponent until MemoryError
    (actdsl check '{z**z**z}+celu' died with it). Far beyond every float, the truth is inf, or 0
    below the subnormals, which is all a ULP comparison needs."""
    import sympy as sp
    assert MpEvaluator({z: mpmath.mpf(3e38)})(z ** z ** z) == mpmath.inf
    assert MpEvaluator({z: mpmath.mpf(1e-30)})(z ** (1 / z)) == 0
    assert MpEvaluator({z: mpmath.mpf(2)})(z ** (z + sp.Rational(1, 2))) == mpmath.sqrt(32)
    report = check("{z**z**z}", backend="numpy", dtype="float64", points=20)  # a report, not a crash
    assert report.numeric


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


# -- compositions the check itself could not take (each raised, or failed a right kernel) ---------
@pytest.mark.parametrize("spec", [
    # the parameters of the elementwise head of a row-wise spec are the whole spec's first ones
    "softplus+norm:z+lgrelu",
    # SymPy's piecewise_fold met a condition holding a Piecewise (AssertionError)
    "linear+norm:max(eps=0.296)+softmax",
    # SymPy folded |z_0| into -z_0 under z_1 < 0 inside the row's max: a right VJP failed
    "norm:max+{max(z, 0.5)}",
    # d(P**2) = P**2 · 2P'/P put 1/0 (zoo) into the truth where the Piecewise P is 0
    "maxout:2+{min(max(z, 0), 1)**2}+silu",
    # the truth of gelu'(-40) lost Φ(-40) to a cancellation below every precision tried
    "softshrink+gelu",
    # log_softmax's attop(u, r1) evaluated again at 4x the digits against a row maximum r1 kept
    # at 1x: the tie lost, Σ exp(u - r1) without its -1, and a right forward and VJP failed
    "logistic+log_softmax",
    "tanh+log_softmax+elu",
    # the stand-in for a Piecewise while SymPy differentiates was complex: |F|' held re and im
    "{min(z, 1)}+softsign+tanh",
    # the textbook softplus log(1 + e^u) at u = -709: 1 + 1e-308 rounded to 1 at 50 and at 100
    # digits, two precisions agreed on a truth without mish's tanh(softplus(u)) term
    "softshrink+mish",
    # SymPy's Piecewise constructor, given a derivative's branches, re-evaluated their conditions
    # and raised TypeError("Invalid NaN comparison")
    "hardshrink+prelu+selu",
])
def test_compositions_the_check_could_not_take(spec):
    report = check(spec, backend="numpy", points=20)
    assert report.passed, str(report)


def test_truth_far_beyond_every_float_comes_in_seconds():
    """mpmath computed exp(exp(exp(3e38))) exactly (an exponent of 10^38 digits: hours); past
    2**20 exp saturates (its value is beyond every float's range, as _pow's powers are), and sin
    of a number past 2**4096 is NaN, as at inf (the reduction modulo 2π took as many bits)."""
    def stop(*_):
        raise TimeoutError("actdsl.check took over 60 s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    try:
        assert check("{exp(exp(exp(z)))}", backend="numpy", dtype="float64", points=20).passed
        check("{sin(exp(exp(z)))}", backend="numpy", dtype="float64", points=20)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


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


class _Scaled:
    """A kernel whose derivative, VJP and JVP are ``factor`` times the true ones, and whose
    second order is true (each then disagrees with the differences of the first order)."""

    def __init__(self, kernel, factor):
        self.k, self.f = kernel, factor
        self.rowwise, self.expr, self.backend = kernel.rowwise, kernel.expr, "scaled"

    def __call__(self, x, **p):
        return self.k(x, **p)

    def _times(self, y):
        with np.errstate(over="ignore"):  # (z**49's derivative is inf in float32 at 6)
            return y * y.dtype.type(self.f)

    def derivative(self, x, order=1, **p):
        d = self.k.derivative(x, order=order, **p)
        return self._times(d) if order == 1 else d

    def vjp(self, x, g, **p):
        return self._times(self.k.vjp(x, g, **p))

    def jvp(self, x, v, **p):
        return self._times(self.k.jvp(x, v, **p))

    def vjp_vjp(self, x, g, v, **p):
        return self.k.vjp_vjp(x, g, v, **p)


@pytest.mark.parametrize("spec", ["{z**7}+{z**7}", "tanh+{z**5}"])
def test_finite_differences_allow_for_their_step_and_not_for_a_wrong_derivative(spec):
    """z**49's third derivative made a central difference at -0.99 miss by 1.4e-8 of the scale
    in float64 (bound 1.8e-9) and overflow at 6 in float32: the step's own truncation error
    (|D(2h) - D(h)|) is allowed and overflowing points are left out; a derivative 1e-5 off
    relative (float64; 50% in float32, where z**49 curves 6% within a step) is still caught, by
    the first-order differences and by the higher-order ones."""
    import random
    from actdsl.check import _finite_differences, _param_values
    from actdsl.check_autodiff import higher_order
    k = actdsl.compile(spec)
    for dtype, wrong in (("float32", 1.5), ("float64", 1 + 1e-5)):
        good = [_finite_differences(k, _param_values(k), dtype, random.Random(0))]
        good += higher_order(k, _param_values(k), np.dtype(dtype).type, random.Random(0))
        assert all(r.passed for r in good), [r.line() for r in good]
        bad = _Scaled(k, wrong)
        caught = [_finite_differences(bad, _param_values(k), dtype, random.Random(0))]
        caught += higher_order(bad, _param_values(k), np.dtype(dtype).type, random.Random(0))
        assert not any(r.passed for r in caught), [r.line() for r in caught]

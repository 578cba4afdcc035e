"""Forward mode (Kernel.jvp), second derivatives and the VJP of the VJP.

Expected values come from outside the code under test: central finite differences of the forward
(and of the VJP) in float64, the adjoint identity ⟨dy, J dx⟩ = ⟨Jᵀ dy, dx⟩ against the first-order
VJP (tested on its own elsewhere), and mpmath's numerical second derivative of hand-written
formulas.
"""
import math
import warnings

import mpmath
import numpy as np
import pytest

import actdsl
from actdsl import ActdslError, ParameterError
from actdsl.registry import REGISTRY
from reference import COMPOSITIONS

KEYS = sorted(d.key if d.key != "maxout" else "maxout:3" for d in REGISTRY.definitions()
              if d.builtin)
SPECS = KEYS + list(COMPOSITIONS) + ["prelu+norm:z", "maxout:3+softmax", "lgrelu+tanh+softmax",
                                     "{z * sigmoid(z)}+norm:mean"]
H = 1e-6


def _setup(spec, backend="numpy", shape=(3, 6), seed=7):
    k = actdsl.compile(spec, backend=backend)
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=1.5, size=shape)
    params = k.init_params(shape[-1], rng=seed)
    # move every parameter off its default (prelu's r = 0.25 ... ) and give it a tangent
    params = {n: v + rng.uniform(0.05, 0.3, size=v.shape) for n, v in params.items()}
    dparams = {n: rng.normal(size=v.shape) for n, v in params.items()}
    return k, rng, x, params, dparams


def _shifted(params, dparams, t):
    return {n: params[n] + t * dparams[n] for n in params}


def _close(a, b, scale=1.0, tol=2e-6):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.all(np.abs(a - b) <= tol * (scale + np.abs(b))), (a, b)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("spec", SPECS)
def test_jvp_matches_finite_differences_and_the_vjp(spec, backend):
    k, rng, x, p, dp = _setup(spec, backend)
    v = rng.normal(size=x.shape)
    g = rng.normal(size=x.shape)
    jv = k.jvp(x, v, dparams=dp, **p)
    fd = (k(x + H * v, **_shifted(p, dp, H)) - k(x - H * v, **_shifted(p, dp, -H))) / (2 * H)
    _close(jv, fd, scale=np.abs(fd).max() + 1, tol=1e-6)
    # adjoint identity: ⟨g, J v⟩ + 0 = ⟨Jᵀ g, v⟩ + ⟨∂θ, θ̇⟩
    dx, dth = k.vjp(x, g, with_params=True, **p)
    lhs = np.sum(g * jv)
    rhs = np.sum(dx * v) + sum(np.sum(dth[n] * dp[n]) for n in p)
    assert math.isclose(lhs, rhs, rel_tol=1e-10, abs_tol=1e-10)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("spec", ["softplus", "tanh+norm:z", "softmax", "maxout:3", "prelu"])
def test_jvp_keeps_dtype_axis_and_shape(spec, backend):
    k, rng, x, p, _ = _setup(spec, backend, shape=(4, 5, 3))
    v = rng.normal(size=x.shape)
    p0 = {n: a[:4] if a.shape[0] == 3 else a for n, a in k.init_params(4, rng=1).items()}
    ref = k.jvp(np.moveaxis(x, 0, -1), np.moveaxis(v, 0, -1), **p0)
    got = k.jvp(x, v, axis=0, **p0)
    assert got.shape == x.shape
    _close(got, np.moveaxis(ref, -1, 0), tol=1e-12)
    y32 = k.jvp(x.astype(np.float32), v.astype(np.float32), axis=0, **p0)
    assert y32.dtype == np.float32
    _close(y32, got, scale=np.abs(got).max(), tol=1e-4)
    assert k.jvp(np.empty((0, 4)), np.empty((0, 4)), **p0).shape == (0, 4)


def test_jvp_of_a_scalar_and_of_ints():
    k = actdsl.compile("softplus", backend="numba")
    assert math.isclose(float(k.jvp(0.5, 2.0)), 2 / (1 + math.exp(-0.5)), rel_tol=1e-12)
    assert k.jvp(np.arange(3), np.ones(3, int)).dtype == np.float64


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_jvp_argument_errors(backend):
    k = actdsl.compile("prelu", backend=backend)
    x = np.ones((2, 3))
    with pytest.raises(ParameterError, match="dx has shape"):
        k.jvp(x, np.ones(3), r=0.1)
    with pytest.raises(ParameterError, match="no parameter 'g'"):
        k.jvp(x, x, dparams={"g": 1.0}, r=0.1)
    with pytest.raises(ParameterError, match="needs parameter 'r'"):
        k.jvp(x, x)
    with pytest.raises(ParameterError, match="no parameters"):
        actdsl.compile("relu", backend=backend).jvp(x, x, dparams={"r": 1.0})


# -- second derivatives of elementwise specs ---------------------------------------------------
def _mp_sigmoid(t):
    return 1 / (1 + mpmath.exp(-t))


SECOND = {  # hand-written from the definitions, evaluated by mpmath
    "sigmoid": _mp_sigmoid,
    "tanh": mpmath.tanh,
    "softplus": lambda t: mpmath.log(1 + mpmath.exp(t)),
    "silu": lambda t: t * _mp_sigmoid(t),
    "gelu": lambda t: t * mpmath.ncdf(t),
    "mish": lambda t: t * mpmath.tanh(mpmath.log(1 + mpmath.exp(t))),
    "softsign": lambda t: t / (1 + abs(t)),
    "logsigmoid": lambda t: -mpmath.log(1 + mpmath.exp(-t)),
    "elu": lambda t: t if t > 0 else mpmath.expm1(t),
    "selu": lambda t: mpmath.mpf("1.0507009873554804934193349852946")
    * (t if t > 0 else mpmath.mpf("1.6732632423543772848170429916717") * mpmath.expm1(t)),
    "tanhshrink": lambda t: t - mpmath.tanh(t),
    "exponential": mpmath.exp,
    "relu": lambda t: max(t, 0),
    "sparse_plus": lambda t: 0 if t <= -1 else ((t + 1) ** 2 / 4 if t < 1 else t),
}
POINTS = [-30.0, -7.5, -2.25, -1.1, -0.6, -0.013, 0.02, 0.4, 0.93, 1.7, 3.1, 9.0, 25.0]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("key", sorted(SECOND))
def test_second_derivative_against_mpmath(key, backend):
    k = actdsl.compile(key, backend=backend)
    f = SECOND[key]
    with mpmath.workdps(40):
        truth = np.array([float(mpmath.diff(f, mpmath.mpf(t), 2)) for t in POINTS])
    # float32: relative, except near a zero of g'' (mish's), where terms of order 1 cancel
    for dtype, tol, scale in ((np.float64, 1e-12, 1e-30), (np.float32, 2e-6, 1e-2)):
        got = k.derivative(np.array(POINTS, dtype), order=2)
        assert got.dtype == dtype
        _close(got, truth, scale=scale, tol=tol)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_second_derivative_at_kinks_takes_the_selected_branch(backend):
    # relu is 0 for z <= 0 and z above: g'' = 0 on both; elu(alpha) is alpha*expm1(z) for
    # z <= 0, so g''(0) = alpha; sparse_plus is (z+1)^2/4 on (-1, 1): g''(1) is z's, 0
    assert actdsl.compile("relu", backend=backend).derivative(np.array([0.0]), order=2)[0] == 0
    k = actdsl.compile("elu(alpha=0.5)", backend=backend)
    assert k.derivative(np.array([0.0, 1e-300, -1e-300]), order=2).tolist() == [0.5, 0.0, 0.5]
    k = actdsl.compile("sparse_plus", backend=backend)
    assert k.derivative(np.array([-1.0, 0.0, 1.0]), order=2).tolist() == [0.0, 0.5, 0.0]
    k = actdsl.compile("softplus", backend=backend)
    got = k.derivative(np.array([np.nan, np.inf, -np.inf, 800.0, -800.0]), order=2)
    assert np.isnan(got[0]) and got[1:].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_second_derivative_with_parameters():
    k = actdsl.compile("lgrelu+softplus")
    x = np.array([[-1.5, 0.7], [2.0, -0.1]])
    g, r = np.array([1.5, 0.5]), np.array([0.2, 0.3])
    with mpmath.workdps(40):
        def f(t, gi, ri):
            u = gi * t if t > 0 else ri * t
            return mpmath.log(1 + mpmath.exp(u))
        truth = [[float(mpmath.diff(lambda t: f(t, g[j], r[j]), mpmath.mpf(x[i, j]), 2))
                  for j in range(2)] for i in range(2)]
    _close(k.derivative(x, order=2, g=g, r=r), truth, scale=0, tol=1e-12)


def test_second_derivative_errors():
    with pytest.raises(ActdslError, match="row-wise"):
        actdsl.compile("softmax").derivative(np.ones(3), order=2)
    for bad in (0, 3, True, "2"):
        with pytest.raises(ParameterError, match="order"):
            actdsl.compile("tanh").derivative(np.ones(3), order=bad)


# -- the VJP of the VJP (Hessian-vector products) ------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("spec", SPECS)
def test_vjp_of_vjp_matches_finite_differences_of_the_vjp(spec, backend):
    k, rng, x, p, dp = _setup(spec, backend)
    g, w = rng.normal(size=x.shape), rng.normal(size=x.shape)
    d_x, d_dy, d_p = k.vjp_vjp(x, g, w, ddparams=dp, with_params=True, **p)
    up = k.vjp(x + H * w, g, with_params=True, **_shifted(p, dp, H))
    down = k.vjp(x - H * w, g, with_params=True, **_shifted(p, dp, -H))
    fd = (up[0] - down[0]) / (2 * H)
    _close(d_x, fd, scale=np.abs(fd).max() + 1, tol=1e-6)
    for n in p:
        fdp = (up[1][n] - down[1][n]) / (2 * H)
        _close(d_p[n], fdp, scale=np.abs(fdp).max() + 1, tol=1e-6)
    # with respect to dy, the VJP is linear: its VJP is J w
    _close(d_dy, k.jvp(x, w, dparams=dp, **p), tol=1e-12)


def test_vjp_of_vjp_is_a_symmetric_hessian():
    """⟨u, H_g w⟩ = ⟨w, H_g u⟩ for the Hessian of ⟨g, y⟩ (norm:z: no elementwise shortcut)."""
    k, rng, x, _, _ = _setup("tanh+norm:z")
    g, u, w = (rng.normal(size=x.shape) for _ in range(3))
    a = np.sum(u * k.vjp_vjp(x, g, w)[0])
    b = np.sum(w * k.vjp_vjp(x, g, u)[0])
    assert math.isclose(a, b, rel_tol=1e-12)


def test_vjp_of_vjp_dtype_and_elementwise_case():
    k = actdsl.compile("softplus", backend="numba")
    x = np.linspace(-3, 3, 7, dtype=np.float32)
    g, w = np.full(7, 2.0, np.float32), np.full(7, 0.5, np.float32)
    d_x, d_dy = k.vjp_vjp(x, g, w)
    assert d_x.dtype == d_dy.dtype == np.float32
    _close(d_x, 2 * 0.5 * k.derivative(x.astype(np.float64), order=2), tol=1e-6)
    _close(d_dy, 0.5 * k.derivative(x.astype(np.float64)), tol=1e-6)


def test_vjp_of_vjp_past_float32s_range_is_inf_without_a_warning():
    """vjp_vjp computes in float64; a float32 result beyond float32's range is ±inf, as the
    correctly rounded cast gives, and NumPy's 'overflow encountered in cast' is not the user's
    business. {z**3} at 3e30: d_x = 6 z dy ddx = 1.8e31, d_dy = 3 z² ddx = 2.7e61 -> inf."""
    k = actdsl.compile("{z**3}", backend="numpy")
    x = np.array([3e30, -3e30], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d_x, d_dy = k.vjp_vjp(x, np.ones(2, np.float32), np.ones(2, np.float32))
    _close(d_x, np.array([6 * 3e30, -6 * 3e30]), tol=1e-6)
    assert d_dy.dtype == np.float32 and list(d_dy) == [np.inf, np.inf]


# -- actdsl.check checks them too ----------------------------------------------------------------
def test_check_reports_and_catches_wrong_higher_derivatives(monkeypatch):
    report = actdsl.check("softplus", backend="numpy", dtype="float64", points=40)
    names = {r.backend for r in report.finite_differences}
    assert {"numpy jvp", "numpy hvp", "numpy g''"} <= names and report.passed
    rows = actdsl.check("tanh+norm:z", backend="numpy", dtype="float64", points=40)
    assert {"numpy jvp", "numpy hvp"} <= {r.backend for r in rows.finite_differences}
    assert "numpy g''" not in {r.backend for r in rows.finite_differences}
    k = actdsl.compile("tanh+norm:z")
    right = type(k).jvp
    monkeypatch.setattr(type(k), "jvp", lambda self, *a, **kw: 1.001 * right(self, *a, **kw))
    bad = actdsl.check("tanh+norm:z", backend="numpy", dtype="float64", points=40)
    assert [r.backend for r in bad.failures()] == ["numpy jvp"]

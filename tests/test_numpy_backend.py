"""The NumPy backend against independent references, finite differences and mpmath."""
import warnings

import mpmath as mp
import numpy as np
import pytest

import actdsl
from conftest import away_from_kinks, numeric_vjp
from reference import COMPOSITIONS, KINKS, PARAMETRIC, ROWWISE, SEED

ALL_SEED = [*SEED, *PARAMETRIC]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-6, atol=2e-6)}


def _params(spec, units, rng):
    k = actdsl.compile(spec)
    p = k.init_params(units, rng=rng)
    if "r" in p:
        p["r"] = rng.uniform(0.05, 0.5, size=p["r"].shape)
    if "g" in p:
        p["g"] = rng.uniform(0.5, 2.0, size=p["g"].shape)
    return p


# -- values ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("key", list(SEED))
def test_seed_key_matches_reference(key, dtype, rng):
    x = (rng.normal(size=(6, 7)) * 3).astype(dtype)
    y = actdsl.compile(key)(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, SEED[key](x.astype(np.float64)), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("key", list(PARAMETRIC))
def test_parametric_key_matches_reference(key, dtype, rng):
    x = (rng.normal(size=(5, 4)) * 3).astype(dtype)
    p = _params(key, 4, rng)
    y = actdsl.compile(key)(x, **p)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, PARAMETRIC[key](x.astype(np.float64), **p), **TOL[dtype])


@pytest.mark.parametrize("spec", list(COMPOSITIONS))
def test_compositions_match_reference(spec, rng):
    x = rng.normal(size=(4, 9)) * 2
    np.testing.assert_allclose(actdsl.compile(spec)(x), COMPOSITIONS[spec](x), rtol=1e-11, atol=1e-11)


def test_row_axis_and_shapes(rng):
    x = rng.normal(size=(3, 4, 5))
    k = actdsl.compile("norm:z")
    for axis in range(3):
        expected = np.moveaxis(SEED["norm:z"](np.moveaxis(x, axis, -1)), -1, axis)
        np.testing.assert_allclose(k(x, axis=axis), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(k(x, axis=axis - 3), expected, rtol=1e-12, atol=1e-12)
    one_d = rng.normal(size=7)
    np.testing.assert_allclose(k(one_d), SEED["norm:z"](one_d), rtol=1e-12)
    assert actdsl.compile("relu")(np.float64(-2.0)).shape == ()
    assert actdsl.compile("softmax")(np.zeros((0, 3))).shape == (0, 3)
    assert actdsl.compile("tanh")(np.zeros((2, 0))).shape == (2, 0)


def test_dtypes(rng):
    k = actdsl.compile("tanh")
    assert k(np.arange(3)).dtype == np.float64
    assert k([1, 2, 3]).dtype == np.float64
    assert k(np.arange(3, dtype=np.float32)).dtype == np.float32
    assert k(np.arange(3, dtype=np.float16)).dtype == np.float16
    x = rng.normal(size=(3, 5)).astype(np.float32)
    assert actdsl.compile("norm:z").vjp(x, x).dtype == np.float32
    with pytest.raises(actdsl.ArrayTypeError, match="complex"):
        k(np.ones(3, dtype=complex))
    with pytest.raises(actdsl.ArrayTypeError, match="dtype"):
        k(np.array(["a"]))


def test_non_contiguous_and_read_only_input(rng):
    x = rng.normal(size=(8, 6))[::2, ::-1]
    x.setflags(write=False)
    np.testing.assert_allclose(actdsl.compile("softmax")(x), SEED["softmax"](x), rtol=1e-12)
    np.testing.assert_allclose(actdsl.compile("tanh")(x), np.tanh(x), rtol=1e-14)


# -- gradients against central differences ------------------------------------------------------
SPECS_FOR_GRAD = [*SEED, *COMPOSITIONS]


@pytest.mark.parametrize("spec", SPECS_FOR_GRAD)
def test_vjp_matches_finite_differences(spec, rng):
    k = actdsl.compile(spec)
    x = away_from_kinks(rng.normal(size=(3, 5)) * 2)
    g = rng.normal(size=x.shape)
    expected = numeric_vjp(k, x, g)
    np.testing.assert_allclose(k.vjp(x, g), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", [*PARAMETRIC, "prelu+norm:z", "tanh+lgrelu+softmax",
                                  "maxout:2+norm:max"])
def test_parameter_gradients_match_finite_differences(spec, rng):
    k = actdsl.compile(spec)
    units = 4
    p = _params(spec, units, rng)
    x = away_from_kinks(rng.normal(size=(3, units)) * 2)
    g = rng.normal(size=x.shape)
    dx, dp = k.vjp(x, g, with_params=True, **p)
    np.testing.assert_allclose(dx, numeric_vjp(lambda v: k(v, **p), x, g), rtol=1e-6, atol=1e-7)
    assert set(dp) == set(p)
    for name, value in p.items():
        def f(v, name=name):
            return k(x, **{**p, name: v})
        np.testing.assert_allclose(dp[name], numeric_vjp(f, value, g), rtol=1e-6, atol=1e-7,
                                   err_msg=f"d{name}")


def test_parameter_gradient_has_the_shape_given(rng):
    k = actdsl.compile("prelu")
    x, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    _, full = k.vjp(x, g, with_params=True, r=np.full(4, 0.2))
    _, scalar = k.vjp(x, g, with_params=True, r=0.2)
    assert full["r"].shape == (4,) and scalar["r"].shape == ()
    assert np.isclose(full["r"].sum(), scalar["r"])


@pytest.mark.parametrize("spec", [k for k in SEED if k not in ROWWISE])
def test_derivative_matches_finite_differences(spec, rng):
    k = actdsl.compile(spec)
    x = away_from_kinks(rng.normal(size=40) * 2)
    h = 1e-6
    np.testing.assert_allclose(k.derivative(x), (k(x + h) - k(x - h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_derivative_of_rowwise_spec_is_refused():
    with pytest.raises(actdsl.ActdslError, match="vjp"):
        actdsl.compile("softmax").derivative(np.ones(3))


# -- kinks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("key", list(KINKS))
def test_kink_convention(key, dtype):
    k = actdsl.compile(key)
    points = [*KINKS[key]] + ([-0.0] if 0.0 in KINKS[key] else [])
    x = np.array(points, dtype=dtype)
    want = np.array([KINKS[key][abs(p) if p == 0 else p] for p in points], dtype=dtype)
    np.testing.assert_array_equal(k.derivative(x), want)
    np.testing.assert_array_equal(k.vjp(x, np.ones_like(x)), want)


def test_parametric_kinks_select_the_zero_branch():
    x = np.array([0.0, -0.0])
    for spec, p in [("prelu", dict(r=0.3)), ("lgrelu", dict(r=0.3, g=2.0))]:
        k = actdsl.compile(spec)
        dx, dp = k.vjp(x, np.ones(2), with_params=True, **p)
        assert np.array_equal(dx, [0.0, 0.0]), spec
        assert all(np.all(v == 0) for v in dp.values()), spec


def test_maxout_ties_go_to_the_first_piece():
    k = actdsl.compile("maxout:2")
    x = np.array([0.0, 2.0])
    m, b = np.array([[1.0, -1.0]] * 2), np.zeros((2, 2))
    _, dp = k.vjp(x, np.ones(2), with_params=True, m=m, b=b)
    assert np.array_equal(dp["b"], [[1.0, 0.0], [1.0, 0.0]])  # z=0: both pieces 0, first wins


# -- extreme inputs against mpmath -------------------------------------------------------------
mp.mp.dps = 50
MP = {
    "linear": (lambda t: t, lambda t: mp.mpf(1)),
    "sigmoid": (lambda t: 1 / (1 + mp.exp(-t)), lambda t: mp.exp(-t) / (1 + mp.exp(-t)) ** 2),
    "tanh": (mp.tanh, lambda t: mp.sech(t) ** 2),
    "softplus": (lambda t: mp.log1p(mp.exp(t)), lambda t: 1 / (1 + mp.exp(-t))),
    "relu": (lambda t: max(t, 0), lambda t: mp.mpf(t > 0)),
    "trel": (lambda t: max(0, min(1, t)), lambda t: mp.mpf(0 < t < 1)),
    "trec": (lambda t: t if t > 1 else mp.mpf(0), lambda t: mp.mpf(t > 1)),
    "tlin": (lambda t: t if abs(t) > 1 else mp.mpf(0), lambda t: mp.mpf(abs(t) > 1)),
    "rect:min": (lambda t: min(1, t), lambda t: mp.mpf(t < 1)),
}
MP["logistic"], MP["rect:max"] = MP["sigmoid"], MP["relu"]
EXTREMES = [1e4, -1e4, 88.8, -88.8, 710.0, -710.0, 0.5, -3.0]
LIMITS = {  # g(+inf), g(-inf), g'(+inf), g'(-inf)
    "linear": (np.inf, -np.inf, 1, 1), "sigmoid": (1, 0, 0, 0), "logistic": (1, 0, 0, 0),
    "tanh": (1, -1, 0, 0), "softplus": (np.inf, 0, 1, 0), "relu": (np.inf, 0, 1, 0),
    "rect:max": (np.inf, 0, 1, 0), "trel": (1, 0, 0, 0), "trec": (np.inf, 0, 1, 0),
    "tlin": (np.inf, -np.inf, 1, 1), "rect:min": (1, -np.inf, 0, 1),
}


def _close_in_dtype(got, exact, dtype, ulps=4):
    want = np.array(float(exact)).astype(dtype)
    if np.isinf(want) or want == 0:
        return got == want or abs(float(got)) <= np.finfo(dtype).smallest_normal * ulps
    return abs(float(got) - float(exact)) <= ulps * np.spacing(np.abs(want))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("key", list(MP))
def test_extreme_inputs_give_the_true_values(key, dtype):
    f, df = MP[key]
    k = actdsl.compile(key)
    x = np.array(EXTREMES + [np.inf, -np.inf, np.nan], dtype=dtype)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        y, d, v = k(x), k.derivative(x), k.vjp(x, np.ones_like(x))
    for i, t in enumerate(EXTREMES):
        exact_y, exact_d = f(mp.mpf(float(np.array(t, dtype)))), df(mp.mpf(float(np.array(t, dtype))))
        assert _close_in_dtype(y[i], exact_y, dtype), (key, t, y[i], exact_y)
        assert _close_in_dtype(d[i], exact_d, dtype), (key, t, d[i], exact_d)
        assert _close_in_dtype(v[i], exact_d, dtype), (key, t, v[i], exact_d)
    gp, gm, dp, dm = LIMITS[key]
    assert (y[-3], y[-2]) == (gp, gm), key
    assert (d[-3], d[-2]) == (dp, dm) and (v[-3], v[-2]) == (dp, dm), key
    assert np.isnan(y[-1]) and np.isnan(d[-1]) and np.isnan(v[-1]), key


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("key", sorted(ROWWISE))
def test_rowwise_extremes_are_finite_and_right(key, dtype):
    row = np.array([1e4, -1e4, 88.8, -88.8, 710.0, -710.0, 0.5], dtype=dtype)
    x = np.stack([row, row[::-1] / 7, np.full(7, 3.0, dtype), np.zeros(7, dtype)])
    k = actdsl.compile(key)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        y = k(x)
        dx = k.vjp(x, np.ones_like(x) / 3)
    assert y.dtype == dtype and np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    expected = SEED[key](x.astype(np.float64))  # fine here: the reference is stable at these values
    # row-wise error is relative to the row's scale (float32 sums of cancelling 1e4s lose ~1e-4)
    scale = np.max(np.abs(expected), axis=-1, keepdims=True)
    assert np.all(np.abs(y - expected) <= TOL[dtype]["rtol"] * 4 * scale + 1e-300), key


def test_softmax_infinities_are_limits():
    k = actdsl.compile("softmax")
    x = np.array([[np.inf, 0.0, 1.0], [-np.inf, 0.0, 0.0], [-np.inf, -np.inf, 2.0], [np.nan, 0.0, 1.0]])
    with np.errstate(all="raise"):
        y = k(x)
    np.testing.assert_array_equal(y[0], [1, 0, 0])
    np.testing.assert_allclose(y[1], [0, 0.5, 0.5])
    np.testing.assert_array_equal(y[2], [0, 0, 1])
    assert np.all(np.isnan(y[3]))
    logk = actdsl.compile("log_softmax")
    with np.errstate(all="raise"):
        ly = logk(x[:3])
    np.testing.assert_array_equal(ly[0], [0, -np.inf, -np.inf])
    np.testing.assert_array_equal(ly[2], [-np.inf, -np.inf, 0])


def test_constant_and_single_element_rows_have_finite_gradients():
    for key in ["norm:std", "norm:z", "norm:max", "norm:mean", "softmax"]:
        k = actdsl.compile(key)
        for x in (np.full((2, 5), 3.0), np.array([[2.0], [-1.0]]), np.zeros((1, 4))):
            with np.errstate(all="raise"):
                y, dx = k(x), k.vjp(x, np.ones_like(x))
            assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), (key, x)


# -- parameters and arguments -------------------------------------------------------------------
def test_parameter_errors(rng):
    k = actdsl.compile("prelu")
    x = rng.normal(size=(2, 3))
    with pytest.raises(actdsl.ParameterError, match="needs parameter 'r'.*init_params"):
        k(x)
    with pytest.raises(actdsl.ParameterError, match="did you mean 'r'"):
        k(x, r=0.1, rr=1)
    with pytest.raises(actdsl.ParameterError, match=r"shape \(4,\); expected \(3,\)"):
        k(x, r=np.ones(4))
    with pytest.raises(actdsl.ParameterError, match="out of range"):
        k(x, axis=2, r=0.1)
    with pytest.raises(actdsl.ParameterError, match="dy has shape"):
        k.vjp(x, np.ones(3), r=0.1)
    with pytest.raises(actdsl.ParameterError, match="no parameter"):
        actdsl.compile("relu")(x, r=1)
    m = actdsl.compile("maxout:3")
    assert m.init_params(3)["m"].shape == (3, 3)
    np.testing.assert_allclose(m(x, m=[1.0, 0.0, -1.0], b=0.0), np.abs(x))  # same pieces for all units


def test_fixed_parameters_in_the_spec(rng):
    x = rng.normal(size=(3, 4))
    np.testing.assert_allclose(actdsl.compile("prelu(r=0.1)")(x), np.where(x > 0, x, 0.1 * x))
    assert actdsl.compile("prelu(r=0.1)").params == ()
    k = actdsl.compile("maxout:2(m=[1, -1], b=[0, 0])")
    np.testing.assert_allclose(k(x), np.abs(x))
    assert [p.name for p in actdsl.compile("prelu+prelu").params] == ["r", "r_2"]


def test_init_params(rng):
    k = actdsl.compile("lgrelu")
    p = k.init_params(5)
    assert p["g"].shape == (5,) and np.all(p["g"] == 1) and np.all(p["r"] == 0.1)
    with pytest.raises(actdsl.ParameterError):
        k.init_params(0)


def test_kernel_exposes_symbolic_forms_and_source():
    import sympy as sp
    k = actdsl.compile("softplus")
    z = sp.Symbol("z", real=True)
    assert sp.simplify((k.expr.rewrite(sp.exp) - sp.log(1 + sp.exp(z)))) == 0
    assert "def forward" in k.source and "def vjp" in k.source and "def derivative" in k.source
    assert isinstance(actdsl.compile("softmax").derivative_expr, sp.Expr)
    assert actdsl.compile("relu") is actdsl.compile(" relu ")  # cached per canonical spec


def test_backend_name_is_checked():
    with pytest.raises(actdsl.ActdslError, match="unknown backend 'nunpy'.*numpy"):
        actdsl.compile("relu", backend="nunpy")

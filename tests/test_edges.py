"""Regression tests for issue 15: the edges of every promise in docs/numerics.md.

Expected values come from the definitions: SymPy limits at ±inf of formulas written here (and of
each built-in's own SymPy definition), mpmath at 50 digits, exact arithmetic. Both CPU backends;
tests/cuda/test_edges_cuda.py runs the same checks on the CUDA backend (simulator).
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import mpmath
import numpy as np
import pytest
import sympy as sp

import actdsl
from actdsl.check import ulp_error
from actdsl.registry import REGISTRY
from actdsl.stable import to_elementary

BACKENDS = ["numpy", "numba"]
FLOATS = [np.float32, np.float64]
mpmath.mp.dps = 50
INF = np.inf


def quiet(f, *args, **kw):
    """f(*args) with every NumPy floating-point condition an error and every warning an error."""
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        return f(*args, **kw)


# -- limits at ±inf, from SymPy ---------------------------------------------------------------------
Z = sp.Symbol("z", real=True)
HUGE = sp.Integer(10) ** 400  # beyond every float: picks the branch a Piecewise takes at ±inf


def _branch_at(expr, sign):
    def pick(pw):
        for value, cond in pw.args:
            if cond == sp.true or bool(cond.subs(Z, sign * HUGE)):
                return value
        return sp.nan
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), pick)


def sympy_limits(expr):
    """(f(-inf), f(+inf), f'(-inf), f'(+inf)) as floats, by SymPy's limit of the formula on the
    branch taken at each end."""
    expr = expr.subs(sp.Symbol("z", real=True), Z)
    out = []
    for f in (expr, sp.diff(expr, Z)):
        for sign in (-1, 1):
            lim = sp.limit(_branch_at(f, sign), Z, sign * sp.oo)
            out.append(float(lim) if lim.is_extended_real else np.nan)
    return out[0], out[1], out[2], out[3]


# written here, from the definitions (PyTorch's docs), not from actdsl's library
INDEPENDENT = {
    "silu": Z / (1 + sp.exp(-Z)),
    "mish": Z * sp.tanh(sp.log(1 + sp.exp(Z))),
    "hardswish": Z * sp.Piecewise((0, Z <= -3), (1, Z >= 3), ((Z + 3) / 6, True)),
    "softsign": Z / (1 + sp.Abs(Z)),
    "{z*exp(-z)}": Z * sp.exp(-Z),
    # its derivative (1 - 12 z^4) exp(-3 z^4) is NaN at ±(largest float) too (z^4 overflows)
    "{z*exp(-3*z**4)}": Z * sp.exp(-3 * Z ** 4),
    "{z*sigmoid(z)}": Z / (1 + sp.exp(-Z)),
    "hardswish+silu": (lambda h: h / (1 + sp.exp(-h)))(
        Z * sp.Piecewise((0, Z <= -3), (1, Z >= 3), ((Z + 3) / 6, True))),
    "relu+silu": (lambda r: r / (1 + sp.exp(-r)))(sp.Piecewise((0, Z <= 0), (Z, True))),
    "softsign+silu": (lambda t: t / (1 + sp.exp(-t)))(Z / (1 + sp.Abs(Z))),
}


def _elementwise_builtins():
    keys = []
    for key in REGISTRY.names():
        try:
            k = actdsl.compile(key)
        except actdsl.ActdslError:
            continue
        if not k.rowwise and not k.params:
            keys.append(key)
    return sorted(keys)


@lru_cache(maxsize=None)
def expected_limits(spec):
    if spec in INDEPENDENT:
        return sympy_limits(INDEPENDENT[spec])
    return sympy_limits(to_elementary(actdsl.compile(spec).expr))


def _check_limits(spec, backend, dtype):
    lo, hi, dlo, dhi = expected_limits(spec)
    k = actdsl.compile(spec, backend=backend)
    x = np.array([-INF, INF], dtype)
    y = quiet(k, x)
    d = quiet(k.derivative, x)
    v = quiet(k.vjp, x, np.ones_like(x))
    for got, want in ((y, (lo, hi)), (d, (dlo, dhi)), (v, (dlo, dhi))):
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=4 * np.finfo(dtype).eps,
                                   atol=0, err_msg=f"{spec} {backend} {dtype}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", sorted(INDEPENDENT))
def test_limits_at_inf_match_sympy_for_the_listed_functions_and_compositions(spec, backend, dtype):
    _check_limits(spec, backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_elementwise_builtin_gives_its_sympy_limits_at_inf(backend):
    for key in _elementwise_builtins():
        for dtype in FLOATS:
            _check_limits(key, backend, dtype)


def test_softsign_inside_a_rowwise_spec_uses_its_limit():
    for backend in BACKENDS:
        y = actdsl.compile("softsign+norm:mean", backend=backend)(np.array([INF, 0.0, -INF]))
        np.testing.assert_allclose(y, [1, 0, -1], atol=1e-15)


# -- rows scaled before they are squared or summed ---------------------------------------------------
def mp_rows(x):
    return [[mpmath.mpf(float(a)) for a in row] for row in np.atleast_2d(x)]


def truth_norm(kind, x, eps=1e-8):
    out = []
    for v in mp_rows(x):
        n = len(v)
        m = mpmath.fsum(v) / n
        sd = mpmath.sqrt(mpmath.fsum((a - m) ** 2 for a in v) / n)
        if kind == "norm:mean":
            out.append([a - m for a in v])
        elif kind == "norm:std":
            out.append([a / (sd + eps) for a in v])
        else:
            out.append([(a - m) / (sd + eps) for a in v])
    return out


def truth_norm_vjp(kind, x, g, eps=1e-8):
    """J^T g, from the closed forms of the Jacobians (ddof 0):
    mean: g - mean(g); std: g/D - u·Σ(g u)(u - m)/(n σ D²) ... written per kind below."""
    out = []
    for v, gg in zip(mp_rows(x), mp_rows(g)):
        n = len(v)
        m = mpmath.fsum(v) / n
        c = [a - m for a in v]
        sd = mpmath.sqrt(mpmath.fsum(t ** 2 for t in c) / n)
        D = sd + eps
        gm = mpmath.fsum(gg) / n
        if kind == "norm:mean":
            out.append([b - gm for b in gg])
            continue
        dsd = [t / (n * sd) if sd != 0 else 0 for t in c]  # ∂σ/∂u_i
        top = v if kind == "norm:std" else c
        s = mpmath.fsum(b * t for b, t in zip(gg, top))  # Σ g_j top_j
        if kind == "norm:std":
            out.append([b / D - s * dsd[i] / D ** 2 for i, b in enumerate(gg)])
        else:
            out.append([(b - gm) / D - s * dsd[i] / D ** 2 for i, b in enumerate(gg)])
    return out


def assert_close_rows(got, want, dtype, ulps=8):
    got = np.atleast_2d(np.asarray(got, np.float64))
    for gr, wr in zip(got, want):
        scale = max(abs(float(w)) for w in wr) or 1.0
        for a, w in zip(gr, wr):
            w = float(w)
            assert abs(a - w) <= ulps * np.finfo(dtype).eps * scale + 1e-300, (list(gr), wr)


HUGE_ROWS = [
    (np.float64, [1e300, -1e300, 0.0]),
    (np.float64, [1.7e308, 1.7e308, 1.0e308]),
    (np.float64, [1.7e308, -1.7e308, 0.5]),
    (np.float32, [2e19, -2e19, 1.0]),
    (np.float32, [3e38, -3e38, 0.0]),
    (np.float32, [3.4e38, 3.3e38, 3.4e38, -1e38]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["norm:std", "norm:z", "norm:mean"])
@pytest.mark.parametrize("dtype,row", HUGE_ROWS)
def test_rows_near_the_largest_floats_normalise(kind, backend, dtype, row):
    x = np.array([row], dtype)
    k = actdsl.compile(kind, backend=backend)
    y = quiet(k, x)
    assert y.dtype == dtype
    assert_close_rows(y, truth_norm(kind, x), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["norm:std", "norm:z"])
@pytest.mark.parametrize("dtype,row", HUGE_ROWS)
def test_vjps_of_rows_near_the_largest_floats(kind, backend, dtype, row):
    x = np.array([row], dtype)
    g = np.array([np.linspace(-1, 2, len(row))], dtype)
    dx = quiet(actdsl.compile(kind, backend=backend).vjp, x, g)
    want = truth_norm_vjp(kind, x, g)
    # the gradient is ~1/σ, tiny here: compare relative to its own row scale
    assert_close_rows(dx, want, dtype, ulps=16)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kind", ["norm:std", "norm:z"])
def test_constant_rows_of_huge_values(kind, backend, dtype):
    """A constant row v near the largest float: σ = 0, so by the definitions norm:z is 0 and
    norm:std is v/ε (inf here); the VJPs are (dy - mean dy)/ε and dy/ε (ε = 1e-8). Computed
    with a row scale s capped so that ε/s stays a normal float (before: 0/0 forwards, NaN VJPs)."""
    eps = 1e-8
    for v in (0.95 * float(np.finfo(dtype).max), 1e30 if dtype == np.float32 else 1e300):
        x = np.full((1, 3), v, dtype)
        dy = np.array([[1.0, 2.0, 4.5]], dtype)
        k = actdsl.compile(kind, backend=backend)
        y, dx = quiet(k, x), quiet(k.vjp, x, dy)
        if kind == "norm:z":
            want_y, want_dx = np.zeros(3), (dy[0].astype(float) - dy[0].astype(float).mean()) / eps
        else:
            want_y, want_dx = np.full(3, float(x[0, 0]) / eps), dy[0].astype(float) / eps
        with np.errstate(over="ignore"):
            want_y = want_y.astype(dtype)
        np.testing.assert_allclose(y[0], want_y, rtol=4 * np.finfo(dtype).eps, atol=0)
        scale = np.abs(want_dx).max()
        assert np.all(np.abs(dx[0] - want_dx) <= 64 * np.finfo(dtype).eps * scale), (v, dx, want_dx)


def test_norm_mean_of_huge_equal_values_is_zero():
    for backend in BACKENDS:
        k = actdsl.compile("norm:mean", backend=backend)
        np.testing.assert_array_equal(quiet(k, np.array([1.7e308, 1.7e308])), [0.0, 0.0])
        np.testing.assert_array_equal(quiet(k, np.array([3.4e38, 3.4e38], np.float32)), [0, 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_softmax_of_huge_float32_rows(backend):
    x = np.array([[3e38, 3e38, 0.0], [-3e38, -3e38, -3e38]], np.float32)
    y = quiet(actdsl.compile("log_softmax", backend=backend), x)
    ln2, ln3 = float(mpmath.log(2)), float(mpmath.log(3))
    np.testing.assert_allclose(y[0], [-ln2, -ln2, -3e38], rtol=1e-6)
    np.testing.assert_allclose(y[1], [-ln3] * 3, rtol=1e-6)
    # -6e38 is beyond float32: -inf is its correct rounding, and nothing warns
    y = quiet(actdsl.compile("log_softmax", backend=backend), np.array([3e38, -3e38, 0], np.float32))
    np.testing.assert_array_equal(y, np.array([0, -np.inf, -3e38], np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_subnormal_rows_normalise(backend, dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([[3 * tiny, 0.0, -tiny, 2 * tiny]], dtype)
    for kind in ("norm:std", "norm:z", "norm:mean"):
        y = quiet(actdsl.compile(kind, backend=backend), x)
        assert_close_rows(y, truth_norm(kind, x), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rowwise_nonfinite_rows(backend):
    """A row holding one ±inf gives the limit of its normalisation as that entry grows (derived
    here for u = ±H e_k + finite, n entries, H -> inf: the mean and σ = H sqrt(n-1)/n dominate),
    and a VJP of 0 for norm:std/z/max (each derivative is O(1/H)) and dy - mean(dy) for norm:mean;
    a NaN makes the row NaN, values and gradients (norm:mean's gradient where the NaN is). A learnable slope of 0 times ±inf is the limit 0 of 0 · z, not NaN."""
    rows = np.array([[np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0]])
    good = np.array([[1.0, 2.0, 4.0]])
    n, r = 3, np.sqrt(2.0)   # sqrt(n - 1)
    limits = {
        "norm:mean": [[np.inf, -np.inf, -np.inf], [-np.inf, np.inf, np.inf]],
        "norm:std": [[n / r, 0, 0], [-n / r, 0, 0]],
        "norm:z": [[r, -1 / r, -1 / r], [-r, 1 / r, 1 / r]],
        "norm:max": [[1, 0, 0], [-1, 0, 0]],
    }
    for kind, lim in limits.items():
        k = actdsl.compile(kind, backend=backend)
        y = quiet(k, np.concatenate([rows, good]))
        dx = quiet(k.vjp, np.concatenate([rows, good]), np.ones((4, 3)))
        np.testing.assert_allclose(y[:2], lim, rtol=4e-16, atol=0, err_msg=kind)
        assert np.all(dx[:2] == 0), (kind, dx[:2])
        if kind == "norm:mean":  # its Jacobian I - 1/n does not depend on u: dy - mean(dy)
            g = np.array([[1.0, 2.0, 4.0]] * 4)
            np.testing.assert_allclose(quiet(k.vjp, np.concatenate([rows, good]), g)[:2],
                                       g[:2] - 7 / 3, rtol=4e-16, atol=0)
        assert np.all(np.isnan(y[2])), kind
        if kind == "norm:mean":  # NaN where the NaN is; its Jacobian does not read u elsewhere
            assert np.isnan(dx[2, 0]) and np.all(dx[2, 1:] == 0), dx[2]
        else:
            assert np.all(np.isnan(dx[2])), kind
        assert np.all(np.isfinite(y[3])) and np.all(np.isfinite(dx[3])), kind
    prelu = actdsl.compile("prelu", backend=backend)
    np.testing.assert_array_equal(prelu(np.array([-np.inf, np.inf]), r=0.1), [-np.inf, np.inf])
    # slope 0: the piece is 0 for every z, so its limit at -inf is 0 (as z -> -inf of 0 * z)
    np.testing.assert_array_equal(prelu(np.array([-np.inf, np.inf]), r=0.0), [0, np.inf])
    np.testing.assert_array_equal(prelu.derivative(np.array([-np.inf, np.inf]), r=0.0), [0, 1])
    lgrelu = actdsl.compile("lgrelu", backend=backend)
    x = np.array([-np.inf, np.inf, np.nan])
    y = lgrelu(x, r=0.0, g=0.0)
    np.testing.assert_array_equal(y[:2], [0, 0])
    assert np.isnan(y[2])
    np.testing.assert_array_equal(lgrelu(x[:2], r=0.5, g=2.0), [-np.inf, np.inf])


# -- one value, one rounding ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("inner", ["softplus", "sigmoid", "tanh", "linear", "{2*z+1}", "gelu"])
def test_a_row_of_one_has_a_zero_gradient_and_output(inner, backend, dtype):
    k = actdsl.compile(f"{inner}+norm:z", backend=backend)
    for x in (1.0, 0.3, -5.0, 7.7):
        for g in (1.0, 0.7, -2.9):
            xs, gs = np.array([[x]], dtype), np.array([[g]], dtype)
            assert quiet(k, xs)[0, 0] == 0
            assert quiet(k.vjp, xs, gs)[0, 0] == 0, (x, g)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("inner", ["softplus", "sigmoid", "tanh", "linear", "{2*z+1}"])
def test_constant_rows_give_exactly_zero_and_the_true_gradient(inner, backend, dtype):
    """On a constant row σ = 0: y = 0 exactly, and norm:z's gradient is (dy - mean dy)/ε · u'(z),
    the true derivative (its size is 1e8 |dy|, so it is checked relative to that)."""
    k = actdsl.compile(f"{inner}+norm:z", backend=backend)
    du = {"softplus": lambda t: 1 / (1 + mpmath.exp(-t)),
          "sigmoid": lambda t: mpmath.exp(-t) / (1 + mpmath.exp(-t)) ** 2,
          "tanh": lambda t: mpmath.sech(t) ** 2, "linear": lambda t: 1, "{2*z+1}": lambda t: 2}[inner]
    for value in (0.3, 1.0, -4.0, 1e4):
        for n in (2, 3, 7, 64):
            x = np.full((2, n), value, dtype)
            g = np.stack([np.linspace(-1, 1, n), np.full(n, 0.7)]).astype(dtype)
            assert np.all(quiet(k, x) == 0)
            got = quiet(k.vjp, x, g).astype(np.float64)
            t = mpmath.mpf(float(x[0, 0]))
            for r in range(2):
                gm = mpmath.fsum(mp_rows(g[r])[0]) / n
                want = np.array([float((mpmath.mpf(float(b)) - gm) / mpmath.mpf(1e-8) * du(t))
                                 for b in g[r]])
                scale = 1e8 * float(np.max(np.abs(g[r]))) * float(du(t))
                assert np.all(np.abs(got[r] - want) <= 16 * np.finfo(dtype).eps * scale), (got[r], want)


def test_norm_std_of_a_constant_row_is_the_value_over_eps():
    for backend in BACKENDS:
        y = actdsl.compile("norm:std", backend=backend)(np.array([5.0, 5.0, 5.0]))
        np.testing.assert_allclose(y, [5e8] * 3, rtol=1e-15)


# -- no floating-point warnings --------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_warnings_at_the_edges(backend):
    f32, f16 = np.float32, np.float16
    big = np.finfo(f32).max
    sub = np.finfo(f32).smallest_subnormal
    cases = [
        ("gelu:tanh", np.array([-12.5, -20, -100, -1e30], f32)),
        ("softmax", np.array([[0, -100, -200, 85]], f32)),
        ("softmin", np.array([[0, 100, 200, -85]], f32)),
        ("log_softmax", np.array([[0, -100, -200, 85]], f32)),
        ("norm:max", np.array([[big, 1, -big / 3]], f32)),
        ("norm:std", np.array([[big, 1, -big / 3]], f32)),
        ("norm:z", np.array([[big, 1, -big / 3]], f32)),
        ("tanh", np.array([0.5, 20, -30, 6e4], f16)),
        ("softmax", np.array([[0, -30, -60, 10]], f16)),
        ("norm:z", np.array([[sub, 0, -3 * sub, 1e-38]], f32)),
        ("softmax", np.array([[sub, 0, -3 * sub]], f32)),
        ("tanh+norm:std", np.array([[sub, 0, -3 * sub]], f32)),
    ]
    for spec, x in cases:
        k = actdsl.compile(spec, backend=backend)
        y = quiet(k, x)
        dx = quiet(k.vjp, x, np.ones_like(x))
        assert y.dtype == x.dtype and dx.dtype == x.dtype, spec
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), (spec, y, dx)


# -- plain calls ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_python_floats_work_on_every_elementwise_op(backend):
    for key in _elementwise_builtins():
        k = actdsl.compile(key, backend=backend)
        for x in (0.7, -2.5):
            y, d, v = quiet(k, x), quiet(k.derivative, x), quiet(k.vjp, x, 1.5)
            a = np.array([x])
            assert np.ndim(y) == 0 and float(y) == k(a)[0], key
            assert float(d) == k.derivative(a)[0] and float(v) == k.vjp(a, np.array([1.5]))[0], key
    assert float(actdsl.compile("{gelu(pi)}", backend=backend)(0.7)) == pytest.approx(
        float(mpmath.pi * mpmath.ncdf(mpmath.pi)), rel=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_learnable_parameters_with_scalars(backend):
    k = actdsl.compile("prelu", backend=backend)
    assert float(k.vjp(0.7, 1.0, r=0.1)) == 1.0
    assert float(k.vjp(-0.7, 2.0, r=0.1)) == pytest.approx(0.2)
    dx, dp = k.vjp(-0.7, 2.0, r=0.1, with_params=True)
    assert float(dp["r"]) == pytest.approx(-1.4)
    assert float(k(-0.5, r=0.1)) == pytest.approx(-0.05)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", ["tanh", "norm:z", "prelu"])
@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_big_endian_arrays_are_accepted(spec, dtype, backend):
    x = np.linspace(-2, 3, 12).reshape(3, 4).astype(dtype)
    native = x.astype(np.dtype(dtype).newbyteorder("="))
    k = actdsl.compile(spec, backend=backend)
    kw = {"r": 0.1} if spec == "prelu" else {}
    y = k(x, **kw)
    assert y.dtype == native.dtype and y.dtype.isnative
    np.testing.assert_array_equal(y, k(native, **kw))
    np.testing.assert_array_equal(k.vjp(x, x, **kw), k.vjp(native, native, **kw))


def test_masked_arrays_are_refused():
    x = np.ma.array([0.5, 1.0, 2.0], mask=[0, 1, 0])
    for backend in BACKENDS:
        k = actdsl.compile("tanh", backend=backend)
        with pytest.raises(actdsl.ArrayTypeError, match="masked array.*filled"):
            k(x)
        with pytest.raises(actdsl.ArrayTypeError, match="masked"):
            k.vjp(np.ones(3), x)


def test_real_powers_of_negative_bases():
    """A constant that is not a real number is refused on every backend; a varying negative base
    with a fractional exponent gives NaN (IEEE pow) on every backend; integer powers are exact."""
    for backend in BACKENDS + ["cuda"]:
        for spec in ("{(-8)**(1/3)*z}", "{sqrt(-4)+z}", "{log(-1)*z}"):
            with pytest.raises(actdsl.ParameterError, match="not a real number"):
                actdsl.compile(spec, backend=backend)
    x = np.array([-8.0, -1.0, 0.0, 8.0])
    for backend in BACKENDS:
        y = quiet(actdsl.compile("{z**(1/3)}", backend=backend), x)
        assert np.isnan(y[0]) and np.isnan(y[1])
        np.testing.assert_allclose(y[2:], [0.0, 2.0], rtol=1e-15)
        np.testing.assert_array_equal(actdsl.compile("{z**3}", backend=backend)(x), x ** 3)
        np.testing.assert_allclose(actdsl.compile("{-(8**(1/3))*z}", backend=backend)(x), -2 * x,
                                   rtol=1e-15)


# -- out= that overlaps the input ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", ["tanh", "gelu", "tanh+norm:z", "softmax", "prelu"])
def test_out_overlapping_the_input_is_as_if_the_input_were_read_first(spec, backend):
    k = actdsl.compile(spec, backend=backend)
    kw = {"r": 0.1} if spec == "prelu" else {}
    base = np.linspace(-3, 3, 5 * 8).reshape(5, 8)
    for shift in ("row", "elements", "same"):
        buf = base.copy()
        flat = buf.reshape(-1)
        if shift == "row":
            x, out = buf[:-1], buf[1:]
        elif shift == "elements":
            x, out = flat[:-3].reshape(37, 1)[:32].reshape(4, 8), flat[3:35].reshape(4, 8)
        else:
            x = out = buf
        want = k(x.copy(), **kw)
        got = k(x, out=out, **kw)
        assert got is out
        np.testing.assert_array_equal(out, want, err_msg=f"{spec} {shift}")
        # the VJP with out= overlapping x or dy
        buf = base.copy()
        x, out = (buf[:-1], buf[1:]) if shift == "row" else (buf, buf)
        g = np.cos(x.copy())
        want = k.vjp(x.copy(), g, **kw)
        np.testing.assert_array_equal(k.vjp(x, g, out=out, **kw), want, err_msg=f"vjp {spec} {shift}")


def test_out_equal_to_the_input_is_in_place():
    for backend in BACKENDS:
        k = actdsl.compile("tanh", backend=backend)
        x = np.linspace(-3, 3, 1000).astype(np.float32)
        want = np.tanh(x.astype(np.float64))
        got = k(x, out=x)
        assert got is x
        np.testing.assert_allclose(x, want, rtol=4e-7, atol=1e-7)


# -- accuracy on rows whose mean is far above their spread --------------------------------------------
def test_norm_z_accuracy_does_not_depend_on_the_mean():
    """docs/numerics.md's bound: |ŷ - y| ≤ (n + 4) ε (1 + |y|) (1 + R/σ), R the row's range: no
    term grows with |mean|/σ. torch's (x - mean)/std loses ε |mean|/σ (checked where installed)."""
    rng = np.random.default_rng(15)
    n = 256
    for mu in (1e4, 1e6, 1e8):
        x = mu + rng.standard_normal((3, n))
        want = np.array(truth_norm("norm:z", x), dtype=np.float64)
        R = np.ptp(x, axis=-1, keepdims=True)
        sd = x.std(axis=-1, keepdims=True)
        bound = (n + 4) * np.finfo(np.float64).eps * (1 + np.abs(want)) * (1 + R / sd)
        for backend in BACKENDS:
            got = actdsl.compile("norm:z", backend=backend)(x)
            err = np.abs(got - want)
            assert np.all(err <= bound), (backend, mu, err.max())
            assert err.max() <= 64 * np.finfo(np.float64).eps, (backend, mu, err.max())
        torch = pytest.importorskip("torch")
        t = torch.from_numpy(x)
        m = t.mean(-1, keepdim=True)
        ref = ((t - m) / (t.std(-1, unbiased=False, keepdim=True) + 1e-8)).numpy()
        assert np.abs(ref - want).max() > 10 * err.max()  # torch, the peer, is the less accurate


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("spec,at_zero,at_negzero,at_two", [
    ("{z**-2}", INF, INF, 0.25), ("{1/z**2}", INF, INF, 0.25), ("{z**-3}", INF, -INF, 0.125)])
def test_negative_powers_of_zero_are_infinite_not_an_exception(spec, at_zero, at_negzero, at_two,
                                                               backend, dtype):
    """IEEE 754: 1/(+0)**k = +inf, 1/(-0)**k = -inf for odd k. Numba raised ZeroDivisionError for
    0.0 ** -k (whatever the error model): norm:z+softmax's VJP did on a constant row near the
    largest float32, where its denominator's square underflows to 0."""
    k = actdsl.compile(spec, backend=backend)
    with np.errstate(all="ignore"):
        y = k(np.array([0.0, -0.0, 2.0], dtype=dtype))
    assert y.dtype == dtype
    assert y[0] == at_zero and y[1] == at_negzero and y[2] == at_two


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_condition_on_a_rowwise_value_of_a_piecewise_input(backend, dtype):
    """elu after softmax after celu: elu's branch condition compares softmax(celu(z)), whose row
    sum holds celu's two branches element by element. It was once rewritten into one comparison
    per celu branch, each against a sum of that branch over the whole row (not softmax at all),
    and float32 [0, 8] gave NaN where a branch's sum overflowed. The truth, from the definitions:
    softmax values are positive, so elu is the identity on them."""
    from actdsl import derive
    k = actdsl.compile("celu(alpha=2)+softmax+elu", backend=backend)
    # the definition needs two row reductions: the max shift and the sum
    assert len(derive.make_plan(k.ir).reductions) == 2
    for row in ([0.0, 8.0], [-3.0, 0.5, 60.0], [-40.0, -1.0]):
        x = np.array([row], dtype)
        with mpmath.workdps(50):
            u = [2 * mpmath.expm1(mpmath.mpf(float(v)) / 2) if v <= 0 else mpmath.mpf(float(v))
                 for v in x[0]]
            e = [mpmath.exp(v - max(u)) for v in u]
            truth = np.array([float(v / mpmath.fsum(e)) for v in e])
            # the rounding of u - max(u) (|u - max| ε/2) becomes a relative error of exp
            cond = np.array([float(abs(v - max(u))) for v in u])
        got = k(x)[0].astype(np.float64)
        assert np.all(np.abs(got - truth) <= (8 + cond) * np.finfo(dtype).eps * truth), (got, truth)
        assert np.all(np.isfinite(k.vjp(x, np.ones_like(x))))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_condition_on_a_composed_piecewise_value(backend):
    """relu after gelu:tanh after elu: relu's condition compares a value with branches of its
    own. The code generator's common-subexpression pass once rebuilt that branch through
    SymPy's constructor, which folded the condition wrongly: the derivative was 0 everywhere.
    Truth from the definitions, by mpmath: for x > 0 (elu(x) = x, gelu:tanh(x) > 0) the
    derivative is gelu:tanh'(x); relu'(0) = 0."""
    k = actdsl.compile("elu+gelu:tanh+relu", backend=backend)
    xs = [-2.0, 0.0, 0.5, 1.0, 3.0]
    c = mpmath.sqrt(2 / mpmath.pi)

    def gelu_tanh(t):
        return t / 2 * (1 + mpmath.tanh(c * (t + mpmath.mpf("0.044715") * t ** 3)))

    def elu(t):
        return mpmath.expm1(t) if t <= 0 else t

    with mpmath.workdps(40):
        want = [float(mpmath.diff(lambda t: max(gelu_tanh(elu(t)), 0), mpmath.mpf(x)))
                if x != 0 else 0.0 for x in xs]
    got = k.derivative(np.array(xs))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


def test_a_power_of_a_composed_relu_is_refused_with_our_error():
    """|relu(...)|**z has a log of 0 in its derivative on a whole branch: refused with a
    ParameterError (SymPy's own assertion escaped once, from folding a branch condition)."""
    with pytest.raises(actdsl.ActdslError, match="undefined on a whole branch"):
        actdsl.compile("prelu+prelu+relu+{abs(z)**z}")


def _agrees_with_the_definition(spec, f, xs, backend, rtol_y, rtol_d):
    """``spec``'s values and derivative at ``xs`` against mpmath's of the definition ``f``;
    returns (kernel, x, the derivative wanted)."""
    k = actdsl.compile(spec, backend=backend)
    x = np.array(xs)
    with mpmath.workdps(30):
        want_y = [float(f(mpmath.mpf(t))) for t in xs]
        want_d = [float(mpmath.diff(f, mpmath.mpf(t))) for t in xs]
    np.testing.assert_allclose(k(x), want_y, rtol=rtol_y, atol=1e-300, err_msg=spec)
    np.testing.assert_allclose(k.derivative(x), want_d, rtol=rtol_d, atol=1e-300, err_msg=spec)
    return k, x, want_d


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_root_of_a_flat_branch_has_the_flat_derivative(backend):
    """sqrt(|relu(z)|) and sqrt(|tlin(z)|): the chain rule puts 1/0 on branches that are never
    taken (|u| has a branch for u < 0, empty where u = relu(z)) or never taken where they sit
    (tlin's flat |z| <= 1 inside the branch for z < -1). Those branches are dropped; the
    derivative is the definition's, 0 where the function is flat. log(relu(z)) is still
    refused: its log 0 is on a branch that is taken."""
    xs = [-3.0, -2.0, -1.5, -0.5, 0.25, 0.5, 1.5, 2.0, 3.0]
    defs = {"relu+{abs(z)**0.5}": lambda t: mpmath.sqrt(abs(max(t, 0))),
            "tlin+{abs(z)**0.5}": lambda t: mpmath.sqrt(abs(t if abs(t) > 1 else 0))}
    for spec, f in defs.items():
        k, x, want_d = _agrees_with_the_definition(spec, f, xs, backend, 1e-14, 1e-12)
        np.testing.assert_allclose(k.vjp(x, np.full_like(x, 2.0)), 2 * np.array(want_d),
                                   rtol=1e-12, atol=1e-300, err_msg=spec)
    with pytest.raises(actdsl.ParameterError, match="undefined on a whole branch"):
        actdsl.compile("relu+{log(relu(z))}", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_constant_power_of_a_flat_branch_has_the_flat_derivative(backend):
    """d(u**7) is 7 u**6 u' even where u is 0 on a whole branch: the chain rule writes it as
    u**7 · 7 u' / u, which SymPy combines only while both are powers of one u; put into the
    branches first, 1/u held 1/0 where relu or sparse_plus is 0, and these specs were refused as
    undefined there. Checked against mpmath's derivative of the definition, away from kinks."""
    def gelu_tanh(u):
        return u / 2 * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (u + 0.044715 * u ** 3)))

    def sparse_plus(t):
        return mpmath.mpf(0) if t <= -1 else (t if t >= 1 else (t + 1) ** 2 / 4)

    def tlin(t):
        return t if abs(t) > 1 else mpmath.mpf(0)

    defs = {"relu+gelu:tanh+{z**7}": lambda t: gelu_tanh(max(t, 0)) ** 7,
            "sparse_plus+gelu:tanh+{z**7}": lambda t: gelu_tanh(sparse_plus(t)) ** 7,
            # a fractional power too: d|u|**1.5 put 1/|u| into tlin's flat branch
            "relu+tlin+{abs(z)**1.5}": lambda t: abs(tlin(max(t, 0))) ** 1.5,
            "sparse_plus+tlin+{abs(z)**2.5}": lambda t: abs(tlin(sparse_plus(t))) ** 2.5}
    for spec, f in defs.items():
        _agrees_with_the_definition(spec, f, [-3.0, -1.5, -0.5, 0.25, 0.5, 1.5, 2.0, 3.0],
                                    backend, 1e-12, 1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_derivative_through_a_flat_branch(backend):
    """g'' of |tlin(z)|**1.5 is 0.75 |z|**-0.5 outside tlin's flat |z| <= 1 and 0 inside it
    (SymPy's zoo reached the emitter before: "no implementation of ComplexInfinity"); where
    the chain rule can only give inf · 0 on a branch that is taken (relu+tlin+{abs(z)**1.5}),
    a ParameterError says so, for g'' and for the Hessian-vector product alike."""
    k = actdsl.compile("tlin+{abs(z)**1.5}", backend=backend)
    x = np.array([-4.0, -2.0, -0.5, 0.0, 0.5, 2.0, 9.0])
    want = np.where(np.abs(x) > 1, 0.75 / np.sqrt(np.maximum(np.abs(x), 1.0)), 0.0)
    np.testing.assert_allclose(k.derivative(x, order=2), want, rtol=1e-14)
    np.testing.assert_allclose(k.vjp_vjp(x, np.ones_like(x), np.full_like(x, 2.0))[0], 2 * want,
                               rtol=1e-14)
    flat = actdsl.compile("relu+tlin+{abs(z)**1.5}", backend=backend)
    with pytest.raises(actdsl.ParameterError, match="second order is undefined on a whole branch"):
        flat.derivative(x, order=2)
    with pytest.raises(actdsl.ParameterError, match="undefined on a whole branch"):
        flat.vjp_vjp(x, np.ones_like(x), np.ones_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_inline_max_min_or_clip_before_a_rowwise_term(backend):
    """A formula's max, min or clip followed by a row-wise term: the limits at ±inf of the
    elementwise part (taken before the row-wise term is applied) were computed from the
    expression as lowered, Max and all, which no emitter prints ("the numpy backend has no
    implementation of Max"): every such spec failed. Values against NumPy's definition."""
    rng = np.random.default_rng(11)
    x = rng.normal(scale=2.0, size=(5, 7))
    g = rng.normal(size=x.shape)

    def softmax(u):
        e = np.exp(u - u.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    cases = {"{clip(z, -1, 1)}+softmax": (lambda t: np.clip(t, -1, 1),
                                          lambda t: (np.abs(t) < 1).astype(float)),
             "{max(z, 0)**2}+softmax": (lambda t: np.maximum(t, 0) ** 2,
                                        lambda t: 2 * np.maximum(t, 0)),
             "{min(z, 1)}+softmax": (lambda t: np.minimum(t, 1), lambda t: (t < 1).astype(float))}
    for spec, (inner, dinner) in cases.items():
        k = actdsl.compile(spec, backend=backend)
        s = softmax(inner(x))
        np.testing.assert_allclose(k(x), s, rtol=1e-12, err_msg=spec)
        want = s * (g - (g * s).sum(axis=-1, keepdims=True)) * dinner(x)
        np.testing.assert_allclose(k.vjp(x, g), want, rtol=1e-10, atol=1e-14, err_msg=spec)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_clip_of_a_small_composed_piecewise_value(backend):
    """hardswish's clip after clip, softplus and a leaky formula (benchmarks/slow_specs.py's
    compositions). Truth from the definitions, by mpmath, away from kinks."""
    k = actdsl.compile("{clip(z, -1, 1)}+softplus+{(z > 0)*z + (z <= 0)*0.1*z}+hardswish",
                       backend=backend)

    def g(t):
        u = min(max(t, -1), 1)
        u = mpmath.log1p(mpmath.exp(u))
        u = u if u > 0 else u / 10
        return u * min(max(u + 3, 0), 6) / 6

    xs = [-5.0, -0.7, -0.1, 0.3, 0.9, 4.0]
    with mpmath.workdps(40):
        want = [float(g(mpmath.mpf(x))) for x in xs]
        slope = [float(mpmath.diff(g, mpmath.mpf(x))) for x in xs]
    np.testing.assert_allclose(k(np.array(xs)), want, rtol=1e-14)
    np.testing.assert_allclose(k.derivative(np.array(xs)), slope, rtol=1e-13, atol=1e-300)


def test_a_root_of_a_composed_abs_is_refused_with_our_error():
    """Building hardswish's clip on a placeholder for every piecewise input (tried for compile
    time) made SymPy fail inside its Piecewise constructor (an AssertionError) on this spec:
    |leaky|**0.5 has a 1/0 at 0 on a whole branch, refused as before."""
    with pytest.raises(actdsl.ParameterError, match="undefined on a whole branch"):
        actdsl.compile("{(z > 0)*z + (z <= 0)*0.1*z}+tlin+{abs(z)**0.5}+{clip(z, -1, 1)}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [5, 7, 12, 31, 64, 65, -6])
def test_integer_powers_against_mpmath(n, dtype):
    """``{z**n}`` on the Numba backend, where powers 5..64 of a name are written as binary
    powering (products of squares) instead of Numba's integer power, and 65 still goes to
    Numba's: the forward z**n and the VJP n z**(n-1) g against mpmath's exact powers, rounded
    once to the dtype, within 4n ULP (one rounding per product); infinities, signs, zeros and
    NaN as IEEE arithmetic gives them, overflow to ±inf and underflow to ±0 where the true
    value is out of range."""
    mpmath.mp.prec = 200
    info = np.finfo(dtype)
    big = float(info.max) ** (1 / abs(n))  # the largest magnitude whose power is finite
    xs = [0.0, -0.0, 1.0, -1.0, 1.5, -0.7, 2.0, -3.25, 0.999, big * 0.98, -big * 0.98,
          big * 1.05, -big * 1.05, 1 / big, np.inf, -np.inf, np.nan]
    x = np.array(xs, dtype)
    k = actdsl.compile(f"{{z**{n}}}", backend="numba")
    g = np.full_like(x, 1.5)
    got, dgot = quiet(k, x), quiet(k.vjp, x, g)
    assert got.dtype == dtype and dgot.dtype == dtype
    ulp_tol = 4 * abs(n)
    for xi, yi, di in zip(x, got, dgot):
        if np.isnan(xi):
            assert np.isnan(yi) and np.isnan(di)
            continue
        for value, exact in ((yi, lambda t: t ** n), (di, lambda t: 1.5 * n * t ** (n - 1))):
            if np.isinf(xi) or xi == 0:  # IEEE arithmetic's value, in float64
                with np.errstate(all="ignore"):
                    expect = exact(np.float64(xi))
                assert value == expect, (n, xi, value, expect)
                continue
            true = exact(mpmath.mpf(float(xi)))
            if abs(true) > info.max:
                assert np.isinf(value) and np.sign(value) == mpmath.sign(true), (n, xi, value)
            elif abs(true) < info.tiny:
                # below the normal range: within a few subnormal steps, or 0 where a negative
                # power's 1 / b**k had b**k overflow (Numba's integer power did the same)
                assert (abs(float(value) - float(true)) <= ulp_tol * float(info.smallest_subnormal)
                        or (n < 0 and value == 0)), (n, xi, value, true)
            else:
                want = dtype(float(true))
                ulps = abs(float(value) - float(want)) / float(np.spacing(abs(want)))
                assert ulps <= ulp_tol, (n, xi, value, want, ulps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", ["softmax", "log_softmax"])
def test_softmax_exp_of_the_shifted_row_on_numba(spec, dtype):
    """The Numba backend takes softmax's and log_softmax's exp(u - max u) with vmath's
    exp_nonpos (no overflow checks: u - max u <= 0). Rows with ties, a -inf, a +inf, huge and
    tiny spreads, against mpmath's definition (±inf as limits, NaN rows NaN), forward and VJP."""
    mpmath.mp.prec = 200
    big = float(np.finfo(dtype).max) / 4
    rows = [[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, -1.0], [-np.inf, 0.0, 1.0, 2.0],
            [np.inf, 0.0, 1.0, np.inf], [big, -big, 0.0, big / 2], [1e-30, -1e-30, 0.0, 5e-31],
            [-80.0, -100.0, -120.0, -79.5], [np.nan, 1.0, 2.0, 3.0]]
    x = np.array(rows, dtype)
    dy = np.array([[0.5, -1.0, 2.0, 0.25]] * len(rows), dtype)
    k = actdsl.compile(spec, backend="numba")
    assert "vm_exp_nonpos(" in k.source and "vm_exp(" not in k.source
    y, g = quiet(k, x), quiet(k.vjp, x, dy)

    def truth(row):
        u = [mpmath.mpf(float(v)) for v in row]
        top = max(u)
        if mpmath.isinf(top):  # the limit: the infinite maxima share the row
            p = [mpmath.mpf(1) if v == top else mpmath.mpf(0) for v in u]
            p = [v / sum(p) for v in p]
        else:
            e = [mpmath.exp(v - top) for v in u]
            p = [v / sum(e) for v in e]
        return p

    for r, row in enumerate(rows):
        if np.isnan(row).any():
            assert np.isnan(y[r]).all() and np.isnan(g[r]).all()
            continue
        p = truth(row)
        d = dy[r].astype(float)
        if spec == "softmax":
            want = [float(v) for v in p]
            s = sum(mpmath.mpf(float(a)) * b for a, b in zip(d, p))
            want_g = [float(pi * (mpmath.mpf(float(a)) - s)) for a, pi in zip(d, p)]
        else:
            want = [float(mpmath.log(v)) if v > 0 else -np.inf for v in p]
            total = sum(mpmath.mpf(float(a)) for a in d)
            want_g = [float(mpmath.mpf(float(a)) - pi * total) for a, pi in zip(d, p)]
        tol = 64 * float(np.finfo(dtype).eps)
        np.testing.assert_allclose(y[r], want, rtol=tol, atol=tol, err_msg=f"{spec} {row}")
        np.testing.assert_allclose(g[r], want_g, rtol=tol, atol=tol, err_msg=f"{spec} {row}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_irrational_constant_factors_are_one_correctly_rounded_constant(backend, dtype):
    """2 sqrt(2) z / sqrt(pi) (gelu:tanh's scale) is c z with c the exact product rounded once:
    finite for every z whose true value is (computed as 2 sqrt(2) z, then divided by sqrt(pi),
    it overflowed past max/2.83), within one rounding of mpmath, and the derivative is c."""
    k = actdsl.compile("{2*sqrt(2)*z/sqrt(pi)}", backend=backend)
    big = float(np.finfo(dtype).max) / 2
    x = np.array([big, -big, 3.0, -1e-3], dtype=dtype)
    y = k(x)
    c = 2 * mpmath.sqrt(2) / mpmath.sqrt(mpmath.pi)
    for xi, yi in zip(x, y):
        want = np.array(float(c * mpmath.mpf(float(xi))), dtype=dtype)
        assert np.isfinite(yi) and abs(yi - want) <= 2 * np.spacing(np.abs(want)), (xi, yi, want)
    d = k.vjp(x, np.ones_like(x))
    assert np.all(d == np.array(float(c), dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec,f,df", [
    ("{exp(-z**2/2)}", lambda u: mpmath.exp(-u * u / 2), lambda u: -u * mpmath.exp(-u * u / 2)),
    ("{z*exp(-3*z**4)}", lambda u: u * mpmath.exp(-3 * u ** 4),
     lambda u: (1 - 12 * u ** 4) * mpmath.exp(-3 * u ** 4))])
def test_exp_of_minus_a_square_on_numba(spec, f, df, dtype):
    """exp(-c u^2k) (gelu's derivative) is vmath's exp_nonpos on the Numba backend (its argument is
    at most 0, or NaN, for any float): values and derivatives against mpmath from 0 to where
    the square overflows, ±inf and NaN; in the source, no exp with overflow checks. (Not at
    finite z past where z^4 overflows: there the derivative (1 - 12 z^4) exp(-3 z^4) is inf * 0,
    NaN on both backends.)"""
    k = actdsl.compile(spec, backend="numba")
    assert "vm_exp_nonpos(" in k.source and "vm_exp(" not in k.source
    big = float(np.finfo(dtype).max)
    x = [0.0, -0.0, 0.3, -1.0, 2.5, -7.0, 13.5, 40.0, 1e9, -1e9, np.inf, -np.inf]
    if "4" not in spec:
        x += [1e20, -1e30, big]
    x = np.array(x, dtype)
    y, d = quiet(k, x), quiet(k.vjp, x, np.ones_like(x))
    eps = float(np.finfo(dtype).eps)
    for xi, yi, di in zip(x, y, d):
        u = mpmath.mpf(float(xi)) if np.isfinite(xi) else None
        want = 0.0 if u is None else float(f(u))
        want_d = 0.0 if u is None else float(df(u))
        # the argument -c u^2k is rounded: an error of about |arg| ε in the exponent
        arg = 0.0 if u is None else float(3 * u ** 4 if "4" in spec else u * u / 2)
        tol = 8 * eps * (1 + min(arg, 1e30))
        assert abs(yi - want) <= tol * abs(want) + 1e-300, (xi, yi, want)
        assert abs(di - want_d) <= tol * abs(want_d) + 1e-300, (xi, di, want_d)
    assert np.isnan(quiet(k, np.array([np.nan], dtype))).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_rational_slope_is_one_constant_not_a_division_then_a_product(backend, dtype):
    """1599 z/1000 was printed (z/1000)·1599: at the smallest normal float, z/1000 is subnormal
    and lost its low bits (626 ULP in float32, 793 in float64); it is now (1599/1000 rounded)·z,
    within an ULP of the truth there and everywhere, overflowing only where the true value does."""
    k = actdsl.compile("leaky_relu(negative_slope=1.599)", backend=backend)
    info = np.finfo(dtype)
    x = np.array([-info.tiny, -2 * info.tiny, -1e-3, -2.0, -info.max / 2], dtype)
    got = k(x)
    for xi, gi in zip(x, got):
        truth = mpmath.mpf(float(xi)) * mpmath.mpf(1599) / 1000
        assert ulp_error(gi, truth, np.dtype(dtype).name) <= 1, (xi, gi)
    with np.errstate(over="ignore"):
        assert np.isneginf(k(np.array([-info.max], dtype)))[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_halved_quotient_does_not_overflow_its_denominator(backend, dtype):
    """tlin+{abs(z)**0.5}'s derivative is sqrt(-z)/(2 z) for z < -1: 2 z overflowed past half the
    largest float and the derivative came out -0.0 (true: -0.5/sqrt(|z|), about -3.5e-20 at
    -2e38 in float32); x/(2^k y) is now (x/y)·2^-k, exact."""
    k = actdsl.compile("tlin+{abs(z)**0.5}", backend=backend)
    info = np.finfo(dtype)
    x = np.array([-info.max, -0.6 * info.max, -3.0, 3.0, 0.6 * info.max], dtype)
    for xi, di in zip(x, k.derivative(x)):
        v = mpmath.mpf(float(xi))
        truth = mpmath.sign(v) / (2 * mpmath.sqrt(abs(v)))
        assert ulp_error(di, truth, np.dtype(dtype).name) <= 2, (xi, di)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_condition_on_a_sign_keeping_function_is_made_on_its_argument(backend, dtype):
    """rect:max after tanhshrink compared w - tanh w (w³/3) with 0: it underflows to 0 for w
    below 1e-108 in float64 (2.6e-13 in float32), and the flat branch was taken (derivative 0,
    truth tanh(w)², 6.8e-269 at 8.3e-135). sigmoid(w) > 1/2 likewise: sigmoid(1e-20) rounds
    to 1/2, and where(z > 0.5, z, 0) gave 0 for a value of 1/2."""
    info = np.finfo(dtype)
    k = actdsl.compile("tanhshrink+rect:max", backend=backend)
    x = np.array([1e-30 if dtype == np.float32 else 8.25e-135, 1e-20, info.tiny, 0.5, -1e-20], dtype)
    for xi, di in zip(x, k.derivative(x)):
        v = mpmath.mpf(float(xi))
        truth = mpmath.tanh(v) ** 2 if v > 0 else mpmath.mpf(0)
        assert ulp_error(di, truth, np.dtype(dtype).name) <= 8, (xi, di)
    k = actdsl.compile("sigmoid+{where(z > 0.5, z, 0)}", backend=backend)
    x = np.array([1e-20, info.tiny, 1e-3, -1e-20], dtype)
    for xi, yi in zip(x, k(x)):
        with mpmath.workdps(700):  # sigmoid(2.2e-308) - 1/2 needs 310 digits to see
            s = 1 / (1 + mpmath.exp(-mpmath.mpf(float(xi))))
            s = s if s > 0.5 else mpmath.mpf(0)
        assert ulp_error(yi, s, np.dtype(dtype).name) <= 4, (xi, yi)



@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec, x, dtype, expected", [
    # hardswish(e^z) = e^z past e^z = 3: the derivative e^z, beyond the dtype's range here, is
    # inf as correct rounding gives (hardswish's flat 0 · e^z was 0 · inf = NaN)
    ("{exp(z)}+hardswish", 100.0, np.float32, np.inf),
    ("{exp(z)}+hardswish", 1000.0, np.float64, np.inf),
    # hardswish(softplus(9^9 z)) = 9^9 z for large z: slope 9^9 σ(9^9 z) = 387420489 (rounded),
    # where 9^9 z overflowed float32 and hardswish's flat part 0 met softplus(inf)
    ("{9**9*z}+softplus+hardswish", 1.7e38, np.float32, 387420489.0),
])
def test_a_zero_branch_of_a_derivative_is_zero_whatever_an_overflowed_factor_is(
        backend, spec, x, dtype, expected):
    """A derivative that is a product with a Piecewise factor that is 0 on a branch is 0 there,
    not 0 · inf = NaN where an earlier term overflowed (the product is put into the branches)."""
    k = actdsl.compile(spec, backend=backend)
    xs = np.array([x], dtype)
    with np.errstate(all="ignore"):
        d = k.derivative(xs)
        g = k.vjp(xs, np.ones_like(xs))
    assert d.dtype == dtype and d[0] == dtype(expected) and g[0] == dtype(expected), (d, g)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", ["relu+softmin+relu", "relu+softmin+{max(z, 0)}"])
def test_a_piecewise_term_after_a_row_of_a_piecewise_input(spec, backend):
    """relu's condition on a row-wise value of relu(z) (softmin(relu(z)) <= 0), as SymPy's
    Piecewise folded it, took the element's branch inside the row's reductions too: the row's
    max of -relu(z) became that of -z for z > 0, and relu+softmin+relu was 0 at 0.5 and 2 where
    softmin is 0.16 and 0.036. Against NumPy: s = softmin(relu(x)) > 0, so the last relu is the
    identity; the VJP is -s ⊙ (g - s·g) · relu'(x)."""
    x = np.array([[1e4, -1e4, 88.8, -88.8, 80.0, -50.0, 0.5, 2.0],
                  [3.0, -2.0, 0.5, 2.0, -1.0, 1.5, 0.25, -0.75]])
    g = np.array([[0.3, -1.0, 2.0, 0.5, -0.25, 1.5, -0.7, 0.9]] * 2)
    u = np.maximum(x, 0)
    e = np.exp(-(u - u.min(axis=1, keepdims=True)))
    s = e / e.sum(axis=1, keepdims=True)
    want_dx = -s * (g - (s * g).sum(axis=1, keepdims=True)) * (x > 0)
    k = actdsl.compile(spec, backend=backend)
    np.testing.assert_allclose(k(x), s, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(k.vjp(x, g), want_dx, rtol=1e-12, atol=1e-15)
    y32 = k(x.astype(np.float32))
    np.testing.assert_allclose(y32, s, rtol=1e-5, atol=1e-30)

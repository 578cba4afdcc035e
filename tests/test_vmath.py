"""The Numba backend's elementary functions against mpmath: at most 4 ULP over the whole finite
range of each dtype, with NaN, ±inf, ±0 and subnormals handled (erf, erfc and the normal CDF:
the polynomials of tools/vmath_coefficients.py, evaluated in float64; float32's normal CDF takes
its exp in float32)."""
import mpmath as mp
import numpy as np
import pytest
from numba import vectorize

from actdsl.backends import vmath as vm

mp.mp.dps = 40
FUNCS = {
    "exp": mp.exp, "expm1": mp.expm1, "log": mp.log, "log1p": mp.log1p, "tanh": mp.tanh,
    "sigmoid": lambda t: 1 / (1 + mp.exp(-t)), "softplus": lambda t: mp.log1p(mp.exp(t)),
    "sech": mp.sech, "erf": mp.erf,
    # beyond 40 erfc is below 1e-697, far under every subnormal (and mpmath's value of it has
    # an exponent too large to convert to a float)
    "erfc": lambda t: mp.erfc(t) if t < 40 else mp.mpf(0),
    "ncdf": lambda t: mp.erfc(-t / mp.sqrt(2)) / 2 if t > -50 else mp.mpf(0),
}
# (domain where the function is real, special inputs and their exact results)
SPECIAL = {
    "exp": {np.inf: np.inf, -np.inf: 0.0, 0.0: 1.0},
    "expm1": {np.inf: np.inf, -np.inf: -1.0, 0.0: 0.0},
    "log": {np.inf: np.inf, 0.0: -np.inf, -1.0: np.nan, 1.0: 0.0},
    "log1p": {np.inf: np.inf, -1.0: -np.inf, -2.0: np.nan, 0.0: 0.0},
    "tanh": {np.inf: 1.0, -np.inf: -1.0, 0.0: 0.0},
    "sigmoid": {np.inf: 1.0, -np.inf: 0.0, 0.0: 0.5},
    "softplus": {np.inf: np.inf, -np.inf: 0.0},
    "sech": {np.inf: 0.0, -np.inf: 0.0, 0.0: 1.0},
    "erf": {np.inf: 1.0, -np.inf: -1.0, 0.0: 0.0, 30.0: 1.0, -30.0: -1.0},
    "erfc": {np.inf: 0.0, -np.inf: 2.0, 0.0: 1.0, 30.0: 0.0, -30.0: 2.0},
    "ncdf": {np.inf: 1.0, -np.inf: 0.0, 0.0: 0.5, 40.0: 1.0, -40.0: 0.0},
}
_UFUNCS = {}


def ufunc(name):
    if name not in _UFUNCS:
        f = getattr(vm, name)
        _UFUNCS[name] = vectorize(["float32(float32)", "float64(float64)"])(lambda x: f(x))
    return _UFUNCS[name]


def grid(dtype, count, rng):
    """Points over the whole finite range: every binade, both signs, subnormals included."""
    info = np.finfo(dtype)
    exps = rng.uniform(np.log2(float(info.smallest_subnormal)), np.log2(float(info.max)), count)
    mags = np.exp2(exps)
    x = np.concatenate([mags, -mags, rng.uniform(-30, 30, count), rng.normal(0, 1, count)])
    extra = [info.max, -info.max, info.smallest_normal, info.smallest_subnormal,
             -info.smallest_subnormal, 88.72, 709.78, -745.1, -103.9, 1.0, -1.0, 0.5]
    x = np.concatenate([x, np.array(extra)]).astype(dtype)
    return x[np.isfinite(x)]


def ulp_error(got, exact, dtype):
    """|got - exact| in units of the spacing at the exact value rounded to dtype."""
    with np.errstate(over="ignore"):
        want = np.abs(np.array(float(exact)).astype(dtype))
    if not np.isfinite(want):
        return 0.0 if got == np.array(float(exact)).astype(dtype) else np.inf
    # the gap below |want| (toward zero): finite even at finfo.max, and the stricter of the two
    gap = float(want) - float(np.nextafter(want, dtype(0))) if want != 0 else 0.0
    spacing = gap or float(np.finfo(dtype).smallest_subnormal)
    return abs(float(got) - float(exact)) / spacing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(FUNCS))
def test_ulp_error_over_the_finite_range(name, dtype):
    rng = np.random.default_rng(7)
    x = grid(dtype, 600, rng)
    if name in ("log",):
        x = np.abs(x)
    if name == "log1p":
        x = np.where(x < -1, -x, x).astype(dtype)
    with np.errstate(all="ignore"):
        y = ufunc(name)(x)
    assert y.dtype == dtype
    worst, where = 0.0, None
    for xi, yi in zip(x, y):
        exact = FUNCS[name](mp.mpf(float(xi)))
        e = ulp_error(yi, exact, dtype)
        if name == "ncdf" and e > 0:
            # float64 ncdf rounds u = -x/sqrt(2) first, an error the truth's slope turns into
            # |Φ'(x)| ulp(x); float32's computes its tail in float32, where Φ's condition number
            # is about x^2 (4.7 ULP strict, all float32 in [-15.5, 6]): as for every built-in
            # (docs/accuracy.md), the bound is on |error| / (ulp(Φ(x)) + |Φ'(x)| ulp(x))
            diff = float(abs(mp.mpf(float(yi)) - exact))
            spacing = diff / e
            slope = float(mp.npdf(mp.mpf(float(xi)))) * float(np.spacing(np.abs(xi)))
            e = diff / (spacing + slope)
        if e > worst:
            worst, where = e, xi
    assert worst <= 4.0, f"{name} {dtype.__name__}: {worst:.2f} ULP at {where!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(FUNCS))
def test_special_values(name, dtype):
    f = ufunc(name)
    with np.errstate(all="ignore"):
        y = f(np.array([np.nan], dtype))
        assert np.isnan(y[0])
        for x, want in SPECIAL[name].items():
            got = f(np.array([x], dtype))[0]
            if np.isnan(want):
                assert np.isnan(got), (name, x, got)
            else:
                assert got == want, (name, x, got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_zero_and_subnormals(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([-0.0, tiny, -tiny], dtype)
    for name in ("tanh", "expm1", "log1p"):  # odd near 0: f(x) = x there
        y = ufunc(name)(x)
        assert np.signbit(y[0]), name
        assert y[1] == tiny and y[2] == -tiny, name
    assert ufunc("log")(np.array([tiny], dtype))[0] == np.log(np.array(tiny, np.float64)).astype(dtype)


@pytest.mark.parametrize("kind", ["double", "single"])
def test_polynomial_tables_are_the_tools_output(kind):
    """Every table in vmath.py is what tools/vmath_coefficients.py computes (from mpmath), so the
    tables can be reproduced (their accuracy is what the ULP test above measures), and none of
    them cancels when evaluated (sum |d_k| X^k, X the largest |variable|, at most 1.2; actdsl.torch
    evaluates float32's M in float64, where sum |d_k| / min M = 1.54 / 0.399 costs 2^-51, far
    below float32's rounding). The constants of float32's normal CDF come from the tool too."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "tools" / "vmath_coefficients.py"
    spec = importlib.util.spec_from_file_location("vmath_coefficients", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for name, (d, _, X) in tool.tables(kind).items():
        assert getattr(vm, name) == tuple(float(a) for a in d), name
        bound = 1.6 if name == "NCDF_M_SINGLE" else 1.2
        assert mp.fsum(abs(a) * X ** k for k, a in enumerate(d)) <= bound, name
    if kind == "single":
        assert (vm.NCDF_U0, vm.NCDF_ALPHA, vm.NCDF_BETA) == (
            float(tool.NCDF_U0), float(tool.NCDF_ALPHA), float(tool.NCDF_BETA))


def test_float32_ncdf_across_its_pieces():
    # float32's normal CDF switches formula at |x| = 11/16 and caps |x| at 15: dense on both
    # sides of each, against mpmath, conditioned as above; the central piece strict too
    x = np.concatenate([np.linspace(0.6, 0.8, 2001), np.linspace(14.0, 16.0, 401)]).astype(np.float32)
    x = np.concatenate([x, -x])
    y = ufunc("ncdf")(x)
    worst = 0.0
    for xi, yi in zip(x, y):
        exact = mp.ncdf(mp.mpf(float(xi)))
        e = ulp_error(yi, exact, np.float32)
        if abs(xi) < 0.6875:
            assert e <= 2.0, (xi, e)
        diff = float(abs(mp.mpf(float(yi)) - exact))
        if e:
            slope = float(mp.npdf(mp.mpf(float(xi)))) * float(np.spacing(np.abs(xi)))
            e = diff / (diff / e + slope)
        worst = max(worst, e)
    assert worst <= 4.0
    assert np.all(y[x >= 15] == 1.0) and np.all(y[x <= -15] == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_where_it_saturates(dtype):
    # tanh clamps |x| where exp(-2|x|) drops below half an ULP of 1 (9.5 in float32, 19.5 in
    # float64): dense across the switch at 0.55, both caps and beyond, against mpmath
    x = np.concatenate([np.linspace(0.5, 0.6, 501), np.linspace(8.0, 22.0, 2801)]).astype(dtype)
    x = np.concatenate([x, -x])
    y = ufunc("tanh")(x)
    worst = max(ulp_error(yi, mp.tanh(mp.mpf(float(xi))), dtype) for xi, yi in zip(x, y))
    assert worst <= 4.0
    assert np.all(y[x > 20] == 1.0) and np.all(y[x < -20] == -1.0)


def test_where_is_the_ternary_without_a_branch():
    """vm.where(c, a, b) is ``a if c else b`` typed as the ternary would be (the unified type of
    a and b), NaN and signed zeros passed through untouched."""
    from numba import njit

    @njit
    def both(c, a, b):
        return vm.where(c, a, b), (a if c else b)

    cases = [(np.float32(1.5), np.float32(-0.0)), (np.float64(np.nan), np.float64(2.0)),
             (np.float32(3.0), np.float64(-np.inf)), (np.int64(7), np.float32(0.25))]
    for a, b in cases:
        for c in (True, False):
            got, ternary = both(c, a, b)
            assert type(got) is type(ternary)
            assert np.array_equal(np.array(got), np.array(ternary), equal_nan=True)
            assert np.signbit(got) == np.signbit(ternary)
    # no branch for Numba's front end (whose SSA pass paid for each): one block, where the
    # ternary has four (LLVM's optimised IR would show a select for both)
    from numba.core.compiler import run_frontend

    def select(c, a, b):
        return vm.where(c, a, b)

    def ternary(c, a, b):
        return a if c else b
    assert len(run_frontend(select).blocks) == 1 < len(run_frontend(ternary).blocks)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_of_a_nonpositive_argument(dtype):
    """exp_nonpos, softmax's exp(u - max u): over every x <= 0 (a dense sample of each binade,
    the underflow edge where results turn subnormal and then 0) within 4 ULP of mpmath's exp and
    bit for bit vmath's exp; 1 at ±0 and at small positive values (an argument rounded above 0),
    0 at -inf, NaN at NaN."""
    rng = np.random.default_rng(3)
    x = -np.abs(grid(dtype, 800, rng))
    info = np.finfo(dtype)
    lo = float(np.log(float(info.smallest_subnormal)))  # below: exp rounds to 0
    edge = np.linspace(lo - 2, float(np.log(float(info.smallest_normal))) + 1, 400)
    x = np.concatenate([x, edge, np.nextafter(edge, 0)]).astype(dtype)
    with np.errstate(all="ignore"):
        got, plain = ufunc("exp_nonpos")(x), ufunc("exp")(x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.view(f"u{info.bits // 8}"), plain.view(f"u{info.bits // 8}"))
    worst = max(ulp_error(g, mp.exp(mp.mpf(float(v))), dtype) for v, g in zip(x, got))
    assert worst <= 4.0
    special = np.array([0.0, -0.0, float(info.tiny), float(info.eps), np.inf * -1, np.nan], dtype)
    y = ufunc("exp_nonpos")(special)
    assert list(y[:4]) == [1.0, 1.0, 1.0, 1.0] and y[4] == 0.0 and np.isnan(y[5])

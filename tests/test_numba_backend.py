"""The Numba backend agrees with the NumPy backend (the reference) on every key and composition,
in both dtypes, including extreme inputs and kinks; and its ufunc/gufunc views work."""
import re
import zlib

import numpy as np
import pytest

import actdsl
from actdsl.registry import REGISTRY
from conftest import away_from_kinks
from reference import COMPOSITIONS, KINKS, ROWWISE

KEYS = sorted(d.key for d in REGISTRY.definitions())
SPECS = KEYS + list(COMPOSITIONS) + ["prelu+norm:z", "tanh+lgrelu+softmax", "maxout:2+norm:max",
                                     "elu(alpha=0.5)+log_softmax", "mish+softmax",
                                     # a stored call inside calls an earlier pass stores
                                     "tanhshrink+celu(alpha=2)+tanhshrink+softmax+relu"]
# elementwise: a few ULP of the result; row-wise: relative to the row's scale
BOUND = {np.float32: 16 * np.finfo(np.float32).eps, np.float64: 64 * np.finfo(np.float64).eps}


def pair(spec):
    return actdsl.compile(spec, backend="numba"), actdsl.compile(spec, backend="numpy")


def params_for(k, units, rng):
    p = k.init_params(units, rng=rng)
    for name in p:
        if name.startswith("r"):
            p[name] = rng.uniform(0.05, 0.5, size=p[name].shape)
    return p


def assert_agree(a, b, dtype, rowwise, what, floor=0.0):
    """Same NaNs, same infinities, and finite values within BOUND of the reference's scale:
    the value itself, floored at 1% of the largest value (two float32 implementations of a
    derivative that crosses zero differ by their rounding of the terms, not of the result)."""
    with np.errstate(all="ignore"):
        _assert_agree(np.asarray(a, np.float64), np.asarray(b, np.float64), dtype, rowwise, what,
                      floor)


def _assert_agree(a, b, dtype, rowwise, what, floor):
    assert np.array_equal(np.isnan(a), np.isnan(b)), what
    ok = ~np.isnan(a)
    assert np.array_equal(a[ok & np.isinf(a)], b[ok & np.isinf(a)]), what
    fin = ok & np.isfinite(a) & np.isfinite(b)
    finite_b = np.where(np.isfinite(b), np.abs(b), 0)
    scale = np.maximum(np.abs(b), max(floor, 0.01 * (np.max(finite_b) if b.size else 0)))
    if rowwise and b.ndim:
        scale = np.maximum(scale, np.max(np.where(np.isfinite(b), np.abs(b), 0), axis=-1, keepdims=True))
    tol = BOUND[dtype] * np.maximum(scale, np.finfo(dtype).tiny)
    err = np.abs(a - b)
    assert np.all(err[fin] <= tol[fin] + np.finfo(dtype).tiny), (
        f"{what}: max error {np.max(err[fin] / tol[fin]):.1f}x the bound")


def assert_backend_agrees(kb, kp, spec, dtype, units, param_bound, same_shapes=False):
    """Backend kernel ``kb`` against the NumPy kernel ``kp`` on random rows of ``units``:
    forward, VJP, parameter gradients (within ``param_bound``) and, elementwise, the derivative."""
    rng = np.random.default_rng(zlib.crc32(spec.encode()))
    x = away_from_kinks(rng.normal(size=(5, units)) * 3).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    p = params_for(kp, units, rng)
    y = kb(x, **p)
    assert y.dtype == dtype and y.shape == x.shape
    assert_agree(y, kp(x, **p), dtype, kb.rowwise, f"{spec} forward")
    dx, dp = kb.vjp(x, g, with_params=True, **p)
    rx, rp = kp.vjp(x, g, with_params=True, **p)
    assert dx.dtype == dtype
    # a VJP's terms are of the size of dy: cancellation to ~0 is judged against that
    assert_agree(dx, rx, dtype, kb.rowwise, f"{spec} vjp", floor=float(np.max(np.abs(g))))
    for name in p:
        if same_shapes:
            assert dp[name].shape == rp[name].shape
        # a parameter gradient sums over the batch: bound it by the size of the summed terms
        assert np.allclose(dp[name], rp[name], rtol=param_bound, atol=param_bound), name
    if not kb.rowwise:
        # near a zero of g' (mish' at -1.198) the result cancels: judge it against O(1) terms
        assert_agree(kb.derivative(x, **p), kp.derivative(x, **p), dtype, False,
                     f"{spec} derivative", floor=1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SPECS)
def test_numba_agrees_with_numpy(spec, dtype):
    kn, kp = pair(spec)
    assert_backend_agrees(kn, kp, spec, dtype, units=8, param_bound=BOUND[dtype] * 40)


EXTREME = [0.0, -0.0, 1.0, -1.0, 1e4, -1e4, 88.8, -88.8, 710.0, -710.0, 1e-40, -1e-300,
           np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("key", [k for k in KEYS if k not in ROWWISE and k not in
                                 ("log_softmax", "softmin", "prelu", "lgrelu", "maxout")])
def test_extreme_inputs_and_kinks_agree(key, dtype):
    kn, kp = pair(key)
    with np.errstate(all="ignore"):
        x = np.array(EXTREME + list(KINKS.get(key, {})), dtype=dtype)
    with np.errstate(all="raise"):
        for what in ("__call__", "derivative"):
            assert_agree(getattr(kn, what)(x), getattr(kp, what)(x), dtype, False, f"{key} {what}")
        assert_agree(kn.vjp(x, np.ones_like(x)), kp.vjp(x, np.ones_like(x)), dtype, False, key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("key", sorted(ROWWISE) + ["log_softmax", "softmin"])
def test_rowwise_extremes_agree(key, dtype):
    kn, kp = pair(key)
    rows = np.array([[1e4, -1e4, 88.8, -88.8, 710.0, -710.0], [3.0] * 6, [0.0] * 6,
                     [1.0, 2.0, np.nan, 0.0, 1.0, 1.0]], dtype=dtype)
    if key in ("softmax", "log_softmax", "softmin"):
        rows = np.vstack([rows, np.array([[np.inf, 0, 1, 2, 3, 4], [-np.inf] * 5 + [0.0]], dtype)])
    with np.errstate(all="raise"):
        assert_agree(kn(rows), kp(rows), dtype, True, key)
        assert_agree(kn.vjp(rows, np.ones_like(rows)), kp.vjp(rows, np.ones_like(rows)), dtype, True,
                     key, floor=1.0)


def test_shapes_axes_and_layouts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 6))
    for spec in ("tanh", "softmax", "prelu"):
        kn, kp = pair(spec)
        p = {"r": rng.uniform(0.1, 0.3, size=x.shape[1])} if spec == "prelu" else {}
        for axis in (0, 1, -1):
            if spec == "prelu" and axis != 1:
                continue
            np.testing.assert_allclose(kn(x, axis=axis, **p), kp(x, axis=axis, **p), rtol=1e-13, atol=1e-15)
        view = x[:, ::2, ::-1]  # non-contiguous
        q = {"r": 0.2} if spec == "prelu" else {}
        np.testing.assert_allclose(kn(view, **q), kp(view, **q), rtol=1e-13, atol=1e-15)
        assert kn(np.zeros((0, 6)), **q).shape == (0, 6)
    k = actdsl.compile("tanh", backend="numba")
    assert k(np.float32(0.5)).shape == () and k(np.float32(0.5)).dtype == np.float32
    assert k([1, 2]).dtype == np.float64


def test_out_argument():
    k = actdsl.compile("sigmoid", backend="numba")
    x = np.linspace(-5, 5, 12, dtype=np.float32).reshape(3, 4)
    out = np.empty_like(x)
    assert k(x, out=out) is out
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6)
    r = actdsl.compile("softmax", backend="numba")
    out_t = np.empty_like(x)
    assert r(x, axis=0, out=out_t) is out_t  # a moved axis goes through a copy
    np.testing.assert_allclose(out_t, actdsl.compile("softmax")(x, axis=0), rtol=1e-6)
    with pytest.raises(actdsl.ParameterError, match="dtype"):
        k(x, out=np.empty((3, 4)))
    with pytest.raises(actdsl.ParameterError, match="shape"):
        k(x, out=np.empty((4, 3), np.float32))


def test_ufunc_and_gufunc_views():
    k = actdsl.compile("softplus", backend="numba")
    u = k.ufunc
    assert isinstance(u, np.ufunc) and u.types[:2] == ["f->f", "d->d"]  # float32 first
    x = np.linspace(-30, 30, 61, dtype=np.float32)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(u(x), k(x), rtol=0, atol=0)
        out = np.empty((2, 61), np.float32)
        u(np.stack([x, -x]), out=out)  # out= and broadcasting, as a ufunc does
    np.testing.assert_allclose(out[1], k(-x))
    g = actdsl.compile("norm:z", backend="numba").gufunc
    rows = np.random.default_rng(1).normal(size=(3, 7))
    np.testing.assert_allclose(g(rows), actdsl.compile("norm:z")(rows), rtol=1e-13, atol=1e-14)
    gp = actdsl.compile("prelu", backend="numba").gufunc
    np.testing.assert_allclose(gp(rows, np.full(7, 0.2)), np.where(rows > 0, rows, 0.2 * rows))


def test_generated_source_is_readable_and_names_are_ours():
    k = actdsl.compile("tanh+norm:z", backend="numba")
    assert "def forward_rows" in k.source and "def vjp_rows" in k.source
    assert "vm_tanh(" in k.source and "np.tanh" not in k.source  # vectorizable tanh, not libm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_maximum_gradient_goes_to_the_first_maximum_or_first_nan(dtype):
    """norm:max = z / (eps + max|z|): the max's gradient flows through its first argmax on ties,
    through the first NaN when the row has one (NaN everywhere then), and through the first
    element of an all-zero row. Expected values written out by hand from the formula."""
    k = actdsl.compile("norm:max", backend="numba")
    x = np.array([[3, -3, 1, 3], [-2, 1, -2, 0.5], [0, -0.0, 0, 0], [1, np.nan, 5, np.nan]], dtype)
    g = np.array([[1, 2, 3, 4], [1, -1, 2, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype)
    eps = 1e-8
    expected = np.empty((3, 4))
    for i, first in enumerate([0, 0, 0]):
        row, gr = x[i].astype(np.float64), g[i].astype(np.float64)
        d = eps + np.max(np.abs(row))
        expected[i] = gr / d
        sign = -1.0 if row[first] < 0 else 1.0  # the branch taken at a zero is the z >= 0 one
        expected[i, first] -= sign * np.sum(gr * row) / d ** 2
    dx = k.vjp(x, g)
    np.testing.assert_allclose(dx[:3], expected, rtol=BOUND[dtype])
    assert np.isnan(dx[3]).all()
    y = k(x)
    np.testing.assert_allclose(y[:3], x[:3] / (eps + np.max(np.abs(x[:3].astype(np.float64)), axis=1, keepdims=True)),
                               rtol=BOUND[dtype])
    assert np.isnan(y[3]).all()


def test_the_garbage_collector_is_paused_only_while_compiling():
    """Compiles run with Python's cyclic collector paused (it took about a fifth of a cold
    compile); whatever the collector's state was, it is the same afterwards, after an error too,
    and with nested or concurrent pauses."""
    import gc
    import threading

    from actdsl.backends.numba_cpu import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with collector_paused():
            raise RuntimeError("a failed compile")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # the caller's choice stands
    finally:
        gc.enable()
    inside, release = threading.Event(), threading.Event()

    def hold():
        with collector_paused():
            inside.set()
            release.wait(10)
    t = threading.Thread(target=hold)
    t.start()
    inside.wait(10)
    with collector_paused():
        pass
    assert not gc.isenabled()  # the other thread's pause still holds
    release.set()
    t.join()
    assert gc.isenabled()
    # a real first call (compiles) and a ufunc
    k = actdsl.compile("{z * 0.25 - 1}+norm:mean", backend="numba")
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    want = (x * 0.25 - 1) - (x * 0.25 - 1).mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(k(x), want, rtol=1e-6, atol=1e-6)
    assert gc.isenabled()


def test_cpu_kernels_allocate_nothing_so_gufuncs_still_compile(tmp_path):
    """An np.empty inside a CPU kernel (maxout:5's row VJP kept its pieces' index that way) made
    every later gufunc compile in the process fail: Numba registered the allocator's lowering for
    the first target context only. Scratch comes from the caller; only the gufunc allocates."""
    import subprocess
    import sys
    src = actdsl.compile("maxout:5", backend="numba").source
    body = src[:src.index("def make_gufunc")]
    assert "np.empty" not in body
    code = ("import numpy as np, actdsl\n"
            "k = actdsl.compile('maxout:5', backend='numba')\n"
            "x = np.ones((3, 4)); p = k.init_params(4)\n"
            "k.vjp(x, x, with_params=True, **p)\n"
            "g = actdsl.compile('norm:z', backend='numba').gufunc\n"
            "print(g(np.array([[1.0, 2.0, 4.0]])).round(6).tolist())\n")
    env = {**__import__("os").environ, "ACTDSL_CACHE_DIR": str(tmp_path / "c"),
           "NUMBA_CACHE_DIR": str(tmp_path / "n")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # z-scores of [1, 2, 4] (mean 7/3, std sqrt(14)/3)
    want = [round((v - 7 / 3) / (14 ** 0.5 / 3), 6) for v in (1.0, 2.0, 4.0)]
    assert out.stdout.strip() == str([want])


EXPENSIVE = ("exp", "expm1", "log", "log1p", "tanh", "sech", "sigmoid", "softplus", "erf", "erfc",
             "ncdf", "tanhshrink")


def _calls(function_source: str) -> list[str]:
    """Each ``vm_<expensive>(...)`` call's whole text, arguments balanced."""
    found = []
    for m in re.finditer(r"\bvm_(\w+)\(", function_source):
        if m.group(1) not in EXPENSIVE:
            continue
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(function_source[i], 0)
            i += 1
        found.append(function_source[m.start():i])
    return found


@pytest.mark.parametrize("spec", ["tanh+softplus+sigmoid+relu+elu+selu", "sigmoid+relu+elu",
                                  "mish+elu", "gelu+silu+celu", "softplus+hardswish+selu",
                                  "tanh+norm:z", "elu+log_softmax", "mish+softmax"])
def test_each_expensive_call_is_computed_once_per_function(spec):
    """The generated source computes each transcendental call once per function: a call hoisted
    out of a branch is written in terms of the values computed before it. (It was once printed
    whole wherever it occurred: the six-term composition's forward held
    sigmoid(softplus(tanh(z))) 33 times, and Numba took seconds longer to compile it.)"""
    source = actdsl.compile(spec, backend="numba").source
    for function in source.split("\ndef ")[1:]:
        calls = _calls(function)
        repeated = {c for c in calls if calls.count(c) > 1}
        assert not repeated, f"{spec}: {function.split('(')[0]} computes {sorted(repeated)[:2]} more than once"


def test_parameters_go_as_one_padded_array_and_scans_without_branches():
    """Row kernels take every parameter column in one C-contiguous array P (gradients in one DP),
    each row an odd number of 64-byte lines (rows 4 KiB apart shared a cache set: maxout:16 ran
    3x slower), print maxout's scan as selects, not ternaries (branches: Numba's SSA pass
    took longer than LLVM on maxout:64), and accumulate its one-hot gradients with a scatter.
    Values and gradients (NaN included): checked against the definition."""
    from actdsl.backends.numba_cpu import Runner
    for units, dtype in [(1024, np.float32), (1000, np.float64), (3, np.float32), (16, np.float64)]:
        P = Runner._columns([None, np.arange(units), 2.5], units, dtype)[0]
        line = 64 // np.dtype(dtype).itemsize
        assert P.flags.c_contiguous and P.dtype == dtype and P.shape[0] == 2
        assert P.shape[1] >= units and P.shape[1] % line == 0 and (P.shape[1] // line) % 2 == 1
        np.testing.assert_array_equal(P[0, :units], np.arange(units))
        np.testing.assert_array_equal(P[1, :units], 2.5)
    k = actdsl.compile("maxout:5", backend="numba")
    vjp = k.source[k.source.index("def vjp_rows"):k.source.index("SLOTS")]
    scan = vjp[:vjp.index("IDX0[j] =")]  # the loop that scans the pieces and writes dx
    assert " if " not in scan.replace("dx[j] = z if z != z", "")
    assert "def vjp_rows(X, GY, DX, DP, P, T)" in vjp
    # the slopes' and intercepts' gradients: one scatter each per element, not 10 accumulations
    assert vjp.count("DP[") == 4 and "DP[0 + int(" in vjp and "DP[5 + int(" in vjp
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 1024)).astype(np.float32)
    p = {n: v.astype(np.float32) for n, v in k.init_params(1024, rng=rng).items()}
    pieces = x[..., None] * p["m"] + p["b"]  # (rows, units, pieces), float32 like the kernel
    first = pieces.argmax(axis=-1)
    np.testing.assert_allclose(k(x, **p), pieces.max(axis=-1), rtol=1e-6, atol=1e-7)
    g = rng.normal(size=x.shape).astype(np.float32)
    dx, grads = k.vjp(x, g, with_params=True, **p)
    onehot = np.arange(5) == first[..., None]
    np.testing.assert_allclose(dx, g * np.take_along_axis(np.broadcast_to(p["m"], pieces.shape),
                                                          first[..., None], -1)[..., 0], rtol=1e-6)
    np.testing.assert_allclose(grads["m"], (onehot * (g * x)[..., None]).sum(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads["b"], (onehot * g[..., None]).sum(0), rtol=1e-4, atol=1e-5)
    x[2, 7] = np.nan  # a NaN maximum: NaN in every gradient of its unit
    dx, grads = k.vjp(x, g, with_params=True, **p)
    assert np.isnan(dx[2, 7]) and np.isnan(grads["m"][7]).all() and np.isnan(grads["b"][7]).all()
    assert np.isfinite(grads["m"][8]).all() and np.isfinite(dx[2, 8])


def _loop_over_many_rows(rows: int):
    """A fresh Numba function whose loop reads ``rows`` rows of X and writes y: each row a pointer
    that may alias y, so LLVM needs ``rows`` runtime checks to vectorize it."""
    import numba
    src = ("def many_rows(X, y):\n    for j in range(y.shape[0]):\n        y[j] = "
           + " + ".join(f"X[{k}, j] * X[{k}, j]" for k in range(rows)) + "\n")
    namespace = {}
    exec(compile(src, f"<many_rows_{rows}>", "exec"), namespace)  # test code, not user text
    f = numba.njit(fastmath=True)(namespace["many_rows"])
    f(np.ones((rows, 64), np.float32), np.empty(64, np.float32))
    asm = f.inspect_asm(f.signatures[0])
    return len(re.findall(r"\bv?mul(?:ps)\b", asm)), len(re.findall(r"\bv?mul(?:ss)\b", asm))


def test_kernels_compile_allowing_more_alias_checks_and_nothing_else_does():
    """While actdsl's kernels compile (numba_cpu.compiling), LLVM's vectorizer may emit up to
    ALIAS_CHECKS runtime alias checks a loop, so a loop over many parameter rows (maxout:64 reads
    128) is vectorized; before and after, Numba code compiles with LLVM's default (128 checks)."""
    from actdsl.backends import numba_cpu
    before = _loop_over_many_rows(140)
    with numba_cpu.compiling():
        with numba_cpu.compiling():  # nested: one raise
            pass
        during = _loop_over_many_rows(141)
    after = _loop_over_many_rows(142)
    assert before[0] == 0 and before[1] > 0, before        # scalar: too many checks
    assert during[0] > 0, during                           # packed multiplies
    assert after[0] == 0 and after[1] > 0, after

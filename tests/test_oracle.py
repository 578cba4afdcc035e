"""Differential tests against truths the code under test does not share (issue 15, item 2).

Every expected value comes from tests/oracle_defs.py (mpmath, written from DESIGN.md's table and
PyTorch's documentation) or from PyTorch itself; tolerances are stated in oracle_cases.py.
Cases the code failed when the suite was written are marked xfail in oracle_known.py, one case
each. The marks are strict: a case that starts to pass fails the run and names the mark to delete
from oracle_known.py (ORACLE_STRICT=0 relaxes them while a fix is in progress).
"""
import functools
import os

import mpmath as mp
import numpy as np
import pytest

import actdsl
import oracle_cases as oc
import oracle_defs as od
import oracle_torch as ot
from hypothesis import HealthCheck, given, reject, settings, strategies as st
from hypothesis.extra import numpy as hnp
from oracle_known import KNOWN
from oracle_torch import torch

STRICT = os.environ.get("ORACLE_STRICT", "1") == "1"  # see the module docstring

BACKENDS = ("numpy", "numba")
DTYPES = (np.float32, np.float64)

ELEM_KEYS = [
    "linear", "sigmoid", "logistic", "tanh", "softplus", "relu", "rect:max", "rect:min", "trel",
    "rect:minmax", "trec", "tlin", "prelu", "leaky-relu", "lgrelu", "leaky-gain-relu", "maxout",
    "maxout:3", "celu", "elu", "selu", "exponential", "gelu", "gelu:tanh", "hardshrink",
    "hard_shrink", "hardsigmoid", "hardswish", "hard_silu", "hardtanh", "leaky_relu",
    "logsigmoid", "log_sigmoid", "mish", "relu6", "silu", "swish", "softshrink", "soft_shrink",
    "softsign", "sparse_plus", "tanhshrink", "tanh_shrink", "threshold"]
ELEM_VARIANTS = [
    "elu(alpha=0.5)", "celu(alpha=2)", "leaky_relu(negative_slope=0.2)",
    "hardtanh(min_val=-2, max_val=3)", "threshold(threshold=1, value=-2)", "softshrink(lambd=1)",
    "hardshrink(lambd=2)", "prelu(r=0.25)", "prelu(r=-0.5)", "lgrelu(g=2, r=0.3)",
    "maxout:3(m=[1, -1, 0.5], b=[0, 0, 1])", "maxout:3(m=[1, 1, -1], b=[0, 0, 0])"]
ELEM_COMPOSED = [
    "relu+tanh", "tanh+relu", "softplus+tanh", "sigmoid+softsign", "elu+silu", "gelu+tanhshrink",
    "mish+hardswish", "tanh+exponential", "linear+linear", "softsign+logsigmoid",
    "hardtanh+gelu:tanh", "selu+softplus", "{z * sigmoid(z)}", "{log(1 + exp(z))}",
    "{1/(1 + exp(-z))}", "{exp(z) - 1}", "{z * tanh(softplus(z))}", "{where(z > 0, z, 0.1*z)}",
    "{gelu(pi)}", "relu+{z * sigmoid(z)}"]
ELEM_SPECS = ELEM_KEYS + ELEM_VARIANTS + ELEM_COMPOSED
CONSTANT_SPECS = {"{gelu(pi)}"}
LEARNABLE = {"prelu", "leaky-relu", "lgrelu", "leaky-gain-relu", "maxout", "maxout:3"}

ROW_KEYS = ["softmax", "log_softmax", "softmin", "norm:mean", "norm:max", "norm:std", "norm:z"]
ROW_SPECS = ROW_KEYS + [
    "norm:z(eps=1e-5)", "norm:max(eps=0.5)", "softplus+norm:z", "tanh+norm:z", "sigmoid+norm:z",
    "tanh+norm:z+softmax", "relu+log_softmax", "relu+softmax", "norm:z+softmax",
    "softmax+norm:max", "elu+norm:std", "linear+softmin", "gelu+log_softmax", "norm:max+tanh",
    "norm:std+sigmoid", "norm:mean+softmax", "softsign+norm:mean", "mish+softmin"]
ROW_GROUPS = {
    "ordinary": ("normal8", "randn5", "signedzero", "mixed", "spread100", "spread200", "expedge"),
    "length1": ("len1", "len1neg", "len1zero"),
    "constant": ("const3", "const4", "zeros3", "const3tenth"),
    "huge": ("huge_pm", "huge_max", "huge_same", "huge300", "huge_mean", "huge19", "huge38"),
    "tiny": ("tiny", "subnormal"),
    "farmean": ("farmean", "farmean6"),
}


def _cases(test, *axes):
    """pytest params over the product of axes, each test[id] checked against KNOWN."""
    out = [()]
    for axis in axes:
        out = [c + (v,) for c in out for v in axis]
    params = []
    for c in out:
        cid = "-".join(v.__name__ if isinstance(v, type) else str(v) for v in c)
        key = f"{test}[{cid}]"
        marks = [pytest.mark.xfail(strict=STRICT, reason=KNOWN[key])] if key in KNOWN else []
        params.append(pytest.param(*c, id=cid, marks=marks))
    return params


@functools.lru_cache(None)
def kernel(spec, backend):
    return actdsl.compile(spec, backend=backend)


def _params(spec, k, x):
    return k.init_params(x.shape[-1]) if spec in LEARNABLE else {}


def placed(a, offset):
    """a copied into a larger buffer at an element offset: NumPy's SIMD and scalar loops (and so
    their roundings) depend on alignment, so row-wise results are checked at several."""
    buf = np.zeros(a.size + 4, dtype=a.dtype)
    out = buf[offset:offset + a.size].reshape(a.shape)
    out[...] = a
    return out


OFFSETS = (0, 1, 2, 3)


def _report(bad, xs, limit=6):
    text = "; ".join(f"x={float(xs[i])!r}: got {c!r}, truth {t!r} ({e:.3g} ulp)"
                     for i, c, t, e in bad[:limit])
    return text + (f" ... {len(bad)} points in all" if len(bad) > limit else "")


# ------------------------------------------------------------------ elementwise
@pytest.mark.parametrize("spec,backend,dtype,what",
                         _cases("test_elementwise_against_mpmath",
                                ELEM_SPECS, BACKENDS, DTYPES, ("forward", "derivative", "vjp")))
def test_elementwise_against_mpmath(spec, backend, dtype, what):
    dtype = np.dtype(dtype)
    x = oc.elem_grid(dtype)
    truths = oc.elem_truth(spec, dtype)
    k = kernel(spec, backend)
    params = _params(spec, k, x)
    dy = oc.dy_for(x.shape, dtype)
    with np.errstate(all="ignore"):
        if what == "forward":
            got, t, cond, bound = k(x, **params), [p and p[0] for p in truths], \
                [p and p[2] for p in truths], 4
        elif what == "derivative":
            got, t, cond, bound = k.derivative(x, **params), [p and p[1] for p in truths], \
                [p and p[3] for p in truths], 8
        else:
            got, bound = k.vjp(x, dy, **params), 8
            t = [p and p[1] * mp.mpf(float(g)) for p, g in zip(truths, dy)]
            cond = [p and p[3] * abs(mp.mpf(float(g))) for p, g in zip(truths, dy)]
    assert got.dtype == dtype and got.shape == x.shape
    bad = oc.ulp_errors(got, t, cond, dtype, bound)
    assert not bad, f"{spec} {what} ({backend}, {dtype}): " + _report(bad, x)


@pytest.mark.parametrize("spec,backend,dtype", _cases("test_elementwise_limits_and_nan",
                                                      ELEM_SPECS, BACKENDS, DTYPES))
def test_elementwise_limits_and_nan(spec, backend, dtype):
    """+-inf give the limits (forward and derivative); NaN in gives NaN out, VJP included."""
    dtype = np.dtype(dtype)
    x = np.array([np.inf, -np.inf, np.nan], dtype=dtype)
    k = kernel(spec, backend)
    params = _params(spec, k, x)
    with np.errstate(all="ignore"):
        got = {"forward": k(x, **params), "derivative": k.derivative(x, **params),
               "vjp": k.vjp(x, np.ones_like(x), **params)}
    bad = []
    for i, xi in enumerate((mp.inf, -mp.inf)):
        lim = oc.elem_limit(spec, xi)
        if lim is None:
            continue
        for what, t in (("forward", lim[0]), ("derivative", lim[1]), ("vjp", lim[1])):
            if oc.ulp_errors(got[what][i:i + 1], [t], [od.ZERO], dtype, 4):
                bad.append(f"{what}({float(xi)}) = {got[what][i]!r}, limit {float(t)!r}")
    for what, y in got.items():
        if spec in CONSTANT_SPECS and what == "forward":
            continue  # a constant formula does not read z: NaN in has nothing to propagate
        if not np.isnan(y[2]):
            bad.append(f"{what}(nan) = {y[2]!r}")
    assert not bad, f"{spec} ({backend}, {dtype}): " + "; ".join(bad)


@pytest.mark.parametrize("spec,backend,dtype", _cases("test_no_floating_point_warnings",
                                                      ELEM_SPECS + ROW_SPECS, BACKENDS, DTYPES))
def test_no_floating_point_warnings(spec, backend, dtype):
    """Finite inputs, the whole grid or every named row: no NumPy FP warning, even as errors."""
    dtype = np.dtype(dtype)
    k = kernel(spec, backend)
    with np.errstate(all="raise"):
        if od.is_elementwise(spec):
            x = oc.elem_grid(dtype)
            params = _params(spec, k, x)
            k(x, **params)
            k.derivative(x, **params)
            k.vjp(x, oc.dy_for(x.shape, dtype), **params)
        else:
            for name, row in oc.rows_for(dtype).items():
                x = row[None, :]
                k(x)
                k.vjp(x, oc.dy_for(x.shape, dtype))


# ------------------------------------------------------------------ row-wise
@pytest.mark.parametrize("spec,backend,dtype,what,group",
                         _cases("test_rowwise_against_mpmath",
                                ROW_SPECS, BACKENDS, DTYPES, ("forward", "vjp"), ROW_GROUPS))
def test_rowwise_against_mpmath(spec, backend, dtype, what, group):
    dtype = np.dtype(dtype)
    rows = oc.rows_for(dtype)
    k = kernel(spec, backend)
    bad = []
    for name in ROW_GROUPS[group]:
        if name not in rows:
            continue
        y_t, tol_f, g_t, tol_v = oc.row_truth(spec, dtype, name)
        for off in OFFSETS:
            x = placed(rows[name][None, :], off)
            with np.errstate(all="ignore"):
                if what == "forward":
                    got, t, tol = k(x)[0], y_t, tol_f
                else:
                    dy = placed(oc.dy_for(x.shape[-1:], dtype)[None, :], off)
                    got, t, tol = k.vjp(x, dy)[0], g_t, tol_v
            assert got.dtype == dtype
            for i, c, tv in oc.row_errors(got, t, tol, dtype):
                bad.append(f"{name}{list(x[0])}[{i}] (offset {off}): got {c!r}, truth {tv!r} "
                           f"(tol {float(tol):.3g})")
    assert not bad, f"{spec} {what} ({backend}, {dtype}): " + "; ".join(bad[:6])


CONSISTENT = [s for s in ROW_SPECS if s.endswith(("norm:z", "norm:mean", "norm:z(eps=1e-5)"))]


@pytest.mark.parametrize("spec,backend,dtype", _cases("test_rowwise_constant_rows_exact",
                                                      CONSISTENT, BACKENDS, DTYPES))
def test_rowwise_constant_rows_exact(spec, backend, dtype):
    """A row of equal values (or of one value) centres to exactly 0, and a constant dy has a VJP
    of exactly 0: every entry's value is the same number, so u - mean(u) is 0 in any arithmetic
    that computes one value once (or identically) and the mean of equal numbers exactly."""
    dtype = np.dtype(dtype)
    k = kernel(spec, backend)
    bad = []
    for row in ([0.7], [1.0], [-2.0], [0.3] * 3, [0.1] * 3, [5.0] * 4, [1e4] * 5, [-0.7] * 7):
        for off in OFFSETS:
            x = placed(np.array([row], dtype=dtype), off)
            with np.errstate(all="ignore"):
                y = k(x)
                g = k.vjp(x, placed(np.full_like(x, 1.5), off))
            if np.any(y != 0):
                bad.append(f"forward{row[:2]}x{len(row)} (offset {off}) = {y[0][:3]}")
            if np.any(g != 0):
                bad.append(f"vjp{row[:2]}x{len(row)} (offset {off}) = {g[0][:3]}")
    assert not bad, f"{spec} ({backend}, {dtype}): " + "; ".join(bad)


@pytest.mark.parametrize("backend,dtype", _cases("test_log_softmax_every_entry_accurate",
                                                  BACKENDS, DTYPES))
def test_log_softmax_every_entry_accurate(backend, dtype):
    """Each entry of log_softmax within a few ULP of its own value, the largest one too: on a
    confident row it is -log(1 + δ) with δ tiny (a loss near 0), whose digits the log of a
    rounded 1 + δ loses (found by the composition search: log_softmax+silu at [0, 9])."""
    dtype = np.dtype(dtype)
    k = kernel("log_softmax", backend)
    bad = []
    for t in (1.0, 5.0, 9.0, 12.5, 16.0, 30.0, 60.0):
        for ties in (1, 2, 3):
            row = [t] * ties + [0.0, -1.5, t / 3]
            x = np.array([row], dtype=dtype)
            with mp.workdps(60):
                xs = [mp.mpf(float(v)) for v in x[0]]
                lse = mp.log(mp.fsum(mp.exp(v) for v in xs))
                truth = [v - lse for v in xs]
                # the one allowance: s_j = x_j - max rounds (by |s_j| ε/2), and exp turns that
                # into a relative error of δ, the sum of exp(s_j) past the maxima
                top = max(xs)
                past = [v - top for v in xs if v != top]
                w = mp.fsum(mp.exp(v) * abs(v) for v in past) / mp.fsum(mp.exp(v) for v in past)
                eps = mp.mpf(float(np.finfo(dtype).eps))
                conds = [abs(t) * eps / 2 * w for t in truth]
            got = k(x)[0]
            errs = oc.ulp_errors(got, truth, conds, dtype, 4)
            if errs:
                bad.append(f"{row}: {errs}")
    assert not bad, "; ".join(bad)


INF_ROWS = ([np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0], [0.5, -np.inf, 2.0, -1.0])


@pytest.mark.parametrize("spec,backend,dtype", _cases("test_rowwise_limits_and_nan",
                                                      ROW_SPECS, BACKENDS, DTYPES))
def test_rowwise_limits_and_nan(spec, backend, dtype):
    """A row holding one +-inf gives the limit where it exists; a NaN makes the row's forward
    NaN (every output depends on every entry) and the VJP NaN at least where the NaN was."""
    dtype = np.dtype(dtype)
    k = kernel(spec, backend)
    bad = []
    for row in INF_ROWS:
        lim = oc.row_limit(spec, row, dtype)
        if lim is None:
            continue
        with np.errstate(all="ignore"):
            y = k(np.array([row], dtype=dtype))[0]
        for c, t in zip(y, lim):
            if not (c == t or (np.isnan(t) and np.isnan(c))
                    or (np.isfinite(t) and abs(c - t) <= 16 * np.finfo(dtype).eps * max(
                        abs(v) for v in lim if np.isfinite(v)))):
                bad.append(f"forward{row} = {list(y)}, limit {lim}")
                break
    x = np.array([[np.nan, 0.0, 1.0]], dtype=dtype)
    with np.errstate(all="ignore"):
        y, g = k(x), k.vjp(x, np.ones_like(x))
    if not np.all(np.isnan(y)):
        bad.append(f"forward[nan, 0, 1] = {y[0]}")
    if not np.isnan(g[0, 0]):
        bad.append(f"vjp[nan, 0, 1] = {g[0]}")
    assert not bad, f"{spec} ({backend}, {dtype}): " + "; ".join(bad)


# ------------------------------------------------------------------ PyTorch, a second opinion
TORCH = ot.functions()
TORCH_ELEM = [s for s in TORCH if od.is_elementwise(s)]
TORCH_ROW = [s for s in TORCH if not od.is_elementwise(s)]


def _torch_run(spec, x, dy):
    t = torch.tensor(x, requires_grad=True)
    y = TORCH[spec](t)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs it)")
@pytest.mark.parametrize("spec,dtype", _cases("test_torch_agrees_elementwise", TORCH_ELEM, DTYPES))
def test_torch_agrees_elementwise(spec, dtype):
    """actdsl and torch agree within the ULP bounds, except where TORCH_WRONG records that
    torch is wrong; there the mpmath truth must side with actdsl."""
    dtype = np.dtype(dtype)
    x = ot.torch_points(dtype)
    truths = oc.points_truth(od.canonical(spec), dtype, tuple(float(v) for v in x))
    k = kernel(spec, "numpy")
    ty, tg = _torch_run(spec, x, np.ones_like(x))
    bad = []
    for what, a, b, ti, ci, bound in (
            ("forward", k(x), ty, 0, 2, 4), ("derivative", k.derivative(x), tg, 1, 3, 8)):
        t = [p and p[ti] for p in truths]
        cond = [p and p[ci] for p in truths]
        wrong = ot.torch_wrong(spec, what, x)
        for i in range(len(x)):
            ulp_i = od.ulp(max(abs(float(a[i])), abs(float(b[i]))), dtype) + (cond[i] or 0)
            agree = (a[i] == b[i]) or (np.isfinite(a[i]) and np.isfinite(b[i]) and
                                       abs(float(a[i]) - float(b[i])) <= 2 * bound * ulp_i)
            torch_ok = not oc.ulp_errors(b[i:i + 1], t[i:i + 1], cond[i:i + 1], dtype, bound)
            ours_ok = not oc.ulp_errors(a[i:i + 1], t[i:i + 1], cond[i:i + 1], dtype, bound)
            if wrong[i]:  # recorded as torch's error: actdsl must meet the truth there
                if not ours_ok:
                    bad.append(f"{what}({x[i]!r}): actdsl {a[i]!r} misses the truth {t[i]} "
                               f"(torch {b[i]!r})")
            elif not agree:
                bad.append(f"{what}({x[i]!r}): actdsl {a[i]!r}, torch {b[i]!r}, truth {t[i]}")
    assert not bad, f"{spec} ({dtype}): " + "; ".join(bad[:8])


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (CI installs it)")
@pytest.mark.parametrize("spec,dtype", _cases("test_torch_agrees_rowwise", TORCH_ROW, DTYPES))
def test_torch_agrees_rowwise(spec, dtype):
    """Rows of the ordinary, length-1 and constant groups: forward and autograd VJP agree with
    actdsl within the rows' tolerances (torch is the second opinion, mpmath the judge)."""
    dtype = np.dtype(dtype)
    rows = oc.rows_for(dtype)
    k = kernel(spec, "numpy")
    bad = []
    for name in ROW_GROUPS["ordinary"] + ROW_GROUPS["length1"] + ROW_GROUPS["constant"]:
        x = rows[name][None, :]
        dy = oc.dy_for(x.shape[-1:], dtype)[None, :]
        y_t, tol_f, g_t, tol_v = oc.row_truth(spec, dtype, name)
        ty, tg = _torch_run(spec, x, dy)
        ours = [(k(placed(x, o))[0], k.vjp(placed(x, o), placed(dy, o))[0]) for o in OFFSETS]
        for what, a, b, t, tol in [
                (w, pair[q], (ty, tg)[q][0], (y_t, g_t)[q], (tol_f, tol_v)[q])
                for pair in ours for q, w in enumerate(("forward", "vjp"))]:
            if np.all(np.abs(a.astype(float) - b) <= 2 * float(tol)):
                continue
            torch_bad = oc.row_errors(b, t, tol, dtype)
            ours_bad = oc.row_errors(a, t, tol, dtype)
            if ours_bad or (name, what) not in ot.torch_wrong_rows(spec):
                bad.append(f"{what} {name}: actdsl {a}, torch {b} (torch off the truth at "
                           f"{[i for i, *_ in torch_bad]}, actdsl at {[i for i, *_ in ours_bad]})")
    assert not bad, f"{spec} ({dtype}): " + "; ".join(bad[:6])


# ------------------------------------------------------------------ hypothesis
POOL_ELEM = ["tanh", "sigmoid", "softplus", "silu", "elu", "gelu", "softsign", "mish", "relu",
             "hardswish", "logsigmoid", "selu", "tanhshrink", "linear", "leaky_relu",
             "gelu:tanh", "celu(alpha=2)", "{z * sigmoid(z)}", "sparse_plus", "tlin"]


@st.composite
def composed(draw, backend):
    terms = draw(st.lists(st.sampled_from(POOL_ELEM), min_size=0, max_size=3))
    row = draw(st.sampled_from([None] + ROW_KEYS))
    after = draw(st.lists(st.sampled_from(POOL_ELEM), max_size=1)) if row else []
    spec = "+".join(terms + ([row] if row else []) + after) or "tanh"
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    # rows of two or more distinct values: equal values and length-1 rows have their own exact
    # test (test_rowwise_constant_rows_exact, test_rowwise_against_mpmath's groups), where the
    # current failures are marked case by case; a random draw cannot carry such a mark
    n = draw(st.integers(2, 6))
    values = st.floats(-30, 30, allow_nan=False, width=32)
    x = draw(hnp.arrays(np.float64, (draw(st.integers(1, 3)), n), elements=values, unique=True))
    return spec, x.astype(dtype)


def _check_composed(spec, x, backend):
    dtype = x.dtype
    try:
        k = kernel(spec, backend)
    except actdsl.BudgetError as e:
        # a documented refusal (piecewise terms in a row multiply SymPy's branches; issue 19,
        # pinned in test_hardening), not an accuracy question: draw another composition
        assert e.budget in ("branch_conditions", "expression_nodes"), e
        reject()
    dy = oc.dy_for(x.shape, dtype, seed=3)
    with np.errstate(all="ignore"):
        y, g = k(x), k.vjp(x, dy)
        d = k.derivative(x) if od.is_elementwise(spec) else None
    if d is not None:
        truths = oc.elem_truth_at(od.canonical(spec), dtype, tuple(x.ravel()))
        for what, got, ti, ci, bound in (("forward", y, 0, 2, 4), ("derivative", d, 1, 3, 8)):
            bad = oc.ulp_errors(got.ravel(), [p and p[ti] for p in truths],
                                [p and p[ci] for p in truths], dtype, bound)
            assert not bad, f"{spec} {what} ({backend}): " + _report(bad, x.ravel())
        return
    for r in range(x.shape[0]):
        y_t, tol_f, g_t, tol_v = oc.row_truth_for(od.canonical(spec), dtype, x[r], dy[r])
        for what, got, t, tol in (("forward", y[r], y_t, tol_f), ("vjp", g[r], g_t, tol_v)):
            bad = oc.row_errors(got, t, tol, dtype)
            assert not bad, f"{spec} {what} ({backend}) row {list(x[r])}: {bad}"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=composed("numpy"))
def test_hypothesis_compositions_numpy(case):
    _check_composed(*case, "numpy")


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=composed("numba"))
def test_hypothesis_compositions_numba(case):
    _check_composed(*case, "numba")


# ------------------------------------------------------------------ plain calls, parameters
SCALAR_SPECS = ["gelu", "tanh", "relu", "{gelu(pi)}", "softplus", "prelu(r=0.1)"]


@pytest.mark.parametrize("spec,backend", _cases("test_python_scalars", SCALAR_SPECS, BACKENDS))
def test_python_scalars(spec, backend):
    """Python floats are arrays too: forward, derivative and VJP of 0.7 (and dy = 1.0)."""
    k = kernel(spec, backend)
    fns = [fn for _, fn in od.stages(spec)]
    v, d = od.robust(lambda: od.elem_chain(fns, mp.mpf(0.7)), [0.7])
    for what, got, t in (("forward", k(0.7), v), ("derivative", k.derivative(0.7), d),
                         ("vjp", k.vjp(0.7, 1.0), d)):
        assert not oc.ulp_errors(np.ravel(got), [t], [od.ZERO], np.float64, 4), (what, got, t)


@pytest.mark.parametrize("backend", _cases("test_learnable_scalars", BACKENDS))
def test_learnable_scalars(backend):
    """A learnable parameter given as a Python float: prelu's VJP at 0.7 (and at -0.7)."""
    k = kernel("prelu", backend)
    assert float(k.vjp(0.7, 1.0, r=0.1)) == 1.0
    assert float(k.vjp(-0.7, 1.0, r=0.1)) == pytest.approx(0.1, rel=1e-15)


PARAM_CASES = {"prelu": {"r": [0.1, 0.25, 0.5]},
               "lgrelu": {"g": [1.0, 2.0, 0.5], "r": [0.1, 0.3, 0.0]},
               "maxout:3": {"m": [[1, -1, 0.5]] * 3, "b": [[0, 0, 1], [0, 1, 0], [1, 0, 0]]}}


def _param_truth(spec, z, p):
    """y, dy/dz and dy/dtheta for one element of unit-parameters p (mpf), from the definition."""
    if spec == "maxout:3":
        vals = [p["m"][i] * z + p["b"][i] for i in range(3)]
        k = max(range(3), key=lambda i: (vals[i], -i))
        return vals[k], p["m"][k], {"m": [z if i == k else 0 for i in range(3)],
                                    "b": [1 if i == k else 0 for i in range(3)]}
    g = p.get("g", 1)
    if z > 0:
        return g * z, g, {"g": z, "r": 0}
    return p["r"] * z, (p["r"] if z < 0 else 0), {"g": 0, "r": z if z < 0 else 0}


@pytest.mark.parametrize("spec,backend,dtype", _cases("test_learnable_parameter_gradients",
                                                      PARAM_CASES, BACKENDS, DTYPES))
def test_learnable_parameter_gradients(spec, backend, dtype):
    """k(x, **params) and k.vjp(..., with_params=True): per-unit parameters, sums over the batch."""
    dtype = np.dtype(dtype)
    x = np.array([[-2.0, 0.0, 1.5], [0.5, -0.25, 3.0], [2.0, 1.0, -1.0], [0.0, 4.0, -3.0]],
                 dtype=dtype)
    dy = oc.dy_for(x.shape, dtype)
    params = {n: np.array(v, dtype=dtype) for n, v in PARAM_CASES[spec].items()}
    k = kernel(spec, backend)
    y = k(x, **params)
    dx, dp = k.vjp(x, dy, with_params=True, **params)
    eps = float(np.finfo(dtype).eps)
    sums = {n: np.zeros(v.shape) for n, v in params.items()}
    for (b, u), z in np.ndenumerate(x):
        pu = {n: ([mp.mpf(float(w)) for w in v[u]] if v.ndim == 2 else mp.mpf(float(v[u])))
              for n, v in params.items()}
        yt, dt, gt = _param_truth(spec, mp.mpf(float(z)), pu)
        assert abs(float(y[b, u]) - float(yt)) <= 2 * eps * abs(float(yt)), (b, u, y[b, u], yt)
        assert abs(float(dx[b, u]) - float(dt * float(dy[b, u]))) <= 2 * eps * abs(
            float(dt * float(dy[b, u]))), (b, u, dx[b, u], dt)
        for n in params:
            sums[n][u] += np.array(gt[n], dtype=float) * float(dy[b, u]) if n in gt else 0
    for n, v in sums.items():
        scale = np.abs(x).sum() * np.abs(dy).max()
        assert np.allclose(dp[n], v, rtol=0, atol=8 * eps * scale), (n, dp[n], v)

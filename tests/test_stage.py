"""Issue 19: compositions over the plain compile budget are lowered with stages (actdsl.stage).

Each spec below was refused (BudgetError, most on branch_conditions: random compositions of six
terms from benchmarks/slow_specs.py, and the issue's lgrelu x8 and prelu x6). Lowered with stages
they compile; the truths are independent of that lowering: the definitions in NumPy for the
chains of leaky relus, and the plain lowering itself with every budget raised (one expression,
differentiated by SymPy as a whole: a different construction of the same function) for the rest.
"""
import time

import numpy as np
import pytest

import actdsl
from actdsl import budget
from actdsl.cli import main
from test_interop import need

PRELU6 = "+".join(["prelu"] * 6)
LGRELU8 = "+".join(["lgrelu"] * 8)
COMPOSITIONS = [
    "selu+{(z > 0)*z + (z <= 0)*0.1*z}+norm:std+logistic",
    "{max(z, 0)**2}+trec+sparse_plus+tlin+norm:std(eps=0.194)",
    "trel+{tanh(z)*softplus(z)}+prelu+norm:z+{min(z, 1)}+leaky_relu",
    "sparse_plus+tlin+norm:mean+tlin+norm:z",
    "{where(z > 0, z, exp(z) - 1)}+gelu+elu+mish+{z*sigmoid(z)}+rect:max",
    "tanhshrink+{z**7}+gelu+lgrelu+prelu+hardswish",
    "lgrelu+maxout:20",
]
RAISED = dict(branch_conditions=10 ** 5, expression_nodes=10 ** 6, derivative_nodes=10 ** 7,
              source_chars=10 ** 8, compile_seconds=600)


def _leaky_chain(x, slopes, gains=None):
    """u -> g u (u > 0), 0 (u = 0), r u (u < 0), term after term, with dL/dx and dL/dr, dL/dg
    for dL/dy = g_out by the chain rule, all in float64."""
    u, us = x, []
    gains = gains if gains is not None else [np.ones_like(r) for r in slopes]
    for r, g in zip(slopes, gains):
        us.append(u)
        u = np.where(u > 0, g * u, np.where(u == 0, 0.0, r * u))
    return u, us


def _leaky_vjp(x, gy, slopes, gains=None):
    y, us = _leaky_chain(x, slopes, gains)
    gains = gains if gains is not None else [np.ones_like(r) for r in slopes]
    d_r, d_g, adj = [], [], gy
    for u, r, g in reversed(list(zip(us, slopes, gains))):
        d_r.append((adj * np.where(u < 0, u, 0.0)).sum(axis=0))
        d_g.append((adj * np.where(u > 0, u, 0.0)).sum(axis=0))
        adj = adj * np.where(u > 0, g, np.where(u == 0, 0.0, r))
    return y, adj, d_r[::-1], d_g[::-1]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("spec", [PRELU6, LGRELU8])
def test_chains_of_leaky_relus_agree_with_the_definition(spec, backend):
    """prelu x6 (a slope r per term) and lgrelu x8 (a gain g and a slope r per term), values,
    dL/dx and every parameter's gradient, with slopes and gains of both signs, at 0, -0 and a
    subnormal too."""
    k = actdsl.compile(spec, backend=backend)
    assert k.staged
    rng = np.random.default_rng(11)
    units = 9
    x = rng.normal(size=(13, units)) * 3
    x[0, :3] = [0.0, -0.0, 1e-300]
    names = [p.name for p in k.params]  # each term's in turn
    p = {n: rng.uniform(0.5, 1.3, size=units) * rng.choice([-1, 1], size=units) for n in names}
    slopes = [n for n in names if n.startswith("r")]
    gains = [n for n in names if n.startswith("g")]
    assert len(slopes) == spec.count("+") + 1 and len(slopes) + len(gains) == len(names)
    gy = rng.normal(size=x.shape)
    y, dx, d_r, d_g = _leaky_vjp(x, gy, [p[n] for n in slopes], [p[n] for n in gains] or None)
    np.testing.assert_allclose(k(x, **p), y, rtol=1e-13, atol=1e-300)
    got_dx, grads = k.vjp(x, gy, with_params=True, **p)
    np.testing.assert_allclose(got_dx, dx, rtol=1e-13, atol=1e-300)
    for n, want in [*zip(slopes, d_r), *zip(gains, d_g)]:
        np.testing.assert_allclose(grads[n], want, rtol=1e-12, atol=1e-12, err_msg=n)


def _plain(spec):
    """The spec lowered the plain way: every budget raised (a different text, `+linear`, so that
    the kernel cache does not hand back the staged kernel)."""
    with budget.limits(**RAISED):
        k = actdsl.compile(spec + "+linear")
    assert not k.staged
    return k


@pytest.mark.parametrize("spec", COMPOSITIONS)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_staged_compositions_agree_with_the_plain_lowering(spec, backend):
    """Forward, VJP with parameter gradients and JVP, at random rows and at 0, ±inf and NaN.
    Where the plain lowering is NaN at ±inf and the staged one is not, the staged value must be
    the limit taken term by term (tanhshrink+...+hardswish at -inf: gelu's 0, then zeros)."""
    k = actdsl.compile(spec, backend=backend)
    assert k.staged
    ref = _plain(spec)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 9)) * 2
    x[0, :4] = [0.0, np.inf, -np.inf, np.nan]
    gy, v = rng.normal(size=x.shape), rng.normal(size=x.shape)
    p = k.init_params(9, rng=1)
    with np.errstate(all="ignore"):
        pairs = [("forward", k(x, **p), ref(x, **p)), ("jvp", k.jvp(x, v, **p), ref.jvp(x, v, **p)),
                 ("vjp", k.vjp(x, gy, **p), ref.vjp(x, gy, **p))]
        # parameter gradients sum over the batch: on the rows without 0, ±inf and NaN
        dx, grads = k.vjp(x[1:], gy[1:], with_params=True, **p)
        rdx, rgrads = ref.vjp(x[1:], gy[1:], with_params=True, **p)
    pairs += [(f"d{n}", grads[n], rgrads[n]) for n in grads]
    assert grads.keys() == rgrads.keys() == p.keys()
    for what, got, want in pairs:
        if not k.rowwise and what in ("forward", "jvp", "vjp"):
            finite_here = ~np.isnan(got) & np.isnan(want) & np.isinf(x)
            want = np.where(finite_here, got, want)  # checked below, against the limit
            # and the other way: the plain derivative keeps a flat branch's 0 out of a product
            # with an overflowed factor (derive.zero_where_flat; hardswish's 0 · inf), which the
            # stages' derivatives do not: there the plain VJP is the limit (±inf), checked below
            limit_there = np.isnan(got) & ~np.isnan(want) & np.isinf(x)
            got = np.where(limit_there, want, got)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{spec}: {what}")
    if spec.startswith("tanhshrink"):
        assert k(x, **p)[0, 2] == 0.0 and k.vjp(x, gy, **p)[0, 2] == 0.0
        # at +inf every term grows without bound and every slope is positive: the plain VJP is
        # the limit, inf with the sign of gy (was NaN, hardswish's flat 0 · inf)
        with np.errstate(all="ignore"):
            assert ref.vjp(x, gy, **p)[0, 1] == np.copysign(np.inf, gy[0, 1])


def test_staged_float32_agrees_with_float64():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 7))
    for spec in [COMPOSITIONS[0], COMPOSITIONS[2], PRELU6]:
        for backend in ("numpy", "numba"):
            k = actdsl.compile(spec, backend=backend)
            p = k.init_params(7, rng=2)
            y32 = k(x.astype(np.float32), **{n: a.astype(np.float32) for n, a in p.items()})
            assert y32.dtype == np.float32
            np.testing.assert_allclose(y32, k(x, **p), rtol=2e-5, atol=2e-6, err_msg=spec)


def test_specs_within_the_budget_are_not_staged():
    for spec in ["relu", "tanh+norm:z", "lgrelu+lgrelu+lgrelu", "maxout:5", "prelu+tanh+prelu"]:
        assert not actdsl.compile(spec).staged, spec


def test_staged_lowering_grows_linearly_with_terms():
    """The lowered forward and its derivative with their stages' bodies, counted as distinct
    subexpressions (what the code generators and every memoized walk pay): twice the terms,
    about twice the nodes (the plain lowering of lgrelu x8 was over 64 branch conditions; x4
    had 30)."""
    from actdsl.stage import Stage

    def size(terms):
        k = actdsl.compile("+".join(["lgrelu"] * terms))
        assert k.staged
        seen, stack = set(), [k.expr, k.derivative_expr]
        while stack:
            e = stack.pop()
            if e not in seen:
                seen.add(e)
                stack.extend(e.args)
                if isinstance(e, Stage):
                    stack.append(type(e).body)
        return len(seen)
    assert size(16) / size(8) < 2.3


def test_a_refusal_after_staging_is_the_budgets_own():
    """norm:z x8 is over expression_nodes staged too (its row statistics nest): the error is the
    plain lowering's, naming the budget to raise."""
    with pytest.raises(actdsl.BudgetError) as info:
        actdsl.compile("+".join(["norm:z"] * 8))
    assert info.value.budget == "expression_nodes"


def test_each_stage_is_held_to_the_budgets():
    """A stage's body is the plain lowering of one term on the stage before it: checked by the
    same budgets before it becomes a stage. A formula of 65 comparisons is over branch_conditions
    (64) on any input, staged or not; maxout:66 is refused for itself once the stages reach it."""
    wheres = "{" + "+".join(f"where(z > {k}, z, 0)" for k in range(65)) + "}"
    t = time.perf_counter()
    with pytest.raises(actdsl.BudgetError) as info:
        actdsl.compile("+".join(["lgrelu"] * 5 + [wheres, "relu"]))
    assert info.value.budget == "branch_conditions" and time.perf_counter() - t < 60
    assert isinstance(info.value.__cause__, actdsl.BudgetError)
    with pytest.raises(actdsl.ParameterError, match="at most 64, not 66"):
        actdsl.compile("+".join(["lgrelu"] * 5 + ["maxout:66"]))


def test_check_and_show_read_stages(capsys):
    """actdsl.check evaluates a stage exactly (its body at its arguments, with mpmath), and the
    CLI shows a staged spec."""
    spec = COMPOSITIONS[0]
    report = actdsl.check(spec, backend="numpy", points=40)
    assert report.passed, str(report)
    assert main(["show", PRELU6]) == 0
    assert "prelu" in capsys.readouterr().out


def test_torch_and_jax_run_staged_specs():
    torch = need("torch")
    jax = need("jax")
    import actdsl.jax as aj
    import actdsl.torch as at
    spec = COMPOSITIONS[2]
    k = actdsl.compile(spec, backend="numpy")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 7))
    p = k.init_params(7, rng=3)
    gy = rng.normal(size=x.shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = at.apply(spec, xt, **{n: torch.tensor(a) for n, a in p.items()})
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(yt.detach().numpy(), k(x, **p), rtol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), k.vjp(x, gy, **p), rtol=1e-12)
    jax.config.update("jax_enable_x64", True)
    f = aj.function(spec)
    _, pull = jax.vjp(lambda a: f(a, **p), jax.numpy.asarray(x))
    np.testing.assert_allclose(np.asarray(pull(jax.numpy.asarray(gy))[0]), k.vjp(x, gy, **p),
                               rtol=1e-12)

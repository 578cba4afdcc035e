"""actdsl.torch under torch.compile: the spec as torch operations that Dynamo traces and Inductor
fuses. References: PyTorch's own functions (written independently) where PyTorch has the
activation, mpmath for gelu's normal CDF, and otherwise the eager path (the Numba kernels, whose
accuracy the rest of the suite pins against mpmath and SymPy)."""
import math

import mpmath
import numpy as np
import pytest

from test_interop import need

torch = need("torch")
import torch.nn.functional as F  # noqa: E402

import actdsl  # noqa: E402
import actdsl.torch as at  # noqa: E402
from actdsl.registry import REGISTRY  # noqa: E402

pytestmark = pytest.mark.xdist_group("torch-compiled")


def _x(*shape, dtype=torch.float64, seed=1, scale=3.0):
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * scale
    flat = x.view(-1)
    flat[:4] = torch.tensor([0.0, -0.0, 1e-30, -50.0], dtype=dtype)
    return x


class _Graphs:
    """A torch.compile backend that keeps every FX graph it is given (then runs it eagerly)."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, inputs):
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        def keep(g, _):
            self.graphs.append(str(g.graph))
            return make_boxed_func(g.forward)
        return aot_autograd(fw_compiler=keep, bw_compiler=keep)(gm, inputs)

    def calls_our_op(self):
        return any("actdsl" in g for g in self.graphs)


def _params(m):
    return [getattr(m, n) for n in m.names]


def _run(m, x, compiled):
    """Forward, and the gradients of <y, w> in x and every parameter, of module m."""
    for p in m.parameters():
        p.grad = None
    x = x.detach().clone().requires_grad_(True)
    f = torch.compile(m, fullgraph=True, backend=compiled) if compiled else m
    y = f(x)
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * w).nansum().backward()
    return y.detach(), x.grad, [p.grad for p in _params(m)]


SPECS = sorted(REGISTRY.names()) + ["tanh+norm:z", "prelu+softmax", "maxout:3+norm:max",
                                    "{max(z, 0)**2}+log_softmax", "lgrelu+norm:std"]


@pytest.mark.parametrize("spec", SPECS)
def test_traced_equals_eager_for_every_key(spec):
    """Every registry key and a few compositions, float64, zeros, a tiny and a large value:
    the traced torch operations (run eagerly by aot_eager) give what the Numba kernels give,
    values and gradients in x and the parameters, and no actdsl op is left in the graph."""
    import torch._dynamo
    torch._dynamo.reset()
    m = at.Activation(spec, units=6, dtype=torch.float64, seed=2)
    for p in m.parameters():
        p.data += 0.05
    x = _x(5, 6)
    graphs = _Graphs()
    got, want = _run(m, x, graphs), _run(m, x, None)
    assert not graphs.calls_our_op(), spec
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-300, equal_nan=True)
    torch.testing.assert_close(got[1], want[1], rtol=1e-9, atol=1e-12, equal_nan=True)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_nan_and_infinities_as_eager():
    """NaN stays NaN where it is, ±inf gives the limits (softmax of a row holding +inf, norm:z of a
    row of huge values), through Inductor's generated code."""
    import torch._dynamo
    torch._dynamo.reset()
    specs = ["relu", "elu", "gelu", "softplus", "softmax", "log_softmax", "norm:z", "tanh+norm:max"]
    acts = [at.Activation(s) for s in specs]
    x = torch.tensor([[0.0, 1.0, math.inf, -2.0], [math.nan, 1.0, 2.0, 3.0],
                      [-math.inf, 0.5, -0.5, 1.0], [3e38, -3e38, 1e38, 0.0]])

    def f(t):
        return [a(t) for a in acts]
    got = torch.compile(f, fullgraph=True)(x)
    for s, a, y in zip(specs, acts, got):
        torch.testing.assert_close(y, a(x), rtol=1e-6, atol=1e-30, equal_nan=True, msg=s)


PEERS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
         "gelu": F.gelu, "silu": F.silu, "elu": F.elu, "selu": F.selu, "mish": F.mish,
         "softsign": F.softsign, "hardtanh": F.hardtanh, "tanhshrink": F.tanhshrink,
         "softmax": lambda t: F.softmax(t, -1), "log_softmax": lambda t: F.log_softmax(t, -1)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inductor_equals_pytorchs_own(dtype):
    """One model holding every activation PyTorch also has, compiled by Inductor once: values
    and gradients equal PyTorch's own functions (eager) to a few ULP."""
    import torch._dynamo
    torch._dynamo.reset()
    names = [n for n in PEERS if n in REGISTRY.names()]
    acts = [at.Activation(n) for n in names]
    x = _x(16, 33, dtype=dtype, seed=4).requires_grad_(True)

    def f(t):
        return [a(t) for a in acts]
    ys = torch.compile(f, fullgraph=True)(x)
    w = torch.randn(16, 33, dtype=dtype, generator=torch.Generator().manual_seed(5))
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for name, y in zip(names, ys):
        (g,) = torch.autograd.grad((y * w).sum(), x, retain_graph=True)
        t = x.detach().clone().requires_grad_(True)
        ref = PEERS[name](t)
        (rg,) = torch.autograd.grad((ref * w).sum(), t)
        torch.testing.assert_close(y.detach(), ref.detach(), **tol, msg=name)
        torch.testing.assert_close(g, rg, **tol, msg=name)


def test_parameters_shared_and_per_unit_under_inductor():
    """prelu with one shared slope (nn.PReLU()) and per unit, maxout's slopes and intercepts:
    their gradients through Inductor equal the eager path's and nn.PReLU's."""
    import torch._dynamo
    torch._dynamo.reset()
    shared = at.Activation("prelu", units=1, dtype=torch.float64)
    per_unit = at.Activation("prelu", units=7, dtype=torch.float64, seed=3)
    mx = at.Activation("maxout:3", units=7, dtype=torch.float64, seed=4)
    ref = torch.nn.PReLU().double()
    ref.weight.data = shared.r.detach().clone()
    x = _x(6, 7, seed=7)
    for m in (shared, per_unit, mx):
        got, want = _run(m, x, "inductor"), _run(m, x, None)
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-14)
        for a, b in zip([got[1], *got[2]], [want[1], *want[2]]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    ref(x).mul(torch.linspace(-1, 1, 42, dtype=torch.float64).reshape(6, 7)).sum().backward()
    torch.testing.assert_close(_run(shared, x, "inductor")[2][0], ref.weight.grad)


def test_apply_axis_half_and_scalars_under_compile():
    """apply() of a spec called eagerly before is traced too; axis=0 moves the row axis;
    bfloat16 is computed in float32 and returned in bfloat16; a 0-d tensor works for an
    elementwise spec and is refused, as eagerly, for a row-wise one."""
    import torch._dynamo
    torch._dynamo.reset()
    x = _x(4, 5, dtype=torch.float32)
    at.apply("softplus", x)                                  # eager: builds the traced form
    graphs = _Graphs()

    def f(t):
        return (at.apply("softplus", t), at.apply("softmax", t, axis=0),
                at.apply("prelu", t.bfloat16(), r=0.25), at.apply("elu", t[0, 0]))
    at.apply("softmax", x, axis=0), at.apply("prelu", x, r=0.25), at.apply("elu", x)
    got = torch.compile(f, fullgraph=True, backend=graphs)(x)
    assert not graphs.calls_our_op()
    torch.testing.assert_close(got[0], F.softplus(x))
    torch.testing.assert_close(got[1], F.softmax(x, 0))
    assert got[2].dtype == torch.bfloat16
    torch.testing.assert_close(got[2], F.prelu(x.bfloat16().float(), torch.tensor([0.25]))
                               .bfloat16(), rtol=0, atol=0)
    assert got[3].shape == () and got[3] == F.elu(x[0, 0])
    with pytest.raises(Exception, match="row-wise"):
        torch.compile(lambda t: at.apply("softmax", t[0, 0]), fullgraph=True,
                      backend="aot_eager")(x)


def test_a_spec_never_called_eagerly_still_compiles_through_the_op():
    """apply() of a spec that was never built for tracing goes through the custom op (opaque to
    Dynamo, so no graph break), and gives the same result."""
    import torch._dynamo
    torch._dynamo.reset()
    spec = "{z*sigmoid(2*z)}+tanh"
    at._traced_cache.pop(spec, None)
    graphs = _Graphs()
    x = _x(3, 4, dtype=torch.float64)
    y = torch.compile(lambda t: at.apply(spec, t), fullgraph=True, backend=graphs)(x)
    assert graphs.calls_our_op()
    torch.testing.assert_close(y, torch.tanh(x * torch.sigmoid(2 * x)))


def test_gelu_normal_cdf_in_float32_to_two_ulp():
    """gelu's normal CDF in float32 (the formula in float64 that Inductor vectorizes), eager and
    compiled, against mpmath on a dense grid, the left tail to its underflow included."""
    x = torch.cat([torch.linspace(-16, 8, 20001), torch.tensor([-14.5, -13.0, -0.0, 0.0])])
    ncdf = at._TORCH_RUNTIME.ncdf
    mpmath.mp.dps = 40
    want = np.array([float(mpmath.ncdf(mpmath.mpf(float(v)))) for v in x], dtype=np.float64)
    for got in (ncdf(x), torch.compile(ncdf)(x)):
        assert got.dtype == torch.float32
        g = got.numpy().astype(np.float64)
        w32 = want.astype(np.float32)
        ulp = np.spacing(np.abs(w32)).astype(np.float64)
        normal = np.abs(w32) >= np.finfo(np.float32).tiny
        err = np.abs(g - want)[normal] / ulp[normal]
        assert err.max() <= 2.0, (err.max(), x[normal][err.argmax()])
        assert np.all(np.abs(g - want)[~normal] <= np.finfo(np.float32).smallest_subnormal)


def test_the_training_step_has_no_graph_break_and_learns():
    """A small MLP with actdsl activations, compiled by Inductor: its loss after ten SGD steps is
    the eager model's (the same arithmetic to float32 rounding)."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 32), at.Activation("gelu"),
                                   torch.nn.Linear(32, 32), at.Activation("prelu", units=32),
                                   torch.nn.Linear(32, 4), at.Activation("log_softmax"))
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    t = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(2))
    losses = []
    for compiled in (True, False):
        m = model()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        run = torch.compile(m, fullgraph=True) if compiled else m
        for _ in range(10):
            opt.zero_grad()
            loss = F.nll_loss(run(x), t)
            loss.backward()
            opt.step()
        losses.append(loss.item())
    assert not counters["graph_break"]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert losses[0] < math.log(4)


def test_a_torch_form_that_fails_its_trial_falls_back_to_the_op(monkeypatch):
    """A spec whose torch form fails its trial run is still compiled (through the custom op),
    with a warning that says so."""
    import torch._dynamo
    torch._dynamo.reset()

    def broken(self, kernel):
        raise TypeError("a spelling the torch namespace lacks")
    monkeypatch.setattr(at._Traced, "trial", broken)
    spec = "{z*tanh(z)}+relu"
    at._traced_cache.pop(spec, None)
    with pytest.warns(RuntimeWarning, match="runs opaque under torch.compile"):
        m = at.Activation(spec)
    graphs = _Graphs()
    x = _x(3, 4, dtype=torch.float32)
    y = torch.compile(m, fullgraph=True, backend=graphs)(x)
    assert graphs.calls_our_op()
    torch.testing.assert_close(y, F.relu(x * torch.tanh(x)))
    at._traced_cache.pop(spec, None)


def test_dynamic_batch_and_a_channel_axis():
    """One graph for every batch size (dynamic=True: the row length n a symbolic size), and a
    channel axis (axis=1 of an NCHW tensor, moved last inside the graph): values and gradients
    as eagerly."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    acts = [at.Activation("softmax"), at.Activation("prelu", units=6, seed=1),
            at.Activation("norm:z"), at.Activation("gelu+softmax", axis=1)]

    def f(x):
        image = x.reshape(x.shape[0], 6, 1, 1).expand(-1, 6, 2, 3)
        return [a(x) for a in acts[:3]] + [acts[3](image)]
    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend="aot_eager")
    for batch in (4, 9, 13):  # (a batch of 1 is specialized by Dynamo itself)
        x = _x(batch, 6, dtype=torch.float32, seed=batch)
        got = [x.detach().clone().requires_grad_(True) for _ in range(2)]
        ys, refs = compiled(got[0]), f(got[1])
        sum((y * y).sum() for y in ys).backward()
        sum((r * r).sum() for r in refs).backward()
        for y, r in zip(ys, refs):
            torch.testing.assert_close(y, r)
        torch.testing.assert_close(got[0].grad, got[1].grad)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


@pytest.mark.parametrize("spec", sorted(REGISTRY.names()))
def test_inductor_float32_equals_eager_for_every_key(spec):
    """Every registry key compiled by Inductor in float32 (its generated C++: vectorized
    selects, NaN tests, reductions) on a row holding 0, ±inf and NaN: values and gradients, in x
    and the parameters, as the eager path gives them (to float32 rounding)."""
    import torch._dynamo
    torch._dynamo.reset()
    m = at.Activation(spec, units=6, seed=2)
    x = _x(5, 6, dtype=torch.float32, seed=3)
    x[1, 1], x[2, 2], x[3, 3] = math.inf, -math.inf, math.nan
    got, want = _run(m, x, "inductor"), _run(m, x, None)
    torch.testing.assert_close(got[0], want[0], rtol=2e-6, atol=1e-6, equal_nan=True)
    for a, b in zip([got[1], *got[2]], [want[1], *want[2]]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_torch_export_gives_plain_aten_operations():
    """torch.export of a model with actdsl activations: a graph of ATen operations only (the
    exported program runs without actdsl), with the eager model's values."""
    m = torch.nn.Sequential(torch.nn.Linear(4, 6), at.Activation("prelu", units=6, seed=1),
                            torch.nn.Linear(6, 3), at.Activation("softmax"))
    x = _x(5, 4, dtype=torch.float32)
    ep = torch.export.export(m, (x,))
    assert "actdsl" not in str(ep.graph)
    torch.testing.assert_close(ep.module()(x), m(x))


def test_a_dropped_torch_form_leaves_no_source_in_linecache():
    """The generated source is kept in linecache (for tracebacks) only while its torch form is
    in use, as the NumPy backend's is."""
    import gc
    import linecache
    spec = "{z*tanh(z)}+softsign"
    at._traced_cache.pop(spec, None)
    assert at._traced(spec) is not None
    names = [f for f in linecache.cache if f.startswith("<actdsl-torch-")]
    at._traced_cache.pop(spec)
    gc.collect()
    assert len([f for f in linecache.cache if f.startswith("<actdsl-torch-")]) == len(names) - 1

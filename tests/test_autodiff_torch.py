"""actdsl.torch: custom ops under torch.compile, exact double backward, half precision, shared
parameters and inplace. PyTorch's own activations (written independently) and its numerical
gradient checks are the references."""
import warnings

import numpy as np
import pytest

from test_interop import need

torch = need("torch")
import torch.nn.functional as F  # noqa: E402

import actdsl  # noqa: E402
import actdsl.torch as at  # noqa: E402


def _x(*shape, dtype=torch.float64, seed=1):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("route", ["eager", "op"])
@pytest.mark.parametrize("spec", ["softplus", "tanh+norm:z", "prelu+norm:z", "maxout:3+softmax",
                                  "lgrelu", "norm:max", "gelu+log_softmax"])
def test_double_backward_is_exact(spec, route):
    """Both ways a call can go: eagerly (an autograd.Function, cheaper per call) and through the
    custom op that torch.compile traces."""
    m = at.Activation(spec, units=6, dtype=torch.float64, seed=3)
    params = [getattr(m, n) for n in m.names]
    for p in params:
        p.data += 0.1
    x = _x(4, 6).requires_grad_(True)

    def f(x, *ps):
        if route == "op":
            return torch.ops.actdsl.forward(m.spec, "numba", -1, ",".join(m.names), x, list(ps))
        return at._Function.apply(m.spec, "numba", -1, m.names, x, *ps)

    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


@pytest.mark.parametrize("spec,peer", [("softplus", F.softplus), ("gelu", F.gelu), ("tanh", torch.tanh),
                                       ("silu", F.silu), ("softmax", lambda t: F.softmax(t, -1))])
def test_hessian_vector_products_equal_torchs(spec, peer):
    x, v = _x(3, 5), _x(3, 5, seed=2)
    w = _x(3, 5, seed=3)

    def hvp(f):  # the gradient, kept in the graph, differentiated along v: a double backward
        t = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((f(t) * w).sum(), t, create_graph=True)
        return torch.autograd.grad(g, t, v)[0]

    ours, theirs = hvp(lambda t: at.apply(spec, t)), hvp(peer)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_compile_fullgraph_without_graph_breaks_or_warnings():
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), at.Activation("prelu", units=16),
                                torch.nn.Linear(16, 8), at.Activation("tanh+norm:z"),
                                torch.nn.Linear(8, 4), at.Activation("softmax"))
    x = torch.randn(5, 6)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = compiled(x)
        y.pow(2).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = model(x)
    ref.pow(2).sum().backward()
    torch.testing.assert_close(y, ref)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)
    assert not counters["graph_break"], dict(counters["graph_break"])
    ours = [w for w in caught if "dynamo" in str(w.filename) or "actdsl" in str(w.filename)]
    assert not ours, [str(w.message) for w in ours]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("spec", ["gelu", "softmax", "prelu"])
def test_half_precision_computes_in_float32(dtype, spec):
    m = at.Activation(spec, units=7, dtype=dtype)
    x = _x(3, 7, dtype=torch.float32).to(dtype).requires_grad_(True)
    y = m(x)
    assert y.dtype == dtype
    ref32 = at.Activation(spec, units=7, dtype=torch.float32)
    for n in m.names:  # the same values (prelu's 0.1 is not a float16)
        getattr(ref32, n).data = getattr(m, n).detach().float()
    x32 = x.detach().float().requires_grad_(True)
    y32 = ref32(x32)
    torch.testing.assert_close(y, y32.to(dtype), rtol=0, atol=0)
    g = torch.ones_like(y)
    y.backward(g)
    y32.backward(g.float())
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad, x32.grad.to(dtype), rtol=0, atol=0)


def test_one_shared_parameter_like_nn_prelu():
    m = at.Activation("prelu", units=1, dtype=torch.float64)
    ref = torch.nn.PReLU().double()
    assert m.r.shape == ref.weight.shape == (1,)
    ref.weight.data = m.r.detach().clone()
    x = _x(4, 9)
    torch.testing.assert_close(m(x), ref(x))
    m(x).pow(2).sum().backward()
    ref(x).pow(2).sum().backward()
    torch.testing.assert_close(m.r.grad, ref.weight.grad)
    mx = at.Activation("maxout:3", units=1, dtype=torch.float64, seed=2)
    assert mx.m.shape == (1, 3)
    mx(x).sum().backward()
    k = actdsl.compile("maxout:3")
    _, grads = k.vjp(x.numpy(), np.ones((4, 9)), with_params=True, m=mx.m.detach().numpy()[0],
                     b=mx.b.detach().numpy()[0])
    np.testing.assert_allclose(mx.m.grad.numpy()[0], grads["m"], rtol=1e-12)


def test_inplace_writes_into_the_input():
    x = _x(3, 4)
    y = at.Activation("tanh", inplace=True)(x)
    assert y is x
    torch.testing.assert_close(x, torch.tanh(_x(3, 4)))
    a = _x(3, 4).requires_grad_(True)
    h = a * 1.0                       # a non-leaf, as after a Linear layer
    out = at.apply("softplus", h, inplace=True)
    assert out is h
    out.sum().backward()
    torch.testing.assert_close(a.grad, torch.sigmoid(a.detach()))
    assert "inplace=True" in repr(at.Activation("relu", inplace=True))


def test_errors_are_actdsl_errors():
    with pytest.raises(actdsl.ActdslError, match="float16, bfloat16, float32 or float64"):
        at.apply("relu", torch.zeros(3, dtype=torch.int64))
    with pytest.raises(actdsl.ActdslError, match="missing"):
        at.apply("prelu", torch.zeros(3))
    with pytest.raises(actdsl.ActdslError, match="units=1"):
        at.Activation("maxout:2")


def test_inplace_under_compile():
    from torch._dynamo.utils import counters
    counters.clear()
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), at.Activation("tanh", inplace=True))
    c = torch.compile(m, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(c(x), torch.tanh(m[0](x)))
    c(x).sum().backward()
    torch.testing.assert_close(m[0].bias.grad, (1 - torch.tanh(m[0](x)) ** 2).sum(0).detach())
    assert not counters["graph_break"]


def test_a_reregistered_name_is_the_new_definition_in_torch():
    """actdsl.torch remembers compiled kernels between calls; a name registered again must give
    the new definition (forward and gradient), as actdsl.compile does."""
    import sympy as sp
    z = sp.Symbol("z")
    x = torch.linspace(-2, 2, 9, dtype=torch.float64, requires_grad=True)
    try:
        actdsl.register("twice_or_thrice", 2 * z, "2z")
        y = at.apply("twice_or_thrice", x)
        y.sum().backward()
        assert torch.equal(y.detach(), 2 * x.detach()) and torch.equal(x.grad, torch.full_like(x, 2))
        actdsl.register("twice_or_thrice", 3 * z, "3z", replace=True)
        x.grad = None
        y = at.Activation("twice_or_thrice")(x)
        y.sum().backward()
        assert torch.equal(y.detach(), 3 * x.detach()) and torch.equal(x.grad, torch.full_like(x, 3))
    finally:
        actdsl.unregister("twice_or_thrice")


def test_training_benchmark_times_in_random_order():
    """benchmarks/torch_wrapper.py's timer: each variant once a round, in an order that changes
    between rounds (a fixed order made the variant timed after the eager ones 4-7% slower in an
    A/A run), and the same order for the same seed (a run can be repeated)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).parent.parent / "benchmarks" / "torch_wrapper.py"
    spec = importlib.util.spec_from_file_location("_torch_wrapper_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def orders(seed):
        calls = []
        fns = [lambda i=i: calls.append(i) for i in range(5)]
        medians = bench.interleaved_medians(fns, 12, seed=seed)
        assert len(medians) == 5 and all(m >= 0 for m in medians)
        return [tuple(calls[r * 5:(r + 1) * 5]) for r in range(12)]

    rounds = orders(0)
    assert all(sorted(r) == list(range(5)) for r in rounds)  # each exactly once a round
    assert len(set(rounds)) > 6  # the order changes from round to round
    assert len({r[0] for r in rounds}) > 2  # and no variant is always timed first
    assert orders(0) == rounds

"""PyTorch, JAX, Dask and xarray. CI installs them (`make interop`); elsewhere a missing package
skips its tests, but under CI a missing package is a failure, not a skip."""
import importlib
import os
import pickle

import numpy as np
import pytest

import actdsl


def need(name):
    if os.environ.get("CI"):  # `make interop` installed them: missing is a failure
        return importlib.import_module(name)
    return pytest.importorskip(name)


# -- PyTorch -------------------------------------------------------------------------------------
TORCH_PEERS = {
    "relu": lambda F, x: F.relu(x), "softplus": lambda F, x: F.softplus(x),
    "sigmoid": lambda F, x: F.sigmoid(x), "tanh": lambda F, x: F.tanh(x),
    "gelu": lambda F, x: F.gelu(x), "silu": lambda F, x: F.silu(x), "elu": lambda F, x: F.elu(x),
    "softmax": lambda F, x: F.softmax(x, dim=-1), "log_softmax": lambda F, x: F.log_softmax(x, dim=-1),
}


@pytest.mark.parametrize("spec", sorted(TORCH_PEERS))
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_torch_matches_torch_functions(spec, backend):
    torch = need("torch")
    import torch.nn.functional as F
    import actdsl.torch as at
    x = torch.randn(6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    x.requires_grad_(True)
    g = torch.randn_like(x)
    y = at.apply(spec, x, cpu_backend=backend)
    ref = TORCH_PEERS[spec](F, x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-14)
    (dx,) = torch.autograd.grad(y, x, g)
    (rdx,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(dx, rdx, rtol=1e-10, atol=1e-12)


def test_torch_prelu_module_learns_like_torchs_prelu():
    torch = need("torch")
    import actdsl.torch as at
    m = at.Activation("prelu", units=5, dtype=torch.float64)
    assert isinstance(m.r, torch.nn.Parameter) and m.r.shape == (5,)
    ref = torch.nn.PReLU(5, init=0.1).double()
    x = torch.randn(7, 5, dtype=torch.float64) * 2
    m(x).pow(2).sum().backward()
    ref(x).pow(2).sum().backward()
    torch.testing.assert_close(m.r.grad, ref.weight.grad)
    assert "prelu" in repr(m)


@pytest.mark.parametrize("spec", ["tanh+norm:z", "maxout:3", "lgrelu+softmax", "norm:max"])
def test_torch_gradcheck(spec):
    torch = need("torch")
    import actdsl.torch as at
    m = at.Activation(spec, units=6, dtype=torch.float64, seed=3)
    x = (torch.randn(4, 6, dtype=torch.float64) * 2).requires_grad_(True)
    params = [getattr(m, n) for n in m.names]
    f = lambda x, *ps: at._Function.apply(m.spec, "numba", -1, m.names, x, *ps)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, *params))


def test_torch_errors():
    torch = need("torch")
    import actdsl.torch as at
    with pytest.raises(actdsl.ActdslError, match="units"):
        at.Activation("prelu")
    with pytest.raises(actdsl.ActdslError, match="missing"):
        at.apply("prelu", torch.zeros(3))
    with pytest.raises(actdsl.ActdslError, match="float32 or float64"):
        at.apply("relu", torch.zeros(3, dtype=torch.int64))


# -- JAX -----------------------------------------------------------------------------------------
JAX_PEERS = {"relu": "relu", "softplus": "softplus", "sigmoid": "sigmoid", "silu": "silu",
             "elu": "elu", "softmax": "softmax", "log_softmax": "log_softmax", "gelu": "gelu"}


@pytest.fixture
def jx():
    jax = need("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.mark.parametrize("spec", sorted(JAX_PEERS))
def test_jax_matches_jax_nn_under_jit_and_grad(jx, spec):
    import jax.numpy as jnp
    import actdsl.jax as aj
    f = aj.function(spec)
    peer = getattr(jx.nn, JAX_PEERS[spec])
    if spec == "gelu":
        peer = lambda v: jx.nn.gelu(v, approximate=False)  # noqa: E731
    x = jnp.asarray(np.random.default_rng(2).normal(size=(5, 8)) * 3)
    np.testing.assert_allclose(jx.jit(f)(x), peer(x), rtol=1e-12, atol=1e-14)
    w = jnp.asarray(np.random.default_rng(3).normal(size=(5, 8)))
    ours = jx.grad(lambda v: jnp.sum(f(v) * w))(x)
    theirs = jx.grad(lambda v: jnp.sum(peer(v) * w))(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_jax_parameters_and_axis(jx):
    import jax.numpy as jnp
    import actdsl.jax as aj
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 6)))
    f = aj.function("prelu")
    r = jnp.full(6, 0.2)
    dr = jx.grad(lambda r: jnp.sum(f(x, r=r)))(r)
    np.testing.assert_allclose(dr, np.sum(np.where(np.asarray(x) > 0, 0, x), axis=0), atol=1e-15)
    assert jx.grad(lambda s: jnp.sum(f(x, r=s)))(0.2).shape == ()
    g = aj.function("softmax", axis=0)
    np.testing.assert_allclose(g(x), actdsl.compile("softmax")(np.asarray(x), axis=0), rtol=1e-13)
    from jax.test_util import check_grads
    check_grads(aj.function("tanh+norm:z"), (x,), order=1, modes=["rev"])


# -- Dask and xarray -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["tanh", "softmax", "prelu", "tanh+norm:z"])
def test_dask_is_lazy_and_equal(spec):
    da = need("dask.array")
    k = actdsl.compile(spec, backend="numba")
    x = np.random.default_rng(5).normal(size=(60, 16))
    p = {"r": np.full(16, 0.2)} if spec == "prelu" else {}
    d = da.from_array(x, chunks=(15, 16))
    y = k(d, **p)
    assert type(y).__module__.startswith("dask") and y.numblocks == d.numblocks
    np.testing.assert_array_equal(y.compute(), k(x, **p))
    np.testing.assert_array_equal(k.vjp(d, d, **p).compute(), k.vjp(x, x, **p))


def test_dask_row_split_over_chunks_says_how_to_rechunk():
    da = need("dask.array")
    d = da.ones((10, 12), chunks=(5, 5))
    with pytest.raises(actdsl.ActdslError, match=r"rechunk\(\{1: -1\}\)"):
        actdsl.compile("softmax")(d)
    actdsl.compile("tanh")(d).compute()  # elementwise: any chunking


def test_xarray_keeps_coordinates_and_takes_dimension_names():
    xr = need("xarray")
    x = np.random.default_rng(6).normal(size=(4, 7))
    a = xr.DataArray(x, dims=("unit", "batch"), coords={"unit": list("abcd")})
    y = actdsl.compile("softmax")(a, axis="unit")
    assert y.dims == ("batch", "unit") or y.dims == ("unit", "batch")
    np.testing.assert_allclose(y.transpose("unit", "batch").values,
                               actdsl.compile("softmax")(x, axis=0), rtol=1e-14)
    assert list(y.coords["unit"].values) == list("abcd")
    lazy = actdsl.compile("tanh", backend="numba")(a.chunk({"batch": 3}))
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.values, np.tanh(x), rtol=1e-15)


def test_kernels_pickle_as_their_spec():
    k = actdsl.compile("prelu+norm:z", backend="numba")
    assert pickle.loads(pickle.dumps(k)) is k  # same process: the cached kernel


def test_dask_distributed_local_cluster(tmp_path):
    distributed = need("distributed")
    da = need("dask.array")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  local_directory=str(tmp_path)) as cluster, \
            distributed.Client(cluster) as client:
        x = np.random.default_rng(7).normal(size=(400, 32))
        d = da.from_array(x, chunks=(50, 32))  # 8 chunks: several per worker
        for spec in ("softplus", "tanh+norm:z"):
            k = actdsl.compile(spec, backend="numba")
            got = client.compute(k(d)).result()
            np.testing.assert_allclose(got, k(x), rtol=1e-15, atol=1e-15)
        assert len(client.scheduler_info()["workers"]) == 2


def test_dask_through_the_ufunc_protocol():
    """kernel.ufunc is a NumPy ufunc: Dask applies it lazily through __array_ufunc__."""
    da = need("dask.array")
    k = actdsl.compile("softplus", backend="numba")
    x = np.random.default_rng(8).normal(size=(30, 10)).astype(np.float32)
    d = da.from_array(x, chunks=(7, 5))
    y = k.ufunc(d)
    assert type(y).__module__.startswith("dask") and y.dtype == np.float32
    np.testing.assert_array_equal(y.compute(), k(x))

"""What only a real GPU can show: the PTX of float32 kernels, large rows and grids, and zero-copy
interop with PyTorch CUDA tensors. Skipped without an NVIDIA device (and under the simulator);
``benchmarks/gpu_check.sh`` runs it on a GPU machine."""
import numpy as np
import pytest
from numba import cuda

import actdsl
from test_cuda_backend import SIMULATED
from test_numba_backend import assert_agree, params_for

pytestmark = pytest.mark.skipif(SIMULATED or not cuda.is_available(), reason="needs an NVIDIA GPU")

SPECS = ["tanh", "gelu", "softplus", "mish", "softmax", "tanh+norm:z", "softplus+norm:z", "prelu",
         "maxout:3", "norm:max", "log_softmax", "elu+norm:std"]


@pytest.mark.parametrize("spec", SPECS)
def test_float32_kernels_do_no_float64_arithmetic(spec):
    rng = np.random.default_rng(0)
    k = actdsl.compile(spec, backend="cuda")
    x = rng.normal(size=(4, 40)).astype(np.float32)
    p = params_for(k, 40, rng)
    k(x, **p)
    k.vjp(x, x, **p)
    mod = k._runner.module(np.float32)
    seen = 0
    for name in ("forward_flat", "vjp_flat", "derivative_flat", "forward_rows", "vjp_rows"):
        fn = getattr(mod, name, None)
        if fn is None:
            continue
        for sig, ptx in fn.inspect_asm().items():
            seen += 1
            assert ".f64" not in ptx, f"{spec} {name} {sig}: float64 instruction in the PTX"
    assert seen >= 2


@pytest.mark.parametrize("spec", ["softmax", "norm:z", "tanh+norm:z", "norm:max", "prelu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows_and_many_rows(spec, dtype):
    """Rows longer than a block (threads loop), more rows than blocks (blocks loop)."""
    rng = np.random.default_rng(3)
    kc, kp = actdsl.compile(spec, backend="cuda"), actdsl.compile(spec)
    x = (rng.normal(size=(3000, 1500)) * 3).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    p = params_for(kp, 1500, rng)
    assert_agree(kc(x, **p), kp(x, **p), dtype, kc.rowwise, spec)
    dx, dp = kc.vjp(x, g, with_params=True, **p)
    rx, rp = kp.vjp(x, g, with_params=True, **p)
    assert_agree(dx, rx, dtype, kc.rowwise, spec, floor=float(np.max(np.abs(g))))
    for name in rp:  # sums over 3000 rows
        np.testing.assert_allclose(dp[name], rp[name], rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-3 if dtype == np.float32 else 1e-9)


def test_torch_cuda_tensors_without_copies():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    x = torch.randn(64, 1000, device="cuda")
    g = torch.randn_like(x)
    out = torch.empty_like(x)
    k = actdsl.compile("softmax", backend="cuda")
    stream = torch.cuda.current_stream()
    assert k(x, out=out, stream=stream) is out
    torch.cuda.synchronize()
    torch.testing.assert_close(out, torch.softmax(x, -1), rtol=1e-5, atol=1e-6)
    y = k(x)  # a Numba device array over new memory, viewable by torch without a copy
    assert torch.as_tensor(y, device="cuda").data_ptr() == y.__cuda_array_interface__["data"][0]
    dx = torch.empty_like(x)
    k.vjp(x, g, out=dx)
    torch.cuda.synchronize()
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(torch.softmax(xr, -1), xr, g)
    torch.testing.assert_close(dx, ref, rtol=1e-4, atol=1e-6)


def test_direct_launches_match_the_dispatcher():
    """The first call compiles through Numba's dispatcher; later ones launch the compiled
    kernel directly: the same numbers."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 300)).astype(np.float32)
    for spec in ("softplus", "tanh+norm:z", "prelu"):
        k = actdsl.compile(spec, backend="cuda")
        p = params_for(k, 300, rng)
        d = cuda.to_device(x)
        first, second = k(d, **p).copy_to_host(), k(d, **p).copy_to_host()
        np.testing.assert_array_equal(first, second)
        assert len(k._runner.module(np.float32).forward_flat.overloads if k._runner.flat
                   else k._runner.module(np.float32).forward_rows.overloads) == 1


@pytest.mark.parametrize("spec", ["relu", "softplus", "softmax", "tanh+norm:z", "prelu", "maxout:3"])
def test_torch_tensors_through_the_direct_launch(spec):
    """Tensors are passed by pointer (no DeviceNDArray per call): first call checked against
    Numba's own argument marshalling, later calls direct; all agree with the NumPy backend."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    rng = np.random.default_rng(11)
    kc, kp = actdsl.compile(spec, backend="cuda"), actdsl.compile(spec)
    x = (rng.normal(size=(40, 700)) * 3).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    p = params_for(kp, 700, rng)
    tx, tg = torch.from_numpy(x).cuda(), torch.from_numpy(g).cuda()
    y, dx = torch.empty_like(tx), torch.empty_like(tx)
    for _ in range(3):
        kc(tx, out=y, **p)
        kc.vjp(tx, tg, out=dx, **p)
    torch.cuda.synchronize()
    assert_agree(y.cpu().numpy(), kp(x, **p), np.float32, kc.rowwise, spec)
    assert_agree(dx.cpu().numpy(), kp.vjp(x, g, **p), np.float32, kc.rowwise, spec,
                 floor=float(np.max(np.abs(g))))
    mod = kc._runner.module(np.float32)
    kernel = next(iter((mod.forward_flat if kc._runner.flat else mod.forward_rows).overloads.values()))
    assert kernel._actdsl_direct is True

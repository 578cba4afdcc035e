"""PyTorch integration (optional extra ``torch``): any spec as an autograd function and a module.

    act = actdsl.torch.Activation("prelu+norm:z", units=256)   # learnable r as nn.Parameter
    y = act(x)                                                  # x: (..., 256) tensor
    y = actdsl.torch.apply("softplus", x)                       # functional, no parameters

CPU tensors go through the Numba kernels on NumPy views of the same memory (no copies of x, y
or the gradients; a non-contiguous tensor is made contiguous first); CUDA tensors through the
CUDA backend, which reads and writes them in place. Gradients are actdsl's exact VJP.
"""
from __future__ import annotations

import numpy as np

try:
    import torch as _torch
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("actdsl.torch needs PyTorch: pip install torch") from e

from .compiler import compile as _compile
from .errors import ActdslError

_DTYPES = (_torch.float32, _torch.float64)


def _kernel(spec: str, device_type: str, cpu_backend: str):
    return _compile(spec, backend="cuda" if device_type == "cuda" else cpu_backend)


def _np(t):
    return t.detach().contiguous().numpy()


def _values(names, params) -> dict:
    """Parameter values as NumPy arrays (small: copied to the host for a CUDA tensor)."""
    return {n: _np(p.cpu()) for n, p in zip(names, params)}


class _Function(_torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, cpu_backend, axis, names, x, *params):
        if x.dtype not in _DTYPES:
            raise ActdslError(f"actdsl.torch takes float32 or float64 tensors, not {x.dtype}")
        k = _kernel(spec, x.device.type, cpu_backend)
        ctx.spec, ctx.cpu_backend, ctx.axis, ctx.names = spec, cpu_backend, axis, names
        ctx.save_for_backward(x, *params)
        values = _values(names, params)
        if x.device.type == "cuda":
            xc = x.detach().contiguous()
            y = _torch.empty_like(xc)
            k(xc, axis=axis, out=y, **values)
            return y
        return _torch.from_numpy(np.ascontiguousarray(k(_np(x), axis=axis, **values)))

    @staticmethod
    def backward(ctx, gy):
        x, *params = ctx.saved_tensors
        k = _kernel(ctx.spec, x.device.type, ctx.cpu_backend)
        values = _values(ctx.names, params)
        want = any(ctx.needs_input_grad[5:])  # parameter gradients only when asked for
        if x.device.type == "cuda":
            xc, gc = x.detach().contiguous(), gy.detach().contiguous()
            dx = _torch.empty_like(xc)
            got = k.vjp(xc, gc, axis=ctx.axis, out=dx, with_params=want, **values)
            grads = {n: _torch.as_tensor(g.copy_to_host(), device=x.device)
                     for n, g in (got[1] if want else {}).items()}
        else:
            got = k.vjp(_np(x), _np(gy), axis=ctx.axis, with_params=want, **values)
            dxn, grads = got if want else (got, {})
            dx = _torch.from_numpy(np.ascontiguousarray(dxn))
            grads = {n: _torch.from_numpy(np.ascontiguousarray(g)) for n, g in grads.items()}
        out = [dx if ctx.needs_input_grad[4] else None]
        for i, (n, p) in enumerate(zip(ctx.names, params)):
            out.append(grads[n].to(p.dtype).reshape(p.shape) if ctx.needs_input_grad[5 + i] else None)
        return (None, None, None, None, *out)


def apply(spec: str, x, axis: int = -1, cpu_backend: str = "numba", **params):
    """``spec`` applied to tensor ``x`` with autograd; parameters as tensors (or numbers)."""
    k = _compile(spec)
    names = tuple(p.name for p in k.params)
    missing = [n for n in names if n not in params]
    extra = [n for n in params if n not in names]
    if missing or extra:
        raise ActdslError(f"{k.text!r} takes parameters {list(names)}; "
                          f"missing {missing}, unexpected {extra}")
    values = [p if isinstance(p, _torch.Tensor) else _torch.as_tensor(p, dtype=x.dtype)
              for p in (params[n] for n in names)]
    return _Function.apply(k.text, cpu_backend, axis, names, x, *values)


class Activation(_torch.nn.Module):
    """``spec`` as a module. Learnable parameters (prelu's r, maxout's m and b...) become
    ``nn.Parameter``s of shape (units, ...) initialised as ``Kernel.init_params`` does; pass
    ``units`` for a spec that has any. The row (unit) axis is ``axis``."""

    def __init__(self, spec: str, units: int | None = None, axis: int = -1,
                 cpu_backend: str = "numba", dtype=_torch.float32, seed: int | None = None):
        super().__init__()
        self.kernel = _compile(spec)
        self.spec, self.axis, self.cpu_backend = self.kernel.text, axis, cpu_backend
        if self.kernel.params and units is None:
            raise ActdslError(f"{self.spec!r} has learnable parameters: pass units=")
        init = self.kernel.init_params(units, rng=seed) if self.kernel.params else {}
        for name, value in init.items():
            self.register_parameter(name, _torch.nn.Parameter(_torch.as_tensor(value, dtype=dtype)))
        self.names = tuple(init)

    def forward(self, x):
        return _Function.apply(self.spec, self.cpu_backend, self.axis, self.names, x,
                               *[getattr(self, n) for n in self.names])

    def extra_repr(self) -> str:
        return f"{self.spec!r}, axis={self.axis}"

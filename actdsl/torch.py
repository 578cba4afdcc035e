"""PyTorch integration (optional extra ``torch``: ``import actdsl.torch`` explicitly): any spec as
a ``torch.library`` custom op with exact first and second derivatives, and as a module.

    act = actdsl.torch.Activation("prelu+norm:z", units=256)   # learnable r as nn.Parameter
    act = actdsl.torch.Activation("prelu", units=1)            # one shared slope, as nn.PReLU()
    y = act(x)                                                  # x: (..., 256) tensor
    y = actdsl.torch.apply("softplus", x)                       # functional, no parameters

The ops (``torch.ops.actdsl.forward``, ``.vjp``, ``.jvp``, ``.vjp_vjp``) have fake (meta)
implementations, so ``torch.compile(fullgraph=True)`` traces a model through them without a
graph break, and registered autograd: the backward is the ``vjp`` op, whose own backward is
exact (``jvp`` and ``vjp_vjp``), so ``create_graph=True`` (gradient penalties, Hessian-vector
products) works. Outside torch.compile the same functions run through two autograd.Functions
(``_EagerForward``, ``_EagerVjp``), whose dispatch costs a sixth of the ops'. float16 and
bfloat16 are computed in float32 and returned in their own dtype.

CPU tensors go through the Numba kernels on NumPy views of the same memory (a non-contiguous
tensor is made contiguous first); CUDA tensors through the CUDA backend, which reads and writes
them in place (second-order ops copy through the host).
"""
from __future__ import annotations

import numpy as np

try:
    import torch as _torch
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("actdsl.torch needs PyTorch: pip install torch") from e

from .compiler import compile as _compile
from .errors import ActdslError
from .registry import REGISTRY as _REGISTRY

_DTYPES = (_torch.float32, _torch.float64)
_HALF = (_torch.float16, _torch.bfloat16)
Tensor = _torch.Tensor


_kernels: dict = {}


def _kernel(spec: str, device_type: str, cpu_backend: str):
    """The compiled kernel, remembered here: eager calls ask for it twice a training step, and
    ``compile`` (which checks the parser's budgets for a text it has not seen) costs a few µs
    more. A kernel is kept while the registry is unchanged (a re-registered name recompiles)."""
    key = (spec, device_type, cpu_backend)
    hit = _kernels.get(key)
    if hit is not None and hit[0] == _REGISTRY.generation:
        return hit[1]
    kernel = _compile(spec, backend="cuda" if device_type == "cuda" else cpu_backend)
    if len(_kernels) >= 1024:
        _kernels.clear()
    _kernels[key] = (_REGISTRY.generation, kernel)
    return kernel


def _check(x: Tensor):
    if x.dtype not in _DTYPES + _HALF:
        raise ActdslError(f"actdsl.torch takes float16, bfloat16, float32 or float64 tensors, "
                          f"not {x.dtype}")


def _work(t: Tensor) -> Tensor:
    """float16/bfloat16 are computed in float32."""
    t = t.detach()
    return t.float() if t.dtype in _HALF else t


def _np(t: Tensor) -> np.ndarray:
    if t.is_cpu and t.dtype in _DTYPES and t.is_contiguous():
        return t.detach().numpy()  # the common case, in a third of the time
    return _work(t).cpu().contiguous().numpy()


def _split(names: str) -> list[str]:
    """The ops take parameter names as one comma-separated string (no str[] in op schemas)."""
    return names.split(",") if names else []


def _values(names, params, units: int) -> dict:
    """Parameter values as NumPy arrays; a (1, ...) parameter (``units=1``) is shared by every
    unit, which the kernel takes as one value (or one row of pieces)."""
    if not names:
        return {}
    out = {}
    for n, p in zip(_split(names), params):
        a = _np(p)
        if a.ndim and a.shape[0] == 1 and units != 1:
            a = a.reshape(a.shape[1:])
        out[n] = a
    return out


def _units(x: Tensor, axis: int) -> int:
    return x.shape[axis] if x.dim() else 1


def _named(spec: str, k, names) -> None:
    if not names and not k.params:
        return
    expected = [p.name for p in k.params]
    missing = [n for n in expected if n not in _split(names)]
    extra = [n for n in _split(names) if n not in expected]
    if missing or extra:
        raise ActdslError(f"{spec!r} takes parameters {expected}; missing {missing}, "
                          f"unexpected {extra}")


def _tensor(a, like: Tensor) -> Tensor:
    t = _torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))
    if t.dtype == like.dtype and like.is_cpu:
        return t
    return t.to(device=like.device, dtype=like.dtype)


def _grads(grads: dict, names, params) -> list:
    return [_tensor(grads[n], p).reshape(p.shape) for n, p in zip(_split(names), params)]


def _forward(spec, backend, axis, names, x, params):
    _check(x)
    cuda = x.is_cuda
    k = _kernel(spec, "cuda" if cuda else "cpu", backend)
    _named(spec, k, names)
    values = _values(names, params, _units(x, axis)) if names else {}
    if cuda and x.dtype in _DTYPES:
        xc = x.detach().contiguous()
        y = _torch.empty_like(xc)
        k(xc, axis=axis, out=y, **values)
        return y
    return _tensor(k(_np(x), axis=axis, **values), x)


@_torch.library.custom_op("actdsl::forward", mutates_args=())
def forward(spec: str, backend: str, axis: int, names: str, x: Tensor,
            params: list[Tensor]) -> Tensor:
    return _forward(spec, backend, axis, names, x, params)


@forward.register_fake
def _(spec, backend, axis, names, x, params):
    return _torch.empty_like(x)


@_torch.library.custom_op("actdsl::forward_", mutates_args=("x",))
def forward_(spec: str, backend: str, axis: int, names: str, x: Tensor,
             params: list[Tensor]) -> None:
    """``forward`` written into x (``inplace=True`` without autograd)."""
    x.copy_(forward(spec, backend, axis, names, x, params))


@forward_.register_fake
def _(spec, backend, axis, names, x, params):
    return None


def _vjp(spec, backend, axis, names, x, gy, params, want_params):
    cuda = x.is_cuda
    k = _kernel(spec, "cuda" if cuda else "cpu", backend)
    values = _values(names, params, _units(x, axis)) if names else {}
    if cuda and x.dtype in _DTYPES:
        xc, gc = x.detach().contiguous(), gy.detach().contiguous()
        dx = _torch.empty_like(xc)
        got = k.vjp(xc, gc, axis=axis, out=dx, with_params=want_params, **values)
        grads = {n: g.copy_to_host() for n, g in (got[1] if want_params else {}).items()}
    else:
        got = k.vjp(_np(x), _np(gy), axis=axis, with_params=want_params, **values)
        dxn, grads = got if want_params else (got, {})
        dx = _tensor(dxn, x)
    if not want_params:
        return [dx, *[_torch.zeros_like(p) for p in params]]
    return [dx, *_grads(grads, names, params)]


@_torch.library.custom_op("actdsl::vjp", mutates_args=())
def vjp(spec: str, backend: str, axis: int, names: str, x: Tensor, gy: Tensor,
        params: list[Tensor], want_params: bool) -> list[Tensor]:
    """[dL/dx, dL/dθ for each parameter (zeros unless ``want_params``)]."""
    return _vjp(spec, backend, axis, names, x, gy, params, want_params)


@vjp.register_fake
def _(spec, backend, axis, names, x, gy, params, want_params):
    return [_torch.empty_like(x), *[_torch.empty_like(p) for p in params]]


@_torch.library.custom_op("actdsl::jvp", mutates_args=())
def jvp(spec: str, backend: str, axis: int, names: str, x: Tensor, dx: Tensor,
        params: list[Tensor], dparams: list[Tensor]) -> Tensor:
    """J dx (+ the parameters' part for tangents ``dparams``), forward mode."""
    k = _kernel(spec, "cpu", backend)
    units = _units(x, axis)
    return _tensor(k.jvp(_np(x), _np(dx), axis=axis, dparams=_values(names, dparams, units),
                         **_values(names, params, units)), x)


@jvp.register_fake
def _(spec, backend, axis, names, x, dx, params, dparams):
    return _torch.empty_like(x)


@_torch.library.custom_op("actdsl::vjp_vjp", mutates_args=())
def vjp_vjp(spec: str, backend: str, axis: int, names: str, x: Tensor, gy: Tensor,
            ddx: Tensor, params: list[Tensor], ddparams: list[Tensor]) -> list[Tensor]:
    """[d/dx, d/dθ] of ⟨(ddx, ddθ), vjp(x, gy)⟩: exact Hessian-vector products."""
    k = _kernel(spec, "cpu", backend)
    units = _units(x, axis)
    d_x, _, d_p = k.vjp_vjp(_np(x), _np(gy), _np(ddx), axis=axis, with_params=True,
                            ddparams=_values(names, ddparams, units),
                            **_values(names, params, units))
    return [_tensor(d_x, x), *_grads(d_p, names, params)]


@vjp_vjp.register_fake
def _(spec, backend, axis, names, x, gy, ddx, params, ddparams):
    return [_torch.empty_like(x), *[_torch.empty_like(p) for p in params]]


# -- autograd ------------------------------------------------------------------------------------
def _save(ctx, inputs, output):
    spec, backend, axis, names, x, params = inputs
    ctx.key = (spec, backend, axis, names)
    ctx.want = any(p.requires_grad for p in params)
    ctx.save_for_backward(x, *params)


def _forward_backward(ctx, gy):
    x, *params = ctx.saved_tensors
    spec, backend, axis, names = ctx.key
    dx, *dps = vjp(spec, backend, axis, names, x, gy, params, ctx.want)
    return None, None, None, None, dx, dps if ctx.want else [None] * len(params)


forward.register_autograd(_forward_backward, setup_context=_save)


def _save_vjp(ctx, inputs, output):
    spec, backend, axis, names, x, gy, params, want = inputs
    ctx.key = (spec, backend, axis, names)
    ctx.save_for_backward(x, gy, *params)


def _vjp_backward(ctx, grads):
    x, gy, *params = ctx.saved_tensors
    spec, backend, axis, names = ctx.key
    wx, *wp = [_torch.zeros_like(t) if g is None else g for g, t in zip(grads, [x, *params])]
    d_gy = jvp(spec, backend, axis, names, x, wx, params, wp)
    d_x, *d_p = vjp_vjp(spec, backend, axis, names, x, gy, wx, params, wp)
    return None, None, None, None, d_x, d_gy, d_p, None


vjp.register_autograd(_vjp_backward, setup_context=_save_vjp)


# -- eager mode -----------------------------------------------------------------------------------
# The custom ops above are what torch.compile traces. Called eagerly, a custom op with registered
# autograd costs about 100 µs of dispatch per call (PyTorch 2.13, CPU: a 128x512 relu's forward
# took 330 µs where the kernel takes 34 µs and torch.relu 9 µs); an autograd.Function costs about
# 15 µs. Eager calls take these, compiled code the ops: the same functions compute both.
class _EagerForward(_torch.autograd.Function):
    # forward(ctx, ...) rather than setup_context: with setup_context, Function.apply binds its
    # arguments through inspect.signature on every call (about 30 µs)
    @staticmethod
    def forward(ctx, spec, backend, axis, names, x, *params):
        ctx.key = (spec, backend, axis, names)
        ctx.save_for_backward(x, *params)
        return _forward(spec, backend, axis, names, x, list(params))

    @staticmethod
    def backward(ctx, gy):
        x, *params = ctx.saved_tensors
        want = any(ctx.needs_input_grad[5:])
        if _torch.is_grad_enabled():  # create_graph=True: the backward is itself differentiable
            dx, *dps = _EagerVjp.apply(*ctx.key, want, x, gy, *params)
        else:
            dx, *dps = _vjp(*ctx.key, x, gy, params, want)
        return (None, None, None, None, dx, *(dps if want else [None] * len(params)))


class _EagerVjp(_torch.autograd.Function):
    """The backward of ``_EagerForward`` when it is differentiated again: its own backward is
    ``_vjp_backward``'s (the ``jvp`` and ``vjp_vjp`` ops, which refuse a third order)."""

    @staticmethod
    def forward(ctx, spec, backend, axis, names, want, x, gy, *params):
        ctx.key = (spec, backend, axis, names)
        ctx.save_for_backward(x, gy, *params)
        return tuple(_vjp(spec, backend, axis, names, x, gy, list(params), want))

    @staticmethod
    def backward(ctx, *grads):
        _, _, _, _, d_x, d_gy, d_p, _ = _vjp_backward(ctx, list(grads))
        return (None, None, None, None, None, d_x, d_gy, *d_p)


# -- the user's API ------------------------------------------------------------------------------
def apply(spec: str, x, axis: int = -1, cpu_backend: str = "numba", inplace: bool = False,
          **params):
    """``spec`` applied to tensor ``x`` with autograd; parameters as tensors (or numbers), by
    name. ``inplace=True`` writes the result into x and returns x."""
    names = ",".join(params)
    values = [p if isinstance(p, _torch.Tensor) else _torch.as_tensor(p, dtype=x.dtype)
              for p in params.values()]
    return _call(spec, cpu_backend, axis, names, x, values, inplace)


def _op(spec, backend, axis, names, x, values):
    """The forward with autograd: the custom op where torch.compile traces, else (eager) the
    cheaper autograd.Function."""
    if _torch.compiler.is_compiling():
        return _torch.ops.actdsl.forward(spec, backend, axis, names, x, values)
    return _EagerForward.apply(spec, backend, axis, names, x, *values)


def _call(spec, backend, axis, names, x, values, inplace):
    if not inplace:
        return _op(spec, backend, axis, names, x, values)
    if _torch.is_grad_enabled() and (x.requires_grad or any(v.requires_grad for v in values)):
        # the exact backward needs x's values: they are kept (a copy) for it
        return x.copy_(_op(spec, backend, axis, names, x.clone(), values))
    _torch.ops.actdsl.forward_(spec, backend, axis, names, x, values)
    return x


class _Function:
    """The op as ``_Function.apply(spec, backend, axis, names, x, *params)`` (older callers)."""

    @staticmethod
    def apply(spec, backend, axis, names, x, *params):
        return _op(spec, backend, axis, ",".join(names), x, list(params))


class Activation(_torch.nn.Module):
    """``spec`` as a module. Learnable parameters (prelu's r, maxout's m and b...) become
    ``nn.Parameter``s of shape (units, ...) initialised as ``Kernel.init_params`` does; pass
    ``units`` for a spec that has any (``units=1``: one value shared by every unit, like
    ``nn.PReLU()``). The row (unit) axis is ``axis``; ``inplace=True`` writes into the input."""

    def __init__(self, spec: str, units: int | None = None, axis: int = -1,
                 cpu_backend: str = "numba", dtype=_torch.float32, seed: int | None = None,
                 inplace: bool = False):
        super().__init__()
        self.kernel = _compile(spec)
        self.spec, self.axis, self.cpu_backend = self.kernel.text, axis, cpu_backend
        self.inplace = inplace
        if self.kernel.params and units is None:
            raise ActdslError(f"{self.spec!r} has learnable parameters: pass units= (units=1 "
                              "for one value shared by every unit)")
        init = self.kernel.init_params(units, rng=seed) if self.kernel.params else {}
        for name, value in init.items():
            self.register_parameter(name, _torch.nn.Parameter(_torch.as_tensor(value, dtype=dtype)))
        self.names = list(init)
        self._joined = ",".join(self.names)

    def forward(self, x):
        return _call(self.spec, self.cpu_backend, self.axis, self._joined, x,
                     [getattr(self, n) for n in self.names], self.inplace)

    def extra_repr(self) -> str:
        return f"{self.spec!r}, axis={self.axis}" + (", inplace=True" if self.inplace else "")

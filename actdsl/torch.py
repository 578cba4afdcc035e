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

Eagerly, CPU tensors go through the Numba kernels on NumPy views of the same memory (a
non-contiguous tensor is made contiguous first); CUDA tensors through the CUDA backend, which reads
and writes them in place (second-order ops copy through the host).

Under torch.compile an ``Activation`` (and ``apply`` of a spec already called eagerly) is not an
opaque op: the spec's generated NumPy source runs with torch operations in place of NumPy's
(``_Traced``), forward and VJP, so Dynamo sees plain tensor code and Inductor fuses the activation
with its neighbours, as it does PyTorch's own. The custom ops remain what a spec not yet built
for tracing compiles to, and what ``torch.ops.actdsl`` callers get.
"""
from __future__ import annotations

import contextlib
import math
import types
import warnings
import weakref

import numpy as np

try:
    import torch as _torch
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("actdsl.torch needs PyTorch: pip install torch") from e

from .backends import numpy as _numpy_backend
from .backends.numpy_runtime import make as _make_runtime
from .backends.vmath import NCDF_K, NCDF_M_SINGLE
from .cache import source_key
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


def _named(spec: str, expected: list[str], names: str) -> None:
    """Refuses parameter ``names`` (comma-separated) other than ``expected``, in any order."""
    if not names and not expected:
        return
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
    _named(spec, [p.name for p in k.params], names)
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


# -- torch.compile: the spec as torch operations ------------------------------------------------
def _number_or(tensor_f, number_f):
    """A function of the generated code: the torch one on tensors, the math one on constants
    (``np.sqrt(2.0)``)."""
    return staticmethod(lambda x: tensor_f(x) if isinstance(x, _torch.Tensor) else number_f(x))


def _clamp(bound):
    """np.maximum (bound "min") or np.minimum ("max"): torch's takes no constant."""
    pair = _torch.maximum if bound == "min" else _torch.minimum
    return staticmethod(lambda a, b: pair(a, b) if isinstance(b, _torch.Tensor)
                        else _torch.clamp(a, **{bound: b}))


class _TorchNumpy(types.SimpleNamespace):
    """``np`` for the generated NumPy source, made of torch operations, for one float dtype: the
    names torch shares with NumPy (exp, tanh, abs, square, arctan...) are torch's; those that
    differ are spelled here."""
    inf = math.inf
    sqrt = _number_or(_torch.sqrt, math.sqrt)
    exp = _number_or(_torch.exp, math.exp)
    maximum, minimum = _clamp("min"), _clamp("max")

    def __init__(self, dtype):
        super().__init__(dtype=dtype)

    def where(self, c, a, b):
        """torch.where; a choice between two constants (leaky_relu's slope: ``where(z <= 0, 0.01,
        1.0)``) is made in this dtype, not in torch's default float32."""
        if not isinstance(a, _torch.Tensor) and not isinstance(b, _torch.Tensor):
            a = _torch.scalar_tensor(a, dtype=self.dtype)
        return _torch.where(c, a, b)

    def __getattr__(self, name):
        return getattr(_torch, name)

    @staticmethod
    def errstate(**kwargs):  # torch raises no floating-point warnings
        return contextlib.nullcontext()

    @staticmethod
    def sum(x, axis, keepdims):
        return _torch.sum(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def max(x, axis, keepdims):
        return _torch.amax(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def argmax(x, axis, keepdims):
        return _torch.argmax(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def take_along_axis(x, index, axis):
        return _torch.take_along_dim(x, index, dim=axis)

    @staticmethod
    def asarray(x):
        return _torch.as_tensor(x)


def _finite_or_inf(x):
    """True where x is not NaN, as |x| <= inf: a comparison of one full-size tensor (see
    ``_torch_runtime``). x may be a constant."""
    return abs(x) <= math.inf


def _nan_part(v):
    """0, or NaN where v is NaN."""
    if not isinstance(v, _torch.Tensor):
        return 0.0 if v == v else v
    return _torch.where(_finite_or_inf(v), 0.0, v)


def _torch_runtime():
    """numpy_runtime's functions over torch; five are spelled here:

    - attop and at, whose NumPy spellings torch lacks (astype; arange on the input's device);
    - nan_through and shifted compare one full-size tensor with a constant, never two tensors
      (``x != x``, ``a == b``): AOTAutograd's partitioner never recomputes an op whose output is
      under a quarter of its inputs' bytes, so a boolean made from two float32 tensors that the
      forward and the backward share is saved for the backward, and Inductor's CPU code stores
      booleans about ten times slower than floats (torch 2.13: 450 µs against 50 µs for
      128x512), slower than the whole activation;
    - ncdf (gelu) in float32 is Phi(-u) = exp(-u^2/2) M(t) / (u + K) (vmath.NCDF_M_SINGLE, one
      polynomial for every u) in float64, where Inductor vectorizes exp: its erfc is a scalar
      loop (1.4-2.0 ms per 2^20 float32 against 0.5-1.0 for erf).
    """
    rt = _make_runtime(_TorchNumpy(None), _torch.special.erf, _torch.special.erfc)

    def attop(a, b):
        return (a == b).to(a.dtype)

    def at(index, x, like):
        hit = _torch.arange(like.shape[-1], device=like.device) == index
        return _torch.where(hit, x, 0.0)

    def nan_through(value, *operands):
        for op in operands:
            if isinstance(op, _torch.Tensor):
                value = _torch.where(_finite_or_inf(op), value, op)
            elif op != op:
                value = value * op
        return value

    def shifted(a, b):
        """a - b, and 0 where a == b (two equal infinities): a - b is NaN only there or where a
        or b is NaN."""
        d = a - b
        if not isinstance(d, _torch.Tensor):
            return 0.0 if a == b else d
        return _torch.where(_finite_or_inf(d), d, _nan_part(a) + _nan_part(b))

    def ncdf(x):
        if x.dtype != _torch.float32:
            return _torch.special.erfc(-x * 0.7071067811865476) / 2
        # Phi(-u) = exp(-u^2/2) M(t) / (u + K), t = (u - K)/(u + K), u = |x| <= 15; in float64
        # u^2 is exact, and one rounding to float32 ends it
        u = _torch.clamp(_torch.abs(x), max=15.0).double()
        q = 1 / (u + NCDF_K)
        t = (u - NCDF_K) * q
        m = NCDF_M_SINGLE[-1]
        for c in NCDF_M_SINGLE[-2::-1]:
            m = m * t + c
        tail = _torch.exp(u * u * -0.5) * (m * q)
        return _torch.where(x <= 0, tail, 1 - tail).float()

    rt.attop, rt.at = attop, at
    rt.nan_through, rt.shifted, rt.ncdf = nan_through, shifted, ncdf
    return rt


_TORCH_RUNTIME = _torch_runtime()


def _shaped(v, like: Tensor) -> Tensor:
    """A value of the generated code (a tensor that may broadcast, or a constant) as a tensor of
    ``like``'s shape and dtype."""
    v = _torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v if v.shape == like.shape else v.expand(like.shape).clone()


class _Traced:
    """A spec as torch operations: the NumPy backend's generated forward and VJP (the same exact
    derivative), run on tensors in an autograd.Function that torch.compile traces through."""

    def __init__(self, kernel):
        source = (kernel.source if kernel.backend == "numpy"
                  else _numpy_backend.generate(kernel.plan))  # milliseconds: the plan is made
        key, code = source_key(source), {}
        for dtype in _DTYPES:
            ns = _numpy_backend.load(source, key, xp=_TorchNumpy(dtype), runtime=_TORCH_RUNTIME,
                                     tag="torch")
            code[dtype] = ns["forward"], ns["vjp"]
        # the source stays in linecache (for tracebacks) only while this form is in use
        weakref.finalize(self, _numpy_backend.forget_source, f"<actdsl-torch-{key}>", source)
        # what a call reads, as plain values: each object Dynamo reads becomes a guard that every
        # compiled call checks
        self.text, self.rowwise = kernel.text, kernel.rowwise
        self.layout = tuple((p.name, p.shape) for p in kernel.params)
        self.joined = ",".join(p.name for p in kernel.params)

        class Function(_torch.autograd.Function):
            @staticmethod
            def forward(ctx, z, n, *columns):
                ctx.n = n
                ctx.save_for_backward(z, *columns)
                y = code[z.dtype][0](z, n, *columns)
                return y.clone() if y is z else _shaped(y, z)

            @staticmethod
            def backward(ctx, g):
                z, *columns = ctx.saved_tensors
                dz, dps = code[z.dtype][1](z, g, ctx.n, *columns)
                return (_shaped(dz, z), None,
                        *[_shaped(d, z).sum_to_size(c.shape) for d, c in zip(dps, columns)])

        self.function = Function

    def trial(self, kernel) -> None:
        """One forward and backward in each dtype on a small row (zero, signs, a large value),
        eagerly: what Dynamo would trace, so that a gap in the torch namespace shows here."""
        values = [_torch.as_tensor(v) for v in kernel.init_params(3, rng=0).values()]
        for dtype in _DTYPES:
            x = _torch.tensor([[0.0, -1.5, 40.0], [2.0, -0.0, -40.0]], dtype=dtype,
                              requires_grad=True)
            ps = [v.to(dtype).requires_grad_(True) for v in values]
            y = self(self.joined, -1, x, ps)
            _torch.autograd.grad(y.sum(), [x, *ps])

    def _ordered(self, names: str, values) -> list:
        """The values in the kernel's parameter order (``apply`` takes them in any order)."""
        _named(self.text, [n for n, _ in self.layout], names)
        given = dict(zip(_split(names), values))
        return [given[n] for n, _ in self.layout]

    def __call__(self, names: str, axis: int, x: Tensor, values) -> Tensor:
        if x.dtype not in _DTYPES and x.dtype not in _HALF:
            _check(x)
        if names != self.joined:
            values = self._ordered(names, values)
        work = x.float() if x.dtype in _HALF else x
        scalar = work.dim() == 0
        if scalar:
            if self.rowwise:
                raise ActdslError(f"{self.text!r} is row-wise: it needs a tensor with a row axis, "
                                  "not a scalar")
            work = work.reshape(1)
        moved = not scalar and axis != -1 and axis != work.dim() - 1
        zt = _torch.movedim(work, axis, -1) if moved else work
        units = zt.shape[-1]
        columns = []
        for (_, shape), v in zip(self.layout, values):  # (units, *shape), (1, *shape), shape or
            full = _torch.broadcast_to(v.to(zt.dtype), (units, *shape))  # a number: broadcast
            columns += [full[:, i] for i in range(shape[0])] if shape else [full]
        y = self.function.apply(zt, units, *columns)
        if moved:
            y = _torch.movedim(y, -1, axis)
        return (y.reshape(()) if scalar else y).to(x.dtype)


_traced_cache: dict = {}


def _built(spec: str):
    """``(generation, _Traced or None)`` for a spec built for tracing under the registry as it is
    now; None if it is not (yet, or any more)."""
    hit = _traced_cache.get(spec)
    return hit if hit is not None and hit[0] == _REGISTRY.generation else None


def _traced(spec: str, make_kernel=None) -> _Traced | None:
    """The spec built for tracing, remembered as ``_kernel`` remembers kernels. Built outside
    torch.compile (by ``Activation`` and by eager calls of ``apply``): Dynamo must not trace the
    compiler. None (with a warning) for a spec whose torch form fails a trial run: torch.compile
    then goes through the custom op."""
    hit = _built(spec)
    if hit is not None:
        return hit[1]
    kernel = make_kernel() if make_kernel else _compile(spec)  # (only when it is not built)
    traced = _Traced(kernel)
    try:
        traced.trial(kernel)
    except Exception as e:  # a NumPy spelling the torch namespace lacks: correct, only slower
        warnings.warn(f"actdsl.torch: {kernel.text!r} runs opaque under torch.compile (its torch "
                      f"form failed: {type(e).__name__}: {e})", RuntimeWarning, stacklevel=3)
        traced = None
    if len(_traced_cache) >= 1024:
        _traced_cache.clear()
    _traced_cache[spec] = (_REGISTRY.generation, traced)
    return traced


# -- the user's API ------------------------------------------------------------------------------
def apply(spec: str, x, axis: int = -1, cpu_backend: str = "numba", inplace: bool = False,
          **params):
    """``spec`` applied to tensor ``x`` with autograd; parameters as tensors (or numbers), by
    name. ``inplace=True`` writes the result into x and returns x."""
    names = ",".join(params)
    values = [p if isinstance(p, _torch.Tensor) else _torch.as_tensor(p, dtype=x.dtype)
              for p in params.values()]
    if not _torch.compiler.is_compiling():  # ready for torch.compile to trace later
        _traced(spec, lambda: _kernel(spec, "cpu", cpu_backend))
    return _call(spec, cpu_backend, axis, names, x, values, inplace)


def _op(spec, backend, axis, names, x, values):
    """The forward with autograd. Eagerly the autograd.Function (cheaper than the op); under
    torch.compile the spec's torch operations where they are built (``_traced``), else the
    custom op."""
    if _torch.compiler.is_compiling():
        hit = _built(spec)
        if hit is not None and hit[1] is not None:
            return hit[1](names, axis, x, values)
        return _torch.ops.actdsl.forward(spec, backend, axis, names, x, values)
    return _EagerForward.apply(spec, backend, axis, names, x, *values)


def _call(spec, backend, axis, names, x, values, inplace):
    if not inplace:
        return _op(spec, backend, axis, names, x, values)
    if _torch.is_grad_enabled() and (x.requires_grad or any(v.requires_grad for v in values)):
        # the exact backward needs x's values: they are kept (a copy) for it
        return x.copy_(_op(spec, backend, axis, names, x.clone(), values))
    if _torch.compiler.is_compiling():
        return x.copy_(_op(spec, backend, axis, names, x, values))
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
        _traced(self.spec, lambda: self.kernel)  # what torch.compile traces

    def forward(self, x):
        return _call(self.spec, self.cpu_backend, self.axis, self._joined, x,
                     [getattr(self, n) for n in self.names], self.inplace)

    def extra_repr(self) -> str:
        return f"{self.spec!r}, axis={self.axis}" + (", inplace=True" if self.inplace else "")

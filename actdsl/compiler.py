"""``actdsl.compile``: spec text -> :class:`Kernel`, a callable with exact gradients.

The kernel does what every backend shares: checks and converts arrays, moves the row axis last,
checks and broadcasts parameters, sums parameter gradients over the batch. The backend's
generated functions only see float arrays with the row (or unit) axis last.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import sympy as sp

from . import library  # noqa: F401  (fills the registry)
from .ast import Spec
from .autodiff import AutodiffMixin
from .derive import derivative as derive_derivative, make_plan
from . import budget
from .errors import (SYMPY_FAILURES, ActdslError, ArrayTypeError, BudgetError, ParameterError,
                     close_names)
from .ir import IR
from .limits import guard as guard_limits
from .lower import lower
from .registry import REGISTRY
from .stage import plain_or_staged
from .syntax import parse

BACKENDS = ("numpy", "numba", "cuda")
_CACHE_SIZE = 256
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()
#: spec text as typed -> the canonical key in ``_cache``: a repeated compile of the same text (the
#: PyTorch and JAX adapters compile on every call) skips the parser (~60 µs for "relu"). Keys only,
#: so an evicted kernel is not kept alive here.
_texts: OrderedDict = OrderedDict()


def compile(spec: str | Spec, backend: str = "numpy") -> "Kernel":  # noqa: A001 - public name
    """Compile a spec for a backend. Kernels are cached per (canonical spec, backend)."""
    if backend not in BACKENDS:
        hint = close_names(str(backend), BACKENDS)
        raise ActdslError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    text = spec if isinstance(spec, str) else str(spec)
    # the parser's own budgets are part of the key: a text refused by them is refused again
    # after a block that raised them has ended (budget.limits)
    typed = ((text, backend, REGISTRY.generation, budget.limit("formula_depth"),
              budget.limit("terms")) if isinstance(spec, str) else None)
    with _cache_lock:
        key = _texts.get(typed)
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    ast = parse(text) if isinstance(spec, str) else spec
    key = (str(ast), backend, REGISTRY.generation)
    with _cache_lock:
        kernel = _cache.get(key)
    if kernel is None:
        kernel = _bounded(lambda: Kernel(ast, backend, text))
    with _cache_lock:
        _cache[key] = kernel
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        if typed is not None:
            _texts[typed] = key
            while len(_texts) > 4 * _CACHE_SIZE:
                _texts.popitem(last=False)
    return kernel


def _bounded(make):
    """``make()``, with the failures that only size can cause turned into a BudgetError: the
    explicit budgets (actdsl.budget) come first, this is the backstop behind them."""
    try:
        with budget.deadline():
            return make()
    except RecursionError:
        raise BudgetError("this spec nests too deeply for actdsl's symbolic stages (Python's "
                          "recursion limit); compose fewer terms or write a flatter formula",
                          "recursion") from None
    except MemoryError:
        raise BudgetError("this spec's compile ran out of memory; simplify it, or lower "
                          "actdsl.budget's limits so that it is refused early",
                          "memory") from None
    except ActdslError:
        raise
    except SYMPY_FAILURES as e:
        # SymPy refusing something a check above should have caught first: still ours to report
        # (LookupError: SymPy 1.14's Piecewise raised KeyError on relu of an undefined function
        # of a 401-digit constant, found by test_hardening's fuzzing; AssertionError: its
        # piecewise_fold asserts that a condition holds no Piecewise)
        raise ActdslError(f"actdsl cannot compile this spec: SymPy raised {type(e).__name__} "
                          f"({str(e)[:200]}); please report it with the spec") from e


def _backend_module(name: str):
    if name == "numpy":
        from .backends import numpy as mod
    elif name == "numba":
        from .backends import numba_cpu as mod
    elif name == "cuda":
        from .backends import numba_cuda as mod
    else:
        raise ActdslError(f"the {name!r} backend is not available in this version of actdsl")
    return mod


_FLOATS = {np.dtype(np.float32): np.dtype(np.float32), np.dtype(np.float64): np.dtype(np.float64),
           np.dtype(np.float16): np.dtype(np.float32)}


def as_float_array(x, what: str = "input") -> np.ndarray:
    """Array-likes become arrays; ints and bools compute in float64, float16 in float32."""
    if isinstance(x, np.ma.MaskedArray):
        raise ArrayTypeError(f"{what} is a masked array; actdsl would compute on the hidden values "
                             "too (row sums included): pass x.filled(value) or x.data, and mask "
                             "the result yourself")
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged lists, CUDA tensors and the like
        if _on_cuda(x):
            raise ArrayTypeError(f"{what} is a CUDA device array: compile with backend='cuda' to "
                                 "compute on the device, or copy it to the host first") from None
        raise ArrayTypeError(f"{what} is not an array of numbers: {e}") from None
    kind = a.dtype.kind
    if not a.dtype.isnative:  # big-endian data on a little-endian machine: converted, as NumPy does
        a = a.astype(a.dtype.newbyteorder("="))
    if kind == "O" and _on_cuda(x):
        raise ArrayTypeError(f"{what} is a CUDA device array: compile with backend='cuda' to "
                             "compute on the device, or copy it to the host first")
    if kind in "iub":
        return a.astype(np.float64)
    if a.dtype in _FLOATS:
        return a
    if kind == "c":
        raise ArrayTypeError(f"{what} is complex; actdsl activations are real functions: pass "
                             "x.real or compute on real and imaginary parts yourself")
    if kind == "f":
        raise ArrayTypeError(f"{what} has dtype {a.dtype}; actdsl computes in float32 or float64")
    raise ArrayTypeError(f"{what} has dtype {a.dtype}; expected an array of real numbers")


def _lazy_kind(x) -> str | None:
    """'dask' for a dask array, 'xarray' for an xarray DataArray, else None (no imports)."""
    module = type(x).__module__
    if module.startswith("dask.array"):
        return "dask"
    if module.startswith("xarray.") and type(x).__name__ == "DataArray":
        return "xarray"
    return None


def _on_cuda(x) -> bool:
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:  # has it, but refuses it now (a CUDA tensor that requires grad)
        return True


class Kernel(AutodiffMixin):
    """A compiled spec. Call it for y; ``vjp`` for gradients; see DESIGN.md for the contract."""

    def __init__(self, spec: Spec, backend: str, text: str = ""):
        self.spec = spec
        self.text = str(spec)
        self.backend = backend
        module = _backend_module(backend)
        # the plain lowering, or where that is over a budget, the terms as stages (actdsl.stage):
        # linear where the plain expression grows exponentially
        plain_or_staged(lambda staged: self._build(spec, text, module, staged))
        # the Numba backend's path for small arrays (None: every call goes through the checks
        # below)
        self._fast_forward = getattr(self._runner, "fast_forward", None)
        self._fast_vjp = getattr(self._runner, "fast_vjp", None)
        self._columns_on_device: OrderedDict = OrderedDict()  # cuda: parameters on the device

    def _build(self, spec: Spec, text: str, module, staged: bool) -> None:
        self.ir: IR = lower(spec, text, staged=staged)
        self.plan = guard_limits(make_plan(self.ir))
        self.rowwise = self.plan.rowwise
        self.staged = staged
        self.source, self._runner = module.build(self.plan, _safe_key(self.text))
        budget.check_source(self.source)

    def __repr__(self) -> str:
        return f"<actdsl.Kernel {self.text!r} backend={self.backend}>"

    def __reduce__(self):
        # a kernel pickles as its spec: Dask workers (other processes) compile it again, from
        # their own cache. Custom activations must be registered in those processes too.
        return compile, (self.text, self.backend)

    # -- symbolic views --------------------------------------------------------------------------
    @property
    def params(self):
        """The learnable parameters: name, shape per unit, default initialisation."""
        return self.ir.params

    @property
    def expr(self) -> sp.Expr:
        return self.ir.expr

    @property
    def derivative_expr(self) -> sp.Expr:
        if self.rowwise:
            from .derive import jacobian_entry
            return jacobian_entry(self.plan)
        return derive_derivative(self.ir)

    def init_params(self, units: int, rng: np.random.Generator | int | None = None) -> dict:
        """Default parameter values for a layer of ``units`` units; with ``rng``, jittered where
        the parameter defines that (maxout)."""
        if not isinstance(units, (int, np.integer)) or units < 1:
            raise ParameterError(f"units must be a positive whole number, not {units!r}")
        if rng is not None and not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        return {p.name: p.init(int(units), rng).reshape((int(units), *p.shape)) for p in self.params}

    # -- numbers ---------------------------------------------------------------------------------
    @property
    def ufunc(self):
        """The forward pass as a real NumPy ufunc (Numba backend, elementwise specs without
        learnable parameters): ``out=``, broadcasting, Dask and xarray work with it."""
        return self._runner.ufunc

    @property
    def gufunc(self):
        """The forward pass as a gufunc ``(n),(n)...->(n)`` over the last axis (Numba backend,
        row-wise specs and specs with per-unit parameters, given as (n,) arrays)."""
        return self._runner.gufunc

    def __call__(self, x, axis: int = -1, out=None, stream=None, **params):
        if self._fast_forward is not None and type(x) is np.ndarray and stream is None \
                and _fast_out_ok(out, x):
            y = self._fast_forward(x, axis, out, params, self.params)
            if y is not None:
                return y
        done = self._elsewhere("forward", x, axis, out, stream, params)
        if done is not None:
            return done
        kw = {"stream": stream} if stream is not None else {}
        a, xt, axis, args = self._prepare(x, axis, params)
        out_dtype = self._out_dtype(a)
        if out is not None:
            _check_out(out, a.shape, out_dtype)
        if xt.size == 0:
            return out if out is not None else np.empty(a.shape, out_dtype)
        direct = (out is not None and out.dtype == xt.dtype and out.flags.c_contiguous
                  and (axis is None or axis == a.ndim - 1) and not _overlaps(out, xt))
        if direct:
            self._runner.forward(xt, args, out=out.reshape(xt.shape), **kw)
            return out
        y = self._finish(self._runner.forward(xt, args, **kw), xt, axis, a)
        if out is not None:
            np.copyto(out, y)
            return out
        return y

    def derivative(self, x, axis: int = -1, stream=None, order: int = 1, **params):
        """g'(x) (``order=2``: g''(x)), elementwise specs only (a row-wise spec has a Jacobian:
        use ``vjp``, ``jvp`` or ``vjp_vjp``)."""
        if order == 2:
            return self._second_derivative(x, axis, stream, params)
        if order != 1 or isinstance(order, bool):
            raise ParameterError(f"order must be 1 or 2, not {order!r}")
        if self.rowwise:
            raise ActdslError(f"{self.text!r} is row-wise: each output depends on the whole row, "
                              "so there is no elementwise derivative; use vjp(x, dy)")
        done = self._elsewhere("derivative", x, axis, None, stream, params)
        if done is not None:
            return done
        kw = {"stream": stream} if stream is not None else {}
        a, xt, axis, args = self._prepare(x, axis, params)
        if xt.size == 0:
            return np.empty(a.shape, self._out_dtype(a))
        return self._finish(self._runner.derivative(xt, args, **kw), xt, axis, a)

    def vjp(self, x, dy, axis: int = -1, with_params: bool = False, out=None, stream=None,
            **params):
        """dL/dx given dL/dy (and, ``with_params``, dL/dθ for every learnable parameter).
        ``out`` receives dL/dx (same shape and dtype as x's result)."""
        if self._fast_vjp is not None and type(x) is np.ndarray and not with_params \
                and stream is None and type(dy) is np.ndarray and _fast_out_ok(out, x, dy):
            dx = self._fast_vjp(x, dy, axis, out, params, self.params)
            if dx is not None:
                return dx
        done = self._elsewhere("vjp", x, axis, out, stream, params, dy, with_params)
        if done is not None:
            return done
        kw = {"stream": stream} if stream is not None else {}
        given = {k: np.shape(v) for k, v in params.items()}
        a, xt, axis, args = self._prepare(x, axis, params)
        if out is not None:
            _check_out(out, a.shape, self._out_dtype(a))
        g = as_float_array(dy, "dy")
        if g.shape != a.shape:
            raise ParameterError(f"dy has shape {g.shape} but x has shape {a.shape}")
        g = _cast(g, xt.dtype)
        if axis is not None:  # (a 0-d x with per-unit parameters is a row of one: so is dy)
            g = np.moveaxis(g.reshape(xt.shape) if g.ndim == 0 else g, axis, -1)
        if xt.size == 0:
            dx = out if out is not None else np.empty(a.shape, self._out_dtype(a))
            grads = {p.name: np.zeros(given[p.name], self._out_dtype(a)) for p in self.params}
        else:
            direct = (out is not None and out.dtype == xt.dtype and out.flags.c_contiguous
                      and (axis is None or axis == a.ndim - 1) and not _overlaps(out, xt, g))
            dz, dps = self._runner.vjp(xt, g, args, out=out.reshape(xt.shape) if direct else None,
                                       **kw)
            if direct:
                dx = out
            else:
                dx = self._finish(dz, xt, axis, a)
                if out is not None:
                    np.copyto(out, dx)
                    dx = out
            grads = self._param_grads(dps, given, self._out_dtype(a))
        return (dx, grads) if with_params else dx

    def _param_grads(self, columns, given: dict, dtype) -> dict:
        grads, i = {}, 0
        for p in self.params:
            cols = columns[i:i + len(p.symbols)]
            i += len(p.symbols)
            full = cols[0] if not p.shape else np.stack(cols, axis=-1)
            grads[p.name] = _cast(_sum_to(full, given[p.name]), dtype)
        return grads

    # -- CUDA device arrays ------------------------------------------------------------------------
    def _elsewhere(self, op, x, axis, out, stream, params, dy=None, with_params=False):
        """``op``'s result when x is a Dask array or DataArray (lazy) or lives on a CUDA device
        (backend 'cuda'); None for host arrays, which the caller handles."""
        lazy = _lazy_kind(x)
        if lazy:
            from . import lazy as lz
            return lz.apply(self, op, lazy, x, axis, out, params, dy, with_params)
        if self.backend != "cuda":
            if stream is not None:
                raise ParameterError(f"stream= is for backend='cuda', not {self.backend!r}")
            return None
        from .backends.numba_cuda import interface
        dev = interface(x)
        if dev is None:
            return None
        return self._device(op, dev, axis, out, stream, params, dy, with_params)

    @staticmethod
    def _device_like(obj, what, shape, kshape, dtype, stream):
        """``out``/``dy`` for device x: a device array of x's shape and dtype."""
        from .backends import numba_cuda as nc
        dev = nc.interface(obj)
        if dev is None or tuple(dev.shape) != shape:
            raise ParameterError(f"{what} must be a device array of shape {shape}, like x"
                                 + ("" if dev is None else f"; it has shape {tuple(dev.shape)}"))
        view = nc.device_view(dev, what, kshape, stream)
        if np.dtype(view.dtype) != dtype:
            raise ParameterError(f"{what} has dtype {np.dtype(view.dtype)}; x has dtype {dtype}")
        return view

    def _device_columns(self, columns, units: int, stream) -> list:
        """Parameter columns on the device, reused while the values stay the same: a copy from
        pageable host memory would stall the stream on every call."""
        from .backends.numba_cuda import _cuda
        host = [np.ascontiguousarray(np.broadcast_to(c, (units,))) for c in columns]
        key = tuple((c.dtype.str, c.tobytes()) for c in host)
        cache = self._columns_on_device
        with _cache_lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        cols = [_cuda().to_device(c, stream=stream) for c in host]
        with _cache_lock:
            cache[key] = cols
            while len(cache) > 8:
                cache.popitem(last=False)
        return cols

    def _device(self, op, x, axis, out, stream, params, dy=None, with_params=False):
        """forward / derivative / vjp on device arrays: no copies of x, dy or the result."""
        from .backends import numba_cuda as nc
        cuda = nc._cuda()
        stream = nc.as_stream(stream)
        shape = tuple(x.shape)
        nc.check_axis(self.text, len(shape), axis, self.rowwise or bool(self.params))
        kshape = self._runner.kernel_shape(shape)
        X = nc.device_view(x, "input", kshape, stream)
        dtype = np.dtype(X.dtype)
        units = shape[-1] if shape else 1
        # parameters are small: device ones are read back and broadcast per unit like host ones
        host = {}
        for k, v in params.items():
            dev = nc.interface(v)
            host[k] = v if dev is None else nc.device_view(dev, f"parameter {k!r}").copy_to_host()
        given = {k: np.shape(v) for k, v in host.items()}
        cols = self._device_columns(self._param_args(host, units, dtype), units, stream)
        if out is not None:
            Y = self._device_like(out, "out", shape, kshape, dtype, stream)
            result = out
        else:
            Y = cuda.device_array(kshape, dtype, stream=stream)
            result = Y.reshape(*shape) if shape != kshape else Y
        if op == "forward":
            if X.size:
                self._runner.map_device("forward", X, cols, Y, stream)
            return result
        if op == "derivative":
            if X.size:
                self._runner.map_device("derivative", X, cols, Y, stream)
            return result
        G = self._device_like(dy, "dy", shape, kshape, dtype, stream)
        columns = self._runner.vjp_device(X, G, cols, Y, stream, with_params) if X.size else \
            [cuda.to_device(np.zeros(units, dtype)) for _ in cols]
        if not with_params:
            return result
        grads = self._param_grads([c.copy_to_host(stream=stream).astype(np.float64) for c in columns],
                                  given, dtype)
        stream.synchronize()
        return result, {k: cuda.to_device(np.ascontiguousarray(v)) for k, v in grads.items()}

    # -- plumbing ----------------------------------------------------------------------------------
    @staticmethod
    def _out_dtype(a: np.ndarray):
        return a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)

    def _prepare(self, x, axis, params):
        a = as_float_array(x)
        dtype = _FLOATS[a.dtype] if a.dtype in _FLOATS else np.dtype(np.float64)
        if self.rowwise and self.backend == "numpy":
            # row sums of float32 that cancel lose ~1e-7 of the row's scale, and norm:*'s eps
            # (1e-8) cannot absorb that: the reference backend does rows in float64
            dtype = np.dtype(np.float64)
        needs_axis = self.rowwise or bool(self.params)
        if needs_axis:
            if a.ndim == 0:
                if self.rowwise:
                    raise ParameterError(f"{self.text!r} is row-wise and needs an array with at "
                                         "least one axis, not a scalar")
                a_view = a.reshape(1)
            else:
                a_view = a
            if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
                raise ParameterError(f"axis must be an int, not {axis!r}")
            if not -a_view.ndim <= axis < a_view.ndim:
                raise ParameterError(f"axis {axis} is out of range for an array with "
                                     f"{a_view.ndim} dimension(s)")
            axis = int(axis) % a_view.ndim
            xt = np.moveaxis(a_view, axis, -1).astype(dtype, copy=False)
        else:
            axis = None
            xt = a.astype(dtype, copy=False)
        units = xt.shape[-1] if xt.ndim else 1
        args = [dtype.type(units)]
        args += self._param_args(params, units, dtype)
        return a, xt, axis, args

    def _param_args(self, params: dict, units: int, dtype) -> list:
        expected = {p.name for p in self.params}
        extra = [k for k in params if k not in expected]
        if extra:
            hint = close_names(extra[0], expected)
            known = ", ".join(sorted(expected)) or "none"
            raise ParameterError(f"{self.text!r} has no parameter {extra[0]!r}"
                                 + (f"; did you mean {hint[0]!r}?" if hint else
                                    f"; its parameters: {known}"))
        args = []
        for p in self.params:
            if p.name not in params:
                raise ParameterError(
                    f"{self.text!r} needs parameter {p.name!r} ({p.description or 'learnable'}), "
                    f"shape {(units, *p.shape)}; kernel.init_params({units}) gives the defaults")
            value = params[p.name]
            arr = _cast(as_float_array(value, f"parameter {p.name!r}"), dtype)
            full_shape = (units, *p.shape)
            if arr.shape not in {(), full_shape, tuple(p.shape)} or arr.ndim > len(full_shape):
                raise ParameterError(
                    f"parameter {p.name!r} has shape {arr.shape}; expected {full_shape} "
                    f"(one per unit{', per piece' if p.shape else ''})"
                    + (f", {tuple(p.shape)} (the same for every unit)" if p.shape else "")
                    + " or a single number")
            full = np.broadcast_to(arr, full_shape)
            if p.shape:
                args += [full[:, i] for i in range(p.shape[0])]
            else:
                args.append(full)
        return args

    def _finish(self, y, xt: np.ndarray, axis, a: np.ndarray):
        y = np.asarray(y)
        if y.shape != xt.shape or y.dtype != xt.dtype:
            full = np.empty(xt.shape, xt.dtype)
            with np.errstate(over="ignore", under="ignore"):
                full[...] = y
            y = full
        if axis is not None:
            y = np.moveaxis(y, -1, axis)
            if a.ndim == 0:
                y = y.reshape(())
        return _cast(y, self._out_dtype(a))


def _fast_out_ok(out, x: np.ndarray, *inputs) -> bool:
    """Whether the small-array path may write into ``out``: none given, or one of x's shape that
    is the inputs themselves or apart from them (a partial overlap goes the general way)."""
    if out is None:
        return True
    if type(out) is not np.ndarray or out.shape != x.shape:
        return False
    # out=x itself is fine (each element is read before it is written); any other sharing, the
    # very same elements through another view included, goes the general way, which tells the
    # two apart (_overlaps: 0.6 µs where may_share_memory takes 0.25)
    if out is not x and np.may_share_memory(out, x):
        return False
    for a in inputs:
        if a.shape != x.shape or (a is not out and np.may_share_memory(out, a)):
            return False
    return True


def _overlaps(out: np.ndarray, *inputs: np.ndarray) -> bool:
    """Whether ``out`` shares memory with an input other than as the very same elements (``out=x``
    exactly, which the kernels handle: each element is read before it is written). Such a
    partial overlap is computed into a new array and copied, so the result is as if the input
    were read first, as NumPy's ufuncs promise."""
    view = out.reshape(inputs[0].shape)
    for a in inputs:
        if not np.may_share_memory(view, a):
            continue
        same = (view.__array_interface__["data"][0] == a.__array_interface__["data"][0]
                and view.strides == a.strides and view.dtype == a.dtype)
        if not same:
            return True
    return False


def _cast(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` as ``dtype``: a value beyond the narrower type's range becomes ±inf, and one below
    its smallest normal a subnormal or ±0, as correctly rounded casts give, without NumPy's
    floating-point warnings about them (NaN stays NaN)."""
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return a.astype(dtype)


def _check_out(out, shape: tuple, dtype) -> None:
    if not isinstance(out, np.ndarray):
        raise ParameterError(f"out must be a NumPy array, not {type(out).__name__}")
    if out.shape != shape:
        raise ParameterError(f"out has shape {out.shape}; the result has shape {shape}")
    if out.dtype != dtype:
        raise ParameterError(f"out has dtype {out.dtype}; the result has dtype {dtype}")
    if not out.flags.writeable:
        raise ParameterError("out is read-only")


def _sum_to(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a (units, ...) gradient down to the shape the user passed the parameter in."""
    if grad.shape == tuple(shape):
        return grad
    if len(shape) == 0:
        return np.asarray(grad.sum())
    return grad.sum(axis=0)  # (k,) given for a (units, k) parameter


def _safe_key(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]

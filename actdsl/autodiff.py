"""``Kernel.jvp``, ``Kernel.vjp_vjp`` and second derivatives (docs/autodiff.md).

A mixin of :class:`actdsl.compiler.Kernel`: it uses the kernel's array checks (``_prepare``,
``_param_args``, ``_finish``) and adds the code that computes forward-mode and second-order
derivatives, generated from the same plan as the VJP (``actdsl/tangent.py``) and built only when
first asked for.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np

from .errors import ActdslError, ParameterError

_lock = threading.Lock()


class AutodiffMixin:
    """Forward mode and second order for a compiled kernel."""

    # -- public ------------------------------------------------------------------------------
    def jvp(self, x, dx, axis: int = -1, dparams: dict | None = None, **params):
        """J·dx, the forward-mode derivative (dy for a change dx of x), on x's shape and dtype.
        ``dparams``: tangents of the learnable parameters (same shapes as the parameters);
        missing ones are zero. Row-wise specs carry each row reduction's tangent forward."""
        self._host_only("jvp", x)
        a, xt, axis, args = self._prepare(x, axis, params)
        v = self._like(dx, "dx", a, xt, axis)
        if xt.size == 0:
            return np.empty(a.shape, self._out_dtype(a))
        tangents = self._tangent_columns(dparams, xt, args)
        if self.backend == "numba":
            y = self._numba_tangent().jvp(xt, v, args, tangents)
        else:  # numpy, and cuda on host arrays: the NumPy code of the plan
            y = self._tangent_code()["jvp"](xt, v, *args, *tangents)
        return self._finish(y, xt, axis, a)

    def vjp_vjp(self, x, dy, ddx, axis: int = -1, ddparams: dict | None = None,
                with_params: bool = False, **params):
        """The VJP of ``(x, dy) -> vjp(x, dy)`` for the cotangent ``ddx`` (and ``ddparams`` for the
        parameter gradients): returns ``(d_x, d_dy)``, and with ``with_params`` a third item, the
        parameters' part. ``d_x = Σ_i dy_i H_i ddx`` is the exact Hessian-vector product of
        ``⟨dy, y⟩`` (every H_i is symmetric), ``d_dy = J ddx`` (forward mode). Computed in float64
        by the NumPy code of the plan on every backend; returned in x's dtype."""
        from .compiler import _cast
        self._host_only("vjp_vjp", x)
        given = {k: np.shape(v) for k, v in params.items()}
        a, xt, axis, args = self._prepare(np.asarray(x, np.float64) if _floatish(x) else x,
                                          axis, params)
        g = self._like(dy, "dy", a, xt, axis)
        v = self._like(ddx, "ddx", a, xt, axis)
        dtype = self._out_dtype(np.asarray(x))
        if xt.size == 0:
            empty = np.empty(a.shape, dtype)
            grads = {p.name: np.zeros(given[p.name], dtype) for p in self.params}
            return (empty, empty.copy(), grads) if with_params else (empty, empty.copy())
        tangents = self._tangent_columns(ddparams, xt, args)
        _, dz_d, dps = self._tangent_code()["vjp_jvp"](xt, g, v, np.zeros_like(xt), *args, *tangents)
        d_x = _cast(self._finish(dz_d, xt, axis, a), dtype)  # (past float32's range: ±inf)
        d_dy = self._tangent_code()["jvp"](xt, v, *args, *tangents)
        d_dy = _cast(self._finish(d_dy, xt, axis, a), dtype)
        if not with_params:
            return d_x, d_dy
        units = xt.shape[-1] if xt.ndim else 1
        sums = [np.sum(np.broadcast_to(d, xt.shape).reshape(-1, units), axis=0) for _, d in dps]
        return d_x, d_dy, self._param_grads(sums, given, dtype)

    def _second_derivative(self, x, axis, stream, params):
        """g''(x) of an elementwise spec, by the backend's derivative code for a plan whose
        output is g' and whose derivative is g''."""
        if self.rowwise:
            raise ActdslError(f"{self.text!r} is row-wise: it has no elementwise second "
                              "derivative; use vjp_vjp(x, dy, ddx) for Hessian-vector products")
        with _lock:
            second = self.__dict__.get("_second")
            if second is None:  # (code for new derivatives: bounded like a compile)
                from .compiler import _bounded
                second = self._second = _bounded(self._make_second)
        return second.derivative(x, axis=axis, stream=stream, order=1, **params)

    # -- plumbing ----------------------------------------------------------------------------
    def _make_second(self):
        from . import tangent
        from .compiler import _backend_module, _safe_key
        plan = dataclasses.replace(self.plan, out=self.plan.dout_dz,
                                   dout_dz=tangent.second_derivative(self.plan))
        # a copy of this kernel whose derivative code computes g'': the frontend's checks and
        # device handling are the same
        second = object.__new__(type(self))
        second.__dict__.update(self.__dict__)
        second.plan = plan
        second.source, second._runner = _backend_module(self.backend).build(
            plan, _safe_key(self.text + "\x00second"))
        second._columns_on_device = type(self._columns_on_device)()
        return second

    def _host_only(self, what: str, x):
        from .compiler import _lazy_kind, _on_cuda
        if _lazy_kind(x) is not None:
            raise ActdslError(f"{what} takes NumPy arrays; call it on blocks (dask's map_blocks) "
                              "or compute the array first")
        on_device = _on_cuda(x)
        if self.backend == "cuda" and not on_device:
            from .backends.numba_cuda import interface
            on_device = interface(x) is not None
        if on_device:
            raise ActdslError(f"{what} runs on the host in this version: copy the device array to "
                              "the host (or use backend='numba')")

    def _like(self, value, what, a, xt, axis):
        from .compiler import as_float_array
        arr = as_float_array(value, what)
        if arr.shape != a.shape:
            raise ParameterError(f"{what} has shape {arr.shape} but x has shape {a.shape}")
        if axis is not None:
            arr = np.moveaxis(arr.reshape(1) if a.ndim == 0 else arr, axis, -1)
        return np.ascontiguousarray(arr, dtype=xt.dtype)

    def _tangent_columns(self, tangents, xt, args) -> list:
        """Parameter tangents as columns, like the parameters (zeros where not given)."""
        if not self.params:
            if tangents:
                raise ParameterError(f"{self.text!r} has no parameters to take tangents of")
            return []
        tangents = dict(tangents or {})
        units = xt.shape[-1] if xt.ndim else 1
        full = {p.name: tangents.pop(p.name, 0.0) for p in self.params}
        if tangents:
            raise ParameterError(f"{self.text!r} has no parameter {next(iter(tangents))!r} "
                                 "(in dparams)")
        return self._param_args(full, units, xt.dtype)

    def _numba_tangent(self):
        with _lock:
            runner = self.__dict__.get("_numba_jvp")
            if runner is None:
                from .backends.numba_tangent import TangentRunner
                from .compiler import _bounded, _safe_key
                runner = self._numba_jvp = _bounded(
                    lambda: TangentRunner(self._runner, self.plan, _safe_key(self.text)))
        return runner

    def _tangent_code(self) -> dict:
        with _lock:
            code = self.__dict__.get("_tangent")
            if code is None:
                from .backends import numpy_tangent
                from .compiler import _bounded, _safe_key
                _, code = _bounded(lambda: numpy_tangent.build(self.plan, _safe_key(self.text)))
                self._tangent = code
        return code


def _floatish(x) -> bool:
    try:
        return np.asarray(x).dtype.kind in "fiub"
    except Exception:
        return False

"""Compiled activations on Dask arrays and xarray DataArrays, lazily.

Elementwise specs map over blocks (any chunking; parameters broadcast along ``axis``). Row-wise
specs, and specs with per-unit parameters, need each row in one block: they go through
``dask.array.apply_gufunc`` with the row axis as the core dimension, and a row axis split over
several chunks is an error that says how to rechunk. The kernel pickles as its spec, so the graph
runs on ``dask.distributed`` workers in other processes. A DataArray goes through
``xarray.apply_ufunc`` (``axis`` may be a dimension name), keeping its coordinates, and stays
lazy when it holds a Dask array.
"""
from __future__ import annotations

import functools

import numpy as np

from .errors import ActdslError, ParameterError


def _out_dtype(x):
    return x.dtype if np.dtype(x.dtype).kind == "f" else np.dtype(np.float64)


def _axis(x, axis) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise ParameterError(f"axis must be an int for a Dask array, not {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ParameterError(f"axis {axis} is out of range for an array with {x.ndim} dimension(s)")
    return int(axis) % x.ndim


def _whole_rows(kernel, x, axis: int) -> None:
    if x.numblocks[axis] != 1:
        raise ActdslError(
            f"{kernel.text!r} needs each row whole, but axis {axis} of this Dask array is split "
            f"into {x.numblocks[axis]} chunks {x.chunks[axis]}: rechunk it first, e.g. "
            f"x.rechunk({{{axis}: -1}})")


def _needs_rows(kernel) -> bool:
    return kernel.rowwise or bool(kernel.params)


def _small(params: dict) -> dict:
    """Parameters are small: computed and passed to every block as NumPy arrays."""
    out = {}
    for k, v in params.items():
        if hasattr(v, "compute"):
            v = v.compute()
        out[k] = np.asarray(v)
    return out


def _gufunc(func, x, axis, dtype, *more):
    import dask.array as da
    sig = ",".join(["(n)"] * (1 + len(more))) + "->(n)"
    return da.apply_gufunc(func, sig, x, *more, axes=[(axis,)] * (1 + len(more)) + [(axis,)],
                           output_dtypes=dtype, allow_rechunk=False)


def _dask_map(method, kernel, x, axis, params):
    """``method`` (kernel.__call__ or kernel.derivative) over blocks, or over whole rows."""
    params = _small(params)
    dtype = _out_dtype(x)
    if not _needs_rows(kernel):
        return x.map_blocks(functools.partial(method, **params), dtype=dtype)
    axis = _axis(x, axis)
    _whole_rows(kernel, x, axis)
    return _gufunc(functools.partial(method, axis=-1, **params), x, axis, dtype)


def _vjp_block(kernel, params, x, g):
    return kernel.vjp(x, g, axis=-1, **params)


def _dask_vjp(kernel, x, dy, axis, params):
    import dask.array as da
    params = _small(params)
    dtype = _out_dtype(x)
    dy = da.asarray(dy)
    if dy.shape != x.shape:
        raise ParameterError(f"dy has shape {dy.shape} but x has shape {x.shape}")
    if not _needs_rows(kernel):
        dy = dy.rechunk(x.chunks)
        return da.map_blocks(functools.partial(kernel.vjp, **params), x, dy, dtype=dtype)
    axis = _axis(x, axis)
    _whole_rows(kernel, x, axis)
    dy = dy.rechunk(x.chunks)
    return _gufunc(functools.partial(_vjp_block, kernel, params), x, axis, dtype, dy)


def apply(kernel, op, kind, x, axis, out, params, dy=None, with_params=False):
    """``op`` ("forward", "derivative" or "vjp") of ``kernel`` on a Dask array or DataArray."""
    if out is not None:
        raise ParameterError("out= is for NumPy arrays; a Dask or xarray result is a new lazy array")
    if op == "vjp":
        return _vjp(kernel, kind, x, dy, axis, with_params, params)
    method = kernel.__call__ if op == "forward" else kernel.derivative
    if kind == "dask":
        return _dask_map(method, kernel, x, axis, params)
    return _xarray(kernel, x, axis, lambda a, ax: method(a, axis=ax, **params))


def _vjp(kernel, kind, x, dy, axis, with_params, params):
    if with_params:
        raise ParameterError("Dask and xarray inputs give dL/dx lazily; for parameter gradients "
                             "(a sum over the whole batch) call vjp on NumPy blocks and add them")
    if kind == "dask":
        return _dask_vjp(kernel, x, dy, axis, params)
    import xarray as xr
    dim = _dim(x, axis)
    core = [[dim], [dim]] if _needs_rows(kernel) else [[], []]
    return xr.apply_ufunc(lambda a, g: kernel.vjp(a, g, axis=-1, **params), x, dy,
                          input_core_dims=core, output_core_dims=[core[0]], dask="allowed")


def _dim(x, axis):
    if isinstance(axis, str):
        if axis not in x.dims:
            raise ParameterError(f"{axis!r} is not a dimension of this DataArray {x.dims}")
        return axis
    return x.dims[_axis(x, axis)]


def _xarray(kernel, x, axis, fn):
    import xarray as xr
    if _needs_rows(kernel):
        dim = _dim(x, axis)
        return xr.apply_ufunc(lambda a: fn(a, -1), x, input_core_dims=[[dim]],
                              output_core_dims=[[dim]], dask="allowed")
    return xr.apply_ufunc(lambda a: fn(a, -1), x, dask="allowed")

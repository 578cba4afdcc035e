"""JAX integration (optional extra ``jax``): a spec as ``jax.numpy`` code with a ``custom_vjp``
from actdsl's exact derivative. Works under ``jit``, ``grad`` and ``vmap``.

    f = actdsl.jax.function("tanh+norm:z")
    y = f(x)                              # x: (..., n) jax array; axis=-1 is the row axis
    g = jax.grad(lambda x: f(x).sum())(x)

The code is the NumPy backend's generated source (checked to hold only the compiler's words),
executed with ``jax.numpy`` in place of NumPy and the NumPy backend's runtime made over
``jax.numpy``.
"""
from __future__ import annotations

import contextlib
import types

try:
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("actdsl.jax needs JAX: pip install jax") from e

from .backends import numpy as _numpy_backend
from .backends.numpy_runtime import make as make_runtime
from .cache import source_key
from .compiler import compile as _compile
from .errors import ActdslError


class _Numpy(types.SimpleNamespace):
    """``np`` for the generated source: jax.numpy, with a no-op errstate."""

    def __getattr__(self, name):
        return getattr(jnp, name)

    @staticmethod
    def errstate(**kwargs):
        return contextlib.nullcontext()


RUNTIME = make_runtime(jnp, jsp.erf, jsp.erfc)


def function(spec: str, axis: int = -1):
    """``f(x, **params)``: ``spec`` on a JAX array, differentiable with actdsl's exact VJP.
    Parameters take the shapes ``Kernel`` takes: (units,), (units, pieces), (pieces,) or scalars."""
    k = _compile(spec)
    ns = _numpy_backend.load(k.source, source_key(k.source), xp=_Numpy(), runtime=RUNTIME,
                             tag="jax")
    params = list(k.params)
    names = tuple(p.name for p in params)

    def columns(values, units, dtype):
        cols = []
        for p, v in zip(params, values):
            full = jnp.broadcast_to(jnp.asarray(v, dtype), (units, *p.shape))
            cols += [full[:, i] for i in range(p.shape[0])] if p.shape else [full]
        return cols

    def run(name, x, values, *extra):
        xt = jnp.moveaxis(x, axis, -1)
        units = xt.shape[-1] if xt.ndim else 1
        cols = columns(values, units, xt.dtype)
        return xt, units, cols, ns[name](xt, *extra, xt.dtype.type(units), *cols)

    @jax.custom_vjp
    def apply(x, values):
        xt, _, _, y = run("forward", x, values)
        return jnp.moveaxis(jnp.broadcast_to(y, xt.shape).astype(xt.dtype), -1, axis)

    def fwd(x, values):
        return apply(x, values), (x, values)

    def bwd(res, g):
        x, values = res
        gt = jnp.moveaxis(g, axis, -1)
        xt, units, _, (dz, dps) = run("vjp", x, values, gt)
        dx = jnp.moveaxis(jnp.broadcast_to(dz, xt.shape).astype(xt.dtype), -1, axis)
        grads, i = [], 0
        for p, v in zip(params, values):
            cols = [jnp.sum(jnp.broadcast_to(d, xt.shape).reshape(-1, units), axis=0)
                    for d in dps[i:i + len(p.symbols)]]
            i += len(p.symbols)
            full = jnp.stack(cols, axis=-1) if p.shape else cols[0]
            shape = jnp.shape(v)
            if shape == full.shape:
                grads.append(full.astype(jnp.result_type(v)))
            elif shape == ():
                grads.append(jnp.sum(full).astype(jnp.result_type(v)))
            else:
                grads.append(jnp.sum(full, axis=0).reshape(shape).astype(jnp.result_type(v)))
        return dx, tuple(grads)

    apply.defvjp(fwd, bwd)

    def f(x, **kwargs):
        missing = [n for n in names if n not in kwargs]
        extra = [n for n in kwargs if n not in names]
        if missing or extra:
            raise ActdslError(f"{k.text!r} takes parameters {list(names)}; missing {missing}, "
                              f"unexpected {extra}")
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        return apply(x, tuple(jnp.asarray(kwargs[n], x.dtype) for n in names))

    f.__name__ = f"actdsl_{k.text}"
    f.__doc__ = f"actdsl activation {k.text!r} for JAX (custom VJP from actdsl's exact derivative)."
    return f

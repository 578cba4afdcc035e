"""JAX integration (optional extra ``jax``: ``import actdsl.jax`` explicitly): a spec as
``jax.numpy`` code with a ``jax.custom_jvp`` from actdsl's exact forward-mode derivative, so
``grad``, ``jvp``, ``vjp``, ``jacfwd``, ``jacrev``, ``hessian``, ``jit`` and ``vmap`` all work.

    import actdsl.jax
    f = actdsl.jax.function("tanh+norm:z")
    y = f(x)                              # x: (..., n) jax array; axis=-1 is the row axis
    g = jax.grad(lambda x: f(x).sum())(x)
    H = jax.hessian(lambda x: f(x).sum())(x)

The code is the NumPy backend's generated source (the forward, and the JVP of
``backends/numpy_tangent.py``; checked to hold only the compiler's words), executed with
``jax.numpy`` in place of NumPy and the NumPy backend's runtime made over ``jax.numpy``. Reverse
mode is JAX's transpose of the (linear) JVP. Second and higher derivatives are JAX's derivatives
of the JVP's code: its stable primitives (sigmoid, softplus, ...) carry their own exact
``custom_jvp`` rules, so these are exact too, kinks aside (there JAX's own conventions apply).
"""
from __future__ import annotations

import contextlib
import math
import types

try:
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("actdsl.jax needs JAX: pip install jax") from e

from .backends import numpy as _numpy_backend, numpy_tangent as _tangent_backend
from .backends.numpy_runtime import make as make_runtime
from .cache import source_key
from .compiler import _bounded, compile as _compile
from .errors import ActdslError


class _Numpy(types.SimpleNamespace):
    """``np`` for the generated source: jax.numpy, with a no-op errstate."""

    def __getattr__(self, name):
        return getattr(jnp, name)

    @staticmethod
    def errstate(**kwargs):
        return contextlib.nullcontext()


def _exact(f, derivative):
    """``f`` with the JVP ``derivative(x) · ẋ`` (JAX differentiates ``derivative`` in turn)."""
    g = jax.custom_jvp(f)
    g.defjvp(lambda primals, tangents: (g(primals[0]), derivative(primals[0]) * tangents[0]))
    return g


def _runtime():
    rt = make_runtime(jnp, jsp.erf, jsp.erfc)
    # the runtime's stable formulas branch on the sign (exp(-|x|)): JAX's derivative of |x| at
    # 0 is 0, so derivatives of them would be wrong at 0; these rules are the exact ones
    rt.sigmoid = sigmoid = _exact(rt.sigmoid, lambda x: sigmoid(x) * sigmoid(-x))
    rt.softplus = _exact(rt.softplus, sigmoid)
    rt.softsign = _exact(rt.softsign, lambda x: 1 / (1 + jnp.abs(x)) ** 2)
    rt.tanhshrink = _exact(rt.tanhshrink, lambda x: jnp.tanh(x) ** 2)
    rt.sech = sech = _exact(rt.sech, lambda x: -sech(x) * jnp.tanh(x))
    rt.ncdf = _exact(rt.ncdf, lambda x: jnp.exp(-x * x / 2) / math.sqrt(2 * math.pi))
    shifted = jax.custom_jvp(rt.shifted)
    shifted.defjvp(lambda p, t: (shifted(*p), t[0] - t[1]))
    rt.shifted = shifted
    return rt


RUNTIME = _runtime()


def function(spec: str, axis: int = -1):
    """``f(x, **params)``: ``spec`` on a JAX array, differentiable in every mode with actdsl's
    exact derivatives. Parameters take the shapes ``Kernel`` takes: (units,), (units, pieces),
    (pieces,) or scalars (one value shared by every unit)."""
    k = _compile(spec)
    ns = _numpy_backend.load(k.source, source_key(k.source), xp=_Numpy(), runtime=RUNTIME,
                             tag="jax")
    tangent_source = _bounded(lambda: _tangent_backend.generate(k.plan))
    tns = _numpy_backend.load(tangent_source, source_key(tangent_source), xp=_Numpy(),
                              runtime=RUNTIME, tag="jax-tangent")
    params = list(k.params)
    names = tuple(p.name for p in params)

    def columns(values, units, dtype):
        cols = []
        for p, v in zip(params, values):
            full = jnp.broadcast_to(jnp.asarray(v, dtype), (units, *p.shape))
            cols += [full[:, i] for i in range(p.shape[0])] if p.shape else [full]
        return cols

    def finish(y, xt):
        return jnp.moveaxis(jnp.broadcast_to(y, xt.shape).astype(xt.dtype), -1, axis)

    @jax.custom_jvp
    def apply(x, values):
        xt = jnp.moveaxis(x, axis, -1)
        units = xt.shape[-1] if xt.ndim else 1
        y = ns["forward"](xt, xt.dtype.type(units), *columns(values, units, xt.dtype))
        return finish(y, xt)

    @apply.defjvp
    def apply_jvp(primals, tangents):
        x, values = primals
        dx, dvalues = tangents
        xt = jnp.moveaxis(x, axis, -1)
        vt = jnp.moveaxis(jnp.broadcast_to(dx, x.shape).astype(x.dtype), axis, -1)
        units = xt.shape[-1] if xt.ndim else 1
        n = xt.dtype.type(units)
        cols = columns(values, units, xt.dtype)
        dcols = columns(dvalues, units, xt.dtype)
        return apply(x, values), finish(tns["jvp"](xt, vt, n, *cols, *dcols), xt)

    def f(x, **kwargs):
        missing = [n for n in names if n not in kwargs]
        extra = [n for n in kwargs if n not in names]
        if missing or extra:
            raise ActdslError(f"{k.text!r} takes parameters {list(names)}; missing {missing}, "
                              f"unexpected {extra}")
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        values = tuple(jnp.asarray(kwargs[n], x.dtype) for n in names)
        if x.ndim == 0:
            if k.rowwise:
                raise ActdslError(f"{k.text!r} is row-wise: it needs an array with a row axis, "
                                  "not a scalar")
            return apply(x.reshape(1), values).reshape(())
        return apply(x, values)

    f.__name__ = f"actdsl_{k.text}"
    f.__doc__ = f"actdsl activation {k.text!r} for JAX (custom JVP from actdsl's exact derivative)."
    return f

"""The peers actdsl is measured against, written by hand from the seed table (not from actdsl).

Each peer maps a spec to ``(forward, backward)`` callables ``f(x, p)`` and ``b(x, g, p)`` where
``p`` holds the parameters; a peer that cannot express a spec leaves it out.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-8


# -- hand-written NumPy --------------------------------------------------------------------------
def _np_table():
    def mean(a):
        return a.mean(axis=-1, keepdims=True)

    def sig(a):
        return 1 / (1 + np.exp(-a))

    def softmax(a):
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def softmax_b(x, g):
        y = softmax(x)
        return y * (g - (g * y).sum(axis=-1, keepdims=True))

    def norm_z(x):
        u = x - mean(x)
        return u / (np.sqrt(mean(u * u)) + EPS)

    def norm_z_b(x, g):
        u = x - mean(x)
        s = np.sqrt(mean(u * u))
        d = s + EPS
        n = x.shape[-1]
        return (g - mean(g)) / d - u * (g * u).sum(axis=-1, keepdims=True) / (n * np.maximum(s, 1e-300) * d * d)

    def norm_std_b(x, g):
        u = x - mean(x)
        s = np.sqrt(mean(u * u))
        d = s + EPS
        n = x.shape[-1]
        return g / d - u * (g * x).sum(axis=-1, keepdims=True) / (n * np.maximum(s, 1e-300) * d * d)

    def norm_max_b(x, g):
        a = np.abs(x)
        i = a.argmax(axis=-1)[..., None]
        m = np.take_along_axis(a, i, axis=-1) + EPS
        dx = g / m
        corr = -(g * x).sum(axis=-1, keepdims=True) / (m * m) * np.sign(np.take_along_axis(x, i, -1))
        np.put_along_axis(dx, i, np.take_along_axis(dx, i, -1) + corr, axis=-1)
        return dx

    t = {
        "linear": (lambda x, p: x.copy(), lambda x, g, p: g.copy()),
        "sigmoid": (lambda x, p: sig(x), lambda x, g, p: g * sig(x) * (1 - sig(x))),
        "tanh": (lambda x, p: np.tanh(x), lambda x, g, p: g * (1 - np.tanh(x) ** 2)),
        "softplus": (lambda x, p: np.logaddexp(0, x), lambda x, g, p: g * sig(x)),
        "softmax": (lambda x, p: softmax(x), lambda x, g, p: softmax_b(x, g)),
        "relu": (lambda x, p: np.maximum(x, 0), lambda x, g, p: g * (x > 0)),
        "trel": (lambda x, p: np.clip(x, 0, 1), lambda x, g, p: g * ((x > 0) & (x < 1))),
        "trec": (lambda x, p: np.where(x > 1, x, 0), lambda x, g, p: g * (x > 1)),
        "tlin": (lambda x, p: np.where(np.abs(x) > 1, x, 0), lambda x, g, p: g * (np.abs(x) > 1)),
        "rect:min": (lambda x, p: np.minimum(x, 1), lambda x, g, p: g * (x < 1)),
        "norm:mean": (lambda x, p: x - mean(x), lambda x, g, p: g - mean(g)),
        "norm:max": (lambda x, p: x / (np.abs(x).max(axis=-1, keepdims=True) + EPS),
                     lambda x, g, p: norm_max_b(x, g)),
        "norm:std": (lambda x, p: x / (x.std(axis=-1, keepdims=True) + EPS),
                     lambda x, g, p: norm_std_b(x, g)),
        "norm:z": (lambda x, p: norm_z(x), lambda x, g, p: norm_z_b(x, g)),
        "prelu": (lambda x, p: np.where(x > 0, x, p["r"] * x),
                  lambda x, g, p: g * np.where(x > 0, 1, p["r"])),
        "lgrelu": (lambda x, p: np.where(x > 0, p["g"] * x, p["r"] * x),
                   lambda x, g, p: g * np.where(x > 0, p["g"], p["r"])),
        "maxout:3": (lambda x, p: (x[..., None] * p["m"] + p["b"]).max(axis=-1),
                     lambda x, g, p: g * np.take_along_axis(
                         np.broadcast_to(p["m"], x.shape + p["m"].shape[-1:]),
                         (x[..., None] * p["m"] + p["b"]).argmax(axis=-1)[..., None], -1)[..., 0]),
        "tanh+norm:z": (lambda x, p: norm_z(np.tanh(x)),
                        lambda x, g, p: norm_z_b(np.tanh(x), g) * (1 - np.tanh(x) ** 2)),
        "softplus+norm:z": (lambda x, p: norm_z(np.logaddexp(0, x)),
                            lambda x, g, p: norm_z_b(np.logaddexp(0, x), g) * sig(x)),
        "relu+softmax": (lambda x, p: softmax(np.maximum(x, 0)),
                         lambda x, g, p: softmax_b(np.maximum(x, 0), g) * (x > 0)),
    }
    t["logistic"], t["rect:max"] = t["sigmoid"], t["relu"]
    return t


NUMPY = _np_table()


# -- PyTorch eager (autograd for the backward) ---------------------------------------------------
def torch_forwards():
    """spec -> f(x, p), plain PyTorch (autograd records it where grad is enabled)."""
    import torch
    import torch.nn.functional as F

    def norm_z(a):
        u = a - a.mean(-1, keepdim=True)
        return u / (a.std(-1, unbiased=False, keepdim=True) + EPS)

    fwd = {
        "linear": lambda x, p: x.clone(), "sigmoid": lambda x, p: torch.sigmoid(x),
        "tanh": lambda x, p: torch.tanh(x), "softplus": lambda x, p: F.softplus(x),
        "softmax": lambda x, p: F.softmax(x, dim=-1), "relu": lambda x, p: F.relu(x),
        "trel": lambda x, p: F.hardtanh(x, 0.0, 1.0), "trec": lambda x, p: F.threshold(x, 1.0, 0.0),
        "tlin": lambda x, p: torch.where(x.abs() > 1, x, torch.zeros_like(x)),
        "rect:min": lambda x, p: torch.clamp(x, max=1.0),
        "norm:mean": lambda x, p: x - x.mean(-1, keepdim=True),
        "norm:max": lambda x, p: x / (x.abs().amax(-1, keepdim=True) + EPS),
        "norm:std": lambda x, p: x / (x.std(-1, unbiased=False, keepdim=True) + EPS),
        "norm:z": lambda x, p: norm_z(x),
        "prelu": lambda x, p: F.prelu(x, p["r"]),
        "lgrelu": lambda x, p: torch.where(x > 0, p["g"] * x, p["r"] * x),
        "maxout:3": lambda x, p: (x[..., None] * p["m"] + p["b"]).amax(-1),
        "tanh+norm:z": lambda x, p: norm_z(torch.tanh(x)),
        "softplus+norm:z": lambda x, p: norm_z(F.softplus(x)),
        "relu+softmax": lambda x, p: F.softmax(F.relu(x), dim=-1),
        "gelu": lambda x, p: F.gelu(x), "silu": lambda x, p: F.silu(x),
    }
    fwd["logistic"], fwd["rect:max"] = fwd["sigmoid"], fwd["relu"]
    return fwd


def torch_table():
    import torch

    torch.set_grad_enabled(True)
    fwd = torch_forwards()

    def make(f):
        def forward(x, p):
            with torch.no_grad():
                return f(x, p)

        def backward(x, g, p):
            xr = x.detach().requires_grad_(True)
            (dx,) = torch.autograd.grad(f(xr, p), xr, g)
            return dx
        return forward, backward

    return {k: make(f) for k, f in fwd.items()}


# -- JAX jit -------------------------------------------------------------------------------------
def jax_table(dtype=np.float32):
    import jax
    import jax.numpy as jnp
    if np.dtype(dtype) == np.float64:
        # without this JAX silently computes float64 inputs in float32
        jax.config.update("jax_enable_x64", True)

    def norm_z(a):
        u = a - a.mean(-1, keepdims=True)
        return u / (jnp.sqrt((u * u).mean(-1, keepdims=True)) + EPS)

    fwd = {
        "linear": lambda x, p: x, "sigmoid": lambda x, p: jax.nn.sigmoid(x),
        "tanh": lambda x, p: jnp.tanh(x), "softplus": lambda x, p: jax.nn.softplus(x),
        "softmax": lambda x, p: jax.nn.softmax(x, axis=-1), "relu": lambda x, p: jax.nn.relu(x),
        "trel": lambda x, p: jnp.clip(x, 0, 1), "trec": lambda x, p: jnp.where(x > 1, x, 0),
        "tlin": lambda x, p: jnp.where(jnp.abs(x) > 1, x, 0),
        "rect:min": lambda x, p: jnp.minimum(x, 1),
        "norm:mean": lambda x, p: x - x.mean(-1, keepdims=True),
        "norm:max": lambda x, p: x / (jnp.abs(x).max(-1, keepdims=True) + EPS),
        "norm:std": lambda x, p: x / (x.std(-1, keepdims=True) + EPS),
        "norm:z": lambda x, p: norm_z(x),
        "prelu": lambda x, p: jnp.where(x > 0, x, p["r"] * x),
        "lgrelu": lambda x, p: jnp.where(x > 0, p["g"] * x, p["r"] * x),
        "maxout:3": lambda x, p: (x[..., None] * p["m"] + p["b"]).max(-1),
        "tanh+norm:z": lambda x, p: norm_z(jnp.tanh(x)),
        "softplus+norm:z": lambda x, p: norm_z(jax.nn.softplus(x)),
        "relu+softmax": lambda x, p: jax.nn.softmax(jax.nn.relu(x), axis=-1),
        "gelu": lambda x, p: jax.nn.gelu(x, approximate=False), "silu": lambda x, p: jax.nn.silu(x),
    }
    fwd["logistic"], fwd["rect:max"] = fwd["sigmoid"], fwd["relu"]

    def make(f):
        jf = jax.jit(f)
        jb = jax.jit(lambda x, g, p: jax.vjp(lambda v: f(v, p), x)[1](g)[0])
        return (lambda x, p: jf(x, p).block_until_ready(),
                lambda x, g, p: jb(x, g, p).block_until_ready())

    return {k: make(f) for k, f in fwd.items()}


# -- numexpr (elementwise only) ------------------------------------------------------------------
def numexpr_exprs() -> dict:
    exprs = {
        "linear": ("x", "g"), "sigmoid": ("1 / (1 + exp(-x))", "g * exp(-x) / (1 + exp(-x))**2"),
        "tanh": ("tanh(x)", "g * (1 - tanh(x)**2)"),
        "softplus": ("where(x > 0, x + log1p(exp(-x)), log1p(exp(x)))", "g / (1 + exp(-x))"),
        "relu": ("where(x > 0, x, 0)", "where(x > 0, g, 0)"),
        "trel": ("where(x < 0, 0, where(x > 1, 1, x))", "where((x > 0) & (x < 1), g, 0)"),
        "trec": ("where(x > 1, x, 0)", "where(x > 1, g, 0)"),
        "tlin": ("where(abs(x) > 1, x, 0)", "where(abs(x) > 1, g, 0)"),
        "rect:min": ("where(x < 1, x, 1)", "where(x < 1, g, 0)"),
    }
    exprs["logistic"], exprs["rect:max"] = exprs["sigmoid"], exprs["relu"]
    return exprs


def numexpr_table():
    import numexpr as ne

    out = {}
    for k, (f, b) in numexpr_exprs().items():
        out[k] = ((lambda x, p, f=f: ne.evaluate(f, local_dict={"x": x})),
                  (lambda x, g, p, b=b: ne.evaluate(b, local_dict={"x": x, "g": g})))
    return out


# -- SymPy lambdify of actdsl's symbolic form (elementwise specs) ---------------------------------
def lambdify_table(specs):
    import sympy as sp

    import actdsl
    from actdsl.ir import z
    from actdsl.stable import to_elementary

    out = {}
    for spec in specs:
        k = actdsl.compile(spec)
        if k.rowwise or k.params:
            continue
        f = sp.lambdify(z, to_elementary(k.expr), "numpy")
        d = sp.lambdify(z, to_elementary(k.derivative_expr), "numpy")
        out[spec] = ((lambda x, p, f=f: np.array(np.broadcast_to(f(x), x.shape))),  # a new array
                     (lambda x, g, p, d=d: g * d(x)))
    return out


# -- peers that write into a given array (``out=``), where they offer it --------------------------
# Each maps a spec to (forward, backward) callables f(x, p, out) and b(x, g, p, out), the
# backward None where the peer has no one-call form of it; they are timed against actdsl's out=.
def numpy_out_table():
    t = {
        "linear": (lambda x, p, out: np.copyto(out, x), lambda x, g, p, out: np.copyto(out, g)),
        "tanh": (lambda x, p, out: np.tanh(x, out=out), None),
        "softplus": (lambda x, p, out: np.logaddexp(0, x, out=out), None),
        "relu": (lambda x, p, out: np.maximum(x, 0, out=out), None),
        "trel": (lambda x, p, out: np.clip(x, 0, 1, out=out), None),
        "rect:min": (lambda x, p, out: np.minimum(x, 1, out=out), None),
    }
    t["rect:max"] = t["relu"]
    return t


def torch_out_table():
    import torch

    t = {
        "linear": (lambda x, p, out: out.copy_(x), lambda x, g, p, out: out.copy_(g)),
        "sigmoid": (lambda x, p, out: torch.sigmoid(x, out=out), None),
        "tanh": (lambda x, p, out: torch.tanh(x, out=out), None),
        "relu": (lambda x, p, out: torch.clamp(x, min=0, out=out), None),
        "trel": (lambda x, p, out: torch.clamp(x, 0, 1, out=out), None),
        "rect:min": (lambda x, p, out: torch.clamp(x, max=1, out=out), None),
        "softmax": (lambda x, p, out: torch.softmax(x, -1, out=out), None),
    }
    t["logistic"], t["rect:max"] = t["sigmoid"], t["relu"]
    return t


def numexpr_out_table():
    import numexpr as ne

    out = {}
    for k, (f, b) in numexpr_exprs().items():
        out[k] = ((lambda x, p, o, f=f: ne.evaluate(f, local_dict={"x": x}, out=o)),
                  (lambda x, g, p, o, b=b: ne.evaluate(b, local_dict={"x": x, "g": g}, out=o)))
    return out

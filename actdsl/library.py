"""The built-in activations: theanets' seed table, then those PyTorch and Keras ship.

Each entry is a SymPy definition. Branches are written so that the definition's own choice at a
kink is explicit (relu is ``0 if z <= 0 else z``: relu'(0) = 0) and so that NaN, which fails every
comparison, falls into a branch that carries it through.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from . import budget
from .ir import RowMax, RowShift, RowSum, n, row_centered, row_var_scaled
from .registry import REGISTRY, Definition, Hyper, ParamDecl
from .stable import (EVALUATED_PIECES, FirstMax, Pick, attop, times, expm1, log1p, ncdf, pow2scale, scaled, shifted, sigmoid, softplus, softsign,
                     sqrt0, tanh, tanhshrink)

Pw = sp.Piecewise


def pos(u):
    """max(0, u), selecting 0 at u = 0."""
    return Pw((0, u <= 0), (u, True))


def _evaluated(args) -> bool:
    return len(args) <= EVALUATED_PIECES and all(budget.small(a, nodes=40) for a in args)


def display_max(*args):
    """sp.Max for the displayed forms, evaluated only on few, small arguments: SymPy's evaluation
    compares its arguments pairwise (factor_terms and gcd_terms on each), which took 8 s on rect:max
    after two maxout terms, for a form only documentation reads."""
    return sp.Max(*args, evaluate=_evaluated(args))


def display_min(*args):
    return sp.Min(*args, evaluate=_evaluated(args))


def clip(u, lo, hi):
    """max(lo, min(hi, u)), selecting the bound at a tie."""
    return Pw((lo, u <= lo), (hi, u >= hi), (u, True))


def row_mean_display(u):
    """mean(u) as documentation writes it (the computed form is ``ir.row_mean``)."""
    return RowSum(u) / n


def row_std_display(u):
    return sqrt0(RowSum((u - row_mean_display(u)) ** 2) / n)


def _const(value):
    return lambda units, shape, rng: np.full((units, *shape), value, dtype=np.float64)


def _maxout_slopes(units, shape, rng):
    (k,) = shape
    m = np.tile(np.linspace(-1.0, 1.0, k) if k > 1 else np.ones(1), (units, 1))
    return m if rng is None else m + rng.normal(0.0, 0.1, size=m.shape)


def _maxout_intercepts(units, shape, rng):
    b = np.zeros((units, *shape))
    return b if rng is None else b + rng.normal(0.0, 0.1, size=b.shape)


EPS = Hyper("eps", 1e-8, positive=True, description="added to the divisor")
NORM_NOTE = ("The theanets page prints the variance E[(z-z̄)²] as the divisor; its name, theanets' "
             "code and its tests divide by the standard deviation (ddof 0), and so does actdsl.")


def _add(key, description, build, display=None, **kw):
    REGISTRY.add(Definition(key, description, build, display, **kw))


def _elementwise(key, description, f, display=None, **kw):
    """An activation with no hyper-parameters or learnable parameters."""
    _add(key, description, lambda u, h, p: f(u),
         (lambda u, h, p: display(u)) if display else None, **kw)


# --- theanets' seed table -------------------------------------------------------------------
_elementwise("linear", "linear", lambda u: u)
_elementwise("sigmoid", "logistic sigmoid", sigmoid, lambda u: 1 / (1 + sp.exp(-u)))
_elementwise("logistic", "logistic sigmoid", sigmoid, lambda u: 1 / (1 + sp.exp(-u)))
_elementwise("tanh", "hyperbolic tangent", tanh)
_elementwise("softplus", "smooth relu approximation", softplus)


def _softmax(u):
    e = sp.exp(shifted(u, RowShift(u)))
    return e / RowSum(e)


_elementwise("softmax", "categorical distribution", _softmax,
             lambda u: sp.exp(u) / RowSum(sp.exp(u)),
             note="Row-wise over `axis`, shifted by the row maximum: finite for every finite row.")
_elementwise("relu", "rectified linear", pos, lambda u: display_max(0, u))
_elementwise("trel", "truncated rectified linear", lambda u: clip(u, 0, 1),
             lambda u: display_max(0, display_min(1, u)), aliases=("rect:minmax",))
_elementwise("trec", "thresholded rectified linear", lambda u: Pw((0, u <= 1), (u, True)),
             lambda u: Pw((u, u > 1), (0, True)))
_elementwise("tlin", "thresholded linear", lambda u: Pw((0, (u >= -1) & (u <= 1)), (u, True)),
             lambda u: Pw((u, sp.Abs(u) > 1), (0, True)))
_elementwise("rect:min", "truncation", lambda u: Pw((1, u >= 1), (u, True)), lambda u: display_min(1, u))
_elementwise("rect:max", "rectification", pos, lambda u: display_max(0, u))
def _norm_mean(u):
    c, s, _ = row_centered(u)
    return s * c


def _norm_std(u, eps):
    _, s, _ = row_centered(u)
    return scaled(u, s) / (sqrt0(row_var_scaled(u)) + eps / s)


def _norm_z(u, eps):
    c, s, _ = row_centered(u)
    return c / (sqrt0(row_var_scaled(u)) + eps / s)


# Rows are divided by a power of two near their largest magnitude and shifted by their maximum
# before anything is squared or summed (ir.row_centered): [1e300, -1e300, 0] and float32
# [3e38, -3e38, 0] normalise, constant rows give exactly 0, and N(1e4, 1) loses nothing to its mean.
_elementwise("norm:mean", "mean-normalization", _norm_mean, lambda u: u - row_mean_display(u))
def _norm_max(u, eps):
    # u/(M + eps) with M = max|u|, all over a power of two s near M (exact): the VJP's (M + eps)²
    # cannot overflow (it did for rows near the largest floats), and a row holding ±inf has
    # s = M = inf, u/s = ±1 or 0, its limit. s is piecewise constant: no gradient through it.
    m = RowMax(sp.Abs(u))
    s = pow2scale(m)
    return scaled(u, s) / (scaled(m, s) + eps / s)


_add("norm:max", "max-normalization", lambda u, h, p: _norm_max(u, h["eps"]),
     lambda u, h, p: u / (RowMax(sp.Abs(u)) + h["eps"]),
     hyper=(EPS,), note="Divides by max|z| + eps (eps = 1e-8 by default).")
_add("norm:std", "variance-normalization", lambda u, h, p: _norm_std(u, h["eps"]),
     lambda u, h, p: u / (row_std_display(u) + h["eps"]), hyper=(EPS,), note=NORM_NOTE)
_add("norm:z", "z-score normalization", lambda u, h, p: _norm_z(u, h["eps"]),
     lambda u, h, p: (u - row_mean_display(u)) / (row_std_display(u) + h["eps"]), hyper=(EPS,),
     note=NORM_NOTE)

_LEAK = ParamDecl("r", _const(0.1), description="leak: slope for z < 0, one per unit (init 0.1)")
_GAIN = ParamDecl("g", _const(1.0), description="gain: slope for z > 0, one per unit (init 1)")
# as branches on the sign of z, not max(0, z) - max(0, -r z): -r z underflows to 0 for tiny
# negative z, which selected the wrong branch there. At z = 0 the zero branch, as max selects.
_add("prelu", "relu with parametric leak",
     lambda u, h, p: Pw((u, u > 0), (0, sp.Eq(u, 0)), (times(p["r"], u), True)),
     lambda u, h, p: display_max(0, u) - display_max(0, -p["r"] * u), params=(_LEAK,), aliases=("leaky-relu",),
     note="theanets also calls it leaky-relu; PyTorch's fixed-slope version is leaky_relu.")
_add("lgrelu", "relu with leak and gain",
     lambda u, h, p: Pw((times(p["g"], u), u > 0), (0, sp.Eq(u, 0)), (times(p["r"], u), True)),
     lambda u, h, p: display_max(0, p["g"] * u) - display_max(0, -p["r"] * u), params=(_GAIN, _LEAK),
     aliases=("leaky-gain-relu",))


def _pieces(u, p):
    return [mi * u + bi for mi, bi in zip(p["m"], p["b"])]


def _maxout(u, h, p):
    # times(m, u): a zero slope keeps its piece at b when u is ±inf (0 · inf would be NaN)
    pieces = [times(mi, u) + bi for mi, bi in zip(p["m"], p["b"])]
    return Pick(FirstMax(*pieces), *pieces)


_add("maxout", "piecewise linear", _maxout,
     lambda u, h, p: display_max(*_pieces(u, p)),
     hyper=(Hyper("pieces", 2, integer=True, minimum=1, maximum=64, description="linear pieces"),),
     params=(ParamDecl("m", _maxout_slopes, lambda h: (h["pieces"],),
                       "slopes, pieces per unit (init evenly spaced in [-1, 1])"),
             ParamDecl("b", _maxout_intercepts, lambda h: (h["pieces"],),
                       "intercepts, pieces per unit (init 0)")),
     count_hyper="pieces",
     note="max_i (m_i z + b_i): the theanets page drops the intercept b; its code has it.")

# --- from theanets' code, PyTorch and Keras -------------------------------------------------
ALPHA = Hyper("alpha", 1.0, description="scale of the negative branch")


def _elu(u, alpha):
    return Pw((alpha * expm1(u), u <= 0), (u, True))


_add("elu", "exponential linear", lambda u, h, p: _elu(u, h["alpha"]), hyper=(ALPHA,))
_SELU_ALPHA = sp.Float("1.6732632423543772848170429916717", 40)
_SELU_SCALE = sp.Float("1.0507009873554804934193349852946", 40)
_elementwise("selu", "scaled exponential linear", lambda u: _SELU_SCALE * _elu(u, _SELU_ALPHA))
_add("celu", "continuously differentiable exponential linear",
     lambda u, h, p: Pw((h["alpha"] * expm1(u / h["alpha"]), u <= 0), (u, True)),
     hyper=(Hyper("alpha", 1.0, positive=True, description="scale of the negative branch"),))
_add("leaky_relu", "relu with a fixed leak",
     lambda u, h, p: Pw((h["negative_slope"] * u, u <= 0), (u, True)),
     lambda u, h, p: display_max(0, u) + h["negative_slope"] * display_min(0, u),
     hyper=(Hyper("negative_slope", 0.01, description="slope for z < 0"),))
_elementwise("relu6", "relu capped at 6", lambda u: clip(u, 0, 6), lambda u: display_min(display_max(0, u), 6))
_add("hardtanh", "hard hyperbolic tangent", lambda u, h, p: clip(u, h["min_val"], h["max_val"]),
     lambda u, h, p: display_max(h["min_val"], display_min(h["max_val"], u)),
     hyper=(Hyper("min_val", -1.0), Hyper("max_val", 1.0)),
     extra={"check": lambda h: None if h["min_val"] < h["max_val"] else
            f"min_val ({h['min_val']:g}) must be below max_val ({h['max_val']:g})"})
_elementwise("hardsigmoid", "hard sigmoid", lambda u: clip(u, -3, 3) / 6 + sp.Rational(1, 2),
             lambda u: display_max(0, display_min(1, u / 6 + sp.Rational(1, 2))))
_elementwise("hardswish", "hard swish", lambda u: u * (clip(u, -3, 3) / 6 + sp.Rational(1, 2)),
             lambda u: u * display_max(0, display_min(1, u / 6 + sp.Rational(1, 2))),
             aliases=("hard_silu",))
_elementwise("silu", "sigmoid-weighted linear", lambda u: u * sigmoid(u),
             lambda u: u / (1 + sp.exp(-u)), aliases=("swish",))
_elementwise("mish", "self-regularized non-monotonic", lambda u: u * tanh(softplus(u)))
_elementwise("softsign", "soft sign", softsign, lambda u: u / (1 + sp.Abs(u)))
_elementwise("logsigmoid", "log of the logistic sigmoid", lambda u: -softplus(-u),
             lambda u: sp.log(1 / (1 + sp.exp(-u))), aliases=("log_sigmoid",))
_elementwise("tanhshrink", "z minus its tanh", tanhshrink, lambda u: u - sp.tanh(u),
             aliases=("tanh_shrink",))
LAMBD = Hyper("lambd", 0.5, minimum=0.0, description="half-width of the dead zone")
_add("softshrink", "soft shrinkage",
     lambda u, h, p: Pw((u + h["lambd"], u < -h["lambd"]), (0, u <= h["lambd"]), (u - h["lambd"], True)),
     hyper=(LAMBD,), aliases=("soft_shrink",))
_add("hardshrink", "hard shrinkage",
     lambda u, h, p: Pw((0, (u >= -h["lambd"]) & (u <= h["lambd"])), (u, True)),
     lambda u, h, p: Pw((u, sp.Abs(u) > h["lambd"]), (0, True)), hyper=(LAMBD,),
     aliases=("hard_shrink",))
_add("threshold", "thresholded identity",
     lambda u, h, p: Pw((h["value"], u <= h["threshold"]), (u, True)),
     lambda u, h, p: Pw((u, u > h["threshold"]), (h["value"], True)),
     hyper=(Hyper("threshold", 0.0), Hyper("value", 0.0)))
_elementwise("exponential", "exponential", sp.exp)
def _tails(u, middle):
    """0 below -40 and u above 40, where the Gaussian tail is below every float's resolution:
    exact there, and the limits at ±inf (where u * Φ(u) would be inf * 0)."""
    return Pw((0, u < -40), (u, u > 40), (middle, True))


# Φ(z) = erfc(-z/√2)/2 (ncdf), not (1 + erf(z/√2))/2, which cancels to 0 for z < -6
_elementwise("gelu", "Gaussian error linear", lambda u: _tails(u, u * ncdf(u)),
             lambda u: u * (1 + sp.erf(u / sp.sqrt(2))) / 2)
# 0.5 (1 + tanh a) = sigmoid(2a): the same function without cancellation for z << 0
_GELU_A = sp.sqrt(2 / sp.pi)
_elementwise("gelu:tanh", "Gaussian error linear, tanh approximation",
             lambda u: _tails(u, u * sigmoid(2 * _GELU_A * (u + sp.Rational(44715, 10 ** 6) * u ** 3))),
             lambda u: u * (1 + tanh(_GELU_A * (u + sp.Rational(44715, 10 ** 6) * u ** 3))) / 2)
_elementwise("sparse_plus", "sparse plus",
             lambda u: Pw((0, u <= -1), ((u + 1) ** 2 / 4, u < 1), (u, True)))


def _log_softmax(u):
    # log Σ exp(s) as log1p of what the row holds past its maxima: the log of the rounded sum
    # (1 + δ for a confident row) loses δ's digits to the rounding of 1 + δ, and δ is the
    # largest output's whole value (log_softmax([0, 9]) = [-9.0001, -1.234e-4]). The count of
    # maxima is exact and carries no gradient; the rest, Σ (exp(s) - [u = max]), has the sum's
    # derivative. count - 1 is one subtraction: in an Add, SymPy's order summed (-1 + δ) + count.
    m = RowShift(u)
    s = shifted(u, m)
    top = attop(u, m)
    return s - log1p(RowSum(sp.exp(s) - top) + shifted(RowSum(top), 1))


_elementwise("log_softmax", "log of the categorical distribution", _log_softmax,
             lambda u: u - sp.log(RowSum(sp.exp(u))))
_elementwise("softmin", "categorical distribution of -z", lambda u: _softmax(-u),
             lambda u: sp.exp(-u) / RowSum(sp.exp(-u)))

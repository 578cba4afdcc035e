"""``actdsl.check``: prove that a compiled activation computes what its spec says.

Three opinions, each independent of the code under test:

1. **Symbolic.** The derivative the backends are generated from (``Plan.dout_dz``, and for
   row-wise specs the whole reverse-mode VJP: adjoint sums, λ recurrence, argmax routing) equals
   SymPy's own derivative of the forward expression written out in textbook functions: SymPy
   proves the difference zero, or it is evaluated exactly (rational points, 50+ digits, every
   piece of a piecewise definition and both sides of each kink). Row-wise specs are written out
   for a row of 4 symbols and differentiated directly. A user-supplied derivative (an
   ``Activation`` subclass with ``derivative``) is checked the same way.
2. **Numeric.** Each backend's forward, derivative and VJP against mpmath on a grid over the
   dtype's whole finite range (every binade, subnormals, the largest values, kink neighbours,
   random points). Truth is evaluated at 50 digits and more until two precisions agree, so
   cancellation in the truth itself (x - tanh x at x = 1e-300) cannot fool it.
3. **Finite differences**, with a step of ε^(1/3)·max(1, |x|) in the checked dtype, at points
   where no condition of the spec changes within the step (kinks inside a composition too).

Errors of elementwise results are in ULP of the true value. The pass/fail bound (4 ULP forward,
8 ULP derivative) is applied to the *conditioned* error ``|c - t| / (ulp(t) + |t'(x)|·ulp(x))``:
an implementation passes if it is within the bound of the true function at an input within the
bound of x. That is the strict ULP error wherever the function is well conditioned, and it does
not fail a float32 derivative for rounding its O(1) terms at the derivative's own zero (silu'
at -1.278), which no implementation in that dtype can avoid. Across a jump (a kink between x
and its neighbours: hardtanh(min_val=0.331) at x = 0.331 rounded, just above the exact kink) the
linear estimate says nothing, so a result over the bound is also held against the true values at
the inputs up to the bound ULP away: max(k, its error there) for the nearest such input k ULP
from x. Never at a kink itself (0, and the roots of linear conditions): there the convention
(relu'(0) = 0) is held exactly. Both figures are reported.
Row-wise errors are relative to the row's scale (its largest true value, or |dy| for the VJP),
in units of the dtype's ε: at most 16 forward and 64 VJP.
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field

import mpmath
import numpy as np
import sympy as sp

from .derive import branches_as_they_are, power, rebuild, replace_nodes, to_piecewise
from .errors import ActdslError
from .ir import RowMax, RowReduction, RowSum, n, z
from .stable import Primitive, pow2scale, to_elementary
from .stage import Stage

DIGITS = 50
BOUNDS = {"forward": 4.0, "derivative": 8.0, "vjp": 8.0}
ROW_BOUNDS = {"forward": 16.0, "vjp": 64.0}
#: (precision in bits, smallest normal exponent, largest exponent + 1)
FORMATS = {"float32": (24, -126, 128), "float64": (53, -1022, 1024)}


# -- ULPs ---------------------------------------------------------------------------------------
def ulp(t, dtype: str) -> mpmath.mpf:
    """The spacing of ``dtype`` floats at the real number ``t`` (subnormal spacing near 0)."""
    p, emin, _ = FORMATS[dtype]
    t = mpmath.mpf(t)
    if t == 0 or not mpmath.isfinite(t):
        return mpmath.ldexp(1, emin - p + 1)
    _, e = mpmath.frexp(t)  # |t| = m 2^e, 1/2 <= m < 1
    return mpmath.ldexp(1, max(int(e) - 1, emin) - p + 1)


def largest(dtype: str) -> mpmath.mpf:
    p, _, emax = FORMATS[dtype]
    return (2 - mpmath.ldexp(1, 1 - p)) * mpmath.ldexp(1, emax - 1)


@functools.lru_cache(maxsize=None)
def _rounds_to_inf(dtype: str) -> mpmath.mpf:
    """The magnitude from which a real number rounds to ±inf in ``dtype``."""
    return largest(dtype) + ulp(largest(dtype), dtype) / 2


def ulp_error(computed, truth, dtype: str) -> float:
    """|computed - truth| in ULP of truth. A truth beyond the largest float rounds to ±inf;
    NaN matches NaN only."""
    c = float(computed)
    t = mpmath.mpf(truth) if not isinstance(truth, mpmath.mpf) else truth
    if mpmath.isnan(t) or math.isnan(c):
        return 0.0 if (mpmath.isnan(t) and math.isnan(c)) else math.inf
    if abs(t) >= _rounds_to_inf(dtype):
        return 0.0 if math.isinf(c) and (c > 0) == (t > 0) else math.inf
    if math.isinf(c):
        return math.inf
    return float(abs(mpmath.mpf(c) - t) / ulp(t, dtype))


# -- an mpmath evaluator for SymPy trees (no lambdify: nothing is printed and executed) --------
class MpEvaluator:
    """Evaluates a SymPy expression at exact binary inputs with mpmath, at ``mp.dps`` digits.
    Row reductions need ``row`` (the row's values); ``env`` maps symbols to mpf values."""

    _functions = {
        sp.exp: lambda u: _exp(u), sp.tanh: mpmath.tanh,
        sp.sinh: lambda u: _far(u, lambda: mpmath.sign(u) * mpmath.inf, mpmath.sinh),
        sp.cosh: lambda u: _far(u, lambda: mpmath.inf, mpmath.cosh),
        sp.sin: lambda u: _periodic(u, mpmath.sin), sp.cos: lambda u: _periodic(u, mpmath.cos),
        sp.tan: lambda u: _periodic(u, mpmath.tan), sp.atan: mpmath.atan,
        sp.asinh: mpmath.asinh, sp.erf: mpmath.erf, sp.erfc: mpmath.erfc, sp.sech: mpmath.sech,
        sp.floor: mpmath.floor, sp.ceiling: mpmath.ceil,
    }
    _primitives = {
        "sigmoid": lambda u: 1 / (1 + _exp(-u)),
        "softplus": lambda u: u + mpmath.log1p(_exp(-u)) if u > 0 else mpmath.log1p(_exp(u)),
        "expm1": lambda u: _far(u, lambda: mpmath.inf if u > 0 else mpmath.mpf(-1), mpmath.expm1),
        "log1p": lambda u: _log(1 + u) if u <= -1 else mpmath.log1p(u),
        "shifted": lambda a, b: a - b if not (mpmath.isinf(a) and a == b) else mpmath.mpf(0),
        "attop": lambda a, b: mpmath.mpf(1) if a == b else mpmath.mpf(0),
        "expmul": lambda a, g: g * _exp(a),
        "times": lambda m, u: mpmath.mpf(0) if m == 0 and mpmath.isinf(u) else m * u,
        "sqrt0": lambda u: mpmath.sqrt(u) if u >= 0 else mpmath.nan, "ncdf": mpmath.ncdf,
        "tanhshrink": lambda u: u - mpmath.tanh(u), "softsign": lambda u: u / (1 + abs(u)),
        # a row's scale: results do not depend on it, so in exact arithmetic 1 serves (inf for
        # a row holding ±inf, whose infinite entries then scale to ±1, NaN for NaN)
        "pow2scale": lambda a: mpmath.mpf(1) if mpmath.isfinite(a) else abs(a),
        "scaled": lambda u, s: mpmath.sign(u) if mpmath.isinf(u) and mpmath.isinf(s) else u / s,
        "at_inf": lambda value, u, lneg, lpos: lpos if u == mpmath.inf else (
            lneg if u == -mpmath.inf else value),
        "FirstMax": lambda *a: mpmath.nan if any(mpmath.isnan(v) for v in a) else mpmath.mpf(
            max(range(len(a)), key=lambda i: (a[i], -i))),
        "Pick": lambda i, *v: mpmath.nan if mpmath.isnan(i) else v[int(i)],
    }

    def __init__(self, env: dict, row: list | None = None, cache: dict | None = None,
                 deepen: bool = True):
        self.env = env
        self.row = row
        # whether a sum that cancels is evaluated again at more digits (add): only where every
        # value in env is exact (inputs, parameters); a row reduction in env is rounded to the
        # working precision, and a body compared at 4x the digits with it (attop(u, r1) in
        # logistic+log_softmax) lost the tie that holds exactly
        self.deepen = deepen
        self.cache = {} if cache is None else cache  # row reductions, computed once per row
        self.stages: dict = {}  # stage nodes (actdsl.stage) at this env
        self.memo: dict = {}    # each distinct subexpression once per precision: a spec's
        # expression is a DAG (maxout's Pick(FirstMax(...)) in every branch), not a tree

    def __call__(self, e):
        if e.is_Atom:
            return self._eval(e)
        key = (e, mpmath.mp.prec)
        if key not in self.memo:
            self.memo[key] = self._eval(e)
        return self.memo[key]

    def _eval(self, e):
        if isinstance(e, sp.Symbol):
            return self.env[e]
        if e.is_Number:
            if e is sp.nan:
                return mpmath.nan
            if e in (sp.oo, -sp.oo):
                return mpmath.inf if e is sp.oo else -mpmath.inf
            if e.is_Rational:
                return mpmath.mpf(e.p) / e.q
            return mpmath.mpf(e)
        if e is sp.pi:
            return +mpmath.pi
        if e is sp.E:
            return mpmath.e()
        if e.is_Add:
            return self.add(e)
        if e.is_Mul:
            return mpmath.fprod(self(a) for a in e.args)
        if e.is_Pow:
            return _pow(self(e.base), e.exp, self)
        if isinstance(e, sp.Piecewise):
            for value, cond in e.args:
                if self.truth(cond):
                    return self(value)
            return mpmath.nan
        if isinstance(e, RowReduction):
            return self.reduce(e)
        if isinstance(e, Stage):  # its body at its arguments' values, once per node and env
            key = (e, mpmath.mp.prec)
            if key not in self.stages:
                env = {**self.env, **dict(zip(type(e).formals, [self(a) for a in e.args]))}
                self.stages[key] = MpEvaluator(env, self.row, {}, self.deepen)(type(e).body)
            return self.stages[key]
        if isinstance(e, Primitive):
            return self._primitives[type(e).__name__](*[self(a) for a in e.args])
        if isinstance(e, sp.log):
            a = e.args[0]
            if a.is_Add and sp.S.One in a.args:  # log(1 + w) as log1p(w): a textbook softplus,
                # log(1 + e^u), was 0 at 50 and 100 digits for u = -709 (1 + 1e-308 rounds to
                # 1), and softshrink+mish's right derivative failed against that
                w = self(sp.Add(*[t for t in a.args if t != sp.S.One]))
                return _log(1 + w) if mpmath.isnan(w) or w <= -1 else mpmath.log1p(w)
            return _log(self(a))
        if isinstance(e, sp.Abs):
            return abs(self(e.args[0]))
        if isinstance(e, sp.sign):
            v = self(e.args[0])
            return mpmath.sign(v) if not mpmath.isnan(v) else v
        if isinstance(e, (sp.Max, sp.Min)):
            vals = [self(a) for a in e.args]
            if any(mpmath.isnan(v) for v in vals):
                return mpmath.nan
            return max(vals) if isinstance(e, sp.Max) else min(vals)
        for cls, f in self._functions.items():
            if isinstance(e, cls):
                v = self(e.args[0])
                return v if mpmath.isnan(v) else f(v)
        raise ActdslError(f"actdsl.check cannot evaluate {type(e).__name__} exactly")

    def truth(self, cond) -> bool:
        if cond is sp.true or cond is True:
            return True
        if cond is sp.false or cond is False:
            return False
        if isinstance(cond, sp.And):
            return all(self.truth(a) for a in cond.args)
        if isinstance(cond, sp.Or):
            return any(self.truth(a) for a in cond.args)
        if isinstance(cond, sp.Not):
            return not self.truth(cond.args[0])
        if isinstance(cond, sp.logic.boolalg.ITE):
            c, a, b = cond.args
            return self.truth(a) if self.truth(c) else self.truth(b)
        if isinstance(cond, (sp.Xor, sp.Implies, sp.Equivalent)):
            return bool(cond.func(*[sp.true if self.truth(a) else sp.false for a in cond.args]))
        a, b = self(cond.lhs), self(cond.rhs)
        if mpmath.isnan(a) or mpmath.isnan(b):
            return isinstance(cond, sp.Ne)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b,
                "!=": a != b}[cond.rel_op]

    def add(self, e):
        """A sum; one that cancels to below the working precision of its largest term is
        evaluated again at 4x and 16x the digits: the textbook Φ(u) = 1 - erfc(u/√2)/2 is 0 at
        -40 to every precision below 350 digits, so two precisions agreed on softshrink+gelu's
        derivative u φ(u) + Φ(u) without its Φ term (a right kernel failed). A true 0 stays 0."""
        dps = mpmath.mp.dps
        while True:
            with mpmath.workdps(dps):
                terms = [self(a) for a in e.args]
                total = mpmath.fsum(terms)
                big = max((abs(t) for t in terms if mpmath.isfinite(t)), default=mpmath.mpf(0))
                lost = big != 0 and abs(total) <= big * mpmath.mpf(10) ** (10 - dps)
            if not lost or dps >= 1000 or not self.deepen:
                return total
            dps *= 4

    def reduce(self, e):
        if self.row is None:
            raise ActdslError("a row reduction needs a row")
        key = (e, mpmath.mp.prec)  # per precision: a sum evaluated again deeper (add) compared
        if key in self.cache:      # its z at 4x the digits with a row maximum kept at 1x, and
            return self.cache[key]  # lost the max's tie (logistic+log_softmax's truth was wrong)
        vals = [MpEvaluator({**self.env, z: v}, self.row, self.cache, self.deepen)(e.args[0])
                for v in self.row]
        if isinstance(e, RowSum):
            value = mpmath.fsum(vals)
        elif any(mpmath.isnan(v) for v in vals):
            value = mpmath.nan
        else:
            value = max(vals)
        self.cache[key] = value
        return value


def _log(v):
    if v < 0 or mpmath.isnan(v):
        return mpmath.nan
    return -mpmath.inf if v == 0 else mpmath.log(v)


def _pow(base, exp, ev):
    if exp == sp.Rational(1, 2):
        return mpmath.sqrt(base) if base >= 0 else mpmath.nan
    if exp.is_Integer:
        k = int(exp)
        if base == 0 and k < 0:
            return mpmath.inf
        return base ** k
    x = ev(exp)
    if base < 0:
        return mpmath.nan
    if base == 0:
        return mpmath.mpf(0) if x > 0 else mpmath.inf
    if mpmath.isfinite(x) and mpmath.isfinite(base):
        with mpmath.workprec(64):
            bits = x * mpmath.log(base, 2)
        # far beyond every float's range, where mpmath would write out an exponent of
        # billions of digits (MemoryError: z**z**z at 3e38)
        if bits > _FAR:
            return mpmath.inf
        if bits < -_FAR:
            return mpmath.mpf(0)
    return base ** x


def _far(u, beyond, f):
    """``f(u)``, or ``beyond()`` where ``u`` is past 2**20 in magnitude (finite): exp, sinh,
    cosh and expm1 there are past 2**(2**20), beyond every float's range as _pow's powers are, and
    mpmath computing them from a larger argument (exp(exp(exp(3e38)))) ran for hours."""
    return beyond() if mpmath.isfinite(u) and abs(u) > _FAR else f(u)


def _exp(u):
    return _far(u, lambda: mpmath.inf if u > 0 else mpmath.mpf(0), mpmath.exp)


def _periodic(u, f):
    """sin, cos: NaN past 2**4096, as at ±inf: reducing an argument that large modulo 2π takes
    mpmath as many bits (hours for sin(exp(exp(z))) at 3e38), and no float argument is there."""
    return mpmath.nan if mpmath.isfinite(u) and abs(u) > _PERIODIC else f(u)


_PERIODIC = mpmath.mpf(2) ** 4096
_FAR = 1 << 20  # bits of a power's magnitude: 2**(2**20) is beyond float64's 2**1024 and beyond
# the smallest subnormal's 2**-1074 in the other direction


def exact_value(f, *, tol_digits: int = 30, start: int = DIGITS, limit: int = 4000):
    """``f()`` (mpmath arithmetic, a number or a list of numbers) at increasing precision until
    two precisions agree to ``tol_digits``: the true value even where the formula cancels.
    In a list, entries whose true value is 0 (a VJP that cancels exactly) agree once they are
    below the working precision."""
    dps = start
    with mpmath.workdps(dps):
        prev = f()
    while True:
        dps = dps * 2 if dps > start else dps + 20
        with mpmath.workdps(dps):
            cur = f()
        if not isinstance(cur, list) and cur == 0 and prev == 0 and dps < 1200:
            for dps in (400, 1200):  # a cancellation can be 0 at two precisions (x - tanh x
                with mpmath.workdps(dps):  # at 1e-300 needs 600 digits)
                    cur = f()
                if cur != 0:
                    break
        if isinstance(cur, list):
            done = all(_agree(a, b, tol_digits) or abs(a - b) < mpmath.mpf(10) ** -(dps - 10)
                       for a, b in zip(prev, cur))
        else:
            done = _agree(prev, cur, tol_digits)
        if done or dps >= limit:
            with mpmath.workdps(DIGITS):
                return [+v for v in cur] if isinstance(cur, list) else +cur
        prev = cur


def _agree(a, b, digits: int) -> bool:
    if mpmath.isnan(a) or mpmath.isnan(b):
        return bool(mpmath.isnan(a) and mpmath.isnan(b))
    if mpmath.isinf(a) or mpmath.isinf(b):
        return a == b
    return abs(a - b) <= mpmath.mpf(10) ** -digits * max(abs(a), abs(b)) or a == b


# -- the report ----------------------------------------------------------------------------------
@dataclass
class SymbolicResult:
    what: str
    passed: bool
    how: str
    point: float | None = None        # where it differs
    expected: float | None = None
    got: float | None = None

    def line(self) -> str:
        text = f"  {self.what:<22}{'ok' if self.passed else 'FAIL':<6}{self.how}"
        if not self.passed and self.point is not None:
            text += f"; first difference at z = {self.point!r}: exact {self.expected!r}, " \
                    f"generated {self.got!r}"
        return text


@dataclass
class NumericResult:
    backend: str
    dtype: str
    what: str
    points: int
    max_error: float          # ULP (elementwise) or ε of the row's scale (row-wise)
    conditioned: float        # the figure held to the bound (see the module's docstring)
    bound: float
    worst_input: object
    unit: str = "ULP"
    subnormal_points: int = 0        # true results below the smallest normal number
    subnormal_error: float = 0.0     # their largest error, in subnormal spacings
    allowance: float = 1.0           # row-wise: the conditioning factor applied to the bound

    @property
    def passed(self) -> bool:
        return self.conditioned <= self.bound * self.allowance

    def line(self) -> str:
        worst = self.worst_input
        if isinstance(worst, float):
            worst = f"{worst:.9g}"
        bound = self.bound * self.allowance
        text = (f"  {self.backend:<8}{self.dtype:<9}{self.what:<11}{self.points:>7}"
                f"{_fmt(self.max_error):>11}{_fmt(self.conditioned):>11}{bound:>9.4g} {self.unit:<8}"
                f"{'ok' if self.passed else 'FAIL':<6}{worst}")
        if self.subnormal_points:
            text += (f"  [{self.subnormal_points} subnormal results, up to "
                     f"{_fmt(self.subnormal_error)} spacings]")
        return text


@dataclass
class FiniteDifferenceResult:
    backend: str
    dtype: str
    points: int
    max_error: float           # relative to max(1, |f|, |f'|) (elementwise) or the row's scale
    bound: float
    worst_input: object

    @property
    def passed(self) -> bool:
        return self.max_error <= self.bound

    def line(self) -> str:
        worst = f"{self.worst_input:.9g}" if isinstance(self.worst_input, float) else self.worst_input
        return (f"  {self.backend:<12}{self.dtype:<9}{self.points:>7}{self.max_error:>12.2e}"
                f"{self.bound:>11.1e}  {'ok' if self.passed else 'FAIL':<6}{worst}")


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.2f}"


@dataclass
class CheckReport:
    spec: str
    rowwise: bool
    symbolic: list[SymbolicResult] = field(default_factory=list)
    numeric: list[NumericResult] = field(default_factory=list)
    finite_differences: list[FiniteDifferenceResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in [*self.symbolic, *self.numeric, *self.finite_differences])

    def failures(self) -> list:
        return [r for r in [*self.symbolic, *self.numeric, *self.finite_differences] if not r.passed]

    def __str__(self) -> str:
        kind = "row-wise" if self.rowwise else "elementwise"
        out = [f"actdsl check {self.spec!r} ({kind})", "", "symbolic"]
        out += [r.line() for r in self.symbolic]
        unit = "ε·scale" if self.rowwise else "ULP"
        out += ["", f"numeric, against mpmath ({DIGITS}+ digits); error in {unit}, "
                    "bound on the conditioned error",
                f"  {'backend':<8}{'dtype':<9}{'what':<11}{'points':>7}{'max err':>11}"
                f"{'cond.':>11}{'bound':>9} {'':<8}{'':<6}worst input"]
        out += [r.line() for r in self.numeric]
        out += ["", "finite differences (step ε^(1/3)·max(1, |x|) in the dtype; jvp, g'' and hvp "
                    "(vjp_vjp) against differences of the forward, g' and the vjp)",
                f"  {'backend':<12}{'dtype':<9}{'points':>7}{'max err':>12}{'bound':>11}"]
        out += [r.line() for r in self.finite_differences]
        out += ["", "PASS" if self.passed else f"FAIL ({len(self.failures())} failing)"]
        return "\n".join(out)


# -- check ------------------------------------------------------------------------------------------
def available_backends() -> list[str]:
    return ["numpy", "numba"]


def check(spec: str, backend: str | list[str] | None = None,
          dtype: str | list[str] | None = None, full: bool = False, seed: int = 0,
          points: int | None = None) -> CheckReport:
    """Check a spec symbolically, numerically (each backend, each dtype) and by finite
    differences. ``full`` covers every binade of the dtype (slow for float64: minutes); the
    default samples every 8th (float32) or 48th (float64) binade and 200 random points;
    ``points`` < 100 samples four times coarser (the test suite's setting). Returns a :class:`CheckReport`; ``str(report)`` is the table
    ``actdsl check`` prints."""
    from .compiler import BACKENDS, compile as compile_spec
    backends = available_backends() if backend is None else \
        [backend] if isinstance(backend, str) else list(backend)
    dtypes = ["float32", "float64"] if dtype is None else [dtype] if isinstance(dtype, str) else list(dtype)
    for b in backends:
        if b not in BACKENDS:
            raise ActdslError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    for d in dtypes:
        if d not in FORMATS:
            raise ActdslError(f"unknown dtype {d!r}; choose float32 or float64")
    ref = compile_spec(spec)
    report = CheckReport(ref.text, ref.rowwise)
    values = _param_values(ref)
    rng = random.Random(seed)
    if ref.rowwise:
        report.symbolic += _symbolic_rows(ref, values, rng)
    else:
        report.symbolic += _symbolic_elementwise(ref, values, rng)
    report.symbolic += _user_derivatives(ref)
    kernels = {b: ref if b == "numpy" else compile_spec(spec, backend=b) for b in backends}
    higher_rng = random.Random(seed + 1)  # its own draws: the first-order checks' stay the same
    for d in dtypes:
        if ref.rowwise:
            report.numeric += _numeric_rows(kernels, ref, values, d, rng, full)
        else:
            report.numeric += _numeric_elementwise(kernels, ref, values, d, rng, full, points)
        for b, k in kernels.items():
            report.finite_differences.append(_finite_differences(k, values, d, rng))
            from .check_autodiff import higher_order  # jvp, g'', vjp_vjp (docs/autodiff.md)
            report.finite_differences += higher_order(k, values, np.dtype(d).type, higher_rng)
    return report


def _param_values(k) -> dict:
    """One unit's default parameter values, as (per-dtype rounded) kernel arguments and symbols."""
    if not k.params:
        return {}
    init = k.init_params(1)
    return {p.name: (p, np.asarray(init[p.name][0], dtype=np.float64)) for p in k.params}


def _param_env(values: dict, dtype: str) -> dict:
    env = {}
    for p, v in values.values():
        flat = np.atleast_1d(v.astype(dtype))
        for sym, x in zip(p.symbols, flat):
            env[sym] = mpmath.mpf(float(x))
    return env


def _kernel_params(values: dict, dtype: str) -> dict:
    return {name: v.astype(dtype) for name, (p, v) in values.items()}


# -- symbolic -----------------------------------------------------------------------------------
def _rational_params(values: dict) -> dict:
    env = {}
    for p, v in values.values():
        for sym, x in zip(p.symbols, np.atleast_1d(v)):
            env[sym] = sp.Rational(float(x))  # the float's exact (dyadic) value
    return env


def _boundaries(expr) -> list:
    """Where the pieces of a piecewise expression meet (roots of its linear conditions in z)."""
    found = set()
    for rel in expr.atoms(sp.core.relational.Relational):
        d = rel.lhs - rel.rhs
        if d.free_symbols != {z} or d.has(sp.Piecewise) or d.atoms(sp.Function):
            continue  # (not linear in z; sp.Poly of maxout's Pick(FirstMax(...)) took seconds)
        try:
            poly = sp.Poly(d, z)
        except sp.PolynomialError:
            continue
        if poly.degree() == 1:
            a, b = poly.all_coeffs()
            if (-b / a).is_Rational:
                found.add(-b / a)
    return sorted(found)


def _sample_points(expr, rng) -> list:
    pts = set()
    for b in _boundaries(expr):  # both sides of every kink, and the kink itself
        for d in (0, sp.Rational(1, 997), -sp.Rational(1, 997), sp.Rational(1, 7), -sp.Rational(1, 7)):
            pts.add(b + d)
    for mag in (sp.Rational(1, 1000), sp.Rational(1, 7), sp.Integer(1), sp.Rational(22, 7),
                sp.Integer(10), sp.Integer(45), sp.Integer(100)):
        pts.update({mag, -mag})
    while len(pts) < 60:
        pts.add(sp.Rational(rng.randint(-6000, 6000), rng.choice([7, 97, 997])))
    return sorted(pts)


def _diff(expr: sp.Expr) -> sp.Expr:
    """d expr/dz by SymPy's rules, each Piecewise differentiated branch by branch and rebuilt as
    it is. SymPy's own derivative of a Piecewise folds every condition that holds a Piecewise
    (an AssertionError in piecewise_fold, or minutes in as_set), and differentiates b**e as
    b**e · e b'/b, whose 1/b is zoo on a branch where a Piecewise b is 0 (max(u, 0)**2 in
    maxout:6+{max(z, 0)**2}+silu). Here every outermost Piecewise P_k stands in as a function
    F_k(z) while SymPy differentiates (2 F F' for F**2), and F_k, F_k' are then replaced by P_k
    and its own derivative."""
    memo: dict = {}

    def d(e):
        if e in memo:
            return memo[e]
        if not e.has(z):
            out = sp.S.Zero
        elif isinstance(e, sp.Piecewise):  # its conditions as they are: SymPy's constructor
            # re-evaluated them and raised "Invalid NaN comparison" (hardshrink+prelu+selu)
            out = branches_as_they_are(*[(d(v), c) for v, c in e.args])
        else:
            outer, stack, seen = [], [e], set()
            while stack:
                node = stack.pop()
                if node in seen:
                    continue
                seen.add(node)
                if isinstance(node, sp.Piecewise):
                    if node.has(z) and node not in outer:
                        outer.append(node)
                else:
                    stack.extend(node.args)
            if not outer:
                out = sp.diff(e, z)
            else:
                stand = {p: sp.Function(f"_piece{i}", real=True)(z) for i, p in enumerate(outer)}
                back = {}
                for p, f in stand.items():
                    back[sp.Derivative(f, z)] = d(p)
                    back[f] = p
                out = replace_nodes(sp.diff(replace_nodes(e, stand), z), back)
        memo[e] = out
        return out
    return d(expr)


def _symbolic_elementwise(k, values, rng) -> list:
    params = _rational_params(values)
    forward = replace_nodes(_textbook(k.expr), params)  # (xreplace folds: minutes for maxout:6+...)
    exact = _diff(forward)                             # SymPy's own rules, textbook functions
    generated = replace_nodes(k.plan.dout_dz, params)  # what the backends are generated from
    results = []
    try:
        small = sp.count_ops(exact) + sp.count_ops(generated) < 80
        if small and sp.simplify(to_elementary(generated) - exact) == 0:
            return [SymbolicResult("derivative", True, "SymPy simplified generated - exact to 0")]
    except Exception:  # simplify gives up on some piecewise forms: evaluation decides
        pass
    pts = _sample_points(exact, rng)
    for t in pts:
        env = {z: mpmath.mpf(t.p) / t.q}
        a = exact_value(lambda: MpEvaluator(env)(exact))
        b = exact_value(lambda: MpEvaluator(env)(generated))
        if not _agree(a, b, 25):
            results.append(SymbolicResult("derivative", False, "exact evaluation", float(t),
                                          float(a), float(b)))
            return results
    results.append(SymbolicResult("derivative", True,
                                  f"equal at {len(pts)} rational points (every piece, both "
                                  "sides of each kink), 50+ digits"))
    return results


def _expand_row(expr, zs: list, i: int, memo: dict):
    """y_i written out for an explicit row of symbols: reductions become sums and maxima."""
    def rw(e):
        if isinstance(e, RowReduction):
            key = e
            if key not in memo:
                terms = [_expand_row(e.args[0], zs, j, memo) for j in range(len(zs))]
                memo[key] = sp.Add(*terms) if isinstance(e, RowSum) else sp.Max(*terms)
            return memo[key]
        return e
    # rebuilt as it is: SymPy's constructors fold a condition that holds a Piecewise, and
    # wrongly (|z_0| became -z_0 under z_1 < 0 in norm:max+{max(z, 0.5)}'s y_1)
    inner = rebuild(expr, lambda e: isinstance(e, RowReduction), rw)
    return replace_nodes(inner, {z: zs[i], n: sp.Integer(len(zs))})


def _branch_at(expr, env: dict):
    """``expr`` with every Piecewise replaced by the branch it takes at ``env`` (the first whose
    condition holds there, exactly): the expression whose derivative at ``env`` is the
    piecewise one's, by the kink convention of the definition (the first branch wins a tie).
    SymPy differentiates the branch alone; differentiating the Piecewise would fold conditions
    that hold Piecewise (an AssertionError in piecewise_fold for
    linear+norm:max(eps=0.296)+softmax)."""
    ev = MpEvaluator(env)

    def pick(e):
        for value, cond in e.args:
            with mpmath.workdps(4 * DIGITS):
                if ev.truth(cond):
                    return value
        raise ActdslError("actdsl.check found no branch of a definition that holds")
    return rebuild(expr, lambda e: isinstance(e, sp.Piecewise), pick)


def _textbook(expr: sp.Expr) -> sp.Expr:
    """The spec's expression in textbook functions. A row's power-of-two scale (``pow2scale``,
    which keeps huge rows from overflowing) multiplies out exactly wherever it is used, so the
    definition has none: it is 1 here (its floor(log2 ·) would give SymPy a floor to
    differentiate, and nothing to learn from it)."""
    expr = rebuild(expr, lambda e: isinstance(e, pow2scale), lambda e: sp.S.One)
    return to_elementary(to_piecewise(expr))


def _symbolic_rows(k, values, rng) -> list:
    """The plan's VJP (adjoint sums, λ, argmax routing) against SymPy's direct derivative of
    Σ_i g_i y_i(z_0..z_3) at exact rational rows, ties included."""
    size = 4
    zs = sp.symbols(f"zz0:{size}", real=True)
    params = _rational_params(values)
    expr = replace_nodes(_textbook(k.expr), params)
    memo: dict = {}
    ys = [_expand_row(expr, zs, i, memo) for i in range(size)]
    # dyadic rationals: exact in binary, so mpmath holds them exactly at every precision
    rows = [[sp.Rational(rng.randint(-300, 300), rng.choice([8, 128])) for _ in range(size)]
            for _ in range(6)]
    rows.append([sp.Rational(1, 4), sp.Rational(-2), sp.Rational(5, 8), sp.Rational(-2)])   # ties
    rows.append([sp.Rational(3), sp.Rational(-3), sp.Rational(3), sp.Rational(1, 16)])
    for row in rows:
        g = [sp.Rational(rng.randint(-50, 50), 16) for _ in range(size)]
        loss = to_piecewise(sp.Add(*[gi * yi for gi, yi in zip(g, ys)]))
        env = dict(zip(zs, [mpmath.mpf(v.p) / v.q for v in row]))
        here = _branch_at(loss, env)
        exact = [exact_value(lambda j=j: MpEvaluator(env)(sp.diff(here, zs[j]))) for j in range(size)]
        mp_row = [mpmath.mpf(v.p) / v.q for v in row]
        mp_g = [mpmath.mpf(v.p) / v.q for v in g]
        mp_params = {s: mpmath.mpf(v.p) / v.q for s, v in params.items()}
        plan = exact_value(lambda: plan_vjp(k.plan, mp_row, mp_g, mp_params))
        for j in range(size):
            if not _agree(exact[j], plan[j], 25) and abs(exact[j] - plan[j]) > mpmath.mpf(10) ** -25:
                return [SymbolicResult("vjp", False, f"exact evaluation on the row {[str(v) for v in row]}",
                                       float(row[j]), float(exact[j]), float(plan[j]))]
    return [SymbolicResult("vjp", True, f"plan VJP = d/dz of Σ g·y for rows of {size} symbols, "
                                        f"{len(rows)} exact rows (ties included), 50+ digits")]


def _user_derivatives(k) -> list:
    from .custom import check_derivative
    from .registry import REGISTRY
    out = []
    seen = set()
    for term in k.spec.terms:
        key = getattr(term, "key", None)
        d = REGISTRY.lookup(key) if key else None
        if d is not None and "derivative" in d.extra and d.key not in seen:
            seen.add(d.key)
            rep = check_derivative(d.key)
            out.append(SymbolicResult(f"{d.key}: its derivative", rep.equal, rep.method,
                                      rep.first_difference, rep.expected, rep.supplied))
    return out


# -- the plan, interpreted exactly ------------------------------------------------------------------
def plan_forward(plan, row: list, params: dict):
    """Reductions (with argmax for maxima) and outputs of a plan on one row, in mpmath."""
    base = {**params, n: mpmath.mpf(len(row))}
    red, argmax = {}, {}
    for group in plan.depths:
        for r in group:
            vals = [MpEvaluator({**base, **red, z: v}, deepen=False)(r.body) for v in row]
            if r.kind is RowSum:
                red[r.symbol] = mpmath.fsum(vals)
            else:
                nan = [j for j, v in enumerate(vals) if mpmath.isnan(v)]
                j = nan[0] if nan else max(range(len(vals)), key=lambda i: (vals[i], -i))
                red[r.symbol], argmax[r.symbol] = vals[j], j
    ys = [MpEvaluator({**base, **red, z: v}, deepen=False)(plan.out) for v in row]
    return red, argmax, ys


def plan_vjp(plan, row: list, g: list, params: dict) -> list:
    base = {**params, n: mpmath.mpf(len(row))}
    red, argmax, _ = plan_forward(plan, row, params)

    def at(expr, j, extra=None):
        return MpEvaluator({**base, **red, z: row[j], **(extra or {})}, deepen=False)(expr)

    grad = plan.grad_reductions()
    kind = {r.symbol: r.kind for r in grad}
    A = {r.symbol: mpmath.fsum(g[j] * at(plan.dout_dr[r.symbol], j) for j in range(len(row)))
         for r in grad}
    S = {}
    for (m, k), e in plan.dbody_dr.items():
        S[(m, k)] = at(e, argmax[m]) if kind[m] is RowMax else \
            mpmath.fsum(at(e, j) for j in range(len(row)))
    lam = {}
    for r in reversed(grad):
        lam[r.symbol] = A[r.symbol] + mpmath.fsum(lam[m] * S[(m, k)] for (m, k) in plan.dbody_dr
                                                  if k == r.symbol)
    dz = []
    for j in range(len(row)):
        total = g[j] * at(plan.dout_dz, j)
        for r in grad:
            if kind[r.symbol] is RowMax and j != argmax[r.symbol]:
                continue
            total += lam[r.symbol] * at(plan.dbody_dz[r.symbol], j)
        dz.append(total)
    return dz


# -- numeric ---------------------------------------------------------------------------------------
def grid(dtype: str, expr, rng, full: bool, randoms: int = 200, coarse: bool = False) -> np.ndarray:
    """Inputs over the dtype's whole finite range: binades (all, or every 8th), subnormals,
    the largest values, kink neighbours, random points where activations do their work."""
    p, emin, emax = FORMATS[dtype]
    ty = np.dtype(dtype).type
    step = 1 if full else (8 if dtype == "float32" else 48) * (4 if coarse else 1)
    xs = []
    for e in list(range(emin, emax, step)) + [emin, emax - 1]:
        for m in (1.0, 1.5, 1 + rng.random()):
            xs += [math.ldexp(m, e), -math.ldexp(m, e)]
    tiny = float(np.finfo(dtype).smallest_subnormal)
    for k in range(0, p - 1, 1 if full else 5):
        xs += [tiny * 2 ** k, -tiny * 2 ** k]
    big = float(np.finfo(dtype).max)
    xs += [big, -big, big / 2, -big / 2, 0.0, -0.0]
    for b in _boundaries(expr) + [sp.Integer(0)]:
        c = ty(float(b))
        up, down = c, c
        for _ in range(3):
            up, down = np.nextafter(up, ty(np.inf)), np.nextafter(down, ty(-np.inf))
            xs += [float(up), float(down)]
        xs.append(float(c))
    xs += [rng.uniform(-12, 12) for _ in range(randoms)]
    xs += [rng.uniform(-100, 100) for _ in range(randoms // 4)]
    with np.errstate(over="ignore"):
        arr = np.array(xs, dtype=np.float64).astype(dtype)
    return np.unique(arr[np.isfinite(arr)])


def _numeric_elementwise(kernels, ref, values, dtype, rng, full, points) -> list:
    penv = _param_env(values, dtype)
    kp = _kernel_params(values, dtype)
    # primitives stay (mpmath has accurate expm1, erfc...): SymPy's textbook forms cancel, and
    # would turn erfc(-x) into 2 - erfc(x); the symbolic check has tied their derivatives to
    # the textbook ones already
    forward = to_piecewise(ref.expr)
    d1 = _diff(forward)
    d2 = _diff(d1)
    xs = grid(dtype, forward, rng, full, randoms=points or 200, coarse=bool(points and points < 100))
    kinks = set(_boundaries(_textbook(ref.expr))) | {sp.Integer(0)}
    tiny = mpmath.mpf(float(np.finfo(dtype).tiny))
    truth = {}
    for name, expr in (("f", forward), ("d1", d1), ("d2", d2)):
        truth[name] = [exact_value(lambda x=x: MpEvaluator({**penv, z: mpmath.mpf(float(x))})(expr))
                       for x in xs]
    results = []
    for b, k in kernels.items():
        with np.errstate(all="ignore"):
            got = {"forward": k(xs, **kp), "derivative": k.derivative(xs, **kp),
                   "vjp": k.vjp(xs, np.ones_like(xs), **kp)}
        for what, computed in got.items():
            t, dt = (truth["f"], truth["d1"]) if what == "forward" else (truth["d1"], truth["d2"])
            worst, cworst, where, sub_n, sub_err = 0.0, -1.0, None, 0, 0.0
            for x, c, tv, dv in zip(xs, computed, t, dt):
                e = ulp_error(c, tv, dtype)
                if 0 < abs(tv) < tiny:  # gradual underflow: reported apart (module docstring)
                    sub_n, sub_err = sub_n + 1, max(sub_err, e)
                    continue
                worst = max(worst, e)
                cond = _conditioned(e, c, tv, dv, x, dtype)
                if cond > BOUNDS[what] and sp.Rational(float(x)) not in kinks:
                    # a jump (a kink's derivative) next to x; at a kink itself the convention
                    # (relu'(0) = 0) is held exactly
                    expr = forward if what == "forward" else d1
                    cond = min(cond, _perturbed(c, expr, penv, x, dtype, BOUNDS[what]))
                if cond > cworst:
                    cworst, where = cond, float(x)
            results.append(NumericResult(b, dtype, what, len(xs), worst, cworst, BOUNDS[what], where,
                                         subnormal_points=sub_n, subnormal_error=sub_err))
    return results


def _conditioned(e, c, t, dt, x, dtype) -> float:
    """|c - t| / (ulp(t) + |t'(x)|·ulp(x)): the error allowing an input perturbation of 1 ulp
    (``e``: the plain ULP error, already computed)."""
    if e in (0.0, math.inf) or not mpmath.isfinite(dt):
        return e
    scale = ulp(t, dtype) + abs(dt) * ulp(mpmath.mpf(float(x)), dtype)
    return float(abs(mpmath.mpf(float(c)) - t) / scale)


def _perturbed(c, expr, penv, x, dtype, bound: float) -> float:
    """The least max(k, error in ULP) of ``c`` against the true ``expr`` at an input k ULP from
    ``x`` (k up to ``bound``), or inf: the conditioned error where the linear estimate of
    :func:`_conditioned` does not hold, across a jump. At x = 0.331 in float32 (just above the
    exact 331/1000), hardtanh(min_val=0.331)'s derivative is 1, and 0 one ULP below: a kernel
    that compares x with 0.331 rounded to float32 is that close to the truth, not 2^23 ULP away;
    so is a composition whose inner term rounds a subnormal x to its kink at 0."""
    ty = np.dtype(dtype).type
    up, down = ty(x), ty(x)
    for k in range(1, int(bound) + 1):
        with np.errstate(over="ignore"):  # (past the largest float: inf, skipped below)
            up, down = np.nextafter(up, ty(np.inf)), np.nextafter(down, ty(-np.inf))
        for near in (up, down):
            if not np.isfinite(near):
                continue
            t = exact_value(lambda v=near: MpEvaluator({**penv, z: mpmath.mpf(float(v))})(expr))
            e = max(float(k), ulp_error(c, t, dtype))
            if e <= bound:
                return e
    return math.inf


def _rows(dtype: str, rng, full: bool) -> list:
    rows = []
    size = 8
    for scale in (1e-3, 1.0, 3.0, 30.0) if not full else (1e-30, 1e-3, 1.0, 3.0, 30.0, 1e3):
        for _ in range(3 if not full else 8):
            rows.append([rng.gauss(0, scale) for _ in range(size)])
    rows.append([1e4, -1e4, 88.8, -88.8, 710.0 if dtype == "float64" else 80.0, -50.0, 0.5, 2.0])
    rows.append([2.0, -1.0, 2.0, 0.5, -3.0, 0.25, 1.0, 2.0])  # tied maxima
    return [np.array(r, dtype=dtype) for r in rows]


def _numeric_rows(kernels, ref, values, dtype, rng, full) -> list:
    penv = _param_env(values, dtype)
    kp = _kernel_params(values, dtype)
    rows = _rows(dtype, rng, full)
    grads = [np.array([rng.gauss(0, 1) for _ in r], dtype=dtype) for r in rows]
    true_y, true_dz = [], []
    for r, g in zip(rows, grads):
        mr = [mpmath.mpf(float(v)) for v in r]
        true_y.append(exact_value(lambda: plan_forward(ref.plan, mr, penv)[2]))
        mg = [mpmath.mpf(float(v)) for v in g]
        true_dz.append(exact_value(lambda: plan_vjp(ref.plan, mr, mg, penv)))
    eps = float(np.finfo(dtype).eps)
    kappa = _prefix_conditioning(ref, rows, kp)
    out = []
    for b, k in kernels.items():
        for what in ("forward", "vjp"):
            worst, where = -1.0, None
            for r, g, ty, tdz in zip(rows, grads, true_y, true_dz):
                with np.errstate(all="ignore"):
                    c = k(r, **kp) if what == "forward" else k.vjp(r, g, **kp)
                t = ty if what == "forward" else tdz
                finite = [abs(v) for v in t if mpmath.isfinite(v)]
                scale = max(finite + ([mpmath.mpf(float(np.max(np.abs(g))))] if what == "vjp" else []),
                            default=mpmath.mpf(1))
                scale = max(scale, mpmath.mpf(float(np.finfo(dtype).tiny)))
                for cv, tv in zip(c, t):
                    if mpmath.isnan(tv) or math.isnan(float(cv)):
                        err = 0.0 if (mpmath.isnan(tv) and math.isnan(float(cv))) else math.inf
                    elif mpmath.isinf(tv) or math.isinf(float(cv)):
                        err = 0.0 if float(cv) == float(tv) else math.inf
                    else:
                        err = float(abs(mpmath.mpf(float(cv)) - tv) / (scale * eps))
                    if err > worst:
                        worst, where = err, r.tolist()
            out.append(NumericResult(b, dtype, what, len(rows), worst, worst, ROW_BOUNDS[what],
                                     _short(where), unit="ε·scale",
                                     allowance=1.0 if (b, dtype) == ("numpy", "float32") else kappa))
    return out


def _prefix_conditioning(ref, rows, kp) -> float:
    """For a spec whose row-wise part follows elementwise terms (softplus+norm:z): how much the
    row stage magnifies a rounding of the elementwise values, max|u| / max|u - mean u| over the
    test rows. Backends that keep u in the dtype (all but numpy on float32, which computes rows
    in float64) cannot be more accurate than that, whatever they do afterwards."""
    from .ast import Spec
    from .compiler import compile as compile_spec
    terms = ref.spec.terms
    prefix = 0
    while prefix < len(terms) and not compile_spec(Spec(terms[:prefix + 1])).rowwise:
        prefix += 1
    if prefix == 0:
        return 1.0
    head = compile_spec(Spec(terms[:prefix]))
    # the head's parameters keep their names in the whole spec (the first of a name is bare)
    hp = {p.name: kp[p.name] for p in head.params}
    worst = 1.0
    for r in rows:
        u = head(r.astype(np.float64), **hp)
        spread = float(np.max(np.abs(u - u.mean())))
        if spread > 0:
            worst = max(worst, float(np.max(np.abs(u))) / spread)
    return worst


def _short(row) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in row) + "]" if row is not None else "-"


# -- finite differences ----------------------------------------------------------------------------
def truncation_aware(exact, fd, fd2, scale):
    """``(error, used)``: |exact - fd| less the difference's own truncation error, over
    ``scale``, at the points where every value is finite. A central difference with step h is
    off by about c h², one with 2h by 4c h²: |fd2 - fd| (3c h²) bounds what the step itself
    costs, wherever the derivative is right (z**7 composed twice, z**49: its third derivative is
    49·48·47 z**46, and the difference at -0.99 was off by 1.4e-8 of the scale in float64, over
    the roundoff bound of 1.8e-9). A wrong derivative is off by its own error whatever the step.
    A value that overflows (z**49 at 6 in float32) leaves nothing to compare."""
    exact = np.asarray(exact, np.float64)
    with np.errstate(all="ignore"):
        used = np.isfinite(exact) & np.isfinite(fd) & np.isfinite(fd2)
        err = np.maximum(np.abs(exact - fd) - np.abs(fd2 - fd), 0.0) / scale
    return np.where(used, err, 0.0), used


def _flips(relations, penv, points) -> bool:
    """Whether a condition of the spec changes between ``points``: a kink that
    :func:`_boundaries` cannot solve for (|leaky(z)| > 1/2 in
    ``{min(z, 1)}+{(z > 0)*z + (z <= 0)*0.1*z}+hardshrink``, at z = -5), which a difference
    across it would take for an error of the derivative."""
    with mpmath.workdps(40):
        for rel in relations:
            seen = {MpEvaluator({**penv, z: mpmath.mpf(float(x))}).truth(rel) for x in points}
            if len(seen) > 1:
                return True
    return False


def _row_flips(relations, penv, rows) -> bool:
    """Whether a condition of a row-wise spec, at any element, changes between ``rows`` (the
    ends of a finite difference along a direction): lgrelu's kink at a z-score of 0 in
    softplus+norm:z+lgrelu, which a difference across it takes for an error of the VJP."""
    with mpmath.workdps(40):
        seen = set()
        for r in rows:
            row = [mpmath.mpf(float(v)) for v in r]
            cache: dict = {}
            seen.add(tuple(MpEvaluator({**penv, n: mpmath.mpf(len(row)), z: x}, row, cache).truth(rel)
                           for x in row for rel in relations))
            if len(seen) > 1:
                return True
    return False


def row_relations(k) -> list:
    """The conditions of a row-wise spec's definition, for :func:`_row_flips`."""
    return sorted(_textbook(k.expr).atoms(sp.core.relational.Relational), key=sp.default_sort_key)


def _finite_differences(k, values, dtype, rng, count: int = 100) -> FiniteDifferenceResult:
    ty = np.dtype(dtype).type
    eps = float(np.finfo(dtype).eps)
    kp = _kernel_params(values, dtype)
    bound = 50 * eps ** (2 / 3)
    textbook = None if k.rowwise else _textbook(k.expr)
    kinks = [float(b) for b in _boundaries(textbook)] + [0.0] if not k.rowwise else []
    if not k.rowwise:
        relations = textbook.atoms(sp.core.relational.Relational)
        penv = _param_env(values, dtype)
        xs = []
        while len(xs) < count:
            x = rng.uniform(-6, 6)
            h = eps ** (1 / 3) * max(1.0, abs(x))
            if all(abs(x - c) > 20 * h for c in kinks) and \
                    not _flips(relations, penv, [x - 2 * h, x, x + 2 * h]):
                xs.append(x)
        x = np.array(xs, dtype=dtype)
        h = (ty(eps ** (1 / 3)) * np.maximum(ty(1), np.abs(x))).astype(dtype)

        def difference(step):
            xp, xm = (x + step).astype(dtype), (x - step).astype(dtype)
            with np.errstate(all="ignore"):
                return (k(xp, **kp).astype(np.float64) - k(xm, **kp).astype(np.float64)) / \
                    (xp.astype(np.float64) - xm.astype(np.float64))
        fd, fd2 = difference(h), difference((2 * h).astype(dtype))
        d = k.derivative(x, **kp).astype(np.float64)
        f = k(x, **kp).astype(np.float64)
        scale = np.maximum(1.0, np.maximum(np.abs(f), np.abs(d)))
        err, used = truncation_aware(d, fd, fd2, scale)
        if not used.any():
            return FiniteDifferenceResult(k.backend, dtype, 0, 0.0, bound, None)
        i = int(np.argmax(np.where(used, err, -1.0)))
        return FiniteDifferenceResult(k.backend, dtype, int(used.sum()), float(err[i]), bound,
                                      float(x[i]))
    # row-wise: directional derivative <v, J^T g> against (g·y(x + h v) - g·y(x - h v)) / 2h
    worst, where = 0.0, None
    h = eps ** (1 / 3)
    relations, penv = row_relations(k), _param_env(values, dtype)
    for _ in range(count // 10):
        for _tries in range(20):  # a row whose conditions hold along the whole step
            r = np.array([rng.gauss(0, 2) for _ in range(8)], dtype=dtype)
            g = np.array([rng.gauss(0, 1) for _ in range(8)], dtype=dtype)
            v = np.array([rng.gauss(0, 1) for _ in range(8)], dtype=dtype)
            if not _row_flips(relations, penv, [r - ty(2 * h) * v, r, r + ty(2 * h) * v]):
                break
        rp, rm = (r + ty(h) * v).astype(dtype), (r - ty(h) * v).astype(dtype)
        step = (rp.astype(np.float64) - rm.astype(np.float64))
        fd = (np.dot(g.astype(np.float64), k(rp, **kp).astype(np.float64) - k(rm, **kp).astype(np.float64)))
        an = float(np.dot(k.vjp(r, g, **kp).astype(np.float64), step))
        scale = max(1.0, float(np.max(np.abs(k(r, **kp)))), abs(an)) * float(np.max(np.abs(step)))
        err = abs(fd - an) / scale
        if err >= worst:
            worst, where = err, _short(r.tolist())
    return FiniteDifferenceResult(k.backend, dtype, count // 10, worst, bound * 8, where)

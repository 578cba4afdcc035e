"""Custom activations, two of the three ways (the third, inline formulas, is in the grammar):

* ``actdsl.Activation`` subclasses, as theanets users write them::

      class ThresholdedLinear(actdsl.Activation):
          def __call__(self, z):
              return z * (z > 1)

  registers ``thresholdedlinear`` (plus ``aliases``). ``__init__`` keyword arguments with
  defaults become spec arguments; ``params = {"r": 0.1}`` declares learnable per-unit
  parameters (available as ``self.r``); a ``derivative(self, z)`` method is checked against the
  exact derivative by :func:`check_derivative`.
* ``actdsl.register(name, expr)`` for a SymPy expression in a symbol named ``z``.
"""
from __future__ import annotations

import inspect
import math
import numbers
import random
from dataclasses import dataclass

import numpy as np
import sympy as sp

from . import budget
from .errors import ActdslError, ParameterError
from .registry import REGISTRY, Definition, Hyper, ParamDecl
from .stable import stabilize, to_elementary
from .sym import Sym, _expr


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError, ValueError):
        return False


def _const(value):
    return lambda units, shape, rng: np.full((units, *shape), float(value))


def _hyper_from_init(cls) -> tuple[Hyper, ...]:
    init = cls.__init__
    if init is object.__init__:
        return ()
    hyper = []
    for name, p in list(inspect.signature(init).parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty or isinstance(p.default, bool) or not isinstance(p.default, (int, float)):
            raise ActdslError(f"{cls.__name__}.__init__ argument {name!r} needs a number as its "
                              "default: spec arguments are numbers")
        if not _finite(p.default):
            raise ActdslError(f"{cls.__name__}.__init__ argument {name!r} needs a finite float64 "
                              "number as its default")
        hyper.append(Hyper(name, p.default, integer=isinstance(p.default, int)))
    return tuple(hyper)


class Activation:
    """Base class of custom activations (theanets style). Subclasses register themselves under
    their lower-cased class name; pass ``replace=True`` in the class statement to replace one::

        class Swish(actdsl.Activation, replace=True): ...
    """

    aliases: tuple[str, ...] = ()
    description: str = ""
    params: dict = {}

    def __init_subclass__(cls, register: bool = True, replace: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if register:
            _register_class(cls, replace)

    def __call__(self, z):  # pragma: no cover - subclasses define it
        raise NotImplementedError("an Activation subclass defines __call__(self, z)")


def _register_class(cls, replace: bool):
    hyper = _hyper_from_init(cls)
    params = tuple(ParamDecl(name, _const(init), description=f"learnable, init {init}")
                   for name, init in cls.params.items())

    def instance(h, p):
        obj = cls(**h)  # exact SymPy numbers: arithmetic with z stays exact
        for name, symbol in p.items():
            setattr(obj, name, Sym(symbol))
        return obj

    def build(u, h, p):
        try:
            out = instance(h, p)(Sym(u))
        except ActdslError:
            raise
        except RecursionError:
            raise ActdslError(f"{cls.__name__}.__call__ recurses without end (does it call "
                              "itself, or a spec that uses it?)") from None
        except Exception as e:
            raise ActdslError(f"{cls.__name__}.__call__ failed on a symbolic z: "
                              f"{type(e).__name__}: {str(e)[:200]}") from None
        return stabilize(_expr(out))

    extra = {"class": cls}
    if "derivative" in cls.__dict__:
        extra["derivative"] = lambda u, h, p: _expr(instance(h, p).derivative(Sym(u)))
    doc = (cls.description or (inspect.getdoc(cls) or "").split("\n")[0] or cls.__name__)
    REGISTRY.add(Definition(cls.__name__.lower(), doc, build, aliases=tuple(cls.aliases),
                            hyper=hyper, params=params, builtin=False, extra=extra),
                 replace=replace)


def register(name: str, expr, description: str = "", *, defaults: dict | None = None,
             learnable: dict | None = None, aliases: tuple[str, ...] = (), replace: bool = False):
    """Register ``expr``, a SymPy expression in a symbol named ``z``, as activation ``name``.

    Other symbols are hyper-parameters (``defaults={"alpha": 1.0}``, settable in specs as
    ``name(alpha=0.5)``) or learnable per-unit parameters (``learnable={"r": 0.1}``, the initial
    value). Returns the registered name."""
    if not isinstance(name, str):
        raise ActdslError(f"register() takes the activation's name as text, not "
                          f"{type(name).__name__}")
    expr = _expr(expr) if isinstance(expr, Sym) else expr
    if not isinstance(expr, sp.Basic):
        raise ActdslError(f"register() takes a SymPy expression in z, not {type(expr).__name__}; "
                          "for Python code, subclass actdsl.Activation")
    defaults, learnable = dict(defaults or {}), dict(learnable or {})
    for k, v in {**defaults, **learnable}.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ParameterError(f"{name!r}: the value of {k!r} must be a number, not "
                                 f"{type(v).__name__}")
        if not _finite(v):
            raise ParameterError(f"{name!r}: the value of {k!r} must be a finite float64 number")
    budget.check_powers(expr, repr(name))
    symbols = {s.name: s for s in expr.free_symbols}
    unknown = set(symbols) - {"z"} - set(defaults) - set(learnable)
    if unknown:
        raise ParameterError(f"{name!r}: symbols {sorted(unknown)} are neither z, defaults nor "
                             "learnable; say which they are")
    z_sym = symbols.get("z", sp.Symbol("z"))

    def build(u, h, p):
        mapping = {z_sym: u}
        mapping.update({symbols[k]: h[k] for k in defaults if k in symbols})
        mapping.update({symbols[k]: p[k] for k in learnable if k in symbols})
        return stabilize(expr.xreplace(mapping))

    hyper = tuple(Hyper(k, v, integer=isinstance(v, int) and not isinstance(v, bool))
                  for k, v in defaults.items())
    params = tuple(ParamDecl(k, _const(v), description=f"learnable, init {v}")
                   for k, v in learnable.items())
    REGISTRY.add(Definition(name.lower(), description or name, build, aliases=tuple(aliases),
                            hyper=hyper, params=params, builtin=False), replace=replace)
    return name.lower()


def unregister(name: str) -> None:
    """Remove a custom activation (built-ins stay)."""
    d = REGISTRY.lookup(name)
    if d.builtin:
        raise ActdslError(f"{d.key!r} is built in and cannot be removed")
    REGISTRY.remove(d.key)


@dataclass
class DerivativeReport:
    key: str
    equal: bool
    method: str
    first_difference: float | None = None
    expected: float | None = None
    supplied: float | None = None

    def __str__(self):
        if self.equal:
            return f"{self.key}: the supplied derivative equals the exact one ({self.method})"
        return (f"{self.key}: the supplied derivative differs from the exact one at "
                f"z = {self.first_difference!r}: supplied {self.supplied!r}, exact {self.expected!r}")


def check_derivative(key: str, points: int = 200, seed: int = 0) -> DerivativeReport:
    """Compare an Activation subclass's own ``derivative`` with the exact derivative of its
    ``__call__``: SymPy proves the difference zero, or exact evaluation at rational points on
    every piece (kinks avoided) finds the first point where they differ."""
    from .derive import to_piecewise
    from .ir import z

    d = REGISTRY.lookup(key)
    if "derivative" not in d.extra:
        raise ActdslError(f"{d.key!r} supplies no derivative of its own to check")
    hyper = {h.name: sp.nsimplify(h.default) for h in d.hyper}
    psyms = {p.name: sp.Symbol(p.name, real=True) for p in d.params}
    values = {s: sp.Rational(1, 10) * (i + 1) for i, s in enumerate(psyms.values())}
    exact = sp.diff(to_piecewise(d.build(z, hyper, psyms)), z).xreplace(values)
    supplied = to_piecewise(d.extra["derivative"](z, hyper, psyms)).xreplace(values)
    try:
        if sp.simplify(to_elementary(exact - supplied)) == 0:
            return DerivativeReport(d.key, True, "SymPy simplified the difference to 0")
    except Exception:  # simplify gives up on some Piecewise forms: fall back to evaluation
        pass
    rng = random.Random(seed)
    for _ in range(points):
        t = sp.Rational(rng.randint(-6000, 6000), rng.choice([7, 97, 997]))
        a = sp.N(to_elementary(exact).subs(z, t), 40)
        b = sp.N(to_elementary(supplied).subs(z, t), 40)
        if abs(a - b) > sp.Float(10) ** -30 * (1 + abs(a)):
            return DerivativeReport(d.key, False, "exact evaluation", float(t), float(a), float(b))
    return DerivativeReport(d.key, True, f"exact evaluation at {points} rational points")

"""AST -> IR: resolve names in the registry, fix hyper-parameters, name the learnable parameters,
and compose the terms left to right into one SymPy expression."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import sympy as sp

from .ast import Spec, Term, format_value
from .errors import ParameterError, caret_picture, close_names
from .ir import IR, Param, z
from .registry import REGISTRY, Definition, Hyper


def exact(value) -> sp.Expr:
    """A spec number as an exact SymPy number: 0.1 becomes 1/10, as the user wrote it."""
    if isinstance(value, int):
        return sp.Integer(value)
    f = Fraction(repr(float(value)))
    return sp.Rational(f.numerator, f.denominator)


def lower(spec: Spec, text: str = "") -> IR:
    u, shown = z, z
    params: list[Param] = []
    for index, term in enumerate(spec.terms):
        where = caret_picture(text, *term.pos) if text and term.pos else ""
        d = REGISTRY.lookup(term.key, context=where)
        hyper, fixed = _arguments(d, term, where)
        symbols = {}
        for decl in d.params:
            shape = decl.shape(hyper)
            if decl.name in fixed:
                symbols[decl.name] = _fixed_param(d, decl.name, fixed[decl.name], shape, where)
                continue
            name = _unique(decl.name, params, index)
            syms = (sp.Symbol(name, real=True),) if not shape else tuple(
                sp.Symbol(f"{name}_{i}", real=True) for i in range(shape[0]))
            params.append(Param(name, syms, shape, _bind_init(decl.init, shape), decl.description))
            symbols[decl.name] = syms[0] if not shape else syms
        exact_hyper = {k: (v if isinstance(v, int) and d.hyper_named(k).integer else exact(v))
                       for k, v in hyper.items()}
        u = d.build(u, exact_hyper, symbols)
        shown = (d.display or d.build)(shown, exact_hyper, symbols)
    return IR(u, tuple(params), shown)


def _bind_init(init, shape):
    return lambda units, rng=None: np.asarray(init(units, shape, rng), dtype=np.float64)


def _unique(name: str, params: list[Param], index: int) -> str:
    taken = {p.name for p in params}
    return name if name not in taken else f"{name}_{index + 1}"


def _arguments(d: Definition, term: Term, where: str) -> tuple[dict, dict]:
    """Split a term's arguments into hyper-parameter values (defaults filled in) and fixed
    values of learnable parameters; validate both."""
    hyper = {h.name: h.default for h in d.hyper}
    fixed = {}
    if isinstance(term.variant, int):
        if d.count_hyper is None:
            raise ParameterError(f"{d.key!r} takes no count; '{term.name}:{term.variant}' is not "
                                 f"a key{_where(where)}")
        hyper[d.count_hyper] = term.variant
    seen = set()
    for name, value in term.args:
        if name in seen:
            raise ParameterError(f"argument {name!r} given twice to {d.key!r}{_where(where)}")
        seen.add(name)
        if d.param_named(name) is not None:
            fixed[name] = value
        elif (h := d.hyper_named(name)) is not None:
            if name == d.count_hyper and isinstance(term.variant, int) and value != term.variant:
                raise ParameterError(f"{d.key!r} got {name} twice: ':{term.variant}' and "
                                     f"{name}={format_value(value)}{_where(where)}")
            hyper[name] = _check_hyper(d, h, value, where)
        else:
            known = [h.name for h in d.hyper] + [p.name for p in d.params]
            hint = close_names(name, known)
            msg = f"{d.key!r} has no argument {name!r}; "
            msg += (f"did you mean {hint[0]!r}?" if hint else
                    f"its arguments are {', '.join(known)}" if known else "it takes no arguments")
            raise ParameterError(msg + _where(where))
    if d.count_hyper:
        hyper[d.count_hyper] = _check_hyper(d, d.hyper_named(d.count_hyper), hyper[d.count_hyper], where)
    return hyper, fixed


def _check_hyper(d: Definition, h: Hyper, value, where: str):
    label = f"{d.key}'s {h.name}"
    if isinstance(value, tuple):
        raise ParameterError(f"{label} is one number, not a list{_where(where)}")
    if h.integer and not isinstance(value, int):
        raise ParameterError(f"{label} must be a whole number, not {format_value(value)}{_where(where)}")
    if not np.isfinite(value):
        raise ParameterError(f"{label} must be finite{_where(where)}")
    if h.positive and not value > 0:
        raise ParameterError(f"{label} must be above 0, not {format_value(value)}{_where(where)}")
    if h.minimum is not None and value < h.minimum:
        raise ParameterError(f"{label} must be at least {format_value(h.minimum)}, not "
                             f"{format_value(value)}{_where(where)}")
    if h.maximum is not None and value > h.maximum:
        raise ParameterError(f"{label} must be at most {format_value(h.maximum)}, not "
                             f"{format_value(value)}{_where(where)}")
    return value


def _fixed_param(d: Definition, name: str, value, shape, where: str):
    label = f"{d.key}'s parameter {name}"
    values = value if isinstance(value, tuple) else None
    if not shape:
        if values is not None:
            raise ParameterError(f"{label} is one number per unit; give one number{_where(where)}")
        return exact(value)
    (k,) = shape
    if values is None:
        return tuple(exact(value) for _ in range(k))
    if len(values) != k:
        raise ParameterError(f"{label} needs {k} values (one per piece), got {len(values)}"
                             f"{_where(where)}")
    return tuple(exact(v) for v in values)


def _where(picture: str) -> str:
    return "\n" + picture if picture else ""

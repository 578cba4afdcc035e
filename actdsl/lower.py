"""AST -> IR: resolve names in the registry, fix hyper-parameters, name the learnable parameters,
and compose the terms left to right into one SymPy expression."""
from __future__ import annotations

import operator
from fractions import Fraction

import numpy as np
import sympy as sp

from .ast import BinOp, Call, Formula, Neg, Num, Spec, Term, Var, format_value
from .errors import ActdslError, ParameterError, UnknownActivationError, caret_picture, close_names
from .ir import (IR, Param, RowMax, RowReduction, RowSum, n, reductions, row_mean, row_std, row_var,
                 z)
from .limits import guard_input
from .registry import REGISTRY, Definition, Hyper
from . import budget, derive, stable, stage
from .stable import sqrt0


def exact(value) -> sp.Expr:
    """A spec number as an exact SymPy number: 0.1 becomes 1/10, as the user wrote it."""
    if isinstance(value, int):
        return sp.Integer(value)
    f = Fraction(repr(float(value)))
    return sp.Rational(f.numerator, f.denominator)


def lower(spec: Spec, text: str = "", staged: bool = False) -> IR:
    """The spec as one expression. ``staged``: the input of each term after the first, where it
    holds branches, row reductions or many nodes, as a :mod:`~actdsl.stage` node (for specs that
    are over a compile budget lowered the plain way)."""
    u = z
    params: list[Param] = []
    displays = []  # each term's display, built on the display of the terms before it
    if len(spec.terms) > budget.limit("terms"):
        raise budget.exceeded("terms", "this spec", len(spec.terms))
    for index, term in enumerate(spec.terms):
        where = caret_picture(text, *term.pos) if text and term.pos else ""
        # before each term, not after: one more term can cost many times what the last did
        conditions = budget.check_expression(u, f"the spec up to term {index + 1}", where)
        if staged and _worth_a_stage(u):  # (the stage's body checked above, as the plain u)
            _check_constants(u)
            u = stage.make(u, index)
            conditions = 0
        if isinstance(term, Formula):
            u = signed_conditions(
                _rowwise_after(u, lambda v: _applied(lambda w: formula(term.expr, w, where), v)))
            if u.has(sp.I, sp.zoo):
                raise ParameterError("this formula is complex or undefined for every z (sqrt(-1), "
                                     f"1/0): activations are real functions{_where(where)}")
            displays.append(lambda v, e=term.expr, where=where: formula(e, v, where, display=True))
            continue
        d = REGISTRY.lookup(term.key, context=where)
        hyper, fixed = _arguments(d, term, where)
        _check_pieces(d, hyper, where, conditions)
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
        u = _rowwise_after(u, lambda v: _applied(lambda w: d.build(w, exact_hyper, symbols), v))
        u = signed_conditions(u)
        displays.append(lambda v, f=d.display or d.build, h=exact_hyper, s=symbols: f(v, h, s))
    budget.check_expression(u)
    _check_constants(u)
    if staged:  # one formula would be the exponential tree the stages avoid (SymPy's Max
        # orders its arguments by walking them as trees: minutes); it is shown term by term
        return IR(u, tuple(params), u)
    # the display last: SymPy simplifies it as it is built (seconds for some compositions of
    # branches), which a spec over the budget need not wait for
    shown = z
    for display in displays:
        shown = _applied(display, shown)
    return IR(u, tuple(params), shown)


#: strictly increasing, with f(0) = 0: f(w) has the sign of w, at ±inf too
_SIGN_KEEPING = (sp.tanh, sp.sinh, sp.asinh, sp.atan, sp.erf, stable.tanhshrink, stable.softsign,
                 stable.expm1)


def signed_conditions(u: sp.Expr) -> sp.Expr:
    """``u`` with each comparison of a sign-keeping function with 0 made on its argument
    (tanhshrink(w) <= 0 as w <= 0), and sigmoid(w) against 1/2 as w against 0: the same
    function, and the kernels compare what they have exactly. Compared as written, tanhshrink's
    w³/3 underflows to 0 for w below 1e-108 in float64, and trel+tanhshrink+rect:max took the
    flat branch there (a derivative 0 where it is w², 6.8e-269 at 8.3e-135)."""
    half = sp.Rational(1, 2)

    def strip(rel):
        a, b = rel.lhs, rel.rhs
        changed = False
        while True:
            if b == 0 and isinstance(a, _SIGN_KEEPING):
                a = a.args[0]
            elif a == 0 and isinstance(b, _SIGN_KEEPING):
                b = b.args[0]
            elif b == half and isinstance(a, stable.sigmoid):
                a, b = a.args[0], sp.S.Zero
            elif a == half and isinstance(b, stable.sigmoid):
                a, b = sp.S.Zero, b.args[0]
            else:
                break
            changed = True
        return rel.func(a, b) if changed else rel
    return derive.rebuild(u, lambda e: isinstance(e, sp.core.relational.Relational) and
                          isinstance(e.lhs, sp.Expr) and isinstance(e.rhs, sp.Expr), strip)


def _worth_a_stage(u: sp.Expr) -> bool:
    """Whether the terms so far hold what the next term would repeat (branches, row statistics)
    or are large; a small smooth input (tanh(z)) is built on directly, as when not staged."""
    return u != z and (not budget.small(u) or u.has(sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.sign,
                                                    stable.FirstMax, RowReduction))


def _rowwise_after(u: sp.Expr, apply) -> sp.Expr:
    """``apply(u)``; where that is the first row-wise term, applied to ``u`` with the limits of
    the elementwise terms before it at ±inf (``limits.guard_input``)."""
    out = apply(u)
    if u != z and reductions(out) and not reductions(u):
        guarded = guard_input(u)
        if guarded is not u:
            out = apply(guarded)
    return out


def _applied(build, u: sp.Expr) -> sp.Expr:
    """``build(u)``: a term applied to the terms before it. A large ``u`` is put into the term
    built on a placeholder, without SymPy's evaluation of what holds it (derive.substitute); a
    small one is built on directly, so that SymPy still simplifies relu(2) or tanh(0). So is a
    stage, on which SymPy's Piecewise looked for a period (0.3-0.7 s of tlin's on one in
    ``sparse_plus+tlin+norm:mean+tlin+norm:z``). And so is a row-wise value of a piecewise
    input: SymPy's Piecewise folds a condition on one (relu's u <= 0) into if-then-else over the
    branches of the input's Piecewise, and took them inside the row's reductions too, as if the
    whole row were on this element's branch: relu+softmin+relu was 0 where softmin is 0.16
    (the max over the row of -relu(z) became -z's, for z > 0)."""
    if budget.small(u) and not u.has(stage.Stage) and not _pieces_in_a_row(u):
        return build(u)
    placeholder = sp.Dummy("u", real=True)
    return derive.substitute(build(placeholder), placeholder, u)



def _pieces_in_a_row(u: sp.Expr) -> bool:
    """Whether ``u`` has a row reduction over a Piecewise."""
    return any(r.has(sp.Piecewise) for r in u.atoms(RowReduction))


def _check_constants(expr: sp.Expr) -> None:
    """Exact constants beyond float64's range would be printed as inf (10**400 * z)."""
    for number in expr.atoms(sp.Rational):
        if abs(number) > _LARGEST or (number != 0 and abs(number) < _SMALLEST):
            shown = str(number)
            shown = shown if len(shown) < 40 else f"a number of {len(shown)} digits"
            raise ParameterError(f"the spec computes the constant {shown}, beyond float64's range "
                                 "(about 4.9e-324 to 1.8e308); write smaller numbers")


_LARGEST = sp.Integer(int(np.finfo(np.float64).max))
_SMALLEST = sp.Rational(1, 2 ** 1074)


def _check_pieces(d: Definition, hyper: dict, where: str, conditions: int) -> None:
    """A count of pieces (maxout:k) is k - 1 comparisons (a running maximum: stable.FirstMax),
    after the input's own ``conditions``, which the pieces share. Refused before they are built
    when that passes the budget."""
    if d.count_hyper and isinstance(hyper.get(d.count_hyper), int):
        k = hyper[d.count_hyper]
        total = k - 1 + conditions
        if total > budget.limit("branch_conditions"):
            what = f"{d.key} with {k} pieces" + (" on a piecewise input" if conditions else "")
            raise budget.exceeded("branch_conditions", what, total, where)


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
    problem = d.extra.get("check", lambda h: None)(hyper)  # a rule between arguments
    if problem:
        raise ParameterError(f"{d.key}: {problem}{_where(where)}")
    return hyper, fixed


def _check_hyper(d: Definition, h: Hyper, value, where: str):
    label = f"{d.key}'s {h.name}"
    if isinstance(value, tuple):
        raise ParameterError(f"{label} is one number, not a list{_where(where)}")
    if h.integer and not isinstance(value, int):
        raise ParameterError(f"{label} must be a whole number, not {format_value(value)}{_where(where)}")
    if not _finite(value):
        raise ParameterError(f"{label} must be a finite float64 number{_where(where)}")
    if h.positive and not value > 0:
        raise ParameterError(f"{label} must be above 0, not {format_value(value)}{_where(where)}")
    if h.minimum is not None and value < h.minimum:
        raise ParameterError(f"{label} must be at least {format_value(h.minimum)}, not "
                             f"{format_value(value)}{_where(where)}")
    if h.maximum is not None and value > h.maximum:
        raise ParameterError(f"{label} must be at most {format_value(h.maximum)}, not "
                             f"{format_value(value)}{_where(where)}")
    return value


def _finite(value) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except OverflowError:  # an int past float64's range
        return False


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


# -- inline formulas -------------------------------------------------------------------------
def _indicator(cond):
    return sp.Piecewise((1, cond), (0, True))


def _select(c, a, b):
    if isinstance(c, sp.Piecewise) and len(c.args) == 2 and c.args[0][0] == 1 and c.args[1][0] == 0:
        return sp.Piecewise((a, c.args[0][1]), (b, True))
    return sp.Piecewise((a, sp.Ne(c, 0)), (b, True))


_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
               "**": derive.power}
_COMPARE = {">": sp.Gt, ">=": sp.Ge, "<": sp.Lt, "<=": sp.Le, "==": sp.Eq, "!=": sp.Ne}
_ELEMENTARY = {"exp": sp.exp, "log": sp.log, "tanh": stable.tanh, "sqrt": sp.sqrt, "abs": sp.Abs,
               "erf": sp.erf, "sigmoid": stable.sigmoid, "softplus": stable.softplus,
               "expm1": stable.expm1, "log1p": stable.log1p, "sin": sp.sin, "cos": sp.cos}
_ROW = {"mean": row_mean, "sum": RowSum, "std": row_std, "var": row_var}
#: the same as documentation writes them (the computed forms scale and shift the row first)
_ROW_SHOWN = {"mean": lambda a: RowSum(a) / n, "sum": RowSum,
              "std": lambda a: sqrt0(RowSum((a - RowSum(a) / n) ** 2) / n),
              "var": lambda a: RowSum((a - RowSum(a) / n) ** 2) / n}
_FUNCTION_NAMES = sorted([*_ELEMENTARY, *_ROW, "where", "max", "min", "maximum", "minimum", "clip"])


def _short(number) -> str:
    text = str(number)
    return text if len(text) <= 20 else f"<{len(text)} digits>"


def formula(node, u: sp.Expr, where: str = "", display: bool = False) -> sp.Expr:
    """An inline formula's AST as SymPy, with ``z`` bound to ``u`` (the previous term's output).
    Only the names below and registered activations can be called: nothing is evaluated."""

    def go(e):
        if isinstance(e, Num):
            return exact(e.value)
        if isinstance(e, Var):
            if e.name == "z":
                return u
            if e.name == "pi":
                return sp.pi
            if e.name == "e":
                return sp.E
            raise ParameterError(f"unknown name {e.name!r} in a formula: formulas are over z "
                                 f"(constants pi and e){_where(where)}")
        if isinstance(e, Neg):
            return -go(e.arg)
        if isinstance(e, BinOp):
            a, b = go(e.left), go(e.right)
            if e.op in _COMPARE:
                return bounded(_indicator(_COMPARE[e.op](a, b)))
            if e.op == "**" and not budget.power_fits(a, b):
                raise ParameterError(f"the power {_short(a)}**{_short(b)} in a formula is beyond "
                                     f"float64's range, or too large to compute exactly; write a "
                                     f"smaller number{_where(where)}")
            result = _ARITHMETIC[e.op](a, b)
            return bounded(result) if e.op == "**" else result
        if isinstance(e, Call):
            return bounded(call(e))
        raise ActdslError(f"unexpected formula node {type(e).__name__}")  # pragma: no cover

    def bounded(result):
        """Powers, comparisons and calls are where branches multiply (a power of a Piecewise
        folds into one with twice the conditions): each result is measured before it is used."""
        budget.check_expression(result, "this formula", where)
        return result

    def arity(e, *counts):
        if len(e.args) not in counts or e.kwargs:
            want = " or ".join(str(c) for c in counts)
            raise ParameterError(f"{e.name}() takes {want} argument(s) and no keywords, got "
                                 f"{len(e.args)}{' and keywords' if e.kwargs else ''}{_where(where)}")
        return [go(a) for a in e.args]

    def call(e: Call):
        name = e.name
        if name in _ELEMENTARY:
            (a,) = arity(e, 1)
            return _ELEMENTARY[name](a)
        if name in _ROW:
            (a,) = arity(e, 1)
            return (_ROW_SHOWN if display else _ROW)[name](a)
        if name == "where":
            return _select(*arity(e, 3))
        if name in ("max", "min", "maximum", "minimum"):
            args = arity(e, 1, 2, 3, 4) if name in ("max", "min") else arity(e, 2)
            if len(args) == 1:  # one argument: over the row
                return RowMax(args[0]) if name == "max" else -RowMax(-args[0])
            return sp.Max(*args) if name.startswith("max") else sp.Min(*args)
        if name == "clip":
            x, lo, hi = arity(e, 3)
            return sp.Max(lo, sp.Min(hi, x))
        if name in REGISTRY:
            return activation(e)
        raise UnknownActivationError(name, [*_FUNCTION_NAMES, *REGISTRY.names()],
                                     what="function", context=where)

    def activation(e: Call):
        d = REGISTRY.lookup(e.name)
        if len(e.args) != 1:
            raise ParameterError(f"{d.key}() in a formula takes one argument (what to apply it "
                                 f"to), got {len(e.args)}{_where(where)}")
        hyper, fixed = _arguments(d, Term(e.name, None, e.kwargs), where)
        symbols = {}
        for decl in d.params:
            if decl.name not in fixed:
                raise ParameterError(
                    f"{d.key}'s learnable parameter {decl.name!r} cannot be learned inside a "
                    f"formula; fix it ({d.key}(z, {decl.name}=0.1)) or use {d.key!r} as a term"
                    f"{_where(where)}")
            symbols[decl.name] = _fixed_param(d, decl.name, fixed[decl.name], decl.shape(hyper), where)
        exact_hyper = {k: (v if isinstance(v, int) and d.hyper_named(k).integer else exact(v))
                       for k, v in hyper.items()}
        build = (d.display or d.build) if display else d.build
        return build(go(e.args[0]), exact_hyper, symbols)

    result = go(node)
    _check_real(result, where)
    return result if display else stable.stabilize(result)


def _check_real(expr: sp.Expr, where: str) -> None:
    """Refuse a constant that is not a real number: (-8)**(1/3) is a complex cube root to SymPy
    (2·(-1)^(1/3)), which NumPy would cast to 2 with a warning and Numba compute as NaN. A power
    of a negative *varying* base with a non-integer exponent is NaN at run time, as IEEE pow
    gives (write -(8**(1/3)) or cbrt-like forms explicitly)."""
    for e in sp.preorder_traversal(expr):
        if getattr(e, "is_number", False) and e.is_extended_real is False:
            raise ParameterError(f"{str(e)[:60]} is not a real number (a power of a negative "
                                 "base with a fractional exponent, the root or log of a negative "
                                 "number): actdsl computes in real numbers; for a real cube root "
                                 f"of a negative constant write it as -(8**(1/3)){_where(where)}")

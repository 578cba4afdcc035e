"""Formulas a textbook would print, for every spec (built-in, composed or custom).

The compiler's expressions are written for finite arithmetic: softmax carries its max shift,
gelu its far-tail branches, the standard deviation a square root whose derivative at 0 is 0,
selu 32-digit constants. None of that belongs on a documentation page. ``formulas(spec)``
starts from the same lowered spec and applies, in order, rules that hold for any spec:

1. *named constants*: long decimals and rationals with large denominators become symbols (α, λ
   for selu's, ε for 10⁻ᵏ, c for the rest), their values listed once in ``constants``;
2. *no numerical guards*: a max shift is dropped (the result does not depend on it), branches
   that only exist for |z| ≥ 20 (far tails) are dropped, √ replaces the guarded square root,
   and row sums are expanded linearly, which makes Σ_l (z_l − z̄) vanish;
3. *the simplest of equivalent forms*: derivatives are taken both of the stable expression and
   of the display formula, each also simplified and factored, and, where g can be solved for z,
   rewritten in terms of g's own output y (σ(z)(1−σ(z)), 1 − tanh²(z), y_i(δ_ij − y_j)); the
   smallest by ``size`` (nodes of the expression tree) is kept, the output form on a tie.

Every rule is an identity wherever the function is differentiable and the row not constant;
tests check each displayed formula against a high-precision numerical derivative of g.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy as sp

from .derive import derivative as elementwise_derivative, i_index, j_index, jacobian_entry
from .derive import make_plan, to_piecewise, z_i, z_j
from .ir import IR, RowReduction, RowShift, RowSum, n, z
from .stable import EVALUATED_PIECES, Primitive, shifted, sigmoid, sqrt0, tanh
from .errors import ActdslError
from .stage import Stage

y = sp.Symbol("y", real=True)
y_i, y_j = sp.Symbol("y_i", real=True), sp.Symbol("y_j", real=True)
#: the row's standard deviation (ddof 0), as textbooks name it in norm:std's and norm:z's Jacobians
s = sp.Symbol("s", positive=True)


def _variance_of(e):
    """u when ``e`` is Σ_l (u_l − ū)² (= n s², s the standard deviation of the row u), else None."""
    if not isinstance(e, RowSum) or not (e.args[0].is_Pow and e.args[0].exp == 2):
        return None
    base = e.args[0].base
    means = [a for a in sp.Add.make_args(base) if a.has(RowSum) and not _free_z_only(a)]
    if len(means) != 1:
        return None
    u = base - means[0]
    return u if sp.expand(means[0] + RowSum(u) / n) == 0 else None


def _free_z_only(a) -> bool:
    masked, _ = _atoms_as_symbols(a)
    return z in masked.free_symbols


def _named_std(expr: sp.Expr) -> sp.Expr:
    sums = [a for a in expr.atoms(RowSum) if _variance_of(a) is not None]
    return expr.subs({sums[0]: n * s ** 2}) if len(sums) == 1 else expr


def _std_of(display: sp.Expr) -> sp.Expr | None:
    """The standard deviation that ``s`` stands for in ``display``'s derivative."""
    sums = [a for a in display.atoms(RowSum) if _variance_of(a) is not None]
    return sp.sqrt(sums[0] / n) if len(sums) == 1 else None


def _std_meaning(display: sp.Expr) -> str:
    us = {_variance_of(a) for a in display.atoms(RowSum)} - {None}
    if us == {z}:
        return "the row's standard deviation"
    return "the standard deviation over the row of what the normalization gets"


TAIL = 20  # a branch on |z| beyond this is a numerical guard (no float tells it from ±inf)


def size(expr: sp.Expr) -> int:
    """Operations in the expression (SymPy's count_ops: +, −, ×, ÷, powers, function calls),
    what "simplest" means here."""
    return int(sp.count_ops(expr))


def nodes(expr: sp.Expr) -> int:
    """Nodes of the expression tree: the tie-breaker between forms of equal ``size``."""
    return sum(1 for _ in sp.preorder_traversal(expr))


def _smallest(exprs):
    return min(exprs, key=lambda e: (size(e), nodes(e)))


@dataclass(frozen=True)
class Formulas:
    """``g`` and ``dg`` (g'(z), or the Jacobian entry ∂y_i/∂z_j of a row-wise spec) as
    textbooks print them; ``constants`` maps each named constant to its value; ``where`` lists
    the other symbols the formulas use (y, s) with their meaning."""

    g: sp.Expr
    dg: sp.Expr
    rowwise: bool
    constants: dict = field(default_factory=dict)
    where: tuple[tuple[sp.Symbol, str], ...] = ()
    #: what the abbreviations stand for, as expressions (s: the standard deviation it names)
    defs: dict = field(default_factory=dict)


# -- 1. named constants ----------------------------------------------------------------------------
def _known_names():
    from .library import _SELU_ALPHA, _SELU_SCALE
    return {float(_SELU_ALPHA): "alpha", float(_SELU_SCALE): "lambda"}


def _is_eps(r: sp.Rational) -> bool:
    return r.p == 1 and r.q >= 10 ** 4 and str(r.q).rstrip("0") == "1"


def name_constants(*exprs: sp.Expr) -> tuple[list[sp.Expr], dict]:
    """The same expressions with long decimals and awkward rationals replaced by symbols (one
    symbol per value across all of ``exprs``), and the symbol -> value table."""
    known, table, used = _known_names(), {}, set()

    def symbol_for(value):
        for sym, v in table.items():
            if v == value:
                return sym
        name = known.get(float(value)) or ("varepsilon" if isinstance(value, sp.Rational)
                                           and _is_eps(value) else None)
        if name is None or name in used:
            name = "c" if "c" not in used else f"c_{len(used)}"
        used.add(name)
        sym = sp.Symbol(name, positive=value > 0)
        table[sym] = value
        return sym

    def awkward(e):
        if isinstance(e, sp.Float):
            return len(sp.Float(e, 15).__str__().rstrip("0")) > 8
        if isinstance(e, sp.Rational) and not e.is_Integer:
            return abs(e.q) > 100
        return False

    out = []
    for expr in exprs:
        found = sorted({a for a in expr.atoms(sp.Number) if awkward(abs(a))}, key=abs)
        mapping = {}
        for a in found:
            sym = symbol_for(abs(a))
            mapping[a] = sym if a > 0 else -sym
        out.append(expr.xreplace(mapping))
    return out, table


# -- 2. no numerical guards -----------------------------------------------------------------------
def _far_tail(cond) -> bool:
    """``z < -40``, ``z > 40`` and the like."""
    if not isinstance(cond, (sp.StrictLessThan, sp.StrictGreaterThan, sp.LessThan,
                             sp.GreaterThan)):
        return False
    lhs, rhs = cond.lhs, cond.rhs
    const = rhs if rhs.is_number else lhs if lhs.is_number else None
    return const is not None and abs(const) >= TAIL


def unguarded(expr: sp.Expr) -> sp.Expr:
    def drop_tails(e):
        """Guard branches dropped; neighbouring branches with one value merged (relu6' is 0 for
        z ≤ 0 ∨ z ≥ 6: derivatives are built unevaluated, SymPy's evaluation merges them)."""
        kept = [(v, c) for v, c in e.args if not _far_tail(c)]
        if len(kept) == 1:
            return kept[0][0]
        return sp.Piecewise(*kept)

    expr = expr.replace(lambda e: isinstance(e, shifted) and e.args[1].has(RowShift),
                        lambda e: e.args[0])
    expr = expr.replace(lambda e: isinstance(e, sqrt0), lambda e: sp.sqrt(e.args[0]))
    expr = expr.replace(lambda e: isinstance(e, sp.Piecewise), drop_tails)
    expr = expr.replace(lambda e: isinstance(e, sp.Piecewise), _refold)
    return linear_sums(expr)


def _refold(e: sp.Piecewise) -> sp.Expr:
    """The branches derive.to_piecewise makes of |u| and of its derivative, as |u| and sgn u."""
    if len(e.args) == 2 and e.args[1].cond == True and isinstance(e.args[0].cond, sp.StrictLessThan):  # noqa: E712
        (neg, cond), (pos, _) = e.args
        u = cond.lhs if cond.rhs == 0 else None
        if u is not None and neg == -pos and pos == u:
            return sp.Abs(u)
        if u is not None and (neg, pos) == (-1, 1):
            return sp.sign(u)
    return e


def linear_sums(expr: sp.Expr) -> sp.Expr:
    """Σ(a + b) = Σa + Σb, Σ(c f) = c Σf, Σc = n c for c free of z: Σ(z − Σz/n) becomes 0."""
    def split(e):
        body, back = _atoms_as_symbols(e.args[0])
        terms = []
        for term in sp.Add.make_args(sp.expand_mul(body)):
            const, var = term.as_independent(z, as_Add=False)
            terms.append((const.xreplace(back), var.xreplace(back)))
        return terms

    def is_target(e):
        if not isinstance(e, RowSum):
            return False
        terms = split(e)
        return len(terms) > 1 or terms[0][0] != 1

    def expand(e):
        return sp.Add(*[c * (n if v == 1 else RowSum(v)) for c, v in split(e)])

    return expr.replace(is_target, expand)


# -- 3. the simplest form ---------------------------------------------------------------------------
def _variants(expr: sp.Expr) -> list[sp.Expr]:
    """``expr`` and equivalent forms: simplified, factored, and its terms grouped over each
    shared denominator ((δ_ij − 1/n)/(s + ε) rather than one fraction)."""
    out = [expr]
    if nodes(expr) > 400:
        return out  # no textbook prints a formula this long; SymPy's rewrites take minutes on it
    for f in (sp.simplify, _factor, _grouped, _folded):
        if f is sp.simplify and nodes(expr) > 40:
            continue  # slow on long expressions, and rarely shorter there
        try:
            out.append(f(expr))
            out.append(f(out[1]))
        except Exception:  # noqa: BLE001  (SymPy's simplifiers may give up on an expression)
            pass
    return out


#: function applications (each a generator of the polynomial SymPy factors) past which a
#: factorization is not tried: with 15 (a custom formula summing exp, log, tanh, erf...) Wang's
#: algorithm ran for more than 10 minutes in one process and 50 s in another
FACTOR_GENERATORS = 6


def _factor(expr: sp.Expr) -> sp.Expr:
    """sp.factor, where the expression has few generators, with SymPy's random number generator
    seeded (Wang's algorithm draws evaluation points: unseeded, its time and the form it
    returns varied between processes) and its state restored after."""
    if len(expr.atoms(sp.Function)) > FACTOR_GENERATORS:
        return expr
    from sympy.core import random as sprandom
    saved = sprandom.rng.getstate(), sprandom._assumptions_rng.getstate()
    sprandom.seed(0)
    try:
        return sp.factor(expr)
    finally:
        sprandom.rng.setstate(saved[0])
        sprandom._assumptions_rng.setstate(saved[1])


def _folded(expr: sp.Expr) -> sp.Expr:
    """Sums and products of branches in z as one set of branches over intervals (hardswish')."""
    if not expr.has(sp.Piecewise) or expr.free_symbols != {z}:
        return expr
    folded = sp.piecewise_fold(expr)
    if not isinstance(folded, sp.Piecewise):
        return expr
    merged: dict[sp.Expr, sp.Set] = {}
    for value, where in folded.as_expr_set_pairs(sp.S.Reals):
        value = sp.factor(value)
        merged[value] = merged.get(value, sp.S.EmptySet) | where
    parts = sorted(((v, w) for v, w in merged.items() if w is not sp.S.EmptySet),
                   key=lambda p: (p[1].inf, p[1].sup))
    if len(parts) == 1:
        return parts[0][0]
    return sp.Piecewise(*[(v, w.as_relational(z)) for v, w in parts[:-1]], (parts[-1][0], True))


def _grouped(expr: sp.Expr) -> sp.Expr:
    """One fraction P/Q split at each sum A in Q (P = A q + r): −y_i y_j/(n s) + (δ − 1/n)/(s+ε)
    rather than one long fraction; each part factored."""
    num, den = sp.cancel(expr).as_numer_denom()
    sums = [f for f in sp.Mul.make_args(sp.factor(den)) if f.is_Add]
    if not sums:
        return expr
    a, forms = sums[0], [expr]
    for gen in sorted(a.free_symbols, key=str):
        try:
            q, r = sp.div(sp.expand(num), a, gen)
        except (sp.PolynomialError, sp.GeneratorsNeeded):
            continue
        if q != 0:
            rest = sp.factor(r / den)
            forms.append(sp.factor(q / sp.cancel(den / a)) + _smallest([rest, _per_sum(rest)]))
    return _smallest(forms)


def _per_sum(expr: sp.Expr) -> sp.Expr:
    """(n δ − 1)/(n(s+ε)) as (δ − 1/n)/(s+ε)."""
    num, den = expr.as_numer_denom()
    sums = sp.Mul(*[f for f in sp.Mul.make_args(den) if f.is_Add])
    return sp.expand(num / (den / sums)) / sums


def _atoms_as_symbols(expr: sp.Expr):
    forward = {a: sp.Dummy(f"R{k}", real=True) for k, a in enumerate(expr.atoms(RowReduction))}
    return expr.xreplace(forward), {v: k for k, v in forward.items()}


def _inverse(g: sp.Expr, out: sp.Symbol, var: sp.Symbol):
    """z (as ``var``) as a function of g's output, where g peels into invertible steps (sums and
    products with row constants, exp, 1/u, tanh, ...); else None."""
    if g.has(sp.Piecewise, sp.Max, sp.Min, sp.Abs):
        return None
    plain, back = _atoms_as_symbols(g)
    plain = plain.replace(lambda e: isinstance(e, Primitive), lambda e: e.elementary())
    expr, inv = plain.subs(z, var), out
    for _ in range(12):
        if expr == var:
            return inv.xreplace(back)
        if expr.is_Add or expr.is_Mul:
            rest, dep = expr.as_independent(var, as_Add=expr.is_Add)
            if rest == (0 if expr.is_Add else 1):
                return None  # var in more than one term or factor
            expr, inv = dep, (inv - rest if expr.is_Add else inv / rest)
        elif expr.is_Pow and expr.exp == -1:
            expr, inv = expr.base, 1 / inv
        elif isinstance(expr, sp.exp):
            expr, inv = expr.args[0], sp.log(inv)
        elif isinstance(expr, sp.Function) and len(expr.args) == 1 and hasattr(expr, "inverse"):
            try:
                expr, inv = expr.args[0], expr.inverse()(inv)
            except (AttributeError, TypeError, NotImplementedError):
                return None
        else:
            return None
    return None


def _textbook_forms(expr: sp.Expr) -> list[sp.Expr]:
    """``expr`` and, where they differ, the forms that name g's own output: sech²u as 1 − tanh²u,
    σ(−u) as 1 − σ(u)."""
    forms = [expr]
    for e in (expr.replace(lambda e: e.is_Pow and isinstance(e.base, sp.sech) and e.exp == 2,
                           lambda e: 1 - tanh(e.base.args[0]) ** 2),
              expr.replace(lambda e: isinstance(e, sigmoid) and e.args[0].could_extract_minus_sign(),
                           lambda e: 1 - sigmoid(-e.args[0]))):
        if e != expr:
            forms.append(e)
    return forms


def _in_outputs(dg: sp.Expr, g: sp.Expr, rowwise: bool) -> list[sp.Expr]:
    """``dg`` written with g's output y (y_i, y_j) in place of z (z_i, z_j), where g can be
    solved for z; only forms with no z left."""
    pairs = [(z_i, y_i), (z_j, y_j)] if rowwise else [(z, y)]
    inverses = [(var, _inverse(g, yv, var)) for var, yv in pairs]
    if any(inv is None for _, inv in inverses):
        return []
    cands = []
    for form in _textbook_forms(dg):
        for var, inv in inverses:
            form = form.subs(var, inv)
        for e in (form, form.replace(lambda e: isinstance(e, Primitive), lambda e: e.elementary())):
            cands += _variants(e)
    return [c for c in cands if not (_free_z(c) & {z_i, z_j, z}) and not _hides_output(c)]


def _hides_output(expr: sp.Expr) -> bool:
    """y inside a function other than exp (log(y_j Σ…)): not a form a textbook would print."""
    return any(f.has(y, y_i, y_j) for f in expr.atoms(sp.Function) if not isinstance(f, sp.exp))


def _free_z(expr: sp.Expr) -> set:
    """Symbols of ``expr`` outside row reductions (z inside Σ is a row constant)."""
    masked, _ = _atoms_as_symbols(expr)
    return masked.free_symbols


def _absorb_sign(expr: sp.Expr) -> sp.Expr:
    """-(a - 1) b as (1 - a) b: a factor of -1 goes into a sum it multiplies."""
    def is_target(e):
        return e.is_Mul and e.args[0] == -1 and any(a.is_Add for a in e.args)

    def absorb(e):
        rest = list(e.args[1:])
        k = next(i for i, a in enumerate(rest) if a.is_Add)
        rest[k] = sp.Add(*[-t for t in rest[k].args])
        return sp.Mul(*rest)

    return expr.replace(is_target, absorb)


def _plain_name(expr_g: sp.Expr):
    """g itself when the stable form is one named function of z (σ(z), tanh(z)): y prints as it."""
    if isinstance(expr_g, sp.Function) and expr_g.args == (z,):
        return expr_g
    return None


@functools.lru_cache(maxsize=256)
def _formulas(text: str, generation: int) -> Formulas:
    from .docs import _lowered
    ir, plan = _lowered(text, generation)
    if ir.expr.atoms(Stage):
        raise ActdslError(f"{text!r} is too large to print as one formula (it is compiled term by "
                          "term: actdsl.stage); print its terms one at a time (actdsl show "
                          "shows each)")
    (expr, shown), constants = name_constants(ir.expr, ir.display)
    expr, display = unguarded(expr), unguarded(shown)
    rowwise = plan.rowwise
    named_std = _named_std
    cands = []
    for src in (expr, display):
        if src is display and any(len(m.args) > EVALUATED_PIECES
                                  for m in display.atoms(sp.Max, sp.Min)):
            continue  # as branches, k(k-1)/2 comparisons: the computed form's pick is shorter
        sub = IR(src, ir.params, src)
        d = jacobian_entry(make_plan(sub)) if rowwise else elementwise_derivative(sub)
        cands += _variants(named_std(unguarded(d)))
    best = _smallest(cands)
    outputs = [c for g in (named_std(display), named_std(expr)) for c in _in_outputs(best, g, rowwise)]
    where = []
    name = _plain_name(expr)
    # in terms of the output where that is shorter; on a tie only where y prints as a named
    # function of z (1 − tanh²(z) rather than sech²(z)), not as a new symbol
    if outputs and (size(_smallest(outputs)) < size(best) or
                    size(_smallest(outputs)) == size(best) and name is not None):
        best = _smallest(outputs)
        if name is not None:
            best = best.subs(y, name)
        elif best.has(y, y_i, y_j):
            where.append((y_i if rowwise else y, "the output, g(z)"))
    best = _absorb_sign(best)
    argmax = {a for d in best.atoms(sp.KroneckerDelta) for a in d.args if a.name.startswith("a_")}
    for a in sorted(argmax, key=str):
        where.append((a, "the index of the row's maximum (its gradient goes there)"))
    if best.has(s):
        where.append((s, _std_meaning(display)))
    defs = {s: _std_of(display)} if best.has(s) else {}
    return Formulas(shown, best, rowwise, constants, tuple(where), defs)


def formulas(spec: str) -> Formulas:
    from . import library  # noqa: F401  (fills the registry)
    from .registry import REGISTRY
    return _formulas(str(spec), REGISTRY.generation)


def value_text(value) -> str:
    """A constant's value as a decimal: 0.044715, 1.6732632423543772848."""
    if isinstance(value, sp.Rational) and _is_eps(value):
        return f"1e-{len(str(value.q)) - 1}"
    text = sp.Float(value, 20).__str__()
    return text.rstrip("0").rstrip(".") if "." in text else text


def where(f: Formulas) -> list[tuple[sp.Symbol, str]]:
    """What the formulas' extra symbols stand for: constants with their values, then y and s."""
    out = [(sym, f"= {value_text(v)}") for sym, v in sorted(f.constants.items(), key=lambda p: str(p[0]))]
    return out + [(sym, meaning) for sym, meaning in f.where]


__all__ = ["Formulas", "formulas", "size", "value_text", "where", "s", "y", "y_i", "y_j", "i_index", "j_index"]

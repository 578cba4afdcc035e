"""Exact derivatives (DESIGN.md, "Exact derivatives").

A lowered expression ``y = F(z, R_1..R_K, θ)`` is split into its row reductions
``R_k = Op_k(f_k(z, R_<k, θ))``, each replaced by a plain symbol ``r_k``; SymPy then gives every
partial derivative the row-wise VJP needs. ``Plan`` holds them; backends turn a plan into code:

    λ_k  = Σ_j g_j ∂F/∂r_k(z_j) + Σ_{m>k} λ_m · S_mk,   S_mk = Σ_j ∂f_m/∂r_k(z_j)  (argmax for max)
    dz_i = g_i ∂F/∂z(z_i) + Σ_k λ_k · ∂f_k/∂z(z_i)                                   (argmax for max)
    dθ   = Σ_batch [ g ∂F/∂θ + Σ_k λ_k ∂f_k/∂θ ]

Max, Min and Abs are rewritten into Piecewise first, so the derivative at a kink is the
derivative of the branch the definition selects there; Heaviside and DiracDelta never appear.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair

from . import budget
from .errors import ParameterError
from .ir import IR, RowMax, RowReduction, n, z
from .stable import expm1, expmul, pow2scale, softplus, tanh


def branches(*pairs) -> sp.Expr:
    """sp.Piecewise(*pairs), built as it is where a condition holds a Piecewise: SymPy's
    constructor folds such a condition into an ITE (piecewise_fold, then simplify_logic on every
    relation: minutes for norm:z+norm:z+sparse_plus), and what it would simplify is nothing the
    backends need (they print a comparison of a Piecewise as it is)."""
    if not any(c.has(sp.Piecewise) for _, c in pairs):
        return sp.Piecewise(*pairs)
    return branches_as_they_are(*pairs)


def branches_as_they_are(*pairs) -> sp.Expr:
    """sp.Piecewise(*pairs) without SymPy's evaluation of the pairs or their conditions."""
    return sp.Basic.__new__(sp.Piecewise, *[_pair(v, c) for v, c in pairs])


def _pair(value: sp.Expr, cond) -> ExprCondPair:
    """A branch as it is (no folding of its condition, no conversion of anything: both are
    SymPy objects already)."""
    return sp.Basic.__new__(ExprCondPair, value, cond)


def rebuild(expr: sp.Expr, match, fn, evaluate: bool = True, memo: dict | None = None) -> sp.Expr:
    """``expr.replace(match, fn)``, bottom-up, each distinct subexpression once, with every
    Piecewise above a change rebuilt as it is (see :func:`branches`); SymPy's ``replace`` walks
    the tree (shared parts once per use) and rebuilds each pair through the folding constructor.
    ``evaluate=False`` rebuilds every node above a change without SymPy's evaluation. Calls that
    pass the same ``memo`` share the work on the parts their expressions have in common."""
    memo = {} if memo is None else memo

    def walk(e):
        if e in memo:
            return memo[e]
        out = e
        if e.args and not e.is_Atom:
            args = tuple(walk(a) for a in e.args)
            if args != e.args:
                if isinstance(e, (ExprCondPair, sp.Piecewise)):
                    out = sp.Basic.__new__(type(e), *args)
                elif match(e):  # fn replaces it: SymPy's evaluation (|u| as sqrt(u²)) would not
                    out = sp.Basic.__new__(type(e), *args)
                elif not evaluate:
                    out = _unevaluated(e, args)
                elif e.is_Pow:
                    out = power(*args)
                else:
                    out = e.func(*args)
        if match(out):
            out = fn(out)
        memo[e] = out
        return out

    return walk(expr)


def replace_nodes(expr: sp.Expr, mapping: dict, memo: dict | None = None) -> sp.Expr:
    """``expr.xreplace(mapping)``: whole nodes replaced top-down (a key is replaced before its
    insides are looked at: the keys seed :func:`rebuild`'s memo), each distinct subexpression
    once, and the nodes above a change rebuilt without SymPy's evaluation. xreplace walks shared
    parts once per use and rebuilds through the constructors: a Piecewise folds its conditions
    through simplify_logic (12 s of the emission of
    softsign+maxout:5+threshold+softplus+rect:max+{min(z, 1)}). Calls with the same ``mapping``
    may share a ``memo``."""
    memo = {} if memo is None else memo
    memo.update(mapping)
    return rebuild(expr, lambda e: False, None, evaluate=False, memo=memo)


def power(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """a ** b, evaluated by SymPy only on small operands: its evaluation factors the exponent's
    terms (factor_terms walks the exponent as a tree), 19 s for a power tower over maxout:11,
    and finds nothing to simplify in a large one. Refused (ParameterError) where ``b`` is a
    number that some exact number inside ``a`` cannot be raised to cheaply
    (``budget.costly_power``): SymPy distributes a power over products and branches, here and
    whenever it rebuilds one later (differentiation), and (10**308 (e^z - 1))**(2**81), from
    elu(alpha=1e308)+{z ** 2 ** 3 ** 4}, computed 10**308 to the 2**81 exactly, in C, where the
    compile deadline cannot stop it. (As Floats the constants gave inf · 0, NaN, where the
    power is 0.)"""
    if budget.costly_power(a, b) is not None:  # (a's own powers were checked as they were built)
        budget.check_powers(sp.Pow(a, b, evaluate=False), "the spec")
    if budget.small(a, b):
        return a ** b
    return sp.Pow(a, b, evaluate=False)


def _unevaluated(e: sp.Basic, args: tuple) -> sp.Basic:
    try:
        return e.func(*args, evaluate=False)
    except TypeError:  # a class without the option
        return e.func(*args)


def substitute(expr: sp.Expr, old: sp.Symbol, new: sp.Expr) -> sp.Expr:
    """``expr`` with ``new`` for ``old``, the nodes above it rebuilt without SymPy's evaluation:
    lowering builds each term on a placeholder and puts a large input in with this (SymPy's
    evaluation of a comparison or power of a large expression queries assumptions and factors
    terms over its whole tree: 39 s for rect:min after a power tower over maxout:11)."""
    return rebuild(expr, lambda e: e == old, lambda e: new, evaluate=False)


def to_piecewise(expr: sp.Expr) -> sp.Expr:
    """Max/Min/Abs/sign as Piecewise with the first argument winning ties (as relu's 0)."""

    def first(items, better):
        items = list(items)
        out = items[-1]
        for a in reversed(items[:-1]):
            out = branches((a, sp.And(*[better(a, b) for b in items if b is not a])),
                           (out, sp.true))
        return out

    def rw(e):
        if isinstance(e, sp.Max):
            return first(e.args, lambda a, b: a >= b)
        if isinstance(e, sp.Min):
            return first(e.args, lambda a, b: a <= b)
        if isinstance(e, sp.Abs):
            u = e.args[0]
            return branches((-u, u < 0), (u, sp.true))
        if isinstance(e, sp.sign):
            u = e.args[0]
            return branches((sp.S.NegativeOne, u < 0), (sp.S.Zero, sp.Eq(u, 0)), (sp.S.One, sp.true))
        return e

    return rebuild(expr, lambda e: isinstance(e, (sp.Max, sp.Min, sp.Abs, sp.sign)), rw)


@dataclass(frozen=True)
class Reduction:
    """``symbol = kind(body)`` over the row; ``depth`` 1 needs no other reduction.
    ``gradient`` is False for a reduction of a kind without one (RowShift) and for one whose body
    is piecewise constant (a count of the row's maxima): no adjoint is computed for it."""

    kind: type
    symbol: sp.Symbol
    body: sp.Expr
    depth: int
    gradient: bool = True

    @property
    def has_gradient(self) -> bool:
        return self.gradient and self.kind.has_gradient


@dataclass(frozen=True)
class Plan:
    """Everything a backend needs to compute forward, derivative, VJP and parameter gradients."""

    reductions: tuple[Reduction, ...]
    out: sp.Expr                                   # F(z, r, θ)
    params: tuple[sp.Symbol, ...]                  # θ, flattened
    dout_dz: sp.Expr                               # ∂F/∂z
    dout_dr: dict                                  # r_k -> ∂F/∂r_k
    dbody_dz: dict                                 # r_k -> ∂f_k/∂z
    dbody_dr: dict                                 # (r_m, r_k) -> ∂f_m/∂r_k, nonzero only
    dout_dp: dict                                  # θ -> ∂F/∂θ
    dbody_dp: dict                                 # (r_k, θ) -> ∂f_k/∂θ, nonzero only

    @property
    def rowwise(self) -> bool:
        return bool(self.reductions)

    @property
    def depths(self) -> list[list[Reduction]]:
        """Reductions grouped by depth: each group can be computed in one pass over a row."""
        top = max((r.depth for r in self.reductions), default=0)
        return [[r for r in self.reductions if r.depth == d] for d in range(1, top + 1)]

    def grad_reductions(self) -> list[Reduction]:
        return [r for r in self.reductions if r.has_gradient]


def split_reductions(expr: sp.Expr) -> tuple[list[Reduction], sp.Expr]:
    """Replace row reductions, innermost first, by symbols r1, r2, ...; identical reductions
    (norm:z's two means) share one symbol."""
    found: list[Reduction] = []
    depth_of: dict[sp.Symbol, int] = {}
    while True:
        atoms = [a for a in expr.atoms(RowReduction) if not a.args[0].atoms(RowReduction)]
        if not atoms:
            return found, expr
        atoms.sort(key=sp.default_sort_key)
        mapping = {}
        for atom in atoms:
            sym = sp.Symbol(f"r{len(found) + 1}", real=True)
            body = atom.args[0]
            depth = 1 + max((depth_of[s] for s in body.free_symbols if s in depth_of), default=0)
            depth_of[sym] = depth
            found.append(Reduction(type(atom), sym, body, depth))
            mapping[atom] = sym
        # not xreplace: it rebuilds a Piecewise through SymPy's constructor, which folds a
        # condition holding a Piecewise by moving the branches outward, into a row reduction
        # too: softmax(u) <= 0 for a piecewise u became per-branch comparisons against sums of
        # one branch over the whole row (celu+softmax+elu: NaN from a branch's sum that overflowed)
        expr = rebuild(expr, lambda e: e in mapping, lambda e: mapping[e])


def tidy(expr: sp.Expr) -> sp.Expr:
    """Rewrites that keep derivatives accurate: 1 - sech(u)^2 (tanh's chain rule, e.g. in
    tanhshrink') cancels catastrophically near u = 0, where it is tanh(u)^2 ~ u^2."""
    def is_target(e):
        return e.is_Add and sp.S.One in e.args and any(_is_neg_sech2(a) for a in e.args)

    def rewrite(e):
        rest = list(e.args)
        rest.remove(sp.S.One)
        term = next(a for a in rest if _is_neg_sech2(a))
        rest.remove(term)
        u = _sech_arg(term)
        return sp.Add(*rest, tanh(u) ** 2)

    return rebuild(expr, is_target, rewrite)


def zero_first(expr: sp.Expr) -> sp.Expr:
    """A product with a factor that is 0 on a row-level condition (sqrt0'(var) at a constant
    row) becomes that Piecewise around the product: 0 there, whatever the other factors are.
    As a product, 0 · 1/(σ + ε/s)² was NaN once the square underflowed (a constant row of huge
    values), where the derivative is 0."""
    return _into_branches(expr, lambda a, others: not any(c.has(z) for _, c in a.args))


def zero_where_flat(expr: sp.Expr) -> sp.Expr:
    """The derivative of an elementwise spec with each product that has a factor 0 on a branch
    (relu6's, hardswish's, a clip's flat parts) and another factor that can overflow (an exp, a
    softplus, a power) put into that factor's branches: 0 there, whatever the others are.
    hardswish(e^z)' at z = 100 in float32 was hardswish's 0 · e^100 = NaN where it is e^100 (inf
    after rounding), and hardswish(softplus(9^9 z))' at 1.7e38 NaN where it is 9^9. The rest of
    the product is written once per nonzero branch; taken after :func:`defined` has seen the
    plain product (a 1/0 on a taken branch is still refused)."""
    return _into_branches(expr, lambda a, others: any(_may_overflow(o) for o in others))


def _into_branches(expr: sp.Expr, when) -> sp.Expr:
    """Each product with a Piecewise factor that is 0 on a branch, where ``when(factor, other
    factors)``, as that Piecewise with the other factors in each nonzero branch."""
    def first(e):
        for a in e.args:
            if isinstance(a, sp.Piecewise) and any(v == 0 for v, _ in a.args) and \
                    when(a, [o for o in e.args if o is not a]):
                return a
        return None

    def rewrite(e):
        pw = first(e)
        rest = sp.Mul(*[a for a in e.args if a is not pw])
        return branches(*[(v if v == 0 else v * rest, c) for v, c in pw.args])

    # rebuild, not SymPy's replace: a condition holding a Piecewise (a comparison of a row-wise
    # value of a piecewise input) must stay as it is (see split_reductions)
    return rebuild(expr, lambda e: e.is_Mul and first(e) is not None, rewrite)


def _may_overflow(e: sp.Expr) -> bool:
    """Whether ``e`` holds a function that overflows to inf on a finite argument: exp, sinh,
    cosh, softplus, expm1, or a power of a variable with an exponent outside (0, 1]."""
    return bool(e.has(sp.exp, sp.sinh, sp.cosh, softplus, expm1, expmul)) or any(
        p.free_symbols and not (p.exp.is_number and 0 < p.exp <= 1) for p in e.atoms(sp.Pow))


def _sech_arg(term):
    return term.args[1].base.args[0]


def _is_neg_sech2(a) -> bool:
    return (a.is_Mul and len(a.args) == 2 and a.args[0] == -1 and a.args[1].is_Pow
            and a.args[1].exp == 2 and isinstance(a.args[1].base, sp.sech))


class _Branches(sp.Piecewise):
    """A Piecewise whose derivative is taken branch by branch, its conditions kept as they are:
    SymPy's own re-simplifies the conditions of every derivative, which takes time exponential in
    their number (maxout:6's derivative took 14 s; maxout:8 hit the recursion limit). Used only
    inside :func:`_diff`."""

    def __new__(cls, *args, **options):
        # _pair, not ExprCondPair: its constructor folds a condition holding a Piecewise
        # (prelu+prelu+relu+{abs(z)**z}: SymPy's own assertion failed there)
        pairs = [a if isinstance(a, ExprCondPair) else _pair(*a) for a in args]
        return sp.Basic.__new__(cls, *pairs)

    def _eval_derivative(self, x):
        return _Branches(*[_pair(sp.diff(pair.expr, x), pair.cond) for pair in self.args])


class _ConstPow(sp.Function):
    """``b**n`` for a number n > 1 (whole, or a fraction: |u|**1.5) and a base holding branches,
    differentiated as n b**(n-1) b'. SymPy's Pow writes d(b**n) as b**n · n b' / b, which its Mul
    makes n b**(n-1) b' only where it can combine the two powers of b; a large b's power is kept
    unevaluated (derive.power), and 1/b went into b's branches, with 1/0 where b is 0
    (relu+gelu:tanh+{z**7}, and relu+tlin+{abs(z)**1.5}, were refused as undefined on a whole
    branch). Used only inside :func:`_diff`."""

    def fdiff(self, argindex=1):
        b, k = self.args
        return k * (b if k == 2 else _ConstPow(b, k - 1))


def _diff(e: sp.Expr, v: sp.Symbol) -> sp.Expr:
    """∂e/∂v, Piecewise differentiated as :class:`_Branches`; the result holds plain Piecewise
    again (built without SymPy's evaluation, which has nothing left to simplify)."""
    if not e.has(sp.Piecewise):
        return tidy(sp.diff(e, v))
    lazy = rebuild(e, lambda x: type(x) is sp.Piecewise, lambda x: _Branches(*x.args))
    lazy = rebuild(lazy, lambda x: x.is_Pow and x.exp.is_Rational and x.exp > 1
                   and x.base.has(_Branches), lambda x: _ConstPow(*x.args))
    out = sp.diff(lazy, v)
    out = rebuild(out, lambda x: isinstance(x, _ConstPow), lambda x: power(*x.args))
    out = rebuild(out, lambda x: isinstance(x, _Branches), _plain)
    return tidy(out)


def _plain(b: _Branches) -> sp.Expr:
    """A Piecewise again; branches that all have one value (relu'' is 0 on both sides) are
    that value, as SymPy's evaluation would give."""
    values = {pair.expr for pair in b.args}
    if len(values) == 1 and b.args[-1].cond == sp.true:
        return values.pop()
    # as it is: Piecewise(..., evaluate=False) still builds each pair through ExprCondPair, which
    # folds a condition holding a branch (maxout:30+elu+{max(z, 0)**2}+...: minutes)
    return sp.Basic.__new__(sp.Piecewise, *b.args)


def _real_set(cond):
    """``(inner, outer)``: sets of real z with inner ⊆ {z : cond} ⊆ outer, exact for conditions
    made of comparisons of a linear function of z with numbers (And, Or, Not, ITE of them):
    unions of intervals, built node by node (SymPy's as_set goes through a disjunctive normal
    form, exponential in the condition). Any other comparison is bounded by the empty set and
    all reals, so that a condition holding one still narrows where its linear parts decide:
    ``ITE(z <= -1, False, (z + 1)**2 > 160)`` holds nowhere in z <= -1."""
    if cond is sp.true:
        return sp.S.Reals, sp.S.Reals
    if cond is sp.false:
        return sp.S.EmptySet, sp.S.EmptySet
    unknown = sp.S.EmptySet, sp.S.Reals
    if isinstance(cond, sp.core.relational.Relational):
        # a z + b (op) 0 with numbers a != 0 and b: z (op') -b/a
        d, op = cond.lhs - cond.rhs, cond.rel_op
        if d.free_symbols != {z} or not budget.small(d, nodes=16):
            return unknown
        a, b = d.diff(z), d.subs(z, 0)
        if not (a.is_number and b.is_number and a.is_extended_real and b.is_extended_real) \
                or a == 0:
            return unknown
        if a.is_negative:
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        rhs = -b / a
        exact = {"<": sp.Interval.open(-sp.oo, rhs), "<=": sp.Interval(-sp.oo, rhs),
                 ">": sp.Interval.open(rhs, sp.oo), ">=": sp.Interval(rhs, sp.oo),
                 "==": sp.FiniteSet(rhs), "!=": sp.S.Reals - sp.FiniteSet(rhs)}.get(op)
        return unknown if exact is None else (exact, exact)
    if isinstance(cond, sp.Not):
        inner, outer = _real_set(cond.args[0])
        return sp.S.Reals - outer, sp.S.Reals - inner
    if isinstance(cond, sp.ITE):  # (a and b) or (not a and c)
        (ai, ao), (bi, bo), (ci, co) = (_real_set(a) for a in cond.args)
        return (sp.Union(sp.Intersection(ai, bi), sp.Intersection(sp.S.Reals - ao, ci)),
                sp.Union(sp.Intersection(ao, bo), sp.Intersection(sp.S.Reals - ai, co)))
    if isinstance(cond, (sp.And, sp.Or)):
        parts = [_real_set(a) for a in cond.args]
        join = sp.Intersection if isinstance(cond, sp.And) else sp.Union
        return join(*[p[0] for p in parts]), join(*[p[1] for p in parts])
    return unknown


def _unreachable_dropped(expr: sp.Expr) -> sp.Expr:
    """``expr`` without the branches holding zoo (a 1/0 or log 0 of the chain rule) that are
    never taken where their Piecewise is: |relu(z)| is written with a branch for relu(z) < 0,
    whose condition (z > 0 and z < 0) is empty, and sqrt's derivative there divides by relu's 0;
    in sqrt(|tlin(z)|)'s derivative, tlin's flat branch (|z| <= 1) sits inside the branch for
    z < -1. Each Piecewise is read with the set of z that reaches it (intervals, from
    comparisons of linear functions of z with numbers; other comparisons narrow nothing: the
    outer bound of :func:`_real_set` narrows where a branch is reached, the inner one what the
    branches before it surely take); only parts holding zoo are looked at."""

    memo: dict = {}

    def walk(e, ctx):
        if not e.has(sp.zoo) or e.is_Atom or not e.args:
            return e
        if (e, ctx) in memo:
            return memo[e, ctx]
        memo[e, ctx] = out = _walk(e, ctx)
        return out

    def _walk(e, ctx):
        # ctx: a set holding every z where e is evaluated (a superset: unknown parts add nothing)
        if type(e) is sp.Piecewise:
            pairs, before = [], sp.S.EmptySet  # (where an earlier branch surely holds)
            for pair in e.args:
                inner, outer = _real_set(pair.cond)
                reach = sp.Intersection(ctx - before, outer)
                if not (pair.expr.has(sp.zoo) and reach == sp.S.EmptySet):
                    pairs.append(_pair(walk(pair.expr, reach), pair.cond))
                before = sp.Union(before, inner)
            if not pairs:  # (no z reaches it: left as it is, and refused)
                return e
            if len(pairs) == 1:
                return pairs[0].expr
            if pairs[-1].cond != sp.true:  # the last branch never taken: the one before is the rest
                pairs[-1] = _pair(pairs[-1].expr, sp.true)
            return sp.Basic.__new__(sp.Piecewise, *pairs)
        args = tuple(walk(a, ctx) for a in e.args)
        return e if args == e.args else _unevaluated(e, args)

    return walk(expr, sp.S.Reals)


def _nonzero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v != 0}


def defined(d: sp.Expr, what: str = "") -> sp.Expr:
    """A derivative ``d`` without its unreachable branches that divide by 0; ParameterError if a
    reachable one does."""
    if d.has(sp.zoo):
        d = _unreachable_dropped(d)
    if d.has(sp.zoo):
        raise ParameterError(
            f"this spec's derivative {what}is undefined on a whole branch (a log of 0 or a "
            "division by 0, as in a power of relu's 0): no backend can compute it; give the "
            "formula a base that is never 0 (softplus instead of relu, abs(z) + 1e-3)")
    return d


def bounded_derivative(e: sp.Expr, v: sp.Symbol, so_far: int, what: str,
                       named: str = "") -> tuple[sp.Expr, int]:
    """``(∂e/∂v, so_far + its size)``: counted against the derivative budget as soon as it
    exists, and refused before it is taken when its estimated size would take the total past the
    budget (the estimate is within 0.5x-2.2x of SymPy's): a spec whose derivatives are all large
    (a power tower over maxout:11, one per slope and intercept) is refused before SymPy spends
    minutes on them. Undefined on a whole branch: ParameterError (:func:`defined`)."""
    cap = budget.limit("derivative_nodes")
    if so_far + budget.derivative_estimate(e, v, cap) > cap:  # before SymPy's work
        raise budget.exceeded("derivative_nodes", f"{what} (estimated before they are taken, "
                              "from the expression's shape)")
    out = zero_first(_diff(e, v))
    total = budget.check_derivatives([out], so_far)
    return defined(out, named), total


def make_plan(ir: IR) -> Plan:
    reductions, out = split_reductions(to_piecewise(ir.expr))
    reductions = [Reduction(r.kind, r.symbol, to_piecewise(r.body), r.depth) for r in reductions]
    theta = ir.param_symbols
    total = 0

    def d(e, v):
        nonlocal total
        out, total = bounded_derivative(e, v, total, "the size of the derivatives", f"in {v} ")
        return out

    # each body's derivatives, innermost reduction first: one whose body has none (in z, θ or a
    # reduction that carries a gradient) carries no gradient itself
    dbody_dz, dbody_dr, dbody_dp, grad = {}, {}, {}, []
    for i, r in enumerate(reductions):
        if not r.has_gradient:
            continue
        dz = d(r.body, z)
        dr = {(r.symbol, k.symbol): d(r.body, k.symbol) for k in grad
              if k.symbol in r.body.free_symbols}
        dp = {(r.symbol, p): d(r.body, p) for p in theta}
        if dz == 0 and not _nonzero(dr) and not _nonzero(dp):
            reductions[i] = Reduction(r.kind, r.symbol, r.body, r.depth, gradient=False)
            continue
        grad.append(r)
        dbody_dz[r.symbol] = dz
        dbody_dr.update(_nonzero(dr))
        dbody_dp.update(_nonzero(dp))

    return _rescaled(Plan(
        reductions=tuple(reductions),
        out=out,
        params=theta,
        # (elementwise: a row-wise VJP's exact cancellations hold in its products as they are)
        dout_dz=d(out, z) if reductions else zero_where_flat(d(out, z)),
        dout_dr={r.symbol: d(out, r.symbol) for r in grad},
        dbody_dz=dbody_dz,
        dbody_dr=dbody_dr,
        dout_dp={p: d(out, p) for p in theta},
        dbody_dp=dbody_dp,
    ))


def _scale_factor(e: sp.Expr) -> sp.Expr:
    """The product of e's factors that are positive powers of a row's power-of-two scale."""
    return sp.Mul(*[f for f in sp.Mul.make_args(e)
                    if isinstance(f, pow2scale) or (f.is_Pow and isinstance(f.base, pow2scale)
                                                    and f.exp.is_positive)])


def _rescaled(plan: Plan) -> Plan:
    """The plan in the variables r̃_k = X_k r_k, X_k the row-scale factors of ∂F/∂r_k: then
    λ̃_k = λ_k / X_k, and each use of λ_k (∂f_k/∂z, ∂f_k/∂θ, S_mk) carries X_k, where SymPy
    cancels it against the 1/s of ∂f_k/∂z. The same derivatives (the scale is a power of two:
    exact), but norm:mean's λ = -s·mean(dy), then λ·(1/s), was inf·0 = NaN on a row holding ±inf
    (s = inf), where the VJP is dy - mean(dy). Forward mode reads the same change of variables
    (ṙ̃_k = X_k ṙ_k) from the same fields."""
    X = {r.symbol: _scale_factor(plan.dout_dr[r.symbol]) for r in plan.grad_reductions()}
    if all(x == 1 for x in X.values()):
        return plan
    return dataclasses.replace(
        plan,
        dout_dr={k: v / X[k] for k, v in plan.dout_dr.items()},
        dbody_dz={k: v * X[k] for k, v in plan.dbody_dz.items()},
        dbody_dr={(m, k): v * X[m] / X[k] for (m, k), v in plan.dbody_dr.items()},
        dbody_dp={(k, p): v * X[k] for (k, p), v in plan.dbody_dp.items()},
    )


def split_adjoint(plan: Plan, sym: sp.Symbol) -> tuple[sp.Expr, sp.Expr, int]:
    """``(row, each, k)`` with ∂F/∂r = row · each / n^k: ``row`` is the same number for every
    element of a row (free of z and of θ, which varies by unit), ``each`` the rest. Backends
    compute λ = row · ((Σ_j g_j each_j) / n^k): the row's factors multiply the sum once, after it
    is divided by n, instead of rounding every term on its own. On a constant row, Σ g / n of a
    constant g is then g itself, and the terms that cancel in the truth cancel in floating point
    (norm:mean's g - mean(g); norm:z's g/(σ + ε) - mean(g)/(σ + ε), which 1/ε makes O(1) if they
    do not)."""
    local = {z, *plan.params}
    row, each, k = [], [], 0
    for f in sp.Mul.make_args(plan.dout_dr[sym]):
        if f.is_Pow and f.base == n and f.exp.is_Integer and f.exp < 0:
            k -= int(f.exp)
        elif f.free_symbols & local:
            each.append(f)
        else:
            row.append(f)
    return sp.Mul(*row), sp.Mul(*each), k


def times_g(e: sp.Expr, g: sp.Expr) -> sp.Expr:
    """g · e, where a factor exp(a) of e becomes expmul(a, g): the VJP dy · exp(x) is then
    finite wherever the truth is, though exp(x) alone overflows."""
    factors = list(sp.Mul.make_args(e))
    for i, f in enumerate(factors):
        if isinstance(f, sp.exp):
            return expmul(f.args[0], g) * sp.Mul(*(factors[:i] + factors[i + 1:]))
    return g * e


def dz_parts(plan: Plan) -> tuple[sp.Expr, sp.Expr, list[sp.Expr]]:
    """``(common, first, rest)``: the VJP's dz = common · (first + Σ_k λ_k rest_k), first the
    term g ∂F/∂z (``split_common`` says why the shared factor comes out). Without row
    reductions dz is g ∂F/∂z alone, formed by ``times_g``."""
    g = sp.Symbol("g")
    grad = plan.grad_reductions()
    if not grad:
        return sp.S.One, times_g(plan.dout_dz, g), []
    common, parts = split_common([plan.dout_dz] + [plan.dbody_dz[r.symbol] for r in grad])
    return common, g * parts[0], parts[1:]


def derivative(ir: IR) -> sp.Expr:
    """g'(z) of an elementwise spec."""
    return _diff(to_piecewise(ir.expr), z)


i_index, j_index = sp.symbols("i j", integer=True)
z_i, z_j = sp.Symbol("z_i", real=True), sp.Symbol("z_j", real=True)


def split_common(exprs: list[sp.Expr]) -> tuple[sp.Expr, list[sp.Expr]]:
    """``(c, [e / c])`` with ``c`` the product of the symbolic factors that every nonzero ``e``
    shares. The VJP writes dz = c · (g ∂F/∂z' + Σ λ_k ∂f_k/∂z'): the per-element factor that all
    terms share (u'(z) in ``u+norm:z``, and 1/s) multiplies their sum once, so that terms that
    cancel exactly in the truth cancel exactly in floating point too (a row of one, a constant
    row: g/(σ+ε) - Σg/(n(σ+ε)) with σ = 0 is 1e8-sized, and each term rounded on its own way
    left O(1) errors)."""
    nonzero = [e for e in exprs if e != 0]
    if not nonzero:
        return sp.S.One, list(exprs)
    shared = None
    for e in nonzero:
        factors = {}
        for f in sp.Mul.make_args(e):
            if not f.is_number:
                factors[f] = factors.get(f, 0) + 1
        shared = factors if shared is None else {f: min(k, factors[f]) for f, k in shared.items()
                                                 if f in factors}
    if not shared:
        return sp.S.One, list(exprs)

    def rest(e):
        if e == 0:
            return e
        left = dict(shared)
        kept = []
        for f in sp.Mul.make_args(e):
            if left.get(f, 0) > 0:
                left[f] -= 1
            else:
                kept.append(f)
        return sp.Mul(*kept)

    common = sp.Mul(*[f ** k if k > 1 else f for f, k in shared.items()])
    return common, [rest(e) for e in exprs]


def jacobian_entry(plan: Plan) -> sp.Expr:
    """∂y_i/∂z_j of a row-wise spec, with ``δ_ij`` for the diagonal and ``δ_{j a_k}`` where a
    row maximum passes its gradient to its argmax ``a_k``. Row reductions appear as atoms again."""
    atom = {}
    for r in plan.reductions:
        atom[r.symbol] = r.kind(r.body.xreplace(atom))
    argmax = {r.symbol: sp.Symbol(f"a_{r.symbol.name[1:]}", integer=True) for r in plan.reductions}
    total: dict[sp.Symbol, sp.Expr] = {}
    for r in plan.grad_reductions():
        base = plan.dbody_dz[r.symbol].subs(z, z_j)
        if r.kind is RowMax:
            base *= sp.KroneckerDelta(j_index, argmax[r.symbol])
        for (m, k), e in plan.dbody_dr.items():
            if m == r.symbol:
                inner = (sp.Symbol(f"z_{{a_{m.name[1:]}}}", real=True) if r.kind is RowMax else None)
                through = e.subs(z, inner) if inner is not None else r.kind(e)
                base += through * total[k]
        total[r.symbol] = base
    entry = sp.KroneckerDelta(i_index, j_index) * plan.dout_dz.subs(z, z_i)
    entry += sum((plan.dout_dr[s].subs(z, z_i) * d for s, d in total.items()), sp.S.Zero)
    return entry.xreplace(atom)

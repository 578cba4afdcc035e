"""Compile budgets: every stage of a compile is bounded, so a spec from someone else's
configuration file cannot make a process compile for minutes or exhaust its memory.

Each budget is a size measured before the next (costlier) stage runs; past it, the compile stops
with :class:`BudgetError`, which names the budget and how to raise it. Sizes count the nodes of an
expression *as a tree* (a subexpression used twice counts twice: that is what SymPy's
differentiation and the printers walk), computed over the shared graph, so measuring is linear
even where the tree is exponentially large.

Raise a budget for one process with ``actdsl.budget.set(expression_nodes=400_000)``, or for every
process with the environment variable ``ACTDSL_BUDGET_EXPRESSION_NODES=400000``.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading

import sympy as sp

from .errors import BudgetError, ParameterError

#: name -> (default, what it bounds). The defaults leave every built-in, and compositions of a
#: few terms, far inside; see docs/security.md for the figures behind them.
DEFAULTS = {
    "formula_depth": (100, "nesting of operations in one inline formula"),
    "terms": (64, "terms composed in one spec"),
    "expression_nodes": (20_000, "size of the lowered expression (tree nodes)"),
    "derivative_nodes": (200_000, "size of all derivatives together (tree nodes)"),
    "source_chars": (2_000_000, "characters of generated source"),
    "expression_depth": (200, "nesting depth of the lowered expression"),
    "compile_seconds": (120, "seconds of symbolic work (lowering, derivatives, code generation) "
                            "for one compile"),
    "branch_conditions": (64, "comparisons in the conditions of branches (tree count): "
                              "SymPy's cost grows steeply with them"),
}

_overrides: dict[str, int] = {}


def limit(name: str) -> int:
    """The budget ``name`` in force: set() first, then ACTDSL_BUDGET_<NAME>, then the default."""
    if name in _overrides:
        return _overrides[name]
    env = os.environ.get(f"ACTDSL_BUDGET_{name.upper()}")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise BudgetError(f"ACTDSL_BUDGET_{name.upper()}={env!r} is not a whole number",
                              name) from None
        if value > 0:
            return value
    return DEFAULTS[name][0]


def set(**limits: int) -> None:  # noqa: A001 - actdsl.budget.set reads well
    """Change budgets for this process (``None`` restores the default)."""
    for name, value in limits.items():
        if name not in DEFAULTS:
            raise BudgetError(f"no budget named {name!r}; the budgets are "
                              f"{', '.join(DEFAULTS)}", name)
        if value is None:
            _overrides.pop(name, None)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BudgetError(f"budget {name} must be a positive whole number, not {value!r}", name)
        else:
            _overrides[name] = value


@contextlib.contextmanager
def limits(**values: int):
    """Budgets changed for a block and restored after it, whatever the block raises::

        with actdsl.budget.limits(compile_seconds=2, expression_nodes=5_000):
            k = actdsl.compile(untrusted_spec)
    """
    before = {name: _overrides.get(name) for name in values}
    try:
        set(**values)
        yield
    finally:
        set(**{name: old for name, old in before.items() if name in DEFAULTS})


def exceeded(name: str, what: str, size=None, where: str = "") -> BudgetError:
    cap = limit(name)
    shown = f"more than {cap:,}" if size is None else f"{size:,}"
    return BudgetError(
        f"{what} goes over the compile budget {name} = {cap:,} ({DEFAULTS[name][1]}: "
        f"{shown}); simplify the spec, or raise the budget with "
        f"actdsl.budget.set({name}={2 * cap}) or ACTDSL_BUDGET_{name.upper()}={2 * cap}"
        + (f"\n{where}" if where else ""), name)


def fold(root, combine, memo: dict) -> int:
    """Post-order fold over ``root``'s tree (no recursion, each distinct subexpression once):
    ``combine(e, [values of e's args])`` gives e's value, kept in ``memo``."""
    stack = [(root, False)]
    while stack:
        e, done = stack.pop()
        if e in memo:
            continue
        args = e.args if isinstance(e, sp.Basic) else ()
        if done or not args:
            memo[e] = combine(e, [memo[a] for a in args])
            continue
        stack.append((e, True))
        stack.extend((a, False) for a in args if a not in memo)
    return memo[root]


def tree_size(exprs, cap: int) -> int | None:
    """Nodes of ``exprs`` counted as trees, or None once the count passes ``cap`` (linear in the
    number of distinct subexpressions: counts are clipped at cap + 1)."""
    sizes: dict = {}
    total = 0
    for root in exprs:
        total += fold(root, lambda e, sub: min(1 + sum(sub), cap + 1), sizes)
        if total > cap:
            return None
    return total


def small(*exprs, nodes: int = 60) -> bool:
    """Whether SymPy's evaluation may see ``exprs`` (numbers or SymPy objects): its constructors
    for powers, comparisons and Max walk their operands as trees (factor_terms, assumptions),
    which costs seconds to minutes on a large operand and finds nothing to simplify there."""
    return tree_size(list(exprs), nodes) is not None


def tree_depth(expr, cap: int) -> int | None:
    """Nesting depth of ``expr``, or None once it passes ``cap``."""
    depth = fold(expr, lambda e, sub: min(1 + max(sub, default=0), cap + 1), {})
    return depth if depth <= cap else None


def check_expression(expr, what: str = "the lowered expression", where: str = "") -> int:
    """Raise BudgetError when ``expr`` is over the size, depth or branch-condition budget; else
    return its branch conditions (lower's maxout check weighs the next term by them)."""
    if tree_depth(expr, limit("expression_depth")) is None:
        raise exceeded("expression_depth", what, None, where)
    if tree_size([expr], limit("expression_nodes")) is None:
        raise exceeded("expression_nodes", what, None, where)
    count = _conditions(expr, limit("branch_conditions"))
    if count is None:
        raise exceeded("branch_conditions", what, None, where)
    return count


def _conditions(expr, cap: int) -> int | None:
    """Relations inside ``expr`` counted as a tree, or None past ``cap``."""
    def combine(e, sub):
        return min(int(isinstance(e, sp.core.relational.Relational)) + sum(sub), cap + 1)
    count = fold(expr, combine, {})
    return count if count <= cap else None


def check_derivatives(exprs, so_far: int = 0) -> int:
    """Running total of derivative nodes; raises past the budget."""
    cap = limit("derivative_nodes")
    size = tree_size(list(exprs), cap - so_far)
    if size is None:
        raise exceeded("derivative_nodes", "the size of the derivatives")
    return so_far + size


def check_source(source: str) -> None:
    if len(source) > limit("source_chars"):
        raise exceeded("source_chars", "the generated source", len(source))


def derivative_estimate(expr, v, cap: int) -> int:
    """About the tree size of ∂expr/∂v, from ``expr``'s shape alone (linear: each distinct
    subexpression once), clipped at cap + 1: the product rule repeats the other factors, a power
    with a varying exponent repeats itself, base and exponent, a function's derivative is about
    twice its call. Within 0.4x-2.2x of SymPy's result on every built-in and on power towers;
    SymPy can spend minutes producing a derivative that the budget then refuses (a power tower
    over maxout:11: 250,000 nodes in 20-50 s), which this refuses before it starts."""
    from sympy.functions.elementary.piecewise import ExprCondPair

    def combine(e, subs):
        if not subs:
            return 1, int(e == v), e == v
        size = min(1 + sum(s for s, _, _ in subs), cap + 1)
        has = any(h for _, _, h in subs)
        if not has:
            d = 0
        elif e.is_Add or isinstance(e, sp.Tuple):
            d = 1 + sum(d for _, d, _ in subs)
        elif e.is_Mul or type(e).__name__ == "times":  # times(m, u): a product
            d = 1 + sum(d + size - s for s, d, h in subs if h)
        elif e.is_Pow:
            (sb, db, _), (sx, dx, hx) = subs
            d = 2 + sb + db if not hx else size + dx + 2 * sb + sx + db + 3
        elif isinstance(e, ExprCondPair):
            d = subs[0][1]
        elif isinstance(e, sp.logic.boolalg.Boolean):
            d = 0
        elif isinstance(e, sp.Piecewise):
            d = 1 + sum(d for _, d, _ in subs) + sum(s for s, _, _ in subs)
        elif type(e).__name__ == "FirstMax":  # piecewise constant
            d = 0
        elif type(e).__name__ == "Pick":  # the same index, each value differentiated
            d = 1 + subs[0][0] + sum(d for _, d, _ in subs[1:])
        else:
            d = sum(d + 2 * size for _, d, h in subs if h)
        return size, min(d, cap + 1), has

    return fold(expr, combine, {})[1]


class CompileTimeout(BudgetError):
    """Raised into a compiling thread whose symbolic work ran past ``compile_seconds``."""

    def __init__(self, *args):
        if not args:  # raised asynchronously: the class alone is delivered
            err = exceeded("compile_seconds", "this spec's compile", None)
            args = (str(err),)
        super().__init__(*args, "compile_seconds")


@contextlib.contextmanager
def deadline():
    """Bound the symbolic work inside by ``compile_seconds``: past it, a watchdog raises
    :class:`CompileTimeout` in this thread, at its next Python instruction (SymPy's work is
    Python; a stretch in C finishes first). The backstop behind the size budgets, for whatever
    SymPy finds slow that they do not measure."""
    seconds = limit("compile_seconds")
    thread = threading.get_ident()
    state = {"active": True, "fired": False}
    lock = threading.Lock()

    def fire():
        with lock:
            if state["active"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread),
                                                           ctypes.py_object(CompileTimeout))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["active"] = False
            timer.cancel()
        if state["fired"]:
            _absorb_pending_timeout()


def _absorb_pending_timeout():
    """Take delivery of a CompileTimeout fired but not yet raised, so that it surfaces from the
    compile or not at all, never in the caller's later code. It is raised at the thread's next
    eval-breaker check (a call, or the loop's backward jumps below; if at the call, it leaves
    deadline() as the compile's error); if it was raised already, the loop runs through.
    Clearing it with ``PyThreadState_SetAsyncExc(thread, NULL)`` is no remedy: CPython 3.11 then
    leaves the interpreter's eval breaker set for good, and under Hypothesis a failing test after
    a compile looped forever (CI's hangs of stops 21 and 22)."""
    try:
        for _ in range(1000):
            pass
    except CompileTimeout:
        pass


#: |log2| of the largest and smallest positive float64 (normal or not), with room
FLOAT_BITS = 1080


def power_fits(base: sp.Expr, exponent: sp.Expr) -> bool:
    """Whether base**exponent, both exact numbers, is cheap to compute exactly and within
    float64's range; 0, 1 and -1 as base always fit (SymPy's exact powers take time and memory in
    proportion to the digits of the result: 9**9**9 has 370 million)."""
    if not power_cheap(base, exponent):
        return False
    if not (base.is_Rational and exponent.is_Rational) or abs(base) in (0, 1):
        return True
    b = abs(base)
    return abs(exponent.p) / exponent.q * abs(_log2(b.p) - _log2(b.q)) <= FLOAT_BITS


def power_cheap(base: sp.Expr, exponent: sp.Expr) -> bool:
    """Whether base**exponent, both exact numbers, is cheap to compute exactly (power_fits without
    its float64 range test: 10**308 squared is cheap, and overflows to inf as a float where it
    is used)."""
    if not (base.is_Rational and exponent.is_Rational) or abs(base) in (0, 1):
        return True
    if abs(exponent.p) > 2 ** 40:
        return False
    b = abs(base)
    return abs(exponent.p) / exponent.q * (b.p.bit_length() + b.q.bit_length()) <= 2 ** 20


def costly_power(base, exponent):
    """An exact number inside ``base`` that the exact ``exponent`` makes costly to raise
    (``power_cheap``), or None: SymPy distributes a power over products and branches whenever
    it builds or rebuilds one, and computes such a power exactly, in C, where no deadline can
    stop it. An exponent that is a number but not an exact one (an unevaluated 10**400) counts
    by its size."""
    if not getattr(exponent, "is_number", False):
        return None
    if not exponent.is_Rational:
        try:
            size = abs(float(exponent.evalf(5)))
        except (TypeError, ValueError, OverflowError):
            size = math.inf
        exponent = sp.Integer(2 ** 41) if not size <= 2 ** 40 else sp.Integer(math.ceil(size))
    for r in sp.sympify(base, strict=True).atoms(sp.Rational):
        if not power_cheap(r, exponent):
            return r
    return None


def check_powers(expr, what: str) -> None:
    """ParameterError where a power in ``expr`` is one :func:`costly_power` names."""
    for p in sp.sympify(expr, strict=True).atoms(sp.Pow):
        r = costly_power(p.base, p.exp)
        if r is not None:
            raise ParameterError(
                f"{what} has a power with the exponent {short_number(p.exp)} of a term holding "
                f"the number {short_number(r)}: raised to that power it is too large to compute "
                "exactly; write a smaller exponent or smaller numbers")


def short_number(r) -> str:
    """An exact number as text for a message: its digits, or how many there are."""
    text = str(r)
    return text if len(text) <= 24 else f"<a number of {len(text)} digits>"


def _log2(k: int) -> float:
    return float(k.bit_length()) if k > 2 ** 60 else math.log2(k)

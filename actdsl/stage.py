"""Stages: a composition's earlier terms as one value per element, computed once (issue 19).

Lowered the plain way, ``a+b`` is one expression, ``b`` built on ``a``: where ``b`` compares its
input (relu, leaky_relu, a formula's ``z > 0``) each comparison holds ``a`` whole, branches and
all, and ``norm:z`` holds its input five times. Compositions of piecewise terms and row
statistics grow as trees exponentially in the number of terms, and SymPy walks them as trees:
such specs are over the compile budget (``branch_conditions``, ``expression_nodes``...).

A spec over one of those budgets is lowered again with stages (``lower(..., staged=True)``):
before each term, an input that holds branches or is large becomes a :class:`Stage` node, an
unevaluated function whose value is the earlier terms' expression (``body``, in formal symbols)
and whose arguments are what that reads directly: z, n, its own term's parameters, and the stage
before it and row reductions as nodes (so a body never holds a stage: stages nest through their
arguments). The next term is built on that small node, so every expression SymPy sees stays the
size of one term, and the cost grows with the number of terms, not exponentially:

* derivatives follow the chain rule through :meth:`Stage.fdiff`: ∂S/∂a_i is another stage whose
  body is the body's derivative (inline where that is small and branch-free), made once per
  stage and argument, so that forward mode and second order come the same way;
* every backend prints a stage as an assignment before the expressions that use it
  (``backends.emit.Emitter.block``): the body once per element and loop, then its name.

Specs within the budgets never take this path: their code is what it was, bit for bit.
"""
from __future__ import annotations

import threading

import sympy as sp
from mpmath.libmp.libmpf import prec_to_dps

from .errors import SYMPY_FAILURES, ActdslError, BudgetError
from .ir import RowReduction, n, z

#: budgets that a staged lowering keeps a composition within: over one of them, a spec is lowered
#: again with stages
HELPS = frozenset({"branch_conditions", "expression_nodes", "expression_depth", "derivative_nodes",
                   "source_chars"})


def plain_or_staged(build):
    """``build(False)`` (the plain lowering); where that is over a budget that stages help with,
    ``build(True)``. Where that is over a budget too (or fails inside SymPy), the first error (it
    names the budget to raise), with the staged attempt's as its cause; an error in the spec
    itself that only the staged attempt reached (maxout:66 after five lgrelus) is raised as it
    is."""
    try:
        return build(False)
    except BudgetError as plain:
        if plain.budget not in HELPS:
            raise
        try:
            return build(True)
        except ActdslError as e:
            if not isinstance(e, BudgetError) or e.budget == "compile_seconds":
                raise  # what is wrong with the spec itself (maxout:66), or the time spent
            raise plain from e
        except SYMPY_FAILURES + (NotImplementedError,) as e:
            raise plain from e


class Stage(sp.Function):
    """Base of the classes :func:`make` creates: ``S(a_1..a_m)`` is ``body`` at
    ``formals`` = args."""

    is_real = True
    formals: tuple = ()
    body: sp.Expr = sp.S.Zero
    _derivatives: dict = {}

    @classmethod
    def eval(cls, *args):
        if cls.formals and all(isinstance(a, sp.Basic) and a.is_Number for a in args):
            return cls.body.xreplace(dict(zip(cls.formals, args)))  # numbers: SymPy evaluates
        return None

    def fdiff(self, argindex=1):
        cls = type(self)
        with _lock:
            d = cls._derivatives.get(argindex)
        if d is None:
            d = _derivative(cls, argindex - 1)
            with _lock:
                d = cls._derivatives.setdefault(argindex, d)
        if isinstance(d, type):
            return d(*self.args)
        return self.instantiate(d)

    def instantiate(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` (in this stage's formals) at this node's arguments, built without SymPy's
        evaluation (derive.replace_nodes)."""
        from .derive import replace_nodes
        return replace_nodes(expr, dict(zip(type(self).formals, self.args)))

    def value(self, args: tuple | None = None) -> sp.Expr:
        """The body at this node's arguments (or at ``args`` in their place)."""
        from .derive import replace_nodes
        return replace_nodes(type(self).body, dict(zip(type(self).formals, args or self.args)))

    def _eval_evalf(self, prec):
        return self.value().evalf(prec_to_dps(prec))


_lock = threading.Lock()


def _new_class(body: sp.Expr, formals: tuple, name: str) -> type:
    return type(name, (Stage,), {"body": body, "formals": formals, "_derivatives": {},
                                 "__module__": __name__})


def _derivative(cls: type, i: int):
    """∂body/∂formal_i: an expression in the formals where it is small and branch-free, else a
    stage class of its own."""
    from . import budget
    from .derive import bounded_derivative
    d, _ = bounded_derivative(cls.body, cls.formals[i], 0, "the derivative of one stage")
    if d.is_Number or (budget.small(d, nodes=40) and not d.has(sp.Piecewise)):
        return d
    return _new_class(d, cls.formals, f"{cls.__name__}_d{i + 1}")


def _reads(u: sp.Expr) -> tuple[set, set]:
    """The stage nodes and row reductions ``u`` reads outside any other of them, and the symbols
    it reads outside them."""
    nodes, symbols, stack, seen = set(), set(), [u], set()
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        if isinstance(e, (Stage, RowReduction)):
            nodes.add(e)
        elif isinstance(e, sp.Symbol):
            symbols.add(e)
        elif isinstance(e, sp.Basic):
            stack.extend(e.args)
    return nodes, symbols


def make(u: sp.Expr, index: int) -> sp.Expr:
    """``u`` as a stage node. Its arguments are what ``u`` reads directly: z and the row length
    n (first, where read), the parameters of its own term (by name), and the stage before it and
    the row reductions, as nodes. Each stage's arguments are then its own term's few, however
    many terms came before (the earlier parameters reach it through the stage before it), and a
    derivative in a parameter is a chain of one term's derivatives."""
    from .derive import replace_nodes, to_piecewise
    nodes, symbols = _reads(u)
    args = ([s for s in (z, n) if s in symbols]
            + sorted(symbols - {n, z}, key=lambda s: s.name)
            + sorted(nodes, key=sp.default_sort_key))
    formals = tuple(sp.Dummy(f"a{i}", real=True) for i in range(len(args)))
    body = to_piecewise(replace_nodes(u, dict(zip(args, formals))))
    # the name orders stages in generated source (canonical CSE): one per term, the same in
    # every process
    cls = _new_class(body, formals, f"u{index}")
    return cls(*args)


def stages_in(exprs) -> list:
    """The stage nodes in ``exprs``, innermost first (each after the stages in its arguments:
    a body holds none)."""
    order, seen = [], set()

    def visit(node):
        if node in seen:
            return
        seen.add(node)
        for inner in sorted({a for arg in node.args for a in arg.atoms(Stage)},
                            key=sp.default_sort_key):
            visit(inner)
        order.append(node)

    for e in exprs:
        if isinstance(e, sp.Basic):
            for node in sorted(e.atoms(Stage), key=sp.default_sort_key):
                visit(node)
    return order

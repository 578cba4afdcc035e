"""SymPy -> source text, shared by the code-generating backends.

An :class:`Emitter` prints one expression at a time; a backend subclasses it and changes tables
(``functions``) and the few constructs its target spells differently (branches, booleans).
Every name in the output comes from ``names`` or from the emitter's own counters: user text never
reaches generated code, except numbers, which are printed as float literals.
"""
from __future__ import annotations

import itertools

import sympy as sp
from sympy.logic.boolalg import BooleanFalse, BooleanTrue

from ..errors import ActdslError
from ..stable import Primitive


class Emitter:
    #: SymPy function class -> callable name in the target
    functions: dict[type, str] = {}
    #: key of ``Primitive.impl`` to use, and the prefix its runtime is imported as
    target = ""
    runtime = "_rt"
    #: symbols whose subexpressions are never hoisted by CSE
    keep_inline: tuple = ()

    def __init__(self, names: dict[sp.Symbol, str]):
        self.names = dict(names)
        self._counter = itertools.count()
        self._compared: dict[sp.Symbol, list[sp.Expr]] = {}  # hoisted condition -> its operands

    # -- statements ----------------------------------------------------------------------------
    def block(self, exprs: list[sp.Expr], prefix: str = "t") -> tuple[list[str], list[str]]:
        """Common subexpressions of ``exprs`` as assignments, then each expression's text."""
        fresh = (sp.Symbol(f"_{prefix}{next(self._counter)}", real=True) for _ in itertools.count())
        # the row length stays out of shared parts, so r/n is printed as an (exact) division
        # canonical order: the same source in every process (the cache is keyed on the source)
        lets, reduced = sp.cse(exprs, symbols=fresh, order="canonical", ignore=self.keep_inline)
        lines = []
        for sym, value in lets:
            self.names[sym] = sym.name
            if isinstance(value, sp.logic.boolalg.Boolean):
                self._compared[sym] = self._operands(value)
            lines.append(f"{sym.name} = {self(value)}")
        return lines, [self(e) for e in reduced]

    # -- expressions ---------------------------------------------------------------------------
    def __call__(self, e) -> str:
        if isinstance(e, sp.Symbol):
            try:
                return self.names[e]
            except KeyError:  # only compiler-made names are printed, never a user's symbol
                raise ActdslError(f"the activation uses a symbol {str(e)[:40]!r} that is neither z "
                                  "nor a declared parameter") from None
        if e.is_Number or isinstance(e, sp.NumberSymbol):
            return self.number(e)
        if isinstance(e, (BooleanTrue, BooleanFalse)):
            return "True" if e else "False"
        method = getattr(self, "_" + type(e).__name__, None)
        if method is not None:
            return method(e)
        if isinstance(e, Primitive):
            name = e.impl[self.target]
            name = name if "." in name else f"{self.runtime}.{name}"
            return f"{name}({', '.join(self(a) for a in e.args)})"
        if isinstance(e, sp.Piecewise):
            return self.piecewise(e)
        if isinstance(e, sp.core.relational.Relational):
            return f"({self(e.lhs)} {e.rel_op} {self(e.rhs)})"
        for cls, name in self.functions.items():
            if isinstance(e, cls):
                return f"{name}({', '.join(self(a) for a in e.args)})"
        raise ActdslError(f"the {self.target} backend has no implementation of "
                          f"{type(e).__name__} (used by this activation)")

    def number(self, e) -> str:
        if e is sp.nan:
            return "math.nan"
        if e in (sp.oo, -sp.oo):
            return "math.inf" if e is sp.oo else "(-math.inf)"
        value = repr(float(e))
        return f"({value})" if value.startswith("-") else value

    def _Add(self, e):
        terms = [self(a) for a in sp.Add.make_args(e)]
        return "(" + " + ".join(terms) + ")"

    def _Mul(self, e):
        coeff, factors = e.as_coeff_mul()
        num, den = [], []
        for f in factors:
            if f.is_Pow and f.exp.is_Rational and f.exp.is_negative:
                den.append(sp.Pow(f.base, -f.exp, evaluate=False) if f.exp != -1 else f.base)
            else:
                num.append(f)
        text = " * ".join(self(f) for f in num) or self.number(sp.S.One)
        if coeff.is_Rational and coeff.q != 1 and num:
            # x/6 is correctly rounded; x * (1/6) is not (and with FMA, -3*(1/6) + 0.5 != 0)
            if abs(coeff.p) != 1:
                text = f"{self.number(sp.Integer(abs(coeff.p)))} * {text}"
            den = [sp.Integer(coeff.q)] + den
            coeff = sp.Integer(-1 if coeff.p < 0 else 1)
        if coeff == -1:
            text = f"-{text}"
        elif coeff != 1:
            text = f"{self.number(coeff)} * {text}"
        if den:
            text = f"{text} / ({' * '.join(self(f) for f in den)})"
        return f"({text})"

    def _Pow(self, e):
        b, x = e.base, e.exp
        if x == sp.Rational(1, 2):
            return self.sqrt(self(b))
        if x == -sp.Rational(1, 2):
            return f"({self.number(sp.S.One)} / {self.sqrt(self(b))})"
        if x == -1:
            return f"({self.number(sp.S.One)} / {self(b)})"
        if x == 2:
            return self.square(self(b))
        if x.is_Integer:
            return f"({self(b)} ** {int(x)})"
        return f"({self(b)} ** {self(x)})"

    def _Not(self, e):
        return self.logical_not(self(e.args[0]))

    def _And(self, e):
        return self.logical("and", [self(a) for a in e.args])

    def _Or(self, e):
        return self.logical("or", [self(a) for a in e.args])

    def _ITE(self, e):
        c, a, b = e.args
        return self.select([(self(a), self(c))], self(b), [])

    def piecewise(self, e: sp.Piecewise) -> str:
        """Branches in order; NaN in any compared operand gives NaN (it fails every comparison,
        so without this it would silently take the last branch)."""
        operands = []
        for _, cond in e.args:
            operands += [o for o in self._operands(cond) if o not in operands]
        branches = [(self(v), self(c)) for v, c in e.args[:-1]]
        last_value, last_cond = e.args[-1]
        if last_cond is not sp.true:  # no default: SymPy leaves it undefined; we use NaN
            branches.append((self(last_value), self(last_cond)))
            last_value = sp.nan
        return self.select(branches, self(last_value), [self(o) for o in operands])

    def _operands(self, cond) -> list[sp.Expr]:
        """The non-constant expressions a condition compares, through hoisted conditions too."""
        found = []  # sorted: sets iterate in a per-process (hash-seeded) order
        for rel in sorted(cond.atoms(sp.core.relational.Relational), key=sp.default_sort_key):
            found += [s for s in (rel.lhs, rel.rhs) if not s.is_Number]
        for sym in sorted(cond.free_symbols, key=sp.default_sort_key):
            found += self._compared.get(sym, [])
        return list(dict.fromkeys(found))

    # -- what targets spell differently ---------------------------------------------------------
    def sqrt(self, x: str) -> str:
        raise NotImplementedError

    def square(self, x: str) -> str:
        return f"({x} * {x})"

    def logical(self, op: str, parts: list[str]) -> str:
        raise NotImplementedError

    def logical_not(self, x: str) -> str:
        raise NotImplementedError

    def select(self, branches: list[tuple[str, str]], default: str, nan_operands: list[str]) -> str:
        raise NotImplementedError


class Source:
    """Generated source, built line by line at the current indentation."""

    def __init__(self):
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, *lines: str):
        self.lines += ["    " * self.depth + line if line else "" for line in lines]

    def indent(self):
        self.depth += 1

    def dedent(self):
        self.depth -= 1

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

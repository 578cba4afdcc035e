"""The parsed form of a spec: frozen, hashable dataclasses whose ``str`` is canonical spec text."""
from __future__ import annotations

from dataclasses import dataclass, field

Number = int | float
Value = Number | tuple[Number, ...]


def format_number(v: Number) -> str:
    """Shortest text that reads back as the same number (``repr`` of a float round-trips)."""
    if isinstance(v, bool):
        raise TypeError("booleans are not spec numbers")
    if isinstance(v, int):
        return str(v)
    return repr(float(v))  # "2.0" stays a float and "-0.0" keeps its sign when read back


def format_value(v: Value) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(format_number(x) for x in v) + "]"
    return format_number(v)


@dataclass(frozen=True)
class Term:
    """One activation in a composition: ``name[:variant][(arg=value, ...)]``.

    ``name`` and a word ``variant`` are lower case; a count variant (``maxout:3``) is an int.
    ``args`` keeps the order the user wrote.
    """

    name: str
    variant: str | int | None = None
    args: tuple[tuple[str, Value], ...] = ()
    #: (line, column) in the text it was parsed from, for error pictures; not part of equality.
    pos: tuple[int, int] | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The registry key: ``norm:z`` for a word variant, the bare name for a count."""
        if isinstance(self.variant, str):
            return f"{self.name}:{self.variant}"
        return self.name

    def __str__(self) -> str:
        text = self.name if self.variant is None else f"{self.name}:{self.variant}"
        if self.args:
            text += "(" + ", ".join(f"{k}={format_value(v)}" for k, v in self.args) + ")"
        return text


@dataclass(frozen=True)
class Spec:
    """A composition of terms, applied left to right."""

    terms: tuple[Term, ...]

    def __str__(self) -> str:
        return "+".join(str(t) for t in self.terms)


# -- inline formulas -------------------------------------------------------------------------
# Precedence for printing with the fewest parentheses: higher binds tighter.
_PREC = {"compare": 1, "+": 2, "-": 2, "*": 3, "/": 3, "neg": 4, "**": 5, "atom": 6}


@dataclass(frozen=True)
class Num:
    value: int | float

    prec = 6

    def __str__(self):
        return format_number(self.value)


@dataclass(frozen=True)
class Var:
    name: str

    prec = 6

    def __str__(self):
        return self.name


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Value], ...] = ()

    prec = 6

    def __str__(self):
        parts = [str(a) for a in self.args] + [f"{k}={format_value(v)}" for k, v in self.kwargs]
        return f"{self.name}({', '.join(parts)})"


@dataclass(frozen=True)
class Neg:
    arg: object

    prec = 4

    def __str__(self):
        return f"-{_wrap(self.arg, 4)}"


@dataclass(frozen=True)
class BinOp:
    op: str   # + - * / ** or a comparison
    left: object
    right: object

    @property
    def prec(self):
        return _PREC.get(self.op, 1)

    def __str__(self):
        p = self.prec
        if self.op == "**":  # right-associative
            return f"{_wrap(self.left, p + 1)} ** {_wrap(self.right, p)}"
        return f"{_wrap(self.left, p)} {self.op} {_wrap(self.right, p + 1)}"


def _wrap(node, need: int) -> str:
    return f"({node})" if node.prec < need else str(node)


@dataclass(frozen=True)
class Formula:
    """An inline formula term ``{expr}`` over z."""

    expr: object
    pos: tuple[int, int] | None = field(default=None, compare=False, repr=False)

    def __str__(self):
        return "{" + str(self.expr) + "}"

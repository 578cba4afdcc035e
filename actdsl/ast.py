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

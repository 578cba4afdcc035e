"""One root for every error a user can see: :class:`ActdslError`."""
from __future__ import annotations

import difflib


#: what SymPy raises where a check before it should have refused the spec (compiler._bounded
#: turns these into an ActdslError; a staged lowering's retry into the plain one's BudgetError)
SYMPY_FAILURES = (ArithmeticError, AssertionError, AttributeError, LookupError, TypeError,
                  ValueError)


class ActdslError(Exception):
    """Root of every error actdsl raises on purpose."""


class SpecSyntaxError(ActdslError, ValueError):
    """A spec that does not follow the grammar.

    ``line`` and ``column`` are 1-based; ``context`` is the offending line with a caret under the
    column, ready to print.
    """

    def __init__(self, message: str, text: str = "", line: int = 1, column: int = 1):
        self.text, self.line, self.column = text, line, column
        self.context = caret_picture(text, line, column) if text else ""
        self.message = message
        full = f"{message} (line {line}, column {column})"
        if self.context:
            full += "\n" + self.context
        super().__init__(full)


class UnknownActivationError(ActdslError, KeyError):
    """A name that is not registered; ``suggestions`` holds the closest known names."""

    def __init__(self, name: str, known, what: str = "activation", context: str = ""):
        self.name = name
        self.suggestions = close_names(name, known)
        msg = f"unknown {what} {name!r}"
        if self.suggestions:
            msg += "; did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        else:
            msg += f"; `actdsl table` lists the known {what}s"
        if context:
            msg += "\n" + context
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.message


class ParameterError(ActdslError, ValueError):
    """A missing, unknown, mis-typed or mis-shaped parameter or argument."""


class ArrayTypeError(ActdslError, TypeError):
    """An input array of a kind actdsl does not compute with (complex, object, text, ...)."""


def close_names(name: str, known, n: int = 3) -> list[str]:
    known = sorted(set(known))
    hits = difflib.get_close_matches(name.lower(), known, n=n, cutoff=0.6)
    if not hits:  # a prefix or family match ("norm" -> norm:z, norm:std, ...)
        stem = name.lower().split(":")[0]
        hits = [k for k in known if k.split(":")[0] == stem][:n]
    return hits


def caret_picture(text: str, line: int, column: int) -> str:
    lines = text.splitlines() or [""]
    src = lines[min(max(line, 1), len(lines)) - 1]
    start = max(0, column - 1 - 60)  # keep very long lines readable
    shown = src[start:start + 120]
    prefix = "... " if start else ""
    return f"  {prefix}{shown}\n  {' ' * (len(prefix) + column - 1 - start)}^"


def on_one_line(message: str) -> str:
    """``message`` as one line: its first, and where a caret picture (above) ends it, the text
    it points into and, unless the first line says so already, the column."""
    lines = message.rstrip().splitlines() or [""]
    first = lines[0].strip()
    if len(lines) >= 3 and lines[-1].strip() == "^":
        shown, caret = lines[-2][2:], lines[-1][2:]
        at = "" if "column" in first or shown.startswith("... ") else f"column {len(caret)} of "
        first += f" ({at}{shown!r})"
    return first


class BudgetError(ActdslError):
    """A spec whose compile would go over a budget (``budget`` names it; actdsl.budget)."""

    def __init__(self, message: str, budget: str = ""):
        self.budget = budget
        super().__init__(message)


class BackendUnavailableError(ActdslError):
    """A backend that cannot run here (no GPU, a missing optional package)."""


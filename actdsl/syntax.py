"""Text -> AST. The grammar is ``grammar/actdsl.lark``; this module only shapes its tree.

Names are *not* resolved here (that is ``lower.py``'s job), so the parser knows nothing of the
registry and a Transformer never raises on a well-formed spec.
"""
from __future__ import annotations

import functools
import math
import sys

import re

from lark import Lark, Token, Transformer, v_args, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from lark.exceptions import VisitError

from .ast import BinOp, Call, Formula, Neg, Num, Spec, Term, Var
from .errors import SpecSyntaxError, caret_picture
from . import budget

#: Longest spec accepted; past it parsing would only waste time on input nobody writes by hand.
MAX_SPEC_LENGTH = 4096
#: Deepest nesting of brackets accepted (the tree is walked recursively).
MAX_NESTING = 48
_LARGEST = int(sys.float_info.max)


@functools.cache
def _parser() -> Lark:
    return Lark.open_from_package("actdsl", "actdsl.lark", ("grammar",), parser="lalr",
                                  propagate_positions=True, maybe_placeholders=True)


class _ToAst(Transformer):
    def spec(self, terms):
        return Spec(tuple(terms))

    @v_args(meta=True)
    def term(self, meta, children):
        (name, variant), args = children
        return Term(name, variant, args or (), pos=(meta.line, meta.column))

    def key(self, children):
        name, variant = children
        return str(name).lower(), variant

    def word_variant(self, children):
        return str(children[0]).lower()

    def count_variant(self, children):
        return int(children[0])

    def arguments(self, children):
        return tuple(c for c in children if c is not None)

    def argument(self, children):
        name, value = children
        return str(name).lower(), value

    def number(self, children):
        token = children[0]
        text = str(token)
        try:
            value = int(text)
        except ValueError:
            value = float(text)
        if isinstance(value, float) and math.isinf(value) or \
                isinstance(value, int) and abs(value) > _LARGEST:
            raise _Misplaced(token, f"the number {text[:30]}{'...' if len(text) > 30 else ''} is "
                             "beyond float64's range (about 1.8e308); write a smaller number")
        return value

    def vector(self, children):
        return tuple(c for c in children if c is not None)

    # inline formulas
    @v_args(meta=True)
    def formula(self, meta, children):
        return Formula(children[0], pos=(meta.line, meta.column))

    def const(self, children):
        return Num(self.number(children))

    def var(self, children):
        return Var(_name(children[0]))

    def call(self, children):
        name, *args = children
        args = [a for a in args if a is not None]
        positional = tuple(a for a in args if not isinstance(a, tuple))
        kwargs = tuple(a for a in args if isinstance(a, tuple))
        if any(isinstance(a, tuple) for a in args[: len(positional)]):
            raise _Misplaced(name, "positional arguments go before keyword arguments")
        return Call(_name(name), positional, kwargs)

    def kwarg(self, children):
        name, value = children
        return _name(name), value

    def compare(self, children):
        left, op, right = children
        return BinOp(str(op), left, right)

    def add(self, c):
        return BinOp("+", *c)

    def sub(self, c):
        return BinOp("-", *c)

    def mul(self, c):
        return BinOp("*", *c)

    def div(self, c):
        return BinOp("/", *c)

    def pow(self, c):
        return BinOp("**", *c)

    def neg(self, c):
        return Neg(c[0])


class _Misplaced(Exception):
    def __init__(self, token, message):
        self.token, self.message = token, message


def _name(token) -> str:
    text = str(token)
    if text.startswith("__"):
        raise _Misplaced(token, f"names starting with '__' are not allowed ({text!r})")
    return text.lower() if text not in ("pi", "e") else text


_TOKEN_WORDS = {"NAME": "a name", "FNAME": "a name", "CIRCUMFLEX": "'^'", "EQUAL": "'='", "PLUS": "'+'", "COLON": "':'", "LPAR": "'('",
                "LBRACE": "'{'", "RBRACE": "'}'", "NUMBER": "a number", "MINUS": "'-'",
                "STAR": "'*'", "SLASH": "'/'", "COMPARE": "a comparison",
                "RPAR": "')'", "COMMA": "','", "EQUAL": "'='", "SIGNED_NUMBER": "a number",
                "INT": "a count", "LSQB": "'['", "RSQB": "']'", "$END": "the end of the spec"}


def _expected(tokens) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t) for t in tokens})
    return " or ".join(words) if words else "something else"


def parse(text: str) -> Spec:
    """Parse spec text into a :class:`~actdsl.ast.Spec`. Raises :class:`SpecSyntaxError`."""
    if not isinstance(text, str):
        raise SpecSyntaxError(f"a spec is text, not {type(text).__name__}")
    if len(text) > MAX_SPEC_LENGTH:
        raise SpecSyntaxError(f"spec is {len(text)} characters long; the limit is {MAX_SPEC_LENGTH}",
                              text, 1, MAX_SPEC_LENGTH + 1)
    if not text.strip():
        raise SpecSyntaxError("empty spec: expected an activation name such as 'relu'", text or " ", 1, 1)
    _check_nesting(text)
    try:
        tree = _parser().parse(text)
    except UnexpectedCharacters as e:
        habit = _pytorch_habit(text, e.pos_in_stream)
        if habit:
            raise SpecSyntaxError(habit, text, e.line, e.column) from None
        raise SpecSyntaxError(f"unexpected character {text[e.pos_in_stream]!r}; expected "
                              f"{_expected(e.allowed or ())}", text, e.line, e.column) from None
    except UnexpectedEOF as e:
        line, col = _end_position(text)
        raise SpecSyntaxError(f"the spec ends too early; expected {_expected(e.expected)}",
                              text, line, col) from None
    except UnexpectedToken as e:
        tok: Token = e.token
        if tok.type == "$END":
            line, col = _end_position(text)
            raise SpecSyntaxError(f"the spec ends too early; expected {_expected(e.expected)}",
                                  text, line, col) from None
        habit = _pytorch_habit(text, tok.start_pos)
        if habit:
            raise SpecSyntaxError(habit, text, tok.line, tok.column) from None
        raise SpecSyntaxError(f"unexpected {str(tok)[:40]!r}; expected {_expected(e.expected)}",
                              text, tok.line, tok.column) from None
    except UnexpectedInput as e:  # pragma: no cover - lark's remaining kinds
        raise SpecSyntaxError(str(e).splitlines()[0], text, e.line, e.column) from None
    _check_depth(tree, text)
    try:
        return _ToAst().transform(tree)
    except VisitError as e:  # lark wraps what a Transformer method raises
        if isinstance(e.orig_exc, _Misplaced):
            tok = e.orig_exc.token
            raise SpecSyntaxError(e.orig_exc.message, text, getattr(tok, "line", 1),
                                  getattr(tok, "column", 1)) from None
        raise


_CALL = re.compile(r"([A-Za-z_][\w:-]*)\s*\(([^()]*)$")
_TEXT_ARG = re.compile(r"(\w+)\s*=\s*$")
_QUOTED = re.compile(r"""\s*(["'])([^"']*)\1""")


def _pytorch_habit(text: str, pos: int) -> str | None:
    """A message for what PyTorch users write: positional arguments (``leaky_relu(0.2)``) and
    text arguments (``gelu(approximate="tanh")``); None for other mistakes."""
    from . import library  # noqa: F401  (fills the registry)
    from .registry import REGISTRY
    call = _CALL.search(text[:pos])
    if call is None or call.group(1).lower() not in REGISTRY:
        return None
    d = REGISTRY.lookup(call.group(1))
    inside = call.group(2)
    quoted = _QUOTED.match(text, pos)
    named = _TEXT_ARG.search(inside)
    if quoted and named:
        variant = f"{d.key}:{quoted.group(2).lower()}"
        if variant in REGISTRY:
            return (f"arguments are numbers, not text: for PyTorch's {named.group(1)}="
                    f"{quoted.group(1)}{quoted.group(2)}{quoted.group(1)} write {variant!r}")
        return f"arguments are numbers, not text ({named.group(1)}=...)"
    if text[pos:pos + 1] in "-+.0123456789" and not _TEXT_ARG.search(inside):
        index = inside.count(",")
        names = [h.name for h in d.hyper] + [p.name for p in d.params]
        value = re.match(r"[-+.\w]+", text[pos:])
        shown = value.group(0) if value else "..."
        if index < len(names):
            return (f"arguments are keywords: write {d.key}({names[index]}={shown}) "
                    f"({d.key}'s arguments: {', '.join(names)})")
        return f"arguments are keywords, and {d.key!r} takes " + (
            f"only {', '.join(names)}" if names else "none")
    return None


def _check_nesting(text: str) -> None:
    depth, line, col = 0, 1, 0
    for ch in text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise SpecSyntaxError(f"brackets nested deeper than {MAX_NESTING}", text, line, col)
        elif ch in ")]}":
            depth -= 1


def _check_depth(tree, text: str) -> None:
    """Operations chained in a formula nest one level each (z+z+...+z is a tree as deep as it is
    long); everything after the parser walks the tree recursively, so its depth is bounded here,
    without recursion."""
    cap = budget.limit("formula_depth")
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > cap:
            meta = getattr(node, "meta", None)
            line, col = (getattr(meta, "line", 1), getattr(meta, "column", 1)) if meta else (1, 1)
            raise budget.exceeded("formula_depth", "this formula", None,
                                  caret_picture(text, line, col))
        stack.extend((c, depth + 1) for c in getattr(node, "children", ()) if hasattr(c, "children"))


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1

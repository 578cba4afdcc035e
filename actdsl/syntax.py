"""Text -> AST. The grammar is ``grammar/actdsl.lark``; this module only shapes its tree.

Names are *not* resolved here (that is ``lower.py``'s job), so the parser knows nothing of the
registry and a Transformer never raises on a well-formed spec.
"""
from __future__ import annotations

import functools

from lark import Lark, Token, Transformer, v_args, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .ast import Spec, Term
from .errors import SpecSyntaxError

#: Longest spec accepted; past it parsing would only waste time on input nobody writes by hand.
MAX_SPEC_LENGTH = 4096


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
        text = str(children[0])
        try:
            return int(text)
        except ValueError:
            return float(text)

    def vector(self, children):
        return tuple(c for c in children if c is not None)


_TOKEN_WORDS = {"NAME": "an activation name", "PLUS": "'+'", "COLON": "':'", "LPAR": "'('",
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
    try:
        tree = _parser().parse(text)
    except UnexpectedCharacters as e:
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
        raise SpecSyntaxError(f"unexpected {str(tok)[:40]!r}; expected {_expected(e.expected)}",
                              text, tok.line, tok.column) from None
    except UnexpectedInput as e:  # pragma: no cover - lark's remaining kinds
        raise SpecSyntaxError(str(e).splitlines()[0], text, e.line, e.column) from None
    return _ToAst().transform(tree)


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1

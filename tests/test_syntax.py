"""The spec language: parsing, canonical text, and errors a person can act on."""
import pytest
from hypothesis import given, settings, strategies as st

import actdsl
from actdsl.ast import Spec, Term
from actdsl.registry import REGISTRY

SEED_KEYS = ["linear", "sigmoid", "logistic", "tanh", "softplus", "softmax", "relu", "trel",
             "trec", "tlin", "rect:min", "rect:max", "norm:mean", "norm:max", "norm:std",
             "norm:z", "prelu", "lgrelu", "maxout"]


@pytest.mark.parametrize("key", SEED_KEYS)
def test_every_seed_key_parses_and_is_known(key):
    spec = actdsl.parse(key)
    assert str(spec) == key
    assert key in REGISTRY


@pytest.mark.parametrize("text, canonical", [
    ("relu", "relu"),
    ("  tanh +  norm:z ", "tanh+norm:z"),
    ("ReLU+Tanh", "relu+tanh"),
    ("maxout:3", "maxout:3"),
    ("maxout( pieces = 3 )", "maxout(pieces=3)"),
    ("elu(alpha=0.50)", "elu(alpha=0.5)"),
    ("prelu(r=1e-1)", "prelu(r=0.1)"),
    ("elu(alpha=-2.)", "elu(alpha=-2.0)"),
    ("elu(alpha=-0.0)", "elu(alpha=-0.0)"),
    ("elu(alpha=2)", "elu(alpha=2)"),
    ("maxout:2(m=[1,-1], b=[0, 0.5],)", "maxout:2(m=[1, -1], b=[0, 0.5])"),
    ("relu\n+\ttanh", "relu+tanh"),
    ("leaky-relu", "leaky-relu"),
    ("rect:minmax", "rect:minmax"),
])
def test_canonical_text(text, canonical):
    spec = actdsl.parse(text)
    assert str(spec) == canonical
    assert actdsl.parse(str(spec)) == spec


def test_ast_shape():
    spec = actdsl.parse("tanh+maxout:3+elu(alpha=0.5)")
    assert spec == Spec((Term("tanh"), Term("maxout", 3), Term("elu", None, (("alpha", 0.5),))))
    assert spec.terms[1].key == "maxout"
    assert actdsl.parse("norm:z").terms[0].key == "norm:z"


def test_composition_is_left_to_right():
    import numpy as np
    x = np.linspace(-3, 3, 13)
    assert np.allclose(actdsl.compile("relu+tanh")(x), np.tanh(np.maximum(x, 0)))
    assert np.allclose(actdsl.compile("tanh+relu")(x), np.maximum(np.tanh(x), 0))


def test_maxout_count_and_keyword_are_the_same_function():
    import numpy as np
    a, b = actdsl.compile("maxout:3"), actdsl.compile("maxout(pieces=3)")
    p = a.init_params(4, rng=1)
    x = np.random.default_rng(0).normal(size=(5, 4))
    assert np.array_equal(a(x, **p), b(x, **p))


@pytest.mark.parametrize("text, line, column, words", [
    ("relu+", 1, 6, "ends too early"),
    ("relu++tanh", 1, 6, "unexpected '+'"),
    ("relu(", 1, 6, "ends too early"),
    ("elu(alpha=)", 1, 11, "a number"),
    ("relu$", 1, 5, "unexpected character '$'"),
    ("relu\n+ +tanh", 2, 3, "unexpected '+'"),
    ("maxout:2.5", 1, 9, "unexpected"),
    ("", 1, 1, "empty spec"),
    ("   ", 1, 1, "empty spec"),
])
def test_syntax_errors_have_position_and_caret(text, line, column, words):
    with pytest.raises(actdsl.SpecSyntaxError) as info:
        actdsl.parse(text)
    e = info.value
    assert isinstance(e, ValueError) and isinstance(e, actdsl.ActdslError)
    assert (e.line, e.column) == (line, column)
    assert words in str(e)
    caret_line = e.context.splitlines()[-1]
    assert caret_line.index("^") - 2 == column - 1  # two spaces of indent, then the caret


def test_too_long_spec_is_refused_quickly():
    with pytest.raises(actdsl.SpecSyntaxError, match="limit"):
        actdsl.parse("relu+" * 2000 + "relu")


def test_non_text_spec():
    with pytest.raises(actdsl.SpecSyntaxError, match="text"):
        actdsl.parse(42)


@pytest.mark.parametrize("name, suggestion", [
    ("relux", "relu"), ("tanhh", "tanh"), ("sigmod", "sigmoid"), ("softmx", "softmax"),
    ("norm:zz", "norm:z"), ("norm", "norm:z"), ("maxot", "maxout"), ("soft_plus", "softplus"),
])
def test_unknown_names_suggest_close_keys(name, suggestion):
    with pytest.raises(actdsl.UnknownActivationError) as info:
        actdsl.compile(f"tanh+{name}")
    e = info.value
    assert isinstance(e, KeyError) and isinstance(e, actdsl.ActdslError)
    assert suggestion in e.suggestions
    text = str(e)
    assert repr(suggestion) in text
    assert "^" in text and "tanh+" in text  # the caret picture points into the spec
    assert text.splitlines()[-1].index("^") == text.splitlines()[-2].index("+") + 1


@pytest.mark.parametrize("text, words", [
    ("elu(alfa=1)", "did you mean 'alpha'"),
    ("relu(x=1)", "takes no arguments"),
    ("relu:3", "takes no count"),
    ("maxout(pieces=0)", "at least 1"),
    ("maxout(pieces=2.5)", "whole number"),
    ("maxout:2(pieces=3)", "twice"),
    ("elu(alpha=1, alpha=2)", "twice"),
    ("prelu(r=[1, 2])", "one number"),
    ("maxout:2(m=[1, 2, 3])", "needs 2 values"),
    ("norm:z(eps=0)", "above 0"),
    ("elu(alpha=[1])", "not a list"),
])
def test_bad_arguments(text, words):
    with pytest.raises(actdsl.ParameterError, match=words.replace("(", r"\(")):
        actdsl.compile(text)


# -- property: every grammar-shaped spec round-trips through its canonical text ----------------
names = st.sampled_from(sorted(REGISTRY.names()))
numbers = st.one_of(st.integers(-1000, 1000),
                    st.floats(allow_nan=False, allow_infinity=False, width=64))
values = st.one_of(numbers, st.lists(numbers, min_size=1, max_size=4).map(tuple))
arg_names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)


@st.composite
def terms(draw):
    name = draw(names)
    base, _, variant = name.partition(":")
    if not variant and draw(st.booleans()):
        variant = draw(st.integers(1, 9))
    args = draw(st.lists(st.tuples(arg_names, values), max_size=3, unique_by=lambda a: a[0]))
    return Term(base, variant or None, tuple(args))


@settings(max_examples=300, deadline=None)
@given(st.lists(terms(), min_size=1, max_size=4))
def test_canonical_text_round_trips(term_list):
    spec = Spec(tuple(term_list))
    text = str(spec)
    assert actdsl.parse(text) == spec
    assert str(actdsl.parse(text)) == text

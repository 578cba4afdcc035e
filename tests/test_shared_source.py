"""Repeated expressions of generated source computed once (actdsl.backends.shared).

The oracle is the unchanged source: the shared form must compute the same values, bit for bit,
on any input, and leave alone what it cannot move."""
import ast
import math
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import actdsl
from actdsl.backends.shared import share


def _run(source: str, name: str, *args):
    namespace = {"np": np, "math": math}
    exec(compile(source, "<test>", "exec"), namespace)
    return namespace[name](*args)


def test_a_repeat_is_computed_once_before_its_first_use():
    src = textwrap.dedent("""\
        def f(a, b):
            c = np.exp(a * b) + 1.0
            d = np.exp(a * b) - np.sqrt(a * b)
            return c * d
        """)
    out = share(src)
    assert out.count("np.exp(") == 1 and out.count("a * b") == 1, out
    x, y = np.linspace(0.1, 3, 7), np.linspace(0.5, 2, 7)
    np.testing.assert_array_equal(_run(out, "f", x, y), _run(src, "f", x, y))


def test_a_name_assigned_again_makes_another_expression():
    src = textwrap.dedent("""\
        def f(a):
            b = np.tanh(a)
            a = a + 1.0
            c = np.tanh(a)
            return b, c, np.tanh(a)
        """)
    out = share(src)
    # tanh(a) before and after the assignment are two values: only the later one repeats
    assert out.count("np.tanh(") == 2, out
    x = np.linspace(-2, 2, 5)
    for got, want in zip(_run(out, "f", x), _run(src, "f", x)):
        np.testing.assert_array_equal(got, want)


def test_array_reads_impure_calls_and_other_statements_stay_where_they_are():
    src = textwrap.dedent("""\
        def f(x, out, log):
            out[0] = x[1] * 2.0
            y = x[1] * 2.0
            log.append(y)
            z = np.empty(3) + (y * y)
            log.append(y)
            w = np.empty(3) + (y * y)
            return y * y, z.shape, w.shape, len(log)
        """)
    out = share(src)
    assert out.count("x[1] * 2.0") == 2, out      # reads an array (written in between)
    assert out.count("np.empty(3)") == 2, out     # allocates
    assert out.count("log.append(y)") == 2, out   # a statement of its own, and ends the run
    # y * y repeats only across the append: each run computes its own
    assert out.count("y * y") == 2, out
    got = _run(out, "f", np.arange(3.0), np.zeros(3), [])
    assert got == _run(src, "f", np.arange(3.0), np.zeros(3), [])


def test_blocks_are_runs_of_their_own_and_comments_outside_them_survive():
    src = textwrap.dedent("""\
        # a header comment the cache key reads
        def f(x):
            total = 0.0
            for i in range(3):
                # kept: this line is not an assignment
                total = total + np.sin(x * i) + np.sin(x * i)
            return total + np.sin(x) + np.sin(x)
        """)
    out = share(src)
    assert out.startswith("# a header comment the cache key reads\n")
    assert "# kept: this line is not an assignment" in out
    assert out.count("np.sin(") == 2, out
    assert _run(out, "f", 0.7) == _run(src, "f", 0.7)


def test_names_it_makes_are_new_and_the_second_pass_finds_nothing():
    src = textwrap.dedent("""\
        def f(a, _e0):
            return np.exp(a + _e0) * np.exp(a + _e0)
        """)
    out = share(src)
    assert "_e0 = " not in out and "_e1 = " in out, out
    assert share(out) == out
    assert _run(out, "f", 0.5, 0.25) == _run(src, "f", 0.5, 0.25)


def test_unreadable_source_comes_back_as_it_was():
    for src in ["def f(:\n    pass\n", "a = 1; b = a + a + (a + a)\n"]:
        assert share(src) == src


_LEAVES = st.sampled_from(["a", "b", "c", "1.5", "-0.5"])


def _exprs():
    return st.recursive(
        _LEAVES,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.sampled_from(["np.tanh", "np.abs", "np.exp"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"),
            st.tuples(inner, inner, inner).map(
                lambda t: f"np.where({t[0]} > {t[1]}, {t[1]}, {t[2]})"),
        ),
        max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), _exprs()), min_size=1, max_size=8),
       _exprs())
def test_any_straight_line_program_computes_the_same_bits(assignments, result):
    """Programs of pure operations with names assigned again and again (the scans' pattern),
    repeats drawn often from a small vocabulary: the shared form returns identical bits."""
    body = [f"    {name} = {expr}" for name, expr in assignments]
    src = "def f(a, b, c):\n" + "\n".join(body) + f"\n    return {result}\n"
    out = share(src)
    ast.parse(out)
    args = [np.array([-1.5, -0.0, 0.25, 2.0, np.nan, np.inf]),
            np.array([0.5, 1.0, -2.0, 3.0, 1.0, -np.inf]), np.float64(0.75)]
    with np.errstate(all="ignore"):
        want = _run(src, "f", *args)
        got = _run(out, "f", *args)
    np.testing.assert_array_equal(got, want)


def _function_source(source: str, name: str) -> str:
    tree = ast.parse(source)
    return next(ast.get_source_segment(source, f) for f in tree.body
                if isinstance(f, ast.FunctionDef) and f.name == name)


def test_numpy_backend_computes_each_tanh_once():
    """tanh+norm:z's forward took np.tanh(z) three times, a pass over memory each."""
    k = actdsl.compile("tanh+norm:z")
    assert _function_source(k.source, "forward").count("np.tanh(") == 1, k.source


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_generated_source_holds_no_repeat_left(backend):
    spec = "softsign+maxout:5+threshold+softplus+rect:max+{min(z, 1)}"
    k = actdsl.compile(spec, backend=backend)
    assert share(k.source) == k.source  # a second pass finds nothing
    x = np.linspace(-3, 3, 24).reshape(4, 6)
    p = k.init_params(6)
    ref = actdsl.compile(spec, backend="numpy" if backend == "numba" else "numba")
    np.testing.assert_allclose(k(x, **p), ref(x, **p), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(k.vjp(x, x, **p), ref.vjp(x, x, **p), rtol=1e-12, atol=1e-300)

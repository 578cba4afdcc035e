"""Textbook formulas: every displayed derivative or Jacobian entry is small and equals the
derivative of the displayed g, taken numerically by mpmath at 50 digits at exact points (an
oracle that shares nothing with derive.py or textbook.py)."""
import mpmath
import pytest
import sympy as sp

import actdsl
from actdsl.ir import RowMax, RowReduction, RowSum, n, z
from actdsl.derive import i_index, j_index, z_i, z_j
from actdsl.registry import REGISTRY
from actdsl.textbook import formulas, size, y, y_i, y_j
from reference import COMPOSITIONS

#: the most operations (SymPy's count_ops) any displayed derivative may take; gelu:tanh's,
#: the longest, takes 38
BOUND = 40
POINTS = [sp.Rational(v) for v in ("-37/10", "-7/5", "-3/10", "2/7", "13/10", "27/10", "43/10",
                                    "67/10")]
ROW = [sp.Rational(v) for v in ("-13/10", "2/7", "9/4")]
KEYS = sorted(d.key for d in REGISTRY.definitions() if d.builtin)


def _params(expr):
    """A fixed exact value for each learnable parameter (r, g, m_k, b_k): positive, as the
    display forms max(0, z) - max(0, -r z) assume."""
    names = sorted((sym for sym in expr.free_symbols if sym.name[0] in "rgmb"), key=str)
    return {sym: sp.Rational(k + 2, 7) for k, sym in enumerate(names)}


def _subs(f):
    """Exact values for the named constants (a 40-digit Float would limit the central
    difference's precision) and the parameters."""
    return {**{sym: sp.Rational(v) for sym, v in f.constants.items()}, **_params(f.g)}


def _row_value(expr, row, i=None, j=None):
    """``expr`` (z the element, z_i, z_j, δ_ij, row reductions as atoms) on a concrete row."""
    def reduce(atom):
        body = reduce_all(atom.args[0])
        values = [body.subs(z, v) for v in row]
        if isinstance(atom, RowSum):
            return sp.Add(*values)
        return max(values, key=lambda v: sp.N(v, 60))

    def reduce_all(e):
        while True:  # innermost reductions first
            inner = [a for a in e.atoms(RowReduction) if not a.args[0].atoms(RowReduction)]
            if not inner:
                return e
            e = e.xreplace({atom: reduce(atom) for atom in inner})

    expr = expr.xreplace({n: len(row)})
    maxima = [a for a in expr.atoms(RowMax)]
    argmax = {}
    for k, atom in enumerate(sorted(maxima, key=str), start=1):
        body = reduce_all(atom.args[0])
        vals = [sp.N(body.subs(z, v), 60) for v in row]
        argmax[sp.Symbol(f"a_{k}", integer=True)] = vals.index(max(vals))
    expr = reduce_all(expr)
    if i is not None:
        expr = expr.subs({z_i: row[i], z_j: row[j], i_index: i, j_index: j}).subs(argmax)
    return expr


H = sp.Rational(1, 10 ** 20)  # central differences: error ~ H² g''' ~ 1e-40


def _numeric(expr, prec=80):
    return mpmath.mpf(sp.N(expr, prec))


def _central(f, x0):
    """f'(x0) from exact points x0 ± H, evaluated at 80 digits."""
    return (_numeric(f(x0 + H)) - _numeric(f(x0 - H))) / _numeric(2 * H)


def _truth_elementwise(g, z0):
    return _central(lambda t: g.subs(z, t), z0)


def _shown_elementwise(f, z0, subs):
    dg = f.dg.xreplace(subs)
    if dg.has(y):
        dg = dg.subs(y, f.g.xreplace(subs).subs(z, z0))
    return _numeric(dg.subs(z, z0))


def _check_elementwise(f):
    subs = _subs(f)
    g = f.g.xreplace(subs)
    for z0 in POINTS:
        truth = _truth_elementwise(g, z0)
        shown = _shown_elementwise(f, z0, subs)
        assert abs(shown - truth) <= mpmath.mpf(10) ** -25 * max(1, abs(truth)), (z0, shown, truth)


def _check_rowwise(f):
    subs = _subs(f)
    g = f.g.xreplace(subs)
    gi = lambda row, k: _row_value(g, row).subs(z, row[k])  # noqa: E731
    outputs = [gi(ROW, k) for k in range(len(ROW))]
    for i in range(len(ROW)):
        for j in range(len(ROW)):
            def yi_of(t, i=i, j=j):
                row = list(ROW)
                row[j] = t
                return gi(row, i)
            truth = _central(yi_of, ROW[j])
            dg = f.dg.subs(f.defs).xreplace(subs).subs({y_i: outputs[i], y_j: outputs[j]})
            shown = _numeric(_row_value(dg, ROW, i, j))
            assert abs(shown - truth) <= mpmath.mpf(10) ** -25 * max(1, abs(truth)), (i, j, shown, truth)


def _check(spec):
    mpmath.mp.dps = 80
    f = formulas(spec)
    (_check_rowwise if f.rowwise else _check_elementwise)(f)
    assert size(f.dg) <= BOUND, (spec, size(f.dg))


@pytest.mark.parametrize("key", KEYS)
def test_every_builtin_formula_is_small_and_right(key):
    _check("maxout:3" if key == "maxout" else key)


@pytest.mark.parametrize("spec", sorted(COMPOSITIONS))
def test_compositions_are_small_and_right(spec):
    _check(spec)


def test_custom_activations_follow_the_same_rules():
    c = sp.Float("0.7978845608028654", 30)  # a long decimal: becomes a named constant
    actdsl.register("tb_custom", sp.tanh(c * z) + sp.Rational(1, 10 ** 6) * z, "for this test",
                    replace=True)
    try:
        f = formulas("tb_custom")
        assert list(f.constants.values()) and all(v in (c, sp.Rational(1, 10 ** 6))
                                                  for v in f.constants.values())
        assert not any(isinstance(a, sp.Float) for a in f.dg.atoms(sp.Number))
        _check("tb_custom")
        _check("{z * sigmoid(z)}")
    finally:
        actdsl.unregister("tb_custom")


# the forms the issue names, as a textbook prints them
def test_textbook_forms():
    assert actdsl.latex("sigmoid", derivative=True) == (
        r"\left(1 - \sigma\left(z\right)\right) \sigma\left(z\right)")
    assert actdsl.latex("tanh", derivative=True) == r"1 - \tanh^{2}{\left(z \right)}"
    assert actdsl.latex("softmax", derivative=True) == r"y_{i} \left(\delta_{i j} - y_{j}\right)"
    assert actdsl.latex("norm:z", derivative=True) == (
        r"\frac{\delta_{i j} - \frac{1}{n}}{s + \varepsilon} - \frac{y_{i} y_{j}}{n s}")
    assert actdsl.latex("log_softmax", derivative=True) == r"\delta_{i j} - e^{y_{j}}"


def test_no_guards_shifts_or_long_decimals():
    for key in ("gelu", "gelu:tanh"):
        assert "40" not in actdsl.latex(key, derivative=True)
    for key in ("softmax", "log_softmax", "softmin"):
        assert r"\max" not in actdsl.latex(key, derivative=True)
    assert r"\sum_{l} \left(- \frac{2" not in actdsl.latex("norm:std", derivative=True)
    selu = formulas("selu")
    assert {str(k) for k in selu.constants} == {"alpha", "lambda"}
    assert r"\alpha" in actdsl.latex("selu") and "1.05" not in actdsl.latex("selu", True)
    gelu_tanh = formulas("gelu:tanh")
    assert list(gelu_tanh.constants.values()) == [sp.Rational(44715, 10 ** 6)]


def test_table_lists_constants_once_with_aliases_and_parameters_in_latex():
    text = actdsl.table("latex")
    assert "aliases" in text and "parameters" in text and r"\texttt{rect:minmax}" in text
    assert text.count("1.6732632423543772848") == 1
    assert "0.044715" in text and "8943" not in text

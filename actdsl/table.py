"""``actdsl.table``: the activation table, from the registry, in Markdown, reST, LaTeX or HTML.

One row per registered activation (built-in and custom): key, aliases, description, g(z), g'(z)
(for a row-wise key the Jacobian entry ∂y_i/∂z_j, with δ for Kronecker deltas), learnable
parameters, and whether it is elementwise or row-wise. The HTML is a standalone page whose math
is MathML (SymPy's presentation printer, taught actdsl's row notation), which browsers render
without any script or network.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

import sympy as sp
from sympy.printing.mathml import MathMLPresentationPrinter
from sympy.printing.precedence import PRECEDENCE

from .backends.latex import _means, to_latex
from .errors import ActdslError
from .registry import REGISTRY
from .textbook import formulas, where

#: the theanets page's 19 keys, in its order
SEED_KEYS = ("linear", "sigmoid", "logistic", "tanh", "softplus", "softmax", "relu", "rect:max",
             "rect:min", "trel", "trec", "tlin", "norm:mean", "norm:max", "norm:std", "norm:z",
             "prelu", "lgrelu", "maxout")
FORMATS = ("markdown", "rst", "latex", "html")

SEED_NOTE = ("Where the theanets page is wrong: it prints norm:std and norm:z with the variance "
             "E[(z - z̄)²] in the denominator, but its code (and actdsl) divides by the standard "
             "deviation plus ε; and it gives maxout as max_i m_i z, dropping the intercepts b_i "
             "its code adds. The seed's rect:minmax is trel under another name.")


@dataclass(frozen=True)
class Row:
    key: str
    aliases: tuple[str, ...]
    description: str
    rowwise: bool
    formula: sp.Expr
    derivative: sp.Expr
    parameters: str
    note: str
    seed: bool
    custom: bool
    #: (symbol, meaning) for the formulas' named constants ("= 1.0507...") and y, s, a_1
    symbols: tuple = ()

    @property
    def kind(self) -> str:
        return "row-wise" if self.rowwise else "elementwise"

    def latex(self) -> str:
        return to_latex(self.formula)

    def latex_derivative(self) -> str:
        return to_latex(self.derivative, index="l" if self.rowwise else None)

    def where_latex(self) -> list[tuple[str, str]]:
        """The symbols' LaTeX and their meanings, for a "where" line under the formulas."""
        return [(to_latex(sym), text) for sym, text in self.symbols]

    def where_text(self) -> str:
        """Plain text: "α = 1.6732632423543772848, λ = 1.0507009873554804934"."""
        return ", ".join(f"{_plain(sym)}{_sep(text)}" for sym, text in self.symbols)


_GREEK = {"alpha": "α", "lambda": "λ", "varepsilon": "ε", "epsilon": "ε"}


def _sep(text: str) -> str:
    """ " = 1.05" for a constant's value, ": the output" for a meaning."""
    return f" {text}" if text.startswith("=") else f": {text}"


def _plain(sym) -> str:
    return _GREEK.get(sym.name, sym.name)


def rows() -> list[Row]:
    """The table's rows: the seed's 19 keys first, in the seed's order, then the rest by key."""
    from . import library  # noqa: F401  (fills the registry)
    defs = REGISTRY.definitions()
    order = {k: i for i, k in enumerate(SEED_KEYS)}
    defs.sort(key=lambda d: (order.get(d.key, len(order)), not d.builtin, d.key))
    out = []
    for d in defs:
        try:
            f = formulas(d.key)
        except ActdslError as e:  # a custom activation that needs arguments
            raise ActdslError(f"cannot tabulate {d.key!r}: {e}") from None
        params = "; ".join(f"{p.name}: {p.description}" for p in d.params) or "none"
        hyper = ", ".join(f"{h.name}={h.default:g}" for h in d.hyper)
        if hyper:
            params = f"{params} (arguments: {hyper})" if d.params else f"arguments: {hyper}"
        out.append(Row(d.key, tuple(d.aliases), d.description, f.rowwise, f.g, f.dg,
                       params, d.note, d.key in order, not d.builtin, tuple(where(f))))
    return out


def table(fmt: str = "markdown", keys=None) -> str:
    """The activation table as text in ``fmt``: markdown, rst, latex or html; ``keys`` limits it
    to those keys (``SEED_KEYS``: the seed's 19)."""
    if fmt not in FORMATS:
        raise ActdslError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rs = rows()
    if keys is not None:
        wanted = {REGISTRY.lookup(k).key for k in keys}
        rs = [r for r in rs if r.key in wanted]
    return {"markdown": _markdown, "rst": _rst, "latex": _latex, "html": _html}[fmt](rs)


def _notes(rs) -> list[tuple[str, str]]:
    return [(r.key, r.note) for r in rs if r.note]


# -- Markdown (GitHub renders $...$) -----------------------------------------------------------
def _md_math(tex: str) -> str:
    return "$" + tex.replace("|", r"\vert ") + "$"  # a bare | would end the table cell


def _md_text(text: str) -> str:
    return text.replace("|", r"\|")


def _markdown(rs) -> str:
    lines = ["| key | aliases | description | g(z) | g'(z) | parameters | kind |",
             "|---|---|---|---|---|---|---|"]
    for r in rs:
        lines.append(f"| `{r.key}` | {', '.join(f'`{a}`' for a in r.aliases)} | "
                     f"{_md_text(r.description)} | {_md_math(r.latex())} | "
                     f"{_md_math(r.latex_derivative())} | {_md_text(r.parameters)}{_md_where(r)} | "
                     f"{r.kind} |")
    lines += ["", "For row-wise keys g'(z) is the Jacobian entry ∂y_i/∂z_j (δ: Kronecker delta; "
                  "Σ_l sums over the row).", "", f"**Seed corrections.** {SEED_NOTE}", ""]
    lines += [f"- `{k}`: {_md_text(n)}" for k, n in _notes(rs)]
    return "\n".join(lines) + "\n"


def _md_where(r) -> str:
    parts = [f"{_md_math(s)}{_sep(_md_text(text))}" for s, text in r.where_latex()]
    return f"; where {', '.join(parts)}" if parts else ""


# -- reStructuredText --------------------------------------------------------------------------
def _rst_cell(text: str) -> str:
    return text.replace("\n", " ")


def _rst(rs) -> str:
    lines = [".. list-table:: Activations", "   :header-rows: 1", "",
             "   * - key", "     - aliases", "     - description", "     - g(z)", "     - g'(z)",
             "     - parameters", "     - kind"]
    for r in rs:
        lines += [f"   * - ``{r.key}``", f"     - {', '.join(f'``{a}``' for a in r.aliases)}",
                  f"     - {_rst_cell(r.description)}", f"     - :math:`{r.latex()}`",
                  f"     - :math:`{r.latex_derivative()}`", f"     - {_rst_cell(r.parameters)}{_rst_where(r)}",
                  f"     - {r.kind}"]
    lines += ["", f"Seed corrections: {SEED_NOTE}", ""]
    lines += [f"* ``{k}``: {_rst_cell(n)}" for k, n in _notes(rs)]
    return "\n".join(lines) + "\n"


def _rst_where(r) -> str:
    parts = [f":math:`{s}`{_sep(_rst_cell(text))}" for s, text in r.where_latex()]
    return f"; where {', '.join(parts)}" if parts else ""


# -- LaTeX -----------------------------------------------------------------------------------------
_TEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _tex_text(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(c, c) for c in text)


def _latex(rs) -> str:
    lines = [r"\begin{longtable}{lllllll}",
             r"key & aliases & description & $g(z)$ & $g'(z)$ & parameters & kind \\",
             r"\hline", r"\endhead"]
    for r in rs:
        aliases = ", ".join(rf"\texttt{{{_tex_text(a)}}}" for a in r.aliases)
        where = "".join(f"; where ${s}${_sep(_tex_text(text))}" for s, text in r.where_latex())
        lines.append(rf"\texttt{{{_tex_text(r.key)}}} & {aliases} & {_tex_text(r.description)} & "
                     rf"${r.latex()}$ & ${r.latex_derivative()}$ & "
                     rf"{_tex_text(r.parameters)}{where} & {r.kind} \\")
    lines.append(r"\end{longtable}")
    lines += ["", rf"\paragraph{{Seed corrections.}} {_tex_text(SEED_NOTE)}"]
    return "\n".join(lines) + "\n"


# -- HTML with MathML ------------------------------------------------------------------------------
class MathML(MathMLPresentationPrinter):
    """SymPy's presentation MathML with actdsl's notation: z̄, Σ, max, σ, Φ, √, δ, 10⁻⁸."""

    def _mrow(self, *children):
        row = self.dom.createElement("mrow")
        for c in children:
            row.appendChild(c)
        return row

    def _el(self, tag, text):
        e = self.dom.createElement(tag)
        e.appendChild(self.dom.createTextNode(text))
        return e

    def _fenced(self, inner):
        return self._mrow(self._el("mo", "("), inner, self._el("mo", ")"))

    #: actdsl's primitives that print as a sum or difference (SymPy ranks every function call
    #: above a product, so α·expm1(z) lost its brackets: "α eᶻ − 1")
    _SUMS = ("expm1", "shifted", "tanhshrink")

    def parenthesize(self, item, level, strict=False):
        if type(item).__name__ in self._SUMS and level > PRECEDENCE["Add"]:
            return self._fenced(self._print(item))
        return super().parenthesize(item, level, strict)

    def _print_Exp1(self, e):
        return self._el("mi", "e")  # as textbooks print it, not the double-struck ⅇ

    def _print_Symbol(self, sym, style="plain"):
        if sym.name in _GREEK:  # SymPy's own table has no varepsilon: it printed the word
            return self._el("mi", _GREEK[sym.name])
        return super()._print_Symbol(sym, style)

    # row reductions, by class name (RowSum, RowMax, RowShift; RowMean from backends.latex)
    def _print_RowSum(self, e):
        return self._mrow(self._el("mo", "∑"), self._fenced(self._print(e.args[0])))

    def _print_RowMean(self, e):
        over = self.dom.createElement("mover")
        over.appendChild(self._print(e.args[0]))
        over.appendChild(self._el("mo", "¯"))
        return over

    def _row_max(self, e):
        body = e.args[0]
        inner = self._print(body)
        return self._mrow(self._el("mi", "max"), self._fenced(inner))

    _print_RowMax = _row_max
    _print_RowShift = _row_max

    def _named(self, name, e):
        return self._mrow(self._el("mi", name), self._fenced(self._print(e.args[0])))

    def _print_sigmoid(self, e):
        return self._named("σ", e)

    def _print_ncdf(self, e):
        return self._named("Φ", e)

    def _print_sqrt0(self, e):
        root = self.dom.createElement("msqrt")
        root.appendChild(self._print(e.args[0]))
        return root

    def _print_shifted(self, e):
        return self._print(e.args[0] - e.args[1])

    def _print_tanhshrink(self, e):
        return self._print(e.elementary())

    def _print_softsign(self, e):
        return self._print(e.elementary())

    def _print_Piecewise(self, e):
        table = self.dom.createElement("mtable")
        table.setAttribute("columnalign", "left")
        for i, (value, cond) in enumerate(e.args):
            tr = self.dom.createElement("mtr")
            left, right = self.dom.createElement("mtd"), self.dom.createElement("mtd")
            left.appendChild(self._print(value))
            if cond is sp.true or i == len(e.args) - 1 and cond == True:  # noqa: E712
                right.appendChild(self._el("mtext", "\u2002otherwise"))
            else:
                right.appendChild(self._mrow(self._el("mtext", "\u2002if\u2002"), self._print(cond)))
            tr.appendChild(left)
            tr.appendChild(right)
            table.appendChild(tr)
        return self._mrow(self._el("mo", "{"), table)

    def _print_expm1(self, e):
        return self._mrow(self._print(sp.exp(e.args[0])), self._el("mo", "-"), self._el("mn", "1"))

    def _print_log1p(self, e):
        return self._mrow(self._el("mi", "log"), self._fenced(self._mrow(
            self._el("mn", "1"), self._el("mo", "+"), self._print(e.args[0]))))

    def _print_Float(self, e):
        return self._el("mn", f"{float(e):.6g}")

    def _print_KroneckerDelta(self, e):
        sub = self.dom.createElement("msub")
        sub.appendChild(self._el("mi", "δ"))
        sub.appendChild(self._mrow(*[self._print(a) for a in e.args]))
        return sub

    def _print_Rational(self, e):
        if e.p == 1 and e.q >= 10 ** 4 and str(e.q).rstrip("0") == "1":
            sup = self.dom.createElement("msup")
            sup.appendChild(self._el("mn", "10"))
            sup.appendChild(self._el("mn", f"-{len(str(e.q)) - 1}"))
            return sup
        return super()._print_Rational(e)


def mathml(expr: sp.Expr) -> str:
    body = MathML().doprint(_means(expr))
    return f'<math display="inline">{body}</math>'


def _html_where(r) -> str:
    parts = [f"{mathml(sym)}{html.escape(_sep(text))}" for sym, text in r.symbols]
    return f"; where {', '.join(parts)}" if parts else ""


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.35em .6em;vertical-align:top}
th{background:#f3f3f3}tr.seed td:first-child{font-weight:bold}code{font-size:95%}
math{font-size:110%}.notes li{margin:.3em 0}"""


def _html_text(text: str) -> str:
    """Escaped, with the notes' `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html(rs) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>actdsl activations</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>actdsl activations</h1>",
           f"<p>{len(rs)} activations; the theanets seed's 19 keys first (in bold). For row-wise "
           "keys g′ is the Jacobian entry ∂y<sub>i</sub>/∂z<sub>j</sub>.</p>",
           "<table><thead><tr><th>key</th><th>aliases</th><th>description</th><th>g(z)</th>"
           "<th>g′(z)</th><th>parameters</th><th>kind</th></tr></thead><tbody>"]
    for r in rs:
        cls = ' class="seed"' if r.seed else ""
        out.append(f"<tr{cls}><td><code>{e(r.key)}</code></td>"
                   f"<td>{', '.join(f'<code>{e(a)}</code>' for a in r.aliases)}</td>"
                   f"<td>{e(r.description)}</td><td>{mathml(r.formula)}</td>"
                   f"<td>{mathml(r.derivative)}</td><td>{e(r.parameters)}{_html_where(r)}</td>"
                   f"<td>{r.kind}</td></tr>")
    out.append("</tbody></table>")
    out.append(f"<h2>Seed corrections</h2><p>{e(SEED_NOTE)}</p><ul class=\"notes\">")
    out += [f"<li><code>{e(k)}</code>: {_html_text(n)}</li>" for k, n in _notes(rs)]
    out.append("</ul></body></html>")
    return "\n".join(out) + "\n"


"""Sphinx extension: activation tables and plots generated from actdsl's registry.

In ``conf.py``::

    extensions = ["actdsl.sphinx"]
    html_math_renderer = "actdsl-mathml"   # optional: math as MathML, rendered at build time

In a page (reST; in MyST Markdown the same inside a ```{actdsl-table} fence)::

    .. actdsl-table::
       :keys: relu, softplus, norm:z      (default: every registered key; "seed": theanets' 19)
       :columns: key, g, derivative       (default: key, aliases, description, g, derivative,
                                           parameters, kind)
       :derivatives: no                   (drop the derivative column; default yes)

    .. actdsl-plot:: mish
       :lo: -4
       :hi: 4

Custom activations are included: register them in ``conf.py`` (``actdsl.register(...)`` or an
``actdsl.Activation`` subclass defined there), before the pages are read. The ``actdsl-mathml``
renderer turns every ``:math:`` role and ``math`` directive into MathML with ``latex2mathml``
(extra ``docs``), so pages need no script and no network to show formulas.
"""
from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

from . import __version__
from .errors import ActdslError

COLUMNS = ("key", "aliases", "description", "g", "derivative", "parameters", "kind")
HEADERS = {"key": "key", "aliases": "aliases", "description": "description", "g": "g(z)",
           "derivative": "g′(z) or ∂y_i/∂z_j", "parameters": "parameters", "kind": "kind"}


def _names(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def _yes_no(text: str | None) -> bool:
    return directives.choice((text or "yes").strip().lower(), ("yes", "no")) == "yes"


def _columns(text: str) -> list[str]:
    cols = _names(text)
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; choose from {', '.join(COLUMNS)}")
    return cols


class ActdslTable(SphinxDirective):
    """``.. actdsl-table::``: one row per activation, with textbook formulas."""

    has_content = False
    option_spec = {"keys": directives.unchanged, "columns": _columns, "derivatives": _yes_no}

    def run(self):
        from .registry import REGISTRY
        from .table import SEED_KEYS, rows
        keys = self.options.get("keys")
        try:
            rs = rows()
            if keys is not None:
                wanted = SEED_KEYS if keys.strip() == "seed" else _names(keys)
                order = [REGISTRY.lookup(k).key for k in wanted]
                by_key = {r.key: r for r in rs}
                rs = [by_key[k] for k in order]
        except ActdslError as e:
            raise self.error(f"actdsl-table: {e}") from None
        cols = list(self.options.get("columns", COLUMNS))
        if not self.options.get("derivatives", True) and "derivative" in cols:
            cols.remove("derivative")
        table = nodes.table(classes=["actdsl-table", "colwidths-auto"])  # the browser sizes columns
        group = nodes.tgroup(cols=len(cols))
        table += group
        group.extend(nodes.colspec(colwidth=1) for _ in cols)
        head = nodes.thead()
        head += self._row([nodes.Text(HEADERS[c]) for c in cols])
        body = nodes.tbody()
        for r in rs:
            body += self._row([self._cell(r, c) for c in cols])
        group += head
        group += body
        # the table takes the page's width and wraps its text columns; a table still wider than
        # the page (formulas do not wrap) scrolls inside its box
        out = [nodes.container("", table, classes=["actdsl-scroll"])]
        notes = [r for r in rs if r.symbols]
        if notes and ("g" in cols or "derivative" in cols):
            out.append(self._where(notes))
        return out

    @staticmethod
    def _row(cells):
        row = nodes.row()
        for content in cells:
            entry = nodes.entry()
            para = nodes.paragraph()
            para += content
            entry += para
            row += entry
        return row

    @staticmethod
    def _cell(r, col):
        if col == "key":
            return nodes.literal(text=r.key)
        if col == "aliases":
            return nodes.inline(text=", ".join(r.aliases))
        if col == "g":
            return nodes.math(text=r.latex())
        if col == "derivative":
            return nodes.math(text=r.latex_derivative())
        if col == "parameters":
            return nodes.inline(text=r.parameters)
        return nodes.inline(text=getattr(r, col))

    @staticmethod
    def _where(rs):
        """One line per row that uses named constants or y, s: "selu: α = 1.67…, λ = 1.05…"."""
        items = nodes.bullet_list(classes=["actdsl-where"])
        for r in rs:
            para = nodes.paragraph()
            para += nodes.literal(text=r.key)
            para += nodes.Text(": where ")
            for k, (sym, text) in enumerate(r.where_latex()):
                if k:
                    para += nodes.Text(", ")
                para += nodes.math(text=sym)
                para += nodes.Text(f" {text}" if text.startswith("=") else f": {text}")
            item = nodes.list_item()
            item += para
            items += item
        return items


class ActdslPlot(SphinxDirective):
    """``.. actdsl-plot:: SPEC``: g and g' (row-wise: one row and the Jacobian's diagonal)."""

    required_arguments = 1
    final_argument_whitespace = True
    option_spec = {"lo": float, "hi": float, "alt": directives.unchanged}

    def run(self):
        from .plot import plot
        spec = self.arguments[0]
        lo, hi = self.options.get("lo", -5.0), self.options.get("hi", 5.0)
        name = hashlib.sha256(f"{spec}|{lo}|{hi}|{__version__}".encode()).hexdigest()[:16]
        outdir = Path(self.env.app.doctreedir) / "actdsl-plots"  # beside the build, not in it
        outdir.mkdir(parents=True, exist_ok=True)
        path = outdir / f"{name}.png"
        try:
            if not path.exists():
                plot(spec, path, lo=lo, hi=hi)
        except ActdslError as e:
            raise self.error(f"actdsl-plot: {e}") from None
        here = Path(self.env.doc2path(self.env.docname)).parent
        uri = os.path.relpath(path, here)  # a relative uri: Sphinx copies it into _images
        image = nodes.image(uri=uri, alt=self.options.get("alt", f"g and g' of {spec}"),
                            classes=["actdsl-plot"])
        return [image]


# -- math as MathML, rendered at build time -----------------------------------------------------
def _mathml(latex: str, display: str) -> str:
    from latex2mathml.converter import convert
    return convert(latex, display=display)


def _visit_inline(self, node):
    self.body.append(_mathml(node.astext(), "inline"))
    raise nodes.SkipNode


def _visit_block(self, node):
    if node.get("number"):
        self.body.append(f'<span class="eqno">({html.escape(str(node["number"]))})</span>')
    self.body.append(f'<div class="math">{_mathml(node.astext(), "block")}</div>')
    raise nodes.SkipNode


def setup(app):
    app.add_directive("actdsl-table", ActdslTable)
    app.add_directive("actdsl-plot", ActdslPlot)
    app.add_html_math_renderer("actdsl-mathml", (_visit_inline, None), (_visit_block, None))
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}

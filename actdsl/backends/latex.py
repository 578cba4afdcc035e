"""LaTeX in the seed's notation: z̄ for a row mean, max|z| for a row maximum, Σ for a row sum,
ε for a small constant such as 1e-8."""
from __future__ import annotations

import sympy as sp
from sympy.printing.latex import LatexPrinter

from ..ir import RowSum, n, z


class RowMean(sp.Function):
    """Display only: RowSum(u)/n."""

    nargs = 1


def _means(expr: sp.Expr) -> sp.Expr:
    def is_mean(e):
        return e.is_Mul and (1 / n) in e.args and any(isinstance(a, RowSum) for a in e.args)

    def to_mean(e):
        args = list(e.args)
        args.remove(1 / n)
        total = next(a for a in args if isinstance(a, RowSum))
        args.remove(total)
        return sp.Mul(*args, RowMean(total.args[0]), evaluate=False)

    return expr.replace(is_mean, to_mean)


class ActdslLatexPrinter(LatexPrinter):
    """``index``: print row sums as Σ_l f(z_l) (for Jacobians, where z_i and z_j also appear)."""

    def __init__(self, index: str | None = None):
        super().__init__({"mul_symbol": None})
        self.index = index

    def _row_body(self, body):
        if self.index:
            body = body.subs(z, sp.Symbol(f"z_{self.index}", real=True))
        return body

    @staticmethod
    def _power(text, exp):
        return rf"\left({text}\right)^{{{exp}}}" if exp is not None else text

    def _print_RowSum(self, e, exp=None):
        sub = f"_{{{self.index}}}" if self.index else ""
        return self._power(rf"\sum{sub} {self.parenthesize(self._row_body(e.args[0]), 1000)}", exp)

    def _print_RowMean(self, e, exp=None):
        if e.args[0] == z:  # the row's mean is one number: z̄, not z̄_l
            text = r"\bar{z}"
            return text if exp is None else f"{text}^{{{exp}}}"
        body = self._row_body(e.args[0])
        if isinstance(body, sp.Symbol):
            text = rf"\bar{{{self._print(body)}}}"
        else:
            text = rf"\overline{{{self._print(body)}}}"
        return text if exp is None else f"{text}^{{{exp}}}"

    def _row_max(self, e, exp=None):
        body = self._row_body(e.args[0])
        if isinstance(body, sp.Abs):
            return self._power(rf"\max\left|{self._print(body.args[0])}\right|", exp)
        return self._power(rf"\max {self.parenthesize(body, 1000)}", exp)

    _print_RowMax = _row_max
    _print_RowShift = _row_max

    def _print_Add(self, expr, order=None):
        """Terms with a plus sign first: δ_ij − y_j, not −y_j + δ_ij."""
        terms = list(self._as_ordered_terms(expr, order=order))
        terms.sort(key=lambda t: t.could_extract_minus_sign())
        text = ""
        for i, term in enumerate(terms):
            if term.could_extract_minus_sign():
                text += " - " if i else "- "
                term = -term
            elif i:
                text += " + "
            part = self._print(term)
            text += rf"\left({part}\right)" if self._needs_add_brackets(term) else part
        return text

    def _print_Rational(self, e):
        if e.p == 1 and e.q >= 10 ** 4 and str(e.q).rstrip("0") == "1":
            return r"10^{-%d}" % (len(str(e.q)) - 1)
        return super()._print_Rational(e)


def to_latex(expr: sp.Expr, index: str | None = None) -> str:
    return ActdslLatexPrinter(index).doprint(_means(expr))

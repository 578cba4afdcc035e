"""Numeric primitives: SymPy functions that carry their own derivative, LaTeX, exact value and a
stable implementation per backend (named in ``impl``; the code lives in each backend's runtime).

Expressions are built from these instead of the textbook formulas that overflow
(``log(1+exp(u))``, ``1/(1+exp(-u))``), so every backend computes them without spurious inf/nan.
"""
from __future__ import annotations

import sympy as sp
from mpmath.libmp import prec_to_dps


def _power(text: str, exp) -> str:
    return rf"\left({text}\right)^{{{exp}}}" if exp is not None else text


class Primitive(sp.Function):
    """Base of the numeric primitives. Subclasses define ``elementary`` (the textbook formula,
    used for exact evaluation and rewriting), ``fdiff`` and ``impl``."""

    is_real = True
    impl: dict[str, str] = {}

    def __new__(cls, *args, **options):
        # sp.Function would sympify its arguments, which parses (evaluates) text: a str, and
        # also what holds one (a NumPy string array, an object whose str() it falls back to).
        # Strict sympify converts only SymPy objects and numbers and refuses the rest unparsed,
        # so the ``eval`` classmethods below (SymPy's automatic-simplification hook, sigmoid(0)
        # -> 1/2) and everything after them see SymPy objects, never text.
        return super().__new__(cls, *(cls._strict(a) for a in args), **options)

    @classmethod
    def _strict(cls, a):
        try:
            return sp.sympify(a, strict=True)
        except sp.SympifyError:
            raise TypeError(f"{cls.__name__} takes SymPy expressions or numbers, not "
                            f"{type(a).__name__}") from None

    def elementary(self) -> sp.Expr:
        raise NotImplementedError

    def _eval_evalf(self, prec):
        if not all(a.is_number for a in self.args):
            return None  # symbolic (e.g. holds a row reduction): SymPy keeps it as it is
        return self.elementary().evalf(prec_to_dps(prec))

    def _eval_rewrite_as_exp(self, *args, **kwargs):
        return self.elementary()


class sigmoid(Primitive):
    """Logistic sigmoid 1/(1+exp(-u)), computed without overflow for every u."""

    nargs = 1
    impl = {"numpy": "sigmoid", "numba": "vm.sigmoid"}

    def elementary(self):
        return 1 / (1 + sp.exp(-self.args[0]))

    def fdiff(self, argindex=1):
        u = self.args[0]
        return sigmoid(u) * sigmoid(-u)  # = s(1-s), without cancellation for large u

    @classmethod
    def eval(cls, u):
        if u.is_zero:
            return sp.Rational(1, 2)

    def _latex(self, printer, exp=None):
        return _power(r"\sigma\left(%s\right)" % printer._print(self.args[0]), exp)


class softplus(Primitive):
    """log(1+exp(u)) = max(u,0) + log1p(exp(-|u|)): never overflows."""

    nargs = 1
    impl = {"numpy": "softplus", "numba": "vm.softplus"}

    def elementary(self):
        return sp.log(1 + sp.exp(self.args[0]))

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _latex(self, printer, exp=None):
        return _power(r"\log\left(1 + e^{%s}\right)" % printer._print(self.args[0]), exp)


class expm1(Primitive):
    """exp(u) - 1, accurate near 0."""

    nargs = 1
    impl = {"numpy": "expm1", "numba": "vm.expm1"}

    def elementary(self):
        return sp.exp(self.args[0]) - 1

    def fdiff(self, argindex=1):
        return sp.exp(self.args[0])

    @classmethod
    def eval(cls, u):
        if u.is_zero:
            return sp.S.Zero

    def _latex(self, printer, exp=None):
        return _power(r"\left(e^{%s} - 1\right)" % printer._print(self.args[0]), exp)


class log1p(Primitive):
    """log(1 + u), accurate near 0."""

    nargs = 1
    impl = {"numpy": "log1p", "numba": "vm.log1p"}

    def elementary(self):
        return sp.log(1 + self.args[0])

    def fdiff(self, argindex=1):
        return 1 / (1 + self.args[0])

    def _latex(self, printer, exp=None):
        return _power(r"\log\left(1 + %s\right)" % printer._print(self.args[0]), exp)


class shifted(Primitive):
    """u - m where equal values give exactly 0, so that a max shift by an infinite row maximum
    gives the limit (softmax([inf, 0]) = [1, 0]) instead of inf - inf = nan."""

    nargs = 2
    impl = {"numpy": "shifted", "numba": "vm.shifted"}

    def elementary(self):
        return self.args[0] - self.args[1]

    def fdiff(self, argindex=1):
        return sp.S.One if argindex == 1 else sp.S.NegativeOne

    def _latex(self, printer, exp=None):
        return _power(printer._print(self.args[0] - self.args[1]), exp)


class attop(Primitive):
    """1 where u equals the row maximum m, else 0: the indicator of the row's maxima, exact (a
    count of them is an exact integer). Piecewise constant, so its derivative is 0; a primitive,
    not a Piecewise, because a comparison of a composed (piecewise) u would be split into one
    comparison per branch."""

    nargs = 2
    impl = {"numpy": "attop", "numba": "vm.attop"}

    def elementary(self):
        return sp.Piecewise((1, sp.Eq(self.args[0], self.args[1])), (0, True))

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _latex(self, printer, exp=None):
        return _power(r"[%s = %s]" % (printer._print(self.args[0]), printer._print(self.args[1])),
                      exp)


class expmul(Primitive):
    """g · exp(a), finite wherever the product is: (g · e) · e with e = exp(a/2), so that a VJP
    dy · exp(x) does not overflow where exp(x) alone does (x = 89 in float32, |dy| < 0.75). The
    VJP of an elementwise spec forms it for a factor exp(a) of g'(z) (``derive.times_g``)."""

    nargs = 2
    impl = {"numpy": "expmul", "numba": "vm.expmul"}

    def elementary(self):
        return self.args[1] * sp.exp(self.args[0])

    def fdiff(self, argindex=1):
        return self if argindex == 1 else sp.exp(self.args[0])

    def _latex(self, printer, exp=None):
        return _power(printer._print(self.elementary()), exp)


class times(Primitive):
    """m · u, and 0 where m = 0 and u = ±inf: a piece with zero slope is its intercept at every
    u, so maxout's flat piece has the limit b at ±inf, not 0 · inf = NaN. (A NaN u stays NaN.)"""

    nargs = 2
    impl = {"numpy": "times", "numba": "vm.times"}

    def elementary(self):
        return self.args[0] * self.args[1]

    def fdiff(self, argindex=1):
        return self.args[1] if argindex == 1 else self.args[0]

    def _latex(self, printer, exp=None):
        return _power(printer._print(self.elementary()), exp)


class sqrt0(Primitive):
    """Square root whose derivative at 0 is taken as 0 (the symmetric subgradient) instead of
    infinity: the standard deviation of a constant row then has a finite, zero gradient."""

    nargs = 1
    impl = {"numpy": "sqrt", "numba": "np.sqrt"}

    def elementary(self):
        return sp.sqrt(self.args[0])

    def fdiff(self, argindex=1):
        x = self.args[0]
        return sp.Piecewise((0, x <= 0), (1 / (2 * sqrt0(x)), True))

    def _latex(self, printer, exp=None):
        return _power(r"\sqrt{%s}" % printer._print(self.args[0]), exp)


class ncdf(Primitive):
    """Φ(u), the standard normal CDF, as erfc(-u/√2)/2: accurate for u << 0, where
    (1 + erf(u/√2))/2 cancels (SymPy would turn erfc(-x) into 2 - erfc(x), so Φ is a primitive)."""

    nargs = 1
    impl = {"numpy": "ncdf", "numba": "vm.ncdf"}

    def elementary(self):
        return sp.erfc(-self.args[0] / sp.sqrt(2)) / 2

    def fdiff(self, argindex=1):
        u = self.args[0]
        return sp.exp(-u ** 2 / 2) / sp.sqrt(2 * sp.pi)

    def _latex(self, printer, exp=None):
        return _power(r"\Phi\left(%s\right)" % printer._print(self.args[0]), exp)


class tanhshrink(Primitive):
    """u - tanh(u) without cancellation: near 0 it is u·q/(1+q) with q from Lambert's continued
    fraction tanh u = u/(1 + u²/(3 + u²/(5 + ...))) (12 levels: 6e-21 relative for |u| < 2)."""

    nargs = 1
    impl = {"numpy": "tanhshrink", "numba": "vm.tanhshrink"}

    def elementary(self):
        return self.args[0] - sp.tanh(self.args[0])

    def fdiff(self, argindex=1):
        return tanh(self.args[0]) ** 2

    def _latex(self, printer, exp=None):
        u = printer._print(self.args[0])
        return _power(r"\left(%s - \tanh\left(%s\right)\right)" % (u, u), exp)


class softsign(Primitive):
    """u/(1+|u|), whose derivative is 1/(1+|u|)²: SymPy's quotient rule would give
    1/(1+|u|) - |u|/(1+|u|)², which cancels to nothing for large |u|."""

    nargs = 1
    impl = {"numpy": "softsign", "numba": "vm.softsign"}

    def elementary(self):
        return self.args[0] / (1 + sp.Abs(self.args[0]))

    def fdiff(self, argindex=1):
        return 1 / (1 + sp.Abs(self.args[0])) ** 2

    def _latex(self, printer, exp=None):
        u = printer._print(self.args[0])
        return _power(r"\frac{%s}{1 + \left|%s\right|}" % (u, u), exp)


class tanh(sp.tanh):
    """tanh whose derivative is sech², not 1 - tanh², which is 0 instead of 3e-77 at 88.8."""

    def fdiff(self, argindex=1):
        return sp.sech(self.args[0]) ** 2


#: pow2scale leaves rows whose largest magnitude lies in [LO, HI] unscaled (their squares and sums
#: cannot overflow or lose precision to underflow): float32's band, float64's band
SCALE_BANDS = {"float32": (2.0 ** -50, 2.0 ** 60), "float64": (2.0 ** -480, 2.0 ** 500)}
#: the largest scale: rows above it are divided by it (u/s then reaches 2^29 in float32, 2^34 in
#: float64, whose squares still sum without overflow), so that ε/s (norm:z's ε over the scale)
#: stays a normal float for ε down to 1e-8 and a constant row of huge values gives 0, not 0/0
SCALE_CAPS = {"float32": 2.0 ** 99, "float64": 2.0 ** 990}


class pow2scale(Primitive):
    """1 for |a| in the float type's safe band (``SCALE_BANDS``) and for a = 0; beyond it, a power
    of two s with s <= |a| < 2s, at least the smallest normal float and at most ``SCALE_CAPS``
    (so that 1/s and ε/s are normal floats too);
    inf for ±inf (``scaled`` then maps a row's infinite entries to ±1 and its finite ones to 0:
    normalising that gives the row's limit), NaN for NaN. Rows are divided by it before they are
    squared or summed: dividing by a power of two is exact, so scaling costs no accuracy."""

    nargs = 1
    impl = {"numpy": "pow2scale", "numba": "vm.pow2scale"}

    def elementary(self):
        a = sp.Abs(self.args[0])
        return sp.Piecewise((1, sp.Eq(a, 0)), (2 ** sp.floor(sp.log(a, 2)), True))

    def fdiff(self, argindex=1):
        return sp.S.Zero  # piecewise constant

    def _latex(self, printer, exp=None):
        return _power(r"2^{\lfloor \log_2 %s \rfloor}" % printer._print(self.args[0]), exp)


class scaled(Primitive):
    """u / s for a row's power-of-two scale s (``pow2scale``): exact, and kept a division that
    no backend's optimizer reorders into a product that overflows. For s = inf (a row holding
    ±inf), sign(u) where u is infinite: the direction the row grows in."""

    nargs = 2
    impl = {"numpy": "scaled", "numba": "vm.scaled"}

    def elementary(self):
        return self.args[0] / self.args[1]

    def fdiff(self, argindex=1):
        u, s = self.args
        return 1 / s if argindex == 1 else -u / s ** 2

    def _latex(self, printer, exp=None):
        return _power(r"\frac{%s}{%s}" % (printer._print(self.args[0]), printer._print(self.args[1])),
                      exp)


class at_inf(Primitive):
    """``value`` (a function of ``u``), except ``lneg`` where u = -inf and ``lpos`` where u = +inf:
    the limits, where the formula itself gives inf·0 or inf/inf (``actdsl.limits``). Applied to
    finished expressions only (forward, derivative), so it is never differentiated."""

    nargs = 4
    impl = {}  # printed by each backend's emitter (``Emitter._at_inf``)

    def elementary(self):
        return self.args[0]

    def fdiff(self, argindex=1):
        return sp.S.One if argindex == 1 else sp.S.Zero

    def _latex(self, printer, exp=None):
        return _power(printer._print(self.args[0]), exp)


#: the most arguments of a max (maxout's pieces) whose comparisons SymPy evaluates; past it, its
#: pairwise queries of assumptions cost time exponential in the pieces, and displays print the
#: index form (argmax, pick) instead of k(k-1)/2 comparisons
EVALUATED_PIECES = 4


def _ordered(items):
    """max of ``items`` as a Piecewise, the first winning ties (built unevaluated past
    EVALUATED_PIECES)."""
    lazy = len(items) > EVALUATED_PIECES
    ge = (lambda a, b: sp.GreaterThan(a, b, evaluate=False)) if lazy else (lambda a, b: a >= b)
    return [sp.And(*[ge(a, b) for b in items[i + 1:]]) for i, a in enumerate(items[:-1])], lazy


class FirstMax(Primitive):
    """The index (0, 1, ...) of the first largest argument: the piece maxout takes. Held as one
    node, so that k pieces cost k - 1 comparisons, computed once (every backend prints a scan:
    ``Emitter.block``), where a Piecewise holds k(k-1)/2 and SymPy folds a piecewise input into
    each of them. Piecewise constant: its derivative is 0 (the derivative of the selected piece,
    as at a kink of relu, is :class:`Pick`'s). NaN in any argument makes the pick NaN."""

    impl = {}  # printed by each backend's emitter

    @classmethod
    def eval(cls, *args):
        if len(args) == 1:
            return sp.S.Zero
        if all(a.is_Number for a in args):
            if any(a is sp.nan for a in args):
                return sp.nan
            return sp.Integer(max(range(len(args)), key=lambda i: (args[i], -i)))

    def elementary(self):
        conds, lazy = _ordered(list(self.args))
        return sp.Piecewise(*[(i, c) for i, c in enumerate(conds)], (len(conds), True),
                            evaluate=not lazy)

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _eval_derivative(self, s):
        return sp.S.Zero

    def _latex(self, printer, exp=None):
        return _power(r"\operatorname{arg\,max}\left(%s\right)" % ", ".join(
            printer._print(a) for a in self.args), exp)


class Pick(Primitive):
    """``Pick(i, v_0, .., v_{k-1})`` is ``v_i``: maxout is Pick(FirstMax(a), a), its derivative
    Pick(FirstMax(a), a'), its slope gradients one-hot picks. Differentiated value by value, so
    the derivative keeps one FirstMax, never a comparison per piece."""

    impl = {}  # printed by each backend's emitter

    @classmethod
    def eval(cls, i, *values):
        if not values:
            raise TypeError("Pick takes an index and at least one value")
        if len(set(values)) == 1:
            return values[0]
        if i.is_Integer and 0 <= int(i) < len(values):
            return values[int(i)]
        if i is sp.nan:
            return sp.nan

    def elementary(self):
        i, values = self.args[0], self.args[1:]
        if isinstance(i, FirstMax) and len(i.args) == len(values):
            conds, lazy = _ordered(list(i.args))
            return sp.Piecewise(*zip(values, conds), (values[-1], True), evaluate=not lazy)
        if isinstance(i, sp.Piecewise) and all(k.is_Integer for k, _ in i.args):
            # FirstMax already replaced by its own elementary form (a bottom-up rewrite)
            return sp.Piecewise(*[(values[int(k)], c) for k, c in i.args], evaluate=False)
        return sp.Piecewise(*[(v, sp.Eq(i, k)) for k, v in enumerate(values[:-1])],
                            (values[-1], True))

    def fdiff(self, argindex=1):
        if argindex == 1:
            return sp.S.Zero
        return Pick(self.args[0], *[sp.S.One if k == argindex - 2 else sp.S.Zero
                                    for k in range(len(self.args) - 1)])

    def _eval_derivative(self, s):
        return Pick(self.args[0], *[sp.diff(v, s) for v in self.args[1:]])

    def _latex(self, printer, exp=None):
        i, values = self.args[0], self.args[1:]
        if isinstance(i, FirstMax) and tuple(i.args) == tuple(values):
            return _power(r"\max\left(%s\right)" % ", ".join(printer._print(v) for v in values), exp)
        if len(values) <= EVALUATED_PIECES:
            return _power(printer._print(self.elementary()), exp)
        shown = ", ".join(printer._print(v) for v in values)
        return _power(r"\left(%s\right)_{%s}" % (shown, printer._print(i)), exp)


PRIMITIVES = (sigmoid, softplus, expm1, log1p, shifted, attop, expmul, times, sqrt0, ncdf, tanhshrink, softsign,
              pow2scale, scaled)


def to_elementary(expr: sp.Expr) -> sp.Expr:
    """The same expression with every primitive replaced by its textbook formula, each
    Piecewise rebuilt as it is (SymPy's ``replace`` would fold a condition's Piecewise out
    through a row reduction, as if the row's z were one number)."""
    from .derive import rebuild, replace_nodes

    def textbook(e):
        # an argument that holds a Piecewise goes in after the formula is built: sp.exp(-P)
        # folds P's branches out, conditions and all (an AssertionError in piecewise_fold for
        # maxout:2+{min(max(z, 0), 1)**2}+silu)
        held = {a: sp.Dummy() for a in e.args if a.has(sp.Piecewise)}
        if not held:
            return e.elementary()
        body = e.func(*[held.get(a, a) for a in e.args]).elementary()
        return replace_nodes(body, {d: a for a, d in held.items()})
    # and the nodes above a Piecewise are rebuilt as they are, for the same reason
    return rebuild(expr, lambda e: isinstance(e, Primitive), textbook,
                   evaluate=not expr.has(sp.Piecewise))


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite textbook formulas (from users) into the primitives above, so that generated code
    stays finite: log(1+exp(u)) -> softplus(u), 1/(1+exp(-u)) -> sigmoid(u), exp(u)-1 -> expm1(u),
    log(1+u) -> log1p(u), and SymPy's tanh -> ours (accurate derivative)."""

    def one_plus(e):
        """u if e == 1 + u (as a SymPy Add), else None."""
        if e.is_Add and sp.S.One in e.args:
            return sp.Add(*[a for a in e.args if a != sp.S.One])
        return None

    def rw_log(e):
        u = one_plus(e.args[0])
        if u is None:
            return e
        if isinstance(u, sp.exp):
            return softplus(u.args[0])
        return log1p(u)

    def rw_pow(e):
        if e.exp == -1:
            u = one_plus(e.base)
            if isinstance(u, sp.exp):
                return sigmoid(-u.args[0])
        return e

    def rw_add(e):
        if sp.S.NegativeOne in e.args:
            exps = [a for a in e.args if isinstance(a, sp.exp)]
            if exps:
                rest = list(e.args)
                rest.remove(sp.S.NegativeOne)
                rest.remove(exps[0])
                return sp.Add(expm1(exps[0].args[0]), *rest)
        return e

    expr = expr.replace(lambda e: isinstance(e, sp.tanh) and not isinstance(e, tanh),
                        lambda e: tanh(e.args[0]))
    expr = expr.replace(lambda e: isinstance(e, sp.log), rw_log)
    expr = expr.replace(lambda e: e.is_Pow, rw_pow)
    return expr.replace(lambda e: e.is_Add, rw_add)

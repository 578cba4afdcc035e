"""SymPy -> source text, shared by the code-generating backends.

An :class:`Emitter` prints one expression at a time; a backend subclasses it and changes tables
(``functions``) and the few constructs its target spells differently (branches, booleans).
Every name in the output comes from ``names`` or from the emitter's own counters: user text never
reaches generated code, except numbers, which are printed as float literals.
"""
from __future__ import annotations

import collections
import io
import itertools
import re
import tokenize

import sympy as sp
from sympy.core.function import UndefinedFunction
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.logic.boolalg import BooleanFalse, BooleanTrue

from ..errors import ActdslError
from ..derive import rebuild, replace_nodes
from ..stable import FirstMax, Pick, Primitive
from ..stage import stages_in
from .shared import share


#: Every word a generator writes into code: identifiers and string contents, split at "_" and
#: digits (``lam_r12`` is "lam" and "r"). Generated source is checked against it before it is
#: compiled (``check_generated``), so no identifier or string that a user wrote (an activation's
#: name, a parameter's name, a formula's text) can reach ``exec`` or an import, whatever a change
#: to a generator does: the check fails loudly instead. Numbers pass as number tokens; comments
#: are not code. A new word in a generator belongs here.
VOCABULARY = frozenset("""
    A BAND BIAS BIG BITS CAP D DOUBLE DOWN DP DX E ENABLE CUDASIM EXP F FULL False GY HALF HI I IDX INDEX INF INTEGRAL
    IONE JIT LN LO LOG MANT MASK NAN NEG None ONE OUT P PART R RSQRT S SH SHARED SI SIM
    SHIFTER SLOTS SQRT T TANH TINY TPB TWO True UP WANT WARPS X Y ZERO
    a abs acc actdsl all and arcsinh attop break arctan argmax array as asinh at atan b backends big bits
    blockDim blockIdx bool c cache ceil column config contract copysign cos cosh cuda d def der
    derivative device dict double down dp dtype dx dz dzj e ef else empty erf erfc error errstate exp
    expm expmul f fastmath finfo finite flat float floor for frexp forceinline forward from func fwd g getattr grid
    gridDim gridsize gu gufunc guvectorize gy h half i ia ib if ignore import in inf int io ipow
    j jit jvp k key ki kr lam lane large ldexp like lit log low lowest m make math max mid model n nan ncdf nf njit nn
    neg no cfunc wrapper nogil nonpos not np nthr numba numpy nwarps o off ok or order out p minus plus pos
    pow py q r range reassoc return
    row rowmax rows rowsum rt s scale scaled sech shape shared shfl shifted sigmoid sin sinh size small
    softplus softsign special sqrt square step sub sums sync syncthreads t take tan tanh
    tanhshrink threadIdx through tid times tiny tl u ufunc v va vb vectorize vjp vm vmath void warp where while
    wide with x xs y z
""".split())


#: x - tanh(x), for the vmath (CPU) and CUDA runtime templates, which put their own decorator
#: above it and define F, ZERO, ONE, TWO and tanh: Lambert's continued fraction for |x| < 2,
#: where the difference cancels
TANHSHRINK = """def tanhshrink(x):
    small = abs(x) < TWO
    xs = x if small else ZERO
    x2 = xs * xs
    q = ZERO
    for k in range(12, 0, -1):
        q = x2 / (F(2 * k + 1) + q)
    return xs * q / (ONE + q) if small else x - tanh(x)
"""


class CheckedSource(str):
    """Generated source that passed :func:`check_generated`: the only text :func:`run_generated`
    executes without checking it again."""


def check_generated(source: str) -> CheckedSource:
    """``source`` if every identifier and string in it is made of :data:`VOCABULARY` words and no
    identifier is a dunder (``__import__``, ``__builtins__``, ``__class__``: no generator writes
    one); otherwise an ActdslError (a generator let foreign text into code)."""
    if isinstance(source, CheckedSource):
        return source
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError) as e:
        raise ActdslError(f"internal error: generated code does not tokenize ({e})") from None
    for tok in tokens:
        if tok.type == tokenize.NAME and "__" in tok.string:
            raise ActdslError(f"internal error: generated code holds {tok.string[:40]!r}; "
                              "nothing was run")
        if tok.type in (tokenize.NAME, tokenize.STRING):
            for word in re.findall(r"[A-Za-z]+", tok.string if tok.type == tokenize.NAME
                                   else tok.string.strip("'\"")):
                if word not in VOCABULARY:
                    raise ActdslError(f"internal error: generated code holds {word[:40]!r}, which "
                                      "is not the compiler's; nothing was run")
    return CheckedSource(source)


def run_generated(source: str, filename: str, namespace: dict) -> dict:
    """Execute generated source in ``namespace``, checked first (once: a :class:`CheckedSource` is
    not checked again). The package's only ``exec``: the NumPy backend, actdsl.jax and the cache
    of the Numba and CUDA backends all run their code through it."""
    exec(compile(check_generated(source), filename, "exec"), namespace)
    return namespace


class _HeldPair(ExprCondPair):
    """A branch that CSE rebuilds as it is: ExprCondPair's constructor folds a condition holding
    a Piecewise (a comparison of a composed value: relu after gelu:tanh after elu), and with CSE's
    symbols standing for booleans inside it, the folding is wrong (the whole derivative of
    elu+gelu:tanh+relu became 0)."""

    def __new__(cls, expr, cond):
        return sp.Basic.__new__(cls, expr, cond)


class _Held(sp.Piecewise):
    """A Piecewise that CSE rebuilds as it is (see _HeldPair)."""

    def __new__(cls, *args, **options):
        return sp.Basic.__new__(cls, *[a if isinstance(a, _HeldPair) else _HeldPair(*a)
                                       for a in args])


def _is_open(e) -> bool:
    return type(e) is sp.Piecewise and any(c.has(sp.Piecewise) for _, c in e.args)


def _held(e):
    return _Held(*[_HeldPair(v, c) for v, c in e.args])


def _is_held(e) -> bool:
    return isinstance(e, _Held)


def _plain(e):
    return sp.Basic.__new__(sp.Piecewise, *[sp.Basic.__new__(ExprCondPair, v, c)
                                            for v, c in e.args])


def _swap(exprs: list, match, fn) -> list:
    """Each expression with every node ``match`` picks replaced by ``fn`` of it (nodes above a
    change rebuilt without evaluation; the work on shared parts done once for all)."""
    if not any(isinstance(e, sp.Basic) and e.has(sp.Piecewise) for e in exprs):
        return list(exprs)
    memo: dict = {}
    return [rebuild(e, match, fn, evaluate=False, memo=memo) if isinstance(e, sp.Basic) else e
            for e in exprs]


class Emitter:
    #: SymPy function class -> callable name in the target
    functions: dict[type, str] = {}
    #: key of ``Primitive.impl`` to use, and the prefix its runtime is imported as
    target = ""
    runtime = "_rt"
    #: symbols whose subexpressions are never hoisted by CSE
    keep_inline: tuple = ()

    def __init__(self, names: dict[sp.Symbol, str]):
        self.names = dict(names)
        self._counter = itertools.count()
        self._compared: dict[sp.Symbol, list[sp.Expr]] = {}  # hoisted condition -> its operands
        self._scanned: dict[sp.Symbol, tuple] = {}  # FirstMax's index -> (its maximum, pieces, NaN carry)

    # -- statements ----------------------------------------------------------------------------
    def block(self, exprs: list[sp.Expr], prefix: str = "t") -> tuple[list[str], list[str]]:
        """Assignments, then each expression's text: every :class:`~actdsl.stable.FirstMax` as a
        scan over its pieces first (:meth:`scans`), then common subexpressions."""
        staged, exprs = self.stages(exprs, prefix)
        lines, exprs = self.scans(exprs, prefix)
        more, texts = self._block(exprs, prefix)
        return staged + lines + more, texts

    def stages(self, exprs: list, prefix: str) -> tuple[list[str], list]:
        """Each :class:`~actdsl.stage.Stage` in ``exprs`` as an assignment of its value (innermost
        first, each once), and the expressions with the assigned names in their place."""
        order = stages_in(exprs)
        if not order:
            return [], exprs
        lines, mapping, memo = [], {}, {}
        for node in order:
            args = tuple(replace_nodes(a, mapping, memo) for a in node.args)
            more, (text,) = self.block([node.value(args)], prefix)
            name = sp.Symbol(f"_{prefix}{next(self._counter)}", real=True)
            self.names[name] = name.name
            lines += more + [f"{name.name} = {text}"]
            mapping[node] = name
        memo = {}
        return lines, [replace_nodes(e, mapping, memo) if isinstance(e, sp.Basic) else e
                       for e in exprs]

    def scans(self, exprs: list[sp.Expr], prefix: str) -> tuple[list[str], list[sp.Expr]]:
        """Each FirstMax(a_0, .., a_{k-1}) in ``exprs`` as k - 1 steps of a running maximum
        (a later piece wins only when strictly larger: ties go to the first; a NaN piece makes the
        maximum NaN for good), innermost first; the expressions are returned with the index's
        symbol in its place, which :meth:`_Pick` reads. Linear in k, where the same index as
        branch conditions is quadratic."""
        found = {a for e in exprs for a in e.atoms(FirstMax)}
        if not found:
            return [], exprs
        fresh = lambda: sp.Symbol(f"_{prefix}{next(self._counter)}", real=True)  # noqa: E731
        lines, mapping = [], {}
        for first in sorted(found, key=lambda a: (len(a.atoms(FirstMax)), sp.default_sort_key(a))):
            memo: dict = {}  # (the mapping grows each step)
            args = tuple(replace_nodes(a, mapping, memo) for a in first.args)
            more, pieces = self._block(list(args), prefix)
            lines += more
            top, index = fresh(), fresh()
            for sym in (top, index):
                self.names[sym] = sym.name
            lines += [f"{top.name} = {pieces[0]}", f"{index.name} = {self.number(sp.S.Zero)}"]
            for k, piece in enumerate(pieces[1:], 1):
                a, wins = fresh(), fresh()
                larger = self.logical("or", [f"({a.name} > {top.name})", f"({a.name} != {a.name})"])
                at_k = self.number(sp.Integer(k))
                lines += [f"{a.name} = {piece}", f"{wins.name} = {larger}",
                          f"{top.name} = {self.select([(a.name, wins.name)], top.name, [])}",
                          f"{index.name} = {self.select([(at_k, wins.name)], index.name, [])}"]
            # NaN where the maximum is NaN, else -0.0: added to a pick, it carries the NaN
            # without a select around the pick (maxout:3's VJP, whose six gradient lines each
            # held one, ran 7x slower: LLVM left the loop scalar)
            carry = fresh()
            self.names[carry] = carry.name
            nan = f"({top.name} != {top.name})"
            lines.append(f"{carry.name} = "
                         f"{self.select([(top.name, nan)], '(-' + self.number(sp.S.Zero) + ')', [])}")
            mapping[first] = index
            # the maximum itself, by name: after CSE the pick's values no longer read as the
            # pieces (_Pick's test), and it was printed as a second select over all of them
            mapping[sp.Basic.__new__(Pick, first, *first.args)] = top
            self._scanned[index] = (top.name, args, carry.name)
        memo = {}
        return lines, [replace_nodes(e, mapping, memo) for e in exprs]

    def _block(self, exprs: list[sp.Expr], prefix: str) -> tuple[list[str], list[str]]:
        """Common subexpressions of ``exprs`` as assignments, then each expression's text."""
        fresh = (sp.Symbol(f"_{prefix}{next(self._counter)}", real=True) for _ in itertools.count())
        # the row length stays out of shared parts, so r/n is printed as an (exact) division
        # canonical order: the same source in every process (the cache is keyed on the source)
        exprs = _swap(exprs, _is_open, _held)
        lets, reduced = sp.cse(exprs, symbols=fresh, order="canonical", ignore=self.keep_inline)
        lets, reduced = self.after_cse(lets, reduced, fresh)
        lets = list(zip([sym for sym, _ in lets], _swap([v for _, v in lets], _is_held, _plain)))
        reduced = _swap(reduced, _is_held, _plain)
        lines = []
        for sym, value in lets:
            self.names[sym] = sym.name
            if isinstance(value, sp.logic.boolalg.Boolean):
                self._compared[sym] = self._operands(value)
            lines.append(f"{sym.name} = {self(value)}")
        return lines, [self(e) for e in reduced]

    def after_cse(self, lets: list, reduced: list, fresh) -> tuple[list, list]:
        """A target's rearrangement of the assignments CSE found (``fresh`` gives new symbols)."""
        return lets, reduced

    # -- expressions ---------------------------------------------------------------------------
    def __call__(self, e) -> str:
        if isinstance(e, sp.Symbol):
            try:
                return self.names[e]
            except KeyError:  # only compiler-made names are printed, never a user's symbol
                raise ActdslError(f"the activation uses a symbol {str(e)[:40]!r} that is neither z "
                                  "nor a declared parameter") from None
        if e.is_Number or isinstance(e, sp.NumberSymbol):
            return self.number(e)
        if isinstance(e, (BooleanTrue, BooleanFalse)):
            return "True" if e else "False"
        # by class name only for SymPy's own classes and actdsl's primitives (at_inf): a user's
        # function named "Add" or "counter" must not reach _Add or the emitter's _counter
        own = (((type(e).__module__ or "").startswith("sympy.") or isinstance(e, Primitive))
               and not isinstance(type(e), UndefinedFunction))
        method = getattr(self, "_" + type(e).__name__, None) if own else None
        if method is not None:
            return method(e)
        if isinstance(e, Primitive):
            name = e.impl[self.target]
            name = name if "." in name else f"{self.runtime}.{name}"
            return f"{name}({', '.join(self(a) for a in e.args)})"
        if isinstance(e, sp.Piecewise):
            return self.piecewise(e)
        if isinstance(e, sp.core.relational.Relational):
            return f"({self(e.lhs)} {e.rel_op} {self(e.rhs)})"
        for cls, name in self.functions.items():
            if isinstance(e, cls):
                return f"{name}({', '.join(self(a) for a in e.args)})"
        raise ActdslError(f"the {self.target} backend has no implementation of "
                          f"{type(e).__name__} (used by this activation)")

    def number(self, e) -> str:
        if e is sp.nan:
            return "math.nan"
        if e in (sp.oo, -sp.oo):
            return "math.inf" if e is sp.oo else "(-math.inf)"
        value = repr(float(e))
        if value in ("inf", "-inf"):  # an exact number past float64's range
            return "math.inf" if value == "inf" else "(-math.inf)"
        return f"({value})" if value.startswith("-") else value

    def _Add(self, e):
        terms = [self(a) for a in sp.Add.make_args(e)]
        return "(" + " + ".join(terms) + ")"

    def _Mul(self, e):
        coeff, factors = e.as_coeff_mul()
        if coeff.is_Rational and any(f.is_number for f in factors):
            # irrational constant factors (gelu's sqrt(2)/(2 sqrt(pi)), gelu:tanh's
            # 2 sqrt(2)/sqrt(pi)) and the rational coefficient fold into one constant, correctly
            # rounded from the exact product: one multiply where each was a multiply or a
            # division per element (a division is several times a multiply's cost), one rounding
            # where each rounded, and no overflow of a partial product (2 sqrt(2) x / sqrt(pi)
            # overflowed past max/2.8, 1.6 x overflows only past max/1.6)
            consts = [f for f in factors if f.is_number]
            folded = sp.Mul(coeff, *consts).evalf(30)
            if folded.is_real and folded.is_finite and folded != 0:
                rest = [f for f in factors if not f.is_number]
                if not rest:
                    return self.number(folded)
                rest = self(rest[0]) if len(rest) == 1 else self._Mul(sp.Mul(*rest))
                return f"({self.number(folded)} * {rest})"
        num, den = [], []
        for f in factors:
            if f.is_Pow and f.exp.is_Rational and f.exp.is_negative:
                den.append(sp.Pow(f.base, -f.exp, evaluate=False) if f.exp != -1 else f.base)
            else:
                num.append(f)
        text = " * ".join(self(f) for f in num) or self.number(sp.S.One)
        if coeff.is_Rational and coeff.q != 1 and num and abs(coeff.p) == 1:
            # x/6 is correctly rounded; x * (1/6) is not (and with FMA, -3*(1/6) + 0.5 != 0).
            # p x/q (p not ±1) is (p/q rounded) x below: two roundings, as (x/q) p had, without
            # its x/q, which lost the low bits where x/q is subnormal and p x/q is not
            # (leaky_relu(negative_slope=1.599) at float32's smallest normal: 626 ULP), and
            # without p x's overflow (3 x/10 past max/3: lgrelu(r=0.3) at -max)
            if den and coeff.q & (coeff.q - 1) == 0:
                # x/(2 z) as (x/z) · 0.5, exactly: 2 z overflowed where the quotient does not
                # (tlin+{abs(z)**0.5}'s derivative, sqrt(-u)/(2 z), was -0.0 at z = -2e38 in
                # float32)
                coeff = sp.Rational(coeff.p, coeff.q)
            else:
                den = [sp.Integer(coeff.q)] + den
                coeff = sp.Integer(coeff.p)
        if den:
            text = f"{text} / ({' * '.join(self(f) for f in den)})"
        if coeff == -1:
            text = f"-{text}"
        elif coeff != 1:
            text = f"{self.number(coeff)} * {text}"
        return f"({text})"

    def _Pow(self, e):
        b, x = e.base, e.exp
        if x == sp.Rational(1, 2):
            return self.sqrt(self(b))
        if x == -sp.Rational(1, 2):
            return f"({self.number(sp.S.One)} / {self.sqrt(self(b))})"
        if x == -1:
            return f"({self.number(sp.S.One)} / {self(b)})"
        if x == 2:
            return self.square(self(b))
        if x.is_Integer and x < 0:
            # 1 / b**k: Numba raises ZeroDivisionError for 0.0 ** -k whatever the error model
            # (norm:z+softmax's VJP on a constant row near the largest float32), IEEE gives inf
            return f"({self.number(sp.S.One)} / {self._Pow(sp.Pow(b, -x, evaluate=False))})"
        if x.is_Integer and abs(x) < 2 ** 31:  # larger: a float, as Numba types no such int
            return f"({self(b)} ** {int(x)})"
        return f"({self(b)} ** {self(x)})"

    def _at_inf(self, e):
        """The value, or the limits at ±inf (``stable.at_inf``)."""
        value, u, lneg, lpos = e.args
        x = self(u)
        return self.select([(self(lpos), f"({x} == {self.number(sp.oo)})"),
                            (self(lneg), f"({x} == {self.number(-sp.oo)})")], self(value), [])

    def _FirstMax(self, e):
        """Outside a block (a call stored for a later pass over the row): as branch conditions."""
        return self(e.elementary())

    def _Pick(self, e):
        """The value at a scanned index: one comparison per value that differs from the most
        common one (a slope's gradient, one-hot, is one select); NaN where the maximum is."""
        index, values = e.args[0], e.args[1:]
        if index not in self._scanned:
            return self(e.elementary())
        top, pieces, carry = self._scanned[index]
        if values == pieces:  # the maximum itself
            return top
        default = collections.Counter(values).most_common(1)[0][0]  # ties: the first met
        branches = [(self(v), f"({self(index)} == {self.number(sp.Integer(k))})")
                    for k, v in enumerate(values) if v != default]
        picked = self.select(branches, self(default), []) if branches else self(default)
        return f"({picked} + {carry})"

    def _Not(self, e):
        return self.logical_not(self(e.args[0]))

    def _And(self, e):
        return self.logical("and", [self(a) for a in e.args])

    def _Or(self, e):
        return self.logical("or", [self(a) for a in e.args])

    def _ITE(self, e):
        c, a, b = e.args
        return self.select([(self(a), self(c))], self(b), [])

    def piecewise(self, e: sp.Piecewise) -> str:
        """Branches in order; NaN in any compared operand gives NaN (it fails every comparison,
        so without this it would silently take the last branch)."""
        operands = []
        for _, cond in e.args:
            operands += [o for o in self._operands(cond) if o not in operands]
        branches = [(self(v), self(c)) for v, c in e.args[:-1]]
        last_value, last_cond = e.args[-1]
        if last_cond is not sp.true:  # no default: SymPy leaves it undefined; we use NaN
            branches.append((self(last_value), self(last_cond)))
            last_value = sp.nan
        return self.select(branches, self(last_value), [self(o) for o in operands])

    def _operands(self, cond) -> list[sp.Expr]:
        """The non-constant expressions a condition compares, through hoisted conditions too."""
        found = []  # sorted: sets iterate in a per-process (hash-seeded) order
        for rel in sorted(cond.atoms(sp.core.relational.Relational), key=sp.default_sort_key):
            found += [s for s in (rel.lhs, rel.rhs) if not s.is_Number]
        for sym in sorted(cond.free_symbols, key=sp.default_sort_key):
            found += self._compared.get(sym, [])
        return list(dict.fromkeys(found))

    # -- what targets spell differently ---------------------------------------------------------
    def sqrt(self, x: str) -> str:
        raise NotImplementedError

    def square(self, x: str) -> str:
        return f"({x} * {x})"

    def logical(self, op: str, parts: list[str]) -> str:
        raise NotImplementedError

    def logical_not(self, x: str) -> str:
        raise NotImplementedError

    def select(self, branches: list[tuple[str, str]], default: str, nan_operands: list[str]) -> str:
        raise NotImplementedError


class Source:
    """Generated source, built line by line at the current indentation."""

    def __init__(self):
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, *lines: str):
        self.lines += ["    " * self.depth + line if line else "" for line in lines]

    def indent(self):
        self.depth += 1

    def dedent(self):
        self.depth -= 1

    def text(self) -> str:
        """The source, each expression that it prints twice computed once (``shared.share``)."""
        return share("\n".join(self.lines) + "\n")

"""mpmath truths for actdsl's specs, written from the definitions alone.

Sources: DESIGN.md's semantics table (theanets' keys, with its corrections: norm:std/norm:z
divide by the ddof-0 standard deviation plus eps, maxout has intercepts), the README's table,
and PyTorch's documentation for the keys beyond the seed (PyTorch's default hyper-parameters).
Nothing here imports or reads actdsl.

Kinks: the derivative at a boundary is that of the branch the definition selects there
(relu'(0) = 0; max(0, a) is "a if a > 0 else 0", so a tie picks the constant; clamps such as
trel, hardtanh, relu6, hardsigmoid pick the constant at both ends; maxout's ties go to the first
piece). Where PyTorch's documentation writes a branch condition (elu/selu/celu "x <= 0",
hardswish "0 if x <= -3, x if x >= 3", softshrink/hardshrink "|x| > lambda", threshold
"x > threshold"), that branch decides. leaky_relu is "x if x > 0 else slope * x", so
leaky_relu'(0) = slope: PyTorch's autograd does the same (its documentation's "x >= 0" says
nothing about the derivative of a continuous function at its kink).

Row-wise stages return the row and its Jacobian J[i][j] = dy_i/dz_j. std's derivative at a
constant row (std = 0, where sqrt has no derivative) is taken as 0; every use of it there is
multiplied by z_i - mean = 0 in norm:z, so only norm:std's VJP on a constant row depends on it.
"""
import ast
import re

import mpmath as mp
import numpy as np

INF = mp.inf


def _c(text):
    """A decimal constant at 80 digits (an mpf keeps the digits it was made with)."""
    with mp.workdps(80):
        return mp.mpf(text)


ONE, ZERO = _c(1), _c(0)


class Undefined(Exception):
    """The truth does not exist at this point (an indeterminate limit): nothing to compare."""


def _sig(x):
    return 1 / (1 + mp.exp(-x))


def _softplus(x):
    return x + mp.log1p(mp.exp(-x)) if x > 0 else mp.log1p(mp.exp(x))


def _Phi(x):
    if x < -1e5:  # mpmath's erfc overflows here; the asymptote's relative error is 1/x^2
        return mp.exp(-x * x / 2) / (-x * mp.sqrt(2 * mp.pi))
    if x > 1e5:
        return 1 - _Phi(-x)
    return mp.erfc(-x / mp.sqrt(2)) / 2


def _inf_or(x, pos, neg, finite):
    if mp.isinf(x):
        return pos if x > 0 else neg
    return finite(x)


def _mx0(a, da):
    """max(0, a) and its derivative, the tie picking the constant."""
    return (a, da) if a > 0 else (ZERO, ZERO)


# --------------------------------------------------------------------------- elementwise
# Each factory takes the spec's keyword arguments (mpf) and returns x -> (g(x), g'(x)).

def _sigmoid(**_):
    return lambda x: _inf_or(x, (1, 0), (0, 0), lambda x: (_sig(x), _sig(x) * _sig(-x)))


def _tanh(**_):
    return lambda x: _inf_or(x, (1, 0), (-1, 0), lambda x: (mp.tanh(x), 1 / mp.cosh(x) ** 2))


def _softplus_def(**_):
    return lambda x: _inf_or(x, (INF, 1), (0, 0), lambda x: (_softplus(x), _sig(x)))


def _piecewise(fn):
    return lambda **kw: (lambda x: fn(x, **kw))


def _elu(alpha=1):
    return lambda x: (x, 1) if x > 0 else _inf_or(
        x, None, (-alpha, 0), lambda x: (alpha * mp.expm1(x), alpha * mp.exp(x)))


def _celu(alpha=1):
    return lambda x: (x, 1) if x > 0 else _inf_or(
        x, None, (-alpha, 0), lambda x: (alpha * mp.expm1(x / alpha), mp.exp(x / alpha)))


SELU_SCALE = _c("1.0507009873554804934193349852946")
SELU_ALPHA = _c("1.6732632423543772848170429916717")


def _selu(**_):
    elu = _elu(SELU_ALPHA)

    def g(x):
        v, d = elu(x)
        return SELU_SCALE * v, SELU_SCALE * d
    return g


def _exponential(**_):
    return lambda x: _inf_or(x, (INF, INF), (0, 0), lambda x: (mp.exp(x), mp.exp(x)))


def _expm1(**_):
    return lambda x: _inf_or(x, (INF, INF), (-1, 0), lambda x: (mp.expm1(x), mp.exp(x)))


def _gelu(**_):
    def finite(x):
        phi = mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)
        return x * _Phi(x), _Phi(x) + x * phi
    return lambda x: _inf_or(x, (INF, 1), (0, 0), finite)


def _gelu_tanh(**_):
    c = _c("0.044715")

    def finite(x):  # 0.5 (1 + tanh u) = sigmoid(2u): no cancellation for x << 0
        k = mp.sqrt(2 / mp.pi)
        u = k * (x + c * x ** 3)
        s = _sig(2 * u)
        return x * s, s + x * s * _sig(-2 * u) * 2 * k * (1 + 3 * c * x * x)
    return lambda x: _inf_or(x, (INF, 1), (0, 0), finite)


def _logsigmoid(**_):
    return lambda x: _inf_or(x, (0, 0), (-INF, 1), lambda x: (-_softplus(-x), _sig(-x)))


def _mish(**_):
    def finite(x):
        sp = _softplus(x)
        t = mp.tanh(sp)
        return x * t, t + x * _sig(x) / mp.cosh(sp) ** 2
    return lambda x: _inf_or(x, (INF, 1), (0, 0), finite)


def _silu(**_):
    return lambda x: _inf_or(
        x, (INF, 1), (0, 0), lambda x: (x * _sig(x), _sig(x) + x * _sig(x) * _sig(-x)))


def _softsign(**_):
    return lambda x: _inf_or(
        x, (1, 0), (-1, 0), lambda x: (x / (1 + abs(x)), 1 / (1 + abs(x)) ** 2))


def _tanhshrink(**_):
    def finite(x):  # z - tanh z ~ z^3/3 cancels near 0
        if abs(x) < mp.mpf(10) ** -10:  # Taylor series, relative error below z^8 < 1e-80
            return x ** 3 / 3 - 2 * x ** 5 / 15 + 17 * x ** 7 / 315, mp.tanh(x) ** 2
        extra = int(-2 * mp.log10(abs(x))) + 10 if 0 < abs(x) < 1 else 0
        with mp.workdps(mp.mp.dps + extra):
            v = x - mp.tanh(x)
        return +v, mp.tanh(x) ** 2
    return lambda x: _inf_or(x, (INF, 1), (-INF, 1), finite)


def _prelu(r=_c("0.1")):
    return _lgrelu(1, r)


def _lgrelu(g=1, r=_c("0.1")):
    def fn(x):  # g max(0, z) + r min(0, z): the seed's max(0, g z) - max(0, -r z) for g, r >= 0
        if x > 0:
            return g * x, g
        return (r * x, r) if x < 0 else (ZERO, ZERO)
    return fn


def _maxout(pieces=2, m=None, b=None):
    k = int(pieces)
    m = [_c(str(v)) for v in (m if m is not None else np.linspace(-1, 1, k))]
    b = [_c(str(v)) for v in (b if b is not None else [0] * k)]

    def fn(x):
        if mp.isinf(x):  # the piece that wins as x grows: largest slope, then intercept
            s = 1 if x > 0 else -1
            i = max(range(k), key=lambda i: (s * m[i], b[i], -i))
            return (m[i] * x if m[i] != 0 else b[i]), m[i]
        vals = [m[i] * x + b[i] for i in range(k)]
        i = max(range(k), key=lambda i: (vals[i], -i))  # first piece on ties
        return vals[i], m[i]
    return fn


def _where_leak(**_):
    tenth = _c("0.1")
    return lambda x: (x, 1) if x > 0 else (tenth * x, tenth)


def _gelu_pi(**_):
    c = _gelu()(mp.pi)[0]
    return lambda x: (c, 0)


ELEMENTWISE = {
    "linear": _piecewise(lambda x: (x, 1)),
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "softplus": _softplus_def,
    "relu": _piecewise(lambda x: _mx0(x, 1)),
    "rect:min": _piecewise(lambda x: (x, 1) if x < 1 else (1, 0)),
    "trel": _piecewise(lambda x: (0, 0) if x <= 0 else ((1, 0) if x >= 1 else (x, 1))),
    "trec": _piecewise(lambda x: (x, 1) if x > 1 else (0, 0)),
    "tlin": _piecewise(lambda x: (x, 1) if abs(x) > 1 else (0, 0)),
    "prelu": _prelu, "lgrelu": _lgrelu,
    "maxout": _maxout,
    "elu": _elu, "celu": _celu, "selu": _selu,
    "exponential": _exponential,
    "gelu": _gelu, "gelu:tanh": _gelu_tanh,
    "hardshrink": _piecewise(lambda x, lambd=_c("0.5"): (x, 1) if abs(x) > lambd else (0, 0)),
    "hardsigmoid": _piecewise(
        lambda x: (0, 0) if x <= -3 else ((1, 0) if x >= 3 else (x / 6 + mp.mpf(1) / 2, mp.mpf(1) / 6))),
    "hardswish": _piecewise(
        lambda x: (0, 0) if x <= -3 else ((x, 1) if x >= 3 else (x * (x + 3) / 6, (2 * x + 3) / 6))),
    "hardtanh": _piecewise(lambda x, min_val=-1, max_val=1:
                           (min_val, 0) if x <= min_val else ((max_val, 0) if x >= max_val else (x, 1))),
    "leaky_relu": _piecewise(lambda x, negative_slope=_c("0.01"):
                             (x, 1) if x > 0 else (negative_slope * x, negative_slope)),
    "logsigmoid": _logsigmoid,
    "mish": _mish,
    "relu6": _piecewise(lambda x: (0, 0) if x <= 0 else ((6, 0) if x >= 6 else (x, 1))),
    "silu": _silu,
    "softshrink": _piecewise(lambda x, lambd=_c("0.5"):
                             (x - lambd, 1) if x > lambd else ((x + lambd, 1) if x < -lambd else (0, 0))),
    "softsign": _softsign,
    "sparse_plus": _piecewise(
        lambda x: (0, 0) if x <= -1 else (((x + 1) ** 2 / 4, (x + 1) / 2) if x < 1 else (x, 1))),
    "tanhshrink": _tanhshrink,
    "threshold": _piecewise(lambda x, threshold=0, value=0: (x, 1) if x > threshold else (value, 0)),
}
ALIASES = {"leaky-relu": "prelu", "leaky-gain-relu": "lgrelu", "logistic": "sigmoid","rect:minmax": "trel", "hard_shrink": "hardshrink", "hard_silu": "hardswish",
           "log_sigmoid": "logsigmoid", "rect:max": "relu", "swish": "silu", "soft_shrink": "softshrink",
           "tanh_shrink": "tanhshrink"}
# inline formulas used by the tests, each written out from its own text
FORMULAS = {
    "{z * sigmoid(z)}": _silu,
    "{log(1 + exp(z))}": _softplus_def,
    "{1/(1 + exp(-z))}": _sigmoid,
    "{exp(z) - 1}": _expm1,
    "{z * tanh(softplus(z))}": _mish,
    "{where(z > 0, z, 0.1*z)}": _where_leak,
    "{gelu(pi)}": _gelu_pi,
}


# --------------------------------------------------------------------------- row-wise
# Each factory returns z (list of mpf) -> (y list, J list of lists).

def _eye(n):
    return [[ONE if i == j else ZERO for j in range(n)] for i in range(n)]


# T[i][j] is the size of the terms J[i][j] is made of (|a| + |b| for J = a - b): the scale of
# the rounding errors of any formula that computes J's terms and adds them.

def _shifted_exps(z):
    """max(z), exp(z - max) and their sum: softmax's terms, none of them overflowing."""
    m = max(z)
    e = [mp.exp(v - m) for v in z]
    return m, e, mp.fsum(e)


def _softmax_row(z):
    _, e, s = _shifted_exps(z)
    y = [v / s for v in e]
    n = len(z)
    J = [[y[i] * ((1 if i == j else 0) - y[j]) for j in range(n)] for i in range(n)]
    T = [[y[i] * ((1 if i == j else 0) + y[j]) for j in range(n)] for i in range(n)]
    return y, J, T


def _log_softmax_row(z):
    m, e, s = _shifted_exps(z)
    p = [v / s for v in e]
    n = len(z)
    J = [[(1 if i == j else 0) - p[j] for j in range(n)] for i in range(n)]
    T = [[(1 if i == j else 0) + p[j] for j in range(n)] for i in range(n)]
    return [v - m - mp.log(s) for v in z], J, T


def _softmin_row(z):
    y, J, T = _softmax_row([-v for v in z])
    return y, [[-v for v in row] for row in J], T


def _mean(z):
    """The row mean, written as z_0 + mean(z - z_0) so that equal values have exactly their value
    as mean at any working precision (fsum(z)/n of a rounded softplus row is off by an ulp of the
    precision, and the truth of norm:z on it then never converges)."""
    if not all(mp.isfinite(v) for v in z):
        return mp.fsum(z) / len(z)
    return z[0] + mp.fsum(v - z[0] for v in z) / len(z)


def _mean_std(z):
    n = len(z)
    mu = _mean(z)
    sd = mp.sqrt(mp.fsum((v - mu) ** 2 for v in z) / n)
    dsd = [(v - mu) / (n * sd) if sd > 0 else ZERO for v in z]
    return mu, sd, dsd


def _norm_mean(**_):
    def f(z):
        n = len(z)
        mu = _mean(z)
        J = [[(1 if i == j else 0) - ONE / n for j in range(n)] for i in range(n)]
        return [v - mu for v in z], J, [[abs(v) for v in row] for row in J]
    return f


def _norm_max(eps=_c("1e-8")):
    def f(z):
        n = len(z)
        k = max(range(n), key=lambda i: (abs(z[i]), -i))  # first argmax
        a = abs(z[k]) + eps
        sk = -1 if z[k] < 0 else 1
        J = [[(1 if i == j else 0) / a - (z[i] * sk / a ** 2 if j == k else 0) for j in range(n)]
             for i in range(n)]
        T = [[(1 if i == j else 0) / a + (abs(z[i]) / a ** 2 if j == k else 0) for j in range(n)]
             for i in range(n)]
        return [v / a for v in z], J, T
    return f


def _scaled_by_std(center, eps):
    """(z - mean)/(std + eps) with center, z/(std + eps) without: values, Jacobian, and the
    Jacobian's terms in absolute value (its condition)."""
    def f(z):
        n = len(z)
        mu, sd, dsd = _mean_std(z)
        a = sd + eps
        c, off = (mu, ONE / n) if center else (0, 0)
        J = [[((1 if i == j else 0) - off) / a - (z[i] - c) * dsd[j] / a ** 2
              for j in range(n)] for i in range(n)]
        T = [[abs((1 if i == j else 0) - off) / a + abs((z[i] - c) * dsd[j]) / a ** 2
              for j in range(n)] for i in range(n)]
        return [(v - c) / a for v in z], J, T
    return f


def _norm_std(eps=_c("1e-8")):
    return _scaled_by_std(False, eps)


def _norm_z(eps=_c("1e-8")):
    return _scaled_by_std(True, eps)


ROWWISE = {
    "softmax": lambda **_: _softmax_row, "log_softmax": lambda **_: _log_softmax_row,
    "softmin": lambda **_: _softmin_row,
    "norm:mean": _norm_mean, "norm:max": _norm_max, "norm:std": _norm_std, "norm:z": _norm_z,
}


# --------------------------------------------------------------------------- specs
def _split(spec):
    terms, depth, cur = [], 0, ""
    for ch in spec:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "+" and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    return terms + [cur]


def _arg(text):
    value = ast.literal_eval(text.strip())
    if isinstance(value, list):
        return [_c(str(v)) for v in value]
    return _c(text.strip())


FORMULA_KEYS = {"{z * sigmoid(z)}": "silu", "{log(1 + exp(z))}": "softplus",
                "{1/(1 + exp(-z))}": "sigmoid", "{z * tanh(softplus(z))}": "mish"}


def canonical(spec):
    """The spec with aliases (and formulas equal to a key) replaced: one truth serves both."""
    terms = []
    for term in _split(spec.replace(" ", "")):
        key = next((k for k in FORMULAS if k.replace(" ", "") == term), None)
        if key is not None:
            terms.append(FORMULA_KEYS.get(key, key))
            continue
        name = re.match(r"[a-z_0-9:\-]+?(?=$|\(|:\d)", term).group(0)
        terms.append(ALIASES.get(name, name) + term[len(name):])
    return "+".join(terms)


def stages(spec):
    """[(kind, fn)] for a spec of the tests' own (a parser for these tests' texts only)."""
    out = []
    for term in _split(spec.replace(" ", "")):
        if term.startswith("{"):
            key = next(k for k in FORMULAS if k.replace(" ", "") == term)
            out.append(("elem", FORMULAS[key]()))
            continue
        mt = re.fullmatch(r"([a-z_0-9:\-]+?)(?::(\d+))?(?:\((.*)\))?", term)
        key, pieces, args = mt.groups()
        kw = {}
        if pieces:
            kw["pieces"] = int(pieces)
        for part in re.split(r",(?![^\[]*\])", args or ""):
            if part:
                name, text = part.split("=", 1)
                kw[name] = _arg(text)
        key = ALIASES.get(key, key)
        if key in ROWWISE:
            out.append(("row", ROWWISE[key](**kw)))
        else:
            out.append(("elem", ELEMENTWISE[key](**kw)))
    return out


def is_elementwise(spec):
    return all(kind == "elem" for kind, _ in stages(spec))


def _mpf(v):
    return mp.mpf(v) if not isinstance(v, mp.mpf) else v


def _mul(a, b):
    if (a == 0 and mp.isinf(b)) or (b == 0 and mp.isinf(a)):
        raise Undefined
    return a * b


def elem_chain(fns, x, rounder=None):
    """Value and derivative of the chain at x; rounder(u) (optional) rounds each intermediate."""
    v, d = _mpf(x), ONE
    for i, fn in enumerate(fns):
        if i and rounder is not None:
            v = rounder(v)
        v2, d2 = fn(v)
        v, d = _mpf(v2), _mul(_mpf(d2), d)
    if mp.isnan(v) or mp.isnan(d):
        raise Undefined
    return v, d


def row_chain(sts, z, rounder=None):
    """Row value, Jacobian and term scale (see above) of a staged spec; rounder rounds each
    intermediate row."""
    n = len(z)
    y = [_mpf(v) for v in z]
    J = _eye(n)
    T = _eye(n)
    for i, (kind, fn) in enumerate(sts):
        if i and rounder is not None:
            y = [rounder(v) for v in y]
        if kind == "elem":
            vd = [fn(v) for v in y]
            y = [_mpf(v) for v, _ in vd]
            J = [[_mul(_mpf(vd[r][1]), J[r][c]) for c in range(n)] for r in range(n)]
            T = [[_mul(abs(_mpf(vd[r][1])), T[r][c]) for c in range(n)] for r in range(n)]
        else:
            y, Jr, Tr = fn(y)
            J = [[mp.fsum(Jr[r][k] * J[k][c] for k in range(n)) for c in range(n)]
                 for r in range(n)]
            T = [[mp.fsum(Tr[r][k] * T[k][c] for k in range(n)) for c in range(n)]
                 for r in range(n)]
    return y, J, T


# --------------------------------------------------------------------------- precision
def digits_for(values):
    """Working digits (tanhshrink adds its own near 0)."""
    return 50


def _flat(obj):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _flat(o)
    else:
        yield obj


def _agree(a, b, dps):
    for u, v in zip(_flat(a), _flat(b)):
        if mp.isnan(u) or mp.isnan(v) or mp.isinf(u) or mp.isinf(v):
            if not (u == v or (mp.isnan(u) and mp.isnan(v))):
                return False
        elif abs(u - v) > mp.mpf(10) ** -30 * max(abs(u), abs(v)):
            return False
    return True


def robust(fn, values):
    """fn() evaluated until two working precisions agree to a relative 1e-30."""
    dps = digits_for(values)
    while True:
        with mp.workdps(dps):
            a = fn()
        with mp.workdps(dps + 40):
            b = fn()
        if _agree(a, b, dps):
            return b
        dps *= 2
        if dps > 5000:
            raise RuntimeError("truth does not converge")


# --------------------------------------------------------------------------- floats
FMT = {np.dtype(np.float32): (24, -126, 127), np.dtype(np.float64): (53, -1022, 1023)}


def round_to(v, dtype):
    """v rounded to nearest in dtype (a Python float; exact for float32)."""
    p, emin, emax = FMT[np.dtype(dtype)]
    v = _mpf(v)
    if mp.isnan(v):
        return float("nan")
    if mp.isinf(v) or v == 0:
        return float(v)
    with mp.workprec(max(mp.mp.prec, 200)):
        _, e = mp.frexp(v)
        q = max(e - 1, emin) - (p - 1)
        r = mp.ldexp(mp.nint(mp.ldexp(v, -q)), q)
        biggest = mp.ldexp(2 - mp.ldexp(1, 1 - p), emax)
        if abs(r) > biggest:
            return float("inf") if r > 0 else float("-inf")
        return float(r)


def ulp(v, dtype):
    p, emin, _ = FMT[np.dtype(dtype)]
    v = _mpf(v)
    e = mp.frexp(v)[1] if v != 0 and mp.isfinite(v) else emin + 1
    return mp.ldexp(1, max(e - 1, emin) - (p - 1))


def step(v, dtype, direction):
    """The next float of dtype from the rounded v, towards +inf or -inf (direction +1/-1)."""
    f = np.asarray(round_to(v, dtype), dtype=dtype)
    with np.errstate(all="ignore"):
        return mp.mpf(float(np.nextafter(f, dtype.type(np.inf * direction))))

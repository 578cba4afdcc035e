"""Grids, cached mpmath truths and the comparisons of tests/test_oracle.py.

Tolerances (stated once, here):

* Elementwise values are compared in ULP of the exact truth t, with a conditioning allowance:
  err = |c - t| / (ulp(t) + cond), where cond is how much the exact result moves when the
  input, or any intermediate value of a composition, moves by one ULP of the dtype (the smaller
  of the two directions, so that a point on a kink is held to its own branch; where the
  derivative jumps on both sides, as prelu's at 0, the derivative gets no allowance). err must be at
  most 4 (forward) or 8 (derivative, VJP). A truth below the smallest normal number is held to
  an absolute error of that bound times tiny * 2^-(p/4) (gradual underflow of a factor is not
  a bug). A truth that rounds to +-inf must come out as that inf; a finite truth must come out
  finite; NaN in gives NaN out.
* Row-wise results are compared in epsilon of the row's scale: forward |c - t| <= 16 eps S,
  S = max|t|; VJP <= 64 eps S, S = max_j sum_i |dy_i| T_ij, where T_ij is the size of the terms
  the Jacobian entry J_ij is made of (|a| + |b| for J = a - b, chained through the stages): the
  scale of the rounding errors of any formula that sums those terms. Both get an absolute floor
  of 16 tiny 2^-(p/4), the subnormal allowance above.
  Specs with more than one stage get 4x the change of the exact result when every intermediate
  row is rounded to the dtype (to nearest, and one ULP up or down), which is what a backend that
  keeps intermediates in the dtype cannot avoid.
"""
import fcntl
import functools
import hashlib
import os
import pickle
import tempfile

import mpmath as mp
import numpy as np

import oracle_defs as od

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCE = hashlib.sha256(b"".join(
    open(os.path.join(_HERE, f), "rb").read() for f in ("oracle_defs.py", "oracle_cases.py")
)).hexdigest()[:16]
CACHE = os.path.join(os.environ.get("ORACLE_CACHE_DIR", tempfile.gettempdir()),
                     f"actdsl-oracle-{_SOURCE}")


def disk_cached(fn):
    """Truths are slow (mpmath): computed once, shared by xdist workers and later runs through
    pickles keyed by the spec and a hash of the oracle's own source (a lock file each, so that
    two workers wanting one truth compute it once)."""
    @functools.lru_cache(None)
    def wrapper(*args):
        os.makedirs(CACHE, exist_ok=True)
        key = hashlib.sha256(repr((fn.__name__,) + args).encode()).hexdigest()[:24]
        path = os.path.join(CACHE, key + ".pkl")
        with open(path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(path, "rb") as f:
                    return pickle.load(f)
            except (OSError, EOFError, pickle.UnpicklingError):
                value = fn(*args)
                with open(path + ".tmp", "wb") as f:
                    pickle.dump(value, f)
                os.replace(path + ".tmp", path)
                return value
    return wrapper

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
KINKS = (0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 6.0)


def _cast(values, dtype):
    with np.errstate(all="ignore"):
        a = np.array(values, dtype=np.float64).astype(dtype)
    return a[np.isfinite(a)]


@functools.lru_cache(None)
def elem_grid(dtype):
    dtype = np.dtype(dtype)
    fi = np.finfo(dtype)
    pts = [0.0, -0.0, float(fi.smallest_subnormal), float(fi.smallest_subnormal) * 7,
           float(fi.smallest_normal), float(fi.smallest_normal) * (1 - 2 ** -10),
           float(fi.max), float(fi.max) / 2, float(fi.max) * 0.999, 1e-3, 1e-7, 0.1, 0.7]
    lo, hi = int(np.log2(float(fi.smallest_subnormal))), int(np.log2(float(fi.max)))
    stride = 24 if dtype == F32 else 128
    for e in range(lo, hi + 1, stride):
        pts += [2.0 ** e, 1.37 * 2.0 ** e]
    pts += list(np.linspace(-40, 40, 11)) + [
        12.5, 15, 20, 30, 50, 88, 89, 100, 104, 200, 745, 746, 709, 710, 711, 1e4, 1e6]
    pts += [-p for p in pts]
    with np.errstate(all="ignore"):
        for k in KINKS:
            f = dtype.type(k)
            pts += [float(np.nextafter(f, dtype.type(np.inf))), float(k),
                    float(np.nextafter(f, dtype.type(-np.inf)))]
    return np.unique(_cast(pts, dtype))


def dy_for(shape, dtype, seed=7):
    """Cotangents of size 0.05 to 0.75 (below 1, so that dy * g' can be finite where g' is not)."""
    dy = np.random.default_rng(seed).normal(size=shape) * 0.5
    return (np.sign(dy) * np.clip(np.abs(dy), 0.05, 0.75) + (dy == 0) * 0.5).astype(dtype)


# ------------------------------------------------------------------ elementwise truths
def _tail(fns, u):
    return od.elem_chain(fns, u)


def _elem_point(fns, x, dtype):
    """(t, t', cond_t, cond_t') for x (mpf), or None where the truth is undefined."""
    try:
        v, d = od.robust(lambda: od.elem_chain(fns, x), [x])
    except od.Undefined:
        return None
    cv = cd = od.ZERO
    with mp.workdps(od.digits_for([x])):
        # the input and every intermediate moved by one ULP; the smaller direction counts
        head_d, u = od.ONE, x
        for k in range(len(fns)):
            if k:
                hv, hd = od.elem_chain(fns[:k], x)
                u, head_d = hv, hd
            if not mp.isfinite(u):
                continue
            tv, td = _tail(fns[k:], u)
            dv, dd = [], []
            for direction in (1, -1):
                u2 = od.step(u, dtype, direction)
                if not mp.isfinite(u2):
                    continue
                try:
                    v2, d2 = _tail(fns[k:], u2)
                except od.Undefined:
                    continue
                dv.append(abs(v2 - tv) if mp.isfinite(v2) else mp.inf)
                dd.append(abs(d2 - td) * abs(head_d) if mp.isfinite(d2) else mp.inf)
            if dv:
                cv += min(dv)
                # g' jumps here (a kink: prelu at 0 has r on one side, 1 on the other): the
                # derivative is the definition's own choice, held with no allowance
                jump = min(dd) > max(mp.mpf(10) ** -6, abs(td) * mp.mpf(10) ** -3)
                cd += 0 if jump else min(dd)
    return v, d, cv, cd


def elem_truth(spec, dtype):
    """Truths over elem_grid(dtype): list of (t, t', cond, cond'), None where undefined."""
    return _elem_truth(od.canonical(spec), np.dtype(dtype))


@disk_cached
def _elem_truth(spec, dtype):
    return elem_truth_at(spec, dtype, elem_grid(dtype))


@disk_cached
def points_truth(spec, dtype, xs):
    """elem_truth_at for a fixed tuple of points, cached like the grid's truths."""
    return elem_truth_at(spec, dtype, xs)


def elem_truth_at(spec, dtype, xs):
    fns = [fn for _, fn in od.stages(spec)]
    return [_elem_point(fns, mp.mpf(float(x)), np.dtype(dtype)) for x in xs]


def elem_limit(spec, x):
    fns = [fn for _, fn in od.stages(spec)]
    try:
        return od.elem_chain(fns, x)
    except od.Undefined:
        return None


def ulp_errors(got, truths, conds, dtype, bound):
    """Failures [(index, got, truth, err)] of got against exact truths with allowances."""
    p = od.FMT[np.dtype(dtype)][0]
    tiny = mp.mpf(float(np.finfo(dtype).smallest_normal))
    sub = tiny * mp.mpf(2) ** (-(p // 4))
    biggest = mp.mpf(float(np.finfo(dtype).max))
    bad = []
    for i, (c, t, cond) in enumerate(zip(got, truths, conds)):
        if t is None:
            continue
        c = float(c)
        tr = od.round_to(t, dtype)
        if np.isnan(tr):
            ok = np.isnan(c)
            err = 0 if ok else np.inf
        elif np.isinf(tr):
            ok = c == tr or (np.isfinite(c) and np.sign(c) == np.sign(tr)
                             and abs(c) >= biggest * (1 - 16 * np.finfo(dtype).eps))
            err = 0 if ok else np.inf
        elif not np.isfinite(c):
            ok = abs(t) >= biggest * (1 - 16 * np.finfo(dtype).eps) and np.sign(c) == mp.sign(t)
            err = 0 if ok else np.inf
        else:
            denom = od.ulp(t, dtype) + cond + (sub if abs(t) < tiny else 0)
            err = float(abs(mp.mpf(c) - t) / denom)
            ok = err <= bound
        if not ok:
            bad.append((i, c, float(t), err))
    return bad


# ------------------------------------------------------------------ row-wise truths
def rows_for(dtype):
    """Named rows: ordinary, length 1, constant, huge, tiny, subnormal, far-from-zero mean..."""
    dtype = np.dtype(dtype)
    fi = np.finfo(dtype)
    big, sub = float(fi.max), float(fi.smallest_subnormal)
    rng = np.random.default_rng(11)
    rows = {
        "normal8": [0.3, -1.2, 2.5, 0.0, -0.7, 1.1, 3.3, -2.2],
        "randn5": list(rng.normal(size=5)),
        "len1": [0.7], "len1neg": [-3.0], "len1zero": [0.0],
        "const3": [5.0] * 3, "const4": [-2.5] * 4, "zeros3": [0.0] * 3, "const3tenth": [0.1] * 3,
        "huge_pm": [big * 0.9, -big * 0.9, 0.0], "huge_max": [big, big / 2, -big / 3],
        "huge_same": [big * 0.95, big * 0.95],
        "tiny": [float(fi.smallest_normal) * k for k in (1, -2, 3)],
        "subnormal": [sub, 0.0, -sub * 3],
        "farmean": list(1e4 + rng.normal(size=8)),
        "mixed": [1e-3, 1.0, 1e3, -1e2, 1e-5],
        "spread100": [-50.0, 0.0, 50.0], "spread200": [-100.0, 0.0, 100.0, 20.0],
        "signedzero": [0.0, -0.0, 1.0],
        "expedge": [88.0, 89.0, -100.0] if dtype == F32 else [709.0, 710.0, 0.0],
    }
    if dtype == F64:
        rows.update({"huge300": [1e300, -1e300, 0.0], "huge_mean": [1.7e308, 1.7e308],
                     "farmean6": list(1e6 + rng.normal(size=8))})
    else:
        rows.update({"huge19": [2e19, -2e19, 1.0], "huge38": [3e38, -3e38, 0.0]})
    out = {}
    for name, r in rows.items():
        a = np.array(r, dtype=np.float64).astype(dtype)
        if np.all(np.isfinite(a)):
            out[name] = a
    return out


def _vjp_rows(y, J, dy):
    n = len(y)
    return [mp.fsum(dy[i] * J[i][j] for i in range(n)) for j in range(n)]


def row_truth(spec, dtype, name):
    """(t, tol_fwd, vjp_t, tol_vjp) for rows_for(dtype)[name], dy = dy_for(row)."""
    return _row_truth(od.canonical(spec), np.dtype(dtype), name)


@disk_cached
def _row_truth(spec, dtype, name):
    row = rows_for(dtype)[name]
    return row_truth_for(spec, dtype, row, dy_for(len(row), dtype))


def row_truth_for(spec, dtype, row, dy):
    """(t, tol_fwd, vjp_t, tol_vjp) of one row (floats) with cotangent dy (floats)."""
    dtype = np.dtype(dtype)
    z = [mp.mpf(float(v)) for v in row]
    dy = [mp.mpf(float(v)) for v in dy]
    sts = od.stages(spec)
    eps = mp.mpf(float(np.finfo(dtype).eps))

    def truth(rounder=None, at=z):
        y, J, T = od.row_chain(sts, at, rounder)
        return y, _vjp_rows(y, J, dy), T

    y, g, T = od.robust(truth, z)
    p = od.FMT[dtype][0]
    floor = 16 * mp.mpf(float(np.finfo(dtype).smallest_normal)) * mp.mpf(2) ** (-(p // 4))
    with mp.workdps(od.digits_for(z)):
        s_fwd = max(abs(v) for v in y)
        s_vjp = max(mp.fsum(abs(dy[i]) * T[i][j] for i in range(len(z))) for j in range(len(z)))
        allow_f = allow_v = od.ZERO
        if len(sts) > 1:
            # a stage's output rounded (or a step off) is what the next stage is given; the
            # first stage's own input is moved by a step too, the conditioning allowance of the
            # elementwise truths: the first stage rounds inside itself (gelu:tanh's exp argument,
            # near -108 at z = -11, computed to 1e-14 absolute, puts 3e-14 relative into its
            # tiny value, which the softmax after it carries into the VJP: about 220 ULP)
            moved = [[od.step(v, dtype, d) if mp.isfinite(v) else v for v in z] for d in (1, -1)]
            for rounder, at in ((lambda v: mp.mpf(od.round_to(v, dtype)), z),
                                (lambda v: od.step(v, dtype, 1), z),
                                (lambda v: od.step(v, dtype, -1), z),
                                (None, moved[0]), (None, moved[1])):
                y2, g2, _ = truth(rounder and (lambda v, r=rounder: r(v) if mp.isfinite(v) else v),
                                  at)
                allow_f = max(allow_f, max(abs(a - b) for a, b in zip(y2, y)))
                allow_v = max(allow_v, max(abs(a - b) for a, b in zip(g2, g)))
    return (y, 16 * eps * s_fwd + 4 * allow_f + floor,
            g, 64 * eps * s_vjp + 4 * allow_v + floor)


def row_errors(got, truths, tol, dtype):
    """Failures [(index, got, truth)] of a row against its truth and tolerance."""
    bad = []
    for i, (c, t) in enumerate(zip(got, truths)):
        c = float(c)
        tr = od.round_to(t, dtype)
        if np.isinf(tr) or np.isnan(tr):
            ok = c == tr or (np.isnan(tr) and np.isnan(c))
        else:
            ok = np.isfinite(c) and abs(mp.mpf(c) - t) <= tol
        if not ok:
            bad.append((i, c, float(t)))
    return bad


def row_limit(spec, row, dtype):
    """Forward limit of a row holding +-inf: exact rows with +-1e40 and +-1e80 in their place,
    rounded to the dtype; None where the two differ (the limit depends on how entries grow)."""
    sts = od.stages(spec)
    outs = []
    for big in (mp.mpf(10) ** 40, mp.mpf(10) ** 80):
        z = [big * mp.sign(v) if mp.isinf(v) else mp.mpf(float(v)) for v in map(mp.mpf, row)]
        with mp.workdps(60):
            y = od.row_chain(sts, z)[0]
        outs.append([od.round_to(v, dtype) for v in y])
    if outs[0] != outs[1]:
        return None
    return outs[0]

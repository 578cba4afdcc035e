"""The Numba CPU backend: fused, vectorized loops generated from a plan.

Generated source (see ``Kernel.source``) holds:

* elementwise specs without parameters: scalar functions ``fwd``/``der``/``vjp`` inlined into
  flat loops over contiguous arrays (``*_flat``), and the same scalar function as a NumPy ufunc
  (``ufunc``) for ``out=``, broadcasting, Dask and xarray;
* every other spec: row kernels (``*_rows``) over a C-contiguous (rows, n) array with the row
  (or unit) axis last. Reductions of one nesting depth share one pass over the row; the VJP
  adds one pass for every adjoint sum and one writing dz. Row-wise forwards are also exposed as
  a gufunc ``(n)->(n)``.

Loops release the GIL and are run on chunks of rows by a small thread pool (``parallel.py``):
measured here, Numba's ``parallel=True``/``target='parallel'`` overheads cost more than they
give on 2 cores. Transcendentals come from ``vmath`` so the loops vectorize. The kernels the
frontend runs are compiled by ``wide.jit``: for this CPU at its full vector width (512 bits on
AVX-512 CPUs, where LLVM would pick 256), without touching other Numba code in the process.

Modules are written as real ``.py`` files in a cache directory and compiled with
``cache=True``, so a new process loads machine code instead of compiling (``cache.py``).
"""
from __future__ import annotations

import dataclasses
import re

import sympy as sp

from .emit import Emitter, Source
from .. import budget
from ..derive import (Plan, _unevaluated, dz_parts, rebuild, replace_nodes, split_adjoint,
                      times_g)
from ..ir import RowMax, RowShift, RowSum, n, z
from ..stable import FirstMax, Pick, Primitive, at_inf, shifted

#: fast-math flags for generated row kernels: reassociation lets LLVM vectorize the row sums;
#: contraction gives FMAs. Never nnan/ninf: NaN and inf keep their meaning.
ROW_FLAGS = "{'reassoc', 'contract'}"
FLAT_FLAGS = "{'contract'}"


def jit_line(flags: str, extra: str = "nogil=True", jit: str = "wide.jit") -> str:
    """A generated function's decorator. Every one is cached, with NumPy's error model and no
    C-callable wrapper: nothing passes a kernel as a first-class function value into other
    jitted code, and Numba built one per function."""
    extra = f"{extra}, " if extra else ""
    return f"@{jit}(fastmath={flags}, cache=True, {extra}error_model='numpy', no_cfunc_wrapper=True)"


#: ``b ** n`` for a name ``b`` and 5 <= n <= this is written as multiplications (binary powering,
#: Numba's own algorithm for an integer power): Numba compiles its integer power as a function of
#: its own, 0.1 s on a kernel's first use in a process
MAX_SQUARINGS_POWER = 64


def squarings(b: str, n: int) -> str:
    """``b ** n`` (n >= 1) as products of squares, the binary powering Numba's ``int_power``
    does: the repeated squares are the same text, which ``shared.share`` computes once."""
    if n == 1:
        return b
    half = squarings(b, n // 2)
    square = f"({half} * {half})"
    return f"({square} * {b})" if n % 2 else square


class NumbaEmitter(Emitter):
    target = "numba"
    runtime = "vm"
    keep_inline = (n,)
    functions = {sp.exp: "vm.exp", sp.log: "vm.log", sp.tanh: "vm.tanh", sp.sech: "vm.sech",
                 sp.sinh: "np.sinh", sp.cosh: "np.cosh", sp.sin: "np.sin", sp.cos: "np.cos",
                 sp.tan: "np.tan", sp.atan: "np.arctan", sp.asinh: "np.arcsinh",
                 sp.erf: "vm.erf", sp.erfc: "vm.erfc", sp.Abs: "abs", sp.floor: "np.floor", sp.ceiling: "np.ceil"}

    def __init__(self, names, anchor: str):
        super().__init__(names)
        self.anchor = anchor          # a variable of the kernel's float type, for typed literals
        self.constants: dict[str, str] = {}

    def after_cse(self, lets, reduced, fresh):
        """Every expensive call inside a branch computed before the branches: Numba turns a
        conditional expression into control flow, which LLVM leaves as a branch (no
        vectorization) when the branch holds a long inlined function. Computed unconditionally
        (vmath's functions have no traps or side effects), only a select remains: gelu 15.0 ->
        6.3 ns/element. An unused value is discarded by the select, as before.

        Done after CSE, on its assignments in order: a call is hoisted in terms of the common
        subexpressions before it, and a call inside another's branches first. (Hoisted before
        CSE, each call was printed whole: tanh+softplus+sigmoid+relu+elu+selu's forward held
        sigmoid(softplus(tanh(z))) 33 times, and Numba took 8.8 s to compile it.)"""
        hoisted: dict = {}  # call -> its symbol, a call inside another's branches first

        def collect(value):
            calls = []  # atoms() is a set: sorted, so that every process writes the same source
            for guarded in sorted(value.atoms(at_inf), key=sp.default_sort_key):
                calls += _outer_calls(guarded.args[0])  # the limits at ±inf: a select too
            for pw in sorted(value.atoms(sp.Piecewise), key=sp.default_sort_key):
                for branch, _ in pw.args:
                    calls += _outer_calls(branch)
            for call in calls:  # (calls inside a hoisted call are found by atoms() too)
                if call not in hoisted:
                    hoisted[call] = next(fresh)

        for _, value in lets:
            collect(value)
        for e in reduced:
            collect(e)
        if not hoisted:
            return lets, reduced
        # each call's value in terms of the calls hoisted inside it; computed just before the
        # first assignment that uses it (its arguments use only assignments before that one),
        # and replaced everywhere, in branches or not
        rank = {sym: k for k, sym in enumerate(hoisted.values())}
        # (replace_nodes, not xreplace: xreplace rebuilds a Piecewise through its folding
        # constructor, which simplifies conditions for seconds or fails inside SymPy)
        memo: dict = {}
        body = {sym: _unevaluated(call, tuple(replace_nodes(a, hoisted, memo) for a in call.args))
                for call, sym in hoisted.items()}
        out, done = [], set()

        def emit_used(value):
            for sym in sorted(value.free_symbols & rank.keys() - done, key=rank.__getitem__):
                if sym not in done:
                    done.add(sym)
                    emit_used(body[sym])
                    out.append((sym, body[sym]))
            return value

        for sym, value in lets:
            out.append((sym, emit_used(replace_nodes(value, hoisted, memo))))
        return out, [emit_used(replace_nodes(e, hoisted, memo)) for e in reduced]

    def number(self, e) -> str:
        if e is sp.nan:
            value = "math.nan"
        elif e in (sp.oo, -sp.oo):
            value = "math.inf" if e is sp.oo else "-math.inf"
        else:
            value = repr(float(e))
            if value in ("inf", "-inf"):  # an exact number past float64's range
                value = "math.inf" if value == "inf" else "-math.inf"
        if value not in self.constants:
            self.constants[value] = f"c{len(self.constants)}"
        return self.constants[value]

    def prologue(self) -> list[str]:
        """Typed literals: float32 kernels never promote to float64."""
        return [f"{name} = vm.lit({self.anchor}, {value})" for value, name in self.constants.items()]

    def _Pow(self, e):
        if e.exp.is_Integer and 2 <= int(e.exp) <= 4:  # multiply, evaluating the base once
            if isinstance(e.base, sp.Symbol):
                b = self(e.base)
                return "(" + " * ".join([b] * int(e.exp)) + ")"
            return f"vm.ipow{int(e.exp)}({self(e.base)})"
        if e.exp.is_Integer and 5 <= int(e.exp) <= MAX_SQUARINGS_POWER and \
                isinstance(e.base, sp.Symbol):
            return squarings(self(e.base), int(e.exp))
        return super()._Pow(e)

    def sqrt(self, x):
        return f"np.sqrt({x})"

    def logical(self, op, parts):
        return "(" + (" & " if op == "and" else " | ").join(parts) + ")"

    def logical_not(self, x):
        return f"(not {x})"

    def select(self, branches, default, nan_operands):
        text = default
        for value, cond in reversed(branches):
            text = self.where(cond, value, text)
        for op in nan_operands:
            text = self.where(f"({op} != {op})", op, text)
        return text

    def where(self, cond: str, a: str, b: str) -> str:
        """``a if cond else b`` without a branch (vmath.where: both are evaluated)."""
        return f"vm.where({cond}, {a}, {b})"


#: the header's import of the math library (``bare_names`` adds each name used after it)
_VM_IMPORT = "from actdsl.backends import vmath as vm, wide\n"
HEADER = '''\
# Generated by actdsl: do not edit. Key {key}.
# Uses {vmath} (named here so that a new vmath gives new files: Numba's cache does not follow
# dependencies, and machine code compiled against an old vmath would refer to it).
# Compiled allowing {checks} runtime alias checks a loop (ALIAS_CHECKS: its machine code differs).
import math

import numpy as np
from numba import njit, vectorize, guvectorize

''' + _VM_IMPORT


def _param_names(plan: Plan) -> list[str]:
    return [f"p{i}" for i in range(len(plan.params))]


def _scalar_body(expr: sp.Expr, plan: Plan, nan_input: bool = False) -> tuple[list[str], str]:
    """(statements, result): ``expr`` of one element ``z`` (and ``g``)."""
    em = NumbaEmitter({z: "z", n: "nf", sp.Symbol("g"): "g",
                       **{p: f"p{i}" for i, p in enumerate(plan.params)}}, anchor="z")
    lines, (out,) = em.block([expr])
    if nan_input:
        out = f"(z if z != z else {out})"
    return [*em.prologue(), *lines], out


def _scalar_function(src: Source, name: str, args: list[str], body: tuple[list[str], str]):
    """A scalar function: the body of the ufunc."""
    src(jit_line(FLAT_FLAGS, "forceinline=True"),
        f"def {name}({', '.join(args)}):")
    src.indent()
    src(*body[0], f"return {body[1]}")
    src.dedent()
    src("")


def _flat_loop(src: Source, name: str, body: tuple[list[str], str], inputs: list[str]):
    """The loop over the flattened arrays, with the scalar body written into it, not called: a
    called function is one more for Numba to type, lower and cache (about 50 ms of each
    elementwise kernel's cold compile); LLVM inlined it anyway."""
    src(jit_line(FLAT_FLAGS),
        f"def {name}({', '.join(inputs)}, out):")
    src.indent()
    src("for i in range(out.size):")
    src.indent()
    src(*[f"{a} = {x}[i]" for a, x in zip(["z", "g"], inputs)])
    src(*body[0], f"out[i] = {body[1]}")
    src.dedent()
    src.dedent()
    src("")


def generate(plan: Plan, key: str) -> str:
    src = Source()
    from . import vmath
    src(HEADER.format(key=key, vmath=vmath.MODULES, checks=ALIAS_CHECKS))
    params = _param_names(plan)
    if not plan.rowwise and not plan.params:
        forward = _scalar_body(plan.out, plan)
        _scalar_function(src, "fwd", ["z"], forward)
        _flat_loop(src, "forward_flat", forward, ["x"])
        _flat_loop(src, "derivative_flat", _scalar_body(plan.dout_dz, plan, nan_input=True), ["x"])
        _flat_loop(src, "vjp_flat", _scalar_body(times_g(plan.dout_dz, sp.Symbol("g")), plan,
                                                 nan_input=True), ["x", "gy"])
        src("def make_ufunc():",
            "    return vectorize(['float32(float32)', 'float64(float64)'], cache=True)(fwd.py_func)",
            "")
    else:
        _rows_forward(src, plan, params)
        _rows_vjp(src, plan, params)
        if not plan.rowwise:
            _rows_derivative(src, plan, params)
        layout = ",".join(["(n)"] * (1 + len(params))) + "->(n)"
        sigs = [f"void({', '.join([f'{t}[:]'] * (2 + len(params)))})" for t in ("float32", "float64")]
        args = ", ".join(["x", *params])
        src("def make_gufunc():",
            f"    @guvectorize({sigs!r}, {layout!r}, cache=True)",
            f"    def gu({args}, y):",
            f"        forward_row({args}, y, np.empty(({len(forward_storage(plan))}, x.shape[0]), x.dtype))",
            "    return gu",
            "")
    return bare_names(src.text())


_VM = re.compile(r"(?<![\w.])vm\.([A-Za-z_]\w*)")


def bare_names(source: str) -> str:
    """``source`` with each ``vm.name`` as a global ``vm_name``, imported by the header. Numba
    types and lowers ``vm.name`` as an attribute of a module at every use, then the call: about
    a quarter of the front end's time per call (400 statements of two calls each: 2.2 against
    1.7 s), and a kernel's body is mostly calls (selects, literals, the math functions). Seven
    of benchmarks/slow_specs.py's slowest compositions: 5.00 against 4.70 CPU seconds."""
    names = sorted(set(_VM.findall(source)))
    if not names:
        return source
    imports = "".join(f"from actdsl.backends.vmath import {name} as vm_{name}\n" for name in names)
    return _VM.sub(r"vm_\1", source).replace(_VM_IMPORT, _VM_IMPORT + imports, 1)


#: functions worth computing once per element and keeping for later passes over the row
EXPENSIVE = (sp.exp, sp.log, sp.tanh, sp.sech, sp.erf, sp.erfc, sp.sinh, sp.cosh)


#: primitives that are selects, a subtraction or a division: cheaper to recompute than to store
_CHEAP = ("shifted", "attop", "times", "scaled", "at_inf", "FirstMax", "Pick")


def _expensive(e) -> bool:
    from ..stable import Primitive
    return isinstance(e, EXPENSIVE) or (isinstance(e, Primitive) and e.func.__name__ not in _CHEAP)


def _outer_calls(expr: sp.Expr, constants: frozenset = frozenset()) -> list[sp.Expr]:
    """Outermost expensive calls in ``expr`` that vary along the row (an exp inside a sigmoid
    is not counted apart; a call of row constants only, like sqrt of a variance, is left to
    LLVM to hoist), each once, in the order a depth-first walk meets them.

    Each distinct subexpression is visited once: a derivative shares subexpressions, and
    walking it as a tree (or asking SymPy's uncached ``free_symbols`` at every call) took
    minutes on a long composition's Jacobian."""
    found, seen = [], set()
    varies: dict = {}
    stack = [expr]
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        if _expensive(e):
            if budget.fold(e, lambda u, sub: u not in constants if isinstance(u, sp.Symbol)
                           else any(sub), varies):
                found.append(e)
            continue
        stack.extend(reversed(e.args))
    return found


class Storage:
    """Per-element values that several passes over a row need: the first pass that needs one
    computes it and stores it in a scratch row ``T[k]``; later passes load it. Rows are short
    (in cache), so a load is far cheaper than recomputing a tanh or an exp.

    A call inside a *reducing* pass (one that accumulates a float64 sum or a maximum) is stored
    even if no other pass needs it, and computed in a loop of its own before the reduction loop
    (``precompute``): LLVM vectorizes a loop at the width its widest type allows, so a tanh in a
    loop that also adds into a float64 runs at half width (4 floats, not 8), and a maximum that
    keeps its argmax does not vectorize at all. Measured here on a 4096-float row: tanh and a
    float64 sum in one loop 3.7 ns/element, in two loops 1.9."""

    def __init__(self, plan: Plan, passes: list[list[sp.Expr]], reducing: set[int]):
        constants = frozenset([n, *(r.symbol for r in plan.reductions)])
        first, uses, occurrences = {}, {}, []
        for p, exprs in enumerate(passes):
            for e in exprs:
                for call in _outer_calls(e, constants):
                    first.setdefault(call, p)
                    uses.setdefault(call, set()).add(p)
                    occurrences.append((p, call))
        stored = [c for c in first if len(uses[c]) > 1 or first[c] in reducing]
        kept = set(stored)
        # a call inside outermost calls that are computed apart (in two passes, or one of them
        # stored) is computed once more for each: mish+softmax's VJP computed softplus(z) inside
        # the stored tanh and again inside sech. Such a call is stored too. (Within one pass, and
        # where no holder is stored, CSE already shares it.)
        holders, passes_of, earliest = {}, {}, {}
        for p, call in occurrences:
            if call in kept and p != first[call]:
                continue  # loaded there
            stack = [call]
            while stack:
                c = stack.pop()
                if c is not call and c in kept:
                    continue  # loaded
                holders.setdefault(c, set()).add(call)
                passes_of.setdefault(c, set()).add(p)
                earliest.setdefault(c, p)
                stack += [inner for a in c.args for inner in _outer_calls(a, constants)]
        stored += [c for c, hs in holders.items() if c not in kept and len(hs) > 1
                   and (len(passes_of[c]) > 1 or kept & hs)]
        self.index = {c: k for k, c in enumerate(stored)}
        self.first = {c: first[c] if c in kept else earliest[c] for c in stored}
        # a stored call is written with the stored calls inside it as loads (_body), so each of
        # those must be computed by the same pass at the latest: tanhshrink(z), first met as an
        # outermost call in the VJP's sums, is also inside calls the max pass stores
        # (tanhshrink+celu+tanhshrink+softmax: a load of a value not computed yet)
        # (largest first: every holder of a call is larger than it, so is settled before it)
        for c in sorted(stored, key=_size, reverse=True):
            for d in stored:
                if d is not c and c.has(d):
                    self.first[d] = min(self.first[d], self.first[c])
        self.reducing = set(reducing)
        self.symbol = {c: sp.Symbol(f"t{k}", real=True) for c, k in self.index.items()}

    def __len__(self):
        return len(self.index)

    def replace(self, exprs):
        memo: dict = {}  # (not xreplace: see after_cse)
        return [replace_nodes(e, self.symbol, memo) for e in exprs]

    def precompute(self, src: Source, em: NumbaEmitter, p: int, params: list[str]):
        """A loop storing the calls that reducing pass ``p`` computes first (none if no call)."""
        calls = [c for c, k in self.index.items() if self.first[c] == p and p in self.reducing]
        if not calls:
            return
        _open_loop(src, params)
        calls = sorted(calls, key=_size)
        bodies = [self._body(c) for c in calls]
        src(*self._loads(em, p, bodies, calls))
        for call, body in zip(calls, bodies):  # smaller first: a call inside another is ready
            lines, (text,) = em.block([body], prefix="c")
            k = self.index[call]
            src(*lines, f"t{k} = {text}", f"T[{k}, j] = t{k}")
            em.names[self.symbol[call]] = f"t{k}"
        src.dedent()

    def _body(self, call):
        """``call`` with the stored calls inside it as their symbols: a value stored by one pass
        is loaded by the next, never computed again (once elu+log_softmax's exp pass computed
        expm1(z) a second time where the max pass had stored it)."""
        inner = {c: sym for c, sym in self.symbol.items() if c != call}
        args = tuple(replace_nodes(a, inner) for a in call.args)
        return call if args == call.args else _unevaluated(call, args)

    def _loads(self, em: NumbaEmitter, p: int, exprs, computed=()) -> list[str]:
        """Loads of the values stored before pass ``p``'s loop that ``exprs`` use."""
        needed = set().union(*[e.free_symbols for e in exprs]) if exprs else set()
        lines = []
        for call, k in self.index.items():
            sym = self.symbol[call]
            em.names[sym] = f"t{k}"
            ready = self.first[call] < p or (self.first[call] == p and p in self.reducing
                                              and call not in computed)
            if ready and sym in needed:
                lines.append(f"t{k} = T[{k}, j]")
        return lines

    def loop_head(self, em: NumbaEmitter, p: int, exprs) -> list[str]:
        """Lines at the top of pass ``p``'s loop body: compute-and-store or load."""
        computes = sorted((c for c in self.index if self.first[c] == p and p not in self.reducing),
                          key=_size)
        bodies = [self._body(c) for c in computes]
        lines = self._loads(em, p, list(exprs) + bodies)
        for call, body in zip(computes, bodies):  # smaller first: a call inside another is ready
            k = self.index[call]
            lines += [f"t{k} = {em(body)}", f"T[{k}, j] = t{k}"]
        return lines


def _size(e: sp.Expr) -> int:
    return sum(1 for _ in sp.preorder_traversal(e))


def _row_prologue(src: Source, em: NumbaEmitter, at: int):
    """Typed constants go before the row loop; ``at`` is where to insert them."""
    src.lines[at:at] = ["    " + line for line in em.prologue()]


def needed_reductions(plan: Plan, exprs) -> set:
    """The reductions ``exprs`` use, with everything those are computed from."""
    by_symbol = {r.symbol: r for r in plan.reductions}
    todo = set().union(*[e.free_symbols for e in exprs]) & set(by_symbol)
    needed = set()
    while todo:
        s = todo.pop()
        if s not in needed:
            needed.add(s)
            todo |= by_symbol[s].body.free_symbols & set(by_symbol)
    return needed


def _open_loop(src: Source, params: list[str], g: bool = False):
    """``for j`` over the row, loading z (and g, and the parameters) of element j; left open."""
    src("for j in range(nn):")
    src.indent()
    src("z = x[j]", *(["g = gy[j]"] if g else []), *[f"{q} = P[{q[1:]}, j]" for q in params])


def _row_loop(src: Source, em: NumbaEmitter, store: "Storage | None", p: int, params: list[str],
              exprs, prefix: str = "f", g: bool = False) -> list[str]:
    """Opens pass ``p``'s loop over the row (left open: the caller writes the rest of its body)
    and returns the printed ``exprs``, stored values loaded."""
    _open_loop(src, params, g)
    if store is not None:
        exprs = store.replace(exprs)
        src(*store.loop_head(em, p, exprs))
    lines, texts = em.block(exprs, prefix=prefix)
    src(*lines)
    return texts


def _reduction_passes(src: Source, em: NumbaEmitter, plan: Plan, params: list[str],
                      store: "Storage", only: set | None = None, argmax: bool = False):
    """One loop per depth; sums accumulate in float64, maxima keep NaN. ``only``: the
    reductions to compute (a VJP may need none of the forward's). Maxima are integer-key
    reductions, which LLVM vectorizes (a float maximum that keeps NaN does not); with
    ``argmax`` a row maximum also gets its first argmax (a VJP routes gradients through it),
    found by a search that stops there."""
    depths = [[r for r in g if only is None or r.symbol in only] for g in plan.depths]
    for p, group in enumerate(depths):
        if not group:
            continue
        for r in group:
            k = r.symbol.name
            if r.kind is RowSum:
                src(f"a_{k} = 0.0")
            else:
                src(f"m_{k} = vm.lowest_key(nf)", f"nan_{k} = False")
        store.precompute(src, em, p, params)
        bodies = _row_loop(src, em, store, p, params, [r.body for r in group])
        for r, body in zip(group, bodies):
            k = r.symbol.name
            if r.kind is RowSum:
                src(f"a_{k} += {body}")
            else:
                src(f"v = {body}", f"m_{k} = vm.max_key(m_{k}, v)", f"nan_{k} |= v != v")
        src.dedent()
        for r in group:
            k = r.symbol.name
            if r.kind is RowSum:
                src(f"{k} = vm.lit(nf, a_{k})")
            else:  # NaN if the row has one, as NumPy's max gives
                src(f"{k} = vm.lit(nf, math.nan) if nan_{k} else vm.from_order_key(nf, m_{k})")
        searched = [r for r in group if argmax and r.kind is RowMax]
        if searched:  # the first element equal to the maximum (the first NaN if it is NaN)
            src(*[f"i_{r.symbol.name} = -1" for r in searched])
            bodies = _row_loop(src, em, store, p, params, [r.body for r in searched])
            for r, body in zip(searched, bodies):
                k = r.symbol.name
                src(f"v = {body}", f"if (i_{k} < 0) & ((v == {k}) | ((v != v) & ({k} != {k}))):",
                    f"    i_{k} = j")
            src(f"if {' & '.join(f'(i_{r.symbol.name} >= 0)' for r in searched)}:", "    break")
            src.dedent()


def _names(plan: Plan) -> dict:
    names = {z: "z", n: "nf", sp.Symbol("g"): "g"}
    names.update({p: f"p{i}" for i, p in enumerate(plan.params)})
    names.update({r.symbol: r.symbol.name for r in plan.reductions})
    return names


def _rows_header(src: Source, name: str, arrays: list[str], plan: Plan, params: list[str],
                 scratch: bool = False):
    src(jit_line(ROW_FLAGS),
        f"def {name}({', '.join(arrays + (['P'] if params else []) + (['T'] if scratch else []))}):")
    src.indent()
    src("nn = X.shape[1]", "nf = vm.lit(X[0, 0], nn)")


def forward_storage(plan: Plan) -> Storage:
    return Storage(plan, [[r.body for r in g] for g in plan.depths] + [[plan.out]],
                   reducing=set(range(len(plan.depths))))


def _vjp_sums(plan: Plan):
    grad = plan.grad_reductions()
    kind = {r.symbol: r.kind for r in grad}
    sums = [(f"A_{r.symbol.name}", sp.Symbol("g") * split_adjoint(plan, r.symbol)[1])
            for r in grad]
    sums += [(f"S_{m.name}_{k.name}", e) for (m, k), e in plan.dbody_dr.items() if kind[m] is RowSum]
    return sums


def _vjp_final(plan: Plan, skip=frozenset()):
    """The per-element expressions of the pass writing dz: their shared factor (``split_common``),
    ∂F/∂z and each ∂f_k/∂z without it, then the parameter terms (0 for the columns in ``skip``,
    which the caller accumulates otherwise)."""
    common, first, parts = dz_parts(plan)
    # g ∂F/∂z as one product, printed as the adjoint sums print g ∂F/∂r (g / (σ + ε), not
    # g * (1 / (σ + ε))), so that the two round alike
    exprs = [common, first, *parts]
    exprs += [sp.S.Zero if i in skip else plan.dout_dp[p] for i, p in enumerate(plan.params)]
    keys = [(k, p) for (k, p) in plan.dbody_dp]
    exprs += [plan.dbody_dp[kp] for kp in keys]
    return exprs, keys


def _vjp_needed(plan: Plan) -> set:
    grad = plan.grad_reductions()
    at_argmax = [r.symbol for r in grad if r.kind is RowMax]  # their argmax routes gradients
    rows = [split_adjoint(plan, r.symbol)[0] for r in grad]
    return needed_reductions(plan, [e for _, e in _vjp_sums(plan)] + _vjp_final(plan)[0]
                             + list(plan.dbody_dr.values()) + at_argmax + rows)


def lambda_lines(plan: Plan, em: NumbaEmitter) -> list[str]:
    """λ_k = row_k · A_k / n^o + Σ_m λ_m S_mk, outermost reduction first (DESIGN.md, "Exact
    derivatives"; ``split_adjoint``: A_k holds Σ g · each_k, the row's factors come after)."""
    lines = []
    for r in reversed(plan.grad_reductions()):
        row, _, over = split_adjoint(plan, r.symbol)
        name = f"A_{r.symbol.name}"
        if over:
            lines.append(f"{name} = {name}" + " / nf" * over)
        mean = sp.Symbol(name, real=True)
        em.names[mean] = name
        more, (first,) = em.block([row * mean], prefix="lam")
        lines += more
        terms = [first] + [f"lam_{m.name} * S_{m.name}_{k.name}"
                           for (m, k) in plan.dbody_dr if k == r.symbol]
        lines.append(f"lam_{r.symbol.name} = " + " + ".join(terms))
    return lines


def final_terms(plan: Plan, texts: list[str], keys, zero: str) -> tuple[str, list[str]]:
    """dz_j and each parameter's gradient term at element j, from the printed ``_vjp_final``
    expressions; a row maximum's terms count only at its argmax (``zero`` elsewhere)."""
    grad = plan.grad_reductions()
    kind = {r.symbol: r.kind for r in grad}
    common, texts = texts[0], texts[1:]
    fz, bz = texts[0], texts[1:1 + len(grad)]
    fp = texts[1 + len(grad):1 + len(grad) + len(plan.params)]
    bp = dict(zip(keys, texts[1 + len(grad) + len(plan.params):]))

    def at_max(sym, text):
        return f"({text} if j == i_{sym.name} else {zero})" if kind[sym] is RowMax else text

    dz = [fz] + [f"lam_{r.symbol.name} * {at_max(r.symbol, t)}" for r, t in zip(grad, bz)]
    dz = " + ".join(dz)
    shared, _, _ = dz_parts(plan)
    dz = dz if shared == 1 else f"{common} * ({dz})"
    dps = [" + ".join([f"g * {fp[i]}"] + [f"lam_{k.name} * {at_max(k, bp[(k, q)])}"
                                          for (k, q) in keys if q == p])
           for i, p in enumerate(plan.params)]
    return dz, dps


#: the most parameter gradients accumulated in the loop that writes dz; past it they go to loops
#: of their own (in that loop, 10 accumulations (maxout:5) left it scalar)
INLINE_GRADIENTS = 8


def _picks_only(em: NumbaEmitter, dps: list[str]) -> list[str]:
    """The per-element temporaries of the gradient texts ``dps``, where every one is a scanned
    index or NaN carry (floats: maxout's gradients, one-hot picks); [] otherwise, or where there
    are few gradients (their accumulations then vectorize with the scan)."""
    if len(dps) <= INLINE_GRADIENTS:
        return []
    names = sorted(set(re.findall(r"\b_[a-z]+\d+\b", " ".join(dps))))
    scanned = {em.names[i] for i in em._scanned} | {c for _, _, c in em._scanned.values()}
    return names if names and set(names) <= scanned else []


def _one_hot(e: sp.Expr):
    """``(F, q, W · V, k)`` where ``e`` is ``W · Pick(F, 0, .., V, .., 0)``, V at q of k values
    and F a FirstMax (maxout's gradient of one piece's slope or intercept); else None."""
    def hot(f):
        return isinstance(f, Pick) and isinstance(f.args[0], FirstMax) \
            and sum(v != 0 for v in f.args[1:]) == 1
    factors = e.args if isinstance(e, sp.Mul) else (e,)
    picks = [f for f in factors if hot(f)]
    if len(picks) != 1:
        return None
    pick = picks[0]
    weight = sp.Mul(*[f for f in factors if f is not pick])
    values = pick.args[1:]
    q = next(i for i, v in enumerate(values) if v != 0)
    return pick.args[0], q, weight * values[q], len(values)


def one_hot_families(plan: Plan) -> list[tuple[int, int, sp.Expr, sp.Expr]]:
    """Runs of parameter columns ``base .. base + k - 1`` whose gradients are one value V picked
    by one index F (maxout:k's slopes: g·u at the piece taken, 0 at the others), as
    ``(base, k, F, V)``: accumulated with one scatter per element, DP[base + F, j] += g·V, where
    k accumulations each cost a line of code and a pass over the accumulator (maxout:64's VJP:
    128 of them, 7 s of Numba compile and 0.6 s per 2048x1024 call). Columns with row-reduction
    terms of their own (``dbody_dp``) are left out."""
    own = {p for _, p in plan.dbody_dp}
    found = [None if p in own else _one_hot(plan.dout_dp[p]) for p in plan.params]
    families, i = [], 0
    while i < len(found):
        hit = found[i]
        if hit is not None and hit[1] == 0 and i + hit[3] <= len(found):
            first, _, value, k = hit
            if all(found[i + q] is not None and found[i + q][:3] == (first, q, value)
                   and found[i + q][3] == k for q in range(k)):
                families.append((i, k, first, value))
                i += k
                continue
        i += 1
    return families


def vjp_storage(plan: Plan) -> Storage:
    needed = _vjp_needed(plan)
    return Storage(plan, [[r.body for r in g if r.symbol in needed] for g in plan.depths]
                   + [[e for _, e in _vjp_sums(plan)], _vjp_final(plan)[0]],
                   reducing=set(range(len(plan.depths) + 1)))


def _rows_forward(src: Source, plan: Plan, params: list[str]):
    """``forward_rows`` (the batch) and ``forward_row`` (one row, for the gufunc), from one row
    body written twice: a batch kernel calling an inlined row function cost a second compile
    of the same code (0.2 to 0.4 s of a cold compile), and the gufunc is rarely used."""
    em = NumbaEmitter(_names(plan), anchor="nf")
    store = forward_storage(plan)
    body = Source()
    _reduction_passes(body, em, plan, params, store)
    (out,) = _row_loop(body, em, store, len(plan.depths), params, [plan.out], prefix="t")
    body(f"y[j] = {out}")
    constants = em.prologue()
    src(jit_line(ROW_FLAGS),
        f"def forward_rows(X, Y{', P' if params else ''}, T):")
    src.indent()
    src("nn = X.shape[1]", "nf = vm.lit(X[0, 0], nn)", *constants, "for i in range(X.shape[0]):")
    src.indent()
    src("x = X[i]", "y = Y[i]", *body.lines)
    src.dedent()
    src.dedent()
    src("")
    # the gufunc's row takes its parameters as the gufunc does, a column each: its loads
    # P[k, j] read Pk[j] (an array made in a gufunc broke Numba's later gufunc compiles: below)
    cols = "".join(f", P{p[1:]}" for p in params)
    src(jit_line(ROW_FLAGS, "", jit="njit"),
        f"def forward_row(x{cols}, y, T):")
    src.indent()
    src("nn = x.shape[0]", "nf = vm.lit(x[0], nn)", *constants,
        *[re.sub(r"\bP\[(\d+), ", r"P\1[", line) for line in body.lines])
    src.dedent()
    src("")


def _rows_derivative(src: Source, plan: Plan, params: list[str]):
    em = NumbaEmitter(_names(plan), anchor="nf")
    _rows_header(src, "derivative_rows", ["X", "Y"], plan, params)
    at = len(src.lines)
    src("for i in range(X.shape[0]):")
    src.indent()
    src("x = X[i]", "y = Y[i]")
    (d,) = _row_loop(src, em, None, 0, params, [plan.dout_dz], prefix="t")
    src(f"y[j] = z if z != z else {d}")
    src.dedent()
    src.dedent()
    _row_prologue(src, em, at)
    src.dedent()
    src("")


def _rows_vjp(src: Source, plan: Plan, params: list[str]):
    """dz and parameter gradients; DP is a float64 (parameter columns, n) accumulator owned by
    this call, P the parameters, a column per row (packed: maxout:64's 128 columns as arguments
    and accumulators of their own took the VJP's compile from 7 to 23 s)."""
    em = NumbaEmitter(_names(plan), anchor="nf")
    _rows_header(src, "vjp_rows", ["X", "GY", "DX", *(["DP"] if params else [])], plan, params,
                 scratch=True)
    at = len(src.lines)
    store = vjp_storage(plan)
    D = len(plan.depths)
    src("for i in range(X.shape[0]):")
    src.indent()
    src("x = X[i]", "gy = GY[i]", "dx = DX[i]")
    _reduction_passes(src, em, plan, params, store, only=_vjp_needed(plan), argmax=True)
    grad = plan.grad_reductions()
    kind = {r.symbol: r.kind for r in grad}
    # adjoint sums over the row (RowMax terms are taken at the argmax instead)
    sums = _vjp_sums(plan)
    if sums:
        for name, _ in sums:
            src(f"{name} = 0.0")
        store.precompute(src, em, D, params)
        texts = _row_loop(src, em, store, D, params, [e for _, e in sums], prefix="s", g=True)
        src(*[f"{name} += {t}" for (name, _), t in zip(sums, texts)])
        src.dedent()
        src(*[f"{name} = vm.lit(nf, {name})" for name, _ in sums])
    for (m, k), e in plan.dbody_dr.items():
        if kind[m] is RowMax:  # ∂f_m/∂r_k at the argmax of f_m
            src(f"z = x[i_{m.name}]", *[f"{p} = P[{p[1:]}, i_{m.name}]" for p in params])
            lines, (t,) = em.block([e], prefix="x")
            src(*lines, f"S_{m.name}_{k.name} = {t}")
    src(*lambda_lines(plan, em))
    # the pass writing dz and accumulating parameter gradients; one-hot families print their
    # index and value only (each family's columns as 0 here, never accumulated from these texts)
    # (a few accumulations vectorize with the scan, where a scatter loop is scalar: maxout:3's
    # VJP took 6-12 ms with scatters, 4-6 without; from maxout:5 on they are accumulated apart)
    families = one_hot_families(plan) if len(plan.params) > INLINE_GRADIENTS else []
    scattered = {base + q for base, k, _, _ in families for q in range(k)}
    exprs, keys = _vjp_final(plan, skip=scattered)
    texts = _row_loop(src, em, store, D + 1, params,
                      exprs + [e for _, _, F, V in families for e in (F, V)], prefix="d", g=True)
    texts, picked = texts[:len(exprs)], texts[len(exprs):]
    dz, dps = final_terms(plan, texts, keys, zero="vm.lit(nf, 0.0)")
    src(f"dzj = {dz}", "dx[j] = z if z != z else dzj")
    carries = {em.names[i]: c for i, (_, _, c) in em._scanned.items()}
    scatter = [(base, k, picked[2 * f], carries[picked[2 * f]], picked[2 * f + 1])
               for f, (base, k, _, _) in enumerate(families)]
    rest = [i for i in range(len(dps)) if i not in scattered]
    kept = _picks_only(em, [dps[i] for i in rest])
    # texts kept per element in scratch rows, each once (the families share an index); z and
    # constants are read where they are (a third row stored left maxout:16's scan scalar)
    direct = {**{c: c for c in em.constants.values()}, "z": "x[j]"}
    stored = list(kept)
    for _, _, index, carry, value in scatter:
        stored += [t for t in (index, carry, value) if t not in stored and t not in direct]
    # the rest of the gradients in loops of their own (kept), from the picks' indices (and NaN
    # carries) stored per element: in the loop that scans the pieces, 10 accumulations
    # (maxout:5) or more left it scalar (54 ms where maxout:4 took 7, 2048x1024 float32). Stored
    # in rows of the scratch T past the storage's (SLOTS of them, read by the Runner): an
    # np.empty in a CPU kernel made Numba's later gufunc compiles of np.empty fail ("No
    # definition for lowering _ol_array_allocate", the overload's lowering registered for one
    # target context only)
    src(*[f"IDX{k}[j] = {text}" for k, text in enumerate(stored)])
    if not kept:
        src(*[f"DP[{i}, j] += {dps[i]}" for i in rest])
    src.dedent()
    src.lines[at:at] = ["    " + f"IDX{k} = T[{len(store) + k}]" for k in range(len(stored))]
    for first in range(0, len(rest) if kept else 0, 8):  # (16 in a loop: scalar, maxout:8)
        group = rest[first:first + 8]
        used = set(re.findall(r"\bp\d+\b", " ".join(dps[i] for i in group)))  # (maxout: none)
        _open_loop(src, [q for q in params if q in used], g=True)
        src(*[f"{name} = IDX{k}[j]" for k, name in enumerate(kept)])
        src(*[f"DP[{i}, j] += {dps[i]}" for i in group])
        src.dedent()
    if scatter:
        # one scatter per family and element (in a loop of their own: LLVM leaves it scalar); a
        # NaN maximum (its carry NaN) makes every gradient of the family NaN, as g·(pick + NaN) did
        load = lambda t: direct.get(t) or f"IDX{stored.index(t)}[j]"  # noqa: E731
        src("for j in range(nn):")
        src.indent()
        for base, k, index, carry, value in scatter:
            src(f"c = {load(carry)}", "if c != c:", f"    for q in range({k}):",
                f"        DP[{base} + q, j] += c", "else:",
                f"    DP[{base} + int({load(index)}), j] += gy[j] * {load(value)}")
        src.dedent()
    src.dedent()
    _row_prologue(src, em, at)
    src.dedent()
    src("", f"SLOTS = {len(stored)}  # scratch rows vjp_rows needs past its storage's", "")


# -- running the generated module -------------------------------------------------------------
import contextlib  # noqa: E402
import gc  # noqa: E402
import threading  # noqa: E402
import weakref  # noqa: E402

import numpy as np  # noqa: E402

from .. import cache, parallel  # noqa: E402

class _WhileAny:
    """A context manager whose first entry (of nested or concurrent uses) calls ``enter`` and
    whose last exit calls ``leave``: a setting held while any of actdsl's compiles runs."""

    def __init__(self, enter, leave):
        self._enter, self._leave = enter, leave
        self._users = 0
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                self._enter()
            self._users += 1

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._leave()


def _pause_collector():
    _pause_collector.was_enabled = gc.isenabled()
    gc.disable()


def _resume_collector():
    if _pause_collector.was_enabled:
        gc.enable()


#: Python's cyclic garbage collector paused while Numba compiles (and restored after, if it was
#: on): a compile allocates hundreds of thousands of objects, whose collections took about a
#: fifth of a cold compile (four specs in new processes: 1.94-2.04 s without, 2.31-2.60 s with).
_COLLECTOR_PAUSED = _WhileAny(_pause_collector, _resume_collector)


def collector_paused() -> _WhileAny:
    """The collector's pause (``_COLLECTOR_PAUSED``); nested and concurrent uses share one pause,
    the last to leave restores it."""
    return _COLLECTOR_PAUSED


#: runtime alias checks LLVM's loop vectorizer may emit for one loop while actdsl's kernels
#: compile (its ``-vectorize-memory-check-threshold``, 128 by default). Each parameter row a loop
#: reads is a pointer that may alias the rows it writes; past 128 checks the loop stays scalar
#: ("too many memory checks needed"): maxout:32's VJP (64 parameter rows) took 46.8 ms and
#: maxout:64's forward 49 ms, against 5.6 and 10.3 ms vectorized (512x1024 float32, one thread).
ALIAS_CHECKS = 1024
_LLVM_ALIAS_CHECKS = 128


def _set_alias_checks(value: int) -> None:
    import llvmlite.binding as llvm
    llvm.set_option("", f"-vectorize-memory-check-threshold={value}")


#: LLVM's option raised to ``ALIAS_CHECKS`` while actdsl's kernels compile, and put back to
#: LLVM's default after. The option is process-wide: a Numba function another thread compiles
#: meanwhile may get more runtime checks too, which only lets more of its loops vectorize (each
#: check falls back to the scalar loop where pointers overlap); nothing else in the user's
#: process changes.
_ALIAS_CHECKS_RAISED = _WhileAny(lambda: _set_alias_checks(ALIAS_CHECKS),
                                 lambda: _set_alias_checks(_LLVM_ALIAS_CHECKS))


@contextlib.contextmanager
def compiling(*modules):
    """Around anything that may compile actdsl's kernels (a first call, making a ufunc): the
    collector paused, the vectorizer's alias checks raised, the cache files checked and
    sealed."""
    with _COLLECTOR_PAUSED, _ALIAS_CHECKS_RAISED, cache.numba_compiling(*modules):
        yield


class Runner:
    """Calls the generated kernels. ``args`` is ``[n, *param_columns]`` as the frontend makes it:
    arrays with the row (unit) axis last, parameter columns of shape (units,) or scalars."""

    def __init__(self, module, plan: Plan):
        self.module = module
        self.plan = plan
        self.flat = not plan.rowwise and not plan.params
        self._ufunc = self._gufunc = None
        #: (kernel, dtype) -> its measured cost per element (parallel.Cost); a pair is here once
        #: the kernel is compiled for that dtype
        self._costs: dict = {}
        if not self.flat:
            self.forward_slots = len(forward_storage(plan))
            self.vjp_slots = len(vjp_storage(plan)) + module.SLOTS
        self._forward_kernel = module.forward_flat if self.flat else module.forward_rows
        self._vjp_kernel = module.vjp_flat if self.flat else module.vjp_rows

    @property
    def ufunc(self):
        """The forward pass as a NumPy ufunc (elementwise specs without learnable parameters)."""
        if not self.flat:
            return None
        if self._ufunc is None:
            with compiling(self.module):
                made = self.module.make_ufunc()
            self._ufunc = getattr(made, "ufunc", made)  # Numba wraps the np.ufunc in a DUFunc
        return self._ufunc

    @property
    def gufunc(self):
        """The forward pass as a gufunc ``(n),(n)...->(n)`` (specs with rows or parameters)."""
        if self.flat:
            return None
        if self._gufunc is None:
            with compiling(self.module):
                made = self.module.make_gufunc()
            self._gufunc = getattr(made, "ufunc", made)
        return self._gufunc

    # -- the fast path: arrays as they are ------------------------------------------------------
    def _fast_ok(self, x: np.ndarray, axis, kernel) -> bool:
        """Whether the rows (or units) ``kernel`` can run on ``x`` as it is: already compiled for
        its dtype (the first call compiles on the general path), C-contiguous, a non-empty array
        of one axis or more, that axis last (elementwise specs: :meth:`_flat_fast`)."""
        if not x.flags.c_contiguous or (kernel, x.dtype) not in self._costs:
            return False
        return x.ndim > 0 and x.size > 0 and type(axis) is int and (axis == -1 or axis == x.ndim - 1)

    @staticmethod
    def _fast_out(x: np.ndarray, out):
        """A new result like x, or ``out`` where it is one already (None: the general path
        checks it and says what is wrong)."""
        if out is None:
            return np.empty(x.shape, x.dtype)
        if type(out) is np.ndarray and out.shape == x.shape and out.dtype == x.dtype:
            flags = out.flags  # (a new object at each access)
            if flags.c_contiguous and flags.writeable:
                return out
        return None

    @staticmethod
    def _fast_columns(x: np.ndarray, params: dict, specs) -> list | None:
        """The kernels' parameters (:meth:`_columns`) where every parameter is an array of x's
        dtype and full shape ``(units, *shape)``; None otherwise (the general path checks,
        converts and broadcasts, and names what is wrong)."""
        if len(params) != len(specs):
            return None
        units, cols = x.shape[-1], [None]
        for p in specs:
            v = params.get(p.name)
            if type(v) is not np.ndarray or v.dtype != x.dtype or v.shape != (units, *p.shape):
                return None
            cols += list(v.T) if p.shape else [v]
        return Runner._columns(cols, units, x.dtype)

    def _fast_setup(self, x, axis, out, params, specs, kernel):
        """(parameter columns, output array) for a fast call, or (None, None) where the general
        path must decide."""
        if not self._fast_ok(x, axis, kernel):
            return None, None
        cols = self._fast_columns(x, params, specs) if specs or params else []
        res = None if cols is None else self._fast_out(x, out)
        return cols, res

    def fast_forward(self, x: np.ndarray, axis, out, params: dict, specs):
        """The forward of a float array as it is, or None where the general path must decide.
        ``specs``: the kernel's parameters (``Kernel.params``), ``params`` the values given.
        A (32, 128) float32 call spent most of its time in per-call work (checks, chunking,
        closures, the thread pool's bookkeeping), not in the kernel, and so did a (128, 512) one
        (25 µs of 33)."""
        kernel = self._forward_kernel
        if self.flat:  # (no parameters: any given are the general path's error to report)
            return None if params else self._flat_fast(kernel, x, (), out)
        cols, y = self._fast_setup(x, axis, out, params, specs, kernel)
        if y is None:
            return None
        n = x.shape[-1]
        X, Y = x.reshape(-1, n), y.reshape(-1, n)
        self._row_parts(kernel, X, lambda i, lo, hi, scratch: (X[lo:hi], Y[lo:hi], *cols, scratch),
                        self.forward_slots)
        return y

    def _flat_fast(self, kernel, x, inputs: tuple, out):
        """An elementwise spec without parameters in the fewest steps (each 0.1 µs counts on a
        (32, 128) array): ``kernel(x, *inputs, result)`` flat, or None (the general path)."""
        cost = self._costs.get((kernel, x.dtype))
        if cost is None or not x.flags.c_contiguous:
            return None
        y = np.empty(x.shape, x.dtype) if out is None else self._fast_out(x, out)
        if y is None:
            return None
        flat = (x.reshape(-1), *[a.reshape(-1) for a in inputs], y.reshape(-1))
        if x.size < cost.MEASURE_FROM:
            kernel(*flat)
        else:
            self._flat_parts(kernel, flat)
        return y

    def _flat_parts(self, kernel, arrays):
        """``kernel`` over 1-D arrays of one length, split by measured cost."""
        cost = self._costs[kernel, arrays[0].dtype]
        size = arrays[0].size
        if cost.alone(size):  # no slices, closures or pool (each µs counts in a training step)
            cost.call(kernel, arrays, size)
            return
        parallel.run(kernel, lambda i, lo, hi: [a[lo:hi] for a in arrays],
                     parallel.chunks(size, 1, cost.ns), cost)

    def _row_parts(self, kernel, X, args, slots):
        """``kernel`` over the rows of X, split by measured cost; ``args(i, lo, hi, scratch)``."""
        cost = self._costs[kernel, X.dtype]
        rows, n = X.shape
        if cost.alone(X.size) or rows < 2:
            cost.call(kernel, args(0, 0, rows, np.empty((slots, n), X.dtype)), X.size)
            return
        parts = parallel.chunks(rows, n, cost.ns)
        scratch = [np.empty((slots, n), X.dtype) for _ in parts]
        parallel.run(kernel, lambda i, lo, hi: args(i, lo, hi, scratch[i]), parts, cost, n)

    def fast_vjp(self, x: np.ndarray, g, axis, out, params: dict, specs):
        """dL/dx for small float arrays x and g of one shape and dtype, or None."""
        kernel = self._vjp_kernel
        if type(g) is not np.ndarray or g.shape != x.shape or g.dtype != x.dtype \
                or not g.flags.c_contiguous:
            return None
        if self.flat:
            return None if params else self._flat_fast(kernel, x, (g,), out)
        cols, dx = self._fast_setup(x, axis, out, params, specs, kernel)
        if dx is None:
            return None
        n = x.shape[-1]
        X, G, DX = x.reshape(-1, n), g.reshape(-1, n), dx.reshape(-1, n)
        # parameter gradients, not asked for here: one accumulator per part
        self._row_parts(kernel, X, lambda i, lo, hi, scratch: (
            X[lo:hi], G[lo:hi], DX[lo:hi],
            *[_padded(len(c), n, np.float64, zeros=True) for c in cols], *cols, scratch),
            self.vjp_slots)
        return dx

    def _parts(self, kernel, dtype, total, elements_per_item=1):
        """How to split ``total`` items for ``kernel``: by its measured cost once there is one."""
        cost = self._costs.get((kernel, np.dtype(dtype)))
        return parallel.chunks(total, elements_per_item, None if cost is None else cost.ns)

    def _run(self, kernel, args_for_chunk, parts, dtype, elements_per_item=1):
        """parallel.run, timed into the kernel's cost; the first call per kernel and dtype (the
        one that compiles) with the garbage collector paused, and not timed."""
        key = (kernel, np.dtype(dtype))
        cost = self._costs.get(key)
        if cost is not None:
            parallel.run(kernel, args_for_chunk, parts, cost, elements_per_item)
            return
        with compiling(self.module):
            parallel.run(kernel, args_for_chunk, parts)
        self._costs[key] = parallel.Cost()

    @staticmethod
    def _rows(xt: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(xt.reshape(-1, xt.shape[-1]))

    @staticmethod
    def _columns(args, units: int, dtype) -> list[np.ndarray]:
        """The parameter columns ``args[1:]`` (each of shape (units,), or a scalar) as the row
        kernels take them: [] where there are none, else [P], P one C-contiguous array with a
        column per row."""
        if len(args) < 2:
            return []
        P = _padded(len(args) - 1, units, dtype)
        for k, column in enumerate(args[1:]):
            P[k, :units] = column
        return [P]

    def _flat_call(self, kernel, inputs, out):
        flat_in = [np.ascontiguousarray(a).reshape(-1) for a in inputs]
        flat_out = out.reshape(-1)
        self._run(kernel, lambda i, lo, hi: (*(a[lo:hi] for a in flat_in), flat_out[lo:hi]),
                  self._parts(kernel, out.dtype, flat_out.size), out.dtype)
        return out

    def _out(self, xt, out):
        if out is None:
            return np.empty(xt.shape, xt.dtype)
        return out

    def forward(self, xt, args, out=None):
        y = self._out(xt, out)
        if self.flat:
            return self._flat_call(self.module.forward_flat, [xt], y)
        X = self._rows(xt)
        Y = y.reshape(X.shape)
        cols = self._columns(args, X.shape[1], xt.dtype)
        parts = self._parts(self.module.forward_rows, xt.dtype, X.shape[0], X.shape[1])
        scratch = [np.empty((self.forward_slots, X.shape[1]), xt.dtype) for _ in parts]
        self._run(self.module.forward_rows,
                  lambda i, lo, hi: (X[lo:hi], Y[lo:hi], *cols, scratch[i]), parts, xt.dtype,
                  X.shape[1])
        return y

    def derivative(self, xt, args):
        y = np.empty(xt.shape, xt.dtype)
        if self.flat:
            return self._flat_call(self.module.derivative_flat, [xt], y)
        X = self._rows(xt)
        cols = self._columns(args, X.shape[1], xt.dtype)
        Y = y.reshape(X.shape)
        self._run(self.module.derivative_rows, lambda i, lo, hi: (X[lo:hi], Y[lo:hi], *cols),
                  self._parts(self.module.derivative_rows, xt.dtype, X.shape[0], X.shape[1]),
                  xt.dtype, X.shape[1])
        return y

    def vjp(self, xt, g, args, out=None):
        dz = self._out(xt, out)
        if self.flat:
            return self._flat_call(self.module.vjp_flat, [xt, g], dz), []
        X, G = self._rows(xt), self._rows(g)
        DX = dz.reshape(X.shape)
        units = X.shape[1]
        cols = self._columns(args, units, xt.dtype)
        parts = self._parts(self.module.vjp_rows, xt.dtype, X.shape[0], units)
        acc = [[_padded(len(c), units, np.float64, zeros=True) for c in cols] for _ in parts]
        scratch = [np.empty((self.vjp_slots, units), xt.dtype) for _ in parts]
        self._run(self.module.vjp_rows,
                  lambda i, lo, hi: (X[lo:hi], G[lo:hi], DX[lo:hi], *acc[i], *cols, scratch[i]),
                  parts, xt.dtype, units)
        return dz, [row[:units] for k in range(len(cols)) for row in sum(a[k] for a in acc)]


def _padded(rows: int, units: int, dtype, zeros: bool = False) -> np.ndarray:
    """A C-contiguous (rows, units + pad) array (of zeros, or uninitialised) for the row
    kernels' parameters and gradients, which read columns j < units of each row: the pad makes
    each row an odd number of 64-byte lines, so that the rows (read together, one per parameter
    column, at the same j) fall in different cache sets. Rows a multiple of 4 KiB apart shared
    one set: maxout:16's forward, 32 such rows of 1024 float32, ran 3x slower."""
    line = 64 // np.dtype(dtype).itemsize
    lines = -(-units // line)
    lines += 1 - lines % 2
    return (np.zeros if zeros else np.empty)((rows, lines * line), dtype)


class exp_nonpos(Primitive):
    """exp of an argument that is at most 0 by construction, printed as vmath's ``exp_nonpos``
    (no overflow to guard against: 0.7x exp's time, the same bits)."""

    nargs = 1
    impl = {"numba": "vm.exp_nonpos"}

    def elementary(self):
        return sp.exp(self.args[0])


def _negative_square(u) -> bool:
    """Whether ``u`` is -c times a product of even powers (c > 0 a number): at most 0, or NaN,
    for any float values (read from its form, not asked of SymPy's assumptions)."""
    if not isinstance(u, sp.Mul):
        return False
    coeff, factors = u.as_coeff_mul()
    return (coeff.is_Number and coeff < 0 and bool(factors)
            and all(f.is_Pow and f.exp.is_Integer and f.exp > 0 and f.exp % 2 == 0
                    for f in factors))


def nonpositive_exps(plan: Plan) -> Plan:
    """The plan with each ``exp(shifted(u, r))``, r the row maximum of that same u, as
    :class:`exp_nonpos`: u <= max u, so u - r is at most 0 (and 0 where they are equal, ±inf
    included; NaN where the row holds NaN). softmax's and log_softmax's exp are of this form: it
    was two thirds of softmax's compute. So is exp(-c u^2) (c > 0: gelu's derivative), whose
    argument is at most 0 or NaN for any float u."""
    tops = {r.symbol: r.body for r in plan.reductions if r.kind in (RowMax, RowShift)}

    def fits(e) -> bool:
        if not isinstance(e, sp.exp):
            return False
        u = e.args[0]
        return ((isinstance(u, shifted) and tops.get(u.args[1]) == u.args[0])
                or _negative_square(u))

    memo: dict = {}  # (derive.rebuild: each shared part once, no Piecewise folded; not replace)

    def rewrite(e):
        if not isinstance(e, sp.Basic):
            return e
        return rebuild(e, fits, lambda e: exp_nonpos(e.args[0]), memo=memo)

    def each(d: dict) -> dict:
        return {k: rewrite(v) for k, v in d.items()}
    return dataclasses.replace(
        plan, out=rewrite(plan.out), dout_dz=rewrite(plan.dout_dz), dout_dr=each(plan.dout_dr),
        dbody_dz=each(plan.dbody_dz), dbody_dr=each(plan.dbody_dr), dout_dp=each(plan.dout_dp),
        dbody_dp=each(plan.dbody_dp),
        reductions=tuple(dataclasses.replace(r, body=rewrite(r.body)) for r in plan.reductions))


def build(plan: Plan, key: str):
    plan = nonpositive_exps(plan)  # (the source and the runner's scratch sizes from one plan)
    source = generate(plan, key)
    module = cache.load(source)
    runner = Runner(module, plan)
    weakref.finalize(runner, cache.release, module)  # evicted kernels free their module
    return source, runner

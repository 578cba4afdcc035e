"""Common subexpressions of generated source, found once more after printing.

SymPy's CSE sees the expressions before they are printed; printing then writes some parts again:
a branch's NaN test repeats the operand it compares (``where(u != u, u, ...)`` with ``u`` a
whole branch), and one parameter's gradient repeats the chain of derivatives that every other
parameter's holds. In ``softsign+maxout:5+threshold+softplus+rect:max+{min(z, 1)}`` the VJP's
eleven gradient lines held the clipped softplus (a select in a select, with its NaN test) 44
times. Numba types and lowers every copy (its front end, not LLVM, was most of that spec's
1.7 s compile), and the NumPy backend computes every copy, a pass over memory each
(``tanh+norm:z``'s forward took ``np.tanh(z)`` three times).

:func:`share` finds, in each straight run of assignments of a generated function, every
expression printed twice or more with the same values in its names (a name assigned again in
between makes it another expression) and computes it once, into a fresh ``_e`` name, just before
its first use. Only expressions of names, constants, operators and calls of the generated
code's pure functions move (``vm``, ``math``, ``np`` and the runtime ``_rt``, none that allocate
or write); an expression reading an array element, or any other call, stays where it is, and
statements other than assignments end a run. The same values, computed once: nothing a kernel
returns changes, bit for bit.
"""
from __future__ import annotations

import ast
import itertools
import re
import threading

#: modules whose functions generated code calls without side effects
_PURE_MODULES = frozenset({"vm", "math", "np", "_rt"})
#: names of those modules' functions that allocate, write or change state
_IMPURE = frozenset({"empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full",
                     "full_like", "errstate", "copyto", "array", "asarray", "ascontiguousarray",
                     "seterr", "put", "place", "fill"})
_PURE_NAMES = frozenset({"abs", "min", "max", "float", "int", "bool"})
_MOVABLE = (ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.BoolOp, ast.IfExp)
#: CPython 3.11 counts the AST conversion's recursion per interpreter, not per thread
#: (gh-106905): two threads parsing at once raised "SystemError: AST constructor recursion depth
#: mismatch" (eight threads compiling specs, tests/test_robustness.py). actdsl's own parses take
#: turns; one that races someone else's returns the source as it was, which computes the same.
_PARSING = threading.Lock()


def share(source: str) -> str:
    """``source`` with each function's repeated expressions computed once (see the module's
    docstring); ``source`` itself where nothing repeats or it cannot be read this way."""
    try:
        with _PARSING:
            tree = ast.parse(source)
    except (SyntaxError, RecursionError, MemoryError):
        return source  # compiling it will say what is wrong
    except SystemError:  # CPython's AST conversion raced another thread's (see _PARSING)
        return source
    lines = source.split("\n")
    taken = set(re.findall(r"\b_e\d+\b", source))
    fresh = (name for name in (f"_e{i}" for i in itertools.count()) if name not in taken)
    edits: list[tuple[int, int, list[str]]] = []
    try:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                _function(node.body, fresh, edits, set())
    except (RecursionError, _Unusual):
        return source
    for first, last, text in sorted(edits, reverse=True):
        lines[first - 1:last] = text
    return "\n".join(lines)


class _Unusual(Exception):
    """Two statements on one line: not the generators' layout, and not one to edit by lines."""


def _function(body: list[ast.stmt], fresh, edits, lines: set) -> None:
    """Each straight run of assignments in ``body`` and in the blocks it holds."""
    run: list[ast.stmt] = []
    for stmt in body:
        if stmt.lineno in lines:
            raise _Unusual()
        lines.add(stmt.lineno)
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.Return)) and stmt.value is not None:
            run.append(stmt)
            continue
        _run(run, fresh, edits)
        run = []
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, field, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                _function(inner, fresh, edits, lines)
    _run(run, fresh, edits)


class _Keys:
    """The value number of each expression node of one run: equal numbers, equal values."""

    def __init__(self):
        self.version: dict[str, int] = {}
        self.numbers: dict[tuple, int] = {}  # a node's parts -> its number (hash-consing)
        self.key: dict[int, int] = {}
        self.movable: dict[int, bool] = {}
        self.named: set[int] = set()  # nodes whose value depends on a name

    def __call__(self, node: ast.AST) -> int:
        if isinstance(node, ast.Name):
            parts, movable = ("name", node.id, self.version.get(node.id, 0)), True
            self.named.add(id(node))
        elif isinstance(node, ast.Constant):
            parts, movable = ("const", type(node.value).__name__, repr(node.value)), True
        else:
            parts, movable = [type(node).__name__], isinstance(node, _MOVABLE)
            for name, value in ast.iter_fields(node):
                if name == "ctx":
                    continue
                for v in (value if isinstance(value, list) else [value]):
                    if isinstance(v, ast.keyword):
                        parts.append(v.arg)
                        v = v.value
                    if isinstance(v, ast.expr):
                        parts.append(self(v))
                        movable = movable and self.movable[id(v)]
                        if id(v) in self.named and not isinstance(node, ast.Attribute):
                            self.named.add(id(node))
                    else:  # an operator, or a plain value (an attribute's name)
                        parts.append(type(v).__name__ if isinstance(v, ast.AST) else repr(v))
            if isinstance(node, ast.Call):
                movable = movable and _pure(node.func)
            elif isinstance(node, ast.Attribute):  # math.inf, vm.where: a module's, never written
                movable = isinstance(node.value, ast.Name) and node.value.id in _PURE_MODULES
            parts = tuple(parts)
        number = self.numbers.setdefault(parts, len(self.numbers))
        self.key[id(node)] = number
        self.movable[id(node)] = movable
        return number

    def assigned(self, stmt: ast.stmt) -> None:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
        for target in targets:
            for n in ast.walk(target) if target is not None else ():
                if isinstance(n, ast.Name):
                    self.version[n.id] = self.version.get(n.id, 0) + 1


def _pure(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in _PURE_NAMES
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id in _PURE_MODULES and func.attr not in _IMPURE)


def _candidate(keys: _Keys, node: ast.AST) -> bool:
    """Worth a name: a movable operation on something that varies (not on constants alone)."""
    return isinstance(node, _MOVABLE) and keys.movable[id(node)] and id(node) in keys.named


def _run(run: list[ast.stmt], fresh, edits) -> None:
    if len(run) == 0:
        return
    keys = _Keys()
    for stmt in run:  # value numbers, with each name's value as of this statement
        keys(stmt.value)
        keys.assigned(stmt)
    count: dict[int, int] = {}

    def tally(node):  # each repeat once: the parts of a repeat are not counted again
        if isinstance(node, ast.expr) and _candidate(keys, node):
            k = keys.key[id(node)]
            count[k] = count.get(k, 0) + 1
            if count[k] > 1:
                return
        for child in ast.iter_child_nodes(node):
            tally(child)

    for stmt in run:
        tally(stmt.value)
    if not any(c > 1 for c in count.values()):
        return
    temps: dict[int, str] = {}
    reads = [0]  # repeats replaced by their names so far

    def rewrite(node, before):
        """``node`` with each repeat read from its name; a repeat met the first time is computed
        into a new name (appended to ``before``, its parts first)."""
        k = keys.key.get(id(node))
        repeat = k is not None and count.get(k, 0) > 1 and _candidate(keys, node)
        if repeat and k in temps:
            reads[0] += 1
            return ast.Name(temps[k], ast.Load())
        for name, value in ast.iter_fields(node):
            if isinstance(value, ast.expr):
                setattr(node, name, rewrite(value, before))
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if isinstance(v, ast.expr):
                        value[i] = rewrite(v, before)
                    elif isinstance(v, ast.keyword):
                        v.value = rewrite(v.value, before)
        if repeat:
            temps[k] = next(fresh)
            before.append(ast.Assign(targets=[ast.Name(temps[k], ast.Store())], value=node,
                                     lineno=0))
            reads[0] += 1
            return ast.Name(temps[k], ast.Load())
        return node

    for stmt in run:
        before: list[ast.stmt] = []
        so_far = reads[0]
        stmt.value = rewrite(stmt.value, before)
        if reads[0] > so_far:
            indent = " " * stmt.col_offset
            edits.append((stmt.lineno, stmt.end_lineno,
                          [indent + ast.unparse(s) for s in before] + [indent + ast.unparse(stmt)]))

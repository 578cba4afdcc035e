"""The ``actdsl`` command: compile, check, document and measure activation specs.

Exit codes: 0 success; 1 a check or gradient comparison failed; 2 bad input (a spec that does
not parse, an unknown name, a bad option, a path that cannot be written). Each error is one line
on stderr; a spec error's line names its line and column.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import compile as compile_spec, latex
from .errors import ActdslError, on_one_line

DEMO_SPECS = ["relu", "softplus", "tanh+norm:z", "maxout:3", "prelu(r=0.1)+softmax"]
BACKENDS = ("numpy", "numba", "cuda")


def progress(i: int, total: int, label: str = "", stream=None) -> None:
    """A one-line progress bar on stderr, drawn only when that is a terminal (a log or a pipe
    gets nothing: carriage returns would only clutter it)."""
    stream = stream or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        return
    width = 30
    done = int(width * i / max(total, 1))
    end = "\n" if i >= total else ""
    stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{total} {label[:40]:<40}{end}")
    stream.flush()


def _demo(args) -> int:
    """Compile a few specs, check their gradients by finite differences, print the seed table."""
    from .table import SEED_KEYS, table
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6)) * 2
    g = rng.normal(size=x.shape)
    print(f"actdsl demo: {len(DEMO_SPECS)} specs on a 4x6 float64 array, backend {args.backend}\n")
    worst = 0.0
    for text in DEMO_SPECS:
        k = compile_spec(text, backend=args.backend)
        params = k.init_params(x.shape[-1], rng=1)
        y = k(x, **params)
        dx = k.vjp(x, g, **params)
        h = 1e-6
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[idx] += h
            xm[idx] -= h
            fd[idx] = np.sum(g * (k(xp, **params) - k(xm, **params))) / (2 * h)
        err = float(np.max(np.abs(dx - fd)) / max(1.0, float(np.max(np.abs(fd)))))
        worst = max(worst, err)
        print(f"{k.text:<22} g(z) = {latex(text)}")
        print(f"{'':<22} y[0] = {np.array2string(y[0], precision=3, suppress_small=True)}")
        print(f"{'':<22} vjp vs finite differences: max rel. error {err:.1e}\n")
    ok = worst < 1e-5
    print("all gradients agree\n" if ok else "GRADIENT MISMATCH\n")
    print("The seed's activations:\n")
    print(table("markdown", keys=SEED_KEYS))
    return 0 if ok else 1


def _show(args) -> int:
    """Canonical form, kind, formula and derivative (plain text, or LaTeX with --latex)."""
    from .docs import text
    from .textbook import formulas, value_text
    k = compile_spec(args.spec, backend=args.backend)
    print(f"spec:       {k.text}")
    print(f"kind:       {'row-wise' if k.rowwise else 'elementwise'}")
    if k.staged:  # too large for one formula: its terms', applied left to right
        print("compiled term by term (actdsl.stage); its terms, applied left to right:")
        for term in k.spec.terms:
            print(f"term:       {term}")
            for d in (False, True):
                formula = latex(str(term), derivative=d) if args.latex else text(str(term), d)
                print(_indent(formula))
        for p in k.params:
            print(f"parameter:  {p.name}, shape per unit {p.shape}: {p.description}")
        return 0
    f = formulas(k.text)
    shown = (lambda d: latex(k.text, derivative=d)) if args.latex else (
        lambda d: text(k.text, derivative=d))
    print(f"g(z):\n{_indent(shown(False))}")
    what = "Jacobian entry ∂y_i/∂z_j" if k.rowwise else "derivative g'(z)"
    print(f"{what}:\n{_indent(shown(True))}")
    for sym, value in f.constants.items():
        print(f"constant:   {_greek(sym.name)} = {value_text(value)}")
    for sym, meaning in f.where:
        print(f"where:      {sym.name}: {meaning}")
    for p in k.params:
        print(f"parameter:  {p.name}, shape per unit {p.shape}: {p.description}")
    if not k.params:
        print("parameters: none")
    return 0


def _indent(block: str) -> str:
    return "\n".join("    " + line for line in block.splitlines())


def _greek(name: str) -> str:
    return {"alpha": "α", "lambda": "λ", "varepsilon": "ε"}.get(name, name)


def _list(args) -> int:
    """Every registered key: aliases, kind, parameters (and hyper-parameters with defaults)."""
    import json
    from .docs import _lowered
    from .registry import REGISTRY
    from . import library  # noqa: F401  (fills the registry)
    entries = []
    for d in sorted(REGISTRY.definitions(), key=lambda d: (not d.builtin, d.key)):
        ir, plan = _lowered(d.key, REGISTRY.generation)
        entries.append({
            "key": d.key, "aliases": list(d.aliases), "description": d.description,
            "kind": "row-wise" if plan.rowwise else "elementwise",
            "parameters": [p.name for p in d.params],
            "arguments": {h.name: h.default for h in d.hyper},
            "custom": not d.builtin})
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    width = max(len(e["key"]) for e in entries)
    for e in entries:
        extras = []
        if e["aliases"]:
            extras.append("aliases " + ", ".join(e["aliases"]))
        if e["parameters"]:
            extras.append("learnable " + ", ".join(e["parameters"]))
        if e["arguments"]:
            extras.append(", ".join(f"{k}={v:g}" for k, v in e["arguments"].items()))
        print(f"{e['key']:<{width}}  {e['kind']:<11}  {e['description']}"
              + (f"  [{'; '.join(extras)}]" if extras else ""))
    return 0


def _compile(args) -> int:
    k = compile_spec(args.spec, backend=args.backend)
    sys.stdout.write(k.source)
    return 0


def _latex(args) -> int:
    print(latex(args.spec, derivative=args.derivative))
    return 0


def _check(args) -> int:
    from .check import check
    report = check(args.spec, backend=args.backend, dtype=args.dtype, full=args.full)
    print(report)
    return 0 if report.passed else 1


def _table(args) -> int:
    from .table import SEED_KEYS, table
    sys.stdout.write(table(args.format, keys=SEED_KEYS if args.seed else None))
    return 0


def _plot(args) -> int:
    from .plot import plot
    plot(args.spec, args.output, lo=args.lo, hi=args.hi)
    print(f"wrote {args.output}")
    return 0


def _bench(args) -> int:
    """Forward and VJP of one spec against a memory copy of the same bytes (medians)."""
    try:
        rows, units = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ActdslError(f"--size must look like 1024x1024, not {args.size!r}") from None
    if rows < 1 or units < 1:
        raise ActdslError(f"--size needs at least one row and one unit, not {args.size!r}")
    if args.repeat < 1:
        raise ActdslError(f"--repeat must be at least 1, not {args.repeat}")
    k = compile_spec(args.spec, backend=args.backend)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, units)).astype(args.dtype)
    g = rng.normal(size=x.shape).astype(args.dtype)
    out = np.empty_like(x)
    p = k.init_params(units)

    def median(fn):
        fn()
        times = []
        for i in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            progress(i + 1, args.repeat, "timing")
        return float(np.median(times)) * 1e3

    copy = median(lambda: np.copyto(out, x))
    fwd = median(lambda: k(x, out=out, **p))
    vjp = median(lambda: k.vjp(x, g, out=out, **p))
    print(f"{k.text} on {rows}x{units} {args.dtype}, backend {args.backend}, "
          f"median of {args.repeat}:")
    print(f"  memcpy   {copy:9.3f} ms")
    print(f"  forward  {fwd:9.3f} ms   {fwd / copy:5.2f}x memcpy")
    print(f"  vjp      {vjp:9.3f} ms   {vjp / (1.5 * copy):5.2f}x memcpy of its bytes")
    return 0


def write_docs(outdir: Path, keys=None, stream=None) -> list[Path]:
    """The reference page: the table (Markdown and HTML) and a gallery of every built-in."""
    from .plot import plot
    from .table import rows, table
    outdir = Path(outdir)
    (outdir / "gallery").mkdir(parents=True, exist_ok=True)
    written = []
    keys = [r.key for r in rows() if not r.custom] if keys is None else list(keys)
    for i, key in enumerate(keys):
        name = key.replace(":", "_")
        spec = "maxout:3" if key == "maxout" else key
        path = outdir / "gallery" / f"{name}.png"
        plot(spec, path)
        written.append(path)
        progress(i + 1, len(keys), key, stream)
    markdown = table("markdown")
    (outdir / "activations.html").write_text(table("html"), encoding="utf-8")
    (outdir / "activations.md").write_text(markdown, encoding="utf-8")
    gallery = "\n".join(f"### `{k}`\n\n![{k}](gallery/{k.replace(':', '_')}.png)\n" for k in keys)
    (outdir / "README.md").write_text(
        "# actdsl reference\n\nRegenerate with `actdsl docs docs/`. The table is also a "
        "[standalone HTML page](activations.html) (MathML: renders offline).\n\n"
        + markdown + "\n## Gallery\n\ng(z) and g'(z) (row-wise keys: one row z = -5..5, "
        "and the Jacobian's diagonal).\n\n" + gallery, encoding="utf-8")
    written += [outdir / "activations.html", outdir / "activations.md", outdir / "README.md"]
    return written


def _docs(args) -> int:
    written = write_docs(Path(args.outdir))
    print(f"wrote {len(written)} files under {args.outdir}")
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that states every option's default (an option that has none, required or
    repeatable, says what happens instead, not "default: None")."""

    def _get_help_string(self, action):
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="actdsl", description=__doc__, formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"actdsl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_, run):
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_Help)
        p.set_defaults(run=run)
        return p

    def spec(p):
        p.add_argument("spec", help="an activation spec, e.g. 'tanh+norm:z' or 'prelu(r=0.1)'")

    def backend(p, default, choices=BACKENDS):
        p.add_argument("--backend", default=default, choices=choices, help="code generator")

    p = add("demo", "compile a few specs, check their gradients, print the seed table", _demo)
    backend(p, "numpy", ["numpy", "numba"])
    p = add("list", "every registered activation: key, aliases, kind, parameters", _list)
    p.add_argument("--json", action="store_true", help="one JSON list instead of text")
    p = add("show", "canonical form, formula, derivative and parameters of SPEC", _show)
    spec(p)
    backend(p, "numpy")
    p.add_argument("--latex", action="store_true", help="formulas as LaTeX instead of plain text")
    p = add("compile", "print the source actdsl generates for SPEC", _compile)
    spec(p)
    backend(p, "numpy")
    p = add("latex", "LaTeX of SPEC (or of its derivative)", _latex)
    spec(p)
    p.add_argument("--derivative", action="store_true",
                   help="g'(z), or the Jacobian entry of a row-wise spec")
    p = add("check", "check SPEC symbolically, against mpmath and by finite differences", _check)
    spec(p)
    p.add_argument("--backend", action="append", choices=BACKENDS,
                   help="repeatable; when not given: numpy and numba")
    p.add_argument("--dtype", action="append", choices=["float32", "float64"],
                   help="repeatable; when not given: both")
    p.add_argument("--full", action="store_true", help="every binade of the dtype (slow)")
    p = add("table", "the activation table", _table)
    p.add_argument("--format", default="markdown", choices=["markdown", "rst", "latex", "html"],
                   help="output format")
    p.add_argument("--seed", action="store_true", help="only the seed's 19 keys")
    p = add("plot", "draw g and g' of SPEC to a file", _plot)
    spec(p)
    p.add_argument("-o", "--output", required=True, help="PNG, SVG or PDF file (required)")
    p.add_argument("--lo", type=float, default=-5.0, help="left end of the z range")
    p.add_argument("--hi", type=float, default=5.0, help="right end of the z range")
    p = add("bench", "time forward and VJP of SPEC against a memory copy", _bench)
    spec(p)
    backend(p, "numba")
    p.add_argument("--size", default="1024x1024", help="ROWSxUNITS")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="array dtype")
    p.add_argument("--repeat", type=int, default=15, help="timed calls; the median is reported")
    p = add("docs", "regenerate the reference page (table and gallery) in OUTDIR", _docs)
    p.add_argument("outdir", help="directory to write README.md, activations.* and gallery/ into")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # `actdsl list | head`: the reader left; say nothing more
        try:  # Python's flush at exit would raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 0
    except ActdslError as e:
        return _error(str(e))
    except OSError as e:  # a path the user gave that cannot be written or read
        where = f" {e.filename!s}" if e.filename else ""
        return _error(f"cannot use{where}: {e.strerror or e}")


def _error(message: str) -> int:
    """One line on stderr (its position included: errors.on_one_line), exit status 2."""
    print(f"actdsl: error: {on_one_line(message) or 'unknown error'}", file=sys.stderr)
    return 2

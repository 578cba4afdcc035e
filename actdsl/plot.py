"""``actdsl.plot``: g and g' of a spec with matplotlib (optional extra ``plot``).

Elementwise specs: g(z) and g'(z) over ``[lo, hi]``; parametric keys are drawn for a few values
of their parameters. Row-wise specs: the output for one row holding ``z = lo..hi``, and the
diagonal of the Jacobian, ∂y_i/∂z_i (each from a VJP with a one-hot dy).
"""
from __future__ import annotations

import numpy as np

from .errors import ActdslError

#: a few values of each built-in parameter to draw (the first is the default)
PARAMETER_VALUES = {"r": (0.1, 0.3, 0.02), "g": (1.0, 1.5, 0.5)}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ActdslError("actdsl.plot needs matplotlib: pip install 'actdsl[plot]'") from e
    return plt


def _variants(kernel, units: int) -> list[tuple[str, dict]]:
    base = kernel.init_params(units)
    names = [p.name for p in kernel.params if p.name in PARAMETER_VALUES and not p.shape]
    if not names:
        return [("", base)]
    out = []
    for i in range(3):
        values = dict(base)
        label = []
        for name in names:
            v = PARAMETER_VALUES[name][i]
            values[name] = np.full(units, v)
            label.append(f"{name}={v:g}")
        out.append((", ".join(label), values))
    return out


def plot(spec: str, path=None, lo: float = -5.0, hi: float = 5.0, points: int = 401,
         figsize=(6.4, 3.2), dpi: int = 100):
    """Draw g and g' of ``spec``; save to ``path`` (PNG, SVG or PDF by suffix) when given.
    Returns the matplotlib Figure."""
    from .compiler import compile as compile_spec
    if path is not None:
        _check_path(path)
    if not hi > lo:
        raise ActdslError(f"plot range must have lo < hi, not [{lo}, {hi}]")
    if not 2 <= int(points) <= 100_000:
        raise ActdslError("points must be between 2 and 100000")
    plt = _pyplot()
    k = compile_spec(spec)
    z = np.linspace(lo, hi, int(points))
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize, dpi=dpi, constrained_layout=True)
    if k.rowwise:
        y = k(z)
        eye = np.eye(z.size)
        diag = np.array([k.vjp(z, eye[i])[i] for i in range(z.size)])
        a.plot(z, y)
        b.plot(z, diag)
        a.set_title(f"{k.text}: y for one row z")
        b.set_title(r"$\partial y_i / \partial z_i$")
    else:
        variants = _variants(k, z.size)
        for label, params in variants:
            a.plot(z, k(z, **params), label=label or None)
            b.plot(z, k.derivative(z, **params), label=label or None)
        if len(variants) > 1:
            a.legend(fontsize=8)
        a.set_title(f"{k.text}: g(z)")
        b.set_title("g'(z)")
    for ax in (a, b):
        ax.axhline(0, color="#999", lw=0.6)
        ax.axvline(0, color="#999", lw=0.6)
        ax.grid(alpha=0.3)
        ax.set_xlabel("z")
    if path is not None:
        try:
            fig.savefig(path)
        except (OSError, ValueError) as e:
            raise ActdslError(f"cannot write the plot to {str(path)!r}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        finally:
            plt.close(fig)
    return fig


FORMATS = (".png", ".svg", ".pdf")


def _check_path(path) -> None:
    """Refuse a file type matplotlib would not write, or a folder that is not there, before any
    work is done."""
    from pathlib import Path
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise ActdslError(f"cannot plot to {str(path)!r}: the file name must end in "
                          f"{', '.join(FORMATS)} (the suffix chooses the format)")
    if not p.parent.is_dir():
        raise ActdslError(f"cannot plot to {str(path)!r}: the folder {str(p.parent)!r} does not "
                          "exist; create it first")
